/*
 * gemm_avx2.c — the 12 x 32 register tile of the training GEMM (gemm.c) for
 * AVX2 + FMA CPUs: the tile is computed as four 6 x 16 sub-tiles (12 ymm
 * accumulators, 2 B loads and 1 broadcast per k step: 15 of the 16 ymm
 * registers), each a full pass over the kc-deep packed B panel (kc x 32,
 * L1/L2 resident) and the 6 A rows. Every C element is one FMA chain over p
 * in order — the same sum as the AVX-512 kernel and the same for any thread
 * count. Edge tiles are computed on the zero-padded panels in full and
 * stored through a scratch tile.
 */
#include <immintrin.h>

#include "train/train_impl.h"

#define MR 12
#define NR 32

static void sub6x16(int64_t kc, const float *ap, int64_t ri, int64_t pi, const float *bp, float *c,
                    int64_t ldc, int mr, int nr, bool acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        __m256 a;
#define ROW(i, x0, x1)                        \
    do {                                      \
        a = _mm256_broadcast_ss(ap + (i)*ri); \
        x0 = _mm256_fmadd_ps(a, b0, x0);      \
        x1 = _mm256_fmadd_ps(a, b1, x1);      \
    } while (0)
        ROW(0, c00, c01);
        ROW(1, c10, c11);
        ROW(2, c20, c21);
        ROW(3, c30, c31);
        ROW(4, c40, c41);
        ROW(5, c50, c51);
#undef ROW
        ap += pi;
        bp += NR;
    }
    __m256 r[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (nr >= 16) {
        for (int i = 0; i < mr; i++) {
            float *row = c + i * ldc;
            __m256 v0 = r[i][0], v1 = r[i][1];
            if (acc) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row + 8));
            }
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row + 8, v1);
        }
        return;
    }
    float t[16];
    for (int i = 0; i < mr; i++) {
        float *row = c + i * ldc;
        _mm256_storeu_ps(t, r[i][0]);
        _mm256_storeu_ps(t + 8, r[i][1]);
        for (int j = 0; j < nr; j++)
            row[j] = acc ? row[j] + t[j] : t[j];
    }
}

void pu_top_ukernel_avx2(int64_t kc, const float *ap, int64_t ri, int64_t pi, const float *bp,
                         float *c, int64_t ldc, int mr, int nr, bool acc) {
    for (int i0 = 0; i0 < mr; i0 += 6) {
        int m6 = mr - i0 < 6 ? mr - i0 : 6;
        for (int j0 = 0; j0 < nr; j0 += 16) {
            int n16 = nr - j0 < 16 ? nr - j0 : 16;
            sub6x16(kc, ap + i0 * ri, ri, pi, bp + j0, c + i0 * ldc + j0, ldc, m6, n16, acc);
        }
    }
}
