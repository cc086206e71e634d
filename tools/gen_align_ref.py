#!/usr/bin/python3
"""gen_align_ref.py — PyTorch autograd reference for the alignment losses.

Writes tests/golden/align/ref.safetensors (F32 tensors + metadata), read by
tests/test_align.c. Every formula is transcribed from its source, in float64
autograd on float32-rounded random inputs (fixed seeds):

  reward model  XTuner xtuner/model/reward.py (RewardModel.ranking_loss,
                focal_loss, log_barrier_penalty, l2_penalty; avg_factor 1/N)
  DPO           XTuner xtuner/model/dpo.py loss_type "sigmoid" with
                label_smoothing (= TRL DPOTrainer sigmoid)
  SimPO         TRL CPOTrainer loss_type "simpo"
  ORPO          TRL ORPOTrainer.odds_ratio_loss
  PPO           OpenRLHF get_advantages_and_returns (GAE), compute_reward
                (KL penalty, reward at the last response token), TRL whiten,
                TRL PPOTrainer.loss (clipped policy + clipped value loss),
                entropy from logits

The log barrier clamps with the float32 roundings of -5+1e-3 and 5-1e-3 (XTuner
clamps logits.float() with python scalars, i.e. in float32).

Usage: /usr/bin/python3 tools/gen_align_ref.py   (rewrites the fixture;
byte-identical across runs)
"""

import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "align", "ref.safetensors")

T = {}  # name -> float32 numpy array
META = {}


def put(name, x):
    if isinstance(x, torch.Tensor):
        x = x.detach().numpy()
    T[name] = np.asarray(x, dtype=np.float32).reshape(-1)


def f32(x):
    """float32-rounded values as a float64 leaf tensor"""
    return torch.tensor(np.asarray(x, dtype=np.float32).astype(np.float64), requires_grad=True)


