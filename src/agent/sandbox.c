/*
 * sandbox.c — contained Python: bubblewrap namespaces + libseccomp filter +
 * rlimits + timeout + output caps (see pu_sandbox.h for the policy).
 *
 * Why bubblewrap and libseccomp: both are small, maintained, packaged by
 * Debian and used by Flatpak for exactly this job; bwrap does the fiddly
 * namespace/mount/pivot_root sequence right (and knows unprivileged user
 * namespaces), libseccomp writes correct BPF for the architecture (it kills
 * on a foreign arch, so x32/i386 syscall tricks fail). Rlimits, the timeout,
 * output capping and the interpreter protocol are ours.
 *
 * Child fd layout (before exec of bwrap): 0 stdin, 1 stdout, 2 stderr,
 * 3 requests / 4 responses (session only), 5 seccomp BPF (memfd), 6 bwrap's
 * --json-status-fd, 7 exec-error report (close-on-exec); everything else is
 * closed. Setup failure is told apart from a program's own exit: bwrap writes
 * "exit-code" on the status fd only when the program ran.
 */
#define _GNU_SOURCE /* memfd_create, pipe2 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <linux/sched.h>
#include <poll.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "agent_impl.h"
#include "puyu/pu_sandbox.h"

extern char **environ;

#define SBX_UID 65534 /* nobody: used when the host caller is root */

/* ------------------------------------------------------------------------ */
/* the interpreter driver (runs inside the sandbox as `python3 -I -c`)      */

static const char *k_driver =
    "import ast, json, os, sys, traceback\n"
    "rq = os.fdopen(os.dup(3), 'rb', 0); rs = os.fdopen(os.dup(4), 'wb', 0)\n"
    "os.close(3); os.close(4)\n"
    "os.set_inheritable(rq.fileno(), False); os.set_inheritable(rs.fileno(), False)\n"
    "g = {'__name__': '__main__', '__builtins__': __builtins__}\n"
    "rs.write(b'{\"ready\": true}\\n')\n"
    "def run(code):\n"
    "    tree = ast.parse(code, '<cell>', 'exec')\n"
    "    last = None\n"
    "    if tree.body and isinstance(tree.body[-1], ast.Expr):\n"
    "        last = ast.Expression(tree.body.pop().value)\n"
    "    exec(compile(tree, '<cell>', 'exec'), g)\n"
    "    if last is not None:\n"
    "        v = eval(compile(last, '<cell>', 'eval'), g)\n"
    "        if v is not None:\n"
    "            print(repr(v))\n"
    "while True:\n"
    "    hdr = rq.readline()\n"
    "    if not hdr:\n"
    "        break\n"
    "    n = int(hdr); buf = b''\n"
    "    while len(buf) < n:\n"
    "        c = rq.read(n - len(buf))\n"
    "        if not c:\n"
    "            sys.exit(0)\n"
    "        buf += c\n"
    "    err = None\n"
    "    try:\n"
    "        run(buf.decode('utf-8', 'replace'))\n"
    "    except SystemExit as e:\n"
    "        err = 'SystemExit: %r\\n' % (e.code,)\n"
    "    except BaseException as e:\n"
    "        tb = traceback.extract_tb(e.__traceback__)\n"
    "        tb = [f for f in tb if f.filename != '<string>']\n"
    "        err = ''.join(traceback.format_list(tb)) + "
    "''.join(traceback.format_exception_only(type(e), e))\n"
    "        if tb: err = 'Traceback (most recent call last):\\n' + err\n"
    "    try:\n"
    "        sys.stdout.flush()\n"
    "    except BaseException:\n"
    "        pass\n"
    "    if err is not None:\n"
    "        try:\n"
    "            sys.stderr.write(err); sys.stderr.flush()\n"
    "        except BaseException:\n"
    "            pass\n"
    "    rs.write((json.dumps({'ok': err is None, 'error': err}) + '\\n').encode())\n";

/* ------------------------------------------------------------------------ */
/* seccomp: BPF built once with libseccomp, copied into a memfd per spawn   */

static pthread_mutex_t g_bpf_mu = PTHREAD_MUTEX_INITIALIZER;
static char *g_bpf;
static size_t g_bpf_len;

static pu_status build_bpf(void) {
    pthread_mutex_lock(&g_bpf_mu);
    if (g_bpf) {
        pthread_mutex_unlock(&g_bpf_mu);
        return PU_OK;
    }
    pu_status st = PU_OK;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        pthread_mutex_unlock(&g_bpf_mu);
        return pu_err_set(PU_ERR_UNSUPPORTED, "sandbox: seccomp_init failed");
    }
    static const char *const deny[] = {"ptrace",
                                       "process_vm_readv",
                                       "process_vm_writev",
                                       "keyctl",
                                       "add_key",
                                       "request_key",
                                       "mount",
                                       "umount",
                                       "umount2",
                                       "pivot_root",
                                       "chroot",
                                       "move_mount",
                                       "open_tree",
                                       "fsopen",
                                       "fsconfig",
                                       "fsmount",
                                       "fspick",
                                       "mount_setattr",
                                       "bpf",
                                       "perf_event_open",
                                       "unshare",
                                       "setns",
                                       "kexec_load",
                                       "kexec_file_load",
                                       "init_module",
                                       "finit_module",
                                       "delete_module",
                                       "reboot",
                                       "swapon",
                                       "swapoff",
                                       "userfaultfd",
                                       "io_uring_setup",
                                       "io_uring_enter",
                                       "io_uring_register",
                                       "open_by_handle_at",
                                       "name_to_handle_at",
                                       "acct",
                                       "quotactl",
                                       "syslog",
                                       "iopl",
                                       "ioperm",
                                       "lookup_dcookie",
                                       "fanotify_init",
                                       "settimeofday",
                                       "clock_settime",
                                       "adjtimex",
                                       "clock_adjtime",
                                       "sethostname",
                                       "setdomainname",
                                       "vhangup",
                                       "nfsservctl",
                                       "uselib",
                                       "pidfd_getfd",
                                       "kcmp"};
    int rc = 0;
    for (size_t i = 0; i < sizeof deny / sizeof deny[0] && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(deny[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not on this architecture */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    /* clone3 passes flags in memory BPF cannot read: ENOSYS makes glibc use clone */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    static const uint64_t nsflags[] = {CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWNET,   CLONE_NEWPID,
                                       CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP};
    for (size_t i = 0; i < sizeof nsflags / sizeof nsflags[0] && rc == 0; i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, nsflags[i], nsflags[i]));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX));
    int fd = -1;
    if (rc == 0) {
        fd = memfd_create("puyu-seccomp", MFD_CLOEXEC);
        if (fd < 0 || seccomp_export_bpf(ctx, fd) != 0)
            rc = -1;
    }
    if (rc != 0) {
        st = pu_err_set(PU_ERR_UNSUPPORTED, "sandbox: building the seccomp filter failed (%d)", rc);
    } else {
        off_t n = lseek(fd, 0, SEEK_END);
        g_bpf = pu_malloc((size_t)n + 1);
        g_bpf_len = (size_t)n;
        if (pread(fd, g_bpf, (size_t)n, 0) != n) {
            pu_free(g_bpf);
            g_bpf = NULL;
            st = pu_err_set(PU_ERR_IO, "sandbox: reading the seccomp filter back failed");
        }
    }
    if (fd >= 0)
        close(fd);
    seccomp_release(ctx);
    pthread_mutex_unlock(&g_bpf_mu);
    return st;
}

