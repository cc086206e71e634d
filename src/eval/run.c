/*
 * run.c — the evaluation runner behind `puyu eval`.
 *
 * For each task: load spec + dataset, build every sample (few-shot prompt),
 * then
 *   ppl:    tokenize context (with BOS) and each option (the option's ids are
 *           encode(context+option) minus the context's ids when those are a
 *           prefix, else encode(option) alone), left-truncate the context to
 *           fit, score all options with one prefill (pu_eval_score_options),
 *           predict argmax loglik (acc) and argmax loglik/length (acc_norm);
 *   gen:    generate (local session or --api), extract the answer, compare;
 *   needle: for every (length, depth) cell, place the needle in a haystack
 *           of that many tokens, ask, score by containment.
 * Every finished sample is appended (one JSON line, flushed) to
 * OUT/cache/<task>.jsonl; a rerun reuses a cached line when its "key" (hash
 * of the model identity, prompt and options) matches, so an interrupted run
 * resumes and a changed prompt/model is recomputed. At the end
 * predictions.jsonl, results.json, results.md and report.html are written
 * atomically (needle heatmaps also as needle_<task>.svg).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <pthread.h>

#include "eval_impl.h"
#include "puyu/pu_chat.h"
#include "puyu/pu_engine.h"
#include "puyu/pu_lora.h"

typedef struct ev_runner {
    const pu_eval_opts *o;
    pu_model *model;
    pu_tok *tok;
    pu_session *sess;
    int64_t V, n_ctx;
    char *model_id; /* identity for cache keys */
    pu_eval_api api;
    bool use_api;
    pu_engine *engine; /* batched local generation (created on first use) */
    pu_lora **lora;    /* --lora adapters (owned), on the session and every engine request */
    float *lora_sc;
    int n_lora;
} ev_runner;

typedef struct ev_task_result {
    char *name;
    pu_eval_mode mode;
    json_t *summary; /* object */
    json_t *preds;   /* array of prediction objects */
    char *svg;       /* needle heatmap */
    char *error;
} ev_task_result;

/* ---------------------------------------------------------------- helpers */

static pu_status enc(const ev_runner *r, const char *text, bool bos, int32_t **ids, int64_t *n) {
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = bos && pu_tok_bos(r->tok) >= 0;
    eo.parse_special = true;
    *ids = NULL;
    *n = 0;
    return pu_tok_encode(r->tok, text, strlen(text), &eo, ids, n);
}

static json_t *ids_json(const int32_t *ids, int64_t n) {
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static pu_status chat_wrap(const char *prompt, pu_str *out) {
    pu_chat c;
    pu_chat_init(&c);
    pu_chat_add(&c, "user", NULL, prompt);
    pu_chat_render_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.add_generation_prompt = true;
    pu_status st = pu_chat_render(&c, &ro, out);
    pu_chat_free(&c);
    return st;
}

static char *key_of(const ev_runner *r, const pu_eval_sample *s, const char *extra) {
    pu_str k = {0};
    pu_str_puts(&k, r->model_id);
    pu_str_putc(&k, 1);
    pu_str_puts(&k, extra ? extra : "");
    pu_str_putc(&k, 1);
    if (s) {
        pu_str_puts(&k, s->context ? s->context : "");
        for (int i = 0; i < s->n_options; i++) {
            pu_str_putc(&k, 2);
            if (s->options)
                pu_str_puts(&k, s->options[i]);
            if (s->option_ids)
                for (int64_t j = 0; j < s->option_lens[i]; j++)
                    pu_str_appendf(&k, "%d,", s->option_ids[i][j]);
        }
        for (int64_t j = 0; j < s->n_context_ids; j++)
            pu_str_appendf(&k, "%d,", s->context_ids[j]);
        pu_str_putc(&k, 3);
        pu_str_puts(&k, s->gold_text ? s->gold_text : "");
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)pu_hash64(k.p, k.len));
    pu_str_free(&k);
    return pu_strdup(hex);
}

/* cache: OUT/cache/<task>.jsonl -> object id -> prediction */
static json_t *cache_load(const char *path) {
    json_t *m = json_object();
    char *buf = NULL;
    size_t len = 0;
    if (!pu_file_exists(path) || pu_file_read_all(path, &buf, &len) != PU_OK) {
        pu_err_clear();
        return m;
    }
    char *p = buf;
    int64_t line = 0, bad = 0;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        json_error_t e;
        json_t *o = l ? json_loadb(p, l, 0, &e) : NULL;
        json_t *id = o ? json_object_get(o, "id") : NULL;
        if (o && json_is_string(id))
            json_object_set(m, json_string_value(id), o);
        else if (l)
            bad++;
        json_decref(o);
        p = nl ? nl + 1 : NULL;
    }
    if (bad)
        pu_log_warn("%s: ignored %lld unreadable line(s) (an interrupted write?)", path,
                    (long long)bad);
    pu_free(buf);
    return m;
}

static void cache_append(FILE *f, json_t *pred) {
    if (!f)
        return;
    char *s = json_dumps(pred, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) {
        fputs(s, f);
        fputc('\n', f);
        fflush(f);
        free(s);
    }
}

static json_t *cached(json_t *cache, const char *id, const char *key) {
    json_t *c = json_object_get(cache, id);
    if (c && json_is_string(json_object_get(c, "key")) &&
        !strcmp(json_string_value(json_object_get(c, "key")), key))
        return c;
    return NULL;
}

/* -------------------------------------------------------------- ppl sample */

