"""Run on several GPUs / a cluster: the GPUs per machine, the machines and the strategy of a
run's launch bundle (cpt_studio.core.launch), written into the run folder and shown there."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from cpt_studio.core.config import RunConfig
from cpt_studio.core.launch import STRATEGIES, write_bundle
from cpt_studio.core.run_folder import RunPaths

STRATEGY_TEXT = {
    "ddp": "DDP: a copy of the model on each GPU",
    "fsdp": "FSDP2: weights, gradients and optimizer state sharded",
    "deepspeed": "DeepSpeed ZeRO-2 (needs pip install deepspeed)",
}


class LaunchDialog(QDialog):
    """Writes the bundle on "Write bundle"; `written` carries its folder."""

    written = Signal(Path)

    def __init__(self, run_dir: Path, parent=None):
        super().__init__(parent, windowTitle="Run on several GPUs / a cluster")
        self.run_dir = Path(run_dir)
        processes = RunConfig.load(RunPaths(self.run_dir).config).system.processes
        self.gpus = QSpinBox(objectName="gpus", minimum=1, maximum=1024, value=max(processes, 2))
        self.nodes = QSpinBox(objectName="nodes", minimum=1, maximum=4096, value=1)
        self.strategy = QComboBox(objectName="strategy")
        for key in STRATEGIES:
            self.strategy.addItem(STRATEGY_TEXT[key], key)
        self.cpu = QCheckBox("CPU processes (to try the bundle on a machine without GPUs)")
        self.result = QLabel("The bundle is written into the run folder: accelerate's config, a "
                             "launch script, a torchrun line, a Slurm template and a README.",
                             wordWrap=True, objectName="launch_result")
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setMinimumWidth(620)
        self.open_folder = QPushButton("Open bundle folder", enabled=False, clicked=self._on_open_folder)
        form = QFormLayout()
        form.addRow("GPUs per machine:", self.gpus)
        form.addRow("Machines (nodes):", self.nodes)
        form.addRow("Strategy:", self.strategy)
        form.addRow(self.cpu)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.write_button = buttons.addButton("Write bundle", QDialogButtonBox.ButtonRole.ActionRole)
        self.write_button.clicked.connect(self.write)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.result)
        layout.addWidget(self.open_folder)
        layout.addWidget(buttons)
        self.folder: Path | None = None

    def write(self) -> Path | None:
        """Write the bundle; show its folder, or the sentence saying what to change."""
        try:
            self.folder = write_bundle(self.run_dir, gpus=self.gpus.value(), nodes=self.nodes.value(),
                                       strategy=self.strategy.currentData(), cpu=self.cpu.isChecked())
        except ValueError as exc:
            self.result.setText(f"Not written: {exc}")
            self.adjustSize()
            return None
        paths = RunPaths(self.run_dir)
        self.result.setText(f"Written to {self.folder}\n\nOne machine, from the run folder: bash "
                            f"{paths.relative(paths.launch_script)}\nA cluster: see "
                            f"{paths.relative(paths.launch_readme)}.")
        self.open_folder.setEnabled(True)
        self.adjustSize()  # the text grew
        self.written.emit(self.folder)
        return self.folder

    def _on_open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder)))
