/*
 * test_sft_data.c — SFT data layer (suite sft_data): records of every kind
 * rendered + tokenized id for id and label for label against the Python
 * reference (tools/gen_sft_data_ref.py: a SentencePiece BPE model trained by
 * python3-sentencepiece with the InternLM2 specials as user-defined
 * symbols, and the real InternLM2 tokenizer when ../shared has it), the
 * padded / packed batcher (positions, segments, shifted targets, no label
 * across samples), batch order with and without shuffle, truncation, and
 * every bad-record case (error names file:line and field; --skip-bad counts).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "puyu/pu_align.h"
#include "puyu/pu_sft.h"
#include "puyu/pu_train.h"

#define GOLD "tests/golden/sft/"

static const char *const k_vars[] = {"name=Puyu", "author=the puyu authors", NULL};

static pu_tok *tiny_tok(void) {
    pu_tok *t = NULL;
    PT_OK(pu_tok_load(GOLD "spm.model", &t));
    return t;
}

static const char *write_tmp(const char *name, const char *text) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    pt_tmp_path(name, p, 512);
    PT_OK(pu_file_write_atomic(p, text, strlen(text)));
    return p;
}

static bool same_ids(const int32_t *a, const json_t *want, int64_t n) {
    if ((int64_t)json_array_size(want) != n)
        return false;
    for (int64_t i = 0; i < n; i++)
        if (a[i] != (int32_t)json_integer_value(json_array_get(want, (size_t)i)))
            return false;
    return true;
}

static json_t **load_expected(const char *path, int *n) {
    *n = 0;
    FILE *f = fopen(path, "r");
    PT_CHECK_MSG(f != NULL, "%s missing", path);
    if (!f)
        return NULL;
    json_t **rows = NULL;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        PT_CHECK(j != NULL);
        if (!j)
            continue;
        rows = realloc(rows, (size_t)(*n + 1) * sizeof(json_t *));
        rows[(*n)++] = j;
    }
    free(line);
    fclose(f);
    return rows;
}

static void compare_rows(const pu_sft_tokens *s, const json_t *row, const char *what) {
    const char *src = json_string_value(json_object_get(row, "src"));
    json_t *ids = json_object_get(row, "ids"), *labels = json_object_get(row, "labels");
    PT_CHECK_MSG(same_ids(s->ids, ids, s->n), "%s %s: ids differ (%lld vs %zu tokens)", what, src,
                 (long long)s->n, json_array_size(ids));
    PT_CHECK_MSG(same_ids(s->labels, labels, s->n), "%s %s: labels differ", what, src);
    if (!same_ids(s->ids, ids, s->n)) {
        for (int64_t i = 0; i < s->n && i < (int64_t)json_array_size(ids); i++)
            if (s->ids[i] != (int32_t)json_integer_value(json_array_get(ids, (size_t)i))) {
                fprintf(stderr, "  first difference at %lld: %d vs %lld\n", (long long)i, s->ids[i],
                        (long long)json_integer_value(json_array_get(ids, (size_t)i)));
                break;
            }
    }
}

static void check_golden(void) {
    pu_tok *t = tiny_tok();
    if (!t)
        return;
    const char *paths[2] = {GOLD "records.jsonl", GOLD "records_array.json"};
    pu_sft_load_opts o = {.vars = k_vars};
    pu_pool *pool = pu_pool_create(2);
    o.pool = pool;
    pu_sft_data *d = NULL;
    PT_OK(pu_sft_data_load(paths, 2, t, &o, &d));
    int n = 0;
    json_t **rows = load_expected(GOLD "expected.jsonl", &n);
    if (d) {
        PT_EQ_I64(pu_sft_data_n(d), n);
        PT_EQ_I64(pu_sft_data_n_skipped(d), 0);
        PT_EQ_I64(pu_sft_data_n_truncated(d), 0);
        for (int i = 0; i < n && i < pu_sft_data_n(d); i++)
            compare_rows(pu_sft_data_get(d, i), rows[i], "tiny spm");
    }
    for (int i = 0; i < n; i++)
        json_decref(rows[i]);
    free(rows);
    pu_sft_data_destroy(d);
    pu_pool_destroy(pool);
    pu_tok_destroy(t);
}

/* the first records of records.jsonl with the real InternLM2 tokenizer */
static void check_internlm2(void) {
    char tpath[512];
    if (!pt_shared_path("internlm2/tokenizer.model", tpath, sizeof tpath))
        return;
    pu_tok *t = NULL;
    PT_OK(pu_tok_load(tpath, &t));
    if (!t)
        return;
    PT_EQ_I64(pu_tok_special_id(t, "<|im_start|>"), 92543);
    int n = 0;
    json_t **rows = load_expected(GOLD "expected_internlm2.jsonl", &n);
    PT_CHECK(n >= 10);
    FILE *f = fopen(GOLD "records.jsonl", "r");
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; f && i < n && getline(&line, &cap, f) > 0; i++) {
        pu_sft_record r;
        PT_OK(pu_sft_record_parse(line, strlen(line), "records.jsonl", k_vars, &r));
        pu_sft_tokens s = {0};
        PT_OK(pu_sft_tokenize(t, &r, &s));
        compare_rows(&s, rows[i], "internlm2");
        pu_sft_tokens_free(&s);
        pu_sft_record_free(&r);
    }
    free(line);
    if (f)
        fclose(f);
    for (int i = 0; i < n; i++)
        json_decref(rows[i]);
    free(rows);
    pu_tok_destroy(t);
}

