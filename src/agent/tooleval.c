/*
 * tooleval.c — tool-use evaluation on ShareGPT tool-call conversations
 * (LLaMA-Factory's glaive_toolcall_{en,zh}_demo.json: "conversations" of
 * human / gpt / function_call / observation turns + a "tools" JSON string).
 *
 * Per conversation with a function_call: the turns before the first call
 * become OpenAI messages, the tools its schemas; the model answers once —
 * native: the InternLM2 prompt (pu_chat with the tools in a
 * "system name=<|plugin|>" turn) generated to <|action_end|> and parsed by
 * pu_chat_parse_reply; openai: llm.chat with tools — and its first call is
 * compared with the gold one: name exact, arguments equal as JSON (numbers
 * by value, key order ignored).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_agent.h"
#include "puyu/pu_chat.h"

static bool jeq(const json_t *a, const json_t *b) {
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_is_object(a) && json_is_object(b)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !jeq(v, w))
                return false;
        }
        return true;
    }
    if (json_is_array(a) && json_is_array(b)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!jeq(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    return json_equal(a, b);
}

bool pu_agent_json_equal(const char *a, const char *b) {
    json_t *x = json_loads(a, JSON_DECODE_ANY, NULL), *y = json_loads(b, JSON_DECODE_ANY, NULL);
    bool eq = x && y && jeq(x, y);
    json_decref(x);
    json_decref(y);
    return eq;
}

/* arguments as a JSON object (given as an object or as JSON text) */
static json_t *args_obj(json_t *a) {
    if (json_is_string(a))
        return json_loads(json_string_value(a), 0, NULL);
    return a ? json_incref(a) : json_object();
}

/* the model's calls for the conversation msgs: a JSON array of {"name",
 * "arguments"} (arguments an object, or null when not JSON) */
static pu_status ask_native_calls(const pu_agent_llm *llm, json_t *msgs, const char *tools,
                                  bool default_system, json_t **calls) {
    *calls = json_array();
    pu_chat c;
    pu_chat_init(&c);
    const char *r0 = json_string_value(json_object_get(json_array_get(msgs, 0), "role"));
    if (default_system || !r0 || strcmp(r0, "system"))
        pu_chat_add(&c, "system", NULL, pu_chat_default_system());
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *content = json_string_value(json_object_get(m, "content"));
        pu_chat_msg *cm =
            pu_chat_add(&c, !strcmp(role, "tool") ? "environment" : role,
                        !strcmp(role, "tool") ? "plugin" : NULL, content ? content : "");
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(m, "tool_calls"), k, tc) {
            json_t *fn = json_object_get(tc, "function");
            pu_chat_add_call(cm, PU_CHAT_CALL_PLUGIN,
                             json_string_value(json_object_get(fn, "name")),
                             json_string_value(json_object_get(fn, "arguments")), NULL);
        }
    }
    pu_chat_render_opts ro = {.add_generation_prompt = true, .tools_json = tools};
    pu_str prompt = {0}, out = {0};
    pu_status st = pu_chat_render(&c, &ro, &prompt);
    pu_chat_free(&c);
    /* one call per turn (glaive: the first call is scored), or up to the turn's end (several
     * calls in a row, each its own action block) */
    const char *stops[] = {"<|im_end|>", "<|action_end|>"};
    if (st == PU_OK)
        st = llm->complete(llm->ud, prompt.p, stops, default_system ? 2 : 1, &out);
    pu_str_free(&prompt);
    if (st == PU_OK) {
        pu_chat_reply r;
        pu_chat_parse_reply(out.p ? out.p : "", out.len, &r); /* malformed: no call */
        pu_err_clear();
        for (int k = 0; k < r.n_calls; k++)
            if (r.calls[k].kind == PU_CHAT_CALL_PLUGIN && r.calls[k].name && *r.calls[k].name) {
                json_t *a = r.calls[k].arguments ? json_loads(r.calls[k].arguments, 0, NULL) : NULL;
                json_array_append_new(*calls, json_pack("{s:s, s:o}", "name", r.calls[k].name,
                                                        "arguments", a ? a : json_null()));
            }
        pu_chat_reply_free(&r);
    }
    pu_str_free(&out);
    return st;
}

static pu_status ask_native(const pu_agent_llm *llm, json_t *msgs, const char *tools, char **name,
                            json_t **args) {
    json_t *calls = NULL;
    pu_status st = ask_native_calls(llm, msgs, tools, true, &calls);
    json_t *c0 = json_array_get(calls, 0);
    if (!st && c0) {
        *name = pu_strdup(json_string_value(json_object_get(c0, "name")));
        json_t *a = json_object_get(c0, "arguments");
        *args = json_is_null(a) ? NULL : json_incref(a);
    }
    json_decref(calls);
    return st;
}

