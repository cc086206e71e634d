/*
 * config.c — InternLM2Config: class defaults, config.json parsing and
 * validation, serialisation.
 *
 * Defaults are those of the HF `InternLM2Config` class (configuration_
 * internlm2.py), which differ from released checkpoints (bias true,
 * rms_norm_eps 1e-6, ...): the file always wins. rope_scaling is read from
 * the file only — null/absent means none; otherwise {"type"|"rope_type":
 * "linear"|"dynamic", "factor": f >= 1}; anything else is an error. The five
 * size fields are required; every error names the file and the field.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/loaders.h"
#include "puyu/pu_model.h"

int64_t pu_config_ctx_limit(const pu_config *c) {
    double f = c->rope_scaling_type != PU_ROPE_SCALING_NONE ? c->rope_scaling_factor : 1.0;
    return (int64_t)((double)c->max_position_embeddings * (f > 1 ? f : 1));
}

void pu_config_defaults(pu_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "internlm2");
    c->vocab_size = 103168;
    c->hidden_size = 4096;
    c->intermediate_size = 11008;
    c->num_hidden_layers = 32;
    c->num_attention_heads = 32;
    c->num_key_value_heads = 32;
    c->head_dim = 128;
    snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
    c->max_position_embeddings = 2048;
    c->initializer_range = 0.02;
    c->rms_norm_eps = 1e-6;
    c->use_cache = true;
    c->pad_token_id = 0;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    c->tie_word_embeddings = false;
    c->bias = true;
    c->rope_theta = 10000.0;
    c->rope_scaling_type = PU_ROPE_SCALING_NONE;
    c->rope_scaling_factor = 1.0;
    snprintf(c->attn_implementation, sizeof c->attn_implementation, "eager");
    c->torch_dtype[0] = '\0';
    c->reward_token_id = -1;
    c->rope_interleaved = false;
}

/* ------------------------------------------------------------------------ */
/* typed getters: null is treated as absent                                 */

static const char *jtype_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static const json_t *jget(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

static pu_status get_int(const json_t *o, const char *key, int64_t *out, bool required,
                         const char *path) {
    const json_t *v = jget(o, key);
    if (!v) {
        if (required)
            return pu_err_set(PU_ERR_FORMAT, "%s: missing required field '%s'", path, key);
        return PU_OK;
    }
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return PU_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 9.0e15) {
            *out = (int64_t)d;
            return PU_OK;
        }
    }
    return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': expected an integer, found %s", path, key,
                      jtype_name(v));
}

static pu_status get_double(const json_t *o, const char *key, double *out, const char *path) {
    const json_t *v = jget(o, key);
    if (!v)
        return PU_OK;
    if (!json_is_number(v))
        return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': expected a number, found %s", path, key,
                          jtype_name(v));
    *out = json_number_value(v);
    return PU_OK;
}

static pu_status get_bool(const json_t *o, const char *key, bool *out, const char *path) {
    const json_t *v = jget(o, key);
    if (!v)
        return PU_OK;
    if (!json_is_boolean(v))
        return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': expected true or false, found %s", path,
                          key, jtype_name(v));
    *out = json_is_true(v);
    return PU_OK;
}

static pu_status get_str(const json_t *o, const char *key, char *out, size_t cap,
                         const char *path) {
    const json_t *v = jget(o, key);
    if (!v)
        return PU_OK;
    if (!json_is_string(v))
        return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': expected a string, found %s", path, key,
                          jtype_name(v));
    size_t n = json_string_length(v);
    if (n >= cap)
        return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': string too long (%zu bytes, max %zu)",
                          path, key, n, cap - 1);
    if (memchr(json_string_value(v), '\0', n))
        return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': string contains NUL", path, key);
    memcpy(out, json_string_value(v), n + 1);
    return PU_OK;
}

/* token id fields may be an integer or (eos in some configs) a list: the
 * first element is taken. */
static pu_status get_token_id(const json_t *o, const char *key, int64_t *out, const char *path) {
    const json_t *v = jget(o, key);
    if (v && json_is_array(v)) {
        if (json_array_size(v) == 0)
            return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': empty list", path, key);
        const json_t *e = json_array_get(v, 0);
        if (!json_is_integer(e))
            return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': expected a list of integers", path,
                              key);
        *out = (int64_t)json_integer_value(e);
        return PU_OK;
    }
    return get_int(o, key, out, false, path);
}

