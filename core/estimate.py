"""Memory and time estimates before a run: pure arithmetic, no weights loaded.

The memory model follows what the worker actually does (cpt_studio.core.recipe, training):

* Full-parameter training keeps the weights in fp32 and runs the forward under autocast
  (HF Trainer with ``bf16=True``/``fp16=True`` is mixed precision, not pure 16-bit).
  Per trainable parameter: fp32 weight (4 B) + the 16-bit copy autocast makes of it and
  the matmuls keep for backward (2 B) + fp32 gradient (4 B) + AdamW's two fp32 moments
  (8 B) = 18 B. This is the "6 bytes per parameter for mixed precision weights" of the
  Hugging Face "model training anatomy" guide, plus its 4 B gradient and 8 B AdamW.
* LoRA keeps the frozen base in the run's precision (2 B, or 4 B in fp32) and trains fp32
  adapters (PEFT casts adapters to fp32 by default): 4 + 4 + 8 = 16 B per adapter
  parameter, nothing for the frozen ones beyond their weights.
* Activations are counted per decoder layer and per token for a Llama-style block
  (RMSNorm, attention through SDPA/flash kernels that store no s x s matrix, SwiGLU MLP).
  It is the Korthikanti et al. (2022) bookkeeping, "Reducing Activation Recomputation in
  Large Transformer Models", s.b.h.(34 + 5.a.s/h) bytes per layer for GPT at 16 bits,
  redone for this block without dropout; see ``_layer_bytes_per_token``. With gradient
  checkpointing only each layer's input is kept (Korthikanti's 2.s.b.h per layer at 16
  bits; 4 bytes here when the residual stream is fp32), plus one layer recomputed during
  backward.
* The logits and the loss are counted apart because they are often the largest term for a
  small model with a large vocabulary: transformers upcasts the logits to fp32 for the
  loss, cross-entropy keeps its fp32 log-softmax for backward, and backward starts with
  two more fp32 tensors of that size (see ``LOSS_BYTES_PER_LOGIT``).

The terms are summed although they do not all peak at the same instant (gradients grow as
activations are freed during backward), so the tensor total leans high; that is the safe
side for a "will it fit" check. On CUDA the overhead adds the context and the caching
allocator's slack, so the total compares with what nvidia-smi shows.

Checked on an H100 (torch 2.11, transformers 5.17, SDPA, AdamW fused) with SmolLM2-135M's
shape at micro-batch 4 x 2048, bf16 autocast; context + peak reserved memory measured vs
this estimate: full 15.4 vs 15.7 GiB, full + checkpointing 9.1 vs 9.1, LoRA r=16 on all
linears 12.9 vs 13.0, LoRA + checkpointing 6.9 vs 6.6.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

GiB = 1024**3

PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
"""Bytes of one value in each training precision."""

METHODS = ("full", "lora")
DEVICES = ("cuda", "cpu")

ADAMW_BYTES = 8
"""AdamW keeps two fp32 moments (exp_avg, exp_avg_sq) per trainable parameter."""

GRADIENT_BYTES = 4
"""Gradients are fp32: the master weights (full) and the adapters (LoRA) are fp32."""

EWC_BYTES = 8
"""EWC keeps a fp32 diagonal Fisher (4 B) and a fp32 reference copy theta* (4 B)."""

LOSS_BYTES_PER_LOGIT = 12
"""At the start of backward three fp32 tensors of batch x seq x vocab are alive: the
log-softmax cross-entropy saved, the gradient arriving from the loss and the gradient it
produces (the 16-bit logits and the fp32 upcast are no longer referenced by then; in the
forward they make 2 + 4 + 4 = 10 bytes, which is less)."""

CUDA_CONTEXT_BYTES = 3 * GiB // 4
"""The CUDA context with cuBLAS workspaces: 0.70 GiB measured on an H100 (torch 2.11)
after the first bf16 matmul, rounded up to 0.75 GiB."""

CUDA_ALLOCATOR_SLACK = 0.10
"""PyTorch's caching allocator reserves more than it hands out: 10-27% more than the peak
of allocated memory was measured for SmolLM2-135M at 4 x 2048 tokens. Counted as 10% of
the tensors' total because the other terms already lean high (gradients are summed with
activations they only partly coexist with)."""

CPU_OVERHEAD_BYTES = GiB // 2
"""On CPU the interpreter with torch and transformers imported: 0.38 GiB measured on the
2-core dev machine, taken as 0.5 GiB. Large CPU tensors are mapped and unmapped directly,
so no allocator slack is added."""

TIGHT_FRACTION = 0.75
"""Above this share of the device's memory an estimate is rated "tight"."""


