/*
 * pu_serve.h — the OpenAI-compatible HTTP server (LMDeploy's api_server role)
 * and the small pieces the terminal chat shares with it.
 *
 * Owns: an HTTP/1.1 listener, the routes GET /health, GET /v1/models,
 * POST /v1/chat/completions, POST /v1/completions, POST /v1/tokenize and the
 * embedded web chat page at GET /, and one pu_engine (continuous batching)
 * that every request is submitted to.
 *
 * HTTP library: GNU libmicrohttpd (Debian libmicrohttpd-dev), in
 * thread-per-connection mode. Why: it is a maintained, widely deployed,
 * fuzzed HTTP/1.1 parser (chunked uploads, keep-alive, pipelining, timeouts)
 * that we do not have to write or prove; one thread per connection lets a
 * request block on its own per-request event queue (filled by the engine
 * callback) while slow clients only ever stall their own thread, and
 * MHD_create_response_from_callback gives chunked SSE streaming for free.
 * The engine thread never touches a socket: the callback only appends to the
 * request's queue and signals a condition variable (style.md §3.12's queue +
 * wake-up pattern). A client that goes away is noticed either by a failed
 * write or by a peek at the socket while waiting, and the request is
 * cancelled in the engine at once so its KV blocks return to the pool.
 *
 * Errors are OpenAI's error JSON {"error": {"message", "type", "param",
 * "code"}} with the HTTP status: 400 malformed JSON / wrong field types /
 * prompt longer than the context, 401 missing or wrong bearer token (when an
 * API key is set; /health and / stay open), 404 unknown route (or unknown
 * "model" when named LoRA adapters are served), 405 wrong
 * method, 413 body over the limit.
 */
#ifndef PU_SERVE_H
#define PU_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_engine.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

/* A LoRA-adapted model served next to the base (LMDeploy's --adapters):
 * requests choose it by their OpenAI "model" field. */
typedef struct pu_serve_adapter {
    const char *name;           /* model id (copied) */
    const pu_lora *const *lora; /* (n_lora) borrowed, must outlive the server */
    const float *lora_scales;   /* NULL: 1 each (copied) */
    int n_lora;
} pu_serve_adapter;

typedef struct pu_serve_params {
    const char *host;       /* address to bind (default "127.0.0.1") */
    int port;               /* 0 = pick a free port (default 8000) */
    const char *api_key;    /* NULL/"" = no auth; else "Authorization: Bearer KEY" on /v1/ */
    const char *model_name; /* id reported by /v1/models (default "puyu") */
    int64_t max_body;       /* request body limit in bytes (default 4 MiB) */
    int max_connections;    /* concurrent connections (default 256) */
    pu_engine_params engine;
    /* adapters applied to the default model (model_name) itself, e.g.
     * `--lora DIR,DIR2` (borrowed; scales NULL = 1) */
    const pu_lora *const *lora;
    const float *lora_scales;
    int n_lora;
    /* named adapters (`--lora name=DIR`): /v1/models lists them after the
     * default model; when there are any, a request naming an unknown model
     * gets 404 naming it (without them any "model" value selects the
     * default, as OpenAI clients always send one) */
    const pu_serve_adapter *adapters;
    int n_adapters;
} pu_serve_params;

pu_serve_params pu_serve_default_params(void);

typedef struct pu_server pu_server;

/* Start listening (the engine and the HTTP threads run in the background).
 * Model and tokenizer are borrowed and must outlive the server; the
 * tokenizer is required (text in, text out). */
pu_status pu_server_start(const pu_model *m, const pu_tok *tok, const pu_serve_params *p,
                          pu_server **out);
/* The bound port (the real one when started with port 0). */
int pu_server_port(const pu_server *s);
/* Stop accepting, cancel running requests, join every thread, free. */
void pu_server_stop(pu_server *s);

/* ------------------------------------------------------------------------ */
/* pieces shared with `puyu chat` and unit tests                            */

/* The embedded web chat page (one self-contained HTML document). */
const char *pu_serve_webui_html(void);

/* Convert an assistant reply as generated (special tokens verbatim) into an
 * OpenAI chat message object: {"role":"assistant","content":...,
 * "tool_calls":[...]} (tool_calls only with with_tools and when the reply
 * holds plugin calls; content null when empty then). *has_calls tells
 * whether tool_calls were produced. call_id_base names the calls
 * ("call_<base>_<i>"). Returns an owned JSON text. */
char *pu_serve_reply_message(const char *text, size_t len, bool with_tools,
                             const char *call_id_base, bool *has_calls);

#endif /* PU_SERVE_H */
