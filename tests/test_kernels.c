/*
 * test_kernels.c — the kernels suite.
 *
 * 1. ref against naive double-precision computations (ref is the semantic
 *    definition, so it must itself be right).
 * 2. every SIMD level the CPU supports against ref on seeded random inputs
 *    with odd sizes (K not a multiple of 16, N not a multiple of the tile,
 *    T = 1 / 2 / 7 / 37 / 150 crossing the T block, K crossing the K block),
 *    tolerance |got - ref| <= atol + rtol*|ref| (values stated per check).
 * 3. pu_op_* with a 1-thread and a 2-thread pool: bitwise equal.
 * 4. attention and rope against naive double implementations.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_kernels.h"

static void fill(pu_rng *r, float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * pu_rng_float(r);
}

/* weights in dtype dt from random floats; wf gets the exact dequantised values */
static void *make_w(pu_rng *r, pu_dtype dt, int64_t n, float *wf) {
    fill(r, wf, n, -1.0f, 1.0f);
    if (dt == PU_DTYPE_F32) {
        float *w = pu_malloc((size_t)n * 4);
        memcpy(w, wf, (size_t)n * 4);
        return w;
    }
    uint16_t *w = pu_malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        w[i] = dt == PU_DTYPE_F16 ? pu_f32_to_f16(wf[i]) : pu_f32_to_bf16(wf[i]);
        wf[i] = dt == PU_DTYPE_F16 ? pu_f16_to_f32(w[i]) : pu_bf16_to_f32(w[i]);
    }
    return w;
}

static const pu_kernels *level_or_skip(pu_simd s) {
    const pu_kernels *k = pu_kernels_for(s);
    if (!k)
        printf("    (skipping level %s: this CPU cannot run it)\n", pu_simd_name(s));
    return k;
}

/* ------------------------------------------------------------------ ref vs double */

static void check_ref_matmul(pu_dtype dt, int64_t T, int64_t N, int64_t K) {
    pu_rng r;
    pu_rng_seed(&r, 1000 + (uint64_t)(T * 7 + N * 13 + K + dt));
    float *x = pu_malloc((size_t)(T * K) * 4), *wf = pu_malloc((size_t)(N * K) * 4);
    float *y = pu_malloc((size_t)(T * N) * 4), *want = pu_malloc((size_t)(T * N) * 4);
    fill(&r, x, T * K, -1, 1);
    void *w = make_w(&r, dt, N * K, wf);
    pu_kernels_for(PU_SIMD_REF)->matmul[dt](y, N, x, K, w, T, 0, N, K);
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)x[t * K + k] * wf[n * K + k];
            want[t * N + n] = (float)s;
        }
    char label[96];
    snprintf(label, sizeof label, "ref matmul %s T=%lld N=%lld K=%lld", pu_dtype_name(dt),
             (long long)T, (long long)N, (long long)K);
    PT_ALLCLOSE(label, y, want, T * N, 1e-6 * (double)K, 1e-5);
    pu_free(x), pu_free(wf), pu_free(y), pu_free(want), pu_free(w);
}

/* ------------------------------------------------------------------ SIMD vs ref */

static void check_matmul_level(const pu_kernels *k, pu_dtype dt, int64_t T, int64_t N, int64_t K,
                               int64_t n0, int64_t n1, int64_t pad) {
    const pu_kernels *ref = pu_kernels_for(PU_SIMD_REF);
    pu_rng r;
    pu_rng_seed(&r, 77 + (uint64_t)(T * 3 + N * 5 + K * 11 + dt));
    int64_t ldx = K + pad, ldy = N + pad;
    float *x = pu_malloc((size_t)(T * ldx) * 4), *wf = pu_malloc((size_t)(N * K) * 4);
    float *y = pu_malloc((size_t)(T * ldy) * 4), *want = pu_malloc((size_t)(T * ldy) * 4);
    fill(&r, x, T * ldx, -1, 1);
    void *w = make_w(&r, dt, N * K, wf);
    for (int64_t i = 0; i < T * ldy; i++)
        y[i] = want[i] = 12345.0f; /* untouched outside [n0, n1) */
    ref->matmul[dt](want, ldy, x, ldx, w, T, n0, n1, K);
    k->matmul[dt](y, ldy, x, ldx, w, T, n0, n1, K);
    char label[128];
    snprintf(label, sizeof label, "%s matmul %s T=%lld N=%lld K=%lld n=[%lld,%lld)", k->name,
             pu_dtype_name(dt), (long long)T, (long long)N, (long long)K, (long long)n0,
             (long long)n1);
    /* different summation order: error grows ~ K * eps * |partial sums| */
    PT_ALLCLOSE(label, y, want, T * ldy, 1e-6 * (double)K, 1e-5);
    pu_free(x), pu_free(wf), pu_free(y), pu_free(want), pu_free(w);
}

