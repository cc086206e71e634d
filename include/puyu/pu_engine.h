/*
 * pu_engine.h — continuous-batching inference engine (LMDeploy's role).
 *
 * Owns: a paged KV cache (fixed-size blocks, a block table per sequence, no
 * per-request worst-case reservation, reference-counted blocks so identical
 * prompt prefixes share their cached blocks), a scheduler that advances many
 * sequences in one batched forward pass (requests join between steps and
 * leave when done; long prompts are prefilled in chunks so running decodes
 * are not stalled), per-request sampling, stop conditions (EOS ids, stop
 * strings, max tokens) and cancellation that frees blocks at once.
 *
 * Threading: the engine runs its own thread (and a compute pool). The public
 * functions may be called from any thread. Callbacks run on the engine thread:
 * they must be quick and must not call back into the engine except
 * pu_engine_cancel.
 */
#ifndef PU_ENGINE_H
#define PU_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_infer.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

typedef struct pu_engine pu_engine;

typedef struct pu_engine_params {
    int64_t max_batch;      /* max sequences advanced together (default 16) */
    int64_t ctx;            /* max tokens per sequence, prompt + output (default: model limit, capped 4096) */
    int64_t kv_tokens;      /* KV cache capacity in tokens over all sequences (default ctx * 4) */
    int64_t block_size;     /* tokens per KV block (default 16) */
    int64_t prefill_chunk;  /* max prompt tokens prefilled per step (default 256) */
    int n_threads;          /* compute threads (0 = default) */
    bool prefix_sharing;    /* reuse cached blocks of identical prefixes (default true) */
    const pu_model *draft;  /* NULL, or a small model with the same vocabulary: greedy requests
                               (temperature 0, no logprobs) decode speculatively — the draft
                               proposes draft_k tokens, one batched target pass verifies them
                               all; the output is exactly the target's greedy output */
    int draft_k;            /* tokens proposed per step (default 4, at most 8) */
    bool draft_adaptive;    /* per request: start at draft_k, +1 after a step whose drafts were
                               all accepted, -1 (at least 1) after a rejection, at most draft_k */
    pu_kv_type kv_type;     /* KV cache element type of the pages (and of the draft's own
                               session): PU_KV_F32 (default), PU_KV_F16 or PU_KV_Q8 */
} pu_engine_params;

pu_engine_params pu_engine_default_params(void);

typedef enum {
    PU_FINISH_NONE = 0, /* still running */
    PU_FINISH_STOP,     /* EOS id or stop string */
    PU_FINISH_LENGTH,   /* max_tokens reached */
    PU_FINISH_CANCELLED,
    PU_FINISH_ERROR,
} pu_finish_reason;

const char *pu_finish_reason_str(pu_finish_reason r); /* "stop", "length", ... */

/* One event of a request: a new token (with the text it completes — may be
 * empty while UTF-8 or a possible stop string is held back), and/or the end. */
typedef struct pu_engine_event {
    int64_t request_id;
    int32_t token;      /* -1 when the event only reports the end */
    float logprob;      /* log p(token) under the model (log-softmax of the raw logits) when
                           the request asked for logprobs, else under the sampling distribution */
    int n_top;                 /* alternatives below (request's top_logprobs) */
    const int32_t *top_ids;    /* (n_top) most likely ids, best first */
    const float *top_logprobs; /* (n_top) their log-softmax of the raw logits */
    const char *text;   /* bytes completed by this event (not NUL-terminated ... */
    size_t text_len;    /* ... use text_len) */
    pu_finish_reason finish;
    int64_t n_prompt;   /* prompt tokens (prefix-cached ones included) */
    int64_t n_cached;   /* prompt tokens served from shared prefix blocks */
    int64_t n_generated;
    const char *error;  /* message when finish == PU_FINISH_ERROR */
} pu_engine_event;

typedef void (*pu_engine_cb)(const pu_engine_event *ev, void *ud);

