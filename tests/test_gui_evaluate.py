"""Evaluation in the desktop app, offscreen: the Evaluate dialog (probe file errors by line,
availability marks, the request it starts), the evaluation's progress and Stop in the
monitor, the live probe curve, the scores in the comparison view (columns with stderr, the
base row, the per-task chart, general drops flagged), and a real evaluation of a tiny-model
checkpoint started from the comparison view that puts its scores into the table."""

import json

import pytest
from probe_files import write_probes
from PySide6.QtCore import Qt

from cpt_studio.core import store
from cpt_studio.core.compare import comparison_rows, score_notes, task_charts
from cpt_studio.core.events import EventWriter
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.compare_runs import EVALUATED, evaluated_run
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.gui import evaluate_dialog
from cpt_studio.gui.evaluate_dialog import EvaluateDialog


@pytest.fixture
def db():
    return store.open_store(":memory:")


# -- headless: what the comparison view shows ---------------------------------------------

def test_the_base_model_gets_a_row_and_scores_carry_stderr_and_drop_warnings(db, tmp_path):
    run_id = evaluated_run(db, tmp_path / "runs")
    rows = comparison_rows(db, [run_id])
    assert [(r["step"], r["base"]) for r in rows] == [(0, True), (10, False), (20, False), (30, False), (40, False)]
    assert rows[0]["scores"] == {"medqa_4options acc": 0.31, "arc_challenge acc": 0.42, "probes_mc acc": 0.33}
    assert rows[0]["domain_gain"] is None and rows[0]["domain_ppl"] == pytest.approx(40.0)
    at_40 = rows[-1]["notes"]
    assert at_40["arc_challenge acc"]["warning"] == ("arc_challenge drops 5.0 points below the base "
                                                    "model (limit 3)")
    assert at_40["medqa_4options acc"] == {"stderr": 0.021}  # rises: no warning
    assert "warning" not in rows[2]["notes"]["arc_challenge acc"]  # 1 point at step 20
    assert score_notes([dict(zip(("step", "task", "kind", "metric", "value", "stderr"), s, strict=True),
                             primary=True, higher_is_better=True) for s in EVALUATED], limit=0.06) \
        .get(40, {}).get("arc_challenge acc", {}).get("warning") is None  # a 6-point limit


def test_task_charts_give_base_and_checkpoints_per_task_with_the_drops_flagged(db, tmp_path):
    run_id = evaluated_run(db, tmp_path / "runs")
    charts = {t["task"]: t for t in task_charts(db, run_id)}
    assert list(charts) == ["medqa_4options", "probes_mc", "arc_challenge"]  # domain, probe, general
    arc = charts["arc_challenge"]
    assert sorted(arc["scores"]) == [0, 20, 40] and arc["scores"][40] == {"value": 0.37, "stderr": 0.014, "samples": 50}
    assert list(arc["flagged"]) == [40] and arc["flagged"][40] == pytest.approx(0.05)
    assert charts["medqa_4options"]["flagged"] == {}


# -- the comparison view, offscreen --------------------------------------------------------

def test_compare_shows_score_columns_the_base_row_and_the_flagged_drop(qtbot, db, tmp_path):
    from cpt_studio.gui.compare import CompareWindow
    from cpt_studio.gui.compare_scores import DROP_COLOUR

    run_id = evaluated_run(db, tmp_path / "runs")
    window = CompareWindow(db, [run_id])
    qtbot.addWidget(window)
    window.show()
    table = window.table
    column = table.columns.index("arc_challenge acc")
    assert table.item(0, table.columns.index("mark")).text() == "base model"
    assert table.item(0, column).text() == "0.420 ± 0.014"
    assert table.item(4, column).text() == "▼ 0.370 ± 0.014" and "drops 5.0 points" in table.item(4, column).toolTip()
    assert [table.value(r, "probes_mc acc") for r in range(5)] == [0.33, None, 0.67, None, 0.83]
    bars = window.scores.bars[("arc_challenge", run_id)]
    assert list(bars.opts["height"]) == pytest.approx([42, 41, 37])
    assert list(bars.opts["brushes"]) == ["#9e9e9e", "#1f77b4", DROP_COLOUR]
    assert "more than the limit, at step 40" in window.scores.plots["arc_challenge"].titleLabel.text
    assert "recommended" in window.reasons.text() and "largest domain gain" in window.reasons.text()
    assert window.actions.evaluate_button.isEnabled() and not window.actions.export_button.isEnabled()
    table.selectRow(2)
    assert window.actions.evaluate_button.isEnabled() and window.actions.step == 20


