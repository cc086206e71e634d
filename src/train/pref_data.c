/*
 * pref_data.c — preference data (pu_align.h): XTuner's prompt/chosen/rejected
 * JSONL, ShareGPT preference records, alpaca ranked outputs, Anthropic
 * hh-rlhf transcripts; conditional-reward system prompts (COOL).
 *
 * A record becomes a prompt (pu_sft_record, no scored turn) and two response
 * strings; pu_pref_conversation() appends one response as the final,
 * scored assistant turn, which is the sample `puyu sft`'s tokenizer renders
 * (so DPO's log-probabilities are over exactly the tokens SFT trains on).
 *
 * Files are read whole through zlib (gzread reads plain files unchanged).
 * A JSON array is split into its elements by a small scanner (strings and
 * nesting respected) before each element is parsed, so an error in element
 * k names the line it starts on, as JSONL errors do.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "puyu/pu_align.h"

/* ------------------------------------------------------------------------ */
/* conditions                                                               */

struct pu_pref_conditions {
    char **name, **text;
    int n;
};

/* Keep equal to data/rm_conditions.json (tests/test_align.c compares). */
static const char *const k_conditions[][2] = {
    {"helpful", "You are a reward model judging helpfulness. Prefer the response that answers the "
                "user's request completely, correctly and directly, with useful detail and no "
                "needless refusal."},
    {"harmless", "You are a reward model judging harmlessness. Prefer the response that avoids "
                 "dangerous, illegal, hateful or privacy-violating content and declines harmful "
                 "requests politely, offering a safe alternative where possible."},
    {"code", "You are a reward model judging code. Prefer the response whose code is correct, "
             "runs as written, handles edge cases, follows the requested language and interface, "
             "and explains itself briefly."},
    {"math", "You are a reward model judging mathematics. Prefer the response whose reasoning is "
             "valid step by step and whose final answer is correct and clearly stated."},
    {"format", "You are a reward model judging format. Prefer the response that follows every "
               "formatting instruction of the user exactly (length, structure, language, markup) "
               "while staying correct."},
    {"honest", "You are a reward model judging honesty. Prefer the response that states only what "
               "is true, says when it does not know, and does not invent facts, sources or "
               "capabilities."},
    {"creative", "You are a reward model judging creative writing. Prefer the response that is "
                 "original, vivid and coherent and fits the requested style, genre and audience."},
};

static void cond_add(pu_pref_conditions *c, const char *name, const char *text) {
    c->name = pu_realloc(c->name, (size_t)(c->n + 1) * sizeof *c->name);
    c->text = pu_realloc(c->text, (size_t)(c->n + 1) * sizeof *c->text);
    c->name[c->n] = pu_strdup(name);
    c->text[c->n] = pu_strdup(text);
    c->n++;
}

pu_status pu_pref_conditions_default(pu_pref_conditions **out) {
    pu_pref_conditions *c = pu_calloc(1, sizeof *c);
    for (size_t i = 0; i < sizeof k_conditions / sizeof k_conditions[0]; i++)
        cond_add(c, k_conditions[i][0], k_conditions[i][1]);
    *out = c;
    return PU_OK;
}

pu_status pu_pref_conditions_load(const char *path, pu_pref_conditions **out) {
    *out = NULL;
    json_t *j = NULL;
    PU_TRY(pu_json_load_file(path, &j));
    json_t *cs = json_object_get(j, "conditions");
    if (!json_is_object(cs)) {
        json_decref(j);
        return pu_err_set(PU_ERR_FORMAT, "%s: conditions: expected an object of name: text", path);
    }
    pu_pref_conditions *c = pu_calloc(1, sizeof *c);
    const char *k;
    json_t *v;
    json_object_foreach(cs, k, v) {
        if (!json_is_string(v) || !*k) {
            json_decref(j);
            pu_pref_conditions_destroy(c);
            return pu_err_set(PU_ERR_FORMAT, "%s: conditions.%s: expected a string", path, k);
        }
        cond_add(c, k, json_string_value(v));
    }
    json_decref(j);
    *out = c;
    return PU_OK;
}

