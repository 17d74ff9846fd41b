"""A run's evaluation report: base model against each evaluated checkpoint, per task.

    report = build_report(run_dir)      # a dict (report.json)
    folder = write_report(run_dir)      # RUN/report/report.md, report.json, scores.png

Read from the run's events (benchmark and probe scores, held-out evaluations), so the folder
alone is enough. For each task's headline metric: the base value, each checkpoint's value and
its change with the change's standard error (sqrt(se_base^2 + se_checkpoint^2)); a warning for
every general task whose headline metric falls more than the run's limit (3 points) below
the base model; the domain gain (mean change of the domain tasks' headline metrics, else the
probes'); and the recommended checkpoint with its reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .recommend import MAX_GENERAL_DROP, checkpoint_scores, general_drops, recommendation
from .run_folder import RunPaths, read_json
from .timeline import RunTimeline


def build_report(run_dir: Path | str) -> dict[str, Any]:
    """Everything report.md shows, as plain data (see the module docstring)."""
    paths = RunPaths(Path(run_dir))
    config = read_json(paths.config)
    events = [event.to_dict() for event in RunTimeline.load(paths.events).events]
    scores = [e for e in events if e.get("type") in ("benchmark", "probe") and e.get("metric")]
    max_drop = (config.get("benchmarks") or {}).get("max_general_drop", MAX_GENERAL_DROP)
    tasks = task_tables(scores)
    steps = sorted({step for table in tasks for step in table["scores"]})
    return {"run": config.get("name"), "folder": str(paths.root.resolve()),
            "model": (config.get("model") or {}).get("name_or_path"),
            "harness_version": next((s.get("harness_version") for s in scores), None),
            "max_general_drop": max_drop, "steps": steps, "tasks": tasks,
            "warnings": _warnings(tasks, max_drop), "domain_gain": _domain_gain(tasks, steps),
            "perplexity": _perplexity(events, steps),
            "recommended": _recommended(events, config, scores, max_drop)}


def task_tables(scores: list[dict]) -> list[dict[str, Any]]:
    """One entry per (task, metric): the latest value per step, and deltas against step 0
    (`scores`: benchmark and probe events, or the store's benchmark rows)."""
    latest: dict[tuple, dict] = {}
    for event in scores:
        latest[(event["task"], event["metric"], event["step"])] = event
    tables: dict[tuple, dict] = {}
    for (task, metric, step), event in latest.items():
        table = tables.setdefault((task, metric), {
            "task": task, "metric": metric, "kind": event.get("kind"),
            "primary": bool(event.get("primary")), "higher_is_better": event.get("higher_is_better", True),
            "num_fewshot": event.get("num_fewshot"), "limit": event.get("limit"), "scores": {},
            "deltas": {}})
        table["scores"][step] = {"value": event["value"], "stderr": event.get("stderr"),
                                 "samples": event.get("samples")}
    for table in tables.values():
        base = table["scores"].get(0)
        for step, score in table["scores"].items():
            if step and base is not None:
                table["deltas"][step] = {"delta": score["value"] - base["value"],
                                         "stderr": _combined(base["stderr"], score["stderr"])}
    return sorted(tables.values(), key=lambda t: (("domain", "probe", "general").index(t["kind"])
                                                  if t["kind"] in ("domain", "probe", "general") else 3,
                                                  t["task"], not t["primary"], t["metric"]))


def _combined(a: float | None, b: float | None) -> float | None:
    return math.sqrt(a * a + b * b) if a is not None and b is not None else None


def _warnings(tasks: list[dict], max_drop: float) -> list[str]:
    warnings = []
    for table in tasks:
        if table["kind"] != "general" or not table["primary"] or not table["higher_is_better"]:
            continue
        base = table["scores"].get(0)
        for step, delta in sorted(table["deltas"].items()):
            if -delta["delta"] > max_drop:
                warnings.append(
                    f"{table['task']} ({table['metric']}) drops {-delta['delta'] * 100:.1f} points at "
                    f"step {step}: {base['value']:.3f} -> {table['scores'][step]['value']:.3f}"
                    f"{_pm(delta['stderr'])}, more than the {max_drop * 100:g}-point limit")
    return warnings


def _domain_gain(tasks: list[dict], steps: list[int]) -> dict[int, dict[str, Any]]:
    """Per checkpoint, the mean change of the domain tasks' headline metric (the probes' when
    there is no domain task), in the metric's units, improvements positive."""
    for kind in ("domain", "probe"):
        chosen = [t for t in tasks if t["kind"] == kind and t["primary"]]
        if chosen:
            break
    gains = {}
    for step in steps:
        changes = [(1 if t["higher_is_better"] else -1) * t["deltas"][step]["delta"]
                   for t in chosen if step in t["deltas"]]
        if changes:
            gains[step] = {"gain": sum(changes) / len(changes), "tasks": len(changes), "kind": kind}
    return gains


def _perplexity(events: list[dict], steps: list[int]) -> dict[int, dict[str, Any]]:
    """The held-out evaluation at each reported step (domain gain, forgetting, bits per byte)."""
    evals = {e.get("step"): e for e in events if e.get("type") == "eval"}
    keep = ("domain_ppl", "general_ppl", "domain_bpb", "general_bpb", "domain_gain", "forgetting")
    return {step: {k: evals[step][k] for k in keep if k in evals[step]} for step in steps if step in evals}


def _recommended(events: list[dict], config: dict, scores: list[dict], max_drop: float) -> dict:
    evals = {e.get("step"): e for e in events if e.get("type") == "eval"}
    saved = {e.get("step") for e in events if e.get("type") == "checkpoint"}
    target = (config.get("checkpoints") or {}).get("recommend_max_forgetting", 0.03)
    candidates = checkpoint_scores({**evals[s], "step": s} for s in saved if s in evals)
    step, reason = recommendation(candidates, target, drops=general_drops(scores), max_drop=max_drop)
    return {"step": step, "reason": reason}


def _pm(stderr: float | None) -> str:
    return f" (± {stderr * 100:.1f} points)" if stderr is not None else ""


# -- writing ---------------------------------------------------------------------------------

def write_report(run_dir: Path | str) -> Path:
    """Write report.md, report.json and the chart into RUN/report; returns that folder.
    ValueError when the run has no benchmark or probe scores yet."""
    paths = RunPaths(Path(run_dir))
    report = build_report(paths.root)
    if not report["tasks"]:
        raise ValueError(f"{paths.root} has no benchmark or probe scores yet; run "
                         f"`cpt-studio evaluate {paths.root}` first")
    paths.report.mkdir(parents=True, exist_ok=True)
    chart = write_chart(report, paths.report_chart)
    paths.report_data.write_text(json.dumps(report, indent=1), encoding="utf-8")
    paths.report_markdown.write_text(report_markdown(report, chart.name if chart else None), encoding="utf-8")
    return paths.report


def report_markdown(report: dict[str, Any], chart: str | None = None) -> str:
    steps = [s for s in report["steps"] if s]
    lines = [f"# Evaluation report: {report['run']}", "",
             f"Base model `{report['model']}` (step 0) against checkpoints "
             f"{', '.join(map(str, steps)) or '-'}; lm-eval {report['harness_version']}.", ""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- **WARNING**: {w}" for w in report["warnings"]] + [""]
    lines += ["## Domain gain", ""]
    for step, gain in sorted(report["domain_gain"].items()):
        lines.append(f"- step {step}: {gain['gain'] * 100:+.1f} points (mean of {gain['tasks']} "
                     f"{gain['kind']} task(s))")
    rec = report["recommended"]
    lines += ["", "## Recommended checkpoint", "",
              f"{'step ' + str(rec['step']) if rec['step'] is not None else 'none'}: {rec['reason']}",
              "", "## Scores", "", "| task | kind | metric | base | " + " | ".join(f"step {s}" for s in steps) + " |",
              "|---|---|---|---|" + "---|" * len(steps)]
    for table in report["tasks"]:
        lines.append(f"| {table['task']} | {table['kind']} | {table['metric']} | "
                     f"{_cell(table['scores'].get(0))} | "
                     + " | ".join(_delta_cell(table, s) for s in steps) + " |")
    lines += ["", "Changes are against the base model, ± their standard error."]
    if chart:
        lines += ["", f"![base vs checkpoints]({chart})"]
    return "\n".join(lines) + "\n"


def _cell(score: dict | None) -> str:
    if score is None:
        return "-"
    return f"{score['value']:.3f}" + (f" ± {score['stderr']:.3f}" if score.get("stderr") is not None else "")


def _delta_cell(table: dict, step: int) -> str:
    score, delta = table["scores"].get(step), table["deltas"].get(step)
    if score is None:
        return "-"
    if delta is None:
        return _cell(score)
    spread = f" ± {delta['stderr']:.3f}" if delta["stderr"] is not None else ""
    return f"{score['value']:.3f} ({delta['delta']:+.3f}{spread})"


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Bars of each task's headline metric, base and checkpoints, with stderr error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [t for t in report["tasks"] if t["primary"]]
    if not tables:
        return None
    steps = report["steps"]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(tables) * max(1, len(steps)) / 2), 3.6))
    width = 0.8 / max(1, len(steps))
    for i, step in enumerate(steps):
        values = [t["scores"].get(step, {}).get("value", math.nan) for t in tables]
        errors = [t["scores"].get(step, {}).get("stderr") or 0 for t in tables]
        axes.bar([x + i * width for x in range(len(tables))], values, width, yerr=errors, capsize=3,
                 label="base" if step == 0 else f"step {step}")
    axes.set_xticks([x + width * (len(steps) - 1) / 2 for x in range(len(tables))])
    axes.set_xticklabels([f"{t['task']}\n{t['metric']} ({t['kind']})" for t in tables], fontsize=8)
    axes.set_ylabel("score")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
