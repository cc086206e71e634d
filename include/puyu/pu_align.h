/*
 * pu_align.h — alignment (InternLM2's COOL RLHF): the loss math of the reward
 * model, DPO (+ SimPO, ORPO) and PPO as pure functions with forward and
 * backward, and preference data (prompt + chosen / rejected responses).
 *
 * The losses take what a training model produces (rewards, summed or
 * per-token response log-probabilities, values, logits) and return the loss,
 * its metrics and the gradient of the loss with respect to those inputs; the
 * training loops (`puyu rm train`, `puyu dpo`, `puyu ppo`) push the gradient
 * through the model. Inputs and gradients are float; every reduction runs in
 * double. Each function is written to equal the PyTorch formula cited beside
 * it, autograd semantics included (torch.clamp passes the gradient only
 * inside [lo, hi], torch.minimum/maximum split it in half on ties); the
 * reference is tools/gen_align_ref.py and tests/test_align.c compares.
 *
 * Gradient pointers may be NULL (forward only). Gradients are written, not
 * accumulated (except pu_value_head_bwd's parameter gradient). The loss
 * functions do not allocate and are thread-safe on distinct buffers.
 *
 * Also here: preference data (pu_pref_*: records of four kinds, COOL
 * condition prompts, files, tokenized pairs) and the reward-model input
 * (pu_rm_tokenize / pu_rm_parse_input). The reward-model file format and
 * scoring live in the model module (pu_model.h: pu_model_reward,
 * pu_model_write_reward_dir).
 */
#ifndef PU_ALIGN_H
#define PU_ALIGN_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_sft.h"

/* ------------------------------------------------------------------------ */
/* reward model (XTuner xtuner/model/reward.py, InternLM2 report §4.2)       */

typedef enum { PU_RM_LOSS_FOCAL = 0, PU_RM_LOSS_RANKING = 1 } pu_rm_loss_kind;
typedef enum {
    PU_RM_PENALTY_LOG_BARRIER = 0,
    PU_RM_PENALTY_L2 = 1,
    PU_RM_PENALTY_NONE = 2,
} pu_rm_penalty_kind;

typedef struct pu_rm_loss_opts {
    pu_rm_loss_kind loss;       /* default focal */
    pu_rm_penalty_kind penalty; /* default log_barrier */
    double penalty_weight;      /* W, default 0.01 */
} pu_rm_loss_opts;
pu_rm_loss_opts pu_rm_loss_default_opts(void);

typedef struct pu_rm_metrics {
    double loss;     /* rank + W * penalty */
    double rank;     /* focal or ranking term */
    double penalty;  /* penalty term (before W) */
    double accuracy; /* fraction of pairs with r_chosen > r_rejected */
    double chosen;   /* mean chosen reward */
    double rejected; /* mean rejected reward */
} pu_rm_metrics;

/* N pairs: chosen[i], rejected[i] (the rewards at the reward token).
 * d = r_c - r_r;
 *   ranking = sum(-logsigmoid(d)) / N
 *   focal   = sum((1 - 2 relu(sigmoid(d) - 1/2))^2 * -logsigmoid(d)) / N
 *             (the weight is differentiated, not detached, as XTuner)
 * penalty over all 2N rewards r:
 *   log_barrier: c = clamp(r, -5 + 1e-3, 5 - 1e-3), sum(-log(5 - c) - log(c + 5)) / N
 *   l2:          sum(r^2) / N
 * loss = rank + W * penalty. d_chosen / d_rejected (N): d loss / d reward.
 * PU_ERR_INVALID for N < 1 or a non-finite reward (named by index). */
pu_status pu_rm_loss(const float *chosen, const float *rejected, int64_t N,
                     const pu_rm_loss_opts *o, pu_rm_metrics *m, float *d_chosen,
                     float *d_rejected);

/* The value head (reward model; PPO critic): out[i] = v . h[i] for N rows
 * h (N, C). Backward: dv (C) += sum_i dout[i] h[i] (accumulated, the
 * parameter-gradient convention of the training model); dh (N, C) =
 * dout[i] v (written; NULL to skip). */
