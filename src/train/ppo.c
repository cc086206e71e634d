/*
 * ppo.c — online RLHF with PPO (puyu ppo), InternLM2 / COOL style, in the
 * OpenRLHF formulation.
 *
 * Four models:
 *  - actor: a pu_tmodel over the policy (fp32 copy, or with --lora adapters
 *    over the memory-mapped base);
 *  - reference: a forward_only pu_tmodel borrowing the policy's pu_model
 *    (the same mapping: no second copy; under --lora it is that base
 *    without the adapter);
 *  - critic: a pu_tmodel over the reward model (or --critic) body + its
 *    v_head as an extra trainable vector, values = v . hidden[t]
 *    (pu_tmodel_hidden; the gradient enters as dhidden through
 *    pu_tmodel_backward_logp); with --lora adapters over the RM's mapping;
 *  - reward model: frozen, scored with the inference path (pu_model_reward
 *    on text rendered as `puyu rm score` renders it, its own tokenizer).
 *
 * One step (iteration) s:
 *  1. B prompts (a per-epoch seeded order, pu_epoch_order_at), rendered as
 *     `puyu sft` renders a conversation up to "<|im_start|>assistant\n".
 *  2. Rollouts by the batching engine (src/infer/engine.c: all B requests
 *     in flight together, prefix sharing off since weights change): with
 *     --lora the current adapter is exported (pu_tmodel_lora_export) and
 *     applied unmerged per request; otherwise the actor's fp32 weights are
 *     copied into an F32 pu_model the engine reads (one more copy of the
 *     policy). A response that stops gets <|im_end|> as its last action.
 *  3. Experience: old log-probs and entropy (actor, LoRA dropout off),
 *     reference log-probs, old values (critic) at the positions that
 *     predict each response token, the reward score of prompt + response.
 *     rewards r_t = -kl_coef (logp - ref_logp), + score at the last token
 *     (pu_ppo_kl_rewards); GAE (pu_ppo_gae, gamma, lambda); advantages
 *     whitened over the batch (OpenRLHF's normalisation by default).
 *  4. --ppo-epochs passes over the batch (one mini-batch = the batch): the
 *     critic step (clipped value loss), then — once s >= --critic-warmup —
 *     the actor step (clipped policy loss + ptx_coef x the SFT cross-
 *     entropy of one --ptx-data batch). One AdamW step per model per pass.
 *  5. A metrics line; a checkpoint every --save-every steps and at the end.
 *
 * Checkpoints OUT/step_XXXXXXXX/ (written as .tmp_*, renamed, OUT/latest
 * rewritten atomically): actor/, critic/ (pu_tmodel_save_dir: the weights
 * or the adapters), train_state.safetensors (both optimizers' moments, the
 * critic's v_head and its moments, step and Adam counters). --resume
 * continues from OUT/latest; the reward model is whatever --reward-model
 * names now (COOL's online rounds: patch the RM, resume). A non-finite loss
 * or reward stops the run naming the step; the last checkpoint is intact.
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "puyu/pu_align.h"
#include "puyu/pu_chat.h"
#include "puyu/pu_dp.h"
#include "puyu/pu_engine.h"
#include "puyu/pu_sft.h"
#include "train/train_impl.h"

void pu_ppo_train_opts_default(pu_ppo_train_opts *o) {
    memset(o, 0, sizeof *o);
    pu_train_opts_default(&o->train);
    o->train.batch = 4;
    o->train.lr = 1e-6;
    o->train.adam.weight_decay = 0.0;
    o->ptx_coef = 0.5;
    o->max_new_tokens = 64;
    o->kl_coef = 0.01;
    o->gamma = 1.0;
    o->lam = 0.95;
    o->clip_range = 0.2;
    o->value_clip = 0.2;
    o->ppo_epochs = 1;
    o->temperature = 1.0f;
    o->top_p = 1.0f;
    o->reward_token = -1;
    o->shuffle = true;
    o->lora_r = 8;
    o->lora_alpha = 16;
    o->lora_dropout = 0.05;
    o->lora_targets = PU_LORA_DEFAULT_TARGETS;
}

/* ------------------------------------------------------------------------ */
/* prompts                                                                  */

typedef struct {
    pu_chat turns;   /* the prompt turns the policy sees */
    char *condition; /* system prompt of the reward model (owned) or NULL */
    int32_t *ids;    /* the policy's input: BOS ... "<|im_start|>" enc("assistant\n") */
    int64_t n;
    char *where; /* "file:line" */
} ppo_prompt;

typedef struct {
    ppo_prompt *p;
    int64_t n, n_skipped, max_len;
} ppo_prompts;

static void prompts_free(ppo_prompts *ps) {
    for (int64_t i = 0; i < ps->n; i++) {
        pu_chat_free(&ps->p[i].turns);
        pu_free(ps->p[i].condition);
        pu_free(ps->p[i].ids);
        pu_free(ps->p[i].where);
    }
    pu_free(ps->p);
    memset(ps, 0, sizeof *ps);
}

static void chat_copy_turns(pu_chat *dst, const pu_chat *src, int from, int to) {
    for (int i = from; i < to; i++) {
        const pu_chat_msg *m = &src->msgs[i];
        pu_chat_add(dst, m->role, m->name, m->content);
    }
}

/* One prompt line: {"messages": [...]} / any pu_sft_record kind (trailing
 * assistant turns dropped), {"prompt": "text" | [messages]}, or a preference
 * record (its prompt); optional "condition" (a name of the conditions table
 * or a system prompt text) goes to the reward model only. */
static pu_status parse_prompt(const char *line, size_t len, const char *where,
                              const pu_pref_conditions *conds, const char *default_cond,
                              ppo_prompt *out) {
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    if (!j)
        return pu_err_set(PU_ERR_FORMAT, "%s: malformed JSON: %s (column %d)", where, je.text,
                          je.column);
    pu_status s = PU_OK;
    if (!json_is_object(j)) {
        json_decref(j);
        return pu_err_set(PU_ERR_FORMAT, "%s: a prompt record must be a JSON object", where);
    }
    const char *cond = default_cond;
    json_t *jc = json_object_get(j, "condition");
    if (jc && !json_is_string(jc)) {
        json_decref(j);
        return pu_err_set(PU_ERR_FORMAT, "%s: condition: expected a string", where);
    }
    if (jc)
        cond = json_string_value(jc);
    if (cond && *cond) {
        const char *txt = pu_pref_condition_lookup(conds, cond);
        bool word = strspn(cond, "abcdefghijklmnopqrstuvwxyz_-") == strlen(cond);
        if (!txt && word) {
            s = pu_err_set(PU_ERR_FORMAT,
                           "%s: condition: \"%s\" is not a known condition name (give a "
                           "name of the conditions table or a system prompt text)",
                           where, cond);
            json_decref(j);
            return s;
        }
        out->condition = pu_strdup(txt ? txt : cond);
    }
    json_object_del(j, "condition");
    pu_chat_init(&out->turns);
    pu_sft_record rec;
    memset(&rec, 0, sizeof rec);
    json_t *jp = json_object_get(j, "prompt");
    if (json_object_get(j, "chosen") || json_object_get(j, "rejected")) {
        pu_pref_record pr;
        memset(&pr, 0, sizeof pr);
        char *txt = json_dumps(j, JSON_COMPACT);
        pu_pref_parse_opts po = {.conditions = conds, .default_condition = NULL};
        s = pu_pref_record_parse(txt, strlen(txt), where, &po, &pr);
        free(txt);
        if (s == PU_OK)
            chat_copy_turns(&out->turns, &pr.prompt.msgs, 0, pr.prompt.msgs.n);
        pu_pref_record_free(&pr);
    } else if (jp && json_is_string(jp)) {
        pu_chat_add(&out->turns, "user", NULL, json_string_value(jp));
    } else {
        if (jp) { /* "prompt": [messages] is read as "messages" */
            json_object_set(j, "messages", jp);
            json_object_del(j, "prompt");
        }
        char *txt = json_dumps(j, JSON_COMPACT);
        s = pu_sft_record_parse(txt, strlen(txt), where, NULL, &rec);
        free(txt);
        if (s == PU_OK) {
            int n = rec.msgs.n;
            while (n > 0 && !strcmp(rec.msgs.msgs[n - 1].role, "assistant"))
                n--;
            chat_copy_turns(&out->turns, &rec.msgs, 0, n);
        }
        pu_sft_record_free(&rec);
    }
    json_decref(j);
    if (s == PU_OK && out->turns.n == 0)
        s = pu_err_set(PU_ERR_FORMAT, "%s: prompt: no turns before the response", where);
    if (s == PU_OK && !strcmp(out->turns.msgs[out->turns.n - 1].role, "assistant"))
        s = pu_err_set(PU_ERR_FORMAT, "%s: prompt: ends with an assistant turn", where);
    return s;
}

