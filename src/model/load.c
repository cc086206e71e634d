/*
 * load.c — pu_model_load dispatch, lifetime, validation and description.
 *
 * MODEL is a directory (HF layout: config.json + safetensors), a file that
 * starts with the "GGUF" magic, or otherwise a llama2.c checkpoint. The
 * format loaders fill a zeroed pu_model (config, weight views into mmaps,
 * owned buffers); pu_model_validate_ then re-checks every view against the
 * config and gives the 1-D norm weights owned F32 copies, so the forward pass
 * can read them as plain float arrays whatever the stored dtype.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sys/stat.h>

#include "model/loaders.h"

/* ------------------------------------------------------------------------ */
/* helpers shared by the loaders                                            */

void pu_model_own_(pu_model *m, void *buf) {
    if (!buf)
        return;
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 16;
        m->owned = pu_realloc(m->owned, (size_t)cap * sizeof *m->owned);
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = buf;
}

const char *pu_shape_str_(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = 0;
    if (cap == 0)
        return buf;
    buf[0] = '\0';
    n += (size_t)snprintf(buf + n, cap - n, "(");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, ")");
    return buf;
}

void pu_model_view_(pu_model *m, pu_tensor *t, pu_dtype dt, int ndim, const int64_t *shape,
                    const void *data) {
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim && i < 4; i++)
        t->shape[i] = shape[i];
    /* quantized blocks hold 2-byte halves: align them like F16 */
    size_t es = pu_dtype_is_quant(dt) ? 2 : pu_dtype_size(dt);
    if (data && es > 1 && ((uintptr_t)data % es) != 0) {
        /* misaligned inside the file: an owned, aligned copy */
        size_t bytes = (size_t)pu_dtype_nbytes(dt, pu_tensor_numel(t));
        void *copy = pu_malloc(bytes ? bytes : 1);
        memcpy(copy, data, bytes);
        pu_model_own_(m, copy);
        data = copy;
    }
    t->data = data;
}

/* ------------------------------------------------------------------------ */
/* load / destroy                                                           */

pu_status pu_model_load_gguf_(pu_model *m, const char *path) {
    m->maps = pu_calloc(1, sizeof *m->maps);
    PU_TRY(pu_mmap_open(&m->maps[0], path));
    m->n_maps = 1;
    PU_TRY(pu_gguf_load_mem_(m, m->maps[0].data, m->maps[0].size, path));
    m->tokenizer_path = pu_strdup(path);
    return PU_OK;
}

pu_status pu_model_load_llama2c_(pu_model *m, const char *path) {
    m->maps = pu_calloc(1, sizeof *m->maps);
    PU_TRY(pu_mmap_open(&m->maps[0], path));
    m->n_maps = 1;
    return pu_llama2c_load_mem_(m, m->maps[0].data, m->maps[0].size, path);
}

static pu_status load_any(pu_model *m, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return pu_err_set(PU_ERR_IO, "%s: cannot open model: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        snprintf(m->format, sizeof m->format, "safetensors");
        return pu_model_load_hf_dir_(m, path);
    }
    size_t pl = strlen(path);
    if ((pl >= 12 && strcmp(path + pl - 12, ".safetensors") == 0) ||
        (pl >= 11 && strcmp(path + pl - 11, "config.json") == 0) ||
        (pl >= 11 && strcmp(path + pl - 11, ".index.json") == 0)) {
        /* a file of an HF model directory: load the directory */
        char *dir = pu_strdup(path);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir ? 1 : 0] = '\0';
        else
            snprintf(dir, pl + 1, ".");
        snprintf(m->format, sizeof m->format, "safetensors");
        pu_status s = pu_model_load_hf_dir_(m, dir);
        pu_free(dir);
        return s;
    }
    unsigned char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return pu_err_set(PU_ERR_IO, "%s: cannot open model: %s", path, strerror(errno));
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
        snprintf(m->format, sizeof m->format, "gguf");
        return pu_model_load_gguf_(m, path);
    }
    snprintf(m->format, sizeof m->format, "llama2c");
    return pu_model_load_llama2c_(m, path);
}

pu_status pu_model_load(const char *path, pu_model **out) {
    *out = NULL;
    if (!path || !*path)
        return pu_err_set(PU_ERR_INVALID, "pu_model_load: empty model path");
    pu_model *m = pu_calloc(1, sizeof *m);
    m->path = pu_strdup(path);
    pu_status s = load_any(m, path);
    if (s == PU_OK)
        s = pu_model_validate_(m, path);
    if (s != PU_OK) {
        pu_model_destroy(m);
        return s;
    }
    *out = m;
    return PU_OK;
}

