/*
 * gemm_bf16.h — BF16-in / FP32-accumulate GEMM for mixed-precision training
 * (bf16 copies of weights and activations, fp32 master weights elsewhere).
 *
 *   C (M, N) (+)= A (M, K) · B (K, N),  A(i,p) = a[i*ars + p*acs],
 *   B(p,j) = b[p*brs + j*bcs] (bf16 bits), C fp32 with row stride ldc.
 *
 * The scalar reference defines the result: for every (i, j)
 *   acc = accumulate ? C[i][j] : 0;  for p = 0..K-1: acc = fmaf(A(i,p), B(p,j), acc);
 * one fused multiply-add per term, in order of p (bf16 products are exact in
 * fp32, so every step rounds once). Levels, chosen at run time:
 *   ref         that loop
 *   avx2        packed fp32 panels, 6x16 FMA microkernel; the same chain per
 *               output, so EXACTLY the reference's bits
 *   avx512bf16  vdpbf16ps, 12x32 microkernel on pair-interleaved panels
 *   amx         _tile_dpbf16ps on 2x2 tiles of 16x16 (32x32 blocks, K by 32)
 * The last two add two products per step (the hardware's own order and
 * rounding, denormals flushed): they agree with the reference within the
 * fp32 summation bound 2·K·2^-24·Σ|a·b|, not bitwise. Every level gives the
 * same bits for any thread count (threads split rows of C, K is never split
 * across threads, the K blocking is fixed).
 */
#ifndef PU_GEMM_BF16_H
#define PU_GEMM_BF16_H

#include "train/train_impl.h"

typedef enum {
    PU_BF16_REF = 0,
    PU_BF16_AVX2 = 1,
    PU_BF16_AVX512BF16 = 2,
    PU_BF16_AMX = 3,
    PU_BF16_NLEVELS = 4
} pu_bf16_level;

const char *pu_bf16_level_name(pu_bf16_level l); /* "ref", "avx2", "avx512bf16", "amx" */
/* this CPU (and OS, and for AMX the process permission, requested here) can run it */
bool pu_bf16_level_available(pu_bf16_level l);
pu_bf16_level pu_bf16_level_best(void); /* amx > avx512bf16 > avx2 > ref */
/* PUYU_BF16=ref|avx2|avx512bf16|amx if set and available (else a warning and
 * the best), else the best */
pu_bf16_level pu_bf16_level_active(void);

void pu_bf16_gemm_ref(float *c, int64_t ldc, const uint16_t *a, int64_t ars, int64_t acs,
                      const uint16_t *b, int64_t brs, int64_t bcs, int64_t M, int64_t N, int64_t K,
                      bool accumulate);
/* level must be available (else it falls back to ref); pool may be NULL */
void pu_bf16_gemm(pu_pool *pool, pu_bf16_level level, float *c, int64_t ldc, const uint16_t *a,
                  int64_t ars, int64_t acs, const uint16_t *b, int64_t brs, int64_t bcs, int64_t M,
                  int64_t N, int64_t K, bool accumulate);

/* Test aid: the driver and packing of level avx512bf16 or amx with scalar
 * stand-ins for their microkernels (pairs added even element first, one fmaf
 * each): equals pu_bf16_gemm_ref bitwise on any CPU, which checks those
 * levels' panel layouts and blocking where the instructions are absent. */
void pu_bf16_gemm_emulated(pu_pool *pool, pu_bf16_level level, float *c, int64_t ldc,
                           const uint16_t *a, int64_t ars, int64_t acs, const uint16_t *b,
                           int64_t brs, int64_t bcs, int64_t M, int64_t N, int64_t K,
                           bool accumulate);

/* dst (n) = bf16(src), round to nearest even (threads split the range) */
void pu_bf16_from_f32(pu_pool *pool, uint16_t *dst, const float *src, int64_t n);

/* The three training products (shapes as pu_top_matmul_fwd/bwd):
 * y (N, M) = x (N, K) · w^T, w (M, K)  (overwrites y) */
