"""The training recipe's setup, one home for what the run (cpt_studio.core.training) does and
its plan (cpt_studio.core.plan) predicts, so that the two cannot disagree:

    hardware = resolve_hardware(config)        # device, precision, attention kernel, checkpointing
    steps = optimizer_steps(config, domain_rows, has_general)
    name, kwargs, warmup = scheduler_settings(config, steps)   # the Trainer's learning-rate schedule
    model = apply_method(model, config)        # full fine-tuning as is, or LoRA adapters on top
    split_embedding_group(optimizer, model, peak, config.schedule.embedding_lr_scale)  # its own LR
    split_new_token_rows(optimizer, model, peak, config.schedule.new_token_lr_scale, new_token_ids)

and what the method trains, counted on a model built on the meta device (no weights):
`lora_size`, `ewc_group_size`. Preflight checks use the same counts and `flash_attn_installed`.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .config import RunConfig
from .estimate import (
    TIGHT_FRACTION,
    MemoryEstimate,
    estimate_memory,
    format_bytes,
    gpu_peak_flops,
    training_flops_per_token,
)
from .ewc import embedding_names, in_group
from .hf_imports import imported_name, transformers_names
from .tokenizer_ext import lora_token_rows


@dataclass
class Hardware:
    device: str
    """The device the run trains on: cuda or cpu."""
    precision: str
    """bf16 or fp16 (mixed precision: fp32 weights, 16-bit autocast), or fp32."""
    attention: str
    """The attention kernel given to transformers: flash_attention_2, flex_attention, sdpa or eager."""
    gradient_checkpointing: bool
    gpu_name: str = ""
    """torch.cuda.get_device_name() of the GPU ('' on a CPU)."""
    peak_flops: float | None = None
    """The device's dense 16-bit peak in FLOP/s for MFU: system.peak_tflops, else
    cpt_studio.core.estimate.gpu_peak_flops(gpu_name); None on a CPU or an unknown GPU."""
    fused_kernels: bool = False
    """Liger's fused kernels (the Trainer's use_liger_kernel)."""
    compile: bool = False
    """torch.compile (the Trainer's torch_compile)."""
    optimizer: str = "adamw_torch_fused"
    """The Trainer's optim: torch's AdamW with its fused kernel (one kernel for all the
    parameters' updates; on CPU and CUDA since torch 2.4), else its foreach implementation."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each 'auto' choice was made, for the plan: attention, checkpointing, fused_kernels."""

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def kernels_text(self) -> str:
        """The plan's kernels line: "attention flex_attention (...); AdamW fused; ..."."""
        parts = [f"attention {self.attention} ({self.reasons.get('attention', 'set in the config')})",
                 "AdamW fused" if self.optimizer.endswith("fused") else "AdamW (foreach)",
                 f"Liger kernels {'on' if self.fused_kernels else 'off'}"
                 + (f" ({self.reasons['fused_kernels']})" if "fused_kernels" in self.reasons else ""),
                 f"torch.compile {'on' if self.compile else 'off'}",
                 f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}"
                 + (f" ({self.reasons['checkpointing']})" if "checkpointing" in self.reasons else "")]
        return "; ".join(parts)


def resolve_hardware(config: RunConfig, model_config=None, model=None) -> Hardware:
    """Turn the 'auto' settings into what this machine will use. With the model's
    `model_config` (a transformers PretrainedConfig), the attention kernel and Liger follow
    what that architecture supports, and checkpointing follows the memory estimate; without
    it, support is assumed and checkpointing is on for a GPU. `model`: its meta model when the
    caller has built one already (meta_model), else it is built here."""
    cuda = torch.cuda.is_available()
    system = config.system
    precision = system.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if model is None and model_config is not None:
        model = meta_model(model_config, config)
    attention, attention_why = choose_attention(system.attention, cuda, model)
    fused, fused_why = choose_fused_kernels(system.fused_kernels, cuda, model_config)
    gpu = torch.cuda.get_device_name() if cuda else ""
    peak = system.peak_tflops * 1e12 if system.peak_tflops else gpu_peak_flops(gpu) if cuda else None
    hardware = Hardware("cuda" if cuda else "cpu", precision, attention, False, gpu, peak, fused,
                        system.compile, "adamw_torch_fused" if FUSED_ADAMW else "adamw_torch",
                        {"attention": attention_why, "fused_kernels": fused_why})
    hardware.gradient_checkpointing, why = choose_checkpointing(config, hardware, model_config, model)
    hardware.reasons["checkpointing"] = why
    return hardware


