/*
 * forward.c — the InternLM2 forward pass with a KV cache (pu_session).
 *
 * A linear transcription of HF modeling_internlm2.py in fp32:
 *
 *   x = tok_embeddings[ids]                                  (T, C)
 *   per layer:  xb  = rmsnorm(x) ; qkv = xb · wqkv^T           (T, (H+2Hkv)D)
 *               q,k,v split by the grouped layout (spec A.4); RoPE(q, k)
 *               att = causal GQA softmax(q k^T / sqrt(D)) v     (T, H D)
 *               x  += att · wo^T
 *               x  += w2 · (silu(w1 · rmsnorm(x)) * (w3 · rmsnorm(x)))
 *   logits = rmsnorm(x) · output^T                           (T, V)
 *
 * A prompt is prefilled in one pass per chunk of up to PU_CHUNK tokens with
 * matrix-matrix products; decoding appends one token at a time. Weights stay
 * in their stored dtype (F32/BF16/F16) and the matmul kernels convert on the
 * fly.
 *
 * RoPE. HF rotate-half for HF checkpoints; adjacent pairs for GGUF/llama2.c
 * weights (cfg.rope_interleaved). inv_freq, positions and angles are computed
 * in fp32 exactly as the HF code does. Linear scaling divides positions by
 * the factor. Dynamic NTK (HF InternLM2DynamicNTKScalingRotaryEmbedding): the
 * base used by an eval call is a function of the total length L = past +
 * current after the call; when L exceeds max_position_embeddings M it is
 * base·(f·L/M − (f−1))^(D/(D−2)). As in HF's cached generate, keys and values
 * already in the cache keep what they were computed with (HF does not
 * re-rotate, and it could not re-create deeper layers' K/V without
 * recomputing the prefix): a one-call forward over the whole sequence equals
 * HF's forward exactly, and token-by-token decoding equals HF's generate with
 * use_cache=True exactly. Below M the two coincide with plain RoPE.
 */
#include <math.h>
#include <string.h>

#include <stdatomic.h>
#include <stdlib.h>

#include "model_impl.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"
#include "train/gemm_bf16.h" /* prefill of BF16 weights on the BF16 GEMM (AVX512_BF16 / AMX) */

#define PU_CHUNK 256 /* max tokens per prefill pass (bounds scratch memory) */

struct pu_session {
    const pu_model *m;
    const pu_config *c;
    const pu_kernels *k;
    pu_pool *pool;
    int64_t n_ctx; /* cache capacity (tokens) */
    int64_t pos;   /* tokens in the cache */
    int64_t kvdim; /* Hkv * D */
    pu_kv_type kvt; /* element type of the cache (pu_kernels.h) */
    void *kcache;   /* (L, n_ctx, Hkv*D) rotated keys, elements of kvt */
    void *vcache;   /* (L, n_ctx, Hkv*D) */
    float *ksz;     /* Q8: (L, n_ctx, Hkv, 2) scale, zero of each key row; else NULL */
    float *vsz;     /* Q8: the same for values */
    double cur_base; /* RoPE base of the last eval call */
    /* scratch for up to PU_CHUNK tokens */
    float *x;        /* (T, C) residual stream */
    float *xb;       /* (T, C) */
    float *qkv;      /* (T, (H+2Hkv) D) */
    float *q;        /* (T, H D) */
    float *kk;       /* (T, Hkv D) */
    float *vv;       /* (T, Hkv D) */
    float *att;      /* (T, H D) */
    float *h1;       /* (T, F) */
    float *h3;       /* (T, F) */
    float *cos;      /* (T, D/2) */
    float *sin;      /* (T, D/2) */
    float *inv_freq; /* (D/2) */
    /* unmerged LoRA adapters (pu_session_set_adapters) + their scratch */
    pu_lora_use *lora;
    int n_lora;
    float *lora_u, *lora_z;
    int64_t lora_cap_u, lora_cap_z;
    pu_act_hook_fn act_hook; /* AWQ calibration (model_impl.h), NULL normally */
    void *act_ud;
};

void pu_session_set_act_hook_(pu_session *s, pu_act_hook_fn fn, void *ud) {
    s->act_hook = fn;
    s->act_ud = ud;
}

/* ---------------------------------------------------------------- RoPE */

/* Effective RoPE base for a total sequence length L (HF dynamic NTK). */
static double rope_base_for(const pu_config *c, int64_t L) {
    double base = c->rope_theta;
    if (c->rope_scaling_type == PU_ROPE_SCALING_DYNAMIC && L > c->max_position_embeddings) {
        double f = c->rope_scaling_factor, D = (double)c->head_dim;
        base = base *
               pow(f * (double)L / (double)c->max_position_embeddings - (f - 1.0), D / (D - 2.0));
    }
    return base;
}

/* inv_freq[i] = 1 / base^(2i/D), in fp32 like torch:
 * (arange(0, D, 2).float() / D) then base ** that (fp32), then 1.0 / (fp32). */
static void make_inv_freq(float *inv_freq, double base, int64_t D) {
    float fb = (float)base;
    for (int64_t i = 0; i < D / 2; i++) {
        float e = (float)(2 * i) / (float)D;
        float p = (float)pow((double)fb, (double)e);
        inv_freq[i] = 1.0f / p;
    }
}

/* cos/sin tables (n, D/2) for positions p0 .. p0+n-1. */
static void make_rope_tables(const pu_config *c, const float *inv_freq, int64_t p0, int64_t n,
                             float *cs, float *sn) {
    int64_t half = c->head_dim / 2;
    float lin =
        c->rope_scaling_type == PU_ROPE_SCALING_LINEAR ? (float)c->rope_scaling_factor : 1.0f;
    for (int64_t t = 0; t < n; t++) {
        float pos = (float)(p0 + t);
        if (c->rope_scaling_type == PU_ROPE_SCALING_LINEAR)
            pos = pos / lin;
        for (int64_t i = 0; i < half; i++) {
            float ang = pos * inv_freq[i];
            cs[t * half + i] = (float)cos((double)ang);
            sn[t * half + i] = (float)sin((double)ang);
        }
    }
}

