/*
 * safetensors.c — safetensors parsing and the HF model-directory loader.
 *
 * File layout: u64 LE header length N, N bytes of JSON
 *   {"NAME": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {...}}
 * then the data section; offsets are relative to it. Every field is checked
 * (offsets in range, e - b == numel * elsize, no overlap, known dtype, no
 * duplicate names) before any view is made.
 *
 * The HF directory loader reads config.json, maps model.safetensors or the
 * shards named by model.safetensors.index.json, and binds the tensors by
 * name: InternLM2 naming (fused wqkv kept as is, grouped layout of spec A.4)
 * or HF Llama naming (separate q/k/v projections). Views point into the
 * mmaps; nothing is copied except misaligned data.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/loaders.h"

#define ST_MAX_HEADER (INT64_C(256) << 20) /* 256 MiB of JSON is already absurd */

typedef struct {
    const char *name;
    int dtype; /* pu_dtype or -1 */
    int size;
} st_dtype_info;

static const st_dtype_info st_dtypes[] = {
    {"F32", PU_DTYPE_F32, 4},
    {"F16", PU_DTYPE_F16, 2},
    {"BF16", PU_DTYPE_BF16, 2},
    {"F64", -1, 8},
    {"I64", -1, 8},
    {"U64", -1, 8},
    {"I32", -1, 4},
    {"U32", -1, 4},
    {"I16", -1, 2},
    {"U16", -1, 2},
    {"I8", -1, 1},
    {"U8", -1, 1},
    {"BOOL", -1, 1},
    {"F8_E4M3", -1, 1},
    {"F8_E5M2", -1, 1},
    {"F8_E8M0", -1, 1},
};

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const pu_st_tensor *)a)->name, ((const pu_st_tensor *)b)->name);
}

static int cmp_by_begin(const void *a, const void *b) {
    const pu_st_tensor *x = *(const pu_st_tensor *const *)a, *y = *(const pu_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

void pu_safetensors_free_(pu_st_file *f) {
    if (!f)
        return;
    for (int64_t i = 0; i < f->n; i++)
        pu_free(f->t[i].name);
    pu_free(f->t);
    memset(f, 0, sizeof *f);
}

static pu_status parse_entry(const char *path, const char *key, const json_t *v, uint64_t data_len,
                             pu_st_tensor *t) {
    if (!json_is_object(v))
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': header entry is not an object", path,
                          key);
    const json_t *dt = json_object_get(v, "dtype");
    const json_t *sh = json_object_get(v, "shape");
    const json_t *of = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': missing or non-string 'dtype'", path,
                          key);
    if (!json_is_array(sh))
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': missing or non-list 'shape'", path, key);
    if (!json_is_array(of) || json_array_size(of) != 2)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': 'data_offsets' must be a list [begin, end]", path, key);
    const st_dtype_info *info = NULL;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(json_string_value(dt), st_dtypes[i].name) == 0)
            info = &st_dtypes[i];
    if (!info)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.16s'", path, key,
                          json_string_value(dt));
    t->dtype = info->dtype;
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", info->name);
    size_t nd = json_array_size(sh);
    if (nd > 8)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': %zu dimensions (max 8)", path, key, nd);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return pu_err_set(PU_ERR_FORMAT,
                              "%s: tensor '%s': shape[%zu] is not a non-negative integer", path,
                              key, i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
            return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': shape overflows", path, key);
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)info->size, &nbytes))
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': shape overflows", path, key);
    const json_t *b = json_array_get(of, 0), *e = json_array_get(of, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < 0)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': 'data_offsets' must be non-negative integers", path,
                          key);
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    if (t->begin > t->end || t->end > data_len)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] out of range (data "
                          "section is %llu bytes)",
                          path, key, (unsigned long long)t->begin, (unsigned long long)t->end,
                          (unsigned long long)data_len);
    if (t->end - t->begin != nbytes) {
        char sb[128];
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets span %llu bytes, but dtype %s x shape "
                          "%s needs %llu",
                          path, key, (unsigned long long)(t->end - t->begin), info->name,
                          pu_shape_str_(sb, sizeof sb, t->ndim, t->shape),
                          (unsigned long long)nbytes);
    }
    return PU_OK;
}

