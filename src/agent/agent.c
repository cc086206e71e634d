/*
 * agent.c — the agent loop: model call -> tool calls -> environment results
 * -> ... -> final answer, bounded by max_turns model calls per prompt.
 *
 * The conversation is a jansson array of OpenAI-style messages. Protocols:
 *  - native (InternLM2): rendered with pu_chat (tool declarations in a
 *    "system name=<|plugin|>" turn, the interpreter declaration in
 *    "system name=<|interpreter|>", python calls as <|interpreter|> code
 *    blocks, results as environment turns); the model's text is generated up
 *    to <|action_end|> / <|im_end|> and parsed by pu_chat_parse_reply;
 *  - openai: the messages and the tools array go to llm.chat as they are;
 *    the reply's tool_calls are executed and answered with role "tool";
 *  - react: a system prompt describing the tools and the Thought / Action /
 *    Action Input / Observation / Final Answer format; results go back as
 *    "Observation: ..." user turns; generation stops at "Observation:".
 * A malformed call (bad JSON, unknown tool, missing arguments) is answered
 * with an error result so the model can retry; it counts as a turn.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_agent.h"
#include "puyu/pu_chat.h"

struct pu_agent {
    pu_agent_llm llm;
    pu_agent_tools *tools;
    pu_agent_opts o;
    json_t *msgs;
    char *system;
    int call_seq;
};

static const char *k_interpreter_decl =
    "You now have access to a Python interpreter in a stateful Jupyter-notebook-like "
    "environment. When you send a message with Python code to python, it is executed there "
    "(variables persist between calls, files are written to the current directory, there is "
    "no network). Use it for calculations, data analysis and checking your work.";

static const char *k_react_head =
    "Answer the question as well as you can. You have access to these tools:\n\n";

static const char *k_react_tail =
    "\nUse exactly this format:\n\n"
    "Thought: what to do next\n"
    "Action: the tool to use, one of [%s]\n"
    "Action Input: the tool's arguments as a JSON object\n"
    "Observation: the tool's result (written for you; do not write it yourself)\n"
    "... (Thought / Action / Action Input / Observation may repeat)\n"
    "Thought: I now know the final answer\n"
    "Final Answer: the answer to the question\n";

int pu_agent_protocol_parse(const char *s) {
    if (!strcmp(s, "native"))
        return PU_AGENT_NATIVE;
    if (!strcmp(s, "openai"))
        return PU_AGENT_OPENAI;
    if (!strcmp(s, "react"))
        return PU_AGENT_REACT;
    return -1;
}

/* jansson string from arbitrary bytes (made valid UTF-8) */
static json_t *jstr(const char *s, size_t n) {
    pu_str c = {0};
    pu_agent_utf8_sanitize(s ? s : "", s ? n : 0, &c);
    json_t *j = json_stringn(c.p, c.len);
    pu_str_free(&c);
    return j;
}

static json_t *jstrz(const char *s) {
    return jstr(s, s ? strlen(s) : 0);
}

static void emit(pu_agent *a, json_t *m) {
    if (!a->o.log && !a->o.on_message)
        return;
    char *s = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (a->o.log) {
        fputs(s, a->o.log);
        fputc('\n', a->o.log);
        fflush(a->o.log);
    }
    if (a->o.on_message)
        a->o.on_message(a->o.ud, s);
    free(s);
}

static void add_msg(pu_agent *a, json_t *m) {
    json_array_append_new(a->msgs, m);
    emit(a, m);
}

static void add_text(pu_agent *a, const char *role, const char *content) {
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string(role));
    json_object_set_new(m, "content", jstrz(content));
    add_msg(a, m);
}

static const char *tool_names(const pu_agent *a, pu_str *s) {
    const char *tj = pu_agent_tools_openai_json(a->tools);
    json_t *arr = tj ? json_loads(tj, 0, NULL) : NULL;
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        if (i)
            pu_str_puts(s, ", ");
        pu_str_puts(s, json_string_value(json_object_get(json_object_get(e, "function"), "name")));
    }
    json_decref(arr);
    return s->p ? s->p : "";
}

