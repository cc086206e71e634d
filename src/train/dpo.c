/*
 * dpo.c — preference optimisation (puyu dpo): DPO (sigmoid), SimPO and ORPO
 * as a job of pu_train_loop (run.c: optimizer, schedule, accumulation,
 * checkpoints, resume, eval, metrics).
 *
 * A step of N pairs is 2N rows (2i chosen, 2i+1 rejected), each side
 * tokenized exactly as `puyu sft` tokenizes a conversation (pu_pref_tokenize:
 * the prompt turns + the response as the final assistant turn; the response
 * content + <|im_end|> are the scored tokens), targets = the next token's
 * label. logp(response) = the sum of the scored tokens' log-probabilities
 * (pu_tmodel_token_logps). DPO: the reference is a forward_only tmodel —
 * over the same pu_model as the policy (no second copy: borrowed views of
 * the one mapping; with --lora it is that base without the adapter) or over
 * --ref REF (same shapes required). loss = mean over pairs of
 * −logσ(β((πc − πr) − (rc − rr))) (pu_dpo_loss); SimPO / ORPO use no
 * reference (pu_simpo_loss, pu_orpo_loss; ORPO adds the chosen responses'
 * mean per-token NLL, averaged over pairs). The gradient goes back through
 * the LM head as dLoss/dlogp per scored token (pu_tmodel_backward_logp).
 */
#include <math.h>
#include <string.h>

#include "puyu/pu_align.h"
#include "puyu/pu_dp.h"
#include "train/train_impl.h"

void pu_dpo_train_opts_default(pu_dpo_train_opts *o) {
    memset(o, 0, sizeof *o);
    pu_train_opts_default(&o->train);
    o->train.batch = 4;
    o->train.seq = 0;
    o->train.lr = 5e-7;
    o->train.adam.weight_decay = 0.0;
    o->shuffle = true;
    o->beta = 0.1;
    o->simpo_gamma = 0.5;
    o->orpo_lambda = 0.1;
    o->lora_r = 8;
    o->lora_alpha = 16;
    o->lora_dropout = 0.05;
    o->lora_targets = PU_LORA_DEFAULT_TARGETS;
}

typedef struct {
    int32_t *ids, *tg; /* tg[t] = label of t+1 */
    int64_t n;
} dpo_seq;

typedef struct {
    dpo_seq *seq; /* 2 per pair */
    int64_t n_pairs, n_skipped;
} dpo_set;

typedef struct dpo_job {
    const pu_dpo_train_opts *o;
    pu_train_job *job;
    pu_model *base, *refm;
    pu_tok *tok;
    pu_tmodel *ref;
    int64_t seq;
    dpo_set train, eval;
    pu_epoch_order order;
    int64_t tok_step, tok_sum;
    float *dlogp;
    size_t dl_cap;
    double m_acc, m_margin, m_c, m_r;
    int64_t m_n;
} dpo_job;

static void set_free(dpo_set *s) {
    for (int64_t i = 0; i < 2 * s->n_pairs; i++) {
        pu_free(s->seq[i].ids);
        pu_free(s->seq[i].tg);
    }
    pu_free(s->seq);
    memset(s, 0, sizeof *s);
}

