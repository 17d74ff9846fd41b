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


def main() -> int:
    app = QApplication(sys.argv)
    app.setApplicationName("CPT Studio")
    app.setOrganizationName("cpt-studio")
    app.setDesktopFileName(APP_ID)  # Wayland and taskbars match the window to the desktop entry
    app.setWindowIcon(app_icon())
    from .main_window import MainWindow

    window = MainWindow()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
