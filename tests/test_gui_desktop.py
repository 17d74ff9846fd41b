"""Desktop conventions, offscreen: monitors and comparisons as tabs of the one main window,
Open Recent, Preferences (data folder, theme, charts included), window geometry restored
and kept on screen, Help, Quit ending the app while a detached run keeps training, and dead
Qt objects freed on the GUI thread only."""

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import pyqtgraph as pg
import pytest
from PySide6.QtCore import QObject, QRect
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QStyleOptionButton

from cpt_studio.core.config import RunConfig
from cpt_studio.core.runs import worker_pid, write_pid
from cpt_studio.gui import recent, theme
from cpt_studio.gui.app import gui_thread_garbage_collector
from cpt_studio.gui.geometry import keep_on_screen, save_geometry
from cpt_studio.gui.main_window import MainWindow
from cpt_studio.gui.monitor import MonitorWindow


def fake_run(root: Path, name: str, state: str = "finished") -> Path:
    run_dir = root / name
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "config.json").write_text(RunConfig(name=name).to_json())
    (run_dir / "events.jsonl").write_text(json.dumps(
        {"type": "status", "time": 1.0, "step": 0, "state": state, "phase": "training"}) + "\n")
    return run_dir


@pytest.fixture
def window(qtbot, tmp_path):
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: not window.history.busy)
    return window


@pytest.fixture
def light_again():
    """The app's start (a theme applied before any window), and the light theme put back
    after the test: the theme is the application's."""
    theme.apply_theme(QApplication.instance(), "light")
    yield
    theme.apply_theme(QApplication.instance(), "light")


def test_a_monitor_opens_as_a_tab_and_opening_it_again_switches_to_it(window, tmp_path):
    first, second = fake_run(tmp_path / "runs", "med"), fake_run(tmp_path / "runs", "law")
    assert window.tabs.count() == 1 and window.tabs.tabText(0) == "Runs"
    monitor = window.open_monitor(first)
    assert isinstance(monitor, MonitorWindow) and window.tabs.count() == 2
    assert window.tabs.currentWidget() is monitor and monitor.isVisible() and monitor.isWindow() is False
    assert "med" in window.tabs.tabText(1)
    other = window.open_monitor(second)
    assert window.tabs.count() == 3 and window.tabs.currentWidget() is other
    assert window.open_monitor(first) is monitor  # already open: its tab, no new one
    assert window.tabs.count() == 3 and window.tabs.currentWidget() is monitor
    assert set(window.monitors) == {str(first.resolve()), str(second.resolve())}
    assert window.tabs.close_tab(0) is False and window.tabs.count() == 3  # the history stays
    close = next(a for a in window.findChildren(type(window.quit_action)) if a.text() == "&Close tab")
    assert close.shortcut().toString() == "Ctrl+W"
    close.trigger()  # the current tab: the first monitor
    assert window.tabs.count() == 2 and set(window.monitors) == {str(second.resolve())}
    assert not monitor._timer.isActive()  # a closed tab stops reading its run
    assert [w.isWindow() for w in QApplication.topLevelWidgets() if isinstance(w, MonitorWindow)] == []


def test_open_recent_lists_runs_and_setups_newest_first_and_opens_them(window, tmp_path, qtbot):
    runs = [fake_run(tmp_path / "runs", name) for name in ("a", "b", "gone")]
    for run in runs:
        window.open_monitor(run)
    setup = tmp_path / "setup.json"
    setup.write_text(RunConfig(name="from-setup").to_json())
    wizard = window.open_setup(setup)
    qtbot.addWidget(wizard)
    assert wizard.config.name == "from-setup"
    window.tabs.close_all()
    shutil.rmtree(runs[2])  # a run folder deleted since: not offered
    window._fill_recent_menu()
    entries = [a.text() for a in window.recent_menu.actions() if not a.isSeparator()]
    assert entries == ["b", "a", "setup.json", "Clear menu"]
    next(a for a in window.recent_menu.actions() if a.text() == "a").trigger()
    assert list(window.monitors) == [str(runs[0].resolve())]
    assert recent.recent("runs")[0] == str(runs[0].resolve())
    recent.clear()
    window._fill_recent_menu()
    assert [a.text() for a in window.recent_menu.actions() if not a.isSeparator()] == ["Clear menu"]


