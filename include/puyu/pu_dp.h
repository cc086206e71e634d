/*
 * pu_dp.h — data-parallel training over MPI (`make MPI=1`, `mpirun -np N
 * puyu train ...`): process ranks, collectives on plain buffers, and the
 * bucketed gradient all-reduce that overlaps the backward pass.
 *
 * Builds. With -DPU_MPI (make MPI=1) this is OpenMPI/any MPI-3 library;
 * without it every function is the single-rank version (rank 0 of 1,
 * reductions are no-ops), so callers never need an #ifdef. Even an MPI build
 * only initialises MPI when a launcher started the process (OMPI_COMM_WORLD_
 * SIZE, PMI_SIZE or PMIX_RANK in the environment, or PUYU_MPI=1): a plain
 * `./puyu train` stays a single process with no MPI start-up cost. A non-MPI
 * build started by mpirun with N > 1 processes is an error (it would run N
 * independent copies writing the same directory).
 *
 * Threads: MPI_THREAD_FUNNELED. Every MPI call is made by the thread that
 * called pu_dp_init (the pu_pool caller); pool workers never touch MPI.
 *
 * Data-parallel step (src/train/run.c). The GLOBAL batch B of a step is the
 * same as one process's: every rank draws the same B windows from the same
 * data RNG (so the RNG state, checkpoints and resume are rank-independent),
 * counts the targets of all B (grad_scale = 1 / global count, known locally),
 * and runs forward/backward only on its contiguous share pu_split(B, rank,
 * size) of the sequences. The summed gradient is then exactly the single
 * process's up to the order of fp32 additions; loss sums (double) and target
 * counts are all-reduced so every rank logs the same global mean loss; the
 * global gradient norm for clipping is computed from the all-reduced slab, so
 * it is identical on every rank and needs no extra collective. Only rank 0
 * writes metrics, checkpoints and the progress line; every rank reads a
 * checkpoint on --resume, and rank 0's parameters (and moments) are then
 * broadcast so all ranks start bitwise identical.
 *
 * Bucketed all-reduce overlapped with backward (pu_dp_grads). The gradient
 * slab is one contiguous fp32 buffer in parameter-table order and backward
 * finishes table entries in REVERSE order (output, final norm, layer L-1 ...
 * layer 0, embedding). Buckets are runs of consecutive table entries (from
 * the end) of about bucket_bytes each, i.e. contiguous slab ranges. The
 * model's backward calls a hook "entries [first, end) are final" after each
 * layer (pu_tmodel_set_grad_hook); pu_dp_grads_ready marks those entries and
 * starts MPI_Iallreduce (in place, MPI_SUM) on every bucket whose entries are
 * now all final (any order works), then pokes MPI (MPI_Testall) so the collectives make
 * progress while the next layer's backward computes. pu_dp_grads_finish
 * starts what is left and waits for all before the optimizer. With gradient
 * accumulation the hook is armed (pu_dp_grads_begin) only for the step's last
 * micro-batch. Without a hook, finish alone is the plain bucketed all-reduce
 * after backward.
 *
 * ZeRO-1 (built: `--zero 1`, run.c). What is built differs from the plan
 * below in one point: the gradient still goes through the bucketed
 * all-reduce (every rank holds the summed gradient, so the clip norm needs
 * no extra collective); then rank r updates only its slab range
 * pu_dp_shard_range(numel, r, size) with moments sized to it
 * (pu_adamw_init_range: 1/size of the optimizer memory) and
 * pu_dp_allgather_shards_f32 returns the updated weights to every rank.
 * Checkpoints gather the moment shards to rank 0 (pu_dp_gather_shards_f32),
 * so train_state.safetensors keeps the rank-independent layout; on resume
 * each rank reads its range. Losses equal plain data parallelism bitwise
 * (AdamW is elementwise). Reduce-scatter instead of all-reduce (halving the
 * gradient traffic) is not done.
 *
 * The original plan (optimizer-state sharding): AdamW is
 * elementwise over the slab, so the moments can be sharded by SLAB RANGES.
 * Rank r owns the range [lo_r, hi_r) = pu_split of each bucket into `size`
 * 16-float-aligned pieces. Instead of MPI_Iallreduce a bucket then gets
 * MPI_Ireduce_scatter (counts = the piece lengths): each rank receives the
 * summed gradient of its pieces only. The clip norm becomes the all-reduce
 * (pu_dp_allreduce_f64) of each rank's sum of squares over its pieces; each
 * rank runs the AdamW update on its pieces with moments sized to them (1/size
 * of the memory; the weight-decay mask is looked up per table entry
 * intersecting a piece), and an MPI_Iallgather per bucket (the same counts)
 * returns the updated fp32 weights to every rank. Checkpoints gather the
 * moment pieces to rank 0 (MPI_Gatherv) so train_state.safetensors keeps its
 * rank-independent layout. The bucket plan below (first/end entry, slab
 * offset/length) is already the unit of that schedule.
 */