typedef struct pu_engine_request {
    const int32_t *prompt; /* borrowed during pu_engine_submit (copied) */
    int64_t n_prompt;
    int64_t max_tokens;      /* <= 0: until the context is full */
    pu_sample_params sample;
    const int32_t *stop_ids; /* extra stop ids (EOS 2 / <|im_end|> are added by default) */
    int n_stop_ids;
    const char *const *stop_strings; /* copied */
    int n_stop_strings;
    bool ignore_eos;
    bool continuation; /* text events continue the prompt's text (completions):
                          the first piece keeps its leading space */
    bool logprobs;    /* report model logprobs (raw log-softmax) in events */
    int top_logprobs; /* 0..20 most likely alternatives per token (implies logprobs) */
    const int32_t *logit_bias_ids; /* OpenAI logit_bias: logit_bias[i] is added to the raw */
    const float *logit_bias;       /* logit of id logit_bias_ids[i] before sampling (and */
    int n_logit_bias;              /* logprobs); copied */
    /* Structured output (pu_json_constraint.h): json_object = the output is
     * one JSON object (OpenAI response_format json_object); json_schema (copied;
     * implies json_object) = an object following the schema subset. A
     * token-level mask each step (every sampling mode); the request ends (stop)
     * once the value is complete and an end token is sampled — the only ids
     * then allowed — even with ignore_eos. Such requests never decode
     * speculatively (the draft path is skipped, so output stays exact). */
    bool json_object;
    const struct pu_json_schema *json_schema;
    /* Constrained tool calls: with json_after set (copied), the constraint of
     * json_schema is off until the generated text ends with json_after
     * (optionally followed by spaces / newlines), on for the JSON value that
     * follows, and off again once it is complete — then only json_end_id
     * (e.g. <|action_end|>) may follow; it can switch on again later. */
    const char *json_after;
    int32_t json_end_id;
    pu_engine_cb cb;
    void *ud;
    /* unmerged LoRA adapters for this request (pu_lora.h; borrowed, must
     * outlive the request; shapes checked at submit); n_lora 0 = the base.
     * Effective scale lora_scales[i] * lora[i]->scale (NULL: 1 each). The
     * prefix cache only shares blocks between requests with the same set. */
    const pu_lora *const *lora;
    const float *lora_scales;
    int n_lora;
} pu_engine_request;

/* tok may be NULL (then no text and no stop strings). Model and tokenizer are
 * borrowed and must outlive the engine. Starts the engine thread. */
pu_status pu_engine_create(const pu_model *m, const pu_tok *tok, const pu_engine_params *p,
                           pu_engine **out);
/* Stops the thread; pending requests finish with PU_FINISH_CANCELLED. */
void pu_engine_destroy(pu_engine *e);

/* Queue a request; returns its id (> 0) in *id. Errors (prompt longer than
 * the context, ids out of range, empty prompt) are returned here, nothing is
 * queued and no callback will run. */
pu_status pu_engine_submit(pu_engine *e, const pu_engine_request *r, int64_t *id);
/* Cancel a request (e.g. client disconnect); its blocks are freed at the next
 * step and its callback receives PU_FINISH_CANCELLED once. Unknown ids are ignored. */
void pu_engine_cancel(pu_engine *e, int64_t id);

typedef struct pu_engine_stats {
    int64_t running, waiting;
    int64_t blocks_total, blocks_free, blocks_cached; /* cached: free but holding a reusable prefix */
    int64_t steps, tokens_generated, tokens_prefilled, tokens_prefix_hit;
    int64_t tokens_drafted, tokens_draft_accepted; /* speculative decoding */
} pu_engine_stats;
void pu_engine_get_stats(pu_engine *e, pu_engine_stats *st);
/* Max tokens per sequence and vocabulary size the engine was built with. */
int64_t pu_engine_ctx(const pu_engine *e);

#endif /* PU_ENGINE_H */
