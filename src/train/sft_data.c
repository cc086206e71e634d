/*
 * sft_data.c — SFT chat records: parsing (OpenAI messages, XTuner's legacy
 * conversation, alpaca, ShareGPT), rendering + tokenization with loss labels,
 * datasets from JSONL / JSON-array files, and the padded / packed batcher
 * (see pu_sft.h for the contract).
 *
 * Record kinds, by their top-level key:
 *   "messages"       OpenAI: role system/user/assistant/environment/tool/
 *                    function, content a string, null or a list of parts
 *                    {type:"text", text|value} ({type:"tool_call", value:
 *                    "{name, arguments}"} is a plugin call; {type:
 *                    "reasoning"} parts are not rendered: InternLM2's chat
 *                    format has no reasoning channel), tool_calls, name,
 *                    loss / loss_weight per message, tools (top level).
 *   "conversations"  ShareGPT: from human|user / gpt|assistant / system /
 *                    function_call (value {"name","arguments"} -> an assistant
 *                    turn holding a plugin call) / observation|tool
 *                    (environment, name=<|plugin|>); system and tools top level.
 *   "conversation"   XTuner legacy: [{system?, input, output,
 *                    output_with_loss?}] -> system?, user, assistant per item.
 *   "instruction"    alpaca: system?, history [[q, a], ...], then user =
 *                    instruction [+ "\n" + input when input is non-empty],
 *                    assistant = output (XTuner's alpaca_map_fn).
 * Tool declarations (a JSON array of schemas or OpenAI tools, or its JSON
 * text) become a "system name=<|plugin|>" turn after the first system turn
 * (or first), never scored — as pu_chat_render places them.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_sft.h"
#include "puyu/pu_train.h"

#define IM_START "<|im_start|>"
#define IM_END   "<|im_end|>"
#define PLUGIN   "<|plugin|>"

void pu_sft_record_free(pu_sft_record *r) {
    if (!r)
        return;
    pu_chat_free(&r->msgs);
    pu_free(r->loss);
    memset(r, 0, sizeof(*r));
}

void pu_sft_tokens_free(pu_sft_tokens *s) {
    if (!s)
        return;
    pu_free(s->ids);
    pu_free(s->labels);
    memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------------------ */
/* parsing                                                                  */

typedef struct rec_builder {
    pu_sft_record *r;
    int cap_loss;
    const char *const *vars;
    const char *where;
} rec_builder;

static bool is_ident(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* "{{key}}" (key [A-Za-z0-9_]+) -> value of "key=value" in vars; others kept. */
static void subst_vars(pu_str *o, const char *s, size_t n, const char *const *vars) {
    size_t i = 0, run = 0;
    while (vars && i < n) {
        if (s[i] == '{' && i + 1 < n && s[i + 1] == '{') {
            size_t k = i + 2;
            while (k < n && is_ident(s[k]))
                k++;
            if (k > i + 2 && k + 1 < n && s[k] == '}' && s[k + 1] == '}') {
                size_t kl = k - (i + 2);
                const char *val = NULL;
                for (const char *const *v = vars; *v; v++) {
                    const char *eq = strchr(*v, '=');
                    if (eq && (size_t)(eq - *v) == kl && memcmp(*v, s + i + 2, kl) == 0) {
                        val = eq + 1;
                        break;
                    }
                }
                if (val) {
                    pu_str_append(o, s + run, i - run);
                    pu_str_puts(o, val);
                }
                i = k + 2;
                if (val)
                    run = i;
                continue;
            }
        }
        i++;
    }
    pu_str_append(o, s + run, n - run);
    if (!o->p)
        pu_str_append(o, "", 0);
}

static pu_chat_msg *add_turn(rec_builder *b, const char *role, const char *name, const char *text,
                             size_t len, bool loss) {
    pu_str s = {0};
    subst_vars(&s, text ? text : "", text ? len : 0, b->vars);
    pu_chat_msg *m = pu_chat_add(&b->r->msgs, role, name, s.p);
    pu_str_free(&s);
    if (b->r->msgs.n > b->cap_loss) {
        b->cap_loss = b->r->msgs.cap;
        b->r->loss = pu_realloc(b->r->loss, (size_t)b->cap_loss);
    }
    b->r->loss[b->r->msgs.n - 1] = loss ? 1 : 0;
    return m;
}

/* loss flags of one message object; dflt when absent */
static pu_status msg_loss(const json_t *m, const char *field, bool dflt, bool *out) {
    json_t *l = json_object_get(m, "loss");
    json_t *w = json_object_get(m, "loss_weight");
    *out = dflt;
    if (l) {
        if (!json_is_boolean(l))
            return pu_err_set(PU_ERR_FORMAT, "%s.loss: expected true or false", field);
        *out = json_is_true(l);
    } else if (w) {
        if (!json_is_number(w))
            return pu_err_set(PU_ERR_FORMAT, "%s.loss_weight: expected a number", field);
        *out = json_number_value(w) > 0;
    }
    return PU_OK;
}

/* A plugin call from a {"name", "arguments"|"parameters"} object (arguments
 * an object or its JSON text). */
static pu_status add_call_obj(pu_chat_msg *m, const json_t *fn, const char *field) {
    const char *name = json_string_value(json_object_get(fn, "name"));
    if (!name)
        return pu_err_set(PU_ERR_FORMAT, "%s.name: expected a string", field);
    json_t *args = json_object_get(fn, "arguments");
    const char *akey = "arguments";
    if (!args) {
        args = json_object_get(fn, "parameters");
        akey = "parameters";
    }
    char *astr = NULL;
    if (!args || json_is_null(args)) {
        astr = pu_strdup("{}");
    } else if (json_is_string(args)) {
        astr = pu_strdup(json_string_value(args));
    } else if (json_is_object(args)) {
        char *d = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
        astr = pu_strdup(d ? d : "{}");
        free(d);
    } else {
        return pu_err_set(PU_ERR_FORMAT, "%s.%s: expected a JSON object or its text", field, akey);
    }
    json_error_t e;
    json_t *chk = json_loads(astr, JSON_DECODE_ANY, &e);
    bool ok = json_is_object(chk);
    json_decref(chk);
    pu_status st = PU_OK;
    if (!ok)
        st = pu_err_set(PU_ERR_FORMAT, "%s.%s: expected a JSON object, found \"%.40s\"", field,
                        akey, astr);
    else
        st = pu_chat_add_call(m, PU_CHAT_CALL_PLUGIN, name, astr, NULL);
    pu_free(astr);
    return st;
}

/* a JSON text value holding the call object */
static pu_status add_call_text(pu_chat_msg *m, const char *text, size_t len, const char *field) {
    json_error_t e;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &e);
    if (!json_is_object(j)) {
        json_decref(j);
        return pu_err_set(
            PU_ERR_FORMAT,
            "%s: expected the JSON text of {\"name\", \"arguments\"}, found \"%.40s\"", field,
            text);
    }
    pu_status st = add_call_obj(m, j, field);
    json_decref(j);
    return st;
}

