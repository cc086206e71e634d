/*
 * bench_serve.c — serving throughput of the continuous-batching engine on an
 * InternLM2-1.8B-shaped model with random weights (BF16, ~3.8 GB).
 *
 * usage: bench_serve [--threads N] [--layers L] [--prompt P] [--gen G]
 *                    [--streams 1,4,16] [--f32]
 *
 * For each concurrency k it submits k requests at once (distinct random
 * prompts of P tokens, greedy, ignore EOS, G new tokens each) to one engine
 * (max_batch 16) and reports: aggregate generated tokens/s over the whole
 * run (prefill included), the decode-phase aggregate (tokens after each
 * request's first / time from the last first token to the end), and
 * time-to-first-token p50/p99 over the k requests. The target is the
 * 16-stream aggregate >= 3x the single-stream one. Best of --reps runs.
 * On a shared machine wall-clock rates mostly measure the neighbours, so the
 * process CPU time per run is reported too: generated tokens per CPU-second
 * (all threads) is a noise-robust proxy for the batching gain.
 * --layers shrinks the depth for quick runs (the shapes stay 1.8B's).
 *
 * --vs-llama: side by side with llama.cpp's llama-server over HTTP, both on
 * the same GGUF file and the same load. Writes random-weight GGUFs of the
 * stories110M shape (dim 768, 12 layers, 12 heads, FFN 2048, vocab 32000 of
 * the llama2 SentencePiece tokenizer: F32 and Q8_0, --types) with
 * pu_model_write_gguf, or takes --gguf FILE; starts `puyu serve -m FILE
 * --max-batch 16` and `llama-server -m FILE -np 16 -c 16*(P+G+16)` (both
 * --threads N) on loopback, waits for /health, then alternates --reps runs
 * of the same load on each: --streams (16) clients at once, each one POST
 * /v1/completions {"prompt": [P token ids, distinct per client],
 * "max_tokens": G, "temperature": 0, "ignore_eos": true}. Aggregate tok/s =
 * sum of usage.completion_tokens / wall time from the first send to the last
 * answer (prefill included); the best run of each server and the ratio are
 * printed, and a run whose lengths differ from G is reported. llama.cpp is
 * the peer, built from source (the npm bundle of node-llama-cpp@3.22.1):
 *   npm pack node-llama-cpp@3.22.1 && tar xzf node-llama-cpp-3.22.1.tgz \
 *     package/llama/gitRelease.bundle && git clone package/llama/gitRelease.bundle llama.cpp
 *   cmake -B llama.cpp/build -S llama.cpp -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
 *     -DLLAMA_CURL=OFF && cmake --build llama.cpp/build -j2 --target llama-server
 * (default --llama-server /tmp/llama.cpp/build/bin/llama-server; skipped with a
 * message when absent). Example:
 *   build/release/bench_serve --vs-llama --threads 2 --prompt 32 --gen 128 --reps 3
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "puyu/pu_engine.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

typedef struct rec {
    pthread_mutex_t *mu;
    double t_first, t_end;
    int64_t n_gen;
    bool done;
} rec;

static double g_t0;

static void on_ev(const pu_engine_event *ev, void *ud) {
    rec *r = ud;
    double t = pu_time_now() - g_t0;
    pthread_mutex_lock(r->mu);
    if (ev->token >= 0) {
        if (r->n_gen == 0)
            r->t_first = t;
        r->n_gen++;
    }
    if (ev->finish != PU_FINISH_NONE) {
        r->t_end = t;
        r->done = true;
    }
    pthread_mutex_unlock(r->mu);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

typedef struct result {
    double agg, dec_agg, ttft50, ttft99, wall, tok_per_cpu;
} result;

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static bool run_once(pu_engine *e, int k, int64_t P, int64_t G, int64_t V, uint64_t seed,
                     result *res) {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    rec *recs = calloc((size_t)k, sizeof *recs);
    int32_t *prompt = malloc((size_t)P * sizeof(int32_t));
    pu_rng rng;
    pu_rng_seed(&rng, seed);
    double cpu0 = cpu_seconds();
    g_t0 = pu_time_now();
    for (int i = 0; i < k; i++) {
        for (int64_t j = 0; j < P; j++)
            prompt[j] = (int32_t)(3 + pu_rng_u64(&rng) % (uint64_t)(V - 3));
        recs[i].mu = &mu;
        pu_engine_request r = {0};
        r.prompt = prompt;
        r.n_prompt = P;
        r.max_tokens = G;
        r.sample = pu_sample_default_params();
        r.sample.temperature = 0;
        r.ignore_eos = true;
        r.cb = on_ev;
        r.ud = &recs[i];
        int64_t id;
        if (pu_engine_submit(e, &r, &id) != PU_OK) {
            fprintf(stderr, "submit: %s\n", pu_err_msg());
            free(recs);
            free(prompt);
            return false;
        }
    }
    for (;;) {
        int nd = 0;
        pthread_mutex_lock(&mu);
        for (int i = 0; i < k; i++)
            nd += recs[i].done;
        pthread_mutex_unlock(&mu);
        if (nd == k)
            break;
        usleep(1000);
    }
    double end = 0;
    int64_t tot = 0, after_first = 0;
    double *ttft = malloc((size_t)k * sizeof(double));
    for (int i = 0; i < k; i++) {
        end = recs[i].t_end > end ? recs[i].t_end : end;
        tot += recs[i].n_gen;
        after_first += recs[i].n_gen - 1;
        ttft[i] = recs[i].t_first;
    }
    res->wall = end;
    res->tok_per_cpu = (double)tot / (cpu_seconds() - cpu0);
    res->agg = (double)tot / end;
    /* decode phase: tokens after each request's first, over the time from
     * the earliest first token to the end */
    double min_first = ttft[0];
    for (int i = 1; i < k; i++)
        min_first = ttft[i] < min_first ? ttft[i] : min_first;
    res->dec_agg = end > min_first ? (double)after_first / (end - min_first) : 0;
    res->ttft50 = pct(ttft, k, 0.5);
    res->ttft99 = pct(ttft, k, 0.99);
    free(ttft);
    free(recs);
    free(prompt);
    return true;
}