static pu_status run_ppl_sample(ev_runner *r, const pu_eval_task *t, pu_eval_sample *s,
                                json_t *pred) {
    int n = s->n_options;
    int32_t *ctx = NULL;
    int64_t nc = 0;
    int32_t **opt = pu_calloc((size_t)(n ? n : 1), sizeof *opt);
    int64_t *ol = pu_calloc((size_t)(n ? n : 1), sizeof *ol);
    double *ll = pu_calloc((size_t)(n ? n : 1), sizeof *ll);
    pu_status st = PU_OK;
    if (n < 1 || n > 26) {
        pu_free(opt);
        pu_free(ol);
        pu_free(ll);
        return pu_err_set(PU_ERR_FORMAT, "sample %s: %d options (expected 1 to 26)", s->id, n);
    }
    if (s->context_ids) { /* token-id dataset */
        nc = s->n_context_ids;
        ctx = pu_malloc((size_t)(nc ? nc : 1) * sizeof *ctx);
        memcpy(ctx, s->context_ids, (size_t)nc * sizeof *ctx);
        for (int i = 0; i < n; i++) {
            ol[i] = s->option_lens[i];
            opt[i] = pu_malloc((size_t)(ol[i] ? ol[i] : 1) * sizeof **opt);
            memcpy(opt[i], s->option_ids[i], (size_t)ol[i] * sizeof **opt);
        }
    } else if (!r->tok) {
        st = pu_err_set(PU_ERR_INVALID, "task '%s' needs a tokenizer (pass -t TOKENIZER)", t->name);
    } else {
        st = enc(r, s->context, true, &ctx, &nc);
        for (int i = 0; !st && i < n; i++) {
            pu_str whole = {0};
            pu_str_puts(&whole, s->context);
            pu_str_puts(&whole, s->options[i]);
            int32_t *w = NULL;
            int64_t nw = 0;
            st = enc(r, whole.p, true, &w, &nw);
            pu_str_free(&whole);
            if (st)
                break;
            bool prefix = nw > nc && !memcmp(w, ctx, (size_t)nc * sizeof *ctx);
            if (prefix) {
                ol[i] = nw - nc;
                opt[i] = pu_malloc((size_t)ol[i] * sizeof **opt);
                memcpy(opt[i], w + nc, (size_t)ol[i] * sizeof **opt);
            } else {
                st = enc(r, s->options[i], false, &opt[i], &ol[i]);
            }
            pu_free(w);
        }
    }
    int64_t maxo = 0;
    for (int i = 0; i < n; i++)
        maxo = ol[i] > maxo ? ol[i] : maxo;
    int64_t dropped = 0;
    if (!st) {
        int64_t room = r->n_ctx - (maxo > 0 ? maxo - 1 : 0);
        if (room < 2)
            st = pu_err_set(PU_ERR_RANGE,
                            "sample %s: an option of %lld tokens does not fit the "
                            "context of %lld tokens",
                            s->id, (long long)maxo, (long long)r->n_ctx);
        else if (nc > room) { /* left-truncate, keeping BOS */
            bool bos =
                r->tok ? pu_tok_bos(r->tok) >= 0 && ctx[0] == pu_tok_bos(r->tok) : ctx[0] == 1;
            int64_t keep_from = nc - (room - (bos ? 1 : 0));
            dropped = keep_from - (bos ? 1 : 0);
            int64_t w = bos ? 1 : 0;
            for (int64_t k = keep_from; k < nc; k++)
                ctx[w++] = ctx[k];
            nc = w;
        }
    }
    if (!st)
        st = pu_eval_score_options(r->sess, r->V, ctx, nc, (const int32_t *const *)opt, ol, n, ll);
    if (!st) {
        int best = 0, bestn = 0;
        double bn = -INFINITY;
        for (int i = 0; i < n; i++) {
            double len = !strcmp(t->length_norm, "bytes") && s->options
                             ? (double)strlen(s->options[i])
                             : (double)ol[i];
            double v = ll[i] / (len > 0 ? len : 1);
            if (ll[i] > ll[best])
                best = i;
            if (v > bn) {
                bn = v;
                bestn = i;
            }
        }
        char l1[2] = {(char)('A' + best), 0}, l2[2] = {(char)('A' + bestn), 0};
        json_object_set_new(pred, "prediction", json_string(l1));
        json_object_set_new(pred, "gold", s->gold_text ? json_string(s->gold_text) : json_null());
        json_object_set_new(pred, "correct", json_boolean(best == s->gold));
        json_object_set_new(pred, "prediction_norm", json_string(l2));
        json_object_set_new(pred, "correct_norm", json_boolean(bestn == s->gold));
        json_t *la = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(la, json_real(ll[i]));
        json_object_set_new(pred, "logliks", la);
        json_object_set_new(pred, "context_ids", ids_json(ctx, nc));
        json_t *oa = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(oa, ids_json(opt[i], ol[i]));
        json_object_set_new(pred, "option_ids", oa);
        if (dropped)
            json_object_set_new(pred, "context_truncated", json_integer(dropped));
    }
    pu_free(ctx);
    for (int i = 0; i < n; i++)
        pu_free(opt[i]);
    pu_free(opt);
    pu_free(ol);
    pu_free(ll);
    return st;
}

/* ------------------------------------------------------------- generation */

/* The prompt as token ids: wrapped in the chat template with --chat,
 * tokenized with BOS, left-truncated (BOS kept) so that prompt + max_tokens
 * fits the context. */
static pu_status prompt_ids(ev_runner *r, const char *prompt, int64_t max_tokens, int32_t **ids,
                            int64_t *n) {
    *ids = NULL;
    *n = 0;
    pu_str chat = {0};
    if (r->o->chat) { /* <|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n */
        pu_status cs = chat_wrap(prompt, &chat);
        if (cs) {
            pu_str_free(&chat);
            return cs;
        }
        prompt = chat.p;
    }
    pu_status st = enc(r, prompt, true, ids, n);
    pu_str_free(&chat);
    if (st)
        return st;
    int64_t room = r->n_ctx - max_tokens;
    if (room < 8)
        room = r->n_ctx / 2;
    if (*n > room) {
        bool bos = pu_tok_bos(r->tok) >= 0 && (*ids)[0] == pu_tok_bos(r->tok);
        int64_t from = *n - (room - (bos ? 1 : 0)), w = bos ? 1 : 0;
        for (int64_t k = from; k < *n; k++)
            (*ids)[w++] = (*ids)[k];
        *n = w;
    }
    return PU_OK;
}

static pu_status generate(ev_runner *r, const char *prompt, const pu_eval_gen_params *gp,
                          pu_str *out, int64_t *prompt_tokens) {
    *prompt_tokens = -1;
    bool chat_api = r->use_api && pu_eval_api_is_chat(r->api.url);
    if (r->use_api && (!r->tok || chat_api)) { /* text prompt */
        pu_str chat = {0};
        if (r->o->chat && !chat_api) {
            pu_status cs = chat_wrap(prompt, &chat);
            if (cs) {
                pu_str_free(&chat);
                return cs;
            }
            prompt = chat.p;
        }
        pu_status s0 = pu_eval_generate_api(&r->api, prompt, NULL, 0, gp, out);
        pu_str_free(&chat);
        return s0;
    }
    if (!r->tok)
        return pu_err_set(PU_ERR_INVALID, "generation needs a tokenizer (pass -t TOKENIZER)");
    int32_t *ids = NULL;
    int64_t n = 0;
    PU_TRY(prompt_ids(r, prompt, gp->max_tokens, &ids, &n));
    *prompt_tokens = n;
    /* --api with a tokenizer: send the very ids a local run would use */
    pu_status st = r->use_api ? pu_eval_generate_api(&r->api, prompt, ids, n, gp, out)
                              : pu_eval_generate_local(r->sess, r->V, r->tok, ids, n, gp, out);
    pu_free(ids);
    return st;
}

