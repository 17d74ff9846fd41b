"""`cpt-studio-gui`: the desktop app."""

from __future__ import annotations

import sys

from pyqtgraph.util.garbage_collector import GarbageCollector
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from cpt_studio.core.desktop import ICON_SIZES
from cpt_studio.core.paths import APP_ID, resource_path


def app_icon() -> QIcon:
    """The app icon in every shipped size (packaging/icons), for windows and the taskbar.

    The PNG sizes, not the SVG: Qt's SVG icon engine is a plugin a minimal install may lack."""
    icon = QIcon()
    for size in ICON_SIZES:
        icon.addFile(str(resource_path(f"cpt-studio-{size}.png", package="cpt_studio.resources.icons")))
    return icon


def gui_thread_garbage_collector() -> GarbageCollector:
    """Python's cycle collector runs in whichever thread allocates past its threshold: in a
    background job's thread (a model read, an estimate) it freed dead windows' Qt objects
    there, and a widget's destructor, off the GUI thread, deadlocked the app (seen: a wizard's
    model description stuck in QObject::~QObject under the collector). pyqtgraph's
    GarbageCollector turns automatic collection off and collects on a GUI-thread timer (once a
    second) instead; keep the object as long as the app (`.timer.stop()` and gc.enable() undo it)."""
    return GarbageCollector(interval=1.0)


def start(argv: list[str]):
    """The application and its main window, shown: the saved preferences (data folder,
    theme) applied first. Quitting the main window ends the event loop, whatever else is
    open; runs it started keep training (detached worker processes). Returns (app, window)."""
    app = QApplication(argv)
    app.setApplicationName("CPT Studio")
    app.setOrganizationName("cpt-studio")
    app.setDesktopFileName(APP_ID)  # Wayland and taskbars match the window to the desktop entry
    app.setWindowIcon(app_icon())
    app.garbage_collector = gui_thread_garbage_collector()
    from .main_window import MainWindow
    from .preferences import apply_saved

    apply_saved(app)  # before any window: the runs folder and the palette come from it
    window = MainWindow()
    window.closed.connect(app.quit)
    window.show()
    return app, window


def main() -> int:
    app, _window = start(sys.argv)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
