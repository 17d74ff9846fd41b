"""Help ▸ Tour (the README's sections for users, rendered) and Help ▸ About.

The README ships inside the installed package's metadata (pyproject's `readme`), so an
installed app reads it from there; run from a checkout, the tour reads the repository's file.
Its pictures are shown when the repository's docs/ folder is there to show them.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from PySide6 import __version__ as pyside_version
from PySide6.QtGui import QTextCursor, QTextDocument
from PySide6.QtWidgets import QDialog, QMessageBox, QTextBrowser, QVBoxLayout, QWidget

from cpt_studio.core.paths import data_dir

DISTRIBUTION = "cpt-studio"
REPOSITORY = Path(__file__).resolve().parents[1]
"""The repository root when the package runs from a checkout (editable installs too)."""
FIRST_SECTION_NOT_FOR_USERS = "## For contributors"
LICENSE_URL = "https://www.apache.org/licenses/LICENSE-2.0"
PICTURE_WIDTH = 760
"""Pixels: the README's screenshots, scaled to fit the tour's window."""


def readme() -> str:
    """The README's text: the repository's file when running from a checkout (it may be newer
    than the install), else the installed package's description. Raises FileNotFoundError
    when neither is there (a broken install)."""
    path = REPOSITORY / "README.md"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        text = metadata.metadata(DISTRIBUTION).get_payload()
    except metadata.PackageNotFoundError:
        text = None
    if not text:
        raise FileNotFoundError(f"the README is neither in {DISTRIBUTION}'s metadata nor at {path}; "
                                "reinstall cpt-studio")
    return text


def tour_markdown(text: str, pictures: Path | None) -> str:
    """The README's user-facing part (up to its contributors' section). Image links are kept
    when `pictures` (the folder they are relative to) holds them, else dropped."""
    text = text.split(FIRST_SECTION_NOT_FOR_USERS, 1)[0].rstrip() + "\n"

    def picture(match: re.Match) -> str:
        return match.group(0) if pictures and (pictures / match.group(2)).is_file() else ""

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", picture, text)


def fit_pictures(document: QTextDocument, width: int) -> None:
    """Scale every picture of `document` to `width` pixels (the height follows)."""
    block = document.begin()
    while block.isValid():
        fragments = block.begin()
        while not fragments.atEnd():
            fragment = fragments.fragment()
            if fragment.charFormat().isImageFormat():
                picture = fragment.charFormat().toImageFormat()
                picture.setWidth(width)
                cursor = QTextCursor(document)
                cursor.setPosition(fragment.position())
                cursor.setPosition(fragment.position() + fragment.length(), QTextCursor.MoveMode.KeepAnchor)
                cursor.setCharFormat(picture)
            fragments += 1
        block = block.next()


class TourWindow(QDialog):
    """The tour: the README's sections for users, with its links and (from a checkout) pictures."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("CPT Studio — Tour")
        self.browser = QTextBrowser(openExternalLinks=True)
        pictures = REPOSITORY if (REPOSITORY / "docs").is_dir() else None
        if pictures:
            self.browser.setSearchPaths([str(pictures)])
        self.browser.setMarkdown(tour_markdown(readme(), pictures))
        fit_pictures(self.browser.document(), PICTURE_WIDTH)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        self.resize(860, 760)


def about_text() -> str:
    """Rich text: the version, the license, the data folder, and the libraries' versions."""
    import pyqtgraph

    try:
        info = metadata.metadata(DISTRIBUTION)
        version, license_name = info["Version"], info.get("License") or "Apache-2.0"
    except metadata.PackageNotFoundError:
        version, license_name = "(not installed)", "Apache-2.0"
    folder = data_dir()
    return (f"<h3>CPT Studio {version}</h3>"
            "<p>Continual pre-training of language models on a domain corpus, without losing "
            "general ability.</p>"
            f"<p>License: <a href='{LICENSE_URL}'>{license_name}</a><br>"
            f"Data folder: <a href='{folder.as_uri()}'>{folder}</a><br>"
            f"PySide6 {pyside_version}, pyqtgraph {pyqtgraph.__version__}</p>")


def show_about(parent: QWidget) -> QMessageBox:
    """Help ▸ About, non-modal; returns the box."""
    box = QMessageBox(QMessageBox.Icon.NoIcon, "About CPT Studio", about_text(),
                      QMessageBox.StandardButton.Ok, parent)
    box.setIconPixmap(parent.windowIcon().pixmap(64, 64))
    box.open()
    return box
