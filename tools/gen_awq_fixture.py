#!/usr/bin/env python3
"""AWQ checkpoint fixture (run once; outputs committed under tests/golden/).

tests/golden/awq/      an AutoAWQ / LMDeploy-style InternLM2 directory:
                       config.json with quantization_config {quant_method awq,
                       bits 4, group_size 128, zero_point, version gemm};
                       model.safetensors with X.qweight (I32 in x out/8),
                       X.qzeros (I32 in/128 x out/8), X.scales (F16 in/128 x out)
                       for every linear, F16 embeddings / norms / output.
tests/golden/awq_ref/  the same model with every linear dequantized to F32
                       (X.weight, out x in), no quantization_config.

Quantization and packing follow AutoAWQ (awq/quantize/quantizer.py
pseudo_quantize_tensor with zero_point: scales = (max - min) / 15, zeros =
-round(min / scales), q = clamp(round(w / s) + z, 0, 15); WQLinear_GEMM
from_linear: int32 column c holds columns 8c + AWQ_ORDER[k] in nibble k,
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]). The reference dequantization is done
independently on the packed tensors the way AutoAWQ's packing_utils unpacks
them (shift by 0, 4, ..., 28, then AWQ_REVERSE_ORDER [0, 4, 1, 5, 2, 6, 3, 7]),
(iweight - izeros) * scales in fp32, and checked against the codes it packed.
"""
import json
import os
import struct

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]
G = 128

CFG = {
    "architectures": ["InternLM2ForCausalLM"],
    "model_type": "internlm2",
    "bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 128,
    "intermediate_size": 256,
    "initializer_range": 0.02,
    "max_position_embeddings": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 1,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "use_cache": True,
    "vocab_size": 64,
}


def write_st(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        a = tensors[k]
        dt = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int32"): "I32"}[a.dtype]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def awq_quantize(w):
    """w (out, in) float32 -> intweight (in, out) int32, zeros (in/G, out), scales f16"""
    out, inn = w.shape
    wg = w.reshape(out, inn // G, G)
    mx, mn = wg.max(axis=2), wg.min(axis=2)
    scales = np.maximum(mx - mn, 1e-5) / 15.0
    scales = scales.astype(np.float16)  # stored half, used half
    s32 = scales.astype(np.float32)
    zeros = np.clip(-np.round(mn / s32), 0, 15).astype(np.int32)
    q = np.clip(np.round(wg / s32[:, :, None]) + zeros[:, :, None], 0, 15).astype(np.int32)
    q = q.reshape(out, inn)
    # AutoAWQ layouts: intweight (in, out), zeros / scales (in/G, out)
    return q.T.copy(), zeros.T.copy(), scales.T.copy()


def pack(intw):
    """(rows, cols) codes -> (rows, cols/8) int32, WQLinear_GEMM.from_linear order"""
    t = torch.from_numpy(intw.astype(np.int32))
    packed = torch.zeros((t.shape[0], t.shape[1] // 8), dtype=torch.int32)
    for col in range(t.shape[1] // 8):
        for i in range(8):
            packed[:, col] |= t[:, col * 8 + AWQ_ORDER[i]] << (i * 4)
    return packed.numpy()


def unpack(packed):
    """AutoAWQ packing_utils.unpack_awq + reverse_awq_order"""
    t = torch.from_numpy(packed)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    iw = torch.bitwise_right_shift(t[:, :, None], shifts[None, None, :]).to(torch.int8)
    iw = iw.view(iw.shape[0], -1)
    rev = torch.arange(iw.shape[-1], dtype=torch.int32).view(-1, 8)[:, AWQ_REVERSE_ORDER].view(-1)
    iw = iw[:, rev.long()]
    return torch.bitwise_and(iw, 0xF).to(torch.int32).numpy()


def main():
    rng = np.random.default_rng(20261203)
    C, F, H, Hkv = CFG["hidden_size"], CFG["intermediate_size"], 4, 2
    D, V = C // H, CFG["vocab_size"]
    lin = {
        "model.layers.0.attention.wqkv": ((H + 2 * Hkv) * D, C),
        "model.layers.0.attention.wo": (C, H * D),
        "model.layers.0.feed_forward.w1": (F, C),
        "model.layers.0.feed_forward.w3": (F, C),
        "model.layers.0.feed_forward.w2": (C, F),
    }
    awq_t, ref_t = {}, {}
    f16 = {
        "model.tok_embeddings.weight": rng.normal(0, 0.5, (V, C)),
        "output.weight": rng.normal(0, 0.1, (V, C)),
        "model.norm.weight": 1 + rng.normal(0, 0.1, C),
        "model.layers.0.attention_norm.weight": 1 + rng.normal(0, 0.1, C),
        "model.layers.0.ffn_norm.weight": 1 + rng.normal(0, 0.1, C),
    }
    for k, v in f16.items():
        awq_t[k] = v.astype(np.float16)
        ref_t[k] = v.astype(np.float16)
    for name, (out, inn) in lin.items():
        w = rng.normal(0, 0.08, (out, inn)).astype(np.float32)
        w[:, rng.integers(0, inn, 3)] *= 6  # a few outlier input channels
        intw, zeros, scales = awq_quantize(w)
        qweight, qzeros = pack(intw), pack(zeros)
        # independent unpack, checked against the codes
        uq, uz = unpack(qweight), unpack(qzeros)
        assert (uq == intw).all() and (uz == zeros).all()
        zfull = np.repeat(uz, G, axis=0)  # (in, out)
        sfull = np.repeat(scales.astype(np.float32), G, axis=0)
        deq = ((uq - zfull).astype(np.float32) * sfull).T.copy()  # (out, in)
        awq_t[name + ".qweight"] = qweight
        awq_t[name + ".qzeros"] = qzeros
        awq_t[name + ".scales"] = scales
        ref_t[name + ".weight"] = deq.astype(np.float32)
    d_awq = os.path.join(ROOT, "tests", "golden", "awq")
    d_ref = os.path.join(ROOT, "tests", "golden", "awq_ref")
    for d in (d_awq, d_ref):
        os.makedirs(d, exist_ok=True)
    cfg = dict(CFG)
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": G,
                                  "zero_point": True, "version": "gemm"}
    with open(os.path.join(d_awq, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    with open(os.path.join(d_ref, "config.json"), "w") as f:
        json.dump(CFG, f, indent=2, sort_keys=True)
    write_st(os.path.join(d_awq, "model.safetensors"), awq_t)
    write_st(os.path.join(d_ref, "model.safetensors"), ref_t)
    print("wrote", d_awq, d_ref)


if __name__ == "__main__":
    main()
