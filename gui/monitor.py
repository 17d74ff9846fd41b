"""The run monitor: live charts, progress, the worker's log, Stop and Resume, for one run folder.

It reads only the run folder (cpt_studio.core.run_folder): the frozen config.json, events.jsonl,
logs/worker.log, and the worker's pid. Opening a running run re-attaches to it; closing the
window never stops it.
When the run fails, a red banner says in one sentence what went wrong and what to change
(cpt_studio.core.failure), with the traceback folded under "Details"; the window keeps its size.
Resume is off when resuming cannot help (a setting is the problem), and says why. Stop asks
first. Clicking a checkpoint's marker emits `checkpoint_clicked(run_dir, step)`.

The reading is done off the GUI thread by two BackgroundRefresh loads: `read_chunk` tails
events.jsonl in chunks (a 100,000-event file is read and parsed in the background, chunk
after chunk, and never blocks the window), `check_worker` asks psutil whether the worker
lives and reads the log's tail. The GUI thread adds the parsed events to the RunSeries and
draws.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core.estimate import format_duration, mfu_words
from cpt_studio.core.events import Event, EventsFileError, EventTail, Phase, State, StatusEvent
from cpt_studio.core.failure import NOT_RESUMABLE_TIP, Failure, failure_of
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import effective_state, request_stop, start_worker

from .charts import RunCharts
from .eval_progress import EvalProgress
from .jobs import BackgroundRefresh
from .markers import TRACK_HEIGHT
from .series import RunSeries

CHUNK_BYTES = 128 * 1024
"""Events read per background load: about 700 events, added to the series in a few ms."""
LOG_LINES = 200
"""Lines of logs/worker.log shown under the charts."""
CATCH_UP_PAUSE_MS = 50
"""While catching up with a long file, the pause between reading one chunk and the next: the
GUI thread draws meanwhile without competing for the GIL with the parsing. A 100,000-event
file is read in about 10 s (one chunk per 250 ms tick took 40 s); with no pause, in 5 s
with the window's 99th-percentile stall near 130 ms instead of 80 ms (2 shared cores)."""
REDRAW_SECONDS = 0.5
PLOTS_PER_FRAME = 1
"""Plots given new data per timer tick while a run is live: each plot of 100,000 points costs a
frame of 30-50 ms on 2 loaded cores, and plots changed together are painted in one frame."""
"""While catching up with a long file, redraw at most this often (a frame of 100,000
points costs ~40 ms); once caught up, every new event is drawn at the next tick."""
PHASE_COLOURS = {Phase.LOADING: "#6c757d", Phase.IMPORTING: "#6c757d", Phase.TOKENIZER: "#17a2b8",
                 Phase.TOKENIZING: "#17a2b8", Phase.FISHER: "#6f42c1", Phase.BASELINE: "#6f42c1",
                 Phase.TRAINING: "#28a745", Phase.EVALUATING: "#fd7e14", Phase.PROBING: "#17becf",
                 Phase.SAVING: "#007bff", Phase.CHECKING: "#fd7e14", Phase.DONE: "#343a40",
                 Phase.ERROR: "#dc3545"}
"""The chip's colour for every phase a worker reports (cpt_studio.core.events.Phase)."""


DETAILS_LINES = 12
"""Lines of the traceback the opened "Details" shows at most (it scrolls): it takes its room
from the charts, and the window keeps its size."""
CHART_HEIGHT = 135
"""Pixels each chart keeps at least, its title included: a smaller window scrolls the charts (at 95
a plot was ~48 px tall and its y-axis numbers crowded one another)."""
RESUME_TIP = "Continue from the last complete checkpoint"
GUARD_STOP_TIP = ("The forgetting guard stopped this run: resuming would train the same steps and stop "
                  "again; start a new run from this one with the settings its message names")
SFT_TIP = ("Instruction-tune this run's recommended checkpoint (else its last), as a new run chained to "
           "it; once the run has finished")


