"""Page 7, evaluation and checkpoints: how often the held-out perplexities are measured
(the step-0 baseline always is) and how often checkpoints are kept."""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QLabel, QSpinBox

from .base import ConfigPage


class EvalPage(ConfigPage):
    sections = ("eval:", "checkpoints:")

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

    def store(self, config) -> None:
        config.eval.interval = self.interval.value()
        config.eval.max_tokens = self.max_tokens.value()
        config.checkpoints.interval = self.checkpoint_interval.value()
        config.checkpoints.keep = self.keep.value()
