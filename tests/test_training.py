"""A CPT run end to end on the tiny model: events, evaluations, checkpoints, the LR schedule,
LoRA, kill-and-resume, and a stop request."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpt_studio.core.config import CheckpointConfig, MethodConfig, ScheduleConfig
from cpt_studio.core.run_folder import list_checkpoints
from cpt_studio.core.runs import create_run, request_stop, runs_dir, start_worker
from cpt_studio.core.testing.run_helpers import (
    events_of,
    kill,
    last_per_step,
    run_in_background,
    tiny_run_config,
    wait_for,
)
from cpt_studio.core.training import train


def test_a_full_run_writes_config_events_evaluations_and_checkpoints(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"

    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["corpus"]["replay_ratio"] == 0.05
    assert saved["corpus"]["separator"] == "<|endoftext|>"  # the separator the run resolved
    assert json.loads((run_dir / "heldout" / "corpus.json").read_text()).keys() == {"domain", "general"}
    evals = events_of(run_dir, "eval")
    assert [e["step"] for e in evals] == [0, 10, 20]
    assert evals[0]["baseline"] and evals[0]["forgetting"] == 0 and evals[0]["domain_gain"] == 0
    assert evals[-1]["domain_ppl"] < evals[0]["domain_ppl"]  # it learned the domain
    assert evals[-1]["domain_gain"] == pytest.approx(1 - evals[-1]["domain_ppl"] / evals[0]["domain_ppl"])
    assert evals[-1]["forgetting"] == pytest.approx(evals[-1]["general_ppl"] / evals[0]["general_ppl"] - 1)

    steps = events_of(run_dir, "step")
    assert [e["step"] for e in steps] == list(range(1, 21))
    assert all(math.isfinite(e["loss"]) and e["tokens"] == e["step"] * 20 * 64 for e in steps)
    assert {e["replay_fraction"] for e in steps} == {0.05}  # 1 of 20 sequences in every step

    [last] = [p for p in list_checkpoints(run_dir) if p.name == "checkpoint-20"]
    model = AutoModelForCausalLM.from_pretrained(last)  # a complete, loadable checkpoint
    assert AutoTokenizer.from_pretrained(last).eos_token_id is not None
    assert json.loads((last / "run_config.json").read_text()) == json.loads((run_dir / "config.json").read_text())
    assert (last / "optimizer.pt").exists() and (last / "trainer_state.json").exists()
    assert sum(p.numel() for p in model.parameters()) > 0
    assert not (run_dir / "checkpoints" / ".staging" / "checkpoint-20").exists()
    status = events_of(run_dir, "status")[-1]
    assert (status["state"], status["exit_code"]) == ("finished", 0)


def test_lr_follows_warmup_then_cosine_down_to_ten_percent(tmp_path, tiny_model_dir):
    peak, total = 1e-3, 20
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=peak, max_steps=total, warmup_ratio=0.1))
    run_dir = create_run(config, tmp_path / "runs")
    train(run_dir)
    warmup = 2  # ceil(20 * 0.1)

    def expected(i):  # the LR used by optimizer step i (0-based)
        if i < warmup:
            return peak * i / warmup
        progress = (i - warmup) / (total - warmup)
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    lrs = [e["lr"] for e in events_of(run_dir, "step")]
    assert lrs == pytest.approx([expected(i) for i in range(total)], rel=1e-6)
    assert lrs[-1] > 0.1 * peak and max(lrs) == pytest.approx(peak)


def test_lora_runs_and_saves_an_adapter(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             method=MethodConfig(kind="lora", lora_rank=8, lora_alpha=16),
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=10, warmup_ratio=0))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    last = list_checkpoints(run_dir)[-1]
    adapter = json.loads((last / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) >= {"q_proj", "down_proj"}
    evals = events_of(run_dir, "eval")
    assert evals[-1]["domain_ppl"] < evals[0]["domain_ppl"]


def test_kill_and_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path, tiny_model_dir):
    STEPS = 150  # the kill lands a few steps after the first checkpoint (20): room to spare
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=STEPS, warmup_ratio=0.05),
                             checkpoints=CheckpointConfig(interval=20, keep=2))
    config.eval.interval = 50
    reference = create_run(config, tmp_path / "reference")
    train(reference)

    run_dir, worker = run_in_background(config, tmp_path / "runs")
    wait_for(lambda: any(e["step"] >= 20 for e in events_of(run_dir, "checkpoint")), 120, "a checkpoint")
    kill(worker)
    killed_at = max(e["step"] for e in events_of(run_dir, "step"))
    assert killed_at < STEPS, "the run finished before it could be killed: make it longer"
    resumed_from = max(int(p.name.split("-")[1]) for p in list_checkpoints(run_dir))

    resumed = start_worker(run_dir, resume=True)
    assert resumed.wait(300) == 0, (run_dir / "logs" / "worker.log").read_text()[-3000:]
    got, want = last_per_step(events_of(run_dir, "step")), last_per_step(events_of(reference, "step"))
    assert sorted(got) == list(range(1, STEPS + 1))
    later = range(resumed_from + 1, STEPS + 1)
    assert [got[s]["loss"] for s in later] == pytest.approx([want[s]["loss"] for s in later], rel=1e-5)
    assert [got[s]["lr"] for s in later] == pytest.approx([want[s]["lr"] for s in later], rel=1e-9)
    assert any(e.get("resumed_from") == resumed_from for e in events_of(run_dir, "status"))
    assert events_of(run_dir, "status")[-1]["state"] == "finished"
    log = (run_dir / "logs" / "worker.log").read_text()  # what the monitor shows under its charts
    assert "INFO transformers.trainer: ***** Running training *****" in log  # the libraries' log is kept,
    assert "'train_runtime'" not in log and "share your model" not in log  # less the Trainer's printout and hub advice


def test_a_stop_request_saves_a_checkpoint_and_ends_stopped(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=5000, warmup_ratio=0.01),
                             checkpoints=CheckpointConfig(interval=1000, keep=1))
    run_dir, worker = run_in_background(config, tmp_path / "runs")
    wait_for(lambda: events_of(run_dir, "step"), 120, "the first training step")
    request_stop(run_dir)
    assert worker.wait(60) == 0
    status = events_of(run_dir, "status")[-1]
    assert status["state"] == "stopped"
    [checkpoint] = list_checkpoints(run_dir)
    assert checkpoint.name == f"checkpoint-{status['step']}" and status["step"] < 5000
    assert torch.load(checkpoint / "rng_state.pth", weights_only=False) is not None


@pytest.mark.skipif(os.name == "nt", reason="a terminal's Ctrl-C is a SIGINT to its foreground process group")
@pytest.mark.parametrize("sent, code", [(signal.SIGINT, 0), (signal.SIGHUP, 128 + signal.SIGHUP)])
def test_ctrl_c_or_closing_the_terminal_stops_a_followed_run_with_a_checkpoint(tmp_path, tiny_model_dir, sent, code):
    """A terminal sends Ctrl-C's SIGINT to its whole foreground process group: the CLI (which
    asks the run to stop and waits for its checkpoint) and, when it was in that group, the
    worker, which died mid-step (a tester: run failed, steps since the last checkpoint lost).
    Closing the terminal (SIGHUP) stops it too: in a session of its own the worker went on
    training with no console; Ctrl-C's output ends with the run's last lines and how to resume."""
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=5000, warmup_ratio=0.01),
                             checkpoints=CheckpointConfig(interval=1000, keep=1))
    config_file = tmp_path / "run.json"
    config_file.write_text(config.to_json())
    cli = subprocess.Popen([sys.executable, "-m", "cpt_studio.core.cli", "train", str(config_file)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # a process group of its own, as a terminal's job
    try:
        run_dir = wait_for(lambda: next(runs_dir().glob("*/events.jsonl"), None), 120, "the run folder").parent
        wait_for(lambda: events_of(run_dir, "step"), 120, "the first training step")
        os.killpg(cli.pid, sent)  # what the terminal does on Ctrl-C, or as it closes
        output, _ = cli.communicate(timeout=120)
        wait_for(lambda: events_of(run_dir, "status")[-1]["state"] == "stopped", 120, "the run to stop")
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == code, output
    status = events_of(run_dir, "status")[-1]
    assert [p.name for p in list_checkpoints(run_dir)] == [f"checkpoint-{status['step']}"]
    if sent == signal.SIGINT:
        assert "stop requested; waiting for the checkpoint" in output
        assert output.rstrip().endswith(f"`cpt-studio resume {run_dir}` goes on from step {status['step']:,}"), output
        assert "[stopped]" in output


def test_the_wizard_lr_curve_is_the_one_training_follows(tmp_path, tiny_model_dir):
    from cpt_studio.core.plan import lr_schedule

    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=20, warmup_ratio=0.1, decay="wsd"))
    run_dir = create_run(config, tmp_path / "runs")
    train(run_dir)
    assert [e["lr"] for e in events_of(run_dir, "step")] == pytest.approx(lr_schedule(config, 20), rel=1e-9)
    linear = lr_schedule(tiny_run_config(tiny_model_dir, tmp_path / "d2", schedule=ScheduleConfig(
        peak_lr=1.0, max_steps=11, warmup_ratio=0, decay="linear", min_lr_ratio=0.1)), 11)
    assert linear == pytest.approx([1.0 - 0.9 * i / 11 for i in range(11)])  # as HF: min reached after the last step


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    folders = [create_run(config, tmp_path / "runs") for _ in range(3)]
    assert len(set(folders)) == 3 and all((f / "config.json").exists() for f in folders)
