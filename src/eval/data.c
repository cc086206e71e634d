/*
 * data.c — dataset readers (CSV / JSONL / JSON) and sample building.
 *
 * Every record becomes a jansson object (CSV rows: header -> string value),
 * remembered with its file and line for errors. Files of a dataset directory
 * are read in name order; each file is a "group" (an MMLU subject: the
 * subject name is the file stem minus dataset.subject_suffix, '_' -> ' ').
 * Derived fields (regex replacements) are added to the record at load.
 *
 * Templates: {name} is replaced by, in order: a record field, or one of
 *   subject, A..Z (option texts), letter / option (the option being scored),
 *   gold_letter, gold_option, gold (the gold answer text).
 * "{{" and "}}" are literal braces. A missing name is an error naming the
 * task, the template and the record (file:line).
 *
 * Prompt = preamble + k x (question + answer + separator) + question; ppl
 * options are the rendered `option` template for each option. Few-shot
 * examples come from the same group (file) in order, the item itself
 * excluded, or from fewshot.source.
 */
#include <ctype.h>
#include <glob.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval_impl.h"

typedef struct ev_rec {
    json_t *obj;
    int group;
    int64_t line;    /* 1-based line in its file (JSON: array index) */
    int64_t row;     /* index within the group */
    int gold;        /* -1 if none */
    char *gold_text; /* owned; NULL if none */
} ev_rec;

typedef struct ev_set {
    ev_rec *recs;
    int64_t n, cap;
    char **files;    /* per group */
    char **subjects; /* file stems (minus subject_suffix) */
    char **names;    /* display names from subject_names, or NULL */
    int n_groups;
    bool is_dir; /* ids are "<subject>/<row>" */
} ev_set;

struct pu_eval_data {
    const pu_eval_task *t;
    ev_set main, shots; /* shots.n == 0: few-shot from main */
};

/* ------------------------------------------------------------------ files */

char *ev_resolve_path(const pu_eval_task *t, const char *data_dir, const char *rel) {
    if (rel[0] == '/')
        return pu_strdup(rel);
    if (t->base_dir) {
        char *p = pu_path_join(t->base_dir, rel);
        struct stat st;
        if (stat(p, &st) == 0)
            return p;
        pu_free(p);
    }
    return pu_path_join(data_dir ? data_dir : ".", rel);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

pu_status ev_list_files(const char *path, const char *pattern, char ***files, int *n) {
    *files = NULL;
    *n = 0;
    struct stat st;
    if (stat(path, &st) != 0)
        return pu_err_set(PU_ERR_IO, "%s: no such file or directory", path);
    if (!S_ISDIR(st.st_mode)) {
        *files = pu_calloc(1, sizeof **files);
        (*files)[0] = pu_strdup(path);
        *n = 1;
        return PU_OK;
    }
    char *g = pu_path_join(path, pattern ? pattern : "*");
    glob_t gl;
    memset(&gl, 0, sizeof gl);
    int rc = glob(g, 0, NULL, &gl);
    if (rc != 0 || gl.gl_pathc == 0) {
        globfree(&gl);
        pu_status s = pu_err_set(PU_ERR_IO, "%s: no files match", g);
        pu_free(g);
        return s;
    }
    pu_free(g);
    char **v = pu_calloc(gl.gl_pathc, sizeof *v);
    int m = 0;
    for (size_t i = 0; i < gl.gl_pathc; i++)
        if (stat(gl.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode))
            v[m++] = pu_strdup(gl.gl_pathv[i]);
    globfree(&gl);
    qsort(v, (size_t)m, sizeof *v, cmp_str);
    *files = v;
    *n = m;
    if (!m) {
        pu_free(v);
        *files = NULL;
        return pu_err_set(PU_ERR_IO, "%s: no regular files match '%s'", path,
                          pattern ? pattern : "*");
    }
    return PU_OK;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static const char *fmt_of(const pu_eval_task *t, const char *file) {
    if (t->format)
        return t->format;
    size_t n = strlen(file);
    if (n > 4 && !strcmp(file + n - 4, ".csv"))
        return "csv";
    if (n > 6 && !strcmp(file + n - 6, ".jsonl"))
        return "jsonl";
    return "json";
}

/* ------------------------------------------------------------------- CSV */

static void set_push(ev_set *s, json_t *obj, int group, int64_t line, int64_t row) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->recs = pu_realloc(s->recs, (size_t)s->cap * sizeof *s->recs);
    }
    ev_rec *r = &s->recs[s->n++];
    memset(r, 0, sizeof *r);
    r->obj = obj;
    r->group = group;
    r->line = line;
    r->row = row;
    r->gold = -1;
}

