"""The monitor, offscreen, on run folders written by hand (cpt_studio.core.testing.monitor_runs):
a failure as one sentence with the traceback under Details, the window keeping its size and
Resume off when resuming cannot help; empty charts in the run's terms; markers for evaluations,
checkpoints, resumes and guard rollbacks; the readout; a checkpoint's marker opening the
comparison; the gradient-norm chart; log-axis ticks on short ranges; Stop asking first."""

import os

import numpy as np
import pyqtgraph as pg
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from cpt_studio.core.failure import NOT_RESUMABLE_TIP
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import write_pid
from cpt_studio.core.smoothing import smoothed_loss
from cpt_studio.core.testing.monitor_runs import (
    CHECKPOINT_EVERY,
    EVAL_EVERY,
    ROLLBACK_AT,
    ROLLED_BACK_TO,
    monitor_config,
    write_monitor_run,
)
from cpt_studio.gui.charts import ReadableAxis
from cpt_studio.gui.monitor import MonitorWindow

SIZE = (900, 640)

FAILURES = {
    "out of memory": (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True,
                      "Out of memory: lower the micro-batch (now 8) or the sequence length (now 2048)"),
    "configuration": (ValueError("the run cannot start:\n  method.target_modules: c_attn is not a module "
                                 "of this model (it has q_proj, v_proj); choose modules it has"), False,
                      "A setting stops this run: method.target_modules: c_attn is not a module"),
    "unknown": (KeyError("lm_head"), True, "KeyError: 'lm_head'"),
}


def open_monitor(qtbot, run_dir, size=SIZE) -> MonitorWindow:
    window = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    window.catch_up()
    return window


def live(run_dir):
    """The run's worker is this process (alive): the run reads as running."""
    write_pid(run_dir, os.getpid())
    return run_dir


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_failure_is_one_sentence_with_details_folded_and_the_window_keeps_its_size(qtbot, tmp_path, kind):
    error, resumable, sentence = FAILURES[kind]
    run_dir = write_monitor_run(tmp_path / "run", steps=30, end="running")
    window = open_monitor(qtbot, live(run_dir))
    qtbot.waitUntil(lambda: window._state == "running", timeout=5_000)
    before = window.size()
    RunPaths(run_dir).pid.unlink()
    write_monitor_run(tmp_path / "failed", steps=0, end="failed", error=error)  # the worker's record
    with open(RunPaths(run_dir).events, "a") as out:  # ... appended to the live run's events
        out.write(RunPaths(tmp_path / "failed").events.read_text().splitlines()[-1] + "\n")
    qtbot.waitUntil(window.banner.isVisible, timeout=10_000)
    assert sentence in window.banner.text() and "Traceback" not in window.banner.text()
    assert not window.details.isVisible() and "Traceback (most recent call last)" in window.details.toPlainText()
    assert type(error).__name__ in window.details.toPlainText()
    assert window.size() == before
    window.details_button.click()
    assert window.details.isVisible() and window.size() == before
    assert window.resume_button.isEnabled() is resumable
    assert (window.resume_button.toolTip() == NOT_RESUMABLE_TIP) is (not resumable)
    assert window.phase.text() == "error"


