/*
 * test_agent.c — agents (suite agent): the exact calculator, tool schemas
 * and user tools, read_file confinement, and the agent loop driven by a
 * scripted fake model (a test double of pu_agent_llm) in the native,
 * openai and react protocols: tool results fed back, malformed calls
 * answered with an error and retried, max_turns bounding a model that never
 * stops, invalid UTF-8 tool output, endpoint errors with the transcript kept;
 * then `puyu agent --api` against `puyu serve` on the stories260K model for
 * the HTTP plumbing.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt.h"
#include "puyu/pu_agent.h"

static void calc_is(const char *expr, const char *want) {
    pu_str out = {0};
    pu_status st = pu_calc_eval(expr, &out);
    PT_CHECK_MSG(st == PU_OK, "calc %s: %s", expr, pu_err_msg());
    if (st == PU_OK)
        PT_CHECK_MSG(!strcmp(out.p, want), "calc %s = %s, want %s", expr, out.p, want);
    pu_str_free(&out);
}

static void calc_err(const char *expr, pu_status want, const char *msg) {
    pu_str out = {0};
    pu_status st = pu_calc_eval(expr, &out);
    PT_CHECK_MSG(st == want && strstr(pu_err_msg(), msg), "calc %s: %d %s", expr, st, pu_err_msg());
    pu_str_free(&out);
}

/* ------------------------------------------------------------------------ */
/* the scripted model                                                       */

typedef struct fake {
    const char *const *replies; /* one per call; the last repeats */
    int n, calls;
    pu_str last_prompt; /* complete: the prompt; chat: the messages JSON */
    pu_str last_tools;
    pu_str first_prompt;
    int fail_at; /* call index (1-based) that returns an error, 0 = never */
} fake;

static const char *fake_next(fake *f) {
    int i = f->calls < f->n ? f->calls : f->n - 1;
    f->calls++;
    return f->replies[i];
}

static pu_status fake_complete(void *ud, const char *prompt, const char *const *stops, int ns,
                               pu_str *out) {
    fake *f = ud;
    pu_str_clear(&f->last_prompt);
    pu_str_puts(&f->last_prompt, prompt);
    if (!f->calls)
        pu_str_puts(&f->first_prompt, prompt);
    if (f->fail_at && f->calls + 1 == f->fail_at) {
        f->calls++;
        return pu_err_set(PU_ERR_IO, "fake model: connection reset");
    }
    pu_str_clear(out);
    const char *r = fake_next(f);
    /* apply the stops as a real generator would */
    size_t cut = strlen(r);
    for (int i = 0; i < ns; i++) {
        const char *h = strstr(r, stops[i]);
        if (h && (size_t)(h - r) < cut)
            cut = (size_t)(h - r);
    }
    pu_str_append(out, r, cut);
    pu_str_puts(out, "");
    return PU_OK;
}

static pu_status fake_chat(void *ud, const char *messages, const char *tools,
                           const char *const *stops, int ns, pu_str *reply) {
    fake *f = ud;
    pu_str_clear(&f->last_prompt);
    pu_str_puts(&f->last_prompt, messages);
    pu_str_clear(&f->last_tools);
    pu_str_puts(&f->last_tools, tools ? tools : "");
    if (!f->calls)
        pu_str_puts(&f->first_prompt, tools ? tools : "");
    if (f->fail_at && f->calls + 1 == f->fail_at) {
        f->calls++;
        return pu_err_set(PU_ERR_FORMAT, "http://x: reply is not JSON: <html>");
    }
    pu_str_clear(reply);
    pu_str_puts(reply, fake_next(f));
    return PU_OK;
}

static void fake_free(fake *f) {
    pu_str_free(&f->last_prompt);
    pu_str_free(&f->last_tools);
    pu_str_free(&f->first_prompt);
}

static bool has(const char *s, const char *sub) {
    return s && strstr(s, sub);
}

static bool g_sbx_checked, g_sbx_ok;
static bool sandbox_ok(void) {
    if (!g_sbx_checked) {
        g_sbx_checked = true;
        g_sbx_ok = pu_sandbox_check(NULL) == PU_OK;
    }
    return g_sbx_ok;
}

static pu_agent_tools *mk_tools(const char *names) {
    pu_agent_tools_opts o = {.names = names};
    o.sandbox.timeout_s = 5;
    pu_agent_tools *t = NULL;
    PT_OK(pu_agent_tools_create(&o, &t));
    return t;
}

/* ------------------------------------------------------------------------ */

static void check_calculator(void) {
    calc_is("1/3 + 1/6", "1/2 (= 0.5)");
    calc_is("0.1 + 0.2", "3/10 (= 0.3)");
    calc_is("2^100", "1267650600228229401496703205376");
    calc_is("2 ** 10 - 24", "1000");
    calc_is("-2^2", "-4");
    calc_is("2^-2", "1/4 (= 0.25)");
    calc_is("(3 + 4) * 2 / 7", "2");
    calc_is("1/3", "1/3 (≈ 0.333333333333333)");
    calc_is("-7 % 3", "2");
    calc_is("1.5e3 * 2", "3000");
    calc_is("abs(-5/2)", "5/2 (= 2.5)");
    calc_is("2^3^2", "512");
    calc_err("1/0", PU_ERR_RANGE, "division by zero");
    calc_err("__import__('os')", PU_ERR_FORMAT, "column 1");
    calc_err("(1 + 2", PU_ERR_FORMAT, "expected ')'");
    calc_err("2 ^ 0.5", PU_ERR_UNSUPPORTED, "non-integer");
    calc_err("10^40 * 10^40", PU_ERR_RANGE, "overflow");
    calc_err("1 + ", PU_ERR_FORMAT, "end of expression");
}

