/*
 * json_constraint.c — JSON mode and JSON-schema-constrained decoding: a
 * byte-level JSON pushdown automaton driven by a compiled schema, and the
 * token mask built on it (see pu_json_constraint.h).
 *
 * The schema compiles into nodes (0 = any value, 1 = any object); the
 * automaton keeps up to PU_JSON_MAX_THREADS parses side by side (anyOf forks
 * one per alternative when a value starts; a byte that one cannot take
 * drops it; equal ones merge). Each parse is the lexer state plus a stack of
 * open containers with their schema node. Numbers have no end marker, so a
 * byte that cannot extend a number ends it and is then read again as what
 * follows the value. The mask copies the live state per vocabulary token
 * and feeds the token's bytes.
 */
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_json_constraint.h"

enum {
    S_VALUE = 1, /* a value of vnode must start */
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
    S_SKEY,   /* a key of a schema object */
    S_LITSET, /* an enum / const value */
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
/* schema nodes                                                              */

typedef enum {
    K_ANY = 0,
    K_ANYOBJ, /* any JSON object */
    K_STRING,
    K_NUMBER,
    K_INTEGER,
    K_BOOL,
    K_NULL,
    K_OBJECT,
    K_ARRAY,
    K_LITS,
    K_ANYOF,
    K_PENDING /* a $ref target being compiled */
} nkind;

typedef struct snode {
    uint8_t kind;
    /* string */
    uint32_t min_len, max_len;
    /* number / integer: value bounds (±INFINITY = none) */
    double lo, hi;
    bool lo_incl, hi_incl;
    /* object */
    int n_props;
    char **names;
    uint8_t *name_len;
    uint16_t *pnode;
    uint64_t required;
    /* array */
    uint16_t items;
    uint32_t min_items, max_items;
    /* enum / const: compact serialisations */
    int n_lits;
    char **lits;
    uint16_t *lit_len;
    /* anyOf */
    int n_alt;
    uint16_t *alt;
} snode;

struct pu_json_schema {
    snode *nodes;
    int n, cap;
    int root;
    char *text; /* the source (for copies) */
};

#define MAX_NODES     4096
#define MAX_LIT_BYTES 1024

static int node_new(pu_json_schema *s, nkind k) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->nodes = pu_realloc(s->nodes, (size_t)s->cap * sizeof *s->nodes);
    }
    snode *n = &s->nodes[s->n];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)k;
    n->max_len = UINT32_MAX;
    n->max_items = UINT32_MAX;
    n->lo = -INFINITY;
    n->hi = INFINITY;
    return s->n++;
}

static void node_free(snode *n) {
    for (int i = 0; i < n->n_props; i++)
        pu_free(n->names[i]);
    pu_free(n->names);
    pu_free(n->name_len);
    pu_free(n->pnode);
    for (int i = 0; i < n->n_lits; i++)
        pu_free(n->lits[i]);
    pu_free(n->lits);
    pu_free(n->lit_len);
    pu_free(n->alt);
}

void pu_json_schema_destroy(pu_json_schema *s) {
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        node_free(&s->nodes[i]);
    pu_free(s->nodes);
    pu_free(s->text);
    pu_free(s);
}

typedef struct cctx {
    pu_json_schema *s;
    json_t *root;
    /* $ref targets compiled so far */
    struct {
        char *ref;
        int node;
    } refs[256];
    int n_refs;
    int depth;
} cctx;

static const char *const k_annot[] = {
    "title",    "description", "default",  "examples",  "format", "$schema",     "$id",
    "$comment", "deprecated",  "readOnly", "writeOnly", "$defs",  "definitions", NULL};
static const char *const k_known[] = {"type",
                                      "enum",
                                      "const",
                                      "properties",
                                      "required",
                                      "additionalProperties",
                                      "items",
                                      "minItems",
                                      "maxItems",
                                      "minLength",
                                      "maxLength",
                                      "minimum",
                                      "maximum",
                                      "exclusiveMinimum",
                                      "exclusiveMaximum",
                                      "anyOf",
                                      "oneOf",
                                      "allOf",
                                      "$ref",
                                      "uniqueItems",
                                      "nullable",
                                      NULL};

static bool in_list(const char *k, const char *const *l) {
    for (int i = 0; l[i]; i++)
        if (!strcmp(k, l[i]))
            return true;
    return false;
}

static int compile(cctx *c, json_t *sch, const char *path, pu_status *st);

/* only annotations beside kw */
static bool alone(json_t *sch, const char *kw, const char *path, pu_status *st) {
    const char *k;
    json_t *v;
    json_object_foreach(sch, k, v) {
        if (strcmp(k, kw) && !in_list(k, k_annot) &&
            !(!strcmp(kw, "anyOf") && !strcmp(k, "type")) &&
            !(!strcmp(kw, "oneOf") && !strcmp(k, "type"))) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED,
                             "%s.%s: unsupported beside \"%s\" (only annotations may be)", path, k,
                             kw);
            return false;
        }
    }
    return true;
}

static bool get_count(json_t *sch, const char *kw, uint32_t *out, const char *path, pu_status *st) {
    json_t *v = json_object_get(sch, kw);
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.%s: expected a non-negative integer", path, kw);
        return false;
    }
    *out = (uint32_t)json_integer_value(v);
    return true;
}

/* the JSON type name of a value */
static const char *jtype(const json_t *v, bool *is_int) {
    *is_int =
        json_is_integer(v) || (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
                               fabs(json_real_value(v)) < 1e15);
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static bool type_allows(json_t *ty, const json_t *v) {
    if (!ty)
        return true;
    bool is_int;
    const char *t = jtype(v, &is_int);
    size_t i;
    json_t *e;
    if (json_is_string(ty)) {
        const char *w = json_string_value(ty);
        return !strcmp(w, t) || (!strcmp(w, "integer") && is_int && !strcmp(t, "number"));
    }
    json_array_foreach(ty, i, e) {
        if (type_allows(e, v))
            return true;
    }
    return false;
}

static int compile_lits(cctx *c, json_t *sch, json_t *vals, const char *path, pu_status *st) {
    const char *k;
    json_t *v;
    json_object_foreach(sch, k, v) {
        if (strcmp(k, "enum") && strcmp(k, "const") && strcmp(k, "type") && !in_list(k, k_annot)) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED,
                             "%s.%s: unsupported beside enum / const (only \"type\" and "
                             "annotations may be)",
                             path, k);
            return -1;
        }
    }
    json_t *ty = json_object_get(sch, "type");
    int id = node_new(c->s, K_LITS);
    size_t i;
    json_t *e;
    json_array_foreach(vals, i, e) {
        if (!type_allows(ty, e))
            continue;
        snode *n = &c->s->nodes[id];
        char *txt = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
        size_t l = txt ? strlen(txt) : 0;
        if (!txt || l > MAX_LIT_BYTES || n->n_lits >= 64) {
            free(txt);
            *st = pu_err_set(PU_ERR_UNSUPPORTED,
                             "%s.enum: at most 64 values of at most %d bytes each", path,
                             MAX_LIT_BYTES);
            return -1;
        }
        bool dup = false;
        for (int j = 0; j < n->n_lits; j++)
            dup = dup || (n->lit_len[j] == l && !memcmp(n->lits[j], txt, l));
        if (!dup) {
            n->lits = pu_realloc(n->lits, (size_t)(n->n_lits + 1) * sizeof *n->lits);
            n->lit_len = pu_realloc(n->lit_len, (size_t)(n->n_lits + 1) * sizeof *n->lit_len);
            n->lits[n->n_lits] = pu_malloc(l + 1);
            memcpy(n->lits[n->n_lits], txt, l + 1);
            n->lit_len[n->n_lits++] = (uint16_t)l;
        }
        free(txt);
    }
    if (!c->s->nodes[id].n_lits) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.enum: no value (of the declared type)", path);
        return -1;
    }
    return id;
}

