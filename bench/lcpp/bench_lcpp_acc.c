/*
 * bench_lcpp_acc.c — accuracy of puyu's quantized inference next to
 * llama.cpp's on the same GGUF files (built by `make bench-lcpp` only when
 * llama.cpp's libllama exists; see bench/lcpp/README.md).
 *
 * For every GGUF file given:
 *   - a float64 forward of the file's weights, dequantized exactly (ggml's
 *     block layouts via puyu's reference dequantizers; RMSNorm, adjacent-pair
 *     RoPE, causal GQA attention, SwiGLU, all in double) is the reference;
 *   - puyu's logits (pu_session, F32 KV) and llama.cpp's (libllama, F32 KV,
 *     no flash attention, n_ubatch = all tokens) for the same token ids;
 *   - their errors against the reference: RMS(Δ) / RMS(ref) and max |Δ| over
 *     every position and vocabulary entry, plus the top-1 agreement.
 * With --ppl TEXT also the perplexity of each file under both libraries on
 * the same ids with llama-perplexity's protocol (chunks of --ctx tokens, BOS
 * as the first token of each chunk, the second half of each chunk scored).
 *
 *   bench_lcpp_acc [--ids-text FILE] [-n 64] [--ppl TEXT --ctx 128 --chunks 16]
 *                  [--threads 2] FILE.gguf ...
 *   bench_lcpp_acc --random PREFIX -t TOK.model   writes PREFIX-{f32,q8_0,...}.gguf:
 *       a random InternLM2-style model with 256-divisible rows (hidden 256,
 *       ffn 768, 2 layers, 4 heads, 2 kv heads) so every K-quant is used
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

static const char *TYPES[] = {"f32",  "f16",  "q8_0", "q6_k", "q5_k",
                              "q5_1", "q5_0", "q4_k", "q4_1", "q4_0"};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

static void die(const char *what) {
    fprintf(stderr, "bench_lcpp_acc: %s: %s\n", what, pu_err_msg());
    exit(1);
}

/* ---------------------------------------------------------------- float64 reference */

static double *deq(const pu_tensor *t) {
    int64_t R = t->ndim == 2 ? t->shape[0] : 1, K = t->ndim == 2 ? t->shape[1] : t->shape[0];
    const pu_kernels *kr = pu_kernels_for(PU_SIMD_REF);
    double *o = malloc((size_t)(R * K) * sizeof(double));
    float *row = malloc((size_t)K * sizeof(float));
    int64_t rb = pu_dtype_nbytes(t->dtype, K);
    for (int64_t r = 0; r < R; r++) {
        kr->to_f32[t->dtype](row, (const char *)t->data + r * rb, K);
        for (int64_t k = 0; k < K; k++)
            o[r * K + k] = row[k];
    }
    free(row);
    return o;
}

/* y (n, N) = x (n, K) W^T, W (N, K) */
static void mm64(double *y, const double *x, const double *W, int64_t n, int64_t N, int64_t K) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            const double *w = W + j * K, *xr = x + t * K;
            for (int64_t k = 0; k < K; k++)
                s += xr[k] * w[k];
            y[t * N + j] = s;
        }
}

static void rms64(double *y, const double *x, const double *w, int64_t n, int64_t C, double eps) {
    for (int64_t t = 0; t < n; t++) {
        double ss = 0;
        for (int64_t k = 0; k < C; k++)
            ss += x[t * C + k] * x[t * C + k];
        double r = 1.0 / sqrt(ss / (double)C + eps);
        for (int64_t k = 0; k < C; k++)
            y[t * C + k] = x[t * C + k] * r * w[k];
    }
}

static void rope64(double *x, int64_t n, int64_t nh, int64_t D, double base) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < nh; h++) {
            double *v = x + (t * nh + h) * D;
            for (int64_t i = 0; i < D / 2; i++) {
                double th = (double)t * pow(base, -2.0 * (double)i / (double)D);
                double c = cos(th), s = sin(th), a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = b * c + a * s;
            }
        }
}

