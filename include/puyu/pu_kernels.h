/*
 * pu_kernels.h — math ops with a scalar reference and SIMD variants.
 *
 * Owns: the dtype enum, the per-ISA kernel table (pu_kernels: scalar `ref`,
 * `avx2`, `avx512`, picked once at run time by pu_cpu_simd_active(), i.e.
 * PUYU_SIMD=ref|avx2|avx512 or the best the CPU has), and the threaded ops
 * built on it (pu_op_*), which split work over a pu_pool.
 *
 * Conventions: row-major; a weight matrix W is (N, K) as PyTorch stores
 * nn.Linear (out_features, in_features); activations are (T, K). Shapes are
 * given in comments with the letters T (tokens), C (hidden), H / Hkv (query /
 * kv heads), D (head dim), F (ffn), V (vocab), N, K (generic out / in).
 * All ops compute in fp32; weights may be F32, BF16 or F16, or one of ggml's
 * block-quantized types, whose matmuls quantize the activations per block of
 * 32 to int8 and run exact int8·int8 block dots with fp32 scales (scalar
 * reference in quant.c, AVX2 in quant_avx2.c with 8-row prefill panels in
 * quant_panel.h; the AVX-512 table runs those panels with vpdpbusd where the
 * CPU has AVX512-VNNI (quant_vnni_avx512.c) and the AVX2 kernels otherwise —
 * no AMX quantized kernel exists yet).
 *
 * Thread-safety: the tables are immutable after first use; pu_op_* may be
 * called from one thread per pool at a time.
 */
#ifndef PU_KERNELS_H
#define PU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"

typedef enum {
    PU_DTYPE_F32 = 0,
    PU_DTYPE_F16 = 1,
    PU_DTYPE_BF16 = 2,
    /* ggml's block-quantized types, byte layouts exactly as ggml-common.h
     * (block size / bytes per block): Q8_0 32/34, Q4_0 32/18, Q4_1 32/20,
     * Q5_0 32/22, Q5_1 32/24, and the 256-element super-blocks Q4_K 256/144,
     * Q5_K 256/176, Q6_K 256/210. A row of K elements is K / block blocks
     * (K must be a multiple of the block size). See src/kernels/quant_impl.h. */
    PU_DTYPE_Q8_0 = 3,
    PU_DTYPE_Q4_0 = 4,
    PU_DTYPE_Q4_1 = 5,
    PU_DTYPE_Q5_0 = 6,
    PU_DTYPE_Q5_1 = 7,
    PU_DTYPE_Q4_K = 8,
    PU_DTYPE_Q5_K = 9,
    PU_DTYPE_Q6_K = 10,
    PU_DTYPE_COUNT
} pu_dtype;

const char *pu_dtype_name(pu_dtype t); /* "F32", "F16", "BF16", "Q8_0", ..., "Q6_K" */
/* bytes per element of the float dtypes; 0 for block-quantized dtypes (use
 * pu_dtype_nbytes) */
size_t pu_dtype_size(pu_dtype t);
bool pu_dtype_is_quant(pu_dtype t);
int64_t pu_dtype_block(pu_dtype t);       /* elements per block (1 for float dtypes) */
int64_t pu_dtype_block_bytes(pu_dtype t); /* bytes per block (element size for floats) */
/* bytes of n elements (n a multiple of the block size; -1 if it is not) */
int64_t pu_dtype_nbytes(pu_dtype t, int64_t n);
/* Parse "q8_0", "Q4_K", "f16", ... (case-insensitive); false if unknown. */
bool pu_dtype_parse(const char *s, pu_dtype *out);
/* ggml type id of a dtype (F32 0, F16 1, Q4_0 2, ..., BF16 30) and back */
uint32_t pu_dtype_to_ggml(pu_dtype t);
bool pu_dtype_from_ggml(uint32_t ggml_type, pu_dtype *out);

/* Quantize n floats (a multiple of the block size) into dst with ggml's
 * reference quantizers (quantize_row_*_ref: Q8_0/Q4_0/.../Q5_1 round as
 * ggml; Q4_K/Q5_K use make_qkx2 searches, Q6_K make_qx). F32/F16/BF16
 * convert. */
void pu_quantize_row(pu_dtype t, void *dst, const float *src, int64_t n);

/* Activations quantized for the int8 dot products: per block of 32 values
 * d = max|x| / 127, q = round-to-nearest-even(x / d) (int8), s = sum(q).
 * Row t of a (T, K) activation: qs + t*K, d + t*K/32, s + t*K/32. */
