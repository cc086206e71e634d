/*
 * test_train.c — the training engine's math.
 *
 * train_ops:   every _bwd against central finite differences of a scalar
 *              loss L = sum(out * R) (R random), accumulated in double, on
 *              tiny shapes; also the += contract.
 * train_model: full-model gradients of a tiny GQA config against PyTorch
 *              autograd in float64 (tests/golden/train/ref.safetensors from
 *              tools/gen_train_ref.py); 10 AdamW steps with gradient
 *              accumulation, clipping, warmup + cosine, decay masks against
 *              torch.optim.AdamW; bitwise equality for 1 vs 2 threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pt.h"
#include "puyu/pu_train.h"
#include "train/train_impl.h"

/* ---------------------------------------------------------------- helpers */

static void fill(float *x, int64_t n, pu_rng *r, float scale) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)pu_rng_normal(r) * scale;
}

static float *rnd(int64_t n, pu_rng *r, float scale) {
    float *x = pu_malloc((size_t)n * sizeof(float));
    fill(x, n, r, scale);
    return x;
}

static float *zeros(int64_t n) {
    return pu_calloc((size_t)n, sizeof(float));
}

typedef double (*loss_fn)(void *ctx);

/* Check analytic gradient g (n) of input x (n) against central differences of
 * f. Returns the max abs error (and fails the test past atol + rtol*|num|). */
static double fd_check(const char *label, loss_fn f, void *ctx, float *x, const float *g, int64_t n,
                       float h, double atol, double rtol) {
    double maxerr = 0;
    int64_t bad = -1;
    double bad_a = 0, bad_n = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = v + h;
        double lp = f(ctx);
        x[i] = v - h;
        double lm = f(ctx);
        x[i] = v;
        double num = (lp - lm) / (2.0 * (double)h);
        double err = fabs((double)g[i] - num);
        if (err > maxerr)
            maxerr = err;
        if (err > atol + rtol * fabs(num) && bad < 0) {
            bad = i;
            bad_a = g[i];
            bad_n = num;
        }
    }
    if (bad >= 0)
        pt_fail_(__FILE__, __LINE__, "%s: grad[%lld] analytic %.7g vs numeric %.7g (max err %.3g)",
                 label, (long long)bad, bad_a, bad_n, maxerr);
    return maxerr;
}

