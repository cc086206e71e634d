/*
 * engine.c — continuous batching over a paged KV cache.
 *
 * DESIGN. One engine thread owns the model state: the block pool, the
 * running set and the compute pool. Other threads only touch the submission
 * queue and the cancel set under `mu` and wake the engine through `cv`.
 *
 * Each step the scheduler (1) admits waiting requests while fewer than
 * max_batch run (FCFS), matching their prompt's full blocks against the
 * prefix cache; (2) builds one batch: one token for every decoding sequence,
 * then prompt chunks for prefilling sequences up to prefill_chunk tokens, so a
 * long prompt never stalls running decodes (chunked prefill); (3) makes sure
 * every sequence's block table covers its new tokens, preempting the most
 * recently admitted sequence (blocks freed, recomputed later) when the pool
 * runs dry; (4) runs pu_model_forward_batch; (5) samples, streams and checks
 * stops for sequences whose pending tokens are all computed.
 *
 * Blocks hold block_size tokens of K/V for every layer and are reference
 * counted. A full block of a prompt is registered in the prefix cache under a
 * hash chained over all tokens from the start of the sequence (its own tokens
 * are compared on a hit); when its last user leaves it stays cached (LRU)
 * until its memory is needed. With dynamic NTK only blocks computed at
 * lengths <= max_position_embeddings are shared (beyond that K/V depend on
 * the length of the call that computed them).
 *
 * Stop strings: generated text is held back while its tail could still be
 * the start of a stop string, so a stop string never reaches the client.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_engine.h"
#include "puyu/pu_json_constraint.h"
#include "puyu/pu_kernels.h"
#include "puyu/pu_lora.h"

typedef enum { RS_WAITING, RS_RUNNING } req_state;

#define PU_MAX_DRAFT 8

typedef struct req {
    int64_t id;
    req_state state;
    int32_t *tokens; /* prompt + generated */
    int64_t n_tokens, cap_tokens, n_prompt;
    int64_t n_computed; /* tokens whose K/V are in the cache */
    int32_t *blocks;
    int64_t n_blocks, cap_blocks;
    int64_t n_cached; /* prompt tokens served by the prefix cache */
    int64_t n_generated, max_tokens;
    uint64_t admit_seq; /* admission order (preemption picks the newest) */
    pu_sampler smp;
    int32_t *stop_ids;
    int n_stop_ids;
    char **stop_strs;
    int n_stop_strs;
    size_t max_stop_len;
    pu_tok_stream ts;
    pu_str text;    /* generated text so far */
    size_t emitted; /* bytes of text already delivered */
    pu_engine_cb cb;
    void *ud;
    bool cancelled;
    bool logprobs;
    int n_top;
    int32_t top_ids[20];
    float top_lps[20];
    int n_top_now; /* alternatives of the token being emitted */
    const pu_lora **lora; /* (n_lora) this request's adapters (borrowed), owned list */
    float *lora_scales;   /* (n_lora) owned */
    int n_lora;
    uint64_t lora_key; /* seeds the prefix-cache chain hash (0: the base) */
    int32_t *bias_ids; /* logit_bias: added to the raw logits before sampling */
    float *bias;
    int n_bias;
    pu_session *dsess;           /* speculative decoding: the draft's own KV */
    int32_t draft[PU_MAX_DRAFT]; /* tokens proposed for this step */
    int n_draft_step;            /* how many of them are in this step's batch */
    int k_spec;                  /* adaptive draft length (0: not started: draft_k) */
    pu_json_constraint *jc;      /* structured output (NULL = off); tables shared */
    pu_json_schema *schema;      /* owned copy for jc */
    char *jc_after;              /* lazy constraint: switched on after this text mark */
    bool jc_on;                  /* lazy constraint currently on */
    struct req *next;
} req;

#define PU_MAX_TOP_LOGPROBS 20

typedef struct {
    uint64_t hash; /* chain hash; 0 = not registered */
    int32_t refs;
    bool shareable;
    int32_t lru_prev, lru_next; /* free-but-cached LRU list */
    bool in_lru;
} block_meta;

struct pu_engine {
    const pu_model *m;
    const pu_tok *tok;
    const pu_config *c;
    const pu_kernels *k;
    pu_engine_params p;
    pu_pool *pool;
    pu_kv_pages kv;
    pu_batch_ws *ws;
    int64_t max_step_tokens;
    /* blocks */
    block_meta *bm;
    int32_t *free_stack;
    int64_t n_free;
    int32_t lru_head, lru_tail; /* oldest at head */
    int64_t n_lru;
    /* prefix cache: open addressing hash -> block */
    uint64_t *hkeys;
    int32_t *hvals;
    int64_t hcap;
    int32_t *block_tokens; /* (n_blocks, block_size) tokens of registered blocks */
    /* requests */
    req *running;   /* engine thread only */
    req *waiting;   /* engine thread only (FIFO) */
    req *submitted; /* guarded by mu (FIFO) */
    int64_t *cancel_ids;
    int64_t n_cancel, cap_cancel;
    pthread_mutex_t mu;
    pthread_mutex_t jc_mu;          /* guards jc_proto's lazy creation */
    pu_json_constraint *jc_proto;   /* token tables for structured output (built once) */
    pthread_cond_t cv;
    pthread_t thread;
    bool stop;
    int64_t next_id;
    uint64_t admit_counter;
    int32_t eos_ids[2];
    int n_eos;
    /* stats: st is engine-thread private, snap is published under mu */
    pu_engine_stats st, snap;
    req **order; /* (max_batch) running requests snapshot for one step */
    float *logits;  /* (max_batch, V) */
    float *lg_copy; /* (V) */
    pu_batch_seq *bseqs;
    req **breqs;
    int *bspec;      /* per batch entry: drafted tokens that follow it (leader), -1 follower */
    float *dlogits;  /* (V) draft logits */
    int64_t per_req; /* batch entries one request may take (1 + draft_k) */
};