pu_status pu_safetensors_parse_(const void *buf, size_t len, const char *path, pu_st_file *out) {
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf;
    if (len < 8 || !p)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: file too short for a safetensors header (%zu bytes, need >= 8)",
                          path, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | p[i];
    if (hlen > len - 8)
        return pu_err_set(PU_ERR_FORMAT, "%s: header length %llu exceeds the file size (%zu bytes)",
                          path, (unsigned long long)hlen, len);
    if (hlen > (uint64_t)ST_MAX_HEADER)
        return pu_err_set(PU_ERR_FORMAT, "%s: header length %llu is too large", path,
                          (unsigned long long)hlen);
    if (hlen < 2)
        return pu_err_set(PU_ERR_FORMAT, "%s: header length %llu is too small for a JSON object",
                          path, (unsigned long long)hlen);
    json_error_t err;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return pu_err_set(PU_ERR_FORMAT, "%s: header JSON, line %d column %d: %s", path, err.line,
                          err.column, err.text);
    pu_status s = PU_OK;
    pu_st_tensor **order = NULL;
    if (!json_is_object(root)) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    out->data = p + 8 + hlen;
    out->data_len = (uint64_t)len - 8 - hlen;
    size_t cap = json_object_size(root);
    out->t = pu_calloc(cap ? cap : 1, sizeof *out->t);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        pu_st_tensor *t = &out->t[out->n];
        s = parse_entry(path, key, val, out->data_len, t);
        if (s != PU_OK)
            goto done;
        t->name = pu_strdup(key);
        out->n++;
    }
    /* overlap check: sort by begin, skipping empty tensors */
    order = pu_calloc(out->n ? (size_t)out->n : 1, sizeof *order);
    for (int64_t i = 0; i < out->n; i++)
        order[i] = &out->t[i];
    qsort(order, (size_t)out->n, sizeof *order, cmp_by_begin);
    const pu_st_tensor *prev = NULL;
    for (int64_t i = 0; i < out->n; i++) {
        if (order[i]->begin == order[i]->end)
            continue;
        if (prev && order[i]->begin < prev->end) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' "
                           "[%llu, %llu]",
                           path, order[i]->name, (unsigned long long)order[i]->begin,
                           (unsigned long long)order[i]->end, prev->name,
                           (unsigned long long)prev->begin, (unsigned long long)prev->end);
            goto done;
        }
        prev = order[i];
    }
    qsort(out->t, (size_t)out->n, sizeof *out->t, cmp_by_name);
done:
    pu_free(order);
    json_decref(root);
    if (s != PU_OK)
        pu_safetensors_free_(out);
    return s;
}

