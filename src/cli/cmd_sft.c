/*
 * cmd_sft.c — `puyu sft`: supervised fine-tuning of a model on chat records
 * (full parameters, LoRA or QLoRA). Parsing and printing only; the work is pu_sft_run.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cmds.h"
#include "cli/opts.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_sft.h"

/* "a,b,c" -> owned array of owned strings */
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

int pu_cmd_sft(int argc, char **argv) {
    pu_sft_opts so;
    pu_sft_opts_default(&so);
    pu_train_opts *o = &so.train;
    const char *data = NULL, *eval_data = NULL;
    pu_opt_list vars = {0};
    int64_t seed = 1, kill_at = 0;
    double wd = o->adam.weight_decay, clip = o->adam.clip, b1 = o->adam.beta1, b2 = o->adam.beta2;
    double eps = o->adam.eps;
    bool resume = false, quiet = false, no_shuffle = false, pack = false, skip_bad = false;
    const char *targets = NULL;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &so.base_dir, "BASE", "the model directory to fine-tune", 0,
         0},
        {"data", 0, PU_OPT_STRING, &data, "FILE[,FILE2...]",
         "chat records: JSONL or JSON arrays (OpenAI messages, ShareGPT conversations, XTuner "
         "conversation, alpaca)",
         0, 0},
        {"out", 0, PU_OPT_STRING, &o->out_dir, "DIR",
         "checkpoints, metrics and final/ (the fine-tuned model) go here", 0, 0},
        {"tokenizer", 't', PU_OPT_STRING, &so.tok_path, "TOK",
         "tokenizer (default: the model's); needs <|im_start|> and <|im_end|>", 0, 0},
        {"steps", 0, PU_OPT_INT, &o->steps, "N", "optimizer steps", 1, 1e12},
        {"batch", 0, PU_OPT_INT, &o->batch, "B", "rows (samples, or packed rows) per step", 1, 1e9},
        {"seq", 0, PU_OPT_INT, &o->seq, "T",
         "tokens per row: longer samples are cut here (and counted)", 2, 1e7},
        {"lr", 0, PU_OPT_DOUBLE, &o->lr, "LR", "peak learning rate", 0, 10},
        {"seed", 0, PU_OPT_INT, &seed, "S", "seed of the data order (per-epoch shuffle)", 0,
         9.2e18},
        {"no-shuffle", 0, PU_OPT_FLAG, &no_shuffle, NULL,
         "batch k = rows (k-1)*B .. k*B-1 in file order, wrapping", 0, 0},
        {"pack", 0, PU_OPT_FLAG, &pack, NULL,
         "concatenate consecutive samples into rows of up to --seq tokens (per-sample "
         "positions and attention)",
         0, 0},
        {"skip-bad", 0, PU_OPT_FLAG, &skip_bad, NULL,
         "skip bad records (and count them) instead of failing", 0, 0},
        {"var", 0, PU_OPT_LIST, &vars, "KEY=VALUE",
         "template variable: {{KEY}} in contents becomes VALUE (repeatable)", 0, 0},
        {"eval-data", 0, PU_OPT_STRING, &eval_data, "FILE[,FILE2...]",
         "held-out records: val_loss before the first step, every --eval-every steps and at the "
         "end",
         0, 0},
        {"eval-every", 0, PU_OPT_INT, &o->eval_every, "K",
         "validation loss every K steps (default: only before and after)", 0, 1e12},
        {"metrics", 0, PU_OPT_STRING, &o->metrics_path, "FILE",
         "metrics JSONL (default OUT/metrics.jsonl)", 0, 0},
        {"warmup", 0, PU_OPT_INT, &o->warmup, "N",
         "linear warmup steps (default min(100, steps/10))", 0, 1e12},
        {"min-lr", 0, PU_OPT_DOUBLE, &o->min_lr, "LR", "floor of the cosine decay (default lr/10)",
         0, 10},
        {"weight-decay", 0, PU_OPT_DOUBLE, &wd, "WD",
         "AdamW decoupled weight decay (not on norms and embeddings)", 0, 10},
        {"beta1", 0, PU_OPT_DOUBLE, &b1, "B1", "AdamW beta1", 0, 1},
        {"beta2", 0, PU_OPT_DOUBLE, &b2, "B2", "AdamW beta2", 0, 1},
        {"adam-eps", 0, PU_OPT_DOUBLE, &eps, "EPS", "AdamW epsilon", 0, 1},
        {"clip", 0, PU_OPT_DOUBLE, &clip, "NORM", "global gradient-norm clip (0 = off)", 0, 1e9},
        {"grad-accum", 0, PU_OPT_INT, &o->grad_accum, "A",
         "micro-batches per step (batch must be divisible by A)", 1, 1e6},
        {"save-every", 0, PU_OPT_INT, &o->save_every, "K",
         "checkpoint every K steps (always at the end)", 0, 1e12},
        {"keep", 0, PU_OPT_INT, &o->keep, "K", "keep the last K checkpoints", 1, 1e9},
        {"resume", 0, PU_OPT_FLAG, &resume, NULL,
         "continue from OUT/latest (bit-exact; starts fresh if there is none)", 0, 0},
        {"lora", 0, PU_OPT_FLAG, &so.lora, NULL,
         "LoRA: train low-rank adapters only; the base stays memory-mapped and frozen; "
         "OUT/final/ is a PEFT adapter directory",
         0, 0},
        {"lora-r", 0, PU_OPT_INT, &so.lora_r, "R", "adapter rank", 1, 4096},
        {"lora-alpha", 0, PU_OPT_DOUBLE, &so.lora_alpha, "A", "adapter scale alpha / r", -1e6, 1e6},
        {"lora-dropout", 0, PU_OPT_DOUBLE, &so.lora_dropout, "P",
         "dropout on the adapter inputs while training", 0, 0.999},
        {"lora-targets", 0, PU_OPT_STRING, &targets, "LIST",
         "adapted linears: wqkv,wo,w1,w2,w3[,output] (default wqkv,wo,w1,w2,w3)", 0, 0},
        {"lora-rslora", 0, PU_OPT_FLAG, &so.lora_rslora, NULL,
         "rank-stabilised scale alpha / sqrt(r)", 0, 0},
        {"lora-init", 0, PU_OPT_STRING, &so.lora_init, "ADAPTER_DIR",
         "start from this PEFT adapter (its r, alpha and targets) instead of PEFT's init", 0, 0},
        {"qlora", 0, PU_OPT_FLAG, &so.qlora, NULL,
         "QLoRA: LoRA over the base quantized to NF4 with double quantization (bitsandbytes' "
         "scheme), with activation checkpointing",
         0, 0},
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
        {"zero", 0, PU_OPT_INT, &o->zero, "0|1",
         "data parallel (mpirun, MPI build): 1 = ZeRO-1, each rank keeps the AdamW moments of "
         "its 1/N of the weights only (default 0)",
         0, 1},
        {"ce-chunk", 0, PU_OPT_INT, &o->ce_chunk, "N",
         "LM head + cross-entropy over chunks of N tokens (never the T x vocab logits): 0 auto "
         "(when B*T*vocab > 2^27), -1 never (default 0)",
         -1, 1e12},
        {"quiet", 'q', PU_OPT_FLAG, &quiet, NULL, "no progress output", 0, 0},
        {"kill-at-step", 0, PU_OPT_INT, &kill_at, "N",
         "testing: SIGKILL the process right after step N", 0, 1e12},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu sft",
        "-m BASE --data FILE.jsonl[,FILE2...] --out DIR --steps N --batch B --seq T --lr LR "
        "[--pack] [--no-shuffle] [--eval-data FILE] [--var name=X] [--lora [--lora-r R] "
        "[--lora-alpha A] [--lora-dropout P] [--lora-targets LIST] [--lora-init DIR] | --qlora]",
        "Supervised fine-tuning (all parameters, fp32 AdamW) on chat records rendered in the\n"
        "InternLM2 chat format: [BOS] <|im_start|>role\\ncontent<|im_end|> turns joined by "
        "\"\\n\";\n"
        "the loss is the mean cross-entropy over the tokens of the scored messages (assistant\n"
        "turns by default, or per message \"loss\": true|false) and their <|im_end|>.\n"
        "Metrics line of step k: {\"step\": k, \"loss\": L, ...} with L the loss of batch k "
        "before\n"
        "the update. Checkpoints OUT/step_N/ and --resume work as in `puyu train`; the result\n"
        "is OUT/final/, a model directory (`puyu generate -m OUT/final`).\n"
        "With --lora / --qlora only the adapters train (PEFT init: A Kaiming-uniform, B 0);\n"
        "checkpoints hold the adapter and its optimizer state, OUT/final/ is a PEFT adapter\n"
        "directory (adapter_config.json + adapter_model.safetensors) for --lora DIR."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc) {
        pu_free(vars.items);
        return rc == 1 ? 0 : 2;
    }
    if (!so.base_dir || !data || !o->out_dir || o->steps <= 0) {
        fprintf(stderr, "puyu sft: need -m BASE, --data FILE, --out DIR and --steps N (see "
                        "--help)\n");
        pu_free(vars.items);
        return 2;
    }
    for (int i = 0; i < vars.n; i++)
        if (!strchr(vars.items[i], '=') || vars.items[i][0] == '=') {
            fprintf(stderr, "puyu sft: --var \"%s\": expected KEY=VALUE\n", vars.items[i]);
            pu_free(vars.items);
            return 2;
        }
    if (targets) {
        if (pu_lora_parse_targets(targets, &so.lora_targets) != PU_OK) {
            fprintf(stderr, "puyu sft: --lora-targets: %s\n", pu_err_msg());
            pu_free(vars.items);
            return 2;
        }
        if (!so.lora && !so.qlora)
            fprintf(stderr, "puyu sft: warning: --lora-targets without --lora has no effect\n");
    }
    int nd = 0, ne = 0;
    char **dl = split_list(data, &nd), **el = split_list(eval_data, &ne);
    const char **vl = pu_calloc((size_t)vars.n + 1, sizeof(char *));
    for (int i = 0; i < vars.n; i++)
        vl[i] = vars.items[i];
    so.data = (const char *const *)dl;
    so.n_data = nd;
    so.eval_data = (const char *const *)el;
    so.n_eval = ne;
    so.vars = vl;
    so.shuffle = !no_shuffle;
    so.pack = pack;
    so.skip_bad = skip_bad;
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
    pu_status s = pu_sft_run(&so, pool);
    pu_pool_destroy(pool);
    free_list(dl, nd);
    free_list(el, ne);
    pu_free(vl);
    pu_free(vars.items);
    if (s != PU_OK) {
        fprintf(stderr, "error: %s\n", pu_err_msg());
        return 1;
    }
    return 0;
}
