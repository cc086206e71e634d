/*
 * gguf.c — GGUF (v2/v3, little-endian) parsing and the GGUF model loader.
 *
 * Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/value
 * pairs (u64-length string key, u32 type, value; arrays are u32 elem type +
 * u64 count + elements); n_tensors infos (name, u32 n_dims, u64 ne[n_dims],
 * u32 ggml type, u64 offset); padding to general.alignment (default 32);
 * the data section. ggml's ne[0] is the innermost dimension, so ne = [K, N]
 * is the row-major (N, K) matrix.
 *
 * Every count is checked against the bytes left before anything is
 * allocated from it; strings and arrays are bounds-checked; tensor offsets
 * must be aligned and inside the data section. The loader maps the `llama`
 * and `internlm2` architectures onto pu_model (separate Q/K/V, which llama.cpp
 * permutes for adjacent-pair RoPE: rope_interleaved = true).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/loaders.h"

#define GGUF_DEFAULT_ALIGNMENT 32

/* ggml types: block size and bytes per block (0 = unknown) */
typedef struct {
    const char *name;
    int blck;
    int size;
} ggml_type_info;

static const ggml_type_info ggml_types[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},       [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292}, [24] = {"I8", 1, 1},
    [25] = {"I16", 1, 2},      [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},      [30] = {"BF16", 1, 2},
};
#define N_GGML_TYPES ((uint32_t)(sizeof ggml_types / sizeof ggml_types[0]))

static const ggml_type_info *ggml_type(uint32_t t) {
    return t < N_GGML_TYPES && ggml_types[t].name ? &ggml_types[t] : NULL;
}

/* ------------------------------------------------------------------------ */
/* bounded reader                                                           */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *path;
} rd;

static size_t left(const rd *r) {
    return r->len - r->pos;
}

static pu_status rd_bytes(rd *r, void *dst, size_t n, const char *what) {
    if (n > left(r))
        return pu_err_set(PU_ERR_FORMAT, "%s: truncated file reading %s at offset %zu", r->path,
                          what, r->pos);
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return PU_OK;
}

static pu_status rd_u32(rd *r, uint32_t *v, const char *what) {
    return rd_bytes(r, v, 4, what);
}
static pu_status rd_u64(rd *r, uint64_t *v, const char *what) {
    return rd_bytes(r, v, 8, what);
}

static pu_status rd_str(rd *r, const char **s, uint64_t *n, const char *what) {
    PU_TRY(rd_u64(r, n, what));
    if (*n > left(r))
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: %s: string length %llu at offset %zu exceeds the file (%zu bytes "
                          "left)",
                          r->path, what, (unsigned long long)*n, r->pos - 8, left(r));
    *s = (const char *)r->p + r->pos;
    r->pos += (size_t)*n;
    return PU_OK;
}

static int scalar_size(uint32_t t) {
    switch (t) {
    case PU_GGUF_U8:
    case PU_GGUF_I8:
    case PU_GGUF_BOOL: return 1;
    case PU_GGUF_U16:
    case PU_GGUF_I16: return 2;
    case PU_GGUF_U32:
    case PU_GGUF_I32:
    case PU_GGUF_F32: return 4;
    case PU_GGUF_U64:
    case PU_GGUF_I64:
    case PU_GGUF_F64: return 8;
    default: return 0;
    }
}

