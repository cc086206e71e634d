/*
 * bench_vs_llama.c — puyu and llama.cpp side by side on the SAME GGUF files,
 * in the same run: prefill (pp128, pp512) and decode (tg32) tok/s of each
 * quantized type, the ratio puyu / llama.cpp, and puyu's decode against the
 * STREAM-style read bandwidth measured in the same run.
 *
 * The files (InternLM2-1.8B shape, random weights, the InternLM2 SentencePiece
 * vocabulary so llama.cpp accepts them) are made once under --dir:
 *   ilm2-1.8b-f16.gguf     random F16 weights (seed 1, uniform, std 0.02),
 *                          written by pu_model_write_gguf
 *   ilm2-1.8b-q8_0.gguf    `puyu quantize -m ...-f16.gguf --type q8_0`
 *   ilm2-1.8b-q4_0.gguf    `puyu quantize ... --type q4_0` (any puyu type)
 *   ilm2-1.8b-q4_k_m.gguf  `llama-quantize ...-f16.gguf ... Q4_K_M` (llama.cpp's
 *                          mix of Q4_K / Q6_K; puyu loads it as it is)
 * llama.cpp reads puyu's files through llama-quantize and llama-bench: a
 * loader rejection is reported as such.
 *
 * Measurement, the same for both (llama-bench semantics): each repetition
 * starts from an empty KV cache; ppN = one batch of N tokens (logits of the
 * last), tgN = N single-token steps; one warm-up run, then --reps runs,
 * mean ± sd of the per-run tok/s. Types are measured one after the other,
 * puyu then llama.cpp, never concurrently (`uptime` load printed around each).
 *
 *   build/release/bench_vs_llama [--llama-bin DIR] [--puyu PATH] [--dir DIR]
 *       [--types q8_0,q4_0,q4_k_m] [--threads 2] [--reps 3] [--pp 128,512] [--tg 32]
 *       [--layers 24] [--tokenizer TOK] [--no-warmup] [--no-llama]
 *   --no-warmup: no warm-up run (puyu) and llama-bench --no-warmup, for a loaded machine
 *
 * llama.cpp from source (the bundle shipped in the npm package, see README):
 *   npm pack node-llama-cpp@3.22.1 && tar xzf node-llama-cpp-3.22.1.tgz \
 *       package/llama/gitRelease.bundle && git clone package/llama/gitRelease.bundle llama.cpp
 *   cmake -B llama.cpp/build -S llama.cpp -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
 *       -DLLAMA_CURL=OFF && cmake --build llama.cpp/build -j2 --target llama-bench llama-quantize
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench_common.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

#define MAXPP 4

typedef struct {
    double mean, sd;
    bool ok;
} stat2;

typedef struct {
    stat2 pp[MAXPP], tg;
    double gbs_tok; /* bytes read per decoded token (GB) */
} result;

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 0;
}

static void print_load(const char *what) {
    FILE *f = fopen("/proc/loadavg", "r");
    char b[128] = "?";
    if (f) {
        if (!fgets(b, sizeof b, f))
            snprintf(b, sizeof b, "?");
        fclose(f);
    }
    b[strcspn(b, "\n")] = 0;
    printf("  [load %s: %s]\n", what, b);
    fflush(stdout);
}

static stat2 mean_sd(const double *v, int n) {
    stat2 s = {0, 0, n > 0};
    for (int i = 0; i < n; i++)
        s.mean += v[i] / n;
    for (int i = 0; i < n && n > 1; i++)
        s.sd += (v[i] - s.mean) * (v[i] - s.mean) / (n - 1);
    s.sd = sqrt(s.sd);
    return s;
}

static void die(const char *what) {
    fprintf(stderr, "bench_vs_llama: %s: %s\n", what, pu_err_msg());
    exit(1);
}

/* bytes one decode step reads: every matrix but the embedding table, one
 * embedding row, the KV cache at the mean position */
