/*
 * json_constraint.c — JSON mode: a byte-level JSON pushdown automaton and the
 * token mask built on it (see pu_json_constraint.h).
 *
 * The automaton is fed one byte at a time; numbers have no end marker, so a
 * byte that cannot extend a number ends it and is then read again as what
 * follows the value. The mask copies the state (a few dozen bytes) per
 * vocabulary token and feeds the token's bytes: O(total vocabulary bytes)
 * per step, about 0.5 MB for InternLM2's 92544 pieces.
 */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "puyu/pu_json_constraint.h"

enum {
    S_VALUE = 1, /* a value must start */
    S_ARR_FIRST, /* after '[': a value or ']' */
    S_OBJ_FIRST, /* after '{': a key or '}' */
    S_OBJ_KEY,   /* after ',' in an object: a key */
    S_COLON,     /* after a key */
    S_AFTER,     /* after a value in a container: ',' or the closer */
    S_DONE,      /* the top-level value is complete */
    S_STR,
    S_ESC,
    S_HEX,
    S_UTF8,
    S_LIT,
    S_NUM_MINUS,
    S_NUM_ZERO,
    S_NUM_INT,
    S_NUM_DOT,
    S_NUM_FRAC,
    S_NUM_E,
    S_NUM_ESIGN,
    S_NUM_EDIG,
    S_SUR_BS, /* after a high surrogate escape: '\\' */
    S_SUR_U,  /* then 'u' */
};

static const char *const k_lits[] = {"true", "false", "null"};