static int alt_node(cctx *c, const int *alts, int n) {
    int id = node_new(c->s, K_ANYOF);
    snode *nd = &c->s->nodes[id];
    nd->alt = pu_malloc((size_t)n * sizeof *nd->alt);
    for (int i = 0; i < n; i++)
        nd->alt[i] = (uint16_t)alts[i];
    nd->n_alt = n;
    return id;
}

static bool bound(json_t *sch, const char *kw, double *out, const char *path, pu_status *st) {
    json_t *v = json_object_get(sch, kw);
    if (!v)
        return false;
    if (!json_is_number(v)) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.%s: expected a number", path, kw);
        return false;
    }
    *out = json_number_value(v);
    return true;
}

/* one type (t) of a schema */
static int compile_type(cctx *c, json_t *sch, const char *t, const char *path, pu_status *st) {
    char sub[512];
    if (!strcmp(t, "string")) {
        int id = node_new(c->s, K_STRING);
        snode *n = &c->s->nodes[id];
        if (!get_count(sch, "minLength", &n->min_len, path, st) ||
            !get_count(sch, "maxLength", &n->max_len, path, st))
            return -1;
        if (n->min_len > n->max_len) {
            *st = pu_err_set(PU_ERR_FORMAT, "%s: minLength > maxLength", path);
            return -1;
        }
        return id;
    }
    if (!strcmp(t, "number") || !strcmp(t, "integer")) {
        bool integer = !strcmp(t, "integer");
        int id = node_new(c->s, integer ? K_INTEGER : K_NUMBER);
        double lo = -INFINITY, hi = INFINITY, x;
        bool lo_incl = true, hi_incl = true;
        if (bound(sch, "minimum", &x, path, st))
            lo = x;
        if (bound(sch, "maximum", &x, path, st))
            hi = x;
        json_t *em = json_object_get(sch, "exclusiveMinimum"),
               *eM = json_object_get(sch, "exclusiveMaximum");
        if (json_is_boolean(em))
            lo_incl = !json_is_true(em);
        else if (bound(sch, "exclusiveMinimum", &x, path, st) && x >= lo) {
            lo = x;
            lo_incl = false;
        }
        if (json_is_boolean(eM))
            hi_incl = !json_is_true(eM);
        else if (bound(sch, "exclusiveMaximum", &x, path, st) && x <= hi) {
            hi = x;
            hi_incl = false;
        }
        if (*st)
            return -1;
        if (integer) {
            /* closed integer bounds */
            if (isfinite(lo)) {
                double f = ceil(lo);
                lo = (!lo_incl && f == lo) ? f + 1 : f;
            }
            if (isfinite(hi)) {
                double f = floor(hi);
                hi = (!hi_incl && f == hi) ? f - 1 : f;
            }
            lo_incl = hi_incl = true;
        }
        double lim = 999999999999999.0; /* PU_JSON_MAX_DIGITS digits */
        if (lo > hi || (lo == hi && !(lo_incl && hi_incl)) || lo > lim || hi < -lim) {
            *st = pu_err_set(PU_ERR_FORMAT, "%s: minimum/maximum leave no %s of at most %d digits",
                             path, t, PU_JSON_MAX_DIGITS);
            return -1;
        }
        snode *n = &c->s->nodes[id];
        n->lo = lo;
        n->hi = hi;
        n->lo_incl = lo_incl;
        n->hi_incl = hi_incl;
        return id;
    }
    if (!strcmp(t, "boolean"))
        return node_new(c->s, K_BOOL);
    if (!strcmp(t, "null"))
        return node_new(c->s, K_NULL);
    if (!strcmp(t, "array")) {
        uint32_t mn = 0, mx = UINT32_MAX;
        if (!get_count(sch, "minItems", &mn, path, st) ||
            !get_count(sch, "maxItems", &mx, path, st))
            return -1;
        if (mn > mx) {
            *st = pu_err_set(PU_ERR_FORMAT, "%s: minItems > maxItems", path);
            return -1;
        }
        json_t *u = json_object_get(sch, "uniqueItems");
        if (u && !json_is_false(u)) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s.uniqueItems: only false is supported", path);
            return -1;
        }
        json_t *it = json_object_get(sch, "items");
        int items = 0;
        if (it) {
            if (json_is_array(it)) {
                *st = pu_err_set(PU_ERR_UNSUPPORTED,
                                 "%s.items: an array of schemas (tuples) is unsupported", path);
                return -1;
            }
            snprintf(sub, sizeof sub, "%s.items", path);
            items = compile(c, it, sub, st);
            if (items < 0)
                return -1;
        }
        int id = node_new(c->s, K_ARRAY);
        snode *n = &c->s->nodes[id];
        n->items = (uint16_t)items;
        n->min_items = mn;
        n->max_items = mx;
        return id;
    }
    if (!strcmp(t, "object")) {
        json_t *props = json_object_get(sch, "properties"),
               *ap = json_object_get(sch, "additionalProperties"),
               *req = json_object_get(sch, "required");
        if (props && !json_is_object(props)) {
            *st = pu_err_set(PU_ERR_FORMAT, "%s.properties: expected an object", path);
            return -1;
        }
        if (req && !json_is_array(req)) {
            *st = pu_err_set(PU_ERR_FORMAT, "%s.required: expected an array", path);
            return -1;
        }
        if (ap && !json_is_boolean(ap) && !json_is_object(ap)) {
            *st = pu_err_set(PU_ERR_FORMAT,
                             "%s.additionalProperties: expected a boolean or a schema", path);
            return -1;
        }
        if (!props && !json_is_false(ap) && !(req && json_array_size(req)))
            return 1; /* any object */
        int id = node_new(c->s, K_OBJECT);
        int np = props ? (int)json_object_size(props) : 0;
        if (np > 64) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s.properties: at most 64", path);
            return -1;
        }
        char **names = pu_calloc((size_t)(np ? np : 1), sizeof *names);
        uint8_t *nl = pu_calloc((size_t)(np ? np : 1), 1);
        uint16_t *pn = pu_calloc((size_t)(np ? np : 1), sizeof *pn);
        {
            snode *n = &c->s->nodes[id];
            n->names = names;
            n->name_len = nl;
            n->pnode = pn;
        }
        const char *k;
        json_t *v;
        int i = 0;
        json_object_foreach(props, k, v) {
            size_t l = strlen(k);
            bool bad = l > 255;
            for (size_t j = 0; j < l && !bad; j++)
                bad = k[j] == '"' || k[j] == '\\' || (uint8_t)k[j] < 0x20;
            if (bad) {
                *st = pu_err_set(PU_ERR_UNSUPPORTED,
                                 "%s.properties.%s: names of at most 255 bytes without quotes, "
                                 "backslashes or control bytes",
                                 path, k);
                return -1;
            }
            snprintf(sub, sizeof sub, "%s.properties.%s", path, k);
            int pnode = compile(c, v, sub, st);
            if (pnode < 0)
                return -1;
            snode *n = &c->s->nodes[id]; /* nodes may have moved */
            n->names[i] = pu_malloc(l + 1);
            memcpy(n->names[i], k, l + 1);
            n->name_len[i] = (uint8_t)l;
            n->pnode[i] = (uint16_t)pnode;
            n->n_props = ++i;
        }
        size_t j;
        json_t *e;
        json_array_foreach(req, j, e) {
            snode *n = &c->s->nodes[id];
            int found = -1;
            for (int q = 0; q < n->n_props && json_is_string(e); q++)
                if (!strcmp(n->names[q], json_string_value(e)))
                    found = q;
            if (found < 0) {
                *st = pu_err_set(PU_ERR_UNSUPPORTED,
                                 "%s.required[%zu]: not one of the properties (only declared keys "
                                 "are generated)",
                                 path, j);
                return -1;
            }
            n->required |= 1ull << found;
        }
        return id;
    }
    *st = pu_err_set(PU_ERR_FORMAT, "%s.type: unknown \"%s\"", path, t);
    return -1;
}

