"""Find settings: a sweep of short runs over a grid of replay ratios and peak learning rates,
run one after another in the background, and each setting's domain gain against forgetting
with the Pareto front.

    plan = plan_sweep(config, replay_ratios=[0, 0.05], peak_lrs=[1e-5, 3e-5], steps=50)
    folder = create_sweep(plan)          # <data>/sweeps/<group>/plan.json, and a run folder per setting
    start_sweep(folder)                  # python -m cpt_studio.core.sweep SWEEP_DIR: the runs in turn
    points = sweep_results(folder, db)   # per setting: its run, state, domain gain, forgetting, front
    request_sweep_stop(folder)           # the run in progress saves and stops; the sweep ends there
    start_sweep(folder)                  # again: it continues (finished runs are kept, others resume)
    settings_config(load_sweep(folder), point)  # the base setup with that replay ratio and LR

A sweep's runs are ordinary runs (history, monitor, comparison), named
"NAME · replay 5% · lr 3e-5", each with a `sweep.json` naming its group (the sweep folder's
name; the store's run_group column). They share the base config's data and seed and differ only
in corpus.replay_ratio and schedule.peak_lr; each trains N steps (schedule.max_steps), evaluates
at step 0 and at N and saves its checkpoint at N. The guard is off (a remedy would change the
very setting being measured) and so are end-of-run benchmarks (an lm-eval job per setting would
cost more than the runs).

The step-0 baseline is measured by each run, by the worker's ordinary code path. The runs load
the same model and hold out the same documents (same corpora, same seed), so their baselines
agree; measuring it once would save one held-out evaluation per run (a forward pass over at most
eval.max_tokens tokens, a fraction of N training steps), but the worker would then need a second
way of getting the one number that every gain and forgetting is divided by.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .config import RunConfig
from .paths import data_dir
from .recommend import CheckpointScore, is_finite_number, pareto_front
from .run_folder import RunPaths
from .runs import (
    create_run,
    detached_options,
    file_name,
    fresh_name,
    live_process,
    record_pid,
    request_stop,
    run_state,
    worker_command,
    worker_pid,
)

PLAN_FILE = "plan.json"
PID_FILE = "sweep.pid"
STOP_FILE = "stop_requested"
LOG_FILE = "sweep.log"


@dataclass(frozen=True)
class SweepPaths:
    """The files of a sweep's folder (<data>/sweeps/<group>/); none is created here."""

    root: Path

    @property
    def plan(self) -> Path:
        """The base config, the grid, N and each setting's run folder (JSON)."""
        return self.root / PLAN_FILE

    @property
    def pid(self) -> Path:
        """The sweep process's pid and start time (cpt_studio.core.runs.record_pid)."""
        return self.root / PID_FILE

    @property
    def stop(self) -> Path:
        """A stop request: the sweep starts no further run."""
        return self.root / STOP_FILE

    @property
    def log(self) -> Path:
        """The sweep process's output (each run's own is in its logs/worker.log)."""
        return self.root / LOG_FILE


def sweeps_dir() -> Path:
    path = data_dir() / "sweeps"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Setting:
    replay_ratio: float
    """corpus.replay_ratio: the share of general sequences in every step (0.05 = 5%)."""
    peak_lr: float
    """schedule.peak_lr."""


@dataclass
class SweepPlan:
    """A sweep before it exists: the base config, N steps per run, and the grid's settings
    (every replay ratio with every learning rate, replay ratios outer)."""

    base: RunConfig
    steps: int
    settings: list[Setting]

    def configs(self) -> list[RunConfig]:
        return [sweep_run_config(self.base, setting, self.steps) for setting in self.settings]