static void gen_params(const ev_runner *r, const pu_eval_task *t, pu_eval_gen_params *gp) {
    memset(gp, 0, sizeof *gp);
    gp->max_tokens = r->o->max_tokens > 0 ? r->o->max_tokens : t->max_tokens;
    gp->stops = (const char *const *)t->stops;
    gp->n_stops = t->n_stops;
    gp->temperature = (float)t->temperature;
    gp->seed = 1234;
}

/* extraction + metric of one generated output; fills pred */
static pu_status gen_finish(const ev_runner *r, const pu_eval_task *t, const pu_eval_sample *s,
                            const char *text, int64_t ptok, json_t *pred) {
    pu_str out = {0};
    pu_str_puts(&out, text ? text : "");
    pu_str ext = {0};
    bool have = true;
    pu_status st = PU_OK;
    json_t *correct = json_null();
    switch (t->extract) {
    case PU_EVAL_EXTRACT_CHOICE: {
        int k = pu_eval_extract_choice(out.p, s->n_options > 0 ? s->n_options : 4);
        have = k >= 0;
        if (have)
            pu_str_putc(&ext, (char)('A' + k));
        break;
    }
    case PU_EVAL_EXTRACT_NUMBER: have = pu_eval_extract_last_number(out.p, &ext); break;
    case PU_EVAL_EXTRACT_REGEX:
        st = pu_eval_extract_regex(out.p, t->extract_pattern, t->extract_group, &ext, &have);
        break;
    default: {
        const char *a = out.p, *b = out.p + out.len;
        while (a < b && (*a == ' ' || *a == '\n' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\n' || b[-1] == '\t'))
            b--;
        pu_str_append(&ext, a, (size_t)(b - a));
        break;
    }
    }
    if (!ext.p)
        pu_str_puts(&ext, "");
    if (t->metric == PU_EVAL_METRIC_ACCURACY || t->metric == PU_EVAL_METRIC_EXACT_MATCH)
        correct = json_boolean(have && s->gold_text && pu_eval_answers_match(ext.p, s->gold_text));
    if (t->metric == PU_EVAL_METRIC_PASS_AT_1 && !st && s->code_test) {
        bool passed = false;
        pu_str detail = {0};
        /* the raw completion: leading indentation is part of the function body */
        st = pu_eval_exec_code(s->code_prompt, out.p, s->code_test, r->o->exec_timeout_s, &passed,
                               &detail);
        if (!st) {
            correct = json_boolean(passed);
            json_object_set_new(pred, "exec", json_string(detail.p ? detail.p : ""));
        }
        pu_str_free(&detail);
    }
    json_object_set_new(pred, "prediction", have ? json_string(ext.p) : json_null());
    json_object_set_new(pred, "gold", s->gold_text ? json_string(s->gold_text) : json_null());
    json_object_set_new(pred, "correct", correct);
    json_object_set_new(pred, "output", json_string(out.p));
    if (ptok >= 0)
        json_object_set_new(pred, "prompt_tokens", json_integer(ptok));
    pu_str_free(&out);
    pu_str_free(&ext);
    return st;
}

static pu_status run_gen_sample(ev_runner *r, const pu_eval_task *t, pu_eval_sample *s,
                                json_t *pred) {
    pu_eval_gen_params gp;
    gen_params(r, t, &gp);
    pu_str out = {0};
    int64_t ptok = -1;
    pu_status st = generate(r, s->context, &gp, &out, &ptok);
    if (!st)
        st = gen_finish(r, t, s, out.p, ptok, pred);
    pu_str_free(&out);
    return st;
}

/* ------------------------------------------------- batched generation */

typedef struct ev_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
} ev_wait;

typedef struct ev_job {
    ev_wait *w;
    pu_str out; /* appended on the engine thread until done */
    int64_t n_prompt;
    pu_finish_reason fin;
    char err[256];
    bool done;
} ev_job;

static void job_cb(const pu_engine_event *ev, void *ud) {
    ev_job *j = ud;
    if (ev->text && ev->text_len)
        pu_str_append(&j->out, ev->text, ev->text_len);
    if (ev->finish == PU_FINISH_NONE)
        return;
    pthread_mutex_lock(&j->w->mu);
    j->fin = ev->finish;
    if (ev->finish == PU_FINISH_ERROR)
        snprintf(j->err, sizeof j->err, "%s", ev->error ? ev->error : "engine error");
    j->done = true;
    j->w->pending--;
    pthread_cond_broadcast(&j->w->cv);
    pthread_mutex_unlock(&j->w->mu);
}

/* Generate the samples with fresh[k] set through the batching engine (one
 * request per sample, all queued at once; identical few-shot prefixes share
 * KV blocks), then extract/score each. */
static pu_status gen_batch(ev_runner *r, const pu_eval_task *t, pu_eval_sample *ss, json_t **preds,
                           const bool *fresh, int m) {
    if (!r->engine) {
        pu_engine_params ep = pu_engine_default_params();
        ep.ctx = r->n_ctx;
        ep.max_batch = r->o->batch > 1 ? r->o->batch : 16;
        ep.kv_tokens = r->n_ctx * (ep.max_batch < 4 ? ep.max_batch : 4);
        ep.kv_type = r->o->kv_type;
        PU_TRY(pu_engine_create(r->model, r->tok, &ep, &r->engine));
    }
    pu_eval_gen_params gp;
    gen_params(r, t, &gp);
    ev_wait w;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.pending = 0;
    ev_job *jobs = pu_calloc((size_t)(m ? m : 1), sizeof *jobs);
    pu_status st = PU_OK;
    int bad = -1;
    for (int k = 0; k < m && !st; k++) {
        if (!fresh[k])
            continue;
        jobs[k].w = &w;
        int32_t *ids = NULL;
        int64_t n = 0;
        st = prompt_ids(r, ss[k].context, gp.max_tokens, &ids, &n);
        if (!st) {
            pu_engine_request rq;
            memset(&rq, 0, sizeof rq);
            rq.prompt = ids;
            rq.n_prompt = n;
            rq.continuation = n > 0; /* as the local session and the completions API */
            rq.max_tokens = gp.max_tokens;
            rq.sample = pu_sample_default_params();
            rq.sample.temperature = gp.temperature;
            rq.sample.top_k = 0;
            rq.sample.top_p = 1.0f;
            rq.sample.min_p = 0.0f;
            rq.sample.repetition_penalty = 1.0f;
            rq.sample.seed = gp.seed;
            rq.stop_strings = gp.stops;
            rq.n_stop_strings = gp.n_stops;
            rq.cb = job_cb;
            rq.ud = &jobs[k];
            rq.lora = (const pu_lora *const *)r->lora;
            rq.lora_scales = r->lora_sc;
            rq.n_lora = r->n_lora;
            jobs[k].n_prompt = n;
            pthread_mutex_lock(&w.mu);
            w.pending++;
            pthread_mutex_unlock(&w.mu);
            int64_t id = 0;
            st = pu_engine_submit(r->engine, &rq, &id);
            if (st) {
                pthread_mutex_lock(&w.mu);
                w.pending--;
                pthread_mutex_unlock(&w.mu);
            }
        }
        pu_free(ids);
        if (st)
            bad = k;
    }
    /* wait for everything submitted (also after an error) */
    pthread_mutex_lock(&w.mu);
    while (w.pending > 0)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (st && bad >= 0)
        st = pu_err_prefix(st, "sample %s: ", ss[bad].id);
    for (int k = 0; k < m && !st; k++) {
        if (!fresh[k])
            continue;
        if (jobs[k].fin == PU_FINISH_ERROR || jobs[k].fin == PU_FINISH_CANCELLED) {
            st = pu_err_set(PU_ERR_INTERNAL, "sample %s: generation %s: %s", ss[k].id,
                            pu_finish_reason_str(jobs[k].fin), jobs[k].err);
            break;
        }
        /* the engine holds back stop strings; cut again in case one spans events */
        if (jobs[k].out.p)
            for (int j = 0; j < gp.n_stops; j++) {
                char *h = gp.stops[j][0] ? strstr(jobs[k].out.p, gp.stops[j]) : NULL;
                if (h) {
                    jobs[k].out.len = (size_t)(h - jobs[k].out.p);
                    *h = 0;
                }
            }
        st = gen_finish(r, t, &ss[k], jobs[k].out.p, jobs[k].n_prompt, preds[k]);
    }
    for (int k = 0; k < m; k++)
        pu_str_free(&jobs[k].out);
    pu_free(jobs);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return st;
}

/* ----------------------------------------------------------------- needle */

static bool sentence_end(const char *p) {
    return *p == '.' || *p == '\n' || !strncmp(p, "。", 3) || !strncmp(p, "！", 3) ||
           !strncmp(p, "？", 3);
}

static void replace_all(const char *tmpl, const char *key, const char *val, pu_str *out) {
    size_t kl = strlen(key);
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, key, kl)) {
            pu_str_puts(out, val);
            p += kl;
        } else {
            pu_str_putc(out, *p++);
        }
    }
}

