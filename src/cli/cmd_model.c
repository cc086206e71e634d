/*
 * cmd_model.c — `puyu forward`, `puyu generate`, `puyu info`.
 *
 * These commands only parse options, call the model / tokenizer / sampler
 * libraries, print, and map statuses to exit codes (0 ok, 1 error, 2 usage).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "common.h"
#include "opts.h"
#include "puyu/pu_core.h"
#include "puyu/pu_infer.h"
#include "puyu/pu_lora.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

static int fail(const char *cmd) {
    fprintf(stderr, "%s: error: %s\n", cmd, pu_err_msg());
    return 1;
}

/* Context limit: --ctx if given, else the model's (pu_config_ctx_limit). */
static int64_t ctx_limit(const pu_config *c, int64_t ctx_opt) {
    return ctx_opt > 0 ? ctx_opt : pu_config_ctx_limit(c);
}

/* --lora DIR[,DIR2] --lora-scale S on a session: loads the adapters
 * (owned in *l / *nl) and applies them unmerged. */
static pu_status session_lora(pu_session *s, const pu_model *m, const char *dirs, double scale,
                              pu_lora ***l, int *nl) {
    PU_TRY(pu_lora_load_list(dirs, pu_model_config(m), l, nl));
    float sc[64];
    if (*nl > 64)
        return pu_err_set(PU_ERR_INVALID, "--lora: at most 64 adapters");
    for (int i = 0; i < *nl; i++)
        sc[i] = (float)scale;
    return pu_session_set_adapters(s, (const pu_lora *const *)*l, sc, *nl);
}

/* ---------------------------------------------------------------- forward */

