/*
 * test_align.c — alignment loss math against PyTorch autograd.
 *
 * tests/golden/align/ref.safetensors (tools/gen_align_ref.py) holds float32
 * inputs and the float64 autograd results of XTuner's reward-model loss
 * (focal / ranking x log_barrier / l2 / none), DPO (with and without label
 * smoothing), SimPO, ORPO, and PPO's KL rewards, GAE, whitening, clipped
 * policy and value losses and entropy. The C code computes in double from
 * the same float inputs and stores floats, so values and gradients must
 * agree to float rounding: |got - want| <= 1e-6 + 1e-5 |want| (metrics in
 * double: 1e-9 + 1e-6 relative). Edge cases in the inputs: d = 0, |d| of
 * 40..90, rewards just outside the barrier's clamp, an all-masked PPO row,
 * a one-token row, a uniform and a near-one-hot logits row.
 * Also: bad input (N = 0, NaN rewards, empty responses) gives errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pt.h"
#include "puyu/pu_align.h"
#include "puyu/pu_tok.h"
#include "train/train_impl.h"

#define ATOL 1e-6
#define RTOL 1e-5

static pu_st_in g_ref;
static bool g_have;

static bool open_ref(void) {
    if (g_have)
        return true;
    const char *dirs[] = {"tests/golden/align/ref.safetensors",
                          "../tests/golden/align/ref.safetensors"};
    for (int i = 0; i < 2; i++)
        if (pu_file_exists(dirs[i]) && pu_train_st_open(&g_ref, dirs[i]) == PU_OK) {
            g_have = true;
            return true;
        }
    pt_fail_(__FILE__, __LINE__, "tests/golden/align/ref.safetensors not readable: %s",
             pu_err_msg());
    return false;
}

/* tensor `name` (owned), its element count in *n */
static float *get(const char *name, int64_t *n) {
    json_t *e = json_object_get(g_ref.hdr, name);
    json_t *sh = e ? json_object_get(e, "shape") : NULL;
    if (!sh || json_array_size(sh) != 1) {
        pt_fail_(__FILE__, __LINE__, "fixture tensor %s missing", name);
        *n = 0;
        return pu_calloc(1, sizeof(float));
    }
    *n = (int64_t)json_integer_value(json_array_get(sh, 0));
    float *x = pu_calloc((size_t)(*n ? *n : 1), sizeof(float));
    PT_OK(pu_train_st_get(&g_ref, name, x, *n));
    return x;
}

static double meta(const char *key) {
    const char *s = pu_train_st_meta(&g_ref, key);
    PT_CHECK_MSG(s != NULL, "fixture metadata %s missing", key);
    return s ? atof(s) : NAN;
}

static void check_metrics(const char *tag, const double *got, int n) {
    char name[96];
    snprintf(name, sizeof name, "%s.metrics", tag);
    int64_t nw;
    float *want = get(name, &nw);
    PT_EQ_I64(nw, n);
    for (int i = 0; i < n && i < nw; i++)
        PT_CHECK_MSG(fabs(got[i] - want[i]) <= 1e-6 + 1e-6 * fabs(want[i]),
                     "%s metric %d: %.9g vs %.9g", tag, i, got[i], (double)want[i]);
    pu_free(want);
}

static void check_vec(const char *tag, const char *field, const float *got, int64_t n) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", tag, field);
    int64_t nw;
    float *want = get(name, &nw);
    PT_EQ_I64(nw, n);
    if (nw == n)
        PT_ALLCLOSE(name, got, want, n, ATOL, RTOL);
    pu_free(want);
}

/* ---------------------------------------------------------------- RM */

