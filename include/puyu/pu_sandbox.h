/*
 * pu_sandbox.h — run untrusted Python (model-written code) contained.
 *
 * Containment (all on by default, nothing to configure):
 *  - bubblewrap (Debian's bwrap) builds the namespaces: new user, network
 *    (only its own loopback: no network), PID, mount, IPC, UTS and cgroup
 *    namespaces; the host filesystem is not visible except /usr (the Python
 *    runtime; plus the interpreter's own prefix when it lives outside /usr)
 *    and /etc/ld.so.cache, all read-only; a private /proc and /dev; an empty
 *    size-capped tmpfs /tmp; the work directory bound writable at /work
 *    (the only writable host path; it persists across the calls of one
 *    session). No home, no project, no host /tmp.
 *  - a libseccomp filter (exported as BPF and handed to `bwrap --seccomp`)
 *    for what namespaces do not cover: ptrace, process_vm_*, keyctl/add_key/
 *    request_key, mount/umount/pivot_root/chroot, bpf, perf_event_open,
 *    unshare/setns and namespace flags of clone, clone3 (ENOSYS so libc falls
 *    back to clone), kexec/modules/reboot/swap, userfaultfd, io_uring,
 *    open_by_handle_at, TIOCSTI/TIOCLINUX, personality changes.
 *  - rlimits: address space, CPU seconds, processes, open files, file size
 *    (as root on the host the sandbox drops to uid/gid 65534 first, because
 *    RLIMIT_NPROC does not bind root).
 *  - a clean environment (PATH, HOME=/work, LANG, PYTHON* settings only).
 *  - a wall-clock timeout that SIGKILLs the whole sandbox (its process group
 *    and, through the PID namespace, every process in it).
 *  - stdout/stderr each captured up to max_output bytes; the rest is read
 *    and dropped, so a 100 MB print returns a truncated result, not an OOM.
 *
 * Fail closed: when bwrap is missing or the kernel refuses namespaces, calls
 * return PU_ERR_UNSUPPORTED with bwrap's message; nothing runs unconfined
 * unless opts.unsafe_no_sandbox is set (then: rlimits, clean environment,
 * timeout and output caps only).
 *
 * Two ways to run: pu_sandbox_run (one program per call: `python3 -` with the
 * code on stdin, the real exit code) and a session (a long-lived Python REPL
 * in one sandbox; variables live across calls, as Lagent's
 * IPythonInterpreter; the value of a final expression is printed). Files
 * created or changed in the work directory by a call are returned as
 * references (paths relative to the work dir).
 */
#ifndef PU_SANDBOX_H
#define PU_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "puyu/pu_core.h"

typedef struct pu_sandbox_opts {
    const char *python;  /* interpreter on the host (NULL = /usr/bin/python3) */
    const char *bwrap;   /* NULL = env PUYU_BWRAP, else /usr/bin/bwrap, else bwrap in PATH */
    const char *workdir; /* host dir bound at /work (created); NULL = a fresh temp dir
                          * removed when the session is closed */
    double timeout_s;    /* wall clock per call (0 = 10) */
    int64_t mem_mb;      /* RLIMIT_AS (0 = 1024) */
    int64_t cpu_s;       /* RLIMIT_CPU (0 = timeout + 1 for runs, 600 for sessions) */
    int64_t max_procs;   /* RLIMIT_NPROC (0 = 64) */
    int64_t max_files;   /* RLIMIT_NOFILE (0 = 256) */
    int64_t max_file_mb; /* RLIMIT_FSIZE and the /tmp size (0 = 64) */
    size_t max_output;   /* bytes kept per stream (0 = 1 MiB) */
    bool unsafe_no_sandbox;
} pu_sandbox_opts;

typedef struct pu_sandbox_result {
    char *out, *err; /* owned, NUL-terminated, at most max_output bytes each */
    size_t out_len, err_len;
    uint64_t out_total, err_total; /* bytes the program wrote (before the cap) */
    bool out_truncated, err_truncated;
    int exit_code;  /* program exit code; 128+N when killed by signal N */
    bool timed_out; /* the wall-clock timeout fired (the sandbox was killed) */
    bool killed;    /* ended by a signal (timeout, rlimit, OOM, ...) */
    char *error;    /* session: the exception's traceback (owned) or NULL */
    char **files;   /* work-dir files created or changed by the call (relative paths) */
    int n_files;
    double wall_s;         /* whole call */
    double first_output_s; /* start to the first byte of stdout (-1 when none) */
} pu_sandbox_result;

void pu_sandbox_result_free(pu_sandbox_result *r);
/* The result as one JSON object: stdout, stderr, exit_code, timed_out,
 * killed, stdout_truncated, stderr_truncated, files (+ error when set). */
void pu_sandbox_result_json(const pu_sandbox_result *r, pu_str *out);

/* Is the sandbox usable here (bwrap found and namespaces allowed)? Returns
 * PU_OK or PU_ERR_UNSUPPORTED with the reason. Cached after the first call
 * for the default bwrap. */
pu_status pu_sandbox_check(const pu_sandbox_opts *o);

/* One program: code on the interpreter's stdin, a fresh process each call. */
pu_status pu_sandbox_run(const pu_sandbox_opts *o, const char *code, size_t len,
                         pu_sandbox_result *r);

/* A stateful interpreter: one Python process inside one sandbox, driven over
 * pipes with a framed protocol. A call that times out or kills the
 * interpreter ends it; the next call starts a fresh one in the same work dir
 * (its stderr then says that the variables were lost). */
typedef struct pu_sandbox_session pu_sandbox_session;
pu_status pu_sandbox_session_open(const pu_sandbox_opts *o, pu_sandbox_session **out);
pu_status pu_sandbox_session_exec(pu_sandbox_session *s, const char *code, size_t len,
                                  pu_sandbox_result *r);
/* change the wall-clock limit of the following calls (seconds > 0) */
void pu_sandbox_session_set_timeout(pu_sandbox_session *s, double timeout_s);
/* host path of the work directory (borrowed) */
const char *pu_sandbox_session_workdir(const pu_sandbox_session *s);
void pu_sandbox_session_close(pu_sandbox_session *s);

#endif /* PU_SANDBOX_H */
