"""cpt_studio.core.estimate: memory and time before a run, pure arithmetic."""

import subprocess
import sys
from pathlib import Path

import pytest

from cpt_studio.core.estimate import (
    GiB,
    estimate_memory,
    estimate_time,
    format_bytes,
    format_duration,
)

ROOT = Path(__file__).resolve().parent.parent

# SmolLM2-135M (LlamaForCausalLM, tied embeddings): the model the CPU calibration measured.
SMOL = dict(
    parameters=134_515_008, hidden_size=576, num_layers=30, vocab_size=49_152,
    intermediate_size=1536, num_heads=9,
)
SMOL_LORA_TRAINABLE = 4_884_480  # r=16 on q,k,v,o,gate,up,down (PEFT's count, 30 layers)

# Llama-2-7B's shape, where weights and optimizer states dominate.
LLAMA7B = dict(
    parameters=6_738_415_616, hidden_size=4096, num_layers=32, vocab_size=32_000,
    intermediate_size=11_008, num_heads=32,
)
LLAMA7B_LORA_TRAINABLE = 39_976_960  # r=16 on all seven linear projections


def smol(**overrides):
    settings = dict(
        SMOL, trainable=SMOL["parameters"], micro_batch=4, seq_len=2048, precision="bf16",
        method="full", gradient_checkpointing=False,
    )
    settings.update(overrides)
    return estimate_memory(**settings)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_breakdown_sums_to_total(device, method, checkpointing):
    trainable = SMOL["parameters"] if method == "full" else SMOL_LORA_TRAINABLE
    est = smol(method=method, trainable=trainable, gradient_checkpointing=checkpointing,
               ewc=True, device=device)
    rows = est.breakdown()
    assert sum(value for _, value in rows) == est.total
    assert all(value >= 0 for _, value in rows)
    assert len({label for label, _ in rows}) == len(rows)


def test_lora_needs_much_less_than_full():
    common = dict(LLAMA7B, micro_batch=1, seq_len=2048, precision="bf16",
                  gradient_checkpointing=True)
    full = estimate_memory(**common, trainable=LLAMA7B["parameters"], method="full")
    lora = estimate_memory(**common, trainable=LLAMA7B_LORA_TRAINABLE, method="lora")
    # 18 bytes per parameter (about 113 GiB) against a 2-byte frozen base (about 13 GiB).
    assert lora.total < full.total / 4
    assert full.total > 80 * GiB > 24 * GiB > lora.total

    # For the 135M model the activations dominate, yet the parameter-bound terms shrink.
    small_full = smol()
    small_lora = smol(method="lora", trainable=SMOL_LORA_TRAINABLE)
    state = lambda e: e.weights + e.gradients + e.optimizer  # noqa: E731
    assert state(small_lora) < state(small_full) / 5
    assert small_lora.total < small_full.total


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_lowers_activations(method):
    trainable = SMOL["parameters"] if method == "full" else SMOL_LORA_TRAINABLE
    off = smol(method=method, trainable=trainable)
    on = smol(method=method, trainable=trainable, gradient_checkpointing=True)
    assert on.activations < off.activations / 2
    assert (on.weights, on.gradients, on.optimizer, on.logits) == (
        off.weights, off.gradients, off.optimizer, off.logits)
    assert on.total < off.total


def test_activations_grow_with_batch_and_context():
    base = smol(micro_batch=1, seq_len=1024)
    assert smol(micro_batch=2, seq_len=1024).activations == 2 * base.activations
    assert smol(micro_batch=1, seq_len=2048).activations == 2 * base.activations
    # Eager attention keeps the a x s x s softmax per layer: quadratic in the context.
    eager = smol(micro_batch=1, seq_len=1024, eager_attention=True)
    extra = eager.activations - base.activations
    assert extra == SMOL["num_layers"] * SMOL["num_heads"] * 1024 * 1024 * 2


