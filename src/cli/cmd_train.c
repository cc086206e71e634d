/*
 * cmd_train.c — `puyu train` (pretraining with checkpoints and resume) and
 * `puyu plot` (metrics JSONL -> SVG loss curves). Parsing and printing only;
 * the work is pu_train_run / pu_plot_metrics.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cmds.h"
#include "cli/opts.h"
#include "cli/train_opts.h"
#include "puyu/pu_dp.h"
#include "puyu/pu_train.h"

int pu_cmd_train(int argc, char **argv) {
    pu_train_opts o;
    pu_train_opts_default(&o);
    pu_cli_train ct;
    pu_cli_train_init(&ct, &o);
    const pu_opt own[] = {
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
        {"seed", 0, PU_OPT_INT, &ct.seed, "S", "seed of the init and the data order", 0, 9.2e18},
        {"seq-schedule", 0, PU_OPT_STRING, &o.seq_schedule, "F:T,...",
         "context-length stages by step fraction, e.g. 0:128,0.9:512 (overrides --seq)", 0, 0},
        {"eval-batches", 0, PU_OPT_INT, &o.eval_batches, "N", "micro-batches per evaluation", 1,
         1e9},
        {"zero", 0, PU_OPT_INT, &o.zero, "0|1",
         "data parallel (mpirun, MPI build): 1 = ZeRO-1, each rank keeps the AdamW moments of "
         "its 1/N of the weights only (default 0)",
         0, 1},
        {"rope-theta", 0, PU_OPT_DOUBLE, &o.rope_theta, "BASE",
         "RoPE base for this stage (context extension: e.g. 1e6 for 4k -> 32k), saved in the "
         "checkpoint config; max_position_embeddings is raised to --seq",
         0, 1e12},
        PU_OPT_END,
    };
    const pu_opt dp[] = {
        {"dp-bucket-mb", 0, PU_OPT_DOUBLE, &o.dp_bucket_mb, "MB",
         "data parallel (mpirun, MPI build): gradient all-reduce bucket size (default 16)", 0, 1e6},
        PU_OPT_END,
    };
    pu_opt opts[PU_CLI_MAX_OPTS];
    int n = pu_opts_add(opts, 0, own);
    n = pu_cli_opts_eval(opts, n, &ct, "validation loss every K steps (needs val_*.bin shards)");
    n = pu_cli_opts_optim(opts, n, &ct);
    n = pu_cli_opts_ckpt(opts, n, &ct);
    n = pu_cli_opts_model(opts, n, &ct);
    pu_opts_add(opts, n, dp);
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
    pu_cli_train_apply(&ct);
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
    const char *out = NULL, *title = NULL, *keys = NULL;
    const pu_opt opts[] = {
        {"out", 'o', PU_OPT_STRING, &out, "FILE.svg", "output SVG", 0, 0},
        {"keys", 0, PU_OPT_STRING, &keys, "K1[,K2]",
         "plot these fields of the step lines instead of loss / val_loss (e.g. reward,kl)", 0, 0},
        {"title", 0, PU_OPT_STRING, &title, "TEXT", "plot title (default: the metrics path)", 0, 0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {"puyu plot", "METRICS.jsonl -o loss.svg",
                              "Draw the train and validation loss curves of a metrics JSONL "
                              "(from puyu train) as an SVG; --keys picks other fields."};
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
    char k1[128] = "", *k2 = NULL;
    if (keys) {
        snprintf(k1, sizeof k1, "%s", keys);
        k2 = strchr(k1, ',');
        if (k2)
            *k2++ = 0;
    }
    pu_status s = pu_plot_metrics_keys(pos[0], out, title ? title : pos[0], keys ? k1 : NULL,
                                       k2 && *k2 ? k2 : NULL);
    pu_free(pos);
    if (s != PU_OK) {
        fprintf(stderr, "error: %s\n", pu_err_msg());
        return 1;
    }
    return 0;
}
