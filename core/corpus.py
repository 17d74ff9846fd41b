"""Corpus sources: reading JSONL, plain text and Parquet (each optionally gzipped, or
folders of them), validating every record, and counting what is there.

    sources = [SourceSpec("corpus/domain.jsonl", text_field="body")]
    report = validate(sources)          # every problem at once, with file and line
    for item in read_sources(sources):  # Documents, and Problems where records are bad
        ...

A record is identified by file and line (JSONL, text blocks) or row (Parquet), and every
Problem says which one and what to do about it. Files as editors write them are read as
meant: a UTF-8 byte-order mark is dropped (every format), Windows and old-Mac line ends in
plain text become "\n" before blocks are cut, and Parquet text columns may be dictionary-
encoded, large or view strings. Text that is not valid Unicode (a lone surrogate, half an
emoji, from a JSON escape) is a bad record, never an error in the tokenizer. Nothing here tokenizes: that is
cpt_studio.core.tokenstore, which reads through this module so both see the same documents.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .progress import Progress, tick

SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt", ".parquet")
"""The corpus file kinds by name; a .json file holds one array of records and is read when named
as a file, never picked up in a folder (folders hold dataset_info.json and other metadata)."""
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
TXT_MODES = ("file", "blocks")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
JSON_KINDS = ("jsonl", "json")
"""The file kinds whose records are JSON objects (jsonl_objects reads both)."""
BOM = "\ufeff"
VALIDATE_TICK = 1000
"""validate() reports its progress (and can be cancelled) every this many records."""


@dataclass
class SourceSpec:
    """One corpus source: a file or a folder of files, and how to read its records."""

    path: str
    """A .jsonl/.ndjson, .txt or .parquet file (each may end in .gz), or a folder of them; or a
    .json file holding one array of records (read when named, not in a folder)."""
    text_field: str = "text"
    """JSONL, JSON and Parquet: the field or column that holds the document text."""
    txt_mode: str = "file"
    """Plain text: 'file' (each file is one document) or 'blocks' (blank lines separate documents)."""

    @classmethod
    def from_json(cls, value: str | dict) -> SourceSpec:
        return cls(path=value) if isinstance(value, str) else cls(**value)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Document:
    text: str
    file: str
    line: int
    """1-based line where the record starts (JSONL, text), or 1-based row (Parquet)."""


@dataclass
class Problem:
    file: str
    line: int | None
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        where = f" {self.unit} {self.line}" if self.line is not None else ""
        return f"{self.file}{where}: {self.message}"


class CorpusError(Exception):
    """The corpus has problems; `problems` lists every one of them."""

    def __init__(self, problems: list[Problem], skipped_hint: bool = True, what: str = "the corpus"):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        records = any(p.line is not None for p in problems)  # skipping leaves out records, not files
        hint = ("\nFix these records, or choose to skip bad records (--skip-bad) "
                "and they will be left out and counted.") if skipped_hint and records else ""
        super().__init__(f"{len(problems)} problem(s) in {what}:\n{shown}{more}{hint}")


@dataclass
class ValidationReport:
    documents: int = 0
    characters: int = 0
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def source_files(spec: SourceSpec) -> tuple[list[Path], list[Problem]]:
    """The corpus files a source names, in a stable order, and problems with the source itself."""
    path = Path(spec.path).expanduser()
    if spec.txt_mode not in TXT_MODES:
        return [], [Problem(str(path), None, f"unknown text mode {spec.txt_mode!r}; use 'file' or 'blocks'")]
    if not path.exists():
        return [], [Problem(str(path), None, f"does not exist{relative_note(path)}; check the path")]
    if path.is_file():
        if file_kind(path) is None:
            return [], [Problem(str(path), None, f"is not a corpus file; use {_supported()}")]
        return [path], []
    files = sorted(p for p in path.rglob("*") if p.is_file() and file_kind(p) not in (None, "json") and not _hidden(p, path))
    if not files:
        return [], [Problem(str(path), None, f"folder holds no corpus files ({_supported(folder=True)}; a "
                                             ".json array is read when named as a file of its own)")]
    return files, []


def relative_note(path: Path) -> str:
    """For a relative path that was not found: where it was looked for (the current folder, not
    the config file's), else ""."""
    return "" if path.is_absolute() else f" (looked for as {Path.cwd() / path}: a relative path is read from the folder the command runs in)"


def _supported(folder: bool = False) -> str:
    kinds = [suffix for suffix in SUFFIXES if not (folder and suffix == ".json")]
    return ", ".join(kinds) + " (each optionally .gz)"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def file_kind(path: Path) -> str | None:
    """'jsonl', 'json', 'txt' or 'parquet' by name (a trailing .gz is looked through), else None."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return {".ndjson": "jsonl"}.get(suffix, suffix[1:])
    return None


def _open_bytes(path: Path) -> tuple[io.BufferedIOBase | None, Problem | None]:
    """Open a file for reading (decompressing .gz), after checking it is what its name says."""
    with open(path, "rb") as f:
        head = f.read(8)
    gz_named = path.name.lower().endswith(".gz")
    if gz_named and not head.startswith(GZIP_MAGIC):
        return None, Problem(str(path), None, "is named .gz but is not gzip-compressed; remove .gz from its name")
    if not gz_named and head.startswith(GZIP_MAGIC):
        return None, Problem(str(path), None, f"is gzip-compressed but not named .gz; rename it to {path.name}.gz")
    stream = gzip.open(path, "rb") if gz_named else open(path, "rb")
    if gz_named:
        try:
            head = stream.peek(8)[:8]
        except (OSError, EOFError) as exc:
            stream.close()
            return None, Problem(str(path), None, f"cannot be decompressed ({exc}); the file is damaged")
    kind = file_kind(path)
    if kind != "parquet" and head.startswith(PARQUET_MAGIC):
        stream.close()
        return None, Problem(str(path), None, "is a Parquet file; rename it to end in .parquet")
    if kind == "parquet" and not head.startswith(PARQUET_MAGIC):
        stream.close()
        return None, Problem(str(path), None, "is named .parquet but is not a Parquet file; check the file or rename it")
    return stream, None


def read_source(spec: SourceSpec) -> Iterator[Document | Problem]:
    """Every document of one source in order; a Problem in place of each bad record."""
    files, problems = source_files(spec)
    yield from problems
    found = False
    for path in files:
        stream, problem = _open_bytes(path)
        if problem:
            yield problem
            found = True
            continue
        with stream:
            try:
                reader = {"jsonl": _read_jsonl, "json": _read_jsonl, "txt": _read_txt,
                          "parquet": _read_parquet}[file_kind(path)]
                for item in reader(stream, str(path), spec):
                    found = True
                    yield item
            except (OSError, EOFError) as exc:  # truncated or corrupt gzip, unreadable file
                yield Problem(str(path), None, f"cannot be read to the end ({exc}); the file is damaged")
                found = True
    if files and not found:
        yield Problem(spec.path, None, "holds no documents (the file is empty or blank); add "
                                       "documents or remove this source")


def read_sources(specs: list[SourceSpec]) -> Iterator[Document | Problem]:
    for spec in specs:
        yield from read_source(spec)


def validate(specs: list[SourceSpec], progress: Progress | None = None) -> ValidationReport:
    """Read every record of every source and collect all problems (nothing is tokenized).
    `progress` hears files done of all files every VALIDATE_TICK records and at each new
    file (cpt_studio.core.progress: raising Cancelled there stops the check)."""
    report = ValidationReport()
    for spec in specs:
        report.files += [str(p) for p in source_files(spec)[0]]
    started: set[str] = set()
    for number, item in enumerate(read_sources(specs)):
        if progress is not None and (item.file not in started or number % VALIDATE_TICK == 0):
            started.add(item.file)
            done = min(len(started) - 1, len(report.files))
            tick(progress, done, len(report.files), f"{report.documents:,} documents read, "
                 f"file {min(done + 1, len(report.files))} of {len(report.files)}")
        if isinstance(item, Problem):
            report.problems.append(item)
        else:
            report.documents += 1
            report.characters += len(item.text)
    tick(progress, len(report.files), len(report.files), f"{report.documents:,} documents read")
    if not specs:
        report.problems.append(Problem("(no sources)", None, "add at least one corpus file or folder"))
    return report


def _undecodable(file: str, line: int, offset: int, byte: int) -> Problem:
    return Problem(file, line, f"undecodable bytes at byte offset {offset} (0x{byte:02x}): "
                               "the file is not UTF-8; re-save it as UTF-8")


def _read_jsonl(stream, file: str, spec: SourceSpec) -> Iterator[Document | Problem]:
    """The documents of a .jsonl file, or of a .json file's array."""
    for item in _objects(stream, file, f"an object with a '{spec.text_field}' field"):
        yield item if isinstance(item, Problem) else _jsonl_record(*item, file, spec.text_field)


def jsonl_objects(path: Path, wanted: str = "an object") -> Iterator[tuple[dict, int] | Problem]:
    """Each JSON object of a .jsonl file, or of a .json file's array (optionally .gz), with its
    1-based line (where it starts), read as a corpus file is read (a byte-order mark dropped,
    blank lines skipped); a Problem, with the file
    and line, for undecodable bytes, invalid JSON, a line that is not an object (`wanted` says
    what it should be), and for a file that cannot be opened or read to the end."""
    path = Path(path)
    if file_kind(path) not in JSON_KINDS:
        yield Problem(str(path), None, "is neither a JSON lines file (.jsonl: one object per line) nor a "
                                       ".json file of one array of objects (each optionally .gz)")
        return
    stream, problem = _open_bytes(path)
    if problem:
        yield problem
        return
    with stream:
        try:
            yield from _objects(stream, str(path), wanted)
        except (OSError, EOFError) as exc:
            yield Problem(str(path), None, f"cannot be read to the end ({exc}); the file is damaged")


def _objects(stream, file: str, wanted: str) -> Iterator[tuple[dict, int] | Problem]:
    """A .json file's array items, else a JSON lines file's objects, each with its line."""
    reader = _json_array_objects if file_kind(Path(file)) == "json" else _jsonl_objects
    return reader(stream, file, wanted)


def _json_array_objects(stream, file: str, wanted: str) -> Iterator[tuple[dict, int] | Problem]:
    """Each record of a .json file holding one array of them (Alpaca's instruction data, a
    dataset exported as JSON), with the line it starts on. Read item by item with the json
    module's raw_decode because json.load gives no positions: a bad record is named by its
    line, as in a .jsonl file. Reading stops at invalid JSON (what follows cannot be found)."""
    raw = stream.read()
    try:
        text = raw.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        yield _undecodable(file, raw.count(b"\n", 0, exc.start) + 1, exc.start, raw[exc.start])
        return
    at = _JSON_SPACE.match(text).end()
    if not text.startswith("[", at):
        yield Problem(file, None, "is not a JSON array of records ([{...}, {...}]); a file of one "
                                  "object per line is named .jsonl")
        return
    decoder, line, counted = json.JSONDecoder(), 1, 0
    at = _JSON_SPACE.match(text, at + 1).end()
    while not text.startswith("]", at):
        line, counted = line + text.count("\n", counted, at), at
        try:
            record, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            yield Problem(file, exc.lineno, f"invalid JSON ({exc.msg} at column {exc.colno}); the "
                                            "records after it cannot be read until it is fixed")
            return
        yield (record, line) if isinstance(record, dict) else Problem(
            file, line, f"a JSON {type(record).__name__}, not {wanted}")
        at = _JSON_SPACE.match(text, at).end()
        if text.startswith(",", at):
            at = _JSON_SPACE.match(text, at + 1).end()
        elif not text.startswith("]", at):
            yield Problem(file, text.count("\n", 0, at) + 1, "invalid JSON (a ',' or the array's ']' "
                                                              "must follow a record)")
            return


def _jsonl_objects(stream, file: str, wanted: str) -> Iterator[tuple[dict, int] | Problem]:
    offset, seen, opening = 0, 0, None  # opening: a first line "[" or "{", held until the next
    for number, raw in enumerate(stream, start=1):
        start, offset = offset, offset + len(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _undecodable(file, number, start + exc.start, raw[exc.start])
            continue
        if number == 1:
            line = line.removeprefix(BOM)
        if not line.strip():
            continue
        seen += 1
        if seen == 2 and opening is not None:
            if line[:1] in " \t":  # an indented JSON document: one problem, not one per line
                yield Problem(file, None, JSON_DOCUMENT)  # the whole file's: no skipping helps
                return
            yield opening
        try:
            record = json.loads(line.rstrip("\r\n"))  # with its newline, an error reads "column 1"
        except json.JSONDecodeError as exc:
            problem = Problem(file, number, f"invalid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})")
            if seen == 1 and line.strip() in ("[", "{"):
                opening = problem
            else:
                yield problem
            continue
        if not isinstance(record, dict):
            hint = "; the file is one JSON array: name it .json" if seen == 1 and isinstance(record, list) else ""
            yield Problem(file, number, f"a JSON {type(record).__name__}, not {wanted}{hint}")
            continue
        yield record, number
    if seen == 1 and opening is not None:
        yield opening


JSON_DOCUMENT = ("the file is one JSON document over many lines, not one object per line: name it .json "
                 "if it is an array of records ([{...}, ...]), or write each record on a line of its own")


def _jsonl_record(record: dict, number: int, file: str, text_field: str) -> Document | Problem:
    if text_field not in record:
        fields = ", ".join(sorted(record)) or "none"
        other = next((k for k in record if isinstance(record[k], str)), None)
        fix = f"set the text field in the corpus page or with --text-field {other}" if other else "add it"
        return Problem(file, number, f"no field '{text_field}' (fields: {fields}); {fix}")
    return _text_or_problem(record[text_field], file, number, text_field)


def _text_or_problem(text, file: str, number: int, text_field: str, unit: str = "line") -> Document | Problem:
    if not isinstance(text, str):
        kind = "null" if text is None else type(text).__name__
        return Problem(file, number, f"field '{text_field}' is {kind}, not a string", unit)
    text = text.removeprefix(BOM)
    if not text.strip():
        return Problem(file, number, "empty document; remove the record", unit)
    surrogate = _SURROGATE.search(text)
    if surrogate:
        return Problem(file, number, f"field '{text_field}' is not valid Unicode: a lone surrogate "
                                     f"(\\u{ord(surrogate.group()):04x}, half of an emoji or of a "
                                     f"character cut in two) at character {surrogate.start() + 1}; "
                                     "fix the record or skip bad records", unit)
    return Document(text, file, number)


def _read_txt(stream, file: str, spec: SourceSpec) -> Iterator[Document | Problem]:
    data = stream.read()
    try:
        text = data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        yield _undecodable(file, len(_LINE_BREAK.findall(data, 0, exc.start)) + 1, exc.start, data[exc.start])
        return
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # Windows and old-Mac line ends
    if "\x00" in text:
        yield Problem(file, text.count("\n", 0, text.index("\x00")) + 1,
                      "NUL characters: this is a binary or UTF-16 file, not UTF-8 text")
        return
    if spec.txt_mode == "file":
        yield Document(text, file, 1) if text.strip() else Problem(file, 1, "empty document; remove the file")
        return
    yield from _blocks(text, file)


def _blocks(text: str, file: str) -> Iterator[Document]:
    """Blank-line-separated blocks, each with the line it starts on."""
    position, line = 0, 1
    for match in [*_BLANK_LINES.finditer(text), None]:
        end = match.start() if match else len(text)
        block = text[position:end]
        if block.strip():
            leading = len(block) - len(block.lstrip("\n"))
            yield Document(block.strip("\n"), file, line + leading)
        if match:
            line += text.count("\n", position, match.end())
            position = match.end()


def _read_parquet(stream, file: str, spec: SourceSpec) -> Iterator[Document | Problem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(stream.read()))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        yield Problem(file, None, f"is not a readable Parquet file ({exc})")
        return
    names = parquet.schema_arrow.names
    if spec.text_field not in names:
        yield Problem(file, None, f"no column '{spec.text_field}' (columns: {', '.join(names)}); "
                                  "set the text field in the corpus page or with --text-field")
        return
    column_type = parquet.schema_arrow.field(spec.text_field).type
    if not _is_text_type(pa, column_type):
        yield Problem(file, None, f"column '{spec.text_field}' holds {column_type}, not text; "
                                  "choose the column that holds the documents")
        return
    row = 0
    for batch in parquet.iter_batches(columns=[spec.text_field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            row += 1
            yield _text_or_problem(value, file, row, spec.text_field, unit="row")


def _is_text_type(pa, column_type) -> bool:
    """String, large string or string view, plain or dictionary-encoded."""
    if pa.types.is_dictionary(column_type):
        column_type = column_type.value_type
    return (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
            or pa.types.is_string_view(column_type))