static void test_rm(void) {
    if (PT_TEST("reward loss (focal/ranking x log_barrier/l2/none) = XTuner, autograd")) {
        int64_t N, n2;
        float *c = get("rm.chosen", &N), *r = get("rm.rejected", &n2);
        float *dc = pu_malloc((size_t)N * sizeof(float)),
              *dr = pu_malloc((size_t)N * sizeof(float));
        const char *ln[] = {"focal", "ranking"}, *pn[] = {"log_barrier", "l2", "none"};
        for (int li = 0; li < 2; li++)
            for (int pi = 0; pi < 3; pi++) {
                char tag[64], key[80];
                snprintf(tag, sizeof tag, "rm.%s.%s", ln[li], pn[pi]);
                snprintf(key, sizeof key, "%s.W", tag);
                pu_rm_loss_opts o = {(pu_rm_loss_kind)li, (pu_rm_penalty_kind)pi, meta(key)};
                pu_rm_metrics m;
                PT_OK(pu_rm_loss(c, r, N, &o, &m, dc, dr));
                double got[6] = {m.loss, m.rank, m.penalty, m.accuracy, m.chosen, m.rejected};
                check_metrics(tag, got, 6);
                check_vec(tag, "d_chosen", dc, N);
                check_vec(tag, "d_rejected", dr, N);
            }
        /* clamp: rewards beyond +-(5 - 1e-3) get no penalty gradient */
        pu_rm_loss_opts o = {PU_RM_LOSS_RANKING, PU_RM_PENALTY_LOG_BARRIER, 1.0};
        pu_rm_loss_opts o0 = {PU_RM_LOSS_RANKING, PU_RM_PENALTY_NONE, 1.0};
        float dc0[64], dr0[64];
        PT_OK(pu_rm_loss(c, r, N, &o, NULL, dc, dr));
        PT_OK(pu_rm_loss(c, r, N, &o0, NULL, dc0, dr0));
        PT_CHECK(dc[1] == dc0[1] && dr[1] == dr0[1]); /* 40, -35 */
        PT_CHECK(dc[3] == dc0[3] && dr[3] == dr0[3]); /* +-4.9995 */
        PT_CHECK(dc[4] != dc0[4]);                    /* 4.5 inside */
        pu_free(c), pu_free(r), pu_free(dc), pu_free(dr);
    }
    if (PT_TEST("reward loss: one pair; defaults are focal + log_barrier 0.01")) {
        int64_t n;
        float *c = get("rm1.chosen", &n), *r = get("rm1.rejected", &n), dc, dr;
        pu_rm_metrics m;
        PT_OK(pu_rm_loss(c, r, 1, NULL, &m, &dc, &dr));
        double got[6] = {m.loss, m.rank, m.penalty, m.accuracy, m.chosen, m.rejected};
        check_metrics("rm1", got, 6);
        check_vec("rm1", "d_chosen", &dc, 1);
        check_vec("rm1", "d_rejected", &dr, 1);
        pu_free(c), pu_free(r);
    }
    if (PT_TEST("reward loss: bad input")) {
        float c[2] = {1, NAN}, r[2] = {0, 0};
        PT_CHECK(pu_rm_loss(c, r, 0, NULL, NULL, NULL, NULL) == PU_ERR_INVALID);
        PT_CHECK(pu_rm_loss(c, r, 2, NULL, NULL, NULL, NULL) == PU_ERR_INVALID);
        PT_CHECK(strstr(pu_err_msg(), "chosen reward[1]") != NULL);
    }
}

static void test_vhead(void) {
    if (!PT_TEST("value head forward/backward = autograd; dv accumulates"))
        return;
    int64_t nh, C, N;
    float *h = get("vh.h", &nh), *v = get("vh.v", &C), *dout = get("vh.dout", &N);
    float out[16], dv[16], dh[128];
    pu_value_head_fwd(v, h, N, C, out);
    check_vec("vh", "out", out, N);
    for (int64_t j = 0; j < C; j++)
        dv[j] = 1.0f;
    pu_value_head_bwd(v, h, dout, N, C, dv, dh);
    for (int64_t j = 0; j < C; j++)
        dv[j] -= 1.0f;
    check_vec("vh", "dv", dv, C);
    check_vec("vh", "dh", dh, nh);
    pu_free(h), pu_free(v), pu_free(dout);
}

/* ---------------------------------------------------------------- DPO */

