"""Training speeds measured on this machine, remembered for the plan's time estimate.

A probe (`cpt-studio train CONFIG --dry-run --probe N`, or 'Measure speed' on the wizard's
summary page: plan.probe_speed) and every run that finishes record what they achieved: the
device (the GPU's name, or "cpu"; "2 x NAME" for a run of two processes), the method, the
model's size and its training FLOPs per token, tokens/s, and the FLOP/s that makes. The plan
then carries the achieved FLOP/s of the closest measurement of the same device and method
over to the model it plans (tokens/s = achieved FLOP/s / that model's FLOPs per token), which
holds while the kernels stay as efficient at that size; a measurement of a model of the same
size is the closest. Kept as JSON lines in the data folder, `throughput.jsonl`, one per
measurement, newest last (the store, a cache rebuilt from run folders, cannot hold it).

    record(Measurement(device="NVIDIA H200", method="lora", ...))
    speed, words = carried_over(gpu="NVIDIA H200", processes=1, method="lora",
                                parameters=494_000_000, flops_per_token=2.0e9)
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .estimate import params_words
from .paths import data_dir

FILE_NAME = "throughput.jsonl"
KEEP = 200
"""Measurements kept (the oldest are dropped): enough for every model and method a lab uses."""


@dataclass
class Measurement:
    device: str
    """device_label: torch.cuda.get_device_name(), or "cpu"; "N x NAME" for N processes."""
    method: str
    """full or lora."""
    parameters: int
    flops_per_token: float
    """Training FLOPs per token of the measured model (estimate.training_flops_per_token)."""
    tokens_per_second: float
    source: str
    """"probe", or "run NAME"."""
    seq_len: int = 0
    micro_batch: int = 0
    precision: str = ""
    attention: str = ""
    mfu: float | None = None
    """0-1, where the device's peak is known."""
    date: str = ""
    """YYYY-MM-DD of the measurement."""
    checkpointing: bool = False
    fused_kernels: bool = False
    """Liger's kernels."""
    compiled: bool = False
    """torch.compile."""

    @property
    def achieved_flops(self) -> float:
        """FLOP/s the measured training achieved."""
        return self.tokens_per_second * self.flops_per_token

    def words(self) -> str:
        """Where the speed came from, for the plan: "measured: 41% MFU on NVIDIA H200 for a
        494M model with LoRA by a probe on 2026-12-01"."""
        rate = (f"{self.mfu:.0%} MFU" if self.mfu is not None and self.mfu <= 1  # else a peak set too low
                else f"{self.achieved_flops / 1e12:.3g} TFLOP/s")
        how = "with LoRA" if self.method == "lora" else "full-parameter"
        by = "a probe" if self.source == "probe" else self.source
        where = "the CPU" if self.device == "cpu" else self.device
        return f"measured: {rate} on {where} for a {params_words(self.parameters)} model {how} by {by} on {self.date}"

    def setup(self) -> dict:
        """The kernels it was measured with (kernel_setup's keys)."""
        return {name: getattr(self, name) for name in SETUP_FIELDS}


SETUP_FIELDS = ("precision", "attention", "checkpointing", "fused_kernels", "compiled")
"""What besides the device, the method and the model's size decides a training speed: a
compiled tiny run trained 2.5x as fast as an eager one on this machine's CPU (measured when
torch.compile was added), checkpointing recomputes the forward pass (about a third more
compute), Liger and the attention kernel change the memory traffic."""


def kernel_setup(hardware) -> dict:
    """The SETUP_FIELDS of a recipe.Hardware, as a Measurement records them."""
    return {"precision": hardware.precision, "attention": hardware.attention,
            "checkpointing": hardware.gradient_checkpointing, "fused_kernels": hardware.fused_kernels,
            "compiled": hardware.compile}