const pu_st_tensor *pu_safetensors_find_(const pu_st_file *f, const char *name) {
    int64_t lo = 0, hi = f->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->t[mid].name, name);
        if (c == 0)
            return &f->t[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* binding tensors of an HF checkpoint                                      */

typedef struct {
    const char *name;
    int file;
    const pu_st_tensor *t;
    bool used;
} st_entry;

typedef struct {
    pu_model *m;
    st_entry *e; /* sorted by name */
    int64_t n;
    const pu_st_file *files;
    char *const *file_names;
    const char *dir;
    int64_t awq_group; /* > 0: AWQ checkpoint (awq.c) */
} binder;

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static st_entry *bfind(binder *b, const char *name) {
    int64_t lo = 0, hi = b->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(b->e[mid].name, name);
        if (c == 0)
            return &b->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* one AWQ part of `base` (".qweight" ...): dtype and shape checked */
static pu_status awq_part(binder *b, const char *base, const char *part, const char *dtype,
                          int64_t d0, int64_t d1, const uint8_t **data, st_entry **ent) {
    char n[200];
    snprintf(n, sizeof n, "%s.%s", base, part);
    st_entry *e = bfind(b, n);
    if (!e)
        return pu_err_set(PU_ERR_FORMAT, "%s: missing tensor '%s' (awq checkpoint)", b->dir, n);
    const pu_st_tensor *t = e->t;
    const char *file = b->file_names[e->file];
    if (strcmp(t->dtype_name, dtype) != 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': dtype %s, awq needs %s", file, n,
                          t->dtype_name, dtype);
    int64_t want[2] = {d0, d1};
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1) {
        char a[96], c[96];
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': expected shape %s (awq group %lld, from config.json), "
                          "found %s",
                          file, n, pu_shape_str_(a, sizeof a, 2, want), (long long)b->awq_group,
                          pu_shape_str_(c, sizeof c, t->ndim, t->shape));
    }
    *data = b->files[e->file].data + t->begin;
    *ent = e;
    return PU_OK;
}

/* W (d0 out, d1 in) of `name` = "X.weight" from X.qweight/qzeros/scales */
static pu_status bind_awq(binder *b, const char *name, pu_tensor *dst, int64_t d0, int64_t d1) {
    char base[200];
    size_t nl = strlen(name);
    if (nl < 8 || nl - 7 >= sizeof base || strcmp(name + nl - 7, ".weight") != 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: missing tensor '%s'", b->dir, name);
    memcpy(base, name, nl - 7);
    base[nl - 7] = 0;
    int64_t G = b->awq_group;
    if (d0 % 8 || d1 % G)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: '%s' (%lld x %lld) cannot be awq-packed: out %% 8 and in %% "
                          "group_size %lld must be 0",
                          b->dir, base, (long long)d0, (long long)d1, (long long)G);
    const uint8_t *qw, *qz, *sc;
    st_entry *e1, *e2, *e3;
    PU_TRY(awq_part(b, base, "qweight", "I32", d1, d0 / 8, &qw, &e1));
    PU_TRY(awq_part(b, base, "qzeros", "I32", d1 / G, d0 / 8, &qz, &e2));
    PU_TRY(awq_part(b, base, "scales", "F16", d1 / G, d0, &sc, &e3));
    float *w = pu_try_malloc((size_t)d0 * (size_t)d1 * sizeof(float));
    if (!w)
        return pu_err_set(PU_ERR_NOMEM, "%s: cannot allocate the dequantized '%s'", b->dir, base);
    pu_awq_dequant_(w, qw, qz, sc, d0, d1, G);
    pu_model_own_(b->m, w);
    int64_t shape[2] = {d0, d1};
    pu_model_view_(b->m, dst, PU_DTYPE_F32, 2, shape, w);
    e1->used = e2->used = e3->used = true;
    return PU_OK;
}

static pu_status bind(binder *b, const char *name, pu_tensor *dst, int ndim, int64_t d0,
                      int64_t d1) {
    st_entry *e = bfind(b, name);
    if (!e && b->awq_group > 0 && ndim == 2)
        return bind_awq(b, name, dst, d0, d1);
    if (!e)
        return pu_err_set(PU_ERR_FORMAT, "%s: missing tensor '%s'", b->dir, name);
    const char *file = b->file_names[e->file];
    const pu_st_tensor *t = e->t;
    if (t->dtype < 0)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: tensor '%s': dtype %s is not supported (F32, BF16 or F16)", file,
                          name, t->dtype_name);
    int64_t want[2] = {d0, d1};
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char a[96], c[96];
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': expected shape %s (from config.json), found %s", file,
                          name, pu_shape_str_(a, sizeof a, ndim, want),
                          pu_shape_str_(c, sizeof c, t->ndim, t->shape));
    }
    e->used = true;
    pu_model_view_(b->m, dst, (pu_dtype)t->dtype, ndim, want, b->files[e->file].data + t->begin);
    return PU_OK;
}