/* ---------------------------------------------------------------- session */

static void session_free_buffers(pu_session *s) {
    pu_free_aligned(s->kcache);
    pu_free_aligned(s->vcache);
    pu_free_aligned(s->ksz);
    pu_free_aligned(s->vsz);
    pu_free_aligned(s->x);
    pu_free_aligned(s->xb);
    pu_free_aligned(s->qkv);
    pu_free_aligned(s->q);
    pu_free_aligned(s->kk);
    pu_free_aligned(s->vv);
    pu_free_aligned(s->att);
    pu_free_aligned(s->h1);
    pu_free_aligned(s->h3);
    pu_free_aligned(s->cos);
    pu_free_aligned(s->sin);
    pu_free_aligned(s->inv_freq);
    pu_free(s->lora);
    pu_free(s->lora_u);
    pu_free(s->lora_z);
}

static float *try_buf(int64_t n, bool *ok) {
    if (!*ok)
        return NULL;
    float *p = pu_try_malloc_aligned((size_t)(n > 0 ? n : 1) * sizeof(float), 64);
    if (!p)
        *ok = false;
    return p;
}

int64_t pu_kv_bytes_per_token(const pu_config *c, pu_kv_type t) {
    return 2 * c->num_hidden_layers * c->num_key_value_heads * pu_kv_row_bytes(t, c->head_dim);
}

static void *try_bytes(size_t n, bool *ok) {
    if (!*ok)
        return NULL;
    void *p = pu_try_malloc_aligned(n > 0 ? n : 1, 64);
    if (!p)
        *ok = false;
    return p;
}

pu_status pu_session_create(const pu_model *m, int64_t n_ctx, pu_pool *pool, pu_session **out) {
    return pu_session_create_ex(m, n_ctx, PU_KV_F32, pool, out);
}

pu_status pu_session_create_ex(const pu_model *m, int64_t n_ctx, pu_kv_type kvt, pu_pool *pool,
                               pu_session **out) {
    *out = NULL;
    if ((int)kvt < 0 || kvt >= PU_KV_COUNT)
        return pu_err_set(PU_ERR_INVALID, "session: unknown KV cache type %d", (int)kvt);
    const pu_config *c = pu_model_config(m);
    if (n_ctx <= 0)
        n_ctx = c->max_position_embeddings < 4096 ? c->max_position_embeddings : 4096;
    if (n_ctx <= 0)
        return pu_err_set(PU_ERR_INVALID, "session: context size must be positive");
    pu_session *s = pu_calloc(1, sizeof *s);
    s->m = m;
    s->c = c;
    s->k = pu_kernels_get();
    s->pool = pool;
    s->n_ctx = n_ctx;
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, F = c->intermediate_size, L = c->num_hidden_layers;
    s->kvdim = Hkv * D;
    int64_t T = PU_CHUNK;
    bool ok = true;
    s->kvt = kvt;
    size_t kvn = (size_t)(L * n_ctx * s->kvdim);
    s->kcache = try_bytes(kvn * pu_kv_elem_size(kvt), &ok);
    s->vcache = try_bytes(kvn * pu_kv_elem_size(kvt), &ok);
    if (kvt == PU_KV_Q8) {
        s->ksz = try_buf(L * n_ctx * Hkv * 2, &ok);
        s->vsz = try_buf(L * n_ctx * Hkv * 2, &ok);
    }
    s->x = try_buf(T * C, &ok);
    s->xb = try_buf(T * C, &ok);
    s->qkv = try_buf(T * (H + 2 * Hkv) * D, &ok);
    s->q = try_buf(T * H * D, &ok);
    s->kk = try_buf(T * Hkv * D, &ok);
    s->vv = try_buf(T * Hkv * D, &ok);
    s->att = try_buf(T * H * D, &ok);
    s->h1 = try_buf(T * F, &ok);
    s->h3 = try_buf(T * F, &ok);
    s->cos = try_buf(T * (D / 2), &ok);
    s->sin = try_buf(T * (D / 2), &ok);
    s->inv_freq = try_buf(D / 2, &ok);
    if (!ok) {
        session_free_buffers(s);
        pu_free(s);
        return pu_err_set(PU_ERR_NOMEM,
                          "session: cannot allocate the KV cache and scratch for %lld tokens "
                          "(%.1f MiB, KV %s); try a smaller --ctx",
                          (long long)n_ctx,
                          (double)pu_kv_bytes_per_token(c, kvt) * (double)n_ctx / 1048576.0,
                          pu_kv_type_name(kvt));
    }
    s->cur_base = c->rope_theta;
    make_inv_freq(s->inv_freq, s->cur_base, D);
    *out = s;
    return PU_OK;
}

void pu_session_destroy(pu_session *s) {
    if (!s)
        return;
    session_free_buffers(s);
    pu_free(s);
}

void pu_session_reset(pu_session *s) {
    s->pos = 0;
    s->cur_base = s->c->rope_theta;
    make_inv_freq(s->inv_freq, s->cur_base, s->c->head_dim);
}

int64_t pu_session_pos(const pu_session *s) {
    return s->pos;
}

pu_status pu_session_truncate(pu_session *s, int64_t pos) {
    if (pos < 0 || pos > s->pos)
        return pu_err_set(PU_ERR_RANGE, "truncate: position %lld outside [0, %lld]", (long long)pos,
                          (long long)s->pos);
    s->pos = pos;
    return PU_OK;
}

int64_t pu_session_n_ctx(const pu_session *s) {
    return s->n_ctx;
}

pu_kv_type pu_session_kv_type(const pu_session *s) {
    return s->kvt;
}

void pu_session_set_kernels(pu_session *s, const pu_kernels *k) {
    s->k = k ? k : pu_kernels_get();
}

