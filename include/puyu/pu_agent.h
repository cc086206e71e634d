/*
 * pu_agent.h — tool-using agents (Lagent / AgentLego's role).
 *
 * Owns: the tool registry (python = the sandbox's stateful interpreter,
 * calculator = exact rational arithmetic with a real parser, read_file =
 * files of the work dir, and user tools declared in a JSON file with OpenAI
 * function schemas that run a command with the JSON arguments on stdin), the
 * agent loop (plan -> tool call -> environment result -> answer, bounded by
 * max_turns), three protocols (InternLM2 native via pu_chat, OpenAI function
 * calling, ReAct text), model adapters (a local model through a text
 * completion callback, an OpenAI-compatible endpoint over HTTP) and JSONL
 * transcripts.
 *
 * The conversation is kept as OpenAI-style messages (system, user, assistant
 * with tool_calls, tool with tool_call_id + name); each protocol renders it
 * its own way. Every string that enters a message is made valid UTF-8 first
 * (tool output in invalid UTF-8 becomes U+FFFD).
 */
#ifndef PU_AGENT_H
#define PU_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "puyu/pu_core.h"
#include "puyu/pu_sandbox.h"

/* ------------------------------------------------------------------------ */
/* calculator                                                               */

/* Evaluate an arithmetic expression exactly: rationals over 128-bit
 * integers; + - * / % ^ (integer exponents), parentheses, unary signs,
 * decimals ("0.1" = 1/10) and scientific notation. out = "7/3 (≈ 2.333333333333)"
 * or "42". Errors (PU_ERR_FORMAT naming the column, PU_ERR_RANGE on overflow
 * or division by zero) leave a message in pu_err_msg(). No eval of code. */
pu_status pu_calc_eval(const char *expr, pu_str *out);

/* ------------------------------------------------------------------------ */
/* tools                                                                    */

typedef struct pu_agent_tools pu_agent_tools;

typedef struct pu_agent_tools_opts {
    const char *names;       /* comma list: python, calculator, files (NULL = none) */
    const char *tools_file;  /* user tools JSON (NULL = none) */
    pu_sandbox_opts sandbox; /* for python (its workdir is also read_file's root) */
    double user_timeout_s;   /* user tool commands (0 = 30) */
} pu_agent_tools_opts;

pu_status pu_agent_tools_create(const pu_agent_tools_opts *o, pu_agent_tools **out);
void pu_agent_tools_destroy(pu_agent_tools *t);
/* Validate and add user tools from JSON text (an array of OpenAI tools
 * {"type":"function","function":{name, description, parameters}, "command": [argv...]}).
 * origin names the source in errors ("tools.json"). */
pu_status pu_agent_tools_add_json(pu_agent_tools *t, const char *json, size_t len,
                                  const char *origin);
int pu_agent_tools_count(const pu_agent_tools *t);
bool pu_agent_tools_has(const pu_agent_tools *t, const char *name);
/* OpenAI "tools" array of every tool (python included); NULL when there are none. Borrowed. */
const char *pu_agent_tools_openai_json(const pu_agent_tools *t);
/* Call a tool. Tool failures (unknown tool, invalid arguments, a program
 * error, a timeout) are not errors of this call: they come back in `result`
 * with *is_error set, for the model to read. Returns non-OK only when the
 * sandbox cannot be built (fail closed). args_json: JSON object text. */
pu_status pu_agent_tools_call(pu_agent_tools *t, const char *name, const char *args_json,
                              pu_str *result, bool *is_error);
/* Work directory of the python tool / read_file (created on first use). */
const char *pu_agent_tools_workdir(pu_agent_tools *t);

/* ------------------------------------------------------------------------ */
/* models                                                                   */

