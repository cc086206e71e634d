/*
 * cmd_dpo.c — `puyu dpo`: DPO (sigmoid), SimPO or ORPO on preference pairs.
 * Parsing and printing only; the work is pu_dpo_train_run (src/train/dpo.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cmds.h"
#include "cli/opts.h"
#include "cli/train_opts.h"
#include "puyu/pu_align.h"
#include "puyu/pu_lora.h"

int pu_cmd_dpo(int argc, char **argv) {
    pu_dpo_train_opts d;
    pu_dpo_train_opts_default(&d);
    pu_train_opts *o = &d.train;
    const char *data = NULL, *loss = "sigmoid";
    pu_cli_pairs cp = {0};
    pu_cli_train ct;
    pu_cli_train_init(&ct, o);
    pu_cli_lora cl = {&d.lora_r, &d.lora_alpha, &d.lora_dropout, &d.lora_rslora, NULL};
    const pu_opt own[] = {
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
        {"seed", 0, PU_OPT_INT, &ct.seed, "S", "seed of the data order and LoRA init", 0, 9.2e18},
        PU_OPT_END,
    };
    const pu_opt lora[] = {
        {"lora", 0, PU_OPT_FLAG, &d.lora, NULL,
         "LoRA: adapters only over the memory-mapped base; the reference is that base without "
         "the adapter; OUT/final/ is a PEFT adapter directory",
         0, 0},
        PU_OPT_END,
    };
    pu_opt opts[PU_CLI_MAX_OPTS];
    pu_cli_opts_pair_cmd(
        opts, own, lora, &ct, &cl, &cp,
        "held-out pairs: val_loss / val_accuracy / val_margin before the first step, every "
        "--eval-every steps and at the end");
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
    if (pu_cli_lora_targets(&cl, "puyu dpo", &d.lora_targets))
        return 2;
    int nd = 0, ne = 0;
    char **dl = pu_cli_split_list(data, &nd), **el = pu_cli_split_list(cp.eval_data, &ne);
    d.data = (const char *const *)dl;
    d.n_data = nd;
    d.eval_data = (const char *const *)el;
    d.n_eval = ne;
    d.shuffle = !cp.no_shuffle;
    d.skip_bad = cp.skip_bad;
    d.condition = cp.condition;
    pu_cli_train_apply(&ct);
    pu_pool *pool = pu_pool_create(0);
    pu_status s = pu_dpo_train_run(&d, pool);
    pu_pool_destroy(pool);
    pu_cli_free_list(dl, nd);
    pu_cli_free_list(el, ne);
    if (s != PU_OK) {
        fprintf(stderr, "puyu dpo: error: %s\n", pu_err_msg());
        return 1;
    }
    return 0;
}
