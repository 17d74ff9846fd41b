"""The main window: the run history from the store, New run, Demo, and a tab per monitor,
comparison and generation opened from it (gui/tabs.py).

On start it indexes every run folder (so runs started while the app was closed appear) and
re-attaches: a running run's monitor shows its live curves whatever started it. The history
filters by model and state; the selected runs can be monitored, compared, generated with,
exported, renamed, deleted, or opened in the file manager (buttons and a context menu).

The history refreshes every REFRESH_MS off the GUI thread (`load_history` in a
BackgroundRefresh: indexing, the store query, the worker-process checks); the GUI thread
only fills the table with the result.

Quit (File ▸ Quit, Ctrl+Q, or closing the window) ends the app: open tabs close, running runs
keep training (they are detached worker processes) and the app says so first. The window's
size and position are restored at the next start (gui/geometry.py).
"""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core import store
from cpt_studio.core.chain import continue_config, lineage
from cpt_studio.core.config import ConfigError, RunConfig
from cpt_studio.core.demo import describe_demo
from cpt_studio.core.estimate import format_bytes
from cpt_studio.core.run_folder import RunPaths, disk_usage
from cpt_studio.core.runs import clone_config, runs_dir, start_worker, worker_pid
from cpt_studio.core.sft_run import default_checkpoint, sft_config

from . import recent
from .checkpoint_actions import export_with_dialog
from .generation import GenerationWindow
from .geometry import restore_geometry, save_geometry
from .help import TourWindow, show_about
from .history_table import COLUMNS, ProgressDelegate, history_items
from .jobs import BackgroundRefresh, Job
from .monitor import MonitorWindow
from .preferences import PreferencesDialog, settings
from .sft_wizard import SftWizard
from .tabs import WindowTabs
from .wizard import RunWizard

STATES = ("created", "running", "finished", "stopped", "failed")
HAS_COMPARE = importlib.util.find_spec("cpt_studio.gui.compare") is not None
MENU_ONLY = ("continue", "parent", "launch")
"""Run actions in the context menu and the Runs menu only (the row of buttons stays short)."""
REFRESH_MS = 3000
"""How often the history re-reads the run folders (new runs, the state of running ones)."""