pu_engine_params pu_engine_default_params(void) {
    pu_engine_params p = {0};
    p.max_batch = 16;
    p.block_size = 16;
    p.prefill_chunk = 256;
    p.prefix_sharing = true;
    return p;
}

const char *pu_finish_reason_str(pu_finish_reason r) {
    switch (r) {
    case PU_FINISH_NONE: return "none";
    case PU_FINISH_STOP: return "stop";
    case PU_FINISH_LENGTH: return "length";
    case PU_FINISH_CANCELLED: return "cancelled";
    case PU_FINISH_ERROR: return "error";
    }
    return "?";
}

/* ---------------------------------------------------------------- blocks */

static void lru_remove(pu_engine *e, int32_t b) {
    block_meta *m = &e->bm[b];
    if (!m->in_lru)
        return;
    if (m->lru_prev >= 0)
        e->bm[m->lru_prev].lru_next = m->lru_next;
    else
        e->lru_head = m->lru_next;
    if (m->lru_next >= 0)
        e->bm[m->lru_next].lru_prev = m->lru_prev;
    else
        e->lru_tail = m->lru_prev;
    m->in_lru = false;
    e->n_lru--;
}

static void lru_push(pu_engine *e, int32_t b) {
    block_meta *m = &e->bm[b];
    m->lru_prev = e->lru_tail;
    m->lru_next = -1;
    if (e->lru_tail >= 0)
        e->bm[e->lru_tail].lru_next = b;
    else
        e->lru_head = b;
    e->lru_tail = b;
    m->in_lru = true;
    e->n_lru++;
}

static int64_t hslot(const pu_engine *e, uint64_t h) {
    return (int64_t)(h & (uint64_t)(e->hcap - 1));
}

static int32_t hfind(const pu_engine *e, uint64_t h) {
    for (int64_t i = hslot(e, h);; i = (i + 1) & (e->hcap - 1)) {
        if (e->hkeys[i] == 0)
            return -1;
        if (e->hkeys[i] == h)
            return e->hvals[i];
    }
}

static void hinsert(pu_engine *e, uint64_t h, int32_t b) {
    int64_t i = hslot(e, h);
    while (e->hkeys[i] != 0 && e->hkeys[i] != h)
        i = (i + 1) & (e->hcap - 1);
    e->hkeys[i] = h;
    e->hvals[i] = b;
}

/* Delete with backward-shift so probe chains stay intact. */
static void hremove(pu_engine *e, uint64_t h) {
    int64_t i = hslot(e, h);
    while (e->hkeys[i] != h) {
        if (e->hkeys[i] == 0)
            return;
        i = (i + 1) & (e->hcap - 1);
    }
    for (;;) {
        e->hkeys[i] = 0;
        int64_t j = i;
        for (;;) {
            j = (j + 1) & (e->hcap - 1);
            if (e->hkeys[j] == 0)
                return;
            int64_t home = hslot(e, e->hkeys[j]);
            bool between = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!between)
                break;
        }
        e->hkeys[i] = e->hkeys[j];
        e->hvals[i] = e->hvals[j];
        i = j;
    }
}