static pu_status load_set(dpo_job *j, const char *const *paths, int n, dpo_set *out,
                          const char *what) {
    const pu_dpo_train_opts *o = j->o;
    pu_pref_conditions *conds = NULL;
    PU_TRY(pu_pref_conditions_default(&conds));
    pu_pref_load_opts lo = {.parse = {.conditions = conds, .default_condition = o->condition},
                            .skip_bad = o->skip_bad};
    pu_pref_data *d = NULL;
    pu_status s = pu_pref_data_load(paths, n, &lo, &d);
    if (s != PU_OK) {
        pu_pref_conditions_destroy(conds);
        return s;
    }
    int64_t np = pu_pref_data_n(d);
    out->seq = pu_calloc((size_t)(2 * np + 1), sizeof *out->seq);
    out->n_skipped = pu_pref_data_n_skipped(d);
    for (int64_t i = 0; i < np && s == PU_OK; i++) {
        pu_pref_tokens pt;
        memset(&pt, 0, sizeof pt);
        s = pu_pref_tokenize(j->tok, pu_pref_data_get(d, i), &pt);
        if (s != PU_OK) {
            pu_err_prefix(s, "%s: ", pu_pref_data_where(d, i));
            break;
        }
        const pu_sft_tokens *side[2] = {&pt.chosen, &pt.rejected};
        const char *why = NULL;
        for (int k = 0; k < 2 && !why; k++)
            if (side[k]->n > j->seq)
                why = k ? "rejected: longer than --seq" : "chosen: longer than --seq";
        if (!why && pt.chosen.n == pt.rejected.n &&
            !memcmp(pt.chosen.ids, pt.rejected.ids, (size_t)pt.chosen.n * sizeof(int32_t)))
            why = "chosen and rejected tokenize identically";
        for (int k = 0; k < 2 && !why; k++) {
            int64_t c = 0;
            for (int64_t t = 1; t < side[k]->n; t++)
                c += side[k]->labels[t] >= 0;
            if (!c)
                why = k ? "rejected: empty response" : "chosen: empty response";
        }
        if (why) {
            if (o->skip_bad)
                out->n_skipped++;
            else
                s = pu_err_set(PU_ERR_INVALID, "%s: %s (%lld / %lld tokens, --seq %lld)",
                               pu_pref_data_where(d, i), why, (long long)pt.chosen.n,
                               (long long)pt.rejected.n, (long long)j->seq);
            pu_pref_tokens_free(&pt);
            continue;
        }
        for (int k = 0; k < 2; k++) {
            dpo_seq *q = &out->seq[2 * out->n_pairs + k];
            q->n = side[k]->n;
            q->ids = pu_malloc((size_t)q->n * sizeof(int32_t));
            q->tg = pu_malloc((size_t)q->n * sizeof(int32_t));
            memcpy(q->ids, side[k]->ids, (size_t)q->n * sizeof(int32_t));
            for (int64_t t = 0; t < q->n; t++)
                q->tg[t] = t + 1 < q->n ? side[k]->labels[t + 1] : PU_IGNORE_INDEX;
        }
        out->n_pairs++;
        pu_pref_tokens_free(&pt);
    }
    pu_pref_data_destroy(d);
    pu_pref_conditions_destroy(conds);
    if (s == PU_OK && out->n_pairs == 0)
        s = pu_err_set(PU_ERR_INVALID, "dpo: %s: no usable pairs", what);
    if (s == PU_OK && !o->train.quiet)
        pu_log_info("dpo: %s: %lld pairs (%lld skipped)", what, (long long)out->n_pairs,
                    (long long)out->n_skipped);
    return s;
}

/* pair index of slot i (= s*N + k) of the training order */
static int64_t pair_at(dpo_job *j, int64_t i) {
    return pu_epoch_order_at(&j->order, j->train.n_pairs, j->o->shuffle, j->o->train.seed, i);
}

static int64_t set_max_len(const dpo_set *s) {
    int64_t T = 1;
    for (int64_t i = 0; i < 2 * s->n_pairs; i++)
        T = s->seq[i].n > T ? s->seq[i].n : T;
    return T;
}

static void fill_rows(const dpo_set *set, const int64_t *pairs, int64_t np, int32_t *ids,
                      int32_t *tg, int64_t *T) {
    int64_t t = 1;
    for (int64_t p = 0; p < 2 * np; p++) {
        int64_t n = set->seq[2 * pairs[p / 2] + p % 2].n;
        t = n > t ? n : t;
    }
    for (int64_t row = 0; row < 2 * np; row++) {
        const dpo_seq *q = &set->seq[2 * pairs[row / 2] + row % 2];
        for (int64_t x = 0; x < t; x++) {
            ids[row * t + x] = x < q->n ? q->ids[x] : 0;
            tg[row * t + x] = x < q->n ? q->tg[x] : PU_IGNORE_INDEX;
        }
    }
    *T = t;
}

