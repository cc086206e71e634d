/*
 * test_cli_lora.c — the LoRA contract of the CLI (black box, pt_bin()):
 *   forward|generate -m BASE --lora DIR[,DIR2] [--lora-scale S]
 *       logits / greedy ids = tools/gen_lora_infer_ref.py's PyTorch reference
 *       (tests/golden/lora), for the HF base and its GGUF form;
 *   chat|eval|serve --lora ... accepted (serve: NAME=DIR chosen per request by
 *       "model", listed by /v1/models, unknown model -> 404 naming it);
 *   lora merge -m BASE --lora DIR --out MERGED [--dtype f32|bf16]
 *       a plain model directory whose logits = the reference;
 *   lora export-gguf -m BASE --lora DIR --out FILE.gguf
 *       checked against llama.cpp's loader rules (src/llama-adapter.cpp) and
 *       applied to the GGUF base the way llama.cpp's graph does
 *       (W += alpha / rank * B A on the GGUF tensors): logits = reference;
 *   errors: exit 1 with an error line naming the file/field, usage exit 2.
 */
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "model/loaders.h"
#include "pt.h"

extern char **environ;

#define N_IDS 20
#define V     96
static const char *IDS = "22 26 63 79 43 44 60 10 89 4 74 51 95 17 22 12 33 39 55 90";
static const char *GQA2_GREEDY8 = "13 19 39 39 39 67 57 57";
static const char *A_GREEDY8 = "70 21 4 91 77 53 49 81";

static float *read_f32(const char *path, int64_t n) {
    char *buf = NULL;
    size_t len = 0;
    if (pu_file_read_all(path, &buf, &len) != PU_OK || len != (size_t)n * 4) {
        pt_fail_(__FILE__, __LINE__, "%s: unreadable or wrong size (%s)", path, pu_err_msg());
        pu_free(buf);
        return NULL;
    }
    return (float *)buf;
}

static char *rtrim(char *s) {
    size_t n = s ? strlen(s) : 0;
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
    return s;
}

/* run `puyu ARGS`; returns exit status, *out stdout (owned), *err stderr (owned) */
static int puyu(const char *args, char **out, char **err) {
    char ep[512], cmd[8192];
    pt_tmp_path("cli_lora_stderr.txt", ep, sizeof ep);
    snprintf(cmd, sizeof cmd, "%s %s 2>'%s'", pt_bin(), args, ep);
    char *o = NULL;
    int rc = pt_run(cmd, &o);
    if (out)
        *out = o;
    else
        pu_free(o);
    if (err) {
        size_t n = 0;
        *err = NULL;
        pu_file_read_all(ep, err, &n);
    }
    return rc;
}

/* `puyu forward ... --out tmp` and compare with a reference file */
static void check_forward(const char *model, const char *lora_args, const char *ref, double atol) {
    char out[512], args[4096];
    pt_tmp_path("cli_lora_fwd.f32", out, sizeof out);
    snprintf(args, sizeof args, "forward -m %s --ids \"%s\" --out '%s' %s", model, IDS, out,
             lora_args);
    char *err = NULL;
    int rc = puyu(args, NULL, &err);
    PT_CHECK_MSG(rc == 0, "puyu %s: exit %d: %s", args, rc, err ? err : "");
    pu_free(err);
    if (rc)
        return;
    float *got = read_f32(out, N_IDS * V), *want = read_f32(ref, N_IDS * V);
    if (got && want) {
        char label[4600];
        snprintf(label, sizeof label, "forward %s %s", model, lora_args);
        PT_ALLCLOSE(label, got, want, N_IDS * V, atol, 1e-4);
    }
    pu_free(got);
    pu_free(want);
}

static void expect_err(const char *args, int code, const char *k1, const char *k2) {
    char *err = NULL;
    int rc = puyu(args, NULL, &err);
    PT_CHECK_MSG(rc == code && (code == 2 || (err && strstr(err, "error"))) &&
                     (!k1 || (err && strstr(err, k1))) && (!k2 || (err && strstr(err, k2))),
                 "puyu %s: exit %d (want %d), stderr: %s (want '%s', '%s')", args, rc, code,
                 err ? err : "", k1 ? k1 : "", k2 ? k2 : "");
    pu_free(err);
}

/* ---------------------------------------------------------------- serve */

static pid_t g_pid;