static bool empty_turn(const pu_chat_msg *m) {
    return m->content[0] == 0 && m->n_calls == 0;
}

static pu_status check_assistant(const pu_chat_msg *m, const char *field) {
    if (empty_turn(m))
        return pu_err_set(PU_ERR_FORMAT, "%s: empty assistant content", field);
    return PU_OK;
}

static const char *str_field(const json_t *o, const char *key, bool required, const char *field,
                             pu_status *st) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            *st = pu_err_set(PU_ERR_FORMAT, "%s%s%s: missing (expected a string)", field,
                             *field ? "." : "", key);
        return NULL;
    }
    if (!json_is_string(v)) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s%s%s: expected a string", field, *field ? "." : "", key);
        return NULL;
    }
    return json_string_value(v);
}

static pu_status parse_messages(rec_builder *b, const json_t *msgs) {
    if (!json_is_array(msgs))
        return pu_err_set(PU_ERR_FORMAT, "messages: expected an array of messages");
    if (json_array_size(msgs) == 0)
        return pu_err_set(PU_ERR_FORMAT, "messages: empty");
    size_t i;
    json_t *m;
    char field[64];
    pu_str text = {0};
    pu_status st = PU_OK;
    json_array_foreach(msgs, i, m) {
        snprintf(field, sizeof field, "messages[%zu]", i);
        if (!json_is_object(m)) {
            st = pu_err_set(PU_ERR_FORMAT, "%s: expected an object", field);
            break;
        }
        json_t *jr = json_object_get(m, "role");
        if (!json_is_string(jr)) {
            st = pu_err_set(PU_ERR_FORMAT, "%s.role: %s", field,
                            jr ? "expected a string" : "missing");
            break;
        }
        const char *role = json_string_value(jr);
        const char *name = NULL;
        bool tool = strcmp(role, "tool") == 0 || strcmp(role, "function") == 0;
        if (tool) {
            role = "environment";
            name = PLUGIN; /* OpenAI's name on tool results is the function name */
        } else if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
                   strcmp(role, "environment")) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s.role: unknown role \"%.40s\" (expected system, user, assistant, "
                            "environment, tool or function)",
                            field, role);
            break;
        } else {
            json_t *jn = json_object_get(m, "name");
            if (jn && !json_is_null(jn)) {
                if (!json_is_string(jn)) {
                    st = pu_err_set(PU_ERR_FORMAT, "%s.name: expected a string", field);
                    break;
                }
                name = json_string_value(jn);
                if (!*name)
                    name = NULL;
            }
        }
        bool assistant = strcmp(role, "assistant") == 0;
        bool loss;
        if ((st = msg_loss(m, field, assistant, &loss)) != PU_OK)
            break;
        /* content: string, null, or parts */
        pu_str_clear(&text);
        json_t *c = json_object_get(m, "content");
        json_t *call_parts = NULL;
        if (json_is_string(c)) {
            pu_str_append(&text, json_string_value(c), json_string_length(c));
        } else if (json_is_array(c)) {
            size_t k;
            json_t *p;
            json_array_foreach(c, k, p) {
                const char *type = json_string_value(json_object_get(p, "type"));
                if (!json_is_object(p) || !type) {
                    st = pu_err_set(PU_ERR_FORMAT,
                                    "%s.content[%zu]: expected a part {\"type\", \"text\"}", field,
                                    k);
                    break;
                }
                json_t *v = json_object_get(p, "text");
                if (!v)
                    v = json_object_get(p, "value");
                if (strcmp(type, "text") && strcmp(type, "reasoning") &&
                    strcmp(type, "tool_call")) {
                    st = pu_err_set(PU_ERR_FORMAT,
                                    "%s.content[%zu].type: unsupported part type \"%.40s\" "
                                    "(expected text, reasoning or tool_call)",
                                    field, k, type);
                    break;
                }
                if (!json_is_string(v)) {
                    st = pu_err_set(PU_ERR_FORMAT, "%s.content[%zu].%s: expected a string", field,
                                    k, json_object_get(p, "text") ? "text" : "value");
                    break;
                }
                if (strcmp(type, "text") == 0)
                    pu_str_append(&text, json_string_value(v), json_string_length(v));
                else if (strcmp(type, "tool_call") == 0)
                    call_parts = c;
            }
            if (st != PU_OK)
                break;
        } else if (c && !json_is_null(c)) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s.content: expected a string or an array of parts, found %s", field,
                            json_is_number(c)   ? "a number"
                            : json_is_object(c) ? "an object"
                                                : "a boolean");
            break;
        } else if (!c && !json_object_get(m, "tool_calls")) {
            st = pu_err_set(PU_ERR_FORMAT, "%s.content: missing", field);
            break;
        }
        pu_chat_msg *cm = add_turn(b, role, name, text.p, text.len, loss);
        if (call_parts) {
            size_t k;
            json_t *p;
            json_array_foreach(call_parts, k, p) {
                if (strcmp(json_string_value(json_object_get(p, "type")), "tool_call"))
                    continue;
                json_t *v = json_object_get(p, "text");
                if (!v)
                    v = json_object_get(p, "value");
                char f2[128];
                snprintf(f2, sizeof f2, "%s.content[%zu].value", field, k);
                if ((st = add_call_text(cm, json_string_value(v), json_string_length(v), f2)) !=
                    PU_OK)
                    break;
            }
            if (st != PU_OK)
                break;
        }
        json_t *calls = json_object_get(m, "tool_calls");
        if (calls && !json_is_null(calls)) {
            if (!json_is_array(calls)) {
                st = pu_err_set(PU_ERR_FORMAT, "%s.tool_calls: expected an array", field);
                break;
            }
            size_t k;
            json_t *call;
            json_array_foreach(calls, k, call) {
                char f2[128];
                json_t *fn = json_object_get(call, "function");
                snprintf(f2, sizeof f2, "%s.tool_calls[%zu]%s", field, k, fn ? ".function" : "");
                if (!fn)
                    fn = call;
                if (!json_is_object(fn)) {
                    st = pu_err_set(PU_ERR_FORMAT, "%s: expected an object", f2);
                    break;
                }
                if ((st = add_call_obj(cm, fn, f2)) != PU_OK)
                    break;
            }
            if (st != PU_OK)
                break;
        }
        if (assistant && (st = check_assistant(cm, field)) != PU_OK)
            break;
    }
    pu_str_free(&text);
    return st;
}

