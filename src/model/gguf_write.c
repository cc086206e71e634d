/*
 * gguf_write.c — a pu_model to a GGUF v3 file laid out as llama.cpp's
 * converter writes InternLM2 (convert_hf_to_gguf.py, InternLM2Model) or
 * llama: tensor names token_embd / blk.N.{attn_norm, attn_q, attn_k, attn_v,
 * attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down} / output_norm / output;
 * the fused wqkv is split by the grouped layout (spec A.4) and, for a model
 * in HF rotate-half order, the rows of q and k are permuted per head as
 * LlamaModel.permute does ((2, D/2) -> (D/2, 2)), so llama.cpp's
 * adjacent-pair RoPE computes the same thing. Matrices are written in the
 * model's dtypes, row by row (quantized rows move as whole blocks); norm
 * weights as F32. KV metadata: general.*, <arch>.* hyper-parameters,
 * general.file_type, and the tokenizer (tokenizer.ggml.model "llama" with
 * tokens/scores/token_type and the special ids) when one is given.
 * Written through a temp file + fsync + rename (pu_atomic_file).
 */
#include <stdio.h>
#include <string.h>

#include "model/loaders.h"
#include "puyu/pu_tok.h"

#define ALIGN 32

typedef struct {
    char name[64];
    const pu_tensor *t;
    int64_t rows, K;
    int perm;       /* 0 none, else heads count of the q/k permutation */
    int64_t head_d; /* D for the permutation */
    /* rows taken from a fused wqkv: source row of output row r is
     * base_of(r) (see src_row) */
    int qkv_part; /* 0 none, 1 q, 2 k, 3 v */
    uint64_t off, bytes;
} wt;

typedef struct {
    FILE *f;
    bool err;
} wr;

static void w_bytes(wr *w, const void *p, size_t n) {
    if (!w->err && n && fwrite(p, 1, n, w->f) != n)
        w->err = true;
}
static void w_u32(wr *w, uint32_t v) {
    w_bytes(w, &v, 4);
}
static void w_u64(wr *w, uint64_t v) {
    w_bytes(w, &v, 8);
}
static void w_str(wr *w, const char *s, size_t n) {
    w_u64(w, n);
    w_bytes(w, s, n);
}
static void kv_head(wr *w, const char *key, uint32_t type) {
    w_str(w, key, strlen(key));
    w_u32(w, type);
}
static void kv_u32(wr *w, const char *key, uint32_t v) {
    kv_head(w, key, PU_GGUF_U32);
    w_u32(w, v);
}
static void kv_f32(wr *w, const char *key, float v) {
    kv_head(w, key, PU_GGUF_F32);
    w_bytes(w, &v, 4);
}
static void kv_bool(wr *w, const char *key, bool v) {
    kv_head(w, key, PU_GGUF_BOOL);
    uint8_t b = v;
    w_bytes(w, &b, 1);
}
static void kv_string(wr *w, const char *key, const char *v) {
    kv_head(w, key, PU_GGUF_STRING);
    w_str(w, v, strlen(v));
}

/* llama.cpp's llama_ftype of a model whose FFN matrices are in dt */
static uint32_t ftype_of(pu_dtype dt) {
    switch (dt) {
    case PU_DTYPE_F32: return 0;
    case PU_DTYPE_F16: return 1;
    case PU_DTYPE_Q4_0: return 2;
    case PU_DTYPE_Q4_1: return 3;
    case PU_DTYPE_Q8_0: return 7;
    case PU_DTYPE_Q5_0: return 8;
    case PU_DTYPE_Q5_1: return 9;
    case PU_DTYPE_Q4_K: return 15; /* Q4_K_M */
    case PU_DTYPE_Q5_K: return 17; /* Q5_K_M */
    case PU_DTYPE_Q6_K: return 18;
    case PU_DTYPE_BF16: return 32;
    default: return 0;
    }
}

/* source row (in t->data) of output row r */
static int64_t src_row(const wt *e, const pu_config *c, int64_t r) {
    int64_t D = c->head_dim, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    if (e->perm) { /* output row h*D + i*2 + j <- input row h*D + j*(D/2) + i */
        int64_t h = r / D, rem = r % D, i = rem / 2, j = rem % 2;
        r = h * D + j * (D / 2) + i;
    }
    if (!e->qkv_part)
        return r;
    int64_t G = H / Hkv;
    if (e->qkv_part == 1) { /* query head qh = r / D lives in group qh / G, slot qh % G */
        int64_t qh = r / D;
        return ((qh / G) * (G + 2) + qh % G) * D + r % D;
    }
    int64_t g = r / D, slot = e->qkv_part == 2 ? G : G + 1;
    (void)Hkv;
    return (g * (G + 2) + slot) * D + r % D;
}

