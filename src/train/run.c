/*
 * run.c — the pretraining loop (puyu train): data, model, AdamW, schedules,
 * evaluation, metrics, checkpoints and bit-exact resume.
 *
 * One step: sample the step's B windows (grad_accum micro-batches of B/A
 * sequences) from the train loader's RNG, count the targets, forward +
 * backward every micro-batch with grad_scale = 1/count (so the gradient is
 * that of the mean cross-entropy of the step), AdamW with the step's LR.
 * The metrics line of step s (1-based) carries that mean loss.
 *
 * Checkpoint = <out>/step_XXXXXXXX/, a model directory that `puyu generate -m`
 * loads (config.json, model.safetensors F32 with HF names, tokenizer.model when
 * the shards name one) + train_state.safetensors (AdamW moments as two slabs
 * in the parameter-table layout; step, Adam t, the data RNG state, run
 * settings in __metadata__). It is built in <out>/.tmp_step_XXXXXXXX and
 * renamed into place, then <out>/latest is replaced atomically; older
 * checkpoints beyond --keep are removed afterwards. A crash (kill -9, full
 * disk) at any point leaves the previous checkpoint complete.
 *
 * Data parallel (pu_dp.h; mpirun -np N with an MPI build): every rank draws
 * the same global batch of B windows from the same RNG and runs forward/
 * backward on its contiguous share pu_split(B, rank, N) (in grad_accum
 * micro-batches), with grad_scale = 1 / (targets counted over all B); the
 * gradient buckets are all-reduced as the last micro-batch's backward
 * finishes them, loss sums are all-reduced, so every rank takes the same
 * AdamW step as one process would (up to fp32 summation order). Rank 0
 * alone writes metrics, checkpoints and progress; all ranks read a
 * checkpoint on resume and start from rank 0's broadcast weights.
 *
 * Resume: load the newest complete checkpoint, drop the metrics lines after
 * its step, continue. Everything that determines the next losses (fp32
 * weights, moments, t, RNG, schedules) is restored exactly and every op is
 * deterministic for any thread count, so the loss sequence is bit-identical
 * to an uninterrupted run.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "puyu/pu_dp.h"
#include "train/train_impl.h"

#define MAX_STAGES 16

void pu_train_opts_default(pu_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->seq = 256;
    o->grad_accum = 1;
    o->warmup = -1; /* auto: min(100, steps/10) */
    o->lr = 3e-4;
    o->min_lr = -1; /* auto: lr/10 */
    o->adam = pu_adamw_default();
    o->seed = 1;
    o->eval_batches = 8;
    o->keep = 2;
}

pu_status pu_seq_schedule_parse(const char *s, double *fracs, int64_t *lens, int cap, int *n) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double f = strtod(p, &end);
        if (end == p || *end != ':')
            return pu_err_set(PU_ERR_INVALID,
                              "--seq-schedule \"%s\": expected FRAC:LEN[,...] at "
                              "\"%s\"",
                              s, p);
        p = end + 1;
        long long len = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return pu_err_set(PU_ERR_INVALID, "--seq-schedule \"%s\": expected a length at \"%s\"",
                              s, p);
        if (*n == cap)
            return pu_err_set(PU_ERR_INVALID, "--seq-schedule: more than %d stages", cap);
        if (!(f >= 0 && f < 1) || len <= 0 || (*n == 0 && f != 0) || (*n > 0 && f <= fracs[*n - 1]))
            return pu_err_set(PU_ERR_INVALID,
                              "--seq-schedule \"%s\": stage %d (%g:%lld): "
                              "fractions must start at 0 and increase below 1, lengths > 0",
                              s, *n + 1, f, len);
        fracs[*n] = f;
        lens[*n] = len;
        (*n)++;
        p = *end ? end + 1 : end;
    }
    if (*n == 0)
        return pu_err_set(PU_ERR_INVALID, "--seq-schedule: empty");
    return PU_OK;
}

/* ---------------------------------------------------------------- files */

void pu_train_rm_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = pu_path_join(dir, e->d_name);
        unlink(p);
        pu_free(p);
    }
    closedir(d);
    rmdir(dir);
}

pu_status pu_train_copy_file(const char *src, const char *dst) {
    char *data = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(src, &data, &len));
    pu_status s = pu_file_write_atomic(dst, data, len);
    pu_free(data);
    return s;
}

#define rm_flat_dir pu_train_rm_flat_dir
#define copy_file   pu_train_copy_file

/* tokenizer recorded by `puyu data pack` in <data>/meta.json (NULL if none) */
static char *data_tokenizer(const char *data_dir) {
    char *mp = pu_path_join(data_dir, "meta.json");
    json_t *j = NULL;
    char *out = NULL;
    if (pu_file_exists(mp) && pu_json_load_file(mp, &j) == PU_OK) {
        const char *t = json_string_value(json_object_get(j, "tokenizer"));
        if (t && pu_file_exists(t))
            out = pu_strdup(t);
        json_decref(j);
    }
    pu_err_clear();
    pu_free(mp);
    return out;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* sorted step_* checkpoint directory names in out (owned array of owned) */
static int list_ckpts(const char *out, char ***names) {
    *names = NULL;
    DIR *d = opendir(out);
    if (!d)
        return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "step_", 5) != 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            *names = pu_realloc(*names, (size_t)cap * sizeof **names);
        }
        (*names)[n++] = pu_strdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(*names, (size_t)n, sizeof **names, cmp_str);
    return n;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        pu_free(names[i]);
    pu_free(names);
}

/* ---------------------------------------------------------------- state */

