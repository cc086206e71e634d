/*
 * reward.c — InternLM2 reward models (HF InternLM2ForRewardModel): the value
 * head read at the reward token, and writing such a directory from an
 * ordinary InternLM2 directory plus a head.
 *
 * The layout (internlm2-*-reward): config.json with architectures
 * ["InternLM2ForRewardModel"] and reward_token_id; tensors model.* (the
 * InternLM2 body, final norm included) and v_head.weight (1, C) without
 * bias; no output.weight. The loader (safetensors.c) binds v_head; the score
 * is v_head . h where h is the final-norm hidden state of the last position
 * (HF gathers position attention_mask.cumsum().argmax(), the last real
 * token, which get_score() makes the reward token).
 *
 * Writing copies every tensor but the LM head byte for byte in its stored
 * dtype (mmap -> one streamed, atomically renamed model.safetensors), larger
 * dtypes first so every tensor stays aligned, then adds v_head.weight F32.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/loaders.h"

bool pu_model_is_reward(const pu_model *m) {
    return m->w.v_head.data != NULL;
}

const pu_tensor *pu_model_v_head(const pu_model *m) {
    return m->w.v_head.data ? &m->w.v_head : NULL;
}

pu_status pu_model_reward(const pu_model *m, pu_session *s, const int32_t *ids, int64_t n,
                          float *reward) {
    if (!pu_model_is_reward(m))
        return pu_err_set(PU_ERR_INVALID,
                          "%s: not a reward model (no v_head; config.json architectures must be "
                          "[\"InternLM2ForRewardModel\"])",
                          m->path ? m->path : "model");
    if (n <= 0)
        return pu_err_set(PU_ERR_INVALID, "reward: no tokens given");
    int64_t C = m->cfg.hidden_size;
    float *h = pu_try_malloc((size_t)n * (size_t)C * sizeof(float));
    if (!h)
        return pu_err_set(PU_ERR_NOMEM, "reward: %lld hidden states of %lld floats", (long long)n,
                          (long long)C);
    pu_session_reset(s);
    pu_status st = pu_session_eval_ex(s, ids, n, NULL, false, h);
    if (st == PU_OK) {
        const float *v = m->w.v_head.data, *last = h + (n - 1) * C;
        double acc = 0;
        for (int64_t i = 0; i < C; i++)
            acc += (double)v[i] * last[i];
        *reward = (float)acc;
    }
    pu_free(h);
    return st;
}

/* ------------------------------------------------------------------------ */
/* writing                                                                  */

static const char *dtype_name(int dt) {
    switch (dt) {
    case PU_DTYPE_F32: return "F32";
    case PU_DTYPE_F16: return "F16";
    case PU_DTYPE_BF16: return "BF16";
    default: return NULL;
    }
}

typedef struct {
    const pu_st_tensor *t;
    const uint8_t *data; /* the tensor's bytes */
    int elsize;
} out_tensor;

static int cmp_out(const void *a, const void *b) {
    const out_tensor *x = a, *y = b;
    if (x->elsize != y->elsize)
        return y->elsize - x->elsize;
    return strcmp(x->t->name, y->t->name);
}

static bool is_head(const char *name) {
    return !strcmp(name, "output.weight") || !strcmp(name, "lm_head.weight") ||
           !strcmp(name, "v_head.weight");
}

/* the shard file names of an index (owned) */
static pu_status index_shards(const char *idx, char ***names, int *n) {
    json_t *j = NULL;
    *names = NULL;
    *n = 0;
    PU_TRY(pu_json_load_file(idx, &j));
    const json_t *wm = json_object_get(j, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(j);
        return pu_err_set(PU_ERR_FORMAT, "%s: missing object 'weight_map'", idx);
    }
    char **v = pu_calloc(json_object_size(wm) + 1, sizeof *v);
    int k = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)wm, key, val) {
        const char *f = json_string_value(val);
        if (!f || !f[0] || f[0] == '.' || strchr(f, '/')) {
            for (int i = 0; i < k; i++)
                pu_free(v[i]);
            pu_free(v);
            json_decref(j);
            return pu_err_set(PU_ERR_FORMAT, "%s: weight_map['%s']: expected a shard file name",
                              idx, key);
        }
        bool seen = false;
        for (int i = 0; i < k && !seen; i++)
            seen = !strcmp(v[i], f);
        if (!seen)
            v[k++] = pu_strdup(f);
    }
    json_decref(j);
    *names = v;
    *n = k;
    return PU_OK;
}