pu_status pu_hf_bind_weights_(pu_model *m, const pu_st_file *files, char *const *file_names,
                              int n_files, const char *dir) {
    return pu_hf_bind_weights_awq_(m, files, file_names, n_files, dir, 0);
}

pu_status pu_hf_bind_weights_awq_(pu_model *m, const pu_st_file *files, char *const *file_names,
                                  int n_files, const char *dir, int64_t awq_group) {
    binder b = {.m = m, .files = files, .file_names = file_names, .dir = dir,
                .awq_group = awq_group};
    int64_t total = 0;
    for (int k = 0; k < n_files; k++)
        total += files[k].n;
    b.e = pu_calloc(total ? (size_t)total : 1, sizeof *b.e);
    for (int k = 0; k < n_files; k++)
        for (int64_t i = 0; i < files[k].n; i++)
            b.e[b.n++] = (st_entry){files[k].t[i].name, k, &files[k].t[i], false};
    qsort(b.e, (size_t)b.n, sizeof *b.e, cmp_entry);
    pu_status s = PU_OK;
    for (int64_t i = 1; i < b.n; i++)
        if (strcmp(b.e[i].name, b.e[i - 1].name) == 0) {
            s = pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s' appears in both %s and %s", dir,
                           b.e[i].name, file_names[b.e[i - 1].file], file_names[b.e[i].file]);
            goto done;
        }

    pu_config *c = &m->cfg;
    int64_t V = c->vocab_size, C = c->hidden_size, F = c->intermediate_size;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t L = c->num_hidden_layers;
    bool llama = bfind(&b, "model.tok_embeddings.weight") == NULL &&
                 bfind(&b, "model.embed_tokens.weight") != NULL;

    /* biases: config.json decides whether they must exist; puyu has none */
    {
        const char *bias_name =
            llama ? "model.layers.0.self_attn.q_proj.bias" : "model.layers.0.attention.wqkv.bias";
        bool present = bfind(&b, bias_name) != NULL;
        if (c->bias && !present) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: config.json has \"bias\": true but tensor '%s' is missing", dir,
                           bias_name);
            goto done;
        }
        if (present) {
            s = pu_err_set(PU_ERR_UNSUPPORTED,
                           "%s: checkpoint has bias tensors ('%s'); attention biases are not "
                           "supported by puyu yet",
                           dir, bias_name);
            goto done;
        }
    }

    m->w.layers = pu_calloc((size_t)L, sizeof *m->w.layers);
    char n[160];
    const char *emb = llama ? "model.embed_tokens.weight" : "model.tok_embeddings.weight";
    const char *out_name = llama ? "lm_head.weight" : "output.weight";
