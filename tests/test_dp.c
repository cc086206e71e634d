/*
 * test_dp.c — data-parallel training (src/train/dp.c, include/puyu/pu_dp.h).
 *
 * train_dp runs in three settings:
 *  - `make test` (no MPI): the single-rank API (rank 0 of 1, collectives are
 *    no-ops) and the bucket plan over a tiny model's gradient slab;
 *  - `make MPI=1 test-mpi`, as one process: additionally `puyu train` alone
 *    vs `mpirun -np 2 puyu train` with the same global batch and seed (and a
 *    run killed with SIGKILL and resumed under mpirun): every step's loss and
 *    validation loss within 1e-5 nats (absolute), final weights within 2e-5
 *    (absolute, max over all parameters);
 *  - `make MPI=1 test-mpi`, under `mpirun -np 2`: each rank runs backward on
 *    its share of a batch, the bucketed all-reduce (driven by the backward
 *    hook) must give the full-batch gradient of one process, bitwise the same
 *    on every rank.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_dp.h"
#include "puyu/pu_shard.h"
#include "puyu/pu_train.h"

static const char *dp_config =
    "{\"architectures\": [\"InternLM2ForCausalLM\"], \"model_type\": \"internlm2\", "
    "\"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64, "
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
    "\"hidden_act\": \"silu\", \"max_position_embeddings\": 64, \"initializer_range\": 0.05, "
    "\"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"rope_scaling\": null, "
    "\"tie_word_embeddings\": false, \"bias\": false, \"bos_token_id\": 1, \"eos_token_id\": 2, "
    "\"pad_token_id\": 0}";

/* synthetic corpus (as test_train_run.c): noisy counting documents + EOS */
static pu_status dp_shards(const char *dir, int64_t vocab, int64_t n_docs, uint64_t seed,
                           const char *split) {
    pu_rng r;
    pu_rng_seed(&r, seed);
    int32_t *ids = pu_malloc((size_t)n_docs * 80 * sizeof(int32_t));
    int64_t *starts = pu_malloc((size_t)n_docs * sizeof(int64_t));
    int64_t n = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        starts[d] = n;
        int64_t len = 20 + (int64_t)(pu_rng_u64(&r) % 50);
        int32_t x = 3 + (int32_t)(pu_rng_u64(&r) % (uint64_t)(vocab - 3));
        for (int64_t i = 0; i < len; i++) {
            ids[n++] = x;
            x = pu_rng_float(&r) < 0.8f ? 3 + (x - 3 + 1) % (int32_t)(vocab - 3)
                                        : 3 + (int32_t)(pu_rng_u64(&r) % (uint64_t)(vocab - 3));
        }
        ids[n++] = 2;
    }
    PU_TRY(pu_mkdir_p(dir));
    char name[64];
    snprintf(name, sizeof name, "%s_000000.bin", split);
    char *p = pu_path_join(dir, name);
    pu_status s = pu_shard_write(p, ids, n, starts, n_docs, vocab, 0x1234);
    pu_free(p);
    pu_free(ids);
    pu_free(starts);
    return s;
}

static pu_status tiny_model(int64_t B, int64_t T, pu_tmodel **m) {
    pu_config c;
    PU_TRY(pu_config_parse(dp_config, strlen(dp_config), "dp_config", &c));
    PU_TRY(pu_tmodel_create(&c, B, T, m));
    pu_tmodel_init_random(*m, 7, 0);
    return PU_OK;
}

