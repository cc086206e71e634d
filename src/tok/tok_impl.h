/*
 * tok_impl.h — private layout of pu_tok shared by the generic layer
 * (tok.c: loading dispatch, special-token splitting, decode, streaming),
 * the SentencePiece backend (spm.c) and the byte-level BPE backend (bpe.c).
 *
 * Ownership contract (pu_tok_destroy): the backend's destroy() frees only
 * t->impl (and whatever hangs off it); the generic layer then frees every
 * common field below with pu_free: pieces[i], pieces, lens, scores, attrs,
 * specials[i].text, specials, map, special_bits, source, and t itself. Build a pu_tok with
 * pu_tok_alloc_(), fill pieces with pu_tok_set_piece_(), register added /
 * special tokens with pu_tok_add_special_(), then call pu_tok_finalize_()
 * (sorts specials for longest match and builds the piece -> id hash map used
 * by pu_tok_piece_id_()).
 */
#ifndef PU_TOK_IMPL_H
#define PU_TOK_IMPL_H

#include "puyu/pu_tok.h"

typedef struct pu_tok_special {
    char *text; /* owned */
    size_t len;
    int32_t id;
    bool always; /* user-defined added token spelled as itself: split even when
                    parse_special is off (HF / llama.cpp); control tokens are not */
} pu_tok_special;

typedef struct pu_tok_backend {
    /* Encode a span that contains no special tokens (no BOS). Appends ids to
     * *ids (pu_realloc'ed; *cap is its capacity in elements). */
    pu_status (*encode)(const pu_tok *t, const char *text, size_t len, int32_t **ids, int64_t *n,
                        int64_t *cap);
    /* Decode ids (no specials among them) appending bytes; `at_start` tells
     * whether this run begins the decoded text (leading-space rules). */
    pu_status (*decode)(const pu_tok *t, const int32_t *ids, int64_t n, bool at_start, pu_str *out);
    void (*destroy)(pu_tok *t); /* frees t->impl only (may be NULL) */
} pu_tok_backend;

struct pu_tok {
    pu_tok_type type;
    int64_t n_vocab;
    char **pieces;  /* (n_vocab) owned piece bytes, explicit lengths (NUL-terminated too) */
    uint32_t *lens; /* (n_vocab) */
    float *scores;  /* (n_vocab) or NULL */
    uint8_t *attrs; /* (n_vocab) pu_tok_attr */
    int32_t bos, eos, unk, pad;
    pu_tok_special *specials; /* sorted by first byte, then length desc (longest match) */
    int n_specials;
    const pu_tok_backend *be;
    void *impl;   /* backend state */
    char *source; /* path loaded from */
    /* --- filled by pu_tok_finalize_() --- */
    int32_t *map;              /* open-addressing piece -> id table: (id, fingerprint) pairs */
    uint64_t map_mask;         /* table size - 1 (power of two) */
    uint8_t special_first[32]; /* bitmap of first bytes of specials */
    int32_t special_start[257]; /* specials with first byte c: [start[c], start[c+1]) */
    int special_max_len;
    uint8_t *special_bits; /* bitmap over ids [0, special_bits_n): id is a special */
    int32_t special_bits_n;
    /* defaults from the vocabulary file's metadata (-1 = not stated) */
    int8_t add_bos_default, add_eos_default;
    /* optional (NULL = none): backend settings appended as "key: value\n"
     * lines by pu_tok_describe (`puyu tokenizer info`) */
    void (*describe)(const pu_tok *t, pu_str *out);
    /* optional (NULL = be->decode): like be->decode but without replacing
     * invalid UTF-8, for the streaming decoder which assembles characters
     * across tokens and applies the same replacement itself */
    pu_status (*decode_raw)(const pu_tok *t, const int32_t *ids, int64_t n, bool at_start,
                            pu_str *out);
};

/* ---- construction helpers (tok.c) ---- */

