"""The live charts of one run: loss, learning rate, perplexities, forgetting, throughput.

Stacked pyqtgraph plots sharing the x-axis (steps or tokens), drawn from a RunSeries.
Curves get the series' full columns and pyqtgraph reduces what it draws (downsampled_curve), so
100,000 points per curve stay smooth. Guard decisions are red vertical lines on every
chart, created once each and moved when the x-axis unit changes. One crosshair is synced
across the charts and reads out every value at that step; an empty chart says why it is
empty; right-click gives pyqtgraph's Export (PNG, SVG, CSV).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from scipy.signal import lfilter

from cpt_studio.core.events import GuardEvent

from .series import RunSeries

EMA_ALPHA = 0.05
BINS_PER_PIXEL = 2.0
"""Downsampling bins per pixel column of a chart (pyqtgraph's autoDownsampleFactor, 5 by
default). Each bin is drawn as its maximum and minimum, so 2 draws the same picture as every
point; measured at 100,000 points per curve, a monitor frame takes half the time it takes at 5."""


def downsampled_curve(plot: pg.PlotItem, *args, **kwargs) -> pg.PlotDataItem:
    """`plot.plot(*args, **kwargs)`, reduced for drawing in the one place where curves are
    (the monitor's and the comparison overlay's): a curve is handed its full data, and
    pyqtgraph draws only the part in view (clipToView), in BINS_PER_PIXEL bins per pixel
    column, each drawn as its maximum and minimum (peak), so a loss spike stays visible;
    zoomed in, every point is drawn. Measured at 100,000 points per curve: as fast as
    reducing the data by hand before handing it over, which the charts therefore never do."""
    curve = plot.plot(*args, autoDownsampleFactor=BINS_PER_PIXEL, **kwargs)
    curve.setDownsampling(auto=True, method="peak")  # after plot(): it applies the plot's own
    curve.setClipToView(True)
    return curve


class ReadableAxis(pg.AxisItem):
    """Tick labels with 3 significant digits and no SI prefix (a learning rate reads
    2e-05, not 20 µ), and real values on a log axis (30, 40, 60, not 1.5, 1.6, 1.8)."""

    def __init__(self, orientation: str = "left", **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values, scale, spacing):
        if self.logMode:
            return [f"{10 ** v:.3g}" for v in values]
        return [f"{v:.3g}" for v in values]
PROBE_COLOURS = ("#17becf", "#e377c2", "#bcbd22", "#7f7f7f", "#ff7f0e")
COLOURS = {"domain": "#1f77b4", "general": "#d62728", "loss": "#b0b0b0", "ema": "#222222",
           "lr": "#2ca02c", "forgetting": "#9467bd", "speed": "#8c564b", "guard": "#e41a1c"}


def _curve(plot: pg.PlotItem, colour: str, name: str, width: float = 1.5, dashed: bool = False):
    pen = pg.mkPen(colour, width=width, style=pg.QtCore.Qt.PenStyle.DashLine if dashed else None)
    return downsampled_curve(plot, [], [], pen=pen, name=name)


class RunCharts(pg.GraphicsLayoutWidget):
    crosshair_moved = Signal(str)
    """The readout at the crosshair: step, tokens, time and every value."""

    def __init__(self, series: RunSeries, guard_threshold: float | None = 0.15,
                 eval_interval: int | None = None, parent=None, probes: bool = False,
                 checkpoint_interval: int | None = None):
        super().__init__(parent)
        self.show_probes, self.checkpoint_interval = probes, checkpoint_interval
        self.setBackground("w")
        self.series, self.x_key = series, "step"
        self.guard_threshold, self.eval_interval = guard_threshold, eval_interval
        self._ema = np.zeros(0)
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.guard_markers: dict[tuple, list[pg.InfiniteLine]] = {}
        """(step, time) of a guard event -> its line on each chart, in self.plots' order."""
        self._build()
        self._crosshair()

    # --- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        self._plot("loss", "training loss", ["loss", "ema"])
        self._plot("lr", "learning rate", ["lr"])
        self._plot("ppl", "held-out perplexity (log)", ["domain", "general", "domain_base", "general_base"])
        self.plots["ppl"].setLogMode(y=True)
        self._plot("forgetting", "forgetting %", ["forgetting"])
        self._plot("speed", "tokens / s", ["speed"])
        if self.show_probes:  # benchmarks.probes_during_training: a live knowledge curve
            self._plot("probes", "knowledge probes: accuracy % (at each checkpoint)", [])
            self.plots["probes"].setYRange(0, 100, padding=0.02)  # accuracy: the whole scale
        if self.guard_threshold is not None:
            line = pg.InfiniteLine(self.guard_threshold * 100, angle=0, label="guard threshold",
                                   pen=pg.mkPen(COLOURS["guard"], style=pg.QtCore.Qt.PenStyle.DashLine),
                                   labelOpts={"position": 0.1, "color": COLOURS["guard"]})
            self.plots["forgetting"].addItem(line)
        first = self.plots["loss"]
        for plot in self.plots.values():
            if plot is not first:
                plot.setXLink(first)

    def _plot(self, key: str, title: str, curves: list[str]) -> None:
        plot = self.addPlot(row=len(self.plots), col=0, title=f"<span style='color:#333'>{title}</span>",
                            axisItems={"left": ReadableAxis("left")})
        plot.showGrid(x=False, y=True, alpha=0.15)  # vertical grid lines cost ~half of each frame
        plot.getAxis("left").setWidth(64)  # aligned plots, and room for 2.5e-05
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#666666")
            plot.getAxis(axis).setTextPen("#333333")
            # Drawn from a pixmap until its ticks change: replaying the tick labels was about
            # half of each frame, and a frame is a GUI-thread stall (2 loaded cores: ~80 -> ~40 ms).
            plot.getAxis(axis).setCacheMode(pg.QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        if len(curves) > 1:
            plot.addLegend(offset=(-10, 5))
        colours = {"loss": "loss", "ema": "ema", "lr": "lr", "domain": "domain", "general": "general",
                   "domain_base": "domain", "general_base": "general", "forgetting": "forgetting",
                   "speed": "speed"}
        names = {"ema": "EMA", "domain_base": "domain baseline", "general_base": "general baseline"}
        for name in curves:
            self.curves[name] = _curve(plot, COLOURS[colours[name]], names.get(name, name),
                                       width=1 if name == "loss" else 1.8, dashed=name.endswith("_base"))
        plot.empty_label = pg.TextItem("", color="#888888", anchor=(0.5, 0.5))
        plot.addItem(plot.empty_label, ignoreBounds=True)
        self.plots[key] = plot

    def _crosshair(self) -> None:
        self.lines = {}
        for key, plot in self.plots.items():
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#999999", width=1))
            plot.addItem(line, ignoreBounds=True)
            self.lines[key] = line
        self._proxy = pg.SignalProxy(self.scene().sigMouseMoved, rateLimit=30, slot=self._on_mouse_moved)

    # --- data -------------------------------------------------------------------------
    def set_x_axis(self, key: str) -> None:
        self.x_key = key
        for plot in self.plots.values():
            plot.setLabel("bottom", "tokens seen" if key == "tokens" else "optimizer step")
        self.refresh()

    def refresh(self, most: int | None = None) -> bool:
        """Hand the curves their data; plots whose data did not change are left alone (a
        frame of 100,000 points is the expensive part). `most`: give new data to at most this
        many plots now, the others at the next refresh: plots changed together are painted in
        one frame, one GUI-thread stall (a live monitor passes 1). Returns whether every plot
        is up to date."""
        probes = (sum(t.version for t in self.series.probes.values()), self.x_key)
        if probes != getattr(self, "_drawn_probes", None):
            self._drawn_probes = probes
            self._probe_curves()
            self._empty_messages()
        self._guard_markers()
        drawn = self.__dict__.setdefault("_drawn", {})
        pending = [(key, version, draw) for key, version, draw in self._plot_updates()
                   if drawn.get(key) != version]
        for key, version, draw in pending[:most]:
            draw()
            drawn[key] = version
        if pending:
            self._empty_messages()
        return most is None or len(pending) <= most

    def _plot_updates(self) -> list[tuple[str, tuple, Callable[[], None]]]:
        """(plot, the version of its data, how to draw it), in the order they are drawn."""
        steps, evals = self.series.steps.version, self.series.evals.version
        return [("loss", (steps, self.x_key), self._draw_loss),
                ("ppl", (evals, self.x_key), self._draw_perplexity),
                ("forgetting", (evals, self.x_key), self._draw_forgetting),
                ("lr", (steps, self.x_key), lambda: self._set("lr", self._x(), self.series.steps["lr"].values)),
                ("speed", (steps, self.x_key),
                 lambda: self._set("speed", self._x(), self.series.steps["tokens_per_second"].values))]

    def _x(self) -> np.ndarray:
        return self.series.steps[self.x_key].values

    def _draw_loss(self) -> None:
        loss = self.series.steps["loss"].values
        self._update_ema(loss)
        self._set("loss", self._x(), loss)
        self._set("ema", self._x(), self._ema)

    def _draw_perplexity(self) -> None:
        evals = self.series.evals
        ex = evals[self.x_key].values
        self.curves["domain"].setData(ex, evals["domain_ppl"].values)
        self.curves["general"].setData(ex, evals["general_ppl"].values)
        self._baselines(ex)

    def _draw_forgetting(self) -> None:
        evals = self.series.evals
        self.curves["forgetting"].setData(evals[self.x_key].values, evals["forgetting"].values * 100)

    def _probe_curves(self) -> None:
        """One curve per probe task's headline metric, in %; x in tokens is read off the steps."""
        if not self.show_probes:
            return
        for i, (key, table) in enumerate(self.series.probes.items()):
            if key not in self.curves:
                self.curves[key] = downsampled_curve(
                    self.plots["probes"], [], [], pen=pg.mkPen(PROBE_COLOURS[i % len(PROBE_COLOURS)], width=1.8),
                    name=key, symbol="o", symbolSize=6, symbolBrush=PROBE_COLOURS[i % len(PROBE_COLOURS)])
                names = ", ".join(f"<span style='color:{PROBE_COLOURS[k % len(PROBE_COLOURS)]}'>{name}</span>"
                                  for k, name in enumerate(self.series.probes))  # a legend would hide points
                self.plots["probes"].setTitle(f"<span style='color:#333'>knowledge probes: accuracy % "
                                              f"(at each checkpoint)</span>: {names}")
            self.curves[key].setData(self._x_at_steps(table["step"].values), table["value"].values * 100)

    def _x_at_steps(self, at: np.ndarray) -> np.ndarray:
        """The x-axis positions of steps `at`: the steps, or in tokens the tokens the steps
        table records there (interpolated; NaN before the first step event)."""
        if self.x_key == "step":
            return at
        steps = self.series.steps
        if not len(steps):
            return np.full(len(at), np.nan)
        return np.interp(at, steps["step"].values, steps[self.x_key].values)

    def _set(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        self.curves[name].setData(x, y)  # the full columns: pyqtgraph reduces what is drawn

    def _update_ema(self, loss: np.ndarray) -> None:
        """Extend the EMA incrementally (scipy's lfilter carries the state across calls);
        a non-finite loss counts as the last finite one."""
        done = len(self._ema)
        if done > len(loss):  # a resume dropped steps
            self._ema, done = self._ema[:len(loss)], len(loss)
        if done == len(loss):
            return
        new = loss[done:].copy()
        previous = self._ema[-1] if done else new[np.isfinite(new)][:1].sum()
        bad = ~np.isfinite(new)
        if bad.any():  # carry the last finite value forward
            index = np.where(~bad, np.arange(len(new)), -1)
            np.maximum.accumulate(index, out=index)
            new = np.where(index >= 0, new[np.maximum(index, 0)], previous)
        decay = 1 - EMA_ALPHA
        ema, _ = lfilter([EMA_ALPHA], [1, -decay], new, zi=[decay * previous])
        self._ema = np.concatenate([self._ema, ema])

    def _baselines(self, ex: np.ndarray) -> None:
        base = self.series.baseline
        if not base or not len(ex):
            return
        span = [ex[0], max(ex[-1], self.series.steps[self.x_key].values[-1] if len(self.series.steps) else ex[-1])]
        for name in ("domain", "general"):
            value = base.get(f"{name}_ppl")
            if value:
                self.curves[f"{name}_base"].setData(span, [value, value])

    def _empty_messages(self) -> None:
        no_steps = "waiting for the first training step" if not len(self.series.steps) else ""
        interval = self.eval_interval
        first_eval = (f"forgetting appears after the first evaluation, at step {interval}" if interval
                      else "forgetting appears after the first evaluation")
        no_evals = first_eval if len(self.series.evals) < 2 else ""
        messages = {"loss": no_steps, "lr": no_steps, "speed": no_steps,
                    "ppl": "waiting for the step-0 baseline" if not len(self.series.evals) else "",
                    "forgetting": no_evals}
        if self.show_probes:
            every = f", every {self.checkpoint_interval} steps" if self.checkpoint_interval else ""
            messages["probes"] = ("" if self.series.probes else
                                  f"probe accuracy appears at each checkpoint{every}")
        for key, text in messages.items():
            label = self.plots[key].empty_label
            label.setText(text)
            label.setVisible(bool(text))  # a shown TextItem is re-placed at every frame
            if text:
                (x0, x1), (y0, y1) = self.plots[key].viewRange()
                label.setPos((x0 + x1) / 2, (y0 + y1) / 2)

    def _guard_markers(self) -> None:
        """A red line on every chart per guard decision, created once, placed in the x-axis
        unit; placed again when the unit or the steps (their tokens) change."""
        placed = (len(self.series.guard), self.series.steps.version, self.x_key)
        if placed == getattr(self, "_placed_guard", None):
            return
        self._placed_guard = placed
        for event in self.series.guard:
            key = (event.step, event.time)
            if key not in self.guard_markers:
                self.guard_markers[key] = [self._guard_line(plot, event, label=i == 0)
                                           for i, plot in enumerate(self.plots.values())]
            x = self._guard_x(event)
            for line in self.guard_markers[key]:
                line.setVisible(bool(np.isfinite(x)))
                if np.isfinite(x):
                    line.setPos(x)

    def _guard_x(self, event: GuardEvent) -> float:
        """A guard decision's place on the x-axis: its own value in that unit when it records
        one, else its step's (in tokens: NaN before the first step event)."""
        own = event.get(self.x_key)
        if own is not None:
            return float(own)
        return float(self._x_at_steps(np.array([event.step or 0], dtype=float))[0])

    @staticmethod
    def _guard_line(plot: pg.PlotItem, event: GuardEvent, label: bool) -> pg.InfiniteLine:
        text = f"guard: {event.get('action', 'decision')} at step {event.step}"
        line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(COLOURS["guard"], width=2),
                               label=text if label else None,
                               labelOpts={"position": 0.85, "color": COLOURS["guard"]})
        line.setToolTip("\n".join(str(event.get(f)) for f in ("reason", "message", "remedy") if event.get(f)))
        plot.addItem(line, ignoreBounds=True)
        return line

    # --- crosshair --------------------------------------------------------------------
    def _on_mouse_moved(self, event) -> None:
        position = event[0]
        for plot in self.plots.values():
            if plot.sceneBoundingRect().contains(position):
                x = plot.vb.mapSceneToView(position).x()
                self.move_crosshair(x)
                return

    def move_crosshair(self, x: float) -> str:
        for line in self.lines.values():
            line.setPos(x)
        text = self.readout(x)
        self.crosshair_moved.emit(text)
        return text

    def readout(self, x: float) -> str:
        """Every value at the step nearest to x."""
        steps = self.series.steps
        if not len(steps):
            return ""
        xs = steps[self.x_key].values
        i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
        parts = [f"step {int(steps['step'].values[i])}", f"tokens {int(steps['tokens'].values[i]):,}",
                 f"loss {steps['loss'].values[i]:.4f}", f"lr {steps['lr'].values[i]:.3g}",
                 f"{steps['tokens_per_second'].values[i]:,.0f} tokens/s"]
        evals = self.series.evals
        if len(evals):
            j = int(np.clip(np.searchsorted(evals["step"].values, steps["step"].values[i], side="right") - 1,
                            0, len(evals) - 1))
            parts.append(f"domain ppl {evals['domain_ppl'].values[j]:.3f} / general ppl "
                         f"{evals['general_ppl'].values[j]:.3f} (eval at step {int(evals['step'].values[j])})")
        for key, table in self.series.probes.items():  # the last probe score up to this step
            k = int(np.searchsorted(table["step"].values, steps["step"].values[i], side="right")) - 1
            if k >= 0:
                parts.append(f"{key} {table['value'].values[k]:.0%}")
        return "   ".join(parts)
