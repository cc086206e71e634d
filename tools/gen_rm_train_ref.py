#!/usr/bin/python3
"""gen_rm_train_ref.py — PyTorch reference for `puyu rm train`
(tests/test_rm_train.c).

Writes tests/golden/rm_train/:
  base/              a tiny random InternLM2ForCausalLM directory (config.json,
                     model.safetensors F32, tokenizer.model = tests/golden/tok/tiny_bpe.model)
  data.jsonl         6 XTuner preference pairs
  ref.json           token ids of every side (as HF InternLM2ForRewardModel.get_score
                     builds them: chat template, BOS, the reward token 3 appended),
                     the loss and gradients at the initial body with a random v_head
                     (focal + 0.01 log barrier), the losses of 3 AdamW steps from the
                     zero head (batch 2 pairs, file order), and the rewards of every
                     pair under the trained model.

The body is tools/gen_train_ref.py's reference forward (float64) with the LM
head replaced by the identity, so it returns the final-norm hidden states;
reward = v_head . h[last]. Loss (XTuner InternLM2 reward loss): d = rc - rr,
focal = sum((1 - 2 relu(sigmoid(d) - 0.5))^2 * -logsigmoid(d)) / N, barrier =
sum over the 2N rewards r (clamped to [-5+1e-3, 5-1e-3]) of -log(5 - r) -
log(r + 5), / N; loss = focal + 0.01 barrier. AdamW: torch.optim.AdamW
(foreach=False) float64, weight decay on the layer matrices and v_head (not
norms, not the token embedding), clip_grad_norm_, pu_lr_at's schedule.

Usage: /usr/bin/python3 tools/gen_rm_train_ref.py
"""
import json
import os
import shutil
import sys

import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as G  # noqa: E402
import gen_train_ref as gt  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "rm_train")
TOK = os.path.join(ROOT, "tests", "golden", "tok", "tiny_bpe.model")
RT = 3
N, STEPS = 2, 3
OPT = dict(lr=2e-2, min_lr=2e-3, warmup=1, beta1=0.9, beta2=0.95, eps=1e-8,
           weight_decay=0.1, clip=1.0)
GRAD_NAMES = ["model.layers.0.attention.wqkv.weight", "model.layers.1.feed_forward.w2.weight",
              "model.norm.weight", "model.layers.0.attention_norm.weight"]


def render(msgs):
    return "".join("<|im_start|>%s\n%s<|im_end|>\n" % (m["role"], m["content"]) for m in msgs)


def pairs():
    P = [("What is 2+2?", "2+2 is 4.", "It is 5."),
         ("Say hello", "Hello! Nice to meet you.", "no"),
         ("Name a color", "Blue is a color.", "A dog."),
         ("Is fire hot?", "Yes, fire is hot.", "Fire is cold."),
         ("Count to three", "1, 2, 3.", "3 2 1 0"),
         ("Translate 你好", "你好 means hello.", "I do not know.")]
    return [{"prompt": [{"role": "user", "content": q}], "chosen": c, "rejected": r}
            for q, c, r in P]


def loss_fn(rc, rr):
    d = rc - rr
    p = torch.sigmoid(d)
    w = (1 - 2 * torch.relu(p - 0.5)) ** 2
    focal = (w * -torch.nn.functional.logsigmoid(d)).sum() / len(rc)
    r = torch.cat([rc, rr]).clamp(-5 + 1e-3, 5 - 1e-3)
    bar = (-torch.log(5 - r) - torch.log(r + 5)).sum() / len(rc)
    return focal + 0.01 * bar, d


def rewards(cfg, P, v, seqs):
    out = []
    for ids in seqs:
        h = gt.forward(cfg, P, ids)
        out.append(h[-1] @ v)
    return torch.stack(out)


