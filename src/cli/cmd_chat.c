/*
 * cmd_chat.c — `puyu chat`: a terminal chat with history.
 *
 * Reads one user message per stdin line (works with a pipe, so tests can
 * script it), renders the whole conversation with the InternLM2 chat
 * template (pu_chat), submits it to a one-sequence pu_engine and streams the
 * reply to stdout as it is generated. Commands: /reset (forget the history),
 * /system TEXT (set the system prompt; "/system" alone clears it), /quit.
 * Prompts ("> ") and notices go to stderr only when stdin is a terminal, so
 * stdout holds exactly the replies, one per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../serve/serve_impl.h"
#include "cmds.h"
#include "common.h"
#include "opts.h"
#include "puyu/pu_chat.h"
#include "puyu/pu_engine.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

typedef struct turn {
    char *role;
    char *content;
} turn;

typedef struct history {
    turn *t;
    int n, cap;
} history;

static void hist_add(history *h, const char *role, const char *content, size_t len) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        h->t = pu_realloc(h->t, (size_t)h->cap * sizeof(turn));
    }
    h->t[h->n].role = pu_strdup(role);
    h->t[h->n].content = pu_strndup(content, len);
    h->n++;
}

static void hist_clear(history *h) {
    for (int i = 0; i < h->n; i++) {
        pu_free(h->t[i].role);
        pu_free(h->t[i].content);
    }
    h->n = 0;
}

/* Generate one reply to the conversation; streams it to stdout and appends
 * it to the history. */
static pu_status reply(pu_engine *e, const pu_tok *tok, const char *system, history *h,
                       const pu_engine_request *tmpl, bool tty) {
    pu_chat c;
    pu_chat_init(&c);
    if (system && *system)
        pu_chat_add(&c, "system", NULL, system);
    for (int i = 0; i < h->n; i++)
        pu_chat_add(&c, h->t[i].role, NULL, h->t[i].content);
    pu_chat_render_opts ro = {0};
    ro.add_generation_prompt = true;
    pu_str text = {0};
    pu_status st = pu_chat_render(&c, &ro, &text);
    pu_chat_free(&c);
    int32_t *ids = NULL;
    int64_t n = 0;
    if (st == PU_OK) {
        pu_tok_encode_opts eo = pu_tok_encode_default_opts();
        eo.add_bos = pu_tok_bos(tok) >= 0;
        st = pu_tok_encode(tok, text.p ? text.p : "", text.len, &eo, &ids, &n);
    }
    pu_str_free(&text);
    if (st != PU_OK) {
        pu_free(ids);
        return st;
    }
    pu_engine_request r = *tmpl;
    r.prompt = ids;
    r.n_prompt = n;
    pu_sq *q = pu_sq_new();
    st = pu_sq_submit(e, &r, q);
    pu_free(ids);
    if (st != PU_OK) {
        pu_sq_unref(q);
        return st;
    }
    size_t shown = 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        bool done = q->done;
        size_t tl = q->text.len;
        if (tl > shown) {
            fwrite(q->text.p + shown, 1, tl - shown, stdout);
            shown = tl;
        }
        int64_t nt = q->n_toks;
        pthread_mutex_unlock(&q->mu);
        fflush(stdout);
        if (done)
            break;
        pu_sq_wait(q, tl, nt, 0.25);
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (q->fin == PU_FINISH_ERROR) {
        st = pu_err_set(PU_ERR_INTERNAL, "generation failed: %s", q->err ? q->err : "?");
    } else {
        hist_add(h, "assistant", q->text.p ? q->text.p : "", q->text.len);
        if (tty && q->fin == PU_FINISH_LENGTH)
            fprintf(stderr, "[reply cut at the token limit]\n");
    }
    pu_sq_unref(q);
    return st;
}

