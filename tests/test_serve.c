/*
 * test_serve.c — black-box tests of `puyu serve` and `puyu chat` on loopback.
 *
 * Each suite starts the real CLI (`puyu serve --port 0`) as a child process,
 * reads the port from its "listening on http://HOST:PORT" stderr line and
 * talks HTTP/1.1 to it through a small socket client (so the tests control
 * pacing: slow senders, slow readers, disconnects). Models:
 *   - a random-weight InternLM2 model written here (vocab 600 to match the
 *     committed tests/golden/tok/tiny_bpe.model, hidden 256, 4 layers; no
 *     shared data needed): chat/completions/streaming, 16 concurrent greedy
 *     streams, errors, auth, slow clients, disconnects, terminal chat, web page;
 *   - a "scripted" InternLM2 model written here (vocab 92544, hidden 32, all
 *     attention/MLP weights zero, embeddings one-hot, output rows chosen so
 *     that greedy decoding deterministically emits
 *     "I will call a tool.\n<|action_start|><|plugin|>{...}<|action_end|>")
 *     with ../shared's InternLM2 tokenizer: tool calls round-trip to OpenAI
 *     tool_calls; with ignore_eos it loops forever, which makes it a slow
 *     enough generator to test mid-request disconnects.
 * Suites skip with a message when ../shared data, node or chromium is absent.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt.h"
#include "puyu/pu_json_constraint.h"
#include "json_validate.h"
#include "puyu/pu_serve.h"
#include "puyu/pu_tok.h"

extern char **environ;

/* ---------------------------------------------------------------- process */

typedef struct srv {
    pid_t pid;
    int port;
    char log[512];
} srv;

static bool srv_start(srv *s, const char *args, const char *logname) {
    memset(s, 0, sizeof *s);
    pt_tmp_path(logname, s->log, sizeof s->log);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s serve %s --port 0 2>'%s' >/dev/null", pt_bin(), args,
             s->log);
    char *argv[] = {"sh", "-c", cmd, NULL};
    if (posix_spawn(&s->pid, "/bin/sh", NULL, NULL, argv, environ) != 0) {
        s->pid = 0;
        return false;
    }
    for (int i = 0; i < 1200; i++) { /* up to 60 s (sanitizer builds load slowly) */
        char *txt = NULL;
        size_t len = 0;
        if (pu_file_read_all(s->log, &txt, &len) == PU_OK) {
            const char *p = strstr(txt, "listening on http://");
            if (p) {
                const char *colon = strchr(p + strlen("listening on http://"), ':');
                s->port = colon ? atoi(colon + 1) : 0;
                pu_free(txt);
                return s->port > 0;
            }
            pu_free(txt);
        }
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            char *t = NULL;
            pu_file_read_all(s->log, &t, &len);
            pt_fail_(__FILE__, __LINE__, "server exited early: %s", t ? t : "");
            pu_free(t);
            s->pid = 0;
            return false;
        }
        usleep(50000);
    }
    return false;
}

/* SIGTERM; returns the exit status (0 = clean shutdown), -1 if it hung. */
static int srv_stop(srv *s) {
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 400; i++) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(50000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    return -1;
}

/* ---------------------------------------------------------------- HTTP client */

static int tcp_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static void build_req(pu_str *o, const char *method, const char *path, const char *hdrs,
                      const char *body, size_t blen) {
    pu_str_appendf(o, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method, path,
                   hdrs ? hdrs : "");
    if (body)
        pu_str_appendf(o, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    pu_str_puts(o, "\r\n");
}

typedef struct hresp {
    int status;
    pu_str head, body;
} hresp;

static void hresp_free(hresp *r) {
    pu_str_free(&r->head);
    pu_str_free(&r->body);
}

/* Split a raw response into status, headers and (de-chunked) body. */
static void parse_resp(const pu_str *raw, hresp *r) {
    r->status = -1;
    if (!raw->p || raw->len < 12)
        return;
    r->status = atoi(raw->p + 9);
    const char *he = strstr(raw->p, "\r\n\r\n");
    if (!he)
        return;
    pu_str_append(&r->head, raw->p, (size_t)(he - raw->p));
    const char *b = he + 4, *end = raw->p + raw->len;
    bool chunked = false;
    for (const char *q = r->head.p; *q && !chunked; q++)
        chunked = !strncasecmp(q, "transfer-encoding: chunked", 26);
    if (chunked) {
        while (b < end) {
            char *e = NULL;
            unsigned long n = strtoul(b, &e, 16);
            const char *nl = strstr(b, "\r\n");
            if (!nl || n == 0)
                break;
            b = nl + 2;
            if ((size_t)(end - b) < n)
                n = (unsigned long)(end - b);
            pu_str_append(&r->body, b, n);
            b += n + 2;
        }
    } else {
        pu_str_append(&r->body, b, (size_t)(end - b));
    }
    if (!r->body.p)
        pu_str_puts(&r->body, "");
}

static bool read_all(int fd, pu_str *raw) {
    char buf[8192];
    for (;;) {
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k == 0)
            return true;
        if (k < 0)
            return errno == ECONNRESET && raw->len > 0;
        pu_str_append(raw, buf, (size_t)k);
    }
}

static const char *g_auth = ""; /* extra headers sent with every request */

static int http(int port, const char *method, const char *path, const char *body, hresp *r) {
    memset(r, 0, sizeof *r);
    int fd = tcp_connect(port);
    if (fd < 0)
        return r->status = -1;
    pu_str req = {0}, raw = {0};
    build_req(&req, method, path, g_auth, body, body ? strlen(body) : 0);
    if (body)
        pu_str_puts(&req, body);
    if (send_all(fd, req.p, req.len))
        read_all(fd, &raw);
    close(fd);
    parse_resp(&raw, r);
    pu_str_free(&req);
    pu_str_free(&raw);
    return r->status;
}

static json_t *jbody(const hresp *r) {
    return r->body.p ? json_loads(r->body.p, 0, NULL) : NULL;
}

/* Collect an SSE body: concatenated content (chat delta.content or
 * completion text), the finish reason, whether it ended with [DONE], the
 * number of tool-call deltas, and the first tool call's name/arguments. */
typedef struct sse {
    pu_str text;
    char finish[32];
    bool done_last;
    int n_events, n_tool;
    char tool_name[64], tool_args[256];
    bool usage, error;
} sse;

static const char *nz(const char *s) {
    return s ? s : "";
}

static void sse_parse(const char *body, sse *o) {
    memset(o, 0, sizeof *o);
    pu_str_puts(&o->text, "");
    const char *p = body;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 6 && !strncmp(p, "data: ", 6)) {
            o->n_events++;
            o->done_last = n == 12 && !strncmp(p + 6, "[DONE]", 6);
            json_t *j = o->done_last ? NULL : json_loadb(p + 6, n - 6, 0, NULL);
            if (json_object_get(j, "error"))
                o->error = true;
            if (json_object_get(j, "usage"))
                o->usage = true;
            json_t *c = json_array_get(json_object_get(j, "choices"), 0);
            json_t *d = json_object_get(c, "delta");
            const char *t = json_string_value(json_object_get(d ? d : c, d ? "content" : "text"));
            if (t)
                pu_str_puts(&o->text, t);
            json_t *tc = json_array_get(json_object_get(d, "tool_calls"), 0);
            if (tc) {
                o->n_tool++;
                json_t *f = json_object_get(tc, "function");
                snprintf(o->tool_name, sizeof o->tool_name, "%s",
                         nz(json_string_value(json_object_get(f, "name"))));
                snprintf(o->tool_args, sizeof o->tool_args, "%s",
                         nz(json_string_value(json_object_get(f, "arguments"))));
            }
            const char *fr = json_string_value(json_object_get(c, "finish_reason"));
            if (fr)
                snprintf(o->finish, sizeof o->finish, "%s", fr);
            json_decref(j);
        }
        p = nl ? nl + 1 : NULL;
    }
}

/* engine stats from /health */
typedef struct hstats {
    int64_t running, waiting, blocks_total, blocks_free, tokens_generated, disconnects, active;
} hstats;

static bool health(int port, hstats *h) {
    hresp r;
    memset(h, 0, sizeof *h);
    if (http(port, "GET", "/health", NULL, &r) != 200) {
        hresp_free(&r);
        return false;
    }
    json_t *j = jbody(&r);
    json_t *e = json_object_get(j, "engine");
    h->running = json_integer_value(json_object_get(e, "running"));
    h->waiting = json_integer_value(json_object_get(e, "waiting"));
    h->blocks_total = json_integer_value(json_object_get(e, "blocks_total"));
    h->blocks_free = json_integer_value(json_object_get(e, "blocks_free"));
    h->tokens_generated = json_integer_value(json_object_get(e, "tokens_generated"));
    h->disconnects = json_integer_value(json_object_get(j, "disconnects"));
    h->active = json_integer_value(json_object_get(j, "requests_active"));
    json_decref(j);
    hresp_free(&r);
    return true;
}

/* Wait until nothing runs and every KV block is back in the pool. */
static bool wait_idle(int port, hstats *h) {
    for (int i = 0; i < 400; i++) {
        if (health(port, h) && h->running == 0 && h->waiting == 0 && h->active == 0 &&
            h->blocks_free == h->blocks_total && h->blocks_total > 0)
            return true;
        usleep(50000);
    }
    return false;
}

static char *chat_body(const char *user, int max_tokens, bool stream, const char *extra) {
    pu_str b = {0};
    pu_str_puts(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":");
    pu_str_json_string(&b, user, strlen(user));
    pu_str_appendf(&b, "}],\"temperature\":0,\"max_tokens\":%d,\"stream\":%s%s%s}", max_tokens,
                   stream ? "true" : "false", extra ? "," : "", extra ? extra : "");
    return pu_str_steal(&b);
}

/* content of a non-streaming chat reply (owned) or NULL */
static char *chat_text(int port, const char *user, int max_tokens, const char *extra) {
    char *b = chat_body(user, max_tokens, false, extra);
    hresp r;
    char *out = NULL;
    if (http(port, "POST", "/v1/chat/completions", b, &r) == 200) {
        json_t *j = jbody(&r);
        json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
        const char *c = json_string_value(json_object_get(m, "content"));
        out = c ? pu_strdup(c) : NULL;
        json_decref(j);
    }
    pu_free(b);
    hresp_free(&r);
    return out;
}

/* ---------------------------------------------------------------- fixtures */

static bool g_http_up, g_tool_up;
static srv g_http, g_tool;
static char g_stories[512], g_stories_tok[512], g_ilm_tok[512], g_ilm_dir[512];

/* safetensors writer for the scripted model (F32 tensors) */
typedef struct st_t {
    const char *name;
    int64_t shape[2];
    int ndim;
    float *data;
} st_t;

static bool write_safetensors(const char *path, st_t *t, int n) {
    pu_str h = {0};
    pu_str_putc(&h, '{');
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        pu_str_appendf(&h, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld", i ? "," : "", t[i].name,
                       (long long)t[i].shape[0]);
        if (t[i].ndim == 2)
            pu_str_appendf(&h, ",%lld", (long long)t[i].shape[1]);
        pu_str_appendf(&h, "],\"data_offsets\":[%lld,%lld]}", (long long)off,
                       (long long)(off + numel * 4));
        off += numel * 4;
    }
    pu_str_putc(&h, '}');
    while (h.len % 8)
        pu_str_putc(&h, ' ');
    FILE *f = fopen(path, "wb");
    if (!f) {
        pu_str_free(&h);
        return false;
    }
    uint64_t hl = h.len;
    bool ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(h.p, 1, h.len, f) == h.len;
    for (int i = 0; i < n && ok; i++) {
        size_t numel = (size_t)(t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1));
        ok = fwrite(t[i].data, 4, numel, f) == numel;
    }
    ok = (fclose(f) == 0) && ok;
    pu_str_free(&h);
    return ok;
}

#define TOOL_PREFIX "I will call a tool.\n"
#define TOOL_JSON   "{\"name\":\"get_weather\",\"parameters\":{}}"