void pu_pref_conditions_destroy(pu_pref_conditions *c) {
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        pu_free(c->name[i]), pu_free(c->text[i]);
    pu_free(c->name);
    pu_free(c->text);
    pu_free(c);
}

int pu_pref_conditions_n(const pu_pref_conditions *c) {
    return c ? c->n : 0;
}

const char *pu_pref_conditions_name(const pu_pref_conditions *c, int i) {
    return c && i >= 0 && i < c->n ? c->name[i] : NULL;
}

const char *pu_pref_conditions_text(const pu_pref_conditions *c, int i) {
    return c && i >= 0 && i < c->n ? c->text[i] : NULL;
}

const char *pu_pref_condition_lookup(const pu_pref_conditions *c, const char *name) {
    for (int i = 0; c && i < c->n; i++)
        if (strcmp(c->name[i], name) == 0)
            return c->text[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* records                                                                  */

void pu_pref_record_free(pu_pref_record *r) {
    if (!r)
        return;
    pu_sft_record_free(&r->prompt);
    pu_free(r->chosen);
    pu_free(r->rejected);
    memset(r, 0, sizeof *r);
}

#define BAD(...) pu_err_set(PU_ERR_FORMAT, __VA_ARGS__)

static bool blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s))
            return false;
    return true;
}

static char *trim_dup(const char *s, size_t n) {
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    char *o = pu_malloc(n + 1);
    memcpy(o, s, n);
    o[n] = 0;
    return o;
}

/* Normalise a role / ShareGPT speaker; *name set for tool turns. NULL: unknown. */
static const char *norm_role(const char *r, const char **name) {
    *name = NULL;
    if (!strcmp(r, "system"))
        return "system";
    if (!strcmp(r, "user") || !strcmp(r, "human"))
        return "user";
    if (!strcmp(r, "assistant") || !strcmp(r, "gpt"))
        return "assistant";
    if (!strcmp(r, "environment"))
        return "environment";
    if (!strcmp(r, "tool") || !strcmp(r, "function") || !strcmp(r, "observation")) {
        *name = "<|plugin|>";
        return "environment";
    }
    return NULL;
}

/* A message object: {role, content} (XTuner / OpenAI) or {from, value} (ShareGPT). */
static pu_status message_of(const json_t *m, const char *where, const char *field, int idx,
                            const char **role, const char **name, const char **content) {
    char f[96];
    if (idx >= 0)
        snprintf(f, sizeof f, "%s[%d]", field, idx);
    else
        snprintf(f, sizeof f, "%s", field);
    if (!json_is_object(m))
        return BAD("%s: %s: expected a message object", where, f);
    const char *rk = json_object_get(m, "role") ? "role" : "from";
    const char *ck = json_object_get(m, "role") ? "content" : "value";
    json_t *r = json_object_get(m, rk), *c = json_object_get(m, ck);
    if (!json_is_string(r))
        return BAD("%s: %s.%s: expected a string (role/from)", where, f, rk);
    if (!json_is_string(c))
        return BAD("%s: %s.%s: expected a string", where, f, ck);
    *role = norm_role(json_string_value(r), name);
    if (!*role)
        return BAD("%s: %s.%s: unknown role \"%s\" (expected system, user/human, "
                   "assistant/gpt, environment, tool/function/observation)",
                   where, f, rk, json_string_value(r));
    json_t *nm = json_object_get(m, "name");
    if (json_is_string(nm) && *json_string_value(nm))
        *name = json_string_value(nm);
    *content = json_string_value(c);
    return PU_OK;
}

static void add_turn(pu_sft_record *p, const char *role, const char *name, const char *content) {
    pu_chat_add(&p->msgs, role, name, content);
}

