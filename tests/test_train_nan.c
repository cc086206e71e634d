/*
 * test_train_nan.c — a diverging run stops (pu_train_loop, shared by sft,
 * rm train and dpo): the error names the step and the last good checkpoint,
 * nothing is written after it (no later step_N, no final/), and that
 * checkpoint is intact: it loads as a model with every weight finite, and
 * `--resume` from it runs again.
 *
 * The divergence is real, not injected: lr 1e18 makes each AdamW update
 * move every weight by ~1e18 (still finite: those steps are saved) until a
 * forward overflows and the loss is NaN (sft and dpo at step 2, rm train a
 * step or two later: its final norm keeps the rewards finite longer). Through the CLI
 * (exit status, message on stderr): a resumed run with --adam-eps 0 divides
 * the zero moments of weights no batch has touched (0 / 0): the update of
 * step 3 leaves NaN weights, and the run stops before saving them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align_fixtures.h"
#include "pt.h"
#include "puyu/pu_align.h"
#include "puyu/pu_sft.h"
#include "train/train_impl.h"

typedef enum { JOB_SFT, JOB_RM, JOB_DPO } job_kind;
static const char *const k_job_name[3] = {"sft", "rm train", "dpo"};

static const char *const k_vars[] = {"name=Puyu", "author=the puyu authors", NULL};

static pu_status run_job(job_kind k, const char *out, double lr, bool resume, int64_t steps) {
    static const char *sft_data[1] = {"tests/golden/sft/records.jsonl"};
    pu_train_opts *t = NULL;
    pu_sft_opts so;
    pu_rm_train_opts ro;
    pu_dpo_train_opts d;
    if (k == JOB_SFT) {
        pu_sft_opts_default(&so);
        so.base_dir = "tests/golden/sft/hf";
        so.data = sft_data;
        so.n_data = 1;
        so.vars = k_vars;
        so.train.seq = 256;
        so.skip_bad = true;
        t = &so.train;
    } else if (k == JOB_RM) {
        afx_rm_opts(&ro, out);
        ro.shuffle = true;
        t = &ro.train;
    } else {
        afx_dpo_opts(&d, out);
        d.shuffle = true;
        t = &d.train;
    }
    t->adam.weight_decay = 0.0;
    t->out_dir = out;
    t->steps = steps;
    t->batch = 2;
    t->lr = lr;
    t->min_lr = lr;
    t->warmup = 0;
    t->adam.clip = 0;
    t->save_every = 1;
    t->keep = 10;
    t->resume = resume;
    t->quiet = true;
    pu_pool *pool = pu_pool_create(1);
    pu_status s = k == JOB_SFT  ? pu_sft_run(&so, pool)
                  : k == JOB_RM ? pu_rm_train_run(&ro, pool)
                                : pu_dpo_train_run(&d, pool);
    pu_pool_destroy(pool);
    return s;
}

/* every F32 tensor of the model directory finite */
static bool all_finite(const char *dir) {
    char p[700];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    pu_st_in f;
    if (pu_train_st_open(&f, p) != PU_OK)
        return false;
    bool ok = true;
    for (uint64_t i = 0; i + 4 <= f.data_len; i += 4) {
        float v;
        memcpy(&v, f.data + i, 4);
        ok = ok && isfinite(v);
    }
    pu_train_st_close(&f);
    return ok;
}

