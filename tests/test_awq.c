/*
 * test_awq.c — AutoAWQ / LMDeploy AWQ directories (src/model/awq.c) against
 * tests/golden/awq_ref, the same model dequantized by tools/gen_awq_fixture.py
 * (AutoAWQ's packing, unpacked independently the way AutoAWQ does).
 */
#include <string.h>

#include "model/loaders.h"
#include "pt.h"
#include "puyu/pu_model.h"

static bool same_tensor(const pu_tensor *a, const pu_tensor *b) {
    int64_t n = pu_tensor_numel(a);
    return a->dtype == b->dtype && a->ndim == b->ndim && n == pu_tensor_numel(b) &&
           a->shape[0] == b->shape[0] &&
           memcmp(a->data, b->data, (size_t)pu_dtype_nbytes(a->dtype, n)) == 0;
}

/* a copy of tests/golden/awq in the temp dir with config.json replaced */
static void awq_variant(const char *name, const char *from, const char *to, char *dir,
                        size_t cap) {
    pt_tmp_path(name, dir, cap);
    pu_mkdir_p(dir);
    char *cfg = NULL, *st = NULL;
    size_t nc = 0, ns = 0;
    PT_OK(pu_file_read_all("tests/golden/awq/config.json", &cfg, &nc));
    PT_OK(pu_file_read_all("tests/golden/awq/model.safetensors", &st, &ns));
    if (!cfg || !st)
        return;
    pu_str s = {0};
    char *p = from ? strstr(cfg, from) : NULL;
    if (p) {
        pu_str_append(&s, cfg, (size_t)(p - cfg));
        pu_str_append(&s, to, strlen(to));
        pu_str_append(&s, p + strlen(from), strlen(p + strlen(from)));
    } else {
        pu_str_append(&s, cfg, nc);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    PT_OK(pu_file_write_atomic(path, s.p, s.len));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    PT_OK(pu_file_write_atomic(path, st, ns));
    pu_str_free(&s);
    pu_free(cfg);
    pu_free(st);
}

static void expect_err(const char *dir, const char *a, const char *b) {
    pu_model *m = NULL;
    pu_status st = pu_model_load(dir, &m);
    PT_CHECK(st != PU_OK);
    const char *msg = pu_err_msg();
    PT_CHECK_MSG(strstr(msg, a) && (!b || strstr(msg, b)), "message: %s", msg);
    pu_model_destroy(m);
}

PT_SUITE(awq) {
    if (PT_TEST("AWQ dir: dequantized weights equal the fixture's exactly, same logits")) {
        pu_model *a = NULL, *r = NULL;
        PT_OK(pu_model_load("tests/golden/awq", &a));
        PT_OK(pu_model_load("tests/golden/awq_ref", &r));
        if (a && r) {
            const pu_weights *wa = pu_model_weights(a), *wr = pu_model_weights(r);
            const pu_layer_weights *la = &wa->layers[0], *lr = &wr->layers[0];
            PT_CHECK(la->wqkv.dtype == PU_DTYPE_F32);
            PT_CHECK(same_tensor(&la->wqkv, &lr->wqkv));
            PT_CHECK(same_tensor(&la->wo, &lr->wo));
            PT_CHECK(same_tensor(&la->w1, &lr->w1));
            PT_CHECK(same_tensor(&la->w2, &lr->w2));
            PT_CHECK(same_tensor(&la->w3, &lr->w3));
            PT_CHECK(same_tensor(&wa->output, &wr->output));
            int32_t ids[6] = {1, 7, 33, 2, 60, 9};
            int64_t V = pu_model_config(a)->vocab_size;
            float la_[6 * 64], lr_[6 * 64];
            pu_session *sa = NULL, *sr = NULL;
            PT_OK(pu_session_create(a, 8, NULL, &sa));
            PT_OK(pu_session_create(r, 8, NULL, &sr));
            if (sa && sr && V == 64) {
                PT_OK(pu_session_eval(sa, ids, 6, la_, true));
                PT_OK(pu_session_eval(sr, ids, 6, lr_, true));
                PT_CHECK(memcmp(la_, lr_, sizeof la_) == 0);
            }
            pu_session_destroy(sa);
            pu_session_destroy(sr);
        }
        pu_model_destroy(a);
        pu_model_destroy(r);
    }
    if (PT_TEST("AWQ nibble order: one int32 decodes as AWQ_REVERSE_ORDER")) {
        /* columns 0..7 of one input row hold codes 1..8, zero 0, scale 1 */
        static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
        uint32_t w = 0, z = 0;
        for (int k = 0; k < 8; k++)
            w |= (uint32_t)(order[k] + 1) << (4 * k); /* nibble k holds column order[k] */
        uint16_t sc[8];
        for (int o = 0; o < 8; o++)
            sc[o] = pu_f32_to_f16(1.0f);
        float dst[8];
        pu_awq_dequant_(dst, (const uint8_t *)&w, (const uint8_t *)&z, (const uint8_t *)sc, 8, 1,
                        1);
        for (int o = 0; o < 8; o++)
            PT_CHECK_MSG(dst[o] == (float)(o + 1), "column %d: %g", o, (double)dst[o]);
    }
    if (PT_TEST("AWQ config and tensor errors name the field / tensor")) {
        char dir[512];
        awq_variant("awq_bits8", "\"bits\": 4", "\"bits\": 8", dir, sizeof dir);
        expect_err(dir, "bits", "4");
        awq_variant("awq_gptq", "\"quant_method\": \"awq\"", "\"quant_method\": \"gptq\"", dir,
                    sizeof dir);
        expect_err(dir, "quant_method", "gptq");
        awq_variant("awq_gemv", "\"version\": \"gemm\"", "\"version\": \"gemv\"", dir,
                    sizeof dir);
        expect_err(dir, "version", "gemv");
        awq_variant("awq_g64", "\"group_size\": 128", "\"group_size\": 64", dir, sizeof dir);
        expect_err(dir, "qzeros", "expected shape");
        /* without quantization_config the packed tensors are not understood */
        awq_variant("awq_none", "\"quantization_config\"", "\"no_quantization_config\"", dir,
                    sizeof dir);
        expect_err(dir, "missing tensor", "wqkv.weight");
    }
}