static int compile_ref(cctx *c, json_t *sch, const char *path, pu_status *st) {
    if (!alone(sch, "$ref", path, st))
        return -1;
    json_t *r = json_object_get(sch, "$ref");
    if (!json_is_string(r)) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.$ref: expected a string", path);
        return -1;
    }
    const char *ref = json_string_value(r);
    for (int i = 0; i < c->n_refs; i++)
        if (!strcmp(c->refs[i].ref, ref))
            return c->refs[i].node;
    json_t *target = NULL;
    if (!strcmp(ref, "#"))
        target = c->root;
    else if (!strncmp(ref, "#/$defs/", 8))
        target = json_object_get(json_object_get(c->root, "$defs"), ref + 8);
    else if (!strncmp(ref, "#/definitions/", 14))
        target = json_object_get(json_object_get(c->root, "definitions"), ref + 14);
    else {
        *st = pu_err_set(PU_ERR_UNSUPPORTED,
                         "%s.$ref: only \"#\", \"#/$defs/NAME\" and \"#/definitions/NAME\" (got "
                         "\"%.100s\")",
                         path, ref);
        return -1;
    }
    if (!target) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.$ref: \"%.100s\" not found", path, ref);
        return -1;
    }
    if (c->n_refs >= 256) {
        *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s.$ref: at most 256 definitions", path);
        return -1;
    }
    /* a placeholder node first, so that a recursive reference finds it */
    int ph = node_new(c->s, K_PENDING);
    size_t rl = strlen(ref);
    c->refs[c->n_refs].ref = pu_malloc(rl + 1);
    memcpy(c->refs[c->n_refs].ref, ref, rl + 1);
    c->refs[c->n_refs++].node = ph;
    char sub[512];
    snprintf(sub, sizeof sub, "json_schema%s", ref + 1);
    for (char *q = sub; *q; q++)
        if (*q == '/')
            *q = '.';
    int id = compile(c, target, sub, st);
    if (id < 0)
        return -1;
    /* the placeholder becomes an anyOf of the one target */
    snode *p = &c->s->nodes[ph];
    p->kind = K_ANYOF;
    p->alt = pu_malloc(sizeof *p->alt);
    p->alt[0] = (uint16_t)id;
    p->n_alt = 1;
    return ph;
}

static int compile_alts(cctx *c, json_t *sch, const char *kw, const char *path, pu_status *st) {
    if (!alone(sch, kw, path, st))
        return -1;
    json_t *a = json_object_get(sch, kw);
    if (!json_is_array(a) || !json_array_size(a)) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.%s: expected a non-empty array", path, kw);
        return -1;
    }
    if (json_object_get(sch, "type")) {
        *st = pu_err_set(PU_ERR_UNSUPPORTED,
                         "%s.type: unsupported beside %s (give the type in each alternative)", path,
                         kw);
        return -1;
    }
    size_t n = json_array_size(a);
    if (n > 256) {
        *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s.%s: at most 256 alternatives", path, kw);
        return -1;
    }
    int alts[256];
    char sub[512];
    for (size_t i = 0; i < n; i++) {
        snprintf(sub, sizeof sub, "%s.%s[%zu]", path, kw, i);
        alts[i] = compile(c, json_array_get(a, i), sub, st);
        if (alts[i] < 0)
            return -1;
    }
    return alt_node(c, alts, (int)n);
}

