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

typedef struct dpo_job {
    const pu_dpo_train_opts *o;
    pu_train_job *job;
    pu_model *base, *refm;
    pu_tok *tok;
    char *tok_file; /* copied into checkpoints and final/ (NULL: none) */
    pu_tmodel *ref;
    int64_t seq;
    pu_pairs pairs;
    float *dlogp;
    size_t dl_cap;
    pu_pair_metrics met; /* since the last metrics line */
} dpo_job;

static pu_status dpo_batch(void *ctx, pu_rng *rng, int64_t s, int64_t B, int32_t *ids, int32_t *tg,
                           int32_t *pos, int32_t *seg, int64_t *T, bool *packed) {
    (void)rng, (void)pos, (void)seg;
    dpo_job *j = ctx;
    pu_pairs_batch(&j->pairs, s, B / 2, ids, tg, NULL, T);
    *packed = false;
    return PU_OK;
}

static int64_t dpo_tokens_upto(void *ctx, int64_t step) {
    dpo_job *j = ctx;
    return pu_pairs_tokens_upto(&j->pairs, j->o->train.batch, step);
}

static int64_t dpo_eval_n(void *ctx) {
    dpo_job *j = ctx;
    return pu_pairs_eval_n(&j->pairs, j->o->train.batch / j->o->train.grad_accum);
}

static pu_status dpo_eval_batch(void *ctx, int64_t k, int64_t mb, int64_t T_step, int32_t *ids,
                                int32_t *tg, int32_t *pos, int32_t *seg, int64_t *rows, int64_t *T,
                                bool *packed) {
    (void)T_step, (void)pos, (void)seg;
    dpo_job *j = ctx;
    *rows = pu_pairs_eval_batch(&j->pairs, k, mb / 2, ids, tg, NULL, T);
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

pu_status pu_dpo_pairs_step(pu_tmodel *m, pu_tmodel *ref, pu_pool *pool, const pu_tbatch *bt,
                            const pu_dpo_train_opts *o, float grad_scale, bool backward,
                            pu_pref_metrics *met, double *loss, float **dl_buf, size_t *dl_cap) {
    int64_t R = bt->B, T = bt->T, n = R / 2;
    if (R % 2 || R < 2)
        return pu_err_set(PU_ERR_INVALID,
                          "dpo: a micro-batch of %lld rows does not hold whole pairs",
                          (long long)R);
    if (o->kind == PU_DPO_SIGMOID && !ref)
        return pu_err_set(PU_ERR_INVALID, "dpo: the sigmoid loss needs a reference model");
    double l;
    int64_t c;
    float *buf = pu_malloc((size_t)(8 * n) * sizeof(float));
    float *pc = buf, *pr = pc + n, *rc = pr + n, *rr = rc + n, *dc = rr + n, *dr = dc + n;
    float *rows = dr + n; /* (2n) */
    int64_t *cnt = pu_malloc((size_t)R * sizeof(int64_t)), *nc = NULL, *nr = NULL;
    pu_status s = PU_OK;
    if (o->kind == PU_DPO_SIGMOID) {
        s = pu_tmodel_forward(ref, pool, bt, &l, &c);
        if (s == PU_OK) {
            row_sums(pu_tmodel_token_logps(ref), bt->targets, R, T, rows, cnt);
            for (int64_t i = 0; i < n; i++)
                rc[i] = rows[2 * i], rr[i] = rows[2 * i + 1];
        }
    }
    if (s == PU_OK)
        s = pu_tmodel_forward(m, pool, bt, &l, &c);
    memset(met, 0, sizeof *met);
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
            s = pu_dpo_loss(pc, pr, rc, rr, n, &d, met, dc, dr);
        } else if (o->kind == PU_DPO_SIMPO) {
            s = pu_simpo_loss(pc, pr, nc, nr, n, o->beta, o->simpo_gamma, met, dc, dr);
        } else {
            s = pu_orpo_loss(pc, pr, nc, nr, n, o->orpo_lambda, met, dc, dr);
            for (int64_t i = 0; s == PU_OK && i < n; i++) { /* + mean_i(-pc_i / nc_i) */
                extra += -(double)pc[i] / (double)nc[i] / (double)n;
                dc[i] += -1.0f / ((float)nc[i] * (float)n);
            }
        }
    }
    if (s == PU_OK && !isfinite(met->loss + extra))
        s = pu_err_set(PU_ERR_INVALID, "dpo: the loss is %g", met->loss + extra);
    if (s == PU_OK && backward) {
        size_t need = (size_t)(R * T);
        if (*dl_cap < need) {
            pu_free(*dl_buf);
            *dl_buf = pu_malloc(need * sizeof(float));
            *dl_cap = need;
        }
        float *dl = *dl_buf;
        for (int64_t r = 0; r < R; r++) {
            float d = grad_scale * (float)n * (r % 2 ? dr : dc)[r / 2];
            for (int64_t t = 0; t < T; t++)
                dl[r * T + t] = bt->targets[r * T + t] >= 0 ? d : 0.0f;
        }
        pu_tmodel_backward_logp(m, pool, dl, NULL);
    }
    if (s == PU_OK)
        *loss = met->loss + extra;
    pu_free(nc);
    pu_free(cnt);
    pu_free(buf);
    return s;
}

