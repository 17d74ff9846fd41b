"""Tooltips from the settings' own help: a widget that edits a RunConfig setting shows that
field's docstring (cpt_studio.core.config_help), never a text retyped here.

    explain(self.rank, "method.lora_rank")
    explain(self.text_field, "corpus.domain[].text_field", "corpus.general[].text_field")
"""

from __future__ import annotations

import textwrap

from PySide6.QtWidgets import QWidget

from cpt_studio.core.config_help import format_default, setting

SETTINGS_PROPERTY = "settings"
"""The Qt property that holds the dotted paths a widget edits, comma-separated."""


def explain(widget: QWidget, *paths: str) -> QWidget:
    """Give `widget` the help of the setting(s) it edits as its tooltip, and remember their
    paths; LookupError for a path that is not a setting."""
    widget.setToolTip(tooltip(*paths))
    widget.setProperty(SETTINGS_PROPERTY, ",".join(paths))
    return widget


def tooltip(*paths: str) -> str:
    """The first setting's help, wrapped (Qt does not wrap plain-text tooltips), then where the
    setting(s) live in a config file and the default."""
    first = setting(paths[0])
    for path in paths:
        setting(path)  # a typo fails here, when the page is built
    where = f"In a config file: {', '.join(paths)} (default {format_default(first.default)})."
    return "\n\n".join(part for part in (textwrap.fill(first.help, 72), where) if part)


def edited_settings(widget: QWidget) -> list[str]:
    """The dotted paths `widget` was explained with (explain), or []."""
    value = widget.property(SETTINGS_PROPERTY)
    return value.split(",") if value else []
