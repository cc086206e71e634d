/*
 * model.c — the trainable InternLM2 (pu_tmodel): the parameter table over one
 * fp32 slab, saved activations, the training forward pass and its backward.
 *
 * Forward for one micro-batch of N = B*T tokens (per layer l, saved in acts):
 *   xin   (N, C)          residual input of the layer
 *   xn1   (N, C), r1 (N)  attention_norm output and its rstd
 *   q (N, H*D), k, v (N, Hkv*D)   split of xn1 · wqkv^T (grouped layout,
 *                                  spec A.4), q and k after RoPE
 *   probs (B, H, T, T)    attention probabilities
 *   att   (N, H*D)        attention output (input of wo)
 *   mid   (N, C)          xin + att · wo^T
 *   xn2   (N, C), r2 (N)  ffn_norm output and its rstd
 *   h1, h3, hs (N, F)     w1 / w3 projections and silu(h1)*h3
 * then xL (N, C), xnf (N, C), rf (N), logits (N, V), lse (N), losses (N).
 * Backward walks the same list in reverse, accumulating into the gradient
 * slab. Activation memory in floats: L * (N*(4C + 2 + 2*H*D + 2*Hkv*D + 3F)
 * + B*H*T^2) + N*(2C + V + 3) + N*QKV, plus N*(2C + QKV + 2*H*D + 2*Hkv*D +
 * 3F) of backward buffers.
 *
 * Options (pu_tmodel_opts): attn naive|flash (probs, or flash's lse (B, H, T)
 * saved); precision bf16 (every lin_fwd/lin_bwd product on bf16 operands via
 * src/train/gemm_bf16.c with fp32 accumulation: x rounded into the xb
 * scratch in forward and again, to the same bits, in backward; weights from
 * wbf[i]); recompute block (one layer's activations shared, rebuilt from
 * each layer's saved input) or attn (naive: one shared probs buffer, rebuilt
 * before each layer's backward). Every variant's gradients are thread-count
 * independent, and recomputation gives bitwise the non-recomputed ones.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/attn_flash.h" /* attention switch (--attn, PUYU_ATTN=naive|flash) */
#include "train/gemm_bf16.h"  /* --precision bf16 */
#include "train/train_impl.h"

typedef struct {
    float *xin, *xn1, *r1, *q, *k, *v, *probs, *att, *mid, *xn2, *r2, *h1, *h3, *hs;
    float *us[5]; /* LoRA: scale * (dropout(x) A^T) (N, r) per target, NULL if none */
} layer_acts;

typedef struct {
    int attn_norm, wqkv, wo, ffn_norm, w1, w3, w2;
    int la[5], lb[5]; /* LoRA A / B table entries per pu_lora_target (< output), -1 */
} layer_idx;

struct pu_tmodel {
    pu_config cfg;
    const pu_kernels *k;
    pu_param *tab;
    int ntab;
    int64_t numel;
    float *params, *grads;
    pu_tmat *mat; /* (ntab) operand view of every entry (slab, borrowed or NF4) */
    pu_nf4 *nf4;  /* (ntab) NF4 forms (QLoRA), n == 0 if none */
    void **own;   /* owned frozen buffers (repacked wqkv, converted norms) */
    int n_own;
    int64_t frozen_bytes; /* bytes of frozen weights this model owns (NF4, repacks) */
    layer_idx *li;
    int emb, norm, out, out_la, out_lb;
    /* LoRA */
    int64_t lora_r;
    float lora_scale;
    double lora_dropout, lora_alpha;
    bool lora_rslora;
    char base_name[256];
    uint32_t lora_targets;
    uint64_t drop_key, drop_key_cur;
    bool dropout_on;
    int64_t drop_e0; /* element offset of the dropout mask (the LM head's token chunks) */
    float *out_us;
    float *lg, *dropbuf; /* (N, r) and (N, max in) scratch */
    /* activations */
    int64_t B, Tmax;
    bool recompute, fwd_only;
    bool no_head; /* hidden states only: no LM head / loss in forward (a critic) */
    float *act;
    int64_t act_floats;
    layer_acts *la;
    float *xL, *xnf, *rf, *logits, *lse, *losses, *logp;
    float *qkv, *cos, *sin, *xo_tmp;
    int64_t rope_P;
    /* chunked LM head + cross-entropy: 0 = logits (N, V) materialized;
     * > 0 = tokens per chunk: logits is one (ce_rows, V) chunk, rebuilt in
     * backward chunk by chunk with the CE gradient fused in */
    int64_t ce_rows;
    /* backward buffers */
    float *dx, *dxn, *dqkv, *dq, *dk, *dv, *datt, *dh1, *dh3, *dhs;
    float *bwd;
    int64_t bwd_floats;
    pu_tws ws;
    pu_attn_kind attn;   /* naive (probs saved) or flash (lse saved) */
    bool recompute_attn; /* naive: one shared probs buffer, rebuilt before each layer's bwd */
    /* mixed precision (bf16): wb = bf16 copy of the slab (same offsets),
     * refreshed at the next forward after any write access to the master
     * weights; wbf[i] = the bf16 operand of matrix entry i (slab copy, the
     * stored bf16 of a borrowed base, or an owned conversion), NULL: the fp32
     * path (NF4); xb scratch for the rounded matmul inputs */
    pu_precision prec;
    pu_bf16_level bf16_level;
    uint16_t *wb, *xb;
    const uint16_t **wbf;
    bool wb_dirty;
    /* gradient-ready hook (data parallel) */
    pu_grad_hook_fn hook;
    void *hook_ctx;
    /* last forward */
    int64_t curB, curT;
    int32_t *ids, *targets, *pos, *seg;
    bool have_pos, have_seg, fwd_done;
};

static pu_status create(const pu_config *c, int64_t B, int64_t Tmax, const pu_model *base,
                        const pu_tmodel_opts *o, pu_tmodel **out);

static int add_param(pu_tmodel *m, int *cap, const char *name, int64_t r, int64_t c,
                     uint32_t flags) {
    if (m->ntab == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        m->tab = pu_realloc(m->tab, (size_t)*cap * sizeof *m->tab);
    }
    pu_param *p = &m->tab[m->ntab];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = c ? 2 : 1;
    p->shape[0] = r;
    p->shape[1] = c;
    p->numel = r * (c ? c : 1);
    p->offset = m->numel;
    p->flags = flags;
    p->dtype = PU_DTYPE_F32;
    if (!(flags & PU_PARAM_BORROWED)) /* borrowed entries take no room in the slab */
        m->numel += (p->numel + 15) / 16 * 16;
    return m->ntab++;
}

static const char *const lora_mod[5] = {"attention.wqkv", "attention.wo", "feed_forward.w1",
                                        "feed_forward.w2", "feed_forward.w3"};

void pu_tmodel_opts_default(pu_tmodel_opts *o) {
    memset(o, 0, sizeof *o);
    o->lora_alpha = 16;
    o->lora_targets = PU_LORA_DEFAULT_TARGETS;
}

pu_status pu_tmodel_opts_set_recompute(pu_tmodel_opts *o, const char *s) {
    if (!s || !strcmp(s, "none")) {
        o->recompute = o->recompute_attn = false;
    } else if (!strcmp(s, "attn")) {
        o->recompute = false;
        o->recompute_attn = true;
    } else if (!strcmp(s, "block")) {
        o->recompute = true;
        o->recompute_attn = false;
    } else {
        return pu_err_set(PU_ERR_INVALID, "train: --recompute '%s': expected none, attn or block",
                          s);
    }
    return PU_OK;
}

pu_status pu_tmodel_create_opts(const pu_config *c, int64_t B, int64_t Tmax,
                                const pu_tmodel_opts *o, pu_tmodel **out) {
    *out = NULL;
    if (o && (o->freeze_base || o->qlora || o->lora_r > 0))
        return pu_err_set(PU_ERR_INVALID, "train: freeze_base, qlora and LoRA need a base model "
                                          "(pu_tmodel_create_from)");
    return create(c, B, Tmax, NULL, o, out);
}

static void *own(pu_tmodel *m, size_t bytes) {
    void *p = pu_malloc_aligned(bytes ? bytes : 1, 64);
    m->own = pu_realloc(m->own, (size_t)(m->n_own + 1) * sizeof *m->own);
    m->own[m->n_own++] = p;
    return p;
}

/* LoRA entries of one linear, named as PEFT names them */
static void add_lora(pu_tmodel *m, int *cap, const char *mod, int64_t in, int64_t out, int *ia,
                     int *ib) {
    char name[80];
    snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", mod);
    *ia = add_param(m, cap, name, m->lora_r, in, 0);
    snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", mod);
    *ib = add_param(m, cap, name, out, m->lora_r, 0);
}

static pu_status create(const pu_config *c, int64_t B, int64_t Tmax, const pu_model *base,
                        const pu_tmodel_opts *o, pu_tmodel **out);
static pu_status attach_base(pu_tmodel *m, const pu_model *base, bool qlora);
static void attach_bf16(pu_tmodel *m);

pu_status pu_tmodel_create(const pu_config *c, int64_t B, int64_t Tmax, pu_tmodel **out) {
    return create(c, B, Tmax, NULL, NULL, out);
}

