"""The background process of one evaluation job: `python -m cpt_studio.core.evalworker RUN_DIR`.

It reads the request (eval/request.json, written by cpt_studio.core.evaljob.start_evaluation), writes its
pid (eval/worker.pid), sends the libraries' logging to logs/eval.log, goes offline when the Hub
cannot be reached (so a dataset that is not cached fails at once), evaluates, updates the run
store, and always ends with a status event in eval/events.jsonl: finished, stopped, or failed
with the traceback's tail.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .run_folder import RunPaths
from .runs import record_pid
from .worker import log_to_file, record_failure, update_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cpt_studio.core.evalworker")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    paths = RunPaths(args.run_dir.resolve())
    if not paths.eval_request.exists():
        print(f"error: {paths.root} has no evaluation request ({paths.relative(paths.eval_request)})",
              file=sys.stderr)
        return 2
    record_pid(paths.eval_pid)
    log_to_file(paths.eval_log)
    try:
        # inside the try, as in cpt_studio.core.worker: an import failure is a failed status event
        from .benchmarks import go_offline_unless_reachable

        go_offline_unless_reachable()
        from .evaljob import evaluate_run, load_request

        evaluate_run(paths.root, load_request(paths.root))
        update_store(paths.root)
        return 0
    except BaseException as exc:  # noqa: BLE001 — every failure must reach the events
        record_failure(paths.eval_events, exc, "evaluation")
        return 1


if __name__ == "__main__":
    sys.exit(main())
