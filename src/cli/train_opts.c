/*
 * train_opts.c — the option groups shared by the training commands (see
 * train_opts.h).
 */
#include "cli/train_opts.h"

#include <stdio.h>
#include <string.h>

#include "puyu/pu_lora.h"

void pu_cli_train_init(pu_cli_train *c, pu_train_opts *o) {
    memset(c, 0, sizeof *c);
    c->o = o;
    c->seed = (int64_t)o->seed;
    c->wd = o->adam.weight_decay;
    c->clip = o->adam.clip;
    c->b1 = o->adam.beta1;
    c->b2 = o->adam.beta2;
    c->eps = o->adam.eps;
}

void pu_cli_train_apply(const pu_cli_train *c) {
    pu_train_opts *o = c->o;
    o->seed = (uint64_t)c->seed;
    o->kill_at = c->kill_at;
    o->resume = c->resume;
    o->quiet = c->quiet;
    o->adam.weight_decay = c->wd;
    o->adam.clip = c->clip;
    o->adam.beta1 = c->b1;
    o->adam.beta2 = c->b2;
    o->adam.eps = c->eps;
}

int pu_opts_add(pu_opt *t, int n, const pu_opt *src) {
    for (; src->long_name; src++) {
        if (n >= PU_CLI_MAX_OPTS - 1) { /* a programming error: the table is fixed */
            fprintf(stderr, "puyu: internal error: option table full at --%s\n", src->long_name);
            break;
        }
        t[n++] = *src;
    }
    t[n] = (pu_opt)PU_OPT_END;
    return n;
}

int pu_cli_opts_optim(pu_opt *t, int n, pu_cli_train *c) {
    pu_train_opts *o = c->o;
    const pu_opt g[] = {
        {"warmup", 0, PU_OPT_INT, &o->warmup, "N",
         "linear warmup steps (default min(100, steps/10))", 0, 1e12},
        {"min-lr", 0, PU_OPT_DOUBLE, &o->min_lr, "LR", "floor of the cosine decay (default lr/10)",
         0, 10},
        {"weight-decay", 0, PU_OPT_DOUBLE, &c->wd, "WD",
         "AdamW decoupled weight decay (not on norms and embeddings)", 0, 10},
        {"beta1", 0, PU_OPT_DOUBLE, &c->b1, "B1", "AdamW beta1", 0, 1},
        {"beta2", 0, PU_OPT_DOUBLE, &c->b2, "B2", "AdamW beta2", 0, 1},
        {"adam-eps", 0, PU_OPT_DOUBLE, &c->eps, "EPS", "AdamW epsilon", 0, 1},
        {"clip", 0, PU_OPT_DOUBLE, &c->clip, "NORM", "global gradient-norm clip (0 = off)", 0, 1e9},
        {"grad-accum", 0, PU_OPT_INT, &o->grad_accum, "A",
         "micro-batches per step (--batch must be divisible by A)", 1, 1e6},
        PU_OPT_END,
    };
    return pu_opts_add(t, n, g);
}

int pu_cli_opts_eval(pu_opt *t, int n, pu_cli_train *c, const char *eval_help) {
    pu_train_opts *o = c->o;
    const pu_opt g[] = {
        {"eval-every", 0, PU_OPT_INT, &o->eval_every, "K", eval_help, 0, 1e12},
        {"metrics", 0, PU_OPT_STRING, &o->metrics_path, "FILE",
         "metrics JSONL (default OUT/metrics.jsonl)", 0, 0},
        PU_OPT_END,
    };
    return pu_opts_add(t, n, g);
}

int pu_cli_opts_ckpt(pu_opt *t, int n, pu_cli_train *c) {
    pu_train_opts *o = c->o;
    const pu_opt g[] = {
        {"save-every", 0, PU_OPT_INT, &o->save_every, "K",
         "checkpoint every K steps (always at the end)", 0, 1e12},
        {"keep", 0, PU_OPT_INT, &o->keep, "K", "keep the last K checkpoints", 1, 1e9},
        {"resume", 0, PU_OPT_FLAG, &c->resume, NULL,
         "continue from OUT/latest (bit-exact; starts fresh if there is none)", 0, 0},
        PU_OPT_END,
    };
    return pu_opts_add(t, n, g);
}

