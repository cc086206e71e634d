/*
 * test_demo.c — `puyu demo --smallest` end to end (black box, pt_bin()):
 * every stage leaves its output and a stamp, each stage's logged command line reads
 * the previous stage's output, the report names every stage, and a rerun skips the
 * finished stages (their outputs untouched); chat and serve talk to the quantized GGUF, whose
 * tokenizer encodes chat text as the trained tokenizer.model; a second run (another thread
 * count) gives the same files bit for bit. Skips when the corpora packages
 * (fortunes, fortunes-zh, wordnet-base: `make deps`) are absent.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "pt.h"
#include "puyu/pu_tok.h"

static char *slurp(const char *dir, const char *rel) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    char *d = NULL;
    size_t n = 0;
    if (pu_file_read_all(p, &d, &n) != PU_OK)
        return NULL;
    return d;
}

static bool has(const char *dir, const char *rel) {
    char p[1200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    return stat(p, &st) == 0;
}

static long long lines(const char *dir, const char *rel) {
    char *d = slurp(dir, rel);
    long long n = 0;
    for (char *p = d; p && *p; p++)
        n += *p == '\n';
    pu_free(d);
    return d ? n : -1;
}

static double mtime(const char *dir, const char *rel) {
    char p[1200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    if (stat(p, &st) != 0)
        return -1;
    return (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec * 1e-9;
}

/* the log LOG (under dir/logs) holds a command line with "OPT VALUE" */
static bool log_has(const char *dir, const char *log, const char *opt, const char *value) {
    char rel[256], pat[1400];
    snprintf(rel, sizeof rel, "logs/%s", log);
    snprintf(pat, sizeof pat, "%s %s", opt, value);
    char *d = slurp(dir, rel);
    bool ok = d && strstr(d, pat);
    if (!ok)
        pt_fail_(__FILE__, __LINE__, "%s/%s: no '%s'", dir, rel, pat);
    pu_free(d);
    return ok;
}

static const char *const STAGES[] = {"corpus", "data", "tokenizer", "pack",     "train",
                                     "sft",    "dpo",  "rm",        "eval",     "quantize",
                                     "chat",   "serve"};

