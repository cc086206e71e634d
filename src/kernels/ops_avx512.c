/*
 * ops_avx512.c — AVX-512 (F/BW/VL/DQ + F16C) kernels. Compiled with
 * -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c; only reached
 * through pu_kernels_for(PU_SIMD_AVX512) after a CPU check.
 *
 * Matmul works on W (N, K) row-major as stored (mmapped, not packed):
 *  - T == 1 (decode, memory bound): 4 rows at a time share each x load, one
 *    row from each quarter of the thread's range, so 4 sequential streams
 *    are in flight per core; per row the tile's arithmetic for one X row, so
 *    a row decoded alone equals the same row within a batch, bitwise.
 *  - T > 1 (prefill, compute bound): register tile of MR=6 rows of X x NR=4 rows
 *    of W (24 zmm accumulators, dot products along K; 10 loads per 24 FMAs).
 *    X is copied per T block (PU_KERN_TB rows) into contiguous KC-wide panels
 *    (a power-of-two ldx would make its rows alias in L1/L2). Blocked over N
 *    (PU_KERN_NB rows: the y block stays in L2), K (PU_KERN_KC: the 4 W row
 *    segments of a tile stay in L1 while the X panel streams from L2) and T;
 *    the next tile's W lines are prefetched into L2 while the current tile
 *    sweeps T. Partial sums are added into y per K block.
 * Rows of a group beyond n1 alias the group's first row (results dropped), so
 * every row's arithmetic is independent of how N was split. K tails use masked
 * loads (same arithmetic as full vectors). Accumulation is fp32.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/quant_impl.h"

#define AI static inline __attribute__((always_inline))

enum { DT_F32 = PU_DTYPE_F32, DT_F16 = PU_DTYPE_F16, DT_BF16 = PU_DTYPE_BF16 };

/* 16 weights starting at element `off` of w, as fp32 */
AI __m512 loadw(int dt, const void *w, int64_t off) {
    if (dt == DT_F32)
        return _mm512_loadu_ps((const float *)w + off);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + off));
    if (dt == DT_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AI __m512 loadw_mask(int dt, const void *w, int64_t off, __mmask16 m) {
    if (dt == DT_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)w + off);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + off);
    if (dt == DT_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AI size_t dt_size(int dt) {
    return dt == DT_F32 ? 4 : 2;
}

AI const void *wrow(int dt, const void *w, int64_t n, int64_t K) {
    return (const char *)w + (size_t)n * (size_t)K * dt_size(dt);
}

AI __mmask16 tail_mask(int64_t r) {
    return (__mmask16)((1u << r) - 1u);
}

/* [sum a, sum b, sum c, sum d]; the same lane order for every position */
AI __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512d u0 = _mm512_castps_pd(t0), u1 = _mm512_castps_pd(t1);
    __m512 t2 = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(u0, u1)),
                              _mm512_castpd_ps(_mm512_unpackhi_pd(u0, u1)));
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(t2), _mm512_extractf32x8_ps(t2, 1));
    return _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
}

AI float hsum(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

/* ---------------------------------------------------------------- tiles */

/* y[i*ldy + j] (+)= sum_{k<kc} x[i*ldx + k] * row_j[k], i < MR, j < nr.
 * x and the rows point at the start of the K block. */
AI void tile(int dt, int MR, float *y, int64_t ldy, const float *x, int64_t ldx,
             const void *const *rows, int nr, int64_t kc, int accum) {
    __m512 acc[6][4];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 4; j++)
            acc[i][j] = _mm512_setzero_ps();
    const void *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 w0 = loadw(dt, r0, k), w1 = loadw(dt, r1, k);
        __m512 w2 = loadw(dt, r2, k), w3 = loadw(dt, r3, k);
        for (int i = 0; i < MR; i++) {
            __m512 xv = _mm512_loadu_ps(x + i * ldx + k);
            acc[i][0] = _mm512_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xv, w1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(xv, w2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(xv, w3, acc[i][3]);
        }
    }
    if (k < kc) {
        __mmask16 m = tail_mask(kc - k);
        __m512 w0 = loadw_mask(dt, r0, k, m), w1 = loadw_mask(dt, r1, k, m);
        __m512 w2 = loadw_mask(dt, r2, k, m), w3 = loadw_mask(dt, r3, k, m);
        for (int i = 0; i < MR; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);
            acc[i][0] = _mm512_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xv, w1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(xv, w2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(xv, w3, acc[i][3]);
        }
    }
    __mmask8 sm = (__mmask8)((1u << nr) - 1u);
    for (int i = 0; i < MR; i++) {
        __m128 s = reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
        float *yr = y + i * ldy;
        if (accum)
            s = _mm_add_ps(s, _mm_maskz_loadu_ps(sm, yr));
        _mm_mask_storeu_ps(yr, sm, s);
    }
}

