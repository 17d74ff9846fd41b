"""Page 4, the learning-rate schedule, with a live plot of the LR over the run (one curve per
group with a rate of its own: the embeddings and output layer, an extended tokenizer's new
rows; the legend lists only the curves drawn) and the warning when the peak is too high for CPT.

What decides the run's length decides the x-axis: max_steps or a token budget, optimizer steps
(recipe.steps_from_settings); epochs, the passes over the domain corpus (an SFT run: its
instruction data), whose step count needs the data's rows and is the plan's to give. The curve
is read at PREVIEW_POINTS steps at most, so a 100,000-step run keeps each edit quick.

    SchedulePage()                       # the CPT wizard's
    SchedulePage(new_token_rows=False)   # an SFT run never extends its tokenizer
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QSpinBox

from cpt_studio.core.config import DECAYS
from cpt_studio.core.plan import lr_schedule
from cpt_studio.core.recipe import learning_rates_text, steps_from_settings

from ..charts import ReadableAxis
from ..setting_help import explain
from ..theme import styled
from .base import ConfigPage

PREVIEW_STEPS = 1000
"""The steps the curve's shape is drawn over when epochs decide the run's length."""
PREVIEW_POINTS = 1000
"""The most steps the curve is read at: a 100,000-step run drawn at every step made each edit
take about 2 s on 2 cores; at 1,000 points the curve looks the same at the chart's width."""
GROUP_HELP = ("Multiples of the peak, scheduled alike. Embeddings and output layer: below 1 "
              "(e.g. 0.1) moves the vocabulary's rows, which every token passes through, less than "
              "the rest. New token rows (with a tokenizer extension, next page): above 1 (e.g. 10) "
              "lets the rows added for domain words learn fast; unset, they follow the embeddings.")
EMBEDDING_HELP = ("A multiple of the peak, scheduled alike: below 1 (e.g. 0.1) moves the vocabulary's "
                  "rows (input embeddings and output layer), which every token passes through, less "
                  "than the rest.")
"""The help without the new rows' multiple (an SFT run never extends its tokenizer)."""
GROUP_COLOURS = {"embeddings": "#1f77b4", "new token rows": "#d62728"}
MAIN_CURVE = "#2ca02c"


