#!/usr/bin/python3
"""needle_synth.py — synthesize needle-in-a-haystack retrieval documents from the
shared corpus (JSONL, one {"text": ...} per line) for a context-extension experiment
(docs/long-context.md): each document is the needle_en prompt (the built-in task's
template) over a haystack of corpus text with one needle sentence
"The best thing to do in <Place> is <activity>." at a random depth, followed by the
answer: the needle sentence repeated (it holds the activity); --needles per document
(default 1), each asked in turn; lengths log-uniform in [--min-len, --max-len]. Places and activities are drawn from corpus words and
spans, so only copying from the context answers them; the eval needle's own words
(San Francisco, Dolores Park, sandwich) are excluded, and the eval haystack (Paul
Graham essays) is not used.

  /usr/bin/python3 tools/needle_synth.py --tokens 1500000 --min-len 150 --max-len 1900 \
      --seed 1 --out /tmp/needle_2k.jsonl

Lengths are in tokens of the tokenizer given with --tokenizer (sentencepiece .model);
the standard library plus sentencepiece only. Not used by any test.
"""
import argparse
import math
import json
import random
import re

PROMPT = ("You are a helpful AI bot that answers questions for a user. Keep your response "
          "short and direct.\n\n{haystack}\n\n{question} Don't give information outside the "
          "document or repeat your findings.\nAnswer:")
BANNED = {"san", "francisco", "dolores", "park", "sandwich", "sunny"}


def load_corpus(root):
    texts = []
    for path in ["en-c4/c4_demo.jsonl"]:
        for line in open(f"{root}/{path}", encoding="utf-8"):
            line = line.strip()
            if line:
                texts.append(json.loads(line)["text"])
    for path in ["en-wiki/wiki_demo.txt", "en-tinystories/tinystories_train_head.txt",
                 "en-misc/wizard_of_oz.txt", "en-misc/tinyshakespeare.txt"]:
        texts.append(open(f"{root}/{path}", encoding="utf-8").read())
    text = "\n".join(t.strip() for t in texts)
    text = re.sub(r"[ \t]+", " ", text)
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="../shared/data/corpus")
    ap.add_argument("--tokenizer", default="../shared/data/models/stories260K/tok512.model")
    ap.add_argument("--tokens", type=int, required=True, help="total tokens (about)")
    ap.add_argument("--min-len", type=int, required=True)
    ap.add_argument("--max-len", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--needles", type=int, default=1, help="needles (and questions) per document")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
    rng = random.Random(a.seed)
    text = load_corpus(a.corpus)
    words = [w for w in re.findall(r"[A-Za-z]+", text) if w.lower() not in BANNED]
    caps = sorted({w for w in words if w[0].isupper() and len(w) > 3})
    lower = [w for w in words if w.islower()]
    # chars per token of the corpus, to cut haystacks close to the target length
    probe = text[:200000]
    cpt = len(probe) / max(1, len(sp.encode(probe)))
    total = 0
    n = 0
    with open(a.out, "w", encoding="utf-8") as f:
        while total < a.tokens:
            # log-uniform lengths: many short documents (dense retrieval signal), some long
            L = int(math.exp(rng.uniform(math.log(a.min_len), math.log(a.max_len))))
            k_n = a.needles
            items = []
            for _ in range(k_n):
                place = " ".join(rng.choice(caps) for _ in range(rng.randint(1, 2)))
                k = rng.randint(5, 11)
                i = rng.randrange(0, len(lower) - k)
                act = lower[i:i + k]
                # like the eval needle: a name in the middle of the activity
                j = rng.randint(1, k - 1)
                act = act[:j] + [rng.choice(caps), rng.choice(caps)] + act[j:]
                activity = " ".join(act)
                items.append((f"The best thing to do in {place} is {activity}.",
                              f"What is the best thing to do in {place}?", activity))
            extra = sum(len(sp.encode(n + " " + q)) + 40 for n, q, _ in items)
            budget = max(L - len(sp.encode(PROMPT.format(haystack="", question=""))) - extra, 8)
            nchar = int(budget * cpt)
            s = rng.randrange(0, len(text) - nchar - 1)
            hs = text[s:s + nchar]
            hs = hs[hs.find(" ") + 1:] if " " in hs[:40] else hs
            for needle, _, _ in items:  # each at a random depth, after a sentence end
                pos = int(len(hs) * rng.random())
                q = pos
                while q > 0 and hs[q - 1] not in ".\n":
                    q -= 1
                left = hs[:q]
                if left and not left.endswith((" ", "\n")):
                    left += " "
                hs = left + needle + " " + hs[q:]
            rng.shuffle(items)
            # the answer repeats the needle sentence (it contains the activity)
            doc = PROMPT.format(haystack=hs, question=items[0][1]) + " " + items[0][0] + "\n"
            for needle, question, _ in items[1:]:
                doc += ("\n" + question + " Don't give information outside the document or "
                        "repeat your findings.\nAnswer: " + needle + "\n")
            f.write(json.dumps({"text": doc}) + "\n")
            total += int(len(doc) / cpt)
            n += 1
    print(f"{n} documents, about {total} tokens ({cpt:.2f} chars/token) -> {a.out}")


if __name__ == "__main__":
    main()