void pu_model_destroy(pu_model *m) {
    if (!m)
        return;
    pu_free(m->w.layers);
    for (int i = 0; i < m->n_owned; i++)
        pu_free(m->owned[i]);
    pu_free(m->owned);
    for (int i = 0; i < m->n_maps; i++)
        pu_mmap_close(&m->maps[i]);
    pu_free(m->maps);
    pu_free(m->path);
    pu_free(m->tokenizer_path);
    pu_free(m);
}

/* ------------------------------------------------------------------------ */
/* validation                                                               */

static pu_status check_view(const char *what, const char *name, const pu_tensor *t, int ndim,
                            int64_t d0, int64_t d1) {
    int64_t want[2] = {d0, d1};
    char a[96], b[96];
    if (!t->data && pu_tensor_numel(t) != 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s' is missing (no data)", what, name);
    if (!t->data)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s' is missing", what, name);
    if ((int)t->dtype < 0 || t->dtype >= PU_DTYPE_COUNT)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': invalid dtype %d", what, name,
                          (int)t->dtype);
    bool ok = t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1);
    if (ndim == 1 && pu_dtype_is_quant(t->dtype))
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: tensor '%s': a norm weight in %s is not supported (F32, F16, BF16)",
                          what, name, pu_dtype_name(t->dtype));
    if (ndim == 2 && pu_dtype_nbytes(t->dtype, t->shape[1]) < 0)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': row length %lld is not a multiple of the %s block "
                          "size %lld",
                          what, name, (long long)t->shape[1], pu_dtype_name(t->dtype),
                          (long long)pu_dtype_block(t->dtype));
    if (!ok)
        return pu_err_set(PU_ERR_FORMAT, "%s: tensor '%s': expected shape %s, found %s", what, name,
                          pu_shape_str_(a, sizeof a, ndim, want),
                          pu_shape_str_(b, sizeof b, t->ndim, t->shape));
    return PU_OK;
}

static void norm_to_f32(pu_model *m, pu_tensor *t) {
    int64_t n = pu_tensor_numel(t);
    float *dst = pu_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    const unsigned char *src = t->data;
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == PU_DTYPE_F32) {
            memcpy(&dst[i], src + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = t->dtype == PU_DTYPE_F16 ? pu_f16_to_f32(h) : pu_bf16_to_f32(h);
        }
    }
    pu_model_own_(m, dst);
    t->data = dst;
    t->dtype = PU_DTYPE_F32;
}

pu_status pu_model_validate_(pu_model *m, const char *what) {
    const pu_config *c = &m->cfg;
    PU_TRY(pu_config_check_(c, what));
    int64_t V = c->vocab_size, C = c->hidden_size, F = c->intermediate_size;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    pu_weights *w = &m->w;
    if (!w->layers)
        return pu_err_set(PU_ERR_FORMAT, "%s: no layer weights", what);
    PU_TRY(check_view(what, "tok_embeddings", &w->tok_embeddings, 2, V, C));
    PU_TRY(check_view(what, "norm", &w->norm, 1, C, 0));
    PU_TRY(check_view(what, "output", &w->output, 2, V, C));
    if (w->v_head.data)
        PU_TRY(check_view(what, "v_head", &w->v_head, 2, 1, C));
    char name[64];
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        pu_layer_weights *lw = &w->layers[l];
#define CHK(field, nd, a, b)                                              \
    do {                                                                  \
        snprintf(name, sizeof name, "layers.%lld." #field, (long long)l); \
        PU_TRY(check_view(what, name, &lw->field, nd, a, b));             \
    } while (0)
        CHK(attn_norm, 1, C, 0);
        if (lw->wqkv.data) {
            CHK(wqkv, 2, (H + 2 * Hkv) * D, C);
        } else {
            CHK(wq, 2, H * D, C);
            CHK(wk, 2, Hkv * D, C);
            CHK(wv, 2, Hkv * D, C);
        }
        CHK(wo, 2, C, H * D);
        CHK(ffn_norm, 1, C, 0);
        CHK(w1, 2, F, C);
        CHK(w3, 2, F, C);
        CHK(w2, 2, C, F);
#undef CHK
    }
    /* norms (and the value head): owned F32 copies */
    norm_to_f32(m, &w->norm);
    if (w->v_head.data)
        norm_to_f32(m, &w->v_head);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        norm_to_f32(m, &w->layers[l].attn_norm);
        norm_to_f32(m, &w->layers[l].ffn_norm);
    }
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* accessors + description                                                  */