/* ------------------------------------------------ --vs-llama (over HTTP) */

/* One HTTP/1.1 exchange on loopback (Connection: close): returns the status
 * code (0 on a transport error) and the body in *body (malloc'd). */
static int http_req(int port, const char *method, const char *path, const char *json, char **body) {
    *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return 0;
    }
    size_t jl = json ? strlen(json) : 0;
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      method, path, jl);
    bool ok = write(fd, head, (size_t)hl) == hl;
    for (size_t off = 0; ok && off < jl;) {
        ssize_t w = write(fd, json + off, jl - off);
        if (w <= 0)
            ok = false;
        else
            off += (size_t)w;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    int code = 0;
    if (!ok || sscanf(buf, "HTTP/1.%*d %d", &code) != 1) {
        free(buf);
        return 0;
    }
    char *b = strstr(buf, "\r\n\r\n");
    b = b ? b + 4 : buf + n;
    /* chunked transfer: join the chunks in place */
    char *te = strcasestr(buf, "transfer-encoding: chunked");
    if (te && te < b) {
        char *w = b, *r = b;
        for (;;) {
            char *end;
            unsigned long len = strtoul(r, &end, 16);
            char *nl = strstr(end, "\r\n");
            if (!nl || len == 0)
                break;
            r = nl + 2;
            if ((size_t)(r - buf) + len > n)
                break;
            memmove(w, r, len);
            w += len;
            r += len + 2;
        }
        *w = 0;
    }
    *body = strdup(b);
    free(buf);
    return code;
}

typedef struct client {
    int port;
    const char *json;
    double t_end;
    int64_t n_gen;
    int code;
} client;

static void *client_main(void *arg) {
    client *c = arg;
    char *body = NULL;
    c->code = http_req(c->port, "POST", "/v1/completions", c->json, &body);
    c->t_end = pu_time_now();
    c->n_gen = -1;
    json_t *root = body ? json_loads(body, 0, NULL) : NULL;
    json_t *u = root ? json_object_get(root, "usage") : NULL;
    if (u && json_is_integer(json_object_get(u, "completion_tokens")))
        c->n_gen = json_integer_value(json_object_get(u, "completion_tokens"));
    else if (c->code != 200)
        fprintf(stderr, "  HTTP %d: %.300s\n", c->code, body ? body : "");
    json_decref(root);
    free(body);
    return NULL;
}

