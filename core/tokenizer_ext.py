"""Domain tokenizer extension (docs/architecture.md, tokenizer extension): whole domain words become tokens,
and their embedding and lm_head rows start as the mean of the rows of the pieces they replace.

    preview = preview_for_config(config)      # reads the corpus, writes nothing
    print(format_preview(preview))            # candidates, fertility before and after
    apply_extension(run_dir, preview, base_tokenizer)   # the run trains with exactly this
    tokenizer, new_ids = extend_for_run(model, tokenizer, config, run_dir, events)  # in train()

Reads top to bottom: train a domain BPE on the training documents, list the new whole words
it found (candidates), add them to the base tokenizer as vocabulary and merges, resize and
initialise the model, measure fertility; then the run-level steps (derive once, save in the
run folder, reload on resume) and the LoRA rows.

How new tokens enter the tokenizer. `tokenizer.add_tokens` would make them "added tokens",
matched in the raw text before the pre-tokenizer splits it into words: " tacrolimus" would
also match inside " tacrolimuses" (breaking a word in the middle), the word-initial form
and the text-initial form ("Tacrolimus" at the start, without a space) need separate
entries, and `single_word`/`lstrip` either refuse the leading space or lose it on decoding.
Instead the BPE model itself is extended: each new token goes into the vocabulary with
merges appended after the base merges. Appended merges have the lowest priority, so a word
is first taken exactly as far as the base tokenizer takes it (its pieces), and only then do
the new merges join those pieces into the new token. Words the base tokenizer already
handles are untouched unless their final pieces are exactly a pair that a new merge joins.
Vocabulary and merges are what every BPE implementation reads (transformers' per-model
tokenizer classes rebuild the tokenizer from them, and so do GGUF converters), so the saved
tokenizer behaves the same everywhere; a flag such as the BPE's `ignore_merges` would not.
A merge joins two pieces, so a word of k pieces needs k - 1 merges; the steps in between are
existing tokens where possible, else "helper" tokens (e.g. 'rolimus', shared by tacrolimus
and sirolimus), which count towards the maximum and are initialised like the others.

Only whole words are candidates: a domain BPE token that only occurs inside longer words
would be used only where the base pieces of that word happen to end exactly at its
boundaries, and its frequency could not be promised. The domain BPE is trained with the
base tokenizer's own normalizer and pre-tokenizer, so its tokens are already in the base's
form: 'Ġtacrolimus' for byte-level BPE, '▁tacrolimus' for sentencepiece-style BPE. A BPE
trained on plain words would give 'tacrolimus', the form the base uses only where a word
does not follow a space, and the new token would almost never be used.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import RunConfig, TokenizerConfig
from .data import corpus_texts
from .events import ProgressCallback
from .models import load_tokenizer
from .progress import Progress, counted, tick
from .run_folder import RunPaths, list_checkpoints, tokenizer_record
from .tokenstore import backend_tokenizer, tokenizer_fingerprint

PAD_MULTIPLE = 64
"""The resized embedding has a multiple of this many rows (efficient matrix shapes on GPUs)."""
TRAINING_SAMPLE_CHARACTERS = 50_000_000
"""The domain BPE and the word counts use at most about this much training text: tens of
megabytes find the frequent domain words, and counting words is done in Python."""
HELDOUT_SAMPLE_CHARACTERS = 5_000_000
"""Fertility before and after is measured on at most about this much held-out text per corpus."""
METASPACE = "▁"


class ExtensionError(ValueError):
    """The tokenizer cannot be extended as asked; the message says what to do."""


@dataclass
class Candidate:
    """A domain word that could become one token."""

    token: str
    """The token in the base tokenizer's own form: 'Ġtacrolimus' (byte-level), '▁tacrolimus'."""
    text: str
    """How it reads in running text: ' tacrolimus' (a leading space: a word-initial token)."""
    frequency: int
    """Times it occurs as a word in the domain training text: the uses the new token will get."""
    base_pieces: list[str]
    """The base tokens it replaces, e.g. ['Ġtac', 'rol', 'imus']."""
    id: int | None = None
    """Its id once added."""

    @property
    def replaces(self) -> int:
        return len(self.base_pieces)

    @property
    def tokens_saved(self) -> int:
        """Fewer tokens in the domain training text once it is added."""
        return self.frequency * (self.replaces - 1)


# ------------------------------------------------------------------ finding candidates


