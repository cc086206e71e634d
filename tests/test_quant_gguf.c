/*
 * test_quant_gguf.c — quantized GGUF files: pu_model_write_gguf (llama.cpp's
 * names, fused qkv split, Q/K permutation) read back by the loader gives the
 * in-memory quantized model's logits; `puyu quantize` end to end; and bad
 * quantized input (truncated tensor, unknown / unsupported ggml type, row
 * length not a multiple of the block, mis-sized K-quant super-block) fails
 * with an error naming the tensor and the type; the GGUF's tokenizer.ggml.* encodes
 * chat-rendered text id for id as the SentencePiece model it was written from (a vocabulary
 * trained without the dummy prefix keeps it off: tokenizer.ggml.add_space_prefix).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/loaders.h"
#include "pt.h"
#include "puyu/pu_chat.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_model.h"
#include "puyu/pu_sft.h"

static pu_model *tiny_model(pu_pool *pool) {
    pu_config c;
    pu_config_defaults(&c);
    snprintf(c.model_type, sizeof c.model_type, "internlm2");
    c.vocab_size = 300, c.hidden_size = 256, c.intermediate_size = 512;
    c.num_hidden_layers = 2, c.num_attention_heads = 4, c.num_key_value_heads = 2;
    c.head_dim = 64, c.max_position_embeddings = 128, c.tie_word_embeddings = false;
    pu_model *m = NULL;
    PT_OK(pu_model_init_random(&c, PU_DTYPE_F32, 3, 0.05f, false, pool, &m));
    return m;
}

static float max_abs(const float *x, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

static void logits_of(const pu_model *m, pu_pool *pool, const int32_t *ids, int64_t n, float *out) {
    pu_session *s = NULL;
    PT_OK(pu_session_create(m, 32, pool, &s));
    if (s)
        PT_OK(pu_session_eval(s, ids, n, out, true));
    pu_session_destroy(s);
}

/* offset of tensor i's ggml type field inside the file image */
static size_t type_field(const uint8_t *buf, const pu_gguf_tensor *t) {
    return (size_t)((const uint8_t *)t->name - buf) + t->name_len + 4 + 8 * t->n_dims;
}

static void expect_load_error(const uint8_t *buf, size_t len, const char *label, const char *s1,
                              const char *s2) {
    pu_model *m = pu_calloc(1, sizeof *m);
    pu_status st = pu_gguf_load_mem_(m, buf, len, "bad.gguf");
    if (st == PU_OK)
        st = pu_model_validate_(m, "bad.gguf");
    PT_CHECK_MSG(st != PU_OK, "%s: loaded", label);
    if (st != PU_OK)
        PT_CHECK_MSG(strstr(pu_err_msg(), s1) && strstr(pu_err_msg(), s2),
                     "%s: error '%s' does not name '%s' and '%s'", label, pu_err_msg(), s1, s2);
    pu_model_destroy(m);
}

static int32_t *encode_all(const pu_tok *t, const char *text, int64_t *n) {
    int32_t *ids = NULL;
    *n = 0;
    pu_tok_encode_opts o = pu_tok_encode_default_opts();
    o.add_bos = true;
    PT_OK(pu_tok_encode(t, text, strlen(text), &o, &ids, n));
    return ids;
}

/* the GGUF written from a model directory whose tokenizer.model was trained by
 * python3-sentencepiece with add_dummy_prefix off and the InternLM2 specials as
 * user-defined symbols (tests/golden/sft) tokenizes exactly as that model */
