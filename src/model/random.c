/*
 * random.c — models with random weights (pu_model_init_random).
 *
 * Each tensor is filled in blocks of 64 Ki elements; block b of tensor i
 * draws from its own xoshiro stream seeded by (seed, i, b), so the result is
 * the same for any number of threads. Matrices are stored in the requested
 * dtype (F32 / BF16 / F16); norm weights are F32 ones.
 */
#include <math.h>
#include <string.h>

#include "model_impl.h"

#define BLOCK 65536

typedef struct {
    void *data;
    pu_dtype dt;
    int64_t n;
    uint64_t seed;
    float std;
    bool uniform;
} fill_ctx;

static void fill_worker(void *vctx, int ith, int nth) {
    fill_ctx *f = vctx;
    int64_t nb = (f->n + BLOCK - 1) / BLOCK, lo, hi;
    pu_split(nb, ith, nth, &lo, &hi);
    float a = f->std * sqrtf(3.0f); /* uniform [-a, a] has std a/sqrt(3) */
    for (int64_t b = lo; b < hi; b++) {
        pu_rng r;
        pu_rng_seed(&r, f->seed * 0x9E3779B97F4A7C15ull + (uint64_t)b);
        int64_t i0 = b * BLOCK, i1 = i0 + BLOCK < f->n ? i0 + BLOCK : f->n;
        for (int64_t i = i0; i < i1; i++) {
            float v = f->uniform ? (2.0f * pu_rng_float(&r) - 1.0f) * a
                                 : (float)pu_rng_normal(&r) * f->std;
            if (f->dt == PU_DTYPE_F32)
                ((float *)f->data)[i] = v;
            else if (f->dt == PU_DTYPE_BF16)
                ((uint16_t *)f->data)[i] = pu_f32_to_bf16(v);
            else
                ((uint16_t *)f->data)[i] = pu_f32_to_f16(v);
        }
    }
}

static pu_status make(pu_model *m, pu_tensor *t, pu_dtype dt, int64_t rows, int64_t cols,
                      uint64_t seed, float std, bool uniform, pu_pool *pool) {
    int64_t n = rows * (cols ? cols : 1);
    if (cols && pu_dtype_is_quant(dt)) { /* fp32 draw, then ggml's quantizer */
        pu_tensor tmp = {0};
        pu_model *scratch = pu_calloc(1, sizeof *scratch);
        pu_status s = make(scratch, &tmp, PU_DTYPE_F32, rows, cols, seed, std, uniform, pool);
        if (s == PU_OK)
            s = pu_tensor_requant_(m, t, &tmp, dt, pool, "random");
        pu_model_destroy(scratch);
        return s;
    }
    void *p = pu_try_malloc_aligned((size_t)n * pu_dtype_size(dt), 64);
    if (!p)
        return pu_err_set(PU_ERR_NOMEM, "random model: cannot allocate %lld elements",
                          (long long)n);
    pu_model_own_(m, p);
    t->dtype = dt;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->data = p;
    if (!cols) { /* norm weight: ones */
        for (int64_t i = 0; i < n; i++)
            ((float *)p)[i] = 1.0f;
        return PU_OK;
    }
    fill_ctx f = {p, dt, n, seed, std, uniform};
    pu_pool_run(pool, fill_worker, &f);
    return PU_OK;
}

pu_status pu_model_init_random(const pu_config *c, pu_dtype dtype, uint64_t seed, float std,
                               bool uniform, pu_pool *pool, pu_model **out) {
    *out = NULL;
    pu_model *m = pu_calloc(1, sizeof *m);
    m->cfg = *c;
    m->path = pu_strdup("(random)");
    snprintf(m->format, sizeof m->format, "random");
    int64_t V = c->vocab_size, C = c->hidden_size, F = c->intermediate_size;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t L = c->num_hidden_layers;
    pu_status st = PU_OK;
    if (L <= 0 || L > 4096 || C <= 0 || V <= 0 || H <= 0 || Hkv <= 0 || D <= 0) {
        st = pu_err_set(PU_ERR_INVALID, "random model: invalid config sizes");
        goto fail;
    }
    m->w.layers = pu_calloc((size_t)L, sizeof(pu_layer_weights));
    uint64_t k = seed * 1000003u;
#define MK(t, dt, r, cc)                                                                           \
    do {                                                                                           \
        st = make(m, t, dt, r, cc, ++k, std, uniform, pool);                                       \
        if (st)                                                                                    \
            goto fail;                                                                             \
    } while (0)
    MK(&m->w.tok_embeddings, dtype, V, C);
    for (int64_t l = 0; l < L; l++) {
        pu_layer_weights *lw = &m->w.layers[l];
        MK(&lw->attn_norm, PU_DTYPE_F32, C, 0);
        MK(&lw->wqkv, dtype, (H + 2 * Hkv) * D, C);
        MK(&lw->wo, dtype, C, H * D);
        MK(&lw->ffn_norm, PU_DTYPE_F32, C, 0);
        MK(&lw->w1, dtype, F, C);
        MK(&lw->w3, dtype, F, C);
        MK(&lw->w2, dtype, C, F);
    }
    MK(&m->w.norm, PU_DTYPE_F32, C, 0);
    if (c->tie_word_embeddings)
        m->w.output = m->w.tok_embeddings;
    else
        MK(&m->w.output, dtype, V, C);
#undef MK
    st = pu_model_validate_(m, "random model");
    if (st)
        goto fail;
    *out = m;
    return PU_OK;
fail:
    pu_model_destroy(m);
    return st;
}
