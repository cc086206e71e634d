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

static pu_status ask_native(const pu_agent_llm *llm, json_t *msgs, const char *tools, char **name,
                            json_t **args) {
    pu_chat c;
    pu_chat_init(&c);
    pu_chat_add(&c, "system", NULL, pu_chat_default_system());
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *content = json_string_value(json_object_get(m, "content"));
        pu_chat_msg *cm =
            pu_chat_add(&c, !strcmp(role, "tool") ? "environment" : role,
                        !strcmp(role, "tool") ? "plugin" : NULL, content ? content : "");
        json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
        if (tc) {
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
    const char *stops[] = {"<|action_end|>", "<|im_end|>"};
    if (st == PU_OK)
        st = llm->complete(llm->ud, prompt.p, stops, 2, &out);
    pu_str_free(&prompt);
    if (st == PU_OK) {
        pu_chat_reply r;
        pu_chat_parse_reply(out.p ? out.p : "", out.len, &r); /* malformed: no call */
        pu_err_clear();
        if (r.n_calls > 0 && r.calls[0].kind == PU_CHAT_CALL_PLUGIN && r.calls[0].name &&
            *r.calls[0].name) {
            *name = pu_strdup(r.calls[0].name);
            *args = json_loads(r.calls[0].arguments, 0, NULL);
        }
        pu_chat_reply_free(&r);
    }
    pu_str_free(&out);
    return st;
}

static pu_status ask_openai(const pu_agent_llm *llm, json_t *msgs, const char *tools_fn,
                            char **name, json_t **args) {
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
        json_t *fn =
            json_object_get(json_array_get(json_object_get(r, "tool_calls"), 0), "function");
        const char *nm = json_string_value(json_object_get(fn, "name"));
        if (nm) {
            *name = pu_strdup(nm);
            *args = args_obj(json_object_get(fn, "arguments"));
        }
        json_decref(r);
    }
    pu_str_free(&reply);
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
