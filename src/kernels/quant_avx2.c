/*
 * quant_avx2.c — AVX2 int8·int8 dot products for the ggml block types and
 * the AVX2 activation quantizer. Compiled with -mavx2 -mfma -mf16c; reached
 * only through the AVX2 (and AVX-512) kernel tables after a CPU check.
 *
 * Per 32 weights: unpack to 32 bytes (signed via abs/sign for Q8_0, the
 * unsigned levels for the others), _mm256_maddubs_epi16 against the int8
 * activations (never saturates: |pair| <= 2*128*127), _mm256_madd_epi16 with
 * ones or with the sub-block scales (int32, exact), then one fp32 FMA by
 * d_w * d_a per block into 8 lanes. The offset / min terms (Q4_0 -8 d,
 * Q5_0 -16 d, Q4_1/Q5_1 m, K-quant dmin m_j) go through the exact activation
 * sums s_a: one vector FMA per 8 blocks. The integer sums equal the scalar
 * reference's (quant.c); their fp32 combination differs in order (lanes,
 * the offset term apart, a horizontal sum), so results agree with it to
 * ~1e-6 relative of sum|terms| (tested bound 2e-6).
 *
 * Prefill: each weight block is unpacked once and used for up to 4 activation
 * rows (4 accumulators), rows of W in the outer loop so a weight row slice
 * stays in L1 while the activation rows of a K slice (QKC) stream from L2.
 */
#include <immintrin.h>
#include <math.h>

#include "kernels/quant_impl.h"

#define AI static inline __attribute__((always_inline))

AI float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI float h2f(uint16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* u8 x s8 -> 8 int32 lanes (sum of 4 products each) */
AI __m256i dot_us(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* 16 bytes of packed nibbles -> 32 bytes: low nibbles (elements 0..15) in the
 * low lane, high nibbles (16..31) in the high lane */
AI __m256i nib32(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* bit j of the u32 at qh -> 0x10 in byte j */
AI __m256i bits32(const uint8_t *qh) {
    __m256i v = _mm256_set1_epi32((int)pu_q_u32(qh));
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    v = _mm256_shuffle_epi8(v, shuf);
    const __m256i bm = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bm), bm);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AI __m256i lda(const int8_t *p) {
    return _mm256_loadu_si256((const __m256i *)p);
}

/* ---------------------------------------------------------------- activations */

void pu_avx2_quantize_act(int8_t *qs, float *d, int16_t *s, const float *x, int64_t K) {
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < K / QK; b++) {
        const float *xb = x + b * QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m =
            _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sgn, v0), _mm256_andnot_ps(sgn, v1)),
                          _mm256_max_ps(_mm256_andnot_ps(sgn, v2), _mm256_andnot_ps(sgn, v3)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
#define rm (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, vid), rm));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, vid), rm));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, vid), rm));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, vid), rm));
        /* clamp to [-127, 127] as the reference */
        const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
        i0 = _mm256_max_epi32(_mm256_min_epi32(i0, hi), lo);
        i1 = _mm256_max_epi32(_mm256_min_epi32(i1, hi), lo);
        i2 = _mm256_max_epi32(_mm256_min_epi32(i2, hi), lo);
        i3 = _mm256_max_epi32(_mm256_min_epi32(i3, hi), lo);
#undef rm
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_hadd_epi32(s4, s4);
        s4 = _mm_hadd_epi32(s4, s4);
        __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        /* packs interleave 128-bit lanes: restore element order */
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(qs + b * QK), p);
        d[b] = db;
        s[b] = (int16_t)_mm_cvtsi128_si32(s4);
    }
}

/* ---------------------------------------------------------------- dots */

#define MAXNT 4
/* accumulator of row t for block parity j: 4 rows give 4 independent FMA
 * chains; a single row alternates two (the FMA latency would bound it) */
#define ACC(t, j) acc[NT == 1 ? ((j)&1) : (t)]

/* Every kernel: y[tt] = dot(weight row w, activation row tt) for tt < NT. */
/* K elements of the weight row; activation row t at qa + t*ld, da/sa + t*ld/32 */
#define ROWS_ARGS                                                                                  \
    const uint8_t *w, const int8_t *qa, const float *da, const int16_t *sa, int64_t K, int64_t ld, \
        int NT, float *out