static double decode_bytes(const pu_model *m, int64_t mean_pos) {
    const pu_weights *w = pu_model_weights(m);
    const pu_config *c = pu_model_config(m);
    double b = 0;
#define TB(t) \
    ((t).data ? (double)(t).shape[0] * (double)pu_dtype_nbytes((t).dtype, (t).shape[1]) : 0)
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        b += TB(lw->wqkv) + TB(lw->wq) + TB(lw->wk) + TB(lw->wv) + TB(lw->wo) + TB(lw->w1) +
             TB(lw->w3) + TB(lw->w2);
    }
    b += TB(w->output);
#undef TB
    b += (double)pu_dtype_nbytes(w->tok_embeddings.dtype, c->hidden_size);
    b += 2.0 * (double)c->num_hidden_layers * (double)mean_pos *
         (double)(c->num_key_value_heads * c->head_dim) * 4.0;
    return b;
}

static bool g_warmup = true;

static result bench_puyu(const char *path, pu_pool *pool, const int64_t *pp, int npp, int64_t tg,
                         int reps) {
    result r;
    memset(&r, 0, sizeof r);
    pu_model *m = NULL;
    if (pu_model_load(path, &m) != PU_OK)
        die(path);
    const pu_config *c = pu_model_config(m);
    int64_t maxpp = 0;
    for (int i = 0; i < npp; i++)
        maxpp = pp[i] > maxpp ? pp[i] : maxpp;
    int64_t nctx = (maxpp > tg ? maxpp : tg) + 8;
    pu_session *s = NULL;
    if (pu_session_create(m, nctx, pool, &s) != PU_OK)
        die("session");
    int64_t V = c->vocab_size;
    int32_t *ids = pu_malloc((size_t)nctx * sizeof(int32_t));
    uint64_t x = 12345;
    for (int64_t i = 0; i < nctx; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)V);
    }
    ids[0] = 1;
    float *logits = pu_malloc((size_t)V * sizeof(float));
    double v[64];
    for (int p = 0; p < npp; p++) {
        int n = 0;
        for (int rep = g_warmup ? -1 : 0; rep < reps && n < 64; rep++) {
            pu_session_reset(s);
            double a = pu_time_now();
            if (pu_session_eval(s, ids, pp[p], logits, false) != PU_OK)
                die("prefill");
            double t = pu_time_now() - a;
            if (rep >= 0)
                v[n++] = (double)pp[p] / t;
        }
        r.pp[p] = mean_sd(v, n);
    }
    if (tg > 0) {
        int n = 0;
        for (int rep = g_warmup ? -1 : 0; rep < reps && n < 64; rep++) {
            pu_session_reset(s);
            double a = pu_time_now();
            for (int64_t i = 0; i < tg; i++)
                if (pu_session_eval(s, &ids[i], 1, logits, false) != PU_OK)
                    die("decode");
            double t = pu_time_now() - a;
            if (rep >= 0)
                v[n++] = (double)tg / t;
        }
        r.tg = mean_sd(v, n);
    }
    r.gbs_tok = decode_bytes(m, tg / 2) / 1e9;
    pu_free(logits);
    pu_free(ids);
    pu_session_destroy(s);
    pu_model_destroy(m);
    return r;
}

/* one CSV field (RFC 4180 quoting) starting at *p; advances past the comma */
static void csv_field(const char **p, char *out, size_t cap) {
    const char *s = *p;
    size_t n = 0;
    if (*s == '"') {
        s++;
        while (*s && !(*s == '"' && s[1] != '"')) {
            if (*s == '"')
                s++;
            if (n + 1 < cap)
                out[n++] = *s;
            s++;
        }
        if (*s == '"')
            s++;
    } else {
        while (*s && *s != ',' && *s != '\n' && *s != '\r') {
            if (n + 1 < cap)
                out[n++] = *s;
            s++;
        }
    }
    out[n] = 0;
    if (*s == ',')
        s++;
    *p = s;
}

