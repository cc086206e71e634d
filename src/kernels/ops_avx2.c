/*
 * ops_avx2.c — AVX2 + FMA + F16C kernels. Compiled with -mavx2 -mfma -mf16c;
 * only reached through pu_kernels_for(PU_SIMD_AVX2) after a CPU check.
 *
 * Same structure as ops_avx512.c with 8-wide vectors and 16 registers:
 *  - T == 1: 4 rows of W at a time through the tile for one X row (so a
 *    row decoded alone equals the same row within a batch, bitwise);
 *  - T > 1: register tile MR=2 rows of X x NR=4 rows of W (8 accumulators),
 *    blocked over K (PU_KERN_KC) and T (PU_KERN_TB).
 * Tails (K % 8, n % 8) go through small zero-padded buffers so they use the
 * same vector arithmetic as full vectors: results do not depend on where a
 * range was split.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/quant_impl.h"

#define AI static inline __attribute__((always_inline))

enum { DT_F32 = PU_DTYPE_F32, DT_F16 = PU_DTYPE_F16, DT_BF16 = PU_DTYPE_BF16 };

AI size_t dt_size(int dt) {
    return dt == DT_F32 ? 4 : 2;
}

AI __m256 cvt16(int dt, __m128i h) {
    if (dt == DT_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* 8 weights starting at element `off` of w, as fp32 */
AI __m256 loadw(int dt, const void *w, int64_t off) {
    if (dt == DT_F32)
        return _mm256_loadu_ps((const float *)w + off);
    return cvt16(dt, _mm_loadu_si128((const __m128i *)((const uint16_t *)w + off)));
}

/* r < 8 weights, zero padded */
AI __m256 loadw_tail(int dt, const void *w, int64_t off, int64_t r) {
    if (dt == DT_F32) {
        float b[8] = {0};
        memcpy(b, (const float *)w + off, (size_t)r * 4);
        return _mm256_loadu_ps(b);
    }
    uint16_t h[8] = {0};
    memcpy(h, (const uint16_t *)w + off, (size_t)r * 2);
    return cvt16(dt, _mm_loadu_si128((const __m128i *)h));
}

AI __m256 loadf_tail(const float *p, int64_t r) {
    float b[8] = {0};
    memcpy(b, p, (size_t)r * 4);
    return _mm256_loadu_ps(b);
}

AI void storef_tail(float *p, __m256 v, int64_t r) {
    float b[8];
    _mm256_storeu_ps(b, v);
    memcpy(p, b, (size_t)r * 4);
}

AI const void *wrow(int dt, const void *w, int64_t n, int64_t K) {
    return (const char *)w + (size_t)n * (size_t)K * dt_size(dt);
}

/* [sum a, sum b, sum c, sum d] */
AI __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

AI float hsum(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

AI void store_n(float *y, __m128 s, int nr, int accum) {
    /* the full widths of the 2 x 4 and 4 x 3 tiles without a memcpy call */
    if (nr == 4) {
        if (accum)
            s = _mm_add_ps(s, _mm_loadu_ps(y));
        _mm_storeu_ps(y, s);
        return;
    }
    if (nr == 3) {
        if (accum)
            s = _mm_add_ps(s, _mm_movelh_ps(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)y),
                                            _mm_load_ss(y + 2)));
        _mm_storel_pi((__m64 *)y, s);
        _mm_store_ss(y + 2, _mm_movehl_ps(s, s));
        return;
    }
    float b[4];
    if (accum) {
        float c[4] = {0};
        memcpy(c, y, (size_t)nr * 4);
        s = _mm_add_ps(s, _mm_loadu_ps(c));
    }
    _mm_storeu_ps(b, s);
    memcpy(y, b, (size_t)nr * 4);
}

/* ---------------------------------------------------------------- tiles */

#define MR_MAX 2

