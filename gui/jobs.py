"""Long work off the GUI thread: `Job(fn, *args)` runs fn in a QThread and reports by signal.

    job = Job(validate, sources)
    job.finished.connect(self._on_validated)   # the result, on the GUI thread
    job.failed.connect(self._on_failed)        # the exception's message
    job.start()

The window never freezes on validation, token counting or a cache scan. A Job keeps
itself alive until it has reported.

Periodic work (the run history's refresh, the monitor's reading of events.jsonl and its
check of the worker process) is a `BackgroundRefresh`: one Job at a time, timer ticks
folded into the one in flight, a result made stale by a change dropped. The GUI thread
only applies the results to its widgets.
"""

from __future__ import annotations

import atexit
import traceback
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal

_running: set[Job] = set()
EXIT_WAIT_MS = 10_000
"""At exit, how long to let a job in flight finish (a QThread destroyed while it runs aborts)."""


class Job(QObject):
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, fn, *args, **kwargs):
        super().__init__()
        self._call = (fn, args, kwargs)
        self._thread = QThread()
        self._worker = _Worker(self._call)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.done.connect(self._on_done)
        self._worker.error.connect(self._on_error)

    def start(self) -> Job:
        _running.add(self)
        self._thread.start()
        return self

    def _on_done(self, result) -> None:
        self._finish()
        self.finished.emit(result)

    def _on_error(self, message: str) -> None:
        self._finish()
        self.failed.emit(message)

    def _finish(self) -> None:
        self._thread.quit()
        self._thread.wait()
        _running.discard(self)


@atexit.register
def _wait_for_running_jobs() -> None:
    for job in list(_running):
        job._thread.quit()  # its event loop ends once the call in progress returns
        job._thread.wait(EXIT_WAIT_MS)


class BackgroundRefresh(QObject):
    """Runs `load(*arguments())` off the GUI thread, one call at a time, and reports its
    result by `finished` (on the GUI thread) or its error by `failed` (the message).

        history = BackgroundRefresh(load_history, lambda: (root, state_filter()), parent=self)
        history.finished.connect(self._on_history_loaded)
        timer.timeout.connect(history.request)     # a tick while a load runs is folded into it
        filter.textChanged.connect(history.restart)  # the load in flight is stale: load again

    `arguments` is called on the GUI thread when a load starts, so each load reads the
    state of the widgets at its start. A result that `restart` made stale is dropped."""

    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, load: Callable, arguments: Callable[[], tuple] = tuple, parent=None):
        super().__init__(parent)
        self._load, self._arguments = load, arguments
        self._job: Job | None = None
        self._stale = False

    @property
    def busy(self) -> bool:
        """A load is in flight."""
        return self._job is not None

    def request(self) -> None:
        """Load now, unless a load is in flight (its result will do)."""
        if self._job is None:
            self._start()

    def restart(self) -> None:
        """What the load reads has changed: drop the result of the load in flight, if any,
        and load again once it ends."""
        if self._job is None:
            self._start()
        else:
            self._stale = True

    def _start(self) -> None:
        self._stale = False
        self._job = Job(self._load, *self._arguments())
        self._job.finished.connect(self._on_done)
        self._job.failed.connect(self._on_failed)
        self._job.start()

    def _on_done(self, result) -> None:
        self._job = None
        if self._stale:
            self._start()
        else:
            self.finished.emit(result)

    def _on_failed(self, message: str) -> None:
        self._job = None
        if self._stale:
            self._start()
        else:
            self.failed.emit(message)


class _Worker(QObject):
    done = Signal(object)
    error = Signal(str)

    def __init__(self, call):
        super().__init__()
        self._call = call

    def run(self) -> None:
        fn, args, kwargs = self._call
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — every failure is shown to the user
            self.error.emit(f"{exc}" or traceback.format_exc())
            return
        self.done.emit(result)
