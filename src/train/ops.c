/*
 * ops.c — training ops: forward with saved activations and backward for
 * embedding, RMSNorm, matmul, rotate-half RoPE, causal GQA attention,
 * SwiGLU and cross-entropy (see train_impl.h for the contracts).
 *
 * Determinism: every floating-point sum is computed by one thread in a fixed
 * order. Matmuls (forward and both backward products) go through the strided
 * training GEMM (gemm.c), which splits output rows and never K, and
 * accumulates dx / dW in place without transposed copies.
 * Column reductions (RMSNorm dw, embedding dtable) split columns. Attention
 * forward splits (b, h) pairs and backward (b, kv head) pairs, so the dk/dv
 * rows of a kv head are owned by one thread; inside a pair the products are
 * single-threaded GEMM calls. Attention saves the (B, H, T, T) probabilities:
 * fine for the short contexts trained here, O(T^2) memory for long ones (a
 * flash-style recomputing backward is the follow-up).
 */
#include <math.h>
#include <string.h>

#include "train/train_impl.h"

float *pu_tws_get(pu_tws *ws, size_t n) {
    if (n > ws->cap) {
        pu_free_aligned(ws->buf);
        ws->buf = pu_malloc_aligned((n ? n : 1) * sizeof(float), 64);
        ws->cap = n;
    }
    return ws->buf;
}

void pu_tws_free(pu_tws *ws) {
    pu_free_aligned(ws->buf);
    ws->buf = NULL;
    ws->cap = 0;
}

/* ---------------------------------------------------------------- embedding */

void pu_top_embed_fwd(float *out, const int32_t *ids, const float *table, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++)
        memcpy(out + n * C, table + (int64_t)ids[n] * C, (size_t)C * sizeof(float));
}

typedef struct {
    float *dtable;
    const float *dout;
    const int32_t *ids;
    int64_t N, C;
} embed_ctx;

static void embed_bwd_worker(void *vc, int ith, int nth) {
    const embed_ctx *c = vc;
    int64_t lo, hi;
    pu_split(c->C, ith, nth, &lo, &hi);
    for (int64_t n = 0; n < c->N; n++) {
        float *dst = c->dtable + (int64_t)c->ids[n] * c->C;
        const float *src = c->dout + n * c->C;
        for (int64_t i = lo; i < hi; i++)
            dst[i] += src[i];
    }
}

void pu_top_embed_bwd(pu_pool *pool, float *dtable, const float *dout, const int32_t *ids,
                      int64_t N, int64_t C) {
    embed_ctx c = {dtable, dout, ids, N, C};
    if (N * C < 65536)
        embed_bwd_worker(&c, 0, 1);
    else
        pu_pool_run(pool, embed_bwd_worker, &c);
}

/* ---------------------------------------------------------------- rmsnorm */

typedef struct {
    float *y, *rstd, *dx, *dw;
    const float *x, *w, *dy, *crstd;
    int64_t N, C;
    float eps;
} rms_ctx;

static void rms_fwd_worker(void *vc, int ith, int nth) {
    const rms_ctx *c = vc;
    int64_t lo, hi, C = c->C;
    pu_split(c->N, ith, nth, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        const float *x = c->x + n * C;
        float *y = c->y + n * C;
        double ss = 0;
        for (int64_t i = 0; i < C; i++)
            ss += (double)x[i] * x[i];
        float r = 1.0f / sqrtf((float)(ss / (double)C) + c->eps);
        c->rstd[n] = r;
        for (int64_t i = 0; i < C; i++)
            y[i] = c->w[i] * (x[i] * r);
    }
}

void pu_top_rmsnorm_fwd(pu_pool *pool, float *y, float *rstd, const float *x, const float *w,
                        int64_t N, int64_t C, float eps) {
    rms_ctx c = {.y = y, .rstd = rstd, .x = x, .w = w, .N = N, .C = C, .eps = eps};
    if (N * C < 16384)
        rms_fwd_worker(&c, 0, 1);
    else
        pu_pool_run(pool, rms_fwd_worker, &c);
}