pu_status pu_tmodel_create_from(const pu_model *base, int64_t B, int64_t Tmax,
                                const pu_tmodel_opts *o, pu_tmodel **out) {
    pu_tmodel_opts d;
    if (!o) {
        pu_tmodel_opts_default(&d);
        o = &d;
    }
    *out = NULL;
    if (o->qlora && !o->freeze_base)
        return pu_err_set(PU_ERR_INVALID, "train: qlora needs a frozen base (freeze_base)");
    if (o->lora_r < 0 || (o->lora_r > 0 && !(o->lora_targets & ((1u << PU_LORA_N_TARGETS) - 1))))
        return pu_err_set(PU_ERR_INVALID, "train: lora: r %lld must be > 0 with targets",
                          (long long)o->lora_r);
    if (o->lora_dropout < 0 || o->lora_dropout >= 1)
        return pu_err_set(PU_ERR_INVALID, "train: lora: dropout %g outside [0, 1)",
                          o->lora_dropout);
    pu_tmodel *m = NULL;
    PU_TRY(create(pu_model_config(base), B, Tmax, base, o, &m));
    pu_status s = o->freeze_base ? attach_base(m, base, o->qlora) : pu_tmodel_load_weights(m, base);
    if (s == PU_OK && m->prec == PU_PREC_BF16 && o->freeze_base)
        attach_bf16(m);
    if (s != PU_OK) {
        pu_tmodel_destroy(m);
        return s;
    }
    if (m->lora_r > 0)
        pu_tmodel_lora_init(m, o->seed);
    *out = m;
    return PU_OK;
}

static pu_status create(const pu_config *c, int64_t B, int64_t Tmax, const pu_model *base,
                        const pu_tmodel_opts *o, pu_tmodel **out) {
    *out = NULL;
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, F = c->intermediate_size, V = c->vocab_size, L = c->num_hidden_layers;
    if (C <= 0 || H <= 0 || Hkv <= 0 || F <= 0 || V <= 0 || L <= 0 || H % Hkv || D * H != C ||
        D % 2)
        return pu_err_set(PU_ERR_INVALID,
                          "train: config: inconsistent sizes (hidden %lld, heads %lld, kv heads "
                          "%lld, ffn %lld, vocab %lld, layers %lld)",
                          (long long)C, (long long)H, (long long)Hkv, (long long)F, (long long)V,
                          (long long)L);
    bool frozen = o && o->freeze_base;
    if (c->tie_word_embeddings && !frozen)
        pu_log_warn("train: tie_word_embeddings=true: the LM head is untied (a copy of the "
                    "embedding, trained separately, saved as output.weight)");
    if (c->rope_scaling_type == PU_ROPE_SCALING_DYNAMIC)
        pu_log_warn("train: dynamic NTK rope scaling is ignored in training (plain RoPE with "
                    "rope_theta is used)");
    if (B <= 0 || Tmax <= 0)
        return pu_err_set(PU_ERR_INVALID,
                          "train: batch %lld and sequence length %lld must be "
                          "positive",
                          (long long)B, (long long)Tmax);
    pu_tmodel *m = pu_calloc(1, sizeof *m);
    m->cfg = *c;
    m->cfg.rope_interleaved = false; /* weights are permuted to rotate-half on load */
    m->cfg.tie_word_embeddings = false;
    m->k = pu_kernels_get();
    m->fwd_only = o && o->forward_only;
    m->no_head = o && o->no_lm_head;
    m->recompute = o && (o->recompute || o->forward_only);
    if (o && o->lora_r > 0) {
        m->lora_r = o->lora_r;
        m->lora_targets = o->lora_targets;
        m->lora_dropout = o->lora_dropout;
        m->lora_alpha = o->lora_alpha;
        m->lora_rslora = o->lora_rslora;
        if (o->base_name)
            snprintf(m->base_name, sizeof m->base_name, "%s", o->base_name);
        m->lora_scale = (float)(o->lora_rslora ? o->lora_alpha / sqrt((double)o->lora_r)
                                               : o->lora_alpha / (double)o->lora_r);
        m->drop_key = o->seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
        m->dropout_on = m->lora_dropout > 0;
    }
    (void)base;
    uint32_t bf = frozen ? PU_PARAM_BORROWED | PU_PARAM_FROZEN : 0;
    int cap = 0;
    char name[80];
    int64_t QKV = (H + 2 * Hkv) * D;
    m->emb = add_param(m, &cap, "model.tok_embeddings.weight", V, C, PU_PARAM_NO_DECAY | bf);
    m->li = pu_calloc((size_t)L, sizeof *m->li);
    for (int64_t l = 0; l < L; l++) {
        layer_idx *li = &m->li[l];
#define P(field, suffix, r, cc, fl)                                            \
    snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix); \
    li->field = add_param(m, &cap, name, r, cc, (fl) | bf)
        P(attn_norm, "attention_norm.weight", C, 0, PU_PARAM_NO_DECAY);
        P(wqkv, "attention.wqkv.weight", QKV, C, 0);
        P(wo, "attention.wo.weight", C, H * D, 0);
        P(ffn_norm, "ffn_norm.weight", C, 0, PU_PARAM_NO_DECAY);
        P(w1, "feed_forward.w1.weight", F, C, 0);
        P(w3, "feed_forward.w3.weight", F, C, 0);
        P(w2, "feed_forward.w2.weight", C, F, 0);
#undef P
        /* adapters right after their layer: a layer stays one contiguous range */
        int64_t ins[5] = {C, H * D, C, F, C}, outs[5] = {QKV, C, F, C, F};
        for (int t = 0; t < 5; t++) {
            li->la[t] = li->lb[t] = -1;
            if (m->lora_r > 0 && (m->lora_targets & (1u << t))) {
                char mod[80];
                snprintf(mod, sizeof mod, "model.layers.%lld.%s", (long long)l, lora_mod[t]);
                add_lora(m, &cap, mod, ins[t], outs[t], &li->la[t], &li->lb[t]);
            }
        }
    }
    m->norm = add_param(m, &cap, "model.norm.weight", C, 0, PU_PARAM_NO_DECAY | bf);
    m->out = add_param(m, &cap, "output.weight", V, C, bf);
    m->out_la = m->out_lb = -1;
    if (m->lora_r > 0 && (m->lora_targets & (1u << PU_LORA_OUTPUT)))
        add_lora(m, &cap, "output", C, V, &m->out_la, &m->out_lb);

    m->params = pu_try_malloc_aligned((size_t)(m->numel ? m->numel : 1) * sizeof(float), 64);
    m->grads = m->fwd_only
                   ? NULL
                   : pu_try_malloc_aligned((size_t)(m->numel ? m->numel : 1) * sizeof(float), 64);
    /* activations */
    int64_t N = B * Tmax, r = m->lora_r;
    int nlt = 0; /* adapted linears per layer */
    for (int t = 0; t < 5; t++)
        nlt += m->lora_r > 0 && (m->lora_targets & (1u << t));
    m->attn = PU_ATTN_FLASH;
    if (o && o->attn) {
        if (!pu_top_attn_kind_parse(o->attn, &m->attn)) {
            pu_tmodel_destroy(m);
            return pu_err_set(PU_ERR_INVALID, "train: --attn '%s': expected naive or flash",
                              o->attn);
        }
    } else if (getenv("PUYU_ATTN") && *getenv("PUYU_ATTN")) {
        m->attn = pu_top_attn_kind_default();
    }
    m->prec = PU_PREC_FP32;
    if (o && o->precision && !pu_precision_parse(o->precision, &m->prec)) {
        pu_tmodel_destroy(m);
        return pu_err_set(PU_ERR_INVALID, "train: --precision '%s': expected fp32 or bf16",
                          o->precision);
    }
    m->bf16_level = m->prec == PU_PREC_BF16 ? pu_top_matmul_mp_level() : PU_BF16_REF;
    /* naive attention with recompute_attn: one probabilities buffer for all layers */
    m->recompute_attn = o && o->recompute_attn && m->attn == PU_ATTN_NAIVE && !m->recompute;
    int64_t saved_attn = pu_top_attn_saved_floats(m->attn, B, H, Tmax);
    int64_t layer_attn = m->recompute_attn ? 0 : saved_attn;
    int64_t full_layer =
        N * (C * 4 + 2 + H * D * 2 + Hkv * D * 2 + F * 3) + layer_attn + N * r * nlt;
    m->ce_rows = m->no_head ? 0 : pu_tmodel_ce_rows_for(o ? o->ce_chunk : 0, N, V);
    int64_t fin = N * (2 * C + 4) + (m->no_head ? 0 : (m->ce_rows ? m->ce_rows : N) * V) +
                  (m->out_la >= 0 ? N * r : 0);
    m->rope_P = Tmax; /* positions used by training are < Tmax (pos arrays are checked) */
    int64_t misc = N * QKV + 2 * Tmax * (D / 2);
    int64_t maxin = F > C ? F : C;
    int64_t lora_scr = r > 0 ? N * r + (m->lora_dropout > 0 ? N * maxin : 0) : 0;
    /* recompute: the residual input of every layer + one layer's activations,
     * rebuilt from it in backward (activation checkpointing) */
    m->act_floats = (m->recompute ? L * N * C + full_layer : L * full_layer) + fin + misc +
                    lora_scr + (m->recompute_attn ? saved_attn : 0);
    m->act = pu_try_malloc_aligned((size_t)m->act_floats * sizeof(float), 64);
    m->bwd_floats = m->fwd_only ? 0 : N * (2 * C + QKV + 2 * H * D + 2 * Hkv * D + 3 * F);
    m->bwd = m->fwd_only ? NULL : pu_try_malloc_aligned((size_t)m->bwd_floats * sizeof(float), 64);
    m->ids = pu_try_malloc((size_t)N * 4 * sizeof(int32_t));
    if (!m->params || (!m->fwd_only && (!m->grads || !m->bwd)) || !m->act || !m->ids) {
        double gb =
            ((double)m->numel * 2 + (double)m->act_floats + (double)m->bwd_floats) * 4 / 1e9;
        pu_tmodel_destroy(m);
        return pu_err_set(PU_ERR_NOMEM,
                          "train: cannot allocate %.2f GB for weights, gradients and activations "
                          "(batch %lld x seq %lld); use a smaller --batch or --seq",
                          gb, (long long)B, (long long)Tmax);
    }
    memset(m->params, 0, (size_t)m->numel * sizeof(float));
    if (m->grads)
        memset(m->grads, 0, (size_t)m->numel * sizeof(float));
    m->targets = m->ids + N;
    m->pos = m->ids + 2 * N;
    m->seg = m->ids + 3 * N;
    m->B = B;
    m->Tmax = Tmax;
    m->la = pu_calloc((size_t)L, sizeof *m->la);
    float *p = m->act;
