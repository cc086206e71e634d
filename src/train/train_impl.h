/*
 * train_impl.h — private interfaces of the training module: the ops with
 * their backward passes (ops.c), the matmul workspace, and helpers shared by
 * model.c, optim.c, ckpt.c and run.c. tests/test_train*.c include it.
 *
 * Op conventions (style §3.10): pu_top_<name>_fwd(out, saved..., in..., dims)
 * / pu_top_<name>_bwd(din..., dout, saved..., dims). Shapes in comments;
 * N = B*T tokens. Unless stated otherwise, every `d*` output of a _bwd is
 * ACCUMULATED (+=). pool may be NULL. Every op gives bitwise identical
 * results for any thread count (no reduction is split over threads).
 */
#ifndef PU_TRAIN_IMPL_H
#define PU_TRAIN_IMPL_H

#include "puyu/pu_train.h"

/* growable scratch for the matmul backward (transposes, temporaries) */
typedef struct pu_tws {
    float *buf;
    size_t cap; /* floats */
} pu_tws;
float *pu_tws_get(pu_tws *ws, size_t n); /* at least n floats, contents undefined */
void pu_tws_free(pu_tws *ws);

/* x (N, C) -> out (N, C) = table[ids[n]] ; table (V, C) */
void pu_top_embed_fwd(float *out, const int32_t *ids, const float *table, int64_t N, int64_t C);
/* dtable (V, C) += scatter of dout (N, C) by ids (columns split over threads) */
void pu_top_embed_bwd(pu_pool *pool, float *dtable, const float *dout, const int32_t *ids,
                      int64_t N, int64_t C);

/* HF InternLM2RMSNorm: h = x * rstd, rstd = 1/sqrt(mean(x^2) + eps) (N), y = w * h */
void pu_top_rmsnorm_fwd(pu_pool *pool, float *y, float *rstd, const float *x, const float *w,
                        int64_t N, int64_t C, float eps);
/* dx (N, C) += ; dw (C) += (dw may be NULL) */
void pu_top_rmsnorm_bwd(pu_pool *pool, float *dx, float *dw, const float *dy, const float *x,
                        const float *rstd, const float *w, int64_t N, int64_t C);

/* A weight matrix (rows, cols), row-major, as a GEMM operand: fp32 (f32 set:
 * the slab or a borrowed F32 tensor), or a stored dtype converted to fp32 on
 * the fly while the GEMM packs its panels (data + dtype: BF16/F16 views of a
 * memory-mapped pu_model), or NF4 with double quantization (nf4). Never a
 * full fp32 copy. */
typedef struct pu_nf4 pu_nf4;
typedef struct pu_tmat {
    int64_t rows, cols;
    const float *f32;
    const void *data;
    pu_dtype dtype;
    void (*cvt)(float *dst, const void *src, int64_t n); /* dtype -> f32 */
    const pu_nf4 *nf4;
} pu_tmat;
/* dst[i] = W[r][c0 + i] for i < n, in fp32 */
void pu_tmat_get(const pu_tmat *w, int64_t r, int64_t c0, int64_t n, float *dst);

/* NF4 with double quantization (bitsandbytes' scheme, see pu_train.h):
 * 4-bit codes of the NF4 table in blocks of 64 (two per byte, the first
 * element in the high nibble), absmax per block quantized to 8 bits with
 * bitsandbytes' dynamic map in blocks of 256 absmaxes, each with an fp32
 * scale, after subtracting the mean absmax (offset). */
struct pu_nf4 {
    int64_t n;        /* elements */
    uint8_t *codes;   /* (n + 1) / 2 */
    uint8_t *qabsmax; /* (ceil(n / 64)) 8-bit codes of absmax - offset */
    float *absmax2;   /* (ceil(n / 64 / 256)) scales of qabsmax blocks */
    float offset;
};
/* Quantize n floats (of dtype `dt` at src) into q (owned buffers). */
void pu_nf4_quantize(pu_nf4 *q, const void *src, pu_dtype dt, int64_t n);
void pu_nf4_free(pu_nf4 *q);
/* dst[i] = dequant(element start + i) */
void pu_nf4_dequant(const pu_nf4 *q, int64_t start, int64_t n, float *dst);
int64_t pu_nf4_bytes(const pu_nf4 *q);
extern const float pu_nf4_table[16];
extern const float pu_nf4_dyn8[256];

/* y (N, M) = x (N, K) · w^T, w (M, K). Overwrites y. */
void pu_top_matmul_fwd(pu_pool *pool, const pu_kernels *k, float *y, const float *x, const float *w,
                       int64_t N, int64_t M, int64_t K);