static pu_status parse_sharegpt(rec_builder *b, const json_t *rec, const json_t *conv) {
    pu_status st = PU_OK;
    const char *sys = str_field(rec, "system", false, "", &st);
    if (st != PU_OK)
        return st;
    if (sys && *sys)
        add_turn(b, "system", NULL, sys, strlen(sys), false);
    if (!json_is_array(conv))
        return pu_err_set(PU_ERR_FORMAT, "conversations: expected an array of turns");
    if (json_array_size(conv) == 0)
        return pu_err_set(PU_ERR_FORMAT, "conversations: empty");
    size_t i;
    json_t *m;
    char field[64];
    json_array_foreach(conv, i, m) {
        snprintf(field, sizeof field, "conversations[%zu]", i);
        if (!json_is_object(m))
            return pu_err_set(PU_ERR_FORMAT, "%s: expected an object", field);
        const char *from = str_field(m, "from", true, field, &st);
        if (st != PU_OK)
            return st;
        json_t *v = json_object_get(m, "value");
        if (!json_is_string(v))
            return pu_err_set(PU_ERR_FORMAT, "%s.value: %s", field,
                              v ? "expected a string" : "missing (expected a string)");
        const char *val = json_string_value(v);
        size_t vl = json_string_length(v);
        const char *role = NULL, *name = NULL;
        bool call = false;
        if (!strcmp(from, "human") || !strcmp(from, "user"))
            role = "user";
        else if (!strcmp(from, "gpt") || !strcmp(from, "assistant"))
            role = "assistant";
        else if (!strcmp(from, "system"))
            role = "system";
        else if (!strcmp(from, "function_call"))
            role = "assistant", call = true;
        else if (!strcmp(from, "observation") || !strcmp(from, "tool"))
            role = "environment", name = PLUGIN;
        else
            return pu_err_set(PU_ERR_FORMAT,
                              "%s.from: unknown role \"%.40s\" (expected human, gpt, system, "
                              "function_call or observation)",
                              field, from);
        bool assistant = strcmp(role, "assistant") == 0;
        bool loss;
        PU_TRY(msg_loss(m, field, assistant, &loss));
        pu_chat_msg *cm = add_turn(b, role, name, call ? "" : val, call ? 0 : vl, loss);
        if (call) {
            char f2[128];
            snprintf(f2, sizeof f2, "%s.value", field);
            PU_TRY(add_call_text(cm, val, vl, f2));
        }
        if (assistant)
            PU_TRY(check_assistant(cm, field));
    }
    return PU_OK;
}

