/*
 * fuzz_pref.c — libFuzzer harness: the input is one preference record (any
 * kind pu_pref_record_parse reads). A record that parses must have a prompt
 * with a user turn not ending in an assistant turn, two non-empty, different
 * responses, and a conversation whose last turn alone is scored. The same
 * input as a `puyu rm score` line (pu_rm_parse_input) must give 1 or 2
 * conversations, each ending with a turn. Nothing may crash or leak.
 */
#include <stdint.h>
#include <string.h>

#include "puyu/pu_align.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static pu_pref_conditions *cond;
    if (!cond && pu_pref_conditions_default(&cond) != PU_OK)
        __builtin_trap();
    pu_pref_parse_opts o = {cond, NULL};
    pu_chat conv[2];
    int nc = 0;
    if (pu_rm_parse_input((const char *)data, size, "fuzz.jsonl:1", &o, conv, &nc) == PU_OK &&
        (nc < 1 || nc > 2 || conv[0].n < 1 || (nc == 2 && conv[1].n < 1)))
        __builtin_trap();
    pu_chat_free(&conv[0]);
    pu_chat_free(&conv[1]);
    pu_pref_record r;
    if (pu_pref_record_parse((const char *)data, size, "fuzz.jsonl:1", &o, &r) != PU_OK)
        return 0;
    if (r.prompt.msgs.n < 1 || !r.chosen[0] || !r.rejected[0] || !strcmp(r.chosen, r.rejected) ||
        !strcmp(r.prompt.msgs.msgs[r.prompt.msgs.n - 1].role, "assistant"))
        __builtin_trap();
    pu_sft_record c;
    if (pu_pref_conversation(&r, 1, &c) != PU_OK || c.msgs.n != r.prompt.msgs.n + 1 ||
        c.loss[c.msgs.n - 1] != 1 || (c.msgs.n > 1 && c.loss[0] != 0))
        __builtin_trap();
    pu_sft_record_free(&c);
    pu_pref_record_free(&r);
    return 0;
}
