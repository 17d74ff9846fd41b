"""Corpus files as real tools write them: byte-order marks, Windows and old-Mac line ends,
half emoji from JSON escapes, Parquet text stored dictionary-encoded or as views, empty files."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpt_studio.core.corpus import CorpusError, Document, SourceSpec, read_source, validate
from cpt_studio.core.tokenstore import prepare

BOM = "\ufeff".encode()


def documents(spec):
    return [item for item in read_source(spec) if isinstance(item, Document)]


def _jsonl(path, texts):
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


def _parquet_bytes(tmp_path, texts):
    pq.write_table(pa.table({"text": texts}), tmp_path / "tmp.parquet")
    return (tmp_path / "tmp.parquet").read_bytes()


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.txt", "d.txt.gz"])
def test_a_byte_order_mark_is_accepted_and_removed(tmp_path, name, tiny_tokenizer):
    texts = ["first document here.", "second document here."]
    body = _jsonl(tmp_path, texts) if ".jsonl" in name else "\n\n".join(texts).encode()
    data = BOM + body
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    spec = SourceSpec(str(path), txt_mode="blocks")
    assert validate([spec]).ok
    assert [d.text for d in documents(spec)] == texts
    store = prepare([spec], tiny_tokenizer)
    assert store.doc(0).tolist() == tiny_tokenizer(texts[0], add_special_tokens=False)["input_ids"]


def test_a_text_value_that_starts_with_a_bom_loses_it_in_parquet(tmp_path):
    (tmp_path / "d.parquet").write_bytes(_parquet_bytes(tmp_path, ["\ufeffa document.", "another."]))
    assert [d.text for d in documents(SourceSpec(str(tmp_path / "d.parquet")))] == ["a document.", "another."]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_line_ends_are_normalised_before_blocks_are_cut(tmp_path, newline):
    text = "one\nstill one\n\ntwo starts on line 4\n\n\nthree on line 7\n"
    path = tmp_path / "d.txt"
    path.write_bytes(text.replace("\n", newline).encode())
    docs = documents(SourceSpec(str(path), txt_mode="blocks"))
    assert [(d.text, d.line) for d in docs] == [("one\nstill one", 1), ("two starts on line 4", 4),
                                                ("three on line 7", 7)]
    whole = documents(SourceSpec(str(path)))
    assert "\r" not in whole[0].text


def test_an_undecodable_byte_after_old_mac_line_ends_is_on_the_right_line(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(b"one\rtwo\rthr\xffee\r")
    (problem,) = validate([SourceSpec(str(path))]).problems
    assert problem.line == 3 and "not UTF-8" in problem.message


def test_a_lone_surrogate_is_a_located_problem_and_skippable(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine text."}\n{"text": "half an emoji \\ud83d here"}\n{"text": "more."}\n')
    (problem,) = validate([SourceSpec(str(path))]).problems
    assert (problem.line, "lone surrogate") == (2, "lone surrogate") and "\\ud83d" in problem.message
    assert "skip bad records" in problem.message
    with pytest.raises(CorpusError, match="d.jsonl line 2: .*lone surrogate"):
        prepare([SourceSpec(str(path))], tiny_tokenizer)
    store = prepare([SourceSpec(str(path))], tiny_tokenizer, skip_bad=True)
    assert store.n_docs == 2 and [p.line for p in store.skipped] == [2]


@pytest.mark.parametrize("column", [
    pa.array(["a b.", "c d.", "a b."]).dictionary_encode(),
    pa.array(["a b.", "c d.", "a b."], type=pa.large_string()),
    pa.array(["a b.", "c d.", "a b."], type=pa.string_view()),
])
def test_parquet_text_columns_of_every_string_kind_are_read_as_text(tmp_path, column):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": column}), path)
    spec = SourceSpec(str(path))
    assert validate([spec]).ok
    assert [d.text for d in documents(spec)] == ["a b.", "c d.", "a b."]


@pytest.mark.parametrize("name, content", [("empty.jsonl", b""), ("blank.jsonl", b"\n\n  \n"),
                                           ("empty.jsonl.gz", gzip.compress(b""))])
def test_a_source_with_no_documents_is_refused_with_its_name(tmp_path, name, content, tiny_tokenizer):
    path = tmp_path / name
    path.write_bytes(content)
    (problem,) = validate([SourceSpec(str(path))]).problems
    assert problem.file == str(path) and "holds no documents" in problem.message
    with pytest.raises(CorpusError, match=f"{name}: holds no documents"):
        prepare([SourceSpec(str(path))], tiny_tokenizer)


def test_a_corpus_whose_every_record_is_skipped_is_still_refused(tmp_path, tiny_tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"body": "x"}\n{"body": "y"}\n')
    with pytest.raises(CorpusError, match="bad.jsonl: yields no documents"):
        prepare([SourceSpec(str(path))], tiny_tokenizer, skip_bad=True)
