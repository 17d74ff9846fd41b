"""Held-out perplexity, bits per byte, forgetting and domain gain (docs/architecture.md).

    result = heldout_perplexity(model, rows, batch_size=8)   # rows: PackedSequences
    result.bits_per_byte(text_bytes)                          # comparable across tokenizers
    forgetting(general_ppl, baseline_general_ppl)            # > 0: general text got harder
    domain_gain(domain_ppl, baseline_domain_ppl)             # > 0: domain text got easier

Perplexity is exp of the mean negative log-likelihood over every predicted token (padding
excluded), weighted by tokens, not averaged per batch. Rows are packed documents with
restarting position ids and the cache off, so documents do not see each other.

Perplexity per token depends on what a token is: a run that extends its tokenizer changes it.
Bits per byte does not: the same total negative log-likelihood (nats) / ln 2 / the UTF-8 bytes
of the evaluated documents; word perplexity is exp(total NLL / whitespace-separated words).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .packing import IGNORE_INDEX, PackedSequences, collate_rows, flat_rows, span_lengths
from .progress import Progress, tick
from .tokenstore import TokenStore


@dataclass
class Perplexity:
    loss: float
    """Mean negative log-likelihood per predicted token (nats)."""
    tokens: int

    @property
    def ppl(self) -> float:
        if math.isnan(self.loss):  # a NaN loss is not an infinite perplexity: say NaN
            return math.nan
        return math.exp(self.loss) if self.loss < 700 else math.inf

    @property
    def total_nll(self) -> float:
        """Summed negative log-likelihood of every predicted token (nats)."""
        return self.loss * self.tokens

    def bits_per_byte(self, text_bytes: int) -> float:
        """Total NLL / ln 2 / UTF-8 bytes of the evaluated text."""
        return self.total_nll / math.log(2) / max(text_bytes, 1)

    def word_perplexity(self, words: int) -> float:
        """exp(total NLL / words): perplexity per whitespace-separated word."""
        per_word = self.total_nll / max(words, 1)
        return math.exp(per_word) if per_word < 700 else math.inf


@dataclass
class EvalSet:
    """One evaluation text: its packed rows and the size of the text they hold."""

    name: str
    """'domain' and 'general' (the held-out slices), or the name of an evaluation file."""
    kind: str
    """'domain' (domain gain is measured on it) or 'general' (forgetting is)."""
    rows: PackedSequences
    text_bytes: int
    """UTF-8 bytes of the documents in `rows`."""
    words: int
    """Whitespace-separated words of the documents in `rows`."""

    def measure(self, model, batch_size: int = 8, autocast_dtype: torch.dtype | None = None) -> dict:
        """{name_ppl, name_loss, name_bpb, name_word_ppl} for the model now."""
        result = heldout_perplexity(model, self.rows, batch_size, autocast_dtype)
        return {f"{self.name}_ppl": result.ppl, f"{self.name}_loss": result.loss,
                f"{self.name}_bpb": result.bits_per_byte(self.text_bytes),
                f"{self.name}_word_ppl": result.word_perplexity(self.words)}


def forgetting(general_ppl: float, baseline_general_ppl: float) -> float:
    return general_ppl / baseline_general_ppl - 1


def domain_gain(domain_ppl: float, baseline_domain_ppl: float) -> float:
    return 1 - domain_ppl / baseline_domain_ppl


def measure_sets(model, eval_sets: dict[str, EvalSet], batch_size: int = 8,
                 autocast_dtype: torch.dtype | None = None) -> dict:
    """Every set's {name}_ppl, _loss, _bpb and _word_ppl for the model now (EvalSet.measure)."""
    fields = {}
    for eval_set in eval_sets.values():
        fields.update(eval_set.measure(model, batch_size, autocast_dtype))
    return fields


def set_changes(fields: dict, baseline: dict, kinds: dict[str, str], guard_set: str = "") -> dict:
    """Domain gain and forgetting of measured `fields` against the `baseline`'s {name}_ppl, per
    set and overall. `kinds`: set name -> 'domain' or 'general'. Per set: {name}_domain_gain
    (domain sets; the held-out slice's is plain domain_gain) and {name}_forgetting (general
    sets). Overall: forgetting on `guard_set`, or the worst general set when it is empty, named
    in forgetting_set. The one definition the run's evaluations and interpolation both use."""
    gains = {}
    for name, kind in kinds.items():
        change = domain_gain if kind == "domain" else forgetting
        key = ("domain_gain" if name == "domain" else f"{name}_domain_gain"
               if kind == "domain" else f"{name}_forgetting")
        gains[key] = change(fields[f"{name}_ppl"], baseline[f"{name}_ppl"])
    general = {name: gains[f"{name}_forgetting"] for name, kind in kinds.items() if kind == "general"}
    if general:
        chosen = guard_set or max(general, key=general.get)
        gains["forgetting"], gains["forgetting_set"] = general[chosen], chosen
    return gains