static void decode_scalar(uint32_t t, const uint8_t *b, pu_gguf_kv *kv) {
    switch (t) {
    case PU_GGUF_U8:
    case PU_GGUF_BOOL:
        kv->u = b[0];
        kv->i = b[0];
        break;
    case PU_GGUF_I8:
        kv->i = (int8_t)b[0];
        kv->u = (uint64_t)kv->i;
        break;
    case PU_GGUF_U16: {
        uint16_t v;
        memcpy(&v, b, 2);
        kv->u = v;
        kv->i = v;
        break;
    }
    case PU_GGUF_I16: {
        int16_t v;
        memcpy(&v, b, 2);
        kv->i = v;
        kv->u = (uint64_t)kv->i;
        break;
    }
    case PU_GGUF_U32: {
        uint32_t v;
        memcpy(&v, b, 4);
        kv->u = v;
        kv->i = v;
        break;
    }
    case PU_GGUF_I32: {
        int32_t v;
        memcpy(&v, b, 4);
        kv->i = v;
        kv->u = (uint64_t)kv->i;
        break;
    }
    case PU_GGUF_U64: {
        uint64_t v;
        memcpy(&v, b, 8);
        kv->u = v;
        kv->i = v > INT64_MAX ? INT64_MAX : (int64_t)v;
        break;
    }
    case PU_GGUF_I64: {
        int64_t v;
        memcpy(&v, b, 8);
        kv->i = v;
        kv->u = (uint64_t)v;
        break;
    }
    case PU_GGUF_F32: {
        float v;
        memcpy(&v, b, 4);
        kv->f = v;
        return;
    }
    case PU_GGUF_F64: {
        double v;
        memcpy(&v, b, 8);
        kv->f = v;
        return;
    }
    default: return;
    }
    kv->f = (double)kv->i;
}

/* ------------------------------------------------------------------------ */
/* duplicate detection: open addressing over (ptr, len) names               */

typedef struct {
    const char *s;
    uint64_t n;
} name_ref;

static bool has_duplicate(const name_ref *names, int64_t n, int64_t *dup) {
    if (n < 2)
        return false;
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    int64_t *slot = pu_malloc(cap * sizeof *slot);
    for (size_t i = 0; i < cap; i++)
        slot[i] = -1;
    bool found = false;
    for (int64_t i = 0; i < n && !found; i++) {
        size_t h = (size_t)pu_hash64(names[i].s, (size_t)names[i].n) & (cap - 1);
        while (slot[h] >= 0) {
            const name_ref *o = &names[slot[h]];
            if (o->n == names[i].n && memcmp(o->s, names[i].s, (size_t)o->n) == 0) {
                *dup = i;
                found = true;
                break;
            }
            h = (h + 1) & (cap - 1);
        }
        if (!found)
            slot[h] = i;
    }
    pu_free(slot);
    return found;
}

/* ------------------------------------------------------------------------ */
/* parser                                                                   */

void pu_gguf_free_(pu_gguf_file *f) {
    if (!f)
        return;
    pu_free(f->kv);
    pu_free(f->t);
    memset(f, 0, sizeof *f);
}

static pu_status parse_kv(rd *r, pu_gguf_kv *kv, int64_t idx) {
    char what[64];
    snprintf(what, sizeof what, "key of KV pair %lld", (long long)idx);
    PU_TRY(rd_str(r, &kv->key, &kv->key_len, what));
    int kl = kv->key_len > 200 ? 200 : (int)kv->key_len;
    PU_TRY(rd_u32(r, &kv->type, "KV type"));
    if (kv->type == PU_GGUF_STRING)
        return rd_str(r, &kv->str, &kv->str_len, "KV string value");
    if (kv->type == PU_GGUF_ARRAY) {
        PU_TRY(rd_u32(r, &kv->arr_type, "array type"));
        PU_TRY(rd_u64(r, &kv->arr_n, "array length"));
        if (kv->arr_type == PU_GGUF_STRING) {
            if (kv->arr_n > left(r) / 8)
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: KV '%.*s': array of %llu strings exceeds the file", r->path,
                                  kl, kv->key, (unsigned long long)kv->arr_n);
            kv->str = (const char *)r->p + r->pos; /* first element */
            for (uint64_t i = 0; i < kv->arr_n; i++) {
                const char *s = NULL;
                uint64_t n = 0;
                PU_TRY(rd_str(r, &s, &n, "array string element"));
            }
            return PU_OK;
        }
        int es = scalar_size(kv->arr_type);
        if (es == 0)
            return pu_err_set(PU_ERR_FORMAT, "%s: KV '%.*s': unsupported array element type %u",
                              r->path, kl, kv->key, kv->arr_type);
        if (kv->arr_n > left(r) / (uint64_t)es)
            return pu_err_set(PU_ERR_FORMAT,
                              "%s: KV '%.*s': array of %llu elements exceeds the file", r->path, kl,
                              kv->key, (unsigned long long)kv->arr_n);
        kv->str = (const char *)r->p + r->pos;
        r->pos += (size_t)(kv->arr_n * (uint64_t)es);
        return PU_OK;
    }
    int sz = scalar_size(kv->type);
    if (sz == 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: KV '%.*s': unknown value type %u", r->path, kl,
                          kv->key, kv->type);
    uint8_t b[8] = {0};
    PU_TRY(rd_bytes(r, b, (size_t)sz, "KV value"));
    decode_scalar(kv->type, b, kv);
    return PU_OK;
}