static pu_status write_config(const char *model_dir, int64_t C, int64_t reward_token_id,
                              const char *out_dir) {
    char *src = pu_path_join(model_dir, "config.json");
    pu_config cfg;
    pu_status st = pu_config_load(src, &cfg);
    json_t *j = NULL;
    if (st == PU_OK && cfg.hidden_size != C)
        st = pu_err_set(PU_ERR_INVALID, "%s: hidden_size is %lld but the value head has %lld", src,
                        (long long)cfg.hidden_size, (long long)C);
    if (st == PU_OK && strcmp(cfg.model_type, "internlm2") != 0)
        st = pu_err_set(PU_ERR_UNSUPPORTED,
                        "%s: model_type \"%s\": reward models are InternLM2 (model_type "
                        "\"internlm2\")",
                        src, cfg.model_type);
    if (st == PU_OK && (reward_token_id < 0 || reward_token_id >= cfg.vocab_size))
        st = pu_err_set(PU_ERR_RANGE, "reward_token_id %lld is outside the vocabulary [0, %lld)",
                        (long long)reward_token_id, (long long)cfg.vocab_size);
    if (st == PU_OK)
        st = pu_json_load_file(src, &j);
    pu_free(src);
    if (st != PU_OK)
        return st;
    json_object_set_new(j, "architectures", json_pack("[s]", "InternLM2ForRewardModel"));
    json_object_set_new(j, "reward_token_id", json_integer(reward_token_id));
    json_t *am = json_object_get(j, "auto_map");
    if (json_is_object(am)) {
        json_object_set_new(am, "AutoModel",
                            json_string("modeling_internlm2.InternLM2ForRewardModel"));
        json_object_del(am, "AutoModelForCausalLM");
    }
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text)
        return pu_err_set(PU_ERR_NOMEM, "config.json: cannot serialise");
    char *dst = pu_path_join(out_dir, "config.json");
    pu_str t = {0};
    pu_str_puts(&t, text);
    pu_str_putc(&t, '\n');
    free(text);
    st = pu_file_write_atomic(dst, t.p, t.len);
    pu_str_free(&t);
    pu_free(dst);
    return st;
}

static pu_status copy_file(const char *src, const char *dst) {
    char *buf = NULL;
    size_t len = 0;
    PU_TRY(pu_file_read_all(src, &buf, &len));
    pu_status st = pu_file_write_atomic(dst, buf, len);
    pu_free(buf);
    return st;
}

