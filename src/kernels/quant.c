/*
 * quant.c — scalar reference of the block-quantized dtypes: dequantization
 * (bit-exact with ggml's dequantize_row_* and gguf-py's dequantizer: the same
 * fp32 operations in the same order), activation quantization and the
 * int8·int8 dot products, plus the threaded quantized matmul used by
 * pu_op_matmul.
 *
 * Dot of one weight row with one activation row, per 32-element activation
 * block j (d_a, q_a, s_a = sum q_a) and the weight block covering it:
 *   Q8_0:        (d_w d_a) * Σ q_w q_a
 *   Q4_0 / Q5_0: (d_w d_a) * (Σ q_w q_a − 8 s_a)   (resp. 16 s_a), q_w unsigned
 *   Q4_1 / Q5_1: (d_w d_a) * Σ q_w q_a + (m_w d_a) * s_a
 *   Q4_K / Q5_K: (d d_a) * (sc_j Σ q_w q_a) − (dmin d_a) * (m_j s_a)
 *   Q6_K:        (d d_a) * (sc_2j Σ_lo (q−32) q_a + sc_2j+1 Σ_hi (q−32) q_a)
 * The integer parts are exact (and equal in every SIMD variant); the float
 * parts are accumulated over blocks in order here, in vector lanes there.
 */
#include <math.h>
#include <stdatomic.h>

#include "kernels/quant_impl.h"

static inline float h2f(uint16_t h) {
    return pu_f16_to_f32(h);
}

/* ---------------------------------------------------------------- dequantize */

void pu_ref_to_f32_q(pu_dtype t, float *dst, const void *src, int64_t n) {
    const uint8_t *p = src;
    int8_t q[QK_K];
    switch (t) {
    case PU_DTYPE_Q8_0:
        for (int64_t i = 0; i < n / QK; i++) {
            const blk_q8_0 *b = (const blk_q8_0 *)(p + i * sizeof *b);
            float d = h2f(b->d);
            for (int j = 0; j < QK; j++)
                dst[i * QK + j] = (float)b->qs[j] * d;
        }
        break;
    case PU_DTYPE_Q4_0:
        for (int64_t i = 0; i < n / QK; i++) {
            const blk_q4_0 *b = (const blk_q4_0 *)(p + i * sizeof *b);
            float d = h2f(b->d);
            pu_q_unpack_4(b->qs, q);
            for (int j = 0; j < QK; j++)
                dst[i * QK + j] = d * (float)(q[j] - 8);
        }
        break;
    case PU_DTYPE_Q4_1:
        for (int64_t i = 0; i < n / QK; i++) {
            const blk_q4_1 *b = (const blk_q4_1 *)(p + i * sizeof *b);
            float d = h2f(b->d), m = h2f(b->m);
            pu_q_unpack_4(b->qs, q);
            for (int j = 0; j < QK; j++)
                dst[i * QK + j] = d * (float)q[j] + m;
        }
        break;
    case PU_DTYPE_Q5_0:
        for (int64_t i = 0; i < n / QK; i++) {
            const blk_q5_0 *b = (const blk_q5_0 *)(p + i * sizeof *b);
            float d = h2f(b->d);
            pu_q_unpack_5(b->qs, b->qh, q);
            for (int j = 0; j < QK; j++)
                dst[i * QK + j] = d * (float)(q[j] - 16);
        }
        break;
    case PU_DTYPE_Q5_1:
        for (int64_t i = 0; i < n / QK; i++) {
            const blk_q5_1 *b = (const blk_q5_1 *)(p + i * sizeof *b);
            float d = h2f(b->d), m = h2f(b->m);
            pu_q_unpack_5(b->qs, b->qh, q);
            for (int j = 0; j < QK; j++)
                dst[i * QK + j] = d * (float)q[j] + m;
        }
        break;
    case PU_DTYPE_Q4_K:
    case PU_DTYPE_Q5_K:
        for (int64_t i = 0; i < n / QK_K; i++) {
            const uint8_t *scales;
            float d, dmin;
            if (t == PU_DTYPE_Q4_K) {
                const blk_q4_k *b = (const blk_q4_k *)(p + i * sizeof *b);
                pu_q_unpack_q4_k(b, q);
                scales = b->scales, d = h2f(b->d), dmin = h2f(b->dmin);
            } else {
                const blk_q5_k *b = (const blk_q5_k *)(p + i * sizeof *b);
                pu_q_unpack_q5_k(b, q);
                scales = b->scales, d = h2f(b->d), dmin = h2f(b->dmin);
            }
            for (int j = 0; j < 8; j++) {
                int sc, m;
                pu_q_scale_min_k4(j, scales, &sc, &m);
                float d1 = d * (float)sc, m1 = dmin * (float)m;
                for (int l = 0; l < 32; l++)
                    dst[i * QK_K + 32 * j + l] = d1 * (float)q[32 * j + l] - m1;
            }
        }
        break;
    case PU_DTYPE_Q6_K:
        for (int64_t i = 0; i < n / QK_K; i++) {
            const blk_q6_k *b = (const blk_q6_k *)(p + i * sizeof *b);
            float d = h2f(b->d);
            pu_q_unpack_q6_k(b, q);
            for (int e = 0; e < QK_K; e++)
                dst[i * QK_K + e] = d * (float)b->scales[e / 16] * (float)q[e];
        }
        break;
    default: PU_ASSERT(!"not a quantized dtype");
    }
}

