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

/* named accumulators (an array indexed by a run-time row count makes GCC
 * keep them in memory) */
#define LD(r)                                                   \
    if (acc && (r) < mr) {                                      \
        c##r##_0 = _mm512_maskz_loadu_ps(m0, c + (r)*ldc);      \
        c##r##_1 = _mm512_maskz_loadu_ps(m1, c + (r)*ldc + 16); \
    }
#define DP(r)                                                 \
    {                                                         \
        uint32_t pair;                                        \
        memcpy(&pair, a + (r)*2, 4);                          \
        __m512bh av = (__m512bh)_mm512_set1_epi32((int)pair); \
        c##r##_0 = _mm512_dpbf16_ps(c##r##_0, av, b0);        \
        c##r##_1 = _mm512_dpbf16_ps(c##r##_1, av, b1);        \
    }
#define ST(r)                                                  \
    if ((r) < mr) {                                            \
        _mm512_mask_storeu_ps(c + (r)*ldc, m0, c##r##_0);      \
        _mm512_mask_storeu_ps(c + (r)*ldc + 16, m1, c##r##_1); \
    }

BF16_TARGET
void pu_bf16_ukernel_avx512bf16(int64_t kc, const uint16_t *ap, const uint16_t *bp, float *c,
                                int64_t ldc, int mr, int nr, bool acc) {
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
    __m512 z = _mm512_setzero_ps();
    __m512 c0_0 = z, c0_1 = z, c1_0 = z, c1_1 = z, c2_0 = z, c2_1 = z, c3_0 = z, c3_1 = z;
    __m512 c4_0 = z, c4_1 = z, c5_0 = z, c5_1 = z, c6_0 = z, c6_1 = z, c7_0 = z, c7_1 = z;
    __m512 c8_0 = z, c8_1 = z, c9_0 = z, c9_1 = z, c10_0 = z, c10_1 = z, c11_0 = z, c11_1 = z;
    LD(0)
    LD(1) LD(2) LD(3) LD(4) LD(5) LD(6) LD(7) LD(8) LD(9) LD(10)
        LD(11) for (int64_t q = 0; q < kc / 2; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + q * 64);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + q * 64 + 32);
        const uint16_t *a = ap + q * 24;
        DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7) DP(8) DP(9) DP(10) DP(11)
    }
    ST(0) ST(1) ST(2) ST(3) ST(4) ST(5) ST(6) ST(7) ST(8) ST(9) ST(10) ST(11)
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
