"""The checks every entry point runs before a run starts: the config, the model, what the
model and this machine can do with the settings, and the corpus.

    checked = preflight(config)        # every problem and every warning at once
    checked = require(config)          # the same, raising ValueError when there is a problem

A problem blocks the run (it cannot start, or would fail); a warning says what the run will do
that the settings may not have meant, and lets it start. `cpt-studio train` (before it creates
the run folder), the dry run (cpt_studio.core.plan), the worker (before it loads anything) and
the wizard's summary all call these, so what one refuses the others refuse with the same words.
Each sentence starts with the setting's dotted path and ends with the fix.

The checks that need the planned run's size (its steps, tokens, memory and time) are
`run_warnings`, which cpt_studio.core.plan calls once it has counted the corpus; the interval
checks need only the step count, so `preflight` runs them itself when schedule.max_steps sets it.
No weights are loaded: the model is built on the meta device for its module names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import ftfy
import psutil
import torch
from ftfy.badness import BADNESS_RE

from .config import RunConfig
from .corpus import Document, SourceSpec, read_sources, validate
from .document_tokens import DocumentTokens, SeparatorError, document_tokens
from .estimate import TIGHT_FRACTION, MemoryEstimate, format_bytes
from .hf_imports import transformers_names
from .models import ModelError, check_model, load_tokenizer_from_folder
from .recipe import (
    Hardware,
    ewc_group_size,
    flash_attn_installed,
    flex_attention_available,
    liger_model_types,
    lora_size,
    lora_targets,
    meta_model,
)

# transformers is imported inside the functions that use it: it takes seconds to import, and
# the desktop app imports this module when it starts (the wizard's model and summary pages).


PASSES_WARNING = 4.0
"""More passes over the domain corpus than this is a warning. Muennighoff et al. (2023),
"Scaling Data-Constrained Language Models", found up to about 4 epochs of repeated data
almost as useful as new data, and quickly diminishing returns beyond (the model starts to
memorise the repeated text)."""

EVAL_SHARE_WARNING = 0.25
"""Evaluation taking more than this share of the run's time is a warning."""

MOJIBAKE_SAMPLE = 2_000
"""The mojibake check reads the first this many documents of each corpus and evaluation set
(in file order), so it takes about a second whatever the corpus's size."""

MOJIBAKE_EXAMPLES = 3
"""Documents named (file:line) in the mojibake warning."""


@dataclass
class Preflight:
    """What `preflight` found, and what it resolved on the way (for the plan)."""

    problems: list[str] = field(default_factory=list)
    """What blocks the run: each a sentence naming the setting and the fix."""
    warnings: list[str] = field(default_factory=list)
    """What the run can start with but the user should know, in the same form."""
    folder: Path | None = None
    """The model folder, when the model could be resolved."""
    tokens: DocumentTokens | None = None
    """BOS and separator the documents will be packed with."""
    model_config: object | None = None


def require(config: RunConfig, *, read_corpus: bool = True) -> Preflight:
    """`preflight`, raising ValueError with every problem (one a line) when there is one."""
    checked = preflight(config, read_corpus=read_corpus)
    if checked.problems:
        raise ValueError("the run cannot start:\n" + "\n".join(f"  {p}" for p in checked.problems))
    return checked


def preflight(config: RunConfig, *, read_corpus: bool = True) -> Preflight:
    """Every problem and warning that needs no token counts. `read_corpus`: also read every
    record of every source (a corpus that yields no documents, bad records, a held-out count
    the corpus cannot give); the mojibake check reads its sample (MOJIBAKE_SAMPLE) either way."""
    checked = Preflight(problems=config.validate(), warnings=config.warnings())
    _check_model(config, checked)
    if checked.model_config is not None:
        problems, warnings = _model_checks(config, checked.model_config, checked.folder)
        checked.problems += problems
        checked.warnings += warnings
    checked.problems += machine_problems(config)
    if read_corpus:
        checked.problems += corpus_problems(config)
    checked.warnings += (heldout_warnings(config) + sft_heldout_warnings(config) + sft_skipped_warnings(config)
                         + mojibake_warnings(config))
    if config.schedule.max_steps:  # the run's length is known without counting the corpus
        checked.warnings += interval_warnings(config, config.schedule.max_steps)
    return checked