#define DEQ(name, DT)                                                \
    void pu_ref_deq_##name(float *dst, const void *src, int64_t n) { \
        pu_ref_to_f32_q(DT, dst, src, n);                            \
    }
DEQ(q8_0, PU_DTYPE_Q8_0)
DEQ(q4_0, PU_DTYPE_Q4_0)
DEQ(q4_1, PU_DTYPE_Q4_1)
DEQ(q5_0, PU_DTYPE_Q5_0)
DEQ(q5_1, PU_DTYPE_Q5_1)
DEQ(q4_k, PU_DTYPE_Q4_K)
DEQ(q5_k, PU_DTYPE_Q5_K)
DEQ(q6_k, PU_DTYPE_Q6_K)

/* ---------------------------------------------------------------- activations */

void pu_ref_quantize_act(int8_t *qs, float *d, int16_t *s, const float *x, int64_t K) {
    for (int64_t b = 0; b < K / QK; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            int v = (int)nearbyintf(xb[j] * id);
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            qs[b * QK + j] = (int8_t)v;
            sum += v;
        }
        d[b] = db;
        s[b] = (int16_t)sum;
    }
}

/* ---------------------------------------------------------------- dots */

static inline int idot(const int8_t *a, const int8_t *b, int n) {
    int s = 0;
    for (int i = 0; i < n; i++)
        s += (int)a[i] * (int)b[i];
    return s;
}

float pu_ref_qdot(pu_dtype t, const void *wrow, const int8_t *qa, const float *da,
                  const int16_t *sa, int64_t K) {
    const uint8_t *p = wrow;
    int8_t q[QK_K];
    float acc = 0.0f;
    switch (t) {
    case PU_DTYPE_Q8_0:
        for (int64_t i = 0; i < K / QK; i++) {
            const blk_q8_0 *b = (const blk_q8_0 *)(p + i * sizeof *b);
            acc += (h2f(b->d) * da[i]) * (float)idot(b->qs, qa + i * QK, QK);
        }
        break;
    case PU_DTYPE_Q4_0:
        for (int64_t i = 0; i < K / QK; i++) {
            const blk_q4_0 *b = (const blk_q4_0 *)(p + i * sizeof *b);
            pu_q_unpack_4(b->qs, q);
            int s = idot(q, qa + i * QK, QK) - 8 * sa[i];
            acc += (h2f(b->d) * da[i]) * (float)s;
        }
        break;
    case PU_DTYPE_Q5_0:
        for (int64_t i = 0; i < K / QK; i++) {
            const blk_q5_0 *b = (const blk_q5_0 *)(p + i * sizeof *b);
            pu_q_unpack_5(b->qs, b->qh, q);
            int s = idot(q, qa + i * QK, QK) - 16 * sa[i];
            acc += (h2f(b->d) * da[i]) * (float)s;
        }
        break;
    case PU_DTYPE_Q4_1:
        for (int64_t i = 0; i < K / QK; i++) {
            const blk_q4_1 *b = (const blk_q4_1 *)(p + i * sizeof *b);
            pu_q_unpack_4(b->qs, q);
            int s = idot(q, qa + i * QK, QK);
            acc += (h2f(b->d) * da[i]) * (float)s + (h2f(b->m) * da[i]) * (float)sa[i];
        }
        break;
    case PU_DTYPE_Q5_1:
        for (int64_t i = 0; i < K / QK; i++) {
            const blk_q5_1 *b = (const blk_q5_1 *)(p + i * sizeof *b);
            pu_q_unpack_5(b->qs, b->qh, q);
            int s = idot(q, qa + i * QK, QK);
            acc += (h2f(b->d) * da[i]) * (float)s + (h2f(b->m) * da[i]) * (float)sa[i];
        }
        break;
    case PU_DTYPE_Q4_K:
    case PU_DTYPE_Q5_K:
        for (int64_t i = 0; i < K / QK_K; i++) {
            const uint8_t *scales;
            float d, dmin;
            if (t == PU_DTYPE_Q4_K) {
                const blk_q4_k *b = (const blk_q4_k *)(p + i * sizeof *b);
                pu_q_unpack_q4_k(b, q);
                scales = b->scales, d = h2f(b->d), dmin = h2f(b->dmin);
            } else {
                const blk_q5_k *b = (const blk_q5_k *)(p + i * sizeof *b);
                pu_q_unpack_q5_k(b, q);
                scales = b->scales, d = h2f(b->d), dmin = h2f(b->dmin);
            }
            for (int j = 0; j < 8; j++) {
                int sc, m;
                pu_q_scale_min_k4(j, scales, &sc, &m);
                int64_t a = i * 8 + j;
                int s = sc * idot(q + 32 * j, qa + a * QK, QK);
                acc += (d * da[a]) * (float)s - (dmin * da[a]) * (float)(m * sa[a]);
            }
        }
        break;
    case PU_DTYPE_Q6_K:
        for (int64_t i = 0; i < K / QK_K; i++) {
            const blk_q6_k *b = (const blk_q6_k *)(p + i * sizeof *b);
            pu_q_unpack_q6_k(b, q);
            float d = h2f(b->d);
            for (int j = 0; j < 8; j++) {
                int64_t a = i * 8 + j;
                int s = b->scales[2 * j] * idot(q + 32 * j, qa + a * QK, 16) +
                        b->scales[2 * j + 1] * idot(q + 32 * j + 16, qa + a * QK + 16, 16);
                acc += (d * da[a]) * (float)s;
            }
        }
        break;
    default: PU_ASSERT(!"not a quantized dtype");
    }
    return acc;
}

