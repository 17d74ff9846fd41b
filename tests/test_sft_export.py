"""A CPT-LoRA + SFT-LoRA chain of the tiny model, exported and evaluated: the merged export loads
in plain transformers and answers as the chained model does, the adapter export loads with peft
on the run's start model, the card parses with huggingface_hub and tells both stages, the SFT
checkpoint is scored on its parent's probes next to the parent, and Generate answers with the
run's chat template."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from probe_files import write_probes
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpt_studio.core import store
from cpt_studio.core.compare import comparison_rows
from cpt_studio.core.config import (
    BenchmarkConfig,
    CheckpointConfig,
    EvalConfig,
    MethodConfig,
    ScheduleConfig,
)
from cpt_studio.core.evaljob import EvalRequest, evaluate_run
from cpt_studio.core.export import export_checkpoint
from cpt_studio.core.generate import GenerationSettings, compare_generations, load_for_generation
from cpt_studio.core.run_folder import RunPaths, read_json
from cpt_studio.core.runs import create_run
from cpt_studio.core.sft_data import generation_prompt
from cpt_studio.core.sft_run import create_sft_run, sft_config
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
from cpt_studio.core.training import train

PAIRS = [("Which drug did the patient receive?", "tacrolimus twice daily."),
         ("Who reviewed the judgment?", "a court of appeal."),
         ("When did the committee meet?", "on Tuesday."),
         ("What falls with age?", "renal clearance."),
         ("What was measured?", "the trough level."),
         ("Where did the children play?", "in the park.")]
QUESTION = PAIRS[0][0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir):
    """(CPT LoRA run, SFT LoRA run chained to its checkpoint 2), both trained two steps, the
    parent with a probe file in its benchmark settings (which the SFT run inherits)."""
    root = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPT_STUDIO_HOME", str(root / "home"))
        config = tiny_run_config(tiny_model_dir, root / "corpus",
                                 method=MethodConfig(kind="lora", lora_rank=4, lora_alpha=8),
                                 schedule=ScheduleConfig(peak_lr=1e-2, max_steps=2, warmup_ratio=0),
                                 checkpoints=CheckpointConfig(interval=2, keep=2),
                                 eval=EvalConfig(interval=2, heldout_count=4, max_tokens=2000),
                                 benchmarks=BenchmarkConfig(probes=str(write_probes(root / "probes.jsonl", kinds=("mc",))),
                                                            at_end=False))
        config.batch.grad_accum = 1
        parent = create_run(config, root / "runs")
        assert train(parent) == "finished"
        data = root / "qa.jsonl"
        data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
        sft = sft_config(parent, 2, [str(data)], method="lora")
        sft.schedule.max_steps, sft.schedule.peak_lr, sft.schedule.warmup_ratio = 2, 1e-2, 0.0
        sft.batch.seq_len = 128
        sft.eval = EvalConfig(interval=2, heldout_count=2, max_tokens=2000)
        sft.checkpoints = CheckpointConfig(interval=2, keep=2)
        child = create_sft_run(sft, root / "runs")
        assert train(child) == "finished"
        yield parent, child


def _answer_ids(model, tokenizer, question: str = QUESTION) -> list[int]:
    prompt = generation_prompt(tokenizer, [{"role": "user", "content": question}])
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.eval().generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_the_merged_export_of_the_chain_answers_as_the_chained_model_and_its_card_tells_both_stages(chain, tmp_path):
    parent, child = chain
    dest = export_checkpoint(child, 2, tmp_path / "merged", mode="merged", datasets=["my-org/pharma-qa"],
                             tags=["medical"])
    assert not (dest / "adapter_config.json").exists()
    plain, tokenizer = AutoModelForCausalLM.from_pretrained(dest), AutoTokenizer.from_pretrained(dest)
    assert type(plain).__module__.startswith("transformers.")  # no peft anywhere
    assert tokenizer.chat_template == RunPaths(child).chat_template.read_text()
    chained, chained_tokenizer = load_for_generation(RunPaths(child).checkpoint(2))
    assert _answer_ids(plain, tokenizer) == _answer_ids(chained, chained_tokenizer)
    start = AutoModelForCausalLM.from_pretrained(RunPaths(child).start_model)  # base + CPT only
    ids = tokenizer(QUESTION, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, start(ids).logits, atol=1e-4)  # SFT is in it too

    card = ModelCard.load(dest / "README.md")
    local = read_json(RunPaths(parent).config)["model"]["name_or_path"].rsplit("/", 1)[-1]
    assert card.data.base_model is None and f"`{local}` is a local model folder" in card.text  # no Hub id
    assert "steps: None" not in card.text and "| steps | None" not in card.text  # an SFT run's steps
    assert card.data.datasets == ["my-org/pharma-qa"] and card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-generation"
    assert card.data.tags == ["cpt-studio", "continual-pretraining", "sft", "lora", "medical"]
    first, second = card.text.index("## Stage 1: CPT"), card.text.index("## Stage 2: SFT")
    [cpt_eval] = [e for e in events_of(parent) if e["type"] == "eval" and e["step"] == 2]
    [sft_eval] = [e for e in events_of(child) if e["type"] == "eval" and e["step"] == 2]
    assert first < card.text.index(f"{cpt_eval['general_bpb']:.3f}") < second
    assert card.text.index(f"{sft_eval['domain_ppl']:.3f}") > second
    assert f"forgetting: {sft_eval['forgetting']:+.2%}" in card.text
    assert "documents" in card.text[first:second] and "instruction data: " in card.text[second:]


def test_the_adapter_export_loads_with_peft_on_the_start_model_its_card_names(chain, tmp_path):
    from peft import PeftModel

    from cpt_studio.core.cli import main

    _, child = chain
    dest = tmp_path / "adapter"
    assert main(["export", str(child), "2", str(dest), "--mode", "adapter", "--dataset", "a", "--dataset", "b",
                 "--tag", "x"]) == 0
    card = ModelCard.load(dest / "README.md")
    assert card.data.library_name == "peft" and card.data.datasets == ["a", "b"] and "x" in card.data.tags
    start = RunPaths(child).start_model
    assert f"The adapter's base model is this run's start model (`{start}`)" in card.text
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(start), dest)
    chained, tokenizer = load_for_generation(RunPaths(child).checkpoint(2))
    ids = tokenizer(QUESTION, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(adapter.eval()(ids).logits, chained.eval()(ids).logits, atol=1e-6)
    with pytest.raises(ValueError, match="a LoRA checkpoint: export it as adapter or merged, not 'full'"):
        export_checkpoint(child, 2, tmp_path / "full", mode="full")


def test_the_sft_checkpoint_is_scored_on_its_parents_probes_next_to_the_parent(chain):
    parent, child = chain
    probes = read_json(RunPaths(parent).config)["benchmarks"]["probes"]
    assert read_json(RunPaths(child).config)["benchmarks"]["probes"] == probes
    for run_dir in (parent, child):
        outcome = evaluate_run(run_dir, EvalRequest(checkpoints=[2], probes=probes, limit=2))
        assert outcome.state == "finished" and {s["task"] for s in outcome.scores} == {"probes_mc"}
    db = store.open_store()
    ids = [store.index_run(db, run_dir) for run_dir in (parent, child)]
    rows = {(row["run_id"], row["step"]): row["scores"] for row in comparison_rows(db, ids)}
    parent_scores, child_scores = rows[(ids[0], 2)], rows[(ids[1], 2)]
    assert parent_scores.keys() == child_scores.keys() and any("probes_mc" in k for k in child_scores)


def test_generate_gives_an_sft_runs_models_the_question_in_its_chat_template(chain, monkeypatch):
    from cpt_studio.core import sft_data

    parent, child = chain
    rendered = []
    def spy(tokenizer, messages, template=None):
        rendered.append((messages, template))
        return generation_prompt(tokenizer, messages, template)
    monkeypatch.setattr(sft_data, "generation_prompt", spy)
    outputs = compare_generations(child, QUESTION, [2], GenerationSettings(max_new_tokens=12))
    template = RunPaths(child).chat_template.read_text()
    assert rendered == [([{"role": "user", "content": QUESTION}], template)] * 2  # the base and step 2
    compare_generations(parent, QUESTION, [2], GenerationSettings(max_new_tokens=2), include_base=False)
    assert len(rendered) == 2  # a CPT run's checkpoint continues the prompt as plain text
    model, tokenizer = load_for_generation(RunPaths(child).checkpoint(2))
    assert outputs["step 2"] == tokenizer.decode(_answer_ids(model, tokenizer), skip_special_tokens=True)


def test_the_generate_window_shows_an_sft_runs_answers(qtbot, chain):
    from PySide6.QtCore import Qt

    from cpt_studio.core.generate import read_generations
    from cpt_studio.gui.generation import GenerationWindow

    _, child = chain
    db = store.open_store()
    window = GenerationWindow(db, store.index_run(db, child))
    qtbot.addWidget(window)
    assert window.chat and window.base.text() == "starting model (before SFT)"
    window.prompt.setPlainText(QUESTION)
    window.max_tokens.setValue(12)
    for i in range(window.checkpoints.count()):
        window.checkpoints.item(i).setCheckState(Qt.CheckState.Checked)
    with qtbot.waitSignal(window.generate().finished, timeout=60_000):
        pass
    kept = read_generations(child)[-1]
    assert kept["chat"] and list(window.columns) == list(kept["outputs"]) and "step 2" in window.columns
    answers = [text if text.strip() else "" for text in kept["outputs"].values()]  # a blank one: said so
    assert [box.toPlainText() for box in window.columns.values()] == answers  # answers alone
    assert all(box.placeholderText().startswith("(an empty answer") for box in window.columns.values()
               if not box.toPlainText())
    assert window.columns["base"].parent().title() == "starting model (before SFT)"  # not "base"
