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

typedef struct rm_job {
    const pu_rm_train_opts *o;
    pu_train_job *job;
    pu_model *base;
    pu_tok *tok;
    char *tok_file; /* copied into checkpoints and final/ (NULL: none) */
    int32_t reward_token;
    int64_t seq; /* longest side */
    pu_pairs pairs;
    int64_t *lens, *elens; /* rows of the current step / eval batch */
    float *v, *dv;         /* the head (C) and its gradient */
    float *dh;             /* (rows * T * C) scratch */
    size_t dh_cap;
    /* metrics accumulated since the last report */
    pu_pair_metrics met;
} rm_job;

static pu_status rm_batch(void *ctx, pu_rng *rng, int64_t s, int64_t B, int32_t *ids, int32_t *tg,
                          int32_t *pos, int32_t *seg, int64_t *T, bool *packed) {
    (void)rng, (void)pos, (void)seg;
    rm_job *j = ctx;
    pu_pairs_batch(&j->pairs, s, B / 2, ids, tg, j->lens, T);
    *packed = false;
    return PU_OK;
}

static int64_t rm_tokens_upto(void *ctx, int64_t step) {
    rm_job *j = ctx;
    return pu_pairs_tokens_upto(&j->pairs, j->o->train.batch, step);
}

static int64_t rm_eval_n(void *ctx) {
    rm_job *j = ctx;
    return pu_pairs_eval_n(&j->pairs, j->o->train.batch / j->o->train.grad_accum);
}

/* eval batch k: pairs k*mbp .. of the eval set (mb = rows) */
static pu_status rm_eval_batch(void *ctx, int64_t k, int64_t mb, int64_t T_step, int32_t *ids,
                               int32_t *tg, int32_t *pos, int32_t *seg, int64_t *rows, int64_t *T,
                               bool *packed) {
    (void)T_step, (void)pos, (void)seg;
    rm_job *j = ctx;
    *rows = pu_pairs_eval_batch(&j->pairs, k, mb / 2, ids, tg, j->elens, T);
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
    pu_pair_metrics_add(&j->met, met.accuracy, 0, met.chosen, met.rejected, n);
    return PU_OK;
}

static void rm_metrics(void *ctx, bool eval, char *buf, size_t n) {
    rm_job *j = ctx;
    pu_pair_metrics_take(&j->met, eval, false, buf, n);
}

static pu_status rm_make_model(void *ctx, const char *ckpt_dir, int64_t B, int64_t Tmax,
                               pu_tmodel **m, char **tok_path) {
    (void)ckpt_dir;
    rm_job *j = ctx;
    const pu_rm_train_opts *o = j->o;
    pu_tmodel_opts to;
    PU_TRY(pu_train_model_opts(&to, &o->train, o->recompute));
    if (o->lora)
        pu_tmodel_opts_lora(&to, o->lora_r, o->lora_alpha, o->lora_dropout, o->lora_rslora,
                            o->lora_targets, o->train.seed, o->base_dir);
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
    if (j->tok_file)
        *tok_path = pu_strdup(j->tok_file);
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
    if (s == PU_OK)
        s = pu_train_copy_tokenizer(j->tok_file, body);
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
    pu_status s = pu_train_open_base(o->base_dir, o->tok_path, t->seq, "rm train", &j.base, &j.tok,
                                     &j.seq, &j.tok_file);
    if (s == PU_OK) {
        const pu_config *c = pu_model_config(j.base);
        int64_t rt = o->reward_token >= 0      ? o->reward_token
                     : c->reward_token_id >= 0 ? c->reward_token_id
                                               : PU_REWARD_TOKEN_INTERNLM2;
        j.reward_token = (int32_t)rt;
        if (rt >= c->vocab_size)
            s = pu_err_set(PU_ERR_RANGE,
                           "rm train: the reward token %lld is outside the model's vocabulary "
                           "(%lld): pass --reward-token ID",
                           (long long)rt, (long long)c->vocab_size);
    }
    pu_pair_load pl = {.tok = j.tok,
                       .reward_token = j.reward_token,
                       .seq = j.seq,
                       .skip_bad = o->skip_bad,
                       .quiet = t->quiet,
                       .condition = o->condition,
                       .label = "rm train"};
    if (s == PU_OK)
        s = pu_pairs_load(&j.pairs, &pl, o->data, o->n_data, o->eval_data, o->n_eval, o->shuffle,
                          t->seed);
    if (s == PU_OK) {
        pu_train_job job = {.ctx = &j,
                            .label = "rm train",
                            .make_model = rm_make_model,
                            .batch = rm_batch,
                            .tokens_upto = rm_tokens_upto,
                            .eval_n = rm_eval_n,
                            .eval_batch = rm_eval_batch,
                            .micro = rm_micro,
                            .metrics = rm_metrics,
                            .done = rm_done};
        pu_train_opts to;
        pu_pairs_job(&j.pairs, t, &job, &to);
        j.lens = pu_calloc((size_t)to.batch, sizeof(int64_t));
        j.elens = pu_calloc((size_t)to.batch, sizeof(int64_t));
        j.job = &job;
        s = pu_train_loop(&to, &job, pool);
    }
    pu_pairs_free(&j.pairs);
    pu_free(j.lens);
    pu_free(j.elens);
    pu_free(j.v);
    pu_free(j.dv);
    pu_free(j.dh);
    pu_tok_destroy(j.tok);
    pu_free(j.tok_file);
    pu_model_destroy(j.base);
    return s;
}
