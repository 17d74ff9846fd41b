"""Weight interpolation between the base model and a checkpoint: θ = θ_base + α·(θ_ckpt − θ_base).

    curve = interpolation_curve(run_dir, 200, alphas=(0, 0.25, 0.5, 0.75, 1))  # saved in the run
    curve.points[2].alpha, curve.points[2].domain_gain, curve.points[2].forgetting
    export_interpolated(run_dir, 200, 0.5, Path("~/models/med-half"))          # an HF folder

Training moves the weights along a path from the base model; a point on the straight line
between the base and a checkpoint often keeps most of the checkpoint's domain gain with a
fraction of its forgetting (weight-space ensembling, as in WiSE-FT, Wortsman et al. 2022,
"Robust fine-tuning of zero-shot models"). α = 0 is the base model, α = 1 the checkpoint.

A full checkpoint is interpolated weight by weight (torch.lerp, exact at both ends); the base
is the run's checkpoint-0 when the guard wrote one (the exact starting model, new token rows
included), else the run's base model. A LoRA checkpoint is interpolated by scaling its adapter:
every LoRA layer's scaling becomes α·lora_alpha/r (peft's LoraLayer.set_scale), so the
adapter adds α·B·A·x, and the merged weights are W + α·ΔW, the same line. Runs that extend
the tokenizer with LoRA (trainable token rows) are not interpolated (refused, with the reason).

Each α is evaluated on every evaluation set of the run (the held-out slices it saved and the
evaluation files of its config; cpt_studio.core.data.saved_evaluation_sets), with domain gain
and forgetting against the run's own step-0 baseline (cpt_studio.core.evaluation.set_changes),
so the curve sits on the same axes as the run's checkpoints; a run with knowledge probes
(benchmarks.probes) has them scored at each α too (probe_fields). Memory: the checkpoint's model
plus two copies of its weights (base and checkpoint) in host memory for a full checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import BenchmarkConfig, RunConfig
from .data import saved_evaluation_sets
from .evaluation import measure_sets, set_changes
from .events import EvalEvent
from .export import include_chat_template, write_export
from .generate import is_adapter, load_for_generation
from .hf_imports import imported_name
from .model_card import model_card
from .progress import Progress, tick
from .recipe import resolve_hardware
from .run_folder import (
    RunPaths,
    checkpoint_config,
    checkpoint_dirname,
    checkpoint_folder,
    read_json,
)
from .timeline import RunTimeline

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class InterpolationPoint:
    alpha: float
    """0: the base model, 1: the checkpoint."""
    fields: dict[str, Any]
    """As a run's eval event: {set}_ppl, _loss, _bpb, _word_ppl of every set; domain_gain,
    forgetting (and forgetting_set), {set}_domain_gain and {set}_forgetting of the other sets."""

    @property
    def domain_gain(self) -> float:
        return self.fields["domain_gain"]

    @property
    def forgetting(self) -> float | None:
        return self.fields.get("forgetting")


@dataclass
class InterpolationCurve:
    step: int
    """The checkpoint at α = 1."""
    method: str
    """'full' (weights interpolated) or 'lora' (the adapter scaled)."""
    baseline: dict[str, float]
    """The {set}_ppl the gains are measured against: the run's step-0 evaluation."""
    points: list[InterpolationPoint] = field(default_factory=list)

    def point(self, alpha: float) -> InterpolationPoint | None:
        return next((p for p in self.points if abs(p.alpha - alpha) < 1e-9), None)

    def save(self, run_dir: Path) -> Path:
        path = RunPaths(Path(run_dir)).interpolation(self.step)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(path.name + ".tmp")
        staged.write_text(json.dumps(asdict(self), indent=1))
        os.replace(staged, path)
        return path

    @classmethod
    def load(cls, run_dir: Path, step: int) -> InterpolationCurve | None:
        """The curve saved for the checkpoint at `step`, or None."""
        path = RunPaths(Path(run_dir)).interpolation(step)
        if not path.is_file():
            return None
        data = read_json(path)
        points = [InterpolationPoint(**p) for p in data.pop("points")]
        return cls(**data, points=points)