static pu_status dpo_micro(void *ctx, pu_tmodel *m, pu_pool *pool, const pu_tbatch *bt,
                           int64_t first, bool eval, float grad_scale, double *loss_sum,
                           int64_t *count) {
    (void)first;
    dpo_job *j = ctx;
    pu_pref_metrics met;
    double loss;
    PU_TRY(pu_dpo_pairs_step(m, j->ref, pool, bt, j->o, grad_scale, !eval, &met, &loss, &j->dlogp,
                             &j->dl_cap));
    int64_t n = bt->B / 2;
    *loss_sum = loss * (double)n;
    *count = n;
    pu_pair_metrics_add(&j->met, met.accuracy, met.margin, met.chosen, met.rejected, n);
    return PU_OK;
}

static void dpo_metrics(void *ctx, bool eval, char *buf, size_t n) {
    dpo_job *j = ctx;
    pu_pair_metrics_take(&j->met, eval, true, buf, n);
}

static pu_status dpo_make_model(void *ctx, const char *ckpt_dir, int64_t B, int64_t Tmax,
                                pu_tmodel **m, char **tok_path) {
    dpo_job *j = ctx;
    const pu_dpo_train_opts *o = j->o;
    pu_tmodel_opts to;
    PU_TRY(pu_train_model_opts(&to, &o->train, o->recompute));
    if (o->lora)
        pu_tmodel_opts_lora(&to, o->lora_r, o->lora_alpha, o->lora_dropout, o->lora_rslora,
                            o->lora_targets, o->train.seed, o->policy_dir);
    PU_TRY(pu_tmodel_create_from(j->base, B, Tmax, &to, m));
    if (o->kind == PU_DPO_SIGMOID && !j->ref) {
        pu_tmodel_opts ro;
        pu_tmodel_opts_default(&ro);
        ro.freeze_base = true; /* borrowed views of the mapping: no second copy */
        ro.forward_only = true;
        ro.attn = o->train.attn; /* the policy's numerics: step 1 of --lora is exactly log 2 */
        ro.precision = o->train.precision;
        pu_status s = pu_tmodel_create_from(j->refm ? j->refm : j->base, B, Tmax, &ro, &j->ref);
        if (s != PU_OK)
            return pu_err_prefix(s, "dpo: the reference model: ");
    }
    if (j->tok_file)
        *tok_path = pu_strdup(j->tok_file);
    (void)ckpt_dir;
    return PU_OK;
}

static pu_status dpo_done(void *ctx, pu_tmodel *m) {
    dpo_job *j = ctx;
    return pu_train_write_final(m, j->o->train.out_dir, j->tok_file, "dpo", j->o->train.quiet);
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
    pu_status s = pu_train_open_base(o->policy_dir, o->tok_path, t->seq, "dpo", &j.base, &j.tok,
                                     &j.seq, &j.tok_file);
    if (s == PU_OK && o->ref_dir && o->kind == PU_DPO_SIGMOID) {
        s = pu_model_load(o->ref_dir, &j.refm);
        if (s == PU_OK)
            s = same_shape(pu_model_config(j.base), pu_model_config(j.refm), o->ref_dir);
    }
    pu_pair_load pl = {.tok = j.tok,
                       .reward_token = -1,
                       .seq = j.seq,
                       .skip_bad = o->skip_bad,
                       .quiet = t->quiet,
                       .condition = o->condition,
                       .label = "dpo"};
    if (s == PU_OK)
        s = pu_pairs_load(&j.pairs, &pl, o->data, o->n_data, o->eval_data, o->n_eval, o->shuffle,
                          t->seed);
    if (s == PU_OK) {
        pu_train_job job = {.ctx = &j,
                            .label = "dpo",
                            .make_model = dpo_make_model,
                            .batch = dpo_batch,
                            .tokens_upto = dpo_tokens_upto,
                            .eval_n = dpo_eval_n,
                            .eval_batch = dpo_eval_batch,
                            .micro = dpo_micro,
                            .metrics = dpo_metrics,
                            .done = dpo_done};
        pu_train_opts to;
        pu_pairs_job(&j.pairs, t, &job, &to);
        j.job = &job;
        s = pu_train_loop(&to, &job, pool);
    }
    pu_pairs_free(&j.pairs);
    pu_free(j.dlogp);
    pu_tmodel_destroy(j.ref);
    pu_tok_destroy(j.tok);
    pu_free(j.tok_file);
    pu_model_destroy(j.refm);
    pu_model_destroy(j.base);
    return s;
}
