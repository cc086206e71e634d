/*
 * spm.c — SentencePiece BPE, byte-identical to Google's sentencepiece
 * (normalizer.cc + bpe_model.cc + sentencepiece_processor.cc).
 *
 * Loading: the ModelProto is read directly (spm_proto.c-free: a small
 * bounds-checked protobuf walker below) — pieces keep explicit lengths
 * (InternLM2 has a piece that is one NUL byte). llama2.c tokenizer.bin and
 * GGUF "llama" vocabularies are mapped onto the same in-memory model.
 *
 * Encoding one span (no special tokens in it):
 *   1. normalize (identity normalizer only): invalid UTF-8 bytes become
 *      U+FFFD one byte at a time (SentencePiece's DecodeUTF8 rules), optional
 *      removal of leading/trailing/repeated spaces, optional dummy prefix,
 *      ' ' -> U+2581; user-defined pieces pass through untouched;
 *   2. split into symbols: a user-defined piece (longest match, frozen) or
 *      one UTF-8 character;
 *   3. BPE: a binary heap of candidate adjacent pairs whose concatenation is
 *      a NORMAL/USER_DEFINED/UNUSED piece, ordered by score desc then left
 *      position asc; stale entries (a side emptied or grown) are skipped when
 *      popped, exactly as bpe_model.cc does — O(n log n), no rescans;
 *   4. output: UNUSED pieces are re-segmented into the pair that formed them,
 *      unknown symbols fall back to <0xXX> byte pieces (or unk).
 * All scratch memory is per call (thread-safe; a pu_tok is immutable).
 *
 * Decoding follows SentencePieceProcessor::Decode: control pieces render as
 * nothing, unk as the unk surface, consecutive byte pieces are joined and
 * invalid UTF-8 in them becomes U+FFFD per byte, U+2581 -> ' ', and the first
 * piece loses one leading U+2581 when add_dummy_prefix (or
 * remove_extra_whitespaces) is set.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

#define SPM_SPACE     "\xE2\x96\x81" /* U+2581 */
#define SPM_SPACE_LEN 3

/* merge table entry: the pair of symbol ids (left, right) whose
 * concatenation is the mergeable piece `id` */
typedef struct {
    uint64_t key; /* ((uint64)left << 32 | right) + 1; 0 = empty */
    int32_t id;
    float score;
} spm_pent;

typedef struct spm_impl {
    pu_tok_spm_cfg cfg;
    int32_t byte_ids[256]; /* id of <0xXX>, -1 if missing */
    int32_t *user_ids;     /* USER_DEFINED pieces, by first byte then length desc */
    int n_user;
    uint32_t user_start[257]; /* user_ids[user_start[c] .. user_start[c+1]) start with byte c */
    uint8_t user_first[32];
    uint32_t max_piece_len;
    bool has_unused;
    bool has_dups; /* some piece text occurs twice (then PieceToId order matters) */
    char *unk_surface;
    size_t unk_surface_len;
    /* fast paths, built at init from the vocabulary (exact, see spm_build_tables) */
    int32_t *cp_id;  /* (0x10000) id of the piece that is exactly this BMP character, -1 */
    spm_pent *pairs; /* merge table, open addressing */
    uint64_t pair_mask;
    uint64_t *adj; /* set of (id, id) of characters adjacent inside some mergeable piece */
    uint64_t adj_mask;
    /* the tables above are built on the first encode (decode-only users skip
     * the cost); double-checked under `mu` so concurrent encoders are safe */
    atomic_int tables_ready;
    pthread_mutex_t mu;
} spm_impl;

/* ------------------------------------------------------------------------ */
/* UTF-8 exactly as sentencepiece's string_util::DecodeUTF8 /               */
/* IsValidDecodeUTF8: returns the length of a valid char at p, 0 if invalid */

