"""Long work off the GUI thread: `Job(fn, *args)` runs fn in a QThread and reports by signal.

    job = Job(validate, sources)
    job.finished.connect(self._on_validated)   # the result, on the GUI thread
    job.failed.connect(self._on_failed)        # the exception's message
    job.start()

The window never freezes on validation, token counting or a cache scan. A Job keeps
itself alive until it has reported.
"""

from __future__ import annotations

import traceback

from PySide6.QtCore import QObject, QThread, Signal

_running: set[Job] = set()


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
