/*
 * dp.c — data parallelism over MPI (see include/puyu/pu_dp.h): process
 * ranks, collectives, and the bucketed gradient all-reduce that the backward
 * pass drives through its "entries are final" hook.
 *
 * Everything MPI is behind #ifdef PU_MPI; without it (and in an MPI build
 * not started by a launcher) the process is rank 0 of 1 and every collective
 * returns at once. MPI errors are returned (MPI_ERRORS_RETURN on the world
 * communicator) as PU_ERR_IO with MPI's own message.
 *
 * Determinism: a bucket's sum is whatever order MPI adds the ranks' values
 * in; for 2 ranks a+b == b+a, and OpenMPI's ring / recursive-doubling
 * algorithms give every rank the same bits. run.c checks that the weights
 * still agree between ranks at every checkpoint (pu_dp_check_same), so a
 * library that broke this would be caught, not silently diverge.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PU_MPI
#include <mpi.h>
#endif

#include "puyu/pu_dp.h"
#include "train/train_impl.h"

static int g_rank = 0, g_size = 1;
static bool g_inited = false; /* pu_dp_init ran */
#ifdef PU_MPI
static bool g_mpi = false; /* we called MPI_Init_thread */
#endif

bool pu_dp_compiled(void) {
#ifdef PU_MPI
    return true;
#else
    return false;
#endif
}

/* number of processes a launcher says it started (0: no launcher) */
static long launcher_size(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strtol(v, NULL, 10);
    }
    if (getenv("PMIX_RANK"))
        return 1; /* PMIx without a size variable: let MPI tell */
    return 0;
}

#ifdef PU_MPI
static pu_status mpi_err(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        len = 0;
    msg[len] = 0;
    return pu_err_set(PU_ERR_IO, "data parallel: %s failed on rank %d of %d: %s", what, g_rank,
                      g_size, len ? msg : "unknown MPI error");
}
#define MPI_TRY(call, what)                  \
    do {                                     \
        int mpi_rc_ = (call);                \
        if (mpi_rc_ != MPI_SUCCESS)          \
            return mpi_err(mpi_rc_, (what)); \
    } while (0)
#endif

pu_status pu_dp_init(int *argc, char ***argv) {
    if (g_inited)
        return PU_OK;
    long n = launcher_size();
    const char *force = getenv("PUYU_MPI");
    bool want = n > 0 || (force && !strcmp(force, "1"));
#ifdef PU_MPI
    if (want) {
        int provided = 0, already = 0;
        MPI_Initialized(&already);
        if (!already) {
            int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
            if (rc != MPI_SUCCESS)
                return pu_err_set(PU_ERR_IO, "data parallel: MPI_Init_thread failed (code %d)", rc);
            g_mpi = true;
            if (provided < MPI_THREAD_FUNNELED)
                pu_log_warn("data parallel: the MPI library provides thread level %d < "
                            "MPI_THREAD_FUNNELED; continuing (MPI is only called from the "
                            "main thread)",
                            provided);
        }
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    }
#else
    (void)argc;
    (void)argv;
    (void)want;
    if (n > 1)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "data parallel: started by an MPI launcher as %ld processes, but this "
                          "puyu was built without MPI (rebuild with `make MPI=1`)",
                          n);
#endif
    g_inited = true;
    return PU_OK;
}

void pu_dp_finalize(void) {
#ifdef PU_MPI
    if (g_mpi) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin)
            MPI_Finalize();
        g_mpi = false;
    }
#endif
    g_rank = 0;
    g_size = 1;
    g_inited = false;
}

void pu_dp_abort(int code) {
#ifdef PU_MPI
    if (g_mpi && g_size > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)code;
#endif
}

int pu_dp_rank(void) {
    return g_rank;
}
int pu_dp_size(void) {
    return g_size;
}
bool pu_dp_is_root(void) {
    return g_rank == 0;
}

pu_status pu_dp_barrier(void) {
#ifdef PU_MPI
    if (g_size > 1)
        MPI_TRY(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
    return PU_OK;
}

/* MPI counts are int: large buffers go in chunks */
#define CHUNK (1 << 28)

pu_status pu_dp_bcast_bytes(void *buf, int64_t n, int root) {
#ifdef PU_MPI
    if (g_size > 1)
        for (int64_t o = 0; o < n; o += CHUNK) {
            int c = (int)(n - o < CHUNK ? n - o : CHUNK);
            MPI_TRY(MPI_Bcast((char *)buf + o, c, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
        }
#else
    (void)buf, (void)n, (void)root;
#endif
    return PU_OK;
}

pu_status pu_dp_bcast_f32(float *buf, int64_t n, int root) {
#ifdef PU_MPI
    if (g_size > 1)
        for (int64_t o = 0; o < n; o += CHUNK) {
            int c = (int)(n - o < CHUNK ? n - o : CHUNK);
            MPI_TRY(MPI_Bcast(buf + o, c, MPI_FLOAT, root, MPI_COMM_WORLD), "MPI_Bcast");
        }
#else
    (void)buf, (void)n, (void)root;
#endif
    return PU_OK;
}

pu_status pu_dp_allreduce_f64(double *v, int n) {
#ifdef PU_MPI
    if (g_size > 1)
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce(double)");
#else
    (void)v, (void)n;
#endif
    return PU_OK;
}

pu_status pu_dp_allreduce_i64(int64_t *v, int n) {
#ifdef PU_MPI
    if (g_size > 1)
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce(int64)");
#else
    (void)v, (void)n;
#endif
    return PU_OK;
}

pu_status pu_dp_check_same(const void *p, size_t n, const char *what) {
#ifdef PU_MPI
    if (g_size > 1) {
        uint64_t h = pu_hash64(p, n), lo = h, hi = h;
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD),
                "MPI_Allreduce(min)");
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD),
                "MPI_Allreduce(max)");
        if (lo != hi)
            return pu_err_set(PU_ERR_INTERNAL,
                              "data parallel: ranks disagree on %s (rank %d hash %016llx, min "
                              "%016llx, max %016llx)",
                              what, g_rank, (unsigned long long)h, (unsigned long long)lo,
                              (unsigned long long)hi);
    }
