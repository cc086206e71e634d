/*
 * test_attn_flash.c — the tiled (FlashAttention-2) attention against the
 * naive pu_top_attn_fwd/bwd: outputs and gradients within fp32 tolerance at
 * every SIMD level this CPU runs (causal, GQA, packed documents, T not a
 * multiple of the tile), the tile GEMM of each level bitwise equal to the
 * scalar reference, 1 vs 2 threads bitwise, the scratch the API asks for at
 * (B=1, H=8, T=4096, D=64), and the training model with PUYU_ATTN=flash.
 */
#include <stdlib.h>

#include "pt.h"
#include "puyu/pu_kernels.h"
#include "train/attn_flash.h"

static float *rnd(int64_t n, pu_rng *r, float scale) {
    float *x = pu_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)pu_rng_normal(r) * scale;
    return x;
}

static float *dup(const float *x, int64_t n) {
    float *y = pu_malloc((size_t)n * sizeof(float));
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}

typedef struct {
    int64_t B, T, H, Hkv, D;
    int docs; /* 0: no seg; else that many documents per row (random cuts) */
} shape;

/* flash vs naive at level k: out, dq, dk, dv (accumulated onto the same
 * nonzero start) */
static void check_vs_naive(const pu_kernels *k, const shape *s, uint64_t seed) {
    pu_rng r;
    pu_rng_seed(&r, seed);
    int64_t B = s->B, T = s->T, H = s->H, Hkv = s->Hkv, D = s->D, N = B * T;
    int64_t nq = N * H * D, nk = N * Hkv * D;
    float *q = rnd(nq, &r, 1.0f), *kk = rnd(nk, &r, 1.0f), *v = rnd(nk, &r, 1.0f);
    float *dout = rnd(nq, &r, 1.0f), *dq0 = rnd(nq, &r, 0.1f), *dk0 = rnd(nk, &r, 0.1f);
    float *dv0 = rnd(nk, &r, 0.1f);
    int32_t *seg = NULL;
    if (s->docs) {
        seg = pu_malloc((size_t)N * sizeof(int32_t));
        for (int64_t b = 0; b < B; b++) {
            int32_t id = 0;
            for (int64_t t = 0; t < T; t++) {
                if (t > 0 && (int64_t)(pu_rng_u64(&r) % (uint64_t)T) < s->docs - 1)
                    id++;
                seg[b * T + t] = id;
            }
        }
    }
    float *on = pu_malloc((size_t)nq * sizeof(float)), *of = pu_malloc((size_t)nq * sizeof(float));
    float *probs = pu_malloc((size_t)(B * H * T * T) * sizeof(float));
    float *lse = pu_malloc((size_t)(B * H * T) * sizeof(float));
    pu_top_attn_fwd(NULL, k, on, probs, q, kk, v, seg, B, T, H, Hkv, D);
    pu_tws ws = {0};
    pu_top_attn_flash_fwd(NULL, k, &ws, of, lse, q, kk, v, seg, B, T, H, Hkv, D);
    char lab[160];
    snprintf(lab, sizeof lab, "%s out B%lld T%lld H%lld/%lld D%lld docs %d", k->name, (long long)B,
             (long long)T, (long long)H, (long long)Hkv, (long long)D, s->docs);
    PT_ALLCLOSE(lab, of, on, nq, 1e-5, 1e-4);
    /* lse against the naive row: lse = m + log(sum exp(s - m)) in double */
    {
        int64_t bad = 0;
        for (int64_t bh = 0; bh < B * H; bh++) {
            int64_t b = bh / H, h = bh % H, g = h / (H / Hkv);
            for (int64_t t = 0; t < T; t += 7) {
                double mx = -INFINITY, sum = 0, sc[512];
                int64_t n = 0;
                for (int64_t j = 0; j <= t && n < 512; j++) {
                    if (seg && seg[b * T + j] != seg[b * T + t])
                        continue;
                    double d = 0;
                    for (int64_t e = 0; e < D; e++)
                        d += (double)q[((b * T + t) * H + h) * D + e] *
                             kk[((b * T + j) * Hkv + g) * D + e];
                    sc[n] = d / sqrt((double)D);
                    mx = sc[n] > mx ? sc[n] : mx;
                    n++;
                }
                if (n >= 512)
                    continue;
                for (int64_t j = 0; j < n; j++)
                    sum += exp(sc[j] - mx);
                double want = mx + log(sum);
                if (fabs(lse[bh * T + t] - want) > 1e-4 * (1 + fabs(want)))
                    bad++;
            }
        }
        PT_CHECK_MSG(bad == 0, "%s: %lld lse values off", lab, (long long)bad);
    }
    float *dqn = dup(dq0, nq), *dkn = dup(dk0, nk), *dvn = dup(dv0, nk);
    float *dqf = dup(dq0, nq), *dkf = dup(dk0, nk), *dvf = dup(dv0, nk);
    pu_top_attn_bwd(NULL, k, dqn, dkn, dvn, dout, probs, q, kk, v, B, T, H, Hkv, D);
    pu_top_attn_flash_bwd(NULL, k, &ws, dqf, dkf, dvf, dout, of, lse, q, kk, v, seg, B, T, H, Hkv,
                          D);
    char l2[200];
    snprintf(l2, sizeof l2, "%s dq", lab);
    PT_ALLCLOSE(l2, dqf, dqn, nq, 2e-5, 2e-4);
    snprintf(l2, sizeof l2, "%s dk", lab);
    PT_ALLCLOSE(l2, dkf, dkn, nk, 2e-5, 2e-4);
    snprintf(l2, sizeof l2, "%s dv", lab);
    PT_ALLCLOSE(l2, dvf, dvn, nk, 2e-5, 2e-4);
    pu_tws_free(&ws);
    pu_free(q), pu_free(kk), pu_free(v), pu_free(dout), pu_free(dq0), pu_free(dk0), pu_free(dv0);
    pu_free(seg), pu_free(on), pu_free(of), pu_free(probs), pu_free(lse);
    pu_free(dqn), pu_free(dkn), pu_free(dvn), pu_free(dqf), pu_free(dkf), pu_free(dvf);
}

