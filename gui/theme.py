"""Light and dark: the app's palette, its charts and its coloured labels follow one theme.

    apply_theme(app, "system")   # follow the desktop (QStyleHints.colorScheme), live
    apply_theme(app, "dark")     # forced: the Fusion style with a dark palette
    styled(QLabel(...), "color:{error};")   # a stylesheet whose colours follow the theme

"system" follows the desktop's colour scheme and switches when it does; "light" and "dark"
force one (Fusion, which draws every widget from the palette). pyqtgraph charts are not
drawn from the palette: each plot widget is restyled (background, axes, legends, grey
titles) when it is shown and when the theme changes, so charts built with light colours
still read on dark.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle, QStyleFactory, QWidget
from shiboken6 import isValid

THEMES = ("system", "light", "dark")
"""The choices offered in Preferences."""


@dataclass(frozen=True)
class Colours:
    """The colours of one scheme: charts' (background, text, axis) and the labels' roles."""

    background: str
    text: str
    axis: str
    muted: str
    error: str
    warning: str
    success: str


LIGHT = Colours(background="#ffffff", text="#333333", axis="#666666", muted="#555555",
                error="#c82333", warning="#8a6d3b", success="#1e7e34")
DARK = Colours(background="#1e1e1e", text="#dddddd", axis="#9a9a9a", muted="#a8a8a8",
               error="#ff6b6b", warning="#e0b46a", success="#5cc46f")

_state = {"choice": "system", "scheme": "light", "native_style": None, "filter": None}
_themed: weakref.WeakSet = weakref.WeakSet()
"""The plot views shown and the styled() widgets: restyled when the theme changes. (Not
QApplication.allWidgets(): wrapping every widget, some half-deleted, can crash PySide.)"""


def current_scheme() -> str:
    """"light" or "dark": the scheme the app shows now."""
    return _state["scheme"]


def colours() -> Colours:
    """The colours of the scheme the app shows now."""
    return DARK if current_scheme() == "dark" else LIGHT


def colour(role: str) -> str:
    """One colour of the current scheme by role ("muted", "error", "warning", "success",
    "text", "background", "axis"), as "#rrggbb"."""
    return getattr(colours(), role)


def system_scheme() -> str:
    """The desktop's colour scheme ("light" or "dark"); when the platform does not say
    (Qt.ColorScheme.Unknown), the lightness of its palette decides."""
    scheme = QGuiApplication.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return "dark"
    if scheme == Qt.ColorScheme.Light:
        return "light"
    return "dark" if is_dark(QGuiApplication.palette()) else "light"


def is_dark(palette: QPalette) -> bool:
    """Whether a palette draws light text on a dark window (the window colour's lightness)."""
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def dark_palette() -> QPalette:
    """A dark palette for the Fusion style (every role Fusion reads, disabled ones dimmed)."""
    palette = QPalette()
    roles = QPalette.ColorRole
    for role, value in ((roles.Window, "#2d2d2d"), (roles.WindowText, "#e6e6e6"),
                        (roles.Base, "#1e1e1e"), (roles.AlternateBase, "#333333"),
                        (roles.ToolTipBase, "#3a3a3a"), (roles.ToolTipText, "#e6e6e6"),
                        (roles.Text, "#e6e6e6"), (roles.Button, "#383838"),
                        (roles.ButtonText, "#e6e6e6"), (roles.BrightText, "#ff6b6b"),
                        (roles.Light, "#505050"), (roles.Midlight, "#424242"),
                        (roles.Mid, "#2a2a2a"), (roles.Dark, "#1a1a1a"), (roles.Shadow, "#0a0a0a"),
                        (roles.Link, "#5aa9ff"), (roles.LinkVisited, "#b58cff"),
                        (roles.Highlight, "#2f74c0"), (roles.HighlightedText, "#ffffff"),
                        (roles.PlaceholderText, "#8c8c8c")):
        palette.setColor(role, QColor(value))
    disabled = QPalette.ColorGroup.Disabled
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        palette.setColor(disabled, role, QColor("#7a7a7a"))
    palette.setColor(disabled, roles.Base, QColor("#262626"))
    palette.setColor(disabled, roles.Button, QColor("#303030"))
    return palette


INDICATOR_EDGE = "#9a9a9a"
"""The edge of a check box or radio button in the dark theme."""


class DarkFusion(QProxyStyle):
    """Fusion with the check box and radio button edges visible on a dark palette: Fusion draws
    them in the window colour darkened (#202020 on #1e1e1e fields here), so an unticked box was
    all but invisible (a tester: the Evaluate dialog's checkpoint list, "Skip bad records")."""

    INDICATORS = (QStyle.PrimitiveElement.PE_IndicatorCheckBox, QStyle.PrimitiveElement.PE_IndicatorRadioButton,
                  QStyle.PrimitiveElement.PE_IndicatorItemViewItemCheck)

    def __init__(self):
        super().__init__(QStyleFactory.create("Fusion"))

    def drawPrimitive(self, element, option, painter, widget=None) -> None:  # noqa: N802 (Qt's name)
        super().drawPrimitive(element, option, painter, widget)
        if element not in self.INDICATORS:
            return
        painter.save()
        painter.setRenderHint(painter.RenderHint.Antialiasing)
        painter.setPen(QColor(INDICATOR_EDGE))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        box = option.rect.adjusted(1, 1, -2, -2)
        if element == QStyle.PrimitiveElement.PE_IndicatorRadioButton:
            painter.drawEllipse(box)
        else:
            painter.drawRoundedRect(box, 2, 2)
        painter.restore()


def apply_theme(app: QApplication, choice: str) -> str:
    """Show the app in `choice` ("system", "light" or "dark"); returns the scheme shown.

    Forced schemes use the Fusion style with a light or dark palette (and tell the platform,
    for title bars); "system" goes back to the platform's style and palette, with the dark
    Fusion palette when the desktop is dark but its palette is not. Charts shown since the
    first call and themed labels are restyled at once (so the app calls it at start, before
    any window); raises ValueError on an unknown choice."""
    if choice not in THEMES:
        raise ValueError(f"unknown theme {choice!r}; choose one of {', '.join(THEMES)}")
    if _state["native_style"] is None:
        _state["native_style"] = app.style().name()
    hints = app.styleHints()
    _state["choice"] = choice
    if choice == "system":
        hints.unsetColorScheme()
        scheme = system_scheme()
        app.setStyle(_state["native_style"])
        app.setPalette(QPalette())  # an empty palette: the platform's own again
        if scheme == "dark" and not is_dark(app.palette()):
            app.setStyle(DarkFusion())
            app.setPalette(dark_palette())
    else:
        scheme = choice
        hints.setColorScheme(Qt.ColorScheme.Dark if scheme == "dark" else Qt.ColorScheme.Light)
        app.setStyle(DarkFusion() if scheme == "dark" else QStyleFactory.create("Fusion"))
        app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())
    _state["scheme"] = scheme
    _follow(app)
    _restyle_everything(app)
    return scheme