/* Zeroed pu_tok with n_vocab empty pieces, attrs NORMAL, ids -1, scores NULL. */
pu_tok *pu_tok_alloc_(pu_tok_type type, int64_t n_vocab);
/* Copy len bytes into pieces[id] (owned, NUL-terminated). */
void pu_tok_set_piece_(pu_tok *t, int32_t id, const char *s, size_t len);
/* Register an added/special token matched as a whole string before the
 * backend (when parse_special). Duplicated texts keep the first id. */
void pu_tok_add_special_(pu_tok *t, const char *text, size_t len, int32_t id);
/* Sort specials, build the piece map and the first-byte bitmap. */
pu_status pu_tok_finalize_(pu_tok *t);
/* id of the piece with exactly these bytes (first one if duplicated), or -1. */
int32_t pu_tok_piece_id_(const pu_tok *t, const char *s, size_t len);

/* ---- SentencePiece backend (spm.c) ---- */

typedef struct pu_tok_spm_cfg {
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    bool byte_fallback, treat_whitespace_as_suffix, split_digits;
    int model_type; /* 1 unigram, 2 bpe, 3 word, 4 char */
} pu_tok_spm_cfg;

/* Parse a SentencePiece ModelProto buffer (`what` names it in errors). */
pu_status pu_tok_load_spm_buf_(const void *buf, size_t len, const char *what, pu_tok **out);
/* Turn a pu_tok whose pieces/scores/attrs are filled into an SPM tokenizer. */
pu_status pu_tok_spm_init_(pu_tok *t, const pu_tok_spm_cfg *cfg);
/* llama2.c tokenizer.bin (no magic; pieces with ' ' for U+2581). */
pu_status pu_tok_load_llama2c_(const char *path, pu_tok **out);
pu_status pu_tok_load_llama2c_buf_(const void *buf, size_t len, const char *what, pu_tok **out);

/* ---- GGUF vocabulary (gguf_vocab.c) ---- */

typedef struct pu_tok_gguf_vocab {
    char *model; /* tokenizer.ggml.model ("llama", "gpt2", ...) or NULL */
    char *pre;   /* tokenizer.ggml.pre or NULL */
    int64_t n_tokens;
    char **tokens; /* (n_tokens) owned, NUL-terminated */
    uint32_t *token_lens;
    float *scores;       /* (n_tokens) or NULL */
    int32_t *token_type; /* (n_tokens) or NULL (llama.cpp types = pu_tok_attr values) */
    int64_t n_merges;
    char **merges; /* (n_merges) "a b" strings, owned, or NULL */
    uint32_t *merge_lens;
    int32_t bos, eos, unk, pad, sep;        /* -1 when absent */
    int add_bos, add_eos, add_space_prefix; /* -1 when absent, else 0/1 */
    int remove_extra_ws;                    /* tokenizer.ggml.remove_extra_whitespaces */
} pu_tok_gguf_vocab;

/* Read the tokenizer.* keys of a GGUF file (v2/v3). */
pu_status pu_tok_gguf_vocab_read(const char *path, pu_tok_gguf_vocab *v);
/* Same over a buffer (`what` names it in errors). */
pu_status pu_tok_gguf_vocab_parse(const void *buf, size_t len, const char *what,
                                  pu_tok_gguf_vocab *v);
void pu_tok_gguf_vocab_free(pu_tok_gguf_vocab *v);
/* GGUF with tokenizer.ggml.model "llama" -> SPM tokenizer. */
pu_status pu_tok_load_spm_gguf_(const char *path, const pu_tok_gguf_vocab *v, pu_tok **out);

/* ---- byte-level BPE backend (bpe.c) ---- */

/* HF tokenizer.json. */
pu_status pu_tok_load_bpe_json_(const char *path, pu_tok **out);
/* GGUF with tokenizer.ggml.model "gpt2" (v is owned by the caller). */
pu_status pu_tok_load_bpe_gguf_(const char *path, const pu_tok_gguf_vocab *v, pu_tok **out);

#endif
