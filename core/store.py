"""The run store: an SQLite index (sqlite-utils, WAL) of the run folders.

    db = open_store()                       # data_dir()/.store/cpt-studio.db
    with connection() as db: ...            # opened for one action, then closed (the GUI's way)
    run_id = index_run(db, run_dir)         # (re)read config.json and events.jsonl
    print(format_runs(list_runs(db)))       # what `cpt-studio runs` prints
    print(format_run(db, "2025-06-01-med")) # what `cpt-studio show RUN` prints

The folders are the truth (docs/architecture.md, "A run is a folder"); the store is a cache of them
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
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .chain import parent_link
from .events import (
    FINAL_STATES,
    BenchmarkEvent,
    CheckpointEvent,
    EvalEvent,
    Event,
    GuardEvent,
    ProbeEvent,
    StatusEvent,
    StepEvent,
)
from .paths import data_dir
from .recommend import (
    MAX_GENERAL_DROP,
    checkpoint_scores,
    general_drops,
    is_finite_number,
    is_number,
    pareto_front,
    recommendation,
)
from .run_folder import RunPaths
from .runs import effective_state, runs_dir
from .timeline import RunTimeline

DISPLAY_NAME_FILE = "display_name"
EVAL_FIELDS = ("domain_ppl", "general_ppl", "domain_loss", "general_loss", "forgetting",
               "domain_gain", "domain_bpb", "general_bpb")
CHECKPOINT_EVAL_FIELDS = ("domain_ppl", "general_ppl", "forgetting", "domain_gain", "domain_bpb",
                          "general_bpb")
GUARD_FIELDS = ("reason", "action", "forgetting", "threshold", "rolled_back_to", "remedy", "message")
SCORE_FIELDS = frozenset(EVAL_FIELDS + ("best_domain_gain", "threshold"))
"""Number columns that may hold a NaN (stored as "nan", cpt_studio.core.store._storable)."""
BENCHMARK_FIELDS = ("checkpoint", "task", "kind", "metric", "value", "stderr", "num_fewshot",
                    "limit", "samples", "task_version", "harness_version", "higher_is_better",
                    "primary", "cached")
NOT_METRICS = ("type", "time", "step", "tokens")
"""Fields of a step event that are not curves; every other number is one (loss, lr, ...)."""

TABLE_COLUMNS: dict[str, dict[str, type]] = {
    "runs": {"id": str,  # absolute path of the run folder
             "name": str, "model": str,
             "state": str, "phase": str, "message": str,  # from the last status event
             "started": float, "updated": float, "finished": float,  # unix seconds
             "steps": int, "total_steps": int, "tokens": int,
             "domain_gain": float, "forgetting": float,  # latest evaluation
             "best_domain_gain": float,
             "config": str,  # the frozen RunConfig, JSON
             "error": str,  # the message of a failed run
             "recommendation": str,  # why the recommended checkpoint is the one (core.recommend)
             "events_offset": int,  # bytes of events.jsonl indexed: the next index reads on
             "events_seen": str,  # the last bytes indexed, to tell a replaced file
             "stage": str,  # "cpt" or "sft"
             "parent_run": str, "parent_step": int,  # the checkpoint it started from (core.chain)
             "run_group": str},  # the sweep the run belongs to (its sweep.json), else NULL
    "metrics": {"run_id": str, "step": int, "tokens": int, "time": float, "name": str,
                "value": float},
    "evaluations": {"run_id": str, "step": int, "tokens": int, "time": float,
                    **dict.fromkeys(EVAL_FIELDS, float), "baseline": int},
    "checkpoints": {"run_id": str, "step": int, "tokens": int, "time": float,
                    "path": str,  # relative to the run folder
                    "exists": int,  # 0 once rotation deleted the folder
                    **dict.fromkeys(CHECKPOINT_EVAL_FIELDS, float),
                    "recommended": int,  # the run's recommended checkpoint (core.recommend)
                    "pareto": int},  # on the Pareto front of domain gain against forgetting
    "guard": {"run_id": str, "step": int, "time": float, "reason": str, "action": str,
              "forgetting": float, "threshold": float, "rolled_back_to": int, "remedy": str,
              "message": str},  # the decision in a sentence
    "events": {"run_id": str, "step": int, "time": float, "type": str,
               "data": str},  # the whole event, JSON
    "benchmarks": {"run_id": str, "step": int, "time": float,  # step 0: the base model
                   "checkpoint": str,  # "base" or the checkpoint's folder name
                   "task": str, "kind": str,  # kind: domain, general or probe
                   "metric": str, "value": float, "stderr": float, "num_fewshot": int,
                   "limit": int, "samples": int, "task_version": str, "harness_version": str,
                   "higher_is_better": int, "primary": int, "cached": int},
}
"""Each table's columns now. The store's schema changes only through MIGRATIONS below: a column
added here is added to an existing store by a new migration (and named in ADDED_SINCE_M001)."""
ADDED_SINCE_M001 = {"runs": ("events_offset", "events_seen", "stage", "parent_run", "parent_step",
                             "run_group"),
                    "guard": ("message",)}
"""Columns that later migrations add, so that m001 creates the tables as they were then."""
TABLES = tuple(TABLE_COLUMNS)
INDEXES = {"metrics": ("run_id", "name", "step"), "evaluations": ("run_id", "step"),
           "checkpoints": ("run_id", "step"), "guard": ("run_id", "step"),
           "events": ("run_id", "type"), "benchmarks": ("run_id", "task", "step")}
DEFAULT_RECOMMEND_MAX_FORGETTING = 0.03
"""The forgetting target of a run whose config predates CheckpointConfig.recommend_max_forgetting."""

MIGRATIONS = Migrations("cpt_studio.store")
"""The store's schema history (sqlite-utils' migrations, recorded in _sqlite_migrations)."""


@MIGRATIONS()
def m001_tables(db: sqlite_utils.Database) -> None:
    """The tables as of store version 3 (the last before migrations); create(transform=True)
    also brings a store made by an earlier version to them (added columns, column types)."""
    for name, columns in TABLE_COLUMNS.items():
        columns = {k: v for k, v in columns.items() if k not in ADDED_SINCE_M001.get(name, ())}
        db[name].create(columns, pk="id" if name == "runs" else None, transform=True,
                        not_null={"run_id"} if name != "runs" else None)
        if name in INDEXES:
            db[name].create_index(INDEXES[name], if_not_exists=True)


@MIGRATIONS()
def m002_incremental_index(db: sqlite_utils.Database) -> None:
    """runs.events_offset: where the next index of a run reads on from;
    the guard's rolled_back_to becomes the step (it was the checkpoint's path)."""
    db["runs"].add_column("events_offset", int)
    for row in db["guard"].rows_where("typeof(rolled_back_to) = 'text'", select="rowid, rolled_back_to"):
        found = re.search(r"(\d+)$", row["rolled_back_to"])
        db.execute("UPDATE guard SET rolled_back_to = ? WHERE rowid = ?",
                   [int(found.group(1)) if found else None, row["rowid"]])


@MIGRATIONS()
def m003_guard_message_and_seen_bytes(db: sqlite_utils.Database) -> None:
    """guard.message: the decision in a sentence (rows indexed before keep their `reason`, then
    a sentence, until the run is indexed again); runs.events_seen: the last bytes indexed, so
    that an events file replaced by another as long is read again from the start."""
    db["guard"].add_column("message", str)
    db["runs"].add_column("events_seen", str)


@MIGRATIONS()
def m004_run_parent(db: sqlite_utils.Database) -> None:
    """runs.stage, runs.parent_run, runs.parent_step: a chained run's stage and the checkpoint it
    started from (cpt_studio.core.chain), filled in for the runs already indexed from their config."""
    for column, kind in (("stage", str), ("parent_run", str), ("parent_step", int)):
        db["runs"].add_column(column, kind)
    for row in db["runs"].rows_where(select="id, config"):
        db["runs"].update(row["id"], _lineage_fields(json.loads(row["config"] or "{}")))


@MIGRATIONS()
def m005_run_group(db: sqlite_utils.Database) -> None:
    """runs.run_group: the sweep a run belongs to (the group id in its folder's sweep.json,
    cpt_studio.core.sweep), so that the history shows a sweep's runs together. Runs indexed
    before get it at their next index (a rebuild gives it to all)."""
    db["runs"].add_column("run_group", str)


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


STORE_FOLDER = ".store"
"""The store's folder in the data folder: hidden, and holding nothing else, so that no file
dialog on the data folder lists the store's files (below: why that matters)."""

