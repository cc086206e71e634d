/*
 * awq_calib.c — activation-aware weight quantization (AWQ, llm-awq /
 * LMDeploy's auto_awq) for puyu's block types (pu_model_awq in pu_model.h).
 *
 * 1. Calibration text runs through the float model; for every layer and
 *    group of linears sharing an input (wqkv | wo | w1+w3 | w2) a hook
 *    records mean |x| per input channel over all tokens and keeps a seeded
 *    reservoir of up to max_rows input rows.
 * 2. Per group: s(α) = mean|x|^α (floored at 1e-4), normalised by
 *    sqrt(max s · min s); for α on the grid 0, 1/n, ..., (n-1)/n the group's
 *    weights W·diag(s) are quantized and dequantized in the target dtype
 *    (ggml's reference quantizers, the llama-quantize fallback for rows
 *    that do not divide into blocks) and the output error
 *    ||X W^T − (X diag(s)^-1) Q(W diag(s))^T||² on the kept rows is measured;
 *    the best α wins (α = 0, s = 1, is the plain quantization, so the chosen
 *    scales never do worse on the calibration rows).
 * 3. The scales are folded so the float model is unchanged: W columns ×= s,
 *    the preceding op ÷= s — attention_norm for wqkv, ffn_norm for w1/w3,
 *    w3's rows for w2 (h = silu(w1 x) · (w3 x)), and wv's rows for wo. With
 *    GQA one v row feeds G query heads' attention outputs, so the wo scales
 *    are tied across the heads of a kv group (mean|x| averaged over them).
 *    Groups whose fallback dtype is not quantized (F16/BF16/F32) are left.
 */
#include <math.h>
#include <string.h>

#include "model/loaders.h"
#include "puyu/pu_kernels.h"

typedef struct {
    int64_t K, n_rows, n_seen;
    double *absum; /* (K) */
    float *rows;   /* (max_rows, K) reservoir */
} act_acc;

typedef struct {
    act_acc *acc; /* (L, PU_ACT_N) */
    int64_t max_rows;
    uint64_t rng;
} calib;

static uint64_t next_rand(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 17;
}

static void hook(void *ud, int64_t layer, int which, const float *x, int64_t T, int64_t K) {
    calib *c = ud;
    act_acc *a = &c->acc[layer * PU_ACT_N + which];
    if (!a->absum) {
        a->K = K;
        a->absum = pu_calloc((size_t)K, sizeof(double));
        a->rows = pu_malloc((size_t)(c->max_rows * K) * sizeof(float));
    }
    for (int64_t t = 0; t < T; t++) {
        const float *r = x + t * K;
        for (int64_t k = 0; k < K; k++)
            a->absum[k] += fabs((double)r[k]);
        int64_t slot = a->n_rows < c->max_rows
                           ? a->n_rows++
                           : (int64_t)(next_rand(&c->rng) % (uint64_t)(a->n_seen + 1));
        if (slot < c->max_rows)
            memcpy(a->rows + slot * K, r, (size_t)K * sizeof(float));
        a->n_seen++;
    }
}

/* quantize + dequantize w (N, K) row by row in dt, in place */
static void qdq(float *w, int64_t N, int64_t K, pu_dtype dt, void *buf) {
    const pu_kernels *kr = pu_kernels_for(PU_SIMD_REF);
    for (int64_t r = 0; r < N; r++) {
        pu_quantize_row(dt, buf, w + r * K, K);
        kr->to_f32[dt](w + r * K, buf, K);
    }
}

/* one group: weights Wcat (N, K) (modified: columns *= best s), inputs X
 * (n, K), channel magnitudes sx (K); best scales into s_out (K) */
