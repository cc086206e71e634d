/*
 * test_sft_run.c — full-parameter SFT (suite sft_run) on the tiny golden
 * model tests/golden/sft/hf (vocabulary = the golden SentencePiece model
 * with the InternLM2 specials):
 *   - a packed batch gives the same loss sum and count as the same samples
 *     unpacked (per-sample positions and attention);
 *   - the metrics line of step k is the mean cross-entropy of batch k of the
 *     batcher before the update (checked with a vanishing learning rate
 *     against the training forward on the batch itself, for --no-shuffle,
 *     the seeded shuffle and --pack, with grad accumulation);
 *   - OUT/final is a model directory (loads, generates, equals the last
 *     checkpoint's weights); a run killed between checkpoints and resumed
 *     gives the same loss lines bit for bit; eval lines before and after;
 *   - the CLI contract and its error exits.
 */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt.h"
#include "puyu/pu_sft.h"
#include "puyu/pu_train.h"

#define HF "tests/golden/sft/hf"

static const char *const k_vars[] = {"name=Puyu", "author=the puyu authors", NULL};

/* 14 short records of every kind */
static const char *data_text(void) {
    static char buf[8192];
    if (buf[0])
        return buf;
    pu_str s = {0};
    for (int i = 0; i < 14; i++) {
        switch (i % 4) {
        case 0:
            pu_str_appendf(&s,
                           "{\"messages\": [{\"role\": \"user\", \"content\": \"hi %d\"}, "
                           "{\"role\": \"assistant\", \"content\": \"I am {{name}} %d.\"}]}\n",
                           i, i);
            break;
        case 1:
            pu_str_appendf(&s, "{\"instruction\": \"count to %d\", \"input\": \"\", \"output\": "
                               "\"1 2 %d\"}\n",
                           i, i);
            break;
        case 2:
            pu_str_appendf(&s,
                           "{\"conversation\": [{\"system\": \"be brief\", \"input\": \"q%d\", "
                           "\"output\": \"a%d\"}, {\"input\": \"more\", \"output\": \"done\"}]}\n",
                           i, i);
            break;
        default:
            pu_str_appendf(&s,
                           "{\"conversations\": [{\"from\": \"human\", \"value\": \"你好 %d\"}, "
                           "{\"from\": \"gpt\", \"value\": \"你好！%d\"}]}\n",
                           i, i);
        }
    }
    snprintf(buf, sizeof buf, "%s", s.p);
    pu_str_free(&s);
    return buf;
}

static const char *write_tmp(const char *name, const char *text) {
    static char bufs[8][512];
    static int k;
    char *p = bufs[k++ % 8];
    pt_tmp_path(name, p, 512);
    PT_OK(pu_file_write_atomic(p, text, strlen(text)));
    return p;
}

/* step -> loss of the train lines; val lines as "val" */
static char *loss_lines(const char *path) {
    char *data = NULL;
    size_t len = 0;
    if (pu_file_read_all(path, &data, &len) != PU_OK)
        return pu_strdup("(unreadable)");
    pu_str o = {0};
    for (char *p = data; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        if (j) {
            json_t *l = json_object_get(j, "loss"), *v = json_object_get(j, "val_loss");
            pu_str_appendf(&o, "%lld %s %.17g\n",
                           (long long)json_integer_value(json_object_get(j, "step")),
                           l ? "loss" : "val", json_real_value(l ? l : v));
            json_decref(j);
        }
        p = nl + 1;
    }
    pu_free(data);
    return pu_str_steal(&o);
}

/* train losses by step (1-based) from a metrics file; returns count */
static int read_losses(const char *path, double *loss, int cap) {
    char *data = NULL;
    size_t len = 0;
    int n = 0;
    if (pu_file_read_all(path, &data, &len) != PU_OK)
        return 0;
    for (char *p = data; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        json_t *l = json_object_get(j, "loss");
        int64_t st = json_integer_value(json_object_get(j, "step"));
        if (l && st >= 1 && st <= cap) {
            PT_EQ_I64(st, n + 1);
            loss[n++] = json_real_value(l);
        }
        json_decref(j);
        p = nl + 1;
    }
    pu_free(data);
    return n;
}