static void check_tools(void) {
    pu_agent_tools *t = mk_tools("calculator,files");
    if (!t)
        return;
    PT_EQ_I64(pu_agent_tools_count(t), 2);
    const char *bad[][2] = {
        {"{}", "expected a JSON array"},
        {"[{\"type\": \"function\", \"function\": {\"name\": \"bad name\", \"parameters\": {}}, "
         "\"command\": \"cat\"}]",
         "function.name"},
        {"[{\"type\": \"function\", \"function\": {\"name\": \"x\", \"parameters\": {\"type\": "
         "\"array\"}}, \"command\": \"cat\"}]",
         "parameters.type"},
        {"[{\"type\": \"function\", \"function\": {\"name\": \"x\", \"parameters\": {\"type\": "
         "\"object\", \"properties\": {\"a\": {\"type\": \"strng\"}}}}, \"command\": \"cat\"}]",
         "unknown JSON type \"strng\""},
        {"[{\"type\": \"function\", \"function\": {\"name\": \"x\", \"parameters\": {\"type\": "
         "\"object\", \"properties\": {}, \"required\": [\"q\"]}}, \"command\": \"cat\"}]",
         "\"q\" is not in properties"},
        {"[{\"type\": \"function\", \"function\": {\"name\": \"x\", \"parameters\": {\"type\": "
         "\"object\"}}}]",
         "command"},
        {"[{\"type\": \"function\", \"function\": {\"name\": \"calculator\", \"parameters\": "
         "{\"type\": \"object\"}}, \"command\": \"cat\"}]",
         "duplicate"},
        {"[1, 2", "tools.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pu_status st = pu_agent_tools_add_json(t, bad[i][0], strlen(bad[i][0]), "tools.json");
        PT_CHECK_MSG(st != PU_OK && has(pu_err_msg(), bad[i][1]) && has(pu_err_msg(), "tools.json"),
                     "bad schema %zu: %s", i, pu_err_msg());
    }
    PT_EQ_I64(pu_agent_tools_count(t), 2);
    /* a user tool: echoes its JSON input back, one that fails, one with bad UTF-8 */
    const char *good =
        "[{\"type\": \"function\", \"function\": {\"name\": \"echo\", \"description\": \"echo\", "
        "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": "
        "\"string\"}, \"n\": {\"type\": \"integer\"}, \"unit\": {\"type\": \"string\", \"enum\": "
        "[\"C\", \"F\"]}}, \"required\": [\"city\"]}}, \"command\": [\"cat\"]},"
        " {\"type\": \"function\", \"function\": {\"name\": \"boom\", \"parameters\": {\"type\": "
        "\"object\"}}, \"command\": \"echo kaput >&2; exit 3\"},"
        " {\"type\": \"function\", \"function\": {\"name\": \"binary\", \"parameters\": {\"type\": "
        "\"object\"}}, \"command\": \"printf 'ok \\\\377\\\\376 end'\"}]";
    PT_OK(pu_agent_tools_add_json(t, good, strlen(good), "tools.json"));
    PT_EQ_I64(pu_agent_tools_count(t), 5);
    pu_str r = {0};
    bool err = true;
    PT_OK(pu_agent_tools_call(t, "echo", "{\"city\": \"Paris\", \"n\": 3}", &r, &err));
    PT_CHECK_MSG(!err && !strcmp(r.p, "{\"city\":\"Paris\",\"n\":3}"), "echo: %s", r.p);
    PT_OK(pu_agent_tools_call(t, "echo", "{\"n\": 3}", &r, &err));
    PT_CHECK(err && has(r.p, "missing required argument \"city\""));
    PT_OK(pu_agent_tools_call(t, "echo", "{\"city\": 5}", &r, &err));
    PT_CHECK(err && has(r.p, "must be of type string"));
    PT_OK(pu_agent_tools_call(t, "echo", "{\"city\": \"x\", \"unit\": \"K\"}", &r, &err));
    PT_CHECK(err && has(r.p, "allowed values"));
    PT_OK(pu_agent_tools_call(t, "echo", "{\"city\": \"x\", \"zzz\": 1}", &r, &err));
    PT_CHECK(err && has(r.p, "unknown argument"));
    PT_OK(pu_agent_tools_call(t, "echo", "{city: x}", &r, &err));
    PT_CHECK(err && has(r.p, "not valid JSON"));
    PT_OK(pu_agent_tools_call(t, "nope", "{}", &r, &err));
    PT_CHECK(err && has(r.p, "unknown tool") && has(r.p, "calculator"));
    PT_OK(pu_agent_tools_call(t, "boom", "{}", &r, &err));
    PT_CHECK_MSG(err && has(r.p, "exit 3") && has(r.p, "kaput"), "boom: %s", r.p);
    PT_OK(pu_agent_tools_call(t, "binary", "{}", &r, &err));
    PT_CHECK_MSG(!err && !strcmp(r.p, "ok \xEF\xBF\xBD\xEF\xBF\xBD end"), "binary: %s", r.p);
    PT_OK(pu_agent_tools_call(t, "calculator", "{\"expression\": \"6*7\"}", &r, &err));
    PT_CHECK(!err && !strcmp(r.p, "42"));
    PT_OK(pu_agent_tools_call(t, "calculator", "{\"expression\": \"6/0\"}", &r, &err));
    PT_CHECK(err && has(r.p, "division by zero"));
    /* read_file stays in the work dir */
    const char *wd = pu_agent_tools_workdir(t);
    PT_CHECK(wd != NULL);
    if (wd) {
        char *p = pu_path_join(wd, "notes.txt");
        PT_OK(pu_file_write_atomic(p, "hello notes", 11));
        pu_free(p);
        char secret[512];
        pt_tmp_path("agent_secret.txt", secret, sizeof secret);
        PT_OK(pu_file_write_atomic(secret, "SECRET", 6));
        p = pu_path_join(wd, "link");
        PT_CHECK(symlink(secret, p) == 0);
        pu_free(p);
        PT_OK(pu_agent_tools_call(t, "read_file", "{\"path\": \"notes.txt\"}", &r, &err));
        PT_CHECK(!err && !strcmp(r.p, "hello notes"));
        PT_OK(pu_agent_tools_call(t, "read_file", "{\"path\": \"/work/notes.txt\"}", &r, &err));
        PT_CHECK(!err && !strcmp(r.p, "hello notes"));
        const char *esc[] = {"{\"path\": \"../../../etc/passwd\"}", "{\"path\": \"/etc/passwd\"}",
                             "{\"path\": \"link\"}"};
        for (int i = 0; i < 3; i++) {
            PT_OK(pu_agent_tools_call(t, "read_file", esc[i], &r, &err));
            PT_CHECK_MSG(err && !has(r.p, "SECRET") && !has(r.p, "root:"), "escape %d: %s", i, r.p);
        }
        p = pu_path_join(wd, "link");
        unlink(p);
        pu_free(p);
        p = pu_path_join(wd, "notes.txt");
        unlink(p);
        pu_free(p);
    }
    pu_str_free(&r);
    pu_agent_tools_destroy(t);
}

static void check_native(void) {
    bool py = sandbox_ok();
    pu_agent_tools *t = mk_tools(py ? "python,calculator" : "calculator");
    if (!t)
        return;
    const char *replies[] = {
        "Let me compute.<|action_start|><|plugin|>\n{\"name\": \"calculator\", \"parameters\": "
        "{\"expression\": \"6*7\"}}<|action_end|>\n",
        py ? "Now in Python.<|action_start|><|interpreter|>\n```python\nx = 6 * 7\nprint(x)\n```"
             "<|action_end|>\n"
           : "No python.<|action_start|><|plugin|>\n{\"name\": \"calculator\", \"parameters\": "
             "{\"expression\": \"42\"}}<|action_end|>\n",
        "The answer is 42.<|im_end|>"};
    fake f = {.replies = replies, .n = 3};
    pu_agent_llm llm = {.ud = &f, .complete = fake_complete};
    char logp[512];
    pt_tmp_path("agent_native.jsonl", logp, sizeof logp);
    FILE *log = fopen(logp, "w");
    pu_agent_opts o = {.protocol = PU_AGENT_NATIVE, .max_turns = 5, .log = log};
    pu_agent *a = NULL;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    pu_str ans = {0};
    pu_agent_outcome oc;
    PT_OK(pu_agent_run(a, "What is 6 times 7?", &ans, &oc));
    PT_EQ_STR(ans.p, "The answer is 42.");
    PT_CHECK(oc.finished);
    PT_EQ_I64(oc.turns, 3);
    PT_EQ_I64(oc.tool_calls, 2);
    PT_EQ_I64(oc.tool_errors, 0);
    /* the declarations and the results as InternLM2 renders them */
    PT_CHECK_MSG(has(f.first_prompt.p, "<|im_start|>system name=<|plugin|>\n") &&
                     has(f.first_prompt.p, "\"name\": \"calculator\"") &&
                     has(f.first_prompt.p, "<|im_start|>user\nWhat is 6 times 7?<|im_end|>\n"
                                           "<|im_start|>assistant\n"),
                 "first prompt:\n%s", f.first_prompt.p);
    if (py)
        PT_CHECK_MSG(has(f.first_prompt.p, "<|im_start|>system name=<|interpreter|>\n") &&
                         !has(f.first_prompt.p, "\"name\": \"python\""),
                     "interpreter declaration:\n%s", f.first_prompt.p);
    PT_CHECK_MSG(has(f.last_prompt.p, "<|action_start|><|plugin|>\n{\"name\": \"calculator\", "
                                      "\"parameters\": {\"expression\": \"6*7\"}}<|action_end|>") &&
                     has(f.last_prompt.p, "<|im_start|>environment name=<|plugin|>\n42<|im_end|>"),
                 "last prompt:\n%s", f.last_prompt.p);
    if (py)
        PT_CHECK_MSG(
            has(f.last_prompt.p, "<|action_start|><|interpreter|>\n```python\nx = 6 * 7") &&
                has(f.last_prompt.p,
                    "<|im_start|>environment name=<|interpreter|>\n42\n<|im_end|>"),
            "interpreter turn:\n%s", f.last_prompt.p);
    /* a second question in the same session: python variables persist */
    if (py) {
        const char *r2[] = {"<|action_start|><|interpreter|>\n```python\nx + 1\n```<|action_end|>",
                            "43<|im_end|>"};
        f.replies = r2;
        f.n = 2;
        f.calls = 0;
        PT_OK(pu_agent_run(a, "and plus one?", &ans, &oc));
        PT_CHECK_MSG(has(f.last_prompt.p, "environment name=<|interpreter|>\n43\n<|im_end|>"),
                     "state lost:\n%s", f.last_prompt.p);
    }
    fclose(log);
    /* transcript: one JSON message per line */
    char *data = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(logp, &data, &len));
    int lines = 0, tools_seen = 0;
    for (char *s = data, *nl; s && *s; s = nl + 1) {
        nl = strchr(s, '\n');
        if (!nl)
            break;
        json_t *j = json_loadb(s, (size_t)(nl - s), 0, NULL);
        PT_CHECK_MSG(json_is_object(j), "transcript line %d is not JSON", lines + 1);
        if (!strcmp(json_string_value(json_object_get(j, "role")) ?: "", "tool"))
            tools_seen++;
        json_decref(j);
        lines++;
    }
    PT_CHECK_MSG(lines >= 7 && tools_seen >= 2, "transcript: %d lines, %d tool", lines, tools_seen);
    pu_free(data);
    pu_str_free(&ans);
    pu_agent_destroy(a);
    fake_free(&f);
    pu_agent_tools_destroy(t);
}

