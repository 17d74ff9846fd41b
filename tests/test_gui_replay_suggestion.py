"""The replay page measures the domain's distance from general text in the background when it
is shown, shows the measurements and the suggested ratio with its reason, and "Use N%" sets
the replay ratio."""

from cpt_studio.core.testing.corpus_files import write_distant_corpus
from cpt_studio.core.testing.run_helpers import tiny_run_config
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
