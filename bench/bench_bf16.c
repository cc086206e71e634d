/*
 * bench_bf16.c — BF16 mixed-precision GEMM per level, with rooflines.
 *
 * usage: bench_bf16 [--threads N] [--quick]
 *
 * Prints (a) the peak FP32 FMA GFLOP/s (bench_common.h), the AVX512_BF16
 * vdpbf16ps chain loop and the AMX BF16 tile loop (four _tile_dpbf16ps on
 * registers only, 16x16x32 MACs each) at 1 and N threads — the roofline of
 * each level, skipped with a line where the CPU lacks it; (b) for the
 * training products of the 110M shape (dim 768, ffn 2048) and the 1.8B
 * shape (dim 2048, ffn 8192) at T = 256 x batch, the GFLOP/s of the fp32
 * pu_top_matmul_fwd and of pu_bf16_matmul_fwd/bwd at every level this CPU
 * runs (the scalar reference only with --ref), and the % of the level's
 * roofline. Best of runs; the machine may be shared, repeat when noisy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "puyu/pu_kernels.h"
#include "train/gemm_bf16.h"

typedef struct {
    int level; /* 2 avx512bf16, 3 amx */
    int64_t n;
    float sink[64];
} peak_ctx;

static void peak_worker(void *vc, int ith, int nth) {
    peak_ctx *c = vc;
    (void)nth;
    c->sink[ith] =
        c->level == PU_BF16_AMX ? pu_bf16_amx_peak_loop(c->n) : pu_bf16_avx512bf16_peak_loop(c->n);
}