static void build_system(pu_agent *a) {
    pu_str s = {0};
    if (a->o.system) {
        pu_str_puts(&s, a->o.system);
    } else if (a->o.protocol == PU_AGENT_NATIVE) {
        pu_str_puts(&s, pu_chat_default_system());
    } else {
        pu_str_puts(&s, "You are a helpful assistant. Use the tools when they help; reply with "
                        "the final answer when you have it.");
    }
    if (a->o.protocol == PU_AGENT_REACT) {
        pu_str_puts(&s, "\n\n");
        pu_str_puts(&s, k_react_head);
        const char *tj = pu_agent_tools_openai_json(a->tools);
        json_t *arr = tj ? json_loads(tj, 0, NULL) : NULL;
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            json_t *fn = json_object_get(e, "function");
            char *params =
                json_dumps(json_object_get(fn, "parameters"), JSON_COMPACT | JSON_PRESERVE_ORDER);
            pu_str_appendf(&s, "%s: %s Arguments: %s\n",
                           json_string_value(json_object_get(fn, "name")),
                           json_string_value(json_object_get(fn, "description"))
                               ? json_string_value(json_object_get(fn, "description"))
                               : "",
                           params ? params : "{}");
            free(params);
        }
        json_decref(arr);
        pu_str names = {0};
        pu_str_appendf(&s, k_react_tail, tool_names(a, &names));
        pu_str_free(&names);
    }
    pu_free(a->system);
    a->system = pu_str_steal(&s);
}

pu_status pu_agent_create(const pu_agent_llm *llm, pu_agent_tools *tools, const pu_agent_opts *o,
                          pu_agent **out) {
    *out = NULL;
    pu_agent_opts oo = o ? *o : (pu_agent_opts){0};
    if (!oo.protocol)
        oo.protocol = llm->complete ? PU_AGENT_NATIVE : PU_AGENT_OPENAI;
    if (oo.max_turns <= 0)
        oo.max_turns = 8;
    if (oo.protocol == PU_AGENT_NATIVE && !llm->complete)
        return pu_err_set(PU_ERR_INVALID, "agent: the native protocol needs a local model "
                                          "(use --protocol openai or react with --api)");
    if (oo.protocol == PU_AGENT_OPENAI && !llm->chat)
        return pu_err_set(PU_ERR_INVALID, "agent: the openai protocol needs a chat endpoint "
                                          "(--api); local models use native or react");
    if (oo.protocol == PU_AGENT_REACT && !llm->chat && !llm->complete)
        return pu_err_set(PU_ERR_INVALID, "agent: the model has no completion interface");
    pu_agent *a = pu_calloc(1, sizeof *a);
    a->llm = *llm;
    a->tools = tools;
    a->o = oo;
    a->msgs = json_array();
    build_system(a);
    pu_agent_reset(a);
    *out = a;
    return PU_OK;
}

void pu_agent_destroy(pu_agent *a) {
    if (!a)
        return;
    json_decref(a->msgs);
    pu_free(a->system);
    pu_free(a);
}

void pu_agent_reset(pu_agent *a) {
    json_array_clear(a->msgs);
    add_text(a, "system", a->system);
}

