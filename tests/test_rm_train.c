/*
 * test_rm_train.c — `puyu rm train` against the PyTorch reference
 * (tests/golden/rm_train from tools/gen_rm_train_ref.py): token ids, loss and
 * gradients (focal + log barrier) of one pair batch, 3 AdamW steps' losses,
 * the rewards of the trained OUT/final/ under pu_model_reward (what `puyu rm
 * score` computes), bit-exact resume, bad input.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "align_fixtures.h"
#include "pt.h"
#include "puyu/pu_align.h"
#include "puyu/pu_infer.h"
#include "train/train_impl.h"

#define RT_DIR "tests/golden/rm_train"

static const char *k_data[1] = {RT_DIR "/data.jsonl"};

static void read_floats(json_t *a, float *dst, size_t n) {
    for (size_t i = 0; i < n && i < json_array_size(a); i++)
        dst[i] = (float)json_number_value(json_array_get(a, i));
}

static void test_rm_train_grads(void) {
    if (!PT_TEST("rm train: ids, loss and gradients (focal + barrier) = PyTorch"))
        return;
    json_t *ref = NULL;
    PT_OK(pu_json_load_file(RT_DIR "/ref.json", &ref));
    pu_model *base = NULL;
    pu_tok *tok = NULL;
    PT_OK(pu_model_load(RT_DIR "/base", &base));
    PT_OK(pu_tok_load(RT_DIR "/base/tokenizer.model", &tok));
    if (!ref || !base || !tok)
        goto done;
    /* token ids of the first two pairs, as pu_rm_tokenize builds them */
    json_t *ids = json_object_get(ref, "ids");
    pu_pref_data *d = NULL;
    pu_pref_load_opts lo = {0};
    PT_OK(pu_pref_data_load(k_data, 1, &lo, &d));
    int64_t T = 0, lens[4];
    int32_t *seqs[4] = {0};
    for (int i = 0; i < 4 && d; i++) {
        pu_sft_record conv = {0};
        PT_OK(pu_pref_conversation(pu_pref_data_get(d, i / 2), i % 2, &conv));
        PT_OK(pu_rm_tokenize(tok, &conv.msgs, 3, &seqs[i], &lens[i]));
        pu_sft_record_free(&conv);
        json_t *w = json_array_get(ids, (size_t)i);
        PT_EQ_I64(lens[i], (long long)json_array_size(w));
        for (int64_t k = 0; k < lens[i] && k < (int64_t)json_array_size(w); k++)
            if (seqs[i][k] != json_integer_value(json_array_get(w, (size_t)k))) {
                PT_CHECK_MSG(false, "side %d token %lld differs", i, (long long)k);
                break;
            }
        T = lens[i] > T ? lens[i] : T;
    }
    pu_pref_data_destroy(d);
    int32_t *bid = pu_calloc((size_t)(4 * T), sizeof(int32_t)),
            *btg = pu_calloc((size_t)(4 * T), sizeof(int32_t));
    for (int i = 0; i < 4; i++)
        for (int64_t k = 0; k < T; k++) {
            bid[i * T + k] = seqs[i] && k < lens[i] ? seqs[i][k] : 0;
            btg[i * T + k] = PU_IGNORE_INDEX;
        }
    pu_tmodel *m = NULL;
    PT_OK(pu_tmodel_create_from(base, 4, T, NULL, &m));
    int64_t C = pu_model_config(base)->hidden_size;
    float *v = pu_calloc((size_t)C, sizeof(float)), *dv = pu_calloc((size_t)C, sizeof(float));
    read_floats(json_object_get(ref, "grad_v_head"), v, (size_t)C);
    pu_tbatch bt = {bid, btg, NULL, NULL, 4, T};
    pu_rm_loss_opts rlo = pu_rm_loss_default_opts();
    pu_rm_metrics met;
    float *dh = NULL;
    size_t cap = 0;
    pu_pool *pool = pu_pool_create(2);
    if (m) {
        pu_tmodel_zero_grad(m);
        PT_OK(pu_rm_pairs_step(m, pool, &bt, lens, v, dv, &rlo, 0.5f, true, &met, NULL, &dh, &cap));
        PT_NEAR(met.loss, json_number_value(json_object_get(ref, "grad_loss")), 1e-6, 1e-5);
        json_t *g = json_object_get(ref, "grads");
        float *want = pu_malloc(4096 * sizeof(float));
        read_floats(json_object_get(g, "v_head.weight"), want, (size_t)C);
        PT_ALLCLOSE("dv", dv, want, C, 1e-6, 1e-4);
        const char *names[] = {"model.layers.0.attention.wqkv.weight",
                               "model.layers.1.feed_forward.w2.weight", "model.norm.weight",
                               "model.layers.0.attention_norm.weight"};
        for (int k = 0; k < 4; k++) {
            int pi = pu_tmodel_find(m, names[k]);
            PT_CHECK(pi >= 0);
            if (pi < 0)
                continue;
            const pu_param *p = pu_tmodel_param(m, pi);
            json_t *a = json_object_get(g, names[k]);
            PT_EQ_I64(p->numel, (long long)json_array_size(a));
            if (p->numel > 4096)
                continue;
            read_floats(a, want, (size_t)p->numel);
            PT_ALLCLOSE(names[k], pu_tmodel_grads(m) + p->offset, want, p->numel, 1e-6, 1e-4);
        }
        pu_free(want);
    }
    pu_pool_destroy(pool);
    pu_free(dh);
    pu_free(v);
    pu_free(dv);
    pu_tmodel_destroy(m);
    pu_free(bid);
    pu_free(btg);
    for (int i = 0; i < 4; i++)
        pu_free(seqs[i]);