typedef struct {
    const pu_train_opts *o;
    const pu_train_job *job;
    pu_pool *pool;
    pu_tmodel *m;
    pu_adamw opt;
    pu_rng rng;
    int64_t step; /* completed steps */
    int64_t mb;   /* micro-batch size */
    int64_t Tmax, warmup;
    double min_lr;
    char *tok_path;
    FILE *metrics;
    char *metrics_path;
    int32_t *ids, *tg, *pos, *seg;
    char last_ckpt[64];
    int rank, nranks; /* data parallel (1 rank without MPI) */
    bool quiet;       /* o->quiet, or not rank 0 */
    pu_dp_grads *dpg; /* bucketed gradient all-reduce (NULL for 1 rank) */
    float *xm, *xv;   /* AdamW moments of the job's extra parameters */
    bool zero;        /* ZeRO-1: r->opt holds the moments of this rank's slab range only */
} run_state;

static pu_status save_ckpt_root(run_state *r);

/* Rank 0 writes; every rank gets its status (so all stop together on a full
 * disk). The weights must still agree between ranks (see dp.c). */
static pu_status save_ckpt(run_state *r) {
    if (r->nranks <= 1)
        return save_ckpt_root(r);
    PU_TRY(pu_dp_check_same(pu_tmodel_params(r->m), (size_t)pu_tmodel_numel(r->m) * sizeof(float),
                            "the weights"));
    pu_status s = PU_OK;
    if (r->zero) { /* rank 0 writes the whole moments: gather the shards into it */
        int64_t n = pu_tmodel_numel(r->m);
        pu_adamw full = r->opt, part = r->opt;
        full.lo = 0;
        full.n = n;
        full.m = r->rank == 0 ? pu_try_malloc((size_t)(n ? n : 1) * sizeof(float)) : NULL;
        full.v = r->rank == 0 ? pu_try_malloc((size_t)(n ? n : 1) * sizeof(float)) : NULL;
        if (r->rank == 0 && (!full.m || !full.v))
            s = pu_err_set(PU_ERR_NOMEM, "checkpoint: cannot gather the AdamW moments");
        /* every rank joins both gathers (rank 0 reports a failed allocation afterwards) */
        pu_status g1 = pu_dp_gather_shards_f32(part.m, full.m, n, 0);
        pu_status g2 = pu_dp_gather_shards_f32(part.v, full.v, n, 0);
        if (s == PU_OK)
            s = g1 != PU_OK ? g1 : g2;
        if (s == PU_OK && r->rank == 0) {
            r->opt = full;
            s = save_ckpt_root(r);
            r->opt = part;
        }
        pu_free(full.m);
        pu_free(full.v);
    } else if (r->rank == 0) {
        s = save_ckpt_root(r);
    }
    int32_t st[2] = {(int32_t)s, 0};
    PU_TRY(pu_dp_bcast_bytes(st, sizeof st, 0));
    if (r->rank != 0 && st[0] != PU_OK)
        return pu_err_set((pu_status)st[0], "saving checkpoint at step %lld failed on rank 0",
                          (long long)r->step);
    if (r->rank != 0) {
        char name[64];
        snprintf(name, sizeof name, "step_%08lld", (long long)r->step);
        snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", name);
    }
    return s;
}

static pu_status save_ckpt_root(run_state *r) {
    const pu_train_opts *o = r->o;
    char name[64], tmpn[80];
    snprintf(name, sizeof name, "step_%08lld", (long long)r->step);
    snprintf(tmpn, sizeof tmpn, ".tmp_%s", name);
    char *dir = pu_path_join(o->out_dir, name), *tmp = pu_path_join(o->out_dir, tmpn);
    rm_flat_dir(tmp);
    pu_status s = pu_tmodel_save_dir(r->m, tmp);
    if (s == PU_OK && r->tok_path) {
        char *dst = pu_path_join(tmp, "tokenizer.model");
        const char *ext = strrchr(r->tok_path, '.');
        if (ext && !strcmp(ext, ".json")) {
            pu_free(dst);
            dst = pu_path_join(tmp, "tokenizer.json");
        }
        s = copy_file(r->tok_path, dst);
        pu_free(dst);
    }
    if (s == PU_OK) {
        char meta[512];
        snprintf(meta, sizeof meta,
                 "{\"format\":\"puyu-train-state-1\",\"step\":\"%lld\",\"adam_t\":\"%lld\","
                 "\"rng0\":\"%016llx\",\"rng1\":\"%016llx\",\"rng2\":\"%016llx\","
                 "\"rng3\":\"%016llx\",\"steps\":\"%lld\",\"batch\":\"%lld\",\"seed\":\"%llu\","
                 "\"tok_hash\":\"%016llx\"}",
                 (long long)r->step, (long long)r->opt.t, (unsigned long long)r->rng.s[0],
                 (unsigned long long)r->rng.s[1], (unsigned long long)r->rng.s[2],
                 (unsigned long long)r->rng.s[3], (long long)o->steps, (long long)o->batch,
                 (unsigned long long)o->seed, (unsigned long long)r->job->tok_hash);
        int64_t xn = r->job->xn;
        pu_st_out t[5] = {{"adam.m", r->opt.m, 1, {r->opt.n, 0}},
                          {"adam.v", r->opt.v, 1, {r->opt.n, 0}},
                          {"extra", r->job->xp, 1, {xn, 0}},
                          {"adam.xm", r->xm, 1, {xn, 0}},
                          {"adam.xv", r->xv, 1, {xn, 0}}};
        char *sp = pu_path_join(tmp, "train_state.safetensors");
        s = pu_train_write_safetensors(sp, t, xn > 0 ? 5 : 2, meta);
        pu_free(sp);
    }
    if (s == PU_OK) {
        rm_flat_dir(dir); /* a checkpoint of the same step from an earlier attempt */
        if (rename(tmp, dir) != 0)
            s = pu_err_set(PU_ERR_IO, "%s: cannot rename the checkpoint into place", dir);
    }
    if (s == PU_OK) {
        char *lp = pu_path_join(o->out_dir, "latest");
        char line[80];
        int n = snprintf(line, sizeof line, "%s\n", name);
        s = pu_file_write_atomic(lp, line, (size_t)n);
        pu_free(lp);
    }
    if (s != PU_OK) {
        rm_flat_dir(tmp);
        pu_err_prefix(s, "saving checkpoint at step %lld (the previous checkpoint %s is intact): ",
                      (long long)r->step, r->last_ckpt[0] ? r->last_ckpt : "(none)");
    } else {
        snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", name);
        char **names;
        int n = list_ckpts(o->out_dir, &names);
        int64_t keep = o->keep > 0 ? o->keep : 1;
        for (int i = 0; i + keep < n; i++) {
            if (!strcmp(names[i], name))
                continue;
            char *p = pu_path_join(o->out_dir, names[i]);
            rm_flat_dir(p);
            pu_free(p);
        }
        free_names(names, n);
    }
    pu_free(dir);
    pu_free(tmp);
    return s;
}