STORE_FILE = "cpt-studio.db"


def default_db_path() -> Path:
    """data_dir()/.store/cpt-studio.db.

    Why a folder of its own: SQLite's WAL mode keeps its locks as POSIX advisory locks on the
    -shm file, and POSIX drops ALL of a process's locks on a file when the process closes ANY
    descriptor of it. Qt's file dialogs read the first bytes of files whose names have no known
    type (QMimeDatabase sniffs cpt-studio.db-wal and -shm) to choose their icons: a dialog that
    shows these files in the app's process silently drops its store locks; another process
    (a worker, the CLI) then believes it is the store's last user, checkpoints and deletes the
    WAL, and the app's open connection reads a stale index: "database disk image is malformed"
    (checked with a script: an open connection, QMimeDatabase().mimeTypeForFile on the -shm file,
    a write from another process: the connection no longer sees that write). The app also keeps
    no connection open between actions (`connection`), so that a lock dropped anyway costs at
    most one action, which `repair` then recovers."""
    return data_dir() / STORE_FOLDER / STORE_FILE


def _remove_old_store() -> None:
    """The store of versions before the .store folder (data_dir()/cpt-studio.db): a cache of
    the run folders like the new one (the history re-indexes the folders), removed so that it
    is not left behind unused."""
    for suffix in ("", "-wal", "-shm"):
        (data_dir() / f"{STORE_FILE}{suffix}").unlink(missing_ok=True)


