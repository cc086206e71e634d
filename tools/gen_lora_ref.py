#!/usr/bin/python3
"""gen_lora_ref.py — PyTorch autograd reference for puyu's LoRA / frozen-base
training model (tests/test_lora_train.c).

Starts from tools/gen_train_ref.py's reference model (an independent fp32
transcription of HF modeling_internlm2.py, tools/gen_golden.py) and adds PEFT
LoRA on every target (wqkv, wo, w1, w2, w3 and the LM head `output`):
    y = x W^T + s * (x A^T) B^T,   s = alpha / r.
Writes under tests/golden/lora_train/:

  base_f32/, base_bf16/   model directories (config.json + model.safetensors),
                          the same weights stored as F32 and as BF16 (the BF16
                          values, widened exactly, are what the reference uses)
  ref.safetensors:
    ids, targets, pos, seg      (B, T) one packed batch: row 0 holds two
                                documents (positions restart, attention only
                                within a document), row 1 one; masked targets
                                (-100: prompt tokens and each document's last)
    lora.<PEFT key>             the adapter (r = 4, alpha = 8, B non-zero)
    g32.<key>, g16.<key>        d(mean CE)/d(adapter) with the frozen base in
                                F32 / in BF16, autograd in float64
    logp32                      (B, T) log p(target) (0 where ignored) with
                                the F32 base + adapter
    gfull.<HF name>             full fine-tuning gradients (no adapter, F32)
    adam.<key>                  the adapter after 5 AdamW steps (F32 base)
    __metadata__: loss32, loss16, lossfull (float64 mean CE of the batch),
      adam_losses (5 step losses, computed before each update), opt.
  The reference runs every document alone (positions 0..n-1): the packed C
  forward must give the same per-document numbers.

AdamW: torch.optim.AdamW(foreach=False) in float64 on the adapter only (the
base frozen), weight decay on the adapter matrices, clip_grad_norm_ over the
adapter, pu_lr_at's warmup + cosine schedule.

Usage: /usr/bin/python3 tools/gen_lora_ref.py [--check]
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as gg  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "lora_train")

FX = dict(gg.BASE, name="lora", V=96, C=32, F=40, H=4, Hkv=2, L=2, eps=1e-5, theta=10000.0,
          dtype="F32", M=64)
SEED = 777
B, T = 2, 16
R, ALPHA = 4, 8.0
DOCS = [[(0, 7), (7, 16)], [(0, 16)]]  # (start, end) per row
STEPS = 5
OPT = dict(lr=5e-3, min_lr=5e-4, warmup=1, beta1=0.9, beta2=0.95, eps=1e-8,
           weight_decay=0.1, clip=1.0)
TARGETS = ["wqkv", "wo", "w1", "w2", "w3", "output"]
MODS = {"wqkv": "attention.wqkv", "wo": "attention.wo", "w1": "feed_forward.w1",
        "w2": "feed_forward.w2", "w3": "feed_forward.w3"}


def lr_at(step, total, warmup, lr, min_lr):
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = total - warmup
    if span <= 1:
        return lr
    prog = min(1.0, (step - warmup) / (span - 1))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * prog))


def lora_keys(cfg):
    """[(key prefix, base weight name)] in puyu's table order."""
    out = []
    for i in range(cfg["num_hidden_layers"]):
        for t in ["wqkv", "wo", "w1", "w2", "w3"]:
            out.append(("base_model.model.model.layers.%d.%s" % (i, MODS[t]),
                        "model.layers.%d.%s.weight" % (i, MODS[t])))
    out.append(("base_model.model.output", "output.weight"))
    return out


def forward(cfg, W, L, ids, scale):
    """gen_train_ref.forward + LoRA (L: {base weight name: (A, B)} or {}) in
    the weights' dtype; returns logits (n, V)."""
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    Hkv = cfg["num_key_value_heads"]
    G = H // Hkv
    D = C // H
    eps = cfg["rms_norm_eps"]
    Tn = len(ids)
    dt = W["output.weight"].dtype

    def lin(x, name):
        y = x @ W[name].t()
        if name in L:
            A, Bm = L[name]
            y = y + ((x @ A.t()) @ Bm.t()) * scale
        return y

    x = W["model.tok_embeddings.weight"][torch.tensor(ids, dtype=torch.long)]
    cos, sin = gg.rope_cos_sin(cfg, Tn)
    cos, sin = cos.to(dt), sin.to(dt)
    mask = torch.full((Tn, Tn), float("-inf"), dtype=dt).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        a = gg.rmsnorm(x, W[p + "attention_norm.weight"], eps).to(dt)
        qkv = lin(a, p + "attention.wqkv.weight").view(Tn, Hkv, G + 2, D)
        q = qkv[:, :, :G, :].reshape(Tn, H, D).transpose(0, 1)
        k = qkv[:, :, -2, :].transpose(0, 1)
        v = qkv[:, :, -1, :].transpose(0, 1)
        q = q * cos + gg.rotate_half(q) * sin
        k = k * cos + gg.rotate_half(k) * sin
        k = k.repeat_interleave(G, dim=0)
        v = v.repeat_interleave(G, dim=0)
        pr = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(D) + mask, dim=-1)
        x = x + lin((pr @ v).transpose(0, 1).reshape(Tn, H * D), p + "attention.wo.weight")
        f = gg.rmsnorm(x, W[p + "ffn_norm.weight"], eps).to(dt)
        g = lin(f, p + "feed_forward.w1.weight")
        u = lin(f, p + "feed_forward.w3.weight")
        x = x + lin(torch.nn.functional.silu(g) * u, p + "feed_forward.w2.weight")
    h = gg.rmsnorm(x, W["model.norm.weight"], eps).to(dt)
    return lin(h, "output.weight")


