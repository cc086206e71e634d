/*
 * server.c — the OpenAI-compatible HTTP server over libmicrohttpd (see
 * pu_serve.h for the choice of library and the threading model).
 *
 * DESIGN. libmicrohttpd runs event-driven: http_threads event loops (epoll),
 * none of which ever waits. The access handler's first call (the head is
 * complete, no body byte read) answers everything the head decides — OPTIONS,
 * GET routes, 404/405, 401 without the key, 413 by Content-Length — so an
 * unauthenticated client cannot make the server buffer a body. POST bodies
 * are collected (discarded past the limit, then 413), parsed into an engine
 * request (every field's type and range validated, 400 naming the field),
 * chat messages rendered with pu_chat (tools → "system name=<|plugin|>"
 * turn, role tool → environment) and submitted, n times for n choices (seed
 * + i), each with a pu_sq queue as the callback target. The queues of one
 * request share a one-shot pu_waker.
 *   non-streaming: if not every choice is done the handler arms the waker
 *     and suspends the connection; the engine callback resumes it, MHD calls
 *     the handler again, which answers (or parks again).
 *   streaming: a callback response (chunked transfer) whose reader turns
 *     queue contents into "data: {chunk}\n\n" server-sent events (choice
 *     index per chunk) and ends with the usage chunk and "data: [DONE]";
 *     with nothing to send it arms the waker, suspends and returns 0. A
 *     failed write ends the response; its free callback cancels what still
 *     runs, so the KV blocks return to the pool at the engine's next step.
 * A watchdog thread walks the connection records (MHD socket contexts) every
 * 100 ms: a head not complete within head_timeout_s, or a body slower than
 * head_timeout_s + bytes / body_min_rate, gets its socket shut down (MHD then
 * closes it); a client that hung up while its generation is pending (its
 * connection suspended, so MHD does not watch it) is noticed by a peek and
 * its requests are cancelled. Records are unlinked under cmu before MHD
 * closes the descriptor, so the watchdog never touches a reused fd.
 * With tools, text is streamed as content until "<|action_start|>" appears
 * (a partial prefix of it is held back); the rest is parsed at the end into
 * OpenAI tool_calls (finish_reason "tool_calls").
 * Shutdown (pu_server_stop): stop accepting (quiesce), new generations get
 * 503, running ones may finish for drain_s, the rest are cancelled; once
 * every parked connection has resumed and ended, the daemon and the engine
 * stop.
 */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "puyu/pu_agent.h"
#include "puyu/pu_chat.h"
#include "puyu/pu_json_constraint.h"
#include "puyu/pu_lora.h"
#include "serve_impl.h"

#define ACTION_START "<|action_start|>"
#define MAX_STOPS    16
#define MAX_N        16 /* choices per request (n) */
#define MAX_BIAS     300

/* latency histogram (Prometheus buckets, seconds) */
#define N_BUCKETS 12
static const double k_buckets[N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            0.5,   1,    2.5,   5,    10,  30};
typedef struct histo {
    atomic_llong b[N_BUCKETS + 1]; /* last: +Inf */
    atomic_llong sum_us, count;
} histo;

static void histo_add(histo *h, double sec) {
    int i = 0;
    while (i < N_BUCKETS && sec > k_buckets[i])
        i++;
    atomic_fetch_add(&h->b[i], 1);
    atomic_fetch_add(&h->sum_us, (long long)(sec * 1e6));
    atomic_fetch_add(&h->count, 1);
}

/* Per-connection record (MHD socket context) watched by the watchdog thread:
 * request-head and body deadlines, and clients that vanish while their
 * generation is pending (their connection is suspended, so MHD does not
 * watch the socket then). Guarded by pu_server.cmu. */
typedef enum { PH_HEAD, PH_BODY, PH_BUSY } conn_phase;
typedef struct conn_rec {
    int fd;
    conn_phase phase;
    double t0;           /* start of the phase */
    int64_t expect;      /* Content-Length of the body (-1 unknown) */
    int64_t got;         /* body bytes received */
    pu_sq *watch[MAX_N]; /* generations of the current request (references) */
    int n_watch;
    bool killed, gone;
    struct conn_rec *prev, *next;
} conn_rec;

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
    int64_t n_vocab;
    pu_serve_params p;
    atomic_bool stopping;
    atomic_llong n_total, n_active, n_disconnects, n_suspended, n_conns, n_timeouts, n_rejected;
    atomic_llong n_prompt_tokens, n_gen_tokens, n_cached_tokens, n_errors;
    atomic_llong n_by_route[16];
    histo h_latency, h_ttft;
    /* connection records + watchdog */
    pthread_mutex_t cmu;
    pthread_cond_t wcv;
    conn_rec *conns;
    pthread_t watchdog;
    bool wd_started, wd_stop;
    pu_serve_adapter *models; /* [0] = the default model; owned names/lists */
    int n_models;
};

pu_serve_params pu_serve_default_params(void) {
    pu_serve_params p = {0};
    p.host = "127.0.0.1";
    p.port = 8000;
    p.model_name = "puyu";
    p.max_body = 4 << 20;
    p.max_connections = 1024;
    p.max_conn_per_ip = 128;
    p.http_threads = 4;
    p.head_timeout_s = 10;
    p.body_min_rate = 64 << 10;
    p.max_queue = 0;
    p.drain_s = 10;
    p.engine = pu_engine_default_params();
    return p;
}

int pu_server_port(const pu_server *s) {
    return s->port;
}

/* ---------------------------------------------------------------- responses */

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
    if (status == MHD_HTTP_TOO_MANY_REQUESTS)
        MHD_add_response_header(r, "Retry-After", "1");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, "Retry-After", "5");
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
    char pbuf[96]; /* storage for a param path such as messages[3].content */
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
    case MHD_HTTP_TOO_MANY_REQUESTS: e->type = "rate_limit_error"; break;
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

/* ---------------------------------------------------------------- requests */

typedef struct gen_req {
    const char *model_id; /* the served model answering (borrowed from the server) */
    bool chat, stream, include_usage, want_lp, tools, echo;
    int n; /* choices */
    pu_str echo_text;
    int32_t bias_ids[MAX_BIAS];
    float bias_vals[MAX_BIAS];
    pu_engine_request er;
    int32_t *prompt;
    int64_t n_prompt;
    char *stops[MAX_STOPS];
    int n_stops;
    int32_t stop_id;
    pu_json_schema *schema; /* response_format json_schema (owned; the engine copies it) */
    char id[48];
} gen_req;

static void gen_req_free(gen_req *g) {
    pu_free(g->prompt);
    pu_str_free(&g->echo_text);
    for (int i = 0; i < g->n_stops; i++)
        pu_free(g->stops[i]);
    pu_json_schema_destroy(g->schema);
    g->schema = NULL;
}

/* fail() with the param "messages[i]<suffix>" kept in e->pbuf. */
static bool fail_msg(api_err *e, size_t i, const char *suffix, const char *code, const char *what) {
    snprintf(e->pbuf, sizeof e->pbuf, "messages[%zu]%s", i, suffix);
    fail(e, 400, NULL, code, "'%s' %s", e->pbuf, what);
    e->param = e->pbuf;
    return false;
}

/* Strict OpenAI shape of every message: an object with a string role;
 * content a string or an array of {"type":"text","text":STRING} parts
 * (required, except an assistant turn with tool_calls may leave it null);
 * tool_calls an array of {"function":{"name":STRING, ...}}. */
