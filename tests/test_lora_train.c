/*
 * test_lora_train.c — the training model over a frozen, borrowed base: LoRA
 * adapters (gradients, AdamW, dropout, export/import), per-token
 * log-probabilities and hidden states with their backward, two models on one
 * base, activation recomputation, NF4 (QLoRA). Numbers are checked against
 * tests/golden/lora_train/ (tools/gen_lora_ref.py: PyTorch autograd in
 * float64, torch.optim.AdamW) and against finite differences.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_train.h"
#include "train/train_impl.h"

#define B_ 2
#define T_ 16
#define N_ (B_ * T_)

static const char *golden(const char *rel, char *buf, size_t cap) {
    const char *pre[] = {"tests/golden/lora_train/", "../tests/golden/lora_train/"};
    for (int i = 0; i < 2; i++) {
        char probe[300];
        snprintf(probe, sizeof probe, "%s%s/config.json", pre[i], rel); /* a model directory */
        snprintf(buf, cap, "%s%s", pre[i], rel);
        if (pu_file_exists(buf) || pu_file_exists(probe))
            return buf;
    }
    return NULL;
}

typedef struct {
    pu_st_in f;
    pu_model *f32, *bf16;
    int32_t ids[N_], tg[N_], pos[N_], seg[N_];
    float logp[N_];
    bool ok;
} fixture;

static void fx_open(fixture *x) {
    memset(x, 0, sizeof *x);
    char buf[256];
    const char *p = golden("ref.safetensors", buf, sizeof buf);
    if (!p) {
        pt_skip("tests/golden/lora_train/ref.safetensors not found");
        return;
    }
    PT_OK(pu_train_st_open(&x->f, p));
    PT_OK(pu_model_load(golden("base_f32", buf, sizeof buf), &x->f32));
    PT_OK(pu_model_load(golden("base_bf16", buf, sizeof buf), &x->bf16));
    float t[N_];
    const char *nm[4] = {"ids", "targets", "pos", "seg"};
    int32_t *dst[4] = {x->ids, x->tg, x->pos, x->seg};
    for (int k = 0; k < 4; k++) {
        PT_OK(pu_train_st_get(&x->f, nm[k], t, N_));
        for (int i = 0; i < N_; i++)
            dst[k][i] = (int32_t)t[i];
    }
    PT_OK(pu_train_st_get(&x->f, "logp32", x->logp, N_));
    x->ok = x->f32 && x->bf16;
}

static void fx_close(fixture *x) {
    pu_model_destroy(x->f32);
    pu_model_destroy(x->bf16);
    if (x->f.buf)
        pu_train_st_close(&x->f);
}

static double meta(const fixture *x, const char *key) {
    const char *s = pu_train_st_meta(&x->f, key);
    return s ? atof(s) : NAN;
}

static pu_tmodel_opts lora_opts(uint32_t targets) {
    pu_tmodel_opts o;
    pu_tmodel_opts_default(&o);
    o.freeze_base = true;
    o.lora_r = 4;
    o.lora_alpha = 8;
    o.lora_targets = targets;
    o.seed = 5;
    return o;
}

#define ALL_TARGETS ((1u << PU_LORA_N_TARGETS) - 1)

/* copy prefix.<name> of every adapter entry (or every entry) from the fixture */
static pu_status get_entries(const fixture *x, pu_tmodel *m, const char *prefix, float *slab,
                             bool lora_only) {
    char name[160];
    for (int i = 0; i < pu_tmodel_n_params(m); i++) {
        const pu_param *p = pu_tmodel_param(m, i);
        if (p->flags & PU_PARAM_BORROWED)
            continue;
        if (lora_only && !strstr(p->name, ".lora_"))
            continue;
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        PU_TRY(pu_train_st_get(&x->f, name, slab + p->offset, p->numel));
    }
    return PU_OK;
}

/* compare grads of the trainable entries with prefix.<name>; rel to each max */
static double cmp_grads(const fixture *x, pu_tmodel *m, const char *prefix, double tol) {
    float *want = pu_calloc((size_t)pu_tmodel_numel(m) + 1, sizeof(float));
    PT_OK(get_entries(x, m, prefix, want, false));
    double worst = 0;
    for (int i = 0; i < pu_tmodel_n_params(m); i++) {
        const pu_param *p = pu_tmodel_param(m, i);
        if (p->flags & PU_PARAM_FROZEN)
            continue;
        const float *g = pu_tmodel_grads(m) + p->offset, *w = want + p->offset;
        double mx = 0, err = 0;
        for (int64_t j = 0; j < p->numel; j++) {
            mx = fmax(mx, fabs(w[j]));
            err = fmax(err, fabs((double)g[j] - w[j]));
        }
        double rel = err / (mx > 0 ? mx : 1);
        worst = fmax(worst, rel);
        PT_CHECK_MSG(mx > 0, "%s: reference gradient is all zero", p->name);
        PT_CHECK_MSG(rel < tol, "%s: max |grad err| %.3g = %.3g of max |grad| %.3g", p->name, err,
                     rel, mx);
    }
    pu_free(want);
    return worst;
}