static double search(pu_pool *pool, float *Wcat, int64_t N, int64_t K, const float *X, int64_t n,
                     const double *sx, pu_dtype dt, int n_grid, float *s_out, double *err0,
                     int *best_i) {
    const pu_kernels *k = pu_kernels_get();
    size_t nw = (size_t)(N * K);
    float *Y = pu_malloc((size_t)(n * N) * sizeof(float));
    float *Yq = pu_malloc((size_t)(n * N) * sizeof(float));
    float *Wq = pu_malloc(nw * sizeof(float));
    float *Xs = pu_malloc((size_t)(n * K) * sizeof(float));
    float *s = pu_malloc((size_t)K * sizeof(float));
    void *buf = pu_malloc((size_t)pu_dtype_nbytes(dt, K) + 64);
    pu_op_matmul(pool, k, Y, X, Wcat, PU_DTYPE_F32, n, N, K);
    double best = INFINITY;
    *best_i = 0;
    for (int gi = 0; gi < n_grid; gi++) {
        double alpha = (double)gi / (double)n_grid;
        double mx = 0, mn = INFINITY;
        for (int64_t c = 0; c < K; c++) {
            double v = pow(sx[c] > 1e-4 ? sx[c] : 1e-4, alpha);
            s[c] = (float)v;
            mx = v > mx ? v : mx;
            mn = v < mn ? v : mn;
        }
        float nrm = (float)sqrt(mx * mn);
        for (int64_t c = 0; c < K; c++)
            s[c] /= nrm;
        for (int64_t r = 0; r < N; r++)
            for (int64_t c = 0; c < K; c++)
                Wq[r * K + c] = Wcat[r * K + c] * s[c];
        qdq(Wq, N, K, dt, buf);
        for (int64_t t = 0; t < n; t++)
            for (int64_t c = 0; c < K; c++)
                Xs[t * K + c] = X[t * K + c] / s[c];
        pu_op_matmul(pool, k, Yq, Xs, Wq, PU_DTYPE_F32, n, N, K);
        double e = 0;
        for (int64_t i = 0; i < n * N; i++) {
            double d = (double)Y[i] - (double)Yq[i];
            e += d * d;
        }
        e /= (double)(n * N);
        if (gi == 0)
            *err0 = e;
        if (e < best) {
            best = e;
            *best_i = gi;
            memcpy(s_out, s, (size_t)K * sizeof(float));
        }
    }
    pu_free(Y);
    pu_free(Yq);
    pu_free(Wq);
    pu_free(Xs);
    pu_free(s);
    pu_free(buf);
    return best;
}

/* a mutable view of an owned F32 matrix of the copy */
static float *mut(const pu_tensor *t) {
    return (float *)(uintptr_t)t->data;
}

