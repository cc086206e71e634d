/*
 * quant_vnni_avx512.c — the quantized matmuls of the AVX-512 table: on a
 * CPU with AVX512-VNNI (checked at run time, once) the prefill panels
 * (quant_panel.h) of Q8_0 / Q4_0 / Q4_K take vpdpbusd (u8 x s8 -> s32
 * accumulate, 256-bit, AVX512-VL) instead of maddubs + madd; decode and the
 * other types, or a CPU without VNNI, use the AVX2 kernels. The integer block
 * sums are the same as the scalar reference's (tested against it where the
 * CPU has VNNI; the test says so and skips where it does not). Compiled with
 * the AVX-512 flags plus -mavx512vnni (Makefile).
 */
#include <immintrin.h>
#include <stdatomic.h>

#include "kernels/quant_impl.h"

#define AI static inline __attribute__((always_inline))

AI float h2f(uint16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

AI __m256i nib32(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

#define PANEL_VNNI 1
#include "kernels/quant_panel.h"

static atomic_int g_vnni = -1;

bool pu_avx512_has_vnni(void) {
    int v = atomic_load_explicit(&g_vnni, memory_order_relaxed);
    if (v < 0) {
        v = pu_cpu_has("avx512_vnni") ? 1 : 0;
        atomic_store_explicit(&g_vnni, v, memory_order_relaxed);
    }
    return v == 1;
}

#define VQMM(name, DT)                                                                             \
    void pu_avx512_qmm_##name(PU_QMM_ARGS) {                                                       \
        if (pu_avx512_has_vnni() && T >= PANEL_MIN_T && n1 - n0 >= PNC) {                          \
            int64_t np = (n1 - n0) / PNC;                                                          \
            pu_vnni_panel_qmm(panel_kind(DT), y, ldy, x, w, T, n0, np, K, pu_dtype_nbytes(DT, K)); \
            n0 += np * PNC;                                                                        \
        }                                                                                          \
        if (n0 < n1)                                                                               \
            pu_avx2_qmm_##name(y, ldy, x, w, T, n0, n1, K);                                        \
    }
VQMM(q8_0, PU_DTYPE_Q8_0)
VQMM(q4_0, PU_DTYPE_Q4_0)
VQMM(q4_k, PU_DTYPE_Q4_K)