static int serve_start(const char *args, char *log, size_t cap) {
    pt_tmp_path("cli_lora_serve.log", log, cap);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "exec %s serve %s --port 0 --threads 1 2>'%s' >/dev/null", pt_bin(),
             args, log);
    char *argv[] = {"sh", "-c", cmd, NULL};
    if (posix_spawn(&g_pid, "/bin/sh", NULL, NULL, argv, environ) != 0)
        return 0;
    for (int i = 0; i < 1200; i++) {
        char *txt = NULL;
        size_t len = 0;
        if (pu_file_read_all(log, &txt, &len) == PU_OK) {
            const char *p = strstr(txt, "listening on http://");
            int port = 0;
            if (p) {
                const char *colon = strchr(p + strlen("listening on http://"), ':');
                port = colon ? atoi(colon + 1) : 0;
            }
            pu_free(txt);
            if (port)
                return port;
        }
        int st;
        if (waitpid(g_pid, &st, WNOHANG) == g_pid) {
            g_pid = 0;
            return 0;
        }
        usleep(50000);
    }
    return 0;
}

static void serve_stop(void) {
    if (g_pid <= 0)
        return;
    kill(g_pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(g_pid, NULL, WNOHANG) == g_pid) {
            g_pid = 0;
            return;
        }
        usleep(50000);
    }
    kill(g_pid, SIGKILL);
    waitpid(g_pid, NULL, 0);
    g_pid = 0;
}

/* curl: returns the HTTP status, *body owned */
static int http(int port, const char *path, const char *json, char **body) {
    char cmd[8192];
    if (json)
        snprintf(cmd, sizeof cmd,
                 "curl -s -w '\\n%%{http_code}' -H 'Content-Type: application/json' "
                 "-d '%s' http://127.0.0.1:%d%s",
                 json, port, path);
    else
        snprintf(cmd, sizeof cmd, "curl -s -w '\\n%%{http_code}' http://127.0.0.1:%d%s", port,
                 path);
    char *o = NULL;
    if (pt_run(cmd, &o) != 0 || !o) {
        pu_free(o);
        *body = NULL;
        return -1;
    }
    rtrim(o);
    char *nl = strrchr(o, '\n');
    int code = nl ? atoi(nl + 1) : -1;
    if (nl)
        *nl = 0;
    *body = o;
    return code;
}

/* the "text" of a completion response (JSON-decoded) */
static char *completion_text(const char *body) {
    json_error_t je;
    json_t *j = body ? json_loads(body, 0, &je) : NULL;
    const char *t = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text"));
    char *r = pu_strdup(t ? t : "(no text)");
    json_decref(j);
    return r;
}

/* ---------------------------------------------------------------- GGUF adapter */

static const pu_gguf_kv *kv(const pu_gguf_file *f, const char *k) {
    return pu_gguf_find_kv_(f, k);
}

static bool kv_is_str(const pu_gguf_file *f, const char *k, const char *v) {
    const pu_gguf_kv *x = kv(f, k);
    return x && x->type == PU_GGUF_STRING && x->str_len == strlen(v) &&
           memcmp(x->str, v, x->str_len) == 0;
}

/* Check the adapter against llama.cpp's loader rules and apply it to a copy of
 * the F32 GGUF base the way llama.cpp's graph does; writes the adapted GGUF
 * to out_gguf. Returns the number of rule violations (reported). */
static int check_and_apply(const char *adapter, const char *base, const char *arch,
                           const char *out_gguf) {
    char *abuf = NULL, *bbuf = NULL;
    size_t alen = 0, blen = 0;
    int bad = 0;
    if (pu_file_read_all(adapter, &abuf, &alen) != PU_OK ||
        pu_file_read_all(base, &bbuf, &blen) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "%s", pu_err_msg());
        return 1;
    }
    pu_gguf_file fa = {0}, fb = {0};
    if (pu_gguf_parse_(abuf, alen, adapter, &fa) != PU_OK ||
        pu_gguf_parse_(bbuf, blen, base, &fb) != PU_OK) {
        pt_fail_(__FILE__, __LINE__, "%s", pu_err_msg());
        bad++;
        goto done;
    }