#define TAKE(n) (p += (n), p - (n))
    for (int64_t l = 0; l < L; l++) {
        layer_acts *a = &m->la[l];
        if (m->recompute && l > 0) {
            *a = m->la[0];
            a->xin = TAKE(N * C);
            continue;
        }
        a->xin = TAKE(N * C);
        a->xn1 = TAKE(N * C);
        a->r1 = TAKE(N);
        a->q = TAKE(N * H * D);
        a->k = TAKE(N * Hkv * D);
        a->v = TAKE(N * Hkv * D);
        a->probs = m->recompute_attn ? NULL : TAKE(layer_attn);
        a->att = TAKE(N * H * D);
        a->mid = TAKE(N * C);
        a->xn2 = TAKE(N * C);
        a->r2 = TAKE(N);
        a->h1 = TAKE(N * F);
        a->h3 = TAKE(N * F);
        a->hs = TAKE(N * F);
        for (int t = 0; t < 5; t++)
            a->us[t] = m->li[l].la[t] >= 0 ? TAKE(N * r) : NULL;
    }
    if (m->recompute_attn) {
        float *shared = TAKE(saved_attn);
        for (int64_t l = 0; l < L; l++)
            m->la[l].probs = shared;
    }
    m->xo_tmp = m->recompute ? TAKE(N * C) : NULL;
    m->xL = TAKE(N * C);
    m->xnf = TAKE(N * C);
    m->rf = TAKE(N);
    m->logits = m->no_head ? NULL : TAKE((m->ce_rows ? m->ce_rows : N) * V);
    m->lse = TAKE(N);
    m->losses = TAKE(N);
    m->logp = TAKE(N);
    m->out_us = m->out_la >= 0 ? TAKE(N * r) : NULL;
    m->qkv = TAKE(N * QKV);
    m->cos = TAKE(Tmax * (D / 2));
    m->sin = TAKE(Tmax * (D / 2));
    if (r > 0) {
        m->lg = TAKE(N * r);
        m->dropbuf = m->lora_dropout > 0 ? TAKE(N * maxin) : NULL;
    }
    PU_ASSERT(p == m->act + m->act_floats);
    if (!m->fwd_only) {
        p = m->bwd;
        m->dx = TAKE(N * C);
        m->dxn = TAKE(N * C);
        m->dqkv = TAKE(N * QKV);
        m->dq = TAKE(N * H * D);
        m->datt = TAKE(N * H * D);
        m->dk = TAKE(N * Hkv * D);
        m->dv = TAKE(N * Hkv * D);
        m->dh1 = TAKE(N * F);
        m->dh3 = TAKE(N * F);
        m->dhs = TAKE(N * F);
    }
#undef TAKE
    /* operand views: every entry starts as its slab storage */
    m->mat = pu_calloc((size_t)m->ntab, sizeof *m->mat);
    m->nf4 = pu_calloc((size_t)m->ntab, sizeof *m->nf4);
    for (int i = 0; i < m->ntab; i++) {
        pu_param *pp = &m->tab[i];
        m->mat[i].rows = pp->shape[0];
        m->mat[i].cols = pp->ndim == 2 ? pp->shape[1] : 1;
        m->mat[i].dtype = PU_DTYPE_F32;
        if (!(pp->flags & PU_PARAM_BORROWED))
            m->mat[i].f32 = m->params + pp->offset;
    }
    pu_top_rope_tables(&m->cfg, Tmax, m->cos, m->sin);
    m->wbf = pu_calloc((size_t)m->ntab, sizeof *m->wbf);
    if (m->prec == PU_PREC_BF16) {
        int64_t maxk = F > C ? F : C;
        m->wb = pu_try_malloc_aligned((size_t)(m->numel ? m->numel : 1) * sizeof(uint16_t), 64);
        m->xb = pu_try_malloc_aligned((size_t)(N * maxk) * sizeof(uint16_t), 64);
        if (!m->wb || !m->xb) {
            pu_tmodel_destroy(m);
            return pu_err_set(PU_ERR_NOMEM, "train: cannot allocate the bf16 weight copies");
        }
        for (int i = 0; i < m->ntab; i++)
            if (m->tab[i].ndim == 2 && !(m->tab[i].flags & PU_PARAM_BORROWED))
                m->wbf[i] = m->wb + m->tab[i].offset;
        m->wb_dirty = true;
    }
    *out = m;
    return PU_OK;
}

void pu_tmodel_destroy(pu_tmodel *m) {
    if (!m)
        return;
    for (int i = 0; m->nf4 && i < m->ntab; i++)
        pu_nf4_free(&m->nf4[i]);
    pu_free(m->nf4);
    pu_free(m->mat);
    for (int i = 0; i < m->n_own; i++)
        pu_free_aligned(m->own[i]);
    pu_free(m->own);
    pu_free(m->tab);
    pu_free(m->li);
    pu_free(m->la);
    pu_free_aligned(m->params);
    pu_free_aligned(m->grads);
    pu_free_aligned(m->act);
    pu_free_aligned(m->bwd);
    pu_free(m->ids);
    pu_free(m->wbf);
    pu_free_aligned(m->wb);
    pu_free_aligned(m->xb);
    pu_tws_free(&m->ws);
    pu_free(m);
}

const pu_config *pu_tmodel_config(const pu_tmodel *m) {
    return &m->cfg;
}
int pu_tmodel_n_params(const pu_tmodel *m) {
    return m->ntab;
}
const pu_param *pu_tmodel_param(const pu_tmodel *m, int i) {
    return &m->tab[i];
}
int pu_tmodel_find(const pu_tmodel *m, const char *name) {
    for (int i = 0; i < m->ntab; i++)
        if (strcmp(m->tab[i].name, name) == 0)
            return i;
    return -1;
}
int64_t pu_tmodel_numel(const pu_tmodel *m) {
    return m->numel;
}
float *pu_tmodel_params(pu_tmodel *m) {
    m->wb_dirty = true; /* the only mutable access: the bf16 copies follow at the next forward */
    return m->params;
}
const char *pu_tmodel_attn_name(const pu_tmodel *m) {
    return pu_top_attn_kind_name(m->attn);
}
const char *pu_tmodel_recompute_name(const pu_tmodel *m) {
    return m->recompute ? "block" : m->recompute_attn ? "attn" : "none";
}
const char *pu_tmodel_precision_name(const pu_tmodel *m) {
    return pu_precision_name(m->prec);
}
const char *pu_tmodel_bf16_level_name(const pu_tmodel *m) {
    return m->prec == PU_PREC_BF16 ? pu_bf16_level_name(m->bf16_level) : "-";
}
float *pu_tmodel_grads(pu_tmodel *m) {
    return m->grads;
}
int64_t pu_tmodel_act_bytes(const pu_tmodel *m) {
    return m->act_floats * 4;
}
const float *pu_tmodel_logits(const pu_tmodel *m) {
    return m->ce_rows ? NULL : m->logits;
}

void pu_tmodel_zero_grad(pu_tmodel *m) {
    if (m->grads)
        memset(m->grads, 0, (size_t)m->numel * sizeof(float));
}

/* fp32 weights of entry i (slab or borrowed F32; NULL for converted storage) */
#define PW(i) (m->mat[(i)].f32)
/* gradient of tensor i, NULL when frozen (the ops then skip the weight grad) */
#define GW(i)                                                      \
    ((i) < 0 || !m->grads || (m->tab[(i)].flags & PU_PARAM_FROZEN) \
         ? NULL                                                    \
         : m->grads + m->tab[(i)].offset)
/* slab storage of entry i (not for borrowed ones) */
#define SW(i) (m->params + m->tab[(i)].offset)

static bool is_lora(const pu_tmodel *m, int i) {
    return strstr(m->tab[i].name, ".lora_") != NULL;
}

void pu_tmodel_set_bf16_level_(pu_tmodel *m, int level) {
    if (m->prec == PU_PREC_BF16 && pu_bf16_level_available((pu_bf16_level)level))
        m->bf16_level = (pu_bf16_level)level;
}

const pu_tmat *pu_tmodel_mat_(const pu_tmodel *m, int i) {
    return &m->mat[i];
}

