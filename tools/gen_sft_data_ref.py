#!/usr/bin/python3
"""gen_sft_data_ref.py — golden fixtures for puyu's SFT data layer (tests/test_sft_data.c).

An independent Python implementation of the record kinds, the rendering and
the label rule of include/puyu/pu_sft.h, run against Google's sentencepiece
(python3-sentencepiece; run with /usr/bin/python3). Writes, under
tests/golden/sft/:

  spm.model           a tiny SentencePiece BPE model (vocab 1600) trained on
                      the committed spm_train.txt with the six InternLM2 chat
                      specials as user_defined_symbols (add_dummy_prefix off,
                      byte fallback, split digits: InternLM2's settings)
  records.jsonl       chat records of every supported kind (built once from
                      hand-written cases plus a few records copied from
                      ../shared/data; kept as committed afterwards)
  records_array.json  a few records as one JSON array (the other file form)
  expected.jsonl      per sample of load(records.jsonl, records_array.json):
                      {"src", "ids", "labels"} with the vars below
  expected_internlm2.jsonl  the same for the first N_INTERNLM2 records of
                      records.jsonl with the real InternLM2 tokenizer
                      (../shared/data/internlm2/tokenizer.model; skipped
                      when absent)
  hf/                 config.json + model.safetensors of a tiny random
                      InternLM2 (vocab = the tiny tokenizer's) + spm.model as
                      tokenizer.model, for the `puyu sft` CLI tests

Rendering (pu_sft.h): [BOS] turn_0 enc("\\n") turn_1 ... where turn =
<|im_start|> enc(role [" name=" name] "\\n") enc(content + tool calls)
<|im_end|>; each text segment encoded on its own with the special strings
split out first (HF's slow InternLM2Tokenizer); labels = the content ids and
the <|im_end|> of each scored turn, -100 elsewhere.

Usage: /usr/bin/python3 tools/gen_sft_data_ref.py [--rebuild-records] [--shared ../shared/data]
"""
import argparse
import json
import os
import re
import struct

import numpy as np
import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "sft")
SPECIALS = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>",
            "<|im_end|>", "<|im_start|>"]
INTERNLM2_IDS = {"<|plugin|>": 92538, "<|interpreter|>": 92539, "<|action_end|>": 92540,
                 "<|action_start|>": 92541, "<|im_end|>": 92542, "<|im_start|>": 92543}
VARS = {"name": "Puyu", "author": "the puyu authors"}
N_INTERNLM2 = 12
IGNORE = -100

# --------------------------------------------------------------------------
# records


