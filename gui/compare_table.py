"""The checkpoints of the compared runs as a table: one row per checkpoint (and the base model
when it was scored), the store's numbers, probe and benchmark scores with their standard
error when a run has them, the recommended one marked, a general task that drops more than
3 points below the base model in red."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from cpt_studio.core.compare import gain_unit, score_columns

from .theme import ON_TINT

COLUMNS = ("run", "step", "tokens seen", "domain ppl", "general ppl", "domain gain",
           "forgetting")
VALUE_ROLE = Qt.ItemDataRole.UserRole + 1
"""The raw number behind a cell's text (None when unknown)."""
RECOMMENDED_BACKGROUND = "#fff3cd"
DROP_BACKGROUND = "#f8d7da"


def _text(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf: shown as what they are
    if column in ("domain gain", "forgetting"):
        return f"{value * 100:+.2f}%"
    if column in ("step", "tokens seen"):
        return f"{int(value):,}"
    if column in ("domain ppl", "general ppl"):
        return f"{value:.3f}"
    if isinstance(value, float) and column not in COLUMNS:  # a benchmark or probe score
        return _score(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _score(value: float) -> str:
    """An accuracy as 0.667; a perplexity of millions as 5.044e+07, not 50436560.488."""
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"


class CheckpointTable(QTableWidget):
    checkpoint_selected = Signal(int)
    """The index (into `rows`) of the checkpoint the user selected."""

    def __init__(self, rows: list[dict[str, Any]], parent=None):
        super().__init__(parent)
        self.rows = rows
        self.scores = score_columns(rows)
        self.columns = [*COLUMNS, *self.scores, "mark"]
        self.setColumnCount(len(self.columns))
        unit = gain_unit(self.rows[0]["basis"]) if self.rows else ""  # bits per byte across tokenizers
        self.setHorizontalHeaderLabels([c + unit if c in ("domain gain", "forgetting") else c for c in self.columns])
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setStretchLastSection(True)
        self._fill()
        self.resizeColumnsToContents()
        self.resizeRowsToContents()  # a run's name, and the settings that differ below it
        self.itemSelectionChanged.connect(self._on_selection_changed)

    def _fill(self) -> None:
        self.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            values = {"run": row["label"], "step": row["step"], "tokens seen": row["tokens"],
                      "domain ppl": row["domain_ppl"], "general ppl": row["general_ppl"],
                      "domain gain": row["domain_gain"], "forgetting": row["forgetting"],
                      **{name: row["scores"].get(name) for name in self.scores},
                      "mark": self.mark(row)}
            notes = row.get("notes") or {}
            for j, column in enumerate(self.columns):
                note = notes.get(column, {})
                stderr = f" ± {_score(note['stderr'])}" if note.get("stderr") is not None and values[column] is not None else ""
                item = QTableWidgetItem(_text(column, values[column]) + stderr)
                item.setData(VALUE_ROLE, values[column])
                if column not in ("run", "mark"):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if row["recommended"]:
                    item.setBackground(QBrush(QColor(RECOMMENDED_BACKGROUND)))
                    item.setForeground(QBrush(QColor(ON_TINT)))  # readable on dark too
                    font = QFont()
                    font.setBold(True)
                    item.setFont(font)
                if note.get("warning"):
                    item.setText("▼ " + item.text())
                    item.setBackground(QBrush(QColor(DROP_BACKGROUND)))
                    item.setForeground(QBrush(QColor(ON_TINT)))
                    item.setToolTip(note["warning"])
                elif stderr:
                    item.setToolTip(f"{column}: {values[column]:.4f}, standard error {note['stderr']:.4f} (lm-eval)")
                self.setItem(i, j, item)

    @staticmethod
    def mark(row: dict[str, Any]) -> str:
        if row.get("base"):
            return "base model"
        if not row["exists"]:
            return "deleted"
        return "★ recommended" if row["recommended"] else "Pareto front" if row["pareto"] else ""

    def value(self, row: int, column: str) -> Any:
        return self.item(row, self.columns.index(column)).data(VALUE_ROLE)

    def select_checkpoint(self, index: int) -> None:
        if self.currentRow() != index:
            self.selectRow(index)
            self.scrollToItem(self.item(index, 0))

    def selected_checkpoint(self) -> int | None:
        rows = self.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def _on_selection_changed(self) -> None:
        index = self.selected_checkpoint()
        if index is not None:
            self.checkpoint_selected.emit(index)
