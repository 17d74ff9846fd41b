"""Domain gain against forgetting, one point per checkpoint, coloured by run: each run's
Pareto front as a dashed line, its recommended checkpoint bigger and outlined. Clicking a
point selects that checkpoint (and its table row).

Other trade-off curves go on the same axes with `add_curve` (a dotted line through labelled
points, each with its numbers on hover; clicking one emits `curve_point_selected`):

    scatter.add_curve(("run", 200), [(0, 0), (1.5, 0.4), (3.1, 2.0)], ["α=0", "α=0.5", "α=1"],
                      tips=[...], colour=run_colour(0))
"""

from __future__ import annotations

import html
import math
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QSizePolicy

from cpt_studio.core.compare import gain_unit

from .charts import ReadableAxis, label_fill
from .label_placement import place_labels

RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
               "#17becf")


def run_colour(i: int) -> str:
    return RUN_COLOURS[i % len(RUN_COLOURS)]


def legend_html(title: str) -> str:
    """A run's title (cpt_studio.core.compare.run_titles: the name, then the settings that
    differ) as a legend entry: the name, the settings smaller below it."""
    name, _, settings = title.partition("\n")
    return html.escape(name) + (f"<br><span style='font-size:7pt'>{html.escape(settings)}</span>"
                                if settings else "")


def _known(row: dict[str, Any]) -> bool:
    return all(isinstance(row[k], (int, float)) and math.isfinite(row[k])
               for k in ("domain_gain", "forgetting"))