static pu_status parse_tensor_info(rd *r, pu_gguf_tensor *t, int64_t idx) {
    char what[64];
    snprintf(what, sizeof what, "name of tensor %lld", (long long)idx);
    PU_TRY(rd_str(r, &t->name, &t->name_len, what));
    int nl = t->name_len > 200 ? 200 : (int)t->name_len;
    PU_TRY(rd_u32(r, &t->n_dims, "tensor n_dims"));
    if (t->n_dims < 1 || t->n_dims > 4)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%.*s': n_dims %u (expected 1..4)", r->path,
                          nl, t->name, t->n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < 4; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne = 0;
        PU_TRY(rd_u64(r, &ne, "tensor ne"));
        if (ne > (uint64_t)INT64_MAX || __builtin_mul_overflow(numel, ne, &numel) ||
            numel > (uint64_t)INT64_MAX / 8)
            return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%.*s': dimension ne[%u] = %llu too large",
                              r->path, nl, t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    PU_TRY(rd_u32(r, &t->type, "tensor type"));
    PU_TRY(rd_u64(r, &t->offset, "tensor offset"));
    const ggml_type_info *ti = ggml_type(t->type);
    t->nbytes = -1;
    if (ti) {
        if (t->ne[0] % ti->blck != 0)
            return pu_err_set(PU_ERR_FORMAT,
                              "%s: tensor '%.*s': ne[0] = %lld is not a multiple of the %s block "
                              "size %d",
                              r->path, nl, t->name, (long long)t->ne[0], ti->name, ti->blck);
        t->nbytes = (int64_t)(numel / (uint64_t)ti->blck * (uint64_t)ti->size);
    }
    return PU_OK;
}

