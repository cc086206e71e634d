/*
 * test_ppo.c — `puyu ppo`: the loss math on a fixed rollout against the
 * PyTorch reference (tests/golden/ppo/rollout.json from tools/ppo_ref.py:
 * KL rewards, GAE advantages / returns, OpenRLHF and TRL whitening, clipped
 * policy and value losses and their gradients w.r.t. logp / values); a tiny
 * end-to-end run (the tests/golden/sft/hf policy, a reward model written
 * from it with a seeded v_head): metrics fields, determinism with a seed,
 * resume with another reward model, LoRA rollouts through the engine's
 * per-request adapters; bad input.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_align.h"
#include "train/train_impl.h"

#define POLICY "tests/golden/sft/hf"

static float *farr(json_t *r, const char *key, int64_t *n) {
    json_t *a = json_object_get(r, key);
    *n = (int64_t)json_array_size(a);
    float *v = pu_malloc((size_t)(*n > 0 ? *n : 1) * sizeof(float));
    for (int64_t i = 0; i < *n; i++)
        v[i] = (float)json_number_value(json_array_get(a, (size_t)i));
    return v;
}

static double fnum(json_t *r, const char *key) { return json_number_value(json_object_get(r, key)); }

static void test_ppo_math(void) {
    if (!PT_TEST("ppo: advantages/returns, whitening, clipped losses + grads = PyTorch"))
        return;
    json_t *r = NULL;
    PT_OK(pu_json_load_file("tests/golden/ppo/rollout.json", &r));
    if (!r)
        return;
    int64_t B = (int64_t)fnum(r, "B"), T = (int64_t)fnum(r, "T"), n, nb;
    float *mask = farr(r, "mask", &n), *logp = farr(r, "logp", &n), *ref = farr(r, "ref", &n),
          *old = farr(r, "old", &n), *vals = farr(r, "values", &n),
          *oldv = farr(r, "old_values", &n), *score = farr(r, "score", &nb);
    PT_EQ_I64(n, B * T);
    float *rew = pu_malloc((size_t)n * 4), *kl = pu_malloc((size_t)B * 4),
          *adv = pu_malloc((size_t)n * 4), *ret = pu_malloc((size_t)n * 4),
          *d = pu_malloc((size_t)n * 4);
    const char *wn[2] = {"openrlhf", "trl"};
    pu_whiten_kind wk[2] = {PU_WHITEN_OPENRLHF, PU_WHITEN_TRL};
    for (int w = 0; w < 3; w++) {
        pu_ppo_advantages(logp, ref, vals, mask, score, B, T, fnum(r, "kl_coef"), fnum(r, "gamma"),
                          fnum(r, "lam"), w < 2 ? wk[w] : PU_WHITEN_NONE, rew, kl, adv, ret);
        int64_t m;
        float *want = farr(r, "rewards", &m);
        PT_ALLCLOSE("rewards", rew, want, n, 1e-6, 1e-5);
        pu_free(want);
        want = farr(r, "kl", &m);
        PT_ALLCLOSE("kl", kl, want, B, 1e-6, 1e-5);
        pu_free(want);
        want = farr(r, "returns", &m);
        PT_ALLCLOSE("returns", ret, want, n, 1e-6, 1e-5);
        pu_free(want);
        char key[64];
        snprintf(key, sizeof key, w < 2 ? "adv_%s" : "adv_raw", w < 2 ? wn[w] : "");
        want = farr(r, key, &m);
        /* masked positions: OpenRLHF leaves them shifted, TRL zeroes them; the
         * losses never read them, so compare valid tokens (and TRL's zeros) */
        for (int64_t i = 0; i < n; i++)
            if (mask[i] == 0 && w == 0)
                want[i] = adv[i];
        PT_ALLCLOSE(key, adv, want, n, 1e-6, 1e-5);
        pu_free(want);
        if (w == 2)
            continue;
        pu_ppo_metrics pm;
        PT_OK(pu_ppo_policy_loss(logp, old, adv, mask, n, fnum(r, "clip_eps"), &pm, d));
        snprintf(key, sizeof key, "policy_loss_%s", wn[w]);
        PT_NEAR(pm.loss, fnum(r, key), 1e-7, 1e-5);
        snprintf(key, sizeof key, "clipfrac_%s", wn[w]);
        PT_NEAR(pm.clipfrac, fnum(r, key), 1e-9, 0);
        PT_CHECK(pm.clipfrac > 0 && pm.clipfrac < 1); /* both branches exercised */
        snprintf(key, sizeof key, "d_logp_%s", wn[w]);
        want = farr(r, key, &m);
        PT_ALLCLOSE(key, d, want, n, 1e-8, 1e-5);
        pu_free(want);
    }
    double vl, cf;
    float *R = farr(r, "returns", &n);
    PT_OK(pu_ppo_value_loss(vals, oldv, R, mask, n, fnum(r, "value_clip"), &vl, &cf, d));
    PT_NEAR(vl, fnum(r, "value_loss"), 1e-7, 1e-5);
    PT_CHECK(cf > 0 && cf < 1);
    int64_t m;
    float *want = farr(r, "d_values", &m);
    PT_ALLCLOSE("d_values", d, want, n, 1e-8, 1e-5);
    pu_free(want);
    pu_free(R);
    float *fs[] = {mask, logp, ref, old, vals, oldv, score, rew, kl, adv, ret, d};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        pu_free(fs[i]);
    json_decref(r);
}

