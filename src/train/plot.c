/*
 * plot.c — metrics JSONL -> SVG (pu_plot_metrics), drawn by hand: a frame,
 * "nice" ticks (1/2/5 x 10^k) with grid lines and labels, the training loss
 * as a polyline (plus a moving average when there are many points), the
 * validation loss as a polyline with markers, a legend and axis titles.
 */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "train/train_impl.h"

typedef struct {
    double *x, *y;
    int64_t n, cap;
} series;

static void push(series *s, double x, double y) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = pu_realloc(s->x, (size_t)s->cap * sizeof(double));
        s->y = pu_realloc(s->y, (size_t)s->cap * sizeof(double));
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
}

static double nice_step(double range, int target) {
    double raw = range / target, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void xml_text(pu_str *o, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            pu_str_puts(o, "&lt;");
        else if (*s == '>')
            pu_str_puts(o, "&gt;");
        else if (*s == '&')
            pu_str_puts(o, "&amp;");
        else
            pu_str_putc(o, *s);
    }
}

pu_status pu_plot_metrics(const char *metrics_path, const char *svg_path, const char *title) {
    return pu_plot_metrics_keys(metrics_path, svg_path, title, NULL, NULL);
}

pu_status pu_plot_metrics_keys(const char *metrics_path, const char *svg_path, const char *title,
                               const char *key1, const char *key2) {
    bool dflt = !key1;
    if (dflt)
        key1 = "loss", key2 = "val_loss";
    char *data = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(metrics_path, &data, &len));
    series tr = {0}, va = {0};
    int64_t line = 0;
    for (char *p = data; *p;) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        json_t *j = n ? json_loadb(p, n, 0, NULL) : NULL;
        if (j) {
            json_t *st = json_object_get(j, "step"), *l = json_object_get(j, key1),
                   *v = key2 ? json_object_get(j, key2) : NULL;
            if (json_is_number(st) && json_is_number(l) && isfinite(json_number_value(l)))
                push(&tr, json_number_value(st), json_number_value(l));
            if (json_is_number(st) && json_is_number(v) && isfinite(json_number_value(v)))
                push(&va, json_number_value(st), json_number_value(v));
            json_decref(j);
        }
        p = nl ? nl + 1 : p + n;
    }
    pu_free(data);
    if (tr.n + va.n == 0) {
        pu_free(tr.x), pu_free(tr.y), pu_free(va.x), pu_free(va.y);
        return pu_err_set(PU_ERR_FORMAT,
                          "%s: no lines with \"step\" and \"%s\"%s%s%s (%lld lines read)",
                          metrics_path, key1, key2 ? " or \"" : "", key2 ? key2 : "",
                          key2 ? "\"" : "", (long long)line);
    }
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    series *all[2] = {&tr, &va};
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < all[k]->n; i++) {
            x0 = fmin(x0, all[k]->x[i]), x1 = fmax(x1, all[k]->x[i]);
            y0 = fmin(y0, all[k]->y[i]), y1 = fmax(y1, all[k]->y[i]);
        }
    x0 = fmin(x0, 0);
    if (x1 <= x0)
        x1 = x0 + 1;
    if (y1 <= y0)
        y1 = y0 + 1, y0 -= 1;
    double ys = nice_step(y1 - y0, 6), xs = nice_step(x1 - x0, 8);
    y0 = floor(y0 / ys) * ys, y1 = ceil(y1 / ys) * ys;
    x1 = ceil(x1 / xs) * xs;
    const double W = 860, H = 500, L = 70, R = 20, T = 40, Bm = 55;
    double pw = W - L - R, ph = H - T - Bm;
#define PX(x) (L + ((x)-x0) / (x1 - x0) * pw)
#define PY(y) (T + (1 - ((y)-y0) / (y1 - y0)) * ph)
    pu_str o = {0};
    pu_str_appendf(&o,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                   "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
                   W, H, W, H);
    pu_str_appendf(&o, "<rect width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", W, H);
    pu_str_appendf(&o, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">",
                   L + pw / 2);
    xml_text(&o, title);
    pu_str_puts(&o, "</text>\n");
    for (double y = y0; y <= y1 + ys * 1e-6; y += ys) {
        pu_str_appendf(&o,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                       "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                       L, PY(y), L + pw, PY(y), L - 6, PY(y) + 4, fabs(y) < ys * 1e-6 ? 0 : y);
    }
    for (double x = x0; x <= x1 + xs * 1e-6; x += xs) {
        pu_str_appendf(&o,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                       "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                       PX(x), T, PX(x), T + ph, PX(x), T + ph + 18, x);
    }
    pu_str_appendf(&o,
                   "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                   "stroke=\"#333\"/>\n",
                   L, T, pw, ph);
    pu_str_appendf(&o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n",
                   L + pw / 2, H - 12);
    pu_str_appendf(&o,
                   "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 "
                   "%.1f)\">",
                   T + ph / 2, T + ph / 2);
    if (dflt) {
        pu_str_puts(&o, "loss (nats)");
    } else {
        xml_text(&o, key1);
        if (key2) {
            pu_str_puts(&o, " / ");
            xml_text(&o, key2);
        }
    }
    pu_str_puts(&o, "</text>\n");
    const char *col[2] = {"#1f77b4", "#ff7f0e"};
    for (int k = 0; k < 2; k++) {
        series *s = all[k];
        if (!s->n)
            continue;
        bool smooth = k == 0 && s->n > 50;
        pu_str_appendf(&o, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" %s points=\"",
                       col[k], smooth ? "1" : "1.8", smooth ? "stroke-opacity=\"0.35\"" : "");
        for (int64_t i = 0; i < s->n; i++)
            pu_str_appendf(&o, "%.1f,%.1f ", PX(s->x[i]), PY(s->y[i]));
        pu_str_puts(&o, "\"/>\n");
        if (smooth) { /* centred moving average over ~2% of the points */
            int64_t w = s->n / 50 > 1 ? s->n / 50 : 1;
            pu_str_appendf(&o, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                           col[k]);
            for (int64_t i = 0; i < s->n; i++) {
                int64_t a = i - w > 0 ? i - w : 0, b = i + w < s->n - 1 ? i + w : s->n - 1;
                double m = 0;
                for (int64_t j = a; j <= b; j++)
                    m += s->y[j];
                m /= (double)(b - a + 1);
                pu_str_appendf(&o, "%.1f,%.1f ", PX(s->x[i]), PY(m));
            }
            pu_str_puts(&o, "\"/>\n");
        }
        if (k == 1 && (dflt || s->n <= 60))
            for (int64_t i = 0; i < s->n; i++)
                pu_str_appendf(&o, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                               PX(s->x[i]), PY(s->y[i]), col[k]);
    }
    double lx = L + pw - 170, ly = T + 14;
    for (int k = 0; k < 2; k++) {
        if (!all[k]->n)
            continue;
        pu_str_appendf(&o,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                       "stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\">",
                       lx, ly, lx + 24, ly, col[k], lx + 30, ly + 4);
        xml_text(&o, dflt ? (k == 0 ? "train loss" : "val loss") : (k == 0 ? key1 : key2));
        pu_str_appendf(&o, " (last %.4f)</text>\n", all[k]->y[all[k]->n - 1]);
        ly += 18;
    }
    pu_str_puts(&o, "</svg>\n");
#undef PX
#undef PY
    pu_status s = pu_file_write_atomic(svg_path, o.p, o.len);
    pu_str_free(&o);
    pu_free(tr.x), pu_free(tr.y), pu_free(va.x), pu_free(va.y);
    return s;
}