void pu_agent_messages_json(const pu_agent *a, pu_str *out) {
    char *s = json_dumps(a->msgs, JSON_COMPACT | JSON_PRESERVE_ORDER);
    pu_str_puts(out, s);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* rendering                                                                 */

static const char *mstr(const json_t *m, const char *k) {
    const char *s = json_string_value(json_object_get(m, k));
    return s ? s : "";
}

pu_status pu_agent_render_native(const pu_agent *a, pu_str *out) {
    pu_chat c;
    pu_chat_init(&c);
    pu_status st = PU_OK;
    size_t i;
    json_t *m;
    json_array_foreach(a->msgs, i, m) {
        const char *role = mstr(m, "role");
        if (!strcmp(role, "tool")) {
            bool py = !strcmp(mstr(m, "name"), "python");
            pu_chat_add(&c, "environment", py ? "interpreter" : "plugin", mstr(m, "content"));
        } else if (!strcmp(role, "assistant")) {
            pu_chat_msg *cm = pu_chat_add(&c, "assistant", NULL, mstr(m, "content"));
            size_t k;
            json_t *tc;
            json_array_foreach(json_object_get(m, "tool_calls"), k, tc) {
                json_t *fn = json_object_get(tc, "function");
                const char *name = mstr(fn, "name"), *args = mstr(fn, "arguments");
                json_t *aj = json_loads(args, 0, NULL);
                if (!strcmp(name, "python") && json_is_string(json_object_get(aj, "code")))
                    st = pu_chat_add_call(cm, PU_CHAT_CALL_INTERPRETER, NULL, NULL,
                                          json_string_value(json_object_get(aj, "code")));
                else
                    st = pu_chat_add_call(cm, PU_CHAT_CALL_PLUGIN, name,
                                          json_is_object(aj) ? args : "{}", NULL);
                json_decref(aj);
                if (st)
                    break;
            }
        } else {
            pu_chat_add(&c, role, NULL, mstr(m, "content"));
        }
        if (st)
            break;
    }
    /* plugins = every tool but python (which is the interpreter) */
    char *plugins = NULL;
    const char *tj = pu_agent_tools_openai_json(a->tools);
    if (tj) {
        json_t *arr = json_loads(tj, 0, NULL), *keep = json_array();
        size_t k;
        json_t *e;
        json_array_foreach(arr, k, e) {
            if (strcmp(mstr(json_object_get(e, "function"), "name"), "python"))
                json_array_append(keep, json_object_get(e, "function"));
        }
        if (json_array_size(keep))
            plugins = json_dumps(keep, JSON_PRESERVE_ORDER);
        json_decref(keep);
        json_decref(arr);
    }
    pu_chat_render_opts ro = {
        .add_generation_prompt = true,
        .tools_json = plugins,
        .interpreter = pu_agent_tools_has(a->tools, "python") ? k_interpreter_decl : NULL};
    if (st == PU_OK)
        st = pu_chat_render(&c, &ro, out);
    free(plugins);
    pu_chat_free(&c);
    return st;
}

/* ReAct: tool results become "Observation:" user turns, assistant turns
 * keep their raw text (stored in "content"). As OpenAI messages (chat) or
 * rendered with the chat template (complete). */
static json_t *react_messages(const pu_agent *a) {
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(a->msgs, i, m) {
        const char *role = mstr(m, "role");
        json_t *n = json_object();
        if (!strcmp(role, "tool")) {
            pu_str s = {0};
            pu_str_appendf(&s, "Observation: %s", mstr(m, "content"));
            json_object_set_new(n, "role", json_string("user"));
            json_object_set_new(n, "content", json_string(s.p));
            pu_str_free(&s);
        } else {
            json_object_set_new(n, "role", json_string(role));
            json_object_set_new(n, "content", json_string(mstr(m, "content")));
        }
        json_array_append_new(out, n);
    }
    return out;
}

static pu_status render_react_text(const pu_agent *a, pu_str *out) {
    json_t *ms = react_messages(a);
    pu_chat c;
    pu_chat_init(&c);
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m) pu_chat_add(&c, mstr(m, "role"), NULL, mstr(m, "content"));
    pu_chat_render_opts ro = {.add_generation_prompt = true};
    pu_status st = pu_chat_render(&c, &ro, out);
    pu_chat_free(&c);
    json_decref(ms);
    return st;
}

/* ------------------------------------------------------------------------ */
/* ReAct parsing                                                             */

static const char *find_label(const char *s, const char *label) {
    /* a label at the start of a line */
    size_t n = strlen(label);
    for (const char *p = s; (p = strstr(p, label)); p += n)
        if (p == s || p[-1] == '\n')
            return p;
    return NULL;
}

static void trim_into(const char *b, const char *e, pu_str *out) {
    while (b < e && (*b == ' ' || *b == '\n' || *b == '\r' || *b == '\t'))
        b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\r' || e[-1] == '\t'))
        e--;
    pu_str_clear(out);
    pu_str_puts(out, "");
    pu_str_append(out, b, (size_t)(e - b));
}