static uint64_t chain_hash(uint64_t prev, const int32_t *toks, int64_t n) {
    uint64_t h = prev ^ 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)toks[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

/* A free block: plain free list first, then evict the least recently used
 * cached block. -1 when none. */
static int32_t block_alloc(pu_engine *e) {
    int32_t b = -1;
    if (e->n_free > 0) {
        b = e->free_stack[--e->n_free];
    } else if (e->lru_head >= 0) {
        b = e->lru_head;
        lru_remove(e, b);
        if (e->bm[b].hash) {
            hremove(e, e->bm[b].hash);
            e->bm[b].hash = 0;
        }
    }
    if (b >= 0) {
        e->bm[b].refs = 1;
        e->bm[b].hash = 0;
        e->bm[b].shareable = false;
    }
    return b;
}

static void block_release(pu_engine *e, int32_t b) {
    block_meta *m = &e->bm[b];
    if (--m->refs > 0)
        return;
    if (m->hash)
        lru_push(e, b);
    else
        e->free_stack[e->n_free++] = b;
}

/* ---------------------------------------------------------------- requests */

static void req_free(req *r) {
    if (!r)
        return;
    pu_free(r->tokens);
    pu_free(r->blocks);
    pu_sampler_deinit(&r->smp);
    pu_free(r->stop_ids);
    for (int i = 0; i < r->n_stop_strs; i++)
        pu_free(r->stop_strs[i]);
    pu_free(r->stop_strs);
    pu_free(r->bias_ids);
    pu_free(r->bias);
    pu_session_destroy(r->dsess);
    pu_json_constraint_destroy(r->jc);
    pu_json_schema_destroy(r->schema);
    pu_free(r->jc_after);
    pu_str_free(&r->text);
    pu_free(r->lora);
    pu_free(r->lora_scales);
    pu_free(r);
}

static void req_release_blocks(pu_engine *e, req *r) {
    for (int64_t i = 0; i < r->n_blocks; i++)
        block_release(e, r->blocks[i]);
    r->n_blocks = 0;
}

static void emit(pu_engine *e, req *r, int32_t tok, float lp, size_t upto,
                 pu_finish_reason fin, const char *err) {
    pu_engine_event ev = {0};
    ev.request_id = r->id;
    ev.token = tok;
    ev.logprob = lp;
    if (upto > r->emitted) {
        ev.text = r->text.p + r->emitted;
        ev.text_len = upto - r->emitted;
        r->emitted = upto;
    } else {
        ev.text = "";
    }
    if (tok >= 0 && r->n_top_now > 0) {
        ev.n_top = r->n_top_now;
        ev.top_ids = r->top_ids;
        ev.top_logprobs = r->top_lps;
    }
    ev.finish = fin;
    ev.n_prompt = r->n_prompt;
    ev.n_cached = r->n_cached;
    ev.n_generated = r->n_generated;
    ev.error = err;
    if (r->cb)
        r->cb(&ev, r->ud);
    (void)e;
}

static void list_remove(req **head, req *r) {
    for (req **pp = head; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            r->next = NULL;
            return;
        }
}

static void list_append(req **head, req *r) {
    r->next = NULL;
    req **pp = head;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
}

/* End a request: deliver the rest of its text (unless it was cut at a stop
 * string, then the text already ends at the cut), call back once, free. */
static void finish_ex(pu_engine *e, req *r, pu_finish_reason fin, const char *err,
                      bool by_stop_string) {
    if (e->tok && !by_stop_string)
        pu_tok_stream_flush(&r->ts, &r->text);
    emit(e, r, -1, 0.0f, r->text.len, fin, err);
    req_release_blocks(e, r);
    list_remove(&e->running, r);
    list_remove(&e->waiting, r);
    req_free(r);
}

static void finish(pu_engine *e, req *r, pu_finish_reason fin, const char *err) {
    finish_ex(e, r, fin, err, false);
}

/* ---------------------------------------------------------------- admission */

static void admit(pu_engine *e, req *r) {
    int64_t BS = e->p.block_size;
    r->state = RS_RUNNING;
    r->admit_seq = ++e->admit_counter;
    r->n_computed = 0;
    r->n_cached = 0;
    if (e->p.prefix_sharing && r->n_generated == 0) {
        uint64_t h = r->lora_key;
        int64_t max_blocks = (r->n_prompt - 1) / BS; /* keep >= 1 token to compute */
        for (int64_t b = 0; b < max_blocks; b++) {
            const int32_t *toks = r->tokens + b * BS;
            h = chain_hash(h, toks, BS);
            int32_t blk = hfind(e, h);
            if (blk < 0 || memcmp(e->block_tokens + (int64_t)blk * BS, toks,
                                  (size_t)BS * sizeof(int32_t)) != 0)
                break;
            if (e->bm[blk].refs == 0)
                lru_remove(e, blk);
            e->bm[blk].refs++;
            if (r->n_blocks == r->cap_blocks) {
                r->cap_blocks = r->cap_blocks ? r->cap_blocks * 2 : 16;
                r->blocks = pu_realloc(r->blocks, (size_t)r->cap_blocks * sizeof(int32_t));
            }
            r->blocks[r->n_blocks++] = blk;
            r->n_computed += BS;
        }
        r->n_cached = r->n_computed;
        e->st.tokens_prefix_hit += r->n_cached;
    }
    list_append(&e->running, r);
}

/* Register every full block of r computed at a shareable length. */
static void register_blocks(pu_engine *e, req *r, int64_t from_tok, int64_t call_len) {
    if (!e->p.prefix_sharing)
        return;
    int64_t BS = e->p.block_size;
    bool shareable = !(e->c->rope_scaling_type == PU_ROPE_SCALING_DYNAMIC &&
                       call_len > e->c->max_position_embeddings);
    if (!shareable)
        return;
    /* only prompt blocks (generated text rarely repeats and is per-sample) */
    int64_t full = (r->n_computed < r->n_prompt ? r->n_computed : r->n_prompt) / BS;
    uint64_t h = r->lora_key;
    for (int64_t b = 0; b < full; b++) {
        h = chain_hash(h, r->tokens + b * BS, BS);
        if ((b + 1) * BS <= from_tok)
            continue; /* registered (or shared) earlier */
        int32_t blk = r->blocks[b];
        if (e->bm[blk].hash || hfind(e, h) >= 0)
            continue;
        e->bm[blk].hash = h;
        e->bm[blk].shareable = true;
        memcpy(e->block_tokens + (int64_t)blk * BS, r->tokens + b * BS,
               (size_t)BS * sizeof(int32_t));
        hinsert(e, h, blk);
    }
}

static bool ensure_blocks(pu_engine *e, req *r, int64_t upto_tokens) {
    int64_t BS = e->p.block_size;
    int64_t need = (upto_tokens + BS - 1) / BS;
    while (r->n_blocks < need) {
        int32_t b = block_alloc(e);
        if (b < 0)
            return false;
        if (r->n_blocks == r->cap_blocks) {
            r->cap_blocks = r->cap_blocks ? r->cap_blocks * 2 : 16;
            r->blocks = pu_realloc(r->blocks, (size_t)r->cap_blocks * sizeof(int32_t));
        }
        r->blocks[r->n_blocks++] = b;
    }
    return true;
}

/* Preempt the most recently admitted running request newer than `keep`:
 * free its blocks and put it back at the head of the waiting queue; its
 * generated tokens are recomputed as part of its prompt on readmission.
 * Older requests are never evicted for newer ones, so the oldest always
 * makes progress. */
static bool preempt_one(pu_engine *e, req *keep) {
    req *victim = NULL;
    for (req *r = e->running; r; r = r->next)
        if (r != keep && r->admit_seq > keep->admit_seq &&
            (!victim || r->admit_seq > victim->admit_seq))
            victim = r;
    if (!victim)
        return false;
    req_release_blocks(e, victim);
    victim->n_computed = 0;
    victim->state = RS_WAITING;
    list_remove(&e->running, victim);
    victim->next = e->waiting;
    e->waiting = victim;
    return true;
}

/* ---------------------------------------------------------------- text */

static size_t safe_upto(const req *r) {
    size_t len = r->text.len, safe = len;
    for (int i = 0; i < r->n_stop_strs; i++) {
        const char *s = r->stop_strs[i];
        size_t sl = strlen(s);
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > 0; k--)
            if (memcmp(r->text.p + len - k, s, k) == 0) {
                if (len - k < safe)
                    safe = len - k;
                break;
            }
    }
    return safe < r->emitted ? r->emitted : safe;
}

