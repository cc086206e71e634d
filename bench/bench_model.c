/*
 * bench_model.c — whole-model decode and prefill speed against the roofline
 * measured in the same run.
 *
 * An InternLM2-1.8B-shaped model (hidden 2048, 24 layers, 16 heads, 8 kv
 * heads, ffn 8192, vocab 92544) with random weights, stored as F32 and as
 * BF16. Decode is memory-bound: tokens/s × bytes read per token (all matmul
 * weights + one embedding row + the KV cache) is compared with a STREAM-style
 * read at the same thread count (sum of a 2 GiB buffer, each thread its
 * contiguous share as 4 streams, best of 5 whole-buffer trials), measured
 * before and after each decode; the bench also prints the more optimistic
 * best single 64 MiB segment of the same read. Prefill of 128 tokens is
 * compute-bound: its FLOPs (2·T·params of every matmul, the LM head for the
 * last token only, plus attention) per second are compared with an FMA loop.
 *
 * Quantized dtypes (Q8_0 ... Q6_K, ggml block layouts) use the same random
 * weights encoded by ggml's reference quantizers; their bytes per token are
 * the block bytes (e.g. Q8_0 34/32, Q4_0 18/32 bytes per weight).
 *
 *   build/release/bench_model [--threads N] [--dtype f32|bf16|both|quant|LIST] [--prefill T]
 *                             [--quick]
 *   LIST: comma-separated dtypes, e.g. q8_0,q4_0,q4_k; quant = all eight block types.
 *
 * llama.cpp side by side on the same GGUF files: bench_vs_llama.c (it also
 * says how to obtain and build llama.cpp from the npm package's source bundle):
 *   npm pack node-llama-cpp@3.22.1 && tar xzf node-llama-cpp-3.22.1.tgz \
 *       package/llama/gitRelease.bundle && git clone package/llama/gitRelease.bundle llama.cpp
 *   cmake -B llama.cpp/build -S llama.cpp -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
 *       -DLLAMA_CURL=OFF && cmake --build llama.cpp/build -j2 --target llama-bench llama-quantize
 *   puyu quantize -m MODEL --type q8_0 --out m-q8_0.gguf
 *   llama.cpp/build/bin/llama-bench -m m-q8_0.gguf -t 2 -p 128,512 -n 32
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"

static double best_of(double a, double b) {
    return a < b ? a : b;
}

static void bench_dtype(pu_pool *pool, const pu_config *c, pu_dtype dt, double bw_seg, double peak,
                        int64_t T_prefill, int64_t n_decode) {
    double t0 = pu_time_now();
    pu_model *m = NULL;
    if (pu_model_init_random(c, dt, 1, 0.02f, true, pool, &m) != PU_OK) {
        fprintf(stderr, "init: %s\n", pu_err_msg());
        exit(1);
    }
    printf("\n[%s] random model ready in %.1f s: %.3f G params, %.2f GB of weights\n",
           pu_dtype_name(dt), pu_time_now() - t0, (double)pu_model_n_params(m) / 1e9,
           (double)pu_model_weight_bytes(m) / 1e9);
    int64_t C = c->hidden_size, F = c->intermediate_size, L = c->num_hidden_layers;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t V = c->vocab_size;
    /* bytes per weight element (quantized: block bytes / block size) */
    double es = (double)pu_dtype_block_bytes(dt) / (double)pu_dtype_block(dt);
    /* matmul weight elements per token (everything but the embedding table) */
    double layer_mm = (double)((H + 2 * Hkv) * D * C + C * H * D + 3 * F * C);
    double mm_elems = layer_mm * (double)L + (double)(V * C);

    pu_session *s = NULL;
    if (pu_session_create(m, T_prefill + n_decode + 8, pool, &s) != PU_OK) {
        fprintf(stderr, "session: %s\n", pu_err_msg());
        exit(1);
    }
    int32_t *ids = pu_malloc((size_t)(T_prefill + n_decode) * sizeof(int32_t));
    for (int64_t i = 0; i < T_prefill + n_decode; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *logits = pu_malloc((size_t)V * sizeof(float));

    /* prefill: best of 3 */
    double tp = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        pu_session_reset(s);
        double a = pu_time_now();
        if (pu_session_eval(s, ids, T_prefill, logits, false) != PU_OK) {
            fprintf(stderr, "eval: %s\n", pu_err_msg());
            exit(1);
        }
        tp = best_of(tp, pu_time_now() - a);
    }
    double T = (double)T_prefill;
    double flops = 2.0 * T * layer_mm * (double)L + 2.0 * (double)(V * C) /* last-token head */
                   + 2.0 * 2.0 * (T * (T + 1) / 2.0) * (double)(H * D) * (double)L;
    double gflops = flops / tp / 1e9;
    printf("prefill %lld tokens: %.3f s  %.1f tok/s  %.1f GFLOP/s = %.1f%% of peak %.1f\n",
           (long long)T_prefill, tp, T / tp, gflops, 100.0 * gflops / peak, peak);

    /* decode: after a 16-token prompt, n_decode single-token steps */
    double bw = pu_bench_stream_read(pool, (size_t)2 << 30, 5);
    pu_session_reset(s);
    int64_t p0 = 16;
    pu_session_eval(s, ids, p0, logits, false);
    double a = pu_time_now();
    for (int64_t i = 0; i < n_decode; i++) {
        int32_t id = ids[p0 + i];
        if (pu_session_eval(s, &id, 1, logits, false) != PU_OK) {
            fprintf(stderr, "decode: %s\n", pu_err_msg());
            exit(1);
        }
    }
    double td = pu_time_now() - a;
    double bw_after = pu_bench_stream_read(pool, (size_t)2 << 30, 5);
    if (bw_after > bw)
        bw = bw_after; /* the better of the reads around the decode */
    double tps = (double)n_decode / td;
    double kv_mean = 2.0 * (double)L * (double)(p0 + n_decode / 2) * (double)(Hkv * D) * 4.0;
    double bytes = mm_elems * es + (double)C * es + kv_mean;
    double gbs = bytes * tps / 1e9;
    printf("decode: %.2f tok/s  %.1f GB/s moved (%.2f GB/token) = %.1f%% of the STREAM-style read "
           "%.1f GB/s (%.1f%% of the best-segment read %.1f GB/s)\n",
           tps, gbs, bytes / 1e9, 100.0 * gbs / bw, bw, 100.0 * gbs / bw_seg, bw_seg);
    pu_free(ids);
    pu_free(logits);
    pu_session_destroy(s);
    pu_model_destroy(m);
}