/* RFC 4180: quoted fields ("" escapes, embedded newlines), CRLF or LF. */
static pu_status read_csv(const char *path, const char *buf, size_t len, ev_set *s, int group) {
    size_t i = 0;
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3))
        i = 3;
    int64_t line = 1, rec_line = 1;
    char **header = NULL;
    int n_header = 0;
    char **cells = NULL;
    int n_cells = 0, cap_cells = 0;
    pu_str cell = {0};
    bool row_has_data = false;
    int64_t row = 0;
    pu_status st = PU_OK;
    while (i <= len) {
        /* parse one field */
        pu_str_clear(&cell);
        pu_str_puts(&cell, "");
        bool quoted = false;
        if (i < len && buf[i] == '"') {
            quoted = true;
            i++;
            for (;;) {
                if (i >= len) {
                    st = pu_err_set(PU_ERR_FORMAT, "%s:%lld: unterminated quoted field", path,
                                    (long long)rec_line);
                    goto done;
                }
                if (buf[i] == '"') {
                    if (i + 1 < len && buf[i + 1] == '"') {
                        pu_str_putc(&cell, '"');
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                if (buf[i] == '\n')
                    line++;
                pu_str_putc(&cell, buf[i]);
                i++;
            }
        } else {
            while (i < len && buf[i] != ',' && buf[i] != '\n' && buf[i] != '\r') {
                pu_str_putc(&cell, buf[i]);
                i++;
            }
        }
        if (quoted && i < len && buf[i] != ',' && buf[i] != '\n' && buf[i] != '\r') {
            st = pu_err_set(PU_ERR_FORMAT, "%s:%lld: unexpected character after a quoted field",
                            path, (long long)line);
            goto done;
        }
        if (cell.len || quoted)
            row_has_data = true;
        if (n_cells == cap_cells) {
            cap_cells = cap_cells ? 2 * cap_cells : 16;
            cells = pu_realloc(cells, (size_t)cap_cells * sizeof *cells);
        }
        cells[n_cells++] = pu_str_steal(&cell);
        bool end_row = i >= len || buf[i] == '\n' || buf[i] == '\r';
        if (i < len && buf[i] == ',') {
            i++;
            continue;
        }
        if (i < len && buf[i] == '\r')
            i++;
        if (i < len && buf[i] == '\n')
            i++;
        if (end_row) {
            if (row_has_data || n_cells > 1) {
                if (!header) {
                    header = cells;
                    n_header = n_cells;
                    cells = NULL;
                    cap_cells = 0;
                    n_cells = 0;
                } else {
                    if (n_cells != n_header) {
                        st = pu_err_set(PU_ERR_FORMAT,
                                        "%s:%lld: expected %d fields (header), found %d", path,
                                        (long long)rec_line, n_header, n_cells);
                        goto done;
                    }
                    json_t *o = json_object();
                    for (int c = 0; c < n_cells; c++)
                        json_object_set_new(o, header[c], json_string(cells[c]));
                    set_push(s, o, group, rec_line, row++);
                }
            }
            for (int c = 0; c < n_cells; c++)
                pu_free(cells[c]);
            n_cells = 0;
            row_has_data = false;
            line++;
            rec_line = line;
            if (i >= len)
                break;
        }
    }
done:
    for (int c = 0; c < n_cells; c++)
        pu_free(cells[c]);
    pu_free(cells);
    ev_free_list(header, n_header);
    pu_str_free(&cell);
    if (!st && !header)
        st = pu_err_set(PU_ERR_FORMAT, "%s: empty CSV (no header row)", path);
    return st;
}

static pu_status read_jsonl(const char *path, const char *buf, size_t len, ev_set *s, int group) {
    int64_t line = 0, row = 0;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && buf[e] != '\n')
            e++;
        line++;
        size_t a = i, b = e;
        while (a < b && isspace((unsigned char)buf[a]))
            a++;
        if (a < b) {
            char what[600];
            snprintf(what, sizeof what, "%s line %lld", path, (long long)line);
            json_t *o = NULL;
            PU_TRY(pu_json_loadb(buf + a, b - a, what, &o));
            if (!json_is_object(o)) {
                json_decref(o);
                return pu_err_set(PU_ERR_FORMAT, "%s:%lld: expected a JSON object per line", path,
                                  (long long)line);
            }
            set_push(s, o, group, line, row++);
        }
        i = e + 1;
    }
    return PU_OK;
}

