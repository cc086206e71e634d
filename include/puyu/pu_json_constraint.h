/*
 * pu_json_constraint.h — JSON mode for generation: a token-level constraint
 * that makes invalid JSON impossible (not a retry loop).
 *
 * A byte-level JSON recogniser (a pushdown automaton over RFC 8259: objects,
 * arrays, strings with escapes and \uXXXX (surrogates only as valid pairs,
 * no \u0000, so strict parsers accept the result), UTF-8 checked byte by byte inside
 * strings, numbers (digit limits below), true/false/null, at most 64 levels, at most 8 whitespace
 * bytes in a row outside strings so a model cannot stall in blanks) is
 * checked against each vocabulary token's bytes: a token is allowed when all
 * of its bytes continue a valid JSON prefix. Token bytes come from the
 * tokenizer (SentencePiece "▁" -> ' ', byte-fallback <0xNN> pieces as the raw
 * byte, so a multi-byte character split over byte tokens is followed through
 * the UTF-8 states). Control/special tokens are masked, except the end
 * tokens (EOS, <|im_end|>) once the value is complete — then only they are
 * allowed.
 *
 * Hook: set pu_sampler.mask_fn = pu_json_constraint_mask_hook and
 * mask_ud = the constraint; after each sampled id call
 * pu_json_constraint_accept.
 */
#ifndef PU_JSON_CONSTRAINT_H
#define PU_JSON_CONSTRAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "puyu/pu_core.h"
#include "puyu/pu_tok.h"

#define PU_JSON_MAX_DEPTH 64
/* numbers: at most this many integer and fraction digits, exponents of at
 * most 2 digits (so jansson, JavaScript and int64 parsers read them without
 * overflow; RFC 8259 section 6 lets implementations limit range) */
#define PU_JSON_MAX_DIGITS 15

/* A JSON schema subset for the top-level object: "properties" (at most 64,
 * names up to 47 bytes) each of "type" string | number | integer | boolean |
 * null | object | array (or absent = any), string "enum"s (up to 16 values),
 * "required". Keys outside "properties" and repeated keys are refused (as
 * with additionalProperties: false); nested values are checked as JSON only.
 * Any other keyword that would restrict the output (items, nested
 * properties, minLength, pattern, minimum, anyOf, $ref, ...) is refused
 * (PU_ERR_UNSUPPORTED naming json_schema.<path>); annotations (title,
 * description, default, examples, $schema, $id) pass. */
typedef struct pu_json_schema pu_json_schema;
/* Parse a schema (the object itself, or OpenAI's {"name", "schema": {...}}
 * wrapper of response_format.json_schema). Errors name the field. */
pu_status pu_json_schema_parse(const char *json, size_t len, pu_json_schema **out);
void pu_json_schema_destroy(pu_json_schema *s);
/* an owned copy (NULL for NULL) */
pu_json_schema *pu_json_schema_copy(const pu_json_schema *s);

typedef struct pu_json_sm {
    uint8_t stack[PU_JSON_MAX_DEPTH]; /* 'o' object / 'a' array */
    int depth;
    uint8_t st;     /* lexer state */
    uint8_t aux;    /* literal position / hex digits left / UTF-8 bytes left */
    uint8_t lit;    /* which literal */
    uint8_t lo, hi; /* allowed range of the next UTF-8 continuation byte */
    uint8_t ws;     /* consecutive whitespace bytes */
    uint16_t cp;    /* \uXXXX being read */
    bool want_low;  /* a high surrogate escape must be followed by a low one */
    bool in_key;
    bool object_only; /* the top-level value must be an object (OpenAI json_object) */
    /* schema state (top-level members only) */
    const pu_json_schema *schema;
    uint64_t used; /* properties already given */
    int8_t prop;   /* property of the value being read (-1 none) */
    uint8_t klen;  /* bytes of the key / enum string so far */
    bool in_enum;  /* reading a string value restricted to an enum */
    bool int_only; /* the number being read must be an integer */
    char kbuf[48];
} pu_json_sm;

void pu_json_sm_init(pu_json_sm *s, bool object_only);
/* an object following the schema (borrowed; must outlive s) */
void pu_json_sm_init_schema(pu_json_sm *s, const pu_json_schema *schema);
/* Feed bytes; false when they cannot continue a JSON document (s is then
 * unspecified: feed a copy to test). */
bool pu_json_sm_feed(pu_json_sm *s, const uint8_t *b, size_t n);
/* a whole value has been read (only whitespace may follow) */
bool pu_json_sm_complete(const pu_json_sm *s);

typedef struct pu_json_constraint pu_json_constraint;

pu_status pu_json_constraint_create(const pu_tok *tok, bool object_only, pu_json_constraint **out);
/* the same, constrained to a schema (borrowed; must outlive the constraint) */
pu_status pu_json_constraint_create_schema(const pu_tok *tok, const pu_json_schema *schema,
                                           pu_json_constraint **out);
void pu_json_constraint_destroy(pu_json_constraint *c);
/* A fresh constraint (reset state) sharing proto's vocabulary tables: cheap,
 * for one request. proto must outlive it and must not be changed meanwhile
 * (no allow_end on either); schema borrowed (NULL: JSON, object_only). */
pu_json_constraint *pu_json_constraint_clone(const pu_json_constraint *proto, bool object_only,
                                             const pu_json_schema *schema);
void pu_json_constraint_reset(pu_json_constraint *c);
/* Set the logits of tokens that cannot continue to -INFINITY; returns how
 * many stay allowed. n_vocab may exceed the tokenizer's (extra rows masked). */
int64_t pu_json_constraint_mask(pu_json_constraint *c, float *logits, int64_t n_vocab);
/* The masks of the last 8 distinct automaton states are cached (keyed by the
 * state's canonical bytes: inside a long string every step is the same
 * state), so a repeated state costs one pass over a bitmask instead of
 * feeding every token's bytes. _uncached is the reference the cache is
 * tested against (the same mask, always recomputed). */
int64_t pu_json_constraint_mask_uncached(pu_json_constraint *c, float *logits, int64_t n_vocab);
void pu_json_constraint_cache_stats(const pu_json_constraint *c, int64_t *hits, int64_t *misses);
/* Advance by a generated id; PU_ERR_INVALID when the id was not allowed. */
pu_status pu_json_constraint_accept(pu_json_constraint *c, int32_t id);
bool pu_json_constraint_complete(const pu_json_constraint *c);
/* Also accept `id` as an end token once the value is complete (e.g.
 * <|action_end|> after a tool call's arguments). */
void pu_json_constraint_allow_end(pu_json_constraint *c, int32_t id);
/* the id's bytes as the constraint sees them (borrowed; NULL for special) */
const uint8_t *pu_json_constraint_token_bytes(const pu_json_constraint *c, int32_t id, size_t *len);
/* pu_sampler.mask_fn adapter (ud = the constraint) */
void pu_json_constraint_mask_hook(void *ud, float *logits, int64_t n_vocab);

#endif /* PU_JSON_CONSTRAINT_H */
