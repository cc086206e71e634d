/*
 * align_fixtures.c — see align_fixtures.h.
 */
#include "align_fixtures.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const char *k_dpo_data[1] = {"tests/golden/dpo_train/data.jsonl"};
static const char *k_rm_data[1] = {"tests/golden/rm_train/data.jsonl"};

void afx_dpo_opts(pu_dpo_train_opts *o, const char *out) {
    pu_dpo_train_opts_default(o);
    o->policy_dir = "tests/golden/sft/hf";
    o->data = k_dpo_data;
    o->n_data = 1;
    o->shuffle = false;
    o->beta = 0.5;
    o->train.out_dir = out;
    o->train.steps = 3;
    o->train.batch = 2;
    o->train.lr = 3e-3;
    o->train.min_lr = 3e-4;
    o->train.warmup = 1;
    o->train.adam.weight_decay = 0.1;
    o->train.quiet = true;
}

void afx_rm_opts(pu_rm_train_opts *o, const char *out) {
    pu_rm_train_opts_default(o);
    o->base_dir = "tests/golden/rm_train/base";
    o->data = k_rm_data;
    o->n_data = 1;
    o->shuffle = false;
    o->reward_token = 3;
    o->train.out_dir = out;
    o->train.steps = 3;
    o->train.batch = 2;
    o->train.lr = 2e-2;
    o->train.min_lr = 2e-3;
    o->train.warmup = 1;
    o->train.adam.weight_decay = 0.1;
    o->train.quiet = true;
}

int afx_metrics(const char *out, const char *key, double *v, int cap) {
    char mp[600];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", out);
    char *buf = NULL;
    size_t len = 0;
    if (pu_file_read_all(mp, &buf, &len) != PU_OK)
        return 0;
    int n = 0;
    for (char *p = buf, *e; *p && (e = strchr(p, '\n')); p = e + 1) {
        json_t *j = json_loadb(p, (size_t)(e - p), 0, NULL);
        json_t *l = j && json_object_get(j, "loss") ? json_object_get(j, key) : NULL;
        if (l && n < cap)
            v[n++] = json_number_value(l);
        if (j)
            json_decref(j);
    }
    pu_free(buf);
    return n;
}
