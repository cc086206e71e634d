/*
 * bench_quant_ppl.c — perplexity of a model re-encoded in each dtype against
 * its F32 original on a held-out text (a small tool, not part of make test).
 *
 * The text is tokenized (BOS first), cut into windows of --ctx tokens, and
 * each window is scored in one prefill: PPL = exp(mean -log p(token | prefix))
 * over every token after the first of each window. Every dtype is the same
 * model passed through pu_model_quantize (ggml's reference quantizers; rows
 * that do not divide into 256 fall back as llama-quantize does).
 *
 *   build/release/bench_quant_ppl -m MODEL [-t TOK] --text FILE [--ctx 256]
 *       [--max-tokens 16384] [--types f32,q8_0,...]
 * e.g. -m ../shared/data/models/stories260K/stories260K.bin
 *      -t ../shared/data/models/stories260K/tok512.model
 *      --text ../shared/data/corpus/en-tinystories/tinystories_train_head.txt
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

static double ppl_of(const pu_model *m, pu_pool *pool, const int32_t *ids, int64_t n, int64_t ctx,
                     double *nll_out) {
    const pu_config *c = pu_model_config(m);
    int64_t V = c->vocab_size;
    float *lg = malloc((size_t)(ctx * V) * sizeof(float));
    pu_session *s = NULL;
    if (pu_session_create(m, ctx, pool, &s) != PU_OK) {
        fprintf(stderr, "session: %s\n", pu_err_msg());
        exit(1);
    }
    double nll = 0;
    int64_t cnt = 0;
    for (int64_t w0 = 0; w0 + 1 < n; w0 += ctx) {
        int64_t len = n - w0 < ctx ? n - w0 : ctx;
        pu_session_reset(s);
        if (pu_session_eval(s, ids + w0, len, lg, true) != PU_OK) {
            fprintf(stderr, "eval: %s\n", pu_err_msg());
            exit(1);
        }
        for (int64_t i = 0; i + 1 < len; i++) {
            const float *l = lg + i * V;
            double mx = l[0], se = 0;
            for (int64_t v = 1; v < V; v++)
                mx = l[v] > mx ? l[v] : mx;
            for (int64_t v = 0; v < V; v++)
                se += exp((double)l[v] - mx);
            nll += -((double)l[ids[w0 + i + 1]] - mx - log(se));
            cnt++;
        }
    }
    pu_session_destroy(s);
    free(lg);
    *nll_out = nll / (double)cnt;
    return exp(*nll_out);
}

int main(int argc, char **argv) {
    const char *model = NULL, *tokp = NULL, *text = NULL,
               *types = "f32,q8_0,q6_k,q5_k,q5_1,q5_0,q4_k,q4_1,q4_0";
    int64_t ctx = 256, maxt = 16384;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            tokp = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc)
            text = argv[++i];
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--max-tokens") && i + 1 < argc)
            maxt = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--types") && i + 1 < argc)
            types = argv[++i];
        else {
            fprintf(stderr, "usage: bench_quant_ppl -m MODEL [-t TOK] --text FILE [--ctx N] "
                            "[--max-tokens N] [--types LIST]\n");
            return 2;
        }
    }
    if (!model || !text) {
        fprintf(stderr, "bench_quant_ppl: -m and --text are required\n");
        return 2;
    }
    pu_log_set_level(PU_LOG_WARN);
    pu_model *m = NULL;
    pu_tok *tok = NULL;
    char *buf = NULL;
    size_t len = 0;
    if (pu_model_load(model, &m) != PU_OK ||
        pu_tok_load(tokp ? tokp : pu_model_tokenizer_path(m), &tok) != PU_OK ||
        pu_file_read_all(text, &buf, &len) != PU_OK) {
        fprintf(stderr, "bench_quant_ppl: %s\n", pu_err_msg());
        return 1;
    }
    pu_tok_encode_opts o = pu_tok_encode_default_opts();
    o.add_bos = true;
    int32_t *ids = NULL;
    int64_t n = 0;
    if (pu_tok_encode(tok, buf, len, &o, &ids, &n) != PU_OK) {
        fprintf(stderr, "encode: %s\n", pu_err_msg());
        return 1;
    }
    if (n > maxt)
        n = maxt;
    pu_pool *pool = pu_pool_create(0);
    printf("model %s, %lld tokens of %s, windows of %lld\n", model, (long long)n, text,
           (long long)ctx);
    printf("| type | PPL | ΔPPL vs F32 | mean NLL | weights MiB |\n|---|---|---|---|---|\n");
    double base = 0;
    char tl[256];
    snprintf(tl, sizeof tl, "%s", types);
    for (char *t = strtok(tl, ","); t; t = strtok(NULL, ",")) {
        pu_dtype dt;
        if (!pu_dtype_parse(t, &dt)) {
            fprintf(stderr, "unknown type %s\n", t);
            return 2;
        }
        pu_model *q = NULL;
        if (pu_model_quantize(m, dt, pool, &q) != PU_OK) {
            fprintf(stderr, "quantize: %s\n", pu_err_msg());
            return 1;
        }
        double nll, p = ppl_of(q, pool, ids, n, ctx, &nll);
        if (dt == PU_DTYPE_F32)
            base = p;
        printf("| %s | %.4f | %+.4f | %.5f | %.2f |\n", pu_dtype_name(dt), p, base ? p - base : 0,
               nll, (double)pu_model_weight_bytes(q) / 1048576.0);
        fflush(stdout);
        pu_model_destroy(q);
    }
    pu_pool_destroy(pool);
    pu_free(ids);
    pu_free(buf);
    pu_tok_destroy(tok);
    pu_model_destroy(m);
    return 0;
}
