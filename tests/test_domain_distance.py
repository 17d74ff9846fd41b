"""The replay suggestion from the domain's distance (cpt_studio.core.domain_distance): the band
table, the farthest measurement deciding, and real measurements on the tiny model."""

import pytest

from cpt_studio.core.cli import main
from cpt_studio.core.domain_distance import (
    DISTANCE_BANDS,
    MEASURE_STAGES,
    DomainDistance,
    band_of,
    measure_distance,
    suggest_replay,
    vocabulary_overlap,
)
from cpt_studio.core.progress import Cancelled
from cpt_studio.core.testing.corpus_files import write_distant_corpus
from cpt_studio.core.testing.run_helpers import tiny_run_config


def _distance(ppl_ratio=1.0, fertility_ratio=1.0, overlap=1.0) -> DomainDistance:
    return DomainDistance(domain_ppl=10 * ppl_ratio, general_ppl=10, domain_fertility=1.3 * fertility_ratio,
                          general_fertility=1.3, overlap=overlap, domain_words=1000, general_words=1000)


@pytest.mark.parametrize("measure, value, band", [
    ("perplexity", 0.8, "near"), ("perplexity", 1.49, "near"), ("perplexity", 1.5, "medium"),
    ("perplexity", 3.0, "far"), ("perplexity", 12.0, "very far"),
    ("fertility", 1.1, "near"), ("fertility", 1.2, "medium"), ("fertility", 1.5, "far"),
    ("fertility", 2.0, "very far"),
    ("overlap", 0.95, "near"), ("overlap", 0.85, "near"), ("overlap", 0.75, "medium"),
    ("overlap", 0.6, "far"), ("overlap", 0.2, "very far"),
])
def test_each_measurement_falls_into_its_band(measure, value, band):
    assert band_of(measure, value).name == band


def test_the_bands_rise_with_distance():
    ratios = [b.replay_ratio for b in DISTANCE_BANDS]
    assert ratios == sorted(ratios) and ratios[0] == 0.05 and ratios[-1] == 0.25


def test_the_farthest_measurement_decides_and_the_reason_says_why():
    assert suggest_replay(_distance()).replay_ratio == 0.05
    suggestion = suggest_replay(_distance(ppl_ratio=1.2, fertility_ratio=1.5, overlap=0.9))
    assert (suggestion.replay_ratio, suggestion.band) == (0.15, "far")
    assert suggestion.bands == {"perplexity": "near", "fertility": "far", "overlap": "near"}
    assert "1.50x the tokens per word (far)" in suggestion.reason
    assert "fertility decides: replay 15%" in suggestion.reason


def test_overlap_counts_domain_words_found_in_general_text():
    assert vocabulary_overlap(["The dose, the dose."], ["the weather"]) == pytest.approx(0.5)
    assert vocabulary_overlap(["tacrolimus"], ["weather"]) == 0.0


def test_a_distant_corpus_gets_more_replay_than_a_near_one(tmp_path, tiny_model_dir, capsys):
    near = tiny_run_config(tiny_model_dir, tmp_path / "near")
    far = tiny_run_config(tiny_model_dir, tmp_path / "far")
    write_distant_corpus(tmp_path / "far")
    near_distance, far_distance = measure_distance(near), measure_distance(far)
    assert near_distance.overlap > 0.95 and far_distance.overlap == 0.0
    assert 0.5 < near_distance.perplexity_ratio < 2 and near_distance.domain_ppl > 1
    assert suggest_replay(far_distance).replay_ratio > suggest_replay(near_distance).replay_ratio

    path = tmp_path / "far.json"
    path.write_text(far.to_json())
    assert main(["suggest-replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "suggested replay ratio: 25% (very far)" in out
    assert "set corpus.replay_ratio to 0.25" in out


def test_without_a_general_corpus_it_says_what_to_add(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.corpus.general, config.corpus.replay_ratio = [], 0.0
    with pytest.raises(ValueError, match="add a general"):
        measure_distance(config)


def test_a_cancel_stops_the_measurement_within_a_perplexity(tmp_path, tiny_model_dir):
    """The wizard's measurement reports each stage and each batch; a Cancelled raised by the
    first batch stops it there, before the general sample is read."""
    heard = []

    def progress(done, total, what):
        heard.append((done, total, what))
        if what.endswith("sequences"):
            raise Cancelled("stopped by the user")

    with pytest.raises(Cancelled):
        measure_distance(tiny_run_config(tiny_model_dir, tmp_path / "data"), progress=progress)
    assert [what for _, _, what in heard[:3]] == ["reading a sample of each corpus", "loading the base model",
                                                 "the base model's perplexity on the domain sample"]
    assert heard[-1][:2] == (2, MEASURE_STAGES) and " of " in heard[-1][2]
    assert not any("general sample" in what for _, _, what in heard)
