"""How far the domain is from general text for this base model, and the replay ratio it suggests.

    distance = measure_distance(config)         # loads the base model, reads a sample of each corpus
    suggestion = suggest_replay(distance)       # ReplaySuggestion: ratio, band, reason in words
    print(format_suggestion(distance, suggestion))

Three measurements on a sample of each corpus (the first documents, up to `max_characters`):
- perplexity ratio: the base model's perplexity on the domain sample over its perplexity on
  the general sample (packed and measured as held-out evaluation measures it:
  cpt_studio.core.evaluation). Text the model already predicts well is near;
- fertility ratio: tokens per word on the domain sample over tokens per word on the general
  sample, with the model's tokenizer (cpt_studio.core.tokenizer_ext.fertility). A domain the
  tokenizer splits into many more pieces (another language, chemical names, code) is far;
- vocabulary overlap: the fraction of the domain sample's words (lower-cased, punctuation
  stripped, counted with repeats) that occur in the general sample. A domain that speaks
  the general sample's words is near.

Each measurement falls into a band of DISTANCE_BANDS (the table below); the suggestion is the
band of the farthest measurement: replay costs a few percent of the domain tokens, while
forgetting costs the general ability the run is meant to keep, so one sign of distance is
enough to raise it.

The replay ratios follow the continual pre-training literature: Ibrahim et al. 2024, "Simple
and Scalable Strategies to Continually Pre-train Large Language Models" (TMLR; arXiv
2403.08763) compare replay ratios from 0 to 50% on a weak shift (English to English, the Pile
to SlimPajama) and a strong one (English to German): a few percent of replay suffices for the
weak shift, and the strong shift needs much more (their headline models use 5% and 25%).
The thresholds between the bands are this application's own heuristics, not measured in
that work: a starting point for the sweep (`cpt-studio sweep`), not a guarantee.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .config import RunConfig
from .corpus import SourceSpec
from .heldout import SavedHeldout, documents
from .progress import Progress, tick


@dataclass(frozen=True)
class DistanceBand:
    name: str
    replay_ratio: float
    max_perplexity_ratio: float
    """Domain perplexity / general perplexity of the base model below this: in this band."""
    max_fertility_ratio: float
    """Domain tokens per word / general tokens per word below this: in this band."""
    min_overlap: float
    """Fraction of domain words found in the general sample at least this: in this band."""
    meaning: str


DISTANCE_BANDS = (
    DistanceBand("near", 0.05, 1.5, 1.15, 0.85,
                 "text much like general text: the usual minimum of replay keeps general ability"),
    DistanceBand("medium", 0.10, 2.5, 1.35, 0.70,
                 "a specialised register of the same language (medicine, law, finance)"),
    DistanceBand("far", 0.15, 4.0, 1.70, 0.50,
                 "text the model and its tokenizer handle poorly (heavy jargon, code, old spelling)"),
    DistanceBand("very far", 0.25, float("inf"), float("inf"), 0.0,
                 "close to another language for this model (Ibrahim et al.'s English to German shift)"),
)
"""The bands, nearest first: a measurement is in the first band whose limit it meets
(perplexity and fertility ratios below the maximum, overlap at least the minimum)."""


@dataclass
class DomainDistance:
    domain_ppl: float
    general_ppl: float
    domain_fertility: float
    """Tokens per whitespace-separated word."""
    general_fertility: float
    overlap: float
    """Fraction of the domain sample's word occurrences whose word occurs in the general sample."""
    domain_words: int
    general_words: int

    @property
    def perplexity_ratio(self) -> float:
        return self.domain_ppl / self.general_ppl

    @property
    def fertility_ratio(self) -> float:
        return self.domain_fertility / self.general_fertility


@dataclass
class ReplaySuggestion:
    replay_ratio: float
    band: str
    reason: str
    """Why, in words: each measurement and its band."""
    bands: dict[str, str]
    """Measurement ('perplexity', 'fertility', 'overlap') -> its band's name."""


