/*
 * lora.c — LoRA adapters in PEFT's file format (pu_lora.h).
 *
 * An adapter is a set of (A, B) pairs, one per targeted linear of the base:
 * layers[l * 5 + t] for t in wqkv/wo/w1/w2/w3, and `output`. A linear that is
 * not targeted has A == B == NULL; `targets` is the union over layers (a PEFT
 * config naming single modules, e.g. "model.layers.0.attention.wqkv", may
 * target some layers only).
 *
 * Reading adapter_config.json follows PEFT's own matching rules
 * (peft/tuners/tuners_utils.py check_target_module_exists):
 *   - target_modules a list: module name == entry, or ends with "." + entry;
 *   - target_modules a string: a regex that must match the whole module name
 *     (re.fullmatch; here PCRE2 anchored at both ends);
 *   - layers_to_transform (int or list): only those layer indices.
 * The module names are those of HF's InternLM2ForCausalLM:
 * model.layers.<i>.attention.wqkv / .wo, model.layers.<i>.feed_forward.w1 /
 * .w2 / .w3, output. An entry (or the regex) that matches no linear, or that
 * matches a module LoRA cannot adapt here (embeddings, norms), is an error;
 * so are features that change the math we do not implement (DoRA, bias,
 * rank/alpha patterns, modules_to_save, fan_in_fan_out).
 *
 * adapter_model.safetensors must hold exactly the keys the config implies,
 * each with the shape the base config implies: A (r, in), B (out, r), F32,
 * BF16 or F16 (widened to fp32 on load). Writing is always F32, atomic.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#include "model/loaders.h"
#include "puyu/pu_lora.h"

#define LORA_MAX_R (INT64_C(1) << 16)

static const char *const target_names[PU_LORA_N_TARGETS] = {"wqkv", "wo", "w1",
                                                            "w2",   "w3", "output"};
/* module path part of layer targets: model.layers.<i>.<part> */
static const char *const target_parts[PU_LORA_OUTPUT] = {
    "attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"};

const char *pu_lora_target_name(pu_lora_target t) {
    return (int)t >= 0 && t < PU_LORA_N_TARGETS ? target_names[t] : "?";
}

pu_status pu_lora_parse_targets(const char *csv, uint32_t *mask) {
    *mask = 0;
    const char *p = csv ? csv : "";
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < PU_LORA_N_TARGETS; t++)
            if (strlen(target_names[t]) == n && memcmp(target_names[t], p, n) == 0)
                found = t;
        if (found < 0)
            return pu_err_set(PU_ERR_INVALID,
                              "LoRA targets: unknown module '%.*s' (known: wqkv, wo, w1, w2, w3, "
                              "output)",
                              (int)n, p);
        *mask |= 1u << found;
        p += n;
        if (*p == ',')
            p++;
    }
    if (!*mask)
        return pu_err_set(PU_ERR_INVALID, "LoRA targets: empty list");
    return PU_OK;
}

/* (out, in) of target t for base config c */
static void target_shape(const pu_config *c, int t, int64_t *out, int64_t *in) {
    int64_t C = c->hidden_size, F = c->intermediate_size, D = c->head_dim;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    switch (t) {
    case PU_LORA_WQKV: *out = (H + 2 * Hkv) * D, *in = C; break;
    case PU_LORA_WO: *out = C, *in = H * D; break;
    case PU_LORA_W1:
    case PU_LORA_W3: *out = F, *in = C; break;
    case PU_LORA_W2: *out = C, *in = F; break;
    default: *out = c->vocab_size, *in = C; break;
    }
}

static float lora_scale(double alpha, int64_t r, bool rslora) {
    return (float)(rslora ? alpha / sqrt((double)r) : alpha / (double)r);
}