/* a record's turns are what pu_chat_render would print (same text) */
static void check_render_text(void) {
    pu_tok *t = tiny_tok();
    const char *rec =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi {{name}}\"}, {\"role\": "
        "\"assistant\", \"content\": \"ok\", \"tool_calls\": [{\"function\": {\"name\": \"f\", "
        "\"arguments\": {\"x\": 1.5, \"y\": \"中\"}}}]}, {\"role\": \"tool\", \"content\": "
        "\"r\"}], \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}";
    pu_sft_record r;
    PT_OK(pu_sft_record_parse(rec, strlen(rec), "x", k_vars, &r));
    PT_EQ_I64(r.msgs.n, 4);
    if (r.msgs.n == 4) {
        PT_EQ_STR(r.msgs.msgs[0].role, "system");
        PT_EQ_STR(r.msgs.msgs[0].name, "<|plugin|>");
        PT_EQ_STR(r.msgs.msgs[0].content, "[{\"name\": \"f\"}]");
        PT_EQ_STR(r.msgs.msgs[1].content, "hi Puyu");
        PT_EQ_STR(r.msgs.msgs[3].role, "environment");
        PT_EQ_STR(r.msgs.msgs[3].name, "<|plugin|>");
        PT_EQ_I64(r.loss[0] + 2 * r.loss[1] + 4 * r.loss[2] + 8 * r.loss[3], 4);
        pu_str s = {0};
        PT_OK(pu_chat_render(&r.msgs, NULL, &s));
        PT_EQ_STR(s.p, "<|im_start|>system name=<|plugin|>\n[{\"name\": \"f\"}]<|im_end|>\n"
                       "<|im_start|>user\nhi Puyu<|im_end|>\n"
                       "<|im_start|>assistant\nok<|action_start|><|plugin|>\n{\"name\": \"f\", "
                       "\"parameters\": {\"x\": 1.5, \"y\": \"中\"}}<|action_end|><|im_end|>\n"
                       "<|im_start|>environment name=<|plugin|>\nr<|im_end|>\n");
        pu_str_free(&s);
        /* tokens: BOS first, labels only on the assistant content + im_end */
        pu_sft_tokens tk = {0};
        PT_OK(pu_sft_tokenize(t, &r, &tk));
        PT_EQ_I64(tk.ids[0], pu_tok_bos(t));
        int32_t im_end = pu_sft_special_id(t, "<|im_end|>");
        PT_CHECK(im_end > 0);
        int64_t n_end_scored = 0, n_scored = 0;
        for (int64_t i = 0; i < tk.n; i++) {
            PT_CHECK(tk.labels[i] == PU_IGNORE_INDEX || tk.labels[i] == tk.ids[i]);
            n_scored += tk.labels[i] >= 0;
            n_end_scored += tk.labels[i] == im_end;
        }
        PT_EQ_I64(n_end_scored, 1);
        pu_str dec = {0};
        int32_t *sc = malloc((size_t)tk.n * sizeof(int32_t));
        int64_t k = 0;
        for (int64_t i = 0; i < tk.n; i++)
            if (tk.labels[i] >= 0)
                sc[k++] = tk.labels[i];
        PT_OK(pu_tok_decode(t, sc, k, &dec));
        PT_EQ_STR(dec.p, "ok<|action_start|><|plugin|>\n{\"name\": \"f\", \"parameters\": {\"x\": "
                         "1.5, \"y\": \"中\"}}<|action_end|><|im_end|>");
        free(sc);
        pu_str_free(&dec);
        pu_sft_tokens_free(&tk);
    }
    pu_sft_record_free(&r);
    pu_tok_destroy(t);
}