static void base_opts(pu_sft_opts *o, const char *data, const char *out) {
    static const char *paths[1];
    paths[0] = data;
    pu_sft_opts_default(o);
    o->base_dir = HF;
    o->data = paths;
    o->n_data = 1;
    o->vars = k_vars;
    o->train.out_dir = out;
    o->train.steps = 6;
    o->train.batch = 4;
    o->train.grad_accum = 2;
    o->train.seq = 40;
    o->train.lr = 3e-3;
    o->train.warmup = 1;
    o->train.seed = 5;
    o->train.save_every = 2;
    o->train.quiet = true;
}

/* mean CE of batch k of a batcher under the base model */
static double batch_loss(pu_tmodel *tm, const pu_sft_batcher *b, int64_t k, int64_t B,
                         int64_t seq, bool packed) {
    int32_t *ids = malloc((size_t)(B * seq) * 4), *tg = malloc((size_t)(B * seq) * 4);
    int32_t *pos = malloc((size_t)(B * seq) * 4), *seg = malloc((size_t)(B * seq) * 4);
    int64_t T = 0, nt = 0;
    pu_sft_batch(b, k, B, ids, tg, pos, seg, &T, &nt);
    pu_tbatch bt = {ids, tg, packed ? pos : NULL, packed ? seg : NULL, B, T};
    double l = NAN;
    int64_t c = 0;
    PT_OK(pu_tmodel_forward(tm, NULL, &bt, &l, &c));
    PT_EQ_I64(c, nt);
    free(ids), free(tg), free(pos), free(seg);
    return l / (double)c;
}

static void check_packed_equals_unpacked(void) {
    pu_tok *t = NULL;
    PT_OK(pu_tok_load(HF "/tokenizer.model", &t));
    pu_model *m = NULL;
    PT_OK(pu_model_load(HF, &m));
    if (!t || !m)
        return;
    const char *p = write_tmp("pk.jsonl", data_text());
    pu_sft_load_opts lo = {.seq = 40, .vars = k_vars};
    pu_sft_data *d = NULL;
    PT_OK(pu_sft_data_load(&p, 1, t, &lo, &d));
    pu_tmodel *tm = NULL;
    int64_t n = pu_sft_data_n(d), seq = 120;
    PT_OK(pu_tmodel_create(pu_model_config(m), n, seq, &tm));
    PT_OK(pu_tmodel_load_weights(tm, m));
    pu_sft_batcher *bp = NULL, *bu = NULL;
    PT_OK(pu_sft_batcher_create(d, seq, true, false, 0, &bp));
    PT_OK(pu_sft_batcher_create(d, seq, false, false, 0, &bu));
    int64_t rp = pu_sft_batcher_n_rows(bp), ru = pu_sft_batcher_n_rows(bu);
    PT_EQ_I64(ru, n);
    PT_CHECK(rp < ru);
    int32_t *ids = malloc((size_t)(n * seq) * 4), *tg = malloc((size_t)(n * seq) * 4);
    int32_t *pos = malloc((size_t)(n * seq) * 4), *seg = malloc((size_t)(n * seq) * 4);
    int64_t T = 0, nt = 0;
    double lp = 0, lu = 0;
    int64_t cp = 0, cu = 0;
    pu_sft_batch(bp, 0, rp, ids, tg, pos, seg, &T, &nt);
    pu_tbatch bt = {ids, tg, pos, seg, rp, T};
    PT_OK(pu_tmodel_forward(tm, NULL, &bt, &lp, &cp));
    pu_sft_batch(bu, 0, ru, ids, tg, pos, seg, &T, &nt);
    pu_tbatch bt2 = {ids, tg, NULL, NULL, ru, T};
    PT_OK(pu_tmodel_forward(tm, NULL, &bt2, &lu, &cu));
    PT_EQ_I64(cp, cu);
    PT_CHECK(cp > 0);
    PT_NEAR(lp, lu, 0, 1e-5);
    /* without seg, the packed rows would attend across samples: different */
    pu_sft_batch(bp, 0, rp, ids, tg, pos, seg, &T, &nt);
    pu_tbatch bt3 = {ids, tg, pos, NULL, rp, T};
    double lx = 0;
    int64_t cx = 0;
    PT_OK(pu_tmodel_forward(tm, NULL, &bt3, &lx, &cx));
    PT_CHECK(fabs(lx - lu) > 1e-4 * fabs(lu));
    free(ids), free(tg), free(pos), free(seg);
    pu_sft_batcher_destroy(bp);
    pu_sft_batcher_destroy(bu);
    pu_tmodel_destroy(tm);
    pu_sft_data_destroy(d);
    pu_model_destroy(m);
    pu_tok_destroy(t);
}

