"""The instruction-tuning wizard's first page: the instruction data (JSONL files), its format and
field names, and the chat template; every edit checks the files (each problem with file and
line) and previews the first examples as the model will see them, the trained responses
highlighted (cpt_studio.core.sft_run.preview_examples, off the GUI thread)."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTextEdit,
)

from cpt_studio.core.config import SFT_FORMATS, RunConfig
from cpt_studio.core.run_folder import RunPaths, read_json
from cpt_studio.core.sft_data import SftDataError, data_files
from cpt_studio.core.sft_run import SftPreview, preview_examples

from ..jobs import Job
from ..recent import remember_folder, start_folder
from ..setting_help import explain
from ..theme import styled
from .base import ConfigPage, display_only
from .pending import wait_while

FIELDS = (("instruction_field", "Instruction field:"), ("input_field", "Input field (optional):"),
          ("response_field", "Response field:"), ("system_field", "System field (optional):"),
          ("messages_field", "Messages field (chat):"))
TEMPLATES = ("auto", "plain")
PREVIEW_COUNT = 3
CHECK_DELAY_MS = 300
"""Edits within this pause are checked once."""
PREVIEW_LINES = 6
"""Lines of the preview kept at least (it scrolls): with more, the page's minimum outgrew the
wizard's default height once a status with a bad record showed, and the rows above it, the
replay spin box among them, were squeezed until their text was cut."""
PREVIEW_KEY = "Highlighted: what the model is trained to write (the responses); the rest is the prompt."
"""The preview's first line (it was in the status, which took room from the page's fields)."""
TRAINED_STYLE = "background-color:#fff0b3; color:#212529; font-weight:bold;"
"""A response piece in the preview: the tokens the loss is computed on."""


class SftDataPage(ConfigPage):
    sections = ("sft.", "stage:", "parent_run", "corpus: replay", "batch")
    shown_problems = 3
    """A bad record's problem names its fix and wraps to two lines: six of them squeezed the
    fields above at the wizard's default size (hovering the list shows them all)."""

    def __init__(self):
        super().__init__("Instruction data", "JSONL or JSON-array records: an instruction and its response, or a list of "
                                             "chat messages. Only the responses are trained on.")
        self.origin = QLabel(wordWrap=True, objectName="sft_origin")
        self.files = explain(QListWidget(objectName="sft_files"), "sft.data")
        self.files.setMaximumHeight(60)
        files_buttons = QHBoxLayout()
        for label, slot in (("Add files…", self._on_add_files), ("Add folder…", self._on_add_folder),
                            ("Remove", self._on_remove)):
            files_buttons.addWidget(QPushButton(label, clicked=slot))
        files_buttons.addStretch(1)
        self.format = QComboBox(objectName="sft_format")
        self.format.addItems(SFT_FORMATS)
        self.template = QComboBox(objectName="sft_template", editable=True)
        self.template.addItems(TEMPLATES)
        self.fields = {name: QLineEdit(objectName=f"sft_{name}") for name, _ in FIELDS}
        form = QFormLayout()
        form.addRow("Format:", explain(self.format, "sft.format"))
        for name, label in FIELDS:
            form.addRow(label, explain(self.fields[name], f"sft.{name}"))
        form.addRow("Chat template:", explain(self.template, "sft.template"))
        self.skip_bad = explain(QCheckBox("Skip bad records (each is named; the rest trains)",
                                          objectName="sft_skip_bad"), "sft.skip_bad")
        form.addRow("", self.skip_bad)
        self.replay = explain(QDoubleSpinBox(objectName="sft_replay_percent", suffix=" %", decimals=1,
                                             maximum=95.0), "corpus.replay_ratio")
        # the row length: an example longer is cut (the plan's warning names the length that
        # holds the longest); this wizard has no Replay and batch page to set it on. One row
        # with the replay: a row more squeezed the fields at the wizard's default size.
        self.seq_len = explain(QSpinBox(objectName="sft_seq_len", minimum=16, maximum=131072, singleStep=256),
                               "batch.seq_len")
        replay_row = QHBoxLayout()
        replay_row.addWidget(self.replay, stretch=1)
        replay_row.addWidget(QLabel("Sequence length (tokens):"))
        replay_row.addWidget(self.seq_len)
        form.addRow("General replay:", replay_row)
        self.status = QLabel(wordWrap=True, objectName="sft_status")
        styled(self.status, "color:{muted};")
        self.preview = display_only(QTextEdit(readOnly=True, objectName="sft_preview"))
        self.preview.setMinimumHeight(PREVIEW_LINES * self.preview.fontMetrics().lineSpacing() + 12)
        self.preview.hide()  # until there is something to preview: the problems get its room
        for widget in (self.origin, QLabel("Instruction files (.jsonl, .json):"), self.files):
            self.layout_.addWidget(widget)
        self.layout_.addLayout(files_buttons)
        self.layout_.addLayout(form)
        self.layout_.addWidget(self.status)
        self.layout_.addWidget(self.preview, stretch=10)  # the free room goes to the preview
        self.finish_layout()
        self._timer = QTimer(self, singleShot=True, interval=CHECK_DELAY_MS, timeout=self.check)
        for signal in (self.format.currentTextChanged, self.template.currentTextChanged, self.skip_bad.toggled,
                       self.files.model().rowsInserted, self.files.model().rowsRemoved,
                       *(field.textChanged for field in self.fields.values())):
            signal.connect(self._schedule_check)
        self._checking, self._problems = False, ["the instruction data has not been checked yet"]

    def initializePage(self) -> None:
        super().initializePage()
        self.check()

    def load(self, config) -> None:
        self.files.clear()
        self.files.addItems(config.sft.data)
        self.format.setCurrentText(config.sft.format)
        for name, _ in FIELDS:
            self.fields[name].setText(getattr(config.sft, name))
        self.template.setCurrentText(config.sft.template)
        self.skip_bad.setChecked(config.sft.skip_bad)
        self.replay.setValue(config.corpus.replay_ratio * 100)
        self.replay.setEnabled(bool(config.corpus.general))  # replay draws from the general corpus
        self.replay.setSpecialValueText("none (the general corpus is measured, not trained on)")
        self.seq_len.setValue(config.batch.seq_len)
        self.origin.setText(origin_text(config))
        self._schedule_check()

    def store(self, config) -> None:
        config.sft.data = [self.files.item(i).text() for i in range(self.files.count())]
        config.sft.format = self.format.currentText()
        for name, _ in FIELDS:
            setattr(config.sft, name, self.fields[name].text().strip())
        config.sft.template = self.template.currentText().strip() or "auto"
        config.sft.skip_bad = self.skip_bad.isChecked()
        config.corpus.replay_ratio = round(self.replay.value() / 100, 6)
        config.batch.seq_len = self.seq_len.value()

    def _on_add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Instruction data", start_folder("sft"),
                                                "Instruction data (*.jsonl *.ndjson *.json *.gz)")
        remember_folder("sft", files)
        self._add(files)

    def _on_add_folder(self) -> None:
        """Every instruction data file of a folder (sft.data lists files: a folder was refused)."""
        folder = QFileDialog.getExistingDirectory(self, "Folder of instruction data", start_folder("sft"))
        if not folder:
            return
        remember_folder("sft", folder)
        files = [str(path) for path in data_files(Path(folder))]
        if not files:
            self.status.setText(f"{folder} holds no instruction data files (.jsonl, .ndjson or .json, "
                                "each optionally .gz)")
        self._add(files)

    def _add(self, files: list[str]) -> None:
        shown = [self.files.item(i).text() for i in range(self.files.count())]
        self.files.addItems([path for path in files if path not in shown])

    def _on_remove(self) -> None:
        for item in self.files.selectedItems():
            self.files.takeItem(self.files.row(item))

    # --- checking and preview -------------------------------------------------------------
    def _schedule_check(self, *_) -> None:
        if not self._loading:
            self._timer.start()

    def check(self) -> Job | None:
        """Read and check the files and render the first examples, off the GUI thread."""
        if self.wizard() is None:
            return None
        self.commit()
        if not self.config.sft.data:
            self._show([], None, "Add a file of examples (.jsonl, or a .json array).")
            return None
        self.status.setText("Checking the instruction data…")
        self._checking = True
        job = Job(_checked_preview, RunConfig.from_dict(self.config.to_dict()))
        job.finished.connect(self._on_checked)
        job.failed.connect(self._on_check_failed)
        self._job = job.start()
        return job

    def _on_checked(self, result: tuple[list[str], SftPreview | None]) -> None:
        if self.sender() is self._job:
            self._checking = False
            problems, shown = result
            self._show(problems, shown)

    def _on_check_failed(self, message: str) -> None:
        if self.sender() is self._job:
            self._checking = False
            self._show([message], None)

    def _show(self, problems: list[str], shown: SftPreview | None, status: str = "") -> None:
        self._problems = problems or ([] if shown else [status or "no examples"])
        self.show_problems(problems)
        if shown is not None:
            status = f"{shown.count:,} examples; template: {shown.template}." + skipped_text(shown.skipped)
        self.status.setText(status or f"{len(problems)} problem(s); fix them to see the preview.")
        self.status.setToolTip("\n".join(shown.skipped) if shown and len(shown.skipped) > 1 else "")
        self.preview.setHtml(preview_html(shown) if shown else "")
        self.preview.setVisible(shown is not None)

    def validatePage(self) -> bool:
        """The settings' problems, then the data's (every bad record with file and line)."""
        if self._timer.isActive():
            self._timer.stop()
            self.check()
        wait_while(lambda: self._checking)
        problems = self.page_problems() or self._problems
        self.show_problems(problems)
        return not problems


