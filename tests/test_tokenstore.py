"""The token store: exact counts, a lossless round trip, and a cache hit the second time."""

import gzip
import json

import numpy as np
import pytest

from cpt_studio.core.corpus import CorpusError, SourceSpec
from cpt_studio.core.stats import corpus_stats
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.tokenstore import TokenStore, prepare


@pytest.fixture
def corpus(tmp_path):
    texts = make_documents(300, seed=1)
    write_jsonl(tmp_path / "a.jsonl", texts[:200])
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(
        "".join(json.dumps({"text": t}) + "\n" for t in texts[200:]).encode()))
    return [SourceSpec(str(tmp_path / "a.jsonl")), SourceSpec(str(tmp_path / "b.jsonl.gz"))], texts


def test_store_holds_every_token_of_every_document(corpus, tiny_tokenizer):
    specs, texts = corpus
    store = prepare(specs, tiny_tokenizer)
    direct = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert store.n_docs == len(texts)
    assert store.n_tokens == sum(len(ids) for ids in direct)
    for i in (0, 150, 299):
        assert store.doc(i).tolist() == direct[i]
        assert tiny_tokenizer.decode(store.doc(i)) == texts[i]
    assert store.tokens.dtype == np.uint16  # 384 tokens fit
    assert store.origin(0).endswith("a.jsonl:1") and store.origin(200).endswith("b.jsonl.gz:1")


def test_second_preparation_is_a_cache_hit_and_a_change_is_not(corpus, tiny_tokenizer, tmp_path):
    specs, _ = corpus
    first = prepare(specs, tiny_tokenizer)
    second = prepare(specs, tiny_tokenizer)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.path == first.path and np.array_equal(second.tokens, first.tokens)
    with open(specs[0].path, "a") as f:
        f.write(json.dumps({"text": "one more document"}) + "\n")
    third = prepare(specs, tiny_tokenizer)
    assert not third.cache_hit and third.n_docs == first.n_docs + 1


def test_stats_equal_a_direct_count(corpus, tiny_tokenizer):
    specs, texts = corpus
    stats = corpus_stats(specs, tiny_tokenizer, preview=2)
    tokens = [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    words = sum(len(t.split()) for t in texts)
    assert (stats.documents, stats.tokens, stats.words) == (300, sum(tokens), words)
    assert stats.characters == sum(len(t) for t in texts)
    assert stats.fertility == pytest.approx(sum(tokens) / words)
    assert stats.longest.tokens == max(tokens) and stats.shortest.tokens == min(tokens)
    assert [d.text for d in stats.preview] == texts[:2]


def test_bad_records_refuse_or_are_skipped_and_counted(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "good"}\n{"txt": "bad"}\n{"text": "also good"}\n')
    with pytest.raises(CorpusError) as error:
        prepare([SourceSpec(str(path))], tiny_tokenizer)
    assert "d.jsonl line 2" in str(error.value)
    assert not any(p.name.endswith(".tmp") or "tmp-" in p.name for p in (tmp_path / "cpt-home" / "token-cache").iterdir())
    store = prepare([SourceSpec(str(path))], tiny_tokenizer, skip_bad=True)
    assert store.n_docs == 2 and [p.line for p in store.skipped] == [2]
    assert TokenStore.open(store.path).skipped[0].line == 2


def test_progress_is_reported(corpus, tiny_tokenizer):
    events = []
    prepare(corpus[0], tiny_tokenizer, progress=events.append)
    assert events[-1]["done"] and events[-1]["documents"] == 300 and events[-1]["phase"] == "tokenizing"
