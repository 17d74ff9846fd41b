"""The fast paths of issue 18 that a CPU can check: which attention kernel, fused kernels and
checkpointing a machine gets and why (cpt_studio.core.recipe), that every attention kernel
this CPU runs keeps packed documents apart, that flattening a batch for the flash kernels
changes neither the logits nor the loss, and that the Trainer is given what was chosen."""
import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config

from cpt_studio.core import recipe
from cpt_studio.core.config import SystemConfig
from cpt_studio.core.packing import IGNORE_INDEX, collate_rows
from cpt_studio.core.plan import format_plan, plan_run
from cpt_studio.core.preflight import preflight
from cpt_studio.core.recipe import (
    Hardware,
    choose_attention,
    choose_checkpointing,
    choose_fused_kernels,
    meta_model,
    resolve_hardware,
)
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.core.training import training_arguments


@pytest.fixture
def config(tiny_model_dir, tmp_path):
    return tiny_run_config(tiny_model_dir, tmp_path / "data")


@pytest.fixture
def llama(tiny_model_dir, config):
    return meta_model(AutoConfig.from_pretrained(tiny_model_dir), config)


# -- the attention kernel ---------------------------------------------------------------------

def test_auto_attention_is_sdpa_on_a_cpu_and_a_set_kernel_is_kept(llama):
    assert choose_attention("auto", False, llama)[0] == "sdpa"
    assert choose_attention("eager", False, llama) == ("eager", "set in the config")


def test_auto_attention_on_a_gpu_prefers_flash_then_flex_then_sdpa(llama, config, monkeypatch):
    monkeypatch.setattr(recipe, "flash_attn_installed", lambda: True)
    assert choose_attention("auto", True, llama)[0] == "flash_attention_2"
    monkeypatch.setattr(recipe, "flash_attn_installed", lambda: False)
    kernel, why = choose_attention("auto", True, llama)
    assert kernel == "flex_attention" and why.startswith("flash-attn not installed")
    gpt2 = meta_model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64), config)
    kernel, why = choose_attention("auto", True, gpt2)  # GPT-2 has no FlexAttention in transformers
    assert kernel == "sdpa" and "no FlexAttention for GPT2LMHeadModel" in why
    monkeypatch.setattr(recipe, "flex_attention_available", lambda: False)
    assert choose_attention("auto", True, llama)[0] == "sdpa"


def test_documents_are_kept_apart_on_every_kernel_this_cpu_runs(tiny_model_dir):
    """Two rows with documents ending at different places: the logits of each row's second
    document equal those of that document alone, on eager, SDPA and FlexAttention (forward:
    FlexAttention has no backward pass on a CPU). A kernel that let documents see each other
    differs by about 0.6 on this model."""
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (2, 50))
    positions = torch.stack([torch.cat([torch.arange(20), torch.arange(30)]),
                             torch.cat([torch.arange(35), torch.arange(15)])])
    for kernel in ("eager", "sdpa", "flex_attention"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=kernel).eval()
        with torch.no_grad():
            packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits
            for row, start in ((0, 20), (1, 35)):
                alone = model(input_ids=ids[row:row + 1, start:], use_cache=False).logits[0]
                assert torch.allclose(packed[row, start:], alone, atol=1e-5), kernel
            joined = model(input_ids=ids, use_cache=False).logits  # no position ids: one document
            assert (joined[0, 20:] - packed[0, 20:]).abs().max() > 0.01, kernel


def test_a_flattened_batch_has_the_same_logits_and_loss(tiny_model_dir):
    """collate_rows(flat=True), the layout for the flash kernels, run here through SDPA (which
    reads the documents' bounds from position ids at any batch size): the logits of every row
    and the mean loss over the predicted tokens are those of the stacked batch."""
    torch.manual_seed(1)
    rows = []
    for bounds in ((20, 44), (35, 29), (64, 0)):
        ids = torch.randint(3, 200, (64,))
        positions = torch.cat([torch.arange(n) for n in bounds if n])
        labels = ids.clone()
        labels[-5:] = IGNORE_INDEX  # padding
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    stacked, flat = collate_rows(rows), collate_rows(rows, flat=True)
    assert flat["input_ids"].shape == (1, 3 * 64)
    assert (flat["labels"].view(3, 64)[:, 0] == IGNORE_INDEX).all()
    assert stacked["labels"][1, 0] != IGNORE_INDEX  # the stacked batch is left as it was
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        one = model(**stacked, use_cache=False)
        two = model(**flat, use_cache=False)
    assert torch.allclose(one.logits, two.logits.view(3, 64, -1), atol=1e-5)
    assert one.loss.item() == pytest.approx(two.loss.item(), abs=1e-6)


# -- fused kernels, checkpointing, the optimizer ----------------------------------------------

