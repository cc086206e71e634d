/*
 * test_align_rm.c — reward models: the HF InternLM2ForRewardModel layout
 * (load, v_head, reward_token_id), rewards against the PyTorch reference
 * (tests/golden/rm from tools/gen_rm_ref.py: tiny random RM + the tiny BPE
 * tokenizer; per input line the token ids, exactly, and the rewards within
 * 1e-4), `puyu rm score` end to end, writing an RM directory from a base
 * model + head (reloads with that head; rewards = head . base hidden
 * states), and bad input (no v_head, a non-RM, an out-of-vocab reward token).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_align.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

#define RM_DIR "tests/golden/rm"

static json_t *load_expected(void) {
    json_t *j = NULL;
    PT_OK(pu_json_load_file(RM_DIR "/expected.json", &j));
    return j;
}

static void test_rm_golden(void) {
    if (!PT_TEST("InternLM2ForRewardModel dir: ids and rewards = PyTorch reference"))
        return;
    pu_model *m = NULL;
    pu_tok *t = NULL;
    pu_session *s = NULL;
    json_t *ex = load_expected();
    char *buf = NULL;
    size_t len = 0;
    PT_OK(pu_model_load(RM_DIR, &m));
    if (!m || !ex)
        goto done;
    PT_CHECK(pu_model_is_reward(m));
    const pu_tensor *vh = pu_model_v_head(m);
    PT_CHECK(vh && vh->ndim == 2 && vh->shape[0] == 1 &&
             vh->shape[1] == pu_model_config(m)->hidden_size && vh->dtype == PU_DTYPE_F32);
    PT_EQ_I64(pu_model_config(m)->reward_token_id, 3);
    PT_EQ_STR(pu_model_config(m)->architecture, "InternLM2ForRewardModel");
    pu_str d = {0};
    pu_model_describe(m, 0, &d);
    PT_CHECK(d.p && strstr(d.p, "reward model"));
    pu_str_free(&d);
    PT_OK(pu_tok_load(RM_DIR "/tokenizer.model", &t));
    PT_OK(pu_session_create(m, 256, NULL, &s));
    PT_OK(pu_file_read_all(RM_DIR "/input.jsonl", &buf, &len));
    if (!t || !s || !buf)
        goto done;
    pu_pref_conditions *conds = NULL;
    PT_OK(pu_pref_conditions_default(&conds));
    pu_pref_parse_opts po = {conds, NULL};
    json_t *lines = json_object_get(ex, "lines");
    size_t li = 0;
    for (char *p = buf, *e; *p; p = e + 1, li++) {
        e = strchr(p, '\n');
        if (!e)
            break;
        json_t *want = json_array_get(lines, li);
        pu_chat conv[2];
        int nc = 0;
        PT_OK(pu_rm_parse_input(p, (size_t)(e - p), "input.jsonl", &po, conv, &nc));
        PT_EQ_I64(nc, (long long)json_array_size(json_object_get(want, "rewards")));
        for (int k = 0; k < nc; k++) {
            int32_t *ids = NULL;
            int64_t n = 0;
            PT_OK(pu_rm_tokenize(t, &conv[k], 3, &ids, &n));
            json_t *wids = json_array_get(json_object_get(want, "ids"), (size_t)k);
            bool same = (size_t)n == json_array_size(wids);
            for (int64_t i = 0; same && i < n; i++)
                same = ids[i] == json_integer_value(json_array_get(wids, (size_t)i));
            PT_CHECK_MSG(same, "line %zu conv %d: ids differ from the reference (%lld vs %zu)",
                         li + 1, k, (long long)n, json_array_size(wids));
            float r = NAN;
            PT_OK(pu_model_reward(m, s, ids, n, &r));
            double w = json_real_value(json_array_get(json_object_get(want, "rewards"), (size_t)k));
            PT_CHECK_MSG(fabs(r - w) <= 1e-4 * (1 + fabs(w)),
                         "line %zu conv %d: reward %.7g vs %.7g", li + 1, k, (double)r, w);
            pu_free(ids);
        }
        pu_chat_free(&conv[0]);
        pu_chat_free(&conv[1]);
    }
    PT_EQ_I64(li, (long long)json_array_size(lines));
    pu_pref_conditions_destroy(conds);
done:
    pu_free(buf);
    json_decref(ex);
    pu_session_destroy(s);
    pu_tok_destroy(t);
    pu_model_destroy(m);
}

static void test_rm_cli(void) {
    if (!PT_TEST("puyu rm score prints the reference rewards, one JSON line per input line"))
        return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s rm score -m " RM_DIR " --data " RM_DIR "/input.jsonl 2>&1",
             pt_bin());
    char *out = NULL;
    int rc = pt_run(cmd, &out);
    PT_EQ_I64(rc, 0);
    json_t *ex = load_expected();
    json_t *lines = json_object_get(ex, "lines");
    size_t li = 0;
    for (char *p = out, *e; p && *p; p = e + 1, li++) {
        e = strchr(p, '\n');
        if (!e)
            break;
        json_error_t err;
        json_t *j = json_loadb(p, (size_t)(e - p), 0, &err);
        PT_CHECK_MSG(j != NULL, "output line %zu is not JSON: %.*s", li + 1, (int)(e - p), p);
        json_t *wr = json_object_get(json_array_get(lines, li), "rewards");
        PT_EQ_I64(json_integer_value(json_object_get(j, "line")), (long long)li + 1);
        const char *keys[2] = {"reward", NULL};
        if (json_array_size(wr) == 2)
            keys[0] = "reward_chosen", keys[1] = "reward_rejected";
        for (int k = 0; k < 2 && keys[k]; k++) {
            double got = json_number_value(json_object_get(j, keys[k]));
            double w = json_real_value(json_array_get(wr, (size_t)k));
            PT_CHECK_MSG(json_is_number(json_object_get(j, keys[k])) &&
                             fabs(got - w) <= 1e-4 * (1 + fabs(w)),
                         "line %zu %s: %.7g vs %.7g", li + 1, keys[k], got, w);
        }
        json_decref(j);
    }
    PT_EQ_I64(li, (long long)json_array_size(lines));
    json_decref(ex);
    pu_free(out);
    /* a causal LM is not a reward model; a reward token outside the vocabulary */
    snprintf(cmd, sizeof cmd,
             "%s rm score -m tests/golden/gqa2 --data " RM_DIR "/input.jsonl -t " RM_DIR
             "/tokenizer.model 2>&1",
             pt_bin());
    rc = pt_run(cmd, &out);
    PT_EQ_I64(rc, 1);
    PT_CHECK_MSG(out && strstr(out, "not a reward model"), "got: %s", out ? out : "");
    pu_free(out);
    /* a bad line: an error naming file:line and field, or a counted skip */
    char bad[512];
    pt_tmp_path("bad.jsonl", bad, sizeof bad);
    const char *lines_txt = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n"
                            "{\"prompt\":\"q\",\"chosen\":\"same\",\"rejected\":\"same\"}\n";
    PT_OK(pu_file_write_atomic(bad, lines_txt, strlen(lines_txt)));
    snprintf(cmd, sizeof cmd, "%s rm score -m " RM_DIR " --data %s 2>&1", pt_bin(), bad);
    rc = pt_run(cmd, &out);
    PT_EQ_I64(rc, 1);
    PT_CHECK_MSG(out && strstr(out, "bad.jsonl:2: chosen: equal to rejected"), "got: %s",
                 out ? out : "");
    pu_free(out);
    snprintf(cmd, sizeof cmd, "%s rm score -m " RM_DIR " --data %s --skip-bad 2>/dev/null",
             pt_bin(), bad);
    rc = pt_run(cmd, &out);
    PT_EQ_I64(rc, 0);
    PT_CHECK_MSG(out && strstr(out, "{\"line\": 1, \"reward\": ") &&
                     strstr(out, "{\"line\": 2, \"error\": "),
                 "got: %s", out ? out : "");
    pu_free(out);
    snprintf(cmd, sizeof cmd,
             "%s rm score -m " RM_DIR " --data " RM_DIR "/input.jsonl --reward-token 600 2>&1",
             pt_bin());
    rc = pt_run(cmd, &out);
    PT_EQ_I64(rc, 1);
    PT_CHECK_MSG(out && strstr(out, "outside the model's vocabulary"), "got: %s", out ? out : "");
    pu_free(out);
}