static double dot_d(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ---------------------------------------------------------------- ops */

typedef struct {
    int64_t N, C, M, K, B, T, H, Hkv, D, V;
    float *x, *w, *out, *R, *aux, *q, *k, *v, *probs, *g, *u;
    int32_t *ids, *tg, *seg, *pos;
    float *cos, *sin;
    float eps;
} opc;

static double l_rms(void *vc) {
    opc *c = vc;
    pu_top_rmsnorm_fwd(NULL, c->out, c->aux, c->x, c->w, c->N, c->C, c->eps);
    return dot_d(c->out, c->R, c->N * c->C);
}
static double l_mm(void *vc) {
    opc *c = vc;
    pu_top_matmul_fwd(NULL, pu_kernels_get(), c->out, c->x, c->w, c->N, c->M, c->K);
    return dot_d(c->out, c->R, c->N * c->M);
}
static double l_emb(void *vc) {
    opc *c = vc;
    pu_top_embed_fwd(c->out, c->ids, c->w, c->N, c->C);
    return dot_d(c->out, c->R, c->N * c->C);
}
static double l_rope(void *vc) {
    opc *c = vc;
    memcpy(c->out, c->x, (size_t)(c->N * c->H * c->D) * sizeof(float));
    pu_top_rope_fwd(c->out, c->pos, c->N, c->T, c->H, c->D, c->cos, c->sin);
    return dot_d(c->out, c->R, c->N * c->H * c->D);
}
static double l_attn(void *vc) {
    opc *c = vc;
    pu_top_attn_fwd(NULL, pu_kernels_get(), c->out, c->probs, c->q, c->k, c->v, c->seg, c->B, c->T,
                    c->H, c->Hkv, c->D);
    return dot_d(c->out, c->R, c->B * c->T * c->H * c->D);
}
static double l_swiglu(void *vc) {
    opc *c = vc;
    pu_top_swiglu_fwd(NULL, c->out, c->g, c->u, c->N);
    return dot_d(c->out, c->R, c->N);
}
static double l_xent(void *vc) {
    opc *c = vc;
    return 0.37 * pu_top_xent_fwd(NULL, pu_kernels_get(), c->aux, c->out, c->x, c->tg, c->N, c->V);
}

static void test_ops(void) {
    pu_rng r;
    pu_rng_seed(&r, 7);
    const pu_kernels *k = pu_kernels_get();
    pu_tws ws = {0};
    if (PT_TEST("gemm: strides, tails, accumulate, 1 vs 2 threads bitwise")) {
        int64_t shapes[][3] = {{1, 1, 1},     {13, 33, 7},    {37, 70, 300},
                               {12, 32, 256}, {100, 17, 513}, {5, 600, 40}};
        pu_pool *p2 = pu_pool_create(2);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            float *a = rnd(M * K, &r, 1.0f), *b = rnd(K * N, &r, 1.0f);
            float *c1 = rnd(M * N, &r, 1.0f), *c2 = pu_malloc((size_t)(M * N) * sizeof(float));
            double *want = pu_malloc((size_t)(M * N) * sizeof(double));
            for (int mode = 0; mode < 4; mode++) {
                /* mode 0: A row-major, B row-major; 1: A^T stored; 2: B^T stored; 3: both */
                int64_t ars = mode & 1 ? 1 : K, acs = mode & 1 ? M : 1;
                int64_t brs = mode & 2 ? 1 : N, bcs = mode & 2 ? K : 1;
                bool acc = mode == 1 || mode == 3;
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        double sum = acc ? c1[i * N + j] : 0;
                        for (int64_t q = 0; q < K; q++)
                            sum += (double)a[i * ars + q * acs] * b[q * brs + j * bcs];
                        want[i * N + j] = sum;
                    }
                memcpy(c2, c1, (size_t)(M * N) * sizeof(float));
                pu_top_gemm(NULL, c1, N, a, ars, acs, b, brs, bcs, M, N, K, acc);
                pu_top_gemm(p2, c2, N, a, ars, acs, b, brs, bcs, M, N, K, acc);
                double maxerr = 0;
                for (int64_t i = 0; i < M * N; i++)
                    maxerr = fmax(maxerr, fabs(c1[i] - want[i]) / (1.0 + fabs(want[i])));
                PT_CHECK_MSG(maxerr < 1e-5 * sqrt((double)K),
                             "gemm %lldx%lldx%lld mode %d: "
                             "err %.3g",
                             (long long)M, (long long)N, (long long)K, mode, maxerr);
                PT_CHECK_MSG(memcmp(c1, c2, (size_t)(M * N) * sizeof(float)) == 0,
                             "gemm %lldx%lldx%lld mode %d: 1 vs 2 threads differ", (long long)M,
                             (long long)N, (long long)K, mode);
            }
            pu_free(a), pu_free(b), pu_free(c1), pu_free(c2), pu_free(want);
        }
        pu_pool_destroy(p2);
    }
    if (PT_TEST("rmsnorm_bwd vs finite differences")) {
        opc c = {.N = 3, .C = 12, .eps = 1e-5f};
        c.x = rnd(36, &r, 1.0f);
        c.w = rnd(12, &r, 0.5f);
        c.out = zeros(36);
        c.aux = zeros(3);
        c.R = rnd(36, &r, 1.0f);
        float *dx = zeros(36), *dw = zeros(12);
        l_rms(&c);
        /* += contract: start from ones, subtract after */
        for (int i = 0; i < 12; i++)
            dw[i] = 1.0f;
        pu_top_rmsnorm_bwd(NULL, dx, dw, c.R, c.x, c.aux, c.w, 3, 12);
        for (int i = 0; i < 12; i++)
            dw[i] -= 1.0f;
        fd_check("rmsnorm dx", l_rms, &c, c.x, dx, 36, 1e-2f, 2e-4, 2e-3);
        fd_check("rmsnorm dw", l_rms, &c, c.w, dw, 12, 1e-2f, 2e-4, 2e-3);
        pu_free(c.x), pu_free(c.w), pu_free(c.out), pu_free(c.aux), pu_free(c.R);
        pu_free(dx), pu_free(dw);
    }
    if (PT_TEST("matmul_bwd vs finite differences (+=)")) {
        opc c = {.N = 5, .M = 7, .K = 9};
        c.x = rnd(45, &r, 1.0f);
        c.w = rnd(63, &r, 1.0f);
        c.out = zeros(35);
        c.R = rnd(35, &r, 1.0f);
        float *dx = zeros(45), *dw = zeros(63);
        pu_top_matmul_bwd(NULL, k, &ws, dx, dw, c.R, c.x, c.w, 5, 7, 9);
        fd_check("matmul dx", l_mm, &c, c.x, dx, 45, 1e-2f, 2e-4, 2e-3);
        fd_check("matmul dw", l_mm, &c, c.w, dw, 63, 1e-2f, 2e-4, 2e-3);
        /* accumulate: a second call doubles */
        float *dx2 = pu_malloc(45 * sizeof(float));
        memcpy(dx2, dx, 45 * sizeof(float));
        pu_top_matmul_bwd(NULL, k, &ws, dx2, NULL, c.R, c.x, c.w, 5, 7, 9);
        for (int i = 0; i < 45; i++)
            PT_NEAR(dx2[i], 2 * dx[i], 1e-5, 1e-5);
        pu_free(c.x), pu_free(c.w), pu_free(c.out), pu_free(c.R), pu_free(dx), pu_free(dw);
        pu_free(dx2);
    }
    if (PT_TEST("embedding_bwd vs finite differences (repeated ids)")) {
        opc c = {.N = 6, .C = 5};
        int32_t ids[6] = {2, 0, 2, 3, 2, 0};
        c.ids = ids;
        c.w = rnd(4 * 5, &r, 1.0f);
        c.out = zeros(30);
        c.R = rnd(30, &r, 1.0f);
        float *dw = zeros(20);
        pu_top_embed_bwd(NULL, dw, c.R, ids, 6, 5);
        fd_check("embedding dtable", l_emb, &c, c.w, dw, 20, 1e-2f, 1e-4, 1e-3);
        pu_free(c.w), pu_free(c.out), pu_free(c.R), pu_free(dw);
    }
    if (PT_TEST("rope_bwd vs finite differences (positions given and implicit)")) {
        pu_config cfg;
        pu_config_defaults(&cfg);
        cfg.head_dim = 8;
        cfg.rope_theta = 10000;
        opc c = {.N = 6, .T = 3, .H = 2, .D = 8};
        c.cos = zeros(8 * 4);
        c.sin = zeros(8 * 4);
        pu_top_rope_tables(&cfg, 8, c.cos, c.sin);
        int32_t pos[6] = {0, 5, 1, 2, 7, 3};
        for (int variant = 0; variant < 2; variant++) {
            c.pos = variant ? pos : NULL;
            c.x = rnd(96, &r, 1.0f);
            c.out = zeros(96);
            c.R = rnd(96, &r, 1.0f);
            float *dx = pu_malloc(96 * sizeof(float));
            memcpy(dx, c.R, 96 * sizeof(float));
            pu_top_rope_bwd(dx, c.pos, 6, 3, 2, 8, c.cos, c.sin);
            fd_check(variant ? "rope dx (pos)" : "rope dx", l_rope, &c, c.x, dx, 96, 1e-2f, 1e-4,
                     1e-3);
            pu_free(c.x), pu_free(c.out), pu_free(c.R), pu_free(dx);
        }
        pu_free(c.cos), pu_free(c.sin);
    }
    if (PT_TEST("attention_bwd vs finite differences (GQA, causal, segments)")) {
        for (int variant = 0; variant < 2; variant++) {
            opc c = {.B = 2, .T = 5, .H = 4, .Hkv = 2, .D = 4};
            int64_t nq = 2 * 5 * 4 * 4, nk = 2 * 5 * 2 * 4;
            int32_t seg[10] = {0, 0, 1, 1, 1, 4, 4, 4, 6, 6};
            c.seg = variant ? seg : NULL;
            c.q = rnd(nq, &r, 1.0f);
            c.k = rnd(nk, &r, 1.0f);
            c.v = rnd(nk, &r, 1.0f);
            c.out = zeros(nq);
            c.probs = zeros(2 * 4 * 25);
            c.R = rnd(nq, &r, 1.0f);
            float *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
            l_attn(&c);
            pu_top_attn_bwd(NULL, k, dq, dk, dv, c.R, c.probs, c.q, c.k, c.v, 2, 5, 4, 2, 4);
            fd_check("attention dq", l_attn, &c, c.q, dq, nq, 1e-2f, 3e-4, 3e-3);
            fd_check("attention dk", l_attn, &c, c.k, dk, nk, 1e-2f, 3e-4, 3e-3);
            fd_check("attention dv", l_attn, &c, c.v, dv, nk, 1e-2f, 3e-4, 3e-3);
            if (variant) { /* token 2 starts a new document: it sees only itself */
                const float *p = c.probs + 2 * 5; /* b 0, h 0, t 2 */
                PT_NEAR(p[0] + p[1], 0.0, 0, 0);
                PT_NEAR(p[2], 1.0, 1e-6, 0);
            }
            pu_free(c.q), pu_free(c.k), pu_free(c.v), pu_free(c.out), pu_free(c.probs);
            pu_free(c.R), pu_free(dq), pu_free(dk), pu_free(dv);
        }
    }
    if (PT_TEST("swiglu_bwd vs finite differences")) {
        opc c = {.N = 40};
        c.g = rnd(40, &r, 2.0f);
        c.u = rnd(40, &r, 1.0f);
        c.out = zeros(40);
        c.R = rnd(40, &r, 1.0f);
        float *dg = zeros(40), *du = zeros(40);
        pu_top_swiglu_bwd(NULL, dg, du, c.R, c.g, c.u, 40);
        fd_check("swiglu dgate", l_swiglu, &c, c.g, dg, 40, 1e-2f, 1e-4, 1e-3);
        fd_check("swiglu dup", l_swiglu, &c, c.u, du, 40, 1e-2f, 1e-4, 1e-3);
        pu_free(c.g), pu_free(c.u), pu_free(c.out), pu_free(c.R), pu_free(dg), pu_free(du);
    }
    if (PT_TEST("cross-entropy bwd vs finite differences (ignored targets)")) {
        opc c = {.N = 4, .V = 7};
        int32_t tg[4] = {3, PU_IGNORE_INDEX, 0, 6};
        c.tg = tg;
        c.x = rnd(28, &r, 2.0f);
        c.aux = zeros(4);
        c.out = zeros(4);
        float *d = pu_malloc(28 * sizeof(float));
        l_xent(&c);
        memcpy(d, c.x, 28 * sizeof(float));
        pu_top_xent_bwd(NULL, k, d, c.aux, tg, 4, 7, 0.37f);
        fd_check("xent dlogits", l_xent, &c, c.x, d, 28, 1e-2f, 1e-4, 1e-3);
        for (int i = 7; i < 14; i++)
            PT_CHECK(d[i] == 0.0f);
        PT_CHECK(c.out[1] == 0.0f);
        pu_free(c.x), pu_free(c.aux), pu_free(c.out), pu_free(d);
    }
    pu_tws_free(&ws);
}

