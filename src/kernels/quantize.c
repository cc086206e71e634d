/*
 * quantize.c — fp32 rows to ggml blocks (pu_quantize_row), following ggml's
 * reference quantizers (ggml-quants.c quantize_row_*_ref) step by step:
 *
 *   Q8_0: d = amax/127, q = roundf(x/d)
 *   Q4_0/Q5_0: d = max/-8 (-16) with max the signed value of largest |x|,
 *        q = trunc(x*id + 8.5) (16.5) clipped; the product and add are done in
 *        double, which is what gguf-py does to reproduce ggml's FMA build
 *   Q4_1/Q5_1: d = (max-min)/15 (31), m = min, q = trunc((x-min)*id + 0.5)
 *   Q4_K/Q5_K: per sub-block of 32, make_qkx2_quants (weighted min/scale
 *        search: weights av|x| + |x|, rmin -1 / -0.5, rdelta 0.1, nstep 20 / 15),
 *        6-bit scales/mins relative to the super-block maxima
 *   Q6_K: per sub-block of 16, make_qx_quants(nmax 32, rmse_type 1), int8
 *        scales relative to -128/max_scale
 * nearest_int is round-half-even as ggml's (the 1.5·2^23 trick).
 */
#include <math.h>

#include "kernels/quant_impl.h"

#define GROUP_MAX_EPS 1e-15f

static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

static inline uint16_t f2h(float f) {
    return pu_f32_to_f16(f);
}

static void q8_0(blk_q8_0 *y, const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
    y->d = f2h(d);
    for (int j = 0; j < QK; j++)
        y->qs[j] = (int8_t)roundf(x[j] * id);
}

/* signed max of largest magnitude (first one wins ties, as ggml) */
static float absmax_signed(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void q4_0(blk_q4_0 *y, const float *x) {
    float max = absmax_signed(x, QK);
    float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
    y->d = f2h(d);
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)trunc((double)x[j] * (double)id + 8.5);
        int b = (int)trunc((double)x[j + QK / 2] * (double)id + 8.5);
        a = a < 0 ? 0 : a > 15 ? 15 : a;
        b = b < 0 ? 0 : b > 15 ? 15 : b;
        y->qs[j] = (uint8_t)(a | (b << 4));
    }
}

static void q5_0(blk_q5_0 *y, const float *x) {
    float max = absmax_signed(x, QK);
    float d = max / -16.0f, id = d ? 1.0f / d : 0.0f;
    y->d = f2h(d);
    uint32_t qh = 0;
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)trunc((double)x[j] * (double)id + 16.5);
        int b = (int)trunc((double)x[j + QK / 2] * (double)id + 16.5);
        a = a < 0 ? 0 : a > 31 ? 31 : a;
        b = b < 0 ? 0 : b > 31 ? 31 : b;
        y->qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
        qh |= (uint32_t)((a & 0x10) >> 4) << j;
        qh |= (uint32_t)((b & 0x10) >> 4) << (j + QK / 2);
    }
    memcpy(y->qh, &qh, 4);
}

static void minmax(const float *x, int n, float *mn, float *mx) {
    float a = x[0], b = x[0];
    for (int j = 1; j < n; j++) {
        a = x[j] < a ? x[j] : a;
        b = x[j] > b ? x[j] : b;
    }
    *mn = a, *mx = b;
}

static void q4_1(blk_q4_1 *y, const float *x) {
    float min, max;
    minmax(x, QK, &min, &max);
    float d = (max - min) / 15.0f, id = d ? 1.0f / d : 0.0f;
    y->d = f2h(d);
    y->m = f2h(min);
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)truncf((x[j] - min) * id + 0.5f);
        int b = (int)truncf((x[j + QK / 2] - min) * id + 0.5f);
        a = a < 0 ? 0 : a > 15 ? 15 : a;
        b = b < 0 ? 0 : b > 15 ? 15 : b;
        y->qs[j] = (uint8_t)(a | (b << 4));
    }
}