static pu_status parse_rope_scaling(const json_t *root, const char *path, pu_config *c) {
    const json_t *rs = jget(root, "rope_scaling");
    c->rope_scaling_type = PU_ROPE_SCALING_NONE;
    c->rope_scaling_factor = 1.0;
    if (!rs)
        return PU_OK;
    if (!json_is_object(rs))
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'rope_scaling': expected null or an object "
                          "{\"type\": \"linear\"|\"dynamic\", \"factor\": f}, found %s",
                          path, jtype_name(rs));
    const char *key;
    const json_t *val;
    const char *type = NULL;
    bool have_factor = false;
    double factor = 1.0;
    json_object_foreach((json_t *)rs, key, val) {
        if (strcmp(key, "type") == 0 || strcmp(key, "rope_type") == 0) {
            if (!json_is_string(val))
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: field 'rope_scaling.%s': expected a string, found %s", path,
                                  key, jtype_name(val));
            const char *t = json_string_value(val);
            if (type && strcmp(type, t) != 0)
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: field 'rope_scaling': 'type' (%s) and 'rope_type' (%s) "
                                  "disagree",
                                  path, type, t);
            type = t;
        } else if (strcmp(key, "factor") == 0) {
            if (!json_is_number(val))
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: field 'rope_scaling.factor': expected a number, found %s",
                                  path, jtype_name(val));
            factor = json_number_value(val);
            have_factor = true;
        } else {
            return pu_err_set(PU_ERR_FORMAT,
                              "%s: field 'rope_scaling': unexpected key '%s' (expected only "
                              "'type' and 'factor')",
                              path, key);
        }
    }
    if (!type)
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'rope_scaling': missing 'type'", path);
    if (strcmp(type, "linear") == 0)
        c->rope_scaling_type = PU_ROPE_SCALING_LINEAR;
    else if (strcmp(type, "dynamic") == 0)
        c->rope_scaling_type = PU_ROPE_SCALING_DYNAMIC;
    else
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'rope_scaling.type': expected \"linear\" or \"dynamic\", "
                          "found \"%s\"",
                          path, type);
    if (!have_factor)
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'rope_scaling': missing 'factor'", path);
    if (!(factor >= 1.0) || !isfinite(factor))
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'rope_scaling.factor': expected a number >= 1.0, found %g",
                          path, factor);
    c->rope_scaling_factor = factor;
    return PU_OK;
}

static pu_status check_range(const char *path, const char *field, int64_t v, int64_t max) {
    if (v <= 0 || v > max)
        return pu_err_set(PU_ERR_FORMAT, "%s: field '%s': expected 1..%lld, found %lld", path,
                          field, (long long)max, (long long)v);
    return PU_OK;
}

pu_status pu_config_check_(const pu_config *c, const char *path) {
    PU_TRY(check_range(path, "vocab_size", c->vocab_size, PU_MAX_DIM));
    PU_TRY(check_range(path, "hidden_size", c->hidden_size, PU_MAX_DIM));
    PU_TRY(check_range(path, "intermediate_size", c->intermediate_size, PU_MAX_DIM));
    PU_TRY(check_range(path, "num_hidden_layers", c->num_hidden_layers, PU_MAX_LAYERS));
    PU_TRY(check_range(path, "num_attention_heads", c->num_attention_heads, PU_MAX_HEADS));
    PU_TRY(check_range(path, "num_key_value_heads", c->num_key_value_heads, PU_MAX_HEADS));
    PU_TRY(
        check_range(path, "max_position_embeddings", c->max_position_embeddings, PU_MAX_DIM * 64));
    if (c->hidden_size % c->num_attention_heads != 0)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'hidden_size' (%lld) must be divisible by "
                          "num_attention_heads (%lld)",
                          path, (long long)c->hidden_size, (long long)c->num_attention_heads);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'num_attention_heads' (%lld) must be divisible by "
                          "num_key_value_heads (%lld)",
                          path, (long long)c->num_attention_heads,
                          (long long)c->num_key_value_heads);
    if (c->head_dim != c->hidden_size / c->num_attention_heads)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'head_dim' (%lld) must equal hidden_size / "
                          "num_attention_heads (%lld)",
                          path, (long long)c->head_dim,
                          (long long)(c->hidden_size / c->num_attention_heads));
    if (c->head_dim % 2 != 0)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: head_dim = hidden_size / num_attention_heads = %lld must be even "
                          "for rotary embeddings",
                          path, (long long)c->head_dim);
    if (!(c->rms_norm_eps > 0.0) || !isfinite(c->rms_norm_eps))
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'rms_norm_eps': expected > 0, found %g", path,
                          c->rms_norm_eps);
    if (!(c->rope_theta > 0.0) || !isfinite(c->rope_theta))
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'rope_theta': expected > 0, found %g", path,
                          c->rope_theta);
    if (strcmp(c->hidden_act, "silu") != 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'hidden_act': expected \"silu\", found \"%s\"",
                          path, c->hidden_act);
    if (c->rope_scaling_type != PU_ROPE_SCALING_NONE &&
        (!(c->rope_scaling_factor >= 1.0) || !isfinite(c->rope_scaling_factor)))
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'rope_scaling.factor': expected >= 1.0, found %g", path,
                          c->rope_scaling_factor);
    return PU_OK;
}

