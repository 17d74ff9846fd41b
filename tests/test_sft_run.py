"""Instruction tuning as a stage of the same run (cpt_studio.core.sft_run): chained from a CPT
checkpoint, it starts from exactly those weights, records its parent, saves its template with
the run and every checkpoint, lowers the held-out response loss and changes the answers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpt_studio.core.config import (
    CheckpointConfig,
    EvalConfig,
    MethodConfig,
    RunConfig,
    ScheduleConfig,
)
from cpt_studio.core.data import CorpusChangedError
from cpt_studio.core.export import export_checkpoint
from cpt_studio.core.generate import load_for_generation
from cpt_studio.core.plan import format_plan, plan_run
from cpt_studio.core.run_folder import RunPaths, checkpoint_config, read_json
from cpt_studio.core.runs import create_run
from cpt_studio.core.sft_data import SftDataError, generation_prompt
from cpt_studio.core.sft_run import SFT_SCHEDULE, create_sft_run, parent_of, sft_config
from cpt_studio.core.testing.run_helpers import history, tiny_run_config
from cpt_studio.core.training import train

PAIRS = [("Which drug did the patient receive?", "tacrolimus twice daily."),
         ("How is the weather today?", "sunny with a light breeze."),
         ("Who reviewed the judgment?", "a court of appeal."),
         ("Where did the children play?", "in the park."),
         ("When did the committee meet?", "on Tuesday."),
         ("What falls with age?", "renal clearance."),
         ("What is the bioavailability?", "about twenty five percent."),
         ("What are calcineurin inhibitors?", "cyclosporine and tacrolimus."),
         ("What did the parents talk about?", "the news."),
         ("What was measured?", "the trough level.")]


def _parent(tmp_path, model_dir, method: str):
    """A finished two-step CPT run of the tiny model, full or LoRA."""
    config = tiny_run_config(model_dir, tmp_path / "corpus",
                             method=MethodConfig(kind=method, lora_rank=4, lora_alpha=8),
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=2),
                             checkpoints=CheckpointConfig(interval=2, keep=2),
                             eval=EvalConfig(interval=2, heldout_count=4, max_tokens=2000))
    config.batch.grad_accum = 1
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    return run_dir


def _sft(parent, tmp_path, method: str, steps: int, lr: float, guard: bool = False, replay: float = 0.0,
         eval_every: int | None = None):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
    config = sft_config(parent, 2, [str(data)], method=method, replay_ratio=replay)
    config.schedule.max_steps, config.schedule.peak_lr, config.schedule.warmup_ratio = steps, lr, 0.0
    config.batch.seq_len, config.batch.micro_batch = 128, 4
    config.eval = EvalConfig(interval=eval_every or steps, heldout_count=2, max_tokens=2000)
    config.checkpoints = CheckpointConfig(interval=steps, keep=2)
    config.guard.enabled, config.guard.threshold, config.guard.spike_factor = guard, 9.0, 0.0
    run_dir = create_sft_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    return run_dir


def _answer(source, question: str) -> str:
    model, tokenizer = load_for_generation(source)
    model.eval()
    prompt = generation_prompt(tokenizer, [{"role": "user", "content": question}])
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_sft_from_a_full_checkpoint_starts_there_lowers_the_response_loss_and_learns_answers(tmp_path, tiny_model_dir):
    parent = _parent(tmp_path, tiny_model_dir, "full")
    run_dir = _sft(parent, tmp_path, "full", steps=60, lr=1e-2, guard=True, eval_every=10)
    paths, config = RunPaths(run_dir), read_json(RunPaths(run_dir).config)
    assert parent_of(run_dir) == (str(parent), 2)
    assert config["stage"] == "sft" and config["model"]["name_or_path"] == str(RunPaths(parent).checkpoint(2))
    # checkpoint-0, the guard's starting model, is the parent's checkpoint tensor for tensor
    start, cpt = (load_file(p / "model.safetensors") for p in (paths.checkpoint(0), RunPaths(parent).checkpoint(2)))
    assert start.keys() == cpt.keys() and all(torch.equal(start[k], cpt[k]) for k in cpt)
    # the template is saved with the run and in every checkpoint's tokenizer
    template = paths.chat_template.read_text()
    assert "### Response:" in template
    assert AutoTokenizer.from_pretrained(paths.checkpoint(60)).chat_template == template
    evals = {e["step"]: e for e in history(run_dir, "eval")}
    # held-out responses only (their end-of-text token too, not the template's text after it): it
    # falls, then rises as 8 training pairs at 1e-2 are learned by heart (the answers below)
    assert min(e["domain_loss"] for step, e in evals.items() if step) < 0.9 * evals[0]["domain_loss"]
    assert "general_ppl" in evals[60] and "forgetting" in evals[60]
    held = {json.loads(line)["messages"][0]["content"] for line in paths.heldout("sft").read_text().splitlines()}
    question, answer = next((q, a) for q, a in PAIRS if q not in held)
    before, after = _answer(paths.checkpoint(0), question), _answer(paths.checkpoint(60), question)
    assert after.strip() == answer and before.strip() != answer


def test_sft_lora_on_a_lora_checkpoint_trains_on_the_merged_cpt_model(tmp_path, tiny_model_dir):
    from peft import PeftModel

    parent = _parent(tmp_path, tiny_model_dir, "lora")
    run_dir = _sft(parent, tmp_path, "lora", steps=2, lr=1e-3, replay=0.5)
    paths = RunPaths(run_dir)
    assert [e["replay_fraction"] for e in history(run_dir, "step")] == [0.5, 0.5]  # general replay
    assert read_json(paths.config)["model"]["name_or_path"] == str(paths.start_model)
    # start_model/ is the CPT adapter merged into the base, tensor for tensor
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    merged = PeftModel.from_pretrained(base, RunPaths(parent).checkpoint(2)).merge_and_unload().state_dict()
    start = AutoModelForCausalLM.from_pretrained(paths.start_model).state_dict()
    assert start.keys() == merged.keys() and all(torch.equal(start[k], merged[k]) for k in merged)
    untouched = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()  # merging changed `base`
    assert not torch.equal(start["model.layers.0.self_attn.q_proj.weight"],
                           untouched["model.layers.0.self_attn.q_proj.weight"])
    # the SFT adapter's checkpoint loads on that merged model, and its run config names it
    assert read_json(checkpoint_config(paths.checkpoint(2)))["model"]["name_or_path"] == str(paths.start_model)
    chained, _ = load_for_generation(paths.checkpoint(2))
    under = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
             for k, v in chained.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(under[k], start[k]) for k in start)
    # exported merged (CPT and SFT adapters both in), it loads in plain transformers and computes
    # what the chained model computes
    folder = export_checkpoint(run_dir, 2, tmp_path / "export", mode="merged")
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = AutoTokenizer.from_pretrained(folder)("The patient received", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, chained.eval()(ids).logits, atol=1e-5)


def test_an_sft_run_with_bad_data_is_refused_before_a_folder_exists(tmp_path, tiny_model_dir):
    parent = _parent(tmp_path, tiny_model_dir, "full")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Q?", "answer": "A."}\n')
    config = sft_config(parent, 2, [str(bad)])
    assert {k: getattr(config.schedule, k) for k in SFT_SCHEDULE} == SFT_SCHEDULE
    assert sft_config(parent, 2, [str(bad)], method="lora").schedule.peak_lr == 2e-4  # LoRA's usual rate
    assert config.corpus.domain == [] and config.validate() == []
    extended = RunConfig.load(RunPaths(parent).config)  # a parent that extended its tokenizer
    extended.tokenizer.extend, extended.schedule.new_token_lr_scale = True, 10.0
    RunPaths(parent).config.write_text(extended.to_json())
    config = sft_config(parent, 2, [str(bad)])
    assert not config.tokenizer.extend and config.schedule.new_token_lr_scale is None
    assert config.validate() == []
    runs = len(list((tmp_path / "runs").iterdir()))
    with pytest.raises(SftDataError, match=rf"{bad} line 1: no field 'response' \(fields: answer, instruction\)"):
        create_sft_run(config, tmp_path / "runs")
    assert len(list((tmp_path / "runs").iterdir())) == runs
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 7 \\(kept: 0, 2\\)"):
        sft_config(parent, 7, [str(bad)])


def test_cpt_studio_sft_chains_a_run_to_the_default_checkpoint_and_refuses_bad_data(tmp_path, tiny_model_dir, capsys):
    from cpt_studio.core.cli import main
    from cpt_studio.core.runs import runs_dir

    parent = _parent(tmp_path, tiny_model_dir, "full")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Q?", "response": "A."}\nnot json\n')
    assert main(["sft", str(parent), "--data", str(bad)]) == 2
    assert f"{bad} line 2: invalid JSON" in capsys.readouterr().err
    assert main(["sft", str(parent), "--data", str(bad), "--skip-bad", "--preview", "1"]) == 0  # the rest trains
    shown = capsys.readouterr().out
    assert "1 examples" in shown and f"left out: {bad} line 2: invalid JSON" in shown
    good = tmp_path / "qa.jsonl"
    good.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in PAIRS))
    assert main(["sft", str(parent), "--checkpoint", "2", "--data", str(good), "--instruction-field", "q",
                 "--response-field", "a", "--preview", "1"]) == 0
    shown = capsys.readouterr().out
    assert "10 examples; template: the plain template" in shown and f"⟦{PAIRS[0][1]}<|endoftext|>" in shown
    assert not runs_dir().exists() or not any(runs_dir().iterdir())  # a preview creates no run
    assert main(["sft", str(parent), "--data", str(good), "--instruction-field", "q", "--response-field", "a",
                 "--max-steps", "1", "--name", "pharma SFT"]) == 0
    assert "checkpoint: step 2" in capsys.readouterr().out
    [run_dir] = [d for d in runs_dir().iterdir() if d.is_dir()]
    config = read_json(RunPaths(run_dir).config)
    assert config["name"] == "pharma SFT" and config["sft"]["instruction_field"] == "q"
    assert parent_of(run_dir) == (str(parent), 2)
    assert history(run_dir, "status")[-1]["state"] == "finished"
    assert RunPaths(run_dir).checkpoint(1).is_dir()


def test_a_resumed_sft_run_keeps_its_template_and_its_held_out_examples(tmp_path, tiny_model_dir):
    import shutil

    parent = _parent(tmp_path, tiny_model_dir, "full")
    run_dir = _sft(parent, tmp_path, "full", steps=2, lr=1e-3)
    paths = RunPaths(run_dir)
    held = paths.heldout("sft").read_text()
    paths.chat_template.write_text(paths.chat_template.read_text().replace("### Response:", "### Answer:"))
    shutil.rmtree(paths.checkpoint(2))
    assert train(run_dir, resume=True) == "finished"  # no checkpoint left: it starts over, in the same folder
    assert paths.heldout("sft").read_text() == held
    assert "### Answer:" in AutoTokenizer.from_pretrained(paths.checkpoint(2)).chat_template  # the run's own
    data = tmp_path / "qa.jsonl"
    data.write_text(data.read_text() + json.dumps({"instruction": "New?", "response": "Yes."}) + "\n")
    with pytest.raises(CorpusChangedError, match="the instruction data changed"):
        train(run_dir, resume=True)


def test_a_new_pass_is_named_in_the_runs_words():
    """The mixer's "pass N begins" lines call an SFT run's rows its instruction data."""
    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.training import _data_words

    assert _data_words(RunConfig(stage="sft"), "domain") == "instruction data"
    assert _data_words(RunConfig(stage="sft"), "general") == "general corpus"
    assert _data_words(RunConfig(), "domain") == "domain corpus"


def test_a_pass_beyond_the_epochs_says_it_only_fills_the_last_steps():
    """3 epochs of 10 rows in steps of 8 sequences are 4 steps (32 rows): a 4th pass begins."""
    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.training import _new_pass_words

    config = RunConfig(stage="sft")
    config.schedule.epochs, config.schedule.max_steps = 3.0, None
    assert _new_pass_words(config, "domain", 3) == "instruction data: pass 3 begins"
    assert _new_pass_words(config, "domain", 4) == ("instruction data: pass 4 begins, only to fill the last "
                                                    "steps: 3 epochs are rounded up to whole optimizer steps")
    assert _new_pass_words(config, "general", 4) == "general corpus: pass 4 begins"  # replay cycles freely
    config.schedule.max_steps = 100  # steps decide: any number of passes is what was asked
    assert _new_pass_words(config, "domain", 7) == "instruction data: pass 7 begins"


def test_the_plan_counts_an_sft_runs_packed_examples_as_the_run_does(tmp_path, tiny_model_dir, capsys):
    """The dry run of an SFT config (and the SFT wizard's estimate) plans the steps the worker
    then trains, from the parent checkpoint's tokenizer, and warns of an interval too long."""
    from cpt_studio.core.cli import main
    from cpt_studio.core.plan import format_plan, plan_run

    parent = _parent(tmp_path, tiny_model_dir, "full")
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS * 2))
    config = sft_config(parent, 2, [str(data)])
    config.schedule.epochs, config.batch.micro_batch, config.batch.grad_accum = 2.0, 2, 1
    config.eval = EvalConfig(interval=50, heldout_count=2, max_tokens=2000)
    config.checkpoints = CheckpointConfig(interval=50, keep=2)
    plan = plan_run(config)
    shown = format_plan(plan)
    assert "examples       20 instruction examples, whole ones packed into " in shown
    assert "instruction data: " in shown and "corpus: 0 domain" not in shown
    assert any(w.startswith("eval.interval: 50 is more than the run's") for w in plan.warnings)
    run_dir = create_sft_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    assert history(run_dir, "step")[-1]["step"] == plan.steps  # as planned
    config_file = tmp_path / "sft.json"
    config_file.write_text(config.to_json())
    assert main(["train", str(config_file), "--dry-run"]) == 0
    assert f"steps          {plan.steps} optimizer steps" in capsys.readouterr().out
    assert main(["sft", "--config", str(config_file), "--dry-run"]) == 0  # the sft command plans too
    assert f"steps          {plan.steps} optimizer steps" in capsys.readouterr().out
    assert main(["train", str(config_file), "--probe", "2"]) == 2  # would start the whole run unasked
    assert "--probe 2 measures the speed for the plan: add --dry-run" in capsys.readouterr().err
    assert main(["sft", "--config", str(config_file), "--dry-run", "--probe", "0"]) == 2  # it measured nothing
    assert "--probe 0: give a number of steps, 1 or more" in capsys.readouterr().err


