/*
 * test_lora.c — PEFT adapter files (src/model/lora.c): round trip, BF16/F16
 * tensors, target_modules as short names / full paths / regex /
 * layers_to_transform, and every bad input (missing/extra keys, shape of
 * another base, unknown module, r <= 0, corrupt JSON, unsupported features)
 * failing with an error that names the file and the field.
 */
#include <stdlib.h>

#include "pt.h"
#include "puyu/pu_lora.h"

static void write_text(const char *path, const char *text) {
    PT_OK(pu_file_write_atomic(path, text, strlen(text)));
}

typedef struct {
    const char *name;
    const char *dtype; /* "F32" | "BF16" | "F16" | "I32" */
    int64_t d0, d1;
    const float *data; /* d0 * d1 values (NULL: zeros) */
} st_spec;

/* a safetensors file from specs (values converted to the dtype) */
static void write_st(const char *path, const st_spec *t, int n) {
    pu_str h = {0}, body = {0};
    pu_str_putc(&h, '{');
    for (int i = 0; i < n; i++) {
        int64_t ne = t[i].d0 * t[i].d1;
        size_t es = strcmp(t[i].dtype, "F32") == 0 || strcmp(t[i].dtype, "I32") == 0 ? 4 : 2;
        pu_str_appendf(&h,
                       "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],"
                       "\"data_offsets\":[%zu,%zu]}",
                       i ? "," : "", t[i].name, t[i].dtype, (long long)t[i].d0, (long long)t[i].d1,
                       body.len, body.len + (size_t)ne * es);
        for (int64_t j = 0; j < ne; j++) {
            float v = t[i].data ? t[i].data[j] : 0.0f;
            if (es == 4) {
                pu_str_append(&body, (const char *)&v, 4);
            } else {
                uint16_t hv =
                    strcmp(t[i].dtype, "BF16") == 0 ? pu_f32_to_bf16(v) : pu_f32_to_f16(v);
                pu_str_append(&body, (const char *)&hv, 2);
            }
        }
    }
    pu_str_putc(&h, '}');
    pu_str out = {0};
    uint64_t hl = h.len;
    pu_str_append(&out, (const char *)&hl, 8);
    pu_str_append(&out, h.p, h.len);
    if (body.len)
        pu_str_append(&out, body.p, body.len);
    PT_OK(pu_file_write_atomic(path, out.p, out.len));
    pu_str_free(&h);
    pu_str_free(&body);
    pu_str_free(&out);
}

/* expect failure of pu_lora_load(dir) with a message containing a and b */
static void expect_fail(const char *dir, const pu_config *c, pu_status code, const char *a,
                        const char *b, int line) {
    pu_lora *l = NULL;
    pu_status s = pu_lora_load(dir, c, &l);
    if (s == PU_OK) {
        pt_fail_(__FILE__, line, "load of %s succeeded, expected failure naming %s / %s", dir, a,
                 b);
        pu_lora_destroy(l);
        return;
    }
    PT_CHECK(l == NULL);
    const char *m = pu_err_msg();
    if (s != code || (a && !strstr(m, a)) || (b && !strstr(m, b)))
        pt_fail_(__FILE__, line, "expected %s naming '%s' and '%s', got %s: %s",
                 pu_status_str(code), a ? a : "", b ? b : "", pu_status_str(s), m);
}
#define EXPECT_FAIL(dir, c, code, a, b) expect_fail(dir, c, code, a, b, __LINE__)

static void fill_random(pu_lora *l, uint64_t seed) {
    pu_rng r;
    pu_rng_seed(&r, seed);
    for (int64_t i = 0; i <= l->n_layers * PU_LORA_OUTPUT; i++) {
        pu_lora_mat *m = i < l->n_layers * PU_LORA_OUTPUT ? &l->layers[i] : &l->output;
        if (!m->A)
            continue;
        for (int64_t j = 0; j < l->r * m->in; j++)
            m->A[j] = pu_rng_float(&r) - 0.5f;
        for (int64_t j = 0; j < l->r * m->out; j++)
            m->B[j] = pu_rng_float(&r) - 0.5f;
    }
}