int64_t pu_tmodel_frozen_bytes(const pu_tmodel *m) {
    return m->frozen_bytes;
}

int64_t pu_tmodel_lora_r(const pu_tmodel *m) {
    return m->lora_r;
}

float pu_tmodel_lora_scale(const pu_tmodel *m) {
    return m->lora_scale;
}

void pu_tmodel_set_dropout(pu_tmodel *m, bool on, uint64_t key) {
    m->dropout_on = on && m->lora_dropout > 0;
    m->drop_key = key;
}

void pu_tmodel_lora_init(pu_tmodel *m, uint64_t seed) {
    m->wb_dirty = true;
    for (int i = 0; i < m->ntab; i++) {
        const pu_param *p = &m->tab[i];
        if (!is_lora(m, i))
            continue;
        float *w = SW(i);
        if (strstr(p->name, ".lora_B.")) {
            memset(w, 0, (size_t)p->numel * sizeof(float));
            continue;
        }
        /* kaiming_uniform_(a = sqrt(5)) on (r, in): U(-1/sqrt(in), 1/sqrt(in)) */
        float bound = 1.0f / sqrtf((float)p->shape[1]);
        pu_rng r;
        pu_rng_seed(&r, seed * 0xD1B54A32D192ED03ull + (uint64_t)i * 0x9E3779B97F4A7C15ull + 7);
        for (int64_t j = 0; j < p->numel; j++)
            w[j] = (float)((pu_rng_double(&r) * 2.0 - 1.0) * bound);
    }
}

void pu_tmodel_init_random(pu_tmodel *m, uint64_t seed, float std) {
    m->wb_dirty = true;
    if (std <= 0)
        std = (float)(m->cfg.initializer_range > 0 ? m->cfg.initializer_range : 0.02);
    for (int i = 0; i < m->ntab; i++) {
        const pu_param *p = &m->tab[i];
        if ((p->flags & PU_PARAM_BORROWED) || is_lora(m, i))
            continue;
        float *w = SW(i);
        if (p->ndim == 1) {
            for (int64_t j = 0; j < p->numel; j++)
                w[j] = 1.0f;
            continue;
        }
        pu_rng r;
        pu_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xD1B54A32D192ED03ull + 1);
        for (int64_t j = 0; j < p->numel; j++)
            w[j] = (float)pu_rng_normal(&r) * std;
    }
}

/* copy a tensor of any dtype into fp32 */
static void copy_tensor(const pu_tmodel *m, float *dst, const pu_tensor *t, int64_t n) {
    m->k->to_f32[t->dtype](dst, t->data, n);
}

/* rows of a (nh*D, C) q/k weight permuted per head from adjacent-pair RoPE
 * order to rotate-half order (evens then odds) */
static void unpermute_rows(float *w, int64_t nh, int64_t D, int64_t C) {
    float *tmp = pu_malloc((size_t)(D * C) * sizeof(float));
    for (int64_t h = 0; h < nh; h++) {
        float *hw = w + h * D * C;
        for (int64_t i = 0; i < D / 2; i++) {
            memcpy(tmp + i * C, hw + (2 * i) * C, (size_t)C * sizeof(float));
            memcpy(tmp + (D / 2 + i) * C, hw + (2 * i + 1) * C, (size_t)C * sizeof(float));
        }
        memcpy(hw, tmp, (size_t)(D * C) * sizeof(float));
    }
    pu_free(tmp);
}

static pu_status check_shape(const pu_tensor *t, const pu_param *p, const char *what) {
    int64_t r = p->shape[0], c = p->ndim == 2 ? p->shape[1] : 1;
    int64_t tr = t->ndim >= 1 ? t->shape[0] : 0, tc = t->ndim >= 2 ? t->shape[1] : 1;
    if (!t->data || tr * tc != r * c || tr != r)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: tensor '%s': expected shape (%lld, %lld), found "
                          "(%lld, %lld)",
                          what, p->name, (long long)r, (long long)c, (long long)tr, (long long)tc);
    return PU_OK;
}

pu_status pu_tmodel_load_weights(pu_tmodel *m, const pu_model *src) {
    const pu_config *sc = pu_model_config(src);
    const pu_config *c = &m->cfg;
    const char *what = "init model";
    m->wb_dirty = true;
    if (m->tab[m->emb].flags & PU_PARAM_BORROWED)
        return pu_err_set(PU_ERR_INVALID, "train: the base weights of this model are borrowed "
                                          "(frozen); nothing to load into");
    if (sc->vocab_size != c->vocab_size || sc->hidden_size != c->hidden_size ||
        sc->intermediate_size != c->intermediate_size ||
        sc->num_hidden_layers != c->num_hidden_layers ||
        sc->num_attention_heads != c->num_attention_heads ||
        sc->num_key_value_heads != c->num_key_value_heads)
        return pu_err_set(PU_ERR_FORMAT, "%s: model shapes differ from the training config", what);
    const pu_weights *w = pu_model_weights(src);
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, G = H / Hkv;
    PU_TRY(check_shape(&w->tok_embeddings, &m->tab[m->emb], what));
    copy_tensor(m, SW(m->emb), &w->tok_embeddings, m->tab[m->emb].numel);
    PU_TRY(check_shape(&w->norm, &m->tab[m->norm], what));
    copy_tensor(m, SW(m->norm), &w->norm, C);
    PU_TRY(check_shape(&w->output, &m->tab[m->out], what));
    copy_tensor(m, SW(m->out), &w->output, m->tab[m->out].numel);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        const layer_idx *li = &m->li[l];
        const pu_tensor *ts[6] = {&lw->attn_norm, &lw->wo, &lw->ffn_norm,
                                  &lw->w1,        &lw->w3, &lw->w2};
        int is[6] = {li->attn_norm, li->wo, li->ffn_norm, li->w1, li->w3, li->w2};
        for (int j = 0; j < 6; j++) {
            PU_TRY(check_shape(ts[j], &m->tab[is[j]], what));
            copy_tensor(m, SW(is[j]), ts[j], m->tab[is[j]].numel);
        }
        float *dst = SW(li->wqkv);
        if (lw->wqkv.data) {
            PU_TRY(check_shape(&lw->wqkv, &m->tab[li->wqkv], what));
            copy_tensor(m, dst, &lw->wqkv, m->tab[li->wqkv].numel);
        } else {
            /* pack separate projections into the grouped layout */
            if (!lw->wq.data || !lw->wk.data || !lw->wv.data)
                return pu_err_set(PU_ERR_FORMAT, "%s: layer %lld has no q/k/v weights", what,
                                  (long long)l);
            float *q = pu_malloc((size_t)(H * D * C) * sizeof(float));
            float *kk = pu_malloc((size_t)(Hkv * D * C) * sizeof(float));
            float *v = pu_malloc((size_t)(Hkv * D * C) * sizeof(float));
            copy_tensor(m, q, &lw->wq, H * D * C);
            copy_tensor(m, kk, &lw->wk, Hkv * D * C);
            copy_tensor(m, v, &lw->wv, Hkv * D * C);
            if (sc->rope_interleaved) {
                unpermute_rows(q, H, D, C);
                unpermute_rows(kk, Hkv, D, C);
            }
            size_t hb = (size_t)(D * C) * sizeof(float);
            for (int64_t g = 0; g < Hkv; g++) {
                float *grp = dst + g * (G + 2) * D * C;
                memcpy(grp, q + g * G * D * C, hb * (size_t)G);
                memcpy(grp + G * D * C, kk + g * D * C, hb);
                memcpy(grp + (G + 1) * D * C, v + g * D * C, hb);
            }
            pu_free(q);
            pu_free(kk);
            pu_free(v);
        }
    }
    return PU_OK;
}

/* bytes of row r of a stored tensor */
static const char *row_ptr(const pu_tensor *t, int64_t r) {
    return (const char *)t->data + r * t->shape[1] * (int64_t)pu_dtype_size(t->dtype);
}

/* view of a stored (rows, cols) tensor; no copy */
static void set_view(pu_tmodel *m, int i, const pu_tensor *t) {
    pu_tmat *w = &m->mat[i];
    w->f32 = t->dtype == PU_DTYPE_F32 ? t->data : NULL;
    w->data = t->data;
    w->dtype = t->dtype;
    w->cvt = m->k->to_f32[t->dtype];
    m->tab[i].dtype = t->dtype;
}

/* Borrow every base weight of src (frozen): views of the stored tensors;
 * separate / interleaved q,k,v are repacked once into the grouped wqkv
 * layout in their stored dtype; with qlora the layer linears become NF4. */