/* the step losses are the batcher's batches (vanishing lr: the weights stay) */
static void check_batch_order(bool shuffle, bool pack) {
    const char *p = write_tmp("order.jsonl", data_text());
    char out[512];
    pt_tmp_path(shuffle ? (pack ? "ord_sp" : "ord_s") : (pack ? "ord_np" : "ord_n"), out,
                sizeof out);
    pu_sft_opts o;
    base_opts(&o, p, out);
    o.shuffle = shuffle;
    o.pack = pack;
    o.train.lr = 1e-12;
    o.train.min_lr = 1e-12;
    o.train.steps = 7; /* wraps around the 14 samples (or fewer packed rows) */
    o.train.save_every = 0;
    pu_pool *pool = pu_pool_create(2);
    PT_OK(pu_sft_run(&o, pool));
    pu_pool_destroy(pool);
    char mp[700];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", out);
    double got[16];
    int n = read_losses(mp, got, 16);
    PT_EQ_I64(n, 7);
    /* expected: batch k of the same batcher under the base model */
    pu_tok *t = NULL;
    pu_model *m = NULL;
    PT_OK(pu_tok_load(HF "/tokenizer.model", &t));
    PT_OK(pu_model_load(HF, &m));
    pu_sft_load_opts lo = {.seq = o.train.seq, .vars = k_vars};
    pu_sft_data *d = NULL;
    PT_OK(pu_sft_data_load(&p, 1, t, &lo, &d));
    pu_sft_batcher *b = NULL, *other = NULL;
    PT_OK(pu_sft_batcher_create(d, o.train.seq, pack, shuffle, o.train.seed, &b));
    PT_OK(pu_sft_batcher_create(d, o.train.seq, pack, !shuffle, o.train.seed, &other));
    pu_tmodel *tm = NULL;
    PT_OK(pu_tmodel_create(pu_model_config(m), 4, o.train.seq, &tm));
    PT_OK(pu_tmodel_load_weights(tm, m));
    int differ = 0;
    for (int k = 0; k < n; k++) {
        double want = batch_loss(tm, b, k, 4, o.train.seq, pack);
        double alt = batch_loss(tm, other, k, 4, o.train.seq, pack);
        PT_CHECK_MSG(fabs(got[k] - want) <= 1e-6 * fabs(want), "step %d: loss %.9g, batch %.9g",
                     k + 1, got[k], want);
        differ += fabs(alt - want) > 1e-6 * fabs(want);
    }
    PT_CHECK_MSG(differ >= 3, "the other order gives the same losses at %d of 7 steps",
                 7 - differ);
    pu_tmodel_destroy(tm);
    pu_sft_batcher_destroy(b);
    pu_sft_batcher_destroy(other);
    pu_sft_data_destroy(d);
    pu_model_destroy(m);
    pu_tok_destroy(t);
}

static bool same_file(const char *a, const char *b) {
    char *da = NULL, *db = NULL;
    size_t la = 0, lb = 0;
    bool same = pu_file_read_all(a, &da, &la) == PU_OK && pu_file_read_all(b, &db, &lb) == PU_OK &&
                la == lb && memcmp(da, db, la) == 0;
    pu_free(da);
    pu_free(db);
    return same;
}