void pu_value_head_fwd(const float *v, const float *h, int64_t N, int64_t C, float *out);
void pu_value_head_bwd(const float *v, const float *h, const float *dout, int64_t N, int64_t C,
                       float *dv, float *dh);

/* ------------------------------------------------------------------------ */
/* DPO (Rafailov et al.; XTuner xtuner/model/dpo.py, loss_type "sigmoid")   */

typedef struct pu_pref_metrics {
    double loss;
    double accuracy; /* fraction of pairs with reward_chosen > reward_rejected */
    double margin;   /* mean(reward_chosen - reward_rejected) */
    double chosen;   /* mean reward_chosen */
    double rejected; /* mean reward_rejected */
} pu_pref_metrics;

typedef struct pu_dpo_opts {
    double beta;            /* default 0.1 */
    double label_smoothing; /* conservative DPO (cDPO) epsilon, default 0 */
} pu_dpo_opts;
pu_dpo_opts pu_dpo_default_opts(void);

/* N pairs of summed response log-probabilities (policy pc, pr; reference
 * rc, rr). z = beta * ((pc - pr) - (rc - rr));
 *   loss = mean(-(1 - ls) logsigmoid(z) - ls logsigmoid(-z))
 * rewards: chosen = beta (pc - rc), rejected = beta (pr - rr).
 * d_pc, d_pr (N): d loss / d policy logps (the reference is frozen). */
pu_status pu_dpo_loss(const float *pc, const float *pr, const float *rc, const float *rr, int64_t N,
                      const pu_dpo_opts *o, pu_pref_metrics *m, float *d_pc, float *d_pr);

/* SimPO (Meng et al. 2024), reference-free: with average log-probabilities
 * a = logp / n_tokens, z = beta (a_c - a_r) - gamma;
 *   loss = mean(-logsigmoid(z))   rewards: beta * a.
 * nc, nr: response token counts (> 0). Gradients wrt the summed logps. */
pu_status pu_simpo_loss(const float *pc, const float *pr, const int64_t *nc, const int64_t *nr,
                        int64_t N, double beta, double gamma, pu_pref_metrics *m, float *d_pc,
                        float *d_pr);

/* ORPO (Hong et al. 2024), reference-free, the odds-ratio term only (the SFT
 * NLL of the chosen response is the trainer's ordinary loss, added by it):
 * a = logp / n_tokens (< 0), log_odds = (a_c - a_r) - (log1p(-exp a_c) -
 * log1p(-exp a_r)); loss = mean(-lambda logsigmoid(log_odds)).
 * rewards: lambda * a (as TRL, whose beta is lambda). Gradients wrt the
 * summed logps. PU_ERR_INVALID when some a >= 0 (odds undefined). */
pu_status pu_orpo_loss(const float *pc, const float *pr, const int64_t *nc, const int64_t *nr,
                       int64_t N, double lambda, pu_pref_metrics *m, float *d_pc, float *d_pr);

/* ------------------------------------------------------------------------ */
/* PPO (Schulman et al.; the OpenRLHF / TRL formulation)                     */
/*
 * Per-token arrays are (B, T) over the response tokens, row-major, with a
 * mask (B, T) of 1 for response tokens and 0 for padding; padding is on the
 * right (a row is 1...1 0...0; an all-zero row is an empty response).
 * "Masked mean" = sum(x * mask) / sum(mask) over the whole batch (TRL).
 */

/* rewards[b,t] = -kl_coef (logp - ref_logp)[b,t] * mask[b,t], plus score[b]
 * at the last response token of row b (none for an all-masked row).
 * kl (B): per-row sum of (logp - ref_logp) over the response (the KL
 * estimate k1), may be NULL. */
void pu_ppo_kl_rewards(const float *logp, const float *ref_logp, const float *mask,
                       const float *score, int64_t B, int64_t T, double kl_coef, float *rewards,
                       float *kl);

/* GAE (OpenRLHF get_advantages_and_returns): values and rewards are
 * multiplied by mask, then for t = T-1 .. 0:
 *   delta_t = r_t + gamma V_{t+1} - V_t   (V_T = 0)
 *   A_t = delta_t + gamma lambda A_{t+1}  returns_t = A_t + V_t
 * With right padding both are 0 on padding. */