/* haystack text of about `tokens` tokens with the needle at depth% */
static pu_status needle_prompt(ev_runner *r, const pu_eval_task *t, const char *hay, size_t hay_len,
                               int64_t L, int64_t depth, pu_str *prompt) {
    /* token budget of the haystack: L minus the rest of the prompt */
    pu_str rest = {0};
    replace_all(t->needle_prompt, "{question}", t->needle_question, &rest);
    pu_str tmp = {0};
    replace_all(rest.p, "{haystack}", t->needle, &tmp);
    int64_t other = 0;
    if (r->tok) {
        int32_t *ids = NULL;
        PU_TRY(enc(r, tmp.p, true, &ids, &other));
        pu_free(ids);
    } else {
        other = (int64_t)(tmp.len / 4);
    }
    pu_str_free(&tmp);
    int64_t H = L - other;
    if (H < 1)
        H = 1;
    /* source text: repeat the haystack until it is long enough */
    size_t want = (size_t)H * 8 + 64;
    pu_str src = {0};
    while (src.len < want)
        pu_str_append(&src, hay, hay_len < want - src.len ? hay_len : want - src.len);
    pu_str text = {0};
    if (r->tok) {
        int32_t *ids = NULL;
        int64_t n = 0;
        pu_status st = enc(r, src.p, false, &ids, &n);
        if (!st)
            st = pu_tok_decode(r->tok, ids, n < H ? n : H, &text);
        pu_free(ids);
        if (st) {
            pu_str_free(&src);
            pu_str_free(&rest);
            pu_str_free(&text);
            return st;
        }
    } else {
        size_t b = (size_t)H * 4;
        if (b > src.len)
            b = src.len;
        while (b > 0 && ((unsigned char)src.p[b] & 0xC0) == 0x80) /* UTF-8 boundary */
            b--;
        pu_str_append(&text, src.p, b);
    }
    pu_str_free(&src);
    if (!text.p)
        pu_str_puts(&text, "");
    /* insertion point: depth% of the text, moved back after a sentence end */
    size_t pos = (size_t)((double)text.len * (double)depth / 100.0);
    if (pos >= text.len)
        pos = text.len;
    else {
        size_t q = pos;
        while (q > 0 && !sentence_end(text.p + q - 1))
            q--;
        /* q is just after a one-byte end; for 3-byte ends, step past them */
        if (q > 0 && !sentence_end(text.p + q - 1))
            q = pos;
        while (q < text.len && ((unsigned char)text.p[q] & 0xC0) == 0x80)
            q++;
        pos = q;
    }
    pu_str hs = {0};
    pu_str_append(&hs, text.p, pos);
    if (pos > 0 && hs.p[hs.len - 1] != ' ' && hs.p[hs.len - 1] != '\n')
        pu_str_putc(&hs, ' ');
    pu_str_puts(&hs, t->needle);
    pu_str_putc(&hs, ' ');
    pu_str_append(&hs, text.p + pos, text.len - pos);
    pu_str p2 = {0};
    replace_all(t->needle_prompt, "{question}", t->needle_question, &p2);
    replace_all(p2.p, "{haystack}", hs.p, prompt);
    pu_str_free(&p2);
    pu_str_free(&hs);
    pu_str_free(&text);
    pu_str_free(&rest);
    return PU_OK;
}

static bool contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    if (!n)
        return true;
    for (const char *p = hay; *p; p++)
        if (!strncasecmp(p, needle, n))
            return true;
    return false;
}

