"""Page 8, the summary: the run as the user will read it, the pre-flight's checks (problems
disable Start, warnings are listed), the plan (steps, time, memory rated against this machine),
and Start (the wizard's buttons save and load the setup and copy its CLI command)."""

from __future__ import annotations

import copy
import html
from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
)

from cpt_studio.core.config import REMEDY_WORDS, RunConfig
from cpt_studio.core.plan import format_plan, plan_run
from cpt_studio.core.preflight import Preflight, preflight
from cpt_studio.core.recipe import learning_rates_text

from ..job_progress import JobProgress
from ..jobs import Job
from ..setting_help import explain
from ..speed_dialog import SpeedDialog, speed_words
from .base import ConfigPage
from .pending import wait_while

PROBE_STEPS = 3
"""Training steps 'Measure speed' times (after one that pays for allocation and compilation)."""
MEASURE_TIP = ("Load the model and train a few steps at the run's batch on this machine: the plan's time "
               "then uses the measured speed, remembered for later plans of this machine and method")


class SummaryPage(ConfigPage):
    sections = ("name:",)

    def __init__(self):
        super().__init__("Summary", "Check the plan, then Start. The run continues if you close the app.")
        self.name = QLineEdit(objectName="run_name")
        self.separator = QLineEdit(objectName="separator",
                                   placeholderText="automatic: the tokenizer's end-of-text token")
        explain(self.name, "name")
        explain(self.separator, "corpus.separator")
        self.summary = QPlainTextEdit(readOnly=True, objectName="summary")
        self.plan = QLabel("", wordWrap=True, objectName="plan")
        buttons = QHBoxLayout()
        self.estimate_button = QPushButton("Estimate time and memory", clicked=self.start_plan)
        buttons.addWidget(self.estimate_button)
        self.measure_button = QPushButton("Measure speed", clicked=lambda: self.start_plan(PROBE_STEPS),
                                          objectName="measure", toolTip=MEASURE_TIP)
        buttons.addWidget(self.measure_button)
        self.sweep_button = QPushButton("Find settings (sweep)…", clicked=self._on_sweep, objectName="sweep",
                                        toolTip="Short runs of this setup over a grid of replay ratios and "
                                        "learning rates, to see which trade-off to start")
        buttons.addWidget(self.sweep_button)
        self.speed_button = QPushButton("Speed and memory…", clicked=self._on_speed, objectName="speed",
                                        toolTip="Precision, attention kernel, gradient checkpointing, fused "
                                        "kernels, torch.compile: automatic unless set here")
        buttons.addWidget(self.speed_button)
        buttons.addStretch(1)
        self.progress = JobProgress()
        row = QHBoxLayout()
        row.addWidget(QLabel("Run name:"))
        row.addWidget(self.name)
        self.separator_label = QLabel("Document separator:")
        row.addWidget(self.separator_label)
        row.addWidget(self.separator)
        self.layout_.addLayout(row)
        self.layout_.addWidget(self.summary)
        self.layout_.addLayout(buttons)
        self.layout_.addWidget(self.progress)
        scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame, objectName="plan_scroll")
        scroll.setWidget(self.plan)  # the plan wraps and scrolls: at the wizard's size it was cut
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.layout_.addWidget(scroll, stretch=3)
        self.checks = QLabel("", wordWrap=True, objectName="checks", textFormat=Qt.TextFormat.PlainText)
        self.layout_.addWidget(self.checks)
        self.finish_layout()
        self.name.textChanged.connect(self._on_name_changed)
        self._blocked = self._checking = False

    def load(self, config) -> None:
        self.name.setText(config.name)
        self.separator.setText(config.corpus.separator)
        self.summary.setPlainText(describe(config))
        cpt = config.stage != "sft"  # a sweep varies CPT's replay; SFT formats examples by template
        self.sweep_button.setVisible(cpt)
        self.separator.setVisible(cpt)
        self.separator_label.setVisible(cpt)
        problems = config.validate()
        self.show_problems(problems)
        self.plan.setText("" if problems or not cpt else "Press 'Estimate time and memory' for the plan "
                                                        "(it tokenizes the corpora once; the run reuses them).")
        if self.isVisible():  # a setup loaded while the page is shown; else showEvent checks
            self.check()

    def _on_sweep(self) -> None:
        self.commit()
        self.wizard().sweep_requested.emit(copy.deepcopy(self.config))

    def _on_speed(self) -> None:
        """The system settings in a dialog; a change is checked again and the plan asked anew."""
        self.commit()
        dialog = SpeedDialog(self.config.system, self)
        if dialog.exec() != QDialog.DialogCode.Accepted or dialog.system() == self.config.system:
            return
        self.config.system = dialog.system()
        self.load(self.config)  # the summary again, its plan asked anew, the checks run again

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.check()

    def store(self, config) -> None:
        config.name = self.name.text().strip()
        config.corpus.separator = self.separator.text().strip()

    def validatePage(self) -> bool:
        """The whole config, every page's problems, and what the model and this machine cannot
        do with it (cpt_studio.core.preflight; the worker reads and checks the corpus as it tokenizes)."""
        self.commit()
        wait_while(lambda: self._checking)  # both import transformers
        checked = preflight(self.config, read_corpus=False)
        self.show_checks(checked)
        return not checked.problems

    def isComplete(self) -> bool:
        """Start is enabled unless the last check found a problem (validatePage checks again)."""
        return not self._blocked

    def check(self) -> Job:
        """The pre-flight (cpt_studio.core.preflight) off the GUI thread: problems shown as the
        page's problems, warnings listed under the plan."""
        self.checks.setText("Checking the setup…")
        self._planned = False  # a plan's checks include these and its memory: they win
        self._checking = True
        job = Job(preflight, RunConfig.from_dict(self.config.to_dict()), read_corpus=False)
        job.finished.connect(self._on_checked)  # a method: no call once the page is gone
        job.failed.connect(self._on_check_failed)
        self._check_job = job.start()
        return job

    def _on_checked(self, checked: Preflight) -> None:
        if self.sender() is self._check_job:  # not a check of an older config
            self._checking = False
            if not self._planned:
                self.show_checks(checked)

    def _on_check_failed(self, message: str) -> None:
        if self.sender() is self._check_job:
            self._checking = False
            self.checks.setText(f"⚠ {message}")

    def show_checks(self, checked: Preflight, memory: str = "") -> None:
        """Problems as the page's problems (Start is disabled while there are any); the
        warnings, and the plan's memory rating in words when there is one, in the checks' label."""
        self.show_problems(checked.problems)
        if bool(checked.problems) != self._blocked:
            self._blocked = bool(checked.problems)
            self.completeChanged.emit()
        lines = [f"Memory: {memory}"] if memory else []
        lines += [f"⚠ {w}" for w in checked.warnings]
        self.checks.setText("\n".join(lines) if lines else "No warnings: the checks found nothing to change.")

    def _on_name_changed(self) -> None:
        if self.wizard() and not self._loading:
            self.commit()
            self.summary.setPlainText(describe(self.config))

    def start_plan(self, probe_steps: int = 0) -> Job:
        """The plan off the GUI thread; with `probe_steps`, a few real training steps measure this
        machine's speed first (remembered for later plans: cpt_studio.core.throughput)."""
        self.commit()
        self.plan.setText("Measuring: loading the model and training a few steps…" if probe_steps
                          else "Estimating: tokenizing the instruction data and reading the model…"
                          if self.config.stage == "sft"
                          else "Estimating: tokenizing the corpora and reading the model…")
        job = Job(plan_run, RunConfig.from_dict(self.config.to_dict()), cancellable=True, probe_steps=probe_steps)
        job.finished.connect(self._on_planned)
        job.failed.connect(lambda message: self.plan.setText(f"⚠ {message}"))
        job.cancelled.connect(lambda: self.plan.setText("Estimate cancelled."))
        for button in (self.estimate_button, self.measure_button):
            button.setEnabled(False)
            for signal in (job.finished, job.failed, job.cancelled):
                signal.connect(lambda *_, b=button: b.setEnabled(True))
        self.progress.watch(job)
        self._job = job.start()
        return job

    def _on_planned(self, plan) -> None:
        self._planned = True
        self.plan.setText(f"<pre style='white-space:pre-wrap'>{html.escape(format_plan(replace(plan, warnings=[])))}</pre>")
        self.show_checks(Preflight(warnings=plan.warnings), memory=plan.memory_rating)


