"""The evaluation report and the recommendation with benchmarks, on crafted run events."""

import json

from cpt_studio.core import cli_tables, store
from cpt_studio.core.events import EventWriter
from cpt_studio.core.report import build_report, write_report
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import tiny_run_config


def crafted_run(tmp_path, tiny_model_dir, arc_at_20=0.45):
    """A run whose events say: step 20 has the most domain gain, but its general benchmark
    (arc) drops 5 points below the base model; step 10 drops 1 point."""
    run_dir = create_run(tiny_run_config(tiny_model_dir, tmp_path / "data"), tmp_path / "runs")
    events = EventWriter(run_dir / "events.jsonl")
    for step, gain in ((0, 0.0), (10, 0.10), (20, 0.20)):
        events.emit("eval", step, domain_ppl=10 * (1 - gain), general_ppl=10.0, domain_gain=gain,
                    forgetting=0.0, baseline=step == 0)
        if step:
            (run_dir / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
            events.emit("checkpoint", step, path=f"checkpoints/checkpoint-{step}")
    for step, arc, med in ((0, 0.50, 0.30), (10, 0.49, 0.34), (20, arc_at_20, 0.40)):
        for task, kind, value in (("arc_easy", "general", arc), ("medqa", "domain", med)):
            events.emit("benchmark", step, task=task, kind=kind, metric="acc", value=value, stderr=0.01,
                        primary=True, higher_is_better=True, num_fewshot=0, limit=None,
                        harness_version="0.4.13", checkpoint="base" if step == 0 else f"checkpoint-{step}")
    events.emit("status", 20, state="finished", phase="done", exit_code=0, message="finished")
    return run_dir


def test_the_report_warns_of_a_general_drop_over_3_points_and_recommends_around_it(tmp_path, tiny_model_dir):
    run_dir = crafted_run(tmp_path, tiny_model_dir)
    report = build_report(run_dir)
    [warning] = report["warnings"]
    assert "arc_easy" in warning and "step 20" in warning and "5.0 points" in warning
    assert abs(report["domain_gain"][20]["gain"] - 0.10) < 1e-9 and report["domain_gain"][20]["kind"] == "domain"
    arc = next(t for t in report["tasks"] if t["task"] == "arc_easy")
    assert abs(arc["deltas"][20]["delta"] + 0.05) < 1e-9 and abs(arc["deltas"][20]["stderr"] - 0.01414) < 1e-4
    assert report["recommended"]["step"] == 10  # 20 gains more but breaks the 3-point rule
    assert "step 20 ruled out: arc_easy drops 5.0 points" in report["recommended"]["reason"]

    folder = write_report(run_dir)
    markdown = (folder / "report.md").read_text()
    assert "**WARNING**: arc_easy" in markdown and "| medqa | domain | acc | 0.300 ± 0.010 |" in markdown
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((folder / "report.json").read_text())["recommended"]["step"] == 10

    db = store.open_store(":memory:")
    run_id = store.index_run(db, run_dir)
    assert [c["step"] for c in store.run_checkpoints(db, run_id) if c["recommended"]] == [10]
    shown = cli_tables.format_run(db, run_id)
    assert "ruled out: arc_easy drops 5.0 points" in shown and "arc_easy" in shown.split("benchmarks")[-1]
    assert len(store.run_benchmarks(db, run_id)) == 6


def test_no_warning_and_the_best_checkpoint_when_general_tasks_hold(tmp_path, tiny_model_dir):
    run_dir = crafted_run(tmp_path, tiny_model_dir, arc_at_20=0.48)
    report = build_report(run_dir)
    assert report["warnings"] == [] and report["recommended"]["step"] == 20
    assert "worst drop 2.0 points" in report["recommended"]["reason"]


def test_the_model_card_includes_the_report(tmp_path, tiny_model_dir):
    from cpt_studio.core.model_card import model_card

    run_dir = crafted_run(tmp_path, tiny_model_dir)
    text = (write_report(run_dir) / "report.md").read_text()
    card = str(model_card(run_dir, 20, "full", report=text))
    assert "## Evaluation report" in card and "**WARNING**: arc_easy" in card
