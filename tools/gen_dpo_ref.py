#!/usr/bin/python3
"""gen_dpo_ref.py — PyTorch reference for 3 AdamW steps of `puyu dpo`
(sigmoid loss, full parameters; tests/test_dpo_train.c).

Pairs of tests/golden/dpo_train/data.jsonl (written here once) are rendered
and tokenized by tools/gen_sft_data_ref.py's reference of `puyu sft`'s
tokenization (the golden SentencePiece model tests/golden/sft/spm.model):
each side = the prompt turns + the response as the final assistant turn,
scored tokens = the response content + <|im_end|>; target t = label t+1.
logp(side) = sum over scored targets of log p. The policy starts as
tests/golden/sft/hf (random tiny InternLM2); the reference is that initial
model, frozen. loss = mean over pairs of -logsigmoid(beta ((pc - pr) - (rc -
rr))); batch = N pairs in file order; forward = tools/gen_train_ref.py's in
float64. AdamW: torch.optim.AdamW(foreach=False) float64, decay on matrices
except the token embedding and norms, clip_grad_norm_, pu_lr_at's schedule.

Writes ref.json: per step loss, pre-clip grad norm, accuracy, margin, chosen
and rejected rewards; token ids and targets of every side.
Usage: /usr/bin/python3 tools/gen_dpo_ref.py
"""
import json
import os
import sys

import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_sft_data_ref as sd  # noqa: E402
import gen_sft_ref as gs  # noqa: E402
import gen_train_ref as gt  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "dpo_train")
HF = os.path.join(ROOT, "tests", "golden", "sft", "hf")
N, STEPS, BETA = 2, 3, 0.5
OPT = dict(lr=3e-3, min_lr=3e-4, warmup=1, beta1=0.9, beta2=0.95, eps=1e-8,
           weight_decay=0.1, clip=1.0)


def records():
    P = [("What is 2+2?", "2+2 is 4.", "It is 5."),
         ("Say hello", "Hello! Nice to meet you.", "no"),
         ("Name a color", "Blue is a color.", "A dog."),
         ("Is fire hot?", "Yes, fire is hot.", "Fire is cold."),
         ("你好", "你好！有什么可以帮你？", "不知道。")]
    return [{"prompt": [{"role": "user", "content": q}], "chosen": c, "rejected": r}
            for q, c, r in P]


def side_logp(cfg, W, ids, tg):
    logits = gt.forward(cfg, W, ids)
    lp = torch.log_softmax(logits, dim=-1)
    tot = 0
    for t, y in enumerate(tg):
        if y >= 0:
            tot = tot + lp[t, y]
    return tot


def main():
    os.makedirs(OUT, exist_ok=True)
    dpath = os.path.join(OUT, "data.jsonl")
    if not os.path.exists(dpath):
        with open(dpath, "w", encoding="utf-8") as f:
            for r in records():
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(dpath, encoding="utf-8") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    sp = spm.SentencePieceProcessor(model_file=os.path.join(ROOT, "tests", "golden", "sft",
                                                            "spm.model"))
    enc = sd.Enc(sp, {s: sp.piece_to_id(s) for s in sd.SPECIALS})
    seqs = []
    for r in recs:
        for side in ("chosen", "rejected"):
            conv = {"messages": r["prompt"] + [{"role": "assistant", "content": r[side]}]}
            ids, labels = sd.tokenize(enc, sp.bos_id(), sd.parse(conv))
            tg = [labels[t + 1] if t + 1 < len(ids) else -100 for t in range(len(ids))]
            seqs.append((ids, tg))
    with open(os.path.join(HF, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("rope_scaling", None)
    W32 = gs.load_weights()
    names = sorted(W32)
    P = {k: v.double().clone().requires_grad_(True) for k, v in W32.items()}
    R = {k: v.double().clone() for k, v in W32.items()}
    with torch.no_grad():
        ref = [float(side_logp(cfg, R, ids, tg)) for ids, tg in seqs]
    decay = [P[n] for n in names if n.endswith(".weight") and "norm" not in n
             and "tok_embeddings" not in n]
    nodecay = [P[n] for n in names if not any(P[n] is d for d in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"],
                            foreach=False)
    out = {k: [] for k in ("losses", "grad_norms", "accuracy", "margin", "reward_chosen",
                           "reward_rejected")}
    for s in range(STEPS):
        lr = gt.lr_at(s, STEPS, OPT["warmup"], OPT["lr"], OPT["min_lr"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        idx = [(s * N + k) % len(recs) for k in range(N)]
        pc = torch.stack([side_logp(cfg, P, *seqs[2 * i]) for i in idx])
        pr = torch.stack([side_logp(cfg, P, *seqs[2 * i + 1]) for i in idx])
        rc = torch.tensor([ref[2 * i] for i in idx], dtype=torch.float64)
        rr = torch.tensor([ref[2 * i + 1] for i in idx], dtype=torch.float64)
        z = BETA * ((pc - pr) - (rc - rr))
        lo = -torch.nn.functional.logsigmoid(z).mean()
        lo.backward()
        for p in P.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        out["grad_norms"].append(float(torch.nn.utils.clip_grad_norm_(list(P.values()),
                                                                      OPT["clip"])))
        opt.step()
        ch, rj = BETA * (pc - rc), BETA * (pr - rr)
        out["losses"].append(float(lo))
        out["accuracy"].append(float((ch > rj).double().mean()))
        out["margin"].append(float((ch - rj).mean()))
        out["reward_chosen"].append(float(ch.mean()))
        out["reward_rejected"].append(float(rj.mean()))
    out.update({"ids": [s[0] for s in seqs], "targets": [s[1] for s in seqs], "batch": N,
                "steps": STEPS, "beta": BETA, "opt": OPT,
                "note": "generated by tools/gen_dpo_ref.py (float64 torch)"})
    with open(os.path.join(OUT, "ref.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")
    print("losses", out["losses"], "norms", out["grad_norms"])


if __name__ == "__main__":
    main()