static pu_status read_json(const char *path, const char *buf, size_t len, ev_set *s, int group) {
    json_t *root = NULL;
    PU_TRY(pu_json_loadb(buf, len, path, &root));
    json_t *arr = root;
    if (json_is_object(root) && json_is_array(json_object_get(root, "data")))
        arr = json_object_get(root, "data");
    if (!json_is_array(arr)) {
        json_decref(root);
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: expected a JSON array of objects (or {\"data\": [...]})", path);
    }
    size_t k;
    json_t *o;
    json_array_foreach(arr, k, o) {
        if (!json_is_object(o)) {
            json_decref(root);
            return pu_err_set(PU_ERR_FORMAT, "%s: element %zu: expected a JSON object", path, k);
        }
        set_push(s, json_incref(o), group, (int64_t)k, (int64_t)k);
    }
    json_decref(root);
    return PU_OK;
}

/* ------------------------------------------------------------ field values */

/* string form of a record value (owned) */
static char *value_str(const json_t *v) {
    if (json_is_string(v))
        return pu_strdup(json_string_value(v));
    if (json_is_integer(v)) {
        char b[32];
        snprintf(b, sizeof b, "%lld", (long long)json_integer_value(v));
        return pu_strdup(b);
    }
    if (json_is_real(v)) {
        char b[64];
        snprintf(b, sizeof b, "%.17g", json_real_value(v));
        return pu_strdup(b);
    }
    if (json_is_true(v))
        return pu_strdup("true");
    if (json_is_false(v))
        return pu_strdup("false");
    if (json_is_null(v))
        return pu_strdup("");
    char *d = json_dumps(v, JSON_COMPACT);
    char *r = pu_strdup(d ? d : "");
    free(d);
    return r;
}

static const char *rec_file(const ev_set *s, const ev_rec *r) {
    return s->files[r->group];
}

static int rec_n_options(const pu_eval_task *t, const ev_rec *r) {
    if (t->options_field) {
        json_t *a = json_object_get(r->obj, t->options_field);
        return json_is_array(a) ? (int)json_array_size(a) : 0;
    }
    if (t->option_ids_field) {
        json_t *a = json_object_get(r->obj, t->option_ids_field);
        return json_is_array(a) ? (int)json_array_size(a) : 0;
    }
    return t->n_option_fields;
}

/* option i text (owned) or NULL (error set) */
static char *rec_option(const pu_eval_task *t, const ev_set *s, const ev_rec *r, int i) {
    json_t *v = NULL;
    if (t->options_field) {
        json_t *a = json_object_get(r->obj, t->options_field);
        v = json_array_get(a, (size_t)i);
    } else if (i < t->n_option_fields) {
        v = json_object_get(r->obj, t->option_fields[i]);
        if (!v) {
            pu_err_set(PU_ERR_FORMAT, "%s:%lld: task '%s': option field '%s' missing",
                       rec_file(s, r), (long long)r->line, t->name, t->option_fields[i]);
            return NULL;
        }
    }
    if (!v) {
        pu_err_set(PU_ERR_FORMAT, "%s:%lld: task '%s': option %d missing", rec_file(s, r),
                   (long long)r->line, t->name, i);
        return NULL;
    }
    return value_str(v);
}

/* fill gold / gold_text and derived fields of a record */
static pu_status rec_prepare(const pu_eval_task *t, const ev_set *s, ev_rec *r) {
    for (int d = 0; d < t->n_derive; d++) {
        const ev_derive *dv = &t->derive[d];
        json_t *src = json_object_get(r->obj, dv->from);
        if (!src)
            return pu_err_set(PU_ERR_FORMAT, "%s:%lld: task '%s': derive '%s': no field '%s'",
                              rec_file(s, r), (long long)r->line, t->name, dv->name, dv->from);
        char *cur = value_str(src);
        for (int k = 0; k < dv->n; k++) {
            pu_str o = {0};
            pu_status st = pu_eval_regex_replace(cur, dv->pat[k], dv->repl[k], &o);
            pu_free(cur);
            if (st) {
                pu_str_free(&o);
                return st;
            }
            cur = pu_str_steal(&o);
        }
        json_object_set_new(r->obj, dv->name, json_string(cur));
        pu_free(cur);
    }
    if (!t->answer_field)
        return PU_OK;
    json_t *av = json_object_get(r->obj, t->answer_field);
    if (!av)
        return pu_err_set(PU_ERR_FORMAT, "%s:%lld: task '%s': answer field '%s' missing",
                          rec_file(s, r), (long long)r->line, t->name, t->answer_field);
    char *a = value_str(av);
    char *p = a;
    while (isspace((unsigned char)*p))
        p++;
    size_t pl = strlen(p);
    while (pl && isspace((unsigned char)p[pl - 1]))
        p[--pl] = 0;
    int nopt = rec_n_options(t, r);
    pu_status st = PU_OK;
    if (t->answer_type == EV_ANS_INDEX || t->answer_type == EV_ANS_INDEX1) {
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (!*p || *end)
            st = pu_err_set(
                PU_ERR_FORMAT,
                "%s:%lld: task '%s': answer '%s': expected an option index, found \"%s\"",
                rec_file(s, r), (long long)r->line, t->name, t->answer_field, p);
        else {
            r->gold = (int)(t->answer_type == EV_ANS_INDEX1 ? v - 1 : v);
            if (r->gold < 0 || r->gold >= nopt)
                st = pu_err_set(PU_ERR_FORMAT,
                                "%s:%lld: task '%s': answer %ld outside the %d options",
                                rec_file(s, r), (long long)r->line, t->name, v, nopt);
        }
    } else if (t->answer_type == EV_ANS_LETTER) {
        if (strlen(p) != 1 || p[0] < 'A' || p[0] >= 'A' + nopt)
            st =
                pu_err_set(PU_ERR_FORMAT,
                           "%s:%lld: task '%s': answer '%s': expected a letter A..%c, found \"%s\"",
                           rec_file(s, r), (long long)r->line, t->name, t->answer_field,
                           'A' + (nopt > 0 ? nopt - 1 : 0), p);
        else
            r->gold = p[0] - 'A';
    } else {
        if (t->answer_regex) {
            pu_str m = {0};
            bool found = false;
            st = pu_eval_extract_regex(p, t->answer_regex, 1, &m, &found);
            if (!st && !found)
                st = pu_err_set(PU_ERR_FORMAT,
                                "%s:%lld: task '%s': answer does not match answer_regex '%s'",
                                rec_file(s, r), (long long)r->line, t->name, t->answer_regex);
            if (!st)
                r->gold_text = pu_str_steal(&m);
            pu_str_free(&m);
        } else {
            r->gold_text = pu_strdup(p);
        }
    }
    if (!st && r->gold >= 0) {
        char l[2] = {(char)('A' + r->gold), 0};
        r->gold_text = pu_strdup(l);
    }
    pu_free(a);
    return st;
}

static void set_free(ev_set *s) {
    for (int64_t i = 0; i < s->n; i++) {
        json_decref(s->recs[i].obj);
        pu_free(s->recs[i].gold_text);
    }
    pu_free(s->recs);
    ev_free_list(s->files, s->n_groups);
    ev_free_list(s->subjects, s->n_groups);
    ev_free_list(s->names, s->n_groups);
    memset(s, 0, sizeof *s);
}

static pu_status set_load(const pu_eval_task *t, const char *path, const char *glob_pat,
                          ev_set *s) {
    char **files = NULL;
    int nf = 0;
    PU_TRY(ev_list_files(path, glob_pat, &files, &nf));
    s->is_dir = pu_dir_exists(path);
    s->files = files;
    s->n_groups = nf;
    s->subjects = pu_calloc((size_t)nf, sizeof *s->subjects);
    s->names = pu_calloc((size_t)nf, sizeof *s->names);
    for (int g = 0; g < nf; g++) {
        const char *b = base_name(files[g]);
        char *subj = pu_strdup(b);
        char *dot = strrchr(subj, '.');
        if (dot)
            *dot = 0;
        size_t sl = strlen(subj), xl = t->subject_suffix ? strlen(t->subject_suffix) : 0;
        if (xl && sl > xl && !strcmp(subj + sl - xl, t->subject_suffix))
            subj[sl - xl] = 0;
        s->subjects[g] = subj;
        s->names[g] = NULL;
        for (int k = 0; k < t->n_subjects; k++)
            if (!strcmp(t->subject_keys[k], subj))
                s->names[g] = pu_strdup(t->subject_vals[k]);
        char *buf = NULL;
        size_t len = 0;
        PU_TRY(pu_file_read_all(files[g], &buf, &len));
        const char *fmt = fmt_of(t, files[g]);
        pu_status st = !strcmp(fmt, "csv")     ? read_csv(files[g], buf, len, s, g)
                       : !strcmp(fmt, "jsonl") ? read_jsonl(files[g], buf, len, s, g)
                                               : read_json(files[g], buf, len, s, g);
        pu_free(buf);
        PU_TRY(st);
    }
    for (int64_t i = 0; i < s->n; i++)
        PU_TRY(rec_prepare(t, s, &s->recs[i]));
    return PU_OK;
}

pu_status pu_eval_data_load(const pu_eval_task *t, const char *data_dir, pu_eval_data **out) {
    *out = NULL;
    if (t->mode == PU_EVAL_NEEDLE)
        return pu_err_set(PU_ERR_INVALID, "task '%s' is a needle task (no dataset records)",
                          t->name);
    pu_eval_data *d = pu_calloc(1, sizeof *d);
    d->t = t;
    char *p = ev_resolve_path(t, data_dir, t->path);
    pu_status st = set_load(t, p, t->glob, &d->main);
    pu_free(p);
    if (!st && t->fewshot_path) {
        p = ev_resolve_path(t, data_dir, t->fewshot_path);
        st = set_load(t, p, t->fewshot_glob, &d->shots);
        pu_free(p);
    }
    if (!st && d->main.n == 0)
        st = pu_err_set(PU_ERR_FORMAT, "task '%s': dataset %s has no records", t->name, t->path);
    if (st) {
        pu_eval_data_destroy(d);
        return pu_err_prefix(st, "task '%s': ", t->name);
    }
    *out = d;
    return PU_OK;
}

void pu_eval_data_destroy(pu_eval_data *d) {
    if (!d)
        return;
    set_free(&d->main);
    set_free(&d->shots);
    pu_free(d);
}

int64_t pu_eval_data_count(const pu_eval_data *d) {
    return d->main.n;
}

/* -------------------------------------------------------------- templates */

typedef struct ev_render_ctx {
    const pu_eval_task *t;
    const ev_set *s;
    const ev_rec *r;
    int opt; /* option being scored, -1 = none */
    const char *tname;
} ev_render_ctx;

static void subject_pretty(const char *s, pu_str *out) {
    for (const char *p = s; *p; p++)
        pu_str_putc(out, *p == '_' ? ' ' : *p);
}

static pu_status lookup(const ev_render_ctx *c, const char *key, size_t kl, pu_str *out) {
    char k[128];
    if (kl >= sizeof k)
        kl = sizeof k - 1;
    memcpy(k, key, kl);
    k[kl] = 0;
    json_t *v = json_object_get(c->r->obj, k);
    if (v) {
        char *x = value_str(v);
        pu_str_puts(out, x);
        pu_free(x);
        return PU_OK;
    }
    const pu_eval_task *t = c->t;
    int nopt = rec_n_options(t, c->r);
    if (!strcmp(k, "subject")) {
        if (c->s->names[c->r->group])
            pu_str_puts(out, c->s->names[c->r->group]);
        else
            subject_pretty(c->s->subjects[c->r->group], out);
        return PU_OK;
    }
    int oi = -2;
    if (kl == 1 && k[0] >= 'A' && k[0] <= 'Z')
        oi = k[0] - 'A';
    else if (!strcmp(k, "option") && c->opt >= 0)
        oi = c->opt;
    else if (!strcmp(k, "gold_option") && c->r->gold >= 0)
        oi = c->r->gold;
    if (oi >= 0 && oi < nopt) {
        char *x = rec_option(t, c->s, c->r, oi);
        if (!x)
            return PU_ERR_FORMAT;
        pu_str_puts(out, x);
        pu_free(x);
        return PU_OK;
    }
    if (!strcmp(k, "letter") && c->opt >= 0) {
        pu_str_putc(out, (char)('A' + c->opt));
        return PU_OK;
    }
    if ((!strcmp(k, "gold_letter") && c->r->gold >= 0) || (!strcmp(k, "gold") && c->r->gold_text)) {
        pu_str_puts(out, c->r->gold_text);
        return PU_OK;
    }
    pu_str fields = {0};
    const char *fk;
    json_t *fv;
    json_object_foreach(c->r->obj, fk, fv)
        pu_str_appendf(&fields, "%s%s", fields.len ? ", " : "", fk);
    pu_status st =
        pu_err_set(PU_ERR_FORMAT,
                   "task '%s': template.%s: placeholder {%s} is not a field of %s:%lld "
                   "(fields: %s) nor one of subject, A..%c, letter, option, gold_letter, "
                   "gold_option, gold",
                   t->name, c->tname, k, rec_file(c->s, c->r), (long long)c->r->line,
                   fields.p ? fields.p : "none", 'A' + (nopt > 0 ? nopt - 1 : 0));
    pu_str_free(&fields);
    return st;
}

static pu_status render(const ev_render_ctx *c, const char *tmpl, pu_str *out) {
    if (!tmpl)
        return PU_OK;
    for (const char *p = tmpl; *p; p++) {
        if (p[0] == '{' && p[1] == '{') {
            pu_str_putc(out, '{');
            p++;
        } else if (p[0] == '}' && p[1] == '}') {
            pu_str_putc(out, '}');
            p++;
        } else if (p[0] == '{') {
            const char *e = strchr(p, '}');
            if (!e)
                return pu_err_set(PU_ERR_FORMAT, "task '%s': template.%s: unclosed '{'", c->t->name,
                                  c->tname);
            PU_TRY(lookup(c, p + 1, (size_t)(e - p - 1), out));
            p = e;
        } else {
            pu_str_putc(out, *p);
        }
    }
    return PU_OK;
}

static pu_status ids_of(const pu_eval_task *t, const ev_set *s, const ev_rec *r, const json_t *a,
                        const char *what, int32_t **ids, int64_t *n) {
    if (!json_is_array(a))
        return pu_err_set(PU_ERR_FORMAT, "%s:%lld: task '%s': %s: expected an array of token ids",
                          rec_file(s, r), (long long)r->line, t->name, what);
    size_t m = json_array_size(a);
    *ids = pu_calloc(m ? m : 1, sizeof **ids);
    *n = (int64_t)m;
    for (size_t i = 0; i < m; i++) {
        json_t *e = json_array_get(a, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX)
            return pu_err_set(PU_ERR_FORMAT, "%s:%lld: task '%s': %s[%zu]: expected a token id",
                              rec_file(s, r), (long long)r->line, t->name, what, i);
        (*ids)[i] = (int32_t)json_integer_value(e);
    }
    return PU_OK;
}

pu_status pu_eval_sample_build(const pu_eval_task *t, const pu_eval_data *d, int64_t i, int shots,
                               pu_eval_sample *out) {
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= d->main.n)
        return pu_err_set(PU_ERR_RANGE, "task '%s': sample %lld out of range", t->name,
                          (long long)i);
    const ev_set *s = &d->main;
    const ev_rec *r = &s->recs[i];
    if (shots < 0)
        shots = t->shots;
    /* id */
    if (t->id_field && json_object_get(r->obj, t->id_field)) {
        char *v = value_str(json_object_get(r->obj, t->id_field));
        if (s->is_dir) {
            pu_str x = {0};
            pu_str_appendf(&x, "%s/%s", s->subjects[r->group], v);
            out->id = pu_str_steal(&x);
            pu_free(v);
        } else {
            out->id = v;
        }
    } else {
        pu_str x = {0};
        if (s->is_dir)
            pu_str_appendf(&x, "%s/%lld", s->subjects[r->group], (long long)r->row);
        else
            pu_str_appendf(&x, "%lld", (long long)r->row);
        out->id = pu_str_steal(&x);
    }
    out->gold = r->gold;
    out->gold_text = r->gold_text ? pu_strdup(r->gold_text) : NULL;
    if (t->metric == PU_EVAL_METRIC_PASS_AT_1) {
        json_t *pr = json_object_get(r->obj, "prompt"), *ts = json_object_get(r->obj, "test"),
               *ep = json_object_get(r->obj, "entry_point");
        if (!json_is_string(pr) || !json_is_string(ts) || !json_is_string(ep)) {
            pu_eval_sample_free(out);
            return pu_err_set(PU_ERR_FORMAT,
                              "%s:%lld: task '%s': pass@1 needs string fields prompt, test and "
                              "entry_point",
                              rec_file(s, r), (long long)r->line, t->name);
        }
        pu_str x = {0};
        pu_str_appendf(&x, "%s\n\ncheck(%s)\n", json_string_value(ts), json_string_value(ep));
        out->code_test = pu_str_steal(&x);
        out->code_prompt = pu_strdup(json_string_value(pr));
    }
    int nopt = rec_n_options(t, r);
    pu_status st = PU_OK;
    if (t->ids_input) {
        out->n_options = nopt;
        st = ids_of(t, s, r, json_object_get(r->obj, t->context_ids_field), t->context_ids_field,
                    &out->context_ids, &out->n_context_ids);
        out->option_ids = pu_calloc((size_t)(nopt ? nopt : 1), sizeof *out->option_ids);
        out->option_lens = pu_calloc((size_t)(nopt ? nopt : 1), sizeof *out->option_lens);
        json_t *oa = json_object_get(r->obj, t->option_ids_field);
        for (int k = 0; !st && k < nopt; k++)
            st = ids_of(t, s, r, json_array_get(oa, (size_t)k), t->option_ids_field,
                        &out->option_ids[k], &out->option_lens[k]);
        if (st)
            pu_eval_sample_free(out);
        return st;
    }
    pu_str ctx = {0};
    ev_render_ctx rc = {t, s, r, -1, "preamble"};
    st = render(&rc, t->t_preamble, &ctx);
    /* few-shot examples */
    const ev_set *fs = d->shots.n ? &d->shots : s;
    int got = 0;
    for (int64_t k = 0; !st && k < fs->n && got < shots; k++) {
        const ev_rec *e = &fs->recs[k];
        if (fs == s && (e == r || e->group != r->group))
            continue;
        if (fs != s && fs->n_groups > 1 && strcmp(fs->subjects[e->group], s->subjects[r->group]))
            continue;
        ev_render_ctx ec = {t, fs, e, -1, "question"};
        st = render(&ec, t->t_question, &ctx);
        ec.tname = "answer";
        if (!st)
            st = render(&ec, t->t_answer, &ctx);
        ec.tname = "separator";
        if (!st)
            st = render(&ec, t->t_separator, &ctx);
        got++;
    }
    rc.tname = "question";
    if (!st)
        st = render(&rc, t->t_question, &ctx);
    if (!ctx.p)
        pu_str_puts(&ctx, "");
    out->context = pu_str_steal(&ctx);
    out->n_options = nopt; /* gen: bounds choice extraction (no option texts) */
    if (!st && t->mode == PU_EVAL_PPL) {
        out->n_options = nopt;
        out->options = pu_calloc((size_t)(nopt ? nopt : 1), sizeof *out->options);
        for (int k = 0; !st && k < nopt; k++) {
            pu_str o = {0};
            ev_render_ctx oc = {t, s, r, k, "option"};
            st = render(&oc, t->t_option, &o);
            if (!o.p)
                pu_str_puts(&o, "");
            out->options[k] = pu_str_steal(&o);
        }
    }
    if (st)
        pu_eval_sample_free(out);
    return st;
}