/* dx: rows split. h = x*r, dh = dy*w, dx = r * (dh - h * mean(dh*h)) */
static void rms_bwd_dx_worker(void *vc, int ith, int nth) {
    const rms_ctx *c = vc;
    int64_t lo, hi, C = c->C;
    pu_split(c->N, ith, nth, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        const float *x = c->x + n * C, *dy = c->dy + n * C;
        float *dx = c->dx + n * C;
        float r = c->crstd[n];
        double dot = 0;
        for (int64_t i = 0; i < C; i++)
            dot += (double)(dy[i] * c->w[i]) * (double)(x[i] * r);
        float m = (float)(dot / (double)C);
        for (int64_t i = 0; i < C; i++)
            dx[i] += r * (dy[i] * c->w[i] - (x[i] * r) * m);
    }
}

/* dw: columns split; dw[i] += sum_n dy[n,i] * h[n,i] */
static void rms_bwd_dw_worker(void *vc, int ith, int nth) {
    const rms_ctx *c = vc;
    int64_t lo, hi, C = c->C;
    pu_split(C, ith, nth, &lo, &hi);
    if (lo >= hi)
        return;
    double acc[256];
    for (int64_t i0 = lo; i0 < hi; i0 += 256) {
        int64_t i1 = i0 + 256 < hi ? i0 + 256 : hi;
        memset(acc, 0, sizeof acc);
        for (int64_t n = 0; n < c->N; n++) {
            const float *x = c->x + n * C, *dy = c->dy + n * C;
            float r = c->crstd[n];
            for (int64_t i = i0; i < i1; i++)
                acc[i - i0] += (double)(dy[i] * (x[i] * r));
        }
        for (int64_t i = i0; i < i1; i++)
            c->dw[i] += (float)acc[i - i0];
    }
}

void pu_top_rmsnorm_bwd(pu_pool *pool, float *dx, float *dw, const float *dy, const float *x,
                        const float *rstd, const float *w, int64_t N, int64_t C) {
    rms_ctx c = {.dx = dx, .dw = dw, .x = x, .w = w, .dy = dy, .crstd = rstd, .N = N, .C = C};
    bool par = N * C >= 16384;
    if (dx) {
        if (par)
            pu_pool_run(pool, rms_bwd_dx_worker, &c);
        else
            rms_bwd_dx_worker(&c, 0, 1);
    }
    if (dw) {
        if (par)
            pu_pool_run(pool, rms_bwd_dw_worker, &c);
        else
            rms_bwd_dw_worker(&c, 0, 1);
    }
}

/* ---------------------------------------------------------------- matmul */

void pu_top_matmul_fwd(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const float *w,
                       int64_t N, int64_t M, int64_t K) {
    (void)k;
    /* y (N, M) = x (N, K) · B, B(p, j) = w[j*K + p] */
    pu_top_gemm(pool, y, M, x, K, 1, w, 1, K, N, M, K, false);
}

void pu_top_matmul_bwd(pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *dx, float *dw,
                       const float *dy, const float *x, const float *w, int64_t N, int64_t M,
                       int64_t K) {
    (void)k, (void)ws;
    if (dx) /* dx (N, K) += dy (N, M) · w (M, K) */
        pu_top_gemm(pool, dx, K, dy, M, 1, w, K, 1, N, K, M, true);
    if (dw) /* dw (M, K) += dy^T (M, N) · x (N, K) */
        pu_top_gemm(pool, dw, K, dy, 1, M, x, K, 1, M, K, N, true);
}

void pu_top_matmul_fwd_w(pu_pool *pool, float *y, const float *x, const pu_tmat *w, int64_t N,
                         int64_t M, int64_t K) {
    pu_top_gemm_w(pool, y, M, x, K, 1, w, true, N, M, K, false);
}

void pu_top_matmul_bwd_dx_w(pu_pool *pool, float *dx, const float *dy, const pu_tmat *w, int64_t N,
                            int64_t M, int64_t K) {
    pu_top_gemm_w(pool, dx, K, dy, M, 1, w, false, N, K, M, true);
}

void pu_top_embed_fwd_w(float *out, const int32_t *ids, const pu_tmat *table, int64_t N) {
    int64_t C = table->cols;
    for (int64_t n = 0; n < N; n++)
        pu_tmat_get(table, ids[n], 0, C, out + n * C);
}

/* ---------------------------------------------------------------- rope */

