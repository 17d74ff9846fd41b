"""The training recipe's setup, one home for what the run (cpt_studio.core.training) does and
its plan (cpt_studio.core.plan) predicts, so that the two cannot disagree:

    hardware = resolve_hardware(config)        # device, precision, attention kernel, checkpointing
    steps = optimizer_steps(config, domain_rows, has_general)
    name, kwargs, warmup = scheduler_settings(config, steps)   # the Trainer's learning-rate schedule
    model = apply_method(model, config)        # full fine-tuning as is, or LoRA adapters on top
    split_embedding_group(optimizer, model, peak, config.schedule.embedding_lr_scale)  # its own LR

and what the method trains, counted on a model built on the meta device (no weights):
`lora_size`, `ewc_group_size`. Preflight checks use the same counts and `flash_attn_installed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import RunConfig
from .ewc import embedding_names, in_group
from .tokenizer_ext import lora_token_rows


@dataclass
class Hardware:
    device: str
    """The device the run trains on: cuda or cpu."""
    precision: str
    """bf16 or fp16 (mixed precision: fp32 weights, 16-bit autocast), or fp32."""
    attention: str
    """The attention kernel given to transformers: flash_attention_2, sdpa or eager."""
    gradient_checkpointing: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)


def resolve_hardware(config: RunConfig) -> Hardware:
    """Turn the 'auto' settings into what this machine will use."""
    cuda = torch.cuda.is_available()
    system = config.system
    precision = system.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    attention = system.attention
    if attention == "auto":
        attention = "flash_attention_2" if cuda and flash_attn_installed() else "sdpa"
    checkpointing = cuda if system.gradient_checkpointing == "auto" else system.gradient_checkpointing == "on"
    return Hardware("cuda" if cuda else "cpu", precision, attention, checkpointing)


def cuda_devices() -> int:
    """The CUDA GPUs this machine offers (0 without CUDA): a run can train on up to that many
    processes here (system.processes)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def flash_attn_installed() -> bool:
    """Whether the optional flash-attn package (the `gpu` extra) can be imported."""
    try:
        import flash_attn  # noqa: F401 — the probe itself: an optional package
    except ImportError:
        return False
    return True


def sequences_per_step(config: RunConfig) -> int:
    """Sequences in one optimizer step over all processes (the global batch):
    batch.micro_batch x batch.grad_accum x system.processes."""
    return config.batch.micro_batch * config.batch.grad_accum * config.system.processes


def optimizer_steps(config: RunConfig, domain_rows: int, has_general: bool) -> int:
    """Optimizer steps: max_steps, else the token budget, else schedule.epochs passes over the
    domain rows (sequences of batch.seq_len tokens: the domain corpus's, or an SFT run's packed
    examples; with a general corpus, replay takes its share of each step). The same on any
    number of processes: a step is sequences_per_step(config) sequences."""
    per_step = sequences_per_step(config)
    if config.schedule.max_steps:
        return config.schedule.max_steps
    if config.schedule.token_budget:
        return max(1, math.ceil(config.schedule.token_budget / (per_step * config.batch.seq_len)))
    domain_per_step = per_step * (1 - config.corpus.replay_ratio if has_general else 1)
    return max(1, math.ceil(config.schedule.epochs * domain_rows / domain_per_step))


def accumulation_per_process(grad_accum: int, processes: int, world_size: int) -> int:
    """Micro-batches each of `world_size` processes accumulates per optimizer step, so that
    the step holds the batch planned for `processes` (system.processes): grad_accum x processes
    / world_size. ValueError, saying what to change, when that is not a whole number."""
    total = grad_accum * processes
    if total % world_size:
        raise ValueError(f"batch: {grad_accum} accumulated micro-batch(es) x {processes} process(es) "
                         f"= {total} cannot be shared by {world_size} processes; run on a number of "
                         f"processes that divides {total}, or make batch.grad_accum x system.processes "
                         f"a multiple of {world_size}")
    return total // world_size


def scheduler_settings(config: RunConfig, total_steps: int) -> tuple[str, dict, int]:
    """The Trainer's scheduler name, its kwargs, and the warmup steps."""
    schedule = config.schedule
    warmup = math.ceil(total_steps * schedule.warmup_ratio)
    decay_steps = {"linear": total_steps - warmup,
                   "wsd": max(1, round(total_steps * schedule.decay_ratio))}
    if schedule.decay == "cosine":
        return "cosine_with_min_lr", {"min_lr_rate": schedule.min_lr_ratio}, warmup
    if schedule.decay == "constant":
        return "constant_with_warmup", {}, warmup
    # linear = warmup-stable-decay with no stable phase and a linear decay to the minimum
    kind = "linear" if schedule.decay == "linear" else "cosine"
    return "warmup_stable_decay", {"num_decay_steps": decay_steps[schedule.decay], "decay_type": kind,
                                   "min_lr_ratio": schedule.min_lr_ratio}, warmup


