/*
 * fuzz_sft_record.c — libFuzzer harness for the SFT record parser, the
 * tokenizer of records and the dataset loader
 * + batcher: any input must parse
 * or fail with a message (never crash); a parsed record must render as chat
 * text and tokenize (with the golden tiny SentencePiece model when it is
 * there, run from the repository root) to in-range ids whose labels are the
 * id or -100; the input as a data file (JSONL or a JSON array, bad records
 * skipped) must batch, padded and packed, with every target a real label of
 * its own sample.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "puyu/pu_core.h"
#include "puyu/pu_sft.h"
#include "puyu/pu_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pu_tok *g_tok;
static char g_path[64];

static void check_tokens(const pu_sft_tokens *s) {
    for (int64_t i = 0; i < s->n; i++) {
        if (s->ids[i] < 0 || s->ids[i] >= pu_tok_n_vocab(g_tok))
            __builtin_trap();
        if (s->labels[i] != PU_IGNORE_INDEX && s->labels[i] != s->ids[i])
            __builtin_trap();
    }
}

static void check_batches(const pu_sft_data *d, bool pack) {
    pu_sft_batcher *b = NULL;
    int64_t seq = 64, B = 3;
    if (pu_sft_batcher_create(d, seq, pack, true, 7, &b) != PU_OK)
        __builtin_trap();
    int32_t ids[192], tg[192], pos[192], seg[192];
    for (int64_t k = 0; k < 3; k++) {
        int64_t T = 0, nt = 0, cnt = 0;
        pu_sft_batch(b, k, B, ids, tg, pos, seg, &T, &nt);
        if (T < 1 || T > seq)
            __builtin_trap();
        for (int64_t i = 0; i < B * T; i++) {
            if (tg[i] >= 0) {
                cnt++;
                /* a target is the next token of the same sample */
                if (i % T == T - 1 || seg[i + 1] != seg[i] || pos[i + 1] != pos[i] + 1 ||
                    ids[i + 1] != tg[i])
                    __builtin_trap();
            }
        }
        if (cnt != nt)
            __builtin_trap();
    }
    pu_sft_batcher_destroy(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pu_log_set_level(PU_LOG_ERROR);
    if (!g_tok) {
        if (pu_tok_load("tests/golden/sft/spm.model", &g_tok) != PU_OK)
            g_tok = NULL;
        snprintf(g_path, sizeof g_path, "/tmp/fuzz_sft_%d.jsonl", (int)getpid());
    }
    static const char *const vars[] = {"name=Puyu", "author={{name}}", NULL};
    pu_sft_record r;
    if (pu_sft_record_parse((const char *)data, size, "fuzz:1", vars, &r) != PU_OK) {
        if (pu_err_msg()[0] == 0)
            __builtin_trap(); /* errors must carry a message */
    } else {
        if (r.msgs.n <= 0 || !r.loss)
            __builtin_trap();
        pu_str text = {0};
        if (pu_chat_render(&r.msgs, NULL, &text) != PU_OK)
            __builtin_trap();
        pu_str_free(&text);
        if (g_tok) {
            pu_sft_tokens s = {0};
            if (pu_sft_tokenize(g_tok, &r, &s) != PU_OK)
                __builtin_trap();
            check_tokens(&s);
            pu_sft_tokens_free(&s);
        }
        pu_sft_record_free(&r);
    }
    /* preference records: fuzz/fuzz_pref.c (pref_data.c is their one reader) */
    if (!g_tok)
        return 0;
    /* the input as a data file */
    FILE *f = fopen(g_path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    const char *p = g_path;
    pu_sft_load_opts o = {.seq = 48, .skip_bad = true, .vars = vars};
    pu_sft_data *d = NULL;
    if (pu_sft_data_load(&p, 1, g_tok, &o, &d) == PU_OK) {
        for (int64_t i = 0; i < pu_sft_data_n(d); i++) {
            const pu_sft_tokens *s = pu_sft_data_get(d, i);
            if (s->n > 48)
                __builtin_trap();
            check_tokens(s);
        }
        check_batches(d, false);
        check_batches(d, true);
        pu_sft_data_destroy(d);
    } else if (pu_err_msg()[0] == 0) {
        __builtin_trap();
    }
    unlink(g_path);
    return 0;
}