/* five records of distinct lengths */
static const char k_five[] =
    "{\"messages\": [{\"role\": \"user\", \"content\": \"one\"}, {\"role\": \"assistant\", "
    "\"content\": \"A\"}]}\n"
    "\n"
    "{\"instruction\": \"two two\", \"input\": \"\", \"output\": \"BB BB\"}\n"
    "{\"conversation\": [{\"input\": \"three three three\", \"output\": \"CCC CCC CCC\"}]}\n"
    "{\"conversations\": [{\"from\": \"human\", \"value\": \"four\"}, {\"from\": \"gpt\", "
    "\"value\": \"DDDD DDDD DDDD DDDD\"}]}\n"
    "{\"messages\": [{\"role\": \"user\", \"content\": \"five five five five five\"}, "
    "{\"role\": \"assistant\", \"content\": \"EEEEE\"}]}\n";

static pu_sft_data *load_text(pu_tok *t, const char *name, const char *text, int64_t seq,
                              bool skip) {
    const char *p = write_tmp(name, text);
    pu_sft_load_opts o = {.seq = seq, .skip_bad = skip, .vars = k_vars};
    pu_sft_data *d = NULL;
    PT_OK(pu_sft_data_load(&p, 1, t, &o, &d));
    return d;
}

/* which sample a batch row starts with (by comparing ids) */
static int64_t row_sample(const pu_sft_data *d, const int32_t *ids, int64_t T) {
    for (int64_t i = 0; i < pu_sft_data_n(d); i++) {
        const pu_sft_tokens *s = pu_sft_data_get(d, i);
        if (s->n <= T && memcmp(s->ids, ids, (size_t)s->n * sizeof(int32_t)) == 0)
            return i;
    }
    return -1;
}

static void check_batches(void) {
    pu_tok *t = tiny_tok();
    pu_sft_data *d = load_text(t, "five.jsonl", k_five, 0, false);
    if (!d)
        return;
    PT_EQ_I64(pu_sft_data_n(d), 5);
    int64_t seq = 256, B = 2;
    int32_t *ids = malloc((size_t)(B * seq) * 4), *tg = malloc((size_t)(B * seq) * 4);
    int32_t *pos = malloc((size_t)(B * seq) * 4), *seg = malloc((size_t)(B * seq) * 4);
    /* unpacked, no shuffle: batch k = samples 2k, 2k+1 mod 5 */
    pu_sft_batcher *b = NULL;
    PT_OK(pu_sft_batcher_create(d, seq, false, false, 1, &b));
    PT_EQ_I64(pu_sft_batcher_n_rows(b), 5);
    for (int64_t k = 0; k < 7; k++) {
        int64_t T = 0, nt = 0;
        pu_sft_batch(b, k, B, ids, tg, pos, seg, &T, &nt);
        int64_t want_T = 0, want_nt = 0;
        for (int64_t j = 0; j < B; j++) {
            int64_t want = (k * B + j) % 5;
            const pu_sft_tokens *s = pu_sft_data_get(d, want);
            want_T = s->n > want_T ? s->n : want_T;
            PT_EQ_I64(row_sample(d, ids + j * T, T), want);
            for (int64_t x = 0; x < T; x++) {
                int32_t w = x + 1 < s->n ? s->labels[x + 1] : PU_IGNORE_INDEX;
                PT_EQ_I64(tg[j * T + x], w);
                want_nt += w >= 0;
                PT_EQ_I64(pos[j * T + x], x < s->n ? x : 0);
                if (x >= s->n)
                    PT_EQ_I64(ids[j * T + x], 0);
            }
        }
        PT_EQ_I64(T, want_T);
        PT_EQ_I64(nt, want_nt);
    }
    pu_sft_batcher_destroy(b);

    /* packed rows: greedy in order, pos restarts, seg changes, no label leak */
    int64_t pseq = pu_sft_data_get(d, 0)->n + pu_sft_data_get(d, 1)->n + 1;
    PT_OK(pu_sft_batcher_create(d, pseq, true, false, 1, &b));
    int64_t n_rows = pu_sft_batcher_n_rows(b);
    PT_CHECK(n_rows < 5);
    int64_t next = 0, total_targets = 0, total_unpacked = 0;
    for (int64_t i = 0; i < 5; i++)
        for (int64_t x = 1; x < pu_sft_data_get(d, i)->n; x++)
            total_unpacked += pu_sft_data_get(d, i)->labels[x] >= 0;
    for (int64_t k = 0; k < n_rows; k++) {
        int64_t T = 0, nt = 0;
        pu_sft_batch(b, k, 1, ids, tg, pos, seg, &T, &nt);
        PT_CHECK(T <= pseq);
        total_targets += nt;
        int64_t o = 0, sidx = 0;
        while (o < T && next < 5) {
            const pu_sft_tokens *s = pu_sft_data_get(d, next);
            if (o + s->n > T)
                break;
            PT_CHECK(memcmp(ids + o, s->ids, (size_t)s->n * 4) == 0);
            for (int64_t x = 0; x < s->n; x++) {
                PT_EQ_I64(pos[o + x], x);
                PT_EQ_I64(seg[o + x], sidx);
                PT_EQ_I64(tg[o + x], x + 1 < s->n ? s->labels[x + 1] : PU_IGNORE_INDEX);
            }
            /* the last token of a sample never predicts the next sample's BOS */
            PT_EQ_I64(tg[o + s->n - 1], PU_IGNORE_INDEX);
            o += s->n;
            sidx++;
            next++;
        }
        for (; o < T; o++) {
            PT_EQ_I64(tg[o], PU_IGNORE_INDEX);
            PT_EQ_I64(seg[o], sidx);
        }
        PT_CHECK(sidx >= 1);
    }
    PT_EQ_I64(next, 5);
    PT_EQ_I64(total_targets, total_unpacked);
    /* two samples share the first row */
    {
        int64_t T = 0, nt = 0;
        pu_sft_batch(b, 0, 1, ids, tg, pos, seg, &T, &nt);
        int64_t n0 = pu_sft_data_get(d, 0)->n;
        PT_EQ_I64(T, n0 + pu_sft_data_get(d, 1)->n);
        PT_EQ_I64(pos[n0], 0);
        PT_EQ_I64(seg[n0], 1);
        PT_EQ_I64(ids[n0], pu_tok_bos(t));
    }
    pu_sft_batcher_destroy(b);
    free(ids);
    free(tg);
    free(pos);
    free(seg);
    pu_sft_data_destroy(d);
    pu_tok_destroy(t);
}