static pu_status parse_obj(const json_t *root, const char *path, pu_config *c) {
    if (!json_is_object(root))
        return pu_err_set(PU_ERR_FORMAT, "%s: expected a JSON object at the top level, found %s",
                          path, jtype_name(root));
    pu_config_defaults(c);
    PU_TRY(get_str(root, "model_type", c->model_type, sizeof c->model_type, path));
    bool is_llama = strcmp(c->model_type, "llama") == 0;
    if (!is_llama && strcmp(c->model_type, "internlm2") != 0 &&
        strcmp(c->model_type, "internlm") != 0)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: field 'model_type': \"%s\" is not supported (expected "
                          "\"internlm2\", \"internlm\" or \"llama\")",
                          path, c->model_type);
    const json_t *arch = jget(root, "architectures");
    if (arch) {
        if (!json_is_array(arch))
            return pu_err_set(PU_ERR_FORMAT, "%s: field 'architectures': expected a list, found %s",
                              path, jtype_name(arch));
        const json_t *a0 = json_array_get(arch, 0);
        if (a0) {
            if (!json_is_string(a0))
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: field 'architectures[0]': expected a string, found %s", path,
                                  jtype_name(a0));
            snprintf(c->architecture, sizeof c->architecture, "%s", json_string_value(a0));
        }
    }
    PU_TRY(get_int(root, "vocab_size", &c->vocab_size, true, path));
    PU_TRY(get_int(root, "hidden_size", &c->hidden_size, true, path));
    PU_TRY(get_int(root, "intermediate_size", &c->intermediate_size, true, path));
    PU_TRY(get_int(root, "num_hidden_layers", &c->num_hidden_layers, true, path));
    PU_TRY(get_int(root, "num_attention_heads", &c->num_attention_heads, true, path));
    c->num_key_value_heads = c->num_attention_heads;
    PU_TRY(get_int(root, "num_key_value_heads", &c->num_key_value_heads, false, path));
    PU_TRY(get_str(root, "hidden_act", c->hidden_act, sizeof c->hidden_act, path));
    PU_TRY(get_int(root, "max_position_embeddings", &c->max_position_embeddings, false, path));
    PU_TRY(get_double(root, "initializer_range", &c->initializer_range, path));
    PU_TRY(get_double(root, "rms_norm_eps", &c->rms_norm_eps, path));
    PU_TRY(get_bool(root, "use_cache", &c->use_cache, path));
    PU_TRY(get_token_id(root, "pad_token_id", &c->pad_token_id, path));
    PU_TRY(get_token_id(root, "bos_token_id", &c->bos_token_id, path));
    PU_TRY(get_token_id(root, "eos_token_id", &c->eos_token_id, path));
    PU_TRY(get_bool(root, "tie_word_embeddings", &c->tie_word_embeddings, path));
    if (is_llama) {
        /* LlamaConfig: attention_bias / mlp_bias, both default false */
        bool ab = false, mb = false;
        PU_TRY(get_bool(root, "attention_bias", &ab, path));
        PU_TRY(get_bool(root, "mlp_bias", &mb, path));
        c->bias = ab || mb;
        if (jget(root, "bias"))
            PU_TRY(get_bool(root, "bias", &c->bias, path));
    } else {
        PU_TRY(get_bool(root, "bias", &c->bias, path));
    }
    PU_TRY(get_double(root, "rope_theta", &c->rope_theta, path));
    PU_TRY(parse_rope_scaling(root, path, c));
    PU_TRY(get_str(root, "attn_implementation", c->attn_implementation,
                   sizeof c->attn_implementation, path));
    /* transformers >= 4.56 writes "dtype" instead of "torch_dtype" */
    PU_TRY(get_str(root, "dtype", c->torch_dtype, sizeof c->torch_dtype, path));
    PU_TRY(get_str(root, "torch_dtype", c->torch_dtype, sizeof c->torch_dtype, path));
    PU_TRY(get_token_id(root, "reward_token_id", &c->reward_token_id, path));
    if (jget(root, "rotary"))
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'rotary': the pre-release {\"base\", \"type\"} block is not "
                          "supported; use the current config.json (rope_theta + rope_scaling)",
                          path);
    if (c->num_attention_heads > 0)
        c->head_dim = c->hidden_size / c->num_attention_heads;
    int64_t hd = c->head_dim;
    PU_TRY(get_int(root, "head_dim", &hd, false, path));
    PU_TRY(pu_config_check_(c, path));
    if (c->reward_token_id >= c->vocab_size)
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: field 'reward_token_id' (%lld) is outside the vocabulary [0, %lld)",
                          path, (long long)c->reward_token_id, (long long)c->vocab_size);
    if (hd != c->head_dim)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: field 'head_dim' (%lld) differs from hidden_size / "
                          "num_attention_heads (%lld); not supported",
                          path, (long long)hd, (long long)c->head_dim);
    c->rope_interleaved = false; /* HF checkpoints: rotate-half */
    return PU_OK;
}