def test_the_plan_warns_of_examples_cut_to_a_row_as_the_run_then_cuts_them(tmp_path, tiny_model_dir):
    parent = _parent(tmp_path, tiny_model_dir, "full")
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "response": a * 3}) + "\n" for q, a in PAIRS))
    config = sft_config(parent, 2, [str(data)])
    config.schedule.max_steps, config.batch.micro_batch, config.batch.seq_len = 1, 2, 32
    config.eval = EvalConfig(interval=1, heldout_count=2, max_tokens=2000)
    with pytest.raises(ValueError, match=r"batch.seq_len: none of the 8 training instruction examples has a "
                       r"response token within its first 32 tokens \(the longest, .*qa.jsonl line 2, has 90\); "
                       r"raise batch.seq_len to 128, or shorten the prompts"):
        plan_run(config)  # a prompt fills every row: nothing would train (the worker says the same)
    config.batch.seq_len = 72  # the tiny tokenizer's prompts are 39-50 tokens, the examples 62-90
    plan = plan_run(config)
    [warning] = [w for w in plan.warnings if w.startswith("batch.seq_len: ")]
    cut = int(warning.split()[1])
    assert 0 < cut < 8 and "of the 8 training instruction examples are longer than 72 tokens" in warning
    assert f"raise batch.seq_len to 128 (the longest example, {data} line 2, has 90 tokens)" in warning
    assert f"{cut} of them cut to a row" in format_plan(plan) and "whole ones" not in format_plan(plan)
    run_dir = create_sft_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    said = [e.get("message", "") for e in history(run_dir, "status") if e.get("phase") == "tokenizing"]
    assert any(f"; {cut} longer than 72 tokens were cut to it" in m for m in said), said  # as the run cut
    config.batch.seq_len = 128  # as the warning says
    assert not [w for w in plan_run(config).warnings if w.startswith("batch.seq_len: ")]


