/*
 * cmd_sft.c — `puyu sft`: supervised fine-tuning of a model on chat records
 * (full parameters, LoRA or QLoRA). Parsing and printing only; the work is pu_sft_run.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cmds.h"
#include "cli/opts.h"
#include "cli/train_opts.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_sft.h"

int pu_cmd_sft(int argc, char **argv) {
    pu_sft_opts so;
    pu_sft_opts_default(&so);
    pu_train_opts *o = &so.train;
    const char *data = NULL, *eval_data = NULL;
    pu_opt_list vars = {0};
    bool no_shuffle = false, pack = false, skip_bad = false;
    pu_cli_train ct;
    pu_cli_train_init(&ct, o);
    pu_cli_lora cl = {&so.lora_r, &so.lora_alpha, &so.lora_dropout, &so.lora_rslora, NULL};
    const pu_opt own[] = {
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
        {"seed", 0, PU_OPT_INT, &ct.seed, "S", "seed of the data order (per-epoch shuffle)", 0,
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
        PU_OPT_END,
    };
    const pu_opt lora[] = {
        {"lora", 0, PU_OPT_FLAG, &so.lora, NULL,
         "LoRA: train low-rank adapters only; the base stays memory-mapped and frozen; "
         "OUT/final/ is a PEFT adapter directory",
         0, 0},
        PU_OPT_END,
    };
    const pu_opt lora2[] = {
        {"lora-init", 0, PU_OPT_STRING, &so.lora_init, "ADAPTER_DIR",
         "start from this PEFT adapter (its r, alpha and targets) instead of PEFT's init", 0, 0},
        {"qlora", 0, PU_OPT_FLAG, &so.qlora, NULL,
         "QLoRA: LoRA over the base quantized to NF4 with double quantization (bitsandbytes' "
         "scheme), with activation checkpointing",
         0, 0},
        {"zero", 0, PU_OPT_INT, &o->zero, "0|1",
         "data parallel (mpirun, MPI build): 1 = ZeRO-1, each rank keeps the AdamW moments of "
         "its 1/N of the weights only (default 0)",
         0, 1},
        PU_OPT_END,
    };
    pu_opt opts[PU_CLI_MAX_OPTS];
    int n = pu_opts_add(opts, 0, own);
    n = pu_cli_opts_eval(opts, n, &ct,
                         "validation loss every K steps (default: only before and after)");
    n = pu_cli_opts_optim(opts, n, &ct);
    n = pu_cli_opts_ckpt(opts, n, &ct);
    n = pu_opts_add(opts, n, lora);
    n = pu_cli_opts_lora(opts, n, &cl);
    n = pu_opts_add(opts, n, lora2);
    pu_cli_opts_model(opts, n, &ct);
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
    if (cl.targets) {
        if (pu_cli_lora_targets(&cl, "puyu sft", &so.lora_targets)) {
            pu_free(vars.items);
            return 2;
        }
        if (!so.lora && !so.qlora)
            fprintf(stderr, "puyu sft: warning: --lora-targets without --lora has no effect\n");
    }
    int nd = 0, ne = 0;
    char **dl = pu_cli_split_list(data, &nd), **el = pu_cli_split_list(eval_data, &ne);
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
    pu_cli_train_apply(&ct);
    pu_pool *pool = pu_pool_create(0);
    pu_status s = pu_sft_run(&so, pool);
    pu_pool_destroy(pool);
    pu_cli_free_list(dl, nd);
    pu_cli_free_list(el, ne);
    pu_free(vl);
    pu_free(vars.items);
    if (s != PU_OK) {
        fprintf(stderr, "error: %s\n", pu_err_msg());
        return 1;
    }
    return 0;
}