static double run_fb(pu_tmodel *m, pu_pool *pool, const fixture *x, bool packed) {
    pu_tbatch b = {x->ids, x->tg, packed ? x->pos : NULL, packed ? x->seg : NULL, B_, T_};
    double ls = 0;
    int64_t cnt = 0;
    PT_OK(pu_tmodel_forward(m, pool, &b, &ls, &cnt));
    pu_tmodel_zero_grad(m);
    pu_tmodel_backward(m, pool, (float)(1.0 / (double)cnt));
    return ls / (double)cnt;
}

static int64_t lora_floats(const pu_tmodel *m) {
    int64_t n = 0;
    for (int i = 0; i < pu_tmodel_n_params(m); i++) {
        const pu_param *p = pu_tmodel_param(m, i);
        if (strstr(p->name, ".lora_"))
            n += (p->numel + 15) / 16 * 16;
    }
    return n;
}

static void test_against_torch(void) {
    if (PT_TEST("LoRA grads on a frozen F32 / BF16 base (packed, masked, all targets) = torch")) {
        fixture x;
        fx_open(&x);
        if (!x.ok) {
            fx_close(&x);
            return;
        }
        pu_pool *pool = pu_pool_create(2);
        pu_model *bases[2] = {x.f32, x.bf16};
        const char *gp[2] = {"g32.", "g16."}, *lk[2] = {"loss32", "loss16"};
        for (int k = 0; k < 2; k++) {
            pu_tmodel_opts o = lora_opts(ALL_TARGETS);
            pu_tmodel *m = NULL;
            PT_OK(pu_tmodel_create_from(bases[k], B_, T_, &o, &m));
            if (!m)
                continue;
            /* memory: the slab holds the adapters only; no fp32 base copy */
            PT_EQ_I64(pu_tmodel_numel(m), lora_floats(m));
            PT_EQ_I64(pu_tmodel_frozen_bytes(m), 0);
            int wo = pu_tmodel_find(m, "model.layers.1.attention.wo.weight");
            PT_CHECK(wo >= 0 && (pu_tmodel_param(m, wo)->flags & PU_PARAM_BORROWED));
            PT_CHECK(pu_tmodel_param(m, wo)->dtype == (k ? PU_DTYPE_BF16 : PU_DTYPE_F32));
            PT_CHECK(pu_tmodel_mat_(m, wo)->data == pu_model_weights(bases[k])->layers[1].wo.data);
            PT_OK(get_entries(&x, m, "lora.", pu_tmodel_params(m), true));
            double loss = run_fb(m, pool, &x, true);
            PT_NEAR(loss, meta(&x, lk[k]), 0, 2e-6);
            double worst = cmp_grads(&x, m, gp[k], 1e-4);
            double lerr = 0;
            for (int i = 0; i < N_; i++)
                lerr = fmax(lerr, fabs((double)pu_tmodel_token_logps(m)[i] -
                                       (k == 0 ? x.logp[i] : pu_tmodel_token_logps(m)[i])));
            if (k == 0) {
                PT_CHECK_MSG(lerr < 2e-5, "per-token logp differs from torch by %.3g", lerr);
                for (int i = 0; i < N_; i++)
                    PT_CHECK(x.tg[i] >= 0 || pu_tmodel_token_logps(m)[i] == 0.0f);
            }
            printf("    %s base: loss %.9f (torch %.9f), worst adapter grad err %.2e%s\n",
                   k ? "BF16" : "F32", loss, meta(&x, lk[k]), worst,
                   k ? "" : ", logp max err below");
            if (k == 0)
                printf("    per-token logp vs torch log_softmax gather: max err %.2e\n", lerr);
            pu_tmodel_destroy(m);
        }
        pu_pool_destroy(pool);
        fx_close(&x);
    }
    if (PT_TEST("full fine-tuning grads (packed, masked) = torch")) {
        fixture x;
        fx_open(&x);
        if (x.ok) {
            pu_tmodel *m = NULL;
            PT_OK(pu_tmodel_create_from(x.f32, B_, T_, NULL, &m));
            if (m) {
                double loss = run_fb(m, NULL, &x, true);
                PT_NEAR(loss, meta(&x, "lossfull"), 0, 2e-6);
                double worst = cmp_grads(&x, m, "gfull.", 5e-5);
                printf("    loss %.9f (torch %.9f), worst grad err %.2e\n", loss,
                       meta(&x, "lossfull"), worst);
            }
            pu_tmodel_destroy(m);
        }
        fx_close(&x);
    }
    if (PT_TEST("5 AdamW steps of LoRA from a given adapter = torch.optim.AdamW")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *m = NULL;
        pu_tmodel_opts o = lora_opts(ALL_TARGETS);
        if (x.ok)
            PT_OK(pu_tmodel_create_from(x.f32, B_, T_, &o, &m));
        if (m) {
            PT_OK(get_entries(&x, m, "lora.", pu_tmodel_params(m), true));
            json_t *jl = NULL;
            const char *lt = pu_train_st_meta(&x.f, "adam_losses");
            PT_OK(pu_json_loadb(lt, strlen(lt), "adam_losses", &jl));
            pu_adamw_cfg ac = {0.9, 0.95, 1e-8, 0.1, 1.0};
            pu_adamw opt;
            pu_adamw_init(&opt, &ac, pu_tmodel_numel(m));
            pu_pool *pool = pu_pool_create(2);
            double worst = 0;
            for (int s = 0; s < 5; s++) {
                double got = run_fb(m, pool, &x, true);
                pu_adamw_step(&opt, m, pool, pu_lr_at(s, 5, 1, 5e-3, 5e-4));
                double want = json_real_value(json_array_get(jl, (size_t)s));
                double rel = fabs(got - want) / fabs(want);
                worst = fmax(worst, rel);
                PT_CHECK_MSG(rel < 1e-4, "step %d: loss %.9f vs torch %.9f", s, got, want);
            }
            float *fin = pu_calloc((size_t)pu_tmodel_numel(m) + 1, sizeof(float));
            PT_OK(get_entries(&x, m, "adam.", fin, true));
            double werr = 0;
            for (int64_t j = 0; j < pu_tmodel_numel(m); j++)
                werr = fmax(werr, fabs((double)pu_tmodel_params(m)[j] - fin[j]));
            PT_CHECK_MSG(werr < 1e-4, "final adapter differs from torch by %.3g", werr);
            printf("    worst loss rel diff %.2e, final adapter max |diff| %.2e\n", worst, werr);
            pu_free(fin);
            pu_json_decref(jl);
            pu_adamw_free(&opt);
            pu_pool_destroy(pool);
        }
        pu_tmodel_destroy(m);
        fx_close(&x);
    }
    if (PT_TEST("packed batch: every document's logps = the document run alone")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *packed = NULL, *alone = NULL;
        pu_tmodel_opts o = lora_opts(ALL_TARGETS);
        if (x.ok) {
            PT_OK(pu_tmodel_create_from(x.f32, B_, T_, &o, &packed));
            PT_OK(pu_tmodel_create_from(x.f32, 1, T_, &o, &alone));
        }
        if (packed && alone) {
            PT_OK(get_entries(&x, packed, "lora.", pu_tmodel_params(packed), true));
            PT_OK(get_entries(&x, alone, "lora.", pu_tmodel_params(alone), true));
            run_fb(packed, NULL, &x, true);
            double err = 0;
            int ndoc = 0;
            for (int i = 0; i < N_;) {
                int j = i;
                while (j < N_ && j / T_ == i / T_ && x.seg[j] == x.seg[i])
                    j++;
                pu_tbatch b = {x.ids + i, x.tg + i, NULL, NULL, 1, j - i};
                double ls;
                int64_t c;
                PT_OK(pu_tmodel_forward(alone, NULL, &b, &ls, &c));
                double sum = 0, sump = 0;
                for (int t = i; t < j; t++) {
                    err = fmax(err, fabs((double)pu_tmodel_token_logps(alone)[t - i] -
                                         pu_tmodel_token_logps(packed)[t]));
                    sum += pu_tmodel_token_logps(alone)[t - i];
                    sump += pu_tmodel_token_logps(packed)[t];
                }
                PT_NEAR(sump, sum, 1e-5, 1e-6);
                ndoc++;
                i = j;
            }
            PT_EQ_I64(ndoc, 3);
            PT_CHECK_MSG(err < 1e-5, "packed vs alone: max logp diff %.3g", err);
        }
        pu_tmodel_destroy(packed);
        pu_tmodel_destroy(alone);
        fx_close(&x);
    }
}