const pu_config *pu_model_config(const pu_model *m) {
    return &m->cfg;
}
const pu_weights *pu_model_weights(const pu_model *m) {
    return &m->w;
}
const char *pu_model_format(const pu_model *m) {
    return m->format;
}
const char *pu_model_tokenizer_path(const pu_model *m) {
    return m->tokenizer_path;
}

/* Visit every distinct tensor (the tied output counted once). */
typedef void (*visit_fn)(const pu_tensor *t, bool embedding, void *ud);

static bool same_view(const pu_tensor *a, const pu_tensor *b) {
    return a->data == b->data && a->dtype == b->dtype;
}

static void visit_tensors(const pu_model *m, visit_fn fn, void *ud) {
    const pu_weights *w = &m->w;
    if (!w->layers)
        return;
    fn(&w->tok_embeddings, true, ud);
    if (!same_view(&w->output, &w->tok_embeddings))
        fn(&w->output, true, ud);
    fn(&w->norm, false, ud);
    if (w->v_head.data)
        fn(&w->v_head, false, ud);
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        const pu_tensor *ts[] = {&lw->attn_norm, &lw->wqkv,     &lw->wq, &lw->wk, &lw->wv,
                                 &lw->wo,        &lw->ffn_norm, &lw->w1, &lw->w3, &lw->w2};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            if (ts[i]->data)
                fn(ts[i], false, ud);
    }
}

typedef struct {
    int64_t params, emb_params, bytes;
    int64_t count[PU_DTYPE_COUNT];
    int64_t dt_params[PU_DTYPE_COUNT];
} tally;

static void tally_fn(const pu_tensor *t, bool embedding, void *ud) {
    tally *s = ud;
    int64_t n = pu_tensor_numel(t);
    s->params += n;
    if (embedding)
        s->emb_params += n;
    if ((int)t->dtype >= 0 && t->dtype < PU_DTYPE_COUNT) {
        s->bytes += pu_dtype_nbytes(t->dtype, n);
        s->count[t->dtype]++;
        s->dt_params[t->dtype] += n;
    }
}

int64_t pu_model_n_params(const pu_model *m) {
    tally s = {0};
    visit_tensors(m, tally_fn, &s);
    return s.params;
}

int64_t pu_model_weight_bytes(const pu_model *m) {
    tally s = {0};
    visit_tensors(m, tally_fn, &s);
    return s.bytes;
}

static void put_bytes(pu_str *o, const char *label, int64_t b) {
    pu_str_appendf(o, "  %-24s %lld bytes (%.2f MiB)\n", label, (long long)b,
                   (double)b / (1024.0 * 1024.0));
}

