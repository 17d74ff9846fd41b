"""Find settings (cpt_studio.core.sweep): a real 2 x 2 sweep of the tiny model (the session's
tiny_sweep), its runs grouped in the history, the front, "use these settings", and the CLI."""

import json
from pathlib import Path

import pytest

from cpt_studio.core import store
from cpt_studio.core.cli import main
from cpt_studio.core.config import RunConfig
from cpt_studio.core.run_folder import RunPaths, list_checkpoints
from cpt_studio.core.sweep import (
    Setting,
    SweepPaths,
    SweepPoint,
    format_lr,
    load_sweep,
    plan_sweep,
    run_sweep,
    settings_config,
    sweep_front,
    sweep_results,
)
from cpt_studio.core.testing.run_helpers import events_of
from cpt_studio.core.testing.sweep_runs import PEAK_LRS, REPLAY_RATIOS, STEPS, sweep_base_config


def test_a_four_point_sweep_makes_four_grouped_runs_and_a_front(tiny_sweep):
    db = store.open_store(":memory:")
    points = sweep_results(tiny_sweep, db)
    assert [(p.setting.replay_ratio, p.setting.peak_lr) for p in points] == [
        (r, lr) for r in REPLAY_RATIOS for lr in PEAK_LRS]
    runs = store.list_runs(db)
    assert len(runs) == 4 and {r["run_group"] for r in runs} == {tiny_sweep.name}
    assert {r["name"] for r in runs} == {"tiny sweep · replay 0% · lr 1e-3", "tiny sweep · replay 0% · lr 5e-3",
                                         "tiny sweep · replay 30% · lr 1e-3", "tiny sweep · replay 30% · lr 5e-3"}
    for point in points:
        assert point.state == "finished" and point.step == STEPS and point.measured
        evals = events_of(Path(point.run_id), "eval")
        assert [e["step"] for e in evals] == [0, STEPS]  # the baseline and the end
        assert point.forgetting == pytest.approx(evals[-1]["forgetting"])
        assert [p.name for p in list_checkpoints(Path(point.run_id))] == [f"checkpoint-{STEPS}"]
        config = RunConfig.load(RunPaths(Path(point.run_id)).config)
        assert (config.corpus.replay_ratio, config.schedule.peak_lr) == (
            point.setting.replay_ratio, point.setting.peak_lr)
        assert config.seed == 0 and not config.guard.enabled
    baselines = {round(events_of(Path(p.run_id), "eval")[0]["general_ppl"], 6) for p in points}
    assert len(baselines) == 1  # same model, same held-out documents: one baseline
    front = [p for p in points if p.on_front]
    assert front and front == [points[i] for i in sorted(sweep_front(points))]
    for p in points:  # nothing off the front beats a point on it
        assert p.on_front or any(q.domain_gain >= p.domain_gain and q.forgetting <= p.forgetting for q in front)
    fast_no_replay, fast_replay = points[1], points[3]
    assert fast_no_replay.forgetting > fast_replay.forgetting  # replay keeps general text


def test_a_sweep_continues_with_the_runs_not_finished_and_stops_on_request(tiny_sweep):
    sizes = {run["run"]: RunPaths(Path(run["run"])).events.stat().st_size for run in load_sweep(tiny_sweep)["runs"]}
    assert run_sweep(tiny_sweep) == 4  # all finished: kept, none trained again
    assert sizes == {run: RunPaths(Path(run)).events.stat().st_size for run in sizes}
    SweepPaths(tiny_sweep).stop.write_text("1")
    try:
        assert run_sweep(tiny_sweep) == 4
    finally:
        SweepPaths(tiny_sweep).stop.unlink()


def point(gain, forgetting):
    return SweepPoint(Setting(0.05, 1e-5), "run", "run", "finished", domain_gain=gain, forgetting=forgetting)


def test_the_front_keeps_the_settings_no_other_beats_on_both_counts():
    points = [point(0.10, 0.02),   # 0: on the front
              point(0.10, 0.02),   # 1: the same numbers as 0: only the first is on it
              point(0.05, 0.02),   # 2: as much forgetting as 0, less gain
              point(0.20, 0.05),   # 3: on the front
              point(0.03, 0.00),   # 4: on the front (least forgetting)
              point(0.15, 0.06),   # 5: beaten by 3
              point(None, None),   # 6: not measured yet
              point(0.20, 0.07)]   # 7: as much gain as 3, more forgetting
    assert sweep_front(points) == [4, 0, 3]  # rising forgetting


