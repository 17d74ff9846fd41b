"""The monitor's marker track: a thin chart above the others with one labelled row per kind of
event (evaluations, checkpoints, resumes, guard decisions), x-linked to the curves.

One scatter item per row, so 2,000 evaluations cost one item, not 2,000 lines; each marker
has a tooltip, and clicking a checkpoint's marker emits `checkpoint_clicked(step)` (the
monitor opens that checkpoint in the comparison view). Resumes and guard decisions are also
vertical lines across every chart (RunCharts), being rare and worth seeing in each curve.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Signal

from .series import RunSeries

ROWS = ("guard", "resume", "checkpoint", "evaluation")
"""The track's rows, bottom to top (y = the row's index)."""
STYLE = {"evaluation": ("#fd7e14", "t1", 7), "checkpoint": ("#007bff", "d", 11),
         "resume": ("#ff9f1c", "t2", 11), "guard": ("#e41a1c", "s", 9)}
"""Each row's colour, pyqtgraph symbol and size (px)."""
TRACK_HEIGHT = 74


class MarkerTrack(QObject):
    checkpoint_clicked = Signal(int)
    """The step of the checkpoint whose marker was clicked."""

    def __init__(self, plot: pg.PlotItem, series: RunSeries):
        super().__init__()
        self.plot, self.series = plot, series
        plot.setMaximumHeight(TRACK_HEIGHT)
        plot.setMinimumHeight(TRACK_HEIGHT)
        plot.setMouseEnabled(y=False)
        plot.hideButtons()
        plot.setYRange(-0.6, len(ROWS) - 0.4, padding=0)
        plot.getAxis("left").setTicks([[(i, row) for i, row in enumerate(ROWS)], []])
        plot.getAxis("left").setStyle(tickFont=_small_font())
        plot.hideAxis("bottom")
        self.items: dict[str, pg.ScatterPlotItem] = {}
        for row in ROWS:
            colour, symbol, size = STYLE[row]
            item = pg.ScatterPlotItem(symbol=symbol, size=size, pen=pg.mkPen(colour), brush=pg.mkBrush(colour),
                                      hoverable=True, hoverSize=size + 4, tip=self._tip(row))
            plot.addItem(item)
            self.items[row] = item
        self.items["checkpoint"].sigClicked.connect(self._on_checkpoint_clicked)
        self._placed = None

    def place(self, x_key: str, x_at_steps: Callable[[np.ndarray], np.ndarray]) -> None:
        """Put every marker at its x (`x_key`: "step" or "tokens"; `x_at_steps` turns steps into
        that unit); nothing is done when nothing changed since the last call."""
        series = self.series
        placed = (series.evals.version, len(series.checkpoints), len(series.resumes), len(series.guard),
                  series.steps.version if x_key != "step" else 0, x_key)
        if placed == self._placed:
            return
        self._placed = placed
        evals = series.evals
        rows = {"evaluation": (evals[x_key].values, evals["step"].values),
                "checkpoint": self._at(series.latest_checkpoints().values(), x_key, x_at_steps),
                "resume": (x_at_steps(np.asarray(series.resumes, dtype=float)), np.asarray(series.resumes)),
                "guard": self._at(series.guard, x_key, x_at_steps)}
        for i, row in enumerate(ROWS):
            x, steps = rows[row]
            keep = np.isfinite(x)
            self.items[row].setData(x=x[keep], y=np.full(int(keep.sum()), float(i)),
                                    data=[int(s) for s in np.asarray(steps)[keep]])

    @staticmethod
    def _at(events, x_key: str, x_at_steps) -> tuple[np.ndarray, np.ndarray]:
        """The events' x (their own value in that unit when they record one) and steps."""
        events = list(events)
        steps = np.array([e.step or 0 for e in events], dtype=float)
        x = x_at_steps(steps)
        own = np.array([e.get(x_key) if e.get(x_key) is not None else np.nan for e in events], dtype=float)
        return np.where(np.isfinite(own), own, x), steps

    def _tip(self, row: str) -> Callable:
        words = {"evaluation": "evaluation at step {}", "checkpoint": "checkpoint at step {} (click: compare)",
                 "resume": "resumed from step {}", "guard": "guard decision at step {}"}[row]
        return lambda x, y, data: words.format(data)

    def _on_checkpoint_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            self.checkpoint_clicked.emit(int(points[0].data()))


def _small_font():
    font = pg.QtGui.QFont()
    font.setPointSizeF(max(6.5, font.pointSizeF() * 0.8))
    return font
