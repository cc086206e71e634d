/*
 * attn_flash.c — tiled causal attention with online softmax (forward) and
 * recomputation (backward); see attn_flash.h. Holds the scalar reference of
 * the tile GEMM, the run-time choice of its ISA variant, and the switch
 * between this attention and the naive one.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/attn_flash.h"

/* ---------------------------------------------------------------- tile GEMM */

void pu_fa_gemm_ref(float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,
                    int64_t m, int64_t n, int64_t K, bool accumulate) {
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        const float *ai = a + i * lda;
        for (int64_t j = 0; j < n; j++) {
            float acc = accumulate ? ci[j] : 0.0f;
            for (int64_t p = 0; p < K; p++)
                acc = fmaf(ai[p], b[p * ldb + j], acc);
            ci[j] = acc;
        }
    }
}

pu_fa_gemm_fn pu_fa_gemm_for(pu_simd level) {
    switch (level) {
    case PU_SIMD_AVX512: return pu_fa_gemm_avx512;
    case PU_SIMD_AVX2: return pu_fa_gemm_avx2;
    case PU_SIMD_REF: break;
    }
    return pu_fa_gemm_ref;
}

/* ---------------------------------------------------------------- helpers */

#define BQ PU_FA_BQ
#define BK PU_FA_BK

static int64_t round16(int64_t n) {
    return (n + 15) & ~(int64_t)15;
}

/* floats per thread: forward Kt (D, BK), S (BQ, BK), O (BQ, D), m, l (BQ);
 * backward Kt, Vt (D, BK), P, dS (BQ, BK), Pt, dSt (BK, BQ), Dvec (T) */
static int64_t ws_per_thread(int64_t T, int64_t D) {
    int64_t fwd = round16(D * BK) + round16(BQ * BK) + round16(BQ * D) + 2 * round16(BQ);
    int64_t bwd = 2 * round16(D * BK) + 4 * round16(BQ * BK) + round16(T);
    return fwd > bwd ? fwd : bwd;
}

int64_t pu_top_attn_flash_ws_floats(int nth, int64_t T, int64_t D) {
    return (int64_t)(nth < 1 ? 1 : nth) * ws_per_thread(T, D);
}

/* dst (D, n) = rows src[r*ld + d] for r < n */
static void transpose_rows(float *dst, const float *src, int64_t ld, int64_t n, int64_t D) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t d = 0; d < D; d++)
            dst[d * n + r] = src[r * ld + d];
}

/* dst (n, m) = src (m, n) with row stride lds */
static void transpose_tile(float *dst, const float *src, int64_t lds, int64_t m, int64_t n) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            dst[j * m + i] = src[i * lds + j];
}

/* any pair (i in [i0, i0+bq), j in [j0, j0+bk)) with j <= i and seg equal */
static bool tile_live(const int32_t *sg, int64_t i0, int64_t bq, int64_t j0, int64_t bk) {
    if (!sg)
        return true;
    for (int64_t r = 0; r < bq; r++) {
        int64_t i = i0 + r, jn = i - j0 + 1 < bk ? i - j0 + 1 : bk;
        for (int64_t c = 0; c < jn; c++)
            if (sg[j0 + c] == sg[i])
                return true;
    }
    return false;
}

/* Row r of a score tile for query i against keys j0.. : scale, mask (causal,
 * documents) to -inf; returns the count of causal columns (0: row dead). */
static int64_t mask_row(float *s, int64_t i, int64_t j0, int64_t bk, const int32_t *sg,
                        float scale) {
    int64_t nv = i - j0 + 1 < bk ? i - j0 + 1 : bk;
    if (nv <= 0)
        return 0;
    for (int64_t c = 0; c < nv; c++)
        s[c] = (!sg || sg[j0 + c] == sg[i]) ? s[c] * scale : -INFINITY;
    return nv;
}

typedef struct {
    const pu_kernels *k;
    pu_fa_gemm_fn gemm;
    float *out, *lse, *dq, *dk, *dv;
    const float *q, *kk, *v, *dout, *o, *clse;
    const int32_t *seg;
    int64_t B, T, H, Hkv, D, per;
    float scale;
    float *ws;
} fa_ctx;

/* ---------------------------------------------------------------- forward */

