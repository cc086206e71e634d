/*
 * quant_model.c — re-encoding a model's matrices in another dtype
 * (pu_model_quantize): every 2-D weight row is widened to fp32 and encoded
 * with pu_quantize_row (ggml's reference quantizers for the block types), in
 * parallel over rows; norm weights stay F32. Row-wise, so it commutes with
 * the row permutations and the fused-qkv split of the GGUF writer.
 */
#include <stdio.h>
#include <string.h>

#include "model/loaders.h"

typedef struct {
    const pu_tensor *src;
    void *dst;
    pu_dtype dt;
    int64_t rows, K, src_rb, dst_rb;
} rq_ctx;

static void rq_worker(void *vctx, int ith, int nth) {
    const rq_ctx *c = vctx;
    const pu_kernels *k = pu_kernels_get();
    int64_t lo, hi;
    pu_split(c->rows, ith, nth, &lo, &hi);
    if (lo >= hi)
        return;
    float *row = pu_malloc((size_t)c->K * sizeof(float));
    for (int64_t r = lo; r < hi; r++) {
        k->to_f32[c->src->dtype](row, (const uint8_t *)c->src->data + r * c->src_rb, c->K);
        pu_quantize_row(c->dt, (uint8_t *)c->dst + r * c->dst_rb, row, c->K);
    }
    pu_free(row);
}

pu_status pu_tensor_requant_(pu_model *m, pu_tensor *dst, const pu_tensor *src, pu_dtype dt,
                             pu_pool *pool, const char *name) {
    PU_ASSERT(src->ndim == 2);
    int64_t rows = src->shape[0], K = src->shape[1];
    int64_t rb = pu_dtype_nbytes(dt, K);
    if (rb < 0)
        return pu_err_set(PU_ERR_INVALID,
                          "quantize: tensor '%s': row length %lld is not a multiple of the %s "
                          "block size %lld",
                          name, (long long)K, pu_dtype_name(dt), (long long)pu_dtype_block(dt));
    void *p = pu_try_malloc_aligned((size_t)(rows * rb > 0 ? rows * rb : 1), 64);
    if (!p)
        return pu_err_set(PU_ERR_NOMEM, "quantize: tensor '%s': cannot allocate %lld bytes", name,
                          (long long)(rows * rb));
    pu_model_own_(m, p);
    rq_ctx c = {src, p, dt, rows, K, pu_dtype_nbytes(src->dtype, K), rb};
    if (pool && rows * K >= 65536)
        pu_pool_run(pool, rq_worker, &c);
    else
        rq_worker(&c, 0, 1);
    *dst = *src;
    dst->dtype = dt;
    dst->data = p;
    return PU_OK;
}

/* llama-quantize's fallback for rows that do not divide into blocks:
 * K-quants -> Q5_0 / Q5_1 / Q8_0 when the row divides by 32, else F16 */
pu_dtype pu_quant_fallback_(pu_dtype dt, int64_t K) {
    if (pu_dtype_nbytes(dt, K) >= 0)
        return dt;
    pu_dtype f = dt == PU_DTYPE_Q4_K   ? PU_DTYPE_Q5_0
                 : dt == PU_DTYPE_Q5_K ? PU_DTYPE_Q5_1
                 : dt == PU_DTYPE_Q6_K ? PU_DTYPE_Q8_0
                                       : PU_DTYPE_F16;
    return pu_dtype_nbytes(f, K) >= 0 ? f : PU_DTYPE_F16;
}
#define fallback pu_quant_fallback_

static pu_status copy_norm(pu_model *m, pu_tensor *dst, const pu_tensor *src) {
    int64_t n = pu_tensor_numel(src);
    float *p = pu_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(p, src->data, (size_t)n * sizeof(float)); /* norms are F32 after validation */
    pu_model_own_(m, p);
    *dst = *src;
    dst->data = p;
    return PU_OK;
}

pu_status pu_model_quantize(const pu_model *src, pu_dtype dt, pu_pool *pool, pu_model **out) {
    *out = NULL;
    if ((int)dt < 0 || dt >= PU_DTYPE_COUNT)
        return pu_err_set(PU_ERR_INVALID, "quantize: invalid dtype %d", (int)dt);
    pu_model *m = pu_calloc(1, sizeof *m);
    m->cfg = src->cfg;
    m->path = pu_strdup(src->path ? src->path : "(model)");
    snprintf(m->format, sizeof m->format, "%s", src->format);
    if (src->tokenizer_path)
        m->tokenizer_path = pu_strdup(src->tokenizer_path);
    int64_t L = src->cfg.num_hidden_layers;
    m->w.layers = pu_calloc((size_t)L, sizeof *m->w.layers);
    const pu_weights *sw = &src->w;
    pu_status st = PU_OK;
    char name[64];
#define RQ(field, nm)                                                                              \
    do {                                                                                           \
        if ((st = pu_tensor_requant_(m, &m->w.field, &sw->field, fallback(dt, sw->field.shape[1]), \
                                     pool, nm)) != PU_OK)                                          \
            goto fail;                                                                             \
    } while (0)
    RQ(tok_embeddings, "tok_embeddings");
    copy_norm(m, &m->w.norm, &sw->norm);
    if (sw->output.data == sw->tok_embeddings.data)
        m->w.output = m->w.tok_embeddings;
    else
        RQ(output, "output");
    for (int64_t l = 0; l < L; l++) {
        const pu_layer_weights *a = &sw->layers[l];
        pu_layer_weights *b = &m->w.layers[l];
        copy_norm(m, &b->attn_norm, &a->attn_norm);
        copy_norm(m, &b->ffn_norm, &a->ffn_norm);
#define RQL(f)                                                                                     \
    do {                                                                                           \
        snprintf(name, sizeof name, "layers.%lld." #f, (long long)l);                              \
        if ((st = pu_tensor_requant_(m, &b->f, &a->f, fallback(dt, a->f.shape[1]), pool, name)) != \
            PU_OK)                                                                                 \
            goto fail;                                                                             \
    } while (0)
        if (a->wqkv.data) {
            RQL(wqkv);
        } else {
            RQL(wq);
            RQL(wk);
            RQL(wv);
        }
        RQL(wo);
        RQL(w1);
        RQL(w3);
        RQL(w2);
#undef RQL
    }
#undef RQ
    st = pu_model_validate_(m, "quantized model");
    if (st)
        goto fail;
    *out = m;
    return PU_OK;
fail:
    pu_model_destroy(m);
    return st;
}
