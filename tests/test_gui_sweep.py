"""The sweep's GUI: Find settings (sweep)… checks the grid as it is typed, the sweep's tab draws
every setting with the front and, for a selected setting, "Use these settings…" fills the wizard;
the history shows the sweep's runs with their group (the session's finished tiny_sweep)."""

from PySide6.QtCore import Qt

from cpt_studio.core.config import RunConfig
from cpt_studio.core.sweep import load_sweep
from cpt_studio.core.testing.sweep_runs import STEPS
from cpt_studio.gui.history_table import COLUMNS
from cpt_studio.gui.main_window import MainWindow
from cpt_studio.gui.pages.replay_page import ReplayPage
from cpt_studio.gui.pages.schedule_page import SchedulePage


def test_the_sweep_tab_shows_the_front_and_use_fills_the_wizard(qtbot, tiny_sweep):
    window = MainWindow(runs_root=tiny_sweep.parent.parent / "runs")
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: len(window.runs) == 4, timeout=20_000)
    column = COLUMNS.index("sweep")
    assert {window.table.item(row, column).text() for row in range(4)} == {tiny_sweep.name}

    view = window.open_sweep(tiny_sweep)
    qtbot.waitUntil(lambda: len(view.points) == 4, timeout=20_000)
    front = [i for i, p in enumerate(view.points) if p.on_front]
    assert front and [view.table.item(i, 0).text() for i in range(4)] == ["★" if i in front else "" for i in range(4)]
    xs, _ys = view.scatter.front.getData()
    assert len(xs) == 2 * len(front) - 1  # a step line through the front's points
    assert len(view.scatter.labels) == 4 and view.scatter.labels[3].toPlainText() == "30% · 5e-3"
    assert "4 of 4 runs finished" in view.progress.text()
    assert not view.stop_button.isEnabled() and not view.continue_button.isEnabled()
    assert not view.use_button.isEnabled()  # nothing selected yet

    view.select_point(3)
    assert view.scatter.selected.getData()[0][0] == view.scatter.position(view.points[3])[0]
    qtbot.mouseClick(view.use_button, Qt.MouseButton.LeftButton)
    wizard = window.wizard
    qtbot.addWidget(wizard)
    replay = next(p for p in wizard.pages if isinstance(p, ReplayPage))
    schedule = next(p for p in wizard.pages if isinstance(p, SchedulePage))
    assert replay.replay.value() == 30.0 and float(schedule.peak.text()) == 5e-3
    base = RunConfig.from_dict(load_sweep(tiny_sweep)["base"])
    assert schedule.steps.value() == (base.schedule.max_steps or 0) != STEPS
    assert (wizard.config.corpus.replay_ratio, wizard.config.schedule.peak_lr) == (0.3, 5e-3)


def test_find_settings_from_the_wizard_checks_the_grid_as_it_is_typed(qtbot, tiny_sweep, tmp_path):
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    wizard = window.open_wizard(config=RunConfig.from_dict(load_sweep(tiny_sweep)["base"]))
    qtbot.addWidget(wizard)
    summary = wizard.pages[-1]
    summary.name.setText("from the summary")
    qtbot.mouseClick(summary.sweep_button, Qt.MouseButton.LeftButton)
    dialog = window.sweep_dialog
    assert dialog.config.name == "from the summary" and dialog.config is not wizard.config
    assert "9 runs (3 replay ratios × 3 learning rates) of 50 steps" in dialog.summary.text()
    dialog.replay.setText("0, 150")
    dialog.lrs.setText("1e-5, x")
    assert "'x' is not a number" in dialog.problems.text() and not dialog.start_button.isEnabled()
    dialog.lrs.setText("1e-5")
    assert "replay ratio 1.5 is outside" in dialog.problems.text()
    dialog.replay.setText("0 5")
    assert dialog.start_button.isEnabled() and dialog.summary.text().startswith("2 runs")
    dialog.reject()