pu_status pu_agent_parse_react(const char *reply, bool *final, pu_str *text, pu_str *name,
                               pu_str *args) {
    *final = false;
    const char *fa = find_label(reply, "Final Answer:");
    const char *ac = find_label(reply, "Action:");
    if (fa && (!ac || fa < ac)) {
        *final = true;
        trim_into(fa + 13, reply + strlen(reply), text);
        return PU_OK;
    }
    if (!ac)
        return pu_err_set(PU_ERR_FORMAT, "react: no \"Action:\" or \"Final Answer:\" line");
    const char *nl = strchr(ac, '\n');
    trim_into(ac + 7, nl ? nl : ac + strlen(ac), name);
    /* "Action: python" may be followed by brackets or quotes */
    const char *ai = find_label(ac, "Action Input:");
    if (!ai)
        return pu_err_set(PU_ERR_FORMAT, "react: \"Action: %.40s\" without \"Action Input:\"",
                          name->p);
    const char *end = find_label(ai, "Observation:");
    trim_into(ai + 13, end ? end : ai + strlen(ai), args);
    trim_into(reply, ac, text);
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* the loop                                                                  */

static void next_id(pu_agent *a, char *buf, size_t cap) {
    snprintf(buf, cap, "call_%d", ++a->call_seq);
}

/* one tool call: run it and append the tool message */
static pu_status run_call(pu_agent *a, const char *id, const char *name, const char *args,
                          pu_agent_outcome *oc) {
    pu_str res = {0};
    bool is_err = false;
    pu_status st = pu_agent_tools_call(a->tools, name, args, &res, &is_err);
    if (st != PU_OK) {
        pu_str_free(&res);
        return st;
    }
    oc->tool_calls++;
    if (is_err)
        oc->tool_errors++;
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("tool"));
    json_object_set_new(m, "tool_call_id", json_string(id));
    json_object_set_new(m, "name", jstrz(name));
    json_object_set_new(m, "content", jstr(res.p, res.len));
    add_msg(a, m);
    pu_str_free(&res);
    return PU_OK;
}

static json_t *make_call(const char *id, const char *name, const char *args) {
    return json_pack("{s:s, s:s, s:{s:o, s:o}}", "id", id, "type", "function", "function", "name",
                     jstrz(name), "arguments", jstrz(args));
}

/* an error result for a call the model wrote badly (no call was run) */
static void add_error_result(pu_agent *a, const char *id, const char *name, const char *msg,
                             pu_agent_outcome *oc) {
    oc->tool_calls++;
    oc->tool_errors++;
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("tool"));
    json_object_set_new(m, "tool_call_id", json_string(id));
    json_object_set_new(m, "name", jstrz(name && *name ? name : "invalid"));
    json_object_set_new(m, "content", jstrz(msg));
    add_msg(a, m);
}

/* native: returns true when the reply had calls (executed) */
static pu_status turn_native(pu_agent *a, pu_str *answer, bool *called, pu_agent_outcome *oc) {
    pu_str prompt = {0}, out = {0};
    pu_status st = pu_agent_render_native(a, &prompt);
    const char *stops[] = {"<|action_end|>", "<|im_end|>"};
    if (st == PU_OK)
        st = a->llm.complete(a->llm.ud, prompt.p, stops, 2, &out);
    pu_str_free(&prompt);
    if (st != PU_OK) {
        pu_str_free(&out);
        return st;
    }
    pu_chat_reply r;
    pu_status ps = pu_chat_parse_reply(out.p ? out.p : "", out.len, &r);
    char perr[512];
    snprintf(perr, sizeof perr, "%s", ps ? pu_err_msg() : "");
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("assistant"));
    json_object_set_new(m, "content", jstrz(r.content));
    json_t *calls = json_array();
    char ids[16][24];
    int nc = r.n_calls < 16 ? r.n_calls : 16;
    for (int i = 0; i < nc; i++) {
        next_id(a, ids[i], sizeof ids[i]);
        pu_chat_call *k = &r.calls[i];
        if (k->kind == PU_CHAT_CALL_INTERPRETER) {
            json_t *aj = json_pack("{s:o}", "code", jstrz(k->code));
            char *as = json_dumps(aj, JSON_COMPACT);
            json_array_append_new(calls, make_call(ids[i], "python", as));
            free(as);
            json_decref(aj);
        } else {
            json_array_append_new(calls, make_call(ids[i], k->name, k->arguments));
        }
    }
    if (json_array_size(calls))
        json_object_set_new(m, "tool_calls", calls);
    else
        json_decref(calls);
    add_msg(a, m);
    *called = nc > 0 || ps != PU_OK;
    for (int i = 0; i < nc && st == PU_OK; i++) {
        pu_chat_call *k = &r.calls[i];
        if (k->kind == PU_CHAT_CALL_PLUGIN && (!k->name || !*k->name)) {
            pu_str e = {0};
            pu_str_appendf(&e,
                           "error: malformed tool call (%s); write "
                           "<|action_start|><|plugin|>\n{\"name\": TOOL, \"parameters\": "
                           "{...}}<|action_end|>",
                           perr);
            add_error_result(a, ids[i], "invalid", e.p, oc);
            pu_str_free(&e);
            continue;
        }
        if (k->kind == PU_CHAT_CALL_INTERPRETER && !pu_agent_tools_has(a->tools, "python")) {
            add_error_result(a, ids[i], "python", "error: no Python interpreter is available", oc);
            continue;
        }
        json_t *last = json_array_get(json_object_get(m, "tool_calls"), (size_t)i);
        json_t *fn = json_object_get(last, "function");
        st = run_call(a, ids[i], mstr(fn, "name"), mstr(fn, "arguments"), oc);
    }
    if (ps != PU_OK && nc == 0) {
        char id[24];
        next_id(a, id, sizeof id);
        pu_str e = {0};
        pu_str_appendf(&e, "error: malformed action (%s)", perr);
        add_error_result(a, id, "invalid", e.p, oc);
        pu_str_free(&e);
    }
    pu_str_clear(answer);
    pu_str_puts(answer, r.content ? r.content : "");
    pu_chat_reply_free(&r);
    pu_str_free(&out);
    return st;
}

