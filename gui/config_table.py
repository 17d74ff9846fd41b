"""The settings of the compared runs side by side: one row per setting, one column per run,
the rows that differ highlighted, and "Show differences only" to hide the rest."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cpt_studio.core.compare import config_differences, format_setting

from .theme import ON_TINT

DIFFERENT_BACKGROUND = "#fff3cd"


class ConfigTable(QWidget):
    def __init__(self, configs: dict[str, dict[str, Any]], names: dict[str, str], parent=None):
        super().__init__(parent)
        self.configs, self.names = configs, names
        self.differing = {path for path, _ in config_differences(configs, differences_only=True)}
        self.differences_only = QCheckBox("Show differences only", checked=len(configs) > 1)
        self.differences_only.toggled.connect(self._on_differences_only_changed)
        self.summary = QLabel(f"{len(self.differing)} settings differ between these runs"
                              if len(configs) > 1 else "one run: all its settings")
        self.table = QTableWidget(0, len(configs))
        self.table.setHorizontalHeaderLabels([names[run_id] for run_id in configs])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.differences_only)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        self._fill()

    def _fill(self) -> None:
        rows = config_differences(self.configs, self.differences_only.isChecked())
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels([path for path, _ in rows])
        for i, (path, values) in enumerate(rows):
            for j, run_id in enumerate(self.configs):
                item = QTableWidgetItem(format_setting(path, values[run_id]))
                item.setToolTip(f"{path} = {values[run_id]!r}")
                if path in self.differing:
                    item.setBackground(QBrush(QColor(DIFFERENT_BACKGROUND)))
                    item.setForeground(QBrush(QColor(ON_TINT)))  # readable on dark too
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()

    def settings(self) -> list[str]:
        """The settings shown, top to bottom."""
        return [self.table.verticalHeaderItem(i).text() for i in range(self.table.rowCount())]

    def _on_differences_only_changed(self, _checked: bool) -> None:
        self._fill()

