"""The live charts of one run: loss (raw and smoothed), learning rate, gradient norm,
perplexities, forgetting, throughput, and the marker track above them.

Stacked pyqtgraph plots sharing the x-axis (steps or tokens), drawn from a RunSeries; only the
bottom one draws the x-axis (painting the ticks of every plot again was a tenth of a second of
each frame while catching up with a long file). Curves get the series' full columns and
pyqtgraph reduces what it draws (downsampled_curve), so 100,000 points per curve stay smooth.
The marker track (cpt_studio.gui.markers) has a labelled row each for evaluations, checkpoints
(click one: `checkpoint_clicked`), resumes and guard decisions; resumes and guard decisions
are also vertical lines on every chart, created once each and moved when the x-axis unit
changes. Each chart names its curves in its title, in their colours (a legend inside a plot
hides the data it explains). One crosshair is synced across the charts and reads out every
value at that step; an empty chart says why it is empty, in this run's terms; right-click
gives pyqtgraph's Export (PNG, SVG, CSV).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal

from cpt_studio.core.estimate import format_duration
from cpt_studio.core.events import State
from cpt_studio.core.smoothing import LOSS_SMOOTHING, EmaState, smoothed_loss

from .markers import MarkerTrack
from .series import RunSeries
from .theme import colour as theme_colour

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
    2e-05, not 20 µ), and real values on a log axis (30, 40, 60, not 1.5, 1.6, 1.8).

    On a log axis spanning less than a decade (a perplexity from 9.8 to 10.3), pyqtgraph
    places its ticks at 1-9 times powers of ten and shows one tick or none; there the ticks
    are chosen as on a linear axis over the real values (9.8, 9.9, 10, 10.1, ...) and placed
    at their logarithms, labelled with as many decimals as their spacing needs."""

    def __init__(self, orientation: str = "left", **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickValues(self, minVal, maxVal, size):
        minVal, maxVal = sorted((minVal, maxVal))
        self._short = self.logMode and bool(np.isfinite([minVal, maxVal]).all()) and maxVal - minVal < 1
        if not self._short:
            return super().tickValues(minVal, maxVal, size)
        return short_log_ticks(minVal, maxVal, size, self.tickSpacing)

    def tickStrings(self, values, scale, spacing):
        if not self.logMode:
            return linear_tick_strings(values, spacing)
        if getattr(self, "_short", False) and spacing:  # spacing: between the real values
            decimals = max(0, int(-np.floor(np.log10(spacing) + 1e-9)))
            return [f"{10 ** v:.{decimals}f}" for v in values]
        return [f"{10 ** v:.3g}" for v in values]


def linear_tick_strings(values, spacing) -> list[str]:
    """Plain numbers with the decimals their spacing needs (5150, 5200; 2.45, 2.5) from 0.01 to
    a million, 3 significant digits beyond (2e-05, 1.5e+07): never 5.2e+03 for a throughput."""
    biggest = max((abs(v) for v in values), default=0)
    if spacing and 1e-2 <= biggest < 1e6:
        decimals = max(0, int(-np.floor(np.log10(spacing) + 1e-9)))
        return [f"{v:.{decimals}f}" for v in values]
    return [f"{v:.3g}" for v in values]


def short_log_ticks(low: float, high: float, size: float, spacing) -> list[tuple[float, list[float]]]:
    """Ticks of a log axis from 10**low to 10**high (less than a decade): `spacing` (the axis'
    tickSpacing) chooses them on the real values, as on a linear axis; returned as the axis
    wants them, (spacing, [log10 of each tick]) per level, major first."""
    real_low, real_high = 10 ** low, 10 ** high
    levels = []
    for step, offset in spacing(real_low, real_high, size)[:2]:
        first = np.ceil((real_low - offset) / step - 1e-9) * step + offset
        values = first + step * np.arange(int((real_high - first) / step + 1e-9) + 1)
        values = values[(values > 0) & (values <= real_high * (1 + 1e-12))]
        levels.append((step, [float(np.log10(v)) for v in values]))
    if len(levels) > 1:  # a minor tick is not drawn again where a major one is
        major = np.array(levels[0][1])
        levels[1] = (levels[1][0], [v for v in levels[1][1] if not np.isclose(major, v, atol=1e-9).any()])
    return levels


PROBE_COLOURS = ("#17becf", "#e377c2", "#bcbd22", "#7f7f7f", "#ff7f0e")
COLOURS = {"domain": "#1f77b4", "general": "#d62728", "loss": "#b0b0b0", "ema": "#222222",
           "lr": "#2ca02c", "grad_norm": "#e377c2", "forgetting": "#9467bd", "speed": "#8c564b",
           "guard": "#e41a1c", "resume": "#ff9f1c", "embedding_lr": "#1f77b4", "new_token_lr": "#ff7f0e"}
CURVES = {"loss": ("loss", "raw"), "ema": ("ema", f"smoothed (EMA β={LOSS_SMOOTHING}, bias-corrected)"),
          "lr": ("lr", ""), "grad_norm": ("grad_norm", ""), "domain": ("domain", "domain"),
          "general": ("general", "general"), "domain_base": ("domain", ""),
          "general_base": ("general", ""), "forgetting": ("forgetting", ""),
          "speed": ("speed", "")}
"""Each curve's colour (a COLOURS key) and its name in its chart's title (none: not named there)."""
BASELINES_NAME = "step-0 baselines"
"""The perplexity chart's dashed baselines, named once in its title (in the curves' own colours,
they need no name each: an SFT run's "instruction (held-out responses) baseline (dashed)" made
the title, and with it every chart, wider than a 1200-pixel window)."""
SFT_DOMAIN = "instruction (held-out responses)"
"""What an SFT run's "domain" curves measure: the loss on its held-out examples' responses."""
LR_GROUPS = {"embedding_lr": "embeddings and output layer", "new_token_lr": "new token rows"}
"""The learning-rate chart's curves of the groups with a rate of their own (step events'
fields), drawn and named only when the run logs them; `lr` is then the other weights'."""


def _curve(plot: pg.PlotItem, colour: str, width: float = 1.5, dashed: bool = False):
    pen = pg.mkPen(colour, width=width, style=pg.QtCore.Qt.PenStyle.DashLine if dashed else None)
    return downsampled_curve(plot, [], [], pen=pen)


def _title(text: str, names: list[tuple] = ()) -> str:
    """A chart's title with its curves named in their colours: the legend, outside the data.
    `names`: (colour, name) or (colour, name, mark), the mark "━" unless given ("╌": dashed)."""
    legend = "   ".join(f"<span style='color:{colour}'>{mark[0] if mark else '━'} {name}</span>"
                       for colour, name, *mark in names)
    # the scheme's text colour now: a title set after the theme recoloured the charts (the
    # learning rate's, once its groups are known) is not recoloured again
    return (f"<span style='color:{theme_colour('text')}'>{text}</span>"
            + (f"&nbsp;&nbsp;&nbsp;{legend}" if legend else ""))


class RunCharts(pg.GraphicsLayoutWidget):
    crosshair_moved = Signal(str)
    """The readout at the crosshair: step, tokens, wall time and every value."""
    checkpoint_clicked = Signal(int)
    """The step of the checkpoint whose marker was clicked."""

    def __init__(self, series: RunSeries, guard_threshold: float | None = 0.15,
                 eval_interval: int | None = None, parent=None, probes: bool = False,
                 checkpoint_interval: int | None = None, forgetting_source: bool = True,
                 max_grad_norm: float | None = None, domain_name: str = "domain"):
        """`forgetting_source`: the run has a general corpus or a general evaluation set (else
        its forgetting chart says there is none); `max_grad_norm`: the clipping threshold,
        drawn on the gradient-norm chart; `domain_name`: what the "domain" curves measure, in
        words (an SFT run's are its held-out responses, SFT_DOMAIN)."""
        super().__init__(parent)
        self.domain_name = domain_name
        self.show_probes, self.checkpoint_interval = probes, checkpoint_interval
        self.forgetting_source, self.max_grad_norm = forgetting_source, max_grad_norm
        self.setBackground("w")
        self.series, self.x_key = series, "step"
        self.guard_threshold, self.eval_interval = guard_threshold, eval_interval
        self._ema, self._ema_state = np.zeros(0), EmaState()
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.guard_markers: dict[tuple, list[pg.InfiniteLine]] = {}
        """(step, time) of a guard event -> its line on each chart, in self.plots' order."""
        self.resume_markers: dict[int, list[pg.InfiniteLine]] = {}
        """The n-th resume -> its line on each chart."""
        self._build()
        self._crosshair()

    @classmethod
    def for_config(cls, series: RunSeries, config: dict, parent=None) -> RunCharts:
        """The charts for a run's config.json (a dict): its guard threshold, intervals, whether
        it has a general corpus, probes during training, gradient clipping."""
        guard = config.get("guard", {})
        corpus, evaluation = config.get("corpus") or {}, config.get("eval") or {}
        general_sets = [s for s in evaluation.get("sets") or [] if s.get("kind", "general") == "general"]
        return cls(series, guard.get("threshold", 0.15) if guard.get("enabled", True) else None,
                   evaluation.get("interval"), parent,
                   probes=bool((config.get("benchmarks") or {}).get("probes_during_training")),
                   checkpoint_interval=(config.get("checkpoints") or {}).get("interval"),
                   forgetting_source=bool(corpus.get("general") or general_sets) if config.get("corpus") else True,
                   max_grad_norm=(config.get("schedule") or {}).get("max_grad_norm"),
                   domain_name=SFT_DOMAIN if config.get("stage") == "sft" else "domain")

    # --- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        self.track_plot = self.addPlot(row=0, col=0, axisItems={"left": ReadableAxis("left")})
        self._style(self.track_plot)
        self.track = MarkerTrack(self.track_plot, self.series)
        self.track.checkpoint_clicked.connect(self.checkpoint_clicked)
        self._plot("loss", "training loss", ["loss", "ema"])
        self._plot("lr", "learning rate", ["lr"])
        for name in LR_GROUPS:
            self.curves[name] = _curve(self.plots["lr"], COLOURS[name], width=1.8)
        self._plot("grad_norm", "gradient norm (before clipping)", ["grad_norm"])
        self._plot("ppl", "held-out perplexity (log)", ["domain", "general", "domain_base", "general_base"])
        self.plots["ppl"].setLogMode(y=True)
        self._plot("forgetting", "forgetting %", ["forgetting"])
        self._plot("speed", "tokens / s", ["speed"])
        if self.show_probes:  # benchmarks.probes_during_training: a live knowledge curve
            self._plot("probes", "knowledge probes: accuracy % (at each checkpoint)", [])
            self.plots["probes"].setYRange(0, 100, padding=0.02)  # accuracy: the whole scale
        self._limits()
        first, last = self.plots["loss"], list(self.plots.values())[-1]
        for plot in [self.track_plot, *self.plots.values()]:
            if plot is not first:
                plot.setXLink(first)
            if plot is not last:
                plot.hideAxis("bottom")  # one x-axis, at the bottom
        last.setLabel("bottom", "optimizer step")

    def _limits(self) -> None:
        """Dashed horizontal lines: the guard's threshold, the gradient clipping norm."""
        threshold = self.guard_threshold if self.forgetting_source else None  # no curve to guard
        lines = [("forgetting", threshold, lambda v: v * 100, "guard threshold", COLOURS["guard"]),
                 ("grad_norm", self.max_grad_norm, lambda v: v, "clipped above {:g}", "#999999")]
        for key, value, scaled, label, colour in lines:
            if value:
                line = pg.InfiniteLine(scaled(value), angle=0, label=label.format(value),
                                       pen=pg.mkPen(colour, style=pg.QtCore.Qt.PenStyle.DashLine),
                                       labelOpts={"position": 0.1, "color": colour, "anchors": [(0, 0), (0, 0)]})
                self.plots[key].addItem(line)

    @staticmethod
    def _style(plot: pg.PlotItem) -> None:
        plot.showGrid(x=False, y=True, alpha=0.15)  # vertical grid lines cost ~half of each frame
        plot.getAxis("left").setWidth(64)  # aligned plots, and room for 2.5e-05
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#666666")
            plot.getAxis(axis).setTextPen("#333333")
            # Drawn from a pixmap until its ticks change: replaying the tick labels was about
            # half of each frame, and a frame is a GUI-thread stall (2 loaded cores: ~80 -> ~40 ms).
            plot.getAxis(axis).setCacheMode(pg.QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def _plot(self, key: str, title: str, curves: list[str]) -> None:
        plot = self.addPlot(row=len(self.plots) + 1, col=0, axisItems={"left": ReadableAxis("left")})
        self._style(plot)
        names = [(COLOURS[CURVES[c][0]], self._named(CURVES[c][1])) for c in curves if CURVES[c][1]]
        if any(c.endswith("_base") for c in curves):
            names.append((theme_colour("text"), BASELINES_NAME, "╌"))
        plot.setTitle(_title(title, names if len(curves) > 1 else []))
        for name in curves:
            self.curves[name] = _curve(plot, COLOURS[CURVES[name][0]], width=1 if name == "loss" else 1.8,
                                       dashed=name.endswith("_base"))
        plot.empty_label = pg.TextItem("", color="#888888", anchor=(0.5, 0.5))
        plot.empty_label.setVisible(False)
        plot.sigRangeChanged.connect(lambda *_: self._place_label(plot))  # it stays in the middle
        plot.addItem(plot.empty_label, ignoreBounds=True)
        self.plots[key] = plot

    def _named(self, label: str) -> str:
        """A curve's name with "domain" said as this run's domain_name."""
        return label.replace("domain", self.domain_name, 1) if label.startswith("domain") else label

    def _crosshair(self) -> None:
        self.lines = {}
        for key, plot in [("track", self.track_plot), *self.plots.items()]:
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#999999", width=1))
            line.setVisible(False)  # until the mouse comes: a hidden line costs no frame time
            plot.addItem(line, ignoreBounds=True)
            self.lines[key] = line
        self._proxy = pg.SignalProxy(self.scene().sigMouseMoved, rateLimit=30, slot=self._on_mouse_moved)

    # --- data -------------------------------------------------------------------------
    def set_x_axis(self, key: str) -> None:
        self.x_key = key
        list(self.plots.values())[-1].setLabel("bottom", "tokens seen" if key == "tokens" else "optimizer step")
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
        self._markers()
        drawn = self.__dict__.setdefault("_drawn", {})
        pending = [(key, version, draw) for key, version, draw in self._plot_updates()
                   if drawn.get(key) != version]
        for key, version, draw in pending[:most]:
            draw()
            drawn[key] = version
        if pending or self.series.status is not getattr(self, "_status", None):
            self._status = self.series.status
            self._empty_messages()
        return most is None or len(pending) <= most

    def _plot_updates(self) -> list[tuple[str, tuple, Callable[[], None]]]:
        """(plot, the version of its data, how to draw it), in the order they are drawn."""
        steps, evals = self.series.steps.version, self.series.evals.version
        column = self.series.steps
        return [("loss", (steps, self.x_key), self._draw_loss),
                ("ppl", (evals, self.x_key), self._draw_perplexity),
                ("forgetting", (evals, self.x_key), self._draw_forgetting),
                ("lr", (steps, self.x_key), self._draw_learning_rates),
                ("grad_norm", (steps, self.x_key),
                 lambda: self._set("grad_norm", self._x(), column["grad_norm"].values)),
                ("speed", (steps, self.x_key),
                 lambda: self._set("speed", self._x(), column["tokens_per_second"].values))]

    def _x(self) -> np.ndarray:
        return self.series.steps[self.x_key].values

    def _draw_learning_rates(self) -> None:
        """The peak-rate groups' rate, and each group with a rate of its own (LR_GROUPS), named
        in the title."""
        column, x = self.series.steps, self._x()
        self._set("lr", x, column["lr"].values)
        groups = [name for name in LR_GROUPS if np.isfinite(column[name].values).any()]
        for name in LR_GROUPS:
            self._set(name, x if name in groups else [], column[name].values if name in groups else [])
        names = [(COLOURS["lr"], "other weights")] + [(COLOURS[n], LR_GROUPS[n]) for n in groups]
        title = _title("learning rate", names if groups else [])
        if title != getattr(self, "_lr_title", None):
            self._lr_title = title
            self.plots["lr"].setTitle(title)

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
                names = [(PROBE_COLOURS[k % len(PROBE_COLOURS)], name) for k, name in enumerate(self.series.probes)]
                self.plots["probes"].setTitle(_title("knowledge probes: accuracy % (at each checkpoint):", names))
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
        """Extend the smoothed loss (cpt_studio.core.smoothing.smoothed_loss) by the new steps;
        computed again from the start when a resume dropped steps."""
        done = len(self._ema)
        if done > len(loss):  # a resume dropped steps
            self._ema, self._ema_state, done = np.zeros(0), EmaState(), 0
        if done == len(loss):
            return
        more, self._ema_state = smoothed_loss(loss[done:], state=self._ema_state)
        self._ema = np.concatenate([self._ema, more])

    def _baselines(self, ex: np.ndarray) -> None:
        base = self.series.baseline
        if not base or not len(ex):
            return
        span = [ex[0], max(ex[-1], self.series.steps[self.x_key].values[-1] if len(self.series.steps) else ex[-1])]
        for name in ("domain", "general"):
            value = base.get(f"{name}_ppl")
            if value:
                self.curves[f"{name}_base"].setData(span, [value, value])

    # --- what an empty chart says -----------------------------------------------------------
    def _empty_messages(self) -> None:
        messages = self.empty_messages()
        for key, text in messages.items():
            label = self.plots[key].empty_label
            if label.isVisible() != bool(text):
                self.plots[key].getAxis("left").setStyle(showValues=not text)  # no made-up scale
            label.setText(text)
            label.setVisible(bool(text))  # a shown TextItem is re-placed at every frame
            self._place_label(self.plots[key])

    @staticmethod
    def _place_label(plot: pg.PlotItem) -> None:
        """An empty chart's message in its middle, a little above (where a threshold line of
        an empty chart lies)."""
        if plot.empty_label.isVisible():
            (x0, x1), (y0, y1) = plot.viewRange()
            plot.empty_label.setPos((x0 + x1) / 2, y0 + 0.72 * (y1 - y0))

    def empty_messages(self) -> dict[str, str]:
        """What each chart says while it has nothing to draw ("" once it has), in this run's
        terms: its evaluation interval, whether it has a general corpus, whether it ended."""
        status = self.series.status
        ended = status is not None and status.state in (State.FINISHED, State.STOPPED, State.FAILED)
        steps = self.series.steps
        no_steps = "" if len(steps) else ("the run ended before its first training step" if ended
                                          else "waiting for the first training step")
        no_grad = no_steps or ("" if np.isfinite(steps["grad_norm"].values).any()
                               else "the trainer logged no gradient norm")
        messages = {"loss": no_steps, "lr": no_steps, "speed": no_steps, "grad_norm": no_grad,
                    "ppl": self._no_perplexity(ended),
                    "forgetting": self._no_forgetting(ended)}
        if self.show_probes:
            every = f", every {self.checkpoint_interval} steps" if self.checkpoint_interval else ""
            messages["probes"] = ("" if self.series.probes else
                                  f"probe accuracy appears at each checkpoint{every}")
        return messages

    def _no_perplexity(self, ended: bool) -> str:
        evals = len(self.series.evals)
        if not evals:
            return "no evaluation was recorded" if ended else "waiting for the step-0 baseline"
        if evals == 1 and not ended:  # the baseline alone: one point, no line yet
            return f"step-0 baseline measured; {self._next_evaluation()}"
        return ""

    def _next_evaluation(self) -> str:
        """When the first evaluation after the baseline comes, in this run's settings."""
        interval, total = self.eval_interval, self.series.total_steps
        if not interval:
            return "the first point comes at the first evaluation"
        if total and interval > total:
            return f"evaluation every {interval:,} steps, longer than the run: first point at the end (step {total:,})"
        return f"evaluation every {interval:,} steps: first point at step {interval:,}"

    def _no_forgetting(self, ended: bool) -> str:
        evals = self.series.evals
        after_baseline = np.isfinite(evals["forgetting"].values) & (evals["step"].values > 0)
        if after_baseline.any():  # a point past the baseline's 0, whatever the config says
            return ""
        if not self.forgetting_source:
            return "no general corpus or general evaluation set: no forgetting curve"
        if not len(evals):
            return "no evaluation was recorded" if ended else "waiting for the step-0 baseline"
        if ended:
            return "the run ended before its first evaluation after the baseline"
        return f"step-0 baseline measured (0% by definition); {self._next_evaluation()}"

    # --- markers ----------------------------------------------------------------------------
    def _markers(self) -> None:
        """The marker track, and a line on every chart per guard decision and per resume,
        created once, placed in the x-axis unit; placed again when the unit or the steps
        (their tokens) change."""
        self.track.place(self.x_key, self._x_at_steps)
        placed = (len(self.series.guard), len(self.series.resumes), self.series.steps.version, self.x_key)
        if placed == getattr(self, "_placed_lines", None):
            return
        self._placed_lines = placed
        for event in self.series.guard:
            key = (event.step, event.time)
            if key not in self.guard_markers:
                text = f"guard: {event.get('action', 'decision')} at step {event.step}"
                tip = "\n".join(str(event.get(f)) for f in ("reason", "message", "remedy") if event.get(f))
                self.guard_markers[key] = self._lines(text, tip, COLOURS["guard"], 0.85)
            self._place(self.guard_markers[key], self._event_x(event))
        for n, step in enumerate(self.series.resumes):
            if n not in self.resume_markers:
                self.resume_markers[n] = self._lines(f"resumed from step {step}", "", COLOURS["resume"], 0.2,
                                                     dashed=True)
            self._place(self.resume_markers[n], float(self._x_at_steps(np.array([step], dtype=float))[0]))

    def _lines(self, text: str, tip: str, colour: str, position: float, dashed: bool = False) -> list:
        """A vertical line on every chart, labelled on the first."""
        lines = []
        for i, plot in enumerate(self.plots.values()):
            style = pg.QtCore.Qt.PenStyle.DashLine if dashed else pg.QtCore.Qt.PenStyle.SolidLine
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(colour, width=2, style=style),
                                   label=text if i == 0 else None,
                                   labelOpts={"position": position, "color": colour, "fill": label_fill()})
            line.setToolTip(tip or text)
            plot.addItem(line, ignoreBounds=True)
            lines.append(line)
        return lines

    @staticmethod
    def _place(lines: list[pg.InfiniteLine], x: float) -> None:
        for line in lines:
            line.setVisible(bool(np.isfinite(x)))
            if np.isfinite(x):
                line.setPos(x)

    def _event_x(self, event) -> float:
        """An event's place on the x-axis: its own value in that unit when it records one,
        else its step's (in tokens: NaN before the first step event)."""
        own = event.get(self.x_key)
        if own is not None:
            return float(own)
        return float(self._x_at_steps(np.array([event.step or 0], dtype=float))[0])

    # --- crosshair --------------------------------------------------------------------
    def _on_mouse_moved(self, event) -> None:
        position = event[0]
        for plot in [self.track_plot, *self.plots.values()]:
            if plot.sceneBoundingRect().contains(position):
                x = plot.vb.mapSceneToView(position).x()
                self.move_crosshair(x)
                return

    def move_crosshair(self, x: float) -> str:
        for line in self.lines.values():
            line.setPos(x)
            line.setVisible(True)
        text = self.readout(x)
        self.crosshair_moved.emit(text)
        return text

    def readout(self, x: float) -> str:
        """Every value at the step nearest to x: step, tokens, wall time (and time since the
        run started), loss and its smoothed value, learning rate, gradient norm, throughput,
        the last evaluation up to that step (perplexities, forgetting), the probes, and a
        checkpoint saved at that step."""
        steps = self.series.steps
        if not len(steps):
            return ""
        xs = steps[self.x_key].values
        i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
        step = steps["step"].values[i]
        parts = [f"step {int(step)}", f"tokens {int(steps['tokens'].values[i]):,}", *self._when(steps["time"].values[i]),
                 f"loss {steps['loss'].values[i]:.4f}"]
        if i < len(self._ema):
            parts.append(f"smoothed {self._ema[i]:.4f}")
        parts.append(f"lr {steps['lr'].values[i]:.3g}")
        parts += [f"{LR_GROUPS[name]} lr {steps[name].values[i]:.3g}" for name in LR_GROUPS
                  if np.isfinite(steps[name].values[i])]
        if np.isfinite(steps["grad_norm"].values[i]):
            parts.append(f"grad norm {steps['grad_norm'].values[i]:.3g}")
        parts.append(f"{steps['tokens_per_second'].values[i]:,.0f} tokens/s")
        if np.isfinite(steps["mfu"].values[i]):
            parts.append(f"{steps['mfu'].values[i]:.0%} MFU")
        parts += self._eval_readout(step)
        for key, table in self.series.probes.items():  # the last probe score up to this step
            k = int(np.searchsorted(table["step"].values, step, side="right")) - 1
            if k >= 0:
                parts.append(f"{key} {table['value'].values[k]:.0%}")
        if int(step) in self.series.latest_checkpoints():
            parts.append("checkpoint saved")
        return "   ".join(parts)

    def _when(self, at: float) -> list[str]:
        if not np.isfinite(at):
            return []
        since = f" (+{format_duration(at - self.series.started)})" if self.series.started else ""
        return [f"wall {time.strftime('%H:%M:%S', time.localtime(at))}{since}"]

    def _eval_readout(self, step: float) -> list[str]:
        evals = self.series.evals
        j = int(np.searchsorted(evals["step"].values, step, side="right")) - 1
        if not len(evals):
            return []
        j = max(j, 0)
        parts = [f"{self.domain_name} ppl {evals['domain_ppl'].values[j]:.3f} / general ppl "
                 f"{evals['general_ppl'].values[j]:.3f} (eval at step {int(evals['step'].values[j])})"]
        forgetting = evals["forgetting"].values[j]
        if np.isfinite(forgetting):
            parts.append(f"forgetting {forgetting:+.1%}")
        return parts


def label_fill() -> pg.QtGui.QColor:
    """A marker label's box: the chart's background in the theme shown, a little see-through."""
    fill = pg.QtGui.QColor(theme_colour("background"))
    fill.setAlpha(200)
    return fill