static bool same_adapter(const pu_lora *a, const pu_lora *b) {
    if (a->r != b->r || a->alpha != b->alpha || a->targets != b->targets ||
        a->use_rslora != b->use_rslora || a->scale != b->scale || a->n_layers != b->n_layers ||
        a->dropout != b->dropout || strcmp(a->base_model, b->base_model) != 0)
        return false;
    for (int64_t i = 0; i <= a->n_layers * PU_LORA_OUTPUT; i++) {
        const pu_lora_mat *x = i < a->n_layers * PU_LORA_OUTPUT ? &a->layers[i] : &a->output;
        const pu_lora_mat *y = i < b->n_layers * PU_LORA_OUTPUT ? &b->layers[i] : &b->output;
        if (!x->A != !y->A || x->in != y->in || x->out != y->out)
            return false;
        if (x->A && (memcmp(x->A, y->A, (size_t)(a->r * x->in) * 4) != 0 ||
                     memcmp(x->B, y->B, (size_t)(a->r * x->out) * 4) != 0))
            return false;
    }
    return true;
}

static const char *CFG_HEAD = "{\"peft_type\":\"LORA\",\"task_type\":\"CAUSAL_LM\",\"r\":2,"
                              "\"lora_alpha\":4,\"lora_dropout\":0.0,\"use_rslora\":false,";

/* an adapter dir: config text + the exact key set for `targets` at r = 2 on
 * config c, in dtype dt; `skip` drops one key, `extra` adds one */
static void make_dir(const char *dir, const pu_config *c, const char *config_json, uint32_t targets,
                     const char *dt, const char *skip, const char *extra, int64_t bad_d1) {
    pu_mkdir_p(dir);
    char p[700];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    write_text(p, config_json);
    pu_lora *l = NULL;
    PT_OK(pu_lora_create(c, 2, 4, 0, false, targets, &l));
    st_spec sp[64];
    char names[64][128];
    int n = 0;
    const char *parts[] = {"attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w2",
                           "feed_forward.w3"};
    for (int64_t i = 0; i <= l->n_layers * PU_LORA_OUTPUT; i++) {
        pu_lora_mat *m = i < l->n_layers * PU_LORA_OUTPUT ? &l->layers[i] : &l->output;
        if (!m->A)
            continue;
        for (int ab = 0; ab < 2; ab++) {
            if (i == l->n_layers * PU_LORA_OUTPUT)
                snprintf(names[n], sizeof names[n], "base_model.model.output.lora_%c.weight",
                         ab ? 'B' : 'A');
            else
                snprintf(names[n], sizeof names[n],
                         "base_model.model.model.layers.%lld.%s.lora_%c.weight",
                         (long long)(i / PU_LORA_OUTPUT), parts[i % PU_LORA_OUTPUT],
                         ab ? 'B' : 'A');
            if (skip && strcmp(skip, names[n]) == 0)
                continue;
            sp[n] = (st_spec){names[n], dt, ab ? m->out : 2, ab ? 2 : m->in, NULL};
            if (bad_d1 && n == 0)
                sp[n].d1 = bad_d1;
            n++;
        }
    }
    if (extra)
        sp[n++] = (st_spec){extra, dt, 2, 2, NULL};
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    write_st(p, sp, n);
    pu_lora_destroy(l);
}