static bool is_ws(uint8_t c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}
static bool is_digit(uint8_t c) {
    return c >= '0' && c <= '9';
}
static bool is_hex(uint8_t c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* ------------------------------------------------------------------------ */
/* schema subset                                                             */

typedef enum {
    T_ANY = 0,
    T_STRING,
    T_NUMBER,
    T_INTEGER,
    T_BOOLEAN,
    T_NULL,
    T_OBJECT,
    T_ARRAY
} ptype;

typedef struct sprop {
    char name[48];
    ptype type;
    int n_enum;
    char en[16][48];
} sprop;

struct pu_json_schema {
    sprop p[64];
    int n;
    uint64_t required;
};

pu_status pu_json_schema_parse(const char *json, size_t len, pu_json_schema **out) {
    *out = NULL;
    json_t *root = NULL;
    PU_TRY(pu_json_loadb(json, len, "json_schema", &root));
    json_t *sc = json_object_get(root, "schema") ? json_object_get(root, "schema") : root;
    pu_status st = PU_OK;
    pu_json_schema *s = pu_calloc(1, sizeof *s);
    json_t *ty = json_object_get(sc, "type"), *props = json_object_get(sc, "properties");
    if (!json_is_object(sc) ||
        (ty && (!json_is_string(ty) || strcmp(json_string_value(ty), "object"))))
        st = pu_err_set(PU_ERR_UNSUPPORTED,
                        "json_schema.type: only \"object\" schemas are supported");
    else if (props && !json_is_object(props))
        st = pu_err_set(PU_ERR_FORMAT, "json_schema.properties: expected an object");
    static const char *const names[] = {"string", "number", "integer", "boolean",
                                        "null",   "object", "array"};
    const char *k;
    json_t *v;
    /* keywords that would restrict the output beyond this subset are refused
     * (ignoring them could produce JSON that does not validate); annotations
     * pass */
    static const char *const top_kw[] = {"type",  "properties", "required", "additionalProperties",
                                         "title", "description", "$schema",  "$id",
                                         "default", "examples", NULL};
    static const char *const prop_kw[] = {"type",    "enum",     "title", "description",
                                          "default", "examples", NULL};
    if (!st && json_is_object(sc))
        json_object_foreach(sc, k, v) {
            bool known = false;
            for (int i = 0; top_kw[i]; i++)
                known = known || !strcmp(k, top_kw[i]);
            if (!known) {
                st = pu_err_set(PU_ERR_UNSUPPORTED, "json_schema.%s: unsupported keyword", k);
                break;
            }
            if (!strcmp(k, "additionalProperties") && !json_is_boolean(v)) {
                st = pu_err_set(PU_ERR_UNSUPPORTED,
                                "json_schema.additionalProperties: only true/false (extra keys "
                                "are never generated)");
                break;
            }
            if (!strcmp(k, "required") && !json_is_array(v)) {
                st = pu_err_set(PU_ERR_FORMAT, "json_schema.required: expected an array");
                break;
            }
        }
    if (!st)
        json_object_foreach(props, k, v) {
            if (!json_is_object(v)) {
                st = pu_err_set(PU_ERR_FORMAT, "json_schema.properties.%s: expected an object", k);
                break;
            }
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2) {
                bool known = false;
                for (int i = 0; prop_kw[i]; i++)
                    known = known || !strcmp(k2, prop_kw[i]);
                if (!known) {
                    st = pu_err_set(PU_ERR_UNSUPPORTED,
                                    "json_schema.properties.%s.%s: unsupported keyword", k, k2);
                    break;
                }
            }
            json_t *t = json_object_get(v, "type");
            if (!st && t && !json_is_string(t))
                st = pu_err_set(PU_ERR_UNSUPPORTED,
                                "json_schema.properties.%s.type: only a single type name", k);
            if (st)
                break;
        }
    if (!st)
        json_object_foreach(props, k, v) {
            if (s->n >= 64 || strlen(k) >= 48 || strchr(k, '"') || strchr(k, '\\')) {
                st = pu_err_set(PU_ERR_UNSUPPORTED,
                                "json_schema.properties.%s: at most 64 properties of at most 47 "
                                "bytes without quotes or backslashes",
                                k);
                break;
            }
            sprop *p = &s->p[s->n++];
            snprintf(p->name, sizeof p->name, "%s", k);
            json_t *t = json_object_get(v, "type");
            if (json_is_string(t)) {
                for (int i = 0; i < 7; i++)
                    if (!strcmp(json_string_value(t), names[i]))
                        p->type = (ptype)(i + 1);
                if (p->type == T_ANY) {
                    st = pu_err_set(PU_ERR_FORMAT, "json_schema.properties.%s.type: unknown \"%s\"",
                                    k, json_string_value(t));
                    break;
                }
            }
            json_t *en = json_object_get(v, "enum");
            if (en) {
                size_t i;
                json_t *e;
                json_array_foreach(en, i, e) {
                    if (!json_is_string(e) || i >= 16 || json_string_length(e) >= 48 ||
                        strchr(json_string_value(e), '"') || strchr(json_string_value(e), '\\')) {
                        st =
                            pu_err_set(PU_ERR_UNSUPPORTED,
                                       "json_schema.properties.%s.enum: up to 16 plain strings", k);
                        break;
                    }
                    snprintf(p->en[p->n_enum++], 48, "%s", json_string_value(e));
                }
                if (st)
                    break;
                if (!json_is_array(en) || !p->n_enum) {
                    st = pu_err_set(PU_ERR_FORMAT,
                                    "json_schema.properties.%s.enum: expected strings", k);
                    break;
                }
                p->type = T_STRING;
            }
        }
    json_t *req = json_object_get(sc, "required");
    size_t i;
    json_t *e;
    if (!st)
        json_array_foreach(req, i, e) {
            int found = -1;
            for (int j = 0; j < s->n && json_is_string(e); j++)
                if (!strcmp(s->p[j].name, json_string_value(e)))
                    found = j;
            if (found < 0) {
                st = pu_err_set(PU_ERR_FORMAT, "json_schema.required[%zu]: not a property", i);
                break;
            }
            s->required |= 1ull << found;
        }
    json_decref(root);
    if (st) {
        pu_free(s);
        return st;
    }
    *out = s;
    return PU_OK;
}

void pu_json_schema_destroy(pu_json_schema *s) {
    pu_free(s);
}