static void check_malformed_and_bounds(void) {
    pu_agent_tools *t = mk_tools("calculator");
    if (!t)
        return;
    const char *replies[] = {
        "<|action_start|><|plugin|>\n{\"name\": \"calculator\", \"parameters\": {\"expr",
        "<|action_start|><|plugin|>\n{\"name\": \"calculator\", \"parameters\": {\"expression\": "
        "\"2+2\"}}<|action_end|>",
        "4<|im_end|>"};
    fake f = {.replies = replies, .n = 3};
    pu_agent_llm llm = {.ud = &f, .complete = fake_complete};
    pu_agent_opts o = {.protocol = PU_AGENT_NATIVE, .max_turns = 5};
    pu_agent *a = NULL;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    pu_str ans = {0};
    pu_agent_outcome oc;
    PT_OK(pu_agent_run(a, "2+2?", &ans, &oc));
    PT_CHECK(oc.finished);
    PT_EQ_STR(ans.p, "4");
    PT_EQ_I64(oc.tool_errors, 1);
    PT_CHECK_MSG(has(f.last_prompt.p, "error: malformed") && has(f.last_prompt.p, "\n4<|im_end|>"),
                 "retry prompt:\n%s", f.last_prompt.p);
    pu_agent_destroy(a);

    /* a model that never stops calling tools */
    const char *loop[] = {"<|action_start|><|plugin|>\n{\"name\": \"calculator\", "
                          "\"parameters\": {\"expression\": \"1+1\"}}<|action_end|>"};
    fake g = {.replies = loop, .n = 1};
    llm.ud = &g;
    o.max_turns = 3;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    PT_OK(pu_agent_run(a, "loop", &ans, &oc));
    PT_CHECK(!oc.finished);
    PT_EQ_I64(oc.turns, 3);
    PT_EQ_I64(g.calls, 3);
    pu_agent_destroy(a);

    /* an endpoint that fails on the second call: error returned, transcript kept */
    fake h = {.replies = replies + 1, .n = 2, .fail_at = 2};
    llm.ud = &h;
    char logp[512];
    pt_tmp_path("agent_fail.jsonl", logp, sizeof logp);
    FILE *log = fopen(logp, "w");
    o.log = log;
    o.max_turns = 5;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    pu_status st = pu_agent_run(a, "fail please", &ans, &oc);
    PT_CHECK_MSG(st == PU_ERR_IO && has(pu_err_msg(), "connection reset") &&
                     has(pu_err_msg(), "turn 2"),
                 "fail: %s", pu_err_msg());
    fclose(log);
    char *data = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(logp, &data, &len));
    PT_CHECK(has(data, "fail please") && has(data, "\"role\":\"tool\""));
    pu_free(data);
    pu_agent_destroy(a);
    pu_str_free(&ans);
    fake_free(&f);
    fake_free(&g);
    fake_free(&h);
    pu_agent_tools_destroy(t);
}