# -- the dialog ---------------------------------------------------------------------------

@pytest.fixture
def run_dir(tmp_path, tiny_model_dir):
    """A run folder with two checkpoint folders (never trained: the dialog only lists them)."""
    run = create_run(tiny_run_config(tiny_model_dir, tmp_path / "data"), tmp_path / "runs")
    for step in (10, 20):
        (RunPaths(run).checkpoints / f"checkpoint-{step}").mkdir(parents=True)
    return run


@pytest.fixture
def quick_availability(monkeypatch):
    """The registry takes ~15 s to index: arc_easy's data is 'not cached', others are fine."""
    calls = []

    def availability(names, folders=()):
        calls.append(list(names))
        return ([n for n in names if n != "arc_easy"],
                {n: "its data is not in the local datasets cache and the Hub cannot be reached"
                 for n in names if n == "arc_easy"})
    monkeypatch.setattr(evaluate_dialog, "task_availability", availability)
    return calls


def test_a_bad_probe_file_is_shown_by_file_and_line_and_blocks_ok(qtbot, run_dir, tmp_path):
    bad = tmp_path / "probes.jsonl"
    bad.write_text('{"prompt": "Zorbia\'s capital", "answer": "Plenk"}\n'
                   '{"question": "Which?", "choices": ["a", "b"], "answer": 2}\nnot json\n')
    dialog = EvaluateDialog(run_dir, [20])
    qtbot.addWidget(dialog)
    assert dialog.ok_button.text() == "Choose tasks or a probe file" and not dialog.ok_button.isEnabled()
    dialog.probes.setText(str(bad))
    lines = dialog.probe_status.text().splitlines()
    assert lines[0].startswith(f"{bad}:2: 'answer' must be the index of the right choice")
    assert lines[1].startswith(f"{bad}:3: invalid JSON")
    assert dialog.ok_button.text() == "Fix the probe file" and not dialog.ok_button.isEnabled()
    dialog.probes.setText(str(write_probes(tmp_path / "fixed.jsonl")))
    assert dialog.probe_status.text() == "12 probes: 6 cloze, 6 multiple choice"
    assert dialog.ok_button.text() == "Evaluate 2 models" and dialog.ok_button.isEnabled()
    assert dialog.steps() == [0, 20]


def test_an_unavailable_task_is_marked_with_its_reason(qtbot, run_dir, quick_availability):
    dialog = EvaluateDialog(run_dir)
    qtbot.addWidget(dialog)
    assert dialog.steps() == [0, 20]  # base and the last checkpoint by default
    dialog.add_task("arc_easy", "general")
    dialog.add_task("hellaswag", "general")
    qtbot.waitUntil(lambda: None not in dialog.available.values(), timeout=5_000)
    texts = [dialog.tasks.item(i).text() for i in range(dialog.tasks.count())]
    assert texts == ["✗  arc_easy   (general)   unavailable", "✓  hellaswag   (general)"]
    assert "arc_easy: its data is not in the local datasets cache" in dialog.tasks.item(0).toolTip()
    dialog.tasks.item(0).setSelected(True)
    assert dialog.task_detail.text().startswith("arc_easy: its data is not in the local datasets cache")
    assert "unavailable, will be skipped: arc_easy" in dialog.availability_note.text()
    assert dialog.tasks.item(0).foreground().color().name() == "#c82333"


