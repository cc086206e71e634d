/*
 * llm.c — the agent's model adapters. A local model: text completion with
 * pu_eval_generate_local. An OpenAI-compatible endpoint: POST
 * /v1/chat/completions with messages (+ tools, stop), return
 * choices[0].message. HTTP via the eval module's client (pu_eval_http_post;
 * env PUYU_API_KEY becomes "Authorization: Bearer"). Errors name the URL and
 * quote the start of a bad body.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_agent.h"
#include "puyu/pu_eval.h"
#include "puyu/pu_infer.h"
#include "puyu/pu_json_constraint.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

typedef struct api {
    char *url;
    char *model;
    double timeout_s;
    int64_t max_tokens;
    double temperature;
} api;

static pu_status api_chat(void *ud, const char *messages, const char *tools,
                          const char *const *stops, int n_stops, pu_str *reply) {
    api *p = ud;
    pu_str_clear(reply);
    json_t *body = json_object();
    json_t *ms = json_loads(messages, 0, NULL);
    if (!ms) {
        json_decref(body);
        return pu_err_set(PU_ERR_INTERNAL, "agent api: messages are not JSON");
    }
    if (p->model)
        json_object_set_new(body, "model", json_string(p->model));
    json_object_set_new(body, "messages", ms);
    if (tools) {
        json_t *tj = json_loads(tools, 0, NULL);
        if (tj)
            json_object_set_new(body, "tools", tj);
    }
    json_object_set_new(body, "max_tokens", json_integer(p->max_tokens));
    json_object_set_new(body, "temperature", json_real(p->temperature));
    if (n_stops > 0) {
        json_t *st = json_array();
        for (int i = 0; i < n_stops; i++)
            json_array_append_new(st, json_string(stops[i]));
        json_object_set_new(body, "stop", st);
    }
    char *b = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    int status = 0;
    pu_str resp = {0};
    pu_status s = pu_eval_http_post(p->url, b, strlen(b), p->timeout_s, &status, &resp);
    free(b);
    if (s != PU_OK) {
        pu_str_free(&resp);
        return s;
    }
    const char *rb = resp.p ? resp.p : "";
    if (status != 200) {
        s = pu_err_set(PU_ERR_IO, "%s: HTTP %d: %.300s", p->url, status, rb);
        pu_str_free(&resp);
        return s;
    }
    json_error_t je;
    json_t *r = json_loadb(rb, resp.len, 0, &je);
    json_t *msg = json_object_get(json_array_get(json_object_get(r, "choices"), 0), "message");
    if (!r) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: reply is not JSON (%s): %.200s", p->url, je.text, rb);
    } else if (!json_is_object(msg)) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: reply has no choices[0].message: %.200s", p->url, rb);
    } else {
        char *m = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
        pu_str_puts(reply, m);
        free(m);
    }
    json_decref(r);
    pu_str_free(&resp);
    return s;
}

pu_status pu_agent_llm_api(const pu_agent_api_cfg *cfg, pu_agent_llm *llm) {
    memset(llm, 0, sizeof *llm);
    if (!cfg->url || strncmp(cfg->url, "http://", 7))
        return pu_err_set(PU_ERR_INVALID, "--api: expected an http:// URL, got \"%s\"",
                          cfg->url ? cfg->url : "");
    api *p = pu_calloc(1, sizeof *p);
    pu_str u = {0};
    pu_str_puts(&u, cfg->url);
    while (u.len > 7 && u.p[u.len - 1] == '/')
        u.p[--u.len] = 0;
    const char *path = strchr(u.p + 7, '/');
    if (!path)
        pu_str_puts(&u, "/v1/chat/completions");
    else if (!strcmp(path, "/v1"))
        pu_str_puts(&u, "/chat/completions");
    else if (u.len >= 15 && !strcmp(u.p + u.len - 15, "/v1/completions")) {
        u.len -= 12;
        u.p[u.len] = 0;
        pu_str_puts(&u, "/chat/completions");
    } else if (u.len < 17 || strcmp(u.p + u.len - 17, "/chat/completions"))
        pu_str_puts(&u, "/chat/completions");
    p->url = pu_str_steal(&u);
    p->model = cfg->model ? pu_strdup(cfg->model) : NULL;
    p->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 600;
    p->max_tokens = cfg->max_tokens > 0 ? cfg->max_tokens : 1024;
    p->temperature = cfg->temperature;
    llm->ud = p;
    llm->chat = api_chat;
    return PU_OK;
}

void pu_agent_llm_api_free(pu_agent_llm *llm) {
    api *p = llm->ud;
    if (p) {
        pu_free(p->url);
        pu_free(p->model);
        pu_free(p);
    }
    memset(llm, 0, sizeof *llm);
}

/* ------------------------------------------------------------------------ */
/* local model                                                               */

