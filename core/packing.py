"""Packing documents into training sequences of a fixed length, dropping no token.

The training documents (a token store minus its held-out documents) are laid end to end,
each followed by EOS, and cut into rows of `seq_len` tokens. The last row is completed
with padding whose labels are -100, so it adds nothing to the loss. Position ids restart
at 0 at every document start and at every row start: with no attention mask and the cache
off, transformers then keeps each document from attending to the others in the row
(shared/FACTS.md, packing).

Rows are cut lazily from the memory-mapped store, so packing costs no copy of the corpus.
"""

from __future__ import annotations

import numpy as np
import torch

from .tokenstore import TokenStore

IGNORE_INDEX = -100


class PackedSequences(torch.utils.data.Dataset):
    """Row i of the packed stream: input_ids, labels and position_ids, each of seq_len."""

    def __init__(self, store: TokenStore, doc_ids: np.ndarray, seq_len: int,
                 eos_id: int, pad_id: int | None = None):
        if seq_len < 2:
            raise ValueError(f"sequence length {seq_len} is too short; use at least 2 (typically 1024-4096)")
        self.store, self.seq_len, self.eos_id = store, seq_len, eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.doc_ids = np.asarray(doc_ids, dtype=np.int64)
        spans = store.doc_lengths()[self.doc_ids] + 1  # each document is followed by EOS
        self.starts = np.zeros(len(spans) + 1, dtype=np.int64)
        np.cumsum(spans, out=self.starts[1:])

    @property
    def total_tokens(self) -> int:
        """Tokens in the packed stream, EOS included, padding excluded."""
        return int(self.starts[-1])

    def __len__(self) -> int:
        return -(-self.total_tokens // self.seq_len)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        ids, positions = self._row(i * self.seq_len, min((i + 1) * self.seq_len, self.total_tokens))
        labels = ids.copy()
        if len(ids) < self.seq_len:  # the last row: pad, and keep the padding out of the loss
            pad = self.seq_len - len(ids)
            ids = np.concatenate([ids, np.full(pad, self.pad_id, dtype=np.int64)])
            labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int64)])
            positions = np.concatenate([positions, np.arange(pad, dtype=np.int64)])
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
                "position_ids": torch.from_numpy(positions)}

    def _row(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and position ids of stream positions [start, end)."""
        ids, positions = [], []
        d = int(np.searchsorted(self.starts, start, side="right")) - 1
        while d < len(self.doc_ids) and self.starts[d] < end:
            span = int(self.starts[d + 1] - self.starts[d])  # the document and its EOS
            lo, hi = max(start - int(self.starts[d]), 0), min(end - int(self.starts[d]), span)
            ids.append(self._slice_with_eos(d, lo, hi, span))
            positions.append(np.arange(hi - lo, dtype=np.int64))
            d += 1
        return np.concatenate(ids), np.concatenate(positions)

    def _slice_with_eos(self, d: int, lo: int, hi: int, span: int) -> np.ndarray:
        """Tokens [lo, hi) of document d followed by its EOS, copying only that slice."""
        tokens = self.store.doc(int(self.doc_ids[d]))[lo:min(hi, span - 1)].astype(np.int64)
        return np.append(tokens, self.eos_id) if hi == span else tokens

    def document_starts(self, i: int) -> list[int]:
        """Offsets in row i where a document (or a continued one) begins: for previews."""
        return [int(p) for p in np.flatnonzero(self[i]["position_ids"].numpy() == 0)]