PT_SUITE(demo) {
    struct stat st;
    if (stat("/usr/share/games/fortunes/fortunes", &st) != 0 ||
        stat("/usr/share/games/fortunes/tang300.u8", &st) != 0 ||
        stat("/usr/share/wordnet/data.noun", &st) != 0) {
        pt_skip("corpora packages absent (make deps: fortunes fortunes-zh wordnet-base)");
        return;
    }
    char out[512], err[512], cmd[2048];
    pt_tmp_path("demo", out, sizeof out);
    pt_tmp_path("demo_stderr.txt", err, sizeof err);
    snprintf(cmd, sizeof cmd, "%s demo --smallest --out '%s' 2>'%s'", pt_bin(), out, err);
    char *so = NULL;
    int rc = pt_run(cmd, &so);
    char *se = NULL;
    size_t n;
    pu_file_read_all(err, &se, &n);
    if (PT_TEST("demo --smallest runs every stage of this build")) {
        PT_CHECK_MSG(rc == 0, "exit %d; stderr:\n%s", rc, se ? se : "");
        PT_CHECK(so && strstr(so, "./puyu chat -m"));
        const char *must[] = {"corpus", "data", "tokenizer", "pack",
                              "train",  "sft",  "eval",      "chat"};
        for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
            char rel[64];
            snprintf(rel, sizeof rel, ".stamps/%s", must[i]);
            PT_CHECK_MSG(has(out, rel), "no stamp %s", rel);
        }
        /* a stage this build lacks is named as such, never stamped */
        char *help = NULL;
        snprintf(cmd, sizeof cmd, "%s dpo --help >/dev/null 2>&1", pt_bin());
        if (pt_run(cmd, &help) != 0) {
            PT_CHECK(se && strstr(se, "dpo              not available in this build"));
            PT_CHECK(!has(out, ".stamps/dpo"));
        }
        pu_free(help);
    }
    if (PT_TEST("each stage's output exists and is what the next stage read")) {
        /* corpus -> data run */
        char *pipe = slurp(out, "data/pipeline.json");
        char want[1200];
        snprintf(want, sizeof want, "\"in\": \"%s/corpus/raw.jsonl\"", out);
        PT_CHECK_MSG(pipe && strstr(pipe, want), "pipeline.json lacks %s", want);
        pu_free(pipe);
        json_t *stats = NULL;
        char sp[1200];
        snprintf(sp, sizeof sp, "%s/data/stats.json", out);
        stats = json_load_file(sp, 0, NULL);
        PT_CHECK(stats);
        long long raw = lines(out, "corpus/raw.jsonl"), kept = lines(out, "data/kept.jsonl");
        PT_CHECK(raw > 1000);
        PT_CHECK_MSG(json_integer_value(json_object_get(stats, "docs_in")) == raw,
                     "docs_in %lld vs %lld raw lines",
                     (long long)json_integer_value(json_object_get(stats, "docs_in")), raw);
        PT_CHECK(json_integer_value(json_object_get(stats, "kept")) == kept);
        PT_CHECK(kept > 0 && kept < raw); /* dedup / clean removed something */
        json_decref(stats);
        /* data run -> tokenizer train, data pack */
        snprintf(want, sizeof want, "%s/data/kept.jsonl", out);
        log_has(out, "tokenizer.log", "--in", want);
        log_has(out, "pack.log", "--in", want);
        snprintf(want, sizeof want, "%s/tokenizer/tokenizer.model", out);
        log_has(out, "pack.log", "-t", want);
        PT_CHECK(has(out, "tokenizer/tokenizer.model"));
        /* the InternLM2 specials are single tokens */
        snprintf(cmd, sizeof cmd,
                 "printf '<|im_start|><|im_end|><|plugin|><|interpreter|>' | %s tokenizer encode "
                 "-t '%s'",
                 pt_bin(), want);
        char *ids = NULL;
        PT_CHECK(pt_run(cmd, &ids) == 0);
        int nid = 0;
        for (char *t = ids ? strtok(ids, " \n") : NULL; t; t = strtok(NULL, " \n"))
            nid++;
        PT_CHECK_MSG(nid == 4, "4 specials gave %d ids", nid);
        pu_free(ids);
        char *meta = slurp(out, "shards/meta.json");
        PT_CHECK(meta && strstr(meta, want));
        pu_free(meta);
        /* data pack -> train -> sft -> eval, chat */
        snprintf(want, sizeof want, "%s/shards", out);
        log_has(out, "train.log", "--data", want);
        PT_CHECK(strstr(se ? se : "", "train") != NULL);
        char *latest = slurp(out, "train/latest");
        PT_CHECK(latest);
        if (latest) {
            latest[strcspn(latest, "\n")] = 0;
            snprintf(want, sizeof want, "%s/train/%s", out, latest);
            log_has(out, "sft.log", "-m", want);
        }
        pu_free(latest);
        snprintf(want, sizeof want, "%s/corpus/sft_train.jsonl", out);
        log_has(out, "sft.log", "--data", want);
        PT_CHECK(lines(out, "sft/metrics.jsonl") > 2);
        PT_CHECK(has(out, "sft/final/config.json"));
        /* the aligned model (dpo) when that stage ran, else the SFT one */
        if (has(out, ".stamps/dpo")) {
            snprintf(want, sizeof want, "%s/sft/final", out);
            log_has(out, "dpo.log", "-m", want);
            PT_CHECK(has(out, "dpo/final/config.json"));
            snprintf(want, sizeof want, "%s/dpo/final", out);
        } else {
            snprintf(want, sizeof want, "%s/sft/final", out);
        }
        log_has(out, "eval.log", "-m", want);
        if (has(out, ".stamps/quantize")) {
            log_has(out, "quantize.log", "-m", want);
            PT_CHECK(has(out, "quant/model.gguf"));
        }
        char *res = slurp(out, "eval/out/results.json");
        PT_CHECK(res && strstr(res, "mc_gloss_en") && strstr(res, "mc_poem_zh") &&
                 strstr(res, "needle_demo"));
        pu_free(res);
        char *tr = slurp(out, "chat/transcript.txt");
        PT_CHECK(tr && strstr(tr, "> Who are you?"));
        pu_free(tr);
        /* chat and serve talk to the quantized model when there is one */
        if (has(out, ".stamps/quantize"))
            snprintf(want, sizeof want, "%s/quant/model.gguf", out);
        log_has(out, "chat.log", "-m", want);
        log_has(out, "serve.log", "-m", want);
        log_has(out, "serve.log", "--port", "0");
        char *sv = slurp(out, "serve/response.json");
        json_t *j = sv ? json_loads(sv, 0, NULL) : NULL;
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        PT_CHECK_MSG(json_is_string(json_object_get(json_object_get(c0, "message"), "content")),
                     "serve/response.json: %s", sv ? sv : "(none)");
        json_decref(j);
        pu_free(sv);
        char *rp = slurp(out, "serve/reply.txt");
        PT_CHECK(rp && strstr(rp, "> Who are you?") && strstr(rp, "finish_reason"));
        pu_free(rp);
        PT_CHECK(so && strstr(so, "quant/model.gguf -p"));
    }
    if (has(out, "quant/model.gguf") &&
        PT_TEST("the quantized GGUF tokenizes chat text as the trained tokenizer.model")) {
        const char *text = "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
                           "I am Puyu.<|im_end|>\n<|im_start|>user\n你是谁？<|im_end|>\n";
        char tp[1200], gp[1200];
        snprintf(tp, sizeof tp, "%s/tokenizer/tokenizer.model", out);
        snprintf(gp, sizeof gp, "%s/quant/model.gguf", out);
        pu_tok *a = NULL, *b = NULL;
        PT_OK(pu_tok_load(tp, &a));
        PT_OK(pu_tok_load(gp, &b));
        int32_t *ia = NULL, *ib = NULL;
        int64_t na = 0, nb = 0;
        pu_tok_encode_opts eo = pu_tok_encode_default_opts();
        eo.add_bos = true;
        if (a && b) {
            PT_OK(pu_tok_encode(a, text, strlen(text), &eo, &ia, &na));
            PT_OK(pu_tok_encode(b, text, strlen(text), &eo, &ib, &nb));
            PT_CHECK_MSG(na == nb && na > 8 && !memcmp(ia, ib, (size_t)na * sizeof *ia),
                         "%lld ids from tokenizer.model, %lld from the GGUF", (long long)na,
                         (long long)nb);
            PT_CHECK(nb > 1 && ib[1] == pu_tok_special_id(b, "<|im_start|>"));
        }
        pu_free(ia);
        pu_free(ib);
        pu_tok_destroy(a);
        pu_tok_destroy(b);
    }
    if (PT_TEST("the same seed gives the same model bit for bit (another thread count too)")) {
        char out2[512];
        pt_tmp_path("demo_again", out2, sizeof out2);
        snprintf(cmd, sizeof cmd, "PUYU_THREADS=1 %s demo --smallest --out '%s' 2>/dev/null >/dev/null",
                 pt_bin(), out2);
        PT_CHECK(pt_run(cmd, NULL) == 0);
        const char *same[] = {"data/kept.jsonl", "tokenizer/tokenizer.model", "sft/final/model.safetensors",
                              "quant/model.gguf"};
        for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
            if (!has(out, same[i]))
                continue;
            size_t l1 = 0, l2 = 0;
            char *d1 = NULL, *d2 = NULL, p1[1200], p2[1200];
            snprintf(p1, sizeof p1, "%s/%s", out, same[i]);
            snprintf(p2, sizeof p2, "%s/%s", out2, same[i]);
            PT_OK(pu_file_read_all(p1, &d1, &l1));
            PT_OK(pu_file_read_all(p2, &d2, &l2));
            PT_CHECK_MSG(d1 && d2 && l1 == l2 && !memcmp(d1, d2, l1), "%s differs between two runs",
                         same[i]);
            pu_free(d1);
            pu_free(d2);
        }
    }
    if (PT_TEST("report.html names every stage and embeds the curves and the heatmap")) {
        char *rep = slurp(out, "report.html");
        PT_CHECK(rep);
        for (size_t i = 0; rep && i < sizeof STAGES / sizeof STAGES[0]; i++) {
            char td[64];
            snprintf(td, sizeof td, "<td>%s</td>", STAGES[i]);
            PT_CHECK_MSG(strstr(rep, td), "report lacks stage %s", STAGES[i]);
        }
        PT_CHECK(rep && strstr(rep, "Data funnel") && strstr(rep, "<td>dedup</td>"));
        int svgs = 0;
        for (const char *p = rep; p && (p = strstr(p, "<svg")); p++)
            svgs++;
        PT_CHECK_MSG(svgs >= 3, "%d inline SVGs (2 loss curves + needle)", svgs);
        pu_free(rep);
    }
    if (PT_TEST("a rerun skips the finished stages and leaves their outputs alone")) {
        double m_sft = mtime(out, "sft/final/config.json"), m_kept = mtime(out, "data/kept.jsonl");
        snprintf(cmd, sizeof cmd, "%s demo --smallest --out '%s' 2>'%s'", pt_bin(), out, err);
        char *so2 = NULL;
        PT_CHECK(pt_run(cmd, &so2) == 0);
        char *se2 = NULL;
        pu_file_read_all(err, &se2, &n);
        PT_CHECK(se2 && !strstr(se2, " ...\n"));
        int skipped = 0;
        for (const char *p = se2; p && (p = strstr(p, "done earlier")); p++)
            skipped++;
        PT_CHECK_MSG(skipped >= 8, "%d stages skipped:\n%s", skipped, se2 ? se2 : "");
        PT_CHECK(mtime(out, "sft/final/config.json") == m_sft);
        PT_CHECK(mtime(out, "data/kept.jsonl") == m_kept);
        PT_CHECK(has(out, "report.html"));
        pu_free(so2);
        pu_free(se2);
    }
    pu_free(so);
    pu_free(se);
}
