"""Evaluating a run's checkpoints with lm-eval tasks and knowledge probes, base model included.

    request = EvalRequest.from_config(config.benchmarks, checkpoints=[0, 20])  # 0 = base model
    start_evaluation(run_dir, request)                # python -m cpt_studio.core.evalworker (GUI, CLI)
    outcome = evaluate_run(run_dir, request)          # the same, in this process

Progress (status events: done, total, eta_seconds, the task in progress) goes to the run's
eval/events.jsonl, so an evaluation never changes the training run's state; each score goes to
the run's events.jsonl as a `benchmark` event (a `probe` event for probe tasks):
    {"type": "benchmark", "step": 20, "checkpoint": "checkpoint-20", "task": "arc_easy",
     "kind": "general", "metric": "acc", "value": 0.41, "stderr": 0.02, "num_fewshot": 0,
     "limit": 50, "samples": 50, "task_version": 1, "harness_version": "0.4.13",
     "primary": true, "higher_is_better": true, "cached": false}
Step 0 is the base model (the run's model with its own tokenizer); its scores are cached in
the data folder by (model fingerprint, task, task version, few-shot, limit) and reused.
A stop request (eval/stop) is honoured between tasks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .benchmarks import (
    BaseScoreCache,
    Score,
    check_tasks,
    model_fingerprint,
    run_task,
    task_manager,
    task_version,
    wrap_model,
)
from .config import BenchmarkConfig, RunConfig
from .events import EventWriter
from .generate import load_for_generation
from .models import load_tokenizer, resolve_model
from .probes import read_probes, write_probe_tasks
from .recipe import attention_for_padded_batches
from .run_folder import (
    RunPaths,
    checkpoint_dirname,
    checkpoint_folder,
    checkpoint_step,
    list_checkpoints,
)
from .runs import eval_worker_pid, start_eval_worker
from .store import connection, index_run, run_checkpoints

BASE_STEP = 0
PROBE_PREFIX = "probes"


@dataclass
class EvalRequest:
    """What one evaluation job scores: which checkpoints, which tasks, with which settings."""

    checkpoints: list[int]
    """Checkpoint steps; 0 is the base model."""
    domain_tasks: list[str] = field(default_factory=list)
    general_tasks: list[str] = field(default_factory=list)
    probes: str = ""
    """A probe file (JSONL); its tasks are written into the run's eval/tasks."""
    task_folders: list[str] = field(default_factory=list)
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int | str = "auto"
    probe_limit: int | None = None
    """Probe tasks only: at most this many probes per kind (None: the general limit)."""

    @classmethod
    def from_config(cls, settings: BenchmarkConfig, checkpoints: list[int], **overrides) -> EvalRequest:
        request = cls(checkpoints=list(checkpoints), domain_tasks=list(settings.domain_tasks),
                      general_tasks=list(settings.general_tasks), probes=settings.probes,
                      task_folders=list(settings.task_folders), num_fewshot=settings.num_fewshot,
                      limit=settings.limit, batch_size=settings.batch_size)
        for name, value in overrides.items():
            if value is not None:
                setattr(request, name, value)
        return request

    def problems(self) -> list[str]:
        problems = BenchmarkConfig(self.domain_tasks, self.general_tasks, self.task_folders,
                                   self.probes, self.num_fewshot, self.limit,
                                   self.batch_size).validate()
        if not (self.domain_tasks or self.general_tasks or self.probes):
            problems.append("nothing to evaluate: name tasks (--tasks) or a probe file (--probes), "
                            "or set them in the run's benchmarks settings")
        if not self.checkpoints:
            problems.append("no checkpoint to evaluate: name steps with --checkpoints (0 is the base model)")
        return problems


@dataclass
class EvalOutcome:
    state: str
    """'finished' or 'stopped'."""
    scores: list[dict] = field(default_factory=list)
    """The benchmark and probe events written."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Tasks skipped, with the reason."""


def start_evaluation(run_dir: Path, request: EvalRequest):
    """Save the request and start the evaluation worker; refuses a bad request or a second
    job on the same run. Returns the process (its progress: RunPaths(run_dir).eval_events)."""
    _refuse_bad(run_dir, request)
    paths = RunPaths(Path(run_dir))
    paths.eval_dir.mkdir(parents=True, exist_ok=True)
    paths.eval_request.write_text(json.dumps(asdict(request), indent=1))
    return start_eval_worker(paths.root)


