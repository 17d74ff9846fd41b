"""Page 7, evaluation, the forgetting guard and checkpoints: how often the held-out
perplexities are measured (the step-0 baseline always is), when the guard rolls back and
what it changes, and how often checkpoints are kept."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox

from cpt_studio.core.config import GUARD_REMEDIES, REMEDY_WORDS

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

    def store(self, config) -> None:
        config.eval.interval = self.interval.value()
        config.eval.max_tokens = self.max_tokens.value()
        config.checkpoints.interval = self.checkpoint_interval.value()
        config.checkpoints.keep = self.keep.value()
        config.guard.enabled = self.guard.isChecked()
        config.guard.threshold = round(self.threshold.value() / 100, 6)
        config.guard.remedy = self.remedy.currentData()
        config.guard.max_rollbacks = self.rollbacks.value()