int pu_cmd_forward(int argc, char **argv) {
    const char *model = NULL, *ids_s = NULL, *out = NULL, *lora_dirs = NULL, *kv_s = NULL;
    int64_t ctx = 0;
    double lora_scale = 1.0;
    pu_lora **lora = NULL;
    int n_lora = 0;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL", "model directory, .gguf or llama2.c .bin", 0, 0},
        {"ids", 0, PU_OPT_STRING, &ids_s, "\"1 2 3\"", "token ids (space or comma separated)", 0, 0},
        {"out", 'o', PU_OPT_STRING, &out, "FILE", "output: float32 LE logits [n_ids, vocab]", 0, 0},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N", "context limit (default: from the model)", 1, 1e9},
        {"lora", 0, PU_OPT_STRING, &lora_dirs, "DIR[,DIR2]",
         "PEFT LoRA adapter directories, applied unmerged", 0, 0},
        {"lora-scale", 0, PU_OPT_DOUBLE, &lora_scale, "S",
         "multiplier of every adapter's alpha/r", -1e6, 1e6},
        PU_CLI_KV_OPT(kv_s),
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {"puyu forward",
                              "-m MODEL --ids \"1 2 3\" --out FILE [--lora DIR[,DIR2]] "
                              "[--lora-scale S] [--kv-type f32|f16|q8]",
                              "Run the model over the ids in one prefill pass and write the "
                              "logits of every position\nas float32 little-endian, shape "
                              "[number of ids, vocab]."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!model || !ids_s || !out) {
        fprintf(stderr, "puyu forward: -m MODEL, --ids and --out are required (see --help)\n");
        return 2;
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    if (pu_parse_ids(ids_s, &ids, &n) != PU_OK)
        return fail("puyu forward");
    if (n == 0) {
        fprintf(stderr, "puyu forward: error: --ids: no token ids given\n");
        return 1;
    }
    pu_model *m = NULL;
    pu_session *s = NULL;
    pu_pool *pool = NULL;
    float *logits = NULL;
    int ret = 1;
    if (pu_model_load(model, &m) != PU_OK)
        goto done;
    const pu_config *c = pu_model_config(m);
    int64_t lim = ctx_limit(c, ctx);
    if (n > lim) {
        pu_err_set(PU_ERR_RANGE, "%lld ids exceed the context of %lld tokens (use --ctx)",
                   (long long)n, (long long)lim);
        goto done;
    }
    pu_kv_type kvt;
    if (pu_cli_kv_type(kv_s, &kvt) != PU_OK)
        goto done;
    pool = pu_pool_create(0);
    if (pu_session_create_ex(m, n, kvt, pool, &s) != PU_OK)
        goto done;
    if (session_lora(s, m, lora_dirs, lora_scale, &lora, &n_lora) != PU_OK)
        goto done;
    logits = pu_try_malloc((size_t)n * (size_t)c->vocab_size * sizeof(float));
    if (!logits)
        goto done;
    if (pu_session_eval(s, ids, n, logits, true) != PU_OK)
        goto done;
    if (pu_file_write_atomic(out, logits, (size_t)n * (size_t)c->vocab_size * sizeof(float)) !=
        PU_OK)
        goto done;
    ret = 0;
done:
    if (ret)
        fail("puyu forward");
    pu_free(logits);
    pu_session_destroy(s);
    pu_lora_list_destroy(lora, n_lora);
    pu_pool_destroy(pool);
    pu_model_destroy(m);
    pu_free(ids);
    return ret;
}

/* ---------------------------------------------------------------- generate */

int pu_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *prompt = NULL, *ids_s = NULL;
    const char *lora_dirs = NULL, *kv_s = NULL;
    int64_t n_gen = 64, top_k = 40, seed = 42, ctx = 0;
    double temp = 0.8, top_p = 0.95, min_p = 0.0, rep = 1.0, lora_scale = 1.0;
    pu_lora **lora = NULL;
    int n_lora = 0;
    bool print_ids = false, ignore_eos = false, no_bos = false, raw = false;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL",
         "model directory, .gguf or llama2.c .bin (default: $PUYU_MODEL, else the embedded "
         "models/default.gguf)",
         0, 0},
        {"tokenizer", 't', PU_OPT_STRING, &tok_path, "TOK",
         "tokenizer (default: the model's own, e.g. DIR/tokenizer.model)", 0, 0},
        {"prompt", 'p', PU_OPT_STRING, &prompt, "TEXT", "prompt text (needs a tokenizer)", 0, 0},
        {"ids", 0, PU_OPT_STRING, &ids_s, "\"1 2 3\"", "prompt as token ids instead of text", 0, 0},
        {"n-predict", 'n', PU_OPT_INT, &n_gen, "N", "tokens to generate", 0, 1e9},
        {"temp", 0, PU_OPT_DOUBLE, &temp, "T", "temperature; 0 = greedy", 0, 100},
        {"top-k", 0, PU_OPT_INT, &top_k, "K", "top-k (0 = off)", 0, 1e9},
        {"top-p", 0, PU_OPT_DOUBLE, &top_p, "P", "nucleus sampling (1 = off)", 1e-9, 1},
        {"min-p", 0, PU_OPT_DOUBLE, &min_p, "P", "min-p (0 = off)", 0, 1},
        {"repeat-penalty", 0, PU_OPT_DOUBLE, &rep, "R", "repetition penalty (1 = off)", 1e-6, 100},
        {"seed", 's', PU_OPT_INT, &seed, "S", "RNG seed", 0, 9.2e18},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N", "context limit (default: from the model)", 1, 1e9},
        {"print-ids", 0, PU_OPT_FLAG, &print_ids, NULL,
         "print only the generated ids, space-separated, on one line", 0, 0},
        {"ignore-eos", 0, PU_OPT_FLAG, &ignore_eos, NULL, "do not stop at end-of-sequence tokens", 0, 0},
        {"no-bos", 0, PU_OPT_FLAG, &no_bos, NULL, "do not prepend BOS to a text prompt", 0, 0},
        {"no-special", 0, PU_OPT_FLAG, &raw, NULL, "do not parse special tokens in the prompt", 0, 0},
        {"lora", 0, PU_OPT_STRING, &lora_dirs, "DIR[,DIR2]",
         "PEFT LoRA adapter directories, applied unmerged", 0, 0},
        {"lora-scale", 0, PU_OPT_DOUBLE, &lora_scale, "S",
         "multiplier of every adapter's alpha/r", -1e6, 1e6},
        PU_CLI_KV_OPT(kv_s),
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu generate", "[-m MODEL] (-p TEXT | --ids \"...\") -n N [--temp T] [--top-k K] "
                         "[--top-p P] [--seed S] [--print-ids] [--lora DIR[,DIR2]] "
                         "[--lora-scale S] [--kv-type f32|f16|q8]",
        "Generate a continuation. Text streams to stdout as it is generated; speed goes to "
        "stderr.\nStops after N tokens or at an end-of-sequence token (EOS, <|im_end|>)."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    model = pu_cli_default_model(model);
    if (!model || (!prompt && !ids_s) || (prompt && ids_s)) {
        fprintf(stderr, "puyu generate: need -m MODEL (or $PUYU_MODEL, or models/default.gguf) "
                        "and exactly one of -p TEXT / --ids (see --help)\n");
        return 2;
    }
    const char *me = "puyu generate";
    pu_model *m = NULL;
    pu_tok *tok = NULL;
    pu_session *s = NULL;
    pu_pool *pool = NULL;
    pu_sampler smp;
    bool smp_ok = false;
    int32_t *ids = NULL;
    int64_t n_prompt = 0;
    float *logits = NULL;
    pu_str out = {0};
    int ret = 1;

    if (pu_model_load(model, &m) != PU_OK)
        goto done;
    const pu_config *c = pu_model_config(m);
    bool need_tok = prompt != NULL || !print_ids;
    if (need_tok) {
        const char *tp = tok_path ? tok_path : pu_model_tokenizer_path(m);
        if (!tp) {
            if (prompt) {
                pu_err_set(PU_ERR_INVALID, "-p needs a tokenizer: pass -t TOKENIZER (the model "
                                           "has none beside it)");
                goto done;
            }
            pu_log_warn("no tokenizer: printing generated ids instead of text");
            print_ids = true;
        } else if (pu_tok_load(tp, &tok) != PU_OK) {
            goto done;
        }
    }
    if (prompt) {
        pu_tok_encode_opts eo = pu_tok_encode_default_opts();
        eo.add_bos = !no_bos;
        eo.parse_special = !raw;
        if (pu_tok_encode(tok, prompt, strlen(prompt), &eo, &ids, &n_prompt) != PU_OK)
            goto done;
    } else if (pu_parse_ids(ids_s, &ids, &n_prompt) != PU_OK) {
        goto done;
    }
    if (n_prompt == 0) {
        pu_err_set(PU_ERR_INVALID, "the prompt is empty (no token ids)");
        goto done;
    }
    int64_t lim = ctx_limit(c, ctx);
    if (n_prompt + n_gen > lim) {
        pu_err_set(PU_ERR_RANGE,
                   "prompt (%lld tokens) + -n %lld exceeds the context of %lld tokens "
                   "(use --ctx or a smaller -n)",
                   (long long)n_prompt, (long long)n_gen, (long long)lim);
        goto done;
    }
    pu_kv_type kvt;
    if (pu_cli_kv_type(kv_s, &kvt) != PU_OK)
        goto done;
    pool = pu_pool_create(0);
    if (pu_session_create_ex(m, n_prompt + n_gen, kvt, pool, &s) != PU_OK)
        goto done;
    if (session_lora(s, m, lora_dirs, lora_scale, &lora, &n_lora) != PU_OK)
        goto done;
    pu_sample_params sp = pu_sample_default_params();
    sp.temperature = (float)temp;
    sp.top_k = top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.repetition_penalty = (float)rep;
    sp.seed = (uint64_t)seed;
    if (pu_sampler_init(&smp, &sp, c->vocab_size) != PU_OK)
        goto done;
    smp_ok = true;
    for (int64_t i = 0; i < n_prompt; i++)
        pu_sampler_accept(&smp, ids[i]);
    logits = pu_try_malloc((size_t)c->vocab_size * sizeof(float));
    if (!logits)
        goto done;

    int32_t stop[3] = {-1, -1, -1};
    int n_stop = 0;
    if (!ignore_eos) {
        stop[n_stop++] = (int32_t)c->eos_token_id;
        if (tok) {
            int32_t im_end = pu_tok_special_id(tok, "<|im_end|>");
            if (im_end >= 0)
                stop[n_stop++] = im_end;
        }
    }
    double t0 = pu_time_now();
    if (pu_session_eval(s, ids, n_prompt, logits, false) != PU_OK)
        goto done;
    double t1 = pu_time_now();
    pu_tok_stream ts;
    if (tok)
        pu_tok_stream_init(&ts, tok);
    int64_t n_done = 0;
    bool first_id = true;
    while (n_done < n_gen) {
        int32_t id = pu_sampler_sample(&smp, logits, NULL);
        bool is_stop = false;
        for (int i = 0; i < n_stop; i++)
            is_stop |= id == stop[i];
        if (is_stop)
            break;
        n_done++;
        pu_sampler_accept(&smp, id);
        if (print_ids) {
            printf(first_id ? "%d" : " %d", id);
            first_id = false;
        } else {
            pu_str_clear(&out);
            if (pu_tok_stream_feed(&ts, id, &out) != PU_OK)
                goto done;
            fwrite(out.p ? out.p : "", 1, out.len, stdout);
            fflush(stdout);
        }
        if (n_done == n_gen)
            break;
        if (pu_session_eval(s, &id, 1, logits, false) != PU_OK)
            goto done;
    }
    if (print_ids) {
        printf("\n");
    } else if (tok) {
        pu_str_clear(&out);
        pu_tok_stream_flush(&ts, &out);
        fwrite(out.p ? out.p : "", 1, out.len, stdout);
        printf("\n");
    }
    fflush(stdout);
    double t2 = pu_time_now();
    fprintf(stderr, "prompt: %lld tokens in %.3f s (%.1f tok/s); generated: %lld tokens in %.3f s "
                    "(%.2f tok/s); %d threads, %s; KV cache %s %lld bytes/token (f32 %lld)\n",
            (long long)n_prompt, t1 - t0, (double)n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9),
            (long long)n_done, t2 - t1, (double)n_done / (t2 - t1 > 0 ? t2 - t1 : 1e-9),
            pu_pool_size(pool), pu_kernels_get()->name, pu_kv_type_name(kvt),
            (long long)pu_kv_bytes_per_token(c, kvt),
            (long long)pu_kv_bytes_per_token(c, PU_KV_F32));
    ret = 0;
