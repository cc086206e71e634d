/*
 * cmd_serve.c — `puyu serve`: the OpenAI-compatible HTTP server.
 *
 * Parses options, loads the model and tokenizer, starts pu_server, prints
 * "listening on http://HOST:PORT" to stderr once the socket is bound (tests
 * read the port from that line when started with --port 0) and waits for
 * SIGINT/SIGTERM, then shuts down gracefully (drain, cancel, exit 0). The signals are blocked
 * before any thread starts so only sigwait() here receives them.
 */
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "common.h"
#include "opts.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_model.h"
#include "puyu/pu_serve.h"
#include "puyu/pu_tok.h"

/* "dir/name/" → "name" (the default model id) */
static const char *base_name(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    size_t len = n - b < cap - 1 ? n - b : cap - 1;
    memcpy(buf, path + b, len);
    buf[len] = 0;
    return buf;
}

/* --lora items: "name=DIR[,DIR2]" serves base + adapters as model `name`;
 * a bare "DIR[,DIR2]" applies to the default model. */
typedef struct {
    pu_lora **l; /* per item */
    int n;
    float *sc;
} lora_set;

static pu_status load_lora_opts(const pu_model *m, const pu_opt_list *items, double scale,
                                lora_set *sets, pu_serve_params *p, pu_serve_adapter *ads,
                                char **names) {
    for (int i = 0; i < items->n; i++) {
        const char *it = items->items[i], *eq = strchr(it, '=');
        const char *dirs = eq ? eq + 1 : it;
        if (eq && eq == it)
            return pu_err_set(PU_ERR_INVALID, "--lora '%s': empty model name before '='", it);
        PU_TRY(pu_lora_load_list(dirs, pu_model_config(m), &sets[i].l, &sets[i].n));
        sets[i].sc = pu_calloc((size_t)(sets[i].n + 1), sizeof(float));
        for (int j = 0; j < sets[i].n; j++)
            sets[i].sc[j] = (float)scale;
        if (!eq) {
            if (p->n_lora)
                return pu_err_set(PU_ERR_INVALID, "--lora '%s': the default model already has "
                                                  "adapters (name the others: NAME=DIR)",
                                  it);
            p->lora = (const pu_lora *const *)sets[i].l;
            p->lora_scales = sets[i].sc;
            p->n_lora = sets[i].n;
            continue;
        }
        names[i] = pu_strndup(it, (size_t)(eq - it));
        ads[p->n_adapters++] = (pu_serve_adapter){names[i], (const pu_lora *const *)sets[i].l,
                                                  sets[i].sc, sets[i].n};
    }
    p->adapters = ads;
    return PU_OK;
}

