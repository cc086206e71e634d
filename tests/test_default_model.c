/*
 * test_default_model.c — the embedded default model models/default.gguf (suite
 * default_model): at most 20 MB, its sha256 the one models/README.md states, its tokenizer
 * inside; `chat`, `generate` and `serve` use it with no -m (and no $PUYU_MODEL); greedy
 * replies to an English and a Chinese prompt are in the chat format and end at <|im_end|>
 * before the token limit, the Chinese one in Chinese characters. Skips when the file is
 * absent (a checkout without the model).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pt.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

#define DEFAULT_GGUF "models/default.gguf"

/* ids printed by `generate --print-ids` */
static int parse_ids(const char *s, int32_t *ids, int cap) {
    int n = 0;
    char *end;
    for (const char *p = s; p && *p && n < cap;) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ids[n++] = (int32_t)v;
        p = end;
    }
    return n;
}

static bool has_cjk(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
        if (*p >= 0xE4 && *p <= 0xE9) /* lead byte of U+4000..U+9FFF */
            return true;
    return false;
}

PT_SUITE(default_model) {
    struct stat st;
    if (stat(DEFAULT_GGUF, &st) != 0) {
        pt_skip(DEFAULT_GGUF " absent");
        return;
    }
    char cmd[4096];
    if (PT_TEST("models/default.gguf: <= 20 MB, sha256 as in models/README.md, tokenizer inside")) {
        PT_CHECK_MSG(st.st_size <= 20 * 1024 * 1024, "%lld bytes", (long long)st.st_size);
        char *readme = NULL, *sum = NULL;
        size_t n = 0;
        PT_OK(pu_file_read_all("models/README.md", &readme, &n));
        PT_CHECK(pt_run("sha256sum " DEFAULT_GGUF, &sum) == 0);
        if (sum && readme) {
            sum[strcspn(sum, " ")] = 0;
            PT_CHECK_MSG(strlen(sum) == 64 && strstr(readme, sum),
                         "models/README.md does not state the sha256 %s", sum);
        }
        pu_free(readme);
        pu_free(sum);
        pu_tok *t = NULL;
        PT_OK(pu_tok_load(DEFAULT_GGUF, &t));
        PT_CHECK(t && pu_tok_special_id(t, "<|im_start|>") >= 0 &&
                 pu_tok_special_id(t, "<|im_end|>") >= 0);
        pu_tok_destroy(t);
    }
    if (PT_TEST("no -m: generate answers a ChatML prompt and stops at <|im_end|> (en, zh)")) {
        pu_tok *t = NULL;
        PT_OK(pu_tok_load(DEFAULT_GGUF, &t));
        int32_t im_end = t ? pu_tok_special_id(t, "<|im_end|>") : -1;
        static const char *const prompts[] = {"Who are you?", "你是谁？", "What does \\\"ocean\\\" mean?"};
        for (int i = 0; i < 3 && t; i++) {
            char *out = NULL;
            /* --ignore-eos: the greedy ids past any stop token, so that the test sees
             * which one ends the reply (generate never prints the stop token itself) */
            snprintf(cmd, sizeof cmd,
                     "env -u PUYU_MODEL %s generate -p \"<|im_start|>user\n%s<|im_end|>\n"
                     "<|im_start|>assistant\n\" -n 96 --temp 0 --print-ids --ignore-eos "
                     "2>/dev/null",
                     pt_bin(), prompts[i]);
            PT_CHECK(pt_run(cmd, &out) == 0);
            int32_t ids[128];
            int n = parse_ids(out, ids, 128), k = 0;
            while (k < n && ids[k] != im_end && ids[k] != pu_tok_eos(t) &&
                   ids[k] != pu_tok_special_id(t, "<|im_start|>"))
                k++;
            PT_CHECK_MSG(k > 0 && k < n && ids[k] == im_end,
                         "prompt %d: %d reply ids, then %d (<|im_end|> is %d): %s", i, k,
                         k < n ? ids[k] : -1, im_end, out ? out : "");
            pu_free(out);
        }
        pu_tok_destroy(t);
    }
    if (PT_TEST("no -m: chat -p replies in English and in Chinese")) {
        char *en = NULL, *zh = NULL;
        snprintf(cmd, sizeof cmd,
                 "env -u PUYU_MODEL %s chat -p 'Who are you?' --temp 0 -n 96 2>/dev/null", pt_bin());
        PT_CHECK(pt_run(cmd, &en) == 0);
        snprintf(cmd, sizeof cmd, "env -u PUYU_MODEL %s chat -p '你是谁？' --temp 0 -n 96 2>/dev/null",
                 pt_bin());
        PT_CHECK(pt_run(cmd, &zh) == 0);
        PT_CHECK_MSG(en && strlen(en) > 4 && !has_cjk(en), "English reply: %s", en ? en : "");
        PT_CHECK_MSG(zh && has_cjk(zh), "Chinese reply: %s", zh ? zh : "");
        PT_CHECK(en && !strstr(en, "<|im_end|>") && zh && !strstr(zh, "<|im_end|>"));
        pu_free(en);
        pu_free(zh);
    }
    if (PT_TEST("no -m: serve --help names the default; chat with a bad $PUYU_MODEL fails")) {
        char *out = NULL;
        snprintf(cmd, sizeof cmd, "%s serve --help", pt_bin());
        PT_CHECK(pt_run(cmd, &out) == 0 && out && strstr(out, "models/default.gguf"));
        pu_free(out);
        char miss[512];
        pt_tmp_path("no_such_model.gguf", miss, sizeof miss);
        snprintf(cmd, sizeof cmd, "PUYU_MODEL=%s %s chat -p hi 2>&1", miss, pt_bin());
        out = NULL;
        PT_CHECK(pt_run(cmd, &out) != 0 && out && strstr(out, "no_such_model.gguf"));
        pu_free(out);
    }
}
