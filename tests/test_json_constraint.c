/*
 * test_json_constraint.c — JSON mode (suite json_constraint): the byte-level
 * automaton accepts every prefix of valid documents and rejects invalid ones
 * at the first bad byte (UTF-8 overlongs and surrogates included); the token
 * mask on the stories260K (byte fallback) and InternLM2 (multi-byte pieces)
 * tokenizers lets every token of a valid document through and masks
 * continuations that would break it; greedy generation from stories260K with
 * the sampler hook yields only valid JSON prefixes (and parseable JSON when
 * it completes).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_agent.h"
#include "puyu/pu_infer.h"
#include "puyu/pu_json_constraint.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

static const char *k_valid[] = {
    "{}",
    "{ \"a\" : [1, -2.5e+3, 0, 0.5, 1E-2, true, false, null, \"x\\n\\u00e9\\\"\"] }",
    "{\"nested\": {\"b\": [[], {}, [{\"c\": {}}]]}, \"n\": -0}",
    "{\"zh\": \"中文 ✓ 🎉\", \"k\": \"\\\\/\", \"sur\": \"\\uD83D\\uDE00 \\u00E9\"}",
    "{\"name\": \"calculator\", \"parameters\": {\"expression\": \"(3 + 4) * 2\"}}",
};

static const char *k_invalid[] = {
    "{,}",
    "{\"a\" 1}",
    "{\"a\":01}",
    "{\"a\":[1,]}",
    "{\"a\":tru}",
    "{\"a\":1}}",
    "{\"a\":[1 2]}",
    "{\"a\":\"\x01\"}",
    "{\"a\":\"\xC0\x80\"}",
    "{\"a\":\"\xED\xA0\x80\"}",
    "{\"a\":\"\\x\"}",
    "{\"a\":-}",
    "{\"a\":1.}",
    "{\"a\":1e}",
    "{'a': 1}",
    "{\"a\":\"\xFF\"}",
    "{\"a\":\"\x80\"}",
    "{\"a\":\"\\u12G4\"}",
    "{\"a\": nul}",
    "{\"a\":\"\\uDDDA\"}",
    "{\"a\":\"\\uD83Dx\"}",
    "{\"a\":\"\\uD83D\\u0041\"}",
    "{\"a\":\"\\u0000\"}",
};

static bool feed_all(pu_json_sm *s, const char *d, size_t *at) {
    size_t n = strlen(d);
    for (size_t i = 0; i < n; i++) {
        if (!pu_json_sm_feed(s, (const uint8_t *)d + i, 1)) {
            *at = i;
            return false;
        }
    }
    *at = n;
    return true;
}

static void check_sm(void) {
    for (size_t k = 0; k < sizeof k_valid / sizeof k_valid[0]; k++) {
        pu_json_sm s;
        pu_json_sm_init(&s, true);
        size_t n = strlen(k_valid[k]);
        for (size_t i = 0; i < n; i++) {
            PT_CHECK_MSG(!pu_json_sm_complete(&s), "valid %zu complete early at %zu", k, i);
            bool ok = pu_json_sm_feed(&s, (const uint8_t *)k_valid[k] + i, 1);
            PT_CHECK_MSG(ok, "valid %zu rejected at byte %zu: %s", k, i, k_valid[k]);
            if (!ok)
                break;
        }
        PT_CHECK_MSG(pu_json_sm_complete(&s), "valid %zu not complete", k);
        PT_CHECK(!pu_json_sm_feed(&s, (const uint8_t *)"x", 1));
        /* jansson agrees */
        json_t *j = json_loads(k_valid[k], 0, NULL);
        PT_CHECK(j != NULL);
        json_decref(j);
    }
    for (size_t k = 0; k < sizeof k_invalid / sizeof k_invalid[0]; k++) {
        pu_json_sm s;
        pu_json_sm_init(&s, true);
        size_t at = 0;
        bool ok = feed_all(&s, k_invalid[k], &at);
        PT_CHECK_MSG(!ok || !pu_json_sm_complete(&s), "invalid %zu accepted: %s", k, k_invalid[k]);
        json_t *j = json_loads(k_invalid[k], 0, NULL);
        PT_CHECK_MSG(j == NULL, "jansson accepts invalid %zu", k);
        json_decref(j);
    }
    /* object_only: a top-level array is refused */
    {
        pu_json_sm s;
        pu_json_sm_init(&s, true);
        PT_CHECK(!pu_json_sm_feed(&s, (const uint8_t *)"[", 1));
    }
    /* any value at the top (not object_only); numbers end at the end */
    const char *any[] = {"[1, 2]", "\"s\"", "0", "-12.5e3", "true", " null "};
    for (size_t k = 0; k < sizeof any / sizeof any[0]; k++) {
        pu_json_sm s;
        pu_json_sm_init(&s, false);
        size_t at;
        PT_CHECK_MSG(feed_all(&s, any[k], &at) && pu_json_sm_complete(&s), "any %zu", k);
    }
    /* depth and whitespace bounds */
    pu_json_sm s;
    pu_json_sm_init(&s, false);
    int d = 0;
    while (pu_json_sm_feed(&s, (const uint8_t *)"[", 1))
        d++;
    PT_EQ_I64(d, PU_JSON_MAX_DEPTH);
    pu_json_sm_init(&s, true);
    int w = 0;
    while (pu_json_sm_feed(&s, (const uint8_t *)" ", 1) && w < 100)
        w++;
    PT_CHECK(w <= 8);
}

