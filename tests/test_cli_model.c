/*
 * test_cli_model.c — black-box tests of `puyu forward | generate | info`
 * through the CLI binary (pt_bin()) on the golden fixtures (tests/golden/,
 * written by tools/gen_golden.py):
 *   forward  -m MODEL --ids "..." --out FILE   float32 LE logits (n, V) == logits.f32
 *   generate -m MODEL --ids "..." -n 12 --temp 0 --print-ids   == greedy_ids
 *   info     -m MODEL                          exit 0, states the parameter count
 * and the error contract: runtime errors exit 1 with an `error:` line naming
 * the problem; usage errors exit 2.
 */
#include <jansson.h>
#include <stdlib.h>
#include <strings.h>

#include "pt.h"

typedef struct {
    char ids[1024];   /* "1 2 3" */
    char greedy[512]; /* "4 5 6" */
    int64_t n, V;
    int64_t n_params;
    float *logits; /* (n, V) */
    double tol;
} cli_fx;

static bool cli_fx_load(const char *name, cli_fx *f) {
    memset(f, 0, sizeof *f);
    char path[512];
    snprintf(path, sizeof path, "tests/golden/%s/expected.json", name);
    json_t *root = NULL;
    if (pu_json_load_file(path, &root) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "%s", pu_err_msg());
        return false;
    }
    json_t *ids = json_object_get(root, "input_ids"), *g = json_object_get(root, "greedy_ids");
    json_t *np = json_object_get(root, "n_params");
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        size_t l = strlen(f->ids);
        snprintf(f->ids + l, sizeof f->ids - l, "%s%lld", i ? " " : "",
                 (long long)json_integer_value(v));
    }
    json_array_foreach(g, i, v) {
        size_t l = strlen(f->greedy);
        snprintf(f->greedy + l, sizeof f->greedy - l, "%s%lld", i ? " " : "",
                 (long long)json_integer_value(v));
    }
    f->n = (int64_t)json_array_size(ids);
    f->n_params = json_is_integer(np) ? (int64_t)json_integer_value(np) : -1;
    json_decref(root);

    snprintf(path, sizeof path, "tests/golden/%s/config.json", name);
    if (pu_json_load_file(path, &root) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "%s", pu_err_msg());
        return false;
    }
    json_t *vs = json_object_get(root, "vocab_size");
    f->V = json_is_integer(vs) ? (int64_t)json_integer_value(vs) : 0;
    json_decref(root);

    snprintf(path, sizeof path, "tests/golden/%s/logits.f32", name);
    char *buf = NULL;
    size_t len = 0;
    if (pu_file_read_all(path, &buf, &len) != PU_OK || f->n <= 0 || f->V <= 0 ||
        (int64_t)len != f->n * f->V * 4) {
        pt_fail_(__FILE__, __LINE__, "%s: unreadable or wrong size (%s)", path, pu_err_msg());
        pu_free(buf);
        return false;
    }
    f->logits = pu_malloc(len);
    memcpy(f->logits, buf, len);
    pu_free(buf);
    double mx = 1.0;
    for (int64_t k = 0; k < f->n * f->V; k++)
        if (fabs(f->logits[k]) > mx)
            mx = fabs(f->logits[k]);
    f->tol = 1e-4 * mx;
    return true;
}

/* Trim trailing whitespace in place. */
static char *rtrim(char *s) {
    if (!s)
        return s;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
    return s;
}

/* Run a command whose stderr goes to a file; print the stderr on failure. */
static int run_ok(const char *cmd, char **out) {
    char errp[512], full[4096];
    pt_tmp_path("stderr.txt", errp, sizeof errp);
    snprintf(full, sizeof full, "%s 2>'%s'", cmd, errp);
    int rc = pt_run(full, out);
    if (rc != 0) {
        char *e = NULL;
        size_t n = 0;
        if (pu_file_read_all(errp, &e, &n) == PU_OK)
            printf("    command: %s\n    exit %d, stderr: %s\n", cmd, rc, e);
        pu_free(e);
    }
    return rc;
}

/* Run a command expected to fail; *err gets its stderr (stdout discarded). */
static int run_err(const char *cmd, char **err) {
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1 >/dev/null", cmd);
    return pt_run(full, err);
}