class SchedulePage(ConfigPage):
    sections = ("schedule:",)

    def __init__(self, new_token_rows: bool = True):
        """`new_token_rows`: offer the multiple of an extended tokenizer's new rows (not in
        an SFT run: it never extends the tokenizer, and the page then always stores None)."""
        super().__init__("Learning-rate schedule", "CPT wants a low peak: the model already knows a lot.")
        self.new_token_rows = new_token_rows
        self.peak = QLineEdit(objectName="peak_lr")
        self.warmup = QDoubleSpinBox(objectName="warmup_percent", suffix=" %", decimals=2, maximum=50)
        self.decay = QComboBox(objectName="decay")
        self.decay.addItems(DECAYS)
        self.min_ratio = QDoubleSpinBox(objectName="min_lr_percent", suffix=" % of peak", maximum=100)
        self.steps = QSpinBox(objectName="max_steps", maximum=10_000_000, specialValueText="from the epochs below")
        self.epochs = QDoubleSpinBox(objectName="epochs", decimals=2, minimum=0.01, maximum=1000, singleStep=0.5,
                                     suffix=" passes over the data")
        self.embedding_scale = QDoubleSpinBox(objectName="embedding_lr_scale", prefix="x ", decimals=3,
                                              minimum=0.001, maximum=10, singleStep=0.1, value=1)
        self.new_token_scale = QDoubleSpinBox(objectName="new_token_lr_scale", prefix="x ", decimals=3,
                                              minimum=0, maximum=100, singleStep=1,
                                              specialValueText="as the embeddings")
        for widget, path in ((self.peak, "schedule.peak_lr"), (self.warmup, "schedule.warmup_ratio"),
                             (self.decay, "schedule.decay"), (self.min_ratio, "schedule.min_lr_ratio"),
                             (self.steps, "schedule.max_steps"), (self.epochs, "schedule.epochs"),
                             (self.embedding_scale, "schedule.embedding_lr_scale"),
                             (self.new_token_scale, "schedule.new_token_lr_scale")):
            explain(widget, path)
        form = QFormLayout()
        form.addRow("Peak learning rate:", self.peak)
        form.addRow("Warmup:", self.warmup)
        form.addRow("Decay:", self.decay)
        form.addRow("Final learning rate:", self.min_ratio)
        form.addRow("Optimizer steps:", self.steps)
        form.addRow("Epochs:", self.epochs)
        form.addRow("Embeddings and output layer:", self.embedding_scale)
        form.addRow("New token rows:", self.new_token_scale)
        form.setRowVisible(self.new_token_scale, new_token_rows)
        self.group_help = QLabel(GROUP_HELP if new_token_rows else EMBEDDING_HELP, wordWrap=True,
                                 objectName="lr_group_help")
        styled(self.group_help, "color:{muted};")
        self.group_rates = QLabel(objectName="lr_groups")
        self.warning = QLabel(wordWrap=True, objectName="lr_warning")
        styled(self.warning, "color:{warning};")
        self.plot = pg.PlotWidget(axisItems={"left": ReadableAxis("left")}, background="w")
        self.plot.setMinimumHeight(160)
        self.plot.setLabel("bottom", "optimizer step")
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.curve = self.plot.plot([], [], pen=pg.mkPen(MAIN_CURVE, width=2))
        self.group_curves = {name: self.plot.plot([], [], pen=pg.mkPen(colour, width=1.5))
                             for name, colour in GROUP_COLOURS.items()}
        """Each group's curve, named in the legend only while it is drawn (_name_curves)."""
        self.warmup_region = pg.LinearRegionItem(movable=False, brush=(255, 200, 0, 50))
        self.plot.addItem(self.warmup_region)
        self.layout_.addLayout(form)
        self.layout_.addWidget(self.group_help)
        self.layout_.addWidget(self.group_rates)
        self.layout_.addWidget(self.warning)
        self.layout_.addWidget(self.plot)
        self.finish_layout()
        self.peak.textChanged.connect(self._on_changed)
        for widget in (self.warmup, self.min_ratio, self.steps, self.epochs, self.embedding_scale,
                       self.new_token_scale):
            widget.valueChanged.connect(self._on_changed)
        self.decay.currentTextChanged.connect(self._on_changed)

    def load(self, config) -> None:
        schedule = config.schedule
        self.peak.setText(rate_text(schedule.peak_lr))
        self.warmup.setValue(schedule.warmup_ratio * 100)
        self.decay.setCurrentText(schedule.decay)
        self.min_ratio.setValue(schedule.min_lr_ratio * 100)
        self.steps.setValue(schedule.max_steps or 0)
        self.epochs.setValue(schedule.epochs)
        self.embedding_scale.setValue(schedule.embedding_lr_scale)
        self.new_token_scale.setValue(schedule.new_token_lr_scale or 0)
        self._draw(config)

    def store(self, config) -> None:
        schedule = config.schedule
        try:
            schedule.peak_lr = float(self.peak.text())
        except ValueError:
            schedule.peak_lr = -1.0  # validate() names the problem
        schedule.warmup_ratio = round(self.warmup.value() / 100, 6)
        schedule.decay = self.decay.currentText()
        schedule.min_lr_ratio = round(self.min_ratio.value() / 100, 6)
        schedule.max_steps = self.steps.value() or None
        schedule.epochs = round(self.epochs.value(), 4)
        schedule.embedding_lr_scale = self.embedding_scale.value()
        schedule.new_token_lr_scale = (self.new_token_scale.value() or None) if self.new_token_rows else None

    def _on_changed(self) -> None:
        if self.wizard() is None or self._loading:  # reload() draws once the widgets are loaded
            return
        self.commit()
        self._draw(self.config)

    def _draw(self, config) -> None:
        """The warning and the plot of the learning rate over the run for `config`: against
        optimizer steps when the settings decide the step count, else against epochs."""
        problems = [p for p in config.validate() if p.startswith("schedule:")]
        warnings = [w for w in config.warnings() if "learning rate" in w]
        self.warning.setText("\n".join(problems + warnings))
        if problems:
            return
        steps = steps_from_settings(config)
        total = steps or PREVIEW_STEPS
        at = preview_steps(total, config.schedule.warmup_ratio)
        rates = np.array(lr_schedule(config, total, at))
        # step n (0-based) is the rate of the (n+1)-th optimizer step; in epochs, where it ends
        per_step = 1 if steps else config.schedule.epochs / total
        x = (at + 1) * per_step
        self.curve.setData(x, rates)
        scales = {name: scale for name, scale in group_scales(config).items()
                  if scale is not None and (self.new_token_rows or name != "new token rows")}
        for name, curve in self.group_curves.items():
            if name in scales:
                curve.setData(x, rates * scales[name])
            else:
                curve.setData([], [])
        self._name_curves(list(scales))
        self.group_rates.setText(group_rates_words(config))
        self.epochs.setEnabled(steps is None)  # a step count or a token budget decides instead
        self.steps.setSpecialValueText("from the token budget" if config.schedule.token_budget
                                       else "from the epochs below")
        warmup = -(-total * config.schedule.warmup_ratio // 1)
        self.warmup_region.setRegion((0, max(warmup, 0) * per_step))
        self.plot.setLabel("bottom", "optimizer step" if steps else f"epochs of the {data_words(config)}")
        self.plot.setTitle(length_words(config, steps))

    def _name_curves(self, groups: list[str]) -> None:
        """The legend: the curves drawn, and none when the peak rate's is the only one."""
        shown = [(self.curve, "other weights")] + [(self.group_curves[g], g) for g in groups]
        if groups == getattr(self, "_named_groups", None):
            return
        self._named_groups = groups
        self.legend.clear()
        for curve, name in shown if groups else []:
            self.legend.addItem(curve, name)
        self.legend.setVisible(bool(groups))


def preview_steps(total: int, warmup_ratio: float, points: int = PREVIEW_POINTS) -> np.ndarray:
    """The steps (0-based) of a `total`-step run the curve is read at: every one up to `points`,
    else `points` spread evenly, the last warmup step among them (the peak's corner stays sharp)."""
    if total <= points:
        return np.arange(total)
    spread = np.linspace(0, total - 1, points).round().astype(int)
    warmup = int(-(-total * warmup_ratio // 1))
    return np.unique(np.append(spread, [warmup] if 0 < warmup < total else []).astype(int))


def data_words(config) -> str:
    """What an epoch passes over: the domain corpus, or an SFT run's instruction data."""
    return "instruction data" if config.stage == "sft" else "domain corpus"


def length_words(config, steps: int | None) -> str:
    """The chart's title: what decides the run's length (schedule.max_steps, token_budget or
    epochs), in numbers."""
    schedule = config.schedule
    if schedule.max_steps:
        return f"learning rate over the run's {steps:,} optimizer steps (max steps)"
    if schedule.token_budget:
        return f"learning rate over the token budget: {schedule.token_budget:,} tokens = {steps:,} optimizer steps"
    return f"the run's length follows {schedule.epochs:g} epochs of the {data_words(config)}"


def rate_text(rate: float) -> str:
    """A learning rate as people write it: 2e-05, 2e-04, 1.5e-04 (":g" wrote 2e-4 as 0.0002
    beside 2e-05)."""
    return f"{rate:.2e}".replace(".00e", "e").replace("0e", "e") if 0 < rate < 0.01 else f"{rate:g}"


def group_scales(config) -> dict[str, float | None]:
    """Each group's multiple of the peak rate, None for a group without a rate of its own (the
    new rows' is shown once set: the extension is turned on after this page)."""
    schedule = config.schedule
    return {"embeddings": schedule.embedding_lr_scale if schedule.embedding_lr_scale != 1 else None,
            "new token rows": schedule.new_token_lr_scale}


def group_rates_words(config) -> str:
    """Each group's peak rate (cpt_studio.core.recipe.learning_rates_text), and the new rows'
    multiple that waits for the tokenizer extension (turned on after this page)."""
    words = learning_rates_text(config)
    waiting = config.schedule.new_token_lr_scale is not None and not config.tokenizer.extend
    if waiting:
        words += (("; " if words else "") + f"new token rows x{config.schedule.new_token_lr_scale:g} "
                  "once the tokenizer is extended (next page)")
    return f"Peak rates: {words}" if words else ""