/* the 32-element types: Q8_0 (signed levels via abs/sign), Q4_0, Q5_0,
 * Q4_1, Q5_1 (unsigned levels + min term) */
enum { LG_Q8_0, LG_Q4_0, LG_Q5_0, LG_Q4_1, LG_Q5_1 };

AI size_t lg_bytes(int kind) {
    return kind == LG_Q8_0   ? 34
           : kind == LG_Q4_0 ? 18
           : kind == LG_Q5_0 ? 22
           : kind == LG_Q4_1 ? 20
                             : 24;
}

/* levels of one block: signed for Q8_0, unsigned for the others (their
 * offset -8 / -16 or min m is applied through the activation sums s_a) */
AI __m256i lg_levels(int kind, const uint8_t *b) {
    switch (kind) {
    case LG_Q8_0: return _mm256_loadu_si256((const __m256i *)(b + 2));
    case LG_Q4_0: return nib32(b + 2);
    case LG_Q5_0: return _mm256_or_si256(nib32(b + 6), bits32(b + 2));
    case LG_Q4_1: return nib32(b + 4);
    default: return _mm256_or_si256(nib32(b + 8), bits32(b + 4));
    }
}

AI uint16_t lg_half(const uint8_t *b, int off) {
    uint16_t h;
    memcpy(&h, b + off, 2);
    return h;
}

/* fp16 field at `off` of 8 consecutive blocks, as fp32 */
AI __m256 lg_halves8(const uint8_t *b, size_t bs, int off) {
    __m128i h = _mm_setr_epi16((short)lg_half(b, off), (short)lg_half(b + bs, off),
                               (short)lg_half(b + 2 * bs, off), (short)lg_half(b + 3 * bs, off),
                               (short)lg_half(b + 4 * bs, off), (short)lg_half(b + 5 * bs, off),
                               (short)lg_half(b + 6 * bs, off), (short)lg_half(b + 7 * bs, off));
    return _mm256_cvtph_ps(h);
}

AI void rows_legacy(ROWS_ARGS, int kind) {
    const int64_t ldb = ld / QK;
    const bool sgn = kind == LG_Q8_0;
    /* Q4_0 / Q5_0: d (q - off) = d q + (-off d): the min term with m = -off d */
    const float off = kind == LG_Q4_0 ? -8.0f : kind == LG_Q5_0 ? -16.0f : 0.0f;
    const size_t bs = lg_bytes(kind);
    int64_t nb = K / QK;
    __m256 acc[MAXNT + 1]; /* NT == 1: two chains (blocks alternate) */
    for (int t = 0; t < MAXNT + 1; t++)
        acc[t] = _mm256_setzero_ps();
    int64_t i = 0;
    /* groups of 8 blocks: the 8 products d_w*d_a per activation row in one
     * vector multiply (broadcast from memory below); the _1 types' min term
     * sum_b m_b d_a,b s_a,b as one vector FMA */
    for (; i + 8 <= nb; i += 8) {
        const uint8_t *b0 = w + (size_t)i * bs;
        __m256 dwv = lg_halves8(b0, bs, 0);
        __m256 mwv = sgn           ? _mm256_setzero_ps()
                     : off != 0.0f ? _mm256_mul_ps(_mm256_set1_ps(off), dwv)
                                   : lg_halves8(b0, bs, 2);
        _Alignas(32) float dd[MAXNT][8];
        for (int t = 0; t < NT; t++) {
            __m256 dav = _mm256_loadu_ps(da + t * ldb + i);
            _mm256_store_ps(dd[t], _mm256_mul_ps(dwv, dav));
            if (!sgn) {
                __m256 sv = _mm256_cvtepi32_ps(
                    _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(sa + t * ldb + i))));
                ACC(t, 1) = _mm256_fmadd_ps(mwv, _mm256_mul_ps(dav, sv), ACC(t, 1));
            }
        }
        for (int j = 0; j < 8; j++) {
            __m256i q = lg_levels(kind, b0 + (size_t)j * bs);
            __m256i aq = sgn ? _mm256_sign_epi8(q, q) : q;
            for (int t = 0; t < NT; t++) {
                __m256i x = lda(qa + t * ld + (i + j) * QK);
                __m256i p = dot_us(aq, sgn ? _mm256_sign_epi8(x, q) : x);
                ACC(t, j) = _mm256_fmadd_ps(_mm256_broadcast_ss(&dd[t][j]), _mm256_cvtepi32_ps(p),
                                            ACC(t, j));
            }
        }
    }
    for (; i < nb; i++) { /* tail blocks one at a time */
        const uint8_t *b = w + (size_t)i * bs;
        __m256i q = lg_levels(kind, b);
        __m256i aq = sgn ? _mm256_sign_epi8(q, q) : q;
        float dw = h2f(lg_half(b, 0));
        float mw = sgn ? 0.0f : off != 0.0f ? off * dw : h2f(lg_half(b, 2));
        for (int t = 0; t < NT; t++) {
            __m256i x = lda(qa + t * ld + i * QK);
            __m256i p = dot_us(aq, sgn ? _mm256_sign_epi8(x, q) : x);
            float a = da[t * ldb + i];
            ACC(t, i) = _mm256_fmadd_ps(_mm256_set1_ps(dw * a), _mm256_cvtepi32_ps(p), ACC(t, i));
            if (!sgn) /* into lane 0 of the other chain: lanes are summed at the end */
                ACC(t, i + 1) =
                    _mm256_add_ps(ACC(t, i + 1), _mm256_setr_ps((mw * a) * (float)sa[t * ldb + i],
                                                                0, 0, 0, 0, 0, 0, 0));
        }
    }
    for (int t = 0; t < NT; t++)
        out[t] = hsum(NT == 1 ? _mm256_add_ps(acc[0], acc[1]) : acc[t]);
}

