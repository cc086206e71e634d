/*
 * align.c — loss math of alignment: reward-model ranking losses (XTuner's
 * InternLM2 focal loss + log barrier), DPO / SimPO / ORPO on summed response
 * log-probabilities, and PPO's pieces (KL-penalised rewards, GAE, whitening,
 * clipped policy and value losses, entropy), each with its backward.
 *
 * Everything is elementwise over pairs / tokens followed by a mean, so each
 * function is one loop computing the per-item term and its derivative in
 * double, then one scale by 1/N. Autograd corner cases follow PyTorch so the
 * gradients equal torch's exactly, not just almost everywhere:
 *   relu'(0) = 0; clamp passes the gradient for lo <= x <= hi (inclusive);
 *   minimum/maximum give half the gradient to each side on a tie (which is
 *   the common case in PPO: inside the clip range both branches are equal).
 */
#include <math.h>
#include <string.h>

#include "puyu/pu_align.h"

/* log(sigmoid(x)) without overflow: min(x, 0) - log1p(exp(-|x|)) */
static double logsig(double x) {
    return (x < 0 ? x : 0.0) - log1p(exp(-fabs(x)));
}

static double sigm(double x) {
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

static pu_status check_finite(const float *x, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return pu_err_set(PU_ERR_INVALID, "%s[%lld] is %g (not finite)", what, (long long)i,
                              (double)x[i]);
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* reward model                                                             */

pu_rm_loss_opts pu_rm_loss_default_opts(void) {
    pu_rm_loss_opts o = {PU_RM_LOSS_FOCAL, PU_RM_PENALTY_LOG_BARRIER, 0.01};
    return o;
}

#define BARRIER_BOUND 5.0
#define BARRIER_EPS   1e-3

/* penalty term of one reward and its derivative */
static double penalty_term(pu_rm_penalty_kind k, double r, double *dr) {
    if (k == PU_RM_PENALTY_L2) {
        *dr = 2.0 * r;
        return r * r;
    }
    if (k == PU_RM_PENALTY_LOG_BARRIER) {
        /* the bounds as torch computes them: python floats (double), applied
         * to the float32 logits after .float(), so the clamp bounds are the
         * float32 roundings of -5 + 1e-3 and 5 - 1e-3 */
        const double lo = (float)(-BARRIER_BOUND + BARRIER_EPS);
        const double hi = (float)(BARRIER_BOUND - BARRIER_EPS);
        double c = r < lo ? lo : r > hi ? hi : r;
        *dr = (r >= lo && r <= hi) ? 1.0 / (BARRIER_BOUND - c) - 1.0 / (c + BARRIER_BOUND) : 0.0;
        return -log(BARRIER_BOUND - c) - log(c + BARRIER_BOUND);
    }
    *dr = 0.0;
    return 0.0;
}

pu_status pu_rm_loss(const float *chosen, const float *rejected, int64_t N,
                     const pu_rm_loss_opts *o, pu_rm_metrics *m, float *d_chosen,
                     float *d_rejected) {
    pu_rm_loss_opts def = pu_rm_loss_default_opts();
    if (!o)
        o = &def;
    if (N < 1)
        return pu_err_set(PU_ERR_INVALID, "reward loss: %lld pairs (need >= 1)", (long long)N);
    PU_TRY(check_finite(chosen, N, "chosen reward"));
    PU_TRY(check_finite(rejected, N, "rejected reward"));
    double rank = 0, pen = 0, acc = 0, sc = 0, sr = 0;
    const double inv = 1.0 / (double)N, W = o->penalty_weight;
    for (int64_t i = 0; i < N; i++) {
        double rc = chosen[i], rr = rejected[i], d = rc - rr;
        double l = -logsig(d), dl = sigm(d) - 1.0; /* d(-logsig)/dd = sigmoid(d) - 1 */
        double g;
        if (o->loss == PU_RM_LOSS_FOCAL) {
            double s = sigm(d), u = s - 0.5;
            double p = u > 0 ? 2.0 * u : 0.0;
            double dp = u > 0 ? 2.0 * s * (1.0 - s) : 0.0; /* relu'(0) = 0 as torch */
            double w = (1.0 - p) * (1.0 - p), dw = -2.0 * (1.0 - p) * dp;
            rank += w * l;
            g = dw * l + w * dl;
        } else {
            rank += l;
            g = dl;
        }
        double dpc, dpr;
        pen += penalty_term(o->penalty, rc, &dpc) + penalty_term(o->penalty, rr, &dpr);
        if (d_chosen)
            d_chosen[i] = (float)((g + W * dpc) * inv);
        if (d_rejected)
            d_rejected[i] = (float)((-g + W * dpr) * inv);
        acc += rc > rr;
        sc += rc;
        sr += rr;
    }
    if (m) {
        m->rank = rank * inv;
        m->penalty = pen * inv;
        m->loss = m->rank + W * m->penalty;
        m->accuracy = acc * inv;
        m->chosen = sc * inv;
        m->rejected = sr * inv;
    }
    return PU_OK;
}

void pu_value_head_fwd(const float *v, const float *h, int64_t N, int64_t C, float *out) {
    for (int64_t i = 0; i < N; i++) {
        double acc = 0;
        for (int64_t j = 0; j < C; j++)
            acc += (double)v[j] * h[i * C + j];
        out[i] = (float)acc;
    }
}

void pu_value_head_bwd(const float *v, const float *h, const float *dout, int64_t N, int64_t C,
                       float *dv, float *dh) {
    for (int64_t j = 0; dv && j < C; j++) {
        double acc = 0;
        for (int64_t i = 0; i < N; i++)
            acc += (double)dout[i] * h[i * C + j];
        dv[j] = (float)((double)dv[j] + acc);
    }
    for (int64_t i = 0; dh && i < N; i++)
        for (int64_t j = 0; j < C; j++)
            dh[i * C + j] = (float)((double)dout[i] * v[j]);
}

/* ------------------------------------------------------------------------ */
/* DPO, SimPO, ORPO                                                          */

pu_dpo_opts pu_dpo_default_opts(void) {
    pu_dpo_opts o = {0.1, 0.0};
    return o;
}

static void pref_metrics(pu_pref_metrics *m, double loss, double acc, double sc, double sr,
                         int64_t N) {
    if (!m)
        return;
    m->loss = loss / (double)N;
    m->accuracy = acc / (double)N;
    m->chosen = sc / (double)N;
    m->rejected = sr / (double)N;
    m->margin = m->chosen - m->rejected;
}

pu_status pu_dpo_loss(const float *pc, const float *pr, const float *rc, const float *rr, int64_t N,
                      const pu_dpo_opts *o, pu_pref_metrics *m, float *d_pc, float *d_pr) {
    pu_dpo_opts def = pu_dpo_default_opts();
    if (!o)
        o = &def;
    if (N < 1)
        return pu_err_set(PU_ERR_INVALID, "DPO loss: %lld pairs (need >= 1)", (long long)N);
    PU_TRY(check_finite(pc, N, "policy chosen logp"));
    PU_TRY(check_finite(pr, N, "policy rejected logp"));
    PU_TRY(check_finite(rc, N, "reference chosen logp"));
    PU_TRY(check_finite(rr, N, "reference rejected logp"));
    const double beta = o->beta, ls = o->label_smoothing, inv = 1.0 / (double)N;
    double loss = 0, acc = 0, sc = 0, sr = 0;
    for (int64_t i = 0; i < N; i++) {
        double z = beta * (((double)pc[i] - pr[i]) - ((double)rc[i] - rr[i]));
        loss += -(1.0 - ls) * logsig(z) - ls * logsig(-z);
        double g = -(1.0 - ls) * sigm(-z) + ls * sigm(z); /* d loss_i / dz */
        if (d_pc)
            d_pc[i] = (float)(g * beta * inv);
        if (d_pr)
            d_pr[i] = (float)(-g * beta * inv);
        double cr = beta * ((double)pc[i] - rc[i]), rj = beta * ((double)pr[i] - rr[i]);
        acc += cr > rj;
        sc += cr;
        sr += rj;
    }
    pref_metrics(m, loss, acc, sc, sr, N);
    return PU_OK;
}

static pu_status check_counts(const int64_t *nc, const int64_t *nr, int64_t N, const char *what) {
    for (int64_t i = 0; i < N; i++)
        if (nc[i] < 1 || nr[i] < 1)
            return pu_err_set(PU_ERR_INVALID,
                              "%s: pair %lld has an empty response (%lld / %lld "
                              "tokens)",
                              what, (long long)i, (long long)nc[i], (long long)nr[i]);
    return PU_OK;
}

pu_status pu_simpo_loss(const float *pc, const float *pr, const int64_t *nc, const int64_t *nr,
                        int64_t N, double beta, double gamma, pu_pref_metrics *m, float *d_pc,
                        float *d_pr) {
    if (N < 1)
        return pu_err_set(PU_ERR_INVALID, "SimPO loss: %lld pairs (need >= 1)", (long long)N);
    PU_TRY(check_finite(pc, N, "policy chosen logp"));
    PU_TRY(check_finite(pr, N, "policy rejected logp"));
    PU_TRY(check_counts(nc, nr, N, "SimPO loss"));
    const double inv = 1.0 / (double)N;
    double loss = 0, acc = 0, sc = 0, sr = 0;
    for (int64_t i = 0; i < N; i++) {
        double ac = (double)pc[i] / (double)nc[i], ar = (double)pr[i] / (double)nr[i];
        double z = beta * (ac - ar) - gamma;
        loss += -logsig(z);
        double g = -sigm(-z);
        if (d_pc)
            d_pc[i] = (float)(g * beta / (double)nc[i] * inv);
        if (d_pr)
            d_pr[i] = (float)(-g * beta / (double)nr[i] * inv);
        acc += beta * ac > beta * ar;
        sc += beta * ac;
        sr += beta * ar;
    }
    pref_metrics(m, loss, acc, sc, sr, N);
    return PU_OK;
}

pu_status pu_orpo_loss(const float *pc, const float *pr, const int64_t *nc, const int64_t *nr,
                       int64_t N, double lambda, pu_pref_metrics *m, float *d_pc, float *d_pr) {
    if (N < 1)
        return pu_err_set(PU_ERR_INVALID, "ORPO loss: %lld pairs (need >= 1)", (long long)N);
    PU_TRY(check_finite(pc, N, "policy chosen logp"));
    PU_TRY(check_finite(pr, N, "policy rejected logp"));
    PU_TRY(check_counts(nc, nr, N, "ORPO loss"));
    const double inv = 1.0 / (double)N;
    double loss = 0, acc = 0, sc = 0, sr = 0;
    for (int64_t i = 0; i < N; i++) {
        double ac = (double)pc[i] / (double)nc[i], ar = (double)pr[i] / (double)nr[i];
        if (!(ac < 0) || !(ar < 0))
            return pu_err_set(PU_ERR_INVALID,
                              "ORPO loss: pair %lld has a mean log-probability >= 0 "
                              "(%g / %g): odds undefined",
                              (long long)i, ac, ar);
        /* 1 - exp(a) = -expm1(a) > 0 */
        double oc = -expm1(ac), orj = -expm1(ar);
        double lo = (ac - ar) - (log(oc) - log(orj));
        loss += -lambda * logsig(lo);
        double g = -lambda * sigm(-lo); /* d loss_i / d log_odds */
        /* d log_odds / d a_c = 1 + exp(a_c) / (1 - exp(a_c)) = 1 / (1 - exp(a_c)) */
        if (d_pc)
            d_pc[i] = (float)(g / oc / (double)nc[i] * inv);
        if (d_pr)
            d_pr[i] = (float)(-g / orj / (double)nr[i] * inv);
        acc += ac > ar;
        sc += lambda * ac;
        sr += lambda * ar;
    }
    pref_metrics(m, loss, acc, sc, sr, N);
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* PPO                                                                      */

void pu_ppo_kl_rewards(const float *logp, const float *ref_logp, const float *mask,
                       const float *score, int64_t B, int64_t T, double kl_coef, float *rewards,
                       float *kl) {
    for (int64_t b = 0; b < B; b++) {
        double s = 0;
        int64_t last = -1;
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t;
            double d = ((double)logp[i] - ref_logp[i]) * mask[i];
            s += d;
            rewards[i] = (float)(-kl_coef * d);
            if (mask[i] != 0)
                last = t;
        }
        if (last >= 0)
            rewards[b * T + last] = (float)((double)rewards[b * T + last] + score[b]);
        if (kl)
            kl[b] = (float)s;
    }
}

void pu_ppo_gae(const float *values, const float *rewards, const float *mask, int64_t B, int64_t T,
                double gamma, double lambda, float *advantages, float *returns) {
    for (int64_t b = 0; b < B; b++) {
        double next_v = 0, lastgae = 0;
        for (int64_t t = T - 1; t >= 0; t--) {
            int64_t i = b * T + t;
            double v = (double)values[i] * mask[i], r = (double)rewards[i] * mask[i];
            double delta = r + gamma * next_v - v;
            lastgae = delta + gamma * lambda * lastgae;
            advantages[i] = (float)lastgae;
            returns[i] = (float)(lastgae + v);
            next_v = v;
        }
    }
}

void pu_ppo_whiten(float *x, const float *mask, int64_t n) {
    double sm = 0, sx = 0;
    for (int64_t i = 0; i < n; i++) {
        sm += mask[i];
        sx += (double)x[i] * mask[i];
    }
    if (sm <= 0) {
        memset(x, 0, (size_t)n * sizeof *x);
        return;
    }
    double mean = sx / sm, sv = 0;
    for (int64_t i = 0; i < n; i++) {
        double c = (double)x[i] - mean;
        sv += c * c * mask[i];
    }
    double scale = 1.0;
    if (sm > 1) {
        double var = sv / sm * (sm / (sm - 1.0));
        scale = 1.0 / sqrt(var + 1e-8);
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = mask[i] != 0 ? (float)(((double)x[i] - mean) * scale) : 0.0f;
}

static double mask_sum(const float *mask, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += mask[i];
    return s;
}

pu_status pu_ppo_policy_loss(const float *logp, const float *old_logp, const float *adv,
                             const float *mask, int64_t n, double clip_eps, pu_ppo_metrics *m,
                             float *d_logp) {
    double M = mask_sum(mask, n);
    if (!(M > 0))
        return pu_err_set(PU_ERR_INVALID, "PPO policy loss: no valid token in the batch");
    const double lo = 1.0 - clip_eps, hi = 1.0 + clip_eps;
    double loss = 0, clipped = 0, akl = 0, sratio = 0;
    for (int64_t i = 0; i < n; i++) {
        double lr = (double)logp[i] - old_logp[i], ratio = exp(lr), A = adv[i];
        double cr = ratio < lo ? lo : ratio > hi ? hi : ratio;
        double s1 = ratio * A, s2 = cr * A;
        double w1 = s1 < s2 ? 1.0 : s1 > s2 ? 0.0 : 0.5; /* share of d min going to s1 */
        double inside = (ratio >= lo && ratio <= hi) ? 1.0 : 0.0;
        double dratio = -(w1 * A + (1.0 - w1) * A * inside); /* d(-min)/d ratio */
        loss += -(s1 < s2 ? s1 : s2) * mask[i];
        clipped += (s2 < s1) * mask[i];
        akl += 0.5 * lr * lr * mask[i];
        sratio += ratio * mask[i];
        if (d_logp)
            d_logp[i] = (float)(dratio * ratio * mask[i] / M);
    }
    if (m) {
        m->loss = loss / M;
        m->clipfrac = clipped / M;
        m->approx_kl = akl / M;
        m->ratio = sratio / M;
    }
    return PU_OK;
}

pu_status pu_ppo_value_loss(const float *values, const float *old_values, const float *returns,
                            const float *mask, int64_t n, double clip, double *loss,
                            double *clipfrac, float *d_values) {
    double M = mask_sum(mask, n);
    if (!(M > 0))
        return pu_err_set(PU_ERR_INVALID, "PPO value loss: no valid token in the batch");
    double s = 0, cf = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = values[i], R = returns[i], e1 = v - R, l1 = e1 * e1;
        double g;
        if (clip > 0) {
            double dv = v - (double)old_values[i];
            double cdv = dv < -clip ? -clip : dv > clip ? clip : dv;
            double e2 = (double)old_values[i] + cdv - R, l2 = e2 * e2;
            double inside = (dv >= -clip && dv <= clip) ? 1.0 : 0.0;
            double w1 = l1 > l2 ? 1.0 : l1 < l2 ? 0.0 : 0.5; /* share of d max going to l1 */
            s += (l1 > l2 ? l1 : l2) * mask[i];
            cf += (l2 > l1) * mask[i];
            g = w1 * 2.0 * e1 + (1.0 - w1) * 2.0 * e2 * inside;
        } else {
            s += l1 * mask[i];
            g = 2.0 * e1;
        }
        if (d_values)
            d_values[i] = (float)(0.5 * g * mask[i] / M);
    }
    if (loss)
        *loss = 0.5 * s / M;
    if (clipfrac)
        *clipfrac = cf / M;
    return PU_OK;
}

void pu_entropy_fwd(const float *logits, int64_t N, int64_t V, float *entropy) {
    for (int64_t r = 0; r < N; r++) {
        const float *z = logits + r * V;
        double mx = -INFINITY;
        for (int64_t j = 0; j < V; j++)
            mx = z[j] > mx ? z[j] : mx;
        double se = 0, sez = 0;
        for (int64_t j = 0; j < V; j++) {
            double e = exp((double)z[j] - mx);
            se += e;
            sez += e * z[j];
        }
        entropy[r] = (float)(mx + log(se) - sez / se);
    }
}

void pu_entropy_bwd(const float *logits, const float *d_entropy, int64_t N, int64_t V,
                    float *d_logits) {
    for (int64_t r = 0; r < N; r++) {
        const float *z = logits + r * V;
        float *d = d_logits + r * V;
        double mx = -INFINITY;
        for (int64_t j = 0; j < V; j++)
            mx = z[j] > mx ? z[j] : mx;
        double se = 0, sez = 0;
        for (int64_t j = 0; j < V; j++) {
            double e = exp((double)z[j] - mx);
            se += e;
            sez += e * z[j];
        }
        double ez = sez / se, g = d_entropy[r];
        for (int64_t j = 0; j < V; j++) {
            double p = exp((double)z[j] - mx) / se;
            d[j] = (float)(-g * p * ((double)z[j] - ez));
        }
    }
}

void pu_ppo_whiten_openrlhf(float *x, const float *mask, int64_t n) {
    double sm = mask_sum(mask, n), sx = 0;
    if (!(sm > 0))
        return;
    for (int64_t i = 0; i < n; i++)
        sx += (double)x[i] * mask[i];
    double mean = sx / sm, sv = 0;
    for (int64_t i = 0; i < n; i++) {
        double c = (double)x[i] - mean;
        sv += c * c * mask[i];
    }
    double var = sv / sm;
    double rstd = 1.0 / sqrt(var > 1e-8 ? var : 1e-8);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(((double)x[i] - mean) * rstd);
}

void pu_ppo_advantages(const float *logp, const float *ref_logp, const float *values,
                       const float *mask, const float *score, int64_t B, int64_t T,
                       double kl_coef, double gamma, double lambda, pu_whiten_kind whiten,
                       float *rewards, float *kl, float *advantages, float *returns) {
    pu_ppo_kl_rewards(logp, ref_logp, mask, score, B, T, kl_coef, rewards, kl);
    pu_ppo_gae(values, rewards, mask, B, T, gamma, lambda, advantages, returns);
    if (whiten == PU_WHITEN_OPENRLHF)
        pu_ppo_whiten_openrlhf(advantages, mask, B * T);
    else if (whiten == PU_WHITEN_TRL)
        pu_ppo_whiten(advantages, mask, B * T);
}
