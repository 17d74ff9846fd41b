"""Instruction tuning as a stage of the same run: an SFT run starts from a checkpoint of an
earlier run (CPT, or SFT again), records it, and is an ordinary run folder (events,
checkpoints, evaluation, history) whose "domain" data is its instruction examples.

    config = sft_config(cpt_run_dir, step=200, data=["qa.jsonl"])   # SFT defaults, parent recorded
    run_dir = create_sft_run(config)            # then runs.start_worker(run_dir), as for CPT
    # in the worker, cpt_studio.core.training calls:
    data = prepare_sft_data(config, tokenizer, paths, events)      # RunData, SFT in place of domain

The starting weights are exactly the parent checkpoint's, resolved as for every chained run
(cpt_studio.core.chain: a full checkpoint's folder, or a LoRA checkpoint merged into the run's
start_model/, on which an SFT LoRA then trains).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chain import create_chained_run, parent_of
from .config import RunConfig
from .corpus import SourceSpec
from .data import (
    CorpusChangedError,
    RunData,
    changed_corpora_record,
    heldout_ids,
    prepare_run_data,
    record_corpus,
)
from .document_tokens import DocumentTokens
from .evaluation import EvalSet
from .events import EventWriter
from .heldout import training_ids
from .run_folder import RunPaths, checkpoint_folder, checkpoint_step, last_checkpoint
from .sft_data import (
    ChatTemplate,
    PackedExamples,
    SftExample,
    choose_template,
    read_examples_and_skipped,
    row_length_for,
    tokenize_examples,
)

__all__ = ["SFT_LORA_PEAK_LR", "SFT_SCHEDULE", "SftPreview", "create_sft_run", "default_checkpoint", "parent_of", "prepare_sft_data",
           "preview_examples", "sft_config", "sft_peak_lr"]

SFT_SCHEDULE = {"peak_lr": 2e-5, "warmup_ratio": 0.03, "decay": "cosine", "min_lr_ratio": 0.0,
                "weight_decay": 0.0, "epochs": 3.0, "max_steps": None, "token_budget": None}
"""The schedule an SFT run gets unless told otherwise: the Alpaca recipe's (peak 2e-5, 3% warmup,
cosine to 0, no weight decay, 3 epochs), which fine-tunes without the high rates that erase
what CPT taught."""

SFT_LORA_PEAK_LR = 2e-4
"""An SFT run's peak learning rate with LoRA adapters (Alpaca-LoRA's and QLoRA's recipes use 2e-4
to 3e-4), ten times the full-parameter SFT_SCHEDULE["peak_lr"]."""


def sft_peak_lr(method: str) -> float:
    """The default peak learning rate of an SFT run trained by `method` ('full' or 'lora')."""
    return SFT_LORA_PEAK_LR if method == "lora" else SFT_SCHEDULE["peak_lr"]


def sft_config(parent_run: Path | str, step: int, data: list[str], *, name: str | None = None,
               method: str | None = None, replay_ratio: float = 0.0) -> RunConfig:
    """An SFT run's config from its parent run's: the same model settings, batch, evaluation,
    guard and benchmarks (the same probes and tasks score both), the general corpus kept (it
    is measured for forgetting, and replayed at `replay_ratio`), no domain corpus, SFT_SCHEDULE,
    and the parent recorded (parent_run, parent_step). `method`: 'full' or 'lora'
    (default: the parent's). FileNotFoundError when the run has no checkpoint at `step`."""
    parent_dir = Path(parent_run).expanduser().resolve()
    checkpoint_folder(parent_dir, step)  # refuses a step that is not kept, naming those that are
    config = RunConfig.load(RunPaths(parent_dir).config)
    config = copy.deepcopy(config)
    config.name = name or f"{config.name} SFT"
    config.stage = "sft"
    config.corpus.domain, config.corpus.replay_ratio = [], replay_ratio
    config.tokenizer.extend = False  # the checkpoint's tokenizer is the extended one
    config.schedule.new_token_lr_scale = None  # its new rows are trained now: they follow the embeddings
    config.method.kind = method or config.method.kind
    for key, value in SFT_SCHEDULE.items():
        setattr(config.schedule, key, value)
    config.schedule.peak_lr = sft_peak_lr(config.method.kind)
    config.sft.data = [str(Path(p).expanduser().resolve()) for p in data]
    config.parent_run, config.parent_step = str(parent_dir), step
    return config


def create_sft_run(config: RunConfig, root: Path | None = None) -> Path:
    """A new run folder for an SFT config: cpt_studio.core.chain.create_chained_run (its examples
    checked first, SftDataError with every bad record; the starting weights resolved from
    parent_run / parent_step; preflight). Blocks while it merges a LoRA parent."""
    return create_chained_run(config, root)


@dataclass
class SftPreview:
    """The instruction data as the model will see it (preview_examples)."""

    count: int
    """Examples in all files."""
    template: str
    """The chat template that renders them, in words (ChatTemplate.source)."""
    examples: list[tuple[str, list[tuple[str, bool]]]]
    """(file:line, pieces of (text, trained)) of the first examples; trained pieces are responses."""
    skipped: list[str] = field(default_factory=list)
    """The bad records sft.skip_bad leaves out, each as "file line N: why"."""


def preview_examples(config: RunConfig, count: int = 3) -> SftPreview:
    """The first `count` examples of sft.data rendered with the template the run would choose
    for the tokenizer it starts from (the parent checkpoint's, else model.name_or_path's),
    the trained pieces (the responses, end-of-turn included) marked. Raises SftDataError with
    every bad record (file and line), TemplateError for a template that cannot be used, and
    ModelError when the tokenizer cannot be loaded."""
    from .models import load_tokenizer, load_tokenizer_from_folder
    from .sft_data import preview

    examples, skipped = read_examples_and_skipped(config.sft)
    trust = config.model.trust_remote_code
    tokenizer = (load_tokenizer_from_folder(checkpoint_folder(config.parent_run, config.parent_step), trust)
                 if config.parent_run else load_tokenizer(config.model.name_or_path, trust_remote_code=trust))
    template = choose_template(tokenizer, config.sft.template)
    return SftPreview(len(examples), template.source,
                      [(e.origin, preview(tokenizer, template.text, e.messages)) for e in examples[:count]],
                      [str(p) for p in skipped])


def default_checkpoint(run_dir: Path | str) -> tuple[int, str]:
    """The checkpoint an SFT run starts from unless told otherwise, and why: the run's
    recommended one (as the store marks it), else its last. FileNotFoundError without one."""
    from .store import connection, index_run, run_checkpoints

    with connection() as db:
        rows = [r for r in run_checkpoints(db, index_run(db, run_dir)) if r["recommended"] and r["exists"]]
    if rows:
        return int(rows[-1]["step"]), "the recommended checkpoint"
    last = last_checkpoint(Path(run_dir))
    if last is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet; train it (or resume it) first")
    return checkpoint_step(last), "the last checkpoint (none is recommended)"


@dataclass
class SftSize:
    """The instruction data as the plan counts it (sft_size): what a run would train on."""

    examples: int
    """Examples in all files (bad ones left out under sft.skip_bad)."""
    rows: int
    """Training rows of batch.seq_len tokens, whole examples packed (the held-out ones not)."""
    tokens: int
    """Tokens of the training examples, prompts and responses (cut at batch.seq_len)."""
    heldout_tokens: int
    """Tokens of the held-out examples one evaluation scores (eval.max_tokens at most)."""
    training: int = 0
    """Training examples (those not held out), before any is left out for the cut."""
    cut: int = 0
    """Training examples longer than batch.seq_len, cut to it (the end of their response untrained)."""
    dropped: int = 0
    """Of those, the ones left out: the cut left no response token."""
    longest: int = 0
    """Tokens of the longest training example, before the cut."""
    longest_origin: str = ""
    """Where it is: "FILE line N"."""


def sft_size(config: RunConfig, tokenizer) -> SftSize:
    """What the worker's prepare_sft_data will make of sft.data with `tokenizer` (the one the
    run starts from), counted without a run folder: the same template choice, held-out split,
    tokenization and packing. Raises SftDataError / TemplateError as the run would."""
    examples, _ = read_examples_and_skipped(config.sft)
    template = choose_template(tokenizer, config.sft.template)
    heldout = heldout_ids("sft", len(examples), config.eval, config.seed)
    part = _sft_part(config, tokenizer, template, examples, heldout, None)
    train = part.train.examples
    return SftSize(len(examples), len(part.train), sum(len(ids) for ids in train.ids),
                   sum(len(ids) for ids in part.heldout.examples.ids),
                   len(train.ids) + len(train.dropped), train.cut, len(train.dropped), train.longest,
                   train.longest_origin)


# ------------------------------------------------------------------ the data, in the worker

@dataclass
class SftPart:
    """The instruction examples in the place of the domain corpus: training rows, and the
    held-out examples scored on their responses only (the "domain" evaluation set)."""

    train: PackedExamples
    heldout: PackedExamples
    response_bytes: int
    response_words: int
    name: str = "domain"

    def eval_set(self, tokens: DocumentTokens, settings, seq_len: int) -> EvalSet:
        return EvalSet(self.name, "domain", self.heldout, self.response_bytes, self.response_words)


def prepare_sft_data(config: RunConfig, tokenizer, paths: RunPaths, events: EventWriter | None = None, *,
                     accept_changed_corpus: bool = False) -> RunData:
    """The run's data with the SFT examples in place of the domain corpus. Sets the chat
    template on `tokenizer` (so every checkpoint saves it) and in the run folder; a resume uses
    the saved one. Examples are split by the run's held-out size and seed."""
    template = run_template(tokenizer, config, paths)
    tokenizer.chat_template = template.text
    examples, skipped = read_examples_and_skipped(config.sft)
    if skipped:
        said = f"{len(skipped):,} bad instruction record(s) left out (sft.skip_bad), e.g. {skipped[0]}"
        logging.getLogger(__name__).warning(said)  # the log pane shows the worker's log
        if events is not None:
            events.emit("log", None, level="warning", message=said)
    specs = [SourceSpec(path) for path in config.sft.data]
    if not accept_changed_corpus and changed_corpora_record(paths.root, {"sft": specs}):
        raise CorpusChangedError("the instruction data changed since this run started; restore the "
                                 "files, start a new run, or resume with --accept-changed-corpus")
    heldout = heldout_ids("sft", len(examples), config.eval, config.seed)
    _save_heldout(paths, examples, heldout)
    record_corpus(paths.root, "sft", specs)
    part = _sft_part(config, tokenizer, template, examples, heldout, events)
    return prepare_run_data(config.corpus, config.eval, tokenizer, paths.root, seq_len=config.batch.seq_len,
                            seed=config.seed, progress=events, accept_changed_corpus=accept_changed_corpus,
                            domain=part)


def run_template(tokenizer, config: RunConfig, paths: RunPaths) -> ChatTemplate:
    """The template saved in the run folder, else the one sft.template chooses (then saved)."""
    if paths.chat_template.is_file():
        return ChatTemplate(paths.chat_template.read_text(encoding="utf-8"), f"the run's {paths.chat_template.name}")
    template = choose_template(tokenizer, config.sft.template)
    paths.chat_template.write_text(template.text, encoding="utf-8")
    return template


def _save_heldout(paths: RunPaths, examples: list[SftExample], heldout: np.ndarray) -> None:
    path = paths.heldout("sft")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for i in heldout.tolist():
            record = {"example": i, "origin": examples[i].origin, "messages": examples[i].messages}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _sft_part(config: RunConfig, tokenizer, template: ChatTemplate, examples: list[SftExample],
              heldout: np.ndarray, events: EventWriter | None) -> SftPart:
    seq_len, pad = config.batch.seq_len, _pad_id(tokenizer)
    train = tokenize_examples(tokenizer, template.text, [examples[i] for i in training_ids(len(examples), heldout)], seq_len)
    kept = _within_tokens([examples[i] for i in heldout.tolist()], tokenizer, template.text, seq_len,
                          config.eval.max_tokens)
    if not train.ids:
        raise ValueError(f"batch.seq_len: none of the {len(train.dropped):,} training instruction examples has a "
                         f"response token within its first {seq_len:,} tokens (the longest, {train.longest_origin}, "
                         f"has {train.longest:,}); "
                         f"raise batch.seq_len to {row_length_for(train.longest):,}, or shorten the prompts")
    if heldout.size and not kept[1]:  # else every evaluation scores nothing (perplexity 1.0, no gain)
        raise ValueError(f"batch.seq_len: none of the {heldout.size:,} held-out instruction examples has a "
                         f"response token within its first {seq_len:,} tokens (the longest, {kept[0].longest_origin}, "
                         f"has {kept[0].longest:,}), so the run's evaluation would score nothing; raise "
                         f"batch.seq_len to {row_length_for(kept[0].longest):,}, or hold out more examples "
                         "(eval.heldout_count)")
    rows = PackedExamples(train, seq_len, pad)
    if events is not None:
        cut = (f"; {train.cut} longer than {seq_len} tokens were cut to it ({len(train.dropped)} "
               "left out: no response token left)") if train.cut else ""
        events.emit("status", None, state="running", phase="tokenizing",
                    message=f"instruction data: {len(train.ids):,} training examples in {len(rows):,} rows "
                            f"({rows.trained_tokens:,} response tokens), {len(kept[1]):,} held out; "
                            f"template: {template.source}{cut}")
    return SftPart(rows, PackedExamples(kept[0], seq_len, pad),
                   sum(len(e.response_text().encode("utf-8")) for e in kept[1]),
                   sum(len(e.response_text().split()) for e in kept[1]))


def _within_tokens(examples: list[SftExample], tokenizer, template: str, seq_len: int, max_tokens: int):
    """The held-out examples tokenized, cut to about `max_tokens` tokens of whole examples
    (at least one); returns (TokenizedExamples, the examples kept)."""
    tokenized = tokenize_examples(tokenizer, template, examples, seq_len)
    dropped = set(tokenized.dropped)
    kept = [e for i, e in enumerate(examples) if i not in dropped]
    total, count = 0, 0
    for ids in tokenized.ids:
        if count and total + len(ids) > max_tokens:
            break
        total, count = total + len(ids), count + 1
    tokenized.ids, tokenized.labels = tokenized.ids[:count], tokenized.labels[:count]
    return tokenized, kept[:count]


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
