"""Chained runs: a run that starts from a checkpoint of an earlier run, its parent. Every stage
after the first is one: instruction tuning (stage 'sft', cpt_studio.core.sft_run) and a second
CPT stage on more data (continue_config). The chain is base model -> CPT -> (CPT ->) SFT.

    config = continue_config(cpt_run_dir, 200, taken=names)   # a second CPT stage, parent recorded
    run_dir = create_chained_run(config)   # starting weights resolved (a LoRA merged), preflight
    parent_of(run_dir)                     # ("/runs/pharma-...", 200): the one reader of the link
    lineage(run_id, runs_by_id)            # [root run, ..., this run], for the history

The link is RunConfig.parent_run / parent_step (written by sft_config and continue_config;
config files of earlier versions kept it under sft.*, which cpt_studio.core.config.upgraded moves).

The starting weights are exactly the parent checkpoint's (create_chained_run). A full checkpoint
is an HF model folder: model.name_or_path names it. A LoRA checkpoint is merged into its base
once, when the run is created, into the run's start_model/ folder, which model.name_or_path
then names; a LoRA child trains a new adapter on top of that merged model. Merging first,
rather than stacking a second adapter on the first: the child learns on exactly the function
the parent checkpoint computes (in fp32 the merge is a sum; logits agree to float rounding);
every later step (preflight, evaluation of the starting model, Generate, export, resume) reads
an ordinary model folder, as for any run; a merged export of LoRA + LoRA is the base with both
merged, and the child's folder stays usable if the parent run is deleted. The cost: one copy of
the model per child of a LoRA checkpoint.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .config import RunConfig, upgraded
from .run_folder import RunPaths, checkpoint_folder, read_json
from .runs import create_run, fresh_name


def parent_link(config: dict) -> tuple[str, int] | None:
    """(parent run folder, checkpoint step) a config dict (config.json as read, of any version)
    records, or None for a run that starts from a base model."""
    config = upgraded(config)
    if not config.get("parent_run") or config.get("parent_step") is None:
        return None
    return str(config["parent_run"]), int(config["parent_step"])


def parent_of(run_dir: Path | str) -> tuple[str, int] | None:
    """(parent run folder, checkpoint step) the run started from, or None: the chain's link
    that the history and the model card follow (base -> CPT -> SFT)."""
    return parent_link(read_json(RunPaths(Path(run_dir)).config))


def continue_config(parent_run: Path | str, step: int, taken: Iterable[str] = (),
                    name: str | None = None) -> RunConfig:
    """A second CPT stage ("Continue on more data"): the parent run's settings (its config.json,
    of any version) under a fresh name (default: "<parent's> continued", numbered if `taken`),
    starting from its checkpoint at `step` (parent recorded), the tokenizer not extended again
    (the checkpoint's is already the extended one). Change the corpus, then create_chained_run.

    The schedule is a fresh one over the new run's steps: warmup from 0 to the peak, then the
    decay, not the parent's schedule resumed at `step`. The optimizer state starts anew as well
    (a checkpoint keeps it only for resuming its own run), and a warmup is what a fresh AdamW
    needs before its moment estimates settle. FileNotFoundError when the run has no checkpoint
    at `step` (naming those it has)."""
    parent_dir = Path(parent_run).expanduser().resolve()
    checkpoint_folder(parent_dir, step)  # refuses a step that is not kept, naming those that are
    config = RunConfig.load(RunPaths(parent_dir).config)
    wanted = name or f"{config.name} continued"
    config.name = wanted if wanted not in set(taken) else fresh_name(wanted, taken)
    config.stage = "cpt"
    config.tokenizer.extend = False
    config.parent_run, config.parent_step = str(parent_dir), step
    return config


def create_chained_run(config: RunConfig, root: Path | None = None) -> Path:
    """A new run folder (cpt_studio.core.runs.create_run) for a config that may start from a
    parent checkpoint: an SFT run's examples are read and checked first (SftDataError with
    every bad record); model.name_or_path becomes the parent checkpoint's folder, or, for a
    LoRA checkpoint, start_model/ with the adapter merged into its base (see the module
    docstring); then the preflight checks (cpt_studio.core.preflight.require). Blocks while it
    merges: call it off a GUI thread. A run that cannot be created, or that preflight
    refuses, leaves no folder behind."""
    if config.stage == "sft":
        from .sft_data import read_examples

        read_examples(config.sft)
    config = copy.deepcopy(config)
    checkpoint = checkpoint_folder(config.parent_run, config.parent_step) if config.parent_run else None
    if checkpoint is not None:
        config.model.name_or_path = str(checkpoint)
    run_dir = create_run(config, root)
    try:
        if checkpoint is not None and _is_adapter(checkpoint):
            config.model.name_or_path = str(merge_start_model(checkpoint, RunPaths(run_dir).start_model))
            _write_config(RunPaths(run_dir), config)
        from .preflight import require

        require(config)  # the model, this machine, the general corpus: as for any run
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def _is_adapter(folder: Path) -> bool:
    from .generate import is_adapter

    return is_adapter(folder)


def merge_start_model(checkpoint: Path, dest: Path) -> Path:
    """The LoRA checkpoint merged into its base (as cpt_studio.core.generate loads it), with its
    tokenizer, saved as an HF model folder at `dest` (written beside it, then renamed)."""
    from .generate import load_for_generation

    model, tokenizer = load_for_generation(checkpoint)
    merged = model.merge_and_unload()
    staged = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    merged.save_pretrained(staged)
    tokenizer.save_pretrained(staged)
    os.replace(staged, dest)
    return dest


def _write_config(paths: RunPaths, config: RunConfig) -> None:
    staged = paths.config.with_suffix(".json.tmp")
    staged.write_text(config.to_json())
    os.replace(staged, paths.config)


def lineage(run_id: str, runs: dict[str, dict]) -> list[dict]:
    """The chain that ends with `run_id`, its first run first: each a row of `runs` (the store's
    runs by id, with parent_run and parent_step), or, for a parent the store lacks (forgotten,
    deleted), {"id", "name": its folder's name, "model": None, "parent_run": None}. A loop in
    the links (folders edited by hand) ends the chain where it repeats."""
    chain, seen, at = [], set(), run_id
    while at and at not in seen:
        seen.add(at)
        row = runs.get(at) or {"id": at, "name": Path(at).name, "model": None, "parent_run": None}
        chain.append(row)
        at = row.get("parent_run")
    return chain[::-1]


def chain_text(chain: list[dict]) -> str:
    """The chain in words, the base model first: "SmolLM2 → pharma · step 200 → pharma SFT"."""
    base = Path(chain[0].get("model") or "").name or "the base model"
    links = [f"{parent['name']} · step {child['parent_step']}"
             for parent, child in zip(chain[:-1], chain[1:], strict=True)]
    return " → ".join([base, *links, chain[-1]["name"]])