/* allocate a pu_lora header for c with no matrices */
static pu_lora *lora_alloc(const pu_config *c) {
    pu_lora *l = pu_calloc(1, sizeof *l);
    l->n_layers = c->num_hidden_layers;
    l->layers = pu_calloc((size_t)(l->n_layers * PU_LORA_OUTPUT), sizeof *l->layers);
    for (int64_t i = 0; i < l->n_layers; i++)
        for (int t = 0; t < PU_LORA_OUTPUT; t++)
            target_shape(c, t, &l->layers[i * PU_LORA_OUTPUT + t].out,
                         &l->layers[i * PU_LORA_OUTPUT + t].in);
    target_shape(c, PU_LORA_OUTPUT, &l->output.out, &l->output.in);
    return l;
}

static pu_status mat_alloc(pu_lora_mat *m, int64_t r) {
    m->A = pu_try_calloc((size_t)(r * m->in), sizeof(float));
    m->B = pu_try_calloc((size_t)(m->out * r), sizeof(float));
    if (!m->A || !m->B)
        return pu_err_set(PU_ERR_NOMEM, "LoRA: cannot allocate a rank-%lld adapter (%lld x %lld)",
                          (long long)r, (long long)m->out, (long long)m->in);
    return PU_OK;
}

void pu_lora_destroy(pu_lora *l) {
    if (!l)
        return;
    for (int64_t i = 0; l->layers && i < l->n_layers * PU_LORA_OUTPUT; i++) {
        pu_free(l->layers[i].A);
        pu_free(l->layers[i].B);
    }
    pu_free(l->layers);
    pu_free(l->output.A);
    pu_free(l->output.B);
    pu_free(l);
}

pu_lora_mat *pu_lora_get(pu_lora *l, int64_t layer, pu_lora_target t) {
    return (pu_lora_mat *)pu_lora_get_const(l, layer, t);
}

const pu_lora_mat *pu_lora_get_const(const pu_lora *l, int64_t layer, pu_lora_target t) {
    const pu_lora_mat *m;
    if (t == PU_LORA_OUTPUT)
        m = &l->output;
    else if ((int)t < 0 || t > PU_LORA_OUTPUT || layer < 0 || layer >= l->n_layers)
        return NULL;
    else
        m = &l->layers[layer * PU_LORA_OUTPUT + t];
    return m->A ? m : NULL;
}

static pu_status check_hparams(int64_t r, double alpha, double dropout, const char *what) {
    if (r <= 0 || r > LORA_MAX_R)
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'r': must be in [1, %lld], got %lld", what,
                          (long long)LORA_MAX_R, (long long)r);
    if (!isfinite(alpha) || alpha == 0.0)
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'lora_alpha': must be finite and non-zero",
                          what);
    if (!(dropout >= 0.0 && dropout < 1.0))
        return pu_err_set(PU_ERR_FORMAT, "%s: field 'lora_dropout': must be in [0, 1), got %g",
                          what, dropout);
    return PU_OK;
}

pu_status pu_lora_create(const pu_config *c, int64_t r, double alpha, double dropout,
                         bool use_rslora, uint32_t targets, pu_lora **out) {
    *out = NULL;
    PU_TRY(check_hparams(r, alpha, dropout, "LoRA"));
    if (!targets || targets >= (1u << PU_LORA_N_TARGETS))
        return pu_err_set(PU_ERR_INVALID, "LoRA: no (or an unknown) target module");
    pu_lora *l = lora_alloc(c);
    l->r = r;
    l->alpha = alpha;
    l->dropout = dropout;
    l->use_rslora = use_rslora;
    l->targets = targets;
    l->scale = lora_scale(alpha, r, use_rslora);
    pu_status s = PU_OK;
    for (int64_t i = 0; i < l->n_layers && s == PU_OK; i++)
        for (int t = 0; t < PU_LORA_OUTPUT && s == PU_OK; t++)
            if (targets & (1u << t))
                s = mat_alloc(&l->layers[i * PU_LORA_OUTPUT + t], r);
    if (s == PU_OK && (targets & (1u << PU_LORA_OUTPUT)))
        s = mat_alloc(&l->output, r);
    if (s != PU_OK) {
        pu_lora_destroy(l);
        return s;
    }
    *out = l;
    return PU_OK;
}