/* Build the scripted InternLM2 model directory in the temp dir. */
static bool make_scripted_model(void) {
    if (!pt_shared_path("internlm2/tokenizer.model", g_ilm_tok, sizeof g_ilm_tok))
        return false;
    pu_tok *tok = NULL;
    if (pu_tok_load(g_ilm_tok, &tok) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "tokenizer: %s", pu_err_msg());
        return false;
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    pu_tok_encode(tok, TOOL_PREFIX, strlen(TOOL_PREFIX), &eo, &ids, &n);
    ids = pu_realloc(ids, (size_t)(n + 2) * sizeof(int32_t));
    ids[n++] = pu_tok_special_id(tok, "<|action_start|>");
    ids[n++] = pu_tok_special_id(tok, "<|plugin|>");
    pu_tok_encode(tok, TOOL_JSON, strlen(TOOL_JSON), &eo, &ids, &n);
    ids = pu_realloc(ids, (size_t)(n + 2) * sizeof(int32_t));
    ids[n++] = pu_tok_special_id(tok, "<|action_end|>");
    ids[n++] = pu_tok_special_id(tok, "<|im_end|>");
    pu_tok_destroy(tok);
    const int64_t V = 92544, C = 32, F = 32, H = 4, Hkv = 2, D = 8;
    bool ok = n < C;
    for (int64_t i = 0; i < n && ok; i++)
        for (int64_t j = 0; j < i; j++)
            ok &= ids[i] != ids[j] && ids[i] >= 0;
    if (!ok) {
        pt_fail_(__FILE__, __LINE__, "scripted model: the script's %lld tokens are not distinct",
                 (long long)n);
        pu_free(ids);
        return false;
    }
    /* token ids[i] has embedding e_{i+1}; every other token e_0; output row
     * ids[0] reads e_0, row ids[i+1] reads e_{i+1}: greedy walks the script */
    float *emb = pu_calloc((size_t)(V * C), sizeof(float));
    float *out = pu_calloc((size_t)(V * C), sizeof(float));
    for (int64_t v = 0; v < V; v++)
        emb[v * C] = 1.0f;
    for (int64_t i = 0; i < n; i++) {
        emb[ids[i] * C] = 0.0f;
        emb[ids[i] * C + i + 1] = 1.0f;
        out[ids[i] * C + i] = 10.0f;
    }
    float *ones = pu_malloc((size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++)
        ones[i] = 1.0f;
    float *zq = pu_calloc((size_t)((H + 2 * Hkv) * D * C), sizeof(float));
    float *zo = pu_calloc((size_t)(C * H * D), sizeof(float));
    float *zf = pu_calloc((size_t)(F * C), sizeof(float));
    st_t t[] = {
        {"model.tok_embeddings.weight", {V, C}, 2, emb},
        {"model.layers.0.attention_norm.weight", {C, 0}, 1, ones},
        {"model.layers.0.attention.wqkv.weight", {(H + 2 * Hkv) * D, C}, 2, zq},
        {"model.layers.0.attention.wo.weight", {C, H * D}, 2, zo},
        {"model.layers.0.ffn_norm.weight", {C, 0}, 1, ones},
        {"model.layers.0.feed_forward.w1.weight", {F, C}, 2, zf},
        {"model.layers.0.feed_forward.w3.weight", {F, C}, 2, zf},
        {"model.layers.0.feed_forward.w2.weight", {C, F}, 2, zf},
        {"model.norm.weight", {C, 0}, 1, ones},
        {"output.weight", {V, C}, 2, out},
    };
    pt_tmp_path("scripted_ilm2", g_ilm_dir, sizeof g_ilm_dir);
    pu_mkdir_p(g_ilm_dir);
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", g_ilm_dir);
    ok = write_safetensors(p, t, (int)(sizeof t / sizeof t[0]));
    const char *cfg =
        "{\"architectures\":[\"InternLM2ForCausalLM\"],\"model_type\":\"internlm2\","
        "\"vocab_size\":92544,\"hidden_size\":32,\"intermediate_size\":32,"
        "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
        "\"hidden_act\":\"silu\",\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-06,"
        "\"bos_token_id\":1,\"eos_token_id\":2,\"pad_token_id\":2,\"bias\":false,"
        "\"rope_theta\":1000000,\"rope_scaling\":null,\"tie_word_embeddings\":false,"
        "\"torch_dtype\":\"float32\",\"initializer_range\":0.02,\"use_cache\":true}";
    snprintf(p, sizeof p, "%s/config.json", g_ilm_dir);
    ok = ok && pu_file_write_atomic(p, cfg, strlen(cfg)) == PU_OK;
    pu_free(emb);
    pu_free(out);
    pu_free(ones);
    pu_free(zq);
    pu_free(zo);
    pu_free(zf);
    pu_free(ids);
    PT_CHECK_MSG(ok, "could not write the scripted model in %s", g_ilm_dir);
    return ok;
}

static float *rnd_buf(pu_rng *rng, float **bufs, int *nb, int64_t count, double std) {
    float *b = pu_malloc((size_t)count * sizeof(float));
    for (int64_t i = 0; i < count; i++)
        b[i] = (float)(pu_rng_normal(rng) * std);
    bufs[(*nb)++] = b;
    return b;
}

/* The random text model (vocab 600 = tiny_bpe.model's); built once. */
static bool stories_paths(void) {
    static int state = 0; /* 0 not built, 1 ok, -1 failed */
    if (state)
        return state > 0;
    state = -1;
    snprintf(g_stories_tok, sizeof g_stories_tok, "tests/golden/tok/tiny_bpe.model");
    if (!pu_file_exists(g_stories_tok)) {
        pt_skip("tests/golden/tok/tiny_bpe.model absent (run from the repository root)");
        return false;
    }
    const int64_t V = 600, C = 256, F = 768, L = 4, H = 8, Hkv = 4, D = 32;
    pu_rng rng;
    pu_rng_seed(&rng, 1234);
    st_t t[2 + 7 * 4 + 1];
    char names[7 * 4][64];
    int n = 0;
    float *bufs[64];
    int nb = 0;
    float *ones = pu_malloc((size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++)
        ones[i] = 1.0f;
    t[n++] = (st_t){"model.tok_embeddings.weight", {V, C}, 2, rnd_buf(&rng, bufs, &nb, V * C, 1.0)};
    static const char *const fmt[7] = {"attention.wqkv",  "attention.wo",    "feed_forward.w1",
                                       "feed_forward.w3", "feed_forward.w2", "attention_norm",
                                       "ffn_norm"};
    for (int64_t l = 0; l < L; l++) {
        for (int k = 0; k < 7; k++) {
            char *nm = names[l * 7 + k];
            snprintf(nm, 64, "model.layers.%lld.%s.weight", (long long)l, fmt[k]);
            st_t x = {nm, {0, 0}, 2, NULL};
            switch (k) {
            case 0: x.shape[0] = (H + 2 * Hkv) * D, x.shape[1] = C; break;
            case 1: x.shape[0] = C, x.shape[1] = H * D; break;
            case 2:
            case 3: x.shape[0] = F, x.shape[1] = C; break;
            case 4: x.shape[0] = C, x.shape[1] = F; break;
            default: x.shape[0] = C, x.ndim = 1, x.data = ones; break;
            }
            if (!x.data)
                x.data = rnd_buf(&rng, bufs, &nb, x.shape[0] * x.shape[1], 0.08);
            t[n++] = x;
        }
    }
    t[n++] = (st_t){"model.norm.weight", {C, 0}, 1, ones};
    t[n++] = (st_t){"output.weight", {V, C}, 2, rnd_buf(&rng, bufs, &nb, V * C, 0.25)};
    pt_tmp_path("rnd_model", g_stories, sizeof g_stories);
    pu_mkdir_p(g_stories);
    char p[700];
    snprintf(p, sizeof p, "%s/model.safetensors", g_stories);
    bool ok = write_safetensors(p, t, n);
    const char *cfg =
        "{\"architectures\":[\"InternLM2ForCausalLM\"],\"model_type\":\"internlm2\","
        "\"vocab_size\":600,\"hidden_size\":256,\"intermediate_size\":768,"
        "\"num_hidden_layers\":4,\"num_attention_heads\":8,\"num_key_value_heads\":4,"
        "\"hidden_act\":\"silu\",\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-06,"
        "\"bos_token_id\":1,\"eos_token_id\":2,\"pad_token_id\":2,\"bias\":false,"
        "\"rope_theta\":1000000,\"rope_scaling\":null,\"tie_word_embeddings\":false,"
        "\"torch_dtype\":\"float32\",\"initializer_range\":0.02,\"use_cache\":true}";
    snprintf(p, sizeof p, "%s/config.json", g_stories);
    ok = ok && pu_file_write_atomic(p, cfg, strlen(cfg)) == PU_OK;
    for (int i = 0; i < nb; i++)
        pu_free(bufs[i]);
    pu_free(ones);
    PT_CHECK_MSG(ok, "could not write the random model in %s", g_stories);
    state = ok ? 1 : -1;
    return ok;
}

/* Start a long streaming request, read a few events, hang up: the request
 * must be cancelled (far fewer than max_tokens generated), the server must
 * count the disconnect and every KV block must return to the pool. */
static void check_disconnect_stream(int port, const char *hdrs, int max_tokens) {
    hstats h0, h1;
    PT_CHECK(wait_idle(port, &h0));
    char *b = chat_body("loop", max_tokens, true, "\"ignore_eos\":true");
    int fd = tcp_connect(port);
    pu_str req = {0};
    build_req(&req, "POST", "/v1/chat/completions", hdrs, b, strlen(b));
    pu_str_puts(&req, b);
    PT_CHECK(send_all(fd, req.p, req.len));
    /* read until a few events (tokens) have arrived */
    pu_str got = {0};
    char buf[2048];
    int events = 0;
    while (events < 4) {
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k <= 0)
            break;
        pu_str_append(&got, buf, (size_t)k);
        events = 0;
        for (const char *q = got.p; (q = strstr(q, "data: ")); q += 6)
            events++;
    }
    PT_CHECK(events >= 4);
    pu_str_free(&got);
    /* it is running and holds KV blocks (stats are published per step) */
    hstats hm;
    bool busy = false;
    for (int i = 0; i < 40 && !busy; i++) {
        busy = health(port, &hm) && hm.running >= 1 && hm.blocks_free < hm.blocks_total;
        if (!busy)
            usleep(25000);
    }
    PT_CHECK(busy);
    close(fd);
    PT_CHECK(wait_idle(port, &h1));
    PT_CHECK_MSG(h1.tokens_generated - h0.tokens_generated < max_tokens - 50,
                 "generated %lld of %d tokens: not cancelled",
                 (long long)(h1.tokens_generated - h0.tokens_generated), max_tokens);
    PT_CHECK(h1.disconnects > h0.disconnects);
    pu_str_free(&req);
    pu_free(b);
}

/* Same with a non-streaming request: hang up while it is being generated. */
static void check_disconnect_wait(int port, const char *hdrs, int max_tokens) {
    hstats h0, h1, hm;
    PT_CHECK(wait_idle(port, &h0));
    char *b = chat_body("loop", max_tokens, false, "\"ignore_eos\":true");
    int fd = tcp_connect(port);
    pu_str req = {0};
    build_req(&req, "POST", "/v1/chat/completions", hdrs, b, strlen(b));
    pu_str_puts(&req, b);
    PT_CHECK(send_all(fd, req.p, req.len));
    bool busy = false;
    for (int i = 0; i < 80 && !busy; i++) {
        busy = health(port, &hm) && hm.running >= 1 && hm.tokens_generated > h0.tokens_generated;
        if (!busy)
            usleep(10000);
    }
    PT_CHECK(busy);
    close(fd);
    PT_CHECK(wait_idle(port, &h1));
    PT_CHECK_MSG(h1.tokens_generated - h0.tokens_generated < max_tokens - 50,
                 "generated %lld of %d tokens: not cancelled",
                 (long long)(h1.tokens_generated - h0.tokens_generated), max_tokens);
    PT_CHECK(h1.disconnects > h0.disconnects);
    pu_str_free(&req);
    pu_free(b);
}

/* ---------------------------------------------------------------- unit */

PT_SUITE(serve_unit) {
    if (PT_TEST("reply with a plugin call becomes tool_calls")) {
        const char *t = "Let me check.\n<|action_start|><|plugin|>\n{\"name\": \"get_weather\", "
                        "\"parameters\": {\"city\": \"Paris\"}}<|action_end|>";
        bool calls = false;
        char *m = pu_serve_reply_message(t, strlen(t), true, "x", &calls);
        json_t *j = json_loads(m, 0, NULL);
        PT_CHECK(calls);
        PT_EQ_STR(json_string_value(json_object_get(j, "content")), "Let me check.");
        json_t *tc = json_array_get(json_object_get(j, "tool_calls"), 0);
        json_t *f = json_object_get(tc, "function");
        PT_EQ_STR(json_string_value(json_object_get(f, "name")), "get_weather");
        json_t *args = json_loads(nz(json_string_value(json_object_get(f, "arguments"))), 0, NULL);
        PT_EQ_STR(json_string_value(json_object_get(args, "city")), "Paris");
        PT_EQ_STR(json_string_value(json_object_get(tc, "type")), "function");
        PT_EQ_STR(json_string_value(json_object_get(tc, "id")), "call_x_0");
        json_decref(args);
        json_decref(j);
        pu_free(m);
    }
    if (PT_TEST("reply without tools or with a bad payload stays content")) {
        const char *t = "<|action_start|><|plugin|>\n{not json<|action_end|>";
        bool calls = true;
        char *m = pu_serve_reply_message(t, strlen(t), true, "x", &calls);
        json_t *j = json_loads(m, 0, NULL);
        PT_CHECK(!calls);
        PT_EQ_STR(json_string_value(json_object_get(j, "content")), t);
        PT_CHECK(!json_object_get(j, "tool_calls"));
        json_decref(j);
        pu_free(m);
        const char *bad = "caf\xc3"; /* truncated UTF-8 must still give valid JSON */
        m = pu_serve_reply_message(bad, strlen(bad), false, "x", &calls);
        j = json_loads(m, 0, NULL);
        PT_CHECK(j != NULL);
        json_decref(j);
        pu_free(m);
    }
    if (PT_TEST("web page is self-contained")) {
        const char *h = pu_serve_webui_html();
        PT_CHECK(strstr(h, "<!doctype html>") == h);
        PT_CHECK(strstr(h, "v1/chat/completions") != NULL);
        PT_CHECK(strstr(h, "stream: true") != NULL);
        PT_CHECK(strstr(h, "id=\"system\"") && strstr(h, "id=\"temp\""));
        PT_CHECK(!strstr(h, "src=\"http") && !strstr(h, "href=\"http") && !strstr(h, "@import"));
    }
}

/* ---------------------------------------------------------------- stories server */

typedef struct conc {
    int port;
    char *body;
    char *text;
    char finish[32];
    bool done_last;
} conc;

static void *conc_main(void *arg) {
    conc *c = arg;
    hresp r;
    if (http(c->port, "POST", "/v1/chat/completions", c->body, &r) == 200) {
        sse s;
        sse_parse(r.body.p, &s);
        c->text = pu_str_steal(&s.text);
        snprintf(c->finish, sizeof c->finish, "%s", s.finish);
        c->done_last = s.done_last;
    }
    hresp_free(&r);
    return NULL;
}

static const char *const g_names[16] = {"Tom", "Lily", "Ben", "Sue", "Max", "Amy",  "Tim",  "Sam",
                                        "Mia", "Leo",  "Zoe", "Dan", "Eve", "Jack", "Anna", "Bob"};

PT_SUITE(serve_http) {
    if (PT_TEST("start: puyu serve --port 0 prints the listening line")) {
        if (stories_paths()) {
            char args[1400];
            snprintf(args, sizeof args,
                     "-m '%s' -t '%s' --ctx 1024 --max-batch 16 --api-key sekret "
                     "--max-body 65536 --threads 1",
                     g_stories, g_stories_tok);
            g_http_up = srv_start(&g_http, args, "serve_http.log");
            PT_CHECK_MSG(g_http_up, "server did not start (log %s)", g_http.log);
        }
    }
    if (!g_http_up)
        return;
    int port = g_http.port;
    g_auth = "Authorization: Bearer sekret\r\n";
    hresp r;
    if (PT_TEST("GET /health and /v1/models")) {
        hstats h;
        PT_CHECK(health(port, &h));
        PT_CHECK(h.blocks_total > 0 && h.blocks_free == h.blocks_total);
        PT_EQ_I64(http(port, "GET", "/v1/models", NULL, &r), 200);
        json_t *j = jbody(&r);
        PT_EQ_STR(json_string_value(json_object_get(j, "object")), "list");
        PT_EQ_STR(
            json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id")),
            "rnd_model");
        json_decref(j);
        hresp_free(&r);
    }
    if (PT_TEST("bearer token: 401 without or with a wrong key; /health stays open")) {
        g_auth = "";
        PT_EQ_I64(http(port, "GET", "/v1/models", NULL, &r), 401);
        json_t *j = jbody(&r);
        PT_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                  "invalid_api_key");
        json_decref(j);
        hresp_free(&r);
        g_auth = "Authorization: Bearer wrong\r\n";
        PT_EQ_I64(http(port, "POST", "/v1/completions", "{\"prompt\":\"a\"}", &r), 401);
        hresp_free(&r);
        g_auth = "";
        PT_EQ_I64(http(port, "GET", "/health", NULL, &r), 200);
        hresp_free(&r);
        PT_EQ_I64(http(port, "GET", "/", NULL, &r), 200);
        PT_CHECK(strstr(r.head.p, "text/html") != NULL);
        hresp_free(&r);
        g_auth = "Authorization: Bearer sekret\r\n";
    }
    char *ref = NULL;
    if (PT_TEST("chat completion: non-streaming and streaming agree")) {
        char *b = chat_body("Tell me a story about Tom.", 40, false, NULL);
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r), 200);
        json_t *j = jbody(&r);
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        const char *t =
            json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
        PT_CHECK(t && strlen(t) > 0);
        ref = pu_strdup(t ? t : "");
        PT_EQ_STR(json_string_value(json_object_get(j, "object")), "chat.completion");
        json_t *u = json_object_get(j, "usage");
        int64_t ct = json_integer_value(json_object_get(u, "completion_tokens"));
        PT_CHECK(ct > 0 && ct <= 40);
        PT_EQ_I64(json_integer_value(json_object_get(u, "total_tokens")),
                  json_integer_value(json_object_get(u, "prompt_tokens")) + ct);
        const char *fr = json_string_value(json_object_get(c0, "finish_reason"));
        PT_CHECK(fr && (!strcmp(fr, "length") || !strcmp(fr, "stop")));
        json_decref(j);
        hresp_free(&r);
        pu_free(b);
        b = chat_body("Tell me a story about Tom.", 40, true,
                      "\"stream_options\":{\"include_usage\":true}");
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r), 200);
        PT_CHECK(strstr(r.head.p, "text/event-stream") != NULL);
        sse s;
        sse_parse(r.body.p, &s);
        PT_EQ_STR(s.text.p, ref);
        PT_CHECK(s.done_last);
        PT_CHECK(s.usage);
        PT_CHECK(s.n_events > 3);
        pu_str_free(&s.text);
        hresp_free(&r);
        pu_free(b);
    }
    if (PT_TEST("completions, stop strings, logprobs, seed")) {
        const char *b = "{\"prompt\":\"Once upon a time\",\"temperature\":0,\"max_tokens\":20,"
                        "\"logprobs\":1}";
        PT_EQ_I64(http(port, "POST", "/v1/completions", b, &r), 200);
        json_t *j = jbody(&r);
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        const char *t = json_string_value(json_object_get(c0, "text"));
        PT_CHECK(t && strlen(t) > 4);
        json_t *lp = json_object_get(c0, "logprobs");
        PT_EQ_I64(
            (int64_t)json_array_size(json_object_get(lp, "token_logprobs")),
            json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")));
        /* "logprobs": 1 asks for the best alternative: greedy, so it is the token itself,
         * with the same logprob */
        json_t *tops = json_object_get(lp, "top_logprobs");
        PT_CHECK(json_is_array(tops) &&
                 json_array_size(tops) == json_array_size(json_object_get(lp, "tokens")));
        for (size_t i = 0; json_is_array(tops) && i < json_array_size(tops); i++) {
            json_t *o = json_array_get(tops, i);
            const char *tok = json_string_value(json_array_get(json_object_get(lp, "tokens"), i));
            json_t *v = tok ? json_object_get(o, tok) : NULL;
            double l0 = json_number_value(json_array_get(json_object_get(lp, "token_logprobs"), i));
            PT_CHECK_MSG(json_object_size(o) == 1 && v && fabs(json_number_value(v) - l0) < 1e-5 &&
                             l0 <= 0,
                         "top_logprobs[%zu] does not hold the greedy token '%s'", i,
                         tok ? tok : "?");
        }
        /* a stop string taken from the middle of the answer (3 ASCII letters) */
        char word[4] = {0};
        size_t tl = t ? strlen(t) : 0;
        for (size_t i = 2; i + 3 <= tl && !word[0]; i++)
            if (isalpha((unsigned char)t[i]) && isalpha((unsigned char)t[i + 1]) &&
                isalpha((unsigned char)t[i + 2]))
                memcpy(word, t + i, 3);
        PT_CHECK_MSG(word[0], "no 3-letter word in '%s'", t ? t : "");
        char b2[400];
        snprintf(b2, sizeof b2,
                 "{\"prompt\":\"Once upon a time\",\"temperature\":0,\"max_tokens\":20,"
                 "\"stop\":[\"%s\"],\"stream\":true}",
                 word);
        hresp r2;
        PT_EQ_I64(http(port, "POST", "/v1/completions", b2, &r2), 200);
        sse s;
        sse_parse(r2.body.p, &s);
        const char *hit = t && word[0] ? strstr(t, word) : NULL;
        size_t want = hit ? (size_t)(hit - t) : 0;
        PT_CHECK_MSG(hit && s.text.len == want && !strncmp(s.text.p, t, want),
                     "stop '%s': got '%s' from '%s'", word, s.text.p, t ? t : "");
        PT_EQ_STR(s.finish, "stop");
        pu_str_free(&s.text);
        hresp_free(&r2);
        json_decref(j);
        hresp_free(&r);
        /* sampling with a seed is reproducible */
        const char *sb = "{\"prompt\":\"Once\",\"temperature\":1.0,\"top_p\":0.9,\"top_k\":50,"
                         "\"min_p\":0.01,\"presence_penalty\":0.5,\"frequency_penalty\":0.5,"
                         "\"repetition_penalty\":1.1,\"seed\":7,\"max_tokens\":16}";
        PT_EQ_I64(http(port, "POST", "/v1/completions", sb, &r), 200);
        PT_EQ_I64(http(port, "POST", "/v1/completions", sb, &r2), 200);
        json_t *a = jbody(&r), *bj = jbody(&r2);
        const char *ta = json_string_value(
            json_object_get(json_array_get(json_object_get(a, "choices"), 0), "text"));
        const char *tb = json_string_value(
            json_object_get(json_array_get(json_object_get(bj, "choices"), 0), "text"));
        PT_CHECK(ta && tb && !strcmp(ta, tb));
        json_decref(a);
        json_decref(bj);
        hresp_free(&r);
        hresp_free(&r2);
    }
    if (PT_TEST("tokenize")) {
        PT_EQ_I64(http(port, "POST", "/v1/tokenize", "{\"text\":\"hello world\"}", &r), 200);
        json_t *j = jbody(&r);
        PT_CHECK(json_integer_value(json_object_get(j, "count")) >= 2);
        PT_EQ_I64(json_integer_value(json_array_get(json_object_get(j, "tokens"), 0)), 1);
        PT_EQ_I64(json_integer_value(json_object_get(j, "max_model_len")), 1024);
        json_decref(j);
        hresp_free(&r);
    }
    if (PT_TEST("errors: malformed JSON, wrong types, 404, 405, 413, too long")) {
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", "{\"messages\": [", &r), 400);
        json_t *j = jbody(&r);
        json_t *e = json_object_get(j, "error");
        PT_CHECK(json_is_string(json_object_get(e, "message")));
        PT_EQ_STR(json_string_value(json_object_get(e, "type")), "invalid_request_error");
        PT_CHECK(json_object_get(e, "param") && json_object_get(e, "code"));
        json_decref(j);
        hresp_free(&r);
        static const char *const bad[][2] = {
            {"{\"messages\":\"hi\"}", "messages"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":\"9\"}",
             "max_tokens"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":[]}",
             "temperature"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":5}", "stop"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":1}", "stream"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":99}", "n"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":7}", "top_p"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", "tools"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content"},
            {"[1,2]", NULL},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            PT_CHECK_MSG(http(port, "POST", "/v1/chat/completions", bad[i][0], &r) == 400,
                         "%s: status %d", bad[i][0], r.status);
            j = jbody(&r);
            e = json_object_get(j, "error");
            const char *msg = json_string_value(json_object_get(e, "message"));
            if (bad[i][1]) {
                PT_EQ_STR(json_string_value(json_object_get(e, "param")), bad[i][1]);
                PT_CHECK_MSG(msg && strstr(msg, bad[i][1]), "message '%s' does not name '%s'",
                             msg ? msg : "", bad[i][1]);
            }
            json_decref(j);
            hresp_free(&r);
        }
        PT_EQ_I64(http(port, "POST", "/v1/completions", "{\"prompt\":{}}", &r), 400);
        hresp_free(&r);
        PT_EQ_I64(http(port, "GET", "/v1/nothing", NULL, &r), 404);
        j = jbody(&r);
        PT_CHECK(json_object_get(j, "error") != NULL);
        json_decref(j);
        hresp_free(&r);
        PT_EQ_I64(http(port, "GET", "/v1/chat/completions", NULL, &r), 405);
        hresp_free(&r);
        PT_EQ_I64(http(port, "POST", "/health", "{}", &r), 405);
        hresp_free(&r);
        /* 100 KB body over the 64 KB limit */
        pu_str big = {0};
        pu_str_puts(&big, "{\"prompt\":\"");
        while (big.len < 100000)
            pu_str_puts(&big, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ");
        pu_str_puts(&big, "\"}");
        PT_EQ_I64(http(port, "POST", "/v1/completions", big.p, &r), 413);
        j = jbody(&r);
        PT_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                  "request_too_large");
        json_decref(j);
        hresp_free(&r);
        pu_str_free(&big);
        /* a prompt longer than the context (1024) */
        pu_str lp = {0};
        for (int i = 0; i < 700; i++)
            pu_str_puts(&lp, "the cat sat ");
        char *b = chat_body(lp.p, 10, false, NULL);
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r), 400);
        j = jbody(&r);
        PT_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                  "context_length_exceeded");
        json_decref(j);
        hresp_free(&r);
        pu_free(b);
        pu_str_free(&lp);
    }
    if (PT_TEST("strict OpenAI validation: 400 naming the field")) {
        static const char *const bad[][3] = {
            /* body, param, words the message must hold */
            {"{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content", "required"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":null}]}", "messages[0].content",
             "null"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":[1,null,{}]}]}",
             "messages[0].content[0]", "an integer"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
             "{}]}]}",
             "messages[0].content[1]", "text"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
             "messages[0].content[0]", "image_url"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
             "\"content\":null,\"tool_calls\":{\"id\":\"x\"}}]}",
             "messages[1].tool_calls", "an object"},
            {"{\"messages\":[{\"content\":\"a\"}]}", "messages[0].role", "required"},
            {"{\"messages\":[\"hi\"]}", "messages[0]", "a string"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            PT_CHECK_MSG(http(port, "POST", "/v1/chat/completions", bad[i][0], &r) == 400,
                         "%s: status %d", bad[i][0], r.status);
            json_t *j = jbody(&r);
            json_t *e = json_object_get(j, "error");
            const char *msg = json_string_value(json_object_get(e, "message"));
            PT_EQ_STR(json_string_value(json_object_get(e, "param")), bad[i][1]);
            PT_CHECK_MSG(msg && strstr(msg, bad[i][1]) && strstr(msg, bad[i][2]),
                         "%s: message '%s'", bad[i][0], msg ? msg : "");
            json_decref(j);
            hresp_free(&r);
        }
        /* an assistant turn with tool_calls may have null content; text parts are fine */
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions",
                       "{\"max_tokens\":2,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                       "\"text\",\"text\":\"hi\"}]},{\"role\":\"assistant\",\"content\":null,"
                       "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":"
                       "\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"content\":\"1\"}]}",
                       &r),
                  200);
        hresp_free(&r);
        static const char *const cbad[][3] = {
            {"{\"prompt\":[1,-5]}", "prompt", "prompt[1]: token id -5 is outside [0, V)"},
            {"{\"prompt\":[1,600]}", "prompt", "prompt[1]: token id 600 is outside [0, V)"},
            {"{\"prompt\":[1,\"a\"]}", "prompt", "prompt[1] must be a token id"},
            {"{\"prompt\":[\"a\",\"b\"]}", "prompt", "batches"},
            {"{\"prompt\":\"a\",\"suffix\":\"b\"}", "suffix", "suffix"},
            {"{\"prompt\":\"a\",\"best_of\":3}", "best_of", "best_of"},
            {"{\"prompt\":\"a\",\"echo\":true,\"logprobs\":1}", "echo", "echo"},
            {"{\"prompt\":\"a\",\"echo\":1}", "echo", "echo"},
            {"{\"prompt\":\"a\",\"logit_bias\":{\"x\":1}}", "logit_bias", "logit_bias"},
            {"{\"prompt\":\"a\",\"logit_bias\":{\"5\":101}}", "logit_bias", "logit_bias"},
        };
        for (size_t i = 0; i < sizeof cbad / sizeof cbad[0]; i++) {
            PT_CHECK_MSG(http(port, "POST", "/v1/completions", cbad[i][0], &r) == 400,
                         "%s: status %d", cbad[i][0], r.status);
            json_t *j = jbody(&r);
            json_t *e = json_object_get(j, "error");
            const char *msg = json_string_value(json_object_get(e, "message"));
            PT_EQ_STR(json_string_value(json_object_get(e, "param")), cbad[i][1]);
            PT_CHECK_MSG(msg && strstr(msg, cbad[i][2]), "%s: message '%s'", cbad[i][0],
                         msg ? msg : "");
            json_decref(j);
            hresp_free(&r);
        }
        /* echo: the prompt comes back in front of the completion (also streamed) */
        PT_EQ_I64(http(port, "POST", "/v1/completions",
                       "{\"prompt\":\"Once upon\",\"echo\":true,\"max_tokens\":4,"
                       "\"temperature\":0}",
                       &r),
                  200);
        hresp r2;
        PT_EQ_I64(http(port, "POST", "/v1/completions",
                       "{\"prompt\":\"Once upon\",\"max_tokens\":4,\"temperature\":0}", &r2),
                  200);
        hresp r3;
        PT_EQ_I64(http(port, "POST", "/v1/completions",
                       "{\"prompt\":\"Once upon\",\"echo\":true,\"max_tokens\":4,"
                       "\"temperature\":0,\"stream\":true,\"best_of\":1,\"suffix\":null}",
                       &r3),
                  200);
        json_t *a = jbody(&r), *b = jbody(&r2);
        const char *ta = json_string_value(
            json_object_get(json_array_get(json_object_get(a, "choices"), 0), "text"));
        const char *tb = json_string_value(
            json_object_get(json_array_get(json_object_get(b, "choices"), 0), "text"));
        char want[512];
        snprintf(want, sizeof want, "Once upon%s", tb ? tb : "?");
        PT_CHECK_MSG(ta && !strcmp(ta, want), "echo '%s' want '%s'", ta ? ta : "", want);
        sse ss;
        sse_parse(r3.body.p, &ss);
        PT_CHECK_MSG(!strcmp(ss.text.p, want), "streamed echo '%s' want '%s'", ss.text.p, want);
        pu_str_free(&ss.text);
        json_decref(a);
        json_decref(b);
        hresp_free(&r);
        hresp_free(&r2);
        hresp_free(&r3);
    }
    if (PT_TEST("16 concurrent streams each equal their single-request greedy output")) {
        conc cs[16];
        char *want[16];
        pthread_t th[16];
        for (int i = 0; i < 16; i++) {
            char user[128];
            snprintf(user, sizeof user, "Once upon a time, %s went to the park.", g_names[i]);
            memset(&cs[i], 0, sizeof cs[i]);
            cs[i].port = port;
            cs[i].body = chat_body(user, 32, true, NULL);
            want[i] = chat_text(port, user, 32, NULL); /* alone, non-streaming */
        }
        for (int i = 0; i < 16; i++)
            pthread_create(&th[i], NULL, conc_main, &cs[i]);
        for (int i = 0; i < 16; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < 16; i++) {
            PT_CHECK_MSG(want[i] && cs[i].text && !strcmp(want[i], cs[i].text),
                         "stream %d: '%s' vs alone '%s'", i, cs[i].text ? cs[i].text : "(none)",
                         want[i] ? want[i] : "(none)");
            PT_CHECK(cs[i].done_last);
            pu_free(cs[i].body);
            pu_free(cs[i].text);
            pu_free(want[i]);
        }
        hstats h;
        PT_CHECK(wait_idle(port, &h));
    }
    if (PT_TEST("slow sender and slow reader")) {
        /* the body arrives in three parts 150 ms apart; the server keeps serving others */
        char *b = chat_body("Tell me a story about Tom.", 40, false, NULL);
        int fd = tcp_connect(port);
        pu_str req = {0}, raw = {0};
        build_req(&req, "POST", "/v1/chat/completions", g_auth, b, strlen(b));
        size_t L = strlen(b);
        PT_CHECK(send_all(fd, req.p, req.len));
        for (int part = 0; part < 3; part++) {
            size_t a0 = L * (size_t)part / 3, a1 = L * (size_t)(part + 1) / 3;
            PT_CHECK(send_all(fd, b + a0, a1 - a0));
            usleep(150000);
            hresp hr;
            PT_EQ_I64(http(port, "GET", "/health", NULL, &hr), 200);
            hresp_free(&hr);
        }
        read_all(fd, &raw);
        close(fd);
        parse_resp(&raw, &r);
        PT_EQ_I64(r.status, 200);
        json_t *j = jbody(&r);
        const char *t = json_string_value(json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"),
            "content"));
        PT_CHECK(t && ref && !strcmp(t, ref));
        json_decref(j);
        hresp_free(&r);
        pu_str_free(&req);
        pu_str_free(&raw);
        pu_free(b);
        /* a reader that sips the stream 64 bytes at a time */
        b = chat_body("Tell me a story about Tom.", 40, true, NULL);
        fd = tcp_connect(port);
        int rcv = 1024;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        build_req(&req, "POST", "/v1/chat/completions", g_auth, b, strlen(b));
        pu_str_puts(&req, b);
        PT_CHECK(send_all(fd, req.p, req.len));
        usleep(300000);
        hresp hr;
        PT_EQ_I64(http(port, "GET", "/health", NULL, &hr), 200); /* others are served */
        hresp_free(&hr);
        char buf[64];
        for (;;) {
            ssize_t k = recv(fd, buf, sizeof buf, 0);
            if (k <= 0)
                break;
            pu_str_append(&raw, buf, (size_t)k);
            usleep(2000);
        }
        close(fd);
        parse_resp(&raw, &r);
        sse s;
        sse_parse(r.body.p ? r.body.p : "", &s);
        PT_CHECK_MSG(ref && !strcmp(s.text.p, ref), "slow reader got '%s'", s.text.p);
        PT_CHECK(s.done_last);
        pu_str_free(&s.text);
        hresp_free(&r);
        pu_str_free(&req);
        pu_str_free(&raw);
        pu_free(b);
    }
    pu_free(ref);
    if (PT_TEST("mid-stream disconnect: cancelled, KV blocks back in the pool"))
        check_disconnect_stream(port, g_auth, 1000);
    if (PT_TEST("disconnect during a non-streaming request"))
        check_disconnect_wait(port, g_auth, 1000);
    if (PT_TEST("the server survived everything and shuts down cleanly")) {
        hstats h;
        PT_CHECK(wait_idle(port, &h));
        int st = srv_stop(&g_http);
        PT_EQ_I64(st, 0);
        g_http_up = false;
    }
    g_auth = "";
    if (g_http_up)
        srv_stop(&g_http);
}