/* Returns true (and the cut position) if a stop string occurs in the text. */
static bool find_stop(const req *r, size_t *cut) {
    if (!r->n_stop_strs || !r->text.len)
        return false;
    size_t from = r->emitted > r->max_stop_len ? r->emitted - r->max_stop_len : 0;
    size_t best = (size_t)-1;
    for (int i = 0; i < r->n_stop_strs; i++) {
        size_t sl = strlen(r->stop_strs[i]);
        if (!sl || sl > r->text.len)
            continue;
        for (size_t p = from; p + sl <= r->text.len; p++)
            if (memcmp(r->text.p + p, r->stop_strs[i], sl) == 0) {
                if (p < best)
                    best = p;
                break;
            }
    }
    if (best == (size_t)-1)
        return false;
    *cut = best;
    return true;
}

/* ---------------------------------------------------------------- the step */

static void take_submissions(pu_engine *e) {
    pthread_mutex_lock(&e->mu);
    while (e->submitted) {
        req *r = e->submitted;
        e->submitted = r->next;
        list_append(&e->waiting, r);
    }
    int64_t nc = e->n_cancel;
    int64_t ids[256];
    if (nc > 256)
        nc = 256;
    if (nc > 0) {
        memcpy(ids, e->cancel_ids, (size_t)nc * sizeof(int64_t));
        memmove(e->cancel_ids, e->cancel_ids + nc, (size_t)(e->n_cancel - nc) * sizeof(int64_t));
        e->n_cancel -= nc;
    }
    pthread_mutex_unlock(&e->mu);
    for (int64_t i = 0; i < nc; i++) {
        for (req *r = e->running; r; r = r->next)
            if (r->id == ids[i]) {
                finish(e, r, PU_FINISH_CANCELLED, NULL);
                break;
            }
        for (req *r = e->waiting; r; r = r->next)
            if (r->id == ids[i]) {
                finish(e, r, PU_FINISH_CANCELLED, NULL);
                break;
            }
    }
}

static int64_t count(const req *r) {
    int64_t n = 0;
    for (; r; r = r->next)
        n++;
    return n;
}

/* One scheduling step; returns false when there was nothing to do. */
/* Append a chosen token to r: stop ids, stop strings, length limit, text
 * delivery. Returns true when r finished (it is freed then). */
static bool text_ends_with_mark(const pu_str *t, const char *mark) {
    size_t n = t->len, ml = strlen(mark);
    while (n && (t->p[n - 1] == '\n' || t->p[n - 1] == ' '))
        n--;
    return n >= ml && !memcmp(t->p + n - ml, mark, ml);
}

static bool take_token(pu_engine *e, req *r, int32_t tok, float lp) {
    if (r->jc && r->jc_after) {
        if (r->jc_on && pu_json_constraint_complete(r->jc)) {
            r->jc_on = false; /* the value is complete: tok is the end id */
            r->smp.mask_fn = NULL;
        } else if (r->jc_on && pu_json_constraint_accept(r->jc, tok) != PU_OK) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", pu_err_msg());
            finish(e, r, PU_FINISH_ERROR, msg);
            return true;
        }
    } else if (r->jc) {
        /* the value is complete: the mask allowed only end tokens */
        if (pu_json_constraint_complete(r->jc)) {
            finish(e, r, PU_FINISH_STOP, NULL);
            return true;
        }
        if (pu_json_constraint_accept(r->jc, tok) != PU_OK) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", pu_err_msg());
            finish(e, r, PU_FINISH_ERROR, msg);
            return true;
        }
    }
    bool stop_id = false;
    for (int j = 0; j < r->n_stop_ids; j++)
        stop_id |= tok == r->stop_ids[j];
    if (stop_id) {
        finish(e, r, PU_FINISH_STOP, NULL);
        return true;
    }
    pu_sampler_accept(&r->smp, tok);
    if (r->n_tokens == r->cap_tokens) {
        r->cap_tokens *= 2;
        r->tokens = pu_realloc(r->tokens, (size_t)r->cap_tokens * sizeof(int32_t));
    }
    r->tokens[r->n_tokens++] = tok;
    r->n_generated++;
    e->st.tokens_generated++;
    if (e->tok)
        pu_tok_stream_feed(&r->ts, tok, &r->text);
    if (r->jc_after && !r->jc_on && text_ends_with_mark(&r->text, r->jc_after)) {
        r->jc_on = true;
        pu_json_constraint_reset(r->jc);
        r->smp.mask_fn = pu_json_constraint_mask_hook;
        r->smp.mask_ud = r->jc;
    }
    /* at the length limit the stream's held-back bytes are final: flush them
     * first (that only appends, so the earliest stop string is the same) */
    bool at_len = r->n_generated >= r->max_tokens || r->n_tokens >= e->p.ctx;
    if (at_len && e->tok)
        pu_tok_stream_flush(&r->ts, &r->text);
    size_t cut;
    if (find_stop(r, &cut)) {
        r->text.len = cut;
        r->text.p[cut] = 0;
        emit(e, r, tok, lp, cut, PU_FINISH_NONE, NULL);
        finish_ex(e, r, PU_FINISH_STOP, NULL, true);
        return true;
    }
    if (at_len) {
        emit(e, r, tok, lp, r->text.len, PU_FINISH_NONE, NULL);
        finish(e, r, PU_FINISH_LENGTH, NULL);
        return true;
    }
    emit(e, r, tok, lp, safe_upto(r), PU_FINISH_NONE, NULL);
    return false;
}

/* Speculative decoding (greedy requests when a draft model is set) ----- */

static bool spec_eligible(const pu_engine *e, const req *r) {
    return e->p.draft && e->p.draft_k > 0 && r->smp.p.temperature == 0.0f && !r->logprobs &&
           !r->jc && r->n_generated > 0;
}

/* Propose up to kmax tokens after r's pending token with the draft model
 * (greedy); the draft session first catches up on every token but the
 * pending one. Returns how many (0: none, also on any draft error). */
