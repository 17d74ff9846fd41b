"""RunConfig: everything a run needs, one dataclass per pipeline section, JSON in and out.

    config = RunConfig.from_json(path.read_text())
    problems = config.validate()        # every problem at once, each with its fix
    path.write_text(config.to_json())

Each field carries its documentation in the docstring below it; the GUI's tooltips and the
CLI's help show those words (core/config_help.py reads them). validate() is the only place that decides whether a config can run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import TXT_MODES, SourceSpec, relative_note


@dataclass
class ModelConfig:
    """The base model and how it is loaded."""

    name_or_path: str = ""
    """An HF model folder, a hub id in the local cache, or a .gguf file (imported once)."""
    allow_download: bool = False
    """Download a hub id that is not in the local cache (needs a network connection)."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code; only for repositories you trust."""
    allow_pickle: bool = False
    """Load weights stored as pickle files (.bin, .pt), which can run code when loaded; only
    for models you trust. Safetensors weights never need it."""

    def validate(self) -> list[str]:
        if not self.name_or_path:
            return ["model: choose a base model (a folder, a cached hub id or a .gguf file)"]
        return []


@dataclass
class CorpusConfig:
    """The domain corpus, the general (replay) corpus, and how they are read and mixed."""

    domain: list[SourceSpec] = field(default_factory=list)
    """Domain sources: files or folders of .jsonl, .txt, .parquet (optionally .gz)."""
    general: list[SourceSpec] = field(default_factory=list)
    """General sources replayed during training to limit forgetting."""
    replay_ratio: float = 0.05
    """Fraction of every optimizer step's sequences drawn from the general corpus."""
    skip_bad: bool = False
    """Leave out bad records (and count them) instead of refusing to start."""
    separator: str = ""
    """The token that ends each document in packed rows; empty: chosen from the tokenizer (its
    end-of-text token when its eos is a chat end-of-turn token such as <|im_end|>, else its
    eos). A run writes the token it uses here when it starts."""

    def validate(self) -> list[str]:
        problems = []  # a missing domain source: RunConfig.validate (an SFT run has none)
        if self.replay_ratio > 0 and not self.general:
            problems.append("corpus: replay is on but there is no general source; add one "
                            "or set the replay ratio to 0")
        if not 0 <= self.replay_ratio < 1:
            problems.append(f"corpus: replay ratio {self.replay_ratio} must be from 0 to below 1 (0.05 = 5%)")
        for spec in self.domain + self.general:
            if spec.txt_mode not in TXT_MODES:
                problems.append(f"corpus: {spec.path}: text mode must be 'file' or 'blocks'")
            if not spec.text_field:
                problems.append(f"corpus: {spec.path}: the text field is empty; name the field "
                                "that holds the documents")
            if not Path(spec.path).expanduser().exists():
                problems.append(f"corpus: {spec.path} does not exist; check the path")
        return problems


@dataclass
class TokenizerConfig:
    """Domain tokenizer extension (new tokens learned from the domain corpus)."""

    extend: bool = False
    """Add domain tokens to the base tokenizer before training."""
    vocab_size: int = 8000
    """Size of the domain BPE trained to find candidate tokens."""
    min_frequency: int = 20
    """A candidate must occur at least this often in the domain training text."""
    max_new_tokens: int = 1000
    """At most this many new tokens are added (counting the helper tokens some of them need)."""
    min_length: int = 4
    """A new token's word must have at least this many characters (the leading space not counted)."""
    token_pattern: str = ""
    """A regular expression each new token's word must match in full, e.g. [A-Za-z-]+;
    empty: letters only."""

    def validate(self) -> list[str]:
        problems = []
        if self.vocab_size < 256:
            problems.append("tokenizer: the domain vocabulary size must be at least 256")
        if self.min_frequency < 1 or self.max_new_tokens < 1:
            problems.append("tokenizer: minimum frequency and maximum new tokens must be at least 1")
        if self.min_length < 1:
            problems.append("tokenizer: the minimum token length must be at least 1 character")
        if self.token_pattern:
            try:
                re.compile(self.token_pattern)
            except re.error as exc:
                problems.append(f"tokenizer: the token rule {self.token_pattern!r} is not a valid "
                                f"regular expression ({exc}); leave it empty for letters only")
        return problems


