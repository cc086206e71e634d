/*
 * pu_core.h — the spine every puyu module links against.
 *
 * Owns: status codes and the thread-local error message, leveled logging,
 * checked allocation, arenas, the persistent compute thread pool, mmap and
 * whole-file I/O with atomic writes, growable strings, JSON helpers (over
 * jansson), progress bars, timing, CPU feature detection and a seeded RNG.
 *
 * Thread-safety: the error message is thread-local; logging is serialised by
 * a mutex; a pu_pool must be driven by one caller thread at a time; everything
 * else works on caller-owned objects.
 */
#ifndef PU_CORE_H
#define PU_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define PU_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define PU_NORETURN          __attribute__((noreturn))
#define PU_UNUSED            __attribute__((unused))
#define PU_LIKELY(x)         __builtin_expect(!!(x), 1)
#define PU_UNLIKELY(x)       __builtin_expect(!!(x), 0)
#else
#define PU_PRINTF(fmt, args)
#define PU_NORETURN
#define PU_UNUSED
#define PU_LIKELY(x)   (x)
#define PU_UNLIKELY(x) (x)
#endif

/* ------------------------------------------------------------------------ */
/* status codes + thread-local error message                                */

typedef enum {
    PU_OK = 0,
    PU_ERR_NOMEM,
    PU_ERR_IO,
    PU_ERR_FORMAT,
    PU_ERR_INVALID,
    PU_ERR_RANGE,
    PU_ERR_UNSUPPORTED,
    PU_ERR_CUDA,
    PU_ERR_CANCELLED,
    PU_ERR_INTERNAL,
} pu_status;

/* Short name of a status code ("format error", ...). Never NULL. */
const char *pu_status_str(pu_status s);

/* Record a message for the calling thread and return `code` unchanged, so
 * `return pu_err_set(PU_ERR_FORMAT, "%s: bad header", path);` reads well.
 * The message should name the file/field at fault and what was expected. */
pu_status pu_err_set_(pu_status code, const char *file, int line, const char *fmt, ...)
    PU_PRINTF(4, 5);
#define pu_err_set(code, ...) pu_err_set_((code), __FILE__, __LINE__, __VA_ARGS__)
/* Prepend context ("loading model X: ") to the current message; returns code. */
pu_status pu_err_prefix(pu_status code, const char *fmt, ...) PU_PRINTF(2, 3);
/* Last message set on this thread ("" when none). Borrowed until the next set. */
const char *pu_err_msg(void);
/* source location of the last message ("file.c:123"), "" when none */
const char *pu_err_where(void);
void pu_err_clear(void);

#define PU_TRY(expr)                                                                               \
    do {                                                                                           \
        pu_status pu_try_s_ = (expr);                                                              \
        if (pu_try_s_ != PU_OK)                                                                    \
            return pu_try_s_;                                                                      \
    } while (0)

/* Programmer errors only (broken invariants): message + abort in all builds. */
PU_NORETURN void pu_abort_(const char *file, int line, const char *cond);
#define PU_ASSERT(c)                                                                               \
    do {                                                                                           \
        if (PU_UNLIKELY(!(c)))                                                                     \
            pu_abort_(__FILE__, __LINE__, #c);                                                     \
    } while (0)
#ifdef PU_DEBUG
#define PU_DEBUG_ASSERT(c) PU_ASSERT(c)
#else
#define PU_DEBUG_ASSERT(c) ((void)0)
#endif

/* ------------------------------------------------------------------------ */
/* logging (stderr by default; stdout is reserved for program output)       */

typedef enum {
    PU_LOG_ERROR = 0,
    PU_LOG_WARN = 1,
    PU_LOG_INFO = 2,
    PU_LOG_DEBUG = 3,
    PU_LOG_TRACE = 4,
} pu_log_level;

typedef void (*pu_log_sink_fn)(pu_log_level level, const char *module, const char *msg, void *ud);

void pu_log_set_level(pu_log_level level);
pu_log_level pu_log_get_level(void);
/* Replace the sink (NULL restores stderr). Process-global, set once at start. */
void pu_log_set_sink(pu_log_sink_fn fn, void *ud);
/* Parse "error|warn|info|debug|trace"; returns -1 on unknown. */
int pu_log_level_parse(const char *s);
void pu_log_write_(pu_log_level level, const char *file, const char *fmt, ...) PU_PRINTF(3, 4);
/* Level is tested before the arguments are evaluated (redis serverLog). */
#define pu_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((int)(level) <= (int)pu_log_get_level())                                               \
            pu_log_write_((level), __FILE__, __VA_ARGS__);                                         \
    } while (0)