static inline int sp_valid_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        uint32_t cp = ((c & 0x1Fu) << 6) | (p[1] & 0x3Fu);
        if ((p[1] & 0xC0) == 0x80 && cp >= 0x80)
            return 2;
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        uint32_t cp = ((c & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
        if ((p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 && cp >= 0x800 &&
            (cp < 0xD800 || cp >= 0xE000))
            return 3;
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        uint32_t cp =
            ((c & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
        if ((p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 &&
            cp >= 0x10000 && cp <= 0x10FFFF)
            return 4;
    }
    return 0;
}

/* sentencepiece's OneCharLen (no validation; used after normalization) */
static inline int sp_one_char_len(unsigned char c) {
    static const uint8_t tab[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return tab[c >> 4];
}

/* Longest USER_DEFINED piece at s (length), or 0. */
static size_t user_match(const pu_tok *t, const spm_impl *m, const char *s, size_t n) {
    uint8_t c = (uint8_t)s[0];
    if (!(m->user_first[c >> 3] & (1u << (c & 7))))
        return 0;
    for (uint32_t k = m->user_start[c]; k < m->user_start[c + 1]; k++) {
        int32_t id = m->user_ids[k];
        size_t l = t->lens[id];
        if (l <= n && memcmp(t->pieces[id], s, l) == 0)
            return l;
    }
    return 0;
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 31;
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return x;
}

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static inline const spm_pent *pair_find(const spm_impl *m, int32_t a, int32_t b) {
    uint64_t k = pair_key(a, b), h = mix64(k) & m->pair_mask;
    for (;;) {
        const spm_pent *e = &m->pairs[h];
        if (e->key == k)
            return e;
        if (e->key == 0)
            return NULL;
        h = (h + 1) & m->pair_mask;
    }
}

static inline bool adj_has(const spm_impl *m, int32_t a, int32_t b) {
    uint64_t k = pair_key(a, b), h = mix64(k) & m->adj_mask;
    for (;;) {
        uint64_t e = m->adj[h];
        if (e == k)
            return true;
        if (e == 0)
            return false;
        h = (h + 1) & m->adj_mask;
    }
}

/* id of the symbol s[0..len) as the piece map gives it (-1 = not a piece) */
static inline int32_t sym_id(const pu_tok *t, const spm_impl *m, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    if (len == 1 && u[0] < 0x80)
        return m->cp_id[u[0]];
    if (len == 2 && (u[0] & 0xE0) == 0xC0)
        return m->cp_id[((u[0] & 0x1Fu) << 6) | (u[1] & 0x3Fu)];
    if (len == 3 && (u[0] & 0xF0) == 0xE0)
        return m->cp_id[((u[0] & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu)];
    return pu_tok_piece_id_(t, s, len);
}

/* ------------------------------------------------------------------------ */
/* encode                                                                   */

typedef struct {
    uint32_t start, len; /* bytes in the normalized buffer; len 0 = merged away */
    int32_t prev, next;
    int32_t id; /* piece id of the symbol's bytes, -1 if not a piece */
} spm_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
    int32_t id; /* the merged piece */
} spm_pair;

/* heap order: higher score first, then smaller left */
static inline bool pair_before(const spm_pair *a, const spm_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    spm_pair *v;
    size_t n, cap;
} spm_heap;

static void heap_push(spm_heap *h, spm_pair p) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->v = pu_realloc(h->v, h->cap * sizeof(spm_pair));
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = p;
}

static spm_pair heap_pop(spm_heap *h) {
    spm_pair top = h->v[0];
    spm_pair last = h->v[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        size_t r = l + 1, c = (r < n && pair_before(&h->v[r], &h->v[l])) ? r : l;
        if (!pair_before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (n)
        h->v[i] = last;
    return top;
}

typedef struct {
    uint32_t start, left_len, right_len;
} spm_rev;

typedef struct {
    const pu_tok *t;
    const spm_impl *m;
    const char *norm;
    spm_sym *sym;
    uint8_t *frozen;
    spm_heap heap;
    spm_rev *rev;
    size_t n_rev, cap_rev;
} spm_ctx;

static inline bool mergeable_attr(uint8_t a) {
    return a == PU_TOK_ATTR_NORMAL || a == PU_TOK_ATTR_USER_DEFINED || a == PU_TOK_ATTR_UNUSED;
}

static void maybe_add_pair(spm_ctx *c, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || c->frozen[left] || c->frozen[right])
        return;
    const spm_sym *L = &c->sym[left], *R = &c->sym[right];
    uint32_t size = L->len + R->len;
    int32_t id;
    float score;
    if (L->id >= 0 && R->id >= 0) {
        /* both sides are pieces: the merge table answers exactly */
        const spm_pent *e = pair_find(c->m, L->id, R->id);
        if (!e)
            return;
        id = e->id;
        score = e->score;
    } else {
        /* a side that is not a piece (a character outside the vocabulary) */
        if (size > c->m->max_piece_len)
            return;
        id = pu_tok_piece_id_(c->t, c->norm + L->start, size);
        if (id < 0 || !mergeable_attr(c->t->attrs[id]))
            return;
        score = c->t->scores ? c->t->scores[id] : 0.0f;
    }
    spm_pair p = {score, left, right, size, id};
    heap_push(&c->heap, p);
    if (c->t->attrs[id] == PU_TOK_ATTR_UNUSED) {
        if (c->n_rev == c->cap_rev) {
            c->cap_rev = c->cap_rev ? c->cap_rev * 2 : 16;
            c->rev = pu_realloc(c->rev, c->cap_rev * sizeof(spm_rev));
        }
        c->rev[c->n_rev++] = (spm_rev){c->sym[left].start, c->sym[left].len, c->sym[right].len};
    }
}

static void push_out(int32_t **ids, int64_t *n, int64_t *cap, int32_t id) {
    if (*n >= *cap) {
        *cap = *cap < 64 ? 64 : *cap * 2;
        *ids = pu_realloc(*ids, (size_t)*cap * sizeof(int32_t));
    }
    (*ids)[(*n)++] = id;
}

/* Lookup as ModelInterface::PieceToId: any piece, else unk (-1 here). */
static void emit_piece(spm_ctx *c, const char *s, size_t len, int depth, int32_t **ids, int64_t *n,
                       int64_t *cap) {
    const pu_tok *t = c->t;
    int32_t id = pu_tok_piece_id_(t, s, len);
    if (id >= 0 && t->attrs[id] == PU_TOK_ATTR_UNUSED && depth < 64) {
        /* resegment: the latest recorded pair that formed this piece */
        for (size_t k = c->n_rev; k-- > 0;) {
            const spm_rev *r = &c->rev[k];
            if (r->left_len + r->right_len == len && memcmp(c->norm + r->start, s, len) == 0) {
                emit_piece(c, s, r->left_len, depth + 1, ids, n, cap);
                emit_piece(c, s + r->left_len, r->right_len, depth + 1, ids, n, cap);
                return;
            }
        }
    }
    if (id >= 0 && t->attrs[id] != PU_TOK_ATTR_UNKNOWN) {
        push_out(ids, n, cap, id);
        return;
    }
    if (c->m->cfg.byte_fallback) {
        for (size_t k = 0; k < len; k++) {
            int32_t b = c->m->byte_ids[(uint8_t)s[k]];
            push_out(ids, n, cap, b >= 0 ? b : t->unk);
        }
    } else {
        push_out(ids, n, cap, t->unk);
    }
}

/* Normalizer::Normalize for the identity normalizer. Returns owned buffer. */
static char *spm_normalize(const pu_tok *t, const spm_impl *m, const char *in, size_t len,
                           size_t *out_len) {
    const pu_tok_spm_cfg *cfg = &m->cfg;
    size_t cap = len * 3 + SPM_SPACE_LEN + 16;
    char *o = pu_malloc(cap);
    size_t n = 0, i = 0;
    const unsigned char *u = (const unsigned char *)in;
    if (cfg->remove_extra_whitespaces)
        while (i < len && in[i] == ' ' && !user_match(t, m, in + i, len - i))
            i++;
    if (i == len) {
        *out_len = 0;
        return o;
    }
    if (!cfg->treat_whitespace_as_suffix && cfg->add_dummy_prefix) {
        if (cfg->escape_whitespaces) {
            memcpy(o, SPM_SPACE, SPM_SPACE_LEN);
            n = SPM_SPACE_LEN;
        } else {
            o[n++] = ' ';
        }
    }
    bool prev_space = cfg->remove_extra_whitespaces;
    while (i < len) {
        /* one NormalizePrefix step: user-defined piece, valid char, or U+FFFD */
        const char *sp;
        size_t sl, consumed;
        unsigned c = u[i];
        size_t ul = m->n_user ? user_match(t, m, in + i, len - i) : 0;
        if (ul) {
            sp = in + i;
            sl = consumed = ul;
        } else if (c < 0x80) {
            sp = in + i;
            sl = consumed = 1;
        } else {
            int vl = sp_valid_len(u + i, len - i);
            if (vl) {
                sp = in + i;
                sl = consumed = (size_t)vl;
            } else {
                sp = "\xEF\xBF\xBD";
                sl = 3;
                consumed = 1;
            }
        }
        if (prev_space)
            while (sl > 0 && sp[0] == ' ') {
                sp++;
                sl--;
            }
        if (sl > 0) {
            for (size_t k = 0; k < sl; k++) {
                if (cfg->escape_whitespaces && sp[k] == ' ') {
                    memcpy(o + n, SPM_SPACE, SPM_SPACE_LEN);
                    n += SPM_SPACE_LEN;
                } else {
                    o[n++] = sp[k];
                }
            }
            prev_space = sp[sl - 1] == ' ';
        }
        i += consumed;
        if (!cfg->remove_extra_whitespaces)
            prev_space = false;
    }
    if (cfg->treat_whitespace_as_suffix && cfg->add_dummy_prefix) {
        if (cfg->escape_whitespaces) {
            memcpy(o + n, SPM_SPACE, SPM_SPACE_LEN);
            n += SPM_SPACE_LEN;
        } else {
            o[n++] = ' ';
        }
    }
    if (cfg->remove_extra_whitespaces) {
        const char *ws = cfg->escape_whitespaces ? SPM_SPACE : " ";
        size_t wl = cfg->escape_whitespaces ? SPM_SPACE_LEN : 1;
        while (n >= wl && memcmp(o + n - wl, ws, wl) == 0)
            n -= wl;
    }
    *out_len = n;
    return o;
}

static void spm_build_tables(const pu_tok *t, spm_impl *m);

static void spm_ensure_tables(const pu_tok *t) {
    spm_impl *m = t->impl; /* lazily filled cache; the tokenizer stays logically immutable */
    if (atomic_load_explicit(&m->tables_ready, memory_order_acquire))
        return;
    pthread_mutex_lock(&m->mu);
    if (!atomic_load_explicit(&m->tables_ready, memory_order_relaxed)) {
        spm_build_tables(t, m);
        atomic_store_explicit(&m->tables_ready, 1, memory_order_release);
    }
    pthread_mutex_unlock(&m->mu);
}

static pu_status spm_encode(const pu_tok *t, const char *text, size_t len, int32_t **ids,
                            int64_t *n, int64_t *cap) {
    spm_ensure_tables(t);
    const spm_impl *m = t->impl;
    size_t nl;
    char *norm = spm_normalize(t, m, text, len, &nl);
    if (nl == 0) {
        pu_free(norm);
        return PU_OK;
    }
    if (nl > INT32_MAX / 2) {
        pu_free(norm);
        return pu_err_set(PU_ERR_RANGE, "%s: text of %zu bytes is too long to encode at once",
                          t->source ? t->source : "tokenizer", len);
    }
    spm_ctx c = {.t = t, .m = m, .norm = norm};
    c.sym = pu_malloc(nl * sizeof(spm_sym));
    c.frozen = pu_calloc(nl, 1);
    int32_t ns = 0;
    for (size_t i = 0; i < nl;) {
        size_t l = m->n_user ? user_match(t, m, norm + i, nl - i) : 0;
        int32_t id;
        if (l) {
            c.frozen[ns] = 1;
            id = pu_tok_piece_id_(t, norm + i, l);
        } else {
            l = (size_t)sp_one_char_len((unsigned char)norm[i]);
            if (l > nl - i)
                l = nl - i;
            id = sym_id(t, m, norm + i, l);
        }
        c.sym[ns] = (spm_sym){(uint32_t)i, (uint32_t)l, ns - 1, ns + 1, id};
        ns++;
        i += l;
    }
    /* Process independent chunks: a boundary no mergeable piece can span
     * (the two characters never occur adjacently inside one) separates runs
     * whose merges cannot interact, so the result equals one global run
     * while the heap stays small. Models with UNUSED pieces resegment by a
     * text-global table, so they run as one chunk. */
    for (int32_t lo = 0; lo < ns;) {
        int32_t hi = lo + 1;
        if (!m->has_unused) {
            while (hi < ns) {
                const spm_sym *a = &c.sym[hi - 1], *b = &c.sym[hi];
                bool safe = c.frozen[hi - 1] || c.frozen[hi] ||
                            (a->id >= 0 && b->id >= 0 && !adj_has(m, a->id, b->id));
                if (safe)
                    break;
                hi++;
            }
        } else {
            hi = ns;
        }
        c.sym[lo].prev = -1;
        c.sym[hi - 1].next = -1;
        c.heap.n = 0;
        for (int32_t i = lo + 1; i < hi; i++)
            maybe_add_pair(&c, i - 1, i);
        while (c.heap.n > 0) {
            spm_pair top = heap_pop(&c.heap);
            spm_sym *L = &c.sym[top.left], *R = &c.sym[top.right];
            if (L->len == 0 || R->len == 0 || L->len + R->len != top.size)
                continue;
            L->len += R->len;
            L->id = top.id;
            L->next = R->next;
            if (R->next >= 0)
                c.sym[R->next].prev = top.left;
            R->len = 0;
            maybe_add_pair(&c, L->prev, top.left);
            maybe_add_pair(&c, top.left, L->next);
        }
        for (int32_t i = lo; i >= 0; i = c.sym[i].next) {
            const spm_sym *y = &c.sym[i];
            uint8_t a = y->id >= 0 ? t->attrs[y->id] : 0;
            if (y->id >= 0 && a != PU_TOK_ATTR_UNUSED && a != PU_TOK_ATTR_UNKNOWN &&
                (!m->has_dups || y->id == pu_tok_piece_id_(t, norm + y->start, y->len)))
                push_out(ids, n, cap, y->id);
            else
                emit_piece(&c, norm + y->start, y->len, 0, ids, n, cap);
        }
        lo = hi;
    }
    pu_free(c.heap.v);
    pu_free(c.rev);
    pu_free(c.frozen);
    pu_free(c.sym);
    pu_free(norm);
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* decode                                                                   */

static void append_bytes_sanitized(pu_str *out, const char *b, size_t n) {
    const unsigned char *u = (const unsigned char *)b;
    for (size_t i = 0; i < n;) {
        int l = sp_valid_len(u + i, n - i);
        if (l == 0) {
            pu_str_append(out, "\xEF\xBF\xBD", 3);
            i++;
        } else {
            pu_str_append(out, b + i, (size_t)l);
            i += (size_t)l;
        }
    }
}

static int byte_of_piece(const char *p, size_t n) {
    if (n != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>')
        return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char ch = p[k];
        int d = (ch >= '0' && ch <= '9')   ? ch - '0'
                : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10
                : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                                           : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* SentencePiece's decode without the UTF-8 repair: byte pieces as raw
 * bytes, U+2581 -> ' ', control pieces as nothing, unk as its surface, one
 * leading U+2581 stripped from the first non-control piece when
 * add_dummy_prefix (or remove_extra_whitespaces) is set. */
static pu_status spm_decode_raw(const pu_tok *t, const int32_t *ids, int64_t n, bool at_start,
                                pu_str *out) {
    const spm_impl *m = t->impl;
    bool first = at_start;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab)
            return pu_err_set(PU_ERR_RANGE, "%s: token id %d: expected 0..%lld",
                              t->source ? t->source : "tokenizer", id, (long long)t->n_vocab - 1);
        uint8_t a = t->attrs[id];
        if (a == PU_TOK_ATTR_BYTE) {
            int b = byte_of_piece(t->pieces[id], t->lens[id]);
            if (b >= 0) {
                pu_str_putc(out, (char)b);
                first = false;
                continue;
            }
        }
        if (a == PU_TOK_ATTR_CONTROL)
            continue;
        if (a == PU_TOK_ATTR_UNKNOWN) {
            pu_str_append(out, m->unk_surface, m->unk_surface_len);
            first = false;
            continue;
        }
        const char *p = t->pieces[id];
        size_t pl = t->lens[id];
        if (first && (m->cfg.add_dummy_prefix || m->cfg.remove_extra_whitespaces) &&
            pl >= SPM_SPACE_LEN && memcmp(p, SPM_SPACE, SPM_SPACE_LEN) == 0) {
            p += SPM_SPACE_LEN;
            pl -= SPM_SPACE_LEN;
        }
        first = false;
        size_t k0 = 0;
        for (size_t k = 0; k + SPM_SPACE_LEN <= pl;) {
            if (memcmp(p + k, SPM_SPACE, SPM_SPACE_LEN) == 0) {
                pu_str_append(out, p + k0, k - k0);
                pu_str_putc(out, ' ');
                k += SPM_SPACE_LEN;
                k0 = k;
            } else {
                k++;
            }
        }
        pu_str_append(out, p + k0, pl - k0);
    }
    return PU_OK;
}

/* SentencePiece replaces each byte of an invalid UTF-8 sequence in a run of
 * byte pieces with U+FFFD. Vocabulary pieces are valid UTF-8 in real models,
 * so repairing the whole output at once gives the same text (and also keeps
 * a malformed vocabulary's output valid, identical to the streaming path). */
static pu_status spm_decode(const pu_tok *t, const int32_t *ids, int64_t n, bool at_start,
                            pu_str *out) {
    pu_str raw = {0};
    pu_status st = spm_decode_raw(t, ids, n, at_start, &raw);
    if (st == PU_OK && raw.len)
        append_bytes_sanitized(out, raw.p, raw.len);
    pu_str_free(&raw);
    return st;
}

static void spm_destroy(pu_tok *t) {
    spm_impl *m = t->impl;
    if (!m)
        return;
    pu_free(m->user_ids);
    pu_free(m->unk_surface);
    pu_free(m->cp_id);
    pu_free(m->pairs);
    pu_free(m->adj);
    pthread_mutex_destroy(&m->mu);
    pu_free(m);
    t->impl = NULL;
}

static void spm_describe(const pu_tok *t, pu_str *out) {
    const spm_impl *m = t->impl;
    const pu_tok_spm_cfg *c = &m->cfg;
    pu_str_appendf(
        out,
        "normalizer: identity\nadd_dummy_prefix: %s\nremove_extra_whitespaces: %s\n"
        "escape_whitespaces: %s\ntreat_whitespace_as_suffix: %s\nbyte_fallback: %s\n"
        "split_digits: %s\nuser_defined_pieces: %d\n",
        c->add_dummy_prefix ? "true" : "false", c->remove_extra_whitespaces ? "true" : "false",
        c->escape_whitespaces ? "true" : "false", c->treat_whitespace_as_suffix ? "true" : "false",
        c->byte_fallback ? "true" : "false", c->split_digits ? "true" : "false", m->n_user);
}

static const pu_tok_backend spm_backend = {spm_encode, spm_decode, spm_destroy};

bool pu_tok_get_spm_flags(const pu_tok *t, pu_tok_spm_flags *out) {
    memset(out, 0, sizeof *out);
    if (!t || t->type != PU_TOK_SPM || t->be != &spm_backend || !t->impl)
        return false;
    const pu_tok_spm_cfg *c = &((const spm_impl *)t->impl)->cfg;
    out->add_dummy_prefix = c->add_dummy_prefix;
    out->remove_extra_whitespaces = c->remove_extra_whitespaces;
    out->escape_whitespaces = c->escape_whitespaces;
    out->treat_whitespace_as_suffix = c->treat_whitespace_as_suffix;
    out->byte_fallback = c->byte_fallback;
    return true;
}

typedef struct {
    uint32_t len;
    int32_t id;
    uint8_t first;
} len_id;

static void table_put_adj(spm_impl *m, uint64_t k) {
    uint64_t h = mix64(k) & m->adj_mask;
    while (m->adj[h] != 0 && m->adj[h] != k)
        h = (h + 1) & m->adj_mask;
    m->adj[h] = k;
}

/* Build the character -> id array, the merge table (every split of every
 * mergeable piece into two pieces, at character boundaries, as symbols are
 * always whole characters) and the adjacency set used for chunking. */
static void spm_build_tables(const pu_tok *t, spm_impl *m) {
    m->cp_id = pu_malloc(0x10000 * sizeof(int32_t));
    for (int k = 0; k < 0x10000; k++)
        m->cp_id[k] = -1;
    int64_t n_split = 0;
    for (int64_t i = 0; i < t->n_vocab; i++) {
        const unsigned char *p = (const unsigned char *)t->pieces[i];
        size_t l = t->lens[i];
        if (l == 0)
            continue;
        if (pu_tok_piece_id_(t, (const char *)p, l) != i)
            m->has_dups = true;
        int cl = sp_one_char_len(p[0]);
        if ((size_t)cl == l) {
            uint32_t cp = 0x10000;
            if (l == 1 && p[0] < 0x80)
                cp = p[0];
            else if (l == 2 && (p[0] & 0xE0) == 0xC0)
                cp = ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
            else if (l == 3 && (p[0] & 0xF0) == 0xE0)
                cp = ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
            /* only canonical encodings, so sym_id's decoding is exact */
            if (cp < 0x10000 && m->cp_id[cp] < 0 && sp_valid_len(p, l) == (int)l)
                m->cp_id[cp] = pu_tok_piece_id_(t, (const char *)p, l);
        }
        if (mergeable_attr(t->attrs[i]))
            for (size_t q = (size_t)cl; q < l; q += (size_t)sp_one_char_len(p[q]))
                n_split++; /* one entry per inner character boundary */
    }
    uint64_t cap = 1024;
    while (cap < (uint64_t)n_split * 2)
        cap <<= 1;
    m->pairs = pu_calloc(cap, sizeof(spm_pent));
    m->pair_mask = cap - 1;
    m->adj = pu_calloc(cap, sizeof(uint64_t));
    m->adj_mask = cap - 1;
    for (int64_t i = 0; i < t->n_vocab; i++) {
        if (!mergeable_attr(t->attrs[i]) || t->lens[i] < 2)
            continue;
        const char *p = t->pieces[i];
        size_t l = t->lens[i];
        int32_t prev_char = -2;
        for (size_t q = 0; q < l;) {
            size_t cl = (size_t)sp_one_char_len((unsigned char)p[q]);
            if (cl > l - q)
                cl = l - q;
            int32_t ch = sym_id(t, m, p + q, cl);
            if (prev_char >= 0 && ch >= 0)
                table_put_adj(m, pair_key(prev_char, ch));
            prev_char = ch < 0 ? -1 : ch;
            q += cl;
            if (q >= l)
                break;
            int32_t a = pu_tok_piece_id_(t, p, q), b = pu_tok_piece_id_(t, p + q, l - q);
            if (a < 0 || b < 0)
                continue;
            uint64_t k = pair_key(a, b), h = mix64(k) & m->pair_mask;
            while (m->pairs[h].key != 0 && m->pairs[h].key != k)
                h = (h + 1) & m->pair_mask;
            if (m->pairs[h].key == 0) /* first mergeable piece with this text wins */
                m->pairs[h] = (spm_pent){k, (int32_t)i, t->scores ? t->scores[i] : 0.0f};
        }
    }
}

static int cmp_len_id(const void *a, const void *b) {
    const len_id *x = a, *y = b;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

/* The InternLM2 chat tokens stored as [UNUSED_TOKEN_141..146]. */
static void register_internlm2(pu_tok *t) {
    static const char *const names[6] = {"<|plugin|>",       "<|interpreter|>", "<|action_end|>",
                                         "<|action_start|>", "<|im_end|>",      "<|im_start|>"};
    if (t->n_vocab < 92544)
        return;
    for (int k = 0; k < 6; k++) {
        char want[32];
        snprintf(want, sizeof(want), "[UNUSED_TOKEN_%d]", 141 + k);
        int32_t id = 92538 + k;
        if (t->lens[id] != strlen(want) || memcmp(t->pieces[id], want, t->lens[id]) != 0)
            return;
    }
    for (int k = 0; k < 6; k++)
        pu_tok_add_special_(t, names[k], strlen(names[k]), 92538 + k);
}

pu_status pu_tok_spm_init_(pu_tok *t, const pu_tok_spm_cfg *cfg) {
    const char *src = t->source ? t->source : "tokenizer";
    if (cfg->model_type != 2)
        return pu_err_set(PU_ERR_UNSUPPORTED,
                          "%s: trainer_spec.model_type: expected 2 (BPE), found %d%s", src,
                          cfg->model_type, cfg->model_type == 1 ? " (Unigram)" : "");
    spm_impl *m = pu_calloc(1, sizeof(*m));
    m->cfg = *cfg;
    atomic_init(&m->tables_ready, 0);
    pthread_mutex_init(&m->mu, NULL);
    for (int b = 0; b < 256; b++)
        m->byte_ids[b] = -1;
    int n_user = 0;
    for (int64_t i = 0; i < t->n_vocab; i++) {
        if (!t->pieces[i])
            pu_tok_set_piece_(t, (int32_t)i, "", 0);
        uint8_t a = t->attrs[i];
        if (t->lens[i] > m->max_piece_len && mergeable_attr(a))
            m->max_piece_len = t->lens[i];
        if (a == PU_TOK_ATTR_BYTE) {
            int b = byte_of_piece(t->pieces[i], t->lens[i]);
            if (b < 0) {
                pthread_mutex_destroy(&m->mu);
                pu_free(m);
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: piece %lld has type BYTE: expected text <0xXX>, found "
                                  "\"%.*s\"",
                                  src, (long long)i, (int)(t->lens[i] > 32 ? 32 : t->lens[i]),
                                  t->pieces[i]);
            }
            if (m->byte_ids[b] < 0)
                m->byte_ids[b] = (int32_t)i;
        } else if (a == PU_TOK_ATTR_USER_DEFINED && t->lens[i] > 0) {
            n_user++;
        } else if (a == PU_TOK_ATTR_UNUSED) {
            m->has_unused = true;
        } else if (a == PU_TOK_ATTR_UNKNOWN && t->unk < 0) {
            t->unk = (int32_t)i;
        }
    }
    if (t->unk < 0) {
        pthread_mutex_destroy(&m->mu);
        pu_free(m);
        return pu_err_set(PU_ERR_FORMAT, "%s: no piece of type UNKNOWN: expected one (<unk>)", src);
    }
    if (n_user) {
        len_id *li = pu_malloc((size_t)n_user * sizeof(len_id));
        int q = 0;
        for (int64_t i = 0; i < t->n_vocab; i++)
            if (t->attrs[i] == PU_TOK_ATTR_USER_DEFINED && t->lens[i] > 0)
                li[q++] = (len_id){t->lens[i], (int32_t)i, (uint8_t)t->pieces[i][0]};
        qsort(li, (size_t)q, sizeof(len_id), cmp_len_id);
        m->user_ids = pu_malloc((size_t)q * sizeof(int32_t));
        for (int k = 0; k < q; k++)
            m->user_ids[k] = li[k].id;
        m->n_user = q;
        pu_free(li);
        for (int k = 0; k < m->n_user; k++) {
            uint8_t c = (uint8_t)t->pieces[m->user_ids[k]][0];
            m->user_first[c >> 3] |= (uint8_t)(1u << (c & 7));
        }
    }
    for (int c = 0, k = 0; c <= 256; c++) {
        while (k < m->n_user && (uint8_t)t->pieces[m->user_ids[k]][0] < c)
            k++;
        m->user_start[c] = (uint32_t)k;
    }
    if (!m->unk_surface) {
        m->unk_surface = pu_strdup(" \xE2\x81\x87 ");
        m->unk_surface_len = strlen(m->unk_surface);
    }
    t->impl = m;
    t->be = &spm_backend;
    t->describe = spm_describe;
    t->decode_raw = spm_decode_raw;
    /* control / unknown pieces are parsed as whole strings when parse_special
     * (as HF's slow tokenizer and llama.cpp do) */
    for (int64_t i = 0; i < t->n_vocab; i++)
        if ((t->attrs[i] == PU_TOK_ATTR_CONTROL || t->attrs[i] == PU_TOK_ATTR_UNKNOWN) &&
            t->lens[i] > 0)
            pu_tok_add_special_(t, t->pieces[i], t->lens[i], (int32_t)i);
    register_internlm2(t);
    return pu_tok_finalize_(t);
}

static void spm_set_unk_surface(pu_tok *t, const char *s, size_t n) {
    spm_impl *m = t->impl;
    pu_free(m->unk_surface);
    m->unk_surface = pu_malloc(n + 1); /* may contain NUL: no strndup */
    memcpy(m->unk_surface, s, n);
    m->unk_surface[n] = 0;
    m->unk_surface_len = n;
}

/* ------------------------------------------------------------------------ */
/* protobuf walker                                                          */

typedef struct {
    const uint8_t *p, *end;
} pb_buf;

static bool pb_varint(pb_buf *b, uint64_t *v) {
    uint64_t r = 0;
    for (int s = 0; s < 64; s += 7) {
        if (b->p >= b->end)
            return false;
        uint8_t c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << s;
        if (c < 0x80) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* Next field: tag, wire type; LEN fields set *sub; varint/fixed set *v. */
static bool pb_field(pb_buf *b, uint32_t *field, int *wt, uint64_t *v, pb_buf *sub) {
    uint64_t key;
    if (!pb_varint(b, &key))
        return false;
    *field = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0: return pb_varint(b, v);
    case 1:
        if (b->end - b->p < 8)
            return false;
        memcpy(v, b->p, 8);
        b->p += 8;
        return true;
    case 5: {
        if (b->end - b->p < 4)
            return false;
        uint32_t x;
        memcpy(&x, b->p, 4);
        *v = x;
        b->p += 4;
        return true;
    }
    case 2: {
        uint64_t n;
        if (!pb_varint(b, &n) || n > (uint64_t)(b->end - b->p))
            return false;
        sub->p = b->p;
        sub->end = b->p + n;
        b->p += n;
        return true;
    }
    default: return false;
    }
}

static float pb_float(uint64_t v) {
    uint32_t x = (uint32_t)v;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

pu_status pu_tok_load_spm_buf_(const void *buf, size_t len, const char *what, pu_tok **out) {
    *out = NULL;
    pb_buf top = {buf, (const uint8_t *)buf + len};
    int64_t n_pieces = 0;
    pb_buf trainer = {0}, normalizer = {0};
    bool have_trainer = false, have_norm = false;
    /* pass 1: count pieces, find specs */
    {
        pb_buf b = top;
        while (b.p < b.end) {
            uint32_t f;
            int wt;
            uint64_t v;
            pb_buf sub = {0};
            const uint8_t *at = b.p;
            if (!pb_field(&b, &f, &wt, &v, &sub))
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: not a SentencePiece model: malformed protobuf at byte %zu",
                                  what, (size_t)(at - (const uint8_t *)buf));
            if (f == 1 && wt == 2)
                n_pieces++;
            else if (f == 2 && wt == 2) {
                trainer = sub;
                have_trainer = true;
            } else if (f == 3 && wt == 2) {
                normalizer = sub;
                have_norm = true;
            } else if (f == 0 || f > 5)
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s: not a SentencePiece model: unexpected field %u at byte %zu",
                                  what, f, (size_t)(at - (const uint8_t *)buf));
        }
    }
    if (n_pieces == 0)
        return pu_err_set(PU_ERR_FORMAT, "%s: SentencePiece model: expected pieces, found none",
                          what);
    if (n_pieces > INT32_MAX / 4)
        return pu_err_set(PU_ERR_FORMAT, "%s: SentencePiece model: %lld pieces is too many", what,
                          (long long)n_pieces);
    pu_tok_spm_cfg cfg = {.add_dummy_prefix = true,
                          .remove_extra_whitespaces = true,
                          .escape_whitespaces = true,
                          .model_type = 1};
    const char *unk_surface = NULL;
    size_t unk_surface_len = 0;
    if (have_trainer) {
        pb_buf b = trainer;
        while (b.p < b.end) {
            uint32_t f;
            int wt;
            uint64_t v = 0;
            pb_buf sub = {0};
            if (!pb_field(&b, &f, &wt, &v, &sub))
                return pu_err_set(PU_ERR_FORMAT, "%s: trainer_spec: malformed protobuf", what);
            if (wt == 0) {
                if (f == 3)
                    cfg.model_type = (int)v;
                else if (f == 24)
                    cfg.treat_whitespace_as_suffix = v != 0;
                else if (f == 25)
                    cfg.split_digits = v != 0;
                else if (f == 35)
                    cfg.byte_fallback = v != 0;
            } else if (wt == 2 && f == 44) {
                unk_surface = (const char *)sub.p;
                unk_surface_len = (size_t)(sub.end - sub.p);
            }
        }
    }
    const char *norm_name = "";
    size_t norm_name_len = 0;
    size_t charsmap_len = 0;
    if (have_norm) {
        pb_buf b = normalizer;
        while (b.p < b.end) {
            uint32_t f;
            int wt;
            uint64_t v = 0;
            pb_buf sub = {0};
            if (!pb_field(&b, &f, &wt, &v, &sub))
                return pu_err_set(PU_ERR_FORMAT, "%s: normalizer_spec: malformed protobuf", what);
            if (wt == 2 && f == 1) {
                norm_name = (const char *)sub.p;
                norm_name_len = (size_t)(sub.end - sub.p);
            } else if (wt == 2 && f == 2)
                charsmap_len = (size_t)(sub.end - sub.p);
            else if (wt == 0 && f == 3)
                cfg.add_dummy_prefix = v != 0;
            else if (wt == 0 && f == 4)
                cfg.remove_extra_whitespaces = v != 0;
            else if (wt == 0 && f == 5)
                cfg.escape_whitespaces = v != 0;
        }
    }
    if (charsmap_len > 0)
        return pu_err_set(
            PU_ERR_UNSUPPORTED,
            "%s: normalizer_spec \"%.*s\" has a precompiled charsmap (%zu bytes): only "
            "the identity normalizer is supported",
            what, (int)(norm_name_len > 64 ? 64 : norm_name_len), norm_name, charsmap_len);
    pu_tok *t = pu_tok_alloc_(PU_TOK_SPM, n_pieces);
    t->scores = pu_calloc((size_t)n_pieces, sizeof(float));
    t->source = pu_strdup(what);
    int64_t k = 0;
    pb_buf b = top;
    while (b.p < b.end) {
        uint32_t f;
        int wt;
        uint64_t v;
        pb_buf sub = {0};
        pb_field(&b, &f, &wt, &v, &sub); /* validated in pass 1 */
        if (!(f == 1 && wt == 2))
            continue;
        const char *ptext = NULL;
        size_t plen = 0;
        bool have_text = false;
        int type = PU_TOK_ATTR_NORMAL;
        float score = 0;
        while (sub.p < sub.end) {
            uint32_t pf;
            int pwt;
            uint64_t pv = 0;
            pb_buf ps = {0};
            if (!pb_field(&sub, &pf, &pwt, &pv, &ps)) {
                pu_tok_destroy(t);
                return pu_err_set(PU_ERR_FORMAT, "%s: piece %lld: malformed protobuf", what,
                                  (long long)k);
            }
            if (pf == 1 && pwt == 2) {
                ptext = (const char *)ps.p;
                plen = (size_t)(ps.end - ps.p);
                have_text = true;
            } else if (pf == 2 && pwt == 5)
                score = pb_float(pv);
            else if (pf == 3 && pwt == 0)
                type = (int)pv;
        }
        if (!have_text) {
            pu_tok_destroy(t);
            return pu_err_set(PU_ERR_FORMAT, "%s: piece %lld: expected a piece string, found none",
                              what, (long long)k);
        }
        if (type < PU_TOK_ATTR_NORMAL || type > PU_TOK_ATTR_BYTE) {
            pu_tok_destroy(t);
            return pu_err_set(PU_ERR_FORMAT, "%s: piece %lld: type: expected 1..6, found %d", what,
                              (long long)k, type);
        }
        pu_tok_set_piece_(t, (int32_t)k, ptext, plen);
        t->scores[k] = score;
        t->attrs[k] = (uint8_t)type;
        k++;
    }
    /* trainer_spec ids (defaults unk 0, bos 1, eos 2, pad -1), checked against piece types */
    int64_t ids[4] = {0, 1, 2, -1};
    if (have_trainer) {
        pb_buf tb = trainer;
        while (tb.p < tb.end) {
            uint32_t f;
            int wt;
            uint64_t v = 0;
            pb_buf sub = {0};
            pb_field(&tb, &f, &wt, &v, &sub);
            if (wt == 0 && f >= 40 && f <= 43)
                ids[f - 40] = (int64_t)(int32_t)(uint32_t)v;
        }
    }
    int32_t *dst[4] = {&t->unk, &t->bos, &t->eos, &t->pad};
    for (int q = 0; q < 4; q++)
        *dst[q] = (ids[q] >= 0 && ids[q] < n_pieces) ? (int32_t)ids[q] : -1;
    if (t->unk >= 0 && t->attrs[t->unk] != PU_TOK_ATTR_UNKNOWN)
        t->unk = -1; /* found from the piece types in init */
    pu_status st = pu_tok_spm_init_(t, &cfg);
    if (st != PU_OK) {
        pu_tok_destroy(t);
        return st;
    }
    if (unk_surface)
        spm_set_unk_surface(t, unk_surface, unk_surface_len);
    *out = t;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* llama2.c tokenizer.bin: int32 max_token_length, then per token            */
/* {float score, int32 len, bytes}; ' ' stands for U+2581; BOS "\n<s>\n",     */
/* EOS "\n</s>\n".                                                           */

pu_status pu_tok_load_llama2c_(const char *path, pu_tok **out) {
    *out = NULL;
    char *data;
    size_t len;
    PU_TRY(pu_file_read_all(path, &data, &len));
    pu_status st = pu_tok_load_llama2c_buf_(data, len, path, out);
    pu_free(data);
    return st;
}

pu_status pu_tok_load_llama2c_buf_(const void *buf, size_t len, const char *path, pu_tok **out) {
    *out = NULL;
    const char *data = buf;
    pu_status st = PU_OK;
    int32_t maxlen;
    if (len < 4) {
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: llama2.c tokenizer.bin: expected a 4-byte header, found %zu bytes",
                          path, len);
    }
    memcpy(&maxlen, data, 4);
    if (maxlen <= 0 || maxlen > 4096) {
        return pu_err_set(
            PU_ERR_FORMAT,
            "%s: llama2.c tokenizer.bin: max_token_length: expected 1..4096, found %d", path,
            maxlen);
    }
    /* count records */
    int64_t n = 0;
    size_t off = 4;
    while (off < len) {
        int32_t l;
        if (len - off < 8) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: llama2.c tokenizer.bin: token %lld: truncated record at byte %zu",
                            path, (long long)n, off);
            break;
        }
        memcpy(&l, data + off + 4, 4);
        if (l < 0 || l > maxlen || (size_t)l > len - off - 8) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: llama2.c tokenizer.bin: token %lld: length: expected 0..%d within "
                            "the file, found %d",
                            path, (long long)n, maxlen, l);
            break;
        }
        off += 8 + (size_t)l;
        n++;
    }
    if (st == PU_OK && n < 3)
        st = pu_err_set(PU_ERR_FORMAT,
                        "%s: llama2.c tokenizer.bin: expected at least 3 tokens, found %lld", path,
                        (long long)n);
    if (st != PU_OK)
        return st;
    pu_tok *t = pu_tok_alloc_(PU_TOK_SPM, n);
    t->scores = pu_calloc((size_t)n, sizeof(float));
    t->source = pu_strdup(path);
    pu_str tmp = {0};
    off = 4;
    for (int64_t i = 0; i < n; i++) {
        float sc;
        int32_t l;
        memcpy(&sc, data + off, 4);
        memcpy(&l, data + off + 4, 4);
        const char *p = data + off + 8;
        off += 8 + (size_t)l;
        pu_str_clear(&tmp);
        for (int32_t q = 0; q < l; q++) {
            if (p[q] == ' ')
                pu_str_append(&tmp, SPM_SPACE, SPM_SPACE_LEN);
            else
                pu_str_putc(&tmp, p[q]);
        }
        t->scores[i] = sc;
        uint8_t a = PU_TOK_ATTR_NORMAL;
        const char *pp = tmp.p ? tmp.p : "";
        size_t pl = tmp.len;
        if (i == 0) {
            a = PU_TOK_ATTR_UNKNOWN;
        } else if (i == 1 || i == 2) {
            a = PU_TOK_ATTR_CONTROL;
            pp = i == 1 ? "<s>" : "</s>";
            pl = strlen(pp);
        } else if (byte_of_piece(pp, pl) >= 0) {
            a = PU_TOK_ATTR_BYTE;
        }
        pu_tok_set_piece_(t, (int32_t)i, pp, pl);
        t->attrs[i] = a;
    }
    pu_str_free(&tmp);
    t->unk = 0;
    t->bos = 1;
    t->eos = 2;
    bool has_bytes = false;
    for (int64_t i = 0; i < n; i++)
        has_bytes |= t->attrs[i] == PU_TOK_ATTR_BYTE;
    pu_tok_spm_cfg cfg = {.add_dummy_prefix = true,
                          .escape_whitespaces = true,
                          .byte_fallback = has_bytes,
                          .model_type = 2};
    st = pu_tok_spm_init_(t, &cfg);
    if (st != PU_OK) {
        pu_tok_destroy(t);
        return st;
    }
    t->add_bos_default = 1;
    *out = t;
    return PU_OK;
}

/* ------------------------------------------------------------------------ */
/* GGUF "llama" vocabulary                                                  */

pu_status pu_tok_load_spm_gguf_(const char *path, const pu_tok_gguf_vocab *v, pu_tok **out) {
    *out = NULL;
    if (v->n_tokens <= 0 || !v->tokens)
        return pu_err_set(PU_ERR_FORMAT, "%s: tokenizer.ggml.tokens: expected an array, found none",
                          path);
    pu_tok *t = pu_tok_alloc_(PU_TOK_SPM, v->n_tokens);
    t->scores = pu_calloc((size_t)v->n_tokens, sizeof(float));
    t->source = pu_strdup(path);
    bool has_bytes = false;
    for (int64_t i = 0; i < v->n_tokens; i++) {
        pu_tok_set_piece_(t, (int32_t)i, v->tokens[i], v->token_lens[i]);
        if (v->scores)
            t->scores[i] = v->scores[i];
        int ty = v->token_type ? v->token_type[i] : PU_TOK_ATTR_NORMAL;
        if (ty < PU_TOK_ATTR_NORMAL || ty > PU_TOK_ATTR_BYTE) {
            pu_tok_destroy(t);
            return pu_err_set(PU_ERR_FORMAT,
                              "%s: tokenizer.ggml.token_type[%lld]: expected 1..6, found %d", path,
                              (long long)i, ty);
        }
        t->attrs[i] = (uint8_t)ty;
        has_bytes |= ty == PU_TOK_ATTR_BYTE;
    }
    int32_t want[4] = {v->unk, v->bos, v->eos, v->pad};
    int32_t *dst[4] = {&t->unk, &t->bos, &t->eos, &t->pad};
    for (int q = 0; q < 4; q++)
        *dst[q] = (want[q] >= 0 && want[q] < v->n_tokens) ? want[q] : -1;
    if (t->unk >= 0 && t->attrs[t->unk] != PU_TOK_ATTR_UNKNOWN)
        t->unk = -1;
    /* absent keys: llama.cpp's defaults for an SPM vocabulary (space prefix on, no
     * whitespace merging) */
    pu_tok_spm_cfg cfg = {.add_dummy_prefix = v->add_space_prefix != 0,
                          .remove_extra_whitespaces = v->remove_extra_ws == 1,
                          .escape_whitespaces = true,
                          .byte_fallback = has_bytes,
                          .model_type = 2};
    pu_status st = pu_tok_spm_init_(t, &cfg);
    if (st != PU_OK) {
        pu_tok_destroy(t);
        return st;
    }
    t->add_bos_default = (int8_t)v->add_bos;
    t->add_eos_default = (int8_t)v->add_eos;
    *out = t;
    return PU_OK;
}
