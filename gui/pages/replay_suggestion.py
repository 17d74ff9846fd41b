"""The replay page's suggestion: how far the domain is from general text for this base model
(cpt_studio.core.domain_distance), measured in the background, and the replay ratio that
follows, with the reason in words and a button that sets it.

    box = ReplaySuggestionBox(lambda: wizard.config)   # the setup as the user edits it
    box.use_ratio.connect(lambda ratio: ...)   # the user clicked "Use 10%"
    box.measure()                               # a no-op when this setup was measured already
    box.stop()                                  # cancel a measurement in flight and wait for it
"""

from __future__ import annotations

import copy
import html
from collections.abc import Callable
from dataclasses import astuple

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from cpt_studio.core.config import RunConfig
from cpt_studio.core.domain_distance import (
    DomainDistance,
    ReplaySuggestion,
    measure_distance,
    suggest_replay,
)
from cpt_studio.core.progress import Progress

from ..job_progress import JobProgress
from ..jobs import Job
from ..theme import styled
from .pending import wait_while


def measure_and_suggest(config: RunConfig, progress: Progress | None = None
                        ) -> tuple[DomainDistance, ReplaySuggestion]:
    """The distance (loads the base model) and the replay ratio it suggests."""
    distance = measure_distance(config, progress=progress)
    return distance, suggest_replay(distance)


def measurement_key(config: RunConfig) -> tuple:
    """What the measurement reads: the model, both corpora, the sequence length, the separator."""
    corpus = config.corpus
    return (config.model.name_or_path, tuple(astuple(s) for s in corpus.domain),
            tuple(astuple(s) for s in corpus.general), config.batch.seq_len, corpus.separator)


def measurement_html(distance: DomainDistance, suggestion: ReplaySuggestion) -> str:
    """The three measurements, each with its band, then the reason."""
    bands = suggestion.bands
    rows = [("perplexity of the base model", f"{distance.domain_ppl:.1f}", f"{distance.general_ppl:.1f}",
             f"{distance.perplexity_ratio:.2f}x", bands["perplexity"]),
            ("tokens per word", f"{distance.domain_fertility:.2f}", f"{distance.general_fertility:.2f}",
             f"{distance.fertility_ratio:.2f}x", bands["fertility"]),
            ("domain words found in general text", "", "", f"{distance.overlap:.0%}", bands["overlap"])]
    cells = "".join(f"<tr><td>{name}</td><td align=right>{d}</td><td align=right>{g}</td>"
                    f"<td align=right>{ratio}</td><td>{band}</td></tr>" for name, d, g, ratio, band in rows)
    table = ("<table cellspacing=0 cellpadding=3><tr><th></th><th align=right>domain</th>"
             f"<th align=right>general</th><th align=right>ratio</th><th align=left>band</th></tr>{cells}</table>")
    reason = suggestion.reason[:1].upper() + suggestion.reason[1:]
    return (f"<b>Suggested replay ratio: {suggestion.replay_ratio:.0%}</b> (distance: {suggestion.band})"
            f"{table}<span>{html.escape(reason)}.</span>")


class ReplaySuggestionBox(QGroupBox):
    use_ratio = Signal(float)
    """The suggested replay ratio (a fraction), when the user chose to use it."""

    def __init__(self, current_config: Callable[[], RunConfig], parent=None):
        super().__init__("Distance from general text", parent, objectName="replay_suggestion")
        self.current_config = current_config
        self.key: tuple | None = None
        """The setup (measurement_key) measured last, or being measured."""
        self.suggestion: ReplaySuggestion | None = None
        self.job: Job | None = None
        self.text = QLabel("Measured when the corpora have both a domain and a general source: "
                           "the base model reads a sample of each.", wordWrap=True,
                           objectName="distance_text",
                           textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_button = QPushButton(objectName="use_suggestion", visible=False,
                                      clicked=self._on_use_clicked)
        self.again_button = QPushButton("Measure again", objectName="measure_again",
                                        clicked=self._on_again_clicked, enabled=False)
        self.progress = JobProgress()
        buttons = QHBoxLayout()
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.again_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        styled(self.text, "color:{text};")

    def measure(self, *, again: bool = False) -> Job | None:
        """Measure the current setup in the background (nothing without a domain and a
        general source, or when it was measured already and not `again`)."""
        config = copy.deepcopy(self.current_config())
        key = measurement_key(config)
        self.again_button.setEnabled(bool(config.corpus.domain and config.corpus.general))
        if not (config.corpus.domain and config.corpus.general) or (key == self.key and not again):
            return None
        self.stop()
        self.key, self.suggestion = key, None
        self.use_button.hide()
        self.text.setText("Measuring how far the domain is from general text for this model…")
        self.job = job = Job(measure_and_suggest, config, cancellable=True)
        job.finished.connect(lambda result: self._on_measured(key, *result))
        job.failed.connect(lambda message: self._on_ended(key, f"⚠ The distance could not be measured: "
                                                               f"{html.escape(message)}"))
        job.cancelled.connect(lambda: self._on_ended(key, "Measurement cancelled: Measure again "
                                                          "to measure it."))
        self.progress.watch(job)
        return job.start()

    def stop(self) -> None:
        """Cancel a measurement in flight and wait until it has stopped (at its next stage)."""
        if self.job is not None:
            self.job.cancel()
            wait_while(lambda: self.job is not None)

    def _on_measured(self, key: tuple, distance: DomainDistance, suggestion: ReplaySuggestion) -> None:
        self.job = None
        if key != self.key:
            return
        self.suggestion = suggestion
        self.text.setText(measurement_html(distance, suggestion))
        self.use_button.setText(f"Use {suggestion.replay_ratio:.0%}")
        self.use_button.show()

    def _on_ended(self, key: tuple, message: str) -> None:
        self.job = None
        if key == self.key:
            self.key = None  # measured again next time
            self.text.setText(message)

    def _on_use_clicked(self) -> None:
        if self.suggestion is not None:
            self.use_ratio.emit(self.suggestion.replay_ratio)

    def _on_again_clicked(self) -> None:
        self.measure(again=True)