static pu_status turn_openai(pu_agent *a, pu_str *answer, bool *called, pu_agent_outcome *oc) {
    char *msgs = json_dumps(a->msgs, JSON_COMPACT | JSON_PRESERVE_ORDER);
    pu_str reply = {0};
    pu_status st =
        a->llm.chat(a->llm.ud, msgs, pu_agent_tools_openai_json(a->tools), NULL, 0, &reply);
    free(msgs);
    if (st != PU_OK) {
        pu_str_free(&reply);
        return st;
    }
    json_error_t je;
    json_t *r = json_loadb(reply.p ? reply.p : "", reply.len, 0, &je);
    pu_str_free(&reply);
    if (!json_is_object(r)) {
        json_decref(r);
        return pu_err_set(PU_ERR_FORMAT, "agent: the model's reply is not a JSON message object");
    }
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("assistant"));
    json_t *content = json_object_get(r, "content");
    json_object_set_new(m, "content",
                        json_is_string(content)
                            ? jstr(json_string_value(content), json_string_length(content))
                            : json_string(""));
    json_t *tcs = json_object_get(r, "tool_calls");
    json_t *calls = json_array();
    size_t i;
    json_t *tc;
    json_array_foreach(tcs, i, tc) {
        if (i >= 16)
            break;
        json_t *fn = json_object_get(tc, "function");
        const char *id = json_string_value(json_object_get(tc, "id"));
        char idbuf[24];
        if (!id || !*id) {
            next_id(a, idbuf, sizeof idbuf);
            id = idbuf;
        }
        json_t *args = json_object_get(fn, "arguments");
        char *as = json_is_string(args) ? pu_strdup(json_string_value(args))
                   : args               ? json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER)
                                        : pu_strdup("{}");
        json_array_append_new(calls, make_call(id, mstr(fn, "name"), as));
        if (json_is_string(args) || !args)
            pu_free(as);
        else
            free(as);
    }
    json_decref(r);
    bool any = json_array_size(calls) > 0;
    if (any)
        json_object_set_new(m, "tool_calls", calls);
    else
        json_decref(calls);
    add_msg(a, m);
    *called = any;
    json_array_foreach(json_object_get(m, "tool_calls"), i, tc) {
        json_t *fn = json_object_get(tc, "function");
        st = run_call(a, mstr(tc, "id"), mstr(fn, "name"), mstr(fn, "arguments"), oc);
        if (st)
            break;
    }
    pu_str_clear(answer);
    pu_str_puts(answer, mstr(m, "content"));
    return st;
}