pu_status pu_model_write_reward_dir(const char *model_dir, const float *v_head, int64_t C,
                                    int64_t reward_token_id, const char *out_dir) {
    for (int64_t i = 0; i < C; i++)
        if (!isfinite(v_head[i]))
            return pu_err_set(PU_ERR_INVALID, "v_head[%lld] is not finite", (long long)i);
    char *idx = pu_path_join(model_dir, "model.safetensors.index.json");
    char **shards = NULL;
    int n_shards = 0;
    pu_status st = PU_OK;
    bool same_dir = strcmp(model_dir, out_dir) == 0;
    if (pu_file_exists(idx)) {
        st = same_dir ? pu_err_set(PU_ERR_UNSUPPORTED,
                                   "%s: writing a reward model over a sharded directory in place "
                                   "is not supported (give another output directory)",
                                   model_dir)
                      : index_shards(idx, &shards, &n_shards);
    } else {
        shards = pu_calloc(1, sizeof *shards);
        shards[0] = pu_strdup("model.safetensors");
        n_shards = 1;
    }
    pu_free(idx);
    if (st != PU_OK)
        return st;
    pu_mmap *maps = pu_calloc((size_t)n_shards, sizeof *maps);
    pu_st_file *files = pu_calloc((size_t)n_shards, sizeof *files);
    out_tensor *ot = NULL;
    int64_t n_ot = 0;
    json_t *hdr = NULL;
    pu_atomic_file af = {0};
    char *out_path = NULL;
    st = pu_mkdir_p(out_dir);
    for (int k = 0; st == PU_OK && k < n_shards; k++) {
        char *p = pu_path_join(model_dir, shards[k]);
        st = pu_mmap_open(&maps[k], p);
        if (st == PU_OK)
            st = pu_safetensors_parse_(maps[k].data, maps[k].size, p, &files[k]);
        pu_free(p);
    }
    if (st == PU_OK)
        st = write_config(model_dir, C, reward_token_id, out_dir);
    if (st != PU_OK)
        goto done;
    for (int k = 0; k < n_shards; k++)
        n_ot += files[k].n;
    ot = pu_calloc((size_t)n_ot + 1, sizeof *ot);
    n_ot = 0;
    for (int k = 0; k < n_shards; k++)
        for (int64_t i = 0; i < files[k].n; i++) {
            const pu_st_tensor *t = &files[k].t[i];
            if (is_head(t->name) || strstr(t->name, "rotary_emb"))
                continue;
            if (!dtype_name(t->dtype)) {
                st = pu_err_set(PU_ERR_UNSUPPORTED, "%s/%s: tensor '%s': dtype %s (F32/F16/BF16)",
                                model_dir, shards[k], t->name, t->dtype_name);
                goto done;
            }
            ot[n_ot++] =
                (out_tensor){t, files[k].data + t->begin, (int)pu_dtype_size((pu_dtype)t->dtype)};
        }
    qsort(ot, (size_t)n_ot, sizeof *ot, cmp_out);
    /* header */
    hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    json_t *vh = json_pack("{s:s,s:[i,I],s:[I,I]}", "dtype", "F32", "shape", 1, (json_int_t)C,
                           "data_offsets", (json_int_t)0, (json_int_t)(C * 4));
    json_object_set_new(hdr, "v_head.weight", vh);
    off = (uint64_t)C * 4;
    for (int64_t i = 0; i < n_ot; i++) {
        const pu_st_tensor *t = ot[i].t;
        json_t *sh = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(sh, json_integer(t->shape[d]));
        uint64_t nb = t->end - t->begin;
        json_object_set_new(hdr, t->name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", dtype_name(t->dtype), "shape",
                                      sh, "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
        off += nb;
    }
    char *htxt = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    pu_str h = {0};
    pu_str_puts(&h, htxt);
    free(htxt);
    while (h.len % 8)
        pu_str_putc(&h, ' ');
    out_path = pu_path_join(out_dir, "model.safetensors");
    st = pu_atomic_open(&af, out_path);
    if (st == PU_OK) {
        uint64_t hl = h.len;
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)(hl >> (8 * i));
        /* v_head is written from the caller's floats (little-endian host) */
        bool ok = fwrite(le, 1, 8, af.f) == 8 && fwrite(h.p, 1, h.len, af.f) == h.len &&
                  fwrite(v_head, 4, (size_t)C, af.f) == (size_t)C;
        for (int64_t i = 0; ok && i < n_ot; i++) {
            size_t nb = (size_t)(ot[i].t->end - ot[i].t->begin);
            ok = fwrite(ot[i].data, 1, nb, af.f) == nb;
        }
        st = ok ? pu_atomic_commit(&af) : pu_err_set(PU_ERR_IO, "%s: write failed", out_path);
        if (st != PU_OK)
            pu_atomic_abort(&af);
    }
    pu_str_free(&h);
    if (st == PU_OK && !same_dir) {
        static const char *const tok_files[] = {"tokenizer.model", "tokenizer.json",
                                                "tokenizer_config.json", "special_tokens_map.json",
                                                "generation_config.json"};
        for (size_t i = 0; st == PU_OK && i < sizeof tok_files / sizeof tok_files[0]; i++) {
            char *a = pu_path_join(model_dir, tok_files[i]),
                 *b = pu_path_join(out_dir, tok_files[i]);
            if (pu_file_exists(a))
                st = copy_file(a, b);
            pu_free(a);
            pu_free(b);
        }
    }
done:
    if (hdr)
        json_decref(hdr);
    pu_free(out_path);
    pu_free(ot);
    for (int k = 0; k < n_shards; k++) {
        pu_safetensors_free_(&files[k]);
        pu_mmap_close(&maps[k]);
        pu_free(shards[k]);
    }
    pu_free(files);
    pu_free(maps);
    pu_free(shards);
    return st;
}