def describe(config: RunConfig) -> str:
    """The config in the user's words (its warnings are the pre-flight's, listed apart)."""
    corpus, schedule, batch, method = config.corpus, config.schedule, config.batch, config.method
    lora = (f"LoRA r={method.lora_rank}, alpha={method.lora_alpha} on {', '.join(method.target_modules)}"
            if method.kind == "lora" else "full-parameter")
    sft = config.stage == "sft"
    length = (f"{schedule.max_steps:,} steps" if schedule.max_steps else
              f"{schedule.token_budget:,} tokens" if schedule.token_budget else
              f"{schedule.epochs:g} epochs over the instruction data" if sft else
              "one pass over the domain corpus" if schedule.epochs == 1 else
              f"{schedule.epochs:g} passes over the domain corpus")
    start = (f"Starts from: step {config.parent_step} of the run {config.parent_run} (its weights exactly; "
             "a fresh optimizer, the learning rate warmed up and decayed again over this run's steps)"
             if config.parent_run else f"Base model: {config.model.name_or_path or '(not chosen)'}")
    data = (f"Instruction data: {', '.join(config.sft.data) or '(none)'} ({config.sft.format} format, "
            f"{config.sft.template} chat template; loss on the responses only)" if sft else
            f"Domain corpus: {', '.join(s.path for s in corpus.domain) or '(none)'}")
    lines = [
        start,
        data,
        f"General corpus: {', '.join(s.path for s in corpus.general) or '(none)'}",
        f"Replay: {corpus.replay_ratio:.1%} of every step; held out: {heldout_words(config)}",
        *([] if sft else [  # an SFT run keeps its parent's tokenizer and formats examples by template
            f"Tokenizer extension: {'on' if config.tokenizer.extend else 'off'}",
            f"Documents separated by: {corpus.separator or 'the tokenizer end-of-text token (the plan names it)'}"]),
        f"Method: {lora}; " + (f"EWC strength {config.ewc.strength:g} on {config.ewc.group}"
                                if config.ewc.enabled else "no EWC"),
        f"Schedule: peak LR {schedule.peak_lr:g}, warmup {schedule.warmup_ratio:.1%}, {schedule.decay} "
        f"to {schedule.min_lr_ratio:.0%} of peak, {length}",
        *([f"Learning rate per group: {rates}"] if (rates := learning_rates_text(config)) else []),
        f"Batch: {batch.micro_batch} x {batch.grad_accum} sequences of {batch.seq_len} tokens per step",
        f"Speed and memory: {speed_words(config.system)}",
        f"Evaluation every {config.eval.interval} steps; checkpoints every {config.checkpoints.interval}, "
        f"keeping {config.checkpoints.keep}",
        (f"Guard: roll back above {config.guard.threshold:.1%} forgetting, then {REMEDY_WORDS.get(config.guard.remedy, config.guard.remedy)} "
         f"(at most {config.guard.max_rollbacks} times)" if config.guard.enabled else "Guard: off"),
    ]
    return "\n".join(lines)


def heldout_words(config) -> str:
    """What eval.heldout_count / heldout_fraction hold out of each corpus, in words (the count
    wins when set; the summary said the fraction whatever)."""
    count, fraction = config.eval.heldout_count, config.eval.heldout_fraction
    if config.stage == "sft":
        return (f"{count:,} instruction examples and {count:,} general documents" if count is not None
                else f"{fraction:.1%} of the instruction examples and of the general corpus")
    return f"{count:,} documents of each corpus" if count is not None else f"{fraction:.1%} of each corpus"
