"""The recommended checkpoint and the Pareto front of domain gain against forgetting.

    scores = checkpoint_scores(rows)           # dicts with step, domain_gain, forgetting
    recommended(scores, max_forgetting=0.03)   # the step with the most gain within the target
    pareto_front(scores)                       # the steps no other checkpoint beats on both

The one home of this choice: the worker uses it to keep the recommended checkpoint out of
rotation, the store to mark it (and the front) for `cpt-studio show` and the comparison view.
Checkpoint 0 (the starting model, written when the guard is on) is not a candidate: it is
the baseline the others are measured against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CheckpointScore:
    step: int
    domain_gain: float
    """1 - domain perplexity / baseline: higher is better."""
    forgetting: float
    """general perplexity / baseline - 1: lower is better."""


def checkpoint_scores(rows: Iterable[Mapping[str, Any]]) -> list[CheckpointScore]:
    """The trained checkpoints with both numbers known and finite (step 0 is the baseline)."""
    scores = []
    for row in rows:
        gain, forgetting, step = row.get("domain_gain"), row.get("forgetting"), row.get("step")
        if step and _finite(gain) and _finite(forgetting):
            scores.append(CheckpointScore(int(step), float(gain), float(forgetting)))
    return scores


def recommended(scores: Iterable[CheckpointScore], max_forgetting: float) -> int | None:
    """The step with the largest domain gain among those forgetting at most `max_forgetting`
    (ties: less forgetting, then the earlier step); None when none is within the target."""
    within = [s for s in scores if s.forgetting <= max_forgetting]
    best = max(within, key=lambda s: (s.domain_gain, -s.forgetting, -s.step), default=None)
    return best.step if best else None


def pareto_front(scores: Iterable[CheckpointScore]) -> list[int]:
    """Steps of the checkpoints that no other one beats on both counts (at least as much gain
    and at most as much forgetting, better on one), in order of rising forgetting. Of two
    with the same numbers, the earlier one is kept."""
    front, best_gain = [], -math.inf
    for score in sorted(scores, key=lambda s: (s.forgetting, -s.domain_gain, s.step)):
        if score.domain_gain > best_gain:
            front.append(score.step)
            best_gain = score.domain_gain
    return front


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