static pu_status ask_openai_calls(const pu_agent_llm *llm, json_t *msgs, const char *tools_fn,
                                  json_t **calls) {
    *calls = json_array();
    /* wrap plain function schemas as OpenAI tools */
    json_t *fns = json_loads(tools_fn, 0, NULL), *tools = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(fns, i, f) {
        if (json_object_get(f, "function"))
            json_array_append(tools, f);
        else
            json_array_append_new(tools,
                                  json_pack("{s:s, s:O}", "type", "function", "function", f));
    }
    json_decref(fns);
    char *ts = json_dumps(tools, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *ms = json_dumps(msgs, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(tools);
    pu_str reply = {0};
    pu_status st = llm->chat(llm->ud, ms, ts, NULL, 0, &reply);
    free(ts);
    free(ms);
    if (st == PU_OK) {
        json_t *r = json_loadb(reply.p ? reply.p : "", reply.len, 0, NULL);
        json_t *tc;
        json_array_foreach(json_object_get(r, "tool_calls"), i, tc) {
            json_t *fn = json_object_get(tc, "function");
            const char *nm = json_string_value(json_object_get(fn, "name"));
            if (nm) {
                json_t *a = args_obj(json_object_get(fn, "arguments"));
                json_array_append_new(*calls, json_pack("{s:s, s:o}", "name", nm, "arguments",
                                                        a ? a : json_null()));
            }
        }
        json_decref(r);
    }
    pu_str_free(&reply);
    return st;
}

static pu_status ask_openai(const pu_agent_llm *llm, json_t *msgs, const char *tools_fn,
                            char **name, json_t **args) {
    json_t *calls = NULL;
    pu_status st = ask_openai_calls(llm, msgs, tools_fn, &calls);
    json_t *c0 = json_array_get(calls, 0);
    if (!st && c0) {
        *name = pu_strdup(json_string_value(json_object_get(c0, "name")));
        json_t *a = json_object_get(c0, "arguments");
        *args = json_is_null(a) ? NULL : json_incref(a);
    }
    json_decref(calls);
    return st;
}

pu_status pu_agent_tooluse_eval(const pu_agent_llm *llm, const pu_agent_tooluse_opts *o,
                                pu_agent_tooluse_score *sc) {
    memset(sc, 0, sizeof *sc);
    if (o->protocol == PU_AGENT_OPENAI ? !llm->chat : !llm->complete)
        return pu_err_set(PU_ERR_INVALID, "tooluse: the %s protocol needs %s",
                          o->protocol == PU_AGENT_OPENAI ? "openai" : "native",
                          o->protocol == PU_AGENT_OPENAI ? "an endpoint (--api)" : "a local model");
    json_t *root = NULL;
    PU_TRY(pu_json_load_file(o->path, &root));
    pu_status st = PU_OK;
    if (!json_is_array(root)) {
        json_decref(root);
        return pu_err_set(PU_ERR_FORMAT, "%s: expected a JSON array of conversations", o->path);
    }
    size_t i;
    json_t *item;
    json_array_foreach(root, i, item) {
        if (o->limit > 0 && sc->n >= o->limit)
            break;
        json_t *conv = json_object_get(item, "conversations");
        const char *tools = json_string_value(json_object_get(item, "tools"));
        if (!json_is_array(conv) || !tools) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: item %zu: expected \"conversations\" and a "
                            "\"tools\" string",
                            o->path, i);
            break;
        }
        json_t *msgs = json_array(), *gold = NULL;
        size_t k;
        json_t *turn;
        int ncall = 0;
        json_array_foreach(conv, k, turn) {
            const char *from = json_string_value(json_object_get(turn, "from"));
            const char *val = json_string_value(json_object_get(turn, "value"));
            if (!from || !val) {
                st = pu_err_set(PU_ERR_FORMAT, "%s: item %zu turn %zu: expected from/value",
                                o->path, i, k);
                break;
            }
            if (!strcmp(from, "function_call")) {
                gold = json_loads(val, 0, NULL);
                if (!json_is_object(gold)) {
                    st = pu_err_set(PU_ERR_FORMAT,
                                    "%s: item %zu turn %zu: function_call is not a "
                                    "JSON object",
                                    o->path, i, k);
                }
                break;
            }
            const char *role = !strcmp(from, "human")         ? "user"
                               : !strcmp(from, "gpt")         ? "assistant"
                               : !strcmp(from, "observation") ? "tool"
                               : !strcmp(from, "system")      ? "system"
                                                              : NULL;
            if (!role) {
                st = pu_err_set(PU_ERR_FORMAT, "%s: item %zu turn %zu: unknown role \"%s\"",
                                o->path, i, k, from);
                break;
            }
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", role, "content", val));
            ncall++;
        }
        if (st || !gold) {
            json_decref(msgs);
            json_decref(gold);
            if (st)
                break;
            continue;
        }
        char *name = NULL;
        json_t *args = NULL;
        st = o->protocol == PU_AGENT_OPENAI ? ask_openai(llm, msgs, tools, &name, &args)
                                            : ask_native(llm, msgs, tools, &name, &args);
        if (st) {
            json_decref(msgs);
            json_decref(gold);
            st = pu_err_prefix(st, "%s: item %zu: ", o->path, i);
            break;
        }
        const char *gname = json_string_value(json_object_get(gold, "name"));
        json_t *gargs = args_obj(json_object_get(gold, "arguments"));
        bool name_ok = name && gname && !strcmp(name, gname);
        bool exact = name_ok && args && gargs && jeq(args, gargs);
        sc->n++;
        sc->name_ok += name_ok;
        sc->exact_ok += exact;
        sc->no_call += !name;
        if (o->predictions) {
            json_t *p = json_pack(
                "{s:I, s:s, s:O, s:o, s:o, s:b, s:b}", "item", (json_int_t)i, "gold_name",
                gname ? gname : "", "gold_arguments", gargs ? gargs : json_null(), "name",
                name ? json_string(name) : json_null(), "arguments",
                args ? json_incref(args) : json_null(), "name_ok", name_ok, "exact", exact);
            char *s = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
            fprintf(o->predictions, "%s\n", s);
            free(s);
            json_decref(p);
        }
        pu_free(name);
        json_decref(args);
        json_decref(gargs);
        json_decref(gold);
        json_decref(msgs);
    }
    json_decref(root);
    return st;
}