def _check_model(config: RunConfig, checked: Preflight) -> None:
    (AutoConfig,) = transformers_names("AutoConfig")

    if not config.model.name_or_path:
        return  # config.validate() said so
    model = config.model
    try:
        checked.folder = check_model(model.name_or_path, allow_download=model.allow_download,
                                     trust_remote_code=model.trust_remote_code, allow_pickle=model.allow_pickle)
        checked.model_config = AutoConfig.from_pretrained(checked.folder, trust_remote_code=model.trust_remote_code)
        tokenizer = load_tokenizer_from_folder(checked.folder, model.trust_remote_code)
    except (ModelError, OSError, ValueError) as exc:
        checked.problems.append(f"model.name_or_path: {exc}")
        return
    try:
        checked.tokens = document_tokens(tokenizer, config.corpus.separator)
    except SeparatorError as exc:
        message = str(exc).replace("the tokenizer", f"the tokenizer in {checked.folder}", 1)
        checked.problems.append(message if message.startswith("corpus.") else f"corpus.separator: {message}")


def model_choice_problems(config: RunConfig) -> list[str]:
    """What is wrong with the chosen model itself, whatever the other settings (the wizard's
    model page): it cannot be found or trained, or its tokenizer cannot separate documents."""
    checked = Preflight()
    _check_model(config, checked)
    return checked.problems


def model_problems(config: RunConfig, model_config, folder: Path) -> list[str]:
    """Settings this model cannot do: a sequence longer than its context, LoRA targets it
    lacks (so nothing, or less than asked, would train), gradient checkpointing or an
    attention kernel it does not support, an EWC group with no weights in it."""
    return _model_checks(config, model_config, folder)[0]


def _model_checks(config: RunConfig, model_config, folder: Path) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the settings with this model."""
    problems = []
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    context = getattr(text, "max_position_embeddings", None)
    if context and config.batch.seq_len > context:
        problems.append(f"batch.seq_len: {config.batch.seq_len} is longer than the model's context "
                        f"({context} positions, max_position_embeddings in {folder}/config.json); "
                        f"use at most {context}")
    model = meta_model(model_config, config)
    if model is None:
        return problems, []
    lora_problems, warnings = _lora_checks(config, model)
    problems += lora_problems
    if config.system.gradient_checkpointing == "on" and not getattr(model, "supports_gradient_checkpointing", False):
        problems.append(f"system.gradient_checkpointing: {type(model).__name__} does not support it; "
                        "set it to off or auto")
    problems += _kernel_support(config, model, model_config)
    if config.ewc.enabled and ewc_group_size(model, config) == 0:
        problems.append(f"ewc.group: the model has no weights in group {config.ewc.group!r}; "
                        "choose 'trainable' or another group")
    return problems, warnings


def _lora_checks(config: RunConfig, model) -> tuple[list[str], list[str]]:
    """A LoRA target the model lacks (peft would train only the others, or refuse with none)
    is a problem; adapters with more parameters than the model itself, a warning."""
    if config.method.kind != "lora":
        return [], []
    found = lora_targets(model, config.method.target_modules)
    missing = [t for t, names in found.items() if not names]
    trainable = lora_size(model, config)
    parameters = sum(p.numel() for p in model.parameters())
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear)})
        return [f"method.target_modules: the model has no {', '.join(missing)} layers, so LoRA would "
                f"train {trainable:,} of its {parameters:,} parameters"
                f"{' and cannot start' if not trainable else ''}; choose among its linear layers: "
                f"{', '.join(linear)}"], []
    if trainable > parameters:
        rank = config.method.lora_rank
        most = max(1, parameters * rank // trainable)
        return [], [f"method.lora_rank: LoRA at rank {rank} trains {trainable:,} parameters, more than "
                    f"the model's own {parameters:,}; use a rank of at most {most}, or full training "
                    "(method.kind full)"]
    return [], []


KERNEL_SUPPORT = {"sdpa": ("_supports_sdpa", "SDPA attention"),
                  "flex_attention": ("_supports_flex_attn", "FlexAttention"),
                  "flash_attention_2": ("_supports_flash_attn", "flash attention")}
"""system.attention's kernels and the class attribute by which transformers says a model has one."""


