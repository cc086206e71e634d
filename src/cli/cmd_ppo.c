/*
 * cmd_ppo.c — `puyu ppo`: online RLHF, PPO of a policy against a frozen
 * reward model. Parsing and printing only; the work is pu_ppo_train_run
 * (src/train/ppo.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cmds.h"
#include "cli/common.h"
#include "cli/opts.h"
#include "puyu/pu_align.h"
#include "puyu/pu_lora.h"

int pu_cmd_ppo(int argc, char **argv) {
    pu_ppo_train_opts d;
    pu_ppo_train_opts_default(&d);
    pu_train_opts *o = &d.train;
    const char *prompts = NULL, *ptx = NULL, *targets = NULL, *whiten = "openrlhf";
    int64_t seed = 1, kill_at = 0;
    double wd = o->adam.weight_decay, clip = o->adam.clip, b1 = o->adam.beta1, b2 = o->adam.beta2;
    double eps = o->adam.eps, temp = d.temperature, top_p = d.top_p;
    bool resume = false, quiet = false, no_shuffle = false;
    const pu_opt opts[] = {
        {"model", 'm', PU_OPT_STRING, &d.policy_dir, "POLICY",
         "the model to align (actor; the frozen reference is its initial state)", 0, 0},
        {"reward-model", 0, PU_OPT_STRING, &d.rm_dir, "RM",
         "frozen reward model (InternLM2ForRewardModel directory, e.g. from `puyu rm train`); "
         "may change on --resume",
         0, 0},
        {"prompts", 0, PU_OPT_STRING, &prompts, "FILE[,FILE2...]",
         "prompts JSONL: {\"messages\": [...]} (trailing assistant turns dropped), "
         "{\"prompt\": \"text\" | [messages]} or preference records; optional "
         "\"condition\" (reward model only)",
         0, 0},
        {"out", 0, PU_OPT_STRING, &o->out_dir, "DIR",
         "checkpoints, metrics and final/ (the aligned actor) go here", 0, 0},
        {"tokenizer", 't', PU_OPT_STRING, &d.tok_path, "TOK",
         "the policy's tokenizer (default: the model's)", 0, 0},
        {"ref", 0, PU_OPT_STRING, &d.ref_dir, "REF",
         "frozen reference (default: the initial policy, sharing its memory map)", 0, 0},
        {"critic", 0, PU_OPT_STRING, &d.critic_dir, "CRITIC",
         "reward-model directory the critic starts from (default: --reward-model)", 0, 0},
        {"steps", 0, PU_OPT_INT, &o->steps, "N", "PPO iterations (one rollout batch each)", 1,
         1e12},
        {"batch", 0, PU_OPT_INT, &o->batch, "B", "prompts (rollouts) per iteration", 1, 1e6},
        {"max-new-tokens", 0, PU_OPT_INT, &d.max_new_tokens, "N", "longest response", 1, 1e6},
        {"kl-coef", 0, PU_OPT_DOUBLE, &d.kl_coef, "C",
         "per-token KL penalty: r_t = -C (logp - ref_logp)", 0, 1e6},
        {"ptx-data", 0, PU_OPT_STRING, &ptx, "SFT.jsonl[,...]",
         "SFT data whose cross-entropy is mixed into the actor loss", 0, 0},
        {"ptx-coef", 0, PU_OPT_DOUBLE, &d.ptx_coef, "W", "weight of the ptx loss", 0, 1e6},
        {"critic-warmup", 0, PU_OPT_INT, &d.critic_warmup, "K",
         "the first K iterations train only the critic", 0, 1e12},
        {"critic-lr", 0, PU_OPT_DOUBLE, &d.critic_lr, "LR",
         "critic learning rate (default: --lr)", 0, 10},
        {"gamma", 0, PU_OPT_DOUBLE, &d.gamma, "G", "GAE discount", 0, 1},
        {"lam", 0, PU_OPT_DOUBLE, &d.lam, "L", "GAE lambda", 0, 1},
        {"ppo-epochs", 0, PU_OPT_INT, &d.ppo_epochs, "E",
         "optimisation passes over each rollout batch", 1, 1e6},
        {"clip-range", 0, PU_OPT_DOUBLE, &d.clip_range, "EPS", "policy ratio clip", 0, 10},
        {"value-clip", 0, PU_OPT_DOUBLE, &d.value_clip, "C",
         "value clip around the old values (0 = unclipped)", 0, 1e6},
        {"whiten", 0, PU_OPT_STRING, &whiten, "openrlhf|trl|none",
         "advantage normalisation (openrlhf: biased variance, rsqrt(max(var, 1e-8)))", 0,
         0},
        {"temp", 0, PU_OPT_DOUBLE, &temp, "T", "rollout sampling temperature (0 = greedy)", 0,
         100},
        {"top-p", 0, PU_OPT_DOUBLE, &top_p, "P", "rollout nucleus sampling", 0, 1},
        {"reward-token", 0, PU_OPT_INT, &d.reward_token, "ID",
         "reward token id (default: the RM's reward_token_id, else 92527)", 0, 1e9},
        {"condition", 0, PU_OPT_STRING, &d.condition, "NAME|TEXT",
         "reward-model condition (system prompt) for prompts without one", 0, 0},
        {"skip-bad", 0, PU_OPT_FLAG, &d.skip_bad, NULL,
         "skip bad prompts (and count them) instead of failing", 0, 0},
        {"no-shuffle", 0, PU_OPT_FLAG, &no_shuffle, NULL, "prompts in file order, wrapping", 0,
         0},
        {"lr", 0, PU_OPT_DOUBLE, &o->lr, "LR", "actor peak learning rate", 0, 10},
        {"seed", 0, PU_OPT_INT, &seed, "S", "seed of prompt order, sampling and LoRA init", 0,
         9.2e18},
        {"metrics", 0, PU_OPT_STRING, &o->metrics_path, "FILE",
         "metrics JSONL (default OUT/metrics.jsonl)", 0, 0},
        {"warmup", 0, PU_OPT_INT, &o->warmup, "N",
         "linear lr warmup steps (default min(100, steps/10))", 0, 1e12},
        {"min-lr", 0, PU_OPT_DOUBLE, &o->min_lr, "LR", "floor of the cosine decay (default lr/10)",
         0, 10},
        {"weight-decay", 0, PU_OPT_DOUBLE, &wd, "WD", "AdamW decoupled weight decay", 0, 10},
        {"beta1", 0, PU_OPT_DOUBLE, &b1, "B1", "AdamW beta1", 0, 1},
        {"beta2", 0, PU_OPT_DOUBLE, &b2, "B2", "AdamW beta2", 0, 1},
        {"adam-eps", 0, PU_OPT_DOUBLE, &eps, "EPS", "AdamW epsilon", 0, 1},
        {"clip", 0, PU_OPT_DOUBLE, &clip, "NORM", "global gradient-norm clip (0 = off)", 0, 1e9},
        {"save-every", 0, PU_OPT_INT, &o->save_every, "K",
         "checkpoint every K iterations (always at the end)", 0, 1e12},
        {"keep", 0, PU_OPT_INT, &o->keep, "K", "keep the last K checkpoints", 1, 1e9},
        {"resume", 0, PU_OPT_FLAG, &resume, NULL,
         "continue from OUT/latest (a new --reward-model is allowed: COOL's online rounds)", 0,
         0},
        {"lora", 0, PU_OPT_FLAG, &d.lora, NULL,
         "LoRA for actor and critic: adapters over the memory-mapped policy / reward model; the "
         "reference is the base without the adapter; rollouts apply the adapter unmerged",
         0, 0},
        {"lora-r", 0, PU_OPT_INT, &d.lora_r, "R", "adapter rank", 1, 4096},
        {"lora-alpha", 0, PU_OPT_DOUBLE, &d.lora_alpha, "A", "adapter scale alpha / r", -1e6, 1e6},
        {"lora-dropout", 0, PU_OPT_DOUBLE, &d.lora_dropout, "P",
         "dropout on the adapter inputs while training (off for the experience pass)", 0, 0.999},
        {"lora-targets", 0, PU_OPT_STRING, &targets, "LIST",
         "adapted linears: wqkv,wo,w1,w2,w3[,output] (default wqkv,wo,w1,w2,w3)", 0, 0},
        {"lora-rslora", 0, PU_OPT_FLAG, &d.lora_rslora, NULL,
         "rank-stabilised scale alpha / sqrt(r)", 0, 0},
        {"recompute", 0, PU_OPT_FLAG, &d.recompute, NULL, "activation checkpointing", 0, 0},
        {"quiet", 'q', PU_OPT_FLAG, &quiet, NULL, "no progress output", 0, 0},
        {"kill-at-step", 0, PU_OPT_INT, &kill_at, "N",
         "testing: SIGKILL the process right after iteration N", 0, 1e12},
        PU_OPT_END,
    };
    const pu_cmd_spec spec = {
        "puyu ppo",
        "-m POLICY --reward-model RM --prompts PROMPTS.jsonl --out DIR --steps N --batch B "
        "--max-new-tokens N [--kl-coef 0.01] [--ptx-data SFT.jsonl --ptx-coef 0.5] [--critic "
        "CRITIC] [--lora ...]",
        "Online RLHF with PPO (OpenRLHF formulation). Each iteration: B rollouts by the batching\n"
        "engine from prompts rendered as `puyu sft` renders a chat; experience = actor and\n"
        "reference log-probs, critic values (the reward model's body + v_head), reward score;\n"
        "r_t = -kl_coef (logp - ref_logp), + score at the last token; GAE (gamma, lam);\n"
        "advantages whitened; --ppo-epochs passes of clipped value loss (critic) and clipped\n"
        "policy loss + ptx_coef x SFT cross-entropy (actor, after --critic-warmup iterations).\n"
        "Metrics per iteration: reward, kl, policy_loss, value_loss, entropy, response_len,\n"
        "tokens/s. Checkpoints actor/ + critic/ + optimizer state; OUT/final/ = the actor."};
    int rc = pu_opts_parse(&spec, opts, argc, argv, NULL, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (!d.policy_dir || !d.rm_dir || !prompts || !o->out_dir || o->steps <= 0) {
        fprintf(stderr, "puyu ppo: need -m POLICY, --reward-model RM, --prompts FILE, --out DIR "
                        "and --steps N (see --help)\n");
        return 2;
    }
    if (!strcmp(whiten, "openrlhf"))
        d.whiten = PU_WHITEN_OPENRLHF;
    else if (!strcmp(whiten, "trl"))
        d.whiten = PU_WHITEN_TRL;
    else if (!strcmp(whiten, "none"))
        d.whiten = PU_WHITEN_NONE;
    else {
        fprintf(stderr, "puyu ppo: --whiten \"%s\": expected openrlhf, trl or none\n", whiten);
        return 2;
    }
    if (targets && pu_lora_parse_targets(targets, &d.lora_targets) != PU_OK) {
        fprintf(stderr, "puyu ppo: --lora-targets: %s\n", pu_err_msg());
        return 2;
    }
    int np = 0, nx = 0;
    char **pl = pu_cli_split_list(prompts, &np), **xl = pu_cli_split_list(ptx, &nx);
    d.prompts = (const char *const *)pl;
    d.n_prompts = np;
    d.ptx_data = (const char *const *)xl;
    d.n_ptx = nx;
    d.shuffle = !no_shuffle;
    d.temperature = (float)temp;
    d.top_p = (float)top_p;
    o->seed = (uint64_t)seed;
    o->kill_at = kill_at;
    o->resume = resume;
    o->quiet = quiet;
    o->adam.weight_decay = wd;
    o->adam.clip = clip;
    o->adam.beta1 = b1;
    o->adam.beta2 = b2;
    o->adam.eps = eps;
    pu_pool *pool = pu_pool_create(0);
    pu_status s = pu_ppo_train_run(&d, pool);
    pu_pool_destroy(pool);
    pu_cli_free_list(pl, np);
    pu_cli_free_list(xl, nx);
    if (s != PU_OK) {
        fprintf(stderr, "puyu ppo: error: %s\n", pu_err_msg());
        return 1;
    }
    return 0;
}