def train_domain_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int, *, like) -> Any:
    """A BPE (`tokenizers.Tokenizer`) trained on `texts`, splitting words as `like` does."""
    from tokenizers import Tokenizer, models, trainers

    base = _supported_backend(like)
    domain = Tokenizer(models.BPE())
    domain.normalizer = base.normalizer
    domain.pre_tokenizer = word_splitter(base)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False)
    domain.train_from_iterator(texts, trainer=trainer)
    return domain


def word_counts(tokenizer, texts: Iterable[str]) -> Counter:
    """How often each word occurs, in the tokenizer's own word form ('Ġtacrolimus')."""
    backend = backend_tokenizer(tokenizer)
    splitter, counts = word_splitter(backend), Counter()
    for text in texts:
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        counts.update(word for word, _ in splitter.pre_tokenize_str(text))
    return counts


def word_splitter(backend):
    """The base's pre-tokenizer, splitting text into words as its BPE sees them. Sentencepiece-
    style tokenizers may hand BPE the whole text ('▁' marking word starts: transformers 5's
    LlamaTokenizer uses Metaspace(split=False), older files a '▁' normalizer and no
    pre-tokenizer); their merges never cross a '▁', so splitting before each '▁' gives the
    same words."""
    from tokenizers import pre_tokenizers

    pre = backend.pre_tokenizer
    if isinstance(pre, pre_tokenizers.Metaspace) and not pre.split:
        return pre_tokenizers.Metaspace(replacement=pre.replacement, prepend_scheme=pre.prepend_scheme)
    if pre is None and backend.normalizer is not None and METASPACE in backend.normalizer.normalize_str(" a"):
        return pre_tokenizers.Metaspace(prepend_scheme="never")
    return pre


def find_candidates(base_tokenizer, domain_texts: Iterable[str], settings: TokenizerConfig,
                    progress: Progress | None = None) -> tuple[list[Candidate], dict[str, int]]:
    """New whole words of the domain BPE that pass the filters, most tokens saved first, and
    how many were rejected by each filter. The maximum count is applied by extend_tokenizer.
    `progress` hears documents done of all, twice over (learning, then counting, the words)."""
    backend = _supported_backend(base_tokenizer)
    texts = list(domain_texts)
    domain = train_domain_bpe(counted(texts, len(texts), "learning the domain's words", progress),
                              settings.vocab_size, settings.min_frequency, like=base_tokenizer)
    words = word_counts(base_tokenizer, counted(texts, len(texts), "counting the domain's words", progress))
    base_vocab = backend.get_vocab(with_added_tokens=True)
    rule = _word_rule(settings.token_pattern)
    found, rejected = [], Counter()
    for token in domain.get_vocab():
        if token in base_vocab:
            continue
        frequency, text = words.get(token, 0), _token_text(backend, token)
        pieces = [piece.value for piece in backend.model.tokenize(token)]
        reason = _rejection(text.strip(), frequency, pieces, token, rule, settings)
        if reason:
            rejected[reason] += 1
        else:
            found.append(Candidate(token, text, frequency, pieces))
    found.sort(key=lambda c: (-c.tokens_saved, c.token))
    return found, dict(rejected)


def _rejection(word: str, frequency: int, pieces: list[str], token: str, rule,
               settings: TokenizerConfig) -> str | None:
    if frequency == 0:
        return "only inside longer words"
    if len(word) < settings.min_length:
        return f"shorter than {settings.min_length} characters"
    if not rule(word):
        return "not letters only" if not settings.token_pattern else "does not match the token rule"
    if frequency < settings.min_frequency:
        return f"fewer than {settings.min_frequency} occurrences"
    if "".join(pieces) != token:
        return "characters the base tokenizer cannot spell"
    return None


def _word_rule(pattern: str):
    if not pattern:
        return str.isalpha
    compiled = re.compile(pattern)
    return lambda word: compiled.fullmatch(word) is not None


def _token_text(backend, token: str) -> str:
    text = backend.decoder.decode([token]) if backend.decoder is not None else token
    if token.startswith(METASPACE) and not text.startswith(" "):
        text = " " + text  # the Metaspace decoder drops the space of a text's first token
    return text


def _supported_backend(tokenizer):
    """The backend of a tokenizer this module can extend, or an error that says why not."""
    from tokenizers import models

    backend = backend_tokenizer(tokenizer)
    model = backend.model
    if not isinstance(model, models.BPE):
        raise ExtensionError(f"tokenizer extension needs a BPE tokenizer; this one is "
                             f"{type(model).__name__}: train without extension")
    if word_splitter(backend) is None:
        raise ExtensionError("this tokenizer does not split text into words before BPE (no "
                             "pre-tokenizer), so new word tokens cannot be placed; train without extension")
    if model.continuing_subword_prefix or model.end_of_word_suffix:
        raise ExtensionError("tokenizer extension supports BPE tokenizers without a subword prefix "
                             "or suffix (byte-level and sentencepiece-style); train without extension")
    return backend