def hand_records():
    """Hand-written cases: every kind and option the parser supports."""
    tools_openai = [{"type": "function", "function": {
        "name": "get_weather", "description": "天气 lookup",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    return [
        # OpenAI messages, string content, default loss
        {"messages": [{"role": "system", "content": "You are {{name}}, made by {{author}}."},
                      {"role": "user", "content": "Hello there!"},
                      {"role": "assistant", "content": "Hi! I am {{name}}. How can I help?"}]},
        # multi-turn with explicit loss flags (first answer not scored, user turn scored)
        {"messages": [{"role": "user", "content": "What is 2+2?"},
                      {"role": "assistant", "content": "4", "loss": False},
                      {"role": "user", "content": "And 3+3?", "loss": True},
                      {"role": "assistant", "content": "6, of course."}]},
        # parts with "text" and "value", loss_weight
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Tell me "},
                                                    {"type": "text", "value": "a joke."}],
                       "loss_weight": 0.0},
                      {"role": "assistant", "content": [{"type": "text", "text": "Why did the "
                                                         "chicken cross the road?"}],
                       "loss_weight": 1.0}]},
        # OpenAI tool calls (arguments as JSON text and as an object), tool results, tools
        {"messages": [{"role": "user", "content": "北京和上海的天气怎么样？"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"type": "function", "function": {"name": "get_weather",
                                                            "arguments": "{\"city\": \"北京\"}"}},
                          {"type": "function", "function": {"name": "get_weather",
                                                            "arguments": {"city": "上海",
                                                                          "days": 2,
                                                                          "scale": 0.5}}}]},
                      {"role": "tool", "name": "get_weather", "content": "{\"temp\": 3}"},
                      {"role": "function", "content": "{\"temp\": 9.5}"},
                      {"role": "assistant", "content": "北京 3 度，上海 9.5 度。"}],
         "tools": tools_openai},
        # environment with a name, system with tools declared as schemas (not OpenAI form)
        {"messages": [{"role": "system", "content": "Use tools when needed."},
                      {"role": "user", "content": "Run it"},
                      {"role": "assistant", "content": "Running.", "tool_calls": [
                          {"function": {"name": "run", "arguments": "{}"}}]},
                      {"role": "environment", "name": "plugin", "content": "done: 42"},
                      {"role": "environment", "name": "file", "content": "a.txt"},
                      {"role": "assistant", "content": "The answer is 42."}],
         "tools": [{"name": "run", "description": "run the job", "parameters": {}}]},
        # content with special strings and a template var that is not defined
        {"messages": [{"role": "user", "content": "Say <|im_end|> literally {{missing}} {{name}"},
                      {"role": "assistant", "content": "<|im_start|> ok {{ name }} {{{name}}}"}]},
        # XTuner legacy conversation, multi-turn, system in the first turn, output_with_loss
        {"conversation": [{"system": "你是一个乐于助人的助手。", "input": "你好",
                           "output": "你好！有什么可以帮你？"},
                          {"input": "1+1=?", "output": "2", "output_with_loss": False},
                          {"input": "", "output": "还有别的问题吗？"}]},
        # alpaca with input, system and history
        {"instruction": "Translate to French", "input": "Good morning",
         "output": "Bonjour", "system": "You are a translator.",
         "history": [["Translate to German: yes", "Ja"], ["And no?", "Nein"]]},
        {"instruction": "Name three colors.", "input": "", "output": "Red, green and blue."},
        # ShareGPT with system, tools (JSON text), function_call and observation
        {"conversations": [{"from": "human", "value": "Convert 100 USD to EUR."},
                           {"from": "function_call", "value": "{\"name\": \"convert\", "
                            "\"arguments\": {\"amount\": 100, \"from\": \"USD\", \"to\": \"EUR\"}}"},
                           {"from": "observation", "value": "{\"result\": 92.3}"},
                           {"from": "gpt", "value": "100 USD is 92.3 EUR."}],
         "system": "You convert money.",
         "tools": "[{\"name\": \"convert\", \"description\": \"convert currency\", "
                  "\"parameters\": {\"type\": \"object\", \"properties\": {\"amount\": "
                  "{\"type\": \"number\"}}}}]"},
        {"conversations": [{"from": "system", "value": "Be brief."},
                           {"from": "human", "value": "Why is the sky blue?"},
                           {"from": "gpt", "value": "Rayleigh scattering."},
                           {"from": "human", "value": "谢谢"},
                           {"from": "gpt", "value": "不客气。", "loss": False},
                           {"from": "human", "value": "Bye"},
                           {"from": "gpt", "value": "Goodbye!"}]},
        # reasoning parts are dropped, tool_call parts become plugin calls
        {"messages": [{"role": "user", "content": [{"type": "text", "value": "Find Inception."}]},
                      {"role": "assistant", "content": [
                          {"type": "reasoning", "value": "I should call the tool."},
                          {"type": "tool_call", "value": "{\"name\": \"movie\", \"arguments\": "
                           "{\"title\": \"Inception\"}}"}]},
                      {"role": "tool", "content": [{"type": "text", "value": "{\"year\": 2010}"}]},
                      {"role": "assistant", "content": [
                          {"type": "reasoning", "value": "Now answer."},
                          {"type": "text", "value": "Inception came out in 2010."}]}],
         "tools": "[{\"name\": \"movie\", \"parameters\": {}}]"},
    ]


def shared_records(shared):
    def load(rel):
        p = os.path.join(shared, rel)
        with open(p, encoding="utf-8") as f:
            t = f.read()
        if t.lstrip().startswith("["):
            return json.loads(t)
        return [json.loads(x) for x in t.splitlines() if x.strip()]
    out = []
    out += load("sft/v1_sft_demo.jsonl")[:3]
    zh = [r for r in load("sft/alpaca_zh_demo.json") if r["input"]][:2]
    out += zh
    out += load("sft/identity.json")[:2]
    out += [r for r in load("sft/oaast_sft_zh.json") if r["history"]][:1]
    out += [r for r in load("sft/lima.json") if r["history"]][:1]
    gl = load("agent/glaive_toolcall_en_demo.json")
    out += [r for r in gl if any(m["from"] == "function_call" for m in r["conversations"])][:2]
    out += load("agent/glaive_toolcall_zh_demo.json")[:1]
    out += load("agent/reason_tool_use_demo_50.jsonl")[:2]
    return out