/* the prompt ids exactly as pu_sft_tokenize renders prompt + a response:
 * everything before the response's first token */
static pu_status prompt_ids(const pu_tok *t, ppo_prompt *p) {
    pu_sft_record r;
    memset(&r, 0, sizeof r);
    pu_chat_init(&r.msgs);
    chat_copy_turns(&r.msgs, &p->turns, 0, p->turns.n);
    pu_chat_add(&r.msgs, "assistant", NULL, "x");
    r.loss = pu_calloc((size_t)r.msgs.n, 1);
    r.loss[r.msgs.n - 1] = 1;
    pu_sft_tokens st;
    memset(&st, 0, sizeof st);
    pu_status s = pu_sft_tokenize(t, &r, &st);
    pu_sft_record_free(&r);
    if (s != PU_OK)
        return s;
    int64_t a = 0;
    while (a < st.n && st.labels[a] < 0)
        a++;
    bool found = a >= 1 && a < st.n;
    p->n = a;
    p->ids = pu_malloc((size_t)(a > 0 ? a : 1) * sizeof(int32_t));
    memcpy(p->ids, st.ids, (size_t)a * sizeof(int32_t));
    pu_sft_tokens_free(&st);
    if (!found)
        return pu_err_set(PU_ERR_INTERNAL, "prompt: cannot find the response start");
    return PU_OK;
}

static pu_status load_prompts(const pu_ppo_train_opts *o, const pu_tok *tok, int64_t ctx,
                              ppo_prompts *out) {
    pu_pref_conditions *conds = NULL;
    PU_TRY(pu_pref_conditions_default(&conds));
    pu_status s = PU_OK;
    int64_t cap = 0;
    for (int f = 0; f < o->n_prompts && s == PU_OK; f++) {
        const char *path = o->prompts[f];
        char *data = NULL;
        size_t len = 0;
        s = pu_file_read_all(path, &data, &len);
        if (s != PU_OK) {
            pu_err_prefix(s, "ppo: --prompts: ");
            break;
        }
        size_t pos = 0;
        int64_t lineno = 0;
        while (pos < len && s == PU_OK) {
            size_t e = pos;
            while (e < len && data[e] != '\n')
                e++;
            lineno++;
            size_t a = pos, b = e;
            pos = e + 1;
            while (a < b && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r'))
                a++;
            while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t' || data[b - 1] == '\r'))
                b--;
            if (a == b)
                continue;
            char where[512];
            snprintf(where, sizeof where, "%s:%lld", path, (long long)lineno);
            ppo_prompt p;
            memset(&p, 0, sizeof p);
            s = parse_prompt(data + a, b - a, where, conds, o->condition, &p);
            if (s == PU_OK) {
                s = prompt_ids(tok, &p);
                if (s != PU_OK)
                    pu_err_prefix(s, "%s: ", where);
            }
            if (s == PU_OK && p.n + o->max_new_tokens > ctx)
                s = pu_err_set(PU_ERR_INVALID,
                               "%s: prompt: %lld tokens + --max-new-tokens %lld exceed the "
                               "context (%lld tokens)",
                               where, (long long)p.n, (long long)o->max_new_tokens,
                               (long long)ctx);
            if (s != PU_OK && o->skip_bad && s != PU_ERR_IO) {
                if (out->n_skipped < 3)
                    pu_log_warn("ppo: skipping %s", pu_err_msg());
                out->n_skipped++;
                pu_err_clear();
                s = PU_OK;
                pu_chat_free(&p.turns);
                pu_free(p.condition);
                pu_free(p.ids);
                continue;
            }
            if (s != PU_OK) {
                pu_chat_free(&p.turns);
                pu_free(p.condition);
                pu_free(p.ids);
                break;
            }
            p.where = pu_strdup(where);
            if (out->n == cap) {
                cap = cap ? 2 * cap : 64;
                out->p = pu_realloc(out->p, (size_t)cap * sizeof *out->p);
            }
            out->max_len = p.n > out->max_len ? p.n : out->max_len;
            out->p[out->n++] = p;
        }
        pu_free(data);
    }
    pu_pref_conditions_destroy(conds);
    if (s == PU_OK && out->n == 0)
        s = pu_err_set(PU_ERR_INVALID, "ppo: --prompts: no prompts (%lld skipped)",
                       (long long)out->n_skipped);
    return s;
}

/* ------------------------------------------------------------------------ */
/* rollouts through the engine                                              */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
    int32_t **toks;
    int64_t *nt, *cap;
    pu_finish_reason *fin;
    char **err;
} ro_wait;

typedef struct {
    ro_wait *w;
    int k;
} ro_slot;