static void test_api(void) {
    int size = pu_dp_size(), rank = pu_dp_rank();
    if (PT_TEST("ranks and collectives")) {
        PT_CHECK(rank >= 0 && rank < size);
        PT_EQ_I64(pu_dp_is_root(), rank == 0);
        if (!pu_dp_compiled())
            PT_EQ_I64(size, 1);
        double d[2] = {1.5, (double)rank};
        int64_t k[2] = {3, rank};
        PT_OK(pu_dp_allreduce_f64(d, 2));
        PT_OK(pu_dp_allreduce_i64(k, 2));
        PT_NEAR(d[0], 1.5 * size, 0, 0);
        PT_NEAR(d[1], size * (size - 1) / 2.0, 0, 0);
        PT_EQ_I64(k[0], 3 * size);
        PT_EQ_I64(k[1], size * (size - 1) / 2);
        float f[3] = {(float)rank, 2, 3};
        PT_OK(pu_dp_bcast_f32(f, 3, 0));
        PT_CHECK(f[0] == 0 && f[2] == 3);
        PT_OK(pu_dp_barrier());
        PT_OK(pu_dp_check_same(f, sizeof f, "test buffer"));
        if (size > 1) { /* differing data is detected */
            pu_status s = pu_dp_check_same(&rank, sizeof rank, "the rank number");
            PT_CHECK(s == PU_ERR_INTERNAL && strstr(pu_err_msg(), "the rank number"));
        }
    }
    if (PT_TEST("ZeRO-1: sharded AdamW steps == the whole-slab AdamW, shards gathered")) {
        /* every rank's range updated by its own optimizer (moments of 1/N)
         * from the same gradient gives bitwise the whole-slab update; on MPI
         * the all-gather then gives every rank every range */
        pu_tmodel *a = NULL, *b = NULL;
        PT_OK(tiny_model(1, 8, &a));
        PT_OK(tiny_model(1, 8, &b));
        if (!a || !b) {
            pu_tmodel_destroy(a);
            pu_tmodel_destroy(b);
            return;
        }
        int64_t n = pu_tmodel_numel(a);
        enum { NS = 3 };
        pu_adamw_cfg cfg = pu_adamw_default();
        cfg.clip = 0.05; /* the clip coefficient is active */
        pu_adamw full;
        pu_adamw_init(&full, &cfg, n);
        pu_adamw sh[NS];
        int64_t covered = 0, moments = 0;
        for (int r = 0; r < NS; r++) {
            int64_t lo, hi;
            pu_dp_shard_range(n, r, NS, &lo, &hi);
            PT_EQ_I64(lo, covered);
            PT_CHECK(lo % 16 == 0 && hi >= lo);
            covered = hi;
            pu_adamw_init_range(&sh[r], &cfg, lo, hi);
            moments += sh[r].n;
        }
        PT_EQ_I64(covered, n);
        PT_EQ_I64(moments, n); /* each rank: about n / NS */
        float *g = pu_malloc((size_t)n * sizeof(float));
        pu_rng rg;
        pu_rng_seed(&rg, 99);
        for (int step = 0; step < 3; step++) {
            for (int64_t i = 0; i < n; i++)
                g[i] = (float)(pu_rng_double(&rg) - 0.5);
            memcpy(pu_tmodel_grads(a), g, (size_t)n * sizeof(float));
            double na = pu_adamw_step(&full, a, NULL, 1e-2);
            for (int r = 0; r < NS; r++) { /* each rank has the summed gradient */
                memcpy(pu_tmodel_grads(b), g, (size_t)n * sizeof(float));
                double nb = pu_adamw_step(&sh[r], b, NULL, 1e-2);
                PT_CHECK(na == nb);
            }
        }
        PT_CHECK(memcmp(pu_tmodel_params(a), pu_tmodel_params(b), (size_t)n * sizeof(float)) ==
                 0);
        for (int r = 0; r < NS; r++) {
            PT_CHECK(memcmp(sh[r].m, full.m + sh[r].lo, (size_t)sh[r].n * sizeof(float)) == 0);
            pu_adamw_free(&sh[r]);
        }
        /* the collectives over this run's ranks: gather + all-gather of the shards */
        int64_t lo, hi;
        pu_dp_shard_range(n, rank, size, &lo, &hi);
        float *w = pu_malloc((size_t)n * sizeof(float)), *all = pu_malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            w[i] = i >= lo && i < hi ? (float)i : -1.0f;
        PT_OK(pu_dp_gather_shards_f32(w + lo, all, n, 0));
        PT_OK(pu_dp_allgather_shards_f32(w, n));
        bool ok = true;
        for (int64_t i = 0; i < n; i++)
            ok = ok && w[i] == (float)i && (rank != 0 || all[i] == (float)i);
        PT_CHECK(ok);
        pu_free(w);
        pu_free(all);
        pu_free(g);
        pu_adamw_free(&full);
        pu_tmodel_destroy(a);
        pu_tmodel_destroy(b);
    }
    if (PT_TEST("bucket plan covers the gradient slab in reverse table order")) {
        pu_tmodel *m = NULL;
        PT_OK(tiny_model(1, 8, &m));
        if (!m)
            return;
        int np = pu_tmodel_n_params(m);
        int64_t caps[3] = {1, 16 << 10, 1 << 30};
        for (int c = 0; c < 3; c++) {
            pu_dp_grads *g = NULL;
            PT_OK(pu_dp_grads_create(m, caps[c], &g));
            if (!g)
                continue;
            int nb = pu_dp_grads_n_buckets(g);
            PT_CHECK(nb >= 1 && nb <= np);
            if (c == 0)
                PT_EQ_I64(nb, np); /* 1 byte: one tensor per bucket */
            if (c == 2)
                PT_EQ_I64(nb, 1);
            int end = np;
            int64_t off = pu_tmodel_numel(m), sum = 0;
            for (int i = 0; i < nb; i++) {
                const pu_dp_bucket *b = pu_dp_grads_bucket(g, i);
                PT_EQ_I64(b->end, end);
                PT_CHECK(b->first < b->end);
                PT_EQ_I64(b->offset + b->numel, off);
                PT_EQ_I64(b->offset, pu_tmodel_param(m, b->first)->offset);
                if (i + 1 < nb) /* every bucket but the last reaches the cap */
                    PT_CHECK(b->numel * 4 >= caps[c]);
                end = b->first;
                off = b->offset;
                sum += b->numel;
            }
            PT_EQ_I64(end, 0);
            PT_EQ_I64(sum, pu_tmodel_numel(m));
            pu_dp_grads_destroy(g);
        }
        pu_tmodel_destroy(m);
    }
    if (PT_TEST("bucketed all-reduce of the ranks' shares == the full-batch gradient")) {
        const int64_t B = 4, T = 8;
        pu_tmodel *m = NULL;
        PT_OK(tiny_model(B, T, &m));
        if (!m)
            return;
        int64_t n = pu_tmodel_numel(m);
        int32_t ids[32], tg[32];
        pu_rng r;
        pu_rng_seed(&r, 11);
        for (int i = 0; i < B * T; i++) {
            ids[i] = (int32_t)(pu_rng_u64(&r) % 64);
            tg[i] = i % 7 == 3 ? PU_IGNORE_INDEX : (int32_t)(pu_rng_u64(&r) % 64);
        }
        /* one process, the whole batch */
        pu_tbatch full = {ids, tg, NULL, NULL, B, T};
        double lfull;
        int64_t cnt;
        pu_tmodel_zero_grad(m);
        PT_OK(pu_tmodel_forward(m, NULL, &full, &lfull, &cnt));
        float scale = (float)(1.0 / (double)cnt);
        pu_tmodel_backward(m, NULL, scale);
        float *gfull = pu_malloc((size_t)n * sizeof(float));
        memcpy(gfull, pu_tmodel_grads(m), (size_t)n * sizeof(float));
        /* this rank's share, then the bucketed all-reduce */
        int64_t lo, hi;
        pu_split(B, rank, size, &lo, &hi);
        pu_dp_grads *g = NULL;
        PT_OK(pu_dp_grads_create(m, 2048, &g)); /* small buckets: several in flight */
        if (g) {
            pu_tmodel_zero_grad(m);
            double lsum = 0;
            pu_dp_grads_begin(g);
            /* the backward's hook starts each bucket as soon as it is final */
            pu_tmodel_set_grad_hook(m, pu_dp_grads_ready, g);
            if (hi > lo) {
                pu_tbatch part = {ids + lo * T, tg + lo * T, NULL, NULL, hi - lo, T};
                int64_t c2;
                PT_OK(pu_tmodel_forward(m, NULL, &part, &lsum, &c2));
                pu_tmodel_backward(m, NULL, scale);
            }
            pu_tmodel_set_grad_hook(m, NULL, NULL);
            PT_OK(pu_dp_grads_finish(g));
            PT_OK(pu_dp_allreduce_f64(&lsum, 1));
            PT_NEAR(lsum, lfull, 1e-12, 1e-12);
            PT_ALLCLOSE("all-reduced gradient", pu_tmodel_grads(m), gfull, n, 1e-7, 1e-4);
            PT_OK(pu_dp_check_same(pu_tmodel_grads(m), (size_t)n * sizeof(float),
                                   "the all-reduced gradient"));
            pu_dp_stats st = pu_dp_grads_stats(g);
            PT_EQ_I64(st.steps, 1);
            if (size > 1) {
                PT_EQ_I64(st.total, pu_dp_grads_n_buckets(g));
                PT_CHECK_MSG(st.early == st.total, "%lld of %lld buckets started by the hook",
                             (long long)st.early, (long long)st.total);
            }
            pu_dp_grads_destroy(g);
        }
        pu_free(gfull);
        pu_tmodel_destroy(m);
    }
}

