/*
 * gguf_vocab.c — reads the tokenizer.ggml.* metadata of a GGUF file (v2/v3)
 * without touching its tensors: the key/value section is walked with bounds
 * checks on every length, unknown keys (of any type, arrays of arrays
 * included) are skipped, and the tokenizer keys are copied into a
 * pu_tok_gguf_vocab that both tokenizer backends build from.
 *
 * Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv times
 * {string key, u32 type, value}; string = u64 length + bytes; array = u32
 * element type + u64 count + elements. All little-endian.
 */
#include <string.h>

#include "tok/tok_impl.h"

enum {
    GT_U8 = 0,
    GT_I8,
    GT_U16,
    GT_I16,
    GT_U32,
    GT_I32,
    GT_F32,
    GT_BOOL,
    GT_STRING,
    GT_ARRAY,
    GT_U64,
    GT_I64,
    GT_F64,
};

typedef struct {
    const uint8_t *p, *end, *base;
    const char *what;
    char key[128];
} gg_rd;

static pu_status gg_err(gg_rd *r, const char *msg) {
    return pu_err_set(PU_ERR_FORMAT, "%s: GGUF metadata%s%s: %s at byte %zu", r->what,
                      r->key[0] ? " key " : "", r->key, msg, (size_t)(r->p - r->base));
}

static pu_status gg_u32(gg_rd *r, uint32_t *v) {
    if (r->end - r->p < 4)
        return gg_err(r, "truncated (expected 4 more bytes)");
    memcpy(v, r->p, 4);
    r->p += 4;
    return PU_OK;
}

static pu_status gg_u64(gg_rd *r, uint64_t *v) {
    if (r->end - r->p < 8)
        return gg_err(r, "truncated (expected 8 more bytes)");
    memcpy(v, r->p, 8);
    r->p += 8;
    return PU_OK;
}

static pu_status gg_str(gg_rd *r, const char **s, size_t *n) {
    uint64_t l = 0;
    PU_TRY(gg_u64(r, &l));
    if (l > (uint64_t)(r->end - r->p))
        return gg_err(r, "string length runs past the end of the file");
    *s = (const char *)r->p;
    *n = (size_t)l;
    r->p += l;
    return PU_OK;
}

static size_t gg_scalar_size(uint32_t t) {
    switch (t) {
    case GT_U8:
    case GT_I8:
    case GT_BOOL: return 1;
    case GT_U16:
    case GT_I16: return 2;
    case GT_U32:
    case GT_I32:
    case GT_F32: return 4;
    case GT_U64:
    case GT_I64:
    case GT_F64: return 8;
    default: return 0;
    }
}

static pu_status gg_skip(gg_rd *r, uint32_t type, int depth) {
    if (depth > 8)
        return gg_err(r, "arrays nested too deeply");
    size_t sz = gg_scalar_size(type);
    if (sz) {
        if ((size_t)(r->end - r->p) < sz)
            return gg_err(r, "truncated value");
        r->p += sz;
        return PU_OK;
    }
    if (type == GT_STRING) {
        const char *s;
        size_t n;
        return gg_str(r, &s, &n);
    }
    if (type == GT_ARRAY) {
        uint32_t et = 0;
        uint64_t n = 0;
        PU_TRY(gg_u32(r, &et));
        PU_TRY(gg_u64(r, &n));
        size_t esz = gg_scalar_size(et);
        if (esz) {
            if (n > (uint64_t)(r->end - r->p) / esz)
                return gg_err(r, "array runs past the end of the file");
            r->p += n * esz;
            return PU_OK;
        }
        if (et != GT_STRING && et != GT_ARRAY)
            return gg_err(r, "unknown array element type");
        for (uint64_t i = 0; i < n; i++)
            PU_TRY(gg_skip(r, et, depth + 1));
        return PU_OK;
    }
    return gg_err(r, "unknown value type");
}

/* integer value of any integer type (or bool) */
static pu_status gg_int(gg_rd *r, uint32_t type, int64_t *v) {
    size_t sz = gg_scalar_size(type);
    if (!sz || type == GT_F32 || type == GT_F64)
        return gg_err(r, "expected an integer value");
    if ((size_t)(r->end - r->p) < sz)
        return gg_err(r, "truncated value");
    const uint8_t *p = r->p;
    r->p += sz;
    switch (type) {
    case GT_U8:
    case GT_BOOL: *v = p[0]; break;
    case GT_I8: *v = (int8_t)p[0]; break;
    case GT_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        *v = x;
        break;
    }
    case GT_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        *v = x;
        break;
    }
    case GT_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        *v = x;
        break;
    }
    case GT_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        *v = x;
        break;
    }
    default: {
        int64_t x;
        memcpy(&x, p, 8);
        *v = x;
        break;
    }
    }
    return PU_OK;
}