static void check_run_resume(void) {
    const char *p = write_tmp("run.jsonl", data_text());
    const char *ev = write_tmp("eval.jsonl", data_text());
    char a[512], b[512], f[700], g[700];
    pt_tmp_path("sftA", a, sizeof a);
    pt_tmp_path("sftB", b, sizeof b);
    static const char *evp[1];
    evp[0] = ev;
    pu_sft_opts o;
    base_opts(&o, p, a);
    o.pack = true;
    o.eval_data = evp;
    o.n_eval = 1;
    PT_OK(pu_sft_run(&o, NULL));
    snprintf(f, sizeof f, "%s/metrics.jsonl", a);
    char *la = loss_lines(f);
    /* val before, 6 train lines, val after; the loss goes down */
    PT_CHECK_MSG(strncmp(la, "0 val ", 6) == 0 && strstr(la, "\n6 loss ") && strstr(la, "\n6 val "),
                 "%s", la);
    double l[8];
    snprintf(f, sizeof f, "%s/metrics.jsonl", a);
    int n = read_losses(f, l, 8);
    PT_EQ_I64(n, 6);
    /* final == the last checkpoint's weights, and it loads */
    snprintf(f, sizeof f, "%s/final/model.safetensors", a);
    snprintf(g, sizeof g, "%s/step_00000006/model.safetensors", a);
    PT_CHECK(same_file(f, g));
    snprintf(f, sizeof f, "%s/final/tokenizer.model", a);
    PT_CHECK(same_file(f, HF "/tokenizer.model"));
    snprintf(f, sizeof f, "%s/final", a);
    pu_model *m = NULL;
    PT_OK(pu_model_load(f, &m));
    pu_model_destroy(m);

    /* killed right after step 3 (last checkpoint: step 2), resumed */
    base_opts(&o, p, b);
    o.pack = true;
    o.eval_data = evp;
    o.n_eval = 1;
    o.train.kill_at = 3;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        pu_pool *pool = pu_pool_create(2);
        pu_sft_run(&o, pool);
        _exit(3);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    PT_CHECK_MSG(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "child status %d", ws);
    snprintf(f, sizeof f, "%s/final", b);
    PT_CHECK(!pu_dir_exists(f));
    o.train.kill_at = 0;
    o.train.resume = true;
    PT_OK(pu_sft_run(&o, NULL));
    snprintf(f, sizeof f, "%s/metrics.jsonl", b);
    char *lb = loss_lines(f);
    PT_CHECK_MSG(strcmp(la, lb) == 0, "uninterrupted:\n%s\nresumed:\n%s", la, lb);
    snprintf(f, sizeof f, "%s/final/model.safetensors", a);
    snprintf(g, sizeof g, "%s/final/model.safetensors", b);
    PT_CHECK(same_file(f, g));
    pu_free(la);
    pu_free(lb);
}

static void check_errors(void) {
    char out[512];
    pt_tmp_path("sftE", out, sizeof out);
    pu_sft_opts o;
    /* a bad record names file:line and field; nothing is written */
    const char *bad = write_tmp("bad.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n"
                                             "{\"messages\": [{\"role\": \"bot\", \"content\": "
                                             "\"x\"}]}\n");
    base_opts(&o, bad, out);
    PT_CHECK(pu_sft_run(&o, NULL) == PU_ERR_FORMAT);
    PT_CHECK_MSG(strstr(pu_err_msg(), "bad.jsonl:2: messages[0].role: unknown role"), "%s",
                 pu_err_msg());
    char mp[700];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", out);
    PT_CHECK(!pu_file_exists(mp));
    /* --seq beyond the model's context */
    const char *good = write_tmp("good.jsonl", data_text());
    base_opts(&o, good, out);
    o.train.seq = 4096;
    PT_CHECK(pu_sft_run(&o, NULL) == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "max_position_embeddings"), "%s", pu_err_msg());
    /* a tokenizer whose vocabulary is larger than the model's */
    char tp[512];
    if (pt_shared_path("internlm2/tokenizer.model", tp, sizeof tp)) {
        base_opts(&o, good, out);
        o.tok_path = tp;
        PT_CHECK(pu_sft_run(&o, NULL) == PU_ERR_INVALID);
        PT_CHECK_MSG(strstr(pu_err_msg(), "vocab_size"), "%s", pu_err_msg());
    }
    /* --batch not divisible by --grad-accum */
    base_opts(&o, good, out);
    o.train.grad_accum = 3;
    PT_CHECK(pu_sft_run(&o, NULL) == PU_ERR_INVALID);
}

static void check_cli(void) {
    char cmd[8192], d[512];
    const char *p = write_tmp("cli.jsonl", data_text());
    pt_tmp_path("sftCLI", d, sizeof d);
    snprintf(cmd, sizeof cmd,
             "%s sft -m %s --data %s,%s --out %s --steps 3 --batch 2 --seq 40 --lr 0.003 "
             "--no-shuffle --pack --var name=Puyu --var author=X --warmup 1 --grad-accum 2 "
             "--weight-decay 0.01 --clip 1 --save-every 2 --threads 2 -q 2>&1 && "
             "%s generate -m %s/final -p hello -n 4 --temp 0 2>&1",
             pt_bin(), HF, p, p, d, pt_bin(), d);
    char *out = NULL;
    int rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    char mp[700];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", d);
    char *ll = loss_lines(mp);
    PT_CHECK_MSG(strncmp(ll, "1 loss ", 7) == 0 && strstr(ll, "\n3 loss ") && !strstr(ll, "val"),
                 "%s", ll);
    pu_free(ll);
    snprintf(mp, sizeof mp, "%s/step_00000002/config.json", d);
    PT_CHECK(pu_file_exists(mp));
    /* usage errors exit 2, runtime errors 1 naming the file */
    snprintf(cmd, sizeof cmd, "%s sft --data %s --out %s --steps 3 2>&1", pt_bin(), p, d);
    out = NULL;
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 2, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(cmd, sizeof cmd, "%s sft -m %s --data %s --out %s --steps 3 --var novalue 2>&1",
             pt_bin(), HF, p, d);
    out = NULL;
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 2, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(cmd, sizeof cmd, "%s sft -m %s --data /nonexistent.jsonl --out %s --steps 3 2>&1",
             pt_bin(), HF, d);
    out = NULL;
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 1 && out && strstr(out, "error:") && strstr(out, "/nonexistent.jsonl"),
                 "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(cmd, sizeof cmd, "%s sft --help 2>&1", pt_bin());
    out = NULL;
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 0 && out && strstr(out, "--no-shuffle") && strstr(out, "--pack"), "%s",
                 out ? out : "");
    pu_free(out);
}

