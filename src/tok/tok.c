/*
 * tok.c — the tokenizer's generic layer.
 *
 * Loading dispatches on what TOK is: a directory (tokenizer.model, then
 * tokenizer.json, then tokenizer.bin inside it), a GGUF file (magic "GGUF";
 * tokenizer.ggml.model "llama" -> SentencePiece backend, "gpt2" -> byte-level
 * BPE backend), an HF tokenizer.json (first non-space byte '{'), a
 * SentencePiece ModelProto (.model), or a llama2.c tokenizer.bin (no magic:
 * tried by extension .bin and as the last resort).
 *
 * Encoding splits the input on registered special tokens first (leftmost,
 * longest match; a first-byte bitmap keeps the scan cheap) when
 * parse_special is on, and hands every span between them to the backend,
 * which never sees a special token. Decoding renders specials verbatim and
 * gives runs of ordinary ids to the backend. The streaming decoder holds back
 * incomplete UTF-8 so a generation loop can print tokens as they come.
 *
 * The piece -> id map is an open-addressing table of ids (linear probing,
 * load <= 0.5) keyed by the piece bytes; backends look pieces up through
 * pu_tok_piece_id_() without allocating.
 */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>

#include <jansson.h>

#include "tok/tok_impl.h"

/* ------------------------------------------------------------------------ */
/* construction helpers                                                     */

pu_tok *pu_tok_alloc_(pu_tok_type type, int64_t n_vocab) {
    pu_tok *t = pu_calloc(1, sizeof(*t));
    t->type = type;
    t->n_vocab = n_vocab;
    size_t n = n_vocab > 0 ? (size_t)n_vocab : 1;
    t->pieces = pu_calloc(n, sizeof(char *));
    t->lens = pu_calloc(n, sizeof(uint32_t));
    t->attrs = pu_malloc(n);
    memset(t->attrs, PU_TOK_ATTR_NORMAL, n);
    t->bos = t->eos = t->unk = t->pad = -1;
    t->add_bos_default = t->add_eos_default = -1;
    return t;
}

void pu_tok_set_piece_(pu_tok *t, int32_t id, const char *s, size_t len) {
    PU_ASSERT(id >= 0 && id < t->n_vocab);
    pu_free(t->pieces[id]);
    char *p = pu_malloc(len + 1);
    if (len)
        memcpy(p, s, len);
    p[len] = 0;
    t->pieces[id] = p;
    t->lens[id] = (uint32_t)len;
}

void pu_tok_add_special_(pu_tok *t, const char *text, size_t len, int32_t id) {
    if (len == 0)
        return;
    for (int i = 0; i < t->n_specials; i++)
        if (t->specials[i].len == len && memcmp(t->specials[i].text, text, len) == 0)
            return;
    t->specials = pu_realloc(t->specials, (size_t)(t->n_specials + 1) * sizeof(pu_tok_special));
    pu_tok_special *s = &t->specials[t->n_specials++];
    s->text = pu_malloc(len + 1); /* may contain NUL: no strndup */
    memcpy(s->text, text, len);
    s->text[len] = 0;
    s->len = len;
    s->id = id;
    s->always = id >= 0 && id < t->n_vocab && t->attrs && t->pieces &&
                t->attrs[id] == PU_TOK_ATTR_USER_DEFINED && t->lens[id] == len &&
                t->pieces[id] && memcmp(t->pieces[id], text, len) == 0;
}

/* Hash of a short byte string: 8 bytes at a time, multiply-xorshift mix. */
static inline uint64_t tok_hash(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x94d049bb133111ebull;
        h ^= h >> 31;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    return h;
}

static int cmp_special(const void *a, const void *b) {
    const pu_tok_special *x = a, *y = b;
    uint8_t cx = x->len ? (uint8_t)x->text[0] : 0, cy = y->len ? (uint8_t)y->text[0] : 0;
    if (cx != cy)
        return cx < cy ? -1 : 1;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return memcmp(x->text, y->text, x->len);
}

