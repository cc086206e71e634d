/*
 * quant_panel.h — private to src/kernels: the prefill panel kernels (see the
 * comment below), included by quant_avx2.c (PANEL_VNNI 0: maddubs + madd)
 * and quant_vnni_avx512.c (PANEL_VNNI 1: vpdpbusd on 256-bit vectors,
 * AVX512-VL + VNNI). The includer defines AI, h2f and nib32 (and dot_us
 * for the AVX2 build) first. Same integer block sums in both builds.
 */
#ifndef PU_QUANT_PANEL_H
#define PU_QUANT_PANEL_H

#if PANEL_VNNI
#define PANEL_API
#define PANEL_QMM pu_vnni_panel_qmm
void pu_vnni_panel_qmm(int kind, float *y, int64_t ldy, const pu_qact *x, const void *w, int64_t T,
                       int64_t n0, int64_t np, int64_t K, int64_t rb);
#else
#define PANEL_API static
#define PANEL_QMM panel_qmm
#endif

/* ---------------------------------------------------------------- prefill panels */

/* Prefill of Q4_0 / Q8_0 / Q4_K / Q6_K on 8 weight rows at a time ("panel"): the
 * rows' levels are unpacked once per call and interleaved by 4-element
 * groups, lv[b][g][4c + e] = level of row c, element 32b + 4g + e, so one
 * _mm256_maddubs_epi16 against 4 activation bytes broadcast to every lane
 * gives 8 rows' partial dots in 8 int32 lanes (after the madd), and the
 * scale of a block (d_w of 8 rows × d_a) is one vector FMA per activation
 * row instead of one per (row, row) pair. The 4-bit levels (0..15) let the
 * 16-bit maddubs sums of a whole block add up before the madd (8 × 3810 <
 * 32767): one multiply-pipe uop per 32 products instead of two. Q8_0 keeps
 * the sign trick (|w|, sign(a, w)) and one madd per group.
 * Integer block sums equal the reference's; their fp32 combination is per
 * block in order, with FMA (tested against the scalar reference). */
#define PNC 8 /* weight rows per panel */
#define PNT 4 /* activation rows per micro-kernel call */

