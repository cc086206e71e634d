/*
 * gemm_bf16_avx512.c — AVX512_BF16 microkernel of the BF16 GEMM: vdpbf16ps
 * on pair-interleaved panels (A pair broadcast as one dword, B 32 columns x
 * 2 in two zmm), 12 x 32 block in 24 accumulators. Each step adds two exact
 * products in the instruction's order with its rounding (denormals flushed):
 * within the fp32 summation bound of pu_bf16_gemm_ref, not bitwise. Also the
 * vdpbf16ps roofline loop. Compiled with the AVX-512 flags; bf16 by target.
 */
#include <immintrin.h>
#include <string.h>

#include "train/gemm_bf16.h"

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

BF16_TARGET
void pu_bf16_ukernel_avx512bf16(int64_t kc, const uint16_t *ap, const uint16_t *bp, float *c,
                                int64_t ldc, int mr, int nr, bool acc) {
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
    __m512 c0[12], c1[12];
    for (int r = 0; r < 12; r++) {
        if (acc && r < mr) {
            c0[r] = _mm512_maskz_loadu_ps(m0, c + r * ldc);
            c1[r] = _mm512_maskz_loadu_ps(m1, c + r * ldc + 16);
        } else {
            c0[r] = _mm512_setzero_ps();
            c1[r] = _mm512_setzero_ps();
        }
    }
    for (int64_t q = 0; q < kc / 2; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + q * 64);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + q * 64 + 32);
        const uint16_t *a = ap + q * 24;
        for (int r = 0; r < 12; r++) {
            uint32_t pair;
            memcpy(&pair, a + r * 2, 4);
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)pair);
            c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
            c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
        }
    }
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, c0[r]);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, c1[r]);
    }
}

BF16_TARGET
float pu_bf16_avx512bf16_peak_loop(int64_t n) {
    __m512 acc[12];
    for (int r = 0; r < 12; r++)
        acc[r] = _mm512_set1_ps((float)r * 1e-3f);
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F803F80); /* (1.0, 1.0) */
    __m512bh b = (__m512bh)_mm512_set1_epi32(0x33803380); /* tiny: no overflow */
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < 12; r++)
            acc[r] = _mm512_dpbf16_ps(acc[r], a, b);
    __m512 s = acc[0];
    for (int r = 1; r < 12; r++)
        s = _mm512_add_ps(s, acc[r]);
    return _mm512_reduce_add_ps(s);
}
