/*
 * test_align_precision.c — `puyu dpo` and `puyu rm train` with the training
 * model options of `puyu sft` (--precision, --attn, --recompute; issue 14):
 * 4 AdamW steps of each on the tests' tiny models.
 *   fp32 explicitly = the default (bitwise: fp32 is the code path of before,
 *   whose losses test_dpo_train.c / test_rm_train.c check against PyTorch);
 *   --recompute block = no recompute, bitwise (the same grads);
 *   --attn naive = flash within 1e-5 relative;
 *   --precision bf16 within 2% of fp32 at every step, and not equal to it
 *   (the bf16 products really run).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "align_fixtures.h"
#include "pt.h"
#include "puyu/pu_align.h"
#include "train/train_impl.h"

#define STEPS 4

/* run rm train (rm) or dpo with the given model options; losses of each step */
static int run(bool rm, const char *tag, const char *precision, const char *attn,
               const char *recompute, double *loss) {
    char out[512];
    pt_tmp_path(tag, out, sizeof out);
    pu_train_opts *t;
    pu_rm_train_opts ro;
    pu_dpo_train_opts d;
    if (rm) {
        afx_rm_opts(&ro, out);
        t = &ro.train;
    } else {
        afx_dpo_opts(&d, out);
        t = &d.train;
    }
    t->steps = STEPS;
    t->min_lr = t->lr / 10;
    t->precision = precision;
    t->attn = attn;
    t->recompute = recompute;
    pu_pool *pool = pu_pool_create(2);
    pu_status s = rm ? pu_rm_train_run(&ro, pool) : pu_dpo_train_run(&d, pool);
    pu_pool_destroy(pool);
    PT_CHECK_MSG(s == PU_OK, "%s: %s", tag, pu_err_msg());
    return s == PU_OK ? afx_metrics(out, "loss", loss, STEPS) : 0;
}

static void check(bool rm) {
    const char *k = rm ? "rm" : "dpo";
    char tag[64];
    double base[STEPS], x[STEPS];
    snprintf(tag, sizeof tag, "%sP_def", k);
    PT_EQ_I64(run(rm, tag, NULL, NULL, NULL, base), STEPS);
    snprintf(tag, sizeof tag, "%sP_fp32", k);
    PT_EQ_I64(run(rm, tag, "fp32", "flash", "none", x), STEPS);
    for (int i = 0; i < STEPS; i++)
        PT_CHECK_MSG(x[i] == base[i], "%s fp32 step %d: %.17g vs default %.17g", k, i + 1, x[i],
                     base[i]);
    snprintf(tag, sizeof tag, "%sP_blk", k);
    PT_EQ_I64(run(rm, tag, NULL, NULL, "block", x), STEPS);
    for (int i = 0; i < STEPS; i++)
        PT_CHECK_MSG(x[i] == base[i], "%s --recompute block step %d: %.17g vs %.17g", k, i + 1,
                     x[i], base[i]);
    snprintf(tag, sizeof tag, "%sP_naive", k);
    PT_EQ_I64(run(rm, tag, NULL, "naive", "attn", x), STEPS);
    for (int i = 0; i < STEPS; i++)
        PT_NEAR(x[i], base[i], 0, 1e-5);
    snprintf(tag, sizeof tag, "%sP_bf16", k);
    PT_EQ_I64(run(rm, tag, "bf16", NULL, NULL, x), STEPS);
    double worst = 0;
    bool differs = false;
    for (int i = 0; i < STEPS; i++) {
        double rel = fabs(x[i] - base[i]) / fabs(base[i]);
        worst = fmax(worst, rel);
        differs = differs || x[i] != base[i];
        PT_CHECK_MSG(rel < 0.02, "%s bf16 step %d: %.9g vs fp32 %.9g", k, i + 1, x[i], base[i]);
    }
    PT_CHECK_MSG(differs, "%s: bf16 losses equal fp32's bit for bit: not running bf16?", k);
    printf("    %s: bf16 vs fp32 loss, worst relative difference over %d steps %.2e\n", k, STEPS,
           worst);
}

PT_SUITE(align_precision) {
    if (PT_TEST("dpo --precision bf16 within 2% of fp32; fp32 / --recompute block bitwise the "
                "default; --attn naive = flash"))
        check(false);
    if (PT_TEST("rm train --precision bf16 within 2% of fp32; fp32 / --recompute block bitwise "
                "the default; --attn naive = flash"))
        check(true);
}
