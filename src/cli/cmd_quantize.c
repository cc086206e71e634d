/*
 * cmd_quantize.c — `puyu quantize`: re-encode a model's matrices in a ggml
 * block type (or F32/F16/BF16) and write a GGUF file llama.cpp can read.
 */
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "common.h"
#include "opts.h"
#include "puyu/pu_core.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

int pu_cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *type = NULL, *out = NULL, *tok_path = NULL, *calib = NULL;
    int64_t calib_tokens = 4096, awq_grid = 20;
    bool no_tok = false, verbose_awq = false;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL",
         "HF model directory or .gguf (F32/F16/BF16, or already quantized)", 0, 0},
        {"type", 0, PU_OPT_STRING, &type, "TYPE",
         "q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q4_k | q5_k | q6_k | f16 | bf16 | f32", 0, 0},
        {"out", 'o', PU_OPT_STRING, &out, "OUT.gguf", "output GGUF file (written atomically)", 0,
         0},
        {"tokenizer", 't', PU_OPT_STRING, &tok_path, "TOK",
         "tokenizer to embed (default: the model's own)", 0, 0},
        {"no-tokenizer", 0, PU_OPT_FLAG, &no_tok, NULL, "write no tokenizer.* keys", 0, 0},
        {"calib", 0, PU_OPT_STRING, &calib, "FILE",
         "AWQ: search per-input-channel scales on this calibration text (needs a tokenizer), "
         "fold them into the preceding norm / linear, then quantize",
         0, 0},
        {"calib-tokens", 0, PU_OPT_INT, &calib_tokens, "N",
         "AWQ: calibration tokens read from FILE (from its start)", 2, 1e9},
        {"awq-grid", 0, PU_OPT_INT, &awq_grid, "N", "AWQ: grid points of alpha in [0, 1)", 1,
         1000},
        {"awq-report", 0, PU_OPT_FLAG, &verbose_awq, NULL,
         "AWQ: print the chosen alpha and output error of every group", 0, 0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu quantize", "-m MODEL --type TYPE --out OUT.gguf [--calib FILE [--calib-tokens N]]",
        "Quantize every matrix with ggml's reference quantizers (norms stay F32) and write\n"
        "a GGUF file with llama.cpp's tensor names and Q/K row order (readable by puyu and\n"
        "llama.cpp). The SentencePiece vocabulary goes in tokenizer.ggml.*."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!model || !type || !out) {
        fprintf(stderr, "puyu quantize: -m MODEL, --type and --out are required (see --help)\n");
        return 2;
    }
    pu_dtype dt;
    if (!pu_dtype_parse(type, &dt)) {
        fprintf(stderr,
                "puyu quantize: error: --type '%s' is not one of q8_0, q4_0, q4_1, q5_0, "
                "q5_1, q4_k, q5_k, q6_k, f16, bf16, f32\n",
                type);
        return 2;
    }
    int ret = 1;
    pu_model *m = NULL, *q = NULL;
    pu_tok *tok = NULL;
    pu_pool *pool = pu_pool_create(0);
    double t0 = pu_time_now();
    if (pu_model_load(model, &m) != PU_OK)
        goto fail;
    if (!no_tok && pu_cli_load_tokenizer(m, model, tok_path, &tok) != PU_OK) {
        if (tok_path)
            goto fail;
        fprintf(stderr, "puyu quantize: warning: no tokenizer (%s); writing none\n", pu_err_msg());
        tok = NULL;
    }
    if (calib) {
        if (!pu_dtype_is_quant(dt)) {
            pu_err_set(PU_ERR_INVALID, "--calib: --type %s is not a quantized block type",
                       pu_dtype_name(dt));
            goto fail;
        }
        if (!tok && pu_cli_load_tokenizer(m, model, tok_path, &tok) != PU_OK)
            goto fail;
        char *text = NULL;
        size_t tl = 0;
        if (pu_file_read_all(calib, &text, &tl) != PU_OK)
            goto fail;
        if (tl > (size_t)calib_tokens * 16) /* enough bytes for the tokens asked for */
            tl = (size_t)calib_tokens * 16;
        pu_tok_encode_opts eo = pu_tok_encode_default_opts();
        eo.add_bos = true;
        eo.parse_special = false;
        int32_t *ids = NULL;
        int64_t n = 0;
        pu_status es = pu_tok_encode(tok, text, tl, &eo, &ids, &n);
        pu_free(text);
        if (es != PU_OK)
            goto fail;
        if (n > calib_tokens)
            n = calib_tokens;
        pu_awq_params ap = pu_awq_default_params();
        ap.dtype = dt;
        ap.n_grid = (int)awq_grid;
        pu_str rep = {0};
        pu_model *a = NULL;
        es = pu_model_awq(m, ids, n, &ap, pool, &a, &rep);
        pu_free(ids);
        if (es == PU_OK) {
            if (verbose_awq && rep.p)
                fputs(rep.p, stderr);
            fprintf(stderr, "puyu quantize: AWQ scales searched on %lld tokens of %s\n",
                    (long long)n, calib);
        }
        pu_str_free(&rep);
        if (es != PU_OK)
            goto fail;
        pu_model_destroy(m);
        m = a;
    }
    if (pu_model_quantize(m, dt, pool, &q) != PU_OK)
        goto fail;
    if (pu_model_write_gguf(q, tok, out) != PU_OK)
        goto fail;
    fprintf(stderr, "puyu quantize: %s -> %s (%s, %.1f MiB of weights) in %.1fs\n", model, out,
            pu_dtype_name(dt), (double)pu_model_weight_bytes(q) / 1048576.0, pu_time_now() - t0);
    ret = 0;
    goto done;
fail:
    fprintf(stderr, "puyu quantize: error: %s\n", pu_err_msg());
done:
    pu_tok_destroy(tok);
    pu_model_destroy(q);
    pu_model_destroy(m);
    pu_pool_destroy(pool);
    return ret;
}
