"""The plan shown before a run starts: steps, tokens, memory (rated against this machine),
time, and the pre-flight's warnings (cpt_studio.core.preflight: those of the settings and
those of the planned run's size).

    plan = plan_run(config)           # what `cpt-studio train CONFIG --dry-run` prints
    print(format_plan(plan))          # and what the wizard's summary page shows

No weights are loaded: the model is built on the meta device for its shapes. The corpus is
tokenized (into the cache the run will use), so the token counts are exact. With
`probe_steps`, a few real training steps on this machine measure the speed instead of
assuming it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import RunConfig, token_band
from .corpus import SourceSpec
from .estimate import (
    CUDA_PEAK_FLOPS,
    MemoryEstimate,
    TimeEstimate,
    estimate_eval_time,
    estimate_time,
    format_bytes,
    format_duration,
    model_flops_utilisation,
)
from .events import ProgressCallback
from .hf_imports import transformers_names
from .models import load_model_and_tokenizer, load_tokenizer_from_folder
from .preflight import RunSize, device_memory, memory_words, require, run_warnings, sft_cut_warnings
from .progress import Progress, tick
from .recipe import (
    Hardware,
    apply_method,
    flops_per_token,
    learning_rates_text,
    memory_estimate,
    meta_model,
    optimizer_steps,
    parameter_counts,
    resolve_hardware,
    scheduler_settings,
    sequences_per_step,
)
from .run_folder import checkpoint_folder
from .stats import corpus_stats
from .throughput import Measurement, carried_over, device_label, kernel_setup, record

# transformers is imported inside the functions that use it: it takes seconds to import, and
# the desktop app imports this module when it starts (the wizard's schedule and summary pages).


@dataclass
class Plan:
    steps: int
    sequences_per_step: int
    tokens_per_step: int
    total_tokens: int
    domain_tokens: int
    general_tokens: int
    device: str
    precision: str
    gradient_checkpointing: bool
    parameters: int
    trainable: int
    memory: MemoryEstimate
    time: TimeEstimate
    warnings: list[str] = field(default_factory=list)
    """The pre-flight's warnings: the settings' and the planned run's (run_warnings)."""
    documents: str = ""
    """How each document is packed: BOS (if any) + document + separator, and why that separator."""
    memory_rating: str = ""
    """The memory estimate against this machine in words (preflight.memory_words): fits, tight
    or exceeds, and against how much."""
    corpus_note: str = ""
    """What a domain corpus of this size can be expected to give (config.token_band)."""
    evaluation_seconds: float = 0.0
    """All the run's evaluations together (part of neither `time` nor the steps)."""
    learning_rates: str = ""
    """Each group's peak learning rate in words, when a group has its own ('' otherwise)."""
    kernels: str = ""
    """The attention kernel, optimizer, fused kernels, compilation and checkpointing chosen
    for this machine and model, each with why (recipe.Hardware.kernels_text)."""
    gpu_name: str = ""
    """The GPU's name ('' on a CPU)."""
    stage: str = "cpt"
    """RunConfig.stage: an SFT run's 'domain' figures are its instruction examples'."""
    benchmarks: str = ""
    """The benchmarks and probes the run scores, and when (benchmark_words; '' when none)."""


