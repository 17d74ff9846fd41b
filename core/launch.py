"""The launch bundle: a run on several GPUs or nodes, as files in the run folder's launch/.

    bundle = write_bundle(run_dir, gpus=4, nodes=2, strategy="fsdp")   # <run>/launch/
    local_command(run_dir)     # Start on this machine's GPUs: `accelerate launch ... worker RUN`

The worker is an ordinary accelerate program: `accelerate launch` (or `torchrun`) starts it once
per GPU and the engine is rank-aware (cpt_studio.core.distributed). The bundle holds:

- accelerate_config.yaml, accelerate's own config file: DDP (MULTI_GPU), FSDP2 (weights,
  gradients and optimizer state sharded; checkpoints gathered into ordinary HF files) or
  DeepSpeed ZeRO-2 (with deepspeed.json, DeepSpeed's own config, its sizes left to the Trainer);
- launch.sh: one machine (or, with MACHINE_RANK and MAIN_IP set, each node of several);
- torchrun.sh: the torchrun line for each node (DDP);
- slurm.sbatch: a Slurm batch template that runs launch.sh on every node;
- README.md: how to copy the run folder to a cluster and start it there.

Writing a bundle sets system.processes (GPUs x nodes) on a run that has no checkpoint yet:
each optimizer step then holds micro_batch x grad_accum x processes sequences, however many
processes later run or resume it (cpt_studio.core.recipe.accumulation_per_process).

A CPU bundle (`cpu=True`) starts CPU processes that talk over gloo: the same scripts, for
trying a bundle (and for the tests) on a machine without GPUs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from .config import RunConfig
from .recipe import accumulation_per_process
from .run_folder import (
    ACCELERATE_CONFIG,
    CONFIG,
    DEEPSPEED_CONFIG,
    EVENTS,
    LAUNCH,
    LAUNCH_SCRIPT,
    LOGS,
    SLURM_SCRIPT,
    STOP,
    TORCHRUN_SCRIPT,
    WORKER_LOG,
    RunPaths,
    list_checkpoints,
)

STRATEGIES = ("ddp", "fsdp", "deepspeed")
"""How a run spreads over GPUs: a copy of the model on each (ddp), its weights, gradients and
optimizer state sharded (fsdp, FSDP2), or DeepSpeed's ZeRO stage 2 (deepspeed)."""

NAMES = {"launch_sh": LAUNCH_SCRIPT, "torchrun_sh": TORCHRUN_SCRIPT, "slurm": SLURM_SCRIPT,
         "accelerate_yaml": ACCELERATE_CONFIG, "deepspeed_json": DEEPSPEED_CONFIG,
         "config": CONFIG, "events": EVENTS, "log": f"{LOGS}/{WORKER_LOG}", "launch": LAUNCH, "stop": STOP}
"""The run folder's names the scripts and the README mention (cpt_studio.core.run_folder)."""

DEFAULT_PORT = 29500
WORKER_MODULE = "cpt_studio.core.worker"


