/*
 * test_json_schema.c — JSON-schema-constrained decoding against an
 * independent validator (written here, on the raw schema JSON, not on the
 * compiled nodes).
 *
 *  - random walks over the byte automaton: every step has an allowed byte
 *    (no dead ends); every finished walk parses and validates;
 *  - random documents (schema-directed, with random violations): the
 *    automaton accepts the compact text exactly when the validator does
 *    (soundness and reachability of every valid document generated);
 *  - token-level random walks (stories260K / tiny_bpe tokenizers): what the
 *    mask lets through validates;
 *  - schemas outside the supported set are refused naming the keyword.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_json_constraint.h"
#include "puyu/pu_tok.h"

#include "json_validate.h"

/* ------------------------------------------------------------------------ */
/* schemas                                                                   */

static const char *const k_schemas[] = {
    /* 0: nested objects, arrays, enums of any type, type lists, bounds */
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":4},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},"
    "\"score\":{\"type\":\"number\",\"exclusiveMinimum\":-1.5,\"maximum\":2.5},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":2},"
    "\"minItems\":1,\"maxItems\":3},"
    "\"kind\":{\"enum\":[\"a\",1,null,true,{\"x\":[1]},\"ab\",10]},"
    "\"nick\":{\"type\":[\"string\",\"null\"],\"maxLength\":3},"
    "\"addr\":{\"type\":\"object\",\"properties\":{\"zip\":{\"type\":\"integer\",\"minimum\":10,"
    "\"maximum\":99},\"city\":{\"const\":\"Oslo\"}},\"required\":[\"zip\"],"
    "\"additionalProperties\":false},"
    "\"any\":{},\"free\":{\"type\":\"object\"}},"
    "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}",
    /* 1: $defs, anyOf, oneOf, recursion */
    "{\"$defs\":{\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\","
    "\"minimum\":-5,\"maximum\":5},\"y\":{\"type\":\"integer\"}},\"required\":[\"x\",\"y\"],"
    "\"additionalProperties\":false},"
    "\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\",\"minimum\":0,"
    "\"maximum\":9},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},"
    "\"maxItems\":2}},\"required\":[\"v\"],\"additionalProperties\":false}},"
    "\"type\":\"object\",\"properties\":{\"p\":{\"$ref\":\"#/$defs/pt\"},"
    "\"shape\":{\"anyOf\":[{\"$ref\":\"#/$defs/pt\"},{\"type\":\"array\",\"items\":{\"$ref\":"
    "\"#/$defs/pt\"},\"maxItems\":2},{\"type\":\"null\"}]},"
    "\"u\":{\"oneOf\":[{\"type\":\"string\",\"maxLength\":2},{\"type\":\"integer\","
    "\"minimum\":100,\"maximum\":200}]},"
    "\"ab\":{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},"
    "\"k\":{\"const\":1}},\"required\":[\"k\"],\"additionalProperties\":false},"
    "{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"string\",\"maxLength\":3},"
    "\"k\":{\"const\":2}},\"required\":[\"k\"],\"additionalProperties\":false}]},"
    "\"tree\":{\"$ref\":\"#/$defs/node\"}},"
    "\"required\":[\"p\"],\"additionalProperties\":false}",
    /* 2: definitions, allOf of one, number bounds, draft-4 exclusive */
    "{\"definitions\":{\"c\":{\"type\":\"string\",\"enum\":[\"r\",\"g\",\"b\",7]}},"
    "\"type\":\"object\",\"properties\":{\"c\":{\"allOf\":[{\"$ref\":\"#/definitions/c\"}]},"
    "\"n\":{\"type\":\"number\",\"minimum\":0.25,\"maximum\":0.75},"
    "\"m\":{\"type\":\"integer\",\"minimum\":-3,\"exclusiveMaximum\":3},"
    "\"d4\":{\"type\":\"integer\",\"minimum\":5,\"exclusiveMinimum\":true,\"maximum\":8},"
    "\"list\":{\"type\":\"array\",\"items\":{\"type\":\"number\",\"minimum\":-1,\"maximum\":1}},"
    "\"opt\":{\"type\":\"string\",\"nullable\":true,\"minLength\":2,\"maxLength\":2}},"
    "\"required\":[\"c\",\"n\"],\"additionalProperties\":false}",
    /* 3: a top-level array or null */
    "{\"type\":[\"array\",\"null\"],\"items\":{\"type\":\"boolean\"},\"maxItems\":2}",
    /* 4: OpenAI wrapper, strict tool-call style */
    "{\"name\":\"call\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{"
    "\"location\":{\"type\":\"string\",\"description\":\"city\",\"maxLength\":6},"
    "\"unit\":{\"type\":[\"string\",\"null\"],\"enum\":[\"c\",\"f\",null]}},"
    "\"required\":[\"location\",\"unit\"],\"additionalProperties\":false}}",
};
#define N_SCHEMAS (int)(sizeof k_schemas / sizeof k_schemas[0])

