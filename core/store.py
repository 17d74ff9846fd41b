"""The run store: an SQLite index (sqlite-utils, WAL) of the run folders.

    db = open_store()                       # data_dir()/cpt-studio.db
    run_id = index_run(db, run_dir)         # (re)read config.json and events.jsonl
    print(format_runs(list_runs(db)))       # what `cpt-studio runs` prints
    print(format_run(db, "2025-06-01-med")) # what `cpt-studio show RUN` prints

The folders are the truth (DESIGN.md, "A run is a folder"); the store is a cache of them
for the history and comparison views, and `rebuild` recreates it from the folders. A
run's id is the absolute path of its folder. The functions a person calls by hand
(get_run, rename_run, delete_run, format_run) also accept a run's name or a unique
prefix of its folder name; the curve readers (run_metrics, ...) take the id.

The store never writes into a run folder, except rename_run: the config is frozen, so
the display name lives in the folder's `display_name` file, which index_run reads.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from .events import read_events, timeline
from .paths import data_dir
from .recommend import (
    MAX_GENERAL_DROP,
    checkpoint_scores,
    general_drops,
    pareto_front,
    recommendation,
)
from .runs import runs_dir

DISPLAY_NAME_FILE = "display_name"
FINAL_STATES = ("finished", "stopped", "failed")
TABLES = ("runs", "metrics", "evaluations", "checkpoints", "guard", "events", "benchmarks")
EVAL_FIELDS = ("domain_ppl", "general_ppl", "domain_loss", "general_loss", "forgetting",
               "domain_gain", "domain_bpb", "general_bpb")
CHECKPOINT_EVAL_FIELDS = ("domain_ppl", "general_ppl", "forgetting", "domain_gain", "domain_bpb",
                          "general_bpb")
GUARD_FIELDS = ("reason", "action", "forgetting", "threshold", "rolled_back_to", "remedy")
SCORE_FIELDS = frozenset(EVAL_FIELDS + ("best_domain_gain", "threshold"))
"""Number columns that may hold a NaN (stored as "nan", cpt_studio.core.store._storable)."""
BENCHMARK_FIELDS = ("checkpoint", "task", "kind", "metric", "value", "stderr", "num_fewshot",
                    "limit", "samples", "task_version", "harness_version", "higher_is_better",
                    "primary", "cached")
NOT_METRICS = ("type", "time", "step", "tokens")
"""Fields of a step event that are not curves; every other number is one (loss, lr, ...)."""
OWN_TABLE = ("step", "eval", "checkpoint", "guard")
"""Event types with a table of their own; the others are kept whole in `events`."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,  -- absolute path of the run folder
    name TEXT, model TEXT,
    state TEXT, phase TEXT, message TEXT,  -- from the last status event
    started REAL, updated REAL, finished REAL,  -- unix seconds
    steps INTEGER, total_steps INTEGER, tokens INTEGER,
    domain_gain REAL, forgetting REAL,  -- latest evaluation
    best_domain_gain REAL,
    config TEXT,  -- the frozen RunConfig, JSON
    error TEXT,  -- the message of a failed run
    recommendation TEXT  -- why the recommended checkpoint is the one (cpt_studio.core.recommend)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, step INTEGER, tokens INTEGER, time REAL,
    name TEXT NOT NULL, value REAL
);
CREATE INDEX IF NOT EXISTS metrics_run_name_step ON metrics (run_id, name, step);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id TEXT NOT NULL, step INTEGER, tokens INTEGER, time REAL,
    domain_ppl REAL, general_ppl REAL, domain_loss REAL, general_loss REAL,
    forgetting REAL, domain_gain REAL, baseline INTEGER,
    domain_bpb REAL, general_bpb REAL  -- bits per byte: comparable across tokenizers
);
CREATE INDEX IF NOT EXISTS evaluations_run ON evaluations (run_id, step);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL, step INTEGER, tokens INTEGER, time REAL,
    path TEXT,  -- relative to the run folder
    "exists" INTEGER,  -- 0 once rotation deleted the folder
    domain_ppl REAL, general_ppl REAL, forgetting REAL, domain_gain REAL,
    recommended INTEGER,  -- 1 for the run's recommended checkpoint (cpt_studio.core.recommend)
    pareto INTEGER,  -- 1 when on the Pareto front of domain gain against forgetting
    domain_bpb REAL, general_bpb REAL
);
CREATE INDEX IF NOT EXISTS checkpoints_run ON checkpoints (run_id, step);
CREATE TABLE IF NOT EXISTS guard (
    run_id TEXT NOT NULL, step INTEGER, time REAL,
    reason TEXT, action TEXT, forgetting REAL, threshold REAL,
    rolled_back_to, remedy  -- kept as the worker wrote them (a path, a step, a sentence)
);
CREATE INDEX IF NOT EXISTS guard_run ON guard (run_id, step);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, step INTEGER, time REAL, type TEXT,
    data TEXT  -- the whole event, JSON
);
CREATE INDEX IF NOT EXISTS events_run_type ON events (run_id, type);
CREATE TABLE IF NOT EXISTS benchmarks (
    run_id TEXT NOT NULL, step INTEGER, time REAL,  -- step 0: the base model
    checkpoint TEXT,  -- "base" or the checkpoint's folder name
    task TEXT, kind TEXT,  -- kind: domain, general or probe
    metric TEXT, value REAL, stderr REAL,
    num_fewshot INTEGER, "limit" INTEGER, samples INTEGER,
    task_version TEXT, harness_version TEXT,
    higher_is_better INTEGER, "primary" INTEGER, cached INTEGER
);
CREATE INDEX IF NOT EXISTS benchmarks_run ON benchmarks (run_id, task, step);
PRAGMA user_version = 3;
"""
ADDED_COLUMNS = {"checkpoints": {"recommended": int, "pareto": int, "domain_bpb": float,
                                  "general_bpb": float},
                  "evaluations": {"domain_bpb": float, "general_bpb": float},
                  "runs": {"recommendation": str}}
"""Columns added since a table was first created: an older store gains them when opened."""
DEFAULT_RECOMMEND_MAX_FORGETTING = 0.03
"""The forgetting target of a run whose config predates CheckpointConfig.recommend_max_forgetting."""


# -- opening -------------------------------------------------------------------------------

BUSY_TIMEOUT_MS = 30_000
"""How long a writer waits for another process's transaction on the store."""


