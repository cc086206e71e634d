/*
 * cmd_lora.c — `puyu lora merge | export-gguf`: LoRA adapter tools.
 *
 *   merge       -m BASE --lora DIR[,DIR2] --out MERGED [--dtype f32|bf16] [--lora-scale S]
 *               fold the adapters into the base and write a plain HF model
 *               directory (pu_lora_merge).
 *   export-gguf -m BASE --lora DIR --out FILE.gguf
 *               a llama.cpp GGUF LoRA adapter for the GGUF form of the base
 *               (pu_lora_export_gguf).
 */
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "opts.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_model.h"

static int lora_merge(int argc, char **argv) {
    const char *model = NULL, *dirs = NULL, *out = NULL, *dtype = "f32";
    double scale = 1.0;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "BASE", "base model: directory, .gguf or .bin", 0, 0},
        {"lora", 0, PU_OPT_STRING, &dirs, "DIR[,DIR2]", "PEFT LoRA adapter directories", 0, 0},
        {"out", 'o', PU_OPT_STRING, &out, "MERGED", "output model directory (new or empty)", 0, 0},
        {"dtype", 0, PU_OPT_STRING, &dtype, "f32|bf16", "dtype of the 2-D weights written", 0, 0},
        {"lora-scale", 0, PU_OPT_DOUBLE, &scale, "S", "multiplier of every adapter's alpha/r", -1e6,
         1e6},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu lora merge", "-m BASE --lora DIR[,DIR2] --out MERGED [--dtype f32|bf16]",
        "Fold LoRA adapters into the base (W + scale * B A) and write a plain Hugging Face\n"
        "model directory (config.json + model.safetensors, tokenizer files copied from an HF\n"
        "base). GGUF / llama2.c bases are written back in InternLM2's fused wqkv layout."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!model || !dirs || !out) {
        fprintf(stderr, "puyu lora merge: -m BASE, --lora DIR and --out MERGED are required "
                        "(see --help)\n");
        return 2;
    }
    pu_dtype dt;
    if (!strcmp(dtype, "f32") || !strcmp(dtype, "F32"))
        dt = PU_DTYPE_F32;
    else if (!strcmp(dtype, "bf16") || !strcmp(dtype, "BF16"))
        dt = PU_DTYPE_BF16;
    else {
        fprintf(stderr, "puyu lora merge: --dtype must be f32 or bf16, got '%s'\n", dtype);
        return 2;
    }
    pu_model *m = NULL;
    pu_lora **l = NULL;
    int n = 0, ret = 1;
    float sc[64];
    if (pu_model_load(model, &m) != PU_OK ||
        pu_lora_load_list(dirs, pu_model_config(m), &l, &n) != PU_OK)
        goto done;
    if (n > 64) {
        pu_err_set(PU_ERR_INVALID, "--lora: at most 64 adapters");
        goto done;
    }
    for (int i = 0; i < n; i++)
        sc[i] = (float)scale;
    if (pu_lora_merge(m, (const pu_lora *const *)l, sc, n, dt, out) != PU_OK)
        goto done;
    fprintf(stderr, "merged %d adapter(s) into %s\n", n, out);
    ret = 0;
done:
    if (ret)
        fprintf(stderr, "puyu lora merge: error: %s\n", pu_err_msg());
    pu_lora_list_destroy(l, n);
    pu_model_destroy(m);
    return ret;
}

static int lora_export_gguf(int argc, char **argv) {
    const char *model = NULL, *dir = NULL, *out = NULL;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "BASE",
         "base model the adapter was trained on (HF directory or its GGUF form)", 0, 0},
        {"lora", 0, PU_OPT_STRING, &dir, "DIR", "PEFT LoRA adapter directory", 0, 0},
        {"out", 'o', PU_OPT_STRING, &out, "FILE.gguf", "output GGUF adapter", 0, 0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu lora export-gguf", "-m BASE --lora DIR --out FILE.gguf",
        "Write a llama.cpp GGUF LoRA adapter (general.type \"adapter\", adapter.type \"lora\",\n"
        "adapter.lora.alpha; blk.N.attn_q.weight.lora_a / .lora_b ...) for the GGUF form of the\n"
        "base: wqkv's B split into q/k/v with the q/k rows permuted as llama.cpp's converter\n"
        "permutes InternLM2's base weights, A shared. Use it with llama.cpp's --lora FILE."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!model || !dir || !out) {
        fprintf(stderr, "puyu lora export-gguf: -m BASE, --lora DIR and --out FILE are required "
                        "(see --help)\n");
        return 2;
    }
    pu_model *m = NULL;
    pu_lora *l = NULL;
    int ret = 1;
    if (pu_model_load(model, &m) != PU_OK || pu_lora_load(dir, pu_model_config(m), &l) != PU_OK ||
        pu_lora_export_gguf(l, pu_model_config(m), out) != PU_OK)
        goto done;
    ret = 0;
done:
    if (ret)
        fprintf(stderr, "puyu lora export-gguf: error: %s\n", pu_err_msg());
    pu_lora_destroy(l);
    pu_model_destroy(m);
    return ret;
}

int pu_cmd_lora(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "merge"))
        return lora_merge(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "export-gguf"))
        return lora_export_gguf(argc - 1, argv + 1);
    FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
    fprintf(f, "usage: puyu lora merge -m BASE --lora DIR[,DIR2] --out MERGED [--dtype f32|bf16]\n"
               "       puyu lora export-gguf -m BASE --lora DIR --out FILE.gguf\n"
               "(puyu lora <subcommand> --help for details)\n");
    return f == stdout ? 0 : 2;
}
