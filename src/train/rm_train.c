/*
 * rm_train.c — reward-model training (puyu rm train): the pair batch source,
 * the value head and the RM loss of pu_train_loop (run.c), which owns the
 * optimizer, schedule, accumulation, checkpoints, resume, eval and metrics.
 *
 * A step of N pairs is a batch of 2N rows: row 2i the chosen side of pair i,
 * row 2i+1 its rejected side, each tokenized as `puyu rm score` does
 * (pu_rm_tokenize: chat template, one encode with BOS, the reward token
 * appended), right-padded to the longest row. The reward of a row is
 * v_head . hidden[last token] (pu_tmodel_hidden: the final-norm output; the
 * padding after it cannot change it under causal attention). The loss is
 * pu_rm_loss over the step's N pairs (focal / ranking + W * penalty, XTuner's
 * InternLM2 loss); its gradient enters the model as dhidden at the reward
 * positions (pu_tmodel_backward_logp) and the head as dv. v_head is an
 * extra parameter of the loop (AdamW with weight decay, in the global norm,
 * in every checkpoint's train_state: resumable bit-exactly).
 *
 * Data order: pair k of step s is pair (s*N + k) mod n in file order
 * (--no-shuffle) or of a per-epoch seeded permutation: a function of the
 * step alone. OUT/final/ = an InternLM2ForRewardModel directory
 * (pu_model_write_reward_dir): the trained body F32, or with --lora the
 * base with the adapter merged (pu_lora_merge, F32), + v_head.
 */
#include <math.h>
#include <string.h>

#include "puyu/pu_align.h"
#include "puyu/pu_dp.h"
#include "train/train_impl.h"

void pu_rm_train_opts_default(pu_rm_train_opts *o) {
    memset(o, 0, sizeof *o);
    pu_train_opts_default(&o->train);
    o->train.batch = 4;
    o->train.seq = 0; /* the model's context */
    o->train.lr = 1e-5;
    o->train.adam.weight_decay = 0.0;
    o->shuffle = true;
    o->loss = pu_rm_loss_default_opts();
    o->reward_token = -1;
    o->lora_r = 8;
    o->lora_alpha = 16;
    o->lora_dropout = 0.05;
    o->lora_targets = PU_LORA_DEFAULT_TARGETS;
}

typedef struct {
    int32_t *ids;
    int64_t n;
} rm_seq;

typedef struct rm_set {
    rm_seq *seq; /* 2 per pair: chosen, rejected */
    int64_t n_pairs, n_skipped;
} rm_set;

typedef struct rm_job {
    const pu_rm_train_opts *o;
    pu_train_job *job;
    pu_model *base;
    pu_tok *tok;
    int32_t reward_token;
    int64_t seq; /* longest side */
    rm_set train, eval;
    int64_t *lens, *elens; /* rows of the current step / eval batch */
    pu_epoch_order order;
    float *v, *dv; /* the head (C) and its gradient */
    float *dh;     /* (rows * T * C) scratch */
    size_t dh_cap;
    float *r, *dr; /* per row rewards / d loss / d reward */
    /* metrics accumulated since the last report */
    double m_loss, m_acc, m_c, m_r;
    int64_t m_n;
    int64_t tok_step, tok_sum;
    int64_t *blen; /* T of each step, cached for tokens_upto */
} rm_job;

static void set_free(rm_set *s) {
    for (int64_t i = 0; i < 2 * s->n_pairs; i++)
        pu_free(s->seq[i].ids);
    pu_free(s->seq);
    memset(s, 0, sizeof *s);
}

/* the preference files -> tokenized sides; pairs longer than seq: error or
 * (--skip-bad) counted skips */
