"""Elastic weight consolidation (EWC): a penalty that holds the weights general text relies on.

    state = prepare_ewc(model, data.general.train, config.ewc, ...)  # Fisher: cached or computed
    ewc = EwcPenalty(model, state, strength=config.ewc.strength)
    ewc.add_gradient()   # after backward, before clipping: grad += lambda F (theta - theta*)

The penalty is lambda/2 * sum_i F_i (theta_i - theta*_i)^2 over one parameter group, where
theta* are the weights at the start of the run and F the diagonal empirical Fisher on general
text. Its gradient, lambda F (theta - theta*), is added to the gradients once per optimizer
step, after the data loss's backward (and, with DDP, after the gradients were averaged: the
penalty is the same on every process). That is the gradient of "loss + penalty" without a
second backward pass; the logged `loss` stays the data loss and `ewc_penalty` is logged
beside it. DeepSpeed and FSDP keep gradients elsewhere and are not supported.

**Fisher.** F_i = 1/N sum_n (d l_n / d theta_i)^2, where l_n is the mean next-token negative
log-likelihood of general sequence n (the loss the Trainer minimises, so raw F is in the
same units as the training loss), one sequence per backward pass: the true diagonal of the
empirical Fisher, not the square of a batch gradient. The N sequences are a seeded sample of
the general corpus's training rows (never the held-out ones that measure forgetting). It is
computed once on the run's starting model and cached as safetensors in
data_dir()/fisher/<key>.safetensors; the key hashes the model's weights (every tensor's
name, shape and a strided sample of its values, so a different base, an extended vocabulary
or another LoRA initialisation gives another key), the general token store, the rows chosen,
N, the sequence length, the group and the precision.

**Normalisation.** Raw Fisher values scale with the model, the vocabulary and the sequence
length over orders of magnitude, so a lambda tuned on one model means nothing on another.
'mean' divides F by its mean over the group: a weight of average importance then feels a pull
of lambda x (theta - theta*), the important ones more, the irrelevant ones almost none.

**Default lambda = 0.003** (EwcConfig.strength), from a measurement on the demo model
(SmolLM2-135M, demo corpus, bench/forgetting.py): after 20 steps of 4 x 256 tokens at the
default LR 2e-5 with 5% replay and no EWC, the data gradient's norm was 3.3 (median of the
last 5 steps) and ||F (theta - theta*)|| with the mean-1 Fisher (32 sequences) was 1,196, so
lambda = 3.3 / 1,196 = 0.0027 is the strength at which the penalty's pull equals the data's
push by the end of such a run; rounded to 0.003. That mean-1 Fisher is very uneven: the
median weight has 0.06, the top 0.1% more than 57, and the RMSNorm weights (0.03% of the
weights) hold a quarter of the total; so at this strength EWC holds the most important
weights and leaves the median one almost free. The pull grows with the distance travelled,
so a longer run is held harder. The same measurement on the tiny test model gives 0.011
(1,400 times fewer weights, the same order: the mean-1 scaling does its job). Where
forgetting is real (bench/ewc_strength.py: tiny model, domain and general text with no word
in common, LR 5e-3, no replay, 20 steps), 0.003 turned +31% forgetting into -20% at the
same domain gain (97%); 0.03-0.3 held general text harder still (-53%, -59%) for 0.3-2
points of gain; from 3 up the domain gain fell (88% at 3, 64% at 30). On the demo model
over 20 steps at 2e-5 with replay there is no forgetting to prevent (general perplexity
falls 17%), and 0.003 leaves both numbers unchanged. Raise it (x10) to hold general text
harder.

**LoRA.** With the 'lora' group (or any group under LoRA, where only adapters train) theta*
is the adapters' initial value: B = 0, so theta* is an adapter that changes nothing. At B = 0
the gradient of every lora_A is exactly zero (the update B A does not depend on A when B is
zero), so F_A = 0 and A is free; the penalty holds each B towards zero, weighted by how much
general text depends on it in the direction its A picks. In words: the adapter's output is
kept small where general text would notice, and free elsewhere. The frozen base is never
copied, so theta* costs the adapters' size, not the model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import EwcConfig
from .events import ProgressCallback
from .paths import data_dir

FISHER_FORMAT = 1
ATTENTION_PARTS = frozenset({"self_attn", "attn", "attention", "self_attention", "q_proj",
                             "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "query_key_value"})
MLP_PARTS = frozenset({"mlp", "feed_forward", "ffn", "gate_proj", "up_proj", "down_proj",
                       "gate_up_proj", "c_fc", "fc1", "fc2"})
SAMPLE_VALUES = 256
"""Values per tensor hashed into the Fisher's cache key (a strided sample)."""


# -- which parameters ----------------------------------------------------------------------

