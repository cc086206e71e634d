/*
 * queue.c — the per-request event queue between the engine thread and a
 * consumer thread (an HTTP connection, the terminal chat).
 *
 * The engine callback only appends bytes / ids under the queue's mutex and
 * signals; it never blocks on I/O, so a slow client cannot slow the batch.
 * The consumer reads everything past what it already has (monotonic
 * offsets, nothing is ever removed), so there is no ring to overflow.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "serve_impl.h"

pu_waker *pu_waker_new(void (*fn)(void *arg), void *arg) {
    pu_waker *w = pu_calloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->refs = 1;
    w->fn = fn;
    w->arg = arg;
    return w;
}

pu_waker *pu_waker_ref(pu_waker *w) {
    pthread_mutex_lock(&w->mu);
    w->refs++;
    pthread_mutex_unlock(&w->mu);
    return w;
}

void pu_waker_unref(pu_waker *w) {
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    int left = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&w->mu);
    pu_free(w);
}

void pu_waker_fire(pu_waker *w) {
    pthread_mutex_lock(&w->mu);
    if (w->armed && w->fn) {
        w->armed = false;
        w->fn(w->arg);
    }
    pthread_mutex_unlock(&w->mu);
}

void pu_waker_detach(pu_waker *w) {
    pthread_mutex_lock(&w->mu);
    w->armed = false;
    w->fn = NULL;
    pthread_mutex_unlock(&w->mu);
}

pu_sq *pu_sq_new(void) {
    pu_sq *q = pu_calloc(1, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    q->refs = 1;
    return q;
}

pu_sq *pu_sq_ref(pu_sq *q) {
    pthread_mutex_lock(&q->mu);
    q->refs++;
    pthread_mutex_unlock(&q->mu);
    return q;
}

void pu_sq_unref(pu_sq *q) {
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    int left = --q->refs;
    pthread_mutex_unlock(&q->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    pu_str_free(&q->text);
    pu_free(q->toks);
    pu_free(q->lps);
    pu_free(q->top_ids);
    pu_free(q->top_lps);
    pu_free(q->err);
    pu_waker_unref(q->waker);
    pu_free(q);
}

void pu_sq_on_event(const pu_engine_event *ev, void *ud) {
    pu_sq *q = ud;
    pthread_mutex_lock(&q->mu);
    if (ev->text_len)
        pu_str_append(&q->text, ev->text, ev->text_len);
    if (ev->token >= 0) {
        if (q->n_toks == 0)
            q->t_first = pu_time_now();
        if (q->n_toks == q->cap_toks) {
            q->cap_toks = q->cap_toks ? q->cap_toks * 2 : 64;
            q->toks = pu_realloc(q->toks, (size_t)q->cap_toks * sizeof(int32_t));
            q->lps = pu_realloc(q->lps, (size_t)q->cap_toks * sizeof(float));
            if (q->n_top > 0) {
                size_t nt = (size_t)q->cap_toks * (size_t)q->n_top;
                q->top_ids = pu_realloc(q->top_ids, nt * sizeof(int32_t));
                q->top_lps = pu_realloc(q->top_lps, nt * sizeof(float));
            }
        }
        q->toks[q->n_toks] = ev->token;
        q->lps[q->n_toks] = ev->logprob;
        for (int j = 0; j < q->n_top; j++) {
            size_t at = (size_t)q->n_toks * (size_t)q->n_top + (size_t)j;
            q->top_ids[at] = j < ev->n_top ? ev->top_ids[j] : -1;
            q->top_lps[at] = j < ev->n_top ? ev->top_logprobs[j] : 0.0f;
        }
        q->n_toks++;
    }
    q->n_prompt = ev->n_prompt;
    q->n_cached = ev->n_cached;
    q->n_generated = ev->n_generated;
    bool fin = ev->finish != PU_FINISH_NONE;
    if (fin) {
        q->done = true;
        q->fin = ev->finish;
        if (ev->error)
            q->err = pu_strdup(ev->error);
    }
    pthread_cond_broadcast(&q->cv);
    pu_waker *w = q->waker; /* alive: this callback still holds the engine's reference */
    pthread_mutex_unlock(&q->mu);
    if (w)
        pu_waker_fire(w);
    if (fin)
        pu_sq_unref(q); /* the engine's reference */
}

pu_status pu_sq_submit(pu_engine *e, pu_engine_request *r, pu_sq *q) {
    r->cb = pu_sq_on_event;
    r->ud = q;
    pthread_mutex_lock(&q->mu);
    q->refs++;
    pthread_mutex_unlock(&q->mu);
    int64_t id = 0;
    pu_status st = pu_engine_submit(e, r, &id);
    if (st != PU_OK) {
        pthread_mutex_lock(&q->mu);
        q->refs--; /* no callback will run */
        pthread_mutex_unlock(&q->mu);
        return st;
    }
    pthread_mutex_lock(&q->mu);
    q->id = id;
    pthread_mutex_unlock(&q->mu);
    return PU_OK;
}

bool pu_sq_wait(pu_sq *q, size_t have_text, int64_t have_toks, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = (long)((timeout_s - (double)(long)timeout_s) * 1e9);
    ts.tv_sec += (time_t)timeout_s;
    ts.tv_nsec += ns;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&q->mu);
    bool changed;
    for (;;) {
        changed = q->done || q->text.len > have_text || q->n_toks > have_toks;
        if (changed)
            break;
        if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT) {
            changed = q->done || q->text.len > have_text || q->n_toks > have_toks;
            break;
        }
    }
    pthread_mutex_unlock(&q->mu);
    return changed;
}
