/*
 * attn_flash_avx512.c — AVX-512 tile GEMM of the tiled attention: blocks of
 * up to 6 rows x 32 columns in registers; each output is one FMA chain over
 * the inner index in order, like pu_fa_gemm_ref (same bits).
 */
#include <immintrin.h>

#include "train/attn_flash.h"

static inline __attribute__((always_inline)) void blk(int MR, int NV, float *c, int64_t ldc,
                                                      const float *a, int64_t lda, const float *b,
                                                      int64_t ldb, int64_t K, bool accumulate,
                                                      __mmask16 ml) {
    __m512 acc[6][2];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = accumulate
                            ? _mm512_maskz_loadu_ps(v == NV - 1 ? ml : 0xFFFF, c + r * ldc + 16 * v)
                            : _mm512_setzero_ps();
    for (int64_t p = 0; p < K; p++) {
        __m512 bv[2];
        for (int v = 0; v < NV; v++)
            bv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? ml : 0xFFFF, b + p * ldb + 16 * v);
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(a[r * lda + p]);
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            _mm512_mask_storeu_ps(c + r * ldc + 16 * v, v == NV - 1 ? ml : 0xFFFF, acc[r][v]);
}

#define ROWS(NV)                                                              \
    switch (mr) {                                                             \
    case 6: blk(6, NV, cc, ldc, aa, lda, bb, ldb, K, accumulate, ml); break;  \
    case 5: blk(5, NV, cc, ldc, aa, lda, bb, ldb, K, accumulate, ml); break;  \
    case 4: blk(4, NV, cc, ldc, aa, lda, bb, ldb, K, accumulate, ml); break;  \
    case 3: blk(3, NV, cc, ldc, aa, lda, bb, ldb, K, accumulate, ml); break;  \
    case 2: blk(2, NV, cc, ldc, aa, lda, bb, ldb, K, accumulate, ml); break;  \
    default: blk(1, NV, cc, ldc, aa, lda, bb, ldb, K, accumulate, ml); break; \
    }

void pu_fa_gemm_avx512(float *c, int64_t ldc, const float *a, int64_t lda, const float *b,
                       int64_t ldb, int64_t m, int64_t n, int64_t K, bool accumulate) {
    for (int64_t j = 0; j < n; j += 32) {
        int64_t nr = n - j < 32 ? n - j : 32;
        int nv = nr > 16 ? 2 : 1;
        int64_t last = nr - 16 * (nv - 1); /* 1..16 */
        __mmask16 ml = (__mmask16)(last >= 16 ? 0xFFFF : ((1u << last) - 1u));
        for (int64_t i = 0; i < m; i += 6) {
            int64_t mr = m - i < 6 ? m - i : 6;
            float *cc = c + i * ldc + j;
            const float *aa = a + i * lda, *bb = b + j;
            if (nv == 2) {
                ROWS(2)
            } else {
                ROWS(1)
            }
        }
    }
}