def in_group(name: str, group: str, embedding_names: frozenset[str] = frozenset()) -> bool:
    """Whether the parameter called `name` belongs to an EWC group (before the "trainable"
    filter, which the caller applies). `embedding_names` are the input and output
    embeddings' parameter names, found by identity (cpt_studio.core.ewc.embedding_names)."""
    parts = set(name.split("."))
    if group == "trainable":
        return True
    if group == "lora":
        return "lora_" in name
    if group == "embeddings":
        return name in embedding_names
    if group == "attention":
        return bool(parts & ATTENTION_PARTS)
    if group == "mlp":
        return bool(parts & MLP_PARTS)
    raise ValueError(f"unknown EWC group {group!r}")


def embedding_names(model) -> frozenset[str]:
    """The names of the input and output embedding weights (one name when they are tied)."""
    wanted = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None and getattr(module, "weight", None) is not None:
            wanted.add(id(module.weight))
    return frozenset(name for name, p in model.named_parameters() if id(p) in wanted)


def group_parameters(model, group: str) -> dict[str, torch.nn.Parameter]:
    """The trainable parameters of `group`, by name; refuses an empty group with its fix."""
    embeddings = embedding_names(model) if group == "embeddings" else frozenset()
    params = {name: p for name, p in model.named_parameters()
              if p.requires_grad and in_group(name, group, embeddings)}
    if not params:
        raise ValueError(f"ewc: the group {group!r} holds no trainable weight of this model; "
                         "choose 'trainable' or another group")
    return params


# -- the Fisher ----------------------------------------------------------------------------

def fisher_rows(n_rows: int, wanted: int, seed: int) -> np.ndarray:
    """Which training rows the Fisher is computed on: a seeded sample, sorted, at most all."""
    rng = np.random.default_rng([seed, n_rows, 7])
    return np.sort(rng.permutation(n_rows)[:min(wanted, n_rows)])


def compute_fisher(model, rows, params: dict[str, torch.nn.Parameter], *,
                   autocast_dtype: torch.dtype | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher of `params`: the mean over `rows` (a sequence of packed
    rows, dicts of input_ids, labels, position_ids) of the squared gradient of each row's own
    mean next-token loss, one row per backward pass. fp32, on the parameters' device."""
    device = next(iter(params.values())).device
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training = model.training
    frozen = {p: p.requires_grad for p in model.parameters()}
    wanted = {id(p) for p in params.values()}
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext())
    model.eval()  # no dropout: the Fisher of the model as it is
    try:
        for p in model.parameters():  # backward computes only the group's gradients
            p.requires_grad_(id(p) in wanted)
        for i in range(len(rows)):
            row = rows[i]
            model.zero_grad(set_to_none=True)
            with torch.enable_grad(), autocast:
                loss = model(input_ids=row["input_ids"][None].to(device),
                             position_ids=row["position_ids"][None].to(device),
                             labels=row["labels"][None].to(device), use_cache=False).loss
            loss.float().backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name].add_(p.grad.detach().float().square())
            if progress:
                progress(i + 1, len(rows))
    finally:
        model.zero_grad(set_to_none=True)
        for p, requires_grad in frozen.items():
            p.requires_grad_(requires_grad)
        model.train(was_training)
    for value in fisher.values():
        value.div_(max(len(rows), 1))
    return fisher


