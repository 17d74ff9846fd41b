"""The desktop app, offscreen: the wizard builds the expected RunConfig, refuses a bad corpus
by line, starts a real run whose charts equal its events, and re-attaches after closing."""

import json

import numpy as np
import pytest
from PySide6.QtWidgets import QWizard

from cpt_studio.core.config import RunConfig
from cpt_studio.core.runs import request_stop, worker_pid
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.testing.run_helpers import events_of, wait_for
from cpt_studio.gui.main_window import MainWindow
from cpt_studio.gui.monitor import MonitorWindow
from cpt_studio.gui.wizard import RunWizard


@pytest.fixture
def corpus(tmp_path):
    domain = write_jsonl(tmp_path / "domain.jsonl", make_documents(200, seed=1))
    general = write_jsonl(tmp_path / "general.jsonl", make_documents(100, seed=2), field="body")
    return domain, general


def fill_wizard(qtbot, wizard: RunWizard, model_dir, domain, general, steps=50):
    """The user's actions, page by page; returns after the summary page is shown."""
    model = wizard.currentPage()
    model.path.setText(str(model_dir))
    wizard.next()
    page = wizard.currentPage()
    page.domain.add(str(domain))
    page.general.add(str(general))
    page.text_field.setText("body")  # the general file's field; the domain file's is checked too
    wizard.next()
    return page


def test_wizard_turns_user_actions_into_the_expected_config(qtbot, tmp_path, tiny_model_dir, corpus):
    domain, general = corpus
    write_jsonl(domain, make_documents(200, seed=1), field="body")
    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    fill_wizard(qtbot, wizard, tiny_model_dir, domain, general)
    replay = wizard.currentPage()
    replay.replay.setValue(10)
    replay.micro.setValue(2)
    replay.accum.setValue(8)
    replay.seq_len.setValue(128)
    assert "16 sequences" in replay.per_step.text() and "1 or 2 general" in replay.per_step.text()
    wizard.next()
    schedule = wizard.currentPage()
    schedule.peak.setText("3e-5")
    schedule.decay.setCurrentText("linear")
    schedule.steps.setValue(40)
    assert schedule.curve.getData()[1][-1] < 3e-5 and len(schedule.curve.getData()[0]) == 40
    wizard.next()  # tokenizer page: left off
    wizard.next()
    method = wizard.currentPage()
    method.lora.setChecked(True)
    method.rank.setValue(16)
    method.alpha.setValue(32)
    method.ewc.setChecked(True)
    method.ewc_strength.setText("0.01")
    method.ewc_group.setCurrentText("mlp")
    wizard.next()
    evaluation = wizard.currentPage()
    evaluation.interval.setValue(10)
    evaluation.checkpoint_interval.setValue(20)
    evaluation.keep.setValue(2)
    evaluation.threshold.setValue(10)
    evaluation.remedy.setCurrentIndex(evaluation.remedy.findData("both"))
    wizard.next()
    summary = wizard.currentPage()
    summary.name.setText("pharma")
    assert summary.validatePage()
    got = json.loads(wizard.config.to_json())
    expected = json.loads(RunConfig().to_json())
    expected["name"] = "pharma"
    expected["model"]["name_or_path"] = str(tiny_model_dir)
    expected["corpus"].update(
        domain=[{"path": str(domain), "text_field": "body", "txt_mode": "file"}],
        general=[{"path": str(general), "text_field": "body", "txt_mode": "file"}], replay_ratio=0.1)
    expected["batch"] = {"micro_batch": 2, "grad_accum": 8, "seq_len": 128}
    expected["schedule"].update(peak_lr=3e-5, decay="linear", max_steps=40)
    expected["method"].update(kind="lora", lora_rank=16, lora_alpha=32)
    expected["eval"]["interval"] = 10
    expected["checkpoints"].update(interval=20, keep=2)
    expected["ewc"].update(enabled=True, strength=0.01, group="mlp")
    expected["guard"].update(threshold=0.1, remedy="both")
    assert got["schedule"] == expected["schedule"]
    assert got == expected
    assert "LoRA r=16" in summary.summary.toPlainText()
    assert "EWC strength 0.01 on mlp" in summary.summary.toPlainText()
    assert "roll back above 10.0% forgetting" in summary.summary.toPlainText()