def heldout_rows(store: TokenStore, heldout: np.ndarray, seq_len: int, eos_id: int,
                 max_tokens: int, bos_id: int | None = None) -> PackedSequences:
    """The held-out documents packed into rows as training packs them (BOS when the tokenizer
    adds one, `eos_id` the separator), cut to about `max_tokens` whole documents."""
    lengths = span_lengths(store, heldout, bos_id is not None)
    keep = max(1, int(np.searchsorted(np.cumsum(lengths), max_tokens, side="right")))
    return PackedSequences(store, heldout[:keep], seq_len, eos_id, bos_id=bos_id)


@torch.no_grad()
def heldout_perplexity(model, rows: torch.utils.data.Dataset, batch_size: int = 8,
                       autocast_dtype: torch.dtype | None = None,
                       progress: Progress | None = None) -> Perplexity:
    """Forward only, batched; the model is put back in training mode if it was in it.
    `progress` hears the rows done after each batch (a Cancelled it raises stops there).

    Under several processes (cpt_studio.core.distributed) each rank scores every world-th
    batch and the sums of nats and tokens are added up over the ranks: every rank returns the
    same result, in about 1/world of the time. Sharded rather than run on one rank while the
    others wait, because a model whose weights are sharded (FSDP) needs every rank in each
    forward pass: for the same reason a rank with one batch fewer runs its first batch again
    (and discards it), so that all ranks make the same number of forward passes."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    starts = range(0, len(rows), batch_size)
    mine = [starts[i] for i in distributed.shard(len(starts))]
    rounds = -(-len(starts) // distributed.world_size()) if len(mine) < len(starts) else len(mine)
    # Sums stay on the device (float64): no host sync per batch, one at the end.
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    try:
        for i in range(rounds):
            start = mine[i] if i < len(mine) else 0
            batch = [rows[j] for j in range(start, min(start + batch_size, len(rows)))]
            batch_sums = _batch_nll(model, batch, device, autocast_dtype)
            if i < len(mine):
                sums += batch_sums
                tick(progress, start + len(batch), len(rows), "sequences measured")
    finally:
        model.train(was_training)
    total_nll, total_tokens = distributed.all_sum(sums.tolist(), device)
    return Perplexity(total_nll / max(total_tokens, 1), int(total_tokens))


CE_CHUNK_BYTES = 2**30
"""The fp32 logits cross-entropy takes at once: 1 GiB (1,766 tokens of a 152k vocabulary)."""


def _batch_nll(model, batch: list[dict], device, autocast_dtype) -> torch.Tensor:
    """(summed negative log-likelihood in nats, predicted tokens) of a batch of packed rows,
    as a float64 tensor on `device`. The logits are upcast to fp32 for the loss a chunk of
    tokens at a time (CE_CHUNK_BYTES): at once, 8 x 2,048 tokens of a 152k vocabulary would be
    10 GB of fp32 beside the logits themselves. The labels are shifted rather than the logits
    (logits[:, :-1] flattened is a copy of every logit: 5 GB more in bf16 at that size); the
    last position of each row gets no target."""
    rows = collate_rows(batch, flat=flat_rows(model))  # flash kernels: one row, documents apart
    input_ids, position_ids, labels = (rows[key].to(device, non_blocking=True)
                                       for key in ("input_ids", "position_ids", "labels"))
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext())
    with autocast:
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    logits = logits.flatten(0, 1)  # a view: the model's logits are contiguous
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).flatten()
    chunk = max(1, CE_CHUNK_BYTES // (4 * logits.shape[-1]))
    nll = sum(F.cross_entropy(logits[i:i + chunk].float(), targets[i:i + chunk], ignore_index=IGNORE_INDEX,
                              reduction="sum").double() for i in range(0, len(targets), chunk))
    return torch.stack([nll, (targets != IGNORE_INDEX).sum().double()])
