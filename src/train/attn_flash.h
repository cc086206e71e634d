/*
 * attn_flash.h — memory-efficient causal attention for training
 * (FlashAttention-2's algorithm on CPU tiles), and the switch that selects
 * it or the naive pu_top_attn_fwd/bwd (train_impl.h) for the training model.
 *
 * Forward, per (b, head), query tiles of FA_BQ rows against key tiles of
 * FA_BK columns (causal: only tiles left of the diagonal), online softmax:
 * running row max m and sum l, the output tile rescaled by exp(m_old - m_new).
 * Saved: the output and lse (B, H, T) = m + log(l) — O(T) instead of the
 * (B, H, T, T) probabilities. Backward, per (b, kv head), heads of the group
 * in order, key tiles outer, query tiles inner: P = exp(S - lse) is
 * recomputed tile by tile, Dvec = rowsum(dO * O), dS = P * (dP - Dvec) * scale.
 * Every output element is produced by one thread in a fixed order: results
 * are bitwise identical for any thread count.
 *
 * Scratch comes from a pu_tws (the only memory these functions ask for):
 * pu_top_attn_flash_ws_floats(nth, T, D) floats, nth = pool size.
 * The tile products run on a small GEMM with one kernel per ISA
 * (attn_flash.c scalar reference, attn_flash_avx2.c, attn_flash_avx512.c),
 * chosen by the pu_kernels level passed in; every level sums each dot
 * product over its inner index in order with one fused multiply-add per
 * term, so the levels differ only in exp.
 */
#ifndef PU_ATTN_FLASH_H
#define PU_ATTN_FLASH_H

#include "train/train_impl.h"

#define PU_FA_BQ 64 /* query rows per tile */
#define PU_FA_BK 64 /* key columns per tile */

/* q (B*T, H, D), k, v (B*T, Hkv, D) -> out (B*T, H, D) (overwritten), lse
 * (B, H, T) (overwritten). seg (B*T) optional: token t attends only to keys
 * j <= t with seg[j] == seg[t]. H % Hkv == 0. */
void pu_top_attn_flash_fwd(pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *out, float *lse,
                           const float *q, const float *kk, const float *v, const int32_t *seg,
                           int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D);
/* dq (B*T, H, D) +=, dk, dv (B*T, Hkv, D) += ; out and lse from the forward
 * with the same q, k, v, seg. */
void pu_top_attn_flash_bwd(pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *dq, float *dk,
                           float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *kk, const float *v, const int32_t *seg,
                           int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D);
/* floats of scratch the two functions take from ws for nth threads */
int64_t pu_top_attn_flash_ws_floats(int nth, int64_t T, int64_t D);

/* C (m, n) (+)= A (m, K) · B (K, n), rows contiguous with strides lda, ldb,
 * ldc; c[i][j] = fma(a[i][K-1], b[K-1][j], ... fma(a[i][0], b[0][j], c0)),
 * c0 = accumulate ? c[i][j] : 0. One per level, identical results. */
typedef void (*pu_fa_gemm_fn)(float *c, int64_t ldc, const float *a, int64_t lda, const float *b,
                              int64_t ldb, int64_t m, int64_t n, int64_t K, bool accumulate);
void pu_fa_gemm_ref(float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,
                    int64_t m, int64_t n, int64_t K, bool accumulate);
void pu_fa_gemm_avx2(float *c, int64_t ldc, const float *a, int64_t lda, const float *b,
                     int64_t ldb, int64_t m, int64_t n, int64_t K, bool accumulate);
void pu_fa_gemm_avx512(float *c, int64_t ldc, const float *a, int64_t lda, const float *b,
                       int64_t ldb, int64_t m, int64_t n, int64_t K, bool accumulate);
pu_fa_gemm_fn pu_fa_gemm_for(pu_simd level);

/* ---------------------------------------------------------------- switch */

/* Which attention the training model runs. NAIVE saves the probabilities
 * (B, H, T, T) per layer; FLASH saves lse (B, H, T). */
typedef enum { PU_ATTN_NAIVE = 0, PU_ATTN_FLASH = 1 } pu_attn_kind;

/* PUYU_ATTN=naive|flash (unset: naive; unknown: naive with a warning) */
pu_attn_kind pu_top_attn_kind_default(void);
/* parse "naive" / "flash"; false if neither */
bool pu_top_attn_kind_parse(const char *s, pu_attn_kind *out);
const char *pu_top_attn_kind_name(pu_attn_kind a);
/* floats saved per layer by the forward for the backward (probs or lse) */
int64_t pu_top_attn_saved_floats(pu_attn_kind a, int64_t B, int64_t H, int64_t T);
/* the forward/backward pair of `a`, one signature for both: saved is probs
 * (naive) or lse (flash); out is the forward output (read by flash's bwd). */
void pu_top_attn_sel_fwd(pu_attn_kind a, pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *out,
                         float *saved, const float *q, const float *kk, const float *v,
                         const int32_t *seg, int64_t B, int64_t T, int64_t H, int64_t Hkv,
                         int64_t D);
void pu_top_attn_sel_bwd(pu_attn_kind a, pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *dq,
                         float *dk, float *dv, const float *dout, const float *out,
                         const float *saved, const float *q, const float *kk, const float *v,
                         const int32_t *seg, int64_t B, int64_t T, int64_t H, int64_t Hkv,
                         int64_t D);

#endif