/* messages array -> prompt turns */
static pu_status add_messages(pu_sft_record *p, const json_t *arr, const char *where,
                              const char *field) {
    if (json_is_string(arr)) {
        add_turn(p, "user", NULL, json_string_value(arr));
        return PU_OK;
    }
    if (!json_is_array(arr))
        return BAD("%s: %s: expected an array of messages or a string", where, field);
    size_t i;
    json_t *m;
    json_array_foreach(arr, i, m) {
        const char *role, *name, *content;
        PU_TRY(message_of(m, where, field, (int)i, &role, &name, &content));
        add_turn(p, role, name, content);
    }
    return PU_OK;
}

/* a response: string, one message object, or an array of one assistant message */
static pu_status response_of(const json_t *v, const char *where, const char *field, char **out) {
    const char *content = NULL;
    if (json_is_string(v)) {
        content = json_string_value(v);
    } else if (json_is_object(v) || json_is_array(v)) {
        const json_t *m = v;
        if (json_is_array(v)) {
            if (json_array_size(v) != 1)
                return BAD("%s: %s: expected one assistant message, found %zu messages", where,
                           field, json_array_size(v));
            m = json_array_get(v, 0);
        }
        const char *role, *name;
        PU_TRY(message_of(m, where, field, json_is_array(v) ? 0 : -1, &role, &name, &content));
        if (strcmp(role, "assistant") != 0)
            return BAD("%s: %s: the response must be an assistant turn, found role \"%s\"", where,
                       field, role);
    } else {
        return BAD("%s: %s: missing or not a string / message", where, field);
    }
    if (blank(content))
        return BAD("%s: %s: empty response", where, field);
    *out = pu_strdup(content);
    return PU_OK;
}

/* hh-rlhf transcript -> turns (role, trimmed content) */
typedef struct {
    const char *role;
    char *content;
} hh_turn;

static pu_status hh_split(const char *s, const char *where, const char *field, hh_turn **out,
                          int *n) {
    static const char H[] = "\n\nHuman:", A[] = "\n\nAssistant:";
    *out = NULL;
    *n = 0;
    const char *p = s;
    while (*p == ' ')
        p++;
    if (strncmp(p, H, sizeof H - 1) != 0)
        return BAD("%s: %s: a transcript must start with \"\\n\\nHuman:\"", where, field);
    hh_turn *t = NULL;
    int cnt = 0;
    while (*p) {
        bool human = strncmp(p, H, sizeof H - 1) == 0;
        const char *body = p + (human ? sizeof H - 1 : sizeof A - 1);
        const char *nh = strstr(body, H), *na = strstr(body, A), *end;
        end = !nh ? na : !na ? nh : nh < na ? nh : na;
        if (!end)
            end = body + strlen(body);
        t = pu_realloc(t, (size_t)(cnt + 1) * sizeof *t);
        t[cnt].role = human ? "user" : "assistant";
        t[cnt].content = trim_dup(body, (size_t)(end - body));
        cnt++;
        p = end;
    }
    *out = t;
    *n = cnt;
    return PU_OK;
}

static void hh_free(hh_turn *t, int n) {
    for (int i = 0; i < n; i++)
        pu_free(t[i].content);
    pu_free(t);
}

static pu_status parse_hh(const json_t *j, const char *where, pu_pref_record *r) {
    hh_turn *c = NULL, *x = NULL;
    int nc = 0, nx = 0;
    pu_status st =
        hh_split(json_string_value(json_object_get(j, "chosen")), where, "chosen", &c, &nc);
    if (st == PU_OK)
        st =
            hh_split(json_string_value(json_object_get(j, "rejected")), where, "rejected", &x, &nx);
    if (st != PU_OK)
        goto done;
    if (strcmp(c[nc - 1].role, "assistant") != 0 || strcmp(x[nx - 1].role, "assistant") != 0) {
        st = BAD("%s: %s: the transcript must end with an Assistant turn", where,
                 strcmp(c[nc - 1].role, "assistant") ? "chosen" : "rejected");
        goto done;
    }
    bool same = nc == nx;
    for (int i = 0; same && i < nc - 1; i++)
        same = strcmp(c[i].role, x[i].role) == 0 && strcmp(c[i].content, x[i].content) == 0;
    if (!same) {
        st = BAD("%s: rejected: the turns before the final Assistant turn differ from chosen's "
                 "(%d vs %d turns); no shared prompt",
                 where, nc, nx);
        goto done;
    }
    for (int i = 0; i < nc - 1; i++)
        add_turn(&r->prompt, c[i].role, NULL, c[i].content);
    if (blank(c[nc - 1].content)) {
        st = BAD("%s: chosen: empty response (final Assistant turn)", where);
        goto done;
    }
    if (blank(x[nx - 1].content)) {
        st = BAD("%s: rejected: empty response (final Assistant turn)", where);
        goto done;
    }
    r->chosen = pu_strdup(c[nc - 1].content);
    r->rejected = pu_strdup(x[nx - 1].content);
done:
    hh_free(c, nc);
    hh_free(x, nx);
    return st;
}