def batch_loss(cfg, W, L, ids, tg, scale, logp=None):
    """mean CE over all targets != -100, every document run alone."""
    tot, cnt = 0.0, 0
    for r in range(B):
        for (s, e) in DOCS[r]:
            logits = forward(cfg, W, L, ids[r][s:e], scale)
            t = torch.tensor(tg[r][s:e], dtype=torch.long)
            tot = tot + torch.nn.functional.cross_entropy(logits, t, ignore_index=-100,
                                                          reduction="sum")
            cnt += int((t != -100).sum())
            if logp is not None:
                ls = torch.log_softmax(logits, dim=-1)
                for j in range(e - s):
                    if tg[r][s + j] >= 0:
                        logp[r, s + j] = float(ls[j, tg[r][s + j]])
    return tot / cnt


def model_dir(path, cfg, W, dtype):
    os.makedirs(path, exist_ok=True)
    c = dict(cfg, torch_dtype={"F32": "float32", "BF16": "bfloat16"}[dtype])
    ent = [(n, dtype, list(W[n].shape), gg.tensor_bytes(W[n], dtype)) for n in W]
    files = {os.path.join(path, "config.json"): (json.dumps(c, indent=2, sort_keys=True) +
                                                 "\n").encode(),
             os.path.join(path, "model.safetensors"): gg.safetensors_bytes(ent)}
    return files


def f32_file(ent, meta):
    header = {"__metadata__": meta}
    off = 0
    blobs = []
    for n, t in ent:
        raw = t.contiguous().numpy().astype("<f4").tobytes()
        header[n] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes.functional.create_dynamic_map (the 8-bit map of the absmaxes)."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    data += [0] * (256 - len(data))
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def blockwise(A, code, bs):
    """bitsandbytes' default-backend blockwise quantization (absmax per block
    of bs, x * (1 / absmax) as the CUDA kernel, bucketize against midpoints)."""
    n = A.numel()
    nb = (n + bs - 1) // bs
    pad = torch.zeros(nb * bs, dtype=torch.float32)
    pad[:n] = A
    blk = pad.view(nb, bs)
    absmax = torch.zeros(nb, dtype=torch.float32)
    for b in range(nb):
        e = min(bs, n - b * bs)
        absmax[b] = blk[b, :e].abs().max()
    inv = 1.0 / absmax.clamp(min=1e-38)
    scaled = torch.clamp(blk * inv.view(-1, 1), -1, 1).reshape(-1)[:n]
    bounds = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled, bounds, out_int32=True).to(torch.int64), absmax


def nf4_file():
    """NF4 + double quantization of a random tensor (n not a multiple of 64,
    more than 256 blocks): codes, absmax codes, scales, offset, dequantized."""
    g = torch.Generator().manual_seed(SEED + 2)
    n = 64 * 300 + 17
    x = torch.randn(n, generator=g) * 0.05
    x[5] = 0.4  # an outlier block
    x[64 * 7: 64 * 8] = 0  # an all-zero block
    code4 = torch.tensor(NF4, dtype=torch.float32)
    q, absmax = blockwise(x, code4, 64)
    offset = torch.tensor(float(absmax.double().mean()), dtype=torch.float32)
    dyn = create_dynamic_map()
    qa, absmax2 = blockwise(absmax - offset, dyn, 256)
    am = dyn[qa].view(-1)
    am = (torch.cat([am, torch.zeros((-len(am)) % 256)]).view(-1, 256) * absmax2.view(-1, 1))
    am = am.reshape(-1)[:len(qa)] + offset
    deq = code4[q] * am.repeat_interleave(64)[:n]
    qp = torch.cat([q, torch.zeros(n % 2, dtype=torch.int64)])
    packed = (qp[::2] << 4) | qp[1::2]
    ent = [("x", x), ("codes", packed.float()), ("qabsmax", qa.float()), ("absmax2", absmax2),
           ("deq", deq)]
    meta = {"n": str(n), "offset": repr(float(offset)), "note": "generated by tools/gen_lora_ref.py"}
    return f32_file(ent, meta)


