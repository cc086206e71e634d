/*
 * test_engine.c — the continuous-batching engine against pu_session.
 *
 * Reference: greedy ids from a plain pu_session (prefill + one token at a
 * time). The engine must produce exactly those ids for a request alone, for
 * 16 concurrent requests, with shared prefixes, and under a KV pool so small
 * that requests are preempted and recomputed. Cancellation must return every
 * block to the pool.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "puyu/pu_engine.h"
#include "puyu/pu_model.h"

#define MAXGEN 40

typedef struct {
    pthread_mutex_t mu;
    float lps[MAXGEN + 8];
    int32_t top0[MAXGEN + 8]; /* best alternative of each token */
    float top0_lp[MAXGEN + 8];
    int n_top[MAXGEN + 8];
    int32_t ids[MAXGEN + 8];
    int n;
    pu_finish_reason fin;
    bool done;
    int64_t n_cached;
    int n_events_after_done;
} sink;

static void on_event(const pu_engine_event *ev, void *ud) {
    sink *s = ud;
    pthread_mutex_lock(&s->mu);
    if (s->done)
        s->n_events_after_done++;
    if (ev->token >= 0 && s->n < MAXGEN + 8) {
        s->lps[s->n] = ev->logprob;
        s->n_top[s->n] = ev->n_top;
        s->top0[s->n] = ev->n_top > 0 ? ev->top_ids[0] : -1;
        s->top0_lp[s->n] = ev->n_top > 0 ? ev->top_logprobs[0] : 0.0f;
        for (int j = 1; j < ev->n_top; j++)
            if (ev->top_logprobs[j] > ev->top_logprobs[j - 1])
                s->n_top[s->n] = -1; /* not sorted: flagged */
        s->ids[s->n++] = ev->token;
    }
    if (ev->finish != PU_FINISH_NONE) {
        s->fin = ev->finish;
        s->done = true;
        s->n_cached = ev->n_cached;
    }
    pthread_mutex_unlock(&s->mu);
}

static bool wait_done(sink *s, double timeout) {
    double t0 = pu_time_now();
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool d = s->done;
        pthread_mutex_unlock(&s->mu);
        if (d)
            return true;
        if (pu_time_now() - t0 > timeout)
            return false;
        usleep(1000);
    }
}

/* greedy ids with a plain session, stopping at eos unless ignore_eos */
static int ref_greedy(const pu_model *m, const int32_t *prompt, int64_t n, int ngen,
                      bool ignore_eos, int32_t *out) {
    const pu_config *c = pu_model_config(m);
    pu_session *s = NULL;
    if (pu_session_create(m, n + ngen + 1, NULL, &s) != PU_OK)
        return -1;
    float *lg = pu_malloc((size_t)c->vocab_size * sizeof(float));
    pu_session_eval(s, prompt, n, lg, false);
    int k = 0;
    while (k < ngen) {
        int32_t id = pu_argmax(lg, c->vocab_size);
        if (!ignore_eos && id == c->eos_token_id)
            break;
        out[k++] = id;
        if (k < ngen)
            pu_session_eval(s, &id, 1, lg, false);
    }
    pu_free(lg);
    pu_session_destroy(s);
    return k;
}

static void make_prompt(int32_t *p, int64_t n, int seed, int64_t V) {
    for (int64_t i = 0; i < n; i++)
        p[i] = (int32_t)(3 + (i * 31 + seed * 17 + (i * i) % 7) % (V - 3));
}

static pu_engine_request greedy_req(const int32_t *prompt, int64_t n, int ngen, sink *s) {
    pu_engine_request r = {0};
    r.prompt = prompt;
    r.n_prompt = n;
    r.max_tokens = ngen;
    r.sample = pu_sample_default_params();
    r.sample.temperature = 0;
    r.ignore_eos = true;
    r.cb = on_event;
    r.ud = s;
    return r;
}

