"""The user's preferences (QSettings): the data folder and the theme, and the dialog that edits them.

    apply_saved(app)                 # at start: the saved data folder and theme
    PreferencesDialog(parent).exec() # Edit ▸ Preferences (Ctrl+,): both apply at once

The data folder is where runs, the run store and the token cache live
(cpt_studio.core.paths.data_dir). The app sets CPT_STUDIO_HOME from the preference, so that
core and the training workers it starts (they inherit the environment) use the same folder;
a CPT_STUDIO_HOME already set when the app starts wins for that session.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from cpt_studio.core.paths import data_dir

from . import theme

DATA_FOLDER, THEME = "data_folder", "theme"
"""The settings' keys."""


def settings() -> QSettings:
    """The app's settings (per user: preferences, recent files, window geometry)."""
    return QSettings("cpt-studio", "cpt-studio")


def saved_theme() -> str:
    """The theme chosen in Preferences ("system" when none, or an unknown one, was saved)."""
    choice = settings().value(THEME, "system", str)
    return choice if choice in theme.THEMES else "system"


def set_data_folder(folder: Path) -> Path:
    """Use `folder` as the data folder from now on (this process and the workers it starts)
    and remember it; returns it. Raises OSError when it cannot be created."""
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["CPT_STUDIO_HOME"] = str(folder)
    settings().setValue(DATA_FOLDER, str(folder))
    return folder


_environment_folder: str | None = None
"""CPT_STUDIO_HOME as the environment set it when the app started (apply_saved), or None."""


def environment_override() -> str | None:
    """The data folder that CPT_STUDIO_HOME imposed at the app's start (it wins over the
    preference, this session and the next ones while it is set), or None."""
    return _environment_folder


def apply_saved(app: QApplication) -> None:
    """At start: the saved data folder (unless CPT_STUDIO_HOME is set) and the saved theme."""
    global _environment_folder
    _environment_folder = os.environ.get("CPT_STUDIO_HOME") or None
    saved = settings().value(DATA_FOLDER, "", str)
    if saved and "CPT_STUDIO_HOME" not in os.environ:
        os.environ["CPT_STUDIO_HOME"] = saved
    theme.apply_theme(app, saved_theme())


class PreferencesDialog(QDialog):
    """The data folder and the theme. The theme shows as it is chosen (Cancel puts the old
    one back); OK keeps both and emits data_folder_changed when the folder changed."""

    data_folder_changed = Signal(Path)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self._old_theme = saved_theme()
        self.folder = QLineEdit(str(data_dir()))
        browse = QPushButton("Browse…", clicked=self._on_browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.theme = QComboBox()
        for choice in theme.THEMES:
            self.theme.addItem({"system": "Follow the system"}.get(choice, choice.capitalize()), choice)
        self.theme.setCurrentIndex(theme.THEMES.index(self._old_theme))
        self.theme.currentIndexChanged.connect(self._on_theme_changed)
        self.error = theme.styled(QLabel(wordWrap=True, visible=False), "color:{error};")
        override = environment_override()
        if override:  # a folder chosen here would not be used at the next start
            self.folder.setEnabled(False)
            browse.setEnabled(False)
        self.folder_note = theme.styled(QLabel(
            f"CPT_STUDIO_HOME is set to {override} in the environment the app started from: it "
            "decides the data folder. Unset it (and restart) to choose the folder here."
            if override else
            "Runs, the run store and the token cache live here. Runs in the old folder stay "
            "there: choose it again to see them.", wordWrap=True), "color:{muted};")
        form = QFormLayout()
        form.addRow("Data folder:", row)
        form.addRow("", self.folder_note)
        form.addRow("Theme:", self.theme)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.resize(620, self.sizeHint().height())

    def _on_browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def _on_theme_changed(self) -> None:
        theme.apply_theme(QApplication.instance(), self.theme.currentData())

    def accept(self) -> None:
        """Keep the theme; switch the data folder if it changed (an error keeps the dialog open)."""
        folder = Path(self.folder.text().strip() or data_dir()).expanduser()
        changed = folder.resolve() != data_dir().resolve()
        if changed:
            try:
                folder = set_data_folder(folder)
            except OSError as exc:
                self.error.setText(f"{folder} cannot be used as the data folder ({exc}); "
                                   "choose a folder you can write to")
                self.error.show()
                return
        settings().setValue(THEME, self.theme.currentData())
        super().accept()
        if changed:
            self.data_folder_changed.emit(folder)

    def reject(self) -> None:
        if self.theme.currentData() != self._old_theme:
            theme.apply_theme(QApplication.instance(), self._old_theme)
        super().reject()
