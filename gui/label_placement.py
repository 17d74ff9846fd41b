"""Labels beside their points, not on top of other points: each pyqtgraph TextItem gets the
anchor (the side of its point) where its box, in pixels, covers no point of the chart and no
label placed before it, and stays inside the view.

    place_labels(plot.vb, labels, points)   # again whenever the view's range or size changes

A label's size is in pixels whatever the zoom, so whether it covers a point depends on the
view: the chart calls this again on every change of range or size.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF

ANCHORS = ((-0.15, 1.05), (-0.15, -0.05), (1.15, 1.05), (1.15, -0.05), (-0.2, 0.5), (1.2, 0.5),
           (0.5, 1.35), (0.5, -0.35))
"""TextItem anchors in the order they are tried: above right of the point (as before), below
right, above left, below left, right, left, above, below. (-0.15, 1.05): the box's left edge
15% of its width right of the point, its bottom edge 5% of its height above it."""


def label_box(at: QPointF, width: float, height: float, anchor: tuple[float, float]) -> QRectF:
    """The box, in scene pixels (y down), of a `width` x `height` label anchored at the scene
    point `at`: the anchor's fraction of the box lies on the point (TextItem's rule)."""
    return QRectF(at.x() - anchor[0] * width, at.y() - anchor[1] * height, width, height)


def best_anchor(at: QPointF, width: float, height: float, obstacles: list[QRectF],
                taken: list[QRectF], view: QRectF) -> tuple[float, float]:
    """The first of ANCHORS whose box covers fewest points (`obstacles`: their boxes) and
    labels already placed (`taken`), then sticks out of `view` least."""
    def cost(anchor) -> tuple[int, float]:
        box = label_box(at, width, height, anchor)
        covered = sum(box.intersects(r) for r in obstacles) + sum(box.intersects(r) for r in taken)
        inside = box.intersected(view)
        return covered, 1 - inside.width() * inside.height() / (width * height)

    return min(ANCHORS, key=cost)  # min keeps the first of equal costs


def place_labels(view_box: pg.ViewBox, labels: Iterable[pg.TextItem],
                 points: Iterable[tuple[float, float, float]]) -> None:
    """Anchor each label (a TextItem whose position is its point) by best_anchor. `points`:
    (x, y, size in pixels) of every point drawn, in the view's coordinates."""
    obstacles = []
    for x, y, size in points:
        centre = view_box.mapViewToScene(QPointF(x, y))
        obstacles.append(QRectF(centre.x() - size / 2, centre.y() - size / 2, size, size))
    view = view_box.sceneBoundingRect()
    taken = []
    for label in labels:
        rect = label.textItem.boundingRect()
        width, height = rect.width(), rect.height()
        at = view_box.mapViewToScene(label.pos())
        anchor = best_anchor(at, width, height, obstacles, taken, view)
        if tuple(label.anchor) != anchor:
            label.setAnchor(anchor)
        taken.append(label_box(at, width, height, anchor))
