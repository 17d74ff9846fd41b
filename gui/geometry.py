"""Windows open where they were, and always on a screen.

    restore_geometry(window, "main_window")   # at start
    save_geometry(window, "main_window")      # at close

A geometry saved on a monitor that is no longer connected would open the window where
nobody can see it: keep_on_screen moves such a window onto the primary screen (and shrinks
it to fit).
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QRect
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

from .preferences import settings

VISIBLE_PART = 0.5
"""The share of a window's area that must lie on some screen for it to count as on screen."""


def save_geometry(window: QWidget, key: str) -> None:
    """Remember `window`'s size and position (and maximized state) under `key`."""
    settings().setValue(f"geometry/{key}", window.saveGeometry())


def restore_geometry(window: QWidget, key: str) -> bool:
    """Give `window` the geometry saved under `key`, kept on screen; False when none was saved
    (the window keeps its size, centred on the primary screen)."""
    saved = settings().value(f"geometry/{key}")
    restored = isinstance(saved, QByteArray | bytes) and window.restoreGeometry(QByteArray(saved))
    if not restored:  # its default size, made for a large screen, shrunk to a laptop's (1366 x 768)
        available = QGuiApplication.primaryScreen().availableGeometry()
        fit_to(window, available)
        centre_on(window, available)
    keep_on_screen(window)
    return restored


def keep_on_screen(window: QWidget) -> None:
    """Move `window` onto the primary screen (centred, shrunk to fit) unless VISIBLE_PART of it
    lies on one of the screens connected now."""
    frame = window.frameGeometry()
    area = max(frame.width() * frame.height(), 1)
    for screen in QGuiApplication.screens():
        shown = frame.intersected(screen.availableGeometry())
        if shown.width() * shown.height() >= VISIBLE_PART * area:
            return
    available = QGuiApplication.primaryScreen().availableGeometry()
    fit_to(window, available)
    centre_on(window, available)


def fit_to(window: QWidget, area: QRect) -> None:
    """Shrink `window` so that its frame (title bar included) fits in `area`."""
    frame, inner = window.frameGeometry(), window.geometry()
    extra_w, extra_h = frame.width() - inner.width(), frame.height() - inner.height()
    window.resize(min(window.width(), area.width() - extra_w), min(window.height(), area.height() - extra_h))


def centre_on(window: QWidget, area: QRect) -> None:
    """Centre `window`'s frame on `area` (a screen's or a parent's geometry)."""
    frame = window.frameGeometry()
    frame.moveCenter(area.center())
    window.move(frame.topLeft())