def plan_run(config: RunConfig, *, probe_steps: int = 0, progress: Progress | None = None) -> Plan:
    """The run's plan: steps, tokens, kernels, time, memory and warnings, for a CPT run (its
    corpora) and an SFT run (its instruction examples, as the worker packs them) alike.
    `progress` hears the stages done of PLAN_STAGES, and every tokenized batch (raising
    cpt_studio.core.progress.Cancelled there stops the plan; the token cache keeps nothing
    half-written)."""
    tick(progress, 0, PLAN_STAGES, "checking the setup and reading the corpora")
    config, tokenizer_folder = _from_the_starting_model(config)
    checked = require(config)  # the config, the model, the settings, the corpus: every problem
    model_config = checked.model_config
    tokenizer = load_tokenizer_from_folder(tokenizer_folder or checked.folder, config.model.trust_remote_code)
    data = _training_data(config, tokenizer, model_config, progress)
    general = (corpus_stats(config.corpus.general, tokenizer, preview=0, skip_bad=config.corpus.skip_bad,
                            progress=_stage(progress, 2, "tokenizing the general corpus"))
               if config.corpus.general else None)
    tick(progress, 3, PLAN_STAGES, "reading the model's shapes")
    meta = meta_model(model_config, config)
    hardware = resolve_hardware(config, model_config, meta)
    steps = optimizer_steps(config, data.rows, general is not None)
    per_step = sequences_per_step(config)
    tokens_per_step = per_step * config.batch.seq_len
    parameters, trainable, ewc_params = parameter_counts(meta, config)
    memory = memory_estimate(config, model_config, hardware, parameters, trainable, ewc_params)
    speed, basis = _speed(config, hardware, meta, parameters, probe_steps)
    processes = config.system.processes  # the rule of thumb: the peak of every GPU of the run
    estimate = estimate_time(tokens=steps * tokens_per_step, tokens_per_second=speed, basis=basis,
                             device=hardware.device, parameters=parameters, method=config.method.kind,
                             peak_flops=(hardware.peak_flops or CUDA_PEAK_FLOPS) * processes,
                             gpu=f"{processes} x {hardware.gpu_name or 'GPU'}" if processes > 1 else hardware.gpu_name)
    evaluations = evaluation_count(config, steps)
    eval_seconds = evaluations * estimate_eval_time(
        tokens=_eval_tokens(config, tokenizer, data.heldout_tokens, general), training=estimate,
        method=config.method.kind)
    domain_share = 1 - config.corpus.replay_ratio if general else 1.0
    size = RunSize(steps, data.train_tokens, int(steps * tokens_per_step * domain_share),
                   memory, hardware, *device_memory(hardware.device), estimate.seconds, eval_seconds,
                   evaluations)
    return Plan(steps, per_step, tokens_per_step, steps * tokens_per_step, data.tokens,
                general.tokens if general else 0, hardware.device, hardware.precision,
                hardware.gradient_checkpointing, parameters, trainable, memory, estimate,
                checked.warnings + data.warnings + run_warnings(config, size), data.packing or checked.tokens.describe(),
                memory_words(size), token_band(data.tokens) if config.stage != "sft" else "", eval_seconds,
                learning_rates_text(config), hardware.kernels_text(), hardware.gpu_name, config.stage,
                benchmark_words(config, steps))


@dataclass
class _TrainingData:
    """The run's own data (the domain corpus, or an SFT run's examples) as the plan counts it."""

    tokens: int
    """All its tokens (the plan's 'domain' figure)."""
    rows: int
    """Training rows of batch.seq_len tokens (recipe.optimizer_steps' domain rows)."""
    train_tokens: int
    """Tokens of those rows: what one pass trains on (RunSize.domain_tokens, for the passes)."""
    heldout_tokens: int
    """Tokens one evaluation reads of its held-out part (eval.max_tokens at most)."""
    packing: str = ""
    """How an SFT run packs its examples, for the plan's documents line ('' for CPT)."""
    warnings: list[str] = field(default_factory=list)
    """What the data will do that the settings may not have meant (SFT examples cut to a row)."""


def _training_data(config: RunConfig, tokenizer, model_config, progress: Progress | None) -> _TrainingData:
    seq_len = config.batch.seq_len
    if config.stage == "sft":
        from .sft_run import sft_size

        tick(progress, 1, PLAN_STAGES, "tokenizing the instruction data")
        sft = sft_size(config, tokenizer)
        packed = (f"packed into {sft.rows:,} rows of {seq_len} tokens, {sft.cut:,} of them cut to a row"
                  if sft.cut else f"whole ones packed into {sft.rows:,} rows of {seq_len} tokens")
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        context = getattr(text, "max_position_embeddings", None)
        return _TrainingData(sft.tokens, sft.rows, sft.rows * seq_len, sft.heldout_tokens,
                             f"{sft.examples:,} instruction examples, {packed} (positions restart at each; "
                             "loss on the responses only)",
                             sft_cut_warnings(config, sft.training, sft.cut, sft.dropped,
                                              (sft.longest, sft.longest_origin), context))
    domain = corpus_stats(config.corpus.domain, tokenizer, preview=0, skip_bad=config.corpus.skip_bad,
                          progress=_stage(progress, 1, "tokenizing the domain corpus"))
    train_share = 1 - _heldout_share(config, domain.documents)
    rows = math.ceil((domain.tokens + domain.documents) * train_share / seq_len)
    heldout = min(config.eval.max_tokens, int(domain.tokens * _heldout_share(config, domain.documents)))
    return _TrainingData(domain.tokens, rows, int(domain.tokens * train_share), heldout)


def _from_the_starting_model(config: RunConfig) -> tuple[RunConfig, Path | None]:
    """(the config with the model it starts from, the folder of the tokenizer it starts with).
    A chained run (SFT, a second stage) starts from its parent's checkpoint, whose tokenizer may
    be an extended one: a full checkpoint is the model itself (as create_chained_run sets it); a
    LoRA checkpoint is merged into its base when the run is created, so the base's shapes count
    and the checkpoint's tokenizer."""
    from .generate import is_adapter

    if not config.parent_run:
        return config, None
    checkpoint = checkpoint_folder(config.parent_run, config.parent_step)
    if is_adapter(checkpoint):
        return config, checkpoint
    config = copy.deepcopy(config)
    config.model.name_or_path = str(checkpoint)
    return config, None


