#!/usr/bin/python3
"""gen_align_grads_ref.py — PyTorch autograd reference for the full
per-parameter gradients of the DPO loss and of the reward-model loss
(focal + 0.01 log barrier), full fine-tuning and LoRA (tests/test_align_grads.c).

Writes tests/golden/align_grads/:
  base/     a tiny random InternLM2ForCausalLM (F32): the frozen DPO reference,
            the reward model's body and the LoRA base
  policy/   base + N(0, 0.05^2) noise on every tensor: the full-DPO policy (so
            policy != reference and each pair has its own sigmoid weight)
  ref.safetensors (F32 tensors):
    dpo_ids, dpo_tg  (4, T) rows 2i chosen / 2i+1 rejected of 2 pairs, right-
                     padded with id 0 / -100; tg[t] = label of t+1 (response only)
    rm_ids, rm_lens  (4, T) / (4) reward-model rows (the reward token 3 last)
    lora.<PEFT key>  an adapter r = 2, alpha = 4 on wqkv, wo, w1, w2, w3 (B != 0)
    v0               (C) the value head
    dpo_full.<name>  d DPO loss / d policy weights (reference = base)
    dpo_lora.<key>   d DPO loss / d adapter (policy = base + adapter, reference = base)
    rm_full.<name>, rm_full.v_head.weight   d RM loss / d (body, head) at base, v0
    rm_lora.<key>, rm_lora.v_head.weight    the same with the adapter on the frozen base
  __metadata__: the four losses (float64), beta, r, alpha; dpo_lora_adam / rm_lora_adam: the
    losses of 3 AdamW steps on the same batch from the same start (adapter, and v_head for the
    RM; torch.optim.AdamW(foreach=False) float64, weight decay 0.1 on every trained tensor,
    clip_grad_norm_ 1.0 over them, pu_lr_at's schedule: lr 3e-3, min 3e-4, warmup 1).

Forward: tools/gen_lora_ref.py's (an fp32 transcription of HF
modeling_internlm2.py with PEFT LoRA y += s (x A^T) B^T), run here in float64,
each row alone on its own length (padding never enters). DPO: logp(side) = sum
over targets >= 0 of log p; loss = mean_i -logsigmoid(beta ((pc - pr) - (rc -
rr))), beta 0.5. RM: the LM head replaced by the identity (final-norm hidden
states), reward = v . h[len - 1]; d = rc - rr; focal = sum (1 - 2 relu(sigmoid(d)
- 1/2))^2 (-logsigmoid(d)) / N; barrier = sum over the 2N rewards clamped to
[-5+1e-3, 5-1e-3] of -log(5 - r) - log(5 + r), / N; loss = focal + 0.01 barrier.

Usage: /usr/bin/python3 tools/gen_align_grads_ref.py
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as gg  # noqa: E402
import gen_lora_ref as lr  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "align_grads")
FX = dict(gg.BASE, name="align_grads", V=80, C=32, F=40, H=4, Hkv=2, L=2, eps=1e-5,
          theta=10000.0, dtype="F32", M=64)
SEED = 4242
R, ALPHA, BETA, RT = 2, 4.0, 0.5, 3
ADAM = dict(lr=3e-3, min_lr=3e-4, warmup=1)
LENS = [11, 8, 13, 6]  # rows: pair 0 chosen / rejected, pair 1 chosen / rejected
PROMPT = [4, 4, 5, 5]  # ids[0:P] are the prompt (no targets)


def rows(V, g):
    T = max(LENS)
    ids, tg = [], []
    for n, P in zip(LENS, PROMPT):
        r = torch.randint(4, V, (n,), generator=g).tolist()
        ids.append(r + [0] * (T - n))
        tg.append([r[t + 1] if t + 1 < n and t + 1 >= P else -100 for t in range(n)] +
                  [-100] * (T - n))
    return ids, tg


def seq_logp(cfg, W, L, ids, tg, n):
    logits = lr.forward(cfg, W, L, ids[:n], ALPHA / R)
    ls = torch.log_softmax(logits, dim=-1)
    tot = 0
    for t in range(n):
        if tg[t] >= 0:
            tot = tot + ls[t, tg[t]]
    return tot


def dpo_loss(cfg, Wp, Lp, Wr, ids, tg):
    lp = [seq_logp(cfg, Wp, Lp, ids[i], tg[i], LENS[i]) for i in range(4)]
    with torch.no_grad():
        rf = [float(seq_logp(cfg, Wr, {}, ids[i], tg[i], LENS[i])) for i in range(4)]
    z = [BETA * ((lp[2 * i] - lp[2 * i + 1]) - (rf[2 * i] - rf[2 * i + 1])) for i in range(2)]
    return sum(-torch.nn.functional.logsigmoid(x) for x in z) / 2


def rm_loss(cfg, W, L, v, ids):
    C = cfg["hidden_size"]
    W = dict(W)
    W["output.weight"] = torch.eye(C, dtype=torch.float64)
    r = torch.stack([lr.forward(cfg, W, L, ids[i][:LENS[i]], ALPHA / R)[-1] @ v
                     for i in range(4)])
    rc, rj = r[0::2], r[1::2]
    d = rc - rj
    w = (1 - 2 * torch.relu(torch.sigmoid(d) - 0.5)) ** 2
    focal = (w * -torch.nn.functional.logsigmoid(d)).sum() / 2
    rr = r.clamp(-5 + 1e-3, 5 - 1e-3)
    bar = (-torch.log(5 - rr) - torch.log(rr + 5)).sum() / 2
    return focal + 0.01 * bar


def main():
    cfg = gg.make_config(FX)
    names = gg.tensor_names(cfg)
    cfg.setdefault("rope_scaling", None)
    W32 = gg.make_weights(cfg, SEED, "F32")
    W32["output.weight"] = W32["output.weight"] * 0.3
    g = torch.Generator().manual_seed(SEED + 1)
    P32 = {k: (v + torch.randn(v.shape, generator=g) * 0.05).float() for k, v in W32.items()}
    ids, tg = rows(cfg["vocab_size"], g)
    rm_ids = [r[:n - 1] + [RT] + r[n:] for r, n in zip(ids, LENS)]
    C = cfg["hidden_size"]
    v0 = torch.randn((C,), generator=g, dtype=torch.float64) * 0.5
    keys = [(kp, wn) for kp, wn in lr.lora_keys(cfg) if wn != "output.weight"]
    LA = {}
    for kp, wn in keys:
        out_f, in_f = W32[wn].shape
        A = (torch.rand((R, in_f), generator=g) * 2 - 1) / math.sqrt(in_f)
        Bm = torch.randn((out_f, R), generator=g) * 0.2
        LA[wn] = (A, Bm)
    Wb = {k: v.double() for k, v in W32.items()}
    ent = []
    meta = {}
    # DPO, full: gradient w.r.t. every policy tensor
    Pp = {k: v.double().requires_grad_(True) for k, v in P32.items()}
    lo = dpo_loss(cfg, Pp, {}, Wb, ids, tg)
    lo.backward()
    meta["dpo_full_loss"] = repr(float(lo))
    ent += [("dpo_full." + n, Pp[n].grad.float()) for n in names]
    # DPO, LoRA: policy = base + adapter, reference = base
    L64 = {k: (a.double().requires_grad_(True), b.double().requires_grad_(True))
           for k, (a, b) in LA.items()}
    lo = dpo_loss(cfg, Wb, L64, Wb, ids, tg)
    lo.backward()
    meta["dpo_lora_loss"] = repr(float(lo))
    for kp, wn in keys:
        for j, ab in enumerate(["lora_A", "lora_B"]):
            ent.append(("dpo_lora.%s.%s.weight" % (kp, ab), L64[wn][j].grad.float()))
    # RM, full: body (no LM head) + v_head
    body = [n for n in names if n != "output.weight"]
    Wf = {k: v.double().requires_grad_(k in body) for k, v in W32.items()}
    vf = v0.clone().requires_grad_(True)
    lo = rm_loss(cfg, Wf, {}, vf, rm_ids)
    lo.backward()
    meta["rm_full_loss"] = repr(float(lo))
    ent += [("rm_full." + n, Wf[n].grad.float()) for n in body]
    ent.append(("rm_full.v_head.weight", vf.grad.float()))
    # RM, LoRA
    L64 = {k: (a.double().requires_grad_(True), b.double().requires_grad_(True))
           for k, (a, b) in LA.items()}
    vl = v0.clone().requires_grad_(True)
    lo = rm_loss(cfg, Wb, L64, vl, rm_ids)
    lo.backward()
    meta["rm_lora_loss"] = repr(float(lo))
    for kp, wn in keys:
        for j, ab in enumerate(["lora_A", "lora_B"]):
            ent.append(("rm_lora.%s.%s.weight" % (kp, ab), L64[wn][j].grad.float()))
    ent.append(("rm_lora.v_head.weight", vl.grad.float()))

    # 3 AdamW steps with LoRA (DPO: the adapter; RM: the adapter + v_head)
    for what in ("dpo", "rm"):
        L64 = {k: (a.double().clone().requires_grad_(True), b.double().clone().requires_grad_(True))
               for k, (a, b) in LA.items()}
        vv = v0.clone().requires_grad_(True)
        params = [t for kp, wn in keys for t in L64[wn]] + ([vv] if what == "rm" else [])
        opt = torch.optim.AdamW(params, lr=ADAM["lr"], betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=0.1, foreach=False)
        losses = []
        for st in range(3):
            for gr in opt.param_groups:
                gr["lr"] = lr.lr_at(st, 3, ADAM["warmup"], ADAM["lr"], ADAM["min_lr"])
            opt.zero_grad()
            lo = (dpo_loss(cfg, Wb, L64, Wb, ids, tg) if what == "dpo"
                  else rm_loss(cfg, Wb, L64, vv, rm_ids))
            lo.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(lo))
        meta[what + "_lora_adam"] = json.dumps(losses)

    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    ent += [("dpo_ids", f(ids)), ("dpo_tg", f(tg)), ("rm_ids", f(rm_ids)), ("rm_lens", f(LENS)),
            ("v0", v0.float())]
    for kp, wn in keys:
        for j, ab in enumerate(["lora_A", "lora_B"]):
            ent.append(("lora.%s.%s.weight" % (kp, ab), LA[wn][j]))
    meta.update({"beta": repr(BETA), "r": str(R), "alpha": repr(ALPHA), "reward_token": str(RT),
                 "note": "generated by tools/gen_align_grads_ref.py (float64 torch autograd)"})
    files = {os.path.join(OUT, "ref.safetensors"): lr.f32_file(ent, meta)}
    files.update(lr.model_dir(os.path.join(OUT, "base"), cfg, W32, "F32"))
    files.update(lr.model_dir(os.path.join(OUT, "policy"), cfg, P32, "F32"))
    for path, data in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    print({k: v for k, v in meta.items() if k.endswith("loss")},
          {p: len(d) for p, d in files.items()})


if __name__ == "__main__":
    main()