static void ref_qmm(pu_dtype t, float *y, int64_t ldy, const pu_qact *x, const void *w, int64_t T,
                    int64_t n0, int64_t n1, int64_t K) {
    int64_t rb = pu_dtype_nbytes(t, K), nb = K / QK;
    for (int64_t t0 = 0; t0 < T; t0++)
        for (int64_t n = n0; n < n1; n++)
            y[t0 * ldy + n] = pu_ref_qdot(t, (const uint8_t *)w + n * rb, x->qs + t0 * K,
                                          x->d + t0 * nb, x->s + t0 * nb, K);
}

void pu_quant_matmul_via_(const pu_kernels *k, pu_dtype t, float *y, int64_t ldy, const float *x,
                          int64_t ldx, const void *w, int64_t T, int64_t n0, int64_t n1,
                          int64_t K) {
    int64_t nb = K / QK;
    size_t bytes = (size_t)(T * K) + (size_t)(T * nb) * (sizeof(float) + sizeof(int16_t));
    uint8_t *buf = pu_malloc_aligned(bytes + 64, 64);
    float *d = (float *)buf;
    int16_t *s = (int16_t *)(d + T * nb);
    int8_t *qs = (int8_t *)(s + T * nb);
    for (int64_t i = 0; i < T; i++)
        k->quantize_act(qs + i * K, d + i * nb, s + i * nb, x + i * ldx, K);
    pu_qact a = {qs, d, s};
    k->qmatmul[t](y, ldy, &a, w, T, n0, n1, K);
    pu_free_aligned(buf);
}

#define REFQ(name, DT)                                                                    \
    void pu_ref_qmm_##name(PU_QMM_ARGS) {                                                 \
        ref_qmm(DT, y, ldy, x, w, T, n0, n1, K);                                          \
    }                                                                                     \
    void pu_ref_mmq_##name(PU_MM_ARGS) {                                                  \
        pu_quant_matmul_via_(&pu_kernels_ref_table, DT, y, ldy, x, ldx, w, T, n0, n1, K); \
    }
REFQ(q8_0, PU_DTYPE_Q8_0)
REFQ(q4_0, PU_DTYPE_Q4_0)
REFQ(q4_1, PU_DTYPE_Q4_1)
REFQ(q5_0, PU_DTYPE_Q5_0)
REFQ(q5_1, PU_DTYPE_Q5_1)
REFQ(q4_k, PU_DTYPE_Q4_K)
REFQ(q5_k, PU_DTYPE_Q5_K)
REFQ(q6_k, PU_DTYPE_Q6_K)

/* ---------------------------------------------------------------- threaded op */

#define QMM_MAXP 8

typedef struct {
    const pu_kernels *k;
    const float *x;
    int64_t T, K, nb;
    int8_t *qs;
    float *d;
    int16_t *s;
    /* parts: rows [0, N[p]) of w[p] into y[p] (ld N[p]); chunk c of the
     * pool run is chunk c - first[p] of the part p with first[p] <= c */
    int np;
    pu_dtype t[QMM_MAXP];
    float *y[QMM_MAXP];
    const void *w[QMM_MAXP];
    int64_t N[QMM_MAXP], first[QMM_MAXP + 1];
    int64_t chunk;
    atomic_int_fast64_t next;
} qmm_ctx;

