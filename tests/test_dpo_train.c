/*
 * test_dpo_train.c — `puyu dpo` against the PyTorch reference
 * (tests/golden/dpo_train from tools/gen_dpo_ref.py): token ids and
 * targets, 3 AdamW steps' losses and gradient norms and reward metrics;
 * LoRA (the reference = the base without the adapter); resume; bad input.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "align_fixtures.h"
#include "pt.h"
#include "puyu/pu_align.h"
#include "train/train_impl.h"

#define DPO_DIR "tests/golden/dpo_train"

static const char *k_data[1] = {DPO_DIR "/data.jsonl"};

static void test_dpo_tokens(void) {
    if (!PT_TEST("dpo: pair tokens and targets = the reference's sft tokenization"))
        return;
    json_t *ref = NULL;
    PT_OK(pu_json_load_file(DPO_DIR "/ref.json", &ref));
    pu_tok *tok = NULL;
    PT_OK(pu_tok_load("tests/golden/sft/hf/tokenizer.model", &tok));
    pu_pref_data *d = NULL;
    pu_pref_load_opts lo = {0};
    PT_OK(pu_pref_data_load(k_data, 1, &lo, &d));
    json_t *ids = json_object_get(ref, "ids"), *tgs = json_object_get(ref, "targets");
    for (int64_t i = 0; d && tok && ref && i < pu_pref_data_n(d); i++) {
        pu_pref_tokens pt;
        PT_OK(pu_pref_tokenize(tok, pu_pref_data_get(d, i), &pt));
        const pu_sft_tokens *side[2] = {&pt.chosen, &pt.rejected};
        for (int k = 0; k < 2; k++) {
            json_t *wi = json_array_get(ids, (size_t)(2 * i + k)),
                   *wt = json_array_get(tgs, (size_t)(2 * i + k));
            PT_EQ_I64(side[k]->n, (long long)json_array_size(wi));
            bool same = side[k]->n == (int64_t)json_array_size(wi);
            for (int64_t t = 0; same && t < side[k]->n; t++) {
                int32_t tg = t + 1 < side[k]->n ? side[k]->labels[t + 1] : PU_IGNORE_INDEX;
                same = side[k]->ids[t] == json_integer_value(json_array_get(wi, (size_t)t)) &&
                       tg == json_integer_value(json_array_get(wt, (size_t)t));
            }
            PT_CHECK_MSG(same, "pair %lld side %d differs", (long long)i, k);
        }
        pu_pref_tokens_free(&pt);
    }
    pu_pref_data_destroy(d);
    pu_tok_destroy(tok);
    if (ref)
        json_decref(ref);
}

static void test_dpo_run(void) {
    if (!PT_TEST("dpo: 3 AdamW steps (loss, grad norm, rewards) = PyTorch; resume bit-exact"))
        return;
    json_t *ref = NULL;
    PT_OK(pu_json_load_file(DPO_DIR "/ref.json", &ref));
    char out[512], out2[512];
    pt_tmp_path("dpoA", out, sizeof out);
    pt_tmp_path("dpoB", out2, sizeof out2);
    pu_dpo_train_opts o;
    afx_dpo_opts(&o, out);
    pu_pool *pool = pu_pool_create(2);
    PT_OK(pu_dpo_train_run(&o, pool));
    const char *keys[] = {"loss",          "grad_norm",       "margin",
                          "reward_chosen", "reward_rejected", "accuracy"};
    const char *rkeys[] = {"losses",        "grad_norms",      "margin",
                           "reward_chosen", "reward_rejected", "accuracy"};
    double loss[8];
    for (int k = 0; k < 6 && ref; k++) {
        double v[8];
        int n = afx_metrics(out, keys[k], v, 8);
        PT_EQ_I64(n, 3);
        json_t *w = json_object_get(ref, rkeys[k]);
        for (int i = 0; i < n; i++) {
            double want = json_number_value(json_array_get(w, (size_t)i));
            PT_NEAR(v[i], want, k >= 2 ? 1e-4 : 0, 1e-4);
            if (k == 0)
                loss[i] = v[i];
        }
    }
    char p[700];
    snprintf(p, sizeof p, "%s/final/model.safetensors", out);
    PT_CHECK(pu_file_exists(p));
    /* resume from step 2 of a run checkpointed every step */
    afx_dpo_opts(&o, out2);
    o.train.save_every = 1;
    o.train.keep = 5;
    PT_OK(pu_dpo_train_run(&o, pool));
    snprintf(p, sizeof p, "%s/step_00000003", out2);
    pu_train_rm_flat_dir(p);
    snprintf(p, sizeof p, "%s/latest", out2);
    PT_OK(pu_file_write_atomic(p, "step_00000002\n", 14));
    o.train.resume = true;
    PT_OK(pu_dpo_train_run(&o, pool));
    double l2[8];
    PT_EQ_I64(afx_metrics(out2, "loss", l2, 8), 3);
    for (int i = 0; i < 3; i++)
        PT_CHECK_MSG(l2[i] == loss[i], "step %d: %.17g vs resumed %.17g", i + 1, loss[i], l2[i]);
    pu_pool_destroy(pool);
    if (ref)
        json_decref(ref);
}