/* replay the tokenization of each valid document through the mask */
static void check_tokens(const char *tok_path, const char *label) {
    pu_tok *tok = NULL;
    PT_OK(pu_tok_load(tok_path, &tok));
    if (!tok)
        return;
    pu_json_constraint *c = NULL;
    double t0 = pu_time_now();
    PT_OK(pu_json_constraint_create(tok, true, &c));
    double t_build = pu_time_now() - t0;
    if (!c) {
        pu_tok_destroy(tok);
        return;
    }
    int64_t V = pu_tok_n_vocab(tok);
    float *lg = pu_malloc((size_t)V * sizeof(float));
    int bytes_tokens = 0, multi = 0;
    double t_mask = 0;
    int n_mask = 0;
    for (size_t k = 0; k < sizeof k_valid / sizeof k_valid[0]; k++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        pu_tok_encode_opts eo = {.add_bos = false, .parse_special = false};
        PT_OK(pu_tok_encode(tok, k_valid[k], strlen(k_valid[k]), &eo, &ids, &n));
        pu_json_constraint_reset(c);
        for (int64_t i = 0; i < n; i++) {
            for (int64_t v = 0; v < V; v++)
                lg[v] = 1.0f;
            double tm = pu_time_now();
            int64_t allowed = pu_json_constraint_mask(c, lg, V);
            t_mask += pu_time_now() - tm;
            n_mask++;
            size_t bl = 0;
            pu_json_constraint_token_bytes(c, ids[i], &bl);
            bytes_tokens += pu_tok_get_attr(tok, ids[i]) == PU_TOK_ATTR_BYTE;
            multi +=
                bl > 1 && (unsigned char)pu_json_constraint_token_bytes(c, ids[i], &bl)[0] >= 0x80;
            PT_CHECK_MSG(isfinite(lg[ids[i]]) && allowed > 0,
                         "%s doc %zu: token %lld (id %d) masked", label, k, (long long)i, ids[i]);
            if (!isfinite(lg[ids[i]]))
                break;
            PT_OK(pu_json_constraint_accept(c, ids[i]));
        }
        PT_CHECK_MSG(pu_json_constraint_complete(c), "%s doc %zu incomplete", label, k);
        /* complete: only the end tokens remain */
        for (int64_t v = 0; v < V; v++)
            lg[v] = 1.0f;
        int64_t allowed = pu_json_constraint_mask(c, lg, V);
        PT_CHECK(allowed >= 1 && allowed <= 2 && isfinite(lg[pu_tok_eos(tok)]));
        pu_free(ids);
    }
    /* breaking continuations are masked: after {"a": 1 a "]" or a second ":" */
    const char *pre = "{\"a\": 1";
    int32_t *ids = NULL;
    int64_t n = 0;
    pu_tok_encode_opts eo = {.add_bos = false, .parse_special = false};
    PT_OK(pu_tok_encode(tok, pre, strlen(pre), &eo, &ids, &n));
    pu_json_constraint_reset(c);
    for (int64_t i = 0; i < n; i++)
        PT_OK(pu_json_constraint_accept(c, ids[i]));
    for (int64_t v = 0; v < V; v++)
        lg[v] = 1.0f;
    pu_json_constraint_mask(c, lg, V);
    int bad_allowed = 0, good_allowed = 0;
    for (int64_t v = 0; v < V; v++) {
        size_t bl = 0;
        const uint8_t *b = pu_json_constraint_token_bytes(c, (int32_t)v, &bl);
        if (!b || !bl)
            continue;
        /* first non-space byte decides here */
        size_t j = 0;
        while (j < bl && (b[j] == ' ' || b[j] == '\n' || b[j] == '\r' || b[j] == '\t'))
            j++;
        if (j == bl)
            continue;
        bool could = b[j] == ',' || b[j] == '}' || (b[j] >= '0' && b[j] <= '9') || b[j] == '.' ||
                     b[j] == 'e' || b[j] == 'E';
        if (isfinite(lg[v]) && !could)
            bad_allowed++;
        if (isfinite(lg[v]) && (b[j] == '}' || b[j] == ','))
            good_allowed++;
    }
    PT_EQ_I64(bad_allowed, 0);
    PT_CHECK(good_allowed > 0);
    pu_free(ids);
    /* byte tokens: a lone continuation or 0xFF is never allowed in a string */
    pu_json_constraint_reset(c);
    ids = NULL;
    n = 0;
    PT_OK(pu_tok_encode(tok, "{\"a\": \"", 7, &eo, &ids, &n));
    for (int64_t i = 0; i < n; i++)
        PT_OK(pu_json_constraint_accept(c, ids[i]));
    for (int64_t v = 0; v < V; v++)
        lg[v] = 1.0f;
    pu_json_constraint_mask(c, lg, V);
    for (int64_t v = 0; v < V; v++) {
        if (pu_tok_get_attr(tok, (int32_t)v) != PU_TOK_ATTR_BYTE)
            continue;
        size_t bl;
        const uint8_t *b = pu_json_constraint_token_bytes(c, (int32_t)v, &bl);
        if (b && bl == 1 && (b[0] == 0xFF || (b[0] >= 0x80 && b[0] < 0xC0) || b[0] < 0x20))
            PT_CHECK_MSG(!isfinite(lg[v]), "%s: byte token 0x%02X allowed in a string", label,
                         b[0]);
        if (b && bl == 1 && b[0] == 0xE4)
            PT_CHECK(isfinite(lg[v]));
    }
    pu_free(ids);
    printf("    json_constraint %s: vocab %lld, table %.1f ms, mask %.2f ms/step, "
           "%d byte-fallback and %d multi-byte tokens in the documents\n",
           label, (long long)V, t_build * 1e3, n_mask ? t_mask / n_mask * 1e3 : 0.0, bytes_tokens,
           multi);
    pu_free(lg);
    pu_json_constraint_destroy(c);
    pu_tok_destroy(tok);
}

