"""The comparison view: settings that differ, legend labels, and, offscreen, the checkpoints
table and scatter showing the store's numbers, selection both ways, and the overlay."""

import numpy as np
import pytest

from cpt_studio.core import store
from cpt_studio.core.compare import (
    MISSING,
    checkpoint_extras,
    config_differences,
    flatten_config,
    run_label,
    run_labels,
)
from cpt_studio.core.testing.compare_runs import REPLAY_0, REPLAY_15, two_runs

A = {"name": "a", "corpus": {"replay_ratio": 0.05, "domain": [{"path": "d.jsonl"}]},
     "schedule": {"peak_lr": 2e-5, "decay": "cosine"}}
B = {"name": "b", "corpus": {"replay_ratio": 0.15, "domain": [{"path": "d.jsonl"}]},
     "schedule": {"peak_lr": 2e-5, "decay": "cosine"}, "ewc": {"enabled": True}}


# -- headless: cpt_studio.core.compare ----------------------------------------------------------------

def test_flatten_config_gives_dotted_paths_and_keeps_lists_whole():
    assert flatten_config(A) == {"name": "a", "corpus.replay_ratio": 0.05,
                                 "corpus.domain": [{"path": "d.jsonl"}],
                                 "schedule.peak_lr": 2e-5, "schedule.decay": "cosine"}


def test_config_differences_lists_every_setting_or_only_those_that_differ():
    every = dict(config_differences({"a": A, "b": B}))
    assert every["schedule.decay"] == {"a": "cosine", "b": "cosine"}
    assert every["ewc.enabled"] == {"a": MISSING, "b": True}  # a older config lacks it
    differing = config_differences({"a": A, "b": B}, differences_only=True)
    assert [path for path, _ in differing] == ["name", "corpus.replay_ratio", "ewc.enabled"]
    assert differing[1][1] == {"a": 0.05, "b": 0.15}


@pytest.mark.parametrize("changes, label", [
    ({}, "replay 5%, lr 2e-05"),
    ({"schedule": {"peak_lr": 1e-4}}, "replay 5%, lr 0.0001"),
])
def test_run_label_names_what_differs_in_the_users_words(changes, label):
    config = {**A, **changes}
    assert run_label(config, ["name", "corpus.replay_ratio", "schedule.peak_lr"]) == label


def test_run_labels_fall_back_to_the_name_when_only_the_name_differs():
    assert run_labels({"a": A, "c": {**A, "name": "c"}}) == {"a": "a", "c": "c"}
    assert run_labels({"a": A, "b": B}) == {"a": "replay 5%, EWC -", "b": "replay 15%, EWC on"}


def test_checkpoint_extras_gives_one_column_per_benchmark_and_probe():
    events = [{"type": "benchmark", "step": 20, "task": "medqa", "metric": "acc", "value": 0.41},
              {"type": "probe", "step": 20, "task": "probes_cloze", "metric": "acc", "value": 0.7},
              {"type": "benchmark", "step": 20, "task": "medqa", "metric": "acc", "value": 0.43}]
    assert checkpoint_extras(events) == {20: {"medqa acc": 0.43, "probes_cloze acc": 0.7}}


# -- the window, offscreen -----------------------------------------------------------------

@pytest.fixture
def db():
    return store.open_store(":memory:")


@pytest.fixture
def window(qtbot, db, tmp_path):
    from cpt_studio.gui.compare import CompareWindow

    run_ids = two_runs(db, tmp_path / "runs")
    window = CompareWindow(db, run_ids)
    qtbot.addWidget(window)
    window.show()
    return window


def test_table_shows_the_stores_numbers_and_marks_the_recommended(window, db):
    table = window.table
    expected = [c for run_id in window.run_ids for c in store.run_checkpoints(db, run_id)]
    assert table.rowCount() == len(REPLAY_0) + len(REPLAY_15) == len(expected)
    for row, checkpoint in enumerate(expected):
        for column, field in (("step", "step"), ("tokens seen", "tokens"),
                              ("domain ppl", "domain_ppl"), ("general ppl", "general_ppl"),
                              ("domain gain", "domain_gain"), ("forgetting", "forgetting")):
            assert table.value(row, column) == checkpoint[field]
        text = table.item(row, table.columns.index("forgetting")).text()
        assert text == f"{checkpoint['forgetting'] * 100:+.2f}%"
    marks = [table.item(r, table.columns.index("mark")).text() for r in range(table.rowCount())]
    assert marks == ["Pareto front", "★ recommended", "Pareto front", "",
                     "Pareto front", "Pareto front", "★ recommended"]
    runs = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert runs == ["replay-0\nreplay 0%, lr 2e-05"] * 4 + ["replay-15\nreplay 15%, lr 1e-05"] * 3
    medqa = [table.value(r, "medqa acc") for r in range(table.rowCount())]
    assert medqa == [None, 0.41, None, 0.44, None, None, None]