def write_bundle(run_dir: Path, *, gpus: int, nodes: int = 1, strategy: str = "ddp",
                 cpu: bool = False, port: int = DEFAULT_PORT) -> Path:
    """Write <run>/launch/ for `gpus` GPUs on each of `nodes` machines; return the folder.
    ValueError, with what to change, for settings that cannot work (see the module docstring)."""
    paths = RunPaths(Path(run_dir).resolve())
    config = RunConfig.load(paths.config)
    _check(config, paths, gpus, nodes, strategy, cpu)
    if not list_checkpoints(paths.root) and config.system.processes != gpus * nodes:
        config.system.processes = gpus * nodes
        staged = paths.config.with_suffix(".json.tmp")
        staged.write_text(config.to_json())
        os.replace(staged, paths.config)
    paths.launch.mkdir(exist_ok=True)
    files = {
        paths.accelerate_config: accelerate_config(gpus, nodes, strategy, cpu, port),
        paths.launch_script: _launch_script(config.name, gpus, nodes, strategy, cpu),
        paths.torchrun_script: _torchrun_script(gpus, nodes, port),
        paths.slurm_script: _slurm_script(config.name, gpus, nodes),
        paths.launch_readme: _readme(config.name, gpus, nodes, strategy, cpu),
    }
    if strategy == "deepspeed":
        files[paths.deepspeed_config] = json.dumps(DEEPSPEED_ZERO2, indent=2) + "\n"
    else:  # a bundle written again with another strategy
        paths.deepspeed_config.unlink(missing_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    for path in (paths.launch_script, paths.torchrun_script, paths.slurm_script):
        path.chmod(0o755)
    return paths.launch


def _check(config: RunConfig, paths: RunPaths, gpus: int, nodes: int, strategy: str, cpu: bool) -> None:
    from .distributed import unsupported  # imports torch: only when a bundle is written

    problems = []
    if gpus < 1 or nodes < 1:
        problems.append(f"launch: {gpus} GPU(s) on {nodes} node(s): both must be at least 1")
    if strategy not in STRATEGIES:
        problems.append(f"launch: strategy {strategy!r} is unknown; use {', '.join(STRATEGIES)}")
    if cpu and strategy != "ddp":
        problems.append(f"launch: a CPU bundle runs DDP over gloo only, not {strategy}; "
                        "use --strategy ddp, or leave out --cpu")
    problems += unsupported(config, strategy)
    if list_checkpoints(paths.root) and not problems:
        try:  # a started run keeps its global batch: the new size must share it
            accumulation_per_process(config.batch.grad_accum, config.system.processes, gpus * nodes)
        except ValueError as exc:
            problems.append(f"{exc} (the run has checkpoints, so its batch is kept)")
    if problems:
        raise ValueError("; ".join(problems))


def accelerate_config(gpus: int, nodes: int, strategy: str, cpu: bool = False,
                      port: int = DEFAULT_PORT) -> str:
    """accelerate_config.yaml's text: accelerate's config format (`accelerate config` writes
    the same keys). A CPU bundle uses the multi-process launcher (MULTI_GPU) while launch.sh
    hides the GPUs, so that the processes train on the CPU over gloo: accelerate's own CPU
    mode starts a single process without MPI."""
    import yaml  # accelerate's own dependency

    settings = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}[strategy],
        "num_machines": nodes, "num_processes": gpus * nodes, "machine_rank": 0,
        "main_process_port": port, "rdzv_backend": "static", "same_network": True,
        "gpu_ids": "all", "use_cpu": False, "downcast_bf16": "no",
        # The Trainer sets the precision from the run's config (system.precision).
        "mixed_precision": "no",
    }
    if strategy == "fsdp":
        settings["fsdp_config"] = {
            "fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True, "fsdp_offload_params": False,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # checkpoints the app (and HF) can read
            "fsdp_activation_checkpointing": False,
        }
    if strategy == "deepspeed":
        settings["deepspeed_config"] = {"deepspeed_config_file": DEEPSPEED_CONFIG, "zero3_init_flag": False}
    header = (f"# accelerate's config for this run: {gpus} {'CPU process' if cpu else 'GPU'}(s) x "
              f"{nodes} node(s), {strategy}. Written by `cpt-studio launch`.\n")
    return header + yaml.safe_dump(settings, sort_keys=False)


DEEPSPEED_ZERO2 = {
    "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
    "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True},
}
"""DeepSpeed's config: ZeRO-2; the "auto" values are filled in by the Trainer from the run's."""


_SCRIPT_HEAD = """#!/usr/bin/env bash
set -euo pipefail
BUNDLE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
RUN="$(dirname "$BUNDLE")"
cd "$BUNDLE"
rm -f "$RUN/{stop}"  # a stop request was for the workers that saw it, not for these
"""


def _launch_script(name: str, gpus: int, nodes: int, strategy: str, cpu: bool) -> str:
    where = "CPU processes (gloo; GPUs hidden)" if cpu else "GPUs"
    comments = [
        f"# Run {name!r} with accelerate: {gpus} {where} per machine, {nodes} machine(s), {strategy}.",
        "#   bash {launch_sh}            start;  bash {launch_sh} --resume   continue from the last checkpoint",
        "# Several machines: on each, MACHINE_RANK=0..N-1 and MAIN_IP=<the first machine's address>.",
        "# ACCELERATE: the command that runs accelerate (default: accelerate).",
    ]
    body = _SCRIPT_HEAD + ('export CUDA_VISIBLE_DEVICES=""\n' if cpu else "")
    if strategy == "deepspeed":
        body += ('python -c "import deepspeed" 2>/dev/null || {{ echo "deepspeed is not installed: '
                 'pip install deepspeed" >&2; exit 2; }}\n')
    body += ('${{ACCELERATE:-accelerate}} launch --config_file "$BUNDLE/{accelerate_yaml}" \\\n'
             '  --machine_rank "${{MACHINE_RANK:-0}}" ${{MAIN_IP:+--main_process_ip "$MAIN_IP"}} \\\n'
             '  -m ' + WORKER_MODULE + ' "$RUN" "$@"\n')
    return _with_comments(body, comments)


def _with_comments(body: str, comments: list[str]) -> str:
    """The script: its first line, the comments, the rest; {names} filled in (NAMES)."""
    first, rest = body.split("\n", 1)
    return "\n".join([first, *comments, rest]).format(**NAMES)


def _torchrun_script(gpus: int, nodes: int, port: int) -> str:
    comments = [
        f"# The same run with torchrun (DDP): on each of the {nodes} node(s), with NODE_RANK=0..{nodes - 1}",
        "# and MASTER_ADDR=<node 0's address>: NODE_RANK=0 MASTER_ADDR=host0 bash {torchrun_sh}",
        "# (FSDP and DeepSpeed need accelerate's config: use {launch_sh}.)",
    ]
    body = _SCRIPT_HEAD + (
        f"torchrun --nnodes {nodes} --nproc_per_node {gpus} " + '--node_rank "${{NODE_RANK:-0}}" \\\n'
        '  --master_addr "${{MASTER_ADDR:-127.0.0.1}}" ' + f"--master_port {port} \\\n"
        f'  -m {WORKER_MODULE} "$RUN" "$@"\n')
    return _with_comments(body, comments)