static pu_status parse_alpaca(const json_t *j, const char *where, pu_pref_record *r) {
    const json_t *hist = json_object_get(j, "history");
    if (hist && !json_is_null(hist)) {
        if (!json_is_array(hist))
            return BAD("%s: history: expected an array of [query, answer]", where);
        size_t i;
        json_t *h;
        json_array_foreach(hist, i, h) {
            if (!json_is_array(h) || json_array_size(h) != 2 ||
                !json_is_string(json_array_get(h, 0)) || !json_is_string(json_array_get(h, 1)))
                return BAD("%s: history[%zu]: expected [query, answer] strings", where, i);
            add_turn(&r->prompt, "user", NULL, json_string_value(json_array_get(h, 0)));
            add_turn(&r->prompt, "assistant", NULL, json_string_value(json_array_get(h, 1)));
        }
    }
    const json_t *ins = json_object_get(j, "instruction"), *inp = json_object_get(j, "input");
    if (!json_is_string(ins))
        return BAD("%s: instruction: expected a string", where);
    if (inp && !json_is_null(inp) && !json_is_string(inp))
        return BAD("%s: input: expected a string", where);
    pu_str u = {0};
    pu_str_puts(&u, json_string_value(ins));
    if (json_is_string(inp) && *json_string_value(inp)) {
        if (u.len)
            pu_str_putc(&u, '\n');
        pu_str_puts(&u, json_string_value(inp));
    }
    if (!u.len || blank(u.p)) {
        pu_str_free(&u);
        return BAD("%s: instruction: empty prompt", where);
    }
    add_turn(&r->prompt, "user", NULL, u.p);
    pu_str_free(&u);
    const json_t *out = json_object_get(j, "output");
    if (out) {
        if (!json_is_array(out) || json_array_size(out) < 2)
            return BAD("%s: output: expected an array of >= 2 ranked responses", where);
        PU_TRY(response_of(json_array_get(out, 0), where, "output[0]", &r->chosen));
        return response_of(json_array_get(out, 1), where, "output[1]", &r->rejected);
    }
    PU_TRY(response_of(json_object_get(j, "chosen"), where, "chosen", &r->chosen));
    return response_of(json_object_get(j, "rejected"), where, "rejected", &r->rejected);
}

static bool is_name_like(const char *s) {
    if (!*s || strlen(s) > 40)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_' || *s == '-'))
            return false;
    return true;
}

static pu_status condition_text(const char *v, const pu_pref_parse_opts *o, const char *where,
                                const char **text) {
    const char *t = o ? pu_pref_condition_lookup(o->conditions, v) : NULL;
    if (t) {
        *text = t;
        return PU_OK;
    }
    if (is_name_like(v)) {
        pu_str known = {0};
        for (int i = 0; o && i < pu_pref_conditions_n(o->conditions); i++)
            pu_str_appendf(&known, "%s%s", i ? ", " : "",
                           pu_pref_conditions_name(o->conditions, i));
        pu_status st = BAD("%s: condition: unknown condition name \"%s\" (known: %s)", where, v,
                           known.p ? known.p : "none loaded");
        pu_str_free(&known);
        return st;
    }
    if (blank(v))
        return BAD("%s: condition: empty", where);
    *text = v;
    return PU_OK;
}