/* llama-bench -o csv: columns n_prompt, n_gen, avg_ts, stddev_ts by header */
static bool bench_llama(const char *bin, const char *path, int threads, const int64_t *pp, int npp,
                        int64_t tg, int reps, result *r) {
    memset(r, 0, sizeof *r);
    char cmd[4096], pps[256] = "";
    for (int i = 0; i < npp; i++)
        snprintf(pps + strlen(pps), sizeof pps - strlen(pps), "%s%lld", i ? "," : "",
                 (long long)pp[i]);
    snprintf(cmd, sizeof cmd, "'%s/llama-bench' -m '%s' -t %d -p %s -n %lld -r %d%s -o csv 2>&1",
             bin, path, threads, npp ? pps : "0", (long long)tg, reps,
             g_warmup ? "" : " --no-warmup");
    printf("  $ %s\n", cmd);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f)
        return false;
    char line[8192], fld[1024];
    int c_np = -1, c_ng = -1, c_ts = -1, c_sd = -1;
    bool any = false;
    while (fgets(line, sizeof line, f)) {
        const char *p = line;
        if (c_ts < 0) {
            if (!strstr(line, "avg_ts")) {
                printf("    llama-bench: %s", line); /* load errors etc. */
                continue;
            }
            for (int col = 0; *p && *p != '\n'; col++) {
                csv_field(&p, fld, sizeof fld);
                if (!strcmp(fld, "n_prompt"))
                    c_np = col;
                else if (!strcmp(fld, "n_gen"))
                    c_ng = col;
                else if (!strcmp(fld, "avg_ts"))
                    c_ts = col;
                else if (!strcmp(fld, "stddev_ts"))
                    c_sd = col;
            }
            continue;
        }
        long long np = -1, ng = -1;
        double ts = 0, sd = 0;
        for (int col = 0; *p && *p != '\n'; col++) {
            csv_field(&p, fld, sizeof fld);
            if (col == c_np)
                np = atoll(fld);
            else if (col == c_ng)
                ng = atoll(fld);
            else if (col == c_ts)
                ts = atof(fld);
            else if (col == c_sd)
                sd = atof(fld);
        }
        stat2 st = {ts, sd, ts > 0};
        if (tg > 0 && np == 0 && ng == tg)
            r->tg = st, any = true;
        for (int i = 0; i < npp; i++)
            if (ng == 0 && np == pp[i])
                r->pp[i] = st, any = true;
    }
    int rc = pclose(f);
    return any && rc == 0;
}

static int run(const char *cmd) {
    printf("  $ %s\n", cmd);
    fflush(stdout);
    return system(cmd);
}

