"""The run's evaluation job in the monitor: phase, the checkpoint and task being scored,
done / total, ETA, the tasks skipped as unavailable, and a Stop button. Read from
RUN/eval/events.jsonl (cpt_studio.core.evaljob); hidden until a run has been evaluated.

    progress = EvalProgress(RunPaths(run_dir))
    progress.poll()       # the monitor's timer calls it; the file and psutil are read off the GUI thread
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from cpt_studio.core.estimate import format_duration
from cpt_studio.core.events import EventTail, Phase, StatusEvent
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import eval_worker_pid, request_eval_stop

from .jobs import BackgroundRefresh

STATE_COLOURS = {"running": "#fd7e14", "finished": "#28a745", "stopped": "#6c757d",
                 "failed": "#dc3545"}


def read_evaluation(tail: EventTail, run_dir: Path) -> tuple[list[StatusEvent], bool]:
    """Off the GUI thread: the evaluation job's new status events, and whether its worker
    lives (psutil)."""
    events = [event for event in tail.read() if isinstance(event, StatusEvent)]
    return events, eval_worker_pid(run_dir) is not None


class EvalProgress(QWidget):
    state_changed = Signal(str)
    """'running', 'finished', 'stopped' or 'failed' (a worker that died without saying so)."""

    def __init__(self, paths: RunPaths, parent=None):
        super().__init__(parent)
        self.paths = paths
        self.status: dict = {}
        self.unavailable: dict[str, str] = {}
        self._tail, self._state, self._alive = EventTail(paths.eval_events), None, False
        self.loader = BackgroundRefresh(read_evaluation, lambda: (self._tail, paths.root), parent=self)
        self.loader.finished.connect(self._on_read)
        self.loader.failed.connect(lambda message: self.text.setText(f"could not read the evaluation's "
                                                                     f"progress: {message}"))
        self.chip = QLabel("evaluation")
        self.text = QLabel("", wordWrap=True)
        self.bar = QProgressBar(textVisible=True, maximumWidth=220)
        self.stop_button = QPushButton("Stop evaluation", clicked=self._on_stop_clicked,
                                       toolTip="Stop after the task in progress (its scores are kept)")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.chip)
        layout.addWidget(self.text, stretch=1)
        layout.addWidget(self.bar)
        layout.addWidget(self.stop_button)
        self.hide()

    def poll(self) -> None:
        """Read the job's progress in the background (read_evaluation); shown when it comes."""
        self.loader.request()

    def _on_read(self, result: tuple[list[StatusEvent], bool]) -> None:
        events, self._alive = result
        for event in events:
            if event.phase == Phase.CHECKING:
                self.unavailable = {}  # a new job
            self.status = event.to_dict()
            self.unavailable.update(event.get("unavailable") or {})
        if self.status:
            self._show()

    def state(self) -> str:
        """The job's state, 'failed' when its worker died without a final status."""
        state = self.status.get("state", "running")
        return "failed" if state == "running" and not self._alive else state

    def _show(self) -> None:
        state, status = self.state(), self.status
        self.show()
        self.chip.setText(f"evaluation: {status.get('phase', state) if state == 'running' else state}")
        self.chip.setStyleSheet(f"background:{STATE_COLOURS.get(state, '#6c757d')}; color:white; "
                                "border-radius:8px; padding:2px 10px; font-weight:bold;")
        done, total = status.get("done"), status.get("total")
        if total:
            self.bar.setRange(0, total)
            self.bar.setValue(done or 0)
            self.bar.setFormat(f"{done or 0} / {total} tasks")
        eta = status.get("eta_seconds")
        message = status.get("message", "")
        if state == "failed" and status.get("state") == "running":
            message = f"the evaluation worker ended without a final status; see {self.paths.eval_log}"
        parts = [message + (f"   ETA {format_duration(eta)}" if eta and state == "running" else "")]
        if self.unavailable:
            parts.append("unavailable, skipped: " + ", ".join(self.unavailable))
        self.text.setText("\n".join(parts))
        self.text.setToolTip("\n".join(f"{n}: {r}" for n, r in self.unavailable.items()))
        self.stop_button.setEnabled(state == "running" and not self.paths.eval_stop.exists())
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def _on_stop_clicked(self) -> None:
        request_eval_stop(self.paths.root)
        self.stop_button.setEnabled(False)
        self.text.setText(self.text.text() + "\nstop requested: the evaluation stops after the "
                          "task in progress")
