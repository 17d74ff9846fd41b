"""The background process of one run: `python -m cpt_studio.core.worker RUN_DIR [--resume]
[--accept-changed-corpus]`.

It writes its pid, sends the libraries' logging to logs/worker.log (its stdout and
stderr are that file too, when started by cpt_studio.core.runs.start_worker), trains, and always
ends with a status event: finished, stopped, or failed with the traceback's tail.

Launched on several processes (`accelerate launch`, `torchrun`: cpt_studio.core.launch), every
rank trains and logs to logs/worker.log; the main process alone writes the pid, the events,
the checkpoints' metadata and the store's rows. A rank that fails records its failure too,
so that the reason reaches the run's events even when another rank is the one that failed.

`log_to_file`, `record_failure` and `update_store` serve the evaluation worker too
(cpt_studio.core.evalworker). The engine's modules are imported inside `try` blocks: a failure
to import them (a broken torch install) is a failed status event like any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path

from . import distributed
from .events import EventWriter
from .failure import classify
from .run_folder import RunPaths
from .runs import write_pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cpt_studio.core.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--accept-changed-corpus", action="store_true")
    args = parser.parse_args(argv)
    paths = RunPaths(args.run_dir.resolve())
    if not paths.config.exists():
        print(f"error: {paths.root} is not a run folder (no {paths.config.name})", file=sys.stderr)
        return 2
    main_process = distributed.is_main()
    if main_process:
        write_pid(paths.root)
        update_store(paths.root)  # listed at once by `cpt-studio runs` and the history
    log_to_file(paths.log)
    try:
        from .training import train  # inside the try: see the module's docstring

        final = train(paths.root, resume=args.resume, accept_changed_corpus=args.accept_changed_corpus)
        if main_process:  # the other ranks' work ends with the training
            update_store(paths.root)
            if final == "finished":
                _evaluate_at_end(paths)
        return 0
    except BaseException as exc:  # noqa: BLE001 — every failure must reach the events
        _record_failure(paths, exc)
        return 1


def log_to_file(path: Path) -> None:
    """Send the libraries' logging (transformers' at INFO) to the file at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    # Under several processes every rank logs here, each line naming its rank.
    handler.setFormatter(logging.Formatter(f"%(asctime)s {distributed.rank_label()}%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_not_hub_advice)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    import transformers  # here, not at the top: a wrong RUN_DIR is refused before seconds of imports

    transformers.logging.set_verbosity_info()
    transformers.logging.disable_default_handler()
    transformers.logging.enable_propagation()


def _not_hub_advice(record: logging.LogRecord) -> bool:
    """False for the Trainer's "Do not forget to share your model on huggingface.co": the log is
    shown in the monitor, and our users' models (clinical, legal) are often not theirs to share."""
    return "share your model on huggingface.co" not in record.getMessage()


def _evaluate_at_end(paths: RunPaths) -> None:
    """Benchmarks and probes on the base model and the recommended checkpoint, when the run
    configures them; a failure here is recorded and leaves the finished run finished."""
    try:
        from .benchmarks import go_offline_unless_reachable
        from .evaljob import evaluate_at_end

        go_offline_unless_reachable()
        if evaluate_at_end(paths.root) is not None:
            update_store(paths.root)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger("cpt_studio.core.worker").exception("the end-of-run evaluation failed")
        EventWriter(paths.eval_events).emit("status", None, state="failed", phase="error",
                                            message=f"{type(exc).__name__}: {exc}")


def _record_failure(paths: RunPaths, exc: BaseException) -> None:
    try:
        config = json.loads(paths.config.read_text())
    except (OSError, ValueError):
        config = None  # the sentence then names no setting's current value
    record_failure(paths.events, exc, "run", config)
    if distributed.is_main():
        update_store(paths.root)


def record_failure(events: Path, exc: BaseException, what: str, config: dict | None = None) -> None:
    """A failed status event and the same in the log: how every background process of a run
    ends when it fails. Its message is one sentence saying what went wrong and what to change
    (cpt_studio.core.failure.classify; `config`, the run's config.json, gives the settings it
    names), `failure` the kind, `resumable` whether resuming can help, and `traceback` the
    traceback's tail (the monitor's "Details")."""
    tail = "".join(traceback.format_exception(exc))[-4000:]
    logging.getLogger("cpt_studio.core.worker").error("%s failed:\n%s", what, tail)
    failure = classify(exc, config)
    EventWriter(events).emit("status", None, state="failed", phase="error", exit_code=1,
                             message=failure.sentence, failure=failure.kind,
                             resumable=failure.resumable, traceback=tail)


def update_store(run_dir: Path) -> None:
    """Bring the run store up to date, unless the run was removed from the history meanwhile
    (store.forget_run); a store problem is logged, never raised: the run folder stays the
    source of truth."""
    try:
        from .store import connection, forgotten_runs, index_run

        if str(Path(run_dir).resolve()) not in forgotten_runs():
            with connection() as db:
                index_run(db, run_dir)
    except Exception:  # noqa: BLE001 — a store problem must not fail a finished run
        logging.getLogger("cpt_studio.core.worker").exception("could not update the run store")


if __name__ == "__main__":
    sys.exit(main())