static pu_status parse_hex(const char *s, uint64_t *v, const char *what) {
    char *end;
    if (!s)
        return pu_err_set(PU_ERR_FORMAT, "%s: field missing", what);
    *v = strtoull(s, &end, 16);
    if (*end)
        return pu_err_set(PU_ERR_FORMAT, "%s: \"%s\" is not hex", what, s);
    return PU_OK;
}

/* load the checkpoint dir (name under out) into r; r->m, r->opt exist */
static pu_status load_ckpt(run_state *r, const char *name) {
    char *dir = pu_path_join(r->o->out_dir, name);
    /* the trainable weights: the model, or only the adapter over a frozen base */
    pu_status s = pu_tmodel_load_dir(r->m, dir);
    char *sp = pu_path_join(dir, "train_state.safetensors");
    pu_st_in f;
    if (s == PU_OK)
        s = pu_train_st_open(&f, sp);
    if (s == PU_OK && r->zero) { /* ZeRO-1: the whole moments, then this rank's range */
        int64_t n = pu_tmodel_numel(r->m);
        float *tmp = pu_malloc((size_t)(n ? n : 1) * sizeof(float));
        s = pu_train_st_get(&f, "adam.m", tmp, n);
        if (s == PU_OK)
            memcpy(r->opt.m, tmp + r->opt.lo, (size_t)r->opt.n * sizeof(float));
        if (s == PU_OK)
            s = pu_train_st_get(&f, "adam.v", tmp, n);
        if (s == PU_OK)
            memcpy(r->opt.v, tmp + r->opt.lo, (size_t)r->opt.n * sizeof(float));
        pu_free(tmp);
    } else if (s == PU_OK) {
        s = pu_train_st_get(&f, "adam.m", r->opt.m, r->opt.n);
        if (s == PU_OK)
            s = pu_train_st_get(&f, "adam.v", r->opt.v, r->opt.n);
    }
    if (s == PU_OK) {
        if (s == PU_OK && r->job->xn > 0)
            s = pu_train_st_get(&f, "extra", r->job->xp, r->job->xn);
        if (s == PU_OK && r->job->xn > 0)
            s = pu_train_st_get(&f, "adam.xm", r->xm, r->job->xn);
        if (s == PU_OK && r->job->xn > 0)
            s = pu_train_st_get(&f, "adam.xv", r->xv, r->job->xn);
        const char *st = pu_train_st_meta(&f, "step"), *at = pu_train_st_meta(&f, "adam_t");
        if (s == PU_OK && (!st || !at))
            s = pu_err_set(PU_ERR_FORMAT, "%s: __metadata__: step / adam_t missing", sp);
        char what[32];
        for (int i = 0; s == PU_OK && i < 4; i++) {
            snprintf(what, sizeof what, "rng%d", i);
            s = parse_hex(pu_train_st_meta(&f, what), &r->rng.s[i], sp);
        }
        if (s == PU_OK) {
            r->step = strtoll(st, NULL, 10);
            r->opt.t = strtoll(at, NULL, 10);
            const char *sb = pu_train_st_meta(&f, "batch");
            if (sb && strtoll(sb, NULL, 10) != r->o->batch)
                pu_log_warn("resume: checkpoint was trained with --batch %s, now %lld", sb,
                            (long long)r->o->batch);
        }
        pu_train_st_close(&f);
    }
    if (s != PU_OK)
        pu_err_prefix(s, "resuming from %s: ", dir);
    else
        snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", name);
    pu_free(sp);
    pu_free(dir);
    return s;
}

/* keep only complete metrics lines with step <= upto (train_impl.h) */
pu_status pu_train_truncate_metrics(const char *path, int64_t upto) {
    if (!pu_file_exists(path))
        return PU_OK;
    char *data = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(path, &data, &len));
    pu_str out = {0};
    char *p = data;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break; /* partial last line (killed mid-write) */
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        json_t *st = j ? json_object_get(j, "step") : NULL;
        if (st && json_is_integer(st) && json_integer_value(st) <= upto)
            pu_str_append(&out, p, (size_t)(nl - p + 1));
        if (j)
            json_decref(j);
        p = nl + 1;
    }
    pu_status s = pu_file_write_atomic(path, out.p ? out.p : "", out.len);
    pu_str_free(&out);
    pu_free(data);
    return s;
}

/* Validation over the job's eval batches of up to mb rows; with data
 * parallelism each rank takes its share of every batch and the sums are
 * all-reduced. */