/* the critic's body: a training model without the LM head gives the same
 * hidden states and, from dhidden, the same gradients (bitwise) */
static void test_no_lm_head(void) {
    if (!PT_TEST("ppo: critic body (no_lm_head) = the full model's hidden states and grads"))
        return;
    pu_model *base = NULL;
    PT_OK(pu_model_load(POLICY, &base));
    if (!base)
        return;
    pu_tmodel *m[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        pu_tmodel_opts o;
        pu_tmodel_opts_default(&o);
        o.no_lm_head = k == 1;
        PT_OK(pu_tmodel_create_from(base, 2, 8, &o, &m[k]));
    }
    if (m[0] && m[1]) {
        PT_CHECK(pu_tmodel_act_bytes(m[1]) < pu_tmodel_act_bytes(m[0]));
        int32_t ids[16], tg[16];
        for (int i = 0; i < 16; i++)
            ids[i] = (int32_t)((i * 37 + 5) % 1600);
        for (int i = 0; i < 16; i++)
            tg[i] = i % 8 == 7 ? -100 : ids[i + 1];
        pu_tbatch bt = {.ids = ids, .targets = tg, .B = 2, .T = 8};
        int64_t C = pu_tmodel_config(m[0])->hidden_size;
        float *dh = pu_malloc((size_t)(16 * C) * sizeof(float));
        for (int64_t i = 0; i < 16 * C; i++)
            dh[i] = (float)((i % 7) - 3) * 0.01f;
        for (int k = 0; k < 2; k++) {
            double l;
            int64_t c;
            PT_OK(pu_tmodel_forward(m[k], NULL, &bt, &l, &c));
            if (k == 1)
                PT_CHECK(pu_tmodel_logits(m[1]) == NULL && pu_tmodel_token_logps(m[1])[0] == 0);
        }
        PT_CHECK(!memcmp(pu_tmodel_hidden(m[0]), pu_tmodel_hidden(m[1]),
                         (size_t)(16 * C) * sizeof(float)));
        for (int k = 0; k < 2; k++)
            pu_tmodel_backward_logp(m[k], NULL, NULL, dh);
        PT_EQ_I64(pu_tmodel_numel(m[0]), pu_tmodel_numel(m[1]));
        PT_CHECK(!memcmp(pu_tmodel_grads(m[0]), pu_tmodel_grads(m[1]),
                         (size_t)pu_tmodel_numel(m[0]) * sizeof(float)));
        pu_free(dh);
    }
    pu_tmodel_destroy(m[0]);
    pu_tmodel_destroy(m[1]);
    pu_model_destroy(base);
}

/* ------------------------------------------------------------------------ */

static const char *k_prompts[1];

/* a reward model over the policy's body with a seeded v_head (scale s) */
static void write_rm(const char *dir, uint64_t seed, float s) {
    pu_model *m = NULL;
    PT_OK(pu_model_load(POLICY, &m));
    if (!m)
        return;
    int64_t C = pu_model_config(m)->hidden_size;
    float *v = pu_malloc((size_t)C * sizeof(float));
    pu_rng g;
    pu_rng_seed(&g, seed);
    for (int64_t i = 0; i < C; i++)
        v[i] = s * (float)pu_rng_normal(&g);
    PT_OK(pu_model_write_reward_dir(POLICY, v, C, 7, dir));
    pu_free(v);
    pu_model_destroy(m);
}