void pu_ppo_gae(const float *values, const float *rewards, const float *mask, int64_t B, int64_t T,
                double gamma, double lambda, float *advantages, float *returns);

/* In place: x = (x - masked_mean) / sqrt(masked_var + 1e-8) with the
 * unbiased (Bessel-corrected) masked variance (TRL whiten, shift_mean);
 * masked positions become 0. Fewer than 2 valid tokens: only centred. */
void pu_ppo_whiten(float *x, const float *mask, int64_t n);
/* In place, OpenRLHF's advantage normalisation (ReplayBuffer.normalize,
 * "advantages"): mean = sum(x mask) / sum(mask), var = sum((x - mean)^2
 * mask) / sum(mask) (biased), x = (x - mean) * rsqrt(max(var, 1e-8)) at
 * every position (masked ones too; the losses ignore them). No valid token:
 * x unchanged. */
void pu_ppo_whiten_openrlhf(float *x, const float *mask, int64_t n);

typedef struct pu_ppo_metrics {
    double loss;
    double clipfrac;  /* fraction of valid tokens where the clipped branch is taken */
    double approx_kl; /* masked mean of 0.5 (logp - old_logp)^2 */
    double ratio;     /* masked mean of exp(logp - old_logp) */
} pu_ppo_metrics;

/* Clipped policy loss: ratio = exp(logp - old_logp),
 *   loss = masked_mean(-min(ratio A, clamp(ratio, 1-eps, 1+eps) A))
 * d_logp (B*T): d loss / d logp (0 on padding). n = B*T. PU_ERR_INVALID
 * when no token is valid. */
pu_status pu_ppo_policy_loss(const float *logp, const float *old_logp, const float *adv,
                             const float *mask, int64_t n, double clip_eps, pu_ppo_metrics *m,
                             float *d_logp);

/* Clipped value loss (TRL): vc = old_v + clamp(v - old_v, -clip, clip),
 *   loss = 0.5 masked_mean(max((v - R)^2, (vc - R)^2))
 * clip <= 0: unclipped 0.5 masked_mean((v - R)^2). d_values (n).
 * clipfrac in *clipfrac (NULL ok): fraction where the clipped term is larger. */
pu_status pu_ppo_value_loss(const float *values, const float *old_values, const float *returns,
                            const float *mask, int64_t n, double clip, double *loss,
                            double *clipfrac, float *d_values);

/* Entropy of softmax(logits) per row (N rows of V): H = lse - sum p z.
 * entropy (N). */
void pu_entropy_fwd(const float *logits, int64_t N, int64_t V, float *entropy);
/* d_logits[r, j] = d_entropy[r] * -p_j (z_j - sum_k p_k z_k) (written). */
void pu_entropy_bwd(const float *logits, const float *d_entropy, int64_t N, int64_t V,
                    float *d_logits);

/* ------------------------------------------------------------------------ */
/* preference data                                                          */
/*
 * One preference record = a prompt (turns) + a chosen and a rejected
 * assistant response. Record kinds read (one JSON object each):
 *   XTuner       {"prompt": [messages] | "text", "chosen": [messages] | "text",
 *                 "rejected": [messages] | "text"}; messages are
 *                {"role", "content"}; a response array holds exactly one
 *                assistant message; "messages" (OpenAI) is read as "prompt", and
 *                a response may also be one message object.
 *   ShareGPT     {"conversations": [{"from", "value"}], "chosen": {"from":
 *                "gpt", "value"}, "rejected": {...}, ["system": "text"]}
 *                (from: human/user, gpt/assistant, system,
 *                observation/tool/function -> environment name=<|plugin|>)
 *   alpaca RM    {"instruction", "input", "output": [chosen, rejected, ...],
 *                ["history": [[query, answer], ...]], ["system"]} (output[0]
 *                is preferred over output[1], as LLaMA-Factory reads ranked
 *                lists); also "chosen"/"rejected" strings instead of output.
 *                The user turn is instruction + "\n" + input (input if any).
 *   hh-rlhf      {"chosen": "\n\nHuman: ... \n\nAssistant: ...", "rejected":
 *                "..."}: full transcripts split at "\n\nHuman:" and
 *                "\n\nAssistant:" into turns (content trimmed of surrounding
 *                whitespace); the final turn of each must be an assistant
 *                turn, and the turns before it (the prompt) must be equal.
 * Optional "condition" (any kind): a name of the conditions table (see
 * pu_pref_conditions) or a system prompt text; it becomes the first turn
 * (role system), before the record's own system turns (COOL's conditional
 * reward). A single lower-case word that is not a known name is an error
 * (a typo must not become a system prompt).
 * Bad records (PU_ERR_FORMAT, naming `where` and the field): malformed
 * JSON, missing/mistyped fields, unknown roles, an empty response, chosen
 * equal to rejected, a prompt without turns or ending with an assistant turn.
 */

