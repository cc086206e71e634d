/*
 * pu_sft.h — supervised fine-tuning data: chat records (OpenAI `messages`,
 * XTuner's legacy `conversation`, alpaca, ShareGPT `conversations`) read from
 * JSONL or JSON-array files, rendered and tokenized exactly as XTuner does
 * for InternLM2, with per-token loss labels, and batched (padded or packed)
 * for the training model (pu_tbatch in pu_train.h).
 *
 * Rendering of one record (the contract `puyu sft`, `puyu dpo` and `puyu rm`
 * share; tests check it id for id):
 *   [BOS] turn_0 enc("\n") turn_1 enc("\n") ... turn_{n-1}
 *   turn = <|im_start|> enc(role [" name=" name] "\n") enc(content) <|im_end|>
 * Each text segment is encoded on its own (parse_special on, no BOS); the
 * special tokens <|im_start|> / <|im_end|> are looked up by their strings in
 * the tokenizer (pu_tok_special_id), so any vocabulary with those specials
 * works. Assistant tool calls are rendered after the content as in pu_chat.h
 * (<|action_start|><|plugin|>\n{json}<|action_end|>), roles tool/function
 * become environment with name=<|plugin|> (spec §B.3-B.4).
 * Labels: the tokens of each scored message's content (tool calls included)
 * and its <|im_end|>; every other token is PU_IGNORE_INDEX (-100). A message
 * is scored when its "loss" (or "loss_weight" > 0) says so; by default
 * assistant messages are scored and the others are not.
 *
 * Shift: labels are aligned with ids (HF/XTuner convention). The trainer
 * predicts ids[t+1] at position t when labels[t+1] >= 0: targets[t] =
 * labels[t+1], targets[T-1] = -100.
 */
#ifndef PU_SFT_H
#define PU_SFT_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_chat.h"
#include "puyu/pu_core.h"
#include "puyu/pu_tok.h"

/* One conversation. msgs.msgs[i] are the turns in order (roles normalised:
 * system, user, assistant, environment; name kept), loss[i] is 1 when turn i
 * is scored, else 0. */
typedef struct pu_sft_record {
    pu_chat msgs;
    uint8_t *loss; /* (msgs.n) owned */
} pu_sft_record;

void pu_sft_record_free(pu_sft_record *r);

/* Parse one JSON record (any of the supported kinds) into r. `where` names
 * the source in errors ("file.jsonl:12"); errors name the field
 * ("messages[2].role: unknown role \"bot\""). Empty assistant content,
 * unknown roles, missing fields are PU_ERR_FORMAT. vars: NULL or a
 * NULL-terminated list of "key=value" strings; every "{{key}}" in a content
 * is replaced by value (identity.json's {{name}} / {{author}}). */
pu_status pu_sft_record_parse(const char *json_text, size_t len, const char *where,
                              const char *const *vars, pu_sft_record *r);

/* Preference records (prompt + chosen / rejected) are read by pref_data.c
 * (pu_align.h: pu_pref_record_parse, pu_pref_conversation, pu_pref_tokenize). */

/* A tokenized sample: ids (n) and labels (n), labels[i] = ids[i] or -100. */
typedef struct pu_sft_tokens {
    int32_t *ids;
    int32_t *labels;
    int64_t n;
} pu_sft_tokens;

void pu_sft_tokens_free(pu_sft_tokens *s);

/* The id of a chat special token by its text ("<|im_end|>"): a registered
 * special (pu_tok_special_id), else a USER_DEFINED or CONTROL piece with
 * exactly that text (a SentencePiece model trained with the specials as
 * user_defined_symbols); -1 if absent. */
int32_t pu_sft_special_id(const pu_tok *t, const char *text);

/* Render + tokenize a record as described above (never truncates).
 * PU_ERR_FORMAT when the tokenizer lacks <|im_start|> / <|im_end|>. */
pu_status pu_sft_tokenize(const pu_tok *t, const pu_sft_record *r, pu_sft_tokens *out);

typedef struct pu_sft_load_opts {
    int64_t seq;             /* samples longer than seq tokens are cut to seq */
    bool skip_bad;           /* skip (and count) bad records instead of failing */
    const char *const *vars; /* template variables, as pu_sft_record_parse */
    pu_pool *pool;           /* tokenization threads; NULL: inline */
} pu_sft_load_opts;

/* A dataset: every record of every file, tokenized, in file order. */
typedef struct pu_sft_data pu_sft_data;

/* paths: n_paths files; each is JSONL (one record a line, blank lines
 * allowed) or one JSON array of records. Errors name file:line (JSONL) or
 * file:[index] (array) and the field. A record with no scored token after
 * the cut is bad too (nothing to learn from). */
pu_status pu_sft_data_load(const char *const *paths, int n_paths, const pu_tok *t,
                           const pu_sft_load_opts *o, pu_sft_data **out);
