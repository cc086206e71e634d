/*
 * test_tok_spm.c — SentencePiece tokenizer conformance (suite tok_spm).
 *
 * References: the shared InternLM2 vectors (sentencepiece 0.1.97 ids), our
 * own golden recipes (tools/gen_tok_golden.py: ~1.6 MB of mixed text rebuilt
 * from ../shared/data slices + literal inserts, ids as count + FNV-1a-64),
 * small-model vectors for tok512 / Llama-2 / InternLM v1 models, llama.cpp's
 * llama-spm .inp/.out pairs (GGUF vocab, the Llama-2 .model and the llama2.c
 * tokenizer.bin share that vocabulary), plus special tokens, streaming
 * decode, corrupt inputs and the `puyu tokenizer` CLI.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "puyu/pu_tok.h"

/* ---------------------------------------------------------------- helpers */

typedef struct {
    char name[160];
    char *data;
    size_t len;
} shared_file;

static shared_file g_files[16];
static int g_nfiles;

/* contents of a file under shared/data (cached); NULL if unreadable */
static const char *shared_bytes(const char *rel, size_t *len) {
    for (int i = 0; i < g_nfiles; i++)
        if (strcmp(g_files[i].name, rel) == 0) {
            *len = g_files[i].len;
            return g_files[i].data;
        }
    if (g_nfiles == (int)(sizeof(g_files) / sizeof(g_files[0])) || !pt_shared())
        return NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", pt_shared(), rel);
    shared_file *f = &g_files[g_nfiles];
    if (pu_file_read_all(path, &f->data, &f->len) != PU_OK)
        return NULL;
    snprintf(f->name, sizeof f->name, "%s", rel);
    g_nfiles++;
    *len = f->len;
    return f->data;
}

static void shared_files_free(void) {
    for (int i = 0; i < g_nfiles; i++)
        pu_free(g_files[i].data);
    g_nfiles = 0;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Build a record's text from its "parts" recipe; false if a part is bad. */
static bool build_text(json_t *parts, pu_str *out) {
    size_t i;
    json_t *p;
    pu_str_clear(out);
    json_array_foreach(parts, i, p) {
        const char *x = json_string_value(json_object_get(p, "x"));
        if (x) {
            size_t n = strlen(x);
            for (size_t k = 0; k + 1 < n; k += 2) {
                char b = (char)(hexval(x[k]) * 16 + hexval(x[k + 1]));
                pu_str_append(out, &b, 1);
            }
            continue;
        }
        const char *f = json_string_value(json_object_get(p, "f"));
        json_int_t off = json_integer_value(json_object_get(p, "o"));
        json_int_t n = json_integer_value(json_object_get(p, "n"));
        size_t len;
        const char *d = f ? shared_bytes(f, &len) : NULL;
        if (!d || off < 0 || n < 0 || (size_t)(off + n) > len)
            return false;
        pu_str_append(out, d + off, (size_t)n);
    }
    if (!out->p)
        pu_str_append(out, "", 0);
    return true;
}

static uint64_t ids_fnv(const int32_t *ids, int64_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xff;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

static bool ids_eq_json(const int32_t *ids, int64_t n, json_t *arr) {
    if (!json_is_array(arr) || (int64_t)json_array_size(arr) != n)
        return false;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] != json_integer_value(json_array_get(arr, (size_t)i)))
            return false;
    return true;
}