typedef struct pu_agent_llm {
    void *ud;
    /* Text completion of a rendered prompt (local models; native and ReAct).
     * Output is cut before the first stop string. NULL if unsupported. */
    pu_status (*complete)(void *ud, const char *prompt, const char *const *stops, int n_stops,
                          pu_str *out);
    /* Chat completion (OpenAI endpoints): messages = JSON array, tools = JSON
     * array or NULL; reply = the assistant message object as JSON text
     * ({"role":"assistant","content":...,"tool_calls":[...]}). NULL if unsupported. */
    pu_status (*chat)(void *ud, const char *messages, const char *tools, const char *const *stops,
                      int n_stops, pu_str *reply);
} pu_agent_llm;

/* An OpenAI-compatible endpoint: url = http://host:port[/v1[/chat/completions]];
 * model may be NULL; the API key comes from env PUYU_API_KEY. The adapter
 * object lives in *llm (free with pu_agent_llm_api_free). */
typedef struct pu_agent_api_cfg {
    const char *url;
    const char *model;
    double timeout_s;   /* 0 = 600 */
    int64_t max_tokens; /* 0 = 1024 */
    double temperature;
} pu_agent_api_cfg;
pu_status pu_agent_llm_api(const pu_agent_api_cfg *cfg, pu_agent_llm *llm);
void pu_agent_llm_api_free(pu_agent_llm *llm);

/* A local model: text completion with the session (greedy at temp 0), the
 * newest context kept when a prompt outgrows n_ctx - max_tokens. The model,
 * tokenizer and session are borrowed. Free with pu_agent_llm_local_free. */
typedef struct pu_model pu_model;
typedef struct pu_tok pu_tok;
typedef struct pu_session pu_session;
pu_status pu_agent_llm_local(pu_model *m, pu_tok *tok, pu_session *s, int64_t max_tokens,
                             double temperature, pu_agent_llm *llm);
void pu_agent_llm_local_free(pu_agent_llm *llm);
/* Constrain tool-call arguments: after "<|action_start|><|plugin|>" (in the
 * prompt's tail or the output) the JSON-mode constraint (pu_json_constraint.h)
 * masks every token that would make the call's JSON invalid, and once the
 * object is complete only <|action_end|> / <|im_end|> / EOS remain. Needs the
 * InternLM2 chat tokens; PU_ERR_UNSUPPORTED otherwise. */
pu_status pu_agent_llm_local_constrain_calls(pu_agent_llm *llm);
/* The same, with the calls constrained to the declared tools (OpenAI tools
 * JSON array; python is left out, it is the interpreter): an anyOf of
 * {"name": const NAME, "parameters": the tool's parameters schema} per tool,
 * so the name is one of the tools and the arguments follow its schema
 * (pu_json_constraint.h). A tool whose schema uses an unsupported keyword
 * gets any object as arguments; beyond PU_JSON_MAX_THREADS tools the name is
 * an enum and the arguments any object. */
pu_status pu_agent_llm_local_constrain_tools(pu_agent_llm *llm, const char *tools_json);

/* That calls schema alone (also used by puyu serve for requests with tools):
 * *out = NULL when no tool other than python is declared. */
struct pu_json_schema;
pu_status pu_agent_tools_call_schema(const char *tools_json, struct pu_json_schema **out);

/* ------------------------------------------------------------------------ */
/* the agent loop                                                           */

typedef enum {
    PU_AGENT_NATIVE = 1, /* InternLM2: <|plugin|> / <|interpreter|> actions (needs complete) */
    PU_AGENT_OPENAI = 2, /* function calling (needs chat) */
    PU_AGENT_REACT = 3,  /* Thought / Action / Action Input / Final Answer (either) */
} pu_agent_protocol;

/* "native" | "openai" | "react"; -1 if unknown */
int pu_agent_protocol_parse(const char *s);

typedef struct pu_agent_opts {
    pu_agent_protocol protocol;
    int max_turns;      /* model calls per prompt (0 = 8) */
    const char *system; /* system prompt (NULL = a default for the protocol) */
    FILE *log;          /* transcript: every message appended as one JSON line (may be NULL) */
    /* progress callback: each message as it is added (JSON text); may be NULL */
    void (*on_message)(void *ud, const char *message_json);
    void *ud;
} pu_agent_opts;

typedef struct pu_agent pu_agent;

