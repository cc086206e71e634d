/*
 * test_train_run.c — token shards, the data loader and the training run.
 *
 * train_data: shard round trip, every kind of corrupt shard is an error
 *             naming the file (never a crash), loader determinism and the
 *             vocabulary-mismatch check, `puyu data pack` on a small corpus
 *             when ../shared/data and the CLI command are there.
 * train_run:  a tiny pretraining run: checkpoints load as models and their
 *             inference logits equal the training forward's; a run killed
 *             with SIGKILL between checkpoints and resumed (with a different
 *             thread count) gives the same loss sequence bit for bit as an
 *             uninterrupted run; NaN loss stops with the step named and the
 *             last checkpoint intact; context-length stages; the SVG plot;
 *             the `puyu train` CLI contract when the command is wired in.
 */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt.h"
#include "puyu/pu_shard.h"
#include "puyu/pu_train.h"

/* ---------------------------------------------------------------- shards */

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

static bool err_has(const char *needle) {
    return strstr(pu_err_msg(), needle) != NULL;
}

/* synthetic corpus: documents of a noisy counting pattern, EOS (=2) after each */
static pu_status make_shards(const char *dir, int64_t vocab, int64_t n_docs, uint64_t seed,
                             const char *split) {
    pu_rng r;
    pu_rng_seed(&r, seed);
    int32_t *ids = pu_malloc((size_t)n_docs * 80 * sizeof(int32_t));
    int64_t *starts = pu_malloc((size_t)n_docs * sizeof(int64_t));
    int64_t n = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        starts[d] = n;
        int64_t len = 20 + (int64_t)(pu_rng_u64(&r) % 50);
        int32_t x = 3 + (int32_t)(pu_rng_u64(&r) % (uint64_t)(vocab - 3));
        for (int64_t i = 0; i < len; i++) {
            ids[n++] = x;
            x = pu_rng_float(&r) < 0.8f ? 3 + (x - 3 + 1) % (int32_t)(vocab - 3)
                                        : 3 + (int32_t)(pu_rng_u64(&r) % (uint64_t)(vocab - 3));
        }
        ids[n++] = 2;
    }
    PU_TRY(pu_mkdir_p(dir));
    char name[64];
    snprintf(name, sizeof name, "%s_000000.bin", split);
    char *p = pu_path_join(dir, name);
    pu_status s = pu_shard_write(p, ids, n, starts, n_docs, vocab, 0x1234);
    pu_free(p);
    pu_free(ids);
    pu_free(starts);
    return s;
}

