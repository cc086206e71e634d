/*
 * pu_train.h — training InternLM2 models in fp32 on the CPU: the parameter
 * table, the training forward/backward, AdamW with warmup + cosine decay,
 * global-norm clipping, the token-shard data loader, and the pretraining loop
 * with checkpoints and bit-exact resume (puyu train).
 *
 * Memory. A pu_tmodel owns ONE fp32 parameter slab and ONE gradient slab of the
 * same layout, carved by a tensor table (pu_param: HF tensor name, shape,
 * offset, flags). The same table drives checkpoint I/O (tensor names are the
 * HF InternLM2 names, wqkv in its fused grouped layout), global-norm clipping,
 * the weight-decay mask (PU_PARAM_NO_DECAY: norms and the token embedding by
 * default) and the tests. AdamW moments are two more slabs of the same layout
 * (pu_adamw). Activations saved by the forward pass live in one more slab
 * sized for (B, Tmax) at creation.
 *
 * Math. Forward: embedding -> L x [RMSNorm -> fused wqkv -> rotate-half RoPE ->
 * causal GQA attention -> wo -> residual -> RMSNorm -> SwiGLU -> residual] ->
 * RMSNorm -> LM head -> cross-entropy, exactly the HF semantics of
 * src/model/forward.c. Backward mirrors it in reverse; every gradient is
 * ACCUMULATED (+=) into the gradient slab, so gradient accumulation over
 * micro-batches is just several forward/backward calls before one optimizer
 * step (pu_tmodel_zero_grad between steps).
 *
 * Losses. Targets < 0 are ignored (PU_IGNORE_INDEX = -100, as PyTorch): that
 * is the SFT loss mask. backward() takes `grad_scale`, the weight of each
 * counted token (1 / number of counted tokens in the whole accumulated step
 * gives the exact mean cross-entropy of the step).
 *
 * Threads. Every op splits work over a pu_pool so that no floating-point sum
 * is ever split in a thread-count-dependent way: the three products of every
 * linear layer (y = x W^T, dx += dy W, dW += dy^T x) run on a strided, packed
 * AVX-512 GEMM (src/train/gemm*.c, portable fallback) that splits rows of the
 * output and never K; per-column reductions (RMSNorm weight grads, embedding
 * grads) split columns; attention splits (sequence, head) pairs forward and
 * (sequence, kv-head) pairs backward. Results are bitwise identical for any
 * thread count (tested for 1 vs 2 threads), which is what makes --resume
 * bit-exact even with a different --threads.
 *
 * Frozen weights, LoRA, QLoRA, two models (pu_tmodel_create_from):
 *  - A tmodel built over a loaded pu_model with freeze_base BORROWS every
 *    base weight (PU_PARAM_BORROWED | PU_PARAM_FROZEN): the table entry keeps
 *    its name/shape/dtype, a view (src/train/train_impl.h pu_tmat) points
 *    into the model's memory map, and the slab, the gradients and the AdamW
 *    moments hold only the trainable entries (pu_tmodel_numel counts them).
 *    The two products a frozen linear needs (y = x W^T, dx += dy W; no dW)
 *    read BF16/F16 weights through the training GEMM, which converts each
 *    B panel while packing it (src/train/gemm.c pack_b_w): never a full fp32
 *    copy. F32 weights take the unchanged fp32 path. Only separate or
 *    RoPE-interleaved q/k/v (GGUF, llama2.c) are repacked once, in their
 *    stored dtype. Any number of tmodels may borrow one pu_model: a policy
 *    and a frozen reference (forward_only: no gradients, no backward
 *    buffers) cost one mmap.
 *  - LoRA (pu_lora.h semantics, PEFT init and keys): extra trainable table
 *    entries right after their layer's; forward y += s (drop(x) A^T) B^T,
 *    backward dB += dy^T u, g = s dy B, dA += g^T drop(x), dx += drop'(g A).
 *    Dropout masks are a hash of (per-forward key, linear, element): nothing
 *    stored, rebuilt in backward. pu_tmodel_lora_export / _import convert to
 *    and from pu_lora (files: pu_lora_save / pu_lora_load, src/model/lora.c).
 *  - QLoRA (qlora): the layer linears are quantized at creation to NF4 with
 *    double quantization exactly as bitsandbytes does (blocks of 64, the NF4
 *    table, absmax - mean(absmax) to 8 bits with the dynamic map in blocks
 *    of 256 with an fp32 scale each; src/train/nf4.c), ~4.13 bits a weight,
 *    dequantized on the fly in the same panel packing.
 *  - Activation checkpointing (recompute): only each layer's residual input
 *    is kept; backward rebuilds the layer from it (bitwise the same grads).
 *  - Alignment hooks: pu_tmodel_token_logps (log p of every target),
 *    pu_tmodel_hidden (final hidden states) and pu_tmodel_backward_logp
 *    (backward from dLoss/dlogp per token and/or dLoss/dhidden; the mean CE
 *    backward is its special case, bitwise).
 *
 * Where the pieces live, in design.md terms. The training model is the
 * `model` role (weights, forward, backward, adapters, value head inputs);
 * it is built in src/train/ (model.c, ops.c, gemm*.c, nf4.c) because it
 * shares the training ops, and it reads base weights only through the
 * public pu_model views. `train` owns the optimizer (optim.c), data
 * loaders, the loops (run.c: pretraining; SFT, DPO, PPO build on the same
 * tmodel), checkpoints (ckpt.c) and data parallel (dp.c). Adapter files
 * (PEFT) and inference-side adapters live in `model` (src/model/lora.c).
 *
 * Precision and attention (pu_tmodel_opts, --precision / --attn /
 * --recompute): fp32 or bf16 matmul operands with fp32 accumulation (fp32
 * master weights, gradients, moments; see README "Training model options");
 * flash attention (O(T) saved per layer, default) or naive (saves the
 * (B, H, T, T) probabilities). Dynamic-NTK rope scaling is ignored in
 * training (plain RoPE).
 *
 *  - The loop (optimizer, schedule, accumulation, checkpoints, resume,
 *    eval, metrics) is shared with `puyu sft` (pu_sft.h): pu_train_run is
 *    pu_train_loop (src/train/train_impl.h) with a token-shard batch source;
 *    pu_sft_run the same loop with the SFT batcher.
 * Also built:
 *  - SFT packing with per-document attention: pu_tbatch carries optional
 *    `pos` (RoPE position per token, restarting at 0 per document) and `seg`
 *    (document id per token; attention only within equal seg). Both are
 *    implemented and tested (ops against finite differences; a packed row
 *    equals its documents run alone); the loss mask is targets < 0.
 *  - Data parallel (MPI): include/puyu/pu_dp.h, src/train/dp.c, run.c; the
 *    backward reports finished table entries through pu_tmodel_set_grad_hook
 *    so gradient buckets are all-reduced while earlier layers still compute.
 *    ZeRO-1 (moments sharded by slab ranges) is designed there, not built.
 *  - Next: a value/reward head is a table entry "v_head.weight" (1, C) of
 *    the alignment module over pu_tmodel_hidden + pu_tmodel_backward_logp's
 *    dhidden.
 */