static void check_shuffle(void) {
    pu_tok *t = tiny_tok();
    pu_str text = {0};
    for (int i = 0; i < 23; i++)
        pu_str_appendf(&text,
                       "{\"messages\": [{\"role\": \"user\", \"content\": \"q%d\"}, {\"role\": "
                       "\"assistant\", \"content\": \"answer number %d\"}]}\n",
                       i, i * 7);
    pu_sft_data *d = load_text(t, "shuf.jsonl", text.p, 0, false);
    pu_str_free(&text);
    if (!d)
        return;
    int64_t n = pu_sft_data_n(d), B = 3, seq = 64;
    PT_EQ_I64(n, 23);
    pu_sft_batcher *a = NULL, *a2 = NULL, *c = NULL;
    PT_OK(pu_sft_batcher_create(d, seq, false, true, 7, &a));
    PT_OK(pu_sft_batcher_create(d, seq, false, true, 7, &a2));
    PT_OK(pu_sft_batcher_create(d, seq, false, true, 8, &c));
    int32_t *ids = malloc((size_t)(B * seq) * 4), *tg = malloc((size_t)(B * seq) * 4);
    int32_t *ids2 = malloc((size_t)(B * seq) * 4);
    /* order over 3 epochs (69 rows = 23 batches of 3) */
    int64_t order_a[69], order_c[69];
    for (int64_t k = 0; k < 23; k++) {
        int64_t T = 0, T2 = 0, nt;
        pu_sft_batch(a, k, B, ids, tg, NULL, NULL, &T, &nt);
        pu_sft_batch(a2, k, B, ids2, tg, NULL, NULL, &T2, &nt);
        PT_EQ_I64(T, T2);
        PT_CHECK(memcmp(ids, ids2, (size_t)(B * T) * 4) == 0);
        for (int64_t j = 0; j < B; j++)
            order_a[k * B + j] = row_sample(d, ids + j * T, T);
        pu_sft_batch(c, k, B, ids, tg, NULL, NULL, &T, &nt);
        for (int64_t j = 0; j < B; j++)
            order_c[k * B + j] = row_sample(d, ids + j * T, T);
    }
    /* each epoch is a permutation; epochs differ; seeds differ; not the identity */
    bool ident = true, same_seed = true, same_epoch = true;
    for (int e = 0; e < 3; e++) {
        int seen[23] = {0};
        for (int r = 0; r < 23; r++) {
            int64_t v = order_a[e * 23 + r];
            PT_CHECK(v >= 0 && v < 23);
            if (v >= 0 && v < 23)
                seen[v]++;
            ident &= v == r;
            same_seed &= v == order_c[e * 23 + r];
            if (e > 0)
                same_epoch &= v == order_a[r];
        }
        for (int r = 0; r < 23; r++)
            PT_EQ_I64(seen[r], 1);
    }
    PT_CHECK(!ident);
    PT_CHECK(!same_seed);
    PT_CHECK(!same_epoch);
    /* random access: batch 17 alone equals batch 17 in the sequence (resume) */
    {
        pu_sft_batcher *f = NULL;
        PT_OK(pu_sft_batcher_create(d, seq, false, true, 7, &f));
        int64_t T = 0, nt;
        pu_sft_batch(f, 17, B, ids, tg, NULL, NULL, &T, &nt);
        for (int64_t j = 0; j < B; j++)
            PT_EQ_I64(row_sample(d, ids + j * T, T), order_a[17 * B + j]);
        pu_sft_batcher_destroy(f);
    }
    pu_sft_batcher_destroy(a);
    pu_sft_batcher_destroy(a2);
    pu_sft_batcher_destroy(c);
    free(ids);
    free(ids2);
    free(tg);
    pu_sft_data_destroy(d);
    pu_tok_destroy(t);
}

