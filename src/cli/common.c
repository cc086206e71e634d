/*
 * common.c — helpers shared by the CLI commands (see common.h).
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

pu_status pu_cli_load_tokenizer(const pu_model *m, const char *model_arg, const char *tok_path,
                                pu_tok **out) {
    *out = NULL;
    const char *tp = tok_path ? tok_path : pu_model_tokenizer_path(m);
    if (!tp)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: the model has no tokenizer beside it: pass -t TOKENIZER", model_arg);
    return pu_tok_load(tp, out);
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
