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
#include "puyu/pu_align.h"
#include "puyu/pu_core.h"
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

int pu_cmd_rm(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "score"))
        return cmd_score(argc - 1, argv + 1);
    FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
    fprintf(f, "usage: puyu rm score -m RM --data FILE.jsonl [--reward-token ID] [-t TOK]\n\n"
               "  score   rewards of conversations / preference pairs under an InternLM2 reward "
               "model\n"
               "(puyu rm score --help for the options)\n");
    return f == stdout ? 0 : 2;
}