static int draft_propose(pu_engine *e, req *r, int kmax) {
    if (kmax <= 0)
        return 0;
    int64_t V = e->c->vocab_size;
    if (!r->dsess &&
        pu_session_create_ex(e->p.draft, e->p.ctx + PU_MAX_DRAFT + 1, e->p.kv_type, e->pool,
                             &r->dsess) != PU_OK) {
        pu_err_clear();
        return 0;
    }
    int64_t need = r->n_tokens - 1, pos = pu_session_pos(r->dsess);
    if (pos > need && pu_session_truncate(r->dsess, need) != PU_OK)
        pos = -1;
    else if (pos < need &&
             pu_session_eval(r->dsess, r->tokens + pos, need - pos, NULL, false) != PU_OK)
        pos = -1;
    int32_t cur = r->tokens[r->n_tokens - 1];
    int n = 0;
    while (pos >= 0 && n < kmax) {
        if (pu_session_eval(r->dsess, &cur, 1, e->dlogits, false) != PU_OK)
            break;
        cur = pu_argmax(e->dlogits, V);
        r->draft[n++] = cur;
    }
    if (pos < 0 || n < kmax) {
        pu_err_clear();
        pu_session_reset(r->dsess); /* resynchronised next time */
    }
    return n;
}

/* The target's verdict on r's drafted tokens: row li of e->logits is the
 * pending token's (already sampled: tok, lp), rows li+1.. the drafts'.
 * Accept drafts while the target's own greedy choice equals them; the
 * first differing choice (or the one after the last draft) becomes the
 * pending token. Returns the next logits row. */
static int64_t verify_draft(pu_engine *e, req *r, int64_t li, float lp, int32_t tok) {
    int64_t V = e->c->vocab_size;
    int nd = r->n_draft_step;
    r->n_draft_step = 0;
    e->st.tokens_drafted += nd;
    for (int j = 0;; j++) {
        bool match = j < nd && tok == r->draft[j];
        if (take_token(e, r, tok, lp))
            return li + nd + 1;
        if (!match) {
            /* adaptive k: one more after a fully accepted step, one fewer
             * (at least 1) after a rejection */
            if (e->p.draft_adaptive && nd > 0) {
                int k = r->k_spec > 0 ? r->k_spec : e->p.draft_k;
                k = j == nd ? k + 1 : k - 1;
                r->k_spec = k < 1 ? 1 : k > e->p.draft_k ? e->p.draft_k : k;
            }
            return li + nd + 1;
        }
        /* the draft's K/V at this position was computed from the right token */
        int64_t before = r->n_computed;
        r->n_computed++;
        register_blocks(e, r, before, r->n_computed);
        e->st.tokens_draft_accepted++;
        float *lg = e->logits + (li + j + 1) * V;
        for (int b = 0; b < r->n_bias; b++)
            lg[r->bias_ids[b]] += r->bias[b];
        tok = pu_sampler_sample(&r->smp, lg, &lp);
    }
}