def _slurm_script(name: str, gpus: int, nodes: int) -> str:
    return SLURM_TEMPLATE.format(job=_slug(name), nodes=nodes, gpus=gpus, **NAMES)


SLURM_TEMPLATE = """#!/bin/bash
# A Slurm template: edit the #SBATCH lines for your cluster (partition, account, time), then
# submit from this folder: cd {launch} && sbatch {slurm}   (add --resume to continue)
#SBATCH --job-name=cpt-{job}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
BUNDLE="${{SLURM_SUBMIT_DIR}}"
export MAIN_IP="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
srun bash -c 'MACHINE_RANK=$SLURM_NODEID exec bash "$0/{launch_sh}" "$@"' "$BUNDLE" "$@"
"""


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "run"


def _readme(name: str, gpus: int, nodes: int, strategy: str, cpu: bool) -> str:
    notes = {"deepspeed": README_DEEPSPEED, "fsdp": README_FSDP}.get(strategy, "")
    notes += README_CPU if cpu else ""
    return README_TEMPLATE.format(
        name=name, gpus=gpus, nodes=nodes, last=nodes - 1, strategy=strategy, notes=notes.format(**NAMES),
        what="CPU process" if cpu else "GPU", **NAMES)


README_DEEPSPEED = """
DeepSpeed is not installed with CPT Studio: `pip install deepspeed` on every machine first
({launch_sh} refuses without it). {deepspeed_json} is its config (ZeRO-2; the sizes marked
"auto" come from the run's settings).
"""

README_FSDP = """
FSDP2 shards the weights, gradients and optimizer state; checkpoints are gathered into
ordinary HF files. EWC and live knowledge probes are not supported with FSDP yet (the run
refuses them).
"""

README_CPU = """
This is a CPU bundle: the processes train on the CPU over gloo ({launch_sh} hides the GPUs).
It is for trying the bundle; write one without --cpu for GPUs.
"""

README_TEMPLATE = """# Launch bundle of the run {name!r}

{gpus} {what}(s) on each of {nodes} machine(s), strategy {strategy}, written by `cpt-studio
launch`. Each optimizer step holds the same number of sequences on any number of processes
(the run's system.processes), so the run can also be resumed on another number of GPUs, or
on one, from the same checkpoint.
{notes}
## Copy

The bundle runs the run folder it sits in ({launch}/ inside it). Copy the whole run folder
to the cluster, e.g. `rsync -a RUN_FOLDER cluster:runs/`. Its {config} names the base model
and the corpus files by path: put them at the same paths there, or edit those paths in
{config} before the first start. Install the same CPT Studio version there (`pip install
cpt-studio`, which brings accelerate and torch).

## Run

- One machine: `bash {launch}/{launch_sh}`; continue after a stop: `bash {launch}/{launch_sh} --resume`.
- Several machines, by hand: on each, `MACHINE_RANK=<0..{last}> MAIN_IP=<first machine> bash {launch}/{launch_sh}`,
  or with torchrun (DDP): `NODE_RANK=<0..{last}> MASTER_ADDR=<first machine> bash {launch}/{torchrun_sh}`.
- Slurm: edit the #SBATCH lines of `{launch}/{slurm}`, then `cd {launch} && sbatch {slurm}`.

## Watch and stop

Only the main process writes the run folder: {events}, the checkpoints and the store; every
process logs to {log}, each line naming its rank. `cpt-studio stop RUN` (or creating the
file RUN/{stop}) makes every process save a checkpoint and stop at the end of the step. Copy
the folder back (or open it where it is) to see the run in the app.
"""


def local_command(run_dir: Path, *, resume: bool = False, accept_changed_corpus: bool = False) -> list[str]:
    """The command that starts the run on this machine's GPUs through accelerate (the run's
    bundle, written for system.processes GPUs on one machine when it has none): what the app's
    Start does for a run with more than one process. ValueError when the bundle uses
    DeepSpeed and it is not installed here."""
    paths = RunPaths(Path(run_dir).resolve())
    config_file = paths.accelerate_config
    processes = RunConfig.load(paths.config).system.processes
    if not config_file.exists():
        write_bundle(paths.root, gpus=processes)
    if paths.deepspeed_config.exists() and importlib.util.find_spec("deepspeed") is None:
        raise ValueError(f"{paths.relative(config_file)} uses DeepSpeed, which is not installed: "
                         "pip install deepspeed, or write the bundle again with --strategy ddp")
    # One machine, whatever the bundle was written for (a cluster bundle keeps its files).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "--num_machines", "1", "--machine_rank", "0", "--num_processes", str(processes),
               "-m", WORKER_MODULE, str(paths.root)]
    return command + (["--resume"] if resume else []) + (["--accept-changed-corpus"] if accept_changed_corpus else [])

