/*
 * bench_spec.c — speculative decoding speed-up of the engine (the path
 * `puyu serve --draft` runs) on a pair of models with the same vocabulary.
 *
 * usage: bench_spec -m TARGET --draft DRAFT [-t TOKENIZER] [--gen G]
 *                   [--k 2,4,6] [--streams S] [--reps R] [--threads N]
 *
 * Fixed TinyStories-style prompts (tokenized with -t, default the target's
 * own tokenizer), each decoded greedily for G tokens (ignore EOS, so every
 * configuration produces the same number of tokens): first by the target
 * alone, then with the draft proposing k tokens per step for each k of --k
 * ("4a": the engine's adaptive length, 1..4, `puyu serve --draft-adaptive`).
 * Requests run one at a time (--streams 1, the latency case speculation is
 * for) or S at once. For every configuration: generated tokens / wall time
 * (best of --reps), tokens per CPU-second of the process, the speed-up over
 * the target alone measured in the same run, the draft's acceptance rate
 * (accepted / drafted tokens, engine stats), target tokens per engine step,
 * and whether every output is identical to the target-alone output (the
 * greedy-exactness the feature promises; a mismatch is an error, exit 1).
 *
 * The models of the measurement in the README were trained with `puyu train`
 * on ../shared/data/corpus/en-tinystories with tok512.model (commands there).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "puyu/pu_engine.h"
#include "puyu/pu_model.h"
#include "puyu/pu_tok.h"

static const char *const k_prompts[] = {
    "Once upon a time",
    "One day, a little girl named Lily",
    "Tom and his dog went to the park",
    "The sun was shining and the birds",
    "There was a big red ball",
    "Sara wanted to play with her friend",
    "Once upon a time, there was a boy named Tim",
    "Mom said, \"Let's go",
};
#define NP ((int)(sizeof k_prompts / sizeof *k_prompts))

typedef struct out {
    pthread_mutex_t mu;
    int32_t *toks;
    int64_t n, cap;
    bool done;
} out;

static void on_ev(const pu_engine_event *ev, void *ud) {
    out *o = ud;
    pthread_mutex_lock(&o->mu);
    if (ev->token >= 0 && o->n < o->cap)
        o->toks[o->n++] = ev->token;
    if (ev->finish != PU_FINISH_NONE)
        o->done = true;
    pthread_mutex_unlock(&o->mu);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

typedef struct res {
    double tps, tpc, accept, per_step;
} res;

/* All prompts through engine e, `streams` at a time; outputs into outs. */
static bool run(pu_engine *e, int32_t **ids, int64_t *nids, int64_t G, int streams, out *outs,
                res *rs) {
    pu_engine_stats s0, s1;
    pu_engine_get_stats(e, &s0);
    double t0 = pu_time_now(), c0 = cpu_seconds();
    int64_t tot = 0;
    for (int b = 0; b < NP; b += streams) {
        int nb = b + streams <= NP ? streams : NP - b;
        for (int i = b; i < b + nb; i++) {
            outs[i].n = 0;
            outs[i].done = false;
            pu_engine_request r = {0};
            r.prompt = ids[i];
            r.n_prompt = nids[i];
            r.max_tokens = G;
            r.sample = pu_sample_default_params();
            r.sample.temperature = 0;
            r.ignore_eos = true;
            r.cb = on_ev;
            r.ud = &outs[i];
            int64_t id;
            if (pu_engine_submit(e, &r, &id) != PU_OK) {
                fprintf(stderr, "submit: %s\n", pu_err_msg());
                return false;
            }
        }
        for (int i = b; i < b + nb; i++) {
            for (;;) {
                pthread_mutex_lock(&outs[i].mu);
                bool d = outs[i].done;
                pthread_mutex_unlock(&outs[i].mu);
                if (d)
                    break;
                usleep(200);
            }
            tot += outs[i].n;
        }
    }
    double dt = pu_time_now() - t0, dc = cpu_seconds() - c0;
    pu_engine_get_stats(e, &s1);
    int64_t drafted = s1.tokens_drafted - s0.tokens_drafted;
    rs->tps = (double)tot / dt;
    rs->tpc = (double)tot / dc;
    rs->accept =
        drafted > 0 ? (double)(s1.tokens_draft_accepted - s0.tokens_draft_accepted) / drafted : 0;
    rs->per_step = (double)(s1.tokens_generated - s0.tokens_generated) /
                   (double)(s1.steps - s0.steps > 0 ? s1.steps - s0.steps : 1);
    return true;
}

