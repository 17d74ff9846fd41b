"""The run's event log: one JSON object per line, flushed per line (DESIGN.md, Events).

The worker appends; the GUI and CLI read. A reader ignores a torn last line, which is
what a reader sees while the worker is half-way through writing one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EVENT_TYPES = ("step", "eval", "checkpoint", "guard", "probe", "benchmark", "status", "log")

ProgressCallback = Callable[[dict[str, Any]], None]
"""Receives event-shaped dicts (type, phase, done, total, ...) from long work."""


class EventWriter:
    """Appends events to events.jsonl, one line each, flushed at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def emit(self, type: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; one of {', '.join(EVENT_TYPES)}")
        event = {"type": type, "time": time.time(), "step": step, **fields}
        self._file.write(json.dumps(event, default=_jsonable) + "\n")
        self._file.flush()
        return event

    def __call__(self, event: dict[str, Any]) -> None:
        """Use the writer as a ProgressCallback."""
        fields = dict(event)
        self.emit(fields.pop("type", "status"), fields.pop("step", None), **fields)

    def close(self) -> None:
        self._file.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_events(path: Path, offset: int = 0, max_bytes: int = -1) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte `offset` on (at most about `max_bytes` of them), and the
    offset to continue from.

    A last line without its newline is not returned (it is still being written)."""
    events: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(max_bytes)
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if line.strip():
            events.append(json.loads(line))
    return events, offset + end


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    yield from read_events(path)[0]


SUPERSEDED_BY_RESUME = ("step", "eval", "checkpoint", "probe", "benchmark")
"""Guard events are not among them: a guard decision is why a run resumed from an earlier
step, part of the history that the resumed attempt does not repeat."""


def timeline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's history as it stands: when a run resumed from step N (a status event with
    "resumed_from"), what the interrupted attempt logged after step N is dropped, since the
    resumed attempt logs those steps again (a guard rollback resumes the same way)."""
    kept: list[dict[str, Any]] = []
    for event in events:
        resumed_from = event.get("resumed_from")
        if resumed_from is not None:
            kept = [e for e in kept
                    if e["type"] not in SUPERSEDED_BY_RESUME or (e.get("step") or 0) <= resumed_from]
        kept.append(event)
    return kept


def last_event(path: Path, type: str, chunk: int = 64 * 1024) -> dict[str, Any] | None:
    """The last complete event of `type`, reading the file backwards: cheap however long
    the run has been going. A torn last line is skipped."""
    marker = f'"type": "{type}"'.encode()
    with open(path, "rb") as f:
        end = _after_last_newline(f, chunk)
        cut = b""  # the start of a line whose end the later chunk held
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            lines = (f.read(end - start) + cut).split(b"\n")
            cut = lines.pop(0) if start > 0 else b""
            for line in reversed(lines):
                if marker in line:
                    return json.loads(line)
            end = start
    return None


def _after_last_newline(f, chunk: int) -> int:
    end = f.seek(0, 2)
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        found = f.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0
