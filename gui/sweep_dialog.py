"""Find settings (sweep)…: the grid of replay ratios and peak learning rates and the steps per
run for a setup; Start creates the sweep's runs and starts it in the background
(cpt_studio.core.sweep), then says where it is (sweep_started).

    dialog = SweepDialog(config, runs_root)
    dialog.sweep_started.connect(main_window.open_sweep)
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
)

from cpt_studio.core.config import RunConfig
from cpt_studio.core.sweep import (
    SweepPlan,
    create_sweep,
    format_lr,
    parse_grid,
    plan_sweep,
    start_sweep,
)

from .theme import styled

DEFAULT_REPLAY_PERCENT = "0, 5, 15"
DEFAULT_LRS = "1e-5, 3e-5, 1e-4"
DEFAULT_STEPS = 50


class SweepDialog(QDialog):
    sweep_started = Signal(Path)
    """The sweep's folder, once its process has started."""

    def __init__(self, config: RunConfig, runs_root: Path | None = None, parent=None):
        super().__init__(parent)
        self.config, self.runs_root = config, runs_root
        self.plan: SweepPlan | None = None
        self.setWindowTitle("Find settings (sweep)")
        self.setMinimumWidth(480)
        self.replay = QLineEdit(DEFAULT_REPLAY_PERCENT, objectName="sweep_replay")
        self.lrs = QLineEdit(DEFAULT_LRS, objectName="sweep_lrs")
        self.steps = QSpinBox(objectName="sweep_steps", minimum=1, maximum=1_000_000, value=DEFAULT_STEPS)
        self.replay.setToolTip("Replay ratios in percent, separated by commas (corpus.replay_ratio)")
        self.lrs.setToolTip("Peak learning rates, separated by commas (schedule.peak_lr)")
        self.steps.setToolTip("Optimizer steps of each short run; each evaluates at step 0 and at the end")
        form = QFormLayout()
        form.addRow("Replay ratios (%):", self.replay)
        form.addRow("Peak learning rates:", self.lrs)
        form.addRow("Steps per run:", self.steps)
        self.summary = QLabel(wordWrap=True, objectName="sweep_summary")
        self.problems = QLabel(wordWrap=True, objectName="sweep_problems")
        styled(self.problems, "color:{warning};")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.addButton("Start sweep", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Short runs of <b>{self.config.name}</b> (its data, model and seed) over "
                                "every pair of replay ratio and learning rate, one after another in the "
                                "background. Each setting's domain gain and forgetting show which to use.",
                                wordWrap=True))
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.problems)
        layout.addWidget(self.buttons)
        for widget in (self.replay, self.lrs):
            widget.textChanged.connect(self._on_changed)
        self.steps.valueChanged.connect(self._on_changed)
        self._on_changed()

    def _on_changed(self) -> None:
        try:
            self.plan = plan_sweep(self.config, [p / 100 for p in parse_grid(self.replay.text(), "replay ratios")],
                                   parse_grid(self.lrs.text(), "learning rates"), self.steps.value())
        except ValueError as exc:
            self.plan = None
            self.problems.setText(str(exc))
            self.summary.setText("")
        else:
            self.problems.setText("")
            replays = dict.fromkeys(f"{s.replay_ratio * 100:g}%" for s in self.plan.settings)
            lrs = dict.fromkeys(format_lr(s.peak_lr) for s in self.plan.settings)
            self.summary.setText(f"{len(self.plan.settings)} runs ({len(replays)} replay ratios × {len(lrs)} "
                                 f"learning rates) of {self.plan.steps} steps: "
                                 f"{self.plan.steps * len(self.plan.settings):,} steps in all.")
        self.start_button.setEnabled(self.plan is not None)

    def accept(self) -> None:
        """Create the runs and start the sweep's detached process; a failure is shown here."""
        if self.plan is None:
            return
        try:
            folder = create_sweep(self.plan, self.runs_root)
            start_sweep(folder)
        except (ValueError, OSError) as exc:
            self.problems.setText(str(exc))
            return
        self.folder = folder
        super().accept()
        self.sweep_started.emit(folder)
