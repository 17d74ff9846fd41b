"""What cpt_studio.core.training relies on inside transformers' Trainer, checked against the
installed transformers: the private methods CPTTrainer overrides (their signatures, and their
roles, by a few real steps of a tiny model on the CPU), the callback events RunMonitor handles,
and the private attribute preflight reads. Verified on transformers 5.24.0; pyproject.toml
bounds the range (>=5.0,<6), and test_the_installed_transformers_is_in_the_checked_range reads
both, so a transformers outside it is named before any other failure here is read.

When one of these fails after a transformers upgrade: read the method in transformers/trainer.py
(how `train` calls it now, and what it does), adapt the override in core/training.py, and
move pyproject's bound only once this module passes.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from packaging.requirements import Requirement
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    default_data_collator,
)

from cpt_studio.core.config import BatchConfig, CheckpointConfig, ScheduleConfig
from cpt_studio.core.guard import GuardState
from cpt_studio.core.mixing import ReplayMixer
from cpt_studio.core.recipe import EMBEDDING_GROUP, Hardware
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.core.training import CPTTrainer, RunMonitor, training_arguments

TRANSFORMERS = importlib.metadata.version("transformers")

HOOKS = {
    "_get_train_sampler": "gives the training DataLoader its sampler: our MixingSampler, which "
                          "puts the replay mix in every optimizer step",
    "_load_optimizer_and_scheduler": "restores the optimizer and the LR schedule on resume, after "
                                     "which we rescale the schedule for the guard's LR remedy",
    "_save_checkpoint": "writes checkpoint-N (weights, optimizer, scheduler, RNG, trainer state) "
                        "into args.output_dir, which we stage and then rename into checkpoints/",
    "training_step": "runs one micro-batch's forward and backward, after which we add the EWC "
                     "gradient on the step's last micro-batch",
    "create_optimizer": "builds the optimizer and its parameter groups (before the scheduler), "
                        "after which we move the embeddings into a group of their own rate",
}
STEPS, INTERVAL, ROWS, SEQS_PER_STEP, FIRST_TOKEN = 4, 2, 8, 2, 3
EMBEDDING_SCALE = 0.1


def _changed(name: str, what: str) -> str:
    return (f"transformers {TRANSFORMERS} changed Trainer.{name}, which CPTTrainer overrides: it "
            f"{HOOKS[name]}. {what} Read Trainer.{name} and its callers in transformers/trainer.py "
            f"and adapt CPTTrainer.{name} in core/training.py.")


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_installed_transformers_is_in_the_checked_range():
    # pyproject.toml's requirement, as installed (pip install -e . again after changing it)
    requirements = [Requirement(r) for r in importlib.metadata.requires("cpt-studio")]
    spec = next(r.specifier for r in requirements if r.name == "transformers")
    assert any(s.operator in ("<", "<=") for s in spec), (
        "pyproject.toml's transformers requirement needs an upper bound: CPTTrainer overrides "
        "private Trainer methods, which a new major version may change")
    assert spec.contains(TRANSFORMERS), (
        f"transformers {TRANSFORMERS} is outside pyproject.toml's range {spec}: the Trainer hooks "
        "were checked only inside it; run this module, then move the bound")


def test_every_trainer_method_cptrainer_overrides_is_checked_here():
    overrides = {name for name, value in vars(CPTTrainer).items()
                 if callable(value) and name != "__init__" and hasattr(Trainer, name)}
    assert overrides == set(HOOKS), (
        "CPTTrainer overrides a Trainer method this module does not check (or no longer overrides "
        "one it does): add it to HOOKS with its role, and a probe of that role")


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_each_override_takes_the_parameters_of_the_trainer_method(name):
    base, ours = getattr(Trainer, name), getattr(CPTTrainer, name)
    assert _parameters(ours) == _parameters(base), _changed(
        name, f"Its parameters are now {inspect.signature(base)}; ours are {inspect.signature(ours)}.")


OWN_EVENTS = {"on_checkpoint"}
"""RunMonitor's own: called by CPTTrainer._save_checkpoint, not by the Trainer."""


