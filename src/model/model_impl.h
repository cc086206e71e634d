/*
 * model_impl.h — private layout of pu_model, shared by the loaders
 * (load.c, config.c, safetensors.c, gguf.c, llama2c.c) and the forward pass
 * (forward.c). Not a public header.
 */
#ifndef PU_MODEL_IMPL_H
#define PU_MODEL_IMPL_H

#include "puyu/pu_lora.h"
#include "puyu/pu_model.h"

struct pu_model {
    pu_config cfg;
    pu_weights w;
    char *path;           /* as given to pu_model_load */
    char format[16];      /* "safetensors" | "gguf" | "llama2c" */
    char *tokenizer_path; /* owned or NULL */
    pu_mmap *maps;        /* mapped weight files (n_maps) */
    int n_maps;
    void **owned; /* owned buffers (converted / small tensors), n_owned */
    int n_owned;
    int cap_owned;
};

/* Take ownership of a pu_malloc'ed buffer; freed by pu_model_destroy. */
void pu_model_own_(pu_model *m, void *buf);

/* Format loaders: fill m->cfg, m->w, maps/owned. Called by pu_model_load with a
 * zeroed model; on error the caller destroys the partial model. */
pu_status pu_model_load_hf_dir_(pu_model *m, const char *dir);
pu_status pu_model_load_gguf_(pu_model *m, const char *path);
pu_status pu_model_load_llama2c_(pu_model *m, const char *path);

/* Check every weight view against the config (shapes, dtypes, non-NULL data);
 * errors name the tensor. Converts 1-D norm weights to owned F32. */
pu_status pu_model_validate_(pu_model *m, const char *what);

/* ------------------------------------------------------------------------ */
/* unmerged LoRA in the forward pass (lora_apply.c)                         */

typedef struct pu_lora_use {
    const pu_lora *l; /* borrowed */
    float scale;      /* multiplier of l->scale (--lora-scale) */
} pu_lora_use;

/* l's shapes against base config c (errors name `what`). */
pu_status pu_lora_check_base_(const pu_lora *l, const pu_config *c, const char *what);
/* Scratch (floats) the two helpers below need for blocks of `rows` rows. */
void pu_lora_scratch_need_(const pu_config *c, const pu_lora_use *u, int n, int64_t rows,
                           int64_t *nu, int64_t *nz);
/* y (T, out) += sum over adapters of s (x A^T) B^T for target t of layer
 * (ignored for the LM head); x (T, in). Nothing when no adapter has t. */
void pu_lora_add_(pu_pool *pool, const pu_kernels *k, const pu_lora_use *u, int n, int64_t layer,
                  pu_lora_target t, const float *x, int64_t T, float *y, float *su, int64_t cap_u,
                  float *sz, int64_t cap_z);
/* The packed-wqkv adapters of layer added to separate q (T, H D), k and v
 * (T, Hkv D), q/k rows permuted to adjacent-pair order when
 * c->rope_interleaved. */
void pu_lora_add_qkv_split_(pu_pool *pool, const pu_kernels *k, const pu_lora_use *u, int n,
                            int64_t layer, const pu_config *c, const float *x, int64_t T, float *q,
                            float *kk, float *v, float *su, int64_t cap_u, float *sz,
                            int64_t cap_z);
/* dst = src (a 2-D matrix of any dtype) re-encoded row by row in dt
 * (quant_model.c), buffer owned by m; `name` for errors. */
pu_status pu_tensor_requant_(pu_model *m, pu_tensor *dst, const pu_tensor *src, pu_dtype dt,
                             pu_pool *pool, const char *name);

/* llama-quantize's fallback dtype for rows of K elements that do not divide
 * into dt's blocks (quant_model.c); dt itself when they do. */
pu_dtype pu_quant_fallback_(pu_dtype dt, int64_t K);

/* Activation hook of a session (AWQ calibration, awq_calib.c): called in
 * every forward with the input rows x (T, K) of a group of linears of
 * `layer`: PU_ACT_QKV (attention-norm output), PU_ACT_WO (attention output),
 * PU_ACT_FFN (ffn-norm output), PU_ACT_W2 (silu(w1 x) * w3 x). */
enum { PU_ACT_QKV = 0, PU_ACT_WO = 1, PU_ACT_FFN = 2, PU_ACT_W2 = 3, PU_ACT_N = 4 };
typedef void (*pu_act_hook_fn)(void *ud, int64_t layer, int which, const float *x, int64_t T,
                               int64_t K);
void pu_session_set_act_hook_(pu_session *s, pu_act_hook_fn fn, void *ud);
/* prefill of BF16 weights on the BF16 GEMM (forward.c): the level in use
 * (-1: fp32 path), and a test hook forcing one (-1 or unavailable: off) */
int pu_prefill_bf16_level_(void);
int pu_prefill_bf16_auto_level_(void); /* the default: amx / avx512bf16 where available, else -1 */
void pu_prefill_bf16_set_level_(int level);

#endif