int pu_cmd_chat(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *system0 = NULL, *lora_dirs = NULL, *kv_s = NULL,
               *prompt = NULL;
    int64_t max_tokens = 512, top_k = 40, seed = 42, ctx = 0;
    double temp = 0.8, top_p = 0.95, min_p = 0.0, rep = 1.0, lora_scale = 1.0;
    pu_lora **lora = NULL;
    float *lora_sc = NULL;
    int n_lora = 0;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL",
         "model directory, .gguf or llama2.c .bin (default: $PUYU_MODEL, else the embedded "
         "models/default.gguf)",
         0, 0},
        {"tokenizer", 't', PU_OPT_STRING, &tok_path, "TOK",
         "tokenizer (default: the model's own, e.g. DIR/tokenizer.model)", 0, 0},
        {"prompt", 'p', PU_OPT_STRING, &prompt, "TEXT",
         "send this one message, print the reply, exit (no stdin)", 0, 0},
        {"system", 0, PU_OPT_STRING, &system0, "TEXT", "system prompt", 0, 0},
        {"max-tokens", 'n', PU_OPT_INT, &max_tokens, "N", "max tokens per reply", 1, 1e9},
        {"temp", 0, PU_OPT_DOUBLE, &temp, "T", "temperature; 0 = greedy", 0, 100},
        {"top-k", 0, PU_OPT_INT, &top_k, "K", "top-k (0 = off)", 0, 1e9},
        {"top-p", 0, PU_OPT_DOUBLE, &top_p, "P", "nucleus sampling (1 = off)", 1e-9, 1},
        {"min-p", 0, PU_OPT_DOUBLE, &min_p, "P", "min-p (0 = off)", 0, 1},
        {"repeat-penalty", 0, PU_OPT_DOUBLE, &rep, "R", "repetition penalty (1 = off)", 1e-6, 100},
        {"seed", 's', PU_OPT_INT, &seed, "S", "RNG seed", 0, 9.2e18},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N", "context limit (default: from the model)", 2, 1e9},
        {"lora", 0, PU_OPT_STRING, &lora_dirs, "DIR[,DIR2]",
         "PEFT LoRA adapter directories, applied unmerged", 0, 0},
        {"lora-scale", 0, PU_OPT_DOUBLE, &lora_scale, "S",
         "multiplier of every adapter's alpha/r", -1e6, 1e6},
        PU_CLI_KV_OPT(kv_s),
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu chat",
        "[-m MODEL] [-p TEXT] [-t TOK] [--system TEXT] [--temp T] [--max-tokens N] "
        "[--lora DIR[,DIR2]] [--lora-scale S] [--kv-type f32|f16|q8]",
        "Chat in the terminal (InternLM2 chat template, history kept). One message per line;\n"
        "commands: /reset (forget the conversation), /system TEXT (set the system prompt),\n"
        "/quit. Replies stream to stdout. -p TEXT: one message, its reply, exit.\n"
        "Without -m: $PUYU_MODEL, else models/default.gguf (beside the binary, in the repo\n"
        "root of build/<mode>/puyu, or under the current directory)."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    model = pu_cli_default_model(model);
    if (!model) {
        fprintf(stderr, "puyu chat: need -m MODEL (no $PUYU_MODEL, no models/default.gguf; see "
                        "--help)\n");
        return 2;
    }
    bool tty = !prompt && isatty(0);
    pu_model *m = NULL;
    pu_tok *tok = NULL;
    pu_engine *e = NULL;
    history h = {0};
    char *system = system0 ? pu_strdup(system0) : NULL;
    char *line = NULL;
    size_t cap = 0;
    int ret = 1;
    if (pu_model_load(model, &m) != PU_OK)
        goto done;
    if (pu_cli_load_tokenizer(m, model, tok_path, &tok) != PU_OK)
        goto done;
    pu_engine_params ep = pu_engine_default_params();
    ep.max_batch = 1;
    ep.ctx = ctx;
    if (pu_cli_kv_type(kv_s, &ep.kv_type) != PU_OK)
        goto done;
    if (pu_engine_create(m, tok, &ep, &e) != PU_OK)
        goto done;
    pu_engine_request tmpl = {0};
    tmpl.max_tokens = max_tokens;
    tmpl.sample = pu_sample_default_params();
    tmpl.sample.temperature = (float)temp;
    tmpl.sample.top_k = top_k;
    tmpl.sample.top_p = (float)top_p;
    tmpl.sample.min_p = (float)min_p;
    tmpl.sample.repetition_penalty = (float)rep;
    tmpl.sample.seed = (uint64_t)seed;
    if (pu_lora_load_list(lora_dirs, pu_model_config(m), &lora, &n_lora) != PU_OK)
        goto done;
    lora_sc = pu_calloc((size_t)(n_lora + 1), sizeof *lora_sc);
    for (int i = 0; i < n_lora; i++)
        lora_sc[i] = (float)lora_scale;
    tmpl.lora = (const pu_lora *const *)lora;
    tmpl.lora_scales = lora_sc;
    tmpl.n_lora = n_lora;
    if (tty)
        fprintf(stderr, "puyu chat — /reset, /system TEXT, /quit\n");
    for (int nturn = 0;; nturn++) {
        if (tty) {
            fprintf(stderr, "> ");
            fflush(stderr);
        }
        ssize_t n;
        if (prompt) {
            if (nturn > 0)
                break;
            line = strdup(prompt);
            cap = strlen(prompt) + 1;
            n = (ssize_t)strlen(prompt);
        } else
            n = getline(&line, &cap, stdin);
        if (n < 0)
            break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (n == 0)
            continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit"))
            break;
        if (!strcmp(line, "/reset")) {
            hist_clear(&h);
            if (tty)
                fprintf(stderr, "[conversation reset]\n");
            continue;
        }
        if (!strncmp(line, "/system", 7) && (line[7] == 0 || line[7] == ' ')) {
            const char *t = line + 7;
            while (*t == ' ')
                t++;
            pu_free(system);
            system = *t ? pu_strdup(t) : NULL;
            if (tty)
                fprintf(stderr, "[system prompt %s]\n", system ? "set" : "cleared");
            continue;
        }
        hist_add(&h, "user", line, (size_t)n);
        tmpl.sample.seed++;
        if (reply(e, tok, system, &h, &tmpl, tty) != PU_OK) {
            /* e.g. the conversation outgrew the context: say so, keep going */
            fprintf(stderr, "error: %s\n", pu_err_msg());
            pu_free(h.t[h.n - 1].role);
            pu_free(h.t[h.n - 1].content);
            h.n--;
        }
    }
    ret = 0;
done:
    if (ret)
        fprintf(stderr, "error: %s\n", pu_err_msg());
    free(line);
    hist_clear(&h);
    pu_free(h.t);
    pu_free(system);
    if (e)
        pu_engine_destroy(e);
    pu_lora_list_destroy(lora, n_lora);
    pu_free(lora_sc);
    pu_tok_destroy(tok);
    pu_model_destroy(m);
    return ret;
}