static void test_dpo_lora_and_losses(void) {
    if (!PT_TEST("dpo --lora: step 1 policy = reference (loss log 2); simpo / orpo run"))
        return;
    char out[512];
    pt_tmp_path("dpoL", out, sizeof out);
    pu_dpo_train_opts o;
    afx_dpo_opts(&o, out);
    o.lora = true;
    o.lora_r = 4;
    o.lora_dropout = 0;
    pu_pool *pool = pu_pool_create(2);
    PT_OK(pu_dpo_train_run(&o, pool));
    double v[8];
    PT_EQ_I64(afx_metrics(out, "loss", v, 8), 3);
    PT_NEAR(v[0], log(2.0), 1e-6, 0);
    PT_CHECK(v[2] < v[0]);
    char p[700];
    snprintf(p, sizeof p, "%s/final/adapter_config.json", out);
    PT_CHECK(pu_file_exists(p));
    for (int k = 1; k <= 2; k++) {
        pt_tmp_path(k == 1 ? "dpoS" : "dpoO", out, sizeof out);
        afx_dpo_opts(&o, out);
        o.kind = k == 1 ? PU_DPO_SIMPO : PU_DPO_ORPO;
        PT_OK(pu_dpo_train_run(&o, pool));
        PT_EQ_I64(afx_metrics(out, "loss", v, 8), 3);
        PT_CHECK(isfinite(v[0]) && isfinite(v[2]));
    }
    pu_pool_destroy(pool);
}

static void test_dpo_bad(void) {
    if (!PT_TEST("dpo: a reference of another shape, pairs over --seq: clear errors / skips"))
        return;
    char out[512];
    pt_tmp_path("dpoBad", out, sizeof out);
    pu_dpo_train_opts o;
    afx_dpo_opts(&o, out);
    o.train.steps = 1;
    o.ref_dir = "tests/golden/rm_train/base";
    pu_pool *pool = pu_pool_create(1);
    PT_CHECK(pu_dpo_train_run(&o, pool) == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "another shape"), "%s", pu_err_msg());
    pu_err_clear();
    o.ref_dir = NULL;
    o.train.seq = 25;
    PT_CHECK(pu_dpo_train_run(&o, pool) == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "data.jsonl:") && strstr(pu_err_msg(), "--seq"), "%s",
                 pu_err_msg());
    pu_err_clear();
    o.skip_bad = true;
    o.train.seq = 5;
    PT_CHECK(pu_dpo_train_run(&o, pool) == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "no usable pairs"), "%s", pu_err_msg());
    pu_err_clear();
    pu_pool_destroy(pool);
}

PT_SUITE(dpo_train) {
    test_dpo_tokens();
    test_dpo_run();
    test_dpo_lora_and_losses();
    test_dpo_bad();
}
