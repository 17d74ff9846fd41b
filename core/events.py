"""The run's event log: one JSON object per line, flushed per line, each line one typed event.

    writer = EventWriter(RunPaths(run_dir).events)
    writer.emit("step", 12, loss=2.31, lr=3e-5, tokens=98_304)    # checked against StepEvent
    tail = EventTail(RunPaths(run_dir).events)
    for event in tail.read():                                    # StepEvent, EvalEvent, ...
        ...

The worker (and the evaluation worker) append; the store, the CLI and the GUI read, all
through EventTail and cpt_studio.core.timeline.RunTimeline. A reader ignores a torn last line,
which is what it sees while the worker is half-way through writing one.

Each event type is a dataclass below. The writer is strict (an unknown field is a bug in the
writer and raises TypeError); the reader is lenient (fields it does not know, from an older or
newer version, are kept in `extra`), so that old run folders stay readable. The JSON of an
event is its fields flattened: {"type": "step", "time": ..., "step": 12, "loss": 2.31, ...}.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

ProgressCallback = Callable[[dict[str, Any]], None]
"""Receives event-shaped dicts (type, phase, done, total, ...) from long work."""


class State(str, Enum):
    """Where a run (or an evaluation job) is: the `state` of a status event."""

    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


FINAL_STATES = (State.FINISHED, State.STOPPED, State.FAILED)


class Phase(str, Enum):
    """What a running worker is doing: the `phase` of a status event, in the order a run
    passes through them (IMPORTING and TOKENIZER only when a .gguf is imported or the tokenizer
    extended; CHECKING and the evaluation's EVALUATING in the evaluation worker)."""

    LOADING = "loading"
    IMPORTING = "importing"
    TOKENIZER = "tokenizer"
    TOKENIZING = "tokenizing"
    FISHER = "fisher"
    BASELINE = "baseline"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PROBING = "probing"
    SAVING = "saving"
    CHECKING = "checking"
    DONE = "done"
    ERROR = "error"


@dataclass
class Event:
    """Fields every event has: when it was written and the optimizer step it belongs to
    (None for events before training, e.g. loading)."""

    TYPE: ClassVar[str] = ""
    OPEN: ClassVar[bool] = False
    """True for types whose writers add fields of their own (kept in `extra`)."""
    step: int | None = None
    time: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Fields this version does not name: per-set metrics of an eval event, progress figures of
    a status event, or fields of an event written by another version."""

    def to_dict(self) -> dict[str, Any]:
        """The event as written to events.jsonl: fields flattened, `type` first, and those
        that are None left out (type, time and step are always there)."""
        data: dict[str, Any] = {"type": self.TYPE, "time": self.time, "step": self.step}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in data and f.name != "extra" and value is not None:
                data[f.name] = value.value if isinstance(value, Enum) else value
        return {**data, **self.extra}

    def get(self, name: str, default: Any = None) -> Any:
        """A field by name, named or in `extra` (for metrics whose names are data: a curve's
        name, an evaluation set's `{name}_ppl`)."""
        if name in self.extra:
            return self.extra[name]
        value = getattr(self, name, default) if name in _names(type(self)) else default
        return default if value is None else value

    @classmethod
    def from_fields(cls, fields: dict[str, Any], *, strict: bool) -> Event:
        names = _names(cls)
        known = {k: v for k, v in fields.items() if k in names}
        unknown = {k: v for k, v in fields.items() if k not in names and k != "type"}
        if unknown and strict and not cls.OPEN:
            raise TypeError(f"{cls.TYPE} events have no field(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(names))}")
        event = cls(**known)
        event.extra = unknown
        return event._normalised()

    def _normalised(self) -> Event:
        return self


@dataclass
class StepEvent(Event):
    """One optimizer step's training figures (logged every `logging_steps`)."""

    TYPE: ClassVar[str] = "step"
    loss: float | None = None
    """Training loss (nats per token), averaged over the logging window by the Trainer."""
    lr: float | None = None
    grad_norm: float | None = None
    tokens: int | None = None
    """Training tokens seen up to this step (all processes)."""
    tokens_per_second: float | None = None
    mfu: float | None = None
    """Model FLOPs utilisation, 0-1: tokens/s x the model's training FLOPs per token / the peak
    of all the run's GPUs (cpt_studio.core.estimate.model_flops_utilisation); None where the
    peak is unknown (a CPU, or a GPU not in estimate.GPU_PEAK_TFLOPS without system.peak_tflops)."""
    replay_fraction: float | None = None
    """Share of this step's sequences drawn from the general corpus."""
    ewc_penalty: float | None = None
    embedding_lr: float | None = None
    """The embeddings' and output layer's learning rate at this step, when it has its own
    (schedule.embedding_lr_scale); `lr` is the peak-rate groups'."""
    new_token_lr: float | None = None
    """The learning rate of an extended tokenizer's new rows at this step, when they have their
    own (schedule.new_token_lr_scale)."""


@dataclass
class EvalEvent(Event):
    """Held-out evaluation at a step: perplexity (and bits per byte, loss, word perplexity) of
    each evaluation set as `{set}_ppl`, `{set}_bpb`, ... (the sets other than domain and general
    are in `extra`), and domain gain and forgetting against the step-0 baseline."""

    TYPE: ClassVar[str] = "eval"
    OPEN: ClassVar[bool] = True
    tokens: int | None = None
    seconds: float | None = None
    """Wall time the evaluation took."""
    baseline: bool | None = None
    """True for the step-0 evaluation of the base model."""
    domain_ppl: float | None = None
    general_ppl: float | None = None
    domain_loss: float | None = None
    general_loss: float | None = None
    domain_bpb: float | None = None
    general_bpb: float | None = None
    domain_gain: float | None = None
    """1 - domain perplexity / its baseline (0.2: 20% lower)."""
    forgetting: float | None = None
    """General perplexity / its baseline - 1, on the guard's set (0.03: 3% higher)."""
    forgetting_set: str | None = None


@dataclass
class CheckpointEvent(Event):
    """A checkpoint saved (a re-save of the same step replaces it) with its scores."""

    TYPE: ClassVar[str] = "checkpoint"
    tokens: int | None = None
    path: str | None = None
    """The checkpoint's folder, relative to the run folder (cpt_studio.core.run_folder)."""
    domain_ppl: float | None = None
    general_ppl: float | None = None
    forgetting: float | None = None
    domain_gain: float | None = None
    domain_bpb: float | None = None
    general_bpb: float | None = None


@dataclass
class GuardEvent(Event):
    """A decision of the forgetting guard (cpt_studio.core.guard.Decision), with the same field
    names as the decision record in guard.json."""

    TYPE: ClassVar[str] = "guard"
    OPEN: ClassVar[bool] = True  # the trigger's numbers: forgetting, loss, running_mean, ...
    reason: str | None = None
    """Why: 'forgetting', 'non-finite evaluation', 'non-finite loss', 'loss spike' or
    'out of memory' (guard.Trigger.reason)."""
    action: str | None = None
    """'rollback' or 'stop'."""
    message: str | None = None
    """The decision in a sentence."""
    rolled_back_to: int | None = None
    """The step of the checkpoint the run resumed from (None when it stopped)."""
    remedy: str | None = None
    threshold: float | None = None
    forgetting: float | None = None
    rollbacks: int | None = None
    lr_scale: float | None = None
    replay_ratio: float | None = None

    def _normalised(self) -> GuardEvent:
        # Runs written before 2026-12 named the reason "trigger", put the sentence in "reason"
        # and the checkpoint's path in "rolled_back_to" (the step in "rolled_back_to_step").
        old = self.extra
        if "trigger" in old:
            self.message = self.message or self.reason
            self.reason = old.pop("trigger")
        if "rolled_back_to_step" in old:
            self.rolled_back_to = old.pop("rolled_back_to_step")
        elif isinstance(self.rolled_back_to, str):
            found = re.search(r"(\d+)$", self.rolled_back_to)
            self.rolled_back_to = int(found.group(1)) if found else None
        return self


@dataclass
class ScoreEvent(Event):
    """One metric of one lm-eval task for one model (cpt_studio.core.benchmarks.Score); step
    0 is the base model."""

    checkpoint: str | None = None
    """'base' or the checkpoint's folder name."""
    kind: str | None = None
    """'domain', 'general' or 'probe'."""
    task: str | None = None
    metric: str | None = None
    value: float | None = None
    stderr: float | None = None
    num_fewshot: int | None = None
    limit: int | None = None
    samples: int | None = None
    task_version: Any = None
    harness_version: str | None = None
    higher_is_better: bool | None = None
    primary: bool | None = None
    """The task's headline metric (cpt_studio.core.benchmarks.PRIMARY_METRICS)."""
    cached: bool | None = None
    """The base model's score was reused from an earlier evaluation."""
    live: bool | None = None
    """Scored during training on the model being trained (probes only)."""


@dataclass
class BenchmarkEvent(ScoreEvent):
    TYPE: ClassVar[str] = "benchmark"


@dataclass
class ProbeEvent(ScoreEvent):
    TYPE: ClassVar[str] = "probe"


@dataclass
class StatusEvent(Event):
    """Where the worker is; the last one says how the run ended."""

    TYPE: ClassVar[str] = "status"
    OPEN: ClassVar[bool] = True  # progress figures of the phase: documents, tokens, corpus, ...
    state: State | None = None
    phase: Phase | None = None
    message: str | None = None
    total_steps: int | None = None
    total_tokens: int | None = None
    resumed_from: int | None = None
    """Set when a run resumed from the checkpoint at this step: what an earlier attempt logged
    after it is superseded (cpt_studio.core.timeline)."""
    done: int | None = None
    """Units of the phase's work done (sequences of the Fisher, tasks of an evaluation)."""
    total: int | None = None
    eta_seconds: float | None = None
    exit_code: int | None = None
    traceback: str | None = None
    """The tail of a failed run's traceback (the monitor's "Details")."""
    failure: str | None = None
    """A failed run's kind of failure (cpt_studio.core.failure.KINDS); its `message` is then the
    sentence saying what went wrong and what to change."""
    resumable: bool | None = None
    """False when resuming a failed run cannot help (its settings are the problem)."""
    guard: bool | None = None
    """True when the run ended because the guard stopped it."""

    def _normalised(self) -> StatusEvent:
        self.state = _enum(State, self.state, self.extra, "state")
        self.phase = _enum(Phase, self.phase, self.extra, "phase")
        return self


@dataclass
class LogEvent(Event):
    """A line worth showing: a warning, or a note such as a corpus pass beginning."""

    TYPE: ClassVar[str] = "log"
    OPEN: ClassVar[bool] = True
    level: str | None = None
    """'info' or 'warning'."""
    message: str | None = None


EVENT_CLASSES: dict[str, type[Event]] = {cls.TYPE: cls for cls in (
    StepEvent, EvalEvent, CheckpointEvent, GuardEvent, BenchmarkEvent, ProbeEvent, StatusEvent,
    LogEvent)}
EVENT_TYPES = tuple(EVENT_CLASSES)


@functools.cache
def _names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.name != "extra")


def _enum(kind: type[Enum], value: Any, extra: dict, name: str) -> Any:
    """`value` as a member of `kind`; a value this version does not know stays in `extra`."""
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        extra[name] = value
        return None


def make_event(type: str, **fields: Any) -> Event:
    """The typed event of `type` from its fields, strictly (a writer's event).

    Raises ValueError for an unknown type, TypeError for a field the type does not have, and
    ValueError for a state or phase that is not a State or Phase."""
    cls = EVENT_CLASSES.get(type)
    if cls is None:
        raise ValueError(f"unknown event type {type!r}; one of {', '.join(EVENT_TYPES)}")
    event = cls.from_fields(fields, strict=True)
    for name, kind in (("state", State), ("phase", Phase)):
        if name in event.extra:
            raise ValueError(f"unknown {name} {event.extra[name]!r}; one of "
                             f"{', '.join(m.value for m in kind)}")
    return event


def parse_event(data: dict[str, Any]) -> Event:
    """The typed event of a line of events.jsonl, leniently: an unknown type reads as a
    generic Event (kept in `extra`), unknown fields go to `extra`."""
    cls = EVENT_CLASSES.get(data.get("type", ""), Event)
    return cls.from_fields(data, strict=False)


class EventWriter:
    """Appends events to events.jsonl, one line each, flushed at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def emit(self, type: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        """Write one event (checked against its dataclass, make_event); returns it as written."""
        event = make_event(type, step=step, time=time.time(), **fields)
        data = event.to_dict()
        self._file.write(json.dumps(data, default=_jsonable) + "\n")
        self._file.flush()
        return data

    def __call__(self, event: dict[str, Any]) -> None:
        """Use the writer as a ProgressCallback."""
        fields = dict(event)
        self.emit(fields.pop("type", "status"), fields.pop("step", None), **fields)

    def close(self) -> None:
        self._file.close()


class SilentEventWriter(EventWriter):
    """Checks events as EventWriter does and writes none: the writer of a run's other ranks
    (only the main process writes events.jsonl; cpt_studio.core.distributed)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def emit(self, type: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        return make_event(type, step=step, time=time.time(), **fields).to_dict()

    def close(self) -> None:
        pass


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_events(path: Path, offset: int = 0, max_bytes: int = -1) -> tuple[list[dict[str, Any]], int]:
    """Complete lines as JSON objects from byte `offset` on (at most about `max_bytes` of
    them), and the offset to continue from; the raw form under EventTail.

    A last line without its newline is not returned (it is still being written). Raises
    json.JSONDecodeError for a line that is not a JSON object in UTF-8."""
    events: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(max_bytes)
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if line.strip():
            events.append(read_line(line))
    return events, offset + end


def read_line(line: bytes) -> dict[str, Any]:
    """One line of an events file as its JSON object; json.JSONDecodeError for anything else."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise json.JSONDecodeError(f"not UTF-8 ({err.reason})", repr(line), err.start) from err
    event = json.loads(text)
    if not isinstance(event, dict):
        raise json.JSONDecodeError("not a JSON object", text, 0)
    return event


class EventsFileError(ValueError):
    """A line of an events file that is not an event, named by file and line, with the fix."""

    def __init__(self, path: Path, line: int, reason: str):
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path} line {line}: not a JSON event ({reason}); delete that line, or "
                         "move the run folder out of the runs folder")


def _bad_line(path: Path, offset: int) -> int:
    """The number of the first line from byte `offset` on that is not an event."""
    with open(path, "rb") as f:
        before = f.read(offset).count(b"\n")  # read only when reporting an error
        for number, line in enumerate(f, start=before + 1):
            try:
                if line.strip():
                    read_line(line)
            except json.JSONDecodeError:
                return number
    return before + 1


class EventTail:
    """Typed events of an events.jsonl, from where the last read stopped: the one way the
    store, the CLI and the GUI read a run's events (through cpt_studio.core.timeline).

    A file that does not exist yet reads as no events (the worker has not started writing)."""

    def __init__(self, path: Path, offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        """Bytes read so far: the next read starts here."""

    def read(self, max_bytes: int = -1) -> list[Event]:
        """The events written since the last read. Raises EventsFileError (a ValueError naming
        the file and line) for a line that is not an event; the offset then stays where it was."""
        if not self.path.exists():
            return []
        try:
            raw, self.offset = read_events(self.path, self.offset, max_bytes)
        except json.JSONDecodeError as err:
            raise EventsFileError(self.path, _bad_line(self.path, self.offset), err.msg) from err
        return [parse_event(data) for data in raw]


def iter_events(path: Path) -> Iterator[Event]:
    """Every typed event of a file, in order (no resume applied: see RunTimeline for that)."""
    yield from EventTail(path).read()


def last_event(path: Path, type: str, chunk: int = 64 * 1024) -> Event | None:
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
                    return parse_event(json.loads(line))
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