static pu_status load_set(rm_job *j, const char *const *paths, int n, rm_set *out,
                          const char *what) {
    const pu_rm_train_opts *o = j->o;
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
        const pu_pref_record *rec = pu_pref_data_get(d, i);
        rm_seq side[2] = {{0}};
        bool bad = false;
        for (int k = 0; k < 2 && s == PU_OK; k++) {
            pu_sft_record conv = {0};
            s = pu_pref_conversation(rec, k, &conv);
            if (s == PU_OK)
                s = pu_rm_tokenize(j->tok, &conv.msgs, j->reward_token, &side[k].ids, &side[k].n);
            pu_sft_record_free(&conv);
            if (s == PU_OK && side[k].n > j->seq) {
                if (o->skip_bad) {
                    bad = true;
                } else {
                    s = pu_err_set(PU_ERR_INVALID,
                                   "%s: %s: %lld tokens (reward token included) exceed --seq "
                                   "%lld (the longest side trained)",
                                   pu_pref_data_where(d, i), k ? "rejected" : "chosen",
                                   (long long)side[k].n, (long long)j->seq);
                }
            }
        }
        if (s == PU_OK && !bad && side[0].n == side[1].n &&
            !memcmp(side[0].ids, side[1].ids, (size_t)side[0].n * sizeof(int32_t))) {
            if (o->skip_bad)
                bad = true;
            else
                s = pu_err_set(PU_ERR_INVALID, "%s: chosen and rejected tokenize identically",
                               pu_pref_data_where(d, i));
        }
        if (s != PU_OK || bad) {
            pu_free(side[0].ids);
            pu_free(side[1].ids);
            if (bad)
                out->n_skipped++;
            continue;
        }
        out->seq[2 * out->n_pairs] = side[0];
        out->seq[2 * out->n_pairs + 1] = side[1];
        out->n_pairs++;
    }
    pu_pref_data_destroy(d);
    pu_pref_conditions_destroy(conds);
    if (s == PU_OK && out->n_pairs == 0)
        s = pu_err_set(PU_ERR_INVALID, "rm train: %s: no usable pairs", what);
    if (s == PU_OK && !o->train.quiet)
        pu_log_info("rm train: %s: %lld pairs (%lld skipped)", what, (long long)out->n_pairs,
                    (long long)out->n_skipped);
    return s;
}

/* pair index of slot i (= s*N + k) of the training order */
static int64_t pair_at(rm_job *j, int64_t i) {
    return pu_epoch_order_at(&j->order, j->train.n_pairs, j->o->shuffle, j->o->train.seed, i);
}

static int64_t set_max_len(const rm_set *s) {
    int64_t T = 1;
    for (int64_t i = 0; i < 2 * s->n_pairs; i++)
        T = s->seq[i].n > T ? s->seq[i].n : T;
    return T;
}

/* rows (2 per pair) of the given pairs into ids / tg, right-padded */
static void fill_rows(const rm_set *set, const int64_t *pairs, int64_t np, int32_t *ids,
                      int32_t *tg, int64_t *lens, int64_t *T) {
    int64_t t = 1;
    for (int64_t p = 0; p < np; p++)
        for (int k = 0; k < 2; k++) {
            int64_t n = set->seq[2 * pairs[p] + k].n;
            t = n > t ? n : t;
        }
    for (int64_t p = 0; p < np; p++)
        for (int k = 0; k < 2; k++) {
            const rm_seq *q = &set->seq[2 * pairs[p] + k];
            int64_t row = 2 * p + k;
            for (int64_t x = 0; x < t; x++) {
                ids[row * t + x] = x < q->n ? q->ids[x] : 0;
                tg[row * t + x] = PU_IGNORE_INDEX;
            }
            lens[row] = q->n;
        }
    *T = t;
}

static pu_status rm_batch(void *ctx, pu_rng *rng, int64_t s, int64_t B, int32_t *ids, int32_t *tg,
                          int32_t *pos, int32_t *seg, int64_t *T, bool *packed) {
    (void)rng, (void)pos, (void)seg;
    rm_job *j = ctx;
    int64_t np = B / 2;
    int64_t *pairs = pu_malloc((size_t)np * sizeof(int64_t));
    for (int64_t k = 0; k < np; k++)
        pairs[k] = pair_at(j, s * np + k);
    fill_rows(&j->train, pairs, np, ids, tg, j->lens, T);
    pu_free(pairs);
    *packed = false;
    return PU_OK;
}