/* Q4_K / Q5_K */
AI void rows_qk45(ROWS_ARGS, bool five) {
    const int64_t ldb = ld / QK;
    int64_t nb = K / QK_K;
    __m256 acc[MAXNT + 1]; /* NT == 1: two chains (blocks alternate) */
    for (int t = 0; t < MAXNT + 1; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *scales, *qs, *qh = NULL;
        uint16_t dh, mh;
        if (five) {
            const blk_q5_k *b = (const blk_q5_k *)(w + i * sizeof(blk_q5_k));
            scales = b->scales, qs = b->qs, qh = b->qh, dh = b->d, mh = b->dmin;
        } else {
            const blk_q4_k *b = (const blk_q4_k *)(w + i * sizeof(blk_q4_k));
            scales = b->scales, qs = b->qs, dh = b->d, mh = b->dmin;
        }
        float d = h2f(dh), dmin = h2f(mh);
        /* unpack the super-block's levels once (L1), reused by the NT rows */
        _Alignas(32) uint8_t lv[QK_K];
        {
            __m256i hb = five ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i q0 = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
                __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F));
                if (five) {
                    /* bit 2c / 2c+1 of qh[l] -> bit 4 */
                    __m256i h0 =
                        _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), _mm256_set1_epi8(1));
                    __m256i h1 =
                        _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), _mm256_set1_epi8(1));
                    q0 = _mm256_or_si256(q0, _mm256_slli_epi16(h0, 4));
                    q1 = _mm256_or_si256(q1, _mm256_slli_epi16(h1, 4));
                }
                _mm256_store_si256((__m256i *)(lv + 64 * c), q0);
                _mm256_store_si256((__m256i *)(lv + 64 * c + 32), q1);
            }
        }
        /* sub-block scales/mins; per activation row the 8 products d*d_a
         * (broadcast from memory below) and the min term of the whole
         * super-block as one vector FMA: sum_j (dmin m_j) (d_a,j s_a,j) */
        int sc[8], mn[8];
        for (int j = 0; j < 8; j++)
            pu_q_scale_min_k4(j, scales, &sc[j], &mn[j]);
        __m256 wmin = _mm256_mul_ps(_mm256_set1_ps(dmin),
                                    _mm256_cvtepi32_ps(_mm256_setr_epi32(
                                        mn[0], mn[1], mn[2], mn[3], mn[4], mn[5], mn[6], mn[7])));
        _Alignas(32) float dd[MAXNT][8];
        for (int t = 0; t < NT; t++) {
            __m256 dav = _mm256_loadu_ps(da + t * ldb + i * 8);
            _mm256_store_ps(dd[t], _mm256_mul_ps(_mm256_set1_ps(d), dav));
            __m256 sv = _mm256_cvtepi32_ps(
                _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(sa + t * ldb + i * 8))));
            ACC(t, 1) = _mm256_fnmadd_ps(wmin, _mm256_mul_ps(dav, sv), ACC(t, 1));
        }
        for (int c = 0; c < 4; c++) {
            __m256i q0 = _mm256_load_si256((const __m256i *)(lv + 64 * c));
            __m256i q1 = _mm256_load_si256((const __m256i *)(lv + 64 * c + 32));
            __m256i vs0 = _mm256_set1_epi16((short)sc[2 * c]);
            __m256i vs1 = _mm256_set1_epi16((short)sc[2 * c + 1]);
            int64_t a0 = i * 8 + 2 * c;
            for (int t = 0; t < NT; t++) {
                const int8_t *qt = qa + t * ld + a0 * QK;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q0, lda(qt)), vs0);
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, lda(qt + QK)), vs1);
                ACC(t, 0) = _mm256_fmadd_ps(_mm256_broadcast_ss(&dd[t][2 * c]),
                                            _mm256_cvtepi32_ps(p0), ACC(t, 0));
                ACC(t, 1) = _mm256_fmadd_ps(_mm256_broadcast_ss(&dd[t][2 * c + 1]),
                                            _mm256_cvtepi32_ps(p1), ACC(t, 1));
            }
        }
    }
    for (int t = 0; t < NT; t++)
        out[t] = hsum(NT == 1 ? _mm256_add_ps(acc[0], acc[1]) : acc[t]);
}

