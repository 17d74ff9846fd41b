"""The GPU paths of issue 18, on CUDA only (skipped elsewhere; bench/gpu_check.sh runs them
with the GPU bench): every attention kernel the GPU has keeps packed documents apart, and a
run through our engine trains on the kernel, optimizer, fused kernels and compilation it
chooses there."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _kernels() -> list[str]:
    from cpt_studio.core.recipe import flash_attn_installed, flex_attention_available

    return (["eager", "sdpa"] + (["flex_attention"] if flex_attention_available() else [])
            + (["flash_attention_2"] if flash_attn_installed() else []))


@pytest.mark.parametrize("kernel", _kernels())
def test_every_gpu_kernel_keeps_packed_documents_apart(tiny_model_dir, kernel):
    """Two rows whose documents end at different places (the batch flattened for flash
    attention, as the run does): each row's second document has the logits it has alone. In
    bf16 for flash attention (it has no fp32), else fp32; a leak differs by far more."""
    from transformers import AutoModelForCausalLM

    from cpt_studio.core.packing import FLAT_ROW_KERNELS, collate_rows

    dtype = torch.bfloat16 if kernel in FLAT_ROW_KERNELS else torch.float32
    tolerance = 3e-2 if dtype == torch.bfloat16 else 1e-4
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=kernel, dtype=dtype).cuda().eval()
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (2, 64))
    positions = torch.stack([torch.cat([torch.arange(20), torch.arange(44)]),
                             torch.cat([torch.arange(35), torch.arange(29)])])
    rows = [{"input_ids": ids[i], "position_ids": positions[i]} for i in range(2)]
    batch = {k: v.cuda() for k, v in collate_rows(rows, flat=kernel in FLAT_ROW_KERNELS).items()}
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits.float().view(2, 64, -1)
        for row, start in ((0, 20), (1, 35)):
            alone = model(input_ids=ids[row:row + 1, start:].cuda(), use_cache=False).logits.float()[0]
            assert (packed[row, start:] - alone).abs().max() < tolerance, kernel
        leaked = model(input_ids=ids[:1].cuda(), use_cache=False).logits.float()[0, 20:]
        assert (leaked - packed[0, 20:]).abs().max() > 10 * tolerance, kernel


def _run(tiny_model_dir, tmp_path, **system):
    from cpt_studio.core.runs import create_run
    from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
    from cpt_studio.core.training import train

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    for name, value in system.items():
        setattr(config.system, name, value)
    config.schedule.max_steps, config.eval.interval, config.checkpoints.interval = 10, 10, 10
    run = create_run(config, tmp_path / "runs")
    assert train(run) == "finished"
    kernels = next(e["message"] for e in events_of(run, "log") if e["message"].startswith("kernels: "))
    return [e["loss"] for e in events_of(run, "step")], events_of(run, "step"), kernels


def test_a_run_on_the_gpu_uses_the_chosen_kernels_and_learns(tiny_model_dir, tmp_path):
    from cpt_studio.core.recipe import flash_attn_installed

    losses, steps, kernels = _run(tiny_model_dir, tmp_path)
    expected = "flash_attention_2" if flash_attn_installed() else "flex_attention"
    assert f"attention {expected}" in kernels and "AdamW fused" in kernels
    assert "gradient checkpointing off (the estimate without it" in kernels  # the tiny model fits
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(0 < e["mfu"] < 1 for e in steps), "the GPU's peak is known by its name"
    print(kernels, f"losses {losses[0]:.3f} -> {losses[-1]:.3f}")


@pytest.mark.parametrize("kernel", ["sdpa", "flex_attention"])
def test_each_kernel_trains_the_same(tiny_model_dir, tmp_path, kernel):
    """sdpa and flex_attention give the same losses (bf16: to 2%), so the kernel choice never
    changes what is learned."""
    losses, _, kernels = _run(tiny_model_dir, tmp_path / kernel, attention=kernel)
    reference, _, _ = _run(tiny_model_dir, tmp_path / f"{kernel}-eager", attention="eager")
    assert losses == pytest.approx(reference, rel=2e-2)


def test_a_compiled_run_on_the_gpu(tiny_model_dir, tmp_path):
    losses, _, kernels = _run(tiny_model_dir, tmp_path, compile=True)
    assert "torch.compile on" in kernels and losses[-1] < losses[0]


def test_liger_kernels_train_where_installed(tiny_model_dir, tmp_path):
    pytest.importorskip("liger_kernel")
    losses, _, kernels = _run(tiny_model_dir, tmp_path, fused_kernels="on")
    assert "Liger kernels on" in kernels and losses[-1] < losses[0]
