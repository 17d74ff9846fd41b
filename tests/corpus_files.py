"""Corpus files written by tests: varied documents of varied lengths."""

import json
import random

WORDS = ("tacrolimus trough level renal clearance dose the patient court appeal judgment weather "
         "park children budget oral formulation bioavailability cyclosporine transplant committee").split()


def make_documents(n: int, seed: int = 0, max_words: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words))) + "."
            for _ in range(n)]


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path
