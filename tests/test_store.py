"""The run store: index run folders written the way the worker writes them, read them back."""

import json
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import cpt_studio.core.events
from cpt_studio.core import cli_tables, store
from cpt_studio.core.cli import main
from cpt_studio.core.events import EventWriter
from cpt_studio.core.paths import data_dir
from cpt_studio.core.runs import write_pid

METRICS = ("loss", "lr", "grad_norm", "tokens_per_second", "replay_fraction")
BASE_DOMAIN_PPL, BASE_GENERAL_PPL = 40.0, 20.0
TOKENS_PER_STEP = 4096


class Clock:
    """Event times one second apart, so that runs written one after another are ordered."""

    def __init__(self):
        self.now = 1_750_000_000.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(cpt_studio.core.events, "time", SimpleNamespace(time=clock.time))
    return clock


@pytest.fixture
def db():
    return store.open_store(":memory:")


def write_run(folder, *, name="med-cpt", model="org/tiny-a", state="finished", steps=30,
              eval_every=10, torn=True) -> list[dict]:
    """A run folder as the worker leaves it; returns the events it wrote."""
    folder.mkdir(parents=True)
    config = {"name": name, "seed": 0,
              "model": {"name_or_path": model, "allow_download": False, "trust_remote_code": False},
              "corpus": {"domain": [], "general": [], "replay_ratio": 0.05}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    out = EventWriter(folder / "events.jsonl")
    events = [out.emit("status", 0, state="running", phase="loading", message="loading model",
                       total_steps=steps, total_tokens=steps * TOKENS_PER_STEP),
              out.emit("eval", 0, baseline=True, **_scores(0, 0))]
    for step in range(1, steps + 1):
        events.append(out.emit("step", step, **_step_fields(step)))
        if step % eval_every == 0:
            events += _eval_and_checkpoint(out, folder, step)
    events += _ending(out, state, steps)
    out.close()
    if torn:  # the worker was half-way through writing a line
        with open(folder / "events.jsonl", "a") as f:
            f.write('{"type": "step", "time": 1.0, "step": ' + str(steps + 1))
    return events


def _step_fields(step: int) -> dict:
    fields = {"loss": 3.0 - 0.02 * step + 0.01 * (step % 3), "lr": 2e-5 * (1 - step / 100),
              "grad_norm": 1.0 / step, "tokens": step * TOKENS_PER_STEP,
              "tokens_per_second": 5000.0 + step, "replay_fraction": 0.05}
    if step % 2 == 0:
        fields["ewc_penalty"] = 0.001 * step
    return fields


def _scores(step: int, tokens: int) -> dict:
    domain_ppl = BASE_DOMAIN_PPL * (1 - 0.01 * step)
    general_ppl = BASE_GENERAL_PPL * (1 + 0.002 * step)
    return {"tokens": tokens, "domain_ppl": domain_ppl, "general_ppl": general_ppl,
            "domain_loss": math.log(domain_ppl), "general_loss": math.log(general_ppl),
            "forgetting": general_ppl / BASE_GENERAL_PPL - 1,
            "domain_gain": 1 - domain_ppl / BASE_DOMAIN_PPL,
            "domain_bpb": math.log2(domain_ppl) / 4, "general_bpb": math.log2(general_ppl) / 4}


def _eval_and_checkpoint(out: EventWriter, folder, step: int) -> list[dict]:
    tokens = step * TOKENS_PER_STEP
    scores = _scores(step, tokens)
    path = f"checkpoints/step-{step:06d}"
    (folder / path).mkdir(parents=True)
    # The first checkpoint event carries no scores: the store takes them from the eval.
    known = {} if step == 10 else {k: scores[k] for k in store.CHECKPOINT_EVAL_FIELDS}
    return [out.emit("eval", step, baseline=False, **scores),
            out.emit("checkpoint", step, tokens=tokens, path=path, **known)]


def _ending(out: EventWriter, state: str, steps: int) -> list[dict]:
    if state == "running":
        return []
    events = [out.emit("guard", 25, reason="forgetting",
                       message="forgetting 16.0% passed the threshold 15% at step 25: rolled back to "
                               "step 20; learning rate x0.5",
                       action="rollback", forgetting=0.16, threshold=0.15,
                       rolled_back_to=20, remedy="learning rate x0.5"),
              out.emit("log", steps, message="saving the last checkpoint")]
    if state == "failed":
        return events + [out.emit("status", steps, state="failed", phase="training",
                                  message="CUDA out of memory", exit_code=1)]
    return events + [out.emit("status", steps, state=state, phase="done", message="done",
                              exit_code=0)]


def indexed(db, folder, **kwargs) -> str:
    write_run(folder, **kwargs)
    return store.index_run(db, folder)


def of_type(events: list[dict], type: str) -> list[dict]:
    return [e for e in events if e["type"] == type]


def snapshot(db, run_id: str) -> dict[str, list[dict]]:
    return {table: list(db[table].rows_where("id = ?" if table == "runs" else "run_id = ?",
                                             [run_id], order_by="rowid"))
            for table in store.TABLES}


@pytest.fixture
def run(tmp_path):
    """One finished run with its first checkpoint deleted by rotation."""
    folder = tmp_path / "runs" / "2025-06-01-med"
    events = write_run(folder)
    shutil.rmtree(folder / "checkpoints" / "step-000010")
    return SimpleNamespace(folder=folder, events=events)


# -- indexing: every table holds what the events say ----------------------------------------

def test_run_row_summarises_the_events(db, run):
    row = store.get_run(db, store.index_run(db, run.folder))
    evals = of_type(run.events, "eval")
    assert row["id"] == str(run.folder.resolve())
    assert (row["name"], row["model"], row["state"], row["phase"]) == (
        "med-cpt", "org/tiny-a", "finished", "done")
    assert (row["steps"], row["total_steps"], row["tokens"]) == (30, 30, 30 * TOKENS_PER_STEP)
    assert row["started"] == run.events[0]["time"]
    assert row["updated"] == row["finished"] == run.events[-1]["time"]
    assert row["domain_gain"] == evals[-1]["domain_gain"]
    assert row["forgetting"] == evals[-1]["forgetting"]
    assert row["best_domain_gain"] == max(e["domain_gain"] for e in evals)
    assert row["config"]["corpus"]["replay_ratio"] == 0.05
    assert row["error"] is None


def test_metrics_are_the_step_events_without_the_torn_line(db, run):
    run_id = store.index_run(db, run.folder)
    steps = of_type(run.events, "step")
    for name in METRICS:
        assert store.run_metrics(db, run_id, name) == [
            (e["step"], e["tokens"], e[name]) for e in steps]
    assert store.run_metrics(db, run_id, "ewc_penalty") == [
        (e["step"], e["tokens"], e["ewc_penalty"]) for e in steps if "ewc_penalty" in e]
    names = {row["name"] for row in db["metrics"].rows}
    assert names == {*METRICS, "ewc_penalty"}


def test_evaluations_are_the_eval_events(db, run):
    run_id = store.index_run(db, run.folder)
    columns = ("step", "tokens", "time", *store.EVAL_FIELDS, "baseline")
    assert [{c: row[c] for c in columns} for row in store.run_evaluations(db, run_id)] == [
        {c: e[c] for c in columns} for e in of_type(run.events, "eval")]


def test_checkpoints_carry_their_scores_and_whether_they_still_exist(db, run):
    run_id = store.index_run(db, run.folder)
    scores = {e["step"]: e for e in of_type(run.events, "eval")}
    expected = [{"step": e["step"], "tokens": e["tokens"], "path": e["path"],
                 "exists": e["step"] != 10,
                 **{f: scores[e["step"]][f] for f in store.CHECKPOINT_EVAL_FIELDS}}
                for e in of_type(run.events, "checkpoint")]
    rows = store.run_checkpoints(db, run_id)
    assert [{k: row[k] for k in expected[0]} for row in rows] == expected


def test_guard_and_other_events_are_kept(db, run):
    run_id = store.index_run(db, run.folder)
    guard = of_type(run.events, "guard")[0]
    [row] = store.run_guard(db, run_id)
    assert {k: row[k] for k in ("step", "time", *store.GUARD_FIELDS)} == {
        k: guard[k] for k in ("step", "time", *store.GUARD_FIELDS)}
    others = [e for e in run.events if e["type"] in ("status", "log")]
    assert store.run_events(db, run_id) == others
    assert store.run_events(db, run_id, "log") == of_type(run.events, "log")


def test_reindexing_gives_the_same_rows(db, run):
    run_id = store.index_run(db, run.folder)
    before = snapshot(db, run_id)
    assert store.index_run(db, run.folder) == run_id
    assert snapshot(db, run_id) == before
    assert db["runs"].count == 1


def test_reindexing_picks_up_the_torn_line_once_complete(db, run):
    run_id = store.index_run(db, run.folder)
    with open(run.folder / "events.jsonl", "a") as f:
        f.write(', "loss": 2.0, "tokens": 126976}\n')
    store.index_run(db, run_id)
    assert store.run_metrics(db, run_id, "loss")[-1] == (31, 126976, 2.0)
    assert len(store.run_metrics(db, run_id, "loss")) == 31


def test_a_model_given_as_a_string_is_read_too(db, run):
    config = json.loads((run.folder / "config.json").read_text())
    (run.folder / "config.json").write_text(json.dumps({**config, "model": "org/plain"}))
    assert store.get_run(db, store.index_run(db, run.folder))["model"] == "org/plain"


def test_failed_and_running_runs_keep_what_the_events_say(db, tmp_path):
    failed = indexed(db, tmp_path / "a", state="failed")
    running = indexed(db, tmp_path / "b", state="running")
    assert store.get_run(db, failed)["error"] == "CUDA out of memory (exit code 1)"
    assert store.get_run(db, failed)["finished"] is not None
    row = store.get_run(db, running)  # no worker.pid: liveness is the worker code's call
    assert (row["state"], row["finished"], row["error"]) == ("running", None, None)


def test_a_broken_event_line_is_named(db, run):
    lines = (run.folder / "events.jsonl").read_text().splitlines(keepends=True)
    lines[5] = "not json\n"
    (run.folder / "events.jsonl").write_text("".join(lines))
    with pytest.raises(ValueError, match=r"events.jsonl line 6: not a JSON event"):
        store.index_run(db, run.folder)


def test_a_folder_without_config_is_refused(db, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a run folder: it has no config.json"):
        store.index_run(db, tmp_path)


# -- rebuilding from the folders -----------------------------------------------------------

def test_rebuild_after_deleting_the_db_file_gives_the_same_rows(tmp_path, run):
    path = tmp_path / "store.db"
    db = store.open_store(path)
    run_id = store.index_run(db, run.folder)
    before = snapshot(db, run_id)
    db.close()
    for leftover in tmp_path.glob("store.db*"):
        leftover.unlink()
    (run.folder.parent / "not-a-run").mkdir()
    (run.folder.parent / "notes.txt").write_text("")
    db = store.open_store(path)
    assert db["runs"].count == 0
    assert store.rebuild(db, [run.folder.parent]) == 1
    assert snapshot(db, run_id) == before


def test_rebuild_drops_runs_whose_folder_is_gone(db, tmp_path):
    kept = indexed(db, tmp_path / "runs" / "kept")
    gone = indexed(db, tmp_path / "gone")
    shutil.rmtree(tmp_path / "gone")
    assert store.rebuild(db, [tmp_path / "runs"]) == 1
    assert [r["id"] for r in store.list_runs(db)] == [kept]
    assert db["metrics"].count_where("run_id = ?", [gone]) == 0


def test_rebuild_defaults_to_the_runs_folder(db):
    write_run(data_dir() / "runs" / "2025-06-01-med")
    assert store.rebuild(db) == 1
    assert store.get_run(db, "2025-06-01-med")["name"] == "med-cpt"


def test_a_failed_rebuild_leaves_the_store_as_it_was(db, tmp_path, run):
    run_id = store.index_run(db, run.folder)
    before = snapshot(db, run_id)
    bad = run.folder.parent / "2025-05-31-bad"  # sorts first: a half-done rebuild would be empty
    write_run(bad)
    (bad / "events.jsonl").write_text("{oops\n")
    with pytest.raises(ValueError, match="2025-05-31-bad"):
        store.rebuild(db, [run.folder.parent])
    assert snapshot(db, run_id) == before


def test_rebuild_names_a_missing_root(db, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.rebuild(db, [tmp_path / "nowhere"])


# -- listing and finding runs --------------------------------------------------------------

@pytest.fixture
def three_runs(db, tmp_path):
    """Written in this order, so the newest is law."""
    root = tmp_path / "runs"
    write_run(root / "2025-06-01-med-a", name="med-a", model="org/tiny-a", steps=10)
    write_run(root / "2025-06-01-med-b", name="med-b", model="org/tiny-b", steps=10,
              state="failed")
    write_run(root / "2025-06-02-law", name="law", model="/models/org/tiny-a", steps=10,
              state="running")
    store.rebuild(db, [root])
    return root


@pytest.mark.parametrize("state, model, names", [
    (None, None, ["law", "med-b", "med-a"]),
    ("finished", None, ["med-a"]),
    ("failed", None, ["med-b"]),
    (None, "tiny-a", ["law", "med-a"]),
    (None, "ORG/TINY-B", ["med-b"]),
    ("running", "tiny-a", ["law"]),
    ("stopped", None, []),
])
def test_list_runs_filters_newest_first(db, three_runs, state, model, names):
    assert [r["name"] for r in store.list_runs(db, state=state, model=model)] == names


@pytest.mark.parametrize("key, name", [
    ("2025-06-02", "law"),        # unique prefix of the folder name
    ("2025-06-01-med-b", "med-b"),  # whole folder name
    ("med-a", "med-a"),           # run name
])
def test_get_run_by_prefix_folder_or_name(db, three_runs, key, name):
    assert store.get_run(db, key)["name"] == name


def test_get_run_by_path(db, three_runs):
    assert store.get_run(db, three_runs / "2025-06-01-med-a")["name"] == "med-a"


def test_get_run_names_the_candidates_when_ambiguous(db, three_runs):
    with pytest.raises(LookupError, match="matches 2 runs") as error:
        store.get_run(db, "2025-06-01")
    assert "2025-06-01-med-a (med-a)" in str(error.value)
    assert "2025-06-01-med-b (med-b)" in str(error.value)


def test_get_run_lists_the_runs_when_nothing_matches(db, three_runs):
    with pytest.raises(LookupError, match=r"no run matches 'zzz'; the runs are: .*2025-06-02-law"):
        store.get_run(db, "zzz")


# -- changing runs -------------------------------------------------------------------------

def test_rename_survives_rebuild_and_leaves_the_config_alone(db, three_runs):
    config = (three_runs / "2025-06-02-law" / "config.json").read_bytes()
    store.rename_run(db, "2025-06-02", "law, second try")
    assert store.get_run(db, "2025-06-02")["name"] == "law, second try"
    assert store.rebuild(db, [three_runs]) == 3
    assert store.get_run(db, "law, second try")["id"].endswith("2025-06-02-law")
    assert (three_runs / "2025-06-02-law" / "config.json").read_bytes() == config


def test_rename_refuses_an_empty_name(db, three_runs):
    with pytest.raises(ValueError, match="cannot be empty"):
        store.rename_run(db, "2025-06-02", "  ")


def test_forget_run_removes_its_rows_not_its_folder(db, run):
    run_id = store.index_run(db, run.folder)
    assert store.forget_run(db, "2025-06-01-med") == run_id
    assert all(rows == [] for rows in snapshot(db, run_id).values())
    assert (run.folder / "events.jsonl").exists()


# -- what the CLI prints -------------------------------------------------------------------

def test_format_run_shows_the_key_numbers(db, run):
    text = cli_tables.format_run(db, store.index_run(db, run.folder))
    last = of_type(run.events, "eval")[-1]
    for number in (BASE_DOMAIN_PPL, BASE_GENERAL_PPL, last["domain_ppl"], last["general_ppl"]):
        assert f"{number:.2f}" in text
    assert f"best domain gain  +{last['domain_gain'] * 100:.1f}% at step 30" in text
    assert "checkpoints/step-000010 (deleted)" in text
    assert "checkpoints/step-000030 (deleted)" not in text
    assert "guard             step 25: forgetting 16.0% passed the threshold 15% at step 25: rolled back to step 20" in text


def test_format_runs_has_a_line_per_run(db, three_runs):
    lines = cli_tables.format_runs(store.list_runs(db)).splitlines()
    assert lines[0].split()[:3] == ["name", "state", "model"]
    assert lines[1].split()[:2] == ["law", "running"]
    assert "10/10" in lines[2] and "+10.0%" in lines[2]
    assert cli_tables.format_runs([]) == "no runs"


# -- the database file ---------------------------------------------------------------------

def test_the_store_file_is_in_wal_mode(tmp_path):
    db = store.open_store(tmp_path / "store.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    reader = sqlite3.connect(tmp_path / "store.db")
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_default_store_lives_in_the_data_folder():
    old = data_dir() / "cpt-studio.db"  # where versions before the .store folder kept it
    old.write_bytes(b"an old store")
    db = store.open_store()
    assert store.default_db_path() == data_dir() / ".store" / "cpt-studio.db"
    assert store.default_db_path().exists() and not old.exists()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_resumed_run_keeps_the_resumed_attempts_numbers(tmp_path):
    """Steps logged after the checkpoint by the killed attempt are replaced, not doubled."""
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.store import index_run, open_store, run_metrics

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"name": "r", "model": {"name_or_path": "m"}}')
    events = EventWriter(run_dir / "events.jsonl")
    for step in range(1, 8):  # the first attempt, killed after step 7; checkpoint at 5
        events.emit("step", step, loss=10.0 + step, tokens=step)
    events.emit("status", 5, state="running", phase="training", resumed_from=5)
    for step in range(6, 9):
        events.emit("step", step, loss=float(step), tokens=step)
    db = open_store(tmp_path / "s.db")
    run_id = index_run(db, run_dir)
    assert [(s, v) for s, _, v in run_metrics(db, run_id, "loss")] == [
        (1, 11.0), (2, 12.0), (3, 13.0), (4, 14.0), (5, 15.0), (6, 6.0), (7, 7.0), (8, 8.0)]


# -- incremental indexing, forgetting, migrations ---------------------------------------------

def _without_offset(tables: dict[str, list[dict]]) -> dict[str, list[dict]]:
    runs = [{k: v for k, v in row.items() if k not in ("events_offset", "events_seen")}
            for row in tables["runs"]]
    return {**tables, "runs": runs}


def test_a_running_run_is_indexed_from_the_last_byte_read(db, tmp_path):
    """Indexed while it grows (a resume among the new events), the store holds what one index
    of the finished file holds; and a second index reads only what was added."""
    folder = tmp_path / "runs" / "live"
    write_run(folder, state="running", steps=12, eval_every=5, torn=False)
    run_id = store.index_run(db, folder)
    events_file = folder / "events.jsonl"
    offset = db["runs"].get(run_id)["events_offset"]
    assert offset == events_file.stat().st_size
    out = EventWriter(events_file)
    out.emit("status", 10, state="running", phase="training", resumed_from=10)
    for step in range(11, 16):
        out.emit("step", step, **_step_fields(step))
    _eval_and_checkpoint(out, folder, 15)
    _ending(out, "finished", 15)
    # A line in the middle changed in place: an incremental index never reads it again.
    text = events_file.read_bytes()
    middle = len(text) // 2
    events_file.write_bytes(text[:middle] + b"X" + text[middle + 1:])
    store.index_run(db, folder)
    incremental = _without_offset(snapshot(db, run_id))
    events_file.write_bytes(text)
    fresh = store.open_store(":memory:")
    assert _without_offset(snapshot(fresh, store.index_run(fresh, folder))) == incremental
    steps = [s for s, _, _ in store.run_metrics(db, run_id, "loss")]
    assert steps == list(range(1, 16))  # 11 and 12 of the first attempt replaced
    assert store.get_run(db, run_id)["state"] == "finished"


def test_a_changed_or_shorter_events_file_is_indexed_again(db, run):
    run_id = store.index_run(db, run.folder)
    events_file = run.folder / "events.jsonl"
    lines = events_file.read_text().splitlines(keepends=True)
    events_file.write_text("".join(lines[:5]))  # replaced by a shorter file: read from the start
    store.index_run(db, run.folder)
    assert store.get_run(db, run_id)["steps"] == 3


def test_a_forgotten_run_stays_out_of_index_runs_and_rebuild(db, three_runs, tmp_path):
    root = tmp_path / "runs"
    forgotten = store.forget_run(db, "2025-06-01-med-a")
    assert store.forgotten_runs() == {forgotten}
    assert forgotten not in store.index_runs(db, root)
    assert store.rebuild(db, [root]) == 2
    assert [r["name"] for r in store.list_runs(db)] == ["law", "med-b"]
    assert (root / "2025-06-01-med-a").is_dir()  # the folder was kept


def test_forget_run_can_delete_the_folder(db, three_runs, tmp_path):
    run_id = store.forget_run(db, "2025-06-02-law", delete_folder=True)
    assert not Path(run_id).exists() and run_id not in store.forgotten_runs()
    assert store.rebuild(db, [tmp_path / "runs"]) == 2


OLD_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, model TEXT, state TEXT, phase TEXT,
    message TEXT, started REAL, updated REAL, finished REAL, steps INTEGER, total_steps INTEGER,
    tokens INTEGER, domain_gain REAL, forgetting REAL, best_domain_gain REAL, config TEXT, error TEXT);
CREATE TABLE guard (run_id TEXT NOT NULL, step INTEGER, time REAL, reason TEXT, action TEXT,
    forgetting REAL, threshold REAL, rolled_back_to, remedy);
INSERT INTO guard VALUES ('/r', 25, 1.0, 'forgetting 16%', 'rollback', 0.16, 0.15,
    'checkpoints/checkpoint-20', 'learning rate x0.5');
PRAGMA user_version = 2;
"""


def test_a_store_made_before_migrations_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    db = store.open_store(path)
    assert [m.name for m in store.MIGRATIONS.applied(db)] == [
        "m001_tables", "m002_incremental_index", "m003_guard_message_and_seen_bytes", "m004_run_parent",
        "m005_run_group"]
    assert {"recommendation", "events_offset", "run_group", "parent_run"} <= set(db["runs"].columns_dict)
    assert {"domain_bpb", "recommended", "pareto"} <= set(db["checkpoints"].columns_dict)
    assert [r["rolled_back_to"] for r in db["guard"].rows] == [20]
    assert store.MIGRATIONS.pending(store.open_store(path)) == []  # applied once


def test_a_chained_run_s_stage_and_parent_are_indexed_and_an_old_store_gets_them(tmp_path):
    """m004_run_parent: a store indexed before it learns the runs' parents from their configs (a
    config of an earlier version kept the link under sft.*); index_run fills them; list_runs
    returns them."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    old_sft = {"name": "qa", "stage": "sft", "sft": {"parent_run": "/runs/pharma", "parent_step": 20}}
    conn.execute("INSERT INTO runs (id, name, config) VALUES ('/runs/qa', 'qa', ?)", [json.dumps(old_sft)])
    conn.execute("INSERT INTO runs (id, name, config) VALUES ('/runs/pharma', 'pharma', '{}')")
    conn.commit()
    conn.close()
    db = store.open_store(path)
    rows = {r["id"]: r for r in store.list_runs(db)}
    assert [(rows[i]["stage"], rows[i]["parent_run"], rows[i]["parent_step"]) for i in ("/runs/qa", "/runs/pharma")] == [
        ("sft", "/runs/pharma", 20), ("cpt", None, None)]
    child = tmp_path / "runs" / "2025-06-03-more"
    child.mkdir(parents=True)
    (child / "config.json").write_text(json.dumps({"name": "more", "parent_run": "/runs/pharma", "parent_step": 30}))
    EventWriter(child / "events.jsonl").emit("status", 0, state="running", phase="loading")
    store.index_run(db, child)
    assert {k: store.get_run(db, "more")[k] for k in ("stage", "parent_run", "parent_step")} == {
        "stage": "cpt", "parent_run": "/runs/pharma", "parent_step": 30}
    from cpt_studio.core.config import RunConfig

    loaded = RunConfig.from_json(json.dumps(old_sft))  # an earlier version's config still loads
    assert (loaded.parent_run, loaded.parent_step, loaded.stage) == ("/runs/pharma", 20, "sft")


def test_a_guard_event_written_before_the_field_names_were_aligned_reads_the_same(db, tmp_path):
    from cpt_studio.core.events import GuardEvent, parse_event

    old = parse_event({"type": "guard", "step": 13, "reason": "forgetting 16% passed the threshold",
                       "trigger": "forgetting", "action": "rollback",
                       "rolled_back_to": "checkpoints/checkpoint-10", "rolled_back_to_step": 10})
    assert isinstance(old, GuardEvent)
    assert (old.reason, old.message, old.rolled_back_to) == (
        "forgetting", "forgetting 16% passed the threshold", 10)
    assert old.extra == {}


def test_cli_store_forget_keeps_the_run_out_of_rebuild(three_runs, tmp_path, capsys):
    from cpt_studio.core.cli import main

    db_path = store.default_db_path()
    store.rebuild(store.open_store(db_path), [tmp_path / "runs"])
    assert main(["store", "forget", "2025-06-01-med-b"]) == 0
    assert "rebuild` leaves it out" in capsys.readouterr().out
    assert main(["store", "rebuild", str(tmp_path / "runs")]) == 0
    assert [r["name"] for r in store.list_runs(store.open_store(db_path))] == ["law", "med-a"]
    assert main(["store", "forget", "no-such-run"]) != 0
    assert main(["store", "forget", "--undo", str(tmp_path / "runs" / "2025-06-01-med-b")]) == 0
    assert store.forgotten_runs() == set()
    assert len(store.list_runs(store.open_store(db_path))) == 3


def test_a_run_forgotten_while_it_trained_stays_out_when_its_worker_ends(three_runs, tmp_path):
    from cpt_studio.core.worker import update_store

    db = store.open_store(store.default_db_path())
    store.rebuild(db, [tmp_path / "runs"])
    run_id = store.forget_run(db, "2025-06-02-law")
    update_store(Path(run_id))  # what the worker does when the run ends
    assert "law" not in [r["name"] for r in store.list_runs(db)]


def test_two_processes_opening_an_old_store_at_once_both_get_it(tmp_path):
    """One migrates, the other waits for it and finds nothing pending (no 'database is locked')."""
    import subprocess
    import sys
    import time

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    script = ("import sys, time; from cpt_studio.core import store; t = float(sys.argv[2]); "
              "time.sleep(max(0, t - time.time())); db = store.open_store(sys.argv[1]); "
              "print(len(store.MIGRATIONS.pending(db)))")
    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), start], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(p.wait(60), *p.communicate()) for p in procs]
    assert [(code, out.strip()) for code, out, _ in outcomes] == [(0, "0")] * 3, outcomes
    assert [r["rolled_back_to"] for r in store.open_store(path)["guard"].rows] == [20]