static void test_shards(void) {
    char dir[512], path[1024];
    pt_tmp_path("shards", dir, sizeof dir);
    PT_OK(pu_mkdir_p(dir));
    if (PT_TEST("shard round trip (u16 and u32 ids, document index)")) {
        int32_t ids[7] = {5, 6, 2, 7, 2, 8, 2};
        int64_t starts[3] = {0, 3, 5};
        for (int w = 0; w < 2; w++) {
            int64_t vocab = w ? 100000 : 9;
            int32_t big[7];
            for (int i = 0; i < 7; i++)
                big[i] = w ? ids[i] * 10000 : ids[i];
            snprintf(path, sizeof path, "%s/rt%d.bin", dir, w);
            PT_OK(pu_shard_write(path, big, 7, starts, 3, vocab, 42));
            pu_shard s;
            PT_OK(pu_shard_open(&s, path));
            PT_EQ_I64(s.width, w ? 4 : 2);
            PT_EQ_I64(s.n_tokens, 7);
            PT_EQ_I64(s.n_docs, 3);
            PT_EQ_I64(s.tok_hash, 42);
            int32_t back[7];
            pu_shard_read(&s, 0, 7, back);
            PT_CHECK(memcmp(back, big, sizeof big) == 0);
            PT_EQ_I64(pu_shard_doc_start(&s, 1), 3);
            PT_EQ_I64(pu_shard_doc_start(&s, 3), 7);
            pu_shard_close(&s);
        }
        PT_CHECK(pu_shard_write(path, ids, 7, starts, 3, 6, 0) == PU_ERR_RANGE);
    }
    if (PT_TEST("corrupt shards are errors naming the file and field")) {
        int32_t ids[6] = {3, 4, 2, 5, 6, 2};
        int64_t starts[2] = {0, 3};
        snprintf(path, sizeof path, "%s/good.bin", dir);
        PT_OK(pu_shard_write(path, ids, 6, starts, 2, 10, 0));
        char *data = NULL;
        size_t len = 0;
        PT_OK(pu_file_read_all(path, &data, &len));
        char bad[1024];
        pu_shard s;
        struct {
            const char *what;
            size_t trunc;
            int off;
            int val;
        } cases[] = {
            {"empty", 0, -1, 0},          {"truncated", len - 3, -1, 0},
            {"magic", len, 0, 'X'},       {"header check", len, 20, 1},
            {"token id", len, 64 + 2, 9}, {"document index", len, (int)len - 16, 9},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char *b = pu_malloc(len);
            memcpy(b, data, len);
            if (cases[i].off >= 0)
                b[cases[i].off] = (char)cases[i].val;
            if (!strcmp(cases[i].what, "token id")) /* keep the header valid: id 9+256*0 >= 10? */
                b[64 + 3] = 1;                      /* id 265 >= vocab 10 */
            snprintf(bad, sizeof bad, "%s/bad%zu.bin", dir, i);
            write_bytes(bad, b, cases[i].trunc);
            pu_status st = pu_shard_open(&s, bad);
            PT_CHECK_MSG(st == PU_ERR_FORMAT, "%s: expected a format error, got %s", cases[i].what,
                         pu_status_str(st));
            PT_CHECK_MSG(err_has(bad), "%s: message does not name the file: %s", cases[i].what,
                         pu_err_msg());
            pu_free(b);
        }
        pu_free(data);
    }
    if (PT_TEST("loader: seeded sampling, windows, vocabulary mismatch")) {
        char ld[512];
        pt_tmp_path("loader", ld, sizeof ld);
        PT_OK(make_shards(ld, 64, 30, 5, "train"));
        pu_loader *l = NULL;
        PT_OK(pu_loader_open(ld, "train", 64, &l));
        if (l) {
            int32_t a[40], at[40], b[40], bt[40];
            pu_rng r1, r2;
            pu_rng_seed(&r1, 9);
            pu_rng_seed(&r2, 9);
            PT_OK(pu_loader_sample(l, &r1, 4, 10, a, at));
            PT_OK(pu_loader_sample(l, &r2, 4, 10, b, bt));
            PT_CHECK(memcmp(a, b, sizeof a) == 0 && memcmp(at, bt, sizeof at) == 0);
            for (int i = 0; i < 9; i++)
                PT_EQ_I64(at[i], a[i + 1]);
            pu_loader_window(l, 0, 10, a, at);
            PT_EQ_I64(pu_loader_n_tokens(l) > 100, 1);
            pu_loader_close(l);
        }
        PT_CHECK(pu_loader_open(ld, "train", 32, &l) == PU_ERR_FORMAT);
        PT_CHECK(err_has("vocabulary mismatch"));
        PT_CHECK(pu_loader_open(ld, "val", 64, &l) == PU_ERR_FORMAT);
        PT_CHECK(err_has("no val_*.bin"));
    }
    if (PT_TEST("puyu data pack (JSONL + text, val split) on the shared corpus")) {
        char tok[512], c4[512], ts[512], cmd[2048], out[512];
        const char *t = pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok);
        const char *a = t ? pt_shared_path("corpus/en-c4/c4_demo.jsonl", c4, sizeof c4) : NULL;
        const char *b =
            a ? pt_shared_path("corpus/en-tinystories/tinystories_train_head.txt", ts, sizeof ts)
              : NULL;
        if (b) {
            snprintf(cmd, sizeof cmd, "%s data pack --help >/dev/null 2>&1", pt_bin());
            if (pt_run(cmd, NULL) != 0) {
                pt_skip("`puyu data pack` is not wired into the CLI yet");
            } else {
                pt_tmp_path("packed", out, sizeof out);
                snprintf(cmd, sizeof cmd,
                         "%s data pack -t %s --in %s %s --out %s --val-fraction 0.1 "
                         "--threads 2 2>&1",
                         pt_bin(), t, a, b, out);
                char *o = NULL;
                int rc = pt_run(cmd, &o);
                PT_CHECK_MSG(rc == 0, "pack failed: %s", o ? o : "");
                pu_free(o);
                pu_loader *l = NULL;
                PT_OK(pu_loader_open(out, "train", 512, &l));
                if (l)
                    PT_CHECK(pu_loader_n_tokens(l) > 100000);
                pu_loader_close(l);
                PT_OK(pu_loader_open(out, "val", 512, &l));
                pu_loader_close(l);
                /* ids == encode(text) + EOS: the first document of the JSONL */
                pu_shard s;
                char sp[600];
                snprintf(sp, sizeof sp, "%s/train_000000.bin", out);
                PT_OK(pu_shard_open(&s, sp));
                if (s.n_docs > 2) {
                    int64_t e = pu_shard_doc_start(&s, 1);
                    int32_t last;
                    pu_shard_read(&s, e - 1, 1, &last);
                    PT_EQ_I64(last, 2);
                }
                pu_shard_close(&s);
            }
        }
    }
}

