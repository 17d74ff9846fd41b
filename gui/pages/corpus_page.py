"""Page 2, the corpora: domain and general sources, every problem listed with file and line,
counts and a preview. The wizard does not go on while a source has a bad record (unless
the user chooses to skip bad records)."""

from __future__ import annotations

from dataclasses import astuple

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
)

from cpt_studio.core.corpus import Document, SourceSpec, read_sources, validate
from cpt_studio.core.progress import Progress

from ..job_progress import JobProgress
from ..jobs import Job
from ..recent import remember_folder, start_folder
from ..setting_help import explain
from .base import ConfigPage, display_only

PREVIEW_DOCUMENTS = 3


def check_corpus(domain: list[SourceSpec], general: list[SourceSpec],
                 progress: Progress | None = None) -> dict:
    """Validation of both corpora and a short preview of each (runs off the GUI thread);
    `progress` hears each corpus's files done of all (raising Cancelled there stops it)."""
    result = {}
    for name, specs in (("domain", domain), ("general", general)):
        if specs:
            report = validate(specs, progress and (lambda done, total, what, name=name:
                                                   progress(done, total, f"{name} corpus: {what}")))
            preview = [d for d in _first_documents(specs)]
            result[name] = (report, preview)
    return result


def _first_documents(specs):
    count = 0
    for item in read_sources(specs):
        if isinstance(item, Document):
            yield item
            count += 1
            if count == PREVIEW_DOCUMENTS:
                return


class SourceList(QGroupBox):
    def __init__(self, title: str, name: str):
        super().__init__(title)
        self.list = QListWidget(objectName=f"{name}_sources")
        self.list.setMaximumHeight(80)
        buttons = QHBoxLayout()
        for label, slot in (("Add files…", self._on_add_files), ("Add folder…", self._on_add_folder),
                            ("Remove", self._on_remove)):
            buttons.addWidget(QPushButton(label, clicked=slot))
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(buttons)

    def paths(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def set_paths(self, paths: list[str]) -> None:
        self.list.clear()
        self.list.addItems(paths)

    def add(self, path: str) -> None:
        if path not in self.paths():
            self.list.addItem(path)

    def _on_add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Corpus files", start_folder("corpus"),
                                                "Corpus (*.jsonl *.ndjson *.json *.txt *.parquet *.gz)")
        remember_folder("corpus", files)
        for path in files:
            self.add(path)

    def _on_add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Corpus folder", start_folder("corpus"))
        remember_folder("corpus", folder)
        if folder:
            self.add(folder)

    def _on_remove(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))