static void test_pref(void) {
    if (PT_TEST("DPO loss (sigmoid, label smoothing) = autograd")) {
        int64_t N, n;
        float *pc = get("dpo.pc", &N), *pr = get("dpo.pr", &n), *rc = get("dpo.rc", &n),
              *rr = get("dpo.rr", &n);
        float *dpc = pu_malloc((size_t)N * 4), *dpr = pu_malloc((size_t)N * 4);
        const char *tags[] = {"dpo.a", "dpo.b"};
        for (int k = 0; k < 2; k++) {
            char kb[64], kl[64];
            snprintf(kb, sizeof kb, "%s.beta", tags[k]);
            snprintf(kl, sizeof kl, "%s.ls", tags[k]);
            pu_dpo_opts o = {meta(kb), meta(kl)};
            pu_pref_metrics m;
            PT_OK(pu_dpo_loss(pc, pr, rc, rr, N, &o, &m, dpc, dpr));
            double got[5] = {m.loss, m.accuracy, m.margin, m.chosen, m.rejected};
            check_metrics(tags[k], got, 5);
            check_vec(tags[k], "d_pc", dpc, N);
            check_vec(tags[k], "d_pr", dpr, N);
        }
        /* z = 0: loss log 2, gradient -beta/2/N */
        pu_dpo_opts o = pu_dpo_default_opts();
        pu_pref_metrics m;
        float g1, g2;
        PT_OK(pu_dpo_loss(pc, pr, rc, rr, 1, &o, &m, &g1, &g2));
        PT_NEAR(m.loss, log(2.0), 1e-12, 0);
        PT_NEAR(g1, -0.05, 1e-9, 0);
        PT_NEAR(g2, 0.05, 1e-9, 0);
        pu_free(pc), pu_free(pr), pu_free(rc), pu_free(rr), pu_free(dpc), pu_free(dpr);
    }
    if (PT_TEST("SimPO and ORPO losses = autograd")) {
        int64_t N, n;
        float *pc = get("dpo.pc", &N), *pr = get("dpo.pr", &n);
        float *fnc = get("len.nc", &n), *fnr = get("len.nr", &n);
        float *opc = get("orpo.pc", &n), *opr = get("orpo.pr", &n);
        int64_t nc[64], nr[64];
        for (int64_t i = 0; i < N; i++)
            nc[i] = (int64_t)fnc[i], nr[i] = (int64_t)fnr[i];
        float *dpc = pu_malloc((size_t)N * 4), *dpr = pu_malloc((size_t)N * 4);
        pu_pref_metrics m;
        PT_OK(pu_simpo_loss(pc, pr, nc, nr, N, meta("simpo.beta"), meta("simpo.gamma"), &m, dpc,
                            dpr));
        double got[5] = {m.loss, m.accuracy, m.margin, m.chosen, m.rejected};
        check_metrics("simpo", got, 5);
        check_vec("simpo", "d_pc", dpc, N);
        check_vec("simpo", "d_pr", dpr, N);
        PT_OK(pu_orpo_loss(opc, opr, nc, nr, N, meta("orpo.lambda"), &m, dpc, dpr));
        double got2[5] = {m.loss, m.accuracy, m.margin, m.chosen, m.rejected};
        check_metrics("orpo", got2, 5);
        check_vec("orpo", "d_pc", dpc, N);
        check_vec("orpo", "d_pr", dpr, N);
        /* bad input: an empty response, a mean logp >= 0 */
        nc[3] = 0;
        PT_CHECK(pu_simpo_loss(pc, pr, nc, nr, N, 2, 0.5, NULL, NULL, NULL) == PU_ERR_INVALID);
        PT_CHECK(strstr(pu_err_msg(), "pair 3") != NULL);
        nc[3] = 1;
        float z = 0.0f;
        PT_CHECK(pu_orpo_loss(&z, opr, nc, nr, 1, 0.1, NULL, NULL, NULL) == PU_ERR_INVALID);
        pu_free(pc), pu_free(pr), pu_free(fnc), pu_free(fnr), pu_free(opc), pu_free(opr);
        pu_free(dpc), pu_free(dpr);
    }
}

/* ---------------------------------------------------------------- PPO */

static void test_ppo(void) {
    if (PT_TEST("PPO: KL rewards, GAE, whitening, clipped losses, entropy = reference")) {
        int64_t n, B;
        float *mask = get("ppo.mask", &n), *logp = get("ppo.logp", &n), *ref = get("ppo.ref", &n),
              *old = get("ppo.old", &n), *vals = get("ppo.values", &n),
              *oldv = get("ppo.old_values", &n), *score = get("ppo.score", &B);
        int64_t T = n / B;
        float *rew = pu_malloc((size_t)n * 4), kl[16];
        pu_ppo_kl_rewards(logp, ref, mask, score, B, T, meta("ppo.kl_coef"), rew, kl);
        check_vec("ppo", "rewards", rew, n);
        check_vec("ppo", "kl", kl, B);
        /* all-masked row 2: no reward, no KL */
        for (int64_t t = 0; t < T; t++)
            PT_CHECK(rew[2 * T + t] == 0.0f);
        int64_t nr;
        float *frew = get("ppo.rewards", &nr);
        float *adv = pu_malloc((size_t)n * 4), *ret = pu_malloc((size_t)n * 4);
        const char *tags[] = {"gae.a", "gae.b"};
        for (int k = 0; k < 2; k++) {
            char kg[32], kl2[32];
            snprintf(kg, sizeof kg, "%s.gamma", tags[k]);
            snprintf(kl2, sizeof kl2, "%s.lambda", tags[k]);
            pu_ppo_gae(vals, frew, mask, B, T, meta(kg), meta(kl2), adv, ret);
            check_vec(tags[k], "adv", adv, n);
            check_vec(tags[k], "ret", ret, n);
            for (int64_t i = 0; i < n; i++)
                if (mask[i] == 0)
                    PT_CHECK(adv[i] == 0.0f && ret[i] == 0.0f);
            int64_t na;
            float *fadv = get(k ? "gae.b.adv" : "gae.a.adv", &na);
            pu_ppo_whiten(fadv, mask, n);
            check_vec(tags[k], "white", fadv, n);
            pu_free(fadv);
        }
        /* clipped policy loss on the whitened gae.a advantages */
        float *wadv = get("gae.a.white", &n), *d = pu_malloc((size_t)n * 4);
        pu_ppo_metrics pm;
        PT_OK(pu_ppo_policy_loss(logp, old, wadv, mask, n, meta("ppo.clip_eps"), &pm, d));
        double got[4] = {pm.loss, pm.clipfrac, pm.approx_kl, pm.ratio};
        check_metrics("policy", got, 4);
        check_vec("policy", "d_logp", d, n);
        PT_CHECK(pm.clipfrac > 0 && pm.clipfrac < 1); /* both branches exercised */
        /* clipped and unclipped value losses on the gae.a returns */
        float *R = get("gae.a.ret", &n);
        const char *vt[] = {"value.clip", "value.noclip"};
        for (int k = 0; k < 2; k++) {
            double vl, cf;
            PT_OK(pu_ppo_value_loss(vals, oldv, R, mask, n, meta(vt[k]), &vl, &cf, d));
            double g2[2] = {vl, cf};
            check_metrics(vt[k], g2, 2);
            check_vec(vt[k], "d_values", d, n);
            if (k == 0)
                PT_CHECK(cf > 0 && cf < 1);
        }
        /* no valid token */
        float zero[4] = {0};
        PT_CHECK(pu_ppo_policy_loss(logp, old, wadv, zero, 4, 0.2, NULL, NULL) == PU_ERR_INVALID);
        PT_CHECK(pu_ppo_value_loss(vals, oldv, R, zero, 4, 0.2, NULL, NULL, NULL) ==
                 PU_ERR_INVALID);
        /* entropy */
        int64_t nz, N;
        float *z = get("ent.logits", &nz), *dH = get("ent.dH", &N);
        int64_t V = nz / N;
        float H[16], *dz = pu_malloc((size_t)nz * 4);
        pu_entropy_fwd(z, N, V, H);
        pu_entropy_bwd(z, dH, N, V, dz);
        check_vec("ent", "H", H, N);
        check_vec("ent", "d_logits", dz, nz);
        PT_NEAR(H[1], log((double)V), 1e-6, 0);
        pu_free(z), pu_free(dH), pu_free(dz), pu_free(R), pu_free(wadv), pu_free(d);
        pu_free(frew), pu_free(adv), pu_free(ret), pu_free(rew);
        pu_free(mask), pu_free(logp), pu_free(ref), pu_free(old), pu_free(vals), pu_free(oldv);
        pu_free(score);
    }
}