static bool check_messages(const json_t *msgs, api_err *e) {
    char what[160];
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) {
            snprintf(what, sizeof what, "must be an object, found %s", jtype(m));
            return fail_msg(e, i, "", "invalid_type", what);
        }
        json_t *role = json_object_get(m, "role");
        if (!role)
            return fail_msg(e, i, ".role", "missing_required_parameter", "is required");
        if (!json_is_string(role)) {
            snprintf(what, sizeof what, "must be a string, found %s", jtype(role));
            return fail_msg(e, i, ".role", "invalid_type", what);
        }
        json_t *calls = json_object_get(m, "tool_calls");
        bool has_calls = false;
        if (calls && !json_is_null(calls)) {
            if (!json_is_array(calls)) {
                snprintf(what, sizeof what, "must be an array of tool calls, found %s",
                         jtype(calls));
                return fail_msg(e, i, ".tool_calls", "invalid_type", what);
            }
            for (size_t k = 0; k < json_array_size(calls); k++) {
                json_t *c = json_array_get(calls, k);
                json_t *fn = json_object_get(c, "function");
                if (!json_is_object(c) || !json_is_object(fn) ||
                    !json_is_string(json_object_get(fn, "name"))) {
                    char sfx[48];
                    snprintf(sfx, sizeof sfx, ".tool_calls[%zu]", k);
                    return fail_msg(e, i, sfx, "invalid_value",
                                    "must be {\"type\": \"function\", \"function\": "
                                    "{\"name\": ..., \"arguments\": ...}}");
                }
            }
            has_calls = json_array_size(calls) > 0;
        }
        bool assistant = !strcmp(json_string_value(role), "assistant");
        json_t *c = json_object_get(m, "content");
        if (!c || json_is_null(c)) {
            if (assistant && has_calls)
                continue;
            if (!c)
                return fail_msg(e, i, ".content", "missing_required_parameter",
                                assistant ? "is required (or give tool_calls)" : "is required");
            return fail_msg(e, i, ".content", "invalid_type",
                            "must be a string or an array of text parts, found null");
        }
        if (json_is_string(c))
            continue;
        if (!json_is_array(c)) {
            snprintf(what, sizeof what, "must be a string or an array of text parts, found %s",
                     jtype(c));
            return fail_msg(e, i, ".content", "invalid_type", what);
        }
        for (size_t k = 0; k < json_array_size(c); k++) {
            json_t *part = json_array_get(c, k);
            json_t *ty = json_object_get(part, "type");
            json_t *tx = json_object_get(part, "text");
            if (!json_is_object(part) ||
                (ty && !(json_is_string(ty) && !strcmp(json_string_value(ty), "text"))) ||
                !json_is_string(tx)) {
                char sfx[48];
                snprintf(sfx, sizeof sfx, ".content[%zu]", k);
                if (json_is_object(part) && json_is_string(ty))
                    snprintf(what, sizeof what,
                             "has type \"%s\": only {\"type\": \"text\", \"text\": STRING} "
                             "parts are supported",
                             json_string_value(ty));
                else
                    snprintf(what, sizeof what,
                             "must be {\"type\": \"text\", \"text\": STRING}, found %s",
                             json_is_object(part) ? "an object without a string 'text'"
                                                  : jtype(part));
                return fail_msg(e, i, sfx, "invalid_type", what);
            }
        }
    }
    return true;
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
    if (!check_messages(msgs, e))
        return false;
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
    if (!p || json_is_null(p))
        return fail(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        pu_str_append(&g->echo_text, json_string_value(p), json_string_length(p));
        return encode_text(s, json_string_value(p), json_string_length(p), true, &g->prompt,
                           &g->n_prompt, e, "prompt");
    }
    if (json_is_array(p)) {
        size_t n = json_array_size(p);
        if (n == 0)
            return fail(e, 400, "prompt", "invalid_value", "'prompt' must not be empty");
        json_t *v0 = json_array_get(p, 0);
        if (json_is_string(v0) || json_is_array(v0))
            return fail(e, 400, "prompt", "invalid_value",
                        "'prompt' holds %zu prompts: batches are not supported, send one prompt "
                        "per request",
                        n);
        g->prompt = pu_malloc(n * sizeof(int32_t));
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(p, i);
            if (!json_is_integer(v))
                return fail(e, 400, "prompt", "invalid_type",
                            "prompt[%zu] must be a token id (an integer), found %s", i, jtype(v));
            json_int_t x = json_integer_value(v);
            if (x < 0 || x >= s->n_vocab)
                return fail(e, 400, "prompt", "invalid_value",
                            "prompt[%zu]: token id %lld is outside [0, V) (V = %lld, the "
                            "vocabulary size)",
                            i, (long long)x, (long long)s->n_vocab);
            g->prompt[i] = (int32_t)x;
        }
        g->n_prompt = (int64_t)n;
        pu_tok_decode(s->tok, g->prompt, g->n_prompt, &g->echo_text);
        pu_err_clear();
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

/* logit_bias: {"token id": bias in [-100, 100]} */
static bool parse_bias(pu_server *s, const json_t *root, gen_req *g, api_err *e) {
    json_t *b = json_object_get(root, "logit_bias");
    if (!b || json_is_null(b))
        return true;
    if (!json_is_object(b))
        return fail(e, 400, "logit_bias", "invalid_type",
                    "'logit_bias' must be an object {\"token id\": bias}, found %s", jtype(b));
    if (json_object_size(b) > MAX_BIAS)
        return fail(e, 400, "logit_bias", "invalid_value",
                    "'logit_bias' may hold at most %d entries, found %zu", MAX_BIAS,
                    json_object_size(b));
    const char *k;
    json_t *v;
    int n = 0;
    json_object_foreach((json_t *)b, k, v) {
        char *end = NULL;
        errno = 0;
        long long id = strtoll(k, &end, 10);
        if (!*k || *end || errno || id < 0 || id >= s->n_vocab)
            return fail(e, 400, "logit_bias", "invalid_value",
                        "logit_bias: key \"%s\" is not a token id in [0, %lld)", k,
                        (long long)s->n_vocab);
        if (!json_is_number(v) || !(json_number_value(v) >= -100 && json_number_value(v) <= 100))
            return fail(e, 400, "logit_bias", "invalid_value",
                        "logit_bias[\"%s\"] must be a number in [-100, 100]", k);
        g->bias_ids[n] = (int32_t)id;
        g->bias_vals[n] = (float)json_number_value(v);
        n++;
    }
    g->er.logit_bias_ids = g->bias_ids;
    g->er.logit_bias = g->bias_vals;
    g->er.n_logit_bias = n;
    return true;
}

/* Parse a JSON schema object (at param path `where`) into g->schema; an
 * unsupported or malformed part is a 400 naming where + the schema path. */
static bool parse_schema(const json_t *schema, const char *where, gen_req *g, api_err *e) {
    json_t *wrap = json_pack("{sO}", "schema", (json_t *)schema);
    char *txt = wrap ? json_dumps(wrap, JSON_COMPACT) : NULL;
    json_decref(wrap);
    pu_status st = txt ? pu_json_schema_parse(txt, strlen(txt), &g->schema)
                       : pu_err_set(PU_ERR_INVALID, "json_schema: cannot serialise");
    free(txt);
    if (st == PU_OK)
        return true;
    /* the parser names "json_schema.<path>: what" */
    const char *m = pu_err_msg();
    const char *rest = !strncmp(m, "json_schema", 11) ? m + 11 : "";
    size_t pl = strcspn(rest, ":");
    snprintf(e->pbuf, sizeof e->pbuf, "%s%.*s", where, (int)pl, rest);
    fail(e, 400, NULL, "invalid_value", "'%s': %s", e->pbuf, *rest ? rest + pl + (rest[pl] ? 2 : 0) : m);
    e->param = e->pbuf;
    return false;
}

/* response_format (OpenAI: text / json_object / json_schema) and
 * llama-server's top-level json_schema -> the engine's JSON constraint */