/* dx (N, K) += dy (N, M) · w (if dx); dw (M, K) += dy^T · x (if dw). */
void pu_top_matmul_bwd(pu_pool *pool, const pu_kernels *k, pu_tws *ws, float *dx, float *dw,
                       const float *dy, const float *x, const float *w, int64_t N, int64_t M,
                       int64_t K);

/* C (M, N) (+)= A (M, K) · B (K, N) with A(i,p) = a[i*ars + p*acs] and
 * B(p,j) = b[p*brs + j*bcs]; C row stride ldc. accumulate: C += (else =).
 * Threads split rows of C; bitwise identical for any thread count. */
void pu_top_gemm(pu_pool *pool, float *c, int64_t ldc, const float *a, int64_t ars, int64_t acs,
                 const float *b, int64_t brs, int64_t bcs, int64_t M, int64_t N, int64_t K,
                 bool accumulate);
/* The same with B = W^T (wt: B(p, j) = W[j][p]) or B = W (B(p, j) =
 * W[p][j]) for a weight matrix of any storage (pu_tmat); fp32 matrices take
 * exactly the pu_top_gemm path (bitwise identical). */
void pu_top_gemm_w(pu_pool *pool, float *c, int64_t ldc, const float *a, int64_t ars, int64_t acs,
                   const pu_tmat *w, bool wt, int64_t M, int64_t N, int64_t K, bool accumulate);
/* y (N, M) = x (N, K) · W^T ; dx (N, K) += dy (N, M) · W  (W (M, K) any storage) */
void pu_top_matmul_fwd_w(pu_pool *pool, float *y, const float *x, const pu_tmat *w, int64_t N,
                         int64_t M, int64_t K);
void pu_top_matmul_bwd_dx_w(pu_pool *pool, float *dx, const float *dy, const pu_tmat *w, int64_t N,
                            int64_t M, int64_t K);
/* embedding rows of a table of any storage */
void pu_top_embed_fwd_w(float *out, const int32_t *ids, const pu_tmat *table, int64_t N);

/* 12 x 32 microkernel (gemm_avx512.c): c (mr x nr valid) (+)= A · Bp with
 * A(i, p) = ap[i*ri + p*pi] for all 12 rows, Bp a packed (kc, 32) panel */
void pu_top_ukernel_avx512(int64_t kc, const float *ap, int64_t ri, int64_t pi, const float *bp,
                           float *c, int64_t ldc, int mr, int nr, bool acc);
/* the same tile for AVX2 + FMA (gemm_avx2.c): four 6 x 16 passes */
void pu_top_ukernel_avx2(int64_t kc, const float *ap, int64_t ri, int64_t pi, const float *bp,
                         float *c, int64_t ldc, int mr, int nr, bool acc);

/* cos/sin tables (P, D/2) for positions 0..P-1, fp32 angles as HF/forward.c;
 * linear rope scaling divides positions by the factor. */
void pu_top_rope_tables(const pu_config *c, int64_t P, float *cos, float *sin);
/* x (N, nh, D) rotated in place (rotate-half); token n has position
 * pos ? pos[n] : n % T, which must be < P of the tables. */
void pu_top_rope_fwd(float *x, const int32_t *pos, int64_t N, int64_t T, int64_t nh, int64_t D,
                     const float *cos, const float *sin);
/* dx (N, nh, D) in place: the transpose rotation (overwrites, not +=) */
void pu_top_rope_bwd(float *dx, const int32_t *pos, int64_t N, int64_t T, int64_t nh, int64_t D,
                     const float *cos, const float *sin);

/* Causal GQA attention over B sequences of T tokens.
 * q (B*T, H, D), k, v (B*T, Hkv, D) -> out (B*T, H, D) (overwritten),
 * probs (B, H, T, T) saved (row t: keys j <= t; masked entries 0).
 * seg (B*T) optional: token t attends only to j with seg[j] == seg[t]. */
void pu_top_attn_fwd(pu_pool *pool, const pu_kernels *k, float *out, float *probs, const float *q,
                     const float *kk, const float *v, const int32_t *seg, int64_t B, int64_t T,
                     int64_t H, int64_t Hkv, int64_t D);
/* dq (B*T, H, D) +=, dk, dv (B*T, Hkv, D) += ; split over (b, kv head) */
void pu_top_attn_bwd(pu_pool *pool, const pu_kernels *k, float *dq, float *dk, float *dv,
                     const float *dout, const float *probs, const float *q, const float *kk,
                     const float *v, int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D);