static void check_generate(const char *model_path, const char *tok_path) {
    pu_model *m = NULL;
    pu_tok *tok = NULL;
    PT_OK(pu_model_load(model_path, &m));
    PT_OK(pu_tok_load(tok_path, &tok));
    if (!m || !tok) {
        pu_model_destroy(m);
        pu_tok_destroy(tok);
        return;
    }
    int64_t V = pu_model_config(m)->vocab_size;
    pu_session *s = NULL;
    PT_OK(pu_session_create(m, 512, NULL, &s));
    pu_json_constraint *c = NULL;
    PT_OK(pu_json_constraint_create(tok, true, &c));
    int completed = 0, runs = 0;
    const char *prompts[] = {"Once upon a time", "The cat", "JSON:"};
    for (int r = 0; r < 3 && s && c; r++) {
        pu_sample_params sp = pu_sample_default_params();
        sp.temperature = r == 0 ? 0.0f : 0.8f;
        sp.seed = (uint64_t)r + 1;
        pu_sampler smp;
        PT_OK(pu_sampler_init(&smp, &sp, V));
        smp.mask_fn = pu_json_constraint_mask_hook;
        smp.mask_ud = c;
        pu_json_constraint_reset(c);
        int32_t *ids = NULL;
        int64_t n = 0;
        pu_tok_encode_opts eo = {.add_bos = true, .parse_special = false};
        PT_OK(pu_tok_encode(tok, prompts[r], strlen(prompts[r]), &eo, &ids, &n));
        float *lg = pu_malloc((size_t)V * sizeof(float));
        pu_session_reset(s);
        PT_OK(pu_session_eval(s, ids, n, lg, false));
        pu_str text = {0};
        pu_str_puts(&text, "");
        bool done = false;
        for (int k = 0; k < 300 && pu_session_pos(s) < 511; k++) {
            int32_t id = pu_sampler_sample(&smp, lg, NULL);
            if (pu_json_constraint_complete(c)) {
                done = true;
                break; /* only end tokens were left */
            }
            PT_OK(pu_json_constraint_accept(c, id));
            size_t bl;
            const uint8_t *b = pu_json_constraint_token_bytes(c, id, &bl);
            pu_str_append(&text, (const char *)b, bl);
            if (pu_json_constraint_complete(c)) {
                done = true;
                break;
            }
            PT_OK(pu_session_eval(s, &id, 1, lg, false));
        }
        /* every prefix generated is a JSON prefix */
        pu_json_sm sm;
        pu_json_sm_init(&sm, true);
        PT_CHECK_MSG(pu_json_sm_feed(&sm, (const uint8_t *)text.p, text.len),
                     "generated text is not a JSON prefix: %s", text.p);
        if (done) {
            json_t *j = json_loads(text.p, 0, NULL);
            PT_CHECK_MSG(json_is_object(j), "completed but not parseable: %s", text.p);
            json_decref(j);
            completed++;
        }
        runs++;
        printf("    json_constraint generate (stories260K, %s): %s%.80s%s\n",
               r == 0 ? "greedy" : "T=0.8", done ? "complete: " : "prefix: ", text.p,
               text.len > 80 ? "..." : "");
        pu_str_free(&text);
        pu_free(lg);
        pu_free(ids);
        pu_sampler_deinit(&smp);
    }
    (void)completed;
    (void)runs;
    pu_json_constraint_destroy(c);
    pu_session_destroy(s);
    pu_model_destroy(m);
    pu_tok_destroy(tok);
}