AI void rows_q6_k(ROWS_ARGS) {
    const int64_t ldb = ld / QK;
    int64_t nb = K / QK_K;
    __m256 acc[MAXNT + 1]; /* NT == 1: two chains (blocks alternate) */
    for (int t = 0; t < MAXNT + 1; t++)
        acc[t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m256i k32 = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < nb; i++) {
        const blk_q6_k *b = (const blk_q6_k *)(w + i * sizeof(blk_q6_k));
        float d = h2f(b->d);
        _Alignas(32) float dd[MAXNT][8]; /* d * d_a of the 8 groups, per row */
        for (int t = 0; t < NT; t++)
            _mm256_store_ps(
                dd[t], _mm256_mul_ps(_mm256_set1_ps(d), _mm256_loadu_ps(da + t * ldb + i * 8)));
        for (int n = 0; n < 2; n++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * n));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * n + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * n));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
            q[1] = _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
            q[2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
            q[3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
            for (int g = 0; g < 4; g++) {
                int j = 4 * n + g; /* 32-element group in the super-block */
                __m256i vs = _mm256_set_m128i(_mm_set1_epi16(b->scales[2 * j + 1]),
                                              _mm_set1_epi16(b->scales[2 * j]));
                int64_t a = i * 8 + j;
                for (int t = 0; t < NT; t++) {
                    __m256i x = lda(qa + t * ld + a * QK);
                    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[g], x),
                                                 _mm256_maddubs_epi16(k32, x));
                    p = _mm256_madd_epi16(p, vs);
                    ACC(t, g) = _mm256_fmadd_ps(_mm256_broadcast_ss(&dd[t][j]),
                                                _mm256_cvtepi32_ps(p), ACC(t, g));
                }
            }
        }
    }
    for (int t = 0; t < NT; t++)
        out[t] = hsum(NT == 1 ? _mm256_add_ps(acc[0], acc[1]) : acc[t]);
}

#define PANEL_VNNI 0
#include "kernels/quant_panel.h"

/* ---------------------------------------------------------------- matmuls */

/* Prefill: K is cut in slices of QKC elements so the slice of all T
 * activation rows stays in L2 while each weight row slice (L1) meets them;
 * partial sums of the slices are added into y in slice order. */
#define QKC 2048