PLAN_STAGES = 4
"""plan_run's stages for its progress: the checks, the domain and general corpora, the model."""


def _stage(progress: Progress | None, stage: int, what: str) -> ProgressCallback | None:
    """The tokenizer's progress events as stage `stage` of PLAN_STAGES, with its counts."""
    if progress is None:
        return None
    return lambda event: progress(stage, PLAN_STAGES, f"{what}: {event.get('documents', 0):,} documents, "
                                                      f"{event.get('tokens', 0):,} tokens")


def evaluation_count(config: RunConfig, steps: int) -> int:
    """Evaluations a run of `steps` optimizer steps makes: step 0 (the baseline), every
    eval.interval steps, every checkpoint (checkpoints.interval) and the last step."""
    every = set(range(config.eval.interval, steps + 1, config.eval.interval))
    saved = set(range(config.checkpoints.interval, steps + 1, config.checkpoints.interval))
    return 1 + len(every | saved | {steps})


def benchmark_words(config: RunConfig, steps: int) -> str:
    """The lm-eval tasks and knowledge probes a run of `steps` optimizer steps scores, and when,
    in words; '' when none. Their time is not estimated: lm-eval counts a task's requests only
    once it has loaded the task's dataset, and a task runs from seconds (a --limit) to hours
    (MMLU's 14,042 questions on a CPU)."""
    settings, parts = config.benchmarks, []
    if settings.probes_during_training and settings.probes:
        saved = set(range(config.checkpoints.interval, steps + 1, config.checkpoints.interval)) | {steps}
        parts.append(f"the probes at step 0 and at each of {len(saved)} checkpoints"
                     + (f" (at most {settings.probe_limit} of each kind)" if settings.probe_limit else ""))
    if settings.configured and settings.at_end:
        scored = settings.domain_tasks + settings.general_tasks + (["the probes"] if settings.probes else [])
        examples = f"at most {settings.limit:,} examples a task" if settings.limit else "every example"
        parts.append(f"at the end {', '.join(scored)} on the base model and the recommended checkpoint ({examples})")
    return "; ".join(parts) + ("; their time is not in the estimate above" if parts else "")


def _eval_tokens(config: RunConfig, tokenizer, heldout_tokens: int, general) -> int:
    """Tokens one evaluation reads: the run's own held-out part (`heldout_tokens`), the general
    corpus's held-out documents and each evaluation set, each cut to eval.max_tokens."""
    cap = config.eval.max_tokens
    tokens = heldout_tokens
    if general is not None:
        tokens += min(cap, int(general.tokens * _heldout_share(config, general.documents)))
    for spec in config.eval.sets:
        found = corpus_stats([SourceSpec(spec.path, spec.text_field)], tokenizer, preview=0, skip_bad=True)
        tokens += min(cap, found.tokens)
    return tokens


def _heldout_share(config: RunConfig, documents: int) -> float:
    if config.eval.heldout_count is not None:
        return min(config.eval.heldout_count / max(documents, 1), 1.0)
    return config.eval.heldout_fraction


def _speed(config: RunConfig, hardware, meta, parameters: int, probe_steps: int) -> tuple[float | None, str]:
    """(tokens/s, where it came from) for the plan: a probe's now (`probe_steps` > 0, recorded for
    later plans), else the closest measurement of this device and method carried over to this
    model (cpt_studio.core.throughput.carried_over), else (None, ""): the rule of thumb."""
    per_token = flops_per_token(meta, config)
    processes = config.system.processes
    if probe_steps:  # the probe trains on one process, so it measures one GPU
        speed = probe_speed(config, hardware, probe_steps)
        record(Measurement(device_label(hardware.gpu_name), config.method.kind, parameters, per_token, speed,
                           "probe", config.batch.seq_len, config.batch.micro_batch,
                           mfu=model_flops_utilisation(speed, per_token, hardware.peak_flops),
                           **kernel_setup(hardware)))
        scaled = f" on one process, x {processes} (assumed to scale evenly)" if processes > 1 else ""
        return (speed * processes,
                f"measured by a probe just now: {speed:,.0f} tokens/s{scaled} (remembered for later plans "
                "on this machine)")
    return carried_over(gpu=hardware.gpu_name, processes=processes, method=config.method.kind,
                        parameters=parameters, flops_per_token=per_token, setup=kernel_setup(hardware)) or (None, "")


