/*
 * common.h — small helpers shared by the CLI commands.
 */
#ifndef PU_CLI_COMMON_H
#define PU_CLI_COMMON_H

#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

/* The tokenizer a command uses with model m: `tok_path` (-t) if given, else
 * the one the model carries or sits beside; an error naming `model_arg` when
 * there is none. */
pu_status pu_cli_load_tokenizer(const pu_model *m, const char *model_arg, const char *tok_path,
                                pu_tok **out);

/* "a,b,,c" -> {"a", "b", "c"} (owned strings, *n of them; NULL for NULL or
 * an empty list); free with pu_cli_free_list. */
char **pu_cli_split_list(const char *s, int *n);
void pu_cli_free_list(char **l, int n);
/* The --kv-type option row (a string; parse it with pu_cli_kv_type). */
#define PU_CLI_KV_OPT(var)                                                                         \
    {"kv-type", 0, PU_OPT_STRING, &(var), "f32|f16|q8",                                          \
     "KV cache element type: f32 (default), f16, or q8 = int8 per (token, head) with "           \
     "scale/zero (LMDeploy quant_policy=8)",                                                    \
     0, 0}

/* --kv-type value (NULL = f32); PU_ERR_INVALID naming the option otherwise */
pu_status pu_cli_kv_type(const char *s, pu_kv_type *out);
/* The model a command uses when -m is optional: `model_arg` (-m) if given, else
 * $PUYU_MODEL, else the embedded default model models/default.gguf beside the binary,
 * in the repo root of a build/<mode>/ binary, or under the current directory; NULL when
 * none exists. */
const char *pu_cli_default_model(const char *model_arg);

#endif
