/*
 * pu_serve.h — the OpenAI-compatible HTTP server (LMDeploy's api_server role)
 * and the small pieces the terminal chat shares with it.
 *
 * Owns: an HTTP/1.1 listener, the routes GET /health, GET /metrics
 * (Prometheus), GET /v1/models, POST /v1/chat/completions, POST
 * /v1/completions, POST /v1/embeddings, POST /v1/tokenize and the
 * embedded web chat page at GET /, and one pu_engine (continuous batching)
 * that every request is submitted to.
 *
 * HTTP library: GNU libmicrohttpd (Debian libmicrohttpd-dev), event-driven
 * (epoll) with a fixed pool of http_threads event-loop threads. Why: it is a
 * maintained, widely deployed, fuzzed HTTP/1.1 parser (chunked uploads,
 * keep-alive, pipelining) that we do not have to write or prove. No thread
 * ever waits for a client or for generation: a request whose answer is not
 * ready suspends its connection (MHD_suspend_connection) and the engine
 * callback resumes it (a one-shot pu_waker); SSE streams are callback
 * responses whose reader suspends the same way when it has nothing to send.
 * So idle, trickling or slow-reading sockets cost a socket and a few KB, no
 * worker. A watchdog thread enforces a deadline on the request head and on
 * the body (minimum rate), and notices clients that vanish while their
 * connection is suspended (the request is cancelled at once so its KV blocks
 * return to the pool). Connections are limited per client address. With an
 * API key the bearer token is checked on the first callback, before a byte
 * of the body is read.
 *
 * Errors are OpenAI's error JSON {"error": {"message", "type", "param",
 * "code"}} with the HTTP status: 400 malformed JSON / wrong field types /
 * prompt longer than the context, 401 missing or wrong bearer token (when an
 * API key is set; /health and / stay open), 404 unknown route (or unknown
 * "model" when named LoRA adapters are served), 405 wrong method, 413 body
 * over the limit, 429 queue full (--max-queue) and 503 while shutting down
 * (both with Retry-After).
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
    int max_connections;    /* concurrent connections (default 1024) */
    int max_conn_per_ip;    /* concurrent connections per client address (default 128, 0 = off) */
    int http_threads;       /* event-loop threads of the HTTP side (default 4) */
    double head_timeout_s;  /* the request line + headers must arrive within this (default 10 s);
                               also the idle limit of a kept-alive connection */
    double body_min_rate;   /* body deadline: head_timeout_s + bytes / this (bytes/s, default
                               64 KiB/s) */
    int max_queue;  /* sequences waiting beyond max_batch before 429 (default 0 = no limit) */
    double drain_s; /* pu_server_stop lets running requests finish this long, then
                       cancels them (default 10 s) */
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
/* Graceful stop: stop accepting, let running requests finish for up to
 * drain_s (new requests get 503), cancel the rest (streams end with an error
 * event and [DONE]), join every thread, free. */
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