PT_SUITE(align_loss) {
    if (!open_ref())
        return;
    test_rm();
    test_vhead();
    test_pref();
    test_ppo();
    pu_train_st_close(&g_ref);
    g_have = false;
}

/* ---------------------------------------------------------------- preference data */

static pu_status parse_str(const char *js, const pu_pref_parse_opts *o, pu_pref_record *r) {
    return pu_pref_record_parse(js, strlen(js), "t.jsonl:7", o, r);
}

static void expect_bad(const char *js, const pu_pref_parse_opts *o, const char *needle) {
    pu_pref_record r;
    pu_status st = parse_str(js, o, &r);
    PT_CHECK_MSG(st == PU_ERR_FORMAT, "expected a format error for %s", js);
    if (st == PU_OK)
        pu_pref_record_free(&r);
    PT_CHECK_MSG(strstr(pu_err_msg(), "t.jsonl:7") && strstr(pu_err_msg(), needle),
                 "error \"%s\" should name t.jsonl:7 and \"%s\"", pu_err_msg(), needle);
}

static void expect_turn(const pu_pref_record *r, int i, const char *role, const char *content) {
    PT_CHECK_MSG(i < r->prompt.msgs.n, "turn %d missing (%d turns)", i, r->prompt.msgs.n);
    if (i >= r->prompt.msgs.n)
        return;
    PT_EQ_STR(r->prompt.msgs.msgs[i].role, role);
    PT_EQ_STR(r->prompt.msgs.msgs[i].content, content);
    PT_EQ_I64(r->prompt.loss[i], 0);
}

static void write_file(const char *path, const char *text) {
    PT_OK(pu_file_write_atomic(path, text, strlen(text)));
}

