/*
 * sft.c — full-parameter supervised fine-tuning (puyu sft): the SFT batch
 * source and model of pu_train_loop (run.c), which owns everything else
 * (AdamW, schedule, accumulation, checkpoints, resume, eval, metrics).
 *
 * Step s (0-based) trains on batch s of the batcher (pu_sft.h): B rows in
 * file order wrapping (--no-shuffle) or a seeded per-epoch permutation, so
 * the data position is a function of the step alone and --resume needs no
 * data state. Rows are (B, T) with T the batch's longest row; packed rows
 * carry pos / seg (per-document RoPE positions and attention). The loss of a
 * step is the mean cross-entropy over all its targets (the loop scales each
 * micro-batch's gradient by 1 / the step's target count).
 *
 * The model: sft_make_model() builds the training model from the base model
 * directory (-m); it is the one place a variant (frozen base + adapters)
 * changes. OUT/final/ = the trained weights as a model directory (F32,
 * config.json, tokenizer copied), or with --lora / --qlora the adapter as a
 * PEFT directory, written atomically after the last step.
 */
#include <string.h>
#include <sys/stat.h>

#include "puyu/pu_sft.h"
#include "train/train_impl.h"

void pu_sft_opts_default(pu_sft_opts *o) {
    memset(o, 0, sizeof *o);
    pu_train_opts_default(&o->train);
    o->train.batch = 8;
    o->train.seq = 512;
    o->train.lr = 2e-5;
    o->train.warmup = -1;
    o->train.adam.weight_decay = 0.0;
    o->shuffle = true;
    o->lora_r = 8;
    o->lora_alpha = 16;
    o->lora_dropout = 0.05;
    o->lora_targets = PU_LORA_DEFAULT_TARGETS;
}

typedef struct sft_job {
    const pu_sft_opts *o;
    pu_train_job *job;
    pu_model *base;
    pu_tok *tok;
    char *tok_file; /* tokenizer file copied into checkpoints and final/ (NULL: none) */
    pu_sft_data *train, *eval;
    pu_sft_batcher *tb, *eb;
    int64_t tok_step, tok_sum; /* tokens_upto cache */
} sft_job;

/* Build the training model from the base model: full fine-tuning = an fp32
 * copy of the base's weights; LoRA = the base borrowed (frozen, memory-mapped
 * or NF4) + adapters, PEFT-initialised or from --lora-init. On resume the
 * checkpoint's weights (model or adapter) replace them afterwards. */
static pu_status sft_make_model(void *ctx, const char *ckpt_dir, int64_t B, int64_t Tmax,
                                pu_tmodel **m, char **tok_path) {
    sft_job *j = ctx;
    const pu_sft_opts *so = j->o;
    pu_tmodel_opts to;
    pu_tmodel_opts_default(&to);
    to.attn = so->train.attn;
    to.precision = so->train.precision;
    to.ce_chunk = so->train.ce_chunk;
    PU_TRY(pu_tmodel_opts_set_recompute(&to, so->train.recompute));
    to.recompute = to.recompute || so->recompute || so->qlora;
    pu_lora *init = NULL;
    if (so->lora || so->qlora) {
        to.freeze_base = true;
        to.qlora = so->qlora;
        to.lora_r = so->lora_r;
        to.lora_alpha = so->lora_alpha;
        to.lora_dropout = so->lora_dropout;
        to.lora_rslora = so->lora_rslora;
        to.lora_targets = so->lora_targets;
        to.seed = so->train.seed;
        to.base_name = so->base_dir;
        if (so->lora_init) {
            PU_TRY(pu_lora_load(so->lora_init, pu_model_config(j->base), &init));
            to.lora_r = init->r;
            to.lora_alpha = init->alpha;
            to.lora_rslora = init->use_rslora;
            to.lora_targets = init->targets;
        }
    }
    pu_status s = pu_tmodel_create_from(j->base, B, Tmax, &to, m);
    if (s == PU_OK && init)
        s = pu_tmodel_lora_import(*m, init);
    pu_lora_destroy(init);
    if (s != PU_OK) {
        pu_tmodel_destroy(*m);
        *m = NULL;
        return pu_err_prefix(s, "%s: ", so->lora_init && init ? so->lora_init : so->base_dir);
    }
    if (j->tok_file)
        *tok_path = pu_strdup(j->tok_file);
    return PU_OK;
}