static pu_status eval_val(run_state *r, int64_t T_step, double *out) {
    const pu_train_job *job = r->job;
    double sum = 0;
    int64_t cnt = 0, nb = job->eval_n(job->ctx);
    for (int64_t k = 0; k < nb; k++) {
        int64_t rows = 0, T = 0, lo, hi;
        bool packed = false;
        PU_TRY(job->eval_batch(job->ctx, k, r->mb, T_step, r->ids, r->tg, r->pos, r->seg, &rows, &T,
                               &packed));
        pu_split(rows, r->rank, r->nranks, &lo, &hi);
        if (hi <= lo)
            continue;
        pu_tbatch bt = {r->ids + lo * T,
                        r->tg + lo * T,
                        packed ? r->pos + lo * T : NULL,
                        packed ? r->seg + lo * T : NULL,
                        hi - lo,
                        T};
        double l;
        int64_t c;
        pu_tmodel_set_dropout(r->m, false, 0); /* evaluation: no adapter dropout */
        if (job->micro)
            PU_TRY(job->micro(job->ctx, r->m, r->pool, &bt, lo, true, 0.0f, &l, &c));
        else
            PU_TRY(pu_tmodel_forward(r->m, r->pool, &bt, &l, &c));
        sum += l;
        cnt += c;
    }
    PU_TRY(pu_dp_allreduce_f64(&sum, 1));
    PU_TRY(pu_dp_allreduce_i64(&cnt, 1));
    *out = cnt ? sum / (double)cnt : NAN;
    return PU_OK;
}

static void write_val(run_state *r, double vl, bool progress_enabled) {
    char extra[512] = "";
    if (r->job->metrics)
        r->job->metrics(r->job->ctx, true, extra, sizeof extra);
    if (isfinite(vl) && r->metrics) {
        fprintf(r->metrics, "{\"step\": %lld, \"val_loss\": %.17g%s}\n", (long long)r->step, vl,
                extra);
        fflush(r->metrics);
    }
    if (!r->quiet && !progress_enabled)
        pu_log_info("step %lld: val_loss %.4f", (long long)r->step, vl);
}

/* A checkpoint never holds a NaN / Inf weight: an update that made one
 * (overflowing moments, a zero epsilon over a zero gradient, ...) stops the
 * run here, naming the step and the first tensor, before anything is saved. */
static pu_status check_finite(run_state *r) {
    const float *w = pu_tmodel_params(r->m);
    for (int i = 0; i < pu_tmodel_n_params(r->m); i++) {
        const pu_param *p = pu_tmodel_param(r->m, i);
        if (p->flags & PU_PARAM_FROZEN)
            continue;
        int64_t bad = 0;
        for (int64_t k = 0; k < p->numel; k++)
            bad += !isfinite(w[p->offset + k]);
        if (bad)
            return pu_err_set(PU_ERR_INVALID,
                              "step %lld: the update left %lld non-finite weights in %s; "
                              "stopping before the checkpoint (last good checkpoint: %s)",
                              (long long)r->step, (long long)bad, p->name,
                              r->last_ckpt[0] ? r->last_ckpt : "none");
    }
    for (int64_t k = 0; k < r->job->xn; k++)
        if (!isfinite(r->job->xp[k]))
            return pu_err_set(PU_ERR_INVALID,
                              "step %lld: the update left non-finite extra parameters (%s); "
                              "stopping before the checkpoint (last good checkpoint: %s)",
                              (long long)r->step, r->job->label,
                              r->last_ckpt[0] ? r->last_ckpt : "none");
    return PU_OK;
}

