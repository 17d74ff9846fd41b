"""Weight interpolation in the comparison view (gui/interpolation_panel.py): Interpolate… on a
tiny finished run draws the curve on the gain-vs-forgetting scatter, a saved curve is drawn on
opening, and a curve point's numbers and its export."""

import pytest

from cpt_studio.core import store
from cpt_studio.core.config import CheckpointConfig, EvalConfig, GuardConfig, ScheduleConfig
from cpt_studio.core.interpolate import InterpolationCurve
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.core.training import train
from cpt_studio.gui.compare import CompareWindow

STEP = 4


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    """4 quick steps, a checkpoint (and an evaluation) at steps 2 and 4."""
    root = tmp_path_factory.mktemp("interp-gui")
    config = tiny_run_config(tiny_model_dir, root / "data",
                             schedule=ScheduleConfig(peak_lr=5e-3, max_steps=STEP, warmup_ratio=0),
                             eval=EvalConfig(interval=2, heldout_count=4),
                             checkpoints=CheckpointConfig(interval=2, keep=2),
                             guard=GuardConfig(enabled=False))
    config.batch.grad_accum = 1
    run_dir = create_run(config, root / "runs")
    assert train(run_dir) == "finished"
    return run_dir


def _window(qtbot, run_dir):
    db = store.open_store(":memory:")
    window = CompareWindow(db, [store.index_run(db, run_dir)])
    qtbot.addWidget(window)
    return window


def _row(window, step: int) -> int:
    return next(i for i, row in enumerate(window.rows) if row["step"] == step)


def test_interpolate_draws_the_curve_from_the_base_to_the_checkpoint(qtbot, finished_run):
    window = _window(qtbot, finished_run)
    panel, scatter = window.interpolation, window.scatter
    assert not panel.button.isEnabled() and not scatter.curves  # nothing chosen, nothing saved
    window.table.select_checkpoint(_row(window, STEP))
    window._on_table_checkpoint_changed(_row(window, STEP))
    assert panel.button.isEnabled()

    reports = []
    job = panel.start("0, 0.5, 1")
    job.progressed.connect(lambda done, total, what: reports.append((done, total)))
    assert panel.progress.isVisibleTo(window) and not panel.button.isEnabled()
    with qtbot.waitSignal(panel.curve_drawn, timeout=60_000):
        pass
    assert reports[-1] == (3, 3) and (1, 3) in reports  # one step per α
    key = (str(finished_run), STEP)
    line, dots, *labels = scatter.curves[key]
    checkpoint = window.rows[_row(window, STEP)]
    xs, ys = line.getData()
    assert (xs[0], ys[0]) == pytest.approx((0, 0), abs=1e-3)  # α = 0: the base model
    assert (xs[-1], ys[-1]) == pytest.approx(scatter.position(checkpoint), rel=1e-3, abs=1e-3)  # α = 1
    assert [label.toPlainText() for label in labels] == ["α=0.5"]
    assert "domain gain" in dots.opts["tip"](xs[1], ys[1], 1)

    with qtbot.waitSignal(scatter.curve_point_selected):
        dots.sigClicked.emit(dots, [dots.points()[1]], None)
    assert panel.export_button.isEnabled() and panel.chosen == (finished_run, STEP, 0.5)
    assert "α = 0.5" in panel.info.text() and "forgetting" in panel.info.text()

    again = _window(qtbot, finished_run)  # the saved curve is drawn when the view opens
    assert InterpolationCurve.load(finished_run, STEP) is not None
    assert again.scatter.curves[key][0].getData()[0] == pytest.approx(xs)


def test_a_bad_alpha_list_is_refused_in_words(qtbot, finished_run):
    window = _window(qtbot, finished_run)
    window._on_table_checkpoint_changed(_row(window, STEP))
    assert window.interpolation.start("0, half") is None
    assert "give numbers separated by commas" in window.interpolation.info.text()
