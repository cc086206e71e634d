/*
 * server.c — the OpenAI-compatible HTTP server over libmicrohttpd (see
 * pu_serve.h for the choice of library and the threading model).
 *
 * DESIGN. libmicrohttpd runs one thread per connection. The access handler
 * collects the body (discarding it past the limit, then 413), checks the
 * route, method and bearer token, parses the JSON into an engine request
 * (validating every field's type and range, 400 naming the field), renders
 * chat messages with pu_chat (tools → "system name=<|plugin|>" turn, role
 * tool → environment) and submits to the engine with a pu_sq queue as the
 * callback target.
 *   non-streaming: the connection thread waits on the queue (100 ms ticks,
 *     peeking at the socket each tick so a vanished client cancels the
 *     request at once) and answers with one JSON body.
 *   streaming: a callback response (chunked transfer) whose reader turns
 *     queue contents into "data: {chunk}\n\n" server-sent events and ends
 *     with "data: [DONE]". A failed write ends the response; its free
 *     callback cancels the request if it is still running, so its KV
 *     blocks return to the pool at the engine's next step.
 * With tools, text is streamed as content until "<|action_start|>" appears
 * (a partial prefix of it is held back); the rest is parsed at the end into
 * OpenAI tool_calls (finish_reason "tool_calls").
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "puyu/pu_chat.h"
#include "puyu/pu_lora.h"
#include "serve_impl.h"

#define ACTION_START "<|action_start|>"
#define MAX_STOPS    16

struct pu_server {
    struct MHD_Daemon *d;
    pu_engine *eng;
    const pu_model *m;
    const pu_tok *tok;
    char *api_key, *model_name;
    int64_t max_body;
    int port;
    int64_t created;
    int32_t action_end_id;
    atomic_bool stopping;
    atomic_llong n_total, n_active, n_disconnects;
    pu_serve_adapter *models; /* [0] = the default model; owned names/lists */
    int n_models;
};

pu_serve_params pu_serve_default_params(void) {
    pu_serve_params p = {0};
    p.host = "127.0.0.1";
    p.port = 8000;
    p.model_name = "puyu";
    p.max_body = 4 << 20;
    p.max_connections = 256;
    p.engine = pu_engine_default_params();
    return p;
}

int pu_server_port(const pu_server *s) {
    return s->port;
}

/* ---------------------------------------------------------------- responses */

typedef struct conn_ctx {
    pu_str body;
    bool too_big;
    size_t discarded;
} conn_ctx;

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, const char *ctype,
                                 const char *body, size_t len) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, "Allow", "GET, POST, OPTIONS");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, pu_str *body) {
    enum MHD_Result r = send_body(c, status, "application/json", body->p ? body->p : "", body->len);
    pu_str_free(body);
    return r;
}

/* An API error: HTTP status, OpenAI error type, offending param and code. */
typedef struct api_err {
    unsigned status;
    const char *type;
    const char *param;
    const char *code;
    char msg[600];
} api_err;

static bool fail(api_err *e, unsigned status, const char *param, const char *code, const char *fmt,
                 ...) PU_PRINTF(5, 6);
static bool fail(api_err *e, unsigned status, const char *param, const char *code, const char *fmt,
                 ...) {
    e->status = status;
    e->param = param;
    e->code = code;
    switch (status) {
    case MHD_HTTP_UNAUTHORIZED: e->type = "authentication_error"; break;
    case MHD_HTTP_NOT_FOUND: e->type = "not_found_error"; break;
    case MHD_HTTP_INTERNAL_SERVER_ERROR:
    case MHD_HTTP_SERVICE_UNAVAILABLE: e->type = "server_error"; break;
    default: e->type = "invalid_request_error"; break;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

static void err_json(pu_str *o, const api_err *e) {
    pu_str_puts(o, "{\"error\":{\"message\":");
    pu_str_json_string(o, e->msg, strlen(e->msg));
    pu_str_puts(o, ",\"type\":");
    pu_str_json_string(o, e->type, strlen(e->type));
    pu_str_puts(o, ",\"param\":");
    if (e->param)
        pu_str_json_string(o, e->param, strlen(e->param));
    else
        pu_str_puts(o, "null");
    pu_str_puts(o, ",\"code\":");
    if (e->code)
        pu_str_json_string(o, e->code, strlen(e->code));
    else
        pu_str_puts(o, "null");
    pu_str_puts(o, "}}");
}

static enum MHD_Result send_err(struct MHD_Connection *c, const api_err *e) {
    pu_str o = {0};
    err_json(&o, e);
    return send_json(c, e->status, &o);
}

/* ---------------------------------------------------------------- helpers */

static const char *jtype(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Optional number field in [lo, hi]; absent or null leaves *out. */
static bool f_num(const json_t *o, const char *k, double lo, double hi, double *out, api_err *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_number(v))
        return fail(e, 400, k, "invalid_type", "'%s' must be a number, found %s", k, jtype(v));
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return fail(e, 400, k, "invalid_value", "'%s' must be in [%g, %g], found %g", k, lo, hi, x);
    *out = x;
    return true;
}

static bool f_int(const json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out,
                  api_err *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v))
        return fail(e, 400, k, "invalid_type", "'%s' must be an integer, found %s", k, jtype(v));
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return fail(e, 400, k, "invalid_value", "'%s' must be in [%lld, %lld], found %lld", k,
                    (long long)lo, (long long)hi, (long long)x);
    *out = (int64_t)x;
    return true;
}

static bool f_bool(const json_t *o, const char *k, bool *out, api_err *e) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v))
        return fail(e, 400, k, "invalid_type", "'%s' must be a boolean, found %s", k, jtype(v));
    *out = json_is_true(v);
    return true;
}

/* Text of one token for logprobs (SentencePiece: '▁' → ' ', <0xNN> → byte). */
static void token_text(const pu_tok *t, int32_t id, pu_str *out) {
    if (pu_tok_get_type(t) != PU_TOK_SPM) {
        pu_tok_decode(t, &id, 1, out);
        return;
    }
    size_t n = 0;
    const char *p = pu_tok_piece(t, id, &n);
    if (!p)
        return;
    if (pu_tok_get_attr(t, id) == PU_TOK_ATTR_BYTE && n == 6 && !memcmp(p, "<0x", 3)) {
        char hex[3] = {p[3], p[4], 0};
        pu_str_putc(out, (char)strtol(hex, NULL, 16));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (i + 3 <= n && !memcmp(p + i, "\xe2\x96\x81", 3)) {
            pu_str_putc(out, ' ');
            i += 2;
        } else {
            pu_str_putc(out, p[i]);
        }
    }
}