static pu_status copy_file(const char *a, const char *b) {
    char *buf = NULL;
    size_t n = 0;
    PU_TRY(pu_file_read_all(a, &buf, &n));
    pu_status st = pu_file_write_atomic(b, buf, n);
    pu_free(buf);
    return st;
}

static void test_rm_write(void) {
    if (PT_TEST("a directory declaring InternLM2ForRewardModel without v_head: clear error")) {
        char dir[512], p[600];
        pt_tmp_path("nohead", dir, sizeof dir);
        PT_OK(pu_mkdir_p(dir));
        char *cfg = NULL;
        size_t n = 0;
        PT_OK(pu_file_read_all("tests/golden/gqa2/config.json", &cfg, &n));
        char *at = cfg ? strstr(cfg, "InternLM2ForCausalLM") : NULL;
        PT_CHECK(at != NULL);
        if (at) {
            pu_str s = {0};
            pu_str_append(&s, cfg, (size_t)(at - cfg));
            pu_str_puts(&s, "InternLM2ForRewardModel");
            pu_str_puts(&s, at + strlen("InternLM2ForCausalLM"));
            snprintf(p, sizeof p, "%s/config.json", dir);
            PT_OK(pu_file_write_atomic(p, s.p, s.len));
            pu_str_free(&s);
            snprintf(p, sizeof p, "%s/model.safetensors", dir);
            PT_OK(copy_file("tests/golden/gqa2/model.safetensors", p));
            pu_model *m = NULL;
            PT_CHECK(pu_model_load(dir, &m) == PU_ERR_FORMAT);
            PT_CHECK_MSG(strstr(pu_err_msg(), "v_head.weight"), "got: %s", pu_err_msg());
            pu_model_destroy(m);
        }
        pu_free(cfg);
    }
    if (PT_TEST("write an RM dir from a base dir + v_head; reload; rewards = head . hidden")) {
        pu_model *base = NULL, *rm = NULL, *rm2 = NULL;
        pu_session *sb = NULL, *sr = NULL;
        PT_OK(pu_model_load("tests/golden/gqa2", &base));
        if (!base)
            return;
        const pu_config *c = pu_model_config(base);
        int64_t C = c->hidden_size;
        float *v = pu_malloc((size_t)C * sizeof(float));
        pu_rng rng;
        pu_rng_seed(&rng, 7);
        for (int64_t i = 0; i < C; i++)
            v[i] = (float)pu_rng_normal(&rng) * 0.3f;
        char dir[512], p[600];
        pt_tmp_path("rm_out", dir, sizeof dir);
        PT_OK(pu_model_write_reward_dir("tests/golden/gqa2", v, C, 5, dir));
        PT_OK(pu_model_load(dir, &rm));
        if (rm) {
            PT_CHECK(pu_model_is_reward(rm));
            PT_EQ_I64(pu_model_config(rm)->reward_token_id, 5);
            const pu_tensor *vh = pu_model_v_head(rm);
            PT_CHECK(vh && memcmp(vh->data, v, (size_t)C * sizeof(float)) == 0);
            PT_EQ_I64(pu_model_n_params(rm), pu_model_n_params(base) - c->vocab_size * C + C);
            /* the file: no LM head */
            char *f = NULL;
            size_t n = 0;
            snprintf(p, sizeof p, "%s/model.safetensors", dir);
            PT_OK(pu_file_read_all(p, &f, &n));
            uint64_t hl = 0;
            for (int i = 0; f && n > 8 && i < 8; i++)
                hl |= (uint64_t)(unsigned char)f[i] << (8 * i);
            PT_CHECK(hl > 0 && hl + 8 <= n);
            if (hl > 0 && hl + 8 <= n) {
                char *hdr = pu_malloc(hl + 1);
                memcpy(hdr, f + 8, hl);
                hdr[hl] = 0;
                PT_CHECK(!strstr(hdr, "\"output.weight\"") && strstr(hdr, "\"v_head.weight\""));
                pu_free(hdr);
            }
            pu_free(f);
            snprintf(p, sizeof p, "%s/config.json", dir);
            PT_OK(pu_file_read_all(p, &f, &n));
            PT_CHECK(f && strstr(f, "\"InternLM2ForRewardModel\"") &&
                     strstr(f, "modeling_internlm2.InternLM2ForRewardModel") &&
                     !strstr(f, "AutoModelForCausalLM") && strstr(f, "\"reward_token_id\": 5"));
            pu_free(f);
            /* reward = v . base hidden state of the last token */
            int32_t ids[7] = {3, 17, 42, 9, 60, 11, 5};
            float *h = pu_malloc(7 * (size_t)C * sizeof(float)), r = NAN;
            PT_OK(pu_session_create(base, 16, NULL, &sb));
            PT_OK(pu_session_create(rm, 16, NULL, &sr));
            if (sb && sr) {
                PT_OK(pu_session_eval_ex(sb, ids, 7, NULL, false, h));
                double want = 0;
                for (int64_t i = 0; i < C; i++)
                    want += (double)v[i] * h[6 * C + i];
                PT_OK(pu_model_reward(rm, sr, ids, 7, &r));
                PT_NEAR(r, want, 1e-6, 1e-6);
                PT_CHECK(pu_model_reward(base, sb, ids, 7, &r) == PU_ERR_INVALID);
            }
            pu_free(h);
            /* in place, with a new head */
            v[0] += 1.0f;
            PT_OK(pu_model_write_reward_dir(dir, v, C, 6, dir));
            PT_OK(pu_model_load(dir, &rm2));
            if (rm2) {
                PT_EQ_I64(pu_model_config(rm2)->reward_token_id, 6);
                PT_CHECK(((const float *)pu_model_v_head(rm2)->data)[0] == v[0]);
            }
        }
        /* bad: head of another size, reward token outside the vocabulary */
        char d2[512];
        pt_tmp_path("rm_bad", d2, sizeof d2);
        PT_CHECK(pu_model_write_reward_dir("tests/golden/gqa2", v, C - 1, 5, d2) == PU_ERR_INVALID);
        PT_CHECK(pu_model_write_reward_dir("tests/golden/gqa2", v, C, c->vocab_size, d2) ==
                 PU_ERR_RANGE);
        pu_session_destroy(sb);
        pu_session_destroy(sr);
        pu_model_destroy(rm2);
        pu_model_destroy(rm);
        pu_model_destroy(base);
        pu_free(v);
    }
}