def _refuse_bad(run_dir: Path, request: EvalRequest) -> None:
    _refuse_bad_request(request)
    pid = eval_worker_pid(run_dir)
    if pid:
        raise ValueError(f"{run_dir} is already being evaluated (pid {pid}); wait for it, or stop "
                         f"it with `cpt-studio evaluate {run_dir} --stop`")
    for step in request.checkpoints:
        if step != BASE_STEP:
            checkpoint_folder(run_dir, step)  # FileNotFoundError naming the kept steps
    if request.probes:  # every bad line at once, here, not one per attempt from the worker
        read_probes(request.probes)


def load_request(run_dir: Path) -> EvalRequest:
    return EvalRequest(**json.loads(RunPaths(Path(run_dir)).eval_request.read_text()))


# -- the job ---------------------------------------------------------------------------------

@dataclass
class _Job:
    paths: RunPaths
    config: RunConfig
    request: EvalRequest
    scores: EventWriter
    progress: EventWriter
    kinds: dict[str, str]
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    base_cache: BaseScoreCache = field(default_factory=BaseScoreCache)
    base_keys: dict[str, str] = field(default_factory=dict)

    def report(self, message: str, **fields) -> None:
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.progress.emit("status", None, state="running", phase="evaluating", message=message,
                           done=self.done, total=self.total, eta_seconds=eta, **fields)


def evaluate_run(run_dir: Path, request: EvalRequest, *,
                 should_stop: Callable[[], bool] | None = None) -> EvalOutcome:
    """Score every requested task on every requested checkpoint (see the module docstring)."""
    paths = RunPaths(Path(run_dir).resolve())
    _refuse_bad_request(request)
    should_stop = should_stop or paths.eval_stop.exists
    progress = EventWriter(paths.eval_events)
    kinds = _task_kinds(paths, request)
    progress.emit("status", None, state="running", phase="checking",
                  message=f"checking {len(kinds)} task(s)")
    manager = task_manager(_include_paths(paths, request), registry=_needs_registry(paths, request, kinds))
    runnable, unavailable = check_tasks(list(kinds), manager)
    job = _Job(paths, RunConfig.load(paths.config), request, EventWriter(paths.events), progress,
               {name: kinds[name] for name in runnable}, len(runnable) * len(request.checkpoints))
    for name, reason in unavailable.items():
        job.scores.emit("log", None, level="warning", message=f"task {name} is unavailable and "
                        f"skipped: {reason}", task=name, unavailable=True)
    job.report(f"{len(runnable)} task(s) to run" + (f", {len(unavailable)} unavailable: "
               f"{', '.join(unavailable)}" if unavailable else ""), unavailable=unavailable)
    outcome = EvalOutcome("finished", unavailable=unavailable)
    for step in request.checkpoints:
        if should_stop() or not _evaluate_checkpoint(job, step, manager, outcome, should_stop):
            outcome.state = "stopped"
            break
    progress.emit("status", None, state=outcome.state, phase="done", done=job.done, total=job.total,
                  message=f"evaluation {outcome.state}: {len(outcome.scores)} score(s)",
                  unavailable=unavailable)
    return outcome


def _refuse_bad_request(request: EvalRequest) -> None:
    problems = request.problems()
    if problems:
        raise ValueError("; ".join(problems))


def _task_kinds(paths: RunPaths, request: EvalRequest) -> dict[str, str]:
    """Task name -> 'domain', 'general' or 'probe'; writes the probe tasks into eval/tasks."""
    kinds = {name: "domain" for name in request.domain_tasks}
    kinds.update({name: "general" for name in request.general_tasks})
    if request.probes:
        kinds.update({name: "probe" for name in write_run_probes(paths.root, request.probes)})
    return kinds


def _include_paths(paths: RunPaths, request: EvalRequest) -> list[Path]:
    folders = [Path(f).expanduser() for f in request.task_folders]
    return ([paths.eval_tasks] if paths.eval_tasks.is_dir() else []) + folders


def _needs_registry(paths: RunPaths, request: EvalRequest, kinds: dict[str, str]) -> bool:
    """Whether a task is not in the local folders (the registry index takes ~15 s to build)."""
    local = task_manager(_include_paths(paths, request), registry=False)
    return any(name not in local.all_tasks for name in kinds)