#ifndef PU_TRAIN_H
#define PU_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_model.h"

#define PU_IGNORE_INDEX (-100)

/* ------------------------------------------------------------------------ */
/* the parameter table                                                      */

enum {
    PU_PARAM_NO_DECAY = 1u << 0, /* excluded from weight decay (norms, embeddings) */
    PU_PARAM_FROZEN = 1u << 1,   /* no gradient, no update, not in the gradient norm */
    PU_PARAM_BORROWED = 1u << 2, /* frozen base weight read from a pu_model in its stored
                                    dtype (no room in the slab, no fp32 copy, no grads) */
    PU_PARAM_NF4 = 1u << 3,      /* borrowed and held as NF4 (QLoRA) */
};

typedef struct pu_param {
    char name[80];    /* HF InternLM2 tensor name */
    int ndim;         /* 1 or 2 */
    int64_t shape[2]; /* (rows, cols) or (n) */
    int64_t offset;   /* in floats from the start of the slab (64-byte aligned);
                         borrowed entries take no room (offset = where the next
                         slab entry starts) */
    int64_t numel;
    uint32_t flags;
    pu_dtype dtype; /* F32 for slab entries; the stored dtype of borrowed ones */
} pu_param;

typedef struct pu_tmodel pu_tmodel;

/* A trainable model for batches of up to B sequences of up to Tmax tokens.
 * Weights are zero until pu_tmodel_init_random / pu_tmodel_load_weights.
 * Errors (bad config, no memory) name the field. Returns owned. */