/* ---------------------------------------------------------------- tools + disconnects */

/* the scripted call's parameters {} follow this schema (city optional) */
static const char *const k_tools =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":"
    "\"Get the weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":"
    "{\"type\":\"string\"}}}}}]";
/* ... and not this one (city required): the call is decoded under it */
static const char *const k_tools_req =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":"
    "\"Get the weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":"
    "{\"type\":\"string\"}},\"required\":[\"city\"]}}}]";

PT_SUITE(serve_tools) {
    if (PT_TEST("start the scripted InternLM2 model")) {
        if (make_scripted_model()) {
            char args[1400];
            snprintf(args, sizeof args, "-m '%s' -t '%s' --threads 1", g_ilm_dir, g_ilm_tok);
            g_tool_up = srv_start(&g_tool, args, "serve_tools.log");
            PT_CHECK_MSG(g_tool_up, "server did not start (log %s)", g_tool.log);
        }
    }
    if (!g_tool_up)
        return;
    int port = g_tool.port;
    hresp r;
    if (PT_TEST("tools: the model's plugin call comes back as tool_calls")) {
        char *b = chat_body("What is the weather in Paris?", 64, false, k_tools);
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r), 200);
        json_t *j = jbody(&r);
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        PT_EQ_STR(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
        json_t *m = json_object_get(c0, "message");
        PT_EQ_STR(json_string_value(json_object_get(m, "content")), "I will call a tool.");
        json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
        PT_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "name")),
                  "get_weather");
        PT_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
                  "{}");
        json_decref(j);
        hresp_free(&r);
        pu_free(b);
    }
    if (PT_TEST("tools: the call's arguments are decoded under the tool's schema")) {
        /* the script's parameters {} lack the required city: the constraint
         * after <|action_start|><|plugin|> makes that call impossible; the
         * key is forced instead (the scripted model then runs to the limit) */
        char *b = chat_body("What is the weather in Paris?", 64, false, k_tools_req);
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r), 200);
        json_t *j = jbody(&r);
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        json_t *m = json_object_get(c0, "message");
        json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
        const char *args =
            json_string_value(json_object_get(json_object_get(tc, "function"), "arguments"));
        PT_CHECK_MSG(!args || strstr(args, "\"city\""), "a call without the required city: %s",
                     args ? args : "");
        const char *content = json_string_value(json_object_get(m, "content"));
        const char *call = content ? strstr(content, "<|plugin|>{\"name\":\"get_weather\","
                                                     "\"parameters\":{") : NULL;
        PT_CHECK_MSG(args || (call && strstr(call, "\"city\"")),
                     "the call is not a prefix under the schema: %s", r.body.p);
        json_decref(j);
        hresp_free(&r);
        pu_free(b);
    }
    if (PT_TEST("tools: streaming")) {
        char *b = chat_body("What is the weather in Paris?", 64, true, k_tools);
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r), 200);
        sse s;
        sse_parse(r.body.p, &s);
        PT_EQ_STR(s.text.p, TOOL_PREFIX);
        PT_EQ_I64(s.n_tool, 1);
        PT_EQ_STR(s.tool_name, "get_weather");
        PT_EQ_STR(s.finish, "tool_calls");
        PT_CHECK(s.done_last);
        PT_CHECK(!strstr(r.body.p, "action_start"));
        pu_str_free(&s.text);
        hresp_free(&r);
        pu_free(b);
    }
    if (PT_TEST("no tools: the markup stays in the content")) {
        char *t = chat_text(port, "hi", 64, NULL);
        PT_CHECK(t && strstr(t, "<|action_start|><|plugin|>{\"name\"") != NULL);
        pu_free(t);
    }
    if (PT_TEST("tokenize renders tools and role tool as the InternLM2 plugin protocol")) {
        const char *b =
            "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\","
            "\"content\":\"weather?\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":"
            "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
            "\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},{\"role\":\"tool\","
            "\"tool_call_id\":\"c1\",\"content\":\"{\\\"temp\\\": 20}\"}],"
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
            "\"parameters\":{}}}]}";
        PT_EQ_I64(http(port, "POST", "/v1/tokenize", b, &r), 200);
        json_t *j = jbody(&r);
        const char *p = json_string_value(json_object_get(j, "prompt"));
        PT_CHECK_MSG(p && strstr(p, "<|im_start|>system\nS<|im_end|>\n<|im_start|>system "
                                    "name=<|plugin|>\n[{"),
                     "prompt: %s", p ? p : "");
        PT_CHECK(p && strstr(p, "<|action_start|><|plugin|>\n{\"name\": \"get_weather\", "
                                "\"parameters\": {\"city\": \"Paris\"}}<|action_end|>"));
        PT_CHECK(p && strstr(p, "<|im_start|>environment name=<|plugin|>\n{\"temp\": 20}"));
        size_t pl = p ? strlen(p) : 0;
        PT_CHECK(pl > 22 && !strcmp(p + pl - 22, "<|im_start|>assistant\n"));
        json_t *toks = json_object_get(j, "tokens");
        PT_EQ_I64(json_integer_value(json_array_get(toks, 0)), 1);
        PT_EQ_I64(json_integer_value(json_array_get(toks, 1)), 92543);
        json_decref(j);
        hresp_free(&r);
    }
    if (PT_TEST("mid-stream disconnect cancels; KV blocks return to the pool"))
        check_disconnect_stream(port, "", 4000);
    if (PT_TEST("disconnect while waiting for a non-streaming answer")) {
        check_disconnect_wait(port, "", 4000);
        char *t = chat_text(port, "still there?", 64, NULL);
        PT_CHECK(t != NULL);
        pu_free(t);
    }
    if (PT_TEST("shutdown")) {
        PT_EQ_I64(srv_stop(&g_tool), 0);
        g_tool_up = false;
    }
    if (g_tool_up)
        srv_stop(&g_tool);
}