@contextmanager
def connection(path: Path | str | None = None) -> Iterator[sqlite_utils.Database]:
    """The store opened for one action and closed after it (open_store's arguments)."""
    db = open_store(path)
    try:
        yield db
    finally:
        db.close()


def database_file(db: sqlite_utils.Database) -> Path | None:
    """The file a store connection has open; None for an in-memory store."""
    row = db.execute("PRAGMA database_list").fetchone()  # (seq, schema name, file)
    return Path(row[2]) if row and row[2] else None


class StoreRef:
    """Where a store is, for a window that reads it again later without holding a connection
    open in between (default_db_path says why):

        ref = StoreRef(db)               # the store `db` is connected to
        with ref.open() as db: ...       # a fresh connection to it, closed after

    An in-memory store (tests) has no file: its connection is kept and reused."""

    def __init__(self, db: sqlite_utils.Database):
        self.path = database_file(db)
        self._memory = db if self.path is None else None

    @contextmanager
    def open(self) -> Iterator[sqlite_utils.Database]:
        if self._memory is not None:
            yield self._memory
            return
        with connection(self.path) as db:
            yield db


def repair(path: Path | str | None = None) -> Path | None:
    """After an sqlite3.DatabaseError from the store: check the file with a fresh connection
    (PRAGMA quick_check). A damaged store is renamed aside (returned: cpt-studio.db.damaged-N),
    so that the next open_store starts an empty one that indexing refills from the run folders
    (the store is their cache); a sound one is left alone (the error was one stale read: see
    default_db_path) and None is returned."""
    path = Path(path) if path else default_db_path()
    if not path.exists():
        return None
    try:
        probe = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            if probe.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                return None
        finally:
            probe.close()
    except sqlite3.DatabaseError:
        pass  # not a database at all: set aside as well
    n = 1
    while path.with_name(f"{path.name}.damaged-{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return aside


def open_store(path: Path | str | None = None) -> sqlite_utils.Database:
    """Open the store, bringing its schema up to date (MIGRATIONS); ":memory:" gives a
    throwaway one.

    WAL lets the GUI read while the CLI or another window writes."""
    if str(path) == ":memory:":
        db = sqlite_utils.Database(memory=True)
    else:
        if not path and not default_db_path().exists():
            _remove_old_store()  # once, when the new store is made: not at every open
        path = Path(path) if path else default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two windows, or the CLI and the app, may write at once: a writer waits up to
        # BUSY_TIMEOUT_MS for the other's transaction instead of failing "database is locked".
        db = sqlite_utils.Database(sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000))
    try:
        if str(path) != ":memory:":
            db.enable_wal()
        if MIGRATIONS.pending(db):
            # Two processes opening an old (or new) store at once: the first takes the write lock
            # and migrates; the second waits for it (busy timeout), then finds nothing pending.
            # sqlite-utils' apply() nests each migration in a savepoint of this transaction.
            with writing(db):
                if MIGRATIONS.pending(db):
                    MIGRATIONS.apply(db)
    except BaseException:  # a store that cannot be opened leaves no connection behind
        db.close()
        raise
    return db