/* ---------------------------------------------------------------- CLI runs */

typedef struct {
    double loss[64], val[64];
    int n, nval;
} dp_metrics;

static bool read_metrics(const char *path, dp_metrics *mt) {
    memset(mt, 0, sizeof *mt);
    char *data = NULL;
    size_t len = 0;
    if (pu_file_read_all(path, &data, &len) != PU_OK)
        return false;
    for (char *p = data; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        if (j) {
            json_int_t st = json_integer_value(json_object_get(j, "step"));
            json_t *l = json_object_get(j, "loss"), *v = json_object_get(j, "val_loss");
            if (st >= 1 && st <= 64 && l) {
                mt->loss[st - 1] = json_real_value(l);
                mt->n = (int)st > mt->n ? (int)st : mt->n;
            }
            if (st >= 1 && st <= 64 && v) {
                mt->val[st - 1] = json_real_value(v);
                mt->nval++;
            }
            json_decref(j);
        }
        p = nl + 1;
    }
    pu_free(data);
    return true;
}

/* max |a - b| over steps 1..n of both loss and val_loss; -1 on a length mismatch */
static double max_loss_diff(const dp_metrics *a, const dp_metrics *b) {
    if (a->n != b->n || a->nval != b->nval)
        return -1;
    double d = 0;
    for (int i = 0; i < a->n; i++) {
        double x = fabs(a->loss[i] - b->loss[i]), y = fabs(a->val[i] - b->val[i]);
        d = x > d ? x : d;
        d = y > d ? y : d;
        if (isnan(x) || isnan(y))
            return INFINITY;
    }
    return d;
}