/* ---------------------------------------------------------------- matvec */

/* Decode reads its rows [n0, n1) as 4 concurrent streams: the range is cut
 * in 4 quarters and each step takes one row from each, so 4 sequential
 * streams are in flight per core (a single stream per core leaves read
 * bandwidth unused here; the bench's 4-stream read shows the headroom).
 * Per row the arithmetic is the tile's for one activation row (tile() below,
 * MR = 1, one K block of PU_KERN_KC at a time, partial sums added into y per
 * block): a row's result is bitwise the same whether it is decoded alone or
 * within a batch of T > 1 rows, and for any n0/n1 split. */
AI void gemv(int dt, float *y, const float *x, const void *w, int64_t n0, int64_t n1, int64_t K) {
    int64_t q = (n1 - n0 + 3) / 4;
    for (int64_t i = 0; i < q; i++) {
        int64_t r[4];
        int nr = 0;
        for (int j = 0; j < 4; j++)
            if (n0 + j * q + i < n1)
                r[nr++] = n0 + j * q + i;
        for (int64_t k0 = 0; k0 < K; k0 += PU_KERN_KC) {
            int64_t kc = K - k0 < PU_KERN_KC ? K - k0 : PU_KERN_KC;
            const void *rows[4];
            for (int j = 0; j < 4; j++)
                rows[j] =
                    (const char *)wrow(dt, w, r[j < nr ? j : 0], K) + (size_t)k0 * dt_size(dt);
            float out[4];
            tile(dt, 1, out, 0, x + k0, 0, rows, nr, kc, 0);
            for (int j = 0; j < nr; j++)
                y[r[j]] = k0 > 0 ? out[j] + y[r[j]] : out[j];
        }
    }
}

AI void tile_any(int dt, int mr, float *y, int64_t ldy, const float *x, int64_t ldx,
                 const void *const *rows, int nr, int64_t kc, int accum) {
    switch (mr) {
    case 6: tile(dt, 6, y, ldy, x, ldx, rows, nr, kc, accum); break;
    case 5: tile(dt, 5, y, ldy, x, ldx, rows, nr, kc, accum); break;
    case 4: tile(dt, 4, y, ldy, x, ldx, rows, nr, kc, accum); break;
    case 3: tile(dt, 3, y, ldy, x, ldx, rows, nr, kc, accum); break;
    case 2: tile(dt, 2, y, ldy, x, ldx, rows, nr, kc, accum); break;
    default: tile(dt, 1, y, ldy, x, ldx, rows, nr, kc, accum); break;
    }
}

#define MR_MAX 6

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
    /* X is packed per T block into contiguous (TB, KC) panels, one per K
     * block: a panel then sits in L2 without set conflicts whatever ldx is
     * (a power-of-two row stride would make its rows alias in L1/L2). */
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
                /* cache lines of one W row segment; the next tile's rows are
                 * prefetched into L2 while the current tile runs over T */
                int64_t lines = ((int64_t)kc * (int64_t)es + 63) / 64;
                int64_t ntt = (te - tb + MR_MAX - 1) / MR_MAX;
                int64_t pf_per = (4 * lines + ntt - 1) / ntt;
                for (int64_t n = nb0; n < nb1; n += 4) {
                    int nr = nb1 - n < 4 ? (int)(nb1 - n) : 4;
                    const void *rows[4];
                    for (int j = 0; j < 4; j++)
                        rows[j] = (const char *)w +
                                  ((size_t)(n + (j < nr ? j : 0)) * (size_t)K + (size_t)k0) * es;
                    int64_t nn = n + 4 < n1 ? n + 4 : n; /* next tile (itself at the end) */
                    int64_t nnr = n1 - nn < 4 ? n1 - nn : 4;
                    const char *pf_base =
                        (const char *)w + ((size_t)nn * (size_t)K + (size_t)k0) * es;
                    int64_t pf = 0, pf_end = nnr * lines;
                    for (int64_t t = tb; t < te; t += MR_MAX) {
                        for (int64_t e = pf + pf_per; pf < e && pf < pf_end; pf++)
                            _mm_prefetch(pf_base + (size_t)(pf / lines) * (size_t)K * es +
                                             (size_t)(pf % lines) * 64,
                                         _MM_HINT_T1);
                        int mr = te - t < MR_MAX ? (int)(te - t) : MR_MAX;
                        tile_any(dt, mr, y + t * ldy + n, ldy, xpb + (t - tb) * PU_KERN_KC,
                                 PU_KERN_KC, rows, nr, kc, k0 > 0);
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
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, loadw(dt, src, i));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, loadw_mask(dt, src, i, m));
    }
}
static void to_f32_f16(float *dst, const void *src, int64_t n) {
    to_f32_any(DT_F16, dst, src, n);
}
static void to_f32_bf16(float *dst, const void *src, int64_t n) {
    to_f32_any(DT_BF16, dst, src, n);
}