void pu_lora_init_peft(pu_lora *l, uint64_t seed) {
    int64_t nmat = l->n_layers * PU_LORA_OUTPUT + 1;
    for (int64_t idx = 0; idx < nmat; idx++) {
        pu_lora_mat *m = idx < nmat - 1 ? &l->layers[idx] : &l->output;
        if (!m->A)
            continue;
        pu_rng rng;
        pu_rng_seed(&rng, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(idx + 1)));
        float bound = 1.0f / sqrtf((float)m->in);
        for (int64_t i = 0; i < l->r * m->in; i++)
            m->A[i] = (2.0f * pu_rng_float(&rng) - 1.0f) * bound;
        memset(m->B, 0, (size_t)(m->out * l->r) * sizeof(float));
    }
}

/* ------------------------------------------------------------------------ */
/* module matching (PEFT's rules)                                           */

typedef struct {
    int64_t n_layers;
    const bool *layer_ok; /* layers_to_transform (NULL: all) */
    bool *sel;            /* (n_layers * 5 + 1) selected linears */
} match_ctx;

static const char *const nonlinear_parts[] = {"attention_norm", "ffn_norm", "attention",
                                              "feed_forward"};

/* PEFT list rule: name == entry or name ends with "." + entry */
static bool name_matches(const char *name, const char *entry) {
    size_t n = strlen(name), e = strlen(entry);
    if (n == e)
        return strcmp(name, entry) == 0;
    return e < n && name[n - e - 1] == '.' && strcmp(name + n - e, entry) == 0;
}

typedef bool (*match_fn)(const char *name, void *ud);

/* Visit every module name of the base: linears select, others report. Returns
 * the number of linears matched; *bad is set to a matched non-linear. */
static int64_t match_modules(match_ctx *mc, match_fn fn, void *ud, char *bad, size_t badcap) {
    char name[160];
    int64_t hits = 0;
    for (int64_t l = 0; l < mc->n_layers; l++) {
        for (int t = 0; t < PU_LORA_OUTPUT; t++) {
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, target_parts[t]);
            if (fn(name, ud) && (!mc->layer_ok || mc->layer_ok[l])) {
                mc->sel[l * PU_LORA_OUTPUT + t] = true;
                hits++;
            }
        }
        for (size_t i = 0; i < sizeof nonlinear_parts / sizeof *nonlinear_parts; i++) {
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, nonlinear_parts[i]);
            if (!bad[0] && fn(name, ud))
                snprintf(bad, badcap, "%s", name);
        }
    }
    if (fn("output", ud) && !mc->layer_ok) {
        mc->sel[mc->n_layers * PU_LORA_OUTPUT] = true;
        hits++;
    }
    const char *others[] = {"model.tok_embeddings", "model.norm"};
    for (int i = 0; i < 2; i++)
        if (!bad[0] && fn(others[i], ud))
            snprintf(bad, badcap, "%s", others[i]);
    return hits;
}

static bool list_fn(const char *name, void *ud) {
    return name_matches(name, ud);
}

typedef struct {
    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
} regex_ud;

static bool regex_fn(const char *name, void *ud) {
    regex_ud *r = ud;
    int rc = pcre2_match(r->re, (PCRE2_SPTR)name, strlen(name), 0,
                         PCRE2_ANCHORED | PCRE2_ENDANCHORED, r->md, r->mctx);
    return rc > 0;
}

/* ------------------------------------------------------------------------ */
/* adapter_config.json                                                      */

static pu_status unsupported_field(const json_t *root, const char *key, const char *what) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v) || json_is_false(v) ||
        (json_is_object(v) && json_object_size(v) == 0) ||
        (json_is_array(v) && json_array_size(v) == 0) ||
        (json_is_string(v) && strcmp(json_string_value(v), "none") == 0 && !strcmp(key, "bias")))
        return PU_OK;
    return pu_err_set(PU_ERR_UNSUPPORTED,
                      "%s: field '%s': not supported by puyu's LoRA (only plain LoRA: no DoRA, "
                      "bias, rank/alpha patterns, modules_to_save or fan_in_fan_out)",
                      what, key);
}