static bool conn_alive(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return true;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return false;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return false;
    return true;
}

/* ---------------------------------------------------------------- requests */

typedef struct gen_req {
    const char *model_id; /* the served model answering (borrowed from the server) */
    bool chat, stream, include_usage, want_lp, tools;
    pu_engine_request er;
    int32_t *prompt;
    int64_t n_prompt;
    char *stops[MAX_STOPS];
    int n_stops;
    int32_t stop_id;
    char id[48];
} gen_req;

static void gen_req_free(gen_req *g) {
    pu_free(g->prompt);
    for (int i = 0; i < g->n_stops; i++)
        pu_free(g->stops[i]);
}

/* Render OpenAI messages (+ tools) to the InternLM2 prompt text. */
static bool render_chat(pu_server *s, const json_t *root, bool gen_prompt, pu_str *text,
                        bool *with_tools, api_err *e) {
    (void)s;
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs)
        return fail(e, 400, "messages", "missing_required_parameter", "'messages' is required");
    if (!json_is_array(msgs))
        return fail(e, 400, "messages", "invalid_type", "'messages' must be an array, found %s",
                    jtype(msgs));
    if (json_array_size(msgs) == 0)
        return fail(e, 400, "messages", "invalid_value", "'messages' must not be empty");
    json_t *tools = json_object_get(root, "tools");
    json_t *choice = json_object_get(root, "tool_choice");
    json_t *use = NULL;
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return fail(e, 400, "tools", "invalid_type", "'tools' must be an array, found %s",
                        jtype(tools));
        for (size_t i = 0; i < json_array_size(tools); i++) {
            json_t *t = json_array_get(tools, i);
            json_t *fn = json_object_get(t, "function");
            if (!json_is_object(t) || (fn && !json_is_object(fn)) ||
                !json_is_string(json_object_get(fn ? fn : t, "name")))
                return fail(e, 400, "tools", "invalid_value",
                            "'tools[%zu]' must be {\"type\": \"function\", \"function\": "
                            "{\"name\": ..., \"parameters\": ...}}",
                            i);
        }
        use = json_incref(tools);
        if (choice && json_is_string(choice) && !strcmp(json_string_value(choice), "none")) {
            json_decref(use);
            use = NULL;
        } else if (choice && json_is_object(choice)) {
            const char *want =
                json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
            if (!want) {
                json_decref(use);
                return fail(e, 400, "tool_choice", "invalid_value",
                            "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                            "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            }
            json_t *f = json_array();
            for (size_t i = 0; i < json_array_size(tools); i++) {
                json_t *t = json_array_get(tools, i);
                json_t *fn = json_object_get(t, "function");
                const char *nm = json_string_value(json_object_get(fn ? fn : t, "name"));
                if (nm && !strcmp(nm, want))
                    json_array_append(f, t);
            }
            json_decref(use);
            use = f;
            if (json_array_size(f) == 0) {
                json_decref(use);
                return fail(e, 400, "tool_choice", "invalid_value",
                            "'tool_choice' names function '%s' that is not in 'tools'", want);
            }
        } else if (choice && !json_is_null(choice) && !json_is_string(choice)) {
            json_decref(use);
            return fail(e, 400, "tool_choice", "invalid_type",
                        "'tool_choice' must be a string or an object, found %s", jtype(choice));
        }
        if (use && json_array_size(use) == 0) {
            json_decref(use);
            use = NULL;
        }
    }
    char *mj = json_dumps(msgs, JSON_COMPACT);
    char *tj = use ? json_dumps(use, JSON_COMPACT) : NULL;
    json_decref(use);
    pu_chat chat;
    pu_chat_init(&chat);
    bool ok = true;
    if (!mj || pu_chat_from_json(mj, strlen(mj), &chat) != PU_OK) {
        ok = fail(e, 400, "messages", "invalid_value", "%s", mj ? pu_err_msg() : "bad messages");
    } else {
        pu_chat_render_opts ro = {0};
        ro.add_generation_prompt = gen_prompt;
        ro.tools_json = tj;
        if (pu_chat_render(&chat, &ro, text) != PU_OK)
            ok = fail(e, 400, tj ? "tools" : "messages", "invalid_value", "%s", pu_err_msg());
    }
    *with_tools = tj != NULL;
    pu_chat_free(&chat);
    free(mj);
    free(tj);
    return ok;
}

static bool encode_text(pu_server *s, const char *text, size_t len, bool add_bos, int32_t **ids,
                        int64_t *n, api_err *e, const char *param) {
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = add_bos && pu_tok_bos(s->tok) >= 0;
    if (pu_tok_encode(s->tok, text, len, &eo, ids, n) != PU_OK)
        return fail(e, 400, param, "invalid_value", "%s", pu_err_msg());
    return true;
}

/* Completions' prompt: a string, [string], token ids, or [[ids]]. */
static bool completion_prompt(pu_server *s, const json_t *root, gen_req *g, api_err *e) {
    json_t *p = json_object_get(root, "prompt");
    if (!p)
        return fail(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p))
        return encode_text(s, json_string_value(p), json_string_length(p), true, &g->prompt,
                           &g->n_prompt, e, "prompt");
    if (json_is_array(p)) {
        size_t n = json_array_size(p);
        g->prompt = pu_malloc((n ? n : 1) * sizeof(int32_t));
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(p, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > INT32_MAX)
                return fail(e, 400, "prompt", "invalid_type",
                            "'prompt' must be a string or an array of token ids; element %zu is "
                            "%s",
                            i, jtype(v));
            g->prompt[i] = (int32_t)json_integer_value(v);
        }
        g->n_prompt = (int64_t)n;
        return true;
    }
    return fail(e, 400, "prompt", "invalid_type",
                "'prompt' must be a string or an array of token ids, found %s", jtype(p));
}

/* The served model a request names: the default, or a named adapter; its
 * adapters go into the engine request. */
