/*
 * pairs.c — tokenized preference pairs as a batch source of pu_train_loop,
 * shared by `puyu rm train` (rm_train.c) and `puyu dpo` (dpo.c); see
 * train_impl.h (pu_pair_set, pu_pairs).
 *
 * A set holds two sides per pair (2i chosen, 2i+1 rejected). LM sides
 * (reward_token < 0) are pu_pref_tokenize's (`puyu sft`'s rendering) with
 * tg[t] = the label of t+1; RM sides are pu_rm_tokenize's (chat template,
 * BOS, the reward token appended), no targets. Bad pairs (a side longer
 * than seq, sides that tokenize identically, a response with no scored
 * token) are errors naming FILE:LINE and the side, or counted skips with
 * skip_bad (as are the records pu_pref_data_load rejects).
 *
 * Step s takes the pairs of slots s*N .. s*N+N-1 of pu_epoch_order (file
 * order, or a seeded per-epoch permutation): a function of the step alone,
 * so a resumed run sees the same batches.
 */
#include <stdio.h>
#include <string.h>

#include "puyu/pu_align.h"
#include "train/train_impl.h"

void pu_pair_set_free(pu_pair_set *s) {
    for (int64_t i = 0; i < 2 * s->n_pairs; i++) {
        pu_free(s->seq[i].ids);
        pu_free(s->seq[i].tg);
    }
    pu_free(s->seq);
    memset(s, 0, sizeof *s);
}

/* the two sides of record rec; *why set (and PU_OK) for a bad pair */
static pu_status tokenize_pair(const pu_pair_load *lo, const pu_pref_record *rec,
                               pu_pair_seq side[2], const char **why) {
    *why = NULL;
    if (lo->reward_token >= 0) {
        for (int k = 0; k < 2; k++) {
            pu_sft_record conv = {0};
            pu_status s = pu_pref_conversation(rec, k, &conv);
            if (s == PU_OK)
                s = pu_rm_tokenize(lo->tok, &conv.msgs, lo->reward_token, &side[k].ids, &side[k].n);
            pu_sft_record_free(&conv);
            PU_TRY(s);
        }
        return PU_OK;
    }
    pu_pref_tokens pt;
    memset(&pt, 0, sizeof pt);
    PU_TRY(pu_pref_tokenize(lo->tok, rec, &pt));
    const pu_sft_tokens *src[2] = {&pt.chosen, &pt.rejected};
    for (int k = 0; k < 2; k++) {
        pu_pair_seq *q = &side[k];
        q->n = src[k]->n;
        q->ids = pu_malloc((size_t)(q->n > 0 ? q->n : 1) * sizeof(int32_t));
        q->tg = pu_malloc((size_t)(q->n > 0 ? q->n : 1) * sizeof(int32_t));
        memcpy(q->ids, src[k]->ids, (size_t)q->n * sizeof(int32_t));
        int64_t scored = 0;
        for (int64_t t = 0; t < q->n; t++) {
            q->tg[t] = t + 1 < q->n ? src[k]->labels[t + 1] : PU_IGNORE_INDEX;
            scored += q->tg[t] >= 0;
        }
        if (!scored && !*why)
            *why = k ? "rejected: empty response (no scored token)"
                     : "chosen: empty response (no scored token)";
    }
    pu_pref_tokens_free(&pt);
    return PU_OK;
}