#define pu_log_error(...) pu_log(PU_LOG_ERROR, __VA_ARGS__)
#define pu_log_warn(...)  pu_log(PU_LOG_WARN, __VA_ARGS__)
#define pu_log_info(...)  pu_log(PU_LOG_INFO, __VA_ARGS__)
#define pu_log_debug(...) pu_log(PU_LOG_DEBUG, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* checked allocation                                                       */

/* pu_malloc & co never return NULL for n > 0: on failure they call the OOM
 * hook (default: log + abort). Use pu_try_* for request-sized allocations
 * that must fail softly (server), they return NULL and set PU_ERR_NOMEM. */
void *pu_malloc(size_t n);
void *pu_calloc(size_t count, size_t size);
void *pu_realloc(void *p, size_t n);
char *pu_strdup(const char *s);
char *pu_strndup(const char *s, size_t n);
void pu_free(void *p);
void *pu_try_malloc(size_t n);
void *pu_try_calloc(size_t count, size_t size);
void *pu_try_realloc(void *p, size_t n);
/* 64-byte aligned (or `align`, a power of two >= sizeof(void*)); free with pu_free_aligned. */
void *pu_malloc_aligned(size_t n, size_t align);
void *pu_try_malloc_aligned(size_t n, size_t align);
void pu_free_aligned(void *p);
typedef void (*pu_oom_fn)(size_t n);
void pu_set_oom_handler(pu_oom_fn fn);
/* bytes currently allocated through these wrappers (approximate, atomic) */
size_t pu_mem_used(void);

/* ------------------------------------------------------------------------ */
/* arena: bump allocator in 64-byte aligned chunks, grows by chaining blocks */

typedef struct pu_arena_block pu_arena_block;
typedef struct pu_arena {
    pu_arena_block *head; /* current block (newest) */
    size_t block_size;    /* default size of a new block */
    size_t total;         /* bytes handed out since init (for marks) */
} pu_arena;

void pu_arena_init(pu_arena *a, size_t block_size);
void pu_arena_deinit(pu_arena *a);
/* 64-byte aligned, zero-initialised memory valid until reset/deinit. */
void *pu_arena_alloc(pu_arena *a, size_t n);
char *pu_arena_strdup(pu_arena *a, const char *s);
typedef struct {
    pu_arena_block *block;
    size_t used;
} pu_arena_mark;
pu_arena_mark pu_arena_get_mark(const pu_arena *a);
void pu_arena_reset_to(pu_arena *a, pu_arena_mark m);
void pu_arena_reset(pu_arena *a);

/* ------------------------------------------------------------------------ */
/* persistent thread pool (caller participates as thread 0)                 */

typedef struct pu_pool pu_pool;
typedef void (*pu_pool_fn)(void *ctx, int ith, int nth);

/* n <= 0 means pu_threads_default(). A pool of 1 runs everything inline. */
pu_pool *pu_pool_create(int n);
void pu_pool_destroy(pu_pool *p);
int pu_pool_size(const pu_pool *p);
/* Run fn(ctx, ith, nth) on every thread of the pool and wait for all.
 * p may be NULL: runs fn(ctx, 0, 1) inline. Not re-entrant. */
