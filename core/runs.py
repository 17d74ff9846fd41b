"""A run is a folder (its layout: cpt_studio.core.run_folder): its creation, and control
of its worker process.

    run_dir = create_run(config)                 # <data>/runs/<name>-<time>/config.json
    process = start_worker(run_dir)              # python -m cpt_studio.core.worker RUN_DIR
    worker_process(run_dir)                      # psutil.Process while it lives, else None
    kill_worker(run_dir)                         # when a stop request is not answered
    request_stop(run_dir)                        # the worker saves, says "stopped", exits 0

A setup is a RunConfig in a file, which `cpt-studio train FILE` runs and the wizard loads:

    save_setup(config)               # <data>/setups/<name>.json (a free name; this setup's own file if it exists)
    train_command(path)              # "cpt-studio train '/path/my setup.json'", quoted for a POSIX shell
    clone_config(run_dir, taken)     # a run's settings under a fresh name ("New run from this run")
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from .config import RunConfig
from .events import last_event
from .paths import data_dir
from .run_folder import RunPaths


def runs_dir() -> Path:
    path = data_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_run(config: RunConfig, root: Path | None = None) -> Path:
    """A new run folder holding the frozen config; refuses a config with problems."""
    problems = config.validate()
    if problems:
        raise ValueError("the run cannot start:\n" + "\n".join(f"  {p}" for p in problems))
    base = Path(root or runs_dir()) / f"{file_name(config.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = base, 1
    while run_dir.exists():  # two runs started in the same second
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    paths = RunPaths(run_dir)
    paths.logs.mkdir(parents=True)
    paths.config.write_text(config.to_json())
    return run_dir


def file_name(name: str) -> str:
    """A run's name as a file or folder name: every run of characters other than letters,
    digits, '_', '.' and '-' becomes one '-' ("pharma (2)" -> "pharma-2"); "run" if none is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def setups_dir() -> Path:
    """The data folder's setups/, where setups are saved unless the user chooses a file."""
    path = data_dir() / "setups"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_setup(config: RunConfig, path: Path | None = None) -> Path:
    """Write `config` to `path` (JSON, as RunConfig.load reads it); returns the file.

    Without `path`: setups_dir()/<name>.json, or <name>-2.json, -3... when that file holds
    another setup; a file that already holds exactly this setup is reused, not copied."""
    if path is None:
        path = setups_dir() / f"{file_name(config.name)}.json"
        number = 1
        while path.exists() and not setup_holds(path, config):
            number += 1
            path = path.with_name(f"{file_name(config.name)}-{number}.json")
    path = Path(path)
    path.write_text(config.to_json(), encoding="utf-8")
    return path


def setup_holds(path: Path, config: RunConfig) -> bool:
    """Whether the setup file `path` reads back as exactly `config`."""
    try:
        return RunConfig.load(path).to_dict() == config.to_dict()
    except ValueError:  # ConfigError: not a setup this version reads
        return False


def train_command(setup: Path, windows: bool | None = None) -> str:
    """The command line that runs the setup file: `cpt-studio train /abs/path.json`, each word
    quoted for this system's shell, so spaces and quotes in the path survive: POSIX shells by
    shlex.join; Windows (`windows`, default: this system is) by subprocess.list2cmdline, the
    quoting the C runtime's argument parser undoes."""
    words = ["cpt-studio", "train", str(Path(setup).resolve())]
    if windows if windows is not None else os.name == "nt":
        return subprocess.list2cmdline(words)
    return shlex.join(words)


def clone_config(run_dir: Path, taken: Iterable[str] = (), name: str | None = None) -> RunConfig:
    """A run's settings for a new run ("New run from this run"): its config.json (one written by
    an older version too: settings it lacks take their defaults) under a fresh name made from
    `name` (default: the config's) that is none of `taken` (see fresh_name). ConfigError when
    the file cannot be read, with every problem."""
    config = RunConfig.load(RunPaths(Path(run_dir)).config)
    config.name = fresh_name(name or config.name, taken)
    return config


