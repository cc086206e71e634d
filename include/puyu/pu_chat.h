/*
 * pu_chat.h — InternLM2 chat format (ChatML + environment role + tool
 * protocol, internlm2-spec §B.3–B.4): render OpenAI-style messages to the
 * prompt text, parse a rendered conversation back, and parse an assistant
 * reply into text + tool calls.
 *
 * Rendering (per message): "<|im_start|>" role [" name=" name] "\n" content
 * [tool calls] "<|im_end|>\n". Roles: system, user, assistant, environment
 * ("tool" and "function" are rendered as environment, with name=<|plugin|>
 * when no name is given, as lmdeploy does). A plugin call renders as
 * "<|action_start|><|plugin|>\n" + {"name": N, "parameters": {...}} +
 * "<|action_end|>", an interpreter call as "<|action_start|><|interpreter|>\n"
 * + a ```python block + "<|action_end|>". Tool declarations become a
 * "system name=<|plugin|>" turn holding the JSON array of function schemas,
 * inserted after the first system message (or first). JSON is written the
 * way Python's json.dumps(..., ensure_ascii=False) writes it (", " and ": "
 * separators, key order kept), so prompts match lmdeploy/lagent byte for
 * byte for ordinary values.
 *
 * BOS is explicit: the text contains "<s>" only with bos_text; normally the
 * caller encodes with add_bos instead (HF adds BOS id 1 once at the start).
 */
#ifndef PU_CHAT_H
#define PU_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "puyu/pu_core.h"

typedef enum { PU_CHAT_CALL_PLUGIN = 1, PU_CHAT_CALL_INTERPRETER = 2 } pu_chat_call_kind;

typedef struct pu_chat_call {
    pu_chat_call_kind kind;
    char *name;      /* plugin: function name (owned) */
    char *arguments; /* plugin: JSON object text of the parameters (owned, "{}" if none) */
    char *code;      /* interpreter: code without the markdown fence (owned) */
} pu_chat_call;

typedef struct pu_chat_msg {
    char *role;          /* owned: "system", "user", "assistant", "environment", ... */
    char *name;          /* owned or NULL: "<|plugin|>", "<|interpreter|>", "file", ... */
    char *content;       /* owned, never NULL */
    pu_chat_call *calls; /* assistant tool calls, rendered after the content */
    int n_calls;
    bool open; /* rendered without "<|im_end|>\n" (a turn still being written) */
} pu_chat_msg;

typedef struct pu_chat {
    pu_chat_msg *msgs;
    int n, cap;
} pu_chat;

void pu_chat_init(pu_chat *c);
void pu_chat_free(pu_chat *c);
/* Append a message (strings copied; name may be NULL). Returns it. The names
 * "plugin" and "interpreter" are mapped to "<|plugin|>" / "<|interpreter|>". */
pu_chat_msg *pu_chat_add(pu_chat *c, const char *role, const char *name, const char *content);
/* Add a tool call to a message (strings copied). arguments: JSON object text
 * (NULL = "{}"); for PU_CHAT_CALL_INTERPRETER pass the code as `code`. */
pu_status pu_chat_add_call(pu_chat_msg *m, pu_chat_call_kind kind, const char *name,
                           const char *arguments, const char *code);

typedef struct pu_chat_render_opts {
    bool bos_text;              /* prepend the text "<s>" */
    bool add_generation_prompt; /* append "<|im_start|>assistant\n" */
    const char *tools_json;     /* NULL or a JSON array of function schemas, or OpenAI
                                 * tools [{"type":"function","function":{...}}] */
    const char *interpreter;    /* NULL or the code-interpreter declaration text
                                 * (a "system name=<|interpreter|>" turn) */
} pu_chat_render_opts;

pu_status pu_chat_render(const pu_chat *c, const pu_chat_render_opts *o, pu_str *out);

/* Append the rendered tool calls of m (what pu_chat_render writes after its
 * content: <|action_start|><|plugin|>\n{json}<|action_end|> ...). */
pu_status pu_chat_render_calls(const pu_chat_msg *m, pu_str *out);
/* Append the body of the tool-declaration turn: tools_json (a JSON array of
 * function schemas or OpenAI tools) as the Python-style JSON array of the
 * schemas (what pu_chat_render puts in the "system name=<|plugin|>" turn). */
pu_status pu_chat_tools_text(const char *tools_json, pu_str *out);

/* Build a pu_chat from OpenAI-style messages (a JSON array of objects with
 * role, content (string or [{type:"text",text}] parts), optional name,
 * tool_calls [{function:{name, arguments (JSON text or object)}}]). Errors
 * name the message index and field. */
pu_status pu_chat_from_json(const char *messages_json, size_t len, pu_chat *c);

/* Parse a rendered conversation (with or without a leading "<s>") back into
 * messages (content kept raw, including any action markup). A trailing
 * "<|im_start|>assistant\n" with nothing after it sets *gen_prompt instead
 * of adding an empty message; a last turn without "<|im_end|>" is `open`. */
pu_status pu_chat_parse(const char *text, size_t len, pu_chat *c, bool *gen_prompt);

/* An assistant reply as generated (special tokens decoded verbatim). */
typedef struct pu_chat_reply {
    char *content;       /* text before the first action, trailing <|im_end|> removed */
    pu_chat_call *calls; /* plugin / interpreter calls in order */
    int n_calls;
    bool finished; /* ended with <|im_end|> (else cut at <|action_end|> or truncated) */
} pu_chat_reply;

/* Never fails on odd text: a malformed plugin payload is reported as an
 * error (PU_ERR_FORMAT naming the call) with content still filled. */
pu_status pu_chat_parse_reply(const char *text, size_t len, pu_chat_reply *r);
void pu_chat_reply_free(pu_chat_reply *r);

/* HF InternLM2-chat's default system prompt ("meta_instruction"). */
const char *pu_chat_default_system(void);

#endif /* PU_CHAT_H */