static pu_status dpo_batch(void *ctx, pu_rng *rng, int64_t s, int64_t B, int32_t *ids, int32_t *tg,
                           int32_t *pos, int32_t *seg, int64_t *T, bool *packed) {
    dpo_job *j = ctx;
    int64_t np = B / 2;
    int64_t *pairs = pu_malloc((size_t)np * sizeof(int64_t));
    for (int64_t k = 0; k < np; k++)
        pairs[k] = pair_at(j, s * np + k);
    fill_rows(&j->train, pairs, np, ids, tg, T);
    pu_free(pairs);
    *packed = false;
    return PU_OK;
}

static int64_t dpo_tokens_upto(void *ctx, int64_t step) {
    dpo_job *j = ctx;
    if (step < j->tok_step) {
        j->tok_step = 0;
        j->tok_sum = 0;
    }
    int64_t np = j->o->train.batch;
    for (; j->tok_step < step; j->tok_step++)
        for (int64_t k = 0; k < np; k++) {
            int64_t p = pair_at(j, j->tok_step * np + k);
            j->tok_sum += j->train.seq[2 * p].n + j->train.seq[2 * p + 1].n;
        }
    return j->tok_sum;
}

static int64_t dpo_eval_n(void *ctx) {
    dpo_job *j = ctx;
    int64_t mbp = j->o->train.batch / j->o->train.grad_accum;
    return (j->eval.n_pairs + mbp - 1) / mbp;
}

static pu_status dpo_eval_batch(void *ctx, int64_t k, int64_t mb, int64_t T_step, int32_t *ids,
                                int32_t *tg, int32_t *pos, int32_t *seg, int64_t *rows, int64_t *T,
                                bool *packed) {
    dpo_job *j = ctx;
    int64_t mbp = mb / 2, first = k * mbp;
    int64_t np = j->eval.n_pairs - first < mbp ? j->eval.n_pairs - first : mbp;
    int64_t *pairs = pu_malloc((size_t)(np > 0 ? np : 1) * sizeof(int64_t));
    for (int64_t p = 0; p < np; p++)
        pairs[p] = first + p;
    fill_rows(&j->eval, pairs, np, ids, tg, T);
    pu_free(pairs);
    *rows = 2 * np;
    *packed = false;
    return PU_OK;
}

/* per-row sums of the scored tokens' logps, and their counts */
static void row_sums(const float *lp, const int32_t *tg, int64_t R, int64_t T, float *sum,
                     int64_t *cnt) {
    for (int64_t r = 0; r < R; r++) {
        double s = 0;
        int64_t c = 0;
        for (int64_t t = 0; t < T; t++)
            if (tg[r * T + t] >= 0) {
                s += lp[r * T + t];
                c++;
            }
        sum[r] = (float)s;
        cnt[r] = c;
    }
}

