/*
 * test_eval_exec.c — HumanEval pass@1 in the sandbox (suite eval_exec):
 * hand-written correct and incorrect completions for problems of the shared
 * HumanEval file (and the canonical solutions) pass / fail, an endless loop
 * times out per sample, a fenced chat-style answer is reduced to its code;
 * then `pu_eval_run` on the humaneval task with the stories260K model
 * reports a pass@1 number and an exec verdict per sample.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_eval.h"
#include "puyu/pu_sandbox.h"

typedef struct he {
    json_t *rows; /* array of objects */
} he;

static bool load_he(he *h) {
    char path[512];
    h->rows = NULL;
    if (!pt_shared_path("eval/humaneval/HumanEval_first50.jsonl", path, sizeof path))
        return false;
    char *data = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(path, &data, &len));
    h->rows = json_array();
    for (char *s = data, *nl; s && *s; s = nl + 1) {
        nl = strchr(s, '\n');
        json_t *j = json_loadb(s, nl ? (size_t)(nl - s) : strlen(s), 0, NULL);
        if (j)
            json_array_append_new(h->rows, j);
        if (!nl)
            break;
    }
    pu_free(data);
    return json_array_size(h->rows) > 0;
}

static const char *f(const he *h, int i, const char *k) {
    return json_string_value(json_object_get(json_array_get(h->rows, (size_t)i), k));
}

static int run(const he *h, int i, const char *completion, double timeout, pu_str *detail) {
    pu_str test = {0};
    pu_str_appendf(&test, "%s\n\ncheck(%s)\n", f(h, i, "test"), f(h, i, "entry_point"));
    bool passed = false;
    pu_status st =
        pu_eval_exec_code(f(h, i, "prompt"), completion, test.p, timeout, &passed, detail);
    pu_str_free(&test);
    PT_CHECK_MSG(st == PU_OK, "exec: %s", pu_err_msg());
    return passed;
}

PT_SUITE(eval_exec) {
    if (pu_sandbox_check(NULL) != PU_OK) {
        if (PT_TEST("humaneval pass@1 in the sandbox"))
            pt_skip("sandbox unavailable (bubblewrap / user namespaces)");
        return;
    }
    he h;
    if (PT_TEST("humaneval: hand-written completions pass / fail") && load_he(&h)) {
        pu_str d = {0};
        /* HumanEval/0 has_close_elements, /2 truncate_number, /4 mean_absolute_deviation,
         * /7 filter_by_substring: correct completions written here, not the canonical ones */
        struct {
            int i;
            const char *good, *bad;
        } cases[] = {
            {0,
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers)\n"
             "               for j, b in enumerate(numbers) if i != j)\n",
             "    return False\n"},
            {2, "    return number - int(number)\n", "    return round(number)\n"},
            {4,
             "    m = sum(numbers) / len(numbers)\n"
             "    return sum(abs(x - m) for x in numbers) / len(numbers)\n",
             "    m = sum(numbers) / len(numbers)\n    return max(abs(x - m) for x in numbers)\n"},
            {7, "    return [s for s in strings if substring in s]\n",
             "    return [s for s in strings if s.startswith(substring)]\n"},
        };
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            int i = cases[k].i;
            PT_CHECK_MSG(run(&h, i, cases[k].good, 10, &d), "%s good: %s", f(&h, i, "task_id"),
                         d.p);
            PT_CHECK_MSG(!run(&h, i, cases[k].bad, 10, &d) && strstr(d.p, "failed"),
                         "%s bad passed: %s", f(&h, i, "task_id"), d.p);
        }
        /* the canonical solutions of the first 5 problems pass */
        for (int i = 0; i < 5; i++)
            PT_CHECK_MSG(run(&h, i, f(&h, i, "canonical_solution"), 10, &d), "%s canonical: %s",
                         f(&h, i, "task_id"), d.p);
        /* syntax error, wrong exception, endless loop */
        PT_CHECK(!run(&h, 2, "    return (\n", 10, &d) && strstr(d.p, "SyntaxError"));
        PT_CHECK(!run(&h, 2, "    raise ValueError('no')\n", 10, &d) && strstr(d.p, "ValueError"));
        PT_CHECK(!run(&h, 2, "    while True:\n        pass\n", 1, &d) && strstr(d.p, "timed out"));
        /* a chat model's fenced full definition */
        PT_CHECK_MSG(run(&h, 2,
                         "Here it is:\n```python\ndef truncate_number(number: float) -> float:\n"
                         "    return number % 1.0\n```\nDone.",
                         10, &d),
                     "fenced: %s", d.p);
        /* the test cannot escape to read the host (no project dir inside) */
        PT_CHECK(!run(&h, 2, "    return float(open('Makefile').read() != '')\n", 10, &d));
        pu_str_free(&d);
        json_decref(h.rows);
    }
    if (PT_TEST("humaneval task: pass@1 reported (stories260K)")) {
        char model[512], tok[512], data[512], out[512];
        if (!pt_shared_path("models/stories260K/stories260K.bin", model, sizeof model) ||
            !pt_shared_path("models/stories260K/tok512.model", tok, sizeof tok) ||
            !pt_shared_path("eval", data, sizeof data))
            return;
        pt_tmp_path("eval_exec_out", out, sizeof out);
        pu_eval_opts o;
        memset(&o, 0, sizeof o);
        o.model_path = model;
        o.tok_path = tok;
        o.data_dir = data;
        o.out_dir = out;
        o.limit = 3;
        o.shots = -1;
        o.max_tokens = 24;
        o.exec_timeout_s = 5;
        const char *tasks[] = {"humaneval"};
        PT_OK(pu_eval_run(&o, tasks, 1, NULL));
        char p[600];
        snprintf(p, sizeof p, "%s/results.json", out);
        json_t *r = NULL;
        PT_OK(pu_json_load_file(p, &r));
        json_t *he_r = json_object_get(json_object_get(r, "tasks"), "humaneval");
        json_t *v = json_object_get(he_r, "pass@1");
        PT_CHECK_MSG(json_is_number(v), "pass@1 missing: %s", json_dumps(he_r, JSON_COMPACT) ?: "");
        if (json_is_number(v))
            printf("    eval_exec: stories260K humaneval pass@1 = %.3f (3 problems)\n",
                   json_number_value(v));
        json_decref(r);
        snprintf(p, sizeof p, "%s/predictions.jsonl", out);
        char *pd = NULL;
        size_t pl = 0;
        PT_OK(pu_file_read_all(p, &pd, &pl));
        PT_CHECK(pd && strstr(pd, "\"exec\"") && strstr(pd, "\"correct\""));
        pu_free(pd);
    }
}