static void test_pref_records(void) {
    pu_pref_conditions *cond = NULL;
    PT_OK(pu_pref_conditions_default(&cond));
    pu_pref_parse_opts po = {cond, NULL};
    if (PT_TEST("XTuner records: message arrays, plain strings, conditions")) {
        pu_pref_record r;
        PT_OK(
            parse_str("{\"prompt\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\","
                      "\"content\":\"Q\"}],\"chosen\":[{\"role\":\"assistant\",\"content\":\"A\"}],"
                      "\"rejected\":[{\"role\":\"assistant\",\"content\":\"B\"}]}",
                      &po, &r));
        PT_EQ_I64(r.prompt.msgs.n, 2);
        expect_turn(&r, 0, "system", "S");
        expect_turn(&r, 1, "user", "Q");
        PT_EQ_STR(r.chosen, "A");
        PT_EQ_STR(r.rejected, "B");
        pu_sft_record c;
        PT_OK(pu_pref_conversation(&r, 1, &c));
        PT_EQ_I64(c.msgs.n, 3);
        PT_EQ_STR(c.msgs.msgs[2].role, "assistant");
        PT_EQ_STR(c.msgs.msgs[2].content, "B");
        PT_CHECK(c.loss[0] == 0 && c.loss[1] == 0 && c.loss[2] == 1);
        pu_sft_record_free(&c);
        pu_pref_record_free(&r);

        PT_OK(parse_str("{\"condition\":\"harmless\",\"prompt\":\"Q\",\"chosen\":\"A\","
                        "\"rejected\":\"B\"}",
                        &po, &r));
        PT_EQ_I64(r.prompt.msgs.n, 2);
        expect_turn(&r, 0, "system", pu_pref_condition_lookup(cond, "harmless"));
        expect_turn(&r, 1, "user", "Q");
        pu_pref_record_free(&r);

        PT_OK(parse_str("{\"condition\":\"Judge the poem.\",\"prompt\":[{\"role\":\"user\","
                        "\"content\":\"Q\"}],\"chosen\":\"A\",\"rejected\":\"B\"}",
                        &po, &r));
        expect_turn(&r, 0, "system", "Judge the poem.");
        pu_pref_record_free(&r);

        pu_pref_parse_opts pd = {cond, "math"};
        PT_OK(parse_str("{\"prompt\":\"1+1?\",\"chosen\":\"2\",\"rejected\":\"3\"}", &pd, &r));
        expect_turn(&r, 0, "system", pu_pref_condition_lookup(cond, "math"));
        pu_pref_record_free(&r);
    }
    if (PT_TEST("ShareGPT, alpaca-ranked and hh-rlhf records")) {
        pu_pref_record r;
        PT_OK(
            parse_str("{\"conversations\":[{\"from\":\"system\",\"value\":\"S\"},{\"from\":"
                      "\"human\",\"value\":\"h1\"},{\"from\":\"gpt\",\"value\":\"g1\"},{\"from\":"
                      "\"human\",\"value\":\"h2\"}],\"chosen\":{\"from\":\"gpt\",\"value\":\"C\"},"
                      "\"rejected\":{\"from\":\"gpt\",\"value\":\"R\"}}",
                      &po, &r));
        PT_EQ_I64(r.prompt.msgs.n, 4);
        expect_turn(&r, 0, "system", "S");
        expect_turn(&r, 1, "user", "h1");
        expect_turn(&r, 2, "assistant", "g1");
        expect_turn(&r, 3, "user", "h2");
        PT_EQ_STR(r.chosen, "C");
        PT_EQ_STR(r.rejected, "R");
        pu_pref_record_free(&r);

        PT_OK(parse_str("{\"instruction\":\"I\",\"input\":\"X\",\"output\":[\"good\",\"bad\","
                        "\"worse\"],\"history\":[[\"q0\",\"a0\"]]}",
                        &po, &r));
        PT_EQ_I64(r.prompt.msgs.n, 3);
        expect_turn(&r, 0, "user", "q0");
        expect_turn(&r, 1, "assistant", "a0");
        expect_turn(&r, 2, "user", "I\nX");
        PT_EQ_STR(r.chosen, "good");
        PT_EQ_STR(r.rejected, "bad");
        pu_pref_record_free(&r);

        PT_OK(parse_str("{\"chosen\":\"\\n\\nHuman: hi there\\n\\nAssistant: hello\\n\\nHuman: "
                        "joke?\\n\\nAssistant:  a good one \",\"rejected\":\"\\n\\nHuman: hi "
                        "there\\n\\nAssistant: hello\\n\\nHuman: joke?\\n\\nAssistant: no\"}",
                        &po, &r));
        PT_EQ_I64(r.prompt.msgs.n, 3);
        expect_turn(&r, 0, "user", "hi there");
        expect_turn(&r, 1, "assistant", "hello");
        expect_turn(&r, 2, "user", "joke?");
        PT_EQ_STR(r.chosen, "a good one");
        PT_EQ_STR(r.rejected, "no");
        pu_pref_record_free(&r);
    }
    if (PT_TEST("bad preference records name file:line and field")) {
        expect_bad("{\"prompt\":\"Q\",\"chosen\":\"A\",\"rejected\":\"A\"}", &po,
                   "chosen: equal to rejected");
        expect_bad("{\"prompt\":\"Q\",\"chosen\":\"  \",\"rejected\":\"A\"}", &po,
                   "chosen: empty response");
        expect_bad("{\"prompt\":\"Q\",\"chosen\":\"A\"}", &po, "rejected");
        expect_bad("{\"prompt\":\"Q\",\"chosen\":\"A\",", &po, "malformed JSON");
        expect_bad("{\"prompt\":[{\"role\":\"bot\",\"content\":\"x\"}],\"chosen\":\"A\","
                   "\"rejected\":\"B\"}",
                   &po, "prompt[0].role: unknown role \"bot\"");
        expect_bad("{\"condition\":\"helpfull\",\"prompt\":\"Q\",\"chosen\":\"A\",\"rejected\":"
                   "\"B\"}",
                   &po, "condition: unknown condition name \"helpfull\"");
        expect_bad("{\"prompt\":\"Q\",\"chosen\":[{\"role\":\"user\",\"content\":\"A\"}],"
                   "\"rejected\":\"B\"}",
                   &po, "chosen: the response must be an assistant turn");
        expect_bad("{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: b\",\"rejected\":\"\\n\\nHuman: "
                   "c\\n\\nAssistant: d\"}",
                   &po, "differ from chosen's");
        expect_bad("{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: \",\"rejected\":\"\\n\\nHuman: "
                   "a\\n\\nAssistant: d\"}",
                   &po, "chosen: empty response");
        expect_bad("{\"instruction\":\"I\",\"output\":[\"x\"]}", &po, "output: expected");
        expect_bad("{\"conversations\":[{\"from\":\"human\",\"value\":\"h\"},{\"from\":\"gpt\","
                   "\"value\":\"g\"}],\"chosen\":{\"from\":\"gpt\",\"value\":\"C\"},\"rejected\":"
                   "{\"from\":\"gpt\",\"value\":\"R\"}}",
                   &po, "prompt: ends with an assistant turn");
        expect_bad("[1,2]", &po, "expected a JSON object");
    }
    if (PT_TEST("JSONL and JSON-array files: line numbers, skip_bad counts")) {
        char p1[512], p2[512];
        pt_tmp_path("p.jsonl", p1, sizeof p1);
        pt_tmp_path("p.json", p2, sizeof p2);
        write_file(p1, "{\"prompt\":\"Q1\",\"chosen\":\"A\",\"rejected\":\"B\"}\n\n"
                       "{\"prompt\":\"Q2\",\"chosen\":\"A\",\"rejected\":\"A\"}\n"
                       "{\"prompt\":\"Q3\",\"chosen\":\"C\",\"rejected\":\"D\"}\n");
        write_file(p2, "[\n  {\"prompt\": \"Q4\",\n   \"chosen\": \"a\", \"rejected\": \"b\"},\n"
                       "  {\"prompt\": \"Q5\", \"chosen\": \"\",\n \"rejected\": \"b\"}\n]\n");
        const char *paths[] = {p1, p2};
        pu_pref_load_opts lo = {po, false};
        pu_pref_data *d = NULL;
        PT_CHECK(pu_pref_data_load(paths, 1, &lo, &d) == PU_ERR_FORMAT);
        PT_CHECK_MSG(strstr(pu_err_msg(), "p.jsonl:3: chosen: equal to rejected"), "got: %s",
                     pu_err_msg());
        PT_CHECK(pu_pref_data_load(paths + 1, 1, &lo, &d) == PU_ERR_FORMAT);
        PT_CHECK_MSG(strstr(pu_err_msg(), "p.json:4: chosen: empty response"), "got: %s",
                     pu_err_msg());
        lo.skip_bad = true;
        PT_OK(pu_pref_data_load(paths, 2, &lo, &d));
        if (d) {
            PT_EQ_I64(pu_pref_data_n(d), 3);
            PT_EQ_I64(pu_pref_data_n_skipped(d), 2);
            const char *want[] = {"Q1", "Q3", "Q4"};
            for (int i = 0; i < 3 && i < pu_pref_data_n(d); i++)
                expect_turn(pu_pref_data_get(d, i), 0, "user", want[i]);
            PT_CHECK(strstr(pu_pref_data_where(d, 1), "p.jsonl:4") != NULL);
            PT_CHECK(strstr(pu_pref_data_where(d, 2), "p.json:2") != NULL);
        }
        pu_pref_data_destroy(d);
        const char *missing[] = {"/nonexistent/x.jsonl"};
        PT_CHECK(pu_pref_data_load(missing, 1, &lo, &d) == PU_ERR_IO);
    }
    if (PT_TEST("data/rm_conditions.json equals the built-in conditions")) {
        const char *cands[] = {"data/rm_conditions.json", "../data/rm_conditions.json"};
        const char *path = NULL;
        for (int i = 0; i < 2; i++)
            if (pu_file_exists(cands[i]))
                path = cands[i];
        PT_CHECK_MSG(path != NULL, "data/rm_conditions.json not found");
        pu_pref_conditions *f = NULL;
        if (path) {
            PT_OK(pu_pref_conditions_load(path, &f));
            PT_EQ_I64(pu_pref_conditions_n(f), pu_pref_conditions_n(cond));
            for (int i = 0; f && i < pu_pref_conditions_n(cond); i++) {
                PT_EQ_STR(pu_pref_conditions_name(f, i), pu_pref_conditions_name(cond, i));
                PT_EQ_STR(pu_pref_conditions_text(f, i), pu_pref_conditions_text(cond, i));
            }
            const char *need[] = {"helpful", "harmless", "code", "math", "format"};
            for (int i = 0; i < 5; i++)
                PT_CHECK(pu_pref_condition_lookup(f, need[i]) != NULL);
        }
        pu_pref_conditions_destroy(f);
    }
    pu_pref_conditions_destroy(cond);
}

