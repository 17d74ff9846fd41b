"""Packing documents into training sequences of a fixed length, dropping no token.

The training documents (a token store minus its held-out documents) are laid end to end,
each as the model saw documents in pre-training: BOS (only for a tokenizer that adds one),
the document, then the separator (cpt_studio.core.document_tokens), and cut into rows of `seq_len`
tokens. A BOS is given to the model, never predicted: its label is -100 (predicting it would
mean predicting across documents). The last row is completed
with padding whose labels are -100, so it adds nothing to the loss. Position ids restart
at 0 at every document start and at every row start: with no attention mask and the cache
off, transformers then keeps each document from attending to the others in the row
(checked by tests/test_packing.py: a document packed second has the logits it has alone).

Rows are cut lazily from the memory-mapped store, so packing costs no copy of the corpus.
"""

from __future__ import annotations

import numpy as np
import torch

from .tokenstore import TokenStore

IGNORE_INDEX = -100

FLAT_ROW_KERNELS = ("flash_attention_2", "flash_attention_3")
"""Kernels that keep packed documents apart only in a batch of one row: transformers reads
the documents' bounds (cu_seqlens) from position ids only when batch_size == 1
(modeling_flash_attention_utils._is_packed_sequence), so their batches are flattened
(collate_rows)."""


class PackedSequences(torch.utils.data.Dataset):
    """Row i of the packed stream: input_ids, labels and position_ids, each of seq_len."""

    def __init__(self, store: TokenStore, doc_ids: np.ndarray, seq_len: int,
                 eos_id: int, pad_id: int | None = None, bos_id: int | None = None):
        """`eos_id`: the separator after each document; `bos_id`: put before each, or None."""
        if seq_len < 2:
            raise ValueError(f"sequence length {seq_len} is too short; use at least 2 (typically 1024-4096)")
        self.store, self.seq_len, self.eos_id, self.bos_id = store, seq_len, eos_id, bos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.doc_ids = np.asarray(doc_ids, dtype=np.int64)
        spans = span_lengths(store, self.doc_ids, bos_id is not None)
        self.starts = np.zeros(len(spans) + 1, dtype=np.int64)
        np.cumsum(spans, out=self.starts[1:])

    @property
    def total_tokens(self) -> int:
        """Tokens in the packed stream, BOS and separators included, padding excluded."""
        return int(self.starts[-1])

    def __len__(self) -> int:
        return -(-self.total_tokens // self.seq_len)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        ids, positions, given = self._row(i * self.seq_len, min((i + 1) * self.seq_len, self.total_tokens))
        labels = ids.copy()
        labels[given] = IGNORE_INDEX  # the BOS tokens
        return padded_row(ids, labels, positions, self.seq_len, self.pad_id)

    def _row(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Tokens and position ids of stream positions [start, end), and the BOS offsets."""
        ids, positions, bos_at, offset = [], [], [], 0
        d = int(np.searchsorted(self.starts, start, side="right")) - 1
        while d < len(self.doc_ids) and self.starts[d] < end:
            span = int(self.starts[d + 1] - self.starts[d])  # BOS, the document, its separator
            lo, hi = max(start - int(self.starts[d]), 0), min(end - int(self.starts[d]), span)
            ids.append(self._span_slice(d, lo, hi, span))
            positions.append(np.arange(hi - lo, dtype=np.int64))
            if self.bos_id is not None and lo == 0:
                bos_at.append(offset)
            offset += hi - lo
            d += 1
        return np.concatenate(ids), np.concatenate(positions), bos_at

    def _span_slice(self, d: int, lo: int, hi: int, span: int) -> np.ndarray:
        """Tokens [lo, hi) of document d's span (BOS, document, separator), copying only
        that slice."""
        head = int(self.bos_id is not None)
        body = self.store.doc(int(self.doc_ids[d]))[max(lo - head, 0):min(hi, span - 1) - head]
        parts = [np.array([self.bos_id], dtype=np.int64)] if head and lo == 0 else []
        parts.append(body.astype(np.int64))
        if hi == span:
            parts.append(np.array([self.eos_id], dtype=np.int64))
        return np.concatenate(parts)

    def document_starts(self, i: int) -> list[int]:
        """Offsets in row i where a document (or a continued one) begins: for previews."""
        return [int(p) for p in np.flatnonzero(self[i]["position_ids"].numpy() == 0)]


def padded_row(ids: np.ndarray, labels: np.ndarray, positions: np.ndarray, seq_len: int,
               pad_id: int) -> dict[str, torch.Tensor]:
    """A training row as the Trainer takes it (input_ids, labels, position_ids, each of seq_len):
    the one layout of CPT's rows and instruction tuning's (cpt_studio.core.sft_data). A short row
    is padded with `pad_id`, labelled -100 so that padding adds nothing to the loss."""
    pad = seq_len - len(ids)
    if pad > 0:
        ids = np.concatenate([ids, np.full(pad, pad_id, dtype=np.int64)])
        labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int64)])
        positions = np.concatenate([positions, np.arange(pad, dtype=np.int64)])
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(positions)}


def span_lengths(store: TokenStore, doc_ids: np.ndarray, with_bos: bool) -> np.ndarray:
    """Tokens each document takes in the packed stream: itself, its separator and its BOS."""
    return store.doc_lengths()[np.asarray(doc_ids, dtype=np.int64)] + 1 + int(with_bos)


def collate_rows(rows: list[dict[str, torch.Tensor]], *, flat: bool = False) -> dict[str, torch.Tensor]:
    """A batch of packed rows: each field stacked to (batch, seq_len); with `flat`, laid end
    to end in one row of (1, batch x seq_len) for the kernels that keep documents apart only
    in a batch of one row (FLAT_ROW_KERNELS: flash attention reads the documents'
    bounds from position ids only then). Flat, each row's first label becomes -100: it was
    never a target (a row's first token has nothing before it to predict it from) and must
    not become the target of the previous row's last token; the loss and the count of
    predicted tokens are the same either way.

    Written here rather than with transformers' DataCollatorWithFlattening, which makes
    position ids restart only at each row (a row here holds several documents)."""
    batch = {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
    if not flat:
        return batch
    if "labels" in batch:
        batch["labels"] = batch["labels"].clone()
        batch["labels"][:, 0] = IGNORE_INDEX
    return {key: value.reshape(1, -1) for key, value in batch.items()}


def flat_rows(model) -> bool:
    """Whether `model` (loaded, or a peft model around one) runs a kernel of FLAT_ROW_KERNELS,
    whose batches must be one row (collate_rows(flat=True))."""
    return getattr(model.config, "_attn_implementation", None) in FLAT_ROW_KERNELS