PT_SUITE(train_ops) {
    test_ops();
}

/* ---------------------------------------------------------------- model */

static const char *ref_path(char *buf, size_t cap) {
    const char *dirs[] = {"tests/golden/train/ref.safetensors",
                          "../tests/golden/train/ref.safetensors"};
    for (int i = 0; i < 2; i++)
        if (pu_file_exists(dirs[i])) {
            snprintf(buf, cap, "%s", dirs[i]);
            return buf;
        }
    return NULL;
}

static pu_status load_ref(pu_st_in *f, pu_config *cfg) {
    char buf[256];
    const char *p = ref_path(buf, sizeof buf);
    if (!p)
        return pu_err_set(PU_ERR_IO, "tests/golden/train/ref.safetensors not found");
    PU_TRY(pu_train_st_open(f, p));
    const char *cj = pu_train_st_meta(f, "config");
    if (!cj)
        return pu_err_set(PU_ERR_FORMAT, "%s: no config in metadata", p);
    return pu_config_parse(cj, strlen(cj), "ref config", cfg);
}

static pu_status load_weights_prefix(pu_tmodel *m, const pu_st_in *f, const char *prefix,
                                     float *dst_slab) {
    char name[128];
    for (int i = 0; i < pu_tmodel_n_params(m); i++) {
        const pu_param *p = pu_tmodel_param(m, i);
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        PU_TRY(pu_train_st_get(f, name, dst_slab + p->offset, p->numel));
    }
    return PU_OK;
}