class MainWindow(QMainWindow):
    closed = Signal()
    """The user quit (the app's entry point ends the process on it)."""

    def __init__(self, runs_root: Path | None = None):
        super().__init__()
        self.runs_root = Path(runs_root or runs_dir())
        self.runs: list[dict] = []
        """The runs the table shows, as load_history returned them."""
        self._columns_sized = False
        self._to_forget: dict[str, bool] = {}
        """Runs to remove from the history at the next refresh: id -> also delete the folder."""
        self.history = BackgroundRefresh(load_history, self._history_arguments, parent=self)
        self.history.finished.connect(self._on_history_loaded)
        self.history.failed.connect(self._on_history_failed)
        self.settings = settings()
        self.setWindowTitle("CPT Studio")
        self.table = QTableWidget(0, len(COLUMNS), objectName="runs")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.ExtendedSelection)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_context_menu)
        self.table.itemSelectionChanged.connect(self._on_selection_changed)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(False)
        self.table.setSortingEnabled(True)  # by any column; numbers as numbers (HistoryCell)
        self.table.sortByColumn(COLUMNS.index("started"), Qt.SortOrder.DescendingOrder)
        self.table.setItemDelegateForColumn(COLUMNS.index("progress"), ProgressDelegate(self.table))
        self.table.cellDoubleClicked.connect(self._on_run_double_clicked)
        buttons = QHBoxLayout()
        self.new_button = QPushButton("New run…", clicked=self.open_wizard)
        self.demo_button = QPushButton("Demo", clicked=self.confirm_demo)
        self.demo_button.setToolTip(describe_demo())
        for widget in (self.new_button, self.demo_button, QPushButton("Refresh", clicked=self.refresh)):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(buttons)
        layout.addLayout(self._filter_row())
        layout.addWidget(self.table)
        layout.addLayout(self._run_buttons())
        self.tabs = WindowTabs(central, "Runs")
        self.setCentralWidget(self.tabs)
        self._menus()
        self.resize(1200, 850)  # room for a monitor's charts in a tab
        restore_geometry(self, "main_window")
        self.refresh()
        self._timer = QTimer(self, interval=REFRESH_MS, timeout=self.history.request)
        self._timer.start()

    @property
    def monitors(self) -> dict[str, MonitorWindow]:
        """The open monitor tabs: {run id (the resolved run folder): monitor}."""
        return self.tabs.of_kind("monitor")

    def closeEvent(self, event) -> None:
        """Closing the window quits: the user's close (the title bar's button) first says which
        runs keep training (quit_app); then the tabs close (their reading stops), the
        refreshes stop and the geometry is saved."""
        if event.spontaneous() and not self.confirm_quit(self.running_runs()):
            event.ignore()
            return
        self._timer.stop()
        self.tabs.close_all()
        save_geometry(self, "main_window")
        super().closeEvent(event)
        self.closed.emit()

    def quit_app(self) -> None:
        """File ▸ Quit (Ctrl+Q): say which runs keep training in the background, then close the
        window, which ends the app."""
        if self.confirm_quit(self.running_runs()):
            self.close()

    def running_runs(self) -> list[str]:
        """The runs whose worker is alive: of the history and of the open monitors."""
        # every folder, not only store.run_folders: a run started a moment ago by `cpt-studio
        # train --detach` has its worker's pid file before its events.jsonl
        folders = [f for f in self.runs_root.iterdir() if f.is_dir()] if self.runs_root.is_dir() else []
        candidates = dict.fromkeys([str(f.resolve()) for f in folders] + [r["id"] for r in self.runs]
                                   + list(self.monitors))
        return [run_id for run_id in candidates if worker_pid(Path(run_id)) is not None]

    def confirm_quit(self, running: list[str]) -> bool:
        """Say that `running` runs keep training after the app quits (Quit, or Cancel to stay);
        True to quit. Nothing to say, nothing asked."""
        if not running:
            return True
        subject = "1 run keeps" if len(running) == 1 else f"{len(running)} runs keep"
        box = QMessageBox(QMessageBox.Icon.Information, "Quit CPT Studio",
                          f"{subject} training in the background; reopen CPT Studio to watch them.",
                          QMessageBox.StandardButton.Cancel, self)
        quit_button = box.addButton("Quit", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(quit_button)
        box.setDetailedText("\n".join(running))
        box.exec()
        return box.clickedButton() is quit_button

    def _menus(self) -> None:
        keys = QKeySequence.StandardKey
        menu = self.menuBar().addMenu("&File")
        menu.addAction(QAction("&New run…", self, shortcut=keys.New, triggered=self.open_wizard))
        menu.addAction(QAction("&Open run folder…", self, shortcut=keys.Open,
                               triggered=self._on_open_folder))
        menu.addAction(QAction("Open &setup…", self, shortcut=QKeySequence("Ctrl+Shift+O"),
                               triggered=self._on_open_setup))
        self.recent_menu = menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._fill_recent_menu()
        menu.addSeparator()
        menu.addAction(QAction("&Close tab", self, shortcut=QKeySequence("Ctrl+W"), triggered=self.tabs.close_current))
        menu.addAction(QAction("&Preferences…", self, shortcut=QKeySequence("Ctrl+,"),
                               menuRole=QAction.MenuRole.PreferencesRole, triggered=self.open_preferences))
        menu.addSeparator()
        self.quit_action = QAction("&Quit", self, shortcut=QKeySequence("Ctrl+Q"), triggered=self.quit_app,
                                   menuRole=QAction.MenuRole.QuitRole)
        menu.addAction(self.quit_action)
        runs = self.menuBar().addMenu("&Runs")
        runs.addAction(QAction("&Refresh", self, shortcut=keys.Refresh, triggered=self.refresh))
        runs.addSeparator()
        self.run_actions["delete"].setShortcut(keys.Delete)
        self.run_actions["delete"].setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.table.addAction(self.run_actions["delete"])  # Delete acts on the table's selection only
        runs.addActions(list(self.run_actions.values()))
        runs.addSeparator()
        runs.addAction(QAction("&Find settings (sweep)…", self, triggered=self.open_sweep_dialog,
                               toolTip="Short runs of the selected run's setup over a grid of replay "
                               "ratios and learning rates, and which setting to use"))
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(QAction("CPT Studio &tour", self, shortcut=keys.HelpContents,
                                    triggered=self.open_tour))
        help_menu.addAction(QAction("&About CPT Studio", self, menuRole=QAction.MenuRole.AboutRole,
                                    triggered=lambda: show_about(self)))

    def _fill_recent_menu(self) -> None:
        """File ▸ Open Recent: run folders (their monitor), then setups (the wizard)."""
        self.recent_menu.clear()
        for run in recent.recent("runs"):
            self.recent_menu.addAction(Path(run).name, lambda run=run: self.open_monitor(Path(run))).setToolTip(run)
        setups = recent.recent("setups")
        if setups:
            self.recent_menu.addSeparator()
        for setup in setups:
            self.recent_menu.addAction(Path(setup).name, lambda setup=setup: self.open_setup(Path(setup))).setToolTip(setup)
        self.recent_menu.addSeparator()
        clear = self.recent_menu.addAction("Clear menu", recent.clear)
        clear.setEnabled(bool(self.recent_menu.actions()[:-2]))
        self.recent_menu.setToolTipsVisible(True)

    def open_preferences(self) -> PreferencesDialog:
        """Edit ▸ Preferences: the data folder (the history follows it) and the theme."""
        self.preferences = PreferencesDialog(self)
        self.preferences.data_folder_changed.connect(self._on_data_folder_changed)
        self.preferences.open()
        return self.preferences

    def _on_data_folder_changed(self, _folder: Path) -> None:
        self.runs_root = runs_dir()
        self.refresh()  # the history's next load opens the new folder's store

    def open_tour(self) -> TourWindow:
        """Help ▸ Tour: the README's sections for users."""
        self.tour = TourWindow(self)
        self.tour.show()
        return self.tour

    def _filter_row(self) -> QHBoxLayout:
        self.model_filter = QLineEdit(placeholderText="any model", clearButtonEnabled=True)
        self.model_filter.textChanged.connect(self.refresh)
        self.state_filter = QComboBox()
        self.state_filter.addItem("any state", None)
        for state in STATES:
            self.state_filter.addItem(state, state)
        self.state_filter.currentIndexChanged.connect(self.refresh)
        row = QHBoxLayout()
        for widget in (QLabel("Model:"), self.model_filter, QLabel("State:"), self.state_filter):
            row.addWidget(widget)
        row.addStretch(1)
        return row

    def _run_buttons(self) -> QHBoxLayout:
        """One action per thing a user does with selected runs; the buttons and the context
        menu share them."""
        compare_tip = ("Compare the selected runs' curves and checkpoints" if HAS_COMPARE
                       else "The comparison view is not installed in this version")
        self.run_actions = {
            "monitor": QAction("Open monitor", self, triggered=self._on_open_monitor),
            "compare": QAction("Compare selected", self, triggered=self.compare_selected,
                               toolTip=compare_tip),
            "generate": QAction("Generate…", self, triggered=self.open_generation,
                                toolTip="Continue a prompt with the base model and checkpoints"),
            "evaluate": QAction("Evaluate…", self, triggered=self.open_evaluate,
                                toolTip="Score the base model and checkpoints on lm-eval tasks and "
                                "knowledge probes, in the background"),
            "export": QAction("Export checkpoint…", self, triggered=self._on_export),
            "new_run": QAction("New run from this run…", self, triggered=self._on_new_run_from,
                               toolTip="Open the setup wizard on this run's settings, under a new name"),
            "sft": QAction("Instruction-tune…", self, triggered=self._on_instruction_tune,
                           toolTip="Instruction-tune a checkpoint of this run (its recommended one), "
                           "as a run chained to it"),
            "continue": QAction("Continue on more data…", self, triggered=self._on_continue,
                                toolTip="A second CPT stage from a checkpoint of this run: the wizard on "
                                "its settings, the learning rate warmed up and decayed again"),
            "parent": QAction("Show parent", self, triggered=self.show_parent,
                              toolTip="Select the run whose checkpoint this run started from"),
            "rename": QAction("Rename…", self, triggered=self._on_rename),
            "delete": QAction("Delete…", self, triggered=self._on_delete),
            "folder": QAction("Open folder", self, triggered=self._on_open_run_folder),
            "launch": QAction("Run on several GPUs / a cluster…", self, triggered=self.open_launch,
                              toolTip="Write a launch bundle (accelerate, torchrun, Slurm) into the run folder"),
        }
        row = QHBoxLayout()
        self.run_buttons = {}
        for key, action in self.run_actions.items():
            if key in MENU_ONLY:
                continue
            button = QPushButton(action.text(), toolTip=action.toolTip())
            button.clicked.connect(action.trigger)
            self.run_buttons[key] = button
            row.addWidget(button)
        row.addStretch(1)
        self._on_selection_changed()
        return row

    def _on_selection_changed(self) -> None:
        count = len(self.selected_ids())
        enabled = {key: count == 1 for key in self.run_actions}
        enabled["compare"] = HAS_COMPARE and count >= 1
        enabled["delete"] = count >= 1
        enabled["parent"] = count == 1 and bool(self._selected_run().get("parent_run"))
        for key, action in self.run_actions.items():
            action.setEnabled(enabled[key])
            if key in self.run_buttons:
                self.run_buttons[key].setEnabled(enabled[key])

    def _on_context_menu(self, position) -> None:
        menu = QMenu(self)
        menu.addActions(list(self.run_actions.values()))
        menu.exec(self.table.viewport().mapToGlobal(position))

    def _selected_run(self) -> dict:
        """The selected run's row as the history loaded it ({} when none or several)."""
        ids = self.selected_ids()
        return next((run for run in self.runs if len(ids) == 1 and run["id"] == ids[0]), {})

    def show_parent(self) -> None:
        """Select the run the selected one started from (its checkpoint's run), if the history
        shows it; else say where it was."""
        parent = self._selected_run().get("parent_run")
        if not parent:
            return
        self.select_runs([parent])
        if self.selected_ids() == [parent]:
            self.table.scrollToItem(self.table.selectedItems()[0])
        else:
            self.statusBar().showMessage(f"The parent run is not in the history (filtered out, or "
                                         f"removed): {parent}")

    def selected_ids(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) for row in rows]

    def select_runs(self, run_ids: list[str]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QTableWidget.SelectionMode.MultiSelection)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) in run_ids:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    # --- runs ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the history in the background (a load in flight is stale: its filters or
        the store changed); the table follows when the result arrives, keeping the selection."""
        self.history.restart()

    def _history_arguments(self) -> tuple:
        forget, self._to_forget = self._to_forget, {}
        return (self.runs_root, self.state_filter.currentData(),
                self.model_filter.text().strip() or None, forget)

    def _on_history_loaded(self, runs: list[dict]) -> None:
        if self.statusBar().currentMessage().startswith(HISTORY_FAILED):
            self.statusBar().clearMessage()
        if getattr(runs, "notice", ""):
            self.statusBar().showMessage(runs.notice)
        self._show_runs(runs)

    def _on_history_failed(self, message: str) -> None:
        self.statusBar().showMessage(f"{HISTORY_FAILED}: {message}")

    def _show_runs(self, runs: list[dict]) -> None:
        """Fill the table (sorted as its header says), keeping the selected runs selected."""
        selected = self.selected_ids()
        self.runs = runs
        self.table.setSortingEnabled(False)  # else each new cell moves its row while filling
        self.table.setRowCount(len(runs))
        for i, run in enumerate(runs):
            for j, item in enumerate(history_items(run)):
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)
        if runs and not self._columns_sized:
            self.table.resizeColumnsToContents()
            self._columns_sized = True
        else:  # a new run's longer name or chain: widen to fit, never narrow what the user widened
            for j in range(self.table.columnCount()):
                needed = max(self.table.sizeHintForColumn(j), self.table.horizontalHeader().sectionSizeHint(j))
                if needed > self.table.columnWidth(j):
                    self.table.setColumnWidth(j, needed)
        self.select_runs(selected)

    def open_monitor(self, run_dir: Path) -> MonitorWindow:
        """The run's monitor tab (switched to if open); the run goes first in Open Recent."""
        key = str(Path(run_dir).resolve())
        monitor = self.tabs.open(("monitor", key), lambda: self._new_monitor(Path(run_dir)))
        self._bring_forward()
        recent.remember("runs", key)
        return monitor

    def _new_monitor(self, run_dir: Path) -> MonitorWindow:
        monitor = MonitorWindow(run_dir)
        monitor.new_run_requested.connect(self.new_run_from)
        monitor.instruction_tune_requested.connect(self.open_sft_wizard)
        monitor.checkpoint_clicked.connect(self.open_checkpoint)
        return monitor

    def _bring_forward(self) -> None:
        """A tab was opened or switched to: the window shows it."""
        if not self.isVisible():
            self.show()
        self.raise_()

    def open_checkpoint(self, run_dir: str, step: int) -> QWidget | None:
        """The comparison view of `run_dir` with its checkpoint at `step` selected (a click on
        a checkpoint's marker in the monitor)."""
        if not HAS_COMPARE:
            return None
        with store.connection() as db:  # none is kept open between actions (store.default_db_path)
            run_id = store.index_run(db, run_dir)  # a live run: its latest checkpoints
            window = self.tabs.open(("compare", (run_id,)), lambda: self._new_compare(db, [run_id]))
        rows = [i for i, row in enumerate(window.rows) if row["run_id"] == run_id and row["step"] == step]
        if rows:
            window.table.select_checkpoint(rows[0])
        self._bring_forward()
        return window

    def _new_compare(self, db, run_ids: list[str]) -> QWidget:
        from .compare import CompareWindow

        window = CompareWindow(db, run_ids)
        window.actions.instruction_tune_requested.connect(self.open_sft_wizard)
        return window

    def _on_open_monitor(self) -> None:
        self.open_monitor(Path(self.selected_ids()[0]))

    def compare_selected(self) -> QWidget | None:
        if not HAS_COMPARE:
            return None
        run_ids = self.selected_ids()
        with store.connection() as db:
            window = self.tabs.open(("compare", tuple(sorted(run_ids))), lambda: self._new_compare(db, run_ids))
        self._bring_forward()
        return window

    def open_generation(self) -> GenerationWindow:
        run_id = self.selected_ids()[0]
        with store.connection() as db:
            window = self.tabs.open(("generate", run_id), lambda: GenerationWindow(db, run_id))
        self._bring_forward()
        return window

    def open_evaluate(self):
        """The Evaluate dialog for the selected run, its recommended checkpoint ticked; the
        monitor opens on the evaluation's progress once it starts."""
        from .evaluate_dialog import EvaluateDialog

        run_id = self.selected_ids()[0]
        with store.connection() as db:
            steps = [c["step"] for c in store.run_checkpoints(db, run_id) if c["recommended"]]
        self.evaluate_dialog = EvaluateDialog(Path(run_id), steps, parent=self)
        self.evaluate_dialog.started.connect(self.open_monitor)
        self.evaluate_dialog.show()
        return self.evaluate_dialog

    def open_launch(self):
        """The launch bundle's dialog for the selected run (gui/launch_dialog.py)."""
        from .launch_dialog import LaunchDialog

        self.launch_dialog = LaunchDialog(Path(self.selected_ids()[0]), parent=self)
        self.launch_dialog.show()
        return self.launch_dialog

    def _on_export(self) -> None:
        run_id = self.selected_ids()[0]
        with store.connection() as db:
            checkpoints = [c for c in store.run_checkpoints(db, run_id) if c["exists"]]
        if not checkpoints:
            QMessageBox.information(self, "Export", "This run has no checkpoint yet.")
            return
        labels = [f"step {c['step']}" + (" (recommended)" if c["recommended"] else "")
                  for c in checkpoints]
        first = next((i for i, c in enumerate(checkpoints) if c["recommended"]), len(labels) - 1)
        label, ok = QInputDialog.getItem(self, "Export checkpoint", "Checkpoint:", labels, first, False)
        if ok:
            step = checkpoints[labels.index(label)]["step"]
            self._export_job = export_with_dialog(self, Path(run_id), step)  # it reports the end
            if self._export_job is not None:
                self.statusBar().showMessage(f"exporting step {step}…")
                self._export_job.finished.connect(
                    lambda folder: self.statusBar().showMessage(f"exported to {folder}"))

    def _on_rename(self) -> None:
        with store.connection() as db:
            run = store.get_run(db, self.selected_ids()[0])
        name, ok = QInputDialog.getText(self, "Rename run", "Name:", text=run["name"] or "")
        if ok and name.strip():
            with store.connection() as db:
                store.rename_run(db, run["id"], name)
            self.refresh()

    def _on_delete(self) -> None:
        run_ids = self.selected_ids()
        running = [r for r in run_ids if worker_pid(Path(r)) is not None]
        if running:
            QMessageBox.warning(self, "Delete", "A running run cannot be deleted; stop it first:\n"
                                + "\n".join(running))
            return
        confirmed, with_folder = self.confirm_delete(run_ids)
        if confirmed:
            self.delete_runs(run_ids, with_folder)

    def confirm_delete(self, run_ids: list[str]) -> tuple[bool, bool]:
        """(delete?, also the folders?) from a confirmation with an 'also delete' checkbox that
        says what the folders hold."""
        box = self.delete_box(run_ids)
        confirmed = box.exec() == QMessageBox.StandardButton.Yes
        return confirmed, box.checkBox().isChecked()

    def delete_box(self, run_ids: list[str]) -> QMessageBox:
        """The confirmation: the runs, and 'also delete the folder (1.2 GiB, 3 checkpoints)'."""
        usage = [disk_usage(Path(r)) for r in run_ids if Path(r).is_dir()]
        size, checkpoints = sum(u[0] for u in usage), sum(u[1] for u in usage)
        folders = "the folder" if len(run_ids) == 1 else f"the {len(usage)} folders"
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete",
                          f"Remove {len(run_ids)} run(s) from the history?\n" + "\n".join(run_ids),
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.also_delete = QCheckBox(f"Also delete {folders} ({format_bytes(size)}, {checkpoints} "
                                    f"checkpoint{'s' if checkpoints != 1 else ''})", enabled=bool(usage))
        box.setCheckBox(box.also_delete)  # kept by the box: PySide does not hand it over
        return box

    def delete_runs(self, run_ids: list[str], with_folder: bool) -> None:
        """Forget the runs; delete their folders too when asked (store.forget_run, by the
        next history load, so that it never races an indexing in flight). They leave the table now."""
        self._to_forget.update(dict.fromkeys(run_ids, with_folder))
        self.tabs.close_showing(run_ids)  # a deleted run's monitor showed a folder no longer listed
        self._show_runs([run for run in self.runs if run["id"] not in run_ids])
        self.refresh()

    def _on_open_run_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(self.selected_ids()[0]))

    def _on_run_double_clicked(self, row: int, _column: int) -> None:
        self.open_monitor(Path(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)))

    def _on_open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder", str(self.runs_root))
        if folder:
            self.open_monitor(Path(folder))

    # --- new runs -----------------------------------------------------------------------
    def open_wizard(self, *, config: RunConfig | None = None) -> RunWizard:
        self.wizard = RunWizard(config, runs_root=self.runs_root, parent=self)
        self.wizard.run_started.connect(self._on_run_started)
        self.wizard.sweep_requested.connect(self.open_sweep_dialog)
        self.wizard.show()
        return self.wizard

    def _on_new_run_from(self) -> None:
        self.new_run_from(Path(self.selected_ids()[0]))

    def new_run_from(self, run_dir: Path) -> RunWizard | None:
        """The wizard on the run's settings under a fresh name (core.runs.clone_config)."""
        with store.connection() as db:
            runs = store.list_runs(db)
        run_id = str(Path(run_dir).resolve())
        name = next((run["name"] for run in runs if run["id"] == run_id), None)
        try:
            taken = {run["name"] for run in runs} | store.folder_names(self.runs_root)
            config = clone_config(Path(run_dir), taken, name)
        except ConfigError as exc:
            QMessageBox.warning(self, "New run from this run", "\n".join(exc.problems))
            return None
        wizard = self.open_wizard(config=config)
        wizard.notify(f"The settings of {name or Path(run_dir).name}, as a new run named '{config.name}'.")
        return wizard

    def _on_instruction_tune(self) -> None:
        self.open_sft_wizard(Path(self.selected_ids()[0]))

    def _on_continue(self) -> None:
        self.continue_run(Path(self.selected_ids()[0]))

    def _chosen_checkpoint(self, run_dir: Path, step: int | None, what: str) -> tuple[int, str] | None:
        """`step` (chosen by the user), else the run's default checkpoint and why it is the one
        (sft_run.default_checkpoint); None, the user told why, for a run without a checkpoint."""
        if step is not None:
            return step, "the checkpoint chosen"
        try:
            return default_checkpoint(run_dir)
        except FileNotFoundError as exc:
            QMessageBox.information(self, what, str(exc))
            return None

    def open_sft_wizard(self, run_dir: Path, step: int | None = None) -> SftWizard | None:
        """The instruction-tuning wizard on the run's checkpoint at `step` (default: the recommended
        one, else the last), its reason shown; the run it starts is chained to that checkpoint."""
        chosen = self._chosen_checkpoint(Path(run_dir), step, "Instruction-tune")
        if chosen is None:
            return None
        try:
            config = sft_config(run_dir, chosen[0], [])
        except (ConfigError, FileNotFoundError) as exc:
            QMessageBox.warning(self, "Instruction-tune", str(exc))
            return None
        self.sft_wizard = SftWizard(config, runs_root=self.runs_root, parent=self)
        self.sft_wizard.run_started.connect(self._on_run_started)
        self.sft_wizard.show()
        self.sft_wizard.notify(f"Step {chosen[0]}: {chosen[1]}.")
        return self.sft_wizard

    def continue_run(self, run_dir: Path, step: int | None = None) -> RunWizard | None:
        """A second CPT stage: the wizard on the run's settings, starting from its checkpoint at
        `step` (default: the recommended one, else the last), the parent recorded
        (core.chain.continue_config); add the new data on the Corpora page."""
        chosen = self._chosen_checkpoint(Path(run_dir), step, "Continue on more data")
        if chosen is None:
            return None
        try:
            taken = {run["name"] for run in self.runs} | store.folder_names(self.runs_root)
            config = continue_config(run_dir, chosen[0], taken)
        except (ConfigError, FileNotFoundError) as exc:
            QMessageBox.warning(self, "Continue on more data", str(exc))
            return None
        wizard = self.open_wizard(config=config)
        wizard.notify(f"A second stage from step {chosen[0]} ({chosen[1]}): its weights exactly, a fresh "
                      "optimizer, the learning rate warmed up and decayed again. Add the new data on the "
                      "Corpora page.")
        return wizard

    # --- sweeps -------------------------------------------------------------------------
    def open_sweep_dialog(self, config: RunConfig | None = None):
        """Runs ▸ Find settings (sweep)… (`config`: the selected run's setup) or the wizard
        summary's (the wizard's setup): the grid for it; once started, the sweep's tab."""
        from .sweep_dialog import SweepDialog

        if config is None:
            ids = self.selected_ids()
            if len(ids) != 1:
                QMessageBox.information(self, "Find settings", "Select the run whose setup the sweep "
                                        "starts from (its data, model and seed).")
                return None
            config = RunConfig.load(RunPaths(Path(ids[0])).config)
        self.sweep_dialog = SweepDialog(config, self.runs_root, parent=self)
        self.sweep_dialog.sweep_started.connect(self.open_sweep)
        self.sweep_dialog.show()
        return self.sweep_dialog

    def open_sweep(self, folder: Path):
        """The sweep's tab (switched to if open); its "Use these settings…" opens the wizard."""
        from .sweep_view import SweepView

        def make() -> SweepView:
            view = SweepView(Path(folder))
            view.use_settings.connect(self._on_use_settings)
            return view

        view = self.tabs.open(("sweep", str(Path(folder).resolve())), make)
        self.refresh()
        self._bring_forward()
        return view

    def _on_use_settings(self, config: RunConfig) -> None:
        wizard = self.open_wizard(config=config)
        wizard.notify(f"The sweep's setup with replay {config.corpus.replay_ratio:.0%} and peak learning "
                      f"rate {config.schedule.peak_lr:g}.")

    def _on_open_setup(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open setup", str(Path.home()), "JSON (*.json)")
        if path:
            self.open_setup(Path(path))

    def open_setup(self, path: Path) -> RunWizard | None:
        """The wizard on the setup saved in `path` (it goes first in Open Recent); a setup with
        problems is refused with each of them."""
        try:
            config = RunConfig.load(path)
        except ConfigError as exc:
            QMessageBox.warning(self, "Open setup", "\n".join(exc.problems))
            return None
        recent.remember("setups", path)
        return self.open_wizard(config=config)

    def _on_run_started(self, run_dir: Path) -> None:
        self.refresh()
        self.open_monitor(run_dir)

    def confirm_demo(self) -> Job | None:
        """Say what the demo does and how long it takes; start it if the user agrees."""
        answer = self.demo_box().exec()
        return self.start_demo() if answer == QMessageBox.StandardButton.Yes else None

    def demo_box(self) -> QMessageBox:
        return QMessageBox(QMessageBox.Icon.Question, "Demo", describe_demo() + "\n\nStart the demo?",
                           QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)

    def start_demo(self) -> Job:
        """The demo run (imports the demo model first if needed, off the GUI thread)."""
        from cpt_studio.core.demo import demo_config
        from cpt_studio.core.runs import create_run

        self.demo_button.setEnabled(False)
        self.demo_button.setText("Preparing the demo model…")
        job = Job(lambda: create_run(demo_config(), self.runs_root))
        job.finished.connect(self._on_demo_created)
        job.failed.connect(self._on_demo_failed)
        self._demo_job = job.start()
        return job

    def _on_demo_created(self, run_dir: Path) -> None:
        start_worker(run_dir)
        self.demo_button.setText("Demo")
        self.demo_button.setEnabled(True)
        self._on_run_started(run_dir)

    def _on_demo_failed(self, message: str) -> None:
        self.demo_button.setText("Demo")
        self.demo_button.setEnabled(True)
        QMessageBox.warning(self, "Demo", f"The demo could not start:\n{message}")


HISTORY_FAILED = "The run history could not be refreshed"


def load_history(runs_root: Path, state: str | None, model: str | None,
                 forget: dict[str, bool] | None = None) -> list[dict]:
    """The history as the table shows it (runs newest first, filtered by state and model, as
    store.list_runs; each with "live_state", store.with_live_states' reading of its worker process, and
    "chain", the runs it descends from, cpt_studio.core.chain.lineage).
    First forgets the runs in `forget` (id -> also delete the folder, store.forget_run) and
    indexes the run folders that may have changed. Slow (file reads, SQLite writes, psutil):
    the main window calls it off the GUI thread, so it opens its own store connection (an
    SQLite connection belongs to the thread that opened it)."""
    try:
        runs = _indexed_runs(runs_root, state, model, forget)
    except sqlite3.DatabaseError:  # a stale read, or a damaged file: check, then once more
        aside = store.repair()
        runs = HistoryRuns(_indexed_runs(runs_root, state, model, forget))
        if aside is not None:
            runs.notice = (f"The history's index ({store.default_db_path()}) was damaged; it was "
                           f"rebuilt from the run folders (the damaged file is kept as {aside.name})")
    store.with_live_states(runs)
    return runs


class HistoryRuns(list):
    """load_history's runs, with a sentence for the status bar when the store was repaired."""

    notice: str = ""


def _indexed_runs(runs_root: Path, state: str | None, model: str | None,
                  forget: dict[str, bool] | None) -> list[dict]:
    with store.connection() as db:
        for run_id, with_folder in (forget or {}).items():
            store.forget_run(db, run_id, delete_folder=with_folder)
        store.index_runs(db, Path(runs_root))
        runs = store.list_runs(db, state=state, model=model)
        every = {run["id"]: run for run in store.list_runs(db)} if any(r["parent_run"] for r in runs) else {}
    for run in runs:
        run["chain"] = lineage(run["id"], {**every, run["id"]: run})
    return runs


