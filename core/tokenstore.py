"""The token store: a corpus tokenized once into memory-mapped token ids plus a document index.

    store = prepare(sources, tokenizer)       # tokenizes, or finds the cached store
    store.doc(17)                              # token ids of document 17 (numpy view)
    store.cache_hit                            # True when nothing was tokenized

A store lives in the token cache under a key made of the corpus content (a hash of every
file's bytes), the tokenizer (a hash of its serialised form) and the reading settings, so a
second run on the same corpus tokenizes nothing. It is written to a temporary folder and
renamed into place: a store folder that exists is complete.

Files in a store folder:
  tokens.bin   token ids, uint16 when the vocabulary fits, else uint32, no separators
  index.npz    offsets[n_docs + 1] into tokens.bin, and per document: characters, words,
               file number and line (for "file:line" in previews and errors)
  meta.json    counts, dtype, tokenizer and corpus fingerprints, file list, skipped records
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import psutil

from .corpus import CorpusError, Document, Problem, SourceSpec, read_sources, source_files
from .disk import disk_full_as_error, estimated_token_store_bytes, require_free_space
from .events import ProgressCallback
from .paths import token_cache_dir

FORMAT_VERSION = 1
BATCH_CHARACTERS = 1 << 20
"""Text handed to the tokenizer at once: large enough for its thread pool to stay busy,
small enough that reading the next batch overlaps with encoding this one."""


@dataclass
class TokenStore:
    path: Path
    meta: dict
    tokens: np.ndarray
    offsets: np.ndarray
    doc_chars: np.ndarray
    doc_words: np.ndarray
    doc_file: np.ndarray
    doc_line: np.ndarray
    cache_hit: bool = False
    skipped: list[Problem] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, cache_hit: bool = True) -> TokenStore:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        index = np.load(path / "index.npz")
        n_tokens = meta["tokens"]
        tokens = (np.memmap(path / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(n_tokens,))
                  if n_tokens else np.zeros(0, dtype=meta["dtype"]))
        skipped = [Problem(**p) for p in meta.get("skipped", [])]
        return cls(path, meta, tokens, index["offsets"], index["chars"], index["words"],
                   index["doc_file"], index["doc_line"], cache_hit, skipped)

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def origin(self, i: int) -> str:
        return f"{self.meta['files'][self.doc_file[i]]}:{self.doc_line[i]}"


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the ids: the serialised fast tokenizer."""
    return hashlib.sha256(backend_tokenizer(tokenizer).to_str().encode()).hexdigest()


def corpus_fingerprint(specs: list[SourceSpec]) -> tuple[str, list[str]]:
    """A hash of the reading settings and every file's bytes; also the files, in order."""
    digest, files = hashlib.sha256(), []
    for spec in specs:
        digest.update(json.dumps(spec.to_json(), sort_keys=True).encode())
        paths, problems = source_files(spec)
        if problems:
            raise CorpusError(problems)
        for path in paths:
            with open(path, "rb") as f:
                digest.update(str(path).encode() + hashlib.file_digest(f, "sha256").digest())
            files.append(str(path))
    return digest.hexdigest(), files


def backend_tokenizer(tokenizer):
    """The `tokenizers.Tokenizer` under an HF fast tokenizer (or the object itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "encode_batch"):
        raise TypeError("a fast tokenizer is needed (PreTrainedTokenizerFast or tokenizers.Tokenizer)")
    return backend


def store_key(specs: list[SourceSpec], tokenizer, skip_bad: bool) -> str:
    content, _ = corpus_fingerprint(specs)
    settings = json.dumps({"format": FORMAT_VERSION, "skip_bad": skip_bad}, sort_keys=True)
    return hashlib.sha256(f"{content}|{tokenizer_fingerprint(tokenizer)}|{settings}".encode()).hexdigest()


def prepare(specs: list[SourceSpec], tokenizer, *, skip_bad: bool = False,
            cache_dir: Path | None = None, progress: ProgressCallback | None = None) -> TokenStore:
    """Tokenize the sources into a token store, or return the cached one.

    Bad records raise CorpusError listing every problem (nothing is cached), unless
    `skip_bad`: then they are left out and listed in `store.skipped`."""
    key = store_key(specs, tokenizer, skip_bad)
    final = Path(cache_dir or token_cache_dir()) / key[:32]
    if (final / "meta.json").exists():
        store = TokenStore.open(final, cache_hit=True)
        if progress:
            progress({"type": "status", "phase": "tokenizing", "documents": store.n_docs,
                      "tokens": store.n_tokens, "done": True, "cache_hit": True})
        return store
    _remove_abandoned(final.parent)
    fix = "free some space (or set CPT_STUDIO_HOME to a larger disk) and start again"
    sources = [path for spec in specs for path in source_files(spec)[0]]
    require_free_space(final.parent, estimated_token_store_bytes(sources), "the tokenized corpus", fix)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with disk_full_as_error(final.parent, "the tokenized corpus", fix):
            meta = _write_store(tmp, specs, tokenizer, skip_bad, progress)
            meta["key"] = key
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            _rename_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenStore.open(final, cache_hit=False)


def _remove_abandoned(cache: Path) -> None:
    """Half-written stores of processes that died (killed while tokenizing) take space forever
    unless someone removes them: those whose writer's pid is no longer alive."""
    for tmp in cache.glob("*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _rename_into_place(tmp: Path, final: Path) -> None:
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "meta.json").exists():  # not a concurrent twin that finished first
            raise


