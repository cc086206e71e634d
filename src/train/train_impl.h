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

/* DPO / SimPO / ORPO micro-batch (dpo.c): rows 2i chosen, 2i+1 rejected
 * (targets >= 0 on the scored response tokens); logp(row) = the sum of the
 * scored tokens' log p under m (and, for the sigmoid loss, under the frozen
 * ref, which must be given); *loss = the mean over the B/2 pairs of o's
 * objective (kind, beta, label_smoothing, simpo_gamma, orpo_lambda), *met
 * its metrics; a non-finite loss is an error. With backward, m's grads +=
 * d(grad_scale * (B/2) * loss). *dl_buf / *dl_cap: reusable scratch. */
pu_status pu_dpo_pairs_step(pu_tmodel *m, pu_tmodel *ref, pu_pool *pool, const pu_tbatch *bt,
                            const pu_dpo_train_opts *o, float grad_scale, bool backward,
                            pu_pref_metrics *met, double *loss, float **dl_buf, size_t *dl_cap);
/* The sorted step_* checkpoint directory names in out_dir (owned array of
 * owned strings; free with pu_train_free_ckpt_names); returns the count. */
int pu_train_list_ckpts(const char *out_dir, char ***names);
void pu_train_free_ckpt_names(char **names, int n);

/* shared file helpers of the loop */
/* a resumed run's metrics JSONL: keep only its complete lines with step <= upto
 * (atomic rewrite; no file: nothing to do) */
pu_status pu_train_truncate_metrics(const char *path, int64_t upto);
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

/* ------------------------------------------------------------------------ */
/* what every fine-tuning job needs (job.c; sft, rm train, dpo)             */

/* the training model's options from --attn / --precision / --recompute of t
 * (recompute: also on) */
pu_status pu_train_model_opts(pu_tmodel_opts *to, const pu_train_opts *t, bool recompute);
/* LoRA over the frozen, borrowed base */
void pu_tmodel_opts_lora(pu_tmodel_opts *to, int64_t r, double alpha, double dropout, bool rslora,
                         uint32_t targets, uint64_t seed, const char *base_name);
/* Load the base model dir and its tokenizer (tok_path, else the model's):
 * errors name label and the field (--seq over max_position_embeddings, no
 * tokenizer, a tokenizer larger than vocab_size). *seq_out (NULL ok) = seq,
 * or the model's context when seq <= 0; *tok_file (NULL ok) = the tokenizer
 * file to copy into outputs (owned) or NULL. On error *m / *tok may be set
 * (the caller destroys them). */
pu_status pu_train_open_base(const char *dir, const char *tok_path, int64_t seq, const char *label,
                             pu_model **m, pu_tok **tok, int64_t *seq_out, char **tok_file);
/* the tokenizer file of p: a .model / .json file, or the one in directory p
 * (owned; NULL: none) */
char *pu_train_tokenizer_file(const char *p);
/* copy tok_file (NULL: nothing) into dir as tokenizer.model / .json unless there */
pu_status pu_train_copy_tokenizer(const char *tok_file, const char *dir);
/* OUT/final/ = pu_tmodel_save_dir + the tokenizer, built in OUT/.tmp_final
 * and renamed into place */
pu_status pu_train_write_final(pu_tmodel *m, const char *out_dir, const char *tok_file,
                               const char *label, bool quiet);

/* ------------------------------------------------------------------------ */
/* preference pairs as a batch source (pairs.c; rm train, dpo)              */

/* one side of a pair: ids (n); tg (n) = the label of t+1 (LM sides) or NULL
 * (reward-model sides) */
typedef struct pu_pair_seq {
    int32_t *ids, *tg;
    int64_t n;
} pu_pair_seq;

typedef struct pu_pair_set {
    pu_pair_seq *seq; /* 2 per pair: 2i chosen, 2i+1 rejected */
    int64_t n_pairs, n_skipped;
} pu_pair_set;

