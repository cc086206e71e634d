/*
 * test_quant.c — ggml block types: layouts, dequantization and quantization
 * against llama.cpp's gguf-py (fixtures from tools/gen_quant_fixture.py),
 * the int8 dot kernels (every SIMD level vs the scalar reference), the
 * quantized matmul op and a quantized model's logits.
 *
 * Bounds (stated, measured margins in comments):
 *  - dequantization: bit-exact with gguf-py (memcmp), every level;
 *  - Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 quantization: byte-exact with gguf-py;
 *  - K-quants (gguf-py has no quantizer): round-trip relative RMS error of a
 *    Gaussian row below 0.12 (Q4_K), 0.06 (Q5_K), 0.03 (Q6_K);
 *  - activation quantization: identical bytes at every level;
 *  - ref int8 dot == Σ dequant(w)·dequant(x) in double within 1e-5·Σ|terms|
 *    (the integer algebra of every type); SIMD vs ref within 2e-6·Σ|terms|
 *    (same integers, fp32 sums in another order);
 *  - pu_op_matmul: 1 and 2 threads bitwise equal;
 *  - tiny quantized model (C 256, F 512, 2 layers, random N(0, 0.05²)):
 *    logits vs a float64 forward (in this file) and vs puyu's F32 forward on
 *    the dequantized weights (F32 vs float64 within 1e-4·max|logit|) (only the int8
 *    activation rounding differs): relative RMS <= 0.025 and max error <=
 *    0.025·max|logit| for every type (measured: rms 0.014-0.016, max
 *    0.015-0.018 of max|logit|); vs the original F32 model (weight rounding)
 *    relative RMS per type (measured Q8_0 0.021, Q4_0 0.27, Q4_1 0.23, Q5_0
 *    0.14, Q5_1 0.12, Q4_K 0.21, Q5_K 0.11, Q6_K 0.058; bounds ~1.3x);
 *    token-by-token decode vs prefill logits within 0.025·max|logit|.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"

static const pu_dtype k_qt[] = {PU_DTYPE_Q8_0, PU_DTYPE_Q4_0, PU_DTYPE_Q4_1, PU_DTYPE_Q5_0,
                                PU_DTYPE_Q5_1, PU_DTYPE_Q4_K, PU_DTYPE_Q5_K, PU_DTYPE_Q6_K};
#define N_QT 8

static void lower(char *dst, const char *s) {
    for (; *s; s++)
        *dst++ = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
    *dst = 0;
}

static bool read_fix(pu_dtype t, const char *ext, char **buf, size_t *len) {
    char nm[16], path[256];
    lower(nm, pu_dtype_name(t));
    snprintf(path, sizeof path, "tests/golden/quant/%s.%s", nm, ext);
    if (pu_file_read_all(path, buf, len) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "cannot read %s: %s", path, pu_err_msg());
        return false;
    }
    return true;
}

static void fill_normal(pu_rng *r, float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)pu_rng_normal(r) * s;
}

/* Σ deq(w_n)·deq(a_t) in double, and Σ|terms| */
static void dot_ref64(pu_dtype t, const void *w, int64_t n, const int8_t *qs, const float *d,
                      int64_t K, double *dot, double *mag) {
    float *wf = pu_malloc((size_t)K * sizeof(float));
    pu_kernels_for(PU_SIMD_REF)->to_f32[t](wf, (const uint8_t *)w + n * pu_dtype_nbytes(t, K), K);
    double s = 0, a = 0;
    for (int64_t k = 0; k < K; k++) {
        double v = (double)wf[k] * ((double)qs[k] * (double)d[k / 32]);
        s += v;
        a += fabs(v);
    }
    pu_free(wf);
    *dot = s, *mag = a;
}

