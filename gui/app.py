"""`cpt-studio-gui`: the desktop app."""

from __future__ import annotations

import sys

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


def start(argv: list[str]):
    """The application and its main window, shown: the saved preferences (data folder,
    theme) applied first. Quitting the main window ends the event loop, whatever else is
    open; runs it started keep training (detached worker processes). Returns (app, window)."""
    app = QApplication(argv)
    app.setApplicationName("CPT Studio")
    app.setOrganizationName("cpt-studio")
    app.setDesktopFileName(APP_ID)  # Wayland and taskbars match the window to the desktop entry
    app.setWindowIcon(app_icon())
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
