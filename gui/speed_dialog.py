"""The run's speed and memory settings (config.system): precision, the attention kernel,
gradient checkpointing, Liger's fused kernels, torch.compile and the GPU's peak for MFU.
Each defaults to 'auto', which the plan resolves for this machine and model and explains
(cpt_studio.core.recipe.resolve_hardware); the summary page opens this dialog.

    dialog = SpeedDialog(config.system, parent)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        config.system = dialog.system()
"""

from __future__ import annotations

import copy

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core.config import ATTENTION_KERNELS, SystemConfig

from .setting_help import explain

CHOICES = {"precision": ("auto", "bf16", "fp16", "fp32"), "attention": ATTENTION_KERNELS,
           "gradient_checkpointing": ("auto", "on", "off"), "fused_kernels": ("auto", "on", "off")}
"""The combo boxes' values, config.system's own words."""

LABELS = {"precision": "Precision:", "attention": "Attention kernel:",
          "gradient_checkpointing": "Gradient checkpointing:", "fused_kernels": "Fused kernels (Liger):"}


class SpeedDialog(QDialog):
    def __init__(self, system: SystemConfig, parent: QWidget | None = None):
        super().__init__(parent, objectName="speed_dialog")
        self.setWindowTitle("Speed and memory")
        self._system = copy.deepcopy(system)
        form = QFormLayout()
        self.combos: dict[str, QComboBox] = {}
        for name, values in CHOICES.items():
            combo = QComboBox(objectName=name)
            combo.addItems(values)
            combo.setCurrentText(getattr(system, name))
            explain(combo, f"system.{name}")
            form.addRow(LABELS[name], combo)
            self.combos[name] = combo
        self.compile = QCheckBox("compile the model (torch.compile)", objectName="compile", checked=system.compile)
        explain(self.compile, "system.compile")
        form.addRow("Compilation:", self.compile)
        self.peak = QDoubleSpinBox(objectName="peak_tflops", minimum=0, maximum=100_000, decimals=4,
                                   suffix=" TFLOP/s", specialValueText="from the GPU's name",
                                   value=system.peak_tflops or 0)
        explain(self.peak, "system.peak_tflops")
        form.addRow("GPU peak (for MFU):", self.peak)
        note = QLabel("'auto' lets the plan choose for this machine and model; 'Estimate time and memory' "
                      "then lists each choice and why. Hover a setting for its help.", wordWrap=True)
        actions = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        actions.accepted.connect(self.accept)
        actions.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(actions)

    def system(self) -> SystemConfig:
        """The settings as chosen (processes and anything else kept as they were)."""
        system = copy.deepcopy(self._system)
        for name, combo in self.combos.items():
            setattr(system, name, combo.currentText())
        system.compile = self.compile.isChecked()
        system.peak_tflops = self.peak.value() or None
        return system


def speed_words(system: SystemConfig) -> str:
    """The settings that differ from 'auto' in words ("compile on, attention eager"), or
    "all automatic"."""
    default = SystemConfig()
    changed = [f"{name.replace('_', ' ')} {getattr(system, name)}" for name in CHOICES
               if getattr(system, name) != getattr(default, name)]
    changed += ["compile on"] if system.compile else []
    changed += [f"GPU peak {system.peak_tflops:g} TFLOP/s"] if system.peak_tflops else []
    return ", ".join(changed) or "all automatic"
