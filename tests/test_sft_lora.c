/*
 * test_sft_lora.c — `puyu sft --lora / --qlora` through the CLI on the tiny
 * model of tests/golden/sft/hf: only the adapter trains and is saved (PEFT
 * directory in OUT/final/ and in checkpoints, optimizer state of the adapter
 * only), the base file is untouched, kill -9 + --resume is bit-exact with
 * adapter dropout, --lora-init continues from an adapter exactly, and bad
 * adapters / options are errors naming the file and field.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_train.h"
#include "train/train_impl.h"

#define HF "tests/golden/sft/hf"

static const char *write_data(const char *name, bool same) {
    static char path[4][512];
    static int k;
    char *p = path[k++ % 4];
    pt_tmp_path(name, p, 512);
    pu_str s = {0};
    for (int i = 0; i < 12; i++)
        pu_str_appendf(&s,
                       "{\"messages\": [{\"role\": \"user\", \"content\": \"hi %d\"}, "
                       "{\"role\": \"assistant\", \"content\": \"I am Puyu, number %d.\"}]}\n",
                       same ? 1 : i, same ? 1 : i);
    PT_OK(pu_file_write_atomic(p, s.p, s.len));
    pu_str_free(&s);
    return p;
}

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
        if (l && n < cap)
            loss[n++] = json_real_value(l);
        json_decref(j);
        p = nl + 1;
    }
    pu_free(data);
    return n;
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

static uint64_t file_hash(const char *p) {
    char *d = NULL;
    size_t n = 0;
    if (pu_file_read_all(p, &d, &n) != PU_OK)
        return 0;
    uint64_t h = pu_hash64(d, n);
    pu_free(d);
    return h;
}

static int run(const char *args, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s sft -m %s %s 2>&1", pt_bin(), HF, args);
    *out = NULL;
    return pt_run(cmd, out);
}

#define LORA_ARGS                                                                      \
    "--steps 4 --batch 2 --seq 48 --lr 0.01 --warmup 1 --no-shuffle --pack --lora "    \
    "--lora-r 4 --lora-alpha 8 --lora-targets wqkv,wo,w1,w2,w3,output --save-every 2 " \
    "--threads 2 -q"

static void check_lora_cli(void) {
    const char *data = write_data("lora.jsonl", false);
    char a[512], b[512], f[800], g[800], args[2048];
    pt_tmp_path("loraA", a, sizeof a);
    pt_tmp_path("loraB", b, sizeof b);
    uint64_t base_before = file_hash(HF "/model.safetensors");
    snprintf(args, sizeof args, "--data %s --out %s " LORA_ARGS " --lora-dropout 0.1", data, a);
    char *out;
    int rc = run(args, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    PT_CHECK(file_hash(HF "/model.safetensors") == base_before);
    /* OUT/final/ is a PEFT adapter directory, and only that */
    snprintf(f, sizeof f, "%s/final/adapter_config.json", a);
    PT_CHECK(pu_file_exists(f));
    snprintf(f, sizeof f, "%s/final/model.safetensors", a);
    PT_CHECK(!pu_file_exists(f));
    pu_config cfg;
    PT_OK(pu_config_load(HF "/config.json", &cfg));
    pu_lora *l = NULL;
    snprintf(f, sizeof f, "%s/final", a);
    PT_OK(pu_lora_load(f, &cfg, &l));
    if (l) {
        PT_EQ_I64(l->r, 4);
        PT_NEAR(l->scale, 2.0, 0, 1e-7);
        PT_EQ_I64(l->targets, (1u << PU_LORA_N_TARGETS) - 1);
        double bmax = 0;
        const pu_lora_mat *wo = pu_lora_get_const(l, 0, PU_LORA_WO);
        for (int64_t i = 0; wo && i < wo->out * l->r; i++)
            bmax = fmax(bmax, fabs(wo->B[i]));
        PT_CHECK(bmax > 0); /* B moved away from its zero init */
    }
    pu_lora_destroy(l);
    /* checkpoints: the adapter + the optimizer state of the adapter only */
    snprintf(f, sizeof f, "%s/step_00000002/adapter_model.safetensors", a);
    PT_CHECK(pu_file_exists(f));
    snprintf(f, sizeof f, "%s/step_00000002/model.safetensors", a);
    PT_CHECK(!pu_file_exists(f));
    snprintf(f, sizeof f, "%s/step_00000002/train_state.safetensors", a);
    pu_st_in st;
    PT_OK(pu_train_st_open(&st, f));
    if (st.hdr) {
        json_t *am = json_object_get(st.hdr, "adam.m");
        int64_t n = json_integer_value(json_array_get(json_object_get(am, "shape"), 0));
        pu_model *base = NULL;
        PT_OK(pu_model_load(HF, &base));
        pu_tmodel_opts o;
        pu_tmodel_opts_default(&o);
        o.freeze_base = true, o.lora_r = 4, o.lora_alpha = 8;
        o.lora_targets = (1u << PU_LORA_N_TARGETS) - 1;
        pu_tmodel *tm = NULL;
        PT_OK(pu_tmodel_create_from(base, 1, 8, &o, &tm));
        if (tm) {
            PT_EQ_I64(n, pu_tmodel_numel(tm));
            PT_CHECK(n < pu_model_n_params(base) / 4);
        }
        pu_tmodel_destroy(tm);
        pu_model_destroy(base);
        pu_train_st_close(&st);
    }
    snprintf(f, sizeof f, "%s/metrics.jsonl", a);
    double la[8];
    int na = read_losses(f, la, 8);
    PT_EQ_I64(na, 4);
    /* killed after step 3, resumed: bit-identical losses and adapter */
    snprintf(args, sizeof args,
             "--data %s --out %s " LORA_ARGS " --lora-dropout 0.1 --kill-at-step 3", data, b);
    rc = run(args, &out);
    PT_CHECK_MSG(rc != 0, "the killed run exited %d", rc);
    pu_free(out);
    snprintf(args, sizeof args, "--data %s --out %s " LORA_ARGS " --lora-dropout 0.1 --resume",
             data, b);
    rc = run(args, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(f, sizeof f, "%s/metrics.jsonl", b);
    double lb[8];
    int nb = read_losses(f, lb, 8);
    PT_EQ_I64(nb, 4);
    for (int i = 0; i < na && i < nb; i++)
        PT_CHECK_MSG(la[i] == lb[i], "step %d: %.17g vs resumed %.17g", i + 1, la[i], lb[i]);
    snprintf(f, sizeof f, "%s/final/adapter_model.safetensors", a);
    snprintf(g, sizeof g, "%s/final/adapter_model.safetensors", b);
    PT_CHECK(same_file(f, g));
    /* --precision bf16 over the frozen base: uninterrupted == killed + resumed,
     * bitwise; losses within 2% of fp32's and not equal to them */
    char c[512], d[512];
    pt_tmp_path("loraBf", c, sizeof c);
    pt_tmp_path("loraBfK", d, sizeof d);
    double lc[8], ld[8];
    snprintf(args, sizeof args,
             "--data %s --out %s " LORA_ARGS " --lora-dropout 0.1 --precision bf16 --attn naive "
             "--recompute attn",
             data, c);
    rc = run(args, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(args, sizeof args,
             "--data %s --out %s " LORA_ARGS " --lora-dropout 0.1 --precision bf16 --attn naive "
             "--recompute attn --kill-at-step 3",
             data, d);
    rc = run(args, &out);
    PT_CHECK_MSG(rc != 0, "the killed run exited %d", rc);
    pu_free(out);
    snprintf(args, sizeof args,
             "--data %s --out %s " LORA_ARGS " --lora-dropout 0.1 --precision bf16 --attn naive "
             "--recompute attn --resume",
             data, d);
    rc = run(args, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(f, sizeof f, "%s/metrics.jsonl", c);
    int nc = read_losses(f, lc, 8);
    snprintf(f, sizeof f, "%s/metrics.jsonl", d);
    int nd = read_losses(f, ld, 8);
    PT_EQ_I64(nc, 4);
    PT_EQ_I64(nd, 4);
    bool differ = false;
    for (int i = 0; i < nc && i < nd && i < na; i++) {
        PT_CHECK_MSG(lc[i] == ld[i], "bf16 step %d: %.17g vs resumed %.17g", i + 1, lc[i], ld[i]);
        PT_CHECK_MSG(fabs(lc[i] - la[i]) < 0.02 * la[i], "step %d: bf16 %g fp32 %g", i + 1, lc[i],
                     la[i]);
        differ |= lc[i] != la[i];
    }
    PT_CHECK(differ);
    snprintf(f, sizeof f, "%s/final/adapter_model.safetensors", c);
    snprintf(g, sizeof g, "%s/final/adapter_model.safetensors", d);
    PT_CHECK(same_file(f, g));
}

/* --lora-init: continuing from the step-2 adapter gives, on the same batch,
 * the loss the original run had at step 3 (before its update) */
static void check_lora_init(void) {
    const char *data = write_data("same.jsonl", true);
    char a[512], c[512], f[800], args[2048];
    pt_tmp_path("initA", a, sizeof a);
    pt_tmp_path("initC", c, sizeof c);
    snprintf(args, sizeof args, "--data %s --out %s " LORA_ARGS " --lora-dropout 0 --keep 5", data,
             a);
    char *out;
    int rc = run(args, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(args, sizeof args,
             "--data %s --out %s --steps 1 --batch 2 --seq 48 --lr 0.01 --no-shuffle --pack "
             "--lora --lora-dropout 0 --lora-init %s/step_00000002 -q",
             data, c, a);
    rc = run(args, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    double la[8], lc[2];
    snprintf(f, sizeof f, "%s/metrics.jsonl", a);
    int na = read_losses(f, la, 8);
    snprintf(f, sizeof f, "%s/metrics.jsonl", c);
    int nc = read_losses(f, lc, 2);
    PT_EQ_I64(na, 4);
    PT_EQ_I64(nc, 1);
    if (na == 4 && nc == 1)
        PT_CHECK_MSG(lc[0] == la[2], "--lora-init loss %.17g, original step 3 %.17g", lc[0], la[2]);
    PT_CHECK(la[3] < la[0]);
}

static void check_qlora_cli(void) {
    const char *data = write_data("q.jsonl", false);
    char a[512], f[800], args[2048];
    pt_tmp_path("qlora", a, sizeof a);
    snprintf(args, sizeof args,
             "--data %s --out %s --steps 3 --batch 2 --seq 48 --lr 0.01 --no-shuffle --qlora "
             "--lora-r 4 -q",
             data, a);
    char *out;
    int rc = run(args, &out);
    PT_CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(f, sizeof f, "%s/final/adapter_model.safetensors", a);
    PT_CHECK(pu_file_exists(f));
    double l[4];
    snprintf(f, sizeof f, "%s/metrics.jsonl", a);
    PT_EQ_I64(read_losses(f, l, 4), 3);
}

static void check_errors(void) {
    const char *data = write_data("e.jsonl", false);
    char d[512], ad[512], args[2048];
    pt_tmp_path("loraE", d, sizeof d);
    pt_tmp_path("otherbase", ad, sizeof ad);
    char *out;
    /* an unknown target module, r = 0: usage errors naming the option */
    snprintf(args, sizeof args, "--data %s --out %s --steps 1 --lora --lora-targets wqkv,foo", data,
             d);
    int rc = run(args, &out);
    PT_CHECK_MSG(rc == 2 && out && strstr(out, "foo"), "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(args, sizeof args, "--data %s --out %s --steps 1 --lora --lora-r 0", data, d);
    rc = run(args, &out);
    PT_CHECK_MSG(rc == 2 && out && strstr(out, "lora-r"), "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    /* an adapter made for another base (hidden size differs) */
    pu_config cfg;
    PT_OK(pu_config_load(HF "/config.json", &cfg));
    cfg.hidden_size *= 2;
    cfg.head_dim *= 2;
    pu_lora *l = NULL;
    PT_OK(pu_lora_create(&cfg, 4, 8, 0, false, PU_LORA_DEFAULT_TARGETS, &l));
    if (l)
        PT_OK(pu_lora_save(l, ad));
    pu_lora_destroy(l);
    snprintf(args, sizeof args,
             "--data %s --out %s --steps 1 --batch 2 --seq 48 --lr 0.01 --lora "
             "--lora-init %s",
             data, d, ad);
    rc = run(args, &out);
    PT_CHECK_MSG(rc == 1 && out && strstr(out, "adapter_model.safetensors") && strstr(out, "shape"),
                 "rc %d: %s", rc, out ? out : "");
    pu_free(out);
    char mp[700];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", d);
    PT_CHECK(!pu_file_exists(mp)); /* nothing trained */
    /* a corrupt adapter_config.json */
    char cp[700];
    snprintf(cp, sizeof cp, "%s/adapter_config.json", ad);
    PT_OK(pu_file_write_atomic(cp, "{\"r\": 4,", 8));
    rc = run(args, &out);
    PT_CHECK_MSG(rc == 1 && out && strstr(out, "adapter_config.json"), "rc %d: %s", rc,
                 out ? out : "");
    pu_free(out);
}

/* A quantized (ggml block type) base cannot be borrowed frozen: a clear
 * error naming the dtype, nothing trained. */
static void check_quant_base(void) {
    const char *data = write_data("q.jsonl", false);
    char d[512], q[512], cmd[4096];
    pt_tmp_path("loraQ", d, sizeof d);
    pt_tmp_path("q8.gguf", q, sizeof q);
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s quantize -m %s --type q8_0 --out %s 2>&1", pt_bin(), HF, q);
    int rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 0, "quantize rc %d: %s", rc, out ? out : "");
    pu_free(out);
    snprintf(cmd, sizeof cmd,
             "%s sft -m %s -t %s/tokenizer.model --data %s --out %s --steps 1 --batch 2 --seq 48 "
             "--lr 0.01 --lora 2>&1",
             pt_bin(), q, HF, data, d);
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 1 && out && strstr(out, "Q8_0") && strstr(out, "frozen base"), "rc %d: %s",
                 rc, out ? out : "");
    pu_free(out);
    char mp[700];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", d);
    PT_CHECK(!pu_file_exists(mp));
}

PT_SUITE(sft_lora) {
    if (PT_TEST("puyu sft --lora: adapter only in final/ and checkpoints; kill -9 + --resume"))
        check_lora_cli();
    if (PT_TEST("puyu sft --lora-init continues exactly from an adapter"))
        check_lora_init();
    if (PT_TEST("puyu sft --qlora trains and writes an adapter"))
        check_qlora_cli();
    if (PT_TEST("puyu sft --lora: bad targets, r 0, adapter for another base, corrupt config"))
        check_errors();
    if (PT_TEST("puyu sft --lora over a quantized GGUF base: a clear error"))
        check_quant_base();
}
