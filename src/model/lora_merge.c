/*
 * lora_merge.c — fold LoRA adapters into a base model and write a plain HF
 * model directory (pu_lora_merge, `puyu lora merge`).
 *
 * W' = W + sum_i s_i B_i A_i for every targeted linear (PEFT's merge), in
 * fp32, one tensor at a time (the base stays memory-mapped; peak memory is
 * one tensor), written as F32 or BF16 (round to nearest even) in InternLM2's
 * HF naming. Bases with separate Q/K/V (GGUF, llama2.c) are repacked into the
 * fused grouped wqkv (spec §A.4) and their Q/K rows taken back from
 * adjacent-pair order to rotate-half order (the inverse of llama.cpp's
 * permute), so the output is what HF's InternLM2ForCausalLM loads. The LM
 * head is always written (tie_word_embeddings false): an adapter on `output`
 * unties it anyway.
 *
 * Atomicity: everything goes to OUT.tmp-<pid>/ and that directory is renamed
 * to OUT at the end (OUT must not exist or be empty).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/model_impl.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_lora.h"

typedef struct {
    char name[96];
    int64_t d0, d1; /* d1 == 0: 1-D */
} m_tensor;

static void to_f32(const pu_tensor *t, float *dst) {
    pu_kernels_get()->to_f32[t->dtype](dst, t->data, pu_tensor_numel(t));
}

/* rows of a (nh*D, C) matrix from adjacent-pair order back to rotate-half
 * order: rotate-half row j*D/2 + i <- interleaved row 2i + j (per head) */
static void unpermute_into(float *dst, const float *src, int64_t nh, int64_t D, int64_t C) {
    int64_t half = D / 2;
    for (int64_t h = 0; h < nh; h++)
        for (int64_t d = 0; d < D; d++)
            memcpy(dst + (h * D + d) * C, src + (h * D + 2 * (d % half) + d / half) * C,
                   (size_t)C * sizeof(float));
}

/* layer l's wqkv in the HF grouped layout (fp32, owned) */
static float *hf_wqkv(const pu_model *m, int64_t l) {
    const pu_config *c = &m->cfg;
    const pu_layer_weights *lw = &m->w.layers[l];
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, G = H / Hkv;
    float *out = pu_malloc((size_t)((H + 2 * Hkv) * D * C) * sizeof(float));
    if (lw->wqkv.data) {
        to_f32(&lw->wqkv, out);
        return out;
    }
    float *q = pu_malloc((size_t)(H * D * C) * sizeof(float));
    float *k = pu_malloc((size_t)(Hkv * D * C) * sizeof(float));
    float *v = pu_malloc((size_t)(Hkv * D * C) * sizeof(float));
    to_f32(&lw->wq, q);
    to_f32(&lw->wk, k);
    to_f32(&lw->wv, v);
    if (c->rope_interleaved) {
        float *t = pu_malloc((size_t)(H * D * C) * sizeof(float));
        unpermute_into(t, q, H, D, C);
        memcpy(q, t, (size_t)(H * D * C) * sizeof(float));
        unpermute_into(t, k, Hkv, D, C);
        memcpy(k, t, (size_t)(Hkv * D * C) * sizeof(float));
        pu_free(t);
    }
    size_t hb = (size_t)(D * C) * sizeof(float);
    for (int64_t g = 0; g < Hkv; g++) {
        float *grp = out + g * (G + 2) * D * C;
        memcpy(grp, q + g * G * D * C, hb * (size_t)G);
        memcpy(grp + G * D * C, k + g * D * C, hb);
        memcpy(grp + (G + 1) * D * C, v + g * D * C, hb);
    }
    pu_free(q);
    pu_free(k);
    pu_free(v);
    return out;
}

/* W (out, in) += s B A */
static void add_delta(float *W, const pu_lora_mat *mt, int64_t r, float s) {
    for (int64_t o = 0; o < mt->out; o++) {
        float *row = W + o * mt->in;
        for (int64_t j = 0; j < r; j++) {
            float b = s * mt->B[o * r + j];
            if (b == 0.0f)
                continue;
            const float *a = mt->A + j * mt->in;
            for (int64_t i = 0; i < mt->in; i++)
                row[i] += b * a[i];
        }
    }
}

static const char *const parts[PU_LORA_OUTPUT] = {
    "attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"};