pu_status pu_model_write_gguf(const pu_model *m, const struct pu_tok *tok, const char *path) {
    const pu_config *c = &m->cfg;
    const pu_weights *W = &m->w;
    bool llama = strcmp(c->model_type, "llama") == 0;
    const char *arch = llama ? "llama" : "internlm2";
    int64_t L = c->num_hidden_layers, C = c->hidden_size, H = c->num_attention_heads;
    int64_t Hkv = c->num_key_value_heads, D = c->head_dim;
    bool permute = !c->rope_interleaved;
    int64_t nt_cap = 3 + 9 * L;
    wt *ts = pu_calloc((size_t)nt_cap, sizeof *ts);
    int n = 0;
#define ADD(nm, tensor, part, pm)                      \
    do {                                               \
        wt *e_ = &ts[n++];                             \
        snprintf(e_->name, sizeof e_->name, "%s", nm); \
        e_->t = (tensor);                              \
        e_->qkv_part = (part);                         \
        e_->perm = (pm);                               \
    } while (0)
    ADD("token_embd.weight", &W->tok_embeddings, 0, 0);
    char nm[64];
    for (int64_t l = 0; l < L; l++) {
        const pu_layer_weights *lw = &W->layers[l];
#define LN(s) (snprintf(nm, sizeof nm, "blk.%lld.%s.weight", (long long)l, s), nm)
        ADD(LN("attn_norm"), &lw->attn_norm, 0, 0);
        if (lw->wqkv.data) {
            ADD(LN("attn_q"), &lw->wqkv, 1, permute ? (int)H : 0);
            ADD(LN("attn_k"), &lw->wqkv, 2, permute ? (int)Hkv : 0);
            ADD(LN("attn_v"), &lw->wqkv, 3, 0);
        } else {
            ADD(LN("attn_q"), &lw->wq, 0, permute ? (int)H : 0);
            ADD(LN("attn_k"), &lw->wk, 0, permute ? (int)Hkv : 0);
            ADD(LN("attn_v"), &lw->wv, 0, 0);
        }
        ADD(LN("attn_output"), &lw->wo, 0, 0);
        ADD(LN("ffn_norm"), &lw->ffn_norm, 0, 0);
        ADD(LN("ffn_gate"), &lw->w1, 0, 0);
        ADD(LN("ffn_up"), &lw->w3, 0, 0);
        ADD(LN("ffn_down"), &lw->w2, 0, 0);
#undef LN
    }
    ADD("output_norm.weight", &W->norm, 0, 0);
    bool tied = W->output.data == W->tok_embeddings.data;
    if (!tied)
        ADD("output.weight", &W->output, 0, 0);
#undef ADD
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        wt *e = &ts[i];
        e->head_d = D;
        if (e->t->ndim == 1) {
            e->rows = 1, e->K = e->t->shape[0];
        } else {
            e->K = e->t->shape[1];
            e->rows = e->qkv_part == 1 ? H * D : e->qkv_part ? Hkv * D : e->t->shape[0];
        }
        e->bytes = (uint64_t)(e->rows * pu_dtype_nbytes(e->t->dtype, e->K));
        e->off = off;
        off += e->bytes;
        off += (ALIGN - off % ALIGN) % ALIGN;
    }

    pu_atomic_file af = {0};
    pu_status st = pu_atomic_open(&af, path);
    if (st != PU_OK) {
        pu_free(ts);
        return st;
    }
    wr w = {af.f, false};
    int64_t nv = tok ? pu_tok_n_vocab(tok) : 0;
    bool spm = tok && pu_tok_get_type(tok) == PU_TOK_SPM && nv == c->vocab_size;
    if (tok && !spm)
        pu_log_warn("%s: tokenizer not written (only a SentencePiece vocabulary of %lld pieces "
                    "is written)",
                    path, (long long)c->vocab_size);
    if (c->rope_scaling_type == PU_ROPE_SCALING_DYNAMIC)
        pu_log_warn("%s: dynamic NTK RoPE scaling has no GGUF key; written without scaling", path);
    uint64_t n_kv = 13 + (llama ? 1 : 0) +
                    (c->rope_scaling_type == PU_ROPE_SCALING_LINEAR ? 2 : 0) +
                    (spm ? 11 + (c->pad_token_id >= 0) : 0);
    w_bytes(&w, "GGUF", 4);
    w_u32(&w, 3);
    w_u64(&w, (uint64_t)n);
    w_u64(&w, n_kv);
    char key[96];