static int compile(cctx *c, json_t *sch, const char *path, pu_status *st) {
    if (c->s->n > MAX_NODES || c->depth > 64) {
        *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s: schema too large or too deep", path);
        return -1;
    }
    if (json_is_true(sch))
        return 0;
    if (!json_is_object(sch)) {
        *st = pu_err_set(json_is_false(sch) ? PU_ERR_UNSUPPORTED : PU_ERR_FORMAT,
                         "%s: expected a schema object", path);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(sch, k, v) {
        if (!in_list(k, k_known) && !in_list(k, k_annot)) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s.%s: unsupported keyword", path, k);
            return -1;
        }
    }
    c->depth++;
    int id = -1;
    json_t *ty = json_object_get(sch, "type"), *nl = json_object_get(sch, "nullable");
    if (nl && !json_is_boolean(nl)) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.nullable: expected a boolean", path);
        goto out;
    }
    if (json_is_true(nl)) {
        /* OpenAPI's nullable: the schema or null */
        json_t *cp = json_deep_copy(sch);
        json_object_del(cp, "nullable");
        int a[2] = {compile(c, cp, path, st), 0};
        json_decref(cp);
        if (a[0] < 0)
            goto out;
        a[1] = node_new(c->s, K_NULL);
        id = alt_node(c, a, 2);
        goto out;
    }
    if (json_object_get(sch, "$ref")) {
        id = compile_ref(c, sch, path, st);
        goto out;
    }
    if (json_object_get(sch, "anyOf") || json_object_get(sch, "oneOf")) {
        if (json_object_get(sch, "anyOf") && json_object_get(sch, "oneOf")) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s: anyOf and oneOf together", path);
            goto out;
        }
        id = compile_alts(c, sch, json_object_get(sch, "anyOf") ? "anyOf" : "oneOf", path, st);
        goto out;
    }
    if (json_object_get(sch, "allOf")) {
        json_t *a = json_object_get(sch, "allOf");
        if (!alone(sch, "allOf", path, st))
            goto out;
        if (!json_is_array(a) || json_array_size(a) != 1) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s.allOf: only an allOf of one schema", path);
            goto out;
        }
        char sub[512];
        snprintf(sub, sizeof sub, "%s.allOf[0]", path);
        id = compile(c, json_array_get(a, 0), sub, st);
        goto out;
    }
    json_t *en = json_object_get(sch, "enum"), *cn = json_object_get(sch, "const");
    if (en || cn) {
        if (en && cn) {
            *st = pu_err_set(PU_ERR_UNSUPPORTED, "%s: enum and const together", path);
            goto out;
        }
        if (en && !json_is_array(en)) {
            *st = pu_err_set(PU_ERR_FORMAT, "%s.enum: expected an array", path);
            goto out;
        }
        json_t *vals = en ? json_incref(en) : json_pack("[O]", cn);
        id = compile_lits(c, sch, vals, path, st);
        json_decref(vals);
        goto out;
    }
    if (ty && !json_is_string(ty) && !json_is_array(ty)) {
        *st = pu_err_set(PU_ERR_FORMAT, "%s.type: expected a name or a list of names", path);
        goto out;
    }
    if (json_is_array(ty)) {
        size_t n = json_array_size(ty);
        if (!n || n > 7) {
            *st = pu_err_set(PU_ERR_FORMAT, "%s.type: 1 to 7 type names", path);
            goto out;
        }
        int alts[7];
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(ty, i);
            if (!json_is_string(e)) {
                *st = pu_err_set(PU_ERR_FORMAT, "%s.type[%zu]: expected a name", path, i);
                goto out;
            }
            alts[i] = compile_type(c, sch, json_string_value(e), path, st);
            if (alts[i] < 0)
                goto out;
        }
        id = n == 1 ? alts[0] : alt_node(c, alts, (int)n);
        goto out;
    }
    const char *t = ty ? json_string_value(ty) : NULL;
    if (!t) {
        /* no type: what the keywords imply, else any value */
        if (json_object_get(sch, "properties") || json_object_get(sch, "required") ||
            json_is_false(json_object_get(sch, "additionalProperties")))
            t = "object";
        else if (json_object_get(sch, "items") || json_object_get(sch, "minItems") ||
                 json_object_get(sch, "maxItems"))
            t = "array";
        else if (json_object_get(sch, "minLength") || json_object_get(sch, "maxLength"))
            t = "string";
        else if (json_object_get(sch, "minimum") || json_object_get(sch, "maximum") ||
                 json_object_get(sch, "exclusiveMinimum") ||
                 json_object_get(sch, "exclusiveMaximum"))
            t = "number";
    }
    id = t ? compile_type(c, sch, t, path, st) : 0;
out:
    c->depth--;
    return *st ? -1 : id;
}

static pu_json_schema *schema_new(void) {
    pu_json_schema *s = pu_calloc(1, sizeof *s);
    node_new(s, K_ANY);
    node_new(s, K_ANYOBJ);
    return s;
}

pu_status pu_json_schema_from_json(const void *jschema, const char *what, pu_json_schema **out) {
    *out = NULL;
    json_t *root = (json_t *)jschema;
    pu_json_schema *s = schema_new();
    cctx c = {.s = s, .root = root};
    pu_status st = PU_OK;
    int r = compile(&c, root, what ? what : "json_schema", &st);
    for (int i = 0; i < c.n_refs; i++)
        pu_free(c.refs[i].ref);
    if (st || r < 0) {
        pu_json_schema_destroy(s);
        return st ? st : pu_err_set(PU_ERR_FORMAT, "json_schema: cannot compile");
    }
    s->root = r;
    char *txt = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
    if (txt) {
        size_t l = strlen(txt);
        s->text = pu_malloc(l + 1);
        memcpy(s->text, txt, l + 1);
        free(txt);
    }
    *out = s;
    return PU_OK;
}

pu_status pu_json_schema_parse(const char *json, size_t len, pu_json_schema **out) {
    *out = NULL;
    json_t *root = NULL;
    PU_TRY(pu_json_loadb(json, len, "json_schema", &root));
    json_t *sc = root;
    /* OpenAI's response_format.json_schema wrapper {"name", "schema", "strict"} */
    if (json_is_object(root) && json_is_object(json_object_get(root, "schema")) &&
        !json_object_get(root, "type") && !json_object_get(root, "properties"))
        sc = json_object_get(root, "schema");
    pu_status st = pu_json_schema_from_json(sc, "json_schema", out);
    json_decref(root);
    return st;
}

pu_json_schema *pu_json_schema_copy(const pu_json_schema *s) {
    if (!s)
        return NULL;
    /* recompile the schema itself (no wrapper detection: text is the inner schema) */
    json_t *root = s->text ? json_loads(s->text, JSON_DECODE_ANY, NULL) : NULL;
    pu_json_schema *c = NULL;
    if (!root || pu_json_schema_from_json(root, "json_schema", &c) != PU_OK)
        c = NULL;
    json_decref(root);
    return c;
}

/* built-in schemas: any value, any object */
static const snode k_builtin_nodes[2] = {
    {.kind = K_ANY, .max_len = UINT32_MAX, .max_items = UINT32_MAX},
    {.kind = K_ANYOBJ, .max_len = UINT32_MAX, .max_items = UINT32_MAX}};
static const pu_json_schema k_any = {.nodes = (snode *)k_builtin_nodes, .n = 2, .root = 0};
static const pu_json_schema k_anyobj = {.nodes = (snode *)k_builtin_nodes, .n = 2, .root = 1};

/* ------------------------------------------------------------------------ */
/* the automaton                                                             */

#define MAX_WS  8
#define TH_HEAD offsetof(pu_json_thread, fr)

static size_t th_size(const pu_json_thread *t) {
    return TH_HEAD + (size_t)t->depth * sizeof(pu_json_frame);
}

void pu_json_sm_copy(pu_json_sm *dst, const pu_json_sm *src) {
    dst->schema = src->schema;
    dst->n = src->n;
    for (int i = 0; i < src->n; i++) {
        const pu_json_thread *t = &src->t[i];
        memcpy(&dst->t[i], t, TH_HEAD);
        if (t->depth)
            memcpy(dst->t[i].fr, t->fr, (size_t)t->depth * sizeof(pu_json_frame));
    }
}

static const snode *nd(const pu_json_sm *s, int id) {
    return &s->schema->nodes[id];
}