static bool select_model(pu_server *s, const char *name, gen_req *g, api_err *e) {
    int ix = 0;
    if (name && s->n_models > 1) {
        ix = -1;
        for (int i = 0; i < s->n_models && ix < 0; i++)
            if (!strcmp(name, s->models[i].name))
                ix = i;
        if (ix < 0)
            return fail(e, 404, "model", "model_not_found",
                        "The model '%s' does not exist (GET /v1/models lists the served ones)",
                        name);
    }
    g->model_id = s->models[ix].name;
    g->er.lora = s->models[ix].lora;
    g->er.lora_scales = s->models[ix].lora_scales;
    g->er.n_lora = s->models[ix].n_lora;
    return true;
}

static bool parse_gen(pu_server *s, const json_t *root, bool chat, gen_req *g, api_err *e) {
    memset(g, 0, sizeof *g);
    g->chat = chat;
    g->stop_id = -1;
    json_t *mv = json_object_get(root, "model");
    if (mv && !json_is_string(mv) && !json_is_null(mv))
        return fail(e, 400, "model", "invalid_type", "'model' must be a string, found %s",
                    jtype(mv));
    if (!select_model(s, json_is_string(mv) ? json_string_value(mv) : NULL, g, e))
        return false;
    if (chat) {
        pu_str text = {0};
        bool ok = render_chat(s, root, true, &text, &g->tools, e) &&
                  encode_text(s, text.p ? text.p : "", text.len, true, &g->prompt, &g->n_prompt, e,
                              "messages");
        pu_str_free(&text);
        if (!ok)
            return false;
    } else if (!completion_prompt(s, root, g, e)) {
        return false;
    }
    pu_sample_params sp = pu_sample_default_params();
    double temp = 1.0, top_p = 1.0, min_p = 0.0, pres = 0.0, freq = 0.0, rep = 1.0;
    int64_t top_k = 0, max_tokens = 0, seed = -1, n = 1, top_lp = 0;
    bool lp = false;
    if (!f_num(root, "temperature", 0, 2, &temp, e) || !f_num(root, "top_p", 0, 1, &top_p, e) ||
        !f_num(root, "min_p", 0, 1, &min_p, e) ||
        !f_num(root, "presence_penalty", -2, 2, &pres, e) ||
        !f_num(root, "frequency_penalty", -2, 2, &freq, e) ||
        !f_num(root, "repetition_penalty", 0.01, 100, &rep, e) ||
        !f_int(root, "top_k", -1, 1 << 30, &top_k, e) ||
        !f_int(root, "max_tokens", 1, INT32_MAX, &max_tokens, e) ||
        !f_int(root, "max_completion_tokens", 1, INT32_MAX, &max_tokens, e) ||
        !f_int(root, "seed", INT64_MIN, INT64_MAX, &seed, e) || !f_int(root, "n", 1, 1, &n, e) ||
        !f_bool(root, "stream", &g->stream, e) || !f_bool(root, "ignore_eos", &g->er.ignore_eos, e))
        return false;
    if (chat) {
        if (!f_bool(root, "logprobs", &lp, e) || !f_int(root, "top_logprobs", 0, 20, &top_lp, e))
            return false;
    } else {
        int64_t k = -1;
        if (!f_int(root, "logprobs", 0, 20, &k, e))
            return false;
        lp = k >= 0;
        top_lp = k > 0 ? k : 0;
    }
    if (top_lp > 0 && !lp)
        return fail(e, 400, "top_logprobs", "invalid_value",
                    "'top_logprobs' needs 'logprobs': true");
    g->want_lp = lp;
    g->er.logprobs = lp;
    g->er.top_logprobs = (int)top_lp;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return fail(e, 400, "stream_options", "invalid_type",
                        "'stream_options' must be an object, found %s", jtype(so));
        if (!f_bool(so, "include_usage", &g->include_usage, e))
            return false;
    }
    json_t *st = json_object_get(root, "stop");
    if (st && !json_is_null(st)) {
        if (json_is_string(st)) {
            if (json_string_length(st))
                g->stops[g->n_stops++] = pu_strdup(json_string_value(st));
        } else if (json_is_array(st)) {
            if (json_array_size(st) > MAX_STOPS)
                return fail(e, 400, "stop", "invalid_value",
                            "'stop' may hold at most %d strings, found %zu", MAX_STOPS,
                            json_array_size(st));
            for (size_t i = 0; i < json_array_size(st); i++) {
                json_t *v = json_array_get(st, i);
                if (!json_is_string(v))
                    return fail(e, 400, "stop", "invalid_type",
                                "'stop' must be a string or an array of strings; element %zu is "
                                "%s",
                                i, jtype(v));
                if (json_string_length(v))
                    g->stops[g->n_stops++] = pu_strdup(json_string_value(v));
            }
        } else {
            return fail(e, 400, "stop", "invalid_type",
                        "'stop' must be a string or an array of strings, found %s", jtype(st));
        }
    }
    sp.temperature = (float)temp;
    sp.top_p = (float)top_p;
    sp.top_k = top_k < 0 ? 0 : top_k;
    sp.min_p = (float)min_p;
    sp.presence_penalty = (float)pres;
    sp.frequency_penalty = (float)freq;
    sp.repetition_penalty = (float)rep;
    if (seed >= 0 || json_is_integer(json_object_get(root, "seed"))) {
        sp.seed = (uint64_t)seed;
    } else {
        uint64_t mix[2] = {(uint64_t)atomic_load(&s->n_total), (uint64_t)(pu_time_now() * 1e9)};
        sp.seed = pu_hash64(mix, sizeof mix);
    }
    g->er.prompt = g->prompt;
    g->er.n_prompt = g->n_prompt;
    g->er.max_tokens = max_tokens;
    g->er.sample = sp;
    g->er.stop_strings = (const char *const *)g->stops;
    g->er.n_stop_strings = g->n_stops;
    if (g->tools && s->action_end_id >= 0) {
        g->stop_id = s->action_end_id;
        g->er.stop_ids = &g->stop_id;
        g->er.n_stop_ids = 1;
    }
    return true;
}

/* ---------------------------------------------------------------- replies */