void pu_bf16_matmul_fwd(pu_pool *pool, pu_bf16_level level, float *y, const uint16_t *x,
                        const uint16_t *w, int64_t N, int64_t M, int64_t K);
/* dx (N, K) += dy (N, M) · w (if dx) ; dw (M, K) += dy^T · x (if dw) */
void pu_bf16_matmul_bwd(pu_pool *pool, pu_bf16_level level, float *dx, float *dw,
                        const uint16_t *dy, const uint16_t *x, const uint16_t *w, int64_t N,
                        int64_t M, int64_t K);

/* ---- mixed-precision linear layers: what the training model calls ----
 * --precision fp32: exactly pu_top_matmul_fwd/bwd (xb, wb unused, may be NULL).
 * --precision bf16: products on bf16 operands with fp32 accumulation at
 * pu_bf16_level_active() (read once): the forward rounds x into xb (N*K,
 * kept for the backward in place of x: half the bytes) and uses wb, the
 * bf16 copy of the fp32 master w (refresh with pu_bf16_from_f32 after every
 * optimizer step); the backward rounds dy into scratch from ws and
 * accumulates dx, dw in fp32. */
typedef enum { PU_PREC_FP32 = 0, PU_PREC_BF16 = 1 } pu_precision;
bool pu_precision_parse(const char *s, pu_precision *out); /* "fp32" | "bf16" */
const char *pu_precision_name(pu_precision p);
/* the level the _mp_ functions run (pu_bf16_level_active(), read once) */
pu_bf16_level pu_top_matmul_mp_level(void);
/* y (N, M) = x (N, K) · w^T (overwrites) */
void pu_top_matmul_mp_fwd(pu_pool *pool, const pu_kernels *k, pu_precision prec, float *y,
                          const float *x, uint16_t *xb, const float *w, const uint16_t *wb,
                          int64_t N, int64_t M, int64_t K);
/* dx (N, K) += dy · w (if dx) ; dw (M, K) += dy^T · x (if dw) */
void pu_top_matmul_mp_bwd(pu_pool *pool, const pu_kernels *k, pu_precision prec, pu_tws *ws,
                          float *dx, float *dw, const float *dy, const float *x, const uint16_t *xb,
                          const float *w, const uint16_t *wb, int64_t N, int64_t M, int64_t K);

/* ---- per-level microkernels (gemm_bf16_avx2.c, _avx512.c, _amx.c) ----
 * c (mr x nr valid of an MR x NR block, row stride ldc) (+)= Ap · Bp over kc
 * (padded) steps; acc: continue from c, else start at 0. */
void pu_bf16_ukernel_avx2(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                          int mr, int nr, bool acc); /* MR 6, NR 16, panels fp32 [kc][MR|NR] */
void pu_bf16_ukernel_avx512bf16(int64_t kc, const uint16_t *ap, const uint16_t *bp, float *c,
                                int64_t ldc, int mr, int nr, bool acc);
/* MR 12, NR 32, panels [kc/2][MR|NR][2] */
void pu_bf16_ukernel_amx(int64_t kc, const uint16_t *ap, const uint16_t *bp, float *c, int64_t ldc,
                         int mr, int nr, bool acc);
/* MR 32, NR 32, kc % 32 == 0; A [kc/32][32 rows][32], B [kc/32][2 col tiles][16 pairs][16][2];
 * the caller has configured the tiles (pu_bf16_amx_begin) on this thread */
void pu_bf16_amx_begin(void);
void pu_bf16_amx_end(void);
/* one 16x16x32 tile product repeated n times in registers (the roofline loop):
 * returns the fp32 sum of the result tile so the loop stays alive */
float pu_bf16_amx_peak_loop(int64_t n);
/* 12 vdpbf16ps chains repeated n times (roofline of the avx512bf16 level) */
float pu_bf16_avx512bf16_peak_loop(int64_t n);

#endif
