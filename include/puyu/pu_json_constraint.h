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

/* JSON Schema for constrained decoding: what OpenAI structured outputs and
 * llama-server accept in practice, compiled into a graph of nodes the
 * automaton walks (one frame per open container):
 *  - type: string | number | integer | boolean | null | object | array, or a
 *    list of them (["string", "null"]) = anyOf of each type; nullable: true
 *  - enum / const of any JSON values (generated in compact form; with only
 *    "type" beside them, the values of other types are dropped)
 *  - string: minLength / maxLength (code points; an escape is one)
 *  - number / integer: minimum / maximum / exclusiveMinimum /
 *    exclusiveMaximum (numbers or draft-4 booleans); integer generates no
 *    '.' or exponent; bounded numbers no exponent; at most
 *    PU_JSON_MAX_DIGITS integer and fraction digits
 *  - object: properties (up to 64 names of up to 255 bytes without quotes,
 *    backslashes or control bytes) in any order, each at most once,
 *    required; keys outside properties are never generated (valid whatever
 *    additionalProperties says: false, true or a schema); an object type with
 *    neither properties nor additionalProperties: false is any JSON object
 *  - array: items (one schema), minItems / maxItems, uniqueItems: false
 *  - anyOf / oneOf (oneOf generated as anyOf: alternatives that overlap may
 *    match more than one, as with llama.cpp's grammar converter), allOf of
 *    one schema
 *  - $ref to "#", "#/$defs/NAME" or "#/definitions/NAME" (recursion works up
 *    to PU_JSON_MAX_DEPTH open containers); no restricting keyword beside it
 *  - true / {} = any value; annotations pass (title, description, default,
 *    examples, format (an annotation in JSON Schema 2019+), $schema, $id,
 *    $comment, deprecated, readOnly, writeOnly, $defs, definitions)
 * Any other keyword (pattern, not, if/then/else, patternProperties,
 * prefixItems, contains, multipleOf, minProperties, uniqueItems: true, ...)
 * is refused with PU_ERR_UNSUPPORTED naming json_schema.<path>.<keyword>
 * (ignoring it could produce JSON that does not validate). At most
 * PU_JSON_MAX_THREADS alternatives are followed at once (anyOf forks the
 * automaton until a byte tells them apart); beyond that the later ones are
 * dropped (what is generated stays valid). */
typedef struct pu_json_schema pu_json_schema;
/* Parse a schema (the object itself, or OpenAI's {"name", "schema": {...}}
 * wrapper of response_format.json_schema). Errors name the field. */
pu_status pu_json_schema_parse(const char *json, size_t len, pu_json_schema **out);
/* the same from a parsed schema (borrowed); what names the errors' root */
pu_status pu_json_schema_from_json(const void *json_t_schema, const char *what,
                                   pu_json_schema **out);
void pu_json_schema_destroy(pu_json_schema *s);
/* an owned copy (NULL for NULL) */
pu_json_schema *pu_json_schema_copy(const pu_json_schema *s);

#define PU_JSON_MAX_THREADS 32

typedef struct pu_json_frame {
    uint64_t used;  /* object: properties given */
    uint32_t count; /* array: items begun */
    uint16_t node;  /* schema node of the container (0 = any) */
    uint8_t kind;   /* 'o' object / 'a' array */
    uint8_t prop;   /* object: property of the member being read */
} pu_json_frame;

/* one deterministic parse (anyOf runs several side by side); the fields
 * before fr are the lexer and schema position, fr[0..depth) the open
 * containers */
typedef struct pu_json_thread {
    uint64_t kcand; /* schema key: names still matching */
    uint64_t lcand; /* enum / const: values still matching */
    uint32_t slen;  /* string: code points so far */
    uint16_t vnode; /* schema node of the value being read / expected */
    uint16_t cp;    /* \uXXXX being read */
    uint16_t lpos;  /* enum / const: bytes matched */
    uint8_t st;     /* lexer state */
    uint8_t aux;    /* literal position / hex digits left / UTF-8 bytes left / digits */
    uint8_t lit;    /* which literal */
    uint8_t lo, hi; /* allowed range of the next UTF-8 continuation byte */
    uint8_t ws;     /* consecutive whitespace bytes */
    uint8_t want_low; /* a high surrogate escape must be followed by a low one */
    uint8_t in_key;   /* reading a key of a free object */
    uint8_t depth;
    uint8_t kpos; /* schema key: bytes matched */
    uint8_t nlen; /* number: bytes in nbuf */
    char nbuf[41];
    pu_json_frame fr[PU_JSON_MAX_DEPTH];
} pu_json_thread;

typedef struct pu_json_sm {
    const pu_json_schema *schema; /* never NULL after init (built-in any / object) */
    int n;                        /* live threads */
    pu_json_thread t[PU_JSON_MAX_THREADS];
} pu_json_sm;

/* copy the live part of src (cheaper than assignment) */
void pu_json_sm_copy(pu_json_sm *dst, const pu_json_sm *src);
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
