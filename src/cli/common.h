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

#endif