static void check_stop(job_kind k) {
    char out[512], p[700];
    pt_tmp_path(k == JOB_SFT ? "nanS" : k == JOB_RM ? "nanR" : "nanD", out, sizeof out);
    pu_err_clear();
    pu_status s = run_job(k, out, 1e18, false, 8);
    PT_CHECK_MSG(s == PU_ERR_INVALID, "%s: status %d", k_job_name[k], (int)s);
    const char *msg = pu_err_msg();
    printf("    %s: %s\n", k_job_name[k], msg);
    long long step = 0;
    const char *at = strstr(msg, "step ");
    if (at)
        step = atoll(at + 5);
    PT_CHECK_MSG(step >= 2 && step <= 8, "%s: no step named: %s", k_job_name[k], msg);
    char good[64];
    snprintf(good, sizeof good, "step_%08lld", step - 1);
    char want[128];
    snprintf(want, sizeof want, "last good checkpoint: %s", good);
    PT_CHECK_MSG(strstr(msg, want), "%s: %s", k_job_name[k], msg);
    snprintf(p, sizeof p, "%s/latest", out);
    char *txt = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(p, &txt, &len));
    PT_CHECK(txt && !strncmp(txt, good, strlen(good)));
    pu_free(txt);
    snprintf(p, sizeof p, "%s/step_%08lld", out, step);
    PT_CHECK(!pu_dir_exists(p));
    snprintf(p, sizeof p, "%s/final", out);
    PT_CHECK(!pu_dir_exists(p));
    snprintf(p, sizeof p, "%s/%s", out, good);
    pu_model *m = NULL;
    PT_OK(pu_model_load(p, &m));
    pu_model_destroy(m);
    PT_CHECK_MSG(all_finite(p), "%s: a non-finite weight in the checkpoint", k_job_name[k]);
    /* the checkpoint resumes (its huge weights may stop the run again, at a named step) */
    pu_err_clear();
    s = run_job(k, out, 1e-3, true, 8);
    PT_CHECK_MSG(s == PU_OK || (s == PU_ERR_INVALID && strstr(pu_err_msg(), "step ")), "%s",
                 pu_err_msg());
    pu_err_clear();
}

static void test_nan_stops(void) {
    for (int k = 0; k < 3; k++) {
        char name[160];
        snprintf(name, sizeof name,
                 "%s: a NaN loss stops at the step named; the last checkpoint loads, finite",
                 k_job_name[k]);
        if (PT_TEST(name))
            check_stop((job_kind)k);
    }
}

static void test_nan_cli(void) {
    if (!PT_TEST("puyu sft / rm train / dpo: non-finite weights stop the run (exit 1, step "
                 "named) before a checkpoint"))
        return;
    const char *base[3] = {
        "sft -m tests/golden/sft/hf --data tests/golden/sft/records.jsonl --var name=P --var "
        "author=Q --seq 256 --batch 2 --skip-bad",
        "rm train -m tests/golden/rm_train/base --data tests/golden/rm_train/data.jsonl --batch 1 "
        "--reward-token 3",
        "dpo -m tests/golden/sft/hf --data tests/golden/dpo_train/data.jsonl --batch 1 --beta 0.5"};
    for (int k = 0; k < 3; k++) {
        char out[512], cmd[2048], p[700];
        pt_tmp_path(k == 0 ? "nanCs" : k == 1 ? "nanCr" : "nanCd", out, sizeof out);
        snprintf(cmd, sizeof cmd, "%s %s --out %s --steps 2 --save-every 1 --lr 1e-3 -q 2>&1",
                 pt_bin(), base[k], out);
        char *o = NULL;
        PT_EQ_I64(pt_run(cmd, &o), 0);
        pu_free(o);
        snprintf(cmd, sizeof cmd,
                 "%s %s --out %s --steps 4 --save-every 1 --lr 1e-3 --adam-eps 0 --resume -q 2>&1",
                 pt_bin(), base[k], out);
        int rc = pt_run(cmd, &o);
        PT_CHECK_MSG(rc == 1, "%s: exit %d: %s", base[k], rc, o ? o : "");
        PT_CHECK_MSG(o && strstr(o, "step 3") && strstr(o, "non-finite") &&
                         strstr(o, "last good checkpoint: step_00000002"),
                     "%s", o ? o : "");
        if (k == 0 && o)
            printf("    %s", o);
        pu_free(o);
        snprintf(p, sizeof p, "%s/step_00000003", out);
        PT_CHECK(!pu_dir_exists(p));
        snprintf(p, sizeof p, "%s/step_00000002", out);
        pu_model *m = NULL;
        PT_OK(pu_model_load(p, &m));
        pu_model_destroy(m);
        PT_CHECK(all_finite(p));
    }
}

PT_SUITE(train_nan) {
    test_nan_stops();
    test_nan_cli();
}
