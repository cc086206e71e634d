/*
 * cmd_demo.c — `puyu demo`: the whole chain on Debian's own corpora.
 *
 *   corpus → data run → tokenizer train → data pack → train → sft → [dpo | rm train + ppo]
 *   → eval → [quantize] → chat → report.html
 *
 * Every stage re-invokes this binary (/proc/self/exe) as a child process with the
 * command line a user would type: the log of each stage (OUT/logs/<stage>.log) starts with
 * that exact command, so the demo doubles as a recipe; a crash or a leak of one stage
 * cannot take the demo down or bleed into the next stage; and the stages of other branches
 * (dpo, rm train, ppo, quantize) plug in by name: a stage whose command this build does
 * not have (`puyu CMD --help` fails) is skipped with "not available in this build".
 * A finished stage writes OUT/.stamps/<stage> (seconds, inputs, outputs); a rerun skips it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmds.h"
#include "opts.h"
#include "puyu/pu_core.h"

#define DEMO_SPECIALS \
    "<|plugin|>,<|interpreter|>,<|action_end|>,<|action_start|>,<|im_end|>,<|im_start|>"

typedef struct demo {
    const char *out;
    const char *self;
    int64_t seed;
    double minutes;
    bool big, smallest, tty;
    /* sizes */
    int vocab, hidden, layers, inter, train_steps, sft_steps, batch, seq, max_fortunes, max_glosses,
        max_chapters;
    /* results passed between stages */
    char model[2048]; /* current model directory (pretrained, then fine-tuned, ...) */
    char final[2048]; /* what chat / serve talk to: the quantized GGUF, else model */
    int nstage, istage;
    char progress[1024]; /* a metrics JSONL the running stage appends to, or "" */
    int total_steps;     /* its step count */
} demo;

/* ------------------------------------------------------------------ helpers */

static char *pathf(const demo *d, const char *fmt, ...) {
    char rel[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    return pu_path_join(d->out, rel);
}

static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static char *slurp(const char *path, size_t *len) {
    char *data = NULL;
    size_t n = 0;
    if (pu_file_read_all(path, &data, &n) != PU_OK)
        return NULL;
    if (len)
        *len = n;
    return data;
}

/* a memstream whose content is written atomically on close */
typedef struct wfile {
    FILE *f;
    char *buf;
    size_t len;
} wfile;

static void wopen(wfile *w) {
    w->buf = NULL;
    w->len = 0;
    w->f = open_memstream(&w->buf, &w->len);
}

static int wclose(wfile *w, const char *path) {
    fclose(w->f);
    pu_status s = pu_file_write_atomic(path, w->buf ? w->buf : "", w->len);
    free(w->buf);
    if (s != PU_OK) {
        fprintf(stderr, "puyu demo: %s: %s\n", path, pu_err_msg());
        return 1;
    }
    return 0;
}

static void put_json_line(FILE *f, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) {
        fputs(s, f);
        fputc('\n', f);
        free(s);
    }
    json_decref(j);
}

