"""A sweep's tab: where it stands (which run, which step), each setting's domain gain against
forgetting with the Pareto front (gui/sweep_scatter.py), the settings table, Stop and Continue,
and "Use these settings…", which hands the base setup with the selected setting's replay ratio
and learning rate to the wizard (use_settings).

    view = SweepView(sweep_folder)          # reads it in the background every REFRESH_MS
    view.use_settings.connect(main_window.open_wizard_on)
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core.sweep import (
    SweepPoint,
    format_lr,
    load_sweep,
    request_sweep_stop,
    settings_config,
    start_sweep,
    sweep_process,
    sweep_progress,
    sweep_results,
)

from .jobs import BackgroundRefresh
from .sweep_scatter import SweepScatter
from .theme import styled

COLUMNS = ("front", "replay", "peak lr", "state", "step", "domain gain", "forgetting")
REFRESH_MS = 2000
HINT = ("One short run per setting, the same data and seed, one after another in the background. "
        "Each point is a setting (replay % · peak learning rate), coloured by replay ratio; ★ on the "
        "Pareto front (the dashed step line): no other setting has more domain gain with no more forgetting. "
        "Select a setting, then “Use these settings…” opens the wizard on the full setup with its "
        "replay ratio and learning rate.")


def load_points(folder: Path) -> tuple[list[SweepPoint], bool]:
    """(the sweep's settings, whether its process lives): off the GUI thread, with a store
    connection of its own, closed after (none is kept open between actions: store.default_db_path)."""
    from cpt_studio.core.store import connection

    with connection() as db:
        return sweep_results(folder, db), sweep_process(folder) is not None


def point_cells(point: SweepPoint) -> list[str]:
    measured = point.measured
    return ["★" if point.on_front else "", f"{point.setting.replay_ratio * 100:g}%",
            format_lr(point.setting.peak_lr), point.state, f"{point.step}/{point.total_steps}",
            f"{point.domain_gain:+.2%}" if measured else "", f"{point.forgetting:+.2%}" if measured else ""]


class SweepView(QWidget):
    use_settings = Signal(object)
    """A RunConfig: the sweep's base setup with the selected setting."""
    loaded = Signal()
    """The points were read again (the table and the chart show them)."""

    def __init__(self, folder: Path, parent=None):
        super().__init__(parent)
        self.folder = Path(folder)
        self.sweep = load_sweep(self.folder)
        self.points: list[SweepPoint] = []
        self.running = False
        self.setWindowTitle(f"CPT Studio — sweep {self.sweep['name']}")
        self.progress = QLabel("reading the sweep…", objectName="sweep_progress")
        hint = QLabel(HINT, wordWrap=True)
        styled(hint, "color:{muted};")
        self.scatter = SweepScatter()
        self.scatter.point_selected.connect(self._on_point_clicked)
        self.table = self._table()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.scatter)
        splitter.addWidget(self.table)
        splitter.setSizes([600, 480])
        layout = QVBoxLayout(self)
        layout.addWidget(self.progress)
        layout.addWidget(hint)
        layout.addWidget(splitter, stretch=1)
        layout.addLayout(self._buttons())
        self.refresher = BackgroundRefresh(load_points, lambda: (self.folder,), parent=self)
        self.refresher.finished.connect(self._on_loaded)
        self.refresher.failed.connect(lambda message: self.progress.setText(f"the sweep could not be read: {message}"))
        self._timer = QTimer(self, interval=REFRESH_MS, timeout=self.refresher.request)
        self._timer.start()
        self.refresher.request()

    def _table(self) -> QTableWidget:
        table = QTableWidget(0, len(COLUMNS), objectName="sweep_table")
        table.setHorizontalHeaderLabels(COLUMNS)
        table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setStretchLastSection(True)
        table.itemSelectionChanged.connect(self._on_row_selected)
        return table

    def _buttons(self) -> QHBoxLayout:
        self.stop_button = QPushButton("Stop sweep", clicked=self._on_stop,
                                       toolTip="The run in progress saves a checkpoint and stops; no further run starts")
        self.continue_button = QPushButton("Continue sweep", clicked=self._on_continue,
                                           toolTip="Run the settings not finished yet (finished runs are kept)")
        self.use_button = QPushButton("Use these settings…", clicked=self._on_use, enabled=False,
                                      toolTip="Open the wizard on the sweep's full setup with this setting's "
                                      "replay ratio and peak learning rate")
        row = QHBoxLayout()
        for button in (self.stop_button, self.continue_button):
            row.addWidget(button)
        row.addStretch(1)
        row.addWidget(self.use_button)
        return row

    def closeEvent(self, event) -> None:
        self._timer.stop()
        super().closeEvent(event)

    def _on_loaded(self, result: tuple[list[SweepPoint], bool]) -> None:
        self.points, self.running = result
        selected = self.selected_index()
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.points))
        for i, point in enumerate(self.points):
            for j, text in enumerate(point_cells(point)):
                item = QTableWidgetItem(text)
                if j and j != 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        if selected is not None:
            self.table.selectRow(selected)
        self.table.blockSignals(False)
        self.table.resizeColumnsToContents()
        self.scatter.set_points(self.points)
        state = "running" if self.running else "not running"
        self.progress.setText(f"<b>{sweep_progress(self.points)}</b> ({state}; {len(self.points)} settings of "
                              f"{self.sweep['steps']} steps each)")
        unfinished = any(p.state != "finished" for p in self.points)
        self.stop_button.setEnabled(self.running)
        self.continue_button.setEnabled(not self.running and unfinished)
        self._on_row_selected()
        self.loaded.emit()

    def selected_index(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def select_point(self, index: int) -> None:
        self.table.selectRow(index)

    def _on_row_selected(self) -> None:
        index = self.selected_index()
        self.scatter.select(index)
        self.use_button.setEnabled(index is not None and index < len(self.points))

    def _on_point_clicked(self, index: int) -> None:
        self.table.selectRow(index)

    def _on_use(self) -> None:
        index = self.selected_index()
        if index is not None:
            self.use_settings.emit(settings_config(self.sweep, self.points[index].setting))

    def _on_stop(self) -> None:
        request_sweep_stop(self.folder)
        self.progress.setText("stop requested: the run in progress saves a checkpoint, then the sweep ends")
        self.stop_button.setEnabled(False)

    def _on_continue(self) -> None:
        try:
            start_sweep(self.folder)
        except ValueError as exc:
            self.progress.setText(str(exc))
            return
        self.continue_button.setEnabled(False)
        self.refresher.restart()