/* clear the per-value scratch so that equal states compare equal */
static void scratch_clear(pu_json_thread *t) {
    t->kcand = t->lcand = 0;
    t->slen = 0;
    t->cp = 0;
    t->lpos = 0;
    t->aux = t->lit = t->lo = t->hi = 0;
    t->want_low = t->in_key = 0;
    t->kpos = 0;
    t->nlen = 0;
    memset(t->nbuf, 0, sizeof t->nbuf);
}

static void end_value(pu_json_thread *t) {
    scratch_clear(t);
    t->vnode = 0;
    t->st = t->depth == 0 ? S_DONE : S_AFTER;
}

static bool push(pu_json_thread *t, uint8_t kind, int node) {
    if (t->depth >= PU_JSON_MAX_DEPTH)
        return false;
    pu_json_frame *f = &t->fr[t->depth++];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->node = (uint16_t)node;
    return true;
}

/* the node of the items / members of the top frame */
static int items_node(const pu_json_sm *s, const pu_json_frame *f) {
    return f->node && nd(s, f->node)->kind == K_ARRAY ? nd(s, f->node)->items : 0;
}

/* --- bounded numbers ------------------------------------------------------ */

/* does the interval of values (a..b, ends closed per flag) meet the node's range */
static bool iv_meets(const snode *n, double a, bool a_cl, double b, bool b_cl) {
    /* entirely below: b < lo, or b == lo and one end open */
    if (b < n->lo || (b == n->lo && !(b_cl && n->lo_incl)))
        return false;
    if (a > n->hi || (a == n->hi && !(a_cl && n->hi_incl)))
        return false;
    return true;
}

/* magnitude interval [a, b) (or [a, b] when closed) with the sign applied */
static bool mag_meets(const snode *n, bool neg, double a, double b, bool b_cl) {
    return neg ? iv_meets(n, -b, b_cl, -a, true) : iv_meets(n, a, true, b, b_cl);
}

static bool in_range(const snode *n, double x) {
    return iv_meets(n, x, true, x, true);
}

/* can the number text so far still end inside the range */
static bool num_feasible(const snode *n, const pu_json_thread *t) {
    if (n->kind != K_NUMBER && n->kind != K_INTEGER)
        return true;
    if (!isfinite(n->lo) && !isfinite(n->hi))
        return true;
    bool integer = n->kind == K_INTEGER;
    const char *b = t->nbuf;
    int len = t->nlen, i = 0;
    bool neg = len && b[0] == '-';
    i = neg;
    double v = 0;
    int ni = 0;
    while (i < len && is_digit((uint8_t)b[i])) {
        v = v * 10 + (b[i] - '0');
        ni++;
        i++;
    }
    const double lim = 1e15;
    if (ni == 0) /* "-" or nothing: any magnitude */
        return mag_meets(n, neg, 0, integer ? lim - 1 : lim, integer);
    if (i < len && b[i] == '.') {
        int nf = len - i - 1;
        double x = strtod(b, NULL);
        double ax = fabs(x), w = pow(10.0, -nf);
        if (nf == 0)
            return mag_meets(n, neg, v, v + 1, false);
        if (nf >= PU_JSON_MAX_DIGITS)
            return in_range(n, x);
        return mag_meets(n, neg, ax, ax + w, false);
    }
    /* integer digits v (ni of them): v itself, more digits, a fraction */
    int more = v == 0 ? 0 : PU_JSON_MAX_DIGITS - ni;
    double p = 1;
    for (int k = 0; k <= more; k++, p *= 10) {
        if (integer ? mag_meets(n, neg, v * p, (v + 1) * p - 1, true)
                    : mag_meets(n, neg, v * p, (v + 1) * p, false))
            return true;
    }
    return false;
}

static bool num_end_ok(const pu_json_sm *s, const pu_json_thread *t) {
    const snode *n = nd(s, t->vnode);
    if (n->kind != K_NUMBER && n->kind != K_INTEGER)
        return true;
    if (!isfinite(n->lo) && !isfinite(n->hi))
        return true;
    return in_range(n, strtod(t->nbuf, NULL));
}

static bool bounded(const pu_json_sm *s, const pu_json_thread *t);

static bool num_put(const pu_json_sm *s, pu_json_thread *t, uint8_t c) {
    /* only a bounded number keeps its text: otherwise the state (and the mask
     * cache key) must not change with every digit */
    if (!bounded(s, t))
        return true;
    if (t->nlen >= sizeof t->nbuf - 1)
        return false;
    t->nbuf[t->nlen++] = (char)c;
    return num_feasible(nd(s, t->vnode), t);
}

static bool bounded(const pu_json_sm *s, const pu_json_thread *t) {
    const snode *n = nd(s, t->vnode);
    return (n->kind == K_NUMBER || n->kind == K_INTEGER) && (isfinite(n->lo) || isfinite(n->hi));
}

/* --- strings --------------------------------------------------------------- */

static const snode *str_node(const pu_json_sm *s, const pu_json_thread *t) {
    const snode *n = nd(s, t->vnode);
    return !t->in_key && n->kind == K_STRING ? n : NULL;
}

/* a new character begins (counted only under a length limit, so that a free
 * string stays one state and its mask is cached) */
static bool str_char(const pu_json_sm *s, pu_json_thread *t) {
    const snode *n = str_node(s, t);
    if (!n || (n->min_len == 0 && n->max_len == UINT32_MAX))
        return true;
    if (t->slen >= n->max_len)
        return false;
    t->slen++;
    return true;
}

/* --- value start ----------------------------------------------------------- */

static bool feed_t(const pu_json_sm *s, pu_json_thread *t, uint8_t c);

static bool begin_generic(const pu_json_sm *s, pu_json_thread *t, uint8_t c, int obj_node,
                          int arr_node) {
    switch (c) {
    case '{':
        t->st = S_OBJ_FIRST;
        t->vnode = 0;
        return push(t, 'o', obj_node);
    case '[':
        t->st = S_ARR_FIRST;
        t->vnode = (uint16_t)(arr_node ? nd(s, arr_node)->items : 0);
        return push(t, 'a', arr_node);
    case '"':
        t->st = S_STR;
        t->in_key = 0;
        t->slen = 0;
        return true;
    case '-': t->st = S_NUM_MINUS; return num_put(s, t, c);
    case '0':
        t->st = S_NUM_ZERO;
        t->aux = 1;
        return num_put(s, t, c);
    case 't':
    case 'f':
    case 'n':
        t->st = S_LIT;
        t->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        t->aux = 1;
        return true;
    default:
        if (c >= '1' && c <= '9') {
            t->st = S_NUM_INT;
            t->aux = 1;
            return num_put(s, t, c);
        }
        return false;
    }
}

