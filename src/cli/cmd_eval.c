/*
 * cmd_eval.c — `puyu eval`: run evaluation tasks (built-in names or spec
 * files) on a local model or an OpenAI-compatible server and write the
 * reports. Only option parsing and exit codes live here; the work is in
 * src/eval/ (pu_eval_run).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "opts.h"
#include "common.h"
#include "puyu/pu_agent.h"
#include "puyu/pu_core.h"
#include "puyu/pu_eval.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

/* split "a,b,c" into owned strings */
static char **split_list(const char *s, int *n) {
    *n = 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    char **v = pu_calloc(cap, sizeof *v);
    const char *a = s;
    for (;;) {
        const char *e = strchr(a, ',');
        size_t l = e ? (size_t)(e - a) : strlen(a);
        while (l && (*a == ' '))
            a++, l--;
        while (l && a[l - 1] == ' ')
            l--;
        if (l)
            v[(*n)++] = pu_strndup(a, l);
        if (!e)
            break;
        a = e + 1;
    }
    return v;
}

static int parse_int_list(const char *s, const char *what, int64_t **out, int *n) {
    int m = 0;
    char **v = split_list(s, &m);
    *out = pu_calloc((size_t)(m ? m : 1), sizeof **out);
    *n = m;
    int rc = 0;
    for (int i = 0; i < m; i++) {
        if (pu_parse_i64(v[i], &(*out)[i], what) != PU_OK || (*out)[i] < 0) {
            fprintf(stderr, "puyu eval: %s: bad number '%s'\n", what, v[i]);
            rc = 2;
        }
    }
    for (int i = 0; i < m; i++)
        pu_free(v[i]);
    pu_free(v);
    if (!m && !rc) {
        fprintf(stderr, "puyu eval: %s: empty list\n", what);
        rc = 2;
    }
    return rc;
}

/* tool-use tasks (src/agent/tooleval.c): tooluse_en / tooluse_zh on
 * DATA/../agent/glaive_toolcall_{en,zh}_demo.json; first call exact match */
static bool is_tooluse(const char *t) { return !strncmp(t, "tooluse", 7); }