/* 8x8 transpose of int32 elements held in 8 ymm */
AI void tr8x8(__m256i r[8]) {
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* panel kinds */
enum { PK_Q4_0, PK_Q8_0, PK_Q4_K, PK_Q6_K };

/* Pack 8 rows (row c at w + c*rb) of nb 32-element blocks: lv (nb*256
 * bytes, 32-aligned), per block dw[8] (d, or for Q4_K d*sc), and for Q4_K
 * mw[8] = dmin*m of each row's sub-block. Q4_K / Q6_K: block b is group b%8
 * of super-block b/8. Q6_K: signed levels q - 32, dw = d, and mw (64 bytes
 * per block) holds two int16 vectors, the int8 scales of the block's halves,
 * each row's repeated in its two 16-bit lanes (for madd). */
static void panel_pack(int kind, const uint8_t *w, int64_t rb, int64_t nb, uint8_t *lv, float *dw,
                       float *mw) {
    __m256i r[8];
    _Alignas(32) int8_t q6[PNC][QK_K];
    for (int64_t b = 0; b < nb; b++) {
        for (int c = 0; c < PNC; c++) {
            const uint8_t *row = w + (size_t)c * (size_t)rb;
            if (kind == PK_Q6_K) {
                const blk_q6_k *bl = (const blk_q6_k *)row + b / 8;
                int j = (int)(b % 8);
                if (j == 0)
                    pu_q_unpack_q6_k(bl, q6[c]);
                r[c] = _mm256_load_si256((const __m256i *)(q6[c] + 32 * j));
                dw[8 * b + c] = h2f(bl->d);
                int16_t *sv = (int16_t *)(mw + 16 * b);
                sv[2 * c] = sv[2 * c + 1] = bl->scales[2 * j];
                sv[16 + 2 * c] = sv[16 + 2 * c + 1] = bl->scales[2 * j + 1];
            } else if (kind == PK_Q4_0) {
                const blk_q4_0 *bl = (const blk_q4_0 *)row + b;
                r[c] = nib32(bl->qs);
                dw[8 * b + c] = h2f(bl->d);
            } else if (kind == PK_Q8_0) {
                const blk_q8_0 *bl = (const blk_q8_0 *)row + b;
                r[c] = _mm256_loadu_si256((const __m256i *)bl->qs);
                dw[8 * b + c] = h2f(bl->d);
            } else {
                const blk_q4_k *bl = (const blk_q4_k *)row + b / 8;
                int j = (int)(b % 8), sc, m;
                __m256i raw = _mm256_loadu_si256((const __m256i *)(bl->qs + 32 * (j / 2)));
                if (j & 1)
                    raw = _mm256_srli_epi16(raw, 4);
                r[c] = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
                pu_q_scale_min_k4(j, bl->scales, &sc, &m);
                dw[8 * b + c] = h2f(bl->d) * (float)sc;
                mw[16 * b + c] = h2f(bl->dmin) * (float)m;
            }
        }
        tr8x8(r);
        for (int g = 0; g < 8; g++)
            _mm256_store_si256((__m256i *)(lv + 256 * b + 32 * g), r[g]);
    }
}

AI __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* NT (<= PNT) activation rows × the 8 panel rows over nb blocks: out[t][c] */
AI void panel_mk(int kind, const uint8_t *lv, const float *dw, const float *mw, int64_t nb,
                 const int8_t *qa, const float *da, const int16_t *sa, int64_t ld, int NT,
                 float *out, int64_t ldo) {
    const int64_t ldb = ld / QK;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[PNT];
    for (int t = 0; t < PNT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *L = lv + 256 * b;
        __m256i is[PNT], h16[PNT];
        for (int t = 0; t < PNT; t++)
            is[t] = h16[t] = _mm256_setzero_si256();
        for (int g = 0; g < 8; g++) {
            __m256i wv = _mm256_load_si256((const __m256i *)(L + 32 * g));
            if (kind == PK_Q6_K) {
                /* |q - 32| <= 32: 4 groups of 16-bit sums fit (4 * 2 * 32 * 127),
                 * then the half's scales through the madd */
                __m256i aw = _mm256_sign_epi8(wv, wv);
                for (int t = 0; t < NT; t++) {
                    __m256i x = _mm256_sign_epi8(bcast4(qa + t * ld + 32 * b + 4 * g), wv);
                    h16[t] = _mm256_add_epi16(h16[t], _mm256_maddubs_epi16(aw, x));
                }
                if ((g & 3) == 3) {
                    __m256i sv = _mm256_load_si256((const __m256i *)(mw + 16 * b + 8 * (g / 4)));
                    for (int t = 0; t < NT; t++) {
                        is[t] = _mm256_add_epi32(is[t], _mm256_madd_epi16(h16[t], sv));
                        h16[t] = _mm256_setzero_si256();
                    }
                }
            } else if (kind == PK_Q8_0) {
                __m256i aw = _mm256_sign_epi8(wv, wv);
                for (int t = 0; t < NT; t++) {
                    __m256i x = _mm256_sign_epi8(bcast4(qa + t * ld + 32 * b + 4 * g), wv);
#if PANEL_VNNI
                    is[t] = _mm256_dpbusd_epi32(is[t], aw, x);
#else
                    is[t] = _mm256_add_epi32(is[t], dot_us(aw, x));
#endif
                }
            } else {
                for (int t = 0; t < NT; t++) {
                    __m256i x = bcast4(qa + t * ld + 32 * b + 4 * g);
#if PANEL_VNNI
                    is[t] = _mm256_dpbusd_epi32(is[t], wv, x);
#else
                    is[t] = _mm256_add_epi16(is[t], _mm256_maddubs_epi16(wv, x));
#endif
                }
            }
        }
        __m256 dv = _mm256_load_ps(dw + 8 * b);
        for (int t = 0; t < NT; t++) {
            __m256i s32 = kind == PK_Q8_0 || kind == PK_Q6_K || PANEL_VNNI
                              ? is[t]
                              : _mm256_madd_epi16(is[t], ones);
            if (kind == PK_Q4_0) /* sum (q - 8) a = sum q a - 8 s_a */
                s32 = _mm256_sub_epi32(s32, _mm256_set1_epi32(8 * (int)sa[t * ldb + b]));
            __m256 a = _mm256_broadcast_ss(da + t * ldb + b);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dv, a), _mm256_cvtepi32_ps(s32), acc[t]);
            if (kind == PK_Q4_K) /* - dmin m_j d_a s_a */
                acc[t] = _mm256_fnmadd_ps(_mm256_load_ps(mw + 16 * b),
                                          _mm256_set1_ps(da[t * ldb + b] * (float)sa[t * ldb + b]),
                                          acc[t]);
        }
    }
    for (int t = 0; t < NT; t++)
        _mm256_storeu_ps(out + t * ldo, acc[t]);
}