void pu_sft_data_destroy(pu_sft_data *d);
int64_t pu_sft_data_n(const pu_sft_data *d);           /* samples kept */
int64_t pu_sft_data_n_skipped(const pu_sft_data *d);   /* bad records skipped */
int64_t pu_sft_data_n_truncated(const pu_sft_data *d); /* samples cut to seq */
const pu_sft_tokens *pu_sft_data_get(const pu_sft_data *d, int64_t i);

/* Batches. A "row" is what one batch row holds: one sample (unpacked), or a
 * greedy concatenation of consecutive samples (in sample order) up to seq
 * tokens (packed; a sample that does not fit starts a new row). Batch k
 * (0-based) holds rows order[(k*B + j) % n_rows], j < B, where order is the
 * identity (shuffle false: file order, wrapping) or, for epoch e = k*B /
 * n_rows, a permutation drawn from (seed, e) — deterministic and resumable
 * from k alone.
 * Output arrays are (B, T) with T = the longest row of the batch (<= seq);
 * shorter rows are padded with id 0, target -100, pos 0, their own seg.
 * targets follow the shift rule above; pos restarts at 0 and seg changes at
 * every sample boundary inside a packed row (no attention across samples).
 * The caller gives arrays of B*seq entries. n_targets: counted targets. */
typedef struct pu_sft_batcher pu_sft_batcher;
pu_status pu_sft_batcher_create(const pu_sft_data *d, int64_t seq, bool pack, bool shuffle,
                                uint64_t seed, pu_sft_batcher **out);
void pu_sft_batcher_destroy(pu_sft_batcher *b);
int64_t pu_sft_batcher_n_rows(const pu_sft_batcher *b);
void pu_sft_batch(const pu_sft_batcher *b, int64_t k, int64_t B, int32_t *ids, int32_t *targets,
                  int32_t *pos, int32_t *seg, int64_t *T, int64_t *n_targets);

/* Rows first .. first+B-1 of the (shuffled) row sequence, as pu_sft_batch
 * (pu_sft_batch(b, k, B, ...) == pu_sft_batch_at(b, k*B, B, ...)). */
void pu_sft_batch_at(const pu_sft_batcher *b, int64_t first, int64_t B, int32_t *ids,
                     int32_t *targets, int32_t *pos, int32_t *seg, int64_t *T, int64_t *n_targets);
/* T of batch k (its longest row) without filling anything. */
int64_t pu_sft_batch_len(const pu_sft_batcher *b, int64_t k, int64_t B);
/* the longest row (<= seq) */
int64_t pu_sft_batcher_max_len(const pu_sft_batcher *b);

/* ------------------------------------------------------------------------ */
/* full-parameter SFT (puyu sft): the training loop of `puyu train` (AdamW,
 * warmup + cosine, clipping, grad accumulation, checkpoints, bit-exact
 * resume, metrics) on batches of the SFT batcher. Batch k of step k+1 holds
 * rows k*B .. k*B+B-1 of the row order; the metrics line of step k+1 has the
 * mean cross-entropy over all targets of that batch before the update. The
 * trained model goes to OUT/final/ (a model directory with the tokenizer). */

#include "puyu/pu_train.h"

typedef struct pu_sft_opts {
    /* out_dir, metrics_path, steps, batch, seq (the cut and the row length),
     * grad_accum, warmup, lr, min_lr, adam, seed (data order), eval_every,
     * save_every, keep, resume, quiet, kill_at; config_path / init_dir /
     * data_dir / seq_schedule / eval_batches are not used */
    pu_train_opts train;
    const char *base_dir;    /* -m: the model to fine-tune */
    const char *tok_path;    /* -t: NULL = the model's tokenizer */
    const char *const *data; /* training files */
    int n_data;
    const char *const *eval_data; /* held-out files (val_loss lines), or NULL */
    int n_eval;
    const char *const *vars; /* "key=value" template variables, NULL-terminated */
    bool shuffle;            /* seeded per-epoch shuffle (default) */
    bool pack;               /* pack samples into rows of seq tokens */
    bool skip_bad;           /* skip and count bad records */
    /* LoRA (--lora): only adapters train, the base stays memory-mapped
     * (pu_tmodel_opts.freeze_base); OUT/final/ and checkpoints hold the
     * adapter as a PEFT directory (+ the optimizer state in checkpoints). */
    bool lora;
    bool qlora;            /* --qlora: LoRA over an NF4 base (implies lora, recompute) */
    bool recompute;        /* activation checkpointing */
    int64_t lora_r;        /* 8 */
    double lora_alpha;     /* 16 */
    double lora_dropout;   /* 0.05 */
    bool lora_rslora;      /* scale alpha / sqrt(r) */
    uint32_t lora_targets; /* PU_LORA_DEFAULT_TARGETS */
    const char *lora_init; /* start from this adapter directory (its r, alpha, targets,
                              rslora), or NULL: PEFT init */
} pu_sft_opts;

void pu_sft_opts_default(pu_sft_opts *o);
pu_status pu_sft_run(const pu_sft_opts *o, pu_pool *pool);

#endif /* PU_SFT_H */