# -- indexing ------------------------------------------------------------------------------

def index_run(db: sqlite_utils.Database, run_dir: Path | str) -> str:
    """Index one run folder, from where its last indexing stopped reading events.jsonl (all
    of it the first time, or when the file or the config changed since); returns its id.

    Raises FileNotFoundError for a folder without config.json and ValueError (naming the file
    and line) for a config or an event line that is not JSON."""
    run_dir = Path(run_dir).expanduser().resolve()
    config = _read_config(run_dir)
    run_id, events = str(run_dir), RunPaths(run_dir).events
    row = db["runs"].get(run_id) if db["runs"].count_where("id = ?", [run_id]) else None
    offset = _resume_offset(row, config, events)
    indexer = _Indexer(db, run_id, events, offset)
    with writing(db):
        if offset == 0:
            _delete_rows(db, run_id)
        indexer.update()  # EventsFileError names a bad line
        reason = _mark_checkpoints(db, run_id, run_dir, config)
        db["runs"].upsert({**_run_row(db, run_id, run_dir, config, row if offset else None, indexer),
                           "recommendation": reason, "events_offset": indexer.tail.offset,
                           "events_seen": _seen(events, indexer.tail.offset)}, pk="id")
    return run_id


SEEN_BYTES = 256
"""How much of the start and of the end of what was indexed is kept to recognise the file."""


def _resume_offset(row: dict | None, config: dict, events: Path) -> int:
    """Where to read on from: 0 (everything again) unless the run was indexed before with this
    config and its events file still holds, where the last index stopped, the bytes it saw
    there (a live run's file only grows; a replaced or edited one is read again)."""
    if row is None or not row.get("events_offset") or row["config"] != json.dumps(config):
        return 0
    offset = row["events_offset"]
    return offset if _seen(events, offset) == row.get("events_seen") else 0


def _seen(events: Path, offset: int) -> str | None:
    """The first and the last SEEN_BYTES of the file's first `offset` bytes, as hex (None when
    the file is shorter): enough to tell a file replaced by another, without reading it all. An
    edit in the middle of the indexed part goes unnoticed until `store rebuild`."""
    if not events.exists() or events.stat().st_size < offset:
        return None
    with open(events, "rb") as f:
        head = f.read(min(offset, SEEN_BYTES))
        f.seek(max(0, offset - SEEN_BYTES))
        return (head + f.read(offset - max(0, offset - SEEN_BYTES))).hex()


def index_runs(db: sqlite_utils.Database, root: Path | None = None,
               problems: list[str] | None = None) -> list[str]:
    """Index the run folders directly under `root` (default: the runs folder) that the store
    lacks or that may still change (running, created: index_run reads on from where it
    stopped), leaving out the forgotten ones (forget_run); returns the ids indexed. What the
    history and `cpt-studio runs` do before they list. A folder that cannot be read (index_run's
    error: its file and line) raises, or, given a `problems` list, is added to it and skipped."""
    root = Path(root) if root else runs_dir()
    forgotten, ids = forgotten_runs(), []
    for folder in run_folders(root) if root.is_dir() else []:
        run_id = str(folder.resolve())
        if run_id in forgotten:
            continue
        known = db["runs"].count_where("id = ?", [run_id]) > 0
        if not known or db["runs"].get(run_id)["state"] in (None, "running", "created"):
            try:
                ids.append(index_run(db, folder))
            except (OSError, ValueError) as exc:
                if problems is None:
                    raise
                problems.append(str(exc))
    return ids


