/*
 * tools.c — the agent's tool registry: built-in python (the sandbox's
 * stateful interpreter), calculator (calc.c), read_file (files of the work
 * dir, no way out of it), and user tools from a JSON file (OpenAI function
 * schemas, validated) that run a command with the JSON arguments on stdin
 * and return its stdout (AgentLego's role, without its model zoo).
 *
 * User tools are the operator's own programs: they run as the caller, not in
 * the sandbox (they may need the network), with a timeout and capped output.
 * Arguments from the model are checked against the schema (required
 * properties, JSON types) before anything runs; failures go back to the model.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_impl.h"
#include "puyu/pu_agent.h"

typedef enum { TOOL_PYTHON, TOOL_CALC, TOOL_FILE, TOOL_USER } tool_kind;

typedef struct tool {
    tool_kind kind;
    char *name;
    json_t *schema; /* {"type":"function","function":{...}} */
    char **argv;    /* user: command */
    int argc;
} tool;

struct pu_agent_tools {
    tool *t;
    int n;
    pu_agent_tools_opts o;
    char *sandbox_workdir_owned;
    pu_sandbox_session *py;
    char *workdir; /* host path (python session's, or a temp dir for read_file) */
    bool workdir_temp;
    char *openai_json;
    double user_timeout;
};

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */

static size_t utf8_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!l || l > n)
        return 0;
    for (size_t i = 1; i < l; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    uint32_t cp = l == 1 ? c : l == 2 ? c & 0x1F : l == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < l; i++)
        cp = (cp << 6) | (p[i] & 0x3F);
    if ((l == 2 && cp < 0x80) || (l == 3 && cp < 0x800) || (l == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return l;
}

void pu_agent_utf8_sanitize(const char *s, size_t n, pu_str *out) {
    pu_str_clear(out);
    pu_str_puts(out, "");
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_len(p + i, n - i);
        if (!l) {
            pu_str_append(out, "\xEF\xBF\xBD", 3);
            i++;
        } else if (l == 1 && p[i] == 0) {
            i++; /* NUL: dropped (C strings downstream) */
        } else {
            pu_str_append(out, s + i, l);
            i += l;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* schemas                                                                  */

static const char *k_json_types[] = {"string", "number", "integer", "boolean",
                                     "array",  "object", "null"};

static bool valid_type(const char *t) {
    for (size_t i = 0; i < sizeof k_json_types / sizeof k_json_types[0]; i++)
        if (!strcmp(t, k_json_types[i]))
            return true;
    return false;
}

static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* a JSON schema for parameters: type object, properties of known types,
 * required names that exist */
static pu_status check_params_schema(const json_t *p, const char *what) {
    if (!json_is_object(p))
        return pu_err_set(PU_ERR_FORMAT, "%s.parameters: expected an object", what);
    json_t *ty = json_object_get(p, "type");
    if (!json_is_string(ty) || strcmp(json_string_value(ty), "object"))
        return pu_err_set(PU_ERR_FORMAT, "%s.parameters.type: expected \"object\"", what);
    json_t *props = json_object_get(p, "properties");
    if (props && !json_is_object(props))
        return pu_err_set(PU_ERR_FORMAT, "%s.parameters.properties: expected an object", what);
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v) {
        if (!json_is_object(v))
            return pu_err_set(PU_ERR_FORMAT,
                              "%s.parameters.properties.%s: expected a schema object", what, k);
        json_t *t = json_object_get(v, "type");
        if (json_is_string(t)) {
            if (!valid_type(json_string_value(t)))
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s.parameters.properties.%s.type: unknown JSON type \"%s\"",
                                  what, k, json_string_value(t));
        } else if (json_is_array(t)) {
            size_t i;
            json_t *e;
            json_array_foreach(t, i, e) if (
                !json_is_string(e) ||
                !valid_type(json_string_value(
                    e))) return pu_err_set(PU_ERR_FORMAT,
                                           "%s.parameters.properties.%s.type[%zu]: not a JSON type",
                                           what, k, i);
        } else if (t) {
            return pu_err_set(PU_ERR_FORMAT, "%s.parameters.properties.%s.type: expected a string",
                              what, k);
        }
        json_t *en = json_object_get(v, "enum");
        if (en && !json_is_array(en))
            return pu_err_set(PU_ERR_FORMAT, "%s.parameters.properties.%s.enum: expected an array",
                              what, k);
    }
    json_t *req = json_object_get(p, "required");
    if (req) {
        if (!json_is_array(req))
            return pu_err_set(PU_ERR_FORMAT, "%s.parameters.required: expected an array", what);
        size_t i;
        json_t *e;
        json_array_foreach(req, i, e) {
            if (!json_is_string(e))
                return pu_err_set(PU_ERR_FORMAT, "%s.parameters.required[%zu]: expected a string",
                                  what, i);
            if (!json_object_get(props, json_string_value(e)))
                return pu_err_set(PU_ERR_FORMAT,
                                  "%s.parameters.required[%zu]: \"%s\" is not in properties", what,
                                  i, json_string_value(e));
        }
    }
    return PU_OK;
}

static bool type_matches(const char *t, const json_t *v) {
    if (!strcmp(t, "string"))
        return json_is_string(v);
    if (!strcmp(t, "number"))
        return json_is_number(v);
    if (!strcmp(t, "integer"))
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == (double)(int64_t)json_real_value(v));
    if (!strcmp(t, "boolean"))
        return json_is_boolean(v);
    if (!strcmp(t, "array"))
        return json_is_array(v);
    if (!strcmp(t, "object"))
        return json_is_object(v);
    if (!strcmp(t, "null"))
        return json_is_null(v);
    return true;
}

