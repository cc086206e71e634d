/*
 * shard.c — token shard writer, validating reader (format: pu_shard.h) and
 * the packer behind `puyu data pack`: documents are read file by file,
 * tokenized in batches of PACK_BATCH on the pool's threads (each document by
 * one thread; the output order is the input order, so the result does not
 * depend on the thread count), followed by EOS, and appended to the train or
 * val buffer, which is written out as a shard past --shard-tokens.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_shard.h"
#include "puyu/pu_tok.h"

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

pu_status pu_shard_write(const char *path, const int32_t *ids, int64_t n, const int64_t *starts,
                         int64_t n_docs, int64_t vocab, uint64_t tok_hash) {
    if (n < 0 || n_docs < 0 || vocab <= 0 || vocab > INT32_MAX)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: bad shard sizes (tokens %lld, docs %lld, vocab "
                          "%lld)",
                          path, (long long)n, (long long)n_docs, (long long)vocab);
    for (int64_t d = 0; d < n_docs; d++)
        if (starts[d] < 0 || starts[d] > n || (d == 0 && starts[d] != 0) ||
            (d > 0 && starts[d] < starts[d - 1]))
            return pu_err_set(PU_ERR_INVALID, "%s: document start %lld of doc %lld is invalid",
                              path, (long long)starts[d], (long long)d);
    uint32_t w = vocab <= 65536 ? 2 : 4;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return pu_err_set(PU_ERR_RANGE, "%s: token %lld has id %d outside [0, %lld)", path,
                              (long long)i, ids[i], (long long)vocab);
    uint64_t tok_bytes = (uint64_t)n * w, idx_off = (PU_SHARD_HEADER + tok_bytes + 7) / 8 * 8;
    uint8_t h[PU_SHARD_HEADER];
    memset(h, 0, sizeof h);
    memcpy(h, PU_SHARD_MAGIC, 8);
    put_u32(h + 8, PU_SHARD_VERSION);
    put_u32(h + 12, w);
    put_u64(h + 16, (uint64_t)vocab);
    put_u64(h + 24, tok_hash);
    put_u64(h + 32, (uint64_t)n);
    put_u64(h + 40, (uint64_t)n_docs);
    put_u64(h + 48, idx_off);
    put_u64(h + 56, pu_hash64(h, 56));
    pu_atomic_file af;
    PU_TRY(pu_atomic_open(&af, path));
    bool ok = fwrite(h, 1, sizeof h, af.f) == sizeof h;
    uint8_t buf[8192];
    for (int64_t i = 0; ok && i < n;) {
        int64_t m = 0;
        for (; i < n && m + 4 <= (int64_t)sizeof buf; i++, m += w) {
            if (w == 2) {
                buf[m] = (uint8_t)ids[i];
                buf[m + 1] = (uint8_t)(ids[i] >> 8);
            } else
                put_u32(buf + m, (uint32_t)ids[i]);
        }
        ok = fwrite(buf, 1, (size_t)m, af.f) == (size_t)m;
    }
    uint64_t pad = idx_off - PU_SHARD_HEADER - tok_bytes;
    memset(buf, 0, 8);
    ok = ok && fwrite(buf, 1, (size_t)pad, af.f) == pad;
    for (int64_t d = 0; ok && d <= n_docs; d++) {
        put_u64(buf, d < n_docs ? (uint64_t)starts[d] : (uint64_t)n);
        ok = fwrite(buf, 1, 8, af.f) == 8;
    }
    if (!ok) {
        pu_atomic_abort(&af);
        return pu_err_set(PU_ERR_IO, "%s: write failed (disk full?)", path);
    }
    return pu_atomic_commit(&af);
}

pu_status pu_shard_open(pu_shard *s, const char *path) {
    memset(s, 0, sizeof *s);
    PU_TRY(pu_mmap_open(&s->map, path));
    const uint8_t *p = s->map.data;
    size_t len = s->map.size;
    pu_status st = PU_OK;
    if (len < PU_SHARD_HEADER || memcmp(p, PU_SHARD_MAGIC, 8) != 0) {
        st = pu_err_set(PU_ERR_FORMAT,
                        "%s: not a token shard (expected magic \"%s\" and a "
                        "%d-byte header, file has %zu bytes)",
                        path, PU_SHARD_MAGIC, PU_SHARD_HEADER, len);
        goto fail;
    }
    if (get_u64(p + 56) != pu_hash64(p, 56)) {
        st = pu_err_set(PU_ERR_FORMAT,
                        "%s: header check: expected %016llx, found %016llx "
                        "(corrupt header)",
                        path, (unsigned long long)pu_hash64(p, 56),
                        (unsigned long long)get_u64(p + 56));
        goto fail;
    }
    s->version = get_u32(p + 8);
    s->width = get_u32(p + 12);
    s->vocab = get_u64(p + 16);
    s->tok_hash = get_u64(p + 24);
    s->n_tokens = get_u64(p + 32);
    s->n_docs = get_u64(p + 40);
    uint64_t idx_off = get_u64(p + 48);
    if (s->version != PU_SHARD_VERSION) {
        st = pu_err_set(PU_ERR_FORMAT, "%s: version: expected %d, found %u", path, PU_SHARD_VERSION,
                        s->version);
        goto fail;
    }
    if (s->width != 2 && s->width != 4) {
        st =
            pu_err_set(PU_ERR_FORMAT, "%s: token width: expected 2 or 4, found %u", path, s->width);
        goto fail;
    }
    if (s->vocab == 0 || s->vocab > (uint64_t)INT32_MAX || (s->width == 2 && s->vocab > 65536)) {
        st = pu_err_set(PU_ERR_FORMAT, "%s: vocab size %llu invalid for token width %u", path,
                        (unsigned long long)s->vocab, s->width);
        goto fail;
    }
    if (s->n_tokens > len / s->width || s->n_docs > len / 8 ||
        idx_off != (PU_SHARD_HEADER + s->n_tokens * s->width + 7) / 8 * 8 || idx_off > len ||
        (len - idx_off) / 8 != s->n_docs + 1 || (len - idx_off) % 8) {
        st = pu_err_set(PU_ERR_FORMAT,
                        "%s: sizes: %llu tokens and %llu documents do not match "
                        "the file size %zu (truncated or corrupt)",
                        path, (unsigned long long)s->n_tokens, (unsigned long long)s->n_docs, len);
        goto fail;
    }
    s->tokens = p + PU_SHARD_HEADER;
    s->index = p + idx_off;
    for (uint64_t d = 0; d <= s->n_docs; d++) {
        uint64_t v = get_u64(s->index + 8 * d);
        uint64_t prev = d ? get_u64(s->index + 8 * (d - 1)) : 0;
        if ((d == 0 && v != 0) || v < prev || v > s->n_tokens ||
            (d == s->n_docs && v != s->n_tokens)) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: document index entry %llu = %llu is invalid "
                            "(expected non-decreasing from 0 to %llu)",
                            path, (unsigned long long)d, (unsigned long long)v,
                            (unsigned long long)s->n_tokens);
            goto fail;
        }
    }
    for (uint64_t i = 0; i < s->n_tokens; i++) {
        uint64_t v = s->width == 2 ? (uint64_t)(s->tokens[2 * i] | s->tokens[2 * i + 1] << 8)
                                   : get_u32(s->tokens + 4 * i);
        if (v >= s->vocab) {
            st = pu_err_set(PU_ERR_FORMAT, "%s: token %llu has id %llu >= vocab size %llu", path,
                            (unsigned long long)i, (unsigned long long)v,
                            (unsigned long long)s->vocab);
            goto fail;
        }
    }
    s->path = pu_strdup(path);
    return PU_OK;
fail:
    pu_mmap_close(&s->map);
    memset(s, 0, sizeof *s);
    return st;
}

void pu_shard_close(pu_shard *s) {
    pu_mmap_close(&s->map);
    pu_free(s->path);
    memset(s, 0, sizeof *s);
}

void pu_shard_read(const pu_shard *s, int64_t start, int64_t n, int32_t *out) {
    if (s->width == 2) {
        const uint8_t *p = s->tokens + 2 * start;
        for (int64_t i = 0; i < n; i++)
            out[i] = (int32_t)(p[2 * i] | p[2 * i + 1] << 8);
    } else {
        for (int64_t i = 0; i < n; i++)
            out[i] = (int32_t)get_u32(s->tokens + 4 * (start + i));
    }
}

int64_t pu_shard_doc_start(const pu_shard *s, int64_t d) {
    return (int64_t)get_u64(s->index + 8 * d);
}

/* ---------------------------------------------------------------- packing */