/* ---------------------------------------------------------------- terminal chat */

PT_SUITE(serve_chat) {
    if (PT_TEST("puyu chat: history, /system, /reset, /quit over a pipe")) {
        if (!stories_paths())
            return;
        char cmd[2000];
        snprintf(cmd, sizeof cmd,
                 "printf 'Tell me about Tom.\\n/system You tell short stories.\\nAnd then?\\n"
                 "/reset\\n/system\\nTell me about Tom.\\n/quit\\nnever read\\n' | "
                 "%s chat -m '%s' -t '%s' --temp 0 -n 24 2>/dev/null",
                 pt_bin(), g_stories, g_stories_tok);
        char *out = NULL, *one = NULL;
        int rc = pt_run(cmd, &out);
        PT_EQ_I64(rc, 0);
        /* the same first message alone: its reply (replies may hold newlines) */
        snprintf(cmd, sizeof cmd,
                 "printf 'Tell me about Tom.\\n' | %s chat -m '%s' -t '%s' --temp 0 -n 24 "
                 "2>/dev/null",
                 pt_bin(), g_stories, g_stories_tok);
        PT_EQ_I64(pt_run(cmd, &one), 0);
        /* three replies; the first and the last answer the same conversation
         * (after /reset and clearing the system prompt), greedy: same text */
        size_t lo = one ? strlen(one) : 0, la = out ? strlen(out) : 0;
        PT_CHECK_MSG(lo > 1 && la > 2 * lo + 1 && !strncmp(out, one, lo) &&
                         !strcmp(out + la - lo, one),
                     "alone: '%s'\nscripted session: '%s'", one ? one : "", out ? out : "");
        pu_free(one);
        pu_free(out);
    }
}

/* ---------------------------------------------------------------- node + chromium */

static bool have_cmd(const char *c) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", c);
    return pt_run(cmd, NULL) == 0;
}

