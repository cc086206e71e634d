/*
 * pu_model.h — the InternLM2 model: config, weights, loading, inference.
 *
 * Owns: pu_config (every InternLM2Config field), the in-memory weight views
 * (pu_weights), loaders for a Hugging Face model directory (config.json +
 * model.safetensors or an index + shards; F32/BF16/F16), a GGUF file (llama /
 * internlm2 architectures, F32/F16/BF16 and ggml's Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1, Q4_K, Q5_K, Q6_K block types) and a llama2.c checkpoint — all three map
 * onto the same pu_model — and pu_session, an inference context holding a KV
 * cache that prefills a prompt in one pass and decodes incrementally.
 *
 * Weights are memory-mapped and borrowed by the tensor views; only small
 * tensors (norm weights) and format conversions get owned copies. A pu_model
 * is immutable after load and may be shared by many sessions (one thread per
 * session at a time).
 */
#ifndef PU_MODEL_H
#define PU_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_kernels.h"

typedef enum {
    PU_ROPE_SCALING_NONE = 0,
    PU_ROPE_SCALING_LINEAR = 1,
    PU_ROPE_SCALING_DYNAMIC = 2,
} pu_rope_scaling;

typedef struct pu_config {
    char model_type[32];   /* "internlm2", "internlm", "llama" */
    char architecture[64]; /* "InternLM2ForCausalLM", ... ("" if absent) */
    int64_t vocab_size;
    int64_t hidden_size;       /* C */
    int64_t intermediate_size; /* F */
    int64_t num_hidden_layers;
    int64_t num_attention_heads; /* H */
    int64_t num_key_value_heads; /* Hkv */
    int64_t head_dim;            /* D = C / H */
    char hidden_act[16];         /* "silu" */
    int64_t max_position_embeddings;
    double initializer_range;
    double rms_norm_eps;
    bool use_cache;
    int64_t pad_token_id, bos_token_id, eos_token_id;
    bool tie_word_embeddings;
    bool bias;
    double rope_theta;
    pu_rope_scaling rope_scaling_type; /* read from config.json, never assumed */
    double rope_scaling_factor;        /* 1.0 when none */
    char attn_implementation[32];
    char torch_dtype[16];
    /* InternLM2ForRewardModel: the token appended after a conversation whose
     * final hidden state the value head reads (InternLM2: 92527); -1 if the
     * config has none */
    int64_t reward_token_id;
    /* puyu-side facts, not InternLM2Config fields: */
    bool rope_interleaved; /* adjacent-pair RoPE (GGUF / llama2.c weight order) */
} pu_config;

/* Fill the InternLM2Config defaults (the class defaults of the HF code). */
void pu_config_defaults(pu_config *c);
/* Parse config.json text. `path` names the source in errors. Missing required
 * fields, wrong types and inconsistent values (e.g. hidden % heads != 0,
 * bad rope_scaling) are PU_ERR_FORMAT naming the field. */
pu_status pu_config_parse(const char *json_text, size_t len, const char *path, pu_config *out);
pu_status pu_config_load(const char *path, pu_config *out);
/* Longest sequence the model is meant for: max_position_embeddings, times the
 * RoPE scaling factor when config.json declares linear or dynamic scaling. */
int64_t pu_config_ctx_limit(const pu_config *c);
/* Serialise as a config.json (owned string). */
char *pu_config_to_json(const pu_config *c);

/* A borrowed, row-major tensor view. */
typedef struct pu_tensor {
    pu_dtype dtype;
    int ndim;
    int64_t shape[4]; /* shape[0] outermost */
    const void *data;
} pu_tensor;

static inline int64_t pu_tensor_numel(const pu_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return t->ndim ? n : 0;
}

typedef struct pu_layer_weights {
    pu_tensor attn_norm; /* (C) F32 */
    /* Either the fused InternLM2 wqkv in its grouped row layout (spec A.4:
     * Hkv groups of [G query heads, 1 key head, 1 value head], each D rows) ... */
    pu_tensor wqkv; /* ((H + 2 Hkv) D, C)  or data == NULL */
    /* ... or separate projections (GGUF, llama2.c). */
    pu_tensor wq; /* (H D, C) */
    pu_tensor wk; /* (Hkv D, C) */
    pu_tensor wv; /* (Hkv D, C) */
    pu_tensor wo; /* (C, H D) */
    pu_tensor ffn_norm; /* (C) F32 */
    pu_tensor w1;       /* gate (F, C) */
    pu_tensor w3;       /* up   (F, C) */
    pu_tensor w2;       /* down (C, F) */
} pu_layer_weights;

