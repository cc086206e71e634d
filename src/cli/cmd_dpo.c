/*
 * cmd_dpo.c — `puyu dpo`: DPO (sigmoid), SimPO or ORPO on preference pairs.
 * Parsing and printing only; the work is pu_dpo_train_run (src/train/dpo.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cmds.h"
#include "cli/opts.h"
#include "puyu/pu_align.h"
#include "puyu/pu_lora.h"

static char **split_list(const char *s, int *n) {
    *n = 0;
    char **out = NULL;
    if (!s)
        return NULL;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len) {
            out = pu_realloc(out, (size_t)(*n + 1) * sizeof(char *));
            out[(*n)++] = pu_strndup(p, len);
        }
        p += len + (e ? 1 : 0);
    }
    return out;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++)
        pu_free(l[i]);
    pu_free(l);
}

int pu_cmd_dpo(int argc, char **argv) {
    pu_dpo_train_opts d;
    pu_dpo_train_opts_default(&d);
    pu_train_opts *o = &d.train;
    const char *data = NULL, *eval_data = NULL, *loss = "sigmoid", *targets = NULL;
    int64_t seed = 1, kill_at = 0;
    double wd = o->adam.weight_decay, clip = o->adam.clip, b1 = o->adam.beta1, b2 = o->adam.beta2;
    double eps = o->adam.eps;
    bool resume = false, quiet = false, no_shuffle = false;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &d.policy_dir, "POLICY", "the model to align (the policy)", 0,
         0},
        {"ref", 0, PU_OPT_STRING, &d.ref_dir, "REF",
         "frozen reference model (default: the initial policy, sharing its memory map)", 0, 0},
        {"data", 0, PU_OPT_STRING, &data, "FILE[,FILE2...]",
         "preference pairs (XTuner prompt/chosen/rejected, ShareGPT, alpaca RM, hh-rlhf)", 0, 0},
        {"out", 0, PU_OPT_STRING, &o->out_dir, "DIR",
         "checkpoints, metrics and final/ (the aligned model) go here", 0, 0},
        {"tokenizer", 't', PU_OPT_STRING, &d.tok_path, "TOK", "tokenizer (default: the model's)", 0,
         0},
        {"loss", 0, PU_OPT_STRING, &loss, "sigmoid|simpo|orpo", "objective (default sigmoid = DPO)",
         0, 0},
        {"beta", 0, PU_OPT_DOUBLE, &d.beta, "B", "DPO / SimPO beta (default 0.1)", 0, 1e6},
        {"label-smoothing", 0, PU_OPT_DOUBLE, &d.label_smoothing, "EPS",
         "conservative DPO label smoothing (default 0)", 0, 0.5},
        {"simpo-gamma", 0, PU_OPT_DOUBLE, &d.simpo_gamma, "G", "SimPO margin (default 0.5)", -1e6,
         1e6},
        {"orpo-lambda", 0, PU_OPT_DOUBLE, &d.orpo_lambda, "L",
         "ORPO odds-ratio weight (default 0.1)", 0, 1e6},
        {"steps", 0, PU_OPT_INT, &o->steps, "N", "optimizer steps", 1, 1e12},
        {"batch", 0, PU_OPT_INT, &o->batch, "N", "preference pairs per step", 1, 1e9},
        {"seq", 0, PU_OPT_INT, &o->seq, "T",
         "longest side in tokens (default the model's context); longer pairs are errors (or "
         "skipped with --skip-bad)",
         2, 1e7},
        {"lr", 0, PU_OPT_DOUBLE, &o->lr, "LR", "peak learning rate", 0, 10},
        {"seed", 0, PU_OPT_INT, &seed, "S", "seed of the data order and LoRA init", 0, 9.2e18},
        {"no-shuffle", 0, PU_OPT_FLAG, &no_shuffle, NULL,
         "step k takes pairs (k-1)*N .. k*N-1 in file order, wrapping", 0, 0},
        {"condition", 0, PU_OPT_STRING, &d.condition, "NAME|TEXT",
         "condition (system prompt) for records without one", 0, 0},
        {"skip-bad", 0, PU_OPT_FLAG, &d.skip_bad, NULL,
         "skip bad pairs (and count them) instead of failing", 0, 0},
        {"eval-data", 0, PU_OPT_STRING, &eval_data, "FILE[,FILE2...]",
         "held-out pairs: val_loss / val_accuracy / val_margin before the first step, every "
         "--eval-every steps and at the end",
         0, 0},
        {"eval-every", 0, PU_OPT_INT, &o->eval_every, "K", "validation every K steps", 0, 1e12},
        {"metrics", 0, PU_OPT_STRING, &o->metrics_path, "FILE",
         "metrics JSONL (default OUT/metrics.jsonl)", 0, 0},
        {"warmup", 0, PU_OPT_INT, &o->warmup, "N",
         "linear warmup steps (default min(100, steps/10))", 0, 1e12},
        {"min-lr", 0, PU_OPT_DOUBLE, &o->min_lr, "LR", "floor of the cosine decay (default lr/10)",
         0, 10},
        {"weight-decay", 0, PU_OPT_DOUBLE, &wd, "WD", "AdamW decoupled weight decay", 0, 10},
        {"beta1", 0, PU_OPT_DOUBLE, &b1, "B1", "AdamW beta1", 0, 1},
        {"beta2", 0, PU_OPT_DOUBLE, &b2, "B2", "AdamW beta2", 0, 1},
        {"adam-eps", 0, PU_OPT_DOUBLE, &eps, "EPS", "AdamW epsilon", 0, 1},
        {"clip", 0, PU_OPT_DOUBLE, &clip, "NORM", "global gradient-norm clip (0 = off)", 0, 1e9},
        {"grad-accum", 0, PU_OPT_INT, &o->grad_accum, "A",
         "micro-batches per step (--batch must be divisible by A)", 1, 1e6},
        {"save-every", 0, PU_OPT_INT, &o->save_every, "K",
         "checkpoint every K steps (always at the end)", 0, 1e12},
        {"keep", 0, PU_OPT_INT, &o->keep, "K", "keep the last K checkpoints", 1, 1e9},
        {"resume", 0, PU_OPT_FLAG, &resume, NULL,
         "continue from OUT/latest (bit-exact; starts fresh if there is none)", 0, 0},
        {"lora", 0, PU_OPT_FLAG, &d.lora, NULL,
         "LoRA: adapters only over the memory-mapped base; the reference is that base without "
         "the adapter; OUT/final/ is a PEFT adapter directory",
         0, 0},
        {"lora-r", 0, PU_OPT_INT, &d.lora_r, "R", "adapter rank", 1, 4096},
        {"lora-alpha", 0, PU_OPT_DOUBLE, &d.lora_alpha, "A", "adapter scale alpha / r", -1e6, 1e6},
        {"lora-dropout", 0, PU_OPT_DOUBLE, &d.lora_dropout, "P",
         "dropout on the adapter inputs while training", 0, 0.999},
        {"lora-targets", 0, PU_OPT_STRING, &targets, "LIST",
         "adapted linears: wqkv,wo,w1,w2,w3[,output] (default wqkv,wo,w1,w2,w3)", 0, 0},
        {"lora-rslora", 0, PU_OPT_FLAG, &d.lora_rslora, NULL,
         "rank-stabilised scale alpha / sqrt(r)", 0, 0},
        {"recompute", 0, PU_OPT_FLAG, &d.recompute, NULL, "activation checkpointing", 0, 0},
        {"quiet", 'q', PU_OPT_FLAG, &quiet, NULL, "no progress output", 0, 0},
        {"kill-at-step", 0, PU_OPT_INT, &kill_at, "N",
         "testing: SIGKILL the process right after step N", 0, 1e12},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu dpo",
        "-m POLICY [--ref REF] --data PREFS.jsonl --out DIR --steps N --batch N --beta B "
        "[--loss sigmoid|simpo|orpo] [--lora ...]",
        "Direct preference optimisation on pairs tokenized as `puyu sft` tokenizes a chat (the\n"
        "response = the final assistant turn; its content + <|im_end|> are scored).\n"
        "logp(response) = sum of the scored tokens' log-probabilities. sigmoid (DPO):\n"
        "loss = mean over pairs of -logsigmoid(beta ((pc - pr) - (rc - rr))) against a frozen\n"
        "reference (the initial policy, or --ref; never a second fp32 copy). simpo: z = beta\n"
        "(pc/nc - pr/nr) - gamma, no reference. orpo: mean chosen NLL per token + lambda odds-\n"
        "ratio term, no reference. Metrics per step: loss, accuracy, margin, reward_chosen,\n"
        "reward_rejected (rewards beta (logp - ref)). Optimizer, checkpoints, --resume and\n"
        "OUT/final/ as `puyu sft`."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!d.policy_dir || !data || !o->out_dir || o->steps <= 0) {
        fprintf(stderr, "puyu dpo: need -m POLICY, --data FILE, --out DIR and --steps N (see "
                        "--help)\n");
        return 2;
    }
    if (!strcmp(loss, "sigmoid"))
        d.kind = PU_DPO_SIGMOID;
    else if (!strcmp(loss, "simpo"))
        d.kind = PU_DPO_SIMPO;
    else if (!strcmp(loss, "orpo"))
        d.kind = PU_DPO_ORPO;
    else {
        fprintf(stderr, "puyu dpo: --loss \"%s\": expected sigmoid, simpo or orpo\n", loss);
        return 2;
    }
    if (targets && pu_lora_parse_targets(targets, &d.lora_targets) != PU_OK) {
        fprintf(stderr, "puyu dpo: --lora-targets: %s\n", pu_err_msg());
        return 2;
    }
    int nd = 0, ne = 0;
    char **dl = split_list(data, &nd), **el = split_list(eval_data, &ne);
    d.data = (const char *const *)dl;
    d.n_data = nd;
    d.eval_data = (const char *const *)el;
    d.n_eval = ne;
    d.shuffle = !no_shuffle;
    o->seed = (uint64_t)seed;
    o->kill_at = kill_at;
    o->resume = resume;
    o->quiet = quiet;
    o->adam.weight_decay = wd;
    o->adam.clip = clip;
    o->adam.beta1 = b1;
    o->adam.beta2 = b2;
    o->adam.eps = eps;
    pu_pool *pool = pu_pool_create(0);
    pu_status s = pu_dpo_train_run(&d, pool);
    pu_pool_destroy(pool);
    free_list(dl, nd);
    free_list(el, ne);
    if (s != PU_OK) {
        fprintf(stderr, "puyu dpo: error: %s\n", pu_err_msg());
        return 1;
    }
    return 0;
}
