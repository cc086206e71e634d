/*
 * fuzz_gguf.c — libFuzzer harness: the input is a .gguf image. Runs the
 * whole in-memory GGUF model loader (pu_gguf_load_mem_: parse, KV lookup,
 * config checks, tensor binding) and pu_model_validate_, touching the first
 * and last byte of every bound matrix and dequantizing its last row (the
 * quantized block types), and the first row of every parsed tensor of a
 * supported type, bound or not. Inputs without the "GGUF" magic go
 * to the llama2.c loader (pu_llama2c_load_mem_), as pu_model_load dispatches.
 * Must never crash, leak, or allocate from an unchecked count.
 */
#include <stdint.h>
#include <string.h>

#include "model/loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch(const pu_tensor *t) {
    int64_t n = pu_tensor_numel(t);
    if (!t->data || n <= 0)
        return;
    const uint8_t *p = t->data;
    sink ^= p[0];
    sink ^= p[(size_t)pu_dtype_nbytes(t->dtype, n) - 1];
    /* dequantize the last row (quantized block layouts, F16/BF16) */
    if (t->ndim == 2 && t->shape[1] > 0 && t->shape[1] <= 65536) {
        int64_t K = t->shape[1], rb = pu_dtype_nbytes(t->dtype, K);
        float *row = pu_malloc((size_t)K * sizeof(float));
        pu_kernels_for(PU_SIMD_REF)->to_f32[t->dtype](row, p + (t->shape[0] - 1) * rb, K);
        sink ^= (uint8_t)(row[K - 1] != row[K - 1]);
        pu_free(row);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pu_gguf_file f;
    if (pu_gguf_parse_(data, size, "fuzz.gguf", &f) == PU_OK) {
        for (int64_t i = 0; i < f.n_tensors; i++) {
            const pu_gguf_tensor *t = &f.t[i];
            if (t->nbytes > 0) {
                sink ^= f.data[t->offset];
                sink ^= f.data[t->offset + (uint64_t)t->nbytes - 1];
            }
            /* dequantize the first row of any tensor of a supported type */
            pu_dtype dt;
            if (t->nbytes > 0 && pu_dtype_from_ggml(t->type, &dt) && t->ne[0] <= 65536) {
                float *row = pu_malloc((size_t)t->ne[0] * sizeof(float));
                pu_kernels_get()->to_f32[dt](row, f.data + t->offset, t->ne[0]);
                sink ^= (uint8_t)(row[0] != row[0]);
                pu_free(row);
            }
        }
        (void)pu_gguf_find_kv_(&f, "general.architecture");
        pu_gguf_free_(&f);
    }
    pu_model *m = pu_calloc(1, sizeof *m);
    bool gguf = size >= 4 && memcmp(data, "GGUF", 4) == 0;
    pu_status s = gguf ? pu_gguf_load_mem_(m, data, size, "fuzz.gguf")
                       : pu_llama2c_load_mem_(m, data, size, "fuzz.bin");
    if (s == PU_OK && pu_model_validate_(m, "fuzz.gguf") == PU_OK) {
        const pu_weights *w = &m->w;
        touch(&w->tok_embeddings);
        touch(&w->output);
        touch(&w->norm);
        for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
            const pu_layer_weights *lw = &w->layers[l];
            touch(&lw->wq);
            touch(&lw->wk);
            touch(&lw->wv);
            touch(&lw->wo);
            touch(&lw->w1);
            touch(&lw->w2);
            touch(&lw->w3);
            touch(&lw->attn_norm);
            touch(&lw->ffn_norm);
        }
        pu_str d = {0};
        pu_model_describe(m, 16, &d);
        pu_str_free(&d);
    }
    pu_model_destroy(m);
    return 0;
}