static bool parse_response_format(const json_t *root, gen_req *g, api_err *e) {
    json_t *rf = json_object_get(root, "response_format");
    json_t *ls = json_object_get(root, "json_schema");
    bool want = false;
    if (rf && !json_is_null(rf)) {
        if (!json_is_object(rf))
            return fail(e, 400, "response_format", "invalid_type",
                        "'response_format' must be an object, found %s", jtype(rf));
        json_t *ty = json_object_get(rf, "type");
        if (!json_is_string(ty))
            return fail(e, 400, "response_format.type",
                        ty ? "invalid_type" : "missing_required_parameter",
                        "'response_format.type' must be \"text\", \"json_object\" or "
                        "\"json_schema\", found %s",
                        ty ? jtype(ty) : "nothing");
        const char *t = json_string_value(ty);
        if (!strcmp(t, "json_object")) {
            want = true;
            /* llama-server also reads response_format.schema */
            json_t *sc = json_object_get(rf, "schema");
            if (sc && !json_is_null(sc)) {
                if (!json_is_object(sc))
                    return fail(e, 400, "response_format.schema", "invalid_type",
                                "'response_format.schema' must be an object, found %s",
                                jtype(sc));
                if (!parse_schema(sc, "response_format.schema", g, e))
                    return false;
            }
        } else if (!strcmp(t, "json_schema")) {
            want = true;
            json_t *js = json_object_get(rf, "json_schema");
            if (!json_is_object(js))
                return fail(e, 400, "response_format.json_schema",
                            js ? "invalid_type" : "missing_required_parameter",
                            "'response_format.json_schema' must be an object {\"name\", "
                            "\"schema\", \"strict\"}, found %s",
                            js ? jtype(js) : "nothing");
            json_t *nm = json_object_get(js, "name");
            if (nm && !json_is_string(nm))
                return fail(e, 400, "response_format.json_schema.name", "invalid_type",
                            "'response_format.json_schema.name' must be a string, found %s",
                            jtype(nm));
            json_t *strict = json_object_get(js, "strict");
            if (strict && !json_is_boolean(strict) && !json_is_null(strict))
                return fail(e, 400, "response_format.json_schema.strict", "invalid_type",
                            "'response_format.json_schema.strict' must be a boolean, found %s",
                            jtype(strict));
            json_t *sc = json_object_get(js, "schema");
            if (sc && !json_is_null(sc)) {
                if (!json_is_object(sc))
                    return fail(e, 400, "response_format.json_schema.schema", "invalid_type",
                                "'response_format.json_schema.schema' must be an object, "
                                "found %s",
                                jtype(sc));
                if (!parse_schema(sc, "response_format.json_schema.schema", g, e))
                    return false;
            }
        } else if (strcmp(t, "text")) {
            return fail(e, 400, "response_format.type", "invalid_value",
                        "'response_format.type' must be \"text\", \"json_object\" or "
                        "\"json_schema\", found \"%s\"",
                        t);
        }
    }
    if (ls && !json_is_null(ls)) {
        if (want)
            return fail(e, 400, "json_schema", "invalid_value",
                        "give either 'json_schema' or a JSON 'response_format', not both");
        if (!json_is_object(ls))
            return fail(e, 400, "json_schema", "invalid_type",
                        "'json_schema' must be an object, found %s", jtype(ls));
        if (!parse_schema(ls, "json_schema", g, e))
            return false;
        want = true;
    }
    g->er.json_object = want;
    g->er.json_schema = g->schema;
    return true;
}

static bool parse_gen(pu_server *s, const json_t *root, bool chat, gen_req *g, api_err *e) {
    memset(g, 0, sizeof *g);
    g->chat = chat;
    g->er.continuation = !chat; /* completion text continues the prompt */
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
        !f_int(root, "seed", INT64_MIN, INT64_MAX, &seed, e) ||
        !f_int(root, "n", 1, MAX_N, &n, e) || !f_bool(root, "stream", &g->stream, e) ||
        !f_bool(root, "ignore_eos", &g->er.ignore_eos, e))
        return false;
    g->n = (int)n;
    if (chat) {
        if (!f_bool(root, "logprobs", &lp, e) || !f_int(root, "top_logprobs", 0, 20, &top_lp, e))
            return false;
    } else {
        int64_t k = -1, best_of = n;
        if (!f_int(root, "logprobs", 0, 20, &k, e) || !f_bool(root, "echo", &g->echo, e) ||
            !f_int(root, "best_of", 1, MAX_N, &best_of, e))
            return false;
        lp = k >= 0;
        top_lp = k > 0 ? k : 0;
        if (best_of != n)
            return fail(e, 400, "best_of", "invalid_value",
                        "'best_of' = %lld with n = %lld is not supported: best_of must equal n "
                        "(no server-side ranking of candidates)",
                        (long long)best_of, (long long)n);
        json_t *sfx = json_object_get(root, "suffix");
        if (sfx && !json_is_null(sfx) && !(json_is_string(sfx) && json_string_length(sfx) == 0))
            return fail(e, 400, "suffix", "invalid_value",
                        "'suffix' (fill-in-the-middle) is not supported by this model");
        if (g->echo && lp)
            return fail(e, 400, "echo", "invalid_value",
                        "'echo' together with 'logprobs' is not supported (prompt logprobs are "
                        "not computed)");
    }
    if (!parse_bias(s, root, g, e) || !parse_response_format(root, g, e))
        return false;
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
        /* the call after <|action_start|><|plugin|> is decoded under the
         * declared tools' schema (name + parameters), unless response_format
         * already constrains the whole reply */
        if (!g->er.json_object && !g->er.json_schema &&
            pu_tok_special_id(s->tok, "<|plugin|>") >= 0 &&
            pu_tok_special_id(s->tok, "<|action_start|>") >= 0) {
            char *tj = json_dumps(json_object_get(root, "tools"), JSON_COMPACT);
            pu_status ts = pu_agent_tools_call_schema(tj, &g->schema);
            free(tj);
            if (ts != PU_OK)
                return fail(e, 400, "tools", "invalid_value", "'tools': %s", pu_err_msg());
            if (g->schema) {
                g->er.json_schema = g->schema;
                g->er.json_after = "<|action_start|><|plugin|>";
                g->er.json_end_id = s->action_end_id;
            }
        }
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

/* ---------------------------------------------------------------- accounting */

/* Metrics of a finished request (every choice done). */
static void account(pu_server *s, pu_sq *const *q, int n, double t_start) {
    int64_t gen = 0;
    for (int i = 0; i < n; i++)
        gen += q[i]->n_generated;
    atomic_fetch_add(&s->n_prompt_tokens, q[0]->n_prompt);
    atomic_fetch_add(&s->n_cached_tokens, q[0]->n_cached);
    atomic_fetch_add(&s->n_gen_tokens, gen);
    double now = pu_time_now();
    histo_add(&s->h_latency, now - t_start);
    if (q[0]->t_first > 0)
        histo_add(&s->h_ttft, q[0]->t_first - t_start);
    for (int i = 0; i < n; i++)
        if (q[i]->fin == PU_FINISH_ERROR) {
            atomic_fetch_add(&s->n_errors, 1);
            break;
        }
}

/* Drop the consumer's side of n queues: a still-running one is cancelled
 * (the client went away or the server stops) so its blocks return. */
static void release_queues(pu_server *s, pu_waker *w, pu_sq **q, int n) {
    if (w)
        pu_waker_detach(w);
    bool cancelled = false;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&q[i]->mu);
        bool done = q[i]->done;
        int64_t id = q[i]->id;
        pthread_mutex_unlock(&q[i]->mu);
        if (!done) {
            pu_engine_cancel(s->eng, id);
            cancelled = true;
        }
        pu_sq_unref(q[i]);
        q[i] = NULL;
    }
    if (cancelled)
        atomic_fetch_add(&s->n_disconnects, 1);
    pu_waker_unref(w);
    atomic_fetch_sub(&s->n_active, 1);
}

static void resume_conn(void *arg) {
    MHD_resume_connection(arg);
}

/* ---------------------------------------------------------------- streaming */

typedef struct schoice {
    pu_sq *q;
    size_t text_sent;  /* bytes of q->text already turned into chunks */
    int64_t toks_sent; /* tokens whose logprobs went out */
    size_t lp_off;
    size_t seen_text; /* q->text.len / q->n_toks at the last look: more = progress */
    int64_t seen_toks;
    bool in_action, finished;
} schoice;

typedef struct stream {
    pu_server *s;
    const char *model_id; /* the served model answering (borrowed from the server) */
    struct MHD_Connection *conn;
    pu_waker *w;
    bool chat, tools, include_usage, want_lp, suspended;
    char id[48];
    pu_str echo; /* completions' echo: the prompt text, sent first */
    pu_str out;
    size_t out_off;
    int n;
    schoice ch[MAX_N];
    int state; /* 0 first chunks pending, 1 streaming, 2 all sent */
    double t_start;
} stream;