static void append_tool_calls(pu_str *o, const pu_chat_reply *r, const char *base,
                              bool with_index) {
    pu_str_puts(o, "[");
    int k = 0;
    for (int i = 0; i < r->n_calls; i++) {
        const pu_chat_call *c = &r->calls[i];
        if (c->kind != PU_CHAT_CALL_PLUGIN)
            continue;
        if (k)
            pu_str_putc(o, ',');
        pu_str_putc(o, '{');
        if (with_index)
            pu_str_appendf(o, "\"index\":%d,", k);
        pu_str_appendf(
            o, "\"id\":\"call_%s_%d\",\"type\":\"function\",\"function\":{\"name\":", base, k);
        pu_str_json_string(o, c->name ? c->name : "", c->name ? strlen(c->name) : 0);
        pu_str_puts(o, ",\"arguments\":");
        const char *a = c->arguments ? c->arguments : "{}";
        pu_str_json_string(o, a, strlen(a));
        pu_str_puts(o, "}}");
        k++;
    }
    pu_str_puts(o, "]");
}

static int n_plugin_calls(const pu_chat_reply *r) {
    int k = 0;
    for (int i = 0; i < r->n_calls; i++)
        k += r->calls[i].kind == PU_CHAT_CALL_PLUGIN;
    return k;
}

char *pu_serve_reply_message(const char *text, size_t len, bool with_tools,
                             const char *call_id_base, bool *has_calls) {
    pu_str o = {0};
    *has_calls = false;
    pu_chat_reply r;
    memset(&r, 0, sizeof r);
    bool calls = false;
    if (with_tools) {
        pu_status st = pu_chat_parse_reply(text, len, &r);
        calls = st == PU_OK && n_plugin_calls(&r) > 0;
        pu_err_clear();
    }
    pu_str_puts(&o, "{\"role\":\"assistant\",\"content\":");
    if (calls) {
        size_t cl = r.content ? strlen(r.content) : 0;
        while (cl && (r.content[cl - 1] == '\n' || r.content[cl - 1] == ' '))
            cl--;
        if (cl)
            pu_str_json_string(&o, r.content, cl);
        else
            pu_str_puts(&o, "null");
        pu_str_puts(&o, ",\"tool_calls\":");
        append_tool_calls(&o, &r, call_id_base ? call_id_base : "0", false);
        *has_calls = true;
    } else {
        pu_str_json_string(&o, text, len);
    }
    pu_str_puts(&o, "}");
    pu_chat_reply_free(&r);
    return pu_str_steal(&o);
}

static const char *finish_str(pu_finish_reason f) {
    return f == PU_FINISH_LENGTH ? "length" : "stop";
}

static void usage_json(pu_str *o, int64_t np, int64_t ng, int64_t nc) {
    pu_str_appendf(o,
                   "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":%lld}}",
                   (long long)np, (long long)ng, (long long)(np + ng), (long long)nc);
}

/* Logprobs of tokens [from, to) of q (caller holds q->mu) in the chat or the
 * completions format, with q->n_top alternatives per token. */
static void logprobs_json(pu_server *s, pu_str *o, bool chat, const pu_sq *q, int64_t from,
                          int64_t to, size_t *text_off) {
    const int32_t *toks = q->toks;
    const float *lps = q->lps;
    pu_str t = {0};
    if (chat) {
        pu_str_puts(o, "{\"content\":[");
        for (int64_t i = from; i < to; i++) {
            pu_str_clear(&t);
            token_text(s->tok, toks[i], &t);
            if (i > from)
                pu_str_putc(o, ',');
            pu_str_puts(o, "{\"token\":");
            pu_str_json_string(o, t.p ? t.p : "", t.len);
            pu_str_appendf(o, ",\"logprob\":%.6g,\"bytes\":[", (double)lps[i]);
            for (size_t j = 0; j < t.len; j++)
                pu_str_appendf(o, "%s%u", j ? "," : "", (unsigned)(unsigned char)t.p[j]);
            pu_str_puts(o, "],\"top_logprobs\":[");
            for (int k = 0, first = 1; k < q->n_top; k++) {
                size_t at = (size_t)i * (size_t)q->n_top + (size_t)k;
                if (q->top_ids[at] < 0)
                    continue;
                pu_str_clear(&t);
                token_text(s->tok, q->top_ids[at], &t);
                pu_str_puts(o, first ? "{\"token\":" : ",{\"token\":");
                first = 0;
                pu_str_json_string(o, t.p ? t.p : "", t.len);
                pu_str_appendf(o, ",\"logprob\":%.6g,\"bytes\":[", (double)q->top_lps[at]);
                for (size_t j = 0; j < t.len; j++)
                    pu_str_appendf(o, "%s%u", j ? "," : "", (unsigned)(unsigned char)t.p[j]);
                pu_str_puts(o, "]}");
            }
            pu_str_puts(o, "]}");
        }
        pu_str_puts(o, "]}");
    } else {
        pu_str a = {0}, b = {0}, c = {0}, d = {0};
        for (int64_t i = from; i < to; i++) {
            pu_str_clear(&t);
            token_text(s->tok, toks[i], &t);
            pu_str_putc(&a, i > from ? ',' : '[');
            pu_str_json_string(&a, t.p ? t.p : "", t.len);
            pu_str_appendf(&b, "%c%.6g", i > from ? ',' : '[', (double)lps[i]);
            pu_str_appendf(&c, "%c%zu", i > from ? ',' : '[', *text_off);
            *text_off += t.len;
            /* legacy completions: one {token text: logprob} object per position */
            pu_str_puts(&d, i > from ? ",{" : "[{");
            for (int k = 0, first = 1; k < q->n_top; k++) {
                size_t at = (size_t)i * (size_t)q->n_top + (size_t)k;
                if (q->top_ids[at] < 0)
                    continue;
                pu_str_clear(&t);
                token_text(s->tok, q->top_ids[at], &t);
                if (!first)
                    pu_str_putc(&d, ',');
                first = 0;
                pu_str_json_string(&d, t.p ? t.p : "", t.len);
                pu_str_appendf(&d, ":%.6g", (double)q->top_lps[at]);
            }
            pu_str_putc(&d, '}');
        }
        pu_str_appendf(o, "{\"tokens\":%s],\"token_logprobs\":%s],\"top_logprobs\":%s%s,"
                          "\"text_offset\":%s]}",
                       a.p ? a.p : "[", b.p ? b.p : "[", q->n_top > 0 && d.p ? d.p : "null",
                       q->n_top > 0 && d.p ? "]" : "", c.p ? c.p : "[");
        pu_str_free(&a);
        pu_str_free(&b);
        pu_str_free(&c);
        pu_str_free(&d);
    }
    pu_str_free(&t);
}

