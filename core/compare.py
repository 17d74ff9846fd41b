"""What the comparison view shows, without Qt: settings that differ, legend labels, and the
checkpoint rows of several runs with their probe and benchmark scores.

    configs = {run["id"]: run["config"] for run in runs}
    config_differences(configs, differences_only=True)  # [("corpus.replay_ratio", {id: 0.05, ...})]
    run_labels(configs)                                   # {id: "replay 5%, lr 2e-05"}
    run_titles(names, configs)                            # {id: "med-5\nreplay 5%, lr 2e-05"}
    comparison_notes(db, run_ids)                         # different corpora, held-out sets,
                                                          # baselines, in sentences
    outside_target(config, checkpoints)                   # "no checkpoint within the forgetting
                                                          # target (3%): ..." or None
    comparison_rows(db, run_ids)                          # one dict per checkpoint, all runs
                                                          # (and the base model when it was scored)
    task_charts(db, run_id)                               # per task: base vs checkpoints, stderr,
                                                          # general drops over the limit flagged
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .recommend import MAX_GENERAL_DROP, is_finite_number, is_number
from .report import task_tables
from .store import (
    get_run,
    run_benchmarks,
    run_checkpoints,
    run_evaluations,
    run_events,
    target_forgetting,
)

MISSING = object()
"""A setting one run's config lacks (an older config): differs from every value."""
UNUSED = "unused"
"""A setting its run does not use (LoRA's rank in a full-parameter run, EWC's strength with EWC
off): equal to every other unused value, so it is not a difference between two runs."""
USED_WHEN = {"method.lora_": ("method.kind", "lora"), "method.target_modules": ("method.kind", "lora"),
             "ewc.": ("ewc.enabled", True), "guard.": ("guard.enabled", True),
             "tokenizer.": ("tokenizer.extend", True)}
"""Settings (by path prefix) a run uses only when its switch has that value (the switch itself
always counts)."""
SHORT_NAMES = {"corpus.replay_ratio": "replay", "schedule.peak_lr": "lr",
               "method.kind": "method", "method.lora_rank": "LoRA r", "ewc.enabled": "EWC",
               "ewc.strength": "EWC strength", "tokenizer.extend": "new tokens",
               "schedule.max_steps": "steps", "schedule.token_budget": "tokens",
               "model.name_or_path": "model", "guard.threshold": "guard"}
"""Legend words for the settings people vary most; others use their last part."""
PERCENT_SETTINGS = {"corpus.replay_ratio", "guard.threshold", "checkpoints.recommend_max_forgetting"}
SCORE_EVENTS = ("probe", "benchmark")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted paths: {"corpus": {"replay_ratio": 0.05}} ->
    {"corpus.replay_ratio": 0.05}. Lists (the corpus sources) stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, path + "."))
        else:
            flat[path] = value
    return flat


def config_differences(configs: Mapping[str, Mapping[str, Any]], differences_only: bool = False
                       ) -> list[tuple[str, dict[str, Any]]]:
    """Every setting as (dotted path, {run_id: value}), in the order the configs list them;
    `differences_only` keeps those whose value is not the same in every run. A run whose
    config lacks a setting has MISSING there."""
    flat = {run_id: _mark_unused(flatten_config(config)) for run_id, config in configs.items()}
    paths = list(dict.fromkeys(path for settings in flat.values() for path in settings))
    rows = []
    for path in paths:
        values = {run_id: settings.get(path, MISSING) for run_id, settings in flat.items()}
        if not differences_only or _differ(list(values.values())):
            rows.append((path, values))
    return rows