pu_status pu_pair_set_load(const pu_pair_load *lo, const char *const *paths, int n,
                           const char *what, pu_pair_set *out) {
    memset(out, 0, sizeof *out);
    pu_pref_conditions *conds = NULL;
    PU_TRY(pu_pref_conditions_default(&conds));
    pu_pref_load_opts plo = {.parse = {.conditions = conds, .default_condition = lo->condition},
                             .skip_bad = lo->skip_bad};
    pu_pref_data *d = NULL;
    pu_status s = pu_pref_data_load(paths, n, &plo, &d);
    if (s != PU_OK) {
        pu_pref_conditions_destroy(conds);
        return s;
    }
    int64_t np = pu_pref_data_n(d);
    out->seq = pu_calloc((size_t)(2 * np + 1), sizeof *out->seq);
    out->n_skipped = pu_pref_data_n_skipped(d);
    const char *extra = lo->reward_token >= 0 ? " (reward token included)" : "";
    for (int64_t i = 0; i < np && s == PU_OK; i++) {
        pu_pair_seq side[2];
        memset(side, 0, sizeof side);
        const char *why = NULL;
        s = tokenize_pair(lo, pu_pref_data_get(d, i), side, &why);
        if (s != PU_OK) {
            pu_err_prefix(s, "%s: ", pu_pref_data_where(d, i));
        } else {
            int over = side[0].n > lo->seq ? 0 : side[1].n > lo->seq ? 1 : -1;
            if (over >= 0)
                s = pu_err_set(PU_ERR_INVALID, "%s: %s: %lld tokens%s exceed --seq %lld",
                               pu_pref_data_where(d, i), over ? "rejected" : "chosen",
                               (long long)side[over].n, extra, (long long)lo->seq);
            else if (side[0].n == side[1].n &&
                     !memcmp(side[0].ids, side[1].ids, (size_t)side[0].n * sizeof(int32_t)))
                s = pu_err_set(PU_ERR_INVALID, "%s: chosen and rejected tokenize identically",
                               pu_pref_data_where(d, i));
            else if (why)
                s = pu_err_set(PU_ERR_INVALID, "%s: %s", pu_pref_data_where(d, i), why);
            if (s != PU_OK && lo->skip_bad) {
                pu_err_clear();
                s = PU_OK;
                out->n_skipped++;
            } else if (s == PU_OK) {
                out->seq[2 * out->n_pairs] = side[0];
                out->seq[2 * out->n_pairs + 1] = side[1];
                out->n_pairs++;
                continue;
            }
        }
        for (int k = 0; k < 2; k++) {
            pu_free(side[k].ids);
            pu_free(side[k].tg);
        }
    }
    pu_pref_data_destroy(d);
    pu_pref_conditions_destroy(conds);
    if (s == PU_OK && out->n_pairs == 0)
        s = pu_err_set(PU_ERR_INVALID, "%s: %s: no usable pairs", lo->label, what);
    if (s == PU_OK && !lo->quiet)
        pu_log_info("%s: %s: %lld pairs (%lld skipped)", lo->label, what, (long long)out->n_pairs,
                    (long long)out->n_skipped);
    if (s != PU_OK)
        pu_pair_set_free(out);
    return s;
}

int64_t pu_pair_set_max_len(const pu_pair_set *s) {
    int64_t T = 1;
    for (int64_t i = 0; i < 2 * s->n_pairs; i++)
        T = s->seq[i].n > T ? s->seq[i].n : T;
    return T;
}

uint64_t pu_pair_set_hash(const pu_pair_set *s) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < 2 * s->n_pairs; i++) {
        size_t nb = (size_t)s->seq[i].n * sizeof(int32_t);
        h = (h ^ pu_hash64(s->seq[i].ids, nb)) * 0x100000001B3ull;
        if (s->seq[i].tg)
            h = (h ^ pu_hash64(s->seq[i].tg, nb)) * 0x100000001B3ull;
    }
    return h;
}

void pu_pair_fill_rows(const pu_pair_set *set, const int64_t *pairs, int64_t np, int32_t *ids,
                       int32_t *tg, int64_t *lens, int64_t *T) {
    int64_t t = 1;
    for (int64_t row = 0; row < 2 * np; row++) {
        int64_t n = set->seq[2 * pairs[row / 2] + row % 2].n;
        t = n > t ? n : t;
    }
    for (int64_t row = 0; row < 2 * np; row++) {
        const pu_pair_seq *q = &set->seq[2 * pairs[row / 2] + row % 2];
        for (int64_t x = 0; x < t; x++) {
            ids[row * t + x] = x < q->n ? q->ids[x] : 0;
            tg[row * t + x] = x < q->n && q->tg ? q->tg[x] : PU_IGNORE_INDEX;
        }
        if (lens)
            lens[row] = q->n;
    }
    *T = t;
}

void pu_pairs_free(pu_pairs *p) {
    pu_pair_set_free(&p->train);
    pu_pair_set_free(&p->eval);
    pu_epoch_order_free(&p->order);
    memset(p, 0, sizeof *p);
}

int64_t pu_pairs_at(pu_pairs *p, int64_t slot) {
    return pu_epoch_order_at(&p->order, p->train.n_pairs, p->shuffle, p->seed, slot);
}