/* ---------------------------------------------------------------- streaming */

typedef struct stream {
    pu_server *s;
    const char *model_id;
    pu_sq *q;
    struct MHD_Connection *conn;
    bool chat, tools, include_usage, want_lp;
    char id[48];
    pu_str out;
    size_t out_off;
    size_t text_sent;  /* bytes of q->text already turned into chunks */
    int64_t toks_sent; /* tokens whose logprobs went out */
    size_t lp_off;
    int state; /* 0 role chunk pending, 1 streaming, 2 all sent */
    bool in_action;
} stream;

static void chunk_open(stream *st) {
    pu_str *o = &st->out;
    pu_str_appendf(o, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", st->id,
                   st->chat ? "chat.completion.chunk" : "text_completion", (long long)time(NULL));
    pu_str_json_string(o, st->model_id, strlen(st->model_id));
    pu_str_puts(o, ",\"choices\":[{\"index\":0,");
}

static void chunk_close(stream *st, const char *finish) {
    pu_str *o = &st->out;
    pu_str_puts(o, ",\"finish_reason\":");
    if (finish)
        pu_str_appendf(o, "\"%s\"", finish);
    else
        pu_str_puts(o, "null");
    pu_str_puts(o, "}]}\n\n");
}

/* one content chunk for text [a, b) and tokens [ta, tb) */
static void chunk_text(stream *st, const char *text, size_t n, const pu_sq *q, int64_t ta,
                       int64_t tb) {
    pu_str *o = &st->out;
    chunk_open(st);
    if (st->chat) {
        pu_str_puts(o, "\"delta\":{\"content\":");
        pu_str_json_string(o, text, n);
        pu_str_puts(o, "},\"logprobs\":");
    } else {
        pu_str_puts(o, "\"text\":");
        pu_str_json_string(o, text, n);
        pu_str_puts(o, ",\"logprobs\":");
    }
    if (st->want_lp && q && tb > ta)
        logprobs_json(st->s, o, st->chat, q, ta, tb, &st->lp_off);
    else
        pu_str_puts(o, "null");
    chunk_close(st, NULL);
}

static const char *find_str(const char *h, size_t n, const char *pat) {
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= n; i++)
        if (h[i] == pat[0] && !memcmp(h + i, pat, pl))
            return h + i;
    return NULL;
}

/* Length of the longest suffix of t[0..n) that is a proper prefix of pat. */
static size_t partial_suffix(const char *t, size_t n, const char *pat) {
    size_t pl = strlen(pat);
    for (size_t k = pl - 1; k > 0; k--)
        if (k <= n && !memcmp(t + n - k, pat, k))
            return k;
    return 0;
}

static void stream_finish(stream *st, const pu_sq *q) {
    pu_str *o = &st->out;
    const char *fin = finish_str(q->fin);
    if (q->fin == PU_FINISH_ERROR || q->fin == PU_FINISH_CANCELLED) {
        api_err e = {0};
        fail(&e, 500, NULL, "generation_error", "%s",
             q->err                          ? q->err
             : q->fin == PU_FINISH_CANCELLED ? "the request was cancelled"
                                             : "generation failed");
        pu_str_puts(o, "data: ");
        err_json(o, &e);
        pu_str_puts(o, "\n\n");
    } else {
        if (st->in_action) {
            pu_chat_reply r;
            pu_status ps = pu_chat_parse_reply(q->text.p, q->text.len, &r);
            pu_err_clear();
            if (ps == PU_OK && n_plugin_calls(&r) > 0) {
                chunk_open(st);
                pu_str_puts(o, "\"delta\":{\"tool_calls\":");
                append_tool_calls(o, &r, st->id, true);
                pu_str_puts(o, "},\"logprobs\":null");
                chunk_close(st, NULL);
                fin = "tool_calls";
            } else if (q->text.len > st->text_sent) { /* not a valid call: it is content */
                chunk_text(st, q->text.p + st->text_sent, q->text.len - st->text_sent, NULL,
                           0, 0);
            }
            pu_chat_reply_free(&r);
        }
        chunk_open(st);
        pu_str_puts(o, st->chat ? "\"delta\":{},\"logprobs\":null"
                                : "\"text\":\"\",\"logprobs\":null");
        chunk_close(st, fin);
        if (st->include_usage) {
            pu_str_appendf(
                o, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", st->id,
                st->chat ? "chat.completion.chunk" : "text_completion", (long long)time(NULL));
            pu_str_json_string(o, st->model_id, strlen(st->model_id));
            pu_str_puts(o, ",\"choices\":[],\"usage\":");
            usage_json(o, q->n_prompt, q->n_generated, q->n_cached);
            pu_str_puts(o, "}\n\n");
        }
    }
    pu_str_puts(o, "data: [DONE]\n\n");
    st->state = 2;
}

/* Produce the next SSE bytes into st->out. Returns false if the client left. */
static bool stream_produce(stream *st) {
    pu_sq *q = st->q;
    if (st->state == 0) {
        st->state = 1;
        if (st->chat) {
            chunk_open(st);
            pu_str_puts(&st->out, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                                  "\"logprobs\":null");
            chunk_close(st, NULL);
            return true;
        }
    }
    for (;;) {
        pthread_mutex_lock(&q->mu);
        bool done = q->done;
        size_t tl = q->text.len;
        int64_t nt = q->n_toks;
        size_t upto = tl;
        if (!st->in_action && st->tools) {
            const char *a = tl > st->text_sent ? find_str(q->text.p + st->text_sent,
                                                          tl - st->text_sent, ACTION_START)
                                               : NULL;
            if (a) {
                upto = (size_t)(a - q->text.p);
                st->in_action = true;
            } else if (!done && tl > st->text_sent) {
                upto = tl -
                       partial_suffix(q->text.p + st->text_sent, tl - st->text_sent, ACTION_START);
            }
        } else if (st->in_action) {
            upto = st->text_sent;
        }
        bool have = upto > st->text_sent || (st->want_lp && nt > st->toks_sent && !st->in_action);
        if (have) {
            const char *tp = q->text.p ? q->text.p : "";
            chunk_text(st, tp + st->text_sent, upto - st->text_sent, q, st->toks_sent, nt);
            st->text_sent = upto;
            st->toks_sent = nt;
        }
        if (done && (st->in_action || st->text_sent == tl))
            stream_finish(st, q);
        pthread_mutex_unlock(&q->mu);
        if (have || st->state == 2)
            return true;
        if (atomic_load(&st->s->stopping) || !conn_alive(st->conn))
            return false;
        pu_sq_wait(q, tl, nt, 0.1);
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *st = cls;
    for (;;) {
        if (st->out_off < st->out.len) {
            size_t n = st->out.len - st->out_off;
            if (n > max)
                n = max;
            memcpy(buf, st->out.p + st->out_off, n);
            st->out_off += n;
            return (ssize_t)n;
        }
        pu_str_clear(&st->out);
        st->out_off = 0;
        if (st->state == 2)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!stream_produce(st))
            return MHD_CONTENT_READER_END_WITH_ERROR; /* stream_free cancels */
    }
}