static pu_status dpo_micro(void *ctx, pu_tmodel *m, pu_pool *pool, const pu_tbatch *bt,
                           int64_t first, bool eval, float grad_scale, double *loss_sum,
                           int64_t *count) {
    dpo_job *j = ctx;
    const pu_dpo_train_opts *o = j->o;
    int64_t R = bt->B, T = bt->T, n = R / 2;
    if (R % 2)
        return pu_err_set(PU_ERR_INVALID, "dpo: a micro-batch of %lld rows", (long long)R);
    double l;
    int64_t c;
    float *buf = pu_malloc((size_t)(8 * n) * sizeof(float));
    float *pc = buf, *pr = pc + n, *rc = pr + n, *rr = rc + n, *dc = rr + n, *dr = dc + n;
    float *rows = dr + n; /* (2n) */
    int64_t *cnt = pu_malloc((size_t)R * sizeof(int64_t)), *nc = NULL, *nr = NULL;
    pu_status s = PU_OK;
    if (o->kind == PU_DPO_SIGMOID) {
        s = pu_tmodel_forward(j->ref, pool, bt, &l, &c);
        if (s == PU_OK) {
            row_sums(pu_tmodel_token_logps(j->ref), bt->targets, R, T, rows, cnt);
            for (int64_t i = 0; i < n; i++)
                rc[i] = rows[2 * i], rr[i] = rows[2 * i + 1];
        }
    }
    if (s == PU_OK)
        s = pu_tmodel_forward(m, pool, bt, &l, &c);
    pu_pref_metrics met;
    memset(&met, 0, sizeof met);
    double extra = 0;
    if (s == PU_OK) {
        row_sums(pu_tmodel_token_logps(m), bt->targets, R, T, rows, cnt);
        nc = pu_malloc((size_t)(2 * n) * sizeof(int64_t));
        nr = nc + n;
        for (int64_t i = 0; i < n; i++) {
            pc[i] = rows[2 * i], pr[i] = rows[2 * i + 1];
            nc[i] = cnt[2 * i], nr[i] = cnt[2 * i + 1];
        }
        if (o->kind == PU_DPO_SIGMOID) {
            pu_dpo_opts d = pu_dpo_default_opts();
            d.beta = o->beta;
            d.label_smoothing = o->label_smoothing;
            s = pu_dpo_loss(pc, pr, rc, rr, n, &d, &met, dc, dr);
        } else if (o->kind == PU_DPO_SIMPO) {
            s = pu_simpo_loss(pc, pr, nc, nr, n, o->beta, o->simpo_gamma, &met, dc, dr);
        } else {
            s = pu_orpo_loss(pc, pr, nc, nr, n, o->orpo_lambda, &met, dc, dr);
            for (int64_t i = 0; s == PU_OK && i < n; i++) { /* + mean_i(-pc_i / nc_i) */
                extra += -(double)pc[i] / (double)nc[i] / (double)n;
                dc[i] += -1.0f / ((float)nc[i] * (float)n);
            }
        }
    }
    if (s == PU_OK && !isfinite(met.loss + extra))
        s = pu_err_set(PU_ERR_INVALID, "dpo: the loss is %g", met.loss + extra);
    if (s == PU_OK && !eval) {
        size_t need = (size_t)(R * T);
        if (j->dl_cap < need) {
            pu_free(j->dlogp);
            j->dlogp = pu_malloc(need * sizeof(float));
            j->dl_cap = need;
        }
        for (int64_t r = 0; r < R; r++) {
            float d = grad_scale * (float)n * (r % 2 ? dr : dc)[r / 2];
            for (int64_t t = 0; t < T; t++)
                j->dlogp[r * T + t] = bt->targets[r * T + t] >= 0 ? d : 0.0f;
        }
        pu_tmodel_backward_logp(m, pool, j->dlogp, NULL);
    }
    if (s == PU_OK) {
        *loss_sum = (met.loss + extra) * (double)n;
        *count = n;
        j->m_acc += met.accuracy * (double)n;
        j->m_margin += met.margin * (double)n;
        j->m_c += met.chosen * (double)n;
        j->m_r += met.rejected * (double)n;
        j->m_n += n;
    }
    (void)first;
    pu_free(nc);
    pu_free(cnt);
    pu_free(buf);
    return s;
}

static void dpo_metrics(void *ctx, bool eval, char *buf, size_t n) {
    dpo_job *j = ctx;
    double d = j->m_n ? (double)j->m_n : 1;
    const char *p = eval ? "val_" : "";
    snprintf(buf, n,
             ", \"%saccuracy\": %.9g, \"%smargin\": %.9g, \"%sreward_chosen\": %.9g, "
             "\"%sreward_rejected\": %.9g",
             p, j->m_acc / d, p, j->m_margin / d, p, j->m_c / d, p, j->m_r / d);
    j->m_acc = j->m_margin = j->m_c = j->m_r = 0;
    j->m_n = 0;
}

