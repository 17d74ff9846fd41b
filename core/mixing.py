"""Replay mixing: every optimizer step holds the configured fraction of general sequences.

    mixer = ReplayMixer(n_domain=900, n_general=300, replay_ratio=0.05, seqs_per_step=64)
    mixer.step(0)        # 64 indices: 3 or 4 of them general (>= n_domain), spread evenly

Indices address the concatenation [domain sequences..., general sequences...]. The number
of general sequences in step k is floor((k+1)·S·r) - floor(k·S·r): exact over any run of
steps and never more than one away from S·r in a single step. Within a step they stand at
evenly spaced slots, so with gradient accumulation every micro-batch sees its share too.

A rollback of the forgetting guard may raise the ratio from some step on: `replay_changes`
lists (from_step, ratio) pairs, and the count above then holds within each stretch of steps,
counted from the stretch's first step; the steps before a change draw exactly what they drew
before it, so resuming a checkpoint from before the change replays them unchanged.

Each source is read in a seeded random order, a fresh permutation per pass; when one runs
out it starts its next pass (cycling) and `on_new_pass` is told. Everything is a pure
function of (seed, step), so resuming at step k needs no saved state.

Written by hand: torch's samplers (WeightedRandomSampler, RandomSampler over a
ConcatDataset) give the ratio only on average, not per step, and cannot resume at a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction

import numpy as np
import torch

DOMAIN, GENERAL = 0, 1
SOURCE_NAMES = ("domain", "general")


class ReplayMixer:
    def __init__(self, n_domain: int, n_general: int, replay_ratio: float, seqs_per_step: int,
                 seed: int = 0, on_new_pass: Callable[[str, int, int], None] | None = None,
                 replay_changes: Sequence[tuple[int, float]] = ()):
        problems = [p for ratio in [replay_ratio, *(r for _, r in replay_changes)]
                    for p in _check(n_domain, n_general, ratio, seqs_per_step)]
        if problems:
            raise ValueError("; ".join(dict.fromkeys(problems)))
        self.sizes = (n_domain, n_general)
        self.ratio = _fraction(replay_ratio)
        self.segments = [(0, self.ratio)] + [(int(step), _fraction(ratio))
                                             for step, ratio in sorted(replay_changes)]
        self.seqs_per_step, self.seed = seqs_per_step, seed
        self.on_new_pass = on_new_pass
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    def general_before(self, step: int) -> int:
        """General sequences in steps 0 .. step-1."""
        total = 0
        for i, (start, ratio) in enumerate(self.segments):
            if step <= start:
                break
            end = self.segments[i + 1][0] if i + 1 < len(self.segments) else step
            total += int((min(step, end) - start) * self.seqs_per_step * ratio)
        return total

    def general_in(self, step: int) -> int:
        return self.general_before(step + 1) - self.general_before(step)

    def step(self, step: int) -> list[int]:
        """The dataset indices of one optimizer step, in order."""
        n_general = self.general_in(step)
        slots = set(_even_slots(n_general, self.seqs_per_step))
        used = [step * self.seqs_per_step - self.general_before(step), self.general_before(step)]
        indices = []
        for slot in range(self.seqs_per_step):
            source = GENERAL if slot in slots else DOMAIN
            indices.append(self._draw(source, used[source], step))
            used[source] += 1
        return indices

    def passes(self, step: int) -> tuple[int, int]:
        """How many passes over (domain, general) steps 0 .. step-1 have begun."""
        general = self.general_before(step)
        used = (step * self.seqs_per_step - general, general)
        return tuple(-(-u // n) if n else 0 for u, n in zip(used, self.sizes, strict=True))

    def _draw(self, source: int, position: int, step: int) -> int:
        size = self.sizes[source]
        epoch, offset = divmod(position, size)
        if offset == 0 and epoch > 0 and self.on_new_pass:
            self.on_new_pass(SOURCE_NAMES[source], epoch + 1, step)
        index = int(self._permutation(source, epoch)[offset])
        return index if source == DOMAIN else self.sizes[DOMAIN] + index

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._permutations:
            if len(self._permutations) > 4:  # only the current passes are needed
                self._permutations.clear()
            rng = np.random.default_rng([self.seed, source, epoch])
            self._permutations[key] = rng.permutation(self.sizes[source])
        return self._permutations[key]


def _check(n_domain: int, n_general: int, replay_ratio: float, seqs_per_step: int) -> list[str]:
    problems = []
    if not 0 <= replay_ratio < 1:
        problems.append(f"replay ratio {replay_ratio} must be at least 0 and below 1 (0.05 is 5%)")
    if seqs_per_step < 1:
        problems.append("sequences per step must be at least 1")
    if n_domain < 1:
        problems.append("the domain corpus gives no training sequence; add domain documents")
    if replay_ratio > 0 and n_general < 1:
        problems.append("replay is on but the general corpus gives no training sequence; "
                        "add general sources or set the replay ratio to 0")
    return problems


def _fraction(ratio: float) -> Fraction:
    return Fraction(ratio).limit_denominator(1_000_000)


def _even_slots(count: int, width: int) -> list[int]:
    """`count` slots spread evenly over `width` (centred in equal bins)."""
    return [int((j + 0.5) * width / count) for j in range(count)]


class MixingSampler(torch.utils.data.Sampler[int]):
    """The mixer's indices for steps [start_step, end_step), flattened, for a DataLoader."""

    def __init__(self, mixer: ReplayMixer, end_step: int, start_step: int = 0):
        self.mixer, self.start_step, self.end_step = mixer, start_step, end_step

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.mixer.seqs_per_step

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.end_step):
            yield from self.mixer.step(step)