/* ---------------------------------------------------------------- finite differences */

typedef struct {
    pu_tmodel *m;
    const fixture *x;
    const float *c;  /* per-token weights of logp, or NULL */
    const float *rh; /* weights of the hidden states, or NULL */
    uint64_t key;
} fd_ctx;

/* L = sum c_n logp_n + sum rh . hidden (dropout key fixed) */
static double fd_loss(fd_ctx *c) {
    pu_tmodel_set_dropout(c->m, true, c->key);
    pu_tbatch b = {c->x->ids, c->x->tg, c->x->pos, c->x->seg, B_, T_};
    double ls;
    int64_t cnt;
    PT_OK(pu_tmodel_forward(c->m, NULL, &b, &ls, &cnt));
    double L = 0;
    const float *lp = pu_tmodel_token_logps(c->m), *h = pu_tmodel_hidden(c->m);
    for (int n = 0; n < N_; n++)
        L += c->c ? (double)c->c[n] * lp[n] : 0;
    if (c->rh)
        for (int64_t i = 0; i < N_ * pu_tmodel_config(c->m)->hidden_size; i++)
            L += (double)c->rh[i] * h[i];
    return L;
}

/* analytic grads of fd_loss into the grad slab */
static void fd_grad(fd_ctx *c) {
    fd_loss(c);
    pu_tmodel_zero_grad(c->m);
    pu_tmodel_backward_logp(c->m, NULL, c->c, c->rh);
}