def write_safetensors(path, tensors, meta):
    hdr = {"__metadata__": meta}
    off = 0
    blobs = []
    for k in sorted(tensors):
        b = tensors[k].astype("<f4").tobytes()
        hdr[k] = {"dtype": "F32", "shape": [int(tensors[k].size)], "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# --------------------------------------------------------------------------
# reward model


def rm_case(tag, chosen, rejected, loss_type, penalty_type, W):
    c, r = f32(chosen), f32(rejected)
    N = c.shape[0]
    avg = 1.0 / N
    d = c - r
    rank_loss = -F.logsigmoid(d)
    if loss_type == "focal":
        p_ij = torch.sigmoid(d)
        p = 2 * torch.relu(p_ij - 0.5)
        rank = (((1 - p) ** 2) * rank_loss).sum() * avg
    else:
        rank = rank_loss.sum() * avg
    allr = torch.cat([c, r])
    if penalty_type == "log_barrier":
        lo = float(np.float32(-5 + 1e-3))
        hi = float(np.float32(5 - 1e-3))
        cl = torch.clamp(allr, lo, hi)
        pen = (-torch.log(5 - cl) - torch.log(cl - (-5))).sum() * avg
    elif penalty_type == "l2":
        pen = (allr ** 2).sum() * avg
    else:
        pen = torch.zeros((), dtype=torch.float64)
    loss = rank + W * pen
    loss.backward()
    acc = ((c > r).sum() / N).item()
    put(tag + ".metrics", [loss.item(), rank.item(), pen.item(), acc, c.mean().item(), r.mean().item()])
    put(tag + ".d_chosen", c.grad)
    put(tag + ".d_rejected", r.grad)


def gen_rm():
    g = np.random.default_rng(11)
    N = 12
    chosen = g.normal(0, 3, N)
    rejected = g.normal(0, 3, N)
    chosen[0], rejected[0] = 1.25, 1.25          # d = 0 (relu at 0, focal weight 1)
    chosen[1], rejected[1] = 40.0, -35.0        # large positive d, both clamped
    chosen[2], rejected[2] = -30.0, 45.0        # large negative d
    chosen[3], rejected[3] = 4.9995, -4.9995    # just outside the clamp
    chosen[4], rejected[4] = 4.5, -4.5          # inside, near the bounds
    put("rm.chosen", chosen)
    put("rm.rejected", rejected)
    k = 0
    for lt in ("focal", "ranking"):
        for pt in ("log_barrier", "l2", "none"):
            W = 0.01 if k % 2 == 0 else 0.5
            META["rm.%s.%s.W" % (lt, pt)] = repr(W)
            rm_case("rm.%s.%s" % (lt, pt), chosen, rejected, lt, pt, W)
            k += 1
    # a single pair
    rm_case("rm1", [0.3], [-0.7], "focal", "log_barrier", 0.01)
    put("rm1.chosen", [0.3])
    put("rm1.rejected", [-0.7])


# --------------------------------------------------------------------------
# DPO / SimPO / ORPO


def pref_out(tag, loss, cr, rr, pc, pr):
    loss.backward()
    cr, rr = cr.detach(), rr.detach()
    put(tag + ".metrics", [loss.item(), (cr > rr).double().mean().item(), (cr - rr).mean().item(),
                           cr.mean().item(), rr.mean().item()])
    put(tag + ".d_pc", pc.grad)
    put(tag + ".d_pr", pr.grad)


def gen_pref():
    g = np.random.default_rng(12)
    N = 10
    pc = -g.uniform(5, 60, N)
    pr = -g.uniform(5, 60, N)
    rc = pc + g.normal(0, 4, N)
    rr = pr + g.normal(0, 4, N)
    pc[0], pr[0], rc[0], rr[0] = -20.0, -20.0, -30.0, -30.0   # z = 0
    pc[1], pr[1], rc[1], rr[1] = -5.0, -900.0, -40.0, -40.0   # z = +89.5
    pc[2], pr[2], rc[2], rr[2] = -950.0, -6.0, -40.0, -40.0   # z = -94.4
    for name, v in (("pc", pc), ("pr", pr), ("rc", rc), ("rr", rr)):
        put("dpo." + name, v)
    for tag, beta, ls in (("dpo.a", 0.1, 0.0), ("dpo.b", 0.5, 0.2)):
        META[tag + ".beta"] = repr(beta)
        META[tag + ".ls"] = repr(ls)
        tpc, tpr = f32(pc), f32(pr)
        trc, trr = f32(rc).detach(), f32(rr).detach()
        z = beta * ((tpc - tpr) - (trc - trr))
        loss = (-F.logsigmoid(z) * (1 - ls) - F.logsigmoid(-z) * ls).mean()
        pref_out(tag, loss, beta * (tpc - trc), beta * (tpr - trr), tpc, tpr)
    # SimPO / ORPO: lengths and mean log-probabilities
    nc = g.integers(1, 40, N)
    nr = g.integers(1, 40, N)
    nc[0], nr[0] = 20, 20
    put("len.nc", nc)
    put("len.nr", nr)
    beta, gamma = 2.0, 0.5
    META["simpo.beta"], META["simpo.gamma"] = repr(beta), repr(gamma)
    tpc, tpr = f32(pc), f32(pr)
    ac, ar = tpc / torch.tensor(nc, dtype=torch.float64), tpr / torch.tensor(nr, dtype=torch.float64)
    z = beta * (ac - ar) - gamma
    pref_out("simpo", (-F.logsigmoid(z)).mean(), beta * ac, beta * ar, tpc, tpr)
    # ORPO needs mean logps in (-inf, 0): use small per-token logps
    opc = -g.uniform(0.02, 3.0, N) * nc
    opr = -g.uniform(0.02, 3.0, N) * nr
    put("orpo.pc", opc)
    put("orpo.pr", opr)
    lam = 0.1
    META["orpo.lambda"] = repr(lam)
    tpc, tpr = f32(opc), f32(opr)
    ac, ar = tpc / torch.tensor(nc, dtype=torch.float64), tpr / torch.tensor(nr, dtype=torch.float64)
    log_odds = (ac - ar) - (torch.log1p(-torch.exp(ac)) - torch.log1p(-torch.exp(ar)))
    loss = -(lam * F.logsigmoid(log_odds)).mean()
    pref_out("orpo", loss, lam * ac, lam * ar, tpc, tpr)


# --------------------------------------------------------------------------
# PPO


def gen_ppo():
    g = np.random.default_rng(13)
    B, Tn = 4, 7
    mask = np.ones((B, Tn))
    mask[1, 5:] = 0  # right padding
    mask[2, :] = 0   # empty response
    mask[3, 1:] = 0  # one token
    logp = -g.uniform(0.05, 4, (B, Tn))
    ref = logp + g.normal(0, 0.3, (B, Tn))
    old = logp + g.normal(0, 0.25, (B, Tn))
    vals = g.normal(0, 1, (B, Tn))
    oldv = vals + g.normal(0, 0.3, (B, Tn))
    score = g.normal(0, 2, B)
    for k, v in (("mask", mask), ("logp", logp), ("ref", ref), ("old", old), ("values", vals),
                 ("old_values", oldv), ("score", score)):
        put("ppo." + k, v)
    m = torch.tensor(mask)
    lp, rf = torch.tensor(logp.astype(np.float32).astype(np.float64)), \
        torch.tensor(ref.astype(np.float32).astype(np.float64))
    sc = torch.tensor(score.astype(np.float32).astype(np.float64))
    kl_coef = 0.05
    META["ppo.kl_coef"] = repr(kl_coef)
    # OpenRLHF compute_reward: reward = -kl_coef * kl; reward at eos index += r
    kl = (lp - rf) * m
    rew = -kl_coef * kl
    for b in range(B):
        idx = np.nonzero(mask[b])[0]
        if len(idx):
            rew[b, idx[-1]] += sc[b]
    put("ppo.rewards", rew)
    put("ppo.kl", kl.sum(1))
    v = torch.tensor(vals.astype(np.float32).astype(np.float64))
    rew32 = torch.tensor(rew.numpy().astype(np.float32).astype(np.float64))
    for tag, gamma, lam in (("gae.a", 1.0, 0.95), ("gae.b", 0.9, 0.8)):
        META[tag + ".gamma"], META[tag + ".lambda"] = repr(gamma), repr(lam)
        vv, rr = m * v, m * rew32
        last = 0.0
        rev = []
        for t in reversed(range(Tn)):
            nv = vv[:, t + 1] if t < Tn - 1 else 0.0
            delta = rr[:, t] + gamma * nv - vv[:, t]
            last = delta + gamma * lam * last
            rev.append(last)
        adv = torch.stack(rev[::-1], dim=1)
        put(tag + ".adv", adv)
        put(tag + ".ret", adv + vv)
        # TRL whiten (shift_mean, unbiased masked var), masked positions -> 0
        a32 = torch.tensor(adv.numpy().astype(np.float32).astype(np.float64))
        mean = (a32 * m).sum() / m.sum()
        var = (((a32 - mean) ** 2) * m).sum() / m.sum()
        var = var * m.sum() / (m.sum() - 1)
        put(tag + ".white", (a32 - mean) * torch.rsqrt(var + 1e-8) * m)
    # clipped policy loss on the gae.a whitened advantages, new logp = ppo.logp
    adv = torch.tensor(T["gae.a.white"].astype(np.float64).reshape(B, Tn))
    old64 = torch.tensor(old.astype(np.float32).astype(np.float64))
    eps = 0.2
    META["ppo.clip_eps"] = repr(eps)
    nlp = f32(logp)
    ratio = torch.exp(nlp - old64)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - eps, 1 + eps)
    pg = (torch.max(pg1, pg2) * m).sum() / m.sum()
    pg.backward()
    clipfrac = ((pg2 > pg1).double() * m).sum() / m.sum()
    akl = 0.5 * (((nlp - old64) ** 2) * m).sum() / m.sum()
    put("policy.metrics", [pg.item(), clipfrac.item(), akl.item(), ((ratio * m).sum() / m.sum()).item()])
    put("policy.d_logp", nlp.grad)
    # clipped value loss against gae.a returns
    R = torch.tensor(T["gae.a.ret"].astype(np.float64).reshape(B, Tn))
    ov = torch.tensor(oldv.astype(np.float32).astype(np.float64))
    for tag, clip in (("value.clip", 0.2), ("value.noclip", 0.0)):
        META[tag] = repr(clip)
        vt = f32(vals)
        l1 = (vt - R) ** 2
        if clip > 0:
            vc = ov + torch.clamp(vt - ov, -clip, clip)
            l2 = (vc - R) ** 2
            vl = 0.5 * (torch.max(l1, l2) * m).sum() / m.sum()
            cf = ((l2 > l1).double() * m).sum() / m.sum()
        else:
            vl = 0.5 * (l1 * m).sum() / m.sum()
            cf = torch.zeros(())
        vl.backward()
        put(tag + ".metrics", [vl.item(), cf.item()])
        put(tag + ".d_values", vt.grad)
    # entropy
    N, V = 5, 11
    z = g.normal(0, 2, (N, V))
    z[1] = 0.0           # uniform
    z[2, 3] = 60.0       # nearly one-hot
    dH = g.normal(0, 1, N)
    put("ent.logits", z)
    put("ent.dH", dH)
    zt = f32(z)
    p = torch.softmax(zt, -1)
    H = -(p * torch.log_softmax(zt, -1)).sum(-1)
    (H * torch.tensor(dH.astype(np.float32).astype(np.float64))).sum().backward()
    put("ent.H", H)
    put("ent.d_logits", zt.grad)


def gen_vhead():
    g = np.random.default_rng(14)
    N, C = 6, 5
    h, v, dout = g.normal(0, 1, (N, C)), g.normal(0, 0.5, C), g.normal(0, 1, N)
    put("vh.h", h)
    put("vh.v", v)
    put("vh.dout", dout)
    th, tv = f32(h), f32(v)
    out = th @ tv
    (out * torch.tensor(dout.astype(np.float32).astype(np.float64))).sum().backward()
    put("vh.out", out)
    put("vh.dv", tv.grad)
    put("vh.dh", th.grad)


def main():
    gen_vhead()
    gen_rm()
    gen_pref()
    gen_ppo()
    write_safetensors(OUT, T, META)
    print("wrote %s (%d tensors, %d bytes)" % (OUT, len(T), os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