static pu_status sft_batch(void *ctx, pu_rng *rng, int64_t s, int64_t B, int32_t *ids, int32_t *tg,
                           int32_t *pos, int32_t *seg, int64_t *T, bool *packed) {
    sft_job *j = ctx;
    int64_t nt;
    pu_sft_batch(j->tb, s, B, ids, tg, pos, seg, T, &nt);
    *packed = j->o->pack;
    return PU_OK;
}

/* B * T summed over steps 0 .. step-1 (padding included) */
static int64_t sft_tokens_upto(void *ctx, int64_t step) {
    sft_job *j = ctx;
    if (step < j->tok_step) {
        j->tok_step = 0;
        j->tok_sum = 0;
    }
    int64_t B = j->o->train.batch;
    for (; j->tok_step < step; j->tok_step++)
        j->tok_sum += B * pu_sft_batch_len(j->tb, j->tok_step, B);
    return j->tok_sum;
}

static int64_t sft_eval_rows_n(void *ctx) {
    sft_job *j = ctx;
    return pu_sft_batcher_n_rows(j->eb);
}

/* eval batch k: rows k*mb .. of the eval set in order (the last one shorter) */
static pu_status sft_eval_batch(void *ctx, int64_t k, int64_t mb, int64_t T_step, int32_t *ids,
                                int32_t *tg, int32_t *pos, int32_t *seg, int64_t *rows, int64_t *T,
                                bool *packed) {
    sft_job *j = ctx;
    int64_t n = sft_eval_rows_n(ctx), first = k * mb;
    *rows = n - first < mb ? n - first : mb;
    int64_t nt;
    pu_sft_batch_at(j->eb, first, *rows, ids, tg, pos, seg, T, &nt);
    *packed = j->o->pack;
    return PU_OK;
}

static int64_t sft_eval_batches(void *ctx) {
    sft_job *j = ctx;
    int64_t n = sft_eval_rows_n(ctx), mb = j->o->train.batch / j->o->train.grad_accum;
    return (n + mb - 1) / mb;
}

/* OUT/final/: the model directory, built in OUT/.tmp_final and renamed */
static pu_status sft_done(void *ctx, pu_tmodel *m) {
    sft_job *j = ctx;
    const char *out = j->o->train.out_dir;
    char *dir = pu_path_join(out, "final"), *tmp = pu_path_join(out, ".tmp_final");
    pu_train_rm_flat_dir(tmp);
    pu_status s = pu_tmodel_save_dir(m, tmp);
    if (s == PU_OK && j->tok_file) {
        const char *ext = strrchr(j->tok_file, '.');
        char *dst =
            pu_path_join(tmp, ext && !strcmp(ext, ".json") ? "tokenizer.json" : "tokenizer.model");
        s = pu_train_copy_file(j->tok_file, dst);
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
        pu_log_info("sft: final model in %s", dir);
    }
    pu_free(dir);
    pu_free(tmp);
    return s;
}

/* the tokenizer file to copy: a .model / .json file, or the one inside a directory */
static char *tokenizer_file(const char *p) {
    if (!p)
        return NULL;
    if (pu_dir_exists(p)) {
        static const char *const names[] = {"tokenizer.model", "tokenizer.json"};
        for (int i = 0; i < 2; i++) {
            char *f = pu_path_join(p, names[i]);
            if (pu_file_exists(f))
                return f;
            pu_free(f);
        }
        return NULL;
    }
    const char *ext = strrchr(p, '.');
    if (ext && (!strcmp(ext, ".model") || !strcmp(ext, ".json")))
        return pu_strdup(p);
    return NULL;
}

static uint64_t data_hash(const pu_sft_data *d) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < pu_sft_data_n(d); i++) {
        const pu_sft_tokens *t = pu_sft_data_get(d, i);
        uint64_t a = pu_hash64(t->ids, (size_t)t->n * sizeof(int32_t));
        uint64_t b = pu_hash64(t->labels, (size_t)t->n * sizeof(int32_t));
        h = (h ^ a) * 0x100000001B3ull;
        h = (h ^ b) * 0x100000001B3ull;
    }
    return h;
}

static pu_status load_set(sft_job *j, const char *const *paths, int n, pu_pool *pool,
                          pu_sft_data **d, const char *what) {
    const pu_sft_opts *o = j->o;
    pu_sft_load_opts lo = {
        .seq = o->train.seq, .skip_bad = o->skip_bad, .vars = o->vars, .pool = pool};
    PU_TRY(pu_sft_data_load(paths, n, j->tok, &lo, d));
    if (!o->train.quiet)
        pu_log_info("sft: %s: %lld samples (%lld cut to --seq %lld, %lld bad records skipped)",
                    what, (long long)pu_sft_data_n(*d), (long long)pu_sft_data_n_truncated(*d),
                    (long long)o->train.seq, (long long)pu_sft_data_n_skipped(*d));
    return PU_OK;
}

