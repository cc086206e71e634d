/*
 * cmd_agent.c — `puyu agent`: a tool-using agent on a local model (native
 * InternLM2 protocol or ReAct) or an OpenAI-compatible endpoint (function
 * calling or ReAct). One prompt with -p, else one prompt per stdin line
 * (interactive: "/reset" forgets the conversation, "/quit" ends). The final
 * answer goes to stdout; tool calls and results to stderr with --show; the
 * whole transcript to --log FILE as JSONL.
 *
 * Exit code: 0 answered, 1 error (model, endpoint, sandbox), 2 usage,
 * 3 stopped at --max-turns without a final answer.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds.h"
#include "common.h"
#include "opts.h"
#include "puyu/pu_agent.h"
#include "puyu/pu_eval.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

typedef struct printer {
    bool verbose;
} printer;

static void on_message(void *ud, const char *json) {
    printer *p = ud;
    if (!p->verbose)
        return;
    json_t *m = json_loads(json, 0, NULL);
    const char *role = json_string_value(json_object_get(m, "role"));
    if (role && strcmp(role, "system")) {
        const char *c = json_string_value(json_object_get(m, "content"));
        fprintf(stderr, "[%s%s%s] %s\n", role, json_object_get(m, "name") ? " " : "",
                json_object_get(m, "name") ? json_string_value(json_object_get(m, "name")) : "",
                c ? c : "");
        size_t i;
        json_t *tc;
        json_array_foreach(json_object_get(m, "tool_calls"), i, tc) {
            json_t *fn = json_object_get(tc, "function");
            fprintf(stderr, "  -> %s(%s)\n", json_string_value(json_object_get(fn, "name")),
                    json_string_value(json_object_get(fn, "arguments")));
        }
    }
    json_decref(m);
}

int pu_cmd_agent(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *api_url = NULL, *api_key = NULL, *api_model = NULL,
               *tools = "python,calculator,files", *tools_file = NULL, *prompt = NULL,
               *protocol = NULL, *log_path = NULL, *workdir = NULL, *system = NULL;
    int64_t max_turns = 8, max_tokens = 512, ctx = 0, mem = 1024;
    double temp = 0, timeout = 30;
    bool verbose_tools = false, unsafe = false, no_json_calls = false;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL",
         "local model (InternLM2: native protocol); with --api: the \"model\" name sent", 0, 0},
        {"tokenizer", 't', PU_OPT_STRING, &tok_path, "TOK", "tokenizer (default: the model's)", 0,
         0},
        {"api", 0, PU_OPT_STRING, &api_url, "URL", "OpenAI-compatible endpoint (http://host:port)",
         0, 0},
        {"api-key", 0, PU_OPT_STRING, &api_key, "KEY", "API key (default: env PUYU_API_KEY)", 0, 0},
        {"api-model", 0, PU_OPT_STRING, &api_model, "NAME", "\"model\" sent to --api", 0, 0},
        {"tools", 0, PU_OPT_STRING, &tools, "LIST",
         "built-in tools: python,calculator,files (\"\" = none)", 0, 0},
        {"tools-file", 0, PU_OPT_STRING, &tools_file, "FILE",
         "user tools: JSON array of OpenAI tools + \"command\"", 0, 0},
        {"prompt", 'p', PU_OPT_STRING, &prompt, "TEXT", "one prompt (default: one per stdin line)",
         0, 0},
        {"max-turns", 0, PU_OPT_INT, &max_turns, "N", "model calls per prompt", 1, 1000},
        {"protocol", 0, PU_OPT_STRING, &protocol, "P",
         "native | openai | react (default: native for -m, openai for --api)", 0, 0},
        {"log", 0, PU_OPT_STRING, &log_path, "FILE",
         "transcript: one JSON message per line (appended)", 0, 0},
        {"system", 0, PU_OPT_STRING, &system, "TEXT", "system prompt", 0, 0},
        {"workdir", 0, PU_OPT_STRING, &workdir, "DIR",
         "the python tool's work dir (default: a temp dir)", 0, 0},
        {"timeout", 0, PU_OPT_DOUBLE, &timeout, "S", "python tool: seconds per call", 0.01, 86400},
        {"mem", 0, PU_OPT_INT, &mem, "MB", "python tool: address-space limit", 16, 1 << 20},
        {"max-tokens", 0, PU_OPT_INT, &max_tokens, "N", "tokens per model reply", 1, 1 << 20},
        {"temp", 0, PU_OPT_DOUBLE, &temp, "T", "temperature (0 = greedy)", 0, 100},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N", "context limit (local; default min(model, 4096))", 16,
         1e9},
        {"no-json-calls", 0, PU_OPT_FLAG, &no_json_calls, NULL,
         "local InternLM2: do not constrain tool calls (to a declared name and arguments "
         "following its schema)",
         0, 0},
        {"show", 0, PU_OPT_FLAG, &verbose_tools, NULL,
         "print every message (tool calls, results) to stderr", 0, 0},
        {"unsafe-no-sandbox", 0, PU_OPT_FLAG, &unsafe, NULL,
         "python tool WITHOUT namespaces/seccomp", 0, 0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu agent",
        "(-m MODEL | --api URL [--api-key K] [--model NAME]) [--tools python,calculator,files] "
        "[--tools-file tools.json] [-p PROMPT] [--max-turns N] [--protocol native|openai|react] "
        "[--log FILE]",
        "Answer prompts with tools: the model plans, calls tools (python runs in the sandbox,\n"
        "calculator is exact arithmetic, files reads the work dir, user tools run their command\n"
        "with the JSON arguments on stdin), reads the results and answers. Exit 3 when\n"
        "--max-turns stops it without a final answer."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (api_url && model && !api_model) { /* --api URL --model NAME */
        api_model = model;
        model = NULL;
    }
    if (!!model == !!api_url) {
        fprintf(stderr, "puyu agent: give exactly one of -m MODEL or --api URL (see --help)\n");
        return 2;
    }
    int proto = 0;
    if (protocol && (proto = pu_agent_protocol_parse(protocol)) < 0) {
        fprintf(stderr, "puyu agent: --protocol: expected native, openai or react\n");
        return 2;
    }
    if (api_key)
        setenv("PUYU_API_KEY", api_key, 1);

    pu_agent_tools_opts to = {.names = tools, .tools_file = tools_file};
    to.sandbox.workdir = workdir;
    to.sandbox.timeout_s = timeout;
    to.sandbox.mem_mb = mem;
    to.sandbox.unsafe_no_sandbox = unsafe;
    pu_agent_tools *tl = NULL;
    if (pu_agent_tools_create(&to, &tl) != PU_OK) {
        fprintf(stderr, "puyu agent: error: %s\n", pu_err_msg());
        return 1;
    }
    /* fail closed before the model loads */
    if (pu_agent_tools_has(tl, "python") && !unsafe && pu_sandbox_check(&to.sandbox) != PU_OK) {
        fprintf(stderr,
                "puyu agent: error: python tool: %s\n(--tools calculator,files runs without "
                "it)\n",
                pu_err_msg());
        pu_agent_tools_destroy(tl);
        return 1;
    }
    /* start the interpreter now: its start-up is then off the first tool call */
    if (pu_agent_tools_has(tl, "python"))
        pu_agent_tools_workdir(tl);

    pu_agent_llm llm = {0};
    struct {
        pu_model *m;
        pu_tok *tok;
        pu_session *s;
    } loc = {0};
    int exit_code = 0;
    FILE *log = NULL;
    pu_agent *ag = NULL;
    if (api_url) {
        pu_agent_api_cfg cfg = {
            .url = api_url, .model = api_model, .max_tokens = max_tokens, .temperature = temp};
        if (pu_agent_llm_api(&cfg, &llm) != PU_OK)
            goto fail;
    } else {
        if (pu_model_load(model, &loc.m) != PU_OK ||
            pu_cli_load_tokenizer(loc.m, model, tok_path, &loc.tok) != PU_OK)
            goto fail;
        int64_t nc = ctx ? ctx : pu_model_config(loc.m)->max_position_embeddings;
        if (!ctx && nc > 4096)
            nc = 4096;
        if (pu_session_create(loc.m, nc, NULL, &loc.s) != PU_OK)
            goto fail;
        pu_agent_llm_local(loc.m, loc.tok, loc.s, max_tokens, temp, &llm);
        /* InternLM2 tokenizers: tool-call arguments decoded under the JSON constraint */
        if (!no_json_calls && pu_tok_special_id(loc.tok, "<|plugin|>") >= 0 &&
            pu_agent_llm_local_constrain_tools(&llm, pu_agent_tools_openai_json(tl)) != PU_OK)
            goto fail;
    }
    if (log_path && !(log = fopen(log_path, "a"))) {
        pu_err_set(PU_ERR_IO, "--log %s: cannot open", log_path);
        goto fail;
    }
    printer pr = {verbose_tools};
    pu_agent_opts ao = {.protocol = (pu_agent_protocol)proto,
                        .max_turns = (int)max_turns,
                        .system = system,
                        .log = log,
                        .on_message = on_message,
                        .ud = &pr};
    if (pu_agent_create(&llm, tl, &ao, &ag) != PU_OK)
        goto fail;
    pu_str answer = {0};
    bool tty = isatty(0);
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        const char *q = prompt;
        if (!prompt) {
            if (tty)
                fprintf(stderr, "> ");
            ssize_t n = getline(&line, &cap, stdin);
            if (n < 0)
                break;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
            if (!n)
                continue;
            if (!strcmp(line, "/quit"))
                break;
            if (!strcmp(line, "/reset")) {
                pu_agent_reset(ag);
                continue;
            }
            q = line;
        }
        pu_agent_outcome oc;
        if (pu_agent_run(ag, q, &answer, &oc) != PU_OK) {
            fprintf(stderr, "puyu agent: error: %s%s%s\n", pu_err_msg(),
                    log_path ? "; transcript in " : "", log_path ? log_path : "");
            exit_code = 1;
        } else {
            printf("%s\n", answer.p ? answer.p : "");
            fflush(stdout);
            if (!oc.finished) {
                fprintf(stderr,
                        "puyu agent: stopped after %d turns (--max-turns) without a final "
                        "answer\n",
                        oc.turns);
                exit_code = 3;
            }
            if (verbose_tools)
                fprintf(stderr, "[%d turns, %d tool calls, %d tool errors]\n", oc.turns,
                        oc.tool_calls, oc.tool_errors);
        }
        if (prompt)
            break;
    }
    free(line);
    pu_str_free(&answer);
    goto done;
fail:
    fprintf(stderr, "puyu agent: error: %s\n", pu_err_msg());
    exit_code = 1;
done:
    pu_agent_destroy(ag);
    if (log)
        fclose(log);
    if (api_url)
        pu_agent_llm_api_free(&llm);
    else
        pu_agent_llm_local_free(&llm);
    pu_session_destroy(loc.s);
    pu_tok_destroy(loc.tok);
    pu_model_destroy(loc.m);
    pu_agent_tools_destroy(tl);
    return exit_code;
}