def test_held_out_examples_the_row_cuts_to_nothing_are_refused_in_the_plan_and_the_run(tmp_path, tiny_model_dir):
    """A tester's SFT run held out 1 example whose response the row cut away: every evaluation
    scored nothing (domain perplexity 1.000, gain 0.00%) and the run recommended a checkpoint by it."""
    from cpt_studio.core.data import heldout_ids

    parent = _parent(tmp_path, tiny_model_dir, "full")
    config = sft_config(parent, 2, [])
    config.eval = EvalConfig(interval=1, heldout_count=2, max_tokens=2000)
    held = set(heldout_ids("sft", len(PAIRS), config.eval, config.seed).tolist())
    data = tmp_path / "qa.jsonl"  # the held-out examples' prompts fill a 64-token row, the others' do not
    data.write_text("".join(json.dumps({"instruction": q * (4 if i in held else 1), "response": a}) + "\n"
                            for i, (q, a) in enumerate(PAIRS)))
    config.sft.data, config.schedule.max_steps, config.batch.seq_len = [str(data)], 1, 64
    refusal = (r"batch.seq_len: none of the 2 held-out instruction examples has a response token within its "
               r"first 64 tokens \(the longest, .*qa.jsonl line \d, has \d+\), so the run's evaluation would "
               r"score nothing; raise batch.seq_len to \d+, or hold out more examples \(eval.heldout_count\)")
    with pytest.raises(ValueError, match=refusal):
        plan_run(config)  # it said "2 of the 8 instruction examples are held out"
    with pytest.raises(ValueError, match=refusal):  # the worker records it as the run's failure
        train(create_sft_run(config, tmp_path / "runs"))