def setup_differences(measured: dict, planned: dict) -> str:
    """"" when alike, else e.g. "measured with torch.compile on, this run has it off"."""
    names = {"precision": "precision", "attention": "attention", "checkpointing": "gradient checkpointing",
             "fused_kernels": "Liger kernels", "compiled": "torch.compile"}
    said = {True: "on", False: "off"}
    parts = [f"{names[key]} {said.get(measured[key], measured[key])} (this run: {said.get(planned[key], planned[key])})"
             for key in SETUP_FIELDS if key in planned and measured.get(key) != planned[key]]
    return f"measured with {', '.join(parts)}: the speed may differ" if parts else ""


def device_label(gpu: str, processes: int = 1) -> str:
    """The device a speed is measured on: the GPU's name (recipe.Hardware.gpu_name; "" on a
    CPU: "cpu"), "N x NAME" for a run of N processes."""
    name = gpu or "cpu"
    return f"{processes} x {name}" if processes > 1 else name


def throughput_file() -> Path:
    return data_dir() / FILE_NAME


def record(measurement: Measurement, path: Path | None = None) -> None:
    """Append `measurement` (dated today when it has no date), keeping the newest KEEP."""
    path = path or throughput_file()
    measurement.date = measurement.date or time.strftime("%Y-%m-%d")
    kept = load(path)[-(KEEP - 1):] + [measurement]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(m)) + "\n" for m in kept))
    tmp.replace(path)  # whole or not at all: a reader never sees half a line


def load(path: Path | None = None) -> list[Measurement]:
    """Every measurement recorded, oldest first; a line that is not one is skipped (the file is
    a convenience, never a reason for a plan to fail)."""
    path = path or throughput_file()
    if not path.exists():
        return []
    known = {f.name for f in fields(Measurement)}
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            data = json.loads(line)
            found.append(Measurement(**{k: v for k, v in data.items() if k in known}))
        except (ValueError, TypeError):
            continue
    return found


def closest(*, device: str, method: str, parameters: int, setup: dict | None = None,
            path: Path | None = None) -> Measurement | None:
    """The measurement of the same device and method, with the fewest kernels unlike `setup`
    (kernel_setup's dict; None: any), and among those the model size nearest `parameters` (by
    ratio; the newest among equals), or None."""
    same = [m for m in load(path) if m.device == device and m.method == method and m.parameters > 0
            and m.tokens_per_second > 0 and m.flops_per_token > 0]
    if not same:
        return None
    unlike = (lambda m: sum(m.setup()[k] != v for k, v in setup.items())) if setup else (lambda m: 0)
    return min(reversed(same), key=lambda m: (unlike(m), abs(math.log(m.parameters / parameters))))


def carried_over(*, gpu: str, processes: int, method: str, parameters: int, flops_per_token: float,
                 setup: dict | None = None, path: Path | None = None) -> tuple[float, str] | None:
    """(tokens/s, the words saying where it came from) for a model of `parameters` and
    `flops_per_token` (recipe.flops_per_token) trained by `method` on `processes` x the GPU
    `gpu` ("" for the CPU): the achieved FLOP/s of the closest measurement, divided by
    `flops_per_token`. A measurement of as many processes comes first; else one process's, times
    `processes` (assumed to scale evenly). `setup`: the plan's kernels (kernel_setup), a
    measurement with the same ones first; the words say which differ. None without a
    measurement of this device and method."""
    find = functools.partial(closest, method=method, parameters=parameters, setup=setup, path=path)
    found, times = find(device=device_label(gpu, processes)), 1
    if found is None and processes > 1:
        found, times = find(device=device_label(gpu)), processes
    if found is None:
        return None
    speed = times * found.achieved_flops / flops_per_token
    scaled = f" x {times} processes (assumed to scale evenly)" if times > 1 else ""
    unlike = setup_differences(found.setup(), setup or {})
    same = found.parameters == parameters and math.isclose(found.flops_per_token, flops_per_token, rel_tol=1e-6)
    target = "the same for this model" if same else "carried over to this model"  # the size measured
    return speed, (f"{found.words()}; {target}{scaled}: {speed:,.0f} tokens/s"
                   + (f"; {unlike}" if unlike else ""))