static void check_truncation(void) {
    pu_tok *t = tiny_tok();
    pu_sft_data *full = load_text(t, "trunc0.jsonl", k_five, 0, false);
    if (!full)
        return;
    int64_t maxn = 0;
    for (int64_t i = 0; i < 5; i++)
        if (pu_sft_data_get(full, i)->n > maxn)
            maxn = pu_sft_data_get(full, i)->n;
    int64_t seq = maxn - 3; /* cuts the longest record(s), which keep answer tokens */
    pu_sft_data *d = load_text(t, "trunc1.jsonl", k_five, seq, false);
    if (d) {
        int64_t want = 0;
        for (int64_t i = 0; i < 5; i++)
            want += pu_sft_data_get(full, i)->n > seq;
        PT_EQ_I64(pu_sft_data_n_truncated(d), want);
        PT_CHECK(want >= 1);
        for (int64_t i = 0; i < pu_sft_data_n(d); i++) {
            const pu_sft_tokens *s = pu_sft_data_get(d, i), *f = pu_sft_data_get(full, i);
            PT_EQ_I64(s->n, f->n < seq ? f->n : seq);
            PT_CHECK(memcmp(s->ids, f->ids, (size_t)s->n * 4) == 0);
        }
        pu_sft_data_destroy(d);
    }
    /* a cut before any answer token: an error naming file:line, or skipped */
    pu_str rec = {0};
    pu_str_puts(&rec, "{\"messages\": [{\"role\": \"user\", \"content\": \"");
    for (int i = 0; i < 20; i++)
        pu_str_puts(&rec, "a long question with many words ");
    pu_str_puts(&rec, "\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}\n");
    pu_str two = {0};
    pu_str_puts(&two, k_five);
    pu_str_puts(&two, rec.p);
    pu_str_free(&rec);
    const char *p = write_tmp("cut.jsonl", two.p);
    pu_sft_load_opts o = {.seq = 8};
    pu_sft_data *dd = NULL;
    pu_status st = pu_sft_data_load(&p, 1, t, &o, &dd);
    PT_CHECK(st == PU_ERR_FORMAT);
    PT_CHECK_MSG(strstr(pu_err_msg(), "cut.jsonl:1:") && strstr(pu_err_msg(), "no scored token"),
                 "msg: %s", pu_err_msg());
    o.skip_bad = true;
    o.seq = pu_sft_data_get(full, 0)->n + 4;
    PT_OK(pu_sft_data_load(&p, 1, t, &o, &dd));
    if (dd) {
        /* samples cut without an answer left are skipped, not counted as cut */
        PT_EQ_I64(pu_sft_data_n(dd) + pu_sft_data_n_skipped(dd), 6);
        PT_CHECK(pu_sft_data_n_skipped(dd) >= 1);
        PT_CHECK(pu_sft_data_n(dd) >= 1);
        int64_t cut = 0;
        for (int64_t i = 0; i < pu_sft_data_n(dd); i++)
            cut += pu_sft_data_get(dd, i)->n == o.seq;
        PT_EQ_I64(pu_sft_data_n_truncated(dd), cut);
        pu_sft_data_destroy(dd);
    }
    pu_str_free(&two);
    pu_sft_data_destroy(full);
    pu_tok_destroy(t);
}

typedef struct bad_case {
    const char *rec;
    const char *want; /* substring of the message after "file:line: " */
} bad_case;

