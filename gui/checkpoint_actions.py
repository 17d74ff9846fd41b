"""What can be done with one checkpoint: export it now; evaluate and instruction-tune later.

    actions = CheckpointActions(parent)        # a row of buttons
    actions.set_checkpoint(run_dir, step)      # None disables them
    actions.export_finished.connect(...)       # the exported folder

Evaluate and Instruction-tune are the hooks where those features plug in: disabled, with
a tooltip that says so, until they exist.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QMessageBox, QPushButton, QWidget

from cpt_studio.core.export import export_checkpoint
from cpt_studio.core.generate import is_adapter

from .jobs import Job

EVALUATE_TIP = "Benchmarks (lm-evaluation-harness, knowledge probes) come with the evaluation feature"
SFT_TIP = "Instruction tuning of a chosen checkpoint comes with the SFT feature"


def export_with_dialog(parent: QWidget, run_dir: Path, step: int) -> Job | None:
    """Ask for a folder (and, for an adapter, whether to merge), then export off the GUI thread."""
    folder = QFileDialog.getExistingDirectory(parent, f"Export step {step} into a new or empty folder")
    if not folder:
        return None
    merge = False
    if is_adapter(Path(run_dir) / "checkpoints" / f"checkpoint-{step}"):
        answer = QMessageBox.question(
            parent, "Export", "This checkpoint is a LoRA adapter. Merge it into the base model's "
            "weights?\n\nYes: a full model folder. No: the adapter alone (load it with peft).")
        merge = answer == QMessageBox.StandardButton.Yes
    return Job(export_checkpoint, run_dir, step, Path(folder), merge_lora=merge).start()


class CheckpointActions(QWidget):
    export_finished = Signal(object)
    export_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.step: int | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.export_button = QPushButton("Export…", clicked=self._on_export_clicked)
        self.evaluate_button = QPushButton("Evaluate benchmarks…", enabled=False, toolTip=EVALUATE_TIP)
        self.sft_button = QPushButton("Instruction-tune…", enabled=False, toolTip=SFT_TIP)
        for button in (self.export_button, self.evaluate_button, self.sft_button):
            layout.addWidget(button)
        layout.addStretch(1)
        self.set_checkpoint(None, None)

    def set_checkpoint(self, run_dir: Path | None, step: int | None) -> None:
        self.run_dir, self.step = run_dir, step
        chosen = run_dir is not None and step is not None
        self.export_button.setEnabled(chosen)
        self.export_button.setToolTip(f"Write step {step} as an HF folder with its tokenizer and "
                                      "a model card" if chosen else "Select a checkpoint first")

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
        self.export_button.setEnabled(True)
        QMessageBox.warning(self, "Export", f"The export failed:\n{message}")
        self.export_failed.emit(message)