pu_status pu_tmodel_create(const pu_config *c, int64_t B, int64_t Tmax, pu_tmodel **out);
void pu_tmodel_destroy(pu_tmodel *m);

/* A training model over a loaded base model. */
typedef struct pu_tmodel_opts {
    /* true: the base weights are borrowed from `base` (frozen, PU_PARAM_BORROWED:
     * read in their stored dtype F32/BF16/F16 by the matmuls, converted panel
     * by panel; no fp32 copy, no gradients, no moments); `base` must outlive
     * the tmodel and may back any number of tmodels (policy + reference).
     * false: an fp32 trainable copy (full fine-tuning). */
    bool freeze_base;
    /* with freeze_base: the 5 linears of every layer are quantized at
     * creation to NF4 with double quantization (bitsandbytes' scheme, see
     * src/train/nf4.c), dequantized on the fly; embedding, norms and the LM
     * head stay as stored */
    bool qlora;
    /* activation checkpointing: keep only each layer's residual input and
     * rebuild the layer's activations in backward (bitwise the same grads) */
    bool recompute;
    /* recompute only the attention probabilities in backward (naive attention:
     * one shared (B, H, T, T) buffer instead of one per layer; flash already
     * recomputes them tile by tile, so there it changes nothing) */
    bool recompute_attn;
    /* "naive" | "flash"; NULL: the environment's PUYU_ATTN if set, else flash */
    const char *attn;
    /* "fp32" | "bf16"; NULL: fp32. bf16: the linears' products (forward, dx,
     * dW) on bf16 operands with fp32 accumulation (src/train/gemm_bf16.h, level
     * PUYU_BF16 or the best available); master weights, gradients, optimizer
     * state, norms, attention and the loss stay fp32. */
    const char *precision;
    /* no gradients and no backward buffers (a frozen reference model) */
    bool forward_only;
    /* hidden states only (a value head's body, e.g. the PPO critic): the
     * forward stops after the final norm — no LM head, no loss, logits NULL,
     * token log-probs 0 — and backward takes only dhidden (dlogp must be NULL;
     * the LM head entry stays in the table, untouched) */
    bool no_lm_head;
    /* LM head + cross-entropy over token chunks (pu_tmodel_ce_rows_for):
     * 0 auto (long sequences), > 0 tokens per chunk, < 0 never */
    int64_t ce_chunk;
    /* LoRA adapters (pu_lora.h semantics) when lora_r > 0: y += s (drop(x) A^T) B^T
     * on the linears in lora_targets (bitmask of pu_lora_target), s = alpha / r
     * or alpha / sqrt(r) (rslora); PEFT init (A kaiming-uniform from seed, B 0) */
    int64_t lora_r;
    double lora_alpha, lora_dropout;
    bool lora_rslora;
    uint32_t lora_targets;
    uint64_t seed;         /* LoRA init and dropout masks */
    const char *base_name; /* adapter_config.json base_model_name_or_path (copied) */
} pu_tmodel_opts;
/* freeze_base false, no LoRA, alpha 16, the default targets */
void pu_tmodel_opts_default(pu_tmodel_opts *o);
/* --recompute "none" | "attn" | "block" (NULL: none) into o->recompute /
 * o->recompute_attn; PU_ERR_INVALID naming the value otherwise */
