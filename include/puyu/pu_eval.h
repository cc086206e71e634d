/*
 * pu_eval.h — the evaluation harness (OpenCompass's role).
 *
 * Owns: task specs (JSON, not code: dataset file + field mapping, prompt
 * template, few-shot count and source, mode ppl | gen | needle, answer
 * extraction, metric), dataset readers (CSV / JSONL / JSON), prompt
 * building, PPL scoring (one prefill of the shared context, then every option
 * from that state via pu_session_truncate), generation (local session or an
 * OpenAI-compatible HTTP endpoint), answer extraction and metrics,
 * needle-in-a-haystack, and the reports (results.json, results.md,
 * report.html with an SVG heatmap, predictions.jsonl) with per-sample resume.
 *
 * Log-likelihoods are natural-log, summed over the continuation's tokens, in
 * double precision (log-softmax of float32 logits).
 */
#ifndef PU_EVAL_H
#define PU_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

typedef enum { PU_EVAL_PPL = 1, PU_EVAL_GEN = 2, PU_EVAL_NEEDLE = 3 } pu_eval_mode;

typedef enum {
    PU_EVAL_EXTRACT_NONE = 0,   /* the whole output, trimmed */
    PU_EVAL_EXTRACT_CHOICE = 1, /* an option letter A.. */
    PU_EVAL_EXTRACT_NUMBER = 2, /* the last number */
    PU_EVAL_EXTRACT_REGEX = 3,  /* first match of a PCRE2 pattern, capture group g */
} pu_eval_extract_kind;

typedef enum {
    PU_EVAL_METRIC_ACCURACY = 1,    /* prediction == gold (option index / letter) */
    PU_EVAL_METRIC_EXACT_MATCH = 2, /* normalised string / numeric equality */
    PU_EVAL_METRIC_PASS_AT_1 = 3,   /* completion run against the tests in the sandbox */
    PU_EVAL_METRIC_CONTAINS = 4,    /* gold string found in the output (needle) */
} pu_eval_metric;

/* ------------------------------------------------------------------------ */
/* answer extraction + metrics (pure functions)                             */

/* Option letter in text for n options (A..): "The answer is (B)", "答案是C",
 * "Answer: D", a leading "B." / "(C)", else the first standalone letter.
 * Returns the index or -1. */
int pu_eval_extract_choice(const char *text, int n_options);
/* Last number in text ("$1,234.50" -> "1234.5", "-3" -> "-3", "7." -> "7"),
 * normalised into out (cleared first). false when there is none. */
bool pu_eval_extract_last_number(const char *text, pu_str *out);
/* First match of a PCRE2 pattern; out = capture group `group` (0 = whole).
 * *found false when no match. PU_ERR_INVALID on a bad pattern. */
pu_status pu_eval_extract_regex(const char *text, const char *pattern, int group, pu_str *out,
                                bool *found);
/* Normalised comparison used by exact_match: both numbers -> numeric equality
 * (1e-6 relative); else trimmed, case-folded, whitespace-collapsed equality. */
bool pu_eval_answers_match(const char *pred, const char *gold);
/* Numeric normalisation ("1,000.0" -> "1000"); copies s when not a number. */
void pu_eval_normalize_number(const char *s, pu_str *out);

/* ------------------------------------------------------------------------ */
/* PPL scoring and local generation                                         */

/* Log-likelihood of each of n_opt continuations of one context, with ONE
 * prefill of ctx (n_ctx >= 1) and then every option from that state
 * (pu_session_truncate back to n_ctx between options). logliks[i] =
 * sum_j log p(opt_i[j] | ctx, opt_i[<j]). The session is reset first and must
 * hold n_ctx + max(opt_len) - 1 tokens. Empty options get 0. n_vocab: the
 * model's vocab_size (logit rows). */