static void stream_free(void *cls) {
    stream *st = cls;
    pthread_mutex_lock(&st->q->mu);
    bool done = st->q->done;
    int64_t id = st->q->id;
    pthread_mutex_unlock(&st->q->mu);
    if (!done) { /* client gone (or server stopping): free its blocks now */
        pu_engine_cancel(st->s->eng, id);
        atomic_fetch_add(&st->s->n_disconnects, 1);
    }
    pu_sq_unref(st->q);
    pu_str_free(&st->out);
    atomic_fetch_sub(&st->s->n_active, 1);
    pu_free(st);
}

/* ---------------------------------------------------------------- routes */

static enum MHD_Result submit_error(struct MHD_Connection *c, pu_status st, bool chat) {
    api_err e = {0};
    const char *m = pu_err_msg();
    const char *param = chat ? "messages" : "prompt";
    if (st == PU_ERR_RANGE && strstr(m, "context"))
        fail(&e, 400, param, "context_length_exceeded", "%s", m);
    else if (st == PU_ERR_RANGE || st == PU_ERR_INVALID)
        fail(&e, 400, param, "invalid_value", "%s", m);
    else
        fail(&e, 500, NULL, NULL, "%s", m);
    return send_err(c, &e);
}

static enum MHD_Result handle_generate(pu_server *s, struct MHD_Connection *c, json_t *root,
                                       bool chat) {
    gen_req g;
    api_err e = {0};
    if (!parse_gen(s, root, chat, &g, &e)) {
        gen_req_free(&g);
        return send_err(c, &e);
    }
    int64_t rid = atomic_fetch_add(&s->n_total, 1) + 1;
    snprintf(g.id, sizeof g.id, "%s-%lld", chat ? "chatcmpl" : "cmpl", (long long)rid);
    pu_sq *q = pu_sq_new();
    q->n_top = g.er.top_logprobs;
    pu_status st = pu_sq_submit(s->eng, &g.er, q);
    if (st != PU_OK) {
        gen_req_free(&g);
        pu_sq_unref(q);
        return submit_error(c, st, chat);
    }
    atomic_fetch_add(&s->n_active, 1);
    if (g.stream) {
        stream *sm = pu_calloc(1, sizeof *sm);
        sm->s = s;
        sm->model_id = g.model_id;
        sm->q = q;
        sm->conn = c;
        sm->chat = chat;
        sm->tools = g.tools;
        sm->include_usage = g.include_usage;
        sm->want_lp = g.want_lp;
        snprintf(sm->id, sizeof sm->id, "%s", g.id);
        gen_req_free(&g);
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, sm, stream_free);
        if (!r) {
            stream_free(sm);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    /* non-streaming: wait here, watching the client */
    size_t tl = 0;
    int64_t nt = 0;
    bool gone = false;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        bool done = q->done;
        tl = q->text.len;
        nt = q->n_toks;
        pthread_mutex_unlock(&q->mu);
        if (done)
            break;
        if (atomic_load(&s->stopping) || !conn_alive(c)) {
            gone = true;
            break;
        }
        pu_sq_wait(q, tl, nt, 0.1);
    }
    enum MHD_Result ret;
    if (gone) {
        pu_engine_cancel(s->eng, q->id);
        atomic_fetch_add(&s->n_disconnects, 1);
        ret = MHD_NO;
    } else if (q->fin == PU_FINISH_ERROR || q->fin == PU_FINISH_CANCELLED) {
        fail(&e, 500, NULL, "generation_error", "%s", q->err ? q->err : "generation failed");
        ret = send_err(c, &e);
    } else {
        pu_str o = {0};
        pu_str_appendf(&o, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", g.id,
                       chat ? "chat.completion" : "text_completion", (long long)time(NULL));
        pu_str_json_string(&o, g.model_id, strlen(g.model_id));
        pu_str_puts(&o, ",\"choices\":[{\"index\":0,");
        const char *fin = finish_str(q->fin);
        if (chat) {
            bool calls = false;
            char *msg = pu_serve_reply_message(q->text.p ? q->text.p : "", q->text.len, g.tools,
                                               g.id, &calls);
            if (calls)
                fin = "tool_calls";
            pu_str_puts(&o, "\"message\":");
            pu_str_puts(&o, msg);
            pu_free(msg);
        } else {
            pu_str_puts(&o, "\"text\":");
            pu_str_json_string(&o, q->text.p ? q->text.p : "", q->text.len);
        }
        pu_str_puts(&o, ",\"logprobs\":");
        size_t off = 0;
        if (g.want_lp)
            logprobs_json(s, &o, chat, q, 0, q->n_toks, &off);
        else
            pu_str_puts(&o, "null");
        pu_str_appendf(&o, ",\"finish_reason\":\"%s\"}],\"usage\":", fin);
        usage_json(&o, q->n_prompt, q->n_generated, q->n_cached);
        pu_str_puts(&o, "}");
        ret = send_json(c, 200, &o);
    }
    gen_req_free(&g);
    pu_sq_unref(q);
    atomic_fetch_sub(&s->n_active, 1);
    return ret;
}