static void check_kernels(pu_dtype t, int64_t T, int64_t N, int64_t K) {
    pu_rng r;
    pu_rng_seed(&r, (uint64_t)(t * 1000 + T));
    float *wf = pu_malloc((size_t)(N * K) * sizeof(float));
    float *x = pu_malloc((size_t)(T * K) * sizeof(float));
    fill_normal(&r, wf, N * K, 0.05f);
    fill_normal(&r, x, T * K, 1.0f);
    for (int64_t k = 0; k < K; k += 97)
        x[k] *= 20.0f; /* outliers */
    int64_t rb = pu_dtype_nbytes(t, K), nb = K / 32;
    uint8_t *w = pu_malloc((size_t)(N * rb));
    for (int64_t n = 0; n < N; n++)
        pu_quantize_row(t, w + n * rb, wf + n * K, K);
    const pu_kernels *ref = pu_kernels_for(PU_SIMD_REF);
    int8_t *qs = pu_malloc((size_t)(T * K));
    float *d = pu_malloc((size_t)(T * nb) * sizeof(float));
    int16_t *s = pu_malloc((size_t)(T * nb) * sizeof(int16_t));
    for (int64_t i = 0; i < T; i++)
        ref->quantize_act(qs + i * K, d + i * nb, s + i * nb, x + i * K, K);
    pu_qact a = {qs, d, s};
    float *y0 = pu_malloc((size_t)(T * N) * sizeof(float));
    float *y1 = pu_malloc((size_t)(T * N) * sizeof(float));
    ref->qmatmul[t](y0, N, &a, w, T, 0, N, K);
    double worst = 0;
    for (int64_t i = 0; i < T; i++)
        for (int64_t n = 0; n < N; n++) {
            double dd, mag;
            dot_ref64(t, w, n, qs + i * K, d + i * nb, K, &dd, &mag);
            double e = fabs(y0[i * N + n] - dd) / (mag + 1e-30);
            worst = e > worst ? e : worst;
        }
    PT_CHECK_MSG(worst < 1e-5, "%s T=%lld: ref int8 dot vs double: rel err %.3g", pu_dtype_name(t),
                 (long long)T, worst);
    for (pu_simd lv = PU_SIMD_AVX2; lv <= PU_SIMD_AVX512; lv++) {
        const pu_kernels *k = pu_kernels_for(lv);
        if (!k)
            continue;
        /* activation quantization: identical bytes */
        int8_t *qs2 = pu_malloc((size_t)(T * K));
        float *d2 = pu_malloc((size_t)(T * nb) * sizeof(float));
        int16_t *s2 = pu_malloc((size_t)(T * nb) * sizeof(int16_t));
        for (int64_t i = 0; i < T; i++)
            k->quantize_act(qs2 + i * K, d2 + i * nb, s2 + i * nb, x + i * K, K);
        PT_CHECK_MSG(memcmp(qs, qs2, (size_t)(T * K)) == 0 &&
                         memcmp(d, d2, (size_t)(T * nb) * 4) == 0 &&
                         memcmp(s, s2, (size_t)(T * nb) * 2) == 0,
                     "%s: activation quantization differs from ref", k->name);
        pu_free(qs2), pu_free(d2), pu_free(s2);
        /* a sub-range of rows, as the threaded op hands out */
        for (int64_t i = 0; i < T * N; i++)
            y1[i] = NAN;
        int64_t n0 = N > 3 ? 3 : 0;
        k->qmatmul[t](y1, N, &a, w, T, n0, N, K);
        if (n0)
            k->qmatmul[t](y1, N, &a, w, T, 0, n0, K);
        double w2 = 0;
        for (int64_t i = 0; i < T; i++)
            for (int64_t n = 0; n < N; n++) {
                double dd, mag;
                dot_ref64(t, w, n, qs + i * K, d + i * nb, K, &dd, &mag);
                double e = fabs((double)y1[i * N + n] - (double)y0[i * N + n]) / (mag + 1e-30);
                if (!(e <= w2))
                    w2 = isnan(e) ? INFINITY : e;
            }
        PT_CHECK_MSG(w2 < 2e-6, "%s %s T=%lld: SIMD vs ref rel err %.3g", k->name, pu_dtype_name(t),
                     (long long)T, w2);
        /* the float-activation entry point equals quantize + qmatmul */
        k->matmul[t](y1, N, x, K, w, T, 0, N, K);
        float *y2 = pu_malloc((size_t)(T * N) * sizeof(float));
        k->qmatmul[t](y2, N, &a, w, T, 0, N, K);
        PT_CHECK_MSG(memcmp(y1, y2, (size_t)(T * N) * 4) == 0, "%s %s: matmul != qmatmul", k->name,
                     pu_dtype_name(t));
        pu_free(y2);
    }
    pu_free(wf), pu_free(x), pu_free(w), pu_free(qs), pu_free(d), pu_free(s), pu_free(y0),
        pu_free(y1);
}