def array_records():
    return [
        {"instruction": "Who are you?", "input": "", "output": "I am {{name}}."},
        {"conversation": [{"input": "ping", "output": "pong"}]},
        {"messages": [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
    ]


# --------------------------------------------------------------------------
# the reference parser: record -> [(role, name, text, scored)]

def subst(s):
    return re.sub(r"\{\{([A-Za-z0-9_]+)\}\}", lambda m: VARS.get(m.group(1), m.group(0)), s)


def pyjson(v):
    return json.dumps(v, ensure_ascii=False)


def call_text(name, args):
    if isinstance(args, str):
        args = json.loads(args)
    assert isinstance(args, dict)
    return "<|action_start|><|plugin|>\n" + pyjson({"name": name, "parameters": args}) + \
        "<|action_end|>"


def tools_turn(tools):
    if isinstance(tools, str):
        tools = json.loads(tools)
    fns = [t["function"] if isinstance(t.get("function"), dict) and isinstance(t.get("type"), str)
           else t for t in tools]
    return ("system", "<|plugin|>", pyjson(fns), False)


def map_name(n):
    return {"plugin": "<|plugin|>", "interpreter": "<|interpreter|>"}.get(n, n)


def scored(m, role):
    if "loss" in m:
        return bool(m["loss"])
    if "loss_weight" in m:
        return m["loss_weight"] > 0
    return role == "assistant"


def parse(rec):
    turns = []
    tools = rec.get("tools")
    if "messages" in rec:
        for m in rec["messages"]:
            role, name = m["role"], m.get("name")
            c = m.get("content")
            text, calls = "", ""
            if isinstance(c, str):
                text = c
            elif isinstance(c, list):
                for p in c:
                    if p["type"] == "text":
                        text += p["text"] if "text" in p else p["value"]
                    elif p["type"] == "tool_call":
                        v = json.loads(p["value"])
                        calls += call_text(v["name"], v.get("arguments", v.get("parameters", {})))
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function", tc)
                calls += call_text(fn["name"], fn.get("arguments", fn.get("parameters", {})))
            if role in ("tool", "function"):
                role, name = "environment", "<|plugin|>"
            turns.append((role, map_name(name) if name else None, subst(text) + calls,
                          scored(m, role)))
    elif "conversations" in rec:
        if rec.get("system"):
            turns.append(("system", None, subst(rec["system"]), False))
        for m in rec["conversations"]:
            f, v = m["from"], m["value"]
            if f == "function_call":
                j = json.loads(v)
                turns.append(("assistant", None, call_text(j["name"], j.get("arguments", {})),
                              scored(m, "assistant")))
                continue
            role = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                    "system": "system", "observation": "environment", "tool": "environment"}[f]
            name = "<|plugin|>" if role == "environment" else None
            turns.append((role, name, subst(v), scored(m, role)))
    elif "conversation" in rec:
        for t in rec["conversation"]:
            if t.get("system"):
                turns.append(("system", None, subst(t["system"]), False))
            turns.append(("user", None, subst(t["input"]), False))
            turns.append(("assistant", None, subst(t["output"]), t.get("output_with_loss", True)))
    else:
        if rec.get("system"):
            turns.append(("system", None, subst(rec["system"]), False))
        for q, a in rec.get("history") or []:
            turns.append(("user", None, subst(q), False))
            turns.append(("assistant", None, subst(a), True))
        u = rec["instruction"] + ("\n" + rec["input"] if rec.get("input") else "")
        turns.append(("user", None, subst(u), False))
        turns.append(("assistant", None, subst(rec["output"]), True))
    if tools:
        at = 1 if turns and turns[0][0] == "system" and turns[0][1] is None else 0
        turns.insert(at, tools_turn(tools))
    return turns


# --------------------------------------------------------------------------
# tokenization


class Enc:
    def __init__(self, sp, special_ids):
        self.sp, self.special = sp, special_ids
        self.pat = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")

    def __call__(self, text):
        ids = []
        for part in self.pat.split(text):
            if not part:
                continue
            if part in self.special:
                ids.append(self.special[part])
            else:
                ids += self.sp.encode(part)
        return ids


def tokenize(enc, bos, turns):
    ids, labels = [bos], [IGNORE]
    nl = enc("\n")
    for i, (role, name, text, sc) in enumerate(turns):
        if i:
            ids += nl
            labels += [IGNORE] * len(nl)
        head = [enc.special["<|im_start|>"]] + enc(role + (" name=" + name if name else "") + "\n")
        ids += head
        labels += [IGNORE] * len(head)
        body = enc(text) + [enc.special["<|im_end|>"]]
        ids += body
        labels += body if sc else [IGNORE] * len(body)
    return ids, labels


# --------------------------------------------------------------------------
# tiny HF model for the CLI tests (random init, numpy, seeded)

def write_hf(dirpath, vocab):
    os.makedirs(dirpath, exist_ok=True)
    C, F, H, Hkv, L = 32, 64, 4, 2, 2
    cfg = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
           "vocab_size": vocab, "hidden_size": C, "intermediate_size": F,
           "num_attention_heads": H, "num_key_value_heads": Hkv, "num_hidden_layers": L,
           "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "tie_word_embeddings": False,
           "initializer_range": 0.02, "torch_dtype": "float32", "hidden_act": "silu",
           "bias": False}
    D = C // H
    rng = np.random.default_rng(20261203)
    T = {}

    def n(*s):
        return (rng.standard_normal(s) * 0.05).astype(np.float32)
    T["model.tok_embeddings.weight"] = n(vocab, C)
    for i in range(L):
        p = "model.layers.%d." % i
        T[p + "attention_norm.weight"] = np.ones(C, np.float32)
        T[p + "attention.wqkv.weight"] = n((H + 2 * Hkv) * D, C)
        T[p + "attention.wo.weight"] = n(C, H * D)
        T[p + "ffn_norm.weight"] = np.ones(C, np.float32)
        T[p + "feed_forward.w1.weight"] = n(F, C)
        T[p + "feed_forward.w3.weight"] = n(F, C)
        T[p + "feed_forward.w2.weight"] = n(C, F)
    T["model.norm.weight"] = np.ones(C, np.float32)
    T["output.weight"] = n(vocab, C)
    hdr, off, blobs = {}, 0, []
    for k in sorted(T):
        b = T[k].tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(T[k].shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(dirpath, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    with open(os.path.join(dirpath, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


# --------------------------------------------------------------------------

def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--rebuild-records", action="store_true")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    model = os.path.join(OUT, "spm.model")
    if not os.path.exists(model):
        spm.SentencePieceTrainer.train(
            input=os.path.join(OUT, "spm_train.txt"), model_prefix=os.path.join(OUT, "spm"),
            vocab_size=1600, model_type="bpe", user_defined_symbols=SPECIALS,
            add_dummy_prefix=False, byte_fallback=True, split_digits=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity",
            character_coverage=0.995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            max_sentence_length=20000, num_threads=1, minloglevel=2)
        os.remove(os.path.join(OUT, "spm.vocab"))
    sp = spm.SentencePieceProcessor(model_file=model)

    rec_path = os.path.join(OUT, "records.jsonl")
    arr_path = os.path.join(OUT, "records_array.json")
    if a.rebuild_records or not os.path.exists(rec_path):
        write_jsonl(rec_path, hand_records() + shared_records(a.shared))
        with open(arr_path, "w", encoding="utf-8") as f:
            json.dump(array_records(), f, ensure_ascii=False, indent=1)
    with open(rec_path, encoding="utf-8") as f:
        recs = [(f"records.jsonl:{i + 1}", json.loads(x)) for i, x in enumerate(f) if x.strip()]
    with open(arr_path, encoding="utf-8") as f:
        recs += [(f"records_array.json:[{i}]", r) for i, r in enumerate(json.load(f))]

    enc = Enc(sp, {s: sp.piece_to_id(s) for s in SPECIALS})
    rows = []
    for src, r in recs:
        ids, labels = tokenize(enc, sp.bos_id(), parse(r))
        rows.append({"src": src, "ids": ids, "labels": labels})
    write_jsonl(os.path.join(OUT, "expected.jsonl"), rows)
    print("expected.jsonl: %d samples, %d tokens" % (len(rows), sum(len(r["ids"]) for r in rows)))

    real = os.path.join(a.shared, "internlm2", "tokenizer.model")
    if os.path.exists(real):
        sp2 = spm.SentencePieceProcessor(model_file=real)
        enc2 = Enc(sp2, INTERNLM2_IDS)
        rows = []
        for src, r in recs[:N_INTERNLM2]:
            ids, labels = tokenize(enc2, 1, parse(r))
            rows.append({"src": src, "ids": ids, "labels": labels})
        write_jsonl(os.path.join(OUT, "expected_internlm2.jsonl"), rows)
        print("expected_internlm2.jsonl: %d samples" % len(rows))
    else:
        print("skip expected_internlm2.jsonl: %s absent" % real)

    hf = os.path.join(OUT, "hf")
    write_hf(hf, sp.get_piece_size())
    with open(model, "rb") as f, open(os.path.join(hf, "tokenizer.model"), "wb") as g:
        g.write(f.read())


if __name__ == "__main__":
    main()
