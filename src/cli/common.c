/*
 * common.c — helpers shared by the CLI commands (see common.h).
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ------------------------------------------------------------------ default model */


static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

const char *pu_cli_default_model(const char *model_arg) {
    static char buf[4096];
    if (model_arg)
        return model_arg;
    const char *env = getenv("PUYU_MODEL");
    if (env && *env)
        return env;
    char exe[2048];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *sl = strrchr(exe, '/');
        if (sl)
            *sl = 0;
        /* beside the binary (an installed ./puyu at the repo root), then the repo root
         * of a build/<mode>/puyu */
        static const char *const rel[] = {"models/default.gguf", "../../models/default.gguf"};
        for (int i = 0; i < 2; i++) {
            snprintf(buf, sizeof buf, "%s/%s", exe, rel[i]);
            if (is_file(buf))
                return buf;
        }
    }
    if (is_file("models/default.gguf"))
        return "models/default.gguf";
    return NULL;
}