/* central differences on a few entries of each adapter tensor; returns worst rel err */
static double fd_check(fd_ctx *c, const char *label) {
    fd_grad(c);
    int64_t n = pu_tmodel_numel(c->m);
    float *g = pu_malloc((size_t)n * sizeof(float));
    memcpy(g, pu_tmodel_grads(c->m), (size_t)n * sizeof(float));
    float *w = pu_tmodel_params(c->m);
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < pu_tmodel_n_params(c->m); i++) {
        const pu_param *p = pu_tmodel_param(c->m, i);
        if (p->flags & PU_PARAM_FROZEN)
            continue;
        for (int64_t j = 0; j < p->numel; j += p->numel / 3 + 1) {
            float *e = w + p->offset + j, old = *e, h = 1e-2f;
            *e = old + h;
            double lp = fd_loss(c);
            *e = old - h;
            double lm = fd_loss(c);
            *e = old;
            double num = (lp - lm) / (2.0 * h), an = g[p->offset + j];
            double err = fabs(num - an) / fmax(1e-2, fabs(num));
            worst = fmax(worst, err);
            checked++;
            PT_CHECK_MSG(err < 2e-2, "%s: %s[%lld]: analytic %.6g numeric %.6g", label, p->name,
                         (long long)j, an, num);
        }
    }
    PT_CHECK(checked > 10);
    pu_free(g);
    return worst;
}

static void test_fd(void) {
    if (PT_TEST("backward from d(logp) and d(hidden), with adapter dropout: finite differences")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *m = NULL;
        pu_tmodel_opts o = lora_opts(ALL_TARGETS);
        o.lora_dropout = 0.3;
        if (x.ok)
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &o, &m));
        if (m) {
            PT_OK(get_entries(&x, m, "lora.", pu_tmodel_params(m), true));
            pu_rng r;
            pu_rng_seed(&r, 3);
            float cw[N_];
            int64_t C = pu_tmodel_config(m)->hidden_size;
            float *rh = pu_malloc((size_t)(N_ * C) * sizeof(float));
            for (int n = 0; n < N_; n++)
                cw[n] = (float)(pu_rng_double(&r) * 2 - 1);
            for (int64_t i = 0; i < N_ * C; i++)
                rh[i] = (float)(pu_rng_double(&r) * 2 - 1) * 0.1f;
            fd_ctx c = {m, &x, cw, NULL, 99};
            double e1 = fd_check(&c, "dlogp, dropout 0.3");
            c.c = NULL, c.rh = rh;
            double e2 = fd_check(&c, "dhidden, dropout 0.3");
            printf("    worst rel err: dlogp %.2e, dhidden %.2e\n", e1, e2);
            /* dropout really drops: a different key changes the loss; off = p 0 */
            c.c = cw, c.rh = NULL;
            double a = fd_loss(&c);
            c.key = 100;
            double b = fd_loss(&c);
            PT_CHECK(a != b);
            pu_tmodel *m0 = NULL;
            pu_tmodel_opts o0 = lora_opts(ALL_TARGETS);
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &o0, &m0));
            PT_OK(get_entries(&x, m0, "lora.", pu_tmodel_params(m0), true));
            pu_tmodel_set_dropout(m, false, 0);
            pu_tbatch bt = {x.ids, x.tg, x.pos, x.seg, B_, T_};
            double l1, l0;
            int64_t n1, n0;
            PT_OK(pu_tmodel_forward(m, NULL, &bt, &l1, &n1));
            PT_OK(pu_tmodel_forward(m0, NULL, &bt, &l0, &n0));
            PT_CHECK(l1 == l0);
            pu_tmodel_destroy(m0);
            pu_free(rh);
        }
        pu_tmodel_destroy(m);
        fx_close(&x);
    }
    if (PT_TEST("backward_logp(-1/n at every target) == backward(1/n), bitwise")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *a = NULL, *b = NULL;
        pu_tmodel_opts o = lora_opts(ALL_TARGETS);
        if (x.ok) {
            PT_OK(pu_tmodel_create_from(x.f32, B_, T_, &o, &a));
            PT_OK(pu_tmodel_create_from(x.f32, B_, T_, &o, &b));
        }
        if (a && b) {
            PT_OK(get_entries(&x, a, "lora.", pu_tmodel_params(a), true));
            PT_OK(get_entries(&x, b, "lora.", pu_tmodel_params(b), true));
            run_fb(a, NULL, &x, true);
            pu_tbatch bt = {x.ids, x.tg, x.pos, x.seg, B_, T_};
            double ls;
            int64_t cnt;
            PT_OK(pu_tmodel_forward(b, NULL, &bt, &ls, &cnt));
            float d[N_];
            for (int n = 0; n < N_; n++)
                d[n] = -(float)(1.0 / (double)cnt);
            pu_tmodel_zero_grad(b);
            pu_tmodel_backward_logp(b, NULL, d, NULL);
            PT_CHECK(memcmp(pu_tmodel_grads(a), pu_tmodel_grads(b),
                            (size_t)pu_tmodel_numel(a) * sizeof(float)) == 0);
        }
        pu_tmodel_destroy(a);
        pu_tmodel_destroy(b);
        fx_close(&x);
    }
}

