/*
 * lora_gguf.c — export a PEFT adapter as a llama.cpp GGUF LoRA adapter
 * (pu_lora_export_gguf, `puyu lora export-gguf`).
 *
 * What llama.cpp's loader (src/llama-adapter.cpp, llama_adapter_lora_init)
 * requires, and what this writer produces:
 *   - general.type = "adapter", adapter.type = "lora" (strings);
 *   - general.architecture equal to the base GGUF's ("internlm2" / "llama");
 *   - adapter.lora.alpha an F32 value (read with gguf_get_val_f32); the
 *     graph scales each pair by user_scale * alpha / rank with rank =
 *     lora_b's ne[0]. PEFT's use_rslora (alpha / sqrt(r)) has no key there,
 *     and convert_lora_to_gguf.py copies lora_alpha unchanged, so we write
 *     alpha' = scale * r: alpha' / r is the adapter's true scale either way
 *     (= lora_alpha without rslora);
 *   - tensors named <base tensor>.lora_a / .lora_b, both present, the base
 *     tensor existing in the base GGUF; shapes ne(a) = [in, r], ne(b) =
 *     [r, out] with in/out of the base tensor (so A is PEFT's (r, in) and B
 *     PEFT's (out, r) row-major, unchanged);
 *   - names as convert_hf_to_gguf.py maps InternLM2: blk.N.attn_q / attn_k /
 *     attn_v / attn_output / ffn_gate (w1) / ffn_up (w3) / ffn_down (w2),
 *     output.
 * wqkv: the converter splits the base's fused rows by the grouped layout
 * (spec §A.4) and permutes q (n_head) and k (n_head_kv) rows for
 * adjacent-pair RoPE; its LoraTorchTensor applies the same row operations
 * to B and keeps A, so attn_q/k/v share wqkv's A and get B's rows split and
 * permuted the same way (per head, rotate-half row j*D/2 + i goes to 2i + j).
 * Tensors are F32; GGUF v3, alignment 32. Written atomically.
 */
#include <stdio.h>
#include <string.h>

#include "model/model_impl.h"
#include "puyu/pu_lora.h"

#define GGUF_ALIGN 32

typedef struct {
    char name[96];
    int64_t ne0, ne1; /* ggml order: ne0 innermost */
    float *data;      /* owned */
} g_tensor;

static void put_u32(pu_str *o, uint32_t v) {
    pu_str_append(o, (const char *)&v, 4);
}
static void put_u64(pu_str *o, uint64_t v) {
    pu_str_append(o, (const char *)&v, 8);
}
static void put_gstr(pu_str *o, const char *s) {
    put_u64(o, strlen(s));
    pu_str_append(o, s, strlen(s));
}
static void kv_str(pu_str *o, const char *k, const char *v) {
    put_gstr(o, k);
    put_u32(o, 8); /* STRING */
    put_gstr(o, v);
}

static float *dup_f(const float *p, int64_t n) {
    float *d = pu_malloc((size_t)n * sizeof(float));
    memcpy(d, p, (size_t)n * sizeof(float));
    return d;
}

/* rows [row0, row0 + nh*D) of the packed B selected per grouped layout:
 * q heads of every group (slot < G), key (slot G) or value (slot G+1) */
static float *split_b(const pu_config *c, const float *B, int64_t r, int which, bool permute) {
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t G = H / Hkv, half = D / 2;
    int64_t nh = which == 0 ? H : Hkv;
    float *out = pu_malloc((size_t)(nh * D * r) * sizeof(float));
    for (int64_t h = 0; h < nh; h++) {
        int64_t g = which == 0 ? h / G : h, slot = which == 0 ? h % G : (which == 1 ? G : G + 1);
        const float *src = B + (g * (G + 2) + slot) * D * r;
        for (int64_t d = 0; d < D; d++) {
            int64_t to = permute && which < 2 ? 2 * (d % half) + d / half : d;
            memcpy(out + (h * D + to) * r, src + d * r, (size_t)r * sizeof(float));
        }
    }
    return out;
}

