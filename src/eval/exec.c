/*
 * exec.c — pass@1 for code tasks (HumanEval): run prompt + completion + the
 * task's tests with python3 in the sandbox (pu_sandbox.h: namespaces,
 * seccomp, rlimits, per-sample wall-clock timeout). A sample passes when the
 * program exits 0 in time. A completion in a markdown fence (chat models) is
 * reduced to the fenced code and appended after the prompt, so a full
 * function definition replaces the prompt's stub.
 */
#include <string.h>

#include "eval_impl.h"
#include "puyu/pu_sandbox.h"

static void fenced_code(const char *s, pu_str *out) {
    const char *f = strstr(s, "```");
    if (!f) {
        pu_str_puts(out, s);
        return;
    }
    const char *nl = strchr(f, '\n');
    if (!nl) {
        pu_str_puts(out, s);
        return;
    }
    const char *b = nl + 1, *e = strstr(b, "```");
    pu_str_puts(out, "\n");
    pu_str_append(out, b, e ? (size_t)(e - b) : strlen(b));
}

pu_status pu_eval_exec_code(const char *prompt, const char *completion, const char *test,
                            double timeout_s, bool *passed, pu_str *detail) {
    *passed = false;
    pu_str_clear(detail);
    pu_str prog = {0};
    pu_str_puts(&prog, prompt ? prompt : "");
    fenced_code(completion ? completion : "", &prog);
    pu_str_puts(&prog, "\n\n");
    pu_str_puts(&prog, test ? test : "");
    pu_sandbox_opts o = {
        .timeout_s = timeout_s > 0 ? timeout_s : 10, .mem_mb = 1024, .max_output = 64 << 10};
    pu_sandbox_result r;
    pu_status st = pu_sandbox_run(&o, prog.p, prog.len, &r);
    pu_str_free(&prog);
    if (st != PU_OK)
        return pu_err_prefix(st, "pass@1: ");
    if (r.timed_out) {
        pu_str_appendf(detail, "timed out after %g s", o.timeout_s);
    } else if (r.exit_code == 0) {
        *passed = true;
        pu_str_puts(detail, "passed");
    } else {
        /* the exception line: the last non-empty line of stderr */
        const char *e = r.err ? r.err : "";
        size_t n = r.err_len;
        while (n && (e[n - 1] == '\n' || e[n - 1] == ' '))
            n--;
        size_t b = n;
        while (b && e[b - 1] != '\n')
            b--;
        pu_str_appendf(detail, "failed (exit %d%s): %.*s", r.exit_code, r.killed ? ", killed" : "",
                       (int)(n - b > 200 ? 200 : n - b), e + b);
    }
    pu_sandbox_result_free(&r);
    return PU_OK;
}
