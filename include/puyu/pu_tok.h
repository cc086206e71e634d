/*
 * pu_tok.h — tokenizers: SentencePiece BPE (byte-exact with SentencePiece,
 * InternLM2's tokenizer.model), byte-level BPE (GPT-2 / tiktoken / Llama-3
 * style: HF tokenizer.json, GGUF vocabularies), special tokens, chat
 * templates, and BPE training.
 *
 * A pu_tok is immutable after load and safe to use from many threads.
 */
#ifndef PU_TOK_H
#define PU_TOK_H

#include <stdbool.h>
#include <stdint.h>

#include "puyu/pu_core.h"

typedef enum { PU_TOK_SPM = 1, PU_TOK_BPE = 2 } pu_tok_type;

/* token attributes (SentencePiece piece types, plus added/special tokens) */
typedef enum {
    PU_TOK_ATTR_NORMAL = 1,
    PU_TOK_ATTR_UNKNOWN = 2,
    PU_TOK_ATTR_CONTROL = 3,
    PU_TOK_ATTR_USER_DEFINED = 4,
    PU_TOK_ATTR_UNUSED = 5,
    PU_TOK_ATTR_BYTE = 6,
} pu_tok_attr;

typedef struct pu_tok pu_tok;

/* Load TOK: a SentencePiece .model, an HF tokenizer.json, a .gguf (vocab in
 * tokenizer.ggml.*), a llama2.c tokenizer.bin, or a model directory (its
 * tokenizer.model / tokenizer.json). InternLM2 vocabularies (92544 pieces with
 * [UNUSED_TOKEN_141..146]) get the chat special tokens <|plugin|> ...
 * <|im_start|> (ids 92538..92543) registered automatically. */
pu_status pu_tok_load(const char *path, pu_tok **out);
void pu_tok_destroy(pu_tok *t);

pu_tok_type pu_tok_get_type(const pu_tok *t);
int64_t pu_tok_n_vocab(const pu_tok *t);
int32_t pu_tok_bos(const pu_tok *t); /* -1 if none */
int32_t pu_tok_eos(const pu_tok *t);
int32_t pu_tok_unk(const pu_tok *t);
/* id of a special/added token by its text ("<|im_end|>"), else of a
 * USER_DEFINED piece with exactly that text, or -1 */
int32_t pu_tok_special_id(const pu_tok *t, const char *text);
/* raw piece bytes of an id (as stored in the vocab; may contain NUL), length in *len */
const char *pu_tok_piece(const pu_tok *t, int32_t id, size_t *len);
pu_tok_attr pu_tok_get_attr(const pu_tok *t, int32_t id);
/* SentencePiece score of a piece (0 when the vocabulary has none) */
float pu_tok_score(const pu_tok *t, int32_t id);
/* SentencePiece normalizer flags of an SPM tokenizer (what a GGUF writer must carry over
 * as tokenizer.ggml.add_space_prefix / remove_extra_whitespaces); false for other types */
typedef struct pu_tok_spm_flags {
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    bool treat_whitespace_as_suffix, byte_fallback;
} pu_tok_spm_flags;
bool pu_tok_get_spm_flags(const pu_tok *t, pu_tok_spm_flags *out);
/* Human-readable summary appended to out as "key: value" lines: type, source,
 * vocab size, bos/eos/unk/pad, special tokens, backend settings (SentencePiece
 * normalizer flags, BPE pre-tokenizer, ...). */
void pu_tok_describe(const pu_tok *t, pu_str *out);

typedef struct pu_tok_encode_opts {
    bool add_bos;       /* prepend BOS (as HF does for InternLM2) */
    bool parse_special; /* match special tokens as whole strings before BPE (default true) */
} pu_tok_encode_opts;
pu_tok_encode_opts pu_tok_encode_default_opts(void); /* add_bos false, parse_special true */

/* Encode len bytes (any bytes; invalid UTF-8 is handled as SentencePiece /
 * the BPE reference does). Appends to *ids / *n (owned, pu_realloc'ed; pass
 * NULL/0 to start). */
pu_status pu_tok_encode(const pu_tok *t, const char *text, size_t len,
                        const pu_tok_encode_opts *opts, int32_t **ids, int64_t *n);
/* Encode n texts on the threads of `pool` (NULL: inline), dynamically load
 * balanced; ids[i] / counts[i] receive owned arrays exactly as n separate
 * pu_tok_encode calls would (on error every ids[i] is freed and NULLed and
 * the first failing text is named in the message). */
pu_status pu_tok_encode_batch(const pu_tok *t, const char *const *texts, const size_t *lens,
                              int64_t n, const pu_tok_encode_opts *opts, pu_pool *pool,
                              int32_t **ids, int64_t *counts);
/* Decode ids to text appended to out. Registered special tokens are written
 * verbatim (the InternLM2 chat tokens as <|im_end|> ..., and for
 * SentencePiece models also <s> </s> <unk>, as HF's slow tokenizer does);
 * everything else decodes exactly as SentencePiece's DecodeIds: U+2581 ->
 * ' ', byte-fallback pieces joined into bytes with each byte of an invalid
 * UTF-8 sequence replaced by U+FFFD, one leading space dropped from the
 * first ordinary piece when the model adds a dummy prefix. */
pu_status pu_tok_decode(const pu_tok *t, const int32_t *ids, int64_t n, pu_str *out);

/* Streaming decoder for generation: feed one id at a time, get the bytes that
 * are complete so far (holds back incomplete UTF-8 sequences; flush turns a
 * dangling partial sequence into U+FFFD). Feeding all ids then flushing gives
 * exactly pu_tok_decode's text. */
typedef struct pu_tok_stream {
    const pu_tok *t;
    int64_t n_fed;
    char pending[8];
    int n_pending;
    int64_t n_out;   /* bytes emitted so far */
    int64_t n_plain; /* ordinary (non-special) ids fed so far (leading-space rule) */
} pu_tok_stream;
void pu_tok_stream_init(pu_tok_stream *s, const pu_tok *t);
/* The same for ids that continue earlier text (a completion after its
 * prompt): the dummy-prefix leading space of the first piece is kept, so
 * prompt text + streamed text = the decoding of prompt + completion ids. */
void pu_tok_stream_init_cont(pu_tok_stream *s, const pu_tok *t);
pu_status pu_tok_stream_feed(pu_tok_stream *s, int32_t id, pu_str *out);
void pu_tok_stream_flush(pu_tok_stream *s, pu_str *out);

#endif /* PU_TOK_H */
