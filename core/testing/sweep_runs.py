"""A real sweep of the tiny model, for the tests and the screenshots: 2 replay ratios x 2
learning rates, a few steps each, on corpora whose domain and general text share no word (so a
high learning rate without replay really forgets)."""

from __future__ import annotations

from pathlib import Path

from cpt_studio.core.sweep import create_sweep, plan_sweep, run_sweep
from cpt_studio.core.testing.corpus_files import write_distant_corpus
from cpt_studio.core.testing.run_helpers import tiny_run_config

REPLAY_RATIOS = (0.0, 0.3)
PEAK_LRS = (1e-3, 5e-3)
STEPS = 3


def sweep_base_config(model_dir: Path, data_dir: Path):
    """The tiny run's config on the distant corpus, one micro-batch a step."""
    config = tiny_run_config(model_dir, data_dir)
    write_distant_corpus(data_dir)
    config.name = "tiny sweep"
    config.batch.grad_accum = 1
    return config


def run_tiny_sweep(model_dir: Path, root: Path) -> Path:
    """Create the sweep under `root` (sweeps/, runs/, data/) and run it in this process, as the
    sweep's background process does (cpt_studio.core.sweep.run_sweep); returns its folder."""
    plan = plan_sweep(sweep_base_config(model_dir, root / "data"), REPLAY_RATIOS, PEAK_LRS, STEPS)
    folder = create_sweep(plan, runs_root=root / "runs", root=root / "sweeps")
    run_sweep(folder)
    return folder
