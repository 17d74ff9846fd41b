"""The held-out split and the assembled run data: held-out documents never reach training."""

import json

import numpy as np
import pytest

from cpt_studio.core.config import CorpusConfig, EvalConfig, ModelConfig, RunConfig
from cpt_studio.core.corpus import CorpusError, SourceSpec
from cpt_studio.core.data import prepare_run_data
from cpt_studio.core.heldout import load_heldout, split_heldout
from cpt_studio.core.packing import IGNORE_INDEX
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl


def test_split_is_seeded_sized_and_leaves_training_documents():
    a = split_heldout(200, fraction=0.1, seed=3)
    assert len(a) == 20 and np.array_equal(a, split_heldout(200, fraction=0.1, seed=3))
    assert not np.array_equal(a, split_heldout(200, fraction=0.1, seed=4))
    assert len(split_heldout(200, count=7)) == 7
    assert len(split_heldout(10, fraction=0.01)) == 1  # a tiny fraction still holds one out
    with pytest.raises(ValueError, match="at least one must be left for training"):
        split_heldout(5, count=5)


@pytest.fixture
def corpus_config(tmp_path):
    domain = make_documents(60, seed=5)
    general = make_documents(30, seed=6)
    write_jsonl(tmp_path / "domain.jsonl", domain)
    write_jsonl(tmp_path / "general.jsonl", general, field="body")
    config = CorpusConfig(domain=[SourceSpec(str(tmp_path / "domain.jsonl"))],
                          general=[SourceSpec(str(tmp_path / "general.jsonl"), text_field="body")],
                          replay_ratio=0.25)
    return config, domain, general


HELDOUT = EvalConfig(heldout_count=6)


def test_heldout_documents_are_saved_and_never_trained_on(tmp_path, corpus_config, tiny_tokenizer):
    config, domain, general = corpus_config
    data = prepare_run_data(config, HELDOUT, tiny_tokenizer, tmp_path / "run", seq_len=32, seed=1)
    saved = load_heldout(tmp_path / "run" / "heldout" / "domain.jsonl")
    assert [r["doc"] for r in saved] == data.domain.heldout.tolist() and len(saved) == 6
    assert all(r["text"] == domain[r["doc"]] for r in saved)
    assert all(r["ids"] == tiny_tokenizer(r["text"], add_special_tokens=False)["input_ids"] for r in saved)
    trained = torch_tokens(data.domain.train)
    expected = []
    for i, text in enumerate(domain):
        if i not in set(data.domain.heldout.tolist()):
            expected += tiny_tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    assert trained == expected
    assert len(load_heldout(tmp_path / "run" / "heldout" / "general.jsonl")) == 6


def torch_tokens(packed):
    out = []
    for i in range(len(packed)):
        labels = packed[i]["labels"]
        out += labels[labels != IGNORE_INDEX].tolist()
    return out


def test_mixed_steps_draw_general_rows_from_the_general_corpus(tmp_path, corpus_config, tiny_tokenizer):
    config, _, general = corpus_config
    data = prepare_run_data(config, HELDOUT, tiny_tokenizer, tmp_path / "run", seq_len=32)
    mixer = data.mixer(seqs_per_step=8)
    n_domain = len(data.domain.train)
    step = mixer.step(0)
    assert sum(i >= n_domain for i in step) == 2
    row = data.dataset[next(i for i in step if i >= n_domain)]
    assert row["input_ids"].tolist() == data.general.train[next(i for i in step if i >= n_domain) - n_domain]["input_ids"].tolist()


def test_bad_corpus_refuses_before_tokenizing(tmp_path, tiny_tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 3}\n')
    config = CorpusConfig(domain=[SourceSpec(str(path))], replay_ratio=0)
    with pytest.raises(CorpusError, match="bad.jsonl line 2"):
        prepare_run_data(config, HELDOUT, tiny_tokenizer, tmp_path / "run", seq_len=16)
    assert not (tmp_path / "cpt-home" / "token-cache").exists() or not any((tmp_path / "cpt-home" / "token-cache").iterdir())


def test_config_round_trips_and_lists_every_problem(tmp_path, corpus_config):
    config = RunConfig(model=ModelConfig("some/model"), corpus=corpus_config[0])
    again = RunConfig.from_json(config.to_json())
    assert again == config and isinstance(again.corpus.domain[0], SourceSpec)
    broken = RunConfig(corpus=CorpusConfig(domain=[], general=[], replay_ratio=1.2),
                       eval=EvalConfig(heldout_fraction=0))
    problems = broken.validate()
    assert any(p.startswith("model:") for p in problems)
    assert any("add at least one domain source" in p for p in problems)
    assert any("replay ratio 1.2" in p for p in problems)
    assert any(p.startswith("eval: held-out fraction 0") for p in problems)
    with pytest.raises(ValueError, match=r"config.corpus: unknown setting\(s\) replay"):
        RunConfig.from_dict({"corpus": {"replay": 0.1}})
    assert json.loads(config.to_json())["corpus"]["general"][0]["text_field"] == "body"