pu_json_schema *pu_json_schema_copy(const pu_json_schema *s) {
    if (!s)
        return NULL;
    pu_json_schema *c = pu_malloc(sizeof *c);
    memcpy(c, s, sizeof *c);
    return c;
}

void pu_json_sm_init_schema(pu_json_sm *s, const pu_json_schema *schema) {
    pu_json_sm_init(s, true);
    s->schema = schema;
}

static bool schema_here(const pu_json_sm *s) {
    return s->schema && s->depth == 1;
}

/* some unused property (enum value) starts with kbuf[0..klen) */
static bool key_prefix_ok(const pu_json_sm *s) {
    for (int i = 0; i < s->schema->n; i++)
        if (!(s->used >> i & 1) && !strncmp(s->schema->p[i].name, s->kbuf, s->klen) &&
            strlen(s->schema->p[i].name) >= s->klen)
            return true;
    return false;
}

static int key_exact(const pu_json_sm *s) {
    for (int i = 0; i < s->schema->n; i++)
        if (!(s->used >> i & 1) && strlen(s->schema->p[i].name) == s->klen &&
            !memcmp(s->schema->p[i].name, s->kbuf, s->klen))
            return i;
    return -1;
}

static bool enum_prefix_ok(const pu_json_sm *s, bool exact) {
    const sprop *p = &s->schema->p[s->prop];
    for (int i = 0; i < p->n_enum; i++) {
        size_t l = strlen(p->en[i]);
        if ((exact ? l == s->klen : l >= s->klen) && !memcmp(p->en[i], s->kbuf, s->klen))
            return true;
    }
    return false;
}

static bool any_unused(const pu_json_sm *s) {
    uint64_t all = s->schema->n == 64 ? ~0ull : ((1ull << s->schema->n) - 1);
    return (s->used & all) != all;
}

static bool required_done(const pu_json_sm *s) {
    return (s->used & s->schema->required) == s->schema->required;
}

/* the first byte of a member value against the property's type */
static bool type_start_ok(pu_json_sm *s, uint8_t c) {
    if (s->prop < 0)
        return false;
    const sprop *p = &s->schema->p[s->prop];
    switch (p->type) {
    case T_STRING:
        s->in_enum = p->n_enum > 0;
        s->klen = 0;
        return c == '"';
    case T_NUMBER: return c == '-' || is_digit(c);
    case T_INTEGER: s->int_only = true; return c == '-' || is_digit(c);
    case T_BOOLEAN: return c == 't' || c == 'f';
    case T_NULL: return c == 'n';
    case T_OBJECT: return c == '{';
    case T_ARRAY: return c == '[';
    default: return true;
    }
}

#define MAX_WS 8

void pu_json_sm_init(pu_json_sm *s, bool object_only) {
    memset(s, 0, sizeof *s);
    s->st = S_VALUE;
    s->object_only = object_only;
    s->prop = -1;
}

static void end_value(pu_json_sm *s) {
    s->st = s->depth == 0 ? S_DONE : S_AFTER;
    s->int_only = false;
    s->in_enum = false;
}

/* a key or enum string byte under the schema */
static bool sch_append(pu_json_sm *s, uint8_t c) {
    if (s->klen >= sizeof s->kbuf - 1)
        return false;
    s->kbuf[s->klen++] = (char)c;
    return s->in_key ? key_prefix_ok(s) : enum_prefix_ok(s, false);
}

static bool push(pu_json_sm *s, uint8_t kind) {
    if (s->depth >= PU_JSON_MAX_DEPTH)
        return false;
    s->stack[s->depth++] = kind;
    return true;
}

static bool begin_value(pu_json_sm *s, uint8_t c) {
    if (s->object_only && s->depth == 0 && c != '{')
        return false;
    switch (c) {
    case '{': s->st = S_OBJ_FIRST; return push(s, 'o');
    case '[': s->st = S_ARR_FIRST; return push(s, 'a');
    case '"':
        s->st = S_STR;
        s->in_key = false;
        return true;
    case '-': s->st = S_NUM_MINUS; return true;
    case '0':
        s->st = S_NUM_ZERO;
        s->aux = 1;
        return true;
    case 't':
    case 'f':
    case 'n':
        s->st = S_LIT;
        s->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        s->aux = 1;
        return true;
    default:
        if (c >= '1' && c <= '9') {
            s->st = S_NUM_INT;
            s->aux = 1;
            return true;
        }
        return false;
    }
}