static void fa_fwd_worker(void *vc, int ith, int nth) {
    const fa_ctx *c = vc;
    int64_t T = c->T, H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv, lo, hi;
    int64_t ldq = H * D, ldk = Hkv * D;
    pu_split(c->B * H, ith, nth, &lo, &hi);
    float *Kt = c->ws + (int64_t)ith * c->per;
    float *S = Kt + round16(D * BK), *O = S + round16(BQ * BK), *mrow = O + round16(BQ * D);
    float *lrow = mrow + round16(BQ);
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t b = bh / H, h = bh % H, g = h / G;
        const float *q = c->q + (b * T * H + h) * D, *kk = c->kk + (b * T * Hkv + g) * D;
        const float *v = c->v + (b * T * Hkv + g) * D;
        float *out = c->out + (b * T * H + h) * D, *lse = c->lse + bh * T;
        const int32_t *sg = c->seg ? c->seg + b * T : NULL;
        for (int64_t i0 = 0; i0 < T; i0 += BQ) {
            int64_t bq = T - i0 < BQ ? T - i0 : BQ;
            for (int64_t r = 0; r < bq; r++) {
                mrow[r] = -INFINITY;
                lrow[r] = 0.0f;
            }
            memset(O, 0, (size_t)(bq * D) * sizeof(float));
            for (int64_t j0 = 0; j0 < i0 + bq; j0 += BK) {
                int64_t bk = i0 + bq - j0 < BK ? i0 + bq - j0 : BK;
                if (!tile_live(sg, i0, bq, j0, bk))
                    continue;
                transpose_rows(Kt, kk + j0 * ldk, ldk, bk, D);
                c->gemm(S, BK, q + i0 * ldq, ldq, Kt, bk, bq, bk, D, false);
                for (int64_t r = 0; r < bq; r++) {
                    float *s = S + r * BK;
                    int64_t nv = mask_row(s, i0 + r, j0, bk, sg, c->scale);
                    float mx = nv > 0 ? c->k->vmax(s, nv) : -INFINITY;
                    if (mx == -INFINITY) { /* nothing visible in this tile */
                        memset(s, 0, (size_t)bk * sizeof(float));
                        continue;
                    }
                    float mnew = mrow[r] > mx ? mrow[r] : mx;
                    float sum = c->k->exp_sum(s, nv, mnew);
                    memset(s + nv, 0, (size_t)(bk - nv) * sizeof(float));
                    if (mrow[r] != mnew) {
                        float alpha = expf(mrow[r] - mnew); /* 0 when m was -inf */
                        lrow[r] *= alpha;
                        c->k->scale(O + r * D, alpha, D);
                    }
                    lrow[r] += sum;
                    mrow[r] = mnew;
                }
                c->gemm(O, D, S, BK, v + j0 * ldk, ldk, bq, D, bk, true);
            }
            for (int64_t r = 0; r < bq; r++) {
                /* every row sees at least itself: l >= 1 */
                float inv = 1.0f / lrow[r];
                float *dst = out + (i0 + r) * ldq;
                for (int64_t d = 0; d < D; d++)
                    dst[d] = O[r * D + d] * inv;
                lse[i0 + r] = mrow[r] + logf(lrow[r]);
            }
        }
    }
}

static float *ws_take(pu_pool *pool, pu_tws *ws, int64_t T, int64_t D, int64_t *per) {
    int nth = pool ? pu_pool_size(pool) : 1;
    *per = ws_per_thread(T, D);
    /* +16: the slab is aligned to 64 bytes below */
    float *p = pu_tws_get(ws, (size_t)pu_top_attn_flash_ws_floats(nth, T, D) + 16);
    uintptr_t u = (uintptr_t)p;
    return (float *)((u + 63) & ~(uintptr_t)63);
}