@contextmanager
def writing(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction that takes the write lock at its start (BEGIN IMMEDIATE), so that a
    second process waits for it (busy timeout) instead of failing. sqlite-utils' atomic() begins
    a deferred transaction: one that reads first and writes later fails at once with
    "database is locked" when another process wrote in between."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.conn.rollback()
        raise
    db.conn.execute("COMMIT")


def default_db_path() -> Path:
    return data_dir() / "cpt-studio.db"


def open_store(path: Path | str | None = None) -> sqlite_utils.Database:
    """Open the store, creating its tables if needed; ":memory:" gives a throwaway one.

    WAL lets the GUI read while the CLI or another window writes."""
    if str(path) == ":memory:":
        db = sqlite_utils.Database(memory=True)
    else:
        path = Path(path) if path else default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two windows, or the CLI and the app, may write at once: a writer waits up to
        # BUSY_TIMEOUT_MS for the other's transaction instead of failing "database is locked".
        db = sqlite_utils.Database(sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000))
        db.enable_wal()
    db.executescript(SCHEMA)
    for table, columns in ADDED_COLUMNS.items():
        for name, kind in columns.items():
            if name not in db[table].columns_dict:
                db[table].add_column(name, kind)
    return db


# -- indexing ------------------------------------------------------------------------------

def index_run(db: sqlite_utils.Database, run_dir: Path | str) -> str:
    """(Re)index one run folder from its files, in one transaction; returns the run's id."""
    run_dir = Path(run_dir).expanduser().resolve()
    config = _read_config(run_dir)
    events = _read_run_events(run_dir / "events.jsonl")
    run_id = str(run_dir)
    with writing(db):
        _delete_rows(db, run_id)
        checkpoints, reason = _checkpoint_rows(run_id, run_dir, events, config)
        db["runs"].insert({**_run_row(run_id, run_dir, config, events), "recommendation": reason})
        db["metrics"].insert_all(_metric_rows(run_id, events))
        db["evaluations"].insert_all(_evaluation_rows(run_id, events))
        db["checkpoints"].insert_all(checkpoints)
        db["guard"].insert_all(_guard_rows(run_id, events))
        db["events"].insert_all(_other_rows(run_id, events))
        db["benchmarks"].insert_all(_benchmark_rows(run_id, events))
    return run_id