static pu_status attach_base(pu_tmodel *m, const pu_model *src, bool qlora) {
    const pu_config *sc = pu_model_config(src);
    const pu_config *c = &m->cfg;
    const char *what = "base model";
    const pu_weights *w = pu_model_weights(src);
    /* the GEMM packing converts rows of F32/BF16/F16 panel by panel; ggml
     * block types have no per-element view: refuse rather than misread */
    for (int64_t l = -1; l < c->num_hidden_layers; l++) {
        const pu_tensor *ts[8];
        int nt = 0;
        if (l < 0) {
            ts[nt++] = &w->tok_embeddings, ts[nt++] = &w->output;
        } else {
            const pu_layer_weights *lw = &w->layers[l];
            const pu_tensor *all[8] = {&lw->wqkv, &lw->wq, &lw->wk, &lw->wv,
                                       &lw->wo,   &lw->w1, &lw->w3, &lw->w2};
            for (int j = 0; j < 8; j++)
                ts[nt++] = all[j];
        }
        for (int j = 0; j < nt; j++)
            if (ts[j]->data && pu_dtype_is_quant(ts[j]->dtype))
                return pu_err_set(PU_ERR_UNSUPPORTED,
                                  "%s: %s%lld holds %s weights: a frozen base must be F32, "
                                  "BF16 or F16 (train on the unquantized model; --qlora "
                                  "quantizes it to NF4 itself)",
                                  what, l < 0 ? "the embedding / LM head" : "layer ",
                                  l < 0 ? 0LL : (long long)l, pu_dtype_name(ts[j]->dtype));
    }
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, G = H / Hkv;
    PU_TRY(check_shape(&w->tok_embeddings, &m->tab[m->emb], what));
    PU_TRY(check_shape(&w->norm, &m->tab[m->norm], what));
    PU_TRY(check_shape(&w->output, &m->tab[m->out], what));
    set_view(m, m->emb, &w->tok_embeddings);
    set_view(m, m->out, &w->output);
    for (int64_t l = -1; l < c->num_hidden_layers; l++) {
        /* 1-D norm weights are F32 after pu_model_validate_; convert others */
        const pu_tensor *nt[2];
        int ni[2], nn = 0;
        if (l < 0) {
            nt[nn] = &w->norm, ni[nn++] = m->norm;
        } else {
            nt[nn] = &w->layers[l].attn_norm, ni[nn++] = m->li[l].attn_norm;
            nt[nn] = &w->layers[l].ffn_norm, ni[nn++] = m->li[l].ffn_norm;
        }
        for (int j = 0; j < nn; j++) {
            PU_TRY(check_shape(nt[j], &m->tab[ni[j]], what));
            if (nt[j]->dtype == PU_DTYPE_F32) {
                m->mat[ni[j]].f32 = nt[j]->data;
            } else {
                float *buf = own(m, (size_t)C * sizeof(float));
                m->k->to_f32[nt[j]->dtype](buf, nt[j]->data, C);
                m->mat[ni[j]].f32 = buf;
            }
        }
    }
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        const layer_idx *li = &m->li[l];
        const pu_tensor *ts[4] = {&lw->wo, &lw->w1, &lw->w3, &lw->w2};
        int is[4] = {li->wo, li->w1, li->w3, li->w2};
        for (int j = 0; j < 4; j++) {
            PU_TRY(check_shape(ts[j], &m->tab[is[j]], what));
            set_view(m, is[j], ts[j]);
        }
        if (lw->wqkv.data) { /* fused: as pu_tmodel_load_weights, used as stored */
            PU_TRY(check_shape(&lw->wqkv, &m->tab[li->wqkv], what));
            set_view(m, li->wqkv, &lw->wqkv);
        } else {
            /* pack (and un-permute) q, k, v rows into the grouped layout, in
             * the stored dtype: one owned copy of this layer's wqkv */
            const pu_tensor *tq = &lw->wq, *tk = &lw->wk, *tv = &lw->wv;
            if (!tq->data || !tk->data || !tv->data || tq->dtype != tk->dtype ||
                tq->dtype != tv->dtype || tq->ndim != 2 || tq->shape[0] != H * D ||
                tk->shape[0] != Hkv * D || tv->shape[0] != Hkv * D || tq->shape[1] != C ||
                tk->shape[1] != C || tv->shape[1] != C)
                return pu_err_set(PU_ERR_FORMAT, "%s: layer %lld: missing or mis-shaped q/k/v",
                                  what, (long long)l);
            pu_dtype dt = tq->dtype;
            size_t es = pu_dtype_size(dt), rowb = (size_t)C * es;
            char *dst = own(m, (size_t)((H + 2 * Hkv) * D) * rowb);
            m->frozen_bytes += (int64_t)((H + 2 * Hkv) * D) * (int64_t)rowb;
            for (int64_t g = 0; g < Hkv; g++)
                for (int64_t j = 0; j < (G + 2) * D; j++) {
                    int64_t hh = j / D, i = j % D; /* head slot in the group, row in head */
                    int64_t srci = i;
                    const pu_tensor *t;
                    int64_t row;
                    if (sc->rope_interleaved && hh < G + 1) /* rotate-half row i <- pair row */
                        srci = i < D / 2 ? 2 * i : 2 * (i - D / 2) + 1;
                    if (hh < G) {
                        t = tq, row = (g * G + hh) * D + srci;
                    } else if (hh == G) {
                        t = tk, row = g * D + srci;
                    } else {
                        t = tv, row = g * D + srci;
                    }
                    memcpy(dst + ((g * (G + 2) + hh) * D + i) * (int64_t)rowb, row_ptr(t, row),
                           rowb);
                }
            pu_tensor packed = {dt, 2, {(H + 2 * Hkv) * D, C, 0, 0}, dst};
            set_view(m, li->wqkv, &packed);
        }
        if (qlora) {
            int q5[5] = {li->wqkv, li->wo, li->w1, li->w3, li->w2};
            for (int j = 0; j < 5; j++) {
                pu_tmat *t = &m->mat[q5[j]];
                pu_nf4_quantize(&m->nf4[q5[j]], t->data, t->dtype, t->rows * t->cols);
                m->frozen_bytes += pu_nf4_bytes(&m->nf4[q5[j]]);
                /* the stored form is not read again: let a file map's pages go */
                pu_model_drop_pages(src, t->data,
                                    (size_t)(t->rows * t->cols) * pu_dtype_size(t->dtype));
                t->f32 = NULL;
                t->data = NULL;
                t->nf4 = &m->nf4[q5[j]];
                m->tab[q5[j]].flags |= PU_PARAM_NF4;
            }
        }
    }
    return PU_OK;
}

/* bf16 operands of the borrowed matrices used by matmuls (not the
 * embedding): BF16-stored ones are used as stored (no copy), F32 / F16 ones
 * are converted once into an owned bf16 copy; NF4 stays on the fp32 path
 * (dequantized in the panel packing) */
static void attach_bf16(pu_tmodel *m) {
    for (int i = 0; i < m->ntab; i++) {
        const pu_tmat *t = &m->mat[i];
        if (!(m->tab[i].flags & PU_PARAM_BORROWED) || i == m->emb || m->tab[i].ndim != 2 ||
            t->nf4 || !t->data)
            continue;
        if (t->dtype == PU_DTYPE_BF16) {
            m->wbf[i] = t->data;
            continue;
        }
        int64_t rows = t->rows, cols = t->cols;
        uint16_t *dst = own(m, (size_t)(rows * cols) * sizeof(uint16_t));
        float *row = pu_malloc((size_t)cols * sizeof(float));
        size_t es = pu_dtype_size(t->dtype);
        for (int64_t r = 0; r < rows; r++) {
            t->cvt(row, (const char *)t->data + (size_t)(r * cols) * es, cols);
            pu_bf16_from_f32(NULL, dst + r * cols, row, cols);
        }
        pu_free(row);
        m->frozen_bytes += rows * cols * 2;
        m->wbf[i] = dst;
    }
}

pu_status pu_tmodel_save_dir(const pu_tmodel *m, const char *dir) {
    bool borrowed = m->tab[m->emb].flags & PU_PARAM_BORROWED;
    if (borrowed && m->lora_r <= 0)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: nothing to save: the base weights are frozen and "
                          "borrowed and there is no adapter",
                          dir);
    PU_TRY(pu_mkdir_p(dir));
    if (m->lora_r > 0) { /* the adapter as a PEFT directory */
        pu_lora *l = NULL;
        PU_TRY(pu_tmodel_lora_export(m, &l));
        pu_status s = pu_lora_save(l, dir);
        pu_lora_destroy(l);
        if (s != PU_OK || borrowed)
            return s;
    }
    pu_config c = m->cfg;
    snprintf(c.torch_dtype, sizeof c.torch_dtype, "float32");
    if (!c.architecture[0])
        snprintf(c.architecture, sizeof c.architecture, "InternLM2ForCausalLM");
    if (!c.model_type[0])
        snprintf(c.model_type, sizeof c.model_type, "internlm2");
    char *js = pu_config_to_json(&c);
    char *path = pu_path_join(dir, "config.json");
    pu_status s = pu_file_write_atomic(path, js, strlen(js));
    pu_free(path);
    pu_free(js);
    if (s != PU_OK)
        return s;
    pu_st_out *t = pu_malloc((size_t)m->ntab * sizeof *t);
    int nt = 0;
    for (int i = 0; i < m->ntab; i++) {
        const pu_param *p = &m->tab[i];
        if (is_lora(m, i)) /* adapters are saved apart (PEFT directory) */
            continue;
        t[nt].name = p->name;
        t[nt].data = m->params + p->offset;
        t[nt].ndim = p->ndim;
        t[nt].shape[0] = p->shape[0];
        t[nt].shape[1] = p->shape[1];
        nt++;
    }
    path = pu_path_join(dir, "model.safetensors");
    s = pu_train_write_safetensors(path, t, nt, "{\"format\":\"pt\"}");
    pu_free(path);
    pu_free(t);
    return s;
}

/* ---------------------------------------------------------------- LoRA linears */