def test_empty_charts_say_why_in_this_runs_terms(qtbot, tmp_path):
    config = monitor_config("r", corpus={"domain": [{"path": "d.jsonl"}], "general": [], "replay_ratio": 0},
                            eval={"interval": 500})
    quiet = open_monitor(qtbot, live(write_monitor_run(tmp_path / "a", steps=0, end="running", config=config,
                                                       total_steps=2000)))
    said = quiet.charts.empty_messages()
    assert said["loss"] == said["grad_norm"] == "waiting for the first training step"
    assert said["forgetting"] == "no general corpus or general evaluation set: no forgetting curve"
    assert said["ppl"] == "step-0 baseline measured; evaluation every 500 steps: first point at step 500"
    qtbot.wait(50)  # ranged on the baseline: the message follows into the chart's middle
    plot = quiet.charts.plots["ppl"]
    assert plot.empty_label.isVisible() and plot.vb.sceneBoundingRect().contains(plot.empty_label.mapToScene(0, 0))
    assert not plot.getAxis("left").style["showValues"]  # no made-up scale on an empty chart
    general = open_monitor(qtbot, live(write_monitor_run(tmp_path / "b", steps=10, end="running", total_steps=2000,
                                                         config=monitor_config("r", eval={"interval": 500}))))
    assert general.charts.empty_messages()["forgetting"] == ("step-0 baseline measured (0% by definition); "
                                                            "evaluation every 500 steps: first point at step 500")
    label = general.charts.plots["forgetting"].empty_label
    assert label.isVisible() and "first point at step 500" in label.textItem.toPlainText()
    ended = open_monitor(qtbot, write_monitor_run(tmp_path / "c", steps=0, end="failed"))
    assert ended.charts.empty_messages()["loss"] == "the run ended before its first training step"
    assert ended.charts.empty_messages()["forgetting"] == "the run ended before its first evaluation after the baseline"
    # the baseline's own forgetting (0 at step 0) is not a curve: the chart still says what comes
    baseline_only = tmp_path / "e"
    write_monitor_run(baseline_only, steps=0, end="running", total_steps=2000, config=monitor_config("r"))
    with (baseline_only / "events.jsonl").open("a") as events:
        events.write('{"type": "eval", "time": 2.0, "step": 0, "forgetting": 0.0, "general_ppl": 10.0}\n')
    waiting = open_monitor(qtbot, live(baseline_only))
    assert waiting.charts.empty_messages()["forgetting"].startswith("step-0 baseline measured")
    nothing = tmp_path / "f"
    write_monitor_run(nothing, steps=0, end="failed")
    lines = (nothing / "events.jsonl").read_text().splitlines()
    (nothing / "events.jsonl").write_text("\n".join(line for line in lines if '"eval"' not in line) + "\n")
    assert open_monitor(qtbot, nothing).charts.empty_messages()["forgetting"] == "no evaluation was recorded"
    # a run whose events carry forgetting (an evaluation set the config names otherwise) shows its curve
    measured = open_monitor(qtbot, write_monitor_run(tmp_path / "d", steps=30, end="finished", config=config))
    assert measured.charts.empty_messages()["forgetting"] == ""


def marked(window, row: str) -> list[float]:
    return sorted(float(x) for x in window.charts.track.items[row].getData()[0])


def test_markers_for_evaluations_checkpoints_resumes_and_rollbacks_are_labelled(qtbot, tmp_path):
    window = open_monitor(qtbot, write_monitor_run(tmp_path / "run", steps=120))
    assert marked(window, "evaluation") == list(range(0, 121, EVAL_EVERY))
    assert marked(window, "checkpoint") == list(range(CHECKPOINT_EVERY, 121, CHECKPOINT_EVERY))
    assert marked(window, "resume") == [ROLLED_BACK_TO] and marked(window, "guard") == [ROLLBACK_AT]
    rows = dict((y, text) for y, text in window.charts.track_plot.getAxis("left")._tickLevels[0])
    assert [rows[i] for i in range(4)] == ["guard", "resume", "checkpoint", "evaluation"]
    first = window.charts.plots["loss"]
    labels = [item.label.textItem.toPlainText() for item in first.items
              if isinstance(item, pg.InfiniteLine) and getattr(item, "label", None) is not None]
    assert "guard: rollback at step 70" in labels and "resumed from step 40" in labels
    for plot in window.charts.plots.values():  # resumes and rollbacks cross every chart
        values = [item.value() for item in plot.items if isinstance(item, pg.InfiniteLine) and item.angle == 90]
        assert ROLLED_BACK_TO in values and ROLLBACK_AT in values
    window.x_axis.setCurrentText("tokens")
    assert marked(window, "checkpoint") == [s * 4096 for s in range(CHECKPOINT_EVERY, 121, CHECKPOINT_EVERY)]
    assert marked(window, "resume") == [ROLLED_BACK_TO * 4096]


