"""Non-finite numbers (a NaN loss, an infinite perplexity) are shown as such by the store,
`cpt-studio show`, the monitor and the comparison view, never a crash; a non-finite step-0
baseline stops the run before training, with the cause."""

import json
import math

import pytest
from safetensors.torch import load_file, save_file

from cpt_studio.core import store
from cpt_studio.core.cli import main as cli_main
from cpt_studio.core.events import EventWriter
from cpt_studio.core.run_folder import list_checkpoints
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
from cpt_studio.core.testing.tiny_model import build_tiny_model

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def nan_run(tmp_path):
    """A run whose loss went NaN at step 1 and whose step-2 evaluation is infinite/NaN."""
    folder = tmp_path / "runs" / "nan-run"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": "nan-run", "model": {"name_or_path": "m"},
                                                    "corpus": {"replay_ratio": 0.05}}))
    (folder / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    out = EventWriter(folder / "events.jsonl")
    out.emit("status", 0, state="running", phase="training", total_steps=3, total_tokens=300)
    out.emit("eval", 0, baseline=True, tokens=0, domain_ppl=10.0, general_ppl=20.0, domain_gain=0.0, forgetting=0.0)
    out.emit("step", 1, loss=NAN, lr=1e-5, grad_norm=INF, tokens=100, tokens_per_second=50.0)
    out.emit("step", 2, loss=2.0, lr=1e-5, grad_norm=1.0, tokens=200, tokens_per_second=50.0)
    out.emit("eval", 2, baseline=False, tokens=200, domain_ppl=INF, general_ppl=NAN, domain_gain=-INF, forgetting=NAN)
    out.emit("checkpoint", 2, tokens=200, path="checkpoints/checkpoint-2")
    out.emit("status", 2, state="stopped", phase="done", exit_code=0, message="stopped")
    out.close()
    return folder


def test_the_store_keeps_nan_apart_from_not_measured(nan_run):
    db = store.open_store(":memory:")
    run_id = store.index_run(db, nan_run)
    loss = store.run_metrics(db, run_id, "loss")
    assert math.isnan(loss[0][2]) and loss[1][2] == 2.0
    last = store.run_evaluations(db, run_id)[-1]
    assert last["domain_ppl"] == INF and math.isnan(last["general_ppl"]) and math.isnan(last["forgetting"])
    (checkpoint,) = store.run_checkpoints(db, run_id)
    assert math.isnan(checkpoint["forgetting"]) and not checkpoint["recommended"]


def test_show_prints_nan_and_inf(nan_run, capsys):
    assert cli_main(["store", "rebuild", str(nan_run.parent)]) == 0
    assert cli_main(["show", str(nan_run)]) == 0
    out = capsys.readouterr().out
    assert "first nan, last 2.0000, min 2.0000 at step 2; 1 non-finite step(s)" in out
    assert "inf" in out.split("domain ")[1].splitlines()[0]
    *_, checkpoint_line, resume_line = out.splitlines()  # the run stopped: how it goes on, last
    assert checkpoint_line.split()[2:6] == ["inf", "nan", "-inf", "nan"]
    assert resume_line.startswith("resume ") and resume_line.endswith("goes on from step 2")


def test_the_monitor_and_the_comparison_view_show_them(qtbot, nan_run):
    from cpt_studio.gui.compare import CompareWindow
    from cpt_studio.gui.monitor import MonitorWindow

    monitor = MonitorWindow(nan_run, poll_ms=50)
    qtbot.addWidget(monitor)
    monitor.show()
    monitor.catch_up()
    qtbot.wait(100)
    assert monitor.series.last_step["step"] == 2
    monitor.grab()
    db = store.open_store(":memory:")
    window = CompareWindow(db, [store.index_run(db, nan_run)])
    qtbot.addWidget(window)
    window.show()
    window.grab()
    table = window.table
    texts = {c: table.item(0, table.columns.index(c)).text() for c in ("domain ppl", "general ppl", "forgetting")}
    assert texts == {"domain ppl": "inf", "general ppl": "nan", "forgetting": "nan"}


def test_a_non_finite_baseline_stops_the_run_before_training(tmp_path):
    from cpt_studio.core.training import train

    folder = build_tiny_model(tmp_path / "nan-model")
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if "layers.0.self_attn.q_proj" in k)
    weights[name][0, 0] = NAN
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config = tiny_run_config(folder, tmp_path / "data")
    config.corpus.replay_ratio, config.corpus.general = 0, []
    run_dir = create_run(config, tmp_path / "runs")
    with pytest.raises(ValueError, match=r"step-0 baseline is not finite \(domain perplexity nan\).*weights"):
        train(run_dir)
    assert not events_of(run_dir, "step") and not list_checkpoints(run_dir)
    assert math.isnan(events_of(run_dir, "eval")[0]["domain_ppl"])  # NaN loss: NaN, not inf