static inline uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Dropout of the adapter input (PEFT: lora_B(lora_A(dropout(x)))): element
 * e of linear `lid` is kept when a hash of (forward key, lid, e) >= p * 2^64
 * and scaled by 1 / (1 - p). The mask is a pure function of its key, so the
 * backward (and a recomputing forward) rebuilds it without storing it. */
static bool drop_active(const pu_tmodel *m) {
    return m->dropout_on && m->lora_dropout > 0;
}

typedef struct {
    float *dst;
    const float *x;
    int64_t n;
    uint64_t key;
    double p;
    bool mul; /* dst *= mask (else dst = x * mask) */
} drop_ctx;

static void drop_worker(void *vc, int ith, int nth) {
    const drop_ctx *c = vc;
    int64_t lo, hi;
    pu_split(c->n, ith, nth, &lo, &hi);
    uint64_t thr = (uint64_t)(c->p * 18446744073709551616.0);
    float inv = (float)(1.0 / (1.0 - c->p));
    for (int64_t e = lo; e < hi; e++) {
        float f = mix64(c->key + (uint64_t)e * 0xD6E8FEB86659FD93ull) >= thr ? inv : 0.0f;
        c->dst[e] = c->mul ? c->dst[e] * f : c->x[e] * f;
    }
}

static void dropout(const pu_tmodel *m, pu_pool *pool, float *dst, const float *x, int64_t n,
                    uint64_t lid, bool mul) {
    /* element e of this call is element drop_e0 + e of the whole (N, K) input */
    drop_ctx c = {dst, x, n,
                  mix64(m->drop_key_cur ^ mix64(lid + 1)) +
                      (uint64_t)m->drop_e0 * 0xD6E8FEB86659FD93ull,
                  m->lora_dropout, mul};
    if (n < 65536)
        drop_worker(&c, 0, 1);
    else
        pu_pool_run(pool, drop_worker, &c);
}

/* y (N, M) = x W^T [+ us B^T with us = scale * (dropout(x) A^T) saved] */
static void lin_fwd(pu_tmodel *m, pu_pool *pool, float *y, const float *x, int wi, int ia, int ib,
                    float *us, int64_t N, int64_t M, int64_t K, uint64_t lid) {
    if (m->wbf[wi]) { /* bf16: y = bf16(x) · wb^T, fp32 accumulation */
        pu_bf16_from_f32(pool, m->xb, x, N * K);
        pu_bf16_matmul_fwd(pool, m->bf16_level, y, m->xb, m->wbf[wi], N, M, K);
    } else {
        pu_top_matmul_fwd_w(pool, y, x, &m->mat[wi], N, M, K);
    }
    if (ia < 0)
        return;
    int64_t r = m->lora_r;
    const float *xd = x;
    if (drop_active(m)) {
        dropout(m, pool, m->dropbuf, x, N * K, lid, false);
        xd = m->dropbuf;
    }
    pu_top_gemm(pool, us, r, xd, K, 1, PW(ia), 1, K, N, r, K, false);
    m->k->scale(us, m->lora_scale, N * r);
    pu_top_gemm(pool, y, M, us, r, 1, PW(ib), 1, r, N, M, r, true);
}

/* dx (N, K) += dy W [+ the adapter's part]; dW, dA, dB += when trainable */
static void lin_bwd(pu_tmodel *m, pu_pool *pool, float *dx, const float *dy, const float *x, int wi,
                    int ia, int ib, const float *us, int64_t N, int64_t M, int64_t K,
                    uint64_t lid) {
    float *gw = GW(wi);
    if (m->wbf[wi]) { /* bf16: dx += bf16(dy) · wb, dW += bf16(dy)^T bf16(x), fp32 sums */
        uint16_t *dyb = (uint16_t *)pu_tws_get(&m->ws, (size_t)(N * M + 1) / 2);
        pu_bf16_from_f32(pool, dyb, dy, N * M);
        if (gw) /* the same bits the forward rounded x to */
            pu_bf16_from_f32(pool, m->xb, x, N * K);
        pu_bf16_matmul_bwd(pool, m->bf16_level, dx, gw, dyb, m->xb, m->wbf[wi], N, M, K);
    } else {
        if (dx)
            pu_top_matmul_bwd_dx_w(pool, dx, dy, &m->mat[wi], N, M, K);
        if (gw) /* dW (M, K) += dy^T x */
            pu_top_gemm(pool, gw, K, dy, 1, M, x, K, 1, M, K, N, true);
    }
    if (ia < 0)
        return;
    int64_t r = m->lora_r;
    float *ga = GW(ia), *gb = GW(ib);
    if (gb) /* dB (M, r) += dy^T us */
        pu_top_gemm(pool, gb, r, dy, 1, M, us, r, 1, M, r, N, true);
    if (!ga && !dx)
        return;
    /* g (N, r) = scale * dy B */
    pu_top_gemm(pool, m->lg, r, dy, M, 1, PW(ib), r, 1, N, r, M, false);
    m->k->scale(m->lg, m->lora_scale, N * r);
    bool drop = drop_active(m);
    if (ga) { /* dA (r, K) += g^T dropout(x) */
        const float *xd = x;
        if (drop) {
            dropout(m, pool, m->dropbuf, x, N * K, lid, false);
            xd = m->dropbuf;
        }
        pu_top_gemm(pool, ga, K, m->lg, 1, r, xd, K, 1, r, K, N, true);
    }
    if (!dx)
        return;
    if (!drop) { /* dx += g A */
        pu_top_gemm(pool, dx, K, m->lg, r, 1, PW(ia), K, 1, N, K, r, true);
    } else {
        pu_top_gemm(pool, m->dropbuf, K, m->lg, r, 1, PW(ia), K, 1, N, K, r, false);
        dropout(m, pool, m->dropbuf, NULL, N * K, lid, true);
        m->k->add(dx, dx, m->dropbuf, N * K);
    }
}

#define LID(l, t) ((uint64_t)(l)*8 + (uint64_t)(t))

/* ---------------------------------------------------------------- forward */

/* one layer: la[l].xin -> xo, saving the layer's activations */
static void layer_fwd(pu_tmodel *m, pu_pool *pool, int64_t l, float *xo) {
    const pu_config *c = &m->cfg;
    int64_t B = m->curB, T = m->curT, N = B * T;
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, F = c->intermediate_size;
    int64_t G = H / Hkv, QKV = (H + 2 * Hkv) * D;
    const int32_t *pos = m->have_pos ? m->pos : NULL, *seg = m->have_seg ? m->seg : NULL;
    float eps = (float)c->rms_norm_eps;
    const pu_kernels *k = m->k;
    layer_acts *a = &m->la[l];
    const layer_idx *li = &m->li[l];
    pu_top_rmsnorm_fwd(pool, a->xn1, a->r1, a->xin, PW(li->attn_norm), N, C, eps);
    lin_fwd(m, pool, m->qkv, a->xn1, li->wqkv, li->la[0], li->lb[0], a->us[0], N, QKV, C,
            LID(l, 0));
    for (int64_t n = 0; n < N; n++) {
        const float *src = m->qkv + n * QKV;
        for (int64_t g = 0; g < Hkv; g++) {
            const float *grp = src + g * (G + 2) * D;
            memcpy(a->q + n * H * D + g * G * D, grp, (size_t)(G * D) * sizeof(float));
            memcpy(a->k + n * Hkv * D + g * D, grp + G * D, (size_t)D * sizeof(float));
            memcpy(a->v + n * Hkv * D + g * D, grp + (G + 1) * D, (size_t)D * sizeof(float));
        }
    }
    pu_top_rope_fwd(a->q, pos, N, T, H, D, m->cos, m->sin);
    pu_top_rope_fwd(a->k, pos, N, T, Hkv, D, m->cos, m->sin);
    pu_top_attn_sel_fwd(m->attn, pool, k, &m->ws, a->att, a->probs, a->q, a->k, a->v, seg, B, T, H,
                        Hkv, D);
    lin_fwd(m, pool, a->mid, a->att, li->wo, li->la[1], li->lb[1], a->us[1], N, C, H * D,
            LID(l, 1));
    k->add(a->mid, a->mid, a->xin, N * C);
    pu_top_rmsnorm_fwd(pool, a->xn2, a->r2, a->mid, PW(li->ffn_norm), N, C, eps);
    lin_fwd(m, pool, a->h1, a->xn2, li->w1, li->la[2], li->lb[2], a->us[2], N, F, C, LID(l, 2));
    lin_fwd(m, pool, a->h3, a->xn2, li->w3, li->la[4], li->lb[4], a->us[4], N, F, C, LID(l, 4));
    pu_top_swiglu_fwd(pool, a->hs, a->h1, a->h3, N * F);
    lin_fwd(m, pool, xo, a->hs, li->w2, li->la[3], li->lb[3], a->us[3], N, C, F, LID(l, 3));
    k->add(xo, xo, a->mid, N * C);
}

/* logits (nr, V) of tokens n0 .. n0 + nr - 1 into m->logits (chunked head) */
static void head_chunk_fwd(pu_tmodel *m, pu_pool *pool, int64_t n0, int64_t nr) {
    int64_t C = m->cfg.hidden_size, V = m->cfg.vocab_size, L = m->cfg.num_hidden_layers;
    m->drop_e0 = n0 * C;
    lin_fwd(m, pool, m->logits, m->xnf + n0 * C, m->out, m->out_la, m->out_lb,
            m->out_us ? m->out_us + n0 * m->lora_r : NULL, nr, V, C, LID(L, 5));
    m->drop_e0 = 0;
}