static bool step(pu_engine *e) {
    take_submissions(e);
    while (e->waiting && count(e->running) < e->p.max_batch) {
        req *r = e->waiting;
        e->waiting = r->next;
        r->next = NULL;
        admit(e, r);
    }
    if (!e->running)
        return false;

    int64_t V = e->c->vocab_size;
    int64_t nb = 0, budget = e->p.prefill_chunk, ntok = 0;
    /* decodes first (one pending token each), then prompt chunks; iterate a
     * snapshot because preemption moves requests out of the running list */
    int64_t nrun = 0;
    for (req *r = e->running; r; r = r->next)
        e->order[nrun++] = r;
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t oi = 0; oi < nrun; oi++) {
            req *r = e->order[oi];
            if (r->state != RS_RUNNING)
                continue;
            bool queued = false;
            for (int64_t i = 0; i < nb && !queued; i++)
                queued = e->breqs[i] == r;
            if (queued)
                continue;
            int64_t pending = r->n_tokens - r->n_computed;
            bool is_decode = pending == 1 && r->n_generated > 0;
            if (pending <= 0 || (pass == 0) != is_decode)
                continue;
            int64_t n = pending;
            if (!is_decode) {
                if (budget <= 0)
                    continue;
                if (n > budget)
                    n = budget;
            }
            if (ntok + n > e->max_step_tokens)
                n = e->max_step_tokens - ntok;
            if (n <= 0)
                continue;
            int nd = 0; /* drafted tokens verified in this pass too (never preempts for them) */
            if (is_decode && spec_eligible(e, r)) {
                int64_t room = e->max_step_tokens - ntok - 1;
                int64_t kmax = e->p.draft_adaptive && r->k_spec > 0 ? r->k_spec : e->p.draft_k;
                kmax = kmax < room ? kmax : room;
                kmax = kmax < e->p.ctx - r->n_tokens ? kmax : e->p.ctx - r->n_tokens;
                kmax = kmax < r->max_tokens - r->n_generated - 1
                           ? kmax
                           : r->max_tokens - r->n_generated - 1;
                nd = kmax > 0 && ensure_blocks(e, r, r->n_computed + 1 + kmax)
                         ? draft_propose(e, r, (int)kmax)
                         : 0;
            }
            while (!ensure_blocks(e, r, r->n_computed + n)) {
                if (!preempt_one(e, r))
                    break;
                /* drop a preempted victim that was already queued in this batch */
                for (int64_t i = 0; i < nb; i++)
                    if (e->breqs[i]->state != RS_RUNNING) {
                        ntok -= e->bseqs[i].n;
                        if (!(e->bseqs[i].n == 1 && e->breqs[i]->n_generated > 0))
                            budget += e->bseqs[i].n;
                        memmove(&e->breqs[i], &e->breqs[i + 1],
                                (size_t)(nb - i - 1) * sizeof(req *));
                        memmove(&e->bseqs[i], &e->bseqs[i + 1],
                                (size_t)(nb - i - 1) * sizeof(pu_batch_seq));
                        memmove(&e->bspec[i], &e->bspec[i + 1], (size_t)(nb - i - 1) * sizeof(int));
                        nb--;
                        i--;
                    }
            }
            if (r->n_blocks * e->p.block_size < r->n_computed + n) {
                bool oldest = true;
                for (req *o = e->running; o; o = o->next)
                    oldest &= o == r || o->admit_seq > r->admit_seq;
                if (oldest) /* nothing left to evict: it can never fit */
                    finish(e, r, PU_FINISH_ERROR, "the KV cache is too small for this request");
                continue; /* else wait until older requests free blocks */
            }
            pu_batch_seq *bs = &e->bseqs[nb];
            bs->blocks = r->blocks;
            bs->ids = r->tokens + r->n_computed;
            bs->pos0 = r->n_computed;
            bs->n = n;
            bs->want_logits = r->n_computed + n == r->n_tokens;
            bs->lora = r->lora;
            bs->lora_scales = r->lora_scales;
            bs->n_lora = r->n_lora;
            e->bspec[nb] = nd;
            e->breqs[nb++] = r;
            ntok += n;
            r->n_draft_step = nd;
            for (int j = 0; j < nd; j++) { /* one single-token entry per draft: its logits */
                pu_batch_seq *ds = &e->bseqs[nb];
                ds->blocks = r->blocks;
                ds->ids = &r->draft[j];
                ds->pos0 = r->n_computed + 1 + j;
                ds->n = 1;
                ds->want_logits = true;
                ds->lora = r->lora; /* the target verifies with the request's adapters */
                ds->lora_scales = r->lora_scales;
                ds->n_lora = r->n_lora;
                e->bspec[nb] = -1;
                e->breqs[nb++] = r;
                ntok++;
            }
            if (!is_decode)
                budget -= n;
        }
    }
    if (nb == 0)
        return e->waiting != NULL;

    pu_status st = pu_model_forward_batch(e->m, e->pool, e->k, &e->kv, e->ws, e->bseqs, nb,
                                          e->logits);
    e->st.steps++;
    if (st != PU_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", pu_err_msg());
        for (int64_t i = 0; i < nb; i++)
            finish(e, e->breqs[i], PU_FINISH_ERROR, msg);
        return true;
    }
    int64_t li = 0;
    for (int64_t i = 0; i < nb; i++) {
        if (e->bspec[i] < 0)
            continue; /* a draft entry: its leader verifies it */
        req *r = e->breqs[i];
        pu_batch_seq *bs = &e->bseqs[i];
        int64_t before = r->n_computed;
        r->n_computed += bs->n;
        if (r->n_computed <= r->n_prompt)
            e->st.tokens_prefilled += bs->n;
        register_blocks(e, r, before, r->n_computed);
        if (!bs->want_logits)
            continue;
        float *lg = e->logits + li++ * V;
        for (int j = 0; j < r->n_bias; j++)
            lg[r->bias_ids[j]] += r->bias[j];
        float lp = 0;
        int32_t tok;
        if (r->logprobs) {
            /* model logprobs: log-softmax of the raw logits; the sampler applies
             * penalties / temperature in place, so it samples from a copy */
            float mx = lg[0];
            for (int64_t j = 1; j < V; j++)
                mx = lg[j] > mx ? lg[j] : mx;
            double sum = 0;
            for (int64_t j = 0; j < V; j++)
                sum += exp((double)(lg[j] - mx));
            double lse = (double)mx + log(sum);
            r->n_top_now = (int)pu_topk(lg, V, r->n_top, r->top_ids);
            for (int j = 0; j < r->n_top_now; j++)
                r->top_lps[j] = (float)((double)lg[r->top_ids[j]] - lse);
            memcpy(e->lg_copy, lg, (size_t)V * sizeof(float));
            tok = pu_sampler_sample(&r->smp, e->lg_copy, NULL);
            lp = (float)((double)lg[tok] - lse);
        } else {
            tok = pu_sampler_sample(&r->smp, lg, &lp);
        }
        if (r->n_draft_step > 0) {
            li = verify_draft(e, r, li - 1, lp, tok);
            continue;
        }
        take_token(e, r, tok, lp);
    }
    return true;
}

static void publish_stats(pu_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->snap = e->st;
    e->snap.running = count(e->running);
    e->snap.waiting = count(e->waiting) + count(e->submitted);
    e->snap.blocks_free = e->n_free + e->n_lru;
    e->snap.blocks_cached = e->n_lru;
    pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg) {
    pu_engine *e = arg;
    publish_stats(e);
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !e->submitted && !e->n_cancel && !e->running && !e->waiting)
            pthread_cond_wait(&e->cv, &e->mu);
        bool stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        step(e);
        publish_stats(e);
    }
    /* cancel everything left */
    take_submissions(e);
    while (e->running)
        finish(e, e->running, PU_FINISH_CANCELLED, NULL);
    while (e->waiting)
        finish(e, e->waiting, PU_FINISH_CANCELLED, NULL);
    return NULL;
}

/* ---------------------------------------------------------------- public */