#define TRY_BIND(...)              \
    do {                           \
        s = bind(&b, __VA_ARGS__); \
        if (s != PU_OK)            \
            goto done;             \
    } while (0)
    TRY_BIND(emb, &m->w.tok_embeddings, 2, V, C);
    TRY_BIND("model.norm.weight", &m->w.norm, 1, C, 0);
    bool reward = strcmp(c->architecture, "InternLM2ForRewardModel") == 0;
    if (reward) {
        /* InternLM2ForRewardModel: model.* + v_head.weight (1, C), no LM head */
        if (llama || !bfind(&b, "v_head.weight")) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: config.json declares InternLM2ForRewardModel but %s", dir,
                           llama ? "the tensors use Llama names (model.embed_tokens...)"
                                 : "there is no value head tensor 'v_head.weight' [1, hidden]");
            goto done;
        }
        TRY_BIND("v_head.weight", &m->w.v_head, 2, 1, C);
        if (bfind(&b, out_name))
            TRY_BIND(out_name, &m->w.output, 2, V, C);
        else
            m->w.output = m->w.tok_embeddings; /* no LM head: see pu_weights.v_head */
    } else if (c->tie_word_embeddings) {
        m->w.output = m->w.tok_embeddings;
        st_entry *e = bfind(&b, out_name);
        if (e)
            e->used = true; /* a saved copy of the tied matrix */
    } else {
        TRY_BIND(out_name, &m->w.output, 2, V, C);
    }
    for (int64_t l = 0; l < L; l++) {
        pu_layer_weights *lw = &m->w.layers[l];
#define LB(suffix, field, nd, a0, a1)                                        \
    do {                                                                     \
        snprintf(n, sizeof n, "model.layers.%lld.%s", (long long)l, suffix); \
        TRY_BIND(n, &lw->field, nd, a0, a1);                                 \
    } while (0)
        if (llama) {
            LB("input_layernorm.weight", attn_norm, 1, C, 0);
            LB("self_attn.q_proj.weight", wq, 2, H * D, C);
            LB("self_attn.k_proj.weight", wk, 2, Hkv * D, C);
            LB("self_attn.v_proj.weight", wv, 2, Hkv * D, C);
            LB("self_attn.o_proj.weight", wo, 2, C, H * D);
            LB("post_attention_layernorm.weight", ffn_norm, 1, C, 0);
            LB("mlp.gate_proj.weight", w1, 2, F, C);
            LB("mlp.up_proj.weight", w3, 2, F, C);
            LB("mlp.down_proj.weight", w2, 2, C, F);
        } else {
            LB("attention_norm.weight", attn_norm, 1, C, 0);
            LB("attention.wqkv.weight", wqkv, 2, (H + 2 * Hkv) * D, C);
            LB("attention.wo.weight", wo, 2, C, H * D);
            LB("ffn_norm.weight", ffn_norm, 1, C, 0);
            LB("feed_forward.w1.weight", w1, 2, F, C);
            LB("feed_forward.w3.weight", w3, 2, F, C);
            LB("feed_forward.w2.weight", w2, 2, C, F);
        }
#undef LB
    }
#undef TRY_BIND
    /* anything left over would be silently ignored: refuse it */
    for (int64_t i = 0; i < b.n; i++) {
        const st_entry *e = &b.e[i];
        if (e->used || strstr(e->name, "rotary_emb"))
            continue;
        size_t nl = strlen(e->name);
        if (nl > 5 && strcmp(e->name + nl - 5, ".bias") == 0)
            s = pu_err_set(PU_ERR_UNSUPPORTED,
                           "%s: tensor '%s': biases are not supported (config.json has "
                           "\"bias\": false)",
                           file_names[e->file], e->name);
        else
            s = pu_err_set(PU_ERR_UNSUPPORTED,
                           "%s: unexpected tensor '%s' (not part of a %s causal LM with %lld "
                           "layers)",
                           file_names[e->file], e->name, llama ? "Llama" : "InternLM2",
                           (long long)L);
        goto done;
    }
    c->rope_interleaved = false; /* HF layouts use rotate-half RoPE */
done:
    pu_free(b.e);
    return s;
}

/* ------------------------------------------------------------------------ */
/* the directory loader                                                     */

static bool safe_shard_name(const char *s) {
    return s[0] && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\');
}

/* Distinct shard names from the index's weight_map (owned strings). */
static pu_status read_index(const char *idx_path, json_t **root_out, char ***names, int *n_names) {
    char *text = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(idx_path, &text, &len));
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    pu_free(text);
    if (!root)
        return pu_err_set(PU_ERR_FORMAT, "%s:%d:%d: invalid JSON: %s", idx_path, err.line,
                          err.column, err.text);
    *root_out = root;
    const json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: missing or empty object 'weight_map'", idx_path);
    size_t cap = json_object_size(wm);
    char **v = pu_calloc(cap, sizeof *v);
    int n = 0;
    const char *key;
    json_t *val;
    *names = v;
    json_object_foreach((json_t *)wm, key, val) {
        if (!json_is_string(val) || !safe_shard_name(json_string_value(val))) {
            *n_names = n;
            return pu_err_set(PU_ERR_FORMAT,
                              "%s: weight_map['%s']: expected a shard file name in the same "
                              "directory",
                              idx_path, key);
        }
        const char *f = json_string_value(val);
        bool seen = false;
        for (int i = 0; i < n && !seen; i++)
            seen = strcmp(v[i], f) == 0;
        if (!seen)
            v[n++] = pu_strdup(f);
    }
    *n_names = n;
    return PU_OK;
}