@dataclass
class MemoryEstimate:
    """Peak training memory in bytes, by what holds it. ``logits`` is the part of
    ``activations`` taken by the logits and the loss (shown on its own line); ``device``
    names what ``overhead`` covers."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    ewc: int
    overhead: int
    total: int
    logits: int = 0
    device: str = "cuda"

    def rating(self, device_bytes: int) -> str:
        """"fits", "tight" (more than 75% of the device) or "exceeds" (more than all of it)."""
        if device_bytes <= 0:
            raise ValueError("device memory must be a positive number of bytes")
        if self.total > device_bytes:
            return "exceeds"
        if self.total > TIGHT_FRACTION * device_bytes:
            return "tight"
        return "fits"

    def breakdown(self) -> list[tuple[str, int]]:
        """(label, bytes) rows for display; the rows sum to ``total``. Zero rows are kept
        so the table keeps its shape as settings change."""
        return [
            ("Weights", self.weights),
            ("Gradients", self.gradients),
            ("Optimizer states (AdamW)", self.optimizer),
            ("Activations (layers)", self.activations - self.logits),
            ("Logits and loss", self.logits),
            ("EWC (Fisher + reference copy)", self.ewc),
            ("CUDA context and allocator" if self.device == "cuda"
             else "Python and libraries", self.overhead),
        ]


def _layer_bytes_per_token(hidden: int, intermediate: int, act: int, residual: int) -> int:
    """Bytes one decoder layer keeps for backward, per token, without recomputation.

    ``act`` is the byte size of the matmul inputs/outputs (2 under autocast, 4 in fp32);
    ``residual`` that of the residual stream (the weights' dtype: 4 for full training,
    the precision's for a LoRA base). Counted tensors, in elements per token:
    attention: the normed input to q/k/v (h), q, k, v after RoPE kept by SDPA (3h, an
    upper bound under grouped-query attention), SDPA's output (h) and the o_proj input
    (its contiguous copy, h); MLP: the normed input to gate/up (h), gate, up, SiLU(gate)
    and their product fed to down_proj (4i). So act x (7h + 4i). Each of the two RMSNorms
    computes in fp32 and keeps its fp32 input (4h bytes) and its normalised value in the
    residual dtype (residual x h bytes).
    """
    return act * (7 * hidden + 4 * intermediate) + 2 * (4 + residual) * hidden


def estimate_memory(
    *,
    parameters: int,
    trainable: int,
    hidden_size: int,
    num_layers: int,
    vocab_size: int,
    intermediate_size: int,
    num_heads: int,
    micro_batch: int,
    seq_len: int,
    precision: str,
    method: str,
    gradient_checkpointing: bool,
    ewc: bool = False,
    ewc_params: int | None = None,
    device: str = "cuda",
    eager_attention: bool = False,
) -> MemoryEstimate:
    """Estimate the peak memory of one training step.

    ``parameters`` counts the model's weights (the base model for LoRA); ``trainable``
    counts what the optimizer updates (all of them for full training, the adapter
    parameters for LoRA). ``ewc_params`` is the size of EWC's parameter group (default:
    the trainable parameters). ``eager_attention`` adds the a x s x s softmax that eager
    attention keeps per layer (Korthikanti's 5.a.s/h term without dropout); SDPA and
    flash attention do not keep it.
    """
    _check(precision in PRECISION_BYTES, f"precision must be one of {', '.join(PRECISION_BYTES)}")
    _check(method in METHODS, f"method must be one of {', '.join(METHODS)}")
    _check(device in DEVICES, f"device must be one of {', '.join(DEVICES)}")
    for name, value in (
        ("parameters", parameters), ("hidden_size", hidden_size), ("num_layers", num_layers),
        ("vocab_size", vocab_size), ("intermediate_size", intermediate_size),
        ("num_heads", num_heads), ("micro_batch", micro_batch), ("seq_len", seq_len),
    ):
        _check(value > 0, f"{name} must be positive (got {value})")
    _check(0 <= trainable, f"trainable must not be negative (got {trainable})")
    _check(method == "lora" or trainable <= parameters,
           "trainable cannot exceed parameters for full training")

    act = PRECISION_BYTES[precision]
    mixed = precision != "fp32"
    if method == "full":
        # fp32 master weights, plus the 16-bit copy autocast caches of every trainable
        # weight and the matmuls keep for backward.
        weights = 4 * parameters + (act * trainable if mixed else 0)
        residual = 4
    else:
        # Frozen base in the precision; fp32 adapters on top.
        weights = act * parameters + 4 * trainable
        residual = act
    gradients = GRADIENT_BYTES * trainable
    optimizer = ADAMW_BYTES * trainable

    tokens = micro_batch * seq_len
    layer = _layer_bytes_per_token(hidden_size, intermediate_size, act, residual) * tokens
    if eager_attention:
        layer += act * micro_batch * num_heads * seq_len * seq_len
    if gradient_checkpointing:
        # Each layer's input is kept; backward recomputes one layer at a time.
        layers = num_layers * residual * hidden_size * tokens + layer
    else:
        layers = num_layers * layer
    # Final RMSNorm (fp32 input + normalised value) and the lm_head's 16-bit input.
    head = tokens * hidden_size * ((4 + residual) + act)
    logits = tokens * vocab_size * LOSS_BYTES_PER_LOGIT
    activations = layers + head + logits

    ewc_bytes = 0
    if ewc:
        group = trainable if ewc_params is None else ewc_params
        _check(group >= 0, f"ewc_params must not be negative (got {group})")
        ewc_bytes = EWC_BYTES * group

    tensors = weights + gradients + optimizer + activations + ewc_bytes
    if device == "cuda":
        overhead = CUDA_CONTEXT_BYTES + int(CUDA_ALLOCATOR_SLACK * tensors)
    else:
        overhead = CPU_OVERHEAD_BYTES
    total = tensors + overhead
    return MemoryEstimate(
        weights=weights, gradients=gradients, optimizer=optimizer, activations=activations,
        ewc=ewc_bytes, overhead=overhead, total=total, logits=logits, device=device,
    )


# --- time --------------------------------------------------------------------------------

FLOPS_PER_TOKEN_PER_PARAM = 6
"""Full-parameter training costs about 6 FLOPs per parameter per token (2 forward, 4
backward: the gradients of the activations and of the weights)."""

LORA_FLOPS_PER_TOKEN_PER_PARAM = 4
"""LoRA on a frozen base costs about 4: the forward (2) and the activations' gradients (2);
the frozen weights get no gradient (the adapters' own FLOPs are negligible)."""

FORWARD_FLOPS_PER_TOKEN_PER_PARAM = 2
"""Evaluation is a forward pass: about 2 FLOPs per parameter per token."""

TRAINING_FLOPS = {"full": FLOPS_PER_TOKEN_PER_PARAM, "lora": LORA_FLOPS_PER_TOKEN_PER_PARAM}

CPU_FLOPS = 8.0e10
"""Effective FLOP/s of full-parameter training on 2 CPU cores, calibrated on the measured
~100 tokens/s of the 135M SmolLM2 measured on a 2-core machine: 6 x 134.5e6 x 100 = 8.1e10."""

CUDA_PEAK_FLOPS = 300e12
CUDA_MFU = 0.40
"""A CUDA card is assumed at 40% model-FLOPs utilisation of its dense bf16 peak
(GPU_PEAK_TFLOPS), or of 300 TFLOP/s for a card not in that table (between an A100's 312
and an H100 PCIe's 756; 4090 class 165)."""

GPU_PEAK_TFLOPS = {
    "b200": 2250.0, "h200 nvl": 835.5, "h200": 989.4, "h100 pcie": 756.0, "h100 nvl": 835.0, "h100": 989.4,
    "gh200": 989.4, "a100": 312.0, "l40s": 362.1, "l40": 181.0, "l4": 121.0, "a10g": 70.0,
    "a10": 125.0, "rtx 6000 ada": 364.2, "rtx a6000": 154.8, "a40": 149.7, "rtx 5090": 209.5,
    "rtx 4090": 165.2, "rtx 4080": 97.5, "rtx 3090": 71.0, "v100": 125.0, "t4": 65.0,
}
"""Dense (no sparsity) 16-bit tensor-core peaks in TFLOP/s, bf16 with fp32 accumulation
(fp16 for V100 and T4, which have no bf16), from NVIDIA's datasheets and architecture
whitepapers (GeForce cards accumulate in fp32 at half their fp16-accumulate rate). The key is
matched as a word sequence in torch.cuda.get_device_name(), the longest key first ("h100
pcie" before "h100")."""


def gpu_peak_flops(device_name: str) -> float | None:
    """The dense 16-bit peak in FLOP/s of the GPU named `device_name` (as
    torch.cuda.get_device_name() writes it: "NVIDIA H100 80GB HBM3"), or None for a card
    not in GPU_PEAK_TFLOPS (system.peak_tflops then says it)."""
    words = " " + re.sub(r"[^a-z0-9]+", " ", device_name.lower()) + " "
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):
        if f" {key} " in words:
            return GPU_PEAK_TFLOPS[key] * 1e12
    return None


def training_flops_per_token(*, parameters: int, method: str, num_layers: int, hidden_size: int,
                             seq_len: int) -> float:
    """Model FLOPs of training on one token: TRAINING_FLOPS[method] per parameter, plus the
    attention scores and their weighted sum, 12 x layers x hidden x seq_len (6 forward and
    backward x the two s x s matmuls), which carry no parameters. The formula of PaLM's model
    FLOPs utilisation (Chowdhery et al. 2022, appendix B); recomputation under gradient
    checkpointing is not counted (MFU, not hardware FLOPs utilisation)."""
    _check(method in METHODS, f"method must be one of {', '.join(METHODS)}")
    return TRAINING_FLOPS[method] * parameters + 12 * num_layers * hidden_size * seq_len


def model_flops_utilisation(tokens_per_second: float, flops_per_token: float,
                            peak_flops: float | None) -> float | None:
    """MFU, 0-1: tokens/s x FLOPs per token / the device's peak FLOP/s (None when the peak is
    unknown: a CPU, or a GPU not in GPU_PEAK_TFLOPS without system.peak_tflops)."""
    if not peak_flops or tokens_per_second is None:
        return None
    return tokens_per_second * flops_per_token / peak_flops


@dataclass
class TimeEstimate:
    """How long ``tokens`` take; ``assumed`` is True when the speed is a rule of thumb, and
    ``basis`` says in one sentence where the speed came from."""

    seconds: float
    tokens_per_second: float
    assumed: bool
    basis: str


def estimate_time(
    *, tokens: int, tokens_per_second: float | None, device: str, parameters: int,
    method: str = "full", peak_flops: float | None = None, gpu: str = "", basis: str = "measured by a probe",
) -> TimeEstimate:
    """Time to train ``tokens`` tokens: at the measured speed when given (a probe), else at
    the speed the FLOPs rule gives for ``parameters`` trained by ``method`` on ``device``
    (TRAINING_FLOPS: LoRA skips the frozen weights' gradients): `basis` says where a given speed
    came from (a probe, a measurement: cpt_studio.core.throughput). On a GPU, CUDA_MFU of
    `peak_flops` (gpu_peak_flops of the card named `gpu`), or of CUDA_PEAK_FLOPS when unknown."""
    _check(tokens >= 0, f"tokens must not be negative (got {tokens})")
    _check(parameters > 0, f"parameters must be positive (got {parameters})")
    _check(device in DEVICES, f"device must be one of {', '.join(DEVICES)}")
    _check(method in METHODS, f"method must be one of {', '.join(METHODS)}")
    if tokens_per_second is not None:
        _check(tokens_per_second > 0, f"tokens_per_second must be positive (got {tokens_per_second})")
        return TimeEstimate(tokens / tokens_per_second, float(tokens_per_second), False, basis)
    peak = peak_flops or CUDA_PEAK_FLOPS
    flops = CPU_FLOPS if device == "cpu" else peak * CUDA_MFU
    speed = flops / (TRAINING_FLOPS[method] * parameters)
    where = ("on 2 CPU cores" if device == "cpu"
             else f"on {gpu or 'a GPU'} at {CUDA_MFU:.0%} of {peak / 1e12:.0f} TFLOP/s bf16")
    how = "full-parameter" if method == "full" else "with LoRA (frozen base)"
    basis = f"assumed {_speed_words(speed)} tokens/s: a {params_words(parameters)} model {how} {where}"
    return TimeEstimate(tokens / speed, speed, True, basis)


def estimate_eval_time(*, tokens: int, training: TimeEstimate, method: str = "full") -> float:
    """Seconds to evaluate ``tokens`` held-out tokens (forward only) on the machine where
    ``training`` (with ``method``) was estimated or measured: a forward costs
    FORWARD_FLOPS_PER_TOKEN_PER_PARAM of training's TRAINING_FLOPS[method]."""
    _check(tokens >= 0, f"tokens must not be negative (got {tokens})")
    _check(method in METHODS, f"method must be one of {', '.join(METHODS)}")
    return tokens * FORWARD_FLOPS_PER_TOKEN_PER_PARAM / (TRAINING_FLOPS[method] * training.tokens_per_second)


# --- words -------------------------------------------------------------------------------

def mfu_words(mfu: float | None) -> str:
    """"   41% MFU" after a speed, or nothing where it is unknown (None, NaN)."""
    if mfu is None or not math.isfinite(mfu):
        return ""
    return f"   {mfu:.0%} MFU" + (" (over 100%: is system.peak_tflops the GPU's?)" if mfu > 1 else "")


def format_bytes(n: int | float) -> str:
    """Binary units with one decimal: 512 B, 1.5 KiB, 1.2 GiB."""
    _check(n >= 0, f"a size cannot be negative (got {n})")
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Words the GUI shows for a duration or ETA: "2 d 3 h", "11 h 2 m", "3 m 20 s", "45 s".

    Rounded to the nearest second, then shown as its two largest units; "unknown" for a
    duration that is not finite.
    """
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    _check(seconds >= 0, f"a duration cannot be negative (got {seconds})")
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m {s} s"
    return f"{s} s"


def _speed_words(speed: float) -> str:
    """Two significant figures, no scientific notation: 99 -> "99", 148700 -> "150,000"."""
    if speed >= 100:
        digits = len(str(int(speed))) - 2
        return f"{round(speed, -digits):,.0f}"
    return f"{speed:.2g}" if speed < 10 else f"{speed:.0f}"


def params_words(parameters: int) -> str:
    """134,515,008 -> "135M"; 7,241,732,096 -> "7.2B"."""
    if parameters >= 1e9:
        return f"{parameters / 1e9:.1f}B"
    if parameters >= 1e6:
        return f"{parameters / 1e6:.0f}M"
    return f"{parameters / 1e3:.0f}K"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
