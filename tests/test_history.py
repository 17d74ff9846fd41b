"""The run history in the main window, offscreen: method, replay, steps and live progress
columns; sorting by any column (numbers as numbers) keeping the selection; Delete says what
the folder holds and deletes it; Demo says what it does and how long it takes first."""

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from cpt_studio.core.events import EventWriter
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.testing.compare_runs import REPLAY_0, REPLAY_15, write_compare_run
from cpt_studio.gui.history_table import COLUMNS, PROGRESS_ROLE
from cpt_studio.gui.main_window import MainWindow

CHECKPOINT_BYTES = 300_000


@pytest.fixture
def runs_root(tmp_path):
    """Three finished runs whose replay ratios and steps sort differently as text, and one
    LoRA run stopped at step 10 of 40."""
    root = tmp_path / "runs"
    write_compare_run(root / "a", "replay-5", 0.05, 2e-5, REPLAY_0)               # 40 steps
    write_compare_run(root / "b", "replay-15", 0.15, 2e-5, REPLAY_15)             # 30 steps
    c = write_compare_run(root / "c", "replay-50", 0.5, 2e-5, [(100, 0.1, 0.01)])  # 100 steps
    (RunPaths(c).checkpoint(100) / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
    (RunPaths(c).checkpoint(100) / "model.safetensors").write_bytes(b"\0" * CHECKPOINT_BYTES)
    lora = root / "d"
    lora.mkdir()
    RunPaths(lora).config.write_text('{"name": "lora-8", "method": {"kind": "lora", "lora_rank": 8}, '
                                     '"corpus": {"replay_ratio": 0.1}, "schedule": {"max_steps": 40}}')
    out = EventWriter(RunPaths(lora).events)
    out.emit("status", 0, state="running", phase="training", total_steps=40)
    for step in range(1, 11):
        out.emit("step", step, tokens=step * 100, loss=3.0)
    out.close()
    return root


@pytest.fixture
def window(qtbot, runs_root, monkeypatch):
    from cpt_studio.core import store

    real = store.effective_state
    monkeypatch.setattr(store, "effective_state",  # the LoRA run's worker is alive
                        lambda run_dir, status: status if Path(run_dir).name == "d" else real(run_dir, status))
    window = MainWindow(runs_root=runs_root)
    qtbot.addWidget(window)
    window.resize(1300, 400)
    window.show()
    qtbot.waitUntil(lambda: window.table.rowCount() == 4, timeout=10_000)
    return window


def column(window, name: str) -> list[str]:
    j = COLUMNS.index(name)
    return [window.table.item(r, j).text() for r in range(window.table.rowCount())]


def by_name(window) -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in (dict(zip(COLUMNS, cells, strict=True)) for cells in zip(
        *(column(window, name) for name in COLUMNS), strict=True))}


def test_the_history_shows_method_replay_steps_and_progress(window):
    rows = by_name(window)
    assert {name: (r["method"], r["replay"], r["steps"], r["progress"]) for name, r in rows.items()} == {
        "replay-5": ("full", "5%", "40/40", "100%"), "replay-15": ("full", "15%", "30/30", "100%"),
        "replay-50": ("full", "50%", "100/100", "100%"), "lora-8": ("LoRA r=8", "10%", "10/40", "25%")}
    assert rows["lora-8"]["state"] == "running"
    progress = COLUMNS.index("progress")
    bars = [window.table.item(r, progress).data(PROGRESS_ROLE) for r in range(4)]
    assert sorted(b for b in bars if b is not None) == [0.25]  # a bar for the running run only
    window.grab().save("/tmp/shots-history/history.png")


@pytest.mark.parametrize("name, ascending", [
    ("replay", ["5%", "10%", "15%", "50%"]),               # as text: 10%, 15%, 50%, 5%
    ("steps", ["10/40", "30/30", "40/40", "100/100"]),      # as text: 10/40, 100/100, 30/30, 40/40
    ("method", ["LoRA r=8", "full", "full", "full"]),
])
def test_sorting_by_a_column_is_numeric_and_keeps_the_selection(qtbot, window, name, ascending):
    window.select_runs([str(Path(window.runs_root, "b").resolve())])
    assert [r["name"] for r in window.runs if r["id"] in window.selected_ids()] == ["replay-15"]
    window.table.horizontalHeader().setSortIndicator(COLUMNS.index(name), Qt.SortOrder.AscendingOrder)
    assert column(window, name) == ascending
    selected = window.selected_ids()
    assert [Path(r).name for r in selected] == ["b"]
    window.table.horizontalHeader().setSortIndicator(COLUMNS.index(name), Qt.SortOrder.DescendingOrder)
    assert column(window, name) == ascending[::-1] and window.selected_ids() == selected
    with qtbot.waitSignal(window.history.finished, timeout=10_000):
        window.refresh()  # a refresh refills the table: same order, same selection
    assert column(window, name) == ascending[::-1] and window.selected_ids() == selected


