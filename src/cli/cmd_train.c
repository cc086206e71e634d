/*
 * cmd_train.c — `puyu train` (pretraining with checkpoints and resume) and
 * `puyu plot` (metrics JSONL -> SVG loss curves). Parsing and printing only;
 * the work is pu_train_run / pu_plot_metrics.
 */
#include <stdio.h>

#include "cli/cmds.h"
#include "cli/opts.h"
#include "puyu/pu_dp.h"
#include "puyu/pu_train.h"

int pu_cmd_train(int argc, char **argv) {
    pu_train_opts o;
    pu_train_opts_default(&o);
    int64_t seed = 1, kill_at = 0;
    double wd = o.adam.weight_decay, clip = o.adam.clip, b1 = o.adam.beta1, b2 = o.adam.beta2;
    double eps = o.adam.eps;
    bool resume = false, quiet = false;
    const pu_opt opts[] = {
        {"config", 0, PU_OPT_STRING, &o.config_path, "CONFIG.json",
         "InternLM2 config.json of a new model (random init: N(0, initializer_range^2) "
         "matrices, norms 1)",
         0, 0},
        {"init", 0, PU_OPT_STRING, &o.init_dir, "MODEL_DIR",
         "continue pretraining from these weights (instead of --config)", 0, 0},
        {"data", 0, PU_OPT_STRING, &o.data_dir, "SHARDS_DIR",
         "token shards from `puyu data pack` (train_*.bin, val_*.bin)", 0, 0},
        {"out", 0, PU_OPT_STRING, &o.out_dir, "DIR", "checkpoints and metrics go here", 0, 0},
        {"steps", 0, PU_OPT_INT, &o.steps, "N", "optimizer steps", 1, 1e12},
        {"batch", 0, PU_OPT_INT, &o.batch, "B", "sequences per optimizer step", 1, 1e9},
        {"seq", 0, PU_OPT_INT, &o.seq, "T", "sequence length (tokens)", 1, 1e7},
        {"lr", 0, PU_OPT_DOUBLE, &o.lr, "LR", "peak learning rate", 0, 10},
        {"seed", 0, PU_OPT_INT, &seed, "S", "seed of the init and the data order", 0, 9.2e18},
        {"metrics", 0, PU_OPT_STRING, &o.metrics_path, "FILE",
         "metrics JSONL (default OUT/metrics.jsonl)", 0, 0},
        {"warmup", 0, PU_OPT_INT, &o.warmup, "N",
         "linear warmup steps (default min(100, steps/10))", 0, 1e12},
        {"min-lr", 0, PU_OPT_DOUBLE, &o.min_lr, "LR", "floor of the cosine decay (default lr/10)",
         0, 10},
        {"weight-decay", 0, PU_OPT_DOUBLE, &wd, "WD",
         "AdamW decoupled weight decay (not on norms and embeddings)", 0, 10},
        {"beta1", 0, PU_OPT_DOUBLE, &b1, "B1", "AdamW beta1", 0, 1},
        {"beta2", 0, PU_OPT_DOUBLE, &b2, "B2", "AdamW beta2", 0, 1},
        {"adam-eps", 0, PU_OPT_DOUBLE, &eps, "EPS", "AdamW epsilon", 0, 1},
        {"clip", 0, PU_OPT_DOUBLE, &clip, "NORM", "global gradient-norm clip (0 = off)", 0, 1e9},
        {"grad-accum", 0, PU_OPT_INT, &o.grad_accum, "A",
         "micro-batches per step (batch must be divisible by A)", 1, 1e6},
        {"seq-schedule", 0, PU_OPT_STRING, &o.seq_schedule, "F:T,...",
         "context-length stages by step fraction, e.g. 0:128,0.9:512 (overrides --seq)", 0, 0},
        {"eval-every", 0, PU_OPT_INT, &o.eval_every, "K",
         "validation loss every K steps (needs val_*.bin shards)", 0, 1e12},
        {"eval-batches", 0, PU_OPT_INT, &o.eval_batches, "N", "micro-batches per evaluation", 1,
         1e9},
        {"save-every", 0, PU_OPT_INT, &o.save_every, "K",
         "checkpoint every K steps (always at the end)", 0, 1e12},
        {"keep", 0, PU_OPT_INT, &o.keep, "K", "keep the last K checkpoints", 1, 1e9},
        {"resume", 0, PU_OPT_FLAG, &resume, NULL,
         "continue from OUT/latest (bit-exact; starts fresh if there is none)", 0, 0},
        {"attn", 0, PU_OPT_STRING, &o.attn, "naive|flash",
         "attention kernel: flash (tiled, O(T) memory, default) or naive (saves the T x T "
         "probabilities); PUYU_ATTN sets the default",
         0, 0},
        {"precision", 0, PU_OPT_STRING, &o.precision, "fp32|bf16",
         "matmul precision: bf16 = BF16 operands, FP32 accumulation, FP32 master weights and "
         "AdamW state (default fp32)",
         0, 0},
        {"recompute", 0, PU_OPT_STRING, &o.recompute, "none|attn|block",
         "block: keep each layer's input and recompute the layer in backward; attn: recompute "
         "only the naive attention's probabilities (no-op with flash) (default none)",
         0, 0},
        {"zero", 0, PU_OPT_INT, &o.zero, "0|1",
         "data parallel (mpirun, MPI build): 1 = ZeRO-1, each rank keeps the AdamW moments of "
         "its 1/N of the weights only (default 0)",
         0, 1},
        {"ce-chunk", 0, PU_OPT_INT, &o.ce_chunk, "N",
         "LM head + cross-entropy over chunks of N tokens (never the T x vocab logits): 0 auto "
         "(when B*T*vocab > 2^27), -1 never (default 0)",
         -1, 1e12},
        {"rope-theta", 0, PU_OPT_DOUBLE, &o.rope_theta, "BASE",
         "RoPE base for this stage (context extension: e.g. 1e6 for 4k -> 32k), saved in the "
         "checkpoint config; max_position_embeddings is raised to --seq",
         0, 1e12},
        {"quiet", 'q', PU_OPT_FLAG, &quiet, NULL, "no progress output", 0, 0},
        {"kill-at-step", 0, PU_OPT_INT, &kill_at, "N",
         "testing: SIGKILL the process right after step N", 0, 1e12},
        {"dp-bucket-mb", 0, PU_OPT_DOUBLE, &o.dp_bucket_mb, "MB",
         "data parallel (mpirun, MPI build): gradient all-reduce bucket size (default 16)", 0, 1e6},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu train",
        "--config CONFIG.json --data SHARDS_DIR --out DIR --steps N --batch B --seq T --lr LR "
        "[--seed S] [--metrics FILE] [--threads N]",
        "Pretrain an InternLM2-architecture model (fp32 or bf16 matmuls, fp32 AdamW, warmup + "
        "cosine, clipping).\n"
        "Checkpoints OUT/step_N/ are model directories (`puyu generate -m` loads them) plus\n"
        "train_state.safetensors; --resume after a crash continues bit for bit.\n"
        "Data parallel: `mpirun -np N puyu train ...` (built with `make MPI=1`) trains with the\n"
        "same global --batch split over N processes; rank 0 writes metrics and checkpoints."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if ((!o.config_path && !o.init_dir) || !o.data_dir || !o.out_dir || o.steps <= 0) {
        fprintf(stderr, "puyu train: need --config (or --init), --data, --out and --steps (see "
                        "--help)\n");
        return 2;
    }
    o.seed = (uint64_t)seed;
    o.kill_at = kill_at;
    o.resume = resume;
    o.quiet = quiet;
    o.adam.weight_decay = wd;
    o.adam.clip = clip;
    o.adam.beta1 = b1;
    o.adam.beta2 = b2;
    o.adam.eps = eps;
    pu_status s = pu_dp_init(NULL, NULL);
    if (s != PU_OK) {
        fprintf(stderr, "error: %s\n", pu_err_msg());
        return 1;
    }
    pu_pool *pool = pu_pool_create(0);
    s = pu_train_run(&o, pool);
    pu_pool_destroy(pool);
    if (s != PU_OK) {
        if (pu_dp_size() > 1) { /* the other ranks may wait in a collective: abort them */
            fprintf(stderr, "error (rank %d of %d): %s\n", pu_dp_rank(), pu_dp_size(),
                    pu_err_msg());
            pu_dp_abort(1);
        }
        fprintf(stderr, "error: %s\n", pu_err_msg());
        pu_dp_finalize();
        return 1;
    }
    pu_dp_finalize();
    return 0;
}

int pu_cmd_plot(int argc, char **argv) {
    const char *out = NULL, *title = NULL;
    const pu_opt opts[] = {
        {"out", 'o', PU_OPT_STRING, &out, "FILE.svg", "output SVG", 0, 0},
        {"title", 0, PU_OPT_STRING, &title, "TEXT", "plot title (default: the metrics path)", 0, 0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {"puyu plot", "METRICS.jsonl -o loss.svg",
                              "Draw the train and validation loss curves of a metrics JSONL "
                              "(from puyu train) as an SVG."};
    const char **pos = NULL;
    int npos = 0;
    int rc = pu_opts_parse(&spec, opts, argc, argv, &pos, &npos);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (npos != 1 || !out) {
        fprintf(stderr, "puyu plot: need one METRICS.jsonl and -o FILE.svg (see --help)\n");
        pu_free(pos);
        return 2;
    }
    pu_status s = pu_plot_metrics(pos[0], out, title ? title : pos[0]);
    pu_free(pos);
    if (s != PU_OK) {
        fprintf(stderr, "error: %s\n", pu_err_msg());
        return 1;
    }
    return 0;
}