static void print_ids(const char *label, const int32_t *ids, int64_t n) {
    fprintf(stderr, "    %s (%lld):", label, (long long)n);
    for (int64_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

static pu_tok *load_shared_tok(const char *rel) {
    char path[512];
    if (!pt_shared_path(rel, path, sizeof path))
        return NULL;
    pu_tok *t = NULL;
    pu_status st = pu_tok_load(path, &t);
    PT_CHECK_MSG(st == PU_OK, "load %s: %s", rel, pu_err_msg());
    return st == PU_OK ? t : NULL;
}

static int64_t encode(const pu_tok *t, const char *s, size_t n, bool bos, bool special,
                      int32_t **ids) {
    pu_tok_encode_opts o = {.add_bos = bos, .parse_special = special};
    int64_t cnt = 0;
    *ids = NULL;
    pu_status st = pu_tok_encode(t, s, n, &o, ids, &cnt);
    PT_CHECK_MSG(st == PU_OK, "encode: %s", pu_err_msg());
    return cnt;
}

/* stream-decode ids one at a time, must equal pu_tok_decode */
static bool stream_matches(const pu_tok *t, const int32_t *ids, int64_t n, const pu_str *full) {
    pu_tok_stream s;
    pu_tok_stream_init(&s, t);
    pu_str out = {0};
    for (int64_t i = 0; i < n; i++)
        if (pu_tok_stream_feed(&s, ids[i], &out) != PU_OK) {
            pu_str_free(&out);
            return false;
        }
    pu_tok_stream_flush(&s, &out);
    bool ok = out.len == full->len && (out.len == 0 || memcmp(out.p, full->p, out.len) == 0);
    pu_str_free(&out);
    return ok;
}

/* ------------------------------------------------------------- vectors */

static void check_jsonl_vectors(const pu_tok *t, const char *path, const char *idkey, bool bos,
                                bool special, bool roundtrip) {
    char *buf;
    size_t len;
    if (pu_file_read_all(path, &buf, &len) != PU_OK) {
        PT_CHECK_MSG(0, "read %s: %s", path, pu_err_msg());
        return;
    }
    int line = 0, checked = 0, bad = 0;
    for (char *p = buf, *nl; p < buf + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(buf + len - p));
        if (!nl)
            nl = buf + len;
        line++;
        json_error_t e;
        json_t *j = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, &e);
        if (!j && nl > p) {
            PT_CHECK_MSG(0, "%s line %d: not JSON: %s", path, line, e.text);
            continue;
        }
        json_t *want = j ? json_object_get(j, idkey) : NULL;
        json_t *jt = j ? json_object_get(j, "text") : NULL;
        if (!want || !jt) {
            json_decref(j);
            continue;
        }
        const char *text = json_string_value(jt);
        size_t tl = json_string_length(jt);
        int32_t *ids;
        int64_t n = encode(t, text, tl, bos, special, &ids);
        checked++;
        if (!ids_eq_json(ids, n, want)) {
            if (++bad <= 3) {
                PT_CHECK_MSG(0, "%s line %d: ids differ for text \"%.60s\"", path, line, text);
                print_ids("got", ids, n);
            }
        } else if (roundtrip) {
            pu_str s = {0};
            PT_OK(pu_tok_decode(t, ids, n, &s));
            PT_CHECK_MSG(s.len == tl && memcmp(s.p, text, tl) == 0,
                         "%s line %d: decode(encode(x)) != x: \"%s\"", path, line, s.p);
            PT_CHECK_MSG(stream_matches(t, ids, n, &s), "%s line %d: stream decode differs", path,
                         line);
            pu_str_free(&s);
        }
        pu_free(ids);
        json_decref(j);
    }
    PT_CHECK_MSG(bad == 0, "%s: %d of %d vectors differ", path, bad, checked);
    PT_CHECK_MSG(checked > 0, "%s: no vectors found", path);
    if (strcmp(idkey, "ids") == 0)
        pu_log_info("%s: %d vectors checked", path, checked);
    if (strstr(path, "tokenizer_vectors.jsonl"))
        PT_EQ_I64(checked, 237);
    pu_free(buf);
}

/* llama.cpp test-tokenizer-0 pairs: inputs separated by
 * "\n__ggml_vocab_test__\n", one line of ids per input (no BOS). */
static void check_llamacpp_vectors(const pu_tok *t, const char *label) {
    char inp[512], outp[512];
    if (!pt_shared_path("tokenizer-vectors/ggml-vocab-llama-spm.gguf.inp", inp, sizeof inp) ||
        !pt_shared_path("tokenizer-vectors/ggml-vocab-llama-spm.gguf.out", outp, sizeof outp))
        return;
    char *in, *out;
    size_t il, ol;
    PT_OK(pu_file_read_all(inp, &in, &il));
    PT_OK(pu_file_read_all(outp, &out, &ol));
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep);
    char *ip = in, *op = out;
    int k = 0, bad = 0;
    while (ip < in + il) {
        char *e = strstr(ip, sep);
        if (!e)
            break;
        char *ol_end = strchr(op, '\n');
        if (!ol_end)
            ol_end = out + ol;
        *ol_end = 0;
        int32_t *want = NULL;
        int64_t nw = 0;
        PT_OK(pu_parse_ids(op, &want, &nw));
        int32_t *ids;
        int64_t n = encode(t, ip, (size_t)(e - ip), false, false, &ids);
        bool same = n == nw && (n == 0 || memcmp(ids, want, (size_t)n * 4) == 0);
        if (!same && ++bad <= 3) {
            PT_CHECK_MSG(0, "%s: llama-spm vector %d (\"%.*s\") differs", label, k,
                         (int)(e - ip > 60 ? 60 : e - ip), ip);
            print_ids("got", ids, n);
            print_ids("want", want, nw);
        }
        pu_free(ids);
        pu_free(want);
        k++;
        ip = e + seplen;
        op = ol_end + 1;
    }
    PT_CHECK_MSG(k == 46, "%s: expected 46 llama-spm vectors, read %d", label, k);
    PT_CHECK_MSG(bad == 0, "%s: %d of %d llama-spm vectors differ", label, bad, k);
    pu_free(in);
    pu_free(out);
}