int64_t pu_tmodel_ce_rows_for(int64_t ce_chunk, int64_t N, int64_t V) {
    if (ce_chunk < 0 || N <= 0 || V <= 0)
        return 0;
    if (ce_chunk == 0) { /* auto: chunk once the full logits pass 2^27 floats (512 MiB) */
        if (N * V <= ((int64_t)1 << 27))
            return 0;
        ce_chunk = ((int64_t)1 << 23) / V; /* ~32 MiB of logits per chunk */
        if (ce_chunk < 16)
            ce_chunk = 16;
    }
    return ce_chunk >= N ? 0 : ce_chunk;
}

int64_t pu_tmodel_ce_rows(const pu_tmodel *m) {
    return m->ce_rows;
}

pu_status pu_tmodel_forward(pu_tmodel *m, pu_pool *pool, const pu_tbatch *b, double *loss_sum,
                            int64_t *n_count) {
    const pu_config *c = &m->cfg;
    int64_t B = b->B, T = b->T, N = B * T;
    int64_t C = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    m->fwd_done = false;
    if (B <= 0 || T <= 0 || B > m->B || T > m->Tmax)
        return pu_err_set(PU_ERR_RANGE,
                          "train: batch (%lld, %lld) exceeds the model's "
                          "capacity (%lld, %lld)",
                          (long long)B, (long long)T, (long long)m->B, (long long)m->Tmax);
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++) {
        if (b->ids[n] < 0 || b->ids[n] >= V)
            return pu_err_set(PU_ERR_RANGE,
                              "train: token id %d at batch position %lld is "
                              "outside the vocabulary [0, %lld)",
                              b->ids[n], (long long)n, (long long)V);
        if (b->targets[n] >= V)
            return pu_err_set(PU_ERR_RANGE,
                              "train: target id %d at batch position %lld is "
                              "outside the vocabulary [0, %lld)",
                              b->targets[n], (long long)n, (long long)V);
        if (b->pos && (b->pos[n] < 0 || b->pos[n] >= m->Tmax))
            return pu_err_set(PU_ERR_RANGE,
                              "train: position %d at batch position %lld outside "
                              "[0, %lld)",
                              b->pos[n], (long long)n, (long long)m->Tmax);
        cnt += b->targets[n] >= 0;
    }
    m->curB = B;
    m->curT = T;
    memcpy(m->ids, b->ids, (size_t)N * sizeof(int32_t));
    memcpy(m->targets, b->targets, (size_t)N * sizeof(int32_t));
    m->have_pos = b->pos != NULL;
    m->have_seg = b->seg != NULL;
    if (b->pos)
        memcpy(m->pos, b->pos, (size_t)N * sizeof(int32_t));
    if (b->seg)
        memcpy(m->seg, b->seg, (size_t)N * sizeof(int32_t));
    /* this forward's dropout key (backward and recomputation reuse it) */
    m->drop_key_cur = m->drop_key;
    m->drop_key = mix64(m->drop_key);
    float eps = (float)c->rms_norm_eps;
    const pu_kernels *k = m->k;

    if (m->prec == PU_PREC_BF16 && m->wb_dirty) { /* bf16 copies of the updated masters */
        pu_bf16_from_f32(pool, m->wb, m->params, m->numel);
        m->wb_dirty = false;
    }
    float *x = L > 0 ? m->la[0].xin : m->xL;
    if (PW(m->emb))
        pu_top_embed_fwd(x, m->ids, PW(m->emb), N, C);
    else
        pu_top_embed_fwd_w(x, m->ids, &m->mat[m->emb], N);
    for (int64_t l = 0; l < L; l++)
        layer_fwd(m, pool, l, l + 1 < L ? m->la[l + 1].xin : m->xL);
    pu_top_rmsnorm_fwd(pool, m->xnf, m->rf, m->xL, PW(m->norm), N, C, eps);
    double sum = 0;
    if (m->no_head) { /* only the hidden states are wanted */
        memset(m->logp, 0, (size_t)N * sizeof(float));
    } else if (!m->ce_rows) {
        lin_fwd(m, pool, m->logits, m->xnf, m->out, m->out_la, m->out_lb, m->out_us, N, V, C,
                LID(L, 5));
        sum = pu_top_xent_fwd(pool, k, m->lse, m->losses, m->logits, m->targets, N, V);
    } else { /* chunks of ce_rows tokens: only lse and the losses are kept */
        for (int64_t n0 = 0; n0 < N; n0 += m->ce_rows) {
            int64_t nr = N - n0 < m->ce_rows ? N - n0 : m->ce_rows;
            head_chunk_fwd(m, pool, n0, nr);
            sum += pu_top_xent_fwd(pool, k, m->lse + n0, m->losses + n0, m->logits,
                                   m->targets + n0, nr, V);
        }
    }
    if (!m->no_head)
        for (int64_t n = 0; n < N; n++)
            m->logp[n] = m->targets[n] >= 0 ? -m->losses[n] : 0.0f;
    *loss_sum = sum;
    *n_count = cnt;
    m->fwd_done = true;
    return PU_OK;
}

const float *pu_tmodel_token_logps(const pu_tmodel *m) {
    return m->logp;
}

const float *pu_tmodel_hidden(const pu_tmodel *m) {
    return m->xnf;
}

/* ---------------------------------------------------------------- backward */

static void layer_bwd(pu_tmodel *m, pu_pool *pool, int64_t l) {
    const pu_config *c = &m->cfg;
    int64_t B = m->curB, T = m->curT, N = B * T;
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, F = c->intermediate_size;
    int64_t G = H / Hkv, QKV = (H + 2 * Hkv) * D;
    const int32_t *pos = m->have_pos ? m->pos : NULL;
    const pu_kernels *k = m->k;
    layer_acts *a = &m->la[l];
    const layer_idx *li = &m->li[l];
    /* ffn: xo = mid + hs · w2^T ; dx stays the residual gradient */
    memset(m->dhs, 0, (size_t)(N * F) * sizeof(float));
    lin_bwd(m, pool, m->dhs, m->dx, a->hs, li->w2, li->la[3], li->lb[3], a->us[3], N, C, F,
            LID(l, 3));
    memset(m->dh1, 0, (size_t)(N * F) * sizeof(float));
    memset(m->dh3, 0, (size_t)(N * F) * sizeof(float));
    pu_top_swiglu_bwd(pool, m->dh1, m->dh3, m->dhs, a->h1, a->h3, N * F);
    memset(m->dxn, 0, (size_t)(N * C) * sizeof(float));
    lin_bwd(m, pool, m->dxn, m->dh1, a->xn2, li->w1, li->la[2], li->lb[2], a->us[2], N, F, C,
            LID(l, 2));
    lin_bwd(m, pool, m->dxn, m->dh3, a->xn2, li->w3, li->la[4], li->lb[4], a->us[4], N, F, C,
            LID(l, 4));
    pu_top_rmsnorm_bwd(pool, m->dx, GW(li->ffn_norm), m->dxn, a->mid, a->r2, PW(li->ffn_norm), N,
                       C);
    /* attention: mid = xin + att · wo^T */
    memset(m->datt, 0, (size_t)(N * H * D) * sizeof(float));
    lin_bwd(m, pool, m->datt, m->dx, a->att, li->wo, li->la[1], li->lb[1], a->us[1], N, C, H * D,
            LID(l, 1));
    memset(m->dq, 0, (size_t)(N * H * D) * sizeof(float));
    memset(m->dk, 0, (size_t)(N * Hkv * D) * sizeof(float));
    memset(m->dv, 0, (size_t)(N * Hkv * D) * sizeof(float));
    pu_top_attn_sel_bwd(m->attn, pool, k, &m->ws, m->dq, m->dk, m->dv, m->datt, a->att, a->probs,
                        a->q, a->k, a->v, m->have_seg ? m->seg : NULL, B, T, H, Hkv, D);
    pu_top_rope_bwd(m->dq, pos, N, T, H, D, m->cos, m->sin);
    pu_top_rope_bwd(m->dk, pos, N, T, Hkv, D, m->cos, m->sin);
    for (int64_t n = 0; n < N; n++) {
        float *dst = m->dqkv + n * QKV;
        for (int64_t g = 0; g < Hkv; g++) {
            float *grp = dst + g * (G + 2) * D;
            memcpy(grp, m->dq + n * H * D + g * G * D, (size_t)(G * D) * sizeof(float));
            memcpy(grp + G * D, m->dk + n * Hkv * D + g * D, (size_t)D * sizeof(float));
            memcpy(grp + (G + 1) * D, m->dv + n * Hkv * D + g * D, (size_t)D * sizeof(float));
        }
    }
    memset(m->dxn, 0, (size_t)(N * C) * sizeof(float));
    lin_bwd(m, pool, m->dxn, m->dqkv, a->xn1, li->wqkv, li->la[0], li->lb[0], a->us[0], N, QKV, C,
            LID(l, 0));
    pu_top_rmsnorm_bwd(pool, m->dx, GW(li->attn_norm), m->dxn, a->xin, a->r1, PW(li->attn_norm), N,
                       C);
}

/* rscale: per-token weights of d(-logp) (NULL: grad_scale for every
 * counted token); dhidden: an extra gradient on the final hidden states */
