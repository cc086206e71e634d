/*
 * score.c — PPL scoring of multiple-choice options and local generation.
 *
 * Scoring: reset; ONE prefill of the context (logits of its last position
 * kept, (V)); then for every option: truncate the session back to n_ctx,
 * evaluate opt[0 .. len-1) with all logits ((len-1, V)) — the last option
 * token needs no forward pass — and sum log-softmax(row)[next id] in double.
 * This equals scoring ctx+opt with one full forward per option (causal
 * attention; the cached context K/V are exactly those of the prefill).
 *
 * Generation: reset, prefill the prompt, then sample (greedy by default) one
 * token at a time, streaming decoded text; stops at max_tokens, the context
 * end, EOS / <|im_end|>, or when a stop string appears (output cut there).
 */
#include <math.h>
#include <string.h>

#include "eval_impl.h"
#include "puyu/pu_infer.h"

/* log softmax(logits)[id] in double */
static double log_prob(const float *logits, int64_t V, int32_t id) {
    float mx = logits[0];
    for (int64_t v = 1; v < V; v++)
        if (logits[v] > mx)
            mx = logits[v];
    double sum = 0;
    for (int64_t v = 0; v < V; v++)
        sum += exp((double)logits[v] - (double)mx);
    return (double)logits[id] - (double)mx - log(sum);
}

pu_status pu_eval_score_options(pu_session *s, int64_t V, const int32_t *ctx, int64_t n_ctx,
                                const int32_t *const *opts, const int64_t *opt_lens, int n_opt,
                                double *logliks) {
    if (n_ctx < 1)
        return pu_err_set(PU_ERR_INVALID, "score: the context needs at least one token (e.g. BOS)");
    int64_t max_len = 0;
    for (int i = 0; i < n_opt; i++) {
        if (opt_lens[i] > max_len)
            max_len = opt_lens[i];
        for (int64_t j = 0; j < opt_lens[i]; j++)
            if (opts[i][j] < 0 || opts[i][j] >= V)
                return pu_err_set(PU_ERR_RANGE,
                                  "score: option %d token %lld: id %d outside [0, %lld)", i,
                                  (long long)j, opts[i][j], (long long)V);
    }
    if (n_ctx + (max_len > 0 ? max_len - 1 : 0) > pu_session_n_ctx(s))
        return pu_err_set(PU_ERR_RANGE,
                          "score: context (%lld) + longest option (%lld) - 1 exceeds the session's "
                          "%lld tokens",
                          (long long)n_ctx, (long long)max_len, (long long)pu_session_n_ctx(s));
    float *last = pu_try_malloc((size_t)V * sizeof(float));
    float *rows =
        pu_try_malloc((size_t)(max_len > 1 ? max_len - 1 : 1) * (size_t)V * sizeof(float));
    if (!last || !rows) {
        pu_free(last);
        pu_free(rows);
        return pu_err_set(PU_ERR_NOMEM, "score: logits buffers");
    }
    pu_session_reset(s);
    pu_status st = pu_session_eval(s, ctx, n_ctx, last, false); /* one prefill */
    for (int i = 0; !st && i < n_opt; i++) {
        int64_t L = opt_lens[i];
        if (L == 0) {
            logliks[i] = 0;
            continue;
        }
        double ll = log_prob(last, V, opts[i][0]);
        if (L > 1) {
            st = pu_session_truncate(s, n_ctx);
            if (!st)
                st = pu_session_eval(s, opts[i], L - 1, rows, true);
            for (int64_t j = 1; !st && j < L; j++)
                ll += log_prob(rows + (size_t)(j - 1) * (size_t)V, V, opts[i][j]);
        }
        logliks[i] = ll;
    }
    pu_free(last);
    pu_free(rows);
    return st;
}

pu_status pu_eval_generate_local(pu_session *s, int64_t V, const pu_tok *tok, const int32_t *prompt,
                                 int64_t n, const pu_eval_gen_params *p, pu_str *out) {
    pu_str_clear(out);
    pu_str_puts(out, "");
    if (n < 1)
        return pu_err_set(PU_ERR_INVALID, "generate: empty prompt");
    if (n >= pu_session_n_ctx(s))
        return pu_err_set(PU_ERR_RANGE, "generate: prompt of %lld tokens fills the context (%lld)",
                          (long long)n, (long long)pu_session_n_ctx(s));
    pu_sample_params sp = pu_sample_default_params();
    sp.temperature = p->temperature;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.repetition_penalty = 1.0f;
    sp.seed = p->seed;
    pu_sampler smp;
    PU_TRY(pu_sampler_init(&smp, &sp, V));
    float *logits = pu_try_malloc((size_t)V * sizeof(float));
    if (!logits) {
        pu_sampler_deinit(&smp);
        return pu_err_set(PU_ERR_NOMEM, "generate: logits");
    }
    int32_t stop_ids[2] = {pu_tok_eos(tok), pu_tok_special_id(tok, "<|im_end|>")};
    pu_tok_stream ts;
    if (n > 0) /* the answer continues the prompt's text (as the completions API's) */
        pu_tok_stream_init_cont(&ts, tok);
    else
        pu_tok_stream_init(&ts, tok);
    pu_session_reset(s);
    pu_status st = pu_session_eval(s, prompt, n, logits, false);
    size_t cut = (size_t)-1;
    for (int64_t k = 0; !st && k < p->max_tokens; k++) {
        int32_t id = pu_sampler_sample(&smp, logits, NULL);
        if (id == stop_ids[0] || (stop_ids[1] >= 0 && id == stop_ids[1]))
            break;
        pu_sampler_accept(&smp, id);
        size_t before = out->len;
        st = pu_tok_stream_feed(&ts, id, out);
        if (st)
            break;
        /* stop strings: search the tail that could contain a new match */
        for (int j = 0; j < p->n_stops; j++) {
            size_t sl = strlen(p->stops[j]);
            if (!sl)
                continue;
            size_t from = before >= sl ? before - sl + 1 : 0;
            char *hit = out->len ? strstr(out->p + from, p->stops[j]) : NULL;
            if (hit && (size_t)(hit - out->p) < cut)
                cut = (size_t)(hit - out->p);
        }
        if (cut != (size_t)-1)
            break;
        if (pu_session_pos(s) >= pu_session_n_ctx(s))
            break;
        st = pu_session_eval(s, &id, 1, logits, false);
    }
    if (!st && cut == (size_t)-1)
        pu_tok_stream_flush(&ts, out);
    if (cut != (size_t)-1 && out->p) {
        out->len = cut;
        out->p[cut] = 0;
    }
    pu_free(logits);
    pu_sampler_deinit(&smp);
    return st;
}