/* Condition name -> system prompt text. Thread-safe to read. */
typedef struct pu_pref_conditions pu_pref_conditions;
/* The built-in table, the same as data/rm_conditions.json (helpful, harmless,
 * code, math, format, honest, creative). Owned by the caller. */
pu_status pu_pref_conditions_default(pu_pref_conditions **out);
/* A file {"conditions": {"name": "text", ...}} (other keys ignored). */
pu_status pu_pref_conditions_load(const char *path, pu_pref_conditions **out);
void pu_pref_conditions_destroy(pu_pref_conditions *c);
int pu_pref_conditions_n(const pu_pref_conditions *c);
/* i-th name / text (file order), borrowed */
const char *pu_pref_conditions_name(const pu_pref_conditions *c, int i);
const char *pu_pref_conditions_text(const pu_pref_conditions *c, int i);
/* text of a name, NULL if absent */
const char *pu_pref_condition_lookup(const pu_pref_conditions *c, const char *name);

typedef struct pu_pref_record {
    pu_sft_record prompt; /* the prompt turns (condition first); none scored */
    char *chosen;         /* content of the preferred assistant response (owned) */
    char *rejected;       /* content of the other one (owned) */
} pu_pref_record;

void pu_pref_record_free(pu_pref_record *r);

typedef struct pu_pref_parse_opts {
    const pu_pref_conditions *conditions; /* NULL: no names, "condition" is text */
    const char *default_condition;        /* name or text for records without one; NULL */
} pu_pref_parse_opts;

/* Parse one record (any kind above). where: "file.jsonl:12" for errors. */
pu_status pu_pref_record_parse(const char *json_text, size_t len, const char *where,
                               const pu_pref_parse_opts *o, pu_pref_record *r);

/* The full conversation of one side: the prompt turns + the response as the
 * final assistant turn, the only scored one (which: 0 chosen, 1 rejected).
 * *out is owned (free with pu_sft_record_free). */
pu_status pu_pref_conversation(const pu_pref_record *r, int which, pu_sft_record *out);

/* A tokenized pair, rendered and tokenized exactly as `puyu sft` does
 * (pu_sft_tokenize): chosen / rejected = the prompt turns + the response as
 * the final assistant turn; labels = the response content + <|im_end|>
 * (-100 elsewhere, aligned with ids as pu_sft.h says). ids[0, n_prompt)
 * (BOS, prompt turns, "<|im_start|>" enc("assistant\n")) are equal in
 * both; the response is ids[n_prompt, n). DPO's logp(response) is the sum
 * of log p(ids[t] | ids[<t]) over t >= n_prompt. */
typedef struct pu_pref_tokens {
    pu_sft_tokens chosen, rejected;
    int64_t n_prompt;
} pu_pref_tokens;

pu_status pu_pref_tokenize(const pu_tok *t, const pu_pref_record *r, pu_pref_tokens *out);
void pu_pref_tokens_free(pu_pref_tokens *p);

typedef struct pu_pref_load_opts {
    pu_pref_parse_opts parse;
    bool skip_bad; /* count and skip bad records instead of failing */
} pu_pref_load_opts;

/* A preference data set: every record of every file, in file order. */
typedef struct pu_pref_data pu_pref_data;