static void finalize_specials(pu_tok *t) {
    if (t->n_specials > 1)
        qsort(t->specials, (size_t)t->n_specials, sizeof(pu_tok_special), cmp_special);
    memset(t->special_first, 0, sizeof(t->special_first));
    t->special_max_len = 0;
    int32_t maxid = -1;
    for (int i = 0; i < t->n_specials; i++)
        if (t->specials[i].id > maxid)
            maxid = t->specials[i].id;
    pu_free(t->special_bits);
    t->special_bits_n = maxid + 1;
    t->special_bits = pu_calloc((size_t)(maxid + 1) / 8 + 1, 1);
    for (int i = 0; i < t->n_specials; i++) {
        int32_t id = t->specials[i].id;
        if (id >= 0)
            t->special_bits[id >> 3] |= (uint8_t)(1u << (id & 7));
    }
    /* first-byte index: the specials are sorted by first byte */
    for (int c = 0, i = 0; c <= 256; c++) {
        while (i < t->n_specials && c < 256 &&
               (t->specials[i].len ? (uint8_t)t->specials[i].text[0] : 0) < c)
            i++;
        t->special_start[c] = c < 256 ? i : t->n_specials;
    }
    for (int i = 0; i < t->n_specials; i++) {
        uint8_t c = (uint8_t)t->specials[i].text[0];
        t->special_first[c >> 3] |= (uint8_t)(1u << (c & 7));
        if ((int)t->specials[i].len > t->special_max_len)
            t->special_max_len = (int)t->specials[i].len;
    }
}

pu_status pu_tok_finalize_(pu_tok *t) {
    finalize_specials(t);
    uint64_t cap = 16;
    while (cap < (uint64_t)t->n_vocab * 2)
        cap <<= 1;
    pu_free(t->map);
    /* slot h: map[2h] = id (-1 empty), map[2h+1] = 32-bit fingerprint of the
     * hash, so failed probes rarely touch piece memory */
    t->map = pu_malloc(cap * 2 * sizeof(int32_t));
    for (uint64_t k = 0; k < cap; k++) {
        t->map[2 * k] = -1;
        t->map[2 * k + 1] = 0;
    }
    t->map_mask = cap - 1;
    for (int64_t id = 0; id < t->n_vocab; id++) {
        if (!t->pieces[id])
            continue;
        uint64_t hv = tok_hash(t->pieces[id], t->lens[id]);
        int32_t fp = (int32_t)(uint32_t)(hv >> 32);
        uint64_t h = hv & t->map_mask;
        for (;;) {
            int32_t e = t->map[2 * h];
            if (e < 0) {
                t->map[2 * h] = (int32_t)id;
                t->map[2 * h + 1] = fp;
                break;
            }
            if (t->map[2 * h + 1] == fp && t->lens[e] == t->lens[id] &&
                memcmp(t->pieces[e], t->pieces[id], t->lens[id]) == 0)
                break; /* duplicate piece: keep the first id */
            h = (h + 1) & t->map_mask;
        }
    }
    return PU_OK;
}

int32_t pu_tok_piece_id_(const pu_tok *t, const char *s, size_t len) {
    if (!t->map)
        return -1;
    uint64_t hv = tok_hash(s, len);
    int32_t fp = (int32_t)(uint32_t)(hv >> 32);
    uint64_t h = hv & t->map_mask;
    for (;;) {
        int32_t e = t->map[2 * h];
        if (e < 0)
            return -1;
        if (t->map[2 * h + 1] == fp && t->lens[e] == len && memcmp(t->pieces[e], s, len) == 0)
            return e;
        h = (h + 1) & t->map_mask;
    }
}