static float max_abs(const float *x, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

/* ------------------------------------------------------------------------ */
/* float64 forward (HF InternLM2: fused grouped wqkv, rotate-half RoPE) on F32
 * weights, all logits (n, V) */

static void mv64(const pu_tensor *w, const double *x, double *y) {
    int64_t N = w->shape[0], K = w->shape[1];
    const float *W = w->data;
    for (int64_t i = 0; i < N; i++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++)
            s += (double)W[i * K + k] * x[k];
        y[i] = s;
    }
}

static void rms64(const double *x, const pu_tensor *w, int64_t C, double eps, double *y) {
    double ss = 0;
    for (int64_t i = 0; i < C; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / (double)C + eps);
    const float *g = w->data;
    for (int64_t i = 0; i < C; i++)
        y[i] = x[i] * r * g[i];
}

static void forward64(const pu_model *m, const int32_t *ids, int64_t n, double *logits) {
    const pu_config *c = pu_model_config(m);
    const pu_weights *w = pu_model_weights(m);
    int64_t C = c->hidden_size, F = c->intermediate_size, H = c->num_attention_heads;
    int64_t Hkv = c->num_key_value_heads, D = c->head_dim, V = c->vocab_size, G = H / Hkv;
    double *x = calloc((size_t)(n * C), 8), *xb = calloc((size_t)C, 8), *tmp = calloc((size_t)C, 8);
    double *qkv = calloc((size_t)((H + 2 * Hkv) * D), 8);
    double *q = calloc((size_t)(n * H * D), 8), *kk = calloc((size_t)(n * Hkv * D), 8);
    double *vv = calloc((size_t)(n * Hkv * D), 8), *att = calloc((size_t)(H * D), 8);
    double *h1 = calloc((size_t)F, 8), *h3 = calloc((size_t)F, 8), *sc = calloc((size_t)n, 8);
    const float *E = w->tok_embeddings.data;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < C; i++)
            x[t * C + i] = E[ids[t] * C + i];
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const pu_layer_weights *lw = &w->layers[l];
        for (int64_t t = 0; t < n; t++) {
            rms64(x + t * C, &lw->attn_norm, C, c->rms_norm_eps, xb);
            mv64(&lw->wqkv, xb, qkv);
            for (int64_t g = 0; g < Hkv; g++) {
                const double *grp = qkv + g * (G + 2) * D;
                memcpy(q + t * H * D + g * G * D, grp, (size_t)(G * D) * 8);
                memcpy(kk + t * Hkv * D + g * D, grp + G * D, (size_t)D * 8);
                memcpy(vv + t * Hkv * D + g * D, grp + (G + 1) * D, (size_t)D * 8);
            }
            for (int64_t h = 0; h < H + Hkv; h++) { /* rotate-half RoPE */
                double *v = h < H ? q + (t * H + h) * D : kk + (t * Hkv + h - H) * D;
                for (int64_t i = 0; i < D / 2; i++) {
                    double f = (double)t / pow(c->rope_theta, (double)(2 * i) / (double)D);
                    double a = v[i], b = v[i + D / 2];
                    v[i] = a * cos(f) - b * sin(f);
                    v[i + D / 2] = b * cos(f) + a * sin(f);
                }
            }
        }
        for (int64_t t = 0; t < n; t++) {
            for (int64_t h = 0; h < H; h++) {
                const double *qh = q + (t * H + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= t; j++) {
                    const double *kj = kk + (j * Hkv + h / G) * D;
                    double d = 0;
                    for (int64_t i = 0; i < D; i++)
                        d += qh[i] * kj[i];
                    sc[j] = d / sqrt((double)D);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int64_t j = 0; j <= t; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int64_t i = 0; i < D; i++) {
                    double a = 0;
                    for (int64_t j = 0; j <= t; j++)
                        a += sc[j] * vv[(j * Hkv + h / G) * D + i];
                    att[h * D + i] = a / sum;
                }
            }
            mv64(&lw->wo, att, tmp);
            for (int64_t i = 0; i < C; i++)
                x[t * C + i] += tmp[i];
            rms64(x + t * C, &lw->ffn_norm, C, c->rms_norm_eps, xb);
            mv64(&lw->w1, xb, h1);
            mv64(&lw->w3, xb, h3);
            for (int64_t i = 0; i < F; i++)
                h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h3[i];
            mv64(&lw->w2, h1, tmp);
            for (int64_t i = 0; i < C; i++)
                x[t * C + i] += tmp[i];
        }
        /* keys/values of this layer are recomputed per layer from x */
    }
    for (int64_t t = 0; t < n; t++) {
        rms64(x + t * C, &w->norm, C, c->rms_norm_eps, xb);
        mv64(&w->output, xb, logits + t * V);
    }
    free(x), free(xb), free(tmp), free(qkv), free(q), free(kk), free(vv), free(att), free(h1),
        free(h3), free(sc);
}

