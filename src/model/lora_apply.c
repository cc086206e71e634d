/*
 * lora_apply.c — unmerged LoRA adapters in the forward pass.
 *
 * After a targeted base matmul y = x W^T (T rows), every adapter in use adds
 * y += s * (x A^T) B^T with s = its scale (alpha/r or alpha/sqrt(r)) times the
 * caller's multiplier (--lora-scale). Two small fp32 matmuls per adapter
 * through the same kernels as the base (u = x A^T (T, r); z = u B^T
 * (T, out)), then an axpy; rows are processed in blocks that fit the
 * caller's scratch, so the LM head's (T, V) never needs a full buffer.
 *
 * Bases with separate Q/K/V (GGUF, llama2.c) still take PEFT's adapter for
 * the packed wqkv: z is computed in the packed grouped layout (spec §A.4:
 * Hkv groups of [G query heads, key head, value head]) and scattered into q,
 * k, v; when the base's Q/K rows are in adjacent-pair RoPE order
 * (cfg.rope_interleaved: llama.cpp's converter permuted them), z's Q/K rows
 * are permuted the same way — per head, rotate-half index j*D/2 + i goes to
 * 2i + j — so the adapter adds to the rows it was trained for.
 */
#include <string.h>

#include "model/model_impl.h"
#include "puyu/pu_lora.h"

static pu_pool *lpar(pu_pool *pool, int64_t work) {
    return work >= (INT64_C(1) << 18) ? pool : NULL;
}

pu_status pu_lora_check_base_(const pu_lora *l, const pu_config *c, const char *what) {
    if (!l)
        return pu_err_set(PU_ERR_INVALID, "%s: NULL adapter", what);
    pu_lora *ref = NULL;
    PU_TRY(pu_lora_create(c, 1, 1.0, 0.0, false, 1u << PU_LORA_WO, &ref));
    pu_status s = PU_OK;
    if (l->n_layers != c->num_hidden_layers)
        s = pu_err_set(PU_ERR_INVALID, "%s: adapter has %lld layers, the base %lld", what,
                       (long long)l->n_layers, (long long)c->num_hidden_layers);
    for (int64_t i = 0; s == PU_OK && i <= l->n_layers * PU_LORA_OUTPUT; i++) {
        bool outp = i == l->n_layers * PU_LORA_OUTPUT;
        const pu_lora_mat *m = outp ? &l->output : &l->layers[i];
        const pu_lora_mat *r = outp ? &ref->output : &ref->layers[i];
        if (m->A && (m->in != r->in || m->out != r->out))
            s = pu_err_set(
                PU_ERR_INVALID,
                "%s: adapter %s of layer %lld is (%lld, %lld), the base's linear is "
                "(%lld, %lld) (adapter for another model?)",
                what,
                pu_lora_target_name(outp ? PU_LORA_OUTPUT : (pu_lora_target)(i % PU_LORA_OUTPUT)),
                (long long)(outp ? -1 : i / PU_LORA_OUTPUT), (long long)m->out, (long long)m->in,
                (long long)r->out, (long long)r->in);
    }
    pu_lora_destroy(ref);
    return s;
}

pu_status pu_lora_check(const pu_lora *l, const pu_config *c) {
    return pu_lora_check_base_(l, c, "LoRA adapter");
}

