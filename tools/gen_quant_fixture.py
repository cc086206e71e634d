#!/usr/bin/env python3
"""Fixtures for puyu's ggml block types (tests/test_quant.c), from llama.cpp's
own reference: gguf-py's dequantizer and quantizer (gguf/quants.py).

  /usr/bin/python3 tools/gen_quant_fixture.py --gguf-py /path/to/llama.cpp/gguf-py

--gguf-py is a llama.cpp checkout's gguf-py directory (it needs numpy only);
nothing of it is vendored into puyu. Writes tests/golden/quant/:
  <type>.blocks  random blocks (valid fp16 scales, random payload bytes)
  <type>.f32     gguf-py's dequantization of them (float32 little-endian)
  <type>.qin     random float32 rows (legacy types: gguf-py has a quantizer)
  <type>.qout    gguf-py's quantization of <type>.qin
and fuzz/seeds/fuzz_gguf/quant_types.gguf (one tensor per block type).
"""
import argparse
import os
import sys

import numpy as np

# fp16 fields of each block: (byte offsets), block bytes, elements
LAYOUT = {
    "Q8_0": ((0,), 34, 32),
    "Q4_0": ((0,), 18, 32),
    "Q4_1": ((0, 2), 20, 32),
    "Q5_0": ((0,), 22, 32),
    "Q5_1": ((0, 2), 24, 32),
    "Q4_K": ((0, 2), 144, 256),
    "Q5_K": ((0, 2), 176, 256),
    "Q6_K": ((208,), 210, 256),
}
QUANTIZERS = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py directory")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "golden", "quant"))
    a = ap.parse_args()
    sys.path.insert(0, a.gguf_py)
    from gguf.constants import GGMLQuantizationType as GT  # noqa: E402
    from gguf import quants  # noqa: E402

    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(1234)
    for name, (halves, bbytes, blck) in LAYOUT.items():
        qt = GT[name]
        n_el = 4096 if blck == 256 else 2048
        nb = n_el // blck
        raw = rng.integers(0, 256, size=(nb, bbytes), dtype=np.uint8)
        for off in halves:
            h = (rng.standard_normal(nb) * 0.05).astype(np.float16)
            h[0] = np.float16(0.0)
            h[1] = np.float16(-6e-6)  # subnormal half
            raw[:, off:off + 2] = h.view(np.uint8).reshape(nb, 2)
        rows = raw.reshape(1, -1)
        deq = quants.dequantize(rows, qt).astype("<f4").reshape(-1)
        assert deq.size == n_el and np.all(np.isfinite(deq)), name
        raw.tofile(os.path.join(a.out, name.lower() + ".blocks"))
        deq.tofile(os.path.join(a.out, name.lower() + ".f32"))
        if name in QUANTIZERS:
            x = rng.standard_normal((8, 256)).astype(np.float32)
            x[1] *= 1e-3
            x[2, :32] = 0.0          # an all-zero block
            x[3] = np.round(x[3] * 4) / 4  # many exact ties
            x[4, :32] = 5.0          # constant block
            q = quants.quantize(x, qt)
            x.astype("<f4").tofile(os.path.join(a.out, name.lower() + ".qin"))
            q.astype(np.uint8).tofile(os.path.join(a.out, name.lower() + ".qout"))
    print("wrote", a.out)
    write_fuzz_seed(rng, quants, GT)


def write_fuzz_seed(rng, quants, GT):
    """fuzz/seeds/fuzz_gguf/quant_types.gguf: one 2-row tensor per block
    type (random blocks, valid fp16 scales) plus a Q2_K one (unsupported)."""
    import struct
    ALIGN = 32

    def s(b):
        b = b.encode()
        return struct.pack("<Q", len(b)) + b
    kv = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    tensors = []
    for name, (halves, bbytes, blck) in LAYOUT.items():
        raw = rng.integers(0, 256, size=(2 * (256 // blck), bbytes), dtype=np.uint8)
        for off in halves:
            h = (rng.standard_normal(raw.shape[0]) * 0.05).astype(np.float16)
            raw[:, off:off + 2] = h.view(np.uint8).reshape(-1, 2)
        tensors.append((name.lower(), int(GT[name]), raw.tobytes()))
    tensors.append(("q2_k", 10, bytes(2 * 84)))
    out = bytearray(b"GGUF") + struct.pack("<IQQ", 3, len(tensors), 1) + kv
    off, blobs = 0, []
    for name, gt, data in tensors:
        out += s(name) + struct.pack("<IQQIQ", 2, 256, 2, gt, off)
        blobs.append((off, data))
        off += len(data) + (-len(data)) % ALIGN
    out += b"\0" * ((-len(out)) % ALIGN)
    base = len(out)
    for o, data in blobs:
        out += b"\0" * (base + o - len(out)) + data
    p = os.path.join(os.path.dirname(__file__), "..", "fuzz", "seeds", "fuzz_gguf",
                     "quant_types.gguf")
    with open(p, "wb") as f:
        f.write(out)
    print("wrote", p)


if __name__ == "__main__":
    main()