/* ------------------------------------------------------------------ tasks */

static pu_status run_needle(ev_runner *r, const pu_eval_task *t, ev_task_result *res, json_t *cache,
                            FILE *cf) {
    const int64_t *Ls = r->o->needle_lengths ? r->o->needle_lengths : t->lengths;
    int nL = r->o->needle_lengths ? r->o->n_needle_lengths : t->n_lengths;
    const int64_t *Ds = r->o->needle_depths ? r->o->needle_depths : t->depths;
    int nD = r->o->needle_depths ? r->o->n_needle_depths : t->n_depths;
    pu_str hay = {0};
    PU_TRY(ev_read_haystack(t, r->o->data_dir, &hay));
    double *sc = pu_calloc((size_t)nL * (size_t)nD, sizeof *sc);
    pu_progress pg;
    pu_progress_init(&pg, t->name, (int64_t)nL * nD, "cell");
    pg.enabled = pg.enabled && r->o->progress;
    pu_status st = PU_OK;
    int64_t done = 0, n_cached = 0, n_run = 0;
    double sum = 0;
    for (int di = 0; di < nD && !st; di++) {
        for (int li = 0; li < nL && !st; li++) {
            double *cell = &sc[di * nL + li];
            *cell = NAN;
            if (!r->use_api && Ls[li] + 8 > r->n_ctx) {
                pu_log_warn("%s: length %lld does not fit the context of %lld tokens: cell skipped",
                            t->name, (long long)Ls[li], (long long)r->n_ctx);
                continue;
            }
            char id[64];
            snprintf(id, sizeof id, "L%lld_d%lld", (long long)Ls[li], (long long)Ds[di]);
            pu_str prompt = {0};
            st = needle_prompt(r, t, hay.p, hay.len, Ls[li], Ds[di], &prompt);
            if (st) {
                pu_str_free(&prompt);
                break;
            }
            pu_eval_sample ks = {0};
            ks.context = prompt.p;
            ks.gold_text = t->needle_answer;
            char nk[64];
            snprintf(nk, sizeof nk, "needle|%lld",
                     (long long)(r->o->max_tokens > 0 ? r->o->max_tokens : t->max_tokens));
            char *key = key_of(r, &ks, nk);
            json_t *c = cached(cache, id, key);
            json_t *pred;
            if (c) {
                pred = json_incref(c);
                n_cached++;
            } else {
                pred = json_object();
                json_object_set_new(pred, "task", json_string(t->name));
                json_object_set_new(pred, "id", json_string(id));
                json_object_set_new(pred, "key", json_string(key));
                pu_eval_gen_params gp = {0};
                gp.max_tokens = r->o->max_tokens > 0 ? r->o->max_tokens : t->max_tokens;
                gp.stops = (const char *const *)t->stops;
                gp.n_stops = t->n_stops;
                pu_str out = {0};
                int64_t ptok = -1;
                st = generate(r, prompt.p, &gp, &out, &ptok);
                if (!st) {
                    bool ok = contains_ci(out.p ? out.p : "", t->needle_answer);
                    json_object_set_new(pred, "length", json_integer(Ls[li]));
                    json_object_set_new(pred, "depth", json_integer(Ds[di]));
                    json_object_set_new(pred, "prediction", json_string(out.p ? out.p : ""));
                    json_object_set_new(pred, "gold", json_string(t->needle_answer));
                    json_object_set_new(pred, "correct", json_boolean(ok));
                    if (ptok >= 0)
                        json_object_set_new(pred, "prompt_tokens", json_integer(ptok));
                    cache_append(cf, pred);
                    n_run++;
                }
                pu_str_free(&out);
            }
            pu_free(key);
            pu_str_free(&prompt);
            if (!st) {
                *cell = json_is_true(json_object_get(pred, "correct")) ? 1.0 : 0.0;
                sum += *cell;
                done++;
                json_array_append(res->preds, pred);
            }
            json_decref(pred);
            pu_progress_update(&pg, (int64_t)di * nL + li + 1, NULL);
        }
    }
    pu_progress_finish(&pg, NULL);
    json_t *S = res->summary;
    json_object_set_new(S, "mode", json_string("needle"));
    json_object_set_new(S, "n", json_integer(done));
    json_object_set_new(S, "cached", json_integer(n_cached));
    json_object_set_new(S, "primary", json_string("score"));
    json_object_set_new(S, "score", done ? json_real(sum / (double)done) : json_null());
    json_object_set_new(S, "length_unit",
                        json_string(r->tok ? "tokens" : "approx_tokens (4 bytes)"));
    json_t *jl = json_array(), *jd = json_array(), *grid = json_array();
    for (int li = 0; li < nL; li++)
        json_array_append_new(jl, json_integer(Ls[li]));
    for (int di = 0; di < nD; di++) {
        json_array_append_new(jd, json_integer(Ds[di]));
        json_t *row = json_array();
        for (int li = 0; li < nL; li++) {
            double v = sc[di * nL + li];
            json_array_append_new(row, isnan(v) ? json_null() : json_real(v));
        }
        json_array_append_new(grid, row);
    }
    json_object_set_new(S, "lengths", jl);
    json_object_set_new(S, "depths", jd);
    json_object_set_new(S, "scores", grid);
    pu_str svg = {0};
    char title[200];
    snprintf(title, sizeof title, "%s: needle retrieval (rows: depth %%, columns: length)",
             t->name);
    pu_eval_heatmap_svg(title, Ls, nL, Ds, nD, sc, &svg);
    res->svg = pu_str_steal(&svg);
    (void)n_run;
    pu_free(sc);
    pu_str_free(&hay);
    return st;
}