@pytest.mark.parametrize("name", sorted(n for n in vars(RunMonitor) if n.startswith("on_") and n not in OWN_EVENTS))
def test_each_callback_event_runmonitor_handles_exists_with_its_arguments(name):
    assert hasattr(TrainerCallback, name), (
        f"transformers {TRANSFORMERS} has no TrainerCallback.{name}: RunMonitor.{name} "
        "(core/training.py) is never called; find the event that replaced it")
    base, ours = _parameters(getattr(TrainerCallback, name)), inspect.signature(getattr(RunMonitor, name))
    positional = [p for p in base if p not in ("kwargs",)]
    assert list(ours.parameters)[:len(positional)] == positional and "kwargs" in ours.parameters, (
        f"transformers {TRANSFORMERS} calls TrainerCallback.{name} with ({', '.join(base)}); "
        f"RunMonitor.{name}{ours} must take those and **kwargs")


def test_preflight_reads_the_models_sdpa_flag_under_its_name():
    # core/preflight.py: getattr(model, "_supports_sdpa", True) refuses attention=sdpa for a model
    # without it; under another name every model would silently pass.
    assert hasattr(PreTrainedModel, "_supports_sdpa"), (
        f"transformers {TRANSFORMERS} has no PreTrainedModel._supports_sdpa: find the flag that "
        "says a model supports SDPA attention and use it in core/preflight.py model_problems")


# --- the roles, by a few real steps ------------------------------------------------------

class Rows(torch.utils.data.Dataset):
    """Row i is a sequence of the token FIRST_TOKEN + i: a batch says which rows it holds."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.full((self.seq_len,), FIRST_TOKEN + i)
        return {"input_ids": ids, "labels": ids.clone()}


class ProbeTrainer(CPTTrainer):
    """CPTTrainer recording the rows of every micro-batch and every optimizer restore."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: list[list[int]] = []
        self.restored: list[tuple[object, int]] = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.rows.append([int(t) - FIRST_TOKEN for t in inputs["input_ids"][:, 0]])
        return super().training_step(model, inputs, num_items_in_batch)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        inner = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)
        self.restored.append((checkpoint, inner.last_epoch))


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """A run of STEPS steps with a checkpoint every INTERVAL, then a resume from the first
    checkpoint at half the learning rate (the guard's remedy)."""
    root = tmp_path_factory.mktemp("hooks")
    config = tiny_run_config(tiny_model_dir, root / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=STEPS, warmup_ratio=0.25),
                             batch=BatchConfig(micro_batch=SEQS_PER_STEP, grad_accum=1, seq_len=16),
                             checkpoints=CheckpointConfig(interval=INTERVAL, keep=STEPS))
    paths = RunPaths(root / "run")
    paths.root.mkdir()
    paths.config.write_text(config.to_json())
    mixer = ReplayMixer(ROWS, 0, 0.0, SEQS_PER_STEP, seed=config.seed)
    saved: dict[int, Path] = {}  # step: the checkpoint CPTTrainer reports, renamed into place
    monitor = SimpleNamespace(on_checkpoint=lambda path, step: saved.setdefault(step, path),
                              protected_steps=set)

    def trainer(guard_state: GuardState) -> ProbeTrainer:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        args = training_arguments(config, Hardware("cpu", "fp32", "sdpa", False), paths, STEPS, guard_state)
        return ProbeTrainer(model=model, args=args, train_dataset=Rows(config.batch.seq_len),
                            data_collator=default_data_collator, mixer=mixer, run=paths,
                            monitor=monitor, keep=STEPS, embedding_lr_scale=EMBEDDING_SCALE)

    first = trainer(GuardState())
    _train(first)
    saved_first = sorted(saved)
    checkpoint = saved.get(INTERVAL)
    assert checkpoint is not None and checkpoint.is_dir(), _changed(
        "_save_checkpoint", f"No checkpoint at step {INTERVAL} (saved: {saved}).")
    contents = sorted(p.name for p in checkpoint.iterdir())
    resumed = trainer(GuardState(lr_scale=0.5))
    _train(resumed, resume_from_checkpoint=str(checkpoint))
    return SimpleNamespace(first=first, resumed=resumed, saved=saved_first, checkpoint=checkpoint,
                           contents=contents, paths=paths, mixer=mixer)


