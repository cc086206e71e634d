/*
 * test_align_grads.c — the full per-parameter gradients of the DPO loss and
 * of the reward-model loss (focal + 0.01 log barrier), full fine-tuning and
 * LoRA, against PyTorch autograd in float64 (tests/golden/align_grads from
 * tools/gen_align_grads_ref.py): every tensor of the policy / body / adapter
 * and the value head, through the same step functions `puyu dpo` and `puyu
 * rm train` run per micro-batch (pu_dpo_pairs_step, pu_rm_pairs_step).
 *
 * Tolerance (fp32 forward/backward vs float64): per tensor, max |g - ref| <=
 * 1e-4 * max |ref| (and the reference is not all zero); the loss within 1e-5
 * relative; 3 AdamW steps with LoRA (adapter, and v_head for the RM): each
 * step's loss within 1e-4 relative. Rows are right-padded (lengths 11, 8, 13, 6 in one batch of T
 * 13): padding must not leak into the sums.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_align.h"
#include "train/train_impl.h"

#define AG_DIR   "tests/golden/align_grads"
#define ROWS     4
#define TMAX     13
#define GRAD_TOL 1e-4

typedef struct {
    pu_st_in f;
    pu_model *base, *policy;
    int32_t ids[ROWS * TMAX], tg[ROWS * TMAX], rm_ids[ROWS * TMAX];
    int64_t lens[ROWS];
    float v0[64];
    int64_t C;
    bool ok;
} fixture;

static void fx_open(fixture *x) {
    memset(x, 0, sizeof *x);
    if (!pu_file_exists(AG_DIR "/ref.safetensors")) {
        pt_skip(AG_DIR "/ref.safetensors not found");
        return;
    }
    PT_OK(pu_train_st_open(&x->f, AG_DIR "/ref.safetensors"));
    PT_OK(pu_model_load(AG_DIR "/base", &x->base));
    PT_OK(pu_model_load(AG_DIR "/policy", &x->policy));
    if (!x->base || !x->policy)
        return;
    x->C = pu_model_config(x->base)->hidden_size;
    float t[ROWS * TMAX];
    const char *nm[3] = {"dpo_ids", "dpo_tg", "rm_ids"};
    int32_t *dst[3] = {x->ids, x->tg, x->rm_ids};
    for (int k = 0; k < 3; k++) {
        PT_OK(pu_train_st_get(&x->f, nm[k], t, ROWS * TMAX));
        for (int i = 0; i < ROWS * TMAX; i++)
            dst[k][i] = (int32_t)t[i];
    }
    PT_OK(pu_train_st_get(&x->f, "rm_lens", t, ROWS));
    for (int i = 0; i < ROWS; i++)
        x->lens[i] = (int64_t)t[i];
    PT_OK(pu_train_st_get(&x->f, "v0", x->v0, x->C));
    x->ok = x->C <= 64;
}

static void fx_close(fixture *x) {
    pu_model_destroy(x->base);
    pu_model_destroy(x->policy);
    if (x->f.buf)
        pu_train_st_close(&x->f);
}

static double meta(const fixture *x, const char *key) {
    const char *s = pu_train_st_meta(&x->f, key);
    return s ? atof(s) : NAN;
}

/* grad of `name` vs the reference: max |err| / max |ref| */
static double cmp_one(const char *name, const float *g, const float *w, int64_t n) {
    double mx = 0, err = 0;
    for (int64_t j = 0; j < n; j++) {
        mx = fmax(mx, fabs(w[j]));
        err = fmax(err, fabs((double)g[j] - w[j]));
    }
    double rel = err / (mx > 0 ? mx : 1);
    PT_CHECK_MSG(mx > 0, "%s: reference gradient is all zero", name);
    PT_CHECK_MSG(rel <= GRAD_TOL, "%s: max |grad err| %.3g = %.3g of max |grad| %.3g", name, err,
                 rel, mx);
    return rel;
}

/* every trainable tensor of m (prefix.<name> in the fixture; skip: a name
 * absent from the reference, e.g. the unused LM head of a reward model) */
static double cmp_model(const fixture *x, pu_tmodel *m, const char *prefix, const char *skip,
                        int *n_cmp) {
    double worst = 0;
    char name[200];
    for (int i = 0; i < pu_tmodel_n_params(m); i++) {
        const pu_param *p = pu_tmodel_param(m, i);
        if (p->flags & PU_PARAM_FROZEN)
            continue;
        if (skip && !strcmp(p->name, skip))
            continue;
        snprintf(name, sizeof name, "%s.%s", prefix, p->name);
        float *want = pu_malloc((size_t)p->numel * sizeof(float));
        pu_status s = pu_train_st_get(&x->f, name, want, p->numel);
        PT_CHECK_MSG(s == PU_OK, "%s: %s", name, pu_err_msg());
        if (s == PU_OK) {
            worst = fmax(worst, cmp_one(name, pu_tmodel_grads(m) + p->offset, want, p->numel));
            (*n_cmp)++;
        }
        pu_free(want);
    }
    return worst;
}