static pu_status run_task(ev_runner *r, const pu_eval_task *t, ev_task_result *res) {
    const pu_eval_opts *o = r->o;
    res->summary = json_object();
    res->preds = json_array();
    if (t->mode == PU_EVAL_PPL && r->use_api)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "task '%s' is a ppl task: it needs a local model (-m), not --api",
                          t->name);
    char *cdir = pu_path_join(o->out_dir, "cache");
    PU_TRY(pu_mkdir_p(cdir));
    char fn[300];
    snprintf(fn, sizeof fn, "%s.jsonl", t->name);
    for (char *c = fn; *c; c++) /* a file name, whatever the task name holds */
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-' || *c == '.'))
            *c = '_';
    char *cpath = pu_path_join(cdir, fn);
    pu_free(cdir);
    json_t *cache = o->no_resume ? json_object() : cache_load(cpath);
    FILE *cf = fopen(cpath, o->no_resume ? "w" : "a");
    if (!cf)
        pu_log_warn("%s: cannot open the per-sample cache for writing", cpath);
    pu_free(cpath);
    pu_status st = PU_OK;
    if (t->mode == PU_EVAL_NEEDLE) {
        st = run_needle(r, t, res, cache, cf);
        if (cf)
            fclose(cf);
        json_decref(cache);
        return st;
    }
    pu_eval_data *d = NULL;
    st = pu_eval_data_load(t, o->data_dir, &d);
    if (st) {
        if (cf)
            fclose(cf);
        json_decref(cache);
        return st;
    }
    int64_t n = pu_eval_data_count(d);
    if (o->limit > 0 && o->limit < n)
        n = o->limit;
    int shots = o->shots >= 0 ? o->shots : t->shots;
    pu_progress pg;
    pu_progress_init(&pg, t->name, n, "sample");
    pg.enabled = pg.enabled && o->progress;
    int64_t n_ok = 0, n_norm = 0, n_scored = 0, n_cached = 0, n_extract_fail = 0;
    /* batched local generation goes through the engine, a chunk at a time */
    bool batched = t->mode == PU_EVAL_GEN && !r->use_api && r->tok && o->batch != 1;
    const int64_t CH = batched ? 64 : 1;
    char extra[64];
    snprintf(extra, sizeof extra, "%s|%d|%lld|%lld", t->name, shots, (long long)r->n_ctx,
             (long long)o->max_tokens);
    for (int64_t i0 = 0; i0 < n && !st; i0 += CH) {
        int m = (int)(i0 + CH < n ? CH : n - i0), built = 0;
        pu_eval_sample *ss = pu_calloc((size_t)m, sizeof *ss);
        json_t **preds = pu_calloc((size_t)m, sizeof *preds);
        bool *fresh = pu_calloc((size_t)m, sizeof *fresh);
        int n_fresh = 0;
        for (int k = 0; k < m && !st; k++) {
            st = pu_eval_sample_build(t, d, i0 + k, shots, &ss[k]);
            if (st)
                break;
            built++;
            char *key = key_of(r, &ss[k], extra);
            json_t *c = cached(cache, ss[k].id, key);
            if (c) {
                preds[k] = json_incref(c);
                n_cached++;
            } else {
                preds[k] = json_object();
                json_object_set_new(preds[k], "task", json_string(t->name));
                json_object_set_new(preds[k], "id", json_string(ss[k].id));
                json_object_set_new(preds[k], "key", json_string(key));
                fresh[k] = true;
                n_fresh++;
            }
            pu_free(key);
        }
        if (!st && n_fresh) {
            if (batched) {
                st = gen_batch(r, t, ss, preds, fresh, m);
                if (st)
                    st = pu_err_prefix(st, "task '%s': ", t->name);
            } else {
                for (int k = 0; k < m && !st; k++) {
                    if (!fresh[k])
                        continue;
                    st = t->mode == PU_EVAL_PPL ? run_ppl_sample(r, t, &ss[k], preds[k])
                                                : run_gen_sample(r, t, &ss[k], preds[k]);
                    if (st)
                        st = pu_err_prefix(st, "task '%s' sample %s: ", t->name, ss[k].id);
                }
            }
        }
        for (int k = 0; k < built && !st; k++) {
            if (fresh[k])
                cache_append(cf, preds[k]);
            json_t *cv = json_object_get(preds[k], "correct");
            if (json_is_boolean(cv)) {
                n_scored++;
                n_ok += json_is_true(cv);
            }
            n_norm += json_is_true(json_object_get(preds[k], "correct_norm"));
            if (t->mode == PU_EVAL_GEN && json_is_null(json_object_get(preds[k], "prediction")))
                n_extract_fail++;
            json_array_append(res->preds, preds[k]);
        }
        for (int k = 0; k < m; k++) {
            json_decref(preds[k]);
            if (k < built)
                pu_eval_sample_free(&ss[k]);
        }
        pu_free(ss);
        pu_free(preds);
        pu_free(fresh);
        char extra_s[64];
        snprintf(extra_s, sizeof extra_s, "%s %.3f", t->primary,
                 n_scored
                     ? (double)(!strcmp(t->primary, "acc_norm") ? n_norm : n_ok) / (double)n_scored
                     : 0.0);
        pu_progress_update(&pg, i0 + m, extra_s);
    }
    pu_progress_finish(&pg, NULL);
    if (cf)
        fclose(cf);
    json_decref(cache);
    pu_eval_data_destroy(d);
    json_t *S = res->summary;
    json_object_set_new(S, "mode", json_string(t->mode == PU_EVAL_PPL ? "ppl" : "gen"));
    json_object_set_new(S, "n", json_integer(n));
    json_object_set_new(S, "shots", json_integer(shots));
    json_object_set_new(S, "cached", json_integer(n_cached));
    json_object_set_new(S, "primary", json_string(t->primary));
    if (t->mode == PU_EVAL_PPL) {
        json_object_set_new(S, "acc", n ? json_real((double)n_ok / (double)n) : json_null());
        json_object_set_new(S, "acc_norm", n ? json_real((double)n_norm / (double)n) : json_null());
        json_object_set_new(S, "length_norm", json_string(t->length_norm));
    } else if (t->metric == PU_EVAL_METRIC_PASS_AT_1) {
        json_object_set_new(S, "pass@1",
                            n_scored ? json_real((double)n_ok / (double)n_scored) : json_null());
        json_object_set_new(S, "note", json_string("completions executed against the tests in "
                                                   "the sandbox (see predictions: exec)"));
    } else {
        const char *mk = t->metric == PU_EVAL_METRIC_ACCURACY ? "acc" : "em";
        json_object_set_new(S, mk,
                            n_scored ? json_real((double)n_ok / (double)n_scored) : json_null());
        json_object_set_new(S, "extraction_failures", json_integer(n_extract_fail));
    }
    json_t *pv = json_object_get(S, t->primary);
    json_object_set(S, "score", pv ? pv : json_null());
    return st;
}

/* ---------------------------------------------------------------- reports */

static void fmt_score(const json_t *v, char *b, size_t n) {
    if (json_is_number(v))
        snprintf(b, n, "%.2f", 100.0 * json_number_value(v));
    else
        snprintf(b, n, "-");
}