static bool close_container(pu_json_sm *s, uint8_t c) {
    if (!s->depth || s->stack[s->depth - 1] != (c == '}' ? 'o' : 'a'))
        return false;
    s->depth--;
    end_value(s);
    return true;
}

static bool feed1(pu_json_sm *s, uint8_t c) {
    switch (s->st) {
    case S_VALUE:
    case S_ARR_FIRST:
    case S_OBJ_FIRST:
    case S_OBJ_KEY:
    case S_COLON:
    case S_AFTER:
    case S_DONE:
        if (is_ws(c))
            return ++s->ws <= MAX_WS;
        s->ws = 0;
        break;
    default: break;
    }
    bool sch = schema_here(s);
    switch (s->st) {
    case S_VALUE:
        if (sch && !type_start_ok(s, c))
            return false;
        return begin_value(s, c);
    case S_ARR_FIRST: return c == ']' ? close_container(s, c) : begin_value(s, c);
    case S_OBJ_FIRST:
        if (c == '}') {
            if (sch && !required_done(s))
                return false;
            return close_container(s, c);
        }
        /* fallthrough */
    case S_OBJ_KEY:
        if (c != '"')
            return false;
        s->st = S_STR;
        s->in_key = true;
        s->klen = 0;
        return true;
    case S_COLON:
        if (c != ':')
            return false;
        s->st = S_VALUE;
        return true;
    case S_AFTER:
        if (c == ',') {
            if (sch && !any_unused(s))
                return false;
            s->st = s->stack[s->depth - 1] == 'o' ? S_OBJ_KEY : S_VALUE;
            return true;
        }
        if (c == '}' && sch && !required_done(s))
            return false;
        if (c == '}' || c == ']')
            return close_container(s, c);
        return false;
    case S_DONE: return false;
    case S_STR:
        if (sch && (s->in_key || s->in_enum)) {
            if (c == '\\')
                return false; /* schema names and enum values have no escapes */
            if (c == '"' && s->in_key) {
                int k = key_exact(s);
                if (k < 0)
                    return false;
                s->used |= 1ull << k;
                s->prop = (int8_t)k;
            } else if (c == '"') {
                if (!enum_prefix_ok(s, true))
                    return false;
            } else if (!sch_append(s, c)) {
                return false;
            }
        }
        if (c == '"') {
            if (s->in_key) {
                s->in_key = false;
                s->st = S_COLON;
            } else {
                end_value(s);
            }
            return true;
        }
        if (c == '\\') {
            s->st = S_ESC;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c < 0x80)
            return true;
        /* UTF-8 lead byte: how many continuation bytes and the range of the first */
        s->lo = 0x80;
        s->hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            s->aux = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            s->aux = 2;
            if (c == 0xE0)
                s->lo = 0xA0;
            if (c == 0xED)
                s->hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            s->aux = 3;
            if (c == 0xF0)
                s->lo = 0x90;
            if (c == 0xF4)
                s->hi = 0x8F;
        } else {
            return false;
        }
        s->st = S_UTF8;
        return true;
    case S_UTF8:
        if (c < s->lo || c > s->hi)
            return false;
        if (sch && (s->in_key || s->in_enum) && !sch_append(s, c))
            return false;
        s->lo = 0x80;
        s->hi = 0xBF;
        if (--s->aux == 0)
            s->st = S_STR;
        return true;
    case S_ESC:
        if (strchr("\"\\/bfnrt", c) && c) {
            s->st = S_STR;
            return true;
        }
        if (c == 'u') {
            s->st = S_HEX;
            s->aux = 4;
            s->cp = 0;
            return true;
        }
        return false;
    case S_HEX: {
        if (!is_hex(c))
            return false;
        unsigned v = is_digit(c) ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
        s->cp = (uint16_t)(s->cp << 4 | v);
        if (--s->aux)
            return true;
        bool high = s->cp >= 0xD800 && s->cp <= 0xDBFF, low = s->cp >= 0xDC00 && s->cp <= 0xDFFF;
        if (s->want_low) {
            s->want_low = false;
            if (!low)
                return false;
            s->st = S_STR;
            return true;
        }
        if (low || s->cp == 0)
            return false;
        if (high) {
            s->want_low = true;
            s->st = S_SUR_BS;
            return true;
        }
        s->st = S_STR;
        return true;
    }
    case S_SUR_BS:
        if (c != '\\')
            return false;
        s->st = S_SUR_U;
        return true;
    case S_SUR_U:
        if (c != 'u')
            return false;
        s->st = S_HEX;
        s->aux = 4;
        s->cp = 0;
        return true;
    case S_LIT: {
        const char *l = k_lits[s->lit];
        if ((uint8_t)l[s->aux] != c)
            return false;
        if (!l[++s->aux])
            end_value(s);
        return true;
    }
    case S_NUM_MINUS:
        if (c == '0')
            s->st = S_NUM_ZERO;
        else if (c >= '1' && c <= '9')
            s->st = S_NUM_INT;
        else
            return false;
        s->aux = 1;
        return true;
    case S_NUM_ZERO:
    case S_NUM_INT:
    case S_NUM_FRAC:
        if (is_digit(c) && s->st != S_NUM_ZERO) {
            /* at most PU_JSON_MAX_DIGITS integer / fraction digits: the value
             * stays exact in an int64 / a double for common parsers */
            if (s->aux >= PU_JSON_MAX_DIGITS)
                return false;
            s->aux++;
            return true;
        }
        if ((c == '.' || c == 'e' || c == 'E') && s->int_only)
            return false;
        if (c == '.' && s->st != S_NUM_FRAC) {
            s->st = S_NUM_DOT;
            return true;
        }
        if (c == 'e' || c == 'E') {
            s->st = S_NUM_E;
            return true;
        }
        end_value(s); /* the number ended: read c as what follows */
        return feed1(s, c);
    case S_NUM_DOT:
        if (!is_digit(c))
            return false;
        s->st = S_NUM_FRAC;
        s->aux = 1;
        return true;
    case S_NUM_E:
        if (c == '+' || c == '-') {
            s->st = S_NUM_ESIGN;
            return true;
        }
        /* fallthrough */
    case S_NUM_ESIGN:
        if (!is_digit(c))
            return false;
        s->st = S_NUM_EDIG;
        s->aux = 1;
        return true;
    case S_NUM_EDIG:
        if (is_digit(c)) {
            if (s->aux >= 2) /* exponents up to 99: 15 digits e99 stays finite */
                return false;
            s->aux++;
            return true;
        }
        end_value(s);
        return feed1(s, c);
    default: return false;
    }
}