def band_of(measure: str, value: float) -> DistanceBand:
    """The nearest band whose limit `value` meets ('perplexity' and 'fertility' ratios,
    'overlap')."""
    for band in DISTANCE_BANDS:
        if measure == "overlap" and value >= band.min_overlap:
            return band
        if measure == "perplexity" and value < band.max_perplexity_ratio:
            return band
        if measure == "fertility" and value < band.max_fertility_ratio:
            return band
    return DISTANCE_BANDS[-1]


def suggest_replay(distance: DomainDistance) -> ReplaySuggestion:
    """The replay ratio of the farthest band any measurement falls into, with the reason."""
    values = {"perplexity": distance.perplexity_ratio, "fertility": distance.fertility_ratio,
              "overlap": distance.overlap}
    bands = {measure: band_of(measure, value) for measure, value in values.items()}
    farthest = max(bands.values(), key=DISTANCE_BANDS.index)
    deciding = [m for m, b in bands.items() if b is farthest]
    reason = (f"distance from general text for this model: {farthest.name} ({farthest.meaning}); "
              f"the base model's perplexity is {values['perplexity']:.2f}x on domain text "
              f"({bands['perplexity'].name}), its tokenizer uses {values['fertility']:.2f}x the "
              f"tokens per word ({bands['fertility'].name}), and {values['overlap']:.0%} of the "
              f"domain's words occur in the general sample ({bands['overlap'].name}); "
              f"{', '.join(deciding)} decide{'s' if len(deciding) == 1 else ''}: "
              f"replay {farthest.replay_ratio:.0%}")
    return ReplaySuggestion(farthest.replay_ratio, farthest.name, reason,
                            {m: b.name for m, b in bands.items()})


# -- measuring -----------------------------------------------------------------------------

WORD = re.compile(r"\w+", re.UNICODE)


def word_counts(texts: list[str]) -> Counter:
    """Lower-cased words (runs of letters and digits) with their counts."""
    return Counter(w.lower() for text in texts for w in WORD.findall(text))


def vocabulary_overlap(domain_texts: list[str], general_texts: list[str]) -> float:
    """The fraction of the domain's word occurrences whose word occurs in the general texts."""
    domain, general = word_counts(domain_texts), word_counts(general_texts)
    total = sum(domain.values())
    return sum(n for word, n in domain.items() if word in general) / total if total else 0.0


def sample_texts(specs: list[SourceSpec], max_characters: int) -> list[str]:
    """The corpus's first documents, up to about `max_characters` (bad records skipped)."""
    texts, total = [], 0
    for doc in documents(specs):
        texts.append(doc.text)
        total += len(doc.text)
        if total >= max_characters:
            break
    return texts


def sample_perplexity(model, tokenizer, texts: list[str], seq_len: int, separator: str = "",
                      max_tokens: int = 20_000, batch_size: int = 8,
                      progress: Progress | None = None) -> float:
    """The model's perplexity on `texts`, packed as training packs them (BOS, document,
    separator), measured as held-out text is (cpt_studio.core.evaluation); `progress` hears
    each batch."""
    from .document_tokens import document_tokens
    from .evaluation import heldout_perplexity, heldout_rows

    tokens = document_tokens(tokenizer, separator)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    sample = SavedHeldout([{"doc": i, "text": text, "ids": ids}
                           for i, (text, ids) in enumerate(zip(texts, encoded, strict=True))])
    rows = heldout_rows(sample, np.arange(len(sample)), seq_len, tokens.separator_id, max_tokens,
                        bos_id=tokens.bos_id)
    return heldout_perplexity(model, rows, batch_size, progress=progress).ppl


MEASURE_STAGES = 4
"""Progress steps of measure_distance: the samples, the model, each perplexity."""


