/*
 * ops.c — threaded ops over a pu_pool, built on a kernel table.
 *
 * matmul splits N only, never K, in ranges aligned to PU_KERN_NALIGN rows, so
 * every row is computed by the same arithmetic whatever the thread count
 * (bitwise identical results for 1 and n threads). Decode (T = 1) hands out
 * 2 chunks of rows per thread dynamically (long sequential streams); prefill
 * gives each thread one contiguous range. attention splits (head, query) pairs,
 * head-major, and runs a flash-style online softmax over key blocks of
 * ATTN_KB keys, so no (T, L) score matrix is ever materialised. rmsnorm
 * splits rows, swiglu splits elements in 64-aligned chunks.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "kernels/kernels_impl.h"

void pu_op_matmul_q_(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const void *w,
                     pu_dtype t, int64_t T, int64_t N, int64_t K);

/* below this many multiply-adds a matmul runs on the calling thread */
#define MATMUL_MIN_PAR 32768
#define ATTN_KB        64
#define ATTN_DSTACK    512

/* ---------------------------------------------------------------- matmul */

typedef struct {
    const pu_kernels *k;
    float *y;
    const float *x;
    const void *w;
    pu_dtype wt;
    int64_t T, N, K;
    int64_t chunk;            /* rows per dynamically scheduled chunk (T == 1) */
    atomic_int_fast64_t next; /* next chunk index (T == 1) */
} matmul_ctx;

static void matmul_worker(void *vctx, int ith, int nth) {
    matmul_ctx *c = vctx;
    if (c->T == 1) {
        /* decode: chunks handed out dynamically, so a core slowed down by
         * another process does not stall the other; every row's arithmetic
         * is independent of who computes it */
        for (;;) {
            int64_t i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
            int64_t n0 = i * c->chunk, n1 = n0 + c->chunk < c->N ? n0 + c->chunk : c->N;
            if (n0 >= c->N)
                break;
            c->k->matmul[c->wt](c->y, c->N, c->x, c->K, c->w, 1, n0, n1, c->K);
        }
        return;
    }
    /* prefill: one contiguous range per thread (the kernel packs X once) */
    int64_t nb = (c->N + PU_KERN_NALIGN - 1) / PU_KERN_NALIGN, lo, hi;
    pu_split(nb, ith, nth, &lo, &hi);
    int64_t n0 = lo * PU_KERN_NALIGN, n1 = hi * PU_KERN_NALIGN;
    if (n1 > c->N)
        n1 = c->N;
    if (n0 < n1)
        c->k->matmul[c->wt](c->y, c->N, c->x, c->K, c->w, c->T, n0, n1, c->K);
}

void pu_op_matmul(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const void *w,
                  pu_dtype wt, int64_t T, int64_t N, int64_t K) {
    PU_ASSERT(wt >= 0 && wt < PU_DTYPE_COUNT);
    if (T <= 0 || N <= 0)
        return;
    if (pu_dtype_is_quant(wt)) { /* activations quantized once (quant.c) */
        pu_op_matmul_q_(pool, k, y, x, w, wt, T, N, K);
        return;
    }
    matmul_ctx c = {.k = k, .y = y, .x = x, .w = w, .wt = wt, .T = T, .N = N, .K = K};
    atomic_init(&c.next, 0);
    if (pool == NULL || pu_pool_size(pool) <= 1 ||
        (double)T * (double)N * (double)K < MATMUL_MIN_PAR || N <= PU_KERN_NALIGN) {
        c.k->matmul[wt](y, N, x, K, w, T, 0, N, K);
        return;
    }
    /* decode chunks: 2 per thread, handed out dynamically — long sequential
     * streams (each is read as 4 streams by the kernel) with some balancing
     * when one core is slowed down; a multiple of NALIGN rows. Measured on
     * the 1.8B shapes: better than ~256 KiB chunks (F32 decode 31 -> 33-39
     * GB/s at 2 threads). */
    int nth = pu_pool_size(pool);
    int64_t ch = N / (2 * (int64_t)nth);
    c.chunk = ch < PU_KERN_NALIGN ? PU_KERN_NALIGN : ch / PU_KERN_NALIGN * PU_KERN_NALIGN;
    pu_pool_run(pool, matmul_worker, &c);
}

/* ---------------------------------------------------------------- rope */

