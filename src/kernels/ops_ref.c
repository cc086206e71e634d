/*
 * ops_ref.c — scalar reference of every kernel: the semantic definition that
 * the SIMD variants are tested against. Plain loops, fp32 accumulation in the
 * natural index order, libm expf. Always built, no ISA flags.
 */
#include <math.h>
#include <string.h>

#include "kernels/quant_impl.h"

/* y (T, ldy) [t, n0..n1) = x (T, ldx) · W[n0..n1, :]^T, W (N, K) */
void pu_ref_matmul_f32(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int64_t T,
                       int64_t n0, int64_t n1, int64_t K) {
    const float *W = w;
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * ldx;
        for (int64_t n = n0; n < n1; n++) {
            const float *wr = W + n * K;
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++)
                s += xr[k] * wr[k];
            y[t * ldy + n] = s;
        }
    }
}

void pu_ref_matmul_f16(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int64_t T,
                       int64_t n0, int64_t n1, int64_t K) {
    const uint16_t *W = w;
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * ldx;
        for (int64_t n = n0; n < n1; n++) {
            const uint16_t *wr = W + n * K;
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++)
                s += xr[k] * pu_f16_to_f32(wr[k]);
            y[t * ldy + n] = s;
        }
    }
}

void pu_ref_matmul_bf16(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                        int64_t T, int64_t n0, int64_t n1, int64_t K) {
    const uint16_t *W = w;
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * ldx;
        for (int64_t n = n0; n < n1; n++) {
            const uint16_t *wr = W + n * K;
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++)
                s += xr[k] * pu_bf16_to_f32(wr[k]);
            y[t * ldy + n] = s;
        }
    }
}

void pu_ref_to_f32_f32(float *dst, const void *src, int64_t n) {
    if (n > 0)
        memmove(dst, src, (size_t)n * sizeof(float));
}

void pu_ref_to_f32_f16(float *dst, const void *src, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = pu_f16_to_f32(s[i]);
}

void pu_ref_to_f32_bf16(float *dst, const void *src, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = pu_bf16_to_f32(s[i]);
}

/* HF InternLM2RMSNorm order: y = w * (x * rsqrt(mean(x^2) + eps)) */
void pu_ref_rmsnorm(float *y, const float *x, const float *w, int64_t C, float eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < C; i++)
        ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    for (int64_t i = 0; i < C; i++)
        y[i] = (x[i] * r) * w[i];
}

float pu_ref_dot(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void pu_ref_axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

void pu_ref_scale(float *y, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] *= a;
}

void pu_ref_add(float *y, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

/* silu(g) * u with silu(g) = g / (1 + exp(-g)) */
void pu_ref_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

float pu_ref_vmax(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* x[i] = exp(x[i] - m); returns the sum (fp32, index order) */
float pu_ref_exp_sum(float *x, int64_t n, float m) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    return s;
}

void pu_ref_softmax(float *x, int64_t n) {
    if (n <= 0)
        return;
    float m = pu_ref_vmax(x, n);
    float s = pu_ref_exp_sum(x, n, m);
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

const pu_kernels pu_kernels_ref_table = {
    .level = PU_SIMD_REF,
    .name = "ref",
    .matmul = {pu_ref_matmul_f32, pu_ref_matmul_f16, pu_ref_matmul_bf16,
                PU_QUANT_ENTRIES(matmul, pu_ref_mmq)},
    .qmatmul = {PU_QUANT_ENTRIES(qmatmul, pu_ref_qmm)},
    .quantize_act = pu_ref_quantize_act,
    .to_f32 = {pu_ref_to_f32_f32, pu_ref_to_f32_f16, pu_ref_to_f32_bf16,
                PU_QUANT_ENTRIES(to_f32, pu_ref_deq)},
    .rmsnorm = pu_ref_rmsnorm,
    .dot = pu_ref_dot,
    .axpy = pu_ref_axpy,
    .scale = pu_ref_scale,
    .add = pu_ref_add,
    .swiglu = pu_ref_swiglu,
    .softmax = pu_ref_softmax,
    .vmax = pu_ref_vmax,
    .exp_sum = pu_ref_exp_sum,
};
