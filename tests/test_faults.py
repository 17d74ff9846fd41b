"""Faults a long run meets: the process killed at any point, a full disk, a step that does not
fit in memory, two processes writing the store. Nothing done is lost beyond one checkpoint
interval, no partial checkpoint is ever used, and every file stays readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpt_studio.core import training
from cpt_studio.core.config import CheckpointConfig, EvalConfig, ScheduleConfig
from cpt_studio.core.disk import DiskFullError, folder_size
from cpt_studio.core.events import read_events
from cpt_studio.core.guard import GuardState, out_of_memory
from cpt_studio.core.run_folder import RunPaths, list_checkpoints
from cpt_studio.core.runs import create_run
from cpt_studio.core.store import index_run, open_store, run_metrics
from cpt_studio.core.testing.run_helpers import events_of, history, tiny_run_config
from cpt_studio.core.training import train
from cpt_studio.core.worker import main as worker_main

LAUNCHER = Path(__file__).with_name("fault_launcher.py")


def _config(model_dir: Path, data_dir: Path, steps: int = 30):
    return tiny_run_config(model_dir, data_dir, schedule=ScheduleConfig(peak_lr=1e-3, max_steps=steps, warmup_ratio=0.1),
                           eval=EvalConfig(interval=10, heldout_count=8),
                           checkpoints=CheckpointConfig(interval=10, keep=5))


def _worker(point: str, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCHER), point, str(run_dir), *extra],
                          capture_output=True, text=True, timeout=300)


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / "trainer_state.json").exists() and (checkpoint / "model.safetensors").exists()


def _resumed_from(run_dir: Path) -> int | None:
    resumes = [e for e in events_of(run_dir, "status") if "resumed_from" in e]
    return resumes[-1]["resumed_from"] if resumes else None


# -- killed at any point -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("point, last_logged, resumes_from", [
    ("tokenizing", None, None),  # before training: the resume starts over
    ("step", 14, 10),            # inside step 15
    ("checkpoint", 20, 10),      # checkpoint-20 half-written
    ("evaluating", 19, 10),      # step 20's evaluation comes before its step event
])
def test_killed_then_resumed_loses_at_most_one_interval(tmp_path, tiny_model_dir, point, last_logged, resumes_from):
    run_dir = create_run(_config(tiny_model_dir, tmp_path / "data"), tmp_path / "runs")
    killed = _worker(point, run_dir)
    assert killed.returncode == -9, killed.stderr[-2000:]
    read_events(RunPaths(run_dir).events)  # readable, whatever line was cut off
    if last_logged is not None:
        assert max(e["step"] for e in events_of(run_dir, "step")) == last_logged

    resumed = _worker("none", run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert events_of(run_dir, "status")[-1]["state"] == "finished"
    assert _resumed_from(run_dir) == resumes_from  # the last complete checkpoint, one interval back at most
    kept = history(run_dir)
    assert [e["step"] for e in kept if e["type"] == "step"] == list(range(1, 31))
    assert [e["step"] for e in kept if e["type"] == "eval"] == [0, 10, 20, 30]
    assert all(_complete(c) for c in list_checkpoints(run_dir))
    assert [c.name for c in list_checkpoints(run_dir)][-1] == "checkpoint-30"
    assert not any((RunPaths(run_dir).staging).glob("*"))  # the cut-off write was cleared away
    if point == "tokenizing":
        assert not list((Path(os.environ["CPT_STUDIO_HOME"]) / "token-cache").glob("*.tmp-*"))


@pytest.mark.slow
def test_killed_while_the_store_indexes_leaves_it_readable(tmp_path, tiny_model_dir):
    run_dir = create_run(_config(tiny_model_dir, tmp_path / "data", steps=10), tmp_path / "runs")
    killed = _worker("indexing", run_dir)
    assert killed.returncode == -9
    assert events_of(run_dir, "status")[-1]["state"] == "finished"  # the run itself had ended
    db = open_store()  # the cut-off transaction left nothing half-written: the row of the run's start
    assert db["runs"].count == 1 and run_metrics(db, str(run_dir.resolve()), "loss") == []
    index_run(db, run_dir)
    assert run_metrics(db, str(run_dir.resolve()), "loss")[-1][0] == 10


# -- out of memory ---------------------------------------------------------------------------

def test_out_of_memory_halves_the_micro_batch_and_keeps_the_sequences_per_step():
    state = GuardState()
    halved = out_of_memory(state, 4, 5, step=7, last_checkpoint=0)
    assert (halved.action, halved.rolled_back_to) == ("rollback", 0)
    assert halved.state.batch(4, 5) == (2, 10) and "still 20 sequences" in halved.remedy
    assert out_of_memory(state, 3, 5, 7, 0).state.batch(3, 5) == (1, 15)
    assert out_of_memory(state, 6, 1, 7, 0).state.batch(6, 1) == (3, 2)
    assert out_of_memory(state, 1, 8, 7, 0).action == "stop"
    no_checkpoint = out_of_memory(state, 4, 5, 7, None)
    assert no_checkpoint.action == "stop" and "batch.micro_batch = 2" in no_checkpoint.message
    assert halved.state.rollbacks == 0  # not counted against the guard's max_rollbacks


@pytest.mark.slow
def test_a_step_out_of_memory_resumes_with_half_the_micro_batch_and_the_same_losses(
        tmp_path, tiny_model_dir, monkeypatch):
    config = _config(tiny_model_dir, tmp_path / "data", steps=12)
    clean = create_run(config, tmp_path / "clean")
    assert train(clean) == "finished"

    load = training.load_model_and_tokenizer

    def load_with_small_memory(*args, **kwargs):
        model, tokenizer = load(*args, **kwargs)

        def too_big(module, args, kwargs):  # training batches above 2 sequences do not fit
            if module.training and kwargs["input_ids"].shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        model.register_forward_pre_hook(too_big, with_kwargs=True)
        return model, tokenizer
    monkeypatch.setattr(training, "load_model_and_tokenizer", load_with_small_memory)
    run_dir = create_run(config, tmp_path / "oom")
    assert train(run_dir) == "finished"

    [guard] = events_of(run_dir, "guard")
    assert guard["reason"] == "out of memory" and guard["rolled_back_to"] == 0
    assert guard["remedy"].startswith("micro-batch 4 -> 2, gradient accumulation 5 -> 10")
    assert json.loads((run_dir / "guard.json").read_text())["micro_batch"] == 2
    ours = {e["step"]: e for e in history(run_dir) if e["type"] == "step"}
    reference = {e["step"]: e for e in events_of(clean, "step")}
    assert sorted(ours) == sorted(reference) == list(range(1, 13))
    for step, event in ours.items():  # same sequences per optimizer step: same losses and replay
        assert event["loss"] == pytest.approx(reference[step]["loss"], rel=1e-4)
        assert event["replay_fraction"] == reference[step]["replay_fraction"]


# -- a full disk -----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB file system (tmpfs), unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> None:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler.bin", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a size-limited tmpfs needs root")


@needs_root
@pytest.mark.slow
@pytest.mark.parametrize("when", ["before the write", "during the write"])
def test_a_full_disk_stops_the_run_cleanly_and_keeps_earlier_checkpoints(
        tmp_path, tiny_model_dir, small_disk, monkeypatch, when):
    run_dir = create_run(_config(tiny_model_dir, tmp_path / "data", steps=20), small_disk / "runs")
    on_checkpoint = training.RunMonitor.on_checkpoint

    def fill_after_first(self, path, step):
        on_checkpoint(self, path, step)
        if step == 10:  # after checkpoint-10, leave less than a checkpoint's size free
            _fill(small_disk, leave=folder_size(path) // 3)
    monkeypatch.setattr(training.RunMonitor, "on_checkpoint", fill_after_first)
    if when == "during the write":  # the estimate passes, the disk fills half-way through
        monkeypatch.setattr(training, "expected_checkpoint_bytes", lambda run_dir, model: 0)

    assert worker_main([str(run_dir)]) == 1
    status = events_of(run_dir, "status")[-1]
    assert status["state"] == "failed" and status["message"].startswith("DiskFullError")
    assert "checkpoint-20" in status["message"] and "resume" in status["message"]
    if when == "before the write":
        assert "not enough disk space" in status["message"] and str(small_disk) in status["message"]
    else:
        assert "filled up while writing" in status["message"]
    assert [c.name for c in list_checkpoints(run_dir)] == ["checkpoint-0", "checkpoint-10"]
    assert all(_complete(c) for c in list_checkpoints(run_dir))
    assert not any(RunPaths(run_dir).staging.glob("*"))

    (small_disk / "filler.bin").unlink()  # the user frees space and resumes
    monkeypatch.setattr(training.RunMonitor, "on_checkpoint", on_checkpoint)
    assert worker_main([str(run_dir), "--resume"]) == 0
    assert events_of(run_dir, "status")[-1]["state"] == "finished"
    assert _resumed_from(run_dir) == 10


def test_the_token_store_refuses_to_start_on_a_disk_without_room(tmp_path, tiny_tokenizer, monkeypatch):
    from cpt_studio.core import disk, tokenstore
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl

    corpus = write_jsonl(tmp_path / "d.jsonl", make_documents(50))
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: replace_usage(free=1000))
    with pytest.raises(DiskFullError, match=r"not enough disk space for the tokenized corpus.*CPT_STUDIO_HOME"):
        tokenstore.prepare([SourceSpec(str(corpus))], tiny_tokenizer, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))


def replace_usage(free: int):
    from shutil import _ntuple_diskusage

    return _ntuple_diskusage(10**9, 10**9 - free, free)


# -- two processes on one store ----------------------------------------------------------------

INDEX_LOOP = """
import sys
from pathlib import Path
from cpt_studio.core.store import index_run, open_store, list_runs
db = open_store(sys.argv[1])
for _ in range(15):
    for run in sys.argv[2:]:
        index_run(db, Path(run))
    list_runs(db)
"""


def test_two_processes_index_into_one_store_without_losing_rows(tmp_path):
    from cpt_studio.core.testing.compare_runs import write_compare_run

    runs = [write_compare_run(tmp_path / "runs" / f"run{i}", f"run{i}", 0.05 * i, 1e-4,
                              [(10, 0.1, 0.01), (20, 0.2, 0.02)]) for i in range(4)]
    db_path = tmp_path / "store.db"
    open_store(db_path)
    writers = [subprocess.Popen([sys.executable, "-c", INDEX_LOOP, str(db_path), *map(str, half)],
                                stderr=subprocess.PIPE, text=True) for half in (runs[:2], runs[2:])]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    db = open_store(db_path)
    assert db["runs"].count == 4
    assert all(len(run_metrics(db, str(Path(r).resolve()), "loss")) == 20 for r in runs)