class GainForgettingScatter(pg.PlotWidget):
    checkpoint_selected = Signal(int)
    """The index (into `rows`) of the clicked checkpoint."""
    curve_point_selected = Signal(object, int)
    """(the curve's key, the index of its clicked point), for a curve drawn by add_curve."""

    def __init__(self, rows: list[dict[str, Any]], parent=None):
        super().__init__(parent, background="w",
                         axisItems={"left": ReadableAxis("left"), "bottom": ReadableAxis("bottom")})
        self.rows = rows
        plot = self.getPlotItem()
        # two lines: on one, the title's width set the plot's least width, and a scatter
        # narrower than ~560 px was cut on the right (its axis, its last points)
        plot.setTitle("<span style='color:#333'>domain gain against forgetting<br>"
                      "(right and low is better)</span>")
        unit = gain_unit(rows[0]["basis"]) if rows else ""  # bits per byte across tokenizers
        plot.setLabel("bottom", f"domain gain %{unit}")
        plot.setLabel("left", f"forgetting %{unit}")
        plot.showGrid(x=True, y=True, alpha=0.15)
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#666666")
            plot.getAxis(axis).setTextPen("#333333")
        self.legend = self._legend_beside(plot)
        self.points: dict[str, pg.ScatterPlotItem] = {}
        self.fronts: dict[str, pg.PlotDataItem] = {}
        self.curves: dict[Any, list] = {}
        """add_curve's items by the curve's key: the line, its points, their labels."""
        self.curve_marker = pg.ScatterPlotItem(size=16, pen=pg.mkPen("#000000", width=2), brush=None,
                                               symbol="d")
        self.curve_marker.setZValue(20)
        self._curve_in_legend = False
        self.addItem(self.curve_marker)
        self._draw()
        self.selected = pg.ScatterPlotItem(size=22, pen=pg.mkPen("#000000", width=2),
                                           brush=None, symbol="s")
        plot.addItem(self.selected)
        plot.vb.sigRangeChanged.connect(self._place_labels)  # a label's size is in pixels:
        plot.vb.sigResized.connect(self._place_labels)       # what it covers depends on the view

    @staticmethod
    def _legend_beside(plot: pg.PlotItem) -> pg.LegendItem:
        """The legend in a column of its own right of the plot, at the top: inside, it
        covered the points it explains. Named items added to the plot still enter it."""
        legend = pg.LegendItem(labelTextColor="#333333", verSpacing=-2)
        plot.layout.addItem(legend, 2, 3)  # the view box's row; column 2 is the right axis
        legend.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)  # its rows, not the view's height
        plot.layout.setAlignment(legend, Qt.AlignmentFlag.AlignTop)
        plot.layout.setColumnStretchFactor(3, 0)
        # the title spans the legend's column too: over the view box's alone, its width and the
        # legend's together made the plot wider than a 390-pixel scatter
        plot.layout.removeItem(plot.titleLabel)
        plot.layout.addItem(plot.titleLabel, 0, 1, 1, 3)
        plot.legend = legend
        return legend

    def _draw(self) -> None:
        runs = list(dict.fromkeys(row["run_id"] for row in self.rows))
        for i, run_id in enumerate(runs):
            colour = run_colour(i)
            mine = [(index, row) for index, row in enumerate(self.rows)
                    if row["run_id"] == run_id and _known(row)]
            label = next((row["label"] for row in self.rows if row["run_id"] == run_id), "")
            spots = [{"pos": self.position(row), "data": index,
                      "size": 18 if row["recommended"] else 10,
                      "pen": pg.mkPen("#000000", width=2.5) if row["recommended"] else pg.mkPen(colour),
                      "symbol": "star" if row["recommended"] else "o"} for index, row in mine]
            item = pg.ScatterPlotItem(spots=spots, size=10, brush=pg.mkBrush(colour), name=legend_html(label),
                                      hoverable=True, hoverSize=14)
            item.sigClicked.connect(self._on_points_clicked)
            self.addItem(item)
            self.points[run_id] = item
            front = sorted((row for _, row in mine if row["pareto"]), key=lambda r: r["forgetting"])
            line = self.plot([self.position(r)[0] for r in front], [self.position(r)[1] for r in front],
                             pen=pg.mkPen(colour, width=1.5, style=Qt.PenStyle.DashLine))
            self.fronts[run_id] = line
        if any(row["recommended"] for row in self.rows):
            self.legend.addItem(pg.ScatterPlotItem(symbol="star", size=14, brush=None,
                                                   pen=pg.mkPen("#000000", width=2)),
                                "recommended (★)")
        self.legend.addItem(pg.PlotDataItem(pen=pg.mkPen("#666666", style=Qt.PenStyle.DashLine)),
                            "Pareto front")

    @staticmethod
    def position(row: dict[str, Any]) -> tuple[float, float]:
        return row["domain_gain"] * 100, row["forgetting"] * 100

    def select_checkpoint(self, index: int | None) -> None:
        """Ring the checkpoint's point (none for a checkpoint without both numbers)."""
        row = self.rows[index] if index is not None else None
        self.selected.setData(pos=[self.position(row)] if row and _known(row) else [])
        self.selected_index = index

    def _on_points_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            index = int(points[0].data())
            self.select_checkpoint(index)
            self.checkpoint_selected.emit(index)

    def add_curve(self, key, positions: list[tuple[float, float]], labels: list[str],
                  tips: list[str], colour: str) -> pg.ScatterPlotItem:
        """Draw a curve through `positions` ((domain gain %, forgetting %), in order) as a
        dotted line with a small diamond at each point, labelled with `labels` ('' for none),
        `tips` shown on hover; a curve drawn before under the same `key` is replaced."""
        self.remove_curve(key)
        xs, ys = [x for x, _ in positions], [y for _, y in positions]
        line = self.plot(xs, ys, pen=pg.mkPen(colour, width=1.5, style=Qt.PenStyle.DotLine))
        dots = pg.ScatterPlotItem(
            spots=[{"pos": pos, "data": i} for i, pos in enumerate(positions)], symbol="d", size=9,
            brush=pg.mkBrush("#ffffff"), pen=pg.mkPen(colour, width=1.5), hoverable=True,
            hoverSize=13, tip=lambda x, y, data: tips[data])
        dots.sigClicked.connect(lambda _item, points, _event=None: self._on_curve_clicked(key, points))
        dots.setZValue(10)
        self.addItem(dots)
        texts = []
        for (x, y), label in zip(positions, labels, strict=True):
            if label:  # on a light box: curves and fronts cross the labels; _place_labels anchors it
                text = pg.TextItem(label, color=colour, fill=label_fill())
                text.setZValue(15)
                text.setPos(x, y)
                self.addItem(text)
                texts.append(text)
        self.curves[key] = [line, dots, *texts]
        self._place_labels()
        if not self._curve_in_legend:
            self._curve_in_legend = True
            self.legend.addItem(pg.PlotDataItem(pen=pg.mkPen("#666666", style=Qt.PenStyle.DotLine),
                                                symbol="d", symbolBrush="#ffffff", symbolPen="#666666",
                                                symbolSize=8), "interpolation<br>(α: base → checkpoint)")
        return dots

    def _place_labels(self, *_) -> None:
        """Anchor the curves' labels beside their points, off every point and each other
        (cpt_studio.gui.label_placement)."""
        items = [*self.points.values(), *(c[1] for c in self.curves.values())]
        points = [(x, y, size if size > 0 else item.opts["size"]) for item in items  # -1: the item's size
                  for x, y, size in zip(item.data["x"], item.data["y"], item.data["size"], strict=True)]
        labels = [text for curve in self.curves.values() for text in curve[2:]]
        if labels:
            place_labels(self.getPlotItem().vb, labels, points)

    def remove_curve(self, key) -> None:
        for item in self.curves.pop(key, []):
            self.removeItem(item)

    def mark_curve_point(self, position: tuple[float, float] | None) -> None:
        """Ring one curve point (the chosen α), or none."""
        self.curve_marker.setData(pos=[position] if position else [])

    def _on_curve_clicked(self, key, points) -> None:
        if len(points):
            index = int(points[0].data())
            self.mark_curve_point(tuple(points[0].pos()))
            self.curve_point_selected.emit(key, index)
