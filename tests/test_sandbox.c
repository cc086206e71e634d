/*
 * test_sandbox.c — the Python sandbox (suite sandbox): programs that try to
 * escape (network to a loopback listener the test opens, host files, writes
 * outside /work, the parent's environment, host PIDs, fork bomb, 2 GB
 * allocation, endless loop, killing the parent, a 100 MB print, syscalls the
 * seccomp filter denies) are contained and the caller keeps running; fail
 * closed when bwrap cannot build the sandbox; the stateful interpreter keeps
 * variables, reports errors and files, survives a timeout by restarting.
 * Skips (with a message) where bwrap or user namespaces are unavailable.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "puyu/pu_sandbox.h"

static bool g_checked, g_ok;

static bool sandbox_ok(void) {
    if (!g_checked) {
        g_checked = true;
        g_ok = pu_sandbox_check(NULL) == PU_OK;
        if (!g_ok)
            fprintf(stderr, "  (sandbox unavailable here: %s)\n", pu_err_msg());
    }
    if (!g_ok)
        pt_skip("bubblewrap / user namespaces unavailable");
    return g_ok;
}

/* the same without skipping the case */
static bool sandbox_ok_quiet(void) {
    if (!g_checked) {
        g_checked = true;
        g_ok = pu_sandbox_check(NULL) == PU_OK;
    }
    return g_ok;
}

/* run code with opts; returns the result (caller frees) */
static pu_sandbox_result run(const pu_sandbox_opts *o, const char *code) {
    pu_sandbox_result r;
    pu_status st = pu_sandbox_run(o, code, strlen(code), &r);
    PT_CHECK_MSG(st == PU_OK, "pu_sandbox_run: %s", pu_err_msg());
    if (st != PU_OK)
        memset(&r, 0, sizeof r);
    if (!r.out)
        r.out = pu_strdup("");
    if (!r.err)
        r.err = pu_strdup("");
    return r;
}

static void check_network(void) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    PT_CHECK(bind(ls, (struct sockaddr *)&a, sizeof a) == 0);
    PT_CHECK(listen(ls, 4) == 0);
    getsockname(ls, (struct sockaddr *)&a, &al);
    int port = ntohs(a.sin_port);
    char code[1024];
    snprintf(code, sizeof code,
             "import socket\n"
             "try:\n"
             "    s = socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
             "    s.sendall(b'escaped'); print('CONNECTED')\n"
             "except OSError as e:\n"
             "    print('blocked', e.errno)\n"
             "try:\n"
             "    socket.create_connection(('8.8.8.8', 53), timeout=2); print('CONNECTED')\n"
             "except OSError as e:\n"
             "    print('blocked', e.errno)\n",
             port);
    pu_sandbox_opts o = {.timeout_s = 10};
    pu_sandbox_result r = run(&o, code);
    PT_CHECK_MSG(!strstr(r.out, "CONNECTED") && strstr(r.out, "blocked"), "network: %s %s", r.out,
                 r.err);
    fcntl(ls, F_SETFL, O_NONBLOCK);
    int c = accept(ls, NULL, NULL);
    PT_CHECK_MSG(c < 0, "the listener got a connection from the sandbox");
    if (c >= 0)
        close(c);
    close(ls);
    pu_sandbox_result_free(&r);
}

