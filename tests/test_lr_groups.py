"""Per-group learning rates (schedule.embedding_lr_scale): the embeddings and the output layer in
an optimizer group of their own rate, scheduled alike, on a tiny run that really trains."""

import pytest
from transformers import TrainerCallback

import cpt_studio.core.training as training
from cpt_studio.core.config import MethodConfig, RunConfig, ScheduleConfig
from cpt_studio.core.recipe import EMBEDDING_GROUP, embedding_parameters, learning_rates_text
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config

PEAK, SCALE, STEPS = 1e-3, 0.1, 6


class Rates(TrainerCallback):
    """Each optimizer step's groups as the optimizer holds them just before it steps."""

    def __init__(self):
        self.steps: list[list[dict]] = []
        self.embeddings: list = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, model=None, **kwargs):
        self.steps.append([{"name": g.get("name"), "lr": g["lr"], "ids": {id(p) for p in g["params"]}}
                           for g in optimizer.param_groups])
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