PT_SUITE(lora) {
    pu_config c;
    if (pu_config_load("tests/golden/gqa2/config.json", &c) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "gqa2 config: %s", pu_err_msg());
        return;
    }
    char dir[512], cfg[2048];

    if (PT_TEST("lora: targets parse")) {
        uint32_t m = 0;
        PT_OK(pu_lora_parse_targets("wqkv,wo,w1,w2,w3", &m));
        PT_EQ_I64(m, PU_LORA_DEFAULT_TARGETS);
        PT_OK(pu_lora_parse_targets("output", &m));
        PT_EQ_I64(m, 1u << PU_LORA_OUTPUT);
        PT_CHECK(pu_lora_parse_targets("wqkv,q_proj", &m) == PU_ERR_INVALID);
        PT_CHECK(strstr(pu_err_msg(), "q_proj") != NULL);
        PT_CHECK(pu_lora_parse_targets("", &m) != PU_OK);
        PT_EQ_STR(pu_lora_target_name(PU_LORA_W2), "w2");
    }

    if (PT_TEST("lora: create, scale, PEFT init")) {
        pu_lora *l = NULL;
        PT_OK(pu_lora_create(&c, 4, 8, 0.05, false, PU_LORA_DEFAULT_TARGETS, &l));
        PT_NEAR(l->scale, 2.0, 0, 0);
        PT_CHECK(pu_lora_get(l, 1, PU_LORA_WQKV) != NULL);
        PT_CHECK(pu_lora_get(l, 1, PU_LORA_OUTPUT) == NULL);
        PT_CHECK(pu_lora_get(l, 2, PU_LORA_WO) == NULL);
        const pu_lora_mat *q = pu_lora_get_const(l, 0, PU_LORA_WQKV);
        PT_EQ_I64(q->out, (4 + 2 * 2) * 8);
        PT_EQ_I64(q->in, 32);
        PT_EQ_I64(pu_lora_get(l, 0, PU_LORA_W2)->in, 40);
        pu_lora_init_peft(l, 7);
        float mx = 0, bmax = 0;
        for (int64_t i = 0; i < 4 * 32; i++)
            mx = fabsf(q->A[i]) > mx ? fabsf(q->A[i]) : mx;
        for (int64_t i = 0; i < 4 * q->out; i++)
            bmax = fabsf(q->B[i]) > bmax ? fabsf(q->B[i]) : bmax;
        PT_CHECK(mx > 0.5f / sqrtf(32) && mx <= 1.0f / sqrtf(32));
        PT_CHECK(bmax == 0.0f);
        /* different streams per matrix */
        PT_CHECK(memcmp(q->A, pu_lora_get(l, 1, PU_LORA_WQKV)->A, 4 * 32 * 4) != 0);
        pu_lora_destroy(l);
        PT_OK(pu_lora_create(&c, 4, 8, 0, true, 1u << PU_LORA_OUTPUT, &l));
        PT_NEAR(l->scale, 4.0, 0, 0);
        pu_lora_destroy(l);
        PT_CHECK(pu_lora_create(&c, 0, 8, 0, false, 1, &l) != PU_OK && l == NULL);
        PT_CHECK(pu_lora_create(&c, 2, 8, 0, false, 0, &l) != PU_OK && l == NULL);
    }

    if (PT_TEST("lora: save/load round trip (all targets, rslora)")) {
        pu_lora *l = NULL, *l2 = NULL;
        PT_OK(pu_lora_create(&c, 3, 6, 0.1, true, PU_LORA_DEFAULT_TARGETS | (1u << PU_LORA_OUTPUT),
                             &l));
        snprintf(l->base_model, sizeof l->base_model, "internlm2-tiny");
        fill_random(l, 11);
        pt_tmp_path("lora_rt", dir, sizeof dir);
        PT_OK(pu_lora_save(l, dir));
        PT_OK(pu_lora_load(dir, &c, &l2));
        PT_CHECK(l2 && same_adapter(l, l2));
        /* saving again over an existing dir works (atomic replace) */
        PT_OK(pu_lora_save(l2, dir));
        pu_lora_destroy(l2);
        l2 = NULL;
        PT_OK(pu_lora_load(dir, &c, &l2));
        PT_CHECK(l2 && same_adapter(l, l2));
        char p[700], *txt = NULL;
        size_t n = 0;
        snprintf(p, sizeof p, "%s/adapter_config.json", dir);
        PT_OK(pu_file_read_all(p, &txt, &n));
        PT_CHECK(txt && strstr(txt, "\"peft_type\": \"LORA\"") && strstr(txt, "\"CAUSAL_LM\"") &&
                 strstr(txt, "\"wqkv\"") && strstr(txt, "\"output\"") &&
                 strstr(txt, "\"use_rslora\": true"));
        pu_free(txt);
        pu_lora_destroy(l);
        pu_lora_destroy(l2);
    }

    if (PT_TEST("lora: BF16 and F16 tensors widen on load")) {
        const char *dts[] = {"BF16", "F16"};
        for (int d = 0; d < 2; d++) {
            pt_tmp_path(d ? "lora_f16" : "lora_bf16", dir, sizeof dir);
            pu_mkdir_p(dir);
            char p[700];
            snprintf(p, sizeof p, "%s/adapter_config.json", dir);
            snprintf(cfg, sizeof cfg, "%s\"target_modules\":[\"output\"]}", CFG_HEAD);
            write_text(p, cfg);
            float a[2 * 32], b[96 * 2];
            for (int i = 0; i < 64; i++)
                a[i] = 0.25f * (float)(i - 32); /* exact in BF16 and F16 */
            for (int i = 0; i < 192; i++)
                b[i] = 0.5f * (float)(i % 7) - 1.0f;
            st_spec sp[2] = {{"base_model.model.output.lora_A.weight", dts[d], 2, 32, a},
                             {"base_model.model.output.lora_B.weight", dts[d], 96, 2, b}};
            snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
            write_st(p, sp, 2);
            pu_lora *l = NULL;
            PT_OK(pu_lora_load(dir, &c, &l));
            if (l) {
                PT_EQ_I64(l->targets, 1u << PU_LORA_OUTPUT);
                PT_ALLCLOSE("A", l->output.A, a, 64, 0, 0);
                PT_ALLCLOSE("B", l->output.B, b, 192, 0, 0);
                PT_NEAR(l->scale, 2.0, 0, 0);
            }
            pu_lora_destroy(l);
        }
    }

    if (PT_TEST("lora: target_modules as full paths, regex, layers_to_transform")) {
        /* full paths select single layers */
        pt_tmp_path("lora_paths", dir, sizeof dir);
        snprintf(cfg, sizeof cfg,
                 "%s\"target_modules\":[\"model.layers.1.attention.wqkv\","
                 "\"feed_forward.w2\"],\"base_model_name_or_path\":null,\"bias\":\"none\","
                 "\"modules_to_save\":null,\"rank_pattern\":{},\"alpha_pattern\":{}}",
                 CFG_HEAD);
        /* write the exact keys by hand: layer 1 wqkv, w2 of layers 0 and 1 */
        pu_mkdir_p(dir);
        char p[700];
        snprintf(p, sizeof p, "%s/adapter_config.json", dir);
        write_text(p, cfg);
        st_spec sp[] = {
            {"base_model.model.model.layers.1.attention.wqkv.lora_A.weight", "F32", 2, 32, NULL},
            {"base_model.model.model.layers.1.attention.wqkv.lora_B.weight", "F32", 64, 2, NULL},
            {"base_model.model.model.layers.0.feed_forward.w2.lora_A.weight", "F32", 2, 40, NULL},
            {"base_model.model.model.layers.0.feed_forward.w2.lora_B.weight", "F32", 32, 2, NULL},
            {"base_model.model.model.layers.1.feed_forward.w2.lora_A.weight", "F32", 2, 40, NULL},
            {"base_model.model.model.layers.1.feed_forward.w2.lora_B.weight", "F32", 32, 2, NULL}};
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        write_st(p, sp, 6);
        pu_lora *l = NULL;
        PT_OK(pu_lora_load(dir, &c, &l));
        if (l) {
            PT_CHECK(pu_lora_get(l, 0, PU_LORA_WQKV) == NULL);
            PT_CHECK(pu_lora_get(l, 1, PU_LORA_WQKV) != NULL);
            PT_CHECK(pu_lora_get(l, 0, PU_LORA_W2) && pu_lora_get(l, 1, PU_LORA_W2));
            PT_EQ_I64(l->targets, (1u << PU_LORA_WQKV) | (1u << PU_LORA_W2));
            /* round trip keeps the per-layer selection */
            char d2[512];
            pt_tmp_path("lora_paths2", d2, sizeof d2);
            PT_OK(pu_lora_save(l, d2));
            pu_lora *l2 = NULL;
            PT_OK(pu_lora_load(d2, &c, &l2));
            PT_CHECK(l2 && same_adapter(l, l2));
            pu_lora_destroy(l2);
        }
        pu_lora_destroy(l);

        /* a regex (PEFT: re.fullmatch over module names) */
        pu_lora *x = NULL;
        const char *re = "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":16,"
                         "\"target_modules\":\".*\\\\.(wqkv|w1)\"}";
        PT_OK(pu_lora_config_parse(re, strlen(re), "re.json", &c, &x));
        if (x) {
            PT_EQ_I64(x->targets, (1u << PU_LORA_WQKV) | (1u << PU_LORA_W1));
            PT_CHECK(pu_lora_get(x, 1, PU_LORA_W1) != NULL);
            PT_NEAR(x->scale, 4.0, 0, 0);
        }
        pu_lora_destroy(x);
        x = NULL;
        /* a partial regex must match the whole name: "wqkv" alone matches nothing */
        const char *re2 = "{\"peft_type\":\"LORA\",\"r\":4,\"target_modules\":\"wqkv\"}";
        PT_CHECK(pu_lora_config_parse(re2, strlen(re2), "re2.json", &c, &x) == PU_ERR_FORMAT);
        PT_CHECK(strstr(pu_err_msg(), "re2.json") && strstr(pu_err_msg(), "target_modules"));
        /* a regex that reaches a norm */
        const char *re3 = "{\"peft_type\":\"LORA\",\"r\":4,\"target_modules\":\".*norm\"}";
        PT_CHECK(pu_lora_config_parse(re3, strlen(re3), "re3.json", &c, &x) == PU_ERR_FORMAT);
        PT_CHECK(strstr(pu_err_msg(), "attention_norm") != NULL);
        const char *re4 = "{\"peft_type\":\"LORA\",\"r\":4,\"target_modules\":\"(\"}";
        PT_CHECK(pu_lora_config_parse(re4, strlen(re4), "re4.json", &c, &x) == PU_ERR_FORMAT);
        PT_CHECK(strstr(pu_err_msg(), "bad regex") != NULL);
        /* layers_to_transform */
        const char *lt = "{\"peft_type\":\"LORA\",\"r\":1,\"target_modules\":[\"wo\"],"
                         "\"layers_to_transform\":[1]}";
        PT_OK(pu_lora_config_parse(lt, strlen(lt), "lt.json", &c, &x));
        if (x) {
            PT_CHECK(pu_lora_get(x, 0, PU_LORA_WO) == NULL && pu_lora_get(x, 1, PU_LORA_WO));
            PT_NEAR(x->scale, 8.0, 0, 0); /* PEFT's default lora_alpha 8 */
        }
        pu_lora_destroy(x);
        x = NULL;
        const char *lt2 = "{\"peft_type\":\"LORA\",\"r\":1,\"target_modules\":[\"wo\"],"
                          "\"layers_to_transform\":5}";
        PT_CHECK(pu_lora_config_parse(lt2, strlen(lt2), "lt2.json", &c, &x) == PU_ERR_FORMAT);
        PT_CHECK(strstr(pu_err_msg(), "layers_to_transform") != NULL);
    }

    if (PT_TEST("lora: bad config fields name file and field")) {
        struct {
            const char *json, *field;
            pu_status code;
        } bad[] = {
            {"{\"peft_type\":\"LORA\",\"r\":0,\"target_modules\":[\"wo\"]}", "'r'", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":-3,\"target_modules\":[\"wo\"]}", "'r'", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":\"8\",\"target_modules\":[\"wo\"]}", "'r'",
             PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"target_modules\":[\"wo\"]}", "'r'", PU_ERR_FORMAT},
            {"{\"peft_type\":\"IA3\",\"r\":2,\"target_modules\":[\"wo\"]}", "peft_type",
             PU_ERR_FORMAT},
            {"{\"r\":2,\"target_modules\":[\"wo\"]}", "peft_type", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"task_type\":\"SEQ_CLS\",\"r\":2,\"target_modules\":[\"wo\"]"
             "}",
             "task_type", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[\"q_proj\"]}", "q_proj",
             PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[\"wo\",\"model.layers.7."
             "attention.wo\"]}",
             "model.layers.7", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[\"tok_embeddings\"]}",
             "tok_embeddings", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[\"attention\"]}", "attention",
             PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[]}", "target_modules",
             PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2}", "target_modules", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[3]}", "target_modules",
             PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"lora_alpha\":\"x\",\"target_modules\":[\"wo\"]}",
             "lora_alpha", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"lora_dropout\":1.5,\"target_modules\":[\"wo\"]}",
             "lora_dropout", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"use_rslora\":1,\"target_modules\":[\"wo\"]}",
             "use_rslora", PU_ERR_FORMAT},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"use_dora\":true,\"target_modules\":[\"wo\"]}",
             "use_dora", PU_ERR_UNSUPPORTED},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"bias\":\"all\",\"target_modules\":[\"wo\"]}",
             "bias", PU_ERR_UNSUPPORTED},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"rank_pattern\":{\"wo\":4},\"target_modules\":["
             "\"wo\"]}",
             "rank_pattern", PU_ERR_UNSUPPORTED},
            {"{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[\"wo\"]", "cfg.json",
             PU_ERR_FORMAT}, /* truncated JSON */
            {"[1,2]", "object", PU_ERR_FORMAT},
            {"", "cfg.json", PU_ERR_FORMAT},
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            pu_lora *x = NULL;
            pu_status s =
                pu_lora_config_parse(bad[i].json, strlen(bad[i].json), "dir/cfg.json", &c, &x);
            PT_CHECK_MSG(s == bad[i].code && x == NULL && strstr(pu_err_msg(), "dir/cfg.json") &&
                             strstr(pu_err_msg(), bad[i].field),
                         "case %zu (%s): got %s: %s", i, bad[i].json, pu_status_str(s),
                         pu_err_msg());
            pu_lora_destroy(x);
        }
    }

    if (PT_TEST("lora: bad adapter files name file and tensor")) {
        snprintf(cfg, sizeof cfg, "%s\"target_modules\":[\"wqkv\",\"wo\",\"w1\",\"w2\",\"w3\"]}",
                 CFG_HEAD);
        /* sanity: the generator's exact key set loads */
        pt_tmp_path("lora_ok", dir, sizeof dir);
        make_dir(dir, &c, cfg, PU_LORA_DEFAULT_TARGETS, "F32", NULL, NULL, 0);
        pu_lora *l = NULL;
        PT_OK(pu_lora_load(dir, &c, &l));
        pu_lora_destroy(l);
        /* missing key */
        pt_tmp_path("lora_missing", dir, sizeof dir);
        make_dir(dir, &c, cfg, PU_LORA_DEFAULT_TARGETS, "F32",
                 "base_model.model.model.layers.1.feed_forward.w3.lora_B.weight", NULL, 0);
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_model.safetensors",
                    "layers.1.feed_forward.w3.lora_B.weight' missing");
        /* extra key (the config does not target output) */
        pt_tmp_path("lora_extra", dir, sizeof dir);
        make_dir(dir, &c, cfg, PU_LORA_DEFAULT_TARGETS, "F32", NULL,
                 "base_model.model.output.lora_A.weight", 0);
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_model.safetensors",
                    "output.lora_A.weight' is not implied");
        /* shape mismatch: an adapter for another base */
        pt_tmp_path("lora_shape", dir, sizeof dir);
        make_dir(dir, &c, cfg, PU_LORA_DEFAULT_TARGETS, "F32", NULL, NULL, 64);
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_model.safetensors", "another model");
        pu_config other = c;
        other.hidden_size = 64;
        other.head_dim = 16;
        pt_tmp_path("lora_ok", dir, sizeof dir);
        EXPECT_FAIL(dir, &other, PU_ERR_FORMAT, "layers.0.attention.wqkv.lora_A.weight", "(2, 64)");
        /* wrong dtype */
        pt_tmp_path("lora_i32", dir, sizeof dir);
        make_dir(dir, &c, cfg, PU_LORA_DEFAULT_TARGETS, "I32", NULL, NULL, 0);
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_model.safetensors", "dtype");
        /* unknown target module, r = 0, corrupt JSON through the directory API */
        pt_tmp_path("lora_unknown", dir, sizeof dir);
        make_dir(dir, &c,
                 "{\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[\"wqkv\",\"gate_proj\"]}",
                 PU_LORA_DEFAULT_TARGETS, "F32", NULL, NULL, 0);
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_config.json", "gate_proj");
        pt_tmp_path("lora_r0", dir, sizeof dir);
        make_dir(dir, &c, "{\"peft_type\":\"LORA\",\"r\":0,\"target_modules\":[\"wqkv\"]}",
                 PU_LORA_DEFAULT_TARGETS, "F32", NULL, NULL, 0);
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_config.json", "'r'");
        pt_tmp_path("lora_corrupt", dir, sizeof dir);
        make_dir(dir, &c, "{\"peft_type\":\"LORA\",,", PU_LORA_DEFAULT_TARGETS, "F32", NULL, NULL,
                 0);
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_config.json", NULL);
        /* truncated safetensors */
        char p[700];
        snprintf(p, sizeof p, "%s/adapter_config.json", dir);
        write_text(p, cfg);
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        write_text(p, "\x10\0\0\0\0\0\0\0{\"a\":");
        EXPECT_FAIL(dir, &c, PU_ERR_FORMAT, "adapter_model.safetensors", NULL);
        /* missing files */
        remove(p);
        EXPECT_FAIL(dir, &c, PU_ERR_IO, "adapter_model.safetensors", "missing");
        pt_tmp_path("lora_nodir", dir, sizeof dir);
        pu_lora *y = NULL;
        PT_CHECK(pu_lora_load(dir, &c, &y) != PU_OK && y == NULL);
        PT_CHECK(strstr(pu_err_msg(), "adapter_config.json") != NULL);
    }
}
