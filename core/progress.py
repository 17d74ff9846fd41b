"""Progress and cancelling of long work started from the desktop app (the corpus check, the
plan's estimate, the tokenizer-extension preview): one callback type and one exception.

    def validate(specs, progress: Progress | None = None): ...
        tick(progress, files_done, len(files), f"{documents:,} documents read")

    def stop_after_ten(done, total, what):      # a caller's callback
        if done >= 10:
            raise Cancelled("stopped by the user")

The work calls the callback every so often (every file, every thousand records, every batch
of tokens): the caller learns how far it is, and a callback that raises Cancelled stops the
work there, the exception passing up to the caller (nothing half-written is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Progress = Callable[[int, "int | None", str], None]
"""progress(done, total, what): `done` units of work of `total` (None when the total is not
known in advance), `what` the step in words ("reading the domain corpus: 3 of 8 files").
May raise Cancelled to stop the work."""

T = TypeVar("T")


class Cancelled(Exception):
    """The user cancelled the work; raised by a Progress callback, out of the work."""


def tick(progress: Progress | None, done: int, total: int | None, what: str) -> None:
    """Report to `progress` if there is one (it may raise Cancelled)."""
    if progress is not None:
        progress(done, total, what)


def counted(items: Iterable[T], total: int | None, what: str, progress: Progress | None,
            every: int = 200) -> Iterator[T]:
    """`items` unchanged, reporting "`what`: n of total" to `progress` before the first and
    after every `every` items and at the end, so a cancel stops a loop over them in time."""
    if progress is None:
        yield from items
        return
    done = 0
    progress(0, total, what)
    for item in items:
        yield item
        done += 1
        if done % every == 0:
            progress(done, total, what)
    progress(done, total if total is not None else done, what)
