/*
 * test_awq.c — AutoAWQ / LMDeploy AWQ directories (src/model/awq.c) against
 * tests/golden/awq_ref, the same model dequantized by tools/gen_awq_fixture.py
 * (AutoAWQ's packing, unpacked independently the way AutoAWQ does).
 */
#include <math.h>
#include <string.h>

#include "model/loaders.h"
#include "pt.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

static bool same_tensor(const pu_tensor *a, const pu_tensor *b) {
    int64_t n = pu_tensor_numel(a);
    return a->dtype == b->dtype && a->ndim == b->ndim && n == pu_tensor_numel(b) &&
           a->shape[0] == b->shape[0] &&
           memcmp(a->data, b->data, (size_t)pu_dtype_nbytes(a->dtype, n)) == 0;
}

/* a copy of tests/golden/awq in the temp dir with config.json replaced */
static void awq_variant(const char *name, const char *from, const char *to, char *dir, size_t cap) {
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
        awq_variant("awq_gemv", "\"version\": \"gemm\"", "\"version\": \"gemv\"", dir, sizeof dir);
        expect_err(dir, "version", "gemv");
        awq_variant("awq_g64", "\"group_size\": 128", "\"group_size\": 64", dir, sizeof dir);
        expect_err(dir, "qzeros", "expected shape");
        /* without quantization_config the packed tensors are not understood */
        awq_variant("awq_none", "\"quantization_config\"", "\"no_quantization_config\"", dir,
                    sizeof dir);
        expect_err(dir, "missing tensor", "wqkv.weight");
    }
}

/* perplexity of m on ids, windows of ctx tokens scored in one prefill */
static double ppl(const pu_model *m, const int32_t *ids, int64_t n, int64_t ctx) {
    int64_t V = pu_model_config(m)->vocab_size;
    float *lg = pu_malloc((size_t)(ctx * V) * sizeof(float));
    pu_session *s = NULL;
    double nll = 0;
    int64_t cnt = 0;
    if (pu_session_create(m, ctx, NULL, &s) == PU_OK)
        for (int64_t w0 = 0; w0 + 1 < n; w0 += ctx) {
            int64_t len = n - w0 < ctx ? n - w0 : ctx;
            pu_session_reset(s);
            if (pu_session_eval(s, ids + w0, len, lg, true) != PU_OK)
                break;
            for (int64_t i = 0; i + 1 < len; i++) {
                const float *l = lg + i * V;
                double mx = l[0], se = 0;
                for (int64_t v = 1; v < V; v++)
                    mx = l[v] > mx ? l[v] : mx;
                for (int64_t v = 0; v < V; v++)
                    se += exp((double)l[v] - mx);
                nll += -((double)l[ids[w0 + i + 1]] - mx - log(se));
                cnt++;
            }
        }
    pu_session_destroy(s);
    pu_free(lg);
    return cnt ? exp(nll / (double)cnt) : INFINITY;
}

static int32_t *encode_file(const pu_tok *tok, const char *path, size_t off, size_t bytes,
                            int64_t *n) {
    char *text = NULL;
    size_t len = 0;
    *n = 0;
    if (pu_file_read_all(path, &text, &len) != PU_OK || len <= off)
        return NULL;
    if (len - off > bytes)
        len = off + bytes;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.parse_special = false;
    int32_t *ids = NULL;
    if (pu_tok_encode(tok, text + off, len - off, &eo, &ids, n) != PU_OK)
        ids = NULL;
    pu_free(text);
    return ids;
}