def rebuild(db: sqlite_utils.Database, roots: list[Path] | None = None) -> int:
    """Empty the store and index every run folder directly under each root (default: the
    runs folder); returns how many. All or nothing: a bad folder leaves the store as it was."""
    if roots is None:
        roots = [runs_dir()]
    roots = [Path(root).expanduser() for root in roots]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"runs folder {root} does not exist; check the path")
    folders = [folder for root in roots for folder in run_folders(root)]
    with writing(db):
        for table in TABLES:
            db[table].delete_where()
        for folder in folders:
            index_run(db, folder)
    return len(folders)


def run_folders(root: Path) -> list[Path]:
    """The run folders directly under `root`: those with a config.json and an events.jsonl."""
    return sorted(folder for folder in Path(root).iterdir()
                  if (folder / "config.json").is_file() and (folder / "events.jsonl").is_file())


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); restore the run's config") from err


def _read_run_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []  # the worker has not written its first event yet
    try:
        return timeline(read_events(path)[0])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {_bad_line(path)}: not a JSON event ({err.msg}); delete "
                         "that line, or move the run folder out of the runs folder") from err


def _bad_line(path: Path) -> int | None:
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError:
                return number
    return None


def _delete_rows(db: sqlite_utils.Database, run_id: str) -> None:
    for table in TABLES:
        db[table].delete_where("id = ?" if table == "runs" else "run_id = ?", [run_id])


# -- rows from events ----------------------------------------------------------------------

def _run_row(run_id: str, run_dir: Path, config: dict, events: list[dict]) -> dict[str, Any]:
    return {"id": run_id, "name": _display_name(run_dir, config),
            "model": _model_name(config.get("model")), **_progress(events),
            **_scores(_of_type(events, "eval")), "config": json.dumps(config)}


def _display_name(run_dir: Path, config: dict) -> str:
    renamed = run_dir / DISPLAY_NAME_FILE
    name = renamed.read_text(encoding="utf-8").strip() if renamed.is_file() else ""
    return name or str(config.get("name") or run_dir.name)


def _model_name(model: Any) -> str:
    """The base model as the user named it; "model" is a section, or a string in early runs."""
    if isinstance(model, dict):
        model = model.get("name_or_path")
    return str(model or "")


def _progress(events: list[dict]) -> dict[str, Any]:
    """What the status and step events say: where the run is and how far it got."""
    statuses = _of_type(events, "status")
    status = statuses[-1] if statuses else {}
    steps = _of_type(events, "step")
    state = status.get("state")
    return {
        "state": state, "phase": status.get("phase"), "message": status.get("message"),
        "started": events[0].get("time") if events else None,
        "updated": events[-1].get("time") if events else None,
        "finished": status.get("time") if state in FINAL_STATES else None,
        "steps": steps[-1].get("step") if steps else 0,
        "total_steps": _last_known(statuses, "total_steps"),
        "tokens": steps[-1].get("tokens") if steps else 0,
        "error": _error(status) if state == "failed" else None,
    }


def _error(status: dict) -> str:
    code = status.get("exit_code")
    message = status.get("message") or "the worker failed"
    return message if code is None else f"{message} (exit code {code})"


def _scores(evals: list[dict]) -> dict[str, Any]:
    trained = [e["domain_gain"] for e in evals
               if not e.get("baseline") and _finite(e.get("domain_gain"))]
    return {"domain_gain": _storable(evals[-1].get("domain_gain")) if evals else None,
            "forgetting": _storable(evals[-1].get("forgetting")) if evals else None,
            "best_domain_gain": max(trained, default=None)}


def _metric_rows(run_id: str, events: list[dict]):
    for event in _of_type(events, "step"):
        for name, value in event.items():
            if name not in NOT_METRICS and _is_number(value):
                yield {"run_id": run_id, "step": event.get("step"), "tokens": event.get("tokens"),
                       "time": event.get("time"), "name": name, "value": _storable(value)}


def _evaluation_rows(run_id: str, events: list[dict]):
    for event in _of_type(events, "eval"):
        yield {**_where(run_id, event), "tokens": event.get("tokens"),
               **{field: _storable(event.get(field)) for field in EVAL_FIELDS},
               "baseline": bool(event.get("baseline"))}