/* ------------------------------------------------------------------------ */
/* loading                                                                  */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static pu_status load_file(const char *path, pu_tok **out) {
    pu_mmap m = {0};
    PU_TRY(pu_mmap_open(&m, path));
    const unsigned char *d = m.data;
    size_t n = m.size;
    pu_status st;
    if (n >= 4 && memcmp(d, "GGUF", 4) == 0) {
        pu_tok_gguf_vocab v;
        st = pu_tok_gguf_vocab_parse(d, n, path, &v);
        pu_mmap_close(&m);
        if (st != PU_OK)
            return st;
        if (v.model && strcmp(v.model, "llama") == 0)
            st = pu_tok_load_spm_gguf_(path, &v, out);
        else if (v.model && strcmp(v.model, "gpt2") == 0)
            st = pu_tok_load_bpe_gguf_(path, &v, out);
        else
            st = pu_err_set(
                PU_ERR_UNSUPPORTED,
                "%s: tokenizer.ggml.model: expected \"llama\" or \"gpt2\", found %s%s%s", path,
                v.model ? "\"" : "", v.model ? v.model : "(missing)", v.model ? "\"" : "");
        pu_tok_gguf_vocab_free(&v);
        return st;
    }
    size_t i = 0;
    while (i < n && (d[i] == ' ' || d[i] == '\n' || d[i] == '\r' || d[i] == '\t'))
        i++;
    if (ends_with(path, ".json") || (i < n && d[i] == '{')) {
        pu_mmap_close(&m);
        return pu_tok_load_bpe_json_(path, out);
    }
    if (ends_with(path, ".bin")) {
        pu_mmap_close(&m);
        return pu_tok_load_llama2c_(path, out);
    }
    st = pu_tok_load_spm_buf_(d, n, path, out);
    pu_mmap_close(&m);
    if (st == PU_OK || ends_with(path, ".model"))
        return st;
    /* not a ModelProto: maybe a llama2.c tokenizer.bin under another name */
    char *msg = pu_strdup(pu_err_msg());
    pu_status st2 = pu_tok_load_llama2c_(path, out);
    if (st2 != PU_OK)
        st = pu_err_set(st, "%s (and not a llama2.c tokenizer.bin either)", msg);
    else
        st = PU_OK;
    pu_free(msg);
    return st;
}

static pu_status load_added_tokens(pu_tok *t, const char *dir);

pu_status pu_tok_load(const char *path, pu_tok **out) {
    *out = NULL;
    if (!path || !*path)
        return pu_err_set(PU_ERR_INVALID, "tokenizer path is empty");
    pu_status st;
    if (pu_dir_exists(path)) {
        static const char *const names[] = {"tokenizer.model", "tokenizer.json", "tokenizer.bin"};
        st = PU_ERR_IO;
        bool found = false;
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            char *p = pu_path_join(path, names[k]);
            if (pu_file_exists(p)) {
                found = true;
                st = load_file(p, out);
                pu_free(p);
                if (st == PU_OK && (*out)->type == PU_TOK_SPM) {
                    st = load_added_tokens(*out, path);
                    if (st != PU_OK) {
                        pu_tok_destroy(*out);
                        *out = NULL;
                    }
                }
                break;
            }
            pu_free(p);
        }
        if (!found)
            return pu_err_set(PU_ERR_IO,
                              "%s: directory has no tokenizer.model, tokenizer.json or "
                              "tokenizer.bin",
                              path);
    } else {
        st = load_file(path, out);
    }
    if (st != PU_OK) {
        *out = NULL;
        return st;
    }
    if (!(*out)->source)
        (*out)->source = pu_strdup(path);
    return PU_OK;
}

/* HF tokenizer_config.json beside a SentencePiece model: its
 * added_tokens_decoder {"id": {"content": ...}} names special tokens stored
 * under other names in the .model (InternLM2's [UNUSED_TOKEN_n]). */
static pu_status load_added_tokens(pu_tok *t, const char *dir) {
    char *p = pu_path_join(dir, "tokenizer_config.json");
    if (!pu_file_exists(p)) {
        pu_free(p);
        return PU_OK;
    }
    json_t *j = NULL;
    pu_status st = pu_json_load_file(p, &j);
    if (st != PU_OK) {
        pu_free(p);
        return st;
    }
    json_t *dec = json_object_get(j, "added_tokens_decoder");
    const char *key;
    json_t *v;
    bool added = false;
    json_object_foreach(dec, key, v) {
        char *end;
        long id = strtol(key, &end, 10);
        json_t *c = json_object_get(v, "content");
        if (*end || id < 0 || id >= t->n_vocab || !json_is_string(c)) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: added_tokens_decoder[\"%s\"]: expected an id in 0..%lld with a "
                            "string \"content\"",
                            p, key, (long long)t->n_vocab - 1);
            break;
        }
        pu_tok_add_special_(t, json_string_value(c), json_string_length(c), (int32_t)id);
        added = true;
    }
    if (added && st == PU_OK)
        finalize_specials(t);
    json_decref(j);
    pu_free(p);
    return st;
}