def test_use_these_settings_gives_the_base_setup_with_the_setting(tiny_sweep):
    sweep = load_sweep(tiny_sweep)
    config = settings_config(sweep, Setting(0.3, 5e-3), taken=["tiny sweep"])
    base = RunConfig.from_dict(sweep["base"])
    assert (config.corpus.replay_ratio, config.schedule.peak_lr) == (0.3, 5e-3)
    assert config.schedule.max_steps == base.schedule.max_steps != STEPS  # the full run, not the sweep's
    assert config.guard.enabled and config.corpus.domain == base.corpus.domain
    assert config.name == "tiny sweep (2)"


def test_a_sweep_plan_names_every_problem(tiny_model_dir, tmp_path):
    config = sweep_base_config(tiny_model_dir, tmp_path / "data")
    with pytest.raises(ValueError) as err:
        plan_sweep(config, [0, 1.5], [0.0, 1e-4], 0)
    assert all(words in str(err.value) for words in ("replay ratio 1.5", "learning rate 0", "at least 1"))
    config.corpus.general = []
    with pytest.raises(ValueError, match="general corpus"):
        plan_sweep(config, [0], [1e-4], 5)
    assert format_lr(3e-5) == "3e-5" and format_lr(1e-4) == "1e-4" and format_lr(2.5e-5) == "2.5e-5"


def test_cli_plans_a_sweep_and_shows_its_table(tiny_sweep, tiny_model_dir, tmp_path, monkeypatch, capsys):
    setup = tmp_path / "setup.json"
    setup.write_text(sweep_base_config(tiny_model_dir, tmp_path / "data").to_json())
    assert main(["sweep", str(setup), "--replay", "0,0.05", "--lr", "1e-5,3e-5", "--steps", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs of 7 steps" in out and "replay 5% · lr 3e-5" in out and "estimated time: about" in out
    monkeypatch.setenv("CPT_STUDIO_HOME", str(tiny_sweep.parent.parent / "home"))
    assert main(["sweep", "--show", str(tiny_sweep)]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 runs finished" in out
    lines = [line for line in out.splitlines() if line.startswith("* ")]
    assert lines and all("finished" in line for line in lines)
    assert main(["sweep", "--show", "no-such-sweep"]) == 2
    assert "no sweep matches" in capsys.readouterr().err
    assert json.loads(SweepPaths(tiny_sweep).plan.read_text())["steps"] == STEPS


def test_a_sweep_whose_process_died_resumes_the_run_it_left(tiny_model_dir, tmp_path):
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.runs import run_state
    from cpt_studio.core.sweep import create_sweep

    plan = plan_sweep(sweep_base_config(tiny_model_dir, tmp_path / "data"), [0.3], [1e-3], 2)
    folder = create_sweep(plan, runs_root=tmp_path / "runs", root=tmp_path / "sweeps")
    run_dir = Path(load_sweep(folder)["runs"][0]["run"])
    EventWriter(RunPaths(run_dir).events).emit("status", 0, state="running", phase="training")
    RunPaths(run_dir).pid.write_text("999999999 0.0")  # the sweep's process died with the run
    assert run_state(run_dir)["state"] == "failed"
    assert run_sweep(folder) == 1
    states = [e["state"] for e in events_of(run_dir, "status") if e.get("state")]
    assert states[0] == "running" and states[-1] == "finished"
    assert not SweepPaths(folder).pid.exists() and not RunPaths(run_dir).pid.exists()


def test_the_progress_names_the_run_in_progress_and_its_step():
    from cpt_studio.core.sweep import sweep_progress

    points = [point(0.1, 0.01), point(None, None), point(None, None)]
    points[1].state, points[1].step, points[1].total_steps = "running", 12, 50
    points[2].state = "created"
    assert sweep_progress(points) == "run 2 of 3 (replay 5% · lr 1e-5): step 12 of 50; 1 finished"
    points[1].state = "stopped"
    assert sweep_progress(points) == "1 of 3 runs finished (1 stopped, 1 created)"