static void ro_cb(const pu_engine_event *ev, void *ud) {
    ro_slot *sl = ud;
    ro_wait *w = sl->w;
    int k = sl->k;
    pthread_mutex_lock(&w->mu);
    if (ev->token >= 0) {
        if (w->nt[k] == w->cap[k]) {
            w->cap[k] = w->cap[k] ? 2 * w->cap[k] : 64;
            w->toks[k] = pu_realloc(w->toks[k], (size_t)w->cap[k] * sizeof(int32_t));
        }
        w->toks[k][w->nt[k]++] = ev->token;
    }
    if (ev->finish != PU_FINISH_NONE) {
        w->fin[k] = ev->finish;
        if (ev->error)
            w->err[k] = pu_strdup(ev->error);
        w->pending--;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

/* ------------------------------------------------------------------------ */
/* the job                                                                  */

typedef struct {
    const pu_ppo_train_opts *o;
    pu_pool *pool;
    pu_model *base, *refm, *rm, *critic_src, *roll; /* refm: --ref or NULL */ /* roll: F32 copy the engine reads (full FT) */
    pu_tok *tok, *rm_tok;
    int32_t reward_token, im_end;
    ppo_prompts prompts;
    pu_epoch_order order;
    pu_sft_data *ptx;
    pu_sft_batcher *ptx_b;
    pu_tmodel *actor, *ref, *critic;
    pu_adamw aopt, copt;
    float *v, *dv, *vm, *vv; /* critic head (C) + grad + moments */
    int64_t C;               /* critic hidden size */
    pu_engine *eng;
    pu_session *rm_sess;
    int64_t B, R, Tmax; /* prompts per step, response cap, row cap */
    int64_t step;
    char last_ckpt[64];
    char *tok_path;
    FILE *metrics;
    /* per step buffers */
    int32_t *rows;                /* (B, Tmax) prompt + response of each rollout */
    int32_t *ids, *tg;            /* (B, T) the step's batch */
    int64_t *np, *n;              /* prompt / total tokens per row */
    float *mask, *old_lp, *ref_lp, *old_v, *rew, *adv, *ret, *kl, *score, *lp, *vals, *dl;
    float *dh;                    /* (B*Tmax*C) */
    int32_t *ptx_ids, *ptx_tg, *ptx_pos, *ptx_seg;
} ppo_job;

static uint64_t mix64(uint64_t a, uint64_t b) {
    uint64_t x[2] = {a, b};
    return pu_hash64(x, sizeof x);
}

static pu_status same_shape(const pu_config *a, const pu_config *b, const char *what,
                            const char *path) {
    if (a->vocab_size != b->vocab_size || a->hidden_size != b->hidden_size ||
        a->num_hidden_layers != b->num_hidden_layers ||
        a->num_attention_heads != b->num_attention_heads ||
        a->num_key_value_heads != b->num_key_value_heads ||
        a->intermediate_size != b->intermediate_size)
        return pu_err_set(PU_ERR_INVALID,
                          "ppo: %s %s has another shape than the policy (vocab %lld/%lld, "
                          "hidden %lld/%lld, layers %lld/%lld, heads %lld/%lld, kv heads "
                          "%lld/%lld, ffn %lld/%lld)",
                          what, path, (long long)b->vocab_size,
                          (long long)a->vocab_size, (long long)b->hidden_size,
                          (long long)a->hidden_size, (long long)b->num_hidden_layers,
                          (long long)a->num_hidden_layers, (long long)b->num_attention_heads,
                          (long long)a->num_attention_heads, (long long)b->num_key_value_heads,
                          (long long)a->num_key_value_heads, (long long)b->intermediate_size,
                          (long long)a->intermediate_size);
    return PU_OK;
}

static void lora_opts(const pu_ppo_train_opts *o, pu_tmodel_opts *to, const char *base_name) {
    to->freeze_base = true;
    to->lora_r = o->lora_r;
    to->lora_alpha = o->lora_alpha;
    to->lora_dropout = o->lora_dropout;
    to->lora_rslora = o->lora_rslora;
    to->lora_targets = o->lora_targets;
    to->seed = o->train.seed;
    to->base_name = base_name;
}

/* the actor's weights into the F32 model the engine reads (full FT) */
static pu_status sync_rollout_model(ppo_job *j) {
    const pu_weights *w = pu_model_weights(j->roll);
    const float *P = pu_tmodel_params(j->actor);
    const pu_config *c = pu_model_config(j->roll);
    for (int i = 0; i < pu_tmodel_n_params(j->actor); i++) {
        const pu_param *p = pu_tmodel_param(j->actor, i);
        const pu_tensor *t = NULL;
        long long l = -1;
        char suf[64] = "";
        if (!strcmp(p->name, "model.tok_embeddings.weight"))
            t = &w->tok_embeddings;
        else if (!strcmp(p->name, "model.norm.weight"))
            t = &w->norm;
        else if (!strcmp(p->name, "output.weight"))
            t = &w->output;
        else if (sscanf(p->name, "model.layers.%lld.%63s", &l, suf) == 2 && l >= 0 &&
                 l < c->num_hidden_layers) {
            const pu_layer_weights *lw = &w->layers[l];
            const char *names[7] = {"attention_norm.weight", "attention.wqkv.weight",
                                    "attention.wo.weight",   "ffn_norm.weight",
                                    "feed_forward.w1.weight", "feed_forward.w3.weight",
                                    "feed_forward.w2.weight"};
            const pu_tensor *ts[7] = {&lw->attn_norm, &lw->wqkv, &lw->wo, &lw->ffn_norm,
                                      &lw->w1,        &lw->w3,   &lw->w2};
            for (int k = 0; k < 7; k++)
                if (!strcmp(suf, names[k]))
                    t = ts[k];
        }
        if (!t || t->dtype != PU_DTYPE_F32 || !t->data)
            return pu_err_set(PU_ERR_INTERNAL, "ppo: rollout model: no F32 tensor for %s",
                              p->name);
        int64_t n = t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
        if (n != p->numel)
            return pu_err_set(PU_ERR_INTERNAL, "ppo: rollout model: %s has %lld elements, not %lld",
                              p->name, (long long)n, (long long)p->numel);
        /* the model's own F32 buffer (pu_model_init_random allocated it) */
        memcpy((void *)(uintptr_t)t->data, P + p->offset, (size_t)n * sizeof(float));
    }
    return PU_OK;
}

/* B rollouts of step s; fills ids / np / n / mask (response tokens) */
static pu_status rollout(ppo_job *j, const int64_t *pidx, int64_t *gen_tokens) {
    const pu_ppo_train_opts *o = j->o;
    int64_t B = j->B;
    pu_lora *adapter = NULL;
    if (o->lora)
        PU_TRY(pu_tmodel_lora_export(j->actor, &adapter));
    else
        PU_TRY(sync_rollout_model(j));
    ro_wait w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.toks = pu_calloc((size_t)B, sizeof *w.toks);
    w.nt = pu_calloc((size_t)B, sizeof *w.nt);
    w.cap = pu_calloc((size_t)B, sizeof *w.cap);
    w.fin = pu_calloc((size_t)B, sizeof *w.fin);
    w.err = pu_calloc((size_t)B, sizeof *w.err);
    ro_slot *slots = pu_calloc((size_t)B, sizeof *slots);
    pu_status s = PU_OK;
    const pu_lora *al[1] = {adapter};
    for (int64_t k = 0; k < B && s == PU_OK; k++) {
        const ppo_prompt *p = &j->prompts.p[pidx[k]];
        pu_engine_request rq;
        memset(&rq, 0, sizeof rq);
        rq.prompt = p->ids;
        rq.n_prompt = p->n;
        rq.max_tokens = o->max_new_tokens;
        rq.sample = pu_sample_default_params();
        rq.sample.temperature = o->temperature;
        rq.sample.top_p = o->top_p;
        rq.sample.top_k = 0;
        rq.sample.seed = mix64(mix64(o->train.seed, (uint64_t)j->step), (uint64_t)k);
        if (j->im_end >= 0) {
            rq.stop_ids = &j->im_end;
            rq.n_stop_ids = 1;
        }
        rq.cb = ro_cb;
        slots[k].w = &w;
        slots[k].k = (int)k;
        rq.ud = &slots[k];
        if (adapter) {
            rq.lora = al;
            rq.n_lora = 1;
        }
        pthread_mutex_lock(&w.mu);
        w.pending++;
        pthread_mutex_unlock(&w.mu);
        int64_t id;
        s = pu_engine_submit(j->eng, &rq, &id);
        if (s != PU_OK) {
            pthread_mutex_lock(&w.mu);
            w.pending--;
            pthread_mutex_unlock(&w.mu);
            pu_err_prefix(s, "ppo: rollout of %s: ", p->where);
        }
    }
    pthread_mutex_lock(&w.mu);
    while (w.pending > 0)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    int64_t T = 1, R = j->R;
    *gen_tokens = 0;
    for (int64_t k = 0; k < B && s == PU_OK; k++)
        if (w.fin[k] == PU_FINISH_ERROR || w.fin[k] == PU_FINISH_CANCELLED)
            s = pu_err_set(PU_ERR_INTERNAL, "ppo: rollout of %s failed: %s",
                           j->prompts.p[pidx[k]].where, w.err[k] ? w.err[k] : "cancelled");
    for (int64_t k = 0; k < B && s == PU_OK; k++) {
        const ppo_prompt *p = &j->prompts.p[pidx[k]];
        int64_t nr = w.nt[k];
        bool add_end = w.fin[k] == PU_FINISH_STOP && j->im_end >= 0 && nr < R;
        *gen_tokens += nr;
        j->np[k] = p->n;
        j->n[k] = p->n + nr + (add_end ? 1 : 0);
        if (j->n[k] == p->n) { /* nothing generated: the end of turn is the response */
            j->n[k]++;
            add_end = true;
        }
        T = j->n[k] > T ? j->n[k] : T;
    }
    for (int64_t k = 0; k < B && s == PU_OK; k++) {
        const ppo_prompt *p = &j->prompts.p[pidx[k]];
        int32_t *row = j->rows + k * j->Tmax;
        memcpy(row, p->ids, (size_t)p->n * sizeof(int32_t));
        int64_t nr = j->n[k] - p->n, ng = w.nt[k] < nr ? w.nt[k] : nr;
        memcpy(row + p->n, w.toks[k], (size_t)ng * sizeof(int32_t));
        if (ng < nr)
            row[j->n[k] - 1] = j->im_end >= 0 ? j->im_end : pu_tok_eos(j->tok);
    }
    for (int64_t k = 0; k < B; k++) {
        pu_free(w.toks[k]);
        pu_free(w.err[k]);
    }
    pu_free(w.toks);
    pu_free(w.nt);
    pu_free(w.cap);
    pu_free(w.fin);
    pu_free(w.err);
    pu_free(slots);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    pu_lora_destroy(adapter);
    return s;
}

/* ids (B, T) packed from the (B, Tmax) rows, targets = the response tokens */
static int64_t build_batch(ppo_job *j, int32_t *ids, int32_t *tg) {
    int64_t T = 1;
    for (int64_t b = 0; b < j->B; b++)
        T = j->n[b] > T ? j->n[b] : T;
    for (int64_t b = 0; b < j->B; b++)
        for (int64_t t = 0; t < T; t++) {
            ids[b * T + t] = t < j->n[b] ? j->rows[b * j->Tmax + t] : 0;
            bool act = t >= j->np[b] - 1 && t + 1 < j->n[b];
            tg[b * T + t] = act ? j->rows[b * j->Tmax + t + 1] : PU_IGNORE_INDEX;
        }
    return T;
}

/* per-token response arrays (B, R) from (B, T) position arrays */
static void gather(const ppo_job *j, const float *src, int64_t T, int64_t stride, float *dst) {
    for (int64_t b = 0; b < j->B; b++)
        for (int64_t k = 0; k < j->R; k++) {
            int64_t t = j->np[b] - 1 + k;
            bool act = k < j->n[b] - j->np[b];
            dst[b * j->R + k] = act ? src[(b * T + t) * stride] : 0.0f;
        }
}

static void critic_values(ppo_job *j, int64_t T, float *vals) {
    const float *h = pu_tmodel_hidden(j->critic);
    for (int64_t b = 0; b < j->B; b++)
        for (int64_t k = 0; k < j->R; k++) {
            int64_t t = j->np[b] - 1 + k;
            if (k < j->n[b] - j->np[b])
                pu_value_head_fwd(j->v, h + (b * T + t) * j->C, 1, j->C, &vals[b * j->R + k]);
            else
                vals[b * j->R + k] = 0.0f;
        }
}

/* the reward model's score of prompt + response b */
static pu_status score_one(ppo_job *j, const ppo_prompt *p, int64_t b, float *out) {
    int64_t nr = j->n[b] - j->np[b];
    const int32_t *resp = j->rows + b * j->Tmax + j->np[b];
    if (nr > 0 && resp[nr - 1] == j->im_end)
        nr--;
    pu_str txt = {0};
    pu_status s = pu_tok_decode(j->tok, resp, nr, &txt);
    pu_chat conv;
    pu_chat_init(&conv);
    if (p->condition)
        pu_chat_add(&conv, "system", NULL, p->condition);
    chat_copy_turns(&conv, &p->turns, 0, p->turns.n);
    pu_chat_add(&conv, "assistant", NULL, txt.p ? txt.p : "");
    int32_t *ids = NULL;
    int64_t n = 0;
    if (s == PU_OK)
        s = pu_rm_tokenize(j->rm_tok, &conv, j->reward_token, &ids, &n);
    if (s == PU_OK && n > pu_session_n_ctx(j->rm_sess))
        s = pu_err_set(PU_ERR_INVALID, "the reward model's input has %lld tokens, its context %lld",
                       (long long)n, (long long)pu_session_n_ctx(j->rm_sess));
    if (s == PU_OK)
        s = pu_model_reward(j->rm, j->rm_sess, ids, n, out);
    if (s == PU_OK && !isfinite(*out))
        s = pu_err_set(PU_ERR_INVALID, "the reward model returned %g", (double)*out);
    if (s != PU_OK)
        pu_err_prefix(s, "ppo: step %lld: scoring the response to %s: ", (long long)j->step + 1,
                      p->where);
    pu_free(ids);
    pu_chat_free(&conv);
    pu_str_free(&txt);
    return s;
}

/* ------------------------------------------------------------------------ */
/* checkpoints                                                              */

static void rm_ckpt_dir(const char *dir) {
    const char *subs[2] = {"actor", "critic"};
    for (int i = 0; i < 2; i++) {
        char *p = pu_path_join(dir, subs[i]);
        pu_train_rm_flat_dir(p);
        pu_free(p);
    }
    pu_train_rm_flat_dir(dir);
}

static pu_status copy_tokenizer(const char *tp, const char *dir) {
    if (!tp || pu_dir_exists(tp))
        return PU_OK;
    const char *ext = strrchr(tp, '.');
    char *dst =
        pu_path_join(dir, ext && !strcmp(ext, ".json") ? "tokenizer.json" : "tokenizer.model");
    pu_status s = pu_train_copy_file(tp, dst);
    pu_free(dst);
    return s;
}

static pu_status save_ckpt(ppo_job *j) {
    const pu_ppo_train_opts *o = j->o;
    char name[64], tmpn[80];
    snprintf(name, sizeof name, "step_%08lld", (long long)j->step);
    snprintf(tmpn, sizeof tmpn, ".tmp_%s", name);
    char *dir = pu_path_join(o->train.out_dir, name), *tmp = pu_path_join(o->train.out_dir, tmpn);
    rm_ckpt_dir(tmp);
    char *ad = pu_path_join(tmp, "actor"), *cd = pu_path_join(tmp, "critic");
    pu_status s = pu_mkdir_p(tmp);
    if (s == PU_OK)
        s = pu_tmodel_save_dir(j->actor, ad);
    if (s == PU_OK)
        s = copy_tokenizer(j->tok_path, ad);
    if (s == PU_OK)
        s = pu_tmodel_save_dir(j->critic, cd);
    if (s == PU_OK && !o->lora) {
        /* the body (+ an unused LM head) as a causal LM: v_head is in
         * train_state, so the directory must not claim to be a reward model */
        pu_config cc = *pu_tmodel_config(j->critic);
        snprintf(cc.architecture, sizeof cc.architecture, "InternLM2ForCausalLM");
        cc.reward_token_id = -1;
        char *js = pu_config_to_json(&cc), *cp = pu_path_join(cd, "config.json");
        s = pu_file_write_atomic(cp, js, strlen(js));
        pu_free(cp);
        pu_free(js);
    }
    if (s == PU_OK) {
        char meta[1024];
        snprintf(meta, sizeof meta,
                 "{\"format\":\"puyu-ppo-state-1\",\"step\":\"%lld\",\"actor_t\":\"%lld\","
                 "\"critic_t\":\"%lld\",\"steps\":\"%lld\",\"batch\":\"%lld\",\"seed\":\"%llu\"}",
                 (long long)j->step, (long long)j->aopt.t, (long long)j->copt.t,
                 (long long)o->train.steps, (long long)j->B, (unsigned long long)o->train.seed);
        pu_st_out t[7] = {{"actor.adam.m", j->aopt.m, 1, {j->aopt.n, 0}},
                          {"actor.adam.v", j->aopt.v, 1, {j->aopt.n, 0}},
                          {"critic.adam.m", j->copt.m, 1, {j->copt.n, 0}},
                          {"critic.adam.v", j->copt.v, 1, {j->copt.n, 0}},
                          {"critic.v_head", j->v, 1, {j->C, 0}},
                          {"critic.adam.xm", j->vm, 1, {j->C, 0}},
                          {"critic.adam.xv", j->vv, 1, {j->C, 0}}};
        char *sp = pu_path_join(tmp, "train_state.safetensors");
        s = pu_train_write_safetensors(sp, t, 7, meta);
        pu_free(sp);
    }
    if (s == PU_OK) {
        rm_ckpt_dir(dir);
        if (rename(tmp, dir) != 0)
            s = pu_err_set(PU_ERR_IO, "%s: cannot rename the checkpoint into place", dir);
    }
    if (s == PU_OK) {
        char *lp = pu_path_join(o->train.out_dir, "latest");
        char line[80];
        int n = snprintf(line, sizeof line, "%s\n", name);
        s = pu_file_write_atomic(lp, line, (size_t)n);
        pu_free(lp);
    }
    if (s != PU_OK) {
        rm_ckpt_dir(tmp);
        pu_err_prefix(s, "ppo: saving the checkpoint of step %lld (the previous one, %s, is "
                         "intact): ",
                      (long long)j->step, j->last_ckpt[0] ? j->last_ckpt : "(none)");
    } else {
        snprintf(j->last_ckpt, sizeof j->last_ckpt, "%s", name);
        char **names;
        int n = pu_train_list_ckpts(o->train.out_dir, &names);
        int64_t keep = o->train.keep > 0 ? o->train.keep : 1;
        for (int i = 0; i + keep < n; i++) { /* the oldest beyond --keep */
            if (!strcmp(names[i], name))
                continue;
            char *old = pu_path_join(o->train.out_dir, names[i]);
            rm_ckpt_dir(old);
            pu_free(old);
        }
        pu_train_free_ckpt_names(names, n);
    }
    pu_free(ad);
    pu_free(cd);
    pu_free(dir);
    pu_free(tmp);
    return s;
}

static pu_status load_ckpt(ppo_job *j, const char *name) {
    char *dir = pu_path_join(j->o->train.out_dir, name);
    char *ad = pu_path_join(dir, "actor"), *cd = pu_path_join(dir, "critic");
    char *sp = pu_path_join(dir, "train_state.safetensors");
    pu_status s = pu_tmodel_load_dir(j->actor, ad);
    if (s == PU_OK)
        s = pu_tmodel_load_dir(j->critic, cd);
    pu_st_in f;
    memset(&f, 0, sizeof f);
    if (s == PU_OK)
        s = pu_train_st_open(&f, sp);
    if (s == PU_OK) {
        s = pu_train_st_get(&f, "actor.adam.m", j->aopt.m, j->aopt.n);
        if (s == PU_OK)
            s = pu_train_st_get(&f, "actor.adam.v", j->aopt.v, j->aopt.n);
        if (s == PU_OK)
            s = pu_train_st_get(&f, "critic.adam.m", j->copt.m, j->copt.n);
        if (s == PU_OK)
            s = pu_train_st_get(&f, "critic.adam.v", j->copt.v, j->copt.n);
        if (s == PU_OK)
            s = pu_train_st_get(&f, "critic.v_head", j->v, j->C);
        if (s == PU_OK)
            s = pu_train_st_get(&f, "critic.adam.xm", j->vm, j->C);
        if (s == PU_OK)
            s = pu_train_st_get(&f, "critic.adam.xv", j->vv, j->C);
        const char *st = pu_train_st_meta(&f, "step"), *at = pu_train_st_meta(&f, "actor_t"),
                   *ct = pu_train_st_meta(&f, "critic_t");
        if (s == PU_OK && (!st || !at || !ct))
            s = pu_err_set(PU_ERR_FORMAT, "%s: __metadata__: step / actor_t / critic_t missing",
                           sp);
        if (s == PU_OK) {
            j->step = strtoll(st, NULL, 10);
            j->aopt.t = strtoll(at, NULL, 10);
            j->copt.t = strtoll(ct, NULL, 10);
        }
        pu_train_st_close(&f);
    }
    if (s != PU_OK)
        pu_err_prefix(s, "ppo: resuming from %s: ", dir);
    else
        snprintf(j->last_ckpt, sizeof j->last_ckpt, "%s", name);
    pu_free(sp);
    pu_free(ad);
    pu_free(cd);
    pu_free(dir);
    return s;
}

static pu_status find_resume(const char *out, char *ck, size_t cap) {
    ck[0] = 0;
    char *lp = pu_path_join(out, "latest");
    char *txt = NULL;
    size_t len = 0;
    if (pu_file_exists(lp) && pu_file_read_all(lp, &txt, &len) == PU_OK) {
        size_t n = strcspn(txt, "\r\n");
        if (n < cap && !strncmp(txt, "step_", 5)) {
            memcpy(ck, txt, n);
            ck[n] = 0;
        }
    }
    pu_free(txt);
    pu_free(lp);
    pu_err_clear();
    if (ck[0]) {
        char *d = pu_path_join(out, ck), *sp = pu_path_join(d, "train_state.safetensors");
        if (!pu_file_exists(sp))
            ck[0] = 0;
        pu_free(sp);
        pu_free(d);
    }
    return PU_OK;
}

static pu_status write_final(ppo_job *j) {
    const char *out = j->o->train.out_dir;
    char *dir = pu_path_join(out, "final"), *tmp = pu_path_join(out, ".tmp_final");
    pu_train_rm_flat_dir(tmp);
    pu_status s = pu_tmodel_save_dir(j->actor, tmp);
    if (s == PU_OK)
        s = copy_tokenizer(j->tok_path, tmp);
    if (s == PU_OK) {
        pu_train_rm_flat_dir(dir);
        if (rename(tmp, dir) != 0)
            s = pu_err_set(PU_ERR_IO, "%s: cannot rename the final model into place", dir);
    }
    if (s != PU_OK) {
        pu_train_rm_flat_dir(tmp);
        pu_err_prefix(s, "ppo: writing %s: ", dir);
    } else if (!j->o->train.quiet) {
        pu_log_info("ppo: final model in %s", dir);
    }
    pu_free(dir);
    pu_free(tmp);
    return s;
}

/* ------------------------------------------------------------------------ */
/* one PPO iteration                                                        */

typedef struct {
    double reward, kl, policy_loss, value_loss, entropy, response_len, ptx_loss, clipfrac,
        approx_kl, vclipfrac, gen_tps, tps, seconds, actor_gnorm, critic_gnorm;
    int64_t gen_tokens;
    bool actor_trained;
} step_stats;

static pu_status nonfinite(const ppo_job *j, const char *what, double v) {
    return pu_err_set(PU_ERR_INVALID,
                      "ppo: step %lld: the %s is %g; stopping (the last checkpoint, %s, is "
                      "intact)",
                      (long long)j->step + 1, what, v, j->last_ckpt[0] ? j->last_ckpt : "(none)");
}

static pu_status ppo_step(ppo_job *j, step_stats *st) {
    const pu_ppo_train_opts *o = j->o;
    const pu_train_opts *to = &o->train;
    int64_t B = j->B, R = j->R, n = B * R, C = j->C;
    int64_t V = pu_tmodel_config(j->actor)->vocab_size;
    pu_pool *pool = j->pool;
    double t0 = pu_time_now();
    memset(st, 0, sizeof *st);
    int64_t *pidx = pu_malloc((size_t)B * sizeof(int64_t));
    for (int64_t k = 0; k < B; k++)
        pidx[k] = pu_epoch_order_at(&j->order, j->prompts.n, o->shuffle, to->seed,
                                    j->step * B + k);
    pu_status s = rollout(j, pidx, &st->gen_tokens);
    double t1 = pu_time_now();
    int64_t T = s == PU_OK ? build_batch(j, j->ids, j->tg) : 1;
    pu_tbatch bt = {.ids = j->ids, .targets = j->tg, .B = B, .T = T};
    double l;
    int64_t c;
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < R; k++)
            j->mask[b * R + k] = k < j->n[b] - j->np[b] ? 1.0f : 0.0f;
    /* experience: old policy (no dropout), reference, old values, scores */
    if (s == PU_OK) {
        if (o->lora)
            pu_tmodel_set_dropout(j->actor, false, 0);
        s = pu_tmodel_forward(j->actor, pool, &bt, &l, &c);
    }
    if (s == PU_OK) {
        gather(j, pu_tmodel_token_logps(j->actor), T, 1, j->old_lp);
        const float *lg = pu_tmodel_logits(j->actor);
        double es = 0, em = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = j->np[b] - 1; t + 1 < j->n[b]; t++) {
                float e;
                pu_entropy_fwd(lg + (b * T + t) * V, 1, V, &e);
                es += e;
                em += 1;
            }
        st->entropy = em > 0 ? es / em : 0;
        s = pu_tmodel_forward(j->ref, pool, &bt, &l, &c);
    }
    if (s == PU_OK) {
        gather(j, pu_tmodel_token_logps(j->ref), T, 1, j->ref_lp);
        s = pu_tmodel_forward(j->critic, pool, &bt, &l, &c);
    }
    if (s == PU_OK)
        critic_values(j, T, j->old_v);
    for (int64_t b = 0; b < B && s == PU_OK; b++)
        s = score_one(j, &j->prompts.p[pidx[b]], b, &j->score[b]);
    if (s == PU_OK) {
        pu_ppo_advantages(j->old_lp, j->ref_lp, j->old_v, j->mask, j->score, B, R, o->kl_coef,
                          o->gamma, o->lam, o->whiten, j->rew, j->kl, j->adv, j->ret);
        for (int64_t b = 0; b < B; b++) {
            st->reward += j->score[b] / (double)B;
            st->kl += j->kl[b] / (double)B;
            st->response_len += (double)(j->n[b] - j->np[b]) / (double)B;
        }
    }
    int64_t warm = to->warmup >= 0 ? to->warmup : (to->steps / 10 < 100 ? to->steps / 10 : 100);
    double min_lr = to->min_lr >= 0 ? to->min_lr : to->lr / 10;
    double lr = pu_lr_at(j->step, to->steps, warm, to->lr, min_lr);
    double clr0 = o->critic_lr > 0 ? o->critic_lr : to->lr;
    double clr = pu_lr_at(j->step, to->steps, warm, clr0, to->min_lr >= 0 ? to->min_lr : clr0 / 10);
    st->actor_trained = j->step >= o->critic_warmup;
    int64_t E = o->ppo_epochs;
    for (int64_t e = 0; e < E && s == PU_OK; e++) {
        /* critic: clipped value loss */
        pu_tmodel_zero_grad(j->critic);
        memset(j->dv, 0, (size_t)C * sizeof(float));
        if (o->lora)
            pu_tmodel_set_dropout(j->critic, true, mix64(mix64(to->seed, 0xC0FFEE), j->step * E + e));
        s = pu_tmodel_forward(j->critic, pool, &bt, &l, &c);
        double vl = 0, vcf = 0;
        if (s == PU_OK) {
            critic_values(j, T, j->vals);
            s = pu_ppo_value_loss(j->vals, j->old_v, j->ret, j->mask, n, o->value_clip, &vl, &vcf,
                                  j->dl);
        }
        if (s == PU_OK && !isfinite(vl))
            s = nonfinite(j, "value loss", vl);
        if (s == PU_OK) {
            const float *h = pu_tmodel_hidden(j->critic);
            memset(j->dh, 0, (size_t)(B * T * C) * sizeof(float));
            for (int64_t b = 0; b < B; b++)
                for (int64_t k = 0; k < j->n[b] - j->np[b]; k++) {
                    int64_t t = j->np[b] - 1 + k;
                    pu_value_head_bwd(j->v, h + (b * T + t) * C, &j->dl[b * R + k], 1, C, j->dv,
                                      j->dh + (b * T + t) * C);
                }
            pu_tmodel_backward_logp(j->critic, pool, NULL, j->dh);
            double gn = pu_adamw_step_x(&j->copt, j->critic, pool, clr, j->v, j->dv, j->vm, j->vv,
                                        C);
            if (!isfinite(gn))
                s = nonfinite(j, "critic gradient norm", gn);
            st->critic_gnorm = gn;
            st->value_loss += vl / (double)E;
            st->vclipfrac += vcf / (double)E;
        }
        if (s != PU_OK || !st->actor_trained)
            continue;
        /* actor: clipped policy loss (+ ptx) */
        pu_tmodel_zero_grad(j->actor);
        if (o->lora)
            pu_tmodel_set_dropout(j->actor, true, mix64(to->seed, j->step * E + e));
        s = pu_tmodel_forward(j->actor, pool, &bt, &l, &c);
        pu_ppo_metrics pm;
        memset(&pm, 0, sizeof pm);
        if (s == PU_OK) {
            gather(j, pu_tmodel_token_logps(j->actor), T, 1, j->lp);
            s = pu_ppo_policy_loss(j->lp, j->old_lp, j->adv, j->mask, n, o->clip_range, &pm,
                                   j->dl);
        }
        if (s == PU_OK && !isfinite(pm.loss))
            s = nonfinite(j, "policy loss", pm.loss);
        if (s == PU_OK) {
            float *dlt = j->dh; /* (B*T) scratch: dlogp per position */
            memset(dlt, 0, (size_t)(B * T) * sizeof(float));
            for (int64_t b = 0; b < B; b++)
                for (int64_t k = 0; k < j->n[b] - j->np[b]; k++)
                    dlt[b * T + j->np[b] - 1 + k] = j->dl[b * R + k];
            pu_tmodel_backward_logp(j->actor, pool, dlt, NULL);
        }
        if (s == PU_OK && j->ptx_b) {
            int64_t Tp = 1, nt = 0;
            pu_sft_batch(j->ptx_b, j->step * E + e, B, j->ptx_ids, j->ptx_tg, j->ptx_pos,
                         j->ptx_seg, &Tp, &nt);
            pu_tbatch pb = {.ids = j->ptx_ids, .targets = j->ptx_tg, .B = B, .T = Tp};
            s = pu_tmodel_forward(j->actor, pool, &pb, &l, &c);
            if (s == PU_OK && c > 0) {
                double pl = l / (double)c;
                if (!isfinite(pl))
                    s = nonfinite(j, "ptx loss", pl);
                else
                    pu_tmodel_backward(j->actor, pool, (float)(o->ptx_coef / (double)c));
                st->ptx_loss += pl / (double)E;
            }
        }
        if (s == PU_OK) {
            double gn = pu_adamw_step(&j->aopt, j->actor, pool, lr);
            if (!isfinite(gn))
                s = nonfinite(j, "actor gradient norm", gn);
            st->actor_gnorm = gn;
            st->policy_loss += pm.loss / (double)E;
            st->clipfrac += pm.clipfrac / (double)E;
            st->approx_kl += pm.approx_kl / (double)E;
        }
    }
    double t2 = pu_time_now();
    st->seconds = t2 - t0;
    st->gen_tps = t1 > t0 ? (double)st->gen_tokens / (t1 - t0) : 0;
    st->tps = t2 > t0 ? (double)st->gen_tokens / (t2 - t0) : 0;
    pu_free(pidx);
    return s;
}

