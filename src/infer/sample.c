/*
 * sample.c — token sampling: penalties, temperature, top-k, top-p, min-p.
 *
 * Order (as llama.cpp / HF apply them): penalties on raw logits → greedy if
 * temperature == 0 → temperature → top-k → softmax → top-p (nucleus, smallest
 * set with cumulative probability >= p) → min-p (drop tokens below
 * min_p · p_max) → renormalise → draw with the seeded xoshiro RNG.
 * Candidate sorting is a partial selection when top-k is small and a full
 * sort only when needed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_infer.h"

pu_sample_params pu_sample_default_params(void) {
    pu_sample_params p = {0};
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.0f;
    p.repetition_penalty = 1.0f;
    p.seed = 42;
    return p;
}

pu_status pu_sampler_init(pu_sampler *s, const pu_sample_params *p, int64_t n_vocab) {
    memset(s, 0, sizeof *s);
    if (n_vocab <= 0)
        return pu_err_set(PU_ERR_INVALID, "sampler: vocabulary size must be positive");
    if (!(p->temperature >= 0) || !(p->top_p > 0 && p->top_p <= 1) || p->top_k < 0 ||
        !(p->min_p >= 0 && p->min_p <= 1) || !(p->repetition_penalty > 0))
        return pu_err_set(PU_ERR_INVALID,
                          "sampler: need temperature >= 0, 0 < top_p <= 1, top_k >= 0, "
                          "0 <= min_p <= 1, repetition_penalty > 0");
    s->p = *p;
    s->n_vocab = n_vocab;
    pu_rng_seed(&s->rng, p->seed);
    s->counts = pu_try_calloc((size_t)n_vocab, sizeof(int32_t));
    s->idx = pu_try_malloc((size_t)n_vocab * sizeof(int32_t));
    s->probs = pu_try_malloc((size_t)n_vocab * sizeof(float));
    if (!s->counts || !s->idx || !s->probs) {
        pu_sampler_deinit(s);
        return PU_ERR_NOMEM;
    }
    return PU_OK;
}

void pu_sampler_deinit(pu_sampler *s) {
    pu_free(s->counts);
    pu_free(s->idx);
    pu_free(s->probs);
    s->counts = s->idx = NULL;
    s->probs = NULL;
}

void pu_sampler_accept(pu_sampler *s, int32_t id) {
    if (id >= 0 && id < s->n_vocab)
        s->counts[id]++;
}

void pu_sampler_reset(pu_sampler *s) {
    memset(s->counts, 0, (size_t)s->n_vocab * sizeof(int32_t));
    pu_rng_seed(&s->rng, s->p.seed);
}

int32_t pu_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

int64_t pu_topk(const float *x, int64_t n, int64_t k, int32_t *idx) {
    int64_t m = 0;
    for (int64_t i = 0; i < n && k > 0; i++) {
        float v = x[i];
        if (m == k && v <= x[idx[m - 1]])
            continue;
        int64_t j = m < k ? m++ : k - 1;
        while (j > 0 && x[idx[j - 1]] < v) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = (int32_t)i;
    }
    return m;
}

static float log_softmax_at(const float *x, int64_t n, int64_t i) {
    float mx = x[0];
    for (int64_t j = 1; j < n; j++)
        if (x[j] > mx)
            mx = x[j];
    double sum = 0;
    for (int64_t j = 0; j < n; j++)
        sum += exp((double)(x[j] - mx));
    return (float)((double)(x[i] - mx) - log(sum));
}

static _Thread_local const float *t_sort_vals;

static int cmp_desc(const void *a, const void *b) {
    int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    float va = t_sort_vals[ia], vb = t_sort_vals[ib];
    if (va > vb)
        return -1;
    if (va < vb)
        return 1;
    return ia < ib ? -1 : ia > ib;
}

int32_t pu_sampler_sample(pu_sampler *s, float *logits, float *logprob) {
    int64_t V = s->n_vocab;
    const pu_sample_params *p = &s->p;
    if (s->mask_fn)
        s->mask_fn(s->mask_ud, logits, V);
    /* penalties on raw logits */
    if (p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
        p->frequency_penalty != 0.0f) {
        for (int64_t i = 0; i < V; i++) {
            int32_t c = s->counts[i];
            if (!c)
                continue;
            if (p->repetition_penalty != 1.0f)
                logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty
                                          : logits[i] * p->repetition_penalty;
            logits[i] -= p->presence_penalty + p->frequency_penalty * (float)c;
        }
    }
    if (p->temperature == 0.0f) {
        int32_t id = pu_argmax(logits, V);
        if (logprob)
            *logprob = log_softmax_at(logits, V, id);
        return id;
    }
    /* candidates: top-k selection (or all), sorted by logit desc */
    int64_t n = V;
    if (p->top_k > 0 && p->top_k < V) {
        n = pu_topk(logits, V, p->top_k, s->idx); /* partial selection (k small) */
    } else {
        for (int64_t i = 0; i < V; i++)
            s->idx[i] = (int32_t)i;
        t_sort_vals = logits;
        qsort(s->idx, (size_t)V, sizeof(int32_t), cmp_desc);
    }
    /* softmax over candidates with temperature */
    float mx = logits[s->idx[0]];
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = exp((double)(logits[s->idx[i]] - mx) / p->temperature);
        s->probs[i] = (float)e;
        sum += e;
    }
    for (int64_t i = 0; i < n; i++)
        s->probs[i] = (float)(s->probs[i] / sum);
    /* top-p */
    if (p->top_p < 1.0f) {
        double cum = 0;
        int64_t keep = n;
        for (int64_t i = 0; i < n; i++) {
            cum += s->probs[i];
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    /* min-p */
    if (p->min_p > 0.0f) {
        float thr = p->min_p * s->probs[0];
        int64_t keep = 1;
        while (keep < n && s->probs[keep] >= thr)
            keep++;
        n = keep;
    }
    double tot = 0;
    for (int64_t i = 0; i < n; i++)
        tot += s->probs[i];
    double r = pu_rng_double(&s->rng) * tot, cum = 0;
    int64_t pick = n - 1;
    for (int64_t i = 0; i < n; i++) {
        cum += s->probs[i];
        if (r < cum) {
            pick = i;
            break;
        }
    }
    if (logprob)
        *logprob = (float)log(s->probs[pick] / tot);
    return s->idx[pick];
}
