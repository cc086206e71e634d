/*
 * attn_flash_avx2.c — AVX2+FMA tile GEMM of the tiled attention: blocks of
 * up to 6 rows x 16 columns in registers; each output is one FMA chain over
 * the inner index in order, like pu_fa_gemm_ref (same bits).
 */
#include <immintrin.h>

#include "train/attn_flash.h"

static inline __m256i tail_mask(int64_t r) { /* lanes < r set (r in 1..8) */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), idx);
}

static inline __attribute__((always_inline)) void blk(int MR, int NV, float *c, int64_t ldc,
                                                      const float *a, int64_t lda, const float *b,
                                                      int64_t ldb, int64_t K, bool accumulate,
                                                      __m256i ml) {
    __m256 acc[6][2];
    const __m256i all = _mm256_set1_epi32(-1);
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = accumulate ? _mm256_maskload_ps(c + r * ldc + 8 * v, v == NV - 1 ? ml : all)
                                   : _mm256_setzero_ps();
    for (int64_t p = 0; p < K; p++) {
        __m256 bv[2];
        for (int v = 0; v < NV; v++)
            bv[v] = _mm256_maskload_ps(b + p * ldb + 8 * v, v == NV - 1 ? ml : all);
        for (int r = 0; r < MR; r++) {
            __m256 av = _mm256_broadcast_ss(a + r * lda + p);
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            _mm256_maskstore_ps(c + r * ldc + 8 * v, v == NV - 1 ? ml : all, acc[r][v]);
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

void pu_fa_gemm_avx2(float *c, int64_t ldc, const float *a, int64_t lda, const float *b,
                     int64_t ldb, int64_t m, int64_t n, int64_t K, bool accumulate) {
    for (int64_t j = 0; j < n; j += 16) {
        int64_t nr = n - j < 16 ? n - j : 16;
        int nv = nr > 8 ? 2 : 1;
        __m256i ml = tail_mask(nr - 8 * (nv - 1));
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
