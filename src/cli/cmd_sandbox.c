/*
 * cmd_sandbox.c — `puyu sandbox run|check`: run Python code from stdin in
 * the sandbox (pu_sandbox.h) and print what it printed, its exit code and
 * whether it timed out or was killed (--json: one object).
 *
 * Exit code: 0 when the program ran (whatever its own exit code: that is in
 * the output), 1 when the sandbox could not be built (fail closed), 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds.h"
#include "opts.h"
#include "puyu/pu_sandbox.h"

static pu_status read_stdin(pu_str *s) {
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (s->len + n > (size_t)64 << 20)
            return pu_err_set(PU_ERR_RANGE, "stdin: program larger than 64 MiB");
        pu_str_append(s, buf, n);
    }
    if (ferror(stdin))
        return pu_err_set(PU_ERR_IO, "stdin: read error");
    return PU_OK;
}

int pu_cmd_sandbox(int argc, char **argv) {
    double timeout = 10;
    int64_t mem = 1024, nproc = 64, fsize = 64, max_out = 1 << 20;
    const char *workdir = NULL, *python = NULL;
    bool json = false, unsafe = false;
    const pu_opt opts[] = {
        {"timeout", 0, PU_OPT_DOUBLE, &timeout, "S", "wall-clock limit in seconds", 0.001, 86400},
        {"mem", 0, PU_OPT_INT, &mem, "MB", "address-space limit", 16, 1 << 20},
        {"procs", 0, PU_OPT_INT, &nproc, "N", "process limit", 1, 1 << 20},
        {"file-size", 0, PU_OPT_INT, &fsize, "MB", "largest file it may write (and /tmp size)", 1,
         1 << 20},
        {"max-output", 0, PU_OPT_INT, &max_out, "BYTES", "bytes kept of stdout and of stderr", 1,
         1 << 30},
        {"workdir", 0, PU_OPT_STRING, &workdir, "DIR",
         "host directory mounted writable at /work (default: a fresh temp dir, removed)", 0, 0},
        {"python", 0, PU_OPT_STRING, &python, "PATH", "interpreter (default /usr/bin/python3)", 0,
         0},
        {"json", 0, PU_OPT_FLAG, &json, NULL,
         "print one JSON object: stdout, stderr, exit_code, timed_out, killed, files", 0, 0},
        {"unsafe-no-sandbox", 0, PU_OPT_FLAG, &unsafe, NULL,
         "run WITHOUT namespaces/seccomp (rlimits, timeout, clean env only)", 0, 0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu sandbox",
        "run|check [--timeout S] [--mem MB] [--workdir DIR] [--json] "
        "[--unsafe-no-sandbox] < program.py",
        "run: execute the Python program on stdin with the system's python3 inside bubblewrap\n"
        "(new user/net/pid/mount/ipc/uts namespaces, read-only /usr only, writable /work),\n"
        "a seccomp filter, rlimits, a wall-clock timeout and capped output.\n"
        "check: say whether the sandbox works on this machine.\n"
        "Fails closed (exit 1) when namespaces are refused. PUYU_BWRAP overrides the bwrap path."};
    const char **pos = NULL;
    int npos = 0;
    int rc = pu_opts_parse(&spec, opts, argc, argv, &pos, &npos);
    if (rc) {
        pu_free(pos);
        return rc == 1 ? 0 : 2;
    }
    const char *sub = npos > 0 ? pos[0] : NULL;
    if (!sub || npos > 1 || (strcmp(sub, "run") && strcmp(sub, "check"))) {
        fprintf(stderr, "puyu sandbox: expected 'run' or 'check' (see --help)\n");
        pu_free(pos);
        return 2;
    }
    bool check = !strcmp(sub, "check");
    pu_free(pos);
    pu_sandbox_opts o = {.python = python,
                         .workdir = workdir,
                         .timeout_s = timeout,
                         .mem_mb = mem,
                         .max_procs = nproc,
                         .max_file_mb = fsize,
                         .max_output = (size_t)max_out,
                         .unsafe_no_sandbox = unsafe};
    if (check) {
        if (pu_sandbox_check(&o) != PU_OK) {
            fprintf(stderr, "puyu sandbox: error: %s\n", pu_err_msg());
            return 1;
        }
        printf("sandbox ok\n");
        return 0;
    }
    if (unsafe)
        fprintf(stderr, "puyu sandbox: warning: --unsafe-no-sandbox: the code runs with your "
                        "privileges, without namespaces or seccomp\n");
    pu_str code = {0};
    if (read_stdin(&code) != PU_OK) {
        fprintf(stderr, "puyu sandbox: error: %s\n", pu_err_msg());
        pu_str_free(&code);
        return 1;
    }
    pu_sandbox_result r;
    pu_status st = pu_sandbox_run(&o, code.p ? code.p : "", code.len, &r);
    pu_str_free(&code);
    if (st != PU_OK) {
        fprintf(stderr, "puyu sandbox: error: %s\n", pu_err_msg());
        return 1;
    }
    if (json) {
        pu_str j = {0};
        pu_sandbox_result_json(&r, &j);
        printf("%s\n", j.p);
        pu_str_free(&j);
    } else {
        fwrite(r.out, 1, r.out_len, stdout);
        if (r.out_truncated)
            printf("\n[stdout truncated: %llu of %llu bytes shown]\n",
                   (unsigned long long)r.out_len, (unsigned long long)r.out_total);
        fwrite(r.err, 1, r.err_len, stderr);
        if (r.err_truncated)
            fprintf(stderr, "\n[stderr truncated: %llu of %llu bytes shown]\n",
                    (unsigned long long)r.err_len, (unsigned long long)r.err_total);
        fprintf(stderr, "[exit_code %d%s%s]\n", r.exit_code, r.timed_out ? ", timed out" : "",
                r.killed ? ", killed" : "");
        for (int i = 0; i < r.n_files; i++)
            fprintf(stderr, "[file %s]\n", r.files[i]);
    }
    pu_sandbox_result_free(&r);
    return 0;
}