/* An "error: ..." line, optionally prefixed by the program ("puyu forward: error: ..."). */
static bool has_error_line(const char *s) {
    if (!s)
        return false;
    for (const char *line = s; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *e = strstr(line, "error:");
        const char *nl = strchr(line, '\n');
        if (e && (!nl || e < nl))
            return true;
    }
    return false;
}

static bool contains_ci(const char *hay, const char *needle) {
    if (!hay)
        return false;
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0)
            return true;
    return false;
}

/* rc == 1, an `error:` line, and it mentions one of the '|'-separated keys. */
static void expect_runtime_error(const char *what, const char *cmd, const char *keys) {
    char *err = NULL;
    int rc = run_err(cmd, &err);
    bool named = false;
    char kb[256];
    snprintf(kb, sizeof kb, "%s", keys);
    for (char *save = NULL, *k = strtok_r(kb, "|", &save); k; k = strtok_r(NULL, "|", &save))
        if (contains_ci(err, k))
            named = true;
    PT_CHECK_MSG(rc == 1, "%s: exit %d, want 1 (stderr: %s)", what, rc, err ? err : "");
    PT_CHECK_MSG(has_error_line(err), "%s: no 'error:' line on stderr: %s", what, err ? err : "");
    PT_CHECK_MSG(named, "%s: error does not name the problem (%s): %s", what, keys, err ? err : "");
    pu_free(err);
}

static void expect_usage_error(const char *what, const char *cmd) {
    char *err = NULL;
    int rc = run_err(cmd, &err);
    PT_CHECK_MSG(rc == 2, "%s: exit %d, want 2 (stderr: %s)", what, rc, err ? err : "");
    pu_free(err);
}

/* forward through the CLI and compare with logits.f32 */
static void cli_forward(const char *name, const cli_fx *f) {
    char out[512], cmd[2048];
    char fname[64];
    snprintf(fname, sizeof fname, "fwd_%s.f32", name);
    pt_tmp_path(fname, out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s forward -m tests/golden/%s --ids \"%s\" --out '%s'", pt_bin(),
             name, f->ids, out);
    int rc = run_ok(cmd, NULL);
    PT_EQ_I64(rc, 0);
    if (rc != 0)
        return;
    char *buf = NULL;
    size_t len = 0;
    PT_OK(pu_file_read_all(out, &buf, &len));
    PT_EQ_I64((int64_t)len, f->n * f->V * 4);
    if (buf && (int64_t)len == f->n * f->V * 4) {
        float *got = pu_malloc(len);
        memcpy(got, buf, len);
        char label[96];
        snprintf(label, sizeof label, "puyu forward %s logits (flat index = pos*%lld + id)", name,
                 (long long)f->V);
        PT_ALLCLOSE(label, got, f->logits, f->n * f->V, f->tol, 0.0);
        pu_free(got);
    }
    pu_free(buf);
}

static void cli_generate(const char *name, const cli_fx *f) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s generate -m tests/golden/%s --ids \"%s\" -n 12 --temp 0 --print-ids", pt_bin(),
             name, f->ids);
    char *out = NULL;
    int rc = run_ok(cmd, &out);
    PT_EQ_I64(rc, 0);
    rtrim(out);
    PT_CHECK_MSG(out && strchr(out, '\n') == NULL, "puyu generate %s: more than one line: %s", name,
                 out ? out : "");
    PT_EQ_STR(out, f->greedy);
    pu_free(out);
}

/* Copy fixture gqa2 to a temp dir named `sub`; returns the dir path in buf. */
static const char *copy_fixture(const char *sub, char *buf, size_t cap) {
    pt_tmp_path(sub, buf, cap);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r tests/golden/gqa2 '%s'", buf, buf);
    int rc = pt_run(cmd, NULL);
    PT_EQ_I64(rc, 0);
    return rc == 0 ? buf : NULL;
}

