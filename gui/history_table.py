"""The run history's cells: what each column shows for a run and the value it sorts by
(numbers as numbers, not as text), and a running run's progress drawn as a bar.

    for j, (text, value) in enumerate(history_cells(run)):   # run: a load_history row
        table.setItem(i, j, HistoryCell(text, value))
    table.setItemDelegateForColumn(COLUMNS.index("progress"), ProgressDelegate(table))
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QTableWidgetItem,
)

from cpt_studio.core.chain import chain_text

COLUMNS = ("name", "state", "progress", "stage", "from", "sweep", "method", "replay", "steps", "base model",
           "started", "tokens", "domain gain", "forgetting")
"""The history's columns; the last one stretches (not "sweep", mostly empty: it took half the table)."""
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 2
"""A running run's progress cell: the fraction done, drawn as a bar (ProgressDelegate)."""


def history_items(run: dict) -> list[QTableWidgetItem]:
    """The run's row of cells (COLUMNS), each holding the run's id (UserRole); a running
    run's progress cell also holds its fraction done (PROGRESS_ROLE, drawn as a bar); the
    name and "from" cells tell the whole chain (base → CPT → SFT) in their tooltip, the state
    cell the last status message (why a run stopped: the guard's reason, or its error)."""
    items = []
    chain = chain_text(run.get("chain") or [run])
    for column, (text, value) in zip(COLUMNS, history_cells(run), strict=True):
        item = HistoryCell(text, value)
        item.setData(Qt.ItemDataRole.UserRole, run["id"])
        if column in ("name", "from"):
            item.setToolTip(chain)
        if column == "state" and (run.get("error") or run.get("message")):
            item.setToolTip(run.get("error") or run["message"])  # why it stopped or failed
        if column == "progress" and run["live_state"] == "running" and value is not None:
            item.setData(PROGRESS_ROLE, value)
        items.append(item)
    return items


def history_cells(run: dict) -> list[tuple[str, object]]:
    """The run's row as (text, the value it sorts by) per column of COLUMNS: numbers sort as
    numbers, a missing value first. `run["chain"]` (cpt_studio.core.chain.lineage; default: the
    run alone) gives "from" (the parent's name and checkpoint) and the base model (the chain's
    first run's)."""
    config = run.get("config") or {}
    chain = run.get("chain") or [run]
    method, corpus = config.get("method") or {}, config.get("corpus") or {}
    lora = method.get("kind") == "lora"
    replay = corpus.get("replay_ratio")
    done, planned = run.get("steps") or 0, run.get("total_steps") or (config.get("schedule") or {}).get("max_steps")
    fraction = min(done / planned, 1.0) if planned else None
    base = chain[0].get("model") or ""
    model = Path(base).name or base
    parent = f"{chain[-2]['name']} · step {run['parent_step']}" if len(chain) > 1 else ""
    stage = (run.get("stage") or "cpt").upper()
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["started"])) if run["started"] else ""
    group = run.get("run_group") or ""
    return [(run["name"], (run["name"] or "").lower()), (run["live_state"] or "", run["live_state"] or ""),
            ("" if fraction is None else f"{fraction:.0%}", fraction), (stage, stage), (parent, parent.lower()),
            (group, group), (f"LoRA r={method.get('lora_rank')}" if lora else "full",
             (1, method.get("lora_rank") or 0) if lora else (2, 0)),
            ("" if replay is None else f"{replay:.0%}", replay),
            (f"{done:,}/{planned:,}" if planned else f"{done:,}", done),
            (model, model.lower()), (started, run["started"]), (f"{run['tokens'] or 0:,}", run["tokens"] or 0),
            (_percent(run["domain_gain"]), run["domain_gain"]), (_percent(run["forgetting"]), run["forgetting"])]


class HistoryCell(QTableWidgetItem):
    """A cell of the history: its text, sorted by its value (numbers as numbers, not text)."""

    def __init__(self, text: str, value):
        super().__init__(str(text))
        self.setData(SORT_ROLE, value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return _sort_key(self.data(SORT_ROLE)) < _sort_key(other.data(SORT_ROLE))


def _sort_key(value) -> tuple:
    """Missing values first, then numbers (NaN with the missing ones), then text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0,)
    return (1, value) if not isinstance(value, str) else (2, value)


class ProgressDelegate(QStyledItemDelegate):
    """Draws a running run's progress cell as a progress bar with its percent."""

    def paint(self, painter, option, index) -> None:
        fraction = index.data(PROGRESS_ROLE)
        if fraction is None:
            super().paint(painter, option, index)
            return
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 3, -2, -3)
        bar.minimum, bar.maximum, bar.progress = 0, 100, round(fraction * 100)
        bar.text, bar.textVisible = f"{fraction:.0%}", True
        bar.state = option.state | QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        QApplication.style().drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)



def _percent(value) -> str:
    return "" if value is None else f"{value:+.1%}"