def _kernel_support(config: RunConfig, model, model_config) -> list[str]:
    """An attention kernel or Liger's fused kernels asked for that this architecture lacks."""
    problems = []
    attention = config.system.attention
    if attention in KERNEL_SUPPORT and not getattr(model, KERNEL_SUPPORT[attention][0], True):
        problems.append(f"system.attention: {type(model).__name__} has no {KERNEL_SUPPORT[attention][1]}; "
                        "use auto (the fastest kernel it has) or eager")
    if config.system.fused_kernels == "on":
        supported = liger_model_types()
        model_type = getattr(model_config, "model_type", None)
        if supported is not None and model_type not in supported:
            problems.append(f"system.fused_kernels: liger-kernel has no kernels for {model_type!r} models; "
                            "set it to auto or off")
    return problems


def machine_problems(config: RunConfig) -> list[str]:
    """Settings this machine cannot do."""
    problems = []
    cuda = torch.cuda.is_available()
    precision, attention = config.system.precision, config.system.attention
    if precision == "fp16" and not cuda:
        problems.append("system.precision: fp16 mixed precision needs a CUDA GPU and this machine has "
                        "none; use fp32 (or auto)")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        problems.append("system.precision: this GPU does not support bf16; use fp16 or fp32 (or auto)")
    if attention == "flash_attention_2":
        if not cuda:
            problems.append("system.attention: flash_attention_2 needs a CUDA GPU; use sdpa (or auto)")
        elif not flash_attn_installed():
            problems.append("system.attention: flash_attention_2 is not installed (pip install "
                            "flash-attn); use sdpa (or auto)")
    if attention == "flex_attention" and not cuda:
        problems.append("system.attention: FlexAttention has no backward pass on a CPU, so it cannot "
                        "train here; use sdpa (or auto)")
    elif attention == "flex_attention" and not flex_attention_available():
        problems.append("system.attention: this torch has no FlexAttention (it needs torch 2.5 or later); "
                        "use sdpa (or auto)")
    if config.system.fused_kernels == "on":
        if not cuda:
            problems.append("system.fused_kernels: Liger's kernels are Triton kernels for a CUDA GPU and "
                            "this machine has none; set it to auto or off")
        elif liger_model_types() is None:
            problems.append("system.fused_kernels: liger-kernel is not installed (pip install liger-kernel, "
                            "or the gpu extra); set it to auto or off")
    return problems


def corpus_problems(config: RunConfig) -> list[str]:
    """Every bad record (unless skipped), a corpus with no documents, a held-out size the
    corpus cannot give."""
    problems = []
    for name, specs in (("corpus.domain", config.corpus.domain), ("corpus.general", config.corpus.general)):
        present = [s for s in specs if Path(s.path).expanduser().exists()]  # validate() named the others
        if not present:
            continue
        report = validate(present)
        if not config.corpus.skip_bad:
            problems += [f"{name}: {p}" for p in report.problems]
        if report.documents == 0 and (config.corpus.skip_bad or not report.problems):
            problems.append(f"{name}: {_paths(present)} yields no documents; add documents or fix the records")
        elif config.eval.heldout_count is not None and config.eval.heldout_count >= report.documents > 0:
            problems.append(f"eval.heldout_count: {config.eval.heldout_count} held-out documents but "
                            f"{name} has only {report.documents}; hold out fewer")
    return problems


def _paths(specs: list[SourceSpec]) -> str:
    return ", ".join(s.path for s in specs)