static void check_bad(void) {
    pu_tok *t = tiny_tok();
    static const bad_case cases[] = {
        {"{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}",
         "messages[0].role: unknown role \"bot\""},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", "
         "\"content\": \"\"}]}",
         "messages[1]: empty assistant content"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": 5}]}",
         "messages[0].content: expected a string or an array of parts"},
        {"{\"messages\": [{\"content\": \"x\"}]}", "messages[0].role: missing"},
        {"{\"messages\": [{\"role\": \"user\"}]}", "messages[0].content: missing"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\", \"loss\": 1}]}",
         "messages[0].loss: expected true or false"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"value\": "
         "\"x\"}]}]}",
         "messages[0].content[0].type: unsupported part type \"image\""},
        {"{\"messages\": [{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": "
         "[{\"function\": {\"arguments\": \"{}\"}}]}]}",
         "messages[0].tool_calls[0].function.name: expected a string"},
        {"{\"messages\": [{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": "
         "[{\"function\": {\"name\": \"f\", \"arguments\": \"[1]\"}}]}]}",
         "messages[0].tool_calls[0].function.arguments: expected a JSON object"},
        {"{\"messages\": []}", "messages: empty"},
        {"{\"conversations\": [{\"from\": \"bot\", \"value\": \"x\"}]}",
         "conversations[0].from: unknown role \"bot\""},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": [1]}]}",
         "conversations[0].value: expected a string"},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", "
         "\"value\": \"\"}]}",
         "conversations[1]: empty assistant content"},
        {"{\"conversations\": [{\"from\": \"function_call\", \"value\": \"not json\"}]}",
         "conversations[0].value: expected the JSON text"},
        {"{\"conversation\": [{\"input\": \"q\"}]}", "conversation[0].output: missing"},
        {"{\"conversation\": [{\"input\": \"q\", \"output\": \"\"}]}",
         "conversation[0].output: empty assistant content"},
        {"{\"instruction\": \"q\", \"input\": \"\", \"output\": \"\"}",
         "output: empty assistant content"},
        {"{\"instruction\": \"q\", \"input\": 3, \"output\": \"a\"}", "input: expected a string"},
        {"{\"instruction\": \"q\", \"input\": \"\"}", "output: missing"},
        {"{\"instruction\": \"q\", \"output\": [\"a\", \"b\"]}", "output: expected a string"},
        {"{\"instruction\": \"q\", \"output\": \"a\", \"history\": [[\"x\"]]}",
         "history[0]: expected [query, answer]"},
        {"{\"prompt\": \"q\"}", "record: expected \"messages\""},
        {"[1, 2]", "record: expected a JSON object"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": 7}",
         "tools: expected an array"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"only a question\"}]}",
         "no scored token"},
        {"{\"messages\": [{\"role\": \"user\", \"cont", "invalid JSON"},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < nc; i++) {
        /* the bad record on line 3 of a JSONL file, between good ones */
        pu_str text = {0};
        pu_str_puts(&text, "{\"instruction\": \"a\", \"output\": \"b\"}\n\n");
        pu_str_puts(&text, cases[i].rec);
        pu_str_puts(&text, "\n{\"instruction\": \"c\", \"output\": \"d\"}\n");
        const char *p = write_tmp("bad.jsonl", text.p);
        pu_sft_load_opts o = {0};
        pu_sft_data *d = NULL;
        pu_status st = pu_sft_data_load(&p, 1, t, &o, &d);
        PT_CHECK_MSG(st == PU_ERR_FORMAT, "case %d: status %s", i, pu_status_str(st));
        PT_CHECK_MSG(strstr(pu_err_msg(), "bad.jsonl:3: ") && strstr(pu_err_msg(), cases[i].want),
                     "case %d: message \"%s\" lacks \"bad.jsonl:3: ... %s\"", i, pu_err_msg(),
                     cases[i].want);
        pu_sft_data_destroy(d);
        o.skip_bad = true;
        d = NULL;
        PT_OK(pu_sft_data_load(&p, 1, t, &o, &d));
        if (d) {
            PT_EQ_I64(pu_sft_data_n(d), 2);
            PT_EQ_I64(pu_sft_data_n_skipped(d), 1);
        }
        pu_sft_data_destroy(d);
        pu_str_free(&text);
    }
    /* JSON-array files name the index */
    const char *p = write_tmp(
        "bad.json", "[{\"instruction\": \"a\", \"output\": \"b\"}, {\"messages\": [{\"role\": "
                    "\"robot\", \"content\": \"x\"}]}]");
    pu_sft_load_opts o = {0};
    pu_sft_data *d = NULL;
    PT_CHECK(pu_sft_data_load(&p, 1, t, &o, &d) == PU_ERR_FORMAT);
    PT_CHECK_MSG(strstr(pu_err_msg(), "bad.json:[1]: messages[0].role: unknown role"), "msg: %s",
                 pu_err_msg());
    /* missing file, only bad records, a tokenizer without chat specials */
    const char *missing = "tests/golden/sft/no-such-file.jsonl";
    PT_CHECK(pu_sft_data_load(&missing, 1, t, &o, &d) != PU_OK);
    const char *allbad = write_tmp("allbad.jsonl", "{\"prompt\": 1}\n");
    o.skip_bad = true;
    PT_CHECK(pu_sft_data_load(&allbad, 1, t, &o, &d) == PU_ERR_FORMAT);
    PT_CHECK_MSG(strstr(pu_err_msg(), "no usable records"), "msg: %s", pu_err_msg());
    pu_tok *plain = NULL;
    char p1[512];
    if (pt_shared_path("internlm2/tokenizer_internlm1.model", p1, sizeof p1)) {
        PT_OK(pu_tok_load(p1, &plain));
        PT_CHECK(plain && pu_sft_special_id(plain, "<|im_start|>") < 0);
    }
    if (plain && pu_sft_special_id(plain, "<|im_start|>") < 0) {
        const char *good = GOLD "records_array.json";
        PT_CHECK(pu_sft_data_load(&good, 1, plain, &o, &d) == PU_ERR_FORMAT);
        PT_CHECK_MSG(strstr(pu_err_msg(), "<|im_start|>"), "msg: %s", pu_err_msg());
    }
    pu_tok_destroy(plain);
    pu_tok_destroy(t);
}