/* Each path is JSONL (one record a line, blank lines allowed) or one JSON
 * array of records, optionally gzip-compressed (detected by content).
 * Errors read "FILE:LINE: field: message" (LINE: the line where the record
 * starts, arrays included). With skip_bad, bad records are counted (and
 * the first few logged as warnings); an I/O error still fails. */
pu_status pu_pref_data_load(const char *const *paths, int n_paths, const pu_pref_load_opts *o,
                            pu_pref_data **out);
void pu_pref_data_destroy(pu_pref_data *d);
int64_t pu_pref_data_n(const pu_pref_data *d);         /* records kept */
int64_t pu_pref_data_n_skipped(const pu_pref_data *d); /* bad records skipped */
const pu_pref_record *pu_pref_data_get(const pu_pref_data *d, int64_t i);
const char *pu_pref_data_where(const pu_pref_data *d, int64_t i); /* "FILE:LINE" */

/* ------------------------------------------------------------------------ */
/* reward-model input (src/train/rm.c)                                       */

/* Token ids a reward model scores, built as HF InternLM2ForRewardModel's
 * get_score() and XTuner's reward dataset build them: the conversation
 * rendered by the InternLM2 chat template (pu_chat_render, no generation
 * prompt: "<|im_start|>role\ncontent<|im_end|>\n" per turn), encoded as one
 * text with BOS (special tokens parsed), then reward_token appended. (This
 * is one whole-text encoding, unlike pu_sft_tokenize's per-segment one; the
 * reward models are trained and scored on this form.) *ids owned. */
pu_status pu_rm_tokenize(const pu_tok *t, const pu_chat *conv, int32_t reward_token, int32_t **ids,
                         int64_t *n);

/* One input line of `puyu rm score`: a conversation {"messages": [...],
 * ["condition"]} (OpenAI messages; the condition becomes the first system
 * turn as in pu_pref_record_parse) -> *n_conv = 1, or any preference record
 * -> *n_conv = 2 (conv[0] = prompt + chosen, conv[1] = prompt + rejected).
 * conv[] are initialised here and owned by the caller (pu_chat_free). */
pu_status pu_rm_parse_input(const char *json_text, size_t len, const char *where,
                            const pu_pref_parse_opts *o, pu_chat conv[2], int *n_conv);

/* ------------------------------------------------------------------------ */
/* reward-model training (puyu rm train; src/train/rm_train.c)              */

typedef struct pu_rm_train_opts {
    /* out_dir, metrics_path, steps, batch (PAIRS per step), seq (the longest
     * pair side), grad_accum (must divide batch), warmup, lr, min_lr, adam,
     * seed (data order, LoRA init), eval_every, save_every, keep, resume,
     * quiet, kill_at */
    pu_train_opts train;
    const char *base_dir, *tok_path;
    const char *const *data;
    int n_data;
    const char *const *eval_data; /* held-out pairs (val_loss, val_accuracy) or NULL */
    int n_eval;
    bool shuffle, skip_bad;
    pu_rm_loss_opts loss;
    bool head_normal;     /* v_head ~ N(0, 1/(C+1)) (HF nn.Linear-like) instead of zeros */
    int64_t reward_token; /* -1: the base's reward_token_id, else 92527 */
    bool lora, recompute;
    int64_t lora_r;
    double lora_alpha, lora_dropout;
    bool lora_rslora;
    uint32_t lora_targets;
    const char *condition; /* default condition for records without one */
} pu_rm_train_opts;

void pu_rm_train_opts_default(pu_rm_train_opts *o);
/* Train a reward model: the base body + v_head (1, C) over pairs rendered
 * as pu_rm_tokenize renders them; OUT/final/ = an InternLM2ForRewardModel
 * directory (with --lora the adapter merged into the body, F32). */
pu_status pu_rm_train_run(const pu_rm_train_opts *o, pu_pool *pool);

/* ------------------------------------------------------------------------ */
/* DPO training (puyu dpo; src/train/dpo.c)                                  */

typedef enum { PU_DPO_SIGMOID = 0, PU_DPO_SIMPO = 1, PU_DPO_ORPO = 2 } pu_dpo_kind;

