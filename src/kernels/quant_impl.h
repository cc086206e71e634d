/*
 * quant_impl.h — private to src/kernels: ggml's block layouts (ggml-common.h)
 * and the unpacking helpers shared by the scalar reference (quant.c), the
 * quantizers (quantize.c) and the SIMD variants (quant_avx2.c).
 *
 * Only declarations and `static inline` helpers (the file is included by
 * ISA-flagged files). Every block size is even and GGUF tensors start at
 * 32-byte boundaries, so the uint16_t halves are 2-byte aligned.
 *
 * Element order inside a block (as ggml's dequantize_row_*):
 *   Q4_0/Q4_1: x[j] = low nibble of qs[j], x[j+16] = high nibble (j < 16)
 *   Q5_0/Q5_1: same, bit 4 of x[j] is bit j of qh (u32 little-endian)
 *   Q8_0:      x[j] = qs[j]
 *   Q4_K: super-block of 8 sub-blocks of 32; chunk c (64 elements) is qs[32c..]:
 *         low nibbles = sub-block 2c, high nibbles = sub-block 2c+1; 6-bit
 *         scale/min of sub-block j packed in scales[12] (get_scale_min_k4)
 *   Q5_K: Q4_K plus bit 4 of element e = bit e/32 of qh[e % 32]
 *   Q6_K: 16 sub-blocks of 16 with int8 scales; half n (128 elements):
 *         ql[64n..], qh[32n..]; value - 32
 */
#ifndef PU_QUANT_IMPL_H
#define PU_QUANT_IMPL_H

#include <string.h>

#include "kernels/kernels_impl.h"

#define QK   32
#define QK_K 256

typedef struct {
    uint16_t d;
    int8_t qs[QK];
} blk_q8_0; /* 34 */
typedef struct {
    uint16_t d;
    uint8_t qs[QK / 2];
} blk_q4_0; /* 18 */
typedef struct {
    uint16_t d, m;
    uint8_t qs[QK / 2];
} blk_q4_1; /* 20 */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} blk_q5_0; /* 22 */
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} blk_q5_1; /* 24 */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
} blk_q4_k; /* 144 */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} blk_q5_k; /* 176 */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
} blk_q6_k; /* 210 */

_Static_assert(sizeof(blk_q8_0) == 34, "q8_0");
_Static_assert(sizeof(blk_q4_0) == 18, "q4_0");
_Static_assert(sizeof(blk_q4_1) == 20, "q4_1");
_Static_assert(sizeof(blk_q5_0) == 22, "q5_0");
_Static_assert(sizeof(blk_q5_1) == 24, "q5_1");
_Static_assert(sizeof(blk_q4_k) == 144, "q4_k");
_Static_assert(sizeof(blk_q5_k) == 176, "q5_k");
_Static_assert(sizeof(blk_q6_k) == 210, "q6_k");

static inline uint32_t pu_q_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ggml get_scale_min_k4: 6-bit scale and min of sub-block j (0..7) */
static inline void pu_q_scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Unpack one block into its integer levels (q) — unsigned levels for
 * Q4_x/Q5_x/Q4_K/Q5_K (0..15 / 0..31), signed for Q8_0 and Q6_K (q6 - 32). */
static inline void pu_q_unpack_4(const uint8_t *qs, int8_t *q) {
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)(qs[j] & 0xF);
        q[j + QK / 2] = (int8_t)(qs[j] >> 4);
    }
}
static inline void pu_q_unpack_5(const uint8_t *qs, const uint8_t *qh4, int8_t *q) {
    uint32_t qh = pu_q_u32(qh4);
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)((qs[j] & 0xF) | (((qh >> j) & 1) << 4));
        q[j + QK / 2] = (int8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}