/* overwrite v_head.weight[0] of dir/model.safetensors with NaN */
static void poison_rm(const char *dir) {
    char p[700];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    char *buf = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(p, &buf, &len));
    if (!buf || len < 8)
        return;
    uint64_t hl = 0;
    memcpy(&hl, buf, 8);
    json_t *h = json_loadb(buf + 8, (size_t)hl, 0, NULL);
    json_t *t = h ? json_object_get(h, "v_head.weight") : NULL;
    json_t *off = t ? json_object_get(t, "data_offsets") : NULL;
    PT_CHECK(off != NULL);
    if (off) {
        float nan = NAN;
        memcpy(buf + 8 + hl + json_integer_value(json_array_get(off, 0)), &nan, 4);
        PT_OK(pu_file_write_atomic(p, buf, len));
    }
    if (h)
        json_decref(h);
    pu_free(buf);
}

static void opts(pu_ppo_train_opts *o, const char *out, const char *rm) {
    pu_ppo_train_opts_default(o);
    o->policy_dir = POLICY;
    o->rm_dir = rm;
    o->prompts = k_prompts;
    o->n_prompts = 1;
    o->max_new_tokens = 6;
    o->ppo_epochs = 2;
    o->critic_warmup = 1;
    o->train.out_dir = out;
    o->train.steps = 3;
    o->train.batch = 3;
    o->train.lr = 1e-3;
    o->train.min_lr = 1e-3; /* a constant lr: the schedule does not depend on --steps */
    o->train.warmup = 0;
    o->train.quiet = true;
    o->train.seed = 5;
}

/* every step line of a metrics file: field key */
static int fields(const char *path, const char *key, double *v, int cap) {
    char *buf = NULL;
    size_t len = 0;
    if (pu_file_read_all(path, &buf, &len) != PU_OK)
        return 0;
    int n = 0;
    for (char *p = buf, *e; *p && (e = strchr(p, '\n')); p = e + 1) {
        json_t *j = json_loadb(p, (size_t)(e - p), 0, NULL);
        json_t *f = j ? json_object_get(j, key) : NULL;
        if (f && n < cap)
            v[n++] = json_is_true(f) ? 1 : json_is_false(f) ? 0 : json_number_value(f);
        if (j)
            json_decref(j);
    }
    pu_free(buf);
    return n;
}

static void write_file(const char *path, const char *text) {
    PT_OK(pu_file_write_atomic(path, text, strlen(text)));
}