pu_status pu_tmodel_opts_set_recompute(pu_tmodel_opts *o, const char *s);
/* Shapes from base's config; B, Tmax as pu_tmodel_create. o NULL: defaults. */
pu_status pu_tmodel_create_from(const pu_model *base, int64_t B, int64_t Tmax,
                                const pu_tmodel_opts *o, pu_tmodel **out);
/* pu_tmodel_create with options (attn, precision, recompute*, forward_only;
 * freeze_base, qlora and LoRA need a base: pu_tmodel_create_from). */
pu_status pu_tmodel_create_opts(const pu_config *c, int64_t B, int64_t Tmax,
                                const pu_tmodel_opts *o, pu_tmodel **out);
/* what the model runs: "naive"/"flash", "fp32"/"bf16", and in bf16 the
 * BF16 GEMM level ("ref", "avx2", "avx512bf16", "amx"; "-" in fp32) */
const char *pu_tmodel_attn_name(const pu_tmodel *m);
const char *pu_tmodel_precision_name(const pu_tmodel *m);
/* "block", "attn" (naive attention only: with flash it is a no-op) or "none" */
const char *pu_tmodel_recompute_name(const pu_tmodel *m);
const char *pu_tmodel_bf16_level_name(const pu_tmodel *m);
/* bytes of frozen weights the tmodel holds itself (NF4 forms, repacked
 * q/k/v); borrowed views cost nothing */
int64_t pu_tmodel_frozen_bytes(const pu_tmodel *m);

/* LoRA. Adapter entries are ordinary trainable table entries named with
 * PEFT's keys ("base_model.model.model.layers.<i>.attention.wqkv.lora_A.weight"
 * (r, in), "...lora_B.weight" (out, r), "base_model.model.output.lora_A.weight"),
 * placed right after their layer's entries (after output.weight for the head),
 * so optimizer, clipping, weight decay, checkpoints and gradient hooks treat
 * them like any weight. */
int64_t pu_tmodel_lora_r(const pu_tmodel *m); /* 0: no adapters */
float pu_tmodel_lora_scale(const pu_tmodel *m);
/* PEFT init again: A ~ U(-1/sqrt(in), 1/sqrt(in)) from (seed, entry), B = 0 */
void pu_tmodel_lora_init(pu_tmodel *m, uint64_t seed);
/* Dropout of the adapter inputs on (training) or off (evaluation); key seeds
 * the masks of the next forward (each forward then advances it), so a run
 * that sets it per step is reproducible and resumable. */
void pu_tmodel_set_dropout(pu_tmodel *m, bool on, uint64_t key);
/* Copy the adapter out into a new pu_lora (r, alpha, dropout, rslora,
 * targets, base_name of the options) / in from one (r and targets must
 * match, shapes are checked). */
pu_status pu_tmodel_lora_export(const pu_tmodel *m, pu_lora **out);
pu_status pu_tmodel_lora_import(pu_tmodel *m, const pu_lora *l);

const pu_config *pu_tmodel_config(const pu_tmodel *m);
int pu_tmodel_n_params(const pu_tmodel *m); /* number of table entries */
const pu_param *pu_tmodel_param(const pu_tmodel *m, int i);
/* index of a tensor by name, -1 if absent */
int pu_tmodel_find(const pu_tmodel *m, const char *name);
/* Replace the flags of table entry i (PU_PARAM_NO_DECAY | PU_PARAM_FROZEN):
 * frozen tensors get no weight gradient (it stays as it is, normally 0), no
 * update and no part in the gradient norm. */