int main(int argc, char **argv) {
    const char *mp = NULL, *dp = NULL, *tp = NULL;
    int64_t G = 128;
    int streams = 1, reps = 2, threads = 0;
    char ks[64] = "2,4,6";
    for (int i = 1; i < argc; i++) {
        bool more = i + 1 < argc;
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && more)
            mp = argv[++i];
        else if (!strcmp(argv[i], "--draft") && more)
            dp = argv[++i];
        else if ((!strcmp(argv[i], "-t") || !strcmp(argv[i], "--tokenizer")) && more)
            tp = argv[++i];
        else if (!strcmp(argv[i], "--gen") && more)
            G = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--k") && more)
            snprintf(ks, sizeof ks, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--streams") && more)
            streams = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && more)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && more)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_spec -m TARGET --draft DRAFT [-t TOKENIZER] [--gen G] "
                            "[--k 2,4,6] [--streams S] [--reps R] [--threads N]\n");
            return 2;
        }
    }
    if (!mp || !dp) {
        fprintf(stderr, "bench_spec: -m TARGET and --draft DRAFT are required\n");
        return 2;
    }
    if (streams < 1)
        streams = 1;
    if (threads > 0)
        pu_threads_set_default(threads);
    pu_model *m = NULL, *d = NULL;
    pu_tok *tok = NULL;
    if (pu_model_load(mp, &m) != PU_OK || pu_model_load(dp, &d) != PU_OK) {
        fprintf(stderr, "load: %s\n", pu_err_msg());
        return 1;
    }
    if (!tp)
        tp = pu_model_tokenizer_path(m);
    if (!tp || pu_tok_load(tp, &tok) != PU_OK) {
        fprintf(stderr, "tokenizer (-t): %s\n", tp ? pu_err_msg() : "the target has none");
        return 1;
    }
    int32_t *ids[NP];
    int64_t nids[NP];
    out outs[NP], ref[NP];
    pu_tok_encode_opts eo = pu_tok_encode_default_opts();
    eo.add_bos = true;
    for (int i = 0; i < NP; i++) {
        ids[i] = NULL;
        nids[i] = 0;
        if (pu_tok_encode(tok, k_prompts[i], strlen(k_prompts[i]), &eo, &ids[i], &nids[i]) !=
            PU_OK) {
            fprintf(stderr, "encode: %s\n", pu_err_msg());
            return 1;
        }
        pthread_mutex_init(&outs[i].mu, NULL);
        pthread_mutex_init(&ref[i].mu, NULL);
        outs[i].cap = ref[i].cap = G;
        outs[i].toks = malloc((size_t)G * sizeof(int32_t));
        ref[i].toks = malloc((size_t)G * sizeof(int32_t));
    }
    printf("target %s: %.2fM params, %.1f MB; draft %s: %.2fM params, %.1f MB; %d prompts x %lld "
           "tokens, greedy, %d stream(s), threads %d, best of %d\n",
           mp, (double)pu_model_n_params(m) / 1e6, (double)pu_model_weight_bytes(m) / 1e6, dp,
           (double)pu_model_n_params(d) / 1e6, (double)pu_model_weight_bytes(d) / 1e6, NP,
           (long long)G, streams, pu_threads_default(), reps);
    fflush(stdout);
    printf("%-14s %10s %10s %9s %9s %10s %10s\n", "config", "tok/s", "tok/cpu-s", "speed-up",
           "accept", "tok/step", "identical");
    int rc = 0;
    double base = 0, base_c = 0;
    char *save = NULL;
    char list[80];
    snprintf(list, sizeof list, "0,%s", ks); /* 0 = the target alone */
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = atoi(t);
        bool adapt = strchr(t, 'a') != NULL; /* "4a": adaptive, at most 4 */
        pu_engine_params ep = pu_engine_default_params();
        ep.max_batch = streams;
        ep.ctx = 64 + G + 16;
        ep.kv_tokens = (int64_t)streams * ep.ctx + 64;
        ep.prefix_sharing = false;
        ep.draft = k > 0 ? d : NULL;
        ep.draft_k = k;
        ep.draft_adaptive = adapt;
        pu_engine *e = NULL;
        if (pu_engine_create(m, tok, &ep, &e) != PU_OK) {
            fprintf(stderr, "engine: %s\n", pu_err_msg());
            return 1;
        }
        res best = {0};
        bool same = true;
        for (int r = 0; r < reps; r++) {
            res rs;
            if (!run(e, ids, nids, G, streams, k == 0 ? ref : outs, &rs))
                return 1;
            if (k > 0)
                for (int i = 0; i < NP; i++)
                    same = same && outs[i].n == ref[i].n &&
                           !memcmp(outs[i].toks, ref[i].toks, (size_t)ref[i].n * sizeof(int32_t));
            if (rs.tps > best.tps) {
                best.tps = rs.tps;
                best.per_step = rs.per_step;
            }
            best.tpc = rs.tpc > best.tpc ? rs.tpc : best.tpc;
            best.accept = rs.accept;
        }
        pu_engine_destroy(e);
        char name[32];
        if (k == 0) {
            snprintf(name, sizeof name, "target alone");
            base = best.tps;
            base_c = best.tpc;
            printf("%-14s %10.1f %10.1f %9s %9s %10.2f %10s\n", name, best.tps, best.tpc, "1.00x",
                   "-", best.per_step, "(ref)");
        } else {
            snprintf(name, sizeof name, "draft k=%d%s", k, adapt ? " adapt" : "");
            printf("%-14s %10.1f %10.1f %8.2fx %8.1f%% %10.2f %10s\n", name, best.tps, best.tpc,
                   best.tps / base, 100 * best.accept, best.per_step, same ? "yes" : "NO");
            if (!same)
                rc = 1;
        }
        (void)base_c;
        fflush(stdout);
    }
    for (int i = 0; i < NP; i++) {
        pu_free(ids[i]);
        free(outs[i].toks);
        free(ref[i].toks);
    }
    pu_tok_destroy(tok);
    pu_model_destroy(d);
    pu_model_destroy(m);
    return rc;
}