pu_status pu_eval_score_options(pu_session *s, int64_t n_vocab, const int32_t *ctx, int64_t n_ctx,
                                const int32_t *const *opts, const int64_t *opt_lens, int n_opt,
                                double *logliks);

typedef struct pu_eval_gen_params {
    int64_t max_tokens;       /* > 0 */
    const char *const *stops; /* stop strings (output is cut before the first) */
    int n_stops;
    float temperature; /* 0 = greedy (default) */
    uint64_t seed;
} pu_eval_gen_params;

/* Generate from prompt ids with the session (reset first); stops at
 * max_tokens, EOS / <|im_end|>, or a stop string. out receives the text
 * (cleared first). The prompt must fit: n + max_tokens <= n_ctx of s is not
 * required (generation stops at the context end). */
pu_status pu_eval_generate_local(pu_session *s, int64_t n_vocab, const pu_tok *tok,
                                 const int32_t *prompt, int64_t n, const pu_eval_gen_params *p,
                                 pu_str *out);

/* ------------------------------------------------------------------------ */
/* OpenAI-compatible API over plain HTTP/1.1 sockets (http:// only)         */

/* POST body (JSON) to url; *status = HTTP status; resp = body (de-chunked).
 * Errors (PU_ERR_IO) name the URL. */
pu_status pu_eval_http_post(const char *url, const char *body, size_t len, double timeout_s,
                            int *status, pu_str *resp);

typedef struct pu_eval_api {
    const char *url;   /* http://host:port[/v1[/completions|/chat/completions]] */
    const char *model; /* "model" field (may be NULL) */
    double timeout_s;  /* 0 = 600 */
} pu_eval_api;

/* Generate via /v1/completions (prompt) or /v1/chat/completions (one user
 * message) — chosen by the URL's path; a bare host or /v1 means completions.
 * With ids (completions only; NULL = send the text) the prompt is sent as
 * token ids, so the server scores exactly what a local run would. Sends
 * temperature, max_tokens and stop; applies the stop strings again locally. */
pu_status pu_eval_generate_api(const pu_eval_api *api, const char *prompt, const int32_t *ids,
                               int64_t n_ids, const pu_eval_gen_params *p, pu_str *out);
/* true when url names a /chat/completions endpoint */
bool pu_eval_api_is_chat(const char *url);

/* ------------------------------------------------------------------------ */
/* task specs and datasets                                                  */

typedef struct pu_eval_task pu_eval_task;

/* name_or_path: a built-in task name ("mmlu") or a JSON spec file (a path
 * containing '/' or ending in ".json"). Errors name the file and field. */
pu_status pu_eval_task_load(const char *name_or_path, pu_eval_task **out);
/* Parse spec text; origin names it in errors; base_dir (may be NULL) is where
 * relative dataset paths are tried before the --data directory. */
pu_status pu_eval_task_parse(const char *json, size_t len, const char *origin, const char *base_dir,
                             pu_eval_task **out);
void pu_eval_task_destroy(pu_eval_task *t);
const char *pu_eval_task_name(const pu_eval_task *t);
pu_eval_mode pu_eval_task_mode(const pu_eval_task *t);
int pu_eval_task_shots(const pu_eval_task *t);
/* Built-in specs (embedded copies of the eval/tasks JSON files). */
int pu_eval_builtin_count(void);
const char *pu_eval_builtin_name(int i);
const char *pu_eval_builtin_json(const char *name); /* NULL if unknown */

typedef struct pu_eval_data pu_eval_data;

/* Read the task's dataset under data_dir (or the spec's own directory). */
pu_status pu_eval_data_load(const pu_eval_task *t, const char *data_dir, pu_eval_data **out);
void pu_eval_data_destroy(pu_eval_data *d);
int64_t pu_eval_data_count(const pu_eval_data *d);

/* One evaluation sample, built from the spec. Text mode: context + option
 * continuations (ppl) or a prompt (gen). Id mode ("input": "ids"): token ids
 * straight from the dataset. */