static pu_status parse_conversation(rec_builder *b, const json_t *conv) {
    if (!json_is_array(conv))
        return pu_err_set(PU_ERR_FORMAT, "conversation: expected an array of turns");
    if (json_array_size(conv) == 0)
        return pu_err_set(PU_ERR_FORMAT, "conversation: empty");
    size_t i;
    json_t *t;
    char field[64];
    pu_status st = PU_OK;
    json_array_foreach(conv, i, t) {
        snprintf(field, sizeof field, "conversation[%zu]", i);
        if (!json_is_object(t))
            return pu_err_set(PU_ERR_FORMAT, "%s: expected an object", field);
        const char *sys = str_field(t, "system", false, field, &st);
        const char *in = st == PU_OK ? str_field(t, "input", true, field, &st) : NULL;
        const char *out = st == PU_OK ? str_field(t, "output", true, field, &st) : NULL;
        if (st != PU_OK)
            return st;
        json_t *owl = json_object_get(t, "output_with_loss");
        if (owl && !json_is_boolean(owl))
            return pu_err_set(PU_ERR_FORMAT, "%s.output_with_loss: expected true or false", field);
        if (sys && *sys)
            add_turn(b, "system", NULL, sys, strlen(sys), false);
        add_turn(b, "user", NULL, in, strlen(in), false);
        pu_chat_msg *cm =
            add_turn(b, "assistant", NULL, out, json_string_length(json_object_get(t, "output")),
                     owl ? json_is_true(owl) : true);
        if (empty_turn(cm))
            return pu_err_set(PU_ERR_FORMAT, "%s.output: empty assistant content", field);
    }
    return PU_OK;
}

static pu_status parse_alpaca(rec_builder *b, const json_t *rec) {
    pu_status st = PU_OK;
    const char *sys = str_field(rec, "system", false, "", &st);
    const char *ins = st == PU_OK ? str_field(rec, "instruction", true, "", &st) : NULL;
    const char *in = st == PU_OK ? str_field(rec, "input", false, "", &st) : NULL;
    const char *out = st == PU_OK ? str_field(rec, "output", true, "", &st) : NULL;
    if (st != PU_OK)
        return st;
    if (sys && *sys)
        add_turn(b, "system", NULL, sys, strlen(sys), false);
    json_t *h = json_object_get(rec, "history");
    if (h && !json_is_null(h)) {
        if (!json_is_array(h))
            return pu_err_set(PU_ERR_FORMAT, "history: expected an array of [query, answer]");
        size_t i;
        json_t *qa;
        json_array_foreach(h, i, qa) {
            json_t *q = json_array_get(qa, 0), *a = json_array_get(qa, 1);
            if (!json_is_array(qa) || json_array_size(qa) != 2 || !json_is_string(q) ||
                !json_is_string(a))
                return pu_err_set(PU_ERR_FORMAT,
                                  "history[%zu]: expected [query, answer] (two strings)", i);
            add_turn(b, "user", NULL, json_string_value(q), json_string_length(q), false);
            pu_chat_msg *cm =
                add_turn(b, "assistant", NULL, json_string_value(a), json_string_length(a), true);
            if (empty_turn(cm))
                return pu_err_set(PU_ERR_FORMAT, "history[%zu][1]: empty assistant content", i);
        }
    }
    pu_str u = {0};
    pu_str_puts(&u, ins);
    if (in && *in) {
        pu_str_putc(&u, '\n');
        pu_str_puts(&u, in);
    }
    add_turn(b, "user", NULL, u.p ? u.p : "", u.len, false);
    pu_str_free(&u);
    pu_chat_msg *cm = add_turn(b, "assistant", NULL, out, strlen(out), true);
    if (empty_turn(cm))
        return pu_err_set(PU_ERR_FORMAT, "output: empty assistant content");
    return PU_OK;
}

/* the tools turn, inserted after the first system turn (or first) */
static pu_status add_tools(rec_builder *b, const json_t *tools) {
    char *text = NULL;
    if (json_is_string(tools)) {
        text = pu_strdup(json_string_value(tools));
    } else if (json_is_array(tools)) {
        char *d = json_dumps(tools, JSON_COMPACT);
        text = pu_strdup(d ? d : "[]");
        free(d);
    } else {
        return pu_err_set(PU_ERR_FORMAT, "tools: expected an array of function schemas or its "
                                         "JSON text");
    }
    pu_str body = {0};
    pu_status st = pu_chat_tools_text(text, &body);
    pu_free(text);
    if (st != PU_OK) {
        pu_str_free(&body);
        return pu_err_set(PU_ERR_FORMAT, "tools: %s", pu_err_msg());
    }
    pu_chat *c = &b->r->msgs;
    int at = (c->n > 0 && strcmp(c->msgs[0].role, "system") == 0 && !c->msgs[0].name) ? 1 : 0;
    /* no template substitution in declarations */
    const char *const *vars = b->vars;
    b->vars = NULL;
    add_turn(b, "system", PLUGIN, body.p, body.len, false);
    b->vars = vars;
    pu_str_free(&body);
    /* move the new last turn to position `at` */
    pu_chat_msg last = c->msgs[c->n - 1];
    uint8_t ll = b->r->loss[c->n - 1];
    memmove(&c->msgs[at + 1], &c->msgs[at], (size_t)(c->n - 1 - at) * sizeof(pu_chat_msg));
    memmove(&b->r->loss[at + 1], &b->r->loss[at], (size_t)(c->n - 1 - at));
    c->msgs[at] = last;
    b->r->loss[at] = ll;
    return PU_OK;
}

