/*
 * io.c — memory maps, whole-file reads and atomic writes.
 *
 * Every output file puyu writes goes through pu_file_write_atomic or the
 * streaming pu_atomic_file: data lands in "<path>.tmp.<pid>.<n>" in the same
 * directory, is fsync'ed, renamed over the target and the directory fsync'ed,
 * so a crash leaves either the old file or the new one, never a torn one.
 */
#include "puyu/pu_core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

pu_status pu_mmap_open(pu_mmap *m, const char *path) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pu_err_set(PU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return pu_err_set(PU_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return pu_err_set(PU_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return pu_err_set(PU_ERR_IO, "%s: cannot mmap %lld bytes: %s", path,
                              (long long)st.st_size, strerror(e));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return PU_OK;
}

void pu_mmap_close(pu_mmap *m) {
    if (m->data)
        munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

pu_status pu_file_read_all(const char *path, char **data, size_t *len) {
    *data = NULL;
    if (len)
        *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return pu_err_set(PU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    pu_str s = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        pu_str_append(&s, buf, n);
    int err = ferror(f);
    fclose(f);
    if (err) {
        pu_str_free(&s);
        return pu_err_set(PU_ERR_IO, "%s: read error", path);
    }
    if (len)
        *len = s.len;
    *data = pu_str_steal(&s);
    return PU_OK;
}

static atomic_uint g_tmp_counter;

static char *tmp_name(const char *path) {
    pu_str s = {0};
    pu_str_appendf(&s, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&g_tmp_counter, 1));
    return pu_str_steal(&s);
}

static void fsync_dir_of(const char *path) {
    char *dir = pu_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = 0;
    else
        strcpy(dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    pu_free(dir);
}

pu_status pu_atomic_open(pu_atomic_file *af, const char *path) {
    af->f = NULL;
    af->path = pu_strdup(path);
    af->tmp = tmp_name(path);
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        pu_status s = pu_err_set(PU_ERR_IO, "%s: cannot create temp file %s: %s", path, af->tmp,
                                 strerror(errno));
        pu_free(af->path);
        pu_free(af->tmp);
        af->path = af->tmp = NULL;
        return s;
    }
    return PU_OK;
}

pu_status pu_atomic_commit(pu_atomic_file *af) {
    if (!af->f)
        return pu_err_set(PU_ERR_INVALID, "atomic file not open");
    pu_status st = PU_OK;
    if (fflush(af->f) != 0 || ferror(af->f))
        st = pu_err_set(PU_ERR_IO, "%s: write failed: %s", af->path, strerror(errno));
    else if (fsync(fileno(af->f)) != 0)
        st = pu_err_set(PU_ERR_IO, "%s: fsync failed: %s", af->path, strerror(errno));
    if (fclose(af->f) != 0 && st == PU_OK)
        st = pu_err_set(PU_ERR_IO, "%s: close failed: %s", af->path, strerror(errno));
    af->f = NULL;
    if (st == PU_OK && rename(af->tmp, af->path) != 0)
        st = pu_err_set(PU_ERR_IO, "%s: rename from %s failed: %s", af->path, af->tmp,
                        strerror(errno));
    if (st != PU_OK)
        unlink(af->tmp);
    else
        fsync_dir_of(af->path);
    pu_free(af->path);
    pu_free(af->tmp);
    af->path = af->tmp = NULL;
    return st;
}

void pu_atomic_abort(pu_atomic_file *af) {
    if (af->f) {
        fclose(af->f);
        af->f = NULL;
    }
    if (af->tmp)
        unlink(af->tmp);
    pu_free(af->path);
    pu_free(af->tmp);
    af->path = af->tmp = NULL;
}

pu_status pu_file_write_atomic(const char *path, const void *data, size_t len) {
    pu_atomic_file af;
    PU_TRY(pu_atomic_open(&af, path));
    if (len && fwrite(data, 1, len, af.f) != len) {
        pu_status s = pu_err_set(PU_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        pu_atomic_abort(&af);
        return s;
    }
    return pu_atomic_commit(&af);
}

bool pu_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool pu_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

pu_status pu_mkdir_p(const char *path) {
    char *p = pu_strdup(path);
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == 0) {
            char c = p[i];
            p[i] = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                pu_status s = pu_err_set(PU_ERR_IO, "%s: cannot create directory: %s", p,
                                         strerror(errno));
                pu_free(p);
                return s;
            }
            p[i] = c;
        }
    }
    pu_free(p);
    if (!pu_dir_exists(path))
        return pu_err_set(PU_ERR_IO, "%s: exists and is not a directory", path);
    return PU_OK;
}

char *pu_path_join(const char *a, const char *b) {
    pu_str s = {0};
    pu_str_puts(&s, a);
    if (s.len && s.p[s.len - 1] != '/')
        pu_str_putc(&s, '/');
    pu_str_puts(&s, b);
    return pu_str_steal(&s);
}

/* "<anything>.tmp.<pid>.<n>" with pid and n all digits: the pid, else -1. */
static long tmp_owner(const char *name) {
    size_t len = strlen(name);
    size_t i = len;
    while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
        i--;
    if (i == len || i == 0 || name[i - 1] != '.')
        return -1;
    size_t pid_end = i - 1, j = pid_end;
    while (j > 0 && name[j - 1] >= '0' && name[j - 1] <= '9')
        j--;
    if (j == pid_end || j < 5 || memcmp(name + j - 5, ".tmp.", 5) != 0 || j == 5)
        return -1;
    if (pid_end - j > 9)
        return -1;
    long pid = 0;
    for (size_t k = j; k < pid_end; k++)
        pid = pid * 10 + (name[k] - '0');
    return pid;
}

pu_status pu_sweep_stale_tmp(const char *dir, int *n_removed) {
    if (n_removed)
        *n_removed = 0;
    DIR *d = opendir(dir);
    if (!d)
        return pu_err_set(PU_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    pu_status st = PU_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = tmp_owner(e->d_name);
        if (pid <= 0 || pid == (long)getpid())
            continue;
        /* alive (or owned by someone we may not signal): leave it alone */
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char *p = pu_path_join(dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            if (unlink(p) == 0) {
                if (n_removed)
                    (*n_removed)++;
            } else if (errno != ENOENT && st == PU_OK) {
                st = pu_err_set(PU_ERR_IO, "%s: cannot remove stale temp file: %s", p,
                                strerror(errno));
            }
        }
        pu_free(p);
    }
    closedir(d);
    return st;
}