/* Check call arguments against the tool's parameters schema; message in err. */
static bool check_args(const tool *t, const json_t *args, pu_str *err) {
    if (!json_is_object(args)) {
        pu_str_puts(err, "arguments must be a JSON object");
        return false;
    }
    const json_t *p = json_object_get(json_object_get(t->schema, "function"), "parameters");
    json_t *props = json_object_get(p, "properties");
    json_t *req = json_object_get(p, "required");
    size_t i;
    json_t *e;
    json_array_foreach(req, i, e) {
        if (!json_object_get(args, json_string_value(e))) {
            pu_str_appendf(err, "missing required argument \"%s\"", json_string_value(e));
            return false;
        }
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)args, k, v) {
        json_t *ps = json_object_get(props, k);
        if (!ps) {
            pu_str_appendf(err, "unknown argument \"%s\"", k);
            return false;
        }
        json_t *ty = json_object_get(ps, "type");
        bool ok = true;
        if (json_is_string(ty)) {
            ok = type_matches(json_string_value(ty), v);
        } else if (json_is_array(ty)) {
            ok = false;
            size_t j;
            json_t *x;
            json_array_foreach(ty, j, x) ok = ok || type_matches(json_string_value(x), v);
        }
        if (!ok) {
            pu_str_appendf(err, "argument \"%s\" must be of type %s", k,
                           json_is_string(ty) ? json_string_value(ty) : "(see schema)");
            return false;
        }
        json_t *en = json_object_get(ps, "enum");
        if (json_is_array(en)) {
            bool found = false;
            json_array_foreach(en, i, e) found = found || json_equal(e, v);
            if (!found) {
                pu_str_appendf(err, "argument \"%s\" is not one of the allowed values", k);
                return false;
            }
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* registry                                                                  */

static json_t *fn_schema(const char *name, const char *desc, const char *params_json) {
    json_t *p = json_loads(params_json, 0, NULL);
    PU_ASSERT(p);
    return json_pack("{s:s, s:{s:s, s:s, s:o}}", "type", "function", "function", "name", name,
                     "description", desc, "parameters", p);
}

static void add_tool(pu_agent_tools *t, tool_kind k, const char *name, json_t *schema) {
    t->t = pu_realloc(t->t, (size_t)(t->n + 1) * sizeof *t->t);
    t->t[t->n] = (tool){.kind = k, .name = pu_strdup(name), .schema = schema};
    t->n++;
    pu_free(t->openai_json);
    t->openai_json = NULL;
}

static tool *find_tool(const pu_agent_tools *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->t[i].name, name))
            return &t->t[i];
    return NULL;
}

