#!/usr/bin/python3
"""gen_rm_ref.py — a tiny InternLM2ForRewardModel directory + reference rewards.

Writes tests/golden/rm/:
  config.json        InternLM2 config with architectures ["InternLM2ForRewardModel"]
                     and reward_token_id 3 (the tiny vocabulary's <ctrl>)
  model.safetensors  model.* (random, seeded, F32) + v_head.weight [1, C]; no output.weight
  tokenizer.model    tests/golden/tok/tiny_bpe.model (SentencePiece BPE, 600 pieces,
                     <|im_start|> = 4, <|im_end|> = 5 as user-defined symbols)
  input.jsonl        `puyu rm score` input lines (conversations, a condition, pairs)
  expected.json      per line: the token ids and the reference rewards

The reward is computed as HF InternLM2ForRewardModel.get_score() does: the
conversation rendered by the InternLM2 chat template ("<|im_start|>" + role +
"\\n" + content + "<|im_end|>\\n" per turn, no generation prompt), encoded
with BOS by the SentencePiece model (user-defined symbols match whole), the
reward token appended; reward = v_head . (final-norm hidden state of the last
position). The body is tools/gen_golden.py's reference forward, whose LM head
is replaced by the identity so that it returns the hidden states.

Usage: /usr/bin/python3 tools/gen_rm_ref.py   (byte-identical across runs)
"""

import json
import os
import shutil
import sys

import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as G  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "rm")
TOK = os.path.join(ROOT, "tests", "golden", "tok", "tiny_bpe.model")
COND = os.path.join(ROOT, "data", "rm_conditions.json")
REWARD_TOKEN = 3


def render(msgs):
    return "".join("<|im_start|>%s\n%s<|im_end|>\n" % (m["role"], m["content"]) for m in msgs)


def main():
    fx = dict(G.BASE, V=600, C=32, F=40, H=4, Hkv=2, L=2, eps=1e-6, theta=1000000, dtype="F32")
    cfg = G.make_config(fx)
    cfg["architectures"] = ["InternLM2ForRewardModel"]
    cfg["auto_map"] = {"AutoConfig": "configuration_internlm2.InternLM2Config",
                       "AutoModel": "modeling_internlm2.InternLM2ForRewardModel"}
    cfg["max_position_embeddings"] = 256
    cfg["reward_token_id"] = REWARD_TOKEN
    W = G.make_weights(cfg, 9090, "F32")
    C = cfg["hidden_size"]
    g = torch.Generator().manual_seed(9091)
    v_head = torch.randn((1, C), generator=g, dtype=torch.float32) * (2.0 / C ** 0.5)

    names = [n for n in G.tensor_names(cfg) if n != "output.weight"]
    entries = [(n, "F32", tuple(W[n].shape), G.tensor_bytes(W[n], "F32")) for n in names]
    entries.append(("v_head.weight", "F32", (1, C), G.tensor_bytes(v_head, "F32")))

    conds = json.load(open(COND, encoding="utf-8"))["conditions"]
    u1 = {"role": "user", "content": "Hello, who are you?"}
    a1 = {"role": "assistant", "content": "I am a tiny reward model."}
    lines = [
        ({"messages": [u1, a1]}, [[u1, a1]]),
        ({"messages": [{"role": "system", "content": "Be brief."}, u1, a1,
                       {"role": "user", "content": "And what do you do?"},
                       {"role": "assistant", "content": "I score answers: higher is better."}]},
         None),
        ({"condition": "helpful", "messages": [u1, a1]},
         [[{"role": "system", "content": conds["helpful"]}, u1, a1]]),
        ({"messages": [{"role": "user", "content": "你好，世界"},
                       {"role": "assistant", "content": "你好！有什么可以帮你？"}]}, None),
        ({"prompt": [u1], "chosen": "Yes, gladly.", "rejected": "No."},
         [[u1, {"role": "assistant", "content": "Yes, gladly."}],
          [u1, {"role": "assistant", "content": "No."}]]),
        ({"chosen": "\n\nHuman: tell me a joke\n\nAssistant: Why did the GPU cross the road?",
          "rejected": "\n\nHuman: tell me a joke\n\nAssistant: no"},
         [[{"role": "user", "content": "tell me a joke"},
           {"role": "assistant", "content": "Why did the GPU cross the road?"}],
          [{"role": "user", "content": "tell me a joke"},
           {"role": "assistant", "content": "no"}]]),
    ]
    sp = spm.SentencePieceProcessor(model_file=TOK)
    assert sp.get_piece_size() == cfg["vocab_size"], sp.get_piece_size()
    W2 = dict(W)
    W2["output.weight"] = torch.eye(C)  # forward() then returns the hidden states
    expected = []
    for obj, convs in lines:
        if convs is None:
            convs = [obj["messages"]]
        rec = {"ids": [], "rewards": []}
        for conv in convs:
            ids = [cfg["bos_token_id"]] + sp.encode(render(conv)) + [REWARD_TOKEN]
            with torch.no_grad():
                h = G.forward(cfg, W2, ids)
            rec["ids"].append(ids)
            rec["rewards"].append(float(h[-1] @ v_head[0]))
        expected.append(rec)

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(OUT, "model.safetensors"), "wb") as f:
        f.write(G.safetensors_bytes(entries))
    shutil.copyfile(TOK, os.path.join(OUT, "tokenizer.model"))
    with open(os.path.join(OUT, "input.jsonl"), "w", encoding="utf-8") as f:
        for obj, _ in lines:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"reward_token_id": REWARD_TOKEN, "lines": expected,
                   "note": "rewards of input.jsonl lines (conversations: 1, pairs: chosen, "
                           "rejected), float32 torch reference"}, f, indent=1)
        f.write("\n")
    print("wrote", OUT, [r["rewards"] for r in expected])


if __name__ == "__main__":
    main()
