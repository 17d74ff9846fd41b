"""Generation side by side and checkpoint export, on tiny-model runs (full and LoRA): text
for the base and each checkpoint, kept with the run; greedy is deterministic; an exported
folder loads in plain transformers (or peft) and its card carries the run's numbers."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpt_studio.core.config import CheckpointConfig, MethodConfig, ScheduleConfig
from cpt_studio.core.export import export_checkpoint
from cpt_studio.core.generate import (
    GenerationSettings,
    compare_generations,
    generate,
    read_generations,
)
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
from cpt_studio.core.training import train

PROMPT = "The patient received"


def tiny_run(root, model_dir, kind: str):
    method = MethodConfig(kind="lora", lora_rank=4, lora_alpha=8) if kind == "lora" else MethodConfig()
    config = tiny_run_config(model_dir, root / "data", method=method,
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=6, warmup_ratio=0),
                             checkpoints=CheckpointConfig(interval=3, keep=3))
    config.eval.interval = 3
    run_dir = create_run(config, root / "runs")
    assert train(run_dir) == "finished"
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPT_STUDIO_HOME", str(root / "home"))
        return {kind: tiny_run(root / kind, tiny_model_dir, kind) for kind in ("full", "lora")}


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_base_and_checkpoints_generate_text_kept_with_the_run(runs, kind):
    run_dir = runs[kind]
    settings = GenerationSettings(max_new_tokens=8)
    outputs = compare_generations(run_dir, PROMPT, [3, 6], settings)
    assert list(outputs) == ["base", "step 3", "step 6"]
    assert all(text.strip() for text in outputs.values())
    again = compare_generations(run_dir, PROMPT, [6], settings)
    assert again["step 6"] == outputs["step 6"] and again["base"] == outputs["base"]  # greedy
    kept = read_generations(run_dir)[-2:]
    assert [k["outputs"] for k in kept] == [outputs, again]
    assert kept[0]["prompt"] == PROMPT and kept[0]["settings"]["max_new_tokens"] == 8
    assert kept[0]["settings"]["greedy"] is True and kept[0]["time"] > 0


def test_a_checkpoint_generates_what_its_own_weights_give(runs):
    """The checkpoint's text is the trained model's, not the base's: compare with loading it by hand."""
    checkpoint = RunPaths(runs["full"]).checkpoints / "checkpoint-6"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    expected_text = tokenizer.decode(expected[0, ids.shape[1]:], skip_special_tokens=True)
    assert generate(checkpoint, [PROMPT], max_new_tokens=6) == [expected_text]


def test_sampling_follows_the_seed(runs):
    checkpoint = RunPaths(runs["full"]).checkpoints / "checkpoint-6"
    def sample(seed):
        return generate(checkpoint, [PROMPT], max_new_tokens=12, greedy=False, temperature=1.5,
                        top_p=1.0, seed=seed)
    assert sample(1) == sample(1)
    assert len({sample(seed)[0] for seed in (1, 2, 3)}) > 1


def test_bad_settings_and_a_missing_checkpoint_are_refused_with_the_fix(runs):
    with pytest.raises(ValueError, match="temperature is 0"):
        generate(RunPaths(runs["full"]).checkpoints / "checkpoint-6", [PROMPT], greedy=False, temperature=0)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 4 \(kept: 0, 3, 6\)"):
        compare_generations(runs["full"], PROMPT, [4])


def test_full_export_loads_in_transformers_with_a_card_of_the_runs_numbers(runs, tmp_path):
    dest = export_checkpoint(runs["full"], 6, tmp_path / "export")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(dest), AutoTokenizer.from_pretrained(dest)
    trained = AutoModelForCausalLM.from_pretrained(RunPaths(runs["full"]).checkpoints / "checkpoint-6")
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert torch.equal(model(ids).logits, trained(ids).logits)
    assert not (dest / "optimizer.pt").exists()
    card = (dest / "README.md").read_text()
    [at_6] = [e for e in events_of(runs["full"], "eval") if e["step"] == 6]
    assert f"{at_6['domain_ppl']:.3f}" in card and f"{at_6['domain_gain']:+.2%}" in card
    assert "peak learning rate: 0.01" in card and "full weights" in card
    with pytest.raises(FileExistsError, match="not empty; choose a new or empty folder"):
        export_checkpoint(runs["full"], 6, dest)


@pytest.mark.parametrize("merge", [False, True])
def test_lora_export_as_adapter_or_merged(runs, tmp_path, merge):
    dest = export_checkpoint(runs["lora"], 6, tmp_path / "export", mode="merged" if merge else None)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    expected = generate(RunPaths(runs["lora"]).checkpoints / "checkpoint-6", [PROMPT], max_new_tokens=6)
    if merge:
        assert not (dest / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(dest)
        assert "merged in" in (dest / "README.md").read_text()
    else:
        from peft import AutoPeftModelForCausalLM

        assert (dest / "adapter_config.json").exists() and not (dest / "model.safetensors").exists()
        model = AutoPeftModelForCausalLM.from_pretrained(dest)
        assert "LoRA adapter" in (dest / "README.md").read_text()
    out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == expected[0]
    assert "LoRA r=4 alpha=8" in (dest / "README.md").read_text()


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_generate_and_export(runs, tmp_path):
    done = cli("generate", str(runs["full"]), "--prompt", PROMPT, "--checkpoints", "6",
               "--max-new-tokens", "4", "--json")
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == ["base", "step 6"]
    done = cli("export", str(runs["lora"]), "6", str(tmp_path / "out"), "--merge")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()
    again = cli("export", str(runs["lora"]), "6", str(tmp_path / "out"))
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("merge", [False, True])
def test_export_onto_a_full_disk_says_so_and_leaves_nothing_behind(runs, tmp_path, monkeypatch, capsys, merge):
    import errno
    from shutil import _ntuple_diskusage

    from cpt_studio.core import disk
    from cpt_studio.core.cli import main

    if merge:  # the size of a merged model is found when written: the write itself fails
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("cpt_studio.core.export._save_merged", full)
    else:
        monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: _ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert main(["export", str(runs["lora"]), "6", str(tmp_path / "out")] + (["--merge"] if merge else [])) == 2
    error = capsys.readouterr().err
    assert "export of checkpoint-6" in error and "choose another destination" in error
    assert list(tmp_path.iterdir()) == []  # no export folder, no half-written temp folder
