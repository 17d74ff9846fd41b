"""Run folders written by hand for the comparison view: checkpoints with chosen domain gain
and forgetting, so the recommended one and the Pareto front are known in advance."""

from __future__ import annotations

import json
from pathlib import Path

from cpt_studio.core.events import EventWriter
from cpt_studio.core.run_folder import RunPaths, checkpoint_dirname

BASE_DOMAIN_PPL, BASE_GENERAL_PPL = 40.0, 20.0
TOKENS_PER_STEP = 4096
REPLAY_0 = [(10, 0.05, 0.01), (20, 0.10, 0.02), (30, 0.12, 0.05), (40, 0.11, 0.06)]
"""(step, domain gain, forgetting): 20 is recommended (most gain within 3%); 10, 20 and 30
are the Pareto front; 40 is beaten by 30."""
REPLAY_5 = [(10, 0.045, 0.008), (20, 0.095, 0.015), (30, 0.11, 0.03), (40, 0.105, 0.04)]
REPLAY_15 = [(10, 0.03, 0.005), (20, 0.08, 0.01), (30, 0.09, 0.025)]
"""All on the front; 30 is recommended."""


def write_compare_run(folder: Path, name: str, replay_ratio: float, peak_lr: float,
                      checkpoints: list[tuple[int, float, float]], benchmarks: dict | None = None,
                      *, sections: dict | None = None, general_baseline: float = BASE_GENERAL_PPL
                      ) -> Path:
    """A finished run: a step event per step, an eval and a checkpoint at each point, and
    `benchmarks` ({step: {"medqa": 0.41}}) as benchmark events. `sections` updates the config's
    sections ({"corpus": {"domain": [...]}}); `general_baseline`: the step-0 general perplexity."""
    folder.mkdir(parents=True)
    config = {"name": name, "seed": 0, "model": {"name_or_path": "org/tiny"},
              "corpus": {"replay_ratio": replay_ratio, "skip_bad": False},
              "schedule": {"peak_lr": peak_lr, "warmup_ratio": 0.01, "decay": "cosine"},
              "checkpoints": {"interval": 10, "recommend_max_forgetting": 0.03}}
    for section, values in (sections or {}).items():  # a section's settings, or a top-level one
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    paths = RunPaths(folder)
    paths.config.write_text(json.dumps(config, indent=2))
    out = EventWriter(paths.events)
    last = checkpoints[-1][0]
    out.emit("status", 0, state="running", phase="training", total_steps=last)
    out.emit("eval", 0, baseline=True, tokens=0, **_scores(0.0, 0.0, general_baseline))
    points = {step: (gain, forgetting) for step, gain, forgetting in checkpoints}
    for step in range(1, last + 1):
        tokens = step * TOKENS_PER_STEP
        out.emit("step", step, tokens=tokens, loss=3.0 - 0.02 * step - replay_ratio,
                 lr=peak_lr, tokens_per_second=5000.0)
        if step in points:
            saved = paths.checkpoints / f"step-{step:06d}"  # any name: the checkpoint event says where
            saved.mkdir(parents=True)
            out.emit("eval", step, baseline=False, tokens=tokens, **_scores(*points[step], general_baseline))
            out.emit("checkpoint", step, tokens=tokens, path=paths.relative(saved))
        for benchmark, score in (benchmarks or {}).get(step, {}).items():
            out.emit("benchmark", step, checkpoint=checkpoint_dirname(step), kind="domain",
                     task=benchmark, metric="acc", value=score, primary=True, higher_is_better=True)
    out.emit("status", last, state="finished", phase="done", exit_code=0)
    out.close()
    return folder


def _scores(gain: float, forgetting: float, general_baseline: float = BASE_GENERAL_PPL) -> dict:
    return {"domain_ppl": BASE_DOMAIN_PPL * (1 - gain),
            "general_ppl": general_baseline * (1 + forgetting),
            "domain_gain": gain, "forgetting": forgetting}


def two_runs(db, root: Path) -> list[str]:
    """Replay 0% (with a benchmark at step 20) and replay 15%, indexed; their ids."""
    from cpt_studio.core.store import index_run

    a = write_compare_run(root / "replay-0", "replay-0", 0.0, 2e-5, REPLAY_0,
                          benchmarks={20: {"medqa": 0.41}, 40: {"medqa": 0.44}})
    b = write_compare_run(root / "replay-15", "replay-15", 0.15, 1e-5, REPLAY_15)
    return [index_run(db, a), index_run(db, b)]


def three_runs(db, root: Path) -> list[str]:
    """Replay 0%, 5% and 15% at the same learning rate (the screenshots)."""
    from cpt_studio.core.store import index_run

    folders = [write_compare_run(root / f"replay-{p}", f"replay-{p}", p / 100, 2e-5, points,
                                 benchmarks={20: {"medqa": 0.40 + p / 1000}})
               for p, points in ((0, REPLAY_0), (5, REPLAY_5), (15, REPLAY_15))]
    return [index_run(db, folder) for folder in folders]


def add_scores(folder: Path, scores: list[tuple]) -> Path:
    """Append lm-eval scores to a run written above, as the evaluation worker writes them:
    (step, task, kind, metric, value, stderr) per score; the first metric of a task is its
    headline one. Step 0 is the base model."""
    out = EventWriter(RunPaths(folder).events)
    seen: set[tuple] = set()
    for step, task, kind, metric, value, stderr in scores:
        primary = (step, task) not in seen
        seen.add((step, task))
        out.emit("probe" if kind == "probe" else "benchmark", step,
                 checkpoint="base" if step == 0 else checkpoint_dirname(step), task=task, kind=kind,
                 metric=metric, value=value, stderr=stderr, num_fewshot=0, limit=None, samples=50,
                 task_version=1, harness_version="0.4.13", higher_is_better=metric != "perplexity",
                 primary=primary, cached=False)
    out.close()
    return folder


EVALUATED = [(0, "medqa_4options", "domain", "acc", 0.31, 0.021),
             (0, "arc_challenge", "general", "acc", 0.42, 0.014),
             (0, "probes_mc", "probe", "acc", 0.33, 0.19),
             (20, "medqa_4options", "domain", "acc", 0.36, 0.021),
             (20, "arc_challenge", "general", "acc", 0.41, 0.014),
             (20, "probes_mc", "probe", "acc", 0.67, 0.19),
             (40, "medqa_4options", "domain", "acc", 0.38, 0.021),
             (40, "arc_challenge", "general", "acc", 0.37, 0.014),
             (40, "probes_mc", "probe", "acc", 0.83, 0.15)]
"""Base, 20 and 40 scored: arc_challenge drops 5 points at 40 (more than the 3-point limit)
and 1 point at 20; medqa and the probes rise."""


def evaluated_run(db, root: Path) -> str:
    """Replay 0% with EVALUATED's scores, indexed; its id."""
    from cpt_studio.core.store import index_run

    folder = write_compare_run(root / "evaluated", "evaluated", 0.0, 2e-5, REPLAY_0)
    return index_run(db, add_scores(folder, EVALUATED))
