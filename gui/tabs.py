"""The main window's tabs: the run history first (never closed), then a tab for each monitor,
comparison or generation opened from it, instead of a window each.

    tabs = WindowTabs(history_widget, "Runs")
    monitor = tabs.open(("monitor", run_id), lambda: MonitorWindow(run_dir))  # again: switches
    tabs.of_kind("monitor")   # {run_id: widget} of the open monitor tabs

A tab is keyed by what it shows, so opening the same thing again switches to its tab.
Closing a tab closes its widget (its closeEvent stops its timers) and deletes it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from PySide6.QtWidgets import QTabBar, QTabWidget, QWidget

TITLE_PREFIX = "CPT Studio — "
"""Dropped from a widget's window title to make its tab's title."""


class WindowTabs(QTabWidget):
    def __init__(self, home: QWidget, title: str, parent: QWidget | None = None):
        super().__init__(parent, objectName="tabs")
        self.setDocumentMode(True)
        self.setTabsClosable(True)
        self.setMovable(True)
        self._keys: dict[int, tuple] = {}  # id(widget) -> key
        self.addTab(home, title)
        for side in (QTabBar.ButtonPosition.LeftSide, QTabBar.ButtonPosition.RightSide):
            self.tabBar().setTabButton(0, side, None)  # the history stays
        self.home = home
        self.tabCloseRequested.connect(self.close_tab)
        self.tabBar().tabMoved.connect(self._keep_home_first)

    def open(self, key: tuple[str, Hashable], make: Callable[[], QWidget]) -> QWidget:
        """Switch to the tab showing `key` ((kind, what)), or add one with the widget `make()`
        builds; returns the tab's widget."""
        widget = self.find(key)
        if widget is None:
            widget = make()
            self._keys[id(widget)] = key
            title = widget.windowTitle().removeprefix(TITLE_PREFIX)
            index = self.addTab(widget, title)
            self.setTabToolTip(index, widget.windowTitle())
            widget.windowTitleChanged.connect(lambda text, w=widget: self._retitle(w, text))
        self.setCurrentWidget(widget)
        return widget

    def find(self, key: tuple) -> QWidget | None:
        """The open tab's widget showing `key`, else None."""
        return next((w for w in self.widgets() if self._keys.get(id(w)) == key), None)

    def widgets(self) -> list[QWidget]:
        """The widgets of the tabs after the history, in tab order."""
        return [self.widget(i) for i in range(self.count()) if self.widget(i) is not self.home]

    def of_kind(self, kind: str) -> dict:
        """The open tabs of `kind` ("monitor", "compare", "generate"): {what: widget}."""
        found = {}
        for widget in self.widgets():
            key = self._keys.get(id(widget))
            if key and key[0] == kind:
                found[key[1]] = widget
        return found

    def close_tab(self, index: int) -> bool:
        """Close the tab at `index` (never the history's); True if one was closed."""
        widget = self.widget(index)
        if widget is None or widget is self.home:
            return False
        self.removeTab(index)
        self._keys.pop(id(widget), None)
        widget.close()
        widget.deleteLater()
        return True

    def close_showing(self, run_ids: list[str]) -> int:
        """Close the tabs that show any of `run_ids` (its monitor, its generation, a comparison
        that includes it: a run removed from the history); returns how many were closed."""
        gone = set(run_ids)
        closed = 0
        for index in reversed(range(self.count())):
            what = self._keys.get(id(self.widget(index)), (None, None))[1]
            if gone & (set(what) if isinstance(what, tuple) else {what}):
                closed += self.close_tab(index)
        return closed

    def close_current(self) -> bool:
        """Close the current tab (File ▸ Close tab, Ctrl+W) unless it is the history."""
        return self.close_tab(self.currentIndex())

    def close_all(self) -> None:
        """Close every tab but the history (at quit: their timers stop)."""
        for index in reversed(range(self.count())):
            self.close_tab(index)

    def _retitle(self, widget: QWidget, text: str) -> None:
        index = self.indexOf(widget)
        if index >= 0:
            self.setTabText(index, text.removeprefix(TITLE_PREFIX))
            self.setTabToolTip(index, text)

    def _keep_home_first(self, _from: int, _to: int) -> None:
        if self.indexOf(self.home) != 0:
            self.tabBar().moveTab(self.indexOf(self.home), 0)