FUSED_ADAMW = "fused" in inspect.signature(torch.optim.AdamW).parameters
"""Whether this torch's AdamW has its fused kernel (CPU and CUDA from torch 2.4)."""

def choose_attention(setting: str, cuda: bool, model=None) -> tuple[str, str]:
    """(kernel, why) for system.attention `setting` on this machine, for `model` (an instance
    or meta model of the architecture; None: assume it supports every kernel). 'auto' on CUDA:
    flash_attention_2 when flash-attn is installed (variable-length kernels: documents cost no
    cross-document work), else flex_attention (block masks that skip the blocks between
    documents), else sdpa (a block-diagonal mask on the memory-efficient kernel); on a CPU sdpa
    (flex attention has no backward pass on a CPU). Every kernel keeps packed documents apart
    (tests/test_packing.py)."""
    if setting != "auto":
        return setting, "set in the config"
    supports = {"flash_attention_2": getattr(model, "_supports_flash_attn", True),
                "flex_attention": getattr(model, "_supports_flex_attn", True),
                "sdpa": getattr(model, "_supports_sdpa", True)}
    name = type(model).__name__ if model is not None else "the model"
    if not cuda:
        if supports["sdpa"]:
            return "sdpa", "on a CPU: PyTorch's scaled-dot-product attention with a block mask per document"
        return "eager", f"{name} has no SDPA attention"
    if flash_attn_installed() and supports["flash_attention_2"]:
        return "flash_attention_2", "flash-attn installed: variable-length kernels, one sequence per document"
    missing = "flash-attn not installed" if not flash_attn_installed() else f"{name} has no flash attention"
    if flex_attention_available() and supports["flex_attention"]:
        return "flex_attention", f"{missing}: PyTorch's FlexAttention skips the blocks between documents"
    if supports["sdpa"]:
        return "sdpa", f"{missing}, no FlexAttention for {name}: SDPA with a block mask per document"
    return "eager", f"{missing}, and {name} has no SDPA attention"


@contextmanager
def attention_for_padded_batches(model):
    """`model` on SDPA for the duration, when it trains on FlexAttention: lm-eval's batches
    (live probes) are padded to a new length each time, and FlexAttention compiles its kernel
    anew for every shape, where SDPA runs any. The run's own kernel is back afterwards."""
    kernel = getattr(model.config, "_attn_implementation", None)
    if kernel != "flex_attention":
        yield model
        return
    model.set_attn_implementation("sdpa")
    try:
        yield model
    finally:
        model.set_attn_implementation(kernel)


def flex_attention_available() -> bool:
    """Whether this torch and transformers have FlexAttention (torch 2.5 and later)."""
    is_torch_flex_attn_available = imported_name("transformers.utils", "is_torch_flex_attn_available")

    return bool(is_torch_flex_attn_available())


def choose_fused_kernels(setting: str, cuda: bool, model_config=None) -> tuple[bool, str]:
    """(on, why) for system.fused_kernels: Liger's Triton kernels need CUDA, the liger-kernel
    package and an architecture it patches (liger_kernel's MODEL_TYPE_TO_APPLY_LIGER_FN)."""
    if setting == "off":
        return False, "set off"
    if setting == "on":
        return True, "set on"
    if not cuda:
        return False, "they need a CUDA GPU"
    supported = liger_model_types()
    if supported is None:
        return False, "liger-kernel not installed (pip install liger-kernel)"
    model_type = getattr(model_config, "model_type", None)
    if model_config is not None and model_type not in supported:
        return False, f"liger-kernel has no kernels for {model_type!r} models"
    return True, "liger-kernel installed"