PT_SUITE(serve_e2e) {
    bool node = have_cmd("node") && pu_dir_exists("node_modules/openai") &&
                pu_file_exists("tests/e2e/openai_client.mjs");
    const char *chromium = have_cmd("chromium") ? "chromium" : NULL;
    srv a = {0}, b = {0};
    bool up = false, up_b = false;
    if (PT_TEST("start servers")) {
        if (!node && !chromium) {
            pt_skip("node with node_modules/openai (npm ci) and chromium absent");
        } else if (stories_paths()) {
            char args[1400];
            snprintf(args, sizeof args, "-m '%s' -t '%s' --api-key e2e-key --threads 1", g_stories,
                     g_stories_tok);
            up = srv_start(&a, args, "e2e_a.log");
            PT_CHECK(up);
            /* the tool-calling model needs the InternLM2 tokenizer from ../shared */
            if (up && pt_shared() && make_scripted_model()) {
                snprintf(args, sizeof args, "-m '%s' -t '%s' --api-key e2e-key --threads 1",
                         g_ilm_dir, g_ilm_tok);
                up_b = srv_start(&b, args, "e2e_b.log");
                PT_CHECK(up_b);
            }
        }
    }
    if (PT_TEST("openai npm client: chat, streaming, tools")) {
        if (!node) {
            pt_skip("node or node_modules/openai absent (run npm ci); skipping");
        } else if (!up) {
            pt_skip("servers not started");
        } else {
            char cmd[600], *out = NULL;
            char burl[64] = "-";
            if (up_b)
                snprintf(burl, sizeof burl, "http://127.0.0.1:%d/v1", b.port);
            snprintf(cmd, sizeof cmd,
                     "node tests/e2e/openai_client.mjs http://127.0.0.1:%d/v1 %s e2e-key 2>&1",
                     a.port, burl);
            int rc = pt_run(cmd, &out);
            PT_CHECK_MSG(rc == 0, "openai client failed (%d):\n%s", rc, out ? out : "");
            pu_free(out);
        }
    }
    if (PT_TEST("headless chromium: the web page streams an answer")) {
        if (!chromium || !have_cmd("node")) {
            pt_skip("chromium or node absent; skipping");
        } else if (!up) {
            pt_skip("servers not started");
        } else {
            char cmd[600], *out = NULL;
            snprintf(cmd, sizeof cmd,
                     "node tests/e2e/webui_check.mjs http://127.0.0.1:%d/ e2e-key 2>&1", a.port);
            int rc = pt_run(cmd, &out);
            PT_CHECK_MSG(rc == 0, "web page check failed (%d):\n%s", rc, out ? out : "");
            pu_free(out);
        }
    }
    if (up && PT_TEST("stop servers")) {
        PT_EQ_I64(srv_stop(&a), 0);
        if (up_b)
            PT_EQ_I64(srv_stop(&b), 0);
    }
    if (a.pid)
        srv_stop(&a);
    if (b.pid)
        srv_stop(&b);
}

/* ---------------------------------------------------------------- abuse */

/* A client socket from a chosen loopback address (127.0.0.X), non-blocking
 * after connect. */
static int tcp_connect_from(int port, int last_octet) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    if (last_octet != 1) {
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(0x7f000000u | (unsigned)last_octet);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            return -1;
        }
    }
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Did the server close this socket (EOF or reset)? Never blocks. */
static bool peer_closed(int fd) {
    char b[4096];
    for (;;) {
        ssize_t k = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (k == 0)
            return true;
        if (k < 0)
            return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    }
}

/* One request with a bounded wait (timeout_s for connect + answer): status
 * or -1; *secs gets the wall time. */
static int http_bounded(int port, const char *method, const char *path, const char *body,
                        double timeout_s, double *secs) {
    double t0 = pu_time_now();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int status = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        pu_str req = {0}, raw = {0};
        build_req(&req, method, path, g_auth, body, body ? strlen(body) : 0);
        if (body)
            pu_str_puts(&req, body);
        if (send_all(fd, req.p, req.len))
            read_all(fd, &raw);
        hresp r = {0};
        parse_resp(&raw, &r);
        status = r.status;
        hresp_free(&r);
        pu_str_free(&req);
        pu_str_free(&raw);
    }
    close(fd);
    *secs = pu_time_now() - t0;
    return status;
}

static int64_t rss_kb(pid_t pid) {
    char p[64], *txt = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "/proc/%ld/status", (long)pid);
    if (pu_file_read_all(p, &txt, &len) != PU_OK)
        return -1;
    const char *v = strstr(txt, "VmRSS:");
    int64_t kb = v ? strtoll(v + 6, NULL, 10) : -1;
    pu_free(txt);
    return kb;
}

typedef struct trickler {
    int *fds;
    int n;
    atomic_bool stop;
    const char *pattern; /* bytes sent one at a time, cycled */
    double every_s;      /* one byte per socket this often */
} trickler;

static void *trickle_main(void *arg) {
    trickler *t = arg;
    size_t at = 0, plen = strlen(t->pattern);
    while (!atomic_load(&t->stop)) {
        for (int i = 0; i < t->n; i++)
            if (t->fds[i] >= 0)
                send(t->fds[i], t->pattern + at % plen, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        at++;
        for (double w = 0; w < t->every_s && !atomic_load(&t->stop); w += 0.05)
            usleep(50000);
    }
    return NULL;
}

static void raise_fd_limit(rlim_t want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Hostile clients on loopback, the issue's thresholds: 300 sockets trickling
 * a never-ending request head (one byte per second each) + 300 silent ones
 * must not delay 20 normal requests past 1 s each; 40 stalled
 * unauthenticated 4 MB uploads get their 401 before any body byte and raise
 * the server's RSS by at most 10 MB; head/body deadlines and the per-address
 * limit close what they must. */
PT_SUITE(serve_abuse) {
    if (!stories_paths())
        return;
    raise_fd_limit(4096);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 1400) {
        pt_skip("the descriptor limit (ulimit -n) is below 1400");
        return;
    }
    srv a;
    bool up = false;
    if (PT_TEST("start: --api-key, 2000 connections, no per-address limit")) {
        char args[1400];
        snprintf(args, sizeof args,
                 "-m '%s' -t '%s' --ctx 256 --max-batch 4 --api-key k --threads 1 "
                 "--max-connections 2000 --max-conn-per-ip 0",
                 g_stories, g_stories_tok);
        up = srv_start(&a, args, "serve_abuse.log");
        PT_CHECK_MSG(up, "server did not start (log %s)", a.log);
    }
    if (!up)
        return;
    int port = a.port;
    g_auth = "Authorization: Bearer k\r\n";
    if (PT_TEST("300 trickling + 300 idle sockets: 20 normal requests each answer within 1 s")) {
        enum { NT = 300, NI = 300 };
        int *fds = pu_malloc((NT + NI) * sizeof(int));
        int opened = 0;
        for (int i = 0; i < NT + NI; i++) {
            fds[i] = tcp_connect_from(port, 1);
            opened += fds[i] >= 0;
        }
        PT_EQ_I64(opened, NT + NI);
        trickler t = {.fds = fds,
                      .n = NT,
                      .pattern = "GET /health HTTP/1.1\r\nX-Pad: aaaaaaaaaaaa",
                      .every_s = 1.0};
        atomic_init(&t.stop, false);
        pthread_t th;
        pthread_create(&th, NULL, trickle_main, &t);
        /* every abusive socket is accepted and held (they cost no worker) */
        int64_t conns = 0;
        for (int i = 0; i < 100 && conns < NT + NI; i++) {
            hresp r;
            if (http(port, "GET", "/health", NULL, &r) == 200) {
                json_t *j = jbody(&r);
                conns = json_integer_value(json_object_get(j, "connections"));
                json_decref(j);
            }
            hresp_free(&r);
            if (conns < NT + NI)
                usleep(50000);
        }
        PT_CHECK_MSG(conns >= NT + NI, "the server holds %lld connections, want >= %d",
                     (long long)conns, NT + NI);
        double lat[20], worst = 0;
        int ok = 0;
        for (int i = 0; i < 20; i++) {
            int st = i % 2 ? http_bounded(port, "POST", "/v1/completions",
                                          "{\"prompt\":\"Once upon a time\",\"max_tokens\":4,"
                                          "\"temperature\":0}",
                                          5.0, &lat[i])
                           : http_bounded(port, "GET", "/health", NULL, 5.0, &lat[i]);
            ok += st == 200;
            worst = lat[i] > worst ? lat[i] : worst;
            PT_CHECK_MSG(st == 200 && lat[i] <= 1.0, "request %d: status %d after %.3f s", i, st,
                         lat[i]);
            usleep(100000);
        }
        printf("    note: %d/20 answered under %d trickling + %d idle sockets; worst (= p99 of 20) "
               "%.1f ms\n",
               ok, NT, NI, worst * 1e3);
        atomic_store(&t.stop, true);
        pthread_join(th, NULL);
        for (int i = 0; i < NT + NI; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        pu_free(fds);
    }
    if (PT_TEST("40 stalled unauthenticated 4 MB uploads: 401 before the body, RSS +<= 10 MB")) {
        enum { NU = 40 };
        int fds[NU];
        hstats h;
        health(port, &h);
        usleep(200000);
        int64_t rss0 = rss_kb(a.pid);
        const char *head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n";
        int got401 = 0;
        for (int i = 0; i < NU; i++) {
            fds[i] = tcp_connect_from(port, 1);
            if (fds[i] >= 0)
                send(fds[i], head, strlen(head), MSG_NOSIGNAL);
        }
        /* the answer comes before a single body byte was sent */
        for (int i = 0; i < NU; i++) {
            char buf[512];
            ssize_t k = -1;
            for (int w = 0; w < 100 && fds[i] >= 0; w++) { /* up to 5 s */
                k = recv(fds[i], buf, sizeof buf - 1, MSG_DONTWAIT);
                if (k >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                    break;
                usleep(50000);
            }
            if (k > 12) {
                buf[k] = 0;
                got401 += !strncmp(buf + 9, "401", 3);
            }
        }
        PT_EQ_I64(got401, NU);
        /* then push as much of the body as the server will take, and stall */
        static char chunk[65536];
        memset(chunk, 'a', sizeof chunk);
        for (int i = 0; i < NU; i++)
            for (int k = 0; k < 64 && fds[i] >= 0; k++)
                if (send(fds[i], chunk, sizeof chunk, MSG_NOSIGNAL | MSG_DONTWAIT) <= 0)
                    break;
        usleep(500000);
        int64_t rss1 = rss_kb(a.pid);
        printf("    note: server RSS %lld KB -> %lld KB with %d stalled uploads\n", (long long)rss0,
               (long long)rss1, NU);
        PT_CHECK_MSG(rss0 > 0 && rss1 - rss0 <= 10 * 1024, "RSS grew by %lld KB",
                     (long long)(rss1 - rss0));
        for (int i = 0; i < NU; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    }
    if (PT_TEST("stop: exit 0")) {
        PT_EQ_I64(srv_stop(&a), 0);
    }
    srv b;
    up = false;
    if (PT_TEST("start: --head-timeout 3 --body-min-rate 100000 --max-conn-per-ip 8")) {
        char args[1400];
        snprintf(args, sizeof args,
                 "-m '%s' -t '%s' --ctx 256 --max-batch 4 --threads 1 --head-timeout 3 "
                 "--body-min-rate 100000 --max-conn-per-ip 8",
                 g_stories, g_stories_tok);
        up = srv_start(&b, args, "serve_abuse2.log");
        PT_CHECK_MSG(up, "server did not start (log %s)", b.log);
    }
    if (!up)
        return;
    port = b.port;
    g_auth = "";
    if (PT_TEST("per-address limit: 12 sockets from 127.0.0.2, 8 held, others still served")) {
        int fds[12], n_ok = 0;
        double t0 = pu_time_now();
        for (int i = 0; i < 12; i++) {
            fds[i] = tcp_connect_from(port, 2);
            n_ok += fds[i] >= 0;
        }
        if (n_ok < 12) {
            pt_skip("cannot bind 127.0.0.2 here");
        } else {
            int closed = 0;
            for (int w = 0; w < 40 && closed < 4; w++) {
                closed = 0;
                for (int i = 0; i < 12; i++)
                    closed += peer_closed(fds[i]);
                if (closed < 4)
                    usleep(50000);
            }
            double dt = pu_time_now() - t0;
            if (dt < 2.5) /* before the 3 s head deadline closes the rest */
                PT_CHECK_MSG(closed == 4, "%d of 12 closed after %.2f s, want 4", closed, dt);
            else
                PT_CHECK_MSG(closed >= 4, "%d of 12 closed", closed);
            double secs;
            PT_EQ_I64(http_bounded(port, "GET", "/health", NULL, 5.0, &secs), 200);
        }
        for (int i = 0; i < 12; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    }
    if (PT_TEST("deadlines: trickled head, trickled body and silent sockets are closed")) {
        int fds[6];
        for (int i = 0; i < 6; i++)
            fds[i] = tcp_connect_from(port, 1);
        const char *bh =
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
        send(fds[2], bh, strlen(bh), MSG_NOSIGNAL);
        send(fds[3], bh, strlen(bh), MSG_NOSIGNAL);
        int tf[4] = {fds[0], fds[1], fds[2], fds[3]};
        trickler t = {.fds = tf, .n = 4, .pattern = "aaaaaaaaaa", .every_s = 0.2};
        atomic_init(&t.stop, false);
        pthread_t th;
        pthread_create(&th, NULL, trickle_main, &t);
        double t0 = pu_time_now();
        bool closed[6] = {0};
        int n_closed = 0;
        while (n_closed < 6 && pu_time_now() - t0 < 15) {
            for (int i = 0; i < 6; i++)
                if (!closed[i] && peer_closed(fds[i])) {
                    closed[i] = true;
                    n_closed++;
                }
            usleep(100000);
        }
        double dt = pu_time_now() - t0;
        atomic_store(&t.stop, true);
        pthread_join(th, NULL);
        PT_CHECK_MSG(n_closed == 6, "%d of 6 closed after %.1f s", n_closed, dt);
        printf("    note: all 6 abusive sockets closed after %.1f s (head deadline 3 s, body "
               "3 s + 1 s)\n",
               dt);
        hresp r;
        PT_EQ_I64(http(port, "GET", "/health", NULL, &r), 200);
        json_t *j = jbody(&r);
        PT_CHECK(json_integer_value(json_object_get(j, "timeouts")) >= 6);
        json_decref(j);
        hresp_free(&r);
        for (int i = 0; i < 6; i++)
            close(fds[i]);
    }
    if (PT_TEST("stop: exit 0 (2)")) {
        PT_EQ_I64(srv_stop(&b), 0);
    }
}

/* ---------------------------------------------------------------- features */

/* SSE of n choices: text and finish reason per index, usage, [DONE] last. */
typedef struct sse_n {
    pu_str text[4];
    char finish[4][32];
    bool done_last, error;
    int64_t usage_completion;
} sse_n;

static void sse_n_parse(const char *body, sse_n *o) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < 4; i++)
        pu_str_puts(&o->text[i], "");
    o->usage_completion = -1;
    for (const char *p = body; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 6 && !strncmp(p, "data: ", 6)) {
            o->done_last = n == 12 && !strncmp(p + 6, "[DONE]", 6);
            json_t *j = o->done_last ? NULL : json_loadb(p + 6, n - 6, 0, NULL);
            if (json_object_get(j, "error"))
                o->error = true;
            json_t *u = json_object_get(j, "usage");
            if (u)
                o->usage_completion = json_integer_value(json_object_get(u, "completion_tokens"));
            json_t *cs = json_object_get(j, "choices");
            for (size_t k = 0; k < json_array_size(cs); k++) {
                json_t *c = json_array_get(cs, k);
                int64_t idx = json_integer_value(json_object_get(c, "index"));
                if (idx < 0 || idx > 3)
                    continue;
                json_t *d = json_object_get(c, "delta");
                const char *t =
                    json_string_value(json_object_get(d ? d : c, d ? "content" : "text"));
                if (t)
                    pu_str_puts(&o->text[idx], t);
                const char *fr = json_string_value(json_object_get(c, "finish_reason"));
                if (fr)
                    snprintf(o->finish[idx], sizeof o->finish[idx], "%s", fr);
            }
            json_decref(j);
        }
        p = nl ? nl + 1 : NULL;
    }
}

static void sse_n_free(sse_n *o) {
    for (int i = 0; i < 4; i++)
        pu_str_free(&o->text[i]);
}

static const char *choice_text(json_t *j, size_t i) {
    json_t *c = json_array_get(json_object_get(j, "choices"), i);
    json_t *m = json_object_get(c, "message");
    return json_string_value(json_object_get(m ? m : c, m ? "content" : "text"));
}

/* value of a Prometheus sample line "NAME VALUE" (exact name with labels) */
static double prom_value(const char *text, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, name, nl) && p[nl] == ' ')
            return strtod(p + nl + 1, NULL);
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return -1;
}