PT_SUITE(awq_calib) {
    /* Measured (calibration 1.9k TinyStories tokens, held out 2k more and 2k
     * of Wizard of Oz, windows of 256): Q4_0 TinyStories f32 5.880, plain
     * 6.368, awq 6.299; Oz f32 28.61, plain 30.33, awq 29.38. Q4_1 (--slow):
     * TinyStories plain 6.440, awq 6.372; Oz plain 30.13, awq 30.00. */
    if (PT_TEST("AWQ calibration: held-out perplexity <= plain quantization (stories260K)")) {
        char bin[512], tokm[512], cal[512], held[512];
        if (!pt_shared_path("models/stories260K/stories260K.bin", bin, sizeof bin) ||
            !pt_shared_path("models/stories260K/tok512.model", tokm, sizeof tokm) ||
            !pt_shared_path("corpus/en-tinystories/tinystories_train_head.txt", cal, sizeof cal) ||
            !pt_shared_path("corpus/en-misc/wizard_of_oz.txt", held, sizeof held)) {
            pt_skip("../shared/data (stories260K, TinyStories, Wizard of Oz) absent");
            return;
        }
        pu_model *m = NULL;
        pu_tok *tok = NULL;
        PT_OK(pu_model_load(bin, &m));
        PT_OK(pu_tok_load(tokm, &tok));
        if (!m || !tok) {
            pu_model_destroy(m);
            pu_tok_destroy(tok);
            return;
        }
        int64_t nc = 0, nh = 0, nt = 0;
        /* calibration: the start of TinyStories; held out: a later part of
         * TinyStories and the Wizard of Oz (never seen by the search) */
        int32_t *ci = encode_file(tok, cal, 0, 8000, &nc);
        int32_t *ti = encode_file(tok, cal, 120000, 8000, &nt);
        int32_t *hi = encode_file(tok, held, 20000, 8000, &nh);
        PT_CHECK(ci && hi && ti && nc > 1500 && nh > 1500 && nt > 1500);
        double f32_t = ppl(m, ti, nt, 256), f32_h = ppl(m, hi, nh, 256);
        pu_pool *pool = pu_pool_create(2);
        /* Q4_1 too with --slow (the suite runs on a shared 2-core machine) */
        pu_dtype types[] = {PU_DTYPE_Q4_0, PU_DTYPE_Q4_1};
        for (int i = 0; ci && hi && ti && i < (pt_slow() ? 2 : 1); i++) {
            pu_awq_params ap = pu_awq_default_params();
            ap.dtype = types[i];
            pu_model *a = NULL, *qa = NULL, *qp = NULL;
            PT_OK(pu_model_awq(m, ci, nc, &ap, pool, &a, NULL));
            if (!a)
                continue;
            PT_OK(pu_model_quantize(a, types[i], pool, &qa));
            PT_OK(pu_model_quantize(m, types[i], pool, &qp));
            double a32_h = ppl(a, hi, 512, 256), f32_512 = ppl(m, hi, 512, 256);
            double pa_t = ppl(qa, ti, nt, 256), pp_t = ppl(qp, ti, nt, 256);
            double pa_h = ppl(qa, hi, nh, 256), pp_h = ppl(qp, hi, nh, 256);
            pu_log_info("%s: TinyStories held-out ppl f32 %.4f plain %.4f awq %.4f; "
                        "Wizard of Oz f32 %.4f plain %.4f awq %.4f; first 512: f32 %.5f scaled f32 %.5f",
                        pu_dtype_name(types[i]), f32_t, pp_t, pa_t, f32_h, pp_h, pa_h, f32_512,
                        a32_h);
            /* the scaled float model is the same function */
            PT_NEAR(a32_h, f32_512, 0, 1e-4);
            PT_CHECK_MSG(pa_t <= pp_t, "%s TinyStories: awq %g > plain %g", pu_dtype_name(types[i]),
                         pa_t, pp_t);
            PT_CHECK_MSG(pa_h <= pp_h, "%s Oz: awq %g > plain %g", pu_dtype_name(types[i]), pa_h,
                         pp_h);
            pu_model_destroy(a);
            pu_model_destroy(qa);
            pu_model_destroy(qp);
        }
        pu_pool_destroy(pool);
        pu_free(ci);
        pu_free(hi);
        pu_free(ti);
        pu_tok_destroy(tok);
        pu_model_destroy(m);
    }
}

PT_SUITE(awq_cli) {
    if (PT_TEST("puyu quantize --calib: AWQ then Q4_0 GGUF that loads; bad --type refused")) {
        char bin[512], tokm[512], cal[512], out[512], cmd[3000];
        if (!pt_shared_path("models/stories260K/stories260K.bin", bin, sizeof bin) ||
            !pt_shared_path("models/stories260K/tok512.model", tokm, sizeof tokm) ||
            !pt_shared_path("corpus/en-tinystories/tinystories_train_head.txt", cal, sizeof cal)) {
            pt_skip("../shared/data (stories260K, TinyStories) absent");
            return;
        }
        pt_tmp_path("awq_q4_0.gguf", out, sizeof out);
        snprintf(cmd, sizeof cmd,
                 "%s quantize -m '%s' -t '%s' --type q4_0 --out '%s' --calib '%s' "
                 "--calib-tokens 300 --awq-grid 5 --awq-report 2>&1",
                 pt_bin(), bin, tokm, out, cal);
        char *o = NULL;
        PT_EQ_I64(pt_run(cmd, &o), 0);
        PT_CHECK_MSG(o && strstr(o, "AWQ scales searched on 300 tokens") &&
                         strstr(o, "layer 4 w1/w3: alpha"),
                     "output: %s", o ? o : "");
        pu_free(o);
        pu_model *m = NULL;
        PT_OK(pu_model_load(out, &m));
        if (m)
            PT_CHECK(pu_model_weights(m)->layers[0].w1.dtype == PU_DTYPE_Q4_0);
        pu_model_destroy(m);
        snprintf(cmd, sizeof cmd,
                 "%s quantize -m '%s' -t '%s' --type f16 --out '%s' --calib '%s' 2>&1", pt_bin(),
                 bin, tokm, out, cal);
        o = NULL;
        PT_CHECK(pt_run(cmd, &o) != 0);
        PT_CHECK_MSG(o && strstr(o, "--calib") && strstr(o, "F16"), "output: %s", o ? o : "");
        pu_free(o);
    }
}