static pu_status dpo_make_model(void *ctx, const char *ckpt_dir, int64_t B, int64_t Tmax,
                                pu_tmodel **m, char **tok_path) {
    dpo_job *j = ctx;
    const pu_dpo_train_opts *o = j->o;
    pu_tmodel_opts to;
    pu_tmodel_opts_default(&to);
    to.recompute = o->recompute;
    if (o->lora) {
        to.freeze_base = true;
        to.lora_r = o->lora_r;
        to.lora_alpha = o->lora_alpha;
        to.lora_dropout = o->lora_dropout;
        to.lora_rslora = o->lora_rslora;
        to.lora_targets = o->lora_targets;
        to.seed = o->train.seed;
        to.base_name = o->policy_dir;
    }
    PU_TRY(pu_tmodel_create_from(j->base, B, Tmax, &to, m));
    if (o->kind == PU_DPO_SIGMOID && !j->ref) {
        pu_tmodel_opts ro;
        pu_tmodel_opts_default(&ro);
        ro.freeze_base = true; /* borrowed views of the mapping: no second copy */
        ro.forward_only = true;
        pu_status s = pu_tmodel_create_from(j->refm ? j->refm : j->base, B, Tmax, &ro, &j->ref);
        if (s != PU_OK)
            return pu_err_prefix(s, "dpo: the reference model: ");
    }
    const char *tp = o->tok_path ? o->tok_path : pu_model_tokenizer_path(j->base);
    if (tp && !pu_dir_exists(tp))
        *tok_path = pu_strdup(tp);
    (void)ckpt_dir;
    return PU_OK;
}

static pu_status dpo_done(void *ctx, pu_tmodel *m) {
    dpo_job *j = ctx;
    const char *out = j->o->train.out_dir;
    char *dir = pu_path_join(out, "final"), *tmp = pu_path_join(out, ".tmp_final");
    pu_train_rm_flat_dir(tmp);
    pu_status s = pu_tmodel_save_dir(m, tmp);
    const char *tp = j->o->tok_path ? j->o->tok_path : pu_model_tokenizer_path(j->base);
    if (s == PU_OK && tp && !pu_dir_exists(tp)) {
        const char *ext = strrchr(tp, '.');
        char *dst =
            pu_path_join(tmp, ext && !strcmp(ext, ".json") ? "tokenizer.json" : "tokenizer.model");
        s = pu_train_copy_file(tp, dst);
        pu_free(dst);
    }
    if (s == PU_OK) {
        pu_train_rm_flat_dir(dir);
        if (rename(tmp, dir) != 0)
            s = pu_err_set(PU_ERR_IO, "%s: cannot rename the final model into place", dir);
    }
    if (s != PU_OK) {
        pu_train_rm_flat_dir(tmp);
        pu_err_prefix(s, "writing %s: ", dir);
    } else if (!j->o->train.quiet) {
        pu_log_info("dpo: final model in %s", dir);
    }
    pu_free(dir);
    pu_free(tmp);
    return s;
}

static uint64_t set_hash(const dpo_set *s) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < 2 * s->n_pairs; i++) {
        h = (h ^ pu_hash64(s->seq[i].ids, (size_t)s->seq[i].n * sizeof(int32_t))) *
            0x100000001B3ull;
        h = (h ^ pu_hash64(s->seq[i].tg, (size_t)s->seq[i].n * sizeof(int32_t))) * 0x100000001B3ull;
    }
    return h;
}

static pu_status same_shape(const pu_config *a, const pu_config *b, const char *ref) {
    if (a->vocab_size != b->vocab_size || a->hidden_size != b->hidden_size ||
        a->num_hidden_layers != b->num_hidden_layers ||
        a->num_attention_heads != b->num_attention_heads ||
        a->num_key_value_heads != b->num_key_value_heads ||
        a->intermediate_size != b->intermediate_size)
        return pu_err_set(PU_ERR_INVALID,
                          "dpo: --ref %s has another shape than the policy (vocab %lld/%lld, "
                          "hidden %lld/%lld, layers %lld/%lld, heads %lld/%lld, kv heads "
                          "%lld/%lld, ffn %lld/%lld)",
                          ref, (long long)b->vocab_size, (long long)a->vocab_size,
                          (long long)b->hidden_size, (long long)a->hidden_size,
                          (long long)b->num_hidden_layers, (long long)a->num_hidden_layers,
                          (long long)b->num_attention_heads, (long long)a->num_attention_heads,
                          (long long)b->num_key_value_heads, (long long)a->num_key_value_heads,
                          (long long)b->intermediate_size, (long long)a->intermediate_size);
    return PU_OK;
}