bool pu_json_sm_feed(pu_json_sm *s, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!feed1(s, b[i]))
            return false;
    return true;
}

bool pu_json_sm_complete(const pu_json_sm *s) {
    if (s->st == S_DONE)
        return true;
    /* a top-level number is complete once it has a digit where it may end */
    return s->depth == 0 && (s->st == S_NUM_ZERO || s->st == S_NUM_INT || s->st == S_NUM_FRAC ||
                             s->st == S_NUM_EDIG);
}

/* ------------------------------------------------------------------------ */
/* the token mask                                                            */

struct pu_json_constraint {
    int64_t n;
    uint32_t *off, *len; /* into bytes */
    uint8_t *special;    /* 1 = special (no bytes), 2 = an end token */
    uint8_t *bytes;
    pu_json_sm sm;
    bool object_only;
    bool borrowed; /* the tables belong to the prototype (pu_json_constraint_clone) */
    const pu_json_schema *schema;
    /* masks of recently seen automaton states (a long string revisits the
     * same state at every token): key = the state's canonical bytes */
    struct mcache {
        uint8_t key[PU_JSON_MAX_DEPTH + 96];
        size_t klen;
        uint64_t *bits; /* (n + 63) / 64 words, bit set = allowed */
        int64_t n_allowed;
        uint64_t last_use;
    } cache[8];
    uint64_t tick;
    int64_t cache_hits, cache_misses;
};