def _train(trainer: Trainer, **kwargs) -> None:
    try:
        trainer.train(**kwargs)
    except Exception as exc:
        raise AssertionError(
            f"training through CPTTrainer failed on transformers {TRANSFORMERS}: "
            f"{type(exc).__name__}: {exc}. The traceback shows which of its overrides "
            f"({', '.join(sorted(HOOKS))}) it went through: compare that method with "
            "transformers/trainer.py and adapt it in core/training.py") from exc


def _rates(trainer: Trainer) -> dict[int, float]:
    return {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}


def test_the_train_dataloader_draws_from_our_sampler_in_its_order(runs):
    expected = [runs.mixer.step(step) for step in range(STEPS)]
    assert runs.first.rows == expected, _changed(
        "_get_train_sampler", "The training batches no longer follow the sampler it returns "
        f"(batches {runs.first.rows}, sampler's steps {expected}).")


def test_checkpoints_are_saved_at_save_steps_and_renamed_complete(runs):
    assert runs.saved == list(range(INTERVAL, STEPS + 1, INTERVAL)), _changed(
        "_save_checkpoint", f"Trainer.train no longer calls it at every save step (saved: {runs.saved}).")
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth",
            "run_config.json"} <= set(runs.contents), _changed(
        "_save_checkpoint", f"A checkpoint lacks what a resume reads (it holds {runs.contents}).")
    assert not any(runs.paths.staging.glob("*")), _changed(
        "_save_checkpoint", "It no longer writes checkpoint-N into args.output_dir (the staging "
        "folder), so the folder we rename was not the one it wrote.")


def test_a_resume_restores_the_optimizer_from_the_checkpoint_and_keeps_our_schedule(runs):
    assert runs.resumed.restored == [(str(runs.checkpoint), INTERVAL)], _changed(
        "_load_optimizer_and_scheduler", "On resume it is no longer called once with the "
        f"checkpoint's path, the schedule restored to step {INTERVAL} (calls: {runs.resumed.restored}).")
    assert runs.resumed.rows == [runs.mixer.step(step) for step in range(INTERVAL, STEPS)], _changed(
        "_get_train_sampler", "A resume no longer skips the sampler's steps already trained "
        f"(batches after the resume: {runs.resumed.rows}).")
    first, resumed = _rates(runs.first), _rates(runs.resumed)
    assert [resumed[s] for s in range(INTERVAL + 1, STEPS + 1)] == pytest.approx(
        [0.5 * first[s] for s in range(INTERVAL + 1, STEPS + 1)], rel=1e-6), _changed(
        "_load_optimizer_and_scheduler", "The schedule we rescale after it (set_peak_lr, for the "
        f"guard's remedy) is not the one training then follows (rates {resumed} vs {first}); "
        "check also the scheduler's base_lrs and _last_lr in torch.optim.lr_scheduler.")


def test_the_embeddings_keep_their_own_rate_through_training_and_a_resume(runs):
    for trainer in (runs.first, runs.resumed):
        groups = trainer.optimizer.param_groups
        own = [g for g in groups if g.get("name") == EMBEDDING_GROUP]
        assert len(own) == 1 and own[0]["lr"] == pytest.approx(EMBEDDING_SCALE * groups[0]["lr"]), _changed(
            "create_optimizer", "The optimizer that trained is not the one it returned with our "
            f"embeddings group, or the schedule does not scale each group (groups: "
            f"{[(g.get('name'), g['lr']) for g in groups]}).")