pu_status pu_lora_config_parse(const char *json_text, size_t len, const char *path,
                               const pu_config *base, pu_lora **out) {
    *out = NULL;
    json_t *root = NULL;
    PU_TRY(pu_json_loadb(json_text, len, path, &root));
    pu_status s = PU_OK;
    pu_lora *l = NULL;
    bool *layer_ok = NULL, *sel = NULL;
    regex_ud rx = {0};
    if (!json_is_object(root)) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: expected a JSON object", path);
        goto done;
    }
    const char *peft_type = NULL, *task = NULL, *bm = NULL;
    if ((s = pu_json_get_string(root, "peft_type", &peft_type, true, path)) != PU_OK)
        goto done;
    if (strcmp(peft_type, "LORA") != 0) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: field 'peft_type': expected \"LORA\", found \"%s\"",
                       path, peft_type);
        goto done;
    }
    if ((s = pu_json_get_string(root, "task_type", &task, false, path)) != PU_OK)
        goto done;
    if (task && strcmp(task, "CAUSAL_LM") != 0) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: field 'task_type': expected \"CAUSAL_LM\", found \"%s\"",
                       path, task);
        goto done;
    }
    int64_t r = 0;
    double alpha = 8.0, dropout = 0.0; /* PEFT's LoraConfig defaults */
    bool rslora = false;
    if ((s = pu_json_get_int(root, "r", &r, true, path)) != PU_OK ||
        (s = pu_json_get_double(root, "lora_alpha", &alpha, false, path)) != PU_OK ||
        (s = pu_json_get_double(root, "lora_dropout", &dropout, false, path)) != PU_OK ||
        (s = pu_json_get_bool(root, "use_rslora", &rslora, false, path)) != PU_OK ||
        (s = check_hparams(r, alpha, dropout, path)) != PU_OK)
        goto done;
    json_t *bmv = json_object_get(root, "base_model_name_or_path");
    if (bmv && !json_is_null(bmv) &&
        (s = pu_json_get_string(root, "base_model_name_or_path", &bm, false, path)) != PU_OK)
        goto done;
    const char *unsup[] = {"use_dora",       "rank_pattern", "alpha_pattern",    "modules_to_save",
                           "fan_in_fan_out", "bias",         "layer_replication"};
    for (size_t i = 0; i < sizeof unsup / sizeof *unsup; i++)
        if ((s = unsupported_field(root, unsup[i], path)) != PU_OK)
            goto done;

    int64_t L = base->num_hidden_layers;
    /* layers_to_transform: int or list of ints */
    json_t *ltt = json_object_get(root, "layers_to_transform");
    if (ltt && !json_is_null(ltt)) {
        layer_ok = pu_calloc((size_t)L, sizeof *layer_ok);
        size_t n = json_is_array(ltt) ? json_array_size(ltt) : 1;
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_is_array(ltt) ? json_array_get(ltt, i) : ltt;
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= L) {
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: field 'layers_to_transform': expected layer indices in "
                               "[0, %lld)",
                               path, (long long)L);
                goto done;
            }
            layer_ok[json_integer_value(v)] = true;
        }
    }
    sel = pu_calloc((size_t)(L * PU_LORA_OUTPUT + 1), sizeof *sel);
    match_ctx mc = {L, layer_ok, sel};
    char bad[160] = "";
    json_t *tm = json_object_get(root, "target_modules");
    if (!tm || json_is_null(tm)) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: field 'target_modules': missing", path);
        goto done;
    }
    if (json_is_string(tm)) {
        const char *pat = json_string_value(tm);
        int ec = 0;
        PCRE2_SIZE eo = 0;
        rx.re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
        if (!rx.re) {
            PCRE2_UCHAR msg[200];
            pcre2_get_error_message(ec, msg, sizeof msg);
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: field 'target_modules': bad regex '%s': %s at offset %zu", path,
                           pat, (char *)msg, (size_t)eo);
            goto done;
        }
        rx.md = pcre2_match_data_create_from_pattern(rx.re, NULL);
        rx.mctx = pcre2_match_context_create(NULL);
        pcre2_set_match_limit(rx.mctx, 100000);
        pcre2_set_depth_limit(rx.mctx, 1000);
        int64_t hits = match_modules(&mc, regex_fn, &rx, bad, sizeof bad);
        if (bad[0]) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: field 'target_modules': regex '%s' matches '%s', which is not a "
                           "linear LoRA can adapt (wqkv, wo, w1, w2, w3, output)",
                           path, pat, bad);
            goto done;
        }
        if (!hits) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: field 'target_modules': regex '%s' matches no module of the "
                           "InternLM2 base (e.g. model.layers.0.attention.wqkv, output)",
                           path, pat);
            goto done;
        }
    } else if (json_is_array(tm) && json_array_size(tm) > 0) {
        for (size_t i = 0; i < json_array_size(tm); i++) {
            json_t *v = json_array_get(tm, i);
            if (!json_is_string(v)) {
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: field 'target_modules': entry %zu is not a string", path, i);
                goto done;
            }
            const char *e = json_string_value(v);
            bad[0] = '\0';
            int64_t hits = match_modules(&mc, list_fn, (void *)e, bad, sizeof bad);
            if (bad[0]) {
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: field 'target_modules': '%s' names '%s', which is not a "
                               "linear LoRA can adapt (wqkv, wo, w1, w2, w3, output)",
                               path, e, bad);
                goto done;
            }
            if (!hits) {
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: field 'target_modules': unknown module '%s' (InternLM2 "
                               "linears: wqkv, wo, w1, w2, w3, output%s)",
                               path, e, layer_ok ? "; or outside layers_to_transform" : "");
                goto done;
            }
        }
    } else {
        s = pu_err_set(PU_ERR_FORMAT,
                       "%s: field 'target_modules': expected a non-empty list of module names "
                       "or a regex string",
                       path);
        goto done;
    }

    l = lora_alloc(base);
    l->r = r;
    l->alpha = alpha;
    l->dropout = dropout;
    l->use_rslora = rslora;
    l->scale = lora_scale(alpha, r, rslora);
    if (bm)
        snprintf(l->base_model, sizeof l->base_model, "%s", bm);
    for (int64_t i = 0; i <= L * PU_LORA_OUTPUT && s == PU_OK; i++) {
        if (!sel[i])
            continue;
        pu_lora_mat *m = i < L * PU_LORA_OUTPUT ? &l->layers[i] : &l->output;
        l->targets |= 1u << (i < L * PU_LORA_OUTPUT ? (int)(i % PU_LORA_OUTPUT) : PU_LORA_OUTPUT);
        s = mat_alloc(m, r);
    }
