"""Side-by-side generation: one prompt, the base model and the ticked checkpoints.

    window = GenerationWindow(db, run_id)
    window.generate()              # a Job; its result shows as one column per model

Generation runs in the background (cpt_studio.core.generate.compare_generations), which also keeps
the prompt, settings and outputs in the run's generations.jsonl. For an SFT run the prompt is the
user's message, rendered with the run's chat template, and each column shows the model's answer;
for a CPT run each column shows the prompt and its continuation.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core import store
from cpt_studio.core.generate import (
    BASE,
    GenerationSettings,
    chat_template_of,
    compare_generations,
    read_generations,
)
from cpt_studio.core.run_folder import GENERATIONS

from .checkpoint_actions import CheckpointActions
from .jobs import Job


class GenerationWindow(QWidget):
    def __init__(self, db, run_id: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.run = store.get_run(db, run_id)
        self.run_dir = Path(self.run["id"])
        self.setWindowTitle(f"Generate: {self.run['name']}")
        self.chat = chat_template_of(self.run_dir) is not None  # an SFT run: answers, not continuations
        self.prompt = QPlainTextEdit(placeholderText=(
            "A question or instruction: each model answers it, given as the user's turn in the "
            "run's chat template…" if self.chat else "A prompt from your domain…"))
        self.prompt.setMaximumHeight(80)
        self.base = QCheckBox("starting model (before SFT)" if self.chat else "base model", checked=True)
        self.checkpoint_actions = CheckpointActions()
        self.checkpoints = QListWidget()
        self.checkpoints.currentItemChanged.connect(self._on_checkpoint_changed)
        for checkpoint in store.run_checkpoints(db, self.run["id"]):
            if checkpoint["exists"]:
                self.checkpoints.addItem(_checkpoint_item(checkpoint))
                if checkpoint["recommended"]:  # the actions act on the highlighted checkpoint
                    self.checkpoints.setCurrentRow(self.checkpoints.count() - 1)
        if self.checkpoints.count() and self.checkpoints.currentRow() < 0:  # none recommended (an
            last = self.checkpoints.item(self.checkpoints.count() - 1)  # SFT run has no general
            last.setCheckState(Qt.CheckState.Checked)  # set of its own): the last one is ticked
            self.checkpoints.setCurrentItem(last)
        self.generate_button = QPushButton("Generate", clicked=self.generate)
        self.status = QLabel()
        self.results = QHBoxLayout()
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Question (chat template applied)" if self.chat else "Prompt"))
        layout.addWidget(self.prompt)
        top = QHBoxLayout()
        top.addWidget(self._models_box(), 1)
        top.addWidget(self._settings_box(), 1)
        layout.addLayout(top)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.status, 1)
        layout.addLayout(buttons)
        layout.addLayout(self.results, 1)
        self._show_last_kept()

    def _models_box(self) -> QGroupBox:
        box = QGroupBox("Models")
        layout = QVBoxLayout(box)
        layout.addWidget(self.base)
        layout.addWidget(self.checkpoints)
        layout.addWidget(QLabel("Tick the checkpoints to generate with; the buttons act on the "
                                "highlighted one.", wordWrap=True))
        layout.addWidget(self.checkpoint_actions)
        return box

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Decoding")
        form = QFormLayout(box)
        self.greedy = QRadioButton("greedy (deterministic)", checked=True)
        self.sampled = QRadioButton("sampled")
        self.greedy.toggled.connect(self._on_decoding_changed)
        self.temperature = QDoubleSpinBox(minimum=0.05, maximum=5.0, singleStep=0.1, value=0.8)
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, value=0.95)
        self.seed = QSpinBox(maximum=2**31 - 1)
        self.max_tokens = QSpinBox(minimum=1, maximum=4096, value=64)
        form.addRow(self.greedy)
        form.addRow(self.sampled)
        form.addRow("temperature", self.temperature)
        form.addRow("top-p", self.top_p)
        form.addRow("seed", self.seed)
        form.addRow("max new tokens", self.max_tokens)
        self._on_decoding_changed()
        return box

    def _on_decoding_changed(self) -> None:
        for widget in (self.temperature, self.top_p, self.seed):
            widget.setEnabled(self.sampled.isChecked())

    def _on_checkpoint_changed(self, item: QListWidgetItem | None, _previous=None) -> None:
        step = item.data(Qt.ItemDataRole.UserRole) if item else None
        self.checkpoint_actions.set_checkpoint(self.run_dir if item else None, step)

    def settings(self) -> GenerationSettings:
        return GenerationSettings(self.max_tokens.value(), self.greedy.isChecked(),
                                  self.temperature.value(), self.top_p.value(), self.seed.value())

    def ticked_steps(self) -> list[int]:
        items = (self.checkpoints.item(i) for i in range(self.checkpoints.count()))
        return [item.data(Qt.ItemDataRole.UserRole) for item in items
                if item.checkState() == Qt.CheckState.Checked]

    def generate(self) -> Job | None:
        prompt, steps = self.prompt.toPlainText(), self.ticked_steps()
        if not prompt.strip() or not (steps or self.base.isChecked()):
            self.status.setText("Type a prompt and tick at least one model.")
            return None
        self.generate_button.setEnabled(False)
        self.status.setText(f"Generating with {len(steps) + self.base.isChecked()} model(s)…")
        self.job = Job(compare_generations, self.run_dir, prompt, steps, self.settings(),
                       include_base=self.base.isChecked())
        self.job.finished.connect(self._on_generated)
        self.job.failed.connect(self._on_failed)
        return self.job.start()

    def _on_generated(self, outputs: dict[str, str]) -> None:
        self.generate_button.setEnabled(True)
        self.status.setText(f"Done; kept in the run's {GENERATIONS}.")
        self.show_outputs(outputs)

    def _on_failed(self, message: str) -> None:
        self.generate_button.setEnabled(True)
        self.status.setText(f"Generation failed: {message}")

    def show_outputs(self, outputs: dict[str, str]) -> None:
        """One column per model, base first, in the order generated: the prompt and its
        continuation, or for an SFT run the answer alone."""
        while self.results.count():
            self.results.takeAt(0).widget().deleteLater()
        self.columns: dict[str, QPlainTextEdit] = {}
        for name, text in outputs.items():  # an SFT run's "base" is the checkpoint it started from
            box = QGroupBox("starting model (before SFT)" if self.chat and name == BASE else name)
            text_box = QPlainTextEdit(readOnly=True)
            text_box.setPlainText(text if self.chat else self.prompt.toPlainText() + text)
            if self.chat and not text.strip():  # shown only in an empty box
                text_box.setPlainText("")
                text_box.setPlaceholderText(EMPTY_ANSWER)
            QVBoxLayout(box).addWidget(text_box)
            self.results.addWidget(box)
            self.columns[name] = text_box

    def _show_last_kept(self) -> None:
        kept = read_generations(self.run_dir)
        if kept:
            self.prompt.setPlainText(kept[-1]["prompt"])
            self.show_outputs(kept[-1]["outputs"])
            self.status.setText("The last generation kept with this run.")
        else:
            self.columns = {}


EMPTY_ANSWER = ("(an empty answer: the model ended its turn at once, or wrote only spaces; more "
                "training on the instruction data, or another checkpoint, may answer)")


def _checkpoint_item(checkpoint: dict) -> QListWidgetItem:
    gain, forgetting = checkpoint["domain_gain"], checkpoint["forgetting"]
    scores = (f"  gain {gain:+.1%}, forgetting {forgetting:+.1%}"
              if gain is not None and forgetting is not None else "")
    mark = "  (recommended)" if checkpoint["recommended"] else ""
    item = QListWidgetItem(f"step {checkpoint['step']}{scores}{mark}")
    item.setData(Qt.ItemDataRole.UserRole, checkpoint["step"])
    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
    item.setCheckState(Qt.CheckState.Checked if checkpoint["recommended"] else Qt.CheckState.Unchecked)
    return item