static pu_status gg_array_head(gg_rd *r, uint32_t type, uint32_t want_et, uint64_t *n) {
    if (type != GT_ARRAY)
        return gg_err(r, "expected an array");
    uint32_t et = 0;
    PU_TRY(gg_u32(r, &et));
    PU_TRY(gg_u64(r, n));
    if (et != want_et) {
        /* accept i32/u32 interchangeably for token types */
        if (!((want_et == GT_I32 && et == GT_U32) || (want_et == GT_U32 && et == GT_I32)))
            return gg_err(r, "unexpected array element type");
    }
    if (*n > (uint64_t)INT32_MAX)
        return gg_err(r, "array too long");
    return PU_OK;
}

static pu_status gg_str_array(gg_rd *r, uint32_t type, char ***out, uint32_t **lens,
                              int64_t *count) {
    uint64_t n = 0;
    PU_TRY(gg_array_head(r, type, GT_STRING, &n));
    if (n > (uint64_t)(r->end - r->p) / 8)
        return gg_err(r, "array runs past the end of the file");
    char **v = pu_calloc(n ? n : 1, sizeof(char *));
    uint32_t *l = pu_calloc(n ? n : 1, sizeof(uint32_t));
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t sl;
        pu_status st = gg_str(r, &s, &sl);
        if (st == PU_OK && sl > UINT32_MAX)
            st = gg_err(r, "string too long");
        if (st != PU_OK) {
            for (uint64_t j = 0; j < i; j++)
                pu_free(v[j]);
            pu_free(v);
            pu_free(l);
            return st;
        }
        v[i] = pu_strndup(s, sl);
        if (sl && memchr(s, 0, sl)) { /* strndup stops at NUL: copy explicitly */
            pu_free(v[i]);
            v[i] = pu_malloc(sl + 1);
            memcpy(v[i], s, sl);
            v[i][sl] = 0;
        }
        l[i] = (uint32_t)sl;
    }
    *out = v;
    *lens = l;
    *count = (int64_t)n;
    return PU_OK;
}

void pu_tok_gguf_vocab_free(pu_tok_gguf_vocab *v) {
    if (!v)
        return;
    pu_free(v->model);
    pu_free(v->pre);
    if (v->tokens)
        for (int64_t i = 0; i < v->n_tokens; i++)
            pu_free(v->tokens[i]);
    pu_free(v->tokens);
    pu_free(v->token_lens);
    pu_free(v->scores);
    pu_free(v->token_type);
    if (v->merges)
        for (int64_t i = 0; i < v->n_merges; i++)
            pu_free(v->merges[i]);
    pu_free(v->merges);
    pu_free(v->merge_lens);
    memset(v, 0, sizeof(*v));
}

static pu_status gg_parse_kv(gg_rd *r, pu_tok_gguf_vocab *v, uint64_t n_kv, int64_t *n_scores,
                             int64_t *n_types) {
    for (uint64_t k = 0; k < n_kv; k++) {
        r->key[0] = 0;
        const char *key;
        size_t kl;
        PU_TRY(gg_str(r, &key, &kl));
        uint32_t type = 0;
        size_t cl = kl < sizeof(r->key) - 1 ? kl : sizeof(r->key) - 1;
        memcpy(r->key, key, cl);
        r->key[cl] = 0;
        for (size_t q = 0; q < cl; q++)
            if ((unsigned char)r->key[q] < 0x20)
                r->key[q] = '?';
        PU_TRY(gg_u32(r, &type));
#define KEY_IS(s) (kl == strlen(s) && memcmp(key, s, kl) == 0)
        if (KEY_IS("tokenizer.ggml.model") || KEY_IS("tokenizer.ggml.pre")) {
            if (type != GT_STRING)
                return gg_err(r, "expected a string");
            const char *s;
            size_t sl;
            PU_TRY(gg_str(r, &s, &sl));
            char **dst = KEY_IS("tokenizer.ggml.model") ? &v->model : &v->pre;
            pu_free(*dst);
            *dst = pu_strndup(s, sl);
        } else if (KEY_IS("tokenizer.ggml.tokens")) {
            if (v->tokens)
                return gg_err(r, "duplicate key");
            PU_TRY(gg_str_array(r, type, &v->tokens, &v->token_lens, &v->n_tokens));
        } else if (KEY_IS("tokenizer.ggml.merges")) {
            if (v->merges)
                return gg_err(r, "duplicate key");
            PU_TRY(gg_str_array(r, type, &v->merges, &v->merge_lens, &v->n_merges));
        } else if (KEY_IS("tokenizer.ggml.scores")) {
            uint64_t n = 0;
            PU_TRY(gg_array_head(r, type, GT_F32, &n));
            if (n > (uint64_t)(r->end - r->p) / 4)
                return gg_err(r, "array runs past the end of the file");
            if (v->scores)
                return gg_err(r, "duplicate key");
            v->scores = pu_malloc((n ? n : 1) * sizeof(float));
            memcpy(v->scores, r->p, n * 4);
            r->p += n * 4;
            *n_scores = (int64_t)n;
        } else if (KEY_IS("tokenizer.ggml.token_type")) {
            uint64_t n = 0;
            PU_TRY(gg_array_head(r, type, GT_I32, &n));
            if (n > (uint64_t)(r->end - r->p) / 4)
                return gg_err(r, "array runs past the end of the file");
            if (v->token_type)
                return gg_err(r, "duplicate key");
            v->token_type = pu_malloc((n ? n : 1) * sizeof(int32_t));
            memcpy(v->token_type, r->p, n * 4);
            r->p += n * 4;
            *n_types = (int64_t)n;
        } else if (KEY_IS("tokenizer.ggml.bos_token_id") || KEY_IS("tokenizer.ggml.eos_token_id") ||
                   KEY_IS("tokenizer.ggml.unknown_token_id") ||
                   KEY_IS("tokenizer.ggml.padding_token_id") ||
                   KEY_IS("tokenizer.ggml.seperator_token_id")) {
            int64_t x;
            PU_TRY(gg_int(r, type, &x));
            if (x < -1 || x > INT32_MAX)
                return gg_err(r, "token id out of range");
            int32_t *dst = KEY_IS("tokenizer.ggml.bos_token_id")       ? &v->bos
                           : KEY_IS("tokenizer.ggml.eos_token_id")     ? &v->eos
                           : KEY_IS("tokenizer.ggml.unknown_token_id") ? &v->unk
                           : KEY_IS("tokenizer.ggml.padding_token_id") ? &v->pad
                                                                       : &v->sep;
            *dst = (int32_t)x;
        } else if (KEY_IS("tokenizer.ggml.add_bos_token") ||
                   KEY_IS("tokenizer.ggml.add_eos_token") ||
                   KEY_IS("tokenizer.ggml.add_space_prefix") ||
                   KEY_IS("tokenizer.ggml.remove_extra_whitespaces")) {
            int64_t x;
            PU_TRY(gg_int(r, type, &x));
            int *dst = KEY_IS("tokenizer.ggml.add_bos_token")      ? &v->add_bos
                       : KEY_IS("tokenizer.ggml.add_eos_token")    ? &v->add_eos
                       : KEY_IS("tokenizer.ggml.add_space_prefix") ? &v->add_space_prefix
                                                                   : &v->remove_extra_ws;
            *dst = x != 0;
        } else {
            PU_TRY(gg_skip(r, type, 0));
        }
#undef KEY_IS
    }
    r->key[0] = 0;
    return PU_OK;
}