static pu_status run(run_state *r) {
    const pu_train_opts *o = r->o;
    int64_t A = o->grad_accum, B = o->batch;
    const pu_train_job *job = r->job;
    pu_progress pg;
    pu_progress_init(&pg, job->label, o->steps, "step");
    if (r->quiet)
        pg.enabled = false;
    if (job->eval_n && job->eval_at_start && r->step == 0 && o->eval_every > 0) {
        double vl;
        PU_TRY(eval_val(r, r->Tmax, &vl));
        write_val(r, vl, pg.enabled);
    }
    double t0 = pu_time_now();
    int64_t step0 = r->step, tok_done = 0;
    while (r->step < o->steps) {
        int64_t s = r->step, T = 0;
        double ts = pu_time_now();
        /* the whole step's batch first: the count of targets scales the grads */
        int32_t *all_ids = r->ids + B * r->Tmax, *all_tg = r->tg + B * r->Tmax;
        int32_t *all_pos = r->pos + B * r->Tmax, *all_seg = r->seg + B * r->Tmax;
        bool packed = false;
        PU_TRY(job->batch(job->ctx, &r->rng, s, B, all_ids, all_tg, all_pos, all_seg, &T, &packed));
        int64_t count = 0;
        if (job->micro)
            count = B / (job->rows_per_unit > 0 ? job->rows_per_unit : 1);
        else
            for (int64_t i = 0; i < B * T; i++)
                count += all_tg[i] >= 0;
        pu_tmodel_zero_grad(r->m);
        if (job->xn > 0)
            memset(job->xg, 0, (size_t)job->xn * sizeof(float));
        double lsum = 0;
        /* this rank's share [lo, hi) of the B windows in A micro-batches (one
         * rank: exactly the A micro-batches of mb windows) */
        int64_t lo, hi, last = -1;
        pu_split(B, r->rank, r->nranks, &lo, &hi);
        for (int64_t a = 0; a < A; a++) {
            int64_t ma, mz;
            pu_split(hi - lo, (int)a, (int)A, &ma, &mz);
            if (mz > ma)
                last = a;
        }
        for (int64_t a = 0; a <= last; a++) {
            int64_t ma, mz;
            pu_split(hi - lo, (int)a, (int)A, &ma, &mz);
            if (mz == ma)
                continue;
            int64_t first = lo + ma;
            pu_tbatch bt = {all_ids + first * T,
                            all_tg + first * T,
                            packed ? all_pos + first * T : NULL,
                            packed ? all_seg + first * T : NULL,
                            mz - ma,
                            T};
            double l;
            int64_t c;
            /* adapter dropout masks from (seed, step, first row): resumable */
            pu_tmodel_set_dropout(r->m, true,
                                  o->seed * 0x9E3779B97F4A7C15ull ^
                                      (uint64_t)s * 0xC2B2AE3D27D4EB4Full ^
                                      (uint64_t)first * 0x165667B19E3779F9ull);
            if (r->dpg && a == last && job->micro)
                pu_dp_grads_begin(r->dpg);
            if (job->micro) {
                pu_status ms = job->micro(job->ctx, r->m, r->pool, &bt, first, false,
                                          (float)(1.0 / (double)(count ? count : 1)), &l, &c);
                if (ms != PU_OK)
                    return pu_err_prefix(ms,
                                         "step %lld (last good checkpoint: %s): ", (long long)s + 1,
                                         r->last_ckpt[0] ? r->last_ckpt : "none");
                lsum += l;
                continue;
            }
            PU_TRY(pu_tmodel_forward(r->m, r->pool, &bt, &l, &c));
            lsum += l;
            if (r->dpg && a == last) /* buckets start as this backward finishes them */
                pu_dp_grads_begin(r->dpg);
            pu_tmodel_backward(r->m, r->pool, (float)(1.0 / (double)(count ? count : 1)));
        }
        if (r->dpg) {
            PU_TRY(pu_dp_grads_finish(r->dpg));
            PU_TRY(pu_dp_allreduce_f64(&lsum, 1));
        }
        double loss = lsum / (double)(count ? count : 1);
        if (!isfinite(loss))
            return pu_err_set(PU_ERR_INVALID,
                              "step %lld: the training loss is %g; stopping "
                              "(last good checkpoint: %s)",
                              (long long)s + 1, loss, r->last_ckpt[0] ? r->last_ckpt : "none");
        double lr = pu_lr_at(s, o->steps, r->warmup, o->lr, r->min_lr);
        double gn =
            pu_adamw_step_x(&r->opt, r->m, r->pool, lr, job->xp, job->xg, r->xm, r->xv, job->xn);
        if (r->zero) /* ZeRO-1: each rank updated its range; everyone gets every range */
            PU_TRY(pu_dp_allgather_shards_f32(pu_tmodel_params(r->m), pu_tmodel_numel(r->m)));
        if (!isfinite(gn))
            return pu_err_set(PU_ERR_INVALID,
                              "step %lld: the gradient norm is %g; stopping "
                              "(last good checkpoint: %s)",
                              (long long)s + 1, gn, r->last_ckpt[0] ? r->last_ckpt : "none");
        r->step++;
        double now = pu_time_now(), dt = now - ts;
        tok_done += B * T;
        double tps = (double)(B * T) / (dt > 0 ? dt : 1e-9);
        char jextra[512] = "";
        if (job->metrics)
            job->metrics(job->ctx, false, jextra, sizeof jextra);
        if (r->metrics) { /* rank 0 */
            fprintf(r->metrics,
                    "{\"step\": %lld, \"loss\": %.17g%s, \"lr\": %.9g, \"grad_norm\": %.9g, "
                    "\"seq\": %lld, \"tokens\": %lld, \"tokens_per_s\": %.1f, \"time_s\": %.3f}\n",
                    (long long)r->step, loss, jextra, lr, gn, (long long)T,
                    (long long)job->tokens_upto(job->ctx, r->step), tps, now - t0);
            fflush(r->metrics);
        }
        if (job->eval_n && o->eval_every > 0 &&
            (r->step % o->eval_every == 0 || r->step == o->steps)) {
            double vl;
            PU_TRY(eval_val(r, T, &vl));
            write_val(r, vl, pg.enabled);
        }
        {
            double el = now - t0, avg = (double)tok_done / (el > 0 ? el : 1e-9);
            double eta = (double)(o->steps - r->step) * el / (double)(r->step - step0);
            char extra[160];
            snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f tok/s ETA %.0fs", loss, lr, avg,
                     eta);
            pu_progress_update(&pg, r->step, extra);
            if (!pg.enabled && !r->quiet &&
                (r->step % 10 == 0 || r->step == o->steps || r->step == step0 + 1))
                pu_log_info("step %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %.0fs",
                            (long long)r->step, (long long)o->steps, loss, lr, avg, eta);
        }
        if (o->kill_at > 0 && r->step == o->kill_at)
            raise(SIGKILL); /* testing: simulate a crash between checkpoints */
        if ((o->save_every > 0 && r->step % o->save_every == 0) || r->step == o->steps) {
            PU_TRY(check_finite(r));
            PU_TRY(save_ckpt(r));
        }
    }
    pu_progress_finish(&pg, NULL);
    if (r->dpg && !r->quiet) {
        pu_dp_stats st = pu_dp_grads_stats(r->dpg);
        pu_log_info("data parallel: %d ranks, %d gradient buckets, %.0f%% of bucket all-reduces "
                    "started during backward, %.3f s waiting for them in %lld steps",
                    r->nranks, st.n_buckets,
                    st.total ? 100.0 * (double)st.early / (double)st.total : 0.0, st.wait_s,
                    (long long)st.steps);
    }
    return PU_OK;
}