done:
    pu_tok_destroy(tok);
    pu_model_destroy(base);
    if (ref)
        json_decref(ref);
}

static void test_rm_train_run(void) {
    if (!PT_TEST("rm train: 3 AdamW steps = PyTorch; final/ rewards = reference; resume bit-exact"))
        return;
    json_t *ref = NULL;
    PT_OK(pu_json_load_file(RT_DIR "/ref.json", &ref));
    char out[512], out2[512];
    pt_tmp_path("rmtA", out, sizeof out);
    pt_tmp_path("rmtB", out2, sizeof out2);
    pu_rm_train_opts o;
    afx_rm_opts(&o, out);
    pu_pool *pool = pu_pool_create(2);
    PT_OK(pu_rm_train_run(&o, pool));
    double got[8];
    int n = afx_metrics(out, "loss", got, 8);
    PT_EQ_I64(n, 3);
    json_t *wl = json_object_get(ref, "losses");
    for (int i = 0; i < n && ref; i++)
        PT_NEAR(got[i], json_number_value(json_array_get(wl, (size_t)i)), 0, 1e-4);
    /* OUT/final/ is a reward model whose rewards equal the reference's */
    char fin[600];
    snprintf(fin, sizeof fin, "%s/final", out);
    pu_model *rm = NULL;
    PT_OK(pu_model_load(fin, &rm));
    pu_session *s = NULL;
    if (rm) {
        PT_CHECK(pu_model_is_reward(rm));
        PT_EQ_I64(pu_model_config(rm)->reward_token_id, 3);
        PT_OK(pu_session_create(rm, 128, NULL, &s));
    }
    json_t *ids = json_object_get(ref, "ids"), *fr = json_object_get(ref, "final_rewards");
    for (size_t i = 0; s && i < json_array_size(ids); i++) {
        json_t *w = json_array_get(ids, i);
        int32_t q[256];
        int64_t len = (int64_t)json_array_size(w);
        for (int64_t k = 0; k < len && k < 256; k++)
            q[k] = (int32_t)json_integer_value(json_array_get(w, (size_t)k));
        float r = 0;
        PT_OK(pu_model_reward(rm, s, q, len, &r));
        PT_NEAR(r, json_number_value(json_array_get(fr, i)), 1e-4, 1e-4);
    }
    pu_session_destroy(s);
    pu_model_destroy(rm);
    /* resume: a run checkpointed every step, rolled back to step 2, resumed */
    afx_rm_opts(&o, out2);
    o.train.save_every = 1;
    o.train.keep = 5;
    PT_OK(pu_rm_train_run(&o, pool));
    char p[700];
    snprintf(p, sizeof p, "%s/step_00000003", out2);
    pu_train_rm_flat_dir(p);
    snprintf(p, sizeof p, "%s/latest", out2);
    PT_OK(pu_file_write_atomic(p, "step_00000002\n", 14));
    o.train.resume = true;
    PT_OK(pu_rm_train_run(&o, pool));
    double got2[8];
    int n2 = afx_metrics(out2, "loss", got2, 8);
    PT_EQ_I64(n2, 3);
    for (int i = 0; i < n && i < n2; i++)
        PT_CHECK_MSG(got[i] == got2[i], "step %d: %.17g vs resumed %.17g", i + 1, got[i], got2[i]);
    pu_pool_destroy(pool);
    if (ref)
        json_decref(ref);
}