#define K(s) (snprintf(key, sizeof key, "%s.%s", arch, s), key)
    kv_string(&w, "general.architecture", arch);
    kv_string(&w, "general.name", "puyu");
    kv_u32(&w, "general.alignment", ALIGN);
    kv_u32(&w, "general.file_type", ftype_of(L > 0 ? W->layers[0].w1.dtype : PU_DTYPE_F32));
    kv_u32(&w, K("context_length"), (uint32_t)c->max_position_embeddings);
    kv_u32(&w, K("embedding_length"), (uint32_t)C);
    kv_u32(&w, K("block_count"), (uint32_t)L);
    kv_u32(&w, K("feed_forward_length"), (uint32_t)c->intermediate_size);
    kv_u32(&w, K("attention.head_count"), (uint32_t)H);
    kv_u32(&w, K("attention.head_count_kv"), (uint32_t)Hkv);
    kv_f32(&w, K("attention.layer_norm_rms_epsilon"), (float)c->rms_norm_eps);
    kv_f32(&w, K("rope.freq_base"), (float)c->rope_theta);
    kv_u32(&w, K("rope.dimension_count"), (uint32_t)D);
    if (llama)
        kv_u32(&w, K("vocab_size"), (uint32_t)c->vocab_size);
    if (c->rope_scaling_type == PU_ROPE_SCALING_LINEAR) {
        kv_string(&w, K("rope.scaling.type"), "linear");
        kv_f32(&w, K("rope.scaling.factor"), (float)c->rope_scaling_factor);
    }
#undef K
    if (spm) {
        kv_string(&w, "tokenizer.ggml.model", "llama");
        kv_head(&w, "tokenizer.ggml.tokens", PU_GGUF_ARRAY);
        w_u32(&w, PU_GGUF_STRING);
        w_u64(&w, (uint64_t)nv);
        for (int32_t i = 0; i < nv; i++) {
            size_t len = 0;
            const char *p = pu_tok_piece(tok, i, &len);
            w_str(&w, p ? p : "", p ? len : 0);
        }
        kv_head(&w, "tokenizer.ggml.scores", PU_GGUF_ARRAY);
        w_u32(&w, PU_GGUF_F32);
        w_u64(&w, (uint64_t)nv);
        for (int32_t i = 0; i < nv; i++) {
            float s = pu_tok_score(tok, i);
            w_bytes(&w, &s, 4);
        }
        kv_head(&w, "tokenizer.ggml.token_type", PU_GGUF_ARRAY);
        w_u32(&w, PU_GGUF_I32);
        w_u64(&w, (uint64_t)nv);
        for (int32_t i = 0; i < nv; i++) {
            int32_t a = (int32_t)pu_tok_get_attr(tok, i);
            w_bytes(&w, &a, 4);
        }
        int32_t bos = pu_tok_bos(tok), eos = pu_tok_eos(tok), unk = pu_tok_unk(tok);
        kv_u32(&w, "tokenizer.ggml.bos_token_id", (uint32_t)(bos >= 0 ? bos : c->bos_token_id));
        kv_u32(&w, "tokenizer.ggml.eos_token_id", (uint32_t)(eos >= 0 ? eos : c->eos_token_id));
        kv_u32(&w, "tokenizer.ggml.unknown_token_id", (uint32_t)(unk >= 0 ? unk : 0));
        if (c->pad_token_id >= 0)
            kv_u32(&w, "tokenizer.ggml.padding_token_id", (uint32_t)c->pad_token_id);
        kv_bool(&w, "tokenizer.ggml.add_bos_token", true);
        kv_bool(&w, "tokenizer.ggml.add_eos_token", false);
        /* the normalizer flags of the source model (llama.cpp's converter writes
         * add_space_prefix from normalizer_spec.add_dummy_prefix; both it and puyu
         * assume true when the key is absent, so a vocabulary trained without the
         * dummy prefix gained a leading U+2581 on every text) */
        pu_tok_spm_flags fl;
        pu_tok_get_spm_flags(tok, &fl);
        kv_bool(&w, "tokenizer.ggml.add_space_prefix", fl.add_dummy_prefix);
        kv_bool(&w, "tokenizer.ggml.remove_extra_whitespaces", fl.remove_extra_whitespaces);
    }
    for (int i = 0; i < n; i++) {
        const wt *e = &ts[i];
        int nd = e->t->ndim;
        w_str(&w, e->name, strlen(e->name));
        w_u32(&w, (uint32_t)nd);
        w_u64(&w, (uint64_t)e->K);
        if (nd == 2)
            w_u64(&w, (uint64_t)e->rows);
        w_u32(&w, pu_dtype_to_ggml(e->t->dtype));
        w_u64(&w, e->off);
    }
    long pos = ftell(w.f);
    static const uint8_t zeros[ALIGN] = {0};
    if (pos >= 0)
        w_bytes(&w, zeros, (size_t)((ALIGN - pos % ALIGN) % ALIGN));
    uint64_t done = 0;
    for (int i = 0; i < n && !w.err; i++) {
        const wt *e = &ts[i];
        w_bytes(&w, zeros, (size_t)(e->off - done));
        int64_t rb = pu_dtype_nbytes(e->t->dtype, e->K);
        for (int64_t r = 0; r < e->rows; r++)
            w_bytes(&w, (const uint8_t *)e->t->data + src_row(e, c, r) * rb, (size_t)rb);
        done = e->off + e->bytes;
    }
    pu_free(ts);
    if (w.err) {
        pu_atomic_abort(&af);
        return pu_err_set(PU_ERR_IO, "%s: write failed", path);
    }
    return pu_atomic_commit(&af);
}
