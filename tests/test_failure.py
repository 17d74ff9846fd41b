"""The failure record (cpt_studio.core.failure): one sentence per kind of failure with what to
change, whether resuming can help, the same sentence from an old record or a worker's log, and
the CLI printing it; the smoothed loss (cpt_studio.core.smoothing) against a hand computation."""

import numpy as np
import pytest
import torch

from cpt_studio.core import store
from cpt_studio.core.cli import main as cli_main
from cpt_studio.core.config import ConfigError
from cpt_studio.core.corpus import CorpusError, Problem
from cpt_studio.core.failure import (
    CONFIGURATION,
    CORRUPT_CHECKPOINT,
    MISSING_FILE,
    OUT_OF_MEMORY,
    UNKNOWN,
    classify,
    failure_of,
)
from cpt_studio.core.smoothing import EmaState, smoothed_loss
from cpt_studio.core.testing.monitor_runs import monitor_config, write_monitor_run
from cpt_studio.core.testing.run_helpers import events_of

CONFIG = monitor_config("r")  # micro-batch 8, sequence length 2048


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001
        return caught


@pytest.mark.parametrize("exc, kind, resumable, words", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), OUT_OF_MEMORY, True,
     ["Out of memory", "micro-batch (now 8)", "sequence length (now 2048)"]),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"), OUT_OF_MEMORY, True, ["micro-batch"]),
    (ValueError("the run cannot start:\n  batch.seq_len: 8192 is above the model's context (2048); "
                "lower it\n  eval.interval: longer than the run"), CONFIGURATION, False,
     ["batch.seq_len: 8192 is above the model's context (2048)", "and 1 more", "new run from this run"]),
    (ConfigError(["config.json: batch.micro_batch: expected an integer"]), CONFIGURATION, False,
     ["batch.micro_batch: expected an integer"]),
    (ValueError("Target modules {'c_attn'} not found in the base model. Please check the target modules "
                "and try again."), CONFIGURATION, False, ["method.target_modules: {'c_attn'} not found"]),
    (CorpusError([Problem("/data/domain.jsonl", None, "does not exist; check the path")]), MISSING_FILE, True,
     ["/data/domain.jsonl is missing", "put it back"]),
    (FileNotFoundError(2, "No such file or directory", "/data/general.jsonl"), MISSING_FILE, True,
     ["/data/general.jsonl is missing"]),
    (RuntimeError("Error while deserializing header: HeaderTooLarge (checkpoints/checkpoint-500/"
                  "model.safetensors)"), CORRUPT_CHECKPOINT, True, ["checkpoint-500 cannot be read", "delete"]),
    (KeyError("lm_head"), UNKNOWN, True, ["KeyError: 'lm_head'", "Details"]),
])
def test_each_kind_of_failure_gets_its_sentence(exc, kind, resumable, words):
    failure = classify(raised(exc), CONFIG)
    assert (failure.kind, failure.resumable) == (kind, resumable)
    for word in words:
        assert word in failure.sentence
    assert "\n" not in failure.sentence


def test_an_out_of_memory_error_raised_from_another_is_still_out_of_memory():
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as oom:
            raise RuntimeError("the evaluation failed") from oom
    except RuntimeError as exc:
        assert classify(exc).kind == OUT_OF_MEMORY


def test_the_worker_records_the_sentence_and_the_readers_show_it(tmp_path, capsys):
    run_dir = write_monitor_run(tmp_path / "run", steps=5, end="failed",
                                error=torch.OutOfMemoryError("CUDA out of memory."))
    status = events_of(run_dir, "status")[-1]
    assert status["failure"] == OUT_OF_MEMORY and status["resumable"] is True
    assert status["message"].startswith("Out of memory: lower the micro-batch (now 8)")
    assert "Traceback (most recent call last)" in status["traceback"]
    assert failure_of(status).sentence == status["message"]
    store.index_run(store.open_store(), run_dir)
    assert cli_main(["show", str(run_dir)]) == 0
    assert status["message"] in capsys.readouterr().out


def test_an_old_record_and_a_silent_death_are_classified_from_their_text():
    old = {"state": "failed", "message": "ValueError: the run cannot start:",
           "traceback": "Traceback (most recent call last):\n  File \"w.py\", line 1, in <module>\n"
                        "ValueError: the run cannot start:\n  model.name_or_path: /m does not exist; "
                        "choose a model folder\n"}
    failure = failure_of(old)
    assert failure.kind == CONFIGURATION and not failure.resumable
    assert "model.name_or_path: /m does not exist" in failure.sentence
    died = {"state": "failed", "message": "the worker process ended without a final status"}
    log = "2026-12-01 INFO training\nTraceback (most recent call last):\n  File \"x\"\nMemoryError: out of memory\n"
    failure = failure_of(died, log)
    assert failure.kind == OUT_OF_MEMORY and "ended without a final status" in failure.sentence
    assert failure_of(died, "no error in here").sentence == died["message"]


# -- the smoothed loss ----------------------------------------------------------------------

def test_the_smoothed_loss_is_the_bias_corrected_ema_computed_by_hand():
    # β = 0.5: m1 = 0.5·2 = 1 -> 1 / (1 - 0.5) = 2; m2 = 0.5·1 + 0.5·4 = 2.5 -> 2.5 / 0.75 = 10/3;
    # a NaN is left out (the curve keeps 10/3); m3 = 0.5·2.5 + 0.5·1 = 1.75 -> 1.75 / 0.875 = 2
    smooth, state = smoothed_loss(np.array([2.0, 4.0, np.nan, 1.0]), beta=0.5)
    assert np.allclose(smooth, [2.0, 10 / 3, 10 / 3, 2.0]) and state == EmaState(1.75, 3)


def test_the_smoothed_loss_extends_as_steps_arrive_and_starts_at_the_first_value():
    loss = 3 + np.sin(np.arange(500) / 7.0)
    whole, _ = smoothed_loss(loss)
    first, state = smoothed_loss(loss[:123])
    rest, _ = smoothed_loss(loss[123:], state=state)
    assert np.allclose(np.concatenate([first, rest]), whole)
    assert whole[0] == loss[0]  # bias-corrected: not pulled towards zero
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        smoothed_loss(loss, beta=1.0)