def test_ewc_adds_eight_bytes_per_parameter_in_its_group():
    group = 10_000_000
    off = smol(device="cpu")
    on = smol(device="cpu", ewc=True, ewc_params=group)
    assert on.ewc == 8 * group
    # On CPU the overhead is fixed, so the total grows by exactly the EWC term.
    assert on.total - off.total == 8 * group
    assert off.ewc == 0
    # The group defaults to the trainable parameters.
    assert smol(ewc=True).ewc == 8 * SMOL["parameters"]
    lora = smol(method="lora", trainable=SMOL_LORA_TRAINABLE, ewc=True)
    assert lora.ewc == 8 * SMOL_LORA_TRAINABLE
    # On CUDA the allocator slack (a share of the tensors) grows with it too.
    assert smol(ewc=True, ewc_params=group).total > smol().total + 8 * group


@pytest.mark.parametrize("share, expected", [(0.50, "fits"), (0.80, "tight"), (1.20, "exceeds")])
def test_rating_bands(share, expected):
    est = smol()
    assert est.rating(int(est.total / share)) == expected


def test_rating_band_edges():
    est = smol()
    assert est.rating(est.total) == "tight"  # all of it: tight, not yet exceeding
    assert est.rating(est.total - 1) == "exceeds"
    assert est.rating(int(est.total / 0.75) + 1) == "fits"  # exactly 75% is not tight
    with pytest.raises(ValueError):
        est.rating(0)


def test_smollm2_135m_full_bf16_lands_in_a_plausible_range():
    # Full bf16 at 4 x 2048 tokens, no checkpointing. Lower bound 12 GiB: the parameter
    # state alone is 18 B x 134.5M = 2.3 GiB, one fp32 copy of the logits
    # (4 x 2048 x 49,152 x 4 B) is 1.5 GiB and the loss keeps three, and 30 layers keep
    # several GiB of activations for 8192 tokens. Upper bound 20 GiB: the terms are summed
    # at their peaks, so the estimate may lean high, but not by a third. On an H100
    # (torch 2.11) context + peak reserved memory was measured at 15.4 GiB.
    est = smol()
    assert 12 * GiB < est.total < 20 * GiB
    assert 3 * GiB < est.logits < 6 * GiB
    # With checkpointing the logits dominate: measured 9.1 GiB on the same H100.
    assert 6 * GiB < smol(gradient_checkpointing=True).total < 12 * GiB
    # The 18 bytes per parameter of mixed-precision full training with AdamW.
    assert est.weights + est.gradients + est.optimizer == 18 * SMOL["parameters"]


def test_precisions_and_validation():
    fp32 = smol(precision="fp32")
    assert fp32.weights == 4 * SMOL["parameters"]  # no 16-bit copy without autocast
    assert fp32.activations > smol().activations
    lora_fp32 = smol(method="lora", trainable=SMOL_LORA_TRAINABLE, precision="fp32")
    assert lora_fp32.weights == 4 * (SMOL["parameters"] + SMOL_LORA_TRAINABLE)
    for bad in (dict(precision="int8"), dict(method="qlora"), dict(device="mps"),
                dict(micro_batch=0), dict(trainable=SMOL["parameters"] + 1)):
        with pytest.raises(ValueError):
            smol(**bad)


def test_time_for_135m_on_cpu_is_about_100_tokens_per_second():
    est = estimate_time(tokens=100_000, tokens_per_second=None, device="cpu",
                        parameters=SMOL["parameters"])
    assert 90 < est.tokens_per_second < 110  # measured: about 100 tokens/s on 2 cores (estimate.CPU_FLOPS)
    assert est.assumed
    assert "tokens/s" in est.basis and "135M" in est.basis and "CPU" in est.basis
    assert est.seconds == pytest.approx(100_000 / est.tokens_per_second)

    gpu = estimate_time(tokens=100_000, tokens_per_second=None, device="cuda",
                        parameters=SMOL["parameters"])
    assert gpu.tokens_per_second > 1000 * est.tokens_per_second
    assert "GPU" in gpu.basis

    # A 7B model is about 50 times slower than the 135M one.
    big = estimate_time(tokens=100_000, tokens_per_second=None, device="cuda",
                        parameters=LLAMA7B["parameters"])
    assert big.seconds == pytest.approx(gpu.seconds * LLAMA7B["parameters"] / SMOL["parameters"])