/* ------------------------------------------------------------------------ */
/* setup                                                                    */

static pu_status load_reward_model(const char *path, const char *what, pu_model **out) {
    pu_status s = pu_model_load(path, out);
    if (s != PU_OK)
        return pu_err_prefix(s, "ppo: %s: ", what);
    if (!pu_model_is_reward(*out) || !pu_model_v_head(*out))
        return pu_err_set(PU_ERR_FORMAT,
                          "ppo: %s %s: not a reward model (no v_head.weight; expected an "
                          "InternLM2ForRewardModel directory as `puyu rm train` writes)",
                          what, path);
    return PU_OK;
}

static void job_free(ppo_job *j) {
    if (j->metrics)
        fclose(j->metrics);
    pu_engine_destroy(j->eng);
    pu_session_destroy(j->rm_sess);
    pu_tmodel_destroy(j->actor);
    pu_tmodel_destroy(j->ref);
    pu_tmodel_destroy(j->critic);
    pu_adamw_free(&j->aopt);
    pu_adamw_free(&j->copt);
    pu_sft_batcher_destroy(j->ptx_b);
    pu_sft_data_destroy(j->ptx);
    prompts_free(&j->prompts);
    pu_epoch_order_free(&j->order);
    float *fs[] = {j->v,    j->dv,   j->vm,  j->vv,  j->mask, j->old_lp, j->ref_lp, j->old_v,
                   j->rew,  j->adv,  j->ret, j->kl,  j->score, j->lp,    j->vals,   j->dl,
                   j->dh};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        pu_free(fs[i]);
    int32_t *is[] = {j->rows, j->ids, j->tg, j->ptx_ids, j->ptx_tg, j->ptx_pos, j->ptx_seg};
    for (size_t i = 0; i < sizeof is / sizeof is[0]; i++)
        pu_free(is[i]);
    pu_free(j->np);
    pu_free(j->n);
    pu_free(j->tok_path);
    pu_tok_destroy(j->tok);
    pu_tok_destroy(j->rm_tok);
    if (j->critic_src != j->rm)
        pu_model_destroy(j->critic_src);
    pu_model_destroy(j->rm);
    pu_model_destroy(j->roll);
    pu_model_destroy(j->refm);
    pu_model_destroy(j->base);
}

