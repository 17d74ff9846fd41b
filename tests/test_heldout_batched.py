"""Held-out perplexity as batched for the GPU (cpt_studio.core.evaluation: labels shifted instead
of logits, the fp32 cross-entropy a chunk of tokens at a time, sums kept on the device) gives
the perplexity of the straightforward computation: each batch's whole logits upcast at once,
one cross-entropy, summed on the host."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from cpt_studio.core import evaluation
from cpt_studio.core.packing import IGNORE_INDEX, collate_rows


def _packed_rows(seed: int, count: int, seq_len: int) -> list[dict]:
    """Rows of documents of 5 to 40 tokens with restarting position ids; the last row ends in
    padding (labels -100), as PackedSequences pads the end of its stream."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        ids = torch.randint(3, 380, (seq_len,), generator=generator)
        lengths, left = [], seq_len
        while left:
            lengths.append(min(left, int(torch.randint(5, 40, (1,), generator=generator))))
            left -= lengths[-1]
        labels = ids.clone()
        if i == count - 1:
            labels[-11:] = IGNORE_INDEX
        rows.append({"input_ids": ids, "labels": labels,
                     "position_ids": torch.cat([torch.arange(n) for n in lengths])})
    return rows


def _straightforward(model, rows: list[dict], batch_size: int) -> tuple[float, int]:
    """(mean NLL, predicted tokens): every batch's logits[:, :-1] in fp32 at once."""
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = collate_rows(rows[start:start + batch_size])
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
            targets = batch["labels"][:, 1:]
            nll += F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                                   ignore_index=IGNORE_INDEX, reduction="sum").item()
            tokens += int((targets != IGNORE_INDEX).sum())
    return nll / tokens, tokens


@pytest.mark.parametrize("chunk_tokens", [7, 10_000])
def test_batched_heldout_perplexity_equals_the_straightforward_computation(tiny_model_dir, monkeypatch,
                                                                            chunk_tokens):
    """7 rows in batches of 3 (the last batch short, the last row padded), the cross-entropy 7
    tokens at a time (chunks that cross row ends) and all at once: same loss to 1e-6, same
    count of predicted tokens, on the tiny model (vocabulary 384)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    rows = _packed_rows(seed=3, count=7, seq_len=96)
    expected_loss, expected_tokens = _straightforward(model, rows, batch_size=3)
    monkeypatch.setattr(evaluation, "CE_CHUNK_BYTES", 4 * model.config.vocab_size * chunk_tokens)
    result = evaluation.heldout_perplexity(model, rows, batch_size=3)
    assert result.tokens == expected_tokens == 7 * 95 - 11
    assert result.loss == pytest.approx(expected_loss, rel=1e-6)
    assert result.ppl == pytest.approx(math.exp(expected_loss), rel=1e-5)
