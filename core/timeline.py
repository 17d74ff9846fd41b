"""The one reader of a run's events: events.jsonl turned into the run's history as it stands.

    timeline = RunTimeline.load(RunPaths(run_dir).events)   # everything written so far
    timeline.of(EvalEvent)                                   # the evaluations, resumes applied
    live = RunTimeline(RunPaths(run_dir).events)
    new = live.update()                                      # what was written since, typed

When a run resumes from the checkpoint at step N (a status event with `resumed_from`: after a
crash, a stop, or a guard rollback), what the interrupted attempt logged after step N is
superseded: the resumed attempt logs those steps again. RunTimeline drops it, and tells
subclasses through on_resume(N). The store (cpt_studio.core.store), the CLI's progress printer
(cpt_studio.core.cli_runs) and the GUI's curves (cpt_studio.gui.series) are subclasses: each
does its own thing in the on_<type> hooks, and none parses the stream itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from .events import (
    BenchmarkEvent,
    CheckpointEvent,
    EvalEvent,
    Event,
    EventTail,
    Phase,
    ProbeEvent,
    StatusEvent,
    StepEvent,
)

SUPERSEDED_BY_RESUME = (StepEvent, EvalEvent, CheckpointEvent, ProbeEvent, BenchmarkEvent)
"""Guard events are not among them: a guard decision is why a run resumed from an earlier
step, part of the history that the resumed attempt does not repeat. Status and log events
stay too (they say what happened, when)."""
RUN_PROGRESS = (StepEvent, EvalEvent, CheckpointEvent, StatusEvent)
"""Events of the training run itself; scores an evaluation adds later are not (they would
stretch the run's elapsed time)."""

E = TypeVar("E", bound=Event)


class RunTimeline:
    """A run's events in order, with resumes applied; fed all at once or as the file grows.

    `events` holds what is kept; the figures below follow it. Subclasses override the
    on_<type>(event) hooks (on_step, on_eval, on_checkpoint, on_guard, on_probe, on_benchmark,
    on_status, on_log) and on_resume(step), called as each event is applied."""

    def __init__(self, path: Path | None = None, offset: int = 0):
        self.tail = EventTail(path, offset) if path is not None else None
        self.events: list[Event] = []
        self._by_type: dict[type, list[Event]] = {}
        """The kept events again, by type: of() without a scan of them all (the monitor asks for
        the guard events and checkpoints at every redraw)."""
        self.status: StatusEvent | None = None
        """The last status event that names a state (running, finished, stopped, failed)."""
        self.total_steps: int | None = None
        self.total_tokens: int | None = None
        self.started: float | None = None
        """Time of the first event (unix seconds)."""
        self.updated: float | None = None
        """Time of the last event."""
        self.last_progress: float | None = None
        """Time of the last event of the training run itself (RUN_PROGRESS)."""
        self._earlier_attempts = 0.0
        """Seconds the run's earlier attempts worked (first to last RUN_PROGRESS event of each)."""
        self._attempt_started: float | None = None

    @classmethod
    def load(cls, path: Path) -> RunTimeline:
        """The timeline of everything in `path` now (empty when it does not exist yet)."""
        timeline = cls(path)
        timeline.update()
        return timeline

    def update(self, max_bytes: int = -1) -> list[Event]:
        """Read what was written since the last update (at most about `max_bytes`), apply it,
        and return it. Raises json.JSONDecodeError for a line that is not JSON."""
        if self.tail is None:
            raise ValueError("this timeline has no events file; feed() it events instead")
        events = self.tail.read(max_bytes)
        self.feed(events)
        return events

    def feed(self, events: Iterable[Event]) -> None:
        for event in events:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        if isinstance(event, StatusEvent):
            if event.resumed_from is not None:
                self.on_resume(event.resumed_from)
            self.status = event if event.state is not None else self.status
            self.total_steps = event.total_steps or self.total_steps
            self.total_tokens = event.total_tokens or self.total_tokens
        self.events.append(event)
        self._by_type.setdefault(type(event), []).append(event)
        if event.time is not None:
            self.started = self.started or event.time
            self.updated = event.time
            if isinstance(event, RUN_PROGRESS):
                self._attempt(event)
                self.last_progress = event.time
        hook = getattr(self, f"on_{event.TYPE}", None)
        if hook is not None:
            hook(event)

    def _attempt(self, event: Event) -> None:
        """A worker starting (its 'loading' status) begins an attempt: the time since the
        previous attempt's last event (stopped, waiting for Resume) is not the run's."""
        starts = isinstance(event, StatusEvent) and event.phase == Phase.LOADING
        if self._attempt_started is None:
            self._attempt_started = event.time
        elif starts and self.last_progress is not None:
            self._earlier_attempts += self.last_progress - self._attempt_started
            self._attempt_started = event.time

    def elapsed(self, now: float | None = None) -> float:
        """Seconds the run has worked, over all its attempts (the idle time between a stop and
        its resume left out): up to `now` for a running run, else to its last own event."""
        if self._attempt_started is None:
            return 0.0
        end = now if now is not None else self.last_progress
        return self._earlier_attempts + max(end - self._attempt_started, 0.0)

    def on_resume(self, step: int) -> None:
        """Drop what an earlier attempt logged after `step`."""
        def kept(events: list[Event]) -> list[Event]:
            return [e for e in events if not isinstance(e, SUPERSEDED_BY_RESUME) or (e.step or 0) <= step]

        self.events = kept(self.events)
        self._by_type = {kind: kept(events) for kind, events in self._by_type.items()}

    # -- what the timeline holds -------------------------------------------------------------

    def of(self, kind: type[E]) -> list[E]:
        """The kept events of one type, in order (a list of the timeline's own: do not change it)."""
        return self._by_type.get(kind, [])

    @property
    def baseline(self) -> EvalEvent | None:
        """The step-0 evaluation of the base model."""
        return next((e for e in self.of(EvalEvent) if e.baseline), None)

    def latest_checkpoints(self) -> dict[int, CheckpointEvent]:
        """Each checkpoint step's last event (a re-save replaces the earlier one), by step."""
        return {event.step: event for event in self.of(CheckpointEvent)}