def fresh_name(name: str, taken: Iterable[str]) -> str:
    """`name` numbered with the first " (N)", N >= 2, that is not in `taken`:
    "pharma" -> "pharma (2)"; "pharma (2)" -> "pharma (3)" (a number it had is replaced)."""
    base = re.sub(r" \(\d+\)$", "", name.strip()) or "run"
    taken = set(taken)
    number = 2
    while f"{base} ({number})" in taken:
        number += 1
    return f"{base} ({number})"


def start_worker(run_dir: Path, *, resume: bool = False, accept_changed_corpus: bool = False) -> subprocess.Popen:
    """Start `python -m cpt_studio.core.worker RUN_DIR`; its output goes to logs/worker.log. A
    run planned for several processes (system.processes) starts through accelerate, one
    process per GPU of this machine (cpt_studio.core.launch.local_command).

    It runs in its own session (POSIX) or process group without a console (Windows), so closing
    the GUI never stops it, and a terminal's Ctrl-C (or its closing) reaches only the command
    that follows it, which asks the run to stop and save, not the worker (detached_options).
    `accept_changed_corpus`: a resume goes on although the corpus changed (cpt_studio.core.data).
    ValueError for a second worker, and for resuming a finished run (it trained again from its
    last step, re-scoring its benchmarks)."""
    paths = RunPaths(Path(run_dir))
    if resume and run_state(paths.root).get("state") == "finished":
        raise ValueError(f"{paths.root} has finished: nothing to resume (a further stage starts from one "
                         "of its checkpoints: parent_run and parent_step in a new config, or Instruction-tune)")
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    if RunConfig.load(paths.config).system.processes > 1:  # one process per GPU, through accelerate
        from .launch import local_command

        command = local_command(paths.root, resume=resume, accept_changed_corpus=accept_changed_corpus)
    else:
        command = worker_command(paths.root) + (["--resume"] if resume else [])
        command += ["--accept-changed-corpus"] if accept_changed_corpus else []
    with _claim(paths):  # two launchers (GUI, CLI) on one run: one worker, never two
        running = worker_process(paths.root)
        if running is not None:
            raise ValueError(f"{paths.root} is already running (worker pid {running.pid}); "
                             "stop it first")
        paths.stop_request.unlink(missing_ok=True)
        with open(paths.log, "ab") as log:  # the child keeps its own handle
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                       **detached_options())
        write_pid(paths.root, process.pid)  # at once: the worker would write it only after start-up
    return process


CLAIM_STALE_SECONDS = 60.0
"""A claim older than this was left by a launcher that died between its check and its start."""


@contextmanager
def _claim(paths: RunPaths) -> Iterator[None]:
    """Hold `worker.claim` (created exclusively) while checking for a live worker and starting one."""
    claim = paths.claim
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if time.time() - claim.stat().st_mtime < CLAIM_STALE_SECONDS:
            raise ValueError(f"{paths.root} is being started by another window or command; "
                             "wait a moment and look again") from None
        claim.unlink(missing_ok=True)
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    try:
        yield
    finally:
        os.close(fd)
        claim.unlink(missing_ok=True)