typedef struct pu_weights {
    pu_tensor tok_embeddings; /* (V, C) */
    pu_layer_weights *layers; /* num_hidden_layers */
    pu_tensor norm;           /* (C) F32 */
    pu_tensor output;         /* (V, C); aliases tok_embeddings when tied */
    /* Reward models (architectures ["InternLM2ForRewardModel"]): the value
     * head v_head.weight, owned F32. Such a model has no LM head; `output`
     * then aliases tok_embeddings so code that computes logits stays
     * memory-safe (those logits mean nothing). data NULL for other models. */
    pu_tensor v_head; /* (1, C) */
} pu_weights;

typedef struct pu_model pu_model;

/* Load MODEL: a model directory (HF layout), a .gguf file, or a llama2.c .bin.
 * Returns an owned model or sets the error message (naming file + field). */
pu_status pu_model_load(const char *path, pu_model **out);
void pu_model_destroy(pu_model *m);

/* A model with random weights and no file behind it (benchmarks; training
 * from scratch). Init scheme: every matrix ~ N(0, std²) (uniform with the same
 * std when `uniform`, which is much faster), stored in `dtype`; norm weights
 * 1.0. Deterministic for a seed at any thread count. pool may be NULL. */
pu_status pu_model_init_random(const pu_config *c, pu_dtype dtype, uint64_t seed, float std,
                               bool uniform, pu_pool *pool, pu_model **out);

/* A copy of m with every matrix re-encoded in dtype (ggml's reference
 * quantizers for the block types; F32/F16/BF16 convert); norm weights stay
 * F32. A matrix whose rows do not divide into blocks falls back as
 * llama-quantize does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 when rows
 * divide by 32, else F16). The copy owns its weights; m may be destroyed
 * afterwards. */
pu_status pu_model_quantize(const pu_model *m, pu_dtype dtype, pu_pool *pool, pu_model **out);

/* AWQ calibration (activation-aware per-input-channel scales, llm-awq /
 * LMDeploy auto_awq; src/model/awq_calib.c): an F32 copy of m whose
 * linears' input channels are scaled by s = mean|x|^α (α searched on a grid
 * per group of linears sharing an input, minimizing the output MSE of the
 * group quantized in `dtype` on the calibration tokens), the inverse folded
 * into the preceding norm / linear (the float model computes the same
 * function up to rounding). Quantize the result with pu_model_quantize in
 * the same dtype. report (may be NULL) gets one line per group. */
typedef struct pu_awq_params {
    pu_dtype dtype;   /* the block type the model will be quantized to (default Q4_0) */
    int n_grid;       /* α grid points 0, 1/n, ... (default 20) */
    int64_t max_rows; /* input rows kept per group for the error (default 256) */
    int64_t ctx;      /* calibration window in tokens (default 256) */
} pu_awq_params;
pu_awq_params pu_awq_default_params(void);
pu_status pu_model_awq(const pu_model *m, const int32_t *ids, int64_t n_ids,
                       const pu_awq_params *p, pu_pool *pool, pu_model **out, pu_str *report);

/* Write m as a GGUF v3 file readable by llama.cpp: its tensor names, the
 * fused wqkv split and q/k rows permuted for adjacent-pair RoPE as its
 * converter does (InternLM2 / llama), matrices in their current dtypes, F32
 * norms. tok (may be NULL): a SentencePiece vocabulary written as
 * tokenizer.ggml.*. Atomic (temp + fsync + rename). */
struct pu_tok;
pu_status pu_model_write_gguf(const pu_model *m, const struct pu_tok *tok, const char *path);

const pu_config *pu_model_config(const pu_model *m);
const pu_weights *pu_model_weights(const pu_model *m);
/* "safetensors", "gguf" or "llama2c" */
const char *pu_model_format(const pu_model *m);
/* Path of the model's tokenizer if the model carries or sits beside one
 * (tokenizer.model in the directory, the .gguf itself), else NULL. */
