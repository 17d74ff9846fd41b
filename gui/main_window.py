"""The main window: the runs list from the store, New run, Demo, and a monitor per run.

On start it indexes every run folder (so runs started while the app was closed appear) and
re-attaches: a running run's monitor shows its live curves whatever started it.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core import store
from core.runs import run_state, runs_dir, start_worker

from .jobs import Job
from .monitor import MonitorWindow
from .wizard import RunWizard

COLUMNS = ("name", "state", "base model", "started", "tokens", "domain gain", "forgetting")


class MainWindow(QMainWindow):
    def __init__(self, runs_root: Path | None = None):
        super().__init__()
        self.runs_root = Path(runs_root or runs_dir())
        self.db = store.open_store()
        self.monitors: dict[str, MonitorWindow] = {}
        self.settings = QSettings("cpt-studio", "cpt-studio")
        self.setWindowTitle("CPT Studio")
        self.table = QTableWidget(0, len(COLUMNS), objectName="runs")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(self._on_run_double_clicked)
        buttons = QHBoxLayout()
        self.new_button = QPushButton("New run…", clicked=self.open_wizard)
        self.demo_button = QPushButton("Demo", clicked=self.start_demo)
        for widget in (self.new_button, self.demo_button, QPushButton("Refresh", clicked=self.refresh)):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(buttons)
        layout.addWidget(self.table)
        self.setCentralWidget(central)
        self._menus()
        self.resize(1000, 500)
        self.refresh()
        self._timer = QTimer(self, interval=3000, timeout=self.refresh)
        self._timer.start()

    def _menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        menu.addAction(QAction("&New run…", self, shortcut=QKeySequence.StandardKey.New, triggered=self.open_wizard))
        menu.addAction(QAction("&Open run folder…", self, shortcut=QKeySequence.StandardKey.Open,
                               triggered=self._on_open_folder))
        menu.addAction(QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close))

    # --- runs ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Index every run folder, then list the runs with their live state."""
        for folder in store.run_folders(self.runs_root) if self.runs_root.exists() else []:
            row = self.db["runs"].get(str(folder.resolve())) if self._known(folder) else None
            if row is None or row["state"] in (None, "running", "created"):
                store.index_run(self.db, folder)
        self.runs = store.list_runs(self.db)
        self.table.setRowCount(len(self.runs))
        for i, run in enumerate(self.runs):
            state = run_state(Path(run["id"])).get("state", run["state"])
            cells = (run["name"], state, Path(run["model"] or "").name or run["model"],
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(run["started"])) if run["started"] else "",
                     f"{run['tokens'] or 0:,}", _percent(run["domain_gain"]), _percent(run["forgetting"]))
            for j, text in enumerate(cells):
                item = QTableWidgetItem(str(text))
                item.setData(Qt.ItemDataRole.UserRole, run["id"])
                self.table.setItem(i, j, item)

    def _known(self, folder: Path) -> bool:
        return self.db["runs"].count_where("id = ?", [str(folder.resolve())]) > 0

    def open_monitor(self, run_dir: Path) -> MonitorWindow:
        key = str(Path(run_dir).resolve())
        if key not in self.monitors or not self.monitors[key].isVisible():
            self.monitors[key] = MonitorWindow(Path(run_dir))
            self.monitors[key].resize(1200, 950)
        self.monitors[key].show()
        self.monitors[key].raise_()
        recent = [key] + [r for r in self.settings.value("recent_runs", [], list) if r != key]
        self.settings.setValue("recent_runs", recent[:10])
        return self.monitors[key]

    def _on_run_double_clicked(self, row: int, _column: int) -> None:
        self.open_monitor(Path(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)))

    def _on_open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder", str(self.runs_root))
        if folder:
            self.open_monitor(Path(folder))

    # --- new runs -----------------------------------------------------------------------
    def open_wizard(self) -> RunWizard:
        self.wizard = RunWizard(runs_root=self.runs_root, parent=self)
        self.wizard.run_started.connect(self._on_run_started)
        self.wizard.show()
        return self.wizard

    def _on_run_started(self, run_dir: Path) -> None:
        self.refresh()
        self.open_monitor(run_dir)

    def start_demo(self) -> Job:
        """The demo run (imports the demo model first if needed, off the GUI thread)."""
        from core.demo import demo_config
        from core.runs import create_run

        self.demo_button.setEnabled(False)
        self.demo_button.setText("Preparing the demo model…")
        job = Job(lambda: create_run(demo_config(), self.runs_root))
        job.finished.connect(self._on_demo_created)
        job.failed.connect(self._on_demo_failed)
        self._demo_job = job.start()
        return job

    def _on_demo_created(self, run_dir: Path) -> None:
        start_worker(run_dir, detach=True)
        self.demo_button.setText("Demo")
        self.demo_button.setEnabled(True)
        self._on_run_started(run_dir)

    def _on_demo_failed(self, message: str) -> None:
        self.demo_button.setText("Demo")
        self.demo_button.setEnabled(True)
        QMessageBox.warning(self, "Demo", f"The demo could not start:\n{message}")


def _percent(value) -> str:
    return "" if value is None else f"{value:+.1%}"