static pu_status parse_obj(const json_t *rec, const char *const *vars, pu_sft_record *r) {
    memset(r, 0, sizeof(*r));
    pu_chat_init(&r->msgs);
    rec_builder b = {.r = r, .vars = vars};
    if (!json_is_object(rec))
        return pu_err_set(PU_ERR_FORMAT, "record: expected a JSON object");
    json_t *v;
    pu_status st;
    if ((v = json_object_get(rec, "messages")))
        st = parse_messages(&b, v);
    else if ((v = json_object_get(rec, "conversations")))
        st = parse_sharegpt(&b, rec, v);
    else if ((v = json_object_get(rec, "conversation")))
        st = parse_conversation(&b, v);
    else if (json_object_get(rec, "instruction"))
        st = parse_alpaca(&b, rec);
    else
        st = pu_err_set(PU_ERR_FORMAT,
                        "record: expected \"messages\" (OpenAI), \"conversations\" (ShareGPT), "
                        "\"conversation\" (XTuner) or \"instruction\" (alpaca)");
    json_t *tools = json_object_get(rec, "tools");
    if (st == PU_OK && tools && !json_is_null(tools) &&
        !(json_is_string(tools) && json_string_length(tools) == 0) &&
        !(json_is_array(tools) && json_array_size(tools) == 0))
        st = add_tools(&b, tools);
    if (st == PU_OK && r->msgs.n == 0)
        st = pu_err_set(PU_ERR_FORMAT, "record: no turns");
    if (st != PU_OK)
        pu_sft_record_free(r);
    return st;
}

static pu_status parse_json_rec(const json_t *rec, const char *where, const char *const *vars,
                                pu_sft_record *r) {
    pu_status st = parse_obj(rec, vars, r);
    if (st != PU_OK && where)
        pu_err_prefix(st, "%s: ", where);
    return st;
}

pu_status pu_sft_record_parse(const char *json_text, size_t len, const char *where,
                              const char *const *vars, pu_sft_record *r) {
    memset(r, 0, sizeof(*r));
    json_error_t e;
    json_t *j = json_loadb(json_text, len, 0, &e);
    if (!j)
        return pu_err_set(PU_ERR_FORMAT, "%s%scolumn %d: invalid JSON: %s", where ? where : "",
                          where ? ": " : "", e.column, e.text);
    pu_status st = parse_json_rec(j, where, vars, r);
    json_decref(j);
    return st;
}

/* ------------------------------------------------------------------------ */
/* tokenization                                                             */

/* a special token by its text: a registered special, else a USER_DEFINED or
 * CONTROL piece with exactly that text */
int32_t pu_sft_special_id(const pu_tok *t, const char *text) {
    int32_t id = pu_tok_special_id(t, text);
    if (id >= 0)
        return id;
    size_t n = strlen(text);
    for (int64_t i = 0; i < pu_tok_n_vocab(t); i++) {
        pu_tok_attr a = pu_tok_get_attr(t, (int32_t)i);
        if (a != PU_TOK_ATTR_USER_DEFINED && a != PU_TOK_ATTR_CONTROL)
            continue;
        size_t l;
        const char *p = pu_tok_piece(t, (int32_t)i, &l);
        if (p && l == n && memcmp(p, text, n) == 0)
            return (int32_t)i;
    }
    return -1;
}

typedef struct tok_ctx {
    int32_t *ids, *labels;
    int64_t n, cap;
} tok_ctx;

static void push(tok_ctx *c, int32_t id, bool scored) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->ids = pu_realloc(c->ids, (size_t)c->cap * sizeof(int32_t));
        c->labels = pu_realloc(c->labels, (size_t)c->cap * sizeof(int32_t));
    }
    c->ids[c->n] = id;
    c->labels[c->n] = scored ? id : PU_IGNORE_INDEX;
    c->n++;
}

static pu_status push_text(tok_ctx *c, const pu_tok *t, const char *s, size_t n, bool scored) {
    if (n == 0)
        return PU_OK;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = false;
    eo.parse_special = true;
    int32_t *ids = NULL;
    int64_t k = 0;
    PU_TRY(pu_tok_encode(t, s, n, &eo, &ids, &k));
    for (int64_t i = 0; i < k; i++)
        push(c, ids[i], scored);
    pu_free(ids);
    return PU_OK;
}