static void check_openai(void) {
    pu_agent_tools *t = mk_tools("calculator");
    if (!t)
        return;
    const char *replies[] = {
        "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\", \"type\": "
        "\"function\", \"function\": {\"name\": \"calculator\", \"arguments\": "
        "\"{\\\"expression\\\": \\\"2+2\\\"}\"}}, {\"id\": \"c2\", \"type\": \"function\", "
        "\"function\": {\"name\": \"weather\", \"arguments\": \"{}\"}}]}",
        "{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"c3\", \"type\": "
        "\"function\", \"function\": {\"name\": \"calculator\", \"arguments\": \"{bad json\"}}]}",
        "{\"role\": \"assistant\", \"content\": \"It is 4.\"}"};
    fake f = {.replies = replies, .n = 3};
    pu_agent_llm llm = {.ud = &f, .chat = fake_chat};
    pu_agent_opts o = {.protocol = PU_AGENT_OPENAI};
    pu_agent *a = NULL;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    pu_str ans = {0};
    pu_agent_outcome oc;
    PT_OK(pu_agent_run(a, "2+2?", &ans, &oc));
    PT_EQ_STR(ans.p, "It is 4.");
    PT_EQ_I64(oc.turns, 3);
    PT_EQ_I64(oc.tool_calls, 3);
    PT_EQ_I64(oc.tool_errors, 2);
    PT_CHECK_MSG(has(f.last_tools.p, "\"name\":\"calculator\"") &&
                     has(f.last_tools.p, "\"type\":\"function\""),
                 "tools: %s", f.last_tools.p);
    json_t *ms = json_loads(f.last_prompt.p, 0, NULL);
    PT_CHECK(json_is_array(ms));
    int found = 0;
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        const char *c = json_string_value(json_object_get(m, "content"));
        if (role && !strcmp(role, "tool") && id && !strcmp(id, "c1") && c && !strcmp(c, "4"))
            found |= 1;
        if (role && !strcmp(role, "tool") && id && !strcmp(id, "c2") && has(c, "unknown tool"))
            found |= 2;
        if (role && !strcmp(role, "tool") && id && !strcmp(id, "c3") && has(c, "not valid JSON"))
            found |= 4;
    }
    PT_EQ_I64(found, 7);
    json_decref(ms);
    pu_agent_destroy(a);
    /* garbage from the endpoint */
    fake g = {.replies = replies, .n = 1, .fail_at = 1};
    llm.ud = &g;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    pu_status st = pu_agent_run(a, "x", &ans, &oc);
    PT_CHECK(st == PU_ERR_FORMAT && has(pu_err_msg(), "not JSON"));
    pu_agent_destroy(a);
    const char *notmsg[] = {"[1, 2]"};
    fake h = {.replies = notmsg, .n = 1};
    llm.ud = &h;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    st = pu_agent_run(a, "x", &ans, &oc);
    PT_CHECK(st == PU_ERR_FORMAT);
    pu_agent_destroy(a);
    /* openai needs chat; native needs complete */
    pu_agent_llm only_chat = {.ud = &h, .chat = fake_chat};
    o.protocol = PU_AGENT_NATIVE;
    PT_CHECK(pu_agent_create(&only_chat, t, &o, &a) == PU_ERR_INVALID);
    pu_str_free(&ans);
    fake_free(&f);
    fake_free(&g);
    fake_free(&h);
    pu_agent_tools_destroy(t);
}

static void check_react(void) {
    pu_agent_tools *t = mk_tools("calculator");
    if (!t)
        return;
    bool fin = false;
    pu_str a1 = {0}, a2 = {0}, a3 = {0};
    PT_OK(pu_agent_parse_react("Thought: x\nAction: calculator\nAction Input: {\"expression\": "
                               "\"1\"}\nObservation: made up",
                               &fin, &a1, &a2, &a3));
    PT_CHECK(!fin && !strcmp(a2.p, "calculator") && !strcmp(a3.p, "{\"expression\": \"1\"}"));
    PT_OK(pu_agent_parse_react("Thought: done\nFinal Answer: 9\n", &fin, &a1, &a2, &a3));
    PT_CHECK(fin && !strcmp(a1.p, "9"));
    PT_CHECK(pu_agent_parse_react("just talking", &fin, &a1, &a2, &a3) == PU_ERR_FORMAT);
    pu_str_free(&a1);
    pu_str_free(&a2);
    pu_str_free(&a3);
    const char *replies[] = {
        "Thought: I should multiply.\nAction: calculator\nAction Input: {\"expression\": "
        "\"3*3\"}\nObservation: 10 (hallucinated)\n",
        "I am confused.", "Thought: I know it.\nFinal Answer: 9"};
    for (int mode = 0; mode < 2; mode++) {
        fake f = {.replies = replies, .n = 3};
        pu_agent_llm llm = {.ud = &f};
        const char *chat_replies[] = {
            "{\"role\":\"assistant\",\"content\":\"Thought: I should multiply.\\nAction: "
            "calculator\\nAction Input: {\\\"expression\\\": \\\"3*3\\\"}\\n\"}",
            "{\"role\":\"assistant\",\"content\":\"I am confused.\"}",
            "{\"role\":\"assistant\",\"content\":\"Thought: I know it.\\nFinal Answer: 9\"}"};
        if (mode == 0) {
            llm.complete = fake_complete;
        } else {
            llm.chat = fake_chat;
            f.replies = chat_replies;
        }
        pu_agent_opts o = {.protocol = PU_AGENT_REACT};
        pu_agent *a = NULL;
        PT_OK(pu_agent_create(&llm, t, &o, &a));
        pu_str ans = {0};
        pu_agent_outcome oc;
        PT_OK(pu_agent_run(a, "3 times 3?", &ans, &oc));
        PT_EQ_STR(ans.p, "9");
        PT_EQ_I64(oc.turns, 3);
        PT_EQ_I64(oc.tool_errors, 1);
        PT_CHECK_MSG(has(f.last_prompt.p, "Observation: 9") &&
                         !has(f.last_prompt.p, "hallucinated") &&
                         has(f.last_prompt.p, "Final Answer:") &&
                         has(f.last_prompt.p, "calculator: Exact arithmetic"),
                     "react prompt (mode %d):\n%s", mode, f.last_prompt.p);
        if (mode == 1)
            PT_CHECK(f.last_tools.len == 0); /* no function calling in react */
        pu_str_free(&ans);
        pu_agent_destroy(a);
        fake_free(&f);
    }
    pu_agent_tools_destroy(t);
}