static int run_tooluse(const char *task, const char *model, const char *tok_path, const char *api,
                       const char *api_model, const char *data_dir, const char *out,
                       int64_t limit, int64_t ctx, bool quiet) {
    bool reason = !strcmp(task, "tooluse_reason");
    const char *lang = reason ? "reason" : !strcmp(task, "tooluse_zh") ? "zh" : "en";
    if (strcmp(task, "tooluse") && strcmp(task, "tooluse_en") && strcmp(task, "tooluse_zh") &&
        !reason) {
        fprintf(stderr,
                "puyu eval: unknown task '%s' (tool use: tooluse_en, tooluse_zh, tooluse_reason)\n",
                task);
        return 2;
    }
    char path[4096], file[128];
    if (reason)
        snprintf(file, sizeof file, "reason_tool_use_demo_50.jsonl");
    else
        snprintf(file, sizeof file, "glaive_toolcall_%s_demo.json", lang);
    snprintf(path, sizeof path, "%s/../agent/%s", data_dir, file);
    if (!pu_file_exists(path))
        snprintf(path, sizeof path, "%s/agent/%s", data_dir, file);
    pu_agent_llm llm = {0};
    pu_model *m = NULL;
    pu_tok *tok = NULL;
    pu_session *s = NULL;
    pu_status st = PU_OK;
    if (api) {
        pu_agent_api_cfg cfg = {.url = api, .model = api_model, .max_tokens = 256};
        st = pu_agent_llm_api(&cfg, &llm);
    } else {
        st = pu_model_load(model, &m);
        if (!st)
            st = pu_cli_load_tokenizer(m, model, tok_path, &tok);
        int64_t nc = ctx ? ctx : 4096;
        if (!st && nc > pu_model_config(m)->max_position_embeddings)
            nc = pu_model_config(m)->max_position_embeddings;
        if (!st)
            st = pu_session_create(m, nc, NULL, &s);
        if (!st)
            st = pu_agent_llm_local(m, tok, s, 256, 0, &llm);
    }
    char *pp = NULL;
    FILE *pf = NULL;
    if (!st) {
        pu_mkdir_p(out);
        char name[64];
        snprintf(name, sizeof name, "tooluse_%s_predictions.jsonl", lang);
        pp = pu_path_join(out, name);
        pf = fopen(pp, "w");
    }
    pu_agent_tooluse_score sc;
    pu_agent_reason_score rs;
    pu_agent_tooluse_opts to = {.path = path,
                                .limit = limit,
                                .protocol = api ? PU_AGENT_OPENAI : PU_AGENT_NATIVE,
                                .predictions = pf};
    if (!st && reason)
        st = pu_agent_tooluse_reason_eval(&llm, &to, &rs);
    else if (!st)
        st = pu_agent_tooluse_eval(&llm, &to, &sc);
    if (pf)
        fclose(pf);
    if (!st && reason && !quiet) {
        double pct = rs.steps ? 100.0 * (double)(rs.call_exact + rs.answer_ok) / (double)rs.steps
                              : 0.0;
        printf("| tooluse_reason | tool | %lld steps (%lld items) | accuracy | %.2f | calls exact "
               "%lld/%lld (names %lld, no call %lld) | answers without a call %lld/%lld |\n",
               (long long)rs.steps, (long long)rs.items, pct, (long long)rs.call_exact,
               (long long)rs.call_steps, (long long)rs.call_name, (long long)rs.no_call,
               (long long)rs.answer_ok, (long long)rs.answer_steps);
    }
    if (!st && !reason && !quiet)
        printf("| tooluse_%s | tool | %lld | exact | %.2f | name %.2f | no call %lld |\n", lang,
               (long long)sc.n, sc.n ? 100.0 * (double)sc.exact_ok / (double)sc.n : 0.0,
               sc.n ? 100.0 * (double)sc.name_ok / (double)sc.n : 0.0, (long long)sc.no_call);
    if (!st)
        fprintf(stderr, "tool-use predictions written to %s\n", pp);
    pu_free(pp);
    if (api)
        pu_agent_llm_api_free(&llm);
    else if (llm.ud)
        pu_agent_llm_local_free(&llm);
    pu_session_destroy(s);
    pu_tok_destroy(tok);
    pu_model_destroy(m);
    if (st) {
        fprintf(stderr, "puyu eval: error: %s: %s\n", task, pu_err_msg());
        return 1;
    }
    return 0;
}