static double max_weight_diff(const char *dir_a, const char *dir_b) {
    pu_model *ma = NULL, *mb = NULL;
    pu_tmodel *ta = NULL, *tb = NULL;
    double d = INFINITY;
    if (pu_model_load(dir_a, &ma) == PU_OK && pu_model_load(dir_b, &mb) == PU_OK &&
        pu_tmodel_create(pu_model_config(ma), 1, 4, &ta) == PU_OK &&
        pu_tmodel_create(pu_model_config(mb), 1, 4, &tb) == PU_OK &&
        pu_tmodel_load_weights(ta, ma) == PU_OK && pu_tmodel_load_weights(tb, mb) == PU_OK &&
        pu_tmodel_numel(ta) == pu_tmodel_numel(tb)) {
        const float *a = pu_tmodel_params(ta), *b = pu_tmodel_params(tb);
        d = 0;
        for (int64_t i = 0; i < pu_tmodel_numel(ta); i++) {
            double x = fabs((double)a[i] - (double)b[i]);
            if (!(x <= d))
                d = x;
        }
    }
    pu_tmodel_destroy(ta);
    pu_tmodel_destroy(tb);
    pu_model_destroy(ma);
    pu_model_destroy(mb);
    return d;
}

static void test_cli(void) {
    if (!PT_TEST("mpirun -np 2 puyu train == one process (same global batch), resume"))
        return;
    if (!pu_dp_compiled()) {
        pt_skip("built without MPI (make MPI=1 test-mpi runs this)");
        return;
    }
    if (pu_dp_size() > 1) {
        pt_skip("already running under mpirun (the single-process run of this suite does it)");
        return;
    }
    const char *mpirun = getenv("PUYU_MPIRUN");
    char cmd[8192];
    if (!mpirun || !*mpirun) {
        if (pt_run("command -v mpirun >/dev/null 2>&1", NULL) != 0) {
            pt_skip("mpirun not found (apt-get install openmpi-bin)");
            return;
        }
        mpirun = "mpirun --oversubscribe --allow-run-as-root";
    }
    snprintf(cmd, sizeof cmd, "%s train --help 2>&1 | grep -q -- --dp-bucket-mb", pt_bin());
    if (pt_run(cmd, NULL) != 0) {
        pt_skip("`puyu train` has no data-parallel support wired in yet (--dp-bucket-mb)");
        return;
    }
    char cfg[512], data[512], a[512], b[512], c[512];
    pt_tmp_path("dp_cfg.json", cfg, sizeof cfg);
    pt_tmp_path("dp_data", data, sizeof data);
    pt_tmp_path("dp_one", a, sizeof a);
    pt_tmp_path("dp_two", b, sizeof b);
    pt_tmp_path("dp_resumed", c, sizeof c);
    if (pu_file_write_atomic(cfg, dp_config, strlen(dp_config)) != PU_OK ||
        dp_shards(data, 64, 60, 1, "train") != PU_OK ||
        dp_shards(data, 64, 10, 2, "val") != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "setup: %s", pu_err_msg());
        return;
    }
    /* 10 steps, global batch 4 in 2 micro-batches (each rank: 2 sequences, one
     * per micro-batch), validation every 5 steps, tiny buckets (several in
     * flight during backward) */
    char common[3000];
    snprintf(common, sizeof common,
             "train --config %s --data %s --steps 10 --batch 4 --seq 16 --lr 0.01 --seed 3 "
             "--grad-accum 2 --warmup 2 --eval-every 5 --eval-batches 2 --save-every 5 "
             "--threads 1 --dp-bucket-mb 0.004",
             cfg, data);
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s %s --out %s -q 2>&1", pt_bin(), common, a);
    int rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 0, "one process: %s", out ? out : "");
    pu_free(out);
    out = NULL;
    snprintf(cmd, sizeof cmd, "%s -np 2 %s %s --out %s --log-level info 2>&1", mpirun, pt_bin(),
             common, b);
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 0, "mpirun -np 2: %s", out ? out : "");
    PT_CHECK_MSG(out && strstr(out, "data parallel: 2 ranks"), "no data-parallel summary: %s",
                 out ? out : "");
    pu_free(out);
    char p[700], q[700];
    dp_metrics ma, mb, mc;
    snprintf(p, sizeof p, "%s/metrics.jsonl", a);
    snprintf(q, sizeof q, "%s/metrics.jsonl", b);
    PT_CHECK(read_metrics(p, &ma) && read_metrics(q, &mb));
    PT_EQ_I64(ma.n, 10);
    PT_EQ_I64(ma.nval, 2);
    double dl = max_loss_diff(&ma, &mb);
    printf("  max |loss(1 process) - loss(2 ranks)| over 10 steps + 2 evals: %.3g nats\n", dl);
    PT_CHECK_MSG(dl >= 0 && dl <= 1e-5, "loss difference %g (> 1e-5 or step counts differ)", dl);
    snprintf(p, sizeof p, "%s/step_00000010", a);
    snprintf(q, sizeof q, "%s/step_00000010", b);
    double dw = max_weight_diff(p, q);
    printf("  max |weight(1 process) - weight(2 ranks)| after 10 steps: %.3g\n", dw);
    PT_CHECK_MSG(dw <= 2e-5, "final weights differ by %g", dw);

    /* ZeRO-1: the moments sharded over the 2 ranks; killed after step 7 and
     * resumed (the checkpoint gathers the shards, the resume splits them) */
    char z[512];
    pt_tmp_path("dp_zero", z, sizeof z);
    snprintf(cmd, sizeof cmd, "%s -np 2 %s %s --zero 1 --out %s -q --kill-at-step 7 >/dev/null 2>&1",
             mpirun, pt_bin(), common, z);
    rc = pt_run(cmd, NULL);
    PT_CHECK_MSG(rc != 0, "the killed --zero 1 run exited with 0");
    out = NULL;
    snprintf(cmd, sizeof cmd, "%s -np 2 %s %s --zero 1 --out %s --resume --log-level info 2>&1",
             mpirun, pt_bin(), common, z);
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 0, "--zero 1 under mpirun: %s", out ? out : "");
    const char *zl = out ? strstr(out, "zero-1: AdamW moments") : NULL;
    PT_CHECK_MSG(zl != NULL, "no zero-1 line: %s", out ? out : "");
    if (zl) {
        const char *e = strchr(zl, '\n');
        printf("  %.*s\n", e ? (int)(e - zl) : (int)strlen(zl), zl);
    }
    pu_free(out);
    dp_metrics mz;
    snprintf(p, sizeof p, "%s/metrics.jsonl", z);
    PT_CHECK(read_metrics(p, &mz));
    double dz = max_loss_diff(&ma, &mz);
    printf("  max |loss(1 process) - loss(2 ranks, --zero 1, killed at 7, resumed)|: %.3g nats\n",
           dz);
    PT_CHECK_MSG(dz >= 0 && dz <= 1e-5, "--zero 1 loss difference %g", dz);
    snprintf(p, sizeof p, "%s/step_00000010", a);
    snprintf(q, sizeof q, "%s/step_00000010", z);
    dw = max_weight_diff(p, q);
    printf("  max |weight(1 process) - weight(2 ranks, --zero 1)| after 10 steps: %.3g\n", dw);
    PT_CHECK_MSG(dw <= 2e-5, "--zero 1 final weights differ by %g", dw);
    /* the gathered moments of the checkpoint equal plain data parallelism's */
    snprintf(p, sizeof p, "%s/step_00000010/train_state.safetensors", b);
    snprintf(q, sizeof q, "%s/step_00000010/train_state.safetensors", z);
    {
        char *da = NULL, *dbz = NULL;
        size_t la = 0, lb = 0;
        PT_CHECK(pu_file_read_all(p, &da, &la) == PU_OK && pu_file_read_all(q, &dbz, &lb) == PU_OK);
        PT_CHECK_MSG(la == lb && da && dbz && memcmp(da, dbz, la) == 0,
                     "train_state.safetensors of --zero 1 differs from plain data parallel");
        pu_free(da);
        pu_free(dbz);
    }

    /* killed under mpirun after step 7 (checkpoint at 5), resumed with 2 ranks */
    snprintf(cmd, sizeof cmd, "%s -np 2 %s %s --out %s -q --kill-at-step 7 >/dev/null 2>&1", mpirun,
             pt_bin(), common, c);
    rc = pt_run(cmd, NULL);
    PT_CHECK_MSG(rc != 0, "the killed run exited with 0");
    out = NULL;
    snprintf(cmd, sizeof cmd, "%s -np 2 %s %s --out %s -q --resume 2>&1", mpirun, pt_bin(), common,
             c);
    rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 0, "resume under mpirun: %s", out ? out : "");
    pu_free(out);
    snprintf(p, sizeof p, "%s/metrics.jsonl", c);
    PT_CHECK(read_metrics(p, &mc));
    double dr = max_loss_diff(&ma, &mc);
    printf("  max |loss(1 process) - loss(2 ranks, killed at 7, resumed)|: %.3g nats\n", dr);
    PT_CHECK_MSG(dr >= 0 && dr <= 1e-5, "resumed loss difference %g", dr);
}

PT_SUITE(train_dp) {
    pu_status s = pu_dp_init(NULL, NULL);
    if (s != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "pu_dp_init: %s", pu_err_msg());
        return;
    }
    if (pu_dp_size() > 1)
        printf("  rank %d of %d\n", pu_dp_rank(), pu_dp_size());
    test_api();
    test_cli();
    pu_dp_finalize();
}
