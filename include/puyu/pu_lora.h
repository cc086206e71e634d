/*
 * pu_lora.h — LoRA adapters in PEFT's file format (model module,
 * src/model/lora.c).
 *
 * An adapted linear W (out, in) computes y = x W^T + scale * (x A^T) B^T with
 * A (r, in) and B (out, r); scale = alpha / r, or alpha / sqrt(r) with
 * use_rslora. Targets are the InternLM2 linears of every layer — wqkv (B's
 * rows in the packed grouped wqkv layout, spec §A.4), wo, w1, w2, w3 — and
 * optionally the LM head `output`.
 *
 * Files (a PEFT adapter directory):
 *   adapter_config.json: peft_type "LORA", task_type "CAUSAL_LM", r,
 *     lora_alpha, lora_dropout, target_modules (list of module names),
 *     use_rslora, base_model_name_or_path (+ PEFT's other keys, ignored on
 *     read);
 *   adapter_model.safetensors: F32 (read: F32/BF16/F16) tensors
 *     base_model.model.model.layers.<i>.attention.wqkv.lora_A.weight  (r, in)
 *     base_model.model.model.layers.<i>.attention.wqkv.lora_B.weight  (out, r)
 *     ... .attention.wo, .feed_forward.w1 / .w2 / .w3,
 *     base_model.model.output.lora_A.weight / lora_B.weight.
 * Reading checks every shape against the base config and that the key set is
 * exactly the one target_modules implies (missing or extra keys, unknown
 * target modules, r <= 0, corrupt JSON: PU_ERR_FORMAT naming file + field).
 */
#ifndef PU_LORA_H
#define PU_LORA_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_model.h"

typedef enum {
    PU_LORA_WQKV = 0,
    PU_LORA_WO = 1,
    PU_LORA_W1 = 2,
    PU_LORA_W2 = 3,
    PU_LORA_W3 = 4,
    PU_LORA_OUTPUT = 5,
    PU_LORA_N_TARGETS = 6,
} pu_lora_target;

#define PU_LORA_DEFAULT_TARGETS                                                            \
    ((1u << PU_LORA_WQKV) | (1u << PU_LORA_WO) | (1u << PU_LORA_W1) | (1u << PU_LORA_W2) | \
     (1u << PU_LORA_W3))

/* "wqkv", "wo", "w1", "w2", "w3", "output" */
const char *pu_lora_target_name(pu_lora_target t);
/* "wqkv,wo,w1" -> bitmask of (1 << target); unknown names are
 * PU_ERR_INVALID naming the name. */
pu_status pu_lora_parse_targets(const char *csv, uint32_t *mask);

typedef struct pu_lora_mat {
    int64_t in, out; /* shape of the adapted base weight (out, in) */
    float *A;        /* (r, in), NULL when the linear is not a target */
    float *B;        /* (out, r) */
} pu_lora_mat;

typedef struct pu_lora {
    int64_t r;
    double alpha, dropout;
    bool use_rslora;
    uint32_t targets;     /* bitmask of pu_lora_target */
    char base_model[256]; /* base_model_name_or_path */
    int64_t n_layers;
    pu_lora_mat *layers; /* (n_layers * 5): layers[l * 5 + t], t < PU_LORA_OUTPUT */
    pu_lora_mat output;
    float scale; /* alpha / r (or / sqrt(r)); callers may multiply (--lora-scale) */
} pu_lora;

/* A zero adapter for base config c (A and B all zero). r > 0, targets != 0. */
pu_status pu_lora_create(const pu_config *c, int64_t r, double alpha, double dropout,
                         bool use_rslora, uint32_t targets, pu_lora **out);
/* PEFT's default init: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in),
 * 1/sqrt(in)), B = 0; each matrix from its own stream of (seed, index). */
void pu_lora_init_peft(pu_lora *l, uint64_t seed);
/* NULL if not targeted; layer is ignored for PU_LORA_OUTPUT */
pu_lora_mat *pu_lora_get(pu_lora *l, int64_t layer, pu_lora_target t);
const pu_lora_mat *pu_lora_get_const(const pu_lora *l, int64_t layer, pu_lora_target t);

pu_status pu_lora_load(const char *dir, const pu_config *base, pu_lora **out);
/* The adapter_config.json half of pu_lora_load on a buffer (path names it in
 * errors): an adapter of zero matrices for the modules the config targets
 * (target_modules as short names, full module paths or a regex string,
 * layers_to_transform honoured, PEFT's matching rules). */
pu_status pu_lora_config_parse(const char *json_text, size_t len, const char *path,
                               const pu_config *base, pu_lora **out);
/* adapter_config.json text for l (owned, pu_free). */
char *pu_lora_config_json(const pu_lora *l);
/* Writes both files atomically (temp + fsync + rename) into dir (created). */
pu_status pu_lora_save(const pu_lora *l, const char *dir);
void pu_lora_destroy(pu_lora *l);

#endif /* PU_LORA_H */