def test_preferences_switch_the_data_folder_and_the_history_follows(window, tmp_path, monkeypatch, qtbot):
    monkeypatch.setenv("CPT_STUDIO_HOME", os.environ["CPT_STUDIO_HOME"])  # restored afterwards
    other = tmp_path / "other-home"
    fake_run(other / "runs", "elsewhere")
    dialog = window.open_preferences()
    dialog.folder.setText(str(other))
    dialog.accept()
    assert os.environ["CPT_STUDIO_HOME"] == str(other.resolve())
    assert window.runs_root == other.resolve() / "runs"
    qtbot.waitUntil(lambda: window.table.rowCount() == 1 and not window.history.busy)
    assert window.table.item(0, 0).text() == "elsewhere"
    from cpt_studio.gui.preferences import DATA_FOLDER, settings
    assert settings().value(DATA_FOLDER) == str(other.resolve())


def test_a_data_folder_set_by_the_environment_cannot_be_edited(window, monkeypatch):
    """CPT_STUDIO_HOME wins at every start: a folder chosen in the dialog would silently not be used."""
    from cpt_studio.gui import preferences

    monkeypatch.setattr(preferences, "_environment_folder", "/srv/cpt-home")
    dialog = window.open_preferences()
    assert not dialog.folder.isEnabled() and "CPT_STUDIO_HOME is set to /srv/cpt-home" in dialog.folder_note.text()
    dialog.reject()
    monkeypatch.setattr(preferences, "_environment_folder", None)
    assert window.open_preferences().folder.isEnabled()


