"""A tiny Llama-architecture causal LM with a byte-level BPE tokenizer trained on the spot.

Every test that needs a model uses `build_tiny_model(folder)`: 2 layers, width 64, a
vocabulary of a few hundred tokens, saved as an ordinary HF folder (config, safetensors,
tokenizer), so the code under test loads it exactly as it would load a real model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

TRAINING_TEXT = [
    "The patient received tacrolimus twice daily and the trough level was measured.",
    "Cyclosporine and tacrolimus are calcineurin inhibitors used after transplantation.",
    "The weather today is sunny with a light breeze from the west.",
    "A court of appeal reviewed the judgment and remanded the case for a new trial.",
    "Children played in the park while their parents talked about the news.",
    "Renal clearance falls with age, so the dose was reduced by one third.",
    "The committee met on Tuesday to discuss the budget for the coming year.",
    "Bioavailability of the oral formulation is about twenty five percent.",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


def train_tiny_tokenizer(vocab_size: int = 384, texts: list[str] | None = None, *,
                         style: str = "byte-level") -> PreTrainedTokenizerFast:
    """A byte-level BPE like GPT-2's and SmolLM2's ('Ġ' marks a word-initial token), or a
    sentencepiece-style BPE ('▁' marks it): "metaspace" splits words before BPE, "llama" hands
    BPE the whole text as transformers 5's LlamaTokenizer does (Metaspace with split=False)."""
    tok = Tokenizer(models.BPE())
    if style == "byte-level":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = sorted({c for text in texts or TRAINING_TEXT for c in text if c != " "} | {"▁"})
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator((texts or TRAINING_TEXT) * 4, trainer=trainer)
    if style == "llama":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        pad_token="<|pad|>", unk_token=None,
    )


def build_tiny_model(folder: Path, *, tie_word_embeddings: bool = True, seed: int = 0,
                     vocab_size: int = 384, texts: list[str] | None = None) -> Path:
    """Write a tiny Llama model and its tokenizer (trained on `texts`, by default
    TRAINING_TEXT) to `folder`; return the folder."""
    folder = Path(folder)
    tokenizer = train_tiny_tokenizer(vocab_size, texts)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