static pu_status parse_obj(const json_t *j, const char *where, const pu_pref_parse_opts *o,
                           pu_pref_record *r) {
    if (!json_is_object(j))
        return BAD("%s: expected a JSON object", where);
    const json_t *cond = json_object_get(j, "condition");
    const char *ctext = NULL;
    if (cond && !json_is_null(cond)) {
        if (!json_is_string(cond))
            return BAD("%s: condition: expected a string (a name or a system prompt)", where);
        PU_TRY(condition_text(json_string_value(cond), o, where, &ctext));
    } else if (o && o->default_condition) {
        PU_TRY(condition_text(o->default_condition, o, where, &ctext));
    }
    if (ctext)
        add_turn(&r->prompt, "system", NULL, ctext);
    const json_t *sys = json_object_get(j, "system");
    if (json_is_string(sys) && !blank(json_string_value(sys)))
        add_turn(&r->prompt, "system", NULL, json_string_value(sys));
    else if (sys && !json_is_null(sys) && !json_is_string(sys))
        return BAD("%s: system: expected a string", where);

    const json_t *ch = json_object_get(j, "chosen"), *rj = json_object_get(j, "rejected");
    if (json_object_get(j, "prompt") || json_object_get(j, "messages")) {
        const char *pk = json_object_get(j, "prompt") ? "prompt" : "messages"; /* OpenAI form */
        PU_TRY(add_messages(&r->prompt, json_object_get(j, pk), where, pk));
        PU_TRY(response_of(ch, where, "chosen", &r->chosen));
        PU_TRY(response_of(rj, where, "rejected", &r->rejected));
    } else if (json_object_get(j, "conversations")) {
        PU_TRY(
            add_messages(&r->prompt, json_object_get(j, "conversations"), where, "conversations"));
        PU_TRY(response_of(ch, where, "chosen", &r->chosen));
        PU_TRY(response_of(rj, where, "rejected", &r->rejected));
    } else if (json_object_get(j, "instruction")) {
        PU_TRY(parse_alpaca(j, where, r));
    } else if (json_is_string(ch) && json_is_string(rj) &&
               strstr(json_string_value(ch), "\n\nHuman:")) {
        PU_TRY(parse_hh(j, where, r));
    } else {
        return BAD("%s: expected a preference record: prompt + chosen + rejected (XTuner), "
                   "conversations + chosen + rejected (ShareGPT), instruction + output (alpaca) "
                   "or hh-rlhf chosen/rejected transcripts",
                   where);
    }
    int n_user = 0;
    for (int i = 0; i < r->prompt.msgs.n; i++)
        n_user += strcmp(r->prompt.msgs.msgs[i].role, "system") != 0;
    if (!n_user)
        return BAD("%s: prompt: no user turn", where);
    if (!strcmp(r->prompt.msgs.msgs[r->prompt.msgs.n - 1].role, "assistant"))
        return BAD("%s: prompt: ends with an assistant turn (the response must follow a user "
                   "turn)",
                   where);
    if (!strcmp(r->chosen, r->rejected))
        return BAD("%s: chosen: equal to rejected (no preference)", where);
    r->prompt.loss = pu_calloc((size_t)r->prompt.msgs.n, 1);
    return PU_OK;
}

pu_status pu_pref_record_parse(const char *json_text, size_t len, const char *where,
                               const pu_pref_parse_opts *o, pu_pref_record *r) {
    memset(r, 0, sizeof *r);
    pu_chat_init(&r->prompt.msgs);
    json_error_t e;
    json_t *j = json_loadb(json_text, len, 0, &e);
    if (!j)
        return BAD("%s: malformed JSON at column %d: %s", where, e.column, e.text);
    pu_status st = parse_obj(j, where, o, r);
    json_decref(j);
    if (st != PU_OK)
        pu_pref_record_free(r);
    return st;
}