void pu_agent_sigpipe_block(sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

void pu_agent_sigpipe_restore(const sigset_t *old) {
    if (!sigismember(old, SIGPIPE)) {
        /* drop a SIGPIPE raised while blocked, then unblock */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) > 0)
            ;
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

static int bpf_memfd(void) {
    int fd = memfd_create("puyu-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (write(fd, g_bpf, g_bpf_len) != (ssize_t)g_bpf_len || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ------------------------------------------------------------------------ */
/* options, paths                                                            */

typedef struct sbx_cfg {
    char python[4096];
    char bwrap[4096];
    char pyprefix[4096]; /* extra read-only bind when python lives outside /usr ("" = none) */
    double timeout_s;
    int64_t mem_mb, cpu_s, max_procs, max_files, max_file_mb;
    size_t max_output;
    bool unsafe;
} sbx_cfg;

static bool is_exec(const char *p) {
    return access(p, X_OK) == 0;
}

static bool find_in_path(const char *name, char *out, size_t cap) {
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    while (*path) {
        const char *e = strchr(path, ':');
        size_t n = e ? (size_t)(e - path) : strlen(path);
        snprintf(out, cap, "%.*s/%s", (int)n, path, name);
        if (n && is_exec(out))
            return true;
        path += n + (e ? 1 : 0);
    }
    return false;
}

static pu_status cfg_make(const pu_sandbox_opts *o, bool session, sbx_cfg *c) {
    memset(c, 0, sizeof *c);
    const char *py = o && o->python ? o->python : "/usr/bin/python3";
    if (strchr(py, '/')) {
        snprintf(c->python, sizeof c->python, "%s", py);
    } else if (!find_in_path(py, c->python, sizeof c->python)) {
        return pu_err_set(PU_ERR_INVALID, "sandbox: python '%s' not found in PATH", py);
    }
    if (!is_exec(c->python))
        return pu_err_set(PU_ERR_INVALID, "sandbox: python '%s' is not executable", c->python);
    char real[4096];
    if (realpath(c->python, real) && strncmp(real, "/usr/", 5) != 0) {
        /* e.g. /opt/py/bin/python3.11: bind /opt/py read-only */
        char *s = strrchr(real, '/');
        if (s)
            *s = 0;
        s = strrchr(real, '/');
        if (s && s != real)
            *s = 0;
        snprintf(c->pyprefix, sizeof c->pyprefix, "%s", real);
    }
    const char *bw = o && o->bwrap ? o->bwrap : getenv("PUYU_BWRAP");
    if (bw && *bw)
        snprintf(c->bwrap, sizeof c->bwrap, "%s", bw);
    else if (is_exec("/usr/bin/bwrap"))
        snprintf(c->bwrap, sizeof c->bwrap, "/usr/bin/bwrap");
    else if (!find_in_path("bwrap", c->bwrap, sizeof c->bwrap))
        c->bwrap[0] = 0;
    c->timeout_s = o && o->timeout_s > 0 ? o->timeout_s : 10;
    c->mem_mb = o && o->mem_mb > 0 ? o->mem_mb : 1024;
    c->cpu_s = o && o->cpu_s > 0 ? o->cpu_s : session ? 600 : (int64_t)c->timeout_s + 1;
    c->max_procs = o && o->max_procs > 0 ? o->max_procs : 64;
    c->max_files = o && o->max_files > 0 ? o->max_files : 256;
    c->max_file_mb = o && o->max_file_mb > 0 ? o->max_file_mb : 64;
    c->max_output = o && o->max_output > 0 ? o->max_output : (size_t)1 << 20;
    c->unsafe = o && o->unsafe_no_sandbox;
    if (!c->unsafe && !c->bwrap[0])
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "sandbox: bubblewrap (bwrap) not found; install the Debian package "
                          "bubblewrap (refusing to run code unconfined; --unsafe-no-sandbox "
                          "overrides)");
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* work directory: creation, snapshot for changed files, removal            */

typedef struct snap_ent {
    char *rel;
    int64_t mtime_ns, size;
} snap_ent;

typedef struct snap {
    snap_ent *e;
    int n, cap;
} snap;

static void snap_free(snap *s) {
    for (int i = 0; i < s->n; i++)
        pu_free(s->e[i].rel);
    pu_free(s->e);
    memset(s, 0, sizeof *s);
}

static void snap_walk(snap *s, const char *root, const char *rel, int depth) {
    if (depth > 6 || s->n >= 4096)
        return;
    char *dir = rel[0] ? pu_path_join(root, rel) : pu_strdup(root);
    DIR *d = opendir(dir);
    if (!d) {
        pu_free(dir);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) && s->n < 4096) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *r = rel[0] ? pu_path_join(rel, de->d_name) : pu_strdup(de->d_name);
        char *full = pu_path_join(root, r);
        struct stat st;
        if (lstat(full, &st) == 0) {
            if (S_ISDIR(st.st_mode)) {
                snap_walk(s, root, r, depth + 1);
            } else if (S_ISREG(st.st_mode)) {
                if (s->n == s->cap) {
                    s->cap = s->cap ? 2 * s->cap : 32;
                    s->e = pu_realloc(s->e, (size_t)s->cap * sizeof *s->e);
                }
                s->e[s->n].rel = r;
                s->e[s->n].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
                s->e[s->n].size = (int64_t)st.st_size;
                s->n++;
                r = NULL;
            }
        }
        pu_free(full);
        pu_free(r);
    }
    closedir(d);
    pu_free(dir);
}

static void snap_take(snap *s, const char *root) {
    snap_free(s);
    snap_walk(s, root, "", 0);
}

/* files in `after` that are new or changed vs `before` */
static void snap_diff(const snap *before, const snap *after, pu_sandbox_result *r) {
    for (int i = 0; i < after->n; i++) {
        bool same = false;
        for (int j = 0; j < before->n && !same; j++)
            same = !strcmp(before->e[j].rel, after->e[i].rel) &&
                   before->e[j].mtime_ns == after->e[i].mtime_ns &&
                   before->e[j].size == after->e[i].size;
        if (same)
            continue;
        r->files = pu_realloc(r->files, (size_t)(r->n_files + 1) * sizeof(char *));
        r->files[r->n_files++] = pu_strdup(after->e[i].rel);
    }
}

static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char *p = pu_path_join(path, de->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                rm_tree(p);
            else
                unlink(p);
            pu_free(p);
        }
        closedir(d);
    }
    rmdir(path);
}