pu_status pu_tok_gguf_vocab_parse(const void *buf, size_t len, const char *what,
                                  pu_tok_gguf_vocab *v) {
    memset(v, 0, sizeof(*v));
    v->bos = v->eos = v->unk = v->pad = v->sep = -1;
    v->add_bos = v->add_eos = v->add_space_prefix = v->remove_extra_ws = -1;
    gg_rd r = {.p = buf, .end = (const uint8_t *)buf + len, .base = buf, .what = what};
    if (len < 24 || memcmp(buf, "GGUF", 4) != 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: expected GGUF magic and a 24-byte header", what);
    r.p += 4;
    uint32_t version = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    PU_TRY(gg_u32(&r, &version));
    if (version != 2 && version != 3)
        return pu_err_set(PU_ERR_UNSUPPORTED, "%s: GGUF version: expected 2 or 3, found %u", what,
                          version);
    PU_TRY(gg_u64(&r, &n_tensors));
    PU_TRY(gg_u64(&r, &n_kv));
    if (n_kv > len / 13) /* each kv needs at least 13 bytes */
        return pu_err_set(PU_ERR_FORMAT, "%s: GGUF n_kv %llu is impossible for a %zu-byte file",
                          what, (unsigned long long)n_kv, len);
    int64_t n_scores = -1, n_types = -1;
    pu_status st = gg_parse_kv(&r, v, n_kv, &n_scores, &n_types);
    if (st == PU_OK) {
        if (!v->tokens)
            st = pu_err_set(PU_ERR_FORMAT, "%s: expected key tokenizer.ggml.tokens, found none",
                            what);
        else if (n_scores >= 0 && n_scores != v->n_tokens)
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: tokenizer.ggml.scores: expected %lld entries (one per token), "
                            "found %lld",
                            what, (long long)v->n_tokens, (long long)n_scores);
        else if (n_types >= 0 && n_types != v->n_tokens)
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: tokenizer.ggml.token_type: expected %lld entries (one per token), "
                            "found %lld",
                            what, (long long)v->n_tokens, (long long)n_types);
    }
    if (st != PU_OK) {
        pu_tok_gguf_vocab_free(v);
        return st;
    }
    return PU_OK;
}

pu_status pu_tok_gguf_vocab_read(const char *path, pu_tok_gguf_vocab *v) {
    pu_mmap m = {0};
    memset(v, 0, sizeof(*v));
    PU_TRY(pu_mmap_open(&m, path));
    pu_status st = pu_tok_gguf_vocab_parse(m.data, m.size, path, v);
    pu_mmap_close(&m);
    return st;
}