def _checked_preview(config) -> tuple[list[str], SftPreview | None]:
    """(every problem of the data, each with file and line; None) or ([], the preview)."""
    try:
        return [], preview_examples(config, PREVIEW_COUNT)
    except SftDataError as exc:
        return [str(p) for p in exc.problems], None


def skipped_text(skipped: list[str]) -> str:
    """" 2 bad records are left out: a.jsonl line 3: …; and 1 more (hover for all)"
    (sft.skip_bad), or "". The first only: each names its fix, and three of them took seven lines
    of the page at its default size (the status label's tooltip lists them all)."""
    if not skipped:
        return ""
    more = f"; and {len(skipped) - 1:,} more (hover for all)" if len(skipped) > 1 else ""
    return f" {len(skipped):,} bad record{'s are' if len(skipped) != 1 else ' is'} left out: {skipped[0]}{more}"


def preview_html(shown: SftPreview) -> str:
    """The examples as HTML, under a line saying what the highlight means: each one's file:line,
    then its text, the trained pieces highlighted."""
    parts = [f"<p style='color:gray;margin:0 0 4px 0'>{PREVIEW_KEY}</p>"]
    for origin, pieces in shown.examples:
        body = "".join(f"<span style='{TRAINED_STYLE}'>{html.escape(text)}</span>" if trained
                       else html.escape(text) for text, trained in pieces)
        parts.append(f"<p style='color:gray;margin:6px 0 2px 0'>{html.escape(origin)}</p>"
                     f"<pre style='white-space:pre-wrap;margin:0'>{body}</pre>")
    return "".join(parts)


def origin_text(config) -> str:
    """Where the run starts: 'Starts from step 200 of pharma (/runs/pharma-…)'."""
    if not config.parent_run:
        return f"Starts from {config.model.name_or_path or 'the model chosen'}."
    try:
        name = read_json(RunPaths(Path(config.parent_run)).config).get("name") or Path(config.parent_run).name
    except (OSError, ValueError):
        name = Path(config.parent_run).name
    return f"Starts from step {config.parent_step} of {name} ({config.parent_run})."
