"""Packing: no token lost, documents joined with EOS, position ids restarting per document,
and — on a real model — documents in one row that do not see each other."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.packing import IGNORE_INDEX, PackedSequences
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.tokenstore import prepare


@pytest.fixture
def store(tmp_path, tiny_tokenizer):
    texts = make_documents(40, seed=2, max_words=80)
    return prepare([SourceSpec(str(write_jsonl(tmp_path / "d.jsonl", texts)))], tiny_tokenizer), texts


@pytest.mark.parametrize("seq_len", [16, 37, 128, 4096])
def test_rows_decode_to_the_documents_joined_with_eos(store, tiny_tokenizer, seq_len):
    store, texts = store
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    packed = PackedSequences(store, np.arange(store.n_docs), seq_len, eos, pad)
    rows = [packed[i] for i in range(len(packed))]
    labels = torch.cat([r["labels"] for r in rows])
    kept = labels[labels != IGNORE_INDEX].tolist()
    expected = []
    for t in texts:
        expected += tiny_tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]
    assert kept == expected  # every token, in order, each document followed by EOS
    assert all(len(r["input_ids"]) == seq_len for r in rows)
    assert (labels == IGNORE_INDEX).sum() == len(packed) * seq_len - len(expected)  # only padding
    last = rows[-1]
    assert (last["input_ids"][last["labels"] == IGNORE_INDEX] == pad).all()


def test_position_ids_restart_at_each_document(store, tiny_tokenizer):
    store, _ = store
    eos = tiny_tokenizer.eos_token_id
    packed = PackedSequences(store, np.arange(store.n_docs), 64, eos)
    for i in range(len(packed)):
        row = packed[i]
        ids, positions = row["input_ids"].tolist(), row["position_ids"].tolist()
        assert positions[0] == 0
        for j in range(1, 64):
            after_eos = ids[j - 1] == eos and row["labels"][j - 1] != IGNORE_INDEX
            assert positions[j] == (0 if after_eos else positions[j - 1] + 1)


def test_only_the_chosen_documents_are_packed(store, tiny_tokenizer):
    store, texts = store
    packed = PackedSequences(store, np.array([3, 7]), 8, tiny_tokenizer.eos_token_id)
    kept = torch.cat([packed[i]["labels"] for i in range(len(packed))])
    assert kept[kept != IGNORE_INDEX].tolist() == store.doc(3).tolist() + [0] + store.doc(7).tolist() + [0]


def test_packed_documents_do_not_attend_to_each_other(tmp_path, tiny_model_dir, tiny_tokenizer):
    """What the position ids are for: logits of a document packed second equal the logits
    of that document alone (transformers' packed-sequence masking: position ids that restart per document)."""
    texts = ["the patient received tacrolimus twice daily.", "a court of appeal reviewed the judgment."]
    store = prepare([SourceSpec(str(write_jsonl(tmp_path / "two.jsonl", texts)))], tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    row = PackedSequences(store, np.arange(2), 64, eos)[0]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    first = len(store.doc(0)) + 1
    second = len(store.doc(1)) + 1
    with torch.no_grad():
        packed = model(input_ids=row["input_ids"][None], position_ids=row["position_ids"][None],
                       use_cache=False).logits[0, first:first + second]
        alone = model(input_ids=row["input_ids"][None, first:first + second], use_cache=False).logits[0]
    assert torch.allclose(packed, alone, atol=1e-5)