/* GFLOP/s of the register-only loop of level l over the pool's threads */
static double level_peak(pu_pool *pool, pu_bf16_level l) {
    peak_ctx c = {.level = l};
    double flops_per_iter = l == PU_BF16_AMX ? 4.0 * 16 * 16 * 32 * 2 : 12.0 * 16 * 2 * 2;
    c.n = l == PU_BF16_AMX ? 200000 : 2000000;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = pu_time_now();
        pu_pool_run(pool, peak_worker, &c);
        double t = pu_time_now() - t0;
        double g = flops_per_iter * (double)c.n * pu_pool_size(pool) / t / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

typedef struct {
    const char *name;
    int64_t M, K; /* weight (M, K) */
} wshape;

int main(int argc, char **argv) {
    int threads = 0;
    bool quick = false, ref = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--ref"))
            ref = true;
        else {
            fprintf(stderr, "usage: bench_bf16 [--threads N] [--quick] [--ref]\n");
            return 2;
        }
    }
    pu_pool *pool = pu_pool_create(threads), *one = pu_pool_create(1);
    int nt = pu_pool_size(pool);
    (void)pu_bench_read_bw; /* shared header; unused here */
    double peak[PU_BF16_NLEVELS] = {0};
    printf("rooflines (GFLOP/s, 1 / %d threads)\n", nt);
    double f1 = pu_bench_fma_peak(one), fn = pu_bench_fma_peak(pool);
    printf("  fp32 FMA            %10.1f %10.1f\n", f1, fn);
    peak[PU_BF16_REF] = peak[PU_BF16_AVX2] = fn;
    for (int l = PU_BF16_AVX512BF16; l < PU_BF16_NLEVELS; l++) {
        const char *what = l == PU_BF16_AMX ? "AMX BF16 tile loop" : "AVX512_BF16 vdpbf16ps";
        if (!pu_bf16_level_available((pu_bf16_level)l)) {
            printf("  %-19s skipped: this CPU/OS lacks %s\n", what,
                   pu_bf16_level_name((pu_bf16_level)l));
            continue;
        }
        double p1 = level_peak(one, (pu_bf16_level)l);
        peak[l] = level_peak(pool, (pu_bf16_level)l);
        printf("  %-19s %10.1f %10.1f\n", what, p1, peak[l]);
    }
    int64_t B = quick ? 2 : 8, T = 256, N = B * T;
    const wshape shapes[] = {
        {"110M wqkv 768x768", 768 + 2 * 256, 768}, {"110M w1 2048x768", 2048, 768},
        {"110M w2 768x2048", 768, 2048},           {"1.8B wqkv", 2048 + 2 * 1024, 2048},
        {"1.8B w1 8192x2048", 8192, 2048},         {"1.8B w2 2048x8192", 2048, 8192},
    };
    int nshape = quick ? 3 : (int)(sizeof shapes / sizeof *shapes);
    printf("\nproducts at N = %lld tokens, %d threads: GFLOP/s (%% of the level's roofline)\n",
           (long long)N, nt);
    printf("%-20s %-11s %12s %12s %12s\n", "weight", "level", "fwd", "dx", "dw");
    pu_rng r;
    pu_rng_seed(&r, 1);
    for (int s = 0; s < nshape; s++) {
        int64_t M = shapes[s].M, K = shapes[s].K;
        float *xf = pu_malloc((size_t)(N * K) * 4), *wf = pu_malloc((size_t)(M * K) * 4);
        float *y = pu_malloc((size_t)(N * M) * 4), *dx = pu_calloc((size_t)(N * K), 4);
        float *dw = pu_calloc((size_t)(M * K), 4);
        for (int64_t i = 0; i < N * K; i++)
            xf[i] = (float)pu_rng_normal(&r);
        for (int64_t i = 0; i < M * K; i++)
            wf[i] = (float)pu_rng_normal(&r) * 0.02f;
        uint16_t *x = pu_malloc((size_t)(N * K) * 2), *w = pu_malloc((size_t)(M * K) * 2);
        uint16_t *dy = pu_malloc((size_t)(N * M) * 2);
        pu_bf16_from_f32(pool, x, xf, N * K);
        pu_bf16_from_f32(pool, w, wf, M * K);
        for (int64_t i = 0; i < N * M; i++)
            dy[i] = x[i % (N * K)];
        double flops = 2.0 * (double)N * M * K;
        int reps = quick ? 1 : 3;
        double best = 1e30;
        for (int i = 0; i < reps; i++) {
            double t0 = pu_time_now();
            pu_top_matmul_fwd(pool, pu_kernels_get(), y, xf, wf, N, M, K);
            double t = pu_time_now() - t0;
            best = t < best ? t : best;
        }
        printf("%-20s %-11s %12.1f (%4.0f%%)\n", shapes[s].name, "fp32", flops / best / 1e9,
               100 * flops / best / 1e9 / fn);
        for (int l = ref ? 0 : 1; l < PU_BF16_NLEVELS; l++) {
            if (!pu_bf16_level_available((pu_bf16_level)l))
                continue;
            double tb[3] = {1e30, 1e30, 1e30};
            for (int i = 0; i < reps; i++) {
                double t0 = pu_time_now();
                pu_bf16_matmul_fwd(pool, (pu_bf16_level)l, y, x, w, N, M, K);
                double t1 = pu_time_now();
                pu_bf16_matmul_bwd(pool, (pu_bf16_level)l, dx, NULL, dy, x, w, N, M, K);
                double t2 = pu_time_now();
                pu_bf16_matmul_bwd(pool, (pu_bf16_level)l, NULL, dw, dy, x, w, N, M, K);
                double t3 = pu_time_now();
                double d[3] = {t1 - t0, t2 - t1, t3 - t2};
                for (int j = 0; j < 3; j++)
                    tb[j] = d[j] < tb[j] ? d[j] : tb[j];
            }
            printf("%-20s %-11s", "", pu_bf16_level_name((pu_bf16_level)l));
            for (int j = 0; j < 3; j++)
                printf(" %6.1f (%3.0f%%)", flops / tb[j] / 1e9,
                       100 * flops / tb[j] / 1e9 / peak[l]);
            printf("\n");
        }
        pu_free(xf), pu_free(wf), pu_free(y), pu_free(dx), pu_free(dw);
        pu_free(x), pu_free(w), pu_free(dy);
    }
    pu_pool_destroy(one);
    pu_pool_destroy(pool);
    return 0;
}