/* ---------------------------------------------------------------- helpers */

/* x (T, C) = rows ids[0..T) of the embedding table, widened to fp32 */
static void embed(const pu_model *m, const pu_kernels *k, const int32_t *ids, int64_t T, float *x) {
    const pu_tensor *e = &pu_model_weights(m)->tok_embeddings;
    int64_t C = e->shape[1];
    size_t rb = (size_t)pu_dtype_nbytes(e->dtype, C); /* row bytes (any dtype) */
    for (int64_t t = 0; t < T; t++)
        k->to_f32[e->dtype](x + t * C, (const char *)e->data + (size_t)ids[t] * rb, C);
}

/* Threads only pay off when an op has enough work to amortise waking them
 * (a few microseconds each, much more on a loaded machine): below this many
 * multiply-adds an op runs on the calling thread alone. Results do not depend
 * on the choice (every op is deterministic for any thread count). */
#define PU_PAR_MIN_WORK (INT64_C(1) << 18)

static pu_pool *par(pu_pool *pool, int64_t work) {
    return work >= PU_PAR_MIN_WORK ? pool : NULL;
}

/* Prefill with BF16 weights: at PU_PREFILL_BF16_MIN_T rows or more, the
 * activations are rounded to bf16 and the product runs on the BF16 GEMM of
 * src/train/gemm_bf16.c (fp32 accumulation) where that is faster than
 * widening the weights into the fp32 kernel: the AMX and AVX512_BF16 levels.
 * On other CPUs (AVX2: the bf16 GEMM would only emulate) prefill stays fp32.
 * PUYU_PREFILL_BF16=off disables it, =ref|avx2|avx512bf16|amx forces a level,
 * unset or "auto" is that default. It rounds the activations (logits move by
 * ~5e-3 relative vs fp32), so the test binary runs with it off (tests/pt_main.c)
 * except where a test forces a level. Decoding (T < the threshold) is unchanged. */
#define PU_PREFILL_BF16_MIN_T 16
static atomic_int g_prefill_level = -2; /* -2 unset, -1 off, else a pu_bf16_level */
int pu_prefill_bf16_auto_level_(void);

static int prefill_bf16_level(void) {
    int l = atomic_load_explicit(&g_prefill_level, memory_order_relaxed);
    if (l != -2)
        return l;
    const char *e = getenv("PUYU_PREFILL_BF16");
    l = -1;
    if (e && *e && strcmp(e, "off") != 0 && strcmp(e, "auto") != 0) {
        for (int i = 0; i < PU_BF16_NLEVELS; i++)
            if (!strcmp(e, pu_bf16_level_name((pu_bf16_level)i)))
                l = i;
        if (l >= 0 && !pu_bf16_level_available((pu_bf16_level)l)) {
            pu_log_warn("PUYU_PREFILL_BF16=%s: not available on this CPU; prefill stays fp32", e);
            l = -1;
        } else if (l < 0) {
            pu_log_warn("PUYU_PREFILL_BF16=%s: expected off, ref, avx2, avx512bf16 or amx", e);
        }
    } else if (!e || !*e || !strcmp(e, "auto")) {
        l = pu_prefill_bf16_auto_level_();
    }
    atomic_store_explicit(&g_prefill_level, l, memory_order_relaxed);
    return l;
}

int pu_prefill_bf16_auto_level_(void) {
    pu_bf16_level b = pu_bf16_level_best();
    return b == PU_BF16_AMX || b == PU_BF16_AVX512BF16 ? (int)b : -1;
}

int pu_prefill_bf16_level_(void) {
    return prefill_bf16_level();
}

void pu_prefill_bf16_set_level_(int level) {
    atomic_store_explicit(&g_prefill_level,
                          level >= 0 && level < PU_BF16_NLEVELS &&
                                  pu_bf16_level_available((pu_bf16_level)level)
                              ? level
                              : -1,
                          memory_order_relaxed);
}

static void mm(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const pu_tensor *w,
               int64_t T) {
    if (w->dtype == PU_DTYPE_BF16 && T >= PU_PREFILL_BF16_MIN_T) {
        int lvl = prefill_bf16_level();
        if (lvl >= 0) { /* y (T, N) = bf16(x) (T, K) · W^T, W (N, K) bf16 as stored */
            int64_t N = w->shape[0], K = w->shape[1];
            uint16_t *xb = pu_malloc((size_t)(T * K) * sizeof(uint16_t));
            pu_pool *pp = par(pool, T * N * K);
            pu_bf16_from_f32(pp, xb, x, T * K);
            pu_bf16_gemm(pp, (pu_bf16_level)lvl, y, N, xb, K, 1, w->data, 1, K, T, N, K, false);
            pu_free(xb);
            return;
        }
    }
    pu_op_matmul(par(pool, T * w->shape[0] * w->shape[1]), k, y, x, w->data, w->dtype, T,
                 w->shape[0], w->shape[1]);
}

/* products of one input with 2 or 3 matrices (q/k/v, gate/up): quantized
 * weights share one activation quantization and one pool run */
static void mm_multi(pu_pool *pool, const pu_kernels *k, const float *x, int64_t T, int n,
                     float *const *y, const pu_tensor *const *w) {
    pu_mm_part parts[3];
    int64_t work = 0;
    for (int i = 0; i < n; i++) {
        parts[i] = (pu_mm_part){y[i], w[i]->data, w[i]->dtype, w[i]->shape[0]};
        work += T * w[i]->shape[0] * w[i]->shape[1];
    }
    pu_op_matmul_multi(par(pool, work), k, x, T, w[0]->shape[1], parts, n);
}

/* Split the fused grouped qkv activation (T, Hkv*(G+2)*D) into q (T, H*D),
 * k (T, Hkv*D), v (T, Hkv*D). Group g holds query heads g*G..g*G+G-1, then
 * key head g, then value head g (spec A.4). */
