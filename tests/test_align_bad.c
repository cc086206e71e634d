/*
 * test_align_bad.c — bad preference input of `puyu rm train` and `puyu dpo`
 * (the shared pair loader, src/train/pairs.c, and the jobs' checks): pairs
 * whose chosen equals rejected, empty responses, sides over --seq, --seq
 * over the model's context, a tokenizer larger than the model's vocabulary.
 * Each is an error naming FILE:LINE and the side / field, or with skip_bad a
 * counted skip (equal chosen / rejected strings are caught by the parser,
 * pref_data.c; sides that tokenize identically by the loader). (A reward model without v_head:
 * test_align_rm.c; a reference of another shape: test_dpo_train.c; NaN rewards / losses:
 * test_align.c and test_train_nan.c.)
 */
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_align.h"
#include "train/train_impl.h"

#define GOOD                                                                                     \
    "{\"prompt\": [{\"role\": \"user\", \"content\": \"Is fire hot?\"}], \"chosen\": \"Yes, it " \
    "is.\", \"rejected\": \"No.\"}\n"

/* tmp file NAME: the good pair on line 1, `second` on line 2 */
static void write_two(const char *name, const char *second, char *path, size_t cap) {
    pt_tmp_path(name, path, cap);
    char buf[4096];
    int len = snprintf(buf, sizeof buf, "%s%s\n", GOOD, second);
    PT_OK(pu_file_write_atomic(path, buf, (size_t)len));
}

/* load path with lo; expect an error containing want (no skip) and, with
 * skip_bad, the good pair kept and one counted skip */
static void expect_bad(pu_pair_load *lo, const char *path, const char *want) {
    const char *paths[1] = {path};
    pu_pair_set set;
    lo->skip_bad = false;
    pu_status s = pu_pair_set_load(lo, paths, 1, "train", &set);
    PT_CHECK(s != PU_OK);
    PT_CHECK_MSG(strstr(pu_err_msg(), path) && strstr(pu_err_msg(), want), "want \"%s\": %s", want,
                 pu_err_msg());
    pu_err_clear();
    lo->skip_bad = true;
    PT_OK(pu_pair_set_load(lo, paths, 1, "train", &set));
    PT_EQ_I64(set.n_pairs, 1);
    PT_EQ_I64(set.n_skipped, 1);
    pu_pair_set_free(&set);
}

static void check_kind(bool rm) {
    pu_tok *tok = NULL;
    PT_OK(pu_tok_load(rm ? "tests/golden/rm_train/base/tokenizer.model"
                         : "tests/golden/sft/hf/tokenizer.model",
                      &tok));
    if (!tok)
        return;
    pu_pair_load lo = {.tok = tok,
                       .reward_token = rm ? 3 : -1,
                       .seq = 4096,
                       .quiet = true,
                       .label = rm ? "rm train" : "dpo"};
    char path[512];
    write_two(rm ? "bad_empty_rm.jsonl" : "bad_empty_lm.jsonl",
              "{\"prompt\": [{\"role\": \"user\", \"content\": \"Say hi\"}], \"chosen\": "
              "\"Hello\", \"rejected\": \"   \"}",
              path, sizeof path);
    expect_bad(&lo, path, ":2: rejected: empty response");
    write_two(rm ? "bad_same_rm.jsonl" : "bad_same_lm.jsonl",
              "{\"prompt\": [{\"role\": \"user\", \"content\": \"Say hi\"}], \"chosen\": \"Hi!\", "
              "\"rejected\": \"Hi!\"}",
              path, sizeof path);
    expect_bad(&lo, path, ":2: chosen: equal to rejected");
    char longr[3000], line[3200];
    size_t n = 0;
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(longr + n, sizeof longr - n, "word%d and some more text ", i);
    snprintf(line, sizeof line,
             "{\"prompt\": [{\"role\": \"user\", \"content\": \"Talk\"}], \"chosen\": \"ok\", "
             "\"rejected\": \"%s\"}",
             longr);
    write_two(rm ? "bad_long_rm.jsonl" : "bad_long_lm.jsonl", line, path, sizeof path);
    const char *paths[1] = {path};
    pu_pair_set set;
    lo.skip_bad = false;
    PT_OK(pu_pair_set_load(&lo, paths, 1, "train", &set));
    int64_t longest = set.n_pairs == 2 ? set.seq[3].n : 0;
    PT_CHECK(longest > 100 && longest == pu_pair_set_max_len(&set));
    pu_pair_set_free(&set);
    char want[160];
    snprintf(want, sizeof want, ":2: rejected: %lld tokens%s exceed --seq %lld", (long long)longest,
             rm ? " (reward token included)" : "", (long long)(longest - 1));
    lo.seq = longest - 1;
    expect_bad(&lo, path, want);
    lo.seq = 5; /* nothing fits */
    lo.skip_bad = true;
    PT_CHECK(pu_pair_set_load(&lo, paths, 1, "eval", &set) == PU_ERR_INVALID);
    PT_CHECK_MSG(
        strstr(pu_err_msg(), rm ? "rm train: eval: no usable pairs" : "dpo: eval: no usable pairs"),
        "%s", pu_err_msg());
    pu_err_clear();
    pu_tok_destroy(tok);
}

static void test_pairs_bad(void) {
    if (PT_TEST("dpo pairs: chosen == rejected, empty response, over --seq: file:line errors or "
                "counted skips"))
        check_kind(false);
    if (PT_TEST("rm pairs: chosen == rejected, empty response, over --seq: file:line errors or "
                "counted skips"))
        check_kind(true);
}

static void test_context_bad(void) {
    if (!PT_TEST("rm train / dpo: --seq over the context names max_position_embeddings"))
        return;
    static const char *data[1] = {"tests/golden/dpo_train/data.jsonl"};
    char out[512];
    pt_tmp_path("badctx", out, sizeof out);
    pu_dpo_train_opts d;
    pu_dpo_train_opts_default(&d);
    d.policy_dir = "tests/golden/sft/hf";
    d.data = data;
    d.n_data = 1;
    d.train.out_dir = out;
    d.train.steps = 1;
    d.train.seq = 100000;
    d.train.quiet = true;
    PT_CHECK(pu_dpo_train_run(&d, NULL) == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "dpo: --seq 100000 exceeds the model's context") &&
                     strstr(pu_err_msg(), "max_position_embeddings 512"),
                 "%s", pu_err_msg());
    pu_err_clear();
    pu_rm_train_opts r;
    pu_rm_train_opts_default(&r);
    r.base_dir = "tests/golden/rm_train/base";
    r.data = data;
    r.n_data = 1;
    r.reward_token = 3;
    r.train.out_dir = out;
    r.train.steps = 1;
    r.train.seq = 100000;
    r.train.quiet = true;
    PT_CHECK(pu_rm_train_run(&r, NULL) == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "rm train: --seq 100000 exceeds the model's context") &&
                     strstr(pu_err_msg(), "max_position_embeddings 128"),
                 "%s", pu_err_msg());
    pu_err_clear();
    /* a tokenizer with more tokens than the model's vocabulary (1600-token spm on a
     * 600-token model) */
    r.train.seq = 0;
    r.tok_path = "tests/golden/sft/hf/tokenizer.model";
    PT_CHECK(pu_rm_train_run(&r, NULL) == PU_ERR_INVALID);
    PT_CHECK_MSG(strstr(pu_err_msg(), "tokens but the model's vocab_size is 600"), "%s",
                 pu_err_msg());
    pu_err_clear();
}

PT_SUITE(align_bad) {
    test_pairs_bad();
    test_context_bad();
}