pu_status pu_config_parse(const char *json_text, size_t len, const char *path, pu_config *out) {
    json_error_t err;
    json_t *root = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return pu_err_set(PU_ERR_FORMAT, "%s:%d:%d: invalid JSON: %s", path, err.line, err.column,
                          err.text);
    pu_config c;
    pu_status s = parse_obj(root, path, &c);
    json_decref(root);
    if (s == PU_OK)
        *out = c;
    return s;
}

pu_status pu_config_load(const char *path, pu_config *out) {
    char *text = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(path, &text, &len));
    pu_status s = pu_config_parse(text, len, path, out);
    pu_free(text);
    return s;
}

char *pu_config_to_json(const pu_config *c) {
    pu_str s = {0};
    pu_str_puts(&s, "{\n  \"architectures\": [");
    if (c->architecture[0])
        pu_str_json_string(&s, c->architecture, strlen(c->architecture));
    pu_str_puts(&s, "],\n  \"model_type\": ");
    pu_str_json_string(&s, c->model_type, strlen(c->model_type));
    pu_str_appendf(&s, ",\n  \"vocab_size\": %lld", (long long)c->vocab_size);
    pu_str_appendf(&s, ",\n  \"hidden_size\": %lld", (long long)c->hidden_size);
    pu_str_appendf(&s, ",\n  \"intermediate_size\": %lld", (long long)c->intermediate_size);
    pu_str_appendf(&s, ",\n  \"num_hidden_layers\": %lld", (long long)c->num_hidden_layers);
    pu_str_appendf(&s, ",\n  \"num_attention_heads\": %lld", (long long)c->num_attention_heads);
    pu_str_appendf(&s, ",\n  \"num_key_value_heads\": %lld", (long long)c->num_key_value_heads);
    pu_str_puts(&s, ",\n  \"hidden_act\": ");
    pu_str_json_string(&s, c->hidden_act, strlen(c->hidden_act));
    pu_str_appendf(&s, ",\n  \"max_position_embeddings\": %lld",
                   (long long)c->max_position_embeddings);
    pu_str_appendf(&s, ",\n  \"initializer_range\": %.17g", c->initializer_range);
    pu_str_appendf(&s, ",\n  \"rms_norm_eps\": %.17g", c->rms_norm_eps);
    pu_str_appendf(&s, ",\n  \"use_cache\": %s", c->use_cache ? "true" : "false");
    pu_str_appendf(&s, ",\n  \"pad_token_id\": %lld", (long long)c->pad_token_id);
    pu_str_appendf(&s, ",\n  \"bos_token_id\": %lld", (long long)c->bos_token_id);
    pu_str_appendf(&s, ",\n  \"eos_token_id\": %lld", (long long)c->eos_token_id);
    pu_str_appendf(&s, ",\n  \"tie_word_embeddings\": %s",
                   c->tie_word_embeddings ? "true" : "false");
    pu_str_appendf(&s, ",\n  \"bias\": %s", c->bias ? "true" : "false");
    pu_str_appendf(&s, ",\n  \"rope_theta\": %.17g", c->rope_theta);
    if (c->rope_scaling_type == PU_ROPE_SCALING_NONE)
        pu_str_puts(&s, ",\n  \"rope_scaling\": null");
    else
        pu_str_appendf(&s, ",\n  \"rope_scaling\": {\"type\": \"%s\", \"factor\": %.17g}",
                       c->rope_scaling_type == PU_ROPE_SCALING_LINEAR ? "linear" : "dynamic",
                       c->rope_scaling_factor);
    pu_str_puts(&s, ",\n  \"attn_implementation\": ");
    pu_str_json_string(&s, c->attn_implementation, strlen(c->attn_implementation));
    if (c->torch_dtype[0]) {
        pu_str_puts(&s, ",\n  \"torch_dtype\": ");
        pu_str_json_string(&s, c->torch_dtype, strlen(c->torch_dtype));
    }
    if (c->reward_token_id >= 0)
        pu_str_appendf(&s, ",\n  \"reward_token_id\": %lld", (long long)c->reward_token_id);
    pu_str_puts(&s, "\n}\n");
    return pu_str_steal(&s);
}
