"""The forgetting guard (docs/architecture.md, training): when a run goes wrong, go back to the
last good checkpoint, change a setting, and continue.

    trigger = forgetting_trigger(0.19, threshold=0.15)          # or loss_trigger(loss, history, ...)
    decision = decide(trigger, state, settings, checkpoints={0: 0.0, 10: 0.04}, step=20,
                      base_replay=0.05, peak_lr=2e-5)
    decision.action, decision.rolled_back_to, decision.remedy   # "rollback", 10, "learning rate x0.5 ..."
    decision.state.save(run_dir)                                # guard.json

Everything here is a pure function of numbers and settings, except GuardState's load and
save. cpt_studio.core.training acts on a decision: it stops the Trainer before the bad step is saved,
deletes the checkpoints after the rollback target, and resumes from the target with the
remedy applied.

What triggers a rollback, checked after every step (loss) and every evaluation (forgetting):
  * forgetting above the threshold, or a non-finite general perplexity;
  * a non-finite loss;
  * a loss spike: above spike_factor x the mean of the previous spike_window steps' losses
    (once at least MIN_SPIKE_HISTORY of them are known).
Where to: the last checkpoint whose forgetting was measured and is at most the threshold (any
checkpoint when there is no general corpus to measure it on). With the guard on, the run
writes checkpoint-0 (the starting model) so that there is always one.

The remedy accumulates: each rollback halves the current learning rate and/or raises the
current replay ratio by 5 points, from the rollback step on. GuardState (guard.json in the
run folder; the frozen config.json is never edited) records what is in effect, so a resumed
run and the GUI know the effective learning rate and replay ratio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .config import GuardConfig
from .run_folder import RunPaths, checkpoint_dirname

LR_FACTOR = 0.5
"""The 'lr' remedy multiplies the learning rate by this."""
REPLAY_STEP = 0.05
"""The 'replay' remedy raises the replay ratio by this (5 points)."""
REPLAY_CEILING = 0.5
"""The replay remedy never raises the ratio above this; past it, the LR is halved instead."""
MIN_SPIKE_HISTORY = 5
"""The spike check waits for this many earlier losses (fewer make a poor running mean)."""


@dataclass(frozen=True)
class Trigger:
    """Why the guard acts: the reason, a sentence, and the numbers behind it."""

    reason: str
    """'forgetting', 'non-finite evaluation', 'non-finite loss' or 'loss spike'."""
    message: str
    numbers: dict = field(default_factory=dict)


def forgetting_trigger(forgetting: float | None, threshold: float) -> Trigger | None:
    if forgetting is None:
        return None  # no general corpus: nothing to measure forgetting on
    numbers = {"forgetting": forgetting, "threshold": threshold}
    if not math.isfinite(forgetting):
        return Trigger("non-finite evaluation", "the general perplexity is not finite", numbers)
    if forgetting > threshold:
        return Trigger("forgetting", f"forgetting {forgetting:.1%} passed the threshold "
                                     f"{threshold:.0%}", numbers)
    return None


def loss_trigger(loss: float, previous: Sequence[float], spike_factor: float,
                 window: int) -> Trigger | None:
    """A non-finite loss, or one above spike_factor x the running mean of `previous` (the
    losses of the steps before, oldest first; only the last `window` finite ones count)."""
    if not math.isfinite(loss):
        return Trigger("non-finite loss", f"the loss is {loss}", {"loss": loss})
    recent = [x for x in previous if math.isfinite(x)][-window:]
    if spike_factor <= 0 or len(recent) < min(MIN_SPIKE_HISTORY, window):
        return None
    mean = sum(recent) / len(recent)
    if loss > spike_factor * mean:
        return Trigger("loss spike", f"the loss {loss:.4g} is {loss / mean:.1f}x its running mean "
                                     f"{mean:.4g} (limit {spike_factor:g}x)",
                       {"loss": loss, "running_mean": mean, "spike_factor": spike_factor})
    return None


def rollback_target(checkpoints: Mapping[int, float | None], before: int, threshold: float,
                    watch_forgetting: bool = True) -> int | None:
    """The step of the last checkpoint before `before` that is under the threshold.

    `checkpoints` maps each existing checkpoint's step to its forgetting (None when not
    measured). Without a forgetting watch (no general corpus) every earlier one qualifies."""
    good = [step for step, forgetting in checkpoints.items() if step < before and (
        not watch_forgetting or (forgetting is not None and math.isfinite(forgetting)
                                 and forgetting <= threshold))]
    return max(good, default=None)


@dataclass
class GuardState:
    """What the guard has changed so far (guard.json)."""

    rollbacks: int = 0
    lr_scale: float = 1.0
    """The learning rate in effect is the configured schedule times this."""
    replay_changes: list[list] = field(default_factory=list)
    """[from_step, replay_ratio] pairs: the ratio in effect from that step on."""
    decisions: list[dict] = field(default_factory=list)
    micro_batch: int | None = None
    """The micro-batch in effect after out-of-memory halvings (None: the config's)."""
    grad_accum: int | None = None
    """The gradient accumulation in effect after out-of-memory halvings (None: the config's)."""

    def batch(self, micro_batch: int, grad_accum: int) -> tuple[int, int]:
        """(micro-batch, accumulation) in effect, given the configured ones."""
        return self.micro_batch or micro_batch, self.grad_accum or grad_accum

    def replay_ratio(self, base: float) -> float:
        """The replay ratio in effect now (the last change, else the configured one)."""
        return self.replay_changes[-1][1] if self.replay_changes else base

    @classmethod
    def load(cls, run_dir: Path) -> GuardState:
        path = RunPaths(Path(run_dir)).guard_state
        if not path.exists():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in ("rollbacks", "lr_scale", "replay_changes", "decisions",
                                           "micro_batch", "grad_accum") if k in data})

    def save(self, run_dir: Path) -> None:
        path = RunPaths(Path(run_dir)).guard_state
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)