void pu_tok_destroy(pu_tok *t) {
    if (!t)
        return;
    if (t->be && t->be->destroy)
        t->be->destroy(t);
    if (t->pieces)
        for (int64_t i = 0; i < t->n_vocab; i++)
            pu_free(t->pieces[i]);
    pu_free(t->pieces);
    pu_free(t->lens);
    pu_free(t->scores);
    pu_free(t->attrs);
    for (int i = 0; i < t->n_specials; i++)
        pu_free(t->specials[i].text);
    pu_free(t->specials);
    pu_free(t->map);
    pu_free(t->special_bits);
    pu_free(t->source);
    pu_free(t);
}

/* ------------------------------------------------------------------------ */
/* accessors                                                                */

pu_tok_type pu_tok_get_type(const pu_tok *t) {
    return t->type;
}
int64_t pu_tok_n_vocab(const pu_tok *t) {
    return t->n_vocab;
}
int32_t pu_tok_bos(const pu_tok *t) {
    return t->bos;
}
int32_t pu_tok_eos(const pu_tok *t) {
    return t->eos;
}
int32_t pu_tok_unk(const pu_tok *t) {
    return t->unk;
}

int32_t pu_tok_special_id(const pu_tok *t, const char *text) {
    size_t n = strlen(text);
    for (int i = 0; i < t->n_specials; i++)
        if (t->specials[i].len == n && memcmp(t->specials[i].text, text, n) == 0)
            return t->specials[i].id;
    /* a user-defined piece of exactly that text (a SentencePiece model trained
     * with the chat tokens as user_defined_symbols): found, not registered,
     * so that encoding stays SentencePiece's */
    if (t->attrs && t->pieces)
        for (int64_t i = 0; i < t->n_vocab; i++)
            if (t->attrs[i] == PU_TOK_ATTR_USER_DEFINED && t->lens[i] == n && t->pieces[i] &&
                memcmp(t->pieces[i], text, n) == 0)
                return (int32_t)i;
    return -1;
}

const char *pu_tok_piece(const pu_tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab || !t->pieces[id]) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = t->lens[id];
    return t->pieces[id];
}

float pu_tok_score(const pu_tok *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab || !t->scores)
        return 0.0f;
    return t->scores[id];
}

pu_tok_attr pu_tok_get_attr(const pu_tok *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab)
        return PU_TOK_ATTR_UNUSED;
    return (pu_tok_attr)t->attrs[id];
}

static void describe_id(pu_str *out, const pu_tok *t, const char *key, int32_t id) {
    pu_str_appendf(out, "%s: %d", key, id);
    if (id >= 0 && id < t->n_vocab && t->pieces[id]) {
        pu_str_puts(out, " ");
        pu_str_json_string(out, t->pieces[id], t->lens[id]);
    }
    pu_str_putc(out, '\n');
}