static void check_gguf_tokenizer(pu_pool *pool) {
    const char *dir = "tests/golden/sft/hf";
    pu_model *m = NULL;
    pu_tok *src = NULL, *gg = NULL;
    PT_OK(pu_model_load(dir, &m));
    PT_OK(pu_tok_load("tests/golden/sft/hf/tokenizer.model", &src));
    char path[512];
    pt_tmp_path("sft_tok.gguf", path, sizeof path);
    pu_model *q = NULL;
    if (m)
        PT_OK(pu_model_quantize(m, PU_DTYPE_Q8_0, pool, &q));
    if (q && src)
        PT_OK(pu_model_write_gguf(q, src, path));
    PT_OK(pu_tok_load(path, &gg));
    if (!src || !gg)
        goto done;
    pu_tok_spm_flags fs, fg;
    PT_CHECK(pu_tok_get_spm_flags(src, &fs) && pu_tok_get_spm_flags(gg, &fg));
    PT_CHECK(!fs.add_dummy_prefix);
    PT_CHECK_MSG(fg.add_dummy_prefix == fs.add_dummy_prefix &&
                     fg.remove_extra_whitespaces == fs.remove_extra_whitespaces,
                 "GGUF normalizer flags: add_dummy_prefix %d remove_extra_whitespaces %d",
                 fg.add_dummy_prefix, fg.remove_extra_whitespaces);
    /* conversations rendered as `puyu chat` / `serve` render them */
    static const char *const conv[][6] = {
        {"user", "Who are you?", NULL},
        {"system", "You are Puyu.", "user", "What does \"ocean\" mean?", "assistant",
         "A large body of water."},
        {"user", "续写这首诗：床前明月光，", "assistant", "疑是地上霜。", NULL},
        {"user", "  two  spaces and\ttab\n\nnew lines ", NULL},
        {"user", "你是谁？", "assistant", "我是浦语。", "user", "Hello!"},
    };
    for (size_t k = 0; k < sizeof conv / sizeof conv[0]; k++) {
        pu_chat c;
        pu_chat_init(&c);
        for (int i = 0; i < 6 && conv[k][i]; i += 2)
            pu_chat_add(&c, conv[k][i], NULL, conv[k][i + 1]);
        pu_chat_render_opts ro = {.add_generation_prompt = true};
        pu_str r = {0};
        PT_OK(pu_chat_render(&c, &ro, &r));
        int64_t na = 0, nb = 0;
        int32_t *a = encode_all(src, r.p, &na), *b = encode_all(gg, r.p, &nb);
        bool same = na == nb && na > 3 && memcmp(a, b, (size_t)na * sizeof *a) == 0;
        PT_CHECK_MSG(same, "conversation %zu: %lld ids from tokenizer.model, %lld from the GGUF "
                           "(first ids %d %d %d vs %d %d %d)",
                     k, (long long)na, (long long)nb, na > 0 ? a[0] : -1, na > 1 ? a[1] : -1,
                     na > 2 ? a[2] : -1, nb > 0 ? b[0] : -1, nb > 1 ? b[1] : -1,
                     nb > 2 ? b[2] : -1);
        /* BOS then <|im_start|> directly (no space piece in front of the first turn) */
        PT_CHECK(nb > 2 && b[0] == pu_tok_bos(gg) &&
                 b[1] == pu_tok_special_id(gg, "<|im_start|>"));
        pu_free(a);
        pu_free(b);
        pu_str_free(&r);
        pu_chat_free(&c);
    }
    /* segment-wise SFT rendering (XTuner's) through the GGUF's tokenizer = the ids
     * python3-sentencepiece gave (tests/golden/sft/expected.jsonl) */
    const char *paths[1] = {"tests/golden/sft/records.jsonl"};
    static const char *const vars[] = {"name=Puyu", "author=the puyu authors", NULL};
    pu_sft_load_opts o = {.vars = vars, .pool = pool};
    pu_sft_data *d = NULL;
    PT_OK(pu_sft_data_load(paths, 1, gg, &o, &d));
    FILE *f = fopen("tests/golden/sft/expected.jsonl", "r");
    PT_CHECK(f != NULL);
    char *line = NULL;
    size_t cap = 0;
    int64_t i = 0, checked = 0;
    while (d && f && getline(&line, &cap, f) > 0 && i < pu_sft_data_n(d)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *srcname = json_string_value(json_object_get(j, "src"));
        if (srcname && !strncmp(srcname, "records.jsonl:", 14)) {
            const pu_sft_tokens *s = pu_sft_data_get(d, i++);
            json_t *ids = json_object_get(j, "ids");
            bool same = (int64_t)json_array_size(ids) == s->n;
            for (int64_t k = 0; same && k < s->n; k++)
                same = s->ids[k] == (int32_t)json_integer_value(json_array_get(ids, (size_t)k));
            PT_CHECK_MSG(same, "%s: GGUF tokenizer ids differ from python3-sentencepiece's",
                         srcname);
            checked++;
        }
        json_decref(j);
    }
    PT_CHECK(checked >= 5);
    free(line);
    if (f)
        fclose(f);
    pu_sft_data_destroy(d);
done:
    pu_tok_destroy(src);
    pu_tok_destroy(gg);
    pu_model_destroy(q);
    pu_model_destroy(m);
}