static void check_same(const char *what, const sink *s, const int32_t *want, int nwant) {
    PT_CHECK_MSG(s->n == nwant, "%s: %d tokens, want %d", what, s->n, nwant);
    for (int i = 0; i < s->n && i < nwant; i++)
        if (s->ids[i] != want[i]) {
            pt_fail_(__FILE__, __LINE__, "%s: token %d: got %d want %d", what, i, s->ids[i],
                     want[i]);
            break;
        }
}

static void run_concurrent(const pu_model *m, const pu_engine_params *ep, int nreq, int ngen,
                           const char *what) {
    const pu_config *c = pu_model_config(m);
    pu_engine *e = NULL;
    PT_OK(pu_engine_create(m, NULL, ep, &e));
    if (!e)
        return;
    int32_t prompts[16][48];
    int64_t plen[16];
    sink sinks[16];
    int32_t want[16][MAXGEN];
    int nwant[16];
    for (int i = 0; i < nreq; i++) {
        plen[i] = 5 + (i * 7) % 40;
        make_prompt(prompts[i], plen[i], i, c->vocab_size);
        if (i % 4 == 3) /* share a prefix with request i-1 */
            memcpy(prompts[i], prompts[i - 1], (size_t)(plen[i] < plen[i - 1] ? plen[i] : plen[i - 1]) * 4);
        nwant[i] = ref_greedy(m, prompts[i], plen[i], ngen, true, want[i]);
        memset(&sinks[i], 0, sizeof sinks[i]);
        pthread_mutex_init(&sinks[i].mu, NULL);
    }
    int64_t ids[16];
    for (int i = 0; i < nreq; i++) {
        pu_engine_request r = greedy_req(prompts[i], plen[i], ngen, &sinks[i]);
        PT_OK(pu_engine_submit(e, &r, &ids[i]));
    }
    for (int i = 0; i < nreq; i++) {
        PT_CHECK_MSG(wait_done(&sinks[i], 60), "%s: request %d did not finish", what, i);
        char lbl[64];
        snprintf(lbl, sizeof lbl, "%s req %d", what, i);
        check_same(lbl, &sinks[i], want[i], nwant[i]);
        PT_CHECK(sinks[i].fin == PU_FINISH_LENGTH);
    }
    usleep(20000);
    pu_engine_stats st;
    pu_engine_get_stats(e, &st);
    PT_EQ_I64(st.running, 0);
    PT_EQ_I64(st.blocks_free, st.blocks_total);
    pu_engine_destroy(e);
    for (int i = 0; i < nreq; i++) {
        PT_EQ_I64(sinks[i].n_events_after_done, 0);
        pthread_mutex_destroy(&sinks[i].mu);
    }
}