static void check_tooluse(void) {
    const char *data =
        "[{\"conversations\": [{\"from\": \"human\", \"value\": \"Weather in Paris?\"},"
        " {\"from\": \"function_call\", \"value\": \"{\\\"name\\\": \\\"get_weather\\\", "
        "\\\"arguments\\\": {\\\"city\\\": \\\"Paris\\\", \\\"days\\\": 2}}\"}],"
        " \"tools\": \"[{\\\"name\\\": \\\"get_weather\\\", \\\"description\\\": \\\"w\\\", "
        "\\\"parameters\\\": {\\\"type\\\": \\\"object\\\", \\\"properties\\\": {}}}]\"},"
        " {\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", "
        "\"value\": \"hello\"}], \"tools\": \"[]\"},"
        " {\"conversations\": [{\"from\": \"human\", \"value\": \"Area?\"},"
        " {\"from\": \"function_call\", \"value\": \"{\\\"name\\\": \\\"area\\\", "
        "\\\"arguments\\\": \\\"{\\\\\\\"w\\\\\\\": 2}\\\"}\"}], \"tools\": \"[]\"},"
        " {\"conversations\": [{\"from\": \"human\", \"value\": \"x\"},"
        " {\"from\": \"function_call\", \"value\": \"{\\\"name\\\": \\\"f\\\", "
        "\\\"arguments\\\": {}}\"}], \"tools\": \"[]\"}]";
    char path[512];
    pt_tmp_path("tooluse.json", path, sizeof path);
    PT_OK(pu_file_write_atomic(path, data, strlen(data)));
    const char *replies[] = {
        "<|action_start|><|plugin|>\n{\"name\": \"get_weather\", \"parameters\": {\"days\": "
        "2.0, \"city\": \"Paris\"}}<|action_end|>",
        "<|action_start|><|plugin|>\n{\"name\": \"area\", \"parameters\": {\"w\": 3}}",
        "I do not know."};
    fake f = {.replies = replies, .n = 3};
    pu_agent_llm llm = {.ud = &f, .complete = fake_complete};
    pu_agent_tooluse_opts o = {.path = path, .protocol = PU_AGENT_NATIVE};
    pu_agent_tooluse_score sc;
    PT_OK(pu_agent_tooluse_eval(&llm, &o, &sc));
    PT_EQ_I64(sc.n, 3);
    PT_EQ_I64(sc.name_ok, 2);
    PT_EQ_I64(sc.exact_ok, 1);
    PT_EQ_I64(sc.no_call, 1);
    PT_CHECK_MSG(has(f.first_prompt.p, "<|im_start|>system name=<|plugin|>") &&
                     has(f.first_prompt.p, "get_weather") &&
                     has(f.first_prompt.p, "Weather in Paris?"),
                 "tooluse prompt:\n%s", f.first_prompt.p);
    const char *chat_replies[] = {
        "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"1\", \"type\": "
        "\"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": "
        "\"{\\\"city\\\": \\\"Paris\\\", \\\"days\\\": 2}\"}}]}",
        "{\"role\": \"assistant\", \"content\": \"no\"}"};
    fake g = {.replies = chat_replies, .n = 2};
    pu_agent_llm chat = {.ud = &g, .chat = fake_chat};
    o.protocol = PU_AGENT_OPENAI;
    PT_OK(pu_agent_tooluse_eval(&chat, &o, &sc));
    PT_EQ_I64(sc.n, 3);
    PT_EQ_I64(sc.exact_ok, 1);
    PT_EQ_I64(sc.no_call, 2);
    PT_CHECK_MSG(has(g.first_prompt.p, "\"type\":\"function\"") &&
                     has(g.first_prompt.p, "get_weather"),
                 "tools: %s", g.first_prompt.p);
    PT_CHECK(pu_agent_json_equal("{\"a\": [1, 2.0], \"b\": {}}", "{\"b\": {}, \"a\": [1.0, 2]}"));
    PT_CHECK(!pu_agent_json_equal("{\"a\": 1}", "{\"a\": \"1\"}"));
    /* the shared LLaMA-Factory file loads and is scored */
    char real[512];
    if (pt_shared_path("agent/glaive_toolcall_en_demo.json", real, sizeof real)) {
        fake h = {.replies = replies, .n = 1};
        pu_agent_llm l2 = {.ud = &h, .complete = fake_complete};
        pu_agent_tooluse_opts o2 = {.path = real, .limit = 20, .protocol = PU_AGENT_NATIVE};
        PT_OK(pu_agent_tooluse_eval(&l2, &o2, &sc));
        PT_EQ_I64(sc.n, 20);
        PT_CHECK(sc.exact_ok <= sc.name_ok && sc.name_ok <= sc.n);
        fake_free(&h);
    }
    char model[512], tok[512], evdata[512];
    if (pt_shared_path("models/stories260K/stories260K.bin", model, sizeof model) &&
        pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok) &&
        pt_shared_path("eval", evdata, sizeof evdata)) {
        char out[512], cmd[4096], *txt = NULL;
        pt_tmp_path("tooluse_cli", out, sizeof out);
        snprintf(cmd, sizeof cmd,
                 "%s eval -m %s -t %s --tasks tooluse_en --limit 2 --data %s --out %s 2>&1",
                 pt_bin(), model, tok, evdata, out);
        int rc = pt_run(cmd, &txt);
        PT_CHECK_MSG(rc == 0 && has(txt, "| tooluse_en | tool | 2 |"), "eval tooluse: %d %s", rc,
                     txt ? txt : "");
        pu_free(txt);
    }
    const char *bad = "{\"not\": \"an array\"}";
    PT_OK(pu_file_write_atomic(path, bad, strlen(bad)));
    PT_CHECK(pu_agent_tooluse_eval(&chat, &o, &sc) == PU_ERR_FORMAT);
    fake_free(&f);
    fake_free(&g);
}

/* reason_tool_use: every assistant turn a step; calls as a multiset, final
 * answers right when no tool is called */