pu_status pu_model_load_hf_dir_(pu_model *m, const char *dir) {
    char *cfg_path = pu_path_join(dir, "config.json");
    char *idx_path = pu_path_join(dir, "model.safetensors.index.json");
    char *single = pu_path_join(dir, "model.safetensors");
    char *tok = pu_path_join(dir, "tokenizer.model");
    char **shards = NULL, **paths = NULL;
    int n_shards = 0;
    json_t *index = NULL;
    pu_st_file *files = NULL;
    pu_status s = PU_OK;

    if (!pu_file_exists(cfg_path)) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: model directory has no config.json", dir);
        goto done;
    }
    s = pu_config_load(cfg_path, &m->cfg);
    if (s != PU_OK)
        goto done;
    int64_t awq_group = 0;
    s = pu_awq_read_config_(cfg_path, &awq_group);
    if (s != PU_OK)
        goto done;
    if (pu_file_exists(idx_path)) {
        s = read_index(idx_path, &index, &shards, &n_shards);
        if (s != PU_OK)
            goto done;
    } else if (pu_file_exists(single)) {
        shards = pu_calloc(1, sizeof *shards);
        shards[0] = pu_strdup("model.safetensors");
        n_shards = 1;
    } else {
        s = pu_err_set(PU_ERR_FORMAT,
                       "%s: no model.safetensors or model.safetensors.index.json (only "
                       "safetensors weights are supported, not pytorch_model*.bin)",
                       dir);
        goto done;
    }
    m->maps = pu_calloc((size_t)n_shards, sizeof *m->maps);
    files = pu_calloc((size_t)n_shards, sizeof *files);
    paths = pu_calloc((size_t)n_shards, sizeof *paths);
    for (int k = 0; k < n_shards; k++) {
        paths[k] = pu_path_join(dir, shards[k]);
        s = pu_mmap_open(&m->maps[k], paths[k]);
        if (s != PU_OK)
            goto done;
        m->n_maps = k + 1;
        s = pu_safetensors_parse_(m->maps[k].data, m->maps[k].size, paths[k], &files[k]);
        if (s != PU_OK)
            goto done;
    }
    if (index) {
        /* every weight_map entry must be in the shard it names */
        const json_t *wm = json_object_get(index, "weight_map");
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)wm, key, val) {
            int k = 0;
            while (k < n_shards && strcmp(shards[k], json_string_value(val)) != 0)
                k++;
            if (k == n_shards || !pu_safetensors_find_(&files[k], key)) {
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: weight_map says tensor '%s' is in %s, but that shard has no "
                               "such tensor",
                               idx_path, key, json_string_value(val));
                goto done;
            }
        }
    }
    s = pu_hf_bind_weights_awq_(m, files, paths, n_shards, dir, awq_group);
    if (s != PU_OK)
        goto done;
    if (pu_file_exists(tok))
        m->tokenizer_path = pu_strdup(tok);
done:
    for (int k = 0; k < n_shards; k++) {
        if (files)
            pu_safetensors_free_(&files[k]);
        if (paths)
            pu_free(paths[k]);
        if (shards)
            pu_free(shards[k]);
    }
    pu_free(files);
    pu_free(paths);
    pu_free(shards);
    if (index)
        json_decref(index);
    pu_free(cfg_path);
    pu_free(idx_path);
    pu_free(single);
    pu_free(tok);
    return s;
}