typedef struct local_llm {
    pu_model *m;
    pu_tok *tok;
    pu_session *s;
    int64_t max_tokens;
    double temp;
    pu_json_constraint *jc; /* tool-call arguments (NULL = off) */
    pu_json_schema *calls;  /* the calls' schema (NULL = any object) */
} local_llm;

#define PLUGIN_MARK "<|action_start|><|plugin|>"

static bool ends_with_mark(const char *s, size_t n) {
    /* the mark, optionally followed by the newline before the JSON */
    size_t ml = strlen(PLUGIN_MARK);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        n--;
    return n >= ml && !memcmp(s + n - ml, PLUGIN_MARK, ml);
}

/* generation with the call constraint switched on after the plugin mark */
static pu_status gen_constrained(local_llm *l, const char *prompt, const int32_t *ids, int64_t n,
                                 const char *const *stops, int n_stops, pu_str *out) {
    int64_t V = pu_model_config(l->m)->vocab_size;
    pu_sample_params sp = pu_sample_default_params();
    sp.temperature = (float)l->temp;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.repetition_penalty = 1.0f;
    sp.seed = 1;
    pu_sampler smp;
    PU_TRY(pu_sampler_init(&smp, &sp, V));
    float *logits = pu_try_malloc((size_t)V * sizeof(float));
    if (!logits) {
        pu_sampler_deinit(&smp);
        return pu_err_set(PU_ERR_NOMEM, "agent: logits");
    }
    int32_t eos = pu_tok_eos(l->tok), im_end = pu_tok_special_id(l->tok, "<|im_end|>");
    pu_tok_stream ts;
    pu_tok_stream_init(&ts, l->tok);
    pu_str_clear(out);
    pu_str_puts(out, "");
    bool on = ends_with_mark(prompt, strlen(prompt));
    if (on)
        pu_json_constraint_reset(l->jc);
    pu_session_reset(l->s);
    pu_status st = pu_session_eval(l->s, ids, n, logits, false);
    size_t cut = (size_t)-1;
    for (int64_t k = 0; !st && k < l->max_tokens; k++) {
        smp.mask_fn = on ? pu_json_constraint_mask_hook : NULL;
        smp.mask_ud = l->jc;
        int32_t id = pu_sampler_sample(&smp, logits, NULL);
        if (id == eos || (im_end >= 0 && id == im_end))
            break;
        if (on && pu_json_constraint_complete(l->jc))
            on = false; /* the arguments are complete: id is <|action_end|> */
        else if (on)
            pu_json_constraint_accept(l->jc, id);
        size_t before = out->len;
        st = pu_tok_stream_feed(&ts, id, out);
        if (st)
            break;
        for (int j = 0; j < n_stops; j++) {
            size_t sl = strlen(stops[j]);
            size_t from = before >= sl ? before - sl + 1 : 0;
            char *hit = sl && out->len ? strstr(out->p + from, stops[j]) : NULL;
            if (hit && (size_t)(hit - out->p) < cut)
                cut = (size_t)(hit - out->p);
        }
        if (cut != (size_t)-1 || pu_session_pos(l->s) >= pu_session_n_ctx(l->s))
            break;
        if (!on && ends_with_mark(out->p, out->len)) {
            on = true;
            pu_json_constraint_reset(l->jc);
        }
        st = pu_session_eval(l->s, &id, 1, logits, false);
    }
    if (!st && cut == (size_t)-1)
        pu_tok_stream_flush(&ts, out);
    if (cut != (size_t)-1) {
        out->len = cut;
        out->p[cut] = 0;
    }
    pu_free(logits);
    pu_sampler_deinit(&smp);
    return st;
}

static pu_status local_complete(void *ud, const char *prompt, const char *const *stops, int n_stops,
                                pu_str *out) {
    local_llm *l = ud;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = pu_tok_bos(l->tok) >= 0;
    eo.parse_special = true;
    int32_t *ids = NULL;
    int64_t n = 0;
    PU_TRY(pu_tok_encode(l->tok, prompt, strlen(prompt), &eo, &ids, &n));
    /* keep the newest context when the conversation outgrows it */
    int64_t room = pu_session_n_ctx(l->s) - l->max_tokens;
    int64_t off = room > 0 && n > room ? n - room : 0;
    pu_eval_gen_params gp = {.max_tokens = l->max_tokens,
                             .stops = stops,
                             .n_stops = n_stops,
                             .temperature = (float)l->temp,
                             .seed = 1};
    pu_status st = l->jc ? gen_constrained(l, prompt, ids + off, n - off, stops, n_stops, out)
                         : pu_eval_generate_local(l->s, pu_model_config(l->m)->vocab_size, l->tok,
                                                  ids + off, n - off, &gp, out);
    pu_free(ids);
    return st;
}