#define RULE(c, ...)                                   \
    do {                                               \
        if (!(c)) {                                    \
            pt_fail_(__FILE__, __LINE__, __VA_ARGS__); \
            bad++;                                     \
        }                                              \
    } while (0)
    RULE(kv_is_str(&fa, "general.type", "adapter"), "general.type must be 'adapter'");
    RULE(kv_is_str(&fa, "adapter.type", "lora"), "adapter.type must be 'lora'");
    RULE(kv_is_str(&fa, "general.architecture", arch), "general.architecture must be %s", arch);
    RULE(kv_is_str(&fb, "general.architecture", arch), "the base is not %s", arch);
    const pu_gguf_kv *al = kv(&fa, "adapter.lora.alpha");
    RULE(al && al->type == PU_GGUF_F32, "adapter.lora.alpha must be an F32 value");
    float alpha = al ? (float)al->f : 0.0f;
    for (int64_t i = 0; i < fa.n_tensors; i++) {
        const pu_gguf_tensor *t = &fa.t[i];
        char name[200];
        snprintf(name, sizeof name, "%.*s", (int)t->name_len, t->name);
        size_t nl = strlen(name);
        bool is_a = nl > 7 && !strcmp(name + nl - 7, ".lora_a");
        bool is_b = nl > 7 && !strcmp(name + nl - 7, ".lora_b");
        RULE(is_a || is_b, "tensor '%s': unexpected suffix", name);
        if (!is_a)
            continue;
        name[nl - 7] = 0; /* the base tensor */
        char bname[210];
        snprintf(bname, sizeof bname, "%s.lora_b", name);
        const pu_gguf_tensor *tb = pu_gguf_find_tensor_(&fa, bname);
        const pu_gguf_tensor *w = pu_gguf_find_tensor_(&fb, name);
        RULE(tb != NULL, "'%s': lora_b missing", name);
        RULE(w != NULL, "'%s' does not exist in the base", name);
        if (!tb || !w)
            continue;
        RULE(t->type == 0 && tb->type == 0 && w->type == 0, "'%s': F32 expected", name);
        /* llama.cpp: model ne[0] == a ne[0], model ne[1] == b ne[1], a ne[1] == b ne[0] */
        RULE(w->ne[0] == t->ne[0] && w->ne[1] == tb->ne[1] && t->ne[1] == tb->ne[0],
             "'%s': shapes a [%lld,%lld] b [%lld,%lld] vs base [%lld,%lld]", name,
             (long long)t->ne[0], (long long)t->ne[1], (long long)tb->ne[0], (long long)tb->ne[1],
             (long long)w->ne[0], (long long)w->ne[1]);
        if (bad)
            continue;
        /* llama.cpp's llm_build_lora_mm: y += (alpha / rank) * b (a x), rank = b ne[0] */
        int64_t in = w->ne[0], out = w->ne[1], r = tb->ne[0];
        float s = alpha / (float)r;
        const float *A = (const float *)(fa.data + t->offset);
        const float *B = (const float *)(fa.data + tb->offset);
        float *W = (float *)(bbuf + (fb.data - (const uint8_t *)bbuf) + w->offset);
        for (int64_t o = 0; o < out; o++)
            for (int64_t j = 0; j < r; j++)
                for (int64_t k = 0; k < in; k++)
                    W[o * in + k] += s * B[o * r + j] * A[j * in + k];
    }
    if (!bad)
        PT_OK(pu_file_write_atomic(out_gguf, bbuf, blen));
done:
    pu_gguf_free_(&fa);
    pu_gguf_free_(&fb);
    pu_free(abuf);
    pu_free(bbuf);
    return bad;
}