pu_status pu_dpo_train_run(const pu_dpo_train_opts *o, pu_pool *pool) {
    const pu_train_opts *t = &o->train;
    if (!o->policy_dir || !t->out_dir || !o->data || o->n_data <= 0)
        return pu_err_set(PU_ERR_INVALID, "dpo: -m POLICY, --data FILE and --out DIR are required");
    if (t->grad_accum <= 0 || t->batch % t->grad_accum)
        return pu_err_set(PU_ERR_INVALID,
                          "dpo: --batch %lld (pairs) must be divisible by --grad-accum %lld",
                          (long long)t->batch, (long long)t->grad_accum);
    if (!(o->beta > 0))
        return pu_err_set(PU_ERR_INVALID, "dpo: --beta must be positive");
    if (pu_dp_size() > 1)
        return pu_err_set(PU_ERR_INVALID, "dpo: data parallel is not supported (run one process)");
    dpo_job j;
    memset(&j, 0, sizeof j);
    j.o = o;
    pu_status s = pu_model_load(o->policy_dir, &j.base);
    if (s == PU_OK) {
        const pu_config *c = pu_model_config(j.base);
        j.seq = t->seq > 0                       ? t->seq
                : c->max_position_embeddings > 0 ? c->max_position_embeddings
                                                 : 4096;
        if (c->max_position_embeddings > 0 && j.seq > c->max_position_embeddings)
            s = pu_err_set(PU_ERR_INVALID,
                           "dpo: --seq %lld exceeds the model's context (%s/config.json: "
                           "max_position_embeddings %lld)",
                           (long long)j.seq, o->policy_dir, (long long)c->max_position_embeddings);
    }
    if (s == PU_OK && o->ref_dir && o->kind == PU_DPO_SIGMOID) {
        s = pu_model_load(o->ref_dir, &j.refm);
        if (s == PU_OK)
            s = same_shape(pu_model_config(j.base), pu_model_config(j.refm), o->ref_dir);
    }
    const char *tp = NULL;
    if (s == PU_OK) {
        tp = o->tok_path ? o->tok_path : pu_model_tokenizer_path(j.base);
        if (!tp)
            s = pu_err_set(PU_ERR_INVALID, "dpo: %s: no tokenizer beside the model: pass -t",
                           o->policy_dir);
    }
    if (s == PU_OK)
        s = pu_tok_load(tp, &j.tok);
    if (s == PU_OK)
        s = load_set(&j, o->data, o->n_data, &j.train, "train");
    if (s == PU_OK && o->eval_data && o->n_eval > 0)
        s = load_set(&j, o->eval_data, o->n_eval, &j.eval, "eval");
    if (s == PU_OK) {
        pu_train_job job = {.ctx = &j,
                            .label = "dpo",
                            .items = "pairs",
                            .n_items = j.train.n_pairs,
                            .make_model = dpo_make_model,
                            .batch = dpo_batch,
                            .tokens_upto = dpo_tokens_upto,
                            .tok_hash = set_hash(&j.train),
                            .eval_at_start = true,
                            .micro = dpo_micro,
                            .rows_per_unit = 2,
                            .metrics = dpo_metrics,
                            .done = dpo_done};
        int64_t Tmax = set_max_len(&j.train);
        if (j.eval.n_pairs && set_max_len(&j.eval) > Tmax)
            Tmax = set_max_len(&j.eval);
        job.Tmax = Tmax;
        pu_train_opts to = *t;
        to.batch = 2 * t->batch;
        if (j.eval.n_pairs) {
            job.eval_n = dpo_eval_n;
            job.eval_batch = dpo_eval_batch;
            if (to.eval_every <= 0)
                to.eval_every = to.steps;
        }
        j.job = &job;
        s = pu_train_loop(&to, &job, pool);
    }
    set_free(&j.train);
    set_free(&j.eval);
    pu_epoch_order_free(&j.order);
    pu_free(j.dlogp);
    pu_tmodel_destroy(j.ref);
    pu_tok_destroy(j.tok);
    pu_model_destroy(j.refm);
    pu_model_destroy(j.base);
    return s;
}
