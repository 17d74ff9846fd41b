"""A sweep's settings as domain gain against forgetting: one point per measured setting,
labelled with it ("5% · 3e-5": the labels stand in for a legend, which would cover a point in
any corner) and coloured by replay ratio (the comparison's run colours), the Pareto front as
stars joined by a step line, the selected setting ringed. Clicking a point selects that setting."""

from __future__ import annotations

from collections.abc import Sequence

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal

from cpt_studio.core.sweep import SweepPoint, format_lr, sweep_front

from .charts import ReadableAxis
from .compare_scatter import run_colour
from .theme import style_plot

FRONT_COLOUR = "#333333"
"""Near black: the theme draws it, and the labels, in the text colour on dark."""


def front_steps(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """The front's step line through (gain, forgetting) points given in order of rising
    forgetting: from each point up to the next one's forgetting, then across to it, so that
    the line bounds what the front beats (less gain and more forgetting)."""
    xs, ys = [], []
    for i, (gain, forgetting) in enumerate(points):
        if i:
            xs.append(points[i - 1][0])
            ys.append(forgetting)
        xs.append(gain)
        ys.append(forgetting)
    return xs, ys


def point_label(point: SweepPoint) -> str:
    """"5% · 3e-5": the setting, short enough to sit beside its point."""
    return f"{point.setting.replay_ratio * 100:g}% · {format_lr(point.setting.peak_lr)}"


class SweepScatter(pg.PlotWidget):
    point_selected = Signal(int)
    """The index (into the points shown) of the clicked setting."""

    def __init__(self, parent=None):
        super().__init__(parent, background="w",
                         axisItems={"left": ReadableAxis("left"), "bottom": ReadableAxis("bottom")})
        plot = self.getPlotItem()
        plot.setTitle("<span style='color:#333'>each setting's domain gain against forgetting "
                      "(right and low is better)</span>")
        plot.setLabel("bottom", "domain gain %")
        plot.setLabel("left", "forgetting %")
        plot.showGrid(x=True, y=True, alpha=0.15)
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#666666")
            plot.getAxis(axis).setTextPen("#333333")
        self.points: list[SweepPoint] = []
        self.spots = pg.ScatterPlotItem(size=12, hoverable=True, hoverSize=16)
        self.spots.sigClicked.connect(self._on_points_clicked)
        self.front = self.plot([], [], pen=pg.mkPen(FRONT_COLOUR, width=1.5, style=Qt.PenStyle.DashLine))
        self.selected = pg.ScatterPlotItem(size=24, pen=pg.mkPen("#000000", width=2), brush=None, symbol="s")
        self.labels: list[pg.TextItem] = []
        plot.getViewBox().setDefaultPadding(0.12)  # room for the labels beside the outer points
        plot.addItem(self.spots)
        plot.addItem(self.selected)
        self.selected_index: int | None = None

    def set_points(self, points: list[SweepPoint]) -> None:
        """Show these settings (sweep_results' order); the selection is kept."""
        self.points = points
        replays = list(dict.fromkeys(p.setting.replay_ratio for p in points))
        front = set(sweep_front(points))
        self.spots.setData(spots=[
            {"pos": self.position(p), "data": i, "brush": pg.mkBrush(run_colour(replays.index(p.setting.replay_ratio))),
             "symbol": "star" if i in front else "o", "size": 18 if i in front else 12,
             "pen": pg.mkPen("#000000", width=1.5) if i in front else pg.mkPen("#ffffff")}
            for i, p in enumerate(points) if p.measured])
        self.front.setData(*front_steps([self.position(points[i]) for i in sweep_front(points)]))
        for label in self.labels:
            self.removeItem(label)
        self.labels = []
        for p in points:
            if p.measured:
                label = pg.TextItem(point_label(p), color="#333333", anchor=(0, 1.2))
                label.setPos(*self.position(p))
                self.addItem(label)
                self.labels.append(label)
        self.select(self.selected_index)
        style_plot(self)  # the labels made now take the theme's colours too

    @staticmethod
    def position(point: SweepPoint) -> tuple[float, float]:
        return point.domain_gain * 100, point.forgetting * 100

    def select(self, index: int | None) -> None:
        """Ring the setting's point (none for a setting not measured yet)."""
        self.selected_index = index
        point = self.points[index] if index is not None and index < len(self.points) else None
        self.selected.setData(pos=[self.position(point)] if point and point.measured else [])

    def _on_points_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            index = int(points[0].data())
            self.select(index)
            self.point_selected.emit(index)
