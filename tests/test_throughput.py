"""Measured training speeds remembered for the plan (cpt_studio.core.throughput): the closest
measurement of the same device and method, carried over to another model size by its FLOPs
per token; a probe and a finished run record one (the run's, in tests/test_kernels.py)."""
import pytest

from cpt_studio.core.plan import format_plan, plan_run
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.core.throughput import (
    KEEP,
    Measurement,
    carried_over,
    closest,
    load,
    record,
    throughput_file,
)


def _m(device="NVIDIA H200", method="lora", parameters=494_000_000, speed=50_000.0, source="probe", mfu=0.41,
       **setup):
    return Measurement(device, method, parameters, 6.0 * parameters, speed, source, 2048, 4, mfu=mfu,
                       date="2026-12-01", **{**SETUP, **setup})


SETUP = {"precision": "bf16", "attention": "flex_attention", "checkpointing": False, "fused_kernels": False,
         "compiled": False}


def test_the_closest_measurement_is_of_the_same_device_and_method_and_nearest_size(tmp_path):
    path = tmp_path / "t.jsonl"
    for m in (_m(parameters=135_000_000), _m(parameters=7_000_000_000), _m(method="full"),
              _m(device="NVIDIA GeForce RTX 4090")):
        record(m, path)
    assert closest(device="NVIDIA H200", method="lora", parameters=500_000_000, path=path).parameters == 135_000_000
    assert closest(device="NVIDIA H200", method="lora", parameters=3_000_000_000, path=path).parameters == 7_000_000_000
    assert closest(device="NVIDIA H200", method="full", parameters=10**9, path=path).method == "full"
    assert closest(device="NVIDIA A100-SXM4-80GB", method="lora", parameters=10**9, path=path) is None
    record(_m(parameters=135_000_000, speed=99.0, source="run pharma"), path)  # the newest of equals wins
    assert closest(device="NVIDIA H200", method="lora", parameters=135_000_000, path=path).source == "run pharma"


def test_a_measurement_carries_its_achieved_flops_over_to_another_size_and_to_more_processes(tmp_path):
    path = tmp_path / "t.jsonl"
    record(_m(parameters=135_000_000, speed=10_000.0), path)  # 8.1 TFLOP/s achieved on one H200
    speed, words = carried_over(gpu="NVIDIA H200", processes=1, method="lora", parameters=270_000_000,
                                flops_per_token=6.0 * 270_000_000, path=path)
    assert speed == pytest.approx(5_000.0)  # twice the FLOPs per token: half the tokens/s
    assert words == ("measured: 41% MFU on NVIDIA H200 for a 135M model with LoRA by a probe on 2026-12-01; "
                     "carried over to this model: 5,000 tokens/s")
    speed, words = carried_over(gpu="NVIDIA H200", processes=2, method="lora", parameters=135_000_000,
                                flops_per_token=6.0 * 135_000_000, path=path)
    assert speed == pytest.approx(20_000.0) and "x 2 processes (assumed to scale evenly)" in words
    record(_m(device="2 x NVIDIA H200", parameters=135_000_000, speed=18_000.0, source="run pharma"), path)
    speed, words = carried_over(gpu="NVIDIA H200", processes=2, method="lora", parameters=135_000_000,
                                flops_per_token=6.0 * 135_000_000, path=path)  # two processes measured: theirs
    assert speed == pytest.approx(18_000.0) and "on 2 x NVIDIA H200" in words and "assumed" not in words
    assert carried_over(gpu="", processes=1, method="lora", parameters=10**8, flops_per_token=6e8, path=path) is None