def plan_sweep(config: RunConfig, replay_ratios: Sequence[float], peak_lrs: Sequence[float],
               steps: int) -> SweepPlan:
    """The grid's product as a SweepPlan; ValueError naming every problem (a replay ratio
    outside [0, 1), a learning rate that is not positive, fewer than 1 step, no general text
    to measure forgetting on, a setting whose config does not validate)."""
    problems = [f"replay ratio {r:g} is outside 0..1 (0.05 is 5%)" for r in replay_ratios if not 0 <= r < 1]
    problems += [f"learning rate {lr:g} must be positive" for lr in peak_lrs if not lr > 0]
    if not replay_ratios or not peak_lrs:
        problems.append("give at least one replay ratio and one learning rate")
    if steps < 1:
        problems.append(f"steps per run must be at least 1 (got {steps})")
    if not config.corpus.general and not any(s.kind == "general" for s in config.eval.sets):
        problems.append("a sweep measures forgetting: add a general corpus (corpus.general) or a "
                        "general evaluation set (eval.sets)")
    if problems:
        raise ValueError("the sweep cannot start:\n" + "\n".join(f"  {p}" for p in problems))
    settings = [Setting(float(r), float(lr)) for r, lr in itertools.product(dict.fromkeys(replay_ratios),
                                                                             dict.fromkeys(peak_lrs))]
    plan = SweepPlan(copy.deepcopy(config), steps, settings)
    problems = sorted({p for c in plan.configs() for p in c.validate()})
    if problems:
        raise ValueError("the sweep cannot start:\n" + "\n".join(f"  {p}" for p in problems))
    return plan


def format_lr(lr: float) -> str:
    """A learning rate as a person writes it: 3e-05 -> "3e-5", 0.0001 -> "1e-4", 2.5e-05 -> "2.5e-5"."""
    mantissa, exponent = f"{lr:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def setting_words(setting: Setting) -> str:
    """"replay 5% · lr 3e-5"."""
    return f"replay {setting.replay_ratio * 100:g}% · lr {format_lr(setting.peak_lr)}"


def sweep_run_config(base: RunConfig, setting: Setting, steps: int) -> RunConfig:
    """The config of one run of a sweep (see the module docstring): `base` with the setting,
    N steps, evaluation at 0 and N, one checkpoint at N, the guard and end-of-run benchmarks off."""
    config = copy.deepcopy(base)
    config.name = f"{base.name} · {setting_words(setting)}"
    config.corpus.replay_ratio = setting.replay_ratio
    config.schedule.peak_lr = setting.peak_lr
    config.schedule.max_steps, config.schedule.token_budget = steps, None
    config.eval.interval = config.checkpoints.interval = steps
    config.checkpoints.keep = 1
    config.guard.enabled = False
    config.benchmarks.at_end = False
    config.benchmarks.probes_during_training = False
    return config


def settings_config(sweep: dict, setting: Setting, taken: Iterable[str] = ()) -> RunConfig:
    """"Use these settings": the sweep's base setup (its full length, guard and benchmarks as
    the user set them) with the setting's replay ratio and peak learning rate, under a name
    that is none of `taken` (cpt_studio.core.runs.fresh_name) when the base's is."""
    config = RunConfig.from_dict(sweep["base"])
    config.corpus.replay_ratio = setting.replay_ratio
    config.schedule.peak_lr = setting.peak_lr
    taken = set(taken)
    if config.name in taken:
        config.name = fresh_name(config.name, taken)
    return config


# -- creating and running --------------------------------------------------------------------

def create_sweep(plan: SweepPlan, runs_root: Path | None = None, root: Path | None = None) -> Path:
    """The sweep's folder (under `root`, default sweeps_dir()) with plan.json, and one run folder
    per setting (under `runs_root`, default the runs folder) marked with its group; returns the
    sweep's folder. Nothing runs yet (start_sweep)."""
    base = Path(root or sweeps_dir()) / f"{file_name(plan.base.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, suffix = base, 1
    while folder.exists():
        suffix += 1
        folder = base.with_name(f"{base.name}-{suffix}")
    folder.mkdir(parents=True)
    runs = []
    for setting, config in zip(plan.settings, plan.configs(), strict=True):
        run_dir = create_run(config, runs_root)
        RunPaths(run_dir).sweep.write_text(json.dumps({"group": folder.name, "sweep": str(folder.resolve()),
                                                       "replay_ratio": setting.replay_ratio,
                                                       "peak_lr": setting.peak_lr}, indent=1))
        runs.append({"replay_ratio": setting.replay_ratio, "peak_lr": setting.peak_lr,
                     "run": str(run_dir.resolve())})
    SweepPaths(folder).plan.write_text(json.dumps(
        {"group": folder.name, "name": plan.base.name, "steps": plan.steps,
         "base": plan.base.to_dict(), "runs": runs}, indent=1))
    return folder


def load_sweep(folder: Path) -> dict:
    """plan.json: group, name, steps, base (the config as a dict), runs [{replay_ratio, peak_lr, run}]."""
    path = SweepPaths(Path(folder)).plan
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a sweep folder (no {path.name}); "
                                "`cpt-studio sweep --show` lists the sweeps")
    return json.loads(path.read_text(encoding="utf-8"))