/* valid UTF-8 (what json_string accepts) */
static bool utf8_ok(const char *t) {
    json_t *j = json_string(t);
    json_decref(j);
    return j != NULL;
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* CPU seconds of the finished children so far */
static double child_cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the last non-empty line of a log (for the progress line), progress bars' \r handled */
static void last_line(const char *path, char *out, size_t cap) {
    out[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long sz = ftell(f), off = sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0;
    fseek(f, off, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = 0;
    char *p = buf + n;
    while (p > buf && p[-1] != '\n' && p[-1] != '\r')
        p--;
    size_t k = 0;
    for (; *p && k + 1 < cap; p++)
        if ((unsigned char)*p >= 32 || *p == '\t')
            out[k++] = *p == '\t' ? ' ' : *p;
    out[k] = 0;
}

/* run `self ARGS...` with stdout+stderr into LOG (appended, the command line first) and
 * stdin from IN (NULL: /dev/null); shows a live progress line on a terminal */
static int run_self(demo *d, const char *label, const char *log, const char *in, char **args) {
    FILE *lf = fopen(log, "ab");
    if (!lf) {
        fprintf(stderr, "puyu demo: cannot open %s: %s\n", log, strerror(errno));
        return 1;
    }
    fprintf(lf, "$ puyu");
    for (int i = 0; args[i]; i++)
        fprintf(lf, " %s", args[i]);
    fprintf(lf, "\n");
    fclose(lf);
    int nargs = 0;
    while (args[nargs])
        nargs++;
    char **argv = calloc((size_t)nargs + 2, sizeof *argv);
    argv[0] = (char *)"puyu";
    for (int i = 0; i < nargs; i++)
        argv[i + 1] = args[i];
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        free(argv);
        fprintf(stderr, "puyu demo: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_APPEND);
        int fi = open(in ? in : "/dev/null", O_RDONLY);
        if (fd < 0 || fi < 0)
            _exit(127);
        dup2(fi, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(d->self, argv);
        _exit(127);
    }
    free(argv);
    double t0 = now_s();
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, d->tty ? WNOHANG : 0);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = 1 << 8;
            break;
        }
        if (d->tty) {
            char ll[200];
            last_line(d->progress[0] ? d->progress : log, ll, 120);
            if (d->progress[0]) { /* {"step": k, "loss": L, ...} -> step k/N loss L */
                char *ps = strstr(ll, "\"step\": "), *pl = strstr(ll, "\"loss\": ");
                char *pv = strstr(ll, "\"val_loss\": ");
                if (ps)
                    snprintf(ll, sizeof ll, "step %lld/%d  %s %.4f", strtoll(ps + 8, NULL, 10),
                             d->total_steps, pv ? "val_loss" : "loss",
                             pv   ? strtod(pv + 12, NULL)
                             : pl ? strtod(pl + 8, NULL)
                                  : NAN);
                else
                    ll[0] = 0;
            }
            if (ll[0] == '$' && ll[1] == ' ')
                ll[0] = 0; /* only the logged command so far */
            ll[70] = 0;
            int el = (int)(now_s() - t0);
            fprintf(stderr, "\r\033[K[%d/%d] %-16s %02d:%02d  %s", d->istage, d->nstage, label,
                    el / 60, el % 60, ll);
            fflush(stderr);
            usleep(500000);
        }
    }
    if (d->tty)
        fprintf(stderr, "\r\033[K");
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* does this build have `puyu WORDS --help`? */
static bool have_cmd(demo *d, const char *w1, const char *w2) {
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (w2)
            execl(d->self, "puyu", w1, w2, "--help", (char *)NULL);
        else
            execl(d->self, "puyu", w1, "--help", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* argv builder */
typedef struct argb {
    char *a[96];
    int n;
    char store[96][512];
} argb;

static void varg(argb *b, const char *fmt, va_list ap) {
    if (b->n >= 95)
        return;
    vsnprintf(b->store[b->n], sizeof b->store[b->n], fmt, ap);
    b->a[b->n] = b->store[b->n];
    b->n++;
    b->a[b->n] = NULL;
}

__attribute__((format(printf, 2, 3))) static void arg(argb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    varg(b, fmt, ap);
    va_end(ap);
}

/* an option and its value: FLAG, then the formatted value */
__attribute__((format(printf, 3, 4))) static void opt(argb *b, const char *flag, const char *fmt,
                                                      ...) {
    arg(b, "%s", flag);
    va_list ap;
    va_start(ap, fmt);
    varg(b, fmt, ap);
    va_end(ap);
}

/* run the argv of b as a stage labelled what, its output to DIR/logs/NAME.log */
static int run_logged(demo *d, const char *what, const char *name, argb *b) {
    char *log = pathf(d, "logs/%s.log", name);
    int rc = run_self(d, what, log, NULL, b->a);
    pu_free(log);
    return rc;
}

/* the checkpoint named by DIR/latest, as a path */
static int latest_ckpt(const char *dir, char *out, size_t cap) {
    char *lp = pu_path_join(dir, "latest");
    char *t = slurp(lp, NULL);
    pu_free(lp);
    if (!t)
        return 1;
    t[strcspn(t, "\r\n")] = 0;
    snprintf(out, cap, "%s/%s", dir, t);
    pu_free(t);
    return exists(out) ? 0 : 1;
}

/* ------------------------------------------------------------------ corpus */

static void strip_ansi(char *s) {
    char *w = s;
    for (char *p = s; *p;) {
        if (*p == '\033') {
            p++;
            if (*p == '[') {
                p++;
                while (*p && !((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
                    p++;
                if (*p)
                    p++;
            }
            continue;
        }
        *w++ = *p++;
    }
    *w = 0;
}

static void trim(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    size_t k = 0;
    while (s[k] == ' ' || s[k] == '\t' || s[k] == '\n')
        k++;
    memmove(s, s + k, n - k + 1);
}

/* collects strfile-format entries (separated by "%" lines) of FILE; calls cb per entry */
typedef void (*entry_cb)(void *ctx, char *text);

static int read_fortune_file(const char *path, entry_cb cb, void *ctx, int max) {
    size_t len = 0;
    char *data = slurp(path, &len);
    if (!data)
        return 0;
    int n = 0;
    char *p = data;
    while (*p && (max <= 0 || n < max)) {
        char *e = strstr(p, "\n%\n");
        char *next;
        if (e) {
            *e = 0;
            next = e + 3;
        } else {
            next = p + strlen(p);
        }
        if (*p == '%' && p[1] == '\n')
            p += 2;
        strip_ansi(p);
        trim(p);
        if (*p) {
            cb(ctx, p);
            n++;
        }
        p = next;
    }
    pu_free(data);
    return n;
}

typedef struct corpus_ctx {
    FILE *raw;       /* raw.jsonl: pretraining documents */
    FILE *sft;       /* sft instruction records */
    FILE *needle;    /* needle haystack text */
    json_t *poems;   /* [[title, author, [lines]]] for the MC task */
    json_t *glosses; /* [[word, gloss]] */
    int64_t docs, en, zh, gl, bible;
    const char *source;
} corpus_ctx;

static void doc(corpus_ctx *c, const char *text, const char *source) {
    json_t *j = json_object();
    char id[64];
    snprintf(id, sizeof id, "%s-%lld", source, (long long)c->docs++);
    json_object_set_new(j, "id", json_string(id));
    json_object_set_new(j, "text", json_string(text));
    json_object_set_new(j, "source", json_string(source));
    put_json_line(c->raw, j);
}

static void sft_rec(corpus_ctx *c, const char *user, const char *assistant) {
    json_t *m = json_array(), *u = json_object(), *a = json_object();
    json_object_set_new(u, "role", json_string("user"));
    json_object_set_new(u, "content", json_string(user));
    json_object_set_new(a, "role", json_string("assistant"));
    json_object_set_new(a, "content", json_string(assistant));
    json_array_append_new(m, u);
    json_array_append_new(m, a);
    json_t *j = json_object();
    json_object_set_new(j, "messages", m);
    put_json_line(c->sft, j);
}

static void fortune_cb(void *ctx, char *text) {
    corpus_ctx *c = ctx;
    if (!utf8_ok(text)) /* not UTF-8 */
        return;
    doc(c, text, c->source);
    if (c->needle && c->en % 2 == 0) {
        fputs(text, c->needle);
        fputs("\n\n", c->needle);
    }
    c->en++;
}

/* a poem of fortunes-zh: "《title》\n作者：author\nline\nline..." */
static void poem_cb(void *ctx, char *text) {
    corpus_ctx *c = ctx;
    if (!utf8_ok(text))
        return;
    doc(c, text, c->source);
    c->zh++;
    char *t0 = strstr(text, "《"), *t1 = t0 ? strstr(t0, "》") : NULL;
    char *au = strstr(text, "作者：");
    if (!t0 || !t1 || !au)
        return;
    char title[256], author[128];
    snprintf(title, sizeof title, "%.*s", (int)(t1 - t0 - 3), t0 + 3);
    char *ae = strchr(au, '\n');
    if (!ae)
        return;
    snprintf(author, sizeof author, "%.*s", (int)(ae - au - 9), au + 9);
    /* body: the lines after the author's */
    char *body = ae + 1;
    json_t *lines = json_array();
    for (char *p = body; *p;) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < 511 ? n : 511), p);
        trim(buf);
        if (*buf)
            json_array_append_new(lines, json_string(buf));
        p = nl ? nl + 1 : p + n;
    }
    if (json_array_size(lines) >= 2) {
        char q[1024], a[4096] = "";
        /* the next line only: short enough for the small model to end at <|im_end|> */
        snprintf(q, sizeof q, "续写这首诗：%s", json_string_value(json_array_get(lines, 0)));
        snprintf(a, sizeof a, "%s", json_string_value(json_array_get(lines, 1)));
        sft_rec(c, q, a);
        snprintf(q, sizeof q, "《%s》的作者是谁？", title);
        snprintf(a, sizeof a, "《%s》的作者是%s。", title, author);
        sft_rec(c, q, a);
        json_t *p = json_array();
        json_array_append_new(p, json_string(title));
        json_array_append_new(p, json_string(author));
        json_array_append(p, lines);
        json_array_append_new(c->poems, p);
    }
    json_decref(lines);
}

/* WordNet data.* lines: "offset lex_filenum ss_type w_cnt word lex_id ... | gloss" */
static int read_wordnet(corpus_ctx *c, const char *path, int max) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        if (line[0] == ' ')
            continue; /* license header */
        char *bar = strstr(line, " | ");
        if (!bar)
            continue;
        char off[32], lex[8], ss[4], cnt[8], word[256];
        if (sscanf(line, "%31s %7s %3s %7s %255s", off, lex, ss, cnt, word) != 5)
            continue;
        for (char *p = word; *p; p++)
            if (*p == '_')
                *p = ' ';
        if (strchr(word, '(') || !utf8_ok(word))
            continue;
        char *gloss = bar + 3;
        trim(gloss);
        /* the definition (before the first "; \"example\"") */
        char def[2048];
        snprintf(def, sizeof def, "%s", gloss);
        char *q = strstr(def, "; \"");
        if (q)
            *q = 0;
        trim(def);
        if (!*def || !utf8_ok(def) || !utf8_ok(gloss))
            continue;
        char text[8400];
        snprintf(text, sizeof text, "%s: %s", word, gloss);
        doc(c, text, "wordnet");
        char ques[512], ans[2400];
        snprintf(ques, sizeof ques, "What does \"%s\" mean?", word);
        snprintf(ans, sizeof ans, "\"%s\" means %s.", word, def);
        sft_rec(c, ques, ans);
        json_t *g = json_array();
        json_array_append_new(g, json_string(word));
        json_array_append_new(g, json_string(def));
        json_array_append_new(c->glosses, g);
        n++;
        c->gl++;
    }
    fclose(f);
    return n;
}

/* the King James Bible through bible-kjv's `bible` (its data file is compressed): one
 * document a chapter, verse numbers dropped */
static int read_bible(corpus_ctx *c, int max) {
    if (!exists("/usr/bin/bible") || !exists("/usr/lib/bible.data"))
        return 0;
    FILE *p = popen("/usr/bin/bible -l1000000 'Gen1:1-Rev22:21' 2>/dev/null", "r");
    if (!p)
        return 0;
    char line[8192];
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int n = 0;
    bool prev_blank = true;
    buf[0] = 0;
    while (fgets(line, sizeof line, p)) {
        bool blank = line[strspn(line, " \t\r\n")] == 0;
        if (!blank && prev_blank && line[0] != ' ') { /* "Genesis 1": a new chapter */
            if (len && n < max) {
                doc(c, buf, "bible-kjv");
                n++;
            }
            len = 0;
            buf[0] = 0;
            prev_blank = false;
            continue;
        }
        prev_blank = blank;
        if (blank)
            continue;
        char *t = line + strspn(line, " ");
        t += strspn(t, "0123456789");
        trim(t);
        size_t k = strlen(t);
        if (len + k + 2 > cap) {
            cap = (len + k + 2) * 2;
            buf = realloc(buf, cap);
        }
        if (len)
            buf[len++] = ' ';
        memcpy(buf + len, t, k + 1);
        len += k;
    }
    if (len && n < max) {
        doc(c, buf, "bible-kjv");
        n++;
    }
    free(buf);
    pclose(p);
    c->bible = n;
    return n;
}

static const char *const g_fortunes_en[] = {"fortunes",   "literature",    "wisdom", "science",
                                            "people",     "humorists",     "art",    "education",
                                            "politics",   "work",          "love",   "food",
                                            "platitudes", "miscellaneous", NULL};

static int corpora_present(void) {
    return exists("/usr/share/games/fortunes/fortunes") &&
           exists("/usr/share/games/fortunes/tang300.u8") && exists("/usr/share/wordnet/data.noun");
}

/* who the model is, in both languages, several phrasings; repeated so that a model this
 * small learns them (and the chat format around them) by heart. Returns the record count. */
static int identity_recs(corpus_ctx *c) {
    /* short answers: a model this small (and a 4000-piece vocabulary in which most Chinese
     * characters are byte pieces) learns a short reply and the <|im_end|> after it */
    static const char *const q[][2] = {
        {"Who are you?", "I am Puyu, a small model made by puyu demo."},
        {"What is your name?", "My name is Puyu."},
        {"Hello!", "Hello! I am Puyu."},
        {"Hi", "Hi! I am Puyu. How can I help?"},
        {"Who made you?", "puyu demo trained me from scratch."},
        {"What can you do?", "I can say what a word means."},
        {"Introduce yourself.", "I am Puyu, a small model made by puyu demo."},
        {"你是谁？", "我是浦语。"},
        {"你叫什么名字？", "我叫浦语。"},
        {"你好", "你好！我是浦语。"},
        {"你好！", "你好！我是浦语。"},
        {"谁训练了你？", "我是由 puyu demo 训练的。"},
        {"你能做什么？", "我可以续写诗句。"},
        {"介绍一下你自己。", "我是浦语，一个小模型。"},
    };
    int n = 0;
    for (int r = 0; r < 40; r++)
        for (size_t i = 0; i < sizeof q / sizeof q[0]; i++, n++)
            sft_rec(c, q[i][0], q[i][1]);
    return n;
}

/* --big: the ../shared/data corpora when present (PUYU_SHARED overrides the root):
 * TinyStories (chunks of ~1500 bytes at paragraph ends), C4 (its "text"), chinese-poetry
 * Song ci (paragraphs joined, one document a poem) */
static void big_corpora(corpus_ctx *c, int max) {
    const char *root = getenv("PUYU_SHARED") ? getenv("PUYU_SHARED") : "../shared/data";
    char p[1024];
    snprintf(p, sizeof p, "%s/corpus/en-tinystories/tinystories_train_head.txt", root);
    char *t = slurp(p, NULL);
    int n = 0;
    for (char *q = t; q && *q && n < max;) {
        char *e = q + strlen(q) > q + 1500 ? strstr(q + 1500, "\n\n") : NULL;
        if (e)
            *e = 0;
        trim(q);
        if (*q && utf8_ok(q)) {
            doc(c, q, "tinystories");
            n++;
        }
        q = e ? e + 2 : q + strlen(q);
    }
    pu_free(t);
    snprintf(p, sizeof p, "%s/corpus/en-c4/c4_demo.jsonl", root);
    FILE *f = fopen(p, "rb");
    int n4 = 0;
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0 && n4 < max) {
            json_t *j = json_loads(line, 0, NULL);
            const char *tx = json_string_value(json_object_get(j, "text"));
            if (tx && *tx) {
                doc(c, tx, "c4");
                n4++;
            }
            json_decref(j);
        }
        free(line);
        fclose(f);
    }
    int nz = 0;
    for (int k = 0; k <= 2000; k += 1000) {
        snprintf(p, sizeof p, "%s/corpus/zh-chinese-poetry/ci.song.%d.json", root, k);
        json_t *arr = json_load_file(p, 0, NULL);
        for (size_t i = 0; i < json_array_size(arr) && nz < max; i++) {
            json_t *o = json_array_get(arr, i), *pa = json_object_get(o, "paragraphs");
            char buf[8192];
            int len = snprintf(buf, sizeof buf, "%s\n",
                               json_string_value(json_object_get(o, "rhythmic"))
                                   ? json_string_value(json_object_get(o, "rhythmic"))
                                   : "");
            for (size_t l = 0; l < json_array_size(pa) && len < (int)sizeof buf - 600; l++)
                len += snprintf(buf + len, sizeof buf - (size_t)len, "%s\n",
                                json_string_value(json_array_get(pa, l))
                                    ? json_string_value(json_array_get(pa, l))
                                    : "");
            trim(buf);
            if (*buf) {
                doc(c, buf, "chinese-poetry");
                nz++;
            }
        }
        json_decref(arr);
    }
    fprintf(stderr, "  --big: %d TinyStories chunks, %d C4 documents, %d Song ci from %s/corpus\n",
            n, n4, nz, root);
}

