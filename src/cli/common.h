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

/* The model a command uses when -m is optional: `model_arg` (-m) if given, else
 * $PUYU_MODEL, else the embedded default model models/default.gguf beside the binary,
 * in the repo root of a build/<mode>/ binary, or under the current directory; NULL when
 * none exists. */
const char *pu_cli_default_model(const char *model_arg);

#endif