@dataclass
class MethodConfig:
    """Full-parameter training or LoRA."""

    kind: str = "full"
    """'full' trains every weight; 'lora' trains low-rank adapters on the target modules."""
    lora_rank: int = 64
    """LoRA rank r: the adapters' inner width."""
    lora_alpha: int = 128
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    lora_dropout: float = 0.0
    """Dropout probability on each LoRA adapter's input (peft's lora_dropout; 0: none)."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    """Modules that get LoRA adapters (peft's target_modules, by name): by default every attention
    and MLP projection."""

    def validate(self) -> list[str]:
        problems = []
        if self.kind not in ("full", "lora"):
            problems.append(f"method: {self.kind!r} is not a method; use 'full' or 'lora'")
        if self.kind == "lora":
            if self.lora_rank < 1 or self.lora_alpha <= 0:
                problems.append("method: LoRA rank and alpha must be positive (defaults 64 and 128)")
            if not 0 <= self.lora_dropout < 1:
                problems.append("method: LoRA dropout must be from 0 to below 1")
            if not self.target_modules:
                problems.append("method: choose at least one LoRA target module")
        return problems


ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DECAYS = ("cosine", "constant", "linear", "wsd")


@dataclass
class ScheduleConfig:
    """Learning rate, its schedule, and how long training runs."""

    peak_lr: float = 2e-5
    """Peak learning rate. CPT wants it low: well below instruction-tuning rates."""
    warmup_ratio: float = 0.01
    """Fraction of optimizer steps spent warming up linearly from 0 to the peak."""
    decay: str = "cosine"
    """After warmup: 'cosine', 'linear' (both down to min_lr_ratio), 'constant', or
    'wsd' (warmup-stable-decay: constant, then a cosine decay over the last decay_ratio)."""
    min_lr_ratio: float = 0.1
    """The learning rate at the end, as a fraction of the peak (cosine, linear, wsd)."""
    decay_ratio: float = 0.2
    """wsd only: fraction of the steps spent in the final decay."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay (torch.optim.AdamW through the HF Trainer, which spares
    biases and norm weights)."""
    max_grad_norm: float = 1.0
    """Gradient clipping: the L2 norm of all gradients together is scaled down to at most this
    before each optimizer step (0 turns it off)."""
    max_steps: int | None = None
    """Optimizer steps to run; when unset, token_budget decides, else `epochs` passes over the
    domain corpus (an SFT run: over its instruction data)."""
    token_budget: int | None = None
    """Tokens to train on (domain and replay together); used when max_steps is unset."""
    epochs: float = 1.0
    """Passes over the domain corpus (an SFT run: its instruction data) when neither max_steps
    nor token_budget is set; instruction tuning usually makes 2-3."""
    embedding_lr_scale: float = 1.0
    """The learning rate of the input embeddings and the output layer (lm_head; one matrix when
    they are tied) as a multiple of the peak rate, scaled by the schedule alike: below 1 (e.g.
    0.1) moves the vocabulary's rows, which every token passes through, less than the rest;
    1: the peak rate, as every other weight. A tokenizer extension's new rows are in these
    matrices and follow it, unless new_token_lr_scale is set."""
    new_token_lr_scale: float | None = None
    """The learning rate of the rows an extended tokenizer adds (input embedding and output
    layer) as a multiple of the peak rate, scaled by the schedule alike: above the embeddings'
    (e.g. 10) lets rows that start as an average of their pieces find their own meaning fast
    while the learned rows move little. Unset: they follow embedding_lr_scale. Only with a
    tokenizer extension. With full fine-tuning the rows share the matrices with the rest of
    the vocabulary: their step is scaled after each optimizer step, which for AdamW is exactly
    a step at this rate (cpt_studio.core.recipe.scale_new_token_updates)."""

    def validate(self) -> list[str]:
        problems = []
        if not 0 < self.peak_lr < 1:
            problems.append(f"schedule: peak learning rate {self.peak_lr} must be above 0 and below 1 (default 2e-5)")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("schedule: warmup ratio must be from 0 to below 1 (0.01 = 1% of the steps)")
        if self.decay not in DECAYS:
            problems.append(f"schedule: decay {self.decay!r} is unknown; use one of {', '.join(DECAYS)}")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append("schedule: minimum LR ratio must be from 0 to 1 (0.1 = 10% of the peak)")
        if not 0 < self.decay_ratio <= 1:
            problems.append("schedule: decay ratio must be above 0 and at most 1")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            problems.append("schedule: weight decay and gradient clipping cannot be negative")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("schedule: max steps must be at least 1, or unset")
        if self.token_budget is not None and self.token_budget < 1:
            problems.append("schedule: the token budget must be at least 1 token, or unset")
        if not self.epochs > 0:
            problems.append(f"schedule: epochs {self.epochs} must be above 0 (1 = one pass over the data)")
        if not 0 < self.embedding_lr_scale <= 10:
            problems.append(f"schedule: the embedding LR multiple {self.embedding_lr_scale} must be "
                            "above 0 and at most 10 (1 = the peak rate, 0.1 = a tenth of it)")
        if self.new_token_lr_scale is not None and not 0 < self.new_token_lr_scale <= 100:
            problems.append(f"schedule: the new-token LR multiple {self.new_token_lr_scale} must be "
                            "above 0 and at most 100 (1 = the peak rate, 10 = ten times it), or unset")
        return problems


@dataclass
class BatchConfig:
    """How many tokens each optimizer step sees."""

    micro_batch: int = 4
    """Sequences (of seq_len tokens) per forward pass on each device."""
    grad_accum: int = 8
    """Micro-batches accumulated into one optimizer step."""
    seq_len: int = 1024
    """Tokens per packed sequence: the documents, each ended by the separator, are laid end to
    end and cut into rows of this length (no token dropped)."""

    def validate(self) -> list[str]:
        problems = []
        if self.micro_batch < 1 or self.grad_accum < 1:
            problems.append("batch: micro-batch and gradient accumulation must be at least 1")
        if self.seq_len < 16:
            problems.append(f"batch: sequence length {self.seq_len} is too short; use at least 16 (typically 1024-4096)")
        return problems


ATTENTION_KERNELS = ("auto", "sdpa", "flex_attention", "eager", "flash_attention_2")
"""system.attention's values: transformers' attn_implementation names, or auto."""


@dataclass
class SystemConfig:
    """Precision, memory savers and the attention kernel."""

    precision: str = "auto"
    """'auto' (bf16 where the GPU supports it, fp32 on CPU), 'bf16', 'fp16' or 'fp32'."""
    gradient_checkpointing: str = "auto"
    """'auto' (on only where the memory estimate without it does not fit the GPU; off on a
    CPU), 'on' or 'off': trades about a third more compute for activation memory."""
    attention: str = "auto"
    """'auto' (on CUDA: flash_attention_2 when flash-attn is installed, else flex_attention
    when this torch has it, else sdpa; sdpa on a CPU), 'sdpa', 'flex_attention', 'eager' or
    'flash_attention_2'. Every one keeps packed documents apart (position ids restart at each)."""
    fused_kernels: str = "auto"
    """Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, and the fused linear cross-entropy
    that never holds the whole vocabulary's logits): 'auto' (on CUDA when liger-kernel is
    installed and supports the model), 'on' or 'off'."""
    compile: bool = False
    """Compile the model with torch.compile (the Trainer's torch_compile): faster steps after a
    first step that takes minutes to compile."""
    peak_tflops: float | None = None
    """The GPU's dense bf16 peak in TFLOP/s, for the model FLOPs utilisation (MFU) shown
    live; unset: looked up by the GPU's name (cpt_studio.core.estimate.GPU_PEAK_TFLOPS)."""
    processes: int = 1
    """Processes (one per GPU) the batch is planned for: each optimizer step holds
    batch.micro_batch x batch.grad_accum x processes sequences. Run (or resumed) on another
    number of processes, each accumulates grad_accum x processes / that number of micro-batches,
    so the step and the schedule stay the same (`cpt-studio launch` sets it)."""

    def validate(self) -> list[str]:
        problems = []
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            problems.append(f"system: precision {self.precision!r} is unknown; use auto, bf16, fp16 or fp32")
        if self.gradient_checkpointing not in ("auto", "on", "off"):
            problems.append("system: gradient checkpointing must be auto, on or off")
        if self.attention not in ATTENTION_KERNELS:
            problems.append(f"system: attention {self.attention!r} is unknown; use {', '.join(ATTENTION_KERNELS)}")
        if self.fused_kernels not in ("auto", "on", "off"):
            problems.append(f"system: fused_kernels {self.fused_kernels!r} is unknown; use auto, on or off")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            problems.append(f"system: peak_tflops {self.peak_tflops} must be a positive number of TFLOP/s "
                            "(the GPU's dense bf16 peak from its datasheet), or unset")
        if self.processes < 1:
            problems.append(f"system: processes {self.processes} must be at least 1 (one per GPU)")
        return problems


@dataclass
class EvalConfig:
    """Held-out evaluation: what is measured, and how often."""

    interval: int = 50
    """Evaluate every this many optimizer steps (and at step 0, the baseline, and at the end)."""
    heldout_fraction: float = 0.02
    """Fraction of each corpus's documents held out for evaluation (never trained on)."""
    heldout_count: int | None = None
    """Held-out documents per corpus as a count; overrides heldout_fraction when set."""
    max_tokens: int = 200_000
    """At most this many held-out tokens are evaluated per corpus (bounds evaluation time)."""
    batch_size: int = 8
    """Sequences per evaluation forward pass."""
    sets: list[EvalSetSpec] = field(default_factory=list)
    """Evaluation files of your own (a curated domain set, general sets such as prose, code,
    instructions), each with its own perplexity, bits per byte and forgetting curve."""
    guard_set: str = ""
    """The general set whose forgetting the guard and the recommendation act on: 'general' (the
    held-out replay slice) or a set's name; empty: the worst of them at each evaluation."""

    def validate(self) -> list[str]:
        problems = []
        names = [s.name for s in self.sets]
        for spec in self.sets:
            problems += spec.validate()
        if len(set(names)) < len(names):
            problems.append("eval: two evaluation sets have the same name; give each its own")
        general = ["general"] + [s.name for s in self.sets if s.kind == "general"]
        if self.guard_set and self.guard_set not in general:
            problems.append(f"eval: guard set {self.guard_set!r} is not a general evaluation set; "
                            f"use one of {', '.join(general)}, or leave it empty for the worst")
        if self.interval < 1:
            problems.append("eval: the evaluation interval must be at least 1 step")
        if self.heldout_count is None and not 0 < self.heldout_fraction < 0.5:
            problems.append(f"eval: held-out fraction {self.heldout_fraction} must be above 0 and "
                            "below 0.5 (0.02 = 2%)")
        if self.heldout_count is not None and self.heldout_count < 1:
            problems.append("eval: held-out count must be at least 1 document")
        if self.max_tokens < 1 or self.batch_size < 1:
            problems.append("eval: max tokens and batch size must be at least 1")
        return problems


EVAL_SET_KINDS = ("domain", "general")


@dataclass
class EvalSetSpec:
    """An evaluation file of the user's own, measured at every evaluation beside the held-out
    slices: its perplexity, bits per byte and (general sets) forgetting get curves of their own."""

    name: str
    """A short name (letters, digits, _), e.g. code; it names the event fields (code_ppl, ...)."""
    path: str
    """A .jsonl, .txt or .parquet file or a folder of them, read like a corpus source."""
    kind: str = "general"
    """'general' (forgetting is measured on it) or 'domain' (domain gain is measured on it)."""
    text_field: str = "text"
    """JSONL and Parquet: the field or column that holds the text."""

    def validate(self) -> list[str]:
        problems = []
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.name or "") or self.name in ("domain", "general"):
            problems.append(f"eval: evaluation set name {self.name!r} must be a word of letters, "
                            "digits and _ other than 'domain' and 'general' (e.g. code)")
        if self.kind not in EVAL_SET_KINDS:
            problems.append(f"eval: evaluation set {self.name!r}: kind {self.kind!r} must be "
                            "'domain' or 'general'")
        if not Path(self.path).expanduser().exists():
            problems.append(f"eval: evaluation set {self.name!r}: {self.path} does not exist; check the path")
        return problems


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    interval: int = 100
    """Save a checkpoint every this many optimizer steps (and at the end)."""
    keep: int = 3
    """Keep this many recent checkpoints; the best, the last, the recommended one and the one
    the guard would roll back to are never deleted."""
    recommend_max_forgetting: float = 0.03
    """The recommended checkpoint has the largest domain gain among those whose forgetting is
    at most this (0.03 = general perplexity at most 3% above the step-0 baseline)."""

    def validate(self) -> list[str]:
        problems = []
        if self.interval < 1:
            problems.append("checkpoints: the interval must be at least 1 step")
        if self.keep < 1:
            problems.append("checkpoints: keep at least 1 checkpoint")
        if not 0 <= self.recommend_max_forgetting < 1:
            problems.append(f"checkpoints: the recommendation's forgetting target "
                            f"{self.recommend_max_forgetting} must be from 0 to below 1 (0.03 = 3%)")
        return problems