def test_preferences_refuse_a_data_folder_that_cannot_be_made(window, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    window.setGeometry(60, 40, 700, 500)
    window.show()
    dialog = window.open_preferences()
    screen = QGuiApplication.primaryScreen().availableGeometry()
    frame, middle = dialog.frameGeometry(), window.frameGeometry().center()
    half = frame.width() // 2  # centred over its window, as far as the screen allows
    expected_x = min(max(middle.x(), screen.left() + half), screen.right() - half)
    assert abs(frame.center().x() - expected_x) < 20 and abs(frame.center().y() - middle.y()) < 40
    dialog.folder.setText(str(blocker / "home"))
    dialog.accept()
    assert dialog.isVisible() and "cannot be used as the data folder" in dialog.error.text()
    assert window.runs_root == tmp_path / "runs"


def test_dark_theme_darkens_the_palette_and_the_charts_live(window, qtbot, light_again):
    plot = pg.PlotWidget(background="w", title="<span style='color:#333'>loss</span>")
    plot.plotItem.getAxis("left").setTextPen("#333333")
    legend = plot.addLegend(labelTextColor="#333333")
    plot.plot([0, 1], [1, 0], name="loss", pen="#b0b0b0")
    average = plot.plot([0, 1], [1, 0], name="EMA", pen=pg.mkPen("#222222", width=2))
    value = pg.TextItem("40.0", color="#333333")
    marker = pg.TextItem("guard: rollback at step 50", color="#dc3545", fill="w")
    plot.addItem(value)
    plot.addItem(marker)
    qtbot.addWidget(plot)
    plot.show()
    dialog = window.open_preferences()
    dialog.theme.setCurrentIndex(theme.THEMES.index("dark"))  # shown at once, before OK
    app = QApplication.instance()
    assert app.palette().color(QPalette.ColorRole.Window).lightness() < 80
    assert app.palette().color(QPalette.ColorRole.WindowText).lightness() > 200
    assert plot.backgroundBrush().color().lightness() < 60
    assert plot.plotItem.getAxis("left").textPen().color().lightness() > 180
    assert legend.opts["labelTextColor"].lightness() > 180
    assert all("#dddddd" in label.item.toHtml() for _sample, label in legend.items)  # drawn so
    assert value.color.lightness() > 180
    assert marker.fill.color().lightness() < 60 and marker.color.name() == "#dc3545"
    assert "color:#dddddd" in plot.plotItem.titleLabel.text
    assert average.opts["pen"].color().lightness() > 180 and average.opts["pen"].width() == 2
    dialog.accept()
    from cpt_studio.gui.preferences import saved_theme
    assert saved_theme() == "dark"
    later = pg.PlotWidget(background="w")  # built with light colours after the switch
    qtbot.addWidget(later)
    later.show()
    assert later.backgroundBrush().color().lightness() < 60
    themed = theme.styled(QLabel("hint"), "color:{muted};")
    assert themed.styleSheet() == f"color:{theme.DARK.muted};"
    dialog = window.open_preferences()
    dialog.theme.setCurrentIndex(theme.THEMES.index("light"))
    dialog.reject()  # Cancel puts the dark theme back
    assert app.palette().color(QPalette.ColorRole.Window).lightness() < 80
    theme.apply_theme(app, "light")
    assert app.palette().color(QPalette.ColorRole.Window).lightness() > 180
    assert plot.backgroundBrush().color().lightness() > 240 and later.backgroundBrush().color().lightness() > 240
    assert themed.styleSheet() == f"color:{theme.LIGHT.muted};"
    assert average.opts["pen"].color().name() == "#222222" and value.color.name() == "#333333"
    assert marker.fill.color().name() == "#ffffff"


def test_an_unticked_check_box_is_visible_in_the_dark_theme(qtbot, light_again):
    """Fusion drew its edge in the window colour darkened: #202020 on a #1e1e1e field (a tester
    could not see the Evaluate dialog's unticked checkpoints)."""
    from PySide6.QtWidgets import QCheckBox

    theme.apply_theme(QApplication.instance(), "dark")
    box = QCheckBox("unticked")
    qtbot.addWidget(box)
    box.show()
    qtbot.waitExposed(box)
    image = box.grab().toImage()
    option = QStyleOptionButton()
    box.initStyleOption(option)
    indicator = box.style().subElementRect(box.style().SubElement.SE_CheckBoxIndicator, option, box)
    background = image.pixelColor(image.width() - 2, image.height() // 2).lightness()
    edge = max(image.pixelColor(x, y).lightness() for x in range(indicator.left(), indicator.right() + 1)
               for y in range(indicator.top(), indicator.bottom() + 1))
    assert edge - background > 60, (edge, background)


def test_system_theme_follows_the_desktops_colour_scheme(light_again):
    app = QApplication.instance()
    assert theme.apply_theme(app, "system") == theme.system_scheme()
    with pytest.raises(ValueError, match="choose one of system, light, dark"):
        theme.apply_theme(app, "sepia")


def test_the_window_comes_back_where_it_was_and_always_on_a_screen(qtbot, tmp_path):
    first = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(first)
    screen = QGuiApplication.primaryScreen().availableGeometry()
    # a first start: the default size (1200 x 850) fits the screen (offscreen: 800 x 800; on a
    # 1366 x 768 laptop the title bar was above the screen's top)
    assert screen.contains(first.frameGeometry()) and first.width() == screen.width()
    first.setGeometry(screen.x() + 40, screen.y() + 50, 640, 420)
    save_geometry(first, "main_window")
    again = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(again)
    assert (again.width(), again.height()) == (640, 420)
    assert abs(again.geometry().x() - first.geometry().x()) <= 1
    again.setGeometry(screen.right() + 3000, screen.bottom() + 2000, 640, 420)  # a monitor unplugged
    save_geometry(again, "main_window")
    third = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(third)
    assert screen.contains(third.frameGeometry().center())
    third.setGeometry(QRect(screen.x() - 5000, screen.y(), screen.width() * 2, screen.height() * 2))
    keep_on_screen(third)
    assert third.width() <= screen.width() and screen.contains(third.frameGeometry().center())


def test_help_shows_the_readmes_tour_and_about_the_version(window):
    from importlib.metadata import version

    tour = window.open_tour()
    text = tour.browser.toPlainText()
    assert "The desktop app" in text and "For contributors" not in text and "cpt-studio-gui" in text
    about = next(a for a in window.menuBar().actions() if a.text() == "&Help").menu().actions()[1]
    about.trigger()
    box = next(w for w in QApplication.topLevelWidgets() if w.windowTitle() == "About CPT Studio")
    assert f"CPT Studio {version('cpt-studio')}" in box.text() and "Apache-2.0" in box.text()
    box.close()


def test_an_installed_app_reads_the_tour_from_the_packages_metadata(monkeypatch, tmp_path):
    from cpt_studio.gui import help as app_help

    monkeypatch.setattr(app_help, "REPOSITORY", tmp_path)  # no checkout around the package
    text = app_help.tour_markdown(app_help.readme(), None)
    assert text.startswith("# CPT Studio") and "## The desktop app" in text
    assert "![" not in text and "For contributors" not in text  # no pictures to show


def test_shortcuts_are_the_usual_ones(window):
    shortcuts = {a.text(): a.shortcut().toString() for a in window.findChildren(type(window.quit_action))}
    assert shortcuts["&New run…"] == "Ctrl+N" and shortcuts["&Open run folder…"] == "Ctrl+O"
    assert shortcuts["&Quit"] == "Ctrl+Q" and shortcuts["&Preferences…"] == "Ctrl+,"
    assert shortcuts["&Refresh"] == "F5" and shortcuts["CPT Studio &tour"] == "F1"
    assert window.run_actions["delete"].shortcut().toString() == "Del"


QUIT_DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path

    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QMessageBox

    from cpt_studio.gui.app import start

    app, window = start(sys.argv[:1])
    window.open_monitor(Path(sys.argv[1]))  # a monitor tab open while quitting

    def answer():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            print("SAID:", box.text(), flush=True)
            next(b for b in box.buttons() if b.text() == "Quit").click()

    poll = QTimer(interval=100, timeout=answer)
    poll.start()
    QTimer.singleShot(1000, lambda: QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier))
    sys.exit(app.exec())
""")


def test_quit_ends_the_app_while_a_detached_run_keeps_training(tmp_path):
    home = tmp_path / "home"
    run_dir = fake_run(home / "runs", "background", state="running")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                              start_new_session=True)  # stands in for a detached worker
    try:
        write_pid(run_dir, worker.pid)
        env = {**os.environ, "CPT_STUDIO_HOME": str(home), "QT_QPA_PLATFORM": "offscreen",
               "XDG_CONFIG_HOME": str(tmp_path / "config")}
        app = subprocess.run([sys.executable, "-c", QUIT_DRIVER, str(run_dir)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert app.returncode == 0, app.stderr[-3000:]
        assert ("SAID: 1 run keeps training in the background; reopen CPT Studio to watch them."
                in app.stdout), app.stdout + app.stderr[-3000:]
        assert worker.poll() is None and worker_pid(run_dir) == worker.pid  # the run goes on
    finally:
        worker.kill()
        worker.wait()


def test_a_monitors_marker_labels_made_on_dark_follow_the_theme(window, qtbot, tmp_path, light_again):
    from cpt_studio.core.testing.monitor_runs import write_monitor_run

    theme.apply_theme(QApplication.instance(), "dark")
    monitor = window.open_monitor(write_monitor_run(tmp_path / "runs" / "guarded", steps=120))
    qtbot.waitUntil(lambda: bool(monitor.charts.guard_markers))
    labels = [line.label for lines in monitor.charts.guard_markers.values() for line in lines
              if getattr(line, "label", None)]
    assert labels and all(label.fill.color().lightness() < 60 for label in labels)  # no white box on dark
    theme.apply_theme(QApplication.instance(), "light")
    assert all(label.fill.color().lightness() > 240 for label in labels)


def test_the_wizards_problems_and_warnings_stay_readable_on_dark(qtbot, light_again, tmp_path):
    """The pages' problems (dark red) and the LR warning (dark brown) were fixed light-theme
    colours: on the dark theme they could hardly be read."""
    from cpt_studio.gui.pages.schedule_page import SchedulePage
    from cpt_studio.gui.wizard import RunWizard

    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    theme.apply_theme(QApplication.instance(), "dark")
    schedule = next(page for page in wizard.pages if isinstance(page, SchedulePage))
    for page in wizard.pages:
        assert page.problems.styleSheet() == f"color:{theme.DARK.error};", type(page).__name__
    assert schedule.warning.styleSheet() == f"color:{theme.DARK.warning};"
    theme.apply_theme(QApplication.instance(), "light")
    assert wizard.pages[0].problems.styleSheet() == f"color:{theme.LIGHT.error};"


def test_black_outlines_of_scatter_points_and_their_legend_sample_read_on_dark(qtbot, light_again):
    """The comparison's recommended star and selection ring were black outlines: on the dark
    chart background they vanished."""
    plot = pg.PlotWidget(background="w")
    star = pg.ScatterPlotItem(spots=[{"pos": (1, 1), "symbol": "star", "pen": pg.mkPen("#000000", width=2.5)},
                                     {"pos": (2, 2), "pen": pg.mkPen("#1f77b4")}])
    ring = pg.ScatterPlotItem(size=22, pen=pg.mkPen("#000000", width=2), brush=None, symbol="s")
    sample = pg.ScatterPlotItem(symbol="star", size=14, brush=None, pen=pg.mkPen("#000000", width=2))
    plot.addItem(star)
    plot.addItem(ring)
    plot.addLegend().addItem(sample, "recommended (★)")
    qtbot.addWidget(plot)
    plot.show()
    theme.apply_theme(QApplication.instance(), "dark")
    pens = [pg.mkPen(p) for p in star.data["pen"]]
    assert pens[0].color().lightness() > 180 and pens[0].widthF() == 2.5
    assert pens[1].color().name() == "#1f77b4"  # a coloured outline keeps its colour
    ring.setData(pos=[(1, 1)])  # selected after the switch: the default pen
    assert ring.opts["pen"].color().lightness() > 180
    assert sample.opts["pen"].color().lightness() > 180
    theme.apply_theme(QApplication.instance(), "light")
    assert pg.mkPen(star.data["pen"][0]).color().name() == "#000000"
    assert ring.opts["pen"].color().name() == "#000000" and sample.opts["pen"].color().name() == "#000000"


def test_quit_counts_a_run_whose_worker_has_not_written_events_yet(window, tmp_path):
    """`cpt-studio train --detach`, then Ctrl+Q within a second: the run folder has its config and
    its worker's pid, no events.jsonl yet; the app must still say that it keeps training."""
    folder = tmp_path / "runs" / "just-started"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(RunConfig(name="just-started").to_json())
    write_pid(folder)  # this test's process stands for the worker
    assert str(folder.resolve()) in window.running_runs()


def test_file_dialogs_open_where_that_kind_of_file_was_last_chosen(qapp, tmp_path):
    """Home first (not the app's working directory); then the folder of the last file or folder
    chosen in a dialog of that kind; a folder since deleted falls back to home; a cancelled
    dialog changes nothing."""
    from pathlib import Path

    from cpt_studio.gui.recent import remember_folder, start_folder

    assert start_folder("corpus") == str(Path.home())
    (tmp_path / "corpora").mkdir()
    remember_folder("corpus", [str(tmp_path / "corpora" / "a.jsonl"), str(tmp_path / "b.jsonl")])
    remember_folder("model", str(tmp_path))
    remember_folder("corpus", "")  # cancelled
    assert start_folder("corpus") == str(tmp_path / "corpora") and start_folder("model") == str(tmp_path)
    (tmp_path / "corpora").rmdir()
    assert start_folder("corpus") == str(Path.home()) and start_folder("sft") == str(Path.home())


def test_dead_qt_objects_are_freed_on_the_gui_thread_not_in_a_background_job(qapp):
    """Python's cycle collector ran in whichever thread allocated: in a job's thread it freed dead
    widgets there, and a widget destroyed off the GUI thread deadlocked the app (a wizard's model
    description hung in QObject::~QObject). The app collects on a GUI-thread timer instead."""
    collector = gui_thread_garbage_collector()
    try:
        freed = []
        dead = QObject()
        dead.itself = dead  # a cycle: only the cycle collector frees it
        weakref.finalize(dead, lambda: freed.append(threading.current_thread().name))
        del dead
        kept = []  # what the job allocates stays, as a model read's objects do
        job = threading.Thread(target=lambda: kept.extend([i] for i in range(1_000_000)), name="job")
        job.start()
        job.join()
        assert freed == []
        deadline = time.monotonic() + 5
        while not freed and time.monotonic() < deadline:
            qapp.processEvents()
            time.sleep(0.05)
        assert freed == ["MainThread"]
    finally:
        collector.timer.stop()
        gc.enable()