static json_t *schema_json(int k) {
    json_t *j = json_loads(k_schemas[k], 0, NULL);
    json_t *in = json_object_get(j, "schema");
    if (in) {
        json_incref(in);
        json_decref(j);
        return in;
    }
    return j;
}

/* ------------------------------------------------------------------------ */
/* documents                                                                 */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return n ? (uint32_t)(g_rng % n) : 0;
}

static json_t *gen(json_t *root, json_t *sch, int depth);

static json_t *gen_any(int depth) {
    switch (rnd(depth > 2 ? 5 : 7)) {
    case 0: return json_integer((json_int_t)rnd(200) - 100);
    case 1: return json_string(rnd(2) ? "x" : "é中");
    case 2: return json_true();
    case 3: return json_null();
    /* not integral: 3.0 is an integer for JSON Schema but never generated for one */
    case 4: return json_real((double)(2 * (int)rnd(40) - 39) / 4);
    case 5: {
        json_t *a = json_array();
        for (uint32_t i = rnd(3); i; i--)
            json_array_append_new(a, gen_any(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        json_object_set_new(o, rnd(2) ? "k" : "q\"", gen_any(depth + 1));
        return o;
    }
    }
}

static const char *const k_chars[] = {"a", "Z", "é", "中", "\"", "\n", "😀", " "};

static json_t *gen_type(json_t *root, json_t *sch, const char *t, int depth) {
    json_t *a;
    if (!strcmp(t, "string")) {
        int mx = (a = json_object_get(sch, "maxLength")) ? (int)json_integer_value(a) + 1 : 5;
        char buf[128] = "";
        for (int i = (int)rnd((uint32_t)mx + 1); i; i--)
            strcat(buf, k_chars[rnd(8)]);
        return json_string(buf);
    }
    if (!strcmp(t, "integer") || !strcmp(t, "number")) {
        double lo = (a = json_object_get(sch, "minimum")) ? json_number_value(a) : -20;
        double hi = (a = json_object_get(sch, "maximum")) ? json_number_value(a) : 20;
        if (json_is_number(a = json_object_get(sch, "exclusiveMaximum")))
            hi = json_number_value(a);
        if (json_is_number(a = json_object_get(sch, "exclusiveMinimum")))
            lo = json_number_value(a);
        int span = (int)(hi - lo) + 4;
        if (!strcmp(t, "integer"))
            return json_integer((json_int_t)(floor(lo) - 2 + rnd((uint32_t)span + 1)));
        return json_real(floor(lo * 4 - 4 + rnd((uint32_t)span * 4 + 8)) / 4);
    }
    if (!strcmp(t, "boolean"))
        return rnd(2) ? json_true() : json_false();
    if (!strcmp(t, "null"))
        return json_null();
    if (!strcmp(t, "array")) {
        int mx = (a = json_object_get(sch, "maxItems")) ? (int)json_integer_value(a) + 1 : 3;
        if (depth > 4)
            mx = 1;
        json_t *arr = json_array(), *it = json_object_get(sch, "items");
        for (int i = (int)rnd((uint32_t)mx + 1); i; i--)
            json_array_append_new(arr, it ? gen(root, it, depth + 1) : gen_any(depth + 1));
        return arr;
    }
    json_t *o = json_object(), *props = json_object_get(sch, "properties");
    if (!props)
        return rnd(2) ? o : (json_object_set_new(o, "z", gen_any(depth + 1)), o);
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v) {
        if (rnd(10) < (depth > 3 ? 2 : 7))
            json_object_set_new(o, k, gen(root, v, depth + 1));
    }
    if (!rnd(20))
        json_object_set_new(o, "extra", json_integer(1));
    return o;
}

static json_t *gen(json_t *root, json_t *sch, int depth) {
    if (!json_is_object(sch) || depth > 8)
        return gen_any(depth);
    if (json_object_get(sch, "$ref"))
        return gen(root, jv_resolve(root, sch), depth);
    json_t *a;
    if ((a = json_object_get(sch, "anyOf")) || (a = json_object_get(sch, "oneOf")) ||
        (a = json_object_get(sch, "allOf")))
        return gen(root, json_array_get(a, rnd((uint32_t)json_array_size(a))), depth);
    if ((a = json_object_get(sch, "enum")))
        return rnd(8) ? json_deep_copy(json_array_get(a, rnd((uint32_t)json_array_size(a))))
                      : gen_any(depth);
    if ((a = json_object_get(sch, "const")))
        return rnd(8) ? json_deep_copy(a) : gen_any(depth);
    if (json_is_true(json_object_get(sch, "nullable")) && !rnd(3))
        return json_null();
    json_t *ty = json_object_get(sch, "type");
    if (json_is_array(ty))
        ty = json_array_get(ty, rnd((uint32_t)json_array_size(ty)));
    if (!json_is_string(ty) || !rnd(15))
        return gen_any(depth);
    return gen_type(root, sch, json_string_value(ty), depth);
}

/* a real with an integral value (3.0): an integer for JSON Schema, but the automaton writes
 * integers without a fraction, so such documents are left out of the iff comparison */
static bool has_integral_real(json_t *v) {
    if (json_is_real(v))
        return floor(json_real_value(v)) == json_real_value(v);
    size_t i;
    json_t *e;
    const char *k;
    json_array_foreach(v, i, e) {
        if (has_integral_real(e))
            return true;
    }
    json_object_foreach(v, k, e) {
        if (has_integral_real(e))
            return true;
    }
    return false;
}

static bool sm_accepts(const pu_json_schema *sc, const char *txt) {
    static pu_json_sm s;
    pu_json_sm_init_schema(&s, sc);
    return pu_json_sm_feed(&s, (const uint8_t *)txt, strlen(txt)) && pu_json_sm_complete(&s);
}

/* random documents: accepted by the automaton iff valid */
static void check_docs(void) {
    int n_valid = 0, n_invalid = 0;
    for (int k = 0; k < N_SCHEMAS; k++) {
        pu_json_schema *sc = NULL;
        PT_OK(pu_json_schema_parse(k_schemas[k], strlen(k_schemas[k]), &sc));
        if (!sc)
            continue;
        json_t *js = schema_json(k);
        int bad = 0;
        for (int it = 0; it < 1500; it++) {
            json_t *doc = gen(js, js, 0);
            char *txt = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
            bool valid = jv_validate(js, js, doc), acc = sm_accepts(sc, txt);
            n_valid += valid;
            n_invalid += !valid;
            if (valid != acc && bad++ < 5)
                PT_CHECK_MSG(false, "schema %d: %s valid=%d accepted=%d", k, txt, valid, acc);
            free(txt);
            json_decref(doc);
        }
        json_decref(js);
        pu_json_schema_destroy(sc);
    }
    fprintf(stderr, "    random documents: %d valid (all accepted), %d invalid (all rejected)\n",
            n_valid, n_invalid);
    PT_CHECK(n_valid > 1000 && n_invalid > 500);
}

/* hand-written documents with whitespace and escapes */
static void check_fixed(void) {
    static const struct {
        int k;
        const char *doc;
        bool ok;
    } cases[] = {
        {0, "{\"name\": \"ab\", \"age\": 7}", true},
        {0, "{ \"age\" : 120 ,\n \"name\" : \"\\u00e9\\ud83d\\ude00\\n\\\"\" }", true},
        {0, "{\"name\": \"abcde\", \"age\": 7}", false},              /* maxLength */
        {0, "{\"name\": \"\", \"age\": 7}", false},                   /* minLength */
        {0, "{\"name\": \"a\", \"age\": 121}", false},                /* maximum */
        {0, "{\"name\": \"a\", \"age\": -1}", false},                 /* minimum */
        {0, "{\"name\": \"a\", \"age\": 1.5}", false},                /* integer */
        {0, "{\"name\": \"a\", \"age\": 1, \"score\": -1.5}", false}, /* exclusive */
        {0, "{\"name\": \"a\", \"age\": 1, \"score\": -1.49}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"score\": 2.5}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"score\": 2.51}", false},
        {0, "{\"name\": \"a\", \"age\": 1, \"score\": 1}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"tags\": []}", false}, /* minItems */
        {0, "{\"name\": \"a\", \"age\": 1, \"tags\": [\"a\",\"b\",\"c\",\"d\"]}", false},
        {0, "{\"name\": \"a\", \"age\": 1, \"tags\": [\"ab\", \"\"]}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"kind\": {\"x\":[1]}}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"kind\": 10}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"kind\": 100}", false},
        {0, "{\"name\": \"a\", \"age\": 1, \"kind\": \"b\"}", false},
        {0, "{\"name\": \"a\", \"age\": 1, \"nick\": null, \"addr\": {\"zip\": 10}}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"addr\": {\"city\": \"Oslo\"}}", false},
        {0, "{\"name\": \"a\", \"age\": 1, \"addr\": {\"zip\": 9}}", false},
        {0, "{\"name\": \"a\", \"age\": 1, \"free\": {\"k\": [1, {}]}, \"any\": [null]}", true},
        {0, "{\"name\": \"a\", \"age\": 1, \"other\": 1}", false}, /* additionalProperties */
        {1, "{\"p\": {\"x\": -5, \"y\": 123456}}", true},
        {1, "{\"p\": {\"x\": -6, \"y\": 1}}", false},
        {1, "{\"p\": {\"x\": 0, \"y\": 0}, \"shape\": [{\"x\": 1, \"y\": 2}]}", true},
        {1, "{\"p\": {\"x\": 0, \"y\": 0}, \"shape\": null, \"u\": 150}", true},
        {1, "{\"p\": {\"x\": 0, \"y\": 0}, \"u\": 99}", false},
        {1, "{\"p\": {\"x\": 0, \"y\": 0}, \"ab\": {\"b\": \"s\", \"k\": 2}}", true},
        {1, "{\"p\": {\"x\": 0, \"y\": 0}, \"ab\": {\"b\": \"s\", \"k\": 1}}", false},
        {1,
         "{\"p\": {\"x\": 0, \"y\": 0}, \"tree\": {\"v\": 1, \"kids\": [{\"v\": 2, \"kids\": "
         "[{\"v\": 3}]}]}}",
         true},
        {1, "{\"p\": {\"x\": 0, \"y\": 0}, \"tree\": {\"v\": 1, \"kids\": [{\"v\": 10}]}}", false},
        {2, "{\"c\": \"g\", \"n\": 0.25, \"m\": 2, \"d4\": 6}", true},
        {2, "{\"c\": \"g\", \"n\": 0.2}", false},
        {2, "{\"c\": \"g\", \"n\": 0.7500001}", false},
        {2, "{\"c\": \"g\", \"n\": 0.5, \"m\": 3}", false},
        {2, "{\"c\": \"g\", \"n\": 0.5, \"d4\": 5}", false},
        {2, "{\"c\": 7, \"n\": 0.5}", false}, /* enum value of another type dropped */
        {2, "{\"c\": \"r\", \"n\": 0.5, \"opt\": null, \"list\": [-1, 0.5, 1]}", true},
        {2, "{\"c\": \"r\", \"n\": 0.5, \"list\": [1.5]}", false},
        {3, "[true, false]", true},
        {3, "null", true},
        {3, "[true, false, true]", false},
        {4, "{\"location\": \"Oslo\", \"unit\": null}", true},
        {4, "{\"location\": \"Oslo\", \"unit\": \"k\"}", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pu_json_schema *sc = NULL;
        int k = cases[i].k;
        PT_OK(pu_json_schema_parse(k_schemas[k], strlen(k_schemas[k]), &sc));
        if (!sc)
            continue;
        json_t *js = schema_json(k), *doc = json_loads(cases[i].doc, JSON_DECODE_ANY, NULL);
        bool valid = doc && jv_validate(js, js, doc);
        bool acc = sm_accepts(sc, cases[i].doc);
        /* a copy (what the engine keeps per request) behaves the same */
        pu_json_schema *cp = pu_json_schema_copy(sc);
        PT_CHECK_MSG(cp && sm_accepts(cp, cases[i].doc) == acc, "case %zu: the copy differs", i);
        pu_json_schema_destroy(cp);
        PT_CHECK_MSG(valid == cases[i].ok && acc == cases[i].ok,
                     "case %zu (schema %d) %s: want %d, validator %d, automaton %d", i, k,
                     cases[i].doc, cases[i].ok, valid, acc);
        json_decref(doc);
        json_decref(js);
        pu_json_schema_destroy(sc);
    }
}

/* byte-level random walks: no dead ends, every finished walk validates */
static void check_walks(void) {
    static pu_json_sm s, t;
    int finished = 0, total = 0;
    for (int k = 0; k < N_SCHEMAS; k++) {
        pu_json_schema *sc = NULL;
        PT_OK(pu_json_schema_parse(k_schemas[k], strlen(k_schemas[k]), &sc));
        if (!sc)
            continue;
        json_t *js = schema_json(k);
        int dead = 0, invalid = 0;
        for (int w = 0; w < 150; w++) {
            pu_json_sm_init_schema(&s, sc);
            char buf[4096];
            size_t n = 0;
            total++;
            while (n < sizeof buf - 1) {
                if (pu_json_sm_complete(&s))
                    break;
                int ok[256], n_ok = 0, weight = 0, wts[256];
                for (int b = 1; b < 256; b++) {
                    pu_json_sm_copy(&t, &s);
                    uint8_t x = (uint8_t)b;
                    if (pu_json_sm_feed(&t, &x, 1)) {
                        /* closers and digits likelier, so that walks end */
                        int wt = strchr("\"}],", b) ? 40 : (b >= '0' && b <= '9') ? 4 : 1;
                        ok[n_ok] = b;
                        wts[n_ok++] = wt;
                        weight += wt;
                    }
                }
                if (!n_ok) {
                    buf[n] = 0;
                    if (dead < 3)
                        fprintf(stderr, "    dead end (schema %d): %s\n", k, buf);
                    dead++;
                    break;
                }
                int r = (int)rnd((uint32_t)weight), pick = 0;
                while (r >= wts[pick])
                    r -= wts[pick++];
                uint8_t x = (uint8_t)ok[pick];
                PT_CHECK(pu_json_sm_feed(&s, &x, 1));
                buf[n++] = (char)x;
            }
            buf[n] = 0;
            if (!pu_json_sm_complete(&s))
                continue;
            finished++;
            json_error_t err;
            json_t *doc = json_loadb(buf, n, JSON_DECODE_ANY, &err);
            bool valid = doc && jv_validate(js, js, doc);
            if (!valid && invalid++ < 3)
                PT_CHECK_MSG(false, "schema %d walk %d: invalid %s (%s)", k, w, buf,
                             doc ? "schema" : err.text);
            json_decref(doc);
        }
        PT_CHECK_MSG(dead == 0, "schema %d: %d walks hit a dead end", k, dead);
        json_decref(js);
        pu_json_schema_destroy(sc);
    }
    fprintf(stderr, "    byte walks: %d of %d finished, all valid\n", finished, total);
    PT_CHECK(finished > total * 8 / 10);
}

/* token-level walks: random logits, the mask, the accepted token */
static void check_token_walks(const char *tok_path, const char *label, int walks) {
    pu_tok *tok = NULL;
    PT_OK(pu_tok_load(tok_path, &tok));
    if (!tok)
        return;
    pu_json_constraint *proto = NULL;
    PT_OK(pu_json_constraint_create(tok, true, &proto));
    int64_t V = pu_tok_n_vocab(tok);
    float *lg = pu_malloc((size_t)V * sizeof(float));
    int finished = 0, total = 0, stuck = 0;
    int64_t steps = 0;
    double mask_s = 0;
    for (int k = 0; k < N_SCHEMAS && proto; k++) {
        pu_json_schema *sc = NULL;
        PT_OK(pu_json_schema_parse(k_schemas[k], strlen(k_schemas[k]), &sc));
        json_t *js = schema_json(k);
        for (int w = 0; w < walks && sc; w++) {
            pu_json_constraint *c = pu_json_constraint_clone(proto, true, sc);
            pu_str out = {0};
            total++;
            for (int step = 0; step < 600; step++) {
                for (int64_t v = 0; v < V; v++) {
                    size_t bl;
                    const uint8_t *b = pu_json_constraint_token_bytes(c, (int32_t)v, &bl);
                    lg[v] = (float)rnd(1000) / 100.0f;
                    if (b && bl && strchr("\"}]", b[bl - 1]))
                        lg[v] += 6;
                }
                double t0 = pu_time_now();
                int64_t allowed = pu_json_constraint_mask(c, lg, V);
                mask_s += pu_time_now() - t0;
                steps++;
                if (allowed == 0) {
                    stuck++;
                    break;
                }
                int32_t best = -1;
                for (int64_t v = 0; v < V; v++)
                    if (isfinite(lg[v]) && (best < 0 || lg[v] > lg[best]))
                        best = (int32_t)v;
                if (pu_json_constraint_complete(c))
                    break; /* only the end tokens were allowed */
                PT_OK(pu_json_constraint_accept(c, best));
                size_t bl;
                const uint8_t *b = pu_json_constraint_token_bytes(c, best, &bl);
                pu_str_append(&out, (const char *)b, bl);
            }
            if (pu_json_constraint_complete(c)) {
                finished++;
                json_t *doc = json_loadb(out.p, out.len, JSON_DECODE_ANY, NULL);
                PT_CHECK_MSG(doc && jv_validate(js, js, doc), "%s schema %d: invalid %s", label, k,
                             out.p);
                json_decref(doc);
            }
            pu_str_free(&out);
            pu_json_constraint_destroy(c);
        }
        json_decref(js);
        pu_json_schema_destroy(sc);
    }
    fprintf(stderr,
            "    %s token walks: %d of %d finished (all valid), %d stuck; mask %.3f ms/token "
            "(%lld tokens, printed, not asserted)\n",
            label, finished, total, stuck, steps ? mask_s / (double)steps * 1e3 : 0.0,
            (long long)steps);
    PT_EQ_I64(stuck, 0);
    PT_CHECK(finished > total / 2);
    pu_free(lg);
    pu_json_constraint_destroy(proto);
    pu_tok_destroy(tok);
}

/* what is outside the supported set: refused naming the keyword */
static void check_refused(void) {
    static const struct {
        const char *schema, *field;
    } cases[] = {
        {"{\"type\":\"string\",\"pattern\":\"^a+$\"}", "json_schema.pattern"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"not\":{}}}}",
         "json_schema.properties.a.not"},
        {"{\"type\":\"array\",\"prefixItems\":[{}]}", "json_schema.prefixItems"},
        {"{\"type\":\"array\",\"uniqueItems\":true}", "json_schema.uniqueItems"},
        {"{\"type\":\"number\",\"multipleOf\":2}", "json_schema.multipleOf"},
        {"{\"if\":{},\"then\":{}}", "json_schema.if"},
        {"{\"type\":\"object\",\"patternProperties\":{}}", "json_schema.patternProperties"},
        {"{\"type\":\"object\",\"minProperties\":1}", "json_schema.minProperties"},
        {"{\"allOf\":[{},{}]}", "json_schema.allOf"},
        {"{\"$ref\":\"http://x/s.json\"}", "json_schema.$ref"},
        {"{\"$ref\":\"#/$defs/missing\"}", "json_schema.$ref"},
        {"{\"$defs\":{\"a\":{}},\"$ref\":\"#/$defs/a\",\"minimum\":1}", "json_schema.minimum"},
        {"{\"type\":\"strng\"}", "json_schema.type"},
        {"{\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "json_schema.required[0]"},
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "json_schema"},
        {"{\"type\":\"string\",\"minLength\":3,\"maxLength\":2}", "json_schema"},
        {"{\"enum\":[1,2],\"type\":\"string\"}", "json_schema.enum"},
        {"{\"type\":\"array\",\"items\":{\"type\":\"string\",\"format\":\"date\",\"contains\":{}}}",
         "json_schema.items.contains"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pu_json_schema *sc = NULL;
        pu_status st = pu_json_schema_parse(cases[i].schema, strlen(cases[i].schema), &sc);
        PT_CHECK_MSG(st != PU_OK && strstr(pu_err_msg(), cases[i].field),
                     "case %zu %s: status %d message %s", i, cases[i].schema, st,
                     st ? pu_err_msg() : "-");
        pu_json_schema_destroy(sc);
    }
    /* annotations and format pass */
    const char *ok = "{\"title\":\"t\",\"$schema\":\"x\",\"type\":\"object\",\"properties\":{"
                     "\"d\":{\"type\":\"string\",\"format\":\"date-time\",\"description\":\"x\","
                     "\"examples\":[\"a\"],\"default\":\"a\"}}}";
    pu_json_schema *sc = NULL;
    PT_OK(pu_json_schema_parse(ok, strlen(ok), &sc));
    pu_json_schema_destroy(sc);
}

/* ------------------------------------------------------------------------ */
/* random schemas                                                            */

static json_t *rand_schema(int depth) {
    int kind = (int)rnd(depth > 2 ? 7 : 11);
    json_t *s = json_object();
    switch (kind) {
    case 0:
        json_object_set_new(s, "type", json_string("string"));
        if (rnd(2))
            json_object_set_new(s, "minLength", json_integer(rnd(3)));
        if (rnd(2))
            json_object_set_new(s, "maxLength", json_integer(2 + rnd(3)));
        break;
    case 1:
    case 2: {
        bool integer = kind == 1;
        json_object_set_new(s, "type", json_string(integer ? "integer" : "number"));
        double lo = integer ? (double)((int)rnd(40) - 20) : (double)((int)rnd(40) - 20) / 4;
        double hi = lo + (integer ? (double)rnd(30) : (double)rnd(30) / 4);
        if (rnd(3))
            json_object_set_new(s, rnd(2) ? "minimum" : "exclusiveMinimum", json_real(lo));
        if (rnd(3))
            json_object_set_new(s, rnd(2) ? "maximum" : "exclusiveMaximum", json_real(hi + 1));
        break;
    }
    case 3: json_object_set_new(s, "type", json_string(rnd(2) ? "boolean" : "null")); break;
    case 4: {
        json_t *e = json_array();
        json_array_append_new(e, json_integer(rnd(12)));
        json_array_append_new(e, json_string(rnd(2) ? "a" : "ab"));
        if (rnd(2))
            json_array_append_new(e, json_null());
        if (rnd(2))
            json_array_append_new(e, json_pack("{s:[i]}", "x", 1));
        json_array_append_new(e, json_real(2.5));
        json_object_set_new(s, "enum", e);
        break;
    }
    case 5:
        json_object_set_new(s, "type", json_pack("[s,s]", "string", "null"));
        json_object_set_new(s, "maxLength", json_integer(1 + rnd(3)));
        break;
    case 6: json_object_set_new(s, "const", rnd(2) ? json_string("k") : json_integer(7)); break;
    case 7:
    case 8: {
        json_object_set_new(s, "type", json_string("object"));
        json_t *props = json_object(), *req = json_array();
        const char *names[] = {"a", "b", "ab", "c"};
        for (int i = 0; i < 4; i++)
            if (rnd(2)) {
                json_object_set_new(props, names[i], rand_schema(depth + 1));
                if (rnd(2))
                    json_array_append_new(req, json_string(names[i]));
            }
        json_object_set_new(s, "properties", props);
        json_object_set_new(s, "required", req);
        json_object_set_new(s, "additionalProperties", json_false());
        break;
    }
    case 9: {
        json_object_set_new(s, "type", json_string("array"));
        json_object_set_new(s, "items", rand_schema(depth + 1));
        uint32_t mn = rnd(3);
        if (rnd(2))
            json_object_set_new(s, "minItems", json_integer(mn));
        if (rnd(2))
            json_object_set_new(s, "maxItems", json_integer(mn + rnd(3)));
        break;
    }
    default: {
        json_t *a = json_array();
        for (uint32_t i = 2 + rnd(2); i; i--)
            json_array_append_new(a, rand_schema(depth + 1));
        json_object_set_new(s, "anyOf", a);
        break;
    }
    }
    return s;
}

static void check_random_schemas(void) {
    static pu_json_sm s, t;
    int compiled = 0, walks = 0, finished = 0, dead = 0, invalid = 0, docs = 0, mismatch = 0;
    for (int k = 0; k < 150; k++) {
        json_t *js = rand_schema(0);
        char *txt = json_dumps(js, JSON_COMPACT);
        pu_json_schema *sc = NULL;
        if (pu_json_schema_parse(txt, strlen(txt), &sc) != PU_OK) {
            free(txt);
            json_decref(js);
            continue;
        }
        compiled++;
        for (int w = 0; w < 20; w++) {
            pu_json_sm_init_schema(&s, sc);
            char buf[2048];
            size_t n = 0;
            walks++;
            while (n < sizeof buf - 1 && !pu_json_sm_complete(&s)) {
                int ok[256], wts[256], n_ok = 0, weight = 0;
                for (int b = 1; b < 256; b++) {
                    pu_json_sm_copy(&t, &s);
                    uint8_t x = (uint8_t)b;
                    if (pu_json_sm_feed(&t, &x, 1)) {
                        int wt = strchr("\"}],", b) ? 40 : (b >= '0' && b <= '9') ? 4 : 1;
                        ok[n_ok] = b;
                        wts[n_ok++] = wt;
                        weight += wt;
                    }
                }
                if (!n_ok) {
                    buf[n] = 0;
                    if (dead++ < 3)
                        PT_CHECK_MSG(false, "dead end: schema %s after %s", txt, buf);
                    break;
                }
                int r = (int)rnd((uint32_t)weight), pick = 0;
                while (r >= wts[pick])
                    r -= wts[pick++];
                uint8_t x = (uint8_t)ok[pick];
                pu_json_sm_feed(&s, &x, 1);
                buf[n++] = (char)x;
            }
            buf[n] = 0;
            if (!pu_json_sm_complete(&s))
                continue;
            finished++;
            json_t *doc = json_loadb(buf, n, JSON_DECODE_ANY, NULL);
            if (!(doc && jv_validate(js, js, doc)) && invalid++ < 3)
                PT_CHECK_MSG(false, "schema %s: invalid walk %s", txt, buf);
            json_decref(doc);
        }
        for (int d = 0; d < 40; d++) {
            json_t *doc = gen(js, js, 0);
            char *dt = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
            bool valid = jv_validate(js, js, doc), acc = sm_accepts(sc, dt);
            if (valid && !acc && has_integral_real(doc)) {
                free(dt);
                json_decref(doc);
                continue;
            }
            docs++;
            if (valid != acc && mismatch++ < 3)
                PT_CHECK_MSG(false, "schema %s: %s valid=%d accepted=%d", txt, dt, valid, acc);
            free(dt);
            json_decref(doc);
        }
        pu_json_schema_destroy(sc);
        free(txt);
        json_decref(js);
    }
    fprintf(stderr,
            "    random schemas: %d compiled, %d walks (%d finished, %d dead ends, %d invalid), "
            "%d documents (%d mismatches)\n",
            compiled, walks, finished, dead, invalid, docs, mismatch);
    PT_CHECK(compiled > 100 && finished > walks * 8 / 10);
}

PT_SUITE(json_schema) {
    if (PT_TEST("schema: fixed documents (validator = automaton)"))
        check_fixed();
    if (PT_TEST("schema: random documents accepted iff valid"))
        check_docs();
    if (PT_TEST("schema: byte random walks validate, no dead ends"))
        check_walks();
    if (PT_TEST("schema: random schemas (walks never dead-end, documents iff valid)"))
        check_random_schemas();
    if (PT_TEST("schema: unsupported keywords refused by name"))
        check_refused();
    char tok[512];
    if (PT_TEST("schema: token walks (tests/golden tiny_bpe tokenizer)"))
        check_token_walks("tests/golden/tok/tiny_bpe.model", "tiny_bpe", 12);
    if (PT_TEST("schema: token walks (stories260K tokenizer, byte fallback)") &&
        pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok))
        check_token_walks(tok, "stories260K", 12);
    if (PT_TEST("schema: token walks (InternLM2 tokenizer, multi-byte pieces)") &&
        pt_shared_path("internlm2/tokenizer.model", tok, sizeof tok))
        check_token_walks(tok, "internlm2", 2);
}