PT_SUITE(attn_flash) {
    static const pu_simd levels[] = {PU_SIMD_REF, PU_SIMD_AVX2, PU_SIMD_AVX512};
    static const shape shapes[] = {
        {2, 5, 4, 2, 4, 0},    {1, 64, 2, 2, 8, 0}, {1, 130, 4, 1, 16, 0}, {2, 150, 2, 2, 8, 4},
        {1, 129, 6, 3, 32, 9}, {1, 1, 2, 1, 4, 0},  {3, 70, 2, 1, 64, 2},  {1, 200, 2, 2, 4, 40},
    };
    for (size_t li = 0; li < sizeof levels / sizeof *levels; li++) {
        const char *ln = pu_simd_name(levels[li]);
        char name[128], why[128];
        snprintf(name, sizeof name, "tile GEMM %s == scalar reference, bitwise", ln);
        if (li > 0 && PT_TEST(name)) {
            if (!pu_kernels_for(levels[li])) {
                snprintf(why, sizeof why, "level %s not checked: this CPU lacks it", ln);
                pt_skip(why);
            } else {
                pu_rng r;
                pu_rng_seed(&r, 5);
                static const int64_t dims[][3] = {{1, 1, 1},    {6, 16, 8},  {7, 17, 13},
                                                  {64, 64, 64}, {13, 40, 3}, {64, 9, 64},
                                                  {5, 33, 128}};
                pu_fa_gemm_fn fn = pu_fa_gemm_for(levels[li]);
                for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
                    int64_t m = dims[di][0], n = dims[di][1], K = dims[di][2];
                    int64_t lda = K + 3, ldb = n + 5, ldc = n + 2;
                    float *a = rnd(m * lda, &r, 1.0f), *b = rnd(K * ldb, &r, 1.0f);
                    float *c1 = rnd(m * ldc, &r, 1.0f), *c2 = dup(c1, m * ldc);
                    for (int acc = 0; acc < 2; acc++) {
                        pu_fa_gemm_ref(c1, ldc, a, lda, b, ldb, m, n, K, acc);
                        fn(c2, ldc, a, lda, b, ldb, m, n, K, acc);
                        PT_CHECK_MSG(memcmp(c1, c2, (size_t)(m * ldc) * sizeof(float)) == 0,
                                     "%s gemm %lldx%lldx%lld acc %d differs from ref (or wrote "
                                     "outside)",
                                     ln, (long long)m, (long long)n, (long long)K, acc);
                    }
                    pu_free(a), pu_free(b), pu_free(c1), pu_free(c2);
                }
                printf("  tile GEMM level %s checked\n", ln);
            }
        }
        snprintf(name, sizeof name,
                 "flash == naive at level %s: causal, GQA, packed documents, odd T", ln);
        if (PT_TEST(name)) {
            const pu_kernels *k = pu_kernels_for(levels[li]);
            if (!k) {
                snprintf(why, sizeof why, "level %s not checked: this CPU lacks it", ln);
                pt_skip(why);
            } else {
                for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
                    check_vs_naive(k, &shapes[si], 100 + si);
                printf("  flash vs naive level %s checked\n", ln);
            }
        }
    }
    if (PT_TEST("1 vs 2 threads bitwise identical (fwd and bwd)")) {
        pu_rng r;
        pu_rng_seed(&r, 9);
        int64_t B = 2, T = 97, H = 4, Hkv = 2, D = 16, N = B * T, nq = N * H * D, nk = N * Hkv * D;
        float *q = rnd(nq, &r, 1), *kk = rnd(nk, &r, 1), *v = rnd(nk, &r, 1), *dO = rnd(nq, &r, 1);
        int32_t *seg = pu_malloc((size_t)N * sizeof(int32_t));
        for (int64_t i = 0; i < N; i++)
            seg[i] = (int32_t)((i % T) / 30);
        const pu_kernels *k = pu_kernels_get();
        float *o[2], *l[2], *g[2][3];
        for (int nt = 1; nt <= 2; nt++) {
            pu_pool *pool = pu_pool_create(nt);
            pu_tws ws = {0};
            int i = nt - 1;
            o[i] = pu_malloc((size_t)nq * sizeof(float));
            l[i] = pu_malloc((size_t)(B * H * T) * sizeof(float));
            g[i][0] = pu_calloc((size_t)nq, sizeof(float));
            g[i][1] = pu_calloc((size_t)nk, sizeof(float));
            g[i][2] = pu_calloc((size_t)nk, sizeof(float));
            pu_top_attn_flash_fwd(pool, k, &ws, o[i], l[i], q, kk, v, seg, B, T, H, Hkv, D);
            pu_top_attn_flash_bwd(pool, k, &ws, g[i][0], g[i][1], g[i][2], dO, o[i], l[i], q, kk, v,
                                  seg, B, T, H, Hkv, D);
            pu_tws_free(&ws);
            pu_pool_destroy(pool);
        }
        PT_CHECK(memcmp(o[0], o[1], (size_t)nq * sizeof(float)) == 0);
        PT_CHECK(memcmp(l[0], l[1], (size_t)(B * H * T) * sizeof(float)) == 0);
        PT_CHECK(memcmp(g[0][0], g[1][0], (size_t)nq * sizeof(float)) == 0);
        PT_CHECK(memcmp(g[0][1], g[1][1], (size_t)nk * sizeof(float)) == 0);
        PT_CHECK(memcmp(g[0][2], g[1][2], (size_t)nk * sizeof(float)) == 0);
        for (int i = 0; i < 2; i++)
            pu_free(o[i]), pu_free(l[i]), pu_free(g[i][0]), pu_free(g[i][1]), pu_free(g[i][2]);
        pu_free(q), pu_free(kk), pu_free(v), pu_free(dO), pu_free(seg);
    }
    if (PT_TEST("memory: B=1 H=8 T=4096 D=64 fwd+bwd scratch <= 0.1x of q/k/v/o + lse")) {
        /* The scratch the API asks for depends on (threads, T, D) only, not on
         * B or H: the default run does H=1 for real (fast) and checks the bytes
         * it asked for against the budget of H=8; --slow runs H=8 itself. */
        int64_t B = 1, T = 4096, H = pt_slow() ? 8 : 1, Hkv = H, D = 64, N = B * T, nq = N * H * D;
        int64_t nq8 = N * 8 * D;
        pu_rng r;
        pu_rng_seed(&r, 11);
        float *q = rnd(nq, &r, 1), *kk = rnd(nq, &r, 1), *v = rnd(nq, &r, 1), *dO = rnd(nq, &r, 1);
        float *o = pu_malloc((size_t)nq * sizeof(float));
        float *lse = pu_malloc((size_t)(B * H * T) * sizeof(float));
        float *dq = pu_calloc((size_t)nq, sizeof(float)),
              *dk = pu_calloc((size_t)nq, sizeof(float));
        float *dv = pu_calloc((size_t)nq, sizeof(float));
        pu_pool *pool = pu_pool_create(2);
        pu_tws ws = {0};
        const pu_kernels *k = pu_kernels_get();
        pu_top_attn_flash_fwd(pool, k, &ws, o, lse, q, kk, v, NULL, B, T, H, Hkv, D);
        pu_top_attn_flash_bwd(pool, k, &ws, dq, dk, dv, dO, o, lse, q, kk, v, NULL, B, T, H, Hkv,
                              D);
        double base = (double)(4 * nq8 + B * 8 * T) * sizeof(float);
        double scratch = (double)ws.cap * sizeof(float);
        double naive = (double)(B * H * T * T) * sizeof(float);
        printf("  H=8 T=4096 D=64: q/k/v/o + lse %.1f MB, flash scratch asked (run with H=%lld, "
               "2 threads) %.3f MB (%.2f%%), total %.3fx; naive probs would be %.0f MB\n",
               base / 1e6, (long long)H, scratch / 1e6, 100 * scratch / base,
               (base + scratch) / base, naive / 1e6 * 8 / (double)H);
        PT_EQ_I64((int64_t)ws.cap, pu_top_attn_flash_ws_floats(2, T, D) + 16);
        PT_CHECK_MSG(base + scratch <= 1.1 * base, "scratch %.0f bytes > 0.1 x %.0f", scratch,
                     base);
        /* scratch for 16 threads still fits */
        PT_CHECK((double)pu_top_attn_flash_ws_floats(16, T, D) * 4 <= 0.1 * base);
        /* spot rows against a double-precision direct computation */
        int64_t bad = 0;
        static const int64_t rows[] = {0, 63, 64, 1000, 4095};
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
            int64_t t = rows[ri], h = (int64_t)ri % H;
            double *sc = pu_malloc((size_t)(t + 1) * sizeof(double)), mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= t; j++) {
                double d = 0;
                for (int64_t e = 0; e < D; e++)
                    d += (double)q[(t * H + h) * D + e] * kk[(j * Hkv + h) * D + e];
                sc[j] = d / 8.0;
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int64_t j = 0; j <= t; j++)
                sum += sc[j] = exp(sc[j] - mx);
            for (int64_t e = 0; e < D; e++) {
                double want = 0;
                for (int64_t j = 0; j <= t; j++)
                    want += sc[j] / sum * v[(j * Hkv + h) * D + e];
                if (fabs(o[(t * H + h) * D + e] - want) > 1e-4)
                    bad++;
            }
            pu_free(sc);
        }
        PT_CHECK_MSG(bad == 0, "%lld output values off the direct computation", (long long)bad);
        int64_t nonfinite = 0;
        for (int64_t i = 0; i < nq; i++)
            nonfinite += !isfinite(dq[i]) + !isfinite(dk[i]) + !isfinite(dv[i]);
        PT_EQ_I64(nonfinite, 0);
        pu_tws_free(&ws);
        pu_pool_destroy(pool);
        pu_free(q), pu_free(kk), pu_free(v), pu_free(dO), pu_free(o), pu_free(lse);
        pu_free(dq), pu_free(dk), pu_free(dv);
    }
    if (PT_TEST(
            "training model: PUYU_ATTN=flash == naive (loss, gradients), packed rows, T < Tmax")) {
        pu_config cfg;
        pu_config_defaults(&cfg);
        cfg.vocab_size = 300, cfg.hidden_size = 64, cfg.intermediate_size = 160;
        cfg.num_hidden_layers = 2, cfg.num_attention_heads = 4, cfg.num_key_value_heads = 2;
        cfg.head_dim = 16, cfg.max_position_embeddings = 128, cfg.rms_norm_eps = 1e-5;
        int64_t B = 2, T = 70, N = B * T;
        int32_t *ids = pu_malloc((size_t)N * 4), *tg = pu_malloc((size_t)N * 4);
        int32_t *pos = pu_malloc((size_t)N * 4), *seg = pu_malloc((size_t)N * 4);
        pu_rng r;
        pu_rng_seed(&r, 3);
        for (int64_t i = 0; i < N; i++) {
            ids[i] = (int32_t)(pu_rng_u64(&r) % 300), tg[i] = (int32_t)(pu_rng_u64(&r) % 300);
            int64_t t = i % T, cut = i < T ? 25 : 50;
            seg[i] = t < cut ? 0 : 1;
            pos[i] = (int32_t)(t < cut ? t : t - cut);
        }
        const char *old = getenv("PUYU_ATTN");
        char *saved = old ? strdup(old) : NULL;
        float *g[2] = {NULL, NULL};
        double l[2] = {0, 0};
        float *gs[2] = {NULL, NULL};
        double ls[2] = {0, 0};
        int64_t act[2] = {0, 0}, numel = 0;
        for (int i = 0; i < 2; i++) {
            setenv("PUYU_ATTN", i ? "flash" : "naive", 1);
            pu_tmodel *m = NULL;
            PT_OK(pu_tmodel_create(&cfg, B, T, &m));
            if (!m)
                break;
            pu_tmodel_init_random(m, 11, 0.08f);
            pu_tbatch b = {ids, tg, pos, seg, B, T};
            int64_t cnt = 0;
            PT_OK(pu_tmodel_forward(m, NULL, &b, &l[i], &cnt));
            pu_tmodel_backward(m, NULL, 1.0f / (float)cnt);
            numel = pu_tmodel_numel(m);
            g[i] = dup(pu_tmodel_grads(m), numel);
            act[i] = pu_tmodel_act_bytes(m);
            /* a shorter batch than the model was made for (T < Tmax), no packing */
            pu_tmodel_zero_grad(m);
            pu_tbatch bs = {ids, tg, NULL, NULL, 1, 41};
            PT_OK(pu_tmodel_forward(m, NULL, &bs, &ls[i], &cnt));
            pu_tmodel_backward(m, NULL, 1.0f / (float)cnt);
            gs[i] = dup(pu_tmodel_grads(m), numel);
            pu_tmodel_destroy(m);
        }
        if (saved)
            setenv("PUYU_ATTN", saved, 1);
        else
            unsetenv("PUYU_ATTN");
        free(saved);
        if (g[0] && g[1]) {
            PT_NEAR(l[1], l[0], 1e-5, 1e-6);
            PT_ALLCLOSE("model grads flash vs naive", g[1], g[0], numel, 1e-6, 1e-3);
            /* activations: the probabilities (2 layers x B x H x T x T) are gone */
            PT_EQ_I64(act[0] - act[1], 2 * (B * 4 * T * T - B * 4 * T) * (int64_t)sizeof(float));
            PT_NEAR(ls[1], ls[0], 1e-5, 1e-6);
            PT_ALLCLOSE("model grads flash vs naive, T < Tmax", gs[1], gs[0], numel, 1e-6, 1e-3);
        }
        pu_free(gs[0]), pu_free(gs[1]);
        pu_free(g[0]), pu_free(g[1]), pu_free(ids), pu_free(tg), pu_free(pos), pu_free(seg);
    }
}