def test_scatter_points_are_each_checkpoints_gain_and_forgetting(window):
    scatter = window.scatter
    for run_id, points in zip(window.run_ids, (REPLAY_0, REPLAY_15), strict=True):
        x, y = scatter.points[run_id].getData()
        assert np.allclose(x, [100 * gain for _, gain, _ in points])
        assert np.allclose(y, [100 * forgetting for _, _, forgetting in points])
    front_x, front_y = scatter.fronts[window.run_ids[0]].getData()
    assert np.allclose(front_x, [5, 10, 12]) and np.allclose(front_y, [1, 2, 5])
    recommended = [s for s in scatter.points[window.run_ids[0]].points() if s.size() == 18]
    assert [s.data() for s in recommended] == [1]  # replay 0%, step 20


def test_clicking_a_point_selects_its_row_and_selecting_a_row_rings_its_point(window):
    scatter, table = window.scatter, window.table
    item = scatter.points[window.run_ids[1]]
    point = item.points()[2]  # replay 15%, step 30: the 7th row
    item.sigClicked.emit(item, [point], None)  # what a mouse click on it emits
    assert table.selected_checkpoint() == 6 and table.value(6, "step") == 30
    table.selectRow(2)  # replay 0%, step 30
    assert scatter.selected_index == 2
    x, y = scatter.selected.getData()
    assert np.allclose([x[0], y[0]], [12, 5])


def test_overlay_draws_one_curve_per_run_with_its_data(window, db):
    overlay = window.overlay
    for run_id in window.run_ids:
        loss = store.run_metrics(db, run_id, "loss")
        curve = overlay.curves[("loss", run_id)]
        assert list(curve.xData) == [tokens for _, tokens, _ in loss]
        assert np.allclose(curve.yData, [value for _, _, value in loss])
        evals = store.run_evaluations(db, run_id)
        forgetting = overlay.curves[("forgetting", run_id)]
        assert list(forgetting.xData) == [e["tokens"] for e in evals]
        assert np.allclose(forgetting.yData, [100 * e["forgetting"] for e in evals])
        assert np.allclose(overlay.curves[("domain_ppl", run_id)].yData,
                           [e["domain_ppl"] for e in evals])
    assert len(overlay.plots["loss"].listDataItems()) == 2
    legend = [label.text for _, label in overlay.plots["loss"].legend.items]
    assert legend == ["replay-0<br><span style='font-size:7pt'>replay 0%, lr 2e-05</span>",
                      "replay-15<br><span style='font-size:7pt'>replay 15%, lr 1e-05</span>"]


def test_show_differences_only_hides_equal_settings(window):
    settings = window.config_table
    assert settings.differences_only.isChecked()  # several runs: what differs first
    assert settings.settings() == ["name", "corpus.replay_ratio", "schedule.peak_lr"]
    settings.differences_only.setChecked(False)
    assert "schedule.decay" in settings.settings() and len(settings.settings()) == 10
    row = settings.settings().index("corpus.replay_ratio")
    assert [settings.table.item(row, j).text() for j in range(2)] == ["0%", "15%"]


def test_a_long_list_of_differences_is_cut_to_three_in_the_legend():
    config = {"a": 1, "b": 2, "c": 3, "d": 4}
    assert run_label(config, ["a", "b", "c", "d"]) == "a 1, b 2, c 3, …"


