"""Evaluation through lm-evaluation-harness on the tiny model: probe tasks, a run's
checkpoints against the base model, unavailable registry tasks, the base-score cache, LoRA."""

import json
import os
import re
import subprocess
import sys
import types

import pytest
import torch
from probe_files import FACTS, fact_documents, write_probes

from cpt_studio.core import benchmarks
from cpt_studio.core.benchmarks import (
    check_tasks,
    load_presets,
    run_task,
    search_tasks,
    task_manager,
    wrap_model,
)
from cpt_studio.core.config import (
    BenchmarkConfig,
    CheckpointConfig,
    CorpusConfig,
    MethodConfig,
    ScheduleConfig,
)
from cpt_studio.core.corpus import CorpusError, SourceSpec
from cpt_studio.core.evaljob import EvalRequest, evaluate_run
from cpt_studio.core.generate import load_for_generation
from cpt_studio.core.probes import read_probes, write_probe_tasks
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.core.training import train


def fact_run_config(model_dir, data_dir, **sections):
    """A run whose domain text states the probe facts (high LR: the tiny model learns them)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    domain = write_jsonl(data_dir / "facts.jsonl", fact_documents())
    general = write_jsonl(data_dir / "general.jsonl", make_documents(120, seed=2))
    corpus = CorpusConfig(domain=[SourceSpec(str(domain))], general=[SourceSpec(str(general))])
    sections = {"corpus": corpus, "schedule": ScheduleConfig(peak_lr=1e-2, max_steps=30, warmup_ratio=0.1),
                "checkpoints": CheckpointConfig(interval=10, keep=3), **sections}
    return tiny_run_config(model_dir, data_dir, **sections)


@pytest.fixture(scope="module")
def fact_run(tmp_path_factory, tiny_model_dir):
    """A finished full-parameter run with checkpoints 10, 20 and 30, and the probe file."""
    root = tmp_path_factory.mktemp("fact-run")
    run_dir = create_run(fact_run_config(tiny_model_dir, root / "data"), root / "runs")
    assert train(run_dir) == "finished"
    return run_dir, write_probes(root / "probes.jsonl")


def scores_by(outcome, step, task, metric):
    [value] = [s["value"] for s in outcome.scores
               if (s["step"], s["task"], s["metric"]) == (step, task, metric)]
    return value


def test_a_bad_probe_file_is_refused_with_every_line_and_its_fix(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"prompt": "The capital is", "answer": "Plenk"}\n'
                    '{"question": "Which?", "choices": ["a", "b"], "answer": 2}\n'
                    'not json\n\n'
                    '{"prompt": "x", "answer": " padded "}\n'
                    '{"text": "a corpus line"}\n')
    with pytest.raises(CorpusError) as err:
        read_probes(path)
    lines = [(p.line, p.message) for p in err.value.problems]
    assert [line for line, _ in lines] == [2, 3, 5, 6]
    assert "index of the right choice, 0 to 1" in lines[0][1]
    assert "invalid JSON" in lines[1][1] and "spaces" in lines[2][1]
    assert "fields: text" in lines[3][1]
    assert f"{path} line 2:" in str(err.value) and "4 problem(s) in the probe file" in str(err.value)  # not "the corpus"


def test_local_cloze_and_multiple_choice_probes_score_the_tiny_model(tmp_path, tiny_model_dir):
    probes = read_probes(write_probes(tmp_path / "probes.jsonl"))
    names = write_probe_tasks(probes, tmp_path / "tasks")
    assert names == ["probes_cloze", "probes_mc"]
    manager = task_manager([tmp_path / "tasks"], registry=False)
    assert check_tasks(names, manager) == (names, {})
    assert search_tasks("PROBES_M", manager) == ["probes_mc"]
    lm = wrap_model(*load_for_generation(str(tiny_model_dir)))
    assert lm.batch_size == benchmarks.FIXED_BATCH_SIZE  # "auto" on a CPU
    mc = {s.metric: s for s in run_task(lm, "probes_mc", manager)}
    cloze = {s.metric: s for s in run_task(lm, "probes_cloze", manager)}
    assert set(mc) == {"acc", "acc_norm"} and mc["acc"].primary and mc["acc"].samples == len(FACTS)
    assert mc["acc"].value in {i / len(FACTS) for i in range(len(FACTS) + 1)}
    assert mc["acc"].stderr is not None and mc["acc"].harness_version == benchmarks.harness_version()
    assert set(cloze) == {"acc", "perplexity"} and not cloze["perplexity"].higher_is_better
    assert cloze["perplexity"].value > 1  # an untrained model does not know made-up words


def test_probe_accuracy_rises_after_training_on_text_that_states_the_answers(fact_run):
    run_dir, probes = fact_run
    outcome = evaluate_run(run_dir, EvalRequest(checkpoints=[0, 30], probes=str(probes)))
    assert outcome.state == "finished" and not outcome.unavailable
    for task, metric in (("probes_mc", "acc"), ("probes_cloze", "acc")):
        assert scores_by(outcome, 30, task, metric) > scores_by(outcome, 0, task, metric) + 0.3
    assert scores_by(outcome, 30, "probes_cloze", "perplexity") < scores_by(outcome, 0, "probes_cloze", "perplexity") / 10
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    probe_events = [e for e in events if e["type"] == "probe"]
    assert {e["checkpoint"] for e in probe_events} == {"base", "checkpoint-30"}
    assert all(e["kind"] == "probe" and e["num_fewshot"] == 0 for e in probe_events)
    progress = [json.loads(line) for line in (run_dir / "eval" / "events.jsonl").read_text().splitlines()]
    assert progress[-1]["state"] == "finished" and progress[-1]["done"] == progress[-1]["total"] == 4
    assert any(e.get("eta_seconds") is not None for e in progress)


def test_base_scores_are_computed_once_and_reused(fact_run, tiny_model_dir, tmp_path, monkeypatch):
    run_dir, probes = fact_run
    calls = []
    harness = benchmarks._harness
    monkeypatch.setattr(benchmarks, "_harness", lambda lm, name, *a: calls.append(name) or harness(lm, name, *a))
    first = evaluate_run(run_dir, EvalRequest(checkpoints=[0], probes=str(probes), limit=4))
    assert calls == ["probes_cloze", "probes_mc"]
    second = evaluate_run(run_dir, EvalRequest(checkpoints=[0, 10], probes=str(probes), limit=4))
    assert calls == ["probes_cloze", "probes_mc"] * 2  # only checkpoint 10 ran
    base = [s for s in second.scores if s["step"] == 0]
    assert all(s["cached"] for s in base)
    assert [(s["task"], s["metric"], s["value"]) for s in base] == \
        [(s["task"], s["metric"], s["value"]) for s in first.scores]
    # another run of the same base model and probe file finds them too (the task's version
    # hashed the run folder's path of the probe data: each run scored the base model again)
    other = create_run(fact_run_config(tiny_model_dir, tmp_path / "data"), tmp_path / "runs")
    third = evaluate_run(other, EvalRequest(checkpoints=[0], probes=str(probes), limit=4))
    assert calls == ["probes_cloze", "probes_mc"] * 2 and all(s["cached"] for s in third.scores)
    said = [json.loads(line).get("message", "") for line in (other / "eval" / "events.jsonl").read_text().splitlines()]
    assert "base: probes_mc (its scores from an earlier evaluation of this model)" in said  # not as if scored now


def test_a_probe_task_has_the_same_version_in_every_process(tmp_path):
    """The base-score cache is keyed by the task's version: the probe data's fields were written
    in a set's order, which changes with each process's string hashing."""
    write_probes(tmp_path / "probes.jsonl")
    script = ("import sys; from pathlib import Path; from cpt_studio.core.probes import read_probes, "
              "write_probe_tasks; write_probe_tasks(read_probes(sys.argv[1]), Path(sys.argv[2]))")
    versions = set()
    for seed in range(4):
        folder = tmp_path / f"tasks-{seed}"
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "probes.jsonl"), str(folder)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)})
        versions.add(tuple(json.loads((folder / f"probes_{kind}.yaml").read_text())["metadata"]["version"]
                           for kind in ("cloze", "mc")))
    assert len(versions) == 1


def test_an_offline_registry_task_is_named_unavailable_and_the_local_tasks_still_run(fact_run):
    run_dir, probes = fact_run
    outcome = evaluate_run(run_dir, EvalRequest(checkpoints=[10], general_tasks=["arc_easy"],
                                                probes=str(probes), limit=2))
    assert list(outcome.unavailable) == ["arc_easy"]
    assert "not in the local datasets cache" in outcome.unavailable["arc_easy"]
    assert {s["task"] for s in outcome.scores} == {"probes_cloze", "probes_mc"}
    log = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()
           if '"unavailable": true' in line]
    assert log and log[-1]["task"] == "arc_easy"


def test_a_lora_checkpoint_evaluates(tmp_path, tiny_model_dir):
    config = fact_run_config(tiny_model_dir, tmp_path / "data",
                             method=MethodConfig(kind="lora", lora_rank=8, lora_alpha=16),
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=10, warmup_ratio=0))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    probes = write_probes(tmp_path / "probes.jsonl", kinds=("mc",))
    outcome = evaluate_run(run_dir, EvalRequest(checkpoints=[0, 10], probes=str(probes)))
    base, trained = (scores_by(outcome, step, "probes_mc", "acc") for step in (0, 10))
    assert {s["samples"] for s in outcome.scores} == {len(FACTS)}
    per_probe_base = scores_by(outcome, 0, "probes_mc", "acc_norm")
    assert (base, per_probe_base) != (trained, scores_by(outcome, 10, "probes_mc", "acc_norm")) or trained > 0


def cli(*args, check=None, cwd=None):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def test_cli_evaluate_and_report_with_exit_codes(fact_run):
    run_dir, probes = fact_run
    code, out, err = cli("evaluate", run_dir, "--checkpoints", "20", "--probes", probes, "--limit", "3",
                         cwd=run_dir)  # outside any git repository, as a user's data folder is
    assert code == 0, err
    assert "[finished]" in out and "[2/4]" in out
    # it ends with the scores, not only how many there are (the table `show` prints)
    assert re.search(r"probes_mc +acc \(probe\): base \d\.\d{3}, (step \d+ \d\.\d{3}, )*step 20 \d\.\d{3}", out), out
    assert f"`cpt-studio show {run_dir}`" in out
    log = next(run_dir.glob("logs/eval*.log")).read_text()
    assert "not a git repository" not in err + log  # lm-eval's `git describe` is not run
    code, out, err = cli("report", run_dir)
    assert code == 0, err
    assert "| probes_mc | probe | acc |" in out and (run_dir / "report" / "scores.png").is_file()
    code, _, err = cli("evaluate", run_dir, "--checkpoints", "99", "--probes", probes)
    assert code == 2 and err.strip().startswith("error:") and "no checkpoint at step 99 (kept: 10, 20, 30)" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("evaluate", run_dir, "--checkpoints", "ten", "--probes", probes)
    assert code == 2 and "give step numbers separated by commas" in err
    bad = run_dir.parent / "bad-probes.jsonl"  # every bad line at once, before a job starts (a tester
    bad.write_text('{"prompt": "a"}\nnot json\n{"question": "q", "choices": ["x"], "answer": 0}\n')  # got one a try)
    code, out, err = cli("evaluate", run_dir, "--checkpoints", "20", "--probes", bad)
    assert code == 2 and "[running]" not in out and all(f"{bad} line {n}:" in err for n in (1, 2, 3)), err


def test_a_stop_request_ends_the_evaluation_between_tasks(fact_run):
    run_dir, probes = fact_run
    asked = []
    outcome = evaluate_run(run_dir, EvalRequest(checkpoints=[0, 20], probes=str(probes), limit=2),
                           should_stop=lambda: asked.append(1) or len(asked) > 2)
    assert outcome.state == "stopped" and {s["task"] for s in outcome.scores} == {"probes_cloze"}
    last = json.loads((run_dir / "eval" / "events.jsonl").read_text().splitlines()[-1])
    assert (last["state"], last["done"], last["total"]) == ("stopped", 1, 4)


@pytest.mark.parametrize("change, words", [
    ({"probes": ""}, "nothing to evaluate"),
    ({"checkpoints": []}, "no checkpoint to evaluate"),
    ({"limit": 0}, "limit must be at least 1"),
    ({"probes": "/nowhere/probes.jsonl"}, "probe file /nowhere/probes.jsonl does not exist"),
    ({"domain_tasks": ["arc_easy"], "general_tasks": ["arc_easy"]}, "both a domain and a general task"),
])
def test_a_bad_request_is_refused_in_words_that_say_what_to_change(change, words):
    request = EvalRequest(checkpoints=[0], probes=__file__)
    for name, value in change.items():
        setattr(request, name, value)
    assert any(words in problem for problem in request.problems())


def test_probes_during_training_give_a_live_curve_and_the_run_ends_with_base_and_recommended(
        tmp_path, tiny_model_dir):
    from cpt_studio.core.config import BenchmarkConfig
    from cpt_studio.core.worker import main as worker_main

    probes = write_probes(tmp_path / "probes.jsonl", kinds=("mc",))
    config = fact_run_config(tiny_model_dir, tmp_path / "data",
                             benchmarks=BenchmarkConfig(probes=str(probes), probes_during_training=True,
                                                        probe_limit=4))
    run_dir = create_run(config, tmp_path / "runs")
    assert worker_main([str(run_dir)]) == 0  # in this process: trains, then evaluates at the end
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    live = [e for e in events if e["type"] == "probe" and e.get("live")]
    assert [e["step"] for e in live if e["metric"] == "acc"] == [0, 10, 20, 30]
    assert all(e["limit"] == 4 and e["samples"] == 4 for e in live)
    assert live[-1]["value"] > live[0]["value"]
    at_end = [e for e in events if e["type"] == "probe" and not e.get("live") and e["metric"] == "acc"]
    assert {e["checkpoint"] for e in at_end} == {"base", "checkpoint-30"} and all(e["samples"] == 6 for e in at_end)
    status = [e for e in events if e["type"] == "status"][-1]
    assert status["state"] == "finished"


def test_presets_are_bundled_and_a_user_copy_in_the_data_folder_wins(tmp_path, monkeypatch):
    from cpt_studio.core.paths import data_dir

    presets = load_presets()
    assert presets["medical"] == {"domain": ["medqa_4options", "medmcqa", "pubmedqa"],
                                  "general": ["mmlu", "arc_challenge", "hellaswag", "truthfulqa_mc1"]}
    (data_dir() / "eval-presets.json").write_text(json.dumps({"law": {"domain": ["legalbench"]}}))
    assert load_presets() == {"law": {"domain": ["legalbench"], "general": []}}
    (data_dir() / "eval-presets.json").write_text("{not json")
    with pytest.raises(ValueError, match="eval-presets.json: cannot read the task presets"):
        load_presets()


def test_task_availability_builds_the_registry_only_for_names_the_folders_lack(tmp_path, monkeypatch):
    """The GUI's task picker: local names are checked without the registry's ~15 s index."""
    names = write_probe_tasks(read_probes(write_probes(tmp_path / "probes.jsonl")), tmp_path / "tasks")
    asked = []
    local = benchmarks.task_manager([tmp_path / "tasks"], registry=False)
    monkeypatch.setattr(benchmarks, "task_manager", lambda folders, registry: asked.append(registry) or local)
    assert benchmarks.task_availability(names, [tmp_path / "tasks"]) == (names, {})
    assert asked == [False]
    runnable, unavailable = benchmarks.task_availability(["probes_mc", "no_such_task"], [tmp_path / "tasks"])
    assert asked == [False, False, True] and runnable == ["probes_mc"]
    assert "not a task of lm-eval's registry" in unavailable["no_such_task"]


def test_an_auto_batch_size_searches_only_for_a_gpu_model_that_is_not_training():
    class OnDevice(torch.nn.Module):  # parameters that report a device without needing it
        def __init__(self, kind):
            super().__init__()
            self.kind = kind

        def parameters(self, recurse=True):
            yield types.SimpleNamespace(device=torch.device(self.kind))

    assert benchmarks.lm_batch_size("auto", OnDevice("cuda")) == "auto"
    assert benchmarks.lm_batch_size("auto", OnDevice("cuda"), training=True) == benchmarks.FIXED_BATCH_SIZE
    assert benchmarks.lm_batch_size("auto", torch.nn.Linear(2, 2)) == benchmarks.FIXED_BATCH_SIZE
    assert benchmarks.lm_batch_size(16, OnDevice("cuda")) == 16


@pytest.mark.parametrize("value, ok", [("auto", True), (8, True), (0, False), ("big", False), (2.5, False)])
def test_the_benchmark_batch_size_is_auto_or_a_positive_whole_number(value, ok):
    problems = BenchmarkConfig(batch_size=value).validate()
    assert (not problems) == ok
    assert ok or "benchmarks: batch size" in problems[0] and "auto" in problems[0]
