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


DISTANT_DOMAIN = "tacrolimus trough level renal clearance dose patient oral formulation bioavailability".split()
DISTANT_GENERAL = "weather today sunny light breeze west children played park parents talked news".split()


def write_distant_corpus(folder) -> None:
    """Domain and general text with no word in common: training on the domain alone at a
    high LR makes general text much harder (real forgetting on the tiny model)."""
    for name, words, count, seed in (("domain", DISTANT_DOMAIN, 240, 1), ("general", DISTANT_GENERAL, 120, 3)):
        rng = random.Random(seed)
        write_jsonl(folder / f"{name}.jsonl", [" ".join(rng.choice(words) for _ in range(rng.randint(5, 60))) + "."
                                               for _ in range(count)])