static int st_corpus(demo *d) {
    if (!corpora_present()) {
        fprintf(stderr, "puyu demo: the corpora packages are missing: run `make deps` (apt-get "
                        "install fortunes fortunes-zh wordnet-base)\n");
        return 1;
    }
    char *dir = pathf(d, "corpus");
    pu_mkdir_p(dir);
    pu_free(dir);
    wfile raw, sft, nd;
    wopen(&raw);
    wopen(&sft);
    wopen(&nd);
    corpus_ctx c = {raw.f, sft.f, nd.f, json_array(), json_array(), 0, 0, 0, 0, 0, NULL};
    int n_ident = identity_recs(&c);
    for (int i = 0; g_fortunes_en[i]; i++) {
        char p[256];
        snprintf(p, sizeof p, "/usr/share/games/fortunes/%s", g_fortunes_en[i]);
        c.source = g_fortunes_en[i];
        int left = d->max_fortunes - (int)c.en;
        if (left <= 0)
            break;
        read_fortune_file(p, fortune_cb, &c, left);
    }
    /* the same fortunes again (a slice): exact duplicates for the dedup stage to find */
    c.source = "fortunes-dup";
    read_fortune_file("/usr/share/games/fortunes/fortunes", fortune_cb, &c,
                      d->max_fortunes / 20 + 1);
    c.needle = NULL;
    c.source = "tang300";
    read_fortune_file("/usr/share/games/fortunes/tang300.u8", poem_cb, &c, 0);
    c.source = "song100";
    read_fortune_file("/usr/share/games/fortunes/song100.u8", poem_cb, &c, 0);
    read_wordnet(&c, "/usr/share/wordnet/data.noun", d->max_glosses * 7 / 10);
    read_wordnet(&c, "/usr/share/wordnet/data.verb", d->max_glosses * 2 / 10);
    read_wordnet(&c, "/usr/share/wordnet/data.adj", d->max_glosses / 10);
    read_bible(&c, d->max_chapters);
    if (d->big)
        big_corpora(&c, d->smallest ? 2000 : 20000);
    int rc = 0;
    char *p1 = pathf(d, "corpus/raw.jsonl"), *p2 = pathf(d, "corpus/sft_all.jsonl"),
         *p3 = pathf(d, "corpus/haystack/haystack.txt"), *p3d = pathf(d, "corpus/haystack");
    pu_mkdir_p(p3d);
    rc |= wclose(&raw, p1);
    rc |= wclose(&sft, p2);
    rc |= wclose(&nd, p3);
    /* split the SFT records: every 10th held out (after the identity block, which is all
     * trained on) */
    size_t len;
    char *all = slurp(p2, &len);
    wfile tr, ev;
    wopen(&tr);
    wopen(&ev);
    int k = 0, ntr = 0, nev = 0;
    for (char *p = all; p && *p; k++) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        bool held = k >= n_ident && k % 10 == 3;
        fwrite(p, 1, n, held ? ev.f : tr.f);
        held ? nev++ : ntr++;
        p += n;
    }
    pu_free(all);
    char *ptr = pathf(d, "corpus/sft_train.jsonl"), *pev = pathf(d, "corpus/sft_eval.jsonl");
    rc |= wclose(&tr, ptr);
    rc |= wclose(&ev, pev);
    /* multiple-choice tasks: gloss of a word (en), next line of a poem (zh) */
    uint64_t r = (uint64_t)d->seed * 2654435761u + 7;
    wfile mc;
    wopen(&mc);
    size_t ng = json_array_size(c.glosses);
    int nq = 0;
    for (size_t i = 0; ng >= 4 && i < ng && nq < 100; i += ng / 100 + 1, nq++) {
        json_t *ch = json_array();
        int gold = (int)(rng_next(&r) % 4);
        for (int o = 0; o < 4; o++) {
            size_t idx = o == gold ? i : (i + 1 + rng_next(&r) % (ng - 1)) % ng;
            json_array_append(ch, json_array_get(json_array_get(c.glosses, idx), 1));
        }
        json_t *j = json_object();
        char q[512];
        snprintf(q, sizeof q,
                 "%s:", json_string_value(json_array_get(json_array_get(c.glosses, i), 0)));
        json_object_set_new(j, "query", json_string(q));
        json_object_set_new(j, "choices", ch);
        json_object_set_new(j, "gold", json_integer(gold));
        put_json_line(mc.f, j);
    }
    char *pmc = pathf(d, "eval/mc_gloss_en.jsonl"), *ped = pathf(d, "eval");
    pu_mkdir_p(ped);
    rc |= wclose(&mc, pmc);
    wopen(&mc);
    size_t np = json_array_size(c.poems);
    nq = 0;
    for (size_t i = 0; np >= 4 && i < np && nq < 100; i++, nq++) {
        json_t *lines = json_array_get(json_array_get(c.poems, i), 2);
        json_t *ch = json_array();
        int gold = (int)(rng_next(&r) % 4);
        for (int o = 0; o < 4; o++) {
            json_t *ln = lines;
            if (o != gold)
                ln = json_array_get(json_array_get(c.poems, (i + 1 + rng_next(&r) % (np - 1)) % np),
                                    2);
            json_array_append(ch, json_array_get(ln, 1));
        }
        json_t *j = json_object();
        json_object_set(j, "query", json_array_get(lines, 0));
        json_object_set_new(j, "choices", ch);
        json_object_set_new(j, "gold", json_integer(gold));
        put_json_line(mc.f, j);
    }
    char *pmz = pathf(d, "eval/mc_poem_zh.jsonl");
    rc |= wclose(&mc, pmz);
    /* task specs */
    static const char *const spec_en =
        "{\"name\": \"mc_gloss_en\", \"description\": \"WordNet: which gloss defines the word "
        "(4 options, built by puyu demo)\", \"mode\": \"ppl\", \"dataset\": {\"path\": "
        "\"mc_gloss_en.jsonl\", \"format\": \"jsonl\"}, \"fields\": {\"options\": \"choices\", "
        "\"answer\": \"gold\", \"answer_type\": \"index\"}, \"template\": {\"question\": "
        "\"{query}\", \"option\": \" {option}\"}, \"metric\": \"accuracy\", \"primary\": "
        "\"acc\"}\n";
    static const char *const spec_zh =
        "{\"name\": \"mc_poem_zh\", \"description\": \"Tang/Song poems: which line follows the "
        "first (4 options, built by puyu demo)\", \"mode\": \"ppl\", \"dataset\": {\"path\": "
        "\"mc_poem_zh.jsonl\", \"format\": \"jsonl\"}, \"fields\": {\"options\": \"choices\", "
        "\"answer\": \"gold\", \"answer_type\": \"index\"}, \"template\": {\"question\": "
        "\"{query}\\n\", \"option\": \"{option}\"}, \"metric\": \"accuracy\", \"primary\": "
        "\"acc\"}\n";
    char spec_nd[1400];
    snprintf(spec_nd, sizeof spec_nd,
             "{\"name\": \"needle_demo\", \"description\": \"Needle in a haystack of fortunes "
             "(built by puyu demo)\", \"mode\": \"needle\", \"needle\": {\"haystack\": "
             "{\"path\": \"../corpus/haystack\", \"glob\": \"*.txt\"}, \"needle\": \"The secret "
             "word is puyu.\", \"question\": \"What is the secret word?\", \"answer\": "
             "\"puyu\", \"prompt\": \"{haystack}\\n\\n{question}\\nThe secret word is\", "
             "\"lengths\": [%d, %d, %d], \"depths\": [0, 50, 100]}, \"gen\": {\"max_tokens\": "
             "8, \"stop\": [\"\\n\"]}}\n",
             d->seq / 2, d->seq, d->seq * 2 - 24);
    char *s1 = pathf(d, "eval/mc_gloss_en.json"), *s2 = pathf(d, "eval/mc_poem_zh.json"),
         *s3 = pathf(d, "eval/needle_demo.json");
    if (pu_file_write_atomic(s1, spec_en, strlen(spec_en)) != PU_OK ||
        pu_file_write_atomic(s2, spec_zh, strlen(spec_zh)) != PU_OK ||
        pu_file_write_atomic(s3, spec_nd, strlen(spec_nd)) != PU_OK)
        rc = 1;
    fprintf(stderr,
            "  corpus: %lld documents (%lld fortunes, %lld poems, %lld glosses, %lld Bible "
            "chapters); SFT %d train / %d held out\n",
            (long long)c.docs, (long long)c.en, (long long)c.zh, (long long)c.gl,
            (long long)c.bible, ntr, nev);
    char *pinfo = pathf(d, "corpus/counts.json");
    json_t *info =
        json_pack("{sIsIsIsIsIsisi}", "documents", (json_int_t)c.docs, "fortunes", (json_int_t)c.en,
                  "poems", (json_int_t)c.zh, "glosses", (json_int_t)c.gl, "bible_chapters",
                  (json_int_t)c.bible, "sft_train", ntr, "sft_eval", nev);
    char *is = json_dumps(info, JSON_INDENT(1));
    pu_file_write_atomic(pinfo, is, strlen(is));
    free(is);
    json_decref(info);
    json_decref(c.poems);
    json_decref(c.glosses);
    pu_free(p1);
    pu_free(p2);
    pu_free(p3);
    pu_free(p3d);
    pu_free(ptr);
    pu_free(pev);
    pu_free(pmc);
    pu_free(ped);
    pu_free(pmz);
    pu_free(s1);
    pu_free(s2);
    pu_free(s3);
    pu_free(pinfo);
    return rc;
}