#define PU_QACT_BLOCK 32
typedef struct pu_qact {
    const int8_t *qs; /* (T, K) */
    const float *d;   /* (T, K/32) */
    const int16_t *s; /* (T, K/32) */
} pu_qact;

/* One ISA's kernels. Every function pointer is non-NULL in every table, except
 * qmatmul[] of the float dtypes. */
typedef struct pu_kernels {
    pu_simd level;
    const char *name;
    /* y[t*ldy + n] = sum_k x[t*ldx + k] * W[n, k]   for t in [0,T), n in [n0,n1).
     * W: (N, K) of the table index's dtype, row stride K elements. Overwrites y. */
    void (*matmul[PU_DTYPE_COUNT])(float *y, int64_t ldy, const float *x, int64_t ldx,
                                   const void *w, int64_t T, int64_t n0, int64_t n1, int64_t K);
    /* Quantized weights (pu_dtype_is_quant; NULL for float dtypes): same as
     * matmul, on activations already quantized (pu_qact, K % 32 == 0). */
    void (*qmatmul[PU_DTYPE_COUNT])(float *y, int64_t ldy, const pu_qact *x, const void *w,
                                    int64_t T, int64_t n0, int64_t n1, int64_t K);
    /* quantize one activation row x (K, K % 32 == 0) into qs (K), d, s (K/32) */
    void (*quantize_act)(int8_t *qs, float *d, int16_t *s, const float *x, int64_t K);
    /* dst[i] = float(src[i]) for i < n (src in the table index's dtype; for
     * quantized dtypes n is a multiple of the block size) */
    void (*to_f32[PU_DTYPE_COUNT])(float *dst, const void *src, int64_t n);
    /* y = x * rsqrt(mean(x^2) + eps) * w   (C) ; y may alias x */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t C, float eps);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);       /* y += a*x */
    void (*scale)(float *y, float a, int64_t n);                      /* y *= a */
    void (*add)(float *y, const float *a, const float *b, int64_t n); /* y = a+b (may alias) */
    /* out = silu(gate) * up   (n) ; out may alias gate or up */
    void (*swiglu)(float *out, const float *gate, const float *up, int64_t n);
    /* In place: x = exp(x - max) / sum; returns nothing. (n) */
    void (*softmax)(float *x, int64_t n);
    /* max over n floats */
    float (*vmax)(const float *x, int64_t n);
    /* x[i] = exp(x[i] - m) in place; returns the sum of the new x (n). Used by
     * the online softmax of pu_op_attention. */
    float (*exp_sum)(float *x, int64_t n, float m);
} pu_kernels;

/* Table for the active level (PUYU_SIMD or best). Never NULL. */
const pu_kernels *pu_kernels_get(void);
/* Table for one level; NULL if this CPU cannot run it. */
const pu_kernels *pu_kernels_for(pu_simd level);

/* ------------------------------------------------------------------------ */
/* threaded ops (pool may be NULL = single-threaded)                        */

/* Y (T, N) = X (T, K) · W^T, W (N, K) of dtype wt. Splits N over threads
 * (and blocks T for cache reuse). Deterministic for any thread count. */
void pu_op_matmul(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const void *w,
                  pu_dtype wt, int64_t T, int64_t N, int64_t K);
/* Several products of the same X (T, K): Y_i (T, N_i) = X · W_i^T (q, k, v
 * or gate, up). With every W_i block-quantized, X is quantized once and one
 * pool run hands out row chunks of all parts (one barrier instead of n);
 * otherwise one pu_op_matmul per part. Results equal n pu_op_matmul calls
 * bit for bit. */
typedef struct pu_mm_part {
    float *y;
    const void *w;
    pu_dtype dtype;
    int64_t N;
} pu_mm_part;
void pu_op_matmul_multi(pu_pool *pool, const pu_kernels *k, const float *x, int64_t T, int64_t K,
                        const pu_mm_part *parts, int n);

/* Rotary embedding in place on x (T, nh, D) with per-token tables
 * cos/sin (T, D/2). interleaved=false: HF rotate-half (pairs i, i+D/2);
 * interleaved=true: adjacent pairs (2i, 2i+1) as llama.cpp/llama2.c. */
void pu_op_rope(float *x, int64_t T, int64_t nh, int64_t D, const float *cos, const float *sin,
                bool interleaved);

/* Causal GQA attention.
 * q:   (T, H, D)     queries of positions pos0 .. pos0+T-1
 * kc:  (L, Hkv, D)   keys of positions 0 .. pos0+T-1 (L >= pos0+T), row stride ld floats
 * vc:  (L, Hkv, D)   values, same layout
 * out: (T, H, D)
 * Query head h uses kv head h / (H/Hkv). Scale 1/sqrt(D); softmax in fp32.
 * Query t attends to keys 0 .. pos0+t inclusive. */