void pu_eval_sample_free(pu_eval_sample *s) {
    pu_free(s->code_prompt);
    pu_free(s->code_test);
    pu_free(s->id);
    pu_free(s->context);
    if (s->options)
        for (int i = 0; i < s->n_options; i++)
            pu_free(s->options[i]);
    pu_free(s->options);
    pu_free(s->gold_text);
    pu_free(s->context_ids);
    if (s->option_ids)
        for (int i = 0; i < s->n_options; i++)
            pu_free(s->option_ids[i]);
    pu_free(s->option_ids);
    pu_free(s->option_lens);
    memset(s, 0, sizeof *s);
}

/* --------------------------------------------------------------- haystack */

static void collect_strings(const json_t *v, pu_str *out) {
    if (json_is_string(v)) {
        pu_str_puts(out, json_string_value(v));
        pu_str_putc(out, '\n');
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) collect_strings(e, out);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e) collect_strings(e, out);
    }
}

pu_status ev_read_haystack(const pu_eval_task *t, const char *data_dir, pu_str *out) {
    char *p = ev_resolve_path(t, data_dir, t->hay_path);
    char **files = NULL;
    int nf = 0;
    pu_status st = ev_list_files(p, t->hay_glob, &files, &nf);
    pu_free(p);
    for (int i = 0; !st && i < nf; i++) {
        char *buf = NULL;
        size_t len = 0;
        st = pu_file_read_all(files[i], &buf, &len);
        if (st)
            break;
        size_t fl = strlen(files[i]);
        if (fl > 5 && !strcmp(files[i] + fl - 5, ".json")) {
            json_t *root = NULL;
            st = pu_json_loadb(buf, len, files[i], &root);
            if (!st)
                collect_strings(root, out);
            json_decref(root);
        } else {
            pu_str_append(out, buf, len);
            pu_str_putc(out, '\n');
        }
        pu_free(buf);
    }
    ev_free_list(files, nf);
    if (!st && out->len == 0)
        st = pu_err_set(PU_ERR_FORMAT, "task '%s': haystack %s is empty", t->name, t->hay_path);
    return st;
}
