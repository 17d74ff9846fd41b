"""The recommended checkpoint and the Pareto front of domain gain against forgetting.

    scores = checkpoint_scores(rows)           # dicts with step, domain_gain, forgetting
    recommended(scores, max_forgetting=0.03)   # the step with the most gain within the target
    recommendation(scores, 0.03, drops=general_drops(benchmark_rows))  # (step, reason): no
                                               # general benchmark may drop more than 3 points
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

MAX_GENERAL_DROP = 0.03
"""No general benchmark of the recommended checkpoint may drop more than this below the base
model (3 points of accuracy), unless the run's benchmarks.max_general_drop says otherwise."""


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
        if step and is_finite_number(gain) and is_finite_number(forgetting):
            scores.append(CheckpointScore(int(step), float(gain), float(forgetting)))
    return scores


def recommended(scores: Iterable[CheckpointScore], max_forgetting: float, *,
                drops: Mapping[int, tuple[float, str]] | None = None,
                max_drop: float = MAX_GENERAL_DROP) -> int | None:
    """The step with the largest domain gain among those forgetting at most `max_forgetting`
    and, where general benchmarks were run on it, with no general task dropping more than
    `max_drop` below the base model (`drops`: general_drops()); ties: less forgetting, then
    the earlier step. None when none qualifies."""
    return recommendation(scores, max_forgetting, drops=drops, max_drop=max_drop)[0]


def recommendation(scores: Iterable[CheckpointScore], max_forgetting: float, *,
                   drops: Mapping[int, tuple[float, str]] | None = None,
                   max_drop: float = MAX_GENERAL_DROP) -> tuple[int | None, str]:
    """The recommended step (as recommended()) and the reason, in words."""
    scores, drops = list(scores), drops or {}
    within = [s for s in scores if s.forgetting <= max_forgetting]
    ruled_out = [s for s in within if drops.get(s.step, (0.0, ""))[0] > max_drop]
    allowed = [s for s in within if s not in ruled_out]
    best = max(allowed, key=lambda s: (s.domain_gain, -s.forgetting, -s.step), default=None)
    excluded = "; ".join(f"step {s.step} ruled out: {drops[s.step][1]} drops "
                         f"{drops[s.step][0] * 100:.1f} points (limit {max_drop * 100:g})"
                         for s in ruled_out)
    if best is None:
        reason = (over_target(scores, max_forgetting) if not within
                  else "every checkpoint within the forgetting target drops a general benchmark")
        return None, reason + (f" ({excluded})" if excluded else "")
    checked = (f"; general benchmarks: worst drop {drops[best.step][0] * 100:.1f} points"
               if best.step in drops else "; no general benchmark run on it" if drops else "")
    reason = (f"largest domain gain ({best.domain_gain:.1%}) with forgetting {best.forgetting:.1%} "
              f"within the {max_forgetting:.1%} target{checked}")
    return best.step, reason + (f"; {excluded}" if excluded else "")


def over_target(scores: list[CheckpointScore], max_forgetting: float) -> str:
    """Why no checkpoint qualifies on forgetting, in words: each forgets more than the target
    (and which forgets least), or none has been evaluated."""
    if not scores:
        return "no checkpoint has its forgetting measured yet"
    least = min(scores, key=lambda s: (s.forgetting, s.step))
    return (f"every checkpoint forgets more than the {max_forgetting:.1%} target (the least: step "
            f"{least.step}, {least.forgetting:.1%})")


def general_drops(rows: Iterable[Mapping[str, Any]]) -> dict[int, tuple[float, str]]:
    """Per checkpoint step, the largest drop of a general task's headline metric below the base
    model (step 0), as (drop, task); a rise counts as a negative drop. `rows`: benchmark events
    or store rows (step, task, kind, metric, value, primary, higher_is_better), later rows
    replacing earlier ones of the same step, task and metric."""
    latest = {(r["step"], r["task"]): r for r in rows
              if r.get("kind") == "general" and r.get("primary") and r.get("higher_is_better", True)
              and is_finite_number(r.get("value"))}
    drops: dict[int, tuple[float, str]] = {}
    for (step, task), row in latest.items():
        base = latest.get((0, task))
        if step and base is not None:
            drop = float(base["value"]) - float(row["value"])
            if step not in drops or drop > drops[step][0]:
                drops[step] = (drop, task)
    return drops


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


def is_number(value: Any) -> bool:
    """An int or float that is not a bool (JSON true is not a score)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number (is_number) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)