static enum MHD_Result handle_tokenize(pu_server *s, struct MHD_Connection *c, json_t *root) {
    api_err e = {0};
    pu_str text = {0};
    bool tools = false, add_special = true, gen_prompt = true;
    bool ok = f_bool(root, "add_special_tokens", &add_special, &e) &&
              f_bool(root, "add_generation_prompt", &gen_prompt, &e);
    if (ok) {
        json_t *t = json_object_get(root, "text");
        if (!t)
            t = json_object_get(root, "prompt");
        if (t) {
            if (!json_is_string(t))
                ok = fail(&e, 400, "text", "invalid_type", "'text' must be a string, found %s",
                          jtype(t));
            else
                pu_str_append(&text, json_string_value(t), json_string_length(t));
        } else if (json_object_get(root, "messages")) {
            ok = render_chat(s, root, gen_prompt, &text, &tools, &e);
        } else {
            ok = fail(&e, 400, "text", "missing_required_parameter",
                      "give 'text' (a string) or 'messages' (chat messages)");
        }
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    if (ok)
        ok = encode_text(s, text.p ? text.p : "", text.len, add_special, &ids, &n, &e, "text");
    if (!ok) {
        pu_str_free(&text);
        return send_err(c, &e);
    }
    pu_str o = {0};
    pu_str_puts(&o, "{\"tokens\":[");
    for (int64_t i = 0; i < n; i++)
        pu_str_appendf(&o, "%s%d", i ? "," : "", ids[i]);
    pu_str_appendf(&o, "],\"count\":%lld,\"max_model_len\":%lld,\"prompt\":", (long long)n,
                   (long long)pu_engine_ctx(s->eng));
    pu_str_json_string(&o, text.p ? text.p : "", text.len);
    pu_str_puts(&o, "}");
    pu_free(ids);
    pu_str_free(&text);
    return send_json(c, 200, &o);
}

static enum MHD_Result handle_health(pu_server *s, struct MHD_Connection *c) {
    pu_engine_stats st;
    pu_engine_get_stats(s->eng, &st);
    pu_str o = {0};
    pu_str_puts(&o, "{\"status\":\"ok\",\"model\":");
    pu_str_json_string(&o, s->model_name, strlen(s->model_name));
    pu_str_appendf(&o,
                   ",\"ctx\":%lld,\"requests_total\":%lld,\"requests_active\":%lld,"
                   "\"disconnects\":%lld,\"engine\":{\"running\":%lld,\"waiting\":%lld,"
                   "\"blocks_total\":%lld,\"blocks_free\":%lld,\"blocks_cached\":%lld,"
                   "\"steps\":%lld,\"tokens_generated\":%lld,\"tokens_prefilled\":%lld,"
                   "\"tokens_prefix_hit\":%lld}}",
                   (long long)pu_engine_ctx(s->eng), (long long)atomic_load(&s->n_total),
                   (long long)atomic_load(&s->n_active), (long long)atomic_load(&s->n_disconnects),
                   (long long)st.running, (long long)st.waiting, (long long)st.blocks_total,
                   (long long)st.blocks_free, (long long)st.blocks_cached, (long long)st.steps,
                   (long long)st.tokens_generated, (long long)st.tokens_prefilled,
                   (long long)st.tokens_prefix_hit);
    return send_json(c, 200, &o);
}

static enum MHD_Result handle_models(pu_server *s, struct MHD_Connection *c) {
    pu_str o = {0};
    pu_str_puts(&o, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < s->n_models; i++) {
        pu_str_puts(&o, i ? ",{\"id\":" : "{\"id\":");
        pu_str_json_string(&o, s->models[i].name, strlen(s->models[i].name));
        pu_str_appendf(&o,
                       ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"puyu\","
                       "\"max_model_len\":%lld",
                       (long long)s->created, (long long)pu_engine_ctx(s->eng));
        if (i) { /* LMDeploy / vLLM: adapters name their base as root/parent */
            pu_str_puts(&o, ",\"root\":");
            pu_str_json_string(&o, s->model_name, strlen(s->model_name));
            pu_str_puts(&o, ",\"parent\":");
            pu_str_json_string(&o, s->model_name, strlen(s->model_name));
        }
        pu_str_putc(&o, '}');
    }
    pu_str_puts(&o, "]}");
    return send_json(c, 200, &o);
}

static bool auth_ok(pu_server *s, struct MHD_Connection *c) {
    if (!s->api_key)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    /* constant-time compare */
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned char diff = (unsigned char)(a != b);
    for (size_t i = 0; i < a && i < b; i++)
        diff |= (unsigned char)(h[i] ^ s->api_key[i]);
    return diff == 0;
}

static enum MHD_Result route(pu_server *s, struct MHD_Connection *c, const char *url,
                             const char *method, conn_ctx *cc) {
    api_err e = {0};
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    if (!strcmp(method, "OPTIONS")) {
        struct MHD_Response *r =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_NO_CONTENT, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        if (!get) {
            fail(&e, 405, NULL, "method_not_allowed", "%s %s: use GET", method, url);
            return send_err(c, &e);
        }
        const char *h = pu_serve_webui_html();
        return send_body(c, 200, "text/html; charset=utf-8", h, strlen(h));
    }
    if (!strcmp(url, "/health")) {
        if (!get) {
            fail(&e, 405, NULL, "method_not_allowed", "%s %s: use GET", method, url);
            return send_err(c, &e);
        }
        return handle_health(s, c);
    }
    static const char *const posts[] = {"/v1/chat/completions", "/v1/completions", "/v1/tokenize"};
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(url, posts[i]))
            which = i;
    bool models = !strcmp(url, "/v1/models");
    if (which < 0 && !models) {
        fail(&e, 404, NULL, "unknown_url", "unknown route: %s %s", method, url);
        return send_err(c, &e);
    }
    if (!auth_ok(s, c)) {
        fail(&e, 401, NULL, "invalid_api_key",
             "missing or wrong API key: send the header 'Authorization: Bearer KEY'");
        return send_err(c, &e);
    }
    if (models) {
        if (!get) {
            fail(&e, 405, NULL, "method_not_allowed", "%s %s: use GET", method, url);
            return send_err(c, &e);
        }
        return handle_models(s, c);
    }
    if (!post) {
        fail(&e, 405, NULL, "method_not_allowed", "%s %s: use POST", method, url);
        return send_err(c, &e);
    }
    json_error_t je;
    json_t *root = json_loadb(cc->body.p ? cc->body.p : "", cc->body.len, 0, &je);
    if (!root) {
        fail(&e, 400, NULL, "invalid_json", "malformed JSON body: line %d column %d: %s", je.line,
             je.column, je.text);
        return send_err(c, &e);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(&e, 400, NULL, "invalid_json", "the JSON body must be an object");
        return send_err(c, &e);
    }
    enum MHD_Result ret =
        which == 2 ? handle_tokenize(s, c, root) : handle_generate(s, c, root, which == 0);
    json_decref(root);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls) {
    (void)version;
    pu_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        cc = pu_calloc(1, sizeof *cc);
        *con_cls = cc;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll(cl, NULL, 10) > s->max_body) {
            cc->too_big = true;
            /* a client waiting for "100 Continue" gets the answer right away */
            if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect") ||
                strtoll(cl, NULL, 10) > s->max_body * 16) {
                api_err e = {0};
                fail(&e, 413, NULL, "request_too_large",
                     "the request body is %s bytes; the limit is %lld", cl, (long long)s->max_body);
                return send_err(c, &e);
            }
        }
        return MHD_YES;
    }
    if (*size) {
        if (!cc->too_big && cc->body.len + *size > (size_t)s->max_body) {
            cc->too_big = true;
            cc->discarded = cc->body.len;
            pu_str_free(&cc->body);
        }
        if (cc->too_big) {
            cc->discarded += *size; /* read and drop, then answer 413 */
            if (cc->discarded > (size_t)s->max_body * 16)
                return MHD_NO;
        } else {
            pu_str_append(&cc->body, data, *size);
        }
        *size = 0;
        return MHD_YES;
    }
    if (cc->too_big) {
        api_err e = {0};
        fail(&e, 413, NULL, "request_too_large", "the request body is over the limit of %lld bytes",
             (long long)s->max_body);
        return send_err(c, &e);
    }
    return route(s, c, url, method, cc);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_ctx *cc = *con_cls;
    if (cc) {
        pu_str_free(&cc->body);
        pu_free(cc);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n')
        buf[--n] = 0;
    pu_log_debug("http: %s", buf);
}