static void test_pref_shared(void) {
    /* ../shared/data/preference: records kept / skipped (bad pairs counted) */
    static const struct {
        const char *file;
        int64_t kept, skipped;
        const char *first_bad; /* error without skip_bad, NULL if none */
    } files[] = {
        {"preference/dpo_en_demo.json", 300, 0, NULL},
        {"preference/dpo_zh_demo.json", 300, 0, NULL},
        {"preference/oaast_rm_zh.json", 772, 3, "chosen: equal to rejected"},
        {"preference/hh-rlhf-harmless-base-test.jsonl.gz", 2303, 9, ":87: chosen: empty"},
    };
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        char name[160], buf[1024];
        snprintf(name, sizeof name, "shared %s", files[k].file);
        if (!PT_TEST(name))
            continue;
        const char *p = pt_shared_path(files[k].file, buf, sizeof buf);
        if (!p)
            continue;
        pu_pref_load_opts lo = {{NULL, NULL}, false};
        pu_pref_data *d = NULL;
        pu_status st = pu_pref_data_load(&p, 1, &lo, &d);
        if (files[k].first_bad) {
            PT_CHECK(st == PU_ERR_FORMAT);
            PT_CHECK_MSG(strstr(pu_err_msg(), files[k].first_bad), "got: %s", pu_err_msg());
            lo.skip_bad = true;
            st = pu_pref_data_load(&p, 1, &lo, &d);
        }
        PT_OK(st);
        if (!d)
            continue;
        PT_EQ_I64(pu_pref_data_n(d), files[k].kept);
        PT_EQ_I64(pu_pref_data_n_skipped(d), files[k].skipped);
        for (int64_t i = 0; i < pu_pref_data_n(d); i++) {
            const pu_pref_record *r = pu_pref_data_get(d, i);
            const char *last = r->prompt.msgs.msgs[r->prompt.msgs.n - 1].role;
            PT_CHECK_MSG(strcmp(last, "assistant") != 0 && *r->chosen && *r->rejected &&
                             strcmp(r->chosen, r->rejected) != 0,
                         "%s: bad pair kept", pu_pref_data_where(d, i));
        }
        pu_pref_data_destroy(d);
    }
}

