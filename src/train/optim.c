/*
 * optim.c — AdamW (torch.optim.AdamW semantics), global-norm gradient
 * clipping (torch.nn.utils.clip_grad_norm_) and the warmup + cosine LR
 * schedule, all driven by the parameter table.
 *
 * The gradient norm is reduced deterministically: the slab is cut into fixed
 * blocks of 64 Ki floats (independent of the thread count), each block's
 * sum of squares is computed in double by one thread, and the block sums are
 * added in order by the caller.
 */
#include <math.h>
#include <string.h>

#include "train/train_impl.h"

#define NORM_BLOCK 65536

pu_adamw_cfg pu_adamw_default(void) {
    pu_adamw_cfg c = {0.9, 0.95, 1e-8, 0.1, 1.0};
    return c;
}

void pu_adamw_init(pu_adamw *o, const pu_adamw_cfg *cfg, int64_t numel) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = numel;
    o->m = pu_calloc((size_t)(numel ? numel : 1), sizeof(float));
    o->v = pu_calloc((size_t)(numel ? numel : 1), sizeof(float));
}

void pu_adamw_init_range(pu_adamw *o, const pu_adamw_cfg *cfg, int64_t lo, int64_t hi) {
    pu_adamw_init(o, cfg, hi > lo ? hi - lo : 0);
    o->lo = lo;
}

void pu_adamw_free(pu_adamw *o) {
    pu_free(o->m);
    pu_free(o->v);
    o->m = o->v = NULL;
}

typedef struct {
    pu_tmodel *m;
    double *partial; /* per (param, block) */
    int64_t *first;  /* first block index of each param */
    int64_t nblocks;
} norm_ctx;

static void norm_worker(void *vc, int ith, int nth) {
    const norm_ctx *c = vc;
    int np = pu_tmodel_n_params(c->m);
    const float *g = pu_tmodel_grads(c->m);
    int64_t lo, hi;
    pu_split(c->nblocks, ith, nth, &lo, &hi);
    int pi = 0;
    for (int64_t b = lo; b < hi; b++) {
        while (pi + 1 < np && c->first[pi + 1] <= b)
            pi++; /* the last entry starting at or before b (frozen ones start and end there) */
        const pu_param *p = pu_tmodel_param(c->m, pi);
        int64_t j0 = (b - c->first[pi]) * NORM_BLOCK;
        int64_t j1 = j0 + NORM_BLOCK < p->numel ? j0 + NORM_BLOCK : p->numel;
        double s = 0;
        if (!(p->flags & PU_PARAM_FROZEN))
            for (int64_t j = j0; j < j1; j++) {
                double x = g[p->offset + j];
                s += x * x;
            }
        c->partial[b] = s;
    }
}

double pu_grad_norm(pu_tmodel *m, pu_pool *pool) {
    int np = pu_tmodel_n_params(m);
    norm_ctx c = {.m = m};
    c.first = pu_malloc((size_t)(np + 1) * sizeof(int64_t));
    for (int i = 0; i < np; i++) {
        c.first[i] = c.nblocks;
        const pu_param *p = pu_tmodel_param(m, i);
        if (!(p->flags & PU_PARAM_FROZEN)) /* frozen entries add exact zeros: skip them */
            c.nblocks += (p->numel + NORM_BLOCK - 1) / NORM_BLOCK;
    }
    c.first[np] = c.nblocks;
    c.partial = pu_calloc((size_t)(c.nblocks ? c.nblocks : 1), sizeof(double));
    pu_pool_run(pool, norm_worker, &c);
    double s = 0;
    for (int64_t b = 0; b < c.nblocks; b++)
        s += c.partial[b];
    pu_free(c.partial);
    pu_free(c.first);
    return sqrt(s);
}

typedef struct {
    pu_adamw *o;
    pu_tmodel *m;
    float lr, clip_coef, bc2_sqrt, step_size;
    bool do_clip;
} adam_ctx;