static void test_ppo_run(void) {
    if (!PT_TEST("ppo: end-to-end run, metrics, determinism, resume with a new RM, LoRA"))
        return;
    char pp[512], rm1[512], rm2[512], a[512], b[512], l[512], mp[700], mpb[700];
    pt_tmp_path("ppo_prompts.jsonl", pp, sizeof pp);
    pt_tmp_path("ppo_rm1", rm1, sizeof rm1);
    pt_tmp_path("ppo_rm2", rm2, sizeof rm2);
    pt_tmp_path("ppoA", a, sizeof a);
    pt_tmp_path("ppoB", b, sizeof b);
    pt_tmp_path("ppoL", l, sizeof l);
    write_file(pp, "{\"messages\": [{\"role\": \"user\", \"content\": \"hello there\"}]}\n"
                   "{\"prompt\": \"tell me a story\", \"condition\": \"helpful\"}\n"
                   "\n"
                   "{\"prompt\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": "
                   "\"user\", \"content\": \"what is two plus two\"}], \"chosen\": \"four\", "
                   "\"rejected\": \"five\"}\n"
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": "
                   "\"assistant\", \"content\": \"dropped\"}]}\n");
    k_prompts[0] = pp;
    write_rm(rm1, 11, 1.0f);
    write_rm(rm2, 12, 3.0f);
    pu_pool *pool = pu_pool_create(2);
    pu_ppo_train_opts o;
    /* a: 5 steps in one go */
    opts(&o, a, rm1);
    o.train.steps = 5;
    PT_OK(pu_ppo_train_run(&o, pool));
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", a);
    const char *keys[] = {"step",         "reward",  "kl",          "policy_loss",
                          "value_loss",   "entropy", "response_len", "tokens_per_s",
                          "actor_trained"};
    double v[8];
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        PT_CHECK_MSG(fields(mp, keys[k], v, 8) == 5, "field %s", keys[k]);
    PT_EQ_I64(fields(mp, "actor_trained", v, 8), 5);
    PT_CHECK(v[0] == 0 && v[1] == 1 && v[4] == 1); /* --critic-warmup 1 */
    fields(mp, "policy_loss", v, 8);
    PT_CHECK(v[0] == 0 && v[1] != 0);
    fields(mp, "kl", v, 8);
    PT_CHECK_MSG(v[0] == 0 && v[2] != 0, "kl %g %g: 0 before the actor moves", v[0], v[2]);
    fields(mp, "response_len", v, 8);
    PT_CHECK(v[0] >= 1 && v[0] <= 6);
    fields(mp, "entropy", v, 8);
    PT_CHECK(v[0] > 0);
    char p[700];
    snprintf(p, sizeof p, "%s/final/model.safetensors", a);
    PT_CHECK(pu_file_exists(p));
    snprintf(p, sizeof p, "%s/step_00000005/critic/model.safetensors", a);
    PT_CHECK(pu_file_exists(p));
    /* reward and KL curves (puyu plot --keys reward,kl) */
    char svg[700];
    snprintf(svg, sizeof svg, "%s/reward_kl.svg", a);
    PT_OK(pu_plot_metrics_keys(mp, svg, "ppo", "reward", "kl"));
    char *sv = NULL;
    size_t sl = 0;
    PT_OK(pu_file_read_all(svg, &sv, &sl));
    PT_CHECK(sv && strstr(sv, "reward (last") && strstr(sv, "kl (last"));
    pu_free(sv);
    /* b: the same seed, 3 steps (a checkpoint each), then resumed to 5 with
     * another reward model (COOL's online round) */
    opts(&o, b, rm1);
    o.train.save_every = 1;
    PT_OK(pu_ppo_train_run(&o, pool));
    o.train.steps = 5;
    o.train.resume = true;
    o.rm_dir = rm2;
    PT_OK(pu_ppo_train_run(&o, pool));
    snprintf(mpb, sizeof mpb, "%s/metrics.jsonl", b);
    const char *det[] = {"reward", "kl", "policy_loss", "value_loss", "entropy", "response_len"};
    for (size_t k = 0; k < sizeof det / sizeof det[0]; k++) {
        double x[8], y[8];
        PT_EQ_I64(fields(mp, det[k], x, 8), 5);
        PT_EQ_I64(fields(mpb, det[k], y, 8), 5);
        /* steps 1-3: the same run (deterministic with a seed) */
        for (int i = 0; i < 3; i++)
            PT_CHECK_MSG(x[i] == y[i], "%s step %d: %.17g vs %.17g", det[k], i + 1, x[i], y[i]);
        /* step 4 after the resume: the same actor (restored exactly), so the same
         * rollouts, KL and entropy; the other reward model scores them */
        if (!strcmp(det[k], "reward"))
            PT_CHECK_MSG(x[3] != y[3], "step 4 reward %g under both reward models", x[3]);
        if (!strcmp(det[k], "kl") || !strcmp(det[k], "entropy") ||
            !strcmp(det[k], "response_len"))
            PT_CHECK_MSG(x[3] == y[3], "resume: %s step 4: %.17g vs %.17g", det[k], x[3], y[3]);
    }
    /* --keep 2 (the default): only the last two checkpoints stay */
    snprintf(p, sizeof p, "%s/step_00000003", b);
    PT_CHECK(!pu_dir_exists(p));
    snprintf(p, sizeof p, "%s/step_00000004/actor/model.safetensors", b);
    PT_CHECK(pu_file_exists(p));
    PT_EQ_I64(fields(mpb, "step", v, 8), 5);
    PT_CHECK(v[2] == 3 && v[3] == 4 && v[4] == 5);
    /* LoRA: adapters for actor and critic over the mappings, unmerged rollouts */
    opts(&o, l, rm1);
    o.lora = true;
    o.lora_r = 4;
    o.lora_dropout = 0;
    o.train.lr = o.train.min_lr = 1e-2;
    static const char *ptx[1] = {"tests/golden/sft_train/data.jsonl"}; /* + the SFT loss */
    o.ptx_data = ptx;
    o.n_ptx = 1;
    PT_OK(pu_ppo_train_run(&o, pool));
    char mpl[700];
    snprintf(mpl, sizeof mpl, "%s/metrics.jsonl", l);
    PT_EQ_I64(fields(mpl, "kl", v, 8), 3);
    PT_CHECK_MSG(v[0] == 0 && v[2] != 0, "LoRA kl %g %g", v[0], v[2]);
    PT_EQ_I64(fields(mpl, "ptx_loss", v, 8), 3);
    PT_CHECK_MSG(v[0] == 0 && v[1] > 1 && v[2] > 1 && isfinite(v[2]), "ptx_loss %g %g %g", v[0],
                 v[1], v[2]);
    snprintf(p, sizeof p, "%s/final/adapter_model.safetensors", l);
    PT_CHECK(pu_file_exists(p));
    pu_pool_destroy(pool);
}