typedef struct pu_eval_sample {
    char *id;
    char *context;  /* ppl: shared context; gen: the prompt */
    char **options; /* ppl: n_options continuations (text mode) */
    int n_options;
    int gold;        /* gold option index (-1 if none) */
    char *gold_text; /* gold answer as text (letter for MCQ) */
    /* id mode */
    int32_t *context_ids;
    int64_t n_context_ids;
    int32_t **option_ids;
    int64_t *option_lens;
    /* pass@1 (code) tasks: the dataset's prompt (the code the completion
     * continues) and the test program run after it (test + check(entry_point)) */
    char *code_prompt;
    char *code_test;
} pu_eval_sample;

/* Build sample i with `shots` few-shot examples (-1 = the task's default). */
pu_status pu_eval_sample_build(const pu_eval_task *t, const pu_eval_data *d, int64_t i, int shots,
                               pu_eval_sample *out);
void pu_eval_sample_free(pu_eval_sample *s);

/* ------------------------------------------------------------------------ */
/* the runner (`puyu eval`)                                                 */

typedef struct pu_eval_opts {
    const char *model_path; /* local model (NULL with api_url) */
    const char *tok_path;   /* tokenizer (default: the model's own) */
    const char *api_url;    /* gen via an OpenAI-compatible server */
    const char *api_model;
    const char *data_dir; /* datasets (built-in specs are relative to it) */
    const char *out_dir;  /* reports + per-sample cache */
    int64_t limit;        /* samples per task (0 = all) */
    int shots;            /* -1 = each task's default */
    int64_t n_ctx;        /* 0 = from the model (capped at 4096) */
    int64_t max_tokens;   /* 0 = each task's default */
    int64_t batch;        /* gen: sequences generated together by the batching engine
                           * (0 = 16; 1 = one at a time on a plain session) */
    bool no_resume;       /* ignore cached per-sample results */
    bool chat;            /* gen prompts as one user turn of the InternLM2 chat template
                           * (chat models; a /chat/completions --api applies its own) */
    bool progress;
    const int64_t *needle_lengths; /* override the needle grid (NULL = spec's) */
    int n_needle_lengths;
    const int64_t *needle_depths; /* percent */
    int n_needle_depths;
    pu_pool *pool; /* borrowed, may be NULL */
    const char *lora; /* "DIR[,DIR2]" PEFT adapters applied unmerged to the model (NULL: none) */
    double lora_scale; /* multiplier of every adapter's alpha/r (0 is taken as 1) */
    double exec_timeout_s; /* pass@1: seconds per sample in the sandbox (0 = 10) */
    pu_kv_type kv_type;    /* KV cache of the local model's session and engine (0 = F32) */
} pu_eval_opts;

/* pass@1 of one completion: prompt + completion (or the code of a ```python
 * block in it) + test run with python3 in the sandbox (pu_sandbox.h);
 * *passed when it exits 0 in time. detail: "passed", "failed: <last stderr
 * line>", "timed out". PU_ERR_UNSUPPORTED when the sandbox cannot be built. */
pu_status pu_eval_exec_code(const char *prompt, const char *completion, const char *test,
                            double timeout_s, bool *passed, pu_str *detail);

/* Run the tasks, write out_dir/{results.json,results.md,report.html,
 * predictions.jsonl} (+ needle_<task>.svg), and append the Markdown table to
 * md (may be NULL). */
pu_status pu_eval_run(const pu_eval_opts *o, const char *const *tasks, int n_tasks, pu_str *md);

/* The needle heatmap as an SVG document: scores (n_depths x n_lengths, in
 * [0,1], NaN = not run), rows = depths (%), columns = lengths (tokens). */
void pu_eval_heatmap_svg(const char *title, const int64_t *lengths, int n_lengths,
                         const int64_t *depths, int n_depths, const double *scores, pu_str *out);

#endif /* PU_EVAL_H */