void pu_pool_run(pu_pool *p, pu_pool_fn fn, void *ctx);
/* Same, with only the first `nth` threads (1 <= nth <= size). */
void pu_pool_run_n(pu_pool *p, int nth, pu_pool_fn fn, void *ctx);
/* Split [0, n) into nth near-equal ranges; range ith is [*lo, *hi). */
static inline void pu_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = n / nth, rem = n % nth;
    *lo = (int64_t)ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}
/* --threads > PUYU_THREADS > online cores (at least 1). */
int pu_threads_default(void);
/* Global default set by the CLI's --threads (0 = unset). */
void pu_threads_set_default(int n);

/* ------------------------------------------------------------------------ */
/* files                                                                    */

typedef struct pu_mmap {
    const void *data; /* read-only mapping (NULL for an empty file) */
    size_t size;
} pu_mmap;

/* Map a whole file read-only. Errors name the path. */
pu_status pu_mmap_open(pu_mmap *m, const char *path);
void pu_mmap_close(pu_mmap *m);

/* Read a whole file into a NUL-terminated owned buffer (free with pu_free). */
pu_status pu_file_read_all(const char *path, char **data, size_t *len);
/* Write atomically: temp file in the same directory, fsync, rename, fsync dir. */
pu_status pu_file_write_atomic(const char *path, const void *data, size_t len);
bool pu_file_exists(const char *path);
bool pu_dir_exists(const char *path);
/* Create a directory and its parents (mode 0755); ok if it exists. */
pu_status pu_mkdir_p(const char *path);
/* Join two path parts into an owned string. */
char *pu_path_join(const char *a, const char *b);

/* Streaming atomic writer: write to `tmp`, commit renames it over `path`. */
typedef struct pu_atomic_file {
    FILE *f;
    char *path;
    char *tmp;
} pu_atomic_file;
pu_status pu_atomic_open(pu_atomic_file *af, const char *path);
/* fflush + fsync + rename + fsync(dir); closes the file. */
pu_status pu_atomic_commit(pu_atomic_file *af);
/* Close and delete the temp file (safe after commit or on a zeroed struct). */
void pu_atomic_abort(pu_atomic_file *af);
/* Remove the temp files "<name>.tmp.<pid>.<n>" in dir whose writer (pid) is
 * no longer alive (a writer killed between create and rename); files of live
 * processes and of this process stay. *n_removed (may be NULL) counts them.
 * Call once at the start of a run that writes into dir. */
pu_status pu_sweep_stale_tmp(const char *dir, int *n_removed);

/* ------------------------------------------------------------------------ */
/* growable string                                                          */

typedef struct pu_str {
    char *p; /* NUL-terminated, owned (NULL until first append) */
    size_t len, cap;
} pu_str;

void pu_str_append(pu_str *s, const char *data, size_t n);
void pu_str_puts(pu_str *s, const char *z);
void pu_str_putc(pu_str *s, char c);
void pu_str_appendf(pu_str *s, const char *fmt, ...) PU_PRINTF(2, 3);
/* Append z as a JSON string literal (quotes + escapes; invalid UTF-8 -> U+FFFD). */
void pu_str_json_string(pu_str *s, const char *z, size_t n);
void pu_str_clear(pu_str *s);
void pu_str_free(pu_str *s);
/* Take ownership of the buffer (never NULL; "" when empty) and reset s. */
char *pu_str_steal(pu_str *s);

/* ------------------------------------------------------------------------ */
/* JSON (jansson underneath; these helpers give file/line/field errors)     */

typedef struct json_t json_t; /* jansson's type; include <jansson.h> to use it */

/* Parse a file; errors read "PATH:LINE:COL: message". Returns owned json_t. */
pu_status pu_json_load_file(const char *path, json_t **out);
/* Parse a buffer; `what` names the source in errors (e.g. "PATH line 12"). */
pu_status pu_json_loadb(const char *buf, size_t len, const char *what, json_t **out);
/* Typed field getters. `what` names the object in errors ("config.json").
 * A missing field with required=false leaves *out untouched and returns OK. */
