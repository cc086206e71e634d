/*
 * bench_agent.c — the agent loop's own cost per model call (rendering the
 * InternLM2 prompt with tool declarations, parsing the reply, running the
 * calculator, appending messages), with a scripted zero-cost model: what
 * the loop adds on top of the model. Usage: bench_agent [RUNS] (default 2000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_agent.h"

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

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 2000;
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