def heldout_warnings(config: RunConfig) -> list[str]:
    """Forgetting measured only on documents held out of the replay corpus: replay trains on
    that same text, so forgetting there looks smaller than on general text at large."""
    if not config.corpus.general or config.corpus.replay_ratio == 0:
        return []  # no replay: the general held-out slice is text the run never trains on
    if any(spec.kind == "general" for spec in config.eval.sets):
        return []
    return [f"eval.sets: forgetting is measured only on documents held out of the replay corpus "
            f"({_paths(config.corpus.general)}), the text replay trains on, so forgetting will look "
            "smaller than it is; add an independent general evaluation set (the evaluation page's "
            "'Add general set…', or eval.sets in a setup file, kind 'general': general text from another "
            "source, such as prose or code; `cpt-studio settings eval.sets` shows its fields)"]


SFT_HELDOUT_MIN = 10
"""Fewer held-out instruction examples than this: the held-out response loss moves by chance."""


def sft_skipped_warnings(config: RunConfig) -> list[str]:
    """The bad instruction records sft.skip_bad leaves out, the first few named (file:line)."""
    if config.stage != "sft" or not config.sft.skip_bad:
        return []
    from .sft_data import SftDataError, skipped_records

    try:
        skipped = skipped_records(config.sft)
    except (SftDataError, OSError):
        return []  # the problems say it
    if not skipped:
        return []
    named = "; ".join(str(p) for p in skipped[:3]) + ("; …" if len(skipped) > 3 else "")
    return [f"sft.skip_bad: {len(skipped):,} bad record{'s' if len(skipped) != 1 else ''} will be left out "
            f"({named}); fix them to train on them too"]


def sft_heldout_warnings(config: RunConfig) -> list[str]:
    """An SFT run whose held-out examples (the "domain" evaluation: the loss on their responses)
    are fewer than SFT_HELDOUT_MIN. Data that cannot be read is left to the problems."""
    if config.stage != "sft" or not config.sft.data:
        return []
    from .data import heldout_ids
    from .sft_data import SftDataError, read_examples

    try:
        count = len(read_examples(config.sft))
        held = len(heldout_ids("sft", count, config.eval, config.seed))
    except (SftDataError, ValueError, OSError):
        return []
    if held >= SFT_HELDOUT_MIN:
        return []
    return [f"eval.heldout_count: only {held} of the {count:,} instruction examples are held out, so the "
            f"held-out response loss rests on {held} answer{'s' if held != 1 else ''} and moves by chance; "
            f"hold out at least {SFT_HELDOUT_MIN} (eval.heldout_count), or add examples"]


def sft_cut_warnings(config: RunConfig, training: int, cut: int, dropped: int, longest: tuple[int, str],
                     context: int | None) -> list[str]:
    """Training instruction examples longer than batch.seq_len (sft_run.SftSize's figures): the
    worker cuts each to a row, so the end of its response is never trained, and leaves out those
    with no response token left. `longest`: (tokens, "FILE line N") of the longest example.
    Suggests the power of two that holds it (the model's `context` at most)."""
    if not cut:
        return []
    from .sft_data import row_length_for

    (tokens, origin), seq_len = longest, config.batch.seq_len
    fits = row_length_for(tokens, context)
    fix = (f"raise batch.seq_len to {fits:,} (the longest example, {origin}, has {tokens:,} tokens)"
           if fits > seq_len else
           f"the longest example, {origin}, has {tokens:,} tokens, more than the model's context ({context:,})")
    left = (f"; {dropped:,} of them {'is' if dropped == 1 else 'are'} left out: the cut leaves no response token"
            if dropped else "")
    return [f"batch.seq_len: {cut:,} of the {training:,} training instruction examples "
            f"{'is' if cut == 1 else 'are'} longer than "
            f"{seq_len:,} tokens and {'is' if cut == 1 else 'are'} cut to it, so the ends of their responses are not trained{left}; "
            f"{fix}, or shorten those examples"]