static pu_status setup(ppo_job *j) {
    const pu_ppo_train_opts *o = j->o;
    const pu_train_opts *to = &o->train;
    PU_TRY(pu_model_load(o->policy_dir, &j->base));
    const pu_config *pc = pu_model_config(j->base);
    if (pu_model_is_reward(j->base))
        return pu_err_set(PU_ERR_INVALID, "ppo: -m %s is a reward model, not a policy",
                          o->policy_dir);
    const char *tp = o->tok_path ? o->tok_path : pu_model_tokenizer_path(j->base);
    if (!tp)
        return pu_err_set(PU_ERR_INVALID, "ppo: %s: no tokenizer beside the model: pass -t",
                          o->policy_dir);
    j->tok_path = pu_strdup(tp);
    PU_TRY(pu_tok_load(tp, &j->tok));
    j->im_end = pu_sft_special_id(j->tok, "<|im_end|>");
    if (o->ref_dir) {
        pu_status rs = pu_model_load(o->ref_dir, &j->refm);
        if (rs != PU_OK)
            return pu_err_prefix(rs, "ppo: --ref: ");
        PU_TRY(same_shape(pc, pu_model_config(j->refm), "the reference", o->ref_dir));
    }
    PU_TRY(load_reward_model(o->rm_dir, "--reward-model", &j->rm));
    const char *rtp = pu_model_tokenizer_path(j->rm);
    PU_TRY(pu_tok_load(rtp ? rtp : tp, &j->rm_tok));
    const pu_config *rc = pu_model_config(j->rm);
    int64_t rt = o->reward_token >= 0       ? o->reward_token
                 : rc->reward_token_id >= 0 ? rc->reward_token_id
                                            : PU_REWARD_TOKEN_INTERNLM2;
    if (rt >= rc->vocab_size)
        return pu_err_set(PU_ERR_INVALID,
                          "ppo: the reward token %lld is outside the reward model's vocabulary "
                          "(%lld): pass --reward-token",
                          (long long)rt, (long long)rc->vocab_size);
    j->reward_token = (int32_t)rt;
    int64_t rctx = pu_config_ctx_limit(rc);
    PU_TRY(pu_session_create(j->rm, rctx > 0 ? rctx : 4096, j->pool, &j->rm_sess));
    if (o->critic_dir)
        PU_TRY(load_reward_model(o->critic_dir, "--critic", &j->critic_src));
    else
        j->critic_src = j->rm;
    const pu_config *cc = pu_model_config(j->critic_src);
    if (cc->vocab_size != pc->vocab_size)
        return pu_err_set(PU_ERR_INVALID,
                          "ppo: the critic (%s) has another shape than the policy: vocabulary "
                          "%lld vs %lld (the critic reads the policy's tokens; pass --critic "
                          "with the policy's vocabulary)",
                          o->critic_dir ? o->critic_dir : o->rm_dir, (long long)cc->vocab_size,
                          (long long)pc->vocab_size);
    int64_t ctx = pu_config_ctx_limit(pc) > 0 ? pu_config_ctx_limit(pc) : 4096;
    if (pu_config_ctx_limit(cc) > 0 && pu_config_ctx_limit(cc) < ctx)
        ctx = pu_config_ctx_limit(cc);
    PU_TRY(load_prompts(o, j->tok, ctx, &j->prompts));
    if (!to->quiet)
        pu_log_info("ppo: %lld prompts (%lld skipped), longest %lld tokens", (long long)j->prompts.n,
                    (long long)j->prompts.n_skipped, (long long)j->prompts.max_len);
    j->B = to->batch;
    j->R = o->max_new_tokens;
    j->Tmax = j->prompts.max_len + j->R;
    /* models */
    pu_tmodel_opts ao;
    pu_tmodel_opts_default(&ao);
    ao.recompute = o->recompute;
    if (o->lora)
        lora_opts(o, &ao, o->policy_dir);
    PU_TRY(pu_tmodel_create_from(j->base, j->B, j->Tmax, &ao, &j->actor));
    pu_tmodel_opts ro;
    pu_tmodel_opts_default(&ro);
    ro.freeze_base = true; /* borrowed views of the policy's (or --ref's) mapping */
    ro.forward_only = true;
    pu_status s = pu_tmodel_create_from(j->refm ? j->refm : j->base, j->B, j->Tmax, &ro, &j->ref);
    if (s != PU_OK)
        return pu_err_prefix(s, "ppo: the reference model: ");
    pu_tmodel_opts co;
    pu_tmodel_opts_default(&co);
    co.recompute = o->recompute;
    co.no_lm_head = true; /* the critic reads hidden states only */
    if (o->lora)
        lora_opts(o, &co, o->critic_dir ? o->critic_dir : o->rm_dir);
    s = pu_tmodel_create_from(j->critic_src, j->B, j->Tmax, &co, &j->critic);
    if (s != PU_OK)
        return pu_err_prefix(s, "ppo: the critic: ");
    j->C = cc->hidden_size;
    const pu_tensor *vh = pu_model_v_head(j->critic_src);
    j->v = pu_malloc((size_t)j->C * sizeof(float));
    memcpy(j->v, vh->data, (size_t)j->C * sizeof(float));
    j->dv = pu_calloc((size_t)j->C, sizeof(float));
    j->vm = pu_calloc((size_t)j->C, sizeof(float));
    j->vv = pu_calloc((size_t)j->C, sizeof(float));
    pu_adamw_init(&j->aopt, &to->adam, pu_tmodel_numel(j->actor));
    pu_adamw_init(&j->copt, &to->adam, pu_tmodel_numel(j->critic));
    /* the engine: over the base + the adapter per request, or over an F32
     * copy the actor's weights are written into before each rollout */
    const pu_model *em = j->base;
    if (!o->lora) {
        pu_config rc2 = *pc;
        rc2.tie_word_embeddings = false;
        rc2.rope_interleaved = false;
        PU_TRY(pu_model_init_random(&rc2, PU_DTYPE_F32, 1, 0.02f, true, j->pool, &j->roll));
        em = j->roll;
    }
    pu_engine_params ep = pu_engine_default_params();
    ep.max_batch = j->B;
    ep.ctx = j->Tmax;
    ep.block_size = 16;
    ep.kv_tokens = j->B * (j->Tmax + ep.block_size);
    ep.prefix_sharing = false; /* the weights change between steps */
    ep.n_threads = pu_pool_size(j->pool);
    PU_TRY(pu_engine_create(em, j->tok, &ep, &j->eng));
    /* ptx */
    if (o->n_ptx > 0) {
        pu_sft_load_opts lo = {.seq = j->Tmax, .skip_bad = o->skip_bad, .pool = j->pool};
        s = pu_sft_data_load(o->ptx_data, o->n_ptx, j->tok, &lo, &j->ptx);
        if (s != PU_OK)
            return pu_err_prefix(s, "ppo: --ptx-data: ");
        PU_TRY(pu_sft_batcher_create(j->ptx, j->Tmax, false, o->shuffle, to->seed, &j->ptx_b));
    }
    /* buffers */
    int64_t BT = j->B * j->Tmax, BR = j->B * j->R;
    j->rows = pu_calloc((size_t)BT, sizeof(int32_t));
    j->ids = pu_calloc((size_t)BT, sizeof(int32_t));
    j->tg = pu_calloc((size_t)BT, sizeof(int32_t));
    j->ptx_ids = pu_calloc((size_t)BT, sizeof(int32_t));
    j->ptx_tg = pu_calloc((size_t)BT, sizeof(int32_t));
    j->ptx_pos = pu_calloc((size_t)BT, sizeof(int32_t));
    j->ptx_seg = pu_calloc((size_t)BT, sizeof(int32_t));
    j->np = pu_calloc((size_t)j->B, sizeof(int64_t));
    j->n = pu_calloc((size_t)j->B, sizeof(int64_t));
    float **bufs[] = {&j->mask, &j->old_lp, &j->ref_lp, &j->old_v, &j->rew, &j->adv,
                      &j->ret,  &j->lp,     &j->vals,   &j->dl};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        *bufs[i] = pu_calloc((size_t)BR, sizeof(float));
    j->kl = pu_calloc((size_t)j->B, sizeof(float));
    j->score = pu_calloc((size_t)j->B, sizeof(float));
    j->dh = pu_calloc((size_t)(BT * j->C), sizeof(float));
    return PU_OK;
}