@dataclass(frozen=True)
class Decision:
    action: str
    """'rollback' (resume from rolled_back_to with the remedy) or 'stop'."""
    trigger: Trigger
    step: int
    rolled_back_to: int | None
    remedy: str | None
    message: str
    state: GuardState

    def event_fields(self, threshold: float | None, base_replay: float) -> dict:
        """The fields of the 'guard' event (cpt_studio.core.events.GuardEvent), named as in the
        decision record of guard.json: `reason` is the trigger's reason, `rolled_back_to` the
        step resumed from, `message` the sentence."""
        return {"reason": self.trigger.reason, "message": self.message,
                "action": self.action, "threshold": threshold, "rolled_back_to": self.rolled_back_to,
                "remedy": self.remedy,
                "rollbacks": self.state.rollbacks, "lr_scale": self.state.lr_scale,
                "replay_ratio": self.state.replay_ratio(base_replay),
                **self.trigger.numbers}


def decide(trigger: Trigger, state: GuardState, settings: GuardConfig,
           checkpoints: Mapping[int, float | None], step: int, *, base_replay: float,
           peak_lr: float, watch_forgetting: bool = True) -> Decision:
    """Roll back with the remedy, or stop when the rollbacks are used up or there is no
    checkpoint to go back to."""
    target = rollback_target(checkpoints, step, settings.threshold, watch_forgetting)
    if state.rollbacks >= settings.max_rollbacks:
        message = (f"stopped at step {step}: {trigger.message} after {state.rollbacks} rollback(s), "
                   f"the most allowed (guard.max_rollbacks); lower the learning rate or raise the "
                   f"replay ratio and start again" + _keep(target))
        return Decision("stop", trigger, step, None, None, message, _noted(state, trigger, step, "stop"))
    if target is None:
        message = (f"stopped at step {step}: {trigger.message} and no checkpoint under the "
                   "threshold is left to roll back to")
        return Decision("stop", trigger, step, None, None, message, _noted(state, trigger, step, "stop"))
    new_state, remedy = apply_remedy(state, settings.remedy, target, base_replay, peak_lr)
    new_state = _noted(new_state, trigger, step, "rollback", target, remedy)
    message = f"{trigger.message} at step {step}: rolled back to step {target}; {remedy}"
    return Decision("rollback", trigger, step, target, remedy, message, new_state)