def parse_alphas(text: str) -> list[float]:
    """"0,0.25,1" -> [0.0, 0.25, 1.0]; ValueError with the fix for anything else."""
    try:
        alphas = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--alpha {text!r}: give numbers separated by commas, e.g. 0,0.25,0.5,0.75,1") from None
    if not alphas:
        raise ValueError("--alpha: give at least one value, e.g. 0,0.5,1")
    return alphas


# -- the models --------------------------------------------------------------------------

@dataclass
class Interpolator:
    """The checkpoint's model, whose weights `set_alpha(α)` moves onto the line from the base."""

    model: Any
    tokenizer: Any
    method: str
    set_alpha: Callable[[float], None]


def load_interpolator(run_dir: Path, step: int) -> Interpolator:
    """The model of the checkpoint at `step` (loaded as the run trained it), ready to be set to
    any α. ValueError when the base and the checkpoint cannot be put on one line."""
    folder = checkpoint_folder(run_dir, step)
    model, tokenizer = load_for_generation(folder)
    if is_adapter(folder):
        return Interpolator(model, tokenizer, "lora", _adapter_scaler(model, folder))
    base, _ = load_for_generation(_base_source(Path(run_dir)))
    return Interpolator(model, tokenizer, "full", _weight_lerp(base, model, folder))


def _base_source(run_dir: Path) -> Path | str:
    """checkpoint-0 (the exact starting model, written when the guard is on), else the base."""
    start = RunPaths(run_dir).checkpoint(0)
    return start if start.is_dir() else RunConfig.load(RunPaths(run_dir).config).model.name_or_path


def _weight_lerp(base, model, folder: Path) -> Callable[[float], None]:
    """set_alpha for a full checkpoint: each weight of `model` becomes lerp(base, ckpt, α)."""
    base_weights = dict(base.named_parameters())
    start, end = {}, {}
    for name, weight in model.named_parameters():
        other = base_weights.get(name)
        if other is None or other.shape != weight.shape:
            found = "missing" if other is None else tuple(other.shape)
            raise ValueError(f"{folder.name}: weight {name} has shape {tuple(weight.shape)} but the "
                             f"base model's is {found}; a run that extends the tokenizer is "
                             f"interpolated from its {checkpoint_dirname(0)}, which the run writes "
                             "when the guard is on: interpolate a run trained with the guard on")
        start[name] = other.detach().to("cpu", copy=True)
        end[name] = weight.detach().to("cpu", copy=True)

    @torch.no_grad()
    def set_alpha(alpha: float) -> None:
        for name, weight in model.named_parameters():
            mixed = torch.lerp(start[name].float(), end[name].float(), float(alpha))
            weight.copy_(mixed.to(weight.dtype))
    return set_alpha


def _adapter_scaler(model, folder: Path) -> Callable[[float], None]:
    """set_alpha for a LoRA checkpoint: every LoRA layer's scaling set to α·lora_alpha/r."""
    LoraLayer = imported_name("peft.tuners.lora", "LoraLayer")  # noqa: N806 (a class)

    if any("trainable_tokens" in name for name, _ in model.named_parameters()):
        raise ValueError(f"{folder.name}: this LoRA run trained new token rows (an extended "
                         "tokenizer); interpolating them is not supported: interpolate a run "
                         "without tokenizer extension, or export the checkpoint as it is")
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]

    def set_alpha(alpha: float) -> None:
        for layer in layers:
            for adapter in layer.scaling:
                layer.set_scale(adapter, float(alpha))
    return set_alpha


# -- the curve ---------------------------------------------------------------------------