def liger_model_types() -> set[str] | None:
    """The model types liger-kernel patches, or None when it is not installed."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return None
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def choose_checkpointing(config: RunConfig, hardware: Hardware, model_config=None,
                         model=None) -> tuple[bool, str]:
    """(on, why) for system.gradient_checkpointing. 'auto': off on a CPU; on a GPU, off when
    the memory estimate without it stays under TIGHT_FRACTION of the GPU's total memory (the
    total, not what is free now, so that the plan and the run decide alike), on otherwise or
    when the model is not known."""
    setting = config.system.gradient_checkpointing
    if setting != "auto":
        return setting == "on", "set in the config"
    if hardware.device != "cuda":
        return False, "on a CPU"
    if model_config is None or model is None:
        return True, "the model's size is not known yet"
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False, f"{type(model).__name__} does not support it"
    parameters, trainable, ewc_params = parameter_counts(model, config)
    without = memory_estimate(config, model_config, hardware, parameters, trainable, ewc_params)
    total = gpu_total_memory()
    if without.total <= TIGHT_FRACTION * total:
        return False, (f"the estimate without it, {format_bytes(without.total)}, fits "
                       f"{TIGHT_FRACTION:.0%} of the GPU's {format_bytes(total)}")
    return True, (f"the estimate without it, {format_bytes(without.total)}, is over "
                  f"{TIGHT_FRACTION:.0%} of the GPU's {format_bytes(total)}")


def gpu_total_memory() -> int:
    """Bytes of memory of this process's GPU (CUDA's current device)."""
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory


def meta_model(model_config, config: RunConfig):
    """The architecture of `model_config` built on the meta device (shapes, no weights), or
    None for one this transformers cannot build (loading the model will say why)."""
    (AutoModelForCausalLM,) = transformers_names("AutoModelForCausalLM")

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(model_config, trust_remote_code=config.model.trust_remote_code)
    except Exception:  # noqa: BLE001 — whatever the architecture's code raises, loading reports it
        return None


def parameter_counts(model, config: RunConfig) -> tuple[int, int, int | None]:
    """(all parameters, trainable ones, those in EWC's group or None without EWC) of `model`
    (a meta model: meta_model)."""
    parameters = base_parameters(model)
    trainable = lora_size(model, config) if config.method.kind == "lora" else parameters
    return parameters, trainable, ewc_group_size(model, config)


def memory_estimate(config: RunConfig, model_config, hardware: Hardware, parameters: int,
                    trainable: int, ewc_params: int | None = None) -> MemoryEstimate:
    """cpt_studio.core.estimate.estimate_memory for this run's shapes and `hardware`."""
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return estimate_memory(
        parameters=parameters, trainable=trainable, hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers, vocab_size=text.vocab_size,
        intermediate_size=getattr(text, "intermediate_size", 4 * text.hidden_size),
        num_heads=text.num_attention_heads, micro_batch=config.batch.micro_batch,
        seq_len=config.batch.seq_len, precision=hardware.precision, method=config.method.kind,
        gradient_checkpointing=hardware.gradient_checkpointing, device=hardware.device,
        eager_attention=hardware.attention == "eager", ewc=config.ewc.enabled, ewc_params=ewc_params)


ADAPTER_MARKS = ("lora_", "trainable_tokens")
"""What peft's names of the weights it adds hold: LoRA's A and B, and the new token rows'
trainable_token_indices deltas (apply_method)."""


def base_parameters(model) -> int:
    """The parameters of `model` itself, as the plan counts them on its meta model: a LoRA
    run's adapters (ADAPTER_MARKS) not counted, tied weights once (named_parameters dedups)."""
    return sum(p.numel() for name, p in model.named_parameters() if not any(m in name for m in ADAPTER_MARKS))


def flops_per_token(model, config: RunConfig) -> float:
    """Training FLOPs per token of `model` (whole, before any sharding; the same for its meta
    model and for the loaded one with LoRA's adapters: base_parameters) trained by the config's
    method at its sequence length (estimate.training_flops_per_token: PaLM's model FLOPs)."""
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return training_flops_per_token(parameters=base_parameters(model),
                                    method=config.method.kind, num_layers=text.num_hidden_layers,
                                    hidden_size=text.hidden_size, seq_len=config.batch.seq_len)


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
    fixed = steps_from_settings(config)
    if fixed is not None:
        return fixed
    per_step = sequences_per_step(config)
    domain_per_step = per_step * (1 - config.corpus.replay_ratio if has_general else 1)
    return max(1, math.ceil(config.schedule.epochs * domain_rows / domain_per_step))


def steps_from_settings(config: RunConfig) -> int | None:
    """The optimizer steps the settings alone decide: max_steps, else the token budget over
    the tokens of one step (sequences_per_step x batch.seq_len); None when epochs decide (the
    count then needs the data's rows: optimizer_steps)."""
    if config.schedule.max_steps:
        return config.schedule.max_steps
    if config.schedule.token_budget:
        tokens_per_step = sequences_per_step(config) * config.batch.seq_len
        return max(1, math.ceil(config.schedule.token_budget / tokens_per_step))
    return None


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
    LoraConfig, get_peft_model = (imported_name("peft", n) for n in ("LoraConfig", "get_peft_model"))  # noqa: N806

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
NEW_TOKEN_GROUP = "new_tokens"
"""The name of the optimizer group of a LoRA run's new token rows (peft's trainable tokens)."""
NEW_TOKEN_RATIO = "new_token_lr_ratio"
"""Full fine-tuning: the key, in the optimizer group holding the embedding matrices, of the
new token rows' rate over that group's rate (scale_new_token_updates)."""


def embedding_parameters(model) -> list[torch.nn.Parameter]:
    """The trainable weights of the input embeddings and the output layer (a tied matrix
    once; with LoRA, an extended tokenizer's trainable new rows, which peft keeps in them)."""
    found = {}
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            found.update({id(p): p for p in module.parameters() if p.requires_grad})
    return list(found.values())


def lora_new_token_parameters(model) -> list[torch.nn.Parameter]:
    """A LoRA run's trainable new token rows: peft's trainable-token deltas (n_new x hidden
    each), parameters of their own apart from the frozen matrices."""
    return [p for name, p in model.named_parameters() if "trainable_tokens" in name and p.requires_grad]


def _split_group(optimizer, params: list[torch.nn.Parameter], lr: float, name: str) -> None:
    """Move `params` out of the optimizer's groups into groups named `name` (one per weight
    decay they had) at `lr`."""
    moved = {id(p) for p in params}
    for group in list(optimizer.param_groups):
        inside = [p for p in group["params"] if id(p) in moved]
        if inside and group.get("name") != name:
            group["params"] = [p for p in group["params"] if id(p) not in moved]
            optimizer.add_param_group({"params": inside, "lr": lr,
                                       "weight_decay": group["weight_decay"], "name": name})
            if not group["params"]:  # all moved (LoRA's new rows: from the embeddings' group)
                optimizer.param_groups.remove(group)


def split_embedding_group(optimizer, model, peak_lr: float, scale: float) -> None:
    """Move the embedding weights (embedding_parameters) out of the optimizer's groups into
    groups of their own named EMBEDDING_GROUP, with lr = peak_lr x scale and the weight decay
    of the group they came from. Call it on a new optimizer, before its first step (it holds
    no state yet) and before the scheduler is made: the schedule then scales each group from
    its own rate, and the peak-rate groups stay first. Nothing changes when scale is 1."""
    if scale == 1:
        return
    _split_group(optimizer, embedding_parameters(model), peak_lr * scale, EMBEDDING_GROUP)


def split_new_token_rows(optimizer, model, peak_lr: float, scale: float | None,
                         new_token_ids: list[int]) -> None:
    """Give an extended tokenizer's new rows the rate peak_lr x `scale` (None: they follow
    the embeddings' rate). Call it after split_embedding_group, with the same conditions.

    With LoRA the rows are parameters of their own (lora_new_token_parameters): they go into
    a group named NEW_TOKEN_GROUP. With full fine-tuning they are rows of the embedding and
    output matrices, which cannot be split into two optimizer groups; their update is scaled
    instead, after each step (scale_new_token_updates), by NEW_TOKEN_RATIO, kept in the
    group that holds the matrices so that the schedule, a resume and the logged rates all see
    one number. ValueError when the matrices are not in the optimizer as whole tensors (a
    sharded FSDP or DeepSpeed optimizer): the scaling would silently do nothing there."""
    if scale is None or not new_token_ids:
        return
    lora_rows = lora_new_token_parameters(model)
    if lora_rows:
        _split_group(optimizer, lora_rows, peak_lr * scale, NEW_TOKEN_GROUP)
        return
    matrices = {id(p) for p in embedding_parameters(model)}
    groups = [g for g in optimizer.param_groups if any(id(p) in matrices for p in g["params"])]
    if sum(id(p) in matrices for g in groups for p in g["params"]) != len(matrices):
        raise ValueError("schedule: the new-token LR multiple scales rows of the embedding matrices, "
                         "which this optimizer holds sharded (FSDP or DeepSpeed); unset it, or "
                         "train on one device or with DDP")
    for group in groups:
        group[NEW_TOKEN_RATIO] = peak_lr * scale / group["lr"]
    scale_new_token_updates(optimizer, model, new_token_ids)


def scale_new_token_updates(optimizer, model, new_token_ids: list[int]) -> None:
    """After each optimizer step, scale the step's change of the new token rows of the
    embedding matrices by their group's NEW_TOKEN_RATIO: rows = before + ratio x (after -
    before). AdamW's step is linear in its learning rate, decoupled weight decay included
    (θ - lr·wd·θ - lr·m/(√v + ε)), and its moments do not depend on it, so this is exactly
    the step those rows would take at lr x ratio. (Scaling their gradients would not do it:
    Adam divides each gradient by its own running scale.) Costs a copy of the new rows."""
    matrices = {id(p): p for p in embedding_parameters(model)}
    before: dict[int, torch.Tensor] = {}

    def keep(opt, *_):
        rows = torch.as_tensor(new_token_ids)
        for group in opt.param_groups:
            if group.get(NEW_TOKEN_RATIO, 1) != 1:
                for p in group["params"]:
                    if id(p) in matrices:
                        before[id(p)] = p.detach()[rows.to(p.device)].clone()

    @torch.no_grad()
    def scale(opt, *_):
        rows = torch.as_tensor(new_token_ids)
        for group in opt.param_groups:
            for p in group["params"]:
                old = before.pop(id(p), None)
                if old is not None:
                    index = rows.to(p.device)
                    p[index] = old + group[NEW_TOKEN_RATIO] * (p[index] - old)

    optimizer.register_step_pre_hook(keep)
    optimizer.register_step_post_hook(scale)


def group_rates(optimizer) -> dict[str, float]:
    """The learning rates the optimizer uses now, as step events log them: `embedding_lr`
    (EMBEDDING_GROUP's) and `new_token_lr` (NEW_TOKEN_GROUP's, or the rate the embedding
    matrices' group gives the new rows with NEW_TOKEN_RATIO), each only when it has its own."""
    rates = {}
    for group in getattr(optimizer, "param_groups", ()):
        if group.get("name") == EMBEDDING_GROUP:
            rates["embedding_lr"] = group["lr"]
        if group.get("name") == NEW_TOKEN_GROUP:
            rates["new_token_lr"] = group["lr"]
        elif group.get(NEW_TOKEN_RATIO) is not None:
            rates["new_token_lr"] = group["lr"] * group[NEW_TOKEN_RATIO]
    return rates


def learning_rates_text(config: RunConfig) -> str:
    """The peak rate of each group in words ('' when every weight has the peak rate)."""
    schedule = config.schedule
    new_rows = schedule.new_token_lr_scale if config.tokenizer.extend else None
    parts = []
    if schedule.embedding_lr_scale != 1:
        parts.append(f"embeddings and output layer x{schedule.embedding_lr_scale:g} "
                     f"({schedule.peak_lr * schedule.embedding_lr_scale:g})")
    if new_rows is not None:
        parts.append(f"new token rows x{new_rows:g} ({schedule.peak_lr * new_rows:g})")
    if not parts:
        return ""
    return f"peak {schedule.peak_lr:g}; {'; '.join(parts)}, scheduled alike"


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