static void backward(pu_tmodel *m, pu_pool *pool, float grad_scale, const float *rscale,
                     bool lm_head, const float *dhidden) {
    PU_ASSERT(m->fwd_done && !m->fwd_only);
    m->fwd_done = false;
    const pu_config *c = &m->cfg;
    int64_t B = m->curB, T = m->curT, N = B * T;
    int64_t C = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    const pu_kernels *k = m->k;

    memset(m->dxn, 0, (size_t)(N * C) * sizeof(float));
    PU_ASSERT(!(lm_head && m->no_head));
    if (lm_head && m->ce_rows) { /* fused chunked CE: rebuild each chunk's logits, then its grad */
        for (int64_t n0 = 0; n0 < N; n0 += m->ce_rows) {
            int64_t nr = N - n0 < m->ce_rows ? N - n0 : m->ce_rows;
            head_chunk_fwd(m, pool, n0, nr);
            if (rscale)
                pu_top_xent_bwd_rows(pool, k, m->logits, m->lse + n0, m->targets + n0, nr, V,
                                     rscale + n0);
            else
                pu_top_xent_bwd(pool, k, m->logits, m->lse + n0, m->targets + n0, nr, V,
                                grad_scale);
            m->drop_e0 = n0 * C;
            lin_bwd(m, pool, m->dxn + n0 * C, m->logits, m->xnf + n0 * C, m->out, m->out_la,
                    m->out_lb, m->out_us ? m->out_us + n0 * m->lora_r : NULL, nr, V, C, LID(L, 5));
            m->drop_e0 = 0;
        }
    } else if (lm_head) {
        if (rscale)
            pu_top_xent_bwd_rows(pool, k, m->logits, m->lse, m->targets, N, V, rscale);
        else
            pu_top_xent_bwd(pool, k, m->logits, m->lse, m->targets, N, V, grad_scale);
        float *dlog = m->logits;
        lin_bwd(m, pool, m->dxn, dlog, m->xnf, m->out, m->out_la, m->out_lb, m->out_us, N, V, C,
                LID(L, 5));
    }
    if (dhidden)
        k->add(m->dxn, m->dxn, dhidden, N * C);
    memset(m->dx, 0, (size_t)(N * C) * sizeof(float));
    pu_top_rmsnorm_bwd(pool, m->dx, GW(m->norm), m->dxn, m->xL, m->rf, PW(m->norm), N, C);
    if (m->hook) /* final norm + LM head (+ its adapter) are the last table entries */
        m->hook(m->hook_ctx, m->norm, m->ntab);
    /* m->dx now holds dL/d(residual) at the output of the last layer */
    for (int64_t l = L - 1; l >= 0; l--) {
        if (m->recompute && l < L - 1) /* rebuild this layer's activations from its input */
            layer_fwd(m, pool, l, m->xo_tmp);
        else if (m->recompute_attn && l < L - 1) /* rebuild the shared probabilities */
            pu_top_attn_sel_fwd(m->attn, pool, m->k, &m->ws, m->la[l].att, m->la[l].probs,
                                m->la[l].q, m->la[l].k, m->la[l].v, m->have_seg ? m->seg : NULL,
                                m->curB, m->curT, m->cfg.num_attention_heads,
                                m->cfg.num_key_value_heads, m->cfg.head_dim);
        layer_bwd(m, pool, l);
        if (m->hook) { /* a layer's entries are contiguous, attention_norm .. its adapters */
            int end = l + 1 < L ? m->li[l + 1].attn_norm : m->norm;
            m->hook(m->hook_ctx, m->li[l].attn_norm, end);
        }
    }
    if (GW(m->emb))
        pu_top_embed_bwd(pool, GW(m->emb), m->dx, m->ids, N, C);
    if (m->hook)
        m->hook(m->hook_ctx, m->emb, m->emb + 1);
}

void pu_tmodel_backward(pu_tmodel *m, pu_pool *pool, float grad_scale) {
    backward(m, pool, grad_scale, NULL, true, NULL);
}

void pu_tmodel_backward_logp(pu_tmodel *m, pu_pool *pool, const float *dlogp,
                             const float *dhidden) {
    int64_t N = m->curB * m->curT;
    float *rs = NULL;
    if (dlogp) { /* d(-logp) weights: dlogits = -dlogp * (softmax - onehot) */
        rs = pu_malloc((size_t)N * sizeof(float));
        for (int64_t n = 0; n < N; n++)
            rs[n] = m->targets[n] >= 0 ? -dlogp[n] : 0.0f;
    }
    backward(m, pool, 0, rs, dlogp != NULL, dhidden);
    pu_free(rs);
}

void pu_tmodel_set_grad_hook(pu_tmodel *m, pu_grad_hook_fn fn, void *ctx) {
    m->hook = fn;
    m->hook_ctx = ctx;
}

void pu_tmodel_set_flags(pu_tmodel *m, int i, uint32_t flags) {
    m->tab[i].flags = flags;
}

/* ---------------------------------------------------------------- adapters */

/* table entries (A, B) of target t in layer l (l ignored for the head) */
static void lora_idx(const pu_tmodel *m, int64_t l, int t, int *ia, int *ib) {
    if (t == PU_LORA_OUTPUT) {
        *ia = m->out_la, *ib = m->out_lb;
    } else {
        *ia = m->li[l].la[t], *ib = m->li[l].lb[t];
    }
}

pu_status pu_tmodel_lora_export(const pu_tmodel *m, pu_lora **out) {
    *out = NULL;
    if (m->lora_r <= 0)
        return pu_err_set(PU_ERR_INVALID, "train: the model has no LoRA adapters to export");
    pu_lora *l = NULL;
    PU_TRY(pu_lora_create(&m->cfg, m->lora_r, m->lora_alpha, m->lora_dropout, m->lora_rslora,
                          m->lora_targets, &l));
    snprintf(l->base_model, sizeof l->base_model, "%s", m->base_name);
    for (int64_t layer = 0; layer < m->cfg.num_hidden_layers; layer++)
        for (int t = 0; t < PU_LORA_N_TARGETS; t++) {
            if (t == PU_LORA_OUTPUT && layer > 0)
                continue;
            pu_lora_mat *lm = pu_lora_get(l, layer, (pu_lora_target)t);
            int ia, ib;
            lora_idx(m, layer, t, &ia, &ib);
            if (!lm || !lm->A || ia < 0)
                continue;
            memcpy(lm->A, m->params + m->tab[ia].offset, (size_t)m->tab[ia].numel * sizeof(float));
            memcpy(lm->B, m->params + m->tab[ib].offset, (size_t)m->tab[ib].numel * sizeof(float));
        }
    *out = l;
    return PU_OK;
}

pu_status pu_tmodel_lora_import(pu_tmodel *m, const pu_lora *l) {
    const char *what = "LoRA adapter";
    m->wb_dirty = true;
    if (m->lora_r <= 0)
        return pu_err_set(PU_ERR_INVALID, "%s: the training model has no adapters", what);
    if (l->r != m->lora_r)
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'r': %lld, the training model has %lld", what,
                          (long long)l->r, (long long)m->lora_r);
    if (l->targets != m->lora_targets)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'target_modules': targets differ from the training model's",
                          what);
    if (l->n_layers != m->cfg.num_hidden_layers)
        return pu_err_set(PU_ERR_FORMAT, "%s: %lld layers, the base has %lld", what,
                          (long long)l->n_layers, (long long)m->cfg.num_hidden_layers);
    for (int64_t layer = 0; layer < m->cfg.num_hidden_layers; layer++)
        for (int t = 0; t < PU_LORA_N_TARGETS; t++) {
            if (t == PU_LORA_OUTPUT && layer > 0)
                continue;
            int ia, ib;
            lora_idx(m, layer, t, &ia, &ib);
            if (ia < 0)
                continue;
            const pu_lora_mat *lm = pu_lora_get_const(l, layer, (pu_lora_target)t);
            const pu_param *pa = &m->tab[ia], *pb = &m->tab[ib];
            if (!lm || !lm->A || !lm->B)
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: %s: missing (layers_to_transform is not supported for "
                                  "training)",
                                  what, pa->name);
            if (lm->in != pa->shape[1] || lm->out != pb->shape[0])
                return pu_err_set(PU_ERR_FORMAT, "%s: %s: shape (%lld, %lld) vs (%lld, %lld)", what,
                                  pa->name, (long long)lm->out, (long long)lm->in,
                                  (long long)pb->shape[0], (long long)pa->shape[1]);
            memcpy(m->params + pa->offset, lm->A, (size_t)pa->numel * sizeof(float));
            memcpy(m->params + pb->offset, lm->B, (size_t)pb->numel * sizeof(float));
        }
    return PU_OK;
}

pu_status pu_tmodel_load_dir(pu_tmodel *m, const char *dir) {
    bool borrowed = m->tab[m->emb].flags & PU_PARAM_BORROWED;
    if (!borrowed) {
        pu_model *src = NULL;
        PU_TRY(pu_model_load(dir, &src));
        pu_status s = pu_tmodel_load_weights(m, src);
        pu_model_destroy(src);
        PU_TRY(s);
    }
    if (m->lora_r > 0) {
        pu_lora *l = NULL;
        PU_TRY(pu_lora_load(dir, &m->cfg, &l));
        pu_status s = pu_tmodel_lora_import(m, l);
        pu_lora_destroy(l);
        if (s != PU_OK)
            return pu_err_prefix(s, "%s: ", dir);
    }
    return PU_OK;
}