def _write_store(folder: Path, specs, tokenizer, skip_bad: bool, progress) -> dict:
    backend = backend_tokenizer(tokenizer)
    vocab = backend.get_vocab_size(with_added_tokens=True)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32
    files: dict[str, int] = {}
    columns: dict[str, list] = {"lengths": [], "chars": [], "words": [], "file": [], "line": []}
    problems: list[Problem] = []
    started, n_tokens = time.monotonic(), 0
    with open(folder / "tokens.bin", "wb") as out, ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in _batches(read_sources(specs), problems):
            for doc in batch:
                columns["file"].append(files.setdefault(doc.file, len(files)))
                columns["line"].append(doc.line)
                columns["chars"].append(len(doc.text))
                columns["words"].append(len(doc.text.split()))
            if problems and not skip_bad:
                continue  # keep reading to list every problem, but tokenize no more
            future = pool.submit(_encode, backend, [doc.text for doc in batch], dtype)
            if pending is not None:
                n_tokens += _write(out, pending.result(), columns["lengths"])
                _report(progress, len(columns["lengths"]), n_tokens, started)
            pending = future
        if pending is not None:
            n_tokens += _write(out, pending.result(), columns["lengths"])
    if problems and not skip_bad:
        raise CorpusError(problems)
    if not columns["lengths"]:
        where = ", ".join(spec.path for spec in specs)
        raise CorpusError([Problem(where, None, f"yields no documents ({len(problems)} bad record(s) "
                                                "left out); add documents or fix the records")],
                          skipped_hint=False)
    _report(progress, len(columns["lengths"]), n_tokens, started, done=True)
    return _save_index(folder, columns, files, problems, dtype, vocab, tokenizer)


def _batches(items: Iterator[Document | Problem], problems: list[Problem]) -> Iterator[list[Document]]:
    batch, size = [], 0
    for item in items:
        if isinstance(item, Problem):
            problems.append(item)
            continue
        batch.append(item)
        size += len(item.text)
        if size >= BATCH_CHARACTERS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encode(backend, texts: list[str], dtype) -> tuple[np.ndarray, list[int]]:
    """Runs in the encoding thread; the tokenizer releases the GIL and uses every core."""
    encodings = backend.encode_batch_fast(texts, add_special_tokens=False)
    lengths = [len(e) for e in encodings]
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=dtype, count=sum(lengths))
    return ids, lengths


def _write(out, encoded: tuple[np.ndarray, list[int]], lengths: list[int]) -> int:
    ids, batch_lengths = encoded
    out.write(ids.tobytes())
    lengths.extend(batch_lengths)
    return len(ids)


def _report(progress, docs: int, tokens: int, started: float, done: bool = False) -> None:
    if progress:
        elapsed = max(time.monotonic() - started, 1e-9)
        progress({"type": "status", "phase": "tokenizing", "documents": docs, "tokens": tokens,
                  "tokens_per_second": tokens / elapsed, "done": done})


def _save_index(folder: Path, columns, files, problems, dtype, vocab, tokenizer) -> dict:
    lengths = np.asarray(columns["lengths"], dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.savez(folder / "index.npz", offsets=offsets,
             chars=np.asarray(columns["chars"], dtype=np.int64),
             words=np.asarray(columns["words"], dtype=np.int64),
             doc_file=np.asarray(columns["file"], dtype=np.uint32),
             doc_line=np.asarray(columns["line"], dtype=np.uint32))
    return {
        "format": FORMAT_VERSION, "documents": len(lengths), "tokens": int(offsets[-1]),
        "dtype": np.dtype(dtype).name, "vocab_size": vocab, "files": list(files),
        "eos_token_id": getattr(tokenizer, "eos_token_id", None),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "skipped": [vars(p) for p in problems],
    }