static void forward64(const pu_model *m, const int32_t *ids, int64_t n, double *logits) {
    const pu_config *c = pu_model_config(m);
    const pu_weights *w = pu_model_weights(m);
    int64_t C = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    int64_t D = c->head_dim, F = c->intermediate_size, V = c->vocab_size, G = H / Hkv;
    if (!c->rope_interleaved || w->layers[0].wqkv.data ||
        c->rope_scaling_type != PU_ROPE_SCALING_NONE) {
        fprintf(stderr, "forward64: needs a GGUF (separate q/k/v, adjacent-pair RoPE, no "
                        "rope scaling)\n");
        exit(1);
    }
    double *x = calloc((size_t)(n * C), sizeof(double)), *xb = malloc((size_t)(n * C) * 8);
    double *q = malloc((size_t)(n * H * D) * 8), *k = malloc((size_t)(n * Hkv * D) * 8);
    double *v = malloc((size_t)(n * Hkv * D) * 8), *att = malloc((size_t)(n * H * D) * 8);
    double *h1 = malloc((size_t)(n * F) * 8), *h3 = malloc((size_t)(n * F) * 8);
    double *tmp = malloc((size_t)(n * (C > F ? C : F)) * 8), *sc = malloc((size_t)n * 8);
    double *E = deq(&w->tok_embeddings);
    for (int64_t t = 0; t < n; t++)
        memcpy(x + t * C, E + (int64_t)ids[t] * C, (size_t)C * 8);
    free(E);
    double eps = c->rms_norm_eps;
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        double *an = deq(&lw->attn_norm), *fn = deq(&lw->ffn_norm);
        double *Wq = deq(&lw->wq), *Wk = deq(&lw->wk), *Wv = deq(&lw->wv), *Wo = deq(&lw->wo);
        double *W1 = deq(&lw->w1), *W2 = deq(&lw->w2), *W3 = deq(&lw->w3);
        rms64(xb, x, an, n, C, eps);
        mm64(q, xb, Wq, n, H * D, C);
        mm64(k, xb, Wk, n, Hkv * D, C);
        mm64(v, xb, Wv, n, Hkv * D, C);
        rope64(q, n, H, D, c->rope_theta);
        rope64(k, n, Hkv, D, c->rope_theta);
        for (int64_t t = 0; t < n; t++)
            for (int64_t h = 0; h < H; h++) {
                const double *qh = q + (t * H + h) * D;
                int64_t g = h / G;
                double mx = -INFINITY, se = 0;
                for (int64_t j = 0; j <= t; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += qh[d] * k[(j * Hkv + g) * D + d];
                    sc[j] = s / sqrt((double)D);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int64_t j = 0; j <= t; j++)
                    se += (sc[j] = exp(sc[j] - mx));
                double *o = att + (t * H + h) * D;
                for (int64_t d = 0; d < D; d++) {
                    double a = 0;
                    for (int64_t j = 0; j <= t; j++)
                        a += sc[j] * v[(j * Hkv + g) * D + d];
                    o[d] = a / se;
                }
            }
        mm64(tmp, att, Wo, n, C, H * D);
        for (int64_t i = 0; i < n * C; i++)
            x[i] += tmp[i];
        rms64(xb, x, fn, n, C, eps);
        mm64(h1, xb, W1, n, F, C);
        mm64(h3, xb, W3, n, F, C);
        for (int64_t i = 0; i < n * F; i++)
            h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h3[i];
        mm64(tmp, h1, W2, n, C, F);
        for (int64_t i = 0; i < n * C; i++)
            x[i] += tmp[i];
        double *fr[] = {an, fn, Wq, Wk, Wv, Wo, W1, W2, W3};
        for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++)
            free(fr[i]);
    }
    double *nw = deq(&w->norm), *Wout = deq(&w->output);
    rms64(xb, x, nw, n, C, eps);
    mm64(logits, xb, Wout, n, V, C);
    free(nw);
    free(Wout);
    double *fr[] = {x, xb, q, k, v, att, h1, h3, tmp, sc};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++)
        free(fr[i]);
}

/* ---------------------------------------------------------------- the two libraries */

static void puyu_logits(const pu_model *m, pu_pool *pool, const int32_t *ids, int64_t n,
                        float *out) {
    pu_session *s = NULL;
    if (pu_session_create(m, n, pool, &s) != PU_OK)
        die("session");
    if (pu_session_eval(s, ids, n, out, true) != PU_OK)
        die("eval");
    pu_session_destroy(s);
}

static struct llama_context *lcpp_ctx(struct llama_model *lm, int64_t n, int threads) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n;
    cp.n_batch = (uint32_t)n;
    cp.n_ubatch = (uint32_t)n;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    return llama_init_from_model(lm, cp);
}