#define PACK_BATCH 2048

typedef struct {
    char *text;
    size_t len;
    int32_t *ids;
    int64_t n;
    pu_status st;
    char err[256];
} pack_doc;

typedef struct {
    const pu_pack_opts *o;
    pack_doc *docs;
    int64_t n;
} pack_ctx;

static void pack_worker(void *vc, int ith, int nth) {
    pack_ctx *c = vc;
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = c->o->add_bos;
    eo.parse_special = false; /* raw text: "<|im_end|>" in data stays text */
    for (int64_t i = ith; i < c->n; i += nth) {
        pack_doc *d = &c->docs[i];
        d->st = pu_tok_encode(c->o->tok, d->text, d->len, &eo, &d->ids, &d->n);
        if (d->st != PU_OK)
            snprintf(d->err, sizeof d->err, "%s", pu_err_msg());
    }
}

typedef struct {
    int32_t *ids;
    int64_t n, cap;
    int64_t *starts;
    int64_t nd, capd;
    int64_t shard_no;
} pack_buf;

static pu_status flush_buf(const pu_pack_opts *o, pack_buf *b, const char *split, int64_t vocab,
                           uint64_t hash, pu_pack_stats *st, int k) {
    if (b->nd == 0)
        return PU_OK;
    char name[64];
    snprintf(name, sizeof name, "%s_%06lld.bin", split, (long long)b->shard_no);
    char *path = pu_path_join(o->out_dir, name);
    pu_status s = pu_shard_write(path, b->ids, b->n, b->starts, b->nd, vocab, hash);
    pu_free(path);
    if (s != PU_OK)
        return s;
    st->shards[k]++;
    b->shard_no++;
    b->n = b->nd = 0;
    return PU_OK;
}