static pu_status add_builtin(pu_agent_tools *t, const char *name) {
    if (find_tool(t, name))
        return PU_OK;
    if (!strcmp(name, "python")) {
        add_tool(
            t, TOOL_PYTHON, "python",
            fn_schema("python",
                      "Run Python 3 code in a stateful sandboxed interpreter (variables persist "
                      "between calls; no network; files in the current directory persist). "
                      "Returns what it prints and the value of a final expression.",
                      "{\"type\": \"object\", \"properties\": {\"code\": {\"type\": "
                      "\"string\", \"description\": \"the Python code to run\"}}, "
                      "\"required\": [\"code\"]}"));
    } else if (!strcmp(name, "calculator")) {
        add_tool(t, TOOL_CALC, "calculator",
                 fn_schema("calculator",
                           "Exact arithmetic: + - * / % ^, parentheses, decimals; returns an exact "
                           "fraction or integer.",
                           "{\"type\": \"object\", \"properties\": {\"expression\": {\"type\": "
                           "\"string\", \"description\": \"e.g. (3 + 4) * 2 / 7\"}}, "
                           "\"required\": [\"expression\"]}"));
    } else if (!strcmp(name, "files") || !strcmp(name, "read_file")) {
        add_tool(t, TOOL_FILE, "read_file",
                 fn_schema("read_file",
                           "Read a text file from the work directory (paths relative to it).",
                           "{\"type\": \"object\", \"properties\": {\"path\": {\"type\": "
                           "\"string\", \"description\": \"relative path\"}}, \"required\": "
                           "[\"path\"]}"));
    } else {
        return pu_err_set(PU_ERR_INVALID,
                          "--tools: unknown tool \"%s\" (built-in: python, calculator, files)",
                          name);
    }
    return PU_OK;
}