pu_status pu_lora_export_gguf(const pu_lora *l, const pu_config *base, const char *path) {
    PU_TRY(pu_lora_check(l, base));
    const char *arch = !strcmp(base->model_type, "llama") ? "llama" : "internlm2";
    if (l->output.A && base->tie_word_embeddings)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: the adapter targets `output` but the base ties it to the "
                          "embeddings (llama.cpp has no output.weight to adapt)",
                          path);
    int64_t L = l->n_layers, r = l->r, C = base->hidden_size;
    int64_t H = base->num_attention_heads, Hkv = base->num_key_value_heads, D = base->head_dim;
    g_tensor *ts = pu_calloc((size_t)(L * 14 + 2), sizeof *ts);
    int n = 0;
    static const char *const gnames[PU_LORA_OUTPUT] = {NULL, "attn_output", "ffn_gate", "ffn_down",
                                                       "ffn_up"};
    for (int64_t i = 0; i < L; i++) {
        for (int t = 0; t < PU_LORA_OUTPUT; t++) {
            const pu_lora_mat *m = pu_lora_get_const(l, i, (pu_lora_target)t);
            if (!m)
                continue;
            if (t == PU_LORA_WQKV) {
                const char *qkv[3] = {"attn_q", "attn_k", "attn_v"};
                int64_t outs[3] = {H * D, Hkv * D, Hkv * D};
                for (int w = 0; w < 3; w++) {
                    g_tensor *a = &ts[n++], *b = &ts[n++];
                    snprintf(a->name, sizeof a->name, "blk.%lld.%s.weight.lora_a", (long long)i,
                             qkv[w]);
                    snprintf(b->name, sizeof b->name, "blk.%lld.%s.weight.lora_b", (long long)i,
                             qkv[w]);
                    a->ne0 = C; /* A shared by q, k and v */
                    a->ne1 = r;
                    a->data = dup_f(m->A, r * C);
                    b->ne0 = r;
                    b->ne1 = outs[w];
                    b->data = split_b(base, m->B, r, w, true);
                }
                continue;
            }
            g_tensor *a = &ts[n++], *b = &ts[n++];
            snprintf(a->name, sizeof a->name, "blk.%lld.%s.weight.lora_a", (long long)i, gnames[t]);
            snprintf(b->name, sizeof b->name, "blk.%lld.%s.weight.lora_b", (long long)i, gnames[t]);
            a->ne0 = m->in;
            a->ne1 = r;
            a->data = dup_f(m->A, r * m->in);
            b->ne0 = r;
            b->ne1 = m->out;
            b->data = dup_f(m->B, m->out * r);
        }
    }
    if (l->output.A) {
        g_tensor *a = &ts[n++], *b = &ts[n++];
        snprintf(a->name, sizeof a->name, "output.weight.lora_a");
        snprintf(b->name, sizeof b->name, "output.weight.lora_b");
        a->ne0 = l->output.in;
        a->ne1 = r;
        a->data = dup_f(l->output.A, r * l->output.in);
        b->ne0 = r;
        b->ne1 = l->output.out;
        b->data = dup_f(l->output.B, l->output.out * r);
    }

    pu_str o = {0};
    pu_str_append(&o, "GGUF", 4);
    put_u32(&o, 3);
    put_u64(&o, (uint64_t)n);
    put_u64(&o, 6);
    kv_str(&o, "general.architecture", arch);
    kv_str(&o, "general.type", "adapter");
    kv_str(&o, "adapter.type", "lora");
    put_gstr(&o, "adapter.lora.alpha");
    put_u32(&o, 6); /* FLOAT32 */
    float alpha = (float)((double)l->scale * (double)r);
    if (!l->use_rslora)
        alpha = (float)l->alpha;
    pu_str_append(&o, (const char *)&alpha, 4);
    put_gstr(&o, "general.alignment");
    put_u32(&o, 4); /* UINT32 */
    put_u32(&o, GGUF_ALIGN);
    kv_str(&o, "general.name", l->base_model[0] ? l->base_model : "puyu LoRA adapter");
    uint64_t off = 0;
    for (int k = 0; k < n; k++) {
        put_gstr(&o, ts[k].name);
        put_u32(&o, 2);
        put_u64(&o, (uint64_t)ts[k].ne0);
        put_u64(&o, (uint64_t)ts[k].ne1);
        put_u32(&o, 0); /* GGML_TYPE_F32 */
        put_u64(&o, off);
        off += (uint64_t)(ts[k].ne0 * ts[k].ne1) * 4;
        off += (GGUF_ALIGN - off % GGUF_ALIGN) % GGUF_ALIGN;
    }
    while (o.len % GGUF_ALIGN)
        pu_str_putc(&o, 0);
    size_t base_off = o.len;
    off = 0;
    for (int k = 0; k < n; k++) {
        while (o.len < base_off + off)
            pu_str_putc(&o, 0);
        size_t nb = (size_t)(ts[k].ne0 * ts[k].ne1) * 4;
        pu_str_append(&o, (const char *)ts[k].data, nb);
        off += nb;
        off += (GGUF_ALIGN - off % GGUF_ALIGN) % GGUF_ALIGN;
    }
    pu_status s = pu_file_write_atomic(path, o.p, o.len);
    pu_str_free(&o);
    for (int k = 0; k < n; k++)
        pu_free(ts[k].data);
    pu_free(ts);
    return s;
}