/* ------------------------------------------------------------------ stages */

static int st_data(demo *d) {
    char *dir = pathf(d, "data");
    pu_mkdir_p(dir);
    char cfg[4096];
    snprintf(cfg, sizeof cfg,
             "{\"in\": \"%s/corpus/raw.jsonl\", \"out\": \"%s/data/kept.jsonl\", \"rejects\": "
             "\"%s/data/rejects.jsonl\", \"stats\": \"%s/data/stats.json\", \"report\": "
             "\"%s/data/report.md\", \"threads\": 0,\n \"stages\": [\"langid\", {\"stage\": "
             "\"clean\", \"min_words\": 3, \"max_dup_line_frac\": 0.5}, \"dedup\", "
             "{\"stage\": \"quality\", \"min_stopwords\": 0}]}\n",
             d->out, d->out, d->out, d->out, d->out);
    char *pp = pathf(d, "data/pipeline.json");
    pu_file_write_atomic(pp, cfg, strlen(cfg));
    argb b = {0};
    arg(&b, "data");
    arg(&b, "run");
    arg(&b, "--quiet");
    arg(&b, "%s", pp);
    char *log = pathf(d, "logs/data.log");
    int rc = run_self(d, "data run", log, NULL, b.a);
    pu_free(dir);
    pu_free(pp);
    pu_free(log);
    return rc;
}

static int st_tok(demo *d) {
    argb b = {0};
    arg(&b, "tokenizer");
    arg(&b, "train");
    opt(&b, "--type", "spm");
    arg(&b, "--jsonl");
    opt(&b, "--in", "%s/data/kept.jsonl", d->out);
    opt(&b, "--out", "%s/tokenizer", d->out);
    opt(&b, "--vocab-size", "%d", d->vocab);
    opt(&b, "--special", DEMO_SPECIALS);
    return run_logged(d, "tokenizer train", "tokenizer", &b);
}

static int st_pack(demo *d) {
    argb b = {0};
    arg(&b, "data");
    arg(&b, "pack");
    opt(&b, "-t", "%s/tokenizer/tokenizer.model", d->out);
    opt(&b, "--in", "%s/data/kept.jsonl", d->out);
    opt(&b, "--out", "%s/shards", d->out);
    opt(&b, "--val-fraction", "0.05");
    arg(&b, "--bos");
    return run_logged(d, "data pack", "pack", &b);
}

static int st_train(demo *d) {
    char cfg[2048];
    int heads = d->hidden / 32;
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"InternLM2ForCausalLM\"], \"model_type\": \"internlm2\", "
             "\"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": "
             "%d, \"hidden_act\": \"silu\", \"max_position_embeddings\": %d, "
             "\"initializer_range\": 0.02, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, "
             "\"rope_scaling\": null, \"tie_word_embeddings\": false, \"bias\": false, "
             "\"bos_token_id\": 1, \"eos_token_id\": 2, \"pad_token_id\": 0}\n",
             d->vocab, d->hidden, d->inter, d->layers, heads, heads > 1 ? heads / 2 : 1,
             d->seq * 2);
    char *cp = pathf(d, "train_config.json");
    pu_file_write_atomic(cp, cfg, strlen(cfg));
    argb b = {0};
    arg(&b, "train");
    opt(&b, "--config", "%s", cp);
    opt(&b, "--data", "%s/shards", d->out);
    opt(&b, "--out", "%s/train", d->out);
    opt(&b, "--steps", "%d", d->train_steps);
    opt(&b, "--batch", "%d", d->batch);
    opt(&b, "--seq", "%d", d->seq);
    opt(&b, "--seq-schedule", "0:%d,0.6:%d", d->seq / 2,
        d->seq); /* context stages: short first, then the full window */
    opt(&b, "--lr", "3e-3");
    opt(&b, "--warmup", "%d", d->train_steps / 10 + 1);
    opt(&b, "--seed", "%lld", (long long)d->seed);
    opt(&b, "--eval-every", "%d", d->train_steps / 8 + 1);
    opt(&b, "--eval-batches", "4");
    opt(&b, "--save-every", "%d", d->train_steps);
    opt(&b, "--keep", "1");
    char *log = pathf(d, "logs/train.log");
    snprintf(d->progress, sizeof d->progress, "%s/train/metrics.jsonl", d->out);
    d->total_steps = d->train_steps;
    int rc = run_self(d, "train", log, NULL, b.a);
    d->progress[0] = 0;
    pu_free(log);
    pu_free(cp);
    return rc;
}