static int64_t rm_tokens_upto(void *ctx, int64_t step) {
    rm_job *j = ctx;
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

static int64_t rm_eval_n(void *ctx) {
    rm_job *j = ctx;
    int64_t mb = j->o->train.batch / j->o->train.grad_accum;
    return (j->eval.n_pairs + mb - 1) / mb;
}

/* eval batch k: pairs k*mbp .. of the eval set (mb = rows) */
static pu_status rm_eval_batch(void *ctx, int64_t k, int64_t mb, int64_t T_step, int32_t *ids,
                               int32_t *tg, int32_t *pos, int32_t *seg, int64_t *rows, int64_t *T,
                               bool *packed) {
    (void)T_step, (void)pos, (void)seg;
    rm_job *j = ctx;
    int64_t mbp = mb / 2, first = k * mbp,
            np = j->eval.n_pairs - first < mbp ? j->eval.n_pairs - first : mbp;
    int64_t *pairs = pu_malloc((size_t)(np > 0 ? np : 1) * sizeof(int64_t));
    for (int64_t p = 0; p < np; p++)
        pairs[p] = first + p;
    fill_rows(&j->eval, pairs, np, ids, tg, j->elens, T);
    pu_free(pairs);
    *rows = 2 * np;
    *packed = false;
    return PU_OK;
}

pu_status pu_rm_pairs_step(pu_tmodel *m, pu_pool *pool, const pu_tbatch *bt, const int64_t *lens,
                           const float *v, float *dv, const pu_rm_loss_opts *lo, float grad_scale,
                           bool backward, pu_rm_metrics *met, float *rewards, float **dh_buf,
                           size_t *dh_cap) {
    int64_t R = bt->B, T = bt->T, C = pu_tmodel_config(m)->hidden_size, n = R / 2;
    if (R % 2 || R < 2)
        return pu_err_set(PU_ERR_INVALID,
                          "rm: a micro-batch of %lld rows does not hold whole pairs", (long long)R);
    double l;
    int64_t c;
    PU_TRY(pu_tmodel_forward(m, pool, bt, &l, &c));
    const float *h = pu_tmodel_hidden(m);
    float *rc = pu_malloc((size_t)(4 * n) * sizeof(float)), *rr = rc + n, *dc = rr + n,
          *drj = dc + n;
    for (int64_t i = 0; i < R; i++) {
        if (lens[i] < 1 || lens[i] > T)
            return pu_err_set(PU_ERR_INVALID, "rm: row %lld: length %lld", (long long)i,
                              (long long)lens[i]);
        float r;
        pu_value_head_fwd(v, h + (i * T + lens[i] - 1) * C, 1, C, &r);
        (i % 2 ? rr : rc)[i / 2] = r;
        if (rewards)
            rewards[i] = r;
    }
    pu_status s = pu_rm_loss(rc, rr, n, lo, met, dc, drj);
    if (s == PU_OK && backward) {
        size_t need = (size_t)(R * T * C);
        if (*dh_cap < need) {
            pu_free(*dh_buf);
            *dh_buf = pu_malloc(need * sizeof(float));
            *dh_cap = need;
        }
        float *dh = *dh_buf;
        memset(dh, 0, need * sizeof(float));
        for (int64_t i = 0; i < R; i++) {
            /* d(grad_scale * n * mean loss) / d reward of row i */
            float d = grad_scale * (float)n * (i % 2 ? drj : dc)[i / 2];
            const float *hi = h + (i * T + lens[i] - 1) * C;
            pu_value_head_bwd(v, hi, &d, 1, C, dv, dh + (i * T + lens[i] - 1) * C);
        }
        pu_tmodel_backward_logp(m, pool, NULL, dh);
    }
    pu_free(rc);
    return s;
}

static pu_status rm_micro(void *ctx, pu_tmodel *m, pu_pool *pool, const pu_tbatch *bt,
                          int64_t first, bool eval, float grad_scale, double *loss_sum,
                          int64_t *count) {
    rm_job *j = ctx;
    pu_rm_metrics met;
    PU_TRY(pu_rm_pairs_step(m, pool, bt, (eval ? j->elens : j->lens) + first, j->v, j->dv,
                            &j->o->loss, grad_scale, !eval, &met, NULL, &j->dh, &j->dh_cap));
    int64_t n = bt->B / 2;
    *loss_sum = met.loss * (double)n;
    *count = n;
    j->m_loss += met.loss * (double)n;
    j->m_acc += met.accuracy * (double)n;
    j->m_c += met.chosen * (double)n;
    j->m_r += met.rejected * (double)n;
    j->m_n += n;
    return PU_OK;
}

static void rm_metrics(void *ctx, bool eval, char *buf, size_t n) {
    rm_job *j = ctx;
    double d = j->m_n ? (double)j->m_n : 1;
    snprintf(buf, n,
             ", \"%saccuracy\": %.9g, \"%sreward_chosen\": %.9g, \"%sreward_rejected\": %.9g",
             eval ? "val_" : "", j->m_acc / d, eval ? "val_" : "", j->m_c / d, eval ? "val_" : "",
             j->m_r / d);
    j->m_loss = j->m_acc = j->m_c = j->m_r = 0;
    j->m_n = 0;
}

static pu_status rm_make_model(void *ctx, const char *ckpt_dir, int64_t B, int64_t Tmax,
                               pu_tmodel **m, char **tok_path) {
    (void)ckpt_dir;
    rm_job *j = ctx;
    const pu_rm_train_opts *o = j->o;
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
        to.base_name = o->base_dir;
    }
    PU_TRY(pu_tmodel_create_from(j->base, B, Tmax, &to, m));
    int64_t C = pu_model_config(j->base)->hidden_size;
    j->v = pu_calloc((size_t)C, sizeof(float));
    j->dv = pu_calloc((size_t)C, sizeof(float));
    if (o->head_normal) { /* N(0, 1/(C+1)), seeded */
        pu_rng g;
        pu_rng_seed(&g, o->train.seed ^ 0x7F4A7C159E3779B9ull);
        for (int64_t i = 0; i < C; i++)
            j->v[i] = (float)(pu_rng_normal(&g) / sqrt((double)C + 1.0));
    }
    j->job->xp = j->v;
    j->job->xg = j->dv;
    j->job->xn = C;
    const char *tp = pu_model_tokenizer_path(j->base);
    if (tp && !o->tok_path)
        *tok_path = pu_strdup(tp);
    return PU_OK;
}

