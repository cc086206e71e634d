/*
 * serve_impl.h — private interfaces of the serve module: the per-request
 * event queue that the engine callback fills and an HTTP thread drains
 * (shared by the server and `puyu chat`).
 */
#ifndef PU_SERVE_IMPL_H
#define PU_SERVE_IMPL_H

#include <pthread.h>

#include "puyu/pu_engine.h"
#include "puyu/pu_serve.h"

/* A one-shot wake-up shared by the queues of one HTTP request (n choices):
 * the consumer arms it when it suspends its connection, the first event on
 * any of the queues fires fn(arg) once and disarms it. Reference counted
 * (the consumer and every queue that points to it). */
typedef struct pu_waker {
    pthread_mutex_t mu;
    int refs;
    bool armed;
    void (*fn)(void *arg);
    void *arg;
} pu_waker;

pu_waker *pu_waker_new(void (*fn)(void *arg), void *arg);
pu_waker *pu_waker_ref(pu_waker *w);
void pu_waker_unref(pu_waker *w);
/* Fire once if armed. */
void pu_waker_fire(pu_waker *w);
/* Forget fn (the consumer is going away): later fires do nothing. */
void pu_waker_detach(pu_waker *w);

/* One submitted request as seen by its consumer. Reference counted: one
 * reference for the consumer, one for the engine (dropped by the callback on
 * the final event), so either side may finish first. */
typedef struct pu_sq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int64_t id;    /* engine request id (0 until submitted) */
    pu_str text;   /* every byte of text received so far */
    int32_t *toks; /* generated ids ... */
    float *lps;    /* ... and their logprobs */
    int64_t n_toks, cap_toks;
    int n_top;        /* alternatives per token requested (0..20) */
    int32_t *top_ids; /* (cap_toks, n_top) most likely ids per token, best first */
    float *top_lps;   /* (cap_toks, n_top) their logprobs; ids of missing ones are -1 */
    bool done;
    pu_finish_reason fin;
    char *err;
    int64_t n_prompt, n_cached, n_generated;
    pu_waker *waker; /* NULL, or fired (outside mu) after every event */
    double t_first;  /* pu_time_now() of the first token (0 before) */
} pu_sq;

pu_sq *pu_sq_new(void);
/* Add a reference. */
pu_sq *pu_sq_ref(pu_sq *q);
/* Drop one reference (frees at zero). */
void pu_sq_unref(pu_sq *q);
/* The engine callback (ud = the pu_sq); takes the engine's reference. */
void pu_sq_on_event(const pu_engine_event *ev, void *ud);
/* Submit with q as the callback target (adds the engine's reference). */
pu_status pu_sq_submit(pu_engine *e, pu_engine_request *r, pu_sq *q);
/* Wait until q has more than `have_text` bytes or `have_toks` ids, or is
 * done, or `timeout_s` passes. Returns true when something changed. */
bool pu_sq_wait(pu_sq *q, size_t have_text, int64_t have_toks, double timeout_s);

#endif /* PU_SERVE_IMPL_H */
