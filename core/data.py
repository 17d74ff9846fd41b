"""A run's training data, from corpus files to a mixed stream of packed sequences.

    data = prepare_run_data(config.corpus, tokenizer, run_dir, seq_len=1024, seed=0)
    data.dataset[i]                      # a packed row (domain rows first, then general)
    data.mixer(seqs_per_step=64).step(k) # the row indices of optimizer step k

Reads top to bottom: validate every source, tokenize each corpus into its token store
(cached), set the held-out documents aside in the run folder (with the corpus's fingerprint),
pack the rest, each document as BOS (when the tokenizer adds one) + text + separator.
A resume keeps the saved held-out documents; on a corpus that changed since the run started
it refuses, unless told to accept the change (then the saved held-out texts stay out of
training and remain the evaluation set).
`corpus_texts` gives the same split as text, before anything is tokenized (what a domain
tokenizer is learned from).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from .config import CorpusConfig, EvalConfig, EvalSetSpec, RunConfig
from .corpus import CorpusError, SourceSpec, validate
from .document_tokens import DocumentTokens, document_tokens
from .evaluation import EvalSet, heldout_rows
from .events import ProgressCallback
from .heldout import (
    SavedHeldout,
    documents,
    save_heldout,
    split_heldout,
    training_ids,
)
from .mixing import ReplayMixer
from .packing import PackedSequences
from .run_folder import RunPaths
from .tokenstore import TokenStore, corpus_fingerprint, prepare


class CorpusChangedError(ValueError):
    """A resume found corpus files that changed since the run started; the message says what to do."""


@dataclass
class CorpusPart:
    name: str
    store: TokenStore
    heldout: np.ndarray
    train: PackedSequences
    heldout_path: Path
    saved: SavedHeldout
    """The held-out documents as saved in the run folder: what every evaluation measures."""

    def eval_set(self, tokens: DocumentTokens, settings: EvalConfig, seq_len: int) -> EvalSet:
        """The held-out documents as saved at the start (heldout_eval_set)."""
        return heldout_eval_set(self.name, self.saved, tokens, settings, seq_len)


@dataclass
class RunData:
    domain: CorpusPart
    """The domain corpus, or what trains in its place: an SFT run's examples
    (cpt_studio.core.sft_run.SftPart: name, train and eval_set alike)."""
    general: CorpusPart | None
    replay_ratio: float
    seed: int
    tokens: DocumentTokens

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
                     seq_len: int, seed: int = 0, progress: ProgressCallback | None = None,
                     accept_changed_corpus: bool = False, domain=None) -> RunData:
    """`domain`: what trains in place of the domain corpus (an SFT run's examples), or None."""
    tokens = document_tokens(tokenizer, corpus.separator)
    check_sources(corpus)
    if not accept_changed_corpus:
        refuse_changed_corpus(corpus, run_dir)
    parts = {}
    for name, specs in (("domain", corpus.domain), ("general", corpus.general)):
        if specs:
            parts[name] = _part(name, specs, corpus, heldout, tokenizer, tokens, Path(run_dir), seq_len,
                                seed, progress)
    return RunData(domain or parts["domain"], parts.get("general"), corpus.replay_ratio, seed, tokens)


def _part(name: str, specs: list[SourceSpec], corpus: CorpusConfig, size: EvalConfig, tokenizer,
          tokens: DocumentTokens, run_dir: Path, seq_len: int, seed: int, progress) -> CorpusPart:
    tagged = (lambda event: progress({**event, "corpus": name})) if progress else None
    store = prepare(specs, tokenizer, skip_bad=corpus.skip_bad, progress=tagged)
    path = RunPaths(run_dir).heldout(name)
    if path.exists():  # a resume: the held-out set is the one the run started with
        saved = SavedHeldout.read(path)
        train_ids = _resumed_training_ids(name, store, specs, saved, run_dir)
    else:
        heldout = heldout_ids(name, store.n_docs, size, seed)
        save_heldout(path, store, specs, heldout)
        record_corpus(run_dir, name, specs)
        saved, train_ids = SavedHeldout.read(path), training_ids(store.n_docs, heldout)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokens.separator_id
    train = PackedSequences(store, train_ids, seq_len, tokens.separator_id, pad, bos_id=tokens.bos_id)
    return CorpusPart(name, store, saved.store_ids(), train, path, saved)


def _resumed_training_ids(name: str, store: TokenStore, specs: list[SourceSpec], saved: SavedHeldout,
                          run_dir: Path) -> np.ndarray:
    """The unchanged corpus: all but the saved held-out documents. A changed one (accepted):
    all but the documents whose text is a saved held-out text."""
    if name not in changed_corpora_record(run_dir, {name: specs}):
        return training_ids(store.n_docs, saved.store_ids())
    held = saved.texts()
    return np.array([i for i, doc in enumerate(documents(specs)) if doc.text not in held], dtype=np.int64)


def record_corpus(run_dir: Path, name: str, specs: list[SourceSpec]) -> None:
    """Write corpus `name`'s fingerprint and files into the run's corpus record, against which
    a resume checks that the files did not change (changed_corpora_record)."""
    path = RunPaths(run_dir).corpus_record
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(path.read_text()) if path.exists() else {}
    fingerprint, files = corpus_fingerprint(specs)
    record[name] = {"fingerprint": fingerprint, "files": files}
    path.write_text(json.dumps(record, indent=1))


def changed_corpora_record(run_dir: Path, corpora: dict[str, list[SourceSpec]]) -> dict[str, list[str]]:
    """The corpora (name: files) whose content differs from the run's start; {} for a run that
    has not started or recorded nothing."""
    path = RunPaths(Path(run_dir)).corpus_record
    record = json.loads(path.read_text()) if path.exists() else {}
    changed = {}
    for name, specs in corpora.items():
        if name in record and specs and corpus_fingerprint(specs)[0] != record[name]["fingerprint"]:
            changed[name] = record[name]["files"]
    return changed


def changed_corpus(run_dir: Path, corpus: CorpusConfig | None = None) -> str | None:
    """What changed in the corpus since the run started, in words, or None (the run's own
    config.json names the corpus unless `corpus` is given)."""
    if corpus is None:
        corpus = RunConfig.load(RunPaths(Path(run_dir)).config).corpus
    changed = changed_corpora_record(run_dir, {"domain": corpus.domain, "general": corpus.general})
    return "; ".join(f"{name}: {', '.join(files)}" for name, files in changed.items()) or None


def refuse_changed_corpus(corpus: CorpusConfig, run_dir: Path) -> None:
    """Raise CorpusChangedError when a corpus changed since the run started."""
    what = changed_corpus(run_dir, corpus)
    if what:
        raise CorpusChangedError(
            f"the corpus changed since this run started ({what}): its numbers would no longer "
            "compare with the step-0 baseline. Restore the files, start a new run, or resume "
            "anyway with --accept-changed-corpus (the GUI asks): the saved held-out documents "
            "stay the evaluation set and out of training")


def heldout_ids(name: str, n_docs: int, size: EvalConfig, seed: int) -> np.ndarray:
    """The held-out documents of one corpus ("domain", "general"; "sft": an SFT run's instruction
    examples): they depend on the document count, the held-out size and the seed, never on the
    tokenizer. ValueError, naming the corpus, the setting and the fix, when none would be left."""
    fraction = None if size.heldout_count is not None else size.heldout_fraction
    sft = name == "sft"  # an SFT run's held-out part is its instruction data's
    what, unit = ("instruction data", "instruction examples") if sft else (f"{name} corpus", "documents")
    try:
        return split_heldout(n_docs, fraction, size.heldout_count, seed, unit)
    except ValueError as exc:
        if n_docs < 2:  # no held-out size helps: the run needs one to hold out and one to train on
            raise ValueError(f"{what}: {n_docs} {unit.removesuffix('s') if n_docs == 1 else unit}; at least 2 "
                             "are needed (one held out to evaluate, "
                             f"one to train on): add {unit}") from exc
        setting = (f"eval.heldout_count ({size.heldout_count})" if size.heldout_count is not None
                   else f"eval.heldout_fraction ({fraction})")
        raise ValueError(f"{what}: {exc}; lower {setting} or add {unit}") from exc


def evaluation_sets(data: RunData, settings: EvalConfig, tokenizer, seq_len: int) -> dict[str, EvalSet]:
    """What every evaluation measures: the held-out slices ("domain", "general"; an SFT run's
    "domain" is its held-out examples, scored on their responses) as the run folder saved them
    at the start, and the evaluation files of settings.sets, each packed as training packs
    (BOS, document, separator), cut to about settings.max_tokens tokens of whole documents,
    with the UTF-8 bytes and words of the text it holds (for bits per byte)."""
    sets = {part.name: part.eval_set(data.tokens, settings, seq_len)
            for part in (data.domain, data.general) if part is not None}
    return sets | _file_sets(settings, tokenizer, data.tokens, seq_len)


def saved_evaluation_sets(run_dir: Path, config: RunConfig, tokenizer) -> dict[str, EvalSet]:
    """The run's evaluation sets (as evaluation_sets) for a CPT run that has started, from its
    folder alone: the held-out documents it saved, without reading or tokenizing the training
    corpus. `tokenizer`: the one the run trained with (a checkpoint's). An SFT run's held-out
    examples are scored on their responses only by the run itself: refused here (ValueError)."""
    if config.stage != "cpt":
        raise ValueError(f"{run_dir} is an {config.stage.upper()} run: its held-out examples are scored on "
                         "their responses by the run itself; measure its checkpoints with Evaluate instead")
    paths = RunPaths(Path(run_dir))
    saved = {name: SavedHeldout.read(paths.heldout(name)) for name in ("domain", "general")
             if paths.heldout(name).is_file()}
    if "domain" not in saved:
        raise FileNotFoundError(f"{run_dir} has no held-out domain documents "
                                f"({paths.relative(paths.heldout('domain'))}): the run has not "
                                "started; start it, or evaluate another run")
    tokens = document_tokens(tokenizer, config.corpus.separator)
    sets = {name: heldout_eval_set(name, heldout, tokens, config.eval, config.batch.seq_len)
            for name, heldout in saved.items()}
    return sets | _file_sets(config.eval, tokenizer, tokens, config.batch.seq_len)


def heldout_eval_set(name: str, saved: SavedHeldout, tokens: DocumentTokens, settings: EvalConfig,
                     seq_len: int) -> EvalSet:
    """Held-out documents as saved at the start, packed as training packs them (BOS, document,
    separator), cut to about settings.max_tokens tokens of whole documents."""
    rows = heldout_rows(saved, np.arange(len(saved)), seq_len, tokens.separator_id,
                        settings.max_tokens, bos_id=tokens.bos_id)
    texts = [saved.records[i]["text"] for i in rows.doc_ids.tolist()]
    return EvalSet(name, name, rows, _utf8_bytes(texts), _words(texts))


def _file_sets(settings: EvalConfig, tokenizer, tokens: DocumentTokens, seq_len: int) -> dict[str, EvalSet]:
    return {spec.name: _file_set(spec, tokenizer, tokens, seq_len, settings.max_tokens) for spec in settings.sets}


def _file_set(spec: EvalSetSpec, tokenizer, tokens: DocumentTokens, seq_len: int, max_tokens: int) -> EvalSet:
    """An evaluation file of the user's, tokenized into the token cache like a corpus."""
    sources = [SourceSpec(spec.path, spec.text_field)]
    problems = validate(sources).problems
    if problems:
        raise CorpusError(problems, skipped_hint=False)
    store = prepare(sources, tokenizer)
    rows = heldout_rows(store, np.arange(store.n_docs, dtype=np.int64), seq_len,
                        tokens.separator_id, max_tokens, bos_id=tokens.bos_id)
    count = len(rows.doc_ids)  # a prefix of the documents, in store order
    texts = [doc.text for doc in islice(documents(sources), count)]
    return EvalSet(spec.name, spec.kind, rows, _utf8_bytes(texts), _words(texts))


def _words(texts: list[str]) -> int:
    """Words as the token store counts them (whitespace-separated)."""
    return sum(len(text.split()) for text in texts)


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