static void check_tooluse_reason(void) {
    const char *data =
        "{\"messages\": [{\"role\": \"system\", \"content\": [{\"type\": \"text\", \"value\": "
        "\"S\"}]}, {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"value\": \"Weather "
        "in Paris and Oslo?\"}]}, {\"role\": \"assistant\", \"content\": [{\"type\": "
        "\"reasoning\", \"value\": \"REASONING-SECRET\"}, {\"type\": \"tool_call\", \"value\": "
        "\"{\\\"name\\\": \\\"get_weather\\\", \\\"arguments\\\": {\\\"city\\\": "
        "\\\"Paris\\\"}}\"}, {\"type\": \"tool_call\", \"value\": \"{\\\"name\\\": "
        "\\\"get_weather\\\", \\\"arguments\\\": {\\\"city\\\": \\\"Oslo\\\"}}\"}]}, {\"role\": "
        "\"tool\", \"content\": [{\"type\": \"text\", \"value\": \"sunny; rain\"}]}, {\"role\": "
        "\"assistant\", \"content\": [{\"type\": \"reasoning\", \"value\": \"r\"}, {\"type\": "
        "\"text\", \"value\": \"Paris sunny, Oslo rain.\"}]}, {\"role\": \"user\", \"content\": "
        "[{\"type\": \"text\", \"value\": \"And Rome?\"}]}, {\"role\": \"assistant\", "
        "\"content\": [{\"type\": \"tool_call\", \"value\": \"{\\\"name\\\": \\\"get_weather\\\", "
        "\\\"arguments\\\": {\\\"city\\\": \\\"Rome\\\", \\\"days\\\": 1}}\"}]}], \"tools\": "
        "\"[{\\\"type\\\": \\\"function\\\", \\\"function\\\": {\\\"name\\\": \\\"get_weather\\\", "
        "\\\"description\\\": \\\"w\\\", \\\"parameters\\\": {\\\"type\\\": \\\"object\\\", "
        "\\\"properties\\\": {\\\"city\\\": {\\\"type\\\": \\\"string\\\"}}}}}]\"}\n"
        "\n{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"value\": "
        "\"hi\"}]}, {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"value\": "
        "\"Hello\"}]}], \"tools\": \"[]\"}\n";
    char path[512];
    pt_tmp_path("reason.jsonl", path, sizeof path);
    PT_OK(pu_file_write_atomic(path, data, strlen(data)));
    /* the right answers (calls in another order, 1.0 for 1) */
    const char *right[] = {
        "<|action_start|><|plugin|>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": "
        "\"Oslo\"}}<|action_end|>\n<|action_start|><|plugin|>\n{\"name\": \"get_weather\", "
        "\"parameters\": {\"city\": \"Paris\"}}<|action_end|>",
        "Paris is sunny.<|im_end|>",
        "<|action_start|><|plugin|>\n{\"name\": \"get_weather\", \"parameters\": {\"days\": 1.0, "
        "\"city\": \"Rome\"}}<|action_end|>",
        "Hello!"};
    fake f = {.replies = right, .n = 4};
    pu_agent_llm llm = {.ud = &f, .complete = fake_complete};
    pu_agent_tooluse_opts o = {.path = path, .protocol = PU_AGENT_NATIVE};
    pu_agent_reason_score sc;
    PT_OK(pu_agent_tooluse_reason_eval(&llm, &o, &sc));
    PT_EQ_I64(sc.items, 2);
    PT_EQ_I64(sc.steps, 4);
    PT_EQ_I64(sc.call_steps, 2);
    PT_EQ_I64(sc.call_exact, 2);
    PT_EQ_I64(sc.answer_steps, 2);
    PT_EQ_I64(sc.answer_ok, 2);
    /* the step-3 prompt: gold history with its calls and the tool result, no reasoning,
     * the dataset's system prompt */
    PT_CHECK_MSG(f.calls == 4, "calls %d", f.calls);
    fake_free(&f);
    const char *right3[] = {right[0], right[1], right[2]};
    fake f3 = {.replies = right3, .n = 3};
    llm.ud = &f3;
    o.limit = 1;
    PT_OK(pu_agent_tooluse_reason_eval(&llm, &o, &sc));
    const char *pr = f3.last_prompt.p;
    PT_CHECK_MSG(has(pr, "And Rome?") && has(pr, "sunny; rain") && has(pr, "\"Oslo\"") &&
                     has(pr, "<|im_start|>system\nS") && !has(pr, "REASONING-SECRET") &&
                     has(pr, "Paris sunny, Oslo rain.") && has(pr, "get_weather"),
                 "step 3 prompt:\n%s", pr ? pr : "");
    fake_free(&f3);
    o.limit = 0;
    /* wrong answers: a call missing, a call where the gold answers, a wrong argument */
    const char *wrong[] = {
        "<|action_start|><|plugin|>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": "
        "\"Paris\"}}<|action_end|>",
        "<|action_start|><|plugin|>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": "
        "\"Paris\"}}<|action_end|>",
        "<|action_start|><|plugin|>\n{\"name\": \"get_weather\", \"parameters\": {\"days\": 1, "
        "\"city\": \"Roma\"}}<|action_end|>",
        "Hello"};
    fake w = {.replies = wrong, .n = 4};
    llm.ud = &w;
    PT_OK(pu_agent_tooluse_reason_eval(&llm, &o, &sc));
    PT_EQ_I64(sc.steps, 4);
    PT_EQ_I64(sc.call_exact, 0);
    PT_EQ_I64(sc.call_name, 1);
    PT_EQ_I64(sc.answer_ok, 1);
    fake_free(&w);
    /* openai protocol: tool_calls */
    const char *chat_right[] = {
        "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"1\", \"type\": "
        "\"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": "
        "\"{\\\"city\\\": \\\"Paris\\\"}\"}}, {\"id\": \"2\", \"type\": \"function\", "
        "\"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}}]}",
        "{\"role\": \"assistant\", \"content\": \"Paris sunny.\"}",
        "{\"role\": \"assistant\", \"content\": \"Rome?\"}",
        "{\"role\": \"assistant\", \"content\": \"Hello\"}"};
    fake g = {.replies = chat_right, .n = 4};
    pu_agent_llm chat = {.ud = &g, .chat = fake_chat};
    o.protocol = PU_AGENT_OPENAI;
    PT_OK(pu_agent_tooluse_reason_eval(&chat, &o, &sc));
    PT_EQ_I64(sc.call_exact, 1);
    PT_EQ_I64(sc.no_call, 1);
    PT_EQ_I64(sc.answer_ok, 2);
    PT_CHECK_MSG(has(g.last_prompt.p, "\"role\":\"tool\"") || has(g.last_prompt.p, "hi"),
                 "messages: %s", g.last_prompt.p);
    fake_free(&g);
    /* the shared file: a model that never calls a tool gets exactly the final-answer steps */
    char real[512];
    if (pt_shared_path("agent/reason_tool_use_demo_50.jsonl", real, sizeof real)) {
        const char *never[] = {"I cannot help with that."};
        fake h = {.replies = never, .n = 1};
        pu_agent_llm l2 = {.ud = &h, .complete = fake_complete};
        pu_agent_tooluse_opts o2 = {.path = real, .protocol = PU_AGENT_NATIVE};
        PT_OK(pu_agent_tooluse_reason_eval(&l2, &o2, &sc));
        PT_EQ_I64(sc.items, 50);
        PT_EQ_I64(sc.steps, 112);
        PT_EQ_I64(sc.call_steps, 53);
        PT_EQ_I64(sc.answer_ok, 59);
        PT_EQ_I64(sc.call_exact, 0);
        fake_free(&h);
    }
    char model[512], tok[512], evdata[512];
    if (pt_shared_path("models/stories260K/stories260K.bin", model, sizeof model) &&
        pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok) &&
        pt_shared_path("eval", evdata, sizeof evdata)) {
        char out[512], cmd[4096], *txt = NULL;
        pt_tmp_path("reason_cli", out, sizeof out);
        snprintf(cmd, sizeof cmd,
                 "%s eval -m %s -t %s --tasks tooluse_reason --limit 2 --data %s --out %s 2>&1",
                 pt_bin(), model, tok, evdata, out);
        int rc = pt_run(cmd, &txt);
        PT_CHECK_MSG(rc == 0 && has(txt, "| tooluse_reason | tool |"), "eval tooluse_reason: %d %s",
                     rc, txt ? txt : "");
        pu_free(txt);
    }
    const char *bad = "{\"messages\": 5}\n";
    PT_OK(pu_file_write_atomic(path, bad, strlen(bad)));
    PT_CHECK(pu_agent_tooluse_reason_eval(&chat, &o, &sc) == PU_ERR_FORMAT);
    PT_CHECK_MSG(has(pu_err_msg(), "reason.jsonl:1"), "message %s", pu_err_msg());
}