static pu_status workdir_prepare(const char *want, char **out, bool *temp) {
    *temp = false;
    if (want) {
        PU_TRY(pu_mkdir_p(want));
        char real[4096];
        if (!realpath(want, real))
            return pu_err_set(PU_ERR_IO, "sandbox: workdir %s: %s", want, strerror(errno));
        *out = pu_strdup(real);
    } else {
        const char *t = getenv("TMPDIR");
        char tmpl[4096];
        snprintf(tmpl, sizeof tmpl, "%s/puyu-sandbox-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tmpl))
            return pu_err_set(PU_ERR_IO, "sandbox: mkdtemp %s: %s", tmpl, strerror(errno));
        *out = pu_strdup(tmpl);
        *temp = true;
    }
    if (geteuid() == 0) {
        if (chown(*out, SBX_UID, SBX_UID) != 0)
            return pu_err_set(PU_ERR_IO, "sandbox: chown %s to %d: %s", *out, SBX_UID,
                              strerror(errno));
        /* bwrap runs as the sandbox uid and must reach the directory */
        char *p = pu_strdup(*out);
        for (char *sl = strrchr(p, '/'); sl && sl != p; sl = strrchr(p, '/')) {
            *sl = 0;
            struct stat st;
            if (stat(p, &st) == 0 && !(st.st_mode & S_IXOTH)) {
                pu_status e = pu_err_set(
                    PU_ERR_INVALID,
                    "sandbox: workdir %s: its parent %s is not searchable by uid %d (as root the "
                    "sandbox runs as nobody): chmod o+x %s or choose another directory",
                    *out, p, SBX_UID, p);
                pu_free(p);
                return e;
            }
        }
        pu_free(p);
    }
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* spawning                                                                  */

typedef struct sbx_proc {
    pid_t pid;
    int in_fd, out_fd, err_fd; /* parent ends */
    int req_fd, resp_fd;       /* session: parent ends (-1 otherwise) */
    int status_fd;             /* bwrap --json-status-fd, parent end (-1 when unsafe) */
    double t0;
} sbx_proc;

typedef struct argv_b {
    char **v;
    int n, cap;
} argv_b;

static void av_add(argv_b *a, const char *s) {
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = pu_realloc(a->v, (size_t)a->cap * sizeof(char *));
    }
    a->v[a->n++] = pu_strdup(s);
    a->v[a->n] = NULL;
}

static void av_free(argv_b *a) {
    for (int i = 0; i < a->n; i++)
        pu_free(a->v[i]);
    pu_free(a->v);
    memset(a, 0, sizeof *a);
}

static void close_fd(int *fd) {
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* move fd to >= 20 (close-on-exec) so the child's dup2 onto 0..7 cannot collide */
static int hi_fd(int fd) {
    if (fd < 0)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 20);
    close(fd);
    return h;
}

static void child_fd(int from, int to) {
    if (from < 0)
        return;
    dup2(from, to); /* clears FD_CLOEXEC on `to` */
}

static pu_status spawn(const sbx_cfg *c, const char *workdir, bool session, sbx_proc *p) {
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->in_fd = p->out_fd = p->err_fd = p->req_fd = p->resp_fd = p->status_fd = -1;
    if (!c->unsafe)
        PU_TRY(build_bpf());
    argv_b a = {0};
    char buf[4200];
    if (!c->unsafe) {
        av_add(&a, c->bwrap);
        const char *ro[] = {"--ro-bind", "/usr", "/usr"};
        for (int i = 0; i < 3; i++)
            av_add(&a, ro[i]);
        /* merged-/usr hosts: /bin, /lib, ... are symlinks into /usr */
        const char *top[] = {"bin", "sbin", "lib", "lib64", "lib32", "libx32"};
        for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
            char hp[64], lk[256];
            snprintf(hp, sizeof hp, "/%s", top[i]);
            ssize_t n = readlink(hp, lk, sizeof lk - 1);
            struct stat st;
            if (n > 0 && stat(hp, &st) == 0) {
                lk[n] = 0;
                av_add(&a, "--symlink");
                av_add(&a, lk);
                av_add(&a, hp);
            } else if (stat(hp, &st) == 0 && S_ISDIR(st.st_mode)) {
                av_add(&a, "--ro-bind");
                av_add(&a, hp);
                av_add(&a, hp);
            }
        }
        if (c->pyprefix[0]) {
            av_add(&a, "--ro-bind");
            av_add(&a, c->pyprefix);
            av_add(&a, c->pyprefix);
        }
        if (pu_file_exists("/etc/ld.so.cache")) {
            av_add(&a, "--ro-bind");
            av_add(&a, "/etc/ld.so.cache");
            av_add(&a, "/etc/ld.so.cache");
        }
        const char *rest[] = {"--proc",
                              "/proc",
                              "--dev",
                              "/dev",
                              "--unshare-all",
                              "--unshare-user",
                              "--disable-userns",
                              "--die-with-parent",
                              "--new-session",
                              "--hostname",
                              "sandbox",
                              "--cap-drop",
                              "ALL",
                              "--clearenv"};
        for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
            av_add(&a, rest[i]);
        snprintf(buf, sizeof buf, "%lld", (long long)c->max_file_mb << 20);
        av_add(&a, "--size");
        av_add(&a, buf);
        av_add(&a, "--tmpfs");
        av_add(&a, "/tmp");
        /* by fd: the directory opened here is the one mounted */
        av_add(&a, "--bind-fd");
        av_add(&a, "8");
        av_add(&a, "/work");
        av_add(&a, "--chdir");
        av_add(&a, "/work");
        const char *env[][2] = {{"PATH", "/usr/local/bin:/usr/bin:/bin"},
                                {"HOME", "/work"},
                                {"TMPDIR", "/tmp"},
                                {"LANG", "C.UTF-8"},
                                {"PYTHONIOENCODING", "utf-8"},
                                {"PYTHONDONTWRITEBYTECODE", "1"},
                                {"MPLBACKEND", "Agg"},
                                {"OMP_NUM_THREADS", "1"}};
        for (size_t i = 0; i < sizeof env / sizeof env[0]; i++) {
            av_add(&a, "--setenv");
            av_add(&a, env[i][0]);
            av_add(&a, env[i][1]);
        }
        av_add(&a, "--seccomp");
        av_add(&a, "5");
        av_add(&a, "--json-status-fd");
        av_add(&a, "6");
        av_add(&a, "--");
    }
    av_add(&a, c->python);
    av_add(&a, "-I"); /* isolated: no user site, no PYTHON* from outside, no cwd in path */
    if (session) {
        av_add(&a, "-c");
        av_add(&a, k_driver);
    } else {
        av_add(&a, "-");
    }
    /* the environment bwrap (or, unsafe, python) starts with */
    const char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin",
                          "HOME=/work",
                          "LANG=C.UTF-8",
                          "PYTHONIOENCODING=utf-8",
                          "PYTHONDONTWRITEBYTECODE=1",
                          "MPLBACKEND=Agg",
                          "OMP_NUM_THREADS=1",
                          NULL};
    char unsafe_home[4200];
    if (c->unsafe) {
        snprintf(unsafe_home, sizeof unsafe_home, "HOME=%s", workdir);
        envp[1] = unsafe_home;
    }

    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rq[2] = {-1, -1}, rs[2] = {-1, -1},
        stp[2] = {-1, -1}, ex[2] = {-1, -1};
    int bpf = -1, wdfd = -1;
    pu_status st = PU_OK;
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) ||
        pipe2(ex, O_CLOEXEC) || (session && (pipe2(rq, O_CLOEXEC) || pipe2(rs, O_CLOEXEC))) ||
        (!c->unsafe && pipe2(stp, O_CLOEXEC))) {
        st = pu_err_set(PU_ERR_IO, "sandbox: pipe: %s", strerror(errno));
        goto fail;
    }
    if (!c->unsafe && (wdfd = open(workdir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
        st = pu_err_set(PU_ERR_IO, "sandbox: workdir %s: %s", workdir, strerror(errno));
        goto fail;
    }
    if (!c->unsafe && (bpf = bpf_memfd()) < 0) {
        st = pu_err_set(PU_ERR_IO, "sandbox: memfd for the seccomp filter: %s", strerror(errno));
        goto fail;
    }
    int c_in = hi_fd(in[0]), c_out = hi_fd(out[1]), c_err = hi_fd(err[1]), c_rq = hi_fd(rq[0]),
        c_rs = hi_fd(rs[1]), c_st = hi_fd(stp[1]), c_ex = hi_fd(ex[1]), c_bpf = hi_fd(bpf),
        c_wd = hi_fd(wdfd);
    in[0] = out[1] = err[1] = rq[0] = rs[1] = stp[1] = ex[1] = bpf = wdfd = -1;
    struct rlimit rl_as = {(rlim_t)c->mem_mb << 20, (rlim_t)c->mem_mb << 20};
    struct rlimit rl_cpu = {(rlim_t)c->cpu_s, (rlim_t)c->cpu_s + 1};
    struct rlimit rl_np = {(rlim_t)c->max_procs, (rlim_t)c->max_procs};
    struct rlimit rl_nf = {(rlim_t)c->max_files, (rlim_t)c->max_files};
    struct rlimit rl_fs = {(rlim_t)c->max_file_mb << 20, (rlim_t)c->max_file_mb << 20};
    bool drop = geteuid() == 0;
    const char *exe = a.v[0];
    p->t0 = pu_time_now();
    pid_t pid = fork();
    if (pid == 0) {
        /* child: async-signal-safe calls only */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        child_fd(c_in, 0);
        child_fd(c_out, 1);
        child_fd(c_err, 2);
        child_fd(c_rq, 3);
        child_fd(c_rs, 4);
        child_fd(c_bpf, 5);
        child_fd(c_st, 6);
        child_fd(c_ex, 7);
        fcntl(7, F_SETFD, FD_CLOEXEC);
        child_fd(c_wd, 8);
        syscall(SYS_close_range, 9u, ~0u, 0u);
        if (c->unsafe && chdir(workdir) != 0)
            _exit(126);
        int e = 0;
        if (setrlimit(RLIMIT_AS, &rl_as) || setrlimit(RLIMIT_CPU, &rl_cpu) ||
            setrlimit(RLIMIT_NOFILE, &rl_nf) || setrlimit(RLIMIT_FSIZE, &rl_fs) ||
            setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0}))
            e = errno;
        /* RLIMIT_NPROC does not bind root: become nobody first */
        if (!e && drop && (setgroups(0, NULL) || setgid(SBX_UID) || setuid(SBX_UID)))
            e = errno;
        /* after setuid the process is not dumpable, which hides
         * /proc/self/fd (bwrap's --bind-fd reads it) */
        if (!e && drop)
            prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        if (!e && setrlimit(RLIMIT_NPROC, &rl_np))
            e = errno;
        if (!e) {
            execve(exe, a.v, (char **)envp);
            e = errno;
        }
        ssize_t w = write(7, &e, sizeof e);
        (void)w;
        _exit(127);
    }
    int fork_errno = errno;
    close(c_in);
    close(c_out);
    close(c_err);
    if (c_rq >= 0)
        close(c_rq);
    if (c_rs >= 0)
        close(c_rs);
    if (c_st >= 0)
        close(c_st);
    if (c_bpf >= 0)
        close(c_bpf);
    if (c_wd >= 0)
        close(c_wd);
    close(c_ex);
    if (pid < 0) {
        st = pu_err_set(PU_ERR_IO, "sandbox: fork: %s", strerror(fork_errno));
        goto fail;
    }
    p->pid = pid;
    int e = 0;
    ssize_t r;
    do
        r = read(ex[0], &e, sizeof e);
    while (r < 0 && errno == EINTR);
    close_fd(&ex[0]);
    if (r == (ssize_t)sizeof e) {
        waitpid(pid, NULL, 0);
        p->pid = -1;
        st =
            pu_err_set(c->unsafe ? PU_ERR_IO : PU_ERR_UNSUPPORTED, "sandbox: cannot start %s: %s%s",
                       exe, strerror(e), c->unsafe ? "" : " (refusing to run code unconfined)");
        goto fail;
    }
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->err_fd = err[0];
    p->req_fd = rq[1];
    p->resp_fd = rs[0];
    p->status_fd = stp[0];
    for (int *f = &p->in_fd; f <= &p->status_fd; f++)
        if (*f >= 0)
            fcntl(*f, F_SETFL, fcntl(*f, F_GETFL) | O_NONBLOCK);
    av_free(&a);
    return PU_OK;