pu_status pu_gguf_parse_(const void *buf, size_t len, const char *path, pu_gguf_file *out) {
    memset(out, 0, sizeof *out);
    rd r = {.p = buf, .len = buf ? len : 0, .pos = 0, .path = path};
    char magic[4] = {0};
    if (rd_bytes(&r, magic, 4, "magic") != PU_OK || memcmp(magic, "GGUF", 4) != 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
    PU_TRY(rd_u32(&r, &out->version, "version"));
    if (out->version == 1)
        return pu_err_set(PU_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported (need 2 or 3)",
                          path);
    if ((out->version & 0xffff) == 0 && out->version != 0)
        return pu_err_set(PU_ERR_UNSUPPORTED, "%s: big-endian GGUF is not supported", path);
    if (out->version != 2 && out->version != 3)
        return pu_err_set(PU_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (need 2 or 3)",
                          path, out->version);
    uint64_t nt = 0, nkv = 0;
    PU_TRY(rd_u64(&r, &nt, "n_tensors"));
    PU_TRY(rd_u64(&r, &nkv, "n_kv"));
    /* a KV pair takes >= 13 bytes, a tensor info >= 32: reject impossible counts */
    if (nkv > left(&r) / 13)
        return pu_err_set(PU_ERR_FORMAT, "%s: n_kv = %llu is impossible for a %zu-byte file", path,
                          (unsigned long long)nkv, len);
    if (nt > left(&r) / 32)
        return pu_err_set(PU_ERR_FORMAT, "%s: n_tensors = %llu is impossible for a %zu-byte file",
                          path, (unsigned long long)nt, len);
    /* arrays grow as records are actually parsed, so memory stays
     * proportional to the bytes consumed, not to the claimed counts */
    size_t cap_kv = 0, cap_t = 0;
    pu_status s = PU_OK;
    name_ref *names = NULL;
    for (uint64_t i = 0; i < nkv; i++) {
        if ((size_t)i == cap_kv) {
            cap_kv = cap_kv ? cap_kv * 2 : 32;
            out->kv = pu_realloc(out->kv, cap_kv * sizeof *out->kv);
        }
        memset(&out->kv[i], 0, sizeof out->kv[i]);
        s = parse_kv(&r, &out->kv[i], (int64_t)i);
        if (s != PU_OK)
            goto fail;
        out->n_kv = (int64_t)i + 1;
    }
    names = pu_calloc((size_t)out->n_kv + 1, sizeof *names);
    for (int64_t i = 0; i < out->n_kv; i++)
        names[i] = (name_ref){out->kv[i].key, out->kv[i].key_len};
    int64_t dup;
    if (has_duplicate(names, out->n_kv, &dup)) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: duplicate KV key '%.*s'", path,
                       (int)(names[dup].n > 200 ? 200 : names[dup].n), names[dup].s);
        goto fail;
    }
    out->alignment = GGUF_DEFAULT_ALIGNMENT;
    const pu_gguf_kv *al = pu_gguf_find_kv_(out, "general.alignment");
    if (al) {
        if (al->type != PU_GGUF_U32 || al->u == 0 || (al->u & (al->u - 1)) != 0) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: KV 'general.alignment' must be a u32 power of two, found type %u "
                           "value %llu",
                           path, al->type, (unsigned long long)al->u);
            goto fail;
        }
        out->alignment = al->u;
    }
    for (uint64_t i = 0; i < nt; i++) {
        if ((size_t)i == cap_t) {
            cap_t = cap_t ? cap_t * 2 : 32;
            out->t = pu_realloc(out->t, cap_t * sizeof *out->t);
        }
        memset(&out->t[i], 0, sizeof out->t[i]);
        s = parse_tensor_info(&r, &out->t[i], (int64_t)i);
        if (s != PU_OK)
            goto fail;
        out->n_tensors = (int64_t)i + 1;
    }
    pu_free(names);
    names = pu_calloc((size_t)out->n_tensors + 1, sizeof *names);
    for (int64_t i = 0; i < out->n_tensors; i++)
        names[i] = (name_ref){out->t[i].name, out->t[i].name_len};
    if (has_duplicate(names, out->n_tensors, &dup)) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: duplicate tensor name '%.*s'", path,
                       (int)(names[dup].n > 200 ? 200 : names[dup].n), names[dup].s);
        goto fail;
    }
    /* data section: aligned start */
    uint64_t start = (uint64_t)r.pos;
    uint64_t rem = start % out->alignment;
    if (rem)
        start += out->alignment - rem;
    if (start > len) {
        if (out->n_tensors > 0) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: data section would start at %llu, beyond the end of the file "
                           "(%zu bytes)",
                           path, (unsigned long long)start, len);
            goto fail;
        }
        start = len;
    }
    out->data = (const uint8_t *)buf + start;
    out->data_len = len - start;
    for (int64_t i = 0; i < out->n_tensors; i++) {
        const pu_gguf_tensor *t = &out->t[i];
        int nl = t->name_len > 200 ? 200 : (int)t->name_len;
        if (t->offset % out->alignment != 0) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: tensor '%.*s': offset %llu is not a multiple of the alignment "
                           "%llu",
                           path, nl, t->name, (unsigned long long)t->offset,
                           (unsigned long long)out->alignment);
            goto fail;
        }
        if (t->offset > out->data_len ||
            (t->nbytes >= 0 && (uint64_t)t->nbytes > out->data_len - t->offset)) {
            const ggml_type_info *ti = ggml_type(t->type);
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: tensor '%.*s' (%s): data [%llu, +%lld) lies beyond the data "
                           "section (%llu bytes): truncated",
                           path, nl, t->name, ti ? ti->name : "?", (unsigned long long)t->offset,
                           (long long)t->nbytes, (unsigned long long)out->data_len);
            goto fail;
        }
    }
    pu_free(names);
    return PU_OK;
fail:
    pu_free(names);
    pu_gguf_free_(out);
    return s;
}