pu_status pu_agent_tools_add_json(pu_agent_tools *t, const char *json, size_t len,
                                  const char *origin) {
    json_t *root = NULL;
    PU_TRY(pu_json_loadb(json, len, origin, &root));
    pu_status st = PU_OK;
    if (!json_is_array(root)) {
        st = pu_err_set(PU_ERR_FORMAT, "%s: expected a JSON array of tools", origin);
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(root, i, e) {
        char what[512];
        snprintf(what, sizeof what, "%s: tools[%zu]", origin, i);
        if (!json_is_object(e)) {
            st = pu_err_set(PU_ERR_FORMAT, "%s: expected an object", what);
            goto out;
        }
        json_t *ty = json_object_get(e, "type");
        json_t *fn = json_object_get(e, "function");
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "function") ||
            !json_is_object(fn)) {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: expected {\"type\": \"function\", \"function\": {...}}", what);
            goto out;
        }
        json_t *nm = json_object_get(fn, "name");
        if (!json_is_string(nm) || !valid_name(json_string_value(nm))) {
            st =
                pu_err_set(PU_ERR_FORMAT, "%s.function.name: expected 1-64 of [A-Za-z0-9_-]", what);
            goto out;
        }
        const char *name = json_string_value(nm);
        snprintf(what, sizeof what, "%s: tools[%zu] (%s).function", origin, i, name);
        json_t *d = json_object_get(fn, "description");
        if (d && !json_is_string(d)) {
            st = pu_err_set(PU_ERR_FORMAT, "%s.description: expected a string", what);
            goto out;
        }
        json_t *params = json_object_get(fn, "parameters");
        if (!params) {
            st = pu_err_set(PU_ERR_FORMAT, "%s.parameters: missing", what);
            goto out;
        }
        if ((st = check_params_schema(params, what)) != PU_OK)
            goto out;
        if (find_tool(t, name)) {
            st = pu_err_set(PU_ERR_FORMAT, "%s: tools[%zu]: duplicate tool name \"%s\"", origin, i,
                            name);
            goto out;
        }
        json_t *cmd = json_object_get(e, "command");
        int argc = 0;
        char **argv = NULL;
        if (json_is_string(cmd)) {
            argc = 3;
            argv = pu_calloc(4, sizeof(char *));
            argv[0] = pu_strdup("/bin/sh");
            argv[1] = pu_strdup("-c");
            argv[2] = pu_strdup(json_string_value(cmd));
        } else if (json_is_array(cmd) && json_array_size(cmd) > 0) {
            argc = (int)json_array_size(cmd);
            argv = pu_calloc((size_t)argc + 1, sizeof(char *));
            for (int k = 0; k < argc; k++) {
                json_t *a = json_array_get(cmd, (size_t)k);
                if (!json_is_string(a)) {
                    for (int m = 0; m < k; m++)
                        pu_free(argv[m]);
                    pu_free(argv);
                    st = pu_err_set(PU_ERR_FORMAT, "%s: tools[%zu].command[%d]: expected a string",
                                    origin, i, k);
                    goto out;
                }
                argv[k] = pu_strdup(json_string_value(a));
            }
        } else {
            st = pu_err_set(PU_ERR_FORMAT,
                            "%s: tools[%zu].command: expected an argv array or a shell string",
                            origin, i);
            goto out;
        }
        json_t *schema = json_pack("{s:s, s:O}", "type", "function", "function", fn);
        add_tool(t, TOOL_USER, name, schema);
        t->t[t->n - 1].argv = argv;
        t->t[t->n - 1].argc = argc;
    }
out:
    json_decref(root);
    return st;
}

pu_status pu_agent_tools_create(const pu_agent_tools_opts *o, pu_agent_tools **out) {
    *out = NULL;
    pu_agent_tools *t = pu_calloc(1, sizeof *t);
    if (o)
        t->o = *o;
    t->user_timeout = t->o.user_timeout_s > 0 ? t->o.user_timeout_s : 30;
    if (t->o.sandbox.workdir) {
        t->sandbox_workdir_owned = pu_strdup(t->o.sandbox.workdir);
        t->o.sandbox.workdir = t->sandbox_workdir_owned;
    }
    pu_status st = PU_OK;
    if (o && o->names && *o->names) {
        char *list = pu_strdup(o->names);
        for (char *save = NULL, *tok = strtok_r(list, ", ", &save); tok && st == PU_OK;
             tok = strtok_r(NULL, ", ", &save))
            st = add_builtin(t, tok);
        pu_free(list);
    }
    if (st == PU_OK && o && o->tools_file) {
        char *data = NULL;
        size_t len = 0;
        st = pu_file_read_all(o->tools_file, &data, &len);
        if (st == PU_OK)
            st = pu_agent_tools_add_json(t, data, len, o->tools_file);
        pu_free(data);
    }
    if (st != PU_OK) {
        pu_agent_tools_destroy(t);
        return st;
    }
    *out = t;
    return PU_OK;
}

void pu_agent_tools_destroy(pu_agent_tools *t) {
    if (!t)
        return;
    for (int i = 0; i < t->n; i++) {
        pu_free(t->t[i].name);
        json_decref(t->t[i].schema);
        for (int k = 0; k < t->t[i].argc; k++)
            pu_free(t->t[i].argv[k]);
        pu_free(t->t[i].argv);
    }
    pu_free(t->t);
    pu_sandbox_session_close(t->py);
    if (t->workdir_temp && t->workdir) {
        /* read_file's own temp dir (only created without a python session) */
        rmdir(t->workdir);
    }
    pu_free(t->workdir);
    pu_free(t->sandbox_workdir_owned);
    pu_free(t->openai_json);
    pu_free(t);
}