def _follow(app: QApplication) -> None:
    """Once: restyle plots as they are shown, and follow the desktop while on "system"."""
    if _state["filter"] is not None:
        return
    _state["filter"] = _PlotStyler(app)
    app.installEventFilter(_state["filter"])
    app.styleHints().colorSchemeChanged.connect(_on_system_scheme_changed)


def _on_system_scheme_changed(_scheme) -> None:
    app = QApplication.instance()
    if _state["choice"] == "system" and app is not None and system_scheme() != current_scheme():
        apply_theme(app, "system")


def _restyle_everything(app: QApplication) -> None:
    pg.setConfigOptions(background=colour("background"), foreground=colour("text"))
    for widget in list(_themed):
        if not isValid(widget):  # its C++ side was deleted
            continue
        if isinstance(widget, pg.GraphicsView):
            style_plot(widget)
        template = widget.property(CSS_PROPERTY)
        if template:
            widget.setStyleSheet(render(template))


class _PlotStyler(QObject):
    """Restyles a pyqtgraph view when it is shown (plots built after the theme was applied,
    with colours of their own)."""

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.Show and isinstance(watched, pg.GraphicsView):
            _themed.add(watched)
            style_plot(watched)
        return False


_GREY_SPAN = re.compile(r"color:\s*#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})\b")


def _recolour_greys(html: str, text: str) -> str:
    """`html` with its grey text colours (r = g = b: titles' "#333") replaced by `text`;
    coloured ones (a red warning) kept."""

    def swap(match: re.Match) -> str:
        digits = match.group(1)
        rgb = [digits[i] * 2 for i in range(3)] if len(digits) == 3 else [digits[i:i + 2] for i in (0, 2, 4)]
        return f"color:{text}" if len({c.lower() for c in rgb}) == 1 else match.group(0)

    return _GREY_SPAN.sub(swap, html)


def style_plot(view: pg.GraphicsView) -> None:
    """Give one pyqtgraph view the current scheme: background, axis lines and labels, legend
    text and frame, and grey plot titles (coloured curves and markers keep their colours)."""
    scheme = colours()
    view.setBackground(scheme.background)
    scene = view.scene()
    if scene is None:
        return
    for item in scene.items():
        if isinstance(item, pg.AxisItem):
            item.setPen(scheme.axis)
            item.setTextPen(scheme.text)
        elif isinstance(item, pg.LegendItem):
            item.setLabelTextColor(scheme.text)
            for _sample, label in item.items:  # setLabelTextColor leaves shown labels as they were
                label.setText(label.text, color=scheme.text)
            for sample, _label in item.items:  # a sample drawn from a scatter's own pen
                if isinstance(getattr(sample, "item", None), pg.ScatterPlotItem):
                    _recolour_black_spots(sample.item, scheme)
            if item.opts.get("brush") is not None:
                background = QColor(scheme.background)
                background.setAlpha(200)
                item.setBrush(background)
        elif isinstance(item, pg.PlotItem) and item.titleLabel.text:
            item.titleLabel.setText(_recolour_greys(item.titleLabel.text, scheme.text),
                                    color=scheme.text)
        elif isinstance(item, pg.PlotDataItem):
            _recolour_black_curve(item, scheme)
        elif isinstance(item, pg.TextItem):
            _recolour_black_text(item, scheme)
        elif isinstance(item, pg.ScatterPlotItem):
            _recolour_black_spots(item, scheme)


