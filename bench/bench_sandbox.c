/*
 * bench_sandbox.c — sandbox start-up latency: time from the call to the
 * first byte of output of `print(1)`, p50/p99 over N runs (default 100), for
 *   run      pu_sandbox_run: bwrap + namespaces + seccomp + a fresh python3
 *   session  pu_sandbox_session_open + the first exec (the REPL driver)
 *   exec     one call on a warm session (the stateful interpreter's cost)
 * Usage: bench_sandbox [N] [--unsafe]   (target: run p50 <= 50 ms)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_sandbox.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    int i99 = (int)(0.99 * (n - 1) + 0.5);
    printf("%-8s n=%d  p50 %6.1f ms  p99 %6.1f ms  min %6.1f ms  max %6.1f ms\n", what, n,
           v[n / 2] * 1e3, v[i99] * 1e3, v[0] * 1e3, v[n - 1] * 1e3);
}

int main(int argc, char **argv) {
    int n = 100;
    pu_sandbox_opts o = {.timeout_s = 10};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unsafe"))
            o.unsafe_no_sandbox = true;
        else
            n = atoi(argv[i]);
    }
    if (n < 1)
        n = 1;
    if (pu_sandbox_check(&o) != PU_OK && !o.unsafe_no_sandbox) {
        fprintf(stderr, "bench_sandbox: sandbox unavailable: %s\n", pu_err_msg());
        return 1;
    }
    double *v = calloc((size_t)n, sizeof *v);
    for (int i = 0; i < n; i++) {
        pu_sandbox_result r;
        if (pu_sandbox_run(&o, "print(1)\n", 9, &r) != PU_OK) {
            fprintf(stderr, "run: %s\n", pu_err_msg());
            return 1;
        }
        v[i] = r.first_output_s;
        pu_sandbox_result_free(&r);
    }
    report("run", v, n);
    pu_sandbox_session *s = NULL;
    for (int i = 0; i < n; i++) {
        double t0 = pu_time_now();
        if (pu_sandbox_session_open(&o, &s) != PU_OK) {
            fprintf(stderr, "session: %s\n", pu_err_msg());
            return 1;
        }
        pu_sandbox_result r;
        if (pu_sandbox_session_exec(s, "print(1)\n", 9, &r) != PU_OK) {
            fprintf(stderr, "exec: %s\n", pu_err_msg());
            return 1;
        }
        v[i] = pu_time_now() - t0;
        pu_sandbox_result_free(&r);
        if (i < n - 1)
            pu_sandbox_session_close(s);
    }
    report("session", v, n);
    for (int i = 0; i < n; i++) {
        double t0 = pu_time_now();
        pu_sandbox_result r;
        if (pu_sandbox_session_exec(s, "x = 1\nprint(x)\n", 15, &r) != PU_OK) {
            fprintf(stderr, "exec: %s\n", pu_err_msg());
            return 1;
        }
        v[i] = pu_time_now() - t0;
        pu_sandbox_result_free(&r);
    }
    report("exec", v, n);
    pu_sandbox_session_close(s);
    free(v);
    return 0;
}
