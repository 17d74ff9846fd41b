"""One CPT run with the HF Trainer, fed by the token store and the replay mixer (an SFT run:
by its packed instruction examples in the domain corpus's place, cpt_studio.core.sft_run).

    train(run_dir)               # what `python -m cpt_studio.core.worker RUN_DIR` does
    train(run_dir, resume=True)  # continue from the last complete checkpoint

Reads top to bottom: load the model, prepare the data, plan the steps, build the Trainer
(our sampler, our schedule settings, our callbacks), train, write the final status.
The Trainer does the optimisation, the schedule, mixed precision, checkpoint contents and
resumption (optimizer, scheduler, RNG, data position); this module adds what it lacks:
the per-step replay mix, held-out perplexity at step 0 and every interval, atomic
checkpoints with rotation that keeps the best and the last, a cooperative stop, and events;
and the forgetting defences: the EWC penalty's gradient (cpt_studio.core.ewc) added at each optimizer
step, and the guard (cpt_studio.core.guard), which stops an attempt before a bad step is saved and
resumes from the last good checkpoint with its remedy, as many times as it allows.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import shutil
import time
from functools import partial
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from . import distributed
from .config import RunConfig
from .data import RunData, evaluation_sets, prepare_run_data
from .disk import DiskFullError, disk_full_as_error, folder_size, require_free_space
from .estimate import model_flops_utilisation
from .evaljob import probe_live, write_run_probes
from .evaluation import EvalSet, measure_sets, set_changes
from .events import EvalEvent, EventWriter, SilentEventWriter, StepEvent
from .ewc import EwcPenalty, EwcState, group_parameters, prepare_ewc, reference_weights
from .guard import (
    Decision,
    GuardState,
    decide,
    forgetting_trigger,
    loss_trigger,
    out_of_memory,
    rollback_target,
)
from .mixing import MixingSampler, ReplayMixer
from .models import load_model_and_tokenizer
from .packing import collate_rows, flat_rows
from .preflight import require
from .recipe import (
    Hardware,
    accumulation_per_process,
    apply_method,
    base_parameters,
    flops_per_token,
    group_rates,
    optimizer_steps,
    resolve_hardware,
    scheduler_settings,
    sequences_per_step,
    split_embedding_group,
    split_new_token_rows,
)
from .recommend import checkpoint_scores, recommended
from .run_folder import (
    RunPaths,
    checkpoint_config,
    checkpoint_dirname,
    checkpoint_step,
    last_checkpoint,
    list_checkpoints,
)
from .sft_run import prepare_sft_data
from .throughput import Measurement, device_label, kernel_setup, record
from .timeline import RunTimeline
from .tokenizer_ext import extend_for_run


def training_arguments(config: RunConfig, hardware: Hardware, paths: RunPaths,
                       total_steps: int, guard_state: GuardState | None = None) -> TrainingArguments:
    """`guard_state`: the guard's remedies in effect (learning-rate scale, and the micro-batch
    and accumulation after out-of-memory halvings); none without one."""
    guard_state = guard_state or GuardState()
    scheduler, kwargs, warmup = scheduler_settings(config, total_steps)
    micro_batch, grad_accum = guard_state.batch(config.batch.micro_batch, config.batch.grad_accum)
    grad_accum = accumulation_per_process(grad_accum, config.system.processes, distributed.world_size())
    return TrainingArguments(
        output_dir=str(paths.staging), max_steps=total_steps,
        per_device_train_batch_size=micro_batch, gradient_accumulation_steps=grad_accum,
        learning_rate=config.schedule.peak_lr * guard_state.lr_scale, weight_decay=config.schedule.weight_decay,
        max_grad_norm=config.schedule.max_grad_norm, warmup_steps=warmup,
        lr_scheduler_type=scheduler, lr_scheduler_kwargs=kwargs, optim=hardware.optimizer,
        use_liger_kernel=hardware.fused_kernels, torch_compile=hardware.compile,
        bf16=hardware.precision == "bf16", fp16=hardware.precision == "fp16",
        use_cpu=hardware.device == "cpu",
        **_checkpointing_arguments(hardware.gradient_checkpointing),
        logging_steps=1, logging_nan_inf_filter=False,  # a NaN loss must be seen, not averaged away
        save_strategy="steps", save_steps=config.checkpoints.interval, save_total_limit=None,
        eval_strategy="no", report_to="none", disable_tqdm=True,
        seed=config.seed, data_seed=config.seed, dataloader_num_workers=0,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every trainable weight takes part in each forward pass
    )


def _checkpointing_arguments(enabled: bool) -> dict:
    """Activation (gradient) checkpointing, under the name this transformers uses."""
    name = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing")
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


log = logging.getLogger(__name__)
"""Every rank's own lines in the worker's log (what it decided or followed)."""


class CPTTrainer(Trainer):
    """The Trainer with our sampler, atomic rotated checkpoints, the EWC gradient, and the
    guard's learning-rate remedy applied to a restored schedule."""

    def __init__(self, *args, mixer: ReplayMixer, run: RunPaths, monitor: RunMonitor,
                 keep: int, ewc: EwcPenalty | None = None, embedding_lr_scale: float = 1.0,
                 new_token_lr_scale: float | None = None, new_token_ids: list[int] = (), **kwargs):
        super().__init__(*args, **kwargs)
        # The Trainer prints each log dict ({'train_runtime': ...}) to stdout, the worker's log the
        # monitor shows: the run's events carry those figures, named, so its printer goes.
        self.remove_callback(PrinterCallback)
        self.mixer, self.run, self.monitor, self.keep, self.ewc = mixer, run, monitor, keep, ewc
        self.embedding_lr_scale, self.new_token_lr_scale = embedding_lr_scale, new_token_lr_scale
        self.new_token_ids = list(new_token_ids)
        monitor.trainer = self

    def create_optimizer(self, model=None):
        """The Trainer's AdamW, with the embeddings in a group of their own learning rate
        (schedule.embedding_lr_scale x the peak) and an extended tokenizer's new rows at
        theirs (schedule.new_token_lr_scale; cpt_studio.core.recipe)."""
        optimizer = super().create_optimizer(model)
        model = self.model if model is None else model
        split_embedding_group(optimizer, model, self.args.learning_rate, self.embedding_lr_scale)
        split_new_token_rows(optimizer, model, self.args.learning_rate, self.new_token_lr_scale,
                             self.new_token_ids)
        return optimizer

    def _get_train_sampler(self, train_dataset=None):
        return MixingSampler(self.mixer, end_step=self.args.max_steps)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.ewc is not None and self.accelerator.sync_gradients:
            # The step's last micro-batch: the data gradients are complete (and averaged
            # across processes), so the penalty's gradient is added once per optimizer step.
            scaler = getattr(self.accelerator, "scaler", None)
            self.ewc.add_gradient(scaler.get_scale() if scaler is not None else 1.0)
        return loss

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            set_peak_lr(self.optimizer, self.lr_scheduler, self.args.learning_rate)

    def expected_checkpoint_bytes(self) -> int:
        return expected_checkpoint_bytes(self.run.root, self.model)

    def save_start_checkpoint(self) -> None:
        """checkpoint-0, the starting model: the guard's rollback target of last resort."""
        self._save_checkpoint(self.model, None)

    def _save_checkpoint(self, model, trial):
        """Write into the staging folder, then rename into checkpoints/: a checkpoint that
        exists is complete. The disk is checked first against the checkpoint's expected size;
        a disk that fills during the write leaves no partial checkpoint behind."""
        step = self.state.global_step
        name, staged, final = checkpoint_dirname(step), self.run.staged_checkpoint(step), self.run.checkpoint(step)
        fix = (f"free space on that disk (or lower checkpoints.keep), then `cpt-studio resume "
               f"{self.run.root}` continues from the last complete checkpoint")
        if self.args.should_save:
            require_free_space(self.run.checkpoints, self.expected_checkpoint_bytes(), name, fix)
        try:
            with disk_full_as_error(self.run.checkpoints, name, fix):
                super()._save_checkpoint(model, trial)
                distributed.barrier()  # every rank's files (its RNG state, its shard) are staged
                if not self.args.should_save:
                    return
                shutil.copy(self.run.config, checkpoint_config(staged))
        except DiskFullError:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        if final.exists():  # saved again at the same step (stop request on a save step)
            shutil.rmtree(final)
        os.replace(staged, final)
        self.monitor.on_checkpoint(final, self.state.global_step)
        rotate_checkpoints(self.run.root, self.keep, self.monitor.protected_steps())