/* a LoRA tmodel over base with the fixture's adapter (r 2, alpha 4, dropout 0) */
static pu_tmodel *lora_model(const fixture *x) {
    pu_tmodel_opts o;
    pu_tmodel_opts_default(&o);
    pu_tmodel_opts_lora(&o, 2, 4.0, 0.0, false, PU_LORA_DEFAULT_TARGETS, 1, "base");
    pu_tmodel *m = NULL;
    PT_OK(pu_tmodel_create_from(x->base, ROWS, TMAX, &o, &m));
    if (!m)
        return NULL;
    char name[200];
    int n = 0;
    for (int i = 0; i < pu_tmodel_n_params(m); i++) {
        const pu_param *p = pu_tmodel_param(m, i);
        if (!strstr(p->name, ".lora_"))
            continue;
        snprintf(name, sizeof name, "lora.%s", p->name);
        PT_OK(pu_train_st_get(&x->f, name, pu_tmodel_params(m) + p->offset, p->numel));
        n++;
    }
    PT_EQ_I64(n, 2 * 5 * 2); /* A and B of 5 linears in 2 layers */
    pu_tmodel_set_dropout(m, false, 0);
    return m;
}

static pu_tmodel *ref_model(const fixture *x) {
    pu_tmodel_opts o;
    pu_tmodel_opts_default(&o);
    o.freeze_base = true;
    o.forward_only = true;
    pu_tmodel *r = NULL;
    PT_OK(pu_tmodel_create_from(x->base, ROWS, TMAX, &o, &r));
    return r;
}

static void dpo_case(const fixture *x, bool lora, pu_pool *pool) {
    pu_tmodel *m = NULL, *ref = ref_model(x);
    if (lora) {
        m = lora_model(x);
    } else {
        PT_OK(pu_tmodel_create_from(x->policy, ROWS, TMAX, NULL, &m));
    }
    if (!m || !ref) {
        pu_tmodel_destroy(m);
        pu_tmodel_destroy(ref);
        return;
    }
    pu_dpo_train_opts o;
    pu_dpo_train_opts_default(&o);
    o.beta = meta(x, "beta");
    pu_tbatch bt = {x->ids, x->tg, NULL, NULL, ROWS, TMAX};
    pu_pref_metrics met;
    double loss = NAN;
    float *dl = NULL;
    size_t cap = 0;
    pu_tmodel_zero_grad(m);
    /* grad_scale 1 / (pairs of the step) as pu_train_loop passes it */
    PT_OK(pu_dpo_pairs_step(m, ref, pool, &bt, &o, 0.5f, true, &met, &loss, &dl, &cap));
    double want = meta(x, lora ? "dpo_lora_loss" : "dpo_full_loss");
    PT_NEAR(loss, want, 0, 1e-5);
    int n = 0;
    double worst = cmp_model(x, m, lora ? "dpo_lora" : "dpo_full", NULL, &n);
    PT_EQ_I64(n, lora ? 20 : 1 + 7 * 2 + 2); /* embedding, 2 layers, norm, LM head */
    printf("    dpo %s: loss %.9g (torch %.9g), %d tensors, worst max|err|/max|g| %.2e\n",
           lora ? "lora" : "full", loss, want, n, worst);
    pu_free(dl);
    pu_tmodel_destroy(m);
    pu_tmodel_destroy(ref);
}

static void rm_case(const fixture *x, bool lora, pu_pool *pool) {
    pu_tmodel *m = NULL;
    if (lora) {
        m = lora_model(x);
    } else {
        PT_OK(pu_tmodel_create_from(x->base, ROWS, TMAX, NULL, &m));
    }
    if (!m)
        return;
    int32_t tg[ROWS * TMAX];
    for (int i = 0; i < ROWS * TMAX; i++)
        tg[i] = PU_IGNORE_INDEX;
    pu_tbatch bt = {x->rm_ids, tg, NULL, NULL, ROWS, TMAX};
    pu_rm_loss_opts lo = pu_rm_loss_default_opts();
    pu_rm_metrics met;
    float dv[64] = {0}, *dh = NULL;
    size_t cap = 0;
    pu_tmodel_zero_grad(m);
    PT_OK(
        pu_rm_pairs_step(m, pool, &bt, x->lens, x->v0, dv, &lo, 0.5f, true, &met, NULL, &dh, &cap));
    double want = meta(x, lora ? "rm_lora_loss" : "rm_full_loss");
    PT_NEAR(met.loss, want, 0, 1e-5);
    const char *pre = lora ? "rm_lora" : "rm_full";
    int n = 0;
    double worst = cmp_model(x, m, pre, "output.weight", &n);
    PT_EQ_I64(n, lora ? 20 : 1 + 7 * 2 + 1); /* no LM head */
    char name[64];
    snprintf(name, sizeof name, "%s.v_head.weight", pre);
    float wv[64];
    PT_OK(pu_train_st_get(&x->f, name, wv, x->C));
    worst = fmax(worst, cmp_one(name, dv, wv, x->C));
    printf("    rm %s: loss %.9g (torch %.9g), %d tensors + v_head, worst max|err|/max|g| %.2e\n",
           lora ? "lora" : "full", met.loss, want, n, worst);
    pu_free(dh);
    pu_tmodel_destroy(m);
}