static bool begin_value(const pu_json_sm *s, pu_json_thread *t, uint8_t c) {
    const snode *n = nd(s, t->vnode);
    switch (n->kind) {
    case K_ANY: return begin_generic(s, t, c, 0, 0);
    case K_ANYOBJ: return c == '{' && begin_generic(s, t, c, 0, 0);
    case K_STRING: return c == '"' && begin_generic(s, t, c, 0, 0);
    case K_NUMBER:
    case K_INTEGER: return (c == '-' || is_digit(c)) && begin_generic(s, t, c, 0, 0);
    case K_BOOL: return (c == 't' || c == 'f') && begin_generic(s, t, c, 0, 0);
    case K_NULL: return c == 'n' && begin_generic(s, t, c, 0, 0);
    case K_OBJECT: return c == '{' && begin_generic(s, t, c, t->vnode, 0);
    case K_ARRAY:
        if (c != '[' || !begin_generic(s, t, c, 0, t->vnode))
            return false;
        return true;
    case K_LITS:
        t->st = S_LITSET;
        t->lpos = 0;
        t->lcand = n->n_lits >= 64 ? ~0ull : (1ull << n->n_lits) - 1;
        return feed_t(s, t, c);
    default: return false;
    }
}

static bool close_container(pu_json_thread *t, uint8_t c) {
    if (!t->depth || t->fr[t->depth - 1].kind != (c == '}' ? 'o' : 'a'))
        return false;
    t->depth--;
    end_value(t);
    return true;
}

static bool obj_close_ok(const pu_json_sm *s, const pu_json_frame *f) {
    if (!f->node)
        return true;
    uint64_t rq = nd(s, f->node)->required;
    return (f->used & rq) == rq;
}

static bool key_begin(const pu_json_sm *s, pu_json_thread *t) {
    pu_json_frame *f = &t->fr[t->depth - 1];
    if (!f->node) {
        t->st = S_STR;
        t->in_key = 1;
        return true;
    }
    const snode *n = nd(s, f->node);
    uint64_t all = n->n_props >= 64 ? ~0ull : (1ull << n->n_props) - 1;
    t->kcand = all & ~f->used;
    t->kpos = 0;
    t->st = S_SKEY;
    return t->kcand != 0;
}

static bool feed_t(const pu_json_sm *s, pu_json_thread *t, uint8_t c) {
    switch (t->st) {
    case S_VALUE:
    case S_ARR_FIRST:
    case S_OBJ_FIRST:
    case S_OBJ_KEY:
    case S_COLON:
    case S_AFTER:
    case S_DONE:
        if (is_ws(c))
            return ++t->ws <= MAX_WS;
        t->ws = 0;
        break;
    default: break;
    }
    pu_json_frame *f = t->depth ? &t->fr[t->depth - 1] : NULL;
    switch (t->st) {
    case S_VALUE: return begin_value(s, t, c);
    case S_ARR_FIRST:
        if (c == ']')
            return (!f->node || nd(s, f->node)->min_items == 0) && close_container(t, c);
        if (f->node && nd(s, f->node)->max_items == 0)
            return false;
        f->count = 1;
        return begin_value(s, t, c);
    case S_OBJ_FIRST:
        if (c == '}')
            return obj_close_ok(s, f) && close_container(t, c);
        return c == '"' && key_begin(s, t);
    case S_OBJ_KEY: return c == '"' && key_begin(s, t);
    case S_SKEY: {
        const snode *n = nd(s, f->node);
        if (c == '"') {
            for (int i = 0; i < n->n_props; i++)
                if ((t->kcand >> i & 1) && n->name_len[i] == t->kpos) {
                    f->used |= 1ull << i;
                    f->prop = (uint8_t)i;
                    t->kcand = 0;
                    t->kpos = 0;
                    t->st = S_COLON;
                    return true;
                }
            return false;
        }
        uint64_t nc = 0;
        for (int i = 0; i < n->n_props; i++)
            if ((t->kcand >> i & 1) && n->name_len[i] > t->kpos &&
                (uint8_t)n->names[i][t->kpos] == c)
                nc |= 1ull << i;
        t->kcand = nc;
        t->kpos++;
        return nc != 0;
    }
    case S_COLON:
        if (c != ':')
            return false;
        t->st = S_VALUE;
        t->vnode = f->node ? nd(s, f->node)->pnode[f->prop] : 0;
        return true;
    case S_AFTER:
        if (f->kind == 'o') {
            if (c == ',') {
                if (f->node) {
                    const snode *n = nd(s, f->node);
                    uint64_t all = n->n_props >= 64 ? ~0ull : (1ull << n->n_props) - 1;
                    if ((f->used & all) == all)
                        return false;
                }
                t->st = S_OBJ_KEY;
                return true;
            }
            return c == '}' && obj_close_ok(s, f) && close_container(t, c);
        }
        if (c == ',') {
            if (f->node && f->count >= nd(s, f->node)->max_items)
                return false;
            f->count++;
            t->st = S_VALUE;
            t->vnode = (uint16_t)items_node(s, f);
            return true;
        }
        return c == ']' && (!f->node || f->count >= nd(s, f->node)->min_items) &&
               close_container(t, c);
    case S_DONE: return false;
    case S_LITSET: {
        const snode *n = nd(s, t->vnode);
        uint64_t nc = 0;
        bool ends = false;
        for (int i = 0; i < n->n_lits; i++) {
            if (!(t->lcand >> i & 1))
                continue;
            if (n->lit_len[i] > t->lpos && (uint8_t)n->lits[i][t->lpos] == c)
                nc |= 1ull << i;
            if (n->lit_len[i] == t->lpos)
                ends = true;
        }
        if (nc) {
            t->lcand = nc;
            t->lpos++;
            return true;
        }
        if (!ends)
            return false;
        end_value(t); /* a value ended: read c as what follows */
        return feed_t(s, t, c);
    }
    case S_STR:
        if (c == '"') {
            if (t->in_key) {
                t->in_key = 0;
                t->st = S_COLON;
                t->slen = 0;
                return true;
            }
            const snode *n = str_node(s, t);
            if (n && t->slen < n->min_len)
                return false;
            end_value(t);
            return true;
        }
        if (c == '\\') {
            /* an escape is one character (a surrogate pair too): counted here */
            t->st = S_ESC;
            return str_char(s, t);
        }
        if (c < 0x20)
            return false;
        if (c < 0x80)
            return str_char(s, t);
        /* UTF-8 lead byte: how many continuation bytes and the range of the first */
        t->lo = 0x80;
        t->hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            t->aux = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            t->aux = 2;
            if (c == 0xE0)
                t->lo = 0xA0;
            if (c == 0xED)
                t->hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            t->aux = 3;
            if (c == 0xF0)
                t->lo = 0x90;
            if (c == 0xF4)
                t->hi = 0x8F;
        } else {
            return false;
        }
        t->st = S_UTF8;
        return str_char(s, t);
    case S_UTF8:
        if (c < t->lo || c > t->hi)
            return false;
        t->lo = 0x80;
        t->hi = 0xBF;
        if (--t->aux == 0) {
            t->st = S_STR;
            t->lo = t->hi = 0;
        }
        return true;
    case S_ESC:
        if (strchr("\"\\/bfnrt", c) && c) {
            t->st = S_STR;
            return true;
        }
        if (c == 'u') {
            t->st = S_HEX;
            t->aux = 4;
            t->cp = 0;
            return true;
        }
        return false;
    case S_HEX: {
        if (!is_hex(c))
            return false;
        unsigned v = is_digit(c) ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
        t->cp = (uint16_t)(t->cp << 4 | v);
        if (--t->aux)
            return true;
        bool high = t->cp >= 0xD800 && t->cp <= 0xDBFF, low = t->cp >= 0xDC00 && t->cp <= 0xDFFF;
        if (t->want_low) {
            t->want_low = 0;
            t->cp = 0;
            if (!low)
                return false;
            t->st = S_STR;
            return true;
        }
        if (low || t->cp == 0)
            return false;
        t->cp = 0;
        if (high) {
            t->want_low = 1;
            t->st = S_SUR_BS;
            return true;
        }
        t->st = S_STR;
        return true;
    }
    case S_SUR_BS:
        if (c != '\\')
            return false;
        t->st = S_SUR_U;
        return true;
    case S_SUR_U:
        if (c != 'u')
            return false;
        t->st = S_HEX;
        t->aux = 4;
        t->cp = 0;
        return true;
    case S_LIT: {
        const char *l = k_lits[t->lit];
        if ((uint8_t)l[t->aux] != c)
            return false;
        if (!l[++t->aux])
            end_value(t);
        return true;
    }
    case S_NUM_MINUS:
        if (c == '0')
            t->st = S_NUM_ZERO;
        else if (c >= '1' && c <= '9')
            t->st = S_NUM_INT;
        else
            return false;
        t->aux = 1;
        return num_put(s, t, c);
    case S_NUM_ZERO:
    case S_NUM_INT:
    case S_NUM_FRAC: {
        bool integer = nd(s, t->vnode)->kind == K_INTEGER;
        if (is_digit(c) && t->st != S_NUM_ZERO) {
            /* at most PU_JSON_MAX_DIGITS integer / fraction digits: the value
             * stays exact in an int64 / a double for common parsers */
            if (t->aux >= PU_JSON_MAX_DIGITS)
                return false;
            t->aux++;
            return num_put(s, t, c);
        }
        if ((c == '.' || c == 'e' || c == 'E') && integer)
            return false;
        if (c == '.' && t->st != S_NUM_FRAC) {
            t->st = S_NUM_DOT;
            return num_put(s, t, c);
        }
        if (c == 'e' || c == 'E') {
            if (bounded(s, t))
                return false;
            t->st = S_NUM_E;
            return true;
        }
        if (!num_end_ok(s, t))
            return false;
        end_value(t); /* the number ended: read c as what follows */
        return feed_t(s, t, c);
    }
    case S_NUM_DOT:
        if (!is_digit(c))
            return false;
        t->st = S_NUM_FRAC;
        t->aux = 1;
        return num_put(s, t, c);
    case S_NUM_E:
        if (c == '+' || c == '-') {
            t->st = S_NUM_ESIGN;
            return true;
        }
        /* fallthrough */
    case S_NUM_ESIGN:
        if (!is_digit(c))
            return false;
        t->st = S_NUM_EDIG;
        t->aux = 1;
        return true;
    case S_NUM_EDIG:
        if (is_digit(c)) {
            if (t->aux >= 2) /* exponents up to 99: 15 digits e99 stays finite */
                return false;
            t->aux++;
            return true;
        }
        end_value(t);
        return feed_t(s, t, c);
    default: return false;
    }
}