def out_of_memory(state: GuardState, micro_batch: int, grad_accum: int, step: int,
                  last_checkpoint: int | None) -> Decision:
    """An out-of-memory error in a training step: halve the micro-batch and double the
    accumulation (the same sequences per optimizer step, so the same replay share and
    schedule), and resume from the last complete checkpoint. Stop when the micro-batch is
    already 1 or there is no checkpoint to resume from. Not counted against max_rollbacks."""
    trigger = Trigger("out of memory", f"out of memory with a micro-batch of {micro_batch}",
                      {"micro_batch": micro_batch, "grad_accum": grad_accum})
    if micro_batch <= 1 or last_checkpoint is None:
        why = ("the micro-batch is already 1: shorten the sequence length, turn on gradient "
               "checkpointing or use LoRA" if micro_batch <= 1 else
               f"there is no checkpoint to resume from yet: start again with batch.micro_batch = "
               f"{micro_batch // 2} and batch.grad_accum = {grad_accum * 2}")
        message = f"stopped at step {step}: out of memory, and {why}"
        return Decision("stop", trigger, step, None, None, message, _noted(state, trigger, step, "stop"))
    micro, accum = _halved(micro_batch, grad_accum)
    remedy = (f"micro-batch {micro_batch} -> {micro}, gradient accumulation {grad_accum} -> {accum} "
              f"(still {micro * accum} sequences per step)")
    new_state = _noted(replace(state, micro_batch=micro, grad_accum=accum), trigger, step, "rollback",
                       last_checkpoint, remedy)
    message = f"out of memory at step {step}: resumed from step {last_checkpoint}; {remedy}"
    return Decision("rollback", trigger, step, last_checkpoint, remedy, message, new_state)


def _halved(micro_batch: int, grad_accum: int) -> tuple[int, int]:
    """The largest micro-batch of at most half the current one that divides the sequences per
    optimizer step, and the accumulation that keeps them: (4, 5) -> (2, 10), (3, 5) -> (1, 15)."""
    sequences = micro_batch * grad_accum
    micro = max(m for m in range(1, micro_batch // 2 + 1) if sequences % m == 0)
    return micro, sequences // micro


def apply_remedy(state: GuardState, remedy: str, from_step: int, base_replay: float,
                 peak_lr: float) -> tuple[GuardState, str]:
    """The state after one more rollback to `from_step`, and the remedy in words."""
    words = []
    lr_scale, changes = state.lr_scale, [c for c in state.replay_changes if c[0] < from_step]
    replay = state.replay_ratio(base_replay)
    if remedy in ("replay", "both"):
        if replay + REPLAY_STEP <= REPLAY_CEILING + 1e-9:
            new = round(replay + REPLAY_STEP, 6)
            changes.append([from_step, new])
            words.append(f"replay ratio {replay:.0%} -> {new:.0%}")
        else:
            words.append(f"replay ratio already {replay:.0%} (the most the guard sets)")
            remedy = "lr" if remedy == "replay" else remedy
    if remedy in ("lr", "both"):
        lr_scale = state.lr_scale * LR_FACTOR
        words.append(f"learning rate x{LR_FACTOR:g} (peak {peak_lr * state.lr_scale:.3g} -> "
                     f"{peak_lr * lr_scale:.3g})")
    new_state = replace(state, rollbacks=state.rollbacks + 1, lr_scale=lr_scale,
                        replay_changes=changes)
    return new_state, "; ".join(words)


def _noted(state: GuardState, trigger: Trigger, step: int, action: str,
           target: int | None = None, remedy: str | None = None) -> GuardState:
    record = {"step": step, "reason": trigger.reason, "action": action,
              "rolled_back_to": target, "remedy": remedy}
    return replace(state, decisions=[*state.decisions, record])


def _keep(target: int | None) -> str:
    return f"; {checkpoint_dirname(target)} is the last one under the threshold" if target is not None else ""