void pu_tok_describe(const pu_tok *t, pu_str *out) {
    pu_str_appendf(out, "type: %s\n",
                   t->type == PU_TOK_SPM ? "sentencepiece-bpe" : "byte-level-bpe");
    if (t->source)
        pu_str_appendf(out, "source: %s\n", t->source);
    pu_str_appendf(out, "vocab_size: %lld\n", (long long)t->n_vocab);
    describe_id(out, t, "bos", t->bos);
    describe_id(out, t, "eos", t->eos);
    describe_id(out, t, "unk", t->unk);
    describe_id(out, t, "pad", t->pad);
    if (t->add_bos_default >= 0)
        pu_str_appendf(out, "add_bos_default: %s\n", t->add_bos_default ? "true" : "false");
    int counts[8] = {0};
    for (int64_t i = 0; i < t->n_vocab; i++)
        if (t->attrs[i] < 8)
            counts[t->attrs[i]]++;
    pu_str_appendf(out,
                   "piece_types: normal %d, unknown %d, control %d, user_defined %d, unused %d, "
                   "byte %d\n",
                   counts[1], counts[2], counts[3], counts[4], counts[5], counts[6]);
    if (t->describe)
        t->describe(t, out);
    pu_str_appendf(out, "special_tokens: %d\n", t->n_specials);
    /* by id, for readability */
    int32_t last = -1;
    for (int k = 0; k < t->n_specials; k++) {
        int best = -1;
        for (int q = 0; q < t->n_specials; q++)
            if (t->specials[q].id > last && (best < 0 || t->specials[q].id < t->specials[best].id))
                best = q;
        if (best < 0)
            break;
        last = t->specials[best].id;
        pu_str_appendf(out, "  %d ", t->specials[best].id);
        pu_str_json_string(out, t->specials[best].text, t->specials[best].len);
        pu_str_putc(out, '\n');
    }
}

pu_tok_encode_opts pu_tok_encode_default_opts(void) {
    pu_tok_encode_opts o = {.add_bos = false, .parse_special = true};
    return o;
}

/* ------------------------------------------------------------------------ */
/* encode                                                                   */

static void push_id(int32_t **ids, int64_t *n, int64_t *cap, int32_t id) {
    if (*n >= *cap) {
        *cap = *cap < 64 ? 64 : *cap * 2;
        *ids = pu_realloc(*ids, (size_t)*cap * sizeof(int32_t));
    }
    (*ids)[(*n)++] = id;
}

/* Longest special starting at text[i], or NULL. */
/* Longest special at text[i] (only user-defined ones unless all_specials). */
static const pu_tok_special *match_special(const pu_tok *t, const char *text, size_t len,
                                           size_t i, bool all_specials) {
    uint8_t c = (uint8_t)text[i];
    if (!(t->special_first[c >> 3] & (1u << (c & 7))))
        return NULL;
    size_t rem = len - i;
    for (int k = t->special_start[c]; k < t->special_start[c + 1]; k++) { /* length desc */
        const pu_tok_special *s = &t->specials[k];
        if (s->len <= rem && s->len > 0 && memcmp(s->text, text + i, s->len) == 0 &&
            (all_specials || s->always))
            return s;
    }
    return NULL;
}

/* any user-defined (non-control) special registered? */
static bool has_user_defined(const pu_tok *t) {
    for (int k = 0; k < t->n_specials; k++)
        if (t->specials[k].always)
            return true;
    return false;
}

pu_status pu_tok_encode(const pu_tok *t, const char *text, size_t len,
                        const pu_tok_encode_opts *opts, int32_t **ids, int64_t *n) {
    pu_tok_encode_opts o = opts ? *opts : pu_tok_encode_default_opts();
    if (!*ids)
        *n = 0;
    int64_t cap = *n; /* capacity unknown: treat the array as full, grow on the first push */
    if (o.add_bos) {
        if (t->bos < 0)
            return pu_err_set(PU_ERR_INVALID, "%s: tokenizer has no BOS token",
                              t->source ? t->source : "tokenizer");
        push_id(ids, n, &cap, t->bos);
    }
    if (len == 0)
        return PU_OK;
    if (!text)
        return pu_err_set(PU_ERR_INVALID, "pu_tok_encode: text is NULL with len %zu", len);
    size_t start = 0;
    /* Control specials (<|im_end|>, <s>, ...) are split only with
     * parse_special; user-defined added tokens always are (HF, llama.cpp). */
    if (t->n_specials > 0 && (o.parse_special || has_user_defined(t))) {
        for (size_t i = 0; i < len;) {
            const pu_tok_special *s = match_special(t, text, len, i, o.parse_special);
            if (!s) {
                i++;
                continue;
            }
            if (i > start)
                PU_TRY(t->be->encode(t, text + start, i - start, ids, n, &cap));
            push_id(ids, n, &cap, s->id);
            i += s->len;
            start = i;
        }
    }
    if (start < len)
        PU_TRY(t->be->encode(t, text + start, len - start, ids, n, &cap));
    return PU_OK;
}