pu_status pu_agent_llm_local(pu_model *m, pu_tok *tok, pu_session *s, int64_t max_tokens,
                             double temperature, pu_agent_llm *llm) {
    memset(llm, 0, sizeof *llm);
    local_llm *l = pu_calloc(1, sizeof *l);
    int64_t nc = pu_session_n_ctx(s);
    l->m = m;
    l->tok = tok;
    l->s = s;
    l->max_tokens = max_tokens > 0 && max_tokens < nc / 2 ? max_tokens : nc / 2;
    l->temp = temperature;
    llm->ud = l;
    llm->complete = local_complete;
    return PU_OK;
}

pu_status pu_agent_llm_local_constrain_calls(pu_agent_llm *llm) {
    local_llm *l = llm->ud;
    int32_t ae = pu_tok_special_id(l->tok, "<|action_end|>");
    if (ae < 0 || pu_tok_special_id(l->tok, "<|plugin|>") < 0)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "agent: the tokenizer has no <|plugin|> / <|action_end|> tokens");
    if (!l->jc) {
        PU_TRY(pu_json_constraint_create(l->tok, true, &l->jc));
        pu_json_constraint_allow_end(l->jc, ae);
    }
    return PU_OK;
}

/* {"name": const NAME, "parameters": PARAMETERS} for one tool */
static json_t *call_schema(const char *name, json_t *params) {
    return json_pack("{s:s, s:{s:{s:s}, s:O}, s:[s,s], s:b}", "type", "object", "properties",
                     "name", "const", name, "parameters", params, "required", "name",
                     "parameters", "additionalProperties", 0);
}

pu_status pu_agent_tools_call_schema(const char *tools_json, pu_json_schema **out) {
    *out = NULL;
    json_t *tools = tools_json ? json_loads(tools_json, 0, NULL) : NULL;
    json_t *alts = json_array(), *names = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *params = json_object_get(fn, "parameters");
        if (!name || !strcmp(name, "python")) /* python is the interpreter, not a plugin */
            continue;
        json_array_append_new(names, json_string(name));
        json_t *one = call_schema(name, params ? params : json_object());
        pu_json_schema *probe = NULL;
        if (pu_json_schema_from_json(one, "tool", &probe) != PU_OK) {
            /* parameters outside the supported schema set: any object */
            json_decref(one);
            json_t *obj = json_pack("{s:s}", "type", "object");
            one = call_schema(name, obj);
            json_decref(obj);
        }
        pu_json_schema_destroy(probe);
        json_array_append_new(alts, one);
    }
    pu_status st = PU_OK;
    pu_json_schema *sc = NULL;
    if (json_array_size(alts)) {
        json_t *root;
        if (json_array_size(alts) <= PU_JSON_MAX_THREADS) {
            root = json_pack("{s:O}", "anyOf", alts);
        } else {
            /* more tools than parses followed at once: the name, any arguments */
            root = json_pack("{s:s, s:{s:{s:O}, s:{s:s}}, s:[s,s], s:b}", "type", "object",
                             "properties", "name", "enum", names, "parameters", "type", "object",
                             "required", "name", "parameters", "additionalProperties", 0);
        }
        st = pu_json_schema_from_json(root, "tools", &sc);
        json_decref(root);
    }
    json_decref(alts);
    json_decref(names);
    json_decref(tools);
    if (st)
        return st;
    *out = sc;
    return PU_OK;
}

pu_status pu_agent_llm_local_constrain_tools(pu_agent_llm *llm, const char *tools_json) {
    PU_TRY(pu_agent_llm_local_constrain_calls(llm));
    local_llm *l = llm->ud;
    pu_json_schema *sc = NULL;
    pu_status st = pu_agent_tools_call_schema(tools_json, &sc);
    if (st)
        return st;
    int32_t ae = pu_tok_special_id(l->tok, "<|action_end|>");
    pu_json_constraint *jc = NULL;
    if (sc && (st = pu_json_constraint_create_schema(l->tok, sc, &jc)) != PU_OK) {
        pu_json_schema_destroy(sc);
        return st;
    }
    if (jc) {
        pu_json_constraint_allow_end(jc, ae);
        pu_json_constraint_destroy(l->jc);
        pu_json_schema_destroy(l->calls);
        l->jc = jc;
        l->calls = sc;
    }
    return PU_OK;
}

void pu_agent_llm_local_free(pu_agent_llm *llm) {
    local_llm *l = llm->ud;
    if (l) {
        pu_json_constraint_destroy(l->jc);
        pu_json_schema_destroy(l->calls);
    }
    pu_free(llm->ud);
    memset(llm, 0, sizeof *llm);
}