# ----------------------------------------------------------------- extending the tokenizer


@dataclass
class Extension:
    tokenizer: Any
    """The extended tokenizer (the base's class, reloaded from the extended files)."""
    added: list[Candidate]
    """Candidates that are now one token each, with their ids."""
    helpers: list[str]
    """Tokens added only as steps of the merges that build the added ones."""
    new_tokens: list[str]
    """Every new vocabulary entry (added and helpers), in id order."""
    left_out: list[Candidate] = field(default_factory=list)
    """Candidates that did not fit under the maximum count."""


class _Merges:
    """The BPE's vocabulary and merges as data, grown one candidate at a time."""

    def __init__(self, model: dict, next_id: int, base_model):
        self.vocab: dict[str, int] = model["vocab"]
        self.text_format = bool(model["merges"]) and isinstance(model["merges"][0], str)
        self.pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.rank = {pair: i for i, pair in enumerate(self.pairs)}
        self.base_model, self.next_id = base_model, next_id
        self.new: list[str] = []

    def segment(self, token: str) -> list[str]:
        """The pieces the extended BPE makes of `token` as a word: the base model applies every
        base merge (ours all rank after them), then every merge applies by rank, as in BPE."""
        pieces = [piece.value for piece in self.base_model.tokenize(token)]
        while len(pieces) > 1:
            ranked = [(self.rank[pair], i) for i, pair in enumerate(zip(pieces, pieces[1:], strict=False))
                      if pair in self.rank]
            if not ranked:
                break
            i = min(ranked)[1]
            pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
        return pieces

    def add(self, token: str, budget: float) -> bool:
        """Append merges that make `token` one piece, adding at most `budget` vocabulary
        entries; False (and nothing changed) when that cannot be done."""
        marks = len(self.pairs), len(self.new)
        for _ in range(3):  # a new merge can let an earlier one fire first; go on from there
            pieces = self.segment(token)
            if pieces == [token] or len(self.new) - marks[1] > budget:
                break
            for left, right in self._cheapest_merges(pieces):
                if (left, right) not in self.rank:
                    self.rank[(left, right)] = len(self.pairs)
                    self.pairs.append((left, right))
                if left + right not in self.vocab:
                    self.vocab[left + right] = self.next_id + len(self.new)
                    self.new.append(left + right)
        if self.segment(token) == [token] and len(self.new) - marks[1] <= budget:
            return True
        for pair in self.pairs[marks[0]:]:
            del self.rank[pair]
        for entry in self.new[marks[1]:]:
            del self.vocab[entry]
        del self.pairs[marks[0]:], self.new[marks[1]:]
        return False

    def _cheapest_merges(self, pieces: list[str]) -> list[tuple[str, str]]:
        """The merges (children before parents) that join `pieces` into one token with the
        fewest new vocabulary entries in between."""
        k = len(pieces)

        @functools.cache
        def best(i: int, j: int) -> tuple[int, tuple]:
            if j - i == 1:
                return 0, ()
            own = 0 if (i, j) == (0, k) or "".join(pieces[i:j]) in self.vocab else 1
            options = []
            for m in range(i + 1, j):
                (left_cost, left), (right_cost, right) = best(i, m), best(m, j)
                merge = ("".join(pieces[i:m]), "".join(pieces[m:j]))
                options.append((left_cost + right_cost, left + right + (merge,)))
            cost, merges = min(options, key=lambda option: option[0])
            return cost + own, merges

        return list(best(0, k)[1])

    def serialised(self) -> list:
        return [f"{a} {b}" if self.text_format else [a, b] for a, b in self.pairs]