static void check_golden(const pu_tok *t) {
    const char *path = "tests/golden/tok/internlm2_golden.jsonl";
    char *buf;
    size_t len;
    if (pu_file_read_all(path, &buf, &len) != PU_OK) {
        PT_CHECK_MSG(0, "read %s: %s", path, pu_err_msg());
        return;
    }
    int line = 0, bad = 0, rt = 0, nrec = 0;
    size_t total = 0;
    pu_str text = {0};
    double t0 = pu_time_now();
    for (char *p = buf, *nl; p < buf + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(buf + len - p));
        if (!nl)
            nl = buf + len;
        line++;
        json_error_t e;
        json_t *j = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, &e);
        if (!j)
            continue;
        if (!build_text(json_object_get(j, "parts"), &text)) {
            PT_CHECK_MSG(0, "%s line %d: cannot rebuild text from ../shared", path, line);
            json_decref(j);
            break;
        }
        nrec++;
        total += text.len;
        bool bos = json_is_true(json_object_get(j, "bos"));
        int32_t *ids;
        int64_t n = encode(t, text.p, text.len, bos, true, &ids);
        char fnv[32];
        snprintf(fnv, sizeof fnv, "%016llx", (unsigned long long)ids_fnv(ids, n));
        const char *want_fnv = json_string_value(json_object_get(j, "fnv"));
        json_int_t want_n = json_integer_value(json_object_get(j, "n"));
        if (n != want_n || !want_fnv || strcmp(fnv, want_fnv) != 0) {
            if (++bad <= 3) {
                PT_CHECK_MSG(0, "%s line %d: %lld ids (fnv %s), expected %lld (fnv %s)", path, line,
                             (long long)n, fnv, (long long)want_n, want_fnv ? want_fnv : "?");
                print_ids("got", ids, n);
                json_t *head = json_object_get(j, "head");
                fprintf(stderr, "    want head:");
                for (size_t q = 0; q < json_array_size(head); q++)
                    fprintf(stderr, " %lld",
                            (long long)json_integer_value(json_array_get(head, q)));
                fprintf(stderr, "\n");
            }
        } else if (json_is_true(json_object_get(j, "roundtrip"))) {
            pu_str s = {0};
            PT_OK(pu_tok_decode(t, bos ? ids + 1 : ids, bos ? n - 1 : n, &s));
            PT_CHECK_MSG(s.len == text.len && memcmp(s.p, text.p, s.len) == 0,
                         "%s line %d: decode(encode(x)) != x", path, line);
            if (rt % 7 == 0)
                PT_CHECK_MSG(stream_matches(t, bos ? ids + 1 : ids, bos ? n - 1 : n, &s),
                             "%s line %d: stream decode differs", path, line);
            rt++;
            pu_str_free(&s);
        }
        pu_free(ids);
        json_decref(j);
    }
    double dt = pu_time_now() - t0;
    pu_log_info("tok_spm golden: %d records, %zu bytes, %d round trips, %.2f s", nrec, total, rt,
                dt);
    PT_CHECK_MSG(bad == 0, "%s: %d of %d records differ", path, bad, nrec);
    PT_CHECK_MSG(nrec > 1000 && total >= 1000000, "%s: only %d records / %zu bytes", path, nrec,
                 total);
    PT_CHECK_MSG(rt > 100, "%s: only %d round trips", path, rt);
    pu_str_free(&text);
    pu_free(buf);
}