static int st_sft(demo *d) {
    argb b = {0};
    arg(&b, "sft");
    opt(&b, "-m", "%s", d->model);
    opt(&b, "--data", "%s/corpus/sft_train.jsonl", d->out);
    opt(&b, "--eval-data", "%s/corpus/sft_eval.jsonl", d->out);
    opt(&b, "--out", "%s/sft", d->out);
    opt(&b, "--steps", "%d", d->sft_steps);
    opt(&b, "--batch", "%d", d->batch);
    opt(&b, "--seq", "%d", d->seq);
    arg(&b, "--pack");
    arg(&b, "--skip-bad");
    opt(&b, "--lr", "1e-3");
    opt(&b, "--seed", "%lld", (long long)d->seed);
    opt(&b, "--save-every", "%d", d->sft_steps);
    opt(&b, "--keep", "1");
    char *log = pathf(d, "logs/sft.log");
    snprintf(d->progress, sizeof d->progress, "%s/sft/metrics.jsonl", d->out);
    d->total_steps = d->sft_steps;
    int rc = run_self(d, "sft", log, NULL, b.a);
    d->progress[0] = 0;
    pu_free(log);
    return rc;
}

/* preference pairs from the glosses: chosen = the right definition, rejected = another */
static int write_pairs(demo *d) {
    char *src = pathf(d, "corpus/sft_train.jsonl");
    size_t len;
    char *all = slurp(src, &len);
    pu_free(src);
    if (!all)
        return 1;
    json_t *ans = json_array(), *qs = json_array();
    for (char *p = all; *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        json_t *j = json_loads(p, 0, NULL);
        json_t *m = json_object_get(j, "messages");
        const char *u = json_string_value(json_object_get(json_array_get(m, 0), "content"));
        const char *a = json_string_value(json_object_get(json_array_get(m, 1), "content"));
        if (u && a && !strncmp(u, "What does", 9)) {
            json_array_append_new(qs, json_string(u));
            json_array_append_new(ans, json_string(a));
        }
        json_decref(j);
        p = nl ? nl + 1 : p + strlen(p);
    }
    pu_free(all);
    wfile w;
    wopen(&w);
    size_t n = json_array_size(qs);
    for (size_t i = 0; n > 1 && i < n && i < 2000; i++) {
        json_t *j = json_object();
        json_t *pr = json_array(), *u = json_object();
        json_object_set_new(u, "role", json_string("user"));
        json_object_set(u, "content", json_array_get(qs, i));
        json_array_append_new(pr, u);
        json_t *c = json_object(), *r = json_object();
        json_object_set_new(c, "role", json_string("assistant"));
        json_object_set(c, "content", json_array_get(ans, i));
        json_object_set_new(r, "role", json_string("assistant"));
        json_object_set(r, "content", json_array_get(ans, (i + n / 2) % n));
        json_t *cc = json_array(), *rr = json_array();
        json_array_append_new(cc, c);
        json_array_append_new(rr, r);
        json_object_set_new(j, "prompt", pr);
        json_object_set_new(j, "chosen", cc);
        json_object_set_new(j, "rejected", rr);
        put_json_line(w.f, j);
    }
    json_decref(ans);
    json_decref(qs);
    char *out = pathf(d, "corpus/pairs.jsonl");
    int rc = wclose(&w, out);
    pu_free(out);
    return rc;
}

/* stages of other branches: the same training options as sft (the shared loop) */
static int st_align(demo *d, const char *cmd, const char *sub, const char *outname) {
    if (write_pairs(d))
        return 1;
    argb b = {0};
    arg(&b, "%s", cmd);
    if (sub)
        arg(&b, "%s", sub);
    opt(&b, "-m", "%s", d->model);
    opt(&b, "--data", "%s/corpus/pairs.jsonl", d->out);
    opt(&b, "--out", "%s/%s", d->out, outname);
    /* a light touch: at 1e-4 for sft/2 steps DPO drove the pair loss to 0.08 and the English
     * answers ran on past <|im_end|> ("the act of the act of ..."); the aligned model must
     * keep the chat format that SFT taught */
    opt(&b, "--steps", "%d", d->sft_steps / 4 + 1);
    opt(&b, "--batch", "%d", d->batch);
    opt(&b, "--seq", "%d",
        2 * d->seq); /* a pair's sides are longer than an SFT row: room for both */
    opt(&b, "--lr", "2e-5");
    arg(&b, "--skip-bad");
    char log[1200];
    snprintf(log, sizeof log, "%s/logs/%s.log", d->out, outname);
    return run_self(d, outname, log, NULL, b.a);
}

static int st_dpo(demo *d) {
    return st_align(d, "dpo", NULL, "dpo");
}

static int st_rm(demo *d) {
    return st_align(d, "rm", "train", "rm");
}

static int st_ppo(demo *d) {
    argb b = {0};
    arg(&b, "ppo");
    opt(&b, "-m", "%s", d->model);
    opt(&b, "--reward-model", "%s/rm/final", d->out);
    opt(&b, "--prompts", "%s/corpus/sft_eval.jsonl",
        d->out); /* the held-out SFT chats: their prompts (answers dropped) */
    opt(&b, "--out", "%s/ppo", d->out);
    opt(&b, "--steps", "%d", d->sft_steps / 4 + 1);
    opt(&b, "--batch", "%d", d->batch);
    opt(&b, "--max-new-tokens", "32");
    arg(&b, "--skip-bad");
    return run_logged(d, "ppo", "ppo", &b);
}

static int st_eval(demo *d) {
    argb b = {0};
    arg(&b, "eval");
    opt(&b, "-m", "%s", d->model);
    arg(&b, "--tasks");
    arg(&b, "%s/eval/mc_gloss_en.json,%s/eval/mc_poem_zh.json,%s/eval/needle_demo.json", d->out,
        d->out, d->out);
    opt(&b, "--out", "%s/eval/out", d->out);
    arg(&b, "--no-resume");
    if (d->smallest) {
        opt(&b, "--limit", "30");
    }
    return run_logged(d, "eval", "eval", &b);
}

static int st_quant(demo *d) {
    argb b = {0};
    arg(&b, "quantize");
    opt(&b, "-m", "%s", d->model);
    opt(&b, "--type", "q8_0");
    opt(&b, "--out", "%s/quant/model.gguf", d->out);
    char *q = pathf(d, "quant");
    pu_mkdir_p(q);
    pu_free(q);
    return run_logged(d, "quantize", "quantize", &b);
}

/* the model chat and serve talk to: the quantized GGUF when the quantize stage made it */
static const char *final_model(demo *d) {
    char *q = pathf(d, "quant/model.gguf");
    snprintf(d->final, sizeof d->final, "%s", exists(q) ? q : d->model);
    pu_free(q);
    return d->final;
}

static const char *const g_chat_prompts[] = {"Who are you?", "What does \"ocean\" mean?",
                                             "续写这首诗：床前明月光，", "你是谁？", NULL};

/* one `puyu chat` per prompt over a pipe (a fresh conversation each); the transcript
 * interleaves "> prompt" and the reply */