class CorpusPage(ConfigPage):
    sections = ("corpus:", "eval: held-out")

    def __init__(self):
        super().__init__("Corpora", "The domain text to learn, and general text replayed so the model "
                                    "keeps what it knows.")
        self.domain = SourceList("Domain corpus", "domain")
        self.general = SourceList("General (replay) corpus", "general")
        self.text_field = QLineEdit("text", objectName="text_field")
        self.txt_mode = QComboBox(objectName="txt_mode")
        self.txt_mode.addItems(["file", "blocks"])
        self.skip_bad = QCheckBox("Skip bad records (they are left out and counted)", objectName="skip_bad")
        self.heldout = QDoubleSpinBox(objectName="heldout_percent", suffix=" %", decimals=1,
                                      minimum=0.1, maximum=49.0, value=2.0)
        explain(self.domain, "corpus.domain")
        explain(self.general, "corpus.general")
        explain(self.text_field, "corpus.domain[].text_field", "corpus.general[].text_field")
        explain(self.txt_mode, "corpus.domain[].txt_mode", "corpus.general[].txt_mode")
        explain(self.skip_bad, "corpus.skip_bad")
        explain(self.heldout, "eval.heldout_fraction")
        form = QFormLayout()
        form.addRow("Text field (JSONL, Parquet):", self.text_field)
        form.addRow("Plain text: one document per", self.txt_mode)
        form.addRow("Held out for evaluation:", self.heldout)
        self.check_button = QPushButton("Check corpus", clicked=self.start_check, objectName="check_corpus")
        self.progress = JobProgress()
        self.report = QLabel("", wordWrap=True, objectName="corpus_report")
        self.problem_list = display_only(QListWidget(objectName="corpus_problems"))
        self.problem_list.setMaximumHeight(110)
        self.problem_list.hide()
        for widget in (self.domain, self.general):
            self.layout_.addWidget(widget)
        self.layout_.addLayout(form)
        self.layout_.addWidget(self.skip_bad)
        self.layout_.addWidget(self.check_button)
        self.layout_.addWidget(self.progress)
        self.layout_.addWidget(self.report)
        self.layout_.addWidget(self.problem_list)
        self.finish_layout()
        self._checked: tuple | None = None
        self._result: dict = {}

    def _specs(self, paths: list[str]) -> list[SourceSpec]:
        return [SourceSpec(p, self.text_field.text().strip(), self.txt_mode.currentText()) for p in paths]

    def load(self, config) -> None:
        self.domain.set_paths([s.path for s in config.corpus.domain])
        self.general.set_paths([s.path for s in config.corpus.general])
        first = (config.corpus.domain + config.corpus.general)[:1]
        if first:
            self.text_field.setText(first[0].text_field)
            self.txt_mode.setCurrentText(first[0].txt_mode)
        self.skip_bad.setChecked(config.corpus.skip_bad)
        self.heldout.setValue(config.eval.heldout_fraction * 100)

    def store(self, config) -> None:
        config.corpus.domain = self._specs(self.domain.paths())
        config.corpus.general = self._specs(self.general.paths())
        config.corpus.skip_bad = self.skip_bad.isChecked()
        config.eval.heldout_fraction = round(self.heldout.value() / 100, 6)

    def _sources(self) -> tuple[list[SourceSpec], list[SourceSpec]]:
        """The domain and general sources as the run will read them: the config's, into which
        the widgets' edits go (a loaded setup may give each source its own text field)."""
        return list(self.config.corpus.domain), list(self.config.corpus.general)

    def _key(self) -> tuple:
        return tuple(tuple(astuple(spec) for spec in specs) for specs in self._sources())

    def start_check(self) -> Job:
        self.check_button.setEnabled(False)
        self.report.setText("Checking every record…")
        key = self._key()
        job = Job(check_corpus, *self._sources(), cancellable=True)
        job.finished.connect(lambda result: self._on_checked(key, result))
        job.failed.connect(lambda message: self.report.setText(f"⚠ {message}"))
        job.failed.connect(lambda _: self.check_button.setEnabled(True))
        job.cancelled.connect(self._on_check_cancelled)
        self.progress.watch(job)
        self._job = job.start()
        return job

    def _on_check_cancelled(self) -> None:
        self.check_button.setEnabled(True)
        self.report.setText("Check cancelled: the corpus will be checked when you go on.")

    def _on_checked(self, key: tuple, result: dict) -> None:
        self.check_button.setEnabled(True)
        self._checked, self._result = key, result
        self._show_result(result)

    def _show_result(self, result: dict) -> None:
        lines, problems = [], []
        for name, (report, preview) in result.items():
            lines.append(f"<b>{name}</b>: {report.documents:,} documents, {report.characters:,} characters "
                         f"in {len(report.files)} file(s); {len(report.problems)} problem(s)")
            lines += [f"&nbsp;&nbsp;<i>{d.file.rsplit('/', 1)[-1]}:{d.line}</i> "
                      f"{_escape(' '.join(d.text.split())[:110])}…" for d in preview]
            problems += [str(p) for p in report.problems]
        self.report.setText("<br>".join(lines))
        self.problem_list.clear()
        self.problem_list.addItems(problems[:500])
        self.problem_list.setVisible(bool(problems))

    def corpus_problems(self) -> list[str]:
        """Every bad record, checking now if the sources changed since the last check."""
        if self._checked != self._key():
            self._on_checked(self._key(), check_corpus(*self._sources()))
        return [str(p) for report, _ in self._result.values() for p in report.problems]

    def validatePage(self) -> bool:
        problems = self.page_problems()
        if not problems:
            bad = self.corpus_problems()
            if bad and not self.skip_bad.isChecked():
                problems = [f"{len(bad)} bad record(s): fix them, or tick 'Skip bad records'"] + bad[:5]
            problems += self.empty_corpora()
        self.show_problems(problems)
        return not problems

    def empty_corpora(self) -> list[str]:
        """A corpus with no document to train on is refused, bad records skipped or not."""
        paths = {"domain": self.domain.paths(), "general": self.general.paths()}
        return [f"{name} corpus: {', '.join(paths[name])} yields no documents; add documents or fix the records"
                for name, (report, _) in self._result.items() if report.documents == 0]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