typedef struct {
    const pu_tok *t;
    const char *const *texts;
    const size_t *lens;
    int64_t n;
    const pu_tok_encode_opts *opts;
    int32_t **ids;
    int64_t *counts;
    _Atomic int64_t next;
    _Atomic int64_t first_bad; /* lowest failing index, n if none */
    pthread_mutex_t mu;
    pu_status st;
    char msg[512];
} batch_ctx;

static void batch_worker(void *ctx, int ith, int nth) {
    (void)ith;
    (void)nth;
    batch_ctx *b = ctx;
    for (;;) {
        int64_t lo = atomic_fetch_add(&b->next, 16);
        if (lo >= b->n || atomic_load(&b->first_bad) < b->n)
            return;
        int64_t hi = lo + 16 < b->n ? lo + 16 : b->n;
        for (int64_t i = lo; i < hi; i++) {
            b->ids[i] = NULL;
            b->counts[i] = 0;
            pu_status st =
                pu_tok_encode(b->t, b->texts[i], b->lens[i], b->opts, &b->ids[i], &b->counts[i]);
            if (st != PU_OK) {
                pthread_mutex_lock(&b->mu);
                if (i < atomic_load(&b->first_bad)) {
                    atomic_store(&b->first_bad, i);
                    b->st = st;
                    snprintf(b->msg, sizeof b->msg, "text %lld: %s", (long long)i, pu_err_msg());
                }
                pthread_mutex_unlock(&b->mu);
                return;
            }
        }
    }
}

pu_status pu_tok_encode_batch(const pu_tok *t, const char *const *texts, const size_t *lens,
                              int64_t n, const pu_tok_encode_opts *opts, pu_pool *pool,
                              int32_t **ids, int64_t *counts) {
    for (int64_t i = 0; i < n; i++) {
        ids[i] = NULL;
        counts[i] = 0;
    }
    batch_ctx *b = pu_calloc(1, sizeof(*b));
    b->t = t;
    b->texts = texts;
    b->lens = lens;
    b->n = n;
    b->opts = opts;
    b->ids = ids;
    b->counts = counts;
    atomic_init(&b->next, 0);
    atomic_init(&b->first_bad, n);
    pthread_mutex_init(&b->mu, NULL);
    pu_pool_run(pool, batch_worker, b);
    pthread_mutex_destroy(&b->mu);
    pu_status st = PU_OK;
    if (atomic_load(&b->first_bad) < n) {
        for (int64_t i = 0; i < n; i++) {
            pu_free(ids[i]);
            ids[i] = NULL;
            counts[i] = 0;
        }
        st = pu_err_set(b->st, "%s", b->msg);
    }
    pu_free(b);
    return st;
}

/* ------------------------------------------------------------------------ */
/* decode                                                                   */

static const pu_tok_special *special_of_id(const pu_tok *t, int32_t id) {
    if (id < 0 || id >= t->special_bits_n || !(t->special_bits[id >> 3] & (1u << (id & 7))))
        return NULL;
    for (int k = 0; k < t->n_specials; k++)
        if (t->specials[k].id == id)
            return &t->specials[k];
    return NULL;
}

