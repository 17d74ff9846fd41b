"""Export a checkpoint as an ordinary HF folder, with its tokenizer, its chat template and a
model card.

    export_modes(run_dir, 200)              # ["full"], or ["adapter", "merged"] for a LoRA checkpoint
    export_checkpoint(run_dir, 200, Path("~/models/med-cpt-200"))             # as trained
    export_checkpoint(lora_run_dir, 200, Path("~/models/med-merged"), mode="merged",
                      datasets=["pubmed"], tags=["medical"])
    destination_problem(Path("~/models/x"), export_size(run_dir, 200))  # a sentence, or None

Modes: `full` (a full checkpoint's weights), `adapter` (a LoRA checkpoint's adapter alone,
loadable with peft on its base model) and `merged` (the base with the adapter merged in: a
model that plain transformers loads). For an SFT run started from a LoRA checkpoint, the base is
the run's start_model/ (the CPT adapter merged into its base, cpt_studio.core.sft_run), so a
merged export holds base + CPT + SFT, and an adapter export's card names that start model. The
tokenizer always goes along, with the chat template (chat_template.jinja, as transformers saves
it; an SFT run's own template). The README.md is the model card of cpt_studio.core.model_card.
The folder is written beside `dest` and renamed into place, so it is complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .disk import DiskFullError, disk_full_as_error, folder_size, require_free_space
from .generate import is_adapter, load_for_generation
from .hf_imports import imported_name
from .model_card import model_card
from .run_folder import (
    RunPaths,
    checkpoint_config,
    checkpoint_dirname,
    checkpoint_folder,
)

TRAINING_STATE = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin",
                  "trainer_state.json", "README.md"}
"""Checkpoint files that only resuming needs (and peft's stub card, replaced by ours)."""
EXPORT_MODES = {"full": "full weights", "merged": "LoRA merged into the base: one model folder",
                "adapter": "the LoRA adapter alone (load it with peft on its base model)"}
"""Export modes, with what each gives, in words."""


def export_modes(run_dir: Path | str, step: int) -> list[str]:
    """The modes the checkpoint at `step` can be exported in, the default (as trained) first:
    ["full"] for a full checkpoint, ["adapter", "merged"] for a LoRA one."""
    return ["adapter", "merged"] if is_adapter(checkpoint_folder(Path(run_dir), step)) else ["full"]


def checked_mode(run_dir: Path | str, step: int, mode: str | None) -> str:
    """`mode`, or the checkpoint's default when None; ValueError naming the modes it allows."""
    modes = export_modes(run_dir, step)
    if mode is not None and mode not in modes:
        what = "a LoRA checkpoint" if "merged" in modes else "a full checkpoint"
        raise ValueError(f"step {step} is {what}: export it as {' or '.join(modes)}, not {mode!r}")
    return mode or modes[0]


def export_checkpoint(run_dir: Path | str, step: int, dest: Path | str, *, mode: str | None = None,
                      datasets: list[str] = (), tags: list[str] = ()) -> Path:
    """Write the checkpoint at `step` into the new folder `dest` in `mode` (default: as trained;
    see export_modes), the card naming `datasets` and carrying `tags` (its Hub metadata).
    Returns `dest`. ValueError for a mode the checkpoint cannot take; FileExistsError for a
    non-empty `dest`; DiskFullError when the disk fills."""
    run_dir, dest = Path(run_dir).resolve(), Path(dest).expanduser().resolve()
    refuse_non_empty(dest)
    source = checkpoint_folder(run_dir, step)
    mode = checked_mode(run_dir, step, mode)
    what = f"the export of {checkpoint_dirname(step)}"
    if mode != "merged":  # a copy: its size is known (a merged model's is the base model's, found when written)
        require_free_space(dest.parent, export_size(run_dir, step), what, SPACE_FIX)

    def write(folder: Path) -> None:
        if mode == "merged":
            _save_merged(source, folder)
        else:
            shutil.copytree(source, folder, dirs_exist_ok=True,
                            ignore=lambda _d, names: [n for n in names if n in TRAINING_STATE])
        include_chat_template(folder, run_dir)
        card = model_card(run_dir, step, mode, datasets=datasets, tags=tags, report=_report(run_dir, folder))
        card.save(folder / "README.md")
    return write_export(dest, what, write)


def include_chat_template(folder: Path, run_dir: Path) -> None:
    """An SFT run's chat template written into the exported folder as the tokenizer's, unless
    the tokenizer saved there already carries it (a CPT run's tokenizer keeps its own, if any)."""
    chat_template_file = imported_name("transformers.utils", "CHAT_TEMPLATE_FILE")  # where v5 reads it
    template = RunPaths(run_dir).chat_template
    if template.is_file() and not (folder / chat_template_file).is_file():
        shutil.copy(template, folder / chat_template_file)


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
