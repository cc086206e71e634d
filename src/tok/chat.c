/*
 * chat.c — InternLM2 ChatML rendering and parsing (see pu_chat.h).
 *
 * Rendering follows lmdeploy's InternLM2Chat7B.messages2prompt and lagent's
 * Internlm2Protocol: one "<|im_start|>role[ name=X]\n ... <|im_end|>\n"
 * block per message; tool declarations as an extra "system name=<|plugin|>"
 * turn after the first system message; assistant tool calls appended to the
 * content as <|action_start|><|plugin|>\n{json}<|action_end|>. JSON values
 * are re-serialised with a small writer that reproduces Python's
 * json.dumps(ensure_ascii=False) (", " / ": " separators, shortest float
 * repr, \u00XX escapes for control characters) so the prompt text is the one
 * the model saw in training.
 *
 * Parsing a reply is forgiving (models emit odd things): the content is the
 * text before the first <|action_start|>; every action block becomes a call;
 * a plugin payload is the JSON object starting at its first '{', with
 * "parameters" (or OpenAI's "arguments") as the arguments.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_chat.h"

#define IM_START     "<|im_start|>"
#define IM_END       "<|im_end|>"
#define ACTION_START "<|action_start|>"
#define ACTION_END   "<|action_end|>"
#define PLUGIN       "<|plugin|>"
#define INTERPRETER  "<|interpreter|>"

static const char k_default_system[] =
    "You are an AI assistant whose name is InternLM (书生·浦语).\n"
    "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI "
    "Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the "
    "user such as English and 中文.";

const char *pu_chat_default_system(void) {
    return k_default_system;
}

/* ------------------------------------------------------------------------ */
/* Python-compatible JSON writer                                            */

static void py_json_string(pu_str *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    pu_str_putc(o, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char buf[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                buf[0] = '\\';
                buf[1] = 'u';
                buf[2] = '0';
                buf[3] = '0';
                buf[4] = hex[c >> 4];
                buf[5] = hex[c & 15];
                buf[6] = 0;
                esc = buf;
            }
        }
        if (esc) {
            pu_str_append(o, s + run, i - run);
            pu_str_puts(o, esc);
            run = i + 1;
        }
    }
    pu_str_append(o, s + run, n - run);
    pu_str_putc(o, '"');
}

/* Python repr(float): shortest round-trip digits; exponent form when the
 * decimal exponent is < -4 or >= 16; "1.0" for integral values. */