static void check_host_files(void) {
    /* a secret in the project directory (the tests run from the repo root)
     * and one in the host /tmp */
    char proj[1024], tmp[512], cwd[512];
    PT_CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(proj, sizeof proj, "%s/build/sandbox_secret_%d.txt", cwd, (int)getpid());
    pt_tmp_path("sandbox_secret.txt", tmp, sizeof tmp);
    PT_OK(pu_file_write_atomic(proj, "TOPSECRET-proj", 14));
    PT_OK(pu_file_write_atomic(tmp, "TOPSECRET-tmp", 13));
    char code[4096];
    snprintf(code, sizeof code,
             "import os\n"
             "for p in [%s%s%s, %s%s%s, '/etc/shadow', '/etc/passwd', '/root/.bashrc',\n"
             "          '/etc/hostname', '/proc/1/root/etc/shadow', '%s/Makefile']:\n"
             "    try:\n"
             "        print('READ', p, open(p).read()[:40])\n"
             "    except OSError as e:\n"
             "        print('denied', p, e.errno)\n"
             "for d in ['/home', '/root', '/etc', '/tmp', '/work', '%s']:\n"
             "    try:\n"
             "        print('ls', d, os.listdir(d))\n"
             "    except OSError as e:\n"
             "        print('nols', d, e.errno)\n",
             "'", proj, "'", "'", tmp, "'", cwd, cwd);
    pu_sandbox_opts o = {.timeout_s = 10};
    pu_sandbox_result r = run(&o, code);
    PT_CHECK_MSG(!strstr(r.out, "TOPSECRET") && !strstr(r.out, "READ"), "host files: %s %s", r.out,
                 r.err);
    PT_CHECK_MSG(strstr(r.out, "nols /home") && strstr(r.out, "nols /root") &&
                     strstr(r.out, "ls /tmp []") && strstr(r.out, "ls /etc ['ld.so.cache']"),
                 "listing: %s", r.out);
    pu_sandbox_result_free(&r);
    unlink(proj);
    unlink(tmp);
}

static void check_writes(void) {
    char hostdir[512], target[600], wd[512];
    pt_tmp_path("sbx_write_target", hostdir, sizeof hostdir);
    PT_OK(pu_mkdir_p(hostdir));
    chmod(hostdir, 0777);
    snprintf(target, sizeof target, "%s/pwned", hostdir);
    pt_tmp_path("sbx_wd", wd, sizeof wd);
    /* as root the sandbox runs as nobody, which must reach the work dir */
    char top[512];
    snprintf(top, sizeof top, "%s", hostdir);
    *strrchr(top, '/') = 0;
    chmod(top, 0711);
    char code[2048];
    snprintf(code, sizeof code,
             "for p in ['%s', '/usr/pwned', '/etc/pwned', '/pwned', '/proc/sys/kernel/hostname',"
             " '/work/../pwned', '/work/ok.txt', '/tmp/inner.txt']:\n"
             "    try:\n"
             "        open(p, 'w').write('x'); print('WROTE', p)\n"
             "    except OSError as e:\n"
             "        print('denied', p, e.errno)\n",
             target);
    pu_sandbox_opts o = {.timeout_s = 10, .workdir = wd};
    pu_sandbox_result r = run(&o, code);
    PT_CHECK_MSG(!pu_file_exists(target), "wrote a host file outside the work dir");
    PT_CHECK(!pu_file_exists("/usr/pwned") && !pu_file_exists("/etc/pwned") &&
             !pu_file_exists("/pwned"));
    PT_CHECK_MSG(strstr(r.out, "WROTE /work/ok.txt") && strstr(r.out, "denied /usr/pwned"),
                 "writes: %s %s", r.out, r.err);
    char ok[600];
    snprintf(ok, sizeof ok, "%s/ok.txt", wd);
    PT_CHECK_MSG(pu_file_exists(ok), "the work dir is not the host dir given");
    PT_CHECK(r.n_files == 1 && !strcmp(r.files[0], "ok.txt"));
    pu_sandbox_result_free(&r);
}