static pu_status rm_done(void *ctx, pu_tmodel *m) {
    rm_job *j = ctx;
    const char *out = j->o->train.out_dir;
    char *dir = pu_path_join(out, "final"), *body = pu_path_join(out, ".tmp_final_body");
    pu_train_rm_flat_dir(body);
    pu_status s;
    if (j->o->lora) {
        pu_lora *l = NULL;
        s = pu_tmodel_lora_export(m, &l);
        float one = 1.0f;
        if (s == PU_OK)
            s = pu_lora_merge(j->base, (const pu_lora *const *)&l, &one, 1, PU_DTYPE_F32, body);
        pu_lora_destroy(l);
    } else {
        s = pu_tmodel_save_dir(m, body);
    }
    const char *tp = j->o->tok_path ? j->o->tok_path : pu_model_tokenizer_path(j->base);
    if (s == PU_OK && tp && !pu_dir_exists(tp)) {
        const char *ext = strrchr(tp, '.');
        char *dst =
            pu_path_join(body, ext && !strcmp(ext, ".json") ? "tokenizer.json" : "tokenizer.model");
        if (!pu_file_exists(dst))
            s = pu_train_copy_file(tp, dst);
        pu_free(dst);
    }
    if (s == PU_OK) {
        pu_train_rm_flat_dir(dir);
        s = pu_model_write_reward_dir(body, j->v, pu_model_config(j->base)->hidden_size,
                                      j->reward_token, dir);
    }
    pu_train_rm_flat_dir(body);
    if (s != PU_OK)
        pu_err_prefix(s, "writing %s: ", dir);
    else if (!j->o->train.quiet)
        pu_log_info("rm train: reward model in %s", dir);
    pu_free(dir);
    pu_free(body);
    return s;
}

static uint64_t set_hash(const rm_set *s) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < 2 * s->n_pairs; i++)
        h = (h ^ pu_hash64(s->seq[i].ids, (size_t)s->seq[i].n * sizeof(int32_t))) *
            0x100000001B3ull;
    return h;
}