void pu_model_describe(const pu_model *m, int64_t n_ctx, pu_str *out) {
    const pu_config *c = &m->cfg;
    if (n_ctx <= 0)
        n_ctx = c->max_position_embeddings < 4096 ? c->max_position_embeddings : 4096;
    tally s = {0};
    visit_tensors(m, tally_fn, &s);
    pu_str_appendf(out, "model:      %s\n", m->path ? m->path : "(memory)");
    pu_str_appendf(out, "format:     %s\n", m->format);
    pu_str_appendf(out, "tokenizer:  %s\n", m->tokenizer_path ? m->tokenizer_path : "(none)");
    pu_str_puts(out, "config:\n");
    pu_str_appendf(out, "  model_type               %s\n", c->model_type);
    pu_str_appendf(out, "  architecture             %s\n",
                   c->architecture[0] ? c->architecture : "(none)");
    if (m->w.v_head.data)
        pu_str_appendf(out, "  reward model             v_head (1, %lld), reward_token_id %lld\n",
                       (long long)c->hidden_size, (long long)c->reward_token_id);
    pu_str_appendf(out, "  vocab_size               %lld\n", (long long)c->vocab_size);
    pu_str_appendf(out, "  hidden_size              %lld\n", (long long)c->hidden_size);
    pu_str_appendf(out, "  intermediate_size        %lld\n", (long long)c->intermediate_size);
    pu_str_appendf(out, "  num_hidden_layers        %lld\n", (long long)c->num_hidden_layers);
    pu_str_appendf(out, "  num_attention_heads      %lld\n", (long long)c->num_attention_heads);
    pu_str_appendf(out, "  num_key_value_heads      %lld\n", (long long)c->num_key_value_heads);
    pu_str_appendf(out, "  head_dim                 %lld\n", (long long)c->head_dim);
    pu_str_appendf(out, "  hidden_act               %s\n", c->hidden_act);
    pu_str_appendf(out, "  max_position_embeddings  %lld\n", (long long)c->max_position_embeddings);
    pu_str_appendf(out, "  initializer_range        %g\n", c->initializer_range);
    pu_str_appendf(out, "  rms_norm_eps             %g\n", c->rms_norm_eps);
    pu_str_appendf(out, "  use_cache                %s\n", c->use_cache ? "true" : "false");
    pu_str_appendf(out, "  pad/bos/eos_token_id     %lld / %lld / %lld\n",
                   (long long)c->pad_token_id, (long long)c->bos_token_id,
                   (long long)c->eos_token_id);
    pu_str_appendf(out, "  tie_word_embeddings      %s\n",
                   c->tie_word_embeddings ? "true" : "false");
    pu_str_appendf(out, "  bias                     %s\n", c->bias ? "true" : "false");
    pu_str_appendf(out, "  rope_theta               %g\n", c->rope_theta);
    if (c->rope_scaling_type == PU_ROPE_SCALING_NONE)
        pu_str_puts(out, "  rope_scaling             none\n");
    else
        pu_str_appendf(out, "  rope_scaling             %s, factor %g\n",
                       c->rope_scaling_type == PU_ROPE_SCALING_LINEAR ? "linear" : "dynamic",
                       c->rope_scaling_factor);
    pu_str_appendf(out, "  rope layout              %s\n",
                   c->rope_interleaved ? "adjacent pairs (interleaved)" : "rotate-half");
    pu_str_appendf(out, "  attn_implementation      %s\n",
                   c->attn_implementation[0] ? c->attn_implementation : "(none)");
    pu_str_appendf(out, "  torch_dtype              %s\n",
                   c->torch_dtype[0] ? c->torch_dtype : "(none)");
    pu_str_puts(out, "parameters:\n");
    pu_str_appendf(out, "  total                    %lld\n", (long long)s.params);
    pu_str_appendf(out, "  non-embedding            %lld\n", (long long)(s.params - s.emb_params));
    pu_str_puts(out, "dtypes:\n");
    for (int d = 0; d < PU_DTYPE_COUNT; d++)
        if (s.count[d])
            pu_str_appendf(out, "  %-5s %4lld tensors, %lld params\n", pu_dtype_name((pu_dtype)d),
                           (long long)s.count[d], (long long)s.dt_params[d]);
    int64_t L = c->num_hidden_layers, C = c->hidden_size, F = c->intermediate_size;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t V = c->vocab_size;
    int64_t kv = 2 * L * n_ctx * Hkv * D * (int64_t)sizeof(float);
    /* decode activations: x, xn, qkv, attn out, 2F, scores (H, n_ctx), logits */
    int64_t act =
        (int64_t)sizeof(float) * (3 * C + (H + 2 * Hkv) * D + H * D + 2 * F + H * n_ctx + V);
    pu_str_appendf(out, "memory (n_ctx = %lld):\n", (long long)n_ctx);
    put_bytes(out, "weights", s.bytes);
    put_bytes(out, "KV cache (f32)", kv);
    put_bytes(out, "activations (per token)", act);
    put_bytes(out, "total (decode)", s.bytes + kv + act);
}

void pu_model_drop_pages(const pu_model *m, const void *p, size_t n) {
    const char *a = p, *b = a + n;
    for (int i = 0; i < m->n_maps; i++) {
        const char *lo = m->maps[i].data, *hi = lo + m->maps[i].size;
        if (!lo || a < lo || b > hi)
            continue;
        uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t s0 = ((uintptr_t)a + pg - 1) / pg * pg, s1 = (uintptr_t)b / pg * pg;
        if (s1 > s0) /* whole pages inside the range; read-only private file map: re-read on use */
            (void)madvise((void *)s0, s1 - s0, MADV_DONTNEED);
        return;
    }
}