pu_status pu_train_loop(const pu_train_opts *o, const pu_train_job *job, pu_pool *pool) {
    if (o->steps <= 0 || o->batch <= 0 || o->grad_accum <= 0 || o->batch % o->grad_accum)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: --steps %lld and --batch %lld must be positive "
                          "and --batch divisible by --grad-accum %lld",
                          job->label, (long long)o->steps, (long long)o->batch,
                          (long long)o->grad_accum);
    if (!(o->lr > 0))
        return pu_err_set(PU_ERR_INVALID, "%s: --lr must be positive", job->label);
    run_state r;
    memset(&r, 0, sizeof r);
    r.o = o;
    r.job = job;
    r.pool = pool;
    r.rank = pu_dp_rank();
    r.nranks = pu_dp_size();
    r.quiet = o->quiet || r.rank != 0;
    r.mb = o->batch / o->grad_accum;
    /* rows of the model's activations: this rank's largest micro-batch
     * (training share / grad_accum, or its share of an eval batch) */
    int64_t cap = ((o->batch + r.nranks - 1) / r.nranks + o->grad_accum - 1) / o->grad_accum;
    int64_t ecap = (r.mb + r.nranks - 1) / r.nranks;
    cap = cap > ecap ? cap : ecap;
    if (r.nranks > 1 && o->batch < r.nranks && r.rank == 0)
        pu_log_warn("data parallel: --batch %lld < %d ranks; some ranks have no sequences",
                    (long long)o->batch, r.nranks);
    r.warmup = o->warmup >= 0 ? o->warmup : (o->steps / 10 < 100 ? o->steps / 10 : 100);
    r.min_lr = o->min_lr >= 0 ? o->min_lr : o->lr / 10;
    r.Tmax = job->Tmax;
    PU_TRY(pu_mkdir_p(o->out_dir));
    PU_TRY(r.rank == 0 ? pu_sweep_stale_tmp(o->out_dir, NULL) : PU_OK); /* killed writers' temps */
    if (r.rank == 0) { /* half-written checkpoints of a crashed save */
        DIR *d = opendir(o->out_dir);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (strncmp(e->d_name, ".tmp_step_", 10) == 0) {
                char *p = pu_path_join(o->out_dir, e->d_name);
                rm_flat_dir(p);
                pu_free(p);
            }
        if (d)
            closedir(d);
    }

    /* resume point */
    char ck[64] = "";
    if (o->resume) {
        char *lp = pu_path_join(o->out_dir, "latest");
        char *txt = NULL;
        size_t len = 0;
        if (pu_file_exists(lp) && pu_file_read_all(lp, &txt, &len) == PU_OK) {
            size_t n = strcspn(txt, "\r\n");
            if (n < sizeof ck && strncmp(txt, "step_", 5) == 0)
                memcpy(ck, txt, n), ck[n] = 0;
        }
        pu_free(txt);
        pu_free(lp);
        pu_err_clear();
        if (ck[0]) { /* latest must name a complete checkpoint */
            char *d = pu_path_join(o->out_dir, ck),
                 *sp = pu_path_join(d, "train_state.safetensors");
            if (!pu_file_exists(sp))
                ck[0] = 0;
            pu_free(sp);
            pu_free(d);
        }
        if (!ck[0]) { /* no usable pointer (crash before it was written): newest complete one */
            char **names;
            int n = list_ckpts(o->out_dir, &names);
            for (int i = n - 1; i >= 0 && !ck[0]; i--) {
                char *d = pu_path_join(o->out_dir, names[i]);
                char *sp = pu_path_join(d, "train_state.safetensors");
                if (pu_file_exists(sp) && strlen(names[i]) < sizeof ck)
                    snprintf(ck, sizeof ck, "%s", names[i]);
                pu_free(sp);
                pu_free(d);
            }
            free_names(names, n);
        }
        if (!ck[0] && !r.quiet)
            pu_log_info("resume: no checkpoint in %s yet; starting from scratch", o->out_dir);
    }

    /* the model (initial weights), then the checkpoint's state */
    pu_status s = PU_OK;
    {
        char *ckd = ck[0] ? pu_path_join(o->out_dir, ck) : NULL;
        s = job->make_model(job->ctx, ckd, cap, r.Tmax, &r.m, &r.tok_path);
        pu_free(ckd);
    }
    if (s == PU_OK) {
        r.zero = o->zero > 0 && r.nranks > 1;
        if (o->zero > 0 && r.nranks <= 1 && !r.quiet)
            pu_log_info("--zero %lld: one process, nothing to shard", (long long)o->zero);
        if (r.zero) {
            int64_t lo, hi, n = pu_tmodel_numel(r.m);
            pu_dp_shard_range(n, r.rank, r.nranks, &lo, &hi);
            pu_adamw_init_range(&r.opt, &o->adam, lo, hi);
            if (!o->quiet)
                pu_log_info("zero-1: AdamW moments of slab [%lld, %lld) on rank %d: %lld bytes "
                            "per rank (unsharded: %lld)",
                            (long long)lo, (long long)hi, r.rank, (long long)(hi - lo) * 8,
                            (long long)n * 8);
        } else {
            pu_adamw_init(&r.opt, &o->adam, pu_tmodel_numel(r.m));
        }
        r.xm = pu_calloc((size_t)(job->xn > 0 ? job->xn : 1), sizeof(float));
        r.xv = pu_calloc((size_t)(job->xn > 0 ? job->xn : 1), sizeof(float));
        pu_rng_seed(&r.rng, o->seed * 0x2545F4914F6CDD1Dull + 0x5851F42D4C957F2Dull);
        if (ck[0])
            s = load_ckpt(&r, ck);
    }
    if (s == PU_OK && r.nranks > 1) { /* every rank starts from rank 0's state */
        int64_t n = pu_tmodel_numel(r.m);
        s = pu_dp_bcast_f32(pu_tmodel_params(r.m), n, 0);
        if (s == PU_OK && !r.zero) /* ZeRO-1: each rank read its own range */
            s = pu_dp_bcast_f32(r.opt.m, n, 0);
        if (s == PU_OK && !r.zero)
            s = pu_dp_bcast_f32(r.opt.v, n, 0);
        uint64_t st[6] = {r.rng.s[0], r.rng.s[1], r.rng.s[2], r.rng.s[3], 0, 0};
        st[4] = (uint64_t)r.step;
        st[5] = (uint64_t)r.opt.t;
        if (s == PU_OK)
            s = pu_dp_check_same(st, sizeof st, "the resume point (step, data RNG)");
        if (s == PU_OK)
            s = pu_dp_grads_create(r.m, (int64_t)(o->dp_bucket_mb * 1048576.0), &r.dpg);
        if (s == PU_OK)
            pu_tmodel_set_grad_hook(r.m, pu_dp_grads_ready, r.dpg);
    }
    if (s == PU_OK) {
        r.metrics_path = o->metrics_path ? pu_strdup(o->metrics_path)
                                         : pu_path_join(o->out_dir, "metrics.jsonl");
        if (ck[0] && r.rank == 0)
            s = pu_train_truncate_metrics(r.metrics_path, r.step);
        if (s == PU_OK && r.rank == 0) {
            r.metrics = fopen(r.metrics_path, ck[0] ? "a" : "w");
            if (!r.metrics)
                s = pu_err_set(PU_ERR_IO, "%s: cannot open the metrics file", r.metrics_path);
        }
    }
    if (s == PU_OK) {
        size_t nb = (size_t)(2 * o->batch * r.Tmax) * sizeof(int32_t);
        r.ids = pu_malloc(nb);
        r.tg = pu_malloc(nb);
        r.pos = pu_malloc(nb);
        r.seg = pu_malloc(nb);
        if (!r.quiet)
            pu_log_info("%s: %lld parameters, %lld %s, batch %lld x %lld (micro %lld), "
                        "%lld steps from step %lld",
                        job->label, (long long)(pu_tmodel_numel(r.m)), (long long)job->n_items,
                        job->items, (long long)o->batch, (long long)r.Tmax, (long long)r.mb,
                        (long long)o->steps, (long long)r.step);
        if (!r.quiet)
            pu_log_info("attention %s, precision %s (bf16 level %s), recompute %s",
                        pu_tmodel_attn_name(r.m), pu_tmodel_precision_name(r.m),
                        pu_tmodel_bf16_level_name(r.m), pu_tmodel_recompute_name(r.m));
        if (!r.quiet && r.nranks > 1)
            pu_log_info("data parallel: %d ranks, %lld of the %lld sequences of a step each "
                        "(rank 0), %d gradient buckets",
                        r.nranks, (long long)((o->batch + r.nranks - 1) / r.nranks),
                        (long long)o->batch, pu_dp_grads_n_buckets(r.dpg));
        s = run(&r);
    }
    if (s == PU_OK && job->done && r.rank == 0)
        s = job->done(job->ctx, r.m);
    if (r.metrics)
        fclose(r.metrics);
    pu_free(r.ids);
    pu_free(r.tg);
    pu_free(r.pos);
    pu_free(r.seg);
    pu_free(r.tok_path);
    pu_free(r.metrics_path);
    pu_dp_grads_destroy(r.dpg);
    pu_adamw_free(&r.opt);
    pu_free(r.xm);
    pu_free(r.xv);
    pu_tmodel_destroy(r.m);
    return s;
}