static void check_env_pids(void) {
    setenv("PUYU_TEST_SECRET", "hunter2-sandbox-secret", 1);
    char code[2048];
    snprintf(code, sizeof code,
             "import os\n"
             "print(dict(os.environ))\n"
             "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
             "print('PIDS', len(pids), pids)\n"
             "for p in pids:\n"
             "    try:\n"
             "        print(open('/proc/%%d/environ' %% p, 'rb').read())\n"
             "    except OSError as e:\n"
             "        print('noenv', p)\n"
             "try:\n"
             "    os.kill(%d, 0); print('HOSTPID visible')\n"
             "except OSError as e:\n"
             "    print('nohost', e.errno)\n",
             (int)getpid());
    pu_sandbox_opts o = {.timeout_s = 10};
    pu_sandbox_result r = run(&o, code);
    PT_CHECK_MSG(!strstr(r.out, "hunter2"), "the parent's environment leaked: %s", r.out);
    PT_CHECK_MSG(!strstr(r.out, "HOSTPID visible"), "host pid visible: %s", r.out);
    const char *p = strstr(r.out, "PIDS ");
    PT_CHECK_MSG(p && atoi(p + 5) <= 3, "more than 3 pids visible: %s", p ? p : r.out);
    unsetenv("PUYU_TEST_SECRET");
    pu_sandbox_result_free(&r);
}

static void check_fork_bomb(void) {
    const char *code = "import os, time\n"
                       "n = 0\n"
                       "try:\n"
                       "    while n < 10000:\n"
                       "        if os.fork() == 0:\n"
                       "            time.sleep(30); os._exit(0)\n"
                       "        n += 1\n"
                       "except OSError as e:\n"
                       "    print('fork stopped at', n, e.errno)\n";
    pu_sandbox_opts o = {.timeout_s = 5, .max_procs = 32};
    pu_sandbox_result r = run(&o, code);
    PT_CHECK_MSG(strstr(r.out, "fork stopped at"), "fork bomb not stopped: %s %s", r.out, r.err);
    const char *p = strstr(r.out, "stopped at ");
    PT_CHECK_MSG(p && atoi(p + 11) < 32, "forks: %s", r.out);
    /* the sleeping children die with the sandbox (PID namespace) */
    PT_CHECK(!r.timed_out);
    pu_sandbox_result_free(&r);
}

static void check_limits(void) {
    pu_sandbox_opts o = {.timeout_s = 10, .mem_mb = 512};
    pu_sandbox_result r = run(&o, "try:\n"
                                  "    b = bytearray(2 << 30); print('ALLOCATED', len(b))\n"
                                  "except MemoryError:\n"
                                  "    print('MemoryError')\n");
    PT_CHECK_MSG(strstr(r.out, "MemoryError") && !strstr(r.out, "ALLOCATED"), "2 GB: %s %s", r.out,
                 r.err);
    pu_sandbox_result_free(&r);

    o = (pu_sandbox_opts){.timeout_s = 1};
    r = run(&o, "print('start', flush=True)\nwhile True:\n    pass\n");
    PT_CHECK(r.timed_out && r.killed);
    PT_CHECK(strstr(r.out, "start") != NULL);
    pu_sandbox_result_free(&r);

    /* a child that closes its pipes and keeps looping dies with the
     * sandbox when the program ends (PID namespace), not at the timeout */
    o.timeout_s = 5;
    r = run(&o, "import os\nif os.fork() == 0:\n    os.close(1); os.close(2)\n"
                "    while True: pass\n");
    PT_CHECK(!r.timed_out && r.exit_code == 0);
    pu_sandbox_result_free(&r);

    o = (pu_sandbox_opts){.timeout_s = 20, .max_output = 1 << 16};
    r = run(&o, "import sys\nsys.stdout.write('x' * 100_000_000)\nprint('tail')\n");
    PT_CHECK(r.out_truncated);
    PT_EQ_I64(r.out_len, 1 << 16);
    PT_CHECK_MSG(r.out_total >= 100000000, "total %llu", (unsigned long long)r.out_total);
    PT_EQ_I64(r.exit_code, 0);
    pu_sandbox_result_free(&r);

    o = (pu_sandbox_opts){.timeout_s = 10, .max_file_mb = 1};
    r = run(&o, "try:\n    open('/work/big', 'wb').write(b'x' * (4 << 20)); print('BIG')\n"
                "except OSError as e:\n    print('fsize', e.errno)\n");
    PT_CHECK_MSG(strstr(r.out, "fsize 27"), "file size limit: %s %s", r.out, r.err);
    pu_sandbox_result_free(&r);

    r = run(&o, "import sys\nsys.exit(7)\n");
    PT_EQ_I64(r.exit_code, 7);
    PT_CHECK(!r.killed && !r.timed_out);
    pu_sandbox_result_free(&r);
}