static const char *k_schema =
    "{\"name\": \"weather\", \"schema\": {\"type\": \"object\", \"properties\": {"
    "\"city\": {\"type\": \"string\"}, \"days\": {\"type\": \"integer\"}, "
    "\"unit\": {\"enum\": [\"C\", \"F\", \"Kelvin\"]}, \"ok\": {\"type\": \"boolean\"}, "
    "\"extra\": {\"type\": \"object\"}, \"城市\": {\"type\": \"number\"}}, "
    "\"required\": [\"city\"]}}";

static void check_schema(const char *tok_path) {
    pu_json_schema *sc = NULL;
    PT_OK(pu_json_schema_parse(k_schema, strlen(k_schema), &sc));
    if (!sc)
        return;
    const char *good[] = {
        "{\"city\": \"Paris\"}",
        "{\"unit\": \"Kelvin\", \"city\": \"Oslo\", \"days\": -3}",
        "{\"city\": \"x\", \"ok\": true, \"extra\": {\"any\": [1, {\"k\": null}]}, \"城市\": "
        "1.5e2}",
    };
    const char *bad[] = {
        "{}",                                   /* city required */
        "{\"town\": \"x\"}",                    /* unknown key */
        "{\"city\": 5}",                        /* wrong type */
        "{\"city\": \"a\", \"days\": 1.5}",     /* integer */
        "{\"city\": \"a\", \"unit\": \"K\"}",   /* enum */
        "{\"city\": \"a\", \"city\": \"b\"}",   /* repeated */
        "{\"city\": \"a\", \"ok\": null}",      /* boolean */
        "{\"city\": \"a\", \"unit\": \"Kel\"}", /* enum prefix only */
        "{\"ci\": \"a\"}",                      /* key prefix only */
        "[\"city\"]",
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        pu_json_sm s;
        pu_json_sm_init_schema(&s, sc);
        size_t at = 0;
        bool ok = feed_all(&s, good[k], &at);
        PT_CHECK_MSG(ok && pu_json_sm_complete(&s), "schema good %zu rejected at %zu: %s", k, at,
                     good[k]);
    }
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        pu_json_sm s;
        pu_json_sm_init_schema(&s, sc);
        size_t at = 0;
        bool ok = feed_all(&s, bad[k], &at);
        PT_CHECK_MSG(!ok || !pu_json_sm_complete(&s), "schema bad %zu accepted: %s", k, bad[k]);
        /* and the same text is fine for plain JSON mode where it is JSON */
    }
    const char *bad_schemas[] = {"{\"type\": \"string\", \"pattern\": \"a+\"}",
                                 "{\"properties\": {\"a\": {\"type\": \"strng\"}}}",
                                 "{\"properties\": {\"a\": {}}, \"required\": [\"b\"]}", "[1"};
    for (size_t k = 0; k < 4; k++) {
        pu_json_schema *x = NULL;
        PT_CHECK_MSG(pu_json_schema_parse(bad_schemas[k], strlen(bad_schemas[k]), &x) != PU_OK,
                     "bad schema %zu accepted", k);
        pu_json_schema_destroy(x);
    }
    /* token level: the InternLM2 tokenization of a valid document passes,
     * and after {"city": "x", only allowed keys can start */
    pu_tok *tok = NULL;
    if (tok_path && pu_tok_load(tok_path, &tok) == PU_OK) {
        pu_json_constraint *c = NULL;
        PT_OK(pu_json_constraint_create_schema(tok, sc, &c));
        int64_t V = pu_tok_n_vocab(tok);
        float *lg = pu_malloc((size_t)V * sizeof(float));
        for (int k = 0; k < 3 && c; k++) {
            int32_t *ids = NULL;
            int64_t n = 0;
            pu_tok_encode_opts eo = {.add_bos = false, .parse_special = false};
            PT_OK(pu_tok_encode(tok, good[k], strlen(good[k]), &eo, &ids, &n));
            pu_json_constraint_reset(c);
            for (int64_t i = 0; i < n; i++) {
                for (int64_t v = 0; v < V; v++)
                    lg[v] = 0;
                pu_json_constraint_mask(c, lg, V);
                PT_CHECK_MSG(isfinite(lg[ids[i]]), "schema doc %d token %lld masked", k,
                             (long long)i);
                if (!isfinite(lg[ids[i]]))
                    break;
                PT_OK(pu_json_constraint_accept(c, ids[i]));
            }
            PT_CHECK(pu_json_constraint_complete(c));
            pu_free(ids);
        }
        if (c) {
            const char *pre = "{\"city\": \"x\", \"";
            int32_t *ids = NULL;
            int64_t n = 0;
            pu_tok_encode_opts eo = {.add_bos = false, .parse_special = false};
            PT_OK(pu_tok_encode(tok, pre, strlen(pre), &eo, &ids, &n));
            pu_json_constraint_reset(c);
            bool fed = true;
            for (int64_t i = 0; i < n && fed; i++)
                fed = pu_json_constraint_accept(c, ids[i]) == PU_OK;
            PT_CHECK(fed);
            for (int64_t v = 0; v < V; v++)
                lg[v] = 0;
            int64_t allowed = pu_json_constraint_mask(c, lg, V);
            int wrong = 0;
            for (int64_t v = 0; v < V; v++) {
                size_t bl;
                const uint8_t *b = pu_json_constraint_token_bytes(c, (int32_t)v, &bl);
                if (!isfinite(lg[v]) || !b)
                    continue;
                /* every allowed piece starts one of days / unit / ok / extra / 城市 */
                const char *keys[] = {"days\"", "unit\"", "ok\"", "extra\"", "城市\""};
                bool any = false;
                for (int q = 0; q < 5; q++) {
                    size_t kl = strlen(keys[q]);
                    any = any || !memcmp(keys[q], b, bl < kl ? bl : kl);
                }
                wrong += !any;
            }
            PT_CHECK_MSG(allowed > 0 && wrong == 0, "schema keys: %lld allowed, %d wrong",
                         (long long)allowed, wrong);
            pu_free(ids);
        }
        pu_free(lg);
        pu_json_constraint_destroy(c);
        pu_tok_destroy(tok);
    }
    pu_json_schema_destroy(sc);
}