int pu_cli_opts_model(pu_opt *t, int n, pu_cli_train *c) {
    pu_train_opts *o = c->o;
    const pu_opt g[] = {
        {"attn", 0, PU_OPT_STRING, &o->attn, "naive|flash",
         "attention kernel: flash (tiled, O(T) memory, default) or naive (saves the T x T "
         "probabilities); PUYU_ATTN sets the default",
         0, 0},
        {"precision", 0, PU_OPT_STRING, &o->precision, "fp32|bf16",
         "matmul precision: bf16 = BF16 operands, FP32 accumulation, FP32 master weights and "
         "AdamW state (default fp32)",
         0, 0},
        {"recompute", 0, PU_OPT_STRING, &o->recompute, "none|attn|block",
         "block: keep each layer's input and recompute the layer in backward; attn: recompute "
         "only the naive attention's probabilities (no-op with flash) (default none)",
         0, 0},
        {"ce-chunk", 0, PU_OPT_INT, &o->ce_chunk, "N",
         "LM head + cross-entropy over chunks of N tokens (never the T x vocab logits): 0 auto "
         "(when B*T*vocab > 2^27), -1 never (default 0)",
         -1, 1e12},
        {"quiet", 'q', PU_OPT_FLAG, &c->quiet, NULL, "no progress output", 0, 0},
        {"kill-at-step", 0, PU_OPT_INT, &c->kill_at, "N",
         "testing: SIGKILL the process right after step N", 0, 1e12},
        PU_OPT_END,
    };
    return pu_opts_add(t, n, g);
}

int pu_cli_opts_pairs(pu_opt *t, int n, pu_cli_pairs *p, const char *eval_help) {
    const pu_opt g[] = {
        {"no-shuffle", 0, PU_OPT_FLAG, &p->no_shuffle, NULL,
         "step k takes pairs (k-1)*N .. k*N-1 in file order, wrapping", 0, 0},
        {"condition", 0, PU_OPT_STRING, &p->condition, "NAME|TEXT",
         "condition (system prompt) for records without one", 0, 0},
        {"skip-bad", 0, PU_OPT_FLAG, &p->skip_bad, NULL,
         "skip bad pairs (and count them) instead of failing", 0, 0},
        {"eval-data", 0, PU_OPT_STRING, &p->eval_data, "FILE[,FILE2...]", eval_help, 0, 0},
        PU_OPT_END,
    };
    return pu_opts_add(t, n, g);
}

int pu_cli_opts_lora(pu_opt *t, int n, pu_cli_lora *l) {
    const pu_opt g[] = {
        {"lora-r", 0, PU_OPT_INT, l->r, "R", "adapter rank", 1, 4096},
        {"lora-alpha", 0, PU_OPT_DOUBLE, l->alpha, "A", "adapter scale alpha / r", -1e6, 1e6},
        {"lora-dropout", 0, PU_OPT_DOUBLE, l->dropout, "P",
         "dropout on the adapter inputs while training", 0, 0.999},
        {"lora-targets", 0, PU_OPT_STRING, &l->targets, "LIST",
         "adapted linears: wqkv,wo,w1,w2,w3[,output] (default wqkv,wo,w1,w2,w3)", 0, 0},
        {"lora-rslora", 0, PU_OPT_FLAG, l->rslora, NULL, "rank-stabilised scale alpha / sqrt(r)", 0,
         0},
        PU_OPT_END,
    };
    return pu_opts_add(t, n, g);
}

int pu_cli_lora_targets(const pu_cli_lora *l, const char *cmd, uint32_t *mask) {
    if (l->targets && pu_lora_parse_targets(l->targets, mask) != PU_OK) {
        fprintf(stderr, "%s: --lora-targets: %s\n", cmd, pu_err_msg());
        return 2;
    }
    return 0;
}

int pu_cli_opts_pair_cmd(pu_opt *t, const pu_opt *own, const pu_opt *lora_flag, pu_cli_train *c,
                         pu_cli_lora *l, pu_cli_pairs *p, const char *eval_help) {
    int n = pu_opts_add(t, 0, own);
    n = pu_cli_opts_pairs(t, n, p, eval_help);
    n = pu_cli_opts_eval(t, n, c, "validation every K steps");
    n = pu_cli_opts_optim(t, n, c);
    n = pu_cli_opts_ckpt(t, n, c);
    n = pu_opts_add(t, n, lora_flag);
    n = pu_cli_opts_lora(t, n, l);
    return pu_cli_opts_model(t, n, c);
}