def _evaluate_checkpoint(job: _Job, step: int, manager, outcome: EvalOutcome,
                         should_stop: Callable[[], bool]) -> bool:
    """Score every task on one checkpoint; False when a stop request ended it early."""
    label = "base" if step == BASE_STEP else checkpoint_dirname(step)
    cached = _cached_base_scores(job, manager) if step == BASE_STEP else {}
    lm = None
    for name, kind in job.kinds.items():
        if should_stop():
            return False
        reused = " (its scores from an earlier evaluation of this model)" if name in cached else ""
        job.report(f"{label}: {name}{reused}", checkpoint=label, task=name)
        scores = cached.get(name)
        if scores is None:
            if lm is None:
                lm = _load(job, step)
            scores = run_task(lm, name, manager, num_fewshot=job.request.num_fewshot,
                              limit=_limit(job.request, kind))
            if step == BASE_STEP:
                job.base_cache.put(job.base_keys[name], scores)
        outcome.scores += emit_scores(job.scores, step, kind, scores, cached=name in cached)
        job.done += 1
    return True


def emit_scores(events: EventWriter, step: int, kind: str, scores: list[Score],
                **fields) -> list[dict]:
    """One `benchmark` event per score (`probe` for probe tasks) at `step` (0: the base model)."""
    label = "base" if step == BASE_STEP else checkpoint_dirname(step)
    return [events.emit("probe" if kind == "probe" else "benchmark", step, checkpoint=label,
                        kind=kind, **fields, **score.to_dict()) for score in scores]


def write_run_probes(run_dir: Path, probes: str) -> list[str]:
    """The probe file's tasks written into the run's eval/tasks; their names."""
    return write_probe_tasks(read_probes(probes), RunPaths(Path(run_dir)).eval_tasks, PROBE_PREFIX)


def probe_live(model, tokenizer, run_dir: Path, names: list[str], step: int,
               settings: BenchmarkConfig, events: EventWriter) -> list[dict]:
    """Score the probe tasks on the model being trained (not merged, put back in training
    mode), at most settings.probe_limit probes per task; `probe` events with live=true."""
    was_training = model.training
    try:
        with attention_for_padded_batches(model):
            lm = wrap_model(model, tokenizer, settings.batch_size, merge=False)
            manager = task_manager([RunPaths(Path(run_dir)).eval_tasks], registry=False)
            return [event for name in names for event in emit_scores(
                events, step, "probe", run_task(lm, name, manager, num_fewshot=settings.num_fewshot,
                                                limit=settings.probe_limit), live=True)]
    finally:
        model.train(was_training)


def evaluate_at_end(run_dir: Path) -> EvalOutcome | None:
    """After a finished run with benchmarks or probes configured (and at_end on): the base
    model and the recommended checkpoint (the last one when none is recommended)."""
    paths = RunPaths(Path(run_dir).resolve())
    settings = RunConfig.load(paths.config).benchmarks
    if not (settings.configured and settings.at_end):
        return None
    with connection() as db:
        rows = run_checkpoints(db, index_run(db, paths.root))
    step = next((r["step"] for r in rows if r["recommended"]), None)
    kept = [checkpoint_step(p) for p in list_checkpoints(paths.root)]
    steps = [BASE_STEP] + ([step] if step else kept[-1:])
    paths.eval_dir.mkdir(parents=True, exist_ok=True)
    paths.eval_pid.write_text(str(os.getpid()))
    return evaluate_run(paths.root, EvalRequest.from_config(settings, steps))


def _limit(request: EvalRequest, kind: str) -> int | None:
    return request.probe_limit if kind == "probe" and request.probe_limit else request.limit


def _cached_base_scores(job: _Job, manager) -> dict[str, list[Score]]:
    """The base model's scores already computed for these settings, by task."""
    spec = job.config.model
    folder = resolve_model(spec.name_or_path, trust_remote_code=spec.trust_remote_code)
    fingerprint = model_fingerprint(folder, load_tokenizer(folder, trust_remote_code=spec.trust_remote_code))
    job.base_keys = {name: BaseScoreCache.key(fingerprint, name, task_version(name, manager),
                                              job.request.num_fewshot, _limit(job.request, kind))
                     for name, kind in job.kinds.items()}
    found = {name: job.base_cache.get(key) for name, key in job.base_keys.items()}
    return {name: scores for name, scores in found.items() if scores}


def _load(job: _Job, step: int):
    """lm-eval's model for a checkpoint: loaded as the run trained it (cpt_studio.core.generate)."""
    source = (job.config.model.name_or_path if step == BASE_STEP
              else checkpoint_folder(job.paths.root, step))
    job.report(f"loading {'the base model' if step == BASE_STEP else checkpoint_dirname(step)}")
    model, tokenizer = load_for_generation(source)
    return wrap_model(model, tokenizer, job.request.batch_size)