static void adam_worker(void *vc, int ith, int nth) {
    const adam_ctx *c = vc;
    int np = pu_tmodel_n_params(c->m);
    float *w = pu_tmodel_params(c->m), *g = pu_tmodel_grads(c->m);
    float b1 = (float)c->o->cfg.beta1, b2 = (float)c->o->cfg.beta2, eps = (float)c->o->cfg.eps;
    float decay = 1.0f - c->lr * (float)c->o->cfg.weight_decay;
    int64_t s_lo = c->o->lo, s_hi = c->o->lo + c->o->n; /* the (ZeRO-1) shard */
    for (int i = 0; i < np; i++) {
        const pu_param *p = pu_tmodel_param(c->m, i);
        if (p->flags & PU_PARAM_FROZEN)
            continue;
        /* the part of the entry inside the shard: elements [e0, e1) */
        int64_t e0 = s_lo > p->offset ? s_lo - p->offset : 0;
        int64_t e1 = s_hi - p->offset < p->numel ? s_hi - p->offset : p->numel;
        if (e1 <= e0)
            continue;
        int64_t lo, hi;
        pu_split(e1 - e0, ith, nth, &lo, &hi);
        lo += e0, hi += e0;
        float *pw = w + p->offset, *pg = g + p->offset;
        /* moments of elements e0.. of the entry (index j - e0) */
        float *pm = c->o->m + (p->offset + e0 - s_lo), *pv = c->o->v + (p->offset + e0 - s_lo);
        bool dec = !(p->flags & PU_PARAM_NO_DECAY) && c->o->cfg.weight_decay != 0;
        for (int64_t j = lo; j < hi; j++) {
            float gr = pg[j];
            if (c->do_clip) {
                gr *= c->clip_coef;
                pg[j] = gr;
            }
            if (dec)
                pw[j] *= decay;
            pm[j - e0] = pm[j - e0] + (gr - pm[j - e0]) * (1.0f - b1); /* torch lerp_ */
            pv[j - e0] = pv[j - e0] * b2 + (1.0f - b2) * gr * gr;
            float denom = sqrtf(pv[j - e0]) / c->bc2_sqrt + eps;
            pw[j] = pw[j] - c->step_size * (pm[j - e0] / denom);
        }
    }
}

double pu_adamw_step(pu_adamw *o, pu_tmodel *m, pu_pool *pool, double lr) {
    return pu_adamw_step_x(o, m, pool, lr, NULL, NULL, NULL, NULL, 0);
}

double pu_adamw_step_x(pu_adamw *o, pu_tmodel *m, pu_pool *pool, double lr, float *xp, float *xg,
                       float *xm, float *xv, int64_t xn) {
    double norm = pu_grad_norm(m, pool);
    if (xn > 0) {
        double s = norm * norm;
        for (int64_t j = 0; j < xn; j++)
            s += (double)xg[j] * (double)xg[j];
        norm = sqrt(s);
    }
    adam_ctx c = {.o = o, .m = m, .lr = (float)lr};
    if (o->cfg.clip > 0) {
        /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1 */
        float total = (float)norm;
        float coef = (float)o->cfg.clip / (total + 1e-6f);
        if (coef < 1.0f) {
            c.do_clip = true;
            c.clip_coef = coef;
        }
    }
    o->t++;
    double bc1 = 1.0 - pow(o->cfg.beta1, (double)o->t);
    double bc2 = 1.0 - pow(o->cfg.beta2, (double)o->t);
    c.step_size = (float)(lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    pu_pool_run(pool, adam_worker, &c);
    float b1 = (float)o->cfg.beta1, b2 = (float)o->cfg.beta2, eps = (float)o->cfg.eps;
    float decay = 1.0f - c.lr * (float)o->cfg.weight_decay;
    for (int64_t j = 0; j < xn; j++) { /* the same update as adam_worker's */
        float gr = xg[j];
        if (c.do_clip) {
            gr *= c.clip_coef;
            xg[j] = gr;
        }
        if (o->cfg.weight_decay != 0)
            xp[j] *= decay;
        xm[j] = xm[j] + (gr - xm[j]) * (1.0f - b1);
        xv[j] = xv[j] * b2 + (1.0f - b2) * gr * gr;
        float denom = sqrtf(xv[j]) / c.bc2_sqrt + eps;
        xp[j] = xp[j] - c.step_size * (xm[j] / denom);
    }
    return norm;
}

double pu_lr_at(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr) {
    if (warmup > 0 && step < warmup)
        return lr * (double)(step + 1) / (double)warmup;
    int64_t span = total - warmup;
    if (span <= 1)
        return lr;
    double prog = (double)(step - warmup) / (double)(span - 1);
    if (prog > 1)
        prog = 1;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(M_PI * prog));
}