int main(int argc, char **argv) {
    int threads = 2;
    const char *dts = "both";
    bool quick = false;
    int64_t T_prefill = 128;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dts = argv[++i];
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc)
            T_prefill = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else {
            fprintf(stderr, "usage: bench_model [--threads N] [--dtype f32|bf16|both|quant|LIST] "
                            "[--prefill T] [--quick]\n");
            return 2;
        }
    }
    if (!strcmp(dts, "both"))
        dts = "f32,bf16";
    else if (!strcmp(dts, "quant"))
        dts = "q8_0,q4_0,q4_1,q5_0,q5_1,q4_k,q5_k,q6_k";
    pu_dtype list[PU_DTYPE_COUNT];
    int nl = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", dts);
    for (char *tok = strtok(buf, ","); tok && nl < PU_DTYPE_COUNT; tok = strtok(NULL, ",")) {
        if (!pu_dtype_parse(tok, &list[nl])) {
            fprintf(stderr, "bench_model: unknown dtype '%s'\n", tok);
            return 2;
        }
        nl++;
    }
    pu_log_set_level(PU_LOG_WARN);
    pu_pool *pool = pu_pool_create(threads);
    pu_config c;
    pu_config_defaults(&c);
    snprintf(c.model_type, sizeof c.model_type, "internlm2");
    c.vocab_size = 92544;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_hidden_layers = quick ? 4 : 24;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = 32768;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 1e6;
    c.bias = false;
    c.tie_word_embeddings = false;
    printf("puyu bench_model: InternLM2-1.8B shape (%lld layers), %d threads, kernels %s\n",
           (long long)c.num_hidden_layers, pu_pool_size(pool), pu_kernels_get()->name);
    double bw = pu_bench_read_bw(pool, (size_t)1 << 30);
    double peak = pu_bench_fma_peak(pool);
    printf("roofline: read %.1f GB/s (best 64 MiB segment), STREAM-style read (whole buffer) "
           "%.1f GB/s, peak FP32 FMA %.1f GFLOP/s (%d threads)\n",
           bw, pu_bench_stream_read(pool, (size_t)2 << 30, 5), peak, pu_pool_size(pool));
    for (int i = 0; i < nl; i++)
        bench_dtype(pool, &c, list[i], bw, peak, T_prefill, quick ? 8 : 16);
    pu_pool_destroy(pool);
    return 0;
}