#ifndef PU_DP_H
#define PU_DP_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_train.h"

/* true when this build has MPI (compiled with -DPU_MPI) */
bool pu_dp_compiled(void);

/* Start MPI when a launcher started this process (see the header comment);
 * otherwise single rank. Idempotent. argc/argv may be NULL. Errors: MPI init
 * failure, or an mpirun launch of N > 1 processes of a non-MPI build. */
pu_status pu_dp_init(int *argc, char ***argv);
/* MPI_Finalize if pu_dp_init started MPI. After it the process is rank 0 of 1. */
void pu_dp_finalize(void);
/* For the CLI only, after an error on some rank: MPI_Abort(code) so that the
 * other ranks do not hang in a collective. No-op for a single rank. */
void pu_dp_abort(int code);

int pu_dp_rank(void);
int pu_dp_size(void);
/* rank 0 (the one that writes files and logs) */
bool pu_dp_is_root(void);

pu_status pu_dp_barrier(void);
/* broadcast n floats / bytes from rank root to all ranks (in place) */
pu_status pu_dp_bcast_f32(float *buf, int64_t n, int root);
pu_status pu_dp_bcast_bytes(void *buf, int64_t n, int root);
/* in-place element-wise sums over ranks */
pu_status pu_dp_allreduce_f64(double *v, int n);
pu_status pu_dp_allreduce_i64(int64_t *v, int n);
/* PU_ERR_INTERNAL naming `what` when the n bytes at p differ between ranks
 * (compared by a 64-bit hash: all-reduce of its min and max). */
pu_status pu_dp_check_same(const void *p, size_t n, const char *what);

/* ------------------------------------------------------------------------ */
/* ZeRO-1: optimizer state sharded by slab ranges                           */

/* Rank's range [lo, hi) of a slab of n floats: size pieces of whole
 * 16-float blocks (pu_split of the blocks), covering [0, n) in rank order. */
void pu_dp_shard_range(int64_t n, int rank, int size, int64_t *lo, int64_t *hi);
/* In place: every rank contributes buf[its range], all receive every range
 * (MPI_Allgatherv). Single rank: no-op. */
pu_status pu_dp_allgather_shards_f32(float *buf, int64_t n);
/* part = this rank's range (hi - lo floats); root receives the whole slab
 * of n floats in full (others may pass NULL). Single rank: a copy. */
pu_status pu_dp_gather_shards_f32(const float *part, float *full, int64_t n, int root);

/* ------------------------------------------------------------------------ */
/* bucketed gradient all-reduce                                             */

typedef struct pu_dp_grads pu_dp_grads;

typedef struct pu_dp_bucket {
    int first, end;        /* table entries [first, end) */
    int64_t offset, numel; /* slab range in floats */
} pu_dp_bucket;

typedef struct pu_dp_stats {
    int n_buckets;
    int64_t steps; /* pu_dp_grads_finish calls */
    int64_t early; /* buckets started by the hook (during backward) */
    int64_t total; /* buckets all-reduced */
    double wait_s; /* time spent in finish (waiting for the reductions) */
} pu_dp_stats;

/* Plan buckets of about bucket_bytes (<= 0: 16 MB) over m's gradient slab;
 * m borrowed (it must outlive the object). */
pu_status pu_dp_grads_create(pu_tmodel *m, int64_t bucket_bytes, pu_dp_grads **out);
void pu_dp_grads_destroy(pu_dp_grads *g);
int pu_dp_grads_n_buckets(const pu_dp_grads *g);
const pu_dp_bucket *pu_dp_grads_bucket(const pu_dp_grads *g, int i); /* i = 0: the last entries */
/* Arm for the next backward call: its hook calls start reductions. */
void pu_dp_grads_begin(pu_dp_grads *g);
/* The backward hook (ctx = the pu_dp_grads): entries [first, end) of the
 * table are final for this backward. Ignored unless armed. Single rank: no-op. */
void pu_dp_grads_ready(void *ctx, int first, int end);
/* Start every bucket not started yet, wait for all; afterwards the gradient
 * slab holds the sum over ranks on every rank. Disarms. */
pu_status pu_dp_grads_finish(pu_dp_grads *g);
pu_dp_stats pu_dp_grads_stats(const pu_dp_grads *g);

#endif /* PU_DP_H */