static void test_rm_train_bad(void) {
    if (!PT_TEST("rm train: a pair over --seq is an error naming the line, or a counted skip"))
        return;
    char out[512];
    pt_tmp_path("rmtBad", out, sizeof out);
    pu_rm_train_opts o;
    afx_rm_opts(&o, out);
    o.train.seq = 40;
    o.train.steps = 1;
    pu_pool *pool = pu_pool_create(1);
    pu_status s = pu_rm_train_run(&o, pool);
    PT_CHECK(s == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "data.jsonl:") && strstr(pu_err_msg(), "--seq 40"), "%s",
                 pu_err_msg());
    pu_err_clear();
    o.skip_bad = true;
    PT_OK(pu_rm_train_run(&o, pool));
    o.train.seq = 10; /* nothing fits */
    s = pu_rm_train_run(&o, pool);
    PT_CHECK(s == PU_ERR_INVALID && strstr(pu_err_msg(), "no usable pairs"));
    pu_err_clear();
    o.train.seq = 0;
    o.skip_bad = false;
    o.reward_token = 600; /* outside the vocabulary */
    PT_CHECK(pu_rm_train_run(&o, pool) == PU_ERR_RANGE);
    pu_err_clear();
    pu_pool_destroy(pool);
}

/* --lora: final/ (adapter merged into the body + v_head) scores as the
 * trained model did in its last evaluation (same pairs, dropout off) */
static void test_rm_train_lora(void) {
    if (!PT_TEST("rm train --lora: final/ (merged) rewards = the trained model's eval rewards"))
        return;
    char out[512];
    pt_tmp_path("rmtL", out, sizeof out);
    pu_rm_train_opts o;
    afx_rm_opts(&o, out);
    o.lora = true;
    o.lora_r = 4;
    o.head_normal = true;
    o.eval_data = k_data;
    o.n_eval = 1;
    pu_pool *pool = pu_pool_create(2);
    PT_OK(pu_rm_train_run(&o, pool));
    pu_pool_destroy(pool);
    /* the last val line: mean chosen / rejected reward over all pairs */
    char mp[600];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", out);
    char *buf = NULL;
    size_t len = 0;
    double vc = NAN, vr = NAN;
    PT_OK(pu_file_read_all(mp, &buf, &len));
    for (char *p = buf, *e; p && *p && (e = strchr(p, '\n')); p = e + 1) {
        json_t *j = json_loadb(p, (size_t)(e - p), 0, NULL);
        if (j && json_object_get(j, "val_reward_chosen")) {
            vc = json_number_value(json_object_get(j, "val_reward_chosen"));
            vr = json_number_value(json_object_get(j, "val_reward_rejected"));
        }
        if (j)
            json_decref(j);
    }
    pu_free(buf);
    char fin[600];
    snprintf(fin, sizeof fin, "%s/final", out);
    pu_model *rm = NULL;
    pu_session *s = NULL;
    json_t *ref = NULL;
    PT_OK(pu_json_load_file(RT_DIR "/ref.json", &ref));
    PT_OK(pu_model_load(fin, &rm));
    if (rm)
        PT_OK(pu_session_create(rm, 128, NULL, &s));
    json_t *ids = json_object_get(ref, "ids");
    double sc = 0, sr = 0;
    size_t np = json_array_size(ids) / 2;
    for (size_t i = 0; s && i < 2 * np; i++) {
        json_t *w = json_array_get(ids, i);
        int32_t q[256];
        int64_t n = (int64_t)json_array_size(w);
        for (int64_t k = 0; k < n && k < 256; k++)
            q[k] = (int32_t)json_integer_value(json_array_get(w, (size_t)k));
        float r = 0;
        PT_OK(pu_model_reward(rm, s, q, n, &r));
        *(i % 2 ? &sr : &sc) += r;
    }
    PT_NEAR(sc / (double)np, vc, 1e-4, 1e-4);
    PT_NEAR(sr / (double)np, vr, 1e-4, 1e-4);
    pu_session_destroy(s);
    pu_model_destroy(rm);
    if (ref)
        json_decref(ref);
}