void pu_op_attention(pu_pool *pool, const pu_kernels *k, float *out, const float *q,
                     const float *kc, const float *vc, int64_t ld, int64_t T, int64_t pos0,
                     int64_t H, int64_t Hkv, int64_t D);

/* y (T, C) = rmsnorm of each row of x with weight w (C). */
void pu_op_rmsnorm(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const float *w,
                   int64_t T, int64_t C, float eps);

/* out (T, F) = silu(gate) * up, elementwise over T*F. */
void pu_op_swiglu(pu_pool *pool, const pu_kernels *k, float *out, const float *gate,
                  const float *up, int64_t n);

/* ------------------------------------------------------------------------ */
/* KV cache element types (pu_session, pu_kv_pages; src/kernels/kv.c)      */
/*                                                                          */
/* F32: as computed. F16: IEEE half, round to nearest even. Q8: LMDeploy's  */
/* quant_policy=8 layout: every (token, kv head) row of D values is         */
/* quantized on its own, asymmetric uint8 with an fp32 (scale, zero) pair:  */
/* zero = min(x), scale = (max(x) - min(x)) / 255, u = rne((x - zero) /     */
/* scale) clamped to [0, 255], x' = u * scale + zero (|x - x'| <= scale/2). */
/* Keys are stored after RoPE. Attention reads the cache directly: the     */
/* score q·k' = scale * (q·u) + zero * sum(q), and the value sum            */
/* Σ p v' = Σ (p scale) u + (Σ p zero) — no dequantized copy.               */

typedef enum { PU_KV_F32 = 0, PU_KV_F16 = 1, PU_KV_Q8 = 2, PU_KV_COUNT } pu_kv_type;

const char *pu_kv_type_name(pu_kv_type t); /* "f32", "f16", "q8" */
/* "f32" | "f16" | "q8" (also "fp32", "fp16", "int8"); false if unknown */
bool pu_kv_type_parse(const char *s, pu_kv_type *out);
size_t pu_kv_elem_size(pu_kv_type t); /* 4, 2, 1 */
/* bytes of one (token, kv head) row of D values incl. its Q8 scale/zero */
int64_t pu_kv_row_bytes(pu_kv_type t, int64_t D);

/* Store one row x (D) as type t: dst (D elements of the type); sz (2 floats,
 * Q8 only: scale, zero; may be NULL otherwise). Scalar, the same on every
 * SIMD level (the stored bytes never depend on PUYU_SIMD). */
void pu_kv_store_row(pu_kv_type t, void *dst, float *sz, const float *x, int64_t D);
/* The inverse (for tests and checks): x (D) = the values attention sees. */
void pu_kv_load_row(pu_kv_type t, float *x, const void *src, const float *sz, int64_t D);

/* A KV cache as attention sees it: row r (a position, or a paged slot)
 * starts at element r * ld of k / v (elements of `type`), kv head g at
 * + g * D; Q8 rows carry (scale, zero) at ksz / vsz + (r * Hkv + g) * 2. */
typedef struct pu_kv_view {
    pu_kv_type type;
    const void *k, *v;
    const float *ksz, *vsz; /* Q8 only */
    int64_t ld;             /* elements per row (normally Hkv * D) */
    int64_t Hkv;
} pu_kv_view;

/* s[j] = scale * (q · K[r0 + j, head g]) for j < nb; qsum = Σ q (read by Q8).
 * F32 is exactly k->dot(q, row, D) * scale. */
void pu_kv_scores(const pu_kernels *k, const pu_kv_view *kv, int64_t r0, int64_t nb, int64_t g,
                  int64_t D, const float *q, float qsum, float scale, float *s);
/* acc (D) += Σ_j p[j] * V[r0 + j, head g] for j < nb (F32: k->axpy per j) */
void pu_kv_accum(const pu_kernels *k, const pu_kv_view *kv, int64_t r0, int64_t nb, int64_t g,
                 int64_t D, const float *p, float *acc);

/* pu_op_attention over any KV type: rows 0 .. pos0+T-1 of kv are the keys
 * and values of positions 0 .. pos0+T-1. F32 views give bitwise the results
 * of pu_op_attention. */
void pu_op_attention_kv(pu_pool *pool, const pu_kernels *k, float *out, const float *q,
                        const pu_kv_view *kv, int64_t T, int64_t pos0, int64_t H, int64_t D);

#endif /* PU_KERNELS_H */