const char *pu_model_tokenizer_path(const pu_model *m);
int64_t pu_model_n_params(const pu_model *m);
/* The pages of [p, p + n) inside a memory-mapped weight file are not needed
 * for now: the kernel may drop them from this process (they are read from
 * the file again if touched). A no-op for memory the model owns (converted
 * tensors, random models). QLoRA calls it after quantizing a tensor. */
void pu_model_drop_pages(const pu_model *m, const void *p, size_t n);
/* bytes of weight data (as stored) */
int64_t pu_model_weight_bytes(const pu_model *m);
/* Human-readable summary for `puyu info` (config, params, dtypes, memory). */
void pu_model_describe(const pu_model *m, int64_t n_ctx, pu_str *out);

/* ------------------------------------------------------------------------ */
/* reward models (HF InternLM2ForRewardModel; src/model/reward.c)           */

/* The InternLM2 reward token (reward_token_id of internlm2-*-reward). */
#define PU_REWARD_TOKEN_INTERNLM2 92527

/* true when the model carries a value head (loaded from an
 * InternLM2ForRewardModel directory; a directory declaring that
 * architecture without v_head.weight fails to load, naming it). */
bool pu_model_is_reward(const pu_model *m);
/* v_head as (1, C) F32, NULL when not a reward model. */
const pu_tensor *pu_model_v_head(const pu_model *m);

typedef struct pu_session pu_session;
typedef struct pu_lora pu_lora; /* pu_lora.h */

/* Reward of a token sequence, as InternLM2ForRewardModel.forward: the
 * session is reset, ids (n, the last one normally the reward token) are
 * evaluated, and *reward = v_head . hidden[n-1] (final-norm output). The
 * caller appends the reward token (pu_rm_tokenize in pu_align.h renders a
 * conversation as HF's get_score does). PU_ERR_INVALID when m is not a
 * reward model; PU_ERR_RANGE as pu_session_eval. */
pu_status pu_model_reward(const pu_model *m, pu_session *s, const int32_t *ids, int64_t n,
                          float *reward);

/* Write an InternLM2ForRewardModel directory: model_dir (an HF InternLM2
 * directory: config.json + model.safetensors or an index + shards) with its
 * LM head dropped and v_head (C floats) added, config.json with
 * architectures ["InternLM2ForRewardModel"], reward_token_id and
 * auto_map.AutoModel set (other fields kept); tokenizer files copied. One
 * model.safetensors (tensors in their stored dtypes, v_head F32), each file
 * written atomically. out_dir may equal model_dir when that holds a single
 * model.safetensors (the training loop saves, then adds the head). */
pu_status pu_model_write_reward_dir(const char *model_dir, const float *v_head, int64_t C,
                                    int64_t reward_token_id, const char *out_dir);

/* ------------------------------------------------------------------------ */
/* inference session                                                        */

/* n_ctx: KV-cache capacity in tokens (<= 0: max_position_embeddings, capped
 * at 4096). pool: borrowed, may be NULL (single thread). F32 KV cache. */
pu_status pu_session_create(const pu_model *m, int64_t n_ctx, pu_pool *pool, pu_session **out);
/* The same with the KV cache stored as kvt (F32, F16, or int8 per (token,
 * head) with scale/zero: pu_kernels.h "KV cache element types"). */
pu_status pu_session_create_ex(const pu_model *m, int64_t n_ctx, pu_kv_type kvt, pu_pool *pool,
                               pu_session **out);
pu_kv_type pu_session_kv_type(const pu_session *s);
/* KV cache bytes per token of context (all layers, keys + values, Q8 scale
 * and zero included): 2 L Hkv (D esize [+ 8 for Q8]). */
int64_t pu_kv_bytes_per_token(const pu_config *c, pu_kv_type t);
void pu_session_destroy(pu_session *s);
void pu_session_reset(pu_session *s);
int64_t pu_session_pos(const pu_session *s); /* tokens in the cache */
/* Drop cached tokens after position pos (0 <= pos <= current): the next eval
 * continues from there. Cheap (no copy); used to score several continuations
 * of one shared prefill. PU_ERR_RANGE if pos is out of range. */
pu_status pu_session_truncate(pu_session *s, int64_t pos);
int64_t pu_session_n_ctx(const pu_session *s);
/* Use a specific kernel table (tests compare SIMD levels); default
 * pu_kernels_get(). Borrowed, must outlive the session. */
