"""The schedule page's learning-rate preview: what decides the run's length decides the x-axis
and the title (epochs of the domain corpus or the instruction data; max steps; a token budget),
a long run is drawn at about a thousand points, the legend names only the curves drawn, and the
SFT wizard offers no new-token multiple."""

import numpy as np
import pytest

from cpt_studio.core.config import RunConfig
from cpt_studio.core.plan import lr_schedule
from cpt_studio.core.recipe import optimizer_steps, steps_from_settings
from cpt_studio.core.sft_run import SFT_SCHEDULE

# -- headless: the step count's one home and the schedule read at chosen steps ------------------


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant", "wsd"])
def test_the_schedule_read_at_chosen_steps_is_the_schedule_stepped_through(decay):
    config = RunConfig()
    config.schedule.decay, config.schedule.warmup_ratio = decay, 0.1
    every = lr_schedule(config, 57)
    assert lr_schedule(config, 57, at=[0, 5, 6, 30, 56]) == [every[i] for i in (0, 5, 6, 30, 56)]


def test_the_settings_decide_the_step_count_with_max_steps_or_a_token_budget_only():
    config = RunConfig()  # 4 x 8 sequences of 1024 tokens a step
    assert steps_from_settings(config) is None  # epochs: the data's rows decide
    config.schedule.token_budget = 1_000_000
    assert steps_from_settings(config) == 31 == optimizer_steps(config, 10**6, True)
    config.schedule.max_steps = 12
    assert steps_from_settings(config) == 12 == optimizer_steps(config, 10**6, True)


# -- the page, offscreen ------------------------------------------------------------------------

def cpt_config(**schedule) -> RunConfig:
    config = RunConfig()
    for key, value in schedule.items():
        setattr(config.schedule, key, value)
    return config


def sft_config(**schedule) -> RunConfig:
    """An SFT run's config as sft_config makes it (stage, no domain corpus, SFT_SCHEDULE)."""
    config = cpt_config(**SFT_SCHEDULE)
    config.stage, config.corpus.domain = "sft", []
    for key, value in schedule.items():
        setattr(config.schedule, key, value)
    return config


def schedule_page(qtbot, config, tmp_path, sft=False):
    """The wizard's schedule page; the test keeps the wizard (qtbot holds it weakly) through it."""
    from cpt_studio.gui.pages.schedule_page import SchedulePage
    from cpt_studio.gui.sft_wizard import SftWizard
    from cpt_studio.gui.wizard import RunWizard

    wizard = (SftWizard if sft else RunWizard)(config, runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    page = next(page for page in wizard.pages if isinstance(page, SchedulePage))
    page.kept_wizard = wizard
    return page


def chart(page) -> tuple[str, str, np.ndarray, np.ndarray]:
    """The chart's title, its x-axis label, and the peak rate's curve."""
    plot = page.plot.getPlotItem()
    x, y = page.curve.getData()
    return plot.titleLabel.text, plot.getAxis("bottom").labelText, x, y


@pytest.mark.parametrize("sft, data", [(False, "domain corpus"), (True, "instruction data")])
def test_epochs_put_the_x_axis_in_epochs_of_the_runs_data(qtbot, tmp_path, sft, data):
    config = (sft_config if sft else cpt_config)(epochs=2.5, warmup_ratio=0.1)
    page = schedule_page(qtbot, config, tmp_path, sft)
    title, label, x, y = chart(page)
    assert title == f"the run's length follows 2.5 epochs of the {data}"
    assert label == f"epochs of the {data}"
    assert x[-1] == pytest.approx(2.5) and 0 < x[0] < 0.01  # the first step ends early in the first epoch
    assert page.warmup_region.getRegion() == pytest.approx((0, 0.25))  # 10% of 2.5 epochs
    assert y.max() == pytest.approx(config.schedule.peak_lr)


def test_max_steps_or_a_token_budget_name_the_step_count(qtbot, tmp_path):
    page = schedule_page(qtbot, cpt_config(max_steps=300), tmp_path)
    title, label, x, _ = chart(page)
    assert title == "learning rate over the run's 300 optimizer steps (max steps)" and label == "optimizer step"
    assert list(x) == list(range(1, 301))
    assert not page.epochs.isEnabled()

    page = schedule_page(qtbot, cpt_config(token_budget=5_000_000), tmp_path)
    title, label, x, _ = chart(page)
    steps = steps_from_settings(page.config)  # 5,000,000 / (32 x 1024) = 153 steps
    assert title == f"learning rate over the token budget: 5,000,000 tokens = {steps:,} optimizer steps"
    assert x[-1] == steps == 153 and label == "optimizer step"
    assert not page.epochs.isEnabled()  # the budget decides, not the epochs shown
    assert page.steps.specialValueText() == "from the token budget"


def test_a_long_run_is_drawn_at_about_a_thousand_points_with_its_warmup_corner(qtbot, tmp_path):
    """At every step, a 100,000-step run took about 2 s per edit (2 cores)."""
    config = cpt_config(max_steps=100_000, warmup_ratio=0.013)
    page = schedule_page(qtbot, config, tmp_path)
    page.warmup.setValue(1.7)  # an edit draws again
    _, _, x, y = chart(page)
    assert 900 <= len(x) <= 1001 and x[0] == 1 and x[-1] == 100_000
    assert np.all(np.diff(x) > 0)
    assert y[-1] == pytest.approx(lr_schedule(page.config, 100_000, [99_999])[0])
    assert y.max() == pytest.approx(page.config.schedule.peak_lr)  # the peak at the warmup's end is a point


@pytest.mark.parametrize("scales, named", [
    ({}, []),  # one curve: no legend at all
    ({"embedding_lr_scale": 0.1}, ["other weights", "embeddings"]),
])
def test_the_legend_names_only_the_curves_drawn(qtbot, tmp_path, scales, named):
    page = schedule_page(qtbot, cpt_config(max_steps=50, **scales), tmp_path)
    assert [label.text for _, label in page.legend.items] == named
    assert page.legend.isVisible() is bool(named)
    drawn = [name for name, curve in page.group_curves.items() if curve.getData()[0] is not None and len(curve.getData()[0])]
    assert drawn == named[1:]
    page.embedding_scale.setValue(1)  # back to the peak: its curve and its name go
    assert [label.text for _, label in page.legend.items] == []


def test_the_sft_wizard_offers_and_keeps_no_new_token_multiple(qtbot, tmp_path):
    config = sft_config(new_token_lr_scale=10.0, embedding_lr_scale=0.1)  # as a loaded CPT setup could
    page = schedule_page(qtbot, config, tmp_path, sft=True)
    wizard = page.kept_wizard
    wizard.show()
    qtbot.waitExposed(wizard)
    assert config.schedule.new_token_lr_scale is None
    assert not page.new_token_scale.isVisibleTo(page) and page.embedding_scale.isVisibleTo(page)
    assert "New token rows" not in page.group_help.text()
    loaded = sft_config(new_token_lr_scale=5.0)
    wizard.set_config(loaded)
    assert loaded.schedule.new_token_lr_scale is None
    page.new_token_scale.setValue(7)  # even a value in the hidden box is not stored
    assert wizard.config.schedule.new_token_lr_scale is None
    assert "new token rows" not in [label.text for _, label in page.legend.items]