pu_status pu_sft_tokenize(const pu_tok *t, const pu_sft_record *r, pu_sft_tokens *out) {
    memset(out, 0, sizeof(*out));
    int32_t im_start = pu_sft_special_id(t, IM_START), im_end = pu_sft_special_id(t, IM_END);
    if (im_start < 0 || im_end < 0)
        return pu_err_set(PU_ERR_FORMAT,
                          "sft: the tokenizer has no %s token: a chat vocabulary needs "
                          "<|im_start|> and <|im_end|> (e.g. puyu tokenizer train with the "
                          "InternLM2 specials)",
                          im_start < 0 ? IM_START : IM_END);
    tok_ctx c = {0};
    pu_str s = {0};
    pu_status st = PU_OK;
    int32_t bos = pu_tok_bos(t);
    if (bos >= 0)
        push(&c, bos, false);
    for (int i = 0; i < r->msgs.n && st == PU_OK; i++) {
        const pu_chat_msg *m = &r->msgs.msgs[i];
        bool scored = r->loss && r->loss[i];
        if (i > 0 && (st = push_text(&c, t, "\n", 1, false)) != PU_OK)
            break;
        push(&c, im_start, false);
        pu_str_clear(&s);
        pu_str_puts(&s, m->role);
        if (m->name) {
            pu_str_puts(&s, " name=");
            pu_str_puts(&s, m->name);
        }
        pu_str_putc(&s, '\n');
        if ((st = push_text(&c, t, s.p, s.len, false)) != PU_OK)
            break;
        pu_str_clear(&s);
        pu_str_puts(&s, m->content);
        if ((st = pu_chat_render_calls(m, &s)) != PU_OK) {
            pu_err_prefix(st, "turn %d: ", i);
            break;
        }
        if ((st = push_text(&c, t, s.p, s.len, scored)) != PU_OK)
            break;
        push(&c, im_end, scored);
    }
    pu_str_free(&s);
    if (st != PU_OK) {
        pu_free(c.ids);
        pu_free(c.labels);
        return st;
    }
    out->ids = c.ids;
    out->labels = c.labels;
    out->n = c.n;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* datasets                                                                 */

struct pu_sft_data {
    pu_sft_tokens *s;
    int64_t n, cap;
    int64_t n_skipped, n_truncated;
};

void pu_sft_data_destroy(pu_sft_data *d) {
    if (!d)
        return;
    for (int64_t i = 0; i < d->n; i++)
        pu_sft_tokens_free(&d->s[i]);
    pu_free(d->s);
    pu_free(d);
}
int64_t pu_sft_data_n(const pu_sft_data *d) {
    return d->n;
}
int64_t pu_sft_data_n_skipped(const pu_sft_data *d) {
    return d->n_skipped;
}
int64_t pu_sft_data_n_truncated(const pu_sft_data *d) {
    return d->n_truncated;
}
const pu_sft_tokens *pu_sft_data_get(const pu_sft_data *d, int64_t i) {
    return i >= 0 && i < d->n ? &d->s[i] : NULL;
}

/* one pending record of a file: parsed, then tokenized on the pool */
typedef struct pending {
    char where[128];
    pu_sft_record rec;
    pu_sft_tokens tok;
    pu_status st;
    char *err; /* owned message when st != PU_OK */
} pending;

typedef struct tok_job {
    const pu_tok *t;
    pending *p;
    int64_t n;
} tok_job;

static void tok_worker(void *ctx, int ith, int nth) {
    tok_job *j = ctx;
    for (int64_t i = ith; i < j->n; i += nth) {
        pending *p = &j->p[i];
        if (p->st != PU_OK)
            continue;
        p->st = pu_sft_tokenize(j->t, &p->rec, &p->tok);
        if (p->st != PU_OK)
            p->err = pu_strdup(pu_err_msg());
    }
}

static void add_sample(pu_sft_data *d, pu_sft_tokens *s) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->s = pu_realloc(d->s, (size_t)d->cap * sizeof(pu_sft_tokens));
    }
    d->s[d->n++] = *s;
    memset(s, 0, sizeof(*s));
}

/* bad record i: fail, or count it when skipping */
static pu_status bad(pu_sft_data *d, const pu_sft_load_opts *o, pending *p, const char *path) {
    if (o->skip_bad) {
        d->n_skipped++;
        pu_log_debug("sft: skip %s", p->err ? p->err : p->where);
        return PU_OK;
    }
    return pu_err_set(p->st != PU_OK ? p->st : PU_ERR_FORMAT, "%s", p->err ? p->err : path);
}

static pu_status load_file(const char *path, const pu_tok *t, const pu_sft_load_opts *o,
                           pu_sft_data *d) {
    char *buf = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(path, &buf, &len));
    const char *base = path; /* errors name the path as given */
    size_t i0 = 0;
    while (i0 < len && (buf[i0] == ' ' || buf[i0] == '\t' || buf[i0] == '\n' || buf[i0] == '\r'))
        i0++;
    /* a UTF-8 BOM */
    if (i0 + 3 <= len && (unsigned char)buf[i0] == 0xEF && (unsigned char)buf[i0 + 1] == 0xBB &&
        (unsigned char)buf[i0 + 2] == 0xBF)
        i0 += 3;
    pending *p = NULL;
    int64_t np = 0, capp = 0;
    pu_status st = PU_OK;