void pu_top_rope_tables(const pu_config *c, int64_t P, float *cs, float *sn) {
    int64_t D = c->head_dim, half = D / 2;
    float fb = (float)c->rope_theta;
    bool lin = c->rope_scaling_type == PU_ROPE_SCALING_LINEAR;
    for (int64_t i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)D;
        float inv = 1.0f / (float)pow((double)fb, (double)e);
        for (int64_t t = 0; t < P; t++) {
            float pos = (float)t;
            if (lin)
                pos = pos / (float)c->rope_scaling_factor;
            float ang = pos * inv;
            cs[t * half + i] = (float)cos((double)ang);
            sn[t * half + i] = (float)sin((double)ang);
        }
    }
}

static void rope_apply(float *x, const int32_t *pos, int64_t N, int64_t T, int64_t nh, int64_t D,
                       const float *cs, const float *sn, float sign) {
    int64_t half = D / 2;
    for (int64_t n = 0; n < N; n++) {
        int64_t p = pos ? pos[n] : n % T;
        const float *c = cs + p * half, *s = sn + p * half;
        for (int64_t h = 0; h < nh; h++) {
            float *v = x + (n * nh + h) * D;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void pu_top_rope_fwd(float *x, const int32_t *pos, int64_t N, int64_t T, int64_t nh, int64_t D,
                     const float *cos, const float *sin) {
    rope_apply(x, pos, N, T, nh, D, cos, sin, 1.0f);
}

/* y1 = a c - b s, y2 = b c + a s  =>  da = dy1 c + dy2 s, db = dy2 c - dy1 s */
void pu_top_rope_bwd(float *dx, const int32_t *pos, int64_t N, int64_t T, int64_t nh, int64_t D,
                     const float *cos, const float *sin) {
    rope_apply(dx, pos, N, T, nh, D, cos, sin, -1.0f);
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    const pu_kernels *k;
    float *out, *probs, *dq, *dk, *dv;
    const float *q, *kk, *v, *dout, *cprobs;
    const int32_t *seg;
    int64_t B, T, H, Hkv, D;
    float scale;
} attn_ctx;

/* Per (b, h): S = Q_h K_g^T (T, T) by the GEMM (the upper triangle is
 * computed and discarded: 2x the causal flops, but GEMM speed), masked
 * softmax by rows, O_h = P V_g. */
static void attn_fwd_worker(void *vc, int ith, int nth) {
    const attn_ctx *c = vc;
    int64_t T = c->T, H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv, lo, hi;
    pu_split(c->B * H, ith, nth, &lo, &hi);
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t b = bh / H, h = bh % H, g = h / G;
        float *P = c->probs + bh * T * T;
        const float *q = c->q + (b * T * H + h) * D, *kk = c->kk + (b * T * Hkv + g) * D;
        const float *v = c->v + (b * T * Hkv + g) * D;
        pu_top_gemm(NULL, P, T, q, H * D, 1, kk, 1, Hkv * D, T, T, D, false);
        const int32_t *sg = c->seg ? c->seg + b * T : NULL;
        for (int64_t t = 0; t < T; t++) {
            float *p = P + t * T;
            int64_t n = t + 1;
            if (sg) {
                for (int64_t j = 0; j < n; j++)
                    p[j] = sg[j] == sg[t] ? p[j] * c->scale : -INFINITY;
            } else
                c->k->scale(p, c->scale, n);
            float mx = c->k->vmax(p, n);
            float sum = c->k->exp_sum(p, n, mx);
            if (sg) /* exactly 0 outside the document */
                for (int64_t j = 0; j < n; j++)
                    if (sg[j] != sg[t])
                        p[j] = 0.0f;
            c->k->scale(p, 1.0f / sum, n);
            memset(p + n, 0, (size_t)(T - n) * sizeof(float));
        }
        pu_top_gemm(NULL, c->out + (b * T * H + h) * D, H * D, P, T, 1, v, Hkv * D, 1, T, D, T,
                    false);
    }
}

void pu_top_attn_fwd(pu_pool *pool, const pu_kernels *k, float *out, float *probs, const float *q,
                     const float *kk, const float *v, const int32_t *seg, int64_t B, int64_t T,
                     int64_t H, int64_t Hkv, int64_t D) {
    attn_ctx c = {.k = k,
                  .out = out,
                  .probs = probs,
                  .q = q,
                  .kk = kk,
                  .v = v,
                  .seg = seg,
                  .B = B,
                  .T = T,
                  .H = H,
                  .Hkv = Hkv,
                  .D = D,
                  .scale = 1.0f / sqrtf((float)D)};
    pu_pool_run(pool, attn_fwd_worker, &c);
}

/* Per (b, g), heads of the group in order: dP = dO_h V_g^T, dS = P * (dP -
 * rowsum(P * dP)) * scale, dQ_h += dS K_g, dK_g += dS^T Q_h, dV_g += P^T dO_h. */
static void attn_bwd_worker(void *vc, int ith, int nth) {
    const attn_ctx *c = vc;
    int64_t T = c->T, H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv, lo, hi;
    pu_split(c->B * Hkv, ith, nth, &lo, &hi);
    if (lo >= hi)
        return;
    float *dS = pu_malloc((size_t)(T * T) * sizeof(float));
    for (int64_t bg = lo; bg < hi; bg++) {
        int64_t b = bg / Hkv, g = bg % Hkv;
        const float *kk = c->kk + (b * T * Hkv + g) * D, *v = c->v + (b * T * Hkv + g) * D;
        float *dk = c->dk + (b * T * Hkv + g) * D, *dv = c->dv + (b * T * Hkv + g) * D;
        for (int64_t h = g * G; h < (g + 1) * G; h++) {
            const float *P = c->cprobs + (b * H + h) * T * T;
            const float *dO = c->dout + (b * T * H + h) * D, *q = c->q + (b * T * H + h) * D;
            float *dq = c->dq + (b * T * H + h) * D;
            pu_top_gemm(NULL, dS, T, dO, H * D, 1, v, 1, Hkv * D, T, T, D, false);
            for (int64_t t = 0; t < T; t++) {
                const float *p = P + t * T;
                float *ds = dS + t * T;
                double sum = 0;
                for (int64_t j = 0; j <= t; j++)
                    sum += (double)p[j] * ds[j];
                float sm = (float)sum;
                for (int64_t j = 0; j <= t; j++)
                    ds[j] = p[j] * (ds[j] - sm) * c->scale;
                memset(ds + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
            }
            pu_top_gemm(NULL, dq, H * D, dS, T, 1, kk, Hkv * D, 1, T, D, T, true);
            pu_top_gemm(NULL, dk, Hkv * D, dS, 1, T, q, H * D, 1, T, D, T, true);
            pu_top_gemm(NULL, dv, Hkv * D, P, 1, T, dO, H * D, 1, T, D, T, true);
        }
    }
    pu_free(dS);
}

void pu_top_attn_bwd(pu_pool *pool, const pu_kernels *k, float *dq, float *dk, float *dv,
                     const float *dout, const float *probs, const float *q, const float *kk,
                     const float *v, int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D) {
    attn_ctx c = {.k = k,
                  .dq = dq,
                  .dk = dk,
                  .dv = dv,
                  .dout = dout,
                  .cprobs = probs,
                  .q = q,
                  .kk = kk,
                  .v = v,
                  .B = B,
                  .T = T,
                  .H = H,
                  .Hkv = Hkv,
                  .D = D,
                  .scale = 1.0f / sqrtf((float)D)};
    pu_pool_run(pool, attn_bwd_worker, &c);
}

/* ---------------------------------------------------------------- swiglu */

typedef struct {
    float *out, *dg, *du;
    const float *g, *u, *dout;
    int64_t n;
} swiglu_ctx;

static void swiglu_fwd_worker(void *vc, int ith, int nth) {
    const swiglu_ctx *c = vc;
    int64_t lo, hi;
    pu_split(c->n, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float g = c->g[i];
        c->out[i] = g / (1.0f + expf(-g)) * c->u[i];
    }
}

static void swiglu_bwd_worker(void *vc, int ith, int nth) {
    const swiglu_ctx *c = vc;
    int64_t lo, hi;
    pu_split(c->n, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float g = c->g[i], s = 1.0f / (1.0f + expf(-g)), d = c->dout[i];
        c->dg[i] += d * c->u[i] * (s * (1.0f + g * (1.0f - s)));
        c->du[i] += d * (g * s);
    }
}

void pu_top_swiglu_fwd(pu_pool *pool, float *out, const float *g, const float *u, int64_t n) {
    swiglu_ctx c = {.out = out, .g = g, .u = u, .n = n};
    if (n < 65536)
        swiglu_fwd_worker(&c, 0, 1);
    else
        pu_pool_run(pool, swiglu_fwd_worker, &c);
}

void pu_top_swiglu_bwd(pu_pool *pool, float *dg, float *du, const float *dout, const float *g,
                       const float *u, int64_t n) {
    swiglu_ctx c = {.dg = dg, .du = du, .dout = dout, .g = g, .u = u, .n = n};
    if (n < 65536)
        swiglu_bwd_worker(&c, 0, 1);
    else
        pu_pool_run(pool, swiglu_bwd_worker, &c);
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
    const pu_kernels *k;
    float *logits, *lse, *losses;
    const float *clogits, *clse;
    const int32_t *targets;
    int64_t N, V;
    float scale;
    const float *rscale; /* per-row scales or NULL */
} xent_ctx;

/* lse = max + log(sum exp(l - max)) with the SIMD exp of the kernel table on
 * a scratch copy of the row (the logits stay for the backward pass) */
static void xent_fwd_worker(void *vc, int ith, int nth) {
    const xent_ctx *c = vc;
    int64_t lo, hi, V = c->V;
    pu_split(c->N, ith, nth, &lo, &hi);
    float *row = pu_malloc((size_t)V * sizeof(float));
    for (int64_t n = lo; n < hi; n++) {
        int32_t tg = c->targets[n];
        if (tg < 0) {
            c->lse[n] = 0;
            c->losses[n] = 0;
            continue;
        }
        const float *l = c->clogits + n * V;
        float mx = c->k->vmax(l, V);
        memcpy(row, l, (size_t)V * sizeof(float));
        double lse = (double)mx + log((double)c->k->exp_sum(row, V, mx));
        c->lse[n] = (float)lse;
        c->losses[n] = (float)(lse - (double)l[tg]);
    }
    pu_free(row);
}

double pu_top_xent_fwd(pu_pool *pool, const pu_kernels *k, float *lse, float *losses,
                       const float *logits, const int32_t *targets, int64_t N, int64_t V) {
    xent_ctx c = {.k = k,
                  .lse = lse,
                  .losses = losses,
                  .clogits = logits,
                  .targets = targets,
                  .N = N,
                  .V = V};
    pu_pool_run(pool, xent_fwd_worker, &c);
    double sum = 0;
    for (int64_t n = 0; n < N; n++)
        sum += losses[n];
    return sum;
}

static void xent_bwd_worker(void *vc, int ith, int nth) {
    const xent_ctx *c = vc;
    int64_t lo, hi, V = c->V;
    pu_split(c->N, ith, nth, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        float *l = c->logits + n * V;
        int32_t tg = c->targets[n];
        float sc = c->rscale ? c->rscale[n] : c->scale;
        if (tg < 0 || (c->rscale && sc == 0.0f)) {
            memset(l, 0, (size_t)V * sizeof(float));
            continue;
        }
        c->k->exp_sum(l, V, c->clse[n]); /* l = exp(l - lse) = softmax */
        c->k->scale(l, sc, V);
        l[tg] -= sc;
    }
}

void pu_top_xent_bwd(pu_pool *pool, const pu_kernels *k, float *logits, const float *lse,
                     const int32_t *targets, int64_t N, int64_t V, float scale) {
    xent_ctx c = {
        .k = k, .logits = logits, .clse = lse, .targets = targets, .N = N, .V = V, .scale = scale};
    pu_pool_run(pool, xent_bwd_worker, &c);
}

void pu_top_xent_bwd_rows(pu_pool *pool, const pu_kernels *k, float *logits, const float *lse,
                          const int32_t *targets, int64_t N, int64_t V, const float *rscale) {
    xent_ctx c = {.k = k,
                  .logits = logits,
                  .clse = lse,
                  .targets = targets,
                  .N = N,
                  .V = V,
                  .rscale = rscale};
    pu_pool_run(pool, xent_bwd_worker, &c);
}