/* ------------------------------------------------- pretraining: token shards */

typedef struct {
    const pu_train_opts *o;
    pu_train_job *job; /* make_model fills its data counters */
    pu_loader *train, *val;
    double fracs[MAX_STAGES];
    int64_t lens[MAX_STAGES];
    int nstages;
} shard_job;

static int64_t seq_at(const shard_job *j, int64_t step) {
    double f = (double)step / (double)j->o->steps;
    int64_t T = j->lens[0];
    for (int i = 0; i < j->nstages; i++)
        if (f >= j->fracs[i])
            T = j->lens[i];
    return T;
}

/* training tokens consumed by steps 0 .. step-1 (the seq schedule varies T) */
static int64_t shard_tokens_upto(void *ctx, int64_t step) {
    const shard_job *j = ctx;
    int64_t n = 0;
    for (int64_t s = 0; s < step; s++)
        n += j->o->batch * seq_at(j, s);
    return n;
}

static pu_status shard_batch(void *ctx, pu_rng *rng, int64_t s, int64_t B, int32_t *ids,
                             int32_t *tg, int32_t *pos, int32_t *seg, int64_t *T, bool *packed) {
    shard_job *j = ctx;
    *T = seq_at(j, s);
    *packed = false;
    return pu_loader_sample(j->train, rng, B, *T, ids, tg);
}

static int64_t shard_eval_n(void *ctx) {
    const shard_job *j = ctx;
    return j->o->eval_batches;
}

/* eval batch k: the mb deterministic windows k*mb .. k*mb+mb-1 at the current T */
static pu_status shard_eval_batch(void *ctx, int64_t k, int64_t mb, int64_t T_step, int32_t *ids,
                                  int32_t *tg, int32_t *pos, int32_t *seg, int64_t *rows,
                                  int64_t *T, bool *packed) {
    shard_job *j = ctx;
    for (int64_t b = 0; b < mb; b++)
        pu_loader_window(j->val, k * mb + b, T_step, ids + b * T_step, tg + b * T_step);
    *rows = mb;
    *T = T_step;
    *packed = false;
    return PU_OK;
}