done:
    if (rx.md)
        pcre2_match_data_free(rx.md);
    if (rx.mctx)
        pcre2_match_context_free(rx.mctx);
    if (rx.re)
        pcre2_code_free(rx.re);
    pu_free(layer_ok);
    pu_free(sel);
    json_decref(root);
    if (s != PU_OK) {
        pu_lora_destroy(l);
        return s;
    }
    *out = l;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* keys                                                                     */

/* PEFT key of matrix idx (layer * 5 + t, or n_layers * 5 for output) */
static void peft_key(char *buf, size_t cap, const pu_lora *l, int64_t idx, char ab) {
    if (idx == l->n_layers * PU_LORA_OUTPUT)
        snprintf(buf, cap, "base_model.model.output.lora_%c.weight", ab);
    else
        snprintf(buf, cap, "base_model.model.model.layers.%lld.%s.lora_%c.weight",
                 (long long)(idx / PU_LORA_OUTPUT), target_parts[idx % PU_LORA_OUTPUT], ab);
}

static pu_lora_mat *mat_at(pu_lora *l, int64_t idx) {
    return idx == l->n_layers * PU_LORA_OUTPUT ? &l->output : &l->layers[idx];
}

static void widen(float *dst, const uint8_t *src, int dtype, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (dtype == PU_DTYPE_F32) {
            memcpy(&dst[i], src + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = dtype == PU_DTYPE_BF16 ? pu_bf16_to_f32(h) : pu_f16_to_f32(h);
        }
    }
}

