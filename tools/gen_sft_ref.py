#!/usr/bin/python3
"""gen_sft_ref.py — PyTorch reference for 5 AdamW steps of full-parameter SFT
(tests/test_sft_run.c, "full SFT matches torch.optim.AdamW").

Independent of puyu: the records of tests/golden/sft_train/data.jsonl are
rendered and tokenized by tools/gen_sft_data_ref.py's reference (the golden
SentencePiece model tests/golden/sft/spm.model), packed greedily in file
order into rows of at most SEQ tokens (a sample that does not fit starts a
new row), and batch k = rows k*B .. k*B+B-1 (mod the number of rows: puyu's
--no-shuffle --pack). A packed row is computed as its samples run alone
(positions restart, no attention across samples: that is what packing
means), targets = the next token's label within the sample (-100 = masked).
The loss of a step is the mean cross-entropy over all targets of its batch,
before the update. The model is tests/golden/sft/hf (random tiny InternLM2);
the forward is tools/gen_train_ref.py's (float64 here).

AdamW: torch.optim.AdamW(foreach=False), float64, decay on matrices except
the token embedding, linear warmup + cosine to min_lr (pu_lr_at),
clip_grad_norm_ before each step.

Writes tests/golden/sft_train/data.jsonl (once) and ref.json.
Usage: /usr/bin/python3 tools/gen_sft_ref.py
"""
import json
import os
import struct
import sys

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_sft_data_ref as sd  # noqa: E402
import gen_train_ref as gt  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "sft_train")
HF = os.path.join(ROOT, "tests", "golden", "sft", "hf")
SEQ, B, STEPS, ACCUM = 48, 4, 5, 2
OPT = dict(lr=3e-3, min_lr=3e-4, warmup=2, beta1=0.9, beta2=0.95, eps=1e-8,
           weight_decay=0.1, clip=1.0)


def records():
    out = []
    for i in range(16):
        k = i % 4
        if k == 0:
            out.append({"messages": [{"role": "user", "content": "hi %d" % i},
                                     {"role": "assistant", "content": "I am {{name}} %d." % i}]})
        elif k == 1:
            out.append({"instruction": "count to %d" % i, "input": "", "output": "1 2 %d" % i})
        elif k == 2:
            out.append({"conversation": [{"system": "be brief", "input": "q%d" % i,
                                          "output": "a%d" % i},
                                         {"input": "more", "output": "done",
                                          "output_with_loss": i % 8 == 2}]})
        else:
            out.append({"conversations": [{"from": "human", "value": "你好 %d" % i},
                                          {"from": "gpt", "value": "你好！%d" % i}]})
    return out


def load_weights():
    with open(os.path.join(HF, "model.safetensors"), "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    hdr = json.loads(buf[8:8 + n])
    W = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        arr = np.frombuffer(buf[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"])
        W[k] = torch.tensor(arr.copy())
    return W


def main():
    os.makedirs(OUT, exist_ok=True)
    dpath = os.path.join(OUT, "data.jsonl")
    if not os.path.exists(dpath):
        sd.write_jsonl(dpath, records())
    with open(dpath, encoding="utf-8") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    sp = spm.SentencePieceProcessor(model_file=os.path.join(ROOT, "tests", "golden", "sft",
                                                            "spm.model"))
    enc = sd.Enc(sp, {s: sp.piece_to_id(s) for s in sd.SPECIALS})
    samples = []
    for r in recs:
        ids, labels = sd.tokenize(enc, sp.bos_id(), sd.parse(r))
        ids, labels = ids[:SEQ], labels[:SEQ]
        assert any(x >= 0 for x in labels[1:])
        samples.append((ids, [labels[t + 1] if t + 1 < len(ids) else -100
                              for t in range(len(ids))]))
    rows, cur, n = [], [], 0
    for s in samples:
        if cur and n + len(s[0]) <= SEQ:
            cur.append(s)
            n += len(s[0])
        else:
            if cur:
                rows.append(cur)
            cur, n = [s], len(s[0])
    rows.append(cur)

    with open(os.path.join(HF, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("rope_scaling", None)
    W32 = load_weights()
    names = sorted(W32)
    P = {k: v.double().clone().requires_grad_(True) for k, v in W32.items()}
    decay = [P[n] for n in names if n.endswith(".weight") and "norm" not in n
             and "tok_embeddings" not in n]
    nodecay = [P[n] for n in names if not any(P[n] is d for d in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"],
                            foreach=False)
    losses, norms, counts = [], [], []
    for s in range(STEPS):
        lr = gt.lr_at(s, STEPS, OPT["warmup"], OPT["lr"], OPT["min_lr"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        batch = [rows[(s * B + j) % len(rows)] for j in range(B)]
        docs = [d for row in batch for d in row]
        lo = gt.batch_loss(cfg, P, [d[0] for d in docs], [d[1] for d in docs])
        counts.append(sum(sum(1 for x in d[1] if x >= 0) for d in docs))
        lo.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(P.values()), OPT["clip"])))
        opt.step()
        losses.append(float(lo))
    ref = {"losses": losses, "grad_norms": norms, "targets": counts, "rows": len(rows),
           "seq": SEQ, "batch": B, "grad_accum": ACCUM, "steps": STEPS, "opt": OPT,
           "vars": sd.VARS, "note": "generated by tools/gen_sft_ref.py (float64 torch)"}
    with open(os.path.join(OUT, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print("rows %d, losses %s" % (len(rows), " ".join("%.6f" % x for x in losses)))


if __name__ == "__main__":
    main()