def test_an_events_file_replaced_by_another_as_long_is_read_again(db, run):
    run_id = store.index_run(db, run.folder)
    events_file = run.folder / "events.jsonl"
    text = events_file.read_text()
    another = text.replace('"loss": 2.', '"loss": 9.').replace("loading model", "loading MODEL")
    events_file.write_text(another)  # as long: another run's file copied over, say
    store.index_run(db, run.folder)
    fresh = store.open_store(":memory:")
    store.index_run(fresh, run.folder)
    assert store.run_metrics(db, run_id, "loss") == store.run_metrics(fresh, run_id, "loss")
    assert store.run_metrics(db, run_id, "loss")[0][2] == pytest.approx(9.99)


@pytest.mark.parametrize("line", [b"[1, 2]", b"null", b"3", b'{"type": "step", "step": 1, "loss": "\xff"}'])
def test_a_line_that_is_not_an_event_is_named_with_its_number(db, run, line):
    events_file = run.folder / "events.jsonl"
    lines = events_file.read_bytes().split(b"\n")
    events_file.write_bytes(b"\n".join(lines[:3] + [line] + lines[3:]))
    with pytest.raises(ValueError, match=r"events.jsonl line 4: not a JSON event"):
        store.index_run(db, run.folder)


def test_a_store_that_cannot_be_opened_leaves_no_connection_open(tmp_path, monkeypatch):
    """The history retries every few seconds: a failing open must not leak a connection each time."""
    broken = tmp_path / "cpt-studio.db"
    broken.write_bytes(b"not a database " * 100)
    opened = []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(connect(*a, **k)) or opened[-1])
    with pytest.raises(sqlite3.DatabaseError):
        store.open_store(broken)
    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("select 1")