def test_one_run_without_checkpoints_shows_its_settings_and_says_why_it_is_empty(qtbot, db, tmp_path):
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.testing.compare_runs import REPLAY_0, write_compare_run
    from cpt_studio.gui.compare import CompareWindow

    folder = tmp_path / "early"
    folder.mkdir()
    (folder / "config.json").write_text('{"name": "early", "corpus": {"replay_ratio": 0.05}}')
    out = EventWriter(folder / "events.jsonl")
    for step in (1, 2, 3):
        out.emit("step", step, tokens=100 * step, loss=3.0 - 0.1 * step)
    out.close()
    early = store.index_run(db, folder)
    window = CompareWindow(db, [early])
    qtbot.addWidget(window)
    assert window.table.rowCount() == 0 and window.scatter.points == {}
    assert "No checkpoints yet" in window.hint.text()
    assert not window.config_table.differences_only.isChecked()  # one run: every setting
    assert window.config_table.settings() == ["name", "corpus.replay_ratio"]
    assert list(window.overlay.curves[("loss", early)].xData) == [100, 200, 300]
    assert window.overlay.empty_labels["forgetting"].toPlainText() == "no evaluation yet"
    assert "loss" not in window.overlay.empty_labels
    other = store.index_run(db, write_compare_run(tmp_path / "full", "full", 0.0, 2e-5, REPLAY_0))
    both = CompareWindow(db, [early, other])
    qtbot.addWidget(both)
    assert both.labels[early] == "early\nreplay 5%, seed -, model -, …"  # a setting both have first
    assert both.labels[other] == "full\nreplay 0%, seed 0, model org/tiny, …"
    assert [both.table.item(r, 0).text() for r in range(4)] == [both.labels[other]] * 4


# -- names, notes and the forgetting target ---------------------------------------------------

def test_runs_are_titled_by_unique_names_with_the_differing_settings_below():
    from cpt_studio.core.compare import run_titles, unique_names

    assert unique_names({"x": "med", "y": "med", "z": "law", "w": "med"}) == {
        "x": "med", "y": "med (2)", "z": "law", "w": "med (3)"}
    same_name = {"a": A, "b": {**B, "name": "a"}}
    assert run_titles({"a": "a", "b": "a"}, same_name) == {"a": "a\nreplay 5%, EWC -",
                                                          "b": "a (2)\nreplay 15%, EWC on"}
    assert run_titles({"a": "a", "c": "c"}, {"a": A, "c": {**A, "name": "c"}}) == {"a": "a", "c": "c"}


def test_the_window_labels_runs_of_one_name_apart(qtbot, db, tmp_path):
    from cpt_studio.core.testing.compare_runs import write_compare_run
    from cpt_studio.gui.compare import CompareWindow

    ids = [store.index_run(db, write_compare_run(tmp_path / f"run-{i}", "med", replay, 2e-5, REPLAY_15))
           for i, replay in enumerate((0.05, 0.15))]
    window = CompareWindow(db, ids)
    qtbot.addWidget(window)
    assert window.windowTitle() == "CPT Studio — compare med, med (2)"
    runs = [window.table.item(r, 0).text() for r in range(window.table.rowCount())]
    assert runs == ["med\nreplay 5%"] * 3 + ["med (2)\nreplay 15%"] * 3
    legend = [label.text for _, label in window.scatter.legend.items]
    assert [text.split("<br>")[0] for text in legend][:2] == ["med", "med (2)"]
    window.resize(1250, 850)
    window.show()
    window.grab().save("/tmp/shots-history/compare-labels.png")


def test_a_note_says_when_runs_have_different_corpora_or_baselines(qtbot, db, tmp_path):
    from cpt_studio.core.compare import comparison_notes
    from cpt_studio.core.testing.compare_runs import write_compare_run
    from cpt_studio.gui.compare import CompareWindow

    def run(name, domain, general_baseline=20.0):
        folder = write_compare_run(tmp_path / name, name, 0.05, 2e-5, REPLAY_15, general_baseline=general_baseline,
                                   sections={"corpus": {"domain": [{"path": domain}]}})
        return store.index_run(db, folder)

    same = [run("a", "med.jsonl"), run("b", "med.jsonl")]
    assert comparison_notes(db, same) == []
    other_corpus = run("c", "law.jsonl", general_baseline=31.0)
    notes = comparison_notes(db, [same[0], other_corpus])
    assert notes[0].startswith("Different domain corpora (a: med.jsonl; c: law.jsonl)")
    assert notes[1].startswith("Different baselines: the step-0 general perplexity is a: 20; c: 31")
    window = CompareWindow(db, [same[0], other_corpus])
    qtbot.addWidget(window)
    assert not window.notes.isHidden() and "Different domain corpora" in window.notes.text()
    window.resize(1250, 850)
    window.show()
    window.grab().save("/tmp/shots-history/compare-notes.png")
    assert CompareWindow(db, same).notes.isHidden()
    sft = store.index_run(db, write_compare_run(  # an SFT run's domain is its instruction data
        tmp_path / "sft", "sft", 0.05, 2e-5, REPLAY_15, general_baseline=20.0,
        sections={"stage": "sft", "corpus": {"domain": []}, "sft": {"data": ["qa.jsonl"]}}))
    assert comparison_notes(db, [same[0], sft])[0].startswith(
        "Different domain corpora (a: med.jsonl; sft: instruction data qa.jsonl)")