/* ------------------------------------------------------------------------ */
/* bad input end to end                                                      */

/* a one-thread HTTP server answering each connection with the next canned
 * response (NULL: close without a word) */
typedef struct canned {
    int fd, port, n;
    const char *const *resp;
} canned;

static void *canned_main(void *ud) {
    canned *c = ud;
    for (int i = 0; i < c->n; i++) {
        int fd = accept(c->fd, NULL, NULL);
        if (fd < 0)
            break;
        /* read the request: headers, then Content-Length bytes */
        char buf[65536];
        size_t got = 0;
        long want = -1;
        while (got < sizeof buf - 1) {
            ssize_t k = read(fd, buf + got, sizeof buf - 1 - got);
            if (k <= 0)
                break;
            got += (size_t)k;
            buf[got] = 0;
            char *he = strstr(buf, "\r\n\r\n");
            if (he && want < 0) {
                long cl = 0;
                for (char *q = buf; q < he; q++)
                    if (!strncasecmp(q, "\r\ncontent-length:", 17))
                        cl = atol(q + 17);
                want = (long)(he + 4 - buf) + cl;
            }
            if (want >= 0 && (long)got >= want)
                break;
        }
        if (c->resp[i]) {
            size_t off = 0, len = strlen(c->resp[i]);
            while (off < len) {
                ssize_t k = write(fd, c->resp[i] + off, len - off);
                if (k <= 0)
                    break;
                off += (size_t)k;
            }
        }
        close(fd);
    }
    return NULL;
}

static bool canned_start(canned *c, pthread_t *th) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (c->fd < 0 || bind(c->fd, (struct sockaddr *)&a, sizeof a) || listen(c->fd, 8) ||
        getsockname(c->fd, (struct sockaddr *)&a, &al))
        return false;
    c->port = ntohs(a.sin_port);
    return pthread_create(th, NULL, canned_main, c) == 0;
}

static void check_bad_endpoint(void) {
    static const char *const resp[] = {
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: "
        "30\r\nConnection: close\r\n\r\n{\"error\":{\"message\":\"boom!\"}}\n",
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 22\r\nConnection: "
        "close\r\n\r\n<html>not json</html>\n",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: "
        "close\r\n\r\n{\"object\":1}",
        NULL,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: "
        "close\r\n\r\n{\"choices\": [",
        /* then a good reply for the agent run below, then garbage in its second turn */
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
        "\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"calculator\","
        "\"arguments\":\"{\\\"expression\\\":\\\"1+1\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n\x01\xff garbage",
    };
    canned c = {.n = 7, .resp = resp};
    pthread_t th;
    if (!canned_start(&c, &th)) {
        pt_skip("no loopback listener");
        return;
    }
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", c.port);
    pu_agent_api_cfg cfg = {.url = url, .model = "m", .timeout_s = 10, .max_tokens = 8};
    pu_agent_llm llm;
    PT_OK(pu_agent_llm_api(&cfg, &llm));
    const char *msgs = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    const char *want[] = {"500", "JSON", "choices", "", "truncated"};
    for (int i = 0; i < 5; i++) {
        pu_str reply = {0};
        pu_status st = llm.chat(llm.ud, msgs, NULL, NULL, 0, &reply);
        PT_CHECK_MSG(st != PU_OK && has(pu_err_msg(), want[i]) && has(pu_err_msg(), "127.0.0.1"),
                     "canned %d: status %d: %s (reply %s)", i, st, pu_err_msg(),
                     reply.p ? reply.p : "");
        if (i == 0)
            PT_CHECK_MSG(has(pu_err_msg(), "boom!"), "the server's message: %s", pu_err_msg());
        pu_str_free(&reply);
    }
    /* the agent: a good turn, then garbage: an error naming the turn, transcript kept */
    pu_agent_tools *t = mk_tools("calculator");
    char logp[512];
    pt_tmp_path("agent_garbage.jsonl", logp, sizeof logp);
    FILE *log = fopen(logp, "w");
    pu_agent_opts o = {.protocol = PU_AGENT_OPENAI, .max_turns = 4, .log = log};
    pu_agent *a = NULL;
    if (t && log)
        PT_OK(pu_agent_create(&llm, t, &o, &a));
    if (a) {
        pu_str ans = {0};
        pu_agent_outcome oc;
        pu_status st = pu_agent_run(a, "one plus one?", &ans, &oc);
        PT_CHECK_MSG(st != PU_OK && has(pu_err_msg(), "turn 2"), "garbage turn: %d %s", st,
                     pu_err_msg());
        pu_str_free(&ans);
        pu_agent_destroy(a);
    }
    if (log)
        fclose(log);
    char *data = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(logp, &data, &len));
    int lines = 0;
    for (char *p = data, *nl; p && *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        PT_CHECK_MSG(json_is_object(j), "transcript line %d not JSON", lines + 1);
        json_decref(j);
        lines++;
    }
    PT_CHECK_MSG(lines >= 3 && has(data, "one plus one?") && has(data, "\"role\":\"tool\""),
                 "transcript (%d lines): %s", lines, data ? data : "");
    pu_free(data);
    pu_agent_tools_destroy(t);
    pu_agent_llm_api_free(&llm);
    pthread_join(th, NULL);
    close(c.fd);
}