/* tool-call arguments of the native protocol: a random model with the
 * InternLM2 vocabulary, generating after "<|action_start|><|plugin|>\n" */
static void check_agent_calls(const char *tok_path) {
    pu_tok *tok = NULL;
    PT_OK(pu_tok_load(tok_path, &tok));
    if (!tok)
        return;
    pu_config c;
    pu_config_defaults(&c);
    c.vocab_size = pu_tok_n_vocab(tok);
    c.hidden_size = 16;
    c.intermediate_size = 32;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.max_position_embeddings = 256;
    pu_model *m = NULL;
    PT_OK(pu_model_init_random(&c, PU_DTYPE_F32, 7, 1.0f, true, NULL, &m));
    pu_session *s = NULL;
    if (m)
        PT_OK(pu_session_create(m, 256, NULL, &s));
    const char *prompt = "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
                         "<|action_start|><|plugin|>\n";
    const char *stops[] = {"<|action_end|>", "<|im_end|>"};
    const char *tools =
        "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{"
        "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},"
        "\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7}},\"required\":[\"city\","
        "\"days\"],\"additionalProperties\":false}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"calc\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"expr\":{\"type\":\"string\",\"maxLength\":5}},"
        "\"required\":[\"expr\"]}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"python\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"code\":{\"type\":\"string\"}}}}}]";
    for (int mode = 0; mode < 3 && s; mode++) {
        pu_agent_llm llm;
        int constrained = mode > 0;
        PT_OK(pu_agent_llm_local(m, tok, s, mode == 2 ? 160 : 100, 0.0, &llm));
        if (mode == 1)
            PT_OK(pu_agent_llm_local_constrain_calls(&llm));
        if (mode == 2)
            PT_OK(pu_agent_llm_local_constrain_tools(&llm, tools));
        pu_str out = {0};
        PT_OK(llm.complete(llm.ud, prompt, stops, 2, &out));
        pu_json_sm sm;
        pu_json_sm_init(&sm, true);
        bool prefix = out.len && pu_json_sm_feed(&sm, (const uint8_t *)out.p, out.len);
        if (constrained) {
            PT_CHECK_MSG(prefix, "constrained call arguments are not a JSON prefix: %s", out.p);
            if (pu_json_sm_complete(&sm)) {
                json_t *j = json_loads(out.p, 0, NULL);
                PT_CHECK(json_is_object(j));
                json_decref(j);
            }
        } else {
            /* the test can fail: a random model does not write JSON by itself */
            PT_CHECK_MSG(!prefix, "unconstrained random output is a JSON prefix: %s", out.p);
        }
        if (mode == 2) {
            /* the call names a declared plugin (not python) and its arguments follow the
             * tool's schema */
            json_t *j = json_loads(out.p, 0, NULL);
            PT_CHECK_MSG(j != NULL, "tools-constrained call incomplete in 160 tokens: %s", out.p);
            const char *name = json_string_value(json_object_get(j, "name"));
            json_t *pa = json_object_get(j, "parameters");
            bool ok = name && json_is_object(pa) && json_object_size(j) == 2;
            if (ok && !strcmp(name, "get_weather")) {
                json_t *city = json_object_get(pa, "city"), *days = json_object_get(pa, "days");
                ok = json_object_size(pa) == 2 && json_is_string(city) &&
                     json_string_length(city) <= 8 * 4 && json_is_integer(days) &&
                     json_integer_value(days) >= 1 && json_integer_value(days) <= 7;
            } else if (ok && !strcmp(name, "calc")) {
                ok = json_is_string(json_object_get(pa, "expr")) && json_object_size(pa) == 1;
            } else {
                ok = false;
            }
            PT_CHECK_MSG(!j || ok, "tools-constrained call does not follow the tools: %s", out.p);
            json_decref(j);
        }
        printf("    json_constraint agent call (%s): %.70s%s\n",
               mode == 2 ? "tools schema" : constrained ? "constrained" : "free", out.p,
               out.len > 70 ? "..." : "");
        pu_str_free(&out);
        pu_agent_llm_local_free(&llm);
    }
    pu_session_destroy(s);
    pu_model_destroy(m);
    pu_tok_destroy(tok);
}

