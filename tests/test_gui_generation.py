"""The run history and the generation window, offscreen: generation shows text for the base
model and a checkpoint of a tiny-model run; the history filters by state and model, renames,
deletes (with the folder when asked), and exports a checkpoint from the selected run."""

import json
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialog, QFileDialog, QInputDialog

from cpt_studio.core import store
from cpt_studio.core.config import CheckpointConfig, ModelConfig, RunConfig, ScheduleConfig
from cpt_studio.core.generate import read_generations
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.core.training import train
from cpt_studio.gui.checkpoint_actions import CheckpointActions
from cpt_studio.gui.export_options import ExportOptionsDialog
from cpt_studio.gui.generation import GenerationWindow
from cpt_studio.gui.main_window import MainWindow

PROMPT = "The patient received"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("gen")
    config = tiny_run_config(tiny_model_dir, root / "data",
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=6, warmup_ratio=0),
                             checkpoints=CheckpointConfig(interval=3, keep=3))
    config.eval.interval = 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPT_STUDIO_HOME", str(root / "home"))
        run_dir = create_run(config, root / "runs")
        assert train(run_dir) == "finished"
    return run_dir


def test_generation_window_shows_base_and_checkpoint_side_by_side(qtbot, trained_run):
    db = store.open_store()
    run_id = store.index_run(db, trained_run)
    window = GenerationWindow(db, run_id)
    qtbot.addWidget(window)
    window.show()
    items = [window.checkpoints.item(i) for i in range(window.checkpoints.count())]
    assert [item.text().split()[:2] for item in items] == [["step", "0"], ["step", "3"], ["step", "6"]]
    recommended = window.checkpoints.currentItem()  # highlighted: the export acts on it
    assert "(recommended)" in recommended.text() and window.checkpoint_actions.export_button.isEnabled()
    for item in items:
        item.setCheckState(Qt.CheckState.Checked if "step 6" in item.text() else Qt.CheckState.Unchecked)
    window.prompt.setPlainText(PROMPT)
    window.max_tokens.setValue(8)
    with qtbot.waitSignal(window.generate().finished, timeout=60_000):
        pass
    assert list(window.columns) == ["base", "step 6"]
    for text in window.columns.values():
        assert text.toPlainText().startswith(PROMPT) and len(text.toPlainText()) > len(PROMPT)
    assert read_generations(trained_run)[-1]["outputs"]["step 6"] in window.columns["step 6"].toPlainText()
    assert "generations.jsonl" in window.status.text()
    again = GenerationWindow(db, run_id)  # the last generation is kept with the run
    qtbot.addWidget(again)
    assert list(again.columns) == ["base", "step 6"] and again.prompt.toPlainText() == PROMPT


def test_sampling_settings_are_enabled_only_when_sampling(qtbot, trained_run):
    db = store.open_store()
    window = GenerationWindow(db, store.index_run(db, trained_run))
    qtbot.addWidget(window)
    assert not window.temperature.isEnabled() and window.settings().greedy
    window.sampled.setChecked(True)
    window.temperature.setValue(1.3)
    assert window.temperature.isEnabled() and window.settings().temperature == pytest.approx(1.3)
    assert not window.settings().greedy


def test_checkpoint_actions_export_to_the_chosen_folder_and_show_the_hooks(qtbot, trained_run, tmp_path,
                                                                           monkeypatch):
    actions = CheckpointActions()
    qtbot.addWidget(actions)
    assert not actions.export_button.isEnabled()
    assert not actions.evaluate_button.isEnabled() and "Select a checkpoint" in actions.evaluate_button.toolTip()
    assert not actions.sft_button.isEnabled() and "Select a checkpoint" in actions.sft_button.toolTip()
    actions.set_checkpoint(trained_run, 6)
    assert actions.evaluate_button.isEnabled() and "step 6 and the base model" in actions.evaluate_button.toolTip()
    with qtbot.waitSignal(actions.instruction_tune_requested, timeout=1000) as asked:
        actions.sft_button.click()  # the main window opens the SFT wizard on it
    assert asked.args == [trained_run, 6]
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "out"), ""))
    monkeypatch.setattr(ExportOptionsDialog, "exec", lambda _dialog: QDialog.DialogCode.Accepted)
    with qtbot.waitSignal(actions.export_finished, timeout=60_000) as done:
        actions.export_button.click()
    assert Path(done.args[0]) == tmp_path / "out"
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "README.md").exists()


def fake_run(root: Path, name: str, model: str, state: str) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(RunConfig(name=name, model=ModelConfig(model)).to_json())
    (run_dir / "events.jsonl").write_text(json.dumps(
        {"type": "status", "time": 1.0, "step": 0, "state": state, "phase": "done"}) + "\n")
    return run_dir


@pytest.fixture
def history(qtbot, tmp_path):
    root = tmp_path / "runs"
    runs = {"med": fake_run(root, "med", "/models/qwen-0.5b", "finished"),
            "law": fake_run(root, "law", "/models/llama-1b", "failed"),
            "fin": fake_run(root, "fin", "/models/qwen-1.5b", "finished")}
    window = MainWindow(runs_root=root)
    qtbot.addWidget(window)
    wait_for_history(window)
    return window, runs


def names(window) -> list[str]:
    """The names the table lists once the history load in flight (off the GUI thread) is shown."""
    wait_for_history(window)
    return sorted(window.table.item(r, 0).text() for r in range(window.table.rowCount()))


