"""Per-group learning rates (schedule.embedding_lr_scale): the embeddings and the output layer in
an optimizer group of their own rate, scheduled alike, on a tiny run that really trains."""

import pytest
import torch
from transformers import TrainerCallback

import cpt_studio.core.training as training
from cpt_studio.core.config import MethodConfig, RunConfig, ScheduleConfig, TokenizerConfig
from cpt_studio.core.recipe import (
    EMBEDDING_GROUP,
    NEW_TOKEN_GROUP,
    NEW_TOKEN_RATIO,
    apply_method,
    embedding_parameters,
    group_rates,
    learning_rates_text,
    lora_new_token_parameters,
    split_embedding_group,
    split_new_token_rows,
)
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config

PEAK, SCALE, STEPS = 1e-3, 0.1, 6
EXTEND = TokenizerConfig(extend=True, vocab_size=600, min_frequency=5, max_new_tokens=40)


class Rates(TrainerCallback):
    """Each optimizer step's groups as the optimizer holds them just before it steps."""

    def __init__(self):
        self.steps: list[list[dict]] = []
        self.embeddings: list = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, model=None, **kwargs):
        self.steps.append([{"name": g.get("name"), "lr": g["lr"], "ids": {id(p) for p in g["params"]},
                            "ratio": g.get(NEW_TOKEN_RATIO)} for g in optimizer.param_groups])
        self.embeddings = {id(p) for p in embedding_parameters(model)}


@pytest.fixture
def recorded(monkeypatch):
    rates, build = Rates(), training.build_trainer

    def build_with_recorder(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(rates)
        return trainer
    monkeypatch.setattr(training, "build_trainer", build_with_recorder)
    return rates


def _run(tmp_path, tiny_model_dir, scale: float) -> RunConfig:
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=PEAK, max_steps=STEPS, warmup_ratio=0.34,
                                                     embedding_lr_scale=scale))
    run_dir = create_run(config, tmp_path / "runs")
    assert training.train(run_dir) == "finished"
    return run_dir


def test_the_embeddings_train_at_their_own_rate_at_every_step(tmp_path, tiny_model_dir, recorded):
    run_dir = _run(tmp_path, tiny_model_dir, SCALE)
    assert len(recorded.steps) == STEPS
    for groups in recorded.steps:
        own = [g for g in groups if g["name"] == EMBEDDING_GROUP]
        others = [g for g in groups if g["name"] != EMBEDDING_GROUP]
        assert len(own) == 1 and own[0]["ids"] == recorded.embeddings  # the tied embedding matrix
        assert all(not (g["ids"] & recorded.embeddings) for g in others)
        assert {g["lr"] for g in others} == {groups[0]["lr"]} and groups[0]["name"] is None
        assert own[0]["lr"] == pytest.approx(SCALE * groups[0]["lr"], rel=1e-12)
    peak_rates = [groups[0]["lr"] for groups in recorded.steps]
    assert max(peak_rates) == pytest.approx(PEAK) and len(set(peak_rates)) == STEPS  # warmup, decay

    steps = events_of(run_dir, "step")
    assert [e["lr"] for e in steps] == pytest.approx(peak_rates, rel=1e-12)
    assert [e["embedding_lr"] for e in steps] == pytest.approx([SCALE * r for r in peak_rates], rel=1e-12)


def test_without_a_multiple_the_optimizer_keeps_the_trainers_groups(tmp_path, tiny_model_dir, recorded):
    run_dir = _run(tmp_path, tiny_model_dir, 1.0)
    assert all(g["name"] is None for g in recorded.steps[0]) and len(recorded.steps[0]) == 2
    assert all("embedding_lr" not in e for e in events_of(run_dir, "step"))


