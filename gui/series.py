"""The curves of one run, built incrementally from its events (no Qt here).

    series = RunSeries(RunPaths(run_dir).events)
    series.update(CHUNK_BYTES)    # reads on from the last update; a resume drops what it replaces
    series.steps["loss"].values   # numpy views, ready for a chart

Growing numpy columns keep 100,000 points per curve cheap to append and to draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpt_studio.core.events import (
    CheckpointEvent,
    EvalEvent,
    Event,
    GuardEvent,
    ProbeEvent,
    StepEvent,
)
from cpt_studio.core.timeline import RunTimeline

STEP_FIELDS = ("step", "tokens", "time", "loss", "lr", "grad_norm", "tokens_per_second", "mfu",
               "replay_fraction", "ewc_penalty", "embedding_lr", "new_token_lr")
EVAL_FIELDS = ("step", "tokens", "time", "domain_ppl", "general_ppl", "forgetting", "domain_gain")
PROBE_FIELDS = ("step", "value")


class Column:
    """An append-only float column with amortised growth; `values` is a view."""

    def __init__(self, capacity: int = 1024):
        self._data = np.full(capacity, np.nan)
        self._size = 0

    def append(self, value) -> None:
        if self._size == len(self._data):
            self._data = np.concatenate([self._data, np.full(len(self._data), np.nan)])
        self._data[self._size] = np.nan if value is None else value
        self._size += 1

    def truncate(self, size: int) -> None:
        self._size = min(size, self._size)

    @property
    def values(self) -> np.ndarray:
        return self._data[:self._size]

    def __len__(self) -> int:
        return self._size


class Table:
    def __init__(self, fields: tuple[str, ...]):
        self.columns = {name: Column() for name in fields}
        self.version = 0
        """Changes whenever a row is added or dropped: what a chart compares to redraw."""

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def append(self, event: Event) -> None:
        self.version += 1
        for name, column in self.columns.items():
            column.append(event.get(name))

    def keep_until(self, step: int) -> None:
        """Drop rows after `step` (a resume or rollback replaces them)."""
        steps = self.columns["step"].values
        keep = int(np.searchsorted(steps, step, side="right")) if len(steps) else 0
        self.version += 1
        for column in self.columns.values():
            column.truncate(keep)

    def __len__(self) -> int:
        return len(self.columns["step"])


class RunSeries(RunTimeline):
    """The run's timeline (cpt_studio.core.timeline) with its curves as numpy columns; a resume
    truncates them as the timeline drops what it supersedes."""

    def __init__(self, path: Path | None = None):
        super().__init__(path)
        self.steps = Table(STEP_FIELDS)
        self.evals = Table(EVAL_FIELDS)
        self.probes: dict[str, Table] = {}
        """Knowledge probes scored during training (live probe events), by "task metric"."""
        self.resumes: list[int] = []
        """The step each resume went on from (after a stop, a crash or a guard rollback), in order."""

    def add(self, events: list[Event]) -> None:
        """Apply events (typed, in file order) that were read elsewhere."""
        self.feed(events)

    @property
    def checkpoints(self) -> list[CheckpointEvent]:
        return self.of(CheckpointEvent)

    @property
    def guard(self) -> list[GuardEvent]:
        return self.of(GuardEvent)

    @property
    def last_time(self) -> float | None:
        """Time of the run's last own event (not the scores an evaluation adds later: they
        would stretch "elapsed")."""
        return self.last_progress

    def on_step(self, event: StepEvent) -> None:
        self.steps.append(event)

    def on_eval(self, event: EvalEvent) -> None:
        self.evals.append(event)

    def on_probe(self, event: ProbeEvent) -> None:
        if event.live and event.primary:
            self.probes.setdefault(f"{event.task} {event.metric}", Table(PROBE_FIELDS)).append(event)

    def on_resume(self, step: int) -> None:
        super().on_resume(step)
        self.resumes.append(step)
        for table in (self.steps, self.evals, *self.probes.values()):
            table.keep_until(step)

    @property
    def last_step(self) -> dict | None:
        if not len(self.steps):
            return None
        return {name: column.values[-1] for name, column in self.steps.columns.items()}
