/*
 * bench_qlora.c — peak memory (RSS) of QLoRA training on the InternLM2-1.8B
 * shape (vocab 92544, hidden 2048, ffn 8192, 24 layers, 16 heads / 8 kv
 * heads), random weights stored as BF16 in a model directory, LoRA r = 16
 * on wqkv, wo, w1, w2, w3, batch 1 x seq 512, activation checkpointing on.
 * One training step (forward, backward, AdamW) is timed; peak RSS is
 * compared with the estimate NF4 base + BF16 LM head (read every step) +
 * adapter (params, grads, 2 moments) + activations + backward buffers.
 *
 *   build/release/bench_qlora [--dir DIR] [--seq T] [--r R] [--threads N] [--lora]
 *
 * The model directory (DIR, default /tmp/puyu_bench_1p8b; 3.6 GB) is written
 * by a child process on first use, so the parent's RSS only sees what
 * training keeps: the BF16 file is memory-mapped, each linear is quantized
 * to NF4 and its mapped pages dropped (pu_model_drop_pages). --lora runs the
 * same step with the BF16 base borrowed as is (plain LoRA) for comparison.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "puyu/pu_train.h"

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, pu_err_msg());
    exit(1);
}

static void cfg_1p8b(pu_config *c) {
    pu_config_defaults(c);
    snprintf(c->architecture, sizeof c->architecture, "InternLM2ForCausalLM");
    snprintf(c->model_type, sizeof c->model_type, "internlm2");
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "bfloat16");
    c->vocab_size = 92544, c->hidden_size = 2048, c->intermediate_size = 8192;
    c->num_hidden_layers = 24, c->num_attention_heads = 16, c->num_key_value_heads = 8;
    c->head_dim = 128, c->max_position_embeddings = 32768, c->rope_theta = 1e6;
    c->rms_norm_eps = 1e-5;
    c->bias = false;
    c->tie_word_embeddings = false;
}

typedef struct {
    char name[96];
    const pu_tensor *t;
} ent;

/* the random BF16 model as config.json + model.safetensors (child process) */
static int write_model(const char *dir) {
    pu_config c;
    cfg_1p8b(&c);
    pu_pool *pool = pu_pool_create(0);
    pu_model *m = NULL;
    if (pu_model_init_random(&c, PU_DTYPE_BF16, 1, 0.02f, true, pool, &m) != PU_OK)
        die("random model");
    if (pu_mkdir_p(dir) != PU_OK)
        die(dir);
    char *js = pu_config_to_json(&c), *cp = pu_path_join(dir, "config.json");
    if (pu_file_write_atomic(cp, js, strlen(js)) != PU_OK)
        die(cp);
    const pu_weights *w = pu_model_weights(m);
    int64_t L = c.num_hidden_layers, n = 0;
    ent *e = pu_malloc((size_t)(3 + 7 * L) * sizeof *e);
#define E(nm, tt) (snprintf(e[n].name, sizeof e[n].name, "%s", nm), e[n++].t = (tt))
    E("model.tok_embeddings.weight", &w->tok_embeddings);
    char nm[96];
    for (int64_t l = 0; l < L; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        const char *suf[7] = {"attention_norm",  "attention.wqkv",  "attention.wo",   "ffn_norm",
                              "feed_forward.w1", "feed_forward.w3", "feed_forward.w2"};
        const pu_tensor *ts[7] = {&lw->attn_norm, &lw->wqkv, &lw->wo, &lw->ffn_norm,
                                  &lw->w1,        &lw->w3,   &lw->w2};
        for (int k = 0; k < 7; k++) {
            snprintf(nm, sizeof nm, "model.layers.%lld.%s.weight", (long long)l, suf[k]);
            E(nm, ts[k]);
        }
    }
    E("model.norm.weight", &w->norm);
    E("output.weight", &w->output);
#undef E
    pu_str h = {0};
    pu_str_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const pu_tensor *t = e[i].t;
        uint64_t bytes = (uint64_t)pu_tensor_numel(t) * pu_dtype_size(t->dtype);
        pu_str_appendf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", e[i].name,
                       pu_dtype_name(t->dtype), (long long)t->shape[0]);
        if (t->ndim == 2)
            pu_str_appendf(&h, ",%lld", (long long)t->shape[1]);
        pu_str_appendf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                       (unsigned long long)(off + bytes));
        off += bytes;
    }
    pu_str_putc(&h, '}');
    while (h.len % 8)
        pu_str_putc(&h, ' ');
    char *sp = pu_path_join(dir, "model.safetensors");
    pu_atomic_file af;
    if (pu_atomic_open(&af, sp) != PU_OK)
        die(sp);
    uint64_t hl = h.len;
    bool ok = fwrite(&hl, 8, 1, af.f) == 1 && fwrite(h.p, 1, h.len, af.f) == h.len;
    for (int64_t i = 0; ok && i < n; i++) {
        const pu_tensor *t = e[i].t;
        size_t bytes = (size_t)pu_tensor_numel(t) * pu_dtype_size(t->dtype);
        ok = fwrite(t->data, 1, bytes, af.f) == bytes;
    }
    if (!ok || pu_atomic_commit(&af) != PU_OK)
        die("writing the model");
    printf("wrote %s (%.2f GB, BF16)\n", dir, (double)off / 1e9);
    return 0;
}