/* ---------------------------------------------------------------- structure */

static void test_structure(void) {
    if (PT_TEST("policy + frozen reference on one base: no second copy, same logps at B = 0")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *pol = NULL, *ref = NULL;
        pu_tmodel_opts o = lora_opts(PU_LORA_DEFAULT_TARGETS), r;
        pu_tmodel_opts_default(&r);
        r.freeze_base = true;
        r.forward_only = true;
        if (x.ok) {
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &o, &pol));
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &r, &ref));
        }
        if (pol && ref) {
            PT_EQ_I64(pu_tmodel_numel(ref), 0);
            PT_EQ_I64(pu_tmodel_frozen_bytes(ref) + pu_tmodel_frozen_bytes(pol), 0);
            for (int i = 0; i < pu_tmodel_n_params(ref); i++) {
                const pu_param *p = pu_tmodel_param(ref, i);
                int j = pu_tmodel_find(pol, p->name);
                PT_CHECK(j >= 0 && (p->flags & PU_PARAM_BORROWED));
                const pu_tmat *a = pu_tmodel_mat_(ref, i), *b = pu_tmodel_mat_(pol, j);
                PT_CHECK(a->data == b->data && a->f32 == b->f32);
            }
            PT_CHECK(pu_tmodel_mat_(ref, pu_tmodel_find(ref, "output.weight"))->data ==
                     pu_model_weights(x.bf16)->output.data);
            pu_tbatch bt = {x.ids, x.tg, x.pos, x.seg, B_, T_};
            double l1, l2;
            int64_t n1, n2;
            PT_OK(pu_tmodel_forward(pol, NULL, &bt, &l1, &n1));
            PT_OK(pu_tmodel_forward(ref, NULL, &bt, &l2, &n2));
            PT_CHECK(memcmp(pu_tmodel_token_logps(pol), pu_tmodel_token_logps(ref),
                            N_ * sizeof(float)) == 0);
            PT_CHECK(memcmp(pu_tmodel_hidden(pol), pu_tmodel_hidden(ref),
                            (size_t)(N_ * pu_tmodel_config(pol)->hidden_size) * sizeof(float)) ==
                     0);
            PT_CHECK(pu_tmodel_act_bytes(ref) < pu_tmodel_act_bytes(pol));
            /* the policy trains; the reference is untouched */
            pu_tmodel_zero_grad(pol);
            pu_tmodel_backward(pol, NULL, 1.0f / (float)n1);
            pu_adamw_cfg ac = pu_adamw_default();
            pu_adamw opt;
            pu_adamw_init(&opt, &ac, pu_tmodel_numel(pol));
            pu_adamw_step(&opt, pol, NULL, 1e-2);
            PT_OK(pu_tmodel_forward(pol, NULL, &bt, &l1, &n1));
            PT_OK(pu_tmodel_forward(ref, NULL, &bt, &l2, &n2));
            PT_CHECK(l1 < l2);
            pu_adamw_free(&opt);
        }
        pu_tmodel_destroy(pol);
        pu_tmodel_destroy(ref);
        fx_close(&x);
    }
    if (PT_TEST(
            "recompute (activation checkpointing) gives bitwise the same grads, 1 vs 2 threads")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *a = NULL, *b = NULL;
        pu_tmodel_opts o = lora_opts(ALL_TARGETS);
        o.lora_dropout = 0.2;
        pu_tmodel_opts orc = o;
        orc.recompute = true;
        if (x.ok) {
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &o, &a));
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &orc, &b));
        }
        if (a && b) {
            PT_CHECK(pu_tmodel_act_bytes(b) < pu_tmodel_act_bytes(a));
            PT_OK(get_entries(&x, a, "lora.", pu_tmodel_params(a), true));
            PT_OK(get_entries(&x, b, "lora.", pu_tmodel_params(b), true));
            pu_tmodel_set_dropout(a, true, 42);
            pu_tmodel_set_dropout(b, true, 42);
            pu_pool *p2 = pu_pool_create(2);
            double la = run_fb(a, NULL, &x, true), lb = run_fb(b, p2, &x, true);
            PT_CHECK(la == lb);
            PT_CHECK(memcmp(pu_tmodel_grads(a), pu_tmodel_grads(b),
                            (size_t)pu_tmodel_numel(a) * sizeof(float)) == 0);
            pu_pool_destroy(p2);
        }
        pu_tmodel_destroy(a);
        pu_tmodel_destroy(b);
        fx_close(&x);
    }
    if (PT_TEST("adapter export -> PEFT dir -> import: the same weights; mismatches named")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *a = NULL, *b = NULL;
        pu_tmodel_opts o = lora_opts(ALL_TARGETS);
        if (x.ok) {
            PT_OK(pu_tmodel_create_from(x.f32, B_, T_, &o, &a));
            o.seed = 77; /* a different init, overwritten by the import */
            PT_OK(pu_tmodel_create_from(x.f32, B_, T_, &o, &b));
        }
        if (a && b) {
            PT_OK(get_entries(&x, a, "lora.", pu_tmodel_params(a), true));
            pu_lora *l = NULL, *l2 = NULL;
            PT_OK(pu_tmodel_lora_export(a, &l));
            char dir[256];
            pt_tmp_path("adapter", dir, sizeof dir);
            if (l)
                PT_OK(pu_lora_save(l, dir));
            PT_OK(pu_lora_load(dir, pu_model_config(x.f32), &l2));
            if (l2) {
                PT_NEAR(l2->scale, 2.0, 0, 1e-7);
                PT_OK(pu_tmodel_lora_import(b, l2));
            }
            PT_CHECK(memcmp(pu_tmodel_params(a), pu_tmodel_params(b),
                            (size_t)pu_tmodel_numel(a) * sizeof(float)) == 0);
            /* a wrong rank or target set is an error naming the field */
            pu_tmodel *c = NULL;
            pu_tmodel_opts oc = lora_opts(PU_LORA_DEFAULT_TARGETS);
            PT_OK(pu_tmodel_create_from(x.f32, 1, 4, &oc, &c));
            if (c && l2) {
                PT_CHECK(pu_tmodel_lora_import(c, l2) == PU_ERR_FORMAT);
                PT_CHECK(strstr(pu_err_msg(), "target_modules") != NULL);
            }
            pu_tmodel_destroy(c);
            pu_lora_destroy(l);
            pu_lora_destroy(l2);
        }
        pu_tmodel_destroy(a);
        pu_tmodel_destroy(b);
        fx_close(&x);
    }
    if (PT_TEST("borrowed GGUF F16 base (separate, interleaved q/k/v) == its fp32 copy")) {
        const char *paths[2] = {"tests/golden/gguf/gqa2-llama-f16.gguf",
                                "../tests/golden/gguf/gqa2-llama-f16.gguf"};
        const char *gp = pu_file_exists(paths[0]) ? paths[0] : paths[1];
        pu_model *g = NULL;
        if (!pu_file_exists(gp)) {
            pt_skip("tests/golden/gguf/gqa2-llama-f16.gguf not found");
        } else {
            PT_OK(pu_model_load(gp, &g));
        }
        if (g) {
            pu_tmodel_opts o;
            pu_tmodel_opts_default(&o);
            o.freeze_base = true;
            pu_tmodel *a = NULL, *b = NULL;
            PT_OK(pu_tmodel_create_from(g, 1, 12, &o, &a));
            PT_OK(pu_tmodel_create_from(g, 1, 12, NULL, &b));
            if (a && b) {
                const pu_config *c = pu_tmodel_config(a);
                int64_t qkv = (c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim;
                PT_EQ_I64(pu_tmodel_frozen_bytes(a),
                          c->num_hidden_layers * qkv * c->hidden_size * 2); /* F16 repack only */
                PT_EQ_I64(pu_tmodel_numel(a), 0);
                int32_t ids[12], tg[12];
                for (int i = 0; i < 12; i++)
                    ids[i] = (i * 7 + 3) % (int32_t)c->vocab_size, tg[i] = (i * 5 + 1) % 50;
                pu_tbatch bt = {ids, tg, NULL, NULL, 1, 12};
                double la, lb;
                int64_t na, nb;
                PT_OK(pu_tmodel_forward(a, NULL, &bt, &la, &na));
                PT_OK(pu_tmodel_forward(b, NULL, &bt, &lb, &nb));
                PT_CHECK(memcmp(pu_tmodel_logits(a), pu_tmodel_logits(b),
                                (size_t)(12 * c->vocab_size) * sizeof(float)) == 0);
            }
            pu_tmodel_destroy(a);
            pu_tmodel_destroy(b);
        }
        pu_model_destroy(g);
    }
    if (PT_TEST("PEFT init: A in +-1/sqrt(in), B zero; rslora scale; bad options")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *m = NULL;
        pu_tmodel_opts o = lora_opts(ALL_TARGETS);
        o.lora_rslora = true;
        if (x.ok)
            PT_OK(pu_tmodel_create_from(x.f32, 1, 8, &o, &m));
        if (m) {
            PT_NEAR(pu_tmodel_lora_scale(m), 8.0 / 2.0, 0, 1e-7);
            for (int i = 0; i < pu_tmodel_n_params(m); i++) {
                const pu_param *p = pu_tmodel_param(m, i);
                if (!strstr(p->name, ".lora_"))
                    continue;
                const float *w = pu_tmodel_params(m) + p->offset;
                double mx = 0;
                for (int64_t j = 0; j < p->numel; j++)
                    mx = fmax(mx, fabs(w[j]));
                if (strstr(p->name, "lora_B"))
                    PT_CHECK(mx == 0);
                else
                    PT_CHECK(mx > 0.5 / sqrt((double)p->shape[1]) &&
                             mx <= 1.0 / sqrt((double)p->shape[1]));
            }
            PT_CHECK(pu_tmodel_find(m, "base_model.model.output.lora_A.weight") >
                     pu_tmodel_find(m, "output.weight"));
            PT_CHECK(pu_tmodel_find(m, "base_model.model.model.layers.0.feed_forward.w3.lora_B."
                                       "weight") < pu_tmodel_find(m, "model.layers.1.attention_"
                                                                     "norm.weight"));
        }
        pu_tmodel_destroy(m);
        pu_tmodel *bad = NULL;
        o.lora_dropout = 1.0;
        if (x.ok)
            PT_CHECK(pu_tmodel_create_from(x.f32, 1, 8, &o, &bad) == PU_ERR_INVALID);
        o.lora_dropout = 0, o.qlora = true, o.freeze_base = false;
        if (x.ok)
            PT_CHECK(pu_tmodel_create_from(x.f32, 1, 8, &o, &bad) == PU_ERR_INVALID);
        fx_close(&x);
    }
}

