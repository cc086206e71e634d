/*
 * cmd_rm.c — `puyu rm score`: rewards of conversations under an InternLM2
 * reward model (HF InternLM2ForRewardModel directory).
 *
 *   puyu rm score -m RM --data FILE.jsonl [--reward-token ID] [-t TOK]
 *
 * Each non-blank input line is a conversation {"messages": [...]} (or a bare
 * messages array), optionally with "condition", or a preference record of
 * any kind `puyu dpo` reads. Output, one JSON line per input line, in order:
 *   {"line": N, "reward": R}                                 conversations
 *   {"line": N, "reward_chosen": Rc, "reward_rejected": Rr, "margin": Rc-Rr}
 *   {"line": N, "error": "..."}                              --skip-bad, a bad line
 * The reward token: --reward-token, else config.json's reward_token_id, else
 * InternLM2's 92527.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "common.h"
#include "opts.h"
#include "train_opts.h"
#include "puyu/pu_align.h"
#include "puyu/pu_core.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

static int fail(const char *cmd) {
    fprintf(stderr, "%s: error: %s\n", cmd, pu_err_msg());
    return 1;
}

static int cmd_score(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *tok_path = NULL, *cond_path = NULL, *cond = NULL;
    int64_t reward_token = -1, ctx = 0;
    bool skip_bad = false;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "RM",
         "reward model directory (InternLM2ForRewardModel)", 0, 0},
        {"data", 0, PU_OPT_STRING, &data, "FILE.jsonl",
         "conversations or preference pairs, one a line", 0, 0},
        {"reward-token", 0, PU_OPT_INT, &reward_token, "ID",
         "reward token id (default: config reward_token_id, else 92527)", 0, 1e9},
        {"tokenizer", 't', PU_OPT_STRING, &tok_path, "TOK", "tokenizer (default: the model's)", 0,
         0},
        {"conditions", 0, PU_OPT_STRING, &cond_path, "FILE",
         "condition prompts JSON (default: built-in = data/rm_conditions.json)", 0, 0},
        {"condition", 0, PU_OPT_STRING, &cond, "NAME|TEXT", "condition for lines without one", 0,
         0},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N", "context limit (default: from the model)", 1, 1e9},
        {"skip-bad", 0, PU_OPT_FLAG, &skip_bad, NULL,
         "print {\"line\": N, \"error\": ...} for a bad line (and count it) instead of stopping", 0,
         0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu rm score", "-m RM --data FILE.jsonl [--reward-token ID] [-t TOK] [--skip-bad]",
        "Print the reward of each input line as one JSON line: {\"line\": N, \"reward\": R} for a\n"
        "conversation ({\"messages\": [...]}, optional \"condition\"), {\"line\": N,\n"
        "\"reward_chosen\": Rc, \"reward_rejected\": Rr, \"margin\": Rc-Rr} for a preference "
        "record.\n"
        "The conversation is rendered with the InternLM2 chat template, encoded with BOS and the\n"
        "reward token appended (as HF get_score); reward = v_head . final hidden state there."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!model || !data) {
        fprintf(stderr, "puyu rm score: -m RM and --data are required (see --help)\n");
        return 2;
    }
    const char *cmd = "puyu rm score";
    pu_model *m = NULL;
    pu_tok *t = NULL;
    pu_pool *pool = NULL;
    pu_session *s = NULL;
    pu_pref_conditions *conds = NULL;
    char *buf = NULL;
    size_t len = 0;
    int ret = 1;
    if (pu_model_load(model, &m) != PU_OK)
        goto done;
    if (!pu_model_is_reward(m)) {
        pu_err_set(PU_ERR_INVALID,
                   "%s: not a reward model: config.json architectures must be "
                   "[\"InternLM2ForRewardModel\"] with a v_head.weight tensor",
                   model);
        goto done;
    }
    const pu_config *c = pu_model_config(m);
    if (reward_token < 0)
        reward_token = c->reward_token_id >= 0 ? c->reward_token_id : PU_REWARD_TOKEN_INTERNLM2;
    if (reward_token >= c->vocab_size) {
        pu_err_set(PU_ERR_RANGE,
                   "reward token %lld is outside the model's vocabulary [0, %lld): pass "
                   "--reward-token ID",
                   (long long)reward_token, (long long)c->vocab_size);
        goto done;
    }
    if (pu_cli_load_tokenizer(m, model, tok_path, &t) != PU_OK)
        goto done;
    if ((cond_path ? pu_pref_conditions_load(cond_path, &conds)
                   : pu_pref_conditions_default(&conds)) != PU_OK)
        goto done;
    pu_pref_parse_opts po = {conds, cond};
    int64_t lim = ctx > 0 ? ctx : pu_config_ctx_limit(c);
    pool = pu_pool_create(0);
    if (pu_session_create(m, lim, pool, &s) != PU_OK)
        goto done;
    if (pu_file_read_all(data, &buf, &len) != PU_OK)
        goto done;
    int64_t line = 0, n_bad = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && buf[e] != '\n')
            e++;
        line++;
        size_t k = i;
        while (k < e && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r'))
            k++;
        if (k < e) {
            char where[1100];
            snprintf(where, sizeof where, "%s:%lld", data, (long long)line);
            pu_chat conv[2];
            int nc = 0;
            float r[2] = {0, 0};
            pu_status st = pu_rm_parse_input(buf + i, e - i, where, &po, conv, &nc);
            for (int j = 0; st == PU_OK && j < nc; j++) {
                int32_t *ids = NULL;
                int64_t n = 0;
                st = pu_rm_tokenize(t, &conv[j], (int32_t)reward_token, &ids, &n);
                if (st == PU_OK && n > lim)
                    st = pu_err_set(PU_ERR_RANGE,
                                    "%s: %lld tokens exceed the context of %lld (use --ctx)", where,
                                    (long long)n, (long long)lim);
                if (st == PU_OK)
                    st = pu_model_reward(m, s, ids, n, &r[j]);
                pu_free(ids);
            }
            pu_chat_free(&conv[0]);
            pu_chat_free(&conv[1]);
            if (st != PU_OK && skip_bad && (st == PU_ERR_FORMAT || st == PU_ERR_RANGE)) {
                pu_str o = {0};
                const char *msg = pu_err_msg();
                pu_str_appendf(&o, "{\"line\": %lld, \"error\": ", (long long)line);
                pu_str_json_string(&o, msg, strlen(msg));
                pu_str_puts(&o, "}\n");
                fputs(o.p, stdout);
                pu_str_free(&o);
                n_bad++;
            } else if (st != PU_OK) {
                goto done;
            } else if (nc == 1)
                printf("{\"line\": %lld, \"reward\": %.9g}\n", (long long)line, (double)r[0]);
            else
                printf("{\"line\": %lld, \"reward_chosen\": %.9g, \"reward_rejected\": %.9g, "
                       "\"margin\": %.9g}\n",
                       (long long)line, (double)r[0], (double)r[1], (double)r[0] - (double)r[1]);
            fflush(stdout);
        }
        i = e + 1;
    }
    if (n_bad)
        fprintf(stderr, "%s: %lld bad lines skipped\n", cmd, (long long)n_bad);
    ret = 0;
done:
    if (ret)
        fail(cmd);
    pu_free(buf);
    pu_pref_conditions_destroy(conds);
    pu_session_destroy(s);
    pu_pool_destroy(pool);
    pu_tok_destroy(t);
    pu_model_destroy(m);
    return ret;
}

static int cmd_train(int argc, char **argv) {
    pu_rm_train_opts ro;
    pu_rm_train_opts_default(&ro);
    pu_train_opts *o = &ro.train;
    const char *data = NULL, *loss = "focal", *penalty = "log_barrier", *head = "zeros";
    pu_cli_pairs cp = {0};
    pu_cli_train ct;
    pu_cli_train_init(&ct, o);
    pu_cli_lora cl = {&ro.lora_r, &ro.lora_alpha, &ro.lora_dropout, &ro.lora_rslora, NULL};
    const pu_opt own[] = {
        {"model", 'm', PU_OPT_STRING, &ro.base_dir, "BASE",
         "the model to start from (its body; the LM head is not used)", 0, 0},
        {"data", 0, PU_OPT_STRING, &data, "FILE[,FILE2...]",
         "preference pairs (XTuner prompt/chosen/rejected, ShareGPT, alpaca RM, hh-rlhf)", 0, 0},
        {"out", 0, PU_OPT_STRING, &o->out_dir, "DIR",
         "checkpoints, metrics and final/ (the reward model) go here", 0, 0},
        {"tokenizer", 't', PU_OPT_STRING, &ro.tok_path, "TOK", "tokenizer (default: the model's)",
         0, 0},
        {"steps", 0, PU_OPT_INT, &o->steps, "N", "optimizer steps", 1, 1e12},
        {"batch", 0, PU_OPT_INT, &o->batch, "N", "preference pairs per step", 1, 1e9},
        {"seq", 0, PU_OPT_INT, &o->seq, "T",
         "longest side (tokens, reward token included; default the model's context); longer pairs "
         "are errors (or skipped "
         "with --skip-bad)",
         2, 1e7},
        {"lr", 0, PU_OPT_DOUBLE, &o->lr, "LR", "peak learning rate", 0, 10},
        {"seed", 0, PU_OPT_INT, &ct.seed, "S", "seed of the data order, head and LoRA init", 0,
         9.2e18},
        {"loss", 0, PU_OPT_STRING, &loss, "focal|ranking", "ranking term (default focal)", 0, 0},
        {"penalty", 0, PU_OPT_STRING, &penalty, "log_barrier|l2|none",
         "reward penalty (default log_barrier)", 0, 0},
        {"penalty-weight", 0, PU_OPT_DOUBLE, &ro.loss.penalty_weight, "W",
         "weight of the penalty (default 0.01)", 0, 1e6},
        {"head-init", 0, PU_OPT_STRING, &head, "zeros|normal",
         "v_head init (default zeros, as XTuner)", 0, 0},
        {"reward-token", 0, PU_OPT_INT, &ro.reward_token, "ID",
         "reward token id (default: config reward_token_id, else 92527)", 0, 1e9},
        PU_OPT_END,
    };
    const pu_opt lora[] = {
        {"lora", 0, PU_OPT_FLAG, &ro.lora, NULL,
         "LoRA: train adapters + v_head only over the memory-mapped base; OUT/final/ holds "
         "the adapter merged into the body",
         0, 0},
        PU_OPT_END,
    };
    pu_opt opts[PU_CLI_MAX_OPTS];
    pu_cli_opts_pair_cmd(
        opts, own, lora, &ct, &cl, &cp,
        "held-out pairs: val_loss / val_accuracy before the first step, every --eval-every "
        "steps and at the end");
    const pu_cmd_spec spec = {
        "puyu rm train",
        "-m BASE --data PREFS.jsonl --out DIR --steps N --batch N [--loss focal|ranking] "
        "[--penalty log_barrier|l2|none] [--penalty-weight W] [--head-init zeros|normal] "
        "[--reward-token ID] [--lora ...]",
        "Train an InternLM2 reward model (body + v_head [1, hidden]) on preference pairs, each\n"
        "side rendered as `puyu rm score` renders it (chat template, BOS, the reward token\n"
        "appended); reward = v_head . final hidden state at the reward token. Loss per batch of\n"
        "N pairs (XTuner's InternLM2 loss): d = r_chosen - r_rejected; focal = sum (1 - 2\n"
        "relu(sigmoid(d) - 1/2))^2 (-logsigmoid(d)) / N (ranking: sum -logsigmoid(d) / N),\n"
        "log barrier over the 2N rewards clamped to [-5+1e-3, 5-1e-3]: sum (-log(5 - r) -\n"
        "log(r + 5)) / N; loss = rank + W * penalty. Metrics line per step: step, loss,\n"
        "accuracy, reward_chosen, reward_rejected (+ lr, grad_norm, tokens). Optimizer,\n"
        "checkpoints and --resume as `puyu sft` (v_head and its moments are checkpointed).\n"
        "OUT/final/ is an InternLM2ForRewardModel directory (`puyu rm score -m OUT/final`)."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!ro.base_dir || !data || !o->out_dir || o->steps <= 0) {
        fprintf(stderr, "puyu rm train: need -m BASE, --data FILE, --out DIR and --steps N (see "
                        "--help)\n");
        return 2;
    }
    if (!strcmp(loss, "focal"))
        ro.loss.loss = PU_RM_LOSS_FOCAL;
    else if (!strcmp(loss, "ranking"))
        ro.loss.loss = PU_RM_LOSS_RANKING;
    else {
        fprintf(stderr, "puyu rm train: --loss \"%s\": expected focal or ranking\n", loss);
        return 2;
    }
    if (!strcmp(penalty, "log_barrier"))
        ro.loss.penalty = PU_RM_PENALTY_LOG_BARRIER;
    else if (!strcmp(penalty, "l2"))
        ro.loss.penalty = PU_RM_PENALTY_L2;
    else if (!strcmp(penalty, "none"))
        ro.loss.penalty = PU_RM_PENALTY_NONE;
    else {
        fprintf(stderr, "puyu rm train: --penalty \"%s\": expected log_barrier, l2 or none\n",
                penalty);
        return 2;
    }
    if (!strcmp(head, "normal"))
        ro.head_normal = true;
    else if (strcmp(head, "zeros")) {
        fprintf(stderr, "puyu rm train: --head-init \"%s\": expected zeros or normal\n", head);
        return 2;
    }
    if (pu_cli_lora_targets(&cl, "puyu rm train", &ro.lora_targets))
        return 2;
    int nd = 0, ne = 0;
    char **dl = pu_cli_split_list(data, &nd), **el = pu_cli_split_list(cp.eval_data, &ne);
    ro.data = (const char *const *)dl;
    ro.n_data = nd;
    ro.eval_data = (const char *const *)el;
    ro.n_eval = ne;
    ro.shuffle = !cp.no_shuffle;
    ro.skip_bad = cp.skip_bad;
    ro.condition = cp.condition;
    pu_cli_train_apply(&ct);
    pu_pool *pool = pu_pool_create(0);
    pu_status s = pu_rm_train_run(&ro, pool);
    pu_pool_destroy(pool);
    pu_cli_free_list(dl, nd);
    pu_cli_free_list(el, ne);
    return s != PU_OK ? fail("puyu rm train") : 0;
}

int pu_cmd_rm(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "score"))
        return cmd_score(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "train"))
        return cmd_train(argc - 1, argv + 1);
    FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
    fprintf(f, "usage: puyu rm score -m RM --data FILE.jsonl [--reward-token ID] [-t TOK]\n"
               "       puyu rm train -m BASE --data PREFS.jsonl --out DIR --steps N [...]\n\n"
               "  score   rewards of conversations / preference pairs under an InternLM2 reward "
               "model\n"
               "  train   train a reward model (body + v_head) on preference pairs\n"
               "(puyu rm score --help, puyu rm train --help for the options)\n");
    return f == stdout ? 0 : 2;
}