/* ------------------------------------------------------------------------ */
/* reason_tool_use (messages with typed content parts)                      */

static const char *jstr(json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* the text parts of a message's content, joined */
static char *parts_text(json_t *content, const char *type) {
    pu_str t = {0};
    pu_str_puts(&t, "");
    size_t i;
    json_t *p;
    json_array_foreach(content, i, p) {
        if (!strcmp(jstr(p, "type"), type)) {
            const char *v = json_string_value(json_object_get(p, "value"));
            if (t.len && v)
                pu_str_putc(&t, '\n');
            pu_str_puts(&t, v ? v : "");
        }
    }
    return pu_str_steal(&t);
}

/* both arrays of {"name", "arguments"} equal as multisets (names only: by_name) */
static bool calls_match(json_t *gold, json_t *pred, bool by_name) {
    size_t n = json_array_size(gold);
    if (n != json_array_size(pred) || n > 64)
        return false;
    bool used[64] = {false};
    for (size_t i = 0; i < n; i++) {
        json_t *g = json_array_get(gold, i);
        bool found = false;
        for (size_t j = 0; j < n && !found; j++) {
            json_t *p = json_array_get(pred, j);
            if (used[j] || !json_equal(json_object_get(g, "name"), json_object_get(p, "name")))
                continue;
            if (!by_name && !jeq(json_object_get(g, "arguments"), json_object_get(p, "arguments")))
                continue;
            used[j] = found = true;
        }
        if (!found)
            return false;
    }
    return true;
}

pu_status pu_agent_tooluse_reason_eval(const pu_agent_llm *llm, const pu_agent_tooluse_opts *o,
                                       pu_agent_reason_score *sc) {
    memset(sc, 0, sizeof *sc);
    bool openai = o->protocol == PU_AGENT_OPENAI;
    if (openai ? !llm->chat : !llm->complete)
        return pu_err_set(PU_ERR_INVALID, "tooluse_reason: the %s protocol needs %s",
                          openai ? "openai" : "native",
                          openai ? "an endpoint (--api)" : "a local model");
    char *data = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(o->path, &data, &len));
    pu_status st = PU_OK;
    size_t line = 0;
    for (char *p = data, *nl; p && *p && !st; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        if (!ll)
            continue;
        if (o->limit > 0 && sc->items >= o->limit)
            break;
        json_error_t je;
        json_t *row = json_loadb(p, ll, 0, &je);
        json_t *ms = json_object_get(row, "messages");
        const char *tools = json_string_value(json_object_get(row, "tools"));
        char *tools_own = NULL;
        if (!tools && json_is_array(json_object_get(row, "tools")))
            tools = tools_own = json_dumps(json_object_get(row, "tools"), JSON_COMPACT);
        if (!row || !json_is_array(ms) || !tools) {
            st = pu_err_set(PU_ERR_FORMAT, "%s:%zu: expected {\"messages\": [...], \"tools\"}%s%s",
                            o->path, line, row ? "" : ": ", row ? "" : je.text);
            json_decref(row);
            free(tools_own);
            break;
        }
        sc->items++;
        json_t *msgs = json_array();
        size_t k;
        json_t *m;
        int step = 0;
        json_array_foreach(ms, k, m) {
            const char *role = json_string_value(json_object_get(m, "role"));
            json_t *content = json_object_get(m, "content");
            if (!role || !json_is_array(content)) {
                st = pu_err_set(PU_ERR_FORMAT, "%s:%zu: message %zu: expected role and a content list",
                                o->path, line, k);
                break;
            }
            if (strcmp(role, "assistant")) {
                if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "tool")) {
                    st = pu_err_set(PU_ERR_FORMAT, "%s:%zu: message %zu: unknown role \"%s\"",
                                    o->path, line, k, role);
                    break;
                }
                char *t = parts_text(content, "text");
                json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", role, "content", t));
                pu_free(t);
                continue;
            }
            /* a decision point: the gold calls, or a final answer */
            json_t *gold = json_array(), *tcs = json_array();
            size_t q;
            json_t *part;
            json_array_foreach(content, q, part) {
                if (strcmp(jstr(part, "type"), "tool_call"))
                    continue;
                const char *v = json_string_value(json_object_get(part, "value"));
                json_t *call = v ? json_loads(v, 0, NULL) : NULL;
                const char *nm = json_string_value(json_object_get(call, "name"));
                if (!nm) {
                    json_decref(call);
                    st = pu_err_set(PU_ERR_FORMAT,
                                    "%s:%zu: message %zu: tool_call is not {\"name\", \"arguments\"}",
                                    o->path, line, k);
                    break;
                }
                json_t *ga = args_obj(json_object_get(call, "arguments"));
                char *as = json_dumps(ga ? ga : json_object(), JSON_COMPACT);
                json_array_append_new(gold, json_pack("{s:s, s:o}", "name", nm, "arguments",
                                                      ga ? ga : json_null()));
                json_array_append_new(tcs, json_pack("{s:s, s:{s:s, s:s}}", "type", "function",
                                                     "function", "name", nm, "arguments", as));
                free(as);
                json_decref(call);
            }
            if (st) {
                json_decref(gold);
                json_decref(tcs);
                break;
            }
            json_t *pred = NULL;
            st = openai ? ask_openai_calls(llm, msgs, tools, &pred)
                        : ask_native_calls(llm, msgs, tools, false, &pred);
            if (st) {
                json_decref(gold);
                json_decref(tcs);
                json_decref(pred);
                st = pu_err_prefix(st, "%s:%zu: step %d: ", o->path, line, step);
                break;
            }
            bool is_call = json_array_size(gold) > 0, ok, name_ok = false;
            sc->steps++;
            if (is_call) {
                sc->call_steps++;
                ok = calls_match(gold, pred, false);
                name_ok = calls_match(gold, pred, true);
                sc->call_exact += ok;
                sc->call_name += name_ok;
                sc->no_call += json_array_size(pred) == 0;
            } else {
                sc->answer_steps++;
                ok = json_array_size(pred) == 0;
                sc->answer_ok += ok;
            }
            if (o->predictions) {
                json_t *pj = json_pack("{s:I, s:i, s:s, s:O, s:O, s:b}", "line", (json_int_t)line,
                                       "step", step, "kind", is_call ? "call" : "answer", "gold",
                                       gold, "pred", pred, "ok", ok);
                char *txt = json_dumps(pj, JSON_COMPACT | JSON_PRESERVE_ORDER);
                fprintf(o->predictions, "%s\n", txt);
                free(txt);
                json_decref(pj);
            }
            step++;
            /* the gold turn goes on into the context (its text and calls, not its reasoning) */
            char *t = parts_text(content, "text");
            json_t *am = json_pack("{s:s, s:s}", "role", "assistant", "content", t);
            pu_free(t);
            if (json_array_size(tcs))
                json_object_set(am, "tool_calls", tcs);
            json_array_append_new(msgs, am);
            json_decref(gold);
            json_decref(tcs);
            json_decref(pred);
        }
        json_decref(msgs);
        json_decref(row);
        free(tools_own);
    }
    pu_free(data);
    return st;
}