static void html_escape(pu_str *o, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<')
            pu_str_puts(o, "&lt;");
        else if (*s == '>')
            pu_str_puts(o, "&gt;");
        else if (*s == '&')
            pu_str_puts(o, "&amp;");
        else if (*s == '"')
            pu_str_puts(o, "&quot;");
        else
            pu_str_putc(o, *s);
    }
}

static pu_status write_json_file(const char *dir, const char *name, json_t *j) {
    char *p = pu_path_join(dir, name);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    pu_status st = pu_file_write_atomic(p, s, strlen(s));
    free(s);
    pu_free(p);
    return st;
}

static pu_status write_reports(const ev_runner *r, ev_task_result *res, int n, pu_str *md_out) {
    const pu_eval_opts *o = r->o;
    json_t *root = json_object();
    json_object_set_new(root, "model", o->model_path ? json_string(o->model_path) : json_null());
    json_object_set_new(root, "api", o->api_url ? json_string(o->api_url) : json_null());
    json_object_set_new(root, "tokenizer", o->tok_path ? json_string(o->tok_path) : json_null());
    json_object_set_new(root, "data_dir", json_string(o->data_dir));
    json_object_set_new(root, "n_ctx", json_integer(r->n_ctx));
    char ts[32];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    json_object_set_new(root, "created", json_string(ts));
    json_t *tasks = json_object();
    pu_str md = {0}, html = {0}, pj = {0};
    pu_str_puts(&md, "| task | mode | n | metric | score | acc | acc_norm |\n"
                     "|---|---|---:|---|---:|---:|---:|\n");
    pu_str_puts(&html,
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>puyu eval "
                "report</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-"
                "collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px}"
                "td.n{text-align:right}</style></head><body>\n<h1>puyu eval report</h1>\n<p>");
    html_escape(&html, o->model_path ? o->model_path : o->api_url);
    pu_str_appendf(&html,
                   " &mdash; %s</p>\n<table><tr><th>task</th><th>mode</th><th>n</th>"
                   "<th>metric</th><th>score (%%)</th><th>acc</th><th>acc_norm</th></tr>\n",
                   ts);
    for (int i = 0; i < n; i++) {
        ev_task_result *t = &res[i];
        if (t->error)
            json_object_set_new(t->summary, "error", json_string(t->error));
        json_object_set(tasks, t->name, t->summary);
        char sc[32], a[32], an[32];
        fmt_score(json_object_get(t->summary, "score"), sc, sizeof sc);
        fmt_score(json_object_get(t->summary, "acc"), a, sizeof a);
        fmt_score(json_object_get(t->summary, "acc_norm"), an, sizeof an);
        const char *mode = json_string_value(json_object_get(t->summary, "mode"));
        const char *prim = json_string_value(json_object_get(t->summary, "primary"));
        long long nn = (long long)json_integer_value(json_object_get(t->summary, "n"));
        pu_str_appendf(&md, "| %s | %s | %lld | %s | %s | %s | %s |\n", t->name, mode ? mode : "-",
                       nn,
                       t->error ? "error"
                       : prim   ? prim
                                : "-",
                       sc, a, an);
        pu_str_puts(&html, "<tr><td>");
        html_escape(&html, t->name);
        pu_str_appendf(&html, "</td><td>%s</td><td class=n>%lld</td><td>", mode ? mode : "-", nn);
        html_escape(&html, t->error ? t->error : prim ? prim : "-");
        pu_str_appendf(&html,
                       "</td><td class=n>%s</td><td class=n>%s</td><td class=n>%s</td></tr>\n", sc,
                       a, an);
        size_t k;
        json_t *p;
        json_array_foreach(t->preds, k, p) {
            char *s = json_dumps(p, JSON_COMPACT | JSON_ENSURE_ASCII);
            if (s) {
                pu_str_puts(&pj, s);
                pu_str_putc(&pj, '\n');
                free(s);
            }
        }
    }
    pu_str_puts(&html, "</table>\n");
    for (int i = 0; i < n; i++) {
        if (!res[i].svg)
            continue;
        pu_str_puts(&html, "<h2>");
        html_escape(&html, res[i].name);
        pu_str_puts(&html, "</h2>\n");
        pu_str_puts(&html, res[i].svg);
        pu_str_putc(&html, '\n');
        char name[300];
        snprintf(name, sizeof name, "needle_%s.svg", res[i].name);
        for (char *c = name; *c; c++)
            if (*c == '/' || *c == '\\' || (unsigned char)*c < 32)
                *c = '_';
        char *p = pu_path_join(o->out_dir, name);
        pu_status st = pu_file_write_atomic(p, res[i].svg, strlen(res[i].svg));
        pu_free(p);
        if (st) {
            json_decref(root);
            pu_str_free(&md);
            pu_str_free(&html);
            pu_str_free(&pj);
            return st;
        }
    }
    pu_str_puts(&html, "<p>Per-sample predictions: <a href=\"predictions.jsonl\">predictions.jsonl"
                       "</a>; numbers: <a href=\"results.json\">results.json</a>.</p>\n"
                       "</body></html>\n");
    json_object_set_new(root, "tasks", tasks);
    pu_status st = write_json_file(o->out_dir, "results.json", root);
    json_decref(root);
    char *p;
    if (!st) {
        p = pu_path_join(o->out_dir, "results.md");
        st = pu_file_write_atomic(p, md.p, md.len);
        pu_free(p);
    }
    if (!st) {
        p = pu_path_join(o->out_dir, "report.html");
        st = pu_file_write_atomic(p, html.p, html.len);
        pu_free(p);
    }
    if (!st) {
        p = pu_path_join(o->out_dir, "predictions.jsonl");
        st = pu_file_write_atomic(p, pj.p ? pj.p : "", pj.len);
        pu_free(p);
    }
    if (md_out)
        pu_str_puts(md_out, md.p);
    pu_str_free(&md);
    pu_str_free(&html);
    pu_str_free(&pj);
    return st;
}

/* ------------------------------------------------------------------- run */