static void py_float(pu_str *o, double v) {
    if (v == 0) {
        pu_str_puts(o, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    char buf[64];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    char digits[32];
    int nd = 0, neg = 0;
    const char *q = buf;
    if (*q == '-') {
        neg = 1;
        q++;
    }
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9')
            digits[nd++] = *q;
    int e = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        pu_str_putc(o, '-');
    if (e >= -4 && e < 16) {
        if (e < 0) {
            pu_str_puts(o, "0.");
            for (int k = 0; k < -e - 1; k++)
                pu_str_putc(o, '0');
            pu_str_append(o, digits, (size_t)nd);
        } else {
            for (int k = 0; k <= e; k++)
                pu_str_putc(o, k < nd ? digits[k] : '0');
            pu_str_putc(o, '.');
            if (nd > e + 1)
                pu_str_append(o, digits + e + 1, (size_t)(nd - e - 1));
            else
                pu_str_putc(o, '0');
        }
    } else {
        pu_str_putc(o, digits[0]);
        if (nd > 1) {
            pu_str_putc(o, '.');
            pu_str_append(o, digits + 1, (size_t)(nd - 1));
        }
        pu_str_appendf(o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
}

static void py_json(pu_str *o, const json_t *j, int depth) {
    if (depth > 200) {
        pu_str_puts(o, "null");
        return;
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        int first = 1;
        pu_str_putc(o, '{');
        json_object_foreach((json_t *)j, k, v) {
            if (!first)
                pu_str_puts(o, ", ");
            first = 0;
            py_json_string(o, k, strlen(k));
            pu_str_puts(o, ": ");
            py_json(o, v, depth + 1);
        }
        pu_str_putc(o, '}');
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        pu_str_putc(o, '[');
        json_array_foreach((json_t *)j, i, v) {
            if (i)
                pu_str_puts(o, ", ");
            py_json(o, v, depth + 1);
        }
        pu_str_putc(o, ']');
        break;
    }
    case JSON_STRING: py_json_string(o, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER: pu_str_appendf(o, "%lld", (long long)json_integer_value(j)); break;
    case JSON_REAL: py_float(o, json_real_value(j)); break;
    case JSON_TRUE: pu_str_puts(o, "true"); break;
    case JSON_FALSE: pu_str_puts(o, "false"); break;
    default: pu_str_puts(o, "null");
    }
}

static json_t *parse_json(const char *s, size_t n) {
    json_error_t e;
    return json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
}

/* ------------------------------------------------------------------------ */
/* building                                                                 */

void pu_chat_init(pu_chat *c) {
    memset(c, 0, sizeof(*c));
}

static void call_free(pu_chat_call *k) {
    pu_free(k->name);
    pu_free(k->arguments);
    pu_free(k->code);
}

void pu_chat_free(pu_chat *c) {
    for (int i = 0; i < c->n; i++) {
        pu_chat_msg *m = &c->msgs[i];
        pu_free(m->role);
        pu_free(m->name);
        pu_free(m->content);
        for (int k = 0; k < m->n_calls; k++)
            call_free(&m->calls[k]);
        pu_free(m->calls);
    }
    pu_free(c->msgs);
    memset(c, 0, sizeof(*c));
}

static char *map_name(const char *name) {
    if (!name)
        return NULL;
    if (strcmp(name, "plugin") == 0)
        return pu_strdup(PLUGIN);
    if (strcmp(name, "interpreter") == 0)
        return pu_strdup(INTERPRETER);
    return pu_strdup(name);
}

static pu_chat_msg *add_msg_n(pu_chat *c, const char *role, size_t rl, const char *name, size_t nl,
                              const char *content, size_t cl) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->msgs = pu_realloc(c->msgs, (size_t)c->cap * sizeof(pu_chat_msg));
    }
    pu_chat_msg *m = &c->msgs[c->n++];
    memset(m, 0, sizeof(*m));
    m->role = pu_strndup(role, rl);
    m->name = name ? pu_strndup(name, nl) : NULL;
    m->content = pu_malloc(cl + 1);
    if (cl)
        memcpy(m->content, content, cl);
    m->content[cl] = 0;
    return m;
}

pu_chat_msg *pu_chat_add(pu_chat *c, const char *role, const char *name, const char *content) {
    char *nm = map_name(name);
    pu_chat_msg *m = add_msg_n(c, role, strlen(role), nm, nm ? strlen(nm) : 0,
                               content ? content : "", content ? strlen(content) : 0);
    pu_free(nm);
    return m;
}

pu_status pu_chat_add_call(pu_chat_msg *m, pu_chat_call_kind kind, const char *name,
                           const char *arguments, const char *code) {
    if (kind != PU_CHAT_CALL_PLUGIN && kind != PU_CHAT_CALL_INTERPRETER)
        return pu_err_set(PU_ERR_INVALID,
                          "chat: tool call kind %d: expected plugin or "
                          "interpreter",
                          (int)kind);
    if (kind == PU_CHAT_CALL_PLUGIN && arguments) {
        json_t *j = parse_json(arguments, strlen(arguments));
        bool ok = json_is_object(j);
        json_decref(j);
        if (!ok)
            return pu_err_set(PU_ERR_FORMAT,
                              "chat: tool call '%s': arguments: expected a JSON object, found "
                              "\"%.40s\"",
                              name ? name : "", arguments);
    }
    m->calls = pu_realloc(m->calls, (size_t)(m->n_calls + 1) * sizeof(pu_chat_call));
    pu_chat_call *k = &m->calls[m->n_calls++];
    memset(k, 0, sizeof(*k));
    k->kind = kind;
    k->name = pu_strdup(name ? name : "");
    k->arguments = pu_strdup(arguments ? arguments : "{}");
    k->code = code ? pu_strdup(code) : NULL;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* rendering                                                                */

static const char *render_role(const char *role) {
    if (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0)
        return "environment";
    return role;
}

static pu_status render_call(pu_str *o, const pu_chat_call *k) {
    if (k->kind == PU_CHAT_CALL_INTERPRETER) {
        pu_str_puts(o, ACTION_START INTERPRETER "\n");
        const char *code = k->code ? k->code : "";
        if (strncmp(code, "```", 3) == 0) {
            pu_str_puts(o, code);
        } else {
            pu_str_puts(o, "```python\n");
            pu_str_puts(o, code);
            size_t n = strlen(code);
            if (n == 0 || code[n - 1] != '\n')
                pu_str_putc(o, '\n');
            pu_str_puts(o, "```");
        }
        pu_str_puts(o, ACTION_END);
        return PU_OK;
    }
    json_t *args = parse_json(k->arguments, strlen(k->arguments));
    if (!json_is_object(args)) {
        json_decref(args);
        return pu_err_set(
            PU_ERR_FORMAT,
            "chat: tool call '%s': arguments: expected a JSON object, found \"%.40s\"", k->name,
            k->arguments);
    }
    pu_str_puts(o, ACTION_START PLUGIN "\n{\"name\": ");
    py_json_string(o, k->name, strlen(k->name));
    pu_str_puts(o, ", \"parameters\": ");
    py_json(o, args, 0);
    pu_str_puts(o, "}" ACTION_END);
    json_decref(args);
    return PU_OK;
}

static void render_turn(pu_str *o, const char *role, const char *name, const char *content) {
    pu_str_puts(o, IM_START);
    pu_str_puts(o, role);
    if (name) {
        pu_str_puts(o, " name=");
        pu_str_puts(o, name);
    }
    pu_str_putc(o, '\n');
    pu_str_puts(o, content);
    pu_str_puts(o, IM_END "\n");
}

pu_status pu_chat_render_calls(const pu_chat_msg *m, pu_str *out) {
    for (int k = 0; k < m->n_calls; k++)
        PU_TRY(render_call(out, &m->calls[k]));
    if (!out->p)
        pu_str_append(out, "", 0);
    return PU_OK;
}

/* tools: JSON array of schemas or OpenAI tools -> python-style array text */
pu_status pu_chat_tools_text(const char *tools_json, pu_str *out) {
    json_t *j = parse_json(tools_json, strlen(tools_json));
    if (!json_is_array(j)) {
        json_decref(j);
        return pu_err_set(PU_ERR_FORMAT, "chat: tools: expected a JSON array of function schemas");
    }
    json_t *fns = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
        json_t *f = json_object_get(v, "function");
        if (json_is_object(f) && json_is_string(json_object_get(v, "type")))
            json_array_append(fns, f);
        else if (json_is_object(v))
            json_array_append(fns, v);
        else {
            json_decref(fns);
            json_decref(j);
            return pu_err_set(PU_ERR_FORMAT, "chat: tools[%zu]: expected an object", i);
        }
    }
    py_json(out, fns, 0);
    json_decref(fns);
    json_decref(j);
    return PU_OK;
}

static pu_status render_tools(pu_str *o, const char *tools_json) {
    pu_str body = {0};
    pu_status st = pu_chat_tools_text(tools_json, &body);
    if (st == PU_OK)
        render_turn(o, "system", PLUGIN, body.p);
    pu_str_free(&body);
    return st;
}

pu_status pu_chat_render(const pu_chat *c, const pu_chat_render_opts *opts, pu_str *out) {
    pu_chat_render_opts o = {0};
    if (opts)
        o = *opts;
    if (o.bos_text)
        pu_str_puts(out, "<s>");
    /* declarations go after the first system message, or first */
    int insert_at =
        (c->n > 0 && strcmp(c->msgs[0].role, "system") == 0 && !c->msgs[0].name) ? 1 : 0;
    for (int i = 0; i <= c->n; i++) {
        if (i == insert_at) {
            if (o.tools_json)
                PU_TRY(render_tools(out, o.tools_json));
            if (o.interpreter)
                render_turn(out, "system", INTERPRETER, o.interpreter);
        }
        if (i == c->n)
            break;
        const pu_chat_msg *m = &c->msgs[i];
        const char *role = render_role(m->role);
        const char *name = m->name;
        if (!name && strcmp(role, m->role) != 0)
            name = PLUGIN; /* OpenAI tool results */
        pu_str_puts(out, IM_START);
        pu_str_puts(out, role);
        if (name) {
            pu_str_puts(out, " name=");
            pu_str_puts(out, name);
        }
        pu_str_putc(out, '\n');
        pu_str_puts(out, m->content);
        for (int k = 0; k < m->n_calls; k++)
            PU_TRY(render_call(out, &m->calls[k]));
        if (!m->open)
            pu_str_puts(out, IM_END "\n");
    }
    if (o.add_generation_prompt)
        pu_str_puts(out, IM_START "assistant\n");
    if (!out->p)
        pu_str_append(out, "", 0);
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* OpenAI JSON messages                                                     */

static pu_status content_text(json_t *c, size_t idx, pu_str *out) {
    if (!c || json_is_null(c))
        return PU_OK;
    if (json_is_string(c)) {
        pu_str_append(out, json_string_value(c), json_string_length(c));
        return PU_OK;
    }
    if (json_is_array(c)) {
        size_t i;
        json_t *p;
        json_array_foreach(c, i, p) {
            json_t *t = json_object_get(p, "text");
            if (json_is_string(t))
                pu_str_append(out, json_string_value(t), json_string_length(t));
            else if (json_is_string(p))
                pu_str_append(out, json_string_value(p), json_string_length(p));
        }
        return PU_OK;
    }
    return pu_err_set(PU_ERR_FORMAT,
                      "chat: messages[%zu].content: expected a string or an array of parts", idx);
}

pu_status pu_chat_from_json(const char *messages_json, size_t len, pu_chat *c) {
    json_error_t e;
    json_t *j = json_loadb(messages_json, len, JSON_ALLOW_NUL, &e);
    if (!j)
        return pu_err_set(PU_ERR_FORMAT, "chat: messages: line %d column %d: %s", e.line, e.column,
                          e.text);
    if (!json_is_array(j)) {
        json_decref(j);
        return pu_err_set(PU_ERR_FORMAT, "chat: messages: expected a JSON array");
    }
    pu_status st = PU_OK;
    size_t i;
    json_t *m;
    pu_str text = {0};
    json_array_foreach(j, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role) {
            st = pu_err_set(PU_ERR_FORMAT, "chat: messages[%zu].role: expected a string", i);
            break;
        }
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
            strcmp(role, "environment") && strcmp(role, "tool") && strcmp(role, "function")) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "chat: messages[%zu].role: expected system, user, assistant, "
                            "environment or tool, found \"%s\"",
                            i, role);
            break;
        }
        pu_str_clear(&text);
        if ((st = content_text(json_object_get(m, "content"), i, &text)) != PU_OK)
            break;
        const char *name = json_string_value(json_object_get(m, "name"));
        /* OpenAI's name on tool results is the function name, not a channel */
        if (name && (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0))
            name = NULL;
        pu_chat_msg *cm = pu_chat_add(c, role, name, text.p ? text.p : "");
        json_t *calls = json_object_get(m, "tool_calls");
        size_t k;
        json_t *call;
        json_array_foreach(calls, k, call) {
            json_t *fn = json_object_get(call, "function");
            if (!fn)
                fn = call;
            const char *fname = json_string_value(json_object_get(fn, "name"));
            json_t *args = json_object_get(fn, "parameters");
            if (!args)
                args = json_object_get(fn, "arguments");
            char *astr = NULL;
            if (json_is_string(args)) {
                astr = pu_strdup(json_string_value(args));
            } else if (json_is_object(args)) {
                char *d = json_dumps(args, JSON_COMPACT);
                astr = pu_strdup(d ? d : "{}");
                free(d);
            }
            if (!fname) {
                st = pu_err_set(PU_ERR_FORMAT,
                                "chat: messages[%zu].tool_calls[%zu].function.name: expected a "
                                "string",
                                i, k);
            } else {
                st = pu_chat_add_call(cm, PU_CHAT_CALL_PLUGIN, fname, astr, NULL);
                if (st != PU_OK)
                    pu_err_prefix(st, "messages[%zu].tool_calls[%zu]: ", i, k);
            }
            pu_free(astr);
            if (st != PU_OK)
                break;
        }
        if (st != PU_OK)
            break;
    }
    pu_str_free(&text);
    json_decref(j);
    return st;
}