pu_status pu_sft_run(const pu_sft_opts *o, pu_pool *pool) {
    const pu_train_opts *t = &o->train;
    if (!o->base_dir || !t->out_dir || !o->data || o->n_data <= 0)
        return pu_err_set(PU_ERR_INVALID, "sft: -m BASE, --data FILE and --out DIR are required");
    if (t->seq < 2)
        return pu_err_set(PU_ERR_INVALID, "sft: --seq %lld: expected >= 2", (long long)t->seq);
    sft_job j;
    memset(&j, 0, sizeof j);
    j.o = o;
    pu_status s = pu_model_load(o->base_dir, &j.base);
    if (s == PU_OK) {
        const pu_config *c = pu_model_config(j.base);
        if (c->max_position_embeddings > 0 && t->seq > c->max_position_embeddings)
            s = pu_err_set(PU_ERR_INVALID,
                           "sft: --seq %lld exceeds the model's context (%s/config.json: "
                           "max_position_embeddings %lld)",
                           (long long)t->seq, o->base_dir, (long long)c->max_position_embeddings);
    }
    const char *tp = NULL;
    if (s == PU_OK) {
        tp = o->tok_path ? o->tok_path : pu_model_tokenizer_path(j.base);
        if (!tp)
            s = pu_err_set(PU_ERR_INVALID,
                           "sft: %s: the model has no tokenizer beside it: pass -t TOKENIZER",
                           o->base_dir);
    }
    if (s == PU_OK)
        s = pu_tok_load(tp, &j.tok);
    if (s == PU_OK && pu_tok_n_vocab(j.tok) > pu_model_config(j.base)->vocab_size)
        s = pu_err_set(PU_ERR_INVALID,
                       "sft: the tokenizer %s has %lld tokens but the model's vocab_size is %lld "
                       "(%s/config.json)",
                       tp, (long long)pu_tok_n_vocab(j.tok),
                       (long long)pu_model_config(j.base)->vocab_size, o->base_dir);
    if (s == PU_OK) {
        j.tok_file = tokenizer_file(tp);
        if (!j.tok_file && !t->quiet)
            pu_log_warn("sft: the tokenizer %s is not a .model / .json file; it is not copied "
                        "into the checkpoints",
                        tp);
    }
    if (s == PU_OK)
        s = load_set(&j, o->data, o->n_data, pool, &j.train, "train");
    if (s == PU_OK && o->eval_data && o->n_eval > 0)
        s = load_set(&j, o->eval_data, o->n_eval, pool, &j.eval, "eval");
    if (s == PU_OK)
        s = pu_sft_batcher_create(j.train, t->seq, o->pack, o->shuffle, t->seed, &j.tb);
    if (s == PU_OK && j.eval)
        s = pu_sft_batcher_create(j.eval, t->seq, o->pack, false, 0, &j.eb);
    if (s == PU_OK) {
        pu_train_job job = {.ctx = &j,
                            .label = "sft",
                            .items = "samples",
                            .n_items = pu_sft_data_n(j.train),
                            .make_model = sft_make_model,
                            .batch = sft_batch,
                            .tokens_upto = sft_tokens_upto,
                            .tok_hash = data_hash(j.train),
                            .eval_at_start = true,
                            .done = sft_done};
        int64_t Tmax = pu_sft_batcher_max_len(j.tb);
        if (j.eb && pu_sft_batcher_max_len(j.eb) > Tmax)
            Tmax = pu_sft_batcher_max_len(j.eb);
        job.Tmax = Tmax;
        pu_train_opts to = *t;
        if (j.eb) {
            job.eval_n = sft_eval_batches;
            job.eval_batch = sft_eval_batch;
            if (to.eval_every <= 0)
                to.eval_every = to.steps; /* before the first and after the last step */
        }
        j.job = &job;
        j.o = o;
        s = pu_train_loop(&to, &job, pool);
    }
    pu_sft_batcher_destroy(j.tb);
    pu_sft_batcher_destroy(j.eb);
    pu_sft_data_destroy(j.train);
    pu_sft_data_destroy(j.eval);
    pu_free(j.tok_file);
    pu_tok_destroy(j.tok);
    pu_model_destroy(j.base);
    return s;
}