static void chunk_open(stream *st, int idx) {
    pu_str *o = &st->out;
    pu_str_appendf(o, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", st->id,
                   st->chat ? "chat.completion.chunk" : "text_completion", (long long)time(NULL));
    pu_str_json_string(o, st->model_id, strlen(st->model_id));
    pu_str_appendf(o, ",\"choices\":[{\"index\":%d,", idx);
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

/* one content chunk of choice idx for text and tokens [ta, tb) */
static void chunk_text(stream *st, int idx, const char *text, size_t n, const pu_sq *q, int64_t ta,
                       int64_t tb) {
    pu_str *o = &st->out;
    chunk_open(st, idx);
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
        logprobs_json(st->s, o, st->chat, q, ta, tb, &st->ch[idx].lp_off);
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

/* The end of choice idx (caller holds q->mu): tool calls, the finish chunk
 * (or an error event). */
static void choice_finish(stream *st, int idx, const pu_sq *q) {
    pu_str *o = &st->out;
    schoice *c = &st->ch[idx];
    const char *fin = finish_str(q->fin);
    c->finished = true;
    if (q->fin == PU_FINISH_ERROR || q->fin == PU_FINISH_CANCELLED) {
        api_err e = {0};
        bool stopping = atomic_load(&st->s->stopping);
        fail(&e, stopping ? 503 : 500, NULL, stopping ? "server_shutting_down" : "generation_error",
             "%s",
             q->err                          ? q->err
             : stopping                      ? "the server is shutting down"
             : q->fin == PU_FINISH_CANCELLED ? "the request was cancelled"
                                             : "generation failed");
        pu_str_puts(o, "data: ");
        err_json(o, &e);
        pu_str_puts(o, "\n\n");
        return;
    }
    if (c->in_action) {
        pu_chat_reply r;
        pu_status ps = pu_chat_parse_reply(q->text.p, q->text.len, &r);
        pu_err_clear();
        if (ps == PU_OK && n_plugin_calls(&r) > 0) {
            chunk_open(st, idx);
            pu_str_puts(o, "\"delta\":{\"tool_calls\":");
            append_tool_calls(o, &r, st->id, true);
            pu_str_puts(o, "},\"logprobs\":null");
            chunk_close(st, NULL);
            fin = "tool_calls";
        } else if (q->text.len > c->text_sent) { /* not a valid call: it is content */
            chunk_text(st, idx, q->text.p + c->text_sent, q->text.len - c->text_sent, NULL, 0, 0);
        }
        pu_chat_reply_free(&r);
    }
    chunk_open(st, idx);
    pu_str_puts(o, st->chat ? "\"delta\":{},\"logprobs\":null" : "\"text\":\"\",\"logprobs\":null");
    chunk_close(st, fin);
}

/* After the last choice: the usage chunk and [DONE]. */
static void stream_end(stream *st) {
    pu_str *o = &st->out;
    bool ok = true;
    for (int i = 0; i < st->n; i++)
        ok &= st->ch[i].q->fin != PU_FINISH_ERROR && st->ch[i].q->fin != PU_FINISH_CANCELLED;
    if (st->include_usage && ok) {
        int64_t gen = 0;
        for (int i = 0; i < st->n; i++)
            gen += st->ch[i].q->n_generated;
        pu_str_appendf(
            o, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", st->id,
            st->chat ? "chat.completion.chunk" : "text_completion", (long long)time(NULL));
        pu_str_json_string(o, st->model_id, strlen(st->model_id));
        pu_str_puts(o, ",\"choices\":[],\"usage\":");
        usage_json(o, st->ch[0].q->n_prompt, gen, st->ch[0].q->n_cached);
        pu_str_puts(o, "}\n\n");
    }
    pu_str_puts(o, "data: [DONE]\n\n");
    st->state = 2;
    pu_sq *qs[MAX_N];
    for (int i = 0; i < st->n; i++)
        qs[i] = st->ch[i].q;
    account(st->s, qs, st->n, st->t_start);
}

/* Turn whatever the queues hold into SSE bytes in st->out (never waits). */
static void stream_produce(stream *st) {
    if (st->state == 0) {
        st->state = 1;
        for (int i = 0; i < st->n; i++) {
            if (st->chat) {
                chunk_open(st, i);
                pu_str_puts(&st->out, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                                      "\"logprobs\":null");
                chunk_close(st, NULL);
            } else if (st->echo.len) {
                chunk_text(st, i, st->echo.p, st->echo.len, NULL, 0, 0);
            }
        }
        return;
    }
    bool all = true;
    for (int i = 0; i < st->n; i++) {
        schoice *c = &st->ch[i];
        if (c->finished)
            continue;
        pu_sq *q = c->q;
        pthread_mutex_lock(&q->mu);
        bool done = q->done;
        size_t tl = q->text.len;
        int64_t nt = q->n_toks;
        c->seen_text = tl;
        c->seen_toks = nt;
        size_t upto = tl;
        if (!c->in_action && st->tools) {
            const char *a = tl > c->text_sent ? find_str(q->text.p + c->text_sent,
                                                         tl - c->text_sent, ACTION_START)
                                              : NULL;
            if (a) {
                upto = (size_t)(a - q->text.p);
                c->in_action = true;
            } else if (!done && tl > c->text_sent) {
                upto =
                    tl - partial_suffix(q->text.p + c->text_sent, tl - c->text_sent, ACTION_START);
            }
        } else if (c->in_action) {
            upto = c->text_sent;
        }
        bool have = upto > c->text_sent || (st->want_lp && nt > c->toks_sent && !c->in_action);
        if (have) {
            const char *tp = q->text.p ? q->text.p : "";
            chunk_text(st, i, tp + c->text_sent, upto - c->text_sent, q, c->toks_sent, nt);
            c->text_sent = upto;
            c->toks_sent = nt;
        }
        if (done && (c->in_action || c->text_sent == tl))
            choice_finish(st, i, q);
        pthread_mutex_unlock(&q->mu);
        all &= c->finished;
    }
    if (all)
        stream_end(st);
}

/* Whether a choice has news since stream_produce last looked. */
static bool stream_has_news(stream *st) {
    for (int i = 0; i < st->n; i++) {
        schoice *c = &st->ch[i];
        if (c->finished)
            continue;
        pthread_mutex_lock(&c->q->mu);
        bool news = c->q->done || c->q->text.len > c->seen_text || c->q->n_toks > c->seen_toks;
        pthread_mutex_unlock(&c->q->mu);
        if (news)
            return true;
    }
    return false;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *st = cls;
    if (st->suspended) {
        st->suspended = false;
        atomic_fetch_sub(&st->s->n_suspended, 1);
    }
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
        stream_produce(st);
        if (st->out.len)
            continue;
        /* nothing to send: park the connection until the engine has news */
        pthread_mutex_lock(&st->w->mu);
        bool news = stream_has_news(st);
        if (!news) {
            st->w->armed = true;
            st->suspended = true;
            atomic_fetch_add(&st->s->n_suspended, 1);
            MHD_suspend_connection(st->conn);
        }
        pthread_mutex_unlock(&st->w->mu);
        if (!news)
            return 0;
    }
}

static void stream_free(void *cls) {
    stream *st = cls;
    if (st->suspended) /* cannot happen (MHD frees after resuming), but keep the count right */
        atomic_fetch_sub(&st->s->n_suspended, 1);
    pu_sq *qs[MAX_N];
    for (int i = 0; i < st->n; i++)
        qs[i] = st->ch[i].q;
    release_queues(st->s, st->w, qs, st->n);
    pu_str_free(&st->out);
    pu_str_free(&st->echo);
    pu_free(st);
}

/* ---------------------------------------------------------------- routes */

enum { R_NONE, R_UI, R_HEALTH, R_METRICS, R_MODELS, R_CHAT, R_COMPL, R_TOKENIZE, R_EMBED };
static const char *const k_route_names[] = {
    "none", "ui", "health", "metrics", "models", "chat", "completions", "tokenize", "embeddings"};

/* Per-request state (MHD's con_cls). */
typedef struct conn_ctx {
    pu_server *s;
    struct MHD_Connection *c;
    conn_rec *cr;
    int route;
    bool answered; /* a response was queued on the first call */
    pu_str body;
    bool too_big;
    size_t discarded;
    double t_start;
    /* a non-streaming generation waiting for its choices */
    bool have_gen, suspended;
    gen_req g;
    pu_sq *q[MAX_N];
    int nq;
    pu_waker *w;
} conn_ctx;

static void conn_set_phase(pu_server *s, conn_rec *cr, conn_phase ph, int64_t expect) {
    if (!cr)
        return;
    pthread_mutex_lock(&s->cmu);
    cr->phase = ph;
    cr->t0 = pu_time_now();
    cr->expect = expect;
    cr->got = 0;
    pthread_mutex_unlock(&s->cmu);
}

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

static enum MHD_Result send_unavailable(struct MHD_Connection *c) {
    api_err e = {0};
    fail(&e, 503, NULL, "server_shutting_down", "the server is shutting down; retry elsewhere");
    return send_err(c, &e);
}

/* The whole non-streaming answer once every choice is done. */
static enum MHD_Result gen_answer(conn_ctx *cc) {
    pu_server *s = cc->s;
    gen_req *g = &cc->g;
    bool chat = g->chat;
    api_err e = {0};
    enum MHD_Result ret;
    bool gone = false, bad = false;
    const char *err = NULL;
    for (int i = 0; i < cc->nq; i++) {
        pu_sq *q = cc->q[i];
        if (q->fin == PU_FINISH_CANCELLED || q->fin == PU_FINISH_ERROR) {
            bad = true;
            err = err ? err : q->err;
        }
    }
    if (cc->cr) {
        pthread_mutex_lock(&s->cmu);
        gone = cc->cr->gone;
        pthread_mutex_unlock(&s->cmu);
    }
    account(s, cc->q, cc->nq, cc->t_start);
    if (bad && gone) {
        ret = MHD_NO;
    } else if (bad && atomic_load(&s->stopping)) {
        ret = send_unavailable(cc->c);
    } else if (bad) {
        fail(&e, 500, NULL, "generation_error", "%s", err ? err : "generation failed");
        ret = send_err(cc->c, &e);
    } else {
        pu_str o = {0};
        pu_str_appendf(&o, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", g->id,
                       chat ? "chat.completion" : "text_completion", (long long)time(NULL));
        pu_str_json_string(&o, g->model_id, strlen(g->model_id));
        pu_str_puts(&o, ",\"choices\":[");
        int64_t gen = 0;
        for (int i = 0; i < cc->nq; i++) {
            pu_sq *q = cc->q[i];
            gen += q->n_generated;
            pu_str_appendf(&o, "%s{\"index\":%d,", i ? "," : "", i);
            const char *fin = finish_str(q->fin);
            if (chat) {
                bool calls = false;
                char *msg = pu_serve_reply_message(q->text.p ? q->text.p : "", q->text.len,
                                                   g->tools, g->id, &calls);
                if (calls)
                    fin = "tool_calls";
                pu_str_puts(&o, "\"message\":");
                pu_str_puts(&o, msg);
                pu_free(msg);
            } else {
                pu_str t = {0};
                if (g->echo)
                    pu_str_append(&t, g->echo_text.p ? g->echo_text.p : "", g->echo_text.len);
                pu_str_append(&t, q->text.p ? q->text.p : "", q->text.len);
                pu_str_puts(&o, "\"text\":");
                pu_str_json_string(&o, t.p ? t.p : "", t.len);
                pu_str_free(&t);
            }
            pu_str_puts(&o, ",\"logprobs\":");
            size_t off = 0;
            if (g->want_lp)
                logprobs_json(s, &o, chat, q, 0, q->n_toks, &off);
            else
                pu_str_puts(&o, "null");
            pu_str_appendf(&o, ",\"finish_reason\":\"%s\"}", fin);
        }
        pu_str_puts(&o, "],\"usage\":");
        usage_json(&o, cc->q[0]->n_prompt, gen, cc->q[0]->n_cached);
        pu_str_puts(&o, "}");
        ret = send_json(cc->c, 200, &o);
    }
    release_queues(s, cc->w, cc->q, cc->nq);
    cc->w = NULL;
    cc->nq = 0;
    cc->have_gen = false;
    gen_req_free(&cc->g);
    return ret;
}

/* Answer if every choice is done, else park the connection until one is. */
static enum MHD_Result gen_continue(conn_ctx *cc) {
    pu_server *s = cc->s;
    if (cc->suspended) {
        cc->suspended = false;
        atomic_fetch_sub(&s->n_suspended, 1);
    }
    pthread_mutex_lock(&cc->w->mu);
    bool all = true;
    for (int i = 0; i < cc->nq && all; i++) {
        pthread_mutex_lock(&cc->q[i]->mu);
        all = cc->q[i]->done;
        pthread_mutex_unlock(&cc->q[i]->mu);
    }
    if (!all) {
        cc->w->armed = true;
        cc->suspended = true;
        atomic_fetch_add(&s->n_suspended, 1);
        MHD_suspend_connection(cc->c);
    }
    pthread_mutex_unlock(&cc->w->mu);
    return all ? gen_answer(cc) : MHD_YES;
}

static enum MHD_Result handle_generate(pu_server *s, conn_ctx *cc, json_t *root, bool chat) {
    struct MHD_Connection *c = cc->c;
    gen_req *g = &cc->g;
    api_err e = {0};
    if (!parse_gen(s, root, chat, g, &e)) {
        gen_req_free(g);
        return send_err(c, &e);
    }
    int64_t limit = s->p.engine.max_batch + s->p.max_queue;
    if (s->p.max_queue > 0) {
        pu_engine_stats es;
        pu_engine_get_stats(s->eng, &es);
        if (es.running + es.waiting + g->n > limit || atomic_load(&s->n_active) + 1 > limit) {
            atomic_fetch_add(&s->n_rejected, 1);
            gen_req_free(g);
            fail(&e, 429, NULL, "queue_full",
                 "the request queue is full (%lld running + waiting, --max-queue %d); retry "
                 "after a moment",
                 (long long)(es.running + es.waiting), s->p.max_queue);
            return send_err(c, &e);
        }
    }
    int64_t rid = atomic_fetch_add(&s->n_total, 1) + 1;
    snprintf(g->id, sizeof g->id, "%s-%lld", chat ? "chatcmpl" : "cmpl", (long long)rid);
    pu_waker *w = pu_waker_new(resume_conn, c);
    pu_sq *qs[MAX_N];
    int nq = 0;
    pu_status st = PU_OK;
    uint64_t seed0 = g->er.sample.seed;
    pthread_mutex_lock(&s->cmu); /* no submission slips past pu_server_stop's cancel-all */
    bool stopping = atomic_load(&s->stopping);
    for (int i = 0; i < g->n && !stopping; i++) {
        pu_sq *q = pu_sq_new();
        q->n_top = g->er.top_logprobs;
        q->waker = pu_waker_ref(w);
        g->er.sample.seed = seed0 + (uint64_t)i;
        st = pu_sq_submit(s->eng, &g->er, q);
        if (st != PU_OK) {
            pu_sq_unref(q);
            break;
        }
        qs[nq++] = q;
        if (cc->cr && cc->cr->n_watch < MAX_N)
            cc->cr->watch[cc->cr->n_watch++] = pu_sq_ref(q);
    }
    pthread_mutex_unlock(&s->cmu);
    if (stopping || st != PU_OK) {
        if (nq) {
            atomic_fetch_add(&s->n_active, 1);
            release_queues(s, w, qs, nq);
        } else {
            pu_waker_unref(w);
        }
        gen_req_free(g);
        return stopping ? send_unavailable(c) : submit_error(c, st, chat);
    }
    atomic_fetch_add(&s->n_active, 1);
    if (g->stream) {
        stream *sm = pu_calloc(1, sizeof *sm);
        sm->s = s;
        sm->model_id = g->model_id;
        sm->conn = c;
        sm->w = w;
        sm->chat = chat;
        sm->tools = g->tools;
        sm->include_usage = g->include_usage;
        sm->want_lp = g->want_lp;
        sm->t_start = cc->t_start;
        sm->n = nq;
        for (int i = 0; i < nq; i++)
            sm->ch[i].q = qs[i];
        if (g->echo)
            pu_str_append(&sm->echo, g->echo_text.p ? g->echo_text.p : "", g->echo_text.len);
        snprintf(sm->id, sizeof sm->id, "%s", g->id);
        gen_req_free(g);
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
    cc->have_gen = true;
    cc->w = w;
    cc->nq = nq;
    memcpy(cc->q, qs, (size_t)nq * sizeof qs[0]);
    return gen_continue(cc);
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
    pu_str_puts(&o, "{\"status\":");
    pu_str_puts(&o, atomic_load(&s->stopping) ? "\"stopping\"" : "\"ok\"");
    pu_str_puts(&o, ",\"model\":");
    pu_str_json_string(&o, s->model_name, strlen(s->model_name));
    pu_str_appendf(&o,
                   ",\"ctx\":%lld,\"requests_total\":%lld,\"requests_active\":%lld,"
                   "\"disconnects\":%lld,\"connections\":%lld,\"timeouts\":%lld,"
                   "\"rejected\":%lld,\"engine\":{\"running\":%lld,\"waiting\":%lld,"
                   "\"blocks_total\":%lld,\"blocks_free\":%lld,\"blocks_cached\":%lld,"
                   "\"steps\":%lld,\"tokens_generated\":%lld,\"tokens_prefilled\":%lld,"
                   "\"tokens_prefix_hit\":%lld}}",
                   (long long)pu_engine_ctx(s->eng), (long long)atomic_load(&s->n_total),
                   (long long)atomic_load(&s->n_active), (long long)atomic_load(&s->n_disconnects),
                   (long long)atomic_load(&s->n_conns), (long long)atomic_load(&s->n_timeouts),
                   (long long)atomic_load(&s->n_rejected), (long long)st.running,
                   (long long)st.waiting, (long long)st.blocks_total, (long long)st.blocks_free,
                   (long long)st.blocks_cached, (long long)st.steps, (long long)st.tokens_generated,
                   (long long)st.tokens_prefilled, (long long)st.tokens_prefix_hit);
    return send_json(c, 200, &o);
}

static void prom(pu_str *o, const char *name, const char *type, const char *help, double v) {
    pu_str_appendf(o, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void prom_histo(pu_str *o, const char *name, const char *help, histo *h) {
    pu_str_appendf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    long long cum = 0;
    for (int i = 0; i < N_BUCKETS; i++) {
        cum += atomic_load(&h->b[i]);
        pu_str_appendf(o, "%s_bucket{le=\"%g\"} %lld\n", name, k_buckets[i], cum);
    }
    cum += atomic_load(&h->b[N_BUCKETS]);
    pu_str_appendf(o, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name, cum, name,
                   (double)atomic_load(&h->sum_us) / 1e6, name, (long long)atomic_load(&h->count));
}

/* Prometheus text exposition (version 0.0.4). */
static enum MHD_Result handle_metrics(pu_server *s, struct MHD_Connection *c) {
    pu_engine_stats st;
    pu_engine_get_stats(s->eng, &st);
    pu_str o = {0};
    pu_str_puts(&o, "# HELP puyu_requests_total HTTP requests by route.\n"
                    "# TYPE puyu_requests_total counter\n");
    for (int i = 1; i <= R_EMBED; i++)
        pu_str_appendf(&o, "puyu_requests_total{route=\"%s\"} %lld\n", k_route_names[i],
                       (long long)atomic_load(&s->n_by_route[i]));
    prom(&o, "puyu_requests_active", "gauge", "Generation requests in flight.",
         (double)atomic_load(&s->n_active));
    prom(&o, "puyu_requests_rejected_total", "counter",
         "Requests refused with 429 because the queue was full (--max-queue).",
         (double)atomic_load(&s->n_rejected));
    prom(&o, "puyu_request_errors_total", "counter", "Generations that ended in an error.",
         (double)atomic_load(&s->n_errors));
    prom(&o, "puyu_disconnects_total", "counter",
         "Generations cancelled because the client went away.",
         (double)atomic_load(&s->n_disconnects));
    prom(&o, "puyu_connections", "gauge", "Open HTTP connections.",
         (double)atomic_load(&s->n_conns));
    prom(&o, "puyu_connection_timeouts_total", "counter",
         "Connections closed for missing the request-head or body deadline.",
         (double)atomic_load(&s->n_timeouts));
    prom(&o, "puyu_prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
         (double)atomic_load(&s->n_prompt_tokens));
    prom(&o, "puyu_prompt_tokens_cached_total", "counter",
         "Prompt tokens of finished requests served from the prefix cache.",
         (double)atomic_load(&s->n_cached_tokens));
    prom(&o, "puyu_generation_tokens_total", "counter", "Generated tokens of finished requests.",
         (double)atomic_load(&s->n_gen_tokens));
    prom(&o, "puyu_queue_waiting", "gauge", "Sequences waiting for a batch slot.",
         (double)st.waiting);
    prom(&o, "puyu_sequences_running", "gauge", "Sequences in the running batch.",
         (double)st.running);
    prom(&o, "puyu_kv_blocks_total", "gauge", "KV cache blocks.", (double)st.blocks_total);
    prom(&o, "puyu_kv_blocks_used", "gauge", "KV cache blocks held by sequences.",
         (double)(st.blocks_total - st.blocks_free));
    prom(&o, "puyu_kv_blocks_cached", "gauge", "Free KV blocks still holding a reusable prefix.",
         (double)st.blocks_cached);
    prom(&o, "puyu_kv_usage_ratio", "gauge", "Fraction of KV blocks in use.",
         st.blocks_total ? (double)(st.blocks_total - st.blocks_free) / (double)st.blocks_total
                         : 0.0);
    prom(&o, "puyu_engine_steps_total", "counter", "Batched forward steps.", (double)st.steps);
    prom(&o, "puyu_engine_tokens_generated_total", "counter", "Tokens sampled by the engine.",
         (double)st.tokens_generated);
    prom(&o, "puyu_engine_tokens_prefilled_total", "counter", "Prompt tokens computed.",
         (double)st.tokens_prefilled);
    prom(&o, "puyu_prefix_cache_hit_tokens_total", "counter",
         "Prompt tokens whose KV came from the shared-prefix cache.", (double)st.tokens_prefix_hit);
    prom(&o, "puyu_draft_tokens_total", "counter",
         "Tokens proposed by the draft model (speculative decoding).", (double)st.tokens_drafted);
    prom(&o, "puyu_draft_tokens_accepted_total", "counter",
         "Drafted tokens the target model accepted.", (double)st.tokens_draft_accepted);
    prom_histo(&o, "puyu_request_duration_seconds",
               "Time from the complete request to the last token.", &s->h_latency);
    prom_histo(&o, "puyu_time_to_first_token_seconds",
               "Time from the complete request to the first generated token.", &s->h_ttft);
    enum MHD_Result r =
        send_body(c, 200, "text/plain; version=0.0.4; charset=utf-8", o.p ? o.p : "", o.len);
    pu_str_free(&o);
    return r;
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

/* POST /v1/embeddings: {"input": STRING | [STRING] | [ids] | [[ids]],
 * "pooling": "mean" (default) | "last", "normalize": true (default),
 * "encoding_format": "float" (default) | "base64" (float32 little-endian)}. Each input runs one
 * prefill in its own session (on this HTTP thread, single-threaded): the final hidden states (after
 * the last RMSNorm) are mean-pooled over all tokens or the last token's is taken, then
 * L2-normalised unless normalize is false. */
static enum MHD_Result handle_embeddings(pu_server *s, struct MHD_Connection *c, json_t *root) {
    api_err e = {0};
    json_t *in = json_object_get(root, "input");
    if (!in || json_is_null(in)) {
        fail(&e, 400, "input", "missing_required_parameter", "'input' is required");
        return send_err(c, &e);
    }
    json_t *pool = json_object_get(root, "pooling");
    bool last = false, norm = true;
    if (pool && !json_is_null(pool)) {
        const char *pv = json_string_value(pool);
        if (!pv || (strcmp(pv, "mean") && strcmp(pv, "last"))) {
            fail(&e, 400, "pooling", "invalid_value", "'pooling' must be \"mean\" or \"last\"");
            return send_err(c, &e);
        }
        last = !strcmp(pv, "last");
    }
    json_t *ef = json_object_get(root, "encoding_format");
    bool b64 = false;
    if (ef && !json_is_null(ef)) {
        const char *ev = json_string_value(ef);
        if (!ev || (strcmp(ev, "float") && strcmp(ev, "base64"))) {
            fail(&e, 400, "encoding_format", "invalid_value",
                 "'encoding_format' must be \"float\" or \"base64\"");
            return send_err(c, &e);
        }
        b64 = !strcmp(ev, "base64");
    }
    const int64_t C = pu_model_config(s->m)->hidden_size;
    int64_t dims = C;
    if (!f_bool(root, "normalize", &norm, &e) || !f_int(root, "dimensions", C, C, &dims, &e))
        return send_err(c, &e);
    /* the inputs as a list */
    json_t *list = json_array();
    if (json_is_string(in) ||
        (json_is_array(in) && json_array_size(in) > 0 && json_is_integer(json_array_get(in, 0))))
        json_array_append(list, in);
    else if (json_is_array(in) && json_array_size(in) > 0)
        json_array_extend(list, in);
    if (json_array_size(list) == 0 || json_array_size(list) > 256) {
        json_decref(list);
        fail(&e, 400, "input", "invalid_value",
             "'input' must be a non-empty string, token ids, or an array of 1..256 of those");
        return send_err(c, &e);
    }
    int64_t ctx = pu_engine_ctx(s->eng), total = 0;
    pu_str o = {0};
    pu_str_puts(&o, "{\"object\":\"list\",\"data\":[");
    float *hid = NULL, *vec = pu_malloc((size_t)C * sizeof(float));
    bool ok = true;
    for (size_t k = 0; k < json_array_size(list) && ok; k++) {
        json_t *v = json_array_get(list, k);
        int32_t *ids = NULL;
        int64_t n = 0;
        char pname[40];
        snprintf(pname, sizeof pname, "input[%zu]", k);
        if (json_is_string(v)) {
            ok = encode_text(s, json_string_value(v), json_string_length(v), true, &ids, &n, &e,
                             "input");
        } else if (json_is_array(v) && json_array_size(v) > 0) {
            n = (int64_t)json_array_size(v);
            ids = pu_malloc((size_t)n * sizeof(int32_t));
            for (int64_t i = 0; i < n && ok; i++) {
                json_t *x = json_array_get(v, (size_t)i);
                if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                    json_integer_value(x) >= s->n_vocab)
                    ok = fail(&e, 400, "input", "invalid_value",
                              "%s[%lld]: must be a token id in [0, %lld)", pname, (long long)i,
                              (long long)s->n_vocab);
                else
                    ids[i] = (int32_t)json_integer_value(x);
            }
        } else {
            ok = fail(&e, 400, "input", "invalid_type",
                      "%s must be a string or a non-empty array of token ids, found %s", pname,
                      jtype(v));
        }
        if (ok && n == 0)
            ok = fail(&e, 400, "input", "invalid_value", "%s is empty", pname);
        if (ok && n > ctx)
            ok = fail(&e, 400, "input", "context_length_exceeded",
                      "%s has %lld tokens; the context is %lld tokens", pname, (long long)n,
                      (long long)ctx);
        pu_session *ss = NULL;
        if (ok) {
            hid = pu_realloc(hid, (size_t)(n * C) * sizeof(float));
            if (pu_session_create(s->m, n, NULL, &ss) != PU_OK ||
                pu_session_eval_ex(ss, ids, n, NULL, false, hid) != PU_OK)
                ok = fail(&e, 500, NULL, "embedding_error", "%s", pu_err_msg());
        }
        pu_session_destroy(ss);
        if (ok) {
            for (int64_t j = 0; j < C; j++) {
                double acc = 0;
                if (last)
                    acc = hid[(n - 1) * C + j];
                else
                    for (int64_t t = 0; t < n; t++)
                        acc += hid[t * C + j];
                vec[j] = (float)(last ? acc : acc / (double)n);
            }
            if (norm) {
                double ss2 = 0;
                for (int64_t j = 0; j < C; j++)
                    ss2 += (double)vec[j] * vec[j];
                double inv = ss2 > 0 ? 1.0 / sqrt(ss2) : 0;
                for (int64_t j = 0; j < C; j++)
                    vec[j] = (float)(vec[j] * inv);
            }
            pu_str_appendf(
                &o, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", k ? "," : "", k);
            if (b64) { /* float32 little-endian, base64 (what the OpenAI clients ask for) */
                static const char tb[] =
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                const unsigned char *by = (const unsigned char *)vec;
                size_t nb = (size_t)C * sizeof(float);
                pu_str_putc(&o, '"');
                for (size_t i = 0; i < nb; i += 3) {
                    unsigned w3 = (unsigned)by[i] << 16;
                    if (i + 1 < nb)
                        w3 |= (unsigned)by[i + 1] << 8;
                    if (i + 2 < nb)
                        w3 |= by[i + 2];
                    pu_str_putc(&o, tb[(w3 >> 18) & 63]);
                    pu_str_putc(&o, tb[(w3 >> 12) & 63]);
                    pu_str_putc(&o, i + 1 < nb ? tb[(w3 >> 6) & 63] : '=');
                    pu_str_putc(&o, i + 2 < nb ? tb[w3 & 63] : '=');
                }
                pu_str_puts(&o, "\"}");
            } else {
                pu_str_putc(&o, '[');
                for (int64_t j = 0; j < C; j++)
                    pu_str_appendf(&o, "%s%.9g", j ? "," : "", (double)vec[j]);
                pu_str_puts(&o, "]}");
            }
            total += n;
        }
        pu_free(ids);
    }
    pu_free(hid);
    pu_free(vec);
    json_decref(list);
    if (!ok) {
        pu_str_free(&o);
        return send_err(c, &e);
    }
    pu_str_puts(&o, "],\"model\":");
    pu_str_json_string(&o, s->model_name, strlen(s->model_name));
    pu_str_appendf(&o, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}",
                   (long long)total, (long long)total);
    atomic_fetch_add(&s->n_prompt_tokens, total);
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

static int route_of(const char *url) {
    static const struct {
        const char *url;
        int r;
    } t[] = {{"/", R_UI},
             {"/index.html", R_UI},
             {"/health", R_HEALTH},
             {"/metrics", R_METRICS},
             {"/v1/models", R_MODELS},
             {"/v1/chat/completions", R_CHAT},
             {"/v1/completions", R_COMPL},
             {"/v1/tokenize", R_TOKENIZE},
             {"/v1/embeddings", R_EMBED}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(url, t[i].url))
            return t[i].r;
    return R_NONE;
}

/* The first call of a request (its head is complete, no body byte read yet):
 * everything that can be answered from the head is answered now — unknown
 * route, wrong method, missing key, a Content-Length over the limit — so an
 * unauthenticated client can never make the server buffer a body. Returns
 * true when a response was queued (*ret holds MHD's result). */
static bool answer_head(pu_server *s, conn_ctx *cc, const char *url, const char *method,
                        enum MHD_Result *ret) {
    struct MHD_Connection *c = cc->c;
    api_err e = {0};
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    if (!strcmp(method, "OPTIONS")) {
        struct MHD_Response *r =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        *ret = MHD_queue_response(c, MHD_HTTP_NO_CONTENT, r);
        MHD_destroy_response(r);
        return true;
    }
    int rt = cc->route = route_of(url);
    atomic_fetch_add(&s->n_by_route[rt], 1);
    bool is_get = rt == R_UI || rt == R_HEALTH || rt == R_METRICS || rt == R_MODELS;
    if (rt == R_NONE) {
        fail(&e, 404, NULL, "unknown_url", "unknown route: %s %s", method, url);
    } else if (rt != R_UI && rt != R_HEALTH && !auth_ok(s, c)) {
        fail(&e, 401, NULL, "invalid_api_key",
             "missing or wrong API key: send the header 'Authorization: Bearer KEY'");
    } else if (is_get && !get) {
        fail(&e, 405, NULL, "method_not_allowed", "%s %s: use GET", method, url);
    } else if (!is_get && !post) {
        fail(&e, 405, NULL, "method_not_allowed", "%s %s: use POST", method, url);
    } else if (is_get) {
        switch (rt) {
        case R_UI: {
            const char *h = pu_serve_webui_html();
            *ret = send_body(c, 200, "text/html; charset=utf-8", h, strlen(h));
            return true;
        }
        case R_HEALTH: *ret = handle_health(s, c); return true;
        case R_METRICS: *ret = handle_metrics(s, c); return true;
        default: *ret = handle_models(s, c); return true;
        }
    } else {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        long long n = cl ? strtoll(cl, NULL, 10) : -1;
        conn_set_phase(s, cc->cr, PH_BODY, n);
        if (n > s->max_body) {
            cc->too_big = true;
            /* a client waiting for "100 Continue" gets the answer right away */
            if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect") || n > s->max_body * 16) {
                fail(&e, 413, NULL, "request_too_large",
                     "the request body is %s bytes; the limit is %lld", cl, (long long)s->max_body);
                *ret = send_err(c, &e);
                return true;
            }
        }
        return false; /* read the body */
    }
    *ret = send_err(c, &e);
    return true;
}

static enum MHD_Result dispatch_body(pu_server *s, conn_ctx *cc) {
    struct MHD_Connection *c = cc->c;
    api_err e = {0};
    if (atomic_load(&s->stopping))
        return send_unavailable(c);
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
    pu_str_free(&cc->body);
    enum MHD_Result ret;
    switch (cc->route) {
    case R_TOKENIZE: ret = handle_tokenize(s, c, root); break;
    case R_EMBED: ret = handle_embeddings(s, c, root); break;
    default: ret = handle_generate(s, cc, root, cc->route == R_CHAT); break;
    }
    json_decref(root);
    return ret;
}

static conn_rec *conn_rec_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
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
        cc->s = s;
        cc->c = c;
        cc->cr = conn_rec_of(c);
        cc->t_start = pu_time_now();
        conn_set_phase(s, cc->cr, PH_BUSY, -1);
        enum MHD_Result ret = MHD_YES;
        if (answer_head(s, cc, url, method, &ret)) {
            cc->answered = true;
            conn_set_phase(s, cc->cr, PH_BUSY, -1);
        }
        return ret;
    }
    if (cc->answered) { /* MHD discards the rest of the body */
        *size = 0;
        return MHD_YES;
    }
    if (cc->have_gen)
        return gen_continue(cc); /* resumed: a choice finished */
    if (*size) {
        if (cc->cr) {
            pthread_mutex_lock(&s->cmu);
            cc->cr->got += (int64_t)*size;
            pthread_mutex_unlock(&s->cmu);
        }
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
    conn_set_phase(s, cc->cr, PH_BUSY, -1);
    cc->t_start = pu_time_now();
    if (cc->too_big) {
        api_err e = {0};
        fail(&e, 413, NULL, "request_too_large", "the request body is over the limit of %lld bytes",
             (long long)s->max_body);
        return send_err(c, &e);
    }
    return dispatch_body(s, cc);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    pu_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (cc) {
        if (cc->have_gen) { /* ended before the answer: the client is gone */
            if (cc->suspended)
                atomic_fetch_sub(&s->n_suspended, 1);
            release_queues(s, cc->w, cc->q, cc->nq);
            gen_req_free(&cc->g);
        }
        pu_str_free(&cc->body);
        pu_free(cc);
        *con_cls = NULL;
    }
    conn_rec *cr = conn_rec_of(c);
    if (cr) {
        pthread_mutex_lock(&s->cmu);
        for (int i = 0; i < cr->n_watch; i++)
            pu_sq_unref(cr->watch[i]);
        cr->n_watch = 0;
        cr->phase = PH_HEAD; /* kept alive: the next head has the same deadline */
        cr->t0 = pu_time_now();
        pthread_mutex_unlock(&s->cmu);
    }
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    pu_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_rec *cr = pu_calloc(1, sizeof *cr);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cr->fd = ci ? ci->connect_fd : -1;
        cr->phase = PH_HEAD;
        cr->t0 = pu_time_now();
        pthread_mutex_lock(&s->cmu);
        cr->next = s->conns;
        if (s->conns)
            s->conns->prev = cr;
        s->conns = cr;
        pthread_mutex_unlock(&s->cmu);
        *socket_context = cr;
        atomic_fetch_add(&s->n_conns, 1);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_rec *cr = *socket_context;
        if (!cr)
            return;
        pthread_mutex_lock(&s->cmu); /* before MHD closes the fd: the watchdog never */
        if (cr->prev)                /* touches a closed (or reused) descriptor */
            cr->prev->next = cr->next;
        else
            s->conns = cr->next;
        if (cr->next)
            cr->next->prev = cr->prev;
        for (int i = 0; i < cr->n_watch; i++)
            pu_sq_unref(cr->watch[i]);
        pthread_mutex_unlock(&s->cmu);
        pu_free(cr);
        *socket_context = NULL;
        atomic_fetch_sub(&s->n_conns, 1);
    }
}

/* Collect the engine ids of watched, unfinished generations (caller holds
 * cmu); of every connection when cr is NULL. */
static int collect_ids(pu_server *s, conn_rec *only, int64_t *ids, int cap) {
    int n = 0;
    for (conn_rec *cr = only ? only : s->conns; cr && n < cap; cr = only ? NULL : cr->next)
        for (int i = 0; i < cr->n_watch && n < cap; i++) {
            pu_sq *q = cr->watch[i];
            pthread_mutex_lock(&q->mu);
            if (!q->done && q->id > 0)
                ids[n++] = q->id;
            pthread_mutex_unlock(&q->mu);
        }
    return n;
}

/* Every 100 ms: close connections past their head / body deadline; cancel
 * the generations of clients that went away. */
static void *watchdog_main(void *arg) {
    pu_server *s = arg;
    int64_t ids[1024];
    pthread_mutex_lock(&s->cmu);
    while (!s->wd_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->wcv, &s->cmu, &ts);
        if (s->wd_stop)
            break;
        double now = pu_time_now(), head = s->p.head_timeout_s;
        int n = 0;
        for (conn_rec *cr = s->conns; cr; cr = cr->next) {
            if (cr->killed || cr->fd < 0)
                continue;
            bool late = false;
            if (cr->phase == PH_HEAD && head > 0)
                late = now - cr->t0 > head;
            else if (cr->phase == PH_BODY && head > 0) {
                double bytes = (double)(cr->expect > cr->got ? cr->expect : cr->got);
                late = now - cr->t0 >
                       head + bytes / (s->p.body_min_rate > 0 ? s->p.body_min_rate : 65536.0);
            }
            if (late) {
                shutdown(cr->fd, SHUT_RDWR); /* MHD sees the hang-up and closes it */
                cr->killed = true;
                atomic_fetch_add(&s->n_timeouts, 1);
                continue;
            }
            if (cr->n_watch > 0 && !cr->gone) {
                char b;
                ssize_t k = recv(cr->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
                if (k == 0 ||
                    (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                    cr->gone = true;
                    n += collect_ids(s, cr, ids + n, (int)(sizeof ids / sizeof ids[0]) - n);
                }
            }
        }
        if (n) {
            pthread_mutex_unlock(&s->cmu); /* the engine's callbacks never take cmu, but */
            for (int i = 0; i < n; i++)    /* keep the lock order trivial */
                pu_engine_cancel(s->eng, ids[i]);
            atomic_fetch_add(&s->n_disconnects, n);
            pthread_mutex_lock(&s->cmu);
        }
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
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
    s->p = p;
    s->p.host = s->p.api_key = s->p.model_name = NULL; /* borrowed: not kept */
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
    s->n_vocab = pu_model_config(m)->vocab_size;
    pthread_mutex_init(&s->cmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wcv, &ca);
    pthread_condattr_destroy(&ca);
    pu_status st = pu_engine_create(m, tok, &p.engine, &s->eng);
    if (st != PU_OK) {
        freeaddrinfo(ai);
        pu_server_stop(s);
        return st;
    }
    s->p.engine.max_batch = p.engine.max_batch > 0 ? p.engine.max_batch : 16;
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        freeaddrinfo(ai);
        pu_server_stop(s);
        return pu_err_set(PU_ERR_IO, "serve: cannot start the watchdog thread");
    }
    s->wd_started = true;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned threads = (unsigned)(p.http_threads > 0 ? p.http_threads : 4);
    s->d = MHD_start_daemon(
        flags, (uint16_t)p.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(p.max_connections > 0 ? p.max_connections : 1024),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(p.max_conn_per_ip > 0 ? p.max_conn_per_ip : 0), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)300, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
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
    pthread_mutex_lock(&s->cmu);
    atomic_store(&s->stopping, true); /* new generations get 503 from now on */
    pthread_mutex_unlock(&s->cmu);
    if (s->d) {
        MHD_socket l = MHD_quiesce_daemon(s->d); /* no new connections */
        if (l != MHD_INVALID_SOCKET)
            close(l);
        /* drain: running requests may finish */
        double t0 = pu_time_now();
        while (atomic_load(&s->n_active) > 0 && pu_time_now() - t0 < s->p.drain_s)
            usleep(20000);
        /* then cancel the rest: their parked connections resume and end */
        int64_t ids[4096];
        pthread_mutex_lock(&s->cmu);
        int n = collect_ids(s, NULL, ids, (int)(sizeof ids / sizeof ids[0]));
        pthread_mutex_unlock(&s->cmu);
        for (int i = 0; i < n; i++)
            pu_engine_cancel(s->eng, ids[i]);
        if (n)
            pu_log_info("serve: cancelled %d running generation(s) at shutdown", n);
        /* the cancelled ones resume, send their last event / error and end
         * (a client that does not read gets 5 s) */
        t0 = pu_time_now();
        while ((atomic_load(&s->n_active) > 0 || atomic_load(&s->n_suspended) > 0) &&
               pu_time_now() - t0 < 5)
            usleep(10000);
        while (atomic_load(&s->n_suspended) > 0 && pu_time_now() - t0 < 15)
            usleep(10000);
        usleep(50000); /* let the last bytes leave the socket buffers */
    }
    if (s->wd_started) {
        pthread_mutex_lock(&s->cmu);
        s->wd_stop = true;
        pthread_cond_broadcast(&s->wcv);
        pthread_mutex_unlock(&s->cmu);
        pthread_join(s->watchdog, NULL);
    }
    if (s->d)
        MHD_stop_daemon(s->d);
    if (s->eng)
        pu_engine_destroy(s->eng);
    pthread_mutex_destroy(&s->cmu);
    pthread_cond_destroy(&s->wcv);
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
