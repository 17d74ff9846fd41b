"""The pre-flight (cpt_studio.core.preflight): each check fires on a config made to trip it, with
a sentence that names the setting and the fix; the demo's setup trips none; the dry run
prints the warnings and refuses the problems, and the worker refuses with the same sentence."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpt_studio.core import plan as plan_module
from cpt_studio.core import preflight as preflight_module
from cpt_studio.core.cli import main
from cpt_studio.core.config import BatchConfig, EvalSetSpec, MethodConfig, RunConfig, ScheduleConfig
from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.estimate import GiB, estimate_time
from cpt_studio.core.plan import format_plan, plan_run
from cpt_studio.core.preflight import mojibake, preflight
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.testing.run_helpers import tiny_run_config


def _config(tiny_model_dir, tmp_path, **sections) -> RunConfig:
    config = tiny_run_config(tiny_model_dir, tmp_path / "data", **sections)
    config.schedule.peak_lr = 2e-5  # the tiny runs' 1e-3 is a warning of its own
    config.eval.sets = [EvalSetSpec("other", str(write_jsonl(tmp_path / "other.jsonl", make_documents(10, seed=5))))]
    return config


def _one(sentences: list[str], setting: str) -> str:
    found = [s for s in sentences if s.startswith(f"{setting}:")]
    assert len(found) == 1, sentences
    return found[0]


def test_the_tiny_config_this_file_starts_from_trips_no_check(tiny_model_dir, tmp_path):
    checked = preflight(_config(tiny_model_dir, tmp_path))
    assert checked.problems == [] and checked.warnings == []


# -- the model ------------------------------------------------------------------------------

def test_a_lora_target_the_model_lacks_blocks_the_run_with_what_it_has(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, method=MethodConfig(kind="lora", target_modules=["c_attn"]))
    problem = _one(preflight(config).problems, "method.target_modules")
    assert "the model has no c_attn layers" in problem
    assert "LoRA would train 0 of its" in problem and "cannot start" in problem
    assert problem.endswith("choose among its linear layers: down_proj, gate_proj, k_proj, lm_head, o_proj, "
                            "q_proj, up_proj, v_proj")


def test_a_partly_missing_target_is_a_problem_too_and_peft_suffixes_are_targets(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, method=MethodConfig(kind="lora", target_modules=["q_proj", "qkv"]))
    problem = _one(preflight(config).problems, "method.target_modules")
    assert "no qkv layers" in problem and "cannot start" not in problem
    config.method.target_modules = ["self_attn.q_proj", "mlp.down_proj"]  # peft matches name endings
    assert preflight(config).problems == []


def test_adapters_larger_than_the_model_are_a_warning_with_the_rank_that_fits(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, method=MethodConfig(kind="lora", lora_rank=512, lora_alpha=512))
    checked = preflight(config)
    warning = _one(checked.warnings, "method.lora_rank")
    assert "LoRA at rank 512 trains" in warning and "more than the model's own" in warning
    assert "use a rank of at most" in warning and "(method.kind full)" in warning
    most = int(warning.split("at most ")[1].split(",")[0])
    config.method.lora_rank = most
    assert not [w for w in preflight(config).warnings if w.startswith("method.lora_rank")]


def test_a_sequence_longer_than_the_context_blocks_the_run(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, batch=BatchConfig(micro_batch=1, grad_accum=1, seq_len=1024))
    problem = _one(preflight(config).problems, "batch.seq_len")
    assert "1024 is longer than the model's context (512 positions" in problem and problem.endswith("use at most 512")


# -- the planned run's size -----------------------------------------------------------------

def test_intervals_longer_than_the_run_are_warnings_in_optimizer_steps(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path)
    config.eval.interval = config.checkpoints.interval = 50  # the run has 20 steps
    warnings = plan_run(config).warnings
    assert _one(warnings, "eval.interval").startswith(
        "eval.interval: 50 is more than the run's 20 steps, so forgetting is measured only at step 0")
    assert _one(warnings, "eval.interval").endswith("set it to at most 10")
    assert "the only checkpoint is the final one" in _one(warnings, "checkpoints.interval")


def test_intervals_longer_than_a_fixed_step_count_are_warned_before_any_estimate(tiny_model_dir, tmp_path):
    """schedule.max_steps gives the run's length without counting the corpus: the wizard's
    summary (which runs only `preflight` until Estimate is pressed) must not say "no warnings"."""
    config = _config(tiny_model_dir, tmp_path, schedule=ScheduleConfig(peak_lr=2e-5, max_steps=4))
    config.eval.interval = config.checkpoints.interval = 10
    warnings = preflight(config, read_corpus=False).warnings
    assert _one(warnings, "eval.interval").startswith("eval.interval: 10 is more than the run's 4 steps")
    assert "the only checkpoint is the final one" in _one(warnings, "checkpoints.interval")
    assert len([w for w in plan_run(config).warnings if w.startswith("eval.interval: 10 is more")]) == 1


def test_many_passes_over_the_domain_corpus_are_a_warning_that_says_how_many(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, schedule=ScheduleConfig(peak_lr=2e-5, max_steps=200))
    config.eval.interval = config.checkpoints.interval = 100
    plan = plan_run(config)
    warning = _one(plan.warnings, "schedule.max_steps")
    passes = float(warning.split(" passes over")[0].rsplit(" ", 1)[1])
    assert passes > preflight_module.PASSES_WARNING
    assert f"{passes:.1f} passes over the domain corpus's" in warning and "set schedule.max_steps to at most" in warning
    most = int(warning.split("to at most ")[1].split(",")[0].replace(",", ""))
    config.schedule.max_steps = most
    assert not [w for w in plan_run(config).warnings if w.startswith("schedule.max_steps")]


@pytest.mark.parametrize("free, rating", [(100 * GiB, "fits"), (None, "tight"), (1024, "exceeds")])
def test_memory_is_rated_against_the_free_memory_of_the_device(tiny_model_dir, tmp_path, monkeypatch, free, rating):
    config = _config(tiny_model_dir, tmp_path)
    total = plan_run(config).memory.total
    free = free or int(total / 0.9)  # the estimate is 90% of it: above the 75% of "tight"
    monkeypatch.setattr(plan_module, "device_memory", lambda device: (free, 200 * GiB))
    plan = plan_run(config)
    assert plan.memory_rating.startswith(f"{rating} (")
    assert f"at the peak: {rating} (" in format_plan(plan)
    warnings = [w for w in plan.warnings if w.startswith("batch.micro_batch")]
    if rating == "fits":
        assert warnings == []
    else:
        assert f"memory {rating} (" in warnings[0] and "lower batch.micro_batch (raise batch.grad_accum" in warnings[0]
        assert "train with LoRA (method.kind lora)" in warnings[0]


def test_evaluation_taking_a_large_share_of_the_run_is_a_warning(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, batch=BatchConfig(micro_batch=1, grad_accum=1, seq_len=64))
    config.eval.interval = config.checkpoints.interval = 1
    warning = _one(plan_run(config).warnings, "eval.interval")
    assert "evaluation takes about" in warning and "of the run's time (21 evaluations" in warning
    assert "raise eval.interval (now 1) or lower eval.max_tokens" in warning


def test_the_time_estimate_follows_the_method():
    full = estimate_time(tokens=10_000, tokens_per_second=None, device="cpu", parameters=100_000_000)
    lora = estimate_time(tokens=10_000, tokens_per_second=None, device="cpu", parameters=100_000_000, method="lora")
    assert "full-parameter" in full.basis and "with LoRA (frozen base)" in lora.basis
    assert "full-parameter" not in lora.basis and lora.seconds == pytest.approx(full.seconds * 4 / 6)


def test_a_lora_plan_never_says_full_parameter(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, method=MethodConfig(kind="lora", lora_rank=4, lora_alpha=8))
    text = format_plan(plan_run(config))
    assert "full-parameter" not in text and "with LoRA (frozen base)" in text


def test_the_plan_names_the_benchmarks_and_probes_its_time_leaves_out(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path)
    assert "benchmarks" not in format_plan(plan_run(config))  # none configured
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"prompt": "Tacrolimus binds", "answer": "FKBP12"}) + "\n")
    config.benchmarks.general_tasks, config.benchmarks.probes = ["arc_easy"], str(probes)
    config.benchmarks.probes_during_training, config.benchmarks.limit = True, 50
    config.schedule.max_steps, config.checkpoints.interval = 10, 4  # checkpoints at 4, 8 and 10
    shown = format_plan(plan_run(config))
    assert ("benchmarks     the probes at step 0 and at each of 3 checkpoints (at most 20 of each kind); "
            "at the end arc_easy, the probes on the base model and the recommended checkpoint "
            "(at most 50 examples a task); their time is not in the estimate above") in shown
    config.benchmarks.at_end = False
    assert "at the end" not in format_plan(plan_run(config))


# -- the corpus ------------------------------------------------------------------------------

def test_general_held_out_text_from_the_replay_corpus_is_a_warning_with_the_setting_to_use(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path)
    config.eval.sets = []
    warning = _one(preflight(config).warnings, "eval.sets")
    assert "held out of the replay corpus" in warning and "forgetting will look smaller than it is" in warning
    assert "add an independent general evaluation set (the evaluation page's 'Add general set…'" in warning and "kind 'general'" in warning
    config.eval.sets = [EvalSetSpec("mine", config.corpus.domain[0].path, kind="domain")]
    assert _one(preflight(config).warnings, "eval.sets")  # a domain set does not measure forgetting
    config.eval.sets, config.corpus.replay_ratio = [], 0.0  # nothing replayed: the general slice is unseen text
    assert not [w for w in preflight(config).warnings if w.startswith("eval.sets")]


def test_mojibake_is_counted_and_shown_with_file_and_line_in_every_format(tiny_model_dir, tmp_path):
    docs = make_documents(20)
    docs[3] = "The patient had a cafÃ© au lait with the dose."
    docs[7] = "Trough levels were lowÂ after the change."
    domain = write_jsonl(tmp_path / "domain.jsonl", docs)
    text = tmp_path / "notes.txt"
    text.write_text("First block.\n\nSecond block,\nwith a line that says naÃ¯ve here.\n")
    table = tmp_path / "table.parquet"
    pq.write_table(pa.table({"text": ["clean.", "clean again.", "Iâ€™m double-encoded."]}), table)
    config = _config(tiny_model_dir, tmp_path)
    config.corpus.domain = [SourceSpec(str(domain)), SourceSpec(str(text), txt_mode="blocks"), SourceSpec(str(table))]
    warning = _one(preflight(config).warnings, "corpus.domain")
    assert "4 of its 25 documents look double-encoded" in warning
    assert ("'The patient had a cafÃ© au lait with the dose.' where 'The patient had a café au lait with the "
            "dose.' was meant" in warning)
    assert f"first at {domain}:4, {domain}:8, {text}:4" in warning  # 3 examples; the block's own line
    assert warning.endswith("re-export the files as UTF-8 from their source, or repair them with ftfy.fix_text "
                            "before training")
    config.corpus.domain = [SourceSpec(str(table))]
    assert f"first at {table}:3;" in _one(preflight(config).warnings, "corpus.domain")


def test_the_mojibake_check_reads_a_sample_and_says_so(tiny_model_dir, tmp_path, monkeypatch):
    domain = write_jsonl(tmp_path / "domain.jsonl", ["cafÃ© one.", "plain.", "cafÃ© two.", "cafÃ© three."])
    config = _config(tiny_model_dir, tmp_path)
    config.corpus.domain = [SourceSpec(str(domain))]
    monkeypatch.setattr(preflight_module, "MOJIBAKE_SAMPLE", 2)
    assert "1 of the first 2 documents look double-encoded" in _one(preflight(config).warnings, "corpus.domain")


def test_mojibake_is_what_ftfy_can_undo_not_any_accent():
    assert mojibake("naïve café, Ångström, São Paulo, 5 µg") is None
    assert mojibake("a no-breakÂ space")[:2] == ("a no-breakÂ space", "a no-break\xa0space")


# -- the demo is the clean case -------------------------------------------------------------

def test_the_demo_setup_trips_no_check(demo_model_here, monkeypatch):
    from cpt_studio.core.demo import demo_config

    config = demo_config()
    checked = preflight(config)
    assert checked.problems == [] and checked.warnings == []
    # the setup is under test, not the machine running the test: 8 GiB free, as on a small laptop
    monkeypatch.setattr(plan_module, "device_memory", lambda device: (8 * GiB, 16 * GiB))
    plan = plan_run(config)
    assert plan.warnings == [] and plan.memory_rating.startswith("fits (")


# -- every entry point: the dry run, the CLI, the worker -------------------------------------

def test_the_dry_run_prints_a_warning_and_refuses_a_problem_with_its_sentence(tiny_model_dir, tmp_path, capsys):
    config = _config(tiny_model_dir, tmp_path)
    config.eval.sets = []
    path = tmp_path / "setup.json"
    path.write_text(config.to_json())
    assert main(["train", str(path), "--dry-run"]) == 0
    warning = _one(preflight(config).warnings, "eval.sets")
    assert f"warning        {warning}" in capsys.readouterr().out
    config.method = MethodConfig(kind="lora", target_modules=["c_attn"])
    path.write_text(config.to_json())
    assert main(["train", str(path), "--dry-run"]) == 2
    problem = _one(preflight(config).problems, "method.target_modules")
    assert f"the run cannot start:\n  {problem}" in capsys.readouterr().err
    assert main(["train", str(path)]) == 2 and problem in capsys.readouterr().err
    runs = tmp_path / "cpt-home" / "runs"  # the data folder (conftest): a refused run leaves no folder
    assert not runs.exists() or not any(runs.iterdir())


def test_the_worker_refuses_a_problem_with_the_same_sentence_before_loading_anything(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):
    from cpt_studio.core import training
    from cpt_studio.core.runs import create_run

    config = _config(tiny_model_dir, tmp_path, method=MethodConfig(kind="lora", target_modules=["c_attn"]))
    run_dir = create_run(config, tmp_path / "runs")
    monkeypatch.setattr(training, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(ValueError) as refused:
        training.train(run_dir)
    assert _one(preflight(config).problems, "method.target_modules") in str(refused.value)


def test_an_sft_run_with_few_held_out_examples_is_warned(tmp_path, tiny_model_dir):
    """A tester's SFT evaluation rested on one held-out example, without a word."""
    from cpt_studio.core.config import SftConfig

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Q{i}?", "response": f"A{i}."}) + "\n" for i in range(40)))
    config = _config(tiny_model_dir, tmp_path)
    config.stage, config.corpus.domain, config.sft = "sft", [], SftConfig(data=[str(data)])
    config.eval.heldout_count = 1
    warning = _one(preflight(config).warnings, "eval.heldout_count")
    assert "only 1 of the 40 instruction examples are held out" in warning
    config.eval.heldout_count = 10
    assert not [w for w in preflight(config).warnings if w.startswith("eval.heldout_count")]