typedef struct pu_pair_load {
    const pu_tok *tok;
    /* >= 0: reward-model sides (pu_rm_tokenize with this token appended);
     * < 0: LM sides (pu_pref_tokenize, `puyu sft`'s rendering) */
    int32_t reward_token;
    int64_t seq; /* longest side allowed */
    bool skip_bad, quiet;
    const char *condition; /* default condition (system prompt) or NULL */
    const char *label;     /* "rm train", "dpo": errors and the log line */
} pu_pair_load;

/* Read and tokenize the preference files. A side over seq, sides that
 * tokenize identically, an LM side with no scored token: an error
 * "FILE:LINE: side: ..." or, with skip_bad, a counted skip; no pair left:
 * "LABEL: WHAT: no usable pairs". */
pu_status pu_pair_set_load(const pu_pair_load *lo, const char *const *paths, int n,
                           const char *what, pu_pair_set *out);
void pu_pair_set_free(pu_pair_set *s);
int64_t pu_pair_set_max_len(const pu_pair_set *s); /* longest side (>= 1) */
uint64_t pu_pair_set_hash(const pu_pair_set *s);   /* of ids (and tg) */
/* rows 2p, 2p+1 = the sides of pair pairs[p] into ids / tg (2*np rows of *T
 * = the longest side, right-padded with id 0 / PU_IGNORE_INDEX); lens
 * (2*np, NULL ok) = each row's length */
void pu_pair_fill_rows(const pu_pair_set *set, const int64_t *pairs, int64_t np, int32_t *ids,
                       int32_t *tg, int64_t *lens, int64_t *T);

/* train + eval sets and the training order of a pair job */
typedef struct pu_pairs {
    pu_pair_set train, eval;
    pu_epoch_order order;
    bool shuffle;
    uint64_t seed;
    int64_t tok_step, tok_sum; /* tokens_upto cache */
} pu_pairs;
void pu_pairs_free(pu_pairs *p);
/* pair index of slot i of the training order (step s, pair k: i = s*N + k) */
int64_t pu_pairs_at(pu_pairs *p, int64_t slot);
/* the np pairs of step s as rows (pu_pair_fill_rows) */
void pu_pairs_batch(pu_pairs *p, int64_t s, int64_t np, int32_t *ids, int32_t *tg, int64_t *lens,
                    int64_t *T);
/* tokens (both sides) of steps 0 .. step-1 of np pairs each */
int64_t pu_pairs_tokens_upto(pu_pairs *p, int64_t np, int64_t step);
/* eval batches of mbp pairs, and batch k (pairs k*mbp ..): returns its rows */
int64_t pu_pairs_eval_n(const pu_pairs *p, int64_t mbp);
int64_t pu_pairs_eval_batch(const pu_pairs *p, int64_t k, int64_t mbp, int32_t *ids, int32_t *tg,
                            int64_t *lens, int64_t *T);
/* the longest side of train and eval */
int64_t pu_pairs_max_len(const pu_pairs *p);
/* per-pair metrics accumulated over micro-batches (weights: pairs) */
typedef struct pu_pair_metrics {
    double acc, margin, chosen, rejected;
    int64_t n;
} pu_pair_metrics;
void pu_pair_metrics_add(pu_pair_metrics *pm, double accuracy, double margin, double chosen,
                         double rejected, int64_t n);
/* ", \"[val_]accuracy\": A[, \"[val_]margin\": M], \"[val_]reward_chosen\": C,
 * \"[val_]reward_rejected\": R" of the means since the last call; resets */
void pu_pair_metrics_take(pu_pair_metrics *pm, bool eval, bool margin, char *buf, size_t cap);

/* train (and, when n_eval > 0, eval) sets; the training order */
pu_status pu_pairs_load(pu_pairs *p, const pu_pair_load *lo, const char *const *data, int n_data,
                        const char *const *eval, int n_eval, bool shuffle, uint64_t seed);
/* the pair-job fields of job (items, n_items, tok_hash, eval_at_start,
 * rows_per_unit 2, Tmax; eval_n / eval_batch cleared without an eval set)
 * and the loop's options *to = *t with batch in rows (2 per pair) and
 * eval_every defaulting to steps when there is an eval set */
void pu_pairs_job(const pu_pairs *p, const pu_train_opts *t, pu_train_job *job, pu_train_opts *to);

#endif