NEAR_BLACK = 60
"""A neutral pen darker than this (lightness 0-255) is drawn in the text colour on dark."""


def near_black(colour: QColor) -> bool:
    """A black or dark grey (drawn for a white background): it would vanish on dark."""
    return colour.lightness() < NEAR_BLACK and colour.saturation() <= 20


def _recolour_black_text(text: pg.TextItem, scheme: Colours) -> None:
    """Dark grey text in a chart (a bar's value) takes the text colour on dark, and a white
    label box (a marker's label) the chart's background."""
    if not hasattr(text, "_light_colour"):
        text._light_colour = QColor(text.color) if near_black(text.color) else None
        fill = text.fill.color()
        boxed = text.fill.style() != Qt.BrushStyle.NoBrush and (  # white, or made on dark (label_fill)
            fill.lightness() > 240 or QColor(fill.rgb()).name() == DARK.background)
        text._fill_alpha = fill.alpha() if boxed else None
    if text._light_colour is not None:
        text.setColor(scheme.text if scheme is DARK else text._light_colour)
    if text._fill_alpha is not None:
        background = QColor(scheme.background)
        background.setAlpha(text._fill_alpha)
        text.fill = pg.mkBrush(background)
        text.update()


def _recolour_black_curve(curve: pg.PlotDataItem, scheme: Colours) -> None:
    """A black or near-black grey curve (an average drawn over a lighter one) would vanish on
    dark: there it takes the text colour, and gets its own back on light."""
    original = getattr(curve, "_light_pen", None)
    if original is None:
        if curve.opts.get("pen") is None:
            return
        pen = pg.mkPen(curve.opts["pen"])  # a colour, a tuple, a dict or a QPen
        if not near_black(pen.color()):
            return
        curve._light_pen = original = pen
    if scheme is DARK:
        dark = pg.mkPen(original)
        dark.setColor(QColor(scheme.text))
        curve.setPen(dark)
    else:
        curve.setPen(original)


def _recolour_black_spots(scatter: pg.ScatterPlotItem, scheme: Colours) -> None:
    """Black outlines of scatter points (a recommended checkpoint's star, a selection ring),
    the scatter's default pen and each point's own, take the text colour on dark and get their
    own back on light; coloured outlines keep their colours."""
    if not hasattr(scatter, "_light_pen"):
        pen = pg.mkPen(scatter.opts["pen"])
        scatter._light_pen = pen if near_black(pen.color()) else None
    if scatter._light_pen is not None:
        scatter.setPen(_on_scheme(scatter._light_pen, scheme))
    if not len(scatter.data):
        return
    spot_pens = list(scatter.data["pen"])
    light = [getattr(pen, "_light_pen", pen) for pen in spot_pens]  # as first drawn
    if not any(pen is not None and near_black(pg.mkPen(pen).color()) for pen in light):
        return
    pens = []
    for pen in light:
        if pen is None or not near_black(pg.mkPen(pen).color()):
            pens.append(pen)
            continue
        shown = _on_scheme(pg.mkPen(pen), scheme)
        shown._light_pen = pg.mkPen(pen)  # the colour it had on light, for the way back
        pens.append(shown)
    scatter.setPen(pens)


def _on_scheme(light_pen, scheme: Colours):
    """`light_pen` (near-black) as drawn on `scheme`: the text colour on dark."""
    pen = pg.mkPen(light_pen)
    if scheme is DARK:
        pen.setColor(QColor(scheme.text))
    return pen


ON_TINT = "#212529"
"""Text on a light tinted background (a highlighted table cell) in either scheme."""

CSS_PROPERTY = "cpt_theme_css"
"""The widget property holding a themed stylesheet's template (re-rendered on a change)."""


def render(template: str) -> str:
    """A stylesheet template with the current scheme's colours: "color:{error};" ->
    "color:#c82333;" (light). Roles: see Colours."""
    return template.format(**vars(colours()))


def styled(widget: QWidget, template: str) -> QWidget:
    """Set `widget`'s stylesheet from `template` (render) and keep it following the theme;
    returns the widget, so that it can wrap a constructor."""
    widget.setProperty(CSS_PROPERTY, template)
    widget.setStyleSheet(render(template))
    _themed.add(widget)
    return widget
