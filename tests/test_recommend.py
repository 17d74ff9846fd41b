"""The recommended checkpoint and the Pareto front: the pure choice, and what the store and
`cpt-studio show` make of hand-made evaluation numbers."""

import json
import math
import sqlite3

import pytest

from cpt_studio.core import cli_tables, store
from cpt_studio.core.events import EventWriter
from cpt_studio.core.recommend import CheckpointScore, checkpoint_scores, pareto_front, recommended

# step: (domain gain, forgetting), chosen by hand
NUMBERS = {10: (0.05, 0.010), 20: (0.12, 0.025), 30: (0.18, 0.040), 40: (0.15, 0.029),
           50: (0.10, 0.020), 60: (0.11, 0.030)}
SCORES = [CheckpointScore(step, gain, forgetting) for step, (gain, forgetting) in NUMBERS.items()]


@pytest.mark.parametrize("target, expected", [(0.03, 40), (0.029, 40), (0.028, 20), (0.02, 50),
                                              (0.01, 10), (0.005, None), (1.0, 30)])
def test_recommended_has_the_most_gain_within_the_forgetting_target(target, expected):
    assert recommended(SCORES, target) == expected


def test_ties_go_to_less_forgetting_then_the_earlier_step():
    tied = [CheckpointScore(10, 0.1, 0.02), CheckpointScore(20, 0.1, 0.01), CheckpointScore(30, 0.1, 0.01)]
    assert recommended(tied, 0.03) == 20


def test_the_pareto_front_leaves_out_dominated_checkpoints():
    assert pareto_front(SCORES) == [10, 50, 20, 40, 30]  # 60 loses to 40 on both counts
    assert pareto_front([]) == []
    same = [CheckpointScore(10, 0.1, 0.02), CheckpointScore(20, 0.1, 0.02)]
    assert pareto_front(same) == [10]


def test_scores_skip_the_baseline_and_unknown_numbers():
    rows = [{"step": 0, "domain_gain": 0.0, "forgetting": 0.0},
            {"step": 10, "domain_gain": 0.1, "forgetting": None},
            {"step": 20, "domain_gain": math.nan, "forgetting": 0.01},
            {"step": 30, "domain_gain": 0.2, "forgetting": 0.01}]
    assert checkpoint_scores(rows) == [CheckpointScore(30, 0.2, 0.01)]


def write_run(folder, numbers, *, deleted=(), target=None) -> None:
    folder.mkdir(parents=True)
    config = {"name": "picked", "model": {"name_or_path": "tiny"}}
    if target is not None:
        config["checkpoints"] = {"recommend_max_forgetting": target}
    (folder / "config.json").write_text(json.dumps(config))
    out = EventWriter(folder / "events.jsonl")
    out.emit("eval", 0, baseline=True, domain_ppl=40.0, general_ppl=20.0, domain_gain=0.0, forgetting=0.0)
    for step, (gain, forgetting) in sorted(numbers.items()):
        path = f"checkpoints/checkpoint-{step}"
        if step not in deleted:
            (folder / path).mkdir(parents=True)
        out.emit("eval", step, baseline=False, domain_ppl=40.0 * (1 - gain),
                 general_ppl=20.0 * (1 + forgetting), domain_gain=gain, forgetting=forgetting)
        out.emit("checkpoint", step, path=path, tokens=step * 100)
    out.emit("status", 60, state="finished", phase="done", message="finished at step 60")
    out.close()


def test_the_store_marks_the_recommended_checkpoint_and_the_front(tmp_path):
    numbers = {**NUMBERS, 35: (0.30, 0.001)}  # the best of all, but rotation deleted it
    write_run(tmp_path / "run", numbers, deleted={35})
    db = store.open_store(":memory:")
    run_id = store.index_run(db, tmp_path / "run")
    rows = {row["step"]: row for row in store.run_checkpoints(db, run_id)}
    assert [s for s, row in rows.items() if row["recommended"]] == [40]
    assert sorted(s for s, row in rows.items() if row["pareto"]) == [10, 20, 30, 40, 50]
    assert rows[40]["domain_gain"] == pytest.approx(0.15) and rows[40]["forgetting"] == pytest.approx(0.029)

    text = cli_tables.format_run(db, run_id)
    assert "recommended       step 40 (checkpoints/checkpoint-40): domain gain +15.0%, forgetting +2.9%" in text
    assert "pareto front      step 10 (+5.0% gain, +1.0% forgetting), step 50" in text
    line = next(line for line in text.splitlines() if line.rstrip().endswith("checkpoints/checkpoint-40"))
    assert "recommended" in line
    assert "pareto" in next(line for line in text.splitlines() if line.rstrip().endswith("checkpoint-30"))


def test_the_runs_own_target_decides(tmp_path):
    write_run(tmp_path / "run", NUMBERS, target=0.02)
    db = store.open_store(":memory:")
    run_id = store.index_run(db, tmp_path / "run")
    assert [c["step"] for c in store.run_checkpoints(db, run_id) if c["recommended"]] == [50]
    write_run(tmp_path / "strict", NUMBERS, target=0.001)
    text = cli_tables.format_run(db, store.index_run(db, tmp_path / "strict"))
    assert "recommended       none: every checkpoint forgets more than the 0.1% target (the least: step 10, 1.0%)" in text


def test_an_older_store_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE checkpoints (run_id TEXT NOT NULL, step INTEGER, tokens INTEGER, "
                "time REAL, path TEXT, \"exists\" INTEGER, domain_ppl REAL, general_ppl REAL, "
                "forgetting REAL, domain_gain REAL)")
    old.commit()
    old.close()
    db = store.open_store(path)
    assert {"recommended", "pareto"} <= set(db["checkpoints"].columns_dict)
    write_run(tmp_path / "run", NUMBERS)
    run_id = store.index_run(db, tmp_path / "run")
    assert [c["step"] for c in store.run_checkpoints(db, run_id) if c["recommended"]] == [40]