#else
    (void)p, (void)n, (void)what;
#endif
    return PU_OK;
}

/* ---------------------------------------------------------------- ZeRO-1 shards */

void pu_dp_shard_range(int64_t n, int rank, int size, int64_t *lo, int64_t *hi) {
    if (size <= 1) {
        *lo = 0, *hi = n;
        return;
    }
    int64_t blocks = (n + 15) / 16, b0, b1; /* 16-float pieces (64-byte aligned) */
    pu_split(blocks, rank, size, &b0, &b1);
    *lo = b0 * 16 < n ? b0 * 16 : n;
    *hi = b1 * 16 < n ? b1 * 16 : n;
}

#ifdef PU_MPI
/* counts / displacements of every rank's shard of n floats (as int) */
static pu_status shard_counts(int64_t n, int **counts, int **displs) {
    if (n > INT_MAX)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "data parallel: ZeRO-1 over a slab of %lld floats (> 2^31) is not "
                          "supported",
                          (long long)n);
    *counts = pu_malloc((size_t)g_size * sizeof(int));
    *displs = pu_malloc((size_t)g_size * sizeof(int));
    for (int r = 0; r < g_size; r++) {
        int64_t lo, hi;
        pu_dp_shard_range(n, r, g_size, &lo, &hi);
        (*counts)[r] = (int)(hi - lo);
        (*displs)[r] = (int)lo;
    }
    return PU_OK;
}
#endif

pu_status pu_dp_allgather_shards_f32(float *buf, int64_t n) {
#ifdef PU_MPI
    if (g_size > 1) {
        int *cnt = NULL, *dsp = NULL;
        PU_TRY(shard_counts(n, &cnt, &dsp));
        int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, dsp, MPI_FLOAT,
                                MPI_COMM_WORLD);
        pu_free(cnt);
        pu_free(dsp);
        if (rc != MPI_SUCCESS)
            return mpi_err(rc, "MPI_Allgatherv");
    }
#else
    (void)buf, (void)n;
#endif
    return PU_OK;
}

pu_status pu_dp_gather_shards_f32(const float *part, float *full, int64_t n, int root) {
#ifdef PU_MPI
    if (g_size > 1) {
        int *cnt = NULL, *dsp = NULL;
        PU_TRY(shard_counts(n, &cnt, &dsp));
        int rc = MPI_Gatherv(part, cnt[g_rank], MPI_FLOAT, full, cnt, dsp, MPI_FLOAT, root,
                             MPI_COMM_WORLD);
        pu_free(cnt);
        pu_free(dsp);
        if (rc != MPI_SUCCESS)
            return mpi_err(rc, "MPI_Gatherv");
        return PU_OK;
    }
#else
    (void)root;
#endif
    if (full != part)
        memcpy(full, part, (size_t)n * sizeof(float));
    return PU_OK;
}

/* ---------------------------------------------------------------- buckets */

struct pu_dp_grads {
    pu_tmodel *m;
    float *g;
    pu_dp_bucket *b; /* b[0] covers the last table entries (finished first) */
    int nb;
    bool *started;
#ifdef PU_MPI
    MPI_Request *req;
#endif
    bool armed;
    pu_status err; /* a start that failed inside the hook (reported by finish) */
    char errmsg[256];
    bool *final; /* (table entries) gradient final in the armed backward */
    int np;
    pu_dp_stats st;
};

pu_status pu_dp_grads_create(pu_tmodel *m, int64_t bucket_bytes, pu_dp_grads **out) {
    *out = NULL;
    if (bucket_bytes <= 0)
        bucket_bytes = 16 << 20;
    int np = pu_tmodel_n_params(m);
    int64_t total = pu_tmodel_numel(m);
    pu_dp_grads *g = pu_calloc(1, sizeof *g);
    g->m = m;
    g->g = pu_tmodel_grads(m);
    g->b = pu_calloc((size_t)(np > 0 ? np : 1), sizeof *g->b);
    int end = np;
    while (end > 0) {
        int first = end - 1;
        int64_t end_off = end < np ? pu_tmodel_param(m, end)->offset : total;
        /* close the bucket once it reaches bucket_bytes (as torch DDP) */
        while (first > 0 && (end_off - pu_tmodel_param(m, first)->offset) * (int64_t)sizeof(float) <
                                bucket_bytes)
            first--;
        pu_dp_bucket *b = &g->b[g->nb++];
        b->first = first;
        b->end = end;
        b->offset = pu_tmodel_param(m, first)->offset;
        b->numel = end_off - b->offset;
        if (b->numel > INT_MAX) {
            pu_status s = pu_err_set(PU_ERR_UNSUPPORTED,
                                     "data parallel: tensor '%s' has %lld floats, more than one "
                                     "MPI message holds (%d)",
                                     pu_tmodel_param(m, first)->name, (long long)b->numel, INT_MAX);
            pu_dp_grads_destroy(g);
            return s;
        }
        end = first;
    }
    g->started = pu_calloc((size_t)(g->nb ? g->nb : 1), sizeof *g->started);
#ifdef PU_MPI
    g->req = pu_malloc((size_t)(g->nb ? g->nb : 1) * sizeof *g->req);
    for (int i = 0; i < g->nb; i++)
        g->req[i] = MPI_REQUEST_NULL;
#endif
    g->st.n_buckets = g->nb;
    g->np = np;
    g->final = pu_calloc((size_t)(np > 0 ? np : 1), sizeof *g->final);
    *out = g;
    return PU_OK;
}

void pu_dp_grads_destroy(pu_dp_grads *g) {
    if (!g)
        return;
#ifdef PU_MPI
    if (g->req && g_size > 1) /* an error path left reductions in flight */
        for (int i = 0; i < g->nb; i++)
            if (g->req[i] != MPI_REQUEST_NULL)
                MPI_Wait(&g->req[i], MPI_STATUS_IGNORE);
    pu_free(g->req);
#endif
    pu_free(g->started);
    pu_free(g->final);
    pu_free(g->b);
    pu_free(g);
}

int pu_dp_grads_n_buckets(const pu_dp_grads *g) {
    return g->nb;
}
const pu_dp_bucket *pu_dp_grads_bucket(const pu_dp_grads *g, int i) {
    return i >= 0 && i < g->nb ? &g->b[i] : NULL;
}
pu_dp_stats pu_dp_grads_stats(const pu_dp_grads *g) {
    return g->st;
}

void pu_dp_grads_begin(pu_dp_grads *g) {
    g->armed = true;
    memset(g->final, 0, (size_t)g->np * sizeof *g->final);
}

#ifdef PU_MPI
static pu_status start_bucket(pu_dp_grads *g, int i) {
    pu_dp_bucket *b = &g->b[i];
    g->started[i] = true;
    MPI_TRY(MPI_Iallreduce(MPI_IN_PLACE, g->g + b->offset, (int)b->numel, MPI_FLOAT, MPI_SUM,
                           MPI_COMM_WORLD, &g->req[i]),
            "MPI_Iallreduce(gradient bucket)");
    return PU_OK;
}
#endif

void pu_dp_grads_ready(void *ctx, int first, int end) {
    pu_dp_grads *g = ctx;
    if (!g || !g->armed || g->err || g_size <= 1)
        return;
    for (int i = first < 0 ? 0 : first; i < end && i < g->np; i++)
        g->final[i] = true;
#ifdef PU_MPI
    int active = 0;
    for (int i = 0; i < g->nb; i++) {
        bool all = !g->started[i];
        for (int e = g->b[i].first; all && e < g->b[i].end; e++)
            all = g->final[e];
        if (all) {
            if (start_bucket(g, i) != PU_OK) { /* finish reports it */
                g->err = PU_ERR_IO;
                snprintf(g->errmsg, sizeof g->errmsg, "%s", pu_err_msg());
                break;
            }
            g->st.early++;
        }
        active += g->started[i];
    }
    if (active) { /* let the in-flight collectives progress (no MPI progress thread) */
        int done = 0;
        MPI_Testall(g->nb, g->req, &done, MPI_STATUSES_IGNORE);
    }
#endif
}

pu_status pu_dp_grads_finish(pu_dp_grads *g) {
    g->armed = false;
    g->st.steps++;
    if (g_size <= 1)
        return PU_OK;
#ifdef PU_MPI
    double t0 = pu_time_now();
    pu_status s = g->err ? pu_err_set(g->err, "%s", g->errmsg) : PU_OK;
    g->err = PU_OK;
    for (int i = 0; i < g->nb && s == PU_OK; i++)
        if (!g->started[i])
            s = start_bucket(g, i);
    int rc = MPI_Waitall(g->nb, g->req, MPI_STATUSES_IGNORE);
    if (s == PU_OK && rc != MPI_SUCCESS)
        s = mpi_err(rc, "MPI_Waitall(gradient buckets)");
    for (int i = 0; i < g->nb; i++) {
        g->started[i] = false;
        g->req[i] = MPI_REQUEST_NULL;
    }
    g->st.total += g->nb;
    g->st.wait_s += pu_time_now() - t0;
    return s;
#else
    return PU_OK;
#endif
}