/* 3 AdamW steps with LoRA on the fixture's batch (the loop's pieces: pairs
 * step, pu_adamw_step_x with v_head as the extra parameters, pu_lr_at) */
static void adam_case(const fixture *x, bool rm, pu_pool *pool) {
    pu_tmodel *m = lora_model(x), *ref = rm ? NULL : ref_model(x);
    json_t *want = json_loads(pu_train_st_meta(&x->f, rm ? "rm_lora_adam" : "dpo_lora_adam")
                                  ? pu_train_st_meta(&x->f, rm ? "rm_lora_adam" : "dpo_lora_adam")
                                  : "[]",
                              0, NULL);
    PT_CHECK(json_array_size(want) == 3);
    pu_adamw_cfg cfg = pu_adamw_default(); /* 0.9, 0.95, 1e-8, wd 0.1, clip 1 */
    pu_adamw opt;
    pu_adamw_init(&opt, &cfg, m ? pu_tmodel_numel(m) : 1);
    float v[64], dv[64], xm[64] = {0}, xv[64] = {0}, *dbuf = NULL;
    memcpy(v, x->v0, sizeof v);
    size_t cap = 0;
    int32_t tg[ROWS * TMAX];
    for (int i = 0; i < ROWS * TMAX; i++)
        tg[i] = PU_IGNORE_INDEX;
    pu_dpo_train_opts o;
    pu_dpo_train_opts_default(&o);
    o.beta = meta(x, "beta");
    pu_rm_loss_opts lo = pu_rm_loss_default_opts();
    double worst = 0;
    for (int st = 0; m && (rm || ref) && st < 3 && json_array_size(want) == 3; st++) {
        double lr = pu_lr_at(st, 3, 1, 3e-3, 3e-4), loss = NAN;
        pu_tmodel_zero_grad(m);
        memset(dv, 0, sizeof dv);
        if (rm) {
            pu_tbatch bt = {x->rm_ids, tg, NULL, NULL, ROWS, TMAX};
            pu_rm_metrics met;
            PT_OK(pu_rm_pairs_step(m, pool, &bt, x->lens, v, dv, &lo, 0.5f, true, &met, NULL, &dbuf,
                                   &cap));
            loss = met.loss;
        } else {
            pu_tbatch bt = {x->ids, x->tg, NULL, NULL, ROWS, TMAX};
            pu_pref_metrics met;
            PT_OK(pu_dpo_pairs_step(m, ref, pool, &bt, &o, 0.5f, true, &met, &loss, &dbuf, &cap));
        }
        pu_adamw_step_x(&opt, m, pool, lr, rm ? v : NULL, rm ? dv : NULL, xm, xv, rm ? x->C : 0);
        double w = json_number_value(json_array_get(want, (size_t)st));
        PT_NEAR(loss, w, 0, 1e-4);
        worst = fmax(worst, fabs(loss - w) / fabs(w));
    }
    printf("    %s --lora: 3 AdamW steps, worst loss relative difference %.2e\n", rm ? "rm" : "dpo",
           worst);
    json_decref(want);
    pu_free(dbuf);
    pu_adamw_free(&opt);
    pu_tmodel_destroy(m);
    pu_tmodel_destroy(ref);
}

PT_SUITE(align_grads) {
    fixture x;
    bool tested = false;
    for (int k = 0; k < 6; k++) {
        static const char *const names[6] = {
            "DPO loss: every policy gradient (full fine-tuning) = PyTorch autograd",
            "DPO loss: every adapter gradient (LoRA, reference = the base) = PyTorch autograd",
            "RM loss (focal + log barrier): every body and v_head gradient = PyTorch autograd",
            "RM loss (focal + log barrier) with LoRA: adapter and v_head gradients = PyTorch",
            "DPO --lora: 3 AdamW steps' losses = PyTorch within 1e-4 relative",
            "RM --lora (adapter + v_head): 3 AdamW steps' losses = PyTorch within 1e-4 relative"};
        if (!PT_TEST(names[k]))
            continue;
        if (!tested) {
            fx_open(&x);
            tested = true;
        }
        if (!x.ok)
            continue;
        pu_pool *pool = pu_pool_create(2);
        if (k < 2)
            dpo_case(&x, k == 1, pool);
        else if (k < 4)
            rm_case(&x, k == 3, pool);
        else
            adam_case(&x, k == 5, pool);
        pu_pool_destroy(pool);
    }
    if (tested)
        fx_close(&x);
}
