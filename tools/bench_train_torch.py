#!/usr/bin/python3
"""bench_train_torch.py — PyTorch CPU training throughput on the same shapes as
bench/bench_train.c (InternLM2 block: fused wqkv, rotate-half RoPE, GQA,
SwiGLU, untied head; fp32; AdamW), for the tokens/s comparison.

Debian's python3-torch uses the reference BLAS unless OpenBLAS is the
libblas.so.3 alternative (design.md §4). Without touching the system, run with
a private OpenBLAS, e.g.
  apt-get download libopenblas0-pthread && dpkg -x libopenblas0-pthread_*.deb ob
  LD_LIBRARY_PATH=$PWD/ob/usr/lib/x86_64-linux-gnu/openblas-pthread \\
  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tools/bench_train_torch.py
Prints one line per shape: "torch <name> <tokens/s> <step seconds> <tokens per
CPU-second x threads>".
--lora R adds a LoRA run per shape (name "<name>-lora"): every base weight
frozen (requires_grad False), PEFT-style adapters y += (x A^T) B^T * alpha/r
on wqkv, wo, w1, w2, w3, AdamW over the adapters only.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F


class LoraLinear(torch.nn.Module):
    """frozen base Linear + trainable low-rank adapter (PEFT semantics)"""

    def __init__(s, base, r, alpha):
        super().__init__()
        s.base = base
        s.A = torch.nn.Parameter((torch.rand(r, base.in_features) * 2 - 1) / math.sqrt(base.in_features))
        s.B = torch.nn.Parameter(torch.zeros(base.out_features, r))
        s.scale = alpha / r

    def forward(s, x):
        return s.base(x) + (x @ s.A.t()) @ s.B.t() * s.scale


class Block(torch.nn.Module):
    def __init__(s, C, H, Hkv, Fd):
        super().__init__()
        s.H, s.Hkv, s.D = H, Hkv, C // H
        s.an = torch.nn.Parameter(torch.ones(C))
        s.fn = torch.nn.Parameter(torch.ones(C))
        s.wqkv = torch.nn.Linear(C, (H + 2 * Hkv) * s.D, bias=False)
        s.wo = torch.nn.Linear(H * s.D, C, bias=False)
        s.w1 = torch.nn.Linear(C, Fd, bias=False)
        s.w3 = torch.nn.Linear(C, Fd, bias=False)
        s.w2 = torch.nn.Linear(Fd, C, bias=False)

    def forward(s, x, cos, sin, mask):
        B, T, C = x.shape
        G = s.H // s.Hkv
        a = rms(x, s.an)
        qkv = s.wqkv(a).view(B, T, s.Hkv, G + 2, s.D)
        q = qkv[:, :, :, :G].reshape(B, T, s.H, s.D).transpose(1, 2)
        k = qkv[:, :, :, -2].transpose(1, 2)
        v = qkv[:, :, :, -1].transpose(1, 2)
        q = q * cos + rot(q) * sin
        k = k * cos + rot(k) * sin
        k = k.repeat_interleave(G, dim=1)
        v = v.repeat_interleave(G, dim=1)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(s.D) + mask, dim=-1)
        x = x + s.wo((p @ v).transpose(1, 2).reshape(B, T, C))
        f = rms(x, s.fn)
        return x + s.w2(F.silu(s.w1(f)) * s.w3(f))


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))


def rot(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def bench(name, V, C, L, H, Hkv, Fd, B, T, steps, lora=0):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, C)
    blocks = torch.nn.ModuleList([Block(C, H, Hkv, Fd) for _ in range(L)])
    nw = torch.nn.Parameter(torch.ones(C))
    head = torch.nn.Linear(C, V, bias=False)
    params = list(emb.parameters()) + list(blocks.parameters()) + [nw] + list(head.parameters())
    if lora:
        for p in params:
            p.requires_grad_(False)
        params = []
        for b in blocks:
            for n in ["wqkv", "wo", "w1", "w2", "w3"]:
                m = LoraLinear(getattr(b, n), lora, 2.0 * lora)
                setattr(b, n, m)
                params += [m.A, m.B]
        name += "-lora"
    opt = torch.optim.AdamW(params, lr=1e-4)
    D = C // H
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2).float() / D))
    fr = torch.outer(torch.arange(T).float(), inv)
    e = torch.cat((fr, fr), -1)
    cos, sin = e.cos(), e.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    ids = torch.randint(0, V, (B, T))
    tg = torch.randint(0, V, (B, T))
    best, tot, cpu = 1e30, 0.0, 0.0
    for s in range(steps + 1):
        t0 = time.time()
        c0 = time.process_time()
        opt.zero_grad()
        x = emb(ids)
        for b in blocks:
            x = b(x, cos, sin, mask)
        loss = F.cross_entropy(head(rms(x, nw)).view(-1, V), tg.view(-1))
        loss.backward()
        opt.step()
        dt = time.time() - t0
        if s:
            cpu += time.process_time() - c0
            tot += dt
            best = min(best, dt)
    avg = tot / steps
    # tokens per CPU-second x threads: robust when other processes share the cores
    ctps = B * T / (cpu / steps / torch.get_num_threads())
    print("torch %s %.0f %.3f %.0f (best %.3f)" % (name, B * T / avg, avg, ctps, best), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--only-big", action="store_true", help="skip the 15M shape")
    ap.add_argument("--lora", type=int, default=0, help="also a LoRA run of rank R per shape")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not a.only_big:
        bench("15M", 32000, 288, 6, 6, 6, 768, a.batch, 256, a.steps)
        if a.lora:
            bench("15M", 32000, 288, 6, 6, 6, 768, a.batch, 256, a.steps, a.lora)
    if a.big or a.only_big:
        bench("110M", 32000, 768, 12, 12, 4, 2048, a.batch, 256, a.steps)
        if a.lora:
            bench("110M", 32000, 768, 12, 12, 4, 2048, a.batch, 256, a.steps, a.lora)


if __name__ == "__main__":
    main()