def test_liger_is_on_only_on_a_gpu_with_it_installed_for_a_model_it_patches(tiny_model_dir, monkeypatch):
    llama_config = AutoConfig.from_pretrained(tiny_model_dir)
    assert choose_fused_kernels("auto", False, llama_config) == (False, "they need a CUDA GPU")
    monkeypatch.setattr(recipe, "liger_model_types", lambda: None)
    assert choose_fused_kernels("auto", True, llama_config)[1].startswith("liger-kernel not installed")
    monkeypatch.setattr(recipe, "liger_model_types", lambda: {"llama", "qwen2"})
    assert choose_fused_kernels("auto", True, llama_config) == (True, "liger-kernel installed")
    on, why = choose_fused_kernels("auto", True, GPT2Config())
    assert not on and why == "liger-kernel has no kernels for 'gpt2' models"
    assert choose_fused_kernels("off", True, llama_config)[0] is False


def test_auto_checkpointing_follows_the_memory_estimate(tiny_model_dir, config, llama, monkeypatch):
    model_config = AutoConfig.from_pretrained(tiny_model_dir)
    gpu = Hardware("cuda", "bf16", "sdpa", False)
    monkeypatch.setattr(recipe, "gpu_total_memory", lambda: 80 * 1024**3)
    on, why = choose_checkpointing(config, gpu, model_config, llama)
    assert not on and "fits 75% of the GPU's 80.0 GiB" in why
    monkeypatch.setattr(recipe, "gpu_total_memory", lambda: 1024**2)
    on, why = choose_checkpointing(config, gpu, model_config, llama)
    assert on and "is over 75% of the GPU's 1.0 MiB" in why
    assert choose_checkpointing(config, gpu) == (True, "the model's size is not known yet")
    assert choose_checkpointing(config, Hardware("cpu", "fp32", "sdpa", False), model_config, llama)[0] is False
    config.system.gradient_checkpointing = "on"
    assert choose_checkpointing(config, Hardware("cpu", "fp32", "sdpa", False), model_config, llama)[0] is True


def test_the_trainer_gets_the_fused_optimizer_liger_and_compile_chosen(config, tmp_path):
    hardware = resolve_hardware(config)
    assert hardware.optimizer == "adamw_torch_fused"  # torch 2.13 has the fused kernel on the CPU too
    args = training_arguments(config, hardware, RunPaths(tmp_path / "run"), 20)
    assert args.optim.value == "adamw_torch_fused" and not args.use_liger_kernel and not args.torch_compile
    hardware.fused_kernels, hardware.compile = True, True
    args = training_arguments(config, hardware, RunPaths(tmp_path / "run"), 20)
    assert args.use_liger_kernel and args.torch_compile


# -- what the user is told --------------------------------------------------------------------

def test_kernels_this_machine_cannot_run_are_refused_with_the_fix(config):
    config.system = SystemConfig(attention="flex_attention", fused_kernels="on")
    problems = preflight(config).problems
    assert ("system.attention: FlexAttention has no backward pass on a CPU, so it cannot train here; "
            "use sdpa (or auto)") in problems
    assert any(p.startswith("system.fused_kernels: Liger's kernels are Triton kernels for a CUDA GPU")
               for p in problems)
    config.system = SystemConfig(fused_kernels="sometimes", peak_tflops=-1)
    problems = config.validate()
    assert "system: fused_kernels 'sometimes' is unknown; use auto, on or off" in problems
    assert any(p.startswith("system: peak_tflops -1 must be a positive number") for p in problems)


def test_the_plan_says_which_kernels_and_why(config):
    lines = format_plan(plan_run(config)).splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("kernels"))
    assert lines[first - 1].startswith("hardware       cpu, fp32")
    assert lines[first:first + 5] == [
        "kernels        attention sdpa (on a CPU: PyTorch's scaled-dot-product attention with a block mask "
        "per document)",
        "               AdamW fused",
        "               Liger kernels off (they need a CUDA GPU)",
        "               torch.compile off",
        "               gradient checkpointing off (on a CPU)"]


def test_packed_rows_keep_their_bounds_when_flattened():
    rows = [{"input_ids": torch.arange(4), "labels": torch.arange(4), "position_ids": torch.tensor([0, 1, 0, 1])},
            {"input_ids": torch.arange(4, 8), "labels": torch.arange(4, 8), "position_ids": torch.arange(4)}]
    flat = collate_rows(rows, flat=True)
    assert flat["position_ids"].tolist() == [[0, 1, 0, 1, 0, 1, 2, 3]]
    assert flat["labels"].tolist() == [[-100, 1, 2, 3, -100, 5, 6, 7]]
    assert np.array_equal(rows[0]["labels"].numpy(), np.arange(4))  # the rows themselves are not changed


