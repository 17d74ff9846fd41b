"""The setup wizard: one page per section of a RunConfig; Start creates the run folder and
launches the detached worker."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWizard

from cpt_studio.core.config import RunConfig
from cpt_studio.core.runs import create_run, start_worker

from .pages.corpus_page import CorpusPage
from .pages.eval_page import EvalPage
from .pages.method_page import MethodPage
from .pages.model_page import ModelPage
from .pages.replay_page import ReplayPage
from .pages.schedule_page import SchedulePage
from .pages.summary_page import SummaryPage
from .pages.tokenizer_page import TokenizerPage


class RunWizard(QWizard):
    run_started = Signal(Path)

    def __init__(self, config: RunConfig | None = None, runs_root: Path | None = None, parent=None):
        super().__init__(parent)
        self.config = config or RunConfig()
        self.runs_root = runs_root
        self.setWindowTitle("New CPT run")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Start")
        self.pages = [ModelPage(), CorpusPage(), ReplayPage(), SchedulePage(), TokenizerPage(),
                      MethodPage(), EvalPage(), SummaryPage()]
        for page in self.pages:
            self.addPage(page)
        self.resize(820, 700)

    def accept(self) -> None:
        for page in self.pages:
            page.store(self.config)
        run_dir = create_run(self.config, self.runs_root)
        start_worker(run_dir, detach=True)
        self.run_dir = run_dir
        super().accept()
        self.run_started.emit(run_dir)