static void check_kill_parent(void) {
    char code[512];
    snprintf(code, sizeof code,
             "import os, signal\n"
             "for p in [os.getppid(), 1, %d, -1]:\n"
             "    try:\n"
             "        os.kill(p, signal.SIGKILL); print('killed', p)\n"
             "    except OSError as e:\n"
             "        print('nokill', p, e.errno)\n"
             "print('alive')\n",
             (int)getpid());
    pu_sandbox_opts o = {.timeout_s = 5};
    pu_sandbox_result r = run(&o, code);
    /* we are still here; the host pid was not reachable */
    char want[64];
    snprintf(want, sizeof want, "nokill %d", (int)getpid());
    PT_CHECK_MSG(strstr(r.out, want), "kill parent: %s %s", r.out, r.err);
    pu_sandbox_result_free(&r);
    PT_CHECK(getppid() > 0);
}

static void check_seccomp(void) {
    const char *code = "import ctypes, errno\n"
                       "libc = ctypes.CDLL(None, use_errno=True)\n"
                       "def t(name, rc):\n"
                       "    print(name, 'ALLOWED' if rc == 0 else 'denied', ctypes.get_errno())\n"
                       "t('ptrace', libc.ptrace(0, 0, 0, 0))\n"          /* PTRACE_TRACEME */
                       "t('unshare', libc.unshare(0x10000000))\n"        /* CLONE_NEWUSER */
                       "t('unshare_net', libc.unshare(0x40000000))\n"    /* CLONE_NEWNET */
                       "t('keyctl', libc.syscall(250, 0, 0, 0, 0, 0))\n" /* keyctl GET_KEYRING_ID */
                       "t('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n"
                       "t('bpf', libc.syscall(321, 0, 0, 0))\n"
                       "t('perf', libc.syscall(298, 0, 0, -1, -1, 0))\n"
                       "import os\nprint('pid', os.getpid())\n";
    pu_sandbox_opts o = {.timeout_s = 10};
    pu_sandbox_result r = run(&o, code);
    PT_CHECK_MSG(!strstr(r.out, "ALLOWED") && strstr(r.out, "ptrace denied") &&
                     strstr(r.out, "unshare denied") && strstr(r.out, "perf denied"),
                 "seccomp: %s %s", r.out, r.err);
    pu_sandbox_result_free(&r);
}

static void check_fail_closed(void) {
    char fake[512];
    pt_tmp_path("fake_bwrap.sh", fake, sizeof fake);
    const char *sh = "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n";
    PT_OK(pu_file_write_atomic(fake, sh, strlen(sh)));
    chmod(fake, 0755);
    pu_sandbox_opts o = {.timeout_s = 5, .bwrap = fake};
    pu_sandbox_result r;
    pu_status st = pu_sandbox_run(&o, "print('RAN')\n", 12, &r);
    PT_EQ_I64(st, PU_ERR_UNSUPPORTED);
    PT_CHECK_MSG(strstr(pu_err_msg(), "Permission denied") && strstr(pu_err_msg(), "unconfined"),
                 "message: %s", pu_err_msg());
    pu_sandbox_session *s = NULL;
    st = pu_sandbox_session_open(&o, &s);
    PT_EQ_I64(st, PU_ERR_UNSUPPORTED);
    PT_CHECK(s == NULL);
    o.bwrap = "/nonexistent/bwrap";
    st = pu_sandbox_run(&o, "print('RAN')\n", 12, &r);
    PT_EQ_I64(st, PU_ERR_UNSUPPORTED);
    /* CLI: exit 1, nothing on stdout */
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "echo \"print('RAN')\" | PUYU_BWRAP=%s %s sandbox run 2>/dev/null",
             fake, pt_bin());
    int rc = pt_run(cmd, &out);
    PT_CHECK_MSG(rc == 1 && (!out || !strstr(out, "RAN")), "cli rc %d out %s", rc, out ? out : "");
    pu_free(out);
    /* unsafe mode runs without bwrap (rlimits + timeout only) */
    o.unsafe_no_sandbox = true;
    const char *prog = "import sys\nprint('RAN')\nsys.exit(3)\n";
    st = pu_sandbox_run(&o, prog, strlen(prog), &r);
    PT_OK(st);
    if (st == PU_OK) {
        PT_CHECK(strstr(r.out, "RAN") != NULL);
        PT_EQ_I64(r.exit_code, 3);
        pu_sandbox_result_free(&r);
    }
}