void pu_op_rope(float *x, int64_t T, int64_t nh, int64_t D, const float *cos, const float *sin,
                bool interleaved) {
    int64_t half = D / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *c = cos + t * half, *s = sin + t * half;
        for (int64_t h = 0; h < nh; h++) {
            float *v = x + (t * nh + h) * D;
            if (interleaved) {
                for (int64_t i = 0; i < half; i++) {
                    float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * c[i] - b * s[i];
                    v[2 * i + 1] = b * c[i] + a * s[i];
                }
            } else {
                for (int64_t i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = b * c[i] + a * s[i];
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    const pu_kernels *k;
    float *out;
    const float *q;
    const pu_kv_view *kv;
    int64_t T, pos0, H, Hkv, D;
    float scale;
} attn_ctx;

/* one (query t, head h): online softmax over keys 0 .. pos0+t */
static void attn_one(const attn_ctx *c, int64_t t, int64_t h, float *acc) {
    const pu_kernels *k = c->k;
    int64_t D = c->D, kvh = h / (c->H / c->Hkv), nk = c->pos0 + t + 1;
    const float *qh = c->q + (t * c->H + h) * D;
    float qsum = 0.0f;
    if (c->kv->type == PU_KV_Q8)
        for (int64_t d = 0; d < D; d++)
            qsum += qh[d];
    float s[ATTN_KB];
    float m = -INFINITY, l = 0.0f;
    memset(acc, 0, (size_t)D * sizeof(float));
    for (int64_t j0 = 0; j0 < nk; j0 += ATTN_KB) {
        int64_t nb = nk - j0 < ATTN_KB ? nk - j0 : ATTN_KB;
        pu_kv_scores(k, c->kv, j0, nb, kvh, D, qh, qsum, c->scale, s);
        float bm = k->vmax(s, nb);
        float mn = bm > m ? bm : m;
        if (j0 > 0 && mn > m) {
            float corr = expf(m - mn);
            l *= corr;
            k->scale(acc, corr, D);
        }
        m = mn;
        l += k->exp_sum(s, nb, m);
        pu_kv_accum(k, c->kv, j0, nb, kvh, D, s, acc);
    }
    float *o = c->out + (t * c->H + h) * D;
    float inv = 1.0f / l;
    for (int64_t d = 0; d < D; d++)
        o[d] = acc[d] * inv;
}

static void attn_worker(void *vctx, int ith, int nth) {
    const attn_ctx *c = vctx;
    int64_t lo, hi;
    pu_split(c->H * c->T, ith, nth, &lo, &hi);
    if (lo >= hi)
        return;
    float stack_acc[ATTN_DSTACK];
    float *acc = c->D <= ATTN_DSTACK ? stack_acc : pu_malloc((size_t)c->D * sizeof(float));
    for (int64_t i = lo; i < hi; i++)
        attn_one(c, i % c->T, i / c->T, acc); /* head-major: balanced causal work */
    if (acc != stack_acc)
        pu_free(acc);
}

void pu_op_attention_kv(pu_pool *pool, const pu_kernels *k, float *out, const float *q,
                        const pu_kv_view *kv, int64_t T, int64_t pos0, int64_t H, int64_t D) {
    int64_t Hkv = kv->Hkv;
    PU_ASSERT(Hkv > 0 && H % Hkv == 0 && D > 0 && pos0 >= 0);
    if (T <= 0 || H <= 0)
        return;
    attn_ctx c = {k, out, q, kv, T, pos0, H, Hkv, D, (float)(1.0 / sqrt((double)D))};
    if (pool == NULL || pu_pool_size(pool) <= 1 || H * T == 1)
        attn_worker(&c, 0, 1);
    else
        pu_pool_run(pool, attn_worker, &c);
}

void pu_op_attention(pu_pool *pool, const pu_kernels *k, float *out, const float *q,
                     const float *kc, const float *vc, int64_t ld, int64_t T, int64_t pos0,
                     int64_t H, int64_t Hkv, int64_t D) {
    pu_kv_view kv = {PU_KV_F32, kc, vc, NULL, NULL, ld, Hkv};
    pu_op_attention_kv(pool, k, out, q, &kv, T, pos0, H, D);
}

/* ---------------------------------------------------------------- rmsnorm */

typedef struct {
    const pu_kernels *k;
    float *y;
    const float *x, *w;
    int64_t T, C;
    float eps;
} rms_ctx;

static void rms_worker(void *vctx, int ith, int nth) {
    const rms_ctx *c = vctx;
    int64_t lo, hi;
    pu_split(c->T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++)
        c->k->rmsnorm(c->y + t * c->C, c->x + t * c->C, c->w, c->C, c->eps);
}

void pu_op_rmsnorm(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const float *w,
                   int64_t T, int64_t C, float eps) {
    rms_ctx c = {k, y, x, w, T, C, eps};
    if (pool == NULL || pu_pool_size(pool) <= 1 || T < 4)
        rms_worker(&c, 0, 1);
    else
        pu_pool_run(pool, rms_worker, &c);
}

/* ---------------------------------------------------------------- swiglu */

typedef struct {
    const pu_kernels *k;
    float *out;
    const float *gate, *up;
    int64_t n;
} swiglu_ctx;

static void swiglu_worker(void *vctx, int ith, int nth) {
    const swiglu_ctx *c = vctx;
    int64_t lo, hi, nb = (c->n + 63) / 64;
    pu_split(nb, ith, nth, &lo, &hi);
    lo *= 64;
    hi = hi * 64 < c->n ? hi * 64 : c->n;
    if (lo < hi)
        c->k->swiglu(c->out + lo, c->gate + lo, c->up + lo, hi - lo);
}

void pu_op_swiglu(pu_pool *pool, const pu_kernels *k, float *out, const float *gate,
                  const float *up, int64_t n) {
    swiglu_ctx c = {k, out, gate, up, n};
    if (pool == NULL || pu_pool_size(pool) <= 1 || n < 8192)
        swiglu_worker(&c, 0, 1);
    else
        pu_pool_run(pool, swiglu_worker, &c);
}