static int st_chat(demo *d) {
    char *dir = pathf(d, "chat"), *in = pathf(d, "chat/prompt.txt"),
         *one = pathf(d, "chat/reply.txt"), *tp = pathf(d, "chat/transcript.txt");
    pu_mkdir_p(dir);
    wfile t;
    wopen(&t);
    int rc = 0;
    for (int i = 0; g_chat_prompts[i] && !rc; i++) {
        wfile w;
        wopen(&w);
        fprintf(w.f, "%s\n", g_chat_prompts[i]);
        if (wclose(&w, in)) {
            rc = 1;
            break;
        }
        argb b = {0};
        arg(&b, "chat");
        opt(&b, "-m", "%s", final_model(d));
        opt(&b, "--temp", "0");
        opt(&b, "-n", "48");
        unlink(one);
        rc = run_self(d, "chat", one, in, b.a);
        char *r = slurp(one, NULL);
        /* drop the logged command line */
        char *body = r ? strchr(r, '\n') : NULL;
        if (body) { /* the command line goes to logs/chat.log */
            char *lp = pathf(d, "logs/chat.log");
            FILE *lf = fopen(lp, i ? "ab" : "wb");
            if (lf) {
                fwrite(r, 1, (size_t)(body - r + 1), lf);
                fclose(lf);
            }
            pu_free(lp);
        }
        body = body ? body + 1 : (char *)"";
        trim(body);
        fprintf(t.f, "> %s\n%s\n\n", g_chat_prompts[i], body);
        pu_free(r);
    }
    if (wclose(&t, tp))
        rc = 1;
    unlink(one);
    pu_free(tp);
    pu_free(one);
    pu_free(in);
    pu_free(dir);
    return rc;
}

/* ------------------------------------------------------------------ serve */

/* one HTTP/1.1 request to 127.0.0.1:PORT (Connection: close); the whole response in *resp */
static int http_post(int port, const char *path, const char *body, char **resp) {
    *resp = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return 1;
    }
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      path, port, strlen(body));
    if (write(fd, head, (size_t)hn) != hn ||
        write(fd, body, strlen(body)) != (ssize_t)strlen(body)) {
        close(fd);
        return 1;
    }
    size_t cap = 1 << 14, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 + 1 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, 4096);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = 0;
    close(fd);
    *resp = buf;
    return len ? 0 : 1;
}

static const char *const g_serve_prompt = "Who are you?";

/* `puyu serve` on the final model at a free loopback port (--port 0: the port comes from its
 * "listening on" line), one chat request, the reply kept, the server stopped (SIGTERM) */
static int st_serve(demo *d) {
    char *dir = pathf(d, "serve"), *log = pathf(d, "logs/serve.log");
    pu_mkdir_p(dir);
    unlink(log);
    argb b = {0};
    arg(&b, "serve");
    opt(&b, "-m", "%s", final_model(d));
    opt(&b, "--host", "127.0.0.1");
    opt(&b, "--port", "0");
    opt(&b, "--max-batch", "1");
    FILE *lf = fopen(log, "wb");
    if (!lf) {
        pu_free(dir);
        pu_free(log);
        return 1;
    }
    fprintf(lf, "$ puyu");
    for (int i = 0; b.a[i]; i++)
        fprintf(lf, " %s", b.a[i]);
    fprintf(lf, "\n");
    fclose(lf);
    char *argv[100];
    argv[0] = (char *)"puyu";
    for (int i = 0; i <= b.n; i++)
        argv[i + 1] = b.a[i];
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        pu_free(dir);
        pu_free(log);
        return 1;
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_APPEND), fi = open("/dev/null", O_RDONLY);
        if (fd < 0 || fi < 0)
            _exit(127);
        dup2(fi, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(d->self, argv);
        _exit(127);
    }
    int port = 0, rc = 1, status = 0;
    bool exited = false;
    for (int tries = 0; tries < 1200 && !port; tries++) { /* up to 2 minutes */
        char *t = slurp(log, NULL);
        char *l = t ? strstr(t, "listening on http://127.0.0.1:") : NULL;
        if (l)
            port = atoi(l + strlen("listening on http://127.0.0.1:"));
        pu_free(t);
        if (port)
            break;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            exited = true;
            break;
        }
        usleep(100000);
    }
    char *resp = NULL;
    if (port) {
        json_t *rq = json_pack("{s[{ssss}]sisfsi}", "messages", "role", "user", "content",
                               g_serve_prompt, "max_tokens", 48, "temperature", 0.0, "seed", 1);
        char *body = json_dumps(rq, JSON_COMPACT);
        json_decref(rq);
        char *pq = pathf(d, "serve/request.json");
        pu_file_write_atomic(pq, body, strlen(body));
        pu_free(pq);
        if (http_post(port, "/v1/chat/completions", body, &resp) == 0) {
            char *js = strstr(resp, "\r\n\r\n");
            json_t *j = js ? json_loads(js + 4, 0, NULL) : NULL;
            json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
            const char *content =
                json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
            const char *fin = json_string_value(json_object_get(c0, "finish_reason"));
            if (content) {
                char *pr = pathf(d, "serve/response.json"), *pt = pathf(d, "serve/reply.txt");
                pu_file_write_atomic(pr, js + 4, strlen(js + 4));
                char txt[8192];
                int n =
                    snprintf(txt, sizeof txt,
                             "$ curl http://127.0.0.1:%d/v1/chat/completions -d '%s'\n> %s\n%s\n"
                             "(finish_reason: %s)\n",
                             port, body, g_serve_prompt, content, fin ? fin : "?");
                pu_file_write_atomic(pt, txt,
                                     (size_t)(n < (int)sizeof txt ? n : (int)sizeof txt - 1));
                fprintf(stderr, "  serve: port %d, \"%s\" -> \"%s\" (%s)\n", port, g_serve_prompt,
                        content, fin ? fin : "?");
                pu_free(pr);
                pu_free(pt);
                rc = 0;
            } else
                fprintf(stderr, "puyu demo: serve: unexpected reply: %.300s\n", resp);
            json_decref(j);
        } else
            fprintf(stderr, "puyu demo: serve: no reply from port %d\n", port);
        free(body);
    } else
        fprintf(stderr, "puyu demo: serve did not start (see %s)\n", log);
    free(resp);
    if (!exited) {
        kill(pid, SIGTERM);
        int w = 0;
        for (; w < 100 && waitpid(pid, &status, WNOHANG) != pid; w++)
            usleep(100000);
        if (w == 100) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
    }
    pu_free(dir);
    pu_free(log);
    return rc;
}

/* ------------------------------------------------------------------ report */

static void html_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

/* an SVG file inline (its XML prolog dropped) */
static void put_svg(FILE *f, const char *path) {
    char *s = slurp(path, NULL);
    if (!s) {
        fprintf(f, "<p class=\"na\">(no %s)</p>\n", path);
        return;
    }
    char *p = strstr(s, "<svg");
    fputs(p ? p : s, f);
    pu_free(s);
}

typedef struct stage_rec {
    const char *name;
    const char *status; /* done, skipped, n/a, failed */
    double seconds, cpu;
} stage_rec;

static int plot(demo *d, const char *metrics, const char *svg, const char *title) {
    if (!exists(metrics))
        return 1;
    argb b = {0};
    arg(&b, "plot");
    arg(&b, "%s", metrics);
    opt(&b, "-o", "%s", svg);
    opt(&b, "--title", "%s", title);
    return run_logged(d, "report", "report", &b);
}

/* last val_loss of a metrics JSONL (first one with FIRST) */
static double val_loss(const char *metrics, bool first) {
    char *t = slurp(metrics, NULL);
    double v = NAN;
    for (char *p = t; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        char *q = strstr(p, "\"val_loss\":");
        if (q) {
            v = strtod(q + 11, NULL);
            if (first)
                break;
        }
        p = nl ? nl + 1 : p + strlen(p);
    }
    pu_free(t);
    return v;
}

