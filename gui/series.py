"""The curves of one run, built incrementally from its events (no Qt here).

    series = RunSeries()
    series.add(events)            # in file order; a resume drops the steps it replaces
    series.steps["loss"].values   # numpy views, ready for a chart

Growing numpy columns keep 100,000 points per curve cheap to append and to draw.
"""

from __future__ import annotations

import numpy as np

STEP_FIELDS = ("step", "tokens", "time", "loss", "lr", "grad_norm", "tokens_per_second",
               "replay_fraction", "ewc_penalty")
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

    def append(self, event: dict) -> None:
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


class RunSeries:
    def __init__(self):
        self.steps = Table(STEP_FIELDS)
        self.evals = Table(EVAL_FIELDS)
        self.checkpoints: list[dict] = []
        self.guard: list[dict] = []
        self.probes: dict[str, Table] = {}
        """Knowledge probes scored during training (live probe events), by "task metric"."""
        self.baseline: dict | None = None
        self.status: dict = {}
        self.total_steps: int | None = None
        self.total_tokens: int | None = None
        self.started: float | None = None
        self.last_time: float | None = None

    def add(self, events: list[dict]) -> None:
        run_events = [e for e in events if e["type"] in ("step", "eval", "checkpoint", "status")]
        if run_events:  # not the scores an evaluation adds later: they would stretch "elapsed"
            self.last_time = run_events[-1].get("time", self.last_time)
        for event in events:
            handler = getattr(self, f"_on_{event['type']}", None)
            if handler:
                handler(event)

    def _on_step(self, event: dict) -> None:
        self.steps.append(event)

    def _on_eval(self, event: dict) -> None:
        self.evals.append(event)
        if event.get("baseline"):
            self.baseline = {"domain_ppl": event.get("domain_ppl"), "general_ppl": event.get("general_ppl")}

    def _on_checkpoint(self, event: dict) -> None:
        self.checkpoints.append(event)

    def _on_probe(self, event: dict) -> None:
        if event.get("live") and event.get("primary"):
            key = f"{event.get('task')} {event.get('metric')}"
            self.probes.setdefault(key, Table(PROBE_FIELDS)).append(event)

    def _on_guard(self, event: dict) -> None:
        self.guard.append(event)

    def _on_status(self, event: dict) -> None:
        self.started = self.started or event.get("time")
        if event.get("state"):
            self.status = event
        self.total_steps = event.get("total_steps", self.total_steps)
        self.total_tokens = event.get("total_tokens", self.total_tokens)
        resumed_from = event.get("resumed_from")
        if resumed_from is not None:
            self.steps.keep_until(resumed_from)
            self.evals.keep_until(resumed_from)
            for table in self.probes.values():
                table.keep_until(resumed_from)
            self.checkpoints = [c for c in self.checkpoints if c["step"] <= resumed_from]

    @property
    def last_step(self) -> dict | None:
        if not len(self.steps):
            return None
        return {name: column.values[-1] for name, column in self.steps.columns.items()}