static pu_status turn_react(pu_agent *a, pu_str *answer, bool *called, pu_agent_outcome *oc) {
    pu_str out = {0};
    pu_status st;
    if (a->llm.complete) {
        pu_str prompt = {0};
        st = render_react_text(a, &prompt);
        const char *stops[] = {"Observation:", "<|im_end|>"};
        if (st == PU_OK)
            st = a->llm.complete(a->llm.ud, prompt.p, stops, 2, &out);
        pu_str_free(&prompt);
    } else {
        json_t *ms = react_messages(a);
        char *msgs = json_dumps(ms, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(ms);
        const char *stops[] = {"Observation:"};
        pu_str reply = {0};
        st = a->llm.chat(a->llm.ud, msgs, NULL, stops, 1, &reply);
        free(msgs);
        if (st == PU_OK) {
            json_t *r = json_loadb(reply.p ? reply.p : "", reply.len, 0, NULL);
            const char *c = json_string_value(json_object_get(r, "content"));
            if (!json_is_object(r))
                st = pu_err_set(PU_ERR_FORMAT, "agent: the model's reply is not a JSON message");
            else
                pu_str_puts(&out, c ? c : "");
            json_decref(r);
        }
        pu_str_free(&reply);
    }
    if (st != PU_OK) {
        pu_str_free(&out);
        return st;
    }
    /* cut a hallucinated observation */
    const char *text = out.p ? out.p : "";
    const char *obs = find_label(text, "Observation:");
    size_t tl = obs ? (size_t)(obs - text) : out.len;
    pu_str raw = {0};
    pu_str_append(&raw, text, tl);
    pu_str_puts(&raw, "");
    bool final = false;
    pu_str ftext = {0}, name = {0}, args = {0};
    pu_status ps = pu_agent_parse_react(raw.p, &final, &ftext, &name, &args);
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("assistant"));
    json_object_set_new(m, "content", jstr(raw.p, raw.len));
    char id[24];
    next_id(a, id, sizeof id);
    pu_str argj = {0};
    if (ps == PU_OK && !final) {
        /* python accepts bare code (or a fenced block) as its input */
        json_t *aj = json_loads(args.p, 0, NULL);
        if (!json_is_object(aj) && !strcmp(name.p, "python")) {
            const char *cb = args.p, *ce = args.p + args.len;
            if (args.len >= 3 && !strncmp(cb, "```", 3)) {
                const char *nl = strchr(cb, '\n');
                cb = nl ? nl + 1 : ce;
                if (ce - cb >= 3 && !strncmp(ce - 3, "```", 3))
                    ce -= 3;
            }
            json_t *w = json_pack("{s:o}", "code", jstr(cb, (size_t)(ce - cb)));
            char *ws = json_dumps(w, JSON_COMPACT);
            pu_str_puts(&argj, ws);
            free(ws);
            json_decref(w);
        } else {
            pu_str_puts(&argj, args.p);
        }
        json_decref(aj);
        json_t *calls = json_array();
        json_array_append_new(calls, make_call(id, name.p, argj.p));
        json_object_set_new(m, "tool_calls", calls);
    }
    add_msg(a, m);
    if (ps != PU_OK) {
        *called = true; /* ask again */
        pu_str e = {0};
        pu_str_appendf(&e,
                       "error: %s. Reply with \"Action:\" + \"Action Input:\" lines, or "
                       "\"Final Answer:\".",
                       pu_err_msg());
        add_error_result(a, id, "invalid", e.p, oc);
        pu_str_free(&e);
        pu_str_clear(answer);
        pu_str_puts(answer, raw.p);
    } else if (final) {
        *called = false;
        pu_str_clear(answer);
        pu_str_puts(answer, ftext.p);
    } else {
        *called = true;
        st = run_call(a, id, name.p, argj.p, oc);
        pu_str_clear(answer);
        pu_str_puts(answer, ftext.p ? ftext.p : "");
    }
    pu_str_free(&argj);
    pu_str_free(&ftext);
    pu_str_free(&name);
    pu_str_free(&args);
    pu_str_free(&raw);
    pu_str_free(&out);
    return st;
}

pu_status pu_agent_run(pu_agent *a, const char *prompt, pu_str *answer, pu_agent_outcome *oc) {
    pu_agent_outcome dummy;
    if (!oc)
        oc = &dummy;
    memset(oc, 0, sizeof *oc);
    pu_str_clear(answer);
    pu_str_puts(answer, "");
    add_text(a, "user", prompt);
    pu_status st = PU_OK;
    while (oc->turns < a->o.max_turns) {
        bool called = false;
        oc->turns++;
        if (a->o.protocol == PU_AGENT_NATIVE)
            st = turn_native(a, answer, &called, oc);
        else if (a->o.protocol == PU_AGENT_OPENAI)
            st = turn_openai(a, answer, &called, oc);
        else
            st = turn_react(a, answer, &called, oc);
        if (st != PU_OK)
            return pu_err_prefix(st, "agent turn %d: ", oc->turns);
        if (!called) {
            oc->finished = true;
            break;
        }
    }
    return PU_OK;
}