/* as root the session's bwrap runs as nobody: the counter must be writable
 * by it (and its directory searchable) */
static void reset_count(const char *count) {
    PT_OK(pu_file_write_atomic(count, "0\n", 2));
    chmod(count, 0666);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", count);
    char *sl = strrchr(dir, '/');
    struct stat sb;
    if (sl) {
        *sl = 0;
        if (stat(dir, &sb) == 0)
            chmod(dir, (sb.st_mode & 07777) | 0111);
    }
}

/* a fake bwrap that counts its runs in `count` and fails the first `n_fail`
 * with `msg` on stderr (exit 1), then runs the real one */
static void write_flaky_bwrap(const char *path, const char *count, int n_fail, const char *msg) {
    const char *real = getenv("PUYU_BWRAP") ? getenv("PUYU_BWRAP") : "/usr/bin/bwrap";
    char sh[2048];
    snprintf(sh, sizeof sh,
             "#!/bin/sh\nn=$(cat '%s' 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > '%s'\n"
             "if [ $n -le %d ]; then echo '%s' >&2; exit 1; fi\nexec '%s' \"$@\"\n",
             count, count, n_fail, msg, real);
    PT_OK(pu_file_write_atomic(path, sh, strlen(sh)));
    chmod(path, 0755);
    reset_count(count);
}

static int read_count(const char *count) {
    char *txt = NULL;
    size_t n = 0;
    if (pu_file_read_all(count, &txt, &n) != PU_OK)
        return 0;
    int v = atoi(txt);
    pu_free(txt);
    return v;
}

#define EAGAIN_MSG "bwrap: Creating new namespace failed: Resource temporarily unavailable"

/* commit 1a39043: bwrap's fork failing with EAGAIN (RLIMIT_NPROC of the
 * sandbox uid right after many sandboxes) is retried with backoff; a real
 * refusal is reported at once (fail closed) */
