"""The run store's contents as plain text: what `cpt-studio runs` and `cpt-studio show RUN`
print. The store holds numbers; the CLI formats them here.

    print(format_runs(store.list_runs(db)))
    print(format_run(db, "2025-06-01-med"))
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from .recommend import checkpoint_scores, is_finite_number, is_number, over_target
from .store import (
    get_run,
    run_benchmarks,
    run_checkpoints,
    run_evaluations,
    run_guard,
    run_metrics,
    target_forgetting,
    with_live_states,
)

RUNS_HEADER = ("name", "state", "model", "started", "steps", "tokens", "domain gain",
               "forgetting")
RIGHT_ALIGNED = {"steps", "tokens", "domain gain", "forgetting"}


def format_runs(rows: list[dict[str, Any]]) -> str:
    """The runs as a plain-text table, one line each (what `cpt-studio runs` prints)."""
    if not rows:
        return "no runs"
    cells = [RUNS_HEADER] + [_run_cells(row) for row in rows]
    return _table(cells, [name in RIGHT_ALIGNED for name in RUNS_HEADER])


def _run_cells(row: dict[str, Any]) -> tuple[str, ...]:
    steps = str(row["steps"] or 0)
    if row["total_steps"]:
        steps += f"/{row['total_steps']}"
    return (row["name"] or "", row.get("live_state") or row["state"] or "-", _shorten(row["model"] or "-"),
            _when(row["started"]), steps, _count(row["tokens"]),
            _percent(row["domain_gain"]), _percent(row["forgetting"]))


def _table(cells: list[tuple[str, ...]], right: list[bool]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(right))]
    return "\n".join(_line(row, widths, right) for row in cells)


def _line(cells: tuple[str, ...], widths: list[int], right: list[bool]) -> str:
    padded = (cell.rjust(width) if r else cell.ljust(width)
              for cell, width, r in zip(cells, widths, right, strict=True))
    return "  ".join(padded).rstrip()


def format_run(db: sqlite_utils.Database, run: str | Path) -> str:
    """The key numbers of one run's curves (what `cpt-studio show RUN` prints)."""
    [row] = with_live_states([get_run(db, run)])
    evals = run_evaluations(db, row["id"])
    lines = _summary_lines(row) + _perplexity_lines(evals) + _gain_lines(evals)
    lines += _loss_lines(run_metrics(db, row["id"], "loss"))
    lines += _guard_lines(run_guard(db, row["id"]))
    checkpoints = run_checkpoints(db, row["id"])
    lines += _recommended_lines(checkpoints, target_forgetting(row["config"]), row.get("recommendation"))
    lines += _benchmark_lines(run_benchmarks(db, row["id"]))
    lines += _checkpoint_lines(checkpoints) + _resume_lines(row, checkpoints)
    return "\n".join(lines)


def _died(row: dict[str, Any]) -> bool:
    """Whether the run's worker died without a final status (with_live_states' correction)."""
    return row["live_state"] == "failed" and row["state"] == "running"


def _ended(row: dict[str, Any]) -> str:
    if _died(row):  # no final status: when it last wrote something is as close as it gets
        return f"{_when(row['updated'])} or soon after (its worker died without a final status)"
    return _when(row["finished"])


def _resume_lines(row: dict[str, Any], checkpoints: list[dict[str, Any]]) -> list[str]:
    """How a stopped run, or one whose worker ended mid-run, goes on (nothing when it cannot:
    a run that failed with an error of its own would fail again)."""
    kept = [c["step"] for c in checkpoints if c["exists"]]
    if not (row["live_state"] == "stopped" or _died(row)) or not kept:
        return []
    return [_field("resume", resume_words(row["id"], max(kept)))]


def resume_words(run: str | Path, step: int) -> str:
    """How a stopped run goes on, in words (show's line, and a followed run's last)."""
    return f"`cpt-studio resume {run}` goes on from step {step:,}"


def _summary_lines(row: dict[str, Any]) -> list[str]:
    total = f" of {row['total_steps']:,}" if row["total_steps"] else ""
    message = f": {row['message']}" if row["message"] and row["message"] != row["phase"] else ""
    lines = [
        _field("run", row["name"]),
        _field("folder", row["id"]),
        _field("model", row["model"] or "-"),
        _field("state", f"{row['live_state']} ({row['phase'] or '-'}){message}"),
        _field("started", f"{_when(row['started'])}, ended {_ended(row)}"),
        _field("steps", f"{row['steps'] or 0:,}{total}"),
        _field("tokens", f"{row['tokens'] or 0:,}"),
    ]
    return lines + ([_field("error", row["error"])] if row["error"] else [])


def _perplexity_lines(evals: list[dict[str, Any]]) -> list[str]:
    baseline = next((e for e in evals if e["baseline"]), None)
    last = next((e for e in reversed(evals) if not e["baseline"]), None)
    if not baseline and not last:
        return [_field("perplexity", "no evaluation yet")]
    return [_field("perplexity", f"{'baseline':>8}  {'last':>8}")] + [
        _field(f"  {label}", f"{_ppl(baseline, field):>8}  {_ppl(last, field):>8}")
        for label, field in (("domain", "domain_ppl"), ("general", "general_ppl"))]


