"""Run configs and helpers for tests that train the tiny model."""

import subprocess
import time
from pathlib import Path

from cpt_studio.core.config import (
    BatchConfig,
    CheckpointConfig,
    CorpusConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
)
from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.events import parse_event, read_events
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run, start_worker
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.timeline import RunTimeline


def tiny_run_config(model_dir: Path, data_dir: Path, **sections) -> RunConfig:
    data_dir.mkdir(parents=True, exist_ok=True)
    domain = write_jsonl(data_dir / "domain.jsonl", make_documents(240, seed=1))
    general = write_jsonl(data_dir / "general.jsonl", make_documents(120, seed=2))
    config = RunConfig(
        name="tiny", model=ModelConfig(str(model_dir)),
        corpus=CorpusConfig(domain=[SourceSpec(str(domain))], general=[SourceSpec(str(general))],
                            replay_ratio=0.05),
        schedule=ScheduleConfig(peak_lr=1e-3, max_steps=20, warmup_ratio=0.1),
        batch=BatchConfig(micro_batch=4, grad_accum=5, seq_len=64),
        eval=EvalConfig(interval=10, heldout_count=8),
        checkpoints=CheckpointConfig(interval=10, keep=2),
        method=MethodConfig(),
    )
    for name, value in sections.items():
        setattr(config, name, value)
    return config


def events_of(run_dir: Path, kind: str | None = None) -> list[dict]:
    path = RunPaths(run_dir).events
    events = read_events(path)[0] if path.exists() else []
    return [e for e in events if kind is None or e["type"] == kind]


def history(run_dir: Path, kind: str | None = None) -> list[dict]:
    """The run's events as its timeline keeps them (resumes applied), as written."""
    kept = RunTimeline.load(RunPaths(run_dir).events).events
    return [e.to_dict() for e in kept if kind is None or e.TYPE == kind]


def timeline_of(events: list[dict]) -> list[dict]:
    """What RunTimeline keeps of events given as dicts (resumes applied), as dicts."""
    timeline = RunTimeline()
    timeline.feed(parse_event(event) for event in events)
    return [e.to_dict() for e in timeline.events]


def last_per_step(events: list[dict]) -> dict[int, dict]:
    """After a resume, steps after the checkpoint were logged twice: the last one counts."""
    return {e["step"]: e for e in events}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_in_background(config: RunConfig, root: Path) -> tuple[Path, subprocess.Popen]:
    run_dir = create_run(config, root)
    return run_dir, start_worker(run_dir)


def kill(process: subprocess.Popen) -> None:
    process.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    process.wait(10)