def test_the_readout_gives_every_chart_at_the_step_with_wall_time_forgetting_and_smoothed_loss(qtbot, tmp_path):
    window = open_monitor(qtbot, write_monitor_run(tmp_path / "run", steps=120))
    steps = window.series.steps
    i = int(np.flatnonzero(steps["step"].values == 80)[0])
    smooth, _ = smoothed_loss(steps["loss"].values)
    text = window.charts.move_crosshair(80)
    assert text == window.readout.text()
    for part in ("step 80", f"tokens {80 * 4096:,}", "wall ", f"loss {steps['loss'].values[i]:.4f}",
                 f"smoothed {smooth[i]:.4f}", "lr 2e-05", f"grad norm {steps['grad_norm'].values[i]:.3g}",
                 "tokens/s", "41% MFU", "domain ppl", "general ppl", "(eval at step 80)", "forgetting +6.4%",
                 "checkpoint saved"):
        assert part in text, part
    assert np.allclose(window.charts.curves["ema"].yData, smooth)


def test_the_gradient_norm_chart_has_a_point_per_step_and_the_x_axis_is_drawn_once(qtbot, tmp_path):
    window = open_monitor(qtbot, write_monitor_run(tmp_path / "run", steps=50))
    curve = window.charts.curves["grad_norm"]
    assert len(curve.xData) == len(window.series.steps) == 50
    assert np.allclose(curve.yData, window.series.steps["grad_norm"].values)
    plots = list(window.charts.plots.values())
    assert [p.getAxis("bottom").isVisible() for p in plots] == [False] * (len(plots) - 1) + [True]


def test_each_chart_keeps_room_for_its_axis_labels_in_a_small_window(qtbot, tmp_path):
    """A tester's monitor at the default size: plots about 55 px tall, their y-axis numbers on top
    of one another and the 'clipped above 1' label cut; a small window scrolls the charts instead."""
    window = open_monitor(qtbot, write_monitor_run(tmp_path / "run", steps=50))
    qtbot.wait(50)
    heights = {name: plot.vb.height() for name, plot in window.charts.plots.items()}
    label = window.fontMetrics().lineSpacing()
    assert all(height >= 4 * label for height in heights.values()), heights


def test_clicking_a_checkpoint_marker_asks_for_that_checkpoint(qtbot, tmp_path):
    run_dir = write_monitor_run(tmp_path / "run", steps=120)
    window = open_monitor(qtbot, run_dir, size=(1200, 950))
    charts = window.charts
    qtbot.wait(100)  # laid out, the view ranged on the markers
    point = [p for p in charts.track.items["checkpoint"].points() if p.data() == 80][0]
    scene = charts.track_plot.vb.mapViewToScene(point.pos())
    at = charts.mapFromScene(scene)
    with qtbot.waitSignal(window.checkpoint_clicked, timeout=2_000) as clicked:
        QTest.mouseClick(charts.viewport(), Qt.MouseButton.LeftButton, pos=at)
    assert clicked.args == [str(run_dir), 80]


def test_a_checkpoint_marker_opens_the_comparison_on_that_checkpoint(qtbot, tmp_path):
    from cpt_studio.gui.main_window import MainWindow

    run_dir = write_monitor_run(tmp_path / "runs" / "run", steps=120)
    main = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(main)
    monitor = main.open_monitor(run_dir)
    qtbot.addWidget(monitor)
    monitor.checkpoint_clicked.emit(str(run_dir), 80)
    compare = main.tabs.currentWidget()  # the comparison opens as a tab of the main window
    assert compare is main.tabs.of_kind("compare")[(str(run_dir.resolve()),)]
    qtbot.addWidget(compare)
    row = compare.table.selected_checkpoint()
    assert row is not None and compare.rows[row]["step"] == 80


@pytest.mark.parametrize("low, high", [(9.8, 10.3), (100.2, 100.6), (1.001, 1.004), (20.0, 35.0)])
def test_a_short_log_axis_gets_at_least_two_readable_ticks(qtbot, low, high):
    axis = ReadableAxis("left")
    axis.setLogMode(False, True)
    labels = [(v, text) for _, values in axis.tickValues(np.log10(low), np.log10(high), 150)
              for v, text in zip(values, axis.tickStrings(values, 1, _), strict=True)][:10]
    major = axis.tickStrings(axis.tickValues(np.log10(low), np.log10(high), 150)[0][1], 1,
                             axis.tickValues(np.log10(low), np.log10(high), 150)[0][0])
    assert len(major) >= 2 and len(set(major)) == len(major)  # distinct, and each is what it marks
    for value, text in labels:
        assert low <= float(text) <= high and abs(float(text) - 10 ** value) <= 1e-9 * high