static void check_small_models(void) {
    const char *path = "tests/golden/tok/spm_small_models.jsonl";
    char *buf;
    size_t len;
    PT_OK(pu_file_read_all(path, &buf, &len));
    pu_tok *t = NULL;
    char cur[256] = "";
    int line = 0, bad = 0, checked = 0;
    pu_str text = {0};
    for (char *p = buf, *nl; p < buf + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(buf + len - p));
        if (!nl)
            nl = buf + len;
        line++;
        json_error_t e;
        json_t *j = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, &e);
        if (!j)
            continue;
        const char *model = json_string_value(json_object_get(j, "model"));
        if (!model || !build_text(json_object_get(j, "parts"), &text)) {
            json_decref(j);
            continue;
        }
        if (strcmp(model, cur) != 0) {
            pu_tok_destroy(t);
            t = load_shared_tok(model);
            snprintf(cur, sizeof cur, "%s", model);
        }
        if (!t) {
            json_decref(j);
            continue;
        }
        int32_t *ids;
        int64_t n = encode(t, text.p, text.len, false, false, &ids);
        checked++;
        if (!ids_eq_json(ids, n, json_object_get(j, "ids"))) {
            if (++bad <= 5) {
                PT_CHECK_MSG(0, "%s line %d (%s): ids differ", path, line, model);
                print_ids("got", ids, n);
            }
        } else {
            pu_str s = {0};
            PT_OK(pu_tok_decode(t, ids, n, &s));
            /* SP decodes control pieces to nothing; none occur without specials */
            uint64_t h = pu_hash64(s.p, s.len);
            char fnv[32];
            snprintf(fnv, sizeof fnv, "%016llx", (unsigned long long)h);
            const char *want = json_string_value(json_object_get(j, "decoded_fnv"));
            PT_CHECK_MSG(want && strcmp(want, fnv) == 0 &&
                             (json_int_t)s.len ==
                                 json_integer_value(json_object_get(j, "decoded_len")),
                         "%s line %d (%s): decode differs from sentencepiece: \"%s\"", path, line,
                         model, s.p);
            PT_CHECK_MSG(stream_matches(t, ids, n, &s), "%s line %d: stream decode differs", path,
                         line);
            pu_str_free(&s);
        }
        pu_free(ids);
        json_decref(j);
    }
    pu_tok_destroy(t);
    PT_CHECK_MSG(bad == 0, "%s: %d of %d records differ", path, bad, checked);
    pu_str_free(&text);
    pu_free(buf);
}

static size_t unhex(const char *x, char *out) {
    size_t n = strlen(x) / 2;
    for (size_t k = 0; k < n; k++)
        out[k] = (char)(hexval(x[2 * k]) * 16 + hexval(x[2 * k + 1]));
    return n;
}

/* committed tiny model (no ../shared needed): add_dummy_prefix,
 * remove_extra_whitespaces, user-defined and control symbols */
static void check_tiny(void) {
    pu_tok *t = NULL;
    PT_OK(pu_tok_load("tests/golden/tok/tiny_bpe.model", &t));
    if (!t)
        return;
    char *buf;
    size_t len;
    PT_OK(pu_file_read_all("tests/golden/tok/tiny_bpe.jsonl", &buf, &len));
    int line = 0, bad = 0;
    char *text = pu_malloc(len + 1), *dec = pu_malloc(len + 1);
    for (char *p = buf, *nl; p < buf + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(buf + len - p));
        if (!nl)
            nl = buf + len;
        line++;
        json_error_t e;
        json_t *j = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, &e);
        if (!j)
            continue;
        size_t tl = unhex(json_string_value(json_object_get(j, "hex")), text);
        size_t dl = unhex(json_string_value(json_object_get(j, "decoded_hex")), dec);
        int32_t *ids;
        int64_t n = encode(t, text, tl, false, false, &ids);
        if (!ids_eq_json(ids, n, json_object_get(j, "ids"))) {
            if (++bad <= 3) {
                PT_CHECK_MSG(0, "tiny_bpe.jsonl line %d: ids differ (\"%.*s\")", line, (int)tl,
                             text);
                print_ids("got", ids, n);
            }
        } else {
            pu_str s = {0};
            PT_OK(pu_tok_decode(t, ids, n, &s));
            PT_CHECK_MSG(s.len == dl && memcmp(s.p, dec, dl) == 0,
                         "tiny_bpe.jsonl line %d: decode differs: \"%s\"", line, s.p);
            PT_CHECK_MSG(stream_matches(t, ids, n, &s), "tiny_bpe.jsonl line %d: stream", line);
            pu_str_free(&s);
        }
        pu_free(ids);
        json_decref(j);
    }
    PT_CHECK_MSG(bad == 0, "tiny_bpe.jsonl: %d of %d vectors differ", bad, line);
    PT_CHECK(line > 150);
    pu_free(text);
    pu_free(dec);
    pu_free(buf);
    pu_tok_destroy(t);
}

static void write_file(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(d, 1, n, f);
        fclose(f);
    }
}