void pu_pairs_batch(pu_pairs *p, int64_t s, int64_t np, int32_t *ids, int32_t *tg, int64_t *lens,
                    int64_t *T) {
    int64_t *pairs = pu_malloc((size_t)(np > 0 ? np : 1) * sizeof(int64_t));
    for (int64_t k = 0; k < np; k++)
        pairs[k] = pu_pairs_at(p, s * np + k);
    pu_pair_fill_rows(&p->train, pairs, np, ids, tg, lens, T);
    pu_free(pairs);
}

int64_t pu_pairs_tokens_upto(pu_pairs *p, int64_t np, int64_t step) {
    if (step < p->tok_step) {
        p->tok_step = 0;
        p->tok_sum = 0;
    }
    for (; p->tok_step < step; p->tok_step++)
        for (int64_t k = 0; k < np; k++) {
            int64_t i = pu_pairs_at(p, p->tok_step * np + k);
            p->tok_sum += p->train.seq[2 * i].n + p->train.seq[2 * i + 1].n;
        }
    return p->tok_sum;
}

int64_t pu_pairs_eval_n(const pu_pairs *p, int64_t mbp) {
    return (p->eval.n_pairs + mbp - 1) / mbp;
}

int64_t pu_pairs_eval_batch(const pu_pairs *p, int64_t k, int64_t mbp, int32_t *ids, int32_t *tg,
                            int64_t *lens, int64_t *T) {
    int64_t first = k * mbp;
    int64_t np = p->eval.n_pairs - first < mbp ? p->eval.n_pairs - first : mbp;
    np = np > 0 ? np : 0;
    int64_t *pairs = pu_malloc((size_t)(np > 0 ? np : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < np; i++)
        pairs[i] = first + i;
    pu_pair_fill_rows(&p->eval, pairs, np, ids, tg, lens, T);
    pu_free(pairs);
    return 2 * np;
}

int64_t pu_pairs_max_len(const pu_pairs *p) {
    int64_t T = pu_pair_set_max_len(&p->train);
    if (p->eval.n_pairs && pu_pair_set_max_len(&p->eval) > T)
        T = pu_pair_set_max_len(&p->eval);
    return T;
}

pu_status pu_pairs_load(pu_pairs *p, const pu_pair_load *lo, const char *const *data, int n_data,
                        const char *const *eval, int n_eval, bool shuffle, uint64_t seed) {
    p->shuffle = shuffle;
    p->seed = seed;
    PU_TRY(pu_pair_set_load(lo, data, n_data, "train", &p->train));
    if (eval && n_eval > 0)
        PU_TRY(pu_pair_set_load(lo, eval, n_eval, "eval", &p->eval));
    return PU_OK;
}

void pu_pairs_job(const pu_pairs *p, const pu_train_opts *t, pu_train_job *job, pu_train_opts *to) {
    job->items = "pairs";
    job->n_items = p->train.n_pairs;
    job->tok_hash = pu_pair_set_hash(&p->train);
    job->eval_at_start = true;
    job->rows_per_unit = 2;
    job->Tmax = pu_pairs_max_len(p);
    *to = *t;
    to->batch = 2 * t->batch; /* rows */
    if (!p->eval.n_pairs) {
        job->eval_n = NULL;
        job->eval_batch = NULL;
    } else if (to->eval_every <= 0) {
        to->eval_every = to->steps; /* before the first and after the last step */
    }
}

void pu_pair_metrics_add(pu_pair_metrics *pm, double accuracy, double margin, double chosen,
                         double rejected, int64_t n) {
    pm->acc += accuracy * (double)n;
    pm->margin += margin * (double)n;
    pm->chosen += chosen * (double)n;
    pm->rejected += rejected * (double)n;
    pm->n += n;
}

void pu_pair_metrics_take(pu_pair_metrics *pm, bool eval, bool margin, char *buf, size_t cap) {
    double d = pm->n ? (double)pm->n : 1;
    const char *p = eval ? "val_" : "";
    char mg[64] = "";
    if (margin)
        snprintf(mg, sizeof mg, ", \"%smargin\": %.9g", p, pm->margin / d);
    snprintf(buf, cap,
             ", \"%saccuracy\": %.9g%s, \"%sreward_chosen\": %.9g, \"%sreward_rejected\": %.9g", p,
             pm->acc / d, mg, p, pm->chosen / d, p, pm->rejected / d);
    memset(pm, 0, sizeof *pm);
}