def find_sweep(ref: str | Path) -> Path:
    """A sweep's folder from its path, its group id (the folder's name) or a unique prefix of it."""
    if SweepPaths(Path(ref)).plan.is_file():
        return Path(ref)
    found = sorted(p for p in sweeps_dir().iterdir() if SweepPaths(p).plan.is_file())
    exact = [p for p in found if p.name == str(ref)]
    matches = exact or [p for p in found if p.name.startswith(str(ref))]
    if len(matches) != 1:
        known = ", ".join(p.name for p in found) or "none"
        raise LookupError(f"{'several sweeps match' if matches else 'no sweep matches'} {str(ref)!r}; "
                          f"the sweeps are: {known}")
    return matches[0]


def list_sweeps() -> list[Path]:
    """The sweep folders, newest first."""
    found = [p for p in sweeps_dir().iterdir() if SweepPaths(p).plan.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def start_sweep(folder: Path) -> subprocess.Popen:
    """Start `python -m cpt_studio.core.sweep SWEEP_DIR` (output: sweep.log); it runs the
    settings not finished yet, one after another. Refuses while the sweep's process lives."""
    paths = SweepPaths(Path(folder).resolve())
    load_sweep(paths.root)
    running = sweep_process(paths.root)
    if running is not None:
        raise ValueError(f"the sweep {paths.root.name} is already running (pid {running.pid})")
    paths.stop.unlink(missing_ok=True)
    with open(paths.log, "ab") as log:  # the child keeps its own handle
        process = subprocess.Popen(worker_command(paths.root, "sweep"), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                   **detached_options())
    record_pid(paths.pid, process.pid)
    return process


def sweep_process(folder: Path) -> psutil.Process | None:
    """The sweep's process if it is alive, else None."""
    return live_process(SweepPaths(Path(folder)).pid)


def request_sweep_stop(folder: Path) -> None:
    """Ask the sweep to stop: the run in progress saves a checkpoint and stops, and no further
    run starts. start_sweep continues it later."""
    SweepPaths(Path(folder)).stop.write_text(str(time.time()))
    for run in load_sweep(folder)["runs"]:
        if worker_pid(Path(run["run"])) is not None:
            request_stop(Path(run["run"]))


def run_sweep(folder: Path) -> int:
    """In the sweep's process: each run not finished yet, in the plan's order, by the worker's
    own code path (cpt_studio.core.worker.main, in this process: its events, log and store
    update), resumed when it had started before. Stops at a stop request. Returns how many
    runs are finished."""
    from .worker import main as run_worker

    paths = SweepPaths(Path(folder).resolve())
    record_pid(paths.pid)
    runs = [Path(run["run"]) for run in load_sweep(paths.root)["runs"]]
    try:
        for number, run_dir in enumerate(runs, 1):
            if paths.stop.exists():
                print(f"stop requested: {number - 1} of {len(runs)} runs done", flush=True)
                break
            if run_state(run_dir).get("state") == "finished":
                continue
            resume = RunPaths(run_dir).events.exists()
            print(f"run {number} of {len(runs)}: {run_dir.name}{' (resumed)' if resume else ''}", flush=True)
            run_worker([str(run_dir)] + (["--resume"] if resume else []))
            RunPaths(run_dir).pid.unlink(missing_ok=True)  # this process lives on: the run is not running
    finally:
        paths.pid.unlink(missing_ok=True)  # the sweep is not running any more (this process may live on)
    return sum(run_state(run_dir).get("state") == "finished" for run_dir in runs)


# -- results ---------------------------------------------------------------------------------

@dataclass
class SweepPoint:
    """One setting of a sweep and where its run stands."""

    setting: Setting
    run_id: str
    """The run folder's absolute path (the store's id)."""
    name: str
    state: str
    """created (not started yet), running, finished, stopped or failed."""
    step: int = 0
    total_steps: int | None = None
    domain_gain: float | None = None
    """At the run's last evaluated checkpoint, against its step-0 baseline (as the comparison view)."""
    forgetting: float | None = None
    on_front: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return is_finite_number(self.domain_gain) and is_finite_number(self.forgetting)


def sweep_front(points: Sequence[SweepPoint]) -> list[int]:
    """The Pareto front of the measured settings: indices (into `points`) of those that no other
    setting beats on both counts, i.e. none has at least as much domain gain and at most as much
    forgetting while being better on one. In order of rising forgetting (the front's step line,
    left to right in gain). Ties: of settings with exactly the same gain and forgetting, only the
    first in the grid's order is on the front; a setting with the same forgetting as another but
    less gain is beaten by it. The rule is cpt_studio.core.recommend.pareto_front's, the one home
    of it (there a checkpoint's step, here the setting's index)."""
    return pareto_front(CheckpointScore(i, float(p.domain_gain), float(p.forgetting))
                        for i, p in enumerate(points) if p.measured)


def sweep_results(folder: Path, db) -> list[SweepPoint]:
    """Each setting of the sweep, in the plan's order: its run's state, its last evaluated
    checkpoint's domain gain and forgetting (cpt_studio.core.compare.comparison_rows, the
    comparison view's numbers), and whether it is on the front (sweep_front). Indexes the
    runs into `db` (the store) first."""
    from .compare import comparison_rows
    from .store import get_run, index_run

    sweep = load_sweep(folder)
    points, started = [], []
    for run in sweep["runs"]:
        run_dir = Path(run["run"])
        setting = Setting(run["replay_ratio"], run["peak_lr"])
        point = SweepPoint(setting, str(run_dir.resolve()), f"{sweep['name']} · {setting_words(setting)}",
                           run_state(run_dir).get("state", "created"), total_steps=sweep["steps"])
        if RunPaths(run_dir).events.exists():
            index_run(db, run_dir)
            started.append(point)
        points.append(point)
    rows = comparison_rows(db, [p.run_id for p in started]) if started else []
    for point in started:
        mine = [r for r in rows if r["run_id"] == point.run_id and not r["base"]]
        point.step = get_run(db, point.run_id)["steps"] or 0
        scored = [r for r in mine if is_finite_number(r.get("domain_gain")) and is_finite_number(r.get("forgetting"))]
        if scored:
            point.domain_gain, point.forgetting = scored[-1]["domain_gain"], scored[-1]["forgetting"]
    for index in sweep_front(points):
        points[index].on_front = True
    return points


def sweep_progress(points: Sequence[SweepPoint]) -> str:
    """Where the sweep stands in words: the run in progress and its step, or how many are done."""
    done = sum(p.state == "finished" for p in points)
    running = next(((i, p) for i, p in enumerate(points, 1) if p.state == "running"), None)
    if running:
        number, point = running
        return (f"run {number} of {len(points)} ({setting_words(point.setting)}): step {point.step} "
                f"of {point.total_steps}; {done} finished")
    others = [f"{sum(p.state == s for p in points)} {s}" for s in ("failed", "stopped", "created")
              if any(p.state == s for p in points)]
    return f"{done} of {len(points)} runs finished" + (f" ({', '.join(others)})" if others else "")


def format_sweep_table(points: Sequence[SweepPoint]) -> str:
    """The settings as the CLI prints them, the front marked with *."""
    lines = [f"{'':2}{'replay':>7} {'peak lr':>8} {'state':>9} {'step':>9} {'domain gain':>12} "
             f"{'forgetting':>11}  run"]
    for p in points:
        gain = f"{p.domain_gain:+.2%}" if p.measured else "-"
        forgetting = f"{p.forgetting:+.2%}" if p.measured else "-"
        steps = f"{p.step}/{p.total_steps}" if p.total_steps else str(p.step)
        lines.append(f"{'* ' if p.on_front else '  '}{p.setting.replay_ratio * 100:>6g}% "
                     f"{format_lr(p.setting.peak_lr):>8} {p.state:>9} {steps:>9} {gain:>12} {forgetting:>11}  "
                     f"{Path(p.run_id).name}")
    lines.append("*: on the Pareto front (no other setting has more domain gain with no more forgetting)")
    return "\n".join(lines)


def parse_grid(text: str, what: str) -> list[float]:
    """"0,0.05, 0.15" -> [0.0, 0.05, 0.15]; ValueError naming the value that is not a number."""
    values = []
    for part in re.split(r"[,\s]+", text.strip()):
        if part:
            try:
                values.append(float(part))
            except ValueError:
                raise ValueError(f"{what}: {part!r} is not a number; give numbers separated by "
                                 "commas, e.g. 0,0.05,0.15") from None
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cpt_studio.core.sweep")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    finished = run_sweep(args.sweep_dir)
    total = len(load_sweep(args.sweep_dir)["runs"])
    print(f"sweep ended: {finished} of {total} runs finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
