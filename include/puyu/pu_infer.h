/*
 * pu_infer.h — sampling and generation on top of pu_session.
 *
 * Owns: pu_sampler (temperature, top-k, top-p, min-p, repetition / presence /
 * frequency penalties, seeded RNG). The batching engine (serve) reuses it per
 * sequence. A sampler is owned by one thread at a time.
 */
#ifndef PU_INFER_H
#define PU_INFER_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"

typedef struct pu_sample_params {
    float temperature;        /* 0 = greedy */
    int64_t top_k;            /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off (HF/CTRL style: divide positive logits) */
    float presence_penalty;   /* 0 = off (OpenAI) */
    float frequency_penalty;  /* 0 = off (OpenAI) */
    uint64_t seed;
} pu_sample_params;

pu_sample_params pu_sample_default_params(void);

typedef struct pu_sampler {
    pu_sample_params p;
    pu_rng rng;
    int64_t n_vocab;
    int32_t *counts;   /* (V) occurrences of each id in the history (penalties) */
    int32_t *idx;      /* (V) scratch */
    float *probs;      /* (V) scratch */
    /* optional constraint, applied to the logits before anything else (e.g.
     * pu_json_constraint_mask_hook: disallowed ids set to -INFINITY) */
    void (*mask_fn)(void *ud, float *logits, int64_t n_vocab);
    void *mask_ud;
} pu_sampler;

pu_status pu_sampler_init(pu_sampler *s, const pu_sample_params *p, int64_t n_vocab);
void pu_sampler_deinit(pu_sampler *s);
/* Record a token of the context/history (for penalties). */
void pu_sampler_accept(pu_sampler *s, int32_t id);
void pu_sampler_reset(pu_sampler *s);
/* Pick the next id from logits (V); logits may be modified in place.
 * If logprob is not NULL it receives log p(id) under the final distribution
 * (the softmax of the raw logits when greedy). */
int32_t pu_sampler_sample(pu_sampler *s, float *logits, float *logprob);

/* Indices of the k largest values of x (n), best first, ties to the lower
 * index, into idx (capacity k); returns min(k, n). O(n·k): for small k. */
int64_t pu_topk(const float *x, int64_t n, int64_t k, int32_t *idx);

/* argmax (lowest index on ties) */
int32_t pu_argmax(const float *x, int64_t n);

#endif