def with_live_states(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run (a list_runs or get_run dict) with "live_state" (str), and its phase and message
    corrected, where its worker died without a final status (killed, out of memory: the store
    still says running; runs.effective_state checks the worker process, one psutil look each)."""
    for run in runs:
        status = {"state": run["state"] or "created", "phase": run["phase"], "message": run["message"]}
        live = effective_state(Path(run["id"]), status)
        run.update(live_state=live["state"], phase=live["phase"], message=live["message"])
    return runs


def rebuild(db: sqlite_utils.Database, roots: list[Path] | None = None) -> int:
    """Empty the store and index every run folder directly under each root (default: the
    runs folder), except those forgotten (forget_run); returns how many. All or nothing: a
    bad folder leaves the store as it was."""
    if roots is None:
        roots = [runs_dir()]
    roots = [Path(root).expanduser() for root in roots]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"runs folder {root} does not exist; check the path")
    forgotten = forgotten_runs()
    folders = [folder for root in roots for folder in run_folders(root)
               if str(folder.resolve()) not in forgotten]
    with writing(db):
        for table in TABLES:
            db[table].delete_where()
        for folder in folders:
            index_run(db, folder)
    return len(folders)


def run_folders(root: Path) -> list[Path]:
    """The run folders directly under `root`: those with a config.json and an events.jsonl."""
    return sorted(folder for folder in Path(root).iterdir()
                  if RunPaths(folder).config.is_file() and RunPaths(folder).events.is_file())


def folder_names(root: Path) -> set[str]:
    """The names of the run folders under `root` as the history shows them (display name, else
    the config's), read from the folders: the runs that the store has not indexed yet (one
    started a moment ago) included."""
    names = set()
    for folder in run_folders(root) if Path(root).is_dir() else []:
        try:
            names.add(_display_name(folder, _read_config(folder)))
        except (OSError, ValueError):  # a config that cannot be read: its folder's name
            names.add(folder.name)
    return names


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = RunPaths(run_dir).config
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {path.name}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); restore the run's config") from err


def _delete_rows(db: sqlite_utils.Database, run_id: str) -> None:
    for table in TABLES:
        db[table].delete_where("id = ?" if table == "runs" else "run_id = ?", [run_id])


# -- rows from events ----------------------------------------------------------------------

class _Indexer(RunTimeline):
    """The run's new events as rows: each type into its table as it is applied, and a resume
    deletes the rows it supersedes (the timeline's rule, cpt_studio.core.timeline). Rows are
    kept and inserted in batches (one insert per row costs sqlite-utils a schema look-up)."""

    def __init__(self, db: sqlite_utils.Database, run_id: str, events: Path, offset: int):
        super().__init__(events, offset)
        self.db, self.run_id = db, run_id
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def update(self, max_bytes: int = -1) -> list[Event]:
        events = super().update(max_bytes)
        self.flush()
        return events

    def flush(self) -> None:
        """Insert the rows kept so far, table by table, in the order they came."""
        for table, rows in self.rows.items():
            self.db[table].insert_all(rows, batch_size=500)
        self.rows = {}

    def _add(self, table: str, *rows: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).extend(rows)

    def on_resume(self, step: int) -> None:
        super().on_resume(step)
        self.flush()
        for table in ("metrics", "evaluations", "checkpoints", "benchmarks"):
            self.db[table].delete_where("run_id = ? and step > ?", [self.run_id, step])
        self.db["events"].delete_where("run_id = ? and step > ? and type in ('probe', 'benchmark')",
                                       [self.run_id, step])

    def on_step(self, event: StepEvent) -> None:
        self._add("metrics", *(
            {**self._where(event), "tokens": event.tokens, "name": name, "value": _storable(value)}
            for name, value in event.to_dict().items()
            if name not in NOT_METRICS and is_number(value)))

    def on_eval(self, event: EvalEvent) -> None:
        self._add("evaluations", {**self._where(event), "tokens": event.tokens,
                                  **{f: _storable(event.get(f)) for f in EVAL_FIELDS},
                                  "baseline": bool(event.baseline)})

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        """A re-save of a step replaces its row; scores missing from the event come from the
        step's last evaluation."""
        self.flush()
        self.db["checkpoints"].delete_where("run_id = ? and step = ?", [self.run_id, event.step])
        scores = next(self.db["evaluations"].rows_where(
            "run_id = ? and step = ?", [self.run_id, event.step], order_by="rowid desc", limit=1), {})
        self.db["checkpoints"].insert({
            **self._where(event), "tokens": event.tokens, "path": event.path,
            **{f: _storable(_first_known(event.get(f), _number(scores.get(f))))
               for f in CHECKPOINT_EVAL_FIELDS}})

    def on_guard(self, event: GuardEvent) -> None:
        self._add("guard", {**self._where(event),
                            **{f: _storable(_plain(event.get(f))) for f in GUARD_FIELDS}})

    def on_benchmark(self, event: BenchmarkEvent | ProbeEvent) -> None:
        if event.metric:
            self._add("benchmarks", {**self._where(event),
                                     **{f: _plain(getattr(event, f)) for f in BENCHMARK_FIELDS}})
        self._whole(event)

    on_probe = on_benchmark

    def on_status(self, event: StatusEvent) -> None:
        self._whole(event)

    def on_log(self, event: Event) -> None:
        self._whole(event)

    def _whole(self, event: Event) -> None:
        self._add("events", {**self._where(event), "type": event.TYPE,
                             "data": json.dumps(event.to_dict())})

    def _where(self, event: Event) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": event.step, "time": event.time}


def _run_row(db: sqlite_utils.Database, run_id: str, run_dir: Path, config: dict,
             before: dict | None, new: RunTimeline) -> dict[str, Any]:
    """The run's summary: `before` (the row as the last index left it; None when indexing from
    the start) updated with the new events, and the figures read back from the tables."""
    row = {"id": run_id, "name": _display_name(run_dir, config),
           "model": _model_name(config.get("model")), "config": json.dumps(config),
           **_lineage_fields(config), "run_group": _run_group(run_dir)}
    kept = {k: before[k] for k in ("state", "phase", "message", "started", "updated", "finished",
                                   "total_steps", "error")} if before else {}
    row.update(kept)
    row.update(_status_fields(new.status) if new.status else {})
    row["started"] = row.get("started") or new.started
    row["updated"] = new.updated or row.get("updated")
    row["total_steps"] = new.total_steps or row.get("total_steps")
    last = next(db["metrics"].rows_where("run_id = ?", [run_id], order_by="rowid desc", limit=1), None)
    row.update(steps=last["step"] if last else 0, tokens=last["tokens"] if last else 0)
    return {**row, **_scores(run_evaluations(db, run_id))}


def _lineage_fields(config: dict) -> dict[str, Any]:
    """The run's stage and parent checkpoint (cpt_studio.core.chain.parent_link reads the link)."""
    parent = parent_link(config)
    return {"stage": str(config.get("stage") or "cpt"), "parent_run": parent[0] if parent else None,
            "parent_step": parent[1] if parent else None}


def _status_fields(status: StatusEvent) -> dict[str, Any]:
    """What the last status event says: where the run is, and how a failed run failed."""
    state = status.state.value if status.state else None
    return {"state": state, "phase": status.phase.value if status.phase else None,
            "message": status.message,
            "finished": status.time if status.state in FINAL_STATES else None,
            "error": _error(status) if state == "failed" else None}


def _display_name(run_dir: Path, config: dict) -> str:
    renamed = run_dir / DISPLAY_NAME_FILE
    name = renamed.read_text(encoding="utf-8").strip() if renamed.is_file() else ""
    return name or str(config.get("name") or run_dir.name)


def _run_group(run_dir: Path) -> str | None:
    """The group id in the run folder's sweep.json (a sweep's run), else None."""
    path = RunPaths(run_dir).sweep
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("group") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def _model_name(model: Any) -> str:
    """The base model as the user named it; "model" is a section, or a string in early runs."""
    if isinstance(model, dict):
        model = model.get("name_or_path")
    return str(model or "")


def _error(status: StatusEvent) -> str:
    message = status.message or "the worker failed"
    return message if status.exit_code is None else f"{message} (exit code {status.exit_code})"


def _scores(evals: list[dict]) -> dict[str, Any]:
    """The run's latest domain gain and forgetting, None while only the step-0 baseline is
    measured (its gain and forgetting are 0 by definition: the history showed "+0.0%")."""
    after = [e for e in evals if not e.get("baseline")]
    trained = [e["domain_gain"] for e in after if is_finite_number(e.get("domain_gain"))]
    return {"domain_gain": _storable(after[-1].get("domain_gain")) if after else None,
            "forgetting": _storable(after[-1].get("forgetting")) if after else None,
            "best_domain_gain": max(trained, default=None)}


def _mark_checkpoints(db: sqlite_utils.Database, run_id: str, run_dir: Path, config: dict) -> str:
    """Mark which checkpoints still exist, the recommended one and the Pareto front among
    them; returns the reason for the recommendation ("" without checkpoints)."""
    rows = run_checkpoints(db, run_id)
    for row in rows:
        row["exists"] = bool(row["path"]) and (run_dir / row["path"]).is_dir()
    kept = checkpoint_scores(row for row in rows if row["exists"])
    drops = general_drops(run_benchmarks(db, run_id))
    best, reason = recommendation(kept, target_forgetting(config), drops=drops, max_drop=_max_drop(config))
    front = set(pareto_front(kept))
    for row in rows:
        db.execute("UPDATE checkpoints SET \"exists\" = ?, recommended = ?, pareto = ? "
                   "WHERE run_id = ? AND step = ?",
                   [row["exists"], row["exists"] and row["step"] == best,
                    row["exists"] and row["step"] in front, run_id, row["step"]])
    return reason if rows else ""


def _max_drop(config: dict) -> float:
    """The run's limit on a general benchmark's drop (cpt_studio.core.config.BenchmarkConfig)."""
    benchmarks = config.get("benchmarks")
    value = benchmarks.get("max_general_drop") if isinstance(benchmarks, dict) else None
    return MAX_GENERAL_DROP if value is None else float(value)


def target_forgetting(config: dict) -> float:
    """The run's forgetting target for the recommended checkpoint."""
    checkpoints = config.get("checkpoints")
    target = checkpoints.get("recommend_max_forgetting") if isinstance(checkpoints, dict) else None
    return DEFAULT_RECOMMEND_MAX_FORGETTING if target is None else float(target)


def _first_known(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


NAN = "nan"
"""How a NaN is stored: SQLite turns a NaN REAL into NULL, which would read as 'not measured'."""


def _storable(value: Any) -> Any:
    return NAN if isinstance(value, float) and math.isnan(value) else value


def _number(value: Any) -> Any:
    return math.nan if value == NAN else value


def _plain(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


# -- reading -------------------------------------------------------------------------------

def list_runs(db: sqlite_utils.Database, state: str | None = None,
              model: str | None = None) -> list[dict[str, Any]]:
    """Runs newest first, each with its stage and the checkpoint it started from (parent_run,
    parent_step; None for a first stage); `model` keeps those whose model contains it (any case)."""
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

FORGOTTEN_FILE = "forgotten_runs.json"
"""In the data folder: runs removed from the history whose folders were kept."""


def forget_run(db: sqlite_utils.Database, run: str | Path, *, delete_folder: bool = False) -> str:
    """Remove a run from the history (its rows) and, when asked, delete its folder with its
    checkpoints; returns its id. A kept folder is remembered as forgotten, so that neither
    index_runs nor rebuild brings it back (an explicit index_run does)."""
    run_id = get_run(db, run)["id"]
    with writing(db):
        _delete_rows(db, run_id)
    if delete_folder:
        shutil.rmtree(run_id, ignore_errors=True)
    forgotten = forgotten_runs()
    forgotten.add(run_id) if Path(run_id).is_dir() else forgotten.discard(run_id)
    _forgotten_path().write_text(json.dumps(sorted(forgotten), indent=1), encoding="utf-8")
    return run_id


def remember_run(db: sqlite_utils.Database, run_dir: Path | str) -> str:
    """Bring a forgotten run (its folder kept) back into the history; returns its id.
    Raises FileNotFoundError for a folder that is not a run's."""
    run_id = str(Path(run_dir).expanduser().resolve())
    forgotten = forgotten_runs() - {run_id}
    index_run(db, run_id)
    _forgotten_path().write_text(json.dumps(sorted(forgotten), indent=1), encoding="utf-8")
    return run_id


def forgotten_runs() -> set[str]:
    """The ids (folder paths) of runs removed from the history whose folders were kept."""
    path = _forgotten_path()
    return set(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else set()


def _forgotten_path() -> Path:
    return data_dir() / FORGOTTEN_FILE


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