pu_status pu_tok_decode(const pu_tok *t, const int32_t *ids, int64_t n, pu_str *out) {
    int64_t run = 0;
    bool first_run = true; /* leading-space rule: only the first run of ordinary ids */
    for (int64_t i = 0; i < n; i++) {
        const pu_tok_special *s = t->n_specials ? special_of_id(t, ids[i]) : NULL;
        if (!s) {
            if (ids[i] < 0 || ids[i] >= t->n_vocab)
                return pu_err_set(PU_ERR_RANGE,
                                  "%s: token id %d at position %lld: expected 0..%lld",
                                  t->source ? t->source : "tokenizer", ids[i], (long long)i,
                                  (long long)t->n_vocab - 1);
            continue;
        }
        if (i > run) {
            PU_TRY(t->be->decode(t, ids + run, i - run, first_run, out));
            first_run = false;
        }
        pu_str_append(out, s->text, s->len);
        run = i + 1;
    }
    if (n > run)
        PU_TRY(t->be->decode(t, ids + run, n - run, first_run, out));
    if (!out->p)
        pu_str_append(out, "", 0);
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* streaming decode                                                         */

/* Length of a complete, valid UTF-8 sequence at p (SentencePiece's rules:
 * no overlongs, no surrogates, <= U+10FFFF), 0 if invalid, -1 if it could
 * still become valid with more bytes. */
static int utf8_status(const unsigned char *p, int n) {
    unsigned c = p[0];
    int need;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        need = 2;
    else if ((c & 0xF0) == 0xE0)
        need = 3;
    else if ((c & 0xF8) == 0xF0)
        need = 4;
    else
        return 0;
    for (int k = 1; k < need; k++) {
        if (k >= n)
            return -1; /* cannot tell yet (prefix checks below are conservative) */
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    }
    uint32_t cp;
    if (need == 2)
        cp = ((c & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    else if (need == 3)
        cp = ((c & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    else
        cp = ((c & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
    static const uint32_t minv[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minv[need] || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF)
        return 0;
    return need;
}

void pu_tok_stream_init(pu_tok_stream *s, const pu_tok *t) {
    memset(s, 0, sizeof(*s));
    s->t = t;
}

void pu_tok_stream_init_cont(pu_tok_stream *s, const pu_tok *t) {
    pu_tok_stream_init(s, t);
    s->n_plain = 1; /* not at the start of the text: no leading-space drop */
}

static void stream_emit(pu_tok_stream *s, pu_str *out, const char *data, size_t n) {
    pu_str_append(out, data, n);
    s->n_out += (int64_t)n;
}

/* Emit every complete character in pending; keep a possibly-valid tail. */
static void stream_drain(pu_tok_stream *s, pu_str *out, bool final) {
    int i = 0;
    while (i < s->n_pending) {
        int st = utf8_status((const unsigned char *)s->pending + i, s->n_pending - i);
        if (st < 0 && !final)
            break;
        if (st <= 0) {
            stream_emit(s, out, "\xEF\xBF\xBD", 3);
            i += 1;
        } else {
            stream_emit(s, out, s->pending + i, (size_t)st);
            i += st;
        }
    }
    memmove(s->pending, s->pending + i, (size_t)(s->n_pending - i));
    s->n_pending -= i;
}

static void stream_bytes(pu_tok_stream *s, pu_str *out, const char *data, size_t n) {
    for (size_t k = 0; k < n; k++) {
        if (s->n_pending == (int)sizeof(s->pending))
            stream_drain(s, out, false); /* leaves at most 3 bytes */
        s->pending[s->n_pending++] = data[k];
    }
    stream_drain(s, out, false);
}

pu_status pu_tok_stream_feed(pu_tok_stream *s, int32_t id, pu_str *out) {
    const pu_tok *t = s->t;
    s->n_fed++;
    const pu_tok_special *sp = t->n_specials ? special_of_id(t, id) : NULL;
    if (sp) {
        stream_drain(s, out, true);
        stream_emit(s, out, sp->text, sp->len);
        return PU_OK;
    }
    if (id < 0 || id >= t->n_vocab)
        return pu_err_set(PU_ERR_RANGE, "%s: token id %d: expected 0..%lld",
                          t->source ? t->source : "tokenizer", id, (long long)t->n_vocab - 1);
    bool at_start = s->n_plain == 0;
    s->n_plain++;
    pu_str tmp = {0};
    pu_status st = t->decode_raw ? t->decode_raw(t, &id, 1, at_start, &tmp)
                                 : t->be->decode(t, &id, 1, at_start, &tmp);
    if (st == PU_OK && tmp.len)
        stream_bytes(s, out, tmp.p, tmp.len);
    pu_str_free(&tmp);
    return st;
}

void pu_tok_stream_flush(pu_tok_stream *s, pu_str *out) {
    stream_drain(s, out, true);
}