def expected_checkpoint_bytes(run_dir: Path, model) -> int:
    """The size of the newest complete checkpoint, or before the first one an estimate: the
    weights it stores (all of them; for LoRA the adapter's) plus AdamW's two fp32 moments
    per trainable weight."""
    last = last_checkpoint(run_dir)
    if last is not None:
        return folder_size(last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    stored = trainable if hasattr(model, "peft_config") else list(model.parameters())
    return sum(p.numel() * p.element_size() for p in stored) + 8 * sum(p.numel() for p in trainable)


def set_peak_lr(optimizer, scheduler, peak: float) -> None:
    """Rescale a restored schedule so that it peaks at `peak`. The Trainer restores the
    scheduler's base_lrs (and the optimizer's current lr) from the checkpoint; when the
    guard's remedy changed the learning rate since, the whole schedule is scaled from here on,
    the current step's lr included."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate may wrap it
    ratio = peak / inner.base_lrs[0]
    if ratio == 1:
        return
    inner.base_lrs = [lr * ratio for lr in inner.base_lrs]
    inner._last_lr = [lr * ratio for lr in inner.get_last_lr()]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * ratio
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * ratio


def rotate_checkpoints(run_dir: Path, keep: int, protected: set[int | None] = frozenset()) -> list[Path]:
    """Delete all but the `keep` newest checkpoints and the `protected` steps (the best, the
    recommended one, the guard's rollback target)."""
    found = list_checkpoints(run_dir)
    protected = {checkpoint_step(p) for p in found[-keep:]} | set(protected)
    deleted = [p for p in found if checkpoint_step(p) not in protected]
    for path in deleted:
        shutil.rmtree(path, ignore_errors=True)
    return deleted


def discard_checkpoints_after(run_dir: Path, step: int) -> list[Path]:
    """A rollback abandons what came after its target: those checkpoints are deleted, so that
    a later resume cannot pick them up."""
    later = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) > step]
    for path in later:
        shutil.rmtree(path, ignore_errors=True)
    return later