def wait_for_history(window, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while window.history.busy:
        assert time.monotonic() < deadline, "the run history did not load"
        QApplication.processEvents()
        time.sleep(0.005)


def test_history_filters_by_state_and_model(history):
    window, _ = history
    assert names(window) == ["fin", "law", "med"]
    window.state_filter.setCurrentIndex(window.state_filter.findData("failed"))
    assert names(window) == ["law"]
    window.state_filter.setCurrentIndex(0)
    window.model_filter.setText("QWEN")
    assert names(window) == ["fin", "med"]
    window.state_filter.setCurrentIndex(window.state_filter.findData("finished"))
    window.model_filter.setText("1.5b")
    assert names(window) == ["fin"]


def test_actions_follow_the_selection(history):
    window, runs = history
    assert not window.run_buttons["rename"].isEnabled() and not window.run_buttons["delete"].isEnabled()
    window.select_runs([str(runs["med"].resolve()), str(runs["law"].resolve())])
    assert window.run_buttons["delete"].isEnabled() and not window.run_buttons["generate"].isEnabled()
    window.select_runs([str(runs["med"].resolve())])
    assert window.run_buttons["generate"].isEnabled() and window.run_buttons["folder"].isEnabled()
    from cpt_studio.gui.main_window import HAS_COMPARE

    assert window.run_buttons["compare"].isEnabled() == HAS_COMPARE


def test_rename_keeps_the_name_across_refresh_and_reindexing(history, monkeypatch):
    window, runs = history
    window.select_runs([str(runs["law"].resolve())])
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("contracts v2", True))
    window.run_actions["rename"].trigger()
    assert names(window) == ["contracts v2", "fin", "med"]
    with store.connection() as db:
        store.index_run(db, runs["law"])
    window.refresh()
    assert "contracts v2" in names(window)


def test_delete_asks_then_forgets_the_run_and_deletes_its_folder_only_when_asked(history, monkeypatch):
    window, runs = history
    asked = []
    monkeypatch.setattr(window, "confirm_delete", lambda ids: asked.append(ids) or (False, True))
    window.select_runs([str(runs["fin"].resolve())])
    window.run_actions["delete"].trigger()
    assert asked and names(window) == ["fin", "law", "med"] and runs["fin"].exists()  # cancelled
    monitor = window.open_monitor(runs["fin"])
    window.select_runs([str(runs["fin"].resolve()), str(runs["law"].resolve())])
    compare = window.compare_selected()
    window.select_runs([str(runs["fin"].resolve())])
    monkeypatch.setattr(window, "confirm_delete", lambda ids: (True, True))
    window.run_actions["delete"].trigger()
    assert names(window) == ["law", "med"] and not runs["fin"].exists()
    assert window.tabs.indexOf(monitor) < 0 and window.tabs.indexOf(compare) < 0  # its tabs closed
    window.select_runs([str(runs["med"].resolve())])
    monkeypatch.setattr(window, "confirm_delete", lambda ids: (True, False))
    window.run_actions["delete"].trigger()
    window.refresh()  # the folder stays, and is not indexed again
    assert names(window) == ["law"] and runs["med"].exists()
    with store.connection() as db:
        assert [r["name"] for r in store.list_runs(db)] == ["law"]


def test_a_running_run_cannot_be_deleted(history, monkeypatch):
    import os

    from PySide6.QtWidgets import QMessageBox

    window, runs = history
    (runs["law"] / "worker.pid").write_text(str(os.getpid()))  # alive: this process
    warned = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warned.append(a[2]))
    monkeypatch.setattr(window, "confirm_delete", lambda ids: pytest.fail("asked to delete a running run"))
    window.select_runs([str(runs["law"].resolve())])
    window.run_actions["delete"].trigger()
    assert "stop it first" in warned[0] and runs["law"].exists() and "law" in names(window)


def test_compare_selected_opens_the_comparison_of_the_selected_runs(history, qtbot):
    from cpt_studio.gui.main_window import HAS_COMPARE

    window, runs = history
    window.select_runs([str(runs["med"].resolve()), str(runs["fin"].resolve())])
    opened = window.compare_selected()
    if not HAS_COMPARE:
        assert opened is None and "not installed" in window.run_buttons["compare"].toolTip()
        return
    from cpt_studio.gui.compare import CompareWindow

    qtbot.addWidget(opened)
    assert isinstance(opened, CompareWindow) and opened.isVisible()


def test_without_a_recommended_checkpoint_the_last_is_ticked_and_an_empty_answer_is_said(
        qtbot, trained_run, monkeypatch):
    db = store.open_store()
    run_id = store.index_run(db, trained_run)
    real = store.run_checkpoints
    monkeypatch.setattr(store, "run_checkpoints",  # as for an SFT run with no general set
                        lambda db, run_id: [{**c, "recommended": False} for c in real(db, run_id)])
    window = GenerationWindow(db, run_id)
    qtbot.addWidget(window)
    ticked = [window.checkpoints.item(i).text().split()[1] for i in range(window.checkpoints.count())
              if window.checkpoints.item(i).checkState() == Qt.CheckState.Checked]
    assert ticked == ["6"] and window.checkpoints.currentItem().text().startswith("step 6")
    window.chat = True
    window.show_outputs({"base": " \n ", "step 6": "Tacrolimus."})
    assert window.columns["base"].placeholderText().startswith("(an empty answer")
    assert window.columns["base"].toPlainText() == ""  # else the placeholder is not shown
    assert window.columns["step 6"].toPlainText() == "Tacrolimus."