/* python output in invalid UTF-8: the model and the transcript get valid UTF-8 */
static void check_python_bad_utf8(void) {
    pu_agent_tools *t = mk_tools("python");
    if (!t)
        return;
    const char *replies[] = {
        "<|action_start|><|interpreter|>\n```python\nimport sys\n"
        "sys.stdout.buffer.write(b'ok \\xff\\xfe\\xc3 end\\n')\n```<|action_end|>",
        "done<|im_end|>"};
    fake f = {.replies = replies, .n = 2};
    pu_agent_llm llm = {.ud = &f, .complete = fake_complete};
    char logp[512];
    pt_tmp_path("agent_utf8.jsonl", logp, sizeof logp);
    FILE *log = fopen(logp, "w");
    pu_agent_opts o = {.protocol = PU_AGENT_NATIVE, .max_turns = 4, .log = log};
    pu_agent *a = NULL;
    PT_OK(pu_agent_create(&llm, t, &o, &a));
    pu_str ans = {0};
    pu_agent_outcome oc;
    PT_OK(pu_agent_run(a, "bytes", &ans, &oc));
    fclose(log);
    const char *pr = f.last_prompt.p ? f.last_prompt.p : "";
    PT_CHECK_MSG(has(pr, "ok \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end"),
                 "prompt after bad bytes:\n%s", pr);
    /* the whole prompt is valid UTF-8 (jansson refuses invalid strings) */
    json_t *js = json_string(pr);
    PT_CHECK(js != NULL);
    json_decref(js);
    char *data = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(logp, &data, &len));
    int bad = 0, lines = 0;
    for (char *p = data, *nl; p && *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        bad += !j;
        lines++;
        json_decref(j);
    }
    PT_CHECK_MSG(lines >= 3 && bad == 0 && has(data, "end"), "transcript: %d lines, %d bad", lines,
                 bad);
    pu_free(data);
    pu_str_free(&ans);
    pu_agent_destroy(a);
    fake_free(&f);
    pu_agent_tools_destroy(t);
}

extern char **environ;

static pid_t serve_start(const char *model, const char *tok, const char *log, char *url,
                         size_t cap) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    char *argv[] = {(char *)pt_bin(), "serve", "-m",        (char *)model, "-t", (char *)tok,
                    "--port",         "0",     "--threads", "1",           NULL};
    pid_t pid = -1;
    if (posix_spawn(&pid, pt_bin(), &fa, NULL, argv, environ) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; pid > 0 && i < 200; i++) {
        char *buf = NULL;
        size_t len = 0;
        if (pu_file_read_all(log, &buf, &len) == PU_OK) {
            const char *h = strstr(buf, "listening on http://");
            if (h) {
                const char *e = h + 13;
                while (*e && *e != '\n' && *e != ' ')
                    e++;
                snprintf(url, cap, "%.*s", (int)(e - (h + 13)), h + 13);
                pu_free(buf);
                return pid;
            }
            pu_free(buf);
        }
        pu_err_clear();
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        usleep(50000);
    }
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

static void check_cli_serve(void) {
    char model[512], tok[512];
    if (!pt_shared_path("models/stories260K/stories260K.bin", model, sizeof model) ||
        !pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok))
        return;
    char log[512], url[256], tlog[512];
    pt_tmp_path("agent_serve.log", log, sizeof log);
    pt_tmp_path("agent_cli.jsonl", tlog, sizeof tlog);
    pid_t pid = serve_start(model, tok, log, url, sizeof url);
    PT_CHECK_MSG(pid > 0, "puyu serve did not start (see %s)", log);
    if (pid <= 0)
        return;
    /* the tiny model writes stories, not tool calls: the loop must end with
     * its text as the answer, the request carrying the tools */
    for (int proto = 0; proto < 2; proto++) {
        char cmd[2048], *out = NULL;
        snprintf(cmd, sizeof cmd,
                 "%s agent --api %s --model stories --tools %s --system 'Be brief.' -p "
                 "'Once upon a time' --max-turns %d --max-tokens 16 --protocol %s --log %s 2>&1",
                 pt_bin(), url, proto ? "''" : "calculator", proto ? 1 : 2,
                 proto ? "react" : "openai", tlog);
        int rc = pt_run(cmd, &out);
        PT_CHECK_MSG(rc == 0 || rc == 3, "agent --api (%s) rc %d: %s", proto ? "react" : "openai",
                     rc, out ? out : "");
        PT_CHECK_MSG(out && !has(out, "error"), "agent --api: %s", out ? out : "");
        pu_free(out);
    }
    char *data = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(tlog, &data, &len));
    PT_CHECK_MSG(has(data, "\"role\":\"assistant\"") && has(data, "Once upon a time"),
                 "transcript: %s", data ? data : "");
    pu_free(data);
    /* interactive: one prompt per stdin line, /reset between */
    {
        char cmd2[2048], *o2 = NULL;
        snprintf(cmd2, sizeof cmd2,
                 "printf 'Once\\n/reset\\nThe cat\\n' | %s agent --api %s --tools '' --max-turns 1 "
                 "--max-tokens 8 2>/dev/null",
                 pt_bin(), url);
        int rc2 = pt_run(cmd2, &o2);
        int lines = 0;
        for (const char *q = o2; q && *q; q++)
            lines += *q == '\n';
        PT_CHECK_MSG((rc2 == 0 || rc2 == 3) && lines >= 2, "interactive: rc %d, %d lines: %s", rc2,
                     lines, o2 ? o2 : "");
        pu_free(o2);
    }
    /* an endpoint error is reported with the transcript path */
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s agent --api %s/nope --tools calculator -p hi --log %s 2>&1",
             pt_bin(), url, tlog);
    int rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 1 && has(out, "HTTP 404") && has(out, "transcript"), "404: rc %d %s", rc,
                 out ? out : "");
    pu_free(out);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

PT_SUITE(agent) {
    if (PT_TEST("calculator: exact rationals, errors name the column"))
        check_calculator();
    if (PT_TEST("tools: schemas validated, user tools, read_file confined"))
        check_tools();
    if (PT_TEST("agent native protocol (fake model): plugin + interpreter calls"))
        check_native();
    if (PT_TEST("agent: malformed calls retried, max_turns, endpoint errors"))
        check_malformed_and_bounds();
    if (PT_TEST("agent openai protocol (fake model): tool_calls, role tool"))
        check_openai();
    if (PT_TEST("agent react protocol (fake model)"))
        check_react();
    if (PT_TEST("tool-use eval: first call name + arguments exact match"))
        check_tooluse();
    if (PT_TEST("tool-use eval: reason_tool_use steps (calls multiset, final answers)"))
        check_tooluse_reason();
    if (PT_TEST("agent: endpoint errors and garbage over HTTP, transcript kept"))
        check_bad_endpoint();
    if (PT_TEST("agent: python output in invalid UTF-8") && sandbox_ok())
        check_python_bad_utf8();
    if (PT_TEST("puyu agent --api against puyu serve (stories260K)"))
        check_cli_serve();
}