def refuse_non_finite_baseline(fields: dict) -> None:
    """Stop before training when the step-0 perplexities are not numbers: every later
    comparison with them would be meaningless."""
    bad = {k: v for k, v in fields.items()  # each set's token perplexity (not its word perplexity)
           if k.endswith("_ppl") and not k.endswith("_word_ppl") and not math.isfinite(v)}
    if bad:
        what = ", ".join(f"{k.removesuffix('_ppl')} perplexity {v}" for k, v in bad.items())
        raise ValueError(f"the step-0 baseline is not finite ({what}): the base model gives "
                         "non-finite log-probabilities on the held-out text before any training. "
                         "Check the model's weights (a damaged or badly converted file) and the "
                         "precision (fp16 overflows on many models: use bf16 or fp32)")


class RunMonitor(TrainerCallback):
    """Events for every step, held-out evaluation, the stop request, the final save, and the
    guard's decisions (one attempt: after a rollback, train() builds a new Trainer)."""

    def __init__(self, config: RunConfig, events: EventWriter, paths: RunPaths,
                 eval_sets: dict[str, EvalSet],
                 mixer: ReplayMixer, hardware: Hardware, total_steps: int, *,
                 guard_state: GuardState | None = None, ewc: EwcPenalty | None = None,
                 resuming: bool = False, probe_tasks: list[str] = (), flops_per_token: float = 0.0,
                 parameters: int = 0):
        """`flops_per_token`: the model's training FLOPs per token, for the MFU of each step;
        `parameters`: the model's, for the speed the run remembers (throughput)."""
        self.config, self.events, self.paths, self.eval_sets = config, events, paths, eval_sets
        self.flops_per_token, self.parameters = flops_per_token, parameters
        self.peak_flops = hardware.peak_flops and hardware.peak_flops * distributed.world_size()
        """The peak of all the run's GPUs (tokens/s are the whole step's), for MFU."""
        self.speeds: list[float] = []
        """Tokens/s of each step of this attempt, in order."""
        self.probe_tasks = list(probe_tasks)
        self.mixer, self.hardware, self.total_steps = mixer, hardware, total_steps
        self.tokens_per_step = mixer.seqs_per_step * config.batch.seq_len
        self.baseline: dict | None = None
        self.evals: dict[int, dict] = {}
        self._step_started = time.monotonic()
        self._train_seconds = 0.0
        self.stopped = False
        self.guard_state = guard_state or GuardState()
        self.ewc, self.resuming = ewc, resuming
        self.losses: dict[int, float] = {}
        self._group_rates: dict[str, float] = {}
        self.decision: Decision | None = None
        self.trainer: CPTTrainer | None = None  # set by CPTTrainer

    # --- evaluation -------------------------------------------------------------------
    def evaluate(self, model, step: int) -> dict:
        """Perplexity, bits per byte and word perplexity of every evaluation set; domain gain
        and forgetting against the step-0 baseline, per set ({name}_domain_gain,
        {name}_forgetting) and overall: domain_gain on the held-out domain slice, forgetting on
        the guard's set (eval.guard_set) or the worst general set (named in forgetting_set)."""
        started = time.monotonic()
        fields = {"tokens": step * self.tokens_per_step}
        fields.update(measure_sets(model, self.eval_sets, self.config.eval.batch_size,
                                   self.hardware.autocast_dtype))
        fields["seconds"] = time.monotonic() - started
        if self.baseline is None:
            self.baseline = {k: v for k, v in fields.items() if k.endswith("_ppl")}
        fields["baseline"] = step == 0
        fields.update(self._gains(fields))
        self.evals[step] = fields
        self.events.emit("eval", step, **fields)
        return fields

    def _gains(self, fields: dict) -> dict:
        kinds = {name: eval_set.kind for name, eval_set in self.eval_sets.items()}
        return set_changes(fields, self.baseline, kinds, self.config.eval.guard_set)

    def best_step(self) -> int | None:
        """The evaluated checkpoint step with the lowest domain perplexity."""
        saved = {checkpoint_step(p) for p in list_checkpoints(self.paths.root)}
        candidates = [(e["domain_ppl"], s) for s, e in self.evals.items() if s in saved and s > 0]
        return min(candidates)[1] if candidates else None

    @property
    def watch_forgetting(self) -> bool:
        return any(s.kind == "general" for s in self.eval_sets.values())

    def checkpoint_forgetting(self) -> dict[int, float | None]:
        """Each existing checkpoint's forgetting (None when it was not evaluated)."""
        return {step: self.evals.get(step, {}).get("forgetting")
                for step in map(checkpoint_step, list_checkpoints(self.paths.root))}

    def protected_steps(self) -> set[int]:
        """Checkpoints rotation must keep: the best, the recommended one, and the last under
        the guard's threshold (the one a rollback would go back to)."""
        saved = self.checkpoint_forgetting()
        scores = checkpoint_scores({**self.evals.get(step, {}), "step": step} for step in saved)
        protected = {self.best_step(),
                     recommended(scores, self.config.checkpoints.recommend_max_forgetting)}
        if self.config.guard.enabled:
            protected.add(rollback_target(saved, math.inf, self.config.guard.threshold,
                                          self.watch_forgetting))
        return protected - {None}

    def on_checkpoint(self, path: Path, step: int) -> None:
        numbers = {k: v for k, v in self.evals.get(step, {}).items()
                   if k in ("domain_ppl", "general_ppl", "forgetting", "domain_gain")}
        self.events.emit("checkpoint", step, tokens=step * self.tokens_per_step,
                         path=str(path.relative_to(self.paths.root)), **numbers)
        if step > 0 and self.trainer is not None:
            self.probe(self.trainer.model, step)

    def probe(self, model, step: int) -> None:
        """The knowledge probes at this step (benchmarks.probes_during_training), live."""
        if not self.probe_tasks or self.trainer is None:
            return
        self.events.emit("status", step, state="running", phase="probing", message="knowledge probes")
        probe_live(model, self.trainer.processing_class, self.paths.root, self.probe_tasks, step,
                   self.config.benchmarks, self.events)

    # --- Trainer hooks ----------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and not self.resuming:
            self.events.emit("status", 0, state="running", phase="baseline",
                             message="measuring the step-0 baseline", total_steps=self.total_steps)
            refuse_non_finite_baseline(self.evaluate(model, 0))
            self.probe(model, 0)
            if self.config.guard.enabled and self.trainer is not None:
                self.trainer.save_start_checkpoint()
        else:
            self._restore_evaluations(state.global_step)
            self.events.emit("status", state.global_step, state="running", phase="training",
                             message=f"resumed from step {state.global_step}",
                             resumed_from=state.global_step, total_steps=self.total_steps)
        self.events.emit("status", state.global_step, state="running", phase="training",
                         message="training", total_steps=self.total_steps,
                         total_tokens=self.total_steps * self.tokens_per_step)
        self._step_started = time.monotonic()

    def _restore_evaluations(self, step: int) -> None:
        """The evaluations and step losses up to the checkpoint resumed from, as the run's
        timeline has them (a rolled-back stretch does not count)."""
        timeline = RunTimeline.load(self.paths.events)
        for event in timeline.of(EvalEvent):
            if event.step <= step:
                self.evals[event.step] = fields = event.to_dict()
                if event.baseline:
                    self.baseline = {k: v for k, v in fields.items() if k.endswith("_ppl")}
        self.losses.update({e.step: e.loss for e in timeline.of(StepEvent) if e.step <= step})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.hardware.device == "cuda":  # the step's kernels are queued, not done: wait for them,
            torch.cuda.synchronize()        # as logging the loss right after does anyway
        self._train_seconds = time.monotonic() - self._step_started
        step = state.global_step
        # The main process reads the request and every rank follows it: all stop at this step.
        if distributed.broadcast(distributed.is_main() and self.paths.stop_request.exists()):
            log.info("stop requested: saving a checkpoint and stopping at step %d", step)
            self.events.emit("status", step, state="running", phase="saving", message="stop requested")
            control.should_save = control.should_training_stop = True
            self.stopped = True
        if step == self.total_steps:
            control.should_save = True
        # Every checkpoint is evaluated, so that each has its domain gain and forgetting.
        if step % self.config.eval.interval == 0 or control.should_save:
            self.events.emit("status", step, state="running", phase="evaluating", message="evaluating")
            self.evaluate(model, step)
        return control

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        """The rates of the groups with their own (embeddings, new token rows) at the step
        just taken."""
        self._group_rates = group_rates(optimizer)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        step = state.global_step
        if state.is_world_process_zero:
            general = self.mixer.general_in(step - 1) if step else 0
            extra = {"ewc_penalty": float(self.ewc.last_penalty)} if self.ewc else {}
            extra.update(self._group_rates)
            speed = self.tokens_per_step / max(self._train_seconds, 1e-9)
            self.speeds.append(speed)
            self.events.emit("step", step, loss=logs["loss"], lr=logs.get("learning_rate"),
                             grad_norm=logs.get("grad_norm"), tokens=step * self.tokens_per_step,
                             tokens_per_second=speed,
                             mfu=model_flops_utilisation(speed, self.flops_per_token, self.peak_flops),
                             replay_fraction=general / self.mixer.seqs_per_step, **extra)
        # Logging comes after on_step_end's evaluation and before the step's checkpoint is
        # saved: the place to decide (on the main process; every rank follows it).
        self._watch(step, logs["loss"], control)
        self._step_started = time.monotonic()

    # --- the guard --------------------------------------------------------------------
    def _decide(self, step: int, loss: float, previous: list[float]) -> Decision | None:
        """The guard's decision at this step (None: nothing wrong)."""
        guard = self.config.guard
        trigger = (loss_trigger(loss, previous, guard.spike_factor, guard.spike_window)
                   or forgetting_trigger(self.evals.get(step, {}).get("forgetting"), guard.threshold))
        if trigger is None:
            return None
        return decide(trigger, self.guard_state, guard, self.checkpoint_forgetting(), step,
                      base_replay=self.config.corpus.replay_ratio, peak_lr=self.config.schedule.peak_lr,
                      watch_forgetting=self.watch_forgetting)

    def _watch(self, step: int, loss: float, control) -> None:
        guard = self.config.guard
        previous = [self.losses[s] for s in sorted(self.losses) if s < step]
        self.losses[step] = loss
        if not guard.enabled:
            return
        # Taken on the main process and broadcast: every rank rolls back (or not) alike.
        decision = distributed.broadcast(self._decide(step, loss, previous) if distributed.is_main() else None)
        if decision is None:
            return
        control.should_save, control.should_training_stop = False, True  # never save a bad step
        self.decision = decision
        if distributed.is_main():
            target = decision.rolled_back_to
            decision.state.save(self.paths.root)
            if target is not None:
                discard_checkpoints_after(self.paths.root, target)
            self.events.emit("guard", step, **decision.event_fields(
                guard.threshold, self.config.corpus.replay_ratio))