pu_status pu_lora_load(const char *dir, const pu_config *base, pu_lora **out) {
    *out = NULL;
    char *cpath = pu_path_join(dir, "adapter_config.json");
    char *wpath = pu_path_join(dir, "adapter_model.safetensors");
    char *text = NULL;
    size_t len = 0;
    pu_lora *l = NULL;
    pu_mmap mp = {0};
    pu_st_file st = {0};
    bool *seen = NULL;
    pu_status s = pu_file_read_all(cpath, &text, &len);
    if (s != PU_OK)
        goto done;
    if ((s = pu_lora_config_parse(text, len, cpath, base, &l)) != PU_OK)
        goto done;
    if (!pu_file_exists(wpath)) {
        s = pu_err_set(PU_ERR_IO,
                       "%s: missing (an adapter directory holds adapter_config.json "
                       "and adapter_model.safetensors)",
                       wpath);
        goto done;
    }
    if ((s = pu_mmap_open(&mp, wpath)) != PU_OK ||
        (s = pu_safetensors_parse_(mp.data, mp.size, wpath, &st)) != PU_OK)
        goto done;
    seen = pu_calloc(st.n ? (size_t)st.n : 1, sizeof *seen);
    int64_t nmat = l->n_layers * PU_LORA_OUTPUT + 1;
    char key[200];
    for (int64_t idx = 0; idx < nmat && s == PU_OK; idx++) {
        pu_lora_mat *m = mat_at(l, idx);
        if (!m->A)
            continue;
        for (int ab = 0; ab < 2 && s == PU_OK; ab++) {
            peft_key(key, sizeof key, l, idx, ab ? 'B' : 'A');
            const pu_st_tensor *t = pu_safetensors_find_(&st, key);
            int64_t d0 = ab ? m->out : l->r, d1 = ab ? l->r : m->in;
            if (!t) {
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: tensor '%s' missing (adapter_config.json targets it)", wpath,
                               key);
                break;
            }
            seen[t - st.t] = true;
            if (t->dtype < 0) {
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: tensor '%s': dtype %s (expected F32, BF16 or F16)", wpath, key,
                               t->dtype_name);
                break;
            }
            if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1) {
                char sb[64];
                s = pu_err_set(PU_ERR_FORMAT,
                               "%s: tensor '%s': shape %s, expected (%lld, %lld) for r=%lld and "
                               "this base (adapter for another model?)",
                               wpath, key, pu_shape_str_(sb, sizeof sb, t->ndim, t->shape),
                               (long long)d0, (long long)d1, (long long)l->r);
                break;
            }
            widen(ab ? m->B : m->A, st.data + t->begin, t->dtype, d0 * d1);
        }
    }
    for (int64_t i = 0; s == PU_OK && i < st.n; i++)
        if (!seen[i])
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: tensor '%s' is not implied by adapter_config.json's "
                           "target_modules (extra key, or an adapter for another model)",
                           wpath, st.t[i].name);
done:
    pu_free(seen);
    pu_safetensors_free_(&st);
    pu_mmap_close(&mp);
    pu_free(text);
    pu_free(cpath);
    pu_free(wpath);
    if (s != PU_OK) {
        pu_lora_destroy(l);
        return s;
    }
    *out = l;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* writing                                                                  */

/* true when every layer has target t */
static bool all_layers(const pu_lora *l, int t) {
    for (int64_t i = 0; i < l->n_layers; i++)
        if (!l->layers[i * PU_LORA_OUTPUT + t].A)
            return false;
    return l->n_layers > 0;
}