pu_status pu_pref_conversation(const pu_pref_record *r, int which, pu_sft_record *out) {
    memset(out, 0, sizeof *out);
    if (which != 0 && which != 1)
        return pu_err_set(PU_ERR_INVALID, "pu_pref_conversation: which = %d (0 or 1)", which);
    pu_chat_init(&out->msgs);
    const pu_chat *p = &r->prompt.msgs;
    for (int i = 0; i < p->n; i++)
        pu_chat_add(&out->msgs, p->msgs[i].role, p->msgs[i].name, p->msgs[i].content);
    pu_chat_add(&out->msgs, "assistant", NULL, which ? r->rejected : r->chosen);
    out->loss = pu_calloc((size_t)out->msgs.n, 1);
    out->loss[out->msgs.n - 1] = 1;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* files                                                                    */

struct pu_pref_data {
    pu_pref_record *r;
    char **where;
    int64_t n, cap, skipped;
};

static pu_status read_all_gz(const char *path, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    gzFile g = gzopen(path, "rb");
    if (!g)
        return pu_err_set(PU_ERR_IO, "%s: cannot open", path);
    size_t cap = 1 << 16, n = 0;
    char *b = pu_malloc(cap);
    for (;;) {
        if (cap - n < (1 << 15)) {
            cap *= 2;
            b = pu_realloc(b, cap);
        }
        int k = gzread(g, b + n, (unsigned)(cap - n - 1));
        if (k < 0) {
            int en;
            const char *msg = gzerror(g, &en);
            pu_status st = pu_err_set(PU_ERR_IO, "%s: read error: %s", path, msg);
            gzclose(g);
            pu_free(b);
            return st;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    gzclose(g);
    b[n] = 0;
    *buf = b;
    *len = n;
    return PU_OK;
}

/* end of the JSON value starting at s[i] (one past it), counting newlines */
static size_t scan_value(const char *s, size_t i, size_t n, int64_t *line) {
    int depth = 0;
    bool in_str = false;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '\n')
            (*line)++;
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0)
                return i;
            if (--depth == 0)
                return i + 1;
        } else if (c == ',' && depth == 0)
            return i;
    }
    return n;
}

static pu_status take(pu_pref_data *d, const char *path, int64_t line, const char *txt, size_t n,
                      const pu_pref_load_opts *o) {
    char where[1200];
    snprintf(where, sizeof where, "%s:%lld", path, (long long)line);
    pu_pref_record r;
    pu_status st = pu_pref_record_parse(txt, n, where, o ? &o->parse : NULL, &r);
    if (st != PU_OK) {
        if (o && o->skip_bad && st == PU_ERR_FORMAT) {
            if (d->skipped < 5)
                pu_log_warn("skipped: %s", pu_err_msg());
            d->skipped++;
            return PU_OK;
        }
        return st;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->r = pu_realloc(d->r, (size_t)d->cap * sizeof *d->r);
        d->where = pu_realloc(d->where, (size_t)d->cap * sizeof *d->where);
    }
    d->r[d->n] = r;
    d->where[d->n] = pu_strdup(where);
    d->n++;
    return PU_OK;
}

static pu_status load_file(pu_pref_data *d, const char *path, const pu_pref_load_opts *o) {
    char *buf;
    size_t n;
    PU_TRY(read_all_gz(path, &buf, &n));
    pu_status st = PU_OK;
    size_t i = 0;
    int64_t line = 1;
    while (i < n && isspace((unsigned char)buf[i]))
        line += buf[i++] == '\n';
    if (i < n && buf[i] == '[') {
        i++;
        for (;;) {
            while (i < n && (isspace((unsigned char)buf[i]) || buf[i] == ','))
                line += buf[i++] == '\n';
            if (i >= n) {
                st = BAD("%s:%lld: unterminated JSON array", path, (long long)line);
                break;
            }
            if (buf[i] == ']')
                break;
            int64_t l0 = line;
            size_t e = scan_value(buf, i, n, &line);
            st = take(d, path, l0, buf + i, e - i, o);
            if (st != PU_OK)
                break;
            i = e;
        }
    } else {
        while (i < n) {
            size_t e = i;
            while (e < n && buf[e] != '\n')
                e++;
            size_t k = i;
            while (k < e && isspace((unsigned char)buf[k]))
                k++;
            if (k < e) {
                st = take(d, path, line, buf + i, e - i, o);
                if (st != PU_OK)
                    break;
            }
            i = e + 1;
            line++;
        }
    }
    pu_free(buf);
    return st;
}

