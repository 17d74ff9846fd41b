"""The held-out split: whole documents set aside for evaluation, never trained on.

The split is chosen by document (a fraction or a count, seeded) and saved in the run
folder as heldout/<name>.jsonl (the document's origin, its text and its token ids), so
every checkpoint of the run is evaluated on the same text, even if the corpus files change
later: a resume evaluates the saved documents (`SavedHeldout`), never a new draw. Training
packs only the remaining documents (`training_ids`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .corpus import Document, SourceSpec, read_sources
from .tokenstore import TokenStore


def heldout_count(n_docs: int, fraction: float | None = None, count: int | None = None,
                  unit: str = "documents") -> int:
    """How many documents to hold out; at least one is left for training (ValueError counting
    them in `unit` otherwise)."""
    if count is not None:
        wanted = count
    elif fraction is not None:
        if not 0 <= fraction < 1:
            raise ValueError(f"held-out fraction {fraction} must be at least 0 and below 1 (0.02 is 2%)")
        wanted = max(1, round(n_docs * fraction)) if fraction > 0 else 0
    else:
        wanted = 0
    if wanted < 0 or wanted >= n_docs:
        raise ValueError(f"cannot hold out {wanted} of {n_docs} {unit}: at least one must be left "
                         "for training")
    return wanted


def split_heldout(n_docs: int, fraction: float | None = None, count: int | None = None,
                  seed: int = 0, unit: str = "documents") -> np.ndarray:
    """Sorted ids of the held-out documents, the same for the same (n_docs, size, seed)."""
    wanted = heldout_count(n_docs, fraction, count, unit)
    rng = np.random.default_rng([seed, n_docs])
    return np.sort(rng.choice(n_docs, size=wanted, replace=False)).astype(np.int64)


def training_ids(n_docs: int, heldout: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(n_docs, dtype=np.int64), heldout)


def save_heldout(path: Path, store: TokenStore, specs: list[SourceSpec], heldout: np.ndarray) -> Path:
    """Write the held-out documents (origin, text, token ids) as JSON lines."""
    wanted = set(int(i) for i in heldout)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for i, doc in enumerate(documents(specs)):
            if i in wanted:
                record = {"doc": i, "origin": f"{doc.file}:{doc.line}", "text": doc.text,
                          "ids": store.doc(i).tolist()}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def documents(specs: list[SourceSpec]) -> Iterator[Document]:
    """The documents in store order (bad records skipped, as the store skipped them)."""
    return (item for item in read_sources(specs) if isinstance(item, Document))


def load_heldout(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class SavedHeldout:
    """The held-out documents as the run folder saved them, shaped like a token store for
    packing (`doc(i)`, `doc_lengths()`): a resume evaluates exactly what step 0 evaluated."""

    def __init__(self, records: list[dict]):
        self.records = records
        self.docs = [np.asarray(r["ids"], dtype=np.int64) for r in records]

    @classmethod
    def read(cls, path: Path) -> SavedHeldout:
        """Read heldout/<name>.jsonl, each document's ids turned into an array as it is read
        (a list of Python ints per token would take ten times the memory)."""
        records = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    record["ids"] = np.asarray(record["ids"], dtype=np.int64)
                    records.append(record)
        return cls(records)

    def __len__(self) -> int:
        return len(self.docs)

    def doc(self, i: int) -> np.ndarray:
        return self.docs[i]

    def doc_lengths(self) -> np.ndarray:
        return np.array([len(d) for d in self.docs], dtype=np.int64)

    def store_ids(self) -> np.ndarray:
        """Their document numbers in the corpus the run started on."""
        return np.array([r["doc"] for r in self.records], dtype=np.int64)

    def texts(self) -> set[str]:
        return {r["text"] for r in self.records}