PT_SUITE(cli_lora) {
    const char *A = "tests/golden/lora/a", *B = "tests/golden/lora/b";
    const char *GG = "tests/golden/gguf/gqa2-internlm2-f32.gguf";
    char args[4096], p[512], p2[512];

    if (PT_TEST("forward --lora: HF base, GGUF base, two adapters, --lora-scale")) {
        snprintf(args, sizeof args, "--lora %s", A);
        check_forward("tests/golden/gqa2", args, "tests/golden/lora/logits_a.f32", 1e-4);
        check_forward(GG, args, "tests/golden/lora/logits_a.f32", 1e-4);
        snprintf(args, sizeof args, "--lora %s", B);
        check_forward("tests/golden/gqa2", args, "tests/golden/lora/logits_b.f32", 1e-4);
        snprintf(args, sizeof args, "--lora %s,%s", A, B);
        check_forward("tests/golden/gqa2", args, "tests/golden/lora/logits_ab.f32", 1e-4);
        check_forward(GG, args, "tests/golden/lora/logits_ab.f32", 1e-4);
        snprintf(args, sizeof args, "--lora %s --lora-scale 0.5", A);
        check_forward("tests/golden/gqa2", args, "tests/golden/lora/logits_a_half.f32", 1e-4);
        /* without --lora: the base */
        check_forward("tests/golden/gqa2", "", "tests/golden/gqa2/logits.f32", 1e-4);
    }

    if (PT_TEST("generate --lora: greedy ids = reference")) {
        char *out = NULL, *err = NULL;
        snprintf(args, sizeof args,
                 "generate -m tests/golden/gqa2 --ids \"%s\" -n 8 --temp 0 --print-ids --lora %s",
                 IDS, A);
        int rc = puyu(args, &out, &err);
        PT_CHECK_MSG(rc == 0, "exit %d: %s", rc, err ? err : "");
        PT_EQ_STR(rtrim(out), A_GREEDY8);
        pu_free(out);
        pu_free(err);
        snprintf(args, sizeof args,
                 "generate -m %s --ids \"%s\" -n 8 --temp 0 --print-ids --lora %s", GG, IDS, A);
        rc = puyu(args, &out, NULL);
        PT_EQ_STR(rtrim(out), A_GREEDY8);
        pu_free(out);
    }

    if (PT_TEST("every model command documents --lora")) {
        const char *cmds[] = {"forward",    "generate",        "chat", "serve", "eval",
                              "lora merge", "lora export-gguf"};
        for (int i = 0; i < 7; i++) {
            char *out = NULL;
            snprintf(args, sizeof args, "%s --help", cmds[i]);
            int rc = puyu(args, &out, NULL);
            PT_CHECK_MSG(rc == 0 && out && strstr(out, "--lora"), "%s --help: exit %d", cmds[i],
                         rc);
            pu_free(out);
        }
    }

    if (PT_TEST("chat and eval --lora: adapters load (errors name the adapter)")) {
        /* chat reads stdin; /quit at once: exit 0 with a good adapter */
        char *err = NULL;
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "echo /quit | %s chat -m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model "
                 "--lora %s 2>&1",
                 pt_bin(), A);
        int rc = pt_run(cmd, &err);
        PT_CHECK_MSG(rc == 0, "chat --lora: exit %d: %s", rc, err ? err : "");
        pu_free(err);
        pt_tmp_path("no_such_adapter", p, sizeof p);
        snprintf(args, sizeof args,
                 "chat -m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model --lora %s "
                 "</dev/null",
                 p);
        expect_err(args, 1, "no_such_adapter", "adapter_config.json");
        pt_tmp_path("cli_lora_eval", p2, sizeof p2);
        snprintf(args, sizeof args,
                 "eval -m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model --tasks "
                 "tests/golden/eval/mc20_task.json --data tests/golden/eval --out '%s' -q "
                 "--lora %s",
                 p2, p);
        expect_err(args, 1, "no_such_adapter", "adapter_config.json");
        /* an adapter for another base */
        snprintf(args, sizeof args,
                 "forward -m tests/golden/gqa4 --ids \"1 2\" --out '%s/x' --lora %s", p2, A);
        expect_err(args, 1, "adapter_model.safetensors", "another model");
    }

    if (PT_TEST("eval --lora changes the scores of an adapted model")) {
        char *o1 = NULL, *o2 = NULL;
        pt_tmp_path("cli_lora_eval_base", p, sizeof p);
        pt_tmp_path("cli_lora_eval_a", p2, sizeof p2);
        snprintf(args, sizeof args,
                 "eval -m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model --tasks "
                 "tests/golden/eval/mc20_task.json --data tests/golden/eval --out '%s' -q "
                 "&& cat '%s/results.json'",
                 p, p);
        int r1 = puyu(args, &o1, NULL);
        snprintf(args, sizeof args,
                 "eval -m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model --tasks "
                 "tests/golden/eval/mc20_task.json --data tests/golden/eval --out '%s' -q "
                 "--lora %s && cat '%s/results.json'",
                 p2, A, p2);
        int r2 = puyu(args, &o2, NULL);
        if (r1 != 0) {
            pt_skip("eval on the tiny model with tiny_bpe does not run here");
        } else {
            PT_EQ_I64(r2, 0);
            PT_CHECK_MSG(o1 && o2 && strcmp(o1, o2) != 0,
                         "results with and without the adapter are identical");
        }
        pu_free(o1);
        pu_free(o2);
    }

    if (PT_TEST("serve --lora NAME=DIR: chosen by \"model\", listed, unknown -> 404")) {
        char log[512];
        snprintf(args, sizeof args,
                 "-m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model --model-name base "
                 "--lora ft=%s --lora both=%s,%s",
                 A, A, B);
        int port = serve_start(args, log, sizeof log);
        PT_CHECK_MSG(port > 0, "server did not start (log %s)", log);
        if (port > 0) {
            char *body = NULL;
            PT_EQ_I64(http(port, "/v1/models", NULL, &body), 200);
            PT_CHECK_MSG(body && strstr(body, "\"id\":\"base\"") && strstr(body, "\"id\":\"ft\"") &&
                             strstr(body, "\"id\":\"both\""),
                         "/v1/models: %s", body ? body : "");
            pu_free(body);
            const char *ids_json = "[22,26,63,79,43,44,60,10,89,4,74,51,95,17,22,12,33,39,55,90]";
            char req[1024], *texts[2] = {NULL, NULL};
            const char *models[2] = {"base", "ft"};
            for (int i = 0; i < 2; i++) {
                snprintf(req, sizeof req,
                         "{\"model\":\"%s\",\"prompt\":%s,\"max_tokens\":8,\"temperature\":0}",
                         models[i], ids_json);
                PT_EQ_I64(http(port, "/v1/completions", req, &body), 200);
                PT_CHECK_MSG(body && strstr(body, models[i]), "response names its model: %s",
                             body ? body : "");
                texts[i] = rtrim(completion_text(body));
                pu_free(body);
            }
            /* the same greedy continuations as `generate` (ids checked above) */
            const char *want[2] = {GQA2_GREEDY8, A_GREEDY8};
            for (int i = 0; i < 2; i++) {
                char *out = NULL;
                snprintf(args, sizeof args,
                         "generate -m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model --ids "
                         "\"%s\" -n 8 --temp 0 %s%s 2>/dev/null | head -c 4000",
                         IDS, i ? "--lora " : "", i ? A : "");
                puyu(args, &out, NULL);
                PT_CHECK_MSG(out && texts[i] && strcmp(rtrim(out), texts[i]) == 0,
                             "model %s: server text '%s' != generate text '%s' (ids %s)", models[i],
                             texts[i] ? texts[i] : "", out ? out : "", want[i]);
                pu_free(out);
            }
            PT_CHECK(texts[0] && texts[1] && strcmp(texts[0], texts[1]) != 0);
            pu_free(texts[0]);
            pu_free(texts[1]);
            snprintf(req, sizeof req, "{\"model\":\"nope\",\"prompt\":%s,\"max_tokens\":2}",
                     ids_json);
            PT_EQ_I64(http(port, "/v1/completions", req, &body), 404);
            PT_CHECK_MSG(body && strstr(body, "nope") && strstr(body, "model_not_found"),
                         "404 body: %s", body ? body : "");
            pu_free(body);
            snprintf(req, sizeof req,
                     "{\"model\":\"both\",\"prompt\":%s,\"max_tokens\":4,\"stream\":true}",
                     ids_json);
            PT_EQ_I64(http(port, "/v1/completions", req, &body), 200);
            PT_CHECK_MSG(body && strstr(body, "\"model\":\"both\"") && strstr(body, "[DONE]"),
                         "stream: %s", body ? body : "");
            pu_free(body);
        }
        serve_stop();
        /* a bad adapter: the server does not start, the error names it */
        pt_tmp_path("no_such_adapter", p, sizeof p);
        snprintf(args, sizeof args,
                 "serve -m tests/golden/gqa2 -t tests/golden/tok/tiny_bpe.model --port 0 "
                 "--lora x=%s",
                 p);
        expect_err(args, 1, "no_such_adapter", "adapter_config.json");
    }

    if (PT_TEST("lora merge: a plain model directory with the reference logits")) {
        pt_tmp_path("cli_merged", p, sizeof p);
        snprintf(args, sizeof args, "lora merge -m tests/golden/gqa2 --lora %s,%s --out '%s'", A, B,
                 p);
        char *err = NULL;
        int rc = puyu(args, NULL, &err);
        PT_CHECK_MSG(rc == 0, "exit %d: %s", rc, err ? err : "");
        pu_free(err);
        char cfg[600];
        snprintf(cfg, sizeof cfg, "%s/config.json", p);
        PT_CHECK(pu_file_exists(cfg));
        check_forward(p, "", "tests/golden/lora/logits_ab.f32", 1e-4);
        /* from the GGUF base, with --lora-scale */
        pt_tmp_path("cli_merged_gguf", p2, sizeof p2);
        snprintf(args, sizeof args, "lora merge -m %s --lora %s --lora-scale 0.5 --out '%s'", GG, A,
                 p2);
        PT_EQ_I64(puyu(args, NULL, NULL), 0);
        check_forward(p2, "", "tests/golden/lora/logits_a_half.f32", 1e-4);
        /* bf16 output loads and stays close */
        pt_tmp_path("cli_merged_bf16", p2, sizeof p2);
        snprintf(args, sizeof args,
                 "lora merge -m tests/golden/gqa2 --lora %s --dtype bf16 --out '%s'", A, p2);
        PT_EQ_I64(puyu(args, NULL, NULL), 0);
        check_forward(p2, "", "tests/golden/lora/logits_a.f32", 1.0);
        /* errors */
        snprintf(args, sizeof args, "lora merge -m tests/golden/gqa2 --lora %s --out '%s'", A, p);
        expect_err(args, 1, p, "not an empty directory");
        snprintf(args, sizeof args, "lora merge -m tests/golden/gqa2 --lora %s", A);
        expect_err(args, 2, "--out", NULL);
        snprintf(args, sizeof args,
                 "lora merge -m tests/golden/gqa2 --lora %s --out '%s/z' --dtype f16", A, p);
        expect_err(args, 2, "--dtype", NULL);
        expect_err("lora frobnicate", 2, "usage", NULL);
    }

    if (PT_TEST("lora export-gguf: llama.cpp's loader rules; applied = reference")) {
        const char *which[2] = {A, B};
        const char *refs[2] = {"tests/golden/lora/logits_a.f32", "tests/golden/lora/logits_b.f32"};
        for (int i = 0; i < 2; i++) {
            pt_tmp_path(i ? "adapter_b.gguf" : "adapter_a.gguf", p, sizeof p);
            /* from the HF base (the adapter's own) and from its GGUF form: same file */
            snprintf(args, sizeof args,
                     "lora export-gguf -m tests/golden/gqa2 --lora %s --out '%s'", which[i], p);
            char *err = NULL;
            int rc = puyu(args, NULL, &err);
            PT_CHECK_MSG(rc == 0, "exit %d: %s", rc, err ? err : "");
            pu_free(err);
            pt_tmp_path("adapter_from_gguf.gguf", p2, sizeof p2);
            snprintf(args, sizeof args, "lora export-gguf -m %s --lora %s --out '%s'", GG, which[i],
                     p2);
            PT_EQ_I64(puyu(args, NULL, NULL), 0);
            char *x = NULL, *y = NULL;
            size_t nx = 0, ny = 0;
            pu_file_read_all(p, &x, &nx);
            pu_file_read_all(p2, &y, &ny);
            PT_CHECK(x && y && nx == ny && memcmp(x, y, nx) == 0);
            pu_free(x);
            pu_free(y);
            pt_tmp_path("adapted_base.gguf", p2, sizeof p2);
            if (check_and_apply(p, GG, "internlm2", p2) == 0)
                check_forward(p2, "", refs[i], 1e-4);
        }
        /* the llama-architecture GGUF base: the adapter names that architecture */
        pt_tmp_path("adapter_llama.gguf", p, sizeof p);
        snprintf(args, sizeof args,
                 "lora export-gguf -m tests/golden/gguf/gqa2-llama-f16.gguf --lora %s --out '%s'",
                 A, p);
        PT_EQ_I64(puyu(args, NULL, NULL), 0);
        char *x = NULL;
        size_t nx = 0;
        pu_gguf_file f = {0};
        if (pu_file_read_all(p, &x, &nx) == PU_OK && pu_gguf_parse_(x, nx, p, &f) == PU_OK) {
            PT_CHECK(kv_is_str(&f, "general.architecture", "llama"));
            PT_EQ_I64(f.n_tensors, 2 * (2 * 7 + 1));
        }
        pu_gguf_free_(&f);
        pu_free(x);
        expect_err("lora export-gguf -m tests/golden/gqa2", 2, "--lora", NULL);
    }
}