def test_a_measurement_with_the_plans_kernels_comes_first_and_other_kernels_are_named(tmp_path):
    path = tmp_path / "t.jsonl"
    record(_m(parameters=494_000_000, speed=30_000.0, compiled=True), path)  # the same size, compiled
    record(_m(parameters=135_000_000, speed=100_000.0), path)  # another size, the plan's kernels
    found = closest(device="NVIDIA H200", method="lora", parameters=494_000_000, setup=SETUP, path=path)
    assert found.parameters == 135_000_000  # kernels decide before size
    compiled = {**SETUP, "compiled": True}
    assert closest(device="NVIDIA H200", method="lora", parameters=494_000_000, setup=compiled,
                   path=path).compiled
    tmp_path.joinpath("u.jsonl").write_text(path.read_text().splitlines()[0] + "\n")  # only the compiled one
    _, words = carried_over(gpu="NVIDIA H200", processes=1, method="lora", parameters=494_000_000,
                            flops_per_token=6.0 * 494_000_000, setup={**SETUP, "attention": "sdpa"},
                            path=tmp_path / "u.jsonl")
    assert words.endswith("; measured with attention flex_attention (this run: sdpa), torch.compile on "
                          "(this run: off): the speed may differ")


def test_a_lora_model_has_the_flops_per_token_the_plan_counts_for_it(tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from cpt_studio.core.recipe import apply_method, flops_per_token, meta_model

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.method.kind = "lora"
    planned = flops_per_token(meta_model(AutoConfig.from_pretrained(tiny_model_dir), config), config)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    assert flops_per_token(model, config) == planned  # the adapters' own FLOPs are not counted


def test_a_broken_line_is_skipped_and_only_the_newest_are_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    record(_m(), path)
    path.write_text(path.read_text() + "{not json\n" + '{"device": "x"}\n')
    assert len(load(path)) == 1
    for i in range(KEEP + 5):
        record(_m(speed=float(i + 1)), path)
    kept = load(path)
    assert len(kept) == KEEP and kept[-1].tokens_per_second == KEEP + 5


def test_the_words_say_what_was_measured_where_and_by_what():
    assert _m().words() == ("measured: 41% MFU on NVIDIA H200 for a 494M model with LoRA by a probe on 2026-12-01")
    cpu = _m(device="cpu", method="full", mfu=None, speed=1000.0, source="run tiny")
    assert cpu.words().startswith("measured: 2.96 TFLOP/s on the CPU for a 494M model full-parameter by run tiny")


def test_the_plan_uses_a_measurement_of_this_machine_and_a_probe_records_one(tiny_model_dir, tmp_path):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    assumed = plan_run(config).time
    assert assumed.assumed and assumed.basis.startswith("assumed")
    probed = plan_run(config, probe_steps=2).time
    assert not probed.assumed and probed.basis.startswith("measured by a probe just now")
    [m] = load(throughput_file())
    assert (m.device, m.method, m.source, m.seq_len) == ("cpu", "full", "probe", 64)
    assert m.setup() == {"precision": "fp32", "attention": "sdpa", "checkpointing": False, "fused_kernels": False,
                         "compiled": False}
    plan = plan_run(config)  # the next plan, without a probe, uses it
    planned = plan.time
    assert planned.basis.startswith("measured: ") and "on the CPU for a 99K model full-parameter by a probe" in planned.basis
    assert planned.tokens_per_second == pytest.approx(m.tokens_per_second, rel=1e-6)  # the same model
    lines = format_plan(plan).splitlines()  # the measurement and its carrying over a line each
    at = next(i for i, line in enumerate(lines) if line.startswith("time "))
    assert lines[at].endswith(" of evaluation") and lines[at + 1] == " " * 15 + planned.basis.split("; ")[0]
    assert lines[at + 2] == " " * 15 + f"the same for this model: {planned.tokens_per_second:,.0f} tokens/s"
    assert lines[at + 3].strip() == ("(step 0's evaluation included; loading the model and tokenizing the corpus "
                                     "before it are not)")


def test_a_plan_with_other_kernels_than_the_measurement_says_so(tiny_model_dir, tmp_path):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    record(Measurement("cpu", "full", 99_000, 6e5, 1e4, "probe", 64, 4, date="2026-12-01", precision="fp32",
                       attention="sdpa"))
    assert "may differ" not in plan_run(config).time.basis
    config.system.compile = True
    assert plan_run(config).time.basis.endswith("measured with torch.compile off (this run: on): the speed may differ")