static int st_report(demo *d, const stage_rec *recs, int nrec) {
    char *p_tm = pathf(d, "train/metrics.jsonl"), *p_sm = pathf(d, "sft/metrics.jsonl"),
         *p_ts = pathf(d, "train_loss.svg"), *p_ss = pathf(d, "sft_loss.svg");
    plot(d, p_tm, p_ts, "pretraining loss (train / held-out)");
    plot(d, p_sm, p_ss, "SFT loss (train / held-out)");
    wfile w;
    wopen(&w);
    FILE *f = w.f;
    fprintf(f,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>puyu demo "
            "report</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:20px "
            "auto;color:#222}table{border-collapse:collapse;margin:8px 0}td,th{border:1px "
            "solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}.bar{background:"
            "#4a7bd0;height:14px;display:inline-block}pre{background:#f6f6f6;padding:8px;"
            "white-space:pre-wrap}.na{color:#888}svg{max-width:100%%;height:auto}</style>"
            "</head><body>\n<h1>puyu demo</h1>\n<p>seed %lld, %s, out <code>",
            (long long)d->seed,
            d->smallest ? "--smallest"
            : d->big    ? "--big"
                        : "default size");
    html_esc(f, d->out);
    fprintf(f, "</code></p>\n<h2>Stages</h2>\n<table><tr><th>#</th><th>stage</th><th>status</th>"
               "<th>wall s</th><th>CPU s</th></tr>\n");
    for (int i = 0; i < nrec; i++)
        fprintf(f, "<tr><td>%d</td><td>%s</td><td>%s</td><td>%.1f</td><td>%.1f</td></tr>\n", i + 1,
                recs[i].name, recs[i].status, recs[i].seconds, recs[i].cpu);
    fprintf(f, "</table>\n<h2>Data funnel (puyu data run)</h2>\n");
    char *p_st = pathf(d, "data/stats.json");
    json_t *st = json_load_file(p_st, 0, NULL);
    if (st) {
        json_t *stages = json_object_get(st, "stages");
        long long in0 = json_integer_value(json_object_get(st, "docs_in"));
        fprintf(f,
                "<table><tr><th>stage</th><th>in</th><th>kept</th><th>rejected</th><th>kept "
                "of the corpus</th></tr>\n<tr><td>corpus</td><td>%lld</td><td>%lld</td><td>0"
                "</td><td><span class=\"bar\" style=\"width:400px\"></span> 100%%</td></tr>\n",
                in0, in0);
        for (size_t i = 0; i < json_array_size(stages); i++) {
            json_t *s = json_array_get(stages, i);
            long long kept = json_integer_value(json_object_get(s, "kept"));
            fprintf(f,
                    "<tr><td>%s</td><td>%lld</td><td>%lld</td><td>%lld</td><td><span "
                    "class=\"bar\" style=\"width:%dpx\"></span> %.1f%%</td></tr>\n",
                    json_string_value(json_object_get(s, "stage")),
                    (long long)json_integer_value(json_object_get(s, "in")), kept,
                    (long long)json_integer_value(json_object_get(s, "rejected")),
                    in0 ? (int)(400.0 * kept / in0) : 0, in0 ? 100.0 * kept / in0 : 0);
        }
        fprintf(f, "</table>\n<p>languages:");
        const char *k;
        json_t *v;
        long long other = 0, kept_all = json_integer_value(json_object_get(st, "kept"));
        json_object_foreach(json_object_get(st, "lang_mix"), k, v) {
            long long c = (long long)json_integer_value(v);
            if (c * 200 >= kept_all) /* 0.5 % or more */
                fprintf(f, " %s %lld (%.1f%%),", k, c, 100.0 * c / (kept_all ? kept_all : 1));
            else
                other += c;
        }
        fprintf(f, " other %lld (langid of short texts)</p>\n", other);
        json_decref(st);
    } else
        fprintf(f, "<p class=\"na\">(no data stats)</p>\n");
    fprintf(f, "<h2>Loss curves (puyu plot)</h2>\n");
    put_svg(f, p_ts);
    put_svg(f, p_ss);
    fprintf(f, "<h2>Evaluation</h2>\n<table><tr><th>metric</th><th>value</th></tr>\n");
    double v0 = val_loss(p_tm, false), s0 = val_loss(p_sm, true), s1 = val_loss(p_sm, false);
    if (!isnan(v0))
        fprintf(f, "<tr><td>pretraining held-out loss / perplexity</td><td>%.4f / %.2f</td></tr>\n",
                v0, exp(v0));
    if (!isnan(s0))
        fprintf(f, "<tr><td>SFT held-out loss before → after</td><td>%.4f → %.4f</td></tr>\n", s0,
                s1);
    char *p_res = pathf(d, "eval/out/results.json");
    json_t *res = json_load_file(p_res, 0, NULL);
    json_t *tasks = json_object_get(res, "tasks");
    if (!tasks)
        tasks = res;
    const char *tk;
    json_t *tv;
    if (json_is_object(tasks))
        json_object_foreach(tasks, tk, tv) {
            json_t *sc = json_object_get(tv, "score");
            if (json_is_number(sc))
                fprintf(f, "<tr><td>%s (n=%lld)</td><td>%.3f</td></tr>\n", tk,
                        (long long)json_integer_value(json_object_get(tv, "n")),
                        json_number_value(sc));
        }
    else if (json_is_array(tasks))
        for (size_t i = 0; i < json_array_size(tasks); i++) {
            json_t *t = json_array_get(tasks, i);
            json_t *sc = json_object_get(t, "score");
            if (json_is_number(sc))
                fprintf(f, "<tr><td>%s (n=%lld)</td><td>%.3f</td></tr>\n",
                        json_string_value(json_object_get(t, "name")),
                        (long long)json_integer_value(json_object_get(t, "n")),
                        json_number_value(sc));
        }
    json_decref(res);
    fprintf(f, "</table>\n<p>chance on the 4-option tasks: 0.25</p>\n<h2>Needle in a "
               "haystack</h2>\n");
    char *p_nd = pathf(d, "eval/out/needle_needle_demo.svg");
    put_svg(f, p_nd);
    fprintf(f, "<h2>Sample chats (puyu chat, greedy)</h2>\n<pre>");
    char *p_ch = pathf(d, "chat/transcript.txt");
    char *tr = slurp(p_ch, NULL);
    html_esc(f, tr ? tr : "(no chat)");
    pu_free(tr);
    fprintf(f, "</pre>\n<h2>One request to puyu serve</h2>\n<pre>");
    char *p_sv = pathf(d, "serve/reply.txt");
    char *sv = slurp(p_sv, NULL);
    html_esc(f, sv ? sv : "(no serve stage)");
    pu_free(sv);
    pu_free(p_sv);
    const char *fm = final_model(d);
    fprintf(f, "</pre>\n<h2>Talk to the model</h2>\n<pre>./puyu chat -m ");
    html_esc(f, fm);
    fprintf(f, " -p \"Who are you?\"\n./puyu chat -m ");
    html_esc(f, fm);
    fprintf(f, "\n./puyu serve -m ");
    html_esc(f, fm);
    fprintf(f, "   # then http://127.0.0.1:8000/</pre>\n</body></html>\n");
    char *p_rep = pathf(d, "report.html");
    int rc = wclose(&w, p_rep);
    pu_free(p_tm);
    pu_free(p_sm);
    pu_free(p_ts);
    pu_free(p_ss);
    pu_free(p_st);
    pu_free(p_res);
    pu_free(p_nd);
    pu_free(p_ch);
    pu_free(p_rep);
    return rc;
}

/* ------------------------------------------------------------------ driver */

typedef struct stage {
    const char *name;
    const char *cmd, *sub; /* the puyu command the stage needs (NULL: built in) */
    int (*run)(demo *d);
    const char *out;   /* what it leaves (relative to OUT) */
    const char *model; /* a model directory it produces (relative to OUT), or NULL */
    bool optional;     /* failure: keep the previous model and go on */
    int alt_group;     /* 1: dpo, else rm train + ppo */
} stage;

static const stage g_stages[] = {
    {"corpus", NULL, NULL, st_corpus, "corpus/raw.jsonl", NULL, false, 0},
    {"data", "data", "run", st_data, "data/kept.jsonl", NULL, false, 0},
    {"tokenizer", "tokenizer", "train", st_tok, "tokenizer/tokenizer.model", NULL, false, 0},
    {"pack", "data", "pack", st_pack, "shards/meta.json", NULL, false, 0},
    {"train", "train", NULL, st_train, "train/latest", "train", false, 0},
    {"sft", "sft", NULL, st_sft, "sft/final", "sft/final", false, 0},
    {"dpo", "dpo", NULL, st_dpo, "dpo/final", "dpo/final", true, 1},
    {"rm", "rm", "train", st_rm, "rm/final", NULL, true, 2},
    {"ppo", "ppo", NULL, st_ppo, "ppo/final", "ppo/final", true, 2},
    {"eval", "eval", NULL, st_eval, "eval/out/results.json", NULL, false, 0},
    {"quantize", "quantize", NULL, st_quant, "quant/model.gguf", NULL, true, 0},
    {"chat", "chat", NULL, st_chat, "chat/transcript.txt", NULL, false, 0},
    {"serve", "serve", NULL, st_serve, "serve/response.json", NULL, false, 0},
};
#define N_STAGES ((int)(sizeof g_stages / sizeof g_stages[0]))

static void set_model(demo *d, const stage *s) {
    char *p = pathf(d, "%s", s->model);
    if (!strcmp(s->name, "train")) {
        char ck[1200];
        if (!latest_ckpt(p, ck, sizeof ck))
            snprintf(d->model, sizeof d->model, "%s", ck);
    } else if (exists(p))
        snprintf(d->model, sizeof d->model, "%s", p);
    pu_free(p);
}