/* the state's bytes that decide the mask (padding and unused bytes excluded) */
static size_t sm_key(const pu_json_sm *s, uint8_t *k) {
    size_t n = 0;
    k[n++] = (uint8_t)s->depth;
    memcpy(k + n, s->stack, (size_t)s->depth);
    n += (size_t)s->depth;
    uint8_t f[] = {s->st,      s->aux,    s->lit, s->lo, s->hi, s->ws, (uint8_t)(s->cp & 0xff),
                   (uint8_t)(s->cp >> 8), s->want_low, s->in_key, s->object_only, (uint8_t)s->prop,
                   s->klen,    s->in_enum, s->int_only};
    memcpy(k + n, f, sizeof f);
    n += sizeof f;
    memcpy(k + n, &s->used, sizeof s->used);
    n += sizeof s->used;
    memcpy(k + n, &s->schema, sizeof s->schema);
    n += sizeof s->schema;
    size_t kl = s->klen < sizeof s->kbuf ? s->klen : sizeof s->kbuf;
    memcpy(k + n, s->kbuf, kl);
    return n + kl;
}

pu_status pu_json_constraint_create(const pu_tok *tok, bool object_only, pu_json_constraint **out) {
    *out = NULL;
    int64_t n = pu_tok_n_vocab(tok);
    pu_json_constraint *c = pu_calloc(1, sizeof *c);
    c->n = n;
    c->object_only = object_only;
    c->off = pu_calloc((size_t)n, sizeof *c->off);
    c->len = pu_calloc((size_t)n, sizeof *c->len);
    c->special = pu_calloc((size_t)n, 1);
    /* an ordinary anchor piece: decode([anchor, id]) minus decode([anchor])
     * gives id's bytes without the decoder's leading-space rule */
    int32_t *aid = NULL;
    int64_t na = 0;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.parse_special = false;
    pu_status st = pu_tok_encode(tok, "a", 1, &eo, &aid, &na);
    if (st != PU_OK || na < 1) {
        pu_free(aid);
        pu_json_constraint_destroy(c);
        return st ? st : pu_err_set(PU_ERR_INVALID, "json constraint: cannot encode \"a\"");
    }
    int32_t anchor = aid[na - 1];
    pu_free(aid);
    pu_str base = {0}, s = {0}, pool = {0};
    pu_tok_decode(tok, &anchor, 1, &base);
    int32_t eos = pu_tok_eos(tok), im_end = pu_tok_special_id(tok, "<|im_end|>");
    bool spm = pu_tok_get_type(tok) == PU_TOK_SPM;
    for (int64_t i = 0; i < n && st == PU_OK; i++) {
        pu_tok_attr a = pu_tok_get_attr(tok, (int32_t)i);
        c->off[i] = (uint32_t)pool.len;
        if (i == eos || i == im_end) {
            c->special[i] = 2;
            continue;
        }
        if (a == PU_TOK_ATTR_BYTE) {
            size_t pl = 0;
            const char *p = pu_tok_piece(tok, (int32_t)i, &pl);
            unsigned v = 0;
            if (pl == 6 && sscanf(p, "<0x%2X>", &v) == 1) {
                uint8_t b = (uint8_t)v;
                pu_str_append(&pool, (const char *)&b, 1);
                c->len[i] = 1;
            } else {
                c->special[i] = 1;
            }
            continue;
        }
        if (a != PU_TOK_ATTR_NORMAL) {
            c->special[i] = 1;
            continue;
        }
        /* registered special tokens (the InternLM2 chat tokens) are not text */
        size_t pl = 0;
        const char *p = pu_tok_piece(tok, (int32_t)i, &pl);
        if (!p)
            pl = 0;
        char pz[64];
        if (p && pl > 2 && pl < sizeof pz && p[0] == '<') {
            memcpy(pz, p, pl);
            pz[pl] = 0;
            if (pu_tok_special_id(tok, pz) == i) {
                c->special[i] = 1;
                continue;
            }
        }
        if (spm) {
            /* SentencePiece decodes a normal piece as its text with U+2581 -> ' ' */
            for (size_t k = 0; k < pl; k++) {
                if (k + 2 < pl && (uint8_t)p[k] == 0xE2 && (uint8_t)p[k + 1] == 0x96 &&
                    (uint8_t)p[k + 2] == 0x81) {
                    pu_str_putc(&pool, ' ');
                    k += 2;
                } else {
                    pu_str_putc(&pool, p[k]);
                }
            }
            c->len[i] = (uint32_t)(pool.len - c->off[i]);
            continue;
        }
        int32_t two[2] = {anchor, (int32_t)i};
        pu_str_clear(&s);
        st = pu_tok_decode(tok, two, 2, &s);
        if (st == PU_OK && s.len >= base.len && !memcmp(s.p, base.p, base.len)) {
            pu_str_append(&pool, s.p + base.len, s.len - base.len);
            c->len[i] = (uint32_t)(s.len - base.len);
        } else {
            c->special[i] = 1;
        }
    }
    pu_str_free(&base);
    pu_str_free(&s);
    c->bytes = (uint8_t *)pu_str_steal(&pool);
    if (st != PU_OK) {
        pu_json_constraint_destroy(c);
        return st;
    }
    pu_json_sm_init(&c->sm, object_only);
    *out = c;
    return PU_OK;
}