def test_no_checkpoint_within_the_forgetting_target_is_said(qtbot, db, tmp_path):
    from cpt_studio.core.compare import outside_target
    from cpt_studio.core.testing.compare_runs import write_compare_run
    from cpt_studio.gui.compare import CompareWindow

    strict = store.index_run(db, write_compare_run(
        tmp_path / "strict", "strict", 0.0, 2e-5, REPLAY_0,
        sections={"checkpoints": {"recommend_max_forgetting": 0.005}}))
    sentence = ("no checkpoint within the forgetting target (0.5%): the least forgetting is 1.00% "
                "(step 10)")
    assert outside_target(store.get_run(db, strict)["config"], store.run_checkpoints(db, strict)).startswith(sentence)
    fine = store.index_run(db, write_compare_run(tmp_path / "fine", "fine", 0.15, 2e-5, REPLAY_15))
    assert outside_target(store.get_run(db, fine)["config"], store.run_checkpoints(db, fine)) is None
    window = CompareWindow(db, [strict, fine])
    qtbot.addWidget(window)
    text = window.reasons.text()
    assert f"<b>strict: </b>⚠ {sentence}" in text and "<b>fine: recommended</b>" in text
    assert "strict: recommended" not in text
    window.resize(1250, 850)
    window.show()
    window.grab().save("/tmp/shots-history/compare-outside-target.png")


def test_settings_a_run_does_not_use_are_not_differences():
    """Two full-parameter runs whose (unused) LoRA ranks differ, one with EWC off at another
    (unused) strength: neither is listed as a difference; the LoRA rank of a LoRA run against a
    full run is (and reads 'unused' on the full one's side)."""
    full = {"method": {"kind": "full", "lora_rank": 64, "target_modules": ["q_proj"]},
            "ewc": {"enabled": False, "strength": 100.0}}
    other = {"method": {"kind": "full", "lora_rank": 16, "target_modules": ["v_proj"]},
             "ewc": {"enabled": False, "strength": 5.0}}
    assert config_differences({"a": full, "b": other}, differences_only=True) == []
    lora = {"method": {"kind": "lora", "lora_rank": 16, "target_modules": ["v_proj"]},
            "ewc": {"enabled": True, "strength": 5.0}}
    differing = dict(config_differences({"a": full, "c": lora}, differences_only=True))
    assert differing["method.lora_rank"] == {"a": "unused", "c": 16}
    assert differing["ewc.strength"] == {"a": "unused", "c": 5.0} and "ewc.enabled" in differing


# -- the scatter's layout: legend, title, labels, the window's size ------------------------------

def _scatter(qtbot, rows, width: int, height: int):
    from cpt_studio.gui.compare_scatter import GainForgettingScatter

    scatter = GainForgettingScatter(rows)
    qtbot.addWidget(scatter)
    scatter.resize(width, height)
    scatter.show()
    qtbot.waitExposed(scatter)
    return scatter


def _point_boxes(scatter) -> list:
    """Each drawn point's box in scene pixels (its symbol's size around its centre)."""
    from PySide6.QtCore import QPointF, QRectF

    vb, boxes = scatter.getPlotItem().vb, []
    items = [*scatter.points.values(), *(curve[1] for curve in scatter.curves.values())]
    for item in items:
        for x, y, size in zip(item.data["x"], item.data["y"], item.data["size"], strict=True):
            size = size if size > 0 else item.opts["size"]
            centre = vb.mapViewToScene(QPointF(x, y))
            boxes.append(QRectF(centre.x() - size / 2, centre.y() - size / 2, size, size))
    return boxes