int pu_agent_tools_count(const pu_agent_tools *t) {
    return t ? t->n : 0;
}
bool pu_agent_tools_has(const pu_agent_tools *t, const char *name) {
    return t && find_tool(t, name);
}

const char *pu_agent_tools_openai_json(const pu_agent_tools *t) {
    if (!t || !t->n)
        return NULL;
    if (!t->openai_json) {
        json_t *a = json_array();
        for (int i = 0; i < t->n; i++)
            json_array_append(a, t->t[i].schema);
        ((pu_agent_tools *)t)->openai_json = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(a);
        /* json_dumps allocates with malloc: copy into pu_ memory */
        char *c = pu_strdup(t->openai_json);
        free(t->openai_json);
        ((pu_agent_tools *)t)->openai_json = c;
    }
    return t->openai_json;
}

/* ------------------------------------------------------------------------ */
/* calls                                                                     */

static pu_status ensure_python(pu_agent_tools *t) {
    if (t->py)
        return PU_OK;
    PU_TRY(pu_sandbox_session_open(&t->o.sandbox, &t->py));
    if (!t->workdir)
        t->workdir = pu_strdup(pu_sandbox_session_workdir(t->py));
    return PU_OK;
}

const char *pu_agent_tools_workdir(pu_agent_tools *t) {
    if (t->workdir)
        return t->workdir;
    if (t->o.sandbox.workdir) {
        if (pu_mkdir_p(t->o.sandbox.workdir) == PU_OK)
            t->workdir = pu_strdup(t->o.sandbox.workdir);
    } else if (find_tool(t, "python") && ensure_python(t) == PU_OK) {
        return t->workdir;
    } else {
        char tmpl[512];
        const char *tmp = getenv("TMPDIR");
        snprintf(tmpl, sizeof tmpl, "%s/puyu-agent-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (mkdtemp(tmpl)) {
            t->workdir = pu_strdup(tmpl);
            t->workdir_temp = true;
        }
    }
    return t->workdir;
}

static void format_sandbox(const pu_sandbox_result *r, double timeout, pu_str *out) {
    pu_str clean = {0};
    if (r->out_len) {
        pu_agent_utf8_sanitize(r->out, r->out_len, &clean);
        pu_str_append(out, clean.p, clean.len);
        if (r->out_truncated)
            pu_str_appendf(out, "\n[output truncated: %zu of %llu bytes shown]\n", r->out_len,
                           (unsigned long long)r->out_total);
    }
    if (r->err_len) {
        pu_agent_utf8_sanitize(r->err, r->err_len, &clean);
        if (out->len && out->p[out->len - 1] != '\n')
            pu_str_putc(out, '\n');
        pu_str_append(out, clean.p, clean.len);
        if (r->err_truncated)
            pu_str_appendf(out, "\n[stderr truncated: %zu of %llu bytes shown]\n", r->err_len,
                           (unsigned long long)r->err_total);
    }
    pu_str_free(&clean);
    if (r->timed_out)
        pu_str_appendf(out,
                       "%s[timed out after %g s: the interpreter was killed and restarts "
                       "on the next call]",
                       out->len ? "\n" : "", timeout);
    else if (r->killed)
        pu_str_appendf(out, "%s[the interpreter was killed (exit %d)]", out->len ? "\n" : "",
                       r->exit_code);
    for (int i = 0; i < r->n_files; i++)
        pu_str_appendf(out, "%s[file: %s]", out->len ? "\n" : "", r->files[i]);
    if (!out->len)
        pu_str_puts(out, "(no output)");
}