void pu_lora_scratch_need_(const pu_config *c, const pu_lora_use *u, int n, int64_t rows,
                           int64_t *nu, int64_t *nz) {
    int64_t rmax = 1, omax = c->hidden_size;
    int64_t qkv = (c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim;
    omax = qkv > omax ? qkv : omax;
    omax = c->intermediate_size > omax ? c->intermediate_size : omax;
    for (int i = 0; i < n; i++)
        rmax = u[i].l->r > rmax ? u[i].l->r : rmax;
    *nu = rows * rmax;
    /* the LM head is done in row blocks: at least one row of V */
    int64_t z = rows * omax;
    *nz = z > c->vocab_size ? z : c->vocab_size;
}

/* z (rows, out) = scale-free (x A^T) B^T for rows [0, T) of x, in blocks */
typedef void (*sink_fn)(void *ud, int64_t row0, int64_t nrows, const float *z, float scale);

static void lora_run(pu_pool *pool, const pu_kernels *k, const pu_lora_use *u, int n, int64_t layer,
                     pu_lora_target t, const float *x, int64_t ldx, int64_t T, float *su,
                     int64_t cap_u, float *sz, int64_t cap_z, sink_fn sink, void *ud) {
    for (int a = 0; a < n; a++) {
        const pu_lora_mat *m = pu_lora_get_const(u[a].l, layer, t);
        if (!m || u[a].scale == 0.0f)
            continue;
        int64_t r = u[a].l->r;
        int64_t blk = cap_z / m->out;
        if (cap_u / r < blk)
            blk = cap_u / r;
        if (blk < 1)
            blk = 1; /* callers size scratch for at least one row */
        float s = u[a].scale * u[a].l->scale;
        for (int64_t r0 = 0; r0 < T; r0 += blk) {
            int64_t nr = T - r0 < blk ? T - r0 : blk;
            const float *xr = x + r0 * ldx;
            pu_op_matmul(lpar(pool, nr * r * m->in), k, su, xr, m->A, PU_DTYPE_F32, nr, r, m->in);
            pu_op_matmul(lpar(pool, nr * r * m->out), k, sz, su, m->B, PU_DTYPE_F32, nr, m->out, r);
            sink(ud, r0, nr, sz, s);
        }
    }
}

typedef struct {
    const pu_kernels *k;
    float *y;
    int64_t N;
} add_ud;

static void add_sink(void *vud, int64_t row0, int64_t nrows, const float *z, float s) {
    add_ud *a = vud;
    a->k->axpy(a->y + row0 * a->N, s, z, nrows * a->N);
}

void pu_lora_add_(pu_pool *pool, const pu_kernels *k, const pu_lora_use *u, int n, int64_t layer,
                  pu_lora_target t, const float *x, int64_t T, float *y, float *su, int64_t cap_u,
                  float *sz, int64_t cap_z) {
    if (n <= 0 || T <= 0)
        return;
    const pu_lora_mat *any = NULL;
    for (int a = 0; a < n && !any; a++)
        any = pu_lora_get_const(u[a].l, layer, t);
    if (!any)
        return;
    add_ud ud = {k, y, any->out};
    lora_run(pool, k, u, n, layer, t, x, any->in, T, su, cap_u, sz, cap_z, add_sink, &ud);
}

typedef struct {
    const pu_config *c;
    float *q, *kk, *v;
} split_ud;

static void split_sink(void *vud, int64_t row0, int64_t nrows, const float *z, float s) {
    split_ud *a = vud;
    const pu_config *c = a->c;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t G = H / Hkv, row = (H + 2 * Hkv) * D, half = D / 2;
    bool il = c->rope_interleaved;
    for (int64_t t = 0; t < nrows; t++) {
        const float *src = z + t * row;
        float *q = a->q + (row0 + t) * H * D, *kk = a->kk + (row0 + t) * Hkv * D;
        float *v = a->v + (row0 + t) * Hkv * D;
        for (int64_t g = 0; g < Hkv; g++) {
            const float *grp = src + g * (G + 2) * D;
            for (int64_t j = 0; j <= G; j++) { /* G query heads, then the key head */
                float *dst = j < G ? q + (g * G + j) * D : kk + g * D;
                const float *sh = grp + j * D;
                for (int64_t d = 0; d < D; d++) {
                    int64_t to = il ? 2 * (d % half) + d / half : d;
                    dst[to] += s * sh[d];
                }
            }
            const float *sv = grp + (G + 1) * D;
            for (int64_t d = 0; d < D; d++)
                v[g * D + d] += s * sv[d];
        }
    }
}

void pu_lora_add_qkv_split_(pu_pool *pool, const pu_kernels *k, const pu_lora_use *u, int n,
                            int64_t layer, const pu_config *c, const float *x, int64_t T, float *q,
                            float *kk, float *v, float *su, int64_t cap_u, float *sz,
                            int64_t cap_z) {
    if (n <= 0 || T <= 0)
        return;
    split_ud ud = {c, q, kk, v};
    lora_run(pool, k, u, n, layer, PU_LORA_WQKV, x, c->hidden_size, T, su, cap_u, sz, cap_z,
             split_sink, &ud);
}
