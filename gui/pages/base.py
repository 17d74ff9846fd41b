"""What every wizard page shares: load from the config, write the user's edits into it, and
refuse to go on while RunConfig.validate() reports a problem in this page's sections.

The wizard's config is the one object the summary describes and Start runs. A page writes
into it (commit) when the user edits one of its input widgets and when the user leaves it
with Next, and then only the settings whose widgets changed since they were last loaded or
written: a widget that cannot show a value exactly (a rounded spin box, one text field for
several sources) never overwrites a value the user did not touch.
"""

from __future__ import annotations

import copy
import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QRadioButton,
    QVBoxLayout,
    QWidget,
    QWizardPage,
)

from cpt_studio.core.config import RunConfig

from ..theme import styled

_NEVER = object()
"""A setting this page has not loaded or written yet."""
INPUT_WIDGETS = (QLineEdit, QAbstractSpinBox, QComboBox, QCheckBox, QRadioButton, QListWidget)
"""The kinds of widget a user edits a setting with."""


class ConfigPage(QWizardPage):
    sections: tuple[str, ...] = ()
    """The prefixes of RunConfig.validate()'s problems that belong to this page."""
    shown_problems: int = 6
    """How many problems the page lists before "… and N more"."""

    def __init__(self, title: str, subtitle: str = ""):
        super().__init__()
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.layout_ = QVBoxLayout(self)
        self.problems = QLabel(wordWrap=True, objectName="problems")
        styled(self.problems, "color:{error};")  # the theme's red: readable on dark too
        self.problems.hide()
        self.notice = QLabel(wordWrap=True, objectName="notice",
                             textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        """What the wizard's Load, Save and Copy CLI command buttons did (show_notice)."""
        self.notice.hide()
        self._loading = False
        self._written: dict[str, object] = {}
        """Each setting as this page's widgets gave it when last loaded or written."""

    def finish_layout(self) -> None:
        self.layout_.addStretch(1)
        self.layout_.addWidget(self.problems)
        self.layout_.addWidget(self.notice)
        for widget in self.input_widgets():
            for signal in _edited_signals(widget):
                signal.connect(self._on_edited)

    def input_widgets(self) -> list:
        """The widgets of this page a user edits settings with (INPUT_WIDGETS), read-only and
        display_only ones left out."""
        return [w for w in self.findChildren(QWidget) if isinstance(w, INPUT_WIDGETS)
                and not (isinstance(w, (QLineEdit, QAbstractSpinBox)) and w.isReadOnly())
                and not w.property(DISPLAY_ONLY)]

    @property
    def config(self) -> RunConfig:
        return self.wizard().config

    def initializePage(self) -> None:
        self.reload(self.config)

    def reload(self, config: RunConfig) -> None:
        """Show `config` in the widgets (load), with no edit written back while they change;
        problems shown for another config are cleared."""
        self.show_problems([])
        self._loading = True
        try:
            self.load(config)
        finally:
            self._loading = False
        self._written = self._settings_from_widgets(config)

    def load(self, config: RunConfig) -> None:
        """Show the config's values in the widgets."""

    def store(self, config: RunConfig) -> None:
        """Write the widgets' values into the config."""

    def commit(self) -> None:
        """Write into the wizard's config every setting whose widget changed since it was last
        loaded or written (see the module docstring)."""
        config = self.config
        now = self._settings_from_widgets(config)
        for path, value in now.items():
            if value != self._written.get(path, _NEVER):
                _set_setting(config, path, copy.deepcopy(value))
        self._written = now

    def _settings_from_widgets(self, config: RunConfig) -> dict[str, object]:
        """Every setting of a copy of `config` after this page stored its widgets into it."""
        shown = copy.deepcopy(config)
        self.store(shown)
        return _settings(shown)

    def _on_edited(self, *_) -> None:
        if not self._loading and self.wizard() is not None:
            self.commit()

    def page_problems(self) -> list[str]:
        self.commit()
        return [p for p in self.config.validate() if p.startswith(self.sections)]

    def validatePage(self) -> bool:
        problems = self.page_problems()
        self.show_problems(problems)
        return not problems

    def show_problems(self, problems: list[str]) -> None:
        """The first `shown_problems` problems, then how many more (a file with the same fault on
        every line squeezed the page's fields until they overlapped)."""
        shown = self.shown_problems
        more = [f"… and {len(problems) - shown} more"] if len(problems) > shown else []
        self.problems.setText("\n".join(f"• {p}" for p in problems[:shown] + more))
        self.problems.setToolTip("\n".join(problems[:TOOLTIP_PROBLEMS]) if more else "")  # the rest
        self.problems.setVisible(bool(problems))

    def show_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))


TOOLTIP_PROBLEMS = 40
"""How many problems the list's tooltip names when the page lists fewer."""

DISPLAY_ONLY = "display_only"
"""The Qt property of a widget of an input kind that only shows something (display_only)."""


def display_only(widget: QWidget) -> QWidget:
    """Mark a widget of an input kind (a list of problems...) as showing results, not a setting."""
    widget.setProperty(DISPLAY_ONLY, True)
    return widget


def _edited_signals(widget) -> list:
    """The signals a widget of INPUT_WIDGETS sends when the user changes its value."""
    if isinstance(widget, QLineEdit):
        return [widget.textChanged]
    if isinstance(widget, QAbstractSpinBox):
        return [widget.valueChanged]
    if isinstance(widget, QComboBox):
        return [widget.currentIndexChanged]
    if isinstance(widget, QListWidget):  # a list of sources: added, removed
        return [widget.model().rowsInserted, widget.model().rowsRemoved]
    return [widget.toggled]


def _settings(config) -> dict[str, object]:
    """Every setting of `config` by dotted path (sections walked, lists kept whole)."""
    found = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            found.update({f"{field.name}.{k}": v for k, v in _settings(value).items()})
        else:
            found[field.name] = value
    return found


def _set_setting(config, path: str, value) -> None:
    *sections, name = path.split(".")
    for section in sections:
        config = getattr(config, section)
    setattr(config, name, value)