def _gain_lines(evals: list[dict[str, Any]]) -> list[str]:
    trained = [e for e in evals if not e["baseline"]]
    best = max((e for e in trained if is_finite_number(e["domain_gain"])),
               key=lambda e: e["domain_gain"], default=None)
    worst = max((e for e in trained if is_finite_number(e["forgetting"])),
                key=lambda e: e["forgetting"], default=None)
    return [_field("best domain gain", f"{_percent(best and best['domain_gain'])}{_at(best)}"),
            _field("max forgetting", f"{_percent(worst and worst['forgetting'])}{_at(worst)}")]


def _loss_lines(loss: list[tuple]) -> list[str]:
    if not loss:
        return [_field("loss", "no steps yet")]
    low = min((p for p in loss if is_finite_number(p[2])), key=lambda point: point[2], default=None)
    lowest = f"min {low[2]:.4f} at step {low[0]}" if low else "no finite value"
    bad = sum(1 for p in loss if is_number(p[2]) and not math.isfinite(p[2]))
    return [_field("loss", f"first {loss[0][2]:.4f}, last {loss[-1][2]:.4f}, {lowest}"
                           + (f"; {bad} non-finite step(s)" if bad else ""))]


def _guard_lines(guard: list[dict[str, Any]]) -> list[str]:
    """Each decision as the guard put it (its message), or, for a row indexed before messages
    were kept, from its parts."""
    return [_field("guard", f"step {g['step']}: {g['message']}" if g.get("message") else
                   f"step {g['step']}: {g['reason']}; {g['action']}"
                   + (f" to step {g['rolled_back_to']}" if g["rolled_back_to"] is not None else "")
                   + (f"; {g['remedy']}" if g["remedy"] else "")) for g in guard]


def _recommended_lines(checkpoints: list[dict[str, Any]], target: float,
                       reason: str | None = None) -> list[str]:
    best = next((c for c in checkpoints if c["recommended"]), None)
    front = sorted((c for c in checkpoints if c["pareto"]), key=lambda c: c["forgetting"])
    if best is None:
        scores = checkpoint_scores(checkpoints)
        text = f"none: {over_target(scores, target)}" if scores else "none yet"
    else:
        text = (f"step {best['step']} ({best['path']}): domain gain {_percent(best['domain_gain'])}, "
                f"forgetting {_percent(best['forgetting'])}, within the {target:.1%} target")
    lines = [_field("recommended", text)]
    if reason:
        lines.append(_field("  why", reason))
    if front:
        points = ", ".join(f"step {c['step']} ({_percent(c['domain_gain'])} gain, "
                           f"{_percent(c['forgetting'])} forgetting)" for c in front)
        lines.append(_field("pareto front", points))
    return lines


def format_benchmarks(db: sqlite_utils.Database, run: str | Path) -> str:
    """Each task's headline metric, base and each evaluated checkpoint (what `cpt-studio
    evaluate` prints at its end); "" when the run has no benchmark or probe score."""
    return "\n".join(_benchmark_lines(run_benchmarks(db, get_run(db, run)["id"])))


def _benchmark_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The headline metric of each task, base and each evaluated checkpoint."""
    latest = {(r["task"], r["step"]): r for r in rows if r["primary"]}
    tasks = list(dict.fromkeys(task for task, _ in latest))
    lines = []
    for task in tasks:
        scores = sorted((step, r) for (t, step), r in latest.items() if t == task)
        kind, metric = scores[0][1]["kind"], scores[0][1]["metric"]
        values = ", ".join(f"{'base' if step == 0 else f'step {step}'} {r['value']:.3f}"
                           for step, r in scores)
        lines.append(_field(f"  {task}", f"{metric} ({kind}): {values}"))
    return [_field("benchmarks", "")] + lines if lines else []


def _field(label: str, value: str) -> str:
    return f"{label:<18}{value}"


def _checkpoint_lines(checkpoints: list[dict[str, Any]]) -> list[str]:
    if not checkpoints:
        return [_field("checkpoints", "none")]
    cells = [("  step", "tokens", "domain ppl", "general ppl", "domain gain", "forgetting",
              "", "path")]
    cells += [(f"  {c['step']}", _count(c["tokens"]), _ppl(c, "domain_ppl"),
               _ppl(c, "general_ppl"), _percent(c["domain_gain"]), _percent(c["forgetting"]),
               _mark(c), c["path"] + ("" if c["exists"] else " (deleted)")) for c in checkpoints]
    return ["checkpoints", _table(cells, [True] * 6 + [False, False])]


def _mark(checkpoint: dict[str, Any]) -> str:
    return "recommended" if checkpoint["recommended"] else "pareto" if checkpoint["pareto"] else ""


def _ppl(event: dict[str, Any] | None, field: str) -> str:
    value = event and event.get(field)
    return f"{value:.2f}" if value is not None else "-"


def _at(event: dict[str, Any] | None) -> str:
    return f" at step {event['step']}" if event else ""


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "-"
    return f"{fraction * 100:+.1f}%" if math.isfinite(fraction) else str(fraction)


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "-"


def _shorten(text: str, most: int = 40) -> str:
    """Long model paths keep their end, which names the model."""
    return text if len(text) <= most else "…" + text[-(most - 1):]
