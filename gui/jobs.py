"""Long work off the GUI thread: `Job(fn, *args)` runs fn in a QThread and reports by signal.

    job = Job(validate, sources)
    job.finished.connect(self._on_validated)   # the result, on the GUI thread
    job.failed.connect(self._on_failed)        # the exception's message
    job.start()

The window never freezes on validation, token counting or a cache scan. A Job keeps
itself alive until it has reported.

A long job the user may stop takes a `progress` keyword (cpt_studio.core.progress.Progress):

    job = Job(validate, sources, cancellable=True)   # calls validate(sources, progress=...)
    job.progressed.connect(bar.show_progress)        # (done, total or -1, what), on the GUI thread
    job.cancelled.connect(self._on_cancelled)        # instead of finished, after job.cancel()
    job.cancel()                                     # the work stops at its next progress report

Periodic work (the run history's refresh, the monitor's reading of events.jsonl and its
check of the worker process) is a `BackgroundRefresh`: one load at a time, timer ticks
folded into the one in flight, a result made stale by a change dropped, errors reported.
The GUI thread only applies the results to its widgets.
"""

from __future__ import annotations

import atexit
import traceback
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, QThreadPool, Signal

from cpt_studio.core.progress import Cancelled

_running: set[Job] = set()
EXIT_WAIT_MS = 10_000
"""At exit, how long to let a job in flight finish (a QThread destroyed while it runs aborts)."""


class Job(QObject):
    finished = Signal(object)
    failed = Signal(str)
    progressed = Signal(int, int, str)
    """(done, total, what) from the work's progress reports; total -1 when not known."""
    cancelled = Signal()
    """The work stopped after cancel() (neither finished nor failed is emitted)."""

    def __init__(self, fn, *args, cancellable: bool = False, **kwargs):
        super().__init__()
        self._cancel_requested = False
        if cancellable:
            kwargs["progress"] = self._report
        self._call = (fn, args, kwargs)
        self._thread = QThread()
        self._worker = _Worker(self._call)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.done.connect(self._on_done)
        self._worker.error.connect(self._on_error)
        self._worker.stopped.connect(self._on_cancelled)

    def start(self) -> Job:
        _running.add(self)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop the work at its next progress report (a cancellable Job; else it runs on and
        reports as usual)."""
        self._cancel_requested = True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def _report(self, done: int, total: int | None, what: str) -> None:
        """The work's Progress callback, in the job's thread."""
        if self._cancel_requested:
            raise Cancelled("cancelled by the user")
        self.progressed.emit(done, -1 if total is None else total, what)

    def _on_cancelled(self) -> None:
        self._finish()
        self.cancelled.emit()

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


REFRESH_THREADS = 4
"""Threads shared by every BackgroundRefresh: their loads are short, and never wait behind
a long Job (an export, a generation)."""
_refresh_pool: QThreadPool | None = None


def _pool() -> QThreadPool:
    global _refresh_pool
    if _refresh_pool is None:
        _refresh_pool = QThreadPool()
        _refresh_pool.setMaxThreadCount(REFRESH_THREADS)
    return _refresh_pool


def in_flight() -> int:
    """How many Jobs and background loads have not reported yet."""
    return len(_running) + (_refresh_pool.activeThreadCount() if _refresh_pool else 0)


@atexit.register
def _wait_for_running_jobs() -> None:
    for job in list(_running):
        job._thread.quit()  # its event loop ends once the call in progress returns
        job._thread.wait(EXIT_WAIT_MS)
    if _refresh_pool is not None:
        _refresh_pool.waitForDone(EXIT_WAIT_MS)


class BackgroundRefresh(QObject):
    """Runs `load(*arguments())` off the GUI thread, one call at a time, and reports its
    result by `finished` (on the GUI thread) or its error by `failed` (the message).

        history = BackgroundRefresh(load_history, lambda: (root, state_filter()), parent=self)
        history.finished.connect(self._on_history_loaded)
        timer.timeout.connect(history.request)     # a tick while a load runs is folded into it
        filter.textChanged.connect(history.restart)  # the load in flight is stale: load again

    `arguments` is called on the GUI thread when a load starts, so each load reads the
    state of the widgets at its start. A result that `restart` made stale is dropped. Loads
    run in a thread pool of their own (no thread is started and joined per load: under load,
    joining one stalled the GUI thread)."""

    finished = Signal(object)
    failed = Signal(str)
    _loaded = Signal(object, object)
    """(result, None) or (None, the error message), emitted from the pool's thread."""

    def __init__(self, load: Callable, arguments: Callable[[], tuple] = tuple, parent=None):
        super().__init__(parent)
        self._load, self._arguments = load, arguments
        self._busy = self._stale = False
        self._loaded.connect(self._on_loaded)  # queued: this object lives in the GUI thread

    @property
    def busy(self) -> bool:
        """A load is in flight."""
        return self._busy

    def request(self) -> None:
        """Load now, unless a load is in flight (its result will do)."""
        if not self._busy:
            self._start()

    def restart(self) -> None:
        """What the load reads has changed: drop the result of the load in flight, if any,
        and load again once it ends."""
        if self._busy:
            self._stale = True
        else:
            self._start()

    def _start(self) -> None:
        self._busy, self._stale = True, False
        load, args = self._load, self._arguments()
        _pool().start(lambda: self._run(load, args))

    def _run(self, load: Callable, args: tuple) -> None:
        """In the pool's thread."""
        try:
            outcome = (load(*args), None)
        except Exception as exc:  # noqa: BLE001 — every failure is shown to the user
            outcome = (None, f"{exc}" or traceback.format_exc())
        try:
            self._loaded.emit(*outcome)
        except RuntimeError:  # the window that asked was closed and deleted meanwhile
            pass

    def _on_loaded(self, result, error: str | None) -> None:
        self._busy = False
        if self._stale:
            self._start()
        elif error is not None:
            self.failed.emit(error)
        else:
            self.finished.emit(result)


class _Worker(QObject):
    done = Signal(object)
    error = Signal(str)
    stopped = Signal()

    def __init__(self, call):
        super().__init__()
        self._call = call

    def run(self) -> None:
        fn, args, kwargs = self._call
        try:
            result = fn(*args, **kwargs)
        except Cancelled:
            self.stopped.emit()
            return
        except Exception as exc:  # noqa: BLE001 — every failure is shown to the user
            self.error.emit(f"{exc}" or traceback.format_exc())
            return
        self.done.emit(result)
