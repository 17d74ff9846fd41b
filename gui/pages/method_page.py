"""Page 6, the method: full-parameter training or LoRA (rank, alpha, targets), and EWC
(on/off, strength, the weights it covers)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
)

from cpt_studio.core.config import EWC_GROUPS

from ..setting_help import explain
from .base import ConfigPage

CPT_ADVICE = ("CPT with LoRA learns less new knowledge than full training; prefer full when the memory "
              "estimate fits.")
SFT_ADVICE = ("LoRA forgets less of what the model knew than full training (Biderman et al. 2024, \"LoRA "
              "Learns Less and Forgets Less\"); its usual peak rates are higher (about 1e-4 to 2e-4 against "
              "full training's 2e-5): set the peak on the next page.")

class MethodPage(ConfigPage):
    sections = ("method:", "ewc:")

    def __init__(self):
        super().__init__("Method", "Full training learns most; LoRA needs far less memory.")
        self.full = QRadioButton("Full-parameter training", objectName="method_full")
        self.lora = QRadioButton("LoRA adapters", objectName="method_lora")
        group = QButtonGroup(self)
        group.addButton(self.full)
        group.addButton(self.lora)
        self.rank = QSpinBox(objectName="lora_rank", minimum=1, maximum=1024)
        self.alpha = QSpinBox(objectName="lora_alpha", minimum=1, maximum=4096)
        self.targets = QLineEdit(objectName="lora_targets")
        for widget, path in ((self.full, "method.kind"), (self.lora, "method.kind"),
                             (self.rank, "method.lora_rank"), (self.alpha, "method.lora_alpha"),
                             (self.targets, "method.target_modules")):
            explain(widget, path)
        form = QFormLayout()
        form.addRow("LoRA rank:", self.rank)
        form.addRow("LoRA alpha:", self.alpha)
        form.addRow("Target modules:", self.targets)
        for widget in (self.full, self.lora):
            self.layout_.addWidget(widget)
        self.layout_.addLayout(form)
        self.advice = QLabel(wordWrap=True, objectName="method_advice")
        self.layout_.addWidget(self.advice)
        self.ewc = QCheckBox("EWC: pull the weights that matter for general text back to their start",
                             objectName="ewc_enabled")
        self.ewc_strength = QLineEdit(objectName="ewc_strength")
        self.ewc_group = QComboBox(objectName="ewc_group")
        self.ewc_group.addItems(EWC_GROUPS)
        for widget, path in ((self.ewc, "ewc.enabled"), (self.ewc_strength, "ewc.strength"),
                             (self.ewc_group, "ewc.group")):
            explain(widget, path)
        ewc_form = QFormLayout()
        ewc_form.addRow("EWC strength (lambda):", self.ewc_strength)
        ewc_form.addRow("EWC covers:", self.ewc_group)
        self.layout_.addWidget(self.ewc)
        self.layout_.addLayout(ewc_form)
        self.layout_.addWidget(QLabel("EWC computes the Fisher information once on general sequences "
                                      "(cached) and keeps a copy of the starting weights: it adds 8 bytes "
                                      "per covered parameter to the memory estimate.", wordWrap=True))
        self.finish_layout()
        self.lora.toggled.connect(self._on_method_changed)
        self.ewc.toggled.connect(self._on_method_changed)

    def load(self, config) -> None:
        self.advice.setText(SFT_ADVICE if config.stage == "sft" else CPT_ADVICE)
        method = config.method
        (self.lora if method.kind == "lora" else self.full).setChecked(True)
        self.rank.setValue(method.lora_rank)
        self.alpha.setValue(method.lora_alpha)
        self.targets.setText(", ".join(method.target_modules))
        self.ewc.setChecked(config.ewc.enabled)
        self.ewc_strength.setText(f"{config.ewc.strength:g}")
        self.ewc_group.setCurrentText(config.ewc.group)
        self._on_method_changed()

    def store(self, config) -> None:
        method = config.method
        method.kind = "lora" if self.lora.isChecked() else "full"
        method.lora_rank, method.lora_alpha = self.rank.value(), self.alpha.value()
        method.target_modules = [t.strip() for t in self.targets.text().split(",") if t.strip()]
        config.ewc.enabled = self.ewc.isChecked()
        try:
            config.ewc.strength = float(self.ewc_strength.text())
        except ValueError:
            config.ewc.strength = -1.0  # validate() names the problem
        config.ewc.group = self.ewc_group.currentText()

    def _on_method_changed(self) -> None:
        for widget in (self.rank, self.alpha, self.targets):
            widget.setEnabled(self.lora.isChecked())
        for widget in (self.ewc_strength, self.ewc_group):
            widget.setEnabled(self.ewc.isChecked())