pu_status pu_rm_train_run(const pu_rm_train_opts *o, pu_pool *pool) {
    const pu_train_opts *t = &o->train;
    if (!o->base_dir || !t->out_dir || !o->data || o->n_data <= 0)
        return pu_err_set(PU_ERR_INVALID, "rm train: -m BASE, --data FILE and --out DIR are "
                                          "required");
    if (t->grad_accum <= 0 || t->batch % t->grad_accum)
        return pu_err_set(PU_ERR_INVALID,
                          "rm train: --batch %lld (pairs) must be divisible by "
                          "--grad-accum %lld",
                          (long long)t->batch, (long long)t->grad_accum);
    if (pu_dp_size() > 1)
        return pu_err_set(PU_ERR_INVALID, "rm train: data parallel is not supported (run one "
                                          "process)");
    rm_job j;
    memset(&j, 0, sizeof j);
    j.o = o;
    pu_status s = pu_model_load(o->base_dir, &j.base);
    const char *tp = NULL;
    if (s == PU_OK) {
        const pu_config *c = pu_model_config(j.base);
        j.seq = t->seq > 0                       ? t->seq
                : c->max_position_embeddings > 0 ? c->max_position_embeddings
                                                 : 4096;
        if (c->max_position_embeddings > 0 && t->seq > c->max_position_embeddings)
            s = pu_err_set(PU_ERR_INVALID,
                           "rm train: --seq %lld exceeds the model's context (%s/config.json: "
                           "max_position_embeddings %lld)",
                           (long long)t->seq, o->base_dir, (long long)c->max_position_embeddings);
        int64_t rt = o->reward_token >= 0      ? o->reward_token
                     : c->reward_token_id >= 0 ? c->reward_token_id
                                               : PU_REWARD_TOKEN_INTERNLM2;
        j.reward_token = (int32_t)rt;
        if (s == PU_OK && rt >= c->vocab_size)
            s = pu_err_set(PU_ERR_RANGE,
                           "rm train: the reward token %lld is outside the model's vocabulary "
                           "(%lld): pass --reward-token ID",
                           (long long)rt, (long long)c->vocab_size);
    }
    if (s == PU_OK) {
        tp = o->tok_path ? o->tok_path : pu_model_tokenizer_path(j.base);
        if (!tp)
            s = pu_err_set(PU_ERR_INVALID, "rm train: %s: no tokenizer beside the model: pass -t",
                           o->base_dir);
    }
    if (s == PU_OK)
        s = pu_tok_load(tp, &j.tok);
    if (s == PU_OK)
        s = load_set(&j, o->data, o->n_data, &j.train, "train");
    if (s == PU_OK && o->eval_data && o->n_eval > 0)
        s = load_set(&j, o->eval_data, o->n_eval, &j.eval, "eval");
    if (s == PU_OK) {
        pu_train_job job = {.ctx = &j,
                            .label = "rm train",
                            .items = "pairs",
                            .n_items = j.train.n_pairs,
                            .make_model = rm_make_model,
                            .batch = rm_batch,
                            .tokens_upto = rm_tokens_upto,
                            .tok_hash = set_hash(&j.train),
                            .eval_at_start = true,
                            .micro = rm_micro,
                            .rows_per_unit = 2,
                            .metrics = rm_metrics,
                            .done = rm_done};
        int64_t Tmax = set_max_len(&j.train);
        if (j.eval.n_pairs && set_max_len(&j.eval) > Tmax)
            Tmax = set_max_len(&j.eval);
        job.Tmax = Tmax;
        pu_train_opts to = *t;
        to.batch = 2 * t->batch; /* rows */
        j.lens = pu_calloc((size_t)to.batch, sizeof(int64_t));
        j.elens = pu_calloc((size_t)to.batch, sizeof(int64_t));
        if (j.eval.n_pairs) {
            job.eval_n = rm_eval_n;
            job.eval_batch = rm_eval_batch;
            if (to.eval_every <= 0)
                to.eval_every = to.steps;
        }
        j.job = &job;
        s = pu_train_loop(&to, &job, pool);
    }
    set_free(&j.train);
    set_free(&j.eval);
    pu_free(j.lens);
    pu_free(j.elens);
    pu_epoch_order_free(&j.order);
    pu_free(j.v);
    pu_free(j.dv);
    pu_free(j.dh);
    pu_tok_destroy(j.tok);
    pu_model_destroy(j.base);
    return s;
}
