"""The special tokens around each document in packed rows: BOS (when the tokenizer adds one)
and the separator that ends it.

    tokens = document_tokens(tokenizer)            # or document_tokens(tokenizer, "</s>")
    tokens.bos_id, tokens.separator_id             # BOS + document + separator, per document

A model should see its documents as it saw them in pre-training. BOS: exactly when the
tokenizer's own post-processor adds it (Llama, Gemma, Mistral do; Qwen and SmolLM2 do not),
found by encoding a word with and without special tokens. The separator: an instruct model's
eos is often its end-of-turn token (SmolLM2's <|im_end|>, Llama 3's <|eot_id|>), which is not
an end-of-document token; when the vocabulary has a true end-of-text token, documents are
separated by that. A tokenizer with no end token at all cannot separate documents: refused.
"""

from __future__ import annotations

from dataclasses import dataclass

END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|end▁of▁sentence|>")
"""Tokens that end a document in pre-training, most specific first."""
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eot|>", "<|eom_id|>")
"""Chat end-of-turn tokens that instruct tokenizers use as eos: not document separators."""


class SeparatorError(ValueError):
    """The tokenizer has no token that can end a document; the message says what to do."""


@dataclass(frozen=True)
class DocumentTokens:
    bos_id: int | None
    """Put before every document (None: the tokenizer adds no BOS)."""
    bos_token: str | None
    separator_id: int
    """Put after every document."""
    separator_token: str
    reason: str
    """Why this separator, in words: shown by the dry run and the wizard's summary."""

    def describe(self) -> str:
        bos = f"{self.bos_token} + " if self.bos_token else ""
        return f"{bos}document + {self.separator_token} ({self.reason})"


def document_tokens(tokenizer, separator: str = "") -> DocumentTokens:
    """BOS and separator for `tokenizer`; `separator` overrides the choice when not empty."""
    bos_id = added_bos_id(tokenizer)
    bos_token = tokenizer.convert_ids_to_tokens(bos_id) if bos_id is not None else None
    token, reason = _separator(tokenizer, separator)
    return DocumentTokens(bos_id, bos_token, _token_id(tokenizer, token), token, reason)


def added_bos_id(tokenizer) -> int | None:
    """The BOS id the tokenizer puts before a text, or None when it adds none."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(full) > len(plain) and full[0] == bos:
        return bos
    return None


def _separator(tokenizer, chosen: str) -> tuple[str, str]:
    vocab = tokenizer.get_vocab()
    if chosen:
        if chosen not in vocab:
            raise SeparatorError(f"corpus.separator: {chosen!r} is not a token of this tokenizer; "
                                 f"leave it empty for the automatic choice or name one of: "
                                 f"{', '.join(_candidates(tokenizer)) or 'its special tokens'}")
        return chosen, "set in the config"
    eos = tokenizer.eos_token
    if eos and eos not in END_OF_TURN:
        return eos, "the tokenizer's end-of-sequence token"
    text_end = next((t for t in END_OF_TEXT if t in vocab and t != eos), None)
    if text_end is not None:
        why = f"end-of-text token; the eos {eos} ends a chat turn" if eos else "end-of-text token"
        return text_end, why
    if eos:
        return eos, "the tokenizer's end-of-sequence token (an end-of-turn token; no end-of-text token found)"
    raise SeparatorError(
        "the tokenizer has no end-of-sequence or end-of-text token, so documents cannot be "
        "separated; set corpus.separator to a special token of the tokenizer (the separator "
        "box on the summary page) or add an eos_token to tokenizer_config.json")


def _candidates(tokenizer) -> list[str]:
    return [t for t in tokenizer.all_special_tokens if t]


def _token_id(tokenizer, token: str) -> int:
    return int(tokenizer.convert_tokens_to_ids(token))