static void check_pair(const pu_tok *t, const pu_pref_tokens *pt, const pu_pref_record *r,
                       const char *where) {
    int32_t im_end = pu_sft_special_id(t, "<|im_end|>");
    const pu_sft_tokens *s[2] = {&pt->chosen, &pt->rejected};
    const char *resp[2] = {r->chosen, r->rejected};
    for (int k = 0; k < 2; k++) {
        bool ok =
            pt->n_prompt > 0 && s[k]->n > pt->n_prompt + 1 && s[k]->ids[s[k]->n - 1] == im_end;
        for (int64_t i = 0; ok && i < s[k]->n; i++)
            ok = i < pt->n_prompt ? s[k]->labels[i] == -100 && s[k]->ids[i] == s[0]->ids[i]
                                  : s[k]->labels[i] == s[k]->ids[i];
        /* the response = enc(content) + <|im_end|>, the content encoded on its own */
        int32_t *ids = NULL;
        int64_t n = 0;
        pu_tok_encode_opts eo = pu_tok_encode_default_opts();
        PT_OK(pu_tok_encode(t, resp[k], strlen(resp[k]), &eo, &ids, &n));
        ok = ok && n == s[k]->n - pt->n_prompt - 1 &&
             memcmp(ids, s[k]->ids + pt->n_prompt, (size_t)n * sizeof *ids) == 0;
        pu_free(ids);
        PT_CHECK_MSG(ok, "%s: %s: prompt / response / labels layout wrong", where,
                     k ? "rejected" : "chosen");
    }
}

static void test_pref_tokens(void) {
    if (!PT_TEST("tokenized pairs = puyu sft's rendering; labels on the response only"))
        return;
    pu_tok *t = NULL;
    PT_OK(pu_tok_load("tests/golden/rm/tokenizer.model", &t));
    if (!t)
        return;
    pu_pref_record r;
    PT_OK(parse_str("{\"prompt\":[{\"role\":\"system\",\"content\":\"Be kind.\"},{\"role\":"
                    "\"user\",\"content\":\"Can you help me?\"}],\"chosen\":\"Yes, gladly.\","
                    "\"rejected\":\"No way\"}",
                    NULL, &r));
    pu_pref_tokens pt;
    PT_OK(pu_pref_tokenize(t, &r, &pt));
    check_pair(t, &pt, &r, "inline");
    /* the chosen sample equals what puyu sft makes of the same conversation */
    const char *js = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be kind.\"},{\"role\":"
                     "\"user\",\"content\":\"Can you help me?\"},{\"role\":\"assistant\","
                     "\"content\":\"Yes, gladly.\"}]}";
    pu_sft_record sr;
    pu_sft_tokens st = {0};
    PT_OK(pu_sft_record_parse(js, strlen(js), "inline", NULL, &sr));
    PT_OK(pu_sft_tokenize(t, &sr, &st));
    PT_CHECK(st.n == pt.chosen.n &&
             memcmp(st.ids, pt.chosen.ids, (size_t)st.n * sizeof *st.ids) == 0 &&
             memcmp(st.labels, pt.chosen.labels, (size_t)st.n * sizeof *st.labels) == 0);
    pu_sft_tokens_free(&st);
    pu_sft_record_free(&sr);
    pu_pref_tokens_free(&pt);
    pu_pref_record_free(&r);
    pu_tok_destroy(t);

    /* ../shared/data/preference with the InternLM2 tokenizer: every pair of the
     * first 20 records of each file */
    char tb[1024], pb[1024];
    const char *tp = pt_shared_path("internlm2/tokenizer.model", tb, sizeof tb);
    if (!tp)
        return;
    PT_OK(pu_tok_load(tp, &t));
    const char *files[] = {"preference/dpo_en_demo.json", "preference/dpo_zh_demo.json",
                           "preference/oaast_rm_zh.json",
                           "preference/hh-rlhf-harmless-base-test.jsonl.gz"};
    for (int f = 0; t && f < 4; f++) {
        const char *p = pt_shared_path(files[f], pb, sizeof pb);
        if (!p)
            continue;
        pu_pref_load_opts lo = {{NULL, NULL}, true};
        pu_pref_data *d = NULL;
        PT_OK(pu_pref_data_load(&p, 1, &lo, &d));
        for (int64_t i = 0; d && i < 20 && i < pu_pref_data_n(d); i++) {
            PT_OK(pu_pref_tokenize(t, pu_pref_data_get(d, i), &pt));
            check_pair(t, &pt, pu_pref_data_get(d, i), pu_pref_data_where(d, i));
            pu_pref_tokens_free(&pt);
        }
        pu_pref_data_destroy(d);
    }
    pu_tok_destroy(t);
}

