/*
 * bench_train.c — training throughput (tokens/s) of the fp32 CPU engine on the
 * llama2.c 15M shape (dim 288, 6 layers, 6 heads, ffn 768, vocab 32000,
 * seq 256) and optionally a 110M shape (dim 768, 12 layers, 12 heads, 4 kv
 * heads, ffn 2048, vocab 32000), with a per-phase breakdown (forward,
 * backward, AdamW), achieved GFLOP/s against the FMA peak measured in the
 * same run, and peak RSS against the estimate params + grads + 2 moments +
 * activations + backward buffers.
 *
 *   build/release/bench_train [--threads N] [--batch B] [--steps N] [--big] [--only-big]
 *                             [--lora R] [--torch] [--precision fp32|bf16] [--attn naive|flash]
 *                             [--recompute none|attn|block]
 *
 * --precision, --attn and --recompute are the training model's creation
 * options (pu_tmodel_opts; defaults fp32, flash unless PUYU_ATTN, none); the
 * header line of each run prints what ran, with the BF16 GEMM level
 * (PUYU_BF16 or the best the CPU allows: on AVX2-only CPUs bf16 is
 * emulated: operands rounded to bf16, widened to fp32 in the panel packing).
 *
 * --lora R also runs, per shape, the SFT step of LoRA (rank R, alpha 2R, on
 * wqkv, wo, w1, w2, w3) over the same shape's base held frozen in F32 as a
 * borrowed pu_model (no weight gradients, no moments for it), and prints the
 * ratio LoRA / full tokens/s. The batch has the targets of every other
 * position masked (-100) in both runs, as SFT has.
 *
 * --torch runs tools/bench_train_torch.py (the same model in PyTorch 1.13,
 * Debian python3-torch) right after, in the same run, and prints the ratio.
 * PyTorch must see OpenBLAS (LD_LIBRARY_PATH to an openblas-pthread dir) and
 * OPENBLAS_CORETYPE=SkylakeX, or the comparison is meaningless (design.md §4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_common.h"
#include "puyu/pu_train.h"

/* user + system CPU seconds of the process (all threads) */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* The machine is shared: besides wall-clock tokens/s each run reports
 * tokens per CPU-second times the thread count (what the run would reach
 * with its threads never preempted); ratios use the latter. */
static const char *g_prec, *g_attn, *g_recompute;