def test_repair_sets_a_damaged_store_aside_and_leaves_a_sound_one(tmp_path, run):
    sound = tmp_path / "sound.db"
    with store.connection(sound) as db:
        store.index_run(db, run.folder)
    assert store.repair(sound) is None and sound.exists()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database " * 100)
    assert store.repair(damaged) == tmp_path / "damaged.db.damaged-1"
    with store.connection(damaged) as db:  # a new, empty store
        assert store.list_runs(db) == []


def test_a_store_ref_opens_a_new_connection_each_time(tmp_path, run):
    with store.connection(tmp_path / "s.db") as db:
        store.index_run(db, run.folder)
        ref = store.StoreRef(db)
    with ref.open() as first, ref.open() as second:
        assert first is not second and len(store.list_runs(first)) == 1
    memory = store.open_store(":memory:")
    with store.StoreRef(memory).open() as same:
        assert same is memory


def test_folder_names_include_runs_the_store_has_not_indexed(tmp_path, run):
    (run.folder / "display_name").write_text("pharma v2\n")
    broken = run.folder.parent / "broken"
    shutil.copytree(run.folder, broken)
    (broken / "config.json").write_text("{not json")
    assert store.folder_names(run.folder.parent) == {"pharma v2", "broken"}
    assert store.folder_names(tmp_path / "none") == set()


