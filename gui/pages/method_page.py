"""Page 6, the method: full-parameter training or LoRA (rank, alpha, targets)."""

from __future__ import annotations

from PySide6.QtWidgets import QButtonGroup, QFormLayout, QLabel, QLineEdit, QRadioButton, QSpinBox

from .base import ConfigPage


class MethodPage(ConfigPage):
    sections = ("method:",)

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
        form = QFormLayout()
        form.addRow("LoRA rank:", self.rank)
        form.addRow("LoRA alpha:", self.alpha)
        form.addRow("Target modules:", self.targets)
        for widget in (self.full, self.lora):
            self.layout_.addWidget(widget)
        self.layout_.addLayout(form)
        self.layout_.addWidget(QLabel("CPT with LoRA learns less new knowledge than full training; "
                                      "prefer full when the memory estimate fits.", wordWrap=True))
        self.finish_layout()
        self.lora.toggled.connect(self._on_method_changed)

    def load(self, config) -> None:
        method = config.method
        (self.lora if method.kind == "lora" else self.full).setChecked(True)
        self.rank.setValue(method.lora_rank)
        self.alpha.setValue(method.lora_alpha)
        self.targets.setText(", ".join(method.target_modules))
        self._on_method_changed()

    def store(self, config) -> None:
        method = config.method
        method.kind = "lora" if self.lora.isChecked() else "full"
        method.lora_rank, method.lora_alpha = self.rank.value(), self.alpha.value()
        method.target_modules = [t.strip() for t in self.targets.text().split(",") if t.strip()]

    def _on_method_changed(self) -> None:
        for widget in (self.rank, self.alpha, self.targets):
            widget.setEnabled(self.lora.isChecked())