#define QMM(name, DT, CALL)                                                                 \
    static void rows_##name##_nt(ROWS_ARGS) {                                               \
        if (NT == MAXNT) {                                                                  \
            enum { NT_ = MAXNT };                                                           \
            CALL(w, qa, da, sa, K, ld, NT_, out);                                           \
        } else {                                                                            \
            for (int t_ = 0; t_ < NT; t_++) {                                               \
                enum { NT1 = 1 };                                                           \
                CALL(w, qa + t_ * ld, da + t_ * (ld / QK), sa + t_ * (ld / QK), K, ld, NT1, \
                     out + t_);                                                             \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    static void qmm_rows_##name(PU_QMM_ARGS) {                                              \
        int64_t rb = pu_dtype_nbytes(DT, K), nb = K / QK;                                   \
        int64_t kc = T > MAXNT && K > QKC ? QKC : K;                                        \
        float o[MAXNT];                                                                     \
        for (int64_t k0 = 0; k0 < K; k0 += kc) {                                            \
            int64_t kl = K - k0 < kc ? K - k0 : kc;                                         \
            int64_t wo = pu_dtype_nbytes(DT, k0);                                           \
            for (int64_t n = n0; n < n1; n++) {                                             \
                const uint8_t *wr = (const uint8_t *)w + n * rb + wo;                       \
                for (int64_t t0 = 0; t0 < T; t0 += MAXNT) {                                 \
                    int nt = T - t0 < MAXNT ? (int)(T - t0) : MAXNT;                        \
                    rows_##name##_nt(wr, x->qs + t0 * K + k0, x->d + t0 * nb + k0 / QK,     \
                                     x->s + t0 * nb + k0 / QK, kl, K, nt, o);               \
                    for (int t_ = 0; t_ < nt; t_++) {                                       \
                        float *yy = &y[(t0 + t_) * ldy + n];                                \
                        *yy = k0 ? *yy + o[t_] : o[t_];                                     \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    void pu_avx2_qmm_##name(PU_QMM_ARGS) {                                                  \
        int kind = panel_kind(DT);                                                          \
        if (kind >= 0 && T >= PANEL_MIN_T && n1 - n0 >= PNC) {                              \
            int64_t np = (n1 - n0) / PNC;                                                   \
            panel_qmm(kind, y, ldy, x, w, T, n0, np, K, pu_dtype_nbytes(DT, K));            \
            n0 += np * PNC;                                                                 \
        }                                                                                   \
        if (n0 < n1)                                                                        \
            qmm_rows_##name(y, ldy, x, w, T, n0, n1, K);                                    \
    }                                                                                       \
    void pu_avx2_mmq_##name(PU_MM_ARGS) {                                                   \
        pu_quant_matmul_via_(&pu_kernels_avx2_table, DT, y, ldy, x, ldx, w, T, n0, n1, K);  \
    }

#define C_Q8_0(...) rows_legacy(__VA_ARGS__, LG_Q8_0)
#define C_Q4_0(...) rows_legacy(__VA_ARGS__, LG_Q4_0)
#define C_Q5_0(...) rows_legacy(__VA_ARGS__, LG_Q5_0)
#define C_Q4_1(...) rows_legacy(__VA_ARGS__, LG_Q4_1)
#define C_Q5_1(...) rows_legacy(__VA_ARGS__, LG_Q5_1)
#define C_Q4_K(...) rows_qk45(__VA_ARGS__, false)
#define C_Q5_K(...) rows_qk45(__VA_ARGS__, true)
#define C_Q6_K(...) rows_q6_k(__VA_ARGS__)

QMM(q8_0, PU_DTYPE_Q8_0, C_Q8_0)
QMM(q4_0, PU_DTYPE_Q4_0, C_Q4_0)
QMM(q4_1, PU_DTYPE_Q4_1, C_Q4_1)
QMM(q5_0, PU_DTYPE_Q5_0, C_Q5_0)
QMM(q5_1, PU_DTYPE_Q5_1, C_Q5_1)
QMM(q4_k, PU_DTYPE_Q4_K, C_Q4_K)
QMM(q5_k, PU_DTYPE_Q5_K, C_Q5_K)
QMM(q6_k, PU_DTYPE_Q6_K, C_Q6_K)