static double bench_shape(pu_pool *pool, const char *name, pu_config *c, int64_t B, int64_t T,
                          int steps, double peak, int64_t lora) {
    pu_tmodel *m = NULL;
    pu_model *base = NULL;
    if (lora > 0) {
        if (pu_model_init_random(c, PU_DTYPE_F32, 1, 0.02f, true, pool, &base) != PU_OK) {
            fprintf(stderr, "random base: %s\n", pu_err_msg());
            exit(1);
        }
        pu_tmodel_opts o;
        pu_tmodel_opts_default(&o);
        o.freeze_base = true;
        o.lora_r = lora;
        o.lora_alpha = 2.0 * (double)lora;
        o.seed = 1;
        o.precision = g_prec;
        o.attn = g_attn;
        if (pu_tmodel_opts_set_recompute(&o, g_recompute) != PU_OK) {
            fprintf(stderr, "%s\n", pu_err_msg());
            exit(2);
        }
        if (pu_tmodel_create_from(base, B, T, &o, &m) != PU_OK) {
            fprintf(stderr, "create: %s\n", pu_err_msg());
            exit(1);
        }
    } else {
        pu_tmodel_opts o;
        pu_tmodel_opts_default(&o);
        o.precision = g_prec;
        o.attn = g_attn;
        if (pu_tmodel_opts_set_recompute(&o, g_recompute) != PU_OK ||
            pu_tmodel_create_opts(c, B, T, &o, &m) != PU_OK) {
            fprintf(stderr, "create: %s\n", pu_err_msg());
            exit(1);
        }
        pu_tmodel_init_random(m, 1, 0.02f);
    }
    pu_adamw opt;
    pu_adamw_cfg ac = pu_adamw_default();
    pu_adamw_init(&opt, &ac, pu_tmodel_numel(m));
    int64_t N = B * T;
    int32_t *ids = pu_malloc((size_t)N * 4), *tg = pu_malloc((size_t)N * 4);
    pu_rng r;
    pu_rng_seed(&r, 1);
    for (int64_t i = 0; i < N; i++)
        ids[i] = (int32_t)(pu_rng_u64(&r) % (uint64_t)c->vocab_size),
        tg[i] = i % 2 ? PU_IGNORE_INDEX : (int32_t)(pu_rng_u64(&r) % (uint64_t)c->vocab_size);
    pu_tbatch bt = {ids, tg, NULL, NULL, B, T};
    double tf = 0, tb = 0, to = 0, best = 1e30, cpu = 0;
    for (int s = 0; s <= steps; s++) {
        double l;
        int64_t cnt;
        double c0 = cpu_seconds();
        double t0 = pu_time_now();
        pu_tmodel_zero_grad(m);
        pu_tmodel_forward(m, pool, &bt, &l, &cnt);
        double t1 = pu_time_now();
        pu_tmodel_backward(m, pool, 1.0f / (float)cnt);
        double t2 = pu_time_now();
        pu_adamw_step(&opt, m, pool, 1e-4);
        double t3 = pu_time_now();
        if (s == 0)
            continue; /* warm-up */
        cpu += cpu_seconds() - c0;
        tf += t1 - t0, tb += t2 - t1, to += t3 - t2;
        best = t3 - t0 < best ? t3 - t0 : best;
    }
    int64_t P = 0;
    for (int i = 0; i < pu_tmodel_n_params(m); i++)
        P += pu_tmodel_param(m, i)->numel;
    int64_t C = c->hidden_size, L = c->num_hidden_layers;
    /* matmul params (all but the embedding and norms) x 6 flops per token + attention */
    int64_t PL = 0; /* adapter entries */
    for (int i = 0; i < pu_tmodel_n_params(m); i++)
        if (strstr(pu_tmodel_param(m, i)->name, ".lora_"))
            PL += pu_tmodel_param(m, i)->numel;
    double mm = (double)(P - PL - c->vocab_size * C - (2 * L + 1) * C);
    /* full: 6 flops per weight and token (y, dx, dW); frozen base: 4 (no dW) */
    double flops = (lora > 0 ? 4.0 : 6.0) * mm * (double)N + 6.0 * (double)PL * (double)N +
                   6.0 * 2.0 * (double)L * (double)B * (double)T * (double)T * (double)C;
    double avg = (tf + tb + to) / steps;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double est = (4.0 * (double)pu_tmodel_numel(m) * 4 + (double)pu_tmodel_act_bytes(m) +
                  (base ? (double)pu_model_weight_bytes(base) : 0)) /
                 1e6;
    if (lora > 0)
        printf("[%s, LoRA r %lld over a frozen F32 base] %.2fM params (%.2fM trainable), batch "
               "%lld x seq %lld, %d threads\n",
               name, (long long)lora, (double)(P - PL) / 1e6, (double)PL / 1e6, (long long)B,
               (long long)T, pu_pool_size(pool));
    else
        printf("[%s, full] %.2fM params, batch %lld x seq %lld, %d threads\n", name,
               (double)P / 1e6, (long long)B, (long long)T, pu_pool_size(pool));
    printf("  precision %s (BF16 GEMM level %s), attention %s, recompute %s\n",
           pu_tmodel_precision_name(m), pu_tmodel_bf16_level_name(m), pu_tmodel_attn_name(m),
           pu_tmodel_recompute_name(m));
    printf("  step %.3f s (best %.3f): forward %.3f, backward %.3f, adamw %.3f\n", avg, best,
           tf / steps, tb / steps, to / steps);
    double cpu_tps = (double)N / (cpu / steps / (double)pu_pool_size(pool));
    printf("  %.0f tokens/s (best %.0f); %.1f GFLOP/s = %.0f%% of the FMA peak %.0f GFLOP/s\n",
           (double)N / avg, (double)N / best, flops / avg / 1e9, 100 * flops / avg / 1e9 / peak,
           peak);
    printf(
        "  CPU-time normalised: %.0f tokens/s (%.1f CPU-s per step, %.0f%% of %d threads busy)\n",
        cpu_tps, cpu / steps, 100.0 * cpu / steps / avg / (double)pu_pool_size(pool),
        pu_pool_size(pool));
    printf("  peak RSS %.0f MB (process so far); estimate (trainable x 4 + activations%s) %.0f MB "
           "(x%.2f)\n",
           (double)ru.ru_maxrss / 1e3, base ? " + frozen base" : "", est,
           (double)ru.ru_maxrss / 1e3 / est);
    pu_free(ids), pu_free(tg);
    pu_adamw_free(&opt);
    pu_tmodel_destroy(m);
    pu_model_destroy(base);
    return cpu_tps;
}

/* Run tools/bench_train_torch.py with the same settings and print its
 * tokens/s per shape next to ours (ours[0]: 15M, ours[1]: 110M, [2], [3]:
 * their LoRA runs). */