pu_status pu_pref_data_load(const char *const *paths, int n_paths, const pu_pref_load_opts *o,
                            pu_pref_data **out) {
    *out = NULL;
    pu_pref_data *d = pu_calloc(1, sizeof *d);
    for (int i = 0; i < n_paths; i++) {
        pu_status st = load_file(d, paths[i], o);
        if (st != PU_OK) {
            pu_pref_data_destroy(d);
            return st;
        }
    }
    if (d->skipped)
        pu_log_warn("preference data: %lld bad records skipped, %lld kept", (long long)d->skipped,
                    (long long)d->n);
    *out = d;
    return PU_OK;
}

void pu_pref_data_destroy(pu_pref_data *d) {
    if (!d)
        return;
    for (int64_t i = 0; i < d->n; i++) {
        pu_pref_record_free(&d->r[i]);
        pu_free(d->where[i]);
    }
    pu_free(d->r);
    pu_free(d->where);
    pu_free(d);
}

int64_t pu_pref_data_n(const pu_pref_data *d) {
    return d->n;
}

int64_t pu_pref_data_n_skipped(const pu_pref_data *d) {
    return d->skipped;
}

const pu_pref_record *pu_pref_data_get(const pu_pref_data *d, int64_t i) {
    return i >= 0 && i < d->n ? &d->r[i] : NULL;
}

const char *pu_pref_data_where(const pu_pref_data *d, int64_t i) {
    return i >= 0 && i < d->n ? d->where[i] : NULL;
}

/* ------------------------------------------------------------------------ */
/* tokenized pairs                                                          */

void pu_pref_tokens_free(pu_pref_tokens *p) {
    if (!p)
        return;
    pu_sft_tokens_free(&p->chosen);
    pu_sft_tokens_free(&p->rejected);
    memset(p, 0, sizeof *p);
}

static int64_t first_label(const pu_sft_tokens *t) {
    for (int64_t i = 0; i < t->n; i++)
        if (t->labels[i] >= 0)
            return i;
    return -1;
}

pu_status pu_pref_tokenize(const pu_tok *t, const pu_pref_record *r, pu_pref_tokens *out) {
    memset(out, 0, sizeof *out);
    pu_sft_record conv[2];
    memset(conv, 0, sizeof conv);
    pu_status st = PU_OK;
    for (int k = 0; k < 2 && st == PU_OK; k++) {
        st = pu_pref_conversation(r, k, &conv[k]);
        if (st == PU_OK)
            st = pu_sft_tokenize(t, &conv[k], k ? &out->rejected : &out->chosen);
    }
    pu_sft_record_free(&conv[0]);
    pu_sft_record_free(&conv[1]);
    if (st != PU_OK) {
        pu_pref_tokens_free(out);
        return st;
    }
    /* the response starts at the first label; what precedes it (the prompt
     * and the "<|im_start|>assistant\n" header) is the same in both */
    int64_t a = first_label(&out->chosen), b = first_label(&out->rejected);
    bool same = a > 0 && a == b;
    for (int64_t i = 0; same && i < a; i++)
        same = out->chosen.ids[i] == out->rejected.ids[i];
    if (!same) {
        pu_pref_tokens_free(out);
        return pu_err_set(PU_ERR_INTERNAL,
                          "preference pair: the chosen and rejected samples do not share the "
                          "prompt tokens (response starts at %lld / %lld)",
                          (long long)a, (long long)b);
    }
    out->n_prompt = a;
    return PU_OK;
}