PT_SUITE(quant_gguf) {
    pu_pool *pool = pu_pool_create(2);
    pu_model *f32 = tiny_model(pool);
    enum { n = 7 };
    const int32_t ids[n] = {1, 250, 3, 77, 299, 12, 5};

    if (f32 && PT_TEST("write + load: logits equal the in-memory quantized model")) {
        static const pu_dtype types[] = {PU_DTYPE_Q8_0, PU_DTYPE_Q4_1, PU_DTYPE_Q5_0, PU_DTYPE_Q4_K,
                                         PU_DTYPE_Q6_K};
        int64_t V = pu_model_config(f32)->vocab_size;
        float *a = pu_malloc((size_t)(n * V) * 4), *b = pu_malloc((size_t)(n * V) * 4);
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            pu_model *q = NULL, *g = NULL;
            char path[512];
            pt_tmp_path("q.gguf", path, sizeof path);
            PT_OK(pu_model_quantize(f32, types[i], pool, &q));
            if (!q)
                continue;
            PT_OK(pu_model_write_gguf(q, NULL, path));
            PT_OK(pu_model_load(path, &g));
            if (g) {
                const pu_weights *w = pu_model_weights(g);
                PT_EQ_STR(pu_dtype_name(w->layers[1].wq.dtype), pu_dtype_name(types[i]));
                PT_EQ_STR(pu_dtype_name(w->layers[0].w2.dtype), pu_dtype_name(types[i]));
                PT_EQ_STR(pu_dtype_name(w->output.dtype), pu_dtype_name(types[i]));
                PT_CHECK(pu_model_config(g)->rope_interleaved);
                PT_EQ_I64(pu_model_config(g)->num_key_value_heads, 2);
                /* the same quantized rows, split and permuted. The int8
                 * activation rounding makes the quantized forward step-wise
                 * (fp32 summation order in attention can flip a level), so
                 * the layout is checked exactly on the dequantized weights
                 * (F32 forward, continuous), the quantized forward loosely. */
                pu_model *qd = NULL, *gd = NULL;
                PT_OK(pu_model_quantize(q, PU_DTYPE_F32, pool, &qd));
                PT_OK(pu_model_quantize(g, PU_DTYPE_F32, pool, &gd));
                if (qd && gd) {
                    logits_of(qd, pool, ids, n, a);
                    logits_of(gd, pool, ids, n, b);
                    double e = 0;
                    for (int64_t j = 0; j < n * V; j++)
                        e = fmax(e, fabs((double)a[j] - b[j]));
                    PT_CHECK_MSG(e <= 1e-4 * max_abs(a, n * V),
                                 "%s: GGUF vs memory (dequantized weights): %.3g",
                                 pu_dtype_name(types[i]), e);
                }
                pu_model_destroy(qd), pu_model_destroy(gd);
                logits_of(q, pool, ids, n, a);
                logits_of(g, pool, ids, n, b);
                double e = 0;
                for (int64_t j = 0; j < n * V; j++)
                    e = fmax(e, fabs((double)a[j] - b[j]));
                PT_CHECK_MSG(e <= 0.025 * max_abs(a, n * V), "%s: GGUF vs memory: %.3g",
                             pu_dtype_name(types[i]), e);
            }
            pu_model_destroy(g);
            pu_model_destroy(q);
        }
        pu_free(a), pu_free(b);
    }

    if (f32 && PT_TEST("mixed types in one file (as Q4_K_M): per-tensor dtypes survive")) {
        pu_model *q = NULL, *g = NULL;
        char path[512];
        pt_tmp_path("mixed.gguf", path, sizeof path);
        PT_OK(pu_model_quantize(f32, PU_DTYPE_Q4_K, pool, &q));
        if (q) {
            /* output in Q6_K, one ffn_down in Q5_0, one attn_v in Q8_0 */
            PT_OK(pu_tensor_requant_(q, &q->w.output, &f32->w.output, PU_DTYPE_Q6_K, pool, "o"));
            PT_OK(pu_tensor_requant_(q, &q->w.layers[0].w2, &f32->w.layers[0].w2, PU_DTYPE_Q5_0,
                                     pool, "w2"));
            PT_OK(pu_model_write_gguf(q, NULL, path));
            PT_OK(pu_model_load(path, &g));
        }
        if (g) {
            const pu_weights *w = pu_model_weights(g);
            PT_EQ_STR(pu_dtype_name(w->output.dtype), "Q6_K");
            PT_EQ_STR(pu_dtype_name(w->layers[0].w2.dtype), "Q5_0");
            PT_EQ_STR(pu_dtype_name(w->layers[1].w2.dtype), "Q4_K");
            PT_EQ_STR(pu_dtype_name(w->tok_embeddings.dtype), "Q4_K");
            int64_t V = pu_model_config(g)->vocab_size;
            float *a = pu_malloc((size_t)(n * V) * 4), *b = pu_malloc((size_t)(n * V) * 4);
            logits_of(q, pool, ids, n, a);
            logits_of(g, pool, ids, n, b);
            double e = 0;
            for (int64_t j = 0; j < n * V; j++)
                e = fmax(e, fabs((double)a[j] - b[j]));
            PT_CHECK_MSG(e <= 0.025 * max_abs(a, n * V), "mixed GGUF vs memory: %.3g", e);
            pu_free(a), pu_free(b);
        }
        pu_model_destroy(g);
        pu_model_destroy(q);
    }

    if (f32 && PT_TEST("bad quantized tensors: errors name tensor and type")) {
        pu_model *q = NULL;
        char path[512];
        pt_tmp_path("bad.gguf", path, sizeof path);
        PT_OK(pu_model_quantize(f32, PU_DTYPE_Q4_K, pool, &q));
        if (q)
            PT_OK(pu_model_write_gguf(q, NULL, path));
        pu_model_destroy(q);
        char *buf = NULL;
        size_t len = 0;
        PT_OK(pu_file_read_all(path, &buf, &len));
        pu_gguf_file f;
        if (buf && pu_gguf_parse_(buf, len, path, &f) == PU_OK) {
            uint8_t *u = (uint8_t *)buf, *copy = pu_malloc(len);
            /* the last tensor (output.weight, Q4_K) truncated by one block */
            const pu_gguf_tensor *last = &f.t[f.n_tensors - 1];
            PT_CHECK(strncmp(last->name, "output.weight", last->name_len) == 0);
            size_t end = (size_t)(f.data - u) + last->offset + (size_t)last->nbytes;
            memcpy(copy, u, end - 144);
            expect_load_error(copy, end - 144, "truncated", "'output.weight' (Q4_K)", "beyond");
            /* unknown ggml type */
            const pu_gguf_tensor *t1 = pu_gguf_find_tensor_(&f, "blk.0.ffn_up.weight");
            uint32_t v = 99;
            memcpy(copy, u, len);
            memcpy(copy + type_field(u, t1), &v, 4);
            expect_load_error(copy, len, "unknown type", "blk.0.ffn_up.weight", "unknown");
            /* known but unsupported (Q2_K) */
            v = 10;
            memcpy(copy, u, len);
            memcpy(copy + type_field(u, t1), &v, 4);
            expect_load_error(copy, len, "Q2_K", "blk.0.ffn_up.weight", "Q2_K");
            /* mis-sized super-block: ne[0] 128 x 2*ne[1] (same bytes) */
            memcpy(copy, u, len);
            size_t ne_off = type_field(u, t1) - 16;
            uint64_t ne0 = 128, ne1 = 2 * (uint64_t)t1->ne[1];
            memcpy(copy + ne_off, &ne0, 8);
            memcpy(copy + ne_off + 8, &ne1, 8);
            expect_load_error(copy, len, "super-block", "blk.0.ffn_up.weight", "Q4_K block size");
            /* a row not a multiple of the 32 block: Q8_0 with ne[0] = 48 */
            v = 8; /* Q8_0 */
            memcpy(copy, u, len);
            memcpy(copy + type_field(u, t1), &v, 4);
            ne0 = 48;
            memcpy(copy + ne_off, &ne0, 8);
            expect_load_error(copy, len, "row", "blk.0.ffn_up.weight", "Q8_0 block size 32");
            /* a quantized norm weight */
            const pu_gguf_tensor *nw = pu_gguf_find_tensor_(&f, "blk.1.ffn_norm.weight");
            v = 2; /* Q4_0: 256 floats -> 8 blocks of 18 bytes, fits in the 1024 bytes */
            memcpy(copy, u, len);
            memcpy(copy + type_field(u, nw), &v, 4);
            expect_load_error(copy, len, "norm", "ffn_norm", "Q4_0");
            pu_free(copy);
            pu_gguf_free_(&f);
        }
        pu_free(buf);
    }

    if (PT_TEST("written tensors equal the llama.cpp-style converter's (gen_gguf_fixture.py)")) {
        /* tests/golden/gguf/gqa2-internlm2-f32.gguf was written by the Python
         * converter (split + permute as convert_hf_to_gguf.py); puyu's writer
         * on the same HF fixture must give the same tensors byte for byte */
        pu_model *m = NULL;
        char path[512];
        pt_tmp_path("conv.gguf", path, sizeof path);
        PT_OK(pu_model_load("tests/golden/gqa2", &m));
        if (m)
            PT_OK(pu_model_write_gguf(m, NULL, path));
        pu_model_destroy(m);
        char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        PT_OK(pu_file_read_all("tests/golden/gguf/gqa2-internlm2-f32.gguf", &a, &na));
        PT_OK(pu_file_read_all(path, &b, &nb));
        pu_gguf_file fa, fb;
        if (a && b && pu_gguf_parse_(a, na, "ref", &fa) == PU_OK) {
            if (pu_gguf_parse_(b, nb, path, &fb) == PU_OK) {
                PT_EQ_I64(fb.n_tensors, fa.n_tensors);
                for (int64_t i = 0; i < fa.n_tensors; i++) {
                    char nm[128];
                    snprintf(nm, sizeof nm, "%.*s", (int)fa.t[i].name_len, fa.t[i].name);
                    const pu_gguf_tensor *t = pu_gguf_find_tensor_(&fb, nm);
                    PT_CHECK_MSG(t && t->nbytes == fa.t[i].nbytes && t->type == fa.t[i].type &&
                                     t->n_dims == fa.t[i].n_dims &&
                                     memcmp(fb.data + t->offset, fa.data + fa.t[i].offset,
                                            (size_t)t->nbytes) == 0,
                                 "tensor %s differs from the converter's", nm);
                }
                pu_gguf_free_(&fb);
            }
            pu_gguf_free_(&fa);
        }
        pu_free(a), pu_free(b);
    }

    if (PT_TEST("puyu quantize CLI: golden model, every type loads and generates")) {
        static const char *types[] = {"q8_0", "q4_0", "q4_1", "q5_0",
                                      "q5_1", "q4_k", "q5_k", "q6_k"};
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            char path[512], cmd[4096];
            pt_tmp_path("cli.gguf", path, sizeof path);
            snprintf(cmd, sizeof cmd,
                     "%s quantize -m tests/golden/gqa4 --type %s --out %s 2>/dev/null && %s info "
                     "-m %s && %s generate -m %s --ids '1 5 9' -n 4 --temp 0 --print-ids "
                     "2>/dev/null",
                     pt_bin(), types[i], path, pt_bin(), path, pt_bin(), path);
            char *out = NULL;
            int rc = pt_run(cmd, &out);
            PT_CHECK_MSG(rc == 0, "%s: rc %d", types[i], rc);
            char want[16];
            snprintf(want, sizeof want, "%s", types[i]);
            for (char *p = want; *p; p++)
                *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
            /* gqa4's rows are 32 wide (K-quants fall back to Q5_0/Q5_1/Q8_0) */
            const char *shown = strcmp(want, "Q4_K") == 0   ? "Q5_0"
                                : strcmp(want, "Q5_K") == 0 ? "Q5_1"
                                : strcmp(want, "Q6_K") == 0 ? "Q8_0"
                                                            : want;
            PT_CHECK_MSG(out && strstr(out, shown), "%s: info does not list %s", types[i], shown);
            pu_free(out);
        }
        char cmd[600], *out = NULL;
        snprintf(cmd, sizeof cmd, "%s quantize --help", pt_bin());
        PT_CHECK(pt_run(cmd, &out) == 0 && out && strstr(out, "--type"));
        pu_free(out);
    }
    if (PT_TEST("GGUF tokenizer = its source SentencePiece model on chat text (no dummy prefix)"))
        check_gguf_tokenizer(pool);
    if (PT_TEST("stories260K: Q8_0 GGUF with its tokenizer, greedy ids as F32")) {
        char bin[512], tokm[512];
        if (pt_shared_path("models/stories260K/stories260K.bin", bin, sizeof bin) &&
            pt_shared_path("models/stories260K/tok512.model", tokm, sizeof tokm)) {
            char path[512], cmd[4096];
            pt_tmp_path("st.gguf", path, sizeof path);
            snprintf(cmd, sizeof cmd,
                     "%s quantize -m %s -t %s --type q8_0 --out %s 2>/dev/null && "
                     "echo 'Once upon a time, there was a little girl' | %s tokenizer encode -t %s "
                     "&& echo 'Once upon a time, there was a little girl' | %s tokenizer encode -t "
                     "%s && %s generate -m %s --ids 1 -n 24 --temp 0 --print-ids 2>/dev/null && "
                     "%s generate -m %s --ids 1 -n 24 --temp 0 --print-ids 2>/dev/null",
                     pt_bin(), bin, tokm, path, pt_bin(), tokm, pt_bin(), path, pt_bin(), bin,
                     pt_bin(), path);
            char *out = NULL;
            PT_CHECK(pt_run(cmd, &out) == 0 && out);
            /* 4 lines: ids via tok512.model, via the GGUF's tokenizer.ggml.*,
             * greedy ids of the F32 checkpoint, of the Q8_0 GGUF */
            char *l[4] = {0};
            int nl = 0;
            for (char *p = out; p && *p && nl < 4; nl++) {
                l[nl] = p;
                char *e = strchr(p, '\n');
                if (e)
                    *e = 0;
                p = e ? e + 1 : NULL;
            }
            PT_CHECK_MSG(nl == 4 && strcmp(l[0], l[1]) == 0 && strlen(l[0]) > 10,
                         "tokenizer from the GGUF differs: '%s' vs '%s'", l[0] ? l[0] : "",
                         l[1] ? l[1] : "");
            PT_CHECK_MSG(nl == 4 && strcmp(l[2], l[3]) == 0, "greedy ids differ: '%s' vs '%s'",
                         l[2] ? l[2] : "", l[3] ? l[3] : "");
            pu_free(out);
        }
    }
    pu_model_destroy(f32);
    pu_pool_destroy(pool);
}