#define NEWP()                                                 \
    do {                                                       \
        if (np == capp) {                                      \
            capp = capp ? capp * 2 : 256;                      \
            p = pu_realloc(p, (size_t)capp * sizeof(pending)); \
        }                                                      \
        memset(&p[np], 0, sizeof(pending));                    \
        np++;                                                  \
    } while (0)
    if (i0 < len && buf[i0] == '[') {
        json_error_t e;
        json_t *arr = json_loadb(buf + i0, len - i0, 0, &e);
        if (!arr) {
            st = pu_err_set(PU_ERR_FORMAT, "%s: line %d column %d: invalid JSON: %s", base, e.line,
                            e.column, e.text);
        } else {
            size_t k;
            json_t *rec;
            json_array_foreach(arr, k, rec) {
                NEWP();
                pending *q = &p[np - 1];
                snprintf(q->where, sizeof q->where, "%.100s:[%zu]", base, k);
                q->st = parse_json_rec(rec, q->where, o->vars, &q->rec);
                if (q->st != PU_OK)
                    q->err = pu_strdup(pu_err_msg());
            }
            json_decref(arr);
        }
    } else {
        size_t s = 0;
        int64_t line = 0;
        while (s < len) {
            const char *nl = memchr(buf + s, '\n', len - s);
            size_t e = nl ? (size_t)(nl - buf) : len;
            line++;
            size_t a = s, z = e;
            while (a < z && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r'))
                a++;
            while (z > a && (buf[z - 1] == ' ' || buf[z - 1] == '\t' || buf[z - 1] == '\r'))
                z--;
            if (line == 1 && z - a >= 3 && (unsigned char)buf[a] == 0xEF)
                a += 3;
            if (z > a) {
                NEWP();
                pending *q = &p[np - 1];
                snprintf(q->where, sizeof q->where, "%.100s:%lld", base, (long long)line);
                q->st = pu_sft_record_parse(buf + a, z - a, q->where, o->vars, &q->rec);
                if (q->st != PU_OK)
                    q->err = pu_strdup(pu_err_msg());
            }
            s = e + 1;
        }
    }
#undef NEWP
    pu_free(buf);
    if (st == PU_OK) {
        tok_job j = {t, p, np};
        if (o->pool && np > 1)
            pu_pool_run(o->pool, tok_worker, &j);
        else
            tok_worker(&j, 0, 1);
        for (int64_t i = 0; i < np && st == PU_OK; i++) {
            pending *q = &p[i];
            if (q->st != PU_OK) {
                st = bad(d, o, q, path);
                continue;
            }
            bool cut = o->seq > 0 && q->tok.n > o->seq;
            if (cut)
                q->tok.n = o->seq;
            int64_t scored = 0;
            for (int64_t k = 1; k < q->tok.n; k++)
                scored += q->tok.labels[k] >= 0;
            if (scored == 0) {
                q->st = PU_ERR_FORMAT;
                pu_err_set(PU_ERR_FORMAT,
                           "%s: no scored token%s (no assistant turn, every loss false, or the "
                           "answers start after the --seq %lld cut)",
                           q->where, cut ? " after the cut" : "", (long long)o->seq);
                q->err = pu_strdup(pu_err_msg());
                st = bad(d, o, q, path);
                continue;
            }
            d->n_truncated += cut;
            add_sample(d, &q->tok);
        }
    }
    for (int64_t i = 0; i < np; i++) {
        pu_sft_record_free(&p[i].rec);
        pu_sft_tokens_free(&p[i].tok);
        pu_free(p[i].err);
    }
    pu_free(p);
    return st;
}

