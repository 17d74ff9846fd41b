"""Waiting on the GUI thread for a page's own background job before work that imports what the
job imports: two threads importing transformers' lazy modules at once can fail ("cannot import
name 'AutoConfig' from 'transformers'"), so a page validates only once its job has reported."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QCoreApplication, QEventLoop, QThread


def wait_while(busy: Callable[[], bool]) -> None:
    """Process events (not user input) until `busy()` is False: the job's result arrives as an
    event, so it must be processed for `busy` to change."""
    while busy():
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents, 50)
        QThread.msleep(10)