def test_a_preset_fills_domain_and_general_tasks_and_ok_starts_the_worker(qtbot, run_dir, quick_availability,
                                                                         monkeypatch):
    started = []
    monkeypatch.setattr(evaluate_dialog, "start_evaluation",
                        lambda run, request: started.append((run, request)))
    dialog = EvaluateDialog(run_dir, [10])
    qtbot.addWidget(dialog)
    dialog.presets.setCurrentText("medical")
    assert dialog.task_names("domain") == ["medqa_4options", "medmcqa", "pubmedqa"]
    assert dialog.task_names("general") == ["mmlu", "arc_challenge", "hellaswag", "truthfulqa_mc1"]
    qtbot.waitUntil(lambda: None not in dialog.available.values(), timeout=5_000)
    assert not dialog.availability_note.text()  # all available
    dialog.checkpoints.item(2).setCheckState(Qt.CheckState.Checked)  # checkpoint-20 too
    dialog.limit.setValue(5)
    dialog.fewshot.setValue(2)
    assert dialog.batch.text() == "auto" and dialog.request().batch_size == "auto"
    dialog.batch.setValue(8)
    assert dialog.ok_button.text() == "Evaluate 3 models"
    with qtbot.waitSignal(dialog.started):
        dialog.ok_button.click()
    [(run, request)] = started
    assert run == run_dir
    assert (request.checkpoints, request.limit, request.num_fewshot, request.batch_size) == ([0, 10, 20], 5, 2, 8)
    assert request.general_tasks[0] == "mmlu" and request.probes == ""


# -- the monitor --------------------------------------------------------------------------

def test_the_monitor_shows_the_evaluations_progress_and_stops_it(qtbot, run_dir, monkeypatch):
    from cpt_studio.gui import eval_progress
    from cpt_studio.gui.monitor import MonitorWindow

    paths = RunPaths(run_dir)
    paths.eval_dir.mkdir()
    progress = EventWriter(paths.eval_events)
    progress.emit("status", None, state="running", phase="checking", message="checking 3 task(s)")
    progress.emit("status", None, state="running", phase="evaluating", message="checkpoint-20: probes_mc",
                  done=3, total=6, eta_seconds=130, checkpoint="checkpoint-20", task="probes_mc",
                  unavailable={"arc_easy": "its data is not cached"})
    progress.close()
    monkeypatch.setattr(eval_progress, "eval_worker_pid", lambda run: 4242)  # the worker lives
    monitor = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(monitor)
    monitor.show()
    shown = monitor.evaluation
    qtbot.waitUntil(lambda: shown.isVisible(), timeout=5000)  # read in the background
    assert shown.isVisible() and shown.chip.text() == "evaluation: evaluating"
    assert "checkpoint-20: probes_mc   ETA 2 m" in shown.text.text()
    assert "unavailable, skipped: arc_easy" in shown.text.text() and shown.bar.text() == "3 / 6 tasks"
    shown.stop_button.click()
    assert paths.eval_stop.exists() and not shown.stop_button.isEnabled()
    monkeypatch.setattr(eval_progress, "eval_worker_pid", lambda run: None)  # died silently
    monitor._poll_state()
    qtbot.waitUntil(lambda: shown.chip.text() != "evaluation: evaluating", timeout=5000)
    assert shown.chip.text() == "evaluation: failed" and "without a final status" in shown.text.text()


def test_probes_scored_during_training_draw_a_live_curve(qtbot, tmp_path, tiny_model_dir):
    from cpt_studio.core.config import BenchmarkConfig
    from cpt_studio.gui.monitor import MonitorWindow

    probes = write_probes(tmp_path / "probes.jsonl")
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             benchmarks=BenchmarkConfig(probes=str(probes), probes_during_training=True))
    run = create_run(config, tmp_path / "runs")
    monitor = MonitorWindow(run)
    qtbot.addWidget(monitor)
    monitor.catch_up()
    assert "appears at each checkpoint, every 10 steps" in monitor.charts.plots["probes"].empty_label.textItem.toPlainText()
    out = EventWriter(RunPaths(run).events)
    for step in (1, 10, 20):
        out.emit("step", step, tokens=step * 100, loss=3.0, lr=1e-3, tokens_per_second=10.0)
    for step, value in ((0, 0.33), (10, 0.5), (20, 0.83)):
        out.emit("probe", step, task="probes_mc", metric="acc", value=value, primary=True, live=True)
        out.emit("probe", step, task="probes_mc", metric="acc_norm", value=value, primary=False, live=True)
    out.emit("probe", 20, task="probes_mc", metric="acc", value=0.1, primary=True)  # not live: not drawn
    out.close()
    monitor.catch_up()
    curve = monitor.charts.curves["probes_mc acc"]
    assert list(curve.xData) == [0, 10, 20] and list(curve.yData) == pytest.approx([33, 50, 83])
    assert "probes_mc acc_norm" not in monitor.charts.curves
    assert "probes_mc acc 50%" in monitor.charts.move_crosshair(10)  # the readout names the probes
    assert monitor.charts.plots["probes"].empty_label.textItem.toPlainText() == ""