def measure_distance(config: RunConfig, *, max_characters: int = 100_000,
                     max_tokens: int = 20_000, progress: Progress | None = None) -> DomainDistance:
    """Measure the domain's distance from the general corpus for config.model (loaded here, on
    the CPU unless a GPU is there) on the first documents of each. ValueError without a
    general corpus. `progress` hears each of MEASURE_STAGES stages as it begins and each batch
    of the perplexities (a Cancelled it raises stops the measurement there)."""
    from .models import load_model_and_tokenizer
    from .tokenizer_ext import fertility

    if not config.corpus.general:
        raise ValueError("the domain's distance is measured against general text: add a general "
                         "(replay) source to the corpus")
    tick(progress, 0, MEASURE_STAGES, "reading a sample of each corpus")
    domain = sample_texts(config.corpus.domain, max_characters)
    general = sample_texts(config.corpus.general, max_characters)
    tick(progress, 1, MEASURE_STAGES, "loading the base model")
    model, tokenizer = load_model_and_tokenizer(config.model.name_or_path,
                                                trust_remote_code=config.model.trust_remote_code,
                                                allow_pickle=config.model.allow_pickle)
    _to_device(model)
    seq_len, separator = config.batch.seq_len, config.corpus.separator
    domain_ppl = sample_perplexity(model, tokenizer, domain, seq_len, separator, max_tokens,
                                   progress=_stage(progress, 2, "the base model's perplexity on the domain sample"))
    general_ppl = sample_perplexity(model, tokenizer, general, seq_len, separator, max_tokens,
                                    progress=_stage(progress, 3, "the base model's perplexity on the general sample"))
    return DomainDistance(
        domain_ppl=domain_ppl, general_ppl=general_ppl,
        domain_fertility=fertility(tokenizer, domain), general_fertility=fertility(tokenizer, general),
        overlap=vocabulary_overlap(domain, general),
        domain_words=sum(len(t.split()) for t in domain), general_words=sum(len(t.split()) for t in general))


def _stage(progress: Progress | None, stage: int, what: str) -> Progress | None:
    """A perplexity's batches reported as stage `stage` of MEASURE_STAGES, counted in words."""
    if progress is None:
        return None
    progress(stage, MEASURE_STAGES, what)
    return lambda done, total, _: progress(stage, MEASURE_STAGES, f"{what}: {done} of {total} sequences")


def _to_device(model) -> None:
    import torch

    if torch.cuda.is_available():
        model.to("cuda")


def format_suggestion(distance: DomainDistance, suggestion: ReplaySuggestion) -> str:
    """The measurements, the band table and the suggestion, as text for the terminal."""
    lines = ["                     domain    general    ratio   band",
             f"perplexity        {distance.domain_ppl:9.2f}  {distance.general_ppl:9.2f}  "
             f"{distance.perplexity_ratio:7.2f}   {suggestion.bands['perplexity']}",
             f"tokens per word   {distance.domain_fertility:9.3f}  {distance.general_fertility:9.3f}  "
             f"{distance.fertility_ratio:7.2f}   {suggestion.bands['fertility']}",
             f"words in general  {distance.overlap:9.1%}                       {suggestion.bands['overlap']}",
             f"(samples: {distance.domain_words:,} domain and {distance.general_words:,} general words)",
             "", "bands: " + "; ".join(
                 f"{b.name} {b.replay_ratio:.0%} (ppl < {b.max_perplexity_ratio:g}x, fertility < "
                 f"{b.max_fertility_ratio:g}x, overlap >= {b.min_overlap:.0%})"
                 for b in DISTANCE_BANDS[:-1]) + f"; else {DISTANCE_BANDS[-1].name} "
                 f"{DISTANCE_BANDS[-1].replay_ratio:.0%}",
             "", f"suggested replay ratio: {suggestion.replay_ratio:.0%} ({suggestion.band})",
             suggestion.reason]
    return "\n".join(lines)