/* v . (base's final hidden state of the last of ids) vs the RM's reward */
static void reward_vs_base(const pu_model *base, const pu_model *rm, const float *v) {
    int64_t C = pu_model_config(base)->hidden_size;
    int32_t ids[5] = {4, 8, 15, 16, 23};
    float *h = pu_malloc(5 * (size_t)C * sizeof(float)), r = NAN;
    pu_session *sb = NULL, *sr = NULL;
    PT_OK(pu_session_create(base, 8, NULL, &sb));
    PT_OK(pu_session_create(rm, 8, NULL, &sr));
    if (sb && sr) {
        PT_OK(pu_session_eval_ex(sb, ids, 5, NULL, false, h));
        double want = 0;
        for (int64_t i = 0; i < C; i++)
            want += (double)v[i] * h[4 * C + i];
        PT_OK(pu_model_reward(rm, sr, ids, 5, &r));
        PT_NEAR(r, want, 1e-6, 1e-6);
    }
    pu_session_destroy(sb);
    pu_session_destroy(sr);
    pu_free(h);
}

static void test_rm_write_kinds(void) {
    if (!PT_TEST("RM dirs from a BF16 base (dtype kept) and a sharded base (index read)"))
        return;
    const char *bases[] = {"tests/golden/bf16", "tests/golden/sharded"};
    for (int k = 0; k < 2; k++) {
        pu_model *base = NULL, *rm = NULL;
        PT_OK(pu_model_load(bases[k], &base));
        if (!base)
            continue;
        int64_t C = pu_model_config(base)->hidden_size;
        float *v = pu_malloc((size_t)C * sizeof(float));
        for (int64_t i = 0; i < C; i++)
            v[i] = (float)((i % 7) - 3) * 0.05f;
        char dir[512];
        pt_tmp_path(k ? "rm_sharded" : "rm_bf16", dir, sizeof dir);
        PT_OK(pu_model_write_reward_dir(bases[k], v, C, 7, dir));
        PT_OK(pu_model_load(dir, &rm));
        if (rm) {
            PT_CHECK(pu_model_is_reward(rm));
            PT_EQ_I64(pu_model_weights(rm)->layers[0].wqkv.dtype,
                      pu_model_weights(base)->layers[0].wqkv.dtype);
            reward_vs_base(base, rm, v);
        }
        if (k == 1) /* in place over shards: refused */
            PT_CHECK(pu_model_write_reward_dir(bases[k], v, C, 7, bases[k]) == PU_ERR_UNSUPPORTED);
        pu_model_destroy(rm);
        pu_model_destroy(base);
        pu_free(v);
    }
}

PT_SUITE(align_rm) {
    test_rm_write_kinds();
    test_rm_golden();
    test_rm_cli();
    test_rm_write();
}
