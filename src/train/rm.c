/*
 * rm.c — what a reward model reads: conversations rendered and tokenized as
 * HF's InternLM2ForRewardModel.get_score() does (chat template text, one
 * encode with BOS, the reward token appended), and the input lines of
 * `puyu rm score` (a conversation or a preference pair).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_align.h"

pu_status pu_rm_tokenize(const pu_tok *t, const pu_chat *conv, int32_t reward_token, int32_t **ids,
                         int64_t *n) {
    *ids = NULL;
    *n = 0;
    if (reward_token < 0 || reward_token >= pu_tok_n_vocab(t))
        return pu_err_set(PU_ERR_RANGE,
                          "reward token %d is outside the tokenizer's vocabulary "
                          "[0, %lld)",
                          reward_token, (long long)pu_tok_n_vocab(t));
    pu_chat_render_opts ro = {0};
    pu_str text = {0};
    PU_TRY(pu_chat_render(conv, &ro, &text));
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = true;
    eo.parse_special = true;
    pu_status st = pu_tok_encode(t, text.p ? text.p : "", text.len, &eo, ids, n);
    pu_str_free(&text);
    if (st != PU_OK)
        return st;
    *ids = pu_realloc(*ids, (size_t)(*n + 1) * sizeof **ids);
    (*ids)[(*n)++] = reward_token;
    return PU_OK;
}

static void copy_chat(pu_chat *dst, const pu_chat *src) {
    for (int i = 0; i < src->n; i++)
        pu_chat_add(dst, src->msgs[i].role, src->msgs[i].name, src->msgs[i].content);
}

pu_status pu_rm_parse_input(const char *json_text, size_t len, const char *where,
                            const pu_pref_parse_opts *o, pu_chat conv[2], int *n_conv) {
    pu_chat_init(&conv[0]);
    pu_chat_init(&conv[1]);
    *n_conv = 0;
    json_error_t e;
    json_t *j = json_loadb(json_text, len, 0, &e);
    if (!j)
        return pu_err_set(PU_ERR_FORMAT, "%s: malformed JSON at column %d: %s", where, e.column,
                          e.text);
    pu_status st = PU_OK;
    const json_t *msgs = json_is_array(j) ? j : json_object_get(j, "messages");
    if (msgs && !(json_is_object(j) && json_object_get(j, "chosen"))) {
        /* a conversation; the condition (if any) as the first system turn */
        const json_t *cond = json_is_object(j) ? json_object_get(j, "condition") : NULL;
        const char *ctext = NULL;
        if (cond && !json_is_string(cond))
            st = pu_err_set(PU_ERR_FORMAT, "%s: condition: expected a string", where);
        else if (cond || (o && o->default_condition)) {
            const char *v = cond ? json_string_value(cond) : o->default_condition;
            ctext = o ? pu_pref_condition_lookup(o->conditions, v) : NULL;
            if (!ctext)
                ctext = v;
        }
        char *mt = st == PU_OK ? json_dumps(msgs, JSON_COMPACT) : NULL;
        pu_chat tmp;
        pu_chat_init(&tmp);
        if (st == PU_OK && !mt)
            st = pu_err_set(PU_ERR_FORMAT, "%s: messages: cannot read", where);
        if (st == PU_OK) {
            st = pu_chat_from_json(mt, strlen(mt), &tmp);
            if (st != PU_OK)
                pu_err_prefix(st, "%s: messages: ", where);
        }
        if (st == PU_OK && tmp.n == 0)
            st = pu_err_set(PU_ERR_FORMAT, "%s: messages: empty conversation", where);
        if (st == PU_OK) {
            if (ctext)
                pu_chat_add(&conv[0], "system", NULL, ctext);
            copy_chat(&conv[0], &tmp);
            *n_conv = 1;
        }
        pu_chat_free(&tmp);
        free(mt);
        json_decref(j);
        return st;
    }
    json_decref(j);
    pu_pref_record r;
    PU_TRY(pu_pref_record_parse(json_text, len, where, o, &r));
    for (int k = 0; k < 2; k++) {
        copy_chat(&conv[k], &r.prompt.msgs);
        pu_chat_add(&conv[k], "assistant", NULL, k ? r.rejected : r.chosen);
    }
    *n_conv = 2;
    pu_pref_record_free(&r);
    return PU_OK;
}