def _checkpoint_rows(run_id: str, run_dir: Path, events: list[dict],
                     config: dict) -> tuple[list[dict[str, Any]], str]:
    """One row per checkpoint, with its scores, and the recommended one and the Pareto front
    marked among those that still exist; and the reason for the recommendation."""
    scores_at = {e.get("step"): e for e in _of_type(events, "eval")}  # the last eval per step
    latest = {e.get("path"): e for e in _of_type(events, "checkpoint")}  # a re-save replaces
    rows = []
    for path, event in latest.items():
        scores = scores_at.get(event.get("step"), {})
        rows.append({**_where(run_id, event), "tokens": event.get("tokens"), "path": path,
                     "exists": bool(path) and (run_dir / path).is_dir(),
                     **{field: _first_known(event.get(field), scores.get(field))
                        for field in CHECKPOINT_EVAL_FIELDS}})
    kept = checkpoint_scores(row for row in rows if row["exists"])
    for row in rows:
        row.update({field: _storable(row[field]) for field in CHECKPOINT_EVAL_FIELDS})
    drops = general_drops(e for e in events if e.get("type") == "benchmark")
    best, reason = recommendation(kept, _target(config), drops=drops, max_drop=_max_drop(config))
    front = set(pareto_front(kept))
    for row in rows:
        row["recommended"] = row["exists"] and row["step"] == best
        row["pareto"] = row["exists"] and row["step"] in front
    return rows, reason if rows else ""


def _max_drop(config: dict) -> float:
    """The run's limit on a general benchmark's drop (cpt_studio.core.config.BenchmarkConfig)."""
    benchmarks = config.get("benchmarks")
    value = benchmarks.get("max_general_drop") if isinstance(benchmarks, dict) else None
    return MAX_GENERAL_DROP if value is None else float(value)


def _target(config: dict) -> float:
    """The run's forgetting target for the recommended checkpoint."""
    checkpoints = config.get("checkpoints")
    target = checkpoints.get("recommend_max_forgetting") if isinstance(checkpoints, dict) else None
    return DEFAULT_RECOMMEND_MAX_FORGETTING if target is None else float(target)


def _guard_rows(run_id: str, events: list[dict]):
    for event in _of_type(events, "guard"):
        yield {**_where(run_id, event),
               **{field: _storable(_plain(event.get(field))) for field in GUARD_FIELDS}}


def _benchmark_rows(run_id: str, events: list[dict]):
    """One row per score of a benchmark or probe event (cpt_studio.core.evaljob)."""
    for event in events:
        if event.get("type") in ("benchmark", "probe") and event.get("metric"):
            yield {**_where(run_id, event),
                   **{f: _plain(event.get(f)) for f in BENCHMARK_FIELDS}}


def _other_rows(run_id: str, events: list[dict]):
    for event in events:
        if event.get("type") not in OWN_TABLE:
            yield {**_where(run_id, event), "type": event.get("type"), "data": json.dumps(event)}


def _where(run_id: str, event: dict) -> dict[str, Any]:
    return {"run_id": run_id, "step": event.get("step"), "time": event.get("time")}


def _of_type(events: list[dict], type: str) -> list[dict]:
    return [event for event in events if event.get("type") == type]


def _last_known(events: list[dict], field: str) -> Any:
    return next((e[field] for e in reversed(events) if e.get(field) is not None), None)