static void check_eagain_retry(bool have_bwrap) {
    char fake[512], count[512];
    pt_tmp_path("flaky_bwrap.sh", fake, sizeof fake);
    pt_tmp_path("flaky_count", count, sizeof count);
    pu_sandbox_opts o = {.timeout_s = 5, .bwrap = fake};
    pu_sandbox_result r;
    /* EAGAIN every time: retried (1 + 7 attempts), then still a refusal */
    write_flaky_bwrap(fake, count, 1000, EAGAIN_MSG);
    pu_status st = pu_sandbox_run(&o, "print('RAN')\n", 12, &r);
    PT_EQ_I64(st, PU_ERR_UNSUPPORTED);
    PT_EQ_I64(read_count(count), 8);
    PT_CHECK_MSG(strstr(pu_err_msg(), "unconfined") != NULL, "message: %s", pu_err_msg());
    /* a real refusal: one attempt, reported */
    write_flaky_bwrap(fake, count, 1000, "bwrap: setting up uid map: Permission denied");
    st = pu_sandbox_run(&o, "print('RAN')\n", 12, &r);
    PT_EQ_I64(st, PU_ERR_UNSUPPORTED);
    PT_EQ_I64(read_count(count), 1);
    pu_sandbox_session *s = NULL;
    reset_count(count);
    st = pu_sandbox_session_open(&o, &s);
    PT_EQ_I64(st, PU_ERR_UNSUPPORTED);
    PT_CHECK(s == NULL);
    PT_EQ_I64(read_count(count), 1);
    if (!have_bwrap)
        return;
    /* EAGAIN twice, then the real bwrap: the code runs */
    write_flaky_bwrap(fake, count, 2, EAGAIN_MSG);
    st = pu_sandbox_run(&o, "print('RAN')\n", 12, &r);
    PT_CHECK_MSG(st == PU_OK, "after EAGAIN: %s", pu_err_msg());
    if (st == PU_OK) {
        PT_CHECK_MSG(r.out && !strcmp(r.out, "RAN\n"), "out %s", r.out ? r.out : "");
        pu_sandbox_result_free(&r);
    }
    PT_EQ_I64(read_count(count), 3);
    /* the stateful session too */
    write_flaky_bwrap(fake, count, 2, EAGAIN_MSG);
    st = pu_sandbox_session_open(&o, &s);
    PT_CHECK_MSG(st == PU_OK, "session after EAGAIN: %s", pu_err_msg());
    if (st == PU_OK) {
        st = pu_sandbox_session_exec(s, "x = 41\nprint(x + 1)\n", 20, &r);
        PT_CHECK_MSG(st == PU_OK && r.out && strstr(r.out, "42"), "session exec %s",
                     st == PU_OK && r.out ? r.out : pu_err_msg());
        if (st == PU_OK)
            pu_sandbox_result_free(&r);
        pu_sandbox_session_close(s);
    }
    PT_CHECK(read_count(count) >= 3);
}

static pu_sandbox_result sexec(pu_sandbox_session *s, const char *code) {
    pu_sandbox_result r;
    pu_status st = pu_sandbox_session_exec(s, code, strlen(code), &r);
    PT_CHECK_MSG(st == PU_OK, "session exec: %s", pu_err_msg());
    if (st != PU_OK)
        memset(&r, 0, sizeof r);
    if (!r.out)
        r.out = pu_strdup("");
    if (!r.err)
        r.err = pu_strdup("");
    return r;
}