void pu_tmodel_set_flags(pu_tmodel *m, int i, uint32_t flags);
int64_t pu_tmodel_numel(const pu_tmodel *m); /* total floats in the slab */
float *pu_tmodel_params(pu_tmodel *m);       /* (numel) the fp32 master weights */
float *pu_tmodel_grads(pu_tmodel *m);        /* (numel) same layout */
/* bytes of the activation slab (for memory estimates) */
int64_t pu_tmodel_act_bytes(const pu_tmodel *m);

/* Init scheme (HF InternLM2PreTrainedModel._init_weights): every matrix
 * (embedding, wqkv, wo, w1, w2, w3, output) ~ N(0, std^2) with std =
 * config.initializer_range when std <= 0; norm weights 1. Each tensor draws
 * from its own xoshiro stream seeded by (seed, table index): deterministic. */
void pu_tmodel_init_random(pu_tmodel *m, uint64_t seed, float std);
/* Copy weights from a loaded model (any dtype; separate wq/wk/wv are packed
 * into the grouped wqkv layout, interleaved-RoPE weights are permuted to
 * rotate-half). The configs must agree in every shape. */
pu_status pu_tmodel_load_weights(pu_tmodel *m, const pu_model *src);
/* Write a model directory: config.json (pu_config_to_json, torch_dtype
 * float32) + model.safetensors (F32, HF names); each file atomically. With
 * adapters, also the PEFT adapter files (adapter_config.json +
 * adapter_model.safetensors); over a borrowed base only those: checkpoints
 * and results of LoRA runs hold the adapter alone. */
pu_status pu_tmodel_save_dir(const pu_tmodel *m, const char *dir);
/* The inverse, for resuming: the trainable weights of a tmodel from a
 * directory pu_tmodel_save_dir wrote (the model weights unless borrowed,
 * the adapter when there is one). */
pu_status pu_tmodel_load_dir(pu_tmodel *m, const char *dir);

void pu_tmodel_zero_grad(pu_tmodel *m);

/* One micro-batch. ids, targets: (B, T) row-major. targets < 0 are ignored.
 * pos (B, T) and seg (B, T) are optional (NULL: positions 0..T-1, one
 * document per row). */
typedef struct pu_tbatch {
    const int32_t *ids;
    const int32_t *targets;
    const int32_t *pos;
    const int32_t *seg;
    int64_t B, T;
} pu_tbatch;

/* Forward pass, saving activations for backward. *loss_sum = sum of the
 * per-token cross-entropies (nats, double) over counted targets, *n_count =
 * their number. Ids/targets outside [0, V) (other than ignored targets) are
 * PU_ERR_RANGE naming the position. */
pu_status pu_tmodel_forward(pu_tmodel *m, pu_pool *pool, const pu_tbatch *b, double *loss_sum,
                            int64_t *n_count);
/* Backward of the last forward: grads += d(grad_scale * loss_sum)/dparams. */
void pu_tmodel_backward(pu_tmodel *m, pu_pool *pool, float grad_scale);
/* Optional hook for overlapping gradient communication with backward
 * (pu_dp_grads_ready): backward calls fn(ctx, first, end) as soon as the
 * gradients of table entries [first, end) are final for this call — first
 * the final norm + LM head, then each layer from the last to the first, then
 * the embedding. fn NULL disables. */
typedef void (*pu_grad_hook_fn)(void *ctx, int first, int end);
void pu_tmodel_set_grad_hook(pu_tmodel *m, pu_grad_hook_fn fn, void *ctx);
/* Logits of the last forward, (B, T, V) — overwritten by backward. NULL
 * when the LM head is chunked (pu_tmodel_ce_rows > 0: never materialized). */
const float *pu_tmodel_logits(const pu_tmodel *m);
/* Chunked LM head + cross-entropy (pu_tmodel_opts.ce_chunk): tokens per
 * chunk, 0 when the (N, V) logits are materialized whole. The forward keeps
 * only each token's logsumexp and loss; the backward rebuilds one chunk's
 * logits at a time and fuses the CE gradient with the head's two products,
 * so at most (chunk, V) logits exist (one extra head GEMM per step). */
