"""Page 4, the learning-rate schedule, with a live plot of the LR over the run's steps (one
curve per group with a rate of its own: the embeddings and output layer, an extended
tokenizer's new rows) and the warning when the peak is too high for CPT."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QSpinBox

from cpt_studio.core.config import DECAYS
from cpt_studio.core.plan import lr_schedule
from cpt_studio.core.recipe import learning_rates_text

from ..charts import ReadableAxis
from ..setting_help import explain
from ..theme import styled
from .base import ConfigPage

PREVIEW_STEPS = 1000
GROUP_HELP = ("Multiples of the peak, scheduled alike. Embeddings and output layer: below 1 "
              "(e.g. 0.1) moves the vocabulary's rows, which every token passes through, less than "
              "the rest. New token rows (with a tokenizer extension, next page): above 1 (e.g. 10) "
              "lets the rows added for domain words learn fast; unset, they follow the embeddings.")
GROUP_COLOURS = {"embeddings": "#1f77b4", "new token rows": "#d62728"}


class SchedulePage(ConfigPage):
    sections = ("schedule:",)

    def __init__(self):
        super().__init__("Learning-rate schedule", "CPT wants a low peak: the model already knows a lot.")
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
        self.group_help = QLabel(GROUP_HELP, wordWrap=True, objectName="lr_group_help")
        styled(self.group_help, "color:{muted};")
        self.group_rates = QLabel(objectName="lr_groups")
        self.warning = QLabel(wordWrap=True, objectName="lr_warning")
        styled(self.warning, "color:{warning};")
        self.plot = pg.PlotWidget(axisItems={"left": ReadableAxis("left")}, background="w")
        self.plot.setMinimumHeight(160)
        self.plot.setLabel("bottom", "optimizer step")
        self.plot.addLegend(offset=(-10, 10))
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#2ca02c", width=2), name="peak rate (other weights)")
        self.group_curves = {name: self.plot.plot([], [], pen=pg.mkPen(colour, width=1.5), name=name)
                             for name, colour in GROUP_COLOURS.items()}
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
        schedule.new_token_lr_scale = self.new_token_scale.value() or None

    def _on_changed(self) -> None:
        if self.wizard() is None or self._loading:  # reload() draws once the widgets are loaded
            return
        self.commit()
        self._draw(self.config)

    def _draw(self, config) -> None:
        """The warning and the plot of the learning rate per step for `config`."""
        problems = [p for p in config.validate() if p.startswith("schedule:")]
        warnings = [w for w in config.warnings() if "learning rate" in w]
        self.warning.setText("\n".join(problems + warnings))
        if problems:
            return
        steps = config.schedule.max_steps or PREVIEW_STEPS
        rates = lr_schedule(config, steps)
        x = list(range(1, steps + 1))
        self.curve.setData(x, rates)
        for name, scale in group_scales(config).items():
            self.group_curves[name].setData(x, [r * scale for r in rates] if scale is not None else [])
        self.group_rates.setText(group_rates_words(config))
        self.epochs.setEnabled(not config.schedule.max_steps)  # a step count decides instead
        warmup = -(-steps * config.schedule.warmup_ratio // 1)
        self.warmup_region.setRegion((0, max(warmup, 0)))
        suffix = "" if config.schedule.max_steps else f" (shape over {PREVIEW_STEPS} steps)"
        self.plot.setTitle(f"learning rate per step{suffix}")


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