pu_status pu_ppo_train_run(const pu_ppo_train_opts *o, pu_pool *pool) {
    const pu_train_opts *to = &o->train;
    if (!o->policy_dir || !o->rm_dir || !to->out_dir || !o->prompts || o->n_prompts <= 0)
        return pu_err_set(PU_ERR_INVALID, "ppo: -m POLICY, --reward-model RM, --prompts FILE "
                                          "and --out DIR are required");
    if (to->steps <= 0 || to->batch <= 0 || o->max_new_tokens <= 0 || o->ppo_epochs <= 0)
        return pu_err_set(PU_ERR_INVALID, "ppo: --steps, --batch, --max-new-tokens and "
                                          "--ppo-epochs must be positive");
    if (!(to->lr > 0))
        return pu_err_set(PU_ERR_INVALID, "ppo: --lr must be positive");
    if (!(o->clip_range > 0))
        return pu_err_set(PU_ERR_INVALID, "ppo: --clip-range must be positive");
    if (pu_dp_size() > 1)
        return pu_err_set(PU_ERR_INVALID, "ppo: data parallel is not supported (run one process)");
    ppo_job j;
    memset(&j, 0, sizeof j);
    j.o = o;
    j.pool = pool;
    pu_status s = setup(&j);
    if (s == PU_OK)
        s = pu_mkdir_p(to->out_dir);
    if (s == PU_OK) { /* half-written checkpoints of a crashed save */
        DIR *d = opendir(to->out_dir);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (!strncmp(e->d_name, ".tmp_", 5)) {
                char *p = pu_path_join(to->out_dir, e->d_name);
                rm_ckpt_dir(p);
                pu_free(p);
            }
        if (d)
            closedir(d);
    }
    if (s == PU_OK && to->resume) {
        char ck[64];
        find_resume(to->out_dir, ck, sizeof ck);
        if (ck[0]) {
            s = load_ckpt(&j, ck);
            if (s == PU_OK && !to->quiet)
                pu_log_info("ppo: resumed from %s at step %lld; reward model %s", ck,
                            (long long)j.step, o->rm_dir);
        } else if (!to->quiet) {
            pu_log_info("ppo: no checkpoint in %s yet; starting from scratch", to->out_dir);
        }
    }
    char *mp = to->metrics_path ? pu_strdup(to->metrics_path)
                                : pu_path_join(to->out_dir, "metrics.jsonl");
    if (s == PU_OK)
        s = pu_train_truncate_metrics(mp, j.step);
    if (s == PU_OK) {
        j.metrics = fopen(mp, "a");
        if (!j.metrics)
            s = pu_err_set(PU_ERR_IO, "%s: cannot open the metrics file", mp);
    }
    if (s == PU_OK && !to->quiet)
        pu_log_info("ppo: %lld steps x %lld prompts, <= %lld new tokens, %lld PPO epochs, "
                    "critic warmup %lld, %s",
                    (long long)to->steps, (long long)j.B, (long long)j.R,
                    (long long)o->ppo_epochs, (long long)o->critic_warmup,
                    o->lora ? "LoRA (one mapping, adapters for actor and critic)" : "full");
    while (s == PU_OK && j.step < to->steps) {
        step_stats st;
        s = ppo_step(&j, &st);
        if (s != PU_OK)
            break;
        j.step++;
        fprintf(j.metrics,
                "{\"step\": %lld, \"reward\": %.9g, \"kl\": %.9g, \"policy_loss\": %.9g, "
                "\"value_loss\": %.9g, \"entropy\": %.9g, \"response_len\": %.9g, "
                "\"ptx_loss\": %.9g, \"clipfrac\": %.9g, \"approx_kl\": %.9g, "
                "\"value_clipfrac\": %.9g, \"actor_trained\": %s, \"actor_grad_norm\": %.9g, "
                "\"critic_grad_norm\": %.9g, \"gen_tokens\": %lld, \"gen_tokens_per_s\": %.6g, "
                "\"tokens_per_s\": %.6g, \"step_s\": %.6g}\n",
                (long long)j.step, st.reward, st.kl, st.policy_loss, st.value_loss, st.entropy,
                st.response_len, st.ptx_loss, st.clipfrac, st.approx_kl, st.vclipfrac,
                st.actor_trained ? "true" : "false", st.actor_gnorm, st.critic_gnorm,
                (long long)st.gen_tokens, st.gen_tps, st.tps, st.seconds);
        fflush(j.metrics);
        if (!to->quiet)
            pu_log_info("ppo: step %lld/%lld reward %.4f kl %.4f policy %.4f value %.4f "
                        "entropy %.3f len %.1f %.1f tok/s",
                        (long long)j.step, (long long)to->steps, st.reward, st.kl,
                        st.policy_loss, st.value_loss, st.entropy, st.response_len, st.tps);
        if ((to->save_every > 0 && j.step % to->save_every == 0) || j.step == to->steps)
            s = save_ckpt(&j);
        if (s == PU_OK && to->kill_at > 0 && j.step == to->kill_at)
            raise(SIGKILL); /* testing: a crash between checkpoints */
    }
    if (s == PU_OK)
        s = write_final(&j);
    pu_free(mp);
    job_free(&j);
    return s;
}