int64_t pu_tmodel_ce_rows(const pu_tmodel *m);
/* the chunk rows a model of N = B*Tmax tokens and vocabulary V gets for an
 * option value (< 0 never, 0 auto: chunks of ~2^23 / V tokens once N*V >
 * 2^27 floats, > 0 that many tokens; 0 if one chunk would hold all N) */
int64_t pu_tmodel_ce_rows_for(int64_t ce_chunk, int64_t N, int64_t V);
/* log p(target) of every position of the last forward, (B*T); 0 where the
 * target is ignored (DPO / PPO sum them per sequence). */
const float *pu_tmodel_token_logps(const pu_tmodel *m);
/* final hidden states of the last forward (after the final RMSNorm, the LM
 * head's input), (B*T, C): value / reward heads read them. */
const float *pu_tmodel_hidden(const pu_tmodel *m);
/* Backward of the last forward from given gradients: dlogp (B*T) =
 * dLoss/d(logp of each target) (NULL: none through the LM head), dhidden
 * (B*T, C) = dLoss/d(hidden) (NULL: none). pu_tmodel_backward(m, pool, s) is
 * the case dlogp = -s at every counted token. */
void pu_tmodel_backward_logp(pu_tmodel *m, pu_pool *pool, const float *dlogp, const float *dhidden);

/* ------------------------------------------------------------------------ */
/* optimizer                                                                */

typedef struct pu_adamw_cfg {
    double beta1, beta2, eps, weight_decay;
    double clip; /* max global grad norm; <= 0 disables */
} pu_adamw_cfg;
pu_adamw_cfg pu_adamw_default(void); /* 0.9, 0.95, 1e-8, 0.1, clip 1.0 */

typedef struct pu_adamw {
    pu_adamw_cfg cfg;
    int64_t t;    /* steps taken */
    int64_t n;    /* moment floats: the slab size, or the shard's length */
    float *m, *v; /* (n) moments, owned, layout of the parameter slab from lo */
    int64_t lo;   /* ZeRO-1 shard: moments of slab [lo, lo + n) only (0: whole slab) */
} pu_adamw;

void pu_adamw_init(pu_adamw *o, const pu_adamw_cfg *cfg, int64_t numel);
/* ZeRO-1 (pu_dp.h): moments for the slab range [lo, hi) only; a step then
 * updates only the weights in that range (the rest stay as they are; the
 * caller all-gathers them). Elementwise, so each element gets exactly the
 * update of the whole-slab optimizer given the same gradient and norm. */
void pu_adamw_init_range(pu_adamw *o, const pu_adamw_cfg *cfg, int64_t lo, int64_t hi);
void pu_adamw_free(pu_adamw *o);
/* Global L2 norm of all (non-frozen) gradients, in double, deterministic. */
double pu_grad_norm(pu_tmodel *m, pu_pool *pool);
/* One step, torch.optim.AdamW semantics: clip grads by global norm (as
 * torch.nn.utils.clip_grad_norm_: coef = clip / (norm + 1e-6), applied when
 * < 1), p *= 1 - lr*wd (decay tensors only), moments, bias correction,
 * p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps). Returns the pre-clip norm. */
double pu_adamw_step(pu_adamw *o, pu_tmodel *m, pu_pool *pool, double lr);

/* Linear warmup: lr*(step+1)/warmup for step < warmup; then cosine decay
 * from lr to min_lr, reached at the last step (total-1). step is 0-based. */
double pu_lr_at(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr);

/* ------------------------------------------------------------------------ */
/* data loader over a directory of token shards                            */

typedef struct pu_loader pu_loader;
/* Open every `<split>_*.bin` shard in dir (split "train" or "val").
 * Errors: no shards, corrupt shards, vocab > vocab_limit (when > 0). */