class MonitorWindow(QWidget):
    state_changed = Signal(str)
    new_run_requested = Signal(Path)
    """Sent with the run folder when "New run from this run" is pressed (the main window opens
    the wizard on the run's settings)."""
    checkpoint_clicked = Signal(str, int)
    instruction_tune_requested = Signal(Path)
    """Sent with the run folder when a finished run's "Instruction-tune…" is pressed (the main
    window opens the SFT wizard on its recommended checkpoint)."""
    """(run folder, step) of the checkpoint whose marker was clicked: open it in the comparison."""

    def __init__(self, run_dir: Path, parent=None, poll_ms: int = 250):
        super().__init__(parent)
        self.paths = RunPaths(Path(run_dir))
        self.config = json.loads(self.paths.config.read_text())
        self.series = RunSeries()  # fed events read off the GUI thread (read_chunk)
        self._offset, self._state = 0, None
        self._dirty, self._drawn_at = False, 0.0
        self._checked_status = self.series.status
        """The status event the shown state was checked against (check_worker)."""
        self.setWindowTitle(f"CPT Studio — {self.config.get('name', 'run')} ({self.paths.root.name})")
        self._build()
        self.reader = BackgroundRefresh(read_chunk, lambda: (self.paths.events, self._offset), parent=self)
        self.reader.finished.connect(self._on_chunk_read)
        self.reader.failed.connect(self._on_read_failed)
        self.worker_check = BackgroundRefresh(check_worker, lambda: (self.paths, self.series.status, self.config),
                                              parent=self)
        self.worker_check.finished.connect(self._on_worker_checked)
        self.worker_check.failed.connect(self._on_read_failed)
        self._timer = QTimer(self, interval=poll_ms, timeout=self.reader.request)
        self._next_chunk = QTimer(self, singleShot=True, interval=CATCH_UP_PAUSE_MS, timeout=self.reader.request)
        self._slow = QTimer(self, interval=1000, timeout=self._poll_state)
        self._timer.start()
        self._slow.start()
        self.reader.request()
        self._poll_state()

    # --- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        self.phase = QLabel("created")
        self.phase.setStyleSheet(self._chip("#6c757d"))
        self.progress_text = QLabel("")
        # its text never widens the window (a long status message, a narrow window): it is cut
        self.progress_text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.progress_text.setMinimumWidth(120)
        self.progress = QProgressBar(textVisible=True)
        self.failure_box = self._failure_box()
        self.read_error = QLabel(wordWrap=True, visible=False)
        """Why the run folder could not be read (a broken events.jsonl line, a missing file)."""
        self.read_error.setStyleSheet("background:#fff3cd; color:#856404; border:1px solid #ffc107; padding:4px;")
        self.charts = RunCharts.for_config(self.series, self.config)
        self.charts.checkpoint_clicked.connect(
            lambda step: self.checkpoint_clicked.emit(str(self.paths.root), step))
        self.evaluation = EvalProgress(self.paths)
        self.readout = QLabel(" ", wordWrap=True)
        """Every value at the crosshair's step; wraps on a narrow window, in two lines' height
        so that moving the crosshair never moves the charts."""
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.readout.setFixedHeight(2 * self.readout.fontMetrics().lineSpacing() + 4)
        self.charts.crosshair_moved.connect(self.readout.setText)
        self.log = QPlainTextEdit(readOnly=True, maximumBlockCount=500)
        self.charts.setMinimumHeight(CHART_HEIGHT * len(self.charts.plots) + TRACK_HEIGHT)
        scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.charts)  # a small window scrolls the charts rather than squash them
        splitter = QSplitter(orientation=Qt.Orientation.Vertical)
        splitter.addWidget(scroll)
        splitter.addWidget(self.log)
        splitter.setSizes([700, 150])
        layout = QVBoxLayout(self)
        layout.addLayout(self._header())
        progress = QHBoxLayout()  # the figures beside the bar: the buttons' row has no room for them
        progress.addWidget(self.progress, 1)
        progress.addWidget(self.progress_text, 3)
        layout.addLayout(progress)
        layout.addWidget(self.failure_box)
        layout.addWidget(self.read_error)
        layout.addWidget(self.evaluation)
        layout.addWidget(self.readout)
        layout.addWidget(splitter, stretch=1)

    def _failure_box(self) -> QFrame:
        """The failure's sentence (self.banner), and its traceback (self.details) folded under
        a "Details" toggle; hidden until the run fails. Its height is bounded (the sentence
        wraps, the traceback scrolls), so showing it takes room from the charts, not the screen."""
        box = QFrame(visible=False, objectName="failure")
        box.setStyleSheet("QFrame#failure {background:#f8d7da; border:1px solid #dc3545;}")
        self.banner = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.setStyleSheet("color:#721c24; padding:4px;")
        self.banner.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self.details_button = QToolButton(text="Details", checkable=True, toolTip="Show the traceback")
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.toggled.connect(self._on_details_toggled)
        self.details = QPlainTextEdit(readOnly=True, visible=False)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        top = QHBoxLayout()
        top.addWidget(self.banner, stretch=1)
        top.addWidget(self.details_button, alignment=Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addLayout(top)
        layout.addWidget(self.details)
        return box

    def _on_details_toggled(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _header(self) -> QHBoxLayout:
        self.x_axis = QComboBox()
        self.x_axis.addItems(["steps", "tokens"])
        self.x_axis.currentTextChanged.connect(self._on_x_axis_changed)
        self.stop_button = QPushButton("Stop and save", clicked=self._on_stop_clicked)
        self.resume_button = QPushButton("Resume", clicked=self._on_resume_clicked, toolTip=RESUME_TIP)
        self.evaluate_button = QPushButton("Evaluate…", clicked=self._on_evaluate_clicked,
                                           toolTip="Score the base model and checkpoints on lm-eval "
                                           "tasks and knowledge probes, in the background")
        self.new_run_button = QPushButton("New run from this run…", toolTip="Open the setup wizard "
                                          "on this run's settings, under a new name",
                                          clicked=lambda: self.new_run_requested.emit(self.paths.root))
        self.sft_button = QPushButton("Instruction-tune…", enabled=False, toolTip=SFT_TIP,
                                      clicked=lambda: self.instruction_tune_requested.emit(self.paths.root))
        folder = QPushButton("Open folder", clicked=lambda: QDesktopServices.openUrl(
            QUrl.fromLocalFile(str(self.paths.root))))
        row = QHBoxLayout()
        row.addWidget(self.phase)
        row.addStretch(1)
        for widget in (QLabel("x-axis:"), self.x_axis, self.stop_button, self.resume_button,
                       self.evaluate_button, self.new_run_button, self.sft_button, folder):
            row.addWidget(widget)
        return row

    @staticmethod
    def _chip(colour: str) -> str:
        return f"background:{colour}; color:white; border-radius:8px; padding:2px 10px; font-weight:bold;"

    def closeEvent(self, event) -> None:
        """Closing stops the reading, never the run (a run opened again gets a new monitor)."""
        for timer in (self._timer, self._slow, self._next_chunk):
            timer.stop()
        super().closeEvent(event)

    # --- polling ----------------------------------------------------------------------
    def poll(self) -> int:
        """Read the next chunk of events on this thread and draw it; returns how many were
        read. The timer reads in the background instead (self.reader); catch_up uses this."""
        chunk = read_chunk(self.paths.events, self._offset)
        self._add_chunk(chunk)
        return len(chunk[1])

    def _on_chunk_read(self, chunk: tuple[int, list[Event], int]) -> None:
        if self._add_chunk(chunk, PLOTS_PER_FRAME):
            self._next_chunk.start()  # a long file: the next chunk soon, not at the next tick

    def _add_chunk(self, chunk: tuple[int, list[Event], int], plots: int | None = None) -> bool:
        """Add a chunk read from the current offset and draw (at most every REDRAW_SECONDS
        while catching up; at most `plots` plots a frame, the others at the next ticks);
        returns whether more events are waiting. A chunk read from an older offset (catch_up
        read it meanwhile) is dropped."""
        start, events, end = chunk
        if start != self._offset:
            return False
        self._offset = end
        self.read_error.hide()
        if events:
            self.series.add(events)
            self._dirty = True
        caught_up = end - start < CHUNK_BYTES // 2
        if self._dirty and (caught_up or time.monotonic() - self._drawn_at > REDRAW_SECONDS):
            self._dirty = not self.charts.refresh(plots)
            self._update_header()
            self._drawn_at = time.monotonic()
        if self.series.status is not self._checked_status:
            self.worker_check.restart()  # a new status event: check the worker against it now
        return not caught_up

    def _on_read_failed(self, message: str) -> None:
        self.read_error.setText(f"Could not read the run folder: {message}")
        self.read_error.show()

    def catch_up(self) -> None:
        """Read and draw everything written so far (tests, and the screenshots)."""
        while self.poll():
            pass
        self.charts.refresh()
        self._update_header()

    def _poll_state(self) -> None:
        """Check the worker in the background (self.worker_check); the evaluation's progress."""
        self.worker_check.request()
        self.evaluation.poll()

    def _on_worker_checked(self, checked: dict) -> None:
        if checked["status"] is not self.series.status:
            return  # a newer status event came meanwhile: worker_check runs again with it
        self._checked_status = checked["status"]
        self._show_state(checked["state"], checked["running"], checked["log"], checked.get("failure"))
        self._tail_log(checked["log"])

    def _show_state(self, state: dict, running: bool, log: str, failure: Failure | None = None) -> None:
        name = state.get("state", "created")
        self.stop_button.setEnabled(running)
        guard_stop = name == "stopped" and bool(state.get("guard"))
        resumable = (failure is None or failure.resumable) and not guard_stop
        self.resume_button.setEnabled(name in ("stopped", "failed") and not running and resumable)
        self.resume_button.setToolTip(GUARD_STOP_TIP if guard_stop else RESUME_TIP if resumable else NOT_RESUMABLE_TIP)
        self.sft_button.setEnabled(name in ("finished", "stopped") and not running)
        if name == "failed":
            self._show_failure(state, log, failure or failure_of(state, log, self.config))
        elif guard_stop:
            self._show_guard_stop(state)
        else:
            self.failure_box.hide()
        if name != self._state:
            self._state = name
            self._update_header()  # a dead worker's run: no clock running on, no stale phase
            self.state_changed.emit(name)

    def _show_guard_stop(self, state: dict) -> None:
        """The guard's reason in the banner: a run it stopped is not a failure, but the user must
        change something before training on (resuming would take the same steps again)."""
        message = str(state.get("message", "")).removeprefix("guard: ")
        self.banner.setText(f"<b>Stopped by the forgetting guard:</b> {_escape(message)}. Change the "
                            "settings it names in a new run (Runs ▸ New run from this run…).")
        self.details.clear()
        self.details_button.setEnabled(False)
        self.failure_box.show()

    def _show_failure(self, state: dict, log: str, failure: Failure) -> None:
        code = state.get("exit_code")
        self.banner.setText(f"<b>Failed{f', exit code {code}' if code is not None else ''}:</b> "
                            f"{_escape(failure.sentence)}")
        details = state.get("traceback") or "\n".join(log.splitlines()[-40:])
        if details != self.details.toPlainText():
            self.details.setPlainText(details)
            lines = min(DETAILS_LINES, max(3, len(details.splitlines())))
            self.details.setFixedHeight(lines * self.details.fontMetrics().lineSpacing() + 12)
        self.details_button.setEnabled(bool(details))
        self.failure_box.show()
        self.phase.setText("error")
        self.phase.setStyleSheet(self._chip(PHASE_COLOURS["error"]))

    def _tail_log(self, text: str) -> None:
        if text != self.log.toPlainText():
            self.log.setPlainText(text)
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())

    def _update_header(self) -> None:
        status = self.series.status.to_dict() if self.series.status else {}
        last = self.series.last_step
        phase, state = status.get("phase", "created"), status.get("state")
        if self._state == State.FAILED.value:  # the worker check found it dead (effective_state)
            state = self._state
        stopped = state == State.STOPPED.value
        self.phase.setText("error" if state == "failed" else "stopped" if stopped else phase)
        self.phase.setStyleSheet(self._chip(PHASE_COLOURS.get("error" if state == "failed" else phase, "#6c757d")))
        total = self.series.total_steps
        if last is None or not total:
            failed = state == State.FAILED.value  # its sentence is in the banner
            self.progress_text.setText("stopped" if stopped else "" if failed else status.get("message", ""))
            return
        step, speed = int(last["step"]), last["tokens_per_second"]
        self.progress.setRange(0, total)
        self.progress.setValue(step)
        elapsed = self.series.elapsed(time.time() if state == "running" else None)
        self.progress_text.setText(
            f"{'stopped at ' if stopped else ''}step {step:,} / {total:,}   tokens {int(last['tokens']):,}"
            f"{f' / {self.series.total_tokens:,}' if self.series.total_tokens else ''}   "
            f"elapsed {format_duration(elapsed)}"
            f"{self._eta(state, step, total, last)}   {speed:,.0f} tokens/s{mfu_words(last.get('mfu'))}")
        self.progress_text.setToolTip(self.progress_text.text())  # all of it, when the window cuts it

    def _eta(self, state: str | None, step: int, total: int, last: dict) -> str:
        """"   ETA 3 m 20 s" while the run goes on; nothing once it stopped, failed or finished."""
        if state != State.RUNNING.value or step >= total:
            return ""
        speed = max(last["tokens_per_second"], 1e-9)
        return f"   ETA {format_duration((total - step) * (last['tokens'] / max(step, 1)) / speed)}"

    # --- actions ----------------------------------------------------------------------
    def _on_x_axis_changed(self, text: str) -> None:
        self.charts.set_x_axis("tokens" if text == "tokens" else "step")

    def _on_stop_clicked(self) -> None:
        if not self.confirm_stop():
            return
        request_stop(self.paths.root)
        self.stop_button.setEnabled(False)
        self.progress_text.setText("stop requested: saving a checkpoint at the end of this step")

    def _on_resume_clicked(self) -> None:
        from cpt_studio.core.data import changed_corpus

        changed = changed_corpus(self.paths.root)
        if changed and not self.confirm_changed_corpus(changed):
            return
        start_worker(self.paths.root, resume=True, accept_changed_corpus=bool(changed))
        self.resume_button.setEnabled(False)

    def _on_evaluate_clicked(self) -> None:
        from .evaluate_dialog import EvaluateDialog

        self.evaluate_dialog = EvaluateDialog(self.paths.root, parent=self)
        self.evaluate_dialog.started.connect(lambda _run: self.evaluation.poll())
        self.evaluate_dialog.show()

    def confirm_stop(self) -> bool:
        """Ask before stopping: the run saves a checkpoint at the end of this step and can be
        resumed from it."""
        box = QMessageBox(QMessageBox.Icon.Question, "Stop this run?",
                          "Stop the run? It saves a checkpoint at the end of the current step, "
                          "and Resume continues from there.", parent=self)
        stop = box.addButton("Stop and save", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(box.addButton(QMessageBox.StandardButton.Cancel))
        box.exec()
        return box.clickedButton() is stop

    def confirm_changed_corpus(self, changed: str) -> bool:
        """Ask before resuming on corpus files that changed since the run started."""
        answer = QMessageBox.question(
            self, "The corpus changed",
            f"The corpus changed since this run started ({changed}).\n\nIts new numbers would no "
            "longer compare with the step-0 baseline. Resume anyway? The saved held-out documents "
            "stay the evaluation set and are kept out of training.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes


def read_chunk(events: Path, offset: int) -> tuple[int, list[Event], int]:
    """(offset, the typed events of the next CHUNK_BYTES from it, the offset after them), read
    with EventTail; no events while the file does not exist yet. Raises ValueError naming the
    file and the byte offset of the chunk when a line in it is not a JSON event."""
    tail = EventTail(events, offset)
    try:
        read = tail.read(CHUNK_BYTES)
    except EventsFileError as err:
        raise ValueError(f"{events}: a line after byte {offset} is not a JSON event "
                         f"(line {err.line}: {err.reason})") from err
    return offset, read, tail.offset


def check_worker(paths: RunPaths, status: StatusEvent | None, config: dict | None = None) -> dict:
    """The run's state against its last status event `status` (effective_state: "failed" when
    the worker died without saying so), whether its worker process lives (psutil), the last
    LOG_LINES lines of its log, and for a failed run its Failure (the sentence and whether
    resuming can help; cpt_studio.core.failure), as {"status", "state", "running", "log", "failure"}."""
    state = effective_state(paths.root, status.to_dict() if status else None)  # running: it lives
    log = log_tail(paths.log, LOG_LINES)
    failure = failure_of(state, log, config) if state.get("state") == "failed" else None
    return {"status": status, "state": state, "running": state.get("state") == "running",
            "log": log, "failure": failure}


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file (read from its last 64 KiB); "" before it exists."""
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64 * 1024))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
