#!/usr/bin/python3
"""gen_lora_infer_ref.py — PEFT LoRA adapters for tests/golden/gqa2 and the
reference logits of the adapted model (PyTorch, HF semantics).

Writes tests/golden/lora/:
  a/   adapter_config.json + adapter_model.safetensors (F32): every target
       (wqkv, wo, w1, w2, w3, output) of both layers, r = 4, lora_alpha 8,
       use_rslora false (scale alpha/r = 2); target_modules as short names.
  b/   BF16 tensors, r = 2, lora_alpha 3, use_rslora true (scale 3/sqrt(2)),
       target_modules a regex string (PEFT: re.fullmatch over module names)
       selecting wqkv, w2 and output.
  expected.json   input_ids (gqa2's), the scales, greedy ids of base + a
  logits_a.f32      W + s_a B_a A_a                      (n, V) float32 LE
  logits_b.f32      W + s_b B_b A_b
  logits_ab.f32     W + s_a B_a A_a + s_b B_b A_b        (two adapters at once)
  logits_a_half.f32 W + 0.5 s_a B_a A_a                  (--lora-scale 0.5)
  logits_a_f16.f32  W rounded to F16 (2-D tensors, as tests/golden/gguf/
                    gqa2-llama-f16.gguf stores them) + s_a B_a A_a

The reference merges W' = W + s * B @ A in float32 (PEFT's merge: delta =
scale * B @ A added to the base weight; B's wqkv rows in the packed grouped
layout) and runs tools/gen_golden.py's forward(), an independent transcription
of HF modeling_internlm2.py. A is drawn from N(0, 1/in) and B from N(0, 0.3^2)
(non-zero, unlike PEFT's init, so every adapter matters).

Usage: /usr/bin/python3 tools/gen_lora_infer_ref.py  (deterministic output)
"""

import json
import math
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_golden  # noqa: E402
import gen_gguf_fixture  # noqa: E402  (read_safetensors)

torch.set_num_threads(1)
GOLDEN = os.path.join(ROOT, "tests", "golden")
OUT = os.path.join(GOLDEN, "lora")
PARTS = {"wqkv": "attention.wqkv", "wo": "attention.wo", "w1": "feed_forward.w1",
         "w2": "feed_forward.w2", "w3": "feed_forward.w3"}


def shapes(cfg):
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    Hkv = cfg["num_key_value_heads"]
    D = C // H
    F = cfg["intermediate_size"]
    return {"wqkv": ((H + 2 * Hkv) * D, C), "wo": (C, H * D), "w1": (F, C), "w2": (C, F),
            "w3": (F, C), "output": (cfg["vocab_size"], C)}


def make_adapter(cfg, targets, r, seed, dtype):
    """{(layer or None, target): (A (r, in), B (out, r))} rounded to dtype."""
    g = torch.Generator().manual_seed(seed)
    sh = shapes(cfg)
    tdt = {"F32": torch.float32, "BF16": torch.bfloat16}[dtype]
    out = {}
    for t in targets:
        layers = [None] if t == "output" else range(cfg["num_hidden_layers"])
        for i in layers:
            o, n = sh[t]
            A = torch.randn((r, n), generator=g) / math.sqrt(n)
            B = torch.randn((o, r), generator=g) * 0.3
            out[(i, t)] = (A.to(tdt).float(), B.to(tdt).float())
    return out


def key(i, t, ab):
    if t == "output":
        return "base_model.model.output.lora_%s.weight" % ab
    return "base_model.model.model.layers.%d.%s.lora_%s.weight" % (i, PARTS[t], ab)


def write_adapter(d, cfg_json, ad, dtype):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2, sort_keys=True)
        f.write("\n")
    entries = []
    for (i, t), (A, B) in ad.items():
        entries.append((key(i, t, "A"), dtype, A.shape, gen_golden.tensor_bytes(A, dtype)))
        entries.append((key(i, t, "B"), dtype, B.shape, gen_golden.tensor_bytes(B, dtype)))
    with open(os.path.join(d, "adapter_model.safetensors"), "wb") as f:
        f.write(gen_golden.safetensors_bytes(entries))


def merged(W, adapters):
    """W + sum scale * B @ A over [(adapter, scale)]"""
    M = {k: v.clone() for k, v in W.items()}
    for ad, s in adapters:
        for (i, t), (A, B) in ad.items():
            name = "output.weight" if t == "output" else \
                "model.layers.%d.%s.weight" % (i, PARTS[t])
            M[name] = M[name] + s * (B @ A)
    return M


def peft_config(r, alpha, rslora, targets):
    return {"alpha_pattern": {}, "auto_mapping": None,
            "base_model_name_or_path": "tests/golden/gqa2", "bias": "none",
            "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
            "layers_pattern": None, "layers_to_transform": None, "lora_alpha": alpha,
            "lora_dropout": 0.0, "modules_to_save": None, "peft_type": "LORA", "r": r,
            "rank_pattern": {}, "revision": None, "target_modules": targets,
            "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": rslora}


def main():
    src = os.path.join(GOLDEN, "gqa2")
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(src, "expected.json")) as f:
        ids = json.load(f)["input_ids"]
    W = {k: torch.from_numpy(np.ascontiguousarray(v))
         for k, v in gen_gguf_fixture.read_safetensors(os.path.join(src, "model.safetensors")).items()}
    all_t = ["wqkv", "wo", "w1", "w2", "w3", "output"]
    a = make_adapter(cfg, all_t, 4, 1234, "F32")
    b = make_adapter(cfg, ["wqkv", "w2", "output"], 2, 4321, "BF16")
    sa, sb = 8 / 4, 3 / math.sqrt(2)
    write_adapter(os.path.join(OUT, "a"), peft_config(4, 8, False, all_t), a, "F32")
    write_adapter(os.path.join(OUT, "b"),
                  peft_config(2, 3, True, r".*\.(wqkv|w2)|output"), b, "BF16")
    W16 = {k: (v.to(torch.float16).float() if v.dim() == 2 else v) for k, v in W.items()}
    refs = {"logits_a": merged(W, [(a, sa)]), "logits_b": merged(W, [(b, sb)]),
            "logits_ab": merged(W, [(a, sa), (b, sb)]),
            "logits_a_half": merged(W, [(a, 0.5 * sa)]),
            "logits_a_f16": merged(W16, [(a, sa)])}
    base = gen_golden.forward(cfg, W, ids)
    meta = {"input_ids": ids, "scale_a": sa, "scale_b": sb}
    with torch.no_grad():
        for name, M in refs.items():
            lg = gen_golden.forward(cfg, M, ids)
            meta["max_abs_diff_vs_base_" + name] = float((lg - base).abs().max())
            lg.numpy().astype("<f4").tofile(os.path.join(OUT, name + ".f32"))
        gids, margin = gen_golden.greedy(cfg, refs["logits_a"], ids, 8)
    meta["greedy_ids_a"] = gids
    meta["min_greedy_margin_a"] = margin
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
