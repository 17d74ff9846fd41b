"""The replay page measures the domain's distance from general text in the background when it
is shown, shows the measurements and the suggested ratio with its reason, and "Use N%" sets
the replay ratio; the schedule page's per-group learning rates, on the same walk through the
wizard."""

import pytest

from cpt_studio.core.testing.corpus_files import write_distant_corpus
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.gui.pages.summary_page import describe
from cpt_studio.gui.wizard import RunWizard


def test_the_replay_page_suggests_a_ratio_from_the_measured_distance(qtbot, tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "far")
    write_distant_corpus(tmp_path / "far")  # another alphabet: very far from the general text
    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    wizard.currentPage().path.setText(str(tiny_model_dir))
    wizard.next()
    corpus = wizard.currentPage()
    corpus.domain.add(config.corpus.domain[0].path)
    corpus.general.add(config.corpus.general[0].path)
    wizard.next()
    replay = wizard.currentPage()
    box = replay.suggestion
    assert box.job is not None and box.progress.isVisibleTo(replay)  # measuring in the background
    qtbot.waitUntil(lambda: box.use_button.isVisibleTo(replay), timeout=60_000)
    text = box.text.text()
    assert "Suggested replay ratio: 25%</b> (distance: very far)" in text
    assert "0% of the domain&#x27;s words occur in the general sample (very far)" in text
    assert box.use_button.text() == "Use 25%" and replay.replay.value() == 5
    box.use_button.click()
    assert replay.replay.value() == 25 and wizard.config.corpus.replay_ratio == 0.25
    assert replay.suggestion.measure() is None  # this setup is measured: not again on return
    wizard.next()
    assert wizard.config.corpus.replay_ratio == 0.25 and box.job is None

    schedule = wizard.currentPage()  # the embeddings and the new rows at their own multiples
    schedule.embedding_scale.setValue(0.1)
    schedule.new_token_scale.setValue(10)
    assert (wizard.config.schedule.embedding_lr_scale, wizard.config.schedule.new_token_lr_scale) == (0.1, 10)
    assert "embeddings and output layer x0.1" in schedule.group_rates.text()
    peak = schedule.curve.getData()[1]
    assert schedule.group_curves["embeddings"].getData()[1] == pytest.approx(0.1 * peak)
    assert schedule.group_curves["new token rows"].getData()[1] == pytest.approx(10 * peak)
    wizard.next()
    tokenizer = wizard.currentPage()  # the new rows' multiple needs the extension
    assert not tokenizer.validatePage() and "new-token LR multiple" in tokenizer.problems.text()
    tokenizer.extend.setChecked(True)
    assert tokenizer.validatePage()
    assert ("Learning rate per group: peak 2e-05; embeddings and output layer x0.1 (2e-06); "
            "new token rows x10 (0.0002), scheduled alike") in describe(wizard.config)
