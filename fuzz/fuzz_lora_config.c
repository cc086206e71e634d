/*
 * fuzz_lora_config.c — libFuzzer harness: the input is an adapter_config.json
 * read against a small fixed base config (2 layers). A config that parses
 * must serialise (pu_lora_config_json) and re-parse to the same adapter
 * hyper-parameters and the same set of adapted linears; nothing may crash,
 * hang (regex match limits) or leak.
 */
#include <stdint.h>
#include <string.h>

#include "puyu/pu_lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pu_config c;
    pu_config_defaults(&c);
    c.vocab_size = 16;
    c.hidden_size = 8;
    c.intermediate_size = 12;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 4;
    pu_lora *l = NULL;
    if (pu_lora_config_parse((const char *)data, size, "fuzz/adapter_config.json", &c, &l) !=
        PU_OK) {
        if (l)
            __builtin_trap();
        return 0;
    }
    char *js = pu_lora_config_json(l);
    pu_lora *l2 = NULL;
    if (pu_lora_config_parse(js, strlen(js), "fuzz/roundtrip.json", &c, &l2) != PU_OK)
        __builtin_trap();
    if (l2->r != l->r || l2->alpha != l->alpha || l2->dropout != l->dropout ||
        l2->use_rslora != l->use_rslora || l2->targets != l->targets || l2->scale != l->scale)
        __builtin_trap();
    for (int64_t i = 0; i < c.num_hidden_layers; i++)
        for (int t = 0; t < PU_LORA_N_TARGETS; t++)
            if (!pu_lora_get(l, i, (pu_lora_target)t) != !pu_lora_get(l2, i, (pu_lora_target)t))
                __builtin_trap();
    pu_free(js);
    pu_lora_destroy(l);
    pu_lora_destroy(l2);
    return 0;
}
