"""A long job's progress under the button that started it: a bar (determinate when the work
knows its total: files, documents, stages), what it is doing in words, and Cancel.

    self.progress = JobProgress()          # hidden until a job runs
    self.progress.watch(job)               # a Job(..., cancellable=True); hides when it ends

Cancel asks the job to stop (Job.cancel); the work stops at its next progress report and the
job emits `cancelled`, which the page turns into its own "cancelled" message.
"""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from .jobs import Job


class JobProgress(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.job: Job | None = None
        self.bar = QProgressBar(objectName="job_progress", textVisible=True)
        self.what = QLabel(objectName="job_progress_what")
        self.cancel_button = QPushButton("Cancel", clicked=self._on_cancel_clicked,
                                         toolTip="Stop this job; nothing it has done is kept")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar, stretch=1)
        layout.addWidget(self.what, stretch=2)
        layout.addWidget(self.cancel_button)
        self.hide()

    def watch(self, job: Job) -> None:
        """Follow `job` until it finishes, fails or is cancelled."""
        self.job = job
        self.bar.setRange(0, 0)  # busy until the first report says how much there is
        self.what.setText("starting…")
        self.cancel_button.setEnabled(True)
        job.progressed.connect(self.show_progress)
        for signal in (job.finished, job.failed, job.cancelled):
            signal.connect(self._on_ended)
        self.show()

    def show_progress(self, done: int, total: int, what: str) -> None:
        """`total` -1: not known (a busy bar)."""
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
        else:
            self.bar.setRange(0, 0)
        if not (self.job and self.job.cancel_requested):
            self.what.setText(what)

    def _on_cancel_clicked(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.what.setText("cancelling…")

    def _on_ended(self, *_args) -> None:
        self.job = None
        self.hide()