def build():
    cfg = gg.make_config(FX)
    names = gg.tensor_names(cfg)
    W32 = gg.make_weights(cfg, SEED, "F32")
    W32["output.weight"] = W32["output.weight"] * 0.3
    Wbf = {k: v.to(torch.bfloat16).float() for k, v in W32.items()}
    rng = np.random.RandomState(SEED)
    V = cfg["vocab_size"]
    ids = rng.randint(0, V, size=(B, T))
    tg = np.full((B, T), -100, dtype=np.int64)
    pos = np.zeros((B, T), dtype=np.int64)
    seg = np.zeros((B, T), dtype=np.int64)
    for r in range(B):
        for d, (s, e) in enumerate(DOCS[r]):
            for j in range(s, e):
                pos[r, j] = j - s
                seg[r, j] = d
                if j + 1 < e and j - s >= 2:  # the first 2 positions of a doc are "prompt"
                    tg[r, j] = ids[r, j + 1]
    tg[1, 9] = -100
    ids_l, tg_l = ids.tolist(), tg.tolist()
    scale = ALPHA / R
    keys = lora_keys(cfg)
    g = torch.Generator().manual_seed(SEED + 1)
    LA = {}
    for kp, wn in keys:
        out_f, in_f = W32[wn].shape
        A = (torch.rand((R, in_f), generator=g) * 2 - 1) / math.sqrt(in_f)
        Bm = torch.randn((out_f, R), generator=g) * 0.05
        LA[wn] = (A, Bm)

    def grads(Wbase):
        W64 = {k: v.double() for k, v in Wbase.items()}
        L64 = {k: (a.double().requires_grad_(True), b.double().requires_grad_(True))
               for k, (a, b) in LA.items()}
        logp = np.zeros((B, T))
        loss = batch_loss(cfg, W64, L64, ids_l, tg_l, scale, logp)
        loss.backward()
        return float(loss), {k: (a.grad.float(), b.grad.float()) for k, (a, b) in L64.items()}, logp

    loss32, g32, logp32 = grads(W32)
    loss16, g16, _ = grads(Wbf)
    # full fine-tuning gradients
    Wf = {k: v.double().requires_grad_(True) for k, v in W32.items()}
    lossfull = batch_loss(cfg, Wf, {}, ids_l, tg_l, scale)
    lossfull.backward()
    gfull = {k: Wf[k].grad.float() for k in names}
    # 5 AdamW steps of the adapter, base frozen (F32)
    W64 = {k: v.double() for k, v in W32.items()}
    P = {k: (a.double().clone().requires_grad_(True), b.double().clone().requires_grad_(True))
         for k, (a, b) in LA.items()}
    plist = [t for kp, wn in keys for t in P[wn]]
    opt = torch.optim.AdamW(plist, lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]),
                            eps=OPT["eps"], weight_decay=OPT["weight_decay"], foreach=False)
    losses = []
    for s in range(STEPS):
        lr = lr_at(s, STEPS, OPT["warmup"], OPT["lr"], OPT["min_lr"])
        for gr in opt.param_groups:
            gr["lr"] = lr
        opt.zero_grad()
        lo = batch_loss(cfg, W64, P, ids_l, tg_l, scale)
        lo.backward()
        torch.nn.utils.clip_grad_norm_(plist, OPT["clip"])
        opt.step()
        losses.append(float(lo))

    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    ent = [("ids", f(ids)), ("targets", f(tg)), ("pos", f(pos)), ("seg", f(seg)),
           ("logp32", f(logp32))]
    for kp, wn in keys:
        for j, ab in enumerate(["lora_A", "lora_B"]):
            key = "%s.%s.weight" % (kp, ab)
            ent.append(("lora." + key, LA[wn][j]))
            ent.append(("g32." + key, g32[wn][j]))
            ent.append(("g16." + key, g16[wn][j]))
            ent.append(("adam." + key, P[wn][j].detach().float()))
    for n in names:
        ent.append(("gfull." + n, gfull[n]))
    meta = {"config": json.dumps(cfg, sort_keys=True), "loss32": repr(loss32),
            "loss16": repr(loss16), "lossfull": repr(float(lossfull)),
            "adam_losses": json.dumps(losses), "opt": json.dumps(OPT), "r": str(R),
            "alpha": repr(ALPHA), "steps": str(STEPS),
            "note": "generated by tools/gen_lora_ref.py"}
    files = {os.path.join(OUT, "ref.safetensors"): f32_file(ent, meta),
             os.path.join(OUT, "nf4.safetensors"): nf4_file()}
    files.update(model_dir(os.path.join(OUT, "base_f32"), cfg, W32, "F32"))
    files.update(model_dir(os.path.join(OUT, "base_bf16"), cfg, Wbf, "BF16"))
    return files, loss32, loss16, float(lossfull), losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk")
    a = ap.parse_args()
    files, l32, l16, lf, losses = build()
    print("loss f32 base %.9f  bf16 base %.9f  full %.9f" % (l32, l16, lf))
    print("adam losses " + " ".join("%.7f" % x for x in losses))
    if a.check:
        bad = [p for p, d in files.items() if not os.path.exists(p) or open(p, "rb").read() != d]
        print("check: " + ("ok" if not bad else "DIFFERS: " + ", ".join(bad)))
        return 1 if bad else 0
    for p, d in files.items():
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p + ".tmp", "wb") as fh:
            fh.write(d)
        os.replace(p + ".tmp", p)
        print("%s: %d bytes" % (os.path.relpath(p, ROOT), len(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