static double meta_double(const pu_st_in *f, const char *key) {
    const char *s = pu_train_st_meta(f, key);
    return s ? atof(s) : NAN;
}

typedef struct {
    pu_tmodel *m;
    int first[16], end[16], n;
    float *snap; /* each entry's gradient as the hook saw it */
} hook_log;

static void record_hook(void *ctx, int first, int end) {
    hook_log *h = ctx;
    if (!h->snap)
        h->snap = pu_calloc((size_t)pu_tmodel_numel(h->m), sizeof(float));
    if (h->n < 16) {
        h->first[h->n] = first;
        h->end[h->n] = end;
    }
    h->n++;
    for (int i = first; i < end; i++) {
        const pu_param *p = pu_tmodel_param(h->m, i);
        memcpy(h->snap + p->offset, pu_tmodel_grads(h->m) + p->offset,
               (size_t)p->numel * sizeof(float));
    }
}

static void test_model(void) {
    if (PT_TEST("full-model gradients match PyTorch autograd (float64)")) {
        pu_st_in f;
        pu_config cfg;
        pu_status st = load_ref(&f, &cfg);
        PT_OK(st);
        if (st != PU_OK)
            return;
        int64_t B = 2, T = 16, N = B * T;
        pu_tmodel *m = NULL;
        PT_OK(pu_tmodel_create(&cfg, B, T, &m));
        PT_OK(load_weights_prefix(m, &f, "w.", pu_tmodel_params(m)));
        float *fi = pu_malloc((size_t)N * sizeof(float)),
              *ft = pu_malloc((size_t)N * sizeof(float));
        int32_t *ids = pu_malloc((size_t)N * sizeof(int32_t)), *tg = pu_malloc((size_t)N * 4);
        PT_OK(pu_train_st_get(&f, "grad_ids", fi, N));
        PT_OK(pu_train_st_get(&f, "grad_targets", ft, N));
        for (int64_t i = 0; i < N; i++)
            ids[i] = (int32_t)fi[i], tg[i] = (int32_t)ft[i];
        pu_tbatch b = {ids, tg, NULL, NULL, B, T};
        double ls = 0;
        int64_t cnt = 0;
        PT_OK(pu_tmodel_forward(m, NULL, &b, &ls, &cnt));
        PT_EQ_I64(cnt, N - 3);
        double want = meta_double(&f, "loss");
        PT_NEAR(ls / cnt, want, 0, 1e-6);
        pu_tmodel_zero_grad(m);
        pu_tmodel_backward(m, NULL, (float)(1.0 / cnt));
        float *want_g = pu_malloc((size_t)pu_tmodel_numel(m) * sizeof(float));
        PT_OK(load_weights_prefix(m, &f, "g.", want_g));
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < pu_tmodel_n_params(m); i++) {
            const pu_param *p = pu_tmodel_param(m, i);
            const float *g = pu_tmodel_grads(m) + p->offset, *w = want_g + p->offset;
            double mx = 0, err = 0;
            for (int64_t j = 0; j < p->numel; j++) {
                mx = fmax(mx, fabs(w[j]));
                err = fmax(err, fabs((double)g[j] - w[j]));
            }
            double rel = err / (mx > 0 ? mx : 1);
            if (rel > worst)
                worst = rel, worst_name = p->name;
            PT_CHECK_MSG(rel < 2e-5, "%s: max |grad err| %.3g = %.3g of max |grad| %.3g", p->name,
                         err, rel, mx);
        }
        printf("    loss %.9f (torch %.9f); worst grad error %.2e of the tensor's max (%s)\n",
               ls / cnt, want, worst, worst_name);
        pu_free(want_g), pu_free(fi), pu_free(ft), pu_free(ids), pu_free(tg);
        pu_tmodel_destroy(m);
        pu_train_st_close(&f);
    }
    if (PT_TEST("10 AdamW steps (grad accumulation 2) match torch.optim.AdamW")) {
        pu_st_in f;
        pu_config cfg;
        pu_status st = load_ref(&f, &cfg);
        PT_OK(st);
        if (st != PU_OK)
            return;
        int64_t T = 16, B = 2, steps = 10;
        pu_tmodel *m = NULL;
        PT_OK(pu_tmodel_create(&cfg, 1, T, &m));
        PT_OK(load_weights_prefix(m, &f, "w.", pu_tmodel_params(m)));
        float *win = pu_malloc((size_t)(steps * B * (T + 1)) * sizeof(float));
        PT_OK(pu_train_st_get(&f, "adam_ids", win, steps * B * (T + 1)));
        json_t *jl = NULL;
        const char *ls_txt = pu_train_st_meta(&f, "adam_losses");
        PT_OK(pu_json_loadb(ls_txt, strlen(ls_txt), "adam_losses", &jl));
        pu_adamw_cfg ac = {0.9, 0.95, 1e-8, 0.1, 1.0};
        pu_adamw opt;
        pu_adamw_init(&opt, &ac, pu_tmodel_numel(m));
        pu_pool *pool = pu_pool_create(2);
        double worst = 0;
        int32_t ids[16], tg[16];
        for (int64_t s = 0; s < steps; s++) {
            pu_tmodel_zero_grad(m);
            double tot = 0;
            for (int64_t mb = 0; mb < B; mb++) {
                const float *w = win + (s * B + mb) * (T + 1);
                for (int64_t t = 0; t < T; t++)
                    ids[t] = (int32_t)w[t], tg[t] = (int32_t)w[t + 1];
                pu_tbatch b = {ids, tg, NULL, NULL, 1, T};
                double l = 0;
                int64_t cnt = 0;
                PT_OK(pu_tmodel_forward(m, pool, &b, &l, &cnt));
                pu_tmodel_backward(m, pool, (float)(1.0 / (double)(B * T)));
                tot += l;
            }
            double lr = pu_lr_at(s, steps, 2, 3e-3, 3e-4);
            pu_adamw_step(&opt, m, pool, lr);
            double got = tot / (double)(B * T);
            double want = json_real_value(json_array_get((json_t *)jl, (size_t)s));
            double rel = fabs(got - want) / fabs(want);
            worst = fmax(worst, rel);
            PT_CHECK_MSG(rel < 1e-4, "step %lld: loss %.9f vs torch %.9f (rel %.2e)", (long long)s,
                         got, want, rel);
        }
        float *fin = pu_malloc((size_t)pu_tmodel_numel(m) * sizeof(float));
        PT_OK(load_weights_prefix(m, &f, "final.", fin));
        double werr = 0;
        for (int i = 0; i < pu_tmodel_n_params(m); i++) {
            const pu_param *p = pu_tmodel_param(m, i);
            for (int64_t j = 0; j < p->numel; j++)
                werr = fmax(werr,
                            fabs((double)pu_tmodel_params(m)[p->offset + j] - fin[p->offset + j]));
        }
        PT_CHECK_MSG(werr < 1e-4, "final weights differ from torch by %.3g", werr);
        printf("    10 AdamW steps: worst loss rel diff %.2e, final weights max |diff| %.2e\n",
               worst, werr);
        pu_json_decref(jl);
        pu_free(fin), pu_free(win);
        pu_adamw_free(&opt);
        pu_pool_destroy(pool);
        pu_tmodel_destroy(m);
        pu_train_st_close(&f);
    }
    if (PT_TEST("forward/backward bitwise identical for 1 and 2 threads")) {
        pu_config cfg;
        pu_config_defaults(&cfg);
        cfg.vocab_size = 300, cfg.hidden_size = 64, cfg.intermediate_size = 160;
        cfg.num_hidden_layers = 2, cfg.num_attention_heads = 4, cfg.num_key_value_heads = 2;
        cfg.head_dim = 16, cfg.max_position_embeddings = 64, cfg.rms_norm_eps = 1e-5;
        int64_t B = 2, T = 24, N = B * T;
        int32_t *ids = pu_malloc((size_t)N * 4), *tg = pu_malloc((size_t)N * 4);
        pu_rng r;
        pu_rng_seed(&r, 3);
        for (int64_t i = 0; i < N; i++)
            ids[i] = (int32_t)(pu_rng_u64(&r) % 300), tg[i] = (int32_t)(pu_rng_u64(&r) % 300);
        float *g1 = NULL;
        double l1 = 0;
        for (int nt = 1; nt <= 2; nt++) {
            pu_tmodel *m = NULL;
            PT_OK(pu_tmodel_create(&cfg, B, T, &m));
            pu_tmodel_init_random(m, 11, 0.08f);
            pu_pool *pool = pu_pool_create(nt);
            pu_tbatch b = {ids, tg, NULL, NULL, B, T};
            double l = 0;
            int64_t cnt = 0;
            PT_OK(pu_tmodel_forward(m, pool, &b, &l, &cnt));
            pu_tmodel_backward(m, pool, 1.0f / (float)cnt);
            if (nt == 1) {
                g1 = pu_malloc((size_t)pu_tmodel_numel(m) * sizeof(float));
                memcpy(g1, pu_tmodel_grads(m), (size_t)pu_tmodel_numel(m) * sizeof(float));
                l1 = l;
            } else {
                PT_CHECK(l == l1);
                PT_CHECK(memcmp(g1, pu_tmodel_grads(m),
                                (size_t)pu_tmodel_numel(m) * sizeof(float)) == 0);
            }
            pu_pool_destroy(pool);
            pu_tmodel_destroy(m);
        }
        pu_free(g1), pu_free(ids), pu_free(tg);
    }
    if (PT_TEST("packed documents (pos + seg) == the documents alone")) {
        /* SFT packing: one row holding doc A (5 tokens) then doc B (7) with
         * positions restarting and attention within each doc gives the same
         * logits and gradients as two separate rows. */
        pu_config cfg;
        pu_config_defaults(&cfg);
        cfg.vocab_size = 50, cfg.hidden_size = 32, cfg.intermediate_size = 48;
        cfg.num_hidden_layers = 2, cfg.num_attention_heads = 4, cfg.num_key_value_heads = 2;
        cfg.head_dim = 8, cfg.max_position_embeddings = 16, cfg.rms_norm_eps = 1e-5;
        int32_t ids[12] = {3, 9, 14, 7, 22, 5, 41, 8, 8, 30, 2, 17};
        int32_t tg[12] = {9, 14, 7, 22, 2, 41, 8, 8, 30, 2, 17, 2};
        int32_t pos[12] = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6};
        int32_t seg[12] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1};
        pu_tmodel *packed = NULL, *alone = NULL;
        PT_OK(pu_tmodel_create(&cfg, 1, 12, &packed));
        PT_OK(pu_tmodel_create(&cfg, 1, 12, &alone));
        if (packed && alone) {
            pu_tmodel_init_random(packed, 5, 0.2f);
            pu_tmodel_init_random(alone, 5, 0.2f);
            pu_tbatch b = {ids, tg, pos, seg, 1, 12};
            double l1 = 0, l2 = 0, la = 0;
            int64_t c1 = 0, c2 = 0;
            PT_OK(pu_tmodel_forward(packed, NULL, &b, &l1, &c1));
            float *lg = pu_malloc(12 * 50 * sizeof(float));
            memcpy(lg, pu_tmodel_logits(packed), 12 * 50 * sizeof(float));
            pu_tmodel_backward(packed, NULL, 1.0f / 12);
            pu_tbatch ba = {ids, tg, NULL, NULL, 1, 5}, bb = {ids + 5, tg + 5, NULL, NULL, 1, 7};
            PT_OK(pu_tmodel_forward(alone, NULL, &ba, &la, &c2));
            PT_ALLCLOSE("doc A logits", lg, pu_tmodel_logits(alone), 5 * 50, 1e-5, 1e-5);
            pu_tmodel_backward(alone, NULL, 1.0f / 12);
            PT_OK(pu_tmodel_forward(alone, NULL, &bb, &l2, &c2));
            PT_ALLCLOSE("doc B logits", lg + 5 * 50, pu_tmodel_logits(alone), 7 * 50, 1e-5, 1e-5);
            pu_tmodel_backward(alone, NULL, 1.0f / 12);
            PT_NEAR(l1, la + l2, 1e-5, 1e-6);
            PT_ALLCLOSE("grads", pu_tmodel_grads(packed), pu_tmodel_grads(alone),
                        pu_tmodel_numel(alone), 1e-6, 1e-4);
            pu_free(lg);
        }
        pu_tmodel_destroy(packed);
        pu_tmodel_destroy(alone);
    }
    if (PT_TEST("chunked LM head + cross-entropy == the unchunked one (loss, logps, grads)")) {
        /* N = 2 x 13 = 26 tokens in chunks of 7 (the last one 5), some targets
         * ignored; fp32 and bf16 operands; the plain backward and the per-row
         * weighted one (backward_logp, as DPO uses) */
        pu_config cfg;
        pu_config_defaults(&cfg);
        cfg.vocab_size = 61, cfg.hidden_size = 32, cfg.intermediate_size = 48;
        cfg.num_hidden_layers = 2, cfg.num_attention_heads = 4, cfg.num_key_value_heads = 2;
        cfg.head_dim = 8, cfg.max_position_embeddings = 16, cfg.rms_norm_eps = 1e-5;
        enum { B = 2, T = 13, N = B * T };
        int32_t ids[N], tg[N];
        for (int i = 0; i < N; i++) {
            ids[i] = (i * 37 + 5) % 61;
            tg[i] = i % 5 == 3 ? PU_IGNORE_INDEX : (i * 11 + 2) % 61;
        }
        float dlogp[N];
        for (int i = 0; i < N; i++)
            dlogp[i] = 0.01f * (float)((i % 7) - 3);
        PT_CHECK(pu_tmodel_ce_rows_for(0, 8192, 32000) == 262);
        PT_CHECK(pu_tmodel_ce_rows_for(0, 2048, 32000) == 0);
        PT_CHECK(pu_tmodel_ce_rows_for(-1, 1 << 20, 32000) == 0);
        PT_CHECK(pu_tmodel_ce_rows_for(7, N, 61) == 7);
        PT_CHECK(pu_tmodel_ce_rows_for(N, N, 61) == 0);
        for (int prec = 0; prec < 2; prec++)
            for (int mode = 0; mode < 2; mode++) {
                pu_tmodel *m[2] = {NULL, NULL};
                double l[2] = {0, 0};
                int64_t cnt[2] = {0, 0};
                float *lp[2] = {NULL, NULL};
                for (int v = 0; v < 2; v++) {
                    pu_tmodel_opts o;
                    pu_tmodel_opts_default(&o);
                    o.ce_chunk = v ? 7 : -1;
                    o.precision = prec ? "bf16" : "fp32";
                    PT_OK(pu_tmodel_create_opts(&cfg, B, T, &o, &m[v]));
                    if (!m[v])
                        continue;
                    PT_CHECK(pu_tmodel_ce_rows(m[v]) == (v ? 7 : 0));
                    PT_CHECK((pu_tmodel_logits(m[v]) == NULL) == (v == 1));
                    pu_tmodel_init_random(m[v], 21, 0.3f);
                    pu_tbatch b = {ids, tg, NULL, NULL, B, T};
                    PT_OK(pu_tmodel_forward(m[v], NULL, &b, &l[v], &cnt[v]));
                    lp[v] = pu_malloc(N * sizeof(float));
                    memcpy(lp[v], pu_tmodel_token_logps(m[v]), N * sizeof(float));
                    if (mode == 0)
                        pu_tmodel_backward(m[v], NULL, 1.0f / (float)cnt[v]);
                    else
                        pu_tmodel_backward_logp(m[v], NULL, dlogp, NULL);
                }
                if (m[0] && m[1]) {
                    PT_CHECK(cnt[0] == cnt[1]);
                    PT_NEAR(l[1], l[0], 1e-9, 1e-12);
                    PT_ALLCLOSE("logps", lp[1], lp[0], N, 0, 0);
                    PT_ALLCLOSE("grads", pu_tmodel_grads(m[1]), pu_tmodel_grads(m[0]),
                                pu_tmodel_numel(m[0]), 1e-6, 1e-5);
                    /* the gradient is not trivially zero */
                    double g2 = 0;
                    for (int64_t i = 0; i < pu_tmodel_numel(m[0]); i++)
                        g2 += (double)pu_tmodel_grads(m[0])[i] * pu_tmodel_grads(m[0])[i];
                    PT_CHECK(g2 > 1e-6);
                }
                for (int v = 0; v < 2; v++) {
                    pu_free(lp[v]);
                    pu_tmodel_destroy(m[v]);
                }
            }
    }
    if (PT_TEST("frozen tensors: no weight grad, no update; dx still flows")) {
        pu_config cfg;
        pu_config_defaults(&cfg);
        cfg.vocab_size = 40, cfg.hidden_size = 16, cfg.intermediate_size = 24;
        cfg.num_hidden_layers = 1, cfg.num_attention_heads = 2, cfg.num_key_value_heads = 1;
        cfg.head_dim = 8, cfg.max_position_embeddings = 16, cfg.rms_norm_eps = 1e-5;
        int32_t ids[8] = {1, 5, 9, 13, 17, 21, 25, 29}, tg[8] = {5, 9, 13, 17, 21, 25, 29, 33};
        pu_tmodel *a = NULL, *f = NULL;
        PT_OK(pu_tmodel_create(&cfg, 1, 8, &a));
        PT_OK(pu_tmodel_create(&cfg, 1, 8, &f));
        if (a && f) {
            pu_tmodel_init_random(a, 2, 0.3f);
            pu_tmodel_init_random(f, 2, 0.3f);
            int keep = pu_tmodel_find(f, "model.layers.0.attention.wqkv.weight");
            for (int i = 0; i < pu_tmodel_n_params(f); i++)
                if (i != keep)
                    pu_tmodel_set_flags(f, i, PU_PARAM_FROZEN);
            pu_tbatch b = {ids, tg, NULL, NULL, 1, 8};
            double l;
            int64_t c;
            PT_OK(pu_tmodel_forward(a, NULL, &b, &l, &c));
            pu_tmodel_backward(a, NULL, 0.125f);
            PT_OK(pu_tmodel_forward(f, NULL, &b, &l, &c));
            pu_tmodel_backward(f, NULL, 0.125f);
            const pu_param *pk = pu_tmodel_param(f, keep);
            PT_CHECK(memcmp(pu_tmodel_grads(a) + pk->offset, pu_tmodel_grads(f) + pk->offset,
                            (size_t)pk->numel * sizeof(float)) == 0);
            double other = 0;
            for (int i = 0; i < pu_tmodel_n_params(f); i++)
                if (i != keep)
                    for (int64_t j = 0; j < pu_tmodel_param(f, i)->numel; j++)
                        other += fabs(pu_tmodel_grads(f)[pu_tmodel_param(f, i)->offset + j]);
            PT_CHECK(other == 0);
            float *before = pu_malloc((size_t)pu_tmodel_numel(f) * sizeof(float));
            memcpy(before, pu_tmodel_params(f), (size_t)pu_tmodel_numel(f) * sizeof(float));
            pu_adamw o;
            pu_adamw_cfg ac = pu_adamw_default();
            pu_adamw_init(&o, &ac, pu_tmodel_numel(f));
            pu_adamw_step(&o, f, NULL, 1e-2);
            for (int i = 0; i < pu_tmodel_n_params(f); i++) {
                const pu_param *p = pu_tmodel_param(f, i);
                bool same = memcmp(before + p->offset, pu_tmodel_params(f) + p->offset,
                                   (size_t)p->numel * sizeof(float)) == 0;
                PT_CHECK_MSG(same == (i != keep), "%s: updated %d", p->name, !same);
            }
            pu_adamw_free(&o);
            pu_free(before);
        }
        pu_tmodel_destroy(a);
        pu_tmodel_destroy(f);
    }
    if (PT_TEST("gradient-ready hook: reverse table order, every entry once, final")) {
        pu_config cfg;
        pu_config_defaults(&cfg);
        cfg.vocab_size = 40, cfg.hidden_size = 16, cfg.intermediate_size = 24;
        cfg.num_hidden_layers = 3, cfg.num_attention_heads = 2, cfg.num_key_value_heads = 1;
        cfg.head_dim = 8, cfg.max_position_embeddings = 16, cfg.rms_norm_eps = 1e-5;
        pu_tmodel *m = NULL;
        PT_OK(pu_tmodel_create(&cfg, 1, 8, &m));
        if (m) {
            pu_tmodel_init_random(m, 2, 0.3f);
            hook_log hl = {.m = m};
            pu_tmodel_set_grad_hook(m, record_hook, &hl);
            int32_t ids[8] = {1, 5, 9, 13, 17, 21, 25, 29}, tg[8] = {5, 9, 13, 17, 21, 25, 29, 3};
            pu_tbatch b = {ids, tg, NULL, NULL, 1, 8};
            double l;
            int64_t c;
            PT_OK(pu_tmodel_forward(m, NULL, &b, &l, &c));
            pu_tmodel_backward(m, NULL, 0.125f);
            PT_EQ_I64(hl.n, 5); /* head, 3 layers, embedding */
            int expect_end = pu_tmodel_n_params(m);
            for (int i = 0; i < hl.n && i < 16; i++) {
                PT_EQ_I64(hl.end[i], expect_end);
                expect_end = hl.first[i];
            }
            PT_EQ_I64(expect_end, 0);
            /* the gradient seen by the hook was final */
            PT_CHECK(hl.snap && memcmp(hl.snap, pu_tmodel_grads(m),
                                       (size_t)pu_tmodel_numel(m) * sizeof(float)) == 0);
            pu_free(hl.snap);
        }
        pu_tmodel_destroy(m);
    }
    if (PT_TEST("lr schedule: warmup then cosine to the floor")) {
        PT_NEAR(pu_lr_at(0, 10, 2, 1.0, 0.1), 0.5, 1e-12, 0);
        PT_NEAR(pu_lr_at(1, 10, 2, 1.0, 0.1), 1.0, 1e-12, 0);
        PT_NEAR(pu_lr_at(2, 10, 2, 1.0, 0.1), 1.0, 1e-12, 0);
        PT_NEAR(pu_lr_at(9, 10, 2, 1.0, 0.1), 0.1, 1e-12, 0);
        PT_NEAR(pu_lr_at(50, 10, 2, 1.0, 0.1), 0.1, 1e-12, 0);
    }
}

PT_SUITE(train_model) {
    test_model();
}