/* Open a streaming request and wait for its response head; fd or -1. */
static int open_stream(int port, const char *path, const char *body, pu_str *got) {
    int fd = tcp_connect(port);
    if (fd < 0)
        return -1;
    pu_str req = {0};
    build_req(&req, "POST", path, g_auth, body, strlen(body));
    pu_str_puts(&req, body);
    bool ok = send_all(fd, req.p, req.len);
    pu_str_free(&req);
    char buf[4096];
    while (ok && !(got->p && strstr(got->p, "\r\n\r\n"))) {
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k <= 0)
            break;
        pu_str_append(got, buf, (size_t)k);
    }
    return fd;
}

/* Embeddings computed here with the library (reference for the server). */
static bool ref_embedding(const char *text, bool last, float *out, int64_t C) {
    pu_model *m = NULL;
    pu_tok *t = NULL;
    pu_session *s = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    bool ok = pu_model_load(g_stories, &m) == PU_OK && pu_tok_load(g_stories_tok, &t) == PU_OK;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = true;
    ok = ok && pu_tok_encode(t, text, strlen(text), &eo, &ids, &n) == PU_OK;
    float *h = ok ? pu_malloc((size_t)(n * C) * sizeof(float)) : NULL;
    ok = ok && pu_session_create(m, n, NULL, &s) == PU_OK &&
         pu_session_eval_ex(s, ids, n, NULL, false, h) == PU_OK;
    if (ok) {
        double ss = 0;
        for (int64_t j = 0; j < C; j++) {
            double a = 0;
            for (int64_t i = last ? n - 1 : 0; i < n; i++)
                a += h[i * C + j];
            out[j] = (float)(a / (double)(last ? 1 : n));
            ss += (double)out[j] * out[j];
        }
        for (int64_t j = 0; j < C; j++)
            out[j] = (float)(out[j] / sqrt(ss));
    }
    pu_free(h);
    pu_free(ids);
    pu_session_destroy(s);
    pu_tok_destroy(t);
    pu_model_destroy(m);
    return ok;
}