@pytest.mark.parametrize("width, height", [(390, 390), (560, 420)])
def test_the_scatters_legend_sits_right_of_the_plot_and_its_title_is_whole(window, qtbot, width, height):
    """A tester's scatter at ~390 px: the legend covered points and the one-line title was cut."""
    scatter = _scatter(qtbot, window.rows, width, height)
    plot = scatter.getPlotItem()
    view, legend = plot.vb.sceneBoundingRect(), scatter.legend.sceneBoundingRect()
    assert len(scatter.legend.items) == 4  # two runs, the recommended star, the Pareto front
    assert legend.left() >= view.right() - 1 and legend.right() <= width  # beside the plot (1: its frame's pen), in the widget
    assert not any(legend.intersects(box) for box in _point_boxes(scatter))
    title = plot.titleLabel.sceneBoundingRect()
    assert "<br>" in plot.titleLabel.text and title.left() >= 0 and title.right() <= width
    assert view.right() <= width  # the plot itself is not pushed out of the widget


def test_interpolation_labels_sit_off_the_checkpoints_points(window, qtbot):
    """An α label drawn above right of its point covered the recommended star just there."""
    from cpt_studio.gui.compare_scatter import run_colour

    scatter = _scatter(qtbot, window.rows, 560, 420)
    positions = [(0, 0), (4.6, 1.3), (9.6, 1.85), (11.2, 3.9), (12, 5)]  # (9.6, 1.85): by the star at (10, 2)
    scatter.add_curve(("x", 30), positions, ["", "α=0.25", "α=0.5", "α=0.75", ""], ["tip"] * 5, run_colour(0))
    qtbot.wait(10)
    labels = scatter.curves[("x", 30)][2:]
    assert [label.toPlainText() for label in labels] == ["α=0.25", "α=0.5", "α=0.75"]
    points, view = _point_boxes(scatter), scatter.getPlotItem().vb.sceneBoundingRect()
    boxes = [label.mapRectToScene(label.boundingRect()) for label in labels]
    for label, box in zip(labels, boxes, strict=True):
        assert not [p for p in points if box.intersects(p)], label.toPlainText()
        assert view.contains(box), label.toPlainText()  # whole, not cut at the view's edge
    assert not boxes[0].intersects(boxes[1]) and not boxes[1].intersects(boxes[2])
    scatter.getPlotItem().vb.setXRange(0, 40)  # zoomed out: the points close up, placed again
    qtbot.wait(10)
    boxes = [label.mapRectToScene(label.boundingRect()) for label in labels]
    points = _point_boxes(scatter)
    assert sum(box.intersects(p) for box in boxes for p in points) <= 1  # crowded: the fewest possible


def test_the_window_fits_a_small_laptop_screen_and_remembers_its_size(qtbot, db, tmp_path):
    from PySide6.QtGui import QGuiApplication

    from cpt_studio.gui.compare import DEFAULT_SIZE, CompareWindow

    run_ids = two_runs(db, tmp_path / "runs")
    window = CompareWindow(db, run_ids)
    qtbot.addWidget(window)
    window.show()
    assert 1000 <= DEFAULT_SIZE[0] <= 1366 and 600 <= DEFAULT_SIZE[1] <= 768 - 60  # task bar, title bar
    assert QGuiApplication.primaryScreen().availableGeometry().contains(window.frameGeometry())  # a smaller one too
    window.resize(760, 560)  # Qt's restoreGeometry shrinks a window to the screen: offscreen's is 800 x 800
    window.close()
    again = CompareWindow(db, run_ids)
    qtbot.addWidget(again)
    again.show()
    assert again.size().toTuple() == (760, 560)


@pytest.mark.parametrize("first, last, side", [(400.0, 150.0, "right"), (20.0, 25.0, "left")])
def test_an_overlay_legend_sits_in_the_corner_its_curves_leave_free(qtbot, first, last, side):
    """General perplexity was assumed to rise (legend top left): in a tester's runs it fell, and the
    legend covered where every curve began."""
    import pyqtgraph as pg

    from cpt_studio.gui.overlay import place_legend

    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    widget.resize(500, 350)
    plot = widget.getPlotItem()
    plot.addLegend(offset=(10, 5) if side == "right" else (-10, 5))  # the other corner to start with
    curves = [plot.plot([0, 1, 2, 3], np.linspace(first, last, 4) * k, name=f"run {k}") for k in (1.0, 1.1)]
    widget.show()
    qtbot.waitExposed(widget)
    place_legend(plot, curves)
    qtbot.wait(20)
    legend, view = plot.legend.sceneBoundingRect(), plot.vb.sceneBoundingRect()
    assert (legend.center().x() > view.center().x()) == (side == "right")