@dataclass
class BenchmarkConfig:
    """lm-evaluation-harness tasks and knowledge probes, base model against checkpoints."""

    domain_tasks: list[str] = field(default_factory=list)
    """lm-eval tasks that should improve (registry names, e.g. medqa_4options, or tasks of the
    task folders); presets in resources/eval/presets.json."""
    general_tasks: list[str] = field(default_factory=list)
    """lm-eval tasks that must not drop, e.g. mmlu, arc_challenge, hellaswag, truthfulqa_mc1."""
    task_folders: list[str] = field(default_factory=list)
    """Folders of local lm-eval task YAML files (searched besides the registry)."""
    probes: str = ""
    """A knowledge-probe file (JSONL; core/probes.py): facts the model should learn."""
    num_fewshot: int = 0
    """Examples shown before each question (few-shot)."""
    limit: int | None = None
    """Score at most this many examples per task (a quick check); unset: all of them."""
    batch_size: int | str = "auto"
    """Requests per forward pass in lm-eval; "auto": on a GPU the largest that fits (lm-eval's own
    search: from 64, halving on out-of-memory, for the longest request), on a CPU 4."""
    at_end: bool = True
    """When the run finishes, evaluate the base model and the recommended checkpoint."""
    probes_during_training: bool = False
    """Run the probes at every checkpoint while training (a live knowledge curve)."""
    probe_limit: int | None = 20
    """During training, at most this many probes per kind (bounds the time each costs)."""
    max_general_drop: float = 0.03
    """A general task dropping by more than this (0.03 = 3 points) below the base model is
    flagged in the report and rules the checkpoint out of the recommendation."""

    @property
    def configured(self) -> bool:
        return bool(self.domain_tasks or self.general_tasks or self.probes)

    def validate(self) -> list[str]:
        problems = []
        both = sorted(set(self.domain_tasks) & set(self.general_tasks))
        if both:
            problems.append(f"benchmarks: {', '.join(both)} cannot be both a domain and a general task")
        for folder in self.task_folders:
            if not Path(folder).expanduser().is_dir():
                problems.append(f"benchmarks: task folder {folder} does not exist; check the path")
        if self.probes_during_training and not self.probes:
            problems.append("benchmarks: probes during training need a probe file; choose one or "
                            "turn probes during training off")
        if self.probes and not Path(self.probes).expanduser().is_file():
            problems.append(f"benchmarks: probe file {self.probes} does not exist; check the path")
        if self.num_fewshot < 0:
            problems.append("benchmarks: few-shot must be at least 0")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            problems.append(f"benchmarks: batch size {self.batch_size!r} must be \"auto\" or at least 1")
        for name in ("limit", "probe_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"benchmarks: {name.replace('_', ' ')} must be at least 1, or unset")
        if not 0 <= self.max_general_drop < 1:
            problems.append(f"benchmarks: the general drop limit {self.max_general_drop} must be "
                            "from 0 to below 1 (0.03 = 3 points)")
        return problems


EWC_GROUPS = ("trainable", "attention", "mlp", "embeddings", "lora")
FISHER_NORMALISATIONS = ("mean", "raw")


@dataclass
class EwcConfig:
    """Elastic weight consolidation: a pull back towards the starting weights, strongest for the
    weights that matter most to general text (their diagonal Fisher information)."""

    enabled: bool = False
    """Add the EWC penalty strength/2 * sum F (theta - theta*)^2 to the training loss."""
    strength: float = 0.003
    """lambda, the penalty's weight. With the Fisher scaled to mean 1, a weight of average
    importance is pulled back with a force of lambda x its distance from the start. The
    default is the strength at which, on the demo model after a short run at the default
    LR, the penalty's pull equals the data's push (bench/forgetting.py; core/ewc.py)."""
    sequences: int = 1000
    """General-corpus sequences the Fisher is estimated on (one backward pass each, computed
    once and cached)."""
    group: str = "trainable"
    """Weights the penalty covers: 'trainable' (all that train), 'attention' (attention
    projections), 'mlp', 'embeddings' (input and output embeddings) or 'lora' (the LoRA
    adapters, held towards their initial value: an adapter that adds nothing)."""
    normalisation: str = "mean"
    """'mean' scales the Fisher to mean 1 over the group, so that lambda means the same for
    every model; 'raw' keeps squared log-likelihood gradients as they are."""

    def validate(self) -> list[str]:
        problems = []
        if self.strength < 0:
            problems.append(f"ewc: strength {self.strength} cannot be negative (default 0.003)")
        if self.sequences < 1:
            problems.append("ewc: the Fisher needs at least 1 general sequence (default 1000)")
        if self.group not in EWC_GROUPS:
            problems.append(f"ewc: group {self.group!r} is unknown; use one of {', '.join(EWC_GROUPS)}")
        if self.normalisation not in FISHER_NORMALISATIONS:
            problems.append(f"ewc: normalisation {self.normalisation!r} is unknown; use 'mean' or 'raw'")
        return problems


REMEDY_WORDS = {"lr": "halve the learning rate", "replay": "raise the replay ratio by 5 points",
                "both": "halve the learning rate and raise the replay ratio by 5 points"}
"""guard.remedy's values in words (the summary, the plan)."""
GUARD_REMEDIES = tuple(REMEDY_WORDS)


@dataclass
class GuardConfig:
    """The forgetting guard: after a bad evaluation or a bad step, go back to the last good
    checkpoint, change a setting, and continue."""

    enabled: bool = True
    """Watch forgetting and the loss, and roll back when either goes wrong."""
    threshold: float = 0.15
    """Forgetting (general perplexity over the step-0 baseline, minus 1) above which the run
    rolls back: 0.15 = 15% higher general perplexity."""
    remedy: str = "lr"
    """What changes after a rollback: 'lr' (halve the learning rate), 'replay' (raise the
    replay ratio by 5 points) or 'both'."""
    max_rollbacks: int = 3
    """Rollbacks allowed in one run; the next trigger stops the run."""
    spike_factor: float = 3.0
    """A step whose loss is above this multiple of the running mean of the previous steps'
    losses is a loss spike and rolls back too (0 turns the spike check off)."""
    spike_window: int = 20
    """Steps in the running mean the spike check compares with."""

    def validate(self) -> list[str]:
        problems = []
        if not 0 < self.threshold < 10:
            problems.append(f"guard: threshold {self.threshold} must be above 0 (0.15 = 15% forgetting)")
        if self.remedy not in GUARD_REMEDIES:
            problems.append(f"guard: remedy {self.remedy!r} is unknown; use 'lr', 'replay' or 'both'")
        if self.max_rollbacks < 0:
            problems.append("guard: the number of rollbacks cannot be negative (default 3)")
        if self.spike_factor != 0 and self.spike_factor <= 1:
            problems.append(f"guard: spike factor {self.spike_factor} must be above 1 (default 3), "
                            "or 0 to turn the spike check off")
        if self.spike_window < 1:
            problems.append("guard: the spike check's window must be at least 1 step")
        return problems


SFT_FORMATS = ("auto", "instruction", "chat")
STAGES = ("cpt", "sft")


@dataclass
class SftConfig:
    """Instruction tuning (stage 'sft'): the instruction data, its format and the chat template
    (cpt_studio.core.sft_run, cpt_studio.core.sft_data). The checkpoint the run starts from is
    RunConfig.parent_run / parent_step, as for any chained run."""

    data: list[str] = field(default_factory=list)
    """Files of examples (.jsonl: one record per line; .json: one array of records, as Alpaca's;
    optionally .gz): instruction/response records or chat conversations."""
    format: str = "auto"
    """'instruction' (instruction and response fields), 'chat' (a list of role/content
    messages; ShareGPT's from/value with human/gpt reads too), or 'auto' (each record by the
    fields it has)."""
    instruction_field: str = "instruction"
    """Instruction records: the field that holds the instruction (the user's turn)."""
    input_field: str = "input"
    """Instruction records: an optional field whose text follows the instruction after a blank
    line (absent or empty in a record: nothing is added)."""
    response_field: str = "response"
    """Instruction records: the field that holds the response (the only text trained on). Left
    at "response", a record without it but with Alpaca's "output" uses that."""
    system_field: str = "system"
    """Instruction records: an optional field with a system prompt."""
    messages_field: str = "messages"
    """Chat records: the field that holds the list of {"role", "content"} messages (roles
    system, user, assistant; the last message is the assistant's). Left at "messages", a record
    without it but with ShareGPT's "conversations" ({"from": "human"/"gpt", "value"}) uses that."""
    template: str = "auto"
    """The chat template: 'auto' (the tokenizer's own, else the plain template), 'plain'
    (### Instruction: / ### Response:, for base models), a .jinja file, or a model folder whose
    tokenizer's chat template to use. The template used is saved with the run and its checkpoints."""
    skip_bad: bool = False
    """Leave out records that cannot be read (broken JSON, missing fields, a conversation that
    does not end with the assistant) and train on the rest, each one skipped named with its
    file and line in a warning; off: any bad record stops the run until it is fixed."""

    def validate(self) -> list[str]:
        problems = []
        if self.format not in SFT_FORMATS:
            problems.append(f"sft.format: {self.format!r} is unknown; use auto, instruction or chat")
        for path in self.data:
            problem = data_file_problem(Path(path).expanduser())
            if problem:
                problems.append(f"sft.data: {path} {problem}")
        for name in ("instruction_field", "response_field", "messages_field"):
            if not getattr(self, name):
                problems.append(f"sft.{name}: name the field (it cannot be empty)")
        return problems


def data_file_problem(path: Path) -> str | None:
    """What is wrong with an instruction data file's path (the words after the path), or None."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder; give the instruction data files in it (.jsonl, or .json holding one array of records)"
    if any(c in path.name for c in "*?["):
        return ("is a pattern no shell expanded (it was quoted); give the files themselves, e.g. "
                "--data folder/*.jsonl without quotes")
    return f"does not exist{relative_note(path)}; check the path"


@dataclass
class RunConfig:
    """One run of continual pre-training, or of instruction tuning after it (stage 'sft')."""

    name: str = "run"
    """A name for the run, shown in the runs list."""
    stage: str = "cpt"
    """'cpt' (continual pre-training on the corpus) or 'sft' (instruction tuning on sft.data,
    loss on the responses only; the general corpus, if any, is replayed and measured)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    ewc: EwcConfig = field(default_factory=EwcConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    benchmarks: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    seed: int = 0
    """Seed for the held-out split, the data order and the initialisation of new weights."""
    parent_run: str = ""
    """The run folder whose checkpoint this run starts from (a chained run: an SFT stage, or a
    second CPT stage on more data); empty: it starts from model.name_or_path."""
    parent_step: int | None = None
    """The step of that run's checkpoint (set with parent_run; cpt_studio.core.chain)."""

    def validate(self) -> list[str]:
        """Every problem of every section, each in words that say what to change."""
        problems = [] if self.name.strip() else ["name: give the run a name"]
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if hasattr(value, "validate"):
                problems += value.validate()
        return problems + self._cross_section_problems()

    def _cross_section_problems(self) -> list[str]:
        """Settings of one section that another section makes impossible."""
        problems = self._stage_problems()
        if bool(self.parent_run) != (self.parent_step is not None):
            problems.append("parent_run and parent_step go together: set both (the run and its "
                            "checkpoint) or neither")
        if self.ewc.enabled and not self.corpus.general:
            problems.append("ewc: the Fisher is measured on general text; add a general source "
                            "or turn EWC off")
        if self.ewc.enabled and self.ewc.group == "lora" and self.method.kind != "lora":
            problems.append("ewc: group 'lora' needs the LoRA method; choose another group "
                            "or train with LoRA")
        if (self.schedule.embedding_lr_scale != 1 and self.method.kind == "lora"
                and not self.tokenizer.extend):
            problems.append("schedule: the embedding LR multiple acts on the embeddings, which LoRA "
                            "leaves frozen (only an extended tokenizer's new rows train): set it "
                            "to 1, or train all weights (method 'full')")
        if self.schedule.new_token_lr_scale is not None and not self.tokenizer.extend:
            problems.append("tokenizer: the new-token LR multiple (schedule.new_token_lr_scale) acts "
                            "on the rows a tokenizer extension adds: turn the extension on, or unset "
                            "the multiple")
        if self.guard.enabled and self.guard.remedy != "lr" and not self.corpus.general:
            problems.append(f"guard: remedy {self.guard.remedy!r} raises the replay ratio, which "
                            "needs a general source; add one or choose remedy 'lr'")
        return problems

    def _stage_problems(self) -> list[str]:
        if self.stage not in STAGES:
            return [f"stage: {self.stage!r} is unknown; use 'cpt' or 'sft'"]
        if self.stage == "cpt":
            return [] if self.corpus.domain else ["corpus: add at least one domain source (a file or folder)"]
        problems = [] if self.sft.data else ["sft.data: add at least one JSONL file of examples"]
        if self.corpus.domain:
            problems.append("corpus.domain: an SFT run trains on sft.data; remove the domain "
                            "sources (the general ones are replayed and measured)")
        if self.tokenizer.extend:
            problems.append("tokenizer.extend: an SFT run keeps the tokenizer of the model it "
                            "starts from; turn the extension off")
        return problems

    def warnings(self, domain_tokens: int | None = None) -> list[str]:
        """Settings that run but that the field's practice advises against, each sentence
        starting with the setting's dotted path and ending with the fix (the pre-flight's
        warnings include these). With `domain_tokens`, also what a corpus of that size gives."""
        notes = []
        cpt = self.stage == "cpt"  # instruction tuning runs at such rates, replay optional
        if cpt and self.schedule.peak_lr > 5e-5:
            notes.append(f"schedule.peak_lr: a peak learning rate of {self.schedule.peak_lr:g} is above "
                         "5e-5, and CPT at instruction-tuning rates forgets fast; lower it (default 2e-5)")
        if cpt and self.corpus.replay_ratio == 0:
            notes.append("corpus.replay_ratio: replay ratio is 0, so nothing reminds the model of general "
                         "text; 5% is the usual minimum, 15% for a domain far from general English")
        if self.checkpoints.interval % self.eval.interval:
            notes.append(f"checkpoints.interval: checkpoint interval {self.checkpoints.interval} is not a "
                         f"multiple of the evaluation interval {self.eval.interval}: every checkpoint is "
                         "evaluated, so evaluation runs more often than the interval says; make it a "
                         "multiple of eval.interval")
        if self.guard.enabled and not self.corpus.general:
            notes.append("corpus.general: the guard has no general corpus to measure forgetting on, so it "
                         "watches only the loss (non-finite values and spikes); add a general source")
        if domain_tokens is not None:
            notes.append(token_band(domain_tokens))
        return notes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return _build(cls, upgraded(data), "")

    @classmethod
    def from_json(cls, text: str, where: str = "config") -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{where} line {exc.lineno} column {exc.colno}: not valid JSON "
                               f"({exc.msg}); fix the file (a JSON editor shows where)"]) from exc
        problems: list[str] = []
        config = _build(cls, upgraded(data), "", problems)
        if problems:  # with the defaults standing in, list what validate() finds as well
            raise ConfigError([f"{where}: {p}" for p in problems + config.validate()])
        return config

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """The config in a JSON file; ConfigError lists every problem, each with the file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot be read ({exc}); check the path"]) from exc
        return cls.from_json(text, str(path))


def upgraded(data):
    """A config dict written by an earlier version, in today's layout (other values as they are).

    The parent link was sft.parent_run / sft.parent_step when only SFT runs had a parent; a second
    CPT stage has one too, so it is RunConfig.parent_run / parent_step, one place for every stage
    (a copy under `sft` as well would be two places to keep in step). The old keys move up,
    unless the new ones are set."""
    sft = data.get("sft") if isinstance(data, dict) else None
    if not isinstance(sft, dict) or not {"parent_run", "parent_step"} & set(sft):
        return data
    data, sft = dict(data), dict(sft)
    for key in ("parent_run", "parent_step"):
        value = sft.pop(key, None)
        if value not in (None, "") and data.get(key) in (None, ""):
            data[key] = value
    data["sft"] = sft
    return data


def token_band(tokens: int) -> str:
    """What a domain corpus of this size can be expected to give (practice, not promise)."""
    if tokens < 100_000_000:
        return (f"{tokens:,} domain tokens is a small corpus (under 100M): expect a small, "
                "mostly perplexity-level gain")
    if tokens < 1_000_000_000:
        return f"{tokens:,} domain tokens (100M-1B): roughly 8-15 benchmark points of domain gain"
    if tokens < 10_000_000_000:
        return f"{tokens:,} domain tokens (1B-10B): roughly 15-25 benchmark points of domain gain"
    return f"{tokens:,} domain tokens (over 10B): a large corpus; watch forgetting closely"


class ConfigError(ValueError):
    """A config that cannot be read or built; `problems` lists every one, each starting with
    the file (or "config") and the setting's dotted path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the config:\n" + "\n".join(f"  {p}" for p in problems))


