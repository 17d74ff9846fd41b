"""Weight interpolation between the base model and a checkpoint (cpt_studio.core.interpolate),
on tiny runs that really train: a full run on the distant corpus that forgets, and a LoRA run."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from cpt_studio.core.cli import main
from cpt_studio.core.config import (
    CheckpointConfig,
    EvalConfig,
    GuardConfig,
    MethodConfig,
    ScheduleConfig,
)
from cpt_studio.core.interpolate import (
    InterpolationCurve,
    InterpolationPoint,
    export_interpolated,
    format_curve,
    interpolation_curve,
    load_interpolator,
    point_summary,
    probe_accuracies,
)
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import write_distant_corpus
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
from cpt_studio.core.training import train

STEP = 15


@pytest.fixture(scope="module")
def forgetting_run(tmp_path_factory, tiny_model_dir):
    """20 steps on the domain alone (no replay) at LR 5e-3: general text gets much harder."""
    root = tmp_path_factory.mktemp("interpolate")
    config = tiny_run_config(tiny_model_dir, root / "data",
                             schedule=ScheduleConfig(peak_lr=5e-3, max_steps=20, warmup_ratio=0),
                             eval=EvalConfig(interval=5, heldout_count=8),
                             checkpoints=CheckpointConfig(interval=5, keep=4),
                             guard=GuardConfig(enabled=False))
    write_distant_corpus(root / "data")
    config.corpus.replay_ratio = 0.0
    run_dir = create_run(config, root / "runs")
    assert train(run_dir) == "finished"
    return run_dir


def _evals(run_dir) -> dict[int, dict]:
    return {e["step"]: e for e in events_of(run_dir, "eval")}


def test_the_curve_runs_from_the_base_to_the_checkpoint_and_finds_a_better_trade(forgetting_run):
    curve = interpolation_curve(forgetting_run, STEP, [0, 0.25, 0.5, 0.75, 1])
    evals = _evals(forgetting_run)
    base, end = curve.point(0).fields, curve.point(1).fields
    for name in ("domain", "general"):  # the ends are the run's own evaluations
        assert base[f"{name}_ppl"] == pytest.approx(evals[0][f"{name}_ppl"], rel=1e-6)
        assert end[f"{name}_ppl"] == pytest.approx(evals[STEP][f"{name}_ppl"], rel=1e-5)
    assert curve.point(0).domain_gain == pytest.approx(0, abs=1e-6)
    assert curve.point(1).forgetting == pytest.approx(evals[STEP]["forgetting"], rel=1e-4)
    assert curve.point(1).domain_gain == pytest.approx(evals[STEP]["domain_gain"], rel=1e-4)

    checkpoint = curve.point(1)
    assert checkpoint.forgetting > 0.05 and checkpoint.domain_gain > 0.05  # the run forgets
    better = [p for p in curve.points if p.forgetting < checkpoint.forgetting
              and p.domain_gain > checkpoint.domain_gain / 2]
    assert better, [(p.alpha, p.domain_gain, p.forgetting) for p in curve.points]

    saved = InterpolationCurve.load(forgetting_run, STEP)
    assert saved == curve and RunPaths(forgetting_run).interpolation(STEP).is_file()


def test_the_exported_model_holds_the_interpolated_weights(forgetting_run, tiny_model_dir, tmp_path):
    folder = export_interpolated(forgetting_run, STEP, 0.5, tmp_path / "half")
    exported = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    end = AutoModelForCausalLM.from_pretrained(RunPaths(forgetting_run).checkpoint(STEP))
    name = "model.layers.0.mlp.up_proj.weight"
    weights = [dict(m.named_parameters())[name] for m in (base, end, exported)]
    assert torch.allclose(weights[2], torch.lerp(weights[0], weights[1], 0.5), atol=1e-7)
    assert not torch.allclose(weights[0], weights[1], atol=1e-4)  # training moved it
    assert "## Interpolation" in (folder / "README.md").read_text()


def test_the_command_prints_the_table(forgetting_run, capsys):
    assert main(["interpolate", str(forgetting_run), "--checkpoint", str(STEP), "--alpha", "0,1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["alpha", "domain", "ppl"]
    assert [line.split()[0] for line in lines[2:]] == ["0", "1"]
    assert main(["interpolate", str(forgetting_run), "--checkpoint", str(STEP), "--alpha", "a"]) == 2
    assert "give numbers separated by commas" in capsys.readouterr().err


def test_lora_interpolation_equals_the_merged_weights(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=4, warmup_ratio=0),
                             eval=EvalConfig(interval=4, heldout_count=8),
                             checkpoints=CheckpointConfig(interval=4, keep=1),
                             method=MethodConfig(kind="lora", lora_rank=4, lora_alpha=8),
                             guard=GuardConfig(enabled=False))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    interpolator = load_interpolator(run_dir, 4)
    assert interpolator.method == "lora"
    ids = torch.tensor([[5, 17, 40, 99, 120, 7, 64, 3]])

    def merged_at(alpha: float):
        interpolator.set_alpha(alpha)
        return copy.deepcopy(interpolator.model).merge_and_unload()

    ends = [merged_at(0.0), merged_at(1.0)]
    interpolator.set_alpha(0.3)
    scaled = interpolator.model(input_ids=ids).logits
    merged = merged_at(0.3)
    for name, weight in merged.named_parameters():
        start, end = (dict(m.named_parameters())[name] for m in ends)
        assert torch.allclose(weight, start + 0.3 * (end - start), atol=1e-6), name
    assert not torch.allclose(ends[0].model.layers[0].self_attn.q_proj.weight,
                              ends[1].model.layers[0].self_attn.q_proj.weight, atol=1e-5)
    assert torch.allclose(merged(input_ids=ids).logits, scaled, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert torch.equal(dict(ends[0].named_parameters())["model.layers.1.mlp.down_proj.weight"],
                       dict(base.named_parameters())["model.layers.1.mlp.down_proj.weight"])


def test_probe_accuracies_per_alpha_are_in_the_table_and_the_summary():
    """A run with probes scores them at each α (probe_fields: `{task}_acc`): the table has a
    column per probe task, a point's summary a line."""
    fields = {"domain_ppl": 9.0, "general_ppl": 11.0, "domain_gain": 0.1, "forgetting": 0.1,
              "probes_cloze_acc": 0.5}
    curve = InterpolationCurve(20, "full", {"domain_ppl": 10.0, "general_ppl": 10.0},
                               [InterpolationPoint(0.5, fields)])
    header, row = format_curve(curve).splitlines()
    assert header.split()[-2:] == ["probes_cloze", "acc"] and row.split()[-1] == "50.0%"
    assert probe_accuracies(curve.points[0]) == {"probes_cloze": 0.5}
    assert point_summary(curve.points[0], 20).splitlines() == [
        "α = 0.5 between the base model and checkpoint-20", "domain gain +10.00%, forgetting +10.00%",
        "domain perplexity 9.000", "general perplexity 11.000", "probes_cloze accuracy 50.0%"]
