/*
 * main.c — `puyu <command> [options]`: a table of commands and nothing else.
 * Each command lives in cmd_<name>.c; this file only dispatches (git style).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "puyu/pu_core.h"
#include "puyu/pu_kernels.h"

#define PUYU_VERSION "0.1.0"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} cmd_entry;

static const cmd_entry g_cmds[] = {
    {"demo", pu_cmd_demo, "the whole chain on Debian's corpora, ending in report.html"},
    {"data", pu_cmd_data, "data pipeline: extract | langid | clean | dedup | safety | quality | "
                          "run | pack"},
    {"tokenizer", pu_cmd_tokenizer, "tokenizers: encode | decode | info | train"},
    {"train", pu_cmd_train, "pretrain or continue training an InternLM2 model"},
    {"sft", pu_cmd_sft, "supervised fine-tuning on chat data (full, LoRA, QLoRA)"},
    {"rm", pu_cmd_rm, "reward model: train | score (conversations and preference pairs)"},
    {"dpo", pu_cmd_dpo, "preference optimisation: DPO, SimPO or ORPO on preference pairs"},
    {"ppo", pu_cmd_ppo, "online RLHF: PPO of a policy against a reward model (actor, critic, reference)"},
    {"plot", pu_cmd_plot, "draw train/val loss curves from a metrics JSONL (SVG)"},
    {"eval", pu_cmd_eval, "evaluate: MMLU, C-Eval, GSM8K, HellaSwag, needle-in-a-haystack, ..."},
    {"generate", pu_cmd_generate, "generate text from a prompt or token ids"},
    {"chat", pu_cmd_chat, "chat with a model in the terminal"},
    {"serve", pu_cmd_serve, "serve a model over an OpenAI-compatible HTTP API (+ web chat)"},
    {"forward", pu_cmd_forward, "write the logits of every position of a token sequence"},
    {"agent", pu_cmd_agent, "a tool-using agent (python sandbox, calculator, files, user tools)"},
    {"sandbox", pu_cmd_sandbox, "run Python code contained (namespaces, seccomp, rlimits)"},
    {"info", pu_cmd_info, "describe a model: config, parameters, dtypes, memory"},
    {"lora", pu_cmd_lora, "LoRA adapters: merge into the base | export-gguf (llama.cpp)"},
    {"quantize", pu_cmd_quantize, "quantize a model (Q8_0, Q4_0, ..., Q6_K) to a GGUF file"},
};

static void usage(FILE *f) {
    fprintf(f,
            "puyu %s — the InternLM2 chain in C: data, tokenizer, train, eval, serve, agent\n\n"
            "usage: puyu <command> [options]    (puyu <command> --help for details)\n\n"
            "commands:\n",
            PUYU_VERSION);
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        fprintf(f, "  %-12s %s\n", g_cmds[i].name, g_cmds[i].summary);
    fprintf(f, "  %-12s %s\n", "version", "print version, SIMD level and threads");
    fprintf(f, "\nenvironment: PUYU_THREADS (threads), PUYU_SIMD=ref|avx2|avx512, "
               "PUYU_LOG=level\n");
}

int main(int argc, char **argv) {
    const char *lv = getenv("PUYU_LOG");
    pu_log_set_level(PU_LOG_WARN);
    if (lv && pu_log_level_parse(lv) >= 0)
        pu_log_set_level((pu_log_level)pu_log_level_parse(lv));
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("puyu %s\nsimd: %s (best %s)\nthreads: %d\n", PUYU_VERSION, pu_kernels_get()->name,
               pu_simd_name(pu_cpu_simd_best()), pu_threads_default());
        return 0;
    }
    /* `puyu data pack` belongs to the training side (token shards) */
    if (!strcmp(cmd, "data") && argc > 2 && !strcmp(argv[2], "pack"))
        return pu_cmd_data_pack(argc - 2, argv + 2);
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        if (!strcmp(cmd, g_cmds[i].name))
            return g_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "puyu: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