static const char *default_data_dir(void) {
    static const char *cands[] = {"../shared/data/eval", "shared/data/eval",
                                  "../../shared/data/eval"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (pu_dir_exists(cands[i]))
            return cands[i];
    return cands[0];
}

int pu_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *tasks_s = NULL, *data = NULL, *out = "eval_out";
    const char *api = NULL, *api_model = NULL, *lens_s = NULL, *depths_s = NULL;
    int64_t limit = 0, shots = -1, ctx = 0, max_tokens = 0, batch = 0;
    const char *lora_dirs = NULL, *kv_s = NULL;
    double lora_scale = 1.0;
    double exec_timeout = 10;
    bool no_resume = false, list = false, quiet = false, chat = false;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL", "model directory, .gguf or llama2.c .bin", 0,
         0},
        {"tokenizer", 't', PU_OPT_STRING, &tok, "TOK",
         "tokenizer (default: the model's own, e.g. DIR/tokenizer.model)", 0, 0},
        {"tasks", 0, PU_OPT_STRING, &tasks_s, "LIST",
         "comma-separated built-in task names and/or task spec files (*.json)", 0, 0},
        {"data", 0, PU_OPT_STRING, &data, "DIR", "datasets directory (default ../shared/data/eval)",
         0, 0},
        {"limit", 0, PU_OPT_INT, &limit, "N", "evaluate the first N samples of each task (0 = all)",
         0, 1e12},
        {"shots", 0, PU_OPT_INT, &shots, "K", "few-shot examples (-1 = each task's own)", 0, 64},
        {"out", 'o', PU_OPT_STRING, &out, "DIR", "output directory (reports + resume cache)", 0, 0},
        {"api", 0, PU_OPT_STRING, &api, "URL",
         "generate via an OpenAI-compatible server (http://host:port[/v1/chat/completions]); "
         "with -t the prompt goes as token ids, left-truncated to --ctx",
         0, 0},
        {"api-model", 0, PU_OPT_STRING, &api_model, "NAME", "\"model\" field sent to --api", 0, 0},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N", "context size (default: the model's, at most 4096)", 0,
         1e9},
        {"max-tokens", 0, PU_OPT_INT, &max_tokens, "N",
         "generation limit (default: each task's own)", 0, 1e9},
        {"exec-timeout", 0, PU_OPT_DOUBLE, &exec_timeout, "S",
         "pass@1 (humaneval): seconds per sample in the sandbox", 0.01, 3600},
        {"batch", 0, PU_OPT_INT, &batch, "N",
         "gen: sequences decoded together by the batching engine (0 = 16, 1 = one at a time)", 0,
         4096},
        {"needle-lengths", 0, PU_OPT_STRING, &lens_s, "L1,L2",
         "needle grid: haystack lengths in tokens", 0, 0},
        {"needle-depths", 0, PU_OPT_STRING, &depths_s, "D1,D2", "needle grid: depths in percent", 0,
         0},
        {"chat", 0, PU_OPT_FLAG, &chat, NULL,
         "wrap gen prompts in the InternLM2 chat template (chat models)", 0, 0},
        {"no-resume", 0, PU_OPT_FLAG, &no_resume, NULL, "ignore cached per-sample results in --out",
         0, 0},
        {"list-tasks", 0, PU_OPT_FLAG, &list, NULL, "list the built-in tasks and exit", 0, 0},
        {"quiet", 'q', PU_OPT_FLAG, &quiet, NULL, "no progress bar, no table on stdout", 0, 0},
        {"lora", 0, PU_OPT_STRING, &lora_dirs, "DIR[,DIR2]",
         "PEFT LoRA adapter directories, applied unmerged", 0, 0},
        {"lora-scale", 0, PU_OPT_DOUBLE, &lora_scale, "S",
         "multiplier of every adapter's alpha/r", -1e6, 1e6},
        PU_CLI_KV_OPT(kv_s),
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu eval",
        "-m MODEL --tasks mmlu,gsm8k,... [--data DIR] [--limit N] [--shots K] [--out DIR] "
        "[--api URL] [-t TOK]",
        "Evaluate a model OpenCompass-style. ppl tasks score every option by its log-likelihood\n"
        "(one prefill of the shared context); gen tasks generate and extract the answer;\n"
        "needle tasks run a needle-in-a-haystack grid. Writes DIR/results.json, results.md,\n"
        "report.html and predictions.jsonl; finished samples are cached in DIR/cache/ and\n"
        "reused by a rerun. A task is a built-in name (--list-tasks) or a JSON spec path.\n"
        "Tool use (DATA/../agent): tooluse_en / tooluse_zh (glaive: first call, name and\n"
        "arguments exact) and tooluse_reason (reason_tool_use_demo_50.jsonl: every assistant\n"
        "turn; calls equal as a multiset, final answers right when no tool is called)."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (list) {
        for (int i = 0; i < pu_eval_builtin_count(); i++) {
            pu_eval_task *t = NULL;
            const char *nm = pu_eval_builtin_name(i);
            if (pu_eval_task_load(nm, &t) == PU_OK) {
                const char *m = pu_eval_task_mode(t) == PU_EVAL_PPL   ? "ppl"
                                : pu_eval_task_mode(t) == PU_EVAL_GEN ? "gen"
                                                                      : "needle";
                printf("%-12s %-6s %d-shot\n", nm, m, pu_eval_task_shots(t));
                pu_eval_task_destroy(t);
            } else {
                printf("%-12s (invalid: %s)\n", nm, pu_err_msg());
            }
        }
        return 0;
    }
    if ((!model && !api) || !tasks_s) {
        fprintf(stderr, "puyu eval: need -m MODEL (or --api URL) and --tasks (see --help)\n");
        return 2;
    }
    if (lora_dirs && !model) {
        fprintf(stderr, "puyu eval: --lora applies to a local -m MODEL (a server chooses its "
                        "adapter by --api-model)\n");
        return 2;
    }
    int64_t *lens = NULL, *depths = NULL;
    int n_lens = 0, n_depths = 0;
    if (lens_s && (rc = parse_int_list(lens_s, "--needle-lengths", &lens, &n_lens)) != 0) {
        pu_free(lens);
        return rc;
    }
    if (depths_s && (rc = parse_int_list(depths_s, "--needle-depths", &depths, &n_depths)) != 0) {
        pu_free(lens);
        pu_free(depths);
        return rc;
    }
    for (int i = 0; i < n_depths; i++)
        if (depths[i] > 100) {
            fprintf(stderr, "puyu eval: --needle-depths: %lld is not a percentage\n",
                    (long long)depths[i]);
            pu_free(lens);
            pu_free(depths);
            return 2;
        }
    pu_kv_type kvt;
    if (pu_cli_kv_type(kv_s, &kvt) != PU_OK) {
        fprintf(stderr, "puyu eval: error: %s\n", pu_err_msg());
        pu_free(lens);
        pu_free(depths);
        return 2;
    }
    int n_tasks = 0;
    char **tasks = split_list(tasks_s, &n_tasks);
    if (!n_tasks) {
        fprintf(stderr, "puyu eval: --tasks: no task names\n");
        pu_free(tasks);
        pu_free(lens);
        pu_free(depths);
        return 2;
    }
    /* tool-use tasks run on the agent side; the rest through pu_eval_run */
    int n_tool = 0, n_reg = 0;
    const char **tool_tasks = pu_calloc((size_t)n_tasks, sizeof(char *));
    for (int i = 0; i < n_tasks; i++) {
        if (is_tooluse(tasks[i]))
            tool_tasks[n_tool++] = tasks[i];
        else
            tasks[n_reg++] = tasks[i];
    }
    pu_pool *pool = model ? pu_pool_create(0) : NULL;
    pu_eval_opts o;
    memset(&o, 0, sizeof o);
    o.model_path = model;
    o.tok_path = tok;
    o.api_url = api;
    o.api_model = api_model;
    o.data_dir = data ? data : default_data_dir();
    o.out_dir = out;
    o.limit = limit;
    o.shots = (int)shots;
    o.n_ctx = ctx;
    o.max_tokens = max_tokens;
    o.batch = batch;
    o.exec_timeout_s = exec_timeout;
    o.no_resume = no_resume;
    o.chat = chat;
    o.progress = !quiet;
    o.needle_lengths = lens;
    o.n_needle_lengths = n_lens;
    o.needle_depths = depths;
    o.n_needle_depths = n_depths;
    o.pool = pool;
    o.lora = lora_dirs;
    o.lora_scale = lora_scale;
    o.kv_type = kvt;
    pu_str md = {0};
    pu_status st = n_reg ? pu_eval_run(&o, (const char *const *)tasks, n_reg, &md) : PU_OK;
    if (md.p && !quiet) {
        fputs(md.p, stdout);
        fflush(stdout);
    }
    if (md.p)
        fprintf(stderr,
                "reports written to %s/ (results.json, results.md, report.html, "
                "predictions.jsonl)\n",
                out);
    int ret = 0;
    if (st) {
        fprintf(stderr, "puyu eval: error: %s\n", pu_err_msg());
        ret = 1;
    }
    for (int i = 0; i < n_tool && !ret; i++)
        ret = run_tooluse(tool_tasks[i], model, tok, api, api_model, o.data_dir, out, limit, ctx,
                          quiet);
    for (int i = 0; i < n_tool; i++)
        pu_free((char *)tool_tasks[i]);
    pu_free(tool_tasks);
    pu_str_free(&md);
    for (int i = 0; i < n_reg; i++)
        pu_free(tasks[i]);
    pu_free(tasks);
    pu_free(lens);
    pu_free(depths);
    pu_pool_destroy(pool);
    return ret;
}