/* ---------------------------------------------------------------- NF4 / QLoRA */

static void test_nf4(void) {
    if (PT_TEST("NF4 double quantization = torch reference of bitsandbytes' scheme")) {
        char buf[256];
        const char *p = golden("nf4.safetensors", buf, sizeof buf);
        if (!p) {
            pt_skip("tests/golden/lora_train/nf4.safetensors not found");
        } else {
            pu_st_in f;
            PT_OK(pu_train_st_open(&f, p));
            int64_t n = atoll(pu_train_st_meta(&f, "n"));
            float *x = pu_malloc((size_t)n * sizeof(float)), *deq = pu_malloc((size_t)n * 4);
            float *got = pu_malloc((size_t)n * sizeof(float));
            int64_t nb = (n + 63) / 64, nb2 = (nb + 255) / 256;
            float *qa = pu_malloc((size_t)nb * 4), *a2 = pu_malloc((size_t)nb2 * 4);
            float *codes = pu_malloc((size_t)(n + 1) / 2 * 4);
            PT_OK(pu_train_st_get(&f, "x", x, n));
            PT_OK(pu_train_st_get(&f, "deq", deq, n));
            PT_OK(pu_train_st_get(&f, "qabsmax", qa, nb));
            PT_OK(pu_train_st_get(&f, "absmax2", a2, nb2));
            PT_OK(pu_train_st_get(&f, "codes", codes, (n + 1) / 2));
            pu_nf4 q;
            pu_nf4_quantize(&q, x, PU_DTYPE_F32, n);
            PT_NEAR(q.offset, atof(pu_train_st_meta(&f, "offset")), 0, 1e-6);
            int64_t bad = 0;
            for (int64_t i = 0; i < (n + 1) / 2; i++)
                bad += q.codes[i] != (uint8_t)codes[i];
            for (int64_t i = 0; i < nb; i++)
                bad += q.qabsmax[i] != (uint8_t)qa[i];
            for (int64_t i = 0; i < nb2; i++)
                bad += q.absmax2[i] != a2[i];
            PT_EQ_I64(bad, 0);
            pu_nf4_dequant(&q, 0, n, got);
            double err = 0;
            for (int64_t i = 0; i < n; i++)
                err = fmax(err, fabs((double)got[i] - deq[i]));
            PT_CHECK_MSG(err < 1e-6, "dequantized differ by %.3g", err);
            /* a range starting mid-block = the same elements of the whole */
            float part[300];
            pu_nf4_dequant(&q, 101, 300, part);
            PT_CHECK(memcmp(part, got + 101, sizeof part) == 0);
            printf("    %lld elements, %lld bytes (%.3f bits/weight), dequant max err %.2e\n",
                   (long long)n, (long long)pu_nf4_bytes(&q), 8.0 * pu_nf4_bytes(&q) / n, err);
            pu_nf4_free(&q);
            pu_free(x), pu_free(deq), pu_free(got), pu_free(qa), pu_free(a2), pu_free(codes);
            pu_train_st_close(&f);
        }
    }
    if (PT_TEST("QLoRA loss trajectory = LoRA on the dequantized base")) {
        fixture x;
        fx_open(&x);
        pu_tmodel *q = NULL, *d = NULL;
        pu_tmodel_opts o = lora_opts(PU_LORA_DEFAULT_TARGETS);
        o.qlora = true;
        pu_tmodel_opts od = lora_opts(PU_LORA_DEFAULT_TARGETS);
        od.freeze_base = false; /* an fp32 copy, overwritten with the NF4 values, then frozen */
        if (x.ok) {
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &o, &q));
            PT_OK(pu_tmodel_create_from(x.bf16, B_, T_, &od, &d));
        }
        if (q && d) {
            PT_CHECK(pu_tmodel_frozen_bytes(q) > 0);
            int nq = 0;
            for (int i = 0; i < pu_tmodel_n_params(d); i++) {
                const pu_param *p = pu_tmodel_param(d, i);
                int j = pu_tmodel_find(q, p->name);
                const pu_tmat *t = pu_tmodel_mat_(q, j);
                if (t->nf4) {
                    pu_nf4_dequant(t->nf4, 0, p->numel, pu_tmodel_params(d) + p->offset);
                    nq++;
                    PT_CHECK(pu_tmodel_param(q, j)->flags & PU_PARAM_NF4);
                }
                if (!strstr(p->name, ".lora_"))
                    pu_tmodel_set_flags(d, i, p->flags | PU_PARAM_FROZEN);
            }
            PT_EQ_I64(nq, 10);
            PT_OK(get_entries(&x, q, "lora.", pu_tmodel_params(q), true));
            PT_OK(get_entries(&x, d, "lora.", pu_tmodel_params(d), true));
            pu_adamw_cfg ac = pu_adamw_default();
            pu_adamw oq, odd;
            pu_adamw_init(&oq, &ac, pu_tmodel_numel(q));
            pu_adamw_init(&odd, &ac, pu_tmodel_numel(d));
            double worst = 0, l0 = 0, l4 = 0;
            for (int s = 0; s < 4; s++) {
                double a = run_fb(q, NULL, &x, true), b = run_fb(d, NULL, &x, true);
                worst = fmax(worst, fabs(a - b) / fabs(b));
                pu_adamw_step(&oq, q, NULL, 1e-2);
                pu_adamw_step(&odd, d, NULL, 1e-2);
                if (s == 0)
                    l0 = a;
                l4 = a;
            }
            PT_CHECK_MSG(worst < 1e-6, "QLoRA vs LoRA on dequantized: rel %.3g", worst);
            PT_CHECK(l4 < l0);
            printf("    4 steps: loss %.6f -> %.6f, worst rel diff %.2e; NF4 base %lld bytes\n", l0,
                   l4, worst, (long long)pu_tmodel_frozen_bytes(q));
            pu_adamw_free(&oq);
            pu_adamw_free(&odd);
        }
        pu_tmodel_destroy(q);
        pu_tmodel_destroy(d);
        fx_close(&x);
    }
}