int pu_cmd_serve(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *host = "127.0.0.1", *api_key = NULL;
    const char *name = NULL, *draft_path = NULL, *kv_s = NULL;
    int64_t draft_k = 4;
    bool draft_adaptive = false;
    int64_t port = 8000, max_batch = 16, ctx = 0, kv_tokens = 0, max_body = 4 << 20;
    int64_t max_conn = 1024, per_ip = 128, http_threads = 4, max_queue = 0, ctx_slot = 0;
    double head_timeout = 10, body_rate = 64 << 10, drain = 10;
    pu_opt_list lora_items = {0};
    double lora_scale = 1.0;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL",
         "model directory, .gguf or llama2.c .bin (default: $PUYU_MODEL, else the embedded "
         "models/default.gguf)",
         0,
         0},
        {"tokenizer", 't', PU_OPT_STRING, &tok_path, "TOK",
         "tokenizer (default: the model's own, e.g. DIR/tokenizer.model)", 0, 0},
        {"host", 0, PU_OPT_STRING, &host, "HOST", "address to listen on", 0, 0},
        {"port", 'p', PU_OPT_INT, &port, "PORT", "TCP port (0 = pick a free one)", 0, 65535},
        {"api-key", 0, PU_OPT_STRING, &api_key, "KEY",
         "require 'Authorization: Bearer KEY' on /v1/ routes", 0, 0},
        {"model-name", 0, PU_OPT_STRING, &name, "NAME",
         "model id reported by /v1/models (default: the model's file name)", 0, 0},
        {"max-batch", 0, PU_OPT_INT, &max_batch, "N", "max sequences decoded together", 1, 1024},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N",
         "max tokens per sequence, prompt + output (default: the model's, capped at 4096)", 2, 1e9},
        {"kv-tokens", 0, PU_OPT_INT, &kv_tokens, "N",
         "KV cache capacity in tokens over all sequences (default: 4 x ctx)", 16, 1e12},
        {"max-body", 0, PU_OPT_INT, &max_body, "BYTES", "request body limit (413 above it)", 1024,
         1e10},
        {"max-connections", 0, PU_OPT_INT, &max_conn, "N", "concurrent connections", 1, 100000},
        {"lora", 0, PU_OPT_LIST, &lora_items, "[NAME=]DIR[,DIR2]",
         "PEFT LoRA adapters, unmerged: NAME=DIR is served as model NAME (chosen by the "
         "request's \"model\"; repeatable), a bare DIR list adapts the default model",
         0, 0},
        {"lora-scale", 0, PU_OPT_DOUBLE, &lora_scale, "S",
         "multiplier of every adapter's alpha/r", -1e6, 1e6},
        {"max-conn-per-ip", 0, PU_OPT_INT, &per_ip, "N",
         "concurrent connections per client address (0 = no limit)", 0, 100000},
        {"http-threads", 0, PU_OPT_INT, &http_threads, "N",
         "HTTP event-loop threads (epoll; no thread per connection)", 1, 256},
        {"head-timeout", 0, PU_OPT_DOUBLE, &head_timeout, "S",
         "deadline for a request's line + headers, and idle keep-alive limit (0 = none)", 0, 1e6},
        {"body-min-rate", 0, PU_OPT_DOUBLE, &body_rate, "BYTES/S",
         "body deadline = head-timeout + body bytes / this", 1, 1e12},
        {"max-queue", 0, PU_OPT_INT, &max_queue, "N",
         "sequences waiting beyond --max-batch before 429 + Retry-After (0 = no limit)", 0, 1e9},
        {"ctx-per-slot", 0, PU_OPT_INT, &ctx_slot, "N",
         "context per sequence; the KV cache then holds max-batch x N tokens (no preemption)", 2,
         1e9},
        {"draft", 0, PU_OPT_STRING, &draft_path, "MODEL",
         "speculative decoding of greedy requests with this small model (same vocabulary); "
         "output identical to the target alone",
         0, 0},
        {"draft-k", 0, PU_OPT_INT, &draft_k, "N", "tokens the draft proposes per step", 1, 8},
        {"draft-adaptive", 0, PU_OPT_FLAG, &draft_adaptive, NULL,
         "per request, adapt the draft length within 1..draft-k (+1 after all drafts were "
         "accepted, -1 after a rejection)",
         0, 0},
        {"drain", 0, PU_OPT_DOUBLE, &drain, "S",
         "on SIGTERM/SIGINT let running requests finish this long, then cancel them", 0, 1e6},
        PU_CLI_KV_OPT(kv_s),
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu serve",
        "[-m MODEL] [-t TOKENIZER] [--host 127.0.0.1] [--port 8000] [--api-key KEY] "
        "[--max-batch N] [--ctx N | --ctx-per-slot N] [--max-queue N] [--threads N] "
        "[--lora NAME=DIR ...] [--lora-scale S] [--kv-type f32|f16|q8]",
        "Serve the model over an OpenAI-compatible HTTP API: GET /health, GET /metrics\n"
        "(Prometheus), GET /v1/models, POST /v1/chat/completions (stream, tools, n, logit_bias),\n"
        "POST /v1/completions (echo), POST /v1/embeddings, POST /v1/tokenize, and a web chat\n"
        "page at /. Prints 'listening on http://HOST:PORT' to stderr when ready; on SIGINT/\n"
        "SIGTERM stops accepting, drains running requests (--drain) and exits 0."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    model = pu_cli_default_model(model);
    if (!model) {
        fprintf(stderr, "puyu serve: need -m MODEL (no $PUYU_MODEL, no models/default.gguf; see "
                        "--help)\n");
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    pu_model *m = NULL, *dm = NULL;
    pu_tok *tok = NULL;
    pu_server *srv = NULL;
    int ret = 1;
    int nl = lora_items.n;
    lora_set *sets = pu_calloc((size_t)(nl + 1), sizeof *sets);
    pu_serve_adapter *ads = pu_calloc((size_t)(nl + 1), sizeof *ads);
    char **names = pu_calloc((size_t)(nl + 1), sizeof *names);
    pu_serve_params p = pu_serve_default_params();
    if (pu_model_load(model, &m) != PU_OK)
        goto done;
    if (pu_cli_load_tokenizer(m, model, tok_path, &tok) != PU_OK)
        goto done;
    if (draft_path && pu_model_load(draft_path, &dm) != PU_OK)
        goto done;
    char nbuf[256];
    if (load_lora_opts(m, &lora_items, lora_scale, sets, &p, ads, names) != PU_OK)
        goto done;
    p.host = host;
    p.port = (int)port;
    p.api_key = api_key;
    p.model_name = name ? name : base_name(model, nbuf, sizeof nbuf);
    p.max_body = max_body;
    p.max_connections = (int)max_conn;
    p.max_conn_per_ip = (int)per_ip;
    p.http_threads = (int)http_threads;
    p.head_timeout_s = head_timeout;
    p.body_min_rate = body_rate;
    p.max_queue = (int)max_queue;
    p.drain_s = drain;
    if (ctx_slot > 0) {
        ctx = ctx_slot;
        if (!kv_tokens)
            kv_tokens = ctx_slot * max_batch;
    }
    /* every connection is a descriptor: lift the soft limit to the hard one */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max &&
        rl.rlim_cur < (rlim_t)max_conn + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    p.engine.max_batch = max_batch;
    p.engine.ctx = ctx;
    p.engine.kv_tokens = kv_tokens;
    p.engine.draft = dm;
    if (pu_cli_kv_type(kv_s, &p.engine.kv_type) != PU_OK)
        goto done;
    fprintf(stderr, "KV cache %s: %lld bytes per token (f32: %lld)\n", pu_kv_type_name(p.engine.kv_type),
                (long long)pu_kv_bytes_per_token(pu_model_config(m), p.engine.kv_type),
                (long long)pu_kv_bytes_per_token(pu_model_config(m), PU_KV_F32));
    p.engine.draft_k = (int)draft_k;
    p.engine.draft_adaptive = draft_adaptive;
    if (pu_server_start(m, tok, &p, &srv) != PU_OK)
        goto done;
    bool v6 = strchr(host, ':') != NULL;
    fprintf(stderr, "listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "",
            pu_server_port(srv));
    fflush(stderr);
    int sig = 0;
    sigwait(&set, &sig);
    pu_log_info("serve: signal %d, shutting down", sig);
    ret = 0;
done:
    if (ret)
        fprintf(stderr, "error: %s\n", pu_err_msg());
    pu_server_stop(srv);
    for (int i = 0; i < nl; i++) {
        pu_lora_list_destroy(sets[i].l, sets[i].n);
        pu_free(sets[i].sc);
        pu_free(names[i]);
    }
    pu_free(sets);
    pu_free(ads);
    pu_free(names);
    pu_free(lora_items.items);
    pu_tok_destroy(tok);
    pu_model_destroy(dm);
    pu_model_destroy(m);
    return ret;
}