int main(int argc, char **argv) {
    const char *lbin = "/tmp/llama.cpp/build/bin", *puyu = "build/release/puyu";
    const char *dir = "/tmp/puyu_vs_llama", *types = "q8_0,q4_0,q4_k_m";
    const char *tok_path = "../shared/data/internlm2/tokenizer.model", *pps = "128,512";
    int threads = 2, reps = 3, layers = 24;
    int64_t tg = 32;
    bool no_llama = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--llama-bin") && v)
            lbin = v, i++;
        else if (!strcmp(a, "--puyu") && v)
            puyu = v, i++;
        else if (!strcmp(a, "--dir") && v)
            dir = v, i++;
        else if (!strcmp(a, "--types") && v)
            types = v, i++;
        else if (!strcmp(a, "--tokenizer") && v)
            tok_path = v, i++;
        else if (!strcmp(a, "--pp") && v)
            pps = v, i++;
        else if (!strcmp(a, "--threads") && v)
            threads = atoi(v), i++;
        else if (!strcmp(a, "--reps") && v)
            reps = atoi(v), i++;
        else if (!strcmp(a, "--layers") && v)
            layers = atoi(v), i++;
        else if (!strcmp(a, "--tg") && v)
            tg = atoll(v), i++;
        else if (!strcmp(a, "--no-warmup"))
            g_warmup = false;
        else if (!strcmp(a, "--no-llama"))
            no_llama = true;
        else {
            fprintf(stderr,
                    "usage: bench_vs_llama [--llama-bin DIR] [--puyu PATH] [--dir DIR] [--types "
                    "q8_0,q4_0,q4_k_m] [--threads N] [--reps R] [--pp 128,512] [--tg 32] "
                    "[--layers 24] [--tokenizer TOK] [--no-warmup] [--no-llama]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 60)
        reps = 3;
    int64_t pp[MAXPP];
    int npp = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", pps);
    for (char *t = strtok(buf, ","); t && npp < MAXPP; t = strtok(NULL, ","))
        if (atoll(t) > 0)
            pp[npp++] = atoll(t);
    pu_log_set_level(PU_LOG_WARN);
    pu_pool *pool = pu_pool_create(threads);
    mkdir(dir, 0755);
    char src[1024], cmd[4096];
    snprintf(src, sizeof src, "%s/ilm2-1.8b%s-f16.gguf", dir, layers == 24 ? "" : "-short");
    printf("bench_vs_llama: InternLM2-1.8B shape (%d layers), %d threads, kernels %s\n", layers,
           pu_pool_size(pool), pu_kernels_get()->name);
    if (!file_exists(src)) {
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
        c.rms_norm_eps = 1e-5;
        c.rope_theta = 1e6;
        c.bias = false;
        c.tie_word_embeddings = false;
        c.bos_token_id = 1;
        c.eos_token_id = 2;
        pu_tok *tok = NULL;
        if (pu_tok_load(tok_path, &tok) != PU_OK)
            die(tok_path);
        pu_model *m = NULL;
        double t0 = pu_time_now();
        if (pu_model_init_random(&c, PU_DTYPE_F16, 1, 0.02f, true, pool, &m) != PU_OK)
            die("random model");
        if (pu_model_write_gguf(m, tok, src) != PU_OK)
            die(src);
        printf("  wrote %s (random F16) in %.1f s\n", src, pu_time_now() - t0);
        pu_model_destroy(m);
        pu_tok_destroy(tok);
    }
    double bw = pu_bench_stream_read(pool, (size_t)2 << 30, 5);
    printf("STREAM-style read (2 GiB, %d threads): %.1f GB/s; best 64 MiB segment %.1f GB/s; "
           "FP32 FMA peak %.1f GFLOP/s\n",
           pu_pool_size(pool), bw, pu_bench_read_bw(pool, (size_t)1 << 30),
           pu_bench_fma_peak(pool));

    char tlist[256];
    snprintf(tlist, sizeof tlist, "%s", types);
    char *save = NULL;
    struct row {
        char type[16];
        result pu, ll;
        bool ll_ok;
    } rows[16];
    int nr = 0;
    for (char *t = strtok_r(tlist, ",", &save); t && nr < 16; t = strtok_r(NULL, ",", &save)) {
        char path[1100];
        snprintf(path, sizeof path, "%s/ilm2-1.8b%s-%s.gguf", dir, layers == 24 ? "" : "-short", t);
        printf("\n[%s] %s\n", t, path);
        if (!file_exists(path)) {
            if (!strcmp(t, "q4_k_m") || !strcmp(t, "q5_k_m"))
                snprintf(cmd, sizeof cmd, "'%s/llama-quantize' '%s' '%s' %s %d > '%s.log' 2>&1",
                         lbin, src, path, !strcmp(t, "q4_k_m") ? "Q4_K_M" : "Q5_K_M", threads,
                         path);
            else
                snprintf(cmd, sizeof cmd, "'%s' quantize -m '%s' --type %s --out '%s'", puyu, src,
                         t, path);
            if (run(cmd) != 0 || !file_exists(path)) {
                printf("  could not make %s (see above / %s.log)\n", path, path);
                continue;
            }
        }
        struct row *R = &rows[nr++];
        snprintf(R->type, sizeof R->type, "%s", t);
        memset(&R->pu, 0, sizeof R->pu);
        memset(&R->ll, 0, sizeof R->ll);
        R->ll_ok = !no_llama;
        /* test by test, puyu then llama.cpp right after it: both see about
         * the same load */
        for (int i = 0; i <= npp; i++) {
            bool is_tg = i == npp;
            if (is_tg && tg <= 0)
                break;
            int64_t one_pp = is_tg ? 0 : pp[i];
            print_load("before puyu");
            result a = bench_puyu(path, pool, &one_pp, is_tg ? 0 : 1, is_tg ? tg : 0, reps);
            if (is_tg) {
                R->pu.tg = a.tg, R->pu.gbs_tok = a.gbs_tok;
                printf("  puyu      tg%-4lld %8.2f ± %.2f tok/s  (%.3f GB/token: %.1f GB/s = "
                       "%.1f%% of the read)\n",
                       (long long)tg, a.tg.mean, a.tg.sd, a.gbs_tok, a.gbs_tok * a.tg.mean,
                       100.0 * a.gbs_tok * a.tg.mean / bw);
            } else {
                R->pu.pp[i] = a.pp[0];
                printf("  puyu      pp%-4lld %8.2f ± %.2f tok/s\n", (long long)pp[i], a.pp[0].mean,
                       a.pp[0].sd);
            }
            if (no_llama)
                continue;
            result b;
            print_load("before llama.cpp");
            bool ok =
                bench_llama(lbin, path, threads, &one_pp, is_tg ? 0 : 1, is_tg ? tg : 0, reps, &b);
            if (!ok) {
                printf("  llama.cpp: no result (its loader rejected the file? see above)\n");
                R->ll_ok = false;
                continue;
            }
            stat2 st = is_tg ? b.tg : b.pp[0];
            if (is_tg)
                R->ll.tg = st;
            else
                R->ll.pp[i] = st;
            printf("  llama.cpp %s%-4lld %8.2f ± %.2f tok/s   ratio puyu/llama.cpp %.2fx\n",
                   is_tg ? "tg" : "pp", (long long)(is_tg ? tg : pp[i]), st.mean, st.sd,
                   st.mean > 0 ? (is_tg ? R->pu.tg.mean : R->pu.pp[i].mean) / st.mean : 0.0);
        }
    }
    double bw2 = pu_bench_stream_read(pool, (size_t)2 << 30, 5);
    print_load("end");
    printf("\nSTREAM-style read after: %.1f GB/s (before %.1f)\n", bw2, bw);
    if (bw2 > bw)
        bw = bw2;
    printf("\nsummary (%d threads, mean of %d runs; ratio = puyu / llama.cpp; %%BW = decode bytes "
           "x tok/s / best STREAM read %.1f GB/s)\n",
           pu_pool_size(pool), reps, bw);
    printf("%-8s", "type");
    for (int i = 0; i < npp; i++)
        printf(" | pp%-4lld puyu  llama  ratio", (long long)pp[i]);
    printf(" | tg%-3lld puyu  llama  ratio  %%BW-puyu %%BW-llama\n", (long long)tg);
    for (int j = 0; j < nr; j++) {
        struct row *R = &rows[j];
        printf("%-8s", R->type);
        for (int i = 0; i < npp; i++)
            printf(" |     %6.1f %6.1f %5.2fx", R->pu.pp[i].mean, R->ll.pp[i].mean,
                   R->ll_ok && R->ll.pp[i].mean > 0 ? R->pu.pp[i].mean / R->ll.pp[i].mean : 0.0);
        double g = R->pu.gbs_tok;
        printf(" |    %6.2f %6.2f %5.2fx   %5.1f%%    %5.1f%%\n", R->pu.tg.mean, R->ll.tg.mean,
               R->ll_ok && R->ll.tg.mean > 0 ? R->pu.tg.mean / R->ll.tg.mean : 0.0,
               100.0 * g * R->pu.tg.mean / bw, 100.0 * g * R->ll.tg.mean / bw);
    }
    pu_pool_destroy(pool);
    return 0;
}