def extend_tokenizer(tokenizer, candidates: list[Candidate], max_new_tokens: int | None = None) -> Extension:
    """The base tokenizer with the candidates added (best first, while they fit under
    `max_new_tokens` vocabulary entries), saved and reloaded through its own class."""
    backend = _supported_backend(tokenizer)
    next_id = max(backend.get_vocab(with_added_tokens=True).values()) + 1
    budget = math.inf if max_new_tokens is None else max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        path = Path(tmp) / "tokenizer.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        merges = _Merges(data["model"], next_id, backend.model)
        added, left_out = [], []
        for candidate in candidates:
            fits = merges.add(candidate.token, budget - len(merges.new))
            (added if fits else left_out).append(candidate)
        data["model"]["merges"] = merges.serialised()
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        extended = type(tokenizer).from_pretrained(tmp)
    added = [replace(c, id=extended.convert_tokens_to_ids(c.token)) for c in added]
    _check_single_tokens(extended, added)
    words = {c.token for c in added}
    return Extension(extended, added, [t for t in merges.new if t not in words], merges.new, left_out)


def _check_single_tokens(extended, added: list[Candidate]) -> None:
    model = backend_tokenizer(extended).model
    wrong = [c.token for c in added if [t.value for t in model.tokenize(c.token)] != [c.token]]
    if wrong:  # the merges were simulated wrongly: a bug, not a user error
        raise RuntimeError(f"the extended tokenizer does not produce {wrong[:5]} as single tokens")


# ------------------------------------------------------------ resizing and initialising


def resize_and_init(model, old_tokenizer, new_tokenizer, new_tokens: list[str]) -> list[int]:
    """Resize the model for `new_tokenizer` and set each new token's input-embedding row, and
    its lm_head row when the head is not tied, to the mean of the rows of its pieces under
    `old_tokenizer`; returns the new tokens' ids.

    The matrix is padded to a multiple of PAD_MULTIPLE rows. The padding rows belong to no
    token, so the tokenizer never produces them as input; they are zero (a zero logit, not a
    copy of a real token's row), and generation_config.suppress_tokens lists them, so
    `generate` cannot emit an id that decodes to nothing. Training pushes their logits further
    down, since they are never a target."""
    import torch

    old_model = backend_tokenizer(old_tokenizer).model
    ids = new_tokenizer.convert_tokens_to_ids(list(new_tokens))
    pieces = [[piece.id for piece in old_model.tokenize(token)] for token in new_tokens]
    old_rows = model.get_input_embeddings().weight.shape[0]
    first_unused = max(old_rows, len(new_tokenizer))
    model.resize_token_embeddings(first_unused, pad_to_multiple_of=PAD_MULTIPLE, mean_resizing=False)
    rows = model.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        for weight in _token_matrices(model):
            for token_id, token_pieces in zip(ids, pieces, strict=True):
                weight[token_id] = weight[token_pieces].float().mean(0).to(weight.dtype)
            weight[first_unused:] = 0
    never_produced = list(range(len(new_tokenizer), rows))
    generation = getattr(model, "generation_config", None)
    if generation is not None and never_produced:
        generation.suppress_tokens = sorted(set(generation.suppress_tokens or []) | set(never_produced))
    return ids