typedef struct pu_dpo_train_opts {
    /* as pu_rm_train_opts.train: batch = PAIRS per step, seq = the longest side */
    pu_train_opts train;
    const char *policy_dir, *ref_dir, *tok_path; /* ref_dir NULL: the initial policy */
    const char *const *data;
    int n_data;
    const char *const *eval_data;
    int n_eval;
    bool shuffle, skip_bad;
    pu_dpo_kind kind;
    double beta;        /* 0.1 */
    double simpo_gamma; /* 0.5 */
    double orpo_lambda; /* 0.1 */
    double label_smoothing;
    bool lora, recompute;
    int64_t lora_r;
    double lora_alpha, lora_dropout;
    bool lora_rslora;
    uint32_t lora_targets;
    const char *condition;
} pu_dpo_train_opts;

void pu_dpo_train_opts_default(pu_dpo_train_opts *o);
/* DPO / SimPO / ORPO on preference pairs; OUT/final/ as `puyu sft` writes it
 * (the model, or with --lora the PEFT adapter). */
pu_status pu_dpo_train_run(const pu_dpo_train_opts *o, pu_pool *pool);

/* ------------------------------------------------------------------------ */
/* PPO training (puyu ppo; src/train/ppo.c)                                  */

typedef enum { PU_WHITEN_OPENRLHF = 0, PU_WHITEN_TRL = 1, PU_WHITEN_NONE = 2 } pu_whiten_kind;

/* The experience -> advantages sequence `puyu ppo` runs on a rollout batch:
 * pu_ppo_kl_rewards (rewards, kl), pu_ppo_gae (gamma, lambda: advantages,
 * returns), then the advantages normalised (whiten: pu_ppo_whiten_openrlhf,
 * pu_ppo_whiten or nothing). Arrays (B, T) as above; kl (B). */
void pu_ppo_advantages(const float *logp, const float *ref_logp, const float *values,
                       const float *mask, const float *score, int64_t B, int64_t T,
                       double kl_coef, double gamma, double lambda, pu_whiten_kind whiten,
                       float *rewards, float *kl, float *advantages, float *returns);

typedef struct pu_ppo_train_opts {
    /* out_dir, metrics_path, steps (PPO iterations: one rollout batch each),
     * batch (prompts per step), warmup, lr (actor), min_lr, adam (both
     * models), seed (prompt order, sampling, LoRA init), save_every, keep,
     * resume, quiet, kill_at */
    pu_train_opts train;
    const char *policy_dir, *rm_dir, *critic_dir, *tok_path;
    const char *ref_dir; /* NULL: the initial policy (its mapping, no copy) */
    const char *const *prompts;
    int n_prompts;
    const char *const *ptx_data; /* SFT data mixed in (NULL: none) */
    int n_ptx;
    double ptx_coef;         /* 0.5 */
    int64_t max_new_tokens;  /* 64 */
    double kl_coef;          /* 0.01 */
    double gamma, lam;       /* 1.0, 0.95 */
    double clip_range;       /* policy ratio clip eps, 0.2 */
    double value_clip;       /* 0.2 (<= 0: unclipped value loss) */
    int64_t ppo_epochs;      /* 1 */
    int64_t critic_warmup;   /* steps during which only the critic learns, 0 */
    double critic_lr;        /* <= 0: the actor's lr */
    pu_whiten_kind whiten;   /* advantages: OpenRLHF (default), TRL, none */
    float temperature, top_p; /* rollout sampling, 1.0 / 1.0 */
    int64_t reward_token;    /* -1: the RM's reward_token_id, else 92527 */
    bool shuffle, skip_bad;
    const char *condition;   /* default condition (RM system prompt) for prompts without one */
    bool lora, recompute;
    int64_t lora_r;
    double lora_alpha, lora_dropout;
    bool lora_rslora;
    uint32_t lora_targets;
} pu_ppo_train_opts;

void pu_ppo_train_opts_default(pu_ppo_train_opts *o);
/* Online PPO against a frozen reward model; OUT/final/ as `puyu sft`
 * writes it (the actor, or with --lora its PEFT adapter). See ppo.c. */
pu_status pu_ppo_train_run(const pu_ppo_train_opts *o, pu_pool *pool);

#endif /* PU_ALIGN_H */