static void check_model(pu_dtype t, double wbound, const pu_model *f32, pu_pool *pool) {
    pu_model *q = NULL, *dq = NULL;
    PT_OK(pu_model_quantize(f32, t, pool, &q));
    if (!q)
        return;
    PT_OK(pu_model_quantize(q, PU_DTYPE_F32, pool, &dq));
    const pu_config *c = pu_model_config(f32);
    enum { n = 9 };
    int32_t ids[n] = {1, 17, 400, 3, 99, 250, 7, 511, 42};
    int64_t V = c->vocab_size;
    float *lq = pu_malloc((size_t)(n * V) * sizeof(float));
    float *ld = pu_malloc((size_t)(n * V) * sizeof(float));
    float *lf = pu_malloc((size_t)(n * V) * sizeof(float));
    float *dec = pu_malloc((size_t)V * sizeof(float));
    pu_session *sq = NULL, *sd = NULL, *sf = NULL;
    PT_OK(pu_session_create(q, 64, pool, &sq));
    PT_OK(pu_session_create(dq, 64, pool, &sd));
    PT_OK(pu_session_create(f32, 64, pool, &sf));
    PT_OK(pu_session_eval(sq, ids, n, lq, true));
    PT_OK(pu_session_eval(sd, ids, n, ld, true));
    PT_OK(pu_session_eval(sf, ids, n, lf, true));
    float scale = max_abs(ld, n * V);
    /* the float64 forward on the dequantized weights: the F32 forward agrees
     * with it to 1e-4 of max|logit|; the quantized one within the int8
     * activation bound below */
    double *l64 = pu_malloc((size_t)(n * V) * sizeof(double));
    forward64(dq, ids, n, l64);
    double e64 = 0, e64q = 0, s64 = 0, sq64 = 0;
    for (int64_t i = 0; i < n * V; i++) {
        e64 = fmax(e64, fabs(ld[i] - l64[i]));
        e64q = fmax(e64q, fabs(lq[i] - l64[i]));
        s64 += (lq[i] - l64[i]) * (lq[i] - l64[i]);
        sq64 += l64[i] * l64[i];
    }
    PT_CHECK_MSG(e64 <= 1e-4 * scale, "%s: F32 forward vs float64 forward: %.3g", pu_dtype_name(t),
                 e64);
    PT_CHECK_MSG(e64q <= 0.025 * scale && sqrt(s64 / sq64) <= 0.025,
                 "%s: quantized logits vs the float64 forward on the dequantized weights: max %.4g "
                 "(scale %.4g), relative rms %.4g",
                 pu_dtype_name(t), e64q, (double)scale, sqrt(s64 / sq64));
    pu_free(l64);
    double e_dq = 0, e_f = 0;
    for (int64_t i = 0; i < n * V; i++) {
        e_dq = fmax(e_dq, fabs((double)lq[i] - ld[i]));
        e_f = fmax(e_f, fabs((double)lq[i] - lf[i]));
    }
    /* relative RMS errors vs the dequantized-weight and the original forward */
    double se = 0, sff = 0, sl = 0;
    for (int64_t i = 0; i < n * V; i++) {
        se += ((double)lq[i] - ld[i]) * ((double)lq[i] - ld[i]);
        sff += ((double)lq[i] - lf[i]) * ((double)lq[i] - lf[i]);
        sl += (double)ld[i] * ld[i];
    }
    double r_dq = sqrt(se / sl), r_f = sqrt(sff / sl);
    PT_CHECK_MSG(e_dq <= 0.025 * scale && r_dq <= 0.025,
                 "%s: logits vs the F32 forward on the dequantized weights: max %.4g (scale "
                 "%.4g), relative rms %.4g > 0.025",
                 pu_dtype_name(t), e_dq, (double)scale, r_dq);
    PT_CHECK_MSG(r_f <= wbound, "%s: logits vs the F32 model: relative rms %.4g > %.3g",
                 pu_dtype_name(t), r_f, wbound);
    /* token-by-token decode vs prefill: the SIMD kernels sum a single row in
     * two FMA chains and 4 rows in one each, and an fp32 difference can flip
     * an int8 activation level downstream, so the bound is the quantized one */
    pu_session_reset(sq);
    for (int i = 0; i < n; i++)
        PT_OK(pu_session_eval(sq, ids + i, 1, dec, false));
    double e_dec = 0;
    for (int64_t v = 0; v < V; v++)
        e_dec = fmax(e_dec, fabs((double)dec[v] - lq[(n - 1) * V + v]));
    PT_CHECK_MSG(e_dec <= 0.025 * scale, "%s: decode vs prefill logits differ by %.3g",
                 pu_dtype_name(t), e_dec);
    /* the paged, batched engine forward on the quantized weights: two
     * sequences in one batch, logits of their last tokens vs the session */
    pu_kv_pages kv;
    pu_batch_ws *ws = NULL;
    PT_OK(pu_kv_pages_init(&kv, c, 8, 16));
    PT_OK(pu_batch_ws_create(q, 32, &ws));
    if (ws) {
        int32_t blocks0[2] = {0, 1}, blocks1[2] = {2, 3};
        pu_batch_seq seqs[2] = {
            {.blocks = blocks0, .ids = ids, .pos0 = 0, .n = n, .want_logits = true},
            {.blocks = blocks1, .ids = ids, .pos0 = 0, .n = 5, .want_logits = true}};
        float *bl = pu_malloc((size_t)(2 * V) * sizeof(float));
        PT_OK(pu_model_forward_batch(q, pool, pu_kernels_get(), &kv, ws, seqs, 2, bl));
        double eb = 0;
        for (int64_t v = 0; v < V; v++) {
            eb = fmax(eb, fabs((double)bl[v] - lq[(n - 1) * V + v]));
            eb = fmax(eb, fabs((double)bl[V + v] - lq[4 * V + v]));
        }
        PT_CHECK_MSG(eb <= 0.025 * scale, "%s: batched engine vs session logits differ by %.3g",
                     pu_dtype_name(t), eb);
        pu_free(bl);
    }
    pu_batch_ws_destroy(ws);
    pu_kv_pages_deinit(&kv);
    pu_session_destroy(sq), pu_session_destroy(sd), pu_session_destroy(sf);
    pu_free(lq), pu_free(ld), pu_free(lf), pu_free(dec);
    pu_model_destroy(q), pu_model_destroy(dq);
}