def test_cpt_studio_sft_plans_and_saves_its_config_without_making_a_run(tmp_path, tiny_model_dir, capsys):
    from cpt_studio.core.cli import main
    from cpt_studio.core.runs import runs_dir

    parent = _parent(tmp_path, tiny_model_dir, "full")
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
    runs = sorted((tmp_path / "runs").iterdir())
    assert main(["sft", str(parent), "--data", str(data), "--method", "lora", "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "examples       10 instruction examples" in shown and "with LoRA (frozen base)" in shown
    saved = tmp_path / "sft.json"
    assert main(["sft", str(parent), "--data", str(data), "--epochs", "2", "--save-config", str(saved)]) == 0
    assert f"cpt-studio sft --config {saved}" in capsys.readouterr().out
    config = RunConfig.load(saved)
    assert config.stage == "sft" and config.schedule.epochs == 2.0 and config.parent_step == 2
    assert main(["sft", str(parent), "--data", str(data), "--seq-len", "96", "--heldout-count", "3",
                 "--save-config", str(saved)]) == 0  # what the plan's warnings ask to change
    capsys.readouterr()
    config = RunConfig.load(saved)
    assert (config.batch.seq_len, config.eval.heldout_count) == (96, 3)
    assert sorted((tmp_path / "runs").iterdir()) == runs  # neither made a run folder
    assert not runs_dir().exists() or not any(runs_dir().iterdir())
    for given, said in ((tmp_path, "is a folder; give the instruction data files in it"),  # it said "does not exist"
                        (tmp_path / "*.jsonl", "is a pattern no shell expanded (it was quoted)")):
        assert main(["sft", str(parent), "--data", str(given), "--dry-run"]) == 2
        assert f"sft.data: {given} {said}" in capsys.readouterr().err