void pt_suite_tok_spm(void); /* prototype for -Wmissing-prototypes */
PT_SUITE(tok_spm) {
    if (PT_TEST("tiny committed model vs sentencepiece")) {
        check_tiny();
    }
    if (PT_TEST("continuation stream keeps the leading space: prompt text + completion text")) {
        /* a completion's text continues its prompt's: decode(prompt ids) +
         * the continuation stream of the rest = decode(all ids), at every
         * split (the plain stream drops the first piece's dummy-prefix space) */
        pu_tok *t = NULL;
        PT_OK(pu_tok_load("tests/golden/tok/tiny_bpe.model", &t));
        static const char text[] = "the little girl played the day. 123 little girl";
        int32_t *ids = NULL;
        int64_t n = t ? encode(t, text, sizeof text - 1, false, false, &ids) : 0;
        PT_CHECK(n > 4);
        pu_str all = {0};
        if (t)
            PT_OK(pu_tok_decode(t, ids, n, &all));
        int bad = 0, spaced = 0;
        for (int64_t k = 1; t && k < n; k++) {
            pu_str a = {0}, c = {0};
            PT_OK(pu_tok_decode(t, ids, k, &a));
            pu_tok_stream st;
            pu_tok_stream_init_cont(&st, t);
            for (int64_t i = k; i < n; i++)
                PT_OK(pu_tok_stream_feed(&st, ids[i], &c));
            pu_tok_stream_flush(&st, &c);
            spaced += c.len > 0 && c.p[0] == ' ';
            pu_str_append(&a, c.p ? c.p : "", c.len);
            bad += a.len != all.len || memcmp(a.p, all.p, all.len) != 0;
            pu_str_free(&a);
            pu_str_free(&c);
        }
        PT_CHECK_MSG(bad == 0, "%d of %lld splits differ", bad, (long long)n - 1);
        PT_CHECK_MSG(spaced > 0, "no split starts with a spaced piece");
        pu_str_free(&all);
        pu_free(ids);
        pu_tok_destroy(t);
    }
    if (PT_TEST("batch encode on 2 threads == sequential (lazy tables race)")) {
        pu_tok *a = NULL, *b = NULL;
        PT_OK(pu_tok_load("tests/golden/tok/tiny_bpe.model", &a));
        PT_OK(pu_tok_load("tests/golden/tok/tiny_bpe.model", &b));
        enum { N = 300 };
        char **texts = pu_calloc(N, sizeof(char *));
        size_t *lens = pu_calloc(N, sizeof(size_t));
        pu_rng r;
        pu_rng_seed(&r, 11);
        static const char *const words[] = {"the ", "little ",    "girl ", "你好",    "  ",  "\n",
                                            "123",  "<|im_end|>", "\xff",  "played ", "day."};
        for (int i = 0; i < N; i++) {
            pu_str s = {0};
            int nw = 1 + (int)(pu_rng_u64(&r) % 40);
            for (int k = 0; k < nw; k++)
                pu_str_puts(&s, words[pu_rng_u64(&r) % (sizeof words / sizeof words[0])]);
            lens[i] = s.len;
            texts[i] = pu_str_steal(&s);
        }
        int32_t **ids = pu_calloc(N, sizeof(int32_t *));
        int64_t *counts = pu_calloc(N, sizeof(int64_t));
        pu_pool *pool = pu_pool_create(2);
        pu_tok_encode_opts o = pu_tok_encode_default_opts();
        if (a && b) {
            PT_OK(
                pu_tok_encode_batch(a, (const char *const *)texts, lens, N, &o, pool, ids, counts));
            int bad = 0;
            for (int i = 0; i < N; i++) {
                int32_t *w;
                int64_t n = encode(b, texts[i], lens[i], false, true, &w);
                bad += n != counts[i] || (n && memcmp(w, ids[i], (size_t)n * 4) != 0);
                pu_free(w);
            }
            PT_EQ_I64(bad, 0);
        }
        for (int i = 0; i < N; i++) {
            pu_free(ids[i]);
            pu_free(texts[i]);
        }
        pu_pool_destroy(pool);
        pu_free(ids);
        pu_free(counts);
        pu_free(texts);
        pu_free(lens);
        pu_tok_destroy(a);
        pu_tok_destroy(b);
    }
    pu_tok *il = NULL; /* InternLM2 */
    if (PT_TEST("internlm2 load")) {
        il = load_shared_tok("internlm2/tokenizer.model");
        if (il) {
            PT_EQ_I64(pu_tok_n_vocab(il), 92544);
            PT_EQ_I64(pu_tok_get_type(il), PU_TOK_SPM);
            PT_EQ_I64(pu_tok_bos(il), 1);
            PT_EQ_I64(pu_tok_eos(il), 2);
            PT_EQ_I64(pu_tok_unk(il), 0);
            PT_EQ_I64(pu_tok_special_id(il, "<|plugin|>"), 92538);
            PT_EQ_I64(pu_tok_special_id(il, "<|interpreter|>"), 92539);
            PT_EQ_I64(pu_tok_special_id(il, "<|action_end|>"), 92540);
            PT_EQ_I64(pu_tok_special_id(il, "<|action_start|>"), 92541);
            PT_EQ_I64(pu_tok_special_id(il, "<|im_end|>"), 92542);
            PT_EQ_I64(pu_tok_special_id(il, "<|im_start|>"), 92543);
            PT_EQ_I64(pu_tok_special_id(il, "<|nope|>"), -1);
            PT_EQ_I64(pu_tok_get_attr(il, 1), PU_TOK_ATTR_CONTROL);
            PT_EQ_I64(pu_tok_get_attr(il, 3), PU_TOK_ATTR_BYTE);
            PT_EQ_I64(pu_tok_get_attr(il, 92542), PU_TOK_ATTR_USER_DEFINED);
            /* the piece that is a single NUL byte survives with its length */
            bool nul = false;
            for (int32_t id = 0; id < 92544 && !nul; id++) {
                size_t l;
                const char *p = pu_tok_piece(il, id, &l);
                nul = p && l == 1 && p[0] == 0 && pu_tok_get_attr(il, id) == PU_TOK_ATTR_NORMAL;
            }
            PT_CHECK_MSG(nul, "no NORMAL piece consisting of one NUL byte");
        }
    }
    if (il && PT_TEST("internlm2 sentencepiece vectors")) {
        char p[512];
        if (pt_shared_path("internlm2/tokenizer_vectors.jsonl", p, sizeof p))
            check_jsonl_vectors(il, p, "ids", false, false, true);
    }
    if (il && PT_TEST("internlm2 chat vectors (HF style + legacy pieces)")) {
        char p[512];
        if (pt_shared_path("internlm2/chat_template_vectors.jsonl", p, sizeof p)) {
            check_jsonl_vectors(il, p, "ids_hf_style", true, true, false);
            check_jsonl_vectors(il, p, "ids_raw_spm", false, false, false);
        }
    }
    if (il && PT_TEST("internlm2 special tokens")) {
        const char *s = "<|im_start|>user\nhi<|im_end|>\n";
        int32_t *ids;
        int64_t n = encode(il, s, strlen(s), true, true, &ids);
        int32_t want[] = {1, 92543, 1008, 364, 6176, 92542, 364};
        PT_CHECK_MSG(n == 7 && memcmp(ids, want, sizeof want) == 0, "chat turn ids");
        pu_str out = {0};
        PT_OK(pu_tok_decode(il, ids, n, &out));
        PT_EQ_STR(out.p, "<s><|im_start|>user\nhi<|im_end|>\n");
        pu_str_free(&out);
        pu_free(ids);
        /* --no-special: the text is segmented like any other text */
        n = encode(il, s, strlen(s), false, false, &ids);
        bool any = false;
        for (int64_t i = 0; i < n; i++)
            any |= ids[i] >= 92538;
        PT_CHECK_MSG(!any && n > 7, "no-special must not produce special ids");
        PT_OK(pu_tok_decode(il, ids, n, &out));
        PT_EQ_STR(out.p, s);
        pu_str_free(&out);
        pu_free(ids);
        /* adjacent and partial specials */
        const char *s2 = "<|im_end|><|im_end|><|im_end|<|action_start|><|plugin|>";
        n = encode(il, s2, strlen(s2), false, true, &ids);
        PT_CHECK(n >= 5 && ids[0] == 92542 && ids[1] == 92542 && ids[n - 2] == 92541 &&
                 ids[n - 1] == 92538);
        PT_OK(pu_tok_decode(il, ids, n, &out));
        PT_EQ_STR(out.p, s2);
        pu_str_free(&out);
        pu_free(ids);
        /* append to an existing array */
        int32_t *acc = NULL;
        int64_t na = 0;
        pu_tok_encode_opts o = pu_tok_encode_default_opts();
        PT_OK(pu_tok_encode(il, "Hello", 5, &o, &acc, &na));
        PT_OK(pu_tok_encode(il, " world", 6, &o, &acc, &na));
        PT_CHECK(na == 2 && acc[0] == 9843 && acc[1] == 2028);
        pu_free(acc);
    }
    if (il && PT_TEST("internlm2 golden (1.6 MB mixed text, sentencepiece ids)")) {
        if (pt_shared())
            check_golden(il);
        else
            pt_skip("../shared/data absent (the golden texts are rebuilt from it)");
    }
    if (il && PT_TEST("byte fallback, invalid UTF-8 and streaming")) {
        /* every byte value alone and in pairs: valid ids, decode never fails */
        for (int b = 0; b < 256; b++) {
            char s[3] = {(char)b, (char)(255 - b), 'x'};
            int32_t *ids;
            int64_t n = encode(il, s, 3, false, true, &ids);
            PT_CHECK(n >= 1);
            for (int64_t i = 0; i < n; i++)
                PT_CHECK(ids[i] >= 0 && ids[i] < 92544);
            pu_str out = {0};
            PT_OK(pu_tok_decode(il, ids, n, &out));
            PT_CHECK(stream_matches(il, ids, n, &out));
            pu_str_free(&out);
            pu_free(ids);
        }
        /* a 4-byte emoji via byte pieces, fed one by one: nothing until complete */
        int32_t e[4] = {3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80};
        pu_tok_stream st;
        pu_tok_stream_init(&st, il);
        pu_str out = {0};
        for (int i = 0; i < 3; i++) {
            PT_OK(pu_tok_stream_feed(&st, e[i], &out));
            PT_EQ_I64(out.len, 0);
        }
        PT_OK(pu_tok_stream_feed(&st, e[3], &out));
        PT_EQ_STR(out.p, "\xF0\x9F\x98\x80");
        /* a dangling lead byte becomes U+FFFD at flush */
        PT_OK(pu_tok_stream_feed(&st, 3 + 0xE4, &out));
        pu_tok_stream_flush(&st, &out);
        PT_EQ_STR(out.p, "\xF0\x9F\x98\x80\xEF\xBF\xBD");
        pu_str_free(&out);
        int32_t bad = 92544;
        PT_CHECK(pu_tok_decode(il, &bad, 1, &out) != PU_OK);
        pu_str_free(&out);
    }
    pu_tok_destroy(il);

    if (PT_TEST("small models (tok512, Llama-2, InternLM v1) vs sentencepiece")) {
        if (pt_shared())
            check_small_models();
        else
            pt_skip("../shared/data absent");
    }
    if (PT_TEST("llama.cpp llama-spm vectors: gguf, .model, tokenizer.bin")) {
        static const char *const models[] = {"tokenizer-vectors/ggml-vocab-llama-spm.gguf",
                                             "models/llama2c-tokenizers/llama2_tokenizer.model",
                                             "models/llama2c-tokenizers/tokenizer.bin",
                                             "models/gguf/llama-2-tiny-random.gguf"};
        for (size_t k = 0; k < sizeof(models) / sizeof(models[0]); k++) {
            pu_tok *t = load_shared_tok(models[k]);
            if (!t)
                break;
            PT_EQ_I64(pu_tok_n_vocab(t), 32000);
            check_llamacpp_vectors(t, models[k]);
            pu_tok_destroy(t);
        }
    }
    if (PT_TEST("model directory with tokenizer_config.json")) {
        char p[512];
        if (pt_shared_path("internlm2/tokenizer.model", p, sizeof p)) {
            char dir[512], f[600], abs_model[1024];
            pt_tmp_path("il2dir", dir, sizeof dir);
            PT_OK(pu_mkdir_p(dir));
            snprintf(f, sizeof f, "%s/tokenizer.model", dir);
            PT_CHECK(realpath(p, abs_model) != NULL);
            PT_CHECK(symlink(abs_model, f) == 0);
            snprintf(f, sizeof f, "%s/tokenizer_config.json", dir);
            const char *cfg = "{\"added_tokens_decoder\": {\"92527\": {\"content\": "
                              "\"<|reward|>\", \"special\": true}, \"92542\": {\"content\": "
                              "\"<|im_end|>\"}}}";
            write_file(f, cfg, strlen(cfg));
            pu_tok *t = NULL;
            PT_OK(pu_tok_load(dir, &t));
            if (t) {
                PT_EQ_I64(pu_tok_special_id(t, "<|reward|>"), 92527);
                PT_EQ_I64(pu_tok_special_id(t, "<|im_end|>"), 92542);
                int32_t *ids;
                int64_t n = encode(t, "a<|reward|>", 11, false, true, &ids);
                PT_CHECK(n == 2 && ids[1] == 92527);
                pu_free(ids);
                pu_tok_destroy(t);
            }
            write_file(f, "{\"added_tokens_decoder\": {\"x\": 1}}", 34);
            PT_CHECK(pu_tok_load(dir, &t) != PU_OK && t == NULL);
            PT_CHECK_MSG(strstr(pu_err_msg(), "tokenizer_config.json"), "%s", pu_err_msg());
        }
    }
    if (PT_TEST("corrupt inputs give clear errors")) {
        char p[512];
        if (pt_shared_path("internlm2/tokenizer.model", p, sizeof p)) {
            char *d;
            size_t n;
            PT_OK(pu_file_read_all(p, &d, &n));
            char tmp[512];
            pt_tmp_path("trunc.model", tmp, sizeof tmp);
            size_t cuts[] = {1, 2, 7, 100, 1000, n / 2, n - 1};
            for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
                write_file(tmp, d, cuts[k]);
                pu_tok *t = NULL;
                pu_status st = pu_tok_load(tmp, &t);
                PT_CHECK_MSG(st != PU_OK && t == NULL, "truncated at %zu bytes loaded", cuts[k]);
                PT_CHECK_MSG(strstr(pu_err_msg(), "trunc.model") != NULL,
                             "error names the file: %s", pu_err_msg());
            }
            pu_free(d);
        }
        char tmp[512];
        pt_tmp_path("garbage.model", tmp, sizeof tmp);
        pu_rng r;
        pu_rng_seed(&r, 7);
        for (int k = 0; k < 50; k++) {
            char g[300];
            size_t n = 1 + pu_rng_u64(&r) % sizeof g;
            for (size_t i = 0; i < n; i++)
                g[i] = (char)pu_rng_u64(&r);
            write_file(tmp, g, n);
            pu_tok *t = NULL;
            if (pu_tok_load(tmp, &t) == PU_OK)
                pu_tok_destroy(t);
        }
        pt_tmp_path("bad.gguf", tmp, sizeof tmp);
        write_file(tmp, "GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff\0\0\0\0", 24);
        pu_tok *t = NULL;
        PT_CHECK(pu_tok_load(tmp, &t) != PU_OK);
        PT_CHECK(pu_tok_load("/nonexistent/tok.model", &t) != PU_OK);
        pt_tmp_path("bad.bin", tmp, sizeof tmp);
        write_file(tmp, "\x10\0\0\0\0\0\0\0\x40\0\0\0", 12);
        PT_CHECK(pu_tok_load(tmp, &t) != PU_OK);
    }
    if (PT_TEST("cli: tokenizer encode / decode / info")) {
        char p[512];
        if (pt_shared_path("internlm2/tokenizer.model", p, sizeof p)) {
            char cmd[2048], tin[512];
            char *out = NULL;
            pt_tmp_path("in.txt", tin, sizeof tin);
            write_file(tin, "<|im_start|>user\nhi<|im_end|>\n", 30);
            snprintf(cmd, sizeof cmd, "%s tokenizer encode -t '%s' --bos < '%s'", pt_bin(), p, tin);
            PT_EQ_I64(pt_run(cmd, &out), 0);
            PT_EQ_STR(out, "1 92543 1008 364 6176 92542 364\n");
            pu_free(out);
            snprintf(
                cmd, sizeof cmd,
                "%s tokenizer encode -t '%s' --no-special < '%s' | %s tokenizer decode -t '%s'",
                pt_bin(), p, tin, pt_bin(), p);
            PT_EQ_I64(pt_run(cmd, &out), 0);
            PT_EQ_STR(out, "<|im_start|>user\nhi<|im_end|>\n");
            pu_free(out);
            write_file(tin, "{\"text\": \"Hello world\"}\n{\"text\": \"<|im_end|>\"}\n", 47);
            snprintf(cmd, sizeof cmd, "%s tokenizer encode -t '%s' --jsonl < '%s'", pt_bin(), p,
                     tin);
            PT_EQ_I64(pt_run(cmd, &out), 0);
            PT_EQ_STR(out, "[9843,2028]\n[92542]\n");
            pu_free(out);
            write_file(tin, "{\"text\": \"a\"}\nnot json\n", 24);
            snprintf(cmd, sizeof cmd, "%s tokenizer encode -t '%s' --jsonl < '%s' 2>&1", pt_bin(),
                     p, tin);
            PT_EQ_I64(pt_run(cmd, &out), 1);
            PT_CHECK_MSG(out && strstr(out, "line 2"), "error names line 2: %s", out ? out : "");
            pu_free(out);
            snprintf(cmd, sizeof cmd, "%s tokenizer info -t '%s'", pt_bin(), p);
            PT_EQ_I64(pt_run(cmd, &out), 0);
            PT_CHECK_MSG(out && strstr(out, "92544") && strstr(out, "<|im_end|>"), "info: %s",
                         out ? out : "");
            pu_free(out);
            snprintf(cmd, sizeof cmd, "echo '1 99999' | %s tokenizer decode -t '%s' 2>/dev/null",
                     pt_bin(), p);
            PT_EQ_I64(pt_run(cmd, &out), 1);
            pu_free(out);
        }
    }
    shared_files_free();
}
