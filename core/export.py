"""Export a checkpoint as an ordinary HF folder, with its tokenizer and a model card.

    export_checkpoint(run_dir, 200, Path("~/models/med-cpt-200"))              # as trained
    export_checkpoint(lora_run_dir, 200, Path("~/models/med-merged"), merge_lora=True)
    destination_problem(Path("~/models/x"), export_size(run_dir, 200))  # a sentence, or None

A full checkpoint gives its weights; a LoRA checkpoint gives its adapter (loadable with
peft on the base model), or with `merge_lora` the base with the adapter merged in. The
README.md records the run's settings and its scores at that step, read from the run's
events. The folder is written beside `dest` and renamed into place, so it is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .disk import DiskFullError, disk_full_as_error, folder_size, require_free_space
from .generate import is_adapter, load_for_generation
from .run_folder import (
    RunPaths,
    checkpoint_config,
    checkpoint_dirname,
    checkpoint_folder,
    read_json,
)
from .timeline import RunTimeline

TRAINING_STATE = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin",
                  "trainer_state.json", "README.md"}
"""Checkpoint files that only resuming needs (and peft's stub card, replaced by ours)."""


def export_checkpoint(run_dir: Path | str, step: int, dest: Path | str, *,
                      merge_lora: bool = False) -> Path:
    """Write the checkpoint at `step` into the new folder `dest`; returns it."""
    run_dir, dest = Path(run_dir).resolve(), Path(dest).expanduser().resolve()
    refuse_non_empty(dest)
    source = checkpoint_folder(run_dir, step)
    config = read_json(RunPaths(run_dir).config)
    adapter = is_adapter(source)
    merged = adapter and merge_lora
    what = f"the export of {checkpoint_dirname(step)}"
    if not merged:  # a copy: its size is known (a merged model's is the base model's, found when written)
        require_free_space(dest.parent, export_size(run_dir, step), what, SPACE_FIX)

    def write(folder: Path) -> None:
        if merged:
            _save_merged(source, folder)
        else:
            shutil.copytree(source, folder, dirs_exist_ok=True,
                            ignore=lambda _d, names: [n for n in names if n in TRAINING_STATE])
        kind = "merged" if merged else "adapter" if adapter else "full"
        card = model_card(config, step, kind, checkpoint_scores(run_dir, step), _report(run_dir, folder))
        (folder / "README.md").write_text(card, encoding="utf-8")
    return write_export(dest, what, write)


def refuse_non_empty(dest: Path) -> None:
    """FileExistsError unless `dest` is absent or an empty folder: an export overwrites nothing."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not empty; choose a new or empty "
                              "folder, so nothing there is overwritten")


def write_export(dest: Path | str, what: str, write: Callable[[Path], None]) -> Path:
    """The new folder `dest`, filled by `write(folder)` in a folder beside it that is then
    renamed into place, so that it is complete (nothing half-written is left when `write`
    fails; a full disk raises DiskFullError naming `what`). Returns `dest`."""
    dest = Path(dest).expanduser().resolve()
    refuse_non_empty(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with disk_full_as_error(dest.parent, what, SPACE_FIX):
            tmp.mkdir(parents=True)
            write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written is left beside dest
        raise
    if dest.exists():
        dest.rmdir()  # empty, checked above
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, dest)
    return dest


SPACE_FIX = "free space on that disk or choose another destination"


def export_size(run_dir: Path | str, step: int) -> int:
    """Bytes an export of the checkpoint at `step` copies (its files but the training state;
    a merged LoRA export is the size of the base model instead)."""
    source = checkpoint_folder(Path(run_dir), step)
    return sum(folder_size(f) for f in source.iterdir() if f.name not in TRAINING_STATE)


def destination_problem(dest: Path | str, needed: int) -> str | None:
    """Why the folder `dest` cannot take an export of `needed` bytes, as a sentence with the
    fix, or None: a file in the way, a folder this user cannot write in, too little free space
    (cpt_studio.core.disk.require_free_space). `dest` may not exist yet (it is created); a
    non-empty folder is not refused here (export_checkpoint refuses to write into one)."""
    dest = Path(dest).expanduser().resolve()
    existing = next(folder for folder in (dest, *dest.parents) if folder.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder; choose a folder for the export"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write in {existing} (permission denied); choose a folder you can write to"
    try:
        require_free_space(existing, needed, f"the export into {dest}", SPACE_FIX)
    except DiskFullError as exc:
        return str(exc.strerror or exc)
    return None


def default_export_name(config: dict, step: int) -> str:
    """A folder name for the export of `step`: the run's name and the step ("med-cpt-step-200")."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(config.get("name") or "run"))
    return f"{name.strip('-.') or 'run'}-step-{step}"


def _report(run_dir: Path, folder: Path) -> str | None:
    """The run's evaluation report (`cpt-studio report`), its chart copied beside the card."""
    paths = RunPaths(run_dir)
    if not paths.report_markdown.is_file():
        return None
    for chart in paths.report.glob("*.png"):
        shutil.copy(chart, folder / chart.name)
    return paths.report_markdown.read_text(encoding="utf-8")


def _save_merged(source: Path, folder: Path) -> None:
    model, tokenizer = load_for_generation(source)
    merged = model.merge_and_unload()
    merged.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if checkpoint_config(source).is_file():
        shutil.copy(checkpoint_config(source), checkpoint_config(folder))


def checkpoint_scores(run_dir: Path | str, step: int) -> dict[str, Any]:
    """The baseline evaluation, the evaluation at `step`, and any benchmark or probe events
    at `step`, from the run's events (the last of each when a resume repeated a step)."""
    events = [event.to_dict() for event in RunTimeline.load(RunPaths(Path(run_dir)).events).events]
    evals = [e for e in events if e.get("type") == "eval"]
    return {"baseline": next((e for e in evals if e.get("baseline")), None),
            "at_step": next((e for e in reversed(evals) if e.get("step") == step), None),
            "other": [e for e in events if e.get("type") in ("benchmark", "probe")
                      and e.get("step") == step]}


def model_card(config: dict, step: int, kind: str, scores: dict[str, Any],
               report: str | None = None) -> str:
    """README.md of an exported checkpoint: what it is, how it was trained, how it scored, and
    the run's evaluation report (Markdown, its headings one level down) when there is one."""
    model = config.get("model", {}).get("name_or_path", "?")
    what = {"full": "full weights", "adapter": "a LoRA adapter (load it with peft on the base "
            "model)", "merged": "the base model with the LoRA adapter merged in",
            "interpolated": "weights between the base model's and this checkpoint's (see "
            "Interpolation below)"}[kind]
    lines = [f"# {config.get('name', 'run')}, step {step}", "",
             f"Continual pre-training of `{model}` with CPT Studio; this folder holds {what}, "
             "with the tokenizer the run trained with.", "", "## Training settings", ""]
    lines += [f"- {label}: {value}" for label, value in _settings(config)]
    lines += ["", "## Scores at this step", ""] + _score_lines(scores)
    if report:
        lines += ["", *("#" + line if line.startswith("#") else line
                        for line in report.rstrip().splitlines())]
    lines += ["", "## Full run configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    return "\n".join(lines)


def _settings(config: dict) -> list[tuple[str, Any]]:
    method, schedule = config.get("method", {}), config.get("schedule", {})
    batch, corpus = config.get("batch", {}), config.get("corpus", {})
    kind = method.get("kind", "full")
    if kind == "lora":
        kind = f"LoRA r={method.get('lora_rank')} alpha={method.get('lora_alpha')}"
    return [("base model", config.get("model", {}).get("name_or_path")), ("method", kind),
            ("peak learning rate", schedule.get("peak_lr")), ("decay", schedule.get("decay")),
            ("steps", schedule.get("max_steps")), ("replay ratio", corpus.get("replay_ratio")),
            ("batch", f"{batch.get('micro_batch')} x {batch.get('grad_accum')} sequences of "
                      f"{batch.get('seq_len')} tokens"),
            ("tokenizer extended", bool(config.get("tokenizer", {}).get("extend"))),
            ("EWC", bool(config.get("ewc", {}).get("enabled")))]


def _score_lines(scores: dict[str, Any]) -> list[str]:
    base, at = scores["baseline"], scores["at_step"]
    if at is None:
        return ["No evaluation at this step."]
    lines = ["| | baseline | this step |", "|---|---|---|"]
    for label, field in (("domain perplexity", "domain_ppl"), ("general perplexity", "general_ppl")):
        lines.append(f"| {label} | {_number(base, field)} | {_number(at, field)} |")
    lines += ["", f"- domain gain: {_percent(at.get('domain_gain'))}",
              f"- forgetting: {_percent(at.get('forgetting'))}"]
    for event in scores["other"]:
        fields = {k: v for k, v in event.items() if k not in ("type", "time", "step")}
        lines.append(f"- {event['type']}: {json.dumps(fields)}")
    return lines


def _number(event: dict | None, field: str) -> str:
    value = event and event.get(field)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _percent(value: float | None) -> str:
    return f"{value:+.2%}" if isinstance(value, (int, float)) else "-"