/* The cached mask equals the recomputed one at every step of random walks
 * (a random allowed token each step, plain JSON and a schema), and the
 * per-token cost of both is printed (never asserted). */
static void check_cache(const char *tok_path, const char *label) {
    pu_tok *tok = NULL;
    PT_OK(pu_tok_load(tok_path, &tok));
    if (!tok)
        return;
    const char *sj = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
                     "\"n\":{\"type\":\"integer\"},\"c\":{\"enum\":[\"red\",\"green\"]}},"
                     "\"required\":[\"name\"]}";
    pu_json_schema *sc = NULL;
    PT_OK(pu_json_schema_parse(sj, strlen(sj), &sc));
    int64_t V = pu_tok_n_vocab(tok) + 3; /* rows past the tokenizer's are masked too */
    float *a = pu_malloc((size_t)V * sizeof(float)), *b = pu_malloc((size_t)V * sizeof(float));
    double t_c = 0, t_u = 0;
    int64_t steps = 0, diffs = 0;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int mode = 0; mode < 2; mode++) {
        pu_json_constraint *c = NULL;
        if (mode == 0)
            PT_OK(pu_json_constraint_create(tok, true, &c));
        else
            PT_OK(pu_json_constraint_create_schema(tok, sc, &c));
        for (int walk = 0; walk < (V > 10000 ? 2 : 6) && c; walk++) {
            pu_json_constraint_reset(c);
            for (int step = 0; step < 60; step++) {
                for (int64_t v = 0; v < V; v++)
                    a[v] = b[v] = 0.5f;
                double t0 = pu_time_now();
                int64_t ka = pu_json_constraint_mask(c, a, V);
                double t1 = pu_time_now();
                int64_t kb = pu_json_constraint_mask_uncached(c, b, V);
                t_c += t1 - t0;
                t_u += pu_time_now() - t1;
                steps++;
                int64_t d = ka != kb;
                for (int64_t v = 0; v < V; v++)
                    d += isfinite(a[v]) != isfinite(b[v]);
                diffs += d;
                if (ka <= 0)
                    break;
                /* a random allowed id; prefer short string-ish tokens half the time */
                int64_t pick = -1, seen = 0;
                for (int64_t v = 0; v < V; v++)
                    if (isfinite(a[v])) {
                        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                        if ((rng >> 33) % (uint64_t)(++seen) == 0)
                            pick = v;
                    }
                if (pick < 0 || pu_json_constraint_complete(c))
                    break;
                PT_OK(pu_json_constraint_accept(c, (int32_t)pick));
            }
        }
        int64_t hits = 0, misses = 0;
        if (c)
            pu_json_constraint_cache_stats(c, &hits, &misses);
        printf("    json_constraint cache (%s, %s): %lld hits, %lld misses\n", label,
               mode ? "schema" : "json", (long long)hits, (long long)misses);
        pu_json_constraint_destroy(c);
    }
    PT_CHECK_MSG(diffs == 0, "%s: cached masks differ from recomputed ones at %lld ids", label,
                 (long long)diffs);
    printf("    json_constraint mask cost (%s, V=%lld, %lld steps): cached %.3f ms/token, "
           "recomputed %.3f ms/token\n",
           label, (long long)V, (long long)steps, 1e3 * t_c / (double)steps,
           1e3 * t_u / (double)steps);
    pu_free(a);
    pu_free(b);
    pu_json_schema_destroy(sc);
    pu_tok_destroy(tok);
}

