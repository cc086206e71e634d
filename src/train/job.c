/*
 * job.c — pieces every fine-tuning job of pu_train_loop needs (sft.c,
 * rm_train.c, dpo.c): the base model with its context and tokenizer, the
 * training model's options, OUT/final/ (see train_impl.h).
 */
#include <stdio.h>
#include <string.h>

#include "train/train_impl.h"

pu_status pu_train_model_opts(pu_tmodel_opts *to, const pu_train_opts *t, bool recompute) {
    pu_tmodel_opts_default(to);
    to->attn = t->attn;
    to->precision = t->precision;
    to->ce_chunk = t->ce_chunk;
    PU_TRY(pu_tmodel_opts_set_recompute(to, t->recompute));
    to->recompute = to->recompute || recompute;
    return PU_OK;
}

void pu_tmodel_opts_lora(pu_tmodel_opts *to, int64_t r, double alpha, double dropout, bool rslora,
                         uint32_t targets, uint64_t seed, const char *base_name) {
    to->freeze_base = true;
    to->lora_r = r;
    to->lora_alpha = alpha;
    to->lora_dropout = dropout;
    to->lora_rslora = rslora;
    to->lora_targets = targets;
    to->seed = seed;
    to->base_name = base_name;
}

char *pu_train_tokenizer_file(const char *p) {
    if (!p)
        return NULL;
    if (pu_dir_exists(p)) {
        static const char *const names[] = {"tokenizer.model", "tokenizer.json"};
        for (int i = 0; i < 2; i++) {
            char *f = pu_path_join(p, names[i]);
            if (pu_file_exists(f))
                return f;
            pu_free(f);
        }
        return NULL;
    }
    const char *ext = strrchr(p, '.');
    if (ext && (!strcmp(ext, ".model") || !strcmp(ext, ".json")))
        return pu_strdup(p);
    return NULL;
}

pu_status pu_train_copy_tokenizer(const char *tok_file, const char *dir) {
    if (!tok_file)
        return PU_OK;
    const char *ext = strrchr(tok_file, '.');
    char *dst =
        pu_path_join(dir, ext && !strcmp(ext, ".json") ? "tokenizer.json" : "tokenizer.model");
    pu_status s = pu_file_exists(dst) ? PU_OK : pu_train_copy_file(tok_file, dst);
    pu_free(dst);
    return s;
}

pu_status pu_train_open_base(const char *dir, const char *tok_path, int64_t seq, const char *label,
                             pu_model **m, pu_tok **tok, int64_t *seq_out, char **tok_file) {
    *m = NULL;
    *tok = NULL;
    if (tok_file)
        *tok_file = NULL;
    PU_TRY(pu_model_load(dir, m));
    const pu_config *c = pu_model_config(*m);
    int64_t ctx = c->max_position_embeddings;
    if (seq_out)
        *seq_out = seq > 0 ? seq : ctx > 0 ? ctx : 4096;
    if (ctx > 0 && seq > ctx)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: --seq %lld exceeds the model's context (%s/config.json: "
                          "max_position_embeddings %lld)",
                          label, (long long)seq, dir, (long long)ctx);
    const char *tp = tok_path ? tok_path : pu_model_tokenizer_path(*m);
    if (!tp)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: %s: the model has no tokenizer beside it: pass -t TOKENIZER", label,
                          dir);
    PU_TRY(pu_tok_load(tp, tok));
    if (pu_tok_n_vocab(*tok) > c->vocab_size)
        return pu_err_set(PU_ERR_INVALID,
                          "%s: the tokenizer %s has %lld tokens but the model's vocab_size is "
                          "%lld (%s/config.json)",
                          label, tp, (long long)pu_tok_n_vocab(*tok), (long long)c->vocab_size,
                          dir);
    if (tok_file)
        *tok_file = pu_train_tokenizer_file(tp);
    return PU_OK;
}

pu_status pu_train_write_final(pu_tmodel *m, const char *out_dir, const char *tok_file,
                               const char *label, bool quiet) {
    char *dir = pu_path_join(out_dir, "final"), *tmp = pu_path_join(out_dir, ".tmp_final");
    pu_train_rm_flat_dir(tmp);
    pu_status s = pu_tmodel_save_dir(m, tmp);
    if (s == PU_OK)
        s = pu_train_copy_tokenizer(tok_file, tmp);
    if (s == PU_OK) {
        pu_train_rm_flat_dir(dir);
        if (rename(tmp, dir) != 0)
            s = pu_err_set(PU_ERR_IO, "%s: cannot rename the final model into place", dir);
    }
    if (s != PU_OK) {
        pu_train_rm_flat_dir(tmp);
        pu_err_prefix(s, "writing %s: ", dir);
    } else if (!quiet) {
        pu_log_info("%s: final model in %s", label, dir);
    }
    pu_free(dir);
    pu_free(tmp);
    return s;
}
