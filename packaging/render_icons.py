"""Render cpt-studio.svg into the PNG sizes desktops ask for: `python packaging/render_icons.py`.

Qt's own SVG renderer (QtSvg, part of PySide6-Essentials) is used so that no other tool is needed."""

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

SIZES = (16, 32, 48, 64, 128, 256, 512)
HERE = Path(__file__).resolve().parent / "icons"


def main() -> None:
    app = QGuiApplication([])  # noqa: F841 (Qt needs the application object to paint)
    renderer = QSvgRenderer(str(HERE / "cpt-studio.svg"))
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        image.save(str(HERE / f"cpt-studio-{size}.png"))


if __name__ == "__main__":
    main()