AI void tile(int dt, int MR, float *y, int64_t ldy, const float *x, int64_t ldx,
             const void *const *rows, int nr, int64_t kc, int accum) {
    __m256 acc[MR_MAX][4];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 4; j++)
            acc[i][j] = _mm256_setzero_ps();
    const void *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 w0 = loadw(dt, r0, k), w1 = loadw(dt, r1, k);
        __m256 w2 = loadw(dt, r2, k), w3 = loadw(dt, r3, k);
        for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
            acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);
            acc[i][2] = _mm256_fmadd_ps(xv, w2, acc[i][2]);
            acc[i][3] = _mm256_fmadd_ps(xv, w3, acc[i][3]);
        }
    }
    if (k < kc) {
        int64_t r = kc - k;
        __m256 w0 = loadw_tail(dt, r0, k, r), w1 = loadw_tail(dt, r1, k, r);
        __m256 w2 = loadw_tail(dt, r2, k, r), w3 = loadw_tail(dt, r3, k, r);
        for (int i = 0; i < MR; i++) {
            __m256 xv = loadf_tail(x + i * ldx + k, r);
            acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);
            acc[i][2] = _mm256_fmadd_ps(xv, w2, acc[i][2]);
            acc[i][3] = _mm256_fmadd_ps(xv, w3, acc[i][3]);
        }
    }
    for (int i = 0; i < MR; i++)
        store_n(y + i * ldy, reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]), nr, accum);
}

/* ---------------------------------------------------------------- matvec */

/* Decode: 4 consecutive rows at a time through the tile for one activation
 * row, one K block of PU_KERN_KC at a time (partial sums added into y per
 * block, as the T > 1 path does): a row's result is bitwise the same whether
 * it is decoded alone or within a batch, and for any n0/n1 split. */
AI void gemv(int dt, float *y, const float *x, const void *w, int64_t n0, int64_t n1, int64_t K) {
    size_t es = dt_size(dt);
    for (int64_t n = n0; n < n1; n += 4) {
        int nr = n1 - n < 4 ? (int)(n1 - n) : 4;
        for (int64_t k0 = 0; k0 < K; k0 += PU_KERN_KC) {
            int64_t kc = K - k0 < PU_KERN_KC ? K - k0 : PU_KERN_KC;
            const void *rows[4];
            for (int j = 0; j < 4; j++)
                rows[j] = (const char *)w +
                          ((size_t)(n + (j < nr ? j : 0)) * (size_t)K + (size_t)k0) * es;
            tile(dt, 1, y + n, 0, x + k0, 0, rows, nr, kc, k0 > 0);
        }
    }
}

/* MR (<= 4) activation rows x 3 weight rows: 12 accumulators + 3 weights +
 * 1 activation = the 16 ymm registers; 7 loads per 12 FMAs (the 2 x 4 tile
 * above needs 6 per 8). Per output the same lane-wise FMA order over k and
 * the same reduce4 as tile(), so results are bitwise those of tile(). */
AI void tile3(int dt, int MR, float *y, int64_t ldy, const float *x, int64_t ldx,
              const void *const *rows, int nr, int64_t kc, int accum) {
    __m256 acc[4][3];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 3; j++)
            acc[i][j] = _mm256_setzero_ps();
    const void *r0 = rows[0], *r1 = rows[1], *r2 = rows[2];
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 w0 = loadw(dt, r0, k), w1 = loadw(dt, r1, k), w2 = loadw(dt, r2, k);
        for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
            acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);
            acc[i][2] = _mm256_fmadd_ps(xv, w2, acc[i][2]);
        }
    }
    if (k < kc) {
        int64_t r = kc - k;
        __m256 w0 = loadw_tail(dt, r0, k, r), w1 = loadw_tail(dt, r1, k, r);
        __m256 w2 = loadw_tail(dt, r2, k, r);
        for (int i = 0; i < MR; i++) {
            __m256 xv = loadf_tail(x + i * ldx + k, r);
            acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);
            acc[i][2] = _mm256_fmadd_ps(xv, w2, acc[i][2]);
        }
    }
    __m256 z = _mm256_setzero_ps();
    for (int i = 0; i < MR; i++)
        store_n(y + i * ldy, reduce4(acc[i][0], acc[i][1], acc[i][2], z), nr, accum);
}