def apply_method(model, config: RunConfig, new_token_ids: list[int] | tuple = ()):
    """The model to train: `model` itself for full fine-tuning, or a peft model with LoRA
    adapters on method.target_modules (and the rows of `new_token_ids`, the tokens the run
    added, trainable in the embeddings)."""
    if config.method.kind != "lora":
        return model
    # peft takes seconds to import: only a LoRA run pays for it, not the app's start.
    from peft import LoraConfig, get_peft_model

    method = config.method
    # New tokens' rows must learn, but LoRA freezes the embeddings. trainable_token_indices
    # trains only those rows (a tied lm_head follows them); modules_to_save would train whole
    # copies of the embedding and lm_head matrices, with gradients and optimizer state for
    # every row of the vocabulary. (Either way peft saves the resized matrices in each
    # checkpoint, so the adapter loads on a base resized to the checkpoint's vocabulary.)
    lora = LoraConfig(r=method.lora_rank, lora_alpha=method.lora_alpha, lora_dropout=method.lora_dropout,
                      target_modules=list(method.target_modules), task_type="CAUSAL_LM",
                      trainable_token_indices=lora_token_rows(model, list(new_token_ids)))
    return get_peft_model(model, lora)


# -- learning rate per group ------------------------------------------------------------

EMBEDDING_GROUP = "embeddings"
"""The name of the optimizer group of the input embeddings and the output layer."""


def embedding_parameters(model) -> list[torch.nn.Parameter]:
    """The trainable weights of the input embeddings and the output layer (a tied matrix
    once; with LoRA, an extended tokenizer's trainable new rows, which peft keeps in them)."""
    found = {}
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            found.update({id(p): p for p in module.parameters() if p.requires_grad})
    return list(found.values())


def split_embedding_group(optimizer, model, peak_lr: float, scale: float) -> None:
    """Move the embedding weights (embedding_parameters) out of the optimizer's groups into
    groups of their own named EMBEDDING_GROUP, with lr = peak_lr x scale and the weight decay
    of the group they came from. Call it on a new optimizer, before its first step (it holds
    no state yet) and before the scheduler is made: the schedule then scales each group from
    its own rate, and the peak-rate groups stay first. Nothing changes when scale is 1."""
    if scale == 1:
        return
    moved = {id(p) for p in embedding_parameters(model)}
    for group in list(optimizer.param_groups):
        inside = [p for p in group["params"] if id(p) in moved]
        if inside and group.get("name") != EMBEDDING_GROUP:
            group["params"] = [p for p in group["params"] if id(p) not in moved]
            optimizer.add_param_group({"params": inside, "lr": peak_lr * scale,
                                       "weight_decay": group["weight_decay"], "name": EMBEDDING_GROUP})


def learning_rates_text(config: RunConfig) -> str:
    """The peak rate of each group in words ('' when every weight has the peak rate)."""
    schedule = config.schedule
    if schedule.embedding_lr_scale == 1:
        return ""
    return (f"peak {schedule.peak_lr:g}; embeddings and output layer x{schedule.embedding_lr_scale:g} "
            f"({schedule.peak_lr * schedule.embedding_lr_scale:g}), scheduled alike")


# -- what the method trains (on a model built on the meta device) ---------------------------

def lora_targets(model, targets) -> dict[str, list[str]]:
    """For each of `targets` (method.target_modules), the names of the model's linear layers
    that peft puts an adapter on: peft's rule for a list of names, the module's full name is
    the target or ends with "." + target ("q_proj", "self_attn.q_proj"). An empty list: the
    model has no such layer."""
    linear = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    return {t: [n for n in linear if n == t or n.endswith(f".{t}")] for t in targets}


def lora_size(model, config: RunConfig, group: str = "trainable") -> int:
    """Adapter parameters LoRA adds (those of one EWC group's modules only, with `group`)."""
    rank = config.method.lora_rank
    names = {n for found in lora_targets(model, config.method.target_modules).values() for n in found}
    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if name in names and in_group(f"{name}.lora_A.weight", group))


def ewc_group_size(model, config: RunConfig) -> int | None:
    """Weights EWC keeps a Fisher and a reference copy of (cpt_studio.core.ewc's groups, trainable
    only); None without EWC."""
    if not config.ewc.enabled:
        return None
    group = config.ewc.group
    if config.method.kind == "lora":  # only adapters train: the base is never copied
        return lora_size(model, config, group)
    embeddings = embedding_names(model) if group == "embeddings" else frozenset()
    return sum(p.numel() for name, p in model.named_parameters() if in_group(name, group, embeddings))
