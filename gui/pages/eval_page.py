"""Page 7, evaluation, the forgetting guard and checkpoints: how often the held-out
perplexities are measured (the step-0 baseline always is), when the guard rolls back and
what it changes, and how often checkpoints are kept."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
)

from cpt_studio.core.config import GUARD_REMEDIES, REMEDY_WORDS, EvalSetSpec

from ..recent import remember_folder, start_folder
from ..setting_help import explain
from .base import ConfigPage


class EvalPage(ConfigPage):
    sections = ("eval:", "checkpoints:", "guard:")

    def __init__(self):
        super().__init__("Evaluation and checkpoints",
                         "The step-0 baseline is measured before training; forgetting is measured against it.")
        self.interval = QSpinBox(objectName="eval_interval", minimum=1, maximum=1_000_000)
        self.max_tokens = QSpinBox(objectName="eval_tokens", minimum=1000, maximum=100_000_000, singleStep=10_000)
        self.checkpoint_interval = QSpinBox(objectName="checkpoint_interval", minimum=1, maximum=1_000_000)
        self.keep = QSpinBox(objectName="keep", minimum=1, maximum=1000)
        form = QFormLayout()
        form.addRow("Evaluate every (steps):", self.interval)
        form.addRow("Held-out tokens per corpus, at most:", self.max_tokens)
        form.addRow("Checkpoint every (steps):", self.checkpoint_interval)
        form.addRow("Keep the newest:", self.keep)
        self.guard = QCheckBox("Forgetting guard: roll back to the last good checkpoint", objectName="guard_enabled")
        self.threshold = QDoubleSpinBox(objectName="guard_threshold", suffix=" % forgetting", decimals=1,
                                        minimum=0.1, maximum=500)
        self.remedy = QComboBox(objectName="guard_remedy")
        for key in GUARD_REMEDIES:
            self.remedy.addItem(REMEDY_WORDS[key], key)
        self.rollbacks = QSpinBox(objectName="guard_rollbacks", maximum=100)
        for widget, path in ((self.interval, "eval.interval"), (self.max_tokens, "eval.max_tokens"),
                             (self.checkpoint_interval, "checkpoints.interval"), (self.keep, "checkpoints.keep"),
                             (self.guard, "guard.enabled"), (self.threshold, "guard.threshold"),
                             (self.remedy, "guard.remedy"), (self.rollbacks, "guard.max_rollbacks")):
            explain(widget, path)
        form.addRow(self.guard)
        form.addRow("Roll back above:", self.threshold)
        form.addRow("Then:", self.remedy)
        form.addRow("At most rollbacks:", self.rollbacks)
        self.layout_.addLayout(form)
        self.sets = explain(QListWidget(objectName="eval_sets"), "eval.sets")
        self.sets.setMaximumHeight(70)
        buttons = QHBoxLayout()
        for label, slot in (("Add general set…", lambda: self.add_set(kind="general")),
                            ("Add domain set…", lambda: self.add_set(kind="domain")),
                            ("Remove", self._on_remove_sets)):
            buttons.addWidget(QPushButton(label, clicked=slot))
        buttons.addStretch(1)
        self.layout_.addWidget(QLabel("Evaluation sets of your own (each gets its perplexity and, for a "
                                      "general set, its forgetting curve):"))
        self.layout_.addWidget(self.sets)
        self.layout_.addLayout(buttons)
        self.layout_.addWidget(QLabel("Forgetting = general perplexity / baseline − 1; domain gain = 1 − "
                                      "domain perplexity / baseline. The best and the last checkpoints "
                                      "are never deleted.", wordWrap=True))
        self.finish_layout()

    def load(self, config) -> None:
        self.interval.setValue(config.eval.interval)
        self.max_tokens.setValue(config.eval.max_tokens)
        self.checkpoint_interval.setValue(config.checkpoints.interval)
        self.keep.setValue(config.checkpoints.keep)
        self.guard.setChecked(config.guard.enabled)
        self.threshold.setValue(config.guard.threshold * 100)
        self.remedy.setCurrentIndex(max(0, self.remedy.findData(config.guard.remedy)))
        self.rollbacks.setValue(config.guard.max_rollbacks)
        self.sets.clear()
        for spec in config.eval.sets:
            self._add_item(spec)

    def store(self, config) -> None:
        config.eval.interval = self.interval.value()
        config.eval.max_tokens = self.max_tokens.value()
        config.checkpoints.interval = self.checkpoint_interval.value()
        config.checkpoints.keep = self.keep.value()
        config.guard.enabled = self.guard.isChecked()
        config.guard.threshold = round(self.threshold.value() / 100, 6)
        config.guard.remedy = self.remedy.currentData()
        config.guard.max_rollbacks = self.rollbacks.value()
        config.eval.sets = [EvalSetSpec(**self.sets.item(i).data(Qt.ItemDataRole.UserRole))
                            for i in range(self.sets.count())]
        if config.eval.guard_set not in ("", "general", *(spec.name for spec in config.eval.sets)):
            config.eval.guard_set = ""  # its set was removed: the guard watches the worst again

    def add_set(self, path: str | None = None, kind: str = "general") -> None:
        """Add an evaluation file (asked for when `path` is None), named after the file."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, f"A {kind} evaluation set", start_folder("corpus"),
                                                  "Text (*.jsonl *.json *.txt *.parquet *.gz)")
            remember_folder("corpus", path)
        if path:
            taken = {self.sets.item(i).data(Qt.ItemDataRole.UserRole)["name"] for i in range(self.sets.count())}
            self._add_item(EvalSetSpec(name=_set_name(Path(path).stem, taken), path=path, kind=kind))

    def _add_item(self, spec: EvalSetSpec) -> None:
        missing = "" if Path(spec.path).expanduser().exists() else "  ⚠ missing: remove it or restore the file"
        item = QListWidgetItem(f"{spec.name} ({spec.kind}): {spec.path}{missing}")
        item.setData(Qt.ItemDataRole.UserRole, {"name": spec.name, "path": spec.path, "kind": spec.kind,
                                                "text_field": spec.text_field})
        self.sets.addItem(item)

    def _on_remove_sets(self) -> None:
        for item in self.sets.selectedItems():
            self.sets.takeItem(self.sets.row(item))


def _set_name(stem: str, taken: set[str]) -> str:
    """A set name from a file name: a word of letters, digits and _ (EvalSetSpec), unique."""
    name = re.sub(r"\W+", "_", stem).strip("_")
    name = name if re.match(r"[A-Za-z]", name or "") and name not in ("domain", "general") else f"set_{name}"
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name}_{n}", n + 1
    return unique
