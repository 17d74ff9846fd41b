"""The held-out set is fixed for the life of a run: a resume evaluates the documents saved at
the start, and a resume on a corpus that changed since then refuses unless accepted."""

import numpy as np
import pytest

from cpt_studio.core.config import CorpusConfig, EvalConfig
from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.data import CorpusChangedError, changed_corpus, prepare_run_data
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl


def _prepare(tmp_path, tokenizer, heldout=None, **kwargs):
    heldout = heldout or EvalConfig(heldout_count=5)
    corpus = CorpusConfig(domain=[SourceSpec(str(tmp_path / "d.jsonl"))], replay_ratio=0)
    return prepare_run_data(corpus, heldout, tokenizer, tmp_path / "run", seq_len=32, **kwargs)


def test_a_resume_keeps_the_saved_heldout_documents(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "d.jsonl", make_documents(40, seed=1))
    first = _prepare(tmp_path, tiny_tokenizer)
    again = _prepare(tmp_path, tiny_tokenizer, heldout=EvalConfig(heldout_count=9), seed=7)  # a new draw would differ
    assert again.domain.heldout.tolist() == first.domain.heldout.tolist()
    assert again.domain.train.doc_ids.tolist() == first.domain.train.doc_ids.tolist()
    assert changed_corpus(tmp_path / "run", CorpusConfig(domain=[SourceSpec(str(tmp_path / "d.jsonl"))])) is None


def test_a_changed_corpus_is_refused_then_accepted_with_the_same_heldout_texts(tmp_path, tiny_tokenizer):
    texts = make_documents(40, seed=1)
    write_jsonl(tmp_path / "d.jsonl", texts)
    first = _prepare(tmp_path, tiny_tokenizer)
    held = [r["text"] for r in first.domain.saved.records]
    changed = make_documents(10, seed=9) + texts  # new documents before the old: every number shifts
    write_jsonl(tmp_path / "d.jsonl", changed)
    with pytest.raises(CorpusChangedError, match=r"the corpus changed since this run started \(domain: .*d.jsonl\)"
                                                 r".*--accept-changed-corpus"):
        _prepare(tmp_path, tiny_tokenizer)
    resumed = _prepare(tmp_path, tiny_tokenizer, accept_changed_corpus=True)
    assert [r["text"] for r in resumed.domain.saved.records] == held
    trained = {changed[i] for i in resumed.domain.train.doc_ids}
    assert not trained & set(held) and len(trained) == len(set(changed) - set(held))
    assert np.array_equal(resumed.domain.saved.doc(0), first.domain.saved.doc(0))