/* tensor k of the output list, in fp32 (owned), deltas added */
static float *produce(const pu_model *m, const pu_lora *const *l, const float *scales, int n,
                      int64_t k) {
    const pu_config *c = &m->cfg;
    int64_t L = c->num_hidden_layers;
    const pu_tensor *t = NULL;
    int target = -1;
    int64_t layer = 0;
    float *out = NULL;
    if (k == 0) {
        t = &m->w.tok_embeddings;
    } else if (k == 1 + L * 7) {
        t = &m->w.norm;
    } else if (k == 2 + L * 7) {
        t = &m->w.output;
        target = PU_LORA_OUTPUT;
    } else {
        layer = (k - 1) / 7;
        const pu_layer_weights *lw = &m->w.layers[layer];
        switch ((k - 1) % 7) {
        case 0: t = &lw->attn_norm; break;
        case 1: out = hf_wqkv(m, layer), target = PU_LORA_WQKV; break;
        case 2: t = &lw->wo, target = PU_LORA_WO; break;
        case 3: t = &lw->ffn_norm; break;
        case 4: t = &lw->w1, target = PU_LORA_W1; break;
        case 5: t = &lw->w3, target = PU_LORA_W3; break;
        default: t = &lw->w2, target = PU_LORA_W2; break;
        }
    }
    if (!out) {
        out = pu_malloc((size_t)pu_tensor_numel(t) * sizeof(float));
        to_f32(t, out);
    }
    for (int i = 0; target >= 0 && i < n; i++) {
        const pu_lora_mat *mt = pu_lora_get_const(l[i], layer, (pu_lora_target)target);
        if (mt)
            add_delta(out, mt, l[i]->r, (scales ? scales[i] : 1.0f) * l[i]->scale);
    }
    return out;
}

static void list_tensors(const pu_config *c, m_tensor *t) {
    int64_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t L = c->num_hidden_layers, k = 0;
    t[k++] = (m_tensor){"model.tok_embeddings.weight", V, C};
    for (int64_t l = 0; l < L; l++) {
        const char *names[7] = {"attention_norm", parts[0], parts[1], "ffn_norm",
                                parts[2],         parts[4], parts[3]};
        int64_t sh[7][2] = {{C, 0}, {(H + 2 * Hkv) * D, C}, {C, H * D}, {C, 0}, {F, C}, {F, C},
                            {C, F}};
        for (int j = 0; j < 7; j++) {
            t[k] = (m_tensor){"", sh[j][0], sh[j][1]};
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%lld.%s.weight", (long long)l,
                     names[j]);
            k++;
        }
    }
    t[k++] = (m_tensor){"model.norm.weight", C, 0};
    t[k++] = (m_tensor){"output.weight", V, C};
}

static pu_status copy_file(const char *src, const char *dst) {
    char *buf = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(src, &buf, &len));
    pu_status s = pu_file_write_atomic(dst, buf, len);
    pu_free(buf);
    return s;
}

static void rm_tree_flat(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = pu_path_join(dir, e->d_name);
        unlink(p);
        pu_free(p);
    }
    closedir(d);
    rmdir(dir);
}