pu_status pu_eval_run(const pu_eval_opts *o, const char *const *names, int n_tasks, pu_str *md) {
    if (!o->model_path && !o->api_url)
        return pu_err_set(PU_ERR_INVALID, "eval: need a model (-m) or --api URL");
    if (!o->out_dir)
        return pu_err_set(PU_ERR_INVALID, "eval: no output directory");
    /* load every spec first: a typo fails before any compute */
    pu_eval_task **tasks = pu_calloc((size_t)(n_tasks ? n_tasks : 1), sizeof *tasks);
    pu_status st = PU_OK;
    for (int i = 0; i < n_tasks && !st; i++)
        st = pu_eval_task_load(names[i], &tasks[i]);
    ev_runner r;
    memset(&r, 0, sizeof r);
    r.o = o;
    if (!st)
        st = pu_mkdir_p(o->out_dir);
    if (!st && o->model_path) {
        st = pu_model_load(o->model_path, &r.model);
        if (!st) {
            const pu_config *c = pu_model_config(r.model);
            r.V = c->vocab_size;
            int64_t nc = o->n_ctx > 0 ? o->n_ctx : c->max_position_embeddings;
            if (o->n_ctx <= 0 && nc > 4096)
                nc = 4096;
            st = pu_session_create_ex(r.model, nc, o->kv_type, o->pool, &r.sess);
            if (!st)
                r.n_ctx = pu_session_n_ctx(r.sess);
            if (!st)
                st = pu_lora_load_list(o->lora, c, &r.lora, &r.n_lora);
            if (!st && r.n_lora) {
                r.lora_sc = pu_calloc((size_t)r.n_lora, sizeof *r.lora_sc);
                for (int i = 0; i < r.n_lora; i++)
                    r.lora_sc[i] = (float)(o->lora_scale != 0 ? o->lora_scale : 1.0);
                st = pu_session_set_adapters(r.sess, (const pu_lora *const *)r.lora, r.lora_sc,
                                             r.n_lora);
            }
        }
    }
    if (!st) {
        const char *tp = o->tok_path ? o->tok_path
                         : r.model   ? pu_model_tokenizer_path(r.model)
                                     : NULL;
        if (tp)
            st = pu_tok_load(tp, &r.tok);
    }
    if (!st && o->api_url) {
        r.use_api = true;
        r.api.url = o->api_url;
        r.api.model = o->api_model;
        r.api.timeout_s = 600;
        if (!r.n_ctx)
            r.n_ctx = o->n_ctx > 0 ? o->n_ctx : 1 << 20;
    }
    pu_str id = {0};
    pu_str_appendf(&id, "%s|%s|%s|chat=%d", o->model_path ? o->model_path : "",
                   o->api_url ? o->api_url : "", o->api_model ? o->api_model : "", (int)o->chat);
    if (r.n_lora) /* adapted models are other models for the result cache */
        pu_str_appendf(&id, "|lora=%s*%.9g", o->lora, o->lora_scale != 0 ? o->lora_scale : 1.0);
    r.model_id = pu_str_steal(&id);
    ev_task_result *res = pu_calloc((size_t)(n_tasks ? n_tasks : 1), sizeof *res);
    int n_failed = 0;
    pu_str errs = {0};
    if (!st) {
        for (int i = 0; i < n_tasks; i++) {
            res[i].name = pu_strdup(tasks[i]->name);
            res[i].mode = tasks[i]->mode;
            pu_status ts = run_task(&r, tasks[i], &res[i]);
            if (ts) {
                res[i].error = pu_strdup(pu_err_msg());
                pu_log_error("%s", pu_err_msg());
                pu_str_appendf(&errs, "%s%s", errs.len ? "; " : "", pu_err_msg());
                n_failed++;
            }
        }
        st = write_reports(&r, res, n_tasks, md);
        if (!st && n_failed)
            st = pu_err_set(PU_ERR_INVALID, "%d task(s) failed: %s", n_failed, errs.p);
    }
    pu_str_free(&errs);
    for (int i = 0; i < n_tasks; i++) {
        pu_free(res[i].name);
        json_decref(res[i].summary);
        json_decref(res[i].preds);
        pu_free(res[i].svg);
        pu_free(res[i].error);
        pu_eval_task_destroy(tasks[i]);
    }
    pu_free(res);
    pu_free(tasks);
    pu_free(r.model_id);
    pu_engine_destroy(r.engine);
    pu_session_destroy(r.sess);
    pu_lora_list_destroy(r.lora, r.n_lora);
    pu_free(r.lora_sc);
    pu_tok_destroy(r.tok);
    pu_model_destroy(r.model);
    return st;
}

/* ---------------------------------------------------------------- heatmap */

void pu_eval_heatmap_svg(const char *title, const int64_t *lengths, int nL, const int64_t *depths,
                         int nD, const double *scores, pu_str *out) {
    const int cw = 64, ch = 28, left = 70, top = 40, bottom = 50;
    int W = left + cw * nL + 20, H = top + ch * nD + bottom;
    pu_str_appendf(out,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                   "font-family=\"sans-serif\" font-size=\"11\">\n",
                   W, H);
    pu_str_puts(out, "<text x=\"4\" y=\"16\" font-size=\"13\">");
    html_escape(out, title);
    pu_str_puts(out, "</text>\n");
    for (int d = 0; d < nD; d++) {
        pu_str_appendf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%lld%%</text>\n", left - 6,
                       top + ch * d + ch / 2 + 4, (long long)depths[d]);
        for (int l = 0; l < nL; l++) {
            double v = scores[d * nL + l];
            char fill[16];
            if (isnan(v))
                snprintf(fill, sizeof fill, "#dddddd");
            else {
                double x = v < 0 ? 0 : v > 1 ? 1 : v; /* red -> yellow -> green */
                int rr = x < 0.5 ? 230 : (int)(230 - (x - 0.5) * 2 * 180);
                int gg = x < 0.5 ? (int)(60 + x * 2 * 150) : 210;
                snprintf(fill, sizeof fill, "#%02x%02x%02x", rr, gg, 60);
            }
            int x0 = left + cw * l, y0 = top + ch * d;
            pu_str_appendf(out,
                           "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" "
                           "stroke=\"#fff\"/>\n",
                           x0, y0, cw, ch, fill);
            if (!isnan(v))
                pu_str_appendf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.2f</text>\n",
                               x0 + cw / 2, y0 + ch / 2 + 4, v);
        }
    }
    for (int l = 0; l < nL; l++)
        pu_str_appendf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%lld</text>\n",
                       left + cw * l + cw / 2, top + ch * nD + 16, (long long)lengths[l]);
    pu_str_appendf(out,
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">context length (tokens)</text>\n"
                   "<text x=\"12\" y=\"%d\" transform=\"rotate(-90 12 %d)\" "
                   "text-anchor=\"middle\">needle depth</text>\n</svg>\n",
                   left + cw * nL / 2, top + ch * nD + 36, top + ch * nD / 2, top + ch * nD / 2);
}
