/*
 * bench_quant.c — quantized matmul kernels on the InternLM2-1.8B shapes,
 * every block type against F32 and BF16 at the same shapes.
 *
 * For each dtype and shape (wqkv 4096x2048, w1 8192x2048, w2 2048x8192):
 * decode (T = 1) and prefill (T = 128) through pu_op_matmul (activation
 * quantization included), single thread, timed in thread CPU time (robust
 * when other processes share the cores; best of 5), reported as GMAC/s and,
 * for decode, as GB/s of weights read. Whole-model tok/s: bench_model
 * --dtype quant; perplexity per type: bench_quant_ppl.
 *
 *   build/release/bench_quant [--quick]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "puyu/pu_kernels.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    static const struct {
        const char *name;
        int64_t N, K;
    } shapes[] = {{"wqkv", 4096, 2048}, {"w1", 8192, 2048}, {"w2", 2048, 8192}};
    static const pu_dtype dts[] = {PU_DTYPE_F32,  PU_DTYPE_BF16, PU_DTYPE_Q8_0, PU_DTYPE_Q4_0,
                                   PU_DTYPE_Q4_1, PU_DTYPE_Q5_0, PU_DTYPE_Q5_1, PU_DTYPE_Q4_K,
                                   PU_DTYPE_Q5_K, PU_DTYPE_Q6_K};
    const pu_kernels *k = pu_kernels_get();
    printf("bench_quant: 1 thread, kernels %s, thread CPU time, best of %d\n", k->name,
           quick ? 2 : 5);
    printf("| dtype | shape | decode GMAC/s | decode GB/s | prefill T=128 GMAC/s |\n");
    printf("|---|---|---|---|---|\n");
    int64_t T = quick ? 32 : 128;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t N = shapes[si].N, K = shapes[si].K;
        float *wf = malloc((size_t)(N * K) * sizeof(float));
        float *x = malloc((size_t)(T * K) * sizeof(float));
        float *y = malloc((size_t)(T * N) * sizeof(float));
        pu_rng r;
        pu_rng_seed(&r, 1);
        for (int64_t i = 0; i < N * K; i++)
            wf[i] = (pu_rng_float(&r) - 0.5f) * 0.1f;
        for (int64_t i = 0; i < T * K; i++)
            x[i] = pu_rng_float(&r) - 0.5f;
        for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
            pu_dtype dt = dts[di];
            int64_t rb = pu_dtype_nbytes(dt, K);
            uint8_t *w = malloc((size_t)(N * rb));
            for (int64_t n = 0; n < N; n++)
                pu_quantize_row(dt, w + n * rb, wf + n * K, K);
            double bd = 1e30, bp = 1e30;
            for (int rep = 0; rep < (quick ? 2 : 5); rep++) {
                double a = cpu_now();
                pu_op_matmul(NULL, k, y, x, w, dt, 1, N, K);
                double b = cpu_now();
                pu_op_matmul(NULL, k, y, x, w, dt, T, N, K);
                double c = cpu_now();
                bd = b - a < bd ? b - a : bd;
                bp = c - b < bp ? c - b : bp;
            }
            printf("| %s | %s %lldx%lld | %.2f | %.2f | %.2f |\n", pu_dtype_name(dt),
                   shapes[si].name, (long long)N, (long long)K, (double)(N * K) / bd / 1e9,
                   (double)(N * rb) / bd / 1e9, (double)(T * N * K) / bp / 1e9);
            fflush(stdout);
            free(w);
        }
        free(wf), free(x), free(y);
    }
    return 0;
}