pu_status pu_engine_create(const pu_model *m, const pu_tok *tok, const pu_engine_params *pp,
                           pu_engine **out) {
    *out = NULL;
    pu_engine *e = pu_calloc(1, sizeof *e);
    e->m = m;
    e->tok = tok;
    e->c = pu_model_config(m);
    e->k = pu_kernels_get();
    e->p = pp ? *pp : pu_engine_default_params();
    pu_engine_params d = pu_engine_default_params();
    if (e->p.max_batch <= 0)
        e->p.max_batch = d.max_batch;
    if (e->p.block_size <= 0)
        e->p.block_size = d.block_size;
    if (e->p.prefill_chunk <= 0)
        e->p.prefill_chunk = d.prefill_chunk;
    if (e->p.ctx <= 0) {
        int64_t lim = pu_config_ctx_limit(e->c);
        e->p.ctx = lim < 4096 ? lim : 4096;
    }
    if (e->p.kv_tokens <= 0)
        e->p.kv_tokens = e->p.ctx * 4;
    if (e->p.kv_tokens < e->p.ctx)
        e->p.kv_tokens = e->p.ctx;
    int64_t BS = e->p.block_size;
    int64_t nblocks = (e->p.kv_tokens + BS - 1) / BS + e->p.max_batch;
    pu_status st = pu_kv_pages_init_ex(&e->kv, e->c, nblocks, BS, e->p.kv_type);
    if (st != PU_OK) {
        pu_free(e);
        return st;
    }
    if (e->p.draft) {
        if (pu_model_config(e->p.draft)->vocab_size != e->c->vocab_size) {
            pu_kv_pages_deinit(&e->kv);
            pu_free(e);
            return pu_err_set(PU_ERR_INVALID,
                              "engine: the draft model's vocabulary (%lld) differs from the "
                              "target's (%lld)",
                              (long long)pu_model_config(pp->draft)->vocab_size,
                              (long long)pu_model_config(m)->vocab_size);
        }
        if (e->p.draft_k <= 0)
            e->p.draft_k = 4;
        if (e->p.draft_k > PU_MAX_DRAFT)
            e->p.draft_k = PU_MAX_DRAFT;
    } else {
        e->p.draft_k = 0;
    }
    e->per_req = 1 + e->p.draft_k;
    e->max_step_tokens = e->p.prefill_chunk + e->p.max_batch * e->per_req;
    st = pu_batch_ws_create(m, e->max_step_tokens, &e->ws);
    if (st != PU_OK) {
        pu_kv_pages_deinit(&e->kv);
        pu_free(e);
        return st;
    }
    e->bm = pu_calloc((size_t)nblocks, sizeof(block_meta));
    e->free_stack = pu_malloc((size_t)nblocks * sizeof(int32_t));
    for (int64_t i = 0; i < nblocks; i++)
        e->free_stack[i] = (int32_t)(nblocks - 1 - i);
    e->n_free = nblocks;
    e->lru_head = e->lru_tail = -1;
    e->hcap = 64;
    while (e->hcap < nblocks * 2)
        e->hcap *= 2;
    e->hkeys = pu_calloc((size_t)e->hcap, sizeof(uint64_t));
    e->hvals = pu_calloc((size_t)e->hcap, sizeof(int32_t));
    e->block_tokens = pu_calloc((size_t)(nblocks * BS), sizeof(int32_t));
    int64_t nent = e->p.max_batch * e->per_req;
    e->logits = pu_malloc((size_t)(nent * e->c->vocab_size) * sizeof(float));
    e->lg_copy = pu_malloc((size_t)e->c->vocab_size * sizeof(float));
    e->dlogits = pu_malloc((size_t)e->c->vocab_size * sizeof(float));
    e->bseqs = pu_calloc((size_t)nent, sizeof(pu_batch_seq));
    e->breqs = pu_calloc((size_t)nent, sizeof(req *));
    e->bspec = pu_calloc((size_t)nent, sizeof(int));
    e->order = pu_calloc((size_t)e->p.max_batch, sizeof(req *));
    e->eos_ids[e->n_eos++] = (int32_t)e->c->eos_token_id;
    if (tok) {
        int32_t im_end = pu_tok_special_id(tok, "<|im_end|>");
        if (im_end >= 0 && im_end != e->eos_ids[0])
            e->eos_ids[e->n_eos++] = im_end;
    }
    e->st.blocks_total = nblocks;
    e->pool = pu_pool_create(e->p.n_threads);
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->jc_mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        pu_engine_destroy(e);
        return pu_err_set(PU_ERR_INTERNAL, "engine: cannot start its thread");
    }
    *out = e;
    return PU_OK;
}

void pu_engine_destroy(pu_engine *e) {
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread)
        pthread_join(e->thread, NULL);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->jc_mu);
    pu_json_constraint_destroy(e->jc_proto);
    pthread_cond_destroy(&e->cv);
    pu_pool_destroy(e->pool);
    pu_batch_ws_destroy(e->ws);
    pu_kv_pages_deinit(&e->kv);
    pu_free(e->bm);
    pu_free(e->free_stack);
    pu_free(e->hkeys);
    pu_free(e->hvals);
    pu_free(e->block_tokens);
    pu_free(e->logits);
    pu_free(e->lg_copy);
    pu_free(e->bseqs);
    pu_free(e->breqs);
    pu_free(e->bspec);
    pu_free(e->dlogits);
    pu_free(e->order);
    pu_free(e->cancel_ids);
    pu_free(e);
}

int64_t pu_engine_ctx(const pu_engine *e) {
    return e->p.ctx;
}