def train(run_dir: Path, *, resume: bool = False, accept_changed_corpus: bool = False) -> str:
    """Run (or resume) the run in `run_dir`; returns the final state. A resume on a corpus
    that changed since the start refuses unless `accept_changed_corpus` (cpt_studio.core.data)."""
    paths = RunPaths(Path(run_dir))
    config = RunConfig.load(paths.config)
    # Under several processes only the main one writes the run folder's events (and state).
    events = EventWriter(paths.events) if distributed.is_main() else SilentEventWriter(paths.events)
    checked = require(config, read_corpus=False)  # the corpus is read, and refused, as it is tokenized
    problems = distributed.unsupported(config, distributed.strategy())
    if problems:
        raise ValueError("; ".join(problems))
    hardware = resolve_hardware(config, checked.model_config)
    log.info("kernels: %s", hardware.kernels_text())  # the log pane shows the worker's log
    events.emit("log", None, level="info", message=f"kernels: {hardware.kernels_text()}")
    if hardware.device == "cuda" and hardware.peak_flops is None:
        events.emit("log", None, level="info", message=f"MFU is not shown: the peak of {hardware.gpu_name} is not "
                    "known here; set system.peak_tflops to its dense bf16 TFLOP/s from its datasheet")
    distributed.start(hardware.device)
    torch.manual_seed(config.seed)  # LoRA's random A matrices start alike on every attempt
    events.emit("status", None, state="running", phase="loading",
                message=f"loading {config.model.name_or_path} on {hardware.device} ({hardware.precision})")
    model, tokenizer = load_model_and_tokenizer(
        config.model.name_or_path, attn_implementation=hardware.attention,
        trust_remote_code=config.model.trust_remote_code, allow_pickle=config.model.allow_pickle)
    model.config.use_cache = False  # with the cache on, packed documents attend to each other
    with distributed.main_first():  # the main process writes the tokenizer, the others read it
        tokenizer, new_token_ids = extend_for_run(model, tokenizer, config, paths.root, events)
    model = apply_method(model, config, new_token_ids)
    events.emit("status", None, state="running", phase="tokenizing", message="preparing the corpus")
    with distributed.main_first():  # the main process tokenizes; the others find the token store
        data = _prepare_data(config, tokenizer, paths, events, accept_changed_corpus)
    if distributed.is_main():
        record_separator(config, paths, data.tokens)
    general_rows = len(data.general.train) if data.general else 0
    events.emit("status", None, state="running", phase="tokenizing", ready=True,
                message=f"corpus ready: {len(data.domain.train):,} domain and {general_rows:,} general "
                        f"sequences of {config.batch.seq_len} tokens")
    ewc = _prepare_ewc(config, hardware, model, data, events) if config.ewc.enabled else None
    shutil.rmtree(paths.staging, ignore_errors=True)  # what is there was cut off mid-write
    checkpoint = last_checkpoint(paths.root) if resume else None
    if resume and checkpoint is None:
        events.emit("status", None, state="running", phase="training", message="no checkpoint yet: starting over")
    trainer, decision = _train_with_guard(config, hardware, paths, events, model, tokenizer, data,
                                          ewc, checkpoint, _live_probe_tasks(config, paths),
                                          new_token_ids)
    guard_stop = decision is not None and decision.action == "stop"
    if guard_stop:
        final, message = "stopped", f"guard: {decision.message}"
    else:
        final = "stopped" if trainer.monitor.stopped else "finished"
        message = (f"stopped on request (Stop and save) at step {trainer.state.global_step}" if final == "stopped"
                   else f"finished at step {trainer.state.global_step}")
    if final == "finished" and distributed.is_main():
        remember_speed(config, hardware, trainer.monitor, events)
    events.emit("status", trainer.state.global_step, state=final, phase="done", exit_code=0,
                message=message, **({"guard": True} if guard_stop else {}))
    return final