PT_SUITE(serve_features) {
    if (!stories_paths())
        return;
    srv a;
    bool up = false;
    if (PT_TEST("start")) {
        char args[1400];
        snprintf(args, sizeof args,
                 "-m '%s' -t '%s' --ctx 1024 --max-batch 4 --api-key f --threads 1", g_stories,
                 g_stories_tok);
        up = srv_start(&a, args, "serve_features.log");
        PT_CHECK_MSG(up, "server did not start (log %s)", a.log);
    }
    if (!up)
        return;
    int port = a.port;
    g_auth = "Authorization: Bearer f\r\n";
    hresp r, r2;
    if (PT_TEST("n > 1 with a seed: n choices, reproducible, streamed alike")) {
        const char *b = "{\"prompt\":\"Once upon a time\",\"n\":3,\"temperature\":1.0,\"seed\":5,"
                        "\"max_tokens\":12,\"top_k\":0,\"top_p\":1}";
        PT_EQ_I64(http(port, "POST", "/v1/completions", b, &r), 200);
        PT_EQ_I64(http(port, "POST", "/v1/completions", b, &r2), 200);
        json_t *x = jbody(&r), *y = jbody(&r2);
        PT_EQ_I64((int64_t)json_array_size(json_object_get(x, "choices")), 3);
        bool differ = false;
        for (size_t i = 0; i < 3; i++) {
            PT_EQ_I64(json_integer_value(json_object_get(
                          json_array_get(json_object_get(x, "choices"), i), "index")),
                      (int64_t)i);
            const char *p = choice_text(x, i), *q = choice_text(y, i);
            PT_CHECK_MSG(p && q && !strcmp(p, q), "choice %zu: '%s' vs '%s'", i, p, q);
            differ |= p && strcmp(p, choice_text(x, 0)) != 0;
        }
        PT_CHECK_MSG(differ, "3 sampled choices are all the same");
        int64_t ct =
            json_integer_value(json_object_get(json_object_get(x, "usage"), "completion_tokens"));
        PT_CHECK_MSG(ct > 12 && ct <= 36, "completion_tokens %lld for 3 choices", (long long)ct);
        /* the same request streamed: per-index text identical, usage summed */
        hresp rs;
        char sb[512];
        snprintf(sb, sizeof sb,
                 "{\"prompt\":\"Once upon a time\",\"n\":3,\"temperature\":1.0,\"seed\":5,"
                 "\"max_tokens\":12,\"top_k\":0,\"top_p\":1,\"stream\":true,"
                 "\"stream_options\":{\"include_usage\":true}}");
        PT_EQ_I64(http(port, "POST", "/v1/completions", sb, &rs), 200);
        sse_n sn;
        sse_n_parse(rs.body.p, &sn);
        for (size_t i = 0; i < 3; i++) {
            PT_CHECK_MSG(!strcmp(sn.text[i].p, choice_text(x, i)), "stream %zu: '%s' vs '%s'", i,
                         sn.text[i].p, choice_text(x, i));
            PT_CHECK(sn.finish[i][0] != 0);
        }
        PT_CHECK(sn.done_last && !sn.error);
        PT_EQ_I64(sn.usage_completion, ct);
        sse_n_free(&sn);
        hresp_free(&rs);
        json_decref(x);
        json_decref(y);
        hresp_free(&r);
        hresp_free(&r2);
        /* chat, greedy: every choice is the greedy answer */
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions",
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2,"
                       "\"temperature\":0,\"max_tokens\":8}",
                       &r),
                  200);
        x = jbody(&r);
        PT_CHECK(choice_text(x, 0) && choice_text(x, 1) &&
                 !strcmp(choice_text(x, 0), choice_text(x, 1)));
        json_decref(x);
        hresp_free(&r);
    }
    if (PT_TEST("logit_bias +100 forces a token; repetition_penalty stops repeats")) {
        PT_EQ_I64(http(port, "POST", "/v1/tokenize",
                       "{\"text\":\" the\",\"add_special_tokens\":false}", &r),
                  200);
        json_t *tk = jbody(&r);
        json_t *ids = json_object_get(tk, "tokens");
        int64_t X = json_integer_value(json_array_get(ids, json_array_size(ids) - 1));
        json_decref(tk);
        hresp_free(&r);
        char b[256];
        snprintf(b, sizeof b,
                 "{\"prompt\":\"Once\",\"max_tokens\":5,\"temperature\":0,\"logprobs\":0,"
                 "\"ignore_eos\":true,\"logit_bias\":{\"%lld\":100}}",
                 (long long)X);
        PT_EQ_I64(http(port, "POST", "/v1/completions", b, &r), 200);
        json_t *j = jbody(&r);
        json_t *toks = json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs"),
            "tokens");
        PT_EQ_I64((int64_t)json_array_size(toks), 5);
        pu_str want = {0};
        for (size_t i = 0; i < json_array_size(toks); i++) {
            PT_EQ_STR(json_string_value(json_array_get(toks, i)),
                      json_string_value(json_array_get(toks, 0)));
            pu_str_puts(&want, json_string_value(json_array_get(toks, 0)));
        }
        const char *got = choice_text(j, 0);
        /* the decoder drops the leading space of the first piece */
        PT_CHECK_MSG(got && want.p && (!strcmp(got, want.p) || !strcmp(got, want.p + 1)),
                     "'%s' vs '%s'", got ? got : "", want.p ? want.p : "");
        pu_str_free(&want);
        json_decref(j);
        hresp_free(&r);
        /* repetition_penalty: greedy without it repeats (random model), with it no
         * printable token comes back twice */
        int rep[2] = {0, 0};
        for (int pass = 0; pass < 2; pass++) {
            PT_EQ_I64(http(port, "POST", "/v1/completions",
                           pass ? "{\"prompt\":\"Once upon\",\"max_tokens\":24,\"temperature\":0,"
                                  "\"logprobs\":0,\"ignore_eos\":true,\"repetition_penalty\":100}"
                                : "{\"prompt\":\"Once upon\",\"max_tokens\":24,\"temperature\":0,"
                                  "\"logprobs\":0,\"ignore_eos\":true}",
                           &r),
                      200);
            j = jbody(&r);
            toks = json_object_get(
                json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs"),
                "tokens");
            PT_EQ_I64((int64_t)json_array_size(toks), 24);
            for (size_t i = 0; i < json_array_size(toks); i++) {
                const char *ti = json_string_value(json_array_get(toks, i));
                bool printable = ti && *ti;
                for (const char *c = ti; printable && *c; c++)
                    printable = *c >= 0x20 && *c < 0x7f;
                for (size_t k = 0; printable && k < i; k++)
                    rep[pass] += !strcmp(ti, json_string_value(json_array_get(toks, k)));
            }
            json_decref(j);
            hresp_free(&r);
        }
        PT_CHECK_MSG(rep[0] > 0 && rep[1] == 0,
                     "repeated printable tokens: %d greedy, %d with repetition_penalty 100", rep[0],
                     rep[1]);
    }
    if (PT_TEST("prefix cache hits: cached_tokens in usage and in /metrics")) {
        pu_str p = {0};
        for (int i = 0; i < 20; i++)
            pu_str_puts(&p, "the little cat sat on the mat. ");
        char *b = chat_body(p.p, 2, false, NULL);
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r), 200);
        PT_EQ_I64(http(port, "POST", "/v1/chat/completions", b, &r2), 200);
        json_t *j = jbody(&r2);
        int64_t cached = json_integer_value(
            json_object_get(json_object_get(json_object_get(j, "usage"), "prompt_tokens_details"),
                            "cached_tokens"));
        int64_t prompt =
            json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
        PT_CHECK_MSG(cached >= 16 && cached < prompt, "cached %lld of %lld", (long long)cached,
                     (long long)prompt);
        json_decref(j);
        hresp_free(&r);
        hresp_free(&r2);
        pu_free(b);
        pu_str_free(&p);
        PT_EQ_I64(http(port, "GET", "/metrics", NULL, &r), 200);
        PT_CHECK(strstr(r.head.p, "text/plain") != NULL);
        const char *t = r.body.p;
        PT_CHECK(prom_value(t, "puyu_prefix_cache_hit_tokens_total") >= (double)cached);
        PT_CHECK(prom_value(t, "puyu_prompt_tokens_cached_total") >= (double)cached);
        PT_CHECK(prom_value(t, "puyu_requests_total{route=\"chat\"}") >= 3);
        PT_CHECK(prom_value(t, "puyu_requests_total{route=\"completions\"}") >= 4);
        PT_CHECK(prom_value(t, "puyu_generation_tokens_total") > 0);
        PT_CHECK(prom_value(t, "puyu_kv_blocks_total") > 0);
        PT_CHECK(prom_value(t, "puyu_kv_blocks_used") >= 0);
        PT_CHECK(prom_value(t, "puyu_kv_usage_ratio") >= 0);
        PT_CHECK(prom_value(t, "puyu_queue_waiting") >= 0);
        PT_CHECK(prom_value(t, "puyu_request_duration_seconds_count") >= 5);
        PT_CHECK(prom_value(t, "puyu_request_duration_seconds_bucket{le=\"+Inf\"}") ==
                 prom_value(t, "puyu_request_duration_seconds_count"));
        PT_CHECK(prom_value(t, "puyu_time_to_first_token_seconds_count") >= 5);
        PT_CHECK(strstr(t, "# TYPE puyu_request_duration_seconds histogram") != NULL);
        hresp_free(&r);
        g_auth = "";
        PT_EQ_I64(http(port, "GET", "/metrics", NULL, &r), 401);
        hresp_free(&r);
        g_auth = "Authorization: Bearer f\r\n";
    }
    if (PT_TEST("/v1/embeddings: mean-pooled and last-token hidden states, L2-normalised")) {
        const int64_t C = 256;
        float want_mean[256], want_last[256];
        PT_CHECK(ref_embedding("the cat sat", false, want_mean, C));
        PT_CHECK(ref_embedding("the cat sat", true, want_last, C));
        PT_EQ_I64(http(port, "POST", "/v1/embeddings",
                       "{\"input\":[\"the cat sat\",\"a dog\"],\"model\":\"x\"}", &r),
                  200);
        PT_EQ_I64(http(port, "POST", "/v1/embeddings",
                       "{\"input\":\"the cat sat\",\"pooling\":\"last\"}", &r2),
                  200);
        json_t *j = jbody(&r), *k = jbody(&r2);
        json_t *d = json_object_get(j, "data");
        PT_EQ_I64((int64_t)json_array_size(d), 2);
        json_t *e0 = json_object_get(json_array_get(d, 0), "embedding");
        json_t *e1 = json_object_get(json_array_get(json_object_get(k, "data"), 0), "embedding");
        PT_EQ_I64((int64_t)json_array_size(e0), C);
        PT_EQ_I64((int64_t)json_array_size(e1), C);
        double worst = 0, n0 = 0;
        for (int64_t i = 0; i < C && json_array_size(e0) == (size_t)C; i++) {
            double a0 = json_number_value(json_array_get(e0, (size_t)i));
            double a1 = json_number_value(json_array_get(e1, (size_t)i));
            worst = fmax(worst, fabs(a0 - want_mean[i]));
            worst = fmax(worst, fabs(a1 - want_last[i]));
            n0 += a0 * a0;
        }
        PT_CHECK_MSG(worst < 1e-5, "max |server - reference| = %g", worst);
        PT_CHECK(fabs(n0 - 1) < 1e-4);
        PT_CHECK(
            json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")) >= 4);
        json_decref(j);
        json_decref(k);
        hresp_free(&r);
        hresp_free(&r2);
        PT_EQ_I64(http(port, "POST", "/v1/embeddings", "{\"input\":[1,5,9]}", &r), 200);
        hresp_free(&r);
        PT_EQ_I64(http(port, "POST", "/v1/embeddings", "{}", &r), 400);
        j = jbody(&r);
        PT_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "param")),
                  "input");
        json_decref(j);
        hresp_free(&r);
        PT_EQ_I64(http(port, "POST", "/v1/embeddings",
                       "{\"input\":\"the cat sat\",\"encoding_format\":\"base64\"}", &r),
                  200);
        j = jbody(&r);
        const char *b64 = json_string_value(
            json_object_get(json_array_get(json_object_get(j, "data"), 0), "embedding"));
        PT_CHECK(b64 && strlen(b64) == (size_t)((C * 4 + 2) / 3 * 4));
        if (b64 && strlen(b64) == (size_t)((C * 4 + 2) / 3 * 4)) {
            unsigned char raw[1100];
            size_t nr = 0;
            for (size_t i = 0; b64[i]; i += 4) {
                unsigned v = 0;
                int pad = 0;
                for (int q4 = 0; q4 < 4; q4++) {
                    char ch = b64[i + q4];
                    const char *tb =
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                    const char *f = ch == '=' ? NULL : strchr(tb, ch);
                    pad += ch == '=';
                    v = v << 6 | (unsigned)(f ? f - tb : 0);
                }
                for (int q3 = 0; q3 < 3 - pad; q3++)
                    raw[nr++] = (unsigned char)(v >> (16 - 8 * q3));
            }
            float fv[256];
            memcpy(fv, raw, sizeof fv);
            double w2 = 0;
            for (int i = 0; i < 256; i++)
                w2 = fmax(w2, fabs(fv[i] - want_mean[i]));
            PT_CHECK_MSG(nr == 1024 && w2 < 1e-5, "base64: %zu bytes, max diff %g", nr, w2);
        }
        json_decref(j);
        hresp_free(&r);
        PT_EQ_I64(http(port, "POST", "/v1/embeddings",
                       "{\"input\":\"a\",\"encoding_format\":\"hex\"}", &r),
                  400);
        hresp_free(&r);
        PT_EQ_I64(http(port, "POST", "/v1/embeddings", "{\"input\":[1,-2]}", &r), 400);
        hresp_free(&r);
    }
    /* greedy references for the --draft server below */
    const char *gb = "{\"prompt\":\"Once upon a time\",\"max_tokens\":48,\"temperature\":0,"
                     "\"ignore_eos\":true}";
    char *ref_text = NULL;
    if (http(port, "POST", "/v1/completions", gb, &r) == 200) {
        json_t *j = jbody(&r);
        ref_text = choice_text(j, 0) ? pu_strdup(choice_text(j, 0)) : NULL;
        json_decref(j);
    }
    hresp_free(&r);
    if (PT_TEST("stop")) {
        PT_EQ_I64(srv_stop(&a), 0);
    }
    srv sd;
    up = false;
    if (PT_TEST("--draft: speculative greedy output identical to the target alone")) {
        char args[2200];
        snprintf(args, sizeof args,
                 "-m '%s' -t '%s' --ctx 1024 --max-batch 4 --threads 1 --draft '%s' --draft-k 4",
                 g_stories, g_stories_tok, g_stories);
        up = srv_start(&sd, args, "serve_draft.log");
        PT_CHECK_MSG(up, "server did not start (log %s)", sd.log);
        g_auth = "";
        if (up) {
            PT_EQ_I64(http(sd.port, "POST", "/v1/completions", gb, &r), 200);
            json_t *j = jbody(&r);
            PT_CHECK_MSG(ref_text && choice_text(j, 0) && !strcmp(ref_text, choice_text(j, 0)),
                         "draft '%s' vs target '%s'", choice_text(j, 0), ref_text);
            json_decref(j);
            hresp_free(&r);
            PT_EQ_I64(http(sd.port, "GET", "/metrics", NULL, &r), 200);
            PT_CHECK(prom_value(r.body.p, "puyu_draft_tokens_accepted_total") > 0);
            hresp_free(&r);
            PT_EQ_I64(srv_stop(&sd), 0);
        }
        if (sd.pid)
            srv_stop(&sd);
    }
    srv sk;
    up = false;
    if (PT_TEST("--kv-type q8: int8 KV pages serve, bytes per token in the log")) {
        char args[2200];
        snprintf(args, sizeof args, "-m '%s' -t '%s' --ctx 1024 --max-batch 4 --threads 1 "
                 "--kv-type q8 --draft '%s'",
                 g_stories, g_stories_tok, g_stories);
        up = srv_start(&sk, args, "serve_kvq8.log");
        PT_CHECK_MSG(up, "server did not start (log %s)", sk.log);
        g_auth = "";
        if (up) {
            PT_EQ_I64(http(sk.port, "POST", "/v1/completions", gb, &r), 200);
            json_t *j = jbody(&r);
            PT_CHECK(choice_text(j, 0) && strlen(choice_text(j, 0)) > 0);
            json_decref(j);
            hresp_free(&r);
            PT_EQ_I64(srv_stop(&sk), 0);
            char *lg = NULL;
            size_t ll = 0;
            PT_OK(pu_file_read_all(sk.log, &lg, &ll));
            /* (D codes + 8 bytes scale/zero) per row vs 4 D: between 1/4 and 1/2 */
            const char *kp = lg ? strstr(lg, "KV cache q8: ") : NULL;
            long q8 = 0, f32 = 0;
            PT_CHECK_MSG(kp && sscanf(kp, "KV cache q8: %ld bytes per token (f32: %ld)", &q8,
                                      &f32) == 2 &&
                             q8 * 4 > f32 && q8 * 2 < f32,
                         "log: %s", lg ? lg : "");
            pu_free(lg);
        }
        if (sk.pid)
            srv_stop(&sk);
    }
    pu_free(ref_text);
    /* --max-queue: one slot, one waiting, the third gets 429 + Retry-After */
    srv q;
    up = false;
    if (PT_TEST("start --max-batch 1 --max-queue 1 --ctx-per-slot 2048")) {
        char args[1400];
        snprintf(args, sizeof args,
                 "-m '%s' -t '%s' --max-batch 1 --max-queue 1 --ctx-per-slot 2048 --threads 1",
                 g_stories, g_stories_tok);
        up = srv_start(&q, args, "serve_queue.log");
        PT_CHECK_MSG(up, "server did not start (log %s)", q.log);
    }
    if (up) {
        g_auth = "";
        if (PT_TEST("--ctx-per-slot: per-sequence context and KV sized for every slot")) {
            PT_EQ_I64(http(q.port, "GET", "/v1/models", NULL, &r), 200);
            json_t *j = jbody(&r);
            PT_EQ_I64(json_integer_value(json_object_get(
                          json_array_get(json_object_get(j, "data"), 0), "max_model_len")),
                      2048);
            json_decref(j);
            hresp_free(&r);
            hstats h;
            PT_CHECK(health(q.port, &h));
            PT_CHECK_MSG(h.blocks_total >= 2048 / 16 && h.blocks_total <= 2048 / 16 + 1,
                         "blocks_total %lld", (long long)h.blocks_total);
        }
        if (PT_TEST("--max-queue: 429 with Retry-After when the queue is full")) {
            const char *lb = "{\"prompt\":\"Once\",\"max_tokens\":2000,\"ignore_eos\":true,"
                             "\"stream\":true}";
            pu_str g1 = {0}, g2 = {0};
            int f1 = open_stream(q.port, "/v1/completions", lb, &g1);
            int f2 = open_stream(q.port, "/v1/completions", lb, &g2);
            PT_CHECK(g1.p && !strncmp(g1.p + 9, "200", 3));
            PT_CHECK(g2.p && !strncmp(g2.p + 9, "200", 3));
            PT_EQ_I64(
                http(q.port, "POST", "/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":1}", &r),
                429);
            PT_CHECK(r.head.p && strstr(r.head.p, "Retry-After: 1") != NULL);
            json_t *j = jbody(&r);
            PT_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                      "queue_full");
            json_decref(j);
            hresp_free(&r);
            close(f1);
            close(f2);
            pu_str_free(&g1);
            pu_str_free(&g2);
            hstats h;
            PT_CHECK(wait_idle(q.port, &h));
            PT_EQ_I64(
                http(q.port, "POST", "/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":1}", &r),
                200);
            hresp_free(&r);
        }
        if (PT_TEST("graceful stop: a running stream finishes within --drain")) {
            /* default drain 10 s: a 40-token stream in flight at SIGTERM completes */
            pu_str got = {0};
            int fd = open_stream(q.port, "/v1/completions",
                                 "{\"prompt\":\"Once\",\"max_tokens\":40,\"ignore_eos\":true,"
                                 "\"stream\":true}",
                                 &got);
            kill(q.pid, SIGTERM);
            read_all(fd, &got);
            close(fd);
            hresp hr = {0};
            parse_resp(&got, &hr);
            sse_n sn;
            sse_n_parse(hr.body.p ? hr.body.p : "", &sn);
            PT_CHECK_MSG(sn.done_last && !sn.error && !strcmp(sn.finish[0], "length"),
                         "stream after SIGTERM: finish '%s', error %d", sn.finish[0], sn.error);
            sse_n_free(&sn);
            hresp_free(&hr);
            pu_str_free(&got);
            PT_EQ_I64(srv_stop(&q), 0);
        }
        if (q.pid)
            srv_stop(&q);
    }
    srv d;
    up = false;
    if (PT_TEST("graceful stop: --drain 0 cancels a long stream (error event, [DONE], exit 0)")) {
        char args[1400];
        snprintf(args, sizeof args, "-m '%s' -t '%s' --ctx 4096 --drain 0 --threads 1", g_stories,
                 g_stories_tok);
        up = srv_start(&d, args, "serve_drain.log");
        PT_CHECK_MSG(up, "server did not start (log %s)", d.log);
        if (up) {
            pu_str got = {0};
            int fd = open_stream(d.port, "/v1/completions",
                                 "{\"prompt\":\"Once\",\"max_tokens\":4000,\"ignore_eos\":true,"
                                 "\"stream\":true}",
                                 &got);
            char buf[4096];
            while (!strstr(got.p ? got.p : "", "\"text\"")) { /* a first token */
                ssize_t k = recv(fd, buf, sizeof buf, 0);
                if (k <= 0)
                    break;
                pu_str_append(&got, buf, (size_t)k);
            }
            kill(d.pid, SIGTERM);
            read_all(fd, &got);
            close(fd);
            hresp hr = {0};
            parse_resp(&got, &hr);
            sse_n sn;
            sse_n_parse(hr.body.p ? hr.body.p : "", &sn);
            PT_CHECK_MSG(sn.done_last && sn.error, "cancelled stream: [DONE] %d, error %d",
                         sn.done_last, sn.error);
            PT_CHECK(strstr(hr.body.p ? hr.body.p : "", "shutting down") != NULL);
            sse_n_free(&sn);
            hresp_free(&hr);
            pu_str_free(&got);
            PT_EQ_I64(srv_stop(&d), 0);
        }
        if (d.pid)
            srv_stop(&d);
    }
}

/* ---------------------------------------------------------------- structured output */

/* An independent check (jansson, not the constraint's own automaton) of the
 * schema subset the tests use: only declared keys, their types, string
 * enums, required keys present. */
static bool validate_schema(const json_t *doc, const json_t *schema, char *why, size_t wn) {
    /* tests/json_validate.h: the independent validator */
    bool ok = jv_validate((json_t *)schema, (json_t *)schema, (json_t *)doc);
    if (!ok)
        snprintf(why, wn, "does not validate against the schema");
    return ok;
}

static const char *const k_person_schema =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"},"
    "\"color\":{\"enum\":[\"red\",\"green\",\"blue\"]},\"score\":{\"type\":\"number\"}},"
    "\"required\":[\"name\",\"age\",\"color\"],\"additionalProperties\":false}";

typedef struct jstats {
    int complete, truncated, bad;
} jstats;