static double rss_now_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE) / 1e6;
}

int main(int argc, char **argv) {
    const char *dir = "/tmp/puyu_bench_1p8b";
    int64_t T = 512, r = 16;
    int threads = 2;
    bool plain = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc)
            T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--r") && i + 1 < argc)
            r = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lora"))
            plain = true;
        else {
            fprintf(stderr, "usage: bench_qlora [--dir DIR] [--seq T] [--r R] [--threads N] "
                            "[--lora]\n");
            return 2;
        }
    }
    char *probe = pu_path_join(dir, "model.safetensors");
    if (!pu_file_exists(probe)) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(write_model(dir));
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return 1;
    }
    pu_free(probe);
    pu_pool *pool = pu_pool_create(threads);
    double t0 = pu_time_now();
    pu_model *base = NULL;
    if (pu_model_load(dir, &base) != PU_OK)
        die(dir);
    pu_tmodel_opts o;
    pu_tmodel_opts_default(&o);
    o.freeze_base = true;
    o.qlora = !plain;
    o.recompute = true;
    o.lora_r = r;
    o.lora_alpha = 2.0 * (double)r;
    o.seed = 1;
    pu_tmodel *m = NULL;
    if (pu_tmodel_create_from(base, 1, T, &o, &m) != PU_OK)
        die("create");
    double t1 = pu_time_now();
    printf("[InternLM2-1.8B shape, %s] r %lld, batch 1 x seq %lld, %d threads\n",
           plain ? "LoRA over the BF16 base" : "QLoRA (NF4 + double quant)", (long long)r,
           (long long)T, threads);
    printf("  load + %s: %.1f s, RSS %.0f MB\n", plain ? "borrow" : "quantize", t1 - t0,
           rss_now_mb());
    pu_adamw_cfg ac = pu_adamw_default();
    pu_adamw opt;
    pu_adamw_init(&opt, &ac, pu_tmodel_numel(m));
    const pu_config *c = pu_model_config(base);
    int32_t *ids = pu_malloc((size_t)T * 4), *tg = pu_malloc((size_t)T * 4);
    pu_rng rng;
    pu_rng_seed(&rng, 1);
    for (int64_t i = 0; i < T; i++)
        ids[i] = (int32_t)(pu_rng_u64(&rng) % (uint64_t)c->vocab_size),
        tg[i] = (int32_t)(pu_rng_u64(&rng) % (uint64_t)c->vocab_size);
    pu_tbatch bt = {ids, tg, NULL, NULL, 1, T};
    double l;
    int64_t cnt;
    double a = pu_time_now();
    if (pu_tmodel_forward(m, pool, &bt, &l, &cnt) != PU_OK)
        die("forward");
    double b = pu_time_now();
    pu_tmodel_backward(m, pool, 1.0f / (float)cnt);
    double cc = pu_time_now();
    pu_adamw_step(&opt, m, pool, 1e-4);
    double d = pu_time_now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t C = c->hidden_size, V = c->vocab_size;
    double nf4 = (double)pu_tmodel_frozen_bytes(m) / 1e6;
    double head = (double)(V * C) * 2 / 1e6;
    double adapter = 4.0 * (double)pu_tmodel_numel(m) * 4 / 1e6;
    double act = (double)pu_tmodel_act_bytes(m) / 1e6;
    double bwd =
        (double)(T *
                 (2 * C + 2 * (c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim +
                  3 * c->intermediate_size)) *
        4 / 1e6;
    double base_b = plain ? (double)pu_model_weight_bytes(base) / 1e6 - head : nf4;
    double est = base_b + head + adapter + act + bwd;
    printf("  step: forward %.1f s, backward (recomputing) %.1f s, AdamW %.2f s; loss %.4f\n",
           b - a, cc - b, d - cc, l / (double)cnt);
    printf("  peak RSS %.0f MB (target < 2500 MB); estimate %.0f MB = base %.0f (%s) + LM head "
           "%.0f (BF16) + adapter x4 %.0f + activations %.0f + backward %.0f  (x%.2f)\n",
           (double)ru.ru_maxrss / 1e3, est, base_b, plain ? "BF16 mmap" : "NF4", head, adapter, act,
           bwd, (double)ru.ru_maxrss / 1e3 / est);
    pu_free(ids), pu_free(tg);
    pu_adamw_free(&opt);
    pu_tmodel_destroy(m);
    pu_model_destroy(base);
    pu_pool_destroy(pool);
    return 0;
}