PT_SUITE(json_constraint) {
    if (PT_TEST("json automaton: valid prefixes, invalid rejected"))
        check_sm();
    char tok[512], model[512];
    if (PT_TEST("json mask: stories260K tokenizer (byte fallback)") &&
        pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok))
        check_tokens(tok, "stories260K");
    if (PT_TEST("json mask: InternLM2 tokenizer (multi-byte pieces)") &&
        pt_shared_path("internlm2/tokenizer.model", tok, sizeof tok))
        check_tokens(tok, "internlm2");
    if (PT_TEST("mask cache = recomputed mask (stories260K tokenizer)") &&
        pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok))
        check_cache(tok, "stories260K");
    if (PT_TEST("mask cache = recomputed mask (InternLM2 tokenizer)") &&
        pt_shared_path("internlm2/tokenizer.model", tok, sizeof tok))
        check_cache(tok, "internlm2");
    if (PT_TEST("mask cache = recomputed mask (tests/golden tiny_bpe tokenizer)"))
        check_cache("tests/golden/tok/tiny_bpe.model", "tiny_bpe");
    if (PT_TEST("json schema subset: keys, types, enums, required")) {
        bool have = pt_shared() && pt_shared_path("internlm2/tokenizer.model", tok, sizeof tok);
        check_schema(have ? tok : NULL);
    }
    if (PT_TEST("json mode for native tool-call arguments (InternLM2 vocab)") &&
        pt_shared_path("internlm2/tokenizer.model", tok, sizeof tok))
        check_agent_calls(tok);
    if (PT_TEST("json mode generation (stories260K + sampler hook)") &&
        pt_shared_path("models/stories260K/stories260K.bin", model, sizeof model) &&
        pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok))
        check_generate(model, tok);
}
