"""A run is a folder (DESIGN.md): its layout, its creation, and control of its worker process.

    run_dir = create_run(config)                 # <data>/runs/<name>-<time>/config.json
    process = start_worker(run_dir, detach=True) # python -m cpt_studio.core.worker RUN_DIR
    request_stop(run_dir)                        # the worker saves, says "stopped", exits 0
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .events import last_event
from .paths import data_dir

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def staging(self) -> Path:
        """Where the Trainer writes a checkpoint before it is renamed into checkpoints/."""
        return self.root / "checkpoints" / ".staging"

    @property
    def tokenizer(self) -> Path:
        """The run's extended tokenizer and its record (extension.json), when it extends one."""
        return self.root / "tokenizer"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "worker.log"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop"

    @property
    def pid(self) -> Path:
        return self.root / "worker.pid"

    @property
    def eval_dir(self) -> Path:
        """Evaluation jobs (lm-eval tasks and probes): their own progress, stop and pid files,
        so that an evaluation never changes the training run's state."""
        return self.root / "eval"

    @property
    def eval_tasks(self) -> Path:
        """lm-eval task YAML and data written for the run (the probe tasks)."""
        return self.eval_dir / "tasks"

    @property
    def eval_events(self) -> Path:
        """The evaluation job's progress (status events); its scores go to events.jsonl."""
        return self.eval_dir / "events.jsonl"

    @property
    def eval_request(self) -> Path:
        return self.eval_dir / "request.json"

    @property
    def eval_stop(self) -> Path:
        return self.eval_dir / "stop"

    @property
    def eval_pid(self) -> Path:
        return self.eval_dir / "worker.pid"

    @property
    def eval_log(self) -> Path:
        return self.root / "logs" / "eval.log"

    @property
    def report(self) -> Path:
        """report.md, report.json and the chart written by `cpt-studio report`."""
        return self.root / "report"


def runs_dir() -> Path:
    path = data_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_run(config: RunConfig, root: Path | None = None) -> Path:
    """A new run folder holding the frozen config; refuses a config with problems."""
    problems = config.validate()
    if problems:
        raise ValueError("the run cannot start:\n" + "\n".join(f"  {p}" for p in problems))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.name).strip("-") or "run"
    base = Path(root or runs_dir()) / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = base, 1
    while run_dir.exists():  # two runs started in the same second
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    (run_dir / "logs").mkdir(parents=True)
    RunPaths(run_dir).config.write_text(config.to_json())
    return run_dir


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX):])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first."""
    folder = RunPaths(Path(run_dir)).checkpoints
    if not folder.exists():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=checkpoint_step)


def last_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def start_worker(run_dir: Path, *, resume: bool = False, detach: bool = False) -> subprocess.Popen:
    """Start `python -m cpt_studio.core.worker RUN_DIR`; its output goes to logs/worker.log.

    Detached, it runs in its own session, so closing the terminal or the GUI never stops it."""
    paths = RunPaths(Path(run_dir))
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    paths.stop_request.unlink(missing_ok=True)
    command = [sys.executable, "-m", "cpt_studio.core.worker", str(paths.root)] + (["--resume"] if resume else [])
    log = open(paths.log, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=detach)


def start_eval_worker(run_dir: Path, *, detach: bool = False) -> subprocess.Popen:
    """Start `python -m cpt_studio.core.evalworker RUN_DIR` on the request in eval/request.json; its
    output goes to logs/eval.log. Detached, it outlives the terminal or the GUI."""
    paths = RunPaths(Path(run_dir))
    paths.eval_log.parent.mkdir(parents=True, exist_ok=True)
    paths.eval_stop.unlink(missing_ok=True)
    command = [sys.executable, "-m", "cpt_studio.core.evalworker", str(paths.root)]
    log = open(paths.eval_log, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=detach)


def request_eval_stop(run_dir: Path) -> None:
    """Ask the evaluation worker to stop after the task in progress."""
    path = RunPaths(Path(run_dir)).eval_stop
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(time.time()))


def eval_worker_pid(run_dir: Path) -> int | None:
    """The pid of the run's evaluation worker if it is alive, else None."""
    return _live_pid(RunPaths(Path(run_dir)).eval_pid)


def request_stop(run_dir: Path) -> None:
    RunPaths(Path(run_dir)).stop_request.write_text(str(time.time()))


def worker_pid(run_dir: Path) -> int | None:
    """The pid of the run's worker if it is alive, else None."""
    return _live_pid(RunPaths(Path(run_dir)).pid)


def _live_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid if not _is_zombie(pid) else None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def kill_worker(run_dir: Path) -> bool:
    """The fallback when a stop request is not answered."""
    pid = worker_pid(run_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def run_state(run_dir: Path) -> dict:
    """The last status event, corrected when the worker died without saying so."""
    paths = RunPaths(Path(run_dir))
    status = last_event(paths.events, "status") if paths.events.exists() else None
    return effective_state(run_dir, status)


def effective_state(run_dir: Path, status: dict | None) -> dict:
    """A run's last status event, corrected when the worker died without saying so."""
    state = dict(status or {"state": "created"})
    if state.get("state") == "running" and worker_pid(run_dir) is None:
        state.update(state="failed", message="the worker process ended without a final status "
                     "(killed, or out of memory); see logs/worker.log", phase="error")
    return state


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
