"""Evaluate… : choose checkpoints, lm-eval tasks and a probe file, then start the evaluation
worker (cpt_studio.core.evaljob.start_evaluation). The GUI thread never evaluates: the
registry search and the availability check run in Jobs, the scoring in a detached process.

    dialog = EvaluateDialog(run_dir, steps=[20])
    dialog.started.connect(...)    # the run folder, once the worker is started
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from cpt_studio.core.benchmarks import load_presets, search_tasks, task_availability, task_manager
from cpt_studio.core.config import RunConfig
from cpt_studio.core.config_help import setting
from cpt_studio.core.corpus import CorpusError
from cpt_studio.core.evaljob import EvalRequest, start_evaluation
from cpt_studio.core.probes import CLOZE, read_probes
from cpt_studio.core.run_folder import RunPaths, checkpoint_label, checkpoint_step, list_checkpoints

from .jobs import Job
from .theme import colour, styled

KIND_ROLE = Qt.ItemDataRole.UserRole + 1
MARKS = {None: ("…", "muted", "checking whether lm-eval can build it here"),
         True: ("✓", "success", "available"), False: ("✗", "error", "unavailable")}
"""Availability: (mark, theme colour role, words)."""


class EvaluateDialog(QDialog):
    started = Signal(object)
    """The run folder, once its evaluation worker is started."""

    def __init__(self, run_dir: Path, steps: list[int] = (), parent=None):
        super().__init__(parent)
        self.paths = RunPaths(Path(run_dir))
        self.settings = RunConfig.load(self.paths.config).benchmarks
        self.available: dict[str, bool | None] = {}
        self.reasons: dict[str, str] = {}
        self.probe_count, self.probe_problems = 0, []
        self.setWindowTitle(f"Evaluate — {self.paths.root.name}")
        layout = QVBoxLayout(self)
        layout.addWidget(self._checkpoints_box(list(steps)))
        layout.addWidget(self._tasks_box())
        layout.addWidget(self._probes_box())
        layout.addWidget(self._settings_box())
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self._on_ok_clicked)
        self.buttons.rejected.connect(self.reject)
        self.error = styled(QLabel(wordWrap=True, visible=False), "color:{error};")
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        for name in self.settings.domain_tasks:
            self.add_task(name, "domain")
        for name in self.settings.general_tasks:
            self.add_task(name, "general")
        self.probes.setText(self.settings.probes)
        self._on_probes_changed()
        self.resize(640, 760)

    # --- layout -----------------------------------------------------------------------
    def _checkpoints_box(self, steps: list[int]) -> QGroupBox:
        box = QGroupBox("Checkpoints to score")
        self.checkpoints = QListWidget(objectName="checkpoints")
        base = QListWidgetItem("base model (step 0): always scored, its scores are cached")
        base.setFlags(Qt.ItemFlag.ItemIsEnabled)
        base.setCheckState(Qt.CheckState.Checked)
        base.setData(Qt.ItemDataRole.UserRole, 0)
        self.checkpoints.addItem(base)
        kept = [checkpoint_step(p) for p in list_checkpoints(self.paths.root)]
        chosen = set(steps) or set(kept[-1:])
        for step in (s for s in kept if s != 0):
            item = QListWidgetItem(checkpoint_label(step))
            item.setData(Qt.ItemDataRole.UserRole, step)
            item.setCheckState(Qt.CheckState.Checked if step in chosen else Qt.CheckState.Unchecked)
            self.checkpoints.addItem(item)
        self.checkpoints.setMaximumHeight(120)
        self.checkpoints.itemChanged.connect(self._on_checkpoints_changed)
        QVBoxLayout(box).addWidget(self.checkpoints)
        return box

    def _tasks_box(self) -> QGroupBox:
        box = QGroupBox("lm-eval tasks (domain tasks should rise; general tasks must not drop "
                        "more than 3 points)")
        self.presets = QComboBox()
        self.presets.addItem("choose a preset…", None)
        for name, preset in load_presets().items():
            self.presets.addItem(name, preset)
        self.presets.currentIndexChanged.connect(self._on_preset_changed)
        self.search = QLineEdit(placeholderText="search lm-eval's registry, e.g. arc", clearButtonEnabled=True)
        self.search.returnPressed.connect(self._on_search_requested)
        self.search_button = QPushButton("Search", clicked=self._on_search_requested)
        self.results = QListWidget(objectName="results")
        self.results.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.results.setMaximumHeight(110)
        self.results.hide()  # until a search
        self.search_note = styled(QLabel(""), "color:{muted};")
        self.tasks = QListWidget(objectName="tasks")
        self.tasks.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.tasks.itemSelectionChanged.connect(self._on_task_selection_changed)
        self.task_detail = styled(QLabel("", wordWrap=True,
                                         textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse),
                                  "color:{error};")
        top = QHBoxLayout()
        for widget in (QLabel("Preset:"), self.presets, self.search, self.search_button):
            top.addWidget(widget)
        add = QHBoxLayout()
        for kind in ("domain", "general"):
            add.addWidget(QPushButton(f"Add as {kind}", clicked=lambda _=False, k=kind: self._on_add_clicked(k)))
        add.addWidget(QPushButton("Remove", clicked=self._on_remove_clicked))
        add.addStretch(1)
        self.availability_note = styled(QLabel("", wordWrap=True), "color:{muted};")
        layout = QVBoxLayout(box)
        for item in (top, self.search_note, self.results, add, self.tasks, self.availability_note,
                     self.task_detail):
            (layout.addLayout if isinstance(item, QHBoxLayout) else layout.addWidget)(item)
        return box

    def _probes_box(self) -> QGroupBox:
        box = QGroupBox("Knowledge probes (JSONL: prompt + answer, or question + choices + answer)")
        self.probes = QLineEdit(placeholderText="no probe file", clearButtonEnabled=True)
        self.probes.textChanged.connect(self._on_probes_changed)
        browse = QPushButton("Browse…", clicked=self._on_browse_clicked)
        self.probe_status = QLabel("", wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        row = QHBoxLayout()
        row.addWidget(self.probes)
        row.addWidget(browse)
        layout = QVBoxLayout(box)
        layout.addLayout(row)
        layout.addWidget(self.probe_status)
        return box

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Settings")
        self.fewshot = QSpinBox(minimum=0, maximum=25, value=self.settings.num_fewshot)
        self.limit = QSpinBox(minimum=0, maximum=1_000_000, value=self.settings.limit or 0,
                              specialValueText="all examples", toolTip="score at most this many "
                              "examples per task: a quick check")
        batch = self.settings.batch_size
        self.batch = QSpinBox(minimum=0, maximum=512, value=0 if batch == "auto" else batch,
                              specialValueText="auto", toolTip=setting("benchmarks.batch_size").help)
        form = QFormLayout(box)
        form.addRow("Few-shot examples:", self.fewshot)
        form.addRow("Limit per task:", self.limit)
        form.addRow("Batch size:", self.batch)
        return box

    def _on_checkpoints_changed(self, _item=None) -> None:
        if hasattr(self, "ok_button"):
            self._update_ok()

    # --- tasks ------------------------------------------------------------------------
    def task_names(self, kind: str | None = None) -> list[str]:
        items = [self.tasks.item(i) for i in range(self.tasks.count())]
        return [i.data(Qt.ItemDataRole.UserRole) for i in items if kind in (None, i.data(KIND_ROLE))]

    def add_task(self, name: str, kind: str) -> None:
        for i in range(self.tasks.count()):
            if self.tasks.item(i).data(Qt.ItemDataRole.UserRole) == name:
                self.tasks.takeItem(i)  # moved to the other kind
                break
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, name)
        item.setData(KIND_ROLE, kind)
        self.tasks.addItem(item)
        self._mark(item)
        if name not in self.available:
            self.available[name] = None
            self._check_availability()
        self._update_ok()

    def _mark(self, item: QListWidgetItem) -> None:
        name = item.data(Qt.ItemDataRole.UserRole)
        mark, role, words = MARKS[self.available.get(name)]
        reason = self.reasons.get(name, "")
        item.setText(f"{mark}  {name}   ({item.data(KIND_ROLE)})" + ("   unavailable" if reason else ""))
        item.setForeground(QBrush(QColor(colour(role))))
        item.setToolTip(f"{name}: {reason or words}")

    def _check_availability(self) -> None:
        """Build the tasks not checked yet, in a Job (the registry's index takes ~15 s)."""
        if getattr(self, "_availability_job", None) is not None:
            self._recheck = True
            return
        names = [n for n, ok in self.available.items() if ok is None]
        if not names:
            return
        self._recheck = False
        self.availability_note.setText(f"checking {', '.join(names)}: building lm-eval's task "
                                       "index takes about 15 s the first time…")
        self._availability_job = Job(task_availability, names, self._task_folders())
        self._availability_job.finished.connect(self._on_availability_changed)
        self._availability_job.failed.connect(lambda message: self._on_availability_changed(([], {
            n: message for n in names})))
        self._availability_job.start()

    def _on_availability_changed(self, result) -> None:
        runnable, unavailable = result
        self._availability_job = None
        self.available.update({name: True for name in runnable})
        self.available.update({name: False for name in unavailable})
        self.reasons.update(unavailable)
        for i in range(self.tasks.count()):
            self._mark(self.tasks.item(i))
        missing = [n for n in self.task_names() if self.available.get(n) is False]
        self.availability_note.setText(
            f"unavailable, will be skipped: {', '.join(missing)} (select one for the reason)" if missing else "")
        self._on_task_selection_changed()
        if self._recheck:
            self._check_availability()
        self._update_ok()

    def _task_folders(self) -> list[Path]:
        """Where an evaluation of this run finds local tasks: its own (the probes), the settings'."""
        folders = [self.paths.eval_tasks, *(Path(f).expanduser() for f in self.settings.task_folders)]
        return [f for f in folders if f.is_dir()]

    def _on_task_selection_changed(self) -> None:
        """The selected unavailable tasks' reasons, whole."""
        names = [i.data(Qt.ItemDataRole.UserRole) for i in self.tasks.selectedItems()]
        self.task_detail.setText("\n".join(f"{n}: {self.reasons[n]}" for n in names if n in self.reasons))

    def _on_preset_changed(self) -> None:
        preset = self.presets.currentData()
        if preset:
            for kind in ("domain", "general"):
                for name in preset[kind]:
                    self.add_task(name, kind)

    def _on_search_requested(self) -> None:
        query = self.search.text().strip()
        if not query:
            return
        self.search_button.setEnabled(False)
        self.search_note.setText("searching lm-eval's registry (about 15 s the first time)…")
        folders = self._task_folders()
        self._search_job = Job(lambda: search_tasks(query, task_manager(folders, registry=True)))
        self._search_job.finished.connect(self._on_results_changed)
        self._search_job.failed.connect(lambda message: self._on_results_changed([], message))
        self._search_job.start()

    def _on_results_changed(self, names: list[str], error: str = "") -> None:
        self.search_button.setEnabled(True)
        self.results.clear()
        self.results.addItems(names)
        self.results.setVisible(bool(names))
        self.search_note.setText(error or f"{len(names)} task(s); select and add them as domain or general")

    def _on_add_clicked(self, kind: str) -> None:
        for item in self.results.selectedItems():
            self.add_task(item.text(), kind)

    def _on_remove_clicked(self) -> None:
        for item in self.tasks.selectedItems():
            self.tasks.takeItem(self.tasks.row(item))
        self._update_ok()

    # --- probes -----------------------------------------------------------------------
    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Probe file", str(Path.home()), "Probes (*.jsonl *.json);;All files (*)")
        if path:
            self.probes.setText(path)

    def _on_probes_changed(self) -> None:
        text = self.probes.text().strip()
        self.probe_count, self.probe_problems = 0, []
        if text:
            try:
                probes = read_probes(text)
            except CorpusError as exc:
                self.probe_problems = [f"{p.file}:{p.line}: {p.message}" if p.line else f"{p.file}: {p.message}"
                                       for p in exc.problems]
            else:
                self.probe_count = len(probes)
                cloze = sum(p.kind == CLOZE for p in probes)
                self.probe_status.setText(f"{len(probes)} probes: {cloze} cloze, "
                                          f"{len(probes) - cloze} multiple choice")
                styled(self.probe_status, "color:{success};")
        if self.probe_problems:
            shown = self.probe_problems[:8] + ([f"… and {len(self.probe_problems) - 8} more"]
                                               if len(self.probe_problems) > 8 else [])
            self.probe_status.setText("\n".join(shown))
            styled(self.probe_status, "color:{error};")
        elif not text:
            self.probe_status.setText("")
        self._update_ok()

    # --- starting ---------------------------------------------------------------------
    def steps(self) -> list[int]:
        items = [self.checkpoints.item(i) for i in range(self.checkpoints.count())]
        return [i.data(Qt.ItemDataRole.UserRole) for i in items if i.checkState() == Qt.CheckState.Checked]

    def request(self) -> EvalRequest:
        return EvalRequest(checkpoints=self.steps(), domain_tasks=self.task_names("domain"),
                           general_tasks=self.task_names("general"),
                           probes=str(Path(self.probes.text().strip()).expanduser().resolve())
                           if self.probes.text().strip() else "",
                           task_folders=list(self.settings.task_folders),
                           num_fewshot=self.fewshot.value(), limit=self.limit.value() or None,
                           batch_size=self.batch.value() or "auto")

    def _update_ok(self) -> None:
        """The OK button names what is missing (or what it will do)."""
        tasks = len(self.task_names()) + self.probe_count
        if self.probe_problems:
            text, ok = "Fix the probe file", False
        elif not tasks:
            text, ok = "Choose tasks or a probe file", False
        else:
            count = len(self.steps())
            text, ok = f"Evaluate {count} model{'s' if count > 1 else ''}", True
        self.ok_button.setText(text)
        self.ok_button.setEnabled(ok)

    def _on_ok_clicked(self) -> None:
        try:
            start_evaluation(self.paths.root, self.request())
        except (ValueError, FileNotFoundError, CorpusError) as exc:  # CorpusError: a bad probe file, every line
            self.error.setText(str(exc))
            self.error.show()
            return
        self.started.emit(self.paths.root)
        self.accept()