/* One choice's text: finish "stop" => parses as a JSON object (and follows
 * the schema if one is given); "length" => at least a valid JSON prefix. */
static void check_json_choice(const char *text, const char *finish, const json_t *schema,
                              jstats *js, const char *what) {
    if (!text || !finish) {
        PT_CHECK_MSG(false, "%s: no text/finish_reason", what);
        js->bad++;
        return;
    }
    if (!strcmp(finish, "stop")) {
        json_error_t je;
        json_t *d = json_loads(text, 0, &je);
        char why[160] = "";
        bool ok = json_is_object(d) && (!schema || validate_schema(d, schema, why, sizeof why));
        PT_CHECK_MSG(ok, "%s: not a %s: %s (%s %s)", what, schema ? "schema-valid object" : "JSON object",
                     text, why, d ? "" : je.text);
        js->complete += ok;
        js->bad += !ok;
        json_decref(d);
    } else {
        pu_json_sm sm;
        pu_json_sm_init(&sm, true);
        bool ok = pu_json_sm_feed(&sm, (const uint8_t *)text, strlen(text));
        PT_CHECK_MSG(ok && !strcmp(finish, "length"), "%s: finish %s, not a JSON prefix: %s", what,
                     finish, text);
        js->truncated += ok;
        js->bad += !ok;
    }
}

/* non-streaming: every choice */
static void json_req(int port, bool chat, const char *rf, const json_t *schema, double temp,
                     int seed, int n, int max_tokens, jstats *js) {
    pu_str b = {0};
    if (chat)
        pu_str_puts(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"Give me a person as "
                        "JSON\"}]");
    else
        pu_str_puts(&b, "{\"prompt\":\"Once upon a time\"");
    pu_str_appendf(&b, ",\"temperature\":%g,\"seed\":%d,\"n\":%d,\"max_tokens\":%d,%s}", temp,
                   seed, n, max_tokens, rf);
    hresp r;
    int code = http(port, "POST", chat ? "/v1/chat/completions" : "/v1/completions", b.p, &r);
    PT_CHECK_MSG(code == 200, "HTTP %d: %s", code, r.body.p ? r.body.p : "");
    json_t *j = jbody(&r);
    json_t *ch = json_object_get(j, "choices");
    PT_CHECK_MSG((int)json_array_size(ch) == n, "%zu choices, want %d", json_array_size(ch), n);
    for (size_t i = 0; i < json_array_size(ch); i++) {
        json_t *c = json_array_get(ch, i);
        const char *t = chat ? json_string_value(json_object_get(json_object_get(c, "message"),
                                                                 "content"))
                             : json_string_value(json_object_get(c, "text"));
        char what[96];
        snprintf(what, sizeof what, "%s T=%g seed %d choice %zu", chat ? "chat" : "completion",
                 temp, seed, i);
        check_json_choice(t, json_string_value(json_object_get(c, "finish_reason")), schema, js,
                          what);
    }
    json_decref(j);
    hresp_free(&r);
    pu_str_free(&b);
}

/* streaming with n choices: the deltas concatenated per index */
static void json_stream(int port, bool chat, const char *rf, const json_t *schema, double temp,
                        int seed, int n, int max_tokens, jstats *js) {
    pu_str b = {0};
    if (chat)
        pu_str_puts(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"A person as JSON\"}]");
    else
        pu_str_puts(&b, "{\"prompt\":\"The little dog\"");
    pu_str_appendf(&b,
                   ",\"stream\":true,\"temperature\":%g,\"seed\":%d,\"n\":%d,\"max_tokens\":%d,%s}",
                   temp, seed, n, max_tokens, rf);
    hresp r;
    int code = http(port, "POST", chat ? "/v1/chat/completions" : "/v1/completions", b.p, &r);
    PT_CHECK_MSG(code == 200, "HTTP %d", code);
    pu_str text[8] = {{0}};
    char finish[8][16] = {{0}};
    for (const char *p = r.body.p; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 6 && !strncmp(p, "data: ", 6) && strncmp(p + 6, "[DONE]", 6)) {
            json_t *j = json_loadb(p + 6, len - 6, 0, NULL);
            json_t *c = json_array_get(json_object_get(j, "choices"), 0);
            int64_t idx = json_integer_value(json_object_get(c, "index"));
            if (c && idx >= 0 && idx < 8) {
                json_t *d = json_object_get(c, "delta");
                const char *t = json_string_value(json_object_get(d ? d : c, d ? "content" : "text"));
                if (t)
                    pu_str_puts(&text[idx], t);
                const char *fr = json_string_value(json_object_get(c, "finish_reason"));
                if (fr)
                    snprintf(finish[idx], sizeof finish[idx], "%s", fr);
            }
            json_decref(j);
        }
        p = nl ? nl + 1 : NULL;
    }
    for (int i = 0; i < n && i < 8; i++) {
        char what[96];
        snprintf(what, sizeof what, "stream %s T=%g seed %d choice %d", chat ? "chat" : "completion",
                 temp, seed, i);
        check_json_choice(text[i].p ? text[i].p : "", finish[i][0] ? finish[i] : NULL, schema, js,
                          what);
        pu_str_free(&text[i]);
    }
    hresp_free(&r);
    pu_str_free(&b);
}

/* a schema without free strings: every response must complete (keys and
 * enums are forced, whitespace runs and number digits are bounded) */
static const char *const k_closed_schema =
    "{\"type\":\"object\",\"properties\":{\"color\":{\"enum\":[\"red\",\"green\",\"blue\"]},"
    "\"ok\":{\"type\":\"boolean\"},\"age\":{\"type\":\"integer\"}},"
    "\"required\":[\"color\",\"ok\",\"age\"]}";

/* nested: arrays, anyOf, bounds, $ref (every complete reply validates) */
static const char *const k_nested_schema =
    "{\"type\":\"object\",\"properties\":{\"color\":{\"enum\":[\"red\",\"green\",\"blue\"]},"
    "\"ok\":{\"type\":\"boolean\"},\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",1,null]},\"maxItems\":3},"
    "\"pos\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\",\"minimum\":-5,"
    "\"maximum\":5},\"y\":{\"anyOf\":[{\"type\":\"integer\",\"minimum\":0,\"maximum\":9},"
    "{\"type\":\"null\"}]}},\"required\":[\"x\",\"y\"],\"additionalProperties\":false},"
    "\"ref\":{\"$ref\":\"#/$defs/flag\"}},"
    "\"$defs\":{\"flag\":{\"type\":[\"boolean\",\"null\"]}},"
    "\"required\":[\"color\",\"ok\",\"age\",\"pos\"],\"additionalProperties\":false}";

/* the matrix against one server (full: every temperature; else a few) */
static void json_matrix(int port, const char *label, bool full) {
    json_t *schema = json_loads(k_person_schema, 0, NULL);
    json_t *closed = json_loads(k_closed_schema, 0, NULL);
    json_t *nested = json_loads(k_nested_schema, 0, NULL);
    char rf_schema[1200], rf_closed[1200], ls_schema[1200], rf_nested[1600];
    snprintf(rf_nested, sizeof rf_nested,
             "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
             "\"schema\":%s}}",
             k_nested_schema);
    snprintf(rf_schema, sizeof rf_schema,
             "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"person\","
             "\"strict\":true,\"schema\":%s}}",
             k_person_schema);
    snprintf(rf_closed, sizeof rf_closed,
             "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"c\","
             "\"schema\":%s}}",
             k_closed_schema);
    const char *rf_obj = "\"response_format\":{\"type\":\"json_object\"}";
    snprintf(ls_schema, sizeof ls_schema, "\"json_schema\":%s", k_person_schema);
    jstats obj = {0}, sch = {0}, cl = {0}, ne = {0};
    static const double temps[] = {0.0, 0.7, 1.0, 1.5};
    int nt = full ? 4 : 1, mt = full ? 160 : 40;
    for (int t = 0; t < nt; t++) {
        double T = full ? temps[t] : 0.8;
        json_req(port, true, rf_obj, NULL, T, 11 + t, t ? 2 : 1, mt, &obj);
        json_req(port, false, rf_schema, schema, T, 31 + t, 1, mt, &sch);
        json_req(port, t % 2, rf_closed, closed, T, 51 + t, full ? 2 : 1, 256, &cl);
        json_req(port, !(t % 2), rf_nested, nested, T, 61 + t, full ? 2 : 1, 256, &ne);
        if (full) {
            json_req(port, false, rf_obj, NULL, T, 21 + t, 1, mt, &obj);
            json_req(port, true, rf_schema, schema, T, 31 + t, 2, mt, &sch);
            json_req(port, false, ls_schema, schema, T, 41 + t, 1, mt, &sch);
        }
    }
    json_stream(port, true, rf_obj, NULL, 0.9, 5, full ? 3 : 1, mt, &obj);
    json_stream(port, false, rf_closed, closed, 0.9, 6, 2, 256, &cl);
    if (full) {
        json_stream(port, false, rf_schema, schema, 0.9, 6, 2, mt, &sch);
        json_stream(port, true, rf_closed, closed, 0.0, 7, 1, 256, &cl);
    }
    printf("    %s: json_object %d complete, %d cut by max_tokens; person schema %d complete, %d "
           "cut; closed schema %d complete, %d cut\n",
           label, obj.complete, obj.truncated, sch.complete, sch.truncated, cl.complete,
           cl.truncated);
    printf("    %s: nested schema (arrays, anyOf, bounds, $ref) %d complete (all valid), %d cut\n",
           label, ne.complete, ne.truncated);
    PT_EQ_I64(ne.bad, 0);
    json_decref(nested);
    PT_CHECK_MSG(cl.complete > 0 && cl.truncated == 0,
                 "%s: the closed schema must always complete (%d cut)", label, cl.truncated);
    PT_EQ_I64(obj.bad + sch.bad + cl.bad, 0);
    json_decref(schema);
    json_decref(closed);
}

/* 400 naming the field */
static void json_errors(int port) {
    static const struct {
        const char *rf, *param;
    } cases[] = {
        {"\"response_format\":\"json\"", "response_format"},
        {"\"response_format\":{}", "response_format.type"},
        {"\"response_format\":{\"type\":\"yaml\"}", "response_format.type"},
        {"\"response_format\":{\"type\":\"json_schema\"}", "response_format.json_schema"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":[1]}}",
         "response_format.json_schema.schema"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":{\"type\":\"array\",\"prefixItems\":[]}}}",
         "response_format.json_schema.schema.prefixItems"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\","
         "\"pattern\":\"^a+$\"}}}}}",
         "response_format.json_schema.schema.properties.a.pattern"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":{\"type\":\"object\",\"patternProperties\":{}}}}",
         "response_format.json_schema.schema.patternProperties"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":{\"properties\":{\"a\":{}},\"required\":[\"b\"]}}}",
         "response_format.json_schema.schema.required[0]"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":7}}",
         "response_format.json_schema.name"},
        {"\"json_schema\":{\"properties\":{\"a\":{\"type\":\"strng\"}}}",
         "json_schema.properties.a.type"},
        {"\"json_schema\":5", "json_schema"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int chat = 0; chat < 2; chat++) {
            pu_str b = {0};
            pu_str_appendf(&b, "{%s,\"max_tokens\":4,%s}",
                           chat ? "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
                                : "\"prompt\":\"hi\"",
                           cases[k].rf);
            hresp r;
            int code = http(port, "POST", chat ? "/v1/chat/completions" : "/v1/completions", b.p, &r);
            json_t *j = jbody(&r);
            json_t *err = json_object_get(j, "error");
            const char *param = json_string_value(json_object_get(err, "param"));
            PT_CHECK_MSG(code == 400 && param && !strcmp(param, cases[k].param),
                         "case %zu: HTTP %d param %s (want %s): %s", k, code, param ? param : "-",
                         cases[k].param, r.body.p ? r.body.p : "");
            json_decref(j);
            hresp_free(&r);
            pu_str_free(&b);
        }
    }
    /* "text" is plain generation */
    hresp r;
    PT_EQ_I64(http(port, "POST", "/v1/completions",
                   "{\"prompt\":\"hi\",\"max_tokens\":4,\"response_format\":{\"type\":\"text\"}}",
                   &r),
              200);
    hresp_free(&r);
}

PT_SUITE(serve_json) {
    srv a = {0};
    if (PT_TEST("response_format: random BPE model (tests/golden tokenizer)") && stories_paths()) {
        char args[1400];
        snprintf(args, sizeof args, "-m '%s' -t '%s' --ctx 1024 --max-batch 8 --threads 1",
                 g_stories, g_stories_tok);
        if (srv_start(&a, args, "serve_json_a.log")) {
            json_matrix(a.port, "random model, tiny_bpe tokenizer", true);
            json_errors(a.port);
            PT_EQ_I64(srv_stop(&a), 0);
        } else {
            PT_CHECK_MSG(false, "server did not start (log %s)", a.log);
        }
    }
    char model[512], tok[512];
    if (PT_TEST("response_format: stories260K (SentencePiece, byte fallback)") &&
        pt_shared_path("models/stories260K/stories260K.bin", model, sizeof model) &&
        pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok)) {
        char args[1400];
        snprintf(args, sizeof args, "-m '%s' -t '%s' --max-batch 8 --threads 1", model, tok);
        if (srv_start(&a, args, "serve_json_b.log")) {
            json_matrix(a.port, "stories260K", true);
            PT_EQ_I64(srv_stop(&a), 0);
        } else {
            PT_CHECK_MSG(false, "server did not start (log %s)", a.log);
        }
    }
    if (PT_TEST("response_format: InternLM2 tokenizer (scripted model)") && pt_shared() &&
        make_scripted_model()) {
        char args[1400];
        snprintf(args, sizeof args, "-m '%s' -t '%s' --max-batch 8 --threads 1", g_ilm_dir,
                 g_ilm_tok);
        if (srv_start(&a, args, "serve_json_c.log")) {
            json_matrix(a.port, "InternLM2 tokenizer", false);
            PT_EQ_I64(srv_stop(&a), 0);
        } else {
            PT_CHECK_MSG(false, "server did not start (log %s)", a.log);
        }
    }
}