AI void matmul_any(int dt, float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                   int64_t T, int64_t n0, int64_t n1, int64_t K) {
    if (n1 <= n0 || T <= 0)
        return;
    if (K <= 0) {
        for (int64_t t = 0; t < T; t++)
            memset(y + t * ldy + n0, 0, (size_t)(n1 - n0) * sizeof(float));
        return;
    }
    if (T == 1) {
        gemv(dt, y, x, w, n0, n1, K);
        return;
    }
    size_t es = dt_size(dt);
    /* X packed per T block into contiguous (TB, KC) panels (see ops_avx512.c) */
    int64_t nkb = (K + PU_KERN_KC - 1) / PU_KERN_KC, tbm = T < PU_KERN_TB ? T : PU_KERN_TB;
    float *xp = pu_malloc((size_t)(nkb * tbm * PU_KERN_KC) * sizeof(float));
    for (int64_t tb = 0; tb < T; tb += PU_KERN_TB) {
        int64_t te = tb + PU_KERN_TB < T ? tb + PU_KERN_TB : T;
        for (int64_t kb = 0; kb < nkb; kb++) {
            int64_t k0 = kb * PU_KERN_KC, kc = K - k0 < PU_KERN_KC ? K - k0 : PU_KERN_KC;
            for (int64_t t = tb; t < te; t++)
                memcpy(xp + (kb * tbm + t - tb) * PU_KERN_KC, x + t * ldx + k0,
                       (size_t)kc * sizeof(float));
        }
        for (int64_t nb0 = n0; nb0 < n1; nb0 += PU_KERN_NB) {
            int64_t nb1 = nb0 + PU_KERN_NB < n1 ? nb0 + PU_KERN_NB : n1;
            for (int64_t k0 = 0; k0 < K; k0 += PU_KERN_KC) {
                int64_t kc = K - k0 < PU_KERN_KC ? K - k0 : PU_KERN_KC;
                const float *xpb = xp + (k0 / PU_KERN_KC) * tbm * PU_KERN_KC;
                /* 4+ rows: 4 x 3 tiles (remainder rows 1..3 x 3), else 2 x 4 */
                int nw = te - tb >= 4 ? 3 : 4;
                for (int64_t n = nb0; n < nb1; n += nw) {
                    int nr = nb1 - n < nw ? (int)(nb1 - n) : nw;
                    const void *rows[4];
                    for (int j = 0; j < 4; j++)
                        rows[j] = (const char *)w +
                                  ((size_t)(n + (j < nr ? j : 0)) * (size_t)K + (size_t)k0) * es;
                    if (nw == 3) {
                        for (int64_t t = tb; t < te; t += 4) {
                            float *yt = y + t * ldy + n;
                            const float *xt = xpb + (t - tb) * PU_KERN_KC;
                            int64_t mr = te - t;
                            if (mr >= 4)
                                tile3(dt, 4, yt, ldy, xt, PU_KERN_KC, rows, nr, kc, k0 > 0);
                            else if (mr == 3)
                                tile3(dt, 3, yt, ldy, xt, PU_KERN_KC, rows, nr, kc, k0 > 0);
                            else if (mr == 2)
                                tile3(dt, 2, yt, ldy, xt, PU_KERN_KC, rows, nr, kc, k0 > 0);
                            else
                                tile3(dt, 1, yt, ldy, xt, PU_KERN_KC, rows, nr, kc, k0 > 0);
                        }
                        continue;
                    }
                    for (int64_t t = tb; t < te; t += MR_MAX) {
                        float *yt = y + t * ldy + n;
                        const float *xt = xpb + (t - tb) * PU_KERN_KC;
                        if (te - t >= 2)
                            tile(dt, 2, yt, ldy, xt, PU_KERN_KC, rows, nr, kc, k0 > 0);
                        else
                            tile(dt, 1, yt, ldy, xt, PU_KERN_KC, rows, nr, kc, k0 > 0);
                    }
                }
            }
        }
    }
    pu_free(xp);
}

static void matmul_f32(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int64_t T,
                       int64_t n0, int64_t n1, int64_t K) {
    matmul_any(DT_F32, y, ldy, x, ldx, w, T, n0, n1, K);
}
static void matmul_f16(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int64_t T,
                       int64_t n0, int64_t n1, int64_t K) {
    matmul_any(DT_F16, y, ldy, x, ldx, w, T, n0, n1, K);
}
static void matmul_bf16(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                        int64_t T, int64_t n0, int64_t n1, int64_t K) {
    matmul_any(DT_BF16, y, ldy, x, ldx, w, T, n0, n1, K);
}

/* ---------------------------------------------------------------- conversions */

AI void to_f32_any(int dt, float *dst, const void *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, loadw(dt, src, i));
    if (i < n)
        storef_tail(dst + i, loadw_tail(dt, src, i, n - i), n - i);
}
static void to_f32_f16(float *dst, const void *src, int64_t n) {
    to_f32_any(DT_F16, dst, src, n);
}
static void to_f32_bf16(float *dst, const void *src, int64_t n) {
    to_f32_any(DT_BF16, dst, src, n);
}