def main():
    fx = dict(G.BASE, V=600, C=32, F=40, H=4, Hkv=2, L=2, eps=1e-6, theta=1000000, dtype="F32")
    cfg = G.make_config(fx)
    cfg["max_position_embeddings"] = 128
    W = G.make_weights(cfg, 5151, "F32")
    C = cfg["hidden_size"]
    names = G.tensor_names(cfg)
    os.makedirs(os.path.join(OUT, "base"), exist_ok=True)
    with open(os.path.join(OUT, "base", "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(OUT, "base", "model.safetensors"), "wb") as f:
        f.write(G.safetensors_bytes([(n, "F32", tuple(W[n].shape), G.tensor_bytes(W[n], "F32"))
                                     for n in names]))
    shutil.copyfile(TOK, os.path.join(OUT, "base", "tokenizer.model"))
    recs = pairs()
    with open(os.path.join(OUT, "data.jsonl"), "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    sp = spm.SentencePieceProcessor(model_file=TOK)
    seqs = []
    for r in recs:
        for side in ("chosen", "rejected"):
            conv = r["prompt"] + [{"role": "assistant", "content": r[side]}]
            seqs.append([cfg["bos_token_id"]] + sp.encode(render(conv)) + [RT])

    cfg.setdefault("rope_scaling", None)
    body = [n for n in names if n != "output.weight"]
    P = {n: W[n].double().clone().requires_grad_(True) for n in body}
    P["output.weight"] = torch.eye(C, dtype=torch.float64)  # forward() returns hidden states

    # loss and gradients at the initial body with a random head, pairs 0 and 1
    g = torch.Generator().manual_seed(77)
    v0 = (torch.randn((C,), generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    r = rewards(cfg, P, v0, seqs[:4])
    lo, _ = loss_fn(r[0::2], r[1::2])
    lo.backward()
    grads = {"v_head.weight": v0.grad.tolist()}
    for n in GRAD_NAMES:
        grads[n] = P[n].grad.flatten().tolist()
    grad_loss = float(lo)
    v0_list = v0.detach().tolist()
    for n in body:
        P[n].grad = None

    # 3 AdamW steps from the zero head
    v = torch.zeros((C,), dtype=torch.float64, requires_grad=True)
    decay = [P[n] for n in body if "norm" not in n and "tok_embeddings" not in n] + [v]
    nodecay = [P[n] for n in body if "norm" in n or "tok_embeddings" in n]
    params = decay + nodecay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"],
                            foreach=False)
    losses, accs, rch, rrj = [], [], [], []
    npairs = len(recs)
    for s in range(STEPS):
        lr = gt.lr_at(s, STEPS, OPT["warmup"], OPT["lr"], OPT["min_lr"])
        for gr in opt.param_groups:
            gr["lr"] = lr
        opt.zero_grad()
        idx = [(s * N + k) % npairs for k in range(N)]
        sq = []
        for i in idx:
            sq += [seqs[2 * i], seqs[2 * i + 1]]
        rw = rewards(cfg, P, v, sq)
        lo, d = loss_fn(rw[0::2], rw[1::2])
        lo.backward()
        for p in params:  # parameters outside the graph of this step get zero grads
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch.nn.utils.clip_grad_norm_(params, OPT["clip"])
        opt.step()
        losses.append(float(lo))
        accs.append(float((d > 0).double().mean()))
        rch.append(float(rw[0::2].mean()))
        rrj.append(float(rw[1::2].mean()))
    with torch.no_grad():
        final = rewards(cfg, P, v, seqs).tolist()
    ref = {"reward_token": RT, "ids": seqs, "grad_v_head": v0_list, "grad_loss": grad_loss,
           "grads": grads, "losses": losses, "accuracy": accs, "reward_chosen": rch,
           "reward_rejected": rrj, "final_rewards": final, "batch": N, "steps": STEPS,
           "opt": OPT, "note": "generated by tools/gen_rm_train_ref.py (float64 torch)"}
    with open(os.path.join(OUT, "ref.json"), "w") as f:
        json.dump(ref, f)
        f.write("\n")
    print("losses", losses, "final", final[:4])


if __name__ == "__main__":
    main()
