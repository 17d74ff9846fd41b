"""The setup wizard: one page per section of a RunConfig; Start creates the run folder and
launches the detached worker.

`wizard.config` is the one object every page shows, the summary describes, and Start runs:
the pages write the user's edits into it as they are made (ConfigPage.commit), and loading
a setup (Load setup…, a run cloned by "New run from this run") shows the new object on
every page (set_config). Load setup…, Save setup… and Copy CLI command are buttons of the
wizard, there on every page.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QFileDialog, QWizard

from cpt_studio.core.chain import create_chained_run
from cpt_studio.core.config import ConfigError, RunConfig
from cpt_studio.core.runs import (
    create_run,
    file_name,
    save_setup,
    setup_holds,
    setups_dir,
    start_worker,
    train_command,
)

from . import recent
from .jobs import Job
from .pages.base import ConfigPage
from .pages.corpus_page import CorpusPage
from .pages.eval_page import EvalPage
from .pages.method_page import MethodPage
from .pages.model_page import ModelPage
from .pages.replay_page import ReplayPage
from .pages.schedule_page import SchedulePage
from .pages.summary_page import SummaryPage
from .pages.tokenizer_page import TokenizerPage

Button, Option = QWizard.WizardButton, QWizard.WizardOption
LOAD, SAVE, COPY = Button.CustomButton1, Button.CustomButton2, Button.CustomButton3
SETUP_BUTTONS = {
    LOAD: (Option.HaveCustomButton1, "Load setup…", "Open a setup file (JSON): every page shows it, "
                                                    "and Start runs it"),
    SAVE: (Option.HaveCustomButton2, "Save setup…", "Save this setup as a file: Load setup opens it, "
                                                    "`cpt-studio train FILE` runs it"),
    COPY: (Option.HaveCustomButton3, "Copy CLI command", "Copy a command that runs this setup from a "
           "terminal (the setup is saved first, in the data folder's setups/, when no saved file holds it)"),
}


class RunWizard(QWizard):
    run_started = Signal(Path)
    TITLE = "New CPT run"
    STAGE = "cpt"
    """RunConfig.stage of the runs this wizard makes: a setup of another stage is not loaded."""
    sweep_requested = Signal(object)
    """The summary's "Find settings (sweep)…": a copy of the setup (RunConfig) to sweep."""

    def __init__(self, config: RunConfig | None = None, runs_root: Path | None = None, parent=None):
        super().__init__(parent)
        self.runs_root = runs_root
        self.saved: Path | None = None
        """The setup file last loaded or saved (Copy CLI command reuses it while it holds the setup)."""
        self.setWindowTitle(self.TITLE)
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setButtonText(Button.FinishButton, "Start")
        self.pages: list[ConfigPage] = self.make_pages()
        for page in self.pages:
            self.addPage(page)
        self._setup_buttons()
        self.set_config(config or RunConfig())
        self.resize(820, 700)

    def make_pages(self) -> list[ConfigPage]:
        """The pages, in order (a wizard for another stage shows others)."""
        return [ModelPage(), CorpusPage(), ReplayPage(), SchedulePage(), TokenizerPage(), MethodPage(),
                EvalPage(), SummaryPage()]

    def _setup_buttons(self) -> None:
        for which, (option, text, tip) in SETUP_BUTTONS.items():
            self.setOption(option, True)
            self.setButtonText(which, text)
            self.button(which).setToolTip(tip)
        self.setButtonLayout([LOAD, SAVE, COPY, Button.Stretch, Button.BackButton, Button.NextButton,
                              Button.FinishButton, Button.CancelButton])
        self.customButtonClicked.connect(self._on_setup_button)

    def set_config(self, config: RunConfig) -> None:
        """Make `config` the object every page shows, the summary describes and Start runs."""
        self.config = config
        for page in self.pages:
            page.reload(config)

    def notify(self, text: str) -> None:
        """Say on the page shown what a button did (Loaded…, Saved…, Copied…)."""
        self.currentPage().show_notice(text)

    # --- setups -------------------------------------------------------------------------
    def _on_setup_button(self, which: int) -> None:
        if which == LOAD.value:
            path, _ = QFileDialog.getOpenFileName(self, "Load setup", str(setups_dir()), "Setup (*.json)")
            if path:
                self.load_setup(Path(path))
        elif which == SAVE.value:
            default = self.saved or setups_dir() / f"{file_name(self.config.name)}.json"
            path, _ = QFileDialog.getSaveFileName(self, "Save setup", str(default), "Setup (*.json)")
            if path:
                self.save_setup(Path(path))
        elif which == COPY.value:
            self.copy_command()

    def load_setup(self, path: Path) -> bool:
        """Show the setup file on every page; when it cannot be read, list every problem (each
        naming the file and the setting) on the page shown and change nothing."""
        try:
            config = RunConfig.load(path)
        except ConfigError as exc:
            self.currentPage().show_problems(exc.problems)
            self.notify(f"Nothing was loaded from {path}: fix the problems above, then load it again.")
            return False
        if config.stage != self.STAGE:
            self.currentPage().show_problems([self.other_stage_problem(path, config.stage)])
            self.notify(f"Nothing was loaded from {path}.")
            return False
        self.set_config(config)
        self.saved = Path(path)
        recent.remember("setups", self.saved)
        self.notify(f"Loaded {path}")
        return True

    def other_stage_problem(self, path: Path, stage: str) -> str:
        """Why a setup of another stage is not loaded here, and where it loads."""
        return (f"{path}: stage: an instruction-tuning (SFT) setup; open it with Instruction-tune… on a "
                "run's checkpoint, then Load setup there (or run it: cpt-studio sft --config FILE)"
                if stage == "sft" else
                f"{path}: stage: a {stage.upper()} setup, not an instruction-tuning one; load it in New run…")

    def save_setup(self, path: Path | None = None) -> Path:
        """Save the setup to `path` (default: the data folder's setups/, see core.runs.save_setup)."""
        self.saved = save_setup(self.config, path)
        recent.remember("setups", self.saved)
        self.notify(f"Saved the setup to {self.saved}")
        return self.saved

    def copy_command(self) -> str:
        """Copy `cpt-studio train FILE` for this setup to the clipboard, FILE being the setup
        file last loaded or saved if it still holds this setup, else a new one in setups/."""
        reused = self.saved is not None and setup_holds(self.saved, self.config)
        if not reused:
            self.saved = save_setup(self.config)
        command = train_command(self.saved)
        QGuiApplication.clipboard().setText(command)
        self.notify(f"Copied: {command}" if reused else
                    f"Saved the setup to {self.saved}.\nCopied: {command}")
        return command

    # --- start --------------------------------------------------------------------------
    def accept(self) -> None:
        """Start: once the summary accepts the config, run exactly that object (the pages wrote
        their edits into it as they were made; nothing is read from the widgets here). A chained
        run (an SFT stage, a second CPT stage) is created off the GUI thread: its starting
        weights are resolved first, which merges a LoRA checkpoint (cpt_studio.core.chain)."""
        if not self.validateCurrentPage():
            return
        if self.config.parent_run or self.config.stage == "sft":
            self._create_chained()
            return
        try:
            run_dir = create_run(self.config, self.runs_root)
        except (ValueError, OSError) as exc:
            self.currentPage().show_problems([str(exc)])
            return
        self._start(run_dir)

    def _create_chained(self) -> Job:
        self.button(Button.FinishButton).setEnabled(False)
        self.notify("Creating the run from its parent's checkpoint (a LoRA checkpoint is merged into "
                    "its base first)…")
        job = Job(create_chained_run, RunConfig.from_dict(self.config.to_dict()), self.runs_root)
        job.finished.connect(self._start)
        job.failed.connect(self._on_create_failed)
        self._create_job = job.start()
        return job

    def _on_create_failed(self, message: str) -> None:
        self.button(Button.FinishButton).setEnabled(True)
        self.notify("")
        self.currentPage().show_problems([message])

    def _start(self, run_dir: Path) -> None:
        start_worker(run_dir)
        self.run_dir = run_dir
        QDialog.done(self, QDialog.DialogCode.Accepted.value)  # QWizard.done would validate again
        self.run_started.emit(run_dir)
