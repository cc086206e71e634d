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
    const char *model = NULL, *type = NULL, *out = NULL, *tok_path = NULL;
    bool no_tok = false;
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
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu quantize", "-m MODEL --type TYPE --out OUT.gguf",
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