pu_status pu_engine_submit(pu_engine *e, const pu_engine_request *rq, int64_t *id) {
    *id = 0;
    int64_t V = e->c->vocab_size;
    if (rq->n_prompt <= 0)
        return pu_err_set(PU_ERR_INVALID, "the prompt is empty");
    if (rq->n_prompt >= e->p.ctx)
        return pu_err_set(PU_ERR_RANGE,
                          "the prompt has %lld tokens; the context is %lld tokens",
                          (long long)rq->n_prompt, (long long)e->p.ctx);
    for (int64_t i = 0; i < rq->n_prompt; i++)
        if (rq->prompt[i] < 0 || rq->prompt[i] >= V)
            return pu_err_set(PU_ERR_RANGE, "prompt token %lld: id %d outside [0, %lld)",
                              (long long)i, rq->prompt[i], (long long)V);
    for (int i = 0; i < rq->n_lora; i++)
        PU_TRY(pu_lora_check(rq->lora[i], e->c));
    req *r = pu_calloc(1, sizeof *r);
    if (rq->n_lora > 0) {
        r->n_lora = rq->n_lora;
        r->lora = pu_calloc((size_t)rq->n_lora, sizeof *r->lora);
        r->lora_scales = pu_calloc((size_t)rq->n_lora, sizeof *r->lora_scales);
        uint64_t key = 0x6c6f7261ull;
        for (int i = 0; i < rq->n_lora; i++) {
            r->lora[i] = rq->lora[i];
            r->lora_scales[i] = rq->lora_scales ? rq->lora_scales[i] : 1.0f;
            uintptr_t pa = (uintptr_t)rq->lora[i];
            key = pu_hash64(&key, sizeof key) ^ pu_hash64(&pa, sizeof pa) ^
                  pu_hash64(&r->lora_scales[i], sizeof(float));
        }
        r->lora_key = key ? key : 1;
    }
    pu_status st = pu_sampler_init(&r->smp, &rq->sample, V);
    if (st != PU_OK) {
        pu_free(r);
        return st;
    }
    r->cap_tokens = rq->n_prompt + 64;
    r->tokens = pu_malloc((size_t)r->cap_tokens * sizeof(int32_t));
    memcpy(r->tokens, rq->prompt, (size_t)rq->n_prompt * sizeof(int32_t));
    r->n_tokens = r->n_prompt = rq->n_prompt;
    for (int64_t i = 0; i < rq->n_prompt; i++)
        pu_sampler_accept(&r->smp, rq->prompt[i]);
    r->max_tokens = rq->max_tokens > 0 ? rq->max_tokens : e->p.ctx;
    r->stop_ids = pu_malloc((size_t)(rq->n_stop_ids + 2) * sizeof(int32_t));
    if (!rq->ignore_eos)
        for (int i = 0; i < e->n_eos; i++)
            r->stop_ids[r->n_stop_ids++] = e->eos_ids[i];
    for (int i = 0; i < rq->n_stop_ids; i++)
        r->stop_ids[r->n_stop_ids++] = rq->stop_ids[i];
    if (rq->n_stop_strings > 0 && e->tok) {
        r->stop_strs = pu_calloc((size_t)rq->n_stop_strings, sizeof(char *));
        for (int i = 0; i < rq->n_stop_strings; i++) {
            if (!rq->stop_strings[i] || !*rq->stop_strings[i])
                continue;
            r->stop_strs[r->n_stop_strs++] = pu_strdup(rq->stop_strings[i]);
            size_t sl = strlen(rq->stop_strings[i]);
            if (sl > r->max_stop_len)
                r->max_stop_len = sl;
        }
    }
    if (e->tok) {
        if (rq->continuation)
            pu_tok_stream_init_cont(&r->ts, e->tok);
        else
            pu_tok_stream_init(&r->ts, e->tok);
    }
    if (rq->top_logprobs < 0 || rq->top_logprobs > PU_MAX_TOP_LOGPROBS) {
        req_free(r);
        return pu_err_set(PU_ERR_INVALID, "top_logprobs must be in [0, %d]", PU_MAX_TOP_LOGPROBS);
    }
    r->logprobs = rq->logprobs || rq->top_logprobs > 0;
    r->n_top = rq->top_logprobs;
    for (int i = 0; i < rq->n_logit_bias; i++)
        if (rq->logit_bias_ids[i] < 0 || rq->logit_bias_ids[i] >= V ||
            !isfinite(rq->logit_bias[i])) {
            req_free(r);
            return pu_err_set(PU_ERR_INVALID,
                              "logit_bias[%d]: id %d outside [0, %lld) or bias not finite", i,
                              rq->logit_bias_ids[i], (long long)V);
        }
    if (rq->n_logit_bias > 0) {
        r->n_bias = rq->n_logit_bias;
        r->bias_ids = pu_malloc((size_t)r->n_bias * sizeof(int32_t));
        r->bias = pu_malloc((size_t)r->n_bias * sizeof(float));
        memcpy(r->bias_ids, rq->logit_bias_ids, (size_t)r->n_bias * sizeof(int32_t));
        memcpy(r->bias, rq->logit_bias, (size_t)r->n_bias * sizeof(float));
    }
    if (rq->json_object || rq->json_schema) {
        pu_status js = PU_OK;
        pthread_mutex_lock(&e->jc_mu);
        if (!e->tok)
            js = pu_err_set(PU_ERR_INVALID, "response_format: the engine has no tokenizer");
        else if (!e->jc_proto)
            js = pu_json_constraint_create(e->tok, true, &e->jc_proto);
        pthread_mutex_unlock(&e->jc_mu);
        if (js != PU_OK) {
            req_free(r);
            return js;
        }
        r->schema = pu_json_schema_copy(rq->json_schema);
        r->jc = pu_json_constraint_clone(e->jc_proto, true, r->schema);
        if (rq->json_after && *rq->json_after) {
            r->jc_after = pu_strdup(rq->json_after);
            if (rq->json_end_id >= 0)
                pu_json_constraint_allow_end(r->jc, rq->json_end_id);
        } else {
            r->smp.mask_fn = pu_json_constraint_mask_hook;
            r->smp.mask_ud = r->jc;
        }
    }
    r->cb = rq->cb;
    r->ud = rq->ud;
    pthread_mutex_lock(&e->mu);
    r->id = ++e->next_id;
    *id = r->id;
    list_append(&e->submitted, r);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return PU_OK;
}

void pu_engine_cancel(pu_engine *e, int64_t id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_cancel == e->cap_cancel) {
        e->cap_cancel = e->cap_cancel ? e->cap_cancel * 2 : 16;
        e->cancel_ids = pu_realloc(e->cancel_ids, (size_t)e->cap_cancel * sizeof(int64_t));
    }
    e->cancel_ids[e->n_cancel++] = id;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void pu_engine_get_stats(pu_engine *e, pu_engine_stats *st) {
    pthread_mutex_lock(&e->mu);
    *st = e->snap; /* published by the engine thread after every step */
    pthread_mutex_unlock(&e->mu);
}