def test_the_monitors_perplexity_axis_is_readable_on_a_short_range(qtbot, tmp_path):
    window = open_monitor(qtbot, write_monitor_run(tmp_path / "run", steps=60))
    plot = window.charts.plots["ppl"]
    axis = plot.getAxis("left")
    assert isinstance(axis, ReadableAxis) and axis.logMode
    levels = axis.tickValues(np.log10(9.8), np.log10(10.3), 120)
    assert len(axis.tickStrings(levels[0][1], 1, levels[0][0])) >= 2


def test_stop_asks_first_and_cancel_does_not_stop(qtbot, tmp_path, monkeypatch):
    run_dir = live(write_monitor_run(tmp_path / "run", steps=30, end="running"))
    window = open_monitor(qtbot, run_dir)
    answers = [False]
    monkeypatch.setattr(window, "confirm_stop", lambda: answers.pop(0))
    window._on_stop_clicked()
    assert not RunPaths(run_dir).stop_request.exists() and not answers
    answers.append(True)
    window._on_stop_clicked()
    assert RunPaths(run_dir).stop_request.exists() and "stop requested" in window.progress_text.text()


def test_the_stop_question_offers_stop_and_save_or_cancel(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    window = open_monitor(qtbot, write_monitor_run(tmp_path / "run", steps=5, end="running"))
    seen = []

    def answer(box):
        seen.append(sorted(b.text().replace("&", "") for b in box.buttons()))
        box.button(QMessageBox.StandardButton.Cancel).click()
    monkeypatch.setattr(QMessageBox, "exec", answer)
    assert window.confirm_stop() is False and seen == [["Cancel", "Stop and save"]]


def test_a_stopped_run_says_stopped_with_no_eta(qtbot, tmp_path):
    running = open_monitor(qtbot, live(write_monitor_run(tmp_path / "a", steps=40, end="running")))
    assert "ETA" in running.progress_text.text()
    stopped = open_monitor(qtbot, write_monitor_run(tmp_path / "b", steps=40, end="stopped"))
    assert stopped.progress_text.text().startswith("stopped at step 40 / 80") and "ETA" not in stopped.progress_text.text()
    assert stopped.phase.text() == "stopped"
    qtbot.waitUntil(stopped.resume_button.isEnabled, timeout=5_000)


def test_a_run_the_guard_stopped_says_why_and_offers_no_resume(qtbot, tmp_path):
    """A tester's run stopped at 30/35 after 3 rollbacks: the monitor said only "stopped", and
    Resume trained the same steps and stopped again without a word."""
    from cpt_studio.core.events import EventWriter

    run_dir = write_monitor_run(tmp_path / "run", steps=30, end="running")
    out = EventWriter(RunPaths(run_dir).events)
    out.emit("status", 30, state="stopped", phase="done", exit_code=0, guard=True,
             message="guard: stopped at step 30: forgetting 16% > 15% after 3 rollback(s), the most allowed")
    out.close()
    window = open_monitor(qtbot, run_dir)
    qtbot.waitUntil(window.failure_box.isVisible, timeout=5_000)
    assert "Stopped by the forgetting guard:</b> stopped at step 30: forgetting 16% &gt; 15%" in window.banner.text()
    assert not window.resume_button.isEnabled() and "resuming would train the same steps" in window.resume_button.toolTip()


def test_the_lr_chart_draws_and_names_each_group_with_its_own_rate(qtbot, tmp_path):
    from cpt_studio.core.events import EventWriter

    run_dir = write_monitor_run(tmp_path / "run", steps=0, end="running")
    out = EventWriter(RunPaths(run_dir).events)
    for step in range(1, 21):
        lr = 2e-5 * min(1.0, step / 5)
        out.emit("step", step, tokens=step * 4096, loss=2.5, lr=lr, grad_norm=0.5,
                 tokens_per_second=5000.0, embedding_lr=0.1 * lr, new_token_lr=5 * lr)
    out.close()
    window = open_monitor(qtbot, run_dir)
    curves, lr = window.charts.curves, window.series.steps["lr"].values
    assert np.allclose(curves["lr"].yData, lr)
    assert np.allclose(curves["embedding_lr"].yData, 0.1 * lr)
    assert np.allclose(curves["new_token_lr"].yData, 5 * lr)
    title = window.charts.plots["lr"].titleLabel.text
    assert "other weights" in title and "embeddings and output layer" in title and "new token rows" in title
    assert "new token rows lr 0.0001" in window.charts.move_crosshair(10)

    plain = open_monitor(qtbot, write_monitor_run(tmp_path / "plain", steps=20))  # no groups: no names
    x, _ = plain.charts.curves["embedding_lr"].getData()
    assert x is None or len(x) == 0
    assert "other weights" not in plain.charts.plots["lr"].titleLabel.text


def test_the_header_shows_mfu_where_the_peak_is_known_and_nothing_where_not(qtbot, tmp_path):
    window = open_monitor(qtbot, write_monitor_run(tmp_path / "gpu", steps=30, end="running"))
    assert window.progress_text.text().endswith("tokens/s   41% MFU")
    window = open_monitor(qtbot, write_monitor_run(tmp_path / "cpu", steps=30, end="running", mfu=False))
    assert window.progress_text.text().endswith("tokens/s") and "MFU" not in window.charts.move_crosshair(20)
    from cpt_studio.core.estimate import mfu_words

    assert mfu_words(3.52) == "   352% MFU (over 100%: is system.peak_tflops the GPU's?)"  # a peak set too low


def test_a_title_set_after_the_charts_were_styled_is_in_the_themes_colour_on_dark(qtbot, tmp_path):
    from PySide6.QtWidgets import QApplication

    from cpt_studio.gui import theme

    theme.apply_theme(QApplication.instance(), "dark")
    try:
        window = open_monitor(qtbot, write_monitor_run(tmp_path / "run", steps=30, end="running"))
        title = window.charts.plots["lr"].titleLabel.text  # set at its first data, after the show
        assert f"color:{theme.DARK.text}" in title and "#333" not in title
    finally:
        theme.apply_theme(QApplication.instance(), "light")


@pytest.mark.parametrize("width", [1200, 1600])
def test_an_sft_runs_monitor_fits_a_1200_pixel_window(qtbot, tmp_path, width):
    """A tester's SFT monitor at 1200 px: the perplexity title named its held-out responses four
    times, every chart was wider than the window and cut at the right."""
    from PySide6.QtCore import QSize

    from cpt_studio.core.events import EventWriter
    from cpt_studio.gui.charts import BASELINES_NAME, SFT_DOMAIN

    config = monitor_config("tiny SFT", stage="sft", parent_run=str(tmp_path / "cpt"), parent_step=40,
                            benchmarks={"probes_during_training": True})
    run_dir = write_monitor_run(tmp_path / "run", steps=60, config=config)
    out = EventWriter(RunPaths(run_dir).events)  # knowledge probes scored during training
    for step in (0, 40):
        for task in ("drug_probes", "law_probes"):
            out.emit("probe", step, task=task, kind="probe", metric="acc", value=0.5, primary=True, live=True)
    out.close()
    window = open_monitor(qtbot, run_dir, size=(width, 800))
    assert window.minimumSizeHint().width() <= 1200
    charts = window.charts
    title = charts.plots["ppl"].titleLabel.text
    assert SFT_DOMAIN in title and BASELINES_NAME in title and len(charts.series.probes) == 2
    needed = charts.ci.effectiveSizeHint(Qt.SizeHint.MinimumSize).width()
    assert needed <= charts.viewport().width() < width  # no chart wider than its view, none cut
    assert charts.ci.geometry().width() == charts.viewport().width()  # and at 1600, they fill it
    assert window.size() == QSize(width, 800)