static void q5_1(blk_q5_1 *y, const float *x) {
    float min, max;
    minmax(x, QK, &min, &max);
    float d = (max - min) / 31.0f, id = d ? 1.0f / d : 0.0f;
    y->d = f2h(d);
    y->m = f2h(min);
    uint32_t qh = 0;
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)truncf((x[j] - min) * id + 0.5f);
        int b = (int)truncf((x[j + QK / 2] - min) * id + 0.5f);
        a = a < 0 ? 0 : a > 31 ? 31 : a;
        b = b < 0 ? 0 : b > 31 ? 31 : b;
        y->qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
        qh |= (uint32_t)((a & 0x10) >> 4) << j;
        qh |= (uint32_t)((b & 0x10) >> 4) << (j + QK / 2);
    }
    memcpy(y->qh, &qh, 4);
}

/* ggml make_qkx2_quants: levels L in [0, nmax] and scale/-min minimising the
 * weighted squared error over a small grid of scales */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        best_mad += weights[i] * diff * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                mad += weights[i] * diff * diff;
            }
            if (mad < best_mad) {
                for (int i = 0; i < n; ++i)
                    L[i] = Laux[i];
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): levels L (256) and the packed scales */
static void qk45_levels(const float *x, int nmax, float rmin, int nstep, uint8_t *scales12,
                        uint16_t *dh, uint16_t *mh, uint8_t *L) {
    float scales[8], mins[8], weights[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                     rmin, 0.1f, nstep);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales12, 0, 12);
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales12[j] = ls;
            scales12[j + 4] = lm;
        } else {
            scales12[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales12[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales12[j - 0] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *dh = f2h(max_scale / 63.f);
    *mh = f2h(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        int sc, m;
        pu_q_scale_min_k4(j, scales12, &sc, &m);
        const float d = pu_f16_to_f32(*dh) * sc;
        if (!d)
            continue;
        const float dm = pu_f16_to_f32(*mh) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
}

static void q4_k(blk_q4_k *y, const float *x) {
    uint8_t L[QK_K];
    qk45_levels(x, 15, -1.f, 20, y->scales, &y->d, &y->dmin, L);
    uint8_t *q = y->qs;
    for (int j = 0; j < QK_K; j += 64) {
        for (int l = 0; l < 32; ++l)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

static void q5_k(blk_q5_k *y, const float *x) {
    uint8_t L[QK_K];
    qk45_levels(x, 31, -0.5f, 15, y->scales, &y->d, &y->dmin, L);
    uint8_t *qh = y->qh, *ql = y->qs;
    memset(qh, 0, QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= m1;
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
        ql += 32;
    }
}

/* ggml make_qx_quants with rmse_type 1 and no importance weights */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void q6_k(blk_q6_k *y, const float *x) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        scales[ib] = scale;
        float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = f2h(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        int v = nearest_int(iscale * scales[ib]);
        y->scales[ib] = (int8_t)(v < 127 ? v : 127);
    }
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = pu_f16_to_f32(y->d) * y->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = nearest_int(x[16 * j + ii] / d);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
            uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                              ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

void pu_quantize_row(pu_dtype t, void *dst, const float *src, int64_t n) {
    uint8_t *o = dst;
    int64_t bs = pu_dtype_block(t), bb = pu_dtype_block_bytes(t);
    PU_ASSERT(bs > 0 && n % bs == 0);
    for (int64_t i = 0; i < n / bs; i++) {
        const float *x = src + i * bs;
        void *y = o + i * bb;
        switch (t) {
        case PU_DTYPE_F32: memcpy(y, x, 4); break;
        case PU_DTYPE_F16: {
            uint16_t h = pu_f32_to_f16(*x);
            memcpy(y, &h, 2);
            break;
        }
        case PU_DTYPE_BF16: {
            uint16_t h = pu_f32_to_bf16(*x);
            memcpy(y, &h, 2);
            break;
        }
        case PU_DTYPE_Q8_0: q8_0(y, x); break;
        case PU_DTYPE_Q4_0: q4_0(y, x); break;
        case PU_DTYPE_Q4_1: q4_1(y, x); break;
        case PU_DTYPE_Q5_0: q5_0(y, x); break;
        case PU_DTYPE_Q5_1: q5_1(y, x); break;
        case PU_DTYPE_Q4_K: q4_k(y, x); break;
        case PU_DTYPE_Q5_K: q5_k(y, x); break;
        case PU_DTYPE_Q6_K: q6_k(y, x); break;
        default: PU_ASSERT(!"bad dtype");
        }
    }
}