static void check_vec_level(const pu_kernels *k, int64_t n) {
    const pu_kernels *ref = pu_kernels_for(PU_SIMD_REF);
    pu_rng r;
    pu_rng_seed(&r, 99 + (uint64_t)n);
    float *a = pu_malloc((size_t)(n + 1) * 4), *b = pu_malloc((size_t)(n + 1) * 4);
    float *w = pu_malloc((size_t)(n + 1) * 4);
    float *y1 = pu_malloc((size_t)(n + 1) * 4), *y2 = pu_malloc((size_t)(n + 1) * 4);
    fill(&r, a, n, -3, 3);
    fill(&r, b, n, -3, 3);
    fill(&r, w, n, 0.5f, 1.5f);
    char label[96];
#define LBL(op) (snprintf(label, sizeof label, "%s %s n=%lld", k->name, op, (long long)n), label)

    PT_NEAR(k->dot(a, b, n), ref->dot(a, b, n), 1e-5 * (double)n, 1e-5);
    PT_NEAR(k->vmax(a, n), ref->vmax(a, n), 0, 0);

    memcpy(y1, b, (size_t)n * 4);
    memcpy(y2, b, (size_t)n * 4);
    k->axpy(y1, 0.37f, a, n);
    ref->axpy(y2, 0.37f, a, n);
    PT_ALLCLOSE(LBL("axpy"), y1, y2, n, 1e-6, 1e-6);

    memcpy(y1, a, (size_t)n * 4);
    memcpy(y2, a, (size_t)n * 4);
    k->scale(y1, -1.7f, n);
    ref->scale(y2, -1.7f, n);
    PT_ALLCLOSE(LBL("scale"), y1, y2, n, 0, 0);

    k->add(y1, a, b, n);
    ref->add(y2, a, b, n);
    PT_ALLCLOSE(LBL("add"), y1, y2, n, 0, 0);

    k->rmsnorm(y1, a, w, n, 1e-6f);
    ref->rmsnorm(y2, a, w, n, 1e-6f);
    PT_ALLCLOSE(LBL("rmsnorm"), y1, y2, n, 1e-6, 1e-5);

    /* gate spans the exp range incl. saturation: [-100, 100] */
    fill(&r, y1, n, -100, 100);
    if (n > 2)
        y1[0] = 0.0f, y1[1] = -88.5f, y1[2] = 89.0f;
    memcpy(w, y1, (size_t)n * 4);
    k->swiglu(y1, y1, b, n); /* out aliases gate */
    ref->swiglu(y2, w, b, n);
    PT_ALLCLOSE(LBL("swiglu wide"), y1, y2, n, 1e-6, 1e-5);
    fill(&r, w, n, -6, 6);
    k->swiglu(y1, w, b, n);
    ref->swiglu(y2, w, b, n);
    PT_ALLCLOSE(LBL("swiglu"), y1, y2, n, 1e-6, 1e-5);

    fill(&r, y1, n, -20, 20);
    if (n > 3)
        y1[3] = -INFINITY; /* a masked entry must come out exactly 0 */
    memcpy(y2, y1, (size_t)n * 4);
    k->softmax(y1, n);
    ref->softmax(y2, n);
    PT_ALLCLOSE(LBL("softmax"), y1, y2, n, 1e-7, 1e-5);
    if (n > 3)
        PT_CHECK(y1[3] == 0.0f);

    fill(&r, y1, n, -30, 5);
    memcpy(y2, y1, (size_t)n * 4);
    float s1 = k->exp_sum(y1, n, 2.0f), s2 = ref->exp_sum(y2, n, 2.0f);
    PT_NEAR(s1, s2, 1e-6, 1e-5);
    PT_ALLCLOSE(LBL("exp_sum"), y1, y2, n, 1e-7, 1e-5);

    /* to_f32: exact */
    uint16_t *h = pu_malloc((size_t)(n + 1) * 2);
    for (int64_t i = 0; i < n; i++)
        h[i] = pu_f32_to_f16(a[i]);
    k->to_f32[PU_DTYPE_F16](y1, h, n);
    ref->to_f32[PU_DTYPE_F16](y2, h, n);
    PT_ALLCLOSE(LBL("to_f32 F16"), y1, y2, n, 0, 0);
    for (int64_t i = 0; i < n; i++)
        h[i] = pu_f32_to_bf16(a[i]);
    k->to_f32[PU_DTYPE_BF16](y1, h, n);
    ref->to_f32[PU_DTYPE_BF16](y2, h, n);
    PT_ALLCLOSE(LBL("to_f32 BF16"), y1, y2, n, 0, 0);
    k->to_f32[PU_DTYPE_F32](y1, a, n);
    PT_ALLCLOSE(LBL("to_f32 F32"), y1, a, n, 0, 0);
#undef LBL
    pu_free(h);
    pu_free(a), pu_free(b), pu_free(w), pu_free(y1), pu_free(y2);
}

