"""Compare checkpoints and runs: the checkpoints table (benchmark and probe scores included)
above the domain gain / forgetting scatter (selecting either selects the other) and the
per-task scores of the base model against each checkpoint; Export and Evaluate… for the
selected checkpoint; Interpolate… between the base model and it, the curve drawn on the
scatter (gui/interpolation_panel.py); why each run's checkpoint is recommended; the runs' curves overlaid
against tokens seen, and their settings side by side. Everything comes from the store.

    window = CompareWindow(db, [run_id, ...])   # one run, or several
    window.reload()                              # after an evaluation (done by itself)
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QSplitter, QTabWidget, QVBoxLayout, QWidget

from cpt_studio.core.compare import (
    comparison_notes,
    comparison_rows,
    outside_target,
    run_titles,
    task_charts,
    unique_names,
)
from cpt_studio.core.runs import eval_worker_pid
from cpt_studio.core.store import StoreRef, get_run, index_run

from .checkpoint_actions import CheckpointActions
from .compare_scatter import GainForgettingScatter
from .compare_scores import TaskScoresChart
from .compare_table import CheckpointTable
from .config_table import ConfigTable
from .geometry import restore_geometry, save_geometry
from .interpolation_panel import InterpolationPanel
from .overlay import RunOverlay
from .theme import styled

DEFAULT_SIZE = (1200, 680)
"""Width, height: on a 1366 x 768 screen, room for a task bar and the title bar."""
GEOMETRY_KEY = "compare_window"
"""Where a comparison shown as a window of its own keeps its size (gui/geometry.py); in the
main window's tab it takes the tab's."""


class CompareWindow(QWidget):
    scores_changed = Signal()
    """The view was rebuilt from the store after an evaluation ended."""

    def __init__(self, db, run_ids: list[str], parent=None):
        super().__init__(parent)
        if not run_ids:
            raise ValueError("choose at least one run to compare")
        self.store, self.run_ids = StoreRef(db), list(run_ids)
        """Where the store is: reload() opens it again (no connection is kept: store.default_db_path)."""
        self.runs = {run_id: get_run(db, run_id) for run_id in self.run_ids}
        configs = {run_id: run["config"] for run_id, run in self.runs.items()}
        self.names = unique_names({run_id: run["name"] for run_id, run in self.runs.items()})
        self.labels = run_titles(self.names, configs)
        """Each run's name (unique), then the settings that differ on a second line."""
        self.setWindowTitle(f"CPT Studio — compare {', '.join(self.names.values())}")
        self.overlay = RunOverlay(db, self.run_ids, self.labels)
        self.config_table = ConfigTable(configs, self.names)
        self._watch = QTimer(self, interval=1000, timeout=self._on_evaluation_changed)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._checkpoints_tab(db), "Checkpoints")
        self.tabs.addTab(self.overlay, "Curves")
        self.tabs.addTab(self.config_table, "Settings")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        self.resize(*DEFAULT_SIZE)
        self._geometry_restored = False

    def showEvent(self, event) -> None:
        if self.isWindow() and not self._geometry_restored:  # once, as the main window does at start
            self._geometry_restored = True
            restore_geometry(self, GEOMETRY_KEY)
        super().showEvent(event)

    def closeEvent(self, event) -> None:
        if self.isWindow():
            save_geometry(self, GEOMETRY_KEY)
        super().closeEvent(event)

    def _checkpoints_tab(self, db) -> QWidget:
        """The table, the actions on its selected row, the scatter and the per-task scores
        (rebuilt by reload())."""
        self.rows = comparison_rows(db, self.run_ids)
        self.table = CheckpointTable(self.rows)
        self.scatter = GainForgettingScatter(self.rows)
        self.scores = TaskScoresChart({r: task_charts(db, r) for r in self.run_ids}, self.labels)
        self.actions = CheckpointActions()
        self.actions.evaluation_started.connect(self._on_evaluation_started)
        if len(self.run_ids) == 1:  # Evaluate… before a row is chosen: the base and the last one
            self.actions.set_checkpoint(Path(self.run_ids[0]), None)
        self.table.checkpoint_selected.connect(self._on_table_checkpoint_changed)
        self.scatter.checkpoint_selected.connect(self._on_scatter_checkpoint_changed)
        self.hint = hint = QLabel("No checkpoints yet: they appear at each checkpoint interval."
                      if not self.rows else
                      "★ recommended: the most domain gain within the run's forgetting target, no "
                      "general benchmark dropping more than 3 points. Click a point or a row to find "
                      "it in the other; ▼ red: a general task drops more than 3 points.")
        styled(hint, "color:{muted};")
        hint.setWordWrap(True)
        self.reasons = QLabel(self._reasons(), wordWrap=True, objectName="reasons",
                              textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        notes = comparison_notes(db, self.run_ids)
        self.notes = QLabel("<br>".join(f"⚠ {html.escape(note)}" for note in notes), wordWrap=True,
                            objectName="comparison_notes", visible=bool(notes),
                            textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        styled(self.notes, "color:{warning};")
        self.interpolation = InterpolationPanel(self.scatter, self.rows)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.scatter, stretch=1)
        left_layout.addWidget(self.interpolation)
        charts = QSplitter(Qt.Orientation.Horizontal)
        charts.addWidget(left)
        charts.addWidget(self.scores)
        charts.setSizes([450, 550])
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table)
        top_layout.addWidget(self.actions)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(charts)
        splitter.setSizes([330, 450])
        tab = QWidget()
        layout = QVBoxLayout(tab)
        layout.addWidget(hint)
        layout.addWidget(self.notes)
        layout.addWidget(self.reasons)
        layout.addWidget(splitter, stretch=1)
        return tab

    def _reasons(self) -> str:
        """Why each run's checkpoint is recommended, in the store's words, or that none is
        within the run's forgetting target."""
        lines = []
        for run_id, run in self.runs.items():
            who = f"{html.escape(self.names[run_id])}: " if len(self.runs) > 1 else ""
            checkpoints = [row for row in self.rows if row["run_id"] == run_id]
            outside = outside_target(run["config"], checkpoints)
            if outside:
                lines.append(f"<b>{who}</b>⚠ {html.escape(outside)}")
            elif run.get("recommendation"):
                lines.append(f"<b>{who}recommended</b>: {html.escape(run['recommendation'])}")
        return "<br>".join(lines)

    def reload(self) -> None:
        """Index the runs again and rebuild the checkpoints tab (new scores, a new
        recommendation)."""
        with self.store.open() as db:
            for run_id in self.run_ids:
                index_run(db, run_id)
            self.runs = {run_id: get_run(db, run_id) for run_id in self.run_ids}
            tab = self._checkpoints_tab(db)
        current = self.tabs.currentIndex()
        old = self.tabs.widget(0)
        self.tabs.removeTab(0)
        self.tabs.insertTab(0, tab, "Checkpoints")
        self.tabs.setCurrentIndex(current)
        old.deleteLater()
        self.scores_changed.emit()

    def _on_evaluation_started(self, _run_dir: Path) -> None:
        self.reasons.setText(self.reasons.text() + ("<br>" if self.reasons.text() else "")
                             + "<i>evaluating in the background: the scores appear here when it "
                               "ends (progress in the run's monitor)</i>")
        self._watch.start()

    def _on_evaluation_changed(self) -> None:
        if all(eval_worker_pid(Path(run_id)) is None for run_id in self.run_ids):
            self._watch.stop()
            self.reload()

    def _on_table_checkpoint_changed(self, index: int) -> None:
        self.scatter.select_checkpoint(index)
        self._on_checkpoint_changed(index)

    def _on_checkpoint_changed(self, index: int) -> None:
        row = self.rows[index]
        self.actions.set_checkpoint(Path(row["run_id"]), row["step"])
        self.interpolation.set_checkpoint(Path(row["run_id"]), row["step"])

    def _on_scatter_checkpoint_changed(self, index: int) -> None:
        self.table.select_checkpoint(index)
        self._on_checkpoint_changed(index)