#define PANEL_MK(kind)                                                                            \
    static void panel_mk_##kind(const uint8_t *lv, const float *dw, const float *mw, int64_t nb,  \
                                const int8_t *qa, const float *da, const int16_t *sa, int64_t ld, \
                                int NT, float *out, int64_t ldo) {                                \
        switch (NT) {                                                                             \
        case 4: panel_mk(kind, lv, dw, mw, nb, qa, da, sa, ld, 4, out, ldo); break;               \
        case 3: panel_mk(kind, lv, dw, mw, nb, qa, da, sa, ld, 3, out, ldo); break;               \
        case 2: panel_mk(kind, lv, dw, mw, nb, qa, da, sa, ld, 2, out, ldo); break;               \
        default: panel_mk(kind, lv, dw, mw, nb, qa, da, sa, ld, 1, out, ldo); break;              \
        }                                                                                         \
    }
PANEL_MK(PK_Q4_0)
PANEL_MK(PK_Q8_0)
PANEL_MK(PK_Q4_K)
PANEL_MK(PK_Q6_K)

typedef void (*panel_mk_fn)(const uint8_t *, const float *, const float *, int64_t, const int8_t *,
                            const float *, const int16_t *, int64_t, int, float *, int64_t);

/* y[t][n] for n in [n0, n0 + 8*np): panels packed one at a time (the whole
 * K: at most 256 bytes per block, 256 KiB for K = 8192), then swept over
 * all T activation rows in groups of PNT */
PANEL_API void PANEL_QMM(int kind, float *y, int64_t ldy, const pu_qact *x, const void *w,
                         int64_t T, int64_t n0, int64_t np, int64_t K, int64_t rb) {
    int64_t nb = K / QK;
    panel_mk_fn mk = kind == PK_Q4_0   ? panel_mk_PK_Q4_0
                     : kind == PK_Q8_0 ? panel_mk_PK_Q8_0
                     : kind == PK_Q4_K ? panel_mk_PK_Q4_K
                                       : panel_mk_PK_Q6_K;
    size_t lvb = (size_t)nb * 256, fb = (size_t)nb * 8 * sizeof(float);
    uint8_t *buf = pu_malloc_aligned(lvb + 3 * fb + 64, 64);
    uint8_t *lv = buf;
    float *dw = (float *)(buf + lvb), *mw = (float *)(buf + lvb + fb);
    _Alignas(32) float o[PNT][PNC];
    /* activation rows in blocks of about 256 KiB of levels (L2), at least
     * 128 rows: a panel is packed again per block (a few % of the block's
     * work) rather than the rows streaming from L3 for every panel. Q6_K's
     * scalar unpacking costs more than that: one block. */
    int64_t tb = kind == PK_Q6_K ? T : (int64_t)262144 / K / PNT * PNT;
    tb = tb < 32 * PNT ? 32 * PNT : tb;
    for (int64_t tb0 = 0; tb0 < T; tb0 += tb) {
        int64_t tb1 = tb0 + tb < T ? tb0 + tb : T;
        for (int64_t p = 0; p < np; p++) {
            int64_t n = n0 + p * PNC;
            panel_pack(kind, (const uint8_t *)w + n * rb, rb, nb, lv, dw, mw);
            for (int64_t t0 = tb0; t0 < tb1; t0 += PNT) {
                int nt = tb1 - t0 < PNT ? (int)(tb1 - t0) : PNT;
                mk(lv, dw, mw, nb, x->qs + t0 * K, x->d + t0 * nb, x->s + t0 * nb, K, nt, &o[0][0],
                   PNC);
                for (int t = 0; t < nt; t++)
                    memcpy(&y[(t0 + t) * ldy + n], o[t], PNC * sizeof(float));
            }
        }
    }
    pu_free_aligned(buf);
}

/* prefill through the panels from this many activation rows */
#define PANEL_MIN_T 4

PU_UNUSED static int panel_kind(pu_dtype t) {
    return t == PU_DTYPE_Q4_0   ? PK_Q4_0
           : t == PU_DTYPE_Q8_0 ? PK_Q8_0
           : t == PU_DTYPE_Q4_K ? PK_Q4_K
           : t == PU_DTYPE_Q6_K ? PK_Q6_K
                                : -1;
}

#endif