/* vars: every {{key}} of a content, nothing else */
static void check_vars(void) {
    const char *rec = "{\"instruction\": \"{{name}}{{name}} {{nope}} {{ name }} {{{author}}}\", "
                      "\"output\": \"{{author}}\"}";
    pu_sft_record r;
    PT_OK(pu_sft_record_parse(rec, strlen(rec), "v", k_vars, &r));
    if (r.msgs.n == 2) {
        PT_EQ_STR(r.msgs.msgs[0].content, "PuyuPuyu {{nope}} {{ name }} {the puyu authors}");
        PT_EQ_STR(r.msgs.msgs[1].content, "the puyu authors");
    }
    pu_sft_record_free(&r);
    PT_OK(pu_sft_record_parse(rec, strlen(rec), "v", NULL, &r));
    if (r.msgs.n == 2)
        PT_EQ_STR(r.msgs.msgs[1].content, "{{author}}");
    pu_sft_record_free(&r);
}

/* every record of ../shared/data/sft and ../shared/data/agent loads */
static void check_shared_files(void) {
    static const char *const rel[] = {"sft/alpaca_en_demo.json",
                                      "sft/alpaca_zh_demo.json",
                                      "sft/identity.json",
                                      "sft/lima.json",
                                      "sft/oaast_sft_zh.json",
                                      "sft/v1_sft_demo.jsonl",
                                      "agent/glaive_toolcall_en_demo.json",
                                      "agent/glaive_toolcall_zh_demo.json",
                                      "agent/reason_tool_use_demo_50.jsonl"};
    enum { N = sizeof rel / sizeof rel[0] };
    static const int64_t want[N] = {999, 1000, 91, 1029, 689, 500, 300, 300, 50};
    char tpath[512], buf[N][512];
    if (!pt_shared_path("internlm2/tokenizer.model", tpath, sizeof tpath))
        return;
    for (int i = 0; i < N; i++)
        if (!pt_shared_path(rel[i], buf[i], sizeof buf[i]))
            return;
    pu_tok *t = NULL;
    PT_OK(pu_tok_load(tpath, &t));
    pu_pool *pool = pu_pool_create(2);
    for (int i = 0; i < N && t; i++) {
        /* the big plain alpaca files only with --slow (their kind is covered by the others) */
        if (!pt_slow() && (strstr(rel[i], "lima") || strstr(rel[i], "alpaca_")))
            continue;
        const char *p = buf[i];
        pu_sft_load_opts o = {.seq = 4096, .vars = k_vars, .pool = pool};
        pu_sft_data *d = NULL;
        PT_OK(pu_sft_data_load(&p, 1, t, &o, &d));
        if (d)
            PT_CHECK_MSG(pu_sft_data_n(d) == want[i], "%s: %lld samples, want %lld", rel[i],
                         (long long)pu_sft_data_n(d), (long long)want[i]);
        pu_sft_data_destroy(d);
    }
    pu_pool_destroy(pool);
    pu_tok_destroy(t);
}

/* preference records: prompt + chosen / rejected, only the reply scored
 * (the one reader, pref_data.c: pu_pref_record_parse + pu_pref_conversation,
 * checked here for the record kinds the SFT files also use) */