/* ------------------------------------------------------------------ attention */

static void naive_attention(float *out, const float *q, const float *kc, const float *vc,
                            int64_t ld, int64_t T, int64_t pos0, int64_t H, int64_t Hkv,
                            int64_t D) {
    int64_t L = pos0 + T;
    double *s = malloc((size_t)L * sizeof(double));
    double *o = malloc((size_t)D * sizeof(double));
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            int64_t g = h / (H / Hkv), nk = pos0 + t + 1;
            const float *qh = q + (t * H + h) * D;
            double m = -INFINITY, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                double d = 0;
                for (int64_t i = 0; i < D; i++)
                    d += (double)qh[i] * kc[j * ld + g * D + i];
                s[j] = d / sqrt((double)D);
                m = s[j] > m ? s[j] : m;
            }
            for (int64_t j = 0; j < nk; j++)
                sum += (s[j] = exp(s[j] - m));
            for (int64_t i = 0; i < D; i++)
                o[i] = 0;
            for (int64_t j = 0; j < nk; j++)
                for (int64_t i = 0; i < D; i++)
                    o[i] += s[j] / sum * vc[j * ld + g * D + i];
            for (int64_t i = 0; i < D; i++)
                out[(t * H + h) * D + i] = (float)o[i];
        }
    free(s);
    free(o);
}

static void check_attention(pu_pool *p1, pu_pool *p2, int64_t T, int64_t pos0, int64_t H,
                            int64_t Hkv, int64_t D) {
    pu_rng r;
    pu_rng_seed(&r, 555 + (uint64_t)(T * 31 + pos0 * 7 + H + Hkv * 3 + D));
    int64_t L = pos0 + T + 3, ld = Hkv * D + 5; /* padded rows; 3 spare (unused) positions */
    float *q = pu_malloc((size_t)(T * H * D) * 4);
    float *kc = pu_malloc((size_t)(L * ld) * 4), *vc = pu_malloc((size_t)(L * ld) * 4);
    float *want = pu_malloc((size_t)(T * H * D) * 4);
    float *o1 = pu_malloc((size_t)(T * H * D) * 4), *o2 = pu_malloc((size_t)(T * H * D) * 4);
    fill(&r, q, T * H * D, -2, 2);
    fill(&r, kc, L * ld, -2, 2);
    fill(&r, vc, L * ld, -1, 1);
    /* future positions hold garbage that must not leak in */
    for (int64_t i = (pos0 + T) * ld; i < L * ld; i++)
        kc[i] = 1e4f, vc[i] = 1e4f;
    naive_attention(want, q, kc, vc, ld, T, pos0, H, Hkv, D);
    for (pu_simd s = PU_SIMD_REF; s <= PU_SIMD_AVX512; s++) {
        const pu_kernels *k = pu_kernels_for(s);
        if (!k)
            continue;
        pu_op_attention(p1, k, o1, q, kc, vc, ld, T, pos0, H, Hkv, D);
        pu_op_attention(p2, k, o2, q, kc, vc, ld, T, pos0, H, Hkv, D);
        char label[128];
        snprintf(label, sizeof label, "%s attention T=%lld pos0=%lld H=%lld Hkv=%lld D=%lld",
                 k->name, (long long)T, (long long)pos0, (long long)H, (long long)Hkv,
                 (long long)D);
        PT_ALLCLOSE(label, o1, want, T * H * D, 1e-5, 1e-4);
        PT_CHECK_MSG(memcmp(o1, o2, (size_t)(T * H * D) * 4) == 0, "%s: 1 vs 2 threads differ",
                     label);
    }
    pu_free(q), pu_free(kc), pu_free(vc), pu_free(want), pu_free(o1), pu_free(o2);
}