def test_corpus_page_refuses_a_bad_corpus_naming_the_line(qtbot, tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": 17}\n')
    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    wizard.currentPage().path.setText(str(tiny_model_dir))
    wizard.next()
    page = wizard.currentPage()
    page.domain.add(str(bad))
    page.heldout.setValue(2)
    wizard.config.corpus.replay_ratio = 0  # no general corpus in this test
    wizard.next()
    assert wizard.currentPage() is page  # it did not advance
    assert "bad.jsonl line 3: field 'text' is int, not a string" in page.problems.text()
    assert page.problem_list.count() == 1
    page.skip_bad.setChecked(True)
    wizard.next()
    assert wizard.currentPage() is not page


def start_from_gui(qtbot, tmp_path, model_dir, corpus, steps):
    domain, general = corpus
    write_jsonl(general, make_documents(100, seed=2))
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    wizard = window.open_wizard()
    wizard.currentPage().path.setText(str(model_dir))
    wizard.next()
    page = wizard.currentPage()
    page.domain.add(str(domain))
    page.general.add(str(general))
    wizard.next()
    wizard.currentPage().seq_len.setValue(64)
    wizard.currentPage().accum.setValue(2)
    wizard.next()
    wizard.currentPage().peak.setText("1e-3")
    wizard.currentPage().steps.setValue(steps)
    for _ in range(3):
        wizard.next()
    wizard.currentPage().interval.setValue(5)
    wizard.currentPage().checkpoint_interval.setValue(10)
    wizard.next()
    wizard.button(QWizard.WizardButton.FinishButton).click()
    return window, wizard.run_dir


def test_a_run_started_from_the_gui_feeds_charts_equal_to_its_events(qtbot, tmp_path, tiny_model_dir, corpus):
    window, run_dir = start_from_gui(qtbot, tmp_path, tiny_model_dir, corpus, steps=20)
    monitor = window.monitors[str(run_dir.resolve())]
    def ended():
        return [e["state"] for e in events_of(run_dir, "status") if e.get("state") in ("finished", "failed")]
    qtbot.waitUntil(lambda: bool(ended()), timeout=120_000)
    assert ended() == ["finished"], (run_dir / "logs" / "worker.log").read_text()[-2000:]
    monitor.catch_up()
    steps, evals = events_of(run_dir, "step"), events_of(run_dir, "eval")
    def data(name):  # the curve's data as given (getData() is what is drawn: clipped, log10)
        curve = monitor.charts.curves[name]
        return curve.xData, curve.yData

    x, loss = data("loss")
    assert list(x) == [e["step"] for e in steps] and np.allclose(loss, [e["loss"] for e in steps])
    _, lr = data("lr")
    assert np.allclose(lr, [e["lr"] for e in steps])
    ex, domain_ppl = data("domain")
    assert list(ex) == [0, 5, 10, 15, 20] and np.allclose(domain_ppl, [e["domain_ppl"] for e in evals])
    _, forgetting = data("forgetting")
    assert np.allclose(forgetting, [100 * e["forgetting"] for e in evals])
    monitor._poll_state()
    assert monitor.phase.text() == "done" and not monitor.banner.isVisible()
    assert "step 20 / 20" in monitor.progress_text.text()
    assert "step 10" in monitor.charts.move_crosshair(10)


def test_closing_leaves_the_worker_running_and_a_new_window_reattaches(qtbot, tmp_path, tiny_model_dir, corpus):
    window, run_dir = start_from_gui(qtbot, tmp_path, tiny_model_dir, corpus, steps=100_000)
    qtbot.waitUntil(lambda: len(events_of(run_dir, "step")) > 3, timeout=120_000)
    for monitor in window.monitors.values():
        monitor.close()
    window.close()
    pid = worker_pid(run_dir)
    assert pid is not None  # closing the app did not stop the run
    try:
        again = MainWindow(runs_root=tmp_path / "runs")
        qtbot.addWidget(again)
        qtbot.waitUntil(lambda: not again.history.busy)  # the history loads off the GUI thread
        states = [again.table.item(r, 1).text() for r in range(again.table.rowCount())]
        assert states == ["running"]
        monitor = again.open_monitor(run_dir)
        monitor.catch_up()
        seen = len(monitor.series.steps)
        qtbot.waitUntil(lambda: bool(monitor.poll() >= 0 and len(monitor.series.steps) > seen + 3),
                        timeout=60_000)
        assert len(monitor.series.steps) > seen and monitor.stop_button.isEnabled()
    finally:
        request_stop(run_dir)
        wait_for(lambda: worker_pid(run_dir) is None, 60, "the worker to stop")
    assert events_of(run_dir, "status")[-1]["state"] == "stopped"


def test_a_dead_worker_shows_a_red_banner_with_the_log_tail(qtbot, tmp_path):
    from cpt_studio.core.config import ModelConfig
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.runs import create_run, start_worker

    domain = write_jsonl(tmp_path / "d.jsonl", make_documents(20))
    config = RunConfig(name="broken", model=ModelConfig(str(tmp_path / "no-such-model")))
    config.corpus.domain = [SourceSpec(str(domain))]
    config.corpus.replay_ratio = 0
    run_dir = create_run(config, tmp_path / "runs")
    monitor = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(monitor)
    monitor.show()
    assert start_worker(run_dir).wait(120) == 1
    qtbot.waitUntil(monitor.banner.isVisible, timeout=5_000)
    assert "Failed, exit code 1" in monitor.banner.text() and "no-such-model" in monitor.banner.text()


def test_repainting_the_charts_does_not_leak_references_to_none(qtbot, tmp_path):
    """PySide6 6.12.0 drops a reference to None at every Python paintEvent: on Python 3.11 a
    monitor left open then dies with 'deallocating None'. The pinned PySide6 must not."""
    import sys

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"name": "r"}')
    monitor = MonitorWindow(run_dir)
    qtbot.addWidget(monitor)
    monitor.show()
    qtbot.wait(50)
    before = sys.getrefcount(None)
    for _ in range(100):
        monitor.charts.repaint()
    assert sys.getrefcount(None) - before > -100  # 6.12.0 loses about 300 here


def test_long_curves_keep_spikes_and_show_every_point_when_zoomed(qtbot):
    import pyqtgraph as pg

    from cpt_studio.gui.charts import BINS_PER_PIXEL, downsampled_curve

    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    plot.resize(800, 300)
    plot.show()
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 1000)
    y[54_321] = 50.0  # a loss spike must stay visible
    curve = downsampled_curve(plot.getPlotItem(), x, y)
    qtbot.waitUntil(lambda: len(curve.getData()[0]) < len(x))  # laid out: pyqtgraph reduces it
    dx, dy = curve.getData()
    assert len(dx) <= 2 * BINS_PER_PIXEL * 800 and dy.max() == 50.0 and np.all(np.diff(dx) >= 0)
    plot.setXRange(54_000, 55_000, padding=0)  # zoomed in: every point of the view, no more
    qtbot.wait(10)
    zx, zy = curve.getData()
    assert zx[0] <= 54_000 and zx[-1] >= 55_000 and len(zx) <= 1003 and np.array_equal(zx, np.unique(zx))
    assert set(range(54_000, 55_001)) <= set(zx.astype(int)) and 50.0 in zy