/* out (n) = silu(g) * u (overwrites) */
void pu_top_swiglu_fwd(pu_pool *pool, float *out, const float *g, const float *u, int64_t n);
/* dg, du (n) += */
void pu_top_swiglu_bwd(pu_pool *pool, float *dg, float *du, const float *dout, const float *g,
                       const float *u, int64_t n);

/* Cross-entropy of logits (N, V): lse (N) saved, losses (N) per token (0 for
 * ignored targets < 0). Returns the sum of losses (double, summed in order). */
double pu_top_xent_fwd(pu_pool *pool, const pu_kernels *k, float *lse, float *losses,
                       const float *logits, const int32_t *targets, int64_t N, int64_t V);
/* In place: logits (N, V) become dlogits = scale * (softmax - onehot);
 * rows with ignored targets become 0 (overwrites). */
void pu_top_xent_bwd(pu_pool *pool, const pu_kernels *k, float *logits, const float *lse,
                     const int32_t *targets, int64_t N, int64_t V, float scale);
/* The same with a weight per row: dlogits[n] = rscale[n] * (softmax - onehot)
 * (rows with rscale 0 or an ignored target become 0). */
void pu_top_xent_bwd_rows(pu_pool *pool, const pu_kernels *k, float *logits, const float *lse,
                          const int32_t *targets, int64_t N, int64_t V, const float *rscale);

/* the operand view of table entry i (tests check borrowing: no copies) */
const pu_tmat *pu_tmodel_mat_(const pu_tmodel *m, int i);
/* tests: run the bf16 products of a --precision bf16 model at this
 * pu_bf16_level (ignored when unavailable or in fp32) */
void pu_tmodel_set_bf16_level_(pu_tmodel *m, int level);

/* ------------------------------------------------------------------------ */
/* safetensors writing / reading of flat F32 tensors (ckpt.c)               */

typedef struct pu_st_out {
    const char *name;
    const float *data;
    int ndim;
    int64_t shape[2];
} pu_st_out;
/* Write a safetensors file atomically; metadata: NULL or a JSON object text
 * of string values ("{\"step\":\"10\"}"). */
pu_status pu_train_write_safetensors(const char *path, const pu_st_out *t, int n,
                                     const char *metadata_json);

/* A safetensors file read whole (train_state.safetensors). */
typedef struct pu_st_in {
    char *buf;
    size_t len;
    json_t *hdr;
    const uint8_t *data;
    uint64_t data_len;
    char *path;
} pu_st_in;
pu_status pu_train_st_open(pu_st_in *f, const char *path);
/* Copy F32 tensor `name` of exactly n elements into dst; errors name it. */
pu_status pu_train_st_get(const pu_st_in *f, const char *name, float *dst, int64_t n);
/* __metadata__ string value, NULL if absent */
const char *pu_train_st_meta(const pu_st_in *f, const char *key);
void pu_train_st_close(pu_st_in *f);

/* ------------------------------------------------------------------------ */
/* the training loop shared by pretraining and SFT (run.c)                  */

/* What differs between `puyu train` and `puyu sft`: where the model and the
 * batches come from, and what happens after the last step. Everything else
 * (AdamW, schedule, grad accumulation, data parallel, metrics, progress,
 * checkpoints, bit-exact resume, evaluation) is pu_train_loop. */