def test_the_setting_is_validated_and_described(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.schedule.embedding_lr_scale = 0
    assert any("embedding LR multiple 0 must be above 0" in p for p in config.validate())
    config.schedule.embedding_lr_scale, config.method = 0.1, MethodConfig(kind="lora")
    assert any("LoRA leaves frozen" in p for p in config.validate())
    config.tokenizer.extend = True
    assert not any("LoRA leaves frozen" in p for p in config.validate())
    assert learning_rates_text(config) == (f"peak {config.schedule.peak_lr:g}; embeddings and output "
                                           f"layer x0.1 ({config.schedule.peak_lr * 0.1:g}), scheduled alike")
    config.schedule.embedding_lr_scale = 1.0
    assert learning_rates_text(config) == ""


# -- the rows an extended tokenizer adds (schedule.new_token_lr_scale) ------------------------

class Vocabulary(torch.nn.Module):
    """An embedding matrix (whose rows the new tokens' are) and a layer on top."""

    def __init__(self, rows: int = 12, width: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(rows, width)
        self.mix = torch.nn.Linear(width, width)

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return None


def _loss(weight, mix, ids):
    """A tied-head language-model-like loss of the matrix `weight`."""
    return (mix(torch.nn.functional.embedding(ids, weight)) @ weight.T).logsumexp(-1).mean()


def test_scaling_the_new_rows_step_is_exactly_adamw_at_their_own_rate():
    """The rows' update scaled after each step equals AdamW run on the rows as a parameter of
    their own at lr x ratio, weight decay included (the rest of the matrix unchanged)."""
    new, lr, scale, ids = [9, 10, 11], 1e-2, 5.0, torch.tensor([[1, 9, 3, 10], [11, 2, 9, 0]])
    scaled = Vocabulary()
    optimizer = torch.optim.AdamW(scaled.parameters(), lr=lr, weight_decay=0.1)
    split_new_token_rows(optimizer, scaled, lr, scale, new)
    assert optimizer.param_groups[0][NEW_TOKEN_RATIO] == scale

    apart = Vocabulary()  # the same model, the new rows a parameter of their own
    old_rows = torch.nn.Parameter(apart.embed.weight.detach()[:9].clone())
    new_rows = torch.nn.Parameter(apart.embed.weight.detach()[9:].clone())
    reference = torch.optim.AdamW([{"params": [old_rows, *apart.mix.parameters()]},
                                   {"params": [new_rows], "lr": lr * scale}], lr=lr, weight_decay=0.1)
    for _ in range(4):
        for opt, weight, mix in ((optimizer, lambda: scaled.embed.weight, scaled.mix),
                                 (reference, lambda: torch.cat([old_rows, new_rows]), apart.mix)):
            opt.zero_grad()
            _loss(weight(), mix, ids).backward()
            opt.step()
    assert not torch.allclose(new_rows, apart.embed.weight[9:])  # they moved
    assert torch.allclose(scaled.embed.weight[9:], new_rows, atol=1e-6)
    assert torch.allclose(scaled.embed.weight[:9], old_rows, atol=1e-6)
    assert group_rates(optimizer) == {"new_token_lr": pytest.approx(lr * scale)}


def test_new_token_rows_train_at_their_own_rate_at_every_step(tmp_path, tiny_model_dir, recorded):
    """A full run with an extended tokenizer: the embeddings at 0.1 x the peak, the new rows at
    5 x; the logged rates are the optimizer's at each step."""
    config = tiny_run_config(tiny_model_dir, tmp_path / "data", tokenizer=EXTEND,
                             schedule=ScheduleConfig(peak_lr=PEAK, max_steps=3, warmup_ratio=0.34,
                                                     embedding_lr_scale=SCALE, new_token_lr_scale=5.0))
    run_dir = create_run(config, tmp_path / "runs")
    assert training.train(run_dir) == "finished"
    steps = events_of(run_dir, "step")
    assert len(recorded.steps) == len(steps) == 3
    for groups, event in zip(recorded.steps, steps, strict=True):
        own = next(g for g in groups if g["name"] == EMBEDDING_GROUP)
        assert own["ratio"] == pytest.approx(5.0 / SCALE)
        assert event["embedding_lr"] == pytest.approx(own["lr"], rel=1e-12)
        assert event["new_token_lr"] == pytest.approx(own["lr"] * own["ratio"], rel=1e-12)
        assert event["new_token_lr"] == pytest.approx(5.0 * groups[0]["lr"], rel=1e-12)
    assert "new token rows x5" in learning_rates_text(config)


def test_lora_new_rows_are_a_group_of_their_own(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    config = RunConfig(method=MethodConfig(kind="lora", target_modules=["q_proj"]))
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config, [5, 6])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=PEAK)
    split_embedding_group(optimizer, model, PEAK, SCALE)
    split_new_token_rows(optimizer, model, PEAK, 5.0, [5, 6])
    rows = {id(p) for p in lora_new_token_parameters(model)}
    assert rows and [g.get("name") for g in optimizer.param_groups] == [None, NEW_TOKEN_GROUP]
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == rows
    assert group_rates(optimizer) == {"new_token_lr": pytest.approx(5.0 * PEAK)}


def test_the_new_token_multiple_needs_an_extension(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.schedule.new_token_lr_scale = 5.0
    assert any("acts on the rows a tokenizer extension adds" in p for p in config.validate())
    config.tokenizer.extend = True
    assert not any("new-token" in p for p in config.validate())
    config.schedule.new_token_lr_scale = 0
    assert any("new-token LR multiple 0 must be above 0" in p for p in config.validate())