char *pu_lora_config_json(const pu_lora *l) {
    json_t *o = json_object();
    json_object_set_new(o, "peft_type", json_string("LORA"));
    json_object_set_new(o, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(o, "r", json_integer(l->r));
    json_object_set_new(o, "lora_alpha", json_real(l->alpha));
    json_object_set_new(o, "lora_dropout", json_real(l->dropout));
    json_object_set_new(o, "use_rslora", json_boolean(l->use_rslora));
    json_object_set_new(o, "use_dora", json_false());
    json_object_set_new(o, "bias", json_string("none"));
    json_object_set_new(o, "fan_in_fan_out", json_false());
    json_object_set_new(o, "inference_mode", json_true());
    json_object_set_new(o, "init_lora_weights", json_true());
    json_object_set_new(o, "base_model_name_or_path",
                        l->base_model[0] ? json_string(l->base_model) : json_null());
    json_t *tm = json_array();
    char name[160];
    for (int t = 0; t < PU_LORA_OUTPUT; t++) {
        if (!(l->targets & (1u << t)))
            continue;
        if (all_layers(l, t)) {
            json_array_append_new(tm, json_string(target_names[t]));
            continue;
        }
        for (int64_t i = 0; i < l->n_layers; i++)
            if (l->layers[i * PU_LORA_OUTPUT + t].A) {
                snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)i, target_parts[t]);
                json_array_append_new(tm, json_string(name));
            }
    }
    if (l->output.A)
        json_array_append_new(tm, json_string("output"));
    json_object_set_new(o, "target_modules", tm);
    char *js = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(o);
    char *r = pu_strdup(js);
    free(js);
    return r;
}

pu_status pu_lora_save(const pu_lora *l, const char *dir) {
    PU_TRY(pu_mkdir_p(dir));
    /* safetensors header: keys in sorted order, as safetensors writes them */
    int64_t nmat = l->n_layers * PU_LORA_OUTPUT + 1;
    pu_str h = {0};
    pu_str_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    char key[200];
    for (int64_t idx = 0; idx < nmat; idx++) {
        const pu_lora_mat *m = idx == nmat - 1 ? &l->output : &l->layers[idx];
        if (!m->A)
            continue;
        for (int ab = 0; ab < 2; ab++) {
            peft_key(key, sizeof key, l, idx, ab ? 'B' : 'A');
            int64_t d0 = ab ? m->out : l->r, d1 = ab ? l->r : m->in;
            pu_str_putc(&h, ',');
            pu_str_json_string(&h, key, strlen(key));
            pu_str_appendf(
                &h, ":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                (long long)d0, (long long)d1, (unsigned long long)off,
                (unsigned long long)(off + (uint64_t)(d0 * d1) * 4));
            off += (uint64_t)(d0 * d1) * 4;
        }
    }
    pu_str_putc(&h, '}');
    while ((h.len + 8) % 8)
        pu_str_putc(&h, ' ');
    char *wpath = pu_path_join(dir, "adapter_model.safetensors");
    pu_atomic_file af;
    pu_status s = pu_atomic_open(&af, wpath);
    if (s == PU_OK) {
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
        bool ok = fwrite(le, 1, 8, af.f) == 8 && fwrite(h.p, 1, h.len, af.f) == h.len;
        for (int64_t idx = 0; ok && idx < nmat; idx++) {
            const pu_lora_mat *m = idx == nmat - 1 ? &l->output : &l->layers[idx];
            if (!m->A)
                continue;
            size_t na = (size_t)(l->r * m->in), nb = (size_t)(m->out * l->r);
            ok = fwrite(m->A, sizeof(float), na, af.f) == na &&
                 fwrite(m->B, sizeof(float), nb, af.f) == nb;
        }
        if (!ok) {
            pu_atomic_abort(&af);
            s = pu_err_set(PU_ERR_IO, "%s: write failed (disk full?)", wpath);
        } else {
            s = pu_atomic_commit(&af);
        }
    }
    pu_str_free(&h);
    pu_free(wpath);
    if (s != PU_OK)
        return s;
    char *js = pu_lora_config_json(l);
    char *cpath = pu_path_join(dir, "adapter_config.json");
    s = pu_file_write_atomic(cpath, js, strlen(js));
    pu_free(cpath);
    pu_free(js);
    return s;
}