def probe_speed(config: RunConfig, hardware: Hardware, steps: int = 3) -> float:
    """Tokens per second of real full-size training steps on this machine, with the run's
    kernels (`hardware`: the plan's resolve_hardware for this model). The first step, which pays
    for allocation, kernel selection and compilation, is not counted."""
    model, _ = load_model_and_tokenizer(config.model.name_or_path, attn_implementation=hardware.attention,
                                        trust_remote_code=config.model.trust_remote_code,
                                        allow_pickle=config.model.allow_pickle)
    model = _as_the_trainer_runs_it(apply_method(model, config).to(hardware.device).train(), hardware)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6,
                                  fused=hardware.optimizer.endswith("fused") or None)  # as the run's
    shape = (config.batch.micro_batch, config.batch.seq_len)
    ids = torch.randint(0, model.config.vocab_size, shape, device=hardware.device)
    elapsed = 0.0
    for step in range(steps + 1):
        started = time.perf_counter()
        for _ in range(config.batch.grad_accum):
            with torch.autocast(hardware.device, dtype=hardware.autocast_dtype or torch.float32,
                                enabled=hardware.autocast_dtype is not None):
                model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if hardware.device == "cuda":
            torch.cuda.synchronize()
        elapsed += (time.perf_counter() - started) if step else 0.0
    return steps * config.batch.grad_accum * shape[0] * shape[1] / elapsed


def _as_the_trainer_runs_it(model, hardware: Hardware):
    """The model with what the Trainer's arguments for `hardware` switch on (training_arguments:
    activation checkpointing without re-entrance, Liger's kernels, torch.compile's default
    inductor backend), done here the way transformers' Trainer does it, so that a probe measures
    the run's kernels without a Trainer around a few random batches."""
    if hardware.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hardware.fused_kernels:
        from liger_kernel.transformers import (
            _apply_liger_kernel_to_instance,  # the Trainer's own call
        )

        _apply_liger_kernel_to_instance(model=model.get_base_model() if hasattr(model, "get_base_model") else model)
    return torch.compile(model) if hardware.compile else model


def format_plan(plan: Plan) -> str:
    lines = [
        f"steps          {plan.steps:,} optimizer steps of {plan.sequences_per_step} sequences "
        f"({plan.tokens_per_step:,} tokens)",
        f"tokens         {plan.total_tokens:,} to train on; "
        + (f"instruction data: {plan.domain_tokens:,}, general corpus: {plan.general_tokens:,}"
           if plan.stage == "sft" else f"corpus: {plan.domain_tokens:,} domain, {plan.general_tokens:,} general"),
        f"model          {plan.parameters:,} parameters, {plan.trainable:,} trainable",
        f"{'examples' if plan.stage == 'sft' else 'documents':<15}{plan.documents}",
        f"hardware       {plan.device}{f' ({plan.gpu_name})' if plan.gpu_name else ''}, {plan.precision}",
        f"time           about {format_duration(plan.time.seconds)}, and about "
        f"{format_duration(plan.evaluation_seconds)} of evaluation",
        *(f"{'':<15}{part}" for part in plan.time.basis.split("; ")),  # a measurement's is long: a line each part
        f"{'':<15}(step 0's evaluation included; loading the model and tokenizing the "
        f"{'instruction data' if plan.stage == 'sft' else 'corpus'} before it are not)",
        f"memory         {format_bytes(plan.memory.total)} at the peak: {plan.memory_rating or 'not rated'}",
    ]
    kernels = [f"{'kernels' if i == 0 else '':<15}{part}" for i, part in enumerate(plan.kernels.split("; "))]
    lines[5:5] = kernels if plan.kernels else []
    lines += [f"  {label:<32}{format_bytes(size):>12}" for label, size in plan.memory.breakdown()]
    lines += [f"corpus         {plan.corpus_note}"] if plan.corpus_note else []
    lines += [f"benchmarks     {plan.benchmarks}"] if plan.benchmarks else []
    if plan.learning_rates:
        lines.insert(1, f"learning rate  {plan.learning_rates}")
    lines += [f"warning        {w}" for w in plan.warnings]
    return "\n".join(lines)


def lr_schedule(config: RunConfig, total_steps: int, at: Sequence[int] | None = None) -> list[float]:
    """The learning rate of every optimizer step of a `total_steps` run (the n-th rate: after n
    scheduler steps), or only of the steps `at` (0-based, as many as wanted: a preview of a
    100,000-step run reads 1,000), from the Trainer's own scheduler: its rule (LambdaLR's
    multiple of the peak) read at each step rather than stepped through."""
    (get_scheduler,) = transformers_names("get_scheduler")

    name, kwargs, warmup = scheduler_settings(config, total_steps)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.schedule.peak_lr)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
                              scheduler_specific_kwargs=kwargs)
    (multiple,) = scheduler.lr_lambdas  # every schedule of scheduler_settings is a LambdaLR
    return [config.schedule.peak_lr * multiple(step) for step in (range(total_steps) if at is None else at)]