PT_SUITE(train_data) {
    test_shards();
}

/* ---------------------------------------------------------------- runs */

static const char *tiny_config =
    "{\"architectures\": [\"InternLM2ForCausalLM\"], \"model_type\": \"internlm2\", "
    "\"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64, "
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
    "\"hidden_act\": \"silu\", \"max_position_embeddings\": 64, \"initializer_range\": 0.05, "
    "\"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"rope_scaling\": null, "
    "\"tie_word_embeddings\": false, \"bias\": false, \"bos_token_id\": 1, \"eos_token_id\": 2, "
    "\"pad_token_id\": 0}";

/* "step loss" pairs of the train lines and "step val" of the val lines, as text */
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

static void base_opts(pu_train_opts *o, const char *cfg, const char *data, const char *out) {
    pu_train_opts_default(o);
    o->config_path = cfg;
    o->data_dir = data;
    o->out_dir = out;
    o->steps = 8;
    o->batch = 4;
    o->seq = 16;
    o->lr = 1e-2;
    o->warmup = 2;
    o->seed = 3;
    o->eval_every = 4;
    o->eval_batches = 2;
    o->save_every = 3;
    o->keep = 2;
    o->quiet = true;
    o->grad_accum = 2;
}

static void test_runs(void) {
    char cfg[512], data[512], a[512], b[512], c[512];
    pt_tmp_path("cfg.json", cfg, sizeof cfg);
    pt_tmp_path("data", data, sizeof data);
    if (pu_file_write_atomic(cfg, tiny_config, strlen(tiny_config)) != PU_OK ||
        make_shards(data, 64, 60, 1, "train") != PU_OK ||
        make_shards(data, 64, 10, 2, "val") != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "setup: %s", pu_err_msg());
        return;
    }
    pt_tmp_path("runA", a, sizeof a);
    pt_tmp_path("runB", b, sizeof b);
    pt_tmp_path("runC", c, sizeof c);
    if (PT_TEST("train 8 steps: metrics, checkpoints kept, loss decreases")) {
        pu_train_opts o;
        base_opts(&o, cfg, data, a);
        pu_pool *pool = pu_pool_create(2);
        PT_OK(pu_train_run(&o, pool));
        pu_pool_destroy(pool);
        char p[700];
        snprintf(p, sizeof p, "%s/metrics.jsonl", a);
        char *ll = loss_lines(p);
        int n = 0;
        double first = 0, last = 0;
        for (char *q = ll; *q; q = strchr(q, '\n') + 1) {
            long long st;
            char kind[8];
            double v;
            if (sscanf(q, "%lld %7s %lf", &st, kind, &v) == 3 && !strcmp(kind, "loss")) {
                if (!n)
                    first = v;
                last = v;
                n++;
            }
        }
        PT_EQ_I64(n, 8);
        PT_CHECK_MSG(last < first, "loss did not decrease: %g -> %g", first, last);
        pu_free(ll);
        snprintf(p, sizeof p, "%s/step_00000008/model.safetensors", a);
        PT_CHECK(pu_file_exists(p));
        snprintf(p, sizeof p, "%s/step_00000006/train_state.safetensors", a);
        PT_CHECK(pu_file_exists(p));
        snprintf(p, sizeof p, "%s/step_00000003", a); /* keep 2 */
        PT_CHECK(!pu_dir_exists(p));
    }
    if (PT_TEST("checkpoint loads as a model; inference logits == training forward")) {
        char p[700];
        snprintf(p, sizeof p, "%s/step_00000008", a);
        pu_model *m = NULL;
        PT_OK(pu_model_load(p, &m));
        if (m) {
            pu_tmodel *tm = NULL;
            PT_OK(pu_tmodel_create(pu_model_config(m), 1, 12, &tm));
            PT_OK(pu_tmodel_load_weights(tm, m));
            int32_t ids[12] = {5, 6, 7, 8, 9, 10, 2, 30, 31, 32, 33, 40}, tg[12];
            for (int i = 0; i < 12; i++)
                tg[i] = PU_IGNORE_INDEX;
            pu_tbatch bt = {ids, tg, NULL, NULL, 1, 12};
            double l;
            int64_t cnt;
            PT_OK(pu_tmodel_forward(tm, NULL, &bt, &l, &cnt));
            PT_EQ_I64(cnt, 0);
            pu_session *s = NULL;
            PT_OK(pu_session_create(m, 16, NULL, &s));
            float *lg = pu_malloc(12 * 64 * sizeof(float));
            PT_OK(pu_session_eval(s, ids, 12, lg, true));
            PT_ALLCLOSE("logits", pu_tmodel_logits(tm), lg, 12 * 64, 1e-5, 1e-5);
            pu_free(lg);
            pu_session_destroy(s);
            pu_tmodel_destroy(tm);
        }
        pu_model_destroy(m);
    }
    if (PT_TEST("--init: continued pretraining from a checkpoint")) {
        char d[512], init[700];
        pt_tmp_path("runI", d, sizeof d);
        snprintf(init, sizeof init, "%s/step_00000008", a);
        pu_train_opts o;
        base_opts(&o, NULL, data, d);
        o.init_dir = init;
        o.steps = 2;
        PT_OK(pu_train_run(&o, NULL));
        char p[700];
        snprintf(p, sizeof p, "%s/metrics.jsonl", d);
        char *ll = loss_lines(p);
        double l1 = 99;
        sscanf(ll, "%*d %*s %lf", &l1);
        PT_CHECK_MSG(l1 < 4.0, "continued run starts at loss %g (a fresh model has ln 64 = 4.16)",
                     l1);
        pu_free(ll);
    }
    if (PT_TEST("--rope-theta: a context stage saves the raised base; --ce-chunk run == unchunked")) {
        char d[512], e[512], f[512], init[700];
        pt_tmp_path("runR", d, sizeof d);
        pt_tmp_path("runCE1", e, sizeof e);
        pt_tmp_path("runCE2", f, sizeof f);
        snprintf(init, sizeof init, "%s/step_00000008", a);
        pu_train_opts o;
        base_opts(&o, NULL, data, d);
        o.init_dir = init;
        o.steps = 2;
        o.seq = 32;
        o.rope_theta = 123456;
        PT_OK(pu_train_run(&o, NULL));
        char p[700];
        snprintf(p, sizeof p, "%s/step_00000002/config.json", d);
        pu_config rc;
        PT_OK(pu_config_load(p, &rc));
        PT_NEAR(rc.rope_theta, 123456, 0, 0);
        PT_CHECK(rc.max_position_embeddings >= 32);
        /* the same run with the LM head in chunks of 5 tokens: the same losses */
        char *ll[2] = {NULL, NULL};
        for (int v = 0; v < 2; v++) {
            base_opts(&o, cfg, data, v ? f : e);
            o.steps = 3;
            o.ce_chunk = v ? 5 : -1;
            PT_OK(pu_train_run(&o, NULL));
            snprintf(p, sizeof p, "%s/metrics.jsonl", v ? f : e);
            ll[v] = loss_lines(p);
        }
        double x[2][3] = {{0}}, worst = 0;
        for (int v = 0; v < 2; v++) {
            const char *q = ll[v];
            for (int i = 0; i < 3 && q; i++) {
                sscanf(q, "%*d %*s %lf", &x[v][i]);
                q = strchr(q, '\n');
                q = q ? q + 1 : NULL;
            }
        }
        for (int i = 0; i < 3; i++)
            worst = fabs(x[0][i] - x[1][i]) > worst ? fabs(x[0][i] - x[1][i]) : worst;
        PT_CHECK(x[0][0] > 1);
        PT_CHECK_MSG(worst <= 1e-5, "chunked vs unchunked losses differ by %g", worst);
        pu_free(ll[0]);
        pu_free(ll[1]);
    }
    if (PT_TEST("--init from llama2.c stories260K: wq/wk/wv packed, RoPE rows permuted")) {
        char p[512];
        if (pt_shared_path("models/stories260K/stories260K.bin", p, sizeof p)) {
            pu_model *m = NULL;
            PT_OK(pu_model_load(p, &m));
            if (m) {
                pu_tmodel *tm = NULL;
                pu_log_level lv = pu_log_get_level();
                pu_log_set_level(PU_LOG_ERROR); /* the expected "untying" warning */
                PT_OK(pu_tmodel_create(pu_model_config(m), 1, 20, &tm));
                pu_log_set_level(lv);
                PT_OK(pu_tmodel_load_weights(tm, m));
                int32_t ids[20], tg[20];
                for (int i = 0; i < 20; i++)
                    ids[i] = (i * 37 + 1) % 512, tg[i] = PU_IGNORE_INDEX;
                pu_tbatch bt = {ids, tg, NULL, NULL, 1, 20};
                double l;
                int64_t cnt;
                PT_OK(pu_tmodel_forward(tm, NULL, &bt, &l, &cnt));
                pu_session *s = NULL;
                PT_OK(pu_session_create(m, 32, NULL, &s));
                float *lg = pu_malloc(20 * 512 * sizeof(float));
                PT_OK(pu_session_eval(s, ids, 20, lg, true));
                PT_ALLCLOSE("logits", pu_tmodel_logits(tm), lg, 20 * 512, 1e-4, 1e-4);
                pu_free(lg);
                pu_session_destroy(s);
                pu_tmodel_destroy(tm);
            }
            pu_model_destroy(m);
        }
    }
    if (PT_TEST("kill -9 between checkpoints, --resume: identical loss sequence")) {
        pu_train_opts o;
        base_opts(&o, cfg, data, b);
        o.kill_at = 5; /* last checkpoint at 3; steps 4, 5 are in the metrics */
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            pu_pool *pool = pu_pool_create(2);
            pu_train_run(&o, pool);
            _exit(3); /* not reached */
        }
        int ws = 0;
        waitpid(pid, &ws, 0);
        PT_CHECK_MSG(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "child status %d", ws);
        o.kill_at = 0;
        o.resume = true;
        PT_OK(pu_train_run(&o, NULL)); /* resumed with 1 thread */
        char pa[700], pb[700];
        snprintf(pa, sizeof pa, "%s/metrics.jsonl", a);
        snprintf(pb, sizeof pb, "%s/metrics.jsonl", b);
        char *la = loss_lines(pa), *lb = loss_lines(pb);
        PT_CHECK_MSG(strcmp(la, lb) == 0, "uninterrupted:\n%s\nresumed:\n%s", la, lb);
        pu_free(la), pu_free(lb);
    }
    if (PT_TEST("--precision bf16: killed and resumed == uninterrupted; near fp32's losses")) {
        char d[512], e[512];
        pt_tmp_path("runBf", d, sizeof d);
        pt_tmp_path("runBfK", e, sizeof e);
        pu_train_opts o;
        base_opts(&o, cfg, data, d);
        o.precision = "bf16";
        pu_pool *pool = pu_pool_create(2);
        PT_OK(pu_train_run(&o, pool));
        pu_pool_destroy(pool);
        base_opts(&o, cfg, data, e);
        o.precision = "bf16";
        o.kill_at = 5;
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            pu_pool *cp = pu_pool_create(2);
            pu_train_run(&o, cp);
            _exit(3); /* not reached */
        }
        int ws = 0;
        waitpid(pid, &ws, 0);
        PT_CHECK_MSG(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "child status %d", ws);
        o.kill_at = 0;
        o.resume = true;
        PT_OK(pu_train_run(&o, NULL)); /* resumed with 1 thread */
        char pa[700], pd[700], pe[700];
        snprintf(pa, sizeof pa, "%s/metrics.jsonl", a);
        snprintf(pd, sizeof pd, "%s/metrics.jsonl", d);
        snprintf(pe, sizeof pe, "%s/metrics.jsonl", e);
        char *la = loss_lines(pa), *ld = loss_lines(pd), *le = loss_lines(pe);
        PT_CHECK_MSG(strcmp(ld, le) == 0, "uninterrupted:\n%s\nresumed:\n%s", ld, le);
        PT_CHECK_MSG(strcmp(la, ld) != 0, "bf16 losses equal fp32's bitwise: path not taken");
        /* same steps, loss within 2% of the fp32 run's */
        char *qa = la, *qd = ld;
        int n = 0;
        while (*qa && *qd) {
            long long sa, sd;
            char ka[8], kd[8];
            double va, vd;
            if (sscanf(qa, "%lld %7s %lf", &sa, ka, &va) == 3 &&
                sscanf(qd, "%lld %7s %lf", &sd, kd, &vd) == 3) {
                PT_CHECK(sa == sd && !strcmp(ka, kd));
                PT_CHECK_MSG(fabs(va - vd) < 0.02 * va, "step %lld %s: fp32 %g bf16 %g", sa, ka, va,
                             vd);
                n++;
            }
            qa = strchr(qa, '\n') + 1;
            qd = strchr(qd, '\n') + 1;
        }
        PT_CHECK(n >= 8);
        pu_free(la), pu_free(ld), pu_free(le);
    }
    if (PT_TEST("NaN loss stops naming the step; the last checkpoint stays")) {
        pu_train_opts o;
        base_opts(&o, cfg, data, c);
        o.lr = 1e30;
        o.warmup = 0;
        o.adam.clip = 0;
        o.save_every = 1;
        o.eval_every = 0;
        pu_status s = pu_train_run(&o, NULL);
        PT_CHECK(s == PU_ERR_INVALID);
        PT_CHECK_MSG(err_has("step ") && err_has("last good checkpoint"), "%s", pu_err_msg());
        char lp[700];
        snprintf(lp, sizeof lp, "%s/latest", c);
        char *txt = NULL;
        size_t len;
        if (pu_file_read_all(lp, &txt, &len) == PU_OK) {
            txt[strcspn(txt, "\n")] = 0;
            char d[800];
            snprintf(d, sizeof d, "%s/%s", c, txt);
            pu_model *m = NULL;
            PT_OK(pu_model_load(d, &m));
            pu_model_destroy(m);
        }
        pu_free(txt);
    }
    if (PT_TEST("temp files of a killed writer are swept by the next run, live ones stay")) {
        char d[512];
        pt_tmp_path("runT", d, sizeof d);
        PT_OK(pu_mkdir_p(d));
        fflush(NULL);
        pid_t dead = fork(); /* a pid that is surely gone once reaped */
        if (dead == 0)
            _exit(0);
        waitpid(dead, NULL, 0);
        char stale[3][700], live[700], other[700];
        snprintf(stale[0], sizeof stale[0], "%s/latest.tmp.%ld.0", d, (long)dead);
        snprintf(stale[1], sizeof stale[1], "%s/metrics.jsonl.tmp.%ld.17", d, (long)dead);
        snprintf(stale[2], sizeof stale[2], "%s/config.json.tmp.%ld.3", d, (long)dead);
        snprintf(live, sizeof live, "%s/latest.tmp.%ld.0", d, (long)getppid());
        snprintf(other, sizeof other, "%s/notes.tmp.x.1", d);
        for (int i = 0; i < 3; i++)
            PT_OK(pu_file_write_atomic(stale[i], "x", 1));
        PT_OK(pu_file_write_atomic(live, "x", 1));
        PT_OK(pu_file_write_atomic(other, "x", 1));
        int n = -1;
        PT_OK(pu_sweep_stale_tmp(d, &n));
        PT_CHECK_MSG(n == 3, "removed %d", n);
        /* the same files again, swept by a training run this time */
        for (int i = 0; i < 3; i++)
            PT_OK(pu_file_write_atomic(stale[i], "x", 1));
        pu_train_opts o;
        base_opts(&o, cfg, data, d);
        o.steps = 1;
        o.save_every = 0;
        o.eval_every = 0;
        PT_OK(pu_train_run(&o, NULL));
        for (int i = 0; i < 3; i++)
            PT_CHECK_MSG(!pu_file_exists(stale[i]), "%s is still there", stale[i]);
        PT_CHECK(pu_file_exists(live));
        PT_CHECK(pu_file_exists(other));
        PT_CHECK(pu_sweep_stale_tmp("/nonexistent/dir", NULL) != PU_OK);
        pu_err_clear();
    }
    if (PT_TEST("disk full while saving: error, the previous checkpoint stays intact")) {
        char d[512];
        pt_tmp_path("runF", d, sizeof d);
        pu_train_opts o;
        base_opts(&o, cfg, data, d);
        o.steps = 2;
        o.save_every = 2;
        o.eval_every = 0;
        PT_OK(pu_train_run(&o, NULL));
        /* a child continues to step 4 with files limited to 20 KB (EFBIG
         * stands in for ENOSPC): saving step 4 must fail cleanly */
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {20000, 20000};
            setrlimit(RLIMIT_FSIZE, &rl);
            o.steps = 4;
            o.resume = true;
            pu_status st = pu_train_run(&o, NULL);
            _exit(st != PU_OK && err_has("saving checkpoint at step 4") && err_has("intact") ? 0
                                                                                             : 1);
        }
        int ws = 0;
        waitpid(pid, &ws, 0);
        PT_CHECK_MSG(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child status %d", ws);
        char p[700], *txt = NULL;
        size_t len;
        snprintf(p, sizeof p, "%s/latest", d);
        PT_OK(pu_file_read_all(p, &txt, &len));
        PT_CHECK(txt && strncmp(txt, "step_00000002", 13) == 0);
        pu_free(txt);
        snprintf(p, sizeof p, "%s/step_00000002", d);
        pu_model *m = NULL;
        PT_OK(pu_model_load(p, &m));
        pu_model_destroy(m);
        snprintf(p, sizeof p, "%s/.tmp_step_00000004", d);
        PT_CHECK(!pu_dir_exists(p));
        /* and the run resumes from it, even without the `latest` pointer */
        snprintf(p, sizeof p, "%s/latest", d);
        unlink(p);
        o.steps = 4;
        o.resume = true;
        PT_OK(pu_train_run(&o, NULL));
        snprintf(p, sizeof p, "%s/metrics.jsonl", d);
        char *ll = loss_lines(p);
        PT_CHECK_MSG(strncmp(ll, "1 loss ", 7) == 0 && strstr(ll, "\n3 loss ") &&
                         strstr(ll, "\n4 loss "),
                     "%s", ll);
        pu_free(ll);
    }
    if (PT_TEST("context-length stages and bad schedules")) {
        double f[4];
        int64_t l[4];
        int n = 0;
        PT_OK(pu_seq_schedule_parse("0:8,0.5:16", f, l, 4, &n));
        PT_EQ_I64(n, 2);
        PT_EQ_I64(l[1], 16);
        PT_CHECK(pu_seq_schedule_parse("0.2:8", f, l, 4, &n) == PU_ERR_INVALID);
        PT_CHECK(pu_seq_schedule_parse("0:8,0:16", f, l, 4, &n) == PU_ERR_INVALID);
        PT_CHECK(pu_seq_schedule_parse("0:x", f, l, 4, &n) == PU_ERR_INVALID);
        char d[512];
        pt_tmp_path("runS", d, sizeof d);
        pu_train_opts o;
        base_opts(&o, cfg, data, d);
        o.seq_schedule = "0:8,0.5:24";
        o.steps = 4;
        PT_OK(pu_train_run(&o, NULL));
        char p[700], *txt = NULL;
        size_t len;
        snprintf(p, sizeof p, "%s/metrics.jsonl", d);
        if (pu_file_read_all(p, &txt, &len) == PU_OK) {
            PT_CHECK(strstr(txt, "\"step\": 2, \"loss\"") && strstr(txt, "\"seq\": 8,"));
            PT_CHECK(strstr(txt, "\"seq\": 24,"));
        }
        pu_free(txt);
    }
    if (PT_TEST("plot: SVG with train and val curves")) {
        char p[700], svg[512];
        snprintf(p, sizeof p, "%s/metrics.jsonl", a);
        pt_tmp_path("loss.svg", svg, sizeof svg);
        PT_OK(pu_plot_metrics(p, svg, "tiny <run>"));
        char *txt = NULL;
        size_t len;
        if (pu_file_read_all(svg, &txt, &len) == PU_OK) {
            PT_CHECK(strstr(txt, "<svg") && strstr(txt, "<polyline") && strstr(txt, "val loss"));
            PT_CHECK(strstr(txt, "tiny &lt;run&gt;"));
        }
        pu_free(txt);
        pt_tmp_path("empty.jsonl", p, sizeof p);
        write_bytes(p, "\n", 1);
        PT_CHECK(pu_plot_metrics(p, svg, "x") == PU_ERR_FORMAT);
    }
    if (PT_TEST("puyu train CLI contract (+ resume, plot)")) {
        char cmd[8192], d[512];
        snprintf(cmd, sizeof cmd, "%s train --help >/dev/null 2>&1", pt_bin());
        if (pt_run(cmd, NULL) != 0) {
            pt_skip("`puyu train` is not wired into the CLI yet");
            return;
        }
        pt_tmp_path("runCLI", d, sizeof d);
        snprintf(cmd, sizeof cmd,
                 "%s train --config %s --data %s --out %s --steps 3 --batch 2 --seq 16 --lr 0.01 "
                 "--seed 5 --metrics %s/m.jsonl --threads 2 -q 2>&1 && %s plot %s/m.jsonl -o "
                 "%s/l.svg 2>&1",
                 pt_bin(), cfg, data, d, d, pt_bin(), d, d);
        char *out = NULL;
        int rc = pt_run(cmd, &out);
        PT_CHECK_MSG(rc == 0, "%s", out ? out : "");
        pu_free(out);
        char p[700];
        snprintf(p, sizeof p, "%s/m.jsonl", d);
        char *ll = loss_lines(p);
        PT_CHECK_MSG(strncmp(ll, "1 loss ", 7) == 0 && strstr(ll, "\n3 loss "), "%s", ll);
        pu_free(ll);
        snprintf(p, sizeof p, "%s/step_00000003/config.json", d);
        PT_CHECK(pu_file_exists(p));
        /* the creation options: the startup line says what ran; bad values named */
        pt_tmp_path("runCLIbf", p, sizeof p);
        snprintf(
            cmd, sizeof cmd,
            "PUYU_LOG=info %s train --config %s --data %s --out %s --steps 2 --batch 2 "
            "--seq 16 --lr 0.01 --precision bf16 --attn naive --recompute attn --threads 2 2>&1",
            pt_bin(), cfg, data, p);
        out = NULL;
        rc = pt_run(cmd, &out);
        PT_CHECK_MSG(rc == 0 && out &&
                         strstr(out, "attention naive, precision bf16 (bf16 level ") &&
                         strstr(out, "recompute attn"),
                     "rc %d: %s", rc, out ? out : "");
        pu_free(out);
        const char *bad[3] = {"--precision fp16", "--attn fast", "--recompute all"};
        for (int i = 0; i < 3; i++) {
            snprintf(cmd, sizeof cmd,
                     "%s train --config %s --data %s --out %s --steps 1 --batch 2 --seq 16 %s 2>&1",
                     pt_bin(), cfg, data, p, bad[i]);
            out = NULL;
            rc = pt_run(cmd, &out);
            PT_CHECK_MSG(rc != 0 && out && strstr(out, strchr(bad[i], ' ') + 1), "%s: rc %d: %s",
                         bad[i], rc, out ? out : "");
            pu_free(out);
        }
        snprintf(cmd, sizeof cmd,
                 "%s train --config %s --data /nonexistent --out %s --steps 3 "
                 "2>&1",
                 pt_bin(), cfg, d);
        out = NULL;
        rc = pt_run(cmd, &out);
        PT_CHECK_MSG(rc != 0 && out && strstr(out, "error:") && strstr(out, "/nonexistent"),
                     "rc %d: %s", rc, out ? out : "");
        pu_free(out);
    }
}

PT_SUITE(train_run) {
    test_runs();
}
