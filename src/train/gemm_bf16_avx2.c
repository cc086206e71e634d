/*
 * gemm_bf16_avx2.c — AVX2+FMA microkernel of the BF16 GEMM: panels already
 * widened to fp32 by the packing (bf16 -> fp32 is exact), 6 x 16 block in 12
 * accumulators, one FMA per term in order of K: exactly pu_bf16_gemm_ref.
 * The accumulators are named variables (an array indexed by a run-time row
 * count makes GCC keep them in memory).
 */
#include <immintrin.h>

#include "train/gemm_bf16.h"

#define LD(r)                                              \
    if (acc && (r) < mr) {                                 \
        c##r##0 = _mm256_maskload_ps(c + (r)*ldc, m0);     \
        c##r##1 = _mm256_maskload_ps(c + (r)*ldc + 8, m1); \
    }
#define FMA(r)                                      \
    {                                               \
        __m256 av = _mm256_broadcast_ss(a + (r));   \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0); \
        c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1); \
    }
#define ST(r)                                              \
    if ((r) < mr) {                                        \
        _mm256_maskstore_ps(c + (r)*ldc, m0, c##r##0);     \
        _mm256_maskstore_ps(c + (r)*ldc + 8, m1, c##r##1); \
    }

void pu_bf16_ukernel_avx2(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                          int mr, int nr, bool acc) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), idx);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), idx);
    __m256 z = _mm256_setzero_ps();
    __m256 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;
    __m256 c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
    LD(0) LD(1) LD(2) LD(3) LD(4) LD(5) for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(bp + p * 16), b1 = _mm256_load_ps(bp + p * 16 + 8);
        const float *a = ap + p * 6;
        FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5)
    }
    ST(0) ST(1) ST(2) ST(3) ST(4) ST(5)
}