def _token_matrices(model) -> list:
    """The input embedding, and the lm_head when it is a matrix of its own (tied: written once)."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    return [embedding] if head is None or head.weight is embedding else [embedding, head.weight]


def lora_token_rows(model, ids: list[int]) -> dict[str, list[int]] | None:
    """peft's trainable_token_indices for the new tokens: the embedding, and the lm_head when
    it is not tied (a tied head follows the embedding's trainable rows)."""
    if not ids:
        return None
    names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    rows = {names[model.get_input_embeddings()]: list(ids)}
    if len(_token_matrices(model)) == 2:
        rows[names[model.get_output_embeddings()]] = list(ids)
    return rows


# ------------------------------------------------------------------------ fertility


def fertility(tokenizer, texts: Iterable[str]) -> float:
    """Tokens per whitespace-separated word (special tokens not counted)."""
    texts = list(texts)
    words = sum(len(text.split()) for text in texts)
    encodings = backend_tokenizer(tokenizer).encode_batch_fast(texts, add_special_tokens=False)
    return sum(len(e.ids) for e in encodings) / words if words else 0.0


def words_changed(old_tokenizer, new_tokenizer, texts: Iterable[str]) -> float:
    """The fraction of words of `texts` that the new tokenizer splits differently."""
    counts = word_counts(old_tokenizer, texts)
    old, new = backend_tokenizer(old_tokenizer).model, backend_tokenizer(new_tokenizer).model
    changed = sum(n for word, n in counts.items()
                  if [t.id for t in old.tokenize(word)] != [t.id for t in new.tokenize(word)])
    return changed / max(sum(counts.values()), 1)


# -------------------------------------------------------------------------- preview


@dataclass
class ExtensionTexts:
    domain_training: list[str]
    """Training documents only: nothing is learned from held-out text."""
    domain_heldout: list[str]
    general_heldout: list[str]


@dataclass
class ExtensionPreview:
    """Everything the tokenizer page and `cpt-studio tokenizer extend` show."""

    candidates: list[Candidate]
    """Every candidate that passed the filters, most tokens saved first."""
    rejected: dict[str, int]
    """New domain BPE tokens left out, by reason."""
    extension: Extension
    fertility: dict[str, dict[str, float]]
    """{"domain": {"before": 1.45, "after": 1.31}, "general": {...}} on held-out text."""
    general_words_changed: float | None
    """Fraction of general held-out words split differently (None without a general corpus)."""
    settings: TokenizerConfig

    @property
    def message(self) -> str:
        return summary(self.to_dict())

    def to_dict(self) -> dict:
        ext = self.extension
        return {
            "settings": asdict(self.settings), "candidates": [_candidate_dict(c) for c in self.candidates],
            "added": [_candidate_dict(c) for c in ext.added], "helpers": ext.helpers,
            "new_tokens": ext.new_tokens, "left_out": len(ext.left_out), "rejected": self.rejected,
            "fertility": self.fertility, "general_words_changed": self.general_words_changed,
        }


def summary(record: dict) -> str:
    """One line on an extension (a preview's to_dict() or a saved record)."""
    fert = record["fertility"]
    line = (f"tokenizer extended: {len(record['new_tokens'])} new tokens ({len(record['added'])} "
            f"domain words, {len(record['helpers'])} helpers); fertility of held-out domain text "
            f"{fert['domain']['before']:.3f} -> {fert['domain']['after']:.3f} tokens per word")
    if "general" in fert:
        line += f", general {fert['general']['before']:.3f} -> {fert['general']['after']:.3f}"
    return line


def _candidate_dict(candidate: Candidate) -> dict:
    return {**asdict(candidate), "replaces": candidate.replaces, "tokens_saved": candidate.tokens_saved}


def preview_extension(base_tokenizer, texts: ExtensionTexts, settings: TokenizerConfig,
                      progress: Progress | None = None) -> ExtensionPreview:
    """Find candidates, extend the tokenizer (in memory), and measure it: nothing is written.
    `progress` (cpt_studio.core.progress) hears documents, then candidates, done of all;
    raising Cancelled there stops the preview."""
    candidates, rejected = find_candidates(base_tokenizer, texts.domain_training, settings, progress)
    tick(progress, 0, len(candidates), f"adding {len(candidates):,} candidate tokens")
    extension = extend_tokenizer(base_tokenizer, candidates, settings.max_new_tokens)
    tick(progress, len(candidates), len(candidates), "measuring tokens per word before and after")
    result = {"domain": _before_after(base_tokenizer, extension.tokenizer, texts.domain_heldout)}
    changed = None
    if texts.general_heldout:
        result["general"] = _before_after(base_tokenizer, extension.tokenizer, texts.general_heldout)
        changed = words_changed(base_tokenizer, extension.tokenizer, texts.general_heldout)
    return ExtensionPreview(candidates, rejected, extension, result, changed, settings)


def _before_after(old, new, texts: list[str]) -> dict[str, float]:
    return {"before": fertility(old, texts), "after": fertility(new, texts)}


def texts_for_config(config: RunConfig) -> ExtensionTexts:
    """The run's texts, split by document exactly as the run will split its token stores."""
    texts = corpus_texts(config.corpus, config.eval, config.seed)
    general = texts.get("general")
    return ExtensionTexts(
        list(texts["domain"].training(TRAINING_SAMPLE_CHARACTERS)),
        texts["domain"].heldout_texts(HELDOUT_SAMPLE_CHARACTERS),
        general.heldout_texts(HELDOUT_SAMPLE_CHARACTERS) if general else [])


def preview_for_config(config: RunConfig, base_tokenizer=None,
                       progress: Progress | None = None) -> ExtensionPreview:
    """The preview for a run config, with its base model's tokenizer unless one is given;
    `progress` as preview_extension's."""
    tick(progress, 0, None, "reading the base tokenizer and the training documents")
    if base_tokenizer is None:
        base_tokenizer = load_tokenizer(config.model.name_or_path,
                                        trust_remote_code=config.model.trust_remote_code)
    return preview_extension(base_tokenizer, texts_for_config(config), config.tokenizer, progress)


def format_preview(preview: ExtensionPreview, top: int = 20) -> str:
    ext = preview.extension
    lines = [f"{len(preview.candidates)} candidates; {len(ext.added)} added as tokens, with "
             f"{len(ext.helpers)} helper tokens ({len(ext.new_tokens)} new in all, at most "
             f"{preview.settings.max_new_tokens}); {len(ext.left_out)} over the limit",
             "fertility, tokens per word of held-out text   before    after"]
    for name, figures in preview.fertility.items():
        lines.append(f"  {name:<42} {figures['before']:>7.3f}  {figures['after']:>7.3f}")
    if preview.general_words_changed is not None:
        lines.append(f"general held-out words split differently: {preview.general_words_changed:.2%}")
    lines.append(f"{'token':<24} {'frequency':>9} {'replaces':>8} {'saves':>7}  base pieces")
    for c in ext.added[:top]:
        lines.append(f"{c.text!r:<24} {c.frequency:>9,} {c.replaces:>8} {c.tokens_saved:>7,}  "
                     f"{' '.join(c.base_pieces)}")
    if len(ext.added) > top:
        lines.append(f"... and {len(ext.added) - top} more")
    if preview.rejected:
        lines.append("rejected: " + ", ".join(f"{n} {why}" for why, n in preview.rejected.items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------ in a run


def save_extension(preview: ExtensionPreview, folder: Path, base_tokenizer, *,
                   overwrite: bool = True) -> Path:
    """Write the extended tokenizer and its record into `folder`, renamed into place, so a
    folder with a record is complete. Without `overwrite`, an existing folder is kept (another
    process of a multi-GPU run got there first) and this extension is dropped."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    preview.extension.tokenizer.save_pretrained(tmp)
    record = {"base_tokenizer": tokenizer_fingerprint(base_tokenizer), **preview.to_dict()}
    tokenizer_record(tmp).write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    if overwrite:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not tokenizer_record(folder).exists():
            raise
    return folder


def load_extension(folder: Path, base_tokenizer) -> tuple[Any, dict]:
    """The saved extended tokenizer and its record; refuses one made for another base."""
    record = json.loads(tokenizer_record(folder).read_text(encoding="utf-8"))
    if record["base_tokenizer"] != tokenizer_fingerprint(base_tokenizer):
        raise ExtensionError(f"{folder} extends another base tokenizer than this run's model; "
                             "delete that folder to derive the extension again from this model")
    return type(base_tokenizer).from_pretrained(folder), record


def apply_extension(run_dir: Path, preview: ExtensionPreview, base_tokenizer) -> Path:
    """Make a run that has not trained yet use this extension: its config says extend, and
    the extended tokenizer is saved in the run folder, where training takes it from."""
    paths = RunPaths(Path(run_dir))
    if list_checkpoints(paths.root):
        raise ExtensionError(f"{paths.root} has checkpoints: the tokenizer cannot change during "
                             "a run; create a new run with the extension")
    config = RunConfig.load(paths.config)
    config.tokenizer = replace(preview.settings, extend=True)
    paths.config.write_text(config.to_json())
    return save_extension(preview, paths.tokenizer, base_tokenizer)


def extend_for_run(model, tokenizer, config: RunConfig, run_dir: Path,
                   progress: ProgressCallback | None = None) -> tuple[Any, list[int]]:
    """The tokenizer a run trains with, and the new rows' ids (none without extension).

    The extension is derived once, from the run's training documents, and saved in the run
    folder (tokenizer/); a resumed run, or one the extension was applied to beforehand, loads
    it from there. Either way the model is resized and initialised here, before the Trainer
    loads any checkpoint weights into it."""
    if not config.tokenizer.extend:
        return tokenizer, []
    folder = RunPaths(Path(run_dir)).tokenizer
    if not tokenizer_record(folder).exists():
        _report(progress, "finding domain tokens in the training documents")
        save_extension(preview_for_config(config, tokenizer), folder, tokenizer, overwrite=False)
    extended, record = load_extension(folder, tokenizer)
    ids = resize_and_init(model, tokenizer, extended, record["new_tokens"])
    _report(progress, summary(record), new_tokens=len(ids), added=len(record["added"]),
            helpers=len(record["helpers"]), fertility=record["fertility"], vocab_size=len(extended),
            embedding_rows=model.get_input_embeddings().weight.shape[0])
    return extended, ids


def _report(progress: ProgressCallback | None, message: str, **fields) -> None:
    if progress is not None:
        progress({"type": "status", "state": "running", "phase": "tokenizer", "message": message, **fields})
