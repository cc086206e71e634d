/*
 * llm.c — the agent's OpenAI-compatible endpoint adapter: POST
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
    else if (u.len < 17 || strcmp(u.p + u.len - 17, "/chat/completions"))
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