static void split_qkv(const float *qkv, float *q, float *k, float *v, int64_t T, int64_t H,
                      int64_t Hkv, int64_t D) {
    int64_t G = H / Hkv, row = (H + 2 * Hkv) * D;
    for (int64_t t = 0; t < T; t++) {
        const float *src = qkv + t * row;
        for (int64_t g = 0; g < Hkv; g++) {
            const float *grp = src + g * (G + 2) * D;
            memcpy(q + t * H * D + g * G * D, grp, (size_t)(G * D) * sizeof(float));
            memcpy(k + t * Hkv * D + g * D, grp + G * D, (size_t)D * sizeof(float));
            memcpy(v + t * Hkv * D + g * D, grp + (G + 1) * D, (size_t)D * sizeof(float));
        }
    }
}

/* y (T, out) += the session's adapters of (layer, t) applied to x (T, in) */
static void s_lora(pu_session *s, int64_t layer, pu_lora_target t, const float *x, int64_t T,
                   float *y) {
    if (s->n_lora)
        pu_lora_add_(s->pool, s->k, s->lora, s->n_lora, layer, t, x, T, y, s->lora_u, s->lora_cap_u,
                     s->lora_z, s->lora_cap_z);
}

/* One pass over T <= PU_CHUNK tokens at positions s->pos .. s->pos+T-1.
 * Leaves the final hidden states (after the last norm) in s->xb. */
static void forward_chunk(pu_session *s, const int32_t *ids, int64_t T) {
    const pu_config *c = s->c;
    const pu_weights *w = pu_model_weights(s->m);
    const pu_kernels *k = s->k;
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, L = c->num_hidden_layers, p0 = s->pos;
    float eps = (float)c->rms_norm_eps;

    make_rope_tables(c, s->inv_freq, p0, T, s->cos, s->sin);
    embed(s->m, s->k, ids, T, s->x);
    size_t esz = pu_kv_elem_size(s->kvt);
    bool f32kv = s->kvt == PU_KV_F32;
    for (int64_t l = 0; l < L; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        int64_t lrow = l * s->n_ctx; /* first cache row of layer l */
        char *kc = (char *)s->kcache + (size_t)(lrow * s->kvdim) * esz;
        char *vc = (char *)s->vcache + (size_t)(lrow * s->kvdim) * esz;
        /* attention block */
        pu_op_rmsnorm(par(s->pool, T * C * 8), k, s->xb, s->x, lw->attn_norm.data, T, C, eps);
        /* F32 caches receive the new keys/values in place; other types get
         * them in scratch, then stored row by row (after RoPE) */
        if (s->act_hook)
            s->act_hook(s->act_ud, l, PU_ACT_QKV, s->xb, T, C);
        float *kdst = f32kv ? (float *)kc + p0 * s->kvdim : s->kk;
        float *vdst = f32kv ? (float *)vc + p0 * s->kvdim : s->vv;
        if (lw->wqkv.data) {
            mm(s->pool, s->k, s->qkv, s->xb, &lw->wqkv, T);
            s_lora(s, l, PU_LORA_WQKV, s->xb, T, s->qkv);
            split_qkv(s->qkv, s->q, kdst, vdst, T, H, Hkv, D);
        } else {
            mm_multi(s->pool, s->k, s->xb, T, 3, (float *const[]){s->q, kdst, vdst},
                     (const pu_tensor *const[]){&lw->wq, &lw->wk, &lw->wv});
            if (s->n_lora)
                pu_lora_add_qkv_split_(s->pool, s->k, s->lora, s->n_lora, l, c, s->xb, T, s->q,
                                       kdst, vdst, s->lora_u, s->lora_cap_u, s->lora_z,
                                       s->lora_cap_z);
        }
        pu_op_rope(s->q, T, H, D, s->cos, s->sin, c->rope_interleaved);
        pu_op_rope(kdst, T, Hkv, D, s->cos, s->sin, c->rope_interleaved);
        float *ksz = s->ksz ? s->ksz + lrow * Hkv * 2 : NULL;
        float *vsz = s->vsz ? s->vsz + lrow * Hkv * 2 : NULL;
        if (!f32kv)
            for (int64_t t = 0; t < T; t++)
                for (int64_t g = 0; g < Hkv; g++) {
                    int64_t r = (p0 + t) * Hkv + g; /* (row, head) index */
                    pu_kv_store_row(s->kvt, kc + (size_t)(r * D) * esz, ksz ? ksz + r * 2 : NULL,
                                    kdst + t * s->kvdim + g * D, D);
                    pu_kv_store_row(s->kvt, vc + (size_t)(r * D) * esz, vsz ? vsz + r * 2 : NULL,
                                    vdst + t * s->kvdim + g * D, D);
                }
        pu_kv_view kv = {s->kvt, kc, vc, ksz, vsz, s->kvdim, Hkv};
        pu_op_attention_kv(par(s->pool, T * (p0 + T) * H * D), k, s->att, s->q, &kv, T, p0, H, D);
        if (s->act_hook)
            s->act_hook(s->act_ud, l, PU_ACT_WO, s->att, T, H * D);
        mm(s->pool, s->k, s->xb, s->att, &lw->wo, T);
        s_lora(s, l, PU_LORA_WO, s->att, T, s->xb);
        k->add(s->x, s->x, s->xb, T * C);
        /* feed-forward block */
        pu_op_rmsnorm(par(s->pool, T * C * 8), k, s->xb, s->x, lw->ffn_norm.data, T, C, eps);
        if (s->act_hook)
            s->act_hook(s->act_ud, l, PU_ACT_FFN, s->xb, T, C);
        mm_multi(s->pool, s->k, s->xb, T, 2, (float *const[]){s->h1, s->h3},
                 (const pu_tensor *const[]){&lw->w1, &lw->w3});
        s_lora(s, l, PU_LORA_W1, s->xb, T, s->h1);
        s_lora(s, l, PU_LORA_W3, s->xb, T, s->h3);
        pu_op_swiglu(par(s->pool, T * c->intermediate_size * 8), k, s->h1, s->h1, s->h3,
                     T * c->intermediate_size);
        if (s->act_hook)
            s->act_hook(s->act_ud, l, PU_ACT_W2, s->h1, T, c->intermediate_size);
        mm(s->pool, s->k, s->xb, s->h1, &lw->w2, T);
        s_lora(s, l, PU_LORA_W2, s->h1, T, s->xb);
        k->add(s->x, s->x, s->xb, T * C);
    }
    pu_op_rmsnorm(par(s->pool, T * C * 8), k, s->xb, s->x, w->norm.data, T, C, eps);
}

