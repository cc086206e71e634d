/*
 * pt_main.c — runner for the suites declared with PT_SUITE in tests/test_*.c.
 *
 * usage: puyu_tests [--slow] [--list] [FILTER...]
 * A FILTER selects suites by name or "suite/case" substring. The closing line
 * is exactly "N passed, N failed, N skipped"; the exit status is 1 on any
 * failure.
 */
#include "pt.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PT_X(name) void pt_suite_##name(void);
#include "suites.h"
#undef PT_X

typedef struct {
    const char *name;
    void (*fn)(void);
} pt_suite_entry;

static const pt_suite_entry g_suites[] = {
#define PT_X(name) {#name, pt_suite_##name},
#include "suites.h"
#undef PT_X
};

static int g_pass, g_fail, g_skip;
static const char *g_suite = "";
static char g_case[256];
static bool g_case_open, g_case_failed, g_case_skipped;
static double g_case_t0;
static bool g_slow;
static char **g_filters;
static int g_nfilters;
static char g_tmpdir[256];

static bool filter_match(const char *suite, const char *tcase) {
    if (g_nfilters == 0)
        return true;
    char full[512];
    snprintf(full, sizeof full, "%s/%s", suite, tcase ? tcase : "");
    for (int i = 0; i < g_nfilters; i++) {
        if (strcmp(g_filters[i], suite) == 0 || strstr(full, g_filters[i]))
            return true;
    }
    return false;
}

static void case_close(void) {
    if (!g_case_open)
        return;
    double dt = pu_time_now() - g_case_t0;
    if (g_case_failed) {
        g_fail++;
        printf("  FAIL  %s/%s (%.2fs)\n", g_suite, g_case, dt);
    } else if (g_case_skipped) {
        g_skip++;
    } else {
        g_pass++;
        printf("  ok    %s/%s (%.2fs)\n", g_suite, g_case, dt);
    }
    fflush(stdout);
    g_case_open = false;
}

bool pt_test_begin(const char *name) {
    case_close();
    if (!filter_match(g_suite, name))
        return false;
    snprintf(g_case, sizeof g_case, "%s", name);
    g_case_open = true;
    g_case_failed = g_case_skipped = false;
    g_case_t0 = pu_time_now();
    pu_err_clear();
    return true;
}

static void ensure_case(void) {
    if (!g_case_open) {
        snprintf(g_case, sizeof g_case, "(suite)");
        g_case_open = true;
        g_case_failed = g_case_skipped = false;
        g_case_t0 = pu_time_now();
    }
}

void pt_fail_(const char *file, int line, const char *fmt, ...) {
    ensure_case();
    if (!g_case_failed || 1) {
        va_list ap;
        va_start(ap, fmt);
        printf("    %s:%d: ", file, line);
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
    g_case_failed = true;
}

void pt_skip(const char *why) {
    ensure_case();
    if (!g_case_skipped)
        printf("  SKIP  %s/%s: %s\n", g_suite, g_case, why);
    g_case_skipped = true;
}

bool pt_slow(void) {
    return g_slow;
}

const char *pt_shared(void) {
    const char *s = getenv("PUYU_SHARED");
    if (!s || !*s)
        s = "../shared/data";
    struct stat st;
    if (stat(s, &st) != 0 || !S_ISDIR(st.st_mode))
        return NULL;
    return s;
}

const char *pt_bin(void) {
    const char *s = getenv("PUYU_BIN");
    return (s && *s) ? s : "./puyu";
}

const char *pt_shared_path(const char *rel, char *buf, size_t cap) {
    const char *s = pt_shared();
    if (!s) {
        pt_skip("shared data absent (../shared/data); skipping");
        return NULL;
    }
    snprintf(buf, cap, "%s/%s", s, rel);
    struct stat st;
    if (stat(buf, &st) != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "shared file %s absent; skipping", buf);
        pt_skip(msg);
        return NULL;
    }
    return buf;
}

static void rm_tmpdir(void) {
    if (g_tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: could not remove %s\n", g_tmpdir);
    }
}

const char *pt_tmp_path(const char *name, char *buf, size_t cap) {
    if (!g_tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/puyu_tests.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(rm_tmpdir);
    }
    snprintf(buf, cap, "%s/%s", g_tmpdir, name);
    return buf;
}

int pt_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    pu_str s = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        pu_str_append(&s, buf, n);
    int st = pclose(p);
    if (out)
        *out = pu_str_steal(&s);
    else
        pu_str_free(&s);
    if (st == -1)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

bool pt_allclose_(const char *file, int line, const char *label, const float *got,
                  const float *want, int64_t n, double atol, double rtol) {
    double max_abs = 0, max_rel = 0;
    int64_t first_bad = -1, nbad = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        double d = fabs(g - w);
        if (!(d <= atol + rtol * fabs(w))) { /* NaN fails too */
            if (first_bad < 0)
                first_bad = i;
            nbad++;
        }
        if (d > max_abs || isnan(d))
            max_abs = d;
        if (fabs(w) > 0 && d / fabs(w) > max_rel)
            max_rel = d / fabs(w);
    }
    if (nbad) {
        pt_fail_(file, line,
                 "%s: %lld/%lld elements off (atol %g rtol %g); max|d| %.3g max rel %.3g; "
                 "first at [%lld]: got %.9g want %.9g",
                 label, (long long)nbad, (long long)n, atol, rtol, max_abs, max_rel,
                 (long long)first_bad, got[first_bad], want[first_bad]);
        return false;
    }
    return true;
}

int main(int argc, char **argv) {
    bool list = false;
    g_filters = pu_calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--slow") == 0)
            g_slow = true;
        else if (strcmp(argv[i], "--list") == 0)
            list = true;
        else
            g_filters[g_nfilters++] = argv[i];
    }
    /* inference prefill keeps fp32 activations in the tests (the goldens are
     * HF-exact fp32; src/model/forward.c would round them to bf16 by default on
     * AMX / AVX512_BF16 CPUs); test_gemm_bf16.c forces the bf16 levels itself */
    setenv("PUYU_PREFILL_BF16", "off", 0);
    const char *lv = getenv("PUYU_LOG");
    pu_log_set_level(lv && pu_log_level_parse(lv) >= 0 ? (pu_log_level)pu_log_level_parse(lv)
                                                       : PU_LOG_WARN);
    size_t ns = sizeof g_suites / sizeof g_suites[0];
    if (list) {
        for (size_t i = 0; i < ns; i++)
            printf("%s\n", g_suites[i].name);
        return 0;
    }
    if (!pt_shared())
        printf("note: shared data not found (PUYU_SHARED or ../shared/data); tests that need "
               "it are skipped\n");
    double t0 = pu_time_now();
    for (size_t i = 0; i < ns; i++) {
        g_suite = g_suites[i].name;
        bool any = g_nfilters == 0;
        for (int f = 0; f < g_nfilters && !any; f++)
            if (strncmp(g_filters[f], g_suite, strlen(g_suite)) == 0 || strstr(g_suite, g_filters[f]))
                any = true;
        if (!any)
            continue;
        printf("[%s]\n", g_suite);
        fflush(stdout);
        g_case_open = false;
        g_suites[i].fn();
        case_close();
    }
    pu_free(g_filters);
    printf("time %.1fs\n", pu_time_now() - t0);
    printf("%d passed, %d failed, %d skipped\n", g_pass, g_fail, g_skip);
    return g_fail ? 1 : 0;
}