static pu_status call_python(pu_agent_tools *t, const char *code, pu_str *res, bool *is_err) {
    PU_TRY(ensure_python(t));
    pu_sandbox_result r;
    PU_TRY(pu_sandbox_session_exec(t->py, code, strlen(code), &r));
    format_sandbox(&r, t->o.sandbox.timeout_s > 0 ? t->o.sandbox.timeout_s : 10, res);
    *is_err = r.error != NULL || r.timed_out || r.killed;
    pu_sandbox_result_free(&r);
    return PU_OK;
}

static void call_file(pu_agent_tools *t, const char *path, pu_str *res, bool *is_err) {
    *is_err = true;
    const char *wd = pu_agent_tools_workdir(t);
    if (!wd) {
        pu_str_puts(res, "error: no work directory");
        return;
    }
    /* /work/x (the sandbox's view) is the work dir too */
    if (!strncmp(path, "/work/", 6))
        path += 6;
    if (path[0] == '/' || !path[0]) {
        pu_str_puts(res, "error: path must be relative to the work directory");
        return;
    }
    char *full = pu_path_join(wd, path);
    char real[4096], realwd[4096];
    if (!realpath(full, real) || !realpath(wd, realwd)) {
        pu_str_appendf(res, "error: %s: %s", path, strerror(errno));
        pu_free(full);
        return;
    }
    pu_free(full);
    size_t wl = strlen(realwd);
    if (strncmp(real, realwd, wl) != 0 || (real[wl] != '/' && real[wl] != 0)) {
        pu_str_appendf(res, "error: %s is outside the work directory", path);
        return;
    }
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        pu_str_appendf(res, "error: %s is not a regular file", path);
        return;
    }
    char *data = NULL;
    size_t len = 0;
    if (pu_file_read_all(real, &data, &len) != PU_OK) {
        pu_str_appendf(res, "error: %s", pu_err_msg());
        return;
    }
    size_t cap = 64 << 10;
    pu_str clean = {0};
    pu_agent_utf8_sanitize(data, len < cap ? len : cap, &clean);
    pu_str_append(res, clean.p, clean.len);
    if (len > cap)
        pu_str_appendf(res, "\n[truncated: %zu of %zu bytes shown]", cap, len);
    pu_str_free(&clean);
    pu_free(data);
    *is_err = false;
}