pu_status pu_agent_create(const pu_agent_llm *llm, pu_agent_tools *tools, const pu_agent_opts *o,
                          pu_agent **out);
void pu_agent_destroy(pu_agent *a);
/* Forget the conversation (the python session and its variables stay). */
void pu_agent_reset(pu_agent *a);

typedef struct pu_agent_outcome {
    int turns;       /* model calls made */
    int tool_calls;  /* tool calls executed (including failed ones) */
    int tool_errors; /* of which returned an error to the model */
    bool finished;   /* a final answer (false: stopped at max_turns) */
} pu_agent_outcome;

/* Add a user message and run the loop; answer receives the final answer
 * (cleared first; the last assistant text when max_turns stopped it).
 * Errors of the model / endpoint are returned (transcript kept). */
pu_status pu_agent_run(pu_agent *a, const char *prompt, pu_str *answer, pu_agent_outcome *oc);
/* The conversation as a JSON array of messages. */
void pu_agent_messages_json(const pu_agent *a, pu_str *out);

/* The native protocol's rendering of the conversation (for tests/inspection). */
pu_status pu_agent_render_native(const pu_agent *a, pu_str *out);

/* Parse a ReAct reply: sets *final (with the answer in `text`) or an action
 * (name + arguments JSON in args). Returns PU_ERR_FORMAT when neither is found. */
pu_status pu_agent_parse_react(const char *reply, bool *final, pu_str *text, pu_str *name,
                               pu_str *args);

/* ------------------------------------------------------------------------ */
/* tool-use evaluation (first tool call: name + arguments exact match)      */

typedef struct pu_agent_tooluse_opts {
    const char *path;           /* ShareGPT tool-call file (LLaMA-Factory glaive format) */
    int64_t limit;              /* items (0 = all) */
    pu_agent_protocol protocol; /* NATIVE (llm.complete) or OPENAI (llm.chat) */
    FILE *predictions;          /* JSONL per item (may be NULL) */
} pu_agent_tooluse_opts;

typedef struct pu_agent_tooluse_score {
    int64_t n;        /* items scored (conversations with a function call) */
    int64_t name_ok;  /* first call names the gold function */
    int64_t exact_ok; /* ... with arguments equal as JSON (numbers by value) */
    int64_t no_call;  /* the model answered without a call */
} pu_agent_tooluse_score;

/* For each conversation with a function_call turn: the turns before the first
 * call (+ its tools) go to the model once; its first call is compared with
 * the gold call. Errors name the file and item. */
pu_status pu_agent_tooluse_eval(const pu_agent_llm *llm, const pu_agent_tooluse_opts *o,
                                pu_agent_tooluse_score *sc);
/* reason_tool_use_demo_50.jsonl (rows of {"messages": [{"role", "content":
 * [{"type": text|reasoning|tool_call, "value"}]}], "tools": OpenAI tools
 * JSON}): every assistant message is one step, asked with the gold
 * conversation before it (system, user, tool results, earlier assistant
 * text and calls; reasoning left out). A step whose gold has tool_call parts
 * is right when the model's calls equal them as a multiset: names exact,
 * arguments equal as JSON (numbers by value, key order ignored), nothing
 * missing or extra. A step whose gold is a final answer (text only) is right
 * when the model answers without calling a tool (its prose is not
 * compared). accuracy = (call_exact + answer_ok) / steps. */
typedef struct pu_agent_reason_score {
    int64_t items, steps;
    int64_t call_steps, call_exact, call_name, no_call;
    int64_t answer_steps, answer_ok;
} pu_agent_reason_score;
pu_status pu_agent_tooluse_reason_eval(const pu_agent_llm *llm, const pu_agent_tooluse_opts *o,
                                       pu_agent_reason_score *sc);
/* JSON equality with numbers compared by value (1 == 1.0), key order ignored */
bool pu_agent_json_equal(const char *a, const char *b);

/* Make s valid UTF-8 (invalid bytes -> U+FFFD) into out (cleared first). */
void pu_agent_utf8_sanitize(const char *s, size_t n, pu_str *out);

#endif /* PU_AGENT_H */