def worker_command(run_dir: Path, module: str = "worker") -> list[str]:
    """The command line that runs a background module of `run_dir` ("worker": training,
    "evalworker": evaluation) with this installation's Python.

    In a frozen app bundle (PyInstaller sets sys.frozen) there is no `python -m`: the bundle's
    own executable runs the module named by its first argument (packaging/pyinstaller)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, module, str(run_dir)]
    return [sys.executable, "-m", f"cpt_studio.core.{module}", str(run_dir)]


def detached_options() -> dict:
    """Popen's keyword arguments that let a child outlive this process (its own session on
    POSIX; its own process group without a console on Windows): every background process of
    the app (a run's worker, an evaluation, a sweep) starts with them, followed by the CLI or
    not: in the terminal's process group a Ctrl-C, which the terminal sends to the whole group,
    killed the worker mid-step (the run failed, its steps since the last checkpoint lost)
    instead of reaching only the CLI, which asks the run to stop and save."""
    # Popen's only platform difference that psutil cannot take over: how a child outlives us.
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}
    return {"start_new_session": True}


def start_eval_worker(run_dir: Path) -> subprocess.Popen:
    """Start `python -m cpt_studio.core.evalworker RUN_DIR` on the request in eval/request.json; its
    output goes to logs/eval.log. It outlives the terminal or the GUI (detached_options)."""
    paths = RunPaths(Path(run_dir))
    paths.eval_log.parent.mkdir(parents=True, exist_ok=True)
    paths.eval_pid.parent.mkdir(parents=True, exist_ok=True)
    paths.eval_stop.unlink(missing_ok=True)
    with open(paths.eval_log, "ab") as log:  # the child keeps its own handle
        process = subprocess.Popen(worker_command(paths.root, "evalworker"), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, **detached_options())
    record_pid(paths.eval_pid, process.pid)
    return process


def request_eval_stop(run_dir: Path) -> None:
    """Ask the evaluation worker to stop after the task in progress."""
    path = RunPaths(Path(run_dir)).eval_stop
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(time.time()))


def eval_worker_pid(run_dir: Path) -> int | None:
    """The pid of the run's evaluation worker if it is alive, else None."""
    process = live_process(RunPaths(Path(run_dir)).eval_pid)
    return process.pid if process else None


def request_stop(run_dir: Path) -> None:
    RunPaths(Path(run_dir)).stop_request.write_text(str(time.time()))


def write_pid(run_dir: Path, pid: int | None = None) -> None:
    """Record the run's training worker (default: this process): see record_pid."""
    record_pid(RunPaths(Path(run_dir)).pid, pid)


def record_pid(path: Path, pid: int | None = None) -> None:
    """Record a worker's pid (default: this process) and its start time, so that a later
    process that gets the same pid is not taken for it. Written whole (temp file, rename)."""
    process = psutil.Process(pid)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(f"{process.pid} {process.create_time()!r}")
    os.replace(tmp, path)


PID_TIME_TOLERANCE = 1.0
"""Seconds a recorded start time may differ from psutil's reading of the same process (on
Linux psutil derives it from the boot time, which a clock step shifts)."""


def worker_process(run_dir: Path) -> psutil.Process | None:
    """The run's training worker if it is alive, else None (see live_process)."""
    return live_process(RunPaths(Path(run_dir)).pid)


def live_process(pid_file: Path) -> psutil.Process | None:
    """The process a pid file names if it is alive (not a zombie, not a later process that got
    its pid), else None. Works alike on Linux, macOS and Windows (psutil)."""
    try:
        fields = Path(pid_file).read_text().split()
        process = psutil.Process(int(fields[0]))
        if len(fields) > 1 and abs(process.create_time() - float(fields[1])) > PID_TIME_TOLERANCE:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return process


def worker_pid(run_dir: Path) -> int | None:
    """The pid of the run's worker if it is alive, else None."""
    process = worker_process(run_dir)
    return process.pid if process else None


def kill_worker(run_dir: Path, timeout: float = 10.0) -> bool:
    """The fallback when a stop request is not answered: kill the worker and its children."""
    process = worker_process(run_dir)
    if process is None:
        return False
    try:
        family = [*process.children(recursive=True), process]
    except psutil.Error:
        family = [process]
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(family, timeout=timeout)
    return True


def run_state(run_dir: Path) -> dict:
    """The last status event, corrected when the worker died without saying so."""
    paths = RunPaths(Path(run_dir))
    status = last_event(paths.events, "status") if paths.events.exists() else None
    return effective_state(run_dir, status.to_dict() if status else None)


def effective_state(run_dir: Path, status: dict | None) -> dict:
    """A run's last status event, corrected when the worker died without saying so."""
    state = dict(status or {"state": "created"})
    if state.get("state") == "running" and worker_pid(run_dir) is None:
        paths = RunPaths(Path(run_dir))
        state.update(state="failed", message="the worker process ended without a final status "
                     f"(killed, or out of memory); see {paths.relative(paths.log)}", phase="error")
    return state