/* A preference side tokenizes exactly as `puyu sft` tokenizes the same
 * conversation given as an SFT record ({"messages": prompt + [assistant
 * response]} with only the response scored, read by pu_sft_record_parse). */
static void test_pref_vs_sft(void) {
    if (!PT_TEST("shared preference sets: each side = the SFT record of the same conversation"))
        return;
    char tb[1024], pb[1024];
    const char *tp = pt_shared_path("internlm2/tokenizer.model", tb, sizeof tb);
    if (!tp)
        return;
    pu_tok *t = NULL;
    PT_OK(pu_tok_load(tp, &t));
    const char *files[] = {"preference/dpo_en_demo.json", "preference/dpo_zh_demo.json",
                           "preference/oaast_rm_zh.json"};
    int64_t compared = 0, differ = 0;
    for (int f = 0; t && f < 3; f++) {
        const char *p = pt_shared_path(files[f], pb, sizeof pb);
        if (!p)
            continue;
        json_t *arr = NULL;
        PT_OK(pu_json_load_file(p, &arr));
        for (size_t i = 0; arr && i < 15 && i < json_array_size(arr); i++) {
            char *js = json_dumps(json_array_get(arr, i), JSON_COMPACT);
            pu_pref_record r;
            if (parse_str(js, NULL, &r) != PU_OK) { /* e.g. chosen == rejected */
                pu_err_clear();
                free(js);
                continue;
            }
            for (int k = 0; k < 2; k++) {
                json_t *msgs = json_array();
                for (int m = 0; m < r.prompt.msgs.n; m++)
                    json_array_append_new(
                        msgs, json_pack("{s:s, s:s, s:b}", "role", r.prompt.msgs.msgs[m].role,
                                        "content", r.prompt.msgs.msgs[m].content, "loss", 0));
                json_array_append_new(msgs,
                                      json_pack("{s:s, s:s, s:b}", "role", "assistant", "content",
                                                k ? r.rejected : r.chosen, "loss", 1));
                json_t *rec = json_pack("{s:o}", "messages", msgs);
                char *rt = json_dumps(rec, JSON_COMPACT);
                json_decref(rec);
                pu_sft_record sr, pc;
                pu_sft_tokens x = {0}, y = {0};
                PT_OK(pu_sft_record_parse(rt, strlen(rt), "sft", NULL, &sr));
                PT_OK(pu_pref_conversation(&r, k, &pc));
                PT_OK(pu_sft_tokenize(t, &sr, &x));
                PT_OK(pu_sft_tokenize(t, &pc, &y));
                compared++;
                bool same = x.n == y.n && x.n > 0 && !memcmp(x.ids, y.ids, (size_t)x.n * 4) &&
                            !memcmp(x.labels, y.labels, (size_t)x.n * 4);
                differ += !same;
                PT_CHECK_MSG(same, "%s[%zu] %s: %lld vs %lld tokens", files[f], i,
                             k ? "rejected" : "chosen", (long long)x.n, (long long)y.n);
                pu_sft_tokens_free(&x);
                pu_sft_tokens_free(&y);
                pu_sft_record_free(&pc);
                pu_sft_record_free(&sr);
                free(rt);
            }
            pu_pref_record_free(&r);
            free(js);
        }
        json_decref(arr);
    }
    PT_CHECK(compared > 0 && differ == 0);
    pu_tok_destroy(t);
}

PT_SUITE(align_pref) {
    test_pref_vs_sft();
    test_pref_records();
    test_pref_shared();
    test_pref_tokens();
}