static void qact_worker(void *vctx, int ith, int nth) {
    qmm_ctx *c = vctx;
    int64_t lo, hi;
    pu_split(c->T, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        c->k->quantize_act(c->qs + i * c->K, c->d + i * c->nb, c->s + i * c->nb, c->x + i * c->K,
                           c->K);
}

static void qmm_worker(void *vctx, int ith, int nth) {
    qmm_ctx *c = vctx;
    pu_qact a = {c->qs, c->d, c->s};
    /* rows handed out dynamically in chunks (decode: long streams; prefill:
     * a chunk's weight rows are reused across all T activation rows) */
    int p = 0;
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (i >= c->first[c->np])
            break;
        while (i >= c->first[p + 1])
            p++;
        int64_t n0 = (i - c->first[p]) * c->chunk;
        int64_t n1 = n0 + c->chunk < c->N[p] ? n0 + c->chunk : c->N[p];
        c->k->qmatmul[c->t[p]](c->y[p], c->N[p], &a, c->w[p], c->T, n0, n1, c->K);
    }
}

/* quantized parts sharing X (at most QMM_MAXP) */
static void matmul_q_parts(pu_pool *pool, const pu_kernels *k, const float *x, int64_t T, int64_t K,
                           const pu_mm_part *parts, int n) {
    int64_t nb = K / QK, Nt = 0;
    size_t bytes = (size_t)(T * K) + (size_t)(T * nb) * (sizeof(float) + sizeof(int16_t));
    uint8_t *buf = pu_malloc_aligned(bytes + 64, 64);
    qmm_ctx c = {.k = k, .x = x, .T = T, .K = K, .nb = nb, .np = n};
    c.d = (float *)buf;
    c.s = (int16_t *)(c.d + T * nb);
    c.qs = (int8_t *)(c.s + T * nb);
    for (int p = 0; p < n; p++) {
        PU_ASSERT(K % pu_dtype_block(parts[p].dtype) == 0);
        c.t[p] = parts[p].dtype, c.y[p] = parts[p].y, c.w[p] = parts[p].w, c.N[p] = parts[p].N;
        Nt += parts[p].N;
    }
    atomic_init(&c.next, 0);
    bool par = pool && pu_pool_size(pool) > 1;
    if (par && T >= 8)
        pu_pool_run(pool, qact_worker, &c);
    else
        qact_worker(&c, 0, 1);
    bool one = !par || (double)T * (double)Nt * (double)K < 32768.0 || Nt <= 16;
    if (one) {
        c.chunk = 0;
        for (int p = 0; p < n; p++)
            if (c.N[p] > c.chunk)
                c.chunk = c.N[p];
    } else {
        int nth = pu_pool_size(pool);
        /* decode: 2 chunks per thread (as the float matmul); prefill: 8 */
        int64_t per = T == 1 ? 2 : 8;
        int64_t ch = Nt / (per * (int64_t)nth);
        c.chunk = ch < 16 ? 16 : ch / 16 * 16;
    }
    c.first[0] = 0;
    for (int p = 0; p < n; p++)
        c.first[p + 1] = c.first[p] + (c.N[p] + c.chunk - 1) / c.chunk;
    if (one)
        qmm_worker(&c, 0, 1);
    else
        pu_pool_run(pool, qmm_worker, &c);
    pu_free_aligned(buf);
}

void pu_op_matmul_multi(pu_pool *pool, const pu_kernels *k, const float *x, int64_t T, int64_t K,
                        const pu_mm_part *parts, int n) {
    bool allq = n <= QMM_MAXP && T > 0;
    for (int p = 0; p < n && allq; p++)
        allq = pu_dtype_is_quant(parts[p].dtype) && parts[p].N > 0;
    if (!allq) {
        for (int p = 0; p < n; p++)
            pu_op_matmul(pool, k, parts[p].y, x, parts[p].w, parts[p].dtype, T, parts[p].N, K);
        return;
    }
    matmul_q_parts(pool, k, x, T, K, parts, n);
}

/* called by pu_op_matmul for quantized weights */
void pu_op_matmul_q_(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const void *w,
                     pu_dtype t, int64_t T, int64_t N, int64_t K);
void pu_op_matmul_q_(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const void *w,
                     pu_dtype t, int64_t T, int64_t N, int64_t K) {
    pu_mm_part p = {y, w, t, N};
    matmul_q_parts(pool, k, x, T, K, &p, 1);
}
