/*
 * train_opts.h — the option-table entries every training command shares
 * (`puyu train`, `puyu sft`, `puyu rm train`, `puyu dpo`, ...): optimizer and
 * schedule, checkpoints, the training model's options, LoRA. A command
 * builds its table as its own entries + these groups (pu_opts_add), parses,
 * then pu_cli_train_apply copies the parsed values into its pu_train_opts.
 */
#ifndef PU_CLI_TRAIN_OPTS_H
#define PU_CLI_TRAIN_OPTS_H

#include "cli/common.h" /* pu_cli_split_list */
#include "cli/opts.h"
#include "puyu/pu_train.h"

/* room for any training command's whole table */
#define PU_CLI_MAX_OPTS 96

typedef struct pu_cli_train {
    pu_train_opts *o; /* steps, batch, lr, warmup, ... are parsed into it directly */
    int64_t seed, kill_at;
    double wd, clip, b1, b2, eps;
    bool resume, quiet;
} pu_cli_train;

/* values = o's current (defaults) */
void pu_cli_train_init(pu_cli_train *c, pu_train_opts *o);
/* seed, kill_at, resume, quiet and AdamW's settings into c->o */
void pu_cli_train_apply(const pu_cli_train *c);

/* Append src (up to its PU_OPT_END) to t[0..n): returns the new n. t holds
 * PU_CLI_MAX_OPTS entries; the caller ends the table with PU_OPT_END. */
int pu_opts_add(pu_opt *t, int n, const pu_opt *src);
/* --warmup --min-lr --weight-decay --beta1 --beta2 --adam-eps --clip --grad-accum */
int pu_cli_opts_optim(pu_opt *t, int n, pu_cli_train *c);
/* --eval-every --metrics (what = "validation loss" wording for the help) */
int pu_cli_opts_eval(pu_opt *t, int n, pu_cli_train *c, const char *eval_help);
/* --save-every --keep --resume */
int pu_cli_opts_ckpt(pu_opt *t, int n, pu_cli_train *c);
/* --attn --precision --recompute --quiet --kill-at-step */
int pu_cli_opts_model(pu_opt *t, int n, pu_cli_train *c);

/* --lora-r --lora-alpha --lora-dropout --lora-targets --lora-rslora (the
 * --lora flag itself is the command's: its help says what the output is) */
typedef struct pu_cli_lora {
    int64_t *r;
    double *alpha, *dropout;
    bool *rslora;
    const char *targets; /* parsed by pu_cli_lora_targets */
} pu_cli_lora;
int pu_cli_opts_lora(pu_opt *t, int n, pu_cli_lora *l);
/* --lora-targets LIST into *mask (unchanged when not given); 2 (message
 * printed, naming cmd) on a bad list, else 0 */
int pu_cli_lora_targets(const pu_cli_lora *l, const char *cmd, uint32_t *mask);

/* preference-pair commands (rm train, dpo): --no-shuffle --condition
 * --skip-bad --eval-data FILES (eval_help: what the validation reports) */
typedef struct pu_cli_pairs {
    bool no_shuffle, skip_bad;
    const char *condition, *eval_data;
} pu_cli_pairs;
int pu_cli_opts_pairs(pu_opt *t, int n, pu_cli_pairs *p, const char *eval_help);
/* the whole table of a pair command: own, pairs, eval, optimizer,
 * checkpoints, lora_flag (its --lora entry), LoRA, model options; ended */
int pu_cli_opts_pair_cmd(pu_opt *t, const pu_opt *own, const pu_opt *lora_flag, pu_cli_train *c,
                         pu_cli_lora *l, pu_cli_pairs *p, const char *eval_help);

#endif