pu_status pu_json_get_int(const json_t *obj, const char *key, int64_t *out, bool required,
                          const char *what);
pu_status pu_json_get_double(const json_t *obj, const char *key, double *out, bool required,
                             const char *what);
pu_status pu_json_get_bool(const json_t *obj, const char *key, bool *out, bool required,
                           const char *what);
/* *out borrowed from obj. */
pu_status pu_json_get_string(const json_t *obj, const char *key, const char **out,
                             bool required, const char *what);
void pu_json_decref(json_t *j);

/* ------------------------------------------------------------------------ */
/* progress bar (stderr; redraws at most ~10x/s; silent when not a tty      */
/* unless forced)                                                           */

typedef struct pu_progress {
    const char *label;
    int64_t total; /* 0 = unknown */
    int64_t done;
    double t_start, t_last;
    const char *unit; /* "tok", "doc", ... */
    bool enabled;
    bool drawn;
} pu_progress;

void pu_progress_init(pu_progress *p, const char *label, int64_t total, const char *unit);
/* Set absolute progress; `extra` (may be NULL) is appended to the line. */
void pu_progress_update(pu_progress *p, int64_t done, const char *extra);
void pu_progress_finish(pu_progress *p, const char *extra);

/* ------------------------------------------------------------------------ */
/* time, CPU, RNG, hashing                                                  */

double pu_time_now(void); /* monotonic seconds */

typedef enum { PU_SIMD_REF = 0, PU_SIMD_AVX2 = 1, PU_SIMD_AVX512 = 2 } pu_simd;
/* Best level the CPU supports. */
pu_simd pu_cpu_simd_best(void);
/* Level in force: PUYU_SIMD=ref|avx2|avx512 if set (clamped with a warning
 * when the CPU lacks it), else the best. */
pu_simd pu_cpu_simd_active(void);
const char *pu_simd_name(pu_simd s);
bool pu_cpu_has(const char *feature); /* "avx2", "fma", "f16c", "avx512f", "avx512bw", ... */
/* also "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8": CPUID
 * and the OS-enabled state in XCR0 (AMX: XTILECFG + XTILEDATA) */
/* Linux: ask once for this process's AMX tile-data permission
 * (arch_prctl ARCH_REQ_XCOMP_PERM); true when AMX tiles may be used. */
bool pu_cpu_amx_enable(void);

/* xoshiro256** — fast, seeded, reproducible across platforms. */
typedef struct pu_rng {
    uint64_t s[4];
} pu_rng;
void pu_rng_seed(pu_rng *r, uint64_t seed);
uint64_t pu_rng_u64(pu_rng *r);
/* uniform in [0, 1) with 24 bits (float) / 53 bits (double) */
float pu_rng_float(pu_rng *r);
double pu_rng_double(pu_rng *r);
/* standard normal (Box-Muller) */
double pu_rng_normal(pu_rng *r);

/* 64-bit FNV-1a; stable across runs. */
uint64_t pu_hash64(const void *data, size_t n);

/* ------------------------------------------------------------------------ */
/* half-precision conversions (exact, round-to-nearest-even)                */

static inline float pu_bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
uint16_t pu_f32_to_bf16(float f);
float pu_f16_to_f32(uint16_t h);
uint16_t pu_f32_to_f16(float f);

/* ------------------------------------------------------------------------ */
/* misc parsing helpers (strict: whole string, range checked)               */

pu_status pu_parse_i64(const char *s, int64_t *out, const char *what);
pu_status pu_parse_double(const char *s, double *out, const char *what);
/* Parse "1 2 3" / "1,2,3" into an owned int32 array. */
pu_status pu_parse_ids(const char *s, int32_t **ids, int64_t *n);

#endif /* PU_CORE_H */
