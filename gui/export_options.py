"""How a checkpoint is exported: the mode (full, merged, adapter: those the checkpoint allows),
and the datasets and tags the model card's metadata names.

    dialog = ExportOptionsDialog(run_dir, step, parent)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        dialog.mode(), dialog.datasets(), dialog.tags()   # for core.export.export_checkpoint
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core.export import EXPORT_MODES, export_modes
from cpt_studio.core.sft_run import parent_of

PREFERRED = ("merged", "full", "adapter")
"""The modes in the order shown, the first one offered chosen: a model folder that plain
transformers loads comes first."""


class ExportOptionsDialog(QDialog):
    def __init__(self, run_dir: Path, step: int, parent: QWidget | None = None):
        super().__init__(parent, objectName="export_options")
        self.setWindowTitle(f"Export step {step}")
        self.modes = export_modes(run_dir, step)
        self.buttons = QButtonGroup(self)
        box = QGroupBox("What to write")
        box_layout = QVBoxLayout(box)
        first = next(mode for mode in PREFERRED if mode in self.modes)
        for mode in sorted(self.modes, key=PREFERRED.index):
            button = QRadioButton(f"{mode}: {EXPORT_MODES[mode]}", checked=mode == first,
                                  objectName=f"mode_{mode}")
            button.setProperty("mode", mode)
            self.buttons.addButton(button)
            box_layout.addWidget(button)
        if "adapter" in self.modes and parent_of(run_dir):
            box_layout.addWidget(QLabel(
                "This SFT run started from another run's checkpoint: its adapter goes on that "
                "model (the model card says which), not on the original base.", wordWrap=True))
        settings, self._key = QSettings("cpt-studio", "cpt-studio"), _settings_key(run_dir)
        self.datasets_edit = QLineEdit(str(settings.value(f"{self._key}/datasets", "")),
                                       placeholderText="e.g. pubmed_qa, my-org/clinical-notes")
        self.tags_edit = QLineEdit(str(settings.value(f"{self._key}/tags", "")), placeholderText="e.g. medical, english")
        form = QFormLayout()
        form.addRow("Datasets", self.datasets_edit)
        form.addRow("Tags", self.tags_edit)
        note = QLabel("Comma-separated; written into the model card's metadata (Hugging Face Hub ids "
                      "for datasets). The card also tells each stage's data, settings and scores.",
                      wordWrap=True)
        actions = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        actions.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        actions.accepted.connect(self.accept)
        actions.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(box)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(actions)
        self.accepted.connect(self._on_accepted)

    def mode(self) -> str:
        return self.buttons.checkedButton().property("mode")

    def set_mode(self, mode: str) -> None:
        next(b for b in self.buttons.buttons() if b.property("mode") == mode).setChecked(True)

    def datasets(self) -> list[str]:
        return _names(self.datasets_edit.text())

    def tags(self) -> list[str]:
        return _names(self.tags_edit.text())

    def _on_accepted(self) -> None:
        settings = QSettings("cpt-studio", "cpt-studio")  # offered again for this run's next export
        settings.setValue(f"{self._key}/datasets", ", ".join(self.datasets()))
        settings.setValue(f"{self._key}/tags", ", ".join(self.tags()))


def _settings_key(run_dir: Path) -> str:
    """The settings group of one run's export metadata: remembered per run, since another run's
    datasets offered again would be easy to publish by mistake."""
    return "export/" + hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