def interpolation_curve(run_dir: Path | str, step: int, alphas: Sequence[float] = DEFAULT_ALPHAS, *,
                        save: bool = True, progress: Progress | None = None) -> InterpolationCurve:
    """Evaluate the model at each α (in the order given) on every evaluation set of the run,
    and on its knowledge probes when it has them (probe_fields); saved in the run folder
    (RunPaths.interpolation) unless `save` is off. `progress` hears one step per α (a
    Cancelled it raises stops the work before that α; nothing is saved)."""
    run_dir = Path(run_dir).resolve()
    config = RunConfig.load(RunPaths(run_dir).config)
    tick(progress, 0, len(alphas), f"loading {checkpoint_dirname(step)} and the base model")
    interpolator = load_interpolator(run_dir, step)
    hardware = resolve_hardware(config)
    interpolator.model.to("cuda" if hardware.device == "cuda" else "cpu")
    eval_sets = saved_evaluation_sets(run_dir, config, interpolator.tokenizer)
    kinds = {name: s.kind for name, s in eval_sets.items()}

    probe_tasks = run_probe_tasks(run_dir, config)

    def measure(alpha: float) -> dict:
        interpolator.set_alpha(alpha)
        return measure_sets(interpolator.model, eval_sets, config.eval.batch_size, hardware.autocast_dtype)

    baseline = run_baseline(run_dir, kinds) or _ppl_fields(measure(0.0))
    curve = InterpolationCurve(step, interpolator.method, baseline)
    for done, alpha in enumerate(alphas):
        tick(progress, done, len(alphas), f"α = {alpha:g}: evaluating ({done} of {len(alphas)} done)")
        fields = measure(alpha)
        fields.update(probe_fields(interpolator, run_dir, probe_tasks, config.benchmarks))
        curve.points.append(InterpolationPoint(float(alpha), {**fields, **set_changes(
            fields, baseline, kinds, config.eval.guard_set)}))
    tick(progress, len(alphas), len(alphas), "saving the curve")
    if save:
        curve.save(run_dir)
    return curve


def run_probe_tasks(run_dir: Path, config: RunConfig) -> list[str]:
    """The run's knowledge-probe tasks (benchmarks.probes, written into its eval/tasks), or []."""
    if not config.benchmarks.probes:
        return []
    from .evaljob import write_run_probes  # lm-eval's tasks: only a run with probes pays for it

    return write_run_probes(run_dir, config.benchmarks.probes)


def probe_fields(interpolator: Interpolator, run_dir: Path, tasks: list[str],
                 settings: BenchmarkConfig) -> dict[str, float]:
    """`{task}_acc` (a fraction) of each probe task on the model as it is now set (at most
    settings.probe_limit probes per task, as the live probes score them); {} without tasks."""
    if not tasks:
        return {}
    from .benchmarks import run_task, task_manager, wrap_model

    lm = wrap_model(interpolator.model, interpolator.tokenizer, settings.batch_size, merge=False)
    manager = task_manager([RunPaths(run_dir).eval_tasks], registry=False)
    return {f"{score.task}_acc": score.value for name in tasks
            for score in run_task(lm, name, manager, num_fewshot=settings.num_fewshot,
                                  limit=settings.probe_limit)
            if score.metric == "acc"}


def probe_accuracies(point: InterpolationPoint) -> dict[str, float]:
    """The probe tasks' accuracies at this α (probe_fields), by task."""
    return {k.removesuffix("_acc"): v for k, v in point.fields.items() if k.endswith("_acc")}


def run_baseline(run_dir: Path, kinds: dict[str, str]) -> dict[str, float] | None:
    """The step-0 perplexities of every set in `kinds`, from the run's events; None when the
    run has no baseline evaluation of all of them."""
    events = RunTimeline.load(RunPaths(Path(run_dir)).events).of(EvalEvent)
    event = next((e for e in events if e.baseline), None)
    if event is None:
        return None
    fields = _ppl_fields(event.to_dict())
    return fields if all(f"{name}_ppl" in fields for name in kinds) else None