def _build(cls, data, where: str, problems: list[str] | None = None):
    """Build dataclass `cls` from a dict. Every unknown key and every value of the wrong type
    is a problem with its dotted path; the default stands in for it, so that the rest can
    still be built and validated. Raises ConfigError when called without a `problems` list."""
    collect = problems if problems is not None else []
    if not isinstance(data, dict):
        collect.append(f"{where or 'the config'}: expected an object ({{...}}), got {_json_kind(data)}")
        data = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    place = (lambda key: f"{where}.{key}") if where else (lambda key: key)
    for key in sorted(set(data) - names):
        collect.append(f"{place(key)}: unknown setting; known in {where or 'the config'}: "
                       f"{', '.join(sorted(names))}")
    values = {}
    for key in sorted(names & set(data)):
        value = _value(hints[key], data[key], place(key), collect)
        if value is not _WRONG:
            values[key] = value
    if problems is None and collect:
        raise ConfigError(collect)
    return cls(**values)


_WRONG = object()


def _json_kind(value) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
             dict: "an object", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} {json.dumps(value)[:40]}"


def _value(hint, value, where: str, problems: list[str]):
    """The value converted to `hint`, or _WRONG (after recording the problem)."""
    if dataclasses.is_dataclass(hint) and hint is not SourceSpec:
        return _build(hint, value, where, problems)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args[0] is SourceSpec:
        return _sources(value, where, problems)
    if origin is list and dataclasses.is_dataclass(args[0]):  # e.g. eval.sets
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_json_kind(value)}")
            return _WRONG
        return [_build(args[0], v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if _matches(hint, value):
        return value
    problems.append(f"{where}: expected {_expected(hint)}, got {_json_kind(value)}")
    return _WRONG


def _matches(hint, value) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(a, value) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(args[0], v) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _expected(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in args)
    if origin is list:
        return f"a list of {_expected(args[0])}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _sources(value, where: str, problems: list[str]):
    if not isinstance(value, list):
        problems.append(f"{where}: expected a list of paths or {{\"path\": ...}} objects, got {_json_kind(value)}")
        return _WRONG
    specs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            specs.append(SourceSpec(item))
        elif isinstance(item, dict) and "path" not in item:
            problems.append(f"{where}[{i}].path: missing; name the corpus file or folder")
        else:
            specs.append(_build(SourceSpec, item, f"{where}[{i}]", problems))
    return specs