static void buf_add(pack_buf *b, const int32_t *ids, int64_t n, int32_t eos) {
    if (b->nd == b->capd) {
        b->capd = b->capd ? 2 * b->capd : 1024;
        b->starts = pu_realloc(b->starts, (size_t)b->capd * sizeof(int64_t));
    }
    b->starts[b->nd++] = b->n;
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->ids = pu_realloc(b->ids, (size_t)b->cap * sizeof(int32_t));
    }
    memcpy(b->ids + b->n, ids, (size_t)n * sizeof(int32_t));
    b->n += n;
    b->ids[b->n++] = eos;
}

static pu_status run_batch(const pu_pack_opts *o, pu_pool *pool, pack_doc *docs, int64_t n,
                           pack_buf *bufs, int64_t *doc_index, int64_t vocab, uint64_t hash,
                           int32_t eos, pu_pack_stats *st) {
    pack_ctx c = {o, docs, n};
    pu_pool_run(pool, pack_worker, &c);
    pu_status s = PU_OK;
    for (int64_t i = 0; i < n; i++) {
        if (s == PU_OK && docs[i].st != PU_OK)
            s = pu_err_set(docs[i].st, "tokenizing document %lld: %s", (long long)*doc_index,
                           docs[i].err);
        if (s == PU_OK) {
            double f = o->val_fraction;
            int64_t di = *doc_index;
            int k = f > 0 && floor((double)(di + 1) * f) > floor((double)di * f) ? 1 : 0;
            buf_add(&bufs[k], docs[i].ids, docs[i].n, eos);
            st->docs[k]++;
            st->tokens[k] += docs[i].n + 1;
            if (bufs[k].n >= o->shard_tokens)
                s = flush_buf(o, &bufs[k], k ? "val" : "train", vocab, hash, st, k);
        }
        (*doc_index)++;
        pu_free(docs[i].ids);
        pu_free(docs[i].text);
        memset(&docs[i], 0, sizeof docs[i]);
    }
    return s;
}

static uint64_t tok_file_hash(const char *path) {
    char *p = NULL;
    if (pu_dir_exists(path)) {
        p = pu_path_join(path, "tokenizer.model");
        if (!pu_file_exists(p)) {
            pu_free(p);
            p = pu_path_join(path, "tokenizer.json");
        }
    } else
        p = pu_strdup(path);
    char *data = NULL;
    size_t len = 0;
    uint64_t h = 0;
    if (pu_file_read_all(p, &data, &len) == PU_OK)
        h = pu_hash64(data, len);
    pu_err_clear();
    pu_free(data);
    pu_free(p);
    return h;
}