def test_delete_shows_the_folders_size_and_removes_it(qtbot, window, runs_root, monkeypatch):
    from cpt_studio.core.disk import folder_size

    folder = (runs_root / "c").resolve()
    window.select_runs([str(folder)])
    box = window.delete_box(window.selected_ids())
    size = folder_size(folder) / 1024
    assert box.checkBox().text() == f"Also delete the folder ({size:.1f} KiB, 1 checkpoint)"
    assert str(folder) in box.text()

    def agree(box):
        box.checkBox().setChecked(True)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "exec", agree)
    window._on_delete()
    assert "replay-50" not in column(window, "name")
    qtbot.waitUntil(lambda: not folder.exists(), timeout=10_000)
    with qtbot.waitSignal(window.history.finished, timeout=10_000):
        window.refresh()
    assert sorted(column(window, "name")) == ["lora-8", "replay-15", "replay-5"]


def test_demo_says_what_it_will_do_and_how_long_before_it_starts(window, monkeypatch):
    asked, started = [], []
    monkeypatch.setattr(window, "start_demo", lambda: started.append(True))
    monkeypatch.setattr(QMessageBox, "exec", lambda box: asked.append(box.text()) or answer)
    answer = QMessageBox.StandardButton.Cancel
    window.demo_button.click()
    assert started == [] and len(asked) == 1
    text = asked[0]
    for words in ("model: SmolLM2-135M", "135M parameters", "120 clinical-pharmacology documents (domain.jsonl)",
                  "5% general English replayed (general.jsonl)", "30 steps of 4 x 256 tokens",
                  "time on this machine: about ", "Start the demo?"):
        assert words in text
    assert window.demo_button.toolTip() in text
    answer = QMessageBox.StandardButton.Yes
    window.demo_button.click()
    assert started == [True]


def test_the_demo_estimate_follows_the_device():
    from cpt_studio.core.demo import describe_demo

    cpu, gpu = describe_demo(device="cpu"), describe_demo(device="cuda")
    assert "on 2 CPU cores" in cpu and "5 m 10 s of it training" in cpu and "about 6 m 40 s" in cpu
    assert "on a GPU" in gpu and "about 1 m 30 s" in gpu


def test_cpt_studio_demo_says_what_it_will_do_and_how_long_first(monkeypatch, capsys, tmp_path):
    """It opened with the demo model's import bars and no word of what was coming."""
    from cpt_studio.core import cli_runs, demo
    from cpt_studio.core.cli import main

    started = []
    monkeypatch.setattr(demo, "demo_model_path", lambda: tmp_path / "model")  # no import here
    monkeypatch.setattr(cli_runs, "launch", lambda run_dir, **kwargs: started.append(run_dir) or 0)
    assert main(["demo", "--steps", "6"]) == 0 and len(started) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "a short real continual pre-training run, followed here (Ctrl-C stops it):"
    assert out[3].startswith("• 6 steps of 4 x 256 tokens") and out[4].startswith("• time on this machine: about ")


def test_a_new_runs_longer_name_widens_its_column(qtbot, window, runs_root):
    """A tester's two runs both read "tiny-cp…" until the app restarted."""
    j = COLUMNS.index("name")
    before = window.table.columnWidth(j)
    write_compare_run(runs_root / "e", "a much longer name than any other run's name", 0.05, 2e-5, REPLAY_0)
    window.refresh()
    qtbot.waitUntil(lambda: window.table.rowCount() == 5, timeout=10_000)
    assert window.table.columnWidth(j) > before
    assert window.table.horizontalHeader().stretchLastSection() and COLUMNS[-1] != "sweep"


def test_the_state_cell_says_why_a_run_stopped(qapp):
    from cpt_studio.gui.history_table import history_items

    run = {"id": "x", "name": "pharma", "live_state": "stopped", "steps": 30, "total_steps": 100,
           "config": {}, "started": None, "tokens": 0, "domain_gain": None, "forgetting": None,
           "message": "stopped by the guard: forgetting 21.0% above 15.0% after 3 rollbacks"}
    state = history_items(run)[COLUMNS.index("state")]
    assert state.text() == "stopped" and state.toolTip() == run["message"]
    failed = history_items({**run, "live_state": "failed", "error": "CUDA out of memory (exit code 1)"})
    assert failed[COLUMNS.index("state")].toolTip() == "CUDA out of memory (exit code 1)"