/* config from the checkpoint being resumed, --init or --config */
static pu_status shard_make_model(void *ctx, const char *ckpt_dir, int64_t B, int64_t Tmax,
                                  pu_tmodel **m, char **tok_path) {
    shard_job *j = ctx;
    const pu_train_opts *o = j->o;
    pu_model *init = NULL;
    pu_config cfg;
    pu_status s = PU_OK;
    if (ckpt_dir) {
        char *cp = pu_path_join(ckpt_dir, "config.json");
        s = pu_config_load(cp, &cfg);
        pu_free(cp);
    } else if (o->init_dir) {
        s = pu_model_load(o->init_dir, &init);
        if (s == PU_OK)
            cfg = *pu_model_config(init);
    } else {
        s = pu_config_load(o->config_path, &cfg);
    }
    if (s == PU_OK && !ckpt_dir && o->rope_theta > 0) { /* a context stage: raised RoPE base */
        if (cfg.rope_theta != o->rope_theta)
            pu_log_info("rope_theta %g -> %g", cfg.rope_theta, o->rope_theta);
        cfg.rope_theta = o->rope_theta;
        if (cfg.max_position_embeddings < Tmax)
            cfg.max_position_embeddings = Tmax;
    }
    pu_tmodel_opts to;
    pu_tmodel_opts_default(&to);
    to.attn = o->attn;
    to.precision = o->precision;
    to.ce_chunk = o->ce_chunk;
    if (s == PU_OK)
        s = pu_tmodel_opts_set_recompute(&to, o->recompute);
    if (s == PU_OK)
        s = pu_tmodel_create_opts(&cfg, B, Tmax, &to, m);
    if (s == PU_OK)
        s = pu_loader_open(o->data_dir, "train", cfg.vocab_size, &j->train);
    if (s == PU_OK && o->eval_every > 0) {
        s = pu_loader_open(o->data_dir, "val", cfg.vocab_size, &j->val);
        if (s != PU_OK) {
            pu_log_warn("no validation split (%s); --eval-every ignored", pu_err_msg());
            pu_err_clear();
            j->val = NULL;
            s = PU_OK;
        }
    }
    if (s == PU_OK) {
        j->job->n_items = pu_loader_n_tokens(j->train);
        j->job->tok_hash = pu_loader_tok_hash(j->train);
        j->job->eval_n = j->val ? shard_eval_n : NULL;
        j->job->eval_batch = j->val ? shard_eval_batch : NULL;
    }
    if (s == PU_OK && !ckpt_dir) {
        if (init)
            s = pu_tmodel_load_weights(*m, init);
        else
            pu_tmodel_init_random(*m, o->seed, 0);
    }
    if (s == PU_OK) {
        *tok_path = data_tokenizer(o->data_dir);
        if (!*tok_path && init && pu_model_tokenizer_path(init))
            *tok_path = pu_strdup(pu_model_tokenizer_path(init));
    }
    pu_model_destroy(init);
    return s;
}

pu_status pu_train_run(const pu_train_opts *o, pu_pool *pool) {
    if (!o->out_dir || !o->data_dir || (!o->config_path && !o->init_dir))
        return pu_err_set(PU_ERR_INVALID, "train: --data, --out and --config (or --init) are "
                                          "required");
    shard_job j;
    memset(&j, 0, sizeof j);
    j.o = o;
    if (o->seq_schedule)
        PU_TRY(pu_seq_schedule_parse(o->seq_schedule, j.fracs, j.lens, MAX_STAGES, &j.nstages));
    else {
        j.nstages = 1;
        j.fracs[0] = 0;
        j.lens[0] = o->seq;
    }
    pu_train_job job = {.ctx = &j,
                        .label = "train",
                        .items = "train tokens",
                        .make_model = shard_make_model,
                        .batch = shard_batch,
                        .tokens_upto = shard_tokens_upto};
    for (int i = 0; i < j.nstages; i++)
        job.Tmax = j.lens[i] > job.Tmax ? j.lens[i] : job.Tmax;
    j.job = &job;
    /* the loaders open in make_model (they need the model's vocabulary) */
    pu_status s = pu_train_loop(o, &job, pool);
    pu_loader_close(j.train);
    pu_loader_close(j.val);
    return s;
}

int64_t pu_epoch_order_at(pu_epoch_order *o, int64_t n, bool shuffle, uint64_t seed, int64_t i) {
    if (!shuffle)
        return i % n;
    int64_t e = i / n;
    if (!o->perm || o->epoch != e) {
        if (!o->perm)
            o->perm = pu_malloc((size_t)n * sizeof(int64_t));
        pu_rng g;
        pu_rng_seed(&g, seed * 0x9E3779B97F4A7C15ull + (uint64_t)e * 0xD1B54A32D192ED03ull);
        for (int64_t k = 0; k < n; k++)
            o->perm[k] = k;
        for (int64_t k = n - 1; k > 0; k--) {
            int64_t r = (int64_t)(pu_rng_u64(&g) % (uint64_t)(k + 1));
            int64_t t = o->perm[k];
            o->perm[k] = o->perm[r];
            o->perm[r] = t;
        }
        o->epoch = e;
    }
    return o->perm[i % n];
}

void pu_epoch_order_free(pu_epoch_order *o) {
    pu_free(o->perm);
    o->perm = NULL;
}

int pu_train_list_ckpts(const char *out_dir, char ***names) {
    return list_ckpts(out_dir, names);
}

void pu_train_free_ckpt_names(char **names, int n) {
    free_names(names, n);
}