void pu_top_attn_flash_fwd(pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *out, float *lse,
                           const float *q, const float *kk, const float *v, const int32_t *seg,
                           int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D) {
    fa_ctx c = {.k = k,
                .gemm = pu_fa_gemm_for(k->level),
                .out = out,
                .lse = lse,
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
    c.ws = ws_take(pool, ws, T, D, &c.per);
    pu_pool_run(pool, fa_fwd_worker, &c);
}

/* ---------------------------------------------------------------- backward */

static void fa_bwd_worker(void *vc, int ith, int nth) {
    const fa_ctx *c = vc;
    int64_t T = c->T, H = c->H, Hkv = c->Hkv, D = c->D, G = H / Hkv, lo, hi;
    int64_t ldq = H * D, ldk = Hkv * D;
    pu_split(c->B * Hkv, ith, nth, &lo, &hi);
    float *Kt = c->ws + (int64_t)ith * c->per;
    float *Vt = Kt + round16(D * BK), *P = Vt + round16(D * BK), *dS = P + round16(BQ * BK);
    float *Pt = dS + round16(BQ * BK), *dSt = Pt + round16(BQ * BK), *Dv = dSt + round16(BQ * BK);
    for (int64_t bg = lo; bg < hi; bg++) {
        int64_t b = bg / Hkv, g = bg % Hkv;
        const float *kk = c->kk + (b * T * Hkv + g) * D, *v = c->v + (b * T * Hkv + g) * D;
        float *dk = c->dk + (b * T * Hkv + g) * D, *dv = c->dv + (b * T * Hkv + g) * D;
        const int32_t *sg = c->seg ? c->seg + b * T : NULL;
        for (int64_t h = g * G; h < (g + 1) * G; h++) {
            const float *q = c->q + (b * T * H + h) * D, *dO = c->dout + (b * T * H + h) * D;
            const float *o = c->o + (b * T * H + h) * D, *lse = c->clse + (b * H + h) * T;
            float *dq = c->dq + (b * T * H + h) * D;
            for (int64_t i = 0; i < T; i++)
                Dv[i] = c->k->dot(dO + i * ldq, o + i * ldq, D);
            for (int64_t j0 = 0; j0 < T; j0 += BK) {
                int64_t bk = T - j0 < BK ? T - j0 : BK;
                transpose_rows(Kt, kk + j0 * ldk, ldk, bk, D);
                transpose_rows(Vt, v + j0 * ldk, ldk, bk, D);
                for (int64_t i0 = j0 / BQ * BQ; i0 < T; i0 += BQ) {
                    int64_t bq = T - i0 < BQ ? T - i0 : BQ;
                    if (!tile_live(sg, i0, bq, j0, bk))
                        continue;
                    c->gemm(P, BK, q + i0 * ldq, ldq, Kt, bk, bq, bk, D, false);
                    c->gemm(dS, BK, dO + i0 * ldq, ldq, Vt, bk, bq, bk, D, false);
                    for (int64_t r = 0; r < bq; r++) {
                        float *p = P + r * BK, *ds = dS + r * BK;
                        int64_t nv = mask_row(p, i0 + r, j0, bk, sg, c->scale);
                        if (nv > 0)
                            c->k->exp_sum(p, nv, lse[i0 + r]);
                        memset(p + nv, 0, (size_t)(bk - nv) * sizeof(float));
                        float di = Dv[i0 + r];
                        for (int64_t cc = 0; cc < bk; cc++)
                            ds[cc] = p[cc] * (ds[cc] - di) * c->scale;
                    }
                    transpose_tile(Pt, P, BK, bq, bk);
                    c->gemm(dv + j0 * ldk, ldk, Pt, bq, dO + i0 * ldq, ldq, bk, D, bq, true);
                    c->gemm(dq + i0 * ldq, ldq, dS, BK, kk + j0 * ldk, ldk, bq, D, bk, true);
                    transpose_tile(dSt, dS, BK, bq, bk);
                    c->gemm(dk + j0 * ldk, ldk, dSt, bq, q + i0 * ldq, ldq, bk, D, bq, true);
                }
            }
        }
    }
}

void pu_top_attn_flash_bwd(pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *dq, float *dk,
                           float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *kk, const float *v, const int32_t *seg,
                           int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D) {
    fa_ctx c = {.k = k,
                .gemm = pu_fa_gemm_for(k->level),
                .dq = dq,
                .dk = dk,
                .dv = dv,
                .dout = dout,
                .o = out,
                .clse = lse,
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
    c.ws = ws_take(pool, ws, T, D, &c.per);
    pu_pool_run(pool, fa_bwd_worker, &c);
}

/* ---------------------------------------------------------------- switch */

bool pu_top_attn_kind_parse(const char *s, pu_attn_kind *out) {
    if (s && !strcmp(s, "naive")) {
        *out = PU_ATTN_NAIVE;
        return true;
    }
    if (s && !strcmp(s, "flash")) {
        *out = PU_ATTN_FLASH;
        return true;
    }
    return false;
}

const char *pu_top_attn_kind_name(pu_attn_kind a) {
    return a == PU_ATTN_FLASH ? "flash" : "naive";
}

pu_attn_kind pu_top_attn_kind_default(void) {
    const char *e = getenv("PUYU_ATTN");
    pu_attn_kind a = PU_ATTN_NAIVE;
    if (e && *e && !pu_top_attn_kind_parse(e, &a))
        pu_log_warn("PUYU_ATTN='%s' unknown (expected naive|flash); using naive", e);
    return a;
}

int64_t pu_top_attn_saved_floats(pu_attn_kind a, int64_t B, int64_t H, int64_t T) {
    return a == PU_ATTN_FLASH ? B * H * T : B * H * T * T;
}

void pu_top_attn_sel_fwd(pu_attn_kind a, pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *out,
                         float *saved, const float *q, const float *kk, const float *v,
                         const int32_t *seg, int64_t B, int64_t T, int64_t H, int64_t Hkv,
                         int64_t D) {
    if (a == PU_ATTN_FLASH)
        pu_top_attn_flash_fwd(pool, k, ws, out, saved, q, kk, v, seg, B, T, H, Hkv, D);
    else
        pu_top_attn_fwd(pool, k, out, saved, q, kk, v, seg, B, T, H, Hkv, D);
}

void pu_top_attn_sel_bwd(pu_attn_kind a, pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *dq,
                         float *dk, float *dv, const float *dout, const float *out,
                         const float *saved, const float *q, const float *kk, const float *v,
                         const int32_t *seg, int64_t B, int64_t T, int64_t H, int64_t Hkv,
                         int64_t D) {
    if (a == PU_ATTN_FLASH)
        pu_top_attn_flash_bwd(pool, k, ws, dq, dk, dv, dout, out, saved, q, kk, v, seg, B, T, H,
                              Hkv, D);
    else /* the saved probabilities already carry the masks */
        pu_top_attn_bwd(pool, k, dq, dk, dv, dout, saved, q, kk, v, B, T, H, Hkv, D);
}