PT_SUITE(engine) {
    pu_model *m = NULL;
    if (pu_model_load("tests/golden/gqa2", &m) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "load gqa2: %s", pu_err_msg());
        return;
    }
    const pu_config *c = pu_model_config(m);
    pu_engine_params ep = pu_engine_default_params();
    ep.n_threads = 1;
    ep.ctx = 96;

    if (PT_TEST("single request equals session greedy")) {
        pu_engine *e = NULL;
        PT_OK(pu_engine_create(m, NULL, &ep, &e));
        int32_t prompt[20], want[MAXGEN];
        make_prompt(prompt, 20, 1, c->vocab_size);
        int nw = ref_greedy(m, prompt, 20, 24, true, want);
        sink s = {0};
        pthread_mutex_init(&s.mu, NULL);
        pu_engine_request r = greedy_req(prompt, 20, 24, &s);
        int64_t id;
        PT_OK(pu_engine_submit(e, &r, &id));
        PT_CHECK(wait_done(&s, 30));
        check_same("single", &s, want, nw);
        PT_CHECK(s.fin == PU_FINISH_LENGTH);
        pu_engine_destroy(e);
        pthread_mutex_destroy(&s.mu);
    }
    if (PT_TEST("eos stops a request")) {
        pu_engine *e = NULL;
        PT_OK(pu_engine_create(m, NULL, &ep, &e));
        int32_t prompt[12], want[MAXGEN];
        make_prompt(prompt, 12, 5, c->vocab_size);
        int nref = ref_greedy(m, prompt, 12, 30, true, want);
        /* make the 4th greedy token a stop id: the engine must stop before it */
        sink s = {0};
        pthread_mutex_init(&s.mu, NULL);
        pu_engine_request r = greedy_req(prompt, 12, 30, &s);
        int32_t stop = want[3];
        int first = 0;
        while (want[first] != stop)
            first++;
        r.stop_ids = &stop;
        r.n_stop_ids = 1;
        int64_t id;
        PT_OK(pu_engine_submit(e, &r, &id));
        PT_CHECK(wait_done(&s, 30));
        PT_CHECK(s.fin == PU_FINISH_STOP);
        check_same("stop id", &s, want, first);
        (void)nref;
        pu_engine_destroy(e);
        pthread_mutex_destroy(&s.mu);
    }
    if (PT_TEST("16 concurrent requests equal their single greedy"))
        run_concurrent(m, &ep, 16, 24, "concurrent");
    if (PT_TEST("2 threads")) {
        pu_engine_params e2 = ep;
        e2.n_threads = 2;
        run_concurrent(m, &e2, 8, 16, "2 threads");
    }
    if (PT_TEST("tiny KV pool preempts and still matches")) {
        pu_engine_params small = ep;
        small.block_size = 8;
        small.kv_tokens = 96; /* enough for one request at a time */
        small.max_batch = 6;
        run_concurrent(m, &small, 6, 20, "preempt");
    }
    if (PT_TEST("chunked prefill")) {
        pu_engine_params ch = ep;
        ch.prefill_chunk = 7;
        run_concurrent(m, &ch, 8, 12, "chunked");
    }
    if (PT_TEST("speculative decoding (draft = target): identical output, drafts accepted")) {
        pu_engine_params sp = ep;
        sp.draft = m;
        sp.draft_k = 4;
        run_concurrent(m, &sp, 6, 24, "spec self");
        sp.draft_adaptive = true; /* all accepted: stays at draft_k */
        run_concurrent(m, &sp, 6, 24, "spec self adaptive");
        sp.draft_adaptive = false;
        /* one request: every draft is accepted, so about 5 tokens per target pass */
        pu_engine *e = NULL;
        PT_OK(pu_engine_create(m, NULL, &sp, &e));
        int32_t pr[12];
        make_prompt(pr, 12, 3, c->vocab_size);
        sink sk;
        memset(&sk, 0, sizeof sk);
        pthread_mutex_init(&sk.mu, NULL);
        pu_engine_request rq = greedy_req(pr, 12, 40, &sk);
        int64_t id;
        PT_OK(pu_engine_submit(e, &rq, &id));
        PT_CHECK(wait_done(&sk, 60));
        int32_t want[MAXGEN];
        int nw = ref_greedy(m, pr, 12, 40, true, want);
        check_same("spec single", &sk, want, nw);
        usleep(20000);
        pu_engine_stats st;
        pu_engine_get_stats(e, &st);
        PT_CHECK_MSG(st.tokens_drafted > 0 && st.tokens_draft_accepted == st.tokens_drafted,
                     "drafted %lld accepted %lld", (long long)st.tokens_drafted,
                     (long long)st.tokens_draft_accepted);
        PT_CHECK_MSG(st.steps < 20, "%lld steps for 40 tokens", (long long)st.steps);
        pu_engine_destroy(e);
        pthread_mutex_destroy(&sk.mu);
    }
    if (PT_TEST("speculative decoding (random draft): identical output, also preempted")) {
        pu_model *dm = NULL;
        PT_OK(pu_model_init_random(c, PU_DTYPE_F32, 99, 0.05f, true, NULL, &dm));
        if (dm) {
            pu_engine_params sp = ep;
            sp.draft = dm;
            sp.draft_k = 3;
            run_concurrent(m, &sp, 8, 20, "spec random");
            sp.block_size = 8;
            sp.kv_tokens = 96;
            sp.max_batch = 6;
            run_concurrent(m, &sp, 6, 20, "spec preempt");
            sp.draft_k = 8;
            sp.prefill_chunk = 7;
            run_concurrent(m, &sp, 6, 20, "spec chunked");
            /* adaptive length: same output; a draft that is always wrong
             * soon proposes 1 token a step instead of draft_k */
            sp = ep;
            sp.draft = dm;
            sp.draft_k = 6;
            sp.draft_adaptive = true;
            run_concurrent(m, &sp, 6, 20, "spec adaptive");
            pu_engine *e = NULL;
            PT_OK(pu_engine_create(m, NULL, &sp, &e));
            int32_t pr[12], want[MAXGEN];
            make_prompt(pr, 12, 5, c->vocab_size);
            sink sk;
            memset(&sk, 0, sizeof sk);
            pthread_mutex_init(&sk.mu, NULL);
            pu_engine_request rq = greedy_req(pr, 12, 40, &sk);
            int64_t id;
            PT_OK(pu_engine_submit(e, &rq, &id));
            PT_CHECK(wait_done(&sk, 60));
            int nw = ref_greedy(m, pr, 12, 40, true, want);
            check_same("spec adaptive single", &sk, want, nw);
            usleep(20000);
            pu_engine_stats st;
            pu_engine_get_stats(e, &st);
            int64_t rejected = st.tokens_drafted - st.tokens_draft_accepted;
            PT_CHECK_MSG(st.tokens_drafted > 0 && rejected > 0 && st.tokens_drafted < 3 * st.steps,
                         "drafted %lld (accepted %lld) in %lld steps", (long long)st.tokens_drafted,
                         (long long)st.tokens_draft_accepted, (long long)st.steps);
            pu_engine_destroy(e);
            pthread_mutex_destroy(&sk.mu);
            pu_model_destroy(dm);
        }
        pu_config bad = *c;
        bad.vocab_size = c->vocab_size + 1;
        pu_model *bm = NULL;
        PT_OK(pu_model_init_random(&bad, PU_DTYPE_F32, 1, 0.05f, true, NULL, &bm));
        pu_engine_params sp = ep;
        sp.draft = bm;
        pu_engine *e = NULL;
        PT_CHECK(pu_engine_create(m, NULL, &sp, &e) != PU_OK && !e);
        pu_err_clear();
        pu_model_destroy(bm);
    }
    if (PT_TEST("prefix sharing hits the cache")) {
        pu_engine *e = NULL;
        PT_OK(pu_engine_create(m, NULL, &ep, &e));
        int32_t prompt[40], want[MAXGEN];
        make_prompt(prompt, 40, 9, c->vocab_size);
        int nw = ref_greedy(m, prompt, 40, 10, true, want);
        for (int rep = 0; rep < 2; rep++) {
            sink s = {0};
            pthread_mutex_init(&s.mu, NULL);
            pu_engine_request r = greedy_req(prompt, 40, 10, &s);
            int64_t id;
            PT_OK(pu_engine_submit(e, &r, &id));
            PT_CHECK(wait_done(&s, 30));
            check_same(rep ? "prefix hit" : "prefix first", &s, want, nw);
            if (rep == 1)
                PT_CHECK_MSG(s.n_cached == 32, "cached prompt tokens %lld, want 32",
                             (long long)s.n_cached);
            pthread_mutex_destroy(&s.mu);
        }
        pu_engine_destroy(e);
    }
    if (PT_TEST("cancel frees blocks")) {
        pu_engine *e = NULL;
        PT_OK(pu_engine_create(m, NULL, &ep, &e));
        int32_t prompt[30];
        make_prompt(prompt, 30, 3, c->vocab_size);
        sink s = {0};
        pthread_mutex_init(&s.mu, NULL);
        pu_engine_request r = greedy_req(prompt, 30, 60, &s);
        int64_t id;
        PT_OK(pu_engine_submit(e, &r, &id));
        pu_engine_cancel(e, id);
        pu_engine_cancel(e, 12345); /* unknown: ignored */
        PT_CHECK(wait_done(&s, 30));
        PT_CHECK(s.fin == PU_FINISH_CANCELLED || s.fin == PU_FINISH_LENGTH);
        usleep(20000);
        pu_engine_stats st;
        pu_engine_get_stats(e, &st);
        PT_EQ_I64(st.blocks_free, st.blocks_total);
        pu_engine_destroy(e);
        pthread_mutex_destroy(&s.mu);
    }
    if (PT_TEST("logprobs: model log-softmax and top alternatives")) {
        pu_engine *e = NULL;
        PT_OK(pu_engine_create(m, NULL, &ep, &e));
        int32_t prompt[16];
        make_prompt(prompt, 16, 4, c->vocab_size);
        sink s = {0};
        pthread_mutex_init(&s.mu, NULL);
        pu_engine_request r = greedy_req(prompt, 16, 3, &s);
        r.top_logprobs = 5;
        int64_t id;
        PT_OK(pu_engine_submit(e, &r, &id));
        PT_CHECK(wait_done(&s, 30));
        PT_EQ_I64(s.n, 3);
        /* reference: log-softmax of the session's logits after the prompt */
        pu_session *ss = NULL;
        PT_OK(pu_session_create(m, 32, NULL, &ss));
        float *lg = pu_malloc((size_t)c->vocab_size * sizeof(float));
        PT_OK(pu_session_eval(ss, prompt, 16, lg, false));
        double mx = lg[0], sum = 0;
        for (int64_t j = 1; j < c->vocab_size; j++)
            mx = lg[j] > mx ? lg[j] : mx;
        for (int64_t j = 0; j < c->vocab_size; j++)
            sum += exp(lg[j] - mx);
        int32_t best = pu_argmax(lg, c->vocab_size);
        double want = lg[best] - mx - log(sum);
        PT_EQ_I64(s.ids[0], best);
        PT_EQ_I64(s.top0[0], best);
        PT_EQ_I64(s.n_top[0], 5);
        PT_NEAR(s.lps[0], want, 1e-4, 0);
        PT_NEAR(s.top0_lp[0], want, 1e-4, 0);
        for (int i = 0; i < s.n; i++) /* greedy: the chosen token is the best alternative */
            PT_CHECK(s.top0[i] == s.ids[i] && s.lps[i] <= 0.0f && s.n_top[i] == 5);
        pu_free(lg);
        pu_session_destroy(ss);
        r.top_logprobs = 21;
        PT_CHECK(pu_engine_submit(e, &r, &id) == PU_ERR_INVALID);
        pu_engine_destroy(e);
        pthread_mutex_destroy(&s.mu);
    }
    if (PT_TEST("bad requests are refused at submit")) {
        pu_engine *e = NULL;
        PT_OK(pu_engine_create(m, NULL, &ep, &e));
        int32_t big[200];
        make_prompt(big, 200, 1, c->vocab_size);
        sink s = {0};
        pu_engine_request r = greedy_req(big, 200, 4, &s);
        int64_t id;
        PT_CHECK(pu_engine_submit(e, &r, &id) == PU_ERR_RANGE);
        PT_CHECK(strstr(pu_err_msg(), "context") != NULL);
        big[3] = (int32_t)c->vocab_size;
        r.n_prompt = 10;
        PT_CHECK(pu_engine_submit(e, &r, &id) == PU_ERR_RANGE);
        r.n_prompt = 0;
        PT_CHECK(pu_engine_submit(e, &r, &id) == PU_ERR_INVALID);
        pu_engine_destroy(e);
    }
    pu_model_destroy(m);
}