/* ------------------------------------------------------------------------ */
/* parsing                                                                  */

static const char *find(const char *s, const char *end, const char *needle) {
    size_t n = strlen(needle);
    if ((size_t)(end - s) < n)
        return NULL;
    for (const char *p = s; p + n <= end; p++) {
        p = memchr(p, needle[0], (size_t)(end - p));
        if (!p || p + n > end)
            return NULL;
        if (memcmp(p, needle, n) == 0)
            return p;
    }
    return NULL;
}

pu_status pu_chat_parse(const char *text, size_t len, pu_chat *c, bool *gen_prompt) {
    const char *p = text, *end = text + len;
    if (gen_prompt)
        *gen_prompt = false;
    if ((size_t)(end - p) >= 3 && memcmp(p, "<s>", 3) == 0)
        p += 3;
    while (p < end) {
        if ((size_t)(end - p) < strlen(IM_START) || memcmp(p, IM_START, strlen(IM_START)) != 0)
            return pu_err_set(PU_ERR_FORMAT,
                              "chat: byte %zu: expected \"<|im_start|>\", found \"%.20s\"",
                              (size_t)(p - text), p);
        p += strlen(IM_START);
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return pu_err_set(PU_ERR_FORMAT, "chat: byte %zu: turn header without a newline",
                              (size_t)(p - text));
        const char *sp = memchr(p, ' ', (size_t)(nl - p));
        const char *role_end = sp ? sp : nl;
        const char *name = NULL;
        size_t name_len = 0;
        if (sp) {
            if ((size_t)(nl - sp) < 6 || memcmp(sp, " name=", 6) != 0)
                return pu_err_set(PU_ERR_FORMAT,
                                  "chat: byte %zu: expected \" name=\" after the role, found "
                                  "\"%.20s\"",
                                  (size_t)(sp - text), sp);
            name = sp + 6;
            name_len = (size_t)(nl - name);
        }
        const char *body = nl + 1;
        const char *e = find(body, end, IM_END);
        if (!e && body == end && role_end - p == 9 && memcmp(p, "assistant", 9) == 0 && !name &&
            gen_prompt) {
            *gen_prompt = true;
            break;
        }
        pu_chat_msg *m = add_msg_n(c, p, (size_t)(role_end - p), name, name_len, body,
                                   (size_t)((e ? e : end) - body));
        if (!e) {
            m->open = true;
            break;
        }
        p = e + strlen(IM_END);
        if (p < end && *p == '\n')
            p++;
        else if (p < end)
            return pu_err_set(PU_ERR_FORMAT, "chat: byte %zu: expected a newline after <|im_end|>",
                              (size_t)(p - text));
    }
    return PU_OK;
}