/* --precision bf16 over a borrowed base: BF16-stored weights are the bf16
 * operands as stored (no copy), F32 ones are rounded once into an owned copy
 * (the embedding and norms stay as stored, so the two bases differ there);
 * adapter grads vs torch's fp32 grads over the same base */
static void test_bf16(void) {
    if (PT_TEST("bf16 LoRA: BF16 base used as stored, F32 base rounded once; near torch fp32")) {
        fixture x;
        fx_open(&x);
        if (!x.ok) {
            fx_close(&x);
            return;
        }
        pu_pool *pool = pu_pool_create(2);
        pu_tmodel *m[2] = {NULL, NULL};
        pu_model *bases[2] = {x.f32, x.bf16};
        for (int k = 0; k < 2; k++) {
            pu_tmodel_opts o = lora_opts(ALL_TARGETS);
            o.precision = "bf16";
            PT_OK(pu_tmodel_create_from(bases[k], B_, T_, &o, &m[k]));
            if (!m[k])
                continue;
            PT_OK(get_entries(&x, m[k], "lora.", pu_tmodel_params(m[k]), true));
            double loss = run_fb(m[k], pool, &x, true);
            const char *lk = k ? "loss16" : "loss32";
            PT_NEAR(loss, meta(&x, lk), 0, 2e-3);
            double worst = cmp_grads(&x, m[k], k ? "g16." : "g32.", 6e-2);
            printf("    bf16 over %s base: loss %.6f (torch fp32 %.6f), worst adapter grad err "
                   "%.2e of max\n",
                   k ? "BF16" : "F32", loss, meta(&x, lk), worst);
        }
        if (m[0] && m[1]) {
            PT_CHECK(pu_tmodel_frozen_bytes(m[0]) > 0); /* the rounded copy */
            PT_EQ_I64(pu_tmodel_frozen_bytes(m[1]), 0); /* stored bf16, no copy */
        }
        pu_tmodel_destroy(m[0]);
        pu_tmodel_destroy(m[1]);
        pu_pool_destroy(pool);
        fx_close(&x);
    }
}

PT_SUITE(lora_train) {
    test_against_torch();
    test_fd();
    test_structure();
    test_nf4();
    test_bf16();
}