pu_status pu_sft_data_load(const char *const *paths, int n_paths, const pu_tok *t,
                           const pu_sft_load_opts *o, pu_sft_data **out) {
    *out = NULL;
    pu_sft_load_opts def = {0};
    if (!o)
        o = &def;
    if (n_paths <= 0)
        return pu_err_set(PU_ERR_INVALID, "sft: no data files");
    if (pu_sft_special_id(t, IM_START) < 0 || pu_sft_special_id(t, IM_END) < 0)
        return pu_err_set(PU_ERR_FORMAT,
                          "sft: the tokenizer has no %s token: a chat vocabulary needs "
                          "<|im_start|> and <|im_end|>",
                          pu_sft_special_id(t, IM_START) < 0 ? IM_START : IM_END);
    pu_sft_data *d = pu_calloc(1, sizeof(*d));
    for (int i = 0; i < n_paths; i++) {
        pu_status st = load_file(paths[i], t, o, d);
        if (st != PU_OK) {
            pu_sft_data_destroy(d);
            return st;
        }
    }
    if (d->n == 0) {
        pu_sft_data_destroy(d);
        return pu_err_set(PU_ERR_FORMAT, "sft: %s: no usable records", paths[0]);
    }
    *out = d;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* batches                                                                  */

typedef struct row {
    int64_t first, count, len;
} row;

struct pu_sft_batcher {
    const pu_sft_data *d;
    row *rows;
    int64_t n_rows, seq;
    bool shuffle;
    uint64_t seed;
};

pu_status pu_sft_batcher_create(const pu_sft_data *d, int64_t seq, bool pack, bool shuffle,
                                uint64_t seed, pu_sft_batcher **out) {
    *out = NULL;
    if (seq <= 1)
        return pu_err_set(PU_ERR_INVALID, "sft batcher: seq %lld: expected >= 2", (long long)seq);
    if (!d || d->n == 0)
        return pu_err_set(PU_ERR_INVALID, "sft batcher: no samples");
    pu_sft_batcher *b = pu_calloc(1, sizeof(*b));
    b->d = d;
    b->seq = seq;
    b->shuffle = shuffle;
    b->seed = seed;
    b->rows = pu_malloc((size_t)d->n * sizeof(row));
    for (int64_t i = 0; i < d->n; i++) {
        int64_t n = d->s[i].n < seq ? d->s[i].n : seq;
        if (pack && b->n_rows > 0 && b->rows[b->n_rows - 1].len + n <= seq) {
            b->rows[b->n_rows - 1].count++;
            b->rows[b->n_rows - 1].len += n;
        } else {
            b->rows[b->n_rows++] = (row){i, 1, n};
        }
    }
    *out = b;
    return PU_OK;
}

void pu_sft_batcher_destroy(pu_sft_batcher *b) {
    if (!b)
        return;
    pu_free(b->rows);
    pu_free(b);
}

int64_t pu_sft_batcher_n_rows(const pu_sft_batcher *b) {
    return b->n_rows;
}

/* row index at position r of epoch e's permutation (Fisher-Yates from an rng
 * seeded by (seed, e)); perm: scratch of n_rows entries, *perm_epoch caches */
static int64_t row_at(const pu_sft_batcher *b, int64_t i, int64_t *perm, int64_t *perm_epoch) {
    int64_t n = b->n_rows, e = i / n, r = i % n;
    if (!b->shuffle)
        return r;
    if (*perm_epoch != e) {
        uint64_t key[2] = {b->seed, (uint64_t)e};
        pu_rng rng;
        pu_rng_seed(&rng, pu_hash64(key, sizeof key) ^ 0x5F7A3C1Du);
        for (int64_t k = 0; k < n; k++)
            perm[k] = k;
        for (int64_t k = n - 1; k > 0; k--) {
            int64_t j = (int64_t)(pu_rng_u64(&rng) % (uint64_t)(k + 1));
            int64_t tmp = perm[k];
            perm[k] = perm[j];
            perm[j] = tmp;
        }
        *perm_epoch = e;
    }
    return perm[r];
}

int64_t pu_sft_batcher_max_len(const pu_sft_batcher *b) {
    int64_t m = 0;
    for (int64_t i = 0; i < b->n_rows; i++)
        m = b->rows[i].len > m ? b->rows[i].len : m;
    return m;
}

int64_t pu_sft_batch_len(const pu_sft_batcher *b, int64_t k, int64_t B) {
    int64_t *perm = b->shuffle ? pu_malloc((size_t)b->n_rows * sizeof(int64_t)) : NULL;
    int64_t perm_epoch = -1, TT = 1;
    for (int64_t j = 0; j < B; j++) {
        int64_t w = row_at(b, k * B + j, perm, &perm_epoch);
        TT = b->rows[w].len > TT ? b->rows[w].len : TT;
    }
    pu_free(perm);
    return TT;
}

void pu_sft_batch(const pu_sft_batcher *b, int64_t k, int64_t B, int32_t *ids, int32_t *targets,
                  int32_t *pos, int32_t *seg, int64_t *T, int64_t *n_targets) {
    pu_sft_batch_at(b, k * B, B, ids, targets, pos, seg, T, n_targets);
}

void pu_sft_batch_at(const pu_sft_batcher *b, int64_t first, int64_t B, int32_t *ids,
                     int32_t *targets, int32_t *pos, int32_t *seg, int64_t *T, int64_t *n_targets) {
    int64_t *perm = b->shuffle ? pu_malloc((size_t)b->n_rows * sizeof(int64_t)) : NULL;
    int64_t perm_epoch = -1;
    int64_t *which = pu_malloc((size_t)B * sizeof(int64_t));
    int64_t TT = 1;
    for (int64_t j = 0; j < B; j++) {
        which[j] = row_at(b, first + j, perm, &perm_epoch);
        if (b->rows[which[j]].len > TT)
            TT = b->rows[which[j]].len;
    }
    int64_t nt = 0;
    for (int64_t j = 0; j < B; j++) {
        const row *rw = &b->rows[which[j]];
        int32_t *ri = ids + j * TT, *rt = targets + j * TT;
        int32_t *rp = pos ? pos + j * TT : NULL, *rs = seg ? seg + j * TT : NULL;
        int64_t o = 0;
        for (int64_t s = 0; s < rw->count; s++) {
            const pu_sft_tokens *sm = &b->d->s[rw->first + s];
            int64_t n = sm->n < b->seq ? sm->n : b->seq;
            for (int64_t t = 0; t < n; t++) {
                ri[o + t] = sm->ids[t];
                int32_t tg = t + 1 < n ? sm->labels[t + 1] : PU_IGNORE_INDEX;
                rt[o + t] = tg;
                nt += tg >= 0;
                if (rp)
                    rp[o + t] = (int32_t)t;
                if (rs)
                    rs[o + t] = (int32_t)s;
            }
            o += n;
        }
        for (; o < TT; o++) {
            ri[o] = 0;
            rt[o] = PU_IGNORE_INDEX;
            if (rp)
                rp[o] = 0;
            if (rs)
                rs[o] = (int32_t)rw->count;
        }
    }
    pu_free(which);
    pu_free(perm);
    if (T)
        *T = TT;
    if (n_targets)
        *n_targets = nt;
}
