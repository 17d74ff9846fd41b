"""A run's training data, from corpus files to a mixed stream of packed sequences.

    data = prepare_run_data(config.corpus, tokenizer, run_dir, seq_len=1024, seed=0)
    data.dataset[i]                      # a packed row (domain rows first, then general)
    data.mixer(seqs_per_step=64).step(k) # the row indices of optimizer step k

Reads top to bottom: validate every source, tokenize each corpus into its token store
(cached), set the held-out documents aside in the run folder, pack the rest.
`corpus_texts` gives the same split as text, before anything is tokenized (what a domain
tokenizer is learned from).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from .config import CorpusConfig, EvalConfig, EvalSetSpec
from .corpus import CorpusError, SourceSpec, validate
from .evaluation import EvalSet, heldout_rows
from .events import ProgressCallback
from .heldout import documents, load_heldout, save_heldout, split_heldout, training_ids
from .mixing import ReplayMixer
from .packing import PackedSequences
from .tokenstore import TokenStore, prepare


@dataclass
class CorpusPart:
    name: str
    store: TokenStore
    heldout: np.ndarray
    train: PackedSequences
    heldout_path: Path


@dataclass
class RunData:
    domain: CorpusPart
    general: CorpusPart | None
    replay_ratio: float
    seed: int

    @property
    def dataset(self) -> torch.utils.data.Dataset:
        parts = [self.domain.train] + ([self.general.train] if self.general else [])
        return torch.utils.data.ConcatDataset(parts)

    def mixer(self, seqs_per_step: int, on_new_pass=None, replay_changes=()) -> ReplayMixer:
        """`replay_changes`: (from_step, ratio) pairs the forgetting guard set (cpt_studio.core.guard)."""
        n_general = len(self.general.train) if self.general else 0
        ratio = self.replay_ratio if self.general else 0.0
        return ReplayMixer(len(self.domain.train), n_general, ratio, seqs_per_step,
                           self.seed, on_new_pass, replay_changes if self.general else ())


def check_sources(corpus: CorpusConfig) -> None:
    """Raise CorpusError with every problem of every source, before anything is tokenized."""
    problems = []
    for specs in (corpus.domain, corpus.general):
        if specs:
            problems += validate(specs).problems
    if problems and not corpus.skip_bad:
        raise CorpusError(problems)


def prepare_run_data(corpus: CorpusConfig, heldout: EvalConfig, tokenizer, run_dir: Path, *,
                     seq_len: int, seed: int = 0, progress: ProgressCallback | None = None) -> RunData:
    check_sources(corpus)
    parts = {}
    for name, specs in (("domain", corpus.domain), ("general", corpus.general)):
        if specs:
            parts[name] = _part(name, specs, corpus, heldout, tokenizer, run_dir, seq_len, seed, progress)
    return RunData(parts["domain"], parts.get("general"), corpus.replay_ratio, seed)


def _part(name: str, specs: list[SourceSpec], corpus: CorpusConfig, size: EvalConfig, tokenizer,
          run_dir: Path, seq_len: int, seed: int, progress) -> CorpusPart:
    tagged = (lambda event: progress({**event, "corpus": name})) if progress else None
    store = prepare(specs, tokenizer, skip_bad=corpus.skip_bad, progress=tagged)
    heldout = heldout_ids(name, store.n_docs, size, seed)
    path = save_heldout(Path(run_dir) / "heldout" / f"{name}.jsonl", store, specs, heldout)
    eos = tokenizer.eos_token_id
    train = PackedSequences(store, training_ids(store.n_docs, heldout), seq_len, eos,
                            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    return CorpusPart(name, store, heldout, train, path)


def heldout_ids(name: str, n_docs: int, size: EvalConfig, seed: int) -> np.ndarray:
    """The held-out documents of one corpus: they depend on the document count, the held-out
    size and the seed, never on the tokenizer."""
    fraction = None if size.heldout_count is not None else size.heldout_fraction
    try:
        return split_heldout(n_docs, fraction, size.heldout_count, seed)
    except ValueError as exc:
        raise ValueError(f"{name} corpus: {exc}") from exc


def evaluation_sets(data: RunData, settings: EvalConfig, tokenizer, seq_len: int) -> dict[str, EvalSet]:
    """What every evaluation measures: the held-out slices ("domain", "general") and the
    evaluation files of settings.sets, each cut to about settings.max_tokens tokens of whole
    documents, with the UTF-8 bytes and words of the text it holds (for bits per byte)."""
    sets = {}
    for part in (data.domain, data.general):
        if part is not None:
            rows = heldout_rows(part.store, part.heldout, seq_len, tokenizer.eos_token_id, settings.max_tokens)
            kept = set(rows.doc_ids.tolist())
            texts = [r["text"] for r in load_heldout(part.heldout_path) if r["doc"] in kept]
            sets[part.name] = EvalSet(part.name, part.name, rows, _utf8_bytes(texts),
                                      int(part.store.doc_words[rows.doc_ids].sum()))
    for spec in settings.sets:
        sets[spec.name] = _file_set(spec, tokenizer, seq_len, settings.max_tokens)
    return sets


def _file_set(spec: EvalSetSpec, tokenizer, seq_len: int, max_tokens: int) -> EvalSet:
    """An evaluation file of the user's, tokenized into the token cache like a corpus."""
    sources = [SourceSpec(spec.path, spec.text_field)]
    problems = validate(sources).problems
    if problems:
        raise CorpusError(problems, skipped_hint=False)
    store = prepare(sources, tokenizer)
    rows = heldout_rows(store, np.arange(store.n_docs, dtype=np.int64), seq_len,
                        tokenizer.eos_token_id, max_tokens)
    count = len(rows.doc_ids)  # a prefix of the documents, in store order
    texts = [doc.text for doc in islice(documents(sources), count)]
    return EvalSet(spec.name, spec.kind, rows, _utf8_bytes(texts), int(store.doc_words[:count].sum()))


def _utf8_bytes(texts: list[str]) -> int:
    return sum(len(text.encode("utf-8")) for text in texts)


@dataclass
class CorpusTexts:
    """One corpus's documents as text, split into training and held-out documents."""

    specs: list[SourceSpec]
    heldout: np.ndarray

    def training(self, max_characters: int | None = None) -> Iterator[str]:
        """The training documents' text, in corpus order, up to about `max_characters`."""
        return self._texts(keep_heldout=False, max_characters=max_characters)

    def heldout_texts(self, max_characters: int | None = None) -> list[str]:
        return list(self._texts(keep_heldout=True, max_characters=max_characters))

    def _texts(self, keep_heldout: bool, max_characters: int | None) -> Iterator[str]:
        wanted, total = set(self.heldout.tolist()), 0
        for i, doc in enumerate(documents(self.specs)):
            if (i in wanted) == keep_heldout:
                yield doc.text
                total += len(doc.text)
                if max_characters is not None and total >= max_characters:
                    return


def corpus_texts(corpus: CorpusConfig, size: EvalConfig, seed: int = 0) -> dict[str, CorpusTexts]:
    """The text of each corpus ("domain", "general"), split exactly as prepare_run_data will
    split its token store, without tokenizing anything: what is learned from the training
    text (a domain tokenizer) never sees a held-out document."""
    check_sources(corpus)
    texts = {}
    for name, specs in (("domain", corpus.domain), ("general", corpus.general)):
        if specs:
            n_docs = sum(1 for _ in documents(specs))
            texts[name] = CorpusTexts(specs, heldout_ids(name, n_docs, size, seed))
    return texts