done:
    if (ret)
        fail(me);
    pu_str_free(&out);
    pu_free(logits);
    if (smp_ok)
        pu_sampler_deinit(&smp);
    pu_session_destroy(s);
    pu_lora_list_destroy(lora, n_lora);
    pu_pool_destroy(pool);
    pu_tok_destroy(tok);
    pu_model_destroy(m);
    pu_free(ids);
    return ret;
}

/* ---------------------------------------------------------------- info */

int pu_cmd_info(int argc, char **argv) {
    const char *model = NULL;
    int64_t ctx = 0;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &model, "MODEL", "model directory, .gguf or llama2.c .bin", 0, 0},
        {"ctx", 'c', PU_OPT_INT, &ctx, "N", "context for the memory estimate", 1, 1e9},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {"puyu info", "-m MODEL [--ctx N]",
                              "Print the config, parameter count, dtypes and the memory needed."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!model) {
        fprintf(stderr, "puyu info: -m MODEL is required (see --help)\n");
        return 2;
    }
    pu_model *m = NULL;
    if (pu_model_load(model, &m) != PU_OK)
        return fail("puyu info");
    pu_str s = {0};
    const pu_config *c = pu_model_config(m);
    pu_model_describe(m, ctx > 0 ? ctx : c->max_position_embeddings, &s);
    fputs(s.p ? s.p : "", stdout);
    pu_str_free(&s);
    pu_model_destroy(m);
    return 0;
}
