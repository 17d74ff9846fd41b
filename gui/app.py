"""`cpt-studio-gui`: the desktop app."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication


def main() -> int:
    app = QApplication(sys.argv)
    app.setApplicationName("CPT Studio")
    app.setOrganizationName("cpt-studio")
    from .main_window import MainWindow

    window = MainWindow()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