/* ---------------------------------------------------------------- lifecycle */

static void copy_model(pu_serve_adapter *d, const char *name, const pu_lora *const *l,
                       const float *sc, int n) {
    d->name = pu_strdup(name);
    d->n_lora = n > 0 ? n : 0;
    if (d->n_lora) {
        const pu_lora **ll = pu_calloc((size_t)n, sizeof *ll);
        float *ss = pu_calloc((size_t)n, sizeof *ss);
        for (int i = 0; i < n; i++) {
            ll[i] = l[i];
            ss[i] = sc ? sc[i] : 1.0f;
        }
        d->lora = ll;
        d->lora_scales = ss;
    }
}

/* models[0] = the default (+ p->lora), then every named adapter */
static pu_status add_models(pu_server *s, const pu_serve_params *p) {
    s->models = pu_calloc((size_t)(1 + (p->n_adapters > 0 ? p->n_adapters : 0)), sizeof *s->models);
    copy_model(&s->models[s->n_models++], s->model_name, p->lora, p->lora_scales, p->n_lora);
    for (int i = 0; i < p->n_adapters; i++) {
        const pu_serve_adapter *a = &p->adapters[i];
        if (!a->name || !*a->name)
            return pu_err_set(PU_ERR_INVALID, "adapter %d has no name", i);
        for (int j = 0; j < s->n_models; j++)
            if (!strcmp(s->models[j].name, a->name))
                return pu_err_set(PU_ERR_INVALID, "model id '%s' is used twice", a->name);
        copy_model(&s->models[s->n_models++], a->name, a->lora, a->lora_scales, a->n_lora);
    }
    for (int i = 0; i < s->n_models; i++)
        for (int j = 0; j < s->models[i].n_lora; j++)
            PU_TRY(pu_lora_check(s->models[i].lora[j], pu_model_config(s->m)));
    return PU_OK;
}

pu_status pu_server_start(const pu_model *m, const pu_tok *tok, const pu_serve_params *pp,
                          pu_server **out) {
    *out = NULL;
    pu_serve_params p = pp ? *pp : pu_serve_default_params();
    if (!tok)
        return pu_err_set(PU_ERR_INVALID, "serve: a tokenizer is required (pass -t TOKENIZER)");
    if (p.port < 0 || p.port > 65535)
        return pu_err_set(PU_ERR_INVALID, "serve: port %d outside [0, 65535]", p.port);
    const char *host = p.host && *p.host ? p.host : "127.0.0.1";
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", p.port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0)
        return pu_err_set(PU_ERR_INVALID, "serve: --host '%s': %s", host, gai_strerror(gai));
    pu_server *s = pu_calloc(1, sizeof *s);
    s->m = m;
    s->tok = tok;
    s->api_key = p.api_key && *p.api_key ? pu_strdup(p.api_key) : NULL;
    s->model_name = pu_strdup(p.model_name && *p.model_name ? p.model_name : "puyu");
    if (add_models(s, &p) != PU_OK) {
        freeaddrinfo(ai);
        pu_status ast = pu_err_prefix(PU_ERR_INVALID, "serve: ");
        pu_server_stop(s);
        return ast;
    }
    s->max_body = p.max_body > 0 ? p.max_body : (4 << 20);
    s->created = (int64_t)time(NULL);
    s->action_end_id = pu_tok_special_id(tok, "<|action_end|>");
    pu_status st = pu_engine_create(m, tok, &p.engine, &s->eng);
    if (st != PU_OK) {
        freeaddrinfo(ai);
        pu_server_stop(s);
        return st;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(
        flags, (uint16_t)p.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(p.max_connections > 0 ? p.max_connections : 256),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        int err = errno;
        pu_server_stop(s);
        return pu_err_set(PU_ERR_IO, "serve: cannot listen on %s:%d: %s", host, p.port,
                          err ? strerror(err) : "libmicrohttpd failed to start");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : p.port;
    *out = s;
    return PU_OK;
}

void pu_server_stop(pu_server *s) {
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    if (s->d)
        MHD_stop_daemon(s->d); /* joins every connection thread */
    if (s->eng)
        pu_engine_destroy(s->eng);
    pu_free(s->api_key);
    pu_free(s->model_name);
    for (int i = 0; i < s->n_models; i++) {
        pu_free((char *)s->models[i].name);
        pu_free((void *)s->models[i].lora);
        pu_free((void *)s->models[i].lora_scales);
    }
    pu_free(s->models);
    pu_free(s);
}
