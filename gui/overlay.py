"""The curves of several runs on one chart per metric, against tokens seen (runs with
different batch sizes line up), one colour per run, the legend naming what differs."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from cpt_studio.core.store import run_evaluations, run_metrics

from .charts import ReadableAxis, downsampled_curve
from .compare_scatter import legend_html, run_colour

METRICS = (("loss", "training loss"), ("domain_ppl", "domain perplexity"),
           ("general_ppl", "general perplexity"), ("forgetting", "forgetting %"))
LEGEND_OFFSETS = {"loss": (-10, 5), "domain_ppl": (-10, 5), "general_ppl": (10, 5),
                  "forgetting": (10, 5)}
"""Where each legend starts: top right for the curves that usually fall, top left for those
that usually rise; once drawn, the legend moves to the corner its curves leave free (place_legend)."""
EMPTY = {"loss": "no training steps logged yet",
         "domain_ppl": "no evaluation yet", "general_ppl": "no evaluation yet",
         "forgetting": "no evaluation yet"}


class TokensAxis(ReadableAxis):
    """Token counts as people say them: 50k, 1.5M, 2B."""

    def tickStrings(self, values, scale, spacing):
        return [_tokens(v) for v in values]


def _tokens(n: float) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


class RunOverlay(pg.GraphicsLayoutWidget):
    def __init__(self, db, run_ids: list[str], labels: dict[str, str], parent=None):
        super().__init__(parent)
        self.setBackground("w")
        self.run_ids, self.labels = run_ids, labels  # `db` is read here only, not kept
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        """(metric, run id) -> its curve."""
        for k, (metric, title) in enumerate(METRICS):
            self._plot(metric, title, row=k // 2, col=k % 2)
        first = self.plots["loss"]
        for plot in self.plots.values():
            if plot is not first:
                plot.setXLink(first)
        for i, run_id in enumerate(run_ids):
            self._draw_run(db, run_id, run_colour(i))
        for metric, plot in self.plots.items():
            place_legend(plot, [self.curves[(metric, r)] for r in run_ids])
        self._empty_messages()

    def _plot(self, metric: str, title: str, row: int, col: int) -> None:
        plot = self.addPlot(row=row, col=col, title=f"<span style='color:#333'>{title}</span>",
                            axisItems={"left": ReadableAxis("left"), "bottom": TokensAxis("bottom")})
        plot.setLabel("bottom", "tokens seen")
        plot.showGrid(x=False, y=True, alpha=0.15)
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#666666")
            plot.getAxis(axis).setTextPen("#333333")
        # semi-opaque, in the corner its curves leave free: a curve passing under it stays visible
        plot.addLegend(offset=LEGEND_OFFSETS[metric], labelTextColor="#333333",
                       brush=pg.mkBrush(255, 255, 255, 200), pen=pg.mkPen("#cccccc"))
        self.plots[metric] = plot

    def _draw_run(self, db, run_id: str, colour: str) -> None:
        loss = run_metrics(db, run_id, "loss")
        evals = run_evaluations(db, run_id)
        data = {"loss": ([t for _, t, _ in loss], [v for _, _, v in loss])}
        for metric in ("domain_ppl", "general_ppl", "forgetting"):
            scale = 100 if metric == "forgetting" else 1
            data[metric] = ([e["tokens"] for e in evals],
                            [e[metric] * scale if e[metric] is not None else np.nan for e in evals])
        for metric, (x, y) in data.items():
            pen = pg.mkPen(colour, width=1 if metric == "loss" else 2)
            symbol = None if metric == "loss" else "o"
            self.curves[(metric, run_id)] = downsampled_curve(
                self.plots[metric], np.asarray(x, dtype=float), np.asarray(y, dtype=float), pen=pen,
                name=legend_html(self.labels[run_id]), symbol=symbol, symbolSize=5, symbolBrush=colour, symbolPen=colour)

    def _empty_messages(self) -> None:
        """A chart no run has data for says why, in its middle."""
        self.empty_labels: dict[str, pg.TextItem] = {}
        for metric, plot in self.plots.items():
            if not any(_points(self.curves[(metric, r)]) for r in self.run_ids):
                label = pg.TextItem(EMPTY[metric], color="#888888", anchor=(0.5, 0.5))
                plot.addItem(label, ignoreBounds=True)
                (x0, x1), (y0, y1) = plot.viewRange()
                label.setPos((x0 + x1) / 2, (y0 + y1) / 2)
                self.empty_labels[metric] = label


def place_legend(plot: pg.PlotItem, curves: list[pg.PlotDataItem]) -> None:
    """The legend in the top corner the curves leave free: top right when they end lower than
    they start (falling), top left when they rise (general perplexity fell in a tester's runs, and
    the legend at the top left covered where every curve began)."""
    ends = [(y[np.isfinite(y)][0], y[np.isfinite(y)][-1]) for curve in curves
            if curve.yData is not None and np.isfinite(y := np.asarray(curve.yData, dtype=float)).sum() >= 2]
    if not ends:
        return
    falling = sum(last < first for first, last in ends) * 2 >= len(ends)
    corner, offset = ((1, 0), (-10, 5)) if falling else ((0, 0), (10, 5))
    plot.legend.anchor(itemPos=corner, parentPos=corner, offset=offset)


def _points(curve: pg.PlotDataItem) -> int:
    return 0 if curve.xData is None else len(curve.xData)
