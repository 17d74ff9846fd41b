"""Validation of corpus sources: every bad record named by file and line, nothing crashes."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpt_studio.core.corpus import CorpusError, Document, SourceSpec, read_source, validate


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def problems_of(*specs):
    return [(p.file.rsplit("/", 1)[-1], p.line, p.message) for p in validate(list(specs)).problems]


def test_every_jsonl_problem_is_reported_at_once_with_its_line(tmp_path):
    path = write_jsonl(tmp_path / "domain.jsonl", [
        {"text": "a good document"},
        '{"text": "unterminated',
        {"body": "the text is elsewhere", "id": 3},
        {"text": 42},
        {"text": None},
        {"text": "   \n "},
        "[1, 2, 3]",
        {"text": "another good one"},
    ])
    found = problems_of(SourceSpec(str(path)))
    assert [(f, line) for f, line, _ in found] == [("domain.jsonl", n) for n in (2, 3, 4, 5, 6, 7)]
    messages = [m for _, _, m in found]
    assert messages[0] == "invalid JSON (Unterminated string starting at column 10)"  # where it is, not "column 1"
    assert "no field 'text' (fields: body, id)" in messages[1] and "--text-field body" in messages[1]
    assert "is int, not a string" in messages[2]
    assert "is null, not a string" in messages[3]
    assert "empty document" in messages[4]
    assert "JSON list, not an object" in messages[5]
    assert validate([SourceSpec(str(path))]).documents == 2


def test_undecodable_bytes_name_line_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    [(name, line, message)] = problems_of(SourceSpec(str(path)))
    assert line == 2 and "byte offset 30 (0xe9)" in message and "UTF-8" in message

    txt = tmp_path / "notes.txt"
    txt.write_bytes(b"first line\nsecond line\nbad \xff here\n")
    [(name, line, message)] = problems_of(SourceSpec(str(txt)))
    assert (name, line) == ("notes.txt", 3) and "byte offset 27 (0xff)" in message


@pytest.mark.parametrize("name, content, expected", [
    ("data.jsonl.gz", b'{"text": "not compressed"}\n', "is named .gz but is not gzip"),
    ("data.jsonl", gzip.compress(b'{"text": "x"}\n'), "rename it to data.jsonl.gz"),
    ("data.parquet", b'{"text": "x"}\n', "is not a Parquet file"),
    ("data.txt", b"PAR1\x00\x00binary", "is a Parquet file"),
    ("data.csv", b"text\nhello\n", "is not a corpus file"),
])
def test_a_file_that_is_not_what_its_name_says(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    [(_, line, message)] = problems_of(SourceSpec(str(tmp_path / name)))
    assert expected in message and line is None


def test_missing_path_and_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    found = problems_of(SourceSpec(str(tmp_path / "nope.jsonl")), SourceSpec(str(tmp_path / "empty")))
    assert "does not exist" in found[0][2]
    assert "holds no corpus files" in found[1][2]


def test_gzip_parquet_and_folders_are_read_in_order(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(b'{"text": "from gzip"}\n'))
    pq.write_table(pa.table({"content": ["row one", "row two"]}), folder / "b.parquet")
    (folder / "sub" / "c.txt").write_text("a whole file\nis one document\n")
    (folder / ".hidden.jsonl").write_text('{"text": "never read"}\n')
    (folder / "README.md").write_text("not a corpus file, ignored in a folder")
    (folder / "dataset_info.json").write_text('{"features": {}}')  # metadata: a .json is read only when named
    docs = list(read_source(SourceSpec(str(folder), text_field="content")))
    # the parquet column is 'content' but the gzip jsonl uses 'text': one problem, named
    assert [type(d).__name__ for d in docs] == ["Problem", "Document", "Document", "Document"]
    assert "no field 'content'" in docs[0].message
    assert [d.text for d in docs[1:]] == ["row one", "row two", "a whole file\nis one document\n"]
    assert (docs[2].line, docs[2].file.endswith("b.parquet")) == (2, True)


def test_parquet_problems_name_the_row_or_column(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["ok", None, ""], "n": [1, 2, 3]}), path)
    found = validate([SourceSpec(str(path))]).problems
    assert [(p.unit, p.line) for p in found] == [("row", 2), ("row", 3)]
    assert str(found[0]).endswith("t.parquet row 2: field 'text' is null, not a string")
    [bad] = validate([SourceSpec(str(path), text_field="n")]).problems
    assert "column 'n' holds int64, not text" in bad.message
    [bad] = validate([SourceSpec(str(path), text_field="body")]).problems
    assert "no column 'body' (columns: text, n)" in bad.message


def test_text_blocks_start_at_their_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first block\nstill first\n\n\n   \nsecond block\n\nthird\n")
    docs = list(read_source(SourceSpec(str(path), txt_mode="blocks")))
    assert [(d.text, d.line) for d in docs] == [
        ("first block\nstill first", 1), ("second block", 6), ("third", 8)]
    assert all(isinstance(d, Document) for d in docs)


def test_empty_text_file_and_truncated_gzip(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n")
    data = gzip.compress(b'{"text": "a long enough document"}\n' * 200)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    found = problems_of(SourceSpec(str(tmp_path / "empty.txt")), SourceSpec(str(tmp_path / "cut.jsonl.gz")))
    assert "empty document" in found[0][2]
    assert "damaged" in found[1][2]


def test_corpus_error_lists_every_problem_and_the_way_out(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["{", "{", {"text": "ok"}])
    error = CorpusError(validate([SourceSpec(str(path))]).problems)
    assert "2 problem(s)" in str(error) and "d.jsonl line 1" in str(error) and "d.jsonl line 2" in str(error)
    assert "--skip-bad" in str(error)


def test_a_json_array_corpus_is_read_and_a_json_document_named_jsonl_is_told_what_it_is(tmp_path):
    """A corpus exported as one JSON array (.json, .json.gz) reads with each record's line; the
    same array, indented, in a .jsonl file gave an 'invalid JSON' for every line."""
    records = [{"text": "Tacrolimus binds FKBP12."}, {"text": ""}, {"text": "Cyclosporin binds cyclophilin."}]
    (tmp_path / "corpus.json.gz").write_bytes(gzip.compress(json.dumps(records, indent=2).encode()))
    docs = list(read_source(SourceSpec(str(tmp_path / "corpus.json.gz"))))
    assert [(type(d).__name__, d.line) for d in docs] == [("Document", 2), ("Problem", 5), ("Document", 8)]
    assert docs[1].message.startswith("empty document")
    (tmp_path / "corpus.jsonl").write_text(json.dumps(records, indent=2))
    [problem] = validate([SourceSpec(str(tmp_path / "corpus.jsonl"))]).problems
    assert problem.line is None and "one JSON document over many lines" in problem.message
    assert "name it .json" in str(CorpusError([problem])) and "--skip-bad" not in str(CorpusError([problem]))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "corpus.json").write_text(json.dumps(records))
    [(_, _, message)] = problems_of(SourceSpec(str(tmp_path / "folder")))  # it listed .json among its kinds
    assert ".jsonl, .ndjson, .txt, .parquet" in message and "a .json array is read when named as a file" in message


def test_a_relative_path_that_is_not_found_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """A config's relative paths are read from the folder the command runs in, not the config's."""
    monkeypatch.chdir(tmp_path)
    [(_, _, message)] = problems_of(SourceSpec("corpus/domain.jsonl"))
    assert f"does not exist (looked for as {tmp_path / 'corpus' / 'domain.jsonl'}: a relative path is read " \
           "from the folder the command runs in)" in message
