"""The same run on several processes: the launch bundle's files, and one run on two CPU
processes (gloo) started through the bundle's launch.sh, checked against the run on one
process with the same global batch: the same losses, one events file, one set of checkpoints,
the replay share of every global step, the guard's rollback and a stop request followed by
both ranks, and a resume of its checkpoint on one process."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from cpt_studio.core import cli
from cpt_studio.core.config import (
    BatchConfig,
    CheckpointConfig,
    EvalConfig,
    EwcConfig,
    GuardConfig,
    RunConfig,
    ScheduleConfig,
)
from cpt_studio.core.launch import local_command, write_bundle
from cpt_studio.core.mixing import MixingSampler, ReplayMixer
from cpt_studio.core.recipe import accumulation_per_process, optimizer_steps
from cpt_studio.core.run_folder import RunPaths, list_checkpoints
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import write_distant_corpus
from cpt_studio.core.testing.run_helpers import events_of, history, tiny_run_config, wait_for
from cpt_studio.core.training import train


def test_a_step_holds_the_same_batch_on_any_number_of_processes():
    config = RunConfig(batch=BatchConfig(micro_batch=2, grad_accum=4))
    config.system.processes = 2
    assert accumulation_per_process(4, 2, world_size=2) == 4
    assert accumulation_per_process(4, 2, world_size=1) == 8  # resumed on one process
    assert accumulation_per_process(4, 2, world_size=8) == 1
    with pytest.raises(ValueError, match="= 8 cannot be shared by 3 processes"):
        accumulation_per_process(4, 2, world_size=3)
    config.schedule.max_steps, config.schedule.token_budget = None, 16 * 1024 * 10
    assert optimizer_steps(config, 1000, False) == 10  # 16 sequences a step, whatever the world


@pytest.mark.parametrize("world, accumulation", [(2, 3), (3, 2)])
def test_every_global_step_is_the_mixers_step_under_the_trainers_sharding(world, accumulation):
    """The Trainer hands the sampler's stream to accelerate, which gives rank r the
    micro-batches r, r + world, ... (prepare_data_loader, as Trainer.get_train_dataloader):
    optimizer step k of all ranks together is mixer.step(k), its general share exact."""
    from accelerate.data_loader import prepare_data_loader

    micro = 2
    mixer = ReplayMixer(n_domain=50, n_general=30, replay_ratio=0.25, seqs_per_step=micro * accumulation * world)
    loader = DataLoader(list(range(80)), batch_size=micro, sampler=MixingSampler(mixer, end_step=5))
    ranks = [list(prepare_data_loader(loader, num_processes=world, process_index=r, put_on_device=False))
             for r in range(world)]
    for step in range(5):
        seen = [int(i) for batches in ranks for b in batches[step * accumulation:(step + 1) * accumulation]
                for i in b]
        assert sorted(seen) == sorted(mixer.step(step))
        assert sum(i >= 50 for i in seen) == mixer.general_in(step)
    assert mixer.general_before(5) == int(5 * mixer.seqs_per_step * 0.25)


def test_the_bundle_holds_accelerates_config_the_scripts_and_a_readme(tmp_path, tiny_model_dir, capsys):
    run_dir = create_run(tiny_run_config(tiny_model_dir, tmp_path / "data"), tmp_path / "runs")
    assert cli.main(["launch", str(run_dir), "--gpus", "4", "--nodes", "2", "--strategy", "deepspeed"]) == 0
    paths = RunPaths(run_dir)
    assert str(paths.launch_script) in capsys.readouterr().out
    settings = yaml.safe_load(paths.accelerate_config.read_text())
    assert (settings["distributed_type"], settings["num_processes"], settings["num_machines"]) == ("DEEPSPEED", 8, 2)
    assert settings["deepspeed_config"]["deepspeed_config_file"] == paths.deepspeed_config.name
    assert json.loads(paths.deepspeed_config.read_text())["zero_optimization"]["stage"] == 2
    assert RunConfig.load(paths.config).system.processes == 8  # the global batch: 4 x 5 x 8
    script = paths.launch_script.read_text()
    assert "accelerate} launch --config_file" in script and "-m cpt_studio.core.worker" in script
    assert "pip install deepspeed" in script and "pip install deepspeed" in paths.launch_readme.read_text()
    assert "--nnodes 2 --nproc_per_node 4" in paths.torchrun_script.read_text()
    assert "#SBATCH --nodes=2" in paths.slurm_script.read_text()
    assert os.access(paths.launch_script, os.X_OK)
    for script in (paths.launch_script, paths.torchrun_script, paths.slurm_script):
        subprocess.run(["bash", "-n", str(script)], check=True)  # the shell reads them

    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ValueError, match="uses DeepSpeed, which is not installed: pip install deepspeed"):
            local_command(run_dir)
    fsdp = yaml.safe_load(paths.accelerate_config.read_text() if write_bundle(
        run_dir, gpus=2, strategy="fsdp") else "")
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    assert not paths.deepspeed_config.exists()
    command = local_command(run_dir, resume=True)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2" and command[-2:] == [str(paths.root), "--resume"]


def test_the_bundle_refuses_what_cannot_work(tmp_path, tiny_model_dir):
    run_dir = create_run(tiny_run_config(tiny_model_dir, tmp_path / "data", ewc=EwcConfig(enabled=True)),
                         tmp_path / "runs")
    with pytest.raises(ValueError, match="EWC penalty is not supported yet with fsdp.*--strategy ddp"):
        write_bundle(run_dir, gpus=2, strategy="fsdp")
    with pytest.raises(ValueError, match="a CPU bundle runs DDP over gloo only"):
        write_bundle(run_dir, gpus=2, strategy="deepspeed", cpu=True)
    RunPaths(run_dir).checkpoint(10).mkdir(parents=True)  # started: its batch (4 x 5 x 1) is kept
    with pytest.raises(ValueError, match="cannot be shared by 2 processes.*the run has checkpoints"):
        write_bundle(run_dir, gpus=2)


# -- one run on two processes ----------------------------------------------------------------

def _pretrained(model_dir: Path, data: Path, out: Path) -> Path:
    """The tiny model after 40 steps on the general text: training on the distant domain
    then makes that text clearly harder (forgetting above 300% by step 4 at LR 5e-3), so a
    guard threshold of 3 rolls back; the untrained model only gets better on any text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    texts = [json.loads(line)["text"] for line in (data / "general.jsonl").open()]
    ids = [i for text in texts for i in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    rows = torch.tensor(ids[:len(ids) // 64 * 64]).view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        batch = rows[torch.randint(len(rows), (8,))]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _config(model_dir: Path, data: Path) -> RunConfig:
    config = tiny_run_config(model_dir, data, schedule=ScheduleConfig(peak_lr=5e-3, max_steps=10, warmup_ratio=0),
                             batch=BatchConfig(micro_batch=2, grad_accum=2, seq_len=64),
                             eval=EvalConfig(interval=2, heldout_count=8),
                             checkpoints=CheckpointConfig(interval=2, keep=3),
                             guard=GuardConfig(threshold=3.0, remedy="lr", max_rollbacks=2))
    write_distant_corpus(data)
    config.corpus.replay_ratio = 0.125  # 1 general sequence in each step of 8
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    """(the one-process run, the two-process run stopped part-way, the launcher's exit code)."""
    root = tmp_path_factory.mktemp("multigpu")
    data = root / "data"
    config = _config(tiny_model_dir, data)
    config.model.name_or_path = str(_pretrained(tiny_model_dir, data, root / "pretrained"))
    config.system.processes = 2  # 2 x 2 x 2 = 8 sequences a step; on one process it accumulates 4
    one = create_run(config, root / "one")
    assert train(one) == "finished"

    two = create_run(config, root / "two")
    paths = RunPaths(two)
    write_bundle(two, gpus=2, cpu=True, port=_free_port())
    accelerate = f"{sys.executable} -m accelerate.commands.accelerate_cli"
    env = {**os.environ, "ACCELERATE": accelerate, "OMP_NUM_THREADS": "1"}
    with open(root / "launch.out", "wb") as out:
        launcher = subprocess.Popen(["bash", str(paths.launch_script)], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # After the rollback, once step 7 is done: stop (every rank saves at the same step).
            wait_for(lambda: events_of(two, "guard") and any(e["step"] == 7 for e in events_of(two, "step")),
                     timeout=240, what="step 7 after the rollback", poll=0.02)
            paths.stop_request.touch()
            code = launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    return one, two, code, (root / "launch.out").read_text(errors="replace")


def _losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in history(run_dir, "step")}


def test_two_processes_through_the_bundle_train_as_one(two_runs):
    one, two, code, output = two_runs
    assert code == 0, output[-3000:]
    expected, got = _losses(one), _losses(two)
    stopped = max(got)
    assert 7 <= stopped < 10
    assert got == pytest.approx({s: expected[s] for s in got}, rel=1e-4)

    # One events file, written by the main process alone: each event once.
    assert sorted(p.name for p in two.glob("*.jsonl")) == ["events.jsonl"]
    raw = events_of(two)
    assert [e["state"] for e in raw if e["type"] == "status" and e["phase"] == "done"] == ["stopped"]
    assert len([e for e in raw if e["type"] == "eval" and e["step"] == 0]) == 1
    steps = [e["step"] for e in raw if e["type"] == "step"]
    guard = [e for e in raw if e["type"] == "guard"]
    assert len(guard) == 1 and guard[0]["action"] == "rollback" and guard[0]["rolled_back_to"] == 2
    assert steps == [1, 2, 3, 4, *range(3, stopped + 1)]  # after the rollback, from step 2 again
    assert all(e["replay_fraction"] == 0.125 for e in raw if e["type"] == "step")
    assert [e for e in events_of(one, "guard")][0]["step"] == guard[0]["step"]  # the same decision

    # One set of checkpoints, each with both ranks' RNG state; nothing left in staging.
    saved = list_checkpoints(two)
    assert saved[-1].name == f"checkpoint-{stopped}"
    assert {p.name for p in saved[-1].glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert not any(RunPaths(two).staging.glob("*"))

    # Both ranks followed the main process's decisions: each logged them.
    log = RunPaths(two).log.read_text()
    for rank in (0, 1):
        assert f"rank {rank} of 2 INFO cpt_studio.core.training: the guard rolls back to checkpoint-2" in log
        assert f"rank {rank} of 2 INFO cpt_studio.core.training: stop requested: saving a checkpoint " \
               f"and stopping at step {stopped}" in log


def test_the_two_process_checkpoint_resumes_on_one_process(two_runs):
    one, two, code, _ = two_runs
    stopped = max(_losses(two))
    RunPaths(two).stop_request.unlink()  # as `cpt-studio resume` does before it starts the worker
    assert train(two, resume=True) == "finished"
    expected, got = _losses(one), _losses(two)
    assert sorted(got) == list(range(1, 11))
    assert {s: got[s] for s in range(stopped + 1, 11)} == pytest.approx(
        {s: expected[s] for s in range(stopped + 1, 11)}, rel=1e-4)


def test_start_launches_a_run_of_several_processes_through_accelerate(tmp_path, tiny_model_dir, monkeypatch):
    from cpt_studio.core import runs

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.system.processes = 2
    run_dir = create_run(config, tmp_path / "runs")
    started = []
    monkeypatch.setattr(runs.subprocess, "Popen", lambda command, **kwargs: started.append(command) or
                        type("Process", (), {"pid": os.getpid()})())
    runs.start_worker(run_dir, resume=True)
    assert started == [local_command(run_dir, resume=True)]
    assert started[0][started[0].index("--num_processes") + 1] == "2"
    assert RunPaths(run_dir).accelerate_config.exists()  # the bundle it launches, for this machine
