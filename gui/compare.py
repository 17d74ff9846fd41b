"""Compare checkpoints and runs: the checkpoints table beside the domain gain / forgetting
scatter (selecting either selects the other), the runs' curves overlaid against tokens
seen, and their settings side by side. Everything comes from the store.

    window = CompareWindow(db, [run_id, ...])   # one run, or several
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QSplitter, QTabWidget, QVBoxLayout, QWidget

from cpt_studio.core.compare import comparison_rows, run_labels
from cpt_studio.core.store import get_run

from .compare_scatter import GainForgettingScatter
from .compare_table import CheckpointTable
from .config_table import ConfigTable
from .overlay import RunOverlay


class CompareWindow(QWidget):
    def __init__(self, db, run_ids: list[str], parent=None):
        super().__init__(parent)
        if not run_ids:
            raise ValueError("choose at least one run to compare")
        self.db, self.run_ids = db, list(run_ids)
        runs = {run_id: get_run(db, run_id) for run_id in self.run_ids}
        configs = {run_id: run["config"] for run_id, run in runs.items()}
        self.labels = run_labels(configs)
        self.rows = comparison_rows(db, self.run_ids)
        names = ", ".join(run["name"] for run in runs.values())
        self.setWindowTitle(f"CPT Studio — compare {names}")
        self.table = CheckpointTable(self.rows)
        self.scatter = GainForgettingScatter(self.rows)
        self.overlay = RunOverlay(db, self.run_ids, self.labels)
        self.config_table = ConfigTable(configs, {r: run["name"] for r, run in runs.items()})
        self.table.checkpoint_selected.connect(self._on_table_checkpoint_changed)
        self.scatter.checkpoint_selected.connect(self._on_scatter_checkpoint_changed)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._checkpoints_tab(), "Checkpoints")
        self.tabs.addTab(self.overlay, "Curves")
        self.tabs.addTab(self.config_table, "Settings")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)

    def _checkpoints_tab(self) -> QWidget:
        self.hint = hint = QLabel("No checkpoints yet: they appear at each checkpoint interval."
                      if not self.rows else
                      "★ recommended: the most domain gain within the run's forgetting target. "
                      "Click a point or a row to find it in the other.")
        hint.setStyleSheet("color:#555;")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.scatter)
        splitter.setSizes([300, 450])
        tab = QWidget()
        layout = QVBoxLayout(tab)
        layout.addWidget(hint)
        layout.addWidget(splitter, stretch=1)
        return tab

    def _on_table_checkpoint_changed(self, index: int) -> None:
        self.scatter.select_checkpoint(index)

    def _on_scatter_checkpoint_changed(self, index: int) -> None:
        self.table.select_checkpoint(index)