def test_a_run_with_only_its_baseline_has_no_gain_or_forgetting_yet(tmp_path, db):
    """Step 0's gain and forgetting are 0 by definition: the history said "+0.0%" for a run
    stopped before its first evaluation."""
    folder = tmp_path / "runs" / "early"
    write_run(folder, steps=5, eval_every=10, state="stopped", torn=False)
    run = store.get_run(db, store.index_run(db, folder))
    assert run["domain_gain"] is None and run["forgetting"] is None


def test_cli_runs_lists_a_run_in_progress_and_a_dead_worker_s_run_as_failed_with_how_to_resume(capsys):
    """`runs` and `show` read only the store, which the worker updated as it ended: a run in
    progress was not listed, and one whose worker was killed read 'running' for ever."""
    live, dead = data_dir() / "runs" / "2025-06-01-live", data_dir() / "runs" / "2025-06-01-dead"
    write_run(live, name="live", state="running")
    write_pid(live)  # this process stands in for its worker
    write_run(dead, name="dead", state="running")
    assert main(["runs"]) == 0
    listed = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed == {"live": "running", "dead": "failed"}
    assert main(["show", "dead"]) == 0
    shown = capsys.readouterr().out
    assert "the worker process ended without a final status" in shown
    assert "or soon after (its worker died without a final status)" in shown  # it said "ended -"
    assert f"`cpt-studio resume {dead}` goes on from step 30" in shown
    assert main(["stop", "dead"]) == 1  # a run by its name, as `show` takes it
    assert f"{dead} is not running" in capsys.readouterr().out
    done = data_dir() / "runs" / "2025-06-01-done"
    write_run(done, name="done")
    assert main(["resume", "done"]) == 2  # it trained again from its last step, re-scoring its benchmarks
    assert f"{done} has finished: nothing to resume" in capsys.readouterr().err


