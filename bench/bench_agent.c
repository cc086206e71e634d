/*
 * bench_agent.c — the agent loop's own cost per model call (rendering the
 * InternLM2 prompt with tool declarations, parsing the reply, running the
 * calculator, appending messages), with a scripted zero-cost model: what
 * the loop adds on top of the model. Usage: bench_agent [RUNS] (default 2000)
 *
 * With -m MODEL [-t TOKENIZER] the same loop runs on a real local model
 * (pu_agent_llm_local, max 48 new tokens per call): each call generates with
 * the model (its full cost, timed), and
 *   scripted: the reply used is the scripted one (so the loop still renders,
 *             parses, runs the calculator: 2 tool calls + an answer per run)
 *   real:     the model's own reply (stories260K never calls a tool)
 * and the report splits the wall time into model time and loop time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_agent.h"
#include "puyu/pu_infer.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

/* the real model, timed; its reply replaced by the scripted one (scripted) */
typedef struct {
    pu_agent_llm inner;
    bool scripted;
    int calls;
    double model_s;
} timed;

typedef struct {
    int calls;
} fake;

static pu_status complete(void *ud, const char *prompt, const char *const *stops, int ns,
                          pu_str *out) {
    fake *f = ud;
    (void)prompt;
    (void)stops;
    (void)ns;
    pu_str_clear(out);
    if (f->calls++ % 3 < 2)
        pu_str_puts(out, "Computing.<|action_start|><|plugin|>\n{\"name\": \"calculator\", "
                         "\"parameters\": {\"expression\": \"(3 + 4) * 2 / 7\"}}");
    else
        pu_str_puts(out, "The answer is 2.");
    return PU_OK;
}

static pu_status timed_complete(void *ud, const char *prompt, const char *const *stops, int ns,
                                pu_str *out) {
    timed *t = ud;
    double t0 = pu_time_now();
    pu_status st = t->inner.complete(t->inner.ud, prompt, stops, ns, out);
    t->model_s += pu_time_now() - t0;
    if (st || !t->scripted)
        return st;
    fake f = {t->calls++};
    return complete(&f, prompt, stops, ns, out);
}

static int bench_real(const char *model, const char *tokp, int runs) {
    pu_model *m = NULL;
    pu_tok *tok = NULL;
    pu_session *s = NULL;
    if (pu_model_load(model, &m) != PU_OK || pu_tok_load(tokp, &tok) != PU_OK ||
        pu_session_create(m, pu_model_config(m)->max_position_embeddings, NULL, &s) != PU_OK) {
        fprintf(stderr, "bench_agent: %s\n", pu_err_msg());
        return 1;
    }
    pu_agent_tools_opts to = {.names = "calculator,files"};
    pu_agent_tools *tl = NULL;
    if (pu_agent_tools_create(&to, &tl) != PU_OK) {
        fprintf(stderr, "%s\n", pu_err_msg());
        return 1;
    }
    for (int mode = 0; mode < 2; mode++) {
        timed t = {.scripted = mode == 0};
        pu_agent_llm_local(m, tok, s, 48, 0.0, &t.inner);
        pu_agent_llm llm = {.ud = &t, .complete = timed_complete};
        pu_agent_opts o = {.protocol = PU_AGENT_NATIVE, .max_turns = 8};
        pu_agent *a = NULL;
        pu_agent_create(&llm, tl, &o, &a);
        pu_str ans = {0};
        pu_agent_outcome oc;
        int turns = 0;
        double t0 = pu_time_now();
        for (int i = 0; i < runs; i++) {
            pu_agent_reset(a);
            t.calls = 0;
            pu_agent_run(a, "What is (3 + 4) * 2 / 7?", &ans, &oc);
            turns += oc.turns;
        }
        double dt = pu_time_now() - t0, loop = dt - t.model_s;
        printf("agent loop on %s (%s replies): %d runs, %d model calls; wall %.3f s = model "
               "%.3f s + loop %.4f s (%.2f%% of wall; %.1f us per call vs %.2f ms model per "
               "call)\n",
               model, mode == 0 ? "scripted" : "model's own", runs, turns, dt, t.model_s, loop,
               100.0 * loop / dt, loop / turns * 1e6, t.model_s / turns * 1e3);
        pu_str_free(&ans);
        pu_agent_destroy(a);
        pu_agent_llm_local_free(&t.inner);
    }
    pu_agent_tools_destroy(tl);
    pu_session_destroy(s);
    pu_tok_destroy(tok);
    pu_model_destroy(m);
    return 0;
}

int main(int argc, char **argv) {
    int runs = 2000;
    const char *model = NULL, *tokp = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            tokp = argv[++i];
        else
            runs = atoi(argv[i]);
    }
    if (runs < 1)
        runs = 1;
    if (model)
        return bench_real(model, tokp ? tokp : model, runs);
    pu_agent_tools_opts to = {.names = "calculator,files"};
    pu_agent_tools *t = NULL;
    if (pu_agent_tools_create(&to, &t) != PU_OK) {
        fprintf(stderr, "%s\n", pu_err_msg());
        return 1;
    }
    fake f = {0};
    pu_agent_llm llm = {.ud = &f, .complete = complete};
    pu_agent_opts o = {.protocol = PU_AGENT_NATIVE, .max_turns = 8};
    pu_agent *a = NULL;
    pu_agent_create(&llm, t, &o, &a);
    pu_str ans = {0};
    pu_agent_outcome oc;
    int turns = 0;
    double t0 = pu_time_now();
    for (int i = 0; i < runs; i++) {
        pu_agent_reset(a);
        pu_agent_run(a, "What is (3 + 4) * 2 / 7?", &ans, &oc);
        turns += oc.turns;
    }
    double dt = pu_time_now() - t0;
    printf("agent loop (native protocol, calculator): %d runs, %d model calls, %.1f us per "
           "call of loop overhead\n",
           runs, turns, dt / turns * 1e6);
    pu_str_free(&ans);
    pu_agent_destroy(a);
    pu_agent_tools_destroy(t);
    return 0;
}