pu_status pu_lora_merge(const pu_model *m, const pu_lora *const *l, const float *scales, int n,
                        pu_dtype dtype, const char *out_dir_arg) {
    const pu_config *bc = &m->cfg;
    char out_dir[4000];
    snprintf(out_dir, sizeof out_dir, "%s", out_dir_arg);
    for (size_t n_ = strlen(out_dir); n_ > 1 && out_dir[n_ - 1] == '/'; n_--)
        out_dir[n_ - 1] = '\0';
    if (dtype != PU_DTYPE_F32 && dtype != PU_DTYPE_BF16)
        return pu_err_set(PU_ERR_INVALID, "lora merge: output dtype must be F32 or BF16");
    for (int i = 0; i < n; i++)
        PU_TRY(pu_lora_check_base_(l[i], bc, "lora merge"));
    struct stat sb;
    if (stat(out_dir, &sb) == 0) {
        DIR *d = S_ISDIR(sb.st_mode) ? opendir(out_dir) : NULL;
        bool empty = d != NULL;
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                empty = false;
        if (d)
            closedir(d);
        if (!empty)
            return pu_err_set(PU_ERR_IO, "%s: exists and is not an empty directory", out_dir);
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out_dir, (long)getpid());
    rm_tree_flat(tmp);
    PU_TRY(pu_mkdir_p(tmp));

    int64_t L = bc->num_hidden_layers, nt = 3 + 7 * L;
    m_tensor *ts = pu_calloc((size_t)nt, sizeof *ts);
    list_tensors(bc, ts);
    size_t es = dtype == PU_DTYPE_F32 ? 4 : 2;
    pu_str h = {0};
    pu_str_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int64_t k = 0; k < nt; k++) {
        int64_t ne = ts[k].d0 * (ts[k].d1 ? ts[k].d1 : 1);
        /* 1-D norm weights stay F32 (as the base loaders convert them) */
        size_t tes = ts[k].d1 ? es : 4;
        pu_str_appendf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", ts[k].name,
                       tes == 4 ? "F32" : "BF16", (long long)ts[k].d0);
        if (ts[k].d1)
            pu_str_appendf(&h, ",%lld", (long long)ts[k].d1);
        pu_str_appendf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                       (unsigned long long)(off + (uint64_t)ne * tes));
        off += (uint64_t)ne * tes;
    }
    pu_str_putc(&h, '}');
    while (h.len % 8)
        pu_str_putc(&h, ' ');

    char *wpath = pu_path_join(tmp, "model.safetensors");
    pu_atomic_file af;
    pu_status s = pu_atomic_open(&af, wpath);
    if (s == PU_OK) {
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
        bool ok = fwrite(le, 1, 8, af.f) == 8 && fwrite(h.p, 1, h.len, af.f) == h.len;
        for (int64_t k = 0; ok && k < nt; k++) {
            int64_t ne = ts[k].d0 * (ts[k].d1 ? ts[k].d1 : 1);
            float *data = produce(m, l, scales, n, k);
            if (!ts[k].d1 || dtype == PU_DTYPE_F32) {
                ok = fwrite(data, 4, (size_t)ne, af.f) == (size_t)ne;
            } else {
                uint16_t *b16 = pu_malloc((size_t)ne * 2);
                for (int64_t i = 0; i < ne; i++)
                    b16[i] = pu_f32_to_bf16(data[i]);
                ok = fwrite(b16, 2, (size_t)ne, af.f) == (size_t)ne;
                pu_free(b16);
            }
            pu_free(data);
        }
        if (ok) {
            s = pu_atomic_commit(&af);
        } else {
            pu_atomic_abort(&af);
            s = pu_err_set(PU_ERR_IO, "%s: write failed (disk full?)", wpath);
        }
    }
    pu_str_free(&h);
    pu_free(wpath);
    pu_free(ts);

    if (s == PU_OK) {
        pu_config c = *bc;
        snprintf(c.model_type, sizeof c.model_type, "internlm2");
        snprintf(c.architecture, sizeof c.architecture, "InternLM2ForCausalLM");
        snprintf(c.torch_dtype, sizeof c.torch_dtype, "%s",
                 dtype == PU_DTYPE_F32 ? "float32" : "bfloat16");
        c.tie_word_embeddings = false;
        c.bias = false;
        c.rope_interleaved = false;
        char *js = pu_config_to_json(&c);
        char *cp = pu_path_join(tmp, "config.json");
        s = pu_file_write_atomic(cp, js, strlen(js));
        pu_free(cp);
        pu_free(js);
    }
    /* the tokenizer files of an HF base directory */
    if (s == PU_OK && strcmp(m->format, "safetensors") == 0 && m->path) {
        const char *files[] = {"tokenizer.model",        "tokenizer.json",
                               "tokenizer_config.json",  "special_tokens_map.json",
                               "generation_config.json", "added_tokens.json"};
        for (size_t i = 0; s == PU_OK && i < sizeof files / sizeof *files; i++) {
            char *src = pu_path_join(m->path, files[i]);
            if (pu_file_exists(src)) {
                char *dst = pu_path_join(tmp, files[i]);
                s = copy_file(src, dst);
                pu_free(dst);
            }
            pu_free(src);
        }
    } else if (s == PU_OK && m->tokenizer_path) {
        pu_log_warn("lora merge: the base's tokenizer lives inside %s; %s gets no tokenizer "
                    "file (pass -t to commands using it)",
                    m->tokenizer_path, out_dir);
    }
    if (s == PU_OK) {
        rmdir(out_dir); /* an empty OUT is replaced */
        if (rename(tmp, out_dir) != 0)
            s = pu_err_set(PU_ERR_IO, "%s: rename from %s failed: %s", out_dir, tmp,
                           strerror(errno));
    }
    if (s != PU_OK)
        rm_tree_flat(tmp);
    return s;
}