static void check_session(void) {
    pu_sandbox_opts o = {.timeout_s = 2};
    pu_sandbox_session *s = NULL;
    PT_OK(pu_sandbox_session_open(&o, &s));
    if (!s)
        return;
    pu_sandbox_result r = sexec(s, "x = 41\ndef f(a):\n    return a * 2\n");
    PT_EQ_STR(r.out, "");
    PT_EQ_I64(r.exit_code, 0);
    pu_sandbox_result_free(&r);
    r = sexec(s, "print('x is', x)\nx + 1");
    PT_EQ_STR(r.out, "x is 41\n42\n");
    pu_sandbox_result_free(&r);
    r = sexec(s, "f(x) / 0");
    PT_EQ_I64(r.exit_code, 1);
    PT_CHECK_MSG(r.error && strstr(r.error, "ZeroDivisionError") && strstr(r.err, "<cell>"),
                 "error: %s / %s", r.error ? r.error : "(null)", r.err);
    pu_sandbox_result_free(&r);
    r = sexec(s, "def (:");
    PT_CHECK(r.error && strstr(r.error, "SyntaxError"));
    pu_sandbox_result_free(&r);
    r = sexec(s, "import sys\nsys.exit(4)");
    PT_CHECK(r.error && strstr(r.error, "SystemExit: 4"));
    pu_sandbox_result_free(&r);
    r = sexec(s, "open('plot.png', 'wb').write(b'\\x89PNG')\nos_ok = 1");
    PT_CHECK_MSG(r.n_files == 1 && !strcmp(r.files[0], "plot.png"), "files: %d", r.n_files);
    pu_sandbox_result_free(&r);
    r = sexec(s, "x");
    PT_EQ_STR(r.out, "41\n");
    pu_sandbox_result_free(&r);
    r = sexec(s, "input()");
    PT_CHECK(r.error && strstr(r.error, "EOFError"));
    pu_sandbox_result_free(&r);
    /* a timeout kills the interpreter; the next call restarts it, files stay */
    r = sexec(s, "while True:\n    pass\n");
    PT_CHECK(r.timed_out && r.killed);
    pu_sandbox_result_free(&r);
    r = sexec(s, "import os\nprint(os.path.exists('plot.png'))\nx");
    PT_CHECK_MSG(strstr(r.out, "True") && r.error && strstr(r.error, "NameError") &&
                     strstr(r.err, "restarted"),
                 "after restart: %s / %s", r.out, r.err);
    pu_sandbox_result_free(&r);
    /* os._exit ends the interpreter: reported, then restarted */
    r = sexec(s, "import os\nos._exit(9)");
    PT_EQ_I64(r.exit_code, 9);
    pu_sandbox_result_free(&r);
    r = sexec(s, "y = 2\ny * 21");
    PT_EQ_STR(r.out, "42\n");
    pu_sandbox_result_free(&r);
    /* a 100 MB print in a session (time for it on a loaded machine) */
    pu_sandbox_session_set_timeout(s, 60);
    r = sexec(s, "print('z' * 100_000_000)\n'done'");
    PT_CHECK(r.out_truncated && r.out_len == ((size_t)1 << 20));
    pu_sandbox_result_free(&r);
    r = sexec(s, "y");
    PT_EQ_STR(r.out, "2\n");
    pu_sandbox_result_free(&r);
    char wd[512];
    snprintf(wd, sizeof wd, "%s", pu_sandbox_session_workdir(s));
    pu_sandbox_session_close(s);
    PT_CHECK_MSG(!pu_dir_exists(wd), "temp work dir %s not removed", wd);
}

static void check_cli(void) {
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "printf 'import sys\\nprint(\"hi\")\\nsys.exit(5)\\n' | %s sandbox run --json "
             "--timeout 5",
             pt_bin());
    int rc = pt_run(cmd, &out);
    PT_EQ_I64(rc, 0);
    PT_CHECK_MSG(out && strstr(out, "\"stdout\": \"hi\\n\"") && strstr(out, "\"exit_code\": 5") &&
                     strstr(out, "\"timed_out\": false"),
                 "cli: %s", out ? out : "");
    pu_free(out);
}

PT_SUITE(sandbox) {
    if (PT_TEST("sandbox network") && sandbox_ok())
        check_network();
    if (PT_TEST("sandbox host files") && sandbox_ok())
        check_host_files();
    if (PT_TEST("sandbox writes") && sandbox_ok())
        check_writes();
    if (PT_TEST("sandbox env and pids") && sandbox_ok())
        check_env_pids();
    if (PT_TEST("sandbox fork bomb") && sandbox_ok())
        check_fork_bomb();
    if (PT_TEST("sandbox limits") && sandbox_ok())
        check_limits();
    if (PT_TEST("sandbox kill parent") && sandbox_ok())
        check_kill_parent();
    if (PT_TEST("sandbox seccomp") && sandbox_ok())
        check_seccomp();
    if (PT_TEST("sandbox fail closed"))
        check_fail_closed();
    if (PT_TEST("sandbox eagain retry"))
        check_eagain_retry(sandbox_ok_quiet());
    if (PT_TEST("sandbox session") && sandbox_ok())
        check_session();
    if (PT_TEST("sandbox cli") && sandbox_ok())
        check_cli();
}