static bool th_equal(const pu_json_thread *a, const pu_json_thread *b) {
    return a->depth == b->depth && !memcmp(a, b, th_size(a));
}

/* a thread waiting for a value of an anyOf node becomes one per alternative */
static void expand(pu_json_sm *s) {
    for (int i = 0; i < s->n; i++) {
        pu_json_thread *t = &s->t[i];
        int guard = 0;
        while ((t->st == S_VALUE || t->st == S_ARR_FIRST) && nd(s, t->vnode)->kind == K_ANYOF &&
               guard++ < 64) {
            const snode *n = nd(s, t->vnode);
            for (int a = 1; a < n->n_alt && s->n < PU_JSON_MAX_THREADS; a++) {
                pu_json_thread *u = &s->t[s->n++];
                memcpy(u, t, th_size(t));
                u->vnode = n->alt[a];
            }
            t->vnode = n->alt[0];
        }
    }
}

static void dedup(pu_json_sm *s) {
    if (s->n < 2)
        return;
    int w = 0;
    for (int i = 0; i < s->n; i++) {
        bool dup = false;
        for (int j = 0; j < w && !dup; j++)
            dup = th_equal(&s->t[j], &s->t[i]);
        if (!dup) {
            if (w != i)
                memcpy(&s->t[w], &s->t[i], th_size(&s->t[i]));
            w++;
        }
    }
    s->n = w;
}

static void sm_init_node(pu_json_sm *s, const pu_json_schema *sc) {
    s->schema = sc;
    s->n = 1;
    pu_json_thread *t = &s->t[0];
    memset(t, 0, TH_HEAD);
    t->st = S_VALUE;
    t->vnode = (uint16_t)sc->root;
    expand(s);
}

void pu_json_sm_init(pu_json_sm *s, bool object_only) {
    sm_init_node(s, object_only ? &k_anyobj : &k_any);
}

void pu_json_sm_init_schema(pu_json_sm *s, const pu_json_schema *schema) {
    sm_init_node(s, schema ? schema : &k_anyobj);
}

static bool needs_expand(const pu_json_sm *s, const pu_json_thread *t) {
    return (t->st == S_VALUE || t->st == S_ARR_FIRST) && nd(s, t->vnode)->kind == K_ANYOF;
}

static bool feed1(pu_json_sm *s, uint8_t c) {
    if (s->n == 1) { /* the common case: one parse, nothing to merge */
        pu_json_thread *t = &s->t[0];
        if (!feed_t(s, t, c)) {
            s->n = 0;
            return false;
        }
        if (needs_expand(s, t)) {
            expand(s);
            dedup(s);
        }
        return true;
    }
    int w = 0;
    for (int i = 0; i < s->n; i++) {
        pu_json_thread *t = &s->t[i];
        if (!feed_t(s, t, c))
            continue;
        if (w != i)
            memcpy(&s->t[w], t, th_size(t));
        w++;
    }
    s->n = w;
    if (!w)
        return false;
    expand(s);
    dedup(s);
    return true;
}

bool pu_json_sm_feed(pu_json_sm *s, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!feed1(s, b[i]))
            return false;
    return true;
}