static void torch_compare(int threads, int64_t B, int steps, bool big, bool only_big, int64_t lora,
                          const double *ours) {
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/bench_train_torch.py --threads %d --batch %lld --steps %d%s%s "
             "--lora %lld",
             threads, (long long)B, steps, big ? " --big" : "", only_big ? " --only-big" : "",
             (long long)lora);
    FILE *p = popen(cmd, "r");
    if (!p) {
        printf("torch: cannot run %s\n", cmd);
        return;
    }
    char line[256], name[32];
    double tps, stp, ctps;
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        if (sscanf(line, "torch %31s %lf %lf %lf", name, &tps, &stp, &ctps) != 4)
            continue;
        int which = !strncmp(name, "15M", 3) ? 0 : 1;
        if (strstr(name, "-lora"))
            which += 2;
        printf("  PyTorch %s: %.0f tokens/s wall, %.0f CPU-time normalised; puyu/PyTorch = %.2fx "
               "(normalised)\n",
               name, tps, ctps, ours[which] / ctps);
        got++;
    }
    int rc = pclose(p);
    if (!got)
        printf("torch: no result (rc %d); needs /usr/bin/python3 with torch, run from the repo "
               "root; set LD_LIBRARY_PATH to an OpenBLAS and OPENBLAS_CORETYPE=SkylakeX "
               "(design.md 4)\n",
               rc);
    const char *lp = getenv("LD_LIBRARY_PATH"), *ct = getenv("OPENBLAS_CORETYPE");
    printf("  (torch BLAS: LD_LIBRARY_PATH=%s OPENBLAS_CORETYPE=%s)\n", lp ? lp : "(unset)",
           ct ? ct : "(unset)");
}

int main(int argc, char **argv) {
    int threads = 2, steps = 3;
    int64_t B = 4;
    bool big = false, torch = false, only_big = false;
    int64_t lora = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--big"))
            big = true;
        else if (!strcmp(argv[i], "--only-big"))
            big = only_big = true;
        else if (!strcmp(argv[i], "--lora") && i + 1 < argc)
            lora = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--torch"))
            torch = true;
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc)
            g_prec = argv[++i];
        else if (!strcmp(argv[i], "--attn") && i + 1 < argc)
            g_attn = argv[++i];
        else if (!strcmp(argv[i], "--recompute") && i + 1 < argc)
            g_recompute = argv[++i];
        else {
            fprintf(stderr, "usage: bench_train [--threads N] [--batch B] [--steps N] [--big] "
                            "[--only-big] [--lora R] [--torch] [--precision fp32|bf16] "
                            "[--attn naive|flash] [--recompute none|attn|block]\n");
            return 2;
        }
    }
    if (steps < 1)
        steps = 1;
    pu_pool *pool = pu_pool_create(threads);
    (void)pu_bench_read_bw; /* shared header; unused here */
    double peak = pu_bench_fma_peak(pool);
    pu_config c;
    pu_config_defaults(&c);
    c.vocab_size = 32000, c.hidden_size = 288, c.intermediate_size = 768;
    c.num_hidden_layers = 6, c.num_attention_heads = 6, c.num_key_value_heads = 6;
    c.head_dim = 48, c.max_position_embeddings = 256, c.rms_norm_eps = 1e-5;
    c.bias = false;
    double ours[4] = {0, 0, 0, 0};
    if (!only_big) {
        ours[0] = bench_shape(pool, "llama2.c 15M shape", &c, B, 256, steps, peak, 0);
        if (lora > 0) {
            ours[2] = bench_shape(pool, "llama2.c 15M shape", &c, B, 256, steps, peak, lora);
            printf("  LoRA / full tokens/s = %.2fx\n", ours[2] / ours[0]);
        }
    }
    if (big) {
        c.hidden_size = 768, c.intermediate_size = 2048, c.num_hidden_layers = 12;
        c.num_attention_heads = 12, c.num_key_value_heads = 4, c.head_dim = 64;
        c.max_position_embeddings = 256;
        ours[1] = bench_shape(pool, "110M shape", &c, B, 256, steps, peak, 0);
        if (lora > 0) {
            ours[3] = bench_shape(pool, "110M shape", &c, B, 256, steps, peak, lora);
            printf("  LoRA / full tokens/s = %.2fx\n", ours[3] / ours[1]);
        }
    }
    if (torch)
        torch_compare(threads, B, steps, big, only_big, lora, ours);
    pu_pool_destroy(pool);
    return 0;
}
