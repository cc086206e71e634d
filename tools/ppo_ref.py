#!/usr/bin/env python3
"""PyTorch reference for `puyu ppo`'s loss math on a fixed rollout
(tests/test_ppo.c, tests/golden/ppo/rollout.json).

Independent of the C code: the formulas are OpenRLHF's (openrlhf/models/
utils.py compute_reward, experience_maker.get_advantages_and_returns,
replay_buffer normalize("advantages"), loss.PolicyLoss / ValueLoss with a
token-level masked mean over the whole batch), in float32 torch, and TRL's
whiten (shift_mean, unbiased variance) for --whiten trl. Gradients of the
clipped policy loss w.r.t. logp and of the clipped value loss w.r.t. values
come from autograd.

Usage: /usr/bin/python3 tools/ppo_ref.py  (writes tests/golden/ppo/rollout.json)
"""
import json
import os

import torch

torch.manual_seed(7)
B, T = 4, 7
lens = [7, 3, 5, 1]  # response tokens per row (right padding)
mask = torch.zeros(B, T)
for b, n in enumerate(lens):
    mask[b, :n] = 1
logp = (-torch.rand(B, T) * 3) * mask
ref = (logp + 0.3 * torch.randn(B, T)) * mask
old = (logp + 0.25 * torch.randn(B, T)) * mask  # old policy: ratios ~ exp(+-0.25), some clipped
values = torch.randn(B, T) * mask
old_values = (values + 0.3 * torch.randn(B, T)) * mask
score = torch.randn(B)
kl_coef, gamma, lam, clip_eps, vclip = 0.05, 0.99, 0.95, 0.2, 0.2


def compute_reward(score, logp, ref, mask):
    kl = (logp - ref) * mask
    reward = -kl_coef * kl
    eos = torch.tensor([int(m.nonzero().max()) for m in mask])
    last = torch.zeros_like(reward).scatter_(1, eos.unsqueeze(1), score.unsqueeze(1))
    return reward + last, kl.sum(1)


def gae(values, rewards, mask):
    values = values * mask
    rewards = rewards * mask
    lastgae = torch.zeros(B)
    adv = []
    for t in reversed(range(T)):
        nv = values[:, t + 1] if t < T - 1 else torch.zeros(B)
        delta = rewards[:, t] + gamma * nv - values[:, t]
        lastgae = delta + gamma * lam * lastgae
        adv.append(lastgae)
    adv = torch.stack(adv[::-1], dim=1)
    return adv, adv + values


def whiten_openrlhf(x, mask):
    n = mask.sum()
    mean = (x * mask).sum() / n
    var = ((x - mean).pow(2) * mask).sum() / n
    return (x - mean) * var.clamp(min=1e-8).rsqrt()


def whiten_trl(x, mask):
    n = mask.sum()
    mean = (x * mask).sum() / n
    var = ((x - mean) ** 2 * mask).sum() / n
    var = var * n / (n - 1)
    return ((x - mean) * torch.rsqrt(var + 1e-8)) * mask


def masked_mean(x, m):
    return (x * m).sum() / m.sum()


rewards, kl = compute_reward(score, logp, ref, mask)
adv, ret = gae(values, rewards, mask)
out = {
    "B": B, "T": T, "kl_coef": kl_coef, "gamma": gamma, "lam": lam,
    "clip_eps": clip_eps, "value_clip": vclip,
    "mask": mask.flatten().tolist(), "logp": logp.flatten().tolist(),
    "ref": ref.flatten().tolist(), "old": old.flatten().tolist(),
    "values": values.flatten().tolist(), "old_values": old_values.flatten().tolist(),
    "score": score.tolist(),
    "rewards": rewards.flatten().tolist(), "kl": kl.tolist(),
    "adv_raw": adv.flatten().tolist(), "returns": ret.flatten().tolist(),
}
for name, fn in (("openrlhf", whiten_openrlhf), ("trl", whiten_trl)):
    w = fn(adv, mask)
    out["adv_" + name] = w.flatten().tolist()
    lp = logp.clone().requires_grad_(True)
    ratio = (lp - old).exp()
    s1 = ratio * w
    s2 = ratio.clamp(1 - clip_eps, 1 + clip_eps) * w
    loss = masked_mean(-torch.min(s1, s2), mask)
    loss.backward()
    out["policy_loss_" + name] = loss.item()
    out["d_logp_" + name] = lp.grad.flatten().tolist()
    out["clipfrac_" + name] = masked_mean((s2 < s1).float(), mask).item()
v = values.clone().requires_grad_(True)
vc = old_values + (v - old_values).clamp(-vclip, vclip)
vloss = 0.5 * masked_mean(torch.max((vc - ret) ** 2, (v - ret) ** 2), mask)
vloss.backward()
out["value_loss"] = vloss.item()
out["d_values"] = v.grad.flatten().tolist()
os.makedirs("tests/golden/ppo", exist_ok=True)
with open("tests/golden/ppo/rollout.json", "w") as f:
    json.dump(out, f, indent=0)
print("wrote tests/golden/ppo/rollout.json")