static inline void pu_q_unpack_q4_k(const blk_q4_k *b, int8_t *q) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (int8_t)(b->qs[32 * c + l] & 0xF);
            q[64 * c + 32 + l] = (int8_t)(b->qs[32 * c + l] >> 4);
        }
}
static inline void pu_q_unpack_q5_k(const blk_q5_k *b, int8_t *q) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int h0 = (b->qh[l] >> (2 * c)) & 1, h1 = (b->qh[l] >> (2 * c + 1)) & 1;
            q[64 * c + l] = (int8_t)((b->qs[32 * c + l] & 0xF) | (h0 << 4));
            q[64 * c + 32 + l] = (int8_t)((b->qs[32 * c + l] >> 4) | (h1 << 4));
        }
}
static inline void pu_q_unpack_q6_k(const blk_q6_k *b, int8_t *q) {
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
        int8_t *y = q + 128 * n;
        for (int l = 0; l < 32; l++) {
            y[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            y[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            y[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            y[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

/* scalar reference (quant.c) */
void pu_ref_quantize_act(int8_t *qs, float *d, int16_t *s, const float *x, int64_t K);
void pu_ref_to_f32_q(pu_dtype t, float *dst, const void *src, int64_t n);
/* one weight row (K elements) dotted with one quantized activation row */
float pu_ref_qdot(pu_dtype t, const void *wrow, const int8_t *qa, const float *da,
                  const int16_t *sa, int64_t K);

/* Quantize x (T, K) with k->quantize_act into a scratch buffer and run
 * k->qmatmul[t] (the matmul[] entry of quantized dtypes). */
void pu_quant_matmul_via_(const pu_kernels *k, pu_dtype t, float *y, int64_t ldy, const float *x,
                          int64_t ldx, const void *w, int64_t T, int64_t n0, int64_t n1, int64_t K);

/* Table entries per level: matmul/qmatmul/to_f32 of every quantized dtype,
 * in dtype order (designated initialisers, placed after the float entries). */
#define PU_QUANT_ENTRIES(arr, pfx)                                                            \
    [PU_DTYPE_Q8_0] = pfx##_q8_0, [PU_DTYPE_Q4_0] = pfx##_q4_0, [PU_DTYPE_Q4_1] = pfx##_q4_1, \
    [PU_DTYPE_Q5_0] = pfx##_q5_0, [PU_DTYPE_Q5_1] = pfx##_q5_1, [PU_DTYPE_Q4_K] = pfx##_q4_k, \
    [PU_DTYPE_Q5_K] = pfx##_q5_k, [PU_DTYPE_Q6_K] = pfx##_q6_k

#define PU_QUANT_DECL(pfx, ...)   \
    void pfx##_q8_0(__VA_ARGS__); \
    void pfx##_q4_0(__VA_ARGS__); \
    void pfx##_q4_1(__VA_ARGS__); \
    void pfx##_q5_0(__VA_ARGS__); \
    void pfx##_q5_1(__VA_ARGS__); \
    void pfx##_q4_k(__VA_ARGS__); \
    void pfx##_q5_k(__VA_ARGS__); \
    void pfx##_q6_k(__VA_ARGS__)

#define PU_MM_ARGS                                                                            \
    float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int64_t T, int64_t n0, \
        int64_t n1, int64_t K
#define PU_QMM_ARGS                                                                            \
    float *y, int64_t ldy, const pu_qact *x, const void *w, int64_t T, int64_t n0, int64_t n1, \
        int64_t K
#define PU_TOF32_ARGS float *dst, const void *src, int64_t n

PU_QUANT_DECL(pu_ref_mmq, PU_MM_ARGS);
PU_QUANT_DECL(pu_ref_qmm, PU_QMM_ARGS);
PU_QUANT_DECL(pu_ref_deq, PU_TOF32_ARGS);
PU_QUANT_DECL(pu_avx2_mmq, PU_MM_ARGS);
PU_QUANT_DECL(pu_avx2_qmm, PU_QMM_ARGS);
/* AVX-512 table: VNNI prefill panels where the CPU has them (quant_vnni_avx512.c) */
void pu_avx512_qmm_q8_0(PU_QMM_ARGS);
void pu_avx512_qmm_q4_0(PU_QMM_ARGS);
void pu_avx512_qmm_q4_k(PU_QMM_ARGS);
bool pu_avx512_has_vnni(void);
void pu_avx2_quantize_act(int8_t *qs, float *d, int16_t *s, const float *x, int64_t K);

#endif