typedef struct pu_train_job {
    void *ctx;
    const char *label; /* progress / log label: "train", "sft" */
    int64_t Tmax;      /* longest T of any batch */
    /* Build the model for batches of up to B rows of Tmax tokens, weights
     * initialised. ckpt_dir: the checkpoint about to be resumed (its weights
     * are loaded afterwards) or NULL. *tok_path: the tokenizer to copy into
     * checkpoints (owned, may stay NULL). It may set n_items, tok_hash,
     * eval_n and eval_batch of the job (through its ctx): the loop reads
     * them after this call. */
    pu_status (*make_model)(void *ctx, const char *ckpt_dir, int64_t B, int64_t Tmax, pu_tmodel **m,
                            char **tok_path);
    /* The whole batch of step s (0-based): B rows of *T <= Tmax tokens in
     * ids / tg (B*Tmax entries each); pos / seg filled and *packed set when
     * the rows hold several documents. rng: the run's data RNG (checkpointed). */
    pu_status (*batch)(void *ctx, pu_rng *rng, int64_t s, int64_t B, int32_t *ids, int32_t *tg,
                       int32_t *pos, int32_t *seg, int64_t *T, bool *packed);
    /* training tokens of steps 0 .. step-1 (the metrics' "tokens") */
    int64_t (*tokens_upto)(void *ctx, int64_t step);
    /* items of the training data, for the start log line */
    int64_t n_items;
    const char *items; /* "train tokens", "samples" */
    /* Validation (NULL: none): number of batches and batch k of up to mb rows
     * (*rows of them, *T tokens; T_step = the T of the last train step). */
    int64_t (*eval_n)(void *ctx);
    pu_status (*eval_batch)(void *ctx, int64_t k, int64_t mb, int64_t T_step, int32_t *ids,
                            int32_t *tg, int32_t *pos, int32_t *seg, int64_t *rows, int64_t *T,
                            bool *packed);
    bool eval_at_start; /* a step-0 val_loss line before the first step of a fresh run */
    uint64_t tok_hash;  /* recorded in train_state metadata */
    /* called with the trained model after the last step (NULL: nothing) */
    pu_status (*done)(void *ctx, pu_tmodel *m);
    /* A loss other than the mean cross-entropy (reward model, DPO; NULL: CE).
     * Called per micro-batch bt (rows [first, first + bt->B) of the step's
     * batch, or of eval batch: eval true, no backward) instead of
     * forward + backward: it runs the forward, adds d(grad_scale *
     * *loss_sum)/dparams to the gradients (train only), and returns the
     * micro-batch's loss summed over its units (*count units). A unit is
     * rows_per_unit consecutive rows (2: a preference pair); grad_scale =
     * 1 / the units of the whole step. */
    pu_status (*micro)(void *ctx, pu_tmodel *m, pu_pool *pool, const pu_tbatch *bt, int64_t first,
                       bool eval, float grad_scale, double *loss_sum, int64_t *count);
    int64_t rows_per_unit;
    /* ", \"key\": value" fields appended to the step's metrics line (eval:
     * the val line, keys prefixed by the job) from what micro accumulated
     * since the last call; resets them. NULL: none. */
    void (*metrics)(void *ctx, bool eval, char *buf, size_t n);
    /* Extra trainable parameters beside the model (a value head): xn floats
     * at xp with gradients xg (zeroed by the loop before each step), set by
     * make_model. AdamW updates them with weight decay, they count in the
     * global gradient norm, and checkpoints keep them and their moments
     * (train_state tensors "extra", "adam.xm", "adam.xv"). */
    float *xp, *xg;
    int64_t xn;
} pu_train_job;

/* AdamW step over the model and n extra parameters (p, g, moments m, v;
 * weight decay on them): the global norm covers both (optim.c). */
double pu_adamw_step_x(pu_adamw *o, pu_tmodel *m, pu_pool *pool, double lr, float *xp, float *xg,
                       float *xm, float *xv, int64_t xn);

pu_status pu_train_loop(const pu_train_opts *o, const pu_train_job *job, pu_pool *pool);

/* Reward-model micro-batch (rm_train.c): forward of bt (rows 2i chosen,
 * 2i+1 rejected, lens[row] tokens each, the reward at the last), rewards =
 * v . hidden there (rewards (B) out, NULL ok), pu_rm_loss over the B/2
 * pairs (*met); with backward, grads += d(grad_scale * (B/2) * loss) via
 * dhidden, dv (C) += likewise. *dh_buf / *dh_cap: reusable scratch. */
#include "puyu/pu_align.h"
pu_status pu_rm_pairs_step(pu_tmodel *m, pu_pool *pool, const pu_tbatch *bt, const int64_t *lens,
                           const float *v, float *dv, const pu_rm_loss_opts *lo, float grad_scale,
                           bool backward, pu_rm_metrics *met, float *rewards, float **dh_buf,
                           size_t *dh_cap);

/* The sorted step_* checkpoint directory names in out_dir (owned array of
 * owned strings; free with pu_train_free_ckpt_names); returns the count. */
int pu_train_list_ckpts(const char *out_dir, char ***names);
void pu_train_free_ckpt_names(char **names, int n);

/* shared file helpers of the loop */
pu_status pu_train_copy_file(const char *src, const char *dst);
void pu_train_rm_flat_dir(const char *dir);

/* The order in which pair-based jobs (rm train, dpo) visit their n items:
 * slot i -> item index; identity when !shuffle, else a Fisher-Yates
 * permutation per epoch e = i / n drawn from (seed, e) — deterministic and
 * resumable from i alone. The permutation of the current epoch is cached. */
typedef struct pu_epoch_order {
    int64_t *perm; /* (n) owned, NULL until the first shuffled call */
    int64_t epoch;
} pu_epoch_order;
int64_t pu_epoch_order_at(pu_epoch_order *o, int64_t n, bool shuffle, uint64_t seed, int64_t i);
void pu_epoch_order_free(pu_epoch_order *o);

#endif