pu_status pu_shard_pack(const pu_pack_opts *o, pu_pool *pool, pu_pack_stats *st) {
    memset(st, 0, sizeof *st);
    if (!(o->val_fraction >= 0 && o->val_fraction < 1))
        return pu_err_set(PU_ERR_INVALID, "--val-fraction %g: expected 0 <= F < 1",
                          o->val_fraction);
    int64_t vocab = pu_tok_n_vocab(o->tok);
    int32_t eos = pu_tok_eos(o->tok);
    if (eos < 0)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: the tokenizer has no EOS token to separate "
                          "documents",
                          o->tok_path);
    uint64_t hash = tok_file_hash(o->tok_path);
    PU_TRY(pu_mkdir_p(o->out_dir));
    PU_TRY(pu_sweep_stale_tmp(o->out_dir, NULL)); /* temps of a killed earlier pack */
    pack_buf bufs[2];
    memset(bufs, 0, sizeof bufs);
    pack_doc *docs = pu_calloc(PACK_BATCH, sizeof *docs);
    int64_t nb = 0, doc_index = 0;
    pu_status s = PU_OK;
    for (int f = 0; f < o->n_inputs && s == PU_OK; f++) {
        const char *path = o->inputs[f];
        char *data = NULL;
        size_t len = 0;
        s = pu_file_read_all(path, &data, &len);
        if (s != PU_OK)
            break;
        st->bytes += (int64_t)len;
        size_t k = 0;
        while (k < len && (data[k] == ' ' || data[k] == '\n' || data[k] == '\r' || data[k] == '\t'))
            k++;
        const char *ext = strrchr(path, '.');
        bool jsonl = (ext && (!strcmp(ext, ".jsonl") || !strcmp(ext, ".ndjson"))) ||
                     (k < len && data[k] == '{');
        if (!jsonl) {
            docs[nb].text = data;
            docs[nb].len = len;
            data = NULL;
            if (++nb == PACK_BATCH) {
                s = run_batch(o, pool, docs, nb, bufs, &doc_index, vocab, hash, eos, st);
                nb = 0;
            }
        } else {
            int64_t line = 0;
            for (char *p = data; s == PU_OK && p < data + len;) {
                char *nl = memchr(p, '\n', (size_t)(data + len - p));
                size_t n = nl ? (size_t)(nl - p) : (size_t)(data + len - p);
                line++;
                size_t a = 0;
                while (a < n && (p[a] == ' ' || p[a] == '\r' || p[a] == '\t'))
                    a++;
                if (a < n) {
                    json_error_t je;
                    json_t *j = json_loadb(p, n, JSON_ALLOW_NUL, &je);
                    json_t *t = j ? json_object_get(j, "text") : NULL;
                    if (!j)
                        s = pu_err_set(PU_ERR_FORMAT, "%s:%lld: invalid JSON: %s", path,
                                       (long long)line, je.text);
                    else if (!json_is_string(t))
                        s = pu_err_set(PU_ERR_FORMAT,
                                       "%s:%lld: expected an object with a "
                                       "string \"text\" field",
                                       path, (long long)line);
                    else {
                        docs[nb].len = json_string_length(t);
                        docs[nb].text = pu_malloc(docs[nb].len + 1);
                        memcpy(docs[nb].text, json_string_value(t), docs[nb].len + 1);
                        if (++nb == PACK_BATCH) {
                            s = run_batch(o, pool, docs, nb, bufs, &doc_index, vocab, hash, eos,
                                          st);
                            nb = 0;
                        }
                    }
                    if (j)
                        json_decref(j);
                }
                p += n + 1;
            }
        }
        pu_free(data);
    }
    if (s == PU_OK && nb)
        s = run_batch(o, pool, docs, nb, bufs, &doc_index, vocab, hash, eos, st);
    else
        for (int64_t i = 0; i < nb; i++)
            pu_free(docs[i].text);
    if (s == PU_OK)
        s = flush_buf(o, &bufs[0], "train", vocab, hash, st, 0);
    if (s == PU_OK)
        s = flush_buf(o, &bufs[1], "val", vocab, hash, st, 1);
    if (s == PU_OK && st->docs[0] == 0)
        s = pu_err_set(PU_ERR_INVALID, "no training documents in the inputs");
    if (s == PU_OK) {
        char *abs = realpath(o->tok_path, NULL);
        pu_str m = {0};
        pu_str_puts(&m, "{\n  \"format\": \"puyu-token-shards-1\",\n  \"tokenizer\": ");
        const char *tp = abs ? abs : o->tok_path;
        pu_str_json_string(&m, tp, strlen(tp));
        free(abs);
        pu_str_appendf(&m,
                       ",\n  \"tokenizer_hash\": \"%016llx\",\n  \"vocab_size\": %lld,\n  "
                       "\"eos_id\": %d,\n  \"add_bos\": %s,\n  \"input_bytes\": %lld,\n",
                       (unsigned long long)hash, (long long)vocab, eos,
                       o->add_bos ? "true" : "false", (long long)st->bytes);
        for (int k = 0; k < 2; k++)
            pu_str_appendf(&m,
                           "  \"%s\": {\"shards\": %lld, \"documents\": %lld, \"tokens\": "
                           "%lld}%s\n",
                           k ? "val" : "train", (long long)st->shards[k], (long long)st->docs[k],
                           (long long)st->tokens[k], k ? "" : ",");
        pu_str_puts(&m, "}\n");
        char *mp = pu_path_join(o->out_dir, "meta.json");
        s = pu_file_write_atomic(mp, m.p, m.len);
        pu_free(mp);
        pu_str_free(&m);
    }
    for (int k = 0; k < 2; k++) {
        pu_free(bufs[k].ids);
        pu_free(bufs[k].starts);
    }
    pu_free(docs);
    return s;
}