pu_status pu_loader_open(const char *dir, const char *split, int64_t vocab_limit, pu_loader **out);
void pu_loader_close(pu_loader *l);
int64_t pu_loader_n_tokens(const pu_loader *l);
uint64_t pu_loader_tok_hash(const pu_loader *l);
int64_t pu_loader_vocab(const pu_loader *l);
/* Random windows: B sequences of T+1 tokens starting at uniform random
 * offsets (drawn from rng) in the concatenated stream; ids = window[0..T),
 * targets = window[1..T]. The whole state is the rng: resumable. */
pu_status pu_loader_sample(pu_loader *l, pu_rng *rng, int64_t B, int64_t T, int32_t *ids,
                           int32_t *targets);
/* Deterministic window k (k = 0, 1, ...) of T+1 tokens, non-overlapping from
 * the start, wrapping around: for validation. */
void pu_loader_window(pu_loader *l, int64_t k, int64_t T, int32_t *ids, int32_t *targets);

/* ------------------------------------------------------------------------ */
/* the pretraining loop                                                     */

typedef struct pu_train_opts {
    const char *config_path; /* InternLM2 config.json (new model) */
    const char *init_dir;    /* or a model directory to continue from */
    const char *data_dir;
    const char *out_dir;
    const char *metrics_path; /* NULL: <out>/metrics.jsonl */
    const char *seq_schedule; /* "0:128,0.9:512" or NULL */
    int64_t steps, batch, seq, grad_accum, warmup;
    double lr, min_lr;
    pu_adamw_cfg adam;
    uint64_t seed;
    int64_t eval_every, eval_batches, save_every, keep;
    bool resume;
    /* data parallel (pu_dp.h): gradient all-reduce bucket size, MB (<= 0: 16) */
    double dp_bucket_mb;
    bool quiet;      /* no progress line */
    int64_t kill_at; /* testing: raise SIGKILL after this step (0 = never) */
    /* the training model's creation options (pu_tmodel_opts): --attn
     * naive|flash (NULL: PUYU_ATTN or flash), --precision fp32|bf16 (NULL:
     * fp32), --recompute none|attn|block (NULL: none) */
    const char *attn, *precision, *recompute;
    /* --ce-chunk: LM head + cross-entropy over token chunks (pu_tmodel_opts.ce_chunk:
     * 0 auto, > 0 tokens, < 0 never) */
    int64_t ce_chunk;
    /* --rope-theta (train, > 0): RoPE base of this stage (a context-extension
     * stage raises it, e.g. 10000 -> 1e6 for 4k -> 32k); written into the
     * model config (checkpoints keep it), max_position_embeddings raised to
     * the longest --seq. Ignored on resume (the checkpoint's config rules). */
    double rope_theta;
    /* --zero 1: ZeRO-1 under data parallelism (pu_dp.h): each rank keeps the
     * AdamW moments of its slab range only; 0: every rank keeps them all */
    int64_t zero;
} pu_train_opts;

void pu_train_opts_default(pu_train_opts *o);
/* Run (or resume) a pretraining run. pool borrowed. */
pu_status pu_train_run(const pu_train_opts *o, pu_pool *pool);

/* Parse "0:128,0.9:512" into stages (frac ascending, first 0); returns count
 * or sets an error. fracs/lens: arrays of cap entries. */
pu_status pu_seq_schedule_parse(const char *s, double *fracs, int64_t *lens, int cap, int *n);

/* Render metrics JSONL (train "loss" and "val_loss" lines) as an SVG plot. */
pu_status pu_plot_metrics(const char *metrics_path, const char *svg_path, const char *title);
/* The same for any one or two numeric fields of the step lines (key2 may be
 * NULL), e.g. "reward" and "kl" of `puyu ppo`; key1 NULL: loss / val_loss. */
pu_status pu_plot_metrics_keys(const char *metrics_path, const char *svg_path, const char *title,
                               const char *key1, const char *key2);

#endif /* PU_TRAIN_H */
