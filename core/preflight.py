"""The checks every entry point runs before a run starts: the config, the model, what the
model and this machine can do with the settings, and the corpus.

    checked = preflight(config)        # every problem at once
    checked = require(config)          # the same, raising ValueError when there is a problem

`cpt-studio train` (before it creates the run folder), the dry run (cpt_studio.core.plan), the worker
(before it loads anything) and the wizard all call these, so what one refuses the others
refuse with the same words. Each problem starts with the setting's dotted path.
No weights are loaded: the model is built on the meta device for its module names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import RunConfig
from .corpus import SourceSpec, validate
from .document_tokens import DocumentTokens, SeparatorError, document_tokens
from .models import ModelError, check_model, load_tokenizer_from_folder
from .recipe import ewc_group_size, flash_attn_installed

# transformers is imported inside the functions that use it: it takes seconds to import, and
# the desktop app imports this module when it starts (the wizard's model and summary pages).


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    folder: Path | None = None
    """The model folder, when the model could be resolved."""
    tokens: DocumentTokens | None = None
    """BOS and separator the documents will be packed with."""
    model_config: object | None = None


def require(config: RunConfig, *, read_corpus: bool = True) -> Preflight:
    checked = preflight(config, read_corpus=read_corpus)
    if checked.problems:
        raise ValueError("the run cannot start:\n" + "\n".join(f"  {p}" for p in checked.problems))
    return checked


def preflight(config: RunConfig, *, read_corpus: bool = True) -> Preflight:
    """`read_corpus`: also read every record of every source (a corpus that yields no
    documents, bad records, a held-out count the corpus cannot give)."""
    checked = Preflight(problems=config.validate())
    _check_model(config, checked)
    if checked.model_config is not None:
        checked.problems += model_problems(config, checked.model_config, checked.folder)
    checked.problems += machine_problems(config)
    if read_corpus:
        checked.problems += corpus_problems(config)
    return checked


def _check_model(config: RunConfig, checked: Preflight) -> None:
    from transformers import AutoConfig

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
    lacks, gradient checkpointing or an attention kernel it does not support, an EWC group
    with no weights in it."""
    problems = []
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    context = getattr(text, "max_position_embeddings", None)
    if context and config.batch.seq_len > context:
        problems.append(f"batch.seq_len: {config.batch.seq_len} is longer than the model's context "
                        f"({context} positions, max_position_embeddings in {folder}/config.json); "
                        f"use at most {context}")
    model = _meta_model(model_config, config)
    if model is None:
        return problems
    if config.method.kind == "lora":
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear)})
        missing = [t for t in config.method.target_modules if t not in linear]
        if missing:
            problems.append(f"method.target_modules: the model has no {', '.join(missing)} layers; "
                            f"choose among its linear layers: {', '.join(linear)}")
    if config.system.gradient_checkpointing == "on" and not getattr(model, "supports_gradient_checkpointing", False):
        problems.append(f"system.gradient_checkpointing: {type(model).__name__} does not support it; "
                        "set it to off or auto")
    if config.system.attention == "sdpa" and not getattr(model, "_supports_sdpa", True):
        problems.append(f"system.attention: {type(model).__name__} has no SDPA attention; use eager or auto")
    if config.ewc.enabled and ewc_group_size(model, config) == 0:
        problems.append(f"ewc.group: the model has no weights in group {config.ewc.group!r}; "
                        "choose 'trainable' or another group")
    return problems


def _meta_model(model_config, config: RunConfig):
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(model_config, trust_remote_code=config.model.trust_remote_code)
    except Exception:  # an architecture this transformers cannot build: loading will say why
        return None


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