/* k clients at once; aggregate generated tok/s, or -1 on any failure.
 * *short_ = clients whose completion length differs from G. */
static double http_load(int port, char **jsons, int k, int64_t G, int *short_) {
    client *cs = calloc((size_t)k, sizeof *cs);
    pthread_t *th = calloc((size_t)k, sizeof *th);
    double t0 = pu_time_now();
    for (int i = 0; i < k; i++) {
        cs[i].port = port;
        cs[i].json = jsons[i];
        pthread_create(&th[i], NULL, client_main, &cs[i]);
    }
    double end = t0;
    int64_t tot = 0;
    bool ok = true;
    *short_ = 0;
    for (int i = 0; i < k; i++) {
        pthread_join(th[i], NULL);
        end = cs[i].t_end > end ? cs[i].t_end : end;
        if (cs[i].code != 200 || cs[i].n_gen < 0)
            ok = false;
        else
            tot += cs[i].n_gen;
        if (cs[i].n_gen != G)
            (*short_)++;
    }
    free(cs);
    free(th);
    return ok && end > t0 ? (double)tot / (end - t0) : -1;
}

/* user + system CPU seconds of process pid (all its threads), -1 if unknown */
static double proc_cpu(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t spawn(char *const argv[], const char *log) {
    pid_t p = fork();
    if (p == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return p;
}

/* Poll GET /health until 200 (llama-server answers 503 while loading). */
static bool wait_health(int port, pid_t pid, double timeout_s) {
    double t0 = pu_time_now();
    while (pu_time_now() - t0 < timeout_s) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return false;
        char *b = NULL;
        int code = http_req(port, "GET", "/health", NULL, &b);
        free(b);
        if (code == 200)
            return true;
        usleep(200000);
    }
    return false;
}

static void stop(pid_t p) {
    if (p <= 0)
        return;
    kill(p, SIGTERM);
    for (int i = 0; i < 100; i++) {
        int st;
        if (waitpid(p, &st, WNOHANG) == p)
            return;
        usleep(100000);
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
}

static int vs_llama_file(const char *gguf, const char *puyu, const char *lls, int threads, int k,
                         int64_t P, int64_t G, int reps, int port0, int64_t V) {
    char th[16], pp[16], lp[16], ctx[32], np[16], cps[32];
    snprintf(th, sizeof th, "%d", threads);
    snprintf(pp, sizeof pp, "%d", port0);
    snprintf(lp, sizeof lp, "%d", port0 + 1);
    snprintf(np, sizeof np, "%d", k);
    snprintf(cps, sizeof cps, "%lld", (long long)(P + G + 16));
    snprintf(ctx, sizeof ctx, "%lld", (long long)k * (P + G + 16));
    char *pargv[] = {(char *)puyu,     "serve", "-m",          (char *)gguf,
                     "--port",         pp,      "--max-batch", np,
                     "--ctx-per-slot", cps,     "--threads",   th,
                     "--log-level",    "warn",  NULL};
    char *largv[] = {(char *)lls, "-m", (char *)gguf, "--port", lp, "-np",        np,  "-c",
                     ctx,         "-t", th,           "-tb",    th, "--no-webui", NULL};
    pid_t ps = spawn(pargv, "/tmp/bench_serve_puyu.log");
    pid_t ls = spawn(largv, "/tmp/bench_serve_llama.log");
    int rc = 1;
    if (!wait_health(port0, ps, 120)) {
        fprintf(stderr, "puyu serve did not come up (see /tmp/bench_serve_puyu.log)\n");
        goto out;
    }
    if (!wait_health(port0 + 1, ls, 300)) {
        fprintf(stderr,
                "llama-server did not come up or rejected %s (see "
                "/tmp/bench_serve_llama.log)\n",
                gguf);
        goto out;
    }
    /* the same prompts for both; distinct ones per client and per rep (so that
     * neither server's prompt cache serves a later rep), rep -1 the warm-up */
    int nj = k * (reps + 1);
    char **jsons = calloc((size_t)nj, sizeof *jsons);
    pu_rng rng;
    pu_rng_seed(&rng, 11);
    for (int i = 0; i < nj; i++) {
        size_t cap = (size_t)P * 8 + 256, n = 0;
        char *j = malloc(cap);
        n += (size_t)snprintf(j + n, cap - n, "{\"prompt\":[");
        for (int64_t t = 0; t < P; t++)
            n += (size_t)snprintf(j + n, cap - n, "%s%llu", t ? "," : "",
                                  (unsigned long long)(3 + pu_rng_u64(&rng) % (uint64_t)(V - 3)));
        snprintf(j + n, cap - n,
                 "],\"max_tokens\":%lld,\"temperature\":0,\"ignore_eos\":true,\"stream\":false}",
                 (long long)G);
        jsons[i] = j;
    }
    /* warm-up of both (page in the weights, first allocations): a short request */
    int sh;
    char *warm = strdup(jsons[0]);
    char *mt = strstr(warm, "\"max_tokens\":");
    snprintf(mt, strlen(mt) + 1, "\"max_tokens\":4,\"temperature\":0}");
    http_load(port0, &warm, 1, 4, &sh);
    http_load(port0 + 1, &warm, 1, 4, &sh);
    free(warm);
    double best_p = 0, best_l = 0, cp_sum = 0, cl_sum = 0, tp_sum = 0, tl_sum = 0;
    printf("%5s %12s %12s %8s %16s %16s %8s\n", "rep", "puyu tok/s", "llama tok/s", "ratio",
           "puyu tok/cpu-s", "llama tok/cpu-s", "ratio");
    for (int r = 0; r < reps; r++) {
        int shp, shl;
        char **js = jsons + (size_t)k * (r + 1);
        double c0 = proc_cpu(ps), t0 = pu_time_now();
        double a = http_load(port0, js, k, G, &shp);
        double c1 = proc_cpu(ps), t1 = pu_time_now(), c2 = proc_cpu(ls);
        double b = http_load(port0 + 1, js, k, G, &shl);
        double c3 = proc_cpu(ls), t2 = pu_time_now();
        if (a < 0 || b < 0) {
            fprintf(stderr, "a run failed (puyu %.1f, llama %.1f)\n", a, b);
            goto out_j;
        }
        /* tokens per CPU-second of the server process: robust to neighbours */
        double ap = a * (t1 - t0) / (c1 - c0), bl = b * (t2 - t1) / (c3 - c2);
        printf("%5d %12.2f %12.2f %7.2fx %16.2f %16.2f %7.2fx%s%s\n", r + 1, a, b, a / b, ap, bl,
               ap / bl, shp ? "  (puyu: lengths differ from --gen)" : "",
               shl ? "  (llama: lengths differ from --gen)" : "");
        fflush(stdout);
        best_p = a > best_p ? a : best_p;
        best_l = b > best_l ? b : best_l;
        tp_sum += a * (t1 - t0);
        tl_sum += b * (t2 - t1);
        cp_sum += c1 - c0;
        cl_sum += c3 - c2;
    }
    printf("best of %d: puyu %.2f tok/s, llama-server %.2f tok/s, ratio %.2fx; per CPU-second "
           "over all reps: puyu %.2f, llama-server %.2f, ratio %.2fx (%d streams, prompt %lld, "
           "gen %lld, %d threads)\n",
           reps, best_p, best_l, best_p / best_l, tp_sum / cp_sum, tl_sum / cl_sum,
           (tp_sum / cp_sum) / (tl_sum / cl_sum), k, (long long)P, (long long)G, threads);
    rc = 0;
out_j:
    for (int i = 0; i < nj; i++)
        free(jsons[i]);
    free(jsons);
out:
    stop(ps);
    stop(ls);
    return rc;
}

static int vs_llama(int argc, char **argv) {
    int threads = 2, reps = 3, k = 16, port0 = 18471;
    int64_t P = 32, G = 128;
    const char *gguf = NULL, *puyu = "./puyu", *lls = "/tmp/llama.cpp/build/bin/llama-server",
               *tokp = "../shared/data/models/llama2c-tokenizers/llama2_tokenizer.model",
               *dir = "/tmp";
    char types[64] = "f32,q8_0";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--vs-llama"))
            continue;
        else if (!strcmp(a, "--threads") && more)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && more)
            reps = atoi(argv[++i]);
        else if (!strcmp(a, "--streams") && more)
            k = atoi(argv[++i]);
        else if (!strcmp(a, "--prompt") && more)
            P = atoll(argv[++i]);
        else if (!strcmp(a, "--gen") && more)
            G = atoll(argv[++i]);
        else if (!strcmp(a, "--gguf") && more)
            gguf = argv[++i];
        else if (!strcmp(a, "--puyu") && more)
            puyu = argv[++i];
        else if (!strcmp(a, "--llama-server") && more)
            lls = argv[++i];
        else if (!strcmp(a, "--tok") && more)
            tokp = argv[++i];
        else if (!strcmp(a, "--dir") && more)
            dir = argv[++i];
        else if (!strcmp(a, "--types") && more)
            snprintf(types, sizeof types, "%s", argv[++i]);
        else if (!strcmp(a, "--port") && more)
            port0 = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: bench_serve --vs-llama [--threads N] [--streams K] [--prompt P] "
                    "[--gen G] [--reps R] [--gguf FILE | --types f32,q8_0 --tok SPM.model "
                    "--dir DIR] [--puyu PATH] [--llama-server PATH] [--port PORT]\n");
            return 2;
        }
    }
    if (access(lls, X_OK) != 0) {
        printf("skip: no llama-server at %s (build it as in this file's header)\n", lls);
        return 0;
    }
    if (access(puyu, X_OK) != 0) {
        fprintf(stderr, "no puyu binary at %s (--puyu)\n", puyu);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (gguf) {
        pu_model *gm = NULL;
        if (pu_model_load(gguf, &gm) != PU_OK) {
            fprintf(stderr, "%s: %s\n", gguf, pu_err_msg());
            return 1;
        }
        int64_t gv = pu_model_config(gm)->vocab_size, gp = pu_model_n_params(gm);
        pu_model_destroy(gm);
        printf("== %s (%lld params, vocab %lld)\n", gguf, (long long)gp, (long long)gv);
        return vs_llama_file(gguf, puyu, lls, threads, k, P, G, reps, port0, gv);
    }
    pu_tok *tok = NULL;
    if (pu_tok_load(tokp, &tok) != PU_OK) {
        fprintf(stderr, "tokenizer %s: %s\n", tokp, pu_err_msg());
        return 1;
    }
    pu_config c;
    pu_config_defaults(&c);
    snprintf(c.model_type, sizeof c.model_type, "internlm2");
    c.vocab_size = 32000;
    c.hidden_size = 768;
    c.intermediate_size = 2048;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 12;
    c.num_key_value_heads = 12;
    c.head_dim = 64;
    c.max_position_embeddings = 2048;
    c.rope_theta = 10000;
    c.rms_norm_eps = 1e-5;
    pu_pool *pool = pu_pool_create(0);
    pu_model *m = NULL;
    if (pu_model_init_random(&c, PU_DTYPE_F32, 1, 0.02f, true, pool, &m) != PU_OK) {
        fprintf(stderr, "init: %s\n", pu_err_msg());
        return 1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *t = strtok_r(types, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        char path[512];
        snprintf(path, sizeof path, "%s/bench_serve_110m_%s.gguf", dir, t);
        pu_model *q = NULL;
        pu_status st = PU_OK;
        if (!strcmp(t, "q8_0"))
            st = pu_model_quantize(m, PU_DTYPE_Q8_0, pool, &q);
        else if (strcmp(t, "f32") != 0) {
            fprintf(stderr, "--types: f32 or q8_0, not '%s'\n", t);
            rc = 1;
            break;
        }
        if (st == PU_OK)
            st = pu_model_write_gguf(q ? q : m, tok, path);
        pu_model_destroy(q);
        if (st != PU_OK) {
            fprintf(stderr, "write %s: %s\n", path, pu_err_msg());
            rc = 1;
            break;
        }
        struct stat sb;
        stat(path, &sb);
        printf("== %s: stories110M shape (internlm2 arch, %lld params), random weights, %s, "
               "%.0f MB\n",
               path, (long long)pu_model_n_params(m), t, (double)sb.st_size / 1e6);
        fflush(stdout);
        rc = vs_llama_file(path, puyu, lls, threads, k, P, G, reps, port0, c.vocab_size);
        unlink(path);
    }
    pu_model_destroy(m);
    pu_pool_destroy(pool);
    pu_tok_destroy(tok);
    return rc;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--vs-llama"))
            return vs_llama(argc, argv);
    int threads = 0, reps = 1;
    int64_t layers = 24, P = 32, G = 32;
    bool f32 = false;
    char streams[64] = "1,4,16";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            layers = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc)
            P = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc)
            G = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--streams") && i + 1 < argc)
            snprintf(streams, sizeof streams, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--f32"))
            f32 = true;
        else {
            fprintf(stderr, "usage: bench_serve [--threads N] [--layers L] [--prompt P] "
                            "[--gen G] [--streams 1,4,16] [--reps R] [--f32]\n");
            return 2;
        }
    }
    if (threads > 0)
        pu_threads_set_default(threads);
    pu_config c;
    pu_config_defaults(&c);
    snprintf(c.model_type, sizeof c.model_type, "internlm2");
    c.vocab_size = 92544;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_hidden_layers = layers;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = 32768;
    c.rope_theta = 1000000;
    pu_pool *pool = pu_pool_create(0);
    pu_model *m = NULL;
    double t = pu_time_now();
    if (pu_model_init_random(&c, f32 ? PU_DTYPE_F32 : PU_DTYPE_BF16, 1, 0.02f, true, pool, &m) !=
        PU_OK) {
        fprintf(stderr, "init: %s\n", pu_err_msg());
        return 1;
    }
    pu_pool_destroy(pool);
    printf("model: InternLM2-1.8B shape, %lld layers, %s, %.2f GB, init %.1f s; threads %d; "
           "prompt %lld, gen %lld per stream\n",
           (long long)layers, f32 ? "F32" : "BF16", (double)pu_model_weight_bytes(m) / 1e9,
           pu_time_now() - t, pu_threads_default(), (long long)P, (long long)G);
    pu_engine_params ep = pu_engine_default_params();
    ep.max_batch = 16;
    ep.ctx = P + G + 16;
    ep.kv_tokens = 16 * ep.ctx + 64;
    ep.prefix_sharing = false;
    pu_engine *e = NULL;
    if (pu_engine_create(m, NULL, &ep, &e) != PU_OK) {
        fprintf(stderr, "engine: %s\n", pu_err_msg());
        return 1;
    }
    printf("%8s %12s %13s %10s %10s %8s %12s\n", "streams", "agg tok/s", "decode tok/s", "ttft p50",
           "ttft p99", "wall s", "tok/cpu-s");
    double base = 0, base_cpu = 0;
    char *save = NULL;
    uint64_t seed = 7;
    for (char *tk = strtok_r(streams, ",", &save); tk; tk = strtok_r(NULL, ",", &save)) {
        int k = atoi(tk);
        if (k < 1)
            continue;
        result best = {0};
        for (int r = 0; r < reps; r++) {
            result res;
            if (!run_once(e, k, P, G, c.vocab_size, seed++, &res))
                return 1;
            if (res.agg > best.agg)
                best = res;
        }
        if (k == 1) {
            base = best.agg;
            base_cpu = best.tok_per_cpu;
        }
        printf("%8d %12.2f %13.2f %9.3fs %9.3fs %8.2f %12.3f", k, best.agg, best.dec_agg,
               best.ttft50, best.ttft99, best.wall, best.tok_per_cpu);
        if (base > 0 && k > 1)
            printf("   %.2fx single-stream (%.2fx per CPU-s)", best.agg / base,
                   best.tok_per_cpu / base_cpu);
        printf("\n");
        fflush(stdout);
    }
    pu_engine_destroy(e);
    pu_model_destroy(m);
    return 0;
}
