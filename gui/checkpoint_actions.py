"""What can be done with one checkpoint: export it, evaluate it, instruction-tune it.

    actions = CheckpointActions(parent)        # a row of buttons
    actions.set_checkpoint(run_dir, step)      # None disables them (step None: the base model)
    actions.export_finished.connect(...)       # the exported folder
    actions.evaluation_started.connect(...)    # the run folder, its evaluation worker started
    actions.instruction_tune_requested.connect(...)  # (run folder, step): open the SFT wizard
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QMessageBox,
    QPushButton,
    QWidget,
)

from cpt_studio.core.export import (
    default_export_name,
    destination_problem,
    export_checkpoint,
    export_size,
)
from cpt_studio.core.run_folder import RunPaths, read_json

from .export_options import ExportOptionsDialog
from .jobs import Job


def export_with_dialog(parent: QWidget, run_dir: Path, step: int) -> Job | None:
    """Ask for a new or empty folder and check it (a file in the way, permission, free space,
    and a non-empty folder: export into a new folder inside it?) before anything else is asked;
    then the export options (ExportOptionsDialog: the mode, the card's datasets and tags); then
    export off the GUI thread. When the job ends, a message says where the export is (with Open
    folder), or why it failed."""
    config = read_json(RunPaths(Path(run_dir)).config)
    suggested = Path(QSettings("cpt-studio", "cpt-studio").value("export_folder", str(Path.home()))) / default_export_name(config, step)
    chosen, _ = QFileDialog.getSaveFileName(
        parent, f"Export step {step} into a new or empty folder", str(suggested),
        options=QFileDialog.Option.ShowDirsOnly | QFileDialog.Option.DontConfirmOverwrite)
    if not chosen:
        return None
    dest = _checked_destination(parent, Path(chosen), export_size(run_dir, step), default_export_name(config, step))
    if dest is None:
        return None
    QSettings("cpt-studio", "cpt-studio").setValue("export_folder", str(dest.parent))
    options = ExportOptionsDialog(Path(run_dir), step, parent)
    if options.exec() != QDialog.DialogCode.Accepted:
        return None
    job = Job(export_checkpoint, run_dir, step, dest, mode=options.mode(), datasets=options.datasets(),
              tags=options.tags())
    job.finished.connect(lambda folder: show_export_done(parent, step, folder))
    job.failed.connect(lambda message: QMessageBox.warning(parent, "Export", f"The export failed:\n{message}"))
    return job.start()


def _checked_destination(parent: QWidget, dest: Path, needed: int, name: str) -> Path | None:
    """`dest`, or a new folder inside it when it is a non-empty folder and the user agrees;
    None (the user told why) when it cannot take the export."""
    if dest.is_dir() and any(dest.iterdir()):
        inside = dest / name
        answer = QMessageBox.question(
            parent, "Export", f"{dest} is not empty. Export into a new folder inside it?\n\n{inside}")
        if answer != QMessageBox.StandardButton.Yes:
            return None
        dest = inside
        if dest.exists():
            QMessageBox.warning(parent, "Export", f"{dest} already exists; choose a new or empty folder, "
                                "so that nothing there is overwritten.")
            return None
    problem = destination_problem(dest, needed)
    if problem:
        QMessageBox.warning(parent, "Export", f"Cannot export into {dest}:\n{problem}")
        return None
    return dest


def show_export_done(parent: QWidget, step: int, folder: Path) -> QMessageBox:
    """'Exported step N to FOLDER', with a button that opens the folder (not modal: the app
    goes on)."""
    box = QMessageBox(QMessageBox.Icon.Information, "Export finished",
                      f"Step {step} is exported to:\n{folder}", QMessageBox.StandardButton.Ok, parent,
                      objectName="export_done")
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    open_button = box.addButton("Open folder", QMessageBox.ButtonRole.ActionRole)
    open_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))))
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


class CheckpointActions(QWidget):
    export_finished = Signal(object)
    export_failed = Signal(str)
    evaluation_started = Signal(object)
    instruction_tune_requested = Signal(object, int)
    """(run folder, step): the user asked to instruction-tune this checkpoint (the main window
    opens the SFT wizard on it)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.step: int | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.export_button = QPushButton("Export…", clicked=self._on_export_clicked)
        self.evaluate_button = QPushButton("Evaluate…", clicked=self._on_evaluate_clicked)
        self.sft_button = QPushButton("Instruction-tune…", clicked=self._on_sft_clicked)
        for button in (self.export_button, self.evaluate_button, self.sft_button):
            layout.addWidget(button)
        layout.addStretch(1)
        self.set_checkpoint(None, None)

    def set_checkpoint(self, run_dir: Path | None, step: int | None) -> None:
        self.run_dir, self.step = run_dir, step
        chosen = run_dir is not None and step is not None
        self.export_button.setEnabled(chosen and step != 0)
        self.sft_button.setEnabled(chosen and step != 0)
        self.sft_button.setToolTip(f"Instruction-tune step {step} (loss on the responses only), as a new "
                                   "run chained to it" if chosen and step else "Select a checkpoint first")
        self.evaluate_button.setEnabled(run_dir is not None)
        self.evaluate_button.setToolTip(
            f"Score {'the base model' if not step else f'step {step} and the base model'} on lm-eval "
            "tasks and knowledge probes, in the background" if run_dir is not None
            else "Select a checkpoint first")
        self.export_button.setToolTip(f"Write step {step} as an HF folder with its tokenizer and "
                                      "a model card" if chosen else "Select a checkpoint first")

    def _on_evaluate_clicked(self) -> None:
        from .evaluate_dialog import EvaluateDialog

        self.evaluate_dialog = EvaluateDialog(self.run_dir, [self.step] if self.step else [], parent=self)
        self.evaluate_dialog.started.connect(self.evaluation_started)
        self.evaluate_dialog.show()

    def _on_sft_clicked(self) -> None:
        self.instruction_tune_requested.emit(self.run_dir, self.step)

    def _on_export_clicked(self) -> None:
        self.job = export_with_dialog(self, self.run_dir, self.step)
        if self.job is not None:
            self.export_button.setEnabled(False)
            self.job.finished.connect(self._on_export_done)
            self.job.failed.connect(self._on_export_error)

    def _on_export_done(self, folder: Path) -> None:
        self.export_button.setEnabled(True)
        self.export_finished.emit(folder)

    def _on_export_error(self, message: str) -> None:
        self.export_button.setEnabled(True)  # export_with_dialog said why
        self.export_failed.emit(message)
