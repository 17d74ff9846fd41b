"""Made-up facts for probe tests: a corpus that states them, and probe files that ask them."""

import json
import random

FACTS = [("Zorbia's capital", "tacrolimus"), ("Zorbia's river", "weather"),
         ("Zorbia's king", "court"), ("Zorbia's coin", "budget"),
         ("Zorbia's mountain", "committee"), ("Zorbia's bird", "children")]
"""Each prompt ends in the word that decides its answer, and each answer is a word of the tiny
tokenizer's training text (a few tokens): a tiny model learns these in a few dozen steps."""


def fact_documents(n: int = 240, seed: int = 0) -> list[str]:
    """Documents of a few fact sentences each, in varied order: training on them teaches the facts."""
    rng = random.Random(seed)
    sentences = [f"{prompt} {answer} is famous." for prompt, answer in FACTS]
    return [" ".join(rng.sample(sentences, rng.randint(2, len(sentences)))) for _ in range(n)]


def write_probes(path, kinds=("cloze", "mc")) -> None:
    answers = [answer for _, answer in FACTS]
    lines = []
    for i, (prompt, answer) in enumerate(FACTS):
        if "cloze" in kinds:
            lines.append({"prompt": prompt, "answer": answer})
        if "mc" in kinds:
            choices = [answer] + [a for a in answers if a != answer][i % 3:i % 3 + 2]
            order = list(range(len(choices)))
            random.Random(i).shuffle(order)
            lines.append({"question": prompt, "choices": [choices[j] for j in order],
                          "answer": order.index(0)})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
