"""Documents packed as the model saw them in pre-training: BOS for a tokenizer that adds one,
the end-of-text token (not an instruct end-of-turn eos) between documents, in training rows
and in held-out rows alike."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpt_studio.core.config import CorpusConfig, EvalConfig
from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.data import prepare_run_data
from cpt_studio.core.document_tokens import SeparatorError, document_tokens
from cpt_studio.core.evaluation import heldout_rows
from cpt_studio.core.packing import IGNORE_INDEX, PackedSequences
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.testing.tiny_model import build_tiny_model, special_tokens_variant
from cpt_studio.core.tokenstore import prepare


def _stream(packed) -> tuple[list[int], list[int]]:
    """Input ids and labels of all packed rows, the last row's padding removed."""
    rows = [packed[i] for i in range(len(packed))]
    ids = torch.cat([r["input_ids"] for r in rows])[:packed.total_tokens]
    labels = torch.cat([r["labels"] for r in rows])[:packed.total_tokens]
    return ids.tolist(), labels.tolist()


def _prepare(tmp_path, tokenizer, separator=""):
    texts = make_documents(30, seed=4, max_words=20)
    corpus = CorpusConfig(domain=[SourceSpec(str(write_jsonl(tmp_path / "d.jsonl", texts)))],
                          replay_ratio=0, separator=separator)
    data = prepare_run_data(corpus, EvalConfig(heldout_count=4), tokenizer, tmp_path / "run", seq_len=32)
    return data, texts


def _expected(tokenizer, texts, doc_ids, bos, sep):
    out = []
    for i in doc_ids:
        out += ([bos] if bos is not None else []) + tokenizer(texts[i], add_special_tokens=False)["input_ids"] + [sep]
    return out


@pytest.mark.parametrize("kind, bos_token, separator", [
    ("bos", "<s>", "</s>"),                     # Llama 2 style: BOS added, eos ends documents
    ("instruct", None, "<|endoftext|>"),        # SmolLM2-Instruct style: eos <|im_end|> is a turn end
    ("plain", None, "<|endoftext|>"),
])
def test_training_and_heldout_rows_carry_bos_document_separator(tmp_path, kind, bos_token, separator):
    tokenizer = special_tokens_variant(kind)
    data, texts = _prepare(tmp_path, tokenizer)
    bos = tokenizer.convert_tokens_to_ids(bos_token) if bos_token else None
    sep = tokenizer.convert_tokens_to_ids(separator)
    assert (data.tokens.bos_id, data.tokens.separator_token) == (bos, separator)
    train = data.domain.train
    ids, labels = _stream(train)
    assert ids == _expected(tokenizer, texts, train.doc_ids, bos, sep)
    heldout = data.domain.saved
    rows = heldout_rows(heldout, np.arange(len(heldout)), 32, data.tokens.separator_id, 10_000,
                        bos_id=data.tokens.bos_id)
    held_ids, held_labels = _stream(rows)
    assert held_ids == _expected(tokenizer, texts, heldout.store_ids(), bos, sep)
    for stream, stream_labels in ((ids, labels), (held_ids, held_labels)):
        for token, label in zip(stream, stream_labels, strict=True):  # BOS is given, never predicted
            assert label == (IGNORE_INDEX if bos is not None and token == bos else token)
    if kind == "instruct":
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") not in ids


def test_the_separator_can_be_chosen_in_the_config(tmp_path):
    tokenizer = special_tokens_variant("instruct")
    data, _ = _prepare(tmp_path, tokenizer, separator="<|im_end|>")
    assert data.tokens.separator_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(SeparatorError, match="corpus.separator: '<nope>' is not a token"):
        document_tokens(tokenizer, "<nope>")


def test_a_tokenizer_without_an_end_token_is_refused_with_what_to_do():
    with pytest.raises(SeparatorError, match="no end-of-sequence or end-of-text token.*corpus.separator"):
        document_tokens(special_tokens_variant("no-eos"))


def test_a_bos_document_packed_second_sees_nothing_of_the_first(tmp_path):
    """The packed-vs-alone property with BOS: the second document's logits in a packed row equal
    those of BOS + the document run alone, as generation would feed it."""
    folder = build_tiny_model(tmp_path / "bos-model", special="bos")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["the patient received tacrolimus twice daily.", "a court of appeal reviewed the judgment."]
    store = prepare([SourceSpec(str(write_jsonl(tmp_path / "two.jsonl", texts)))], tokenizer)
    tokens = document_tokens(tokenizer)
    row = PackedSequences(store, np.arange(2), 64, tokens.separator_id, bos_id=tokens.bos_id)[0]
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    alone_ids = tokenizer(texts[1])["input_ids"]  # the tokenizer's own BOS + document
    first = len(tokenizer(texts[0])["input_ids"]) + 1
    assert row["input_ids"][first:first + len(alone_ids)].tolist() == alone_ids
    with torch.no_grad():
        packed = model(input_ids=row["input_ids"][None], position_ids=row["position_ids"][None],
                       use_cache=False).logits[0, first:first + len(alone_ids)]
        alone = model(input_ids=torch.tensor([alone_ids]), use_cache=False).logits[0]
    assert torch.allclose(packed, alone, atol=1e-5)