def _mark_unused(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with the values its run does not use replaced by UNUSED (USED_WHEN)."""
    marked = dict(settings)
    for path in settings:
        for prefix, (switch, on) in USED_WHEN.items():
            if path.startswith(prefix) and path != switch and switch in settings and settings[switch] != on:
                marked[path] = UNUSED
    return marked


def _differ(values: list[Any]) -> bool:
    return any(value is MISSING or value != values[0] for value in values)


def format_setting(path: str, value: Any) -> str:
    """A setting's value as the legend and the config table show it."""
    if value is MISSING:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if path in PERCENT_SETTINGS and isinstance(value, (int, float)):
        return f"{value * 100:g}%"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(str(v.get("path", v)) if isinstance(v, Mapping) else str(v)
                         for v in value) or "none"
    return "none" if value is None else str(value)


def run_label(config: Mapping[str, Any], differing_paths: list[str], most: int = 3) -> str:
    """A short legend naming what differs, e.g. "replay 5%, lr 2e-05" (the first `most`
    settings, then "…"); the run's name when nothing but the name differs."""
    flat = flatten_config(config)
    shown = [path for path in differing_paths if path != "name"]
    parts = [f"{SHORT_NAMES.get(path, path.rsplit('.', 1)[-1].replace('_', ' '))} "
             f"{format_setting(path, flat.get(path, MISSING))}" for path in shown[:most]]
    return ", ".join(parts) + (", …" if len(shown) > most else "") or str(config.get("name") or "run")


def run_labels(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The legend text of each run: what differs between these runs' configs, settings
    every run has first (a setting an older config lacks says less)."""
    rows = config_differences(configs, differences_only=True)
    rows.sort(key=lambda row: any(value is MISSING for value in row[1].values()))
    differing = [path for path, _ in rows]
    return {run_id: run_label(config, differing) for run_id, config in configs.items()}


def unique_names(names: Mapping[str, str]) -> dict[str, str]:
    """Each run's name, made unique: the second run of a name that several runs share is
    "name (2)", the third "name (3)", in the order given."""
    seen: dict[str, int] = {}
    unique = {}
    for run_id, name in names.items():
        seen[name] = seen.get(name, 0) + 1
        unique[run_id] = name if seen[name] == 1 else f"{name} ({seen[name]})"
    return unique


def run_titles(names: Mapping[str, str], configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """What labels each run in the comparison: its name (unique_names), and on a second line
    the settings that differ between these runs (run_labels), e.g. "med-5\nreplay 5%, lr 2e-05";
    the name alone when only the names differ."""
    titles = unique_names(names)
    if all(path == "name" for path, _ in config_differences(configs, differences_only=True)):
        return titles
    labels = run_labels(configs)
    return {run_id: f"{titles[run_id]}\n{labels[run_id]}" for run_id in configs}


HELDOUT_SETTINGS = ("seed", "eval.heldout_fraction", "eval.heldout_count", "eval.max_tokens", "eval.sets")
"""The settings that choose a run's held-out documents (with its corpora)."""
BASELINE_TOLERANCE = 0.005
"""Step-0 perplexities closer than this (relative) count as the same baseline."""


def comparison_notes(db, run_ids: list[str]) -> list[str]:
    """What makes these runs' numbers not directly comparable, in sentences: different
    corpora, different held-out sets (HELDOUT_SETTINGS), different step-0 baselines (domain
    or general held-out perplexity). Empty for one run, or runs that share all three."""
    if len(run_ids) < 2:
        return []
    runs = {run_id: get_run(db, run_id) for run_id in run_ids}
    names = unique_names({run_id: run["name"] for run_id, run in runs.items()})
    flat = {run_id: flatten_config(run["config"]) for run_id, run in runs.items()}
    notes = []
    for corpus in ("domain", "general"):
        paths = {run_id: _corpus_words(settings, corpus) for run_id, settings in flat.items()}
        if len(set(paths.values())) > 1:
            notes.append(f"Different {corpus} corpora ({_each(paths, names)}): each run's gain and "
                         "forgetting are measured on its own held-out text.")
    if not notes and _differ([[settings.get(path) for path in HELDOUT_SETTINGS] for settings in flat.values()]):
        notes.append("Different held-out sets (seed or evaluation settings differ): compare domain gain "
                     "and forgetting, each against the run's own baseline, rather than perplexities.")
    notes += _baseline_notes(db, run_ids, names)
    if gain_basis({run_id: run["config"] for run_id, run in runs.items()}) == "bpb":
        notes.append("Different base models or tokenizers: a token is not the same unit in every run, so "
                     "domain gain and forgetting here are changes of bits per byte, each against the run's "
                     "own baseline; the history and each run's recommendation give them in perplexity.")
    return notes


def _corpus_words(settings: Mapping[str, Any], corpus: str) -> str:
    """A run's `corpus` ("domain" or "general") in words: an SFT run's domain is its
    instruction data (its corpus.domain is empty)."""
    if corpus == "domain" and settings.get("stage") == "sft":
        return f"instruction data {format_setting('', settings.get('sft.data', MISSING))}"
    return format_setting("", settings.get(f"corpus.{corpus}", MISSING))


def _baseline_notes(db, run_ids: list[str], names: Mapping[str, str]) -> list[str]:
    baselines = {run_id: next((e for e in run_evaluations(db, run_id) if e["baseline"]), {})
                 for run_id in run_ids}
    notes = []
    for field, what in (("domain_ppl", "domain"), ("general_ppl", "general")):
        values = {run_id: b.get(field) for run_id, b in baselines.items() if is_finite_number(b.get(field))}
        if len(values) > 1 and max(values.values()) > min(values.values()) * (1 + BASELINE_TOLERANCE):
            shown = {run_id: f"{value:.4g}" for run_id, value in values.items()}
            notes.append(f"Different baselines: the step-0 {what} perplexity is {_each(shown, names)} "
                         "(other held-out text or another base model); compare gains and forgetting, "
                         "not perplexities.")
    return notes


def _each(values: Mapping[str, str], names: Mapping[str, str]) -> str:
    return "; ".join(f"{names[run_id]}: {value}" for run_id, value in values.items())


def outside_target(config: Mapping[str, Any], checkpoints: list[Mapping[str, Any]]) -> str | None:
    """A sentence when the run has trained checkpoints but none forgets within its forgetting
    target (cpt_studio.core.store.target_forgetting), with the least forgetting reached; None
    otherwise (a checkpoint is within it, or none has been measured)."""
    target = target_forgetting(dict(config))
    measured = [c for c in checkpoints if c.get("step") and c.get("exists", True)
                and is_finite_number(c.get("forgetting"))]
    if not measured or any(c["forgetting"] <= target for c in measured):
        return None
    least = min(measured, key=lambda c: c["forgetting"])
    return (f"no checkpoint within the forgetting target ({target:.1%}): the least forgetting is "
            f"{least['forgetting']:.2%} (step {least['step']}); more replay, a lower learning rate or "
            "a higher target (checkpoints.recommend_max_forgetting)")


def checkpoint_extras(events: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Probe and benchmark scores by step (benchmark and probe events, cpt_studio.core.events.
    ScoreEvent, one metric each): {"task": "medqa", "metric": "acc", "value": 0.41} gives the
    column "medqa acc"; a later score of the same step, task and metric replaces it."""
    extras: dict[int, dict[str, float]] = {}
    for event in events:
        if event.get("task") and event.get("metric"):
            extras.setdefault(event.get("step"), {})[f"{event['task']} {event['metric']}"] = event.get("value")
    return extras


def gain_unit(basis: str) -> str:
    """What the comparison's gain and forgetting are changes of, for labels: "" for perplexity
    (the history's and the recommendations' unit), " (bits per byte)" for the 'bpb' basis."""
    return " (bits per byte)" if basis == "bpb" else ""


def gain_basis(configs: Mapping[str, Mapping[str, Any]]) -> str:
    """'bpb' when the runs' tokenizers differ (another base model, or a run that extends its
    tokenizer): a token is then not the same unit in every run, and domain gain and forgetting
    are compared in bits per byte; else 'ppl'."""
    models = {str((c.get("model") or {}).get("name_or_path")) for c in configs.values()}
    extends = any((c.get("tokenizer") or {}).get("extend") for c in configs.values())
    return "bpb" if len(configs) > 1 and (len(models) > 1 or extends) else "ppl"


def comparison_rows(db, run_ids: list[str]) -> list[dict[str, Any]]:
    """Every checkpoint of these runs (store columns, the run's name and label (run_titles), and its probe
    and benchmark scores at that step), run by run, step by step. A run whose base model was
    scored (step-0 benchmark or probe events) starts with a row for it, its held-out baseline,
    no gain or forgetting, unless the run saved it as checkpoint 0 (the guard does); either
    way that row has "base": True. "notes" gives, per score column, its standard
    error and a warning when a general task drops more than the run's limit below the base.
    When the runs' tokenizers differ (gain_basis), domain_gain and forgetting are those of
    bits per byte against each run's own step-0 baseline, and "basis" says so."""
    runs = {run_id: get_run(db, run_id) for run_id in run_ids}
    configs = {run_id: run["config"] for run_id, run in runs.items()}
    labels = run_titles({run_id: run["name"] for run_id, run in runs.items()}, configs)
    basis = gain_basis(configs)
    rows = []
    for run_id, run in runs.items():
        events = [e for kind in SCORE_EVENTS for e in run_events(db, run_id, kind)]
        extras = checkpoint_extras(events)
        notes = score_notes(run_benchmarks(db, run_id), max_general_drop(run["config"]))
        baseline = next((e for e in run_evaluations(db, run_id) if e["baseline"]), {})
        checkpoints = run_checkpoints(db, run_id)
        if 0 in extras and all(c["step"] != 0 for c in checkpoints):
            checkpoints.insert(0, _base_row(run_id, baseline))
        for checkpoint in checkpoints:
            step = checkpoint["step"]
            row = {**checkpoint, "base": step == 0, "run_name": run["name"], "label": labels[run_id],
                   "scores": extras.get(step, {}), "notes": notes.get(step, {}), "basis": basis}
            rows.append(_bpb_gains(row, baseline) if basis == "bpb" and step else row)
    return rows


def _base_row(run_id: str, baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The base model as a row of the checkpoints table: its held-out baseline, no gain or
    forgetting (it is what those are measured against)."""
    return {"run_id": run_id, "step": 0, "tokens": 0, "path": None, "exists": True,
            "recommended": False, "pareto": False, "base": True,
            "domain_ppl": baseline.get("domain_ppl"), "general_ppl": baseline.get("general_ppl"),
            "domain_gain": None, "forgetting": None}


def max_general_drop(config: Mapping[str, Any]) -> float:
    """The run's limit on a general task's drop below the base model (0.03 = 3 points)."""
    value = (config.get("benchmarks") or {}).get("max_general_drop")
    return MAX_GENERAL_DROP if value is None else float(value)


def task_charts(db, run_id: str) -> list[dict[str, Any]]:
    """Per task, its headline metric for the base model (step 0) and each evaluated checkpoint
    (cpt_studio.core.report.task_tables: "scores" {step: {value, stderr}}, "deltas"), with
    "flagged" {step: drop} for a general task dropping more than the run's limit."""
    limit = max_general_drop(get_run(db, run_id)["config"])
    tables = [t for t in task_tables(run_benchmarks(db, run_id)) if t["primary"]]
    for table in tables:
        table["flagged"] = {step: -d["delta"] for step, d in table["deltas"].items()
                            if _drops(table, d["delta"], limit)}
    return tables


def _drops(table: Mapping[str, Any], delta: float, limit: float) -> bool:
    return table["kind"] == "general" and table["higher_is_better"] and -delta > limit


def score_notes(rows: list[dict[str, Any]], limit: float = MAX_GENERAL_DROP
                ) -> dict[int, dict[str, dict[str, Any]]]:
    """By step and score column ("task metric", as checkpoint_extras names it): the score's
    "stderr", and a "warning" in words when a general task's headline metric drops more than
    `limit` below the base model. `rows`: the store's benchmark rows or benchmark events."""
    notes: dict[int, dict[str, dict[str, Any]]] = {}
    for table in task_tables(rows):
        column = f"{table['task']} {table['metric']}"
        for step, score in table["scores"].items():
            note = notes.setdefault(step, {}).setdefault(column, {"stderr": score["stderr"]})
            delta = table["deltas"].get(step)
            if table["primary"] and delta and _drops(table, delta["delta"], limit):
                note["warning"] = (f"{table['task']} drops {-delta['delta'] * 100:.1f} points below "
                                   f"the base model (limit {limit * 100:g})")
    return notes


def _bpb_gains(row: dict[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """domain gain = 1 - bpb / baseline bpb; forgetting = bpb / baseline bpb - 1 (None when a
    value is missing: a run from before bits per byte was measured)."""
    def ratio(field: str) -> float | None:
        value, base = row.get(field), baseline.get(field)
        return value / base if is_number(value) and is_number(base) and base else None

    domain, general = ratio("domain_bpb"), ratio("general_bpb")
    return {**row, "domain_gain": None if domain is None else 1 - domain,
            "forgetting": None if general is None else general - 1}


def score_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The probe and benchmark columns any of the rows has, in first-seen order."""
    return list(dict.fromkeys(name for row in rows for name in row["scores"]))