static void sizes(demo *d) {
    double m = d->minutes > 0 ? d->minutes : 15;
    if (d->smallest) {
        d->vocab = 600;
        d->hidden = 64;
        d->layers = 2;
        d->inter = 176;
        d->seq = 64;
        d->batch = 8;
        d->train_steps = 60;
        d->sft_steps = 30;
        d->max_fortunes = 1500;
        d->max_glosses = 1500;
        d->max_chapters = 60;
        return;
    }
    d->vocab = 4000;
    d->hidden = 128;
    d->layers = 4;
    d->inter = 352;
    d->seq = 256;
    d->batch = 16;
    /* ~55 % of the budget for pretraining at ~1 s a step (measured 0.25-0.7 s at context
     * 128 and 0.6-2 s at 256 on 2 shared cores); a fixed function of --minutes, never of
     * the measured speed, so that a --seed reproduces the run */
    d->train_steps = (int)(m * 60 * 0.55 / 1.0);
    if (d->train_steps < 20)
        d->train_steps = 20;
    d->sft_steps = d->train_steps / 4 + 1;
    d->max_fortunes = 12000;
    d->max_glosses = 20000;
    d->max_chapters = 1189;
    if (d->big) {
        d->hidden = 192;
        d->inter = 512;
        d->layers = 6;
        d->vocab = 8000;
    }
}

int pu_cmd_demo(int argc, char **argv) {
    const char *out = "demo_out";
    double minutes = 15;
    int64_t seed = 1;
    bool big = false, smallest = false, force = false;
    const pu_opt opts[] = {
        {"minutes", 0, PU_OPT_DOUBLE, &minutes, "N", "time budget (sizes the training steps)", 0.5,
         1e6},
        {"out", 'o', PU_OPT_STRING, &out, "DIR", "where every stage writes (default demo_out)", 0,
         0},
        {"seed", 0, PU_OPT_INT, &seed, "S", "seed of the corpus sampling, init and data order", 0,
         9.2e18},
        {"big", 0, PU_OPT_FLAG, &big, NULL,
         "a bigger model; also the ../shared/data corpora when present", 0, 0},
        {"smallest", 0, PU_OPT_FLAG, &smallest, NULL,
         "the smallest setting (the test's; about a minute)", 0, 0},
        {"force", 0, PU_OPT_FLAG, &force, NULL, "rerun every stage (ignore the stamps)", 0, 0},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu demo", "[--minutes N] [--out DIR] [--seed S] [--big] [--smallest]",
        "The whole chain on Debian's corpora (fortunes, fortunes-zh, wordnet-base; `make deps`):\n"
        "corpus -> data run -> tokenizer train -> data pack -> train -> sft -> [dpo | rm train +\n"
        "ppo] -> eval -> [quantize] -> chat, then DIR/report.html. Each stage runs this binary\n"
        "with the command logged in DIR/logs/; a finished stage leaves DIR/.stamps/STAGE and a\n"
        "rerun skips it. Stages whose command this build lacks are skipped."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    demo d = {0};
    d.out = out;
    d.seed = seed;
    d.minutes = minutes;
    d.big = big;
    d.smallest = smallest;
    d.tty = isatty(2);
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "puyu demo: cannot read /proc/self/exe\n");
        return 1;
    }
    self[n] = 0;
    d.self = self;
    sizes(&d);
    if (pu_mkdir_p(out) != PU_OK) {
        fprintf(stderr, "puyu demo: %s: %s\n", out, pu_err_msg());
        return 1;
    }
    char *sd = pathf(&d, ".stamps"), *ld = pathf(&d, "logs");
    pu_mkdir_p(sd);
    pu_mkdir_p(ld);
    pu_free(ld);
    d.nstage = N_STAGES;
    stage_rec recs[N_STAGES];
    memset(recs, 0, sizeof recs);
    double t_all = now_s();
    bool have_dpo = have_cmd(&d, "dpo", NULL);
    int failed = 0;
    fprintf(stderr, "puyu demo: %d stages into %s (%s)\n", N_STAGES, out,
            smallest ? "--smallest"
            : big    ? "--big"
                     : "default");
    for (int i = 0; i < N_STAGES; i++) {
        const stage *s = &g_stages[i];
        d.istage = i + 1;
        recs[i].name = s->name;
        recs[i].seconds = 0;
        char *stamp = pathf(&d, ".stamps/%s", s->name);
        if (s->cmd && !have_cmd(&d, s->cmd, s->sub)) {
            fprintf(stderr, "[%d/%d] %-16s not available in this build (no `puyu %s%s%s`)\n", i + 1,
                    N_STAGES, s->name, s->cmd, s->sub ? " " : "", s->sub ? s->sub : "");
            recs[i].status = "not available in this build";
            pu_free(stamp);
            continue;
        }
        if (s->alt_group == 2 && have_dpo) {
            fprintf(stderr, "[%d/%d] %-16s skipped (dpo ran instead)\n", i + 1, N_STAGES, s->name);
            recs[i].status = "skipped (dpo instead)";
            pu_free(stamp);
            continue;
        }
        if (!strcmp(s->name, "ppo") &&
            (!recs[i - 1].status ||
             (strcmp(recs[i - 1].status, "done") && strcmp(recs[i - 1].status, "done (stamp)")))) {
            recs[i].status = "skipped (no reward model)";
            pu_free(stamp);
            continue;
        }
        char *st = force ? NULL : slurp(stamp, NULL);
        if (st) {
            recs[i].seconds = strtod(st, NULL);
            char *cl = strstr(st, "\ncpu ");
            recs[i].cpu = cl ? strtod(cl + 5, NULL) : 0;
            recs[i].status = "done (stamp)";
            pu_free(st);
            fprintf(stderr, "[%d/%d] %-16s done earlier (stamp %s/.stamps/%s)\n", i + 1, N_STAGES,
                    s->name, out, s->name);
            if (s->model)
                set_model(&d, s);
            pu_free(stamp);
            continue;
        }
        if (!d.tty)
            fprintf(stderr, "[%d/%d] %-16s ...\n", i + 1, N_STAGES, s->name);
        double t0 = now_s(), c0 = child_cpu_s();
        int r = s->run(&d);
        char *op = pathf(&d, "%s", s->out);
        if (r == 0 && !exists(op)) {
            fprintf(stderr, "puyu demo: stage %s finished but left no %s\n", s->name, op);
            r = 1;
        }
        pu_free(op);
        recs[i].seconds = now_s() - t0;
        recs[i].cpu = child_cpu_s() - c0;
        if (r != 0) {
            fprintf(stderr, "[%d/%d] %-16s FAILED (exit %d; see %s/logs/)\n", i + 1, N_STAGES,
                    s->name, r, out);
            recs[i].status = "failed";
            pu_free(stamp);
            if (s->optional)
                continue;
            failed = 1;
            break;
        }
        recs[i].status = "done";
        if (s->model)
            set_model(&d, s);
        char line[1600];
        int ln = snprintf(line, sizeof line, "%.3f\ncpu %.3f\nout %s\nmodel %s\n", recs[i].seconds,
                          recs[i].cpu, s->out, d.model);
        pu_file_write_atomic(stamp, line, (size_t)ln);
        fprintf(stderr, "[%d/%d] %-16s done in %.1f s\n", i + 1, N_STAGES, s->name,
                recs[i].seconds);
        pu_free(stamp);
    }
    pu_free(sd);
    int nrec = N_STAGES;
    for (int i = 0; i < N_STAGES; i++)
        if (!recs[i].name) {
            nrec = i;
            break;
        }
    if (failed) {
        for (int i = 0; i < N_STAGES; i++)
            if (!recs[i].status) {
                nrec = i;
                break;
            }
    }
    if (st_report(&d, recs, nrec))
        return 1;
    fprintf(stderr, "puyu demo: %s in %.0f s; report: %s/report.html\n",
            failed ? "stopped at a failed stage" : "finished", now_s() - t_all, out);
    if (failed)
        return 1;
    const char *fm = final_model(&d);
    printf("Talk to the model:\n  ./puyu chat -m %s -p \"Who are you?\"\n  ./puyu chat -m %s\n"
           "  ./puyu serve -m %s   # web chat at http://127.0.0.1:8000/\n"
           "  ./puyu generate -m %s -p \"床前明月光，\" -n 32\n",
           fm, fm, fm, fm);
    return 0;
}