/* the CLI: rm train end to end (final/ scored by rm score), dpo, usage errors */
static void test_rm_train_cli(void) {
    if (!PT_TEST("puyu rm train / puyu dpo CLI: runs, --help, usage errors exit 2"))
        return;
    char out[512], cmd[2048];
    pt_tmp_path("rmtCli", out, sizeof out);
    snprintf(
        cmd, sizeof cmd,
        "%s rm train -m " RT_DIR "/base --data " RT_DIR "/data.jsonl --out %s --steps 2 "
        "--batch 2 --reward-token 3 --lr 1e-2 -q 2>&1 && %s rm score -m %s/final --data " RT_DIR
        "/data.jsonl 2>&1",
        pt_bin(), out, pt_bin(), out);
    char *o = NULL;
    PT_EQ_I64(pt_run(cmd, &o), 0);
    PT_CHECK_MSG(o && strstr(o, "\"reward_chosen\"") && strstr(o, "\"line\": 6"), "%s", o ? o : "");
    pu_free(o);
    const char *bad[] = {"rm train -m x --data y --out z --steps 1 --loss hinge",
                         "rm train -m x --data y --out z --steps 1 --penalty l1",
                         "rm train -m x --data y --out z --steps 1 --head-init ones",
                         "rm train --data y --out z --steps 1",
                         "dpo -m x --data y --out z --steps 1 --loss ipo",
                         "dpo --data y"};
    for (int i = 0; i < 6; i++) {
        snprintf(cmd, sizeof cmd, "%s %s 2>&1", pt_bin(), bad[i]);
        PT_EQ_I64(pt_run(cmd, &o), 2);
        pu_free(o);
    }
    const char *help[] = {"rm train --help", "dpo --help", "rm --help"};
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "%s %s 2>&1", pt_bin(), help[i]);
        PT_EQ_I64(pt_run(cmd, &o), 0);
        PT_CHECK(o && strstr(o, "usage"));
        pu_free(o);
    }
    pt_tmp_path("dpoCli", out, sizeof out);
    snprintf(cmd, sizeof cmd,
             "%s dpo -m tests/golden/sft/hf --data tests/golden/dpo_train/data.jsonl --out %s "
             "--steps 2 --batch 2 --beta 0.5 -q 2>&1",
             pt_bin(), out);
    PT_EQ_I64(pt_run(cmd, &o), 0);
    pu_free(o);
    char mp[700];
    snprintf(mp, sizeof mp, "%s/final/model.safetensors", out);
    PT_CHECK(pu_file_exists(mp));
}

PT_SUITE(rm_train) {
    test_rm_train_cli();
    test_rm_train_lora();
    test_rm_train_grads();
    test_rm_train_run();
    test_rm_train_bad();
}