static bool name_eq(const char *s, uint64_t n, const char *z) {
    size_t zl = strlen(z);
    return n == zl && memcmp(s, z, zl) == 0;
}

const pu_gguf_kv *pu_gguf_find_kv_(const pu_gguf_file *f, const char *key) {
    for (int64_t i = 0; i < f->n_kv; i++)
        if (name_eq(f->kv[i].key, f->kv[i].key_len, key))
            return &f->kv[i];
    return NULL;
}

const pu_gguf_tensor *pu_gguf_find_tensor_(const pu_gguf_file *f, const char *name) {
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (name_eq(f->t[i].name, f->t[i].name_len, name))
            return &f->t[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* loader                                                                   */

static bool is_int_type(uint32_t t) {
    return t == PU_GGUF_U8 || t == PU_GGUF_I8 || t == PU_GGUF_U16 || t == PU_GGUF_I16 ||
           t == PU_GGUF_U32 || t == PU_GGUF_I32 || t == PU_GGUF_U64 || t == PU_GGUF_I64;
}

static pu_status kv_int(const pu_gguf_file *f, const char *path, const char *key, int64_t *out,
                        bool required) {
    const pu_gguf_kv *kv = pu_gguf_find_kv_(f, key);
    if (!kv) {
        if (required)
            return pu_err_set(PU_ERR_FORMAT, "%s: missing GGUF key '%s'", path, key);
        return PU_OK;
    }
    if (!is_int_type(kv->type))
        return pu_err_set(PU_ERR_FORMAT, "%s: GGUF key '%s': expected an integer, found type %u",
                          path, key, kv->type);
    *out = kv->i;
    return PU_OK;
}

static pu_status kv_float(const pu_gguf_file *f, const char *path, const char *key, double *out,
                          bool required) {
    const pu_gguf_kv *kv = pu_gguf_find_kv_(f, key);
    if (!kv) {
        if (required)
            return pu_err_set(PU_ERR_FORMAT, "%s: missing GGUF key '%s'", path, key);
        return PU_OK;
    }
    if (kv->type != PU_GGUF_F32 && kv->type != PU_GGUF_F64 && !is_int_type(kv->type))
        return pu_err_set(PU_ERR_FORMAT, "%s: GGUF key '%s': expected a number, found type %u",
                          path, key, kv->type);
    *out = kv->f;
    return PU_OK;
}

static const pu_gguf_kv *kv_str(const pu_gguf_file *f, const char *key) {
    const pu_gguf_kv *kv = pu_gguf_find_kv_(f, key);
    return kv && kv->type == PU_GGUF_STRING ? kv : NULL;
}

typedef struct {
    pu_model *m;
    const pu_gguf_file *f;
    const char *path;
    bool *used;
} gbinder;

static pu_status gbind(gbinder *b, const char *name, pu_tensor *dst, int ndim, int64_t d0,
                       int64_t d1) {
    const pu_gguf_tensor *t = pu_gguf_find_tensor_(b->f, name);
    if (!t)
        return pu_err_set(PU_ERR_FORMAT, "%s: missing tensor '%s'", b->path, name);
    b->used[t - b->f->t] = true;
    pu_dtype dt;
    if (!pu_dtype_from_ggml(t->type, &dt)) {
        const ggml_type_info *ti = ggml_type(t->type);
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: tensor '%s': ggml type %s (%u) is not supported (F32, F16, BF16, "
                          "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
                          b->path, name, ti ? ti->name : "unknown", t->type);
    }
    /* pu shape = reversed ne */
    int64_t shape[4];
    for (uint32_t i = 0; i < t->n_dims; i++)
        shape[i] = t->ne[t->n_dims - 1 - i];
    int64_t want[2] = {d0, d1};
    if ((int)t->n_dims != ndim || shape[0] != d0 || (ndim == 2 && shape[1] != d1)) {
        char a[96], c[96];
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': expected shape %s, found %s", b->path,
                          name, pu_shape_str_(a, sizeof a, ndim, want),
                          pu_shape_str_(c, sizeof c, (int)t->n_dims, shape));
    }
    pu_model_view_(b->m, dst, dt, ndim, want, b->f->data + t->offset);
    return PU_OK;
}

static pu_status load_parsed(pu_model *m, const pu_gguf_file *f, const char *path, bool *used) {
    pu_config *c = &m->cfg;
    pu_config_defaults(c);
    const pu_gguf_kv *archkv = kv_str(f, "general.architecture");
    if (!archkv)
        return pu_err_set(PU_ERR_FORMAT, "%s: missing string key 'general.architecture'", path);
    char arch[32];
    if (name_eq(archkv->str, archkv->str_len, "llama"))
        snprintf(arch, sizeof arch, "llama");
    else if (name_eq(archkv->str, archkv->str_len, "internlm2"))
        snprintf(arch, sizeof arch, "internlm2");
    else
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: general.architecture '%.*s' is not supported (llama, internlm2)",
                          path, (int)(archkv->str_len > 64 ? 64 : archkv->str_len), archkv->str);
    snprintf(c->model_type, sizeof c->model_type, "%s", arch);
    c->architecture[0] = '\0';
    char key[96];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    PU_TRY(kv_int(f, path, K("embedding_length"), &c->hidden_size, true));
    PU_TRY(kv_int(f, path, K("block_count"), &c->num_hidden_layers, true));
    PU_TRY(kv_int(f, path, K("feed_forward_length"), &c->intermediate_size, true));
    PU_TRY(kv_int(f, path, K("attention.head_count"), &c->num_attention_heads, true));
    c->num_key_value_heads = c->num_attention_heads;
    PU_TRY(kv_int(f, path, K("attention.head_count_kv"), &c->num_key_value_heads, false));
    c->max_position_embeddings = 2048;
    PU_TRY(kv_int(f, path, K("context_length"), &c->max_position_embeddings, false));
    PU_TRY(kv_float(f, path, K("attention.layer_norm_rms_epsilon"), &c->rms_norm_eps, true));
    c->rope_theta = 10000.0;
    PU_TRY(kv_float(f, path, K("rope.freq_base"), &c->rope_theta, false));
    /* vocab: <arch>.vocab_size, else the token list, else token_embd */
    c->vocab_size = -1;
    PU_TRY(kv_int(f, path, K("vocab_size"), &c->vocab_size, false));
    const pu_gguf_kv *toks = pu_gguf_find_kv_(f, "tokenizer.ggml.tokens");
    if (c->vocab_size < 0 && toks && toks->type == PU_GGUF_ARRAY)
        c->vocab_size = toks->arr_n > INT64_MAX ? -1 : (int64_t)toks->arr_n;
    const pu_gguf_tensor *emb = pu_gguf_find_tensor_(f, "token_embd.weight");
    if (c->vocab_size < 0 && emb && emb->n_dims == 2)
        c->vocab_size = emb->ne[1];
    /* rope scaling: llama.cpp knows none / linear / yarn; no dynamic NTK */
    c->rope_scaling_type = PU_ROPE_SCALING_NONE;
    c->rope_scaling_factor = 1.0;
    const pu_gguf_kv *st = kv_str(f, K("rope.scaling.type"));
    if (st && !name_eq(st->str, st->str_len, "none")) {
        if (!name_eq(st->str, st->str_len, "linear"))
            return pu_err_set(PU_ERR_UNSUPPORTED,
                              "%s: GGUF key '%s' = '%.*s' is not supported (none or linear)", path,
                              key, (int)(st->str_len > 32 ? 32 : st->str_len), st->str);
        PU_TRY(kv_float(f, path, K("rope.scaling.factor"), &c->rope_scaling_factor, true));
        c->rope_scaling_type = PU_ROPE_SCALING_LINEAR;
    } else if (!st) {
        double lin = 1.0;
        PU_TRY(kv_float(f, path, K("rope.scale_linear"), &lin, false));
        if (lin != 1.0) {
            c->rope_scaling_type = PU_ROPE_SCALING_LINEAR;
            c->rope_scaling_factor = lin;
        }
    }
    PU_TRY(kv_int(f, path, "tokenizer.ggml.bos_token_id", &c->bos_token_id, false));
    PU_TRY(kv_int(f, path, "tokenizer.ggml.eos_token_id", &c->eos_token_id, false));
    PU_TRY(kv_int(f, path, "tokenizer.ggml.padding_token_id", &c->pad_token_id, false));
    c->bias = false;
    c->rope_interleaved = true;
    c->tie_word_embeddings = pu_gguf_find_tensor_(f, "output.weight") == NULL;
    if (c->num_attention_heads > 0)
        c->head_dim = c->hidden_size / c->num_attention_heads;
    PU_TRY(pu_config_check_(c, path));
    int64_t rot = c->head_dim;
    PU_TRY(kv_int(f, path, K("rope.dimension_count"), &rot, false));
    if (rot != c->head_dim)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: GGUF key '%s' = %lld: partial rotary (head_dim %lld) is not "
                          "supported",
                          path, key, (long long)rot, (long long)c->head_dim);
