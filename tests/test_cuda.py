"""The GPU paths of issue 18, on CUDA only (skipped elsewhere; bench/gpu_check.sh runs them
with the GPU bench): every attention kernel the GPU has keeps packed documents apart, in fp32
and in the runs' bf16 autocast, and a run through our engine trains on the kernel, optimizer,
fused kernels and compilation it chooses there, learning what the plain eager run learns.
On a CPU, the same checks of the kernels run in tests/test_kernels.py."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _kernels() -> list[str]:
    from cpt_studio.core.recipe import flash_attn_installed, flex_attention_available

    return (["eager", "sdpa"] + (["flex_attention"] if flex_attention_available() else [])
            + (["flash_attention_2"] if flash_attn_installed() else []))


def _cases() -> list[tuple[str, str]]:
    """Each kernel in fp32 and in the runs' precision on a GPU (fp32 weights, bf16 autocast);
    flash attention has no fp32, only the latter."""
    from cpt_studio.core.packing import FLAT_ROW_KERNELS

    return [(kernel, precision) for kernel in _kernels()
            for precision in (("bf16",) if kernel in FLAT_ROW_KERNELS else ("fp32", "bf16"))]


@pytest.mark.parametrize(("kernel", "precision"), _cases())
def test_every_gpu_kernel_keeps_packed_documents_apart(tiny_model_dir, kernel, precision):
    """Two rows whose documents end at different places (the batch flattened for flash
    attention, as the run does): each row's second document has the logits it has alone. The
    model in fp32 as the run loads it, under bf16 autocast as the run trains and evaluates it
    (tolerance 3e-2: a few bf16 steps of these logits, which are about 1.3 at most), or in
    plain fp32 (1e-4). A kernel that let the documents see each other differs by about 0.8 on
    this model (seen on a CPU, in both precisions)."""
    from transformers import AutoModelForCausalLM

    from cpt_studio.core.packing import FLAT_ROW_KERNELS, collate_rows

    autocast = precision == "bf16"
    tolerance = 3e-2 if autocast else 1e-4
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=kernel).cuda().eval()
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (2, 64))
    positions = torch.stack([torch.cat([torch.arange(20), torch.arange(44)]),
                             torch.cat([torch.arange(35), torch.arange(29)])])
    rows = [{"input_ids": ids[i], "position_ids": positions[i]} for i in range(2)]
    batch = {k: v.cuda() for k, v in collate_rows(rows, flat=kernel in FLAT_ROW_KERNELS).items()}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        packed = model(**batch, use_cache=False).logits.float().view(2, 64, -1)
        for row, start in ((0, 20), (1, 35)):
            alone = model(input_ids=ids[row:row + 1, start:].cuda(), use_cache=False).logits.float()[0]
            difference = (packed[row, start:] - alone).abs().max().item()
            assert difference < tolerance, (kernel, precision, difference)
        leaked = model(input_ids=ids[:1].cuda(), use_cache=False).logits.float()[0, 20:]
        assert (leaked - packed[0, 20:]).abs().max() > 10 * tolerance, (kernel, precision)
    print(kernel, precision, f"packed vs alone {difference:.2e}")


def _run(tiny_model_dir, root, **system):
    """A 10-step run of the tiny model through our engine with these system settings:
    (step losses, step events, the kernels line)."""
    from cpt_studio.core.runs import create_run
    from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
    from cpt_studio.core.training import train

    config = tiny_run_config(tiny_model_dir, root / "data")
    for name, value in system.items():
        setattr(config.system, name, value)
    config.schedule.max_steps, config.eval.interval, config.checkpoints.interval = 10, 10, 10
    run = create_run(config, root / "runs")
    assert train(run) == "finished"
    kernels = next(e["message"] for e in events_of(run, "log") if e["message"].startswith("kernels: "))
    return [e["loss"] for e in events_of(run, "step")], events_of(run, "step"), kernels


@pytest.fixture(scope="module")
def eager_losses(tiny_model_dir, tmp_path_factory) -> list[float]:
    """The reference: the same run on eager attention (the plain softmax, no fused kernel)."""
    return _run(tiny_model_dir, tmp_path_factory.mktemp("eager"), attention="eager")[0]


def test_a_run_on_the_gpu_uses_the_chosen_kernels_and_learns_as_on_eager(tiny_model_dir, tmp_path, eager_losses):
    """The automatic choices on this GPU (flash attention if installed, else FlexAttention;
    fused AdamW; no checkpointing for a model this small): finite, falling losses equal to the
    eager run's (bf16: to 2%), so the kernel chosen never changes what is learned; a live MFU
    on every step (the GPU's peak is known by its name)."""
    from cpt_studio.core.recipe import flash_attn_installed

    losses, steps, kernels = _run(tiny_model_dir, tmp_path)
    expected = "flash_attention_2" if flash_attn_installed() else "flex_attention"
    assert f"attention {expected}" in kernels and "AdamW fused" in kernels
    assert "gradient checkpointing off (the estimate without it" in kernels  # the tiny model fits
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert losses == pytest.approx(eager_losses, rel=2e-2)
    assert all(0 < e["mfu"] < 1 for e in steps)
    print(kernels, f"losses {losses[0]:.3f} -> {losses[-1]:.3f}")


def test_sdpa_trains_as_eager(tiny_model_dir, tmp_path, eager_losses):
    """SDPA (the kernel of a GPU without FlexAttention) learns what eager does (bf16: to 2%)."""
    losses, _, kernels = _run(tiny_model_dir, tmp_path, attention="sdpa")
    assert "attention sdpa" in kernels and losses == pytest.approx(eager_losses, rel=2e-2)


def test_a_compiled_run_on_the_gpu(tiny_model_dir, tmp_path, eager_losses):
    losses, _, kernels = _run(tiny_model_dir, tmp_path, compile=True)
    assert "torch.compile on" in kernels and losses == pytest.approx(eager_losses, rel=2e-2)


def test_liger_kernels_train_where_installed(tiny_model_dir, tmp_path, eager_losses):
    pytest.importorskip("liger_kernel")
    losses, _, kernels = _run(tiny_model_dir, tmp_path, fused_kernels="on")
    assert "Liger kernels on" in kernels and losses == pytest.approx(eager_losses, rel=2e-2)


def test_a_speed_probe_on_the_gpu_trains_with_the_runs_kernels_and_is_remembered(tiny_model_dir, tmp_path):
    """The summary page's "Measure speed" (plan_run with a probe) on the GPU: the probe trains
    with the kernels the run would choose (compiled here, as the config asks) and records them
    beside its tokens/s and MFU; the next plan carries that measurement over."""
    from cpt_studio.core.plan import plan_run
    from cpt_studio.core.testing.run_helpers import tiny_run_config
    from cpt_studio.core.throughput import load, throughput_file

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.system.compile = True
    probed = plan_run(config, probe_steps=3).time
    assert probed.basis.startswith("measured by a probe just now") and probed.tokens_per_second > 0
    [measured] = load(throughput_file())
    assert measured.device != "cpu" and measured.compiled and measured.precision == "bf16"
    assert 0 < measured.mfu < 1
    assert plan_run(config).time.basis.startswith("measured: ")
    print(f"probe: {measured.tokens_per_second:,.0f} tokens/s, MFU {measured.mfu:.1%}, {measured.setup()}")


def test_benchmarks_search_their_batch_size_on_the_gpu_and_score_as_a_fixed_batch(tiny_model_dir, tmp_path):
    """Benchmarks' batch size "auto" on a GPU is lm-eval's search for the largest batch that
    fits (from 64, halving on out-of-memory): it runs there, finds more than the fixed 4 for the
    tiny model, and the probes score as with a batch of 4 (padding changes no score)."""
    pytest.importorskip("lm_eval")
    from probe_files import write_probes

    from cpt_studio.core import benchmarks
    from cpt_studio.core.benchmarks import run_task, task_manager, wrap_model
    from cpt_studio.core.generate import load_for_generation
    from cpt_studio.core.probes import read_probes, write_probe_tasks

    write_probes(tmp_path / "probes.jsonl")
    names = write_probe_tasks(read_probes(tmp_path / "probes.jsonl"), tmp_path / "tasks")
    manager = task_manager([tmp_path / "tasks"], registry=False)
    model, tokenizer = load_for_generation(str(tiny_model_dir))
    model = model.cuda()

    def scores(lm) -> dict:
        return {(s.task, s.metric): s.value for name in names for s in run_task(lm, name, manager)}

    fixed = scores(wrap_model(model, tokenizer, batch_size=benchmarks.FIXED_BATCH_SIZE))
    searched = wrap_model(model, tokenizer)
    assert searched.batch_size == "auto"
    assert scores(searched) == pytest.approx(fixed, rel=1e-3)
    assert max(searched.batch_sizes.values()) > benchmarks.FIXED_BATCH_SIZE
    print(f"benchmarks: lm-eval's search found batch sizes {searched.batch_sizes}")