static void check_pref(void) {
    static const char *const recs[] = {
        "{\"conversations\": [{\"from\": \"system\", \"value\": \"s\"}, {\"from\": \"human\", "
        "\"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a0\"}, {\"from\": \"human\", "
        "\"value\": \"q2\"}], \"chosen\": {\"from\": \"gpt\", \"value\": \"good Puyu\"}, "
        "\"rejected\": {\"from\": \"gpt\", \"value\": \"bad\"}}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"chosen\": \"good Puyu\", "
        "\"rejected\": {\"role\": \"assistant\", \"content\": \"bad\"}}",
        "{\"instruction\": \"q\", \"input\": \"\", \"output\": [\"good Puyu\", \"bad\", "
        "\"worse\"], "
        "\"history\": [[\"q0\", \"a0\"]]}",
    };
    static const int n_turns[] = {5, 2, 4};
    for (int i = 0; i < 3; i++) {
        pu_pref_record pr;
        pu_sft_record c = {0}, r = {0};
        PT_OK(pu_pref_record_parse(recs[i], strlen(recs[i]), "p", NULL, &pr));
        PT_OK(pu_pref_conversation(&pr, 0, &c));
        PT_OK(pu_pref_conversation(&pr, 1, &r));
        PT_EQ_I64(c.msgs.n, n_turns[i]);
        PT_EQ_I64(r.msgs.n, n_turns[i]);
        if (c.msgs.n == n_turns[i] && r.msgs.n == n_turns[i]) {
            int n = c.msgs.n;
            PT_EQ_STR(c.msgs.msgs[n - 1].content, "good Puyu");
            PT_EQ_STR(r.msgs.msgs[n - 1].content, "bad");
            PT_EQ_STR(c.msgs.msgs[n - 1].role, "assistant");
            for (int k = 0; k < n; k++) {
                PT_EQ_I64(c.loss[k], k == n - 1);
                PT_EQ_I64(r.loss[k], k == n - 1);
                if (k < n - 1)
                    PT_EQ_STR(c.msgs.msgs[k].content, r.msgs.msgs[k].content);
            }
        }
        pu_sft_record_free(&c);
        pu_sft_record_free(&r);
        pu_pref_record_free(&pr);
    }
    static const bad_case bad[] = {
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}], \"chosen\": \"a\"}",
         "p: rejected: missing"},
        {"{\"instruction\": \"q\", \"output\": [\"a\"]}", "p: output"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"chosen\": 3, "
         "\"rejected\": \"b\"}",
         "p: chosen: missing or not a string"},
        {"{\"conversations\": [{\"from\": \"bot\", \"value\": \"q\"}], \"chosen\": \"a\", "
         "\"rejected\": \"b\"}",
         "p: conversations[0].from: unknown role"},
    };
    for (int i = 0; i < 4; i++) {
        pu_pref_record pr;
        PT_CHECK(pu_pref_record_parse(bad[i].rec, strlen(bad[i].rec), "p", NULL, &pr) ==
                 PU_ERR_FORMAT);
        PT_CHECK_MSG(strstr(pu_err_msg(), bad[i].want), "case %d: \"%s\" lacks \"%s\"", i,
                     pu_err_msg(), bad[i].want);
    }
    /* every record of the shared preference files */
    static const char *const rel[] = {"preference/dpo_en_demo.json", "preference/dpo_zh_demo.json",
                                      "preference/oaast_rm_zh.json"};
    for (int f = 0; f < 3; f++) {
        char path[512];
        if (!pt_shared_path(rel[f], path, sizeof path))
            return;
        json_t *arr = NULL;
        PT_OK(pu_json_load_file(path, &arr));
        size_t i;
        json_t *rec;
        int ok = 0, same = 0;
        json_array_foreach(arr, i, rec) {
            char *txt = json_dumps(rec, 0);
            pu_pref_record pr;
            pu_status st = pu_pref_record_parse(txt, strlen(txt), rel[f], NULL, &pr);
            if (st != PU_OK && strstr(pu_err_msg(), "equal to rejected")) {
                same++; /* no preference: refused (counted by --skip-bad) */
            } else {
                PT_CHECK_MSG(st == PU_OK, "%s[%zu]: %s", rel[f], i, pu_err_msg());
            }
            if (st == PU_OK) {
                pu_sft_record c = {0}, r = {0};
                PT_OK(pu_pref_conversation(&pr, 0, &c));
                PT_OK(pu_pref_conversation(&pr, 1, &r));
                ok += c.msgs.n == r.msgs.n && c.loss[c.msgs.n - 1] && r.loss[r.msgs.n - 1];
                pu_sft_record_free(&c);
                pu_sft_record_free(&r);
                pu_pref_record_free(&pr);
            }
            free(txt);
        }
        PT_EQ_I64(ok + same, (int64_t)json_array_size(arr));
        PT_EQ_I64(same, f == 2 ? 3 : 0); /* oaast_rm_zh has 3 records with output[0] == [1] */
        json_decref(arr);
    }
}

PT_SUITE(sft_data) {
    if (PT_TEST("preference records: chosen / rejected"))
        check_pref();
    if (PT_TEST("shared sft and agent files load"))
        check_shared_files();
    if (PT_TEST("golden records: tiny sentencepiece ids and labels"))
        check_golden();
    if (PT_TEST("golden records: InternLM2 tokenizer"))
        check_internlm2();
    if (PT_TEST("record -> chat turns, tool calls, labels"))
        check_render_text();
    if (PT_TEST("template vars"))
        check_vars();
    if (PT_TEST("batches: padded order with wrap, packed rows"))
        check_batches();
    if (PT_TEST("batches: seeded shuffle per epoch"))
        check_shuffle();
    if (PT_TEST("truncation at seq"))
        check_truncation();
    if (PT_TEST("bad records: errors and skip counts"))
        check_bad();
}
