/*
 * kv_impl.h — private to src/kernels: the per-ISA inner loops of attention
 * over F16 / Q8 KV caches (kv.c: scalar reference + dispatch; kv_avx2.c).
 */
#ifndef PU_KV_IMPL_H
#define PU_KV_IMPL_H

#include <stdint.h>

typedef struct pu_kv_kern {
    /* Σ_d a[d] * half(b[d]) */
    float (*dot_f16)(const float *a, const uint16_t *b, int64_t n);
    /* y[d] += a * half(x[d]) */
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int64_t n);
    /* Σ_d a[d] * b[d] (b uint8 codes) */
    float (*dot_u8)(const float *a, const uint8_t *b, int64_t n);
    /* y[d] += a * x[d] (x uint8 codes) */
    void (*axpy_u8)(float *y, float a, const uint8_t *x, int64_t n);
} pu_kv_kern;

extern const pu_kv_kern pu_kv_kern_ref;
extern const pu_kv_kern pu_kv_kern_avx2;

#endif