#undef K
    if (c->rope_scaling_type == PU_ROPE_SCALING_LINEAR && !(c->rope_scaling_factor >= 1.0))
        return pu_err_set(PU_ERR_FORMAT, "%s: rope scaling factor %g must be >= 1", path,
                          c->rope_scaling_factor);
    int64_t V = c->vocab_size, C = c->hidden_size, F = c->intermediate_size;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t L = c->num_hidden_layers;
    if (L * 9 > f->n_tensors)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: block_count %lld needs >= %lld tensors, file has %lld (a "
                          "vocab-only GGUF?)",
                          path, (long long)L, (long long)(L * 9), (long long)f->n_tensors);
    gbinder b = {m, f, path, used};
    m->w.layers = pu_calloc((size_t)L, sizeof *m->w.layers);
    PU_TRY(gbind(&b, "token_embd.weight", &m->w.tok_embeddings, 2, V, C));
    if (m->w.tok_embeddings.dtype == PU_DTYPE_F32 || pu_dtype_is_quant(m->w.tok_embeddings.dtype))
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
    else if (m->w.tok_embeddings.dtype == PU_DTYPE_F16)
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "float16");
    else
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "bfloat16");
    PU_TRY(gbind(&b, "output_norm.weight", &m->w.norm, 1, C, 0));
    if (c->tie_word_embeddings)
        m->w.output = m->w.tok_embeddings;
    else
        PU_TRY(gbind(&b, "output.weight", &m->w.output, 2, V, C));
    char n[96];
    for (int64_t l = 0; l < L; l++) {
        pu_layer_weights *lw = &m->w.layers[l];
#define LB(suffix, field, nd, a0, a1)                                      \
    do {                                                                   \
        snprintf(n, sizeof n, "blk.%lld.%s.weight", (long long)l, suffix); \
        PU_TRY(gbind(&b, n, &lw->field, nd, a0, a1));                      \
    } while (0)
        LB("attn_norm", attn_norm, 1, C, 0);
        LB("attn_q", wq, 2, H * D, C);
        LB("attn_k", wk, 2, Hkv * D, C);
        LB("attn_v", wv, 2, Hkv * D, C);
        LB("attn_output", wo, 2, C, H * D);
        LB("ffn_norm", ffn_norm, 1, C, 0);
        LB("ffn_gate", w1, 2, F, C);
        LB("ffn_up", w3, 2, F, C);
        LB("ffn_down", w2, 2, C, F);
#undef LB
    }
    for (int64_t i = 0; i < f->n_tensors; i++) {
        if (used[i])
            continue;
        const pu_gguf_tensor *t = &f->t[i];
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: unexpected tensor '%.*s' (not used by puyu's %s graph)", path,
                          (int)(t->name_len > 200 ? 200 : t->name_len), t->name, arch);
    }
    return PU_OK;
}

pu_status pu_gguf_load_mem_(pu_model *m, const void *buf, size_t len, const char *path) {
    pu_gguf_file f;
    PU_TRY(pu_gguf_parse_(buf, len, path, &f));
    bool *used = pu_calloc(f.n_tensors ? (size_t)f.n_tensors : 1, sizeof *used);
    pu_status s = load_parsed(m, &f, path, used);
    pu_free(used);
    pu_gguf_free_(&f);
    return s;
}
