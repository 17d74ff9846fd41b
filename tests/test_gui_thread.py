"""The GUI thread does GUI work only, offscreen: the history's indexing and worker checks and
the monitor's reading of events.jsonl run in background jobs (a slow one leaves the event
loop turning), one at a time, stale results dropped, errors shown; guard markers are drawn
once each and follow the x-axis unit; curves are downsampled in one place only."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QMimeDatabase, QTimer

from cpt_studio.core import store
from cpt_studio.core.config import ModelConfig, RunConfig
from cpt_studio.core.events import EventWriter
from cpt_studio.core.paths import data_dir
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.gui import main_window, monitor
from cpt_studio.gui.charts import COLOURS
from cpt_studio.gui.main_window import MainWindow
from cpt_studio.gui.monitor import MonitorWindow

SLOW = 0.5
"""Seconds a slowed-down background function sleeps."""


def write_run(root: Path, name: str, model: str = "/models/qwen-0.5b", steps: int = 20,
              guard_at: tuple[int, ...] = (), state: str = "finished") -> Path:
    """A run folder: config.json, and a step event per step (tokens = 100 per step), an
    evaluation every 10 steps, a guard decision at each of `guard_at`, a final status."""
    run_dir = root / name
    (run_dir / "logs").mkdir(parents=True)
    RunPaths(run_dir).config.write_text(RunConfig(name=name, model=ModelConfig(model)).to_json())
    out = EventWriter(RunPaths(run_dir).events)
    out.emit("status", 0, state="running", phase="training", total_steps=steps)
    for step in range(1, steps + 1):
        append_step(out, step)
        if step in guard_at:
            out.emit("guard", step, reason="forgetting 16% > 15%", action="rollback", remedy="lower LR")
    out.emit("status", steps, state=state, phase="done")
    out.close()
    return run_dir


def append_step(out: EventWriter, step: int) -> None:
    out.emit("step", step, tokens=step * 100, loss=3.0 - step / 1000, lr=1e-3, tokens_per_second=10.0)
    if step % 10 == 0:
        out.emit("eval", step, tokens=step * 100, domain_ppl=20.0, general_ppl=15.0, forgetting=0.01)


class Ticks:
    """A 10 ms timer on the GUI thread: its count rises only while the event loop turns."""

    def __init__(self):
        self.count = 0
        self.timer = QTimer(interval=10, timeout=self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.count += 1


def slowed(fn, calls: list, ticks: Ticks | None = None):
    """fn, recording (thread, ticks during the call) and sleeping SLOW seconds first."""
    def wrapper(*args, **kwargs):
        before = ticks.count if ticks else 0
        time.sleep(SLOW)
        calls.append((threading.current_thread(), (ticks.count if ticks else 0) - before))
        return fn(*args, **kwargs)
    return wrapper


def wait_idle(qtbot, refresh) -> None:
    qtbot.waitUntil(lambda: not refresh.busy, timeout=30_000)


def names(window: MainWindow) -> list[str]:
    return sorted(window.table.item(r, 0).text() for r in range(window.table.rowCount()))


# -- the main window ------------------------------------------------------------------------

def test_a_file_dialog_on_the_data_folder_does_not_break_the_history(qtbot, tmp_path):
    """The reported bug ("The run history could not be refreshed: database disk image is
    malformed" until a restart). A Qt file dialog reads the first bytes of the files it lists
    (QMimeDatabase), which drops the app's SQLite locks on them; a worker then writing the store
    deleted its WAL under the app's open connection. Here: a comparison tab open, every file of the
    data folder sniffed as a dialog does (the store's own folder included), a run indexed by another
    process; the history and the comparison still read the store, new run included."""
    root = tmp_path / "runs"
    write_run(root, "med")
    window = MainWindow(runs_root=root)
    qtbot.addWidget(window)
    wait_idle(qtbot, window.history)
    window.select_runs([str((root / "med").resolve())])
    compare = window.compare_selected()
    assert store.default_db_path().parent != data_dir()  # its own folder, hidden from dialogs
    for name in ("law", "fin", "tax"):
        for path in sorted(data_dir().rglob("*")):
            if path.is_file():
                QMimeDatabase().mimeTypeForFile(str(path))  # what a file dialog's icon lookup does
        subprocess.run([sys.executable, "-c", "import sys; from cpt_studio.core import store\n"
                        "with store.connection() as db: store.index_run(db, sys.argv[1])",
                        str(write_run(root, name))], check=True)
        write_run(root, f"{name} 2")  # indexed by the app's refresh
        window.refresh()
        wait_idle(qtbot, window.history)
        assert name in names(window) and f"{name} 2" in names(window)
        assert not window.statusBar().currentMessage()
    compare.reload()  # opens the store again: no stale connection kept
    assert compare.rows is not None


def test_a_damaged_store_is_set_aside_and_the_history_rebuilt(qtbot, tmp_path):
    root = tmp_path / "runs"
    write_run(root, "med")
    path = store.default_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a database " * 100)
    window = MainWindow(runs_root=root)
    qtbot.addWidget(window)
    wait_idle(qtbot, window.history)
    assert names(window) == ["med"]
    assert "was damaged" in window.statusBar().currentMessage()
    assert path.with_name("cpt-studio.db.damaged-1").read_bytes().startswith(b"not a database")


def test_the_history_indexes_and_checks_workers_off_the_gui_thread(qtbot, tmp_path, monkeypatch):
    for name in ("med", "law"):
        write_run(tmp_path / "runs", name)
    ticks, indexed, checked = Ticks(), [], []
    monkeypatch.setattr(store, "index_run", slowed(store.index_run, indexed, ticks))
    monkeypatch.setattr(store, "effective_state", slowed(store.effective_state, checked))
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    assert window.table.rowCount() == 0  # the constructor did not index
    wait_idle(qtbot, window.history)
    assert names(window) == ["law", "med"]
    assert len(indexed) == 2 and len(checked) == 2
    gui = threading.main_thread()
    assert all(thread is not gui for thread, _ in indexed + checked)
    assert all(during > 0 for _, during in indexed)  # the 10 ms timer fired while each one slept


def test_timer_ticks_fold_into_the_load_in_flight_and_a_stale_load_is_dropped(qtbot, tmp_path, monkeypatch):
    write_run(tmp_path / "runs", "med", model="/models/qwen-0.5b")
    write_run(tmp_path / "runs", "law", model="/models/llama-1b")
    loads = []
    monkeypatch.setattr(main_window, "load_history", slowed(main_window.load_history, loads))
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    shown = []
    window.history.finished.connect(lambda runs: shown.append(sorted(r["name"] for r in runs)))
    for _ in range(5):
        window.history.request()  # timer ticks while the first load runs
    window.model_filter.setText("llama")  # makes the load in flight stale
    wait_idle(qtbot, window.history)
    assert len(loads) == 2  # the first load, and one more with the filter; no load per tick
    assert shown == [["law"]] and names(window) == ["law"]  # the unfiltered result never shown


def test_a_history_that_cannot_be_read_says_why_in_the_status_bar(qtbot, tmp_path):
    run_dir = write_run(tmp_path / "runs", "med")
    with open(RunPaths(run_dir).events, "a") as f:
        f.write("{not json\n")
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    wait_idle(qtbot, window.history)
    bad_line = len(RunPaths(run_dir).events.read_text().splitlines())
    message = window.statusBar().currentMessage()
    assert message.startswith("The run history could not be refreshed") and f"line {bad_line}:" in message


def test_deleting_runs_waits_for_the_indexing_in_flight(qtbot, tmp_path, monkeypatch):
    runs = {name: write_run(tmp_path / "runs", name) for name in ("med", "law")}
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    wait_idle(qtbot, window.history)
    indexing = threading.Event()
    index_run = slowed(store.index_run, [])
    monkeypatch.setattr(store, "index_run", lambda *args: indexing.set() or index_run(*args))
    write_run(tmp_path / "runs", "fin")  # a new folder: the next load indexes it, slowly
    window.refresh()
    qtbot.waitUntil(indexing.is_set)
    window.delete_runs([str(runs["law"].resolve())], with_folder=False)  # while "fin" is indexed
    assert names(window) == ["med"]  # gone from the table at once
    wait_idle(qtbot, window.history)
    assert names(window) == ["fin", "med"] and runs["law"].exists()
    with store.connection() as db:
        assert [r["name"] for r in store.list_runs(db)] == ["fin", "med"]


# -- the monitor ----------------------------------------------------------------------------

def test_the_monitor_reads_events_and_checks_the_worker_off_the_gui_thread(qtbot, tmp_path, monkeypatch):
    run_dir = write_run(tmp_path, "run", steps=30)
    ticks, reads, checks = Ticks(), [], []
    monkeypatch.setattr(monitor, "read_chunk", slowed(monitor.read_chunk, reads, ticks))
    monkeypatch.setattr(monitor, "effective_state", slowed(monitor.effective_state, checks))
    window = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(window)
    assert len(window.series.steps) == 0  # the constructor read nothing
    qtbot.waitUntil(lambda: len(window.series.steps) == 30 and window.phase.text() == "done"
                    and len(checks) > 0, timeout=30_000)
    gui = threading.main_thread()
    assert reads and all(thread is not gui and during > 0 for thread, during in reads)
    assert all(thread is not gui for thread, _ in checks)


def test_the_evaluations_progress_is_read_off_the_gui_thread(qtbot, tmp_path, monkeypatch):
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.run_folder import RunPaths
    from cpt_studio.gui import eval_progress

    run_dir = write_run(tmp_path, "run", steps=5)
    EventWriter(RunPaths(run_dir).eval_events).emit("status", None, state="running", phase="evaluating",
                                                    message="base: probes_mc", done=1, total=4)
    ticks, looked = Ticks(), []
    monkeypatch.setattr(eval_progress, "eval_worker_pid", slowed(lambda run: 4242, looked, ticks))
    window = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.evaluation.chip.text() == "evaluation: evaluating", timeout=30_000)
    gui = threading.main_thread()
    assert looked and all(thread is not gui and during > 0 for thread, during in looked)


def test_a_chunk_read_before_catch_up_is_not_added_twice(qtbot, tmp_path):
    run_dir = write_run(tmp_path, "run", steps=30)
    window = MonitorWindow(run_dir)  # starts a background read from offset 0
    qtbot.addWidget(window)
    window.catch_up()  # reads everything on this thread before that read's result arrives
    wait_idle(qtbot, window.reader)
    qtbot.wait(100)
    assert len(window.series.steps) == 30 and len(window.series.evals) == 3


def test_a_broken_events_file_is_shown_not_swallowed(qtbot, tmp_path):
    run_dir = write_run(tmp_path, "run", steps=5)
    with open(RunPaths(run_dir).events, "a") as f:
        f.write("{not json\n")
    window = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: not window.read_error.isHidden(), timeout=10_000)
    assert "Could not read the run folder" in window.read_error.text()
    assert "events.jsonl: a line after byte 0 is not a JSON event" in window.read_error.text()


def test_the_failure_banner_comes_from_the_background_worker_check(qtbot, tmp_path):
    run_dir = write_run(tmp_path, "run", steps=5, state="running")  # no worker: it died silently
    out = EventWriter(RunPaths(run_dir).events)  # it died while it evaluated
    out.emit("status", 5, state="running", phase="evaluating", total_steps=10)
    out.close()
    RunPaths(run_dir).log.write_text("Traceback (most recent call last):\nMemoryError: out of memory\n")
    window = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(window.banner.isVisible, timeout=10_000)
    assert "ended without a final status" in window.banner.text() and "MemoryError" in window.banner.text()
    assert "MemoryError" in window.log.toPlainText() and not window.stop_button.isEnabled()
    header = window.progress_text.text()  # its clock ran on and its chip said "evaluating" (a tester)
    qtbot.wait(1500)
    assert window.progress_text.text() == header and "ETA" not in header and window.phase.text() == "error"


# -- guard markers --------------------------------------------------------------------------

def guard_lines(plot: pg.PlotItem) -> list[pg.InfiniteLine]:
    return [item for item in plot.items if isinstance(item, pg.InfiniteLine) and item.angle == 90
            and item.pen.color().name() == COLOURS["guard"]]


def test_guard_markers_are_drawn_once_each_and_follow_the_x_axis_unit(qtbot, tmp_path):
    run_dir = write_run(tmp_path, "run", steps=30, guard_at=(12,), state="running")
    window = MonitorWindow(run_dir)
    qtbot.addWidget(window)
    window.catch_up()
    charts = window.charts
    assert list(charts.guard_markers) == [(12, window.series.guard[0].time)]
    out = EventWriter(RunPaths(run_dir).events)
    for step in range(31, 41):
        append_step(out, step)
        if step == 35:
            out.emit("guard", 35, reason="forgetting 17% > 15%", action="rollback")
        window.catch_up()  # a refresh per event
        charts.refresh()
    out.close()
    for plot in charts.plots.values():
        assert len(guard_lines(plot)) == 2
        assert sorted(line.value() for line in guard_lines(plot)) == [12, 35]
    window.x_axis.setCurrentText("tokens")
    for plot in charts.plots.values():
        assert sorted(line.value() for line in guard_lines(plot)) == [1200, 3500]
    window.x_axis.setCurrentText("steps")
    assert sorted(line.value() for line in guard_lines(charts.plots["loss"])) == [12, 35]
    assert len(guard_lines(charts.plots["forgetting"])) == 2


def test_a_guard_marker_in_tokens_lies_at_its_steps_tokens(qtbot, tmp_path):
    run_dir = write_run(tmp_path, "run", steps=0)
    out = EventWriter(RunPaths(run_dir).events)
    for step in (10, 20):  # steps logged every 10: the guard's step 15 lies between
        out.emit("step", step, tokens=step * 100, loss=3.0, lr=1e-3, tokens_per_second=10.0)
    out.emit("guard", 15, action="rollback")
    out.close()
    window = MonitorWindow(run_dir)
    qtbot.addWidget(window)
    window.catch_up()
    window.x_axis.setCurrentText("tokens")
    assert [line.value() for line in guard_lines(window.charts.plots["lr"])] == [1500]


# -- downsampling ---------------------------------------------------------------------------

def test_curves_get_full_data_and_only_pyqtgraph_reduces_what_is_drawn(qtbot, tmp_path):
    run_dir = write_run(tmp_path, "run", steps=0)
    out = EventWriter(RunPaths(run_dir).events)
    for step in range(1, 20_001):
        out.emit("step", step, tokens=step * 100, loss=3.0 + (step == 12_345) * 50, lr=1e-3,
                 tokens_per_second=10.0)
    out.close()
    window = MonitorWindow(run_dir)
    qtbot.addWidget(window)
    window.resize(600, 900)
    window.show()
    window.catch_up()
    steps = window.series.steps
    for name in ("loss", "ema", "lr", "speed"):
        curve = window.charts.curves[name]
        assert len(curve.xData) == len(steps) == 20_000  # not reduced before pyqtgraph
        assert curve.opts["autoDownsample"] and curve.opts["downsampleMethod"] == "peak"
        assert curve.opts["clipToView"]
    assert np.array_equal(window.charts.curves["loss"].yData, steps["loss"].values)
    qtbot.waitUntil(lambda: len(window.charts.curves["loss"].getData()[0]) < 20_000)
    x, y = window.charts.curves["loss"].getData()  # what is drawn: reduced once, spike kept
    assert y.max() == 53.0 and np.all(np.diff(x) >= 0)


def test_the_comparison_overlay_hands_its_curves_full_data_too(qtbot, tmp_path):
    from cpt_studio.core.testing.compare_runs import two_runs
    from cpt_studio.gui.overlay import RunOverlay

    db = store.open_store(":memory:")
    run_ids = two_runs(db, tmp_path / "runs")
    overlay = RunOverlay(db, run_ids, {r: Path(r).name for r in run_ids})
    qtbot.addWidget(overlay)
    for run_id in run_ids:
        curve = overlay.curves[("loss", run_id)]
        assert len(curve.xData) == len(store.run_metrics(db, run_id, "loss"))
        assert curve.opts["autoDownsample"] and curve.opts["clipToView"]


@pytest.fixture(autouse=True)
def _no_job_left_running(qtbot):
    """A test ends with no background load in flight (a QThread must not outlive its test)."""
    yield
    from cpt_studio.gui import jobs

    qtbot.waitUntil(lambda: jobs.in_flight() == 0, timeout=30_000)