void pu_chat_reply_free(pu_chat_reply *r) {
    pu_free(r->content);
    for (int k = 0; k < r->n_calls; k++)
        call_free(&r->calls[k]);
    pu_free(r->calls);
    memset(r, 0, sizeof(*r));
}

static char *dup_n(const char *s, size_t n) {
    char *d = pu_malloc(n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = 0;
    return d;
}

pu_status pu_chat_parse_reply(const char *text, size_t len, pu_chat_reply *r) {
    memset(r, 0, sizeof(*r));
    const char *end = text + len;
    const char *im = find(text, end, IM_END);
    if (im) {
        r->finished = true;
        end = im;
    }
    const char *a = find(text, end, ACTION_START);
    r->content = dup_n(text, (size_t)((a ? a : end) - text));
    pu_status st = PU_OK;
    int idx = 0;
    while (a) {
        const char *p = a + strlen(ACTION_START);
        const char *ae = find(p, end, ACTION_END);
        const char *stop = ae ? ae : end;
        pu_chat_call k = {0};
        if ((size_t)(stop - p) >= strlen(PLUGIN) && memcmp(p, PLUGIN, strlen(PLUGIN)) == 0) {
            p += strlen(PLUGIN);
            k.kind = PU_CHAT_CALL_PLUGIN;
            const char *brace = memchr(p, '{', (size_t)(stop - p));
            json_t *j = NULL;
            if (brace) {
                /* the payload is the JSON object from the first '{' to the last '}' */
                const char *q = stop;
                while (q > brace && q[-1] != '}')
                    q--;
                j = parse_json(brace, (size_t)(q - brace));
            }
            json_t *nm = json_object_get(j, "name");
            json_t *args = json_object_get(j, "parameters");
            if (!args)
                args = json_object_get(j, "arguments");
            if (json_is_string(args)) { /* arguments given as JSON text */
                json_t *inner = parse_json(json_string_value(args), json_string_length(args));
                args = inner; /* owned below */
                if (!json_is_object(args)) {
                    json_decref(inner);
                    args = NULL;
                }
                if (args) {
                    char *s = json_dumps(args, JSON_COMPACT);
                    k.arguments = pu_strdup(s);
                    free(s);
                    json_decref(args);
                }
            } else if (json_is_object(args)) {
                char *s = json_dumps(args, JSON_COMPACT);
                k.arguments = pu_strdup(s);
                free(s);
            }
            if (!json_is_string(nm) && st == PU_OK)
                st = pu_err_set(PU_ERR_FORMAT,
                                "chat reply: action %d: expected a JSON object with \"name\" and "
                                "\"parameters\", found \"%.60s\"",
                                idx, p);
            k.name = pu_strdup(json_is_string(nm) ? json_string_value(nm) : "");
            if (!k.arguments)
                k.arguments = pu_strdup("{}");
            json_decref(j);
        } else if ((size_t)(stop - p) >= strlen(INTERPRETER) &&
                   memcmp(p, INTERPRETER, strlen(INTERPRETER)) == 0) {
            p += strlen(INTERPRETER);
            k.kind = PU_CHAT_CALL_INTERPRETER;
            if (p < stop && *p == '\n')
                p++;
            const char *cs = p, *ce = stop;
            /* strip a markdown fence: ```python\n ... \n``` */
            if ((size_t)(ce - cs) >= 3 && memcmp(cs, "```", 3) == 0) {
                const char *nl = memchr(cs, '\n', (size_t)(ce - cs));
                if (nl) {
                    cs = nl + 1;
                    const char *f = ce;
                    while (f > cs && (f[-1] == '\n' || f[-1] == ' '))
                        f--;
                    if (f - cs >= 3 && memcmp(f - 3, "```", 3) == 0)
                        ce = f - 3;
                }
            }
            k.code = dup_n(cs, (size_t)(ce - cs));
            k.name = pu_strdup("interpreter");
            k.arguments = pu_strdup("{}");
        } else {
            if (st == PU_OK)
                st = pu_err_set(PU_ERR_FORMAT,
                                "chat reply: action %d: expected <|plugin|> or <|interpreter|> "
                                "after <|action_start|>",
                                idx);
            a = ae ? find(ae, end, ACTION_START) : NULL;
            idx++;
            continue;
        }
        r->calls = pu_realloc(r->calls, (size_t)(r->n_calls + 1) * sizeof(pu_chat_call));
        r->calls[r->n_calls++] = k;
        idx++;
        a = ae ? find(ae, end, ACTION_START) : NULL;
    }
    return st;
}
