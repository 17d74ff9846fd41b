"""Run a worker that kills itself (SIGKILL, as the OOM killer or a power cut would) at a chosen
point: `python tests/fault_launcher.py POINT RUN_DIR [--resume]`.

The fault is injected here, in the test's launcher, by wrapping one function of the engine;
the engine itself has no fault hooks.
"""

from __future__ import annotations

import os
import signal
import sys


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inject(point: str) -> None:
    from cpt_studio.core import evaluation, store, tokenstore, training

    if point == "tokenizing":  # the store is written, not yet renamed into the cache
        tokenstore._rename_into_place = lambda tmp, final: die()
    elif point == "step":  # in the middle of optimizer step 15 (after its forward and backward)
        original_step = training.CPTTrainer.training_step

        def training_step(self, *args, **kwargs):
            loss = original_step(self, *args, **kwargs)
            if self.state.global_step == 14 and self.accelerator.sync_gradients:
                die()
            return loss
        training.CPTTrainer.training_step = training_step
    elif point == "checkpoint":  # checkpoint-20 written to the staging folder, not renamed
        from transformers import Trainer

        original_save = training.CPTTrainer._save_checkpoint

        def save(self, model, trial):
            if self.state.global_step == 20:
                Trainer._save_checkpoint(self, model, trial)
                die()
            return original_save(self, model, trial)
        training.CPTTrainer._save_checkpoint = save
    elif point == "evaluating":  # during the held-out evaluation of step 20
        original_eval, calls = evaluation.heldout_perplexity, []

        def heldout_perplexity(*args, **kwargs):
            calls.append(1)
            if len(calls) == 6:  # domain and general at steps 0 and 10, then step 20's general
                die()
            return original_eval(*args, **kwargs)
        evaluation.heldout_perplexity = heldout_perplexity
    elif point == "indexing":  # inside the store's transaction, after the old rows were deleted, as
        original_row, calls = store._run_row, []  # the run ends (the first indexing is at its start)

        def run_row(*args, **kwargs):
            row = original_row(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                die()
            return row
        store._run_row = run_row
    elif point != "none":
        raise SystemExit(f"unknown fault point {point!r}")


if __name__ == "__main__":
    inject(sys.argv[1])
    from cpt_studio.core.worker import main

    sys.exit(main(sys.argv[2:]))
