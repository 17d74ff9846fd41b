"""Page 5, domain tokenizer extension: on/off and its settings; Preview shows the candidate
tokens with their frequencies and the fertility before and after (cpt_studio.core.tokenizer_ext)."""

from __future__ import annotations

import importlib.util

from PySide6.QtWidgets import QCheckBox, QFormLayout, QLabel, QPlainTextEdit, QPushButton, QSpinBox

from cpt_studio.core.config import RunConfig

from ..job_progress import JobProgress
from ..jobs import Job
from ..setting_help import explain
from .base import ConfigPage


def extension_available() -> bool:
    return importlib.util.find_spec("cpt_studio.core.tokenizer_ext") is not None


class TokenizerPage(ConfigPage):
    sections = ("tokenizer:",)

    def __init__(self):
        super().__init__("Tokenizer extension", "New tokens for domain words the base tokenizer splits apart.")
        self.extend = QCheckBox("Add domain tokens before training", objectName="extend_tokenizer")
        self.vocab = QSpinBox(objectName="domain_vocab", minimum=256, maximum=200_000, singleStep=1000)
        self.min_frequency = QSpinBox(objectName="min_frequency", minimum=1, maximum=1_000_000)
        self.max_new = QSpinBox(objectName="max_new_tokens", minimum=1, maximum=100_000)
        for widget, path in ((self.extend, "tokenizer.extend"), (self.vocab, "tokenizer.vocab_size"),
                             (self.min_frequency, "tokenizer.min_frequency"),
                             (self.max_new, "tokenizer.max_new_tokens")):
            explain(widget, path)
        form = QFormLayout()
        form.addRow("Domain vocabulary to learn:", self.vocab)
        form.addRow("Minimum frequency:", self.min_frequency)
        form.addRow("At most new tokens:", self.max_new)
        self.note = QLabel(wordWrap=True, objectName="tokenizer_note")
        self.preview_button = QPushButton("Preview candidates", clicked=self.start_preview)
        self.progress = JobProgress()
        self.preview = QPlainTextEdit(readOnly=True, objectName="tokenizer_preview")
        self.preview.setStyleSheet("font-family: monospace;")
        self.layout_.addWidget(self.extend)
        self.layout_.addLayout(form)
        self.layout_.addWidget(self.note)
        self.layout_.addWidget(self.preview_button)
        self.layout_.addWidget(self.progress)
        self.layout_.addWidget(self.preview, stretch=1)
        self.finish_layout()
        available = extension_available()
        self.extend.setEnabled(available)
        self.preview_button.setEnabled(available)
        self.note.setText(
            "The new tokens' input-embedding and output rows start as the mean of the rows of the "
            "pieces they replace, and become trainable (with LoRA too)." if available else
            "Tokenizer extension is not available in this version yet: runs use the base tokenizer.")

    def load(self, config) -> None:
        self.extend.setChecked(config.tokenizer.extend)
        self.vocab.setValue(config.tokenizer.vocab_size)
        self.min_frequency.setValue(config.tokenizer.min_frequency)
        self.max_new.setValue(config.tokenizer.max_new_tokens)

    def store(self, config) -> None:
        config.tokenizer.extend = self.extend.isChecked() and extension_available()
        config.tokenizer.vocab_size = self.vocab.value()
        config.tokenizer.min_frequency = self.min_frequency.value()
        config.tokenizer.max_new_tokens = self.max_new.value()

    def start_preview(self) -> Job:
        from cpt_studio.core.tokenizer_ext import format_preview, preview_for_config

        self.commit()
        config = RunConfig.from_dict(self.config.to_dict())
        self.preview.setPlainText("Training a domain BPE on the training documents…")
        self.preview_button.setEnabled(False)
        job = Job(lambda progress: format_preview(preview_for_config(config, progress=progress)),
                  cancellable=True)
        job.finished.connect(self.preview.setPlainText)
        job.failed.connect(lambda message: self.preview.setPlainText(f"⚠ {message}"))
        job.cancelled.connect(lambda: self.preview.setPlainText("Preview cancelled."))
        for signal in (job.finished, job.failed, job.cancelled):
            signal.connect(lambda *_: self.preview_button.setEnabled(True))
        self.progress.watch(job)
        self._job = job.start()
        return job