void pt_suite_cli_model(void); /* prototype for -Wmissing-prototypes */
PT_SUITE(cli_model) {
    cli_fx g, d;
    bool have_g = cli_fx_load("gqa2", &g);
    bool have_d = cli_fx_load("dynamic", &d);
    const char *bin = pt_bin();
    char cmd[2048], dir[512], p[600];

    if (PT_TEST("forward gqa2 logits") && have_g)
        cli_forward("gqa2", &g);
    if (PT_TEST("generate gqa2 greedy ids") && have_g)
        cli_generate("gqa2", &g);
    if (PT_TEST("forward dynamic logits") && have_d)
        cli_forward("dynamic", &d);
    if (PT_TEST("generate dynamic greedy ids") && have_d)
        cli_generate("dynamic", &d);

    if (PT_TEST("info gqa2") && have_g) {
        snprintf(cmd, sizeof cmd, "%s info -m tests/golden/gqa2", bin);
        char *out = NULL;
        int rc = run_ok(cmd, &out);
        PT_EQ_I64(rc, 0);
        /* the count, plain or grouped (22,176 / 22_176 / 22 176) or as 22.2K */
        char plain[32], grouped[32], us[32], sp[32], k1[32], k2[32];
        int64_t np = g.n_params;
        snprintf(plain, sizeof plain, "%lld", (long long)np);
        snprintf(grouped, sizeof grouped, "%lld,%03lld", (long long)(np / 1000),
                 (long long)(np % 1000));
        snprintf(us, sizeof us, "%lld_%03lld", (long long)(np / 1000), (long long)(np % 1000));
        snprintf(sp, sizeof sp, "%lld %03lld", (long long)(np / 1000), (long long)(np % 1000));
        snprintf(k1, sizeof k1, "%.1fK", np / 1e3);
        snprintf(k2, sizeof k2, "%.2fK", np / 1e3);
        bool found = out && (strstr(out, plain) || strstr(out, grouped) || strstr(out, us) ||
                             strstr(out, sp) || strstr(out, k1) || strstr(out, k2));
        PT_CHECK_MSG(found && contains_ci(out, "param"),
                     "puyu info: parameter count %lld not stated; output:\n%s", (long long)np,
                     out ? out : "");
        pu_free(out);
    }

    if (PT_TEST("error: id >= vocab") && have_g) {
        char bad[32], what[64];
        snprintf(bad, sizeof bad, "%lld", (long long)g.V + 900);
        snprintf(cmd, sizeof cmd, "%s forward -m tests/golden/gqa2 --ids \"5 6 %s\" --out '%s'",
                 bin, bad, pt_tmp_path("never.f32", p, sizeof p));
        snprintf(what, sizeof what, "forward id %s >= vocab %lld", bad, (long long)g.V);
        expect_runtime_error(what, cmd, bad);
        PT_CHECK(!pu_file_exists(p));
        snprintf(bad, sizeof bad, "%lld", (long long)g.V);
        snprintf(cmd, sizeof cmd,
                 "%s generate -m tests/golden/gqa2 --ids \"5 %s\" -n 2 --temp 0 --print-ids", bin,
                 bad);
        snprintf(what, sizeof what, "generate id %s == vocab", bad);
        expect_runtime_error(what, cmd, bad);
    }
    if (PT_TEST("error: empty --ids")) {
        snprintf(cmd, sizeof cmd, "%s forward -m tests/golden/gqa2 --ids \"\" --out '%s'", bin,
                 pt_tmp_path("never2.f32", p, sizeof p));
        expect_runtime_error("forward empty --ids", cmd, "ids|empty|token");
        snprintf(cmd, sizeof cmd,
                 "%s generate -m tests/golden/gqa2 --ids \"\" -n 2 --temp 0 --print-ids", bin);
        expect_runtime_error("generate empty --ids", cmd, "ids|empty|token|prompt");
    }
    if (PT_TEST("error: -n beyond context")) {
        snprintf(cmd, sizeof cmd,
                 "%s generate -m tests/golden/gqa2 --ids \"5 6 7\" -n 100000 --temp 0 "
                 "--print-ids",
                 bin);
        expect_runtime_error("generate -n 100000", cmd, "context|ctx|100000|100003");
    }
    if (PT_TEST("error: model path does not exist")) {
        snprintf(cmd, sizeof cmd,
                 "%s forward -m tests/golden/does-not-exist --ids \"1 2\" --out '%s'", bin,
                 pt_tmp_path("never3.f32", p, sizeof p));
        expect_runtime_error("forward missing model", cmd, "does-not-exist");
        snprintf(cmd, sizeof cmd, "%s info -m tests/golden/does-not-exist", bin);
        expect_runtime_error("info missing model", cmd, "does-not-exist");
    }
    if (PT_TEST("error: truncated model.safetensors")) {
        /* cut inside the tensor data, then inside the JSON header */
        static const long cuts[] = {4000, 100};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            char sub[32];
            snprintf(sub, sizeof sub, "trunc%zu", i);
            if (!copy_fixture(sub, dir, sizeof dir))
                continue;
            snprintf(cmd, sizeof cmd, "truncate -s %ld '%s/model.safetensors'", cuts[i], dir);
            PT_EQ_I64(pt_run(cmd, NULL), 0);
            snprintf(cmd, sizeof cmd, "%s forward -m '%s' --ids \"1 2\" --out '%s/o.f32'", bin, dir,
                     dir);
            expect_runtime_error(cuts[i] > 1000 ? "truncated data" : "truncated header", cmd,
                                 "model.safetensors");
            snprintf(cmd, sizeof cmd, "%s info -m '%s'", bin, dir);
            expect_runtime_error("info on truncated", cmd, "model.safetensors");
        }
    }
    if (PT_TEST("error: config.json without hidden_size")) {
        if (copy_fixture("nohidden", dir, sizeof dir)) {
            snprintf(p, sizeof p, "%s/config.json", dir);
            json_t *root = NULL;
            PT_OK(pu_json_load_file(p, &root));
            if (root) {
                PT_EQ_I64(json_object_del(root, "hidden_size"), 0);
                PT_EQ_I64(json_dump_file(root, p, JSON_INDENT(2) | JSON_SORT_KEYS), 0);
                json_decref(root);
                snprintf(cmd, sizeof cmd, "%s forward -m '%s' --ids \"1 2\" --out '%s/o.f32'", bin,
                         dir, dir);
                expect_runtime_error("config without hidden_size", cmd, "hidden_size");
            }
        }
    }
    if (PT_TEST("usage errors exit 2")) {
        snprintf(cmd, sizeof cmd,
                 "%s forward -m tests/golden/gqa2 --ids \"1 2\" --out '%s' --bogus-option", bin,
                 pt_tmp_path("never4.f32", p, sizeof p));
        expect_usage_error("forward unknown option", cmd);
        snprintf(cmd, sizeof cmd,
                 "%s generate -m tests/golden/gqa2 --ids \"1 2\" -n 2 --frobnicate 3", bin);
        expect_usage_error("generate unknown option", cmd);
        snprintf(cmd, sizeof cmd, "%s forward --ids \"1 2\" --out '%s'", bin, p);
        expect_usage_error("forward without -m", cmd);
        snprintf(cmd, sizeof cmd, "%s generate -m tests/golden/gqa2 -n 2", bin);
        expect_usage_error("generate without a prompt", cmd);
        /* without -m: $PUYU_MODEL (then models/default.gguf, see test_demo.c) */
        char missing[512];
        pt_tmp_path("nonexistent.gguf", missing, sizeof missing);
        snprintf(cmd, sizeof cmd, "PUYU_MODEL=%s %s generate --ids \"1 2\" -n 2", missing, bin);
        expect_runtime_error("generate with a missing $PUYU_MODEL", cmd, "nonexistent.gguf");
        char *o1 = NULL, *o2 = NULL;
        snprintf(cmd, sizeof cmd,
                 "PUYU_MODEL=tests/golden/gqa2 %s generate --ids \"1 5 9\" -n 6 --temp 0 "
                 "--print-ids 2>/dev/null",
                 bin);
        PT_CHECK(pt_run(cmd, &o1) == 0);
        snprintf(cmd, sizeof cmd,
                 "PUYU_MODEL=/nonexistent %s generate -m tests/golden/gqa2 --ids \"1 5 9\" -n 6 "
                 "--temp 0 --print-ids 2>/dev/null",
                 bin);
        PT_CHECK(pt_run(cmd, &o2) == 0);
        PT_CHECK_MSG(o1 && o2 && *o1 && !strcmp(o1, o2), "$PUYU_MODEL ids '%s' vs -m ids '%s'",
                     o1 ? o1 : "", o2 ? o2 : "");
        pu_free(o1);
        pu_free(o2);
        snprintf(cmd, sizeof cmd, "%s info", bin);
        expect_usage_error("info without -m", cmd);
    }
    pu_free(g.logits);
    pu_free(d.logits);
}