/* 5 AdamW steps vs tools/gen_sft_ref.py (torch.optim.AdamW, float64) */
static void check_torch_ref(void) {
    json_t *ref = NULL;
    PT_OK(pu_json_load_file("tests/golden/sft_train/ref.json", &ref));
    if (!ref)
        return;
    json_t *opt = json_object_get(ref, "opt");
    char out[512];
    pt_tmp_path("sftTorch", out, sizeof out);
    pu_sft_opts o;
    base_opts(&o, "tests/golden/sft_train/data.jsonl", out);
    o.shuffle = false;
    o.pack = true;
    o.train.seq = json_integer_value(json_object_get(ref, "seq"));
    o.train.batch = json_integer_value(json_object_get(ref, "batch"));
    o.train.grad_accum = json_integer_value(json_object_get(ref, "grad_accum"));
    o.train.steps = json_integer_value(json_object_get(ref, "steps"));
    o.train.save_every = 0;
    o.train.lr = json_number_value(json_object_get(opt, "lr"));
    o.train.min_lr = json_number_value(json_object_get(opt, "min_lr"));
    o.train.warmup = json_integer_value(json_object_get(opt, "warmup"));
    o.train.adam.beta1 = json_number_value(json_object_get(opt, "beta1"));
    o.train.adam.beta2 = json_number_value(json_object_get(opt, "beta2"));
    o.train.adam.eps = json_number_value(json_object_get(opt, "eps"));
    o.train.adam.weight_decay = json_number_value(json_object_get(opt, "weight_decay"));
    o.train.adam.clip = json_number_value(json_object_get(opt, "clip"));
    pu_pool *pool = pu_pool_create(2);
    PT_OK(pu_sft_run(&o, pool));
    pu_pool_destroy(pool);
    char mp[700];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", out);
    double got[8];
    int n = read_losses(mp, got, 8);
    json_t *want = json_object_get(ref, "losses");
    PT_EQ_I64(n, (int64_t)json_array_size(want));
    double worst = 0;
    for (int k = 0; k < n && k < (int)json_array_size(want); k++) {
        double w = json_number_value(json_array_get(want, (size_t)k));
        double rel = fabs(got[k] - w) / fabs(w);
        worst = rel > worst ? rel : worst;
        PT_CHECK_MSG(rel <= 1e-4, "step %d: loss %.9g, torch %.9g (rel %.2e)", k + 1, got[k], w,
                     rel);
    }
    printf("    %d full-SFT AdamW steps: worst loss rel diff %.2e vs torch\n", n, worst);
    json_decref(ref);
}

PT_SUITE(sft_run) {
    if (PT_TEST("5 full-SFT AdamW steps (packed, masked) == torch.optim.AdamW"))
        check_torch_ref();
    if (PT_TEST("packed batch == the same samples unpacked"))
        check_packed_equals_unpacked();
    if (PT_TEST("step losses = batches in file order (--no-shuffle), wrapping"))
        check_batch_order(false, false);
    if (PT_TEST("step losses = seeded shuffled batches"))
        check_batch_order(true, false);
    if (PT_TEST("step losses = packed batches in order"))
        check_batch_order(false, true);
    if (PT_TEST("eval before/after, final model, kill -9 + --resume bit-identical"))
        check_run_resume();
    if (PT_TEST("errors: bad records, context, vocabulary, batch"))
        check_errors();
    if (PT_TEST("puyu sft CLI contract"))
        check_cli();
}