# -- the real thing -----------------------------------------------------------------------

def test_evaluate_on_a_checkpoint_puts_the_scores_into_the_comparison_table(qtbot, tmp_path, tiny_model_dir):
    """Train the tiny model, open the comparison view, select checkpoint 20, Evaluate… with a
    probe file and limit 3: the detached worker scores base and checkpoint, and the table
    shows the scores lm-eval wrote."""
    from cpt_studio.core.training import train
    from cpt_studio.gui.compare import CompareWindow

    run = create_run(tiny_run_config(tiny_model_dir, tmp_path / "data"), tmp_path / "runs")
    assert train(run) == "finished"
    db = store.open_store()  # the store the evaluation worker updates
    run_id = store.index_run(db, run)
    window = CompareWindow(db, [run_id])
    qtbot.addWidget(window)
    window.show()
    steps = [r["step"] for r in window.rows]
    assert steps == [0, 10, 20] and window.table.scores == []  # 0: the guard's starting point
    window.table.selectRow(steps.index(20))
    window.actions.evaluate_button.click()
    dialog = window.actions.evaluate_dialog
    dialog.probes.setText(str(write_probes(tmp_path / "probes.jsonl")))
    dialog.limit.setValue(3)
    assert dialog.steps() == [0, 20] and dialog.ok_button.isEnabled()
    with qtbot.waitSignal(window.scores_changed, timeout=120_000):
        dialog.ok_button.click()
    log = RunPaths(run).eval_log.read_text() if RunPaths(run).eval_log.exists() else ""
    progress = [json.loads(line) for line in RunPaths(run).eval_events.read_text().splitlines()]
    assert progress[-1]["state"] == "finished", log[-3000:]
    events = [json.loads(line) for line in RunPaths(run).events.read_text().splitlines()]
    written = {(e["step"], f"{e['task']} {e['metric']}"): e["value"] for e in events if e["type"] == "probe"}
    table = window.table
    assert [table.value(r, "step") for r in range(table.rowCount())] == steps
    assert table.item(0, table.columns.index("mark")).text() == "base model"
    for column in ("probes_mc acc", "probes_cloze acc", "probes_cloze perplexity"):
        assert table.value(0, column) == written[(0, column)]
        assert table.value(2, column) == written[(20, column)]
        assert table.value(1, column) is None  # checkpoint 10 was not evaluated
    assert "±" in table.item(2, table.columns.index("probes_mc acc")).text()
    assert set(window.scores.plots) == {"probes_cloze", "probes_mc"}


def test_evaluate_from_the_run_history_opens_the_dialog_on_the_selected_run(qtbot, run_dir, quick_availability):
    from cpt_studio.gui.main_window import MainWindow

    events = EventWriter(RunPaths(run_dir).events)  # a run folder the history lists
    events.emit("status", 20, state="finished", phase="done")
    events.close()
    window = MainWindow(runs_root=run_dir.parent)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: not window.history.busy)  # the history loads off the GUI thread
    assert not window.run_buttons["evaluate"].isEnabled()  # nothing selected
    window.select_runs([str(run_dir.resolve())])
    assert window.run_buttons["evaluate"].isEnabled()
    dialog = window.open_evaluate()
    qtbot.addWidget(dialog)
    assert dialog.paths.root == run_dir.resolve() and dialog.steps() == [0, 20]