static bool th_complete(const pu_json_sm *s, const pu_json_thread *t) {
    if (t->st == S_DONE)
        return true;
    if (t->depth)
        return false;
    /* a top-level number / enum value is complete once it may end */
    if (t->st == S_NUM_ZERO || t->st == S_NUM_INT || t->st == S_NUM_FRAC || t->st == S_NUM_EDIG)
        return num_end_ok(s, t);
    if (t->st == S_LITSET) {
        const snode *n = nd(s, t->vnode);
        for (int i = 0; i < n->n_lits; i++)
            if ((t->lcand >> i & 1) && n->lit_len[i] == t->lpos)
                return true;
    }
    return false;
}

bool pu_json_sm_complete(const pu_json_sm *s) {
    for (int i = 0; i < s->n; i++)
        if (th_complete(s, &s->t[i]))
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* the token mask                                                            */

struct pu_json_constraint {
    int64_t n;
    uint32_t *off, *len; /* into bytes */
    uint8_t *special;    /* 1 = special (no bytes), 2 = an end token */
    uint8_t *plain;      /* 1 = bytes are whole characters of a string without '"' / '\\' */
    uint8_t *bytes;
    pu_json_sm sm;
    pu_json_sm *tmp; /* scratch copy for the mask */
    bool object_only;
    bool borrowed; /* the tables belong to the prototype (pu_json_constraint_clone) */
    bool fast_str; /* the state is inside a string without limits: plain tokens pass */
    const pu_json_schema *schema;
    /* masks of recently seen automaton states (a long string revisits the
     * same state at every token): key = the state's canonical bytes */
    struct mcache {
        uint8_t *key;
        size_t klen, kcap;
        uint64_t *bits; /* (n + 63) / 64 words, bit set = allowed */
        int64_t n_allowed;
        uint64_t last_use;
    } cache[8];
    uint64_t tick;
    int64_t cache_hits, cache_misses;
    uint8_t *keybuf;
    size_t keycap;
};

/* the state's bytes that decide the mask (the live threads) into *buf */
static size_t sm_key(const pu_json_sm *s, uint8_t **buf, size_t *cap) {
    size_t need = sizeof s->schema + sizeof s->n;
    for (int i = 0; i < s->n; i++)
        need += TH_HEAD + (size_t)s->t[i].depth * sizeof(pu_json_frame);
    if (need > *cap) {
        *buf = pu_realloc(*buf, need);
        *cap = need;
    }
    uint8_t *k = *buf;
    size_t n = 0;
    memcpy(k + n, &s->schema, sizeof s->schema);
    n += sizeof s->schema;
    memcpy(k + n, &s->n, sizeof s->n);
    n += sizeof s->n;
    for (int i = 0; i < s->n; i++) {
        size_t l = TH_HEAD + (size_t)s->t[i].depth * sizeof(pu_json_frame);
        memcpy(k + n, &s->t[i], l);
        n += l;
    }
    return n;
}

/* whole UTF-8 characters, none of them a quote, a backslash or a control byte */
static bool plain_bytes(const uint8_t *b, size_t n) {
    if (!n)
        return false;
    for (size_t i = 0; i < n;) {
        uint8_t c = b[i];
        if (c < 0x20 || c == '"' || c == '\\')
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        int k = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
        if (!k || i + (size_t)k >= n)
            return false;
        uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80,
                hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        if (b[i + 1] < lo || b[i + 1] > hi)
            return false;
        for (int j = 2; j <= k; j++)
            if (b[i + (size_t)j] < 0x80 || b[i + (size_t)j] > 0xBF)
                return false;
        i += (size_t)k + 1;
    }
    return true;
}

/* one parse inside a string whose characters are not counted */
static bool free_string_state(const pu_json_sm *s) {
    if (s->n != 1)
        return false;
    const pu_json_thread *t = &s->t[0];
    if (t->st != S_STR)
        return false;
    const snode *n = str_node(s, t);
    return !n || (n->min_len == 0 && n->max_len == UINT32_MAX);
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
    c->plain = pu_calloc((size_t)n, 1);
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
    for (int64_t i = 0; i < n; i++)
        c->plain[i] = !c->special[i] && plain_bytes(c->bytes + c->off[i], c->len[i]);
    c->tmp = pu_malloc(sizeof *c->tmp);
    pu_json_sm_init(&c->sm, object_only);
    *out = c;
    return PU_OK;
}

void pu_json_constraint_destroy(pu_json_constraint *c) {
    if (!c)
        return;
    for (int i = 0; i < 8; i++) {
        pu_free(c->cache[i].bits);
        pu_free(c->cache[i].key);
    }
    pu_free(c->tmp);
    pu_free(c->keybuf);
    if (c->borrowed) {
        pu_free(c);
        return;
    }
    pu_free(c->off);
    pu_free(c->len);
    pu_free(c->special);
    pu_free(c->plain);
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
    memcpy(c, proto, offsetof(pu_json_constraint, sm));
    c->object_only = proto->object_only;
    c->borrowed = true;
    c->tmp = pu_malloc(sizeof *c->tmp);
    c->keybuf = NULL;
    c->keycap = 0;
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
static bool allowed(pu_json_constraint *c, int64_t i, bool complete, const bool *first_ok) {
    if (i >= c->n)
        return false;
    if (c->special[i])
        return c->special[i] == 2 && complete;
    if (complete || !c->len[i])
        return false; /* once complete, only the end tokens */
    const uint8_t *b = c->bytes + c->off[i];
    if (first_ok && !first_ok[b[0]])
        return false;
    if (c->fast_str && c->plain[i])
        return true;
    pu_json_sm_copy(c->tmp, &c->sm);
    return pu_json_sm_feed(c->tmp, b, c->len[i]);
}

int64_t pu_json_constraint_mask(pu_json_constraint *c, float *logits, int64_t n_vocab) {
    size_t kl = sm_key(&c->sm, &c->keybuf, &c->keycap);
    const uint8_t *key = c->keybuf;
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
        if (kl > hit->kcap) {
            hit->key = pu_realloc(hit->key, kl);
            hit->kcap = kl;
        }
        memcpy(hit->key, key, kl);
        hit->klen = kl;
        bool complete = pu_json_sm_complete(&c->sm);
        c->fast_str = free_string_state(&c->sm);
        bool first_ok[256];
        for (int b = 0; b < 256; b++) {
            pu_json_sm_copy(c->tmp, &c->sm);
            uint8_t x = (uint8_t)b;
            first_ok[b] = pu_json_sm_feed(c->tmp, &x, 1);
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
    c->fast_str = free_string_state(&c->sm);
    /* most pieces are rejected by their first byte: test the 256 bytes once */
    bool first_ok[256];
    for (int b = 0; b < 256; b++) {
        pu_json_sm_copy(c->tmp, &c->sm);
        uint8_t x = (uint8_t)b;
        first_ok[b] = pu_json_sm_feed(c->tmp, &x, 1);
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
    c->fast_str = false; /* feed the bytes: the state must advance */
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