def test_cli_output_to_a_reader_that_left_ends_without_a_traceback():
    """`cpt-studio runs | head -1`: the pipe closes before the table is written."""
    write_run(data_dir() / "runs" / "2025-06-01-med", name="med")
    command = [sys.executable, "-c", "import sys; from cpt_studio.core.cli import main; sys.exit(main())", "runs"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait() == 1 and "Traceback" not in error and "BrokenPipeError" not in error, error


def test_a_resumed_run_s_progress_prints_from_where_it_goes_on(tmp_path, capsys):
    """`cpt-studio resume` printed the run's whole history again (the baseline, the old
    '[stopped]') as if it were happening."""
    from cpt_studio.core.cli_runs import ProgressPrinter

    folder = tmp_path / "run"
    write_run(folder, state="stopped", steps=20, torn=False)
    printer = ProgressPrinter(folder / "events.jsonl")
    printer.catch_up()
    assert capsys.readouterr().out == "" and printer.total_steps == 20
    out = EventWriter(folder / "events.jsonl")
    out.emit("status", 20, state="running", phase="training", message="resumed from step 20", resumed_from=20)
    out.emit("eval", 30, baseline=False, **_scores(30, 30 * TOKENS_PER_STEP))
    out.close()
    printer.update()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[running] resumed from step 20" and lines[1].split()[:2] == ["step", "tokens"]
    assert [line.split()[0] for line in lines[2:]] == ["30"]


@pytest.mark.parametrize("follower", ["run", "evaluation", "sweep"])
def test_closing_the_terminal_asks_every_followed_job_to_stop(tmp_path, monkeypatch, follower):
    """A followed run stopped with a checkpoint when its terminal closed; a followed evaluation
    or sweep went on with no console (their workers live in sessions of their own)."""
    import os
    import signal

    from cpt_studio.core import cli_eval, cli_runs, cli_sweep, runs

    asked = []
    monkeypatch.setattr(cli_runs, "request_stop", asked.append)
    monkeypatch.setattr(runs, "request_eval_stop", asked.append)
    monkeypatch.setattr(cli_sweep, "request_sweep_stop", asked.append)

    class Terminal:  # the job's process; the terminal closes as the command first looks at it
        def poll(self):
            os.kill(os.getpid(), signal.SIGHUP)
            return None

    follow = {"run": cli_runs.follow, "evaluation": cli_eval.follow_evaluation, "sweep": cli_sweep.follow}[follower]
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as ended:
            follow(tmp_path, Terminal())
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
    assert ended.value.code == 128 + signal.SIGHUP and asked == [tmp_path]