void pu_json_constraint_destroy(pu_json_constraint *c) {
    if (!c)
        return;
    for (int i = 0; i < 8; i++)
        pu_free(c->cache[i].bits);
    if (c->borrowed) {
        pu_free(c);
        return;
    }
    pu_free(c->off);
    pu_free(c->len);
    pu_free(c->special);
    pu_free(c->bytes);
    pu_free(c);
}

void pu_json_constraint_reset(pu_json_constraint *c) {
    if (c->schema)
        pu_json_sm_init_schema(&c->sm, c->schema);
    else
        pu_json_sm_init(&c->sm, c->object_only);
}

pu_status pu_json_constraint_create_schema(const pu_tok *tok, const pu_json_schema *schema,
                                           pu_json_constraint **out) {
    PU_TRY(pu_json_constraint_create(tok, true, out));
    (*out)->schema = schema;
    pu_json_constraint_reset(*out);
    return PU_OK;
}

pu_json_constraint *pu_json_constraint_clone(const pu_json_constraint *proto, bool object_only,
                                             const pu_json_schema *schema) {
    pu_json_constraint *c = pu_malloc(sizeof *c);
    *c = *proto;
    memset(c->cache, 0, sizeof c->cache);
    c->tick = 0;
    c->cache_hits = c->cache_misses = 0;
    c->borrowed = true;
    c->object_only = object_only || schema;
    c->schema = schema;
    pu_json_constraint_reset(c);
    return c;
}

/* first_ok: which first bytes the current state accepts (NULL = not computed) */
static bool allowed(const pu_json_constraint *c, int64_t i, bool complete, const bool *first_ok) {
    if (i >= c->n)
        return false;
    if (c->special[i])
        return c->special[i] == 2 && complete;
    if (complete || !c->len[i])
        return false; /* once complete, only the end tokens */
    const uint8_t *b = c->bytes + c->off[i];
    if (first_ok && !first_ok[b[0]])
        return false;
    pu_json_sm t = c->sm;
    return pu_json_sm_feed(&t, b, c->len[i]);
}

