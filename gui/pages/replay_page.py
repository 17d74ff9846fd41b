"""Page 3, replay and batch: the share of general text in every optimizer step, and what
that means in sequences per step; the replay ratio suggested by the domain's distance from
general text for this base model, measured in the background when the page is shown
(replay_suggestion.py)."""

from __future__ import annotations

from PySide6.QtWidgets import QDoubleSpinBox, QFormLayout, QLabel, QSpinBox

from ..setting_help import explain
from .base import ConfigPage
from .replay_suggestion import ReplaySuggestionBox

GUIDANCE = ("5% replay is the usual minimum. Use more (10-20%) when the domain is far from general "
            "English — old legal French, source code, chemical notation — or when the general "
            "perplexity rises during training.")


class ReplayPage(ConfigPage):
    sections = ("corpus: replay", "batch:")

    def __init__(self):
        super().__init__("Replay and batch", "General text mixed into every step keeps the model's general ability.")
        self.replay = QDoubleSpinBox(objectName="replay_percent", suffix=" %", decimals=1, maximum=95.0)
        self.micro = QSpinBox(objectName="micro_batch", minimum=1, maximum=1024)
        self.accum = QSpinBox(objectName="grad_accum", minimum=1, maximum=4096)
        self.seq_len = QSpinBox(objectName="seq_len", minimum=16, maximum=131072, singleStep=256)
        for widget, path in ((self.replay, "corpus.replay_ratio"), (self.micro, "batch.micro_batch"),
                             (self.accum, "batch.grad_accum"), (self.seq_len, "batch.seq_len")):
            explain(widget, path)
        self.per_step = QLabel(objectName="per_step")
        form = QFormLayout()
        form.addRow("Replay ratio:", self.replay)
        form.addRow("Micro-batch (sequences per forward pass):", self.micro)
        form.addRow("Gradient accumulation:", self.accum)
        form.addRow("Sequence length (tokens):", self.seq_len)
        self.layout_.addLayout(form)
        self.layout_.addWidget(QLabel(GUIDANCE, wordWrap=True))
        self.layout_.addWidget(self.per_step)
        self.suggestion = ReplaySuggestionBox(lambda: self.config)
        self.suggestion.use_ratio.connect(self._on_use_ratio)
        self.layout_.addWidget(self.suggestion)
        self.finish_layout()
        for widget in (self.replay, self.micro, self.accum, self.seq_len):
            widget.valueChanged.connect(self._on_changed)

    def initializePage(self) -> None:
        super().initializePage()
        self.suggestion.measure()

    def validatePage(self) -> bool:
        self.suggestion.stop()  # it loads the model: not alongside the next pages' work
        return super().validatePage()

    def cleanupPage(self) -> None:
        self.suggestion.stop()
        super().cleanupPage()

    def _on_use_ratio(self, ratio: float) -> None:
        self.replay.setValue(ratio * 100)

    def load(self, config) -> None:
        self.replay.setValue(config.corpus.replay_ratio * 100)
        self.micro.setValue(config.batch.micro_batch)
        self.accum.setValue(config.batch.grad_accum)
        self.seq_len.setValue(config.batch.seq_len)
        self._on_changed()

    def store(self, config) -> None:
        config.corpus.replay_ratio = round(self.replay.value() / 100, 6)
        config.batch.micro_batch = self.micro.value()
        config.batch.grad_accum = self.accum.value()
        config.batch.seq_len = self.seq_len.value()

    def _on_changed(self) -> None:
        per_step = self.micro.value() * self.accum.value()
        general = per_step * self.replay.value() / 100
        low, high = int(general), -(-int(general * 1000) // 1000)
        spread = f"{low}" if low == high else f"{low} or {low + 1}"
        self.per_step.setText(
            f"Each optimizer step: {per_step} sequences ({per_step * self.seq_len.value():,} tokens), "
            f"of which {spread} general ({general:.2f} on average), spread evenly through the step.")