def test_time_with_a_measured_speed():
    est = estimate_time(tokens=3_600_000, tokens_per_second=1000.0, device="cuda",
                        parameters=SMOL["parameters"])
    assert est.seconds == 3600
    assert not est.assumed
    assert est.basis == "measured by a probe"
    with pytest.raises(ValueError):
        estimate_time(tokens=1, tokens_per_second=0, device="cpu", parameters=1)


@pytest.mark.parametrize("seconds, words", [
    (11 * 3600 + 2 * 60 + 5, "11 h 2 m"),
    (200, "3 m 20 s"),
    (45, "45 s"),
    (44.6, "45 s"),
    (0, "0 s"),
    (60, "1 m 0 s"),
    (3600, "1 h 0 m"),
    (2 * 86400 + 3 * 3600 + 59, "2 d 3 h"),
    (float("inf"), "unknown"),
])
def test_format_duration(seconds, words):
    assert format_duration(seconds) == words


@pytest.mark.parametrize("n, words", [
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (int(1.2 * GiB), "1.2 GiB"),
    (5 * 1024**4, "5.0 TiB"),
])
def test_format_bytes(n, words):
    assert format_bytes(n) == words


def test_estimate_is_headless_and_loads_no_framework():
    code = ("import sys, cpt_studio.core.estimate; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('PySide6', 'pyqtgraph', 'gui', 'torch', 'transformers')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- GPU peaks and MFU (issue 18) ---------------------------------------------------------

@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.5),
    ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.1),
    ("NVIDIA L40", 181.0), ("NVIDIA L4", 121.0), ("NVIDIA RTX A6000", 154.8), ("NVIDIA A10G", 70.0),
    ("NVIDIA RTX 6000 Ada Generation", 364.2), ("Tesla T4", 65.0), ("Matrox Millennium", None),
])
def test_gpu_peak_is_read_from_the_card_name(name, tflops):
    from cpt_studio.core.estimate import gpu_peak_flops
    assert gpu_peak_flops(name) == (tflops * 1e12 if tflops else None)


def test_mfu_follows_palm_model_flops():
    from cpt_studio.core.estimate import model_flops_utilisation, training_flops_per_token
    # 494M parameters, 24 layers of 896, 2048 tokens: 6N + 12 L H s
    flops = training_flops_per_token(parameters=494_000_000, method="full", num_layers=24,
                                     hidden_size=896, seq_len=2048)
    assert flops == 6 * 494_000_000 + 12 * 24 * 896 * 2048
    lora = training_flops_per_token(parameters=494_000_000, method="lora", num_layers=24,
                                    hidden_size=896, seq_len=2048)
    assert lora == flops - 2 * 494_000_000
    assert model_flops_utilisation(100_000, flops, 989.4e12) == pytest.approx(100_000 * flops / 989.4e12)
    assert model_flops_utilisation(100_000, flops, None) is None


def test_gpu_time_estimate_uses_the_cards_peak():
    slow = estimate_time(tokens=10**9, tokens_per_second=None, device="cuda", parameters=10**9,
                         peak_flops=165.2e12, gpu="NVIDIA GeForce RTX 4090")
    fast = estimate_time(tokens=10**9, tokens_per_second=None, device="cuda", parameters=10**9,
                         peak_flops=989.4e12, gpu="NVIDIA H200")
    assert slow.seconds / fast.seconds == pytest.approx(989.4 / 165.2)
    assert "NVIDIA H200" in fast.basis and "989 TFLOP/s" in fast.basis


def test_the_plans_rule_of_thumb_counts_every_gpu_of_the_run(monkeypatch):
    """Without a measurement, a plan for 4 processes assumes 4 GPUs' peak (4x one GPU's speed)."""
    one = estimate_time(tokens=10**9, tokens_per_second=None, device="cuda", parameters=10**9,
                        peak_flops=989.4e12, gpu="NVIDIA H200")
    four = estimate_time(tokens=10**9, tokens_per_second=None, device="cuda", parameters=10**9,
                         peak_flops=4 * 989.4e12, gpu="4 x NVIDIA H200")
    assert one.seconds / four.seconds == pytest.approx(4) and "on 4 x NVIDIA H200" in four.basis