/* ------------------------------------------------------------------ suite */

PT_SUITE(kernels) {
    static const pu_dtype dts[] = {PU_DTYPE_F32, PU_DTYPE_F16, PU_DTYPE_BF16};

    if (PT_TEST("dtype helpers and dispatch")) {
        PT_EQ_STR(pu_dtype_name(PU_DTYPE_BF16), "BF16");
        PT_EQ_I64(pu_dtype_size(PU_DTYPE_F32), 4);
        PT_EQ_I64(pu_dtype_size(PU_DTYPE_F16), 2);
        const pu_kernels *k = pu_kernels_get();
        PT_CHECK(k != NULL);
        PT_CHECK(k == pu_kernels_get());
        PT_CHECK(pu_kernels_for(PU_SIMD_REF) != NULL);
        PT_CHECK(pu_kernels_for(k->level) == k);
        for (pu_simd s = PU_SIMD_REF; s <= PU_SIMD_AVX512; s++) {
            const pu_kernels *t = pu_kernels_for(s);
            if (!t)
                continue;
            PT_EQ_I64(t->level, s);
            for (int d = 0; d < PU_DTYPE_COUNT; d++)
                PT_CHECK(t->matmul[d] && t->to_f32[d]);
            PT_CHECK(t->rmsnorm && t->dot && t->axpy && t->scale && t->add && t->swiglu &&
                     t->softmax && t->vmax && t->exp_sum);
        }
    }

    if (PT_TEST("ref matmul vs double")) {
        for (int d = 0; d < 3; d++) {
            check_ref_matmul(dts[d], 1, 13, 67);
            check_ref_matmul(dts[d], 5, 7, 300);
        }
    }

    if (PT_TEST("ref vector ops vs double")) {
        const pu_kernels *ref = pu_kernels_for(PU_SIMD_REF);
        pu_rng r;
        pu_rng_seed(&r, 4);
        enum { n = 333 };
        float a[n], b[n], w[n], y[n], want[n];
        fill(&r, a, n, -3, 3);
        fill(&r, b, n, -3, 3);
        fill(&r, w, n, 0.5f, 1.5f);
        double dd = 0, ss = 0;
        for (int i = 0; i < n; i++)
            dd += (double)a[i] * b[i], ss += (double)a[i] * a[i];
        PT_NEAR(ref->dot(a, b, n), dd, 1e-4, 1e-5);
        double rr = 1.0 / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; i++)
            want[i] = (float)(a[i] * rr * w[i]);
        ref->rmsnorm(y, a, w, n, 1e-5f);
        PT_ALLCLOSE("ref rmsnorm", y, want, n, 1e-6, 1e-5);
        for (int i = 0; i < n; i++) {
            double g = a[i] * 10.0;
            w[i] = (float)g;
            want[i] = (float)(g / (1.0 + exp(-g)) * b[i]);
        }
        ref->swiglu(y, w, b, n);
        PT_ALLCLOSE("ref swiglu", y, want, n, 1e-6, 1e-5);
        double m = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++)
            m = a[i] * 5.0 > m ? a[i] * 5.0 : m;
        for (int i = 0; i < n; i++)
            sum += exp(a[i] * 5.0 - m);
        for (int i = 0; i < n; i++) {
            want[i] = (float)(exp(a[i] * 5.0 - m) / sum);
            y[i] = a[i] * 5.0f;
        }
        ref->softmax(y, n);
        PT_ALLCLOSE("ref softmax", y, want, n, 1e-8, 1e-5);
        PT_NEAR(ref->vmax(a, n), m / 5.0, 1e-6, 1e-6);
        PT_CHECK(ref->vmax(a, 0) == -INFINITY);
    }

    if (PT_TEST("simd matmul vs ref")) {
        static const int64_t shapes[][3] = {
            /* T, N, K */
            {1, 13, 67}, {1, 21, 16}, {1, 5, 7},    {1, 9, 1100},  {1, 7, 4500}, {1, 11, 117},
            {2, 11, 33}, {7, 6, 129}, {37, 21, 67}, {37, 10, 600}, {150, 9, 45}, {13, 3, 1},
            {16, 131, 520}, {4, 5, 9},
        };
        for (pu_simd s = PU_SIMD_AVX2; s <= PU_SIMD_AVX512; s++) {
            const pu_kernels *k = level_or_skip(s);
            if (!k)
                continue;
            for (int d = 0; d < 3; d++)
                for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
                    int64_t T = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
                    check_matmul_level(k, dts[d], T, N, K, 0, N, 0);
                }
            /* sub-range of rows and padded strides */
            for (int d = 0; d < 3; d++) {
                check_matmul_level(k, dts[d], 1, 23, 70, 3, 18, 5);
                check_matmul_level(k, dts[d], 9, 23, 531, 5, 22, 3);
            }
        }
    }

    if (PT_TEST("simd vector ops vs ref")) {
        static const int64_t sizes[] = {1, 7, 8, 15, 16, 17, 33, 64, 100, 2048, 2049};
        for (pu_simd s = PU_SIMD_AVX2; s <= PU_SIMD_AVX512; s++) {
            const pu_kernels *k = level_or_skip(s);
            if (!k)
                continue;
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
                check_vec_level(k, sizes[i]);
        }
    }

    if (PT_TEST("exp accuracy (exp_sum) vs double")) {
        /* the SIMD exp feeds softmax/silu compared with PyTorch at 1e-4:
         * require <= 4 ulp-ish (rtol 5e-7) over the normal range */
        enum { n = 4099 };
        static float x[n], want[n];
        for (pu_simd s = PU_SIMD_REF; s <= PU_SIMD_AVX512; s++) {
            const pu_kernels *k = pu_kernels_for(s);
            if (!k)
                continue;
            for (int i = 0; i < n; i++) {
                x[i] = -87.0f + 175.0f * (float)i / (float)(n - 1);
                want[i] = (float)exp((double)x[i]);
            }
            x[7] = 0.0f, want[7] = 1.0f;
            k->exp_sum(x, n, 0.0f);
            char label[64];
            snprintf(label, sizeof label, "%s exp", k->name);
            PT_ALLCLOSE(label, x, want, n, 0, 5e-7);
        }
    }

    if (PT_TEST("empty and degenerate shapes")) {
        float x[4] = {1, 2, 3, 4}, w[8] = {1, 1, 1, 1, 2, 2, 2, 2}, y[4] = {9, 9, 9, 9};
        for (pu_simd s = PU_SIMD_REF; s <= PU_SIMD_AVX512; s++) {
            const pu_kernels *k = pu_kernels_for(s);
            if (!k)
                continue;
            y[0] = y[1] = y[2] = y[3] = 9;
            pu_op_matmul(NULL, k, y, x, w, PU_DTYPE_F32, 0, 2, 4); /* T = 0: no-op */
            pu_op_matmul(NULL, k, y, x, w, PU_DTYPE_F32, 1, 0, 4); /* N = 0: no-op */
            PT_CHECK(y[0] == 9 && y[1] == 9);
            pu_op_matmul(NULL, k, y, x, w, PU_DTYPE_F32, 1, 2, 0); /* K = 0: zeros */
            PT_CHECK(y[0] == 0 && y[1] == 0 && y[2] == 9);
            pu_op_matmul(NULL, k, y, x, w, PU_DTYPE_F32, 1, 2, 4);
            PT_CHECK(y[0] == 10 && y[1] == 20);
            k->softmax(y, 0);
            PT_CHECK(k->vmax(x, 0) == -INFINITY);
            PT_CHECK(k->dot(x, x, 0) == 0.0f);
        }
    }

    if (PT_TEST("op matmul 1 vs 2 threads bitwise")) {
        pu_pool *p1 = pu_pool_create(1), *p2 = pu_pool_create(2);
        static const int64_t shapes[][3] = {
            {1, 203, 75}, {37, 203, 75}, {3, 64, 520}, {1, 53, 4133}};
        for (pu_simd s = PU_SIMD_REF; s <= PU_SIMD_AVX512; s++) {
            const pu_kernels *k = pu_kernels_for(s);
            if (!k)
                continue;
            for (int d = 0; d < 3; d++)
                for (int i = 0; i < 4; i++) {
                    int64_t T = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
                    pu_rng r;
                    pu_rng_seed(&r, 3 + (uint64_t)i);
                    float *x = pu_malloc((size_t)(T * K) * 4), *wf = pu_malloc((size_t)(N * K) * 4);
                    float *y1 = pu_malloc((size_t)(T * N) * 4),
                          *y2 = pu_malloc((size_t)(T * N) * 4);
                    float *y0 = pu_malloc((size_t)(T * N) * 4);
                    fill(&r, x, T * K, -1, 1);
                    void *w = make_w(&r, dts[d], N * K, wf);
                    pu_op_matmul(NULL, k, y0, x, w, dts[d], T, N, K);
                    pu_op_matmul(p1, k, y1, x, w, dts[d], T, N, K);
                    pu_op_matmul(p2, k, y2, x, w, dts[d], T, N, K);
                    PT_CHECK_MSG(memcmp(y1, y2, (size_t)(T * N) * 4) == 0 &&
                                     memcmp(y0, y1, (size_t)(T * N) * 4) == 0,
                                 "%s %s T=%lld: thread counts differ", k->name,
                                 pu_dtype_name(dts[d]), (long long)T);
                    /* and it is the matmul: compare with the ref kernel */
                    pu_kernels_for(PU_SIMD_REF)->matmul[dts[d]](y0, N, x, K, w, T, 0, N, K);
                    PT_ALLCLOSE("op matmul vs ref", y2, y0, T * N, 1e-6 * (double)K, 1e-5);
                    pu_free(x), pu_free(wf), pu_free(y0), pu_free(y1), pu_free(y2), pu_free(w);
                }
        }
        pu_pool_destroy(p1);
        pu_pool_destroy(p2);
    }

    if (PT_TEST("matmul: a row alone (decode) == the same row within a batch, bitwise")) {
        /* the serving engine batches the decode rows of many sequences into
         * one product: a sequence's output must not depend on its batch
         * (K = 1100: three K blocks of PU_KERN_KC, the last one ragged) */
        static const int64_t shapes[][3] = {{9, 203, 75}, {5, 37, 1100}, {14, 21, 16}};
        for (pu_simd s = PU_SIMD_REF; s <= PU_SIMD_AVX512; s++) {
            const pu_kernels *k = pu_kernels_for(s);
            if (!k) {
                printf("  %s: skipped (CPU lacks it)\n", s == PU_SIMD_AVX2 ? "avx2" : "avx512");
                continue;
            }
            for (int d = 0; d < 3; d++)
                for (int i = 0; i < 3; i++) {
                    int64_t T = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
                    pu_rng r;
                    pu_rng_seed(&r, 40 + (uint64_t)i);
                    float *x = pu_malloc((size_t)(T * K) * 4), *wf = pu_malloc((size_t)(N * K) * 4);
                    float *yb = pu_malloc((size_t)(T * N) * 4), *y1 = pu_malloc((size_t)N * 4);
                    fill(&r, x, T * K, -1, 1);
                    void *w = make_w(&r, dts[d], N * K, wf);
                    k->matmul[dts[d]](yb, N, x, K, w, T, 0, N, K);
                    for (int64_t t = 0; t < T; t++) {
                        k->matmul[dts[d]](y1, N, x + t * K, K, w, 1, 0, N, K);
                        PT_CHECK_MSG(memcmp(y1, yb + t * N, (size_t)N * 4) == 0,
                                     "%s %s T=%lld N=%lld K=%lld: row %lld differs alone", k->name,
                                     pu_dtype_name(dts[d]), (long long)T, (long long)N,
                                     (long long)K, (long long)t);
                    }
                    pu_free(x), pu_free(wf), pu_free(yb), pu_free(y1), pu_free(w);
                }
        }
    }

    if (PT_TEST("op rmsnorm and swiglu 1 vs 2 threads")) {
        pu_pool *p1 = pu_pool_create(1), *p2 = pu_pool_create(2);
        const pu_kernels *k = pu_kernels_get();
        int64_t T = 9, C = 130, n = 20000 + 13;
        pu_rng r;
        pu_rng_seed(&r, 8);
        float *x = pu_malloc((size_t)n * 4), *g = pu_malloc((size_t)n * 4);
        float *w = pu_malloc((size_t)C * 4);
        float *y1 = pu_malloc((size_t)n * 4), *y2 = pu_malloc((size_t)n * 4);
        fill(&r, x, n, -4, 4);
        fill(&r, g, n, -8, 8);
        fill(&r, w, C, 0, 2);
        pu_op_rmsnorm(p1, k, y1, x, w, T, C, 1e-6f);
        pu_op_rmsnorm(p2, k, y2, x, w, T, C, 1e-6f);
        PT_CHECK(memcmp(y1, y2, (size_t)(T * C) * 4) == 0);
        for (int64_t t = 0; t < T; t++)
            pu_kernels_for(PU_SIMD_REF)->rmsnorm(y1 + t * C, x + t * C, w, C, 1e-6f);
        PT_ALLCLOSE("op rmsnorm vs ref", y2, y1, T * C, 1e-6, 1e-5);
        pu_op_swiglu(p1, k, y1, g, x, n);
        pu_op_swiglu(p2, k, y2, g, x, n);
        PT_CHECK(memcmp(y1, y2, (size_t)n * 4) == 0);
        pu_kernels_for(PU_SIMD_REF)->swiglu(y1, g, x, n);
        PT_ALLCLOSE("op swiglu vs ref", y2, y1, n, 1e-6, 1e-5);
        pu_free(x), pu_free(g), pu_free(w), pu_free(y1), pu_free(y2);
        pu_pool_destroy(p1);
        pu_pool_destroy(p2);
    }

    if (PT_TEST("attention vs naive double")) {
        pu_pool *p1 = pu_pool_create(1), *p2 = pu_pool_create(2);
        static const int64_t cases[][2] = {{1, 5}, {7, 0}, {5, 3}, {3, 100}, {1, 0}};
        static const int64_t groups[][2] = {{4, 4}, {4, 2}, {8, 2}};
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            for (int g = 0; g < 3; g++)
                check_attention(p1, p2, cases[c][0], cases[c][1], groups[g][0], groups[g][1],
                                c == 3 ? 16 : 24);
        check_attention(p1, p2, 2, 1, 2, 1, 600); /* D beyond the stack buffer */
        pu_pool_destroy(p1);
        pu_pool_destroy(p2);
    }

    if (PT_TEST("rope both styles vs naive")) {
        int64_t T = 3, nh = 2, D = 10, half = D / 2;
        pu_rng r;
        pu_rng_seed(&r, 12);
        float x[3 * 2 * 10], y[3 * 2 * 10], want[3 * 2 * 10], cs[3 * 5], sn[3 * 5];
        fill(&r, x, T * nh * D, -1, 1);
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < half; i++) {
                double ang = (double)(t + 4) * pow(10000.0, -2.0 * (double)i / (double)D);
                cs[t * half + i] = (float)cos(ang);
                sn[t * half + i] = (float)sin(ang);
            }
        for (int style = 0; style < 2; style++) {
            for (int64_t t = 0; t < T; t++)
                for (int64_t h = 0; h < nh; h++)
                    for (int64_t i = 0; i < half; i++) {
                        const float *v = x + (t * nh + h) * D;
                        float *o = want + (t * nh + h) * D;
                        int64_t ia = style ? 2 * i : i, ib = style ? 2 * i + 1 : i + half;
                        double c = cs[t * half + i], s = sn[t * half + i];
                        o[ia] = (float)(v[ia] * c - v[ib] * s);
                        o[ib] = (float)(v[ib] * c + v[ia] * s);
                    }
            memcpy(y, x, sizeof x);
            pu_op_rope(y, T, nh, D, cs, sn, style == 1);
            PT_ALLCLOSE(style ? "rope interleaved" : "rope rotate-half", y, want, T * nh * D, 1e-6,
                        1e-6);
        }
    }
}