def mojibake_warnings(config: RunConfig) -> list[str]:
    """Text that looks double-encoded (UTF-8 read as Latin-1 or cp1252: "Ã©" for "é", "Â "
    for a no-break space) in the first MOJIBAKE_SAMPLE documents of each corpus and evaluation
    set, as ftfy detects it (ftfy.badness.is_bad) and can undo it (ftfy.fix_encoding)."""
    sources = [("corpus.domain", config.corpus.domain), ("corpus.general", config.corpus.general)]
    sources += [(f"eval.sets ({s.name})", [SourceSpec(s.path, s.text_field)]) for s in config.eval.sets]
    notes = []
    for setting, specs in sources:
        present = [s for s in specs if Path(s.path).expanduser().exists()]  # validate() named the others
        sample = list(islice((d for d in read_sources(present) if isinstance(d, Document)), MOJIBAKE_SAMPLE))
        read = len(sample)
        found = [(doc, example) for doc in sample if (example := mojibake(doc.text))]
        if found:
            bad, good, _ = found[0][1]
            where = ", ".join(_where(doc, example[2]) for doc, example in found[:MOJIBAKE_EXAMPLES])
            of = f"the first {read:,}" if read == MOJIBAKE_SAMPLE else f"its {read:,}"
            notes.append(f"{setting}: {len(found):,} of {of} documents look double-encoded (mojibake: "
                         f"{bad!r} where {good!r} was meant), first at {where}; re-export the files as UTF-8 "
                         "from their source, or repair them with ftfy.fix_text before training")
    return notes


def mojibake(text: str) -> tuple[str, str, int] | None:
    """(the double-encoded passage, what it should read, its character offset) of the first
    mojibake in `text`, or None when ftfy finds none it can undo."""
    if not ftfy.badness.is_bad(text) or ftfy.fix_encoding(text) == text:
        return None
    match = BADNESS_RE.search(text)
    start, end = (match.start(), match.end()) if match else (0, 0)
    return (passage := _words_around(text, start, end)), ftfy.fix_encoding(passage), start


def _words_around(text: str, start: int, end: int, reach: int = 24) -> str:
    """text[start:end] with up to `reach` characters either side, cut at whole words."""
    left, right = max(0, start - reach), min(len(text), end + reach)
    if left > 0 and " " in text[left:start]:
        left = text.index(" ", left, start) + 1
    if right < len(text) and " " in text[end:right]:
        right = text.rindex(" ", end, right)
    return text[left:right]


def _where(doc: Document, offset: int) -> str:
    """file:line of a character of a document (a plain-text file's lines are counted)."""
    inside = doc.text[:offset].count("\n") if ".txt" in Path(doc.file).suffixes else 0
    return f"{doc.file}:{doc.line + inside}"


# -- checks of the planned run's size (cpt_studio.core.plan counts it) ----------------------

@dataclass
class RunSize:
    """The planned run, as cpt_studio.core.plan counts it."""

    steps: int
    """Optimizer steps."""
    domain_tokens: int
    """Tokens of the domain documents the run trains on (held-out ones excluded)."""
    planned_domain_tokens: int
    """Domain tokens the steps will consume (the rest of each step is replay)."""
    memory: MemoryEstimate
    hardware: Hardware
    free_memory: int
    """Bytes free where the run trains (device_memory)."""
    total_memory: int
    train_seconds: float
    eval_seconds: float
    """All the evaluations together."""
    evaluations: int

    @property
    def passes(self) -> float:
        """Passes over the domain corpus the steps make."""
        return self.planned_domain_tokens / max(self.domain_tokens, 1)


def run_warnings(config: RunConfig, size: RunSize) -> list[str]:
    """What the planned run will do that the settings may not have meant (the interval
    warnings only when schedule.max_steps is unset: with it, `preflight` gives them)."""
    intervals = [] if config.schedule.max_steps else interval_warnings(config, size.steps)
    return (intervals + passes_warnings(config, size)
            + memory_warnings(config, size) + eval_share_warnings(config, size)
            + _cpu_precision_warnings(size.hardware))