def _first_known(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


NAN = "nan"
"""How a NaN is stored: SQLite turns a NaN REAL into NULL, which would read as 'not measured'."""


def _storable(value: Any) -> Any:
    return NAN if isinstance(value, float) and math.isnan(value) else value


def _number(value: Any) -> Any:
    return math.nan if value == NAN else value


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _plain(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


# -- reading -------------------------------------------------------------------------------

def list_runs(db: sqlite_utils.Database, state: str | None = None,
              model: str | None = None) -> list[dict[str, Any]]:
    """Runs newest first; `model` keeps those whose model contains it (any case)."""
    where, args = [], []
    if state:
        where.append("state = ?")
        args.append(state)
    if model:
        where.append("instr(lower(model), lower(?)) > 0")
        args.append(model)
    rows = db["runs"].rows_where(" and ".join(where) or None, args,
                                 order_by="coalesce(started, updated) desc, id")
    return [_run_dict(row) for row in rows]


def get_run(db: sqlite_utils.Database, run: str | Path) -> dict[str, Any]:
    """A run by its folder path, its folder name, its name, or a unique folder-name prefix."""
    key = str(run)
    runs = list(db["runs"].rows_where(select="id, name", order_by="id"))
    found = next((matches for matches in (
        [r for r in runs if r["id"] == str(Path(key).expanduser().resolve())],
        [r for r in runs if Path(r["id"]).name == key],
        [r for r in runs if r["name"] == key],
        [r for r in runs if Path(r["id"]).name.startswith(key)],
    ) if matches), [])
    if len(found) != 1:
        raise LookupError(_not_found(key, found, runs))
    return _run_dict(db["runs"].get(found[0]["id"]))


def _not_found(key: str, found: list[dict], runs: list[dict]) -> str:
    if found:
        return (f"{key!r} matches {len(found)} runs: {_listing(found)}; give more of the "
                "folder name, or the folder's path")
    if runs:
        return f"no run matches {key!r}; the runs are: {_listing(runs)}"
    return f"no run matches {key!r}: the store has no runs (rebuild it from the runs folder)"


def _listing(runs: list[dict], most: int = 10) -> str:
    names = [f"{Path(r['id']).name} ({r['name']})" for r in runs[:most]]
    more = f" and {len(runs) - most} more" if len(runs) > most else ""
    return ", ".join(names) + more


def _run_dict(row: dict) -> dict[str, Any]:
    return {**row, **{k: _number(row[k]) for k in SCORE_FIELDS if k in row},
            "config": json.loads(row["config"] or "{}")}


def run_metrics(db: sqlite_utils.Database, run_id: str, name: str) -> list[tuple]:
    """One curve, in the order the worker logged it: (step, tokens, value) per step event."""
    rows = db["metrics"].rows_where("run_id = ? and name = ?", [run_id, name], order_by="rowid")
    return [(row["step"], row["tokens"], _number(row["value"])) for row in rows]


def run_evaluations(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    return [{**row, "baseline": bool(row["baseline"])} for row in _rows(db, "evaluations", run_id)]


def run_checkpoints(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    """The checkpoints by step, each with its scores and whether it is the recommended one
    and on the Pareto front (what the comparison view plots)."""
    rows = _rows(db, "checkpoints", run_id, order_by="step, rowid")
    return [{**row, "exists": bool(row["exists"]), "recommended": bool(row["recommended"]),
             "pareto": bool(row["pareto"])} for row in rows]


def run_guard(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    """The guard's decisions, in order."""
    return _rows(db, "guard", run_id)


def run_benchmarks(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    """Every benchmark and probe score of a run, in the order they were written (a score
    computed again later comes after the earlier one)."""
    flags = ("higher_is_better", "primary", "cached")
    return [{**row, **{f: bool(row[f]) for f in flags}} for row in _rows(db, "benchmarks", run_id)]


def run_events(db: sqlite_utils.Database, run_id: str,
               type: str | None = None) -> list[dict[str, Any]]:
    """Status, log, probe and benchmark events, whole, in order (the others have tables)."""
    rows = _rows(db, "events", run_id)
    return [json.loads(row["data"]) for row in rows if type is None or row["type"] == type]


def _rows(db: sqlite_utils.Database, table: str, run_id: str,
          order_by: str = "rowid") -> list[dict[str, Any]]:
    return [{k: _number(v) if k in SCORE_FIELDS else v for k, v in row.items()}
            for row in db[table].rows_where("run_id = ?", [run_id], order_by=order_by)]


# -- changing ------------------------------------------------------------------------------

def delete_run(db: sqlite_utils.Database, run: str | Path) -> str:
    """Forget a run (its rows only; deleting its folder is the caller's choice); returns its id."""
    run_id = get_run(db, run)["id"]
    with writing(db):
        _delete_rows(db, run_id)
    return run_id


def rename_run(db: sqlite_utils.Database, run: str | Path, name: str) -> str:
    """Give a run a display name, kept across re-indexing; returns its id.

    The frozen config.json is never edited: the name goes into the folder's display_name."""
    name = name.strip()
    if not name:
        raise ValueError("a run's name cannot be empty; type a name")
    run_id = get_run(db, run)["id"]
    folder = Path(run_id)
    if folder.is_dir():  # a folder already gone would leave the store at the next rebuild
        (folder / DISPLAY_NAME_FILE).write_text(name + "\n", encoding="utf-8")
    db["runs"].update(run_id, {"name": name})
    return run_id


# -- text for the CLI ----------------------------------------------------------------------

RUNS_HEADER = ("name", "state", "model", "started", "steps", "tokens", "domain gain",
               "forgetting")
RIGHT_ALIGNED = {"steps", "tokens", "domain gain", "forgetting"}


def format_runs(rows: list[dict[str, Any]]) -> str:
    """The runs as a plain-text table, one line each (what `cpt-studio runs` prints)."""
    if not rows:
        return "no runs"
    cells = [RUNS_HEADER] + [_run_cells(row) for row in rows]
    return _table(cells, [name in RIGHT_ALIGNED for name in RUNS_HEADER])


def _run_cells(row: dict[str, Any]) -> tuple[str, ...]:
    steps = str(row["steps"] or 0)
    if row["total_steps"]:
        steps += f"/{row['total_steps']}"
    return (row["name"] or "", row["state"] or "-", _shorten(row["model"] or "-"),
            _when(row["started"]), steps, _count(row["tokens"]),
            _percent(row["domain_gain"]), _percent(row["forgetting"]))


def _table(cells: list[tuple[str, ...]], right: list[bool]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(right))]
    return "\n".join(_line(row, widths, right) for row in cells)


def _line(cells: tuple[str, ...], widths: list[int], right: list[bool]) -> str:
    padded = (cell.rjust(width) if r else cell.ljust(width)
              for cell, width, r in zip(cells, widths, right, strict=True))
    return "  ".join(padded).rstrip()


def format_run(db: sqlite_utils.Database, run: str | Path) -> str:
    """The key numbers of one run's curves (what `cpt-studio show RUN` prints)."""
    row = get_run(db, run)
    evals = run_evaluations(db, row["id"])
    lines = _summary_lines(row) + _perplexity_lines(evals) + _gain_lines(evals)
    lines += _loss_lines(run_metrics(db, row["id"], "loss"))
    lines += _guard_lines(run_guard(db, row["id"]))
    checkpoints = run_checkpoints(db, row["id"])
    lines += _recommended_lines(checkpoints, _target(row["config"]), row.get("recommendation"))
    lines += _benchmark_lines(run_benchmarks(db, row["id"]))
    lines += _checkpoint_lines(checkpoints)
    return "\n".join(lines)


def _summary_lines(row: dict[str, Any]) -> list[str]:
    total = f" of {row['total_steps']:,}" if row["total_steps"] else ""
    message = f": {row['message']}" if row["message"] else ""
    lines = [
        _field("run", row["name"]),
        _field("folder", row["id"]),
        _field("model", row["model"] or "-"),
        _field("state", f"{row['state'] or 'not started'} ({row['phase'] or '-'}){message}"),
        _field("started", f"{_when(row['started'])}, ended {_when(row['finished'])}"),
        _field("steps", f"{row['steps'] or 0:,}{total}"),
        _field("tokens", f"{row['tokens'] or 0:,}"),
    ]
    return lines + ([_field("error", row["error"])] if row["error"] else [])


def _perplexity_lines(evals: list[dict[str, Any]]) -> list[str]:
    baseline = next((e for e in evals if e["baseline"]), None)
    last = next((e for e in reversed(evals) if not e["baseline"]), None)
    if not baseline and not last:
        return [_field("perplexity", "no evaluation yet")]
    return [_field("perplexity", f"{'baseline':>8}  {'last':>8}")] + [
        _field(f"  {label}", f"{_ppl(baseline, field):>8}  {_ppl(last, field):>8}")
        for label, field in (("domain", "domain_ppl"), ("general", "general_ppl"))]


def _gain_lines(evals: list[dict[str, Any]]) -> list[str]:
    trained = [e for e in evals if not e["baseline"]]
    best = max((e for e in trained if _finite(e["domain_gain"])),
               key=lambda e: e["domain_gain"], default=None)
    worst = max((e for e in trained if _finite(e["forgetting"])),
                key=lambda e: e["forgetting"], default=None)
    return [_field("best domain gain", f"{_percent(best and best['domain_gain'])}{_at(best)}"),
            _field("max forgetting", f"{_percent(worst and worst['forgetting'])}{_at(worst)}")]


def _loss_lines(loss: list[tuple]) -> list[str]:
    if not loss:
        return [_field("loss", "no steps yet")]
    low = min((p for p in loss if _finite(p[2])), key=lambda point: point[2], default=None)
    lowest = f"min {low[2]:.4f} at step {low[0]}" if low else "no finite value"
    bad = sum(1 for p in loss if _is_number(p[2]) and not math.isfinite(p[2]))
    return [_field("loss", f"first {loss[0][2]:.4f}, last {loss[-1][2]:.4f}, {lowest}"
                           + (f"; {bad} non-finite step(s)" if bad else ""))]


def _guard_lines(guard: list[dict[str, Any]]) -> list[str]:
    return [_field("guard", f"step {g['step']}: {g['reason']}; {g['action']}"
                   + (f" to {g['rolled_back_to']}" if g["rolled_back_to"] is not None else "")
                   + (f"; {g['remedy']}" if g["remedy"] else "")) for g in guard]


def _recommended_lines(checkpoints: list[dict[str, Any]], target: float,
                       reason: str | None = None) -> list[str]:
    best = next((c for c in checkpoints if c["recommended"]), None)
    front = sorted((c for c in checkpoints if c["pareto"]), key=lambda c: c["forgetting"])
    if best is None:
        text = (f"none: no checkpoint forgets at most {target:.1%}" if checkpoints
                else "none yet")
    else:
        text = (f"step {best['step']} ({best['path']}): domain gain {_percent(best['domain_gain'])}, "
                f"forgetting {_percent(best['forgetting'])}, within the {target:.1%} target")
    lines = [_field("recommended", text)]
    if reason:
        lines.append(_field("  why", reason))
    if front:
        points = ", ".join(f"step {c['step']} ({_percent(c['domain_gain'])} gain, "
                           f"{_percent(c['forgetting'])} forgetting)" for c in front)
        lines.append(_field("pareto front", points))
    return lines


def _benchmark_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The headline metric of each task, base and each evaluated checkpoint."""
    latest = {(r["task"], r["step"]): r for r in rows if r["primary"]}
    tasks = list(dict.fromkeys(task for task, _ in latest))
    lines = []
    for task in tasks:
        scores = sorted((step, r) for (t, step), r in latest.items() if t == task)
        kind, metric = scores[0][1]["kind"], scores[0][1]["metric"]
        values = ", ".join(f"{'base' if step == 0 else f'step {step}'} {r['value']:.3f}"
                           for step, r in scores)
        lines.append(_field(f"  {task}", f"{metric} ({kind}): {values}"))
    return [_field("benchmarks", "")] + lines if lines else []


def _field(label: str, value: str) -> str:
    return f"{label:<18}{value}"


def _checkpoint_lines(checkpoints: list[dict[str, Any]]) -> list[str]:
    if not checkpoints:
        return [_field("checkpoints", "none")]
    cells = [("  step", "tokens", "domain ppl", "general ppl", "domain gain", "forgetting",
              "", "path")]
    cells += [(f"  {c['step']}", _count(c["tokens"]), _ppl(c, "domain_ppl"),
               _ppl(c, "general_ppl"), _percent(c["domain_gain"]), _percent(c["forgetting"]),
               _mark(c), c["path"] + ("" if c["exists"] else " (deleted)")) for c in checkpoints]
    return ["checkpoints", _table(cells, [True] * 6 + [False, False])]


def _mark(checkpoint: dict[str, Any]) -> str:
    return "recommended" if checkpoint["recommended"] else "pareto" if checkpoint["pareto"] else ""


def _ppl(event: dict[str, Any] | None, field: str) -> str:
    value = event and event.get(field)
    return f"{value:.2f}" if value is not None else "-"


def _at(event: dict[str, Any] | None) -> str:
    return f" at step {event['step']}" if event else ""


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "-"
    return f"{fraction * 100:+.1f}%" if math.isfinite(fraction) else str(fraction)


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "-"


def _shorten(text: str, most: int = 40) -> str:
    """Long model paths keep their end, which names the model."""
    return text if len(text) <= most else "…" + text[-(most - 1):]