fail:
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&err[i]);
        close_fd(&rq[i]);
        close_fd(&rs[i]);
        close_fd(&stp[i]);
        close_fd(&ex[i]);
    }
    close_fd(&bpf);
    close_fd(&wdfd);
    av_free(&a);
    return st;
}

static void proc_kill(sbx_proc *p) {
    if (p->pid > 0) {
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
    }
}

/* wait for the process; returns the wait status */
static int proc_reap(sbx_proc *p) {
    int ws = 0;
    if (p->pid > 0) {
        while (waitpid(p->pid, &ws, 0) < 0 && errno == EINTR)
            ;
        /* anything left in the group (unsafe mode has no PID namespace) */
        kill(-p->pid, SIGKILL);
    }
    p->pid = -1;
    return ws;
}

/* wait up to secs for the process to end by itself, then kill it; returns
 * the wait status */
static int proc_wait_bounded(sbx_proc *p, double secs) {
    double dl = pu_time_now() + secs;
    int ws = 0;
    while (p->pid > 0) {
        pid_t w = waitpid(p->pid, &ws, WNOHANG);
        if (w == p->pid) {
            kill(-p->pid, SIGKILL);
            p->pid = -1;
            return ws;
        }
        if (w < 0 && errno != EINTR) {
            p->pid = -1;
            return ws;
        }
        if (pu_time_now() > dl) {
            proc_kill(p);
            return proc_reap(p);
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return ws;
}

static void proc_close_fds(sbx_proc *p) {
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    close_fd(&p->req_fd);
    close_fd(&p->resp_fd);
    close_fd(&p->status_fd);
}

/* ------------------------------------------------------------------------ */
/* the I/O pump                                                              */

typedef struct cap_buf {
    pu_str s;
    uint64_t total;
    size_t cap;
} cap_buf;

static void cap_add(cap_buf *b, const char *d, size_t n) {
    b->total += n;
    if (b->s.len < b->cap) {
        size_t k = b->cap - b->s.len < n ? b->cap - b->s.len : n;
        pu_str_append(&b->s, d, k);
    }
}

typedef struct pump {
    const char *in;
    size_t in_len, in_off;
    cap_buf out, err;
    pu_str status;  /* bwrap's JSON status lines */
    pu_str resp;    /* session response line(s) */
    bool want_resp; /* stop when a full response line arrived */
    bool resp_eof;  /* response pipe closed */
    bool timed_out;
    double first_out; /* seconds since t0, -1 none */
} pump;

static int read_into(int *fd, void (*sink)(void *, const char *, size_t), void *ud) {
    char buf[65536];
    for (;;) {
        ssize_t r = read(*fd, buf, sizeof buf);
        if (r > 0) {
            sink(ud, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        close_fd(fd); /* EOF or error */
        return 1;
    }
}

static void sink_cap(void *ud, const char *d, size_t n) {
    cap_add(ud, d, n);
}
static void sink_str(void *ud, const char *d, size_t n) {
    pu_str_append(ud, d, n);
}

typedef struct out_sink {
    pump *pm;
    double t0;
} out_sink;

static void sink_out(void *ud, const char *d, size_t n) {
    out_sink *o = ud;
    if (o->pm->first_out < 0 && n)
        o->pm->first_out = pu_time_now() - o->t0;
    cap_add(&o->pm->out, d, n);
}

/* Run the pump until: (session) a full response line or EOF on resp;
 * (run) stdout + stderr EOF. Deadline: kill everything on expiry. */
static void pump_run_(sbx_proc *p, pump *pm, double deadline);

/* a program that exits before reading its input must not SIGPIPE the caller */
static void pump_run(sbx_proc *p, pump *pm, double deadline) {
    sigset_t old;
    pu_agent_sigpipe_block(&old);
    pump_run_(p, pm, deadline);
    pu_agent_sigpipe_restore(&old);
}

static void pump_run_(sbx_proc *p, pump *pm, double deadline) {
    out_sink os = {pm, p->t0};
    for (;;) {
        if (pm->want_resp &&
            (memchr(pm->resp.p ? pm->resp.p : "", '\n', pm->resp.len) || pm->resp_eof))
            break;
        if (!pm->want_resp && p->out_fd < 0 && p->err_fd < 0)
            break;
        struct pollfd fds[5];
        int nf = 0, idx_in = -1, idx_out = -1, idx_err = -1, idx_rs = -1, idx_st = -1;
        if (p->in_fd >= 0 && pm->in_off < pm->in_len) {
            idx_in = nf;
            fds[nf++] = (struct pollfd){p->in_fd, POLLOUT, 0};
        } else if (p->in_fd >= 0 && !pm->want_resp) {
            close_fd(&p->in_fd); /* whole program sent: EOF */
        }
        if (p->out_fd >= 0) {
            idx_out = nf;
            fds[nf++] = (struct pollfd){p->out_fd, POLLIN, 0};
        }
        if (p->err_fd >= 0) {
            idx_err = nf;
            fds[nf++] = (struct pollfd){p->err_fd, POLLIN, 0};
        }
        if (pm->want_resp && p->resp_fd >= 0) {
            idx_rs = nf;
            fds[nf++] = (struct pollfd){p->resp_fd, POLLIN, 0};
        }
        if (p->status_fd >= 0) {
            idx_st = nf;
            fds[nf++] = (struct pollfd){p->status_fd, POLLIN, 0};
        }
        double left = deadline - pu_time_now();
        if (left <= 0) {
            pm->timed_out = true;
            proc_kill(p);
            break;
        }
        int ms = (int)(left * 1000) + 1;
        int n = poll(fds, (nfds_t)nf, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        if (idx_in >= 0 && fds[idx_in].revents) {
            if (fds[idx_in].revents & (POLLERR | POLLHUP)) {
                close_fd(&p->in_fd);
            } else {
                ssize_t w = write(p->in_fd, pm->in + pm->in_off, pm->in_len - pm->in_off);
                if (w > 0)
                    pm->in_off += (size_t)w;
                else if (w < 0 && errno != EAGAIN && errno != EINTR)
                    close_fd(&p->in_fd);
            }
        }
        if (idx_out >= 0 && fds[idx_out].revents)
            read_into(&p->out_fd, sink_out, &os);
        if (idx_err >= 0 && fds[idx_err].revents)
            read_into(&p->err_fd, sink_cap, &pm->err);
        if (idx_rs >= 0 && fds[idx_rs].revents && read_into(&p->resp_fd, sink_str, &pm->resp))
            pm->resp_eof = true;
        if (idx_st >= 0 && fds[idx_st].revents)
            read_into(&p->status_fd, sink_str, &pm->status);
    }
    /* what is already in the pipes belongs to this call */
    if (p->out_fd >= 0)
        read_into(&p->out_fd, sink_out, &os);
    if (p->err_fd >= 0)
        read_into(&p->err_fd, sink_cap, &pm->err);
}

static void pump_init(pump *pm, const sbx_cfg *c) {
    memset(pm, 0, sizeof *pm);
    pm->out.cap = pm->err.cap = c->max_output;
    pm->first_out = -1;
}

static void pump_free(pump *pm) {
    pu_str_free(&pm->out.s);
    pu_str_free(&pm->err.s);
    pu_str_free(&pm->status);
    pu_str_free(&pm->resp);
}

static void pump_result(pump *pm, pu_sandbox_result *r) {
    r->out_len = pm->out.s.len;
    r->err_len = pm->err.s.len;
    r->out = pu_str_steal(&pm->out.s);
    r->err = pu_str_steal(&pm->err.s);
    r->out_total = pm->out.total;
    r->err_total = pm->err.total;
    r->out_truncated = pm->out.total > r->out_len;
    r->err_truncated = pm->err.total > r->err_len;
    r->timed_out = pm->timed_out;
    r->first_output_s = pm->first_out;
}

static int exit_code_of(int ws) {
    if (WIFEXITED(ws))
        return WEXITSTATUS(ws);
    if (WIFSIGNALED(ws))
        return 128 + WTERMSIG(ws);
    return -1;
}

static bool status_has_exit(const pu_str *s) {
    return s->p && strstr(s->p, "\"exit-code\"");
}

/* bwrap's first stderr line, for setup errors */
static pu_status setup_error(const char *errtext, const sbx_cfg *c) {
    const char *e = errtext ? errtext : "";
    int n = (int)strcspn(e, "\n");
    return pu_err_set(PU_ERR_UNSUPPORTED,
                      "sandbox: %s could not build the sandbox (namespaces refused?): %.*s "
                      "(refusing to run code unconfined; --unsafe-no-sandbox overrides)",
                      c->bwrap, n ? n : 20, n ? e : "no message");
}

/* ------------------------------------------------------------------------ */
/* public API                                                                */

void pu_sandbox_result_free(pu_sandbox_result *r) {
    if (!r)
        return;
    pu_free(r->out);
    pu_free(r->err);
    pu_free(r->error);
    for (int i = 0; i < r->n_files; i++)
        pu_free(r->files[i]);
    pu_free(r->files);
    memset(r, 0, sizeof *r);
}

void pu_sandbox_result_json(const pu_sandbox_result *r, pu_str *out) {
    pu_str_puts(out, "{\"stdout\": ");
    pu_str_json_string(out, r->out ? r->out : "", r->out_len);
    pu_str_puts(out, ", \"stderr\": ");
    pu_str_json_string(out, r->err ? r->err : "", r->err_len);
    pu_str_appendf(out,
                   ", \"exit_code\": %d, \"timed_out\": %s, \"killed\": %s, "
                   "\"stdout_truncated\": %s, \"stderr_truncated\": %s, \"files\": [",
                   r->exit_code, r->timed_out ? "true" : "false", r->killed ? "true" : "false",
                   r->out_truncated ? "true" : "false", r->err_truncated ? "true" : "false");
    for (int i = 0; i < r->n_files; i++) {
        if (i)
            pu_str_puts(out, ", ");
        pu_str_json_string(out, r->files[i], strlen(r->files[i]));
    }
    pu_str_putc(out, ']');
    if (r->error) {
        pu_str_puts(out, ", \"error\": ");
        pu_str_json_string(out, r->error, strlen(r->error));
    }
    pu_str_putc(out, '}');
}

static void finish_exit(pu_sandbox_result *r, int ws, const pump *pm, bool unsafe) {
    r->exit_code = exit_code_of(ws);
    if (r->timed_out) {
        r->killed = true;
        r->exit_code = 128 + SIGKILL;
    } else if (WIFSIGNALED(ws)) {
        r->killed = true;
    } else if (!unsafe && r->exit_code > 128 && r->exit_code <= 128 + 64) {
        /* bwrap reports a signalled child as 128+N */
        r->killed = true;
    }
    (void)pm;
}

static pu_status run_once(const pu_sandbox_opts *o, const char *code, size_t len,
                          pu_sandbox_result *r) {
    memset(r, 0, sizeof *r);
    double t_enter = pu_time_now();
    sbx_cfg c;
    PU_TRY(cfg_make(o, false, &c));
    char *wd = NULL;
    bool temp = false;
    PU_TRY(workdir_prepare(o ? o->workdir : NULL, &wd, &temp));
    snap before = {0}, after = {0};
    snap_take(&before, wd);
    double t0 = pu_time_now();
    sbx_proc p;
    pu_status st = spawn(&c, wd, false, &p);
    if (st == PU_OK) {
        pump pm;
        pump_init(&pm, &c);
        pm.in = code;
        pm.in_len = len;
        pump_run(&p, &pm, t0 + c.timeout_s);
        /* stdout/stderr closed: the program is ending; bound the wait too */
        double dl = t0 + c.timeout_s;
        while (p.pid > 0) {
            int ws;
            pid_t w = waitpid(p.pid, &ws, WNOHANG);
            if (w == p.pid) {
                p.pid = -1;
                if (p.status_fd >= 0)
                    read_into(&p.status_fd, sink_str, &pm.status);
                pump_result(&pm, r);
                if (r->first_output_s >= 0)
                    r->first_output_s += p.t0 - t_enter;
                finish_exit(r, ws, &pm, c.unsafe);
                break;
            }
            if (pu_time_now() > dl && !pm.timed_out) {
                pm.timed_out = true;
                proc_kill(&p);
            }
            if (p.status_fd >= 0)
                read_into(&p.status_fd, sink_str, &pm.status);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (!c.unsafe && !r->timed_out && !status_has_exit(&pm.status)) {
            st = setup_error(r->err, &c);
            pu_sandbox_result_free(r);
        }
        pump_free(&pm);
        proc_close_fds(&p);
    }
    if (st == PU_OK) {
        snap_take(&after, wd);
        snap_diff(&before, &after, r);
        r->wall_s = pu_time_now() - t0;
    }
    snap_free(&before);
    snap_free(&after);
    if (temp)
        rm_tree(wd);
    pu_free(wd);
    return st;
}

pu_status pu_sandbox_check(const pu_sandbox_opts *o) {
    pu_sandbox_opts q = o ? *o : (pu_sandbox_opts){0};
    q.unsafe_no_sandbox = false;
    q.workdir = NULL;
    if (q.timeout_s <= 0)
        q.timeout_s = 10;
    pu_sandbox_result r;
    PU_TRY(pu_sandbox_run(&q, "print('ok')\n", 12, &r));
    bool ok = r.exit_code == 0 && r.out && !strcmp(r.out, "ok\n");
    pu_status st = ok ? PU_OK
                      : pu_err_set(PU_ERR_UNSUPPORTED, "sandbox: probe failed (exit %d): %.200s",
                                   r.exit_code, r.err ? r.err : "");
    pu_sandbox_result_free(&r);
    return st;
}

/* ------------------------------------------------------------------------ */
/* sessions                                                                  */

struct pu_sandbox_session {
    sbx_cfg c;
    char *workdir;
    bool temp;
    sbx_proc p;
    bool alive;
    bool lost_state; /* the last interpreter died: tell the next call */
    int n_calls;
};

static pu_status session_start(pu_sandbox_session *s) {
    PU_TRY(spawn(&s->c, s->workdir, true, &s->p));
    close_fd(&s->p.in_fd); /* the program's stdin: EOF (requests go over fd 3) */
    pump pm;
    pump_init(&pm, &s->c);
    pm.want_resp = true;
    pump_run(&s->p, &pm, s->p.t0 + (s->c.timeout_s > 10 ? s->c.timeout_s : 10));
    pu_status st = PU_OK;
    if (!pm.resp.p || !strstr(pm.resp.p, "\"ready\"")) {
        proc_kill(&s->p);
        if (s->p.status_fd >= 0)
            read_into(&s->p.status_fd, sink_str, &pm.status);
        proc_reap(&s->p);
        proc_close_fds(&s->p);
        if (s->c.unsafe || status_has_exit(&pm.status))
            st = pu_err_set(PU_ERR_IO, "sandbox: the interpreter did not start: %.300s",
                            pm.err.s.p ? pm.err.s.p : "");
        else
            st = setup_error(pm.err.s.p, &s->c);
    } else {
        s->alive = true;
    }
    pump_free(&pm);
    return st;
}

static pu_status session_open_once(const pu_sandbox_opts *o, pu_sandbox_session **out) {
    *out = NULL;
    pu_sandbox_session *s = pu_calloc(1, sizeof *s);
    pu_status st = cfg_make(o, true, &s->c);
    if (st == PU_OK)
        st = workdir_prepare(o ? o->workdir : NULL, &s->workdir, &s->temp);
    if (st == PU_OK)
        st = session_start(s);
    if (st != PU_OK) {
        pu_sandbox_session_close(s);
        return st;
    }
    *out = s;
    return PU_OK;
}

const char *pu_sandbox_session_workdir(const pu_sandbox_session *s) {
    return s->workdir;
}

void pu_sandbox_session_set_timeout(pu_sandbox_session *s, double timeout_s) {
    if (timeout_s > 0)
        s->c.timeout_s = timeout_s;
}

static void session_stop(pu_sandbox_session *s) {
    if (!s->alive && s->p.pid <= 0)
        return;
    close_fd(&s->p.req_fd); /* the driver exits on EOF */
    proc_wait_bounded(&s->p, 0.2);
    proc_close_fds(&s->p);
    s->alive = false;
}

pu_status pu_sandbox_session_exec(pu_sandbox_session *s, const char *code, size_t len,
                                  pu_sandbox_result *r) {
    memset(r, 0, sizeof *r);
    bool restarted = false;
    if (!s->alive) {
        PU_TRY(session_start(s));
        restarted = s->lost_state;
        s->lost_state = false;
    }
    snap before = {0}, after = {0};
    snap_take(&before, s->workdir);
    double t0 = pu_time_now();
    s->p.t0 = t0;
    char hdr[32];
    int hn = snprintf(hdr, sizeof hdr, "%zu\n", len);
    pu_str req = {0};
    pu_str_append(&req, hdr, (size_t)hn);
    pu_str_append(&req, code, len);
    pump pm;
    pump_init(&pm, &s->c);
    pm.want_resp = true;
    /* the request goes over fd 3, not stdin: swap it in for the pump */
    int saved_in = s->p.in_fd;
    s->p.in_fd = s->p.req_fd;
    pm.in = req.p;
    pm.in_len = req.len;
    pump_run(&s->p, &pm, t0 + s->c.timeout_s);
    s->p.req_fd = s->p.in_fd;
    s->p.in_fd = saved_in;
    pu_str_free(&req);
    if (pm.in_off < pm.in_len && !pm.timed_out && !pm.resp_eof) {
        /* cannot happen: the pump only stops early on timeout or EOF */
        pm.resp_eof = true;
    }
    pump_result(&pm, r);
    s->n_calls++;
    pu_status st = PU_OK;
    json_t *j = NULL;
    if (!pm.timed_out && pm.resp.p && !pm.resp_eof)
        j = json_loads(pm.resp.p, JSON_DISABLE_EOF_CHECK, NULL);
    if (j) {
        json_t *e = json_object_get(j, "error");
        r->exit_code = json_is_true(json_object_get(j, "ok")) ? 0 : 1;
        if (json_is_string(e))
            r->error = pu_strdup(json_string_value(e));
        json_decref(j);
    } else {
        /* timeout, or the interpreter died (os._exit, rlimit, signal) */
        int ws = proc_wait_bounded(&s->p, pm.timed_out ? 0 : 1.0);
        if (s->p.status_fd >= 0)
            read_into(&s->p.status_fd, sink_str, &pm.status);
        proc_close_fds(&s->p);
        s->alive = false;
        s->lost_state = true;
        finish_exit(r, ws, &pm, s->c.unsafe);
        if (!pm.timed_out && pm.resp_eof && !s->c.unsafe && !status_has_exit(&pm.status) &&
            !WIFSIGNALED(ws)) {
            /* the sandbox itself failed (bwrap message on stderr) */
            st = setup_error(r->err, &s->c);
        }
    }
    if (restarted) {
        pu_str e = {0};
        pu_str_puts(&e, "[the interpreter was restarted after the previous call ended it; "
                        "variables were lost, files in the work dir were kept]\n");
        pu_str_append(&e, r->err, r->err_len);
        pu_free(r->err);
        r->err_len = e.len;
        r->err = pu_str_steal(&e);
    }
    pump_free(&pm);
    snap_take(&after, s->workdir);
    snap_diff(&before, &after, r);
    snap_free(&before);
    snap_free(&after);
    r->wall_s = pu_time_now() - t0;
    if (st != PU_OK)
        pu_sandbox_result_free(r);
    return st;
}

void pu_sandbox_session_close(pu_sandbox_session *s) {
    if (!s)
        return;
    session_stop(s);
    if (s->temp && s->workdir)
        rm_tree(s->workdir);
    pu_free(s->workdir);
    pu_free(s);
}

/* RLIMIT_NPROC counts the processes of the sandbox uid, and those of a
 * sandbox that just ended are still being torn down for a moment: after many
 * sandboxes in quick succession a fork inside bwrap can fail with EAGAIN.
 * That is transient, not a refusal of namespaces: retry with a short
 * backoff (at most ~0.6 s in all) before reporting it. */
static bool transient_fork_error(pu_status st) {
    return st == PU_ERR_UNSUPPORTED && strstr(pu_err_msg(), "Resource temporarily unavailable");
}

static void backoff(int attempt) {
    long ms = 5L << attempt; /* 5, 10, 20, ... 320 ms */
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

pu_status pu_sandbox_run(const pu_sandbox_opts *o, const char *code, size_t len,
                         pu_sandbox_result *r) {
    pu_status st = run_once(o, code, len, r);
    for (int a = 0; a < 7 && transient_fork_error(st); a++) {
        backoff(a);
        st = run_once(o, code, len, r);
    }
    return st;
}

pu_status pu_sandbox_session_open(const pu_sandbox_opts *o, pu_sandbox_session **out) {
    pu_status st = session_open_once(o, out);
    for (int a = 0; a < 7 && transient_fork_error(st); a++) {
        backoff(a);
        st = session_open_once(o, out);
    }
    return st;
}