def test_a_compiled_run_trains_as_the_plain_one(tiny_model_dir, tmp_path):
    """system.compile through the Trainer's torch_compile, with our Trainer's hooks (sampler,
    checkpoints, evaluation): the same losses as the run without it (about 17 s on 2 cores,
    nearly all of it compiling; its later steps ran 2.5x faster here) and a checkpoint saved
    under the model's own weight names."""
    from safetensors import safe_open

    from cpt_studio.core.runs import create_run
    from cpt_studio.core.testing.run_helpers import events_of
    from cpt_studio.core.training import train

    losses = []
    for compiled in (False, True):
        config = tiny_run_config(tiny_model_dir, tmp_path / "data")
        config.system.compile = compiled
        config.system.peak_tflops = 0.01  # a peak for this CPU: each step's MFU is then known
        config.schedule.max_steps, config.eval.interval, config.checkpoints.interval = 4, 4, 4
        run = create_run(config, tmp_path / f"runs-{compiled}")
        assert train(run) == "finished"
        steps = events_of(run, "step")
        losses.append([e["loss"] for e in steps])
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        per_token = 6 * model.num_parameters() + 12 * 2 * 64 * 64  # 6N + 12 x layers x hidden x seq_len
        assert [e["mfu"] for e in steps] == pytest.approx([e["tokens_per_second"] * per_token / 1e10 for e in steps])
        said = [e["message"] for e in events_of(run, "log") if e["message"].startswith("kernels: ")]
        assert len(said) == 1 and f"torch.compile {'on' if compiled else 'off'}" in said[0]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    from cpt_studio.core.throughput import load, throughput_file

    remembered = load(throughput_file())  # each finished run remembers its speed for later plans
    assert [(m.source, m.device, m.method) for m in remembered] == [("run tiny", "cpu", "full")] * 2
    assert all(m.mfu == pytest.approx(m.tokens_per_second * m.flops_per_token / 1e10) for m in remembered)
    weights = next(run.glob("checkpoints/checkpoint-4/model.safetensors"))
    assert all(not name.startswith("_orig_mod") for name in safe_open(weights, "pt").keys())


def test_held_out_perplexity_is_the_same_on_flattened_batches(tiny_model_dir, tmp_path, monkeypatch):
    """The evaluation flattens its batches for the flash kernels (packing.flat_rows): forced here
    on SDPA, the perplexity and the count of scored tokens are those of stacked batches."""
    from transformers import AutoTokenizer

    from cpt_studio.core import evaluation
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
    from cpt_studio.core.tokenstore import prepare

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    store = prepare([SourceSpec(str(write_jsonl(tmp_path / "d.jsonl", make_documents(12, seed=3))))], tokenizer)
    rows = evaluation.heldout_rows(store, np.arange(12), 64, tokenizer.eos_token_id, max_tokens=2_000)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    stacked = evaluation.heldout_perplexity(model, rows, batch_size=4)
    monkeypatch.setattr(evaluation, "flat_rows", lambda model: True)
    flat = evaluation.heldout_perplexity(model, rows, batch_size=4)
    assert flat.tokens == stacked.tokens and len(rows) > 4
    assert flat.loss == pytest.approx(stacked.loss, rel=1e-6)
    monkeypatch.setattr(evaluation, "CE_CHUNK_BYTES", 4 * 384 * 7)  # cross-entropy 7 tokens at a time
    chunked = evaluation.heldout_perplexity(model, rows, batch_size=4)
    assert chunked.tokens == stacked.tokens and chunked.loss == pytest.approx(stacked.loss, rel=1e-6)


def test_the_gpu_bench_runs_in_its_smoke_mode(tmp_path):
    """bench/gpu_train.py --smoke: the bench's code paths (the plain Trainer script, our run, the
    evaluation and kernel timings, the report) on the CPU, so that the one GPU call it is made
    for cannot fail on a script error. Its figures mean nothing and it says so."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "bench" / "gpu_train.py"
    done = subprocess.run([sys.executable, str(bench), "--smoke", "--out", str(tmp_path / "f.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "smoke run on the CPU: the figures below mean nothing" in done.stdout
    figures = json.loads((tmp_path / "f.json").read_text())
    for method in ("full", "lora"):
        assert figures[method]["ours"]["state"] == "finished"
        assert figures[method]["plain"]["tokens_per_second"] > 0 and figures[method]["ours"]["tokens_per_second"] > 0
    assert figures["evaluation"]["scored_tokens"] > 0
    assert set(figures["kernels"]) == {"sdpa", "eager", "sdpa, documents not apart"}
    assert not figures["errors"], figures["errors"]  # a part that fails is reported, and the run exits 1
    assert "targets (issue 18):" in done.stdout


def test_live_probes_run_a_flex_model_on_sdpa_and_give_it_back(tiny_model_dir):
    """lm-eval pads each batch to a new length; FlexAttention would compile for each: a model
    training on it is switched to SDPA for the probes, then back (others are left as they are)."""
    from cpt_studio.core.recipe import attention_for_padded_batches

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="flex_attention")
    with attention_for_padded_batches(model):
        assert model.config._attn_implementation == "sdpa"
        model(input_ids=torch.randint(3, 200, (1, 13)), use_cache=False)  # any length
    assert model.config._attn_implementation == "flex_attention"
    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    with attention_for_padded_batches(eager):
        assert eager.config._attn_implementation == "eager"