int64_t pu_json_constraint_mask(pu_json_constraint *c, float *logits, int64_t n_vocab) {
    uint8_t key[sizeof c->cache[0].key];
    size_t kl = sm_key(&c->sm, key);
    struct mcache *hit = NULL, *victim = &c->cache[0];
    for (int i = 0; i < 8; i++) {
        struct mcache *m = &c->cache[i];
        if (m->bits && m->klen == kl && !memcmp(m->key, key, kl)) {
            hit = m;
            break;
        }
        if (!m->bits || (victim->bits && m->last_use < victim->last_use))
            victim = m;
    }
    size_t nw = (size_t)(c->n + 63) / 64;
    if (!hit) {
        c->cache_misses++;
        hit = victim;
        if (!hit->bits)
            hit->bits = pu_malloc(nw * sizeof(uint64_t));
        memset(hit->bits, 0, nw * sizeof(uint64_t));
        memcpy(hit->key, key, kl);
        hit->klen = kl;
        bool complete = pu_json_sm_complete(&c->sm);
        bool first_ok[256];
        for (int b = 0; b < 256; b++) {
            pu_json_sm t = c->sm;
            uint8_t x = (uint8_t)b;
            first_ok[b] = pu_json_sm_feed(&t, &x, 1);
        }
        int64_t k = 0;
        for (int64_t i = 0; i < c->n; i++)
            if (allowed(c, i, complete, first_ok)) {
                hit->bits[i >> 6] |= 1ull << (i & 63);
                k++;
            }
        hit->n_allowed = k;
    } else {
        c->cache_hits++;
    }
    hit->last_use = ++c->tick;
    if (n_vocab >= c->n) {
        for (int64_t i = 0; i < n_vocab; i++)
            if (i >= c->n || !(hit->bits[i >> 6] >> (i & 63) & 1))
                logits[i] = -INFINITY;
        return hit->n_allowed;
    }
    int64_t k = 0;
    for (int64_t i = 0; i < n_vocab; i++) {
        if (hit->bits[i >> 6] >> (i & 63) & 1)
            k++;
        else
            logits[i] = -INFINITY;
    }
    return k;
}

void pu_json_constraint_cache_stats(const pu_json_constraint *c, int64_t *hits, int64_t *misses) {
    *hits = c->cache_hits;
    *misses = c->cache_misses;
}

int64_t pu_json_constraint_mask_uncached(pu_json_constraint *c, float *logits, int64_t n_vocab) {
    bool complete = pu_json_sm_complete(&c->sm);
    /* most pieces are rejected by their first byte: test the 256 bytes once */
    bool first_ok[256];
    for (int b = 0; b < 256; b++) {
        pu_json_sm t = c->sm;
        uint8_t x = (uint8_t)b;
        first_ok[b] = pu_json_sm_feed(&t, &x, 1);
    }
    int64_t k = 0;
    for (int64_t i = 0; i < n_vocab; i++) {
        if (allowed(c, i, complete, first_ok))
            k++;
        else
            logits[i] = -INFINITY;
    }
    return k;
}

void pu_json_constraint_mask_hook(void *ud, float *logits, int64_t n_vocab) {
    pu_json_constraint_mask(ud, logits, n_vocab);
}

pu_status pu_json_constraint_accept(pu_json_constraint *c, int32_t id) {
    bool complete = pu_json_sm_complete(&c->sm);
    if (id < 0 || !allowed(c, id, complete, NULL))
        return pu_err_set(PU_ERR_INVALID, "json constraint: token %d does not continue the JSON",
                          (int)id);
    if (!c->special[id])
        pu_json_sm_feed(&c->sm, c->bytes + c->off[id], c->len[id]);
    return PU_OK;
}

void pu_json_constraint_allow_end(pu_json_constraint *c, int32_t id) {
    if (id >= 0 && id < c->n)
        c->special[id] = 2;
}

bool pu_json_constraint_complete(const pu_json_constraint *c) {
    return pu_json_sm_complete(&c->sm);
}

const uint8_t *pu_json_constraint_token_bytes(const pu_json_constraint *c, int32_t id,
                                              size_t *len) {
    *len = 0;
    if (id < 0 || id >= c->n || c->special[id])
        return NULL;
    *len = c->len[id];
    return c->bytes + c->off[id];
}