static void expect_err(pu_ppo_train_opts *o, pu_pool *pool, const char *a, const char *b) {
    pu_status s = pu_ppo_train_run(o, pool);
    PT_CHECK(s != PU_OK);
    PT_CHECK_MSG(strstr(pu_err_msg(), a) && (!b || strstr(pu_err_msg(), b)), "%s", pu_err_msg());
    pu_err_clear();
}

static void test_ppo_bad(void) {
    if (!PT_TEST("ppo: bad prompts (file:line), RM without v_head, critic shape, NaN reward"))
        return;
    char pp[512], bad[512], rm[512], nanrm[512], out[512];
    pt_tmp_path("ppo_bad_ok.jsonl", pp, sizeof pp);
    pt_tmp_path("ppo_bad.jsonl", bad, sizeof bad);
    pt_tmp_path("ppo_bad_rm", rm, sizeof rm);
    pt_tmp_path("ppo_nan_rm", nanrm, sizeof nanrm);
    pt_tmp_path("ppoBad", out, sizeof out);
    write_file(pp, "{\"prompt\": \"hello\"}\n");
    write_file(bad, "{\"prompt\": \"hello\"}\n{\"prompt\": \"oops\"\n");
    write_rm(rm, 3, 1.0f);
    write_rm(nanrm, 3, 1.0f);
    poison_rm(nanrm);
    pu_pool *pool = pu_pool_create(1);
    pu_ppo_train_opts o;
    k_prompts[0] = bad;
    opts(&o, out, rm);
    o.train.steps = 1;
    expect_err(&o, pool, "ppo_bad.jsonl:2", "malformed JSON");
    write_file(bad, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": "
                    "\"bot\", \"content\": \"b\"}]}\n");
    expect_err(&o, pool, "ppo_bad.jsonl:1", "role");
    write_file(bad, "{\"prompt\": \"x\", \"condition\": \"helpfull\"}\n");
    expect_err(&o, pool, "ppo_bad.jsonl:1", "condition");
    o.skip_bad = true;
    expect_err(&o, pool, "no prompts", "1 skipped");
    o.skip_bad = false;
    k_prompts[0] = pp;
    o.max_new_tokens = 600; /* > the context (512) */
    expect_err(&o, pool, "ppo_bad_ok.jsonl:1", "context");
    o.max_new_tokens = 6;
    o.rm_dir = POLICY; /* no v_head */
    expect_err(&o, pool, "v_head", NULL);
    o.rm_dir = rm;
    o.critic_dir = "tests/golden/rm"; /* a reward model of another vocabulary */
    expect_err(&o, pool, "another shape", "vocabulary");
    o.critic_dir = NULL;
    o.ref_dir = "tests/golden/rm_train/base"; /* a reference of another shape */
    expect_err(&o, pool, "the reference", "another shape");
    o.ref_dir = NULL;
    o.rm_dir = nanrm;
    expect_err(&o, pool, "step 1", "nan");
    char p[700];
    snprintf(p, sizeof p, "%s/latest", out);
    PT_CHECK(!pu_file_exists(p)); /* nothing written for the failed step */
    pu_pool_destroy(pool);
}

PT_SUITE(ppo) {
    test_ppo_math();
    test_no_lm_head();
    test_ppo_run();
    test_ppo_bad();
}