pu_status pu_model_awq(const pu_model *src, const int32_t *ids, int64_t n_ids,
                       const pu_awq_params *pp, pu_pool *pool, pu_model **out, pu_str *report) {
    *out = NULL;
    pu_awq_params p = pp ? *pp : pu_awq_default_params();
    if (p.n_grid <= 0)
        p.n_grid = 20;
    if (p.max_rows <= 0)
        p.max_rows = 256;
    if (p.ctx <= 0)
        p.ctx = 256;
    if (!pu_dtype_is_quant(p.dtype))
        return pu_err_set(PU_ERR_INVALID, "awq: target type %s is not a quantized block type",
                          pu_dtype_name(p.dtype));
    if (n_ids < 2)
        return pu_err_set(PU_ERR_INVALID, "awq: need at least 2 calibration tokens (got %lld)",
                          (long long)n_ids);
    pu_model *m = NULL;
    PU_TRY(pu_model_quantize(src, PU_DTYPE_F32, pool, &m));
    const pu_config *c = &m->cfg;
    int64_t L = c->num_hidden_layers, C = c->hidden_size, F = c->intermediate_size;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    int64_t G = H / Hkv;
    if (p.ctx > pu_config_ctx_limit(c))
        p.ctx = pu_config_ctx_limit(c);
    calib cb = {pu_calloc((size_t)(L * PU_ACT_N), sizeof(act_acc)), p.max_rows, 0x5eedULL};
    pu_session *s = NULL;
    pu_status st = pu_session_create(m, p.ctx, pool, &s);
    if (st)
        goto done;
    pu_session_set_act_hook_(s, hook, &cb);
    for (int64_t w0 = 0; w0 < n_ids && st == PU_OK; w0 += p.ctx) {
        int64_t len = n_ids - w0 < p.ctx ? n_ids - w0 : p.ctx;
        pu_session_reset(s);
        st = pu_session_eval(s, ids + w0, len, NULL, false);
    }
    pu_session_destroy(s);
    if (st)
        goto done;
    for (int64_t l = 0; l < L; l++) {
        pu_layer_weights *lw = &m->w.layers[l];
        for (int g = 0; g < PU_ACT_N; g++) {
            act_acc *a = &cb.acc[l * PU_ACT_N + g];
            int64_t K = g == PU_ACT_W2 ? F : g == PU_ACT_WO ? H * D : C;
            pu_dtype dt = pu_quant_fallback_(p.dtype, K);
            if (!a->absum || a->K != K || !pu_dtype_is_quant(dt))
                continue;
            /* the group's matrices, concatenated */
            const pu_tensor *ts[3] = {NULL, NULL, NULL};
            int nt = 0;
            if (g == PU_ACT_QKV) {
                if (lw->wqkv.data)
                    ts[nt++] = &lw->wqkv;
                else
                    ts[0] = &lw->wq, ts[1] = &lw->wk, ts[2] = &lw->wv, nt = 3;
            } else if (g == PU_ACT_WO) {
                ts[nt++] = &lw->wo;
            } else if (g == PU_ACT_FFN) {
                ts[0] = &lw->w1, ts[1] = &lw->w3, nt = 2;
            } else {
                ts[nt++] = &lw->w2;
            }
            int64_t N = 0;
            for (int i = 0; i < nt; i++)
                N += ts[i]->shape[0];
            float *Wcat = pu_malloc((size_t)(N * K) * sizeof(float));
            int64_t r0 = 0;
            for (int i = 0; i < nt; i++) {
                memcpy(Wcat + r0 * K, ts[i]->data, (size_t)(ts[i]->shape[0] * K) * sizeof(float));
                r0 += ts[i]->shape[0];
            }
            double *sx = pu_malloc((size_t)K * sizeof(double));
            for (int64_t k2 = 0; k2 < K; k2++)
                sx[k2] = a->absum[k2] / (double)a->n_seen;
            if (g == PU_ACT_WO && G > 1) /* tie across the query heads of a kv group */
                for (int64_t kv = 0; kv < Hkv; kv++)
                    for (int64_t d = 0; d < D; d++) {
                        double m2 = 0;
                        for (int64_t j = 0; j < G; j++)
                            m2 += sx[((kv * G + j) * D) + d];
                        for (int64_t j = 0; j < G; j++)
                            sx[((kv * G + j) * D) + d] = m2 / (double)G;
                    }
            float *sc = pu_malloc((size_t)K * sizeof(float));
            double e0 = 0;
            int bi = 0;
            double eb =
                search(pool, Wcat, N, K, a->rows, a->n_rows, sx, dt, p.n_grid, sc, &e0, &bi);
            if (report)
                pu_str_appendf(report, "layer %lld %s: alpha %.2f, output mse %.4g -> %.4g\n",
                               (long long)l,
                               g == PU_ACT_QKV   ? "qkv"
                               : g == PU_ACT_WO  ? "wo"
                               : g == PU_ACT_FFN ? "w1/w3"
                                                 : "w2",
                               (double)bi / p.n_grid, e0, eb);
            if (bi > 0) {
                /* fold: W columns *= s ... */
                for (int i = 0; i < nt; i++) {
                    float *w = mut(ts[i]);
                    for (int64_t r = 0; r < ts[i]->shape[0]; r++)
                        for (int64_t k2 = 0; k2 < K; k2++)
                            w[r * K + k2] *= sc[k2];
                }
                /* ... and the preceding op /= s */
                if (g == PU_ACT_QKV || g == PU_ACT_FFN) {
                    float *nw = mut(g == PU_ACT_QKV ? &lw->attn_norm : &lw->ffn_norm);
                    for (int64_t k2 = 0; k2 < K; k2++)
                        nw[k2] /= sc[k2];
                } else if (g == PU_ACT_W2) {
                    float *w3 = mut(&lw->w3);
                    for (int64_t r = 0; r < F; r++)
                        for (int64_t k2 = 0; k2 < C; k2++)
                            w3[r * C + k2] /= sc[r];
                } else { /* wo: the v rows of each kv head */
                    for (int64_t kv = 0; kv < Hkv; kv++)
                        for (int64_t d = 0; d < D; d++) {
                            float sv = sc[(kv * G) * D + d];
                            float *vr = lw->wqkv.data
                                            ? mut(&lw->wqkv) + ((kv * (G + 2) + G + 1) * D + d) * C
                                            : mut(&lw->wv) + (kv * D + d) * C;
                            for (int64_t k2 = 0; k2 < C; k2++)
                                vr[k2] /= sv;
                        }
                }
            }
            pu_free(Wcat);
            pu_free(sx);
            pu_free(sc);
        }
    }
done:
    for (int64_t i = 0; i < L * PU_ACT_N; i++) {
        pu_free(cb.acc[i].absum);
        pu_free(cb.acc[i].rows);
    }
    pu_free(cb.acc);
    if (st) {
        pu_model_destroy(m);
        return st;
    }
    *out = m;
    return PU_OK;
}

pu_awq_params pu_awq_default_params(void) {
    pu_awq_params p = {PU_DTYPE_Q4_0, 20, 1024, 256};
    return p;
}
