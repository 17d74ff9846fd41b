"""Weight interpolation in the comparison view: Interpolate… evaluates the models on the straight
line between the base model and the selected checkpoint (cpt_studio.core.interpolate) in the
background, and the curve goes on the gain-vs-forgetting scatter, from the base (α = 0, at the
origin) to the checkpoint's own point (α = 1). Hovering a point of the curve shows its numbers,
clicking it chooses that α, and Export this α… writes that model as an HF folder.

    panel = InterpolationPanel(scatter, rows)   # draws the curves the runs already saved
    panel.set_checkpoint(run_dir, step)         # the table's selection (None: nothing chosen)
    panel.start("0,0.25,0.5,0.75,1")            # what Interpolate… does once the α are given
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core.interpolate import (
    DEFAULT_ALPHAS,
    InterpolationCurve,
    export_interpolated,
    interpolation_curve,
    parse_alphas,
    point_summary,
)

from .checkpoint_actions import ask_export_folder, show_export_done
from .compare_scatter import GainForgettingScatter, run_colour
from .job_progress import JobProgress
from .jobs import Job
from .theme import styled

DEFAULT_ALPHA_TEXT = ",".join(f"{a:g}" for a in DEFAULT_ALPHAS)


def curve_positions(curve: InterpolationCurve) -> list[tuple[int, tuple[float, float]]]:
    """(index of the point, (domain gain %, forgetting %)) of each point with both numbers."""
    return [(i, (p.domain_gain * 100, p.forgetting * 100)) for i, p in enumerate(curve.points)
            if p.forgetting is not None and math.isfinite(p.domain_gain) and math.isfinite(p.forgetting)]


class InterpolationPanel(QWidget):
    curve_drawn = Signal(object)
    """(run_dir, step) of a curve just drawn on the scatter (saved, or computed now)."""

    def __init__(self, scatter: GainForgettingScatter, rows: list[dict[str, Any]], parent=None):
        super().__init__(parent)
        self.scatter, self.rows = scatter, rows
        self.colours = {run_id: run_colour(i) for i, run_id in
                        enumerate(dict.fromkeys(row["run_id"] for row in rows))}
        self.run_dir: Path | None = None
        self.step: int | None = None
        self.chosen: tuple[Path, int, float] | None = None
        """(run_dir, step, α) of the curve point clicked last."""
        self.drawn: dict[tuple[str, int], InterpolationCurve] = {}
        self.shown: dict[tuple[str, int], list[int]] = {}
        """For each drawn curve, the indices of its points on the scatter (both numbers known)."""
        self.button = QPushButton("Interpolate…", clicked=self._on_interpolate_clicked,
                                  objectName="interpolate")
        self.export_button = QPushButton("Export this α…", clicked=self._on_export_clicked,
                                         objectName="export_alpha", enabled=False,
                                         toolTip="Click a point of an interpolation curve first")
        self.progress = JobProgress()
        self.info = QLabel(wordWrap=True, objectName="interpolation_info")
        styled(self.info, "color:{muted};")
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.progress, stretch=4)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.info)
        scatter.curve_point_selected.connect(self._on_curve_point_selected)
        self.set_checkpoint(None, None)
        self.draw_saved()

    def set_checkpoint(self, run_dir: Path | None, step: int | None) -> None:
        self.run_dir, self.step = run_dir, step
        chosen = run_dir is not None and bool(step)
        self.button.setEnabled(chosen and self.progress.job is None)
        self.button.setToolTip(
            f"Evaluate the models between the base model (α = 0) and step {step} (α = 1) on every "
            "evaluation set, in the background, and draw the curve on the scatter: a point "
            "between them often keeps most of the domain gain with less forgetting"
            if chosen else "Select a checkpoint first")

    def draw_saved(self) -> None:
        """Draw every curve already saved in the runs' folders."""
        for row in self.rows:
            if row["step"]:
                curve = InterpolationCurve.load(Path(row["run_id"]), row["step"])
                if curve is not None:
                    self.draw(Path(row["run_id"]), curve)

    def draw(self, run_dir: Path, curve: InterpolationCurve) -> None:
        """Put `curve` on the scatter (replacing an earlier one of the same checkpoint)."""
        key = (str(run_dir), curve.step)
        shown = curve_positions(curve)
        labels = [f"α={curve.points[i].alpha:g}" if 0 < curve.points[i].alpha < 1 else ""
                  for i, _ in shown]
        tips = [point_summary(curve.points[i], curve.step) + "\n(click to choose this α)" for i, _ in shown]
        self.drawn[key] = curve
        self.scatter.add_curve(key, [pos for _, pos in shown], labels, tips,
                               self.colours.get(str(run_dir), run_colour(0)))
        self.shown[key] = [i for i, _ in shown]
        if not self.info.text():
            self.info.setText("Dotted: interpolation between the base model and a checkpoint "
                              "(hover a point for its numbers; click it to export that α).")
        self.curve_drawn.emit((run_dir, curve.step))

    def start(self, alphas_text: str) -> Job | None:
        """Evaluate the α of `alphas_text` ('0,0.5,1') for the selected checkpoint in a
        cancellable background job; None (the reason shown) for a bad α list."""
        try:
            alphas = parse_alphas(alphas_text)
        except ValueError as exc:
            self.info.setText(f"⚠ {exc}".replace("--alpha", "α"))
            return None
        run_dir, step = self.run_dir, self.step
        job = Job(interpolation_curve, run_dir, step, alphas, cancellable=True)
        job.finished.connect(lambda curve: self._on_finished(run_dir, curve))
        job.failed.connect(lambda message: self._on_ended(f"⚠ Interpolation failed: {message}"))
        job.cancelled.connect(lambda: self._on_ended("Interpolation cancelled; nothing was saved."))
        self.button.setEnabled(False)
        self.progress.watch(job)
        return job.start()

    def _on_interpolate_clicked(self) -> None:
        text, ok = QInputDialog.getText(
            self, "Interpolate", f"α values between the base model (0) and step {self.step} (1), "
            "separated by commas:", text=DEFAULT_ALPHA_TEXT)
        if ok:
            self.start(text)

    def _on_finished(self, run_dir: Path, curve: InterpolationCurve) -> None:
        self._on_ended("")
        self.draw(run_dir, curve)

    def _on_ended(self, message: str) -> None:
        self.button.setEnabled(self.run_dir is not None and bool(self.step))
        if message:
            self.info.setText(message)

    def _on_curve_point_selected(self, key, index: int) -> None:
        curve = self.drawn[key]
        point = curve.points[self.shown[key][index]]
        self.chosen = (Path(key[0]), curve.step, point.alpha)
        self.info.setText(point_summary(point, curve.step).replace("\n", "; "))
        self.export_button.setEnabled(True)
        self.export_button.setToolTip(f"Write the model at α = {point.alpha:g} as an HF folder with "
                                      "its tokenizer and a model card")

    def _on_export_clicked(self) -> None:
        run_dir, step, alpha = self.chosen
        dest = ask_export_folder(self, f"Export step {step} at α = {alpha:g} into a new or empty folder",
                                 run_dir, step, f"-alpha-{alpha:g}")
        if dest is None:
            return
        self.export_button.setEnabled(False)
        self.export_job = job = Job(export_interpolated, run_dir, step, alpha, dest)
        job.finished.connect(lambda folder: show_export_done(self, step, folder))
        job.failed.connect(lambda message: QMessageBox.warning(self, "Export", f"The export failed:\n{message}"))
        for signal in (job.finished, job.failed):
            signal.connect(lambda *_: self.export_button.setEnabled(True))
        job.start()
