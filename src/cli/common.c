/*
 * common.c — helpers shared by the CLI commands (see common.h).
 */
#include "common.h"

#include <string.h>
pu_status pu_cli_kv_type(const char *s, pu_kv_type *out) {
    *out = PU_KV_F32;
    if (s && !pu_kv_type_parse(s, out))
        return pu_err_set(PU_ERR_INVALID, "--kv-type: unknown KV cache type '%s' (f32, f16, q8)",
                          s);
    return PU_OK;
}

pu_status pu_cli_load_tokenizer(const pu_model *m, const char *model_arg, const char *tok_path,
                                pu_tok **out) {
    *out = NULL;
    const char *tp = tok_path ? tok_path : pu_model_tokenizer_path(m);
    if (!tp)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: the model has no tokenizer beside it: pass -t TOKENIZER", model_arg);
    return pu_tok_load(tp, out);
}

char **pu_cli_split_list(const char *s, int *n) {
    *n = 0;
    char **out = NULL;
    if (!s)
        return NULL;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len) {
            out = pu_realloc(out, (size_t)(*n + 1) * sizeof(char *));
            out[(*n)++] = pu_strndup(p, len);
        }
        p += len + (e ? 1 : 0);
    }
    return out;
}

void pu_cli_free_list(char **l, int n) {
    for (int i = 0; i < n; i++)
        pu_free(l[i]);
    pu_free(l);
}