/* logits (n, V) of ids in one batch, on a fresh context */
static int lcpp_logits(struct llama_model *lm, const int32_t *ids, int64_t n, int64_t V,
                       int threads, float *out) {
    struct llama_context *ctx = lcpp_ctx(lm, n, threads);
    if (!ctx)
        return -1;
    struct llama_batch b = llama_batch_init((int32_t)n, 0, 1);
    for (int64_t i = 0; i < n; i++) {
        b.token[i] = ids[i];
        b.pos[i] = (llama_pos)i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = (int32_t)n;
    int rc = llama_decode(ctx, b);
    for (int64_t i = 0; rc == 0 && i < n; i++)
        memcpy(out + i * V, llama_get_logits_ith(ctx, (int32_t)i), (size_t)V * sizeof(float));
    llama_batch_free(b);
    llama_free(ctx);
    return rc;
}

typedef struct {
    double rel_rms, max_abs, top1;
} err_t;

static err_t errs(const float *y, const double *ref, int64_t n, int64_t V) {
    double se = 0, sr = 0, mx = 0;
    int64_t agree = 0;
    for (int64_t t = 0; t < n; t++) {
        int64_t a = 0, b = 0;
        for (int64_t v = 0; v < V; v++) {
            double d = (double)y[t * V + v] - ref[t * V + v];
            se += d * d;
            sr += ref[t * V + v] * ref[t * V + v];
            mx = fabs(d) > mx ? fabs(d) : mx;
            if (y[t * V + v] > y[t * V + a])
                a = v;
            if (ref[t * V + v] > ref[t * V + b])
                b = v;
        }
        agree += a == b;
    }
    err_t e = {sqrt(se / sr), mx, (double)agree / (double)n};
    return e;
}

/* llama-perplexity's protocol on ids: chunks of ctx, BOS first, second half scored */
static double nll_chunk(const float *lg, const int32_t *ids, int64_t ctx, int64_t V) {
    double nll = 0;
    for (int64_t j = ctx / 2; j + 1 < ctx; j++) {
        const float *l = lg + j * V;
        double mx = l[0], se = 0;
        for (int64_t v = 1; v < V; v++)
            mx = l[v] > mx ? l[v] : mx;
        for (int64_t v = 0; v < V; v++)
            se += exp((double)l[v] - mx);
        nll += -((double)l[ids[j + 1]] - mx - log(se));
    }
    return nll;
}

/* ---------------------------------------------------------------- main */

static int32_t *read_ids(const char *text, const pu_tok *tok, int64_t max, int64_t *n) {
    char *buf = NULL;
    size_t len = 0;
    if (pu_file_read_all(text, &buf, &len) != PU_OK)
        die(text);
    if (len > (size_t)max * 16)
        len = (size_t)max * 16;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = true;
    eo.parse_special = false;
    int32_t *ids = NULL;
    if (pu_tok_encode(tok, buf, len, &eo, &ids, n) != PU_OK)
        die("encode");
    pu_free(buf);
    if (*n > max)
        *n = max;
    return ids;
}

static int make_random(const char *prefix, const char *tokp) {
    pu_tok *tok = NULL;
    if (pu_tok_load(tokp, &tok) != PU_OK)
        die(tokp);
    pu_config c;
    pu_config_defaults(&c);
    c.vocab_size = pu_tok_n_vocab(tok);
    c.hidden_size = 256;
    c.intermediate_size = 768;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.max_position_embeddings = 512;
    c.rope_theta = 10000;
    pu_pool *pool = pu_pool_create(0);
    pu_model *m = NULL;
    if (pu_model_init_random(&c, PU_DTYPE_F32, 7, 0.05f, false, pool, &m) != PU_OK)
        die("random model");
    for (size_t i = 0; i < N_TYPES; i++) {
        pu_dtype dt;
        pu_dtype_parse(TYPES[i], &dt);
        pu_model *q = NULL;
        char path[1024];
        snprintf(path, sizeof path, "%s-%s.gguf", prefix, TYPES[i]);
        if (pu_model_quantize(m, dt, pool, &q) != PU_OK || pu_model_write_gguf(q, tok, path))
            die(path);
        pu_model_destroy(q);
        printf("wrote %s\n", path);
    }
    pu_model_destroy(m);
    pu_pool_destroy(pool);
    pu_tok_destroy(tok);
    return 0;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level >= GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

int main(int argc, char **argv) {
    const char *ids_text = NULL, *ppl_text = NULL, *random = NULL, *tokp = NULL;
    int64_t n = 64, ctx = 128, chunks = 16;
    int threads = 2;
    const char *files[64];
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ids-text") && i + 1 < argc)
            ids_text = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--ppl") && i + 1 < argc)
            ppl_text = argv[++i];
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--chunks") && i + 1 < argc)
            chunks = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--random") && i + 1 < argc)
            random = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            tokp = argv[++i];
        else if (argv[i][0] != '-' && nf < 64)
            files[nf++] = argv[i];
        else {
            fprintf(stderr, "usage: see the comment at the top of bench/lcpp/bench_lcpp_acc.c\n");
            return 2;
        }
    }
    pu_log_set_level(PU_LOG_WARN);
    if (random) {
        if (!tokp) {
            fprintf(stderr, "--random needs -t TOK.model\n");
            return 2;
        }
        return make_random(random, tokp);
    }
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    pu_pool *pool = pu_pool_create(threads);
    printf("%-40s %-6s | %-28s | %-28s | %s\n", "file", "type", "puyu: rel RMS, max |d|, top1",
           "llama.cpp: rel RMS, max, top1", ppl_text ? "ppl puyu / llama.cpp" : "");
    for (int f = 0; f < nf; f++) {
        pu_model *m = NULL;
        if (pu_model_load(files[f], &m) != PU_OK)
            die(files[f]);
        const pu_config *c = pu_model_config(m);
        int64_t V = c->vocab_size;
        pu_tok *tok = NULL;
        int32_t *ids = NULL;
        int64_t nid = 0;
        if (ids_text) {
            if (pu_tok_load(files[f], &tok) != PU_OK)
                die("tokenizer in the gguf");
            ids = read_ids(ids_text, tok, n, &nid);
        } else {
            nid = n;
            ids = malloc((size_t)n * sizeof(int32_t));
            for (int64_t i = 0; i < n; i++)
                ids[i] = (int32_t)((i * 7919 + 13) % V);
        }
        double *ref = malloc((size_t)(nid * V) * sizeof(double));
        float *yp = malloc((size_t)(nid * V) * sizeof(float));
        float *yl = malloc((size_t)(nid * V) * sizeof(float));
        forward64(m, ids, nid, ref);
        puyu_logits(m, pool, ids, nid, yp);
        struct llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = 0;
        struct llama_model *lm = llama_model_load_from_file(files[f], mp);
        if (!lm || llama_vocab_n_tokens(llama_model_get_vocab(lm)) != V) {
            fprintf(stderr, "llama.cpp cannot load %s (or its vocabulary differs)\n", files[f]);
            return 1;
        }
        if (lcpp_logits(lm, ids, nid, V, threads, yl) != 0) {
            fprintf(stderr, "llama_decode failed on %s\n", files[f]);
            return 1;
        }
        err_t ep = errs(yp, ref, nid, V), el = errs(yl, ref, nid, V);
        /* the dominant dtype: that of w1 of layer 0 */
        const char *tn = pu_dtype_name(pu_model_weights(m)->layers[0].w1.dtype);
        printf("%-40s %-6s | %9.3e %9.3e %5.3f | %9.3e %9.3e %5.3f |", files[f], tn, ep.rel_rms,
               ep.max_abs, ep.top1, el.rel_rms, el.max_abs, el.top1);
        if (ppl_text) {
            if (!tok && pu_tok_load(files[f], &tok) != PU_OK)
                die("tokenizer in the gguf");
            int64_t np = 0;
            int32_t *pi = read_ids(ppl_text, tok, ctx * chunks + 1, &np);
            int64_t nch = np / ctx;
            double np_ = 0, nl_ = 0;
            int64_t cnt = 0;
            float *lg = malloc((size_t)(ctx * V) * sizeof(float));
            int32_t *chunk = malloc((size_t)ctx * sizeof(int32_t));
            for (int64_t k = 0; k < nch; k++) {
                memcpy(chunk, pi + k * ctx, (size_t)ctx * sizeof(int32_t));
                chunk[0] = (int32_t)c->bos_token_id;
                puyu_logits(m, pool, chunk, ctx, lg);
                np_ += nll_chunk(lg, chunk, ctx, V);
                if (lcpp_logits(lm, chunk, ctx, V, threads, lg) != 0)
                    die("llama_decode");
                nl_ += nll_chunk(lg, chunk, ctx, V);
                cnt += ctx - 1 - ctx / 2;
            }
            printf(" %.4f / %.4f (%lld chunks of %lld)", exp(np_ / (double)cnt),
                   exp(nl_ / (double)cnt), (long long)nch, (long long)ctx);
            free(lg);
            free(chunk);
            pu_free(pi);
        }
        printf("\n");
        fflush(stdout);
        llama_model_free(lm);
        pu_tok_destroy(tok);
        if (ids_text)
            pu_free(ids);
        else
            free(ids);
        free(ref);
        free(yp);
        free(yl);
        pu_model_destroy(m);
    }
    pu_pool_destroy(pool);
    llama_backend_free();
    return 0;
}
