/*
 * bench_kv.c — decode speed and KV memory with the KV cache in F32, F16 and
 * int8 (--kv-type f32|f16|q8; pu_kernels.h "KV cache element types").
 *
 * A model with InternLM2-1.8B's attention shape (hidden 2048, 16 heads,
 * 8 kv heads, head dim 128) but few layers (default 4) and a small vocabulary,
 * random Q8_0 weights, so attention over a long context is a visible part of
 * each decode step. Per KV type: one prefill of --ctx tokens, then --decode
 * tokens one at a time (best of --reps runs); prints decode tok/s, its ratio
 * to F32 in the same run, the cache bytes per token and the cache size, and
 * the logits' max |Δ| against the F32 cache after the last step.
 *
 *   build/release/bench_kv [--threads N] [--layers L] [--ctx 2048] [--decode 32]
 *                          [--reps 3] [--wtype q8_0]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"

int main(int argc, char **argv) {
    int threads = 2, reps = 3;
    int64_t L = 4, ctx = 2048, ndec = 32;
    const char *wt = "q8_0";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            L = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc)
            ndec = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--wtype") && i + 1 < argc)
            wt = argv[++i];
        else {
            fprintf(stderr, "usage: bench_kv [--threads N] [--layers L] [--ctx N] [--decode N] "
                            "[--reps N] [--wtype TYPE]\n");
            return 2;
        }
    }
    pu_dtype dt;
    if (!pu_dtype_parse(wt, &dt)) {
        fprintf(stderr, "bench_kv: unknown --wtype %s\n", wt);
        return 2;
    }
    pu_config c;
    pu_config_defaults(&c);
    c.vocab_size = 1024;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_hidden_layers = L;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = ctx + ndec + 8;
    pu_pool *pool = pu_pool_create(threads);
    pu_model *m = NULL;
    if (pu_model_init_random(&c, dt, 1, 0.02f, true, pool, &m) != PU_OK) {
        fprintf(stderr, "init: %s\n", pu_err_msg());
        return 1;
    }
    int32_t *ids = malloc((size_t)(ctx + ndec) * sizeof(int32_t));
    for (int64_t i = 0; i < ctx + ndec; i++)
        ids[i] = (int32_t)(1 + (i * 7919) % (c.vocab_size - 1));
    float *lg[PU_KV_COUNT];
    double tps[PU_KV_COUNT];
    printf("shape: hidden 2048, heads 16/8, head dim 128, %lld layers, %s weights; context %lld, "
           "%lld decode steps, %d threads, %s\n",
           (long long)L, pu_dtype_name(dt), (long long)ctx, (long long)ndec, threads,
           pu_kernels_get()->name);
    for (int t = 0; t < PU_KV_COUNT; t++) {
        lg[t] = malloc((size_t)c.vocab_size * sizeof(float));
        pu_session *s = NULL;
        if (pu_session_create_ex(m, ctx + ndec, (pu_kv_type)t, pool, &s) != PU_OK) {
            fprintf(stderr, "session: %s\n", pu_err_msg());
            return 1;
        }
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            pu_session_reset(s);
            pu_session_eval(s, ids, ctx, lg[t], false);
            double t0 = pu_time_now();
            for (int64_t i = 0; i < ndec; i++)
                pu_session_eval(s, ids + ctx + i, 1, lg[t], false);
            double dtm = pu_time_now() - t0;
            best = dtm < best ? dtm : best;
        }
        tps[t] = (double)ndec / best;
        int64_t bpt = pu_kv_bytes_per_token(&c, (pu_kv_type)t);
        double d = 0, mx = 0;
        for (int64_t v = 0; v < c.vocab_size; v++) {
            d = fmax(d, fabs((double)lg[t][v] - (double)lg[0][v]));
            mx = fmax(mx, fabs((double)lg[0][v]));
        }
        printf(
            "kv %-3s  decode %7.2f tok/s (%.2fx f32)  %6lld bytes/token (%.3fx)  cache %.1f MiB  "
            "max |dlogit| vs f32 %.3g (max |logit| %.3g)\n",
            pu_kv_type_name((pu_kv_type)t), tps[t], tps[t] / tps[0], (long long)bpt,
            (double)bpt / (double)pu_kv_bytes_per_token(&c, PU_KV_F32),
            (double)bpt * (double)(ctx + ndec) / 1048576.0, d, mx);
        fflush(stdout);
        pu_session_destroy(s);
    }
    for (int t = 0; t < PU_KV_COUNT; t++)
        free(lg[t]);
    free(ids);
    pu_model_destroy(m);
    pu_pool_destroy(pool);
    return 0;
}
