"""The plan shown before a run starts: steps, tokens, memory, time and warnings.

    plan = plan_run(config)           # what `cpt-studio train CONFIG --dry-run` prints
    print(format_plan(plan))          # and what the wizard's summary page shows

No weights are loaded: the model is built on the meta device for its shapes. The corpus is
tokenized (into the cache the run will use), so the token counts are exact. With
`probe_steps`, a few real training steps on this machine measure the speed instead of
assuming it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .config import RunConfig
from .estimate import (
    MemoryEstimate,
    TimeEstimate,
    estimate_memory,
    estimate_time,
    format_bytes,
    format_duration,
)
from .models import load_model_and_tokenizer, resolve_model


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


def plan_steps(config: RunConfig, domain_rows: int, has_general: bool, world_size: int = 1) -> int:
    """Optimizer steps: max_steps, else the token budget, else one pass over the domain rows."""
    per_step = config.batch.micro_batch * config.batch.grad_accum * world_size
    if config.schedule.max_steps:
        return config.schedule.max_steps
    if config.schedule.token_budget:
        return max(1, math.ceil(config.schedule.token_budget / (per_step * config.batch.seq_len)))
    domain_per_step = per_step * (1 - config.corpus.replay_ratio if has_general else 1)
    return max(1, math.ceil(domain_rows / domain_per_step))


def plan_run(config: RunConfig, *, probe_steps: int = 0) -> Plan:
    from transformers import AutoConfig, AutoTokenizer

    from .stats import corpus_stats

    problems = config.validate()
    if problems:
        raise ValueError("the run cannot start:\n" + "\n".join(f"  {p}" for p in problems))
    folder = resolve_model(config.model.name_or_path, allow_download=config.model.allow_download,
                           trust_remote_code=config.model.trust_remote_code)
    model_config = AutoConfig.from_pretrained(folder, trust_remote_code=config.model.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    domain = corpus_stats(config.corpus.domain, tokenizer, preview=0, skip_bad=config.corpus.skip_bad)
    general = (corpus_stats(config.corpus.general, tokenizer, preview=0, skip_bad=config.corpus.skip_bad)
               if config.corpus.general else None)
    from .training import resolve_hardware

    hardware = resolve_hardware(config)
    train_share = 1 - _heldout_share(config, domain.documents)
    domain_rows = math.ceil((domain.tokens + domain.documents) * train_share / config.batch.seq_len)
    steps = plan_steps(config, domain_rows, general is not None)
    per_step = config.batch.micro_batch * config.batch.grad_accum
    tokens_per_step = per_step * config.batch.seq_len
    parameters, trainable, ewc_params = _parameter_counts(model_config, config)
    memory = _memory(config, model_config, hardware, parameters, trainable, ewc_params)
    speed = probe_speed(config, probe_steps) if probe_steps else None
    estimate = estimate_time(tokens=steps * tokens_per_step, tokens_per_second=speed,
                             device=hardware.device, parameters=parameters)
    return Plan(steps, per_step, tokens_per_step, steps * tokens_per_step, domain.tokens,
                general.tokens if general else 0, hardware.device, hardware.precision,
                hardware.gradient_checkpointing, parameters, trainable, memory, estimate,
                config.warnings(domain.tokens))


def _heldout_share(config: RunConfig, documents: int) -> float:
    if config.eval.heldout_count is not None:
        return min(config.eval.heldout_count / max(documents, 1), 1.0)
    return config.eval.heldout_fraction


def _parameter_counts(model_config, config: RunConfig) -> tuple[int, int, int | None]:
    """(all parameters, trainable ones, those in EWC's group or None without EWC) from the
    model built on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, trust_remote_code=config.model.trust_remote_code)
    parameters = sum(p.numel() for p in model.parameters())  # .parameters() counts tied weights once
    if config.method.kind != "lora":
        return parameters, parameters, _ewc_group_size(model, config)
    return parameters, _lora_size(model, config), _ewc_group_size(model, config)


def _lora_size(model, config: RunConfig, group: str = "trainable") -> int:
    """Adapter parameters LoRA adds (those of one EWC group's modules only, with `group`)."""
    from .ewc import in_group

    rank, targets = config.method.lora_rank, set(config.method.target_modules)
    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
               and in_group(f"{name}.lora_A.weight", group))


def _ewc_group_size(model, config: RunConfig) -> int | None:
    """Weights EWC keeps a Fisher and a reference copy of (cpt_studio.core.ewc's groups, trainable only)."""
    from .ewc import embedding_names, in_group

    if not config.ewc.enabled:
        return None
    group = config.ewc.group
    if config.method.kind == "lora":  # only adapters train: the base is never copied
        return _lora_size(model, config, group)
    embeddings = embedding_names(model) if group == "embeddings" else frozenset()
    return sum(p.numel() for name, p in model.named_parameters() if in_group(name, group, embeddings))


def _memory(config: RunConfig, model_config, hardware, parameters: int, trainable: int,
            ewc_params: int | None = None) -> MemoryEstimate:
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return estimate_memory(
        parameters=parameters, trainable=trainable, hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers, vocab_size=text.vocab_size,
        intermediate_size=getattr(text, "intermediate_size", 4 * text.hidden_size),
        num_heads=text.num_attention_heads, micro_batch=config.batch.micro_batch,
        seq_len=config.batch.seq_len, precision=hardware.precision, method=config.method.kind,
        gradient_checkpointing=hardware.gradient_checkpointing, device=hardware.device,
        eager_attention=hardware.attention == "eager", ewc=config.ewc.enabled, ewc_params=ewc_params)


def probe_speed(config: RunConfig, steps: int = 3) -> float:
    """Tokens per second of real full-size training steps on this machine (the first step,
    which pays for allocation and kernel selection, is not counted)."""
    from .training import _apply_method, resolve_hardware

    hardware = resolve_hardware(config)
    model, _ = load_model_and_tokenizer(config.model.name_or_path, attn_implementation=hardware.attention,
                                        trust_remote_code=config.model.trust_remote_code)
    model = _apply_method(model, config).to(hardware.device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
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


def format_plan(plan: Plan) -> str:
    lines = [
        f"steps          {plan.steps:,} optimizer steps of {plan.sequences_per_step} sequences "
        f"({plan.tokens_per_step:,} tokens)",
        f"tokens         {plan.total_tokens:,} to train on; corpus: {plan.domain_tokens:,} domain, "
        f"{plan.general_tokens:,} general",
        f"model          {plan.parameters:,} parameters, {plan.trainable:,} trainable",
        f"hardware       {plan.device}, {plan.precision}, gradient checkpointing "
        f"{'on' if plan.gradient_checkpointing else 'off'}",
        f"time           about {format_duration(plan.time.seconds)} ({plan.time.basis})",
        f"memory         {format_bytes(plan.memory.total)} at the peak:",
    ]
    lines += [f"  {label:<32}{format_bytes(size):>12}" for label, size in plan.memory.breakdown()]
    lines += [f"warning        {w}" for w in plan.warnings]
    return "\n".join(lines)


def lr_schedule(config: RunConfig, total_steps: int) -> list[float]:
    """The learning rate of every optimizer step, from the Trainer's own scheduler."""
    from transformers import get_scheduler

    from .training import scheduler_settings

    name, kwargs, warmup = scheduler_settings(config, total_steps)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.schedule.peak_lr)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
                              scheduler_specific_kwargs=kwargs)
    rates = []
    for _ in range(total_steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates
