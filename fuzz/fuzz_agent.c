/*
 * fuzz_agent.c — libFuzzer harness for the agent's parsers: the input is
 * split at the first NUL into (a) text fed to the calculator, the ReAct
 * parser and the JSON automaton, and (b) a user-tools JSON declaration,
 * also read as a JSON schema that (a) is checked against.
 * Invariants: the JSON automaton accepting a complete document implies
 * jansson parses it (numbers beyond double range aside); no crash, no leak.
 */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "puyu/pu_agent.h"
#include "puyu/pu_json_constraint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t n1 = nul ? (size_t)(nul - data) : size;
    char *text = pu_strndup((const char *)data, n1);
    pu_str out = {0}, a = {0}, b = {0}, c = {0};
    pu_calc_eval(text, &out);
    bool fin = false;
    pu_agent_parse_react(text, &fin, &a, &b, &c);
    for (int mode = 0; mode < 2; mode++) {
        pu_json_sm sm;
        pu_json_sm_init(&sm, mode == 0);
        if (pu_json_sm_feed(&sm, (const uint8_t *)text, n1) && pu_json_sm_complete(&sm)) {
            json_error_t e;
            json_t *j = json_loadb(text, n1, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &e);
            /* jansson refuses numbers beyond double range: valid JSON all the same */
            if (!j && !strstr(e.text, "overflow") && !strstr(e.text, "too big"))
                __builtin_trap();
            json_decref(j);
        }
    }
    if (nul) {
        /* the second part as a JSON schema, the first checked against it */
        pu_json_schema *sc = NULL;
        if (pu_json_schema_parse((const char *)nul + 1, size - n1 - 1, &sc) == PU_OK) {
            static pu_json_sm sm, probe;
            pu_json_sm_init_schema(&sm, sc);
            /* the longest accepted prefix of the text: never a dead end (some
             * byte continues it, or it is complete) */
            size_t i = 0;
            for (; i < n1; i++) {
                pu_json_sm_copy(&probe, &sm);
                if (!pu_json_sm_feed(&probe, (const uint8_t *)text + i, 1))
                    break;
                pu_json_sm_copy(&sm, &probe);
            }
            bool live = pu_json_sm_complete(&sm);
            for (int x = 0; x < 256 && !live; x++) {
                uint8_t b = (uint8_t)x;
                pu_json_sm_copy(&probe, &sm);
                live = pu_json_sm_feed(&probe, &b, 1);
            }
            if (!live)
                __builtin_trap();
            if (i == n1 && pu_json_sm_complete(&sm)) {
                json_error_t e;
                json_t *j = json_loadb(text, n1, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &e);
                if (!j && !strstr(e.text, "overflow") && !strstr(e.text, "too big"))
                    __builtin_trap();
                json_decref(j);
            }
            pu_json_schema_destroy(sc);
        }
        pu_agent_tools *t = NULL;
        pu_agent_tools_opts o = {0};
        if (pu_agent_tools_create(&o, &t) == PU_OK) {
            pu_agent_tools_add_json(t, (const char *)nul + 1, size - n1 - 1, "fuzz/tools.json");
            pu_agent_tools_openai_json(t);
            pu_agent_tools_destroy(t);
        }
    }
    pu_str_free(&out);
    pu_str_free(&a);
    pu_str_free(&b);
    pu_str_free(&c);
    pu_free(text);
    return 0;
}