def remember_speed(config: RunConfig, hardware: Hardware, monitor: RunMonitor, events: EventWriter) -> None:
    """Record the run's training speed (the median step after the first, which pays for
    allocation and compilation) for later plans on this machine (cpt_studio.core.throughput).
    Too few steps say nothing; a data folder that cannot be written is a warning, not a failure."""
    speeds = sorted(monitor.speeds[1:])
    if len(speeds) < 3 or not monitor.flops_per_token:
        return
    speed = speeds[len(speeds) // 2]
    try:
        record(Measurement(device_label(hardware.gpu_name, distributed.world_size()), config.method.kind,
                           monitor.parameters, monitor.flops_per_token, speed, f"run {config.name}",
                           config.batch.seq_len, config.batch.micro_batch,
                           mfu=model_flops_utilisation(speed, monitor.flops_per_token, monitor.peak_flops),
                           **kernel_setup(hardware)))
    except OSError as error:
        events.emit("log", None, level="warning", message=f"the run's speed was not remembered: {error}")


def _prepare_data(config: RunConfig, tokenizer, paths: RunPaths, events: EventWriter,
                  accept_changed_corpus: bool) -> RunData:
    if config.stage == "sft":  # the examples train in the domain corpus's place
        return prepare_sft_data(config, tokenizer, paths, events, accept_changed_corpus=accept_changed_corpus)
    return prepare_run_data(config.corpus, config.eval, tokenizer, paths.root,
                            seq_len=config.batch.seq_len, seed=config.seed, progress=events,
                            accept_changed_corpus=accept_changed_corpus)


def _live_probe_tasks(config: RunConfig, paths: RunPaths) -> list[str]:
    """The probe tasks scored at every checkpoint (benchmarks.probes_during_training), by the
    main process alone (distributed.unsupported refuses them where that cannot work)."""
    settings = config.benchmarks
    if not (settings.probes_during_training and settings.probes) or not distributed.is_main():
        return []
    return write_run_probes(paths.root, settings.probes)
def record_separator(config: RunConfig, paths: RunPaths, tokens) -> None:
    """Write the separator the run uses into its config.json (when it was left to the
    tokenizer), so the folder says how documents were packed and a resume packs alike."""
    if config.corpus.separator:
        return
    config.corpus.separator = tokens.separator_token
    staged = paths.config.with_suffix(".json.tmp")
    staged.write_text(config.to_json())
    os.replace(staged, paths.config)


def _train_with_guard(config: RunConfig, hardware: Hardware, paths: RunPaths, events: EventWriter,
                      model, tokenizer, data: RunData, ewc: EwcState | None,
                      checkpoint: Path | None, probe_tasks: list[str] = (),
                      new_token_ids: list[int] = ()) -> tuple[CPTTrainer, Decision | None]:
    """Train; after each guard rollback, resume from its target with the remedy in effect.
    Returns the last attempt's Trainer and the guard's last decision (None if it never acted)."""
    guard_state = GuardState.load(paths.root) if checkpoint else GuardState()
    while True:
        trainer = build_trainer(config, hardware, paths, events, model, tokenizer, data, ewc=ewc,
                                guard_state=guard_state, resuming=checkpoint is not None,
                                probe_tasks=probe_tasks, new_token_ids=new_token_ids)
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            decision = trainer.monitor.decision
        except OUT_OF_MEMORY:
            decision = _out_of_memory(trainer, paths, events, guard_state)
        if decision is None or decision.action != "rollback":
            return trainer, decision
        guard_state = decision.state
        checkpoint = paths.checkpoint(decision.rolled_back_to)
        log.info("the guard rolls back to %s at step %d", checkpoint.name, decision.step)
        del trainer  # its optimizer state goes before the next attempt makes its own
        model.zero_grad(set_to_none=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)
"""What torch raises when a step does not fit on the device (torch.OutOfMemoryError, 2.5+)."""


def _out_of_memory(trainer: CPTTrainer, paths: RunPaths, events: EventWriter,
                   guard_state: GuardState) -> Decision:
    """Record the halving of the micro-batch (guard.json, a guard event) and return the
    decision: resume from the last complete checkpoint, or stop when that cannot help."""
    last = last_checkpoint(paths.root)
    decision = out_of_memory(guard_state, trainer.args.per_device_train_batch_size,
                             trainer.args.gradient_accumulation_steps, trainer.state.global_step,
                             checkpoint_step(last) if last else None)
    decision.state.save(paths.root)
    if decision.rolled_back_to is not None:
        discard_checkpoints_after(paths.root, decision.rolled_back_to)
    events.emit("guard", decision.step,
                **decision.event_fields(None, trainer.monitor.config.corpus.replay_ratio))
    return decision


def _prepare_ewc(config: RunConfig, hardware: Hardware, model, data: RunData,
                 events: EventWriter) -> EwcState:
    """EWC's Fisher (from the cache, or computed with progress events) and theta*, taken from
    the starting model: before the Trainer loads any checkpoint into it."""
    settings = config.ewc
    events.emit("status", None, state="running", phase="fisher",
                message=f"EWC: Fisher of the {settings.group} weights on up to "
                        f"{settings.sequences:,} general sequences")
    device = (torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
              if hardware.device == "cuda" else torch.device("cpu"))
    if distributed.is_main():
        state = prepare_ewc(model, data.general.train, settings,
                            general_key=data.general.store.meta.get("key", ""),
                            seq_len=config.batch.seq_len, seed=config.seed, precision=hardware.precision,
                            autocast_dtype=hardware.autocast_dtype, device=device, progress=events)
    state = _share_ewc(state if distributed.is_main() else None, model, settings.group, device)
    events.emit("status", None, state="running", phase="fisher",
                message=f"EWC: Fisher {'from the cache' if state.cached else 'computed'} "
                        f"({state.sequences:,} sequences); penalty over {state.parameters:,} "
                        f"weights, strength {settings.strength:g}")
    return state


def _share_ewc(state: EwcState | None, model, group: str, device) -> EwcState:
    """The main process's EWC state on every rank: its Fisher, computed once, broadcast; the
    reference weights are each rank's own copy of the same starting model."""
    if distributed.world_size() == 1:
        return state
    sequences, cached = distributed.broadcast((state.sequences, state.cached) if state else None)
    if state is None:
        model.to(device)
        params = group_parameters(model, group)
        state = EwcState({name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()},
                         reference_weights(params), sequences, cached)
    distributed.broadcast_tensors(state.fisher)
    return state


def _data_words(config: RunConfig, source: str) -> str:
    """A mixer source ("domain", "general") in the run's words: an SFT run's domain rows are its
    instruction examples."""
    return "instruction data" if source == "domain" and config.stage == "sft" else f"{source} corpus"


def _new_pass_words(config: RunConfig, source: str, number: int) -> str:
    """The log line of pass `number` over a mixer source. A domain pass beyond schedule.epochs
    (when epochs decide the length) only fills the last step: the epochs are rounded up to whole
    optimizer steps (recipe.optimizer_steps), which the line says rather than seem to ignore them."""
    words = f"{_data_words(config, source)}: pass {number} begins"
    schedule = config.schedule
    by_epochs = not (schedule.max_steps or schedule.token_budget)
    if source == "domain" and by_epochs and number > math.ceil(schedule.epochs):
        words += (f", only to fill the last steps: {schedule.epochs:g} epochs are rounded up to whole "
                  "optimizer steps")
    return words


def build_trainer(config: RunConfig, hardware: Hardware, paths: RunPaths, events: EventWriter,
                  model, tokenizer, data: RunData, *, ewc: EwcState | None = None,
                  guard_state: GuardState | None = None, resuming: bool = False,
                  probe_tasks: list[str] = (), new_token_ids: list[int] = ()) -> CPTTrainer:
    guard_state = guard_state or GuardState()
    total_steps = optimizer_steps(config, len(data.domain.train), data.general is not None)
    # The global step's sequences (the same on any number of processes; an OOM halving keeps
    # it). The Trainer's dataloader hands rank r the micro-batches r, r + world, ... of the
    # sampler's stream, so optimizer step k of every rank together is exactly mixer.step(k).
    mixer = data.mixer(sequences_per_step(config),
                       on_new_pass=lambda name, n, step: events.emit(
                           "log", step, level="info", message=_new_pass_words(config, name, n)),
                       replay_changes=guard_state.replay_changes)
    eval_sets = evaluation_sets(data, config.eval, tokenizer, config.batch.seq_len)
    penalty = EwcPenalty(model, ewc, config.ewc.strength) if ewc is not None else None
    monitor = RunMonitor(config, events, paths, eval_sets, mixer, hardware, total_steps,
                         guard_state=guard_state, ewc=penalty, resuming=resuming,
                         probe_tasks=probe_tasks, flops_per_token=flops_per_token(model, config),
                         parameters=base_parameters(model))
    args = training_arguments(config, hardware, paths, total_steps, guard_state)
    return CPTTrainer(model=model, args=args,
                      train_dataset=data.dataset,
                      data_collator=partial(collate_rows, flat=flat_rows(model)),
                      processing_class=tokenizer, callbacks=[monitor], mixer=mixer, run=paths,
                      monitor=monitor, keep=config.checkpoints.keep, ewc=penalty,
                      embedding_lr_scale=config.schedule.embedding_lr_scale,
                      new_token_lr_scale=config.schedule.new_token_lr_scale, new_token_ids=new_token_ids)