pu_status pu_session_eval(pu_session *s, const int32_t *ids, int64_t n, float *logits,
                          bool all_logits) {
    return pu_session_eval_ex(s, ids, n, logits, all_logits, NULL);
}

pu_status pu_session_eval_ex(pu_session *s, const int32_t *ids, int64_t n, float *logits,
                             bool all_logits, float *hidden) {
    const pu_config *c = s->c;
    if (n <= 0)
        return pu_err_set(PU_ERR_INVALID, "eval: no tokens given");
    if (s->pos + n > s->n_ctx)
        return pu_err_set(PU_ERR_RANGE,
                          "eval: %lld tokens at position %lld exceed the context of %lld tokens",
                          (long long)n, (long long)s->pos, (long long)s->n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return pu_err_set(PU_ERR_RANGE,
                              "eval: token id %d at index %lld is outside the vocabulary [0, %lld)",
                              ids[i], (long long)i, (long long)c->vocab_size);

    /* dynamic NTK: the base follows the total length after this call (the
     * same for every chunk of the call, as in one HF forward) */
    double base = rope_base_for(c, s->pos + n);
    if (base != s->cur_base) {
        make_inv_freq(s->inv_freq, base, c->head_dim);
        s->cur_base = base;
    }

    const pu_weights *w = pu_model_weights(s->m);
    int64_t V = c->vocab_size, C = c->hidden_size;
    for (int64_t done = 0; done < n;) {
        int64_t T = n - done < PU_CHUNK ? n - done : PU_CHUNK;
        forward_chunk(s, ids + done, T);
        s->pos += T;
        if (hidden)
            memcpy(hidden + done * C, s->xb, (size_t)(T * C) * sizeof *hidden);
        if (logits && all_logits) {
            mm(s->pool, s->k, logits + done * V, s->xb, &w->output, T);
            s_lora(s, 0, PU_LORA_OUTPUT, s->xb, T, logits + done * V);
        } else if (logits && done + T == n) {
            mm(s->pool, s->k, logits, s->xb + (T - 1) * C, &w->output, 1);
            s_lora(s, 0, PU_LORA_OUTPUT, s->xb + (T - 1) * C, 1, logits);
        }
        done += T;
    }
    return PU_OK;
}

pu_status pu_session_set_adapters(pu_session *s, const pu_lora *const *l, const float *scales,
                                  int n) {
    if (n < 0 || (n > 0 && !l))
        return pu_err_set(PU_ERR_INVALID, "session: bad adapter list");
    for (int i = 0; i < n; i++)
        PU_TRY(pu_lora_check_base_(l[i], s->c, "session"));
    pu_free(s->lora);
    pu_free(s->lora_u);
    pu_free(s->lora_z);
    s->lora = NULL;
    s->lora_u = s->lora_z = NULL;
    s->n_lora = 0;
    if (n == 0)
        return PU_OK;
    s->lora = pu_calloc((size_t)n, sizeof *s->lora);
    for (int i = 0; i < n; i++)
        s->lora[i] = (pu_lora_use){l[i], scales ? scales[i] : 1.0f};
    pu_lora_scratch_need_(s->c, s->lora, n, PU_CHUNK, &s->lora_cap_u, &s->lora_cap_z);
    s->lora_u = pu_try_malloc((size_t)s->lora_cap_u * sizeof(float));
    s->lora_z = pu_try_malloc((size_t)s->lora_cap_z * sizeof(float));
    if (!s->lora_u || !s->lora_z) {
        pu_free(s->lora);
        s->lora = NULL;
        return pu_err_set(PU_ERR_NOMEM, "session: cannot allocate LoRA scratch");
    }
    s->n_lora = n;
    return PU_OK;
}

/* ======================================================================== */
/* batched forward over a paged KV cache                                    */
/*                                                                          */
/* The same layer sequence as forward_chunk, but the T rows of a pass come  */
/* from many sequences: matmuls, norms and the FFN run over all rows at     */
/* once (weights are read once per step for the whole batch — the point of  */
/* continuous batching), while RoPE uses each row's own position and base   */
/* and attention walks each row's own block table.                          */

pu_status pu_kv_pages_init(pu_kv_pages *kv, const pu_config *c, int64_t n_blocks,
                           int64_t block_size) {
    return pu_kv_pages_init_ex(kv, c, n_blocks, block_size, PU_KV_F32);
}

pu_status pu_kv_pages_init_ex(pu_kv_pages *kv, const pu_config *c, int64_t n_blocks,
                              int64_t block_size, pu_kv_type type) {
    memset(kv, 0, sizeof *kv);
    if ((int)type < 0 || type >= PU_KV_COUNT)
        return pu_err_set(PU_ERR_INVALID, "kv cache: unknown KV cache type %d", (int)type);
    if (n_blocks <= 0 || block_size <= 0 || block_size > 1024)
        return pu_err_set(PU_ERR_INVALID, "kv cache: need n_blocks > 0 and 0 < block_size <= 1024");
    kv->block_size = block_size;
    kv->n_blocks = n_blocks;
    kv->n_layers = c->num_hidden_layers;
    kv->kvdim = c->num_key_value_heads * c->head_dim;
    kv->n_kv_heads = c->num_key_value_heads;
    kv->type = type;
    size_t rows = (size_t)n_blocks * (size_t)kv->n_layers * (size_t)block_size;
    size_t n = rows * (size_t)kv->kvdim;
    bool ok = true;
    kv->k = try_bytes(n * pu_kv_elem_size(type), &ok);
    kv->v = try_bytes(n * pu_kv_elem_size(type), &ok);
    if (type == PU_KV_Q8) {
        kv->ksz = try_buf((int64_t)rows * kv->n_kv_heads * 2, &ok);
        kv->vsz = try_buf((int64_t)rows * kv->n_kv_heads * 2, &ok);
    }
    if (!ok) {
        pu_kv_pages_deinit(kv);
        return pu_err_set(PU_ERR_NOMEM, "kv cache: cannot allocate %.1f MiB for %lld blocks (%s)",
                          (double)pu_kv_bytes_per_token(c, type) * (double)n_blocks *
                              (double)block_size / 1048576.0,
                          (long long)n_blocks, pu_kv_type_name(type));
    }
    return PU_OK;
}

void pu_kv_pages_deinit(pu_kv_pages *kv) {
    pu_free_aligned(kv->k);
    pu_free_aligned(kv->v);
    pu_free_aligned(kv->ksz);
    pu_free_aligned(kv->vsz);
    kv->k = kv->v = NULL;
    kv->ksz = kv->vsz = NULL;
}

struct pu_batch_ws {
    int64_t cap;                                       /* max rows */
    float *x, *xb, *qkv, *q, *kk, *vv, *att, *h1, *h3; /* as in pu_session */
    float *cos, *sin;                                  /* (cap, D/2) per row */
    int32_t *row_seq;                                  /* (cap) seq index of each row */
    int64_t *row_pos;                                  /* (cap) position of each row */
    int32_t *ids;                                      /* (cap) */
    float *lrows;                                      /* (cap, C) rows needing logits */
    float *inv_freq;                                   /* (D/2) */
    float *lora_u, *lora_z;                            /* LoRA scratch, grown on first use */
    int64_t lora_cap_u, lora_cap_z;
    const pu_config *c;
};

pu_status pu_batch_ws_create(const pu_model *m, int64_t max_tokens, pu_batch_ws **out) {
    const pu_config *c = pu_model_config(m);
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, F = c->intermediate_size, T = max_tokens;
    pu_batch_ws *w = pu_calloc(1, sizeof *w);
    w->cap = T;
    w->c = c;
    bool ok = true;
    w->x = try_buf(T * C, &ok);
    w->xb = try_buf(T * C, &ok);
    w->qkv = try_buf(T * (H + 2 * Hkv) * D, &ok);
    w->q = try_buf(T * H * D, &ok);
    w->kk = try_buf(T * Hkv * D, &ok);
    w->vv = try_buf(T * Hkv * D, &ok);
    w->att = try_buf(T * H * D, &ok);
    w->h1 = try_buf(T * F, &ok);
    w->h3 = try_buf(T * F, &ok);
    w->cos = try_buf(T * (D / 2), &ok);
    w->sin = try_buf(T * (D / 2), &ok);
    w->lrows = try_buf(T * C, &ok);
    w->inv_freq = try_buf(D / 2, &ok);
    w->row_seq = pu_try_malloc((size_t)T * sizeof(int32_t));
    w->row_pos = pu_try_malloc((size_t)T * sizeof(int64_t));
    w->ids = pu_try_malloc((size_t)T * sizeof(int32_t));
    if (!ok || !w->row_seq || !w->row_pos || !w->ids) {
        pu_batch_ws_destroy(w);
        return pu_err_set(PU_ERR_NOMEM, "batch workspace: cannot allocate for %lld tokens",
                          (long long)T);
    }
    *out = w;
    return PU_OK;
}

void pu_batch_ws_destroy(pu_batch_ws *w) {
    if (!w)
        return;
    float *bufs[] = {w->x,  w->xb, w->qkv, w->q,   w->kk,    w->vv,      w->att,
                     w->h1, w->h3, w->cos, w->sin, w->lrows, w->inv_freq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        pu_free_aligned(bufs[i]);
    pu_free(w->row_seq);
    pu_free(w->row_pos);
    pu_free(w->ids);
    pu_free(w->lora_u);
    pu_free(w->lora_z);
    pu_free(w);
}

typedef struct {
    const pu_kernels *k;
    const pu_kv_pages *kv;
    const pu_batch_seq *seqs;
    const int32_t *row_seq;
    const int64_t *row_pos;
    const float *q; /* (T, H, D) */
    float *out;     /* (T, H, D) */
    int64_t T, H, Hkv, D, layer;
} paged_attn_ctx;

/* Causal attention of row r, head h over positions 0..row_pos[r] of its
 * sequence, block by block with an online softmax (no O(L) scratch). The
 * cache is read in its own element type (pu_kv_scores / pu_kv_accum). */
static void paged_attn_worker(void *vctx, int ith, int nth) {
    paged_attn_ctx *a = vctx;
    const pu_kernels *k = a->k;
    const pu_kv_pages *kv = a->kv;
    int64_t G = a->H / a->Hkv, D = a->D, BS = kv->block_size;
    float scale = 1.0f / sqrtf((float)D);
    float sc[1024];
    pu_kv_view view = {kv->type, kv->k, kv->v, kv->ksz, kv->vsz, kv->kvdim, a->Hkv};
    int64_t lo, hi;
    pu_split(a->T * a->H, ith, nth, &lo, &hi);
    for (int64_t rh = lo; rh < hi; rh++) {
        int64_t r = rh / a->H, h = rh % a->H, g = h / G;
        const pu_batch_seq *sq = &a->seqs[a->row_seq[r]];
        const float *qv = a->q + (r * a->H + h) * D;
        float *o = a->out + (r * a->H + h) * D;
        memset(o, 0, (size_t)D * sizeof(float));
        float qsum = 0.0f;
        if (kv->type == PU_KV_Q8)
            for (int64_t d = 0; d < D; d++)
                qsum += qv[d];
        float m = -INFINITY, l = 0.0f;
        int64_t npos = a->row_pos[r] + 1;
        for (int64_t j0 = 0; j0 < npos; j0 += BS) {
            int64_t nb = npos - j0 < BS ? npos - j0 : BS;
            int64_t blk = sq->blocks[j0 / BS];
            int64_t r0 = (blk * kv->n_layers + a->layer) * BS; /* first row of the block */
            pu_kv_scores(k, &view, r0, nb, g, D, qv, qsum, scale, sc);
            float bm = -INFINITY;
            for (int64_t j = 0; j < nb; j++)
                if (sc[j] > bm)
                    bm = sc[j];
            float mn = bm > m ? bm : m;
            if (mn > m && l > 0.0f) {
                float corr = expf(m - mn);
                k->scale(o, corr, D);
                l *= corr;
            }
            m = mn;
            for (int64_t j = 0; j < nb; j++) {
                sc[j] = expf(sc[j] - m);
                l += sc[j];
            }
            pu_kv_accum(k, &view, r0, nb, g, D, sc, o);
        }
        k->scale(o, 1.0f / l, D);
    }
}

/* LoRA scratch for the sequences' adapters (rows of the largest sequence) */
static pu_status b_lora_prepare(pu_batch_ws *ws, const pu_batch_seq *seqs, int64_t n_seqs,
                                bool *any) {
    *any = false;
    for (int64_t i = 0; i < n_seqs; i++) {
        for (int j = 0; j < seqs[i].n_lora; j++) {
            *any = true;
            pu_lora_use u = {seqs[i].lora[j], 1.0f};
            int64_t nu, nz;
            pu_lora_scratch_need_(ws->c, &u, 1, seqs[i].n > 0 ? seqs[i].n : 1, &nu, &nz);
            if (nu > ws->lora_cap_u) {
                float *p = pu_try_realloc(ws->lora_u, (size_t)nu * sizeof(float));
                if (!p)
                    return pu_err_set(PU_ERR_NOMEM, "batch: cannot allocate LoRA scratch");
                ws->lora_u = p;
                ws->lora_cap_u = nu;
            }
            if (nz > ws->lora_cap_z) {
                float *p = pu_try_realloc(ws->lora_z, (size_t)nz * sizeof(float));
                if (!p)
                    return pu_err_set(PU_ERR_NOMEM, "batch: cannot allocate LoRA scratch");
                ws->lora_z = p;
                ws->lora_cap_z = nz;
            }
        }
    }
    return PU_OK;
}

/* each sequence's adapters on its own rows: y (T, N) += ... of x (T, K).
 * t == PU_LORA_OUTPUT: x/y hold one row per sequence with want_logits. */
static void b_lora(pu_pool *pool, const pu_kernels *k, pu_batch_ws *ws, const pu_batch_seq *seqs,
                   int64_t n_seqs, int64_t layer, pu_lora_target t, const float *x, int64_t K,
                   float *y, int64_t N) {
    int64_t row = 0;
    for (int64_t i = 0; i < n_seqs; i++) {
        int64_t nr = seqs[i].n;
        if (t == PU_LORA_OUTPUT)
            nr = seqs[i].want_logits && seqs[i].n > 0 ? 1 : 0;
        for (int j = 0; j < seqs[i].n_lora && nr > 0; j++) {
            pu_lora_use u = {seqs[i].lora[j], seqs[i].lora_scales ? seqs[i].lora_scales[j] : 1.0f};
            pu_lora_add_(pool, k, &u, 1, layer, t, x + row * K, nr, y + row * N, ws->lora_u,
                         ws->lora_cap_u, ws->lora_z, ws->lora_cap_z);
        }
        row += nr;
    }
}

/* the same for bases with separate q/k/v (packed-wqkv adapters split) */
static void b_lora_split(pu_pool *pool, const pu_kernels *k, pu_batch_ws *ws,
                         const pu_batch_seq *seqs, int64_t n_seqs, int64_t layer) {
    const pu_config *c = ws->c;
    int64_t row = 0, C = c->hidden_size, qd = c->num_attention_heads * c->head_dim;
    int64_t kvd = c->num_key_value_heads * c->head_dim;
    for (int64_t i = 0; i < n_seqs; i++) {
        for (int j = 0; j < seqs[i].n_lora; j++) {
            pu_lora_use u = {seqs[i].lora[j], seqs[i].lora_scales ? seqs[i].lora_scales[j] : 1.0f};
            pu_lora_add_qkv_split_(pool, k, &u, 1, layer, c, ws->xb + row * C, seqs[i].n,
                                   ws->q + row * qd, ws->kk + row * kvd, ws->vv + row * kvd,
                                   ws->lora_u, ws->lora_cap_u, ws->lora_z, ws->lora_cap_z);
        }
        row += seqs[i].n;
    }
}

pu_status pu_model_forward_batch(const pu_model *m, pu_pool *pool, const pu_kernels *k,
                                 pu_kv_pages *kv, pu_batch_ws *ws, const pu_batch_seq *seqs,
                                 int64_t n_seqs, float *logits) {
    const pu_config *c = pu_model_config(m);
    const pu_weights *w = pu_model_weights(m);
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, L = c->num_hidden_layers, half = D / 2;
    int64_t BS = kv->block_size, kvdim = kv->kvdim;
    float eps = (float)c->rms_norm_eps;
    if (kv->block_size > 1024)
        return pu_err_set(PU_ERR_INVALID, "batch: block size too large");
    /* rows */
    int64_t T = 0;
    for (int64_t s = 0; s < n_seqs; s++) {
        if (T + seqs[s].n > ws->cap)
            return pu_err_set(PU_ERR_RANGE, "batch: %lld tokens exceed the workspace (%lld)",
                              (long long)(T + seqs[s].n), (long long)ws->cap);
        double base = rope_base_for(c, seqs[s].pos0 + seqs[s].n);
        make_inv_freq(ws->inv_freq, base, D);
        make_rope_tables(c, ws->inv_freq, seqs[s].pos0, seqs[s].n, ws->cos + T * half,
                         ws->sin + T * half);
        for (int64_t i = 0; i < seqs[s].n; i++) {
            ws->row_seq[T] = (int32_t)s;
            ws->row_pos[T] = seqs[s].pos0 + i;
            ws->ids[T] = seqs[s].ids[i];
            T++;
        }
    }
    if (T == 0)
        return PU_OK;
    bool lo = false; /* any sequence with adapters */
    PU_TRY(b_lora_prepare(ws, seqs, n_seqs, &lo));
    int64_t F = c->intermediate_size, QKV = (H + 2 * Hkv) * D;
    embed(m, k, ws->ids, T, ws->x);

    for (int64_t l = 0; l < L; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        pu_op_rmsnorm(par(pool, T * C * 8), k, ws->xb, ws->x, lw->attn_norm.data, T, C, eps);
        if (lw->wqkv.data) {
            mm(pool, k, ws->qkv, ws->xb, &lw->wqkv, T);
            if (lo)
                b_lora(pool, k, ws, seqs, n_seqs, l, PU_LORA_WQKV, ws->xb, C, ws->qkv, QKV);
            split_qkv(ws->qkv, ws->q, ws->kk, ws->vv, T, H, Hkv, D);
        } else {
            mm_multi(pool, k, ws->xb, T, 3, (float *const[]){ws->q, ws->kk, ws->vv},
                     (const pu_tensor *const[]){&lw->wq, &lw->wk, &lw->wv});
            if (lo)
                b_lora_split(pool, k, ws, seqs, n_seqs, l);
        }
        /* RoPE with per-row tables (one row at a time: T rows of tables) */
        for (int64_t t = 0; t < T; t++) {
            pu_op_rope(ws->q + t * H * D, 1, H, D, ws->cos + t * half, ws->sin + t * half,
                       c->rope_interleaved);
            pu_op_rope(ws->kk + t * kvdim, 1, Hkv, D, ws->cos + t * half, ws->sin + t * half,
                       c->rope_interleaved);
        }
        /* scatter new K/V into their blocks */
        for (int64_t t = 0; t < T; t++) {
            const pu_batch_seq *sq = &seqs[ws->row_seq[t]];
            int64_t p = ws->row_pos[t];
            int64_t blk = sq->blocks[p / BS];
            int64_t row = (blk * L + l) * BS + p % BS;
            size_t esz = pu_kv_elem_size(kv->type);
            for (int64_t g = 0; g < Hkv; g++) {
                int64_t rg = row * Hkv + g; /* (row, head) index */
                pu_kv_store_row(kv->type, (char *)kv->k + (size_t)(rg * D) * esz,
                                kv->ksz ? kv->ksz + rg * 2 : NULL, ws->kk + t * kvdim + g * D, D);
                pu_kv_store_row(kv->type, (char *)kv->v + (size_t)(rg * D) * esz,
                                kv->vsz ? kv->vsz + rg * 2 : NULL, ws->vv + t * kvdim + g * D, D);
            }
        }
        paged_attn_ctx ac = {k,       kv, seqs, ws->row_seq, ws->row_pos, ws->q,
                             ws->att, T,  H,    Hkv,         D,           l};
        int64_t attn_work = 0;
        for (int64_t t = 0; t < T; t++)
            attn_work += (ws->row_pos[t] + 1) * H * D;
        pu_pool_run(par(pool, attn_work), paged_attn_worker, &ac);
        mm(pool, k, ws->xb, ws->att, &lw->wo, T);
        if (lo)
            b_lora(pool, k, ws, seqs, n_seqs, l, PU_LORA_WO, ws->att, H * D, ws->xb, C);
        k->add(ws->x, ws->x, ws->xb, T * C);
        pu_op_rmsnorm(par(pool, T * C * 8), k, ws->xb, ws->x, lw->ffn_norm.data, T, C, eps);
        mm_multi(pool, k, ws->xb, T, 2, (float *const[]){ws->h1, ws->h3},
                 (const pu_tensor *const[]){&lw->w1, &lw->w3});
        if (lo) {
            b_lora(pool, k, ws, seqs, n_seqs, l, PU_LORA_W1, ws->xb, C, ws->h1, F);
            b_lora(pool, k, ws, seqs, n_seqs, l, PU_LORA_W3, ws->xb, C, ws->h3, F);
        }
        pu_op_swiglu(par(pool, T * c->intermediate_size * 8), k, ws->h1, ws->h1, ws->h3,
                     T * c->intermediate_size);
        mm(pool, k, ws->xb, ws->h1, &lw->w2, T);
        if (lo)
            b_lora(pool, k, ws, seqs, n_seqs, l, PU_LORA_W2, ws->h1, F, ws->xb, C);
        k->add(ws->x, ws->x, ws->xb, T * C);
    }
    /* final norm + LM head for the rows that need logits */
    int64_t nl = 0, row = 0;
    for (int64_t s = 0; s < n_seqs; s++) {
        row += seqs[s].n;
        if (seqs[s].want_logits && seqs[s].n > 0)
            memcpy(ws->lrows + nl++ * C, ws->x + (row - 1) * C, (size_t)C * sizeof(float));
    }
    if (nl > 0 && logits) {
        pu_op_rmsnorm(par(pool, nl * C * 8), k, ws->lrows, ws->lrows, w->norm.data, nl, C, eps);
        mm(pool, k, logits, ws->lrows, &w->output, nl);
        if (lo)
            b_lora(pool, k, ws, seqs, n_seqs, 0, PU_LORA_OUTPUT, ws->lrows, C, logits,
                   c->vocab_size);
    }
    return PU_OK;
}