/* run argv with `input` on stdin; capture stdout/stderr (64 KiB each) */
static void call_user(pu_agent_tools *t, const tool *tl, const char *input, pu_str *res,
                      bool *is_err) {
    *is_err = true;
    int in[2], out[2], err[2];
    if (pipe(in) || pipe(out) || pipe(err)) {
        pu_str_appendf(res, "error: pipe: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execvp(tl->argv[0], tl->argv);
        dprintf(2, "cannot run %s: %s", tl->argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        close(err[0]);
        pu_str_appendf(res, "error: fork: %s", strerror(errno));
        return;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t il = strlen(input), off = 0;
    pu_str so = {0}, se = {0};
    size_t cap = 64 << 10;
    double dl = pu_time_now() + t->user_timeout;
    bool timed_out = false;
    int fin = in[1], fout = out[0], ferr = err[0];
    sigset_t oldmask;
    pu_agent_sigpipe_block(&oldmask);
    while (fout >= 0 || ferr >= 0) {
        struct pollfd p[3];
        int n = 0, ii = -1, io = -1, ie = -1;
        if (fin >= 0 && off < il) {
            ii = n;
            p[n++] = (struct pollfd){fin, POLLOUT, 0};
        } else if (fin >= 0) {
            close(fin);
            fin = -1;
        }
        if (fout >= 0) {
            io = n;
            p[n++] = (struct pollfd){fout, POLLIN, 0};
        }
        if (ferr >= 0) {
            ie = n;
            p[n++] = (struct pollfd){ferr, POLLIN, 0};
        }
        double left = dl - pu_time_now();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (poll(p, (nfds_t)n, (int)(left * 1000) + 1) <= 0)
            continue;
        if (ii >= 0 && p[ii].revents) {
            ssize_t w = write(fin, input + off, il - off);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN) {
                close(fin);
                fin = -1;
            }
        }
        int *fds[2] = {&fout, &ferr};
        int idx[2] = {io, ie};
        pu_str *dst[2] = {&so, &se};
        for (int k = 0; k < 2; k++) {
            if (idx[k] < 0 || !p[idx[k]].revents)
                continue;
            char buf[8192];
            ssize_t r = read(*fds[k], buf, sizeof buf);
            if (r > 0) {
                if (dst[k]->len < cap)
                    pu_str_append(dst[k], buf,
                                  (size_t)r < cap - dst[k]->len ? (size_t)r : cap - dst[k]->len);
            } else if (r == 0 || errno != EINTR) {
                close(*fds[k]);
                *fds[k] = -1;
            }
        }
    }
    if (timed_out)
        kill(-pid, SIGKILL);
    if (fin >= 0) {
        close(fin);
        fin = -1;
    }
    pu_agent_sigpipe_restore(&oldmask);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
        ;
    if (fin >= 0)
        close(fin);
    if (fout >= 0)
        close(fout);
    if (ferr >= 0)
        close(ferr);
    pu_str clean = {0};
    if (timed_out) {
        pu_str_appendf(res, "error: tool %s timed out after %g s", tl->name, t->user_timeout);
    } else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        pu_agent_utf8_sanitize(se.p ? se.p : "", se.len, &clean);
        pu_str_appendf(res, "error: tool %s failed (%s %d): %s", tl->name,
                       WIFEXITED(ws) ? "exit" : "signal",
                       WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws), clean.p);
    } else {
        pu_agent_utf8_sanitize(so.p ? so.p : "", so.len, &clean);
        pu_str_append(res, clean.p, clean.len);
        *is_err = false;
    }
    pu_str_free(&clean);
    pu_str_free(&so);
    pu_str_free(&se);
}

pu_status pu_agent_tools_call(pu_agent_tools *t, const char *name, const char *args_json,
                              pu_str *res, bool *is_err) {
    pu_str_clear(res);
    pu_str_puts(res, "");
    *is_err = true;
    tool *tl = t ? find_tool(t, name) : NULL;
    if (!tl) {
        pu_str_appendf(res, "error: unknown tool \"%s\"; available:", name);
        for (int i = 0; t && i < t->n; i++)
            pu_str_appendf(res, " %s", t->t[i].name);
        return PU_OK;
    }
    json_error_t je;
    json_t *args = json_loads(args_json && *args_json ? args_json : "{}",
                              JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!args) {
        pu_str_appendf(res,
                       "error: arguments are not valid JSON (%s at column %d); send a JSON "
                       "object matching the tool's parameters",
                       je.text, je.column);
        return PU_OK;
    }
    pu_str err = {0};
    pu_status st = PU_OK;
    if (!check_args(tl, args, &err)) {
        pu_str_appendf(res, "error: invalid arguments for %s: %s", name, err.p);
    } else if (tl->kind == TOOL_PYTHON) {
        st = call_python(t, json_string_value(json_object_get(args, "code")), res, is_err);
    } else if (tl->kind == TOOL_CALC) {
        pu_str v = {0};
        if (pu_calc_eval(json_string_value(json_object_get(args, "expression")), &v) == PU_OK) {
            pu_str_append(res, v.p, v.len);
            *is_err = false;
        } else {
            pu_str_appendf(res, "error: %s", pu_err_msg());
        }
        pu_str_free(&v);
    } else if (tl->kind == TOOL_FILE) {
        call_file(t, json_string_value(json_object_get(args, "path")), res, is_err);
    } else {
        char *in = json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER);
        call_user(t, tl, in, res, is_err);
        free(in);
    }
    pu_str_free(&err);
    json_decref(args);
    return st;
}