void pu_session_set_kernels(pu_session *s, const pu_kernels *k);
/* Apply n LoRA adapters unmerged (pu_lora.h) from the next eval on: after
 * each targeted base matmul y += scales[i] * l[i]->scale * (x A^T) B^T.
 * scales NULL means 1 each; n = 0 removes them. The adapters are borrowed
 * and must outlive their use; the list and scales are copied. Shapes are
 * checked against the model (PU_ERR_INVALID). Does not touch the KV cache:
 * call pu_session_reset when switching adapters mid-conversation. */
pu_status pu_session_set_adapters(pu_session *s, const pu_lora *const *l, const float *scales,
                                  int n);

/* Append n tokens at the current position: one prefill pass with
 * matrix-matrix products for n > 1. logits: NULL, or (n, V) if all_logits,
 * or (V) for the last token. Fails (PU_ERR_RANGE) without changing state on
 * ids outside [0, V) or when pos + n > n_ctx. */
pu_status pu_session_eval(pu_session *s, const int32_t *ids, int64_t n, float *logits,
                          bool all_logits);
/* pu_session_eval that also writes the final hidden states (after the final
 * RMSNorm, the LM head's input) of the n new tokens to hidden (n, C) when
 * hidden is not NULL: embeddings (mean-pooled / last token) and value heads
 * (reward model) read them. */
pu_status pu_session_eval_ex(pu_session *s, const int32_t *ids, int64_t n, float *logits,
                             bool all_logits, float *hidden);

/* ------------------------------------------------------------------------ */
/* batched forward over a paged KV cache (used by the serving engine)       */

/* KV storage in fixed-size blocks: block b, layer l, slot j is row
 * r = (b * L + l) * block_size + j; its key is k[r * kvdim ..] (kvdim =
 * Hkv * D, elements of `type`), same for v; Q8 rows have (scale, zero) at
 * ksz / vsz + (r * Hkv + head) * 2. */
typedef struct pu_kv_pages {
    int64_t block_size, n_blocks, n_layers, kvdim, n_kv_heads;
    pu_kv_type type;
    void *k; /* (n_blocks, L, block_size, kvdim) */
    void *v;
    float *ksz, *vsz; /* Q8: (n_blocks, L, block_size, Hkv, 2); else NULL */
} pu_kv_pages;

/* F32 pages */
pu_status pu_kv_pages_init(pu_kv_pages *kv, const pu_config *c, int64_t n_blocks,
                           int64_t block_size);
pu_status pu_kv_pages_init_ex(pu_kv_pages *kv, const pu_config *c, int64_t n_blocks,
                              int64_t block_size, pu_kv_type type);
void pu_kv_pages_deinit(pu_kv_pages *kv);

/* One sequence's part of a batch: its new tokens occupy positions
 * pos0 .. pos0+n-1 (they are contiguous in the batch), and it attends to
 * positions 0 .. its own position through its block table. */
typedef struct pu_batch_seq {
    const int32_t *blocks; /* block table (>= ceil((pos0+n)/block_size) entries) */
    const int32_t *ids;    /* (n) new token ids */
    int64_t pos0, n;
    bool want_logits; /* logits of the last new token */
    /* unmerged LoRA adapters of this sequence (pu_lora.h), borrowed; n_lora
     * 0 = the base. Effective scale lora_scales[i] * lora[i]->scale
     * (lora_scales NULL: 1 each). Shapes must have been checked
     * (pu_session_set_adapters's rules) by the caller. */
    const pu_lora *const *lora;
    const float *lora_scales;
    int n_lora;
} pu_batch_seq;

typedef struct pu_batch_ws pu_batch_ws; /* scratch sized for max_tokens per call */
pu_status pu_batch_ws_create(const pu_model *m, int64_t max_tokens, pu_batch_ws **out);
void pu_batch_ws_destroy(pu_batch_ws *ws);

/* Run all new tokens of all sequences in one pass (matmuls over every token
 * of the batch at once). logits: (number of seqs with want_logits, V) in seq
 * order. Token ids and positions must have been validated by the caller. */
pu_status pu_model_forward_batch(const pu_model *m, pu_pool *pool, const pu_kernels *k,
                                 pu_kv_pages *kv, pu_batch_ws *ws, const pu_batch_seq *seqs,
                                 int64_t n_seqs, float *logits);

#endif /* PU_MODEL_H */