/* ---------------------------------------------------------------- exp */

/* Cephes expf: n = round(x log2 e), r = x - n ln2 (two-step), degree-6
 * polynomial, scaled by 2^n with vscalefps (exact, underflows to 0). */
AI __m512 exp512(__m512 x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-150.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

/* ---------------------------------------------------------------- vector ops */

static float dot(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return hsum(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static void axpy(float *y, float a, const float *x, int64_t n) {
    __m512 av = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(
            y + i, m,
            _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void scale(float *y, float a, int64_t n) {
    __m512 av = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(av, _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(av, _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void add(float *y, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(
            y + i, m,
            _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
}

static void rmsnorm(float *y, const float *x, const float *w, int64_t C, float eps) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= C; i += 32) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        s0 = _mm512_fmadd_ps(a, a, s0);
        s1 = _mm512_fmadd_ps(b, b, s1);
    }
    for (; i + 16 <= C; i += 16) {
        __m512 a = _mm512_loadu_ps(x + i);
        s0 = _mm512_fmadd_ps(a, a, s0);
    }
    if (i < C) {
        __m512 a = _mm512_maskz_loadu_ps(tail_mask(C - i), x + i);
        s1 = _mm512_fmadd_ps(a, a, s1);
    }
    float ss = hsum(_mm512_add_ps(s0, s1));
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    __m512 rv = _mm512_set1_ps(r);
    for (i = 0; i + 16 <= C; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), rv),
                                              _mm512_loadu_ps(w + i)));
    if (i < C) {
        __mmask16 m = tail_mask(C - i);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), rv),
                                            _mm512_maskz_loadu_ps(m, w + i)));
    }
}

AI __m512 silu_mul(__m512 g, __m512 u) {
    __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

static void swiglu(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, silu_mul(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(
            out + i, m,
            silu_mul(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i)));
    }
}

static float vmax(const float *x, int64_t n) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + 16));
    }
    for (; i + 16 <= n; i += 16)
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
    if (i < n)
        m1 = _mm512_mask_max_ps(m1, tail_mask(n - i), m1,
                                _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

static float exp_sum(float *x, int64_t n, float m) {
    __m512 mv = _mm512_set1_ps(m), s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
        _mm512_storeu_ps(x + i, e);
        s0 = _mm512_add_ps(s0, e);
    }
    if (i < n) {
        __mmask16 mk = tail_mask(n - i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), mv));
        _mm512_mask_storeu_ps(x + i, mk, e);
        s1 = _mm512_maskz_mov_ps(mk, e);
    }
    return hsum(_mm512_add_ps(s0, s1));
}

static void softmax(float *x, int64_t n) {
    if (n <= 0)
        return;
    float s = exp_sum(x, n, vmax(x, n));
    scale(x, 1.0f / s, n);
}

const pu_kernels pu_kernels_avx512_table = {
    .level = PU_SIMD_AVX512,
    .name = "avx512",
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, PU_QUANT_ENTRIES(matmul, pu_avx2_mmq)},
    .qmatmul = {[PU_DTYPE_Q8_0] = pu_avx512_qmm_q8_0,
                [PU_DTYPE_Q4_0] = pu_avx512_qmm_q4_0,
                [PU_DTYPE_Q4_1] = pu_avx2_qmm_q4_1,
                [PU_DTYPE_Q5_0] = pu_avx2_qmm_q5_0,
                [PU_DTYPE_Q5_1] = pu_avx2_qmm_q5_1,
                [PU_DTYPE_Q4_K] = pu_avx512_qmm_q4_k,
                [PU_DTYPE_Q5_K] = pu_avx2_qmm_q5_k,
                [PU_DTYPE_Q6_K] = pu_avx2_qmm_q6_k},
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