def normalise(fisher: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    """'raw' as is; 'mean' divided by its mean over every element of the group (mean 1 after)."""
    if how == "raw":
        return fisher
    if how != "mean":
        raise ValueError(f"unknown Fisher normalisation {how!r}; use 'mean' or 'raw'")
    total = sum(float(f.double().sum()) for f in fisher.values())
    count = sum(f.numel() for f in fisher.values())
    mean = total / max(count, 1)
    if mean <= 0:  # every gradient was zero: nothing to weigh, so no penalty
        return {name: torch.zeros_like(f) for name, f in fisher.items()}
    return {name: f / mean for name, f in fisher.items()}


def weights_fingerprint(model) -> str:
    """A hash of every parameter's name, shape, dtype and a strided sample of its values."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // SAMPLE_VALUES)][:SAMPLE_VALUES]
        digest.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def fisher_key(model, *, general_key: str, row_ids: np.ndarray, seq_len: int, group: str,
               precision: str) -> str:
    settings = {"format": FISHER_FORMAT, "weights": weights_fingerprint(model),
                "general": general_key, "rows": hashlib.sha256(row_ids.tobytes()).hexdigest(),
                "sequences": len(row_ids), "seq_len": seq_len, "group": group,
                "precision": precision}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def fisher_cache_dir() -> Path:
    path = data_dir() / "fisher"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_or_compute_fisher(model, rows, params: dict[str, torch.nn.Parameter], key: str, *,
                           autocast_dtype: torch.dtype | None = None,
                           progress: ProgressCallback | None = None,
                           cache_dir: Path | None = None) -> tuple[dict[str, torch.Tensor], bool]:
    """(raw Fisher, whether it came from the cache). The cache file is written to a temporary
    name and renamed into place, so a file that exists is complete."""
    path = Path(cache_dir or fisher_cache_dir()) / f"{key}.safetensors"
    device = next(iter(params.values())).device
    if path.exists():
        cached = load_file(path, device=str(device))
        if set(cached) == set(params):
            return cached, True
    report = _reporter(progress, len(rows))
    fisher = compute_fisher(model, rows, params, autocast_dtype=autocast_dtype, progress=report)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.safetensors")
    save_file({name: f.contiguous().cpu() for name, f in fisher.items()}, str(tmp),
              metadata={"sequences": str(len(rows)), "format": str(FISHER_FORMAT)})
    os.replace(tmp, path)
    return fisher, False


def _reporter(progress: ProgressCallback | None, total: int) -> Callable[[int, int], None] | None:
    """Status events for the Fisher's progress: about every 5%, and at most one a second."""
    if progress is None:
        return None
    last = [0.0]

    def report(done: int, total: int) -> None:
        if done == total or (time.monotonic() - last[0] > 1 and done % max(1, total // 20) == 0):
            last[0] = time.monotonic()
            progress({"type": "status", "state": "running", "phase": "fisher", "done": done,
                      "total": total, "message": f"EWC: Fisher on general text, {done:,}/{total:,} sequences"})
    return report


# -- the penalty ---------------------------------------------------------------------------

@dataclass
class EwcState:
    """What the penalty needs, computed once per run: the (normalised) Fisher and theta*."""

    fisher: dict[str, torch.Tensor]
    reference: dict[str, torch.Tensor]
    sequences: int
    cached: bool

    @property
    def parameters(self) -> int:
        return sum(f.numel() for f in self.fisher.values())


def prepare_ewc(model, rows, settings: EwcConfig, *, general_key: str, seq_len: int, seed: int,
                precision: str, autocast_dtype: torch.dtype | None = None,
                device: torch.device | str | None = None,
                progress: ProgressCallback | None = None) -> EwcState:
    """The Fisher (cached or computed) and the reference weights theta*, on `device`, for the
    model as it is now: call it on the run's starting model, before training."""
    if device is not None:
        model.to(device)
    params = group_parameters(model, settings.group)
    row_ids = fisher_rows(len(rows), settings.sequences, seed)
    if progress and len(row_ids) < settings.sequences:
        progress({"type": "log", "level": "warning",
                  "message": f"EWC: the general corpus has {len(row_ids):,} training sequences of "
                             f"{seq_len} tokens, fewer than the {settings.sequences:,} asked for; "
                             "the Fisher uses all of them"})
    key = fisher_key(model, general_key=general_key, row_ids=row_ids, seq_len=seq_len,
                     group=settings.group, precision=precision)
    fisher, cached = load_or_compute_fisher(model, _Subset(rows, row_ids), params, key,
                                            autocast_dtype=autocast_dtype, progress=progress)
    return EwcState(normalise(fisher, settings.normalisation), reference_weights(params), len(row_ids), cached)


def reference_weights(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """theta*: an fp32 copy of the weights the penalty pulls back to."""
    return {name: p.detach().float().clone() for name, p in params.items()}


class _Subset:
    def __init__(self, rows, ids: np.ndarray):
        self.rows, self.ids = rows, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.rows[int(self.ids[i])]


class EwcPenalty:
    """The penalty bound to a model's live parameters (looked up by name, so it follows a
    model whose weights were reloaded from a checkpoint)."""

    def __init__(self, model, state: EwcState, strength: float):
        live = dict(model.named_parameters())
        missing = sorted(set(state.fisher) - set(live))
        if missing:
            raise ValueError(f"ewc: the model has no parameter {missing[0]} (and {len(missing) - 1} "
                             "more) that the Fisher was computed for")
        self.params = {name: live[name] for name in state.fisher}
        self.state, self.strength = state, strength
        self.last_penalty = torch.zeros(())

    @torch.no_grad()
    def penalty(self) -> torch.Tensor:
        """lambda/2 * sum F (theta - theta*)^2, a 0-d fp32 tensor."""
        total = torch.zeros((), device=next(iter(self.params.values())).device)
        for name, p in self.params.items():
            distance = p.float() - self.state.reference[name]
            total += torch.dot(distance.mul(self.state.fisher[name]).reshape(-1), distance.reshape(-1))
        return 0.5 * self.strength * total

    @torch.no_grad()
    def add_gradient(self, scale: float = 1.0) -> torch.Tensor:
        """Add lambda F (theta - theta*) (times `scale`, the fp16 loss scale) to every
        parameter's gradient; return the penalty at the current weights."""
        total = torch.zeros((), device=next(iter(self.params.values())).device)
        for name, p in self.params.items():
            distance = p.float() - self.state.reference[name]
            pull = distance.mul(self.state.fisher[name])
            total += torch.dot(pull.reshape(-1), distance.reshape(-1))
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(pull.to(p.grad.dtype), alpha=self.strength * scale)
        self.last_penalty = 0.5 * self.strength * total
        return self.last_penalty