def interval_warnings(config: RunConfig, steps: int) -> list[str]:
    """eval.interval or checkpoints.interval longer than a run of `steps` optimizer steps."""
    notes, run = [], f"the run's {steps} step{'s' if steps != 1 else ''}"
    if config.checkpoints.interval > steps:
        notes.append(f"checkpoints.interval: {config.checkpoints.interval} is more than {run}, so the only "
                     "checkpoint is the final one (the guard can roll back only to the start); set it "
                     f"to at most {max(1, steps // 2)}")
    if config.eval.interval > steps:
        notes.append(f"eval.interval: {config.eval.interval} is more than {run}, so forgetting is "
                     f"measured only at step 0 and at the end; set it to at most {max(1, steps // 2)}")
    return notes


def passes_warnings(config: RunConfig, size: RunSize) -> list[str]:
    """More than PASSES_WARNING passes over the domain corpus."""
    if size.passes <= PASSES_WARNING:
        return []
    setting, value = (("schedule.max_steps", config.schedule.max_steps) if config.schedule.max_steps
                      else ("schedule.token_budget", config.schedule.token_budget))
    if not value:
        return []  # neither is set: the run makes one pass
    most = max(1, int(value * PASSES_WARNING / size.passes))
    return [f"{setting}: the run trains on about {size.planned_domain_tokens:,} domain tokens, "
            f"{size.passes:.1f} passes over the domain corpus's {size.domain_tokens:,} (beyond "
            f"{PASSES_WARNING:g}, repeated text teaches little and is memorised); set {setting} to at "
            f"most {most:,}, or add domain text"]


def device_memory(device: str) -> tuple[int, int]:
    """(free, total) bytes where the run trains: GPU 0's (torch.cuda.mem_get_info; what other
    processes hold is not free) or, on CPU, the machine's available and total RAM (psutil)."""
    if device == "cuda":
        free, total = torch.cuda.mem_get_info(0)
        return int(free), int(total)
    memory = psutil.virtual_memory()
    return int(memory.available), int(memory.total)


def memory_words(size: RunSize) -> str:
    """The memory rating in words: "fits (4.5 GiB of 21.8 GiB RAM free, 23.5 GiB in all; tight
    above 75%)"; "exceeds" when the estimate is above the free memory."""
    where = "GPU memory" if size.hardware.device == "cuda" else "RAM"
    return (f"{size.memory.rating(size.free_memory)} ({format_bytes(size.memory.total)} of "
            f"{format_bytes(size.free_memory)} {where} free, {format_bytes(size.total_memory)} in all; "
            f"tight above {TIGHT_FRACTION:.0%})")


def memory_warnings(config: RunConfig, size: RunSize) -> list[str]:
    """The estimate rated against the free memory (MemoryEstimate.rating): tight or exceeds
    is a warning, not a problem, because the estimate leans high (cpt_studio.core.estimate)."""
    rating = size.memory.rating(size.free_memory)
    if rating == "fits":
        return []
    fixes = ["lower batch.micro_batch (raise batch.grad_accum to keep the step)"]
    if not size.hardware.gradient_checkpointing:
        fixes.append("set system.gradient_checkpointing on")
    if config.method.kind != "lora":
        fixes.append("train with LoRA (method.kind lora)")
    outcome = ("it will probably run out of memory" if rating == "exceeds"
               else "other programs' memory can make it run out")
    return [f"batch.micro_batch: memory {memory_words(size)}: {outcome}; {', or '.join(fixes)}"]


def eval_share_warnings(config: RunConfig, size: RunSize) -> list[str]:
    share = size.eval_seconds / max(size.eval_seconds + size.train_seconds, 1e-9)
    if share <= EVAL_SHARE_WARNING:
        return []
    return [f"eval.interval: evaluation takes about {share:.0%} of the run's time ({size.evaluations} "
            f"evaluations; above {EVAL_SHARE_WARNING:.0%} is a lot); raise eval.interval (now "
            f"{config.eval.interval}) or lower eval.max_tokens (now {config.eval.max_tokens:,} tokens "
            "per corpus)"]


def _cpu_precision_warnings(hardware: Hardware) -> list[str]:
    if hardware.device == "cpu" and hardware.precision == "bf16":
        return ["system.precision: bf16 on the CPU is emulated on most CPUs and slower than fp32; "
                "use fp32 (or auto)"]
    return []
