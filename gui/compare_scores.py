"""Benchmark and probe scores per task: the base model against each evaluated checkpoint,
one bar each with its standard error, one small chart per task, coloured by run. A general
task that drops more than the run's limit (3 points) below the base model is drawn red and
labelled with the drop.

    chart = TaskScoresChart({run_id: task_charts(db, run_id)}, labels)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg

from .charts import ReadableAxis
from .compare_scatter import run_colour

BASE_COLOUR, DROP_COLOUR = "#9e9e9e", "#dc3545"
COLUMNS = 2
BAR_WIDTH = 0.7


class TaskScoresChart(pg.GraphicsLayoutWidget):
    def __init__(self, charts: dict[str, list[dict[str, Any]]], labels: dict[str, str], parent=None):
        super().__init__(parent)
        self.setBackground("w")
        self.charts, self.labels = charts, labels
        self.plots: dict[str, pg.PlotItem] = {}
        self.bars: dict[tuple[str, str], pg.BarGraphItem] = {}
        """(task, run id) -> its bars: base first, then the checkpoints by step."""
        tasks = list(dict.fromkeys(t["task"] for tables in charts.values() for t in tables))
        for k, task in enumerate(tasks):
            self._plot(task, row=k // COLUMNS, col=k % COLUMNS)
        if not tasks:
            self.empty = self.addLabel("No benchmark or probe scores yet: Evaluate… a checkpoint "
                                       "(below the table) and they appear here.", color="#888888")

    def _plot(self, task: str, row: int, col: int) -> None:
        plot = self.addPlot(row=row, col=col, axisItems={"left": ReadableAxis("left")})
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#666666")
            plot.getAxis(axis).setTextPen("#333333")
        plot.showGrid(x=False, y=True, alpha=0.15)
        plot.setMouseEnabled(x=False, y=False)
        ticks, x, title, flagged, top, unit = [], 0.0, "", [], 0.0, ""
        for i, (run_id, tables) in enumerate(self.charts.items()):
            table = next((t for t in tables if t["task"] == task), None)
            if table is None:
                continue
            scale = 100 if _fractions(table) else 1
            steps = sorted(table["scores"])
            xs = [x + j for j in range(len(steps))]
            values = [table["scores"][s]["value"] * scale for s in steps]
            errors = [(table["scores"][s]["stderr"] or 0) * scale for s in steps]
            brushes = [BASE_COLOUR if s == 0 else DROP_COLOUR if s in table["flagged"] else run_colour(i)
                       for s in steps]
            bars = pg.BarGraphItem(x=xs, height=values, width=BAR_WIDTH, brushes=brushes,
                                   pen=pg.mkPen("#444444", width=0.5))
            plot.addItem(bars)
            self.bars[(task, run_id)] = bars
            plot.addItem(pg.ErrorBarItem(x=np.array(xs, float), y=np.array(values, float),
                                         top=np.array(errors, float), bottom=np.array(errors, float), beam=0.25,
                                         pen=pg.mkPen("#222222", width=1.2)))
            top = max([top, *(v + e for v, e in zip(values, errors, strict=True) if math.isfinite(v + e))])
            for xi, step, value in zip(xs, steps, values, strict=True):
                ticks.append((xi, "base" if step == 0 else str(step)))
                text = f"{value:.1f}" if scale == 100 else f"{value:.3g}"
                drop = table["flagged"].get(step)
                if drop is not None:
                    text += f"\n▼ {drop * 100:.1f}"  # points; the title says so
                    flagged.append(step)
                number = pg.TextItem(text, color=DROP_COLOUR if drop is not None else "#333333",
                                     anchor=(0.0, 1.0))
                number.setPos(xi + 0.03, value)  # beside the error bar: a 0 has no bar to see
                plot.addItem(number)
            if len(self.charts) > 1:
                label = pg.TextItem(self.labels.get(run_id, ""), color=run_colour(i), anchor=(0, 0))
                label.setPos(x - BAR_WIDTH / 2, 0)
                plot.addItem(label)
            unit = " %" if scale == 100 else ""
            title = f"{task} · {table['metric']}{unit} ({table['kind']})"
            x += len(steps) + 1
        plot.getAxis("bottom").setTicks([ticks])
        plot.setLabel("bottom", "checkpoint step")
        warn = (f"<br><span style='color:{DROP_COLOUR}'>▼ points dropped, more than the limit, at step "
                f"{', '.join(map(str, flagged))}</span>" if flagged else "")
        plot.setTitle(f"<span style='color:#333'>{title}</span>{warn}")
        plot.setYRange(0, (top or (100 if unit else 1.0)) * 1.15, padding=0)
        self.plots[task] = plot


def _fractions(table: dict[str, Any]) -> bool:
    """Whether the metric is a fraction (accuracy): shown in %."""
    values = [s["value"] for s in table["scores"].values()]
    return all(isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1 for v in values)
