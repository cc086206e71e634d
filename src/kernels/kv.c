/*
 * kv.c — KV cache element types (F32 / F16 / LMDeploy-style int8 per
 * (token, head)) and the attention inner loops that read them directly:
 * scores and value sums dequantize inside the dot (pu_kernels.h, "KV cache
 * element types"). Scalar reference here, AVX2 in kv_avx2.c; the AVX-512
 * table uses the AVX2 loops.
 */
#include <math.h>
#include <string.h>
#include <strings.h>

#include "kernels/kernels_impl.h"
#include "kernels/kv_impl.h"

const char *pu_kv_type_name(pu_kv_type t) {
    switch (t) {
    case PU_KV_F32: return "f32";
    case PU_KV_F16: return "f16";
    case PU_KV_Q8: return "q8";
    default: return "?";
    }
}

bool pu_kv_type_parse(const char *s, pu_kv_type *out) {
    static const struct {
        const char *n;
        pu_kv_type t;
    } names[] = {{"f32", PU_KV_F32},  {"fp32", PU_KV_F32}, {"f16", PU_KV_F16},
                 {"fp16", PU_KV_F16}, {"q8", PU_KV_Q8},    {"int8", PU_KV_Q8}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].n)) {
            *out = names[i].t;
            return true;
        }
    return false;
}

size_t pu_kv_elem_size(pu_kv_type t) {
    return t == PU_KV_F16 ? 2 : t == PU_KV_Q8 ? 1 : 4;
}

int64_t pu_kv_row_bytes(pu_kv_type t, int64_t D) {
    return D * (int64_t)pu_kv_elem_size(t) + (t == PU_KV_Q8 ? 2 * (int64_t)sizeof(float) : 0);
}

void pu_kv_store_row(pu_kv_type t, void *dst, float *sz, const float *x, int64_t D) {
    if (t == PU_KV_F32) {
        memcpy(dst, x, (size_t)D * sizeof(float));
    } else if (t == PU_KV_F16) {
        uint16_t *h = dst;
        for (int64_t d = 0; d < D; d++)
            h[d] = pu_f32_to_f16(x[d]);
    } else {
        uint8_t *u = dst;
        float mn = x[0], mx = x[0];
        for (int64_t d = 1; d < D; d++) {
            mn = x[d] < mn ? x[d] : mn;
            mx = x[d] > mx ? x[d] : mx;
        }
        float sc = (mx - mn) / 255.0f;
        if (!(sc > 0.0f) || !isfinite(sc)) { /* constant row (or non-finite input) */
            sc = 0.0f;
            memset(u, 0, (size_t)D);
        } else {
            float inv = 1.0f / sc;
            for (int64_t d = 0; d < D; d++) {
                float v = (x[d] - mn) * inv;
                if (!(v >= 0.0f))
                    v = 0.0f;
                if (v > 255.0f)
                    v = 255.0f;
                u[d] = (uint8_t)lrintf(v); /* round to nearest even */
            }
        }
        sz[0] = sc;
        sz[1] = isfinite(mn) ? mn : 0.0f;
    }
}

void pu_kv_load_row(pu_kv_type t, float *x, const void *src, const float *sz, int64_t D) {
    if (t == PU_KV_F32) {
        memcpy(x, src, (size_t)D * sizeof(float));
    } else if (t == PU_KV_F16) {
        const uint16_t *h = src;
        for (int64_t d = 0; d < D; d++)
            x[d] = pu_f16_to_f32(h[d]);
    } else {
        const uint8_t *u = src;
        for (int64_t d = 0; d < D; d++)
            x[d] = (float)u[d] * sz[0] + sz[1];
    }
}

/* ---------------------------------------------------------------- scalar reference */

static float ref_dot_f16(const float *a, const uint16_t *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * pu_f16_to_f32(b[i]);
    return s;
}

static void ref_axpy_f16(float *y, float a, const uint16_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += a * pu_f16_to_f32(x[i]);
}

static float ref_dot_u8(const float *a, const uint8_t *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * (float)b[i];
    return s;
}

static void ref_axpy_u8(float *y, float a, const uint8_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += a * (float)x[i];
}

const pu_kv_kern pu_kv_kern_ref = {ref_dot_f16, ref_axpy_f16, ref_dot_u8, ref_axpy_u8};

static const pu_kv_kern *kern_for(const pu_kernels *k) {
    return k->level == PU_SIMD_REF ? &pu_kv_kern_ref : &pu_kv_kern_avx2;
}

/* ---------------------------------------------------------------- attention loops */

void pu_kv_scores(const pu_kernels *k, const pu_kv_view *kv, int64_t r0, int64_t nb, int64_t g,
                  int64_t D, const float *q, float qsum, float scale, float *s) {
    if (kv->type == PU_KV_F32) {
        const float *kb = (const float *)kv->k + g * D;
        for (int64_t j = 0; j < nb; j++)
            s[j] = k->dot(q, kb + (r0 + j) * kv->ld, D) * scale;
    } else if (kv->type == PU_KV_F16) {
        const pu_kv_kern *kk = kern_for(k);
        const uint16_t *kb = (const uint16_t *)kv->k + g * D;
        for (int64_t j = 0; j < nb; j++)
            s[j] = kk->dot_f16(q, kb + (r0 + j) * kv->ld, D) * scale;
    } else {
        const pu_kv_kern *kk = kern_for(k);
        const uint8_t *kb = (const uint8_t *)kv->k + g * D;
        for (int64_t j = 0; j < nb; j++) {
            const float *sz = kv->ksz + ((r0 + j) * kv->Hkv + g) * 2;
            s[j] = (sz[0] * kk->dot_u8(q, kb + (r0 + j) * kv->ld, D) + sz[1] * qsum) * scale;
        }
    }
}

void pu_kv_accum(const pu_kernels *k, const pu_kv_view *kv, int64_t r0, int64_t nb, int64_t g,
                 int64_t D, const float *p, float *acc) {
    if (kv->type == PU_KV_F32) {
        const float *vb = (const float *)kv->v + g * D;
        for (int64_t j = 0; j < nb; j++)
            k->axpy(acc, p[j], vb + (r0 + j) * kv->ld, D);
    } else if (kv->type == PU_KV_F16) {
        const pu_kv_kern *kk = kern_for(k);
        const uint16_t *vb = (const uint16_t *)kv->v + g * D;
        for (int64_t j = 0; j < nb; j++)
            kk->axpy_f16(acc, p[j], vb + (r0 + j) * kv->ld, D);
    } else {
        const pu_kv_kern *kk = kern_for(k);
        const uint8_t *vb = (const uint8_t *)kv->v + g * D;
        float z = 0.0f;
        for (int64_t j = 0; j < nb; j++) {
            const float *sz = kv->vsz + ((r0 + j) * kv->Hkv + g) * 2;
            kk->axpy_u8(acc, p[j] * sz[0], vb + (r0 + j) * kv->ld, D);
            z += p[j] * sz[1];
        }
        for (int64_t d = 0; d < D; d++)
            acc[d] += z;
    }
}
