"""EWC: the Fisher, the parameter groups, the penalty and its gradient, its cache, and a run
that logs the penalty beside the loss."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from cpt_studio.core.config import (
    CheckpointConfig,
    EwcConfig,
    MethodConfig,
    RunConfig,
    ScheduleConfig,
)
from cpt_studio.core.ewc import (
    EwcPenalty,
    EwcState,
    compute_fisher,
    fisher_cache_dir,
    group_parameters,
    normalise,
    weights_fingerprint,
)
from cpt_studio.core.run_folder import list_checkpoints
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
from cpt_studio.core.training import train


def tiny_llama(seed: int = 0, tied: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied))


def three_rows() -> list[dict]:
    """Three packed rows of 12 tokens; the last ends in padding (labels -100)."""
    generator = torch.Generator().manual_seed(1)
    rows = []
    for n in range(3):
        ids = torch.randint(0, 64, (12,), generator=generator)
        labels = ids.clone()
        if n == 2:
            labels[8:] = -100
        rows.append({"input_ids": ids, "labels": labels, "position_ids": torch.arange(12)})
    return rows


def test_the_fisher_is_the_mean_of_per_sequence_squared_gradients():
    model, rows = tiny_llama(), three_rows()
    params = group_parameters(model, "trainable")
    fisher = compute_fisher(model, rows, params)
    assert all(p.grad is None for p in model.parameters())  # leaves no gradients behind
    assert all(p.requires_grad for p in model.parameters()) and model.training

    direct = {name: torch.zeros_like(p) for name, p in params.items()}
    batch_grad = {name: torch.zeros_like(p) for name, p in params.items()}
    for row in rows:  # one sequence at a time, written out by hand
        model.zero_grad()
        loss = model(input_ids=row["input_ids"][None], labels=row["labels"][None],
                     position_ids=row["position_ids"][None]).loss
        loss.backward()
        for name, p in params.items():
            direct[name] += p.grad ** 2 / 3
            batch_grad[name] += p.grad / 3
    for name in params:
        torch.testing.assert_close(fisher[name], direct[name], rtol=1e-5, atol=1e-12)
    # ... which is not the square of the batch's mean gradient (the cheap wrong Fisher)
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.allclose(fisher[name], batch_grad[name] ** 2, rtol=0.1)


@pytest.mark.parametrize("group, expected", [
    ("attention", {"q_proj", "k_proj", "v_proj", "o_proj"}),
    ("mlp", {"gate_proj", "up_proj", "down_proj"}),
    ("embeddings", {"embed_tokens"}),
])
def test_groups_pick_their_weights(group, expected):
    names = group_parameters(tiny_llama(), group)
    assert {name.split(".")[-2] for name in names} == expected
    assert len(group_parameters(tiny_llama(), "trainable")) == len(list(tiny_llama().parameters()))


def test_embeddings_group_has_both_matrices_when_untied():
    names = set(group_parameters(tiny_llama(tied=False), "embeddings"))
    assert names == {"model.embed_tokens.weight", "lm_head.weight"}


def test_an_empty_group_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="holds no trainable weight.*choose 'trainable'"):
        group_parameters(tiny_llama(), "lora")


def test_lora_group_holds_the_adapters_and_their_a_matrices_get_zero_fisher():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    params = group_parameters(model, "lora")
    assert params and all("lora_" in name for name in params)
    assert set(group_parameters(model, "trainable")) == set(params)
    attention = group_parameters(model, "attention")
    assert attention and all(".q_proj.lora_" in name for name in attention)
    fisher = compute_fisher(model, three_rows(), params)
    a = [f for name, f in fisher.items() if "lora_A" in name]
    b = [f for name, f in fisher.items() if "lora_B" in name]
    assert all(float(f.abs().max()) == 0 for f in a)  # B = 0: the loss does not depend on A
    assert all(float(f.sum()) > 0 for f in b)


def test_mean_normalisation_gives_mean_one_and_raw_keeps_values():
    fisher = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[0.0, 4.0]])}
    scaled = normalise(fisher, "mean")
    total = sum(float(f.sum()) for f in scaled.values())
    assert total / 4 == pytest.approx(1.0)
    assert scaled["a"].tolist() == pytest.approx([0.5, 1.5])
    assert normalise(fisher, "raw") is fisher
    assert float(normalise({"a": torch.zeros(3)}, "mean")["a"].sum()) == 0


def _state_for(model, fisher_scale: float = 1.0) -> EwcState:
    params = group_parameters(model, "trainable")
    generator = torch.Generator().manual_seed(3)
    fisher = {name: torch.rand(p.shape, generator=generator) * fisher_scale for name, p in params.items()}
    reference = {name: p.detach().clone() for name, p in params.items()}
    return EwcState(fisher, reference, sequences=3, cached=False)


def test_the_penalty_is_zero_at_the_reference_and_follows_the_formula_after_a_move():
    model = tiny_llama()
    state = _state_for(model)
    ewc = EwcPenalty(model, state, strength=7.0)
    assert float(ewc.penalty()) == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    with torch.no_grad():
        expected = 0.5 * 7.0 * sum(float((state.fisher[n] * (p - state.reference[n]) ** 2).sum())
                                   for n, p in model.named_parameters())
    assert float(ewc.penalty()) == pytest.approx(expected, rel=1e-5)
    assert expected > 0


def test_the_added_gradient_is_the_penalty_gradient():
    model = tiny_llama()
    state = _state_for(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    penalty = 0.5 * 3.0 * sum((state.fisher[n] * (p - state.reference[n]) ** 2).sum()
                              for n, p in model.named_parameters())
    expected = torch.autograd.grad(penalty, list(model.parameters()))
    model.zero_grad()
    for p in model.parameters():  # gradients already there (the data loss's) are added to
        p.grad = torch.ones_like(p)
    value = EwcPenalty(model, state, strength=3.0).add_gradient()
    assert float(value) == pytest.approx(penalty.item(), rel=1e-5)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, 1 + g, rtol=1e-5, atol=1e-8)


def test_the_fingerprint_changes_with_the_weights():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    assert weights_fingerprint(a) == weights_fingerprint(tiny_llama(seed=0))
    assert weights_fingerprint(a) != weights_fingerprint(b)


@pytest.mark.parametrize("changes, problem", [
    ({"strength": -1.0}, "cannot be negative"),
    ({"sequences": 0}, "at least 1 general sequence"),
    ({"group": "heads"}, "group 'heads' is unknown"),
    ({"normalisation": "max"}, "normalisation 'max' is unknown"),
])
def test_ewc_settings_are_validated(changes, problem):
    assert any(problem in p for p in EwcConfig(enabled=True, **changes).validate())


def test_ewc_needs_general_text_and_the_lora_group_needs_lora(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data", ewc=EwcConfig(enabled=True, group="lora"))
    assert any("group 'lora' needs the LoRA method" in p for p in config.validate())
    config.corpus.general, config.corpus.replay_ratio = [], 0.0
    assert any("the Fisher is measured on general text" in p for p in config.validate())
    assert RunConfig.from_json(config.to_json()).ewc == config.ewc


def test_a_run_with_ewc_logs_the_penalty_and_caches_the_fisher(tmp_path, tiny_model_dir):
    strength = 50.0
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             ewc=EwcConfig(enabled=True, strength=strength, sequences=6),
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=3, warmup_ratio=0),
                             checkpoints=CheckpointConfig(interval=1, keep=5))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"

    steps = events_of(run_dir, "step")
    assert steps[0]["ewc_penalty"] == 0.0  # the first step starts at theta*
    [cached] = list(fisher_cache_dir().glob("*.safetensors"))
    fisher = normalise(load_file(cached), "mean")
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after_one = AutoModelForCausalLM.from_pretrained(
        next(p for p in list_checkpoints(run_dir) if p.name == "checkpoint-1"))
    theta_star, theta_1 = dict(start.named_parameters()), dict(after_one.named_parameters())
    with torch.no_grad():
        expected = 0.5 * strength * sum(float((f * (theta_1[n] - theta_star[n]) ** 2).sum())
                                        for n, f in fisher.items())
    assert expected > 0
    assert steps[1]["ewc_penalty"] == pytest.approx(expected, rel=1e-4)  # step 2 runs at theta_1
    progress = [e for e in events_of(run_dir, "status") if e.get("phase") == "fisher"]
    assert progress[-1]["message"].startswith("EWC: Fisher computed (6 sequences)")
    assert any(e.get("done") == 6 and e.get("total") == 6 for e in progress)

    again = create_run(config, tmp_path / "runs")  # same model, corpus and settings
    train(again)
    assert [e for e in events_of(again, "status") if e.get("phase") == "fisher"][-1][
        "message"].startswith("EWC: Fisher from the cache")
    assert [e["ewc_penalty"] for e in events_of(again, "step")] == pytest.approx(
        [e["ewc_penalty"] for e in steps], rel=1e-5)


def test_ewc_on_lora_holds_the_adapters_only(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             method=MethodConfig(kind="lora", lora_rank=4, lora_alpha=8),
                             ewc=EwcConfig(enabled=True, group="lora", sequences=4, strength=10.0),
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=3, warmup_ratio=0))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    [cached] = list(fisher_cache_dir().glob("*.safetensors"))
    names = set(load_file(cached))
    assert names and all("lora_" in name for name in names)
    penalties = [e["ewc_penalty"] for e in events_of(run_dir, "step")]
    assert penalties[0] == 0 and penalties[-1] > 0


@pytest.mark.parametrize("method, group, count", [
    ("full", "trainable", lambda m: sum(p.numel() for p in m.parameters())),
    ("full", "attention", lambda m: sum(p.numel() for n, p in m.named_parameters() if "self_attn" in n)),
    ("full", "embeddings", lambda m: m.get_input_embeddings().weight.numel()),  # tied: one matrix
    ("lora", "lora", None),
    ("lora", "mlp", None),
])
def test_the_plan_counts_ewc_memory_for_its_group(tmp_path, tiny_model_dir, method, group, count):
    from cpt_studio.core.plan import plan_run

    config = tiny_run_config(tiny_model_dir, tmp_path / "data", ewc=EwcConfig(enabled=True, group=group),
                             method=MethodConfig(kind=method, lora_rank=4))
    plan = plan_run(config)
    if method == "full":
        expected = count(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    else:  # the adapters of the group's modules: rank x (in + out) each, never the base
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, target_modules=list(config.method.target_modules)))
        expected = sum(p.numel() for p in group_parameters(model, group).values())
        assert expected < plan.parameters / 2
    assert plan.memory.ewc == 8 * expected
    config.ewc.enabled = False
    assert plan_run(config).memory.ewc == 0