def _ppl_fields(fields: dict) -> dict[str, float]:
    return {k: v for k, v in fields.items()
            if k.endswith("_ppl") and not k.endswith("_word_ppl") and v is not None}


# -- export ------------------------------------------------------------------------------

def export_interpolated(run_dir: Path | str, step: int, alpha: float, dest: Path | str, *,
                        datasets: list[str] = (), tags: list[str] = ()) -> Path:
    """Write the model at `alpha` between the base and the checkpoint at `step` as an HF
    folder (a LoRA checkpoint merged at that scale), with the tokenizer, the run config and a
    model card (cpt_studio.core.model_card; the scores at that α when the saved curve has them)."""
    run_dir = Path(run_dir).resolve()
    curve = InterpolationCurve.load(run_dir, step)
    point = curve.point(alpha) if curve else None

    def write(folder: Path) -> None:
        interpolator = load_interpolator(run_dir, step)
        interpolator.set_alpha(alpha)
        model = interpolator.model
        if interpolator.method == "lora":
            model = model.merge_and_unload()  # merging applies the scaling: W + α·ΔW
        model.save_pretrained(folder)
        interpolator.tokenizer.save_pretrained(folder)
        include_chat_template(folder, run_dir)
        source = checkpoint_config(checkpoint_folder(run_dir, step))
        if source.is_file():
            shutil.copy(source, checkpoint_config(folder))
        card = model_card(run_dir, step, "interpolated", datasets=datasets, tags=tags,
                          at_step=point.fields if point else {}, notes=_card_note(step, alpha, curve))
        card.save(folder / "README.md")
    return write_export(dest, f"the export of {checkpoint_dirname(step)} at alpha {alpha:g}", write)


def _card_note(step: int, alpha: float, curve: InterpolationCurve | None) -> str:
    lines = ["", "## Interpolation", "",
             f"θ = θ_base + {alpha:g}·(θ_{checkpoint_dirname(step)} − θ_base): α = 0 is the base "
             "model, α = 1 the checkpoint."]
    if curve:
        lines += ["", "| α | domain gain | forgetting |", "|---|---|---|"]
        lines += [f"| {p.alpha:g} | {p.domain_gain:+.2%} | {_percent(p.forgetting)} |" for p in curve.points]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return f"{value:+.2%}" if value is not None else "-"


def format_curve(curve: InterpolationCurve) -> str:
    """The curve as a text table: α, each set's perplexity, domain gain, forgetting (and each
    probe task's accuracy when the run has probes)."""
    names = [k.removesuffix("_ppl") for k in curve.baseline]
    probes = list(probe_accuracies(curve.points[0])) if curve.points else []
    header = (["alpha"] + [f"{name} ppl" for name in names] + ["domain gain", "forgetting"]
              + [f"{task} acc" for task in probes])
    rows = [[f"{p.alpha:g}"] + [f"{p.fields[f'{n}_ppl']:.3f}" for n in names]
            + [f"{p.domain_gain:+.2%}", _percent(p.forgetting)]
            + [f"{probe_accuracies(p).get(task, float('nan')):.1%}" for task in probes] for p in curve.points]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in [header] + rows]
    return "\n".join(lines)


def point_summary(point: InterpolationPoint, step: int) -> str:
    """One α's numbers in words, a line each: domain gain, forgetting, each set's perplexity,
    each probe task's accuracy."""
    lines = [f"α = {point.alpha:g} between the base model and {checkpoint_dirname(step)}",
             f"domain gain {point.domain_gain:+.2%}, forgetting {_percent(point.forgetting)}"]
    lines += [f"{key.removesuffix('_ppl')} perplexity {value:.3f}" for key, value in point.fields.items()
              if key.endswith("_ppl") and not key.endswith("_word_ppl")]
    lines += [f"{task} accuracy {value:.1%}" for task, value in probe_accuracies(point).items()]
    return "\n".join(lines)
