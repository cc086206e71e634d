/*
 * align_fixtures.h — options and metrics readers shared by the alignment
 * suites (test_dpo_train.c, test_rm_train.c, test_align_precision.c,
 * test_train_nan.c): the tiny models and pairs of tests/golden/dpo_train
 * and tests/golden/rm_train, as the PyTorch references use them.
 */
#ifndef PU_TESTS_ALIGN_FIXTURES_H
#define PU_TESTS_ALIGN_FIXTURES_H

#include "puyu/pu_align.h"

/* `puyu dpo` on tests/golden/sft/hf + tests/golden/dpo_train/data.jsonl:
 * file order, beta 0.5, 3 steps of 2 pairs, lr 3e-3 -> 3e-4, warmup 1,
 * weight decay 0.1, quiet (tools/gen_dpo_ref.py's settings) */
void afx_dpo_opts(pu_dpo_train_opts *o, const char *out);
/* `puyu rm train` on tests/golden/rm_train/base + data.jsonl: file order,
 * reward token 3, 3 steps of 2 pairs, lr 2e-2 -> 2e-3, warmup 1, weight
 * decay 0.1, quiet (tools/gen_rm_train_ref.py's settings) */
void afx_rm_opts(pu_rm_train_opts *o, const char *out);
/* field `key` of each step line (a line with "loss") of OUT/metrics.jsonl,
 * in order; returns how many (<= cap) */
int afx_metrics(const char *out, const char *key, double *v, int cap);

#endif
