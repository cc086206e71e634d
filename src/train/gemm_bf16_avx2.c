/*
 * gemm_bf16_avx2.c — AVX2+FMA microkernel of the BF16 GEMM: panels already
 * widened to fp32 by the packing (bf16 -> fp32 is exact), 6 x 16 block in 12
 * accumulators, one FMA per term in order of K: exactly pu_bf16_gemm_ref.
 */
#include <immintrin.h>

#include "train/gemm_bf16.h"

void pu_bf16_ukernel_avx2(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                          int mr, int nr, bool acc) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), idx);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), idx);
    __m256 c0[6], c1[6];
    for (int r = 0; r < 6; r++) {
        if (acc && r < mr) {
            c0[r] = _mm256_maskload_ps(c + r * ldc, m0);
            c1[r] = _mm256_maskload_ps(c + r * ldc + 8, m1);
        } else {
            c0[r] = _mm256_setzero_ps();
            c1[r] = _mm256_setzero_ps();
        }
    }
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(bp + p * 16), b1 = _mm256_load_ps(bp + p * 16 + 8);
        const float *a = ap + p * 6;
        for (int r = 0; r < 6; r++) {
            __m256 av = _mm256_broadcast_ss(a + r);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }
    for (int r = 0; r < mr; r++) {
        _mm256_maskstore_ps(c + r * ldc, m0, c0[r]);
        _mm256_maskstore_ps(c + r * ldc + 8, m1, c1[r]);
    }
}