PT_SUITE(quant) {
    if (PT_TEST("dtype helpers")) {
        PT_EQ_I64(pu_dtype_size(PU_DTYPE_F32), 4);
        PT_EQ_I64(pu_dtype_size(PU_DTYPE_F16), 2);
        PT_EQ_I64(pu_dtype_size(PU_DTYPE_BF16), 2);
        PT_EQ_I64(pu_dtype_size(PU_DTYPE_Q4_0), 0);
        static const int64_t blk[N_QT] = {32, 32, 32, 32, 32, 256, 256, 256};
        static const int64_t bytes[N_QT] = {34, 18, 20, 22, 24, 144, 176, 210};
        static const uint32_t gg[N_QT] = {8, 2, 3, 6, 7, 12, 13, 14};
        for (int i = 0; i < N_QT; i++) {
            PT_CHECK(pu_dtype_is_quant(k_qt[i]));
            PT_EQ_I64(pu_dtype_block(k_qt[i]), blk[i]);
            PT_EQ_I64(pu_dtype_block_bytes(k_qt[i]), bytes[i]);
            PT_EQ_I64(pu_dtype_nbytes(k_qt[i], 512), 512 / blk[i] * bytes[i]);
            PT_EQ_I64(pu_dtype_nbytes(k_qt[i], blk[i] + 16), -1);
            PT_EQ_I64(pu_dtype_to_ggml(k_qt[i]), gg[i]);
            pu_dtype back;
            PT_CHECK(pu_dtype_from_ggml(gg[i], &back) && back == k_qt[i]);
            char nm[16];
            lower(nm, pu_dtype_name(k_qt[i]));
            PT_CHECK(pu_dtype_parse(nm, &back) && back == k_qt[i]);
        }
        pu_dtype x;
        PT_CHECK(!pu_dtype_parse("q3_k", &x));
        PT_CHECK(!pu_dtype_from_ggml(10, &x)); /* Q2_K: not supported */
        PT_CHECK(!pu_dtype_is_quant(PU_DTYPE_BF16));
    }

    if (PT_TEST("dequantization equals gguf-py bit for bit")) {
        for (int i = 0; i < N_QT; i++) {
            char *blocks = NULL, *want = NULL;
            size_t nb = 0, nw = 0;
            if (!read_fix(k_qt[i], "blocks", &blocks, &nb) || !read_fix(k_qt[i], "f32", &want, &nw))
                goto next;
            int64_t n = (int64_t)(nw / 4);
            PT_EQ_I64(pu_dtype_nbytes(k_qt[i], n), (int64_t)nb);
            float *got = pu_malloc(nw);
            for (pu_simd lv = PU_SIMD_REF; lv <= PU_SIMD_AVX512; lv++) {
                const pu_kernels *k = pu_kernels_for(lv);
                if (!k)
                    continue;
                memset(got, 0xff, nw);
                k->to_f32[k_qt[i]](got, blocks, n);
                int64_t bad = -1;
                for (int64_t j = 0; j < n && bad < 0; j++)
                    if (memcmp(&got[j], want + 4 * j, 4) != 0)
                        bad = j;
                if (bad >= 0) {
                    float wv;
                    memcpy(&wv, want + 4 * bad, 4);
                    pt_fail_(__FILE__, __LINE__, "%s %s: element %lld: %.9g, gguf-py %.9g", k->name,
                             pu_dtype_name(k_qt[i]), (long long)bad, (double)got[bad], (double)wv);
                }
            }
            pu_free(got);
        next:
            pu_free(blocks), pu_free(want);
        }
    }

    if (PT_TEST("legacy quantizers equal gguf-py byte for byte")) {
        for (int i = 0; i < 5; i++) {
            char *in = NULL, *want = NULL;
            size_t ni = 0, nw = 0;
            if (read_fix(k_qt[i], "qin", &in, &ni) && read_fix(k_qt[i], "qout", &want, &nw)) {
                int64_t n = (int64_t)(ni / 4);
                PT_EQ_I64(pu_dtype_nbytes(k_qt[i], n), (int64_t)nw);
                uint8_t *got = pu_malloc(nw);
                pu_quantize_row(k_qt[i], got, (const float *)in, n);
                int64_t bb = pu_dtype_block_bytes(k_qt[i]), bad = -1;
                for (int64_t j = 0; j < (int64_t)nw && bad < 0; j++)
                    if (got[j] != (uint8_t)want[j])
                        bad = j;
                PT_CHECK_MSG(bad < 0, "%s: byte %lld (block %lld) differs from gguf-py",
                             pu_dtype_name(k_qt[i]), (long long)bad, (long long)(bad / bb));
                pu_free(got);
            }
            pu_free(in), pu_free(want);
        }
    }

    if (PT_TEST("K-quant round trip error")) {
        static const double bound[N_QT] = {0.01, 0.12, 0.1, 0.06, 0.05, 0.12, 0.06, 0.03};
        pu_rng r;
        pu_rng_seed(&r, 77);
        enum { n = 4096 };
        float *x = pu_malloc(n * sizeof(float)), *y = pu_malloc(n * sizeof(float));
        uint8_t *q = pu_malloc(n * 2);
        fill_normal(&r, x, n, 0.02f);
        memset(x + 256, 0, 256 * sizeof(float)); /* an all-zero super-block */
        for (int i = 0; i < N_QT; i++) {
            pu_quantize_row(k_qt[i], q, x, n);
            pu_kernels_for(PU_SIMD_REF)->to_f32[k_qt[i]](y, q, n);
            double se = 0, sx = 0;
            for (int j = 0; j < n; j++)
                se += (double)(y[j] - x[j]) * (y[j] - x[j]), sx += (double)x[j] * x[j];
            double rel = sqrt(se / sx);
            PT_CHECK_MSG(rel < bound[i], "%s: relative RMS error %.4f >= %.3f",
                         pu_dtype_name(k_qt[i]), rel, bound[i]);
            for (int j = 256; j < 512; j++)
                PT_CHECK_MSG(y[j] == 0.0f, "%s: zero block not zero", pu_dtype_name(k_qt[i]));
        }
        pu_free(x), pu_free(y), pu_free(q);
    }

    if (PT_TEST("int8 dot kernels: ref vs double, SIMD vs ref")) {
        for (int i = 0; i < N_QT; i++) {
            check_kernels(k_qt[i], 1, 19, 512);
            check_kernels(k_qt[i], 6, 21, 768);
            check_kernels(k_qt[i], 5, 9, 2560);   /* K sliced in prefill (QKC 2048) */
            check_kernels(k_qt[i], 13, 37, 512);  /* prefill panels of 8 rows + tails */
            check_kernels(k_qt[i], 4, 16, 8192);  /* panels over a long K (int16 sums) */
            check_kernels(k_qt[i], 130, 8, 8192); /* activation rows in 2 blocks (128 + 2) */
        }
    }

    if (PT_TEST("AVX512-VNNI prefill panels vs the scalar reference")) {
        if (!pu_kernels_for(PU_SIMD_AVX512) || !pu_cpu_has("avx512_vnni")) {
            pt_skip("this CPU lacks AVX-512 or AVX512-VNNI: the vpdpbusd panels are not checked");
        } else { /* check_kernels covers the AVX-512 table, VNNI panels for T >= 4 */
            static const pu_dtype vt[] = {PU_DTYPE_Q8_0, PU_DTYPE_Q4_0, PU_DTYPE_Q4_K};
            for (int i = 0; i < 3; i++) {
                check_kernels(vt[i], 13, 37, 512);
                check_kernels(vt[i], 4, 16, 8192);
            }
        }
    }

    if (PT_TEST("quantized matmul op: 1 vs 2 threads")) {
        pu_pool *pool = pu_pool_create(2);
        pu_rng r;
        pu_rng_seed(&r, 5);
        int64_t N = 200, K = 512;
        float *wf = pu_malloc((size_t)(N * K) * 4), *x = pu_malloc((size_t)(8 * K) * 4);
        float *y1 = pu_malloc((size_t)(8 * N) * 4), *y2 = pu_malloc((size_t)(8 * N) * 4);
        fill_normal(&r, wf, N * K, 0.1f);
        fill_normal(&r, x, 8 * K, 1.0f);
        uint8_t *w = pu_malloc((size_t)(N * K) * 2);
        for (int i = 0; i < N_QT; i++) {
            int64_t rb = pu_dtype_nbytes(k_qt[i], K);
            for (int64_t n = 0; n < N; n++)
                pu_quantize_row(k_qt[i], w + n * rb, wf + n * K, K);
            for (int64_t T = 1; T <= 8; T += 7) {
                pu_op_matmul(NULL, pu_kernels_get(), y1, x, w, k_qt[i], T, N, K);
                pu_op_matmul(pool, pu_kernels_get(), y2, x, w, k_qt[i], T, N, K);
                PT_CHECK_MSG(memcmp(y1, y2, (size_t)(T * N) * 4) == 0, "%s T=%lld",
                             pu_dtype_name(k_qt[i]), (long long)T);
            }
        }
        pu_free(wf), pu_free(x), pu_free(y1), pu_free(y2), pu_free(w);
        pu_pool_destroy(pool);
    }

    if (PT_TEST("multi-part matmul equals one matmul per part, bit for bit")) {
        pu_pool *pool = pu_pool_create(2);
        pu_rng r;
        pu_rng_seed(&r, 9);
        enum { NP = 3 };
        int64_t K = 512, Ns[NP] = {136, 40, 37};
        pu_dtype ts[2][NP] = {{PU_DTYPE_Q8_0, PU_DTYPE_Q4_K, PU_DTYPE_Q6_K},
                              {PU_DTYPE_Q4_0, PU_DTYPE_F32, PU_DTYPE_Q5_1}}; /* 2nd: fallback */
        float *x = pu_malloc((size_t)(9 * K) * 4);
        fill_normal(&r, x, 9 * K, 1.0f);
        for (int v = 0; v < 2; v++) {
            void *w[NP];
            float *y1[NP], *y2[NP];
            pu_mm_part parts[NP];
            for (int p = 0; p < NP; p++) {
                float *wf = pu_malloc((size_t)(Ns[p] * K) * 4);
                fill_normal(&r, wf, Ns[p] * K, 0.1f);
                int64_t rb = pu_dtype_nbytes(ts[v][p], K);
                w[p] = pu_malloc((size_t)(Ns[p] * rb));
                for (int64_t n = 0; n < Ns[p]; n++) {
                    if (ts[v][p] == PU_DTYPE_F32)
                        memcpy((uint8_t *)w[p] + n * rb, wf + n * K, (size_t)rb);
                    else
                        pu_quantize_row(ts[v][p], (uint8_t *)w[p] + n * rb, wf + n * K, K);
                }
                pu_free(wf);
                y1[p] = pu_malloc((size_t)(9 * Ns[p]) * 4);
                y2[p] = pu_malloc((size_t)(9 * Ns[p]) * 4);
                parts[p] = (pu_mm_part){y2[p], w[p], ts[v][p], Ns[p]};
            }
            for (int64_t T = 1; T <= 9; T += 8)
                for (int th = 0; th < 2; th++) {
                    for (int p = 0; p < NP; p++)
                        pu_op_matmul(NULL, pu_kernels_get(), y1[p], x, w[p], ts[v][p], T, Ns[p], K);
                    pu_op_matmul_multi(th ? pool : NULL, pu_kernels_get(), x, T, K, parts, NP);
                    for (int p = 0; p < NP; p++)
                        PT_CHECK_MSG(memcmp(y1[p], y2[p], (size_t)(T * Ns[p]) * 4) == 0,
                                     "part %d (%s) T=%lld threads=%d", p, pu_dtype_name(ts[v][p]),
                                     (long long)T, th + 1);
                }
            for (int p = 0; p < NP; p++)
                pu_free(w[p]), pu_free(y1[p]), pu_free(y2[p]);
        }
        pu_free(x);
        pu_pool_destroy(pool);
    }

    if (PT_TEST("quantized tiny model: logits")) {
        pu_config c;
        pu_config_defaults(&c);
        snprintf(c.model_type, sizeof c.model_type, "internlm2");
        c.vocab_size = 512, c.hidden_size = 256, c.intermediate_size = 512;
        c.num_hidden_layers = 2, c.num_attention_heads = 4, c.num_key_value_heads = 2;
        c.head_dim = 64, c.max_position_embeddings = 128, c.tie_word_embeddings = false;
        /* relative rms of the logits vs the original F32 model (weight rounding) */
        static const double wbound[N_QT] = {0.03, 0.35, 0.3, 0.18, 0.16, 0.28, 0.15, 0.075};
        pu_pool *pool = pu_pool_create(2);
        pu_model *f32 = NULL;
        PT_OK(pu_model_init_random(&c, PU_DTYPE_F32, 11, 0.05f, false, pool, &f32));
        if (f32)
            for (int i = 0; i < N_QT; i++)
                check_model(k_qt[i], wbound[i], f32, pool);
        pu_model_destroy(f32);
        pu_pool_destroy(pool);
    }
}
