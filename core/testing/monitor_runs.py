"""Run folders written by hand for the monitor: curves with evaluations, checkpoints, a guard
rollback and the resume it causes, ending as asked (running, finished, stopped, or failed with
a classified exception), so that its markers, readout and failure banner are known in advance.

    run_dir = write_monitor_run(tmp_path / "run", steps=120, end="failed", error=MemoryError())
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cpt_studio.core.events import EventWriter
from cpt_studio.core.run_folder import RunPaths

TOKENS_PER_STEP = 4096
EVAL_EVERY, CHECKPOINT_EVERY = 20, 40
ROLLBACK_AT, ROLLED_BACK_TO = 70, 40
"""The guard rolls back at step 70 to the checkpoint at 40; the run resumes from 40."""


def monitor_config(name: str, **sections) -> dict:
    """A config.json as a dict: a general corpus, evaluation every EVAL_EVERY steps, checkpoints
    every CHECKPOINT_EVERY, micro-batch 8 and sequence length 2048; `sections` override."""
    config = {"name": name, "model": {"name_or_path": "org/tiny"},
              "corpus": {"domain": [{"path": "domain.jsonl"}], "general": [{"path": "general.jsonl"}],
                         "replay_ratio": 0.05},
              "batch": {"micro_batch": 8, "grad_accum": 4, "seq_len": 2048},
              "schedule": {"max_grad_norm": 1.0},
              "eval": {"interval": EVAL_EVERY}, "checkpoints": {"interval": CHECKPOINT_EVERY},
              "guard": {"enabled": True, "threshold": 0.15}}
    config.update(sections)
    return config


def write_monitor_run(folder: Path, steps: int = 120, end: str = "finished",
                      error: BaseException | None = None, config: dict | None = None,
                      total_steps: int | None = None, mfu: bool = True) -> Path:
    """A run folder: config.json (monitor_config unless `config`), the step-0 baseline, a step
    event per step with loss, lr and grad norm, an evaluation every EVAL_EVERY steps, a
    checkpoint every CHECKPOINT_EVERY; when `steps` passes ROLLBACK_AT, a guard rollback there
    and a resume from ROLLED_BACK_TO, after which the steps are logged again. `end`: "running"
    (no final status), "finished", "stopped", or "failed" (the worker's record of `error`,
    cpt_studio.core.worker.record_failure). `mfu`: the step events carry an MFU (a GPU whose peak
    is known), else not (a CPU, or a run logged before the field existed)."""
    from cpt_studio.core.worker import record_failure

    paths = RunPaths(folder)
    paths.logs.mkdir(parents=True, exist_ok=True)
    config = config or monitor_config(folder.name)
    paths.config.write_text(json.dumps(config, indent=2))
    out = EventWriter(paths.events)
    out.emit("status", 0, state="running", phase="training", total_steps=total_steps or max(steps, 1) * 2,
             total_tokens=(total_steps or max(steps, 1) * 2) * TOKENS_PER_STEP)
    out.emit("eval", 0, baseline=True, tokens=0, domain_ppl=30.0, general_ppl=10.0)
    step = 1
    while step <= steps:
        _step(out, step, mfu)
        if step == ROLLBACK_AT and ROLLBACK_AT < steps and not _rolled_back(paths):
            out.emit("guard", step, reason="forgetting", action="rollback", forgetting=0.16, threshold=0.15,
                     rolled_back_to=ROLLED_BACK_TO, message="forgetting 16% above 15%: rolled back to step 40")
            out.emit("status", ROLLED_BACK_TO, state="running", phase="training", resumed_from=ROLLED_BACK_TO)
            step = ROLLED_BACK_TO
        step += 1
    if end == "failed":
        out.close()
        try:  # raised, for a real traceback
            raise error or RuntimeError("something unexpected")
        except BaseException as exc:  # noqa: BLE001
            record_failure(paths.events, exc, "run", config)
        return folder
    if end in ("finished", "stopped"):
        out.emit("status", steps, state=end, phase="done", exit_code=0)
    out.close()
    return folder


def _rolled_back(paths: RunPaths) -> bool:
    return '"resumed_from"' in paths.events.read_text()


def _step(out: EventWriter, step: int, mfu: bool = True) -> None:
    tokens = step * TOKENS_PER_STEP
    loss = 2.2 + math.exp(-step / 30) + 0.08 * math.sin(step * 1.7)
    out.emit("step", step, tokens=tokens, loss=loss, lr=2e-5 * min(1.0, step / 10),
             grad_norm=0.6 + 0.3 * math.cos(step / 5), tokens_per_second=5200.0 + 40 * math.sin(step),
             mfu=0.41 + 0.003 * math.sin(step) if mfu else None)
    if step % EVAL_EVERY == 0:
        forgetting = 0.001 * step if step <= ROLLBACK_AT else 0.0008 * step
        out.emit("eval", step, tokens=tokens, domain_ppl=30.0 * (1 - 0.002 * step),
                 general_ppl=10.0 * (1 + forgetting), forgetting=forgetting, domain_gain=0.002 * step)
    if step % CHECKPOINT_EVERY == 0:
        out.emit("checkpoint", step, tokens=tokens, path=RunPaths(Path()).checkpoint(step).as_posix())