/* ---------------------------------------------------------------- exp */

/* Cephes expf; 2^n built in the exponent field, so x is clamped to
 * [-87.3, 88] and results for x < -87.3 are flushed to 0. */
AI __m256 exp256(__m256 x) {
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

/* ---------------------------------------------------------------- vector ops */

static float dot(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    if (i < n)
        s1 = _mm256_fmadd_ps(loadf_tail(a + i, n - i), loadf_tail(b + i, n - i), s1);
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static void axpy(float *y, float a, const float *x, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    if (i < n)
        storef_tail(y + i, _mm256_fmadd_ps(av, loadf_tail(x + i, n - i), loadf_tail(y + i, n - i)),
                    n - i);
}

static void scale(float *y, float a, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(av, _mm256_loadu_ps(y + i)));
    if (i < n)
        storef_tail(y + i, _mm256_mul_ps(av, loadf_tail(y + i, n - i)), n - i);
}

static void add(float *y, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i < n)
        storef_tail(y + i, _mm256_add_ps(loadf_tail(a + i, n - i), loadf_tail(b + i, n - i)),
                    n - i);
}

static void rmsnorm(float *y, const float *x, const float *w, int64_t C, float eps) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= C; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        s0 = _mm256_fmadd_ps(a, a, s0);
        s1 = _mm256_fmadd_ps(b, b, s1);
    }
    for (; i + 8 <= C; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i);
        s0 = _mm256_fmadd_ps(a, a, s0);
    }
    if (i < C) {
        __m256 a = loadf_tail(x + i, C - i);
        s1 = _mm256_fmadd_ps(a, a, s1);
    }
    float ss = hsum(_mm256_add_ps(s0, s1));
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    __m256 rv = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= C; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), rv),
                                              _mm256_loadu_ps(w + i)));
    if (i < C)
        storef_tail(
            y + i,
            _mm256_mul_ps(_mm256_mul_ps(loadf_tail(x + i, C - i), rv), loadf_tail(w + i, C - i)),
            C - i);
}

AI __m256 silu_mul(__m256 g, __m256 u) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

static void swiglu(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, silu_mul(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n)
        storef_tail(out + i, silu_mul(loadf_tail(gate + i, n - i), loadf_tail(up + i, n - i)),
                    n - i);
}

static float vmax(const float *x, int64_t n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
    }
    for (; i + 8 <= n; i += 8)
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    m0 = _mm256_max_ps(m0, m1);
    float b[8];
    _mm256_storeu_ps(b, m0);
    float m = b[0];
    for (int j = 1; j < 8; j++)
        m = b[j] > m ? b[j] : m;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static float exp_sum(float *x, int64_t n, float m) {
    __m256 mv = _mm256_set1_ps(m), s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_ps(s0, e);
    }
    if (i < n) {
        int64_t r = n - i;
        __m256 e = exp256(_mm256_sub_ps(loadf_tail(x + i, r), mv));
        float b[8] = {0};
        _mm256_storeu_ps(b, e);
        for (int64_t j = r; j < 8; j++)
            b[j] = 0.0f;
        memcpy(x + i, b, (size_t)r * 4);
        s1 = _mm256_loadu_ps(b);
    }
    return hsum(_mm256_add_ps(s0, s1));
}

static void softmax(float *x, int64_t n) {
    if (n <= 0)
        return;
    float s = exp_sum(x, n, vmax(x, n));
    scale(x, 1.0f / s, n);
}

const pu_kernels pu_kernels_avx2_table = {
    .level = PU_SIMD_AVX2,
    .name = "avx2",
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, PU_QUANT_ENTRIES(matmul, pu_avx2_mmq)},
    .qmatmul = {PU_QUANT_ENTRIES(qmatmul, pu_avx2_qmm)},
    .quantize_act = pu_avx2_quantize_act,
    .to_f32 = {pu_ref_to_f32_f32, to_f32_f16, to_f32_bf16, PU_QUANT_ENTRIES(to_f32, pu_ref_deq)},
    .rmsnorm = rmsnorm,
    .dot = dot,
    .axpy = axpy,
    .scale = scale,
    .add = add,
    .swiglu = swiglu,
    .softmax = softmax,
    .vmax = vmax,
    .exp_sum = exp_sum,
};
