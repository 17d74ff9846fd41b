"""The CLI's evaluation commands: evaluate, tasks, report.

    cpt-studio evaluate RUN [--checkpoints 10,20] [--tasks a,b] [--probes FILE] [--limit N]
                            [--fewshot K] [--batch-size B] [--detach] | --stop
    cpt-studio tasks [WORD] [--presets]
    cpt-studio report RUN

Each parses nothing (cpt_studio.core.cli did) and calls the library; `evaluate` without --detach prints
the evaluation job's progress from RUN/eval/events.jsonl until the worker exits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli_runs import run_folder, stop_when_the_terminal_goes
from .config_help import option_help
from .estimate import format_duration
from .events import EventTail, Phase, StatusEvent
from .run_folder import RunPaths


def add_commands(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score checkpoints (and the base model) on lm-eval "
                                   "tasks and knowledge probes, in a background worker")
    evaluate.add_argument("run_ref", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    evaluate.add_argument("--checkpoints", metavar="STEPS", help="comma-separated checkpoint steps "
                          "(default: every kept checkpoint); the base model (0) is always scored")
    evaluate.add_argument("--tasks", metavar="NAMES", help="comma-separated lm-eval tasks (default: the "
                          "run's benchmark settings); the run's domain tasks and preset domain tasks "
                          "count as domain, the others as general")
    evaluate.add_argument("--probes", metavar="FILE", help=option_help(
        "benchmarks.probes", "default: the run's, none when --tasks is given"))
    evaluate.add_argument("--limit", type=int, help=option_help("benchmarks.limit", "default: the run's"))
    evaluate.add_argument("--fewshot", type=int, help=option_help("benchmarks.num_fewshot", "default: the run's"))
    evaluate.add_argument("--batch-size", type=_batch_size, metavar="N|auto", help=option_help("benchmarks.batch_size", "default: the run's"))
    evaluate.add_argument("--detach", action="store_true", help="run in the background and return at once")
    evaluate.add_argument("--stop", action="store_true", help="ask the run's evaluation to stop")
    evaluate.set_defaults(run=evaluate_command)
    tasks = commands.add_parser("tasks", help="search lm-eval's task registry; show the presets")
    tasks.add_argument("query", nargs="?", default="", help="part of a task name (any case)")
    tasks.add_argument("--presets", action="store_true", help="print the task presets")
    tasks.set_defaults(run=tasks_command)
    report = commands.add_parser("report", help="write RUN/report: Markdown, JSON and a chart of base "
                                 "vs checkpoints per task")
    report.add_argument("run_ref", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    report.set_defaults(run=report_command)


def evaluate_command(args) -> int:
    from .evaljob import start_evaluation
    from .runs import request_eval_stop

    run_dir = run_folder(args.run_ref)
    if args.stop:
        request_eval_stop(run_dir)
        print("stop requested: the evaluation stops after the task in progress")
        return 0
    process = start_evaluation(run_dir, eval_request(run_dir, args))
    if args.detach:
        print(f"evaluating in the background (pid {process.pid}); progress in "
              f"{RunPaths(run_dir).eval_events}; `cpt-studio evaluate {run_dir} --stop` stops it")
        return 0
    code = follow_evaluation(run_dir, process)
    if code == 0:
        _print_scores(run_dir)
    return code


def _print_scores(run_dir: Path) -> None:
    """The scores the evaluation left in the store (its worker indexes the run as it ends)."""
    from . import store
    from .cli_tables import format_benchmarks

    print(format_benchmarks(store.open_store(), run_dir) or "no scores")
    print(f"`cpt-studio show {run_dir}` adds the curves and checkpoints; `cpt-studio report {run_dir}` "
          "writes the report (Markdown, JSON and a chart) into the run folder")


def eval_request(run_dir: Path, args):
    """The request from the run's benchmark settings and the command's options."""
    from .config import RunConfig
    from .evaljob import EvalRequest

    config = RunConfig.load(RunPaths(run_dir).config)
    overrides = {"num_fewshot": args.fewshot, "limit": args.limit, "batch_size": args.batch_size,
                 "probes": str(Path(args.probes).expanduser().resolve()) if args.probes else None}
    if args.tasks:
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
        domain = set(config.benchmarks.domain_tasks) | _preset_domain_tasks()
        overrides["domain_tasks"] = [n for n in names if n in domain]
        overrides["general_tasks"] = [n for n in names if n not in domain]
        if not args.probes:
            overrides["probes"] = ""
    return EvalRequest.from_config(config.benchmarks, _steps(run_dir, args.checkpoints), **overrides)


def _preset_domain_tasks() -> set[str]:
    from .benchmarks import load_presets

    return {name for preset in load_presets().values() for name in preset["domain"]}


def _steps(run_dir: Path, text: str | None) -> list[int]:
    from .run_folder import checkpoint_step, list_checkpoints

    if text:
        try:
            steps = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--checkpoints {text!r}: give step numbers separated by commas, e.g. 10,20") from None
    else:
        steps = [checkpoint_step(p) for p in list_checkpoints(run_dir)]
    return [0] + [s for s in dict.fromkeys(steps) if s != 0]


def follow_evaluation(run_dir: Path, process) -> int:
    """Print the job's progress lines until the worker exits; Ctrl-C asks it to stop."""
    from .runs import request_eval_stop

    path = RunPaths(run_dir).eval_events
    tail = EventTail(path, _size(path))
    stop_when_the_terminal_goes(lambda: request_eval_stop(run_dir))
    try:
        while True:
            _print_progress(tail)
            if process.poll() is not None:
                _print_progress(tail)
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        request_eval_stop(run_dir)
        print("\nstop requested; the evaluation stops after the task in progress")
        process.wait()
    if process.returncode:
        print(f"the evaluation failed (exit code {process.returncode}); see {RunPaths(run_dir).eval_log}",
              file=sys.stderr)
    return process.returncode


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _print_progress(tail: EventTail) -> None:
    for event in tail.read():
        if not isinstance(event, StatusEvent):
            continue
        eta, state = event.eta_seconds, event.state.value if event.state else None
        counts = f" [{event.done}/{event.total}]" if event.total else ""
        print(f"[{state}]{counts} {event.message or ''}"
              + (f" (about {format_duration(eta)} left)" if eta and eta >= 1 else ""), flush=True)
        if event.phase == Phase.EVALUATING:  # the first report lists what is skipped
            for name, reason in (event.get("unavailable") or {}).items():
                print(f"  unavailable, skipped: {name}: {reason}")


def tasks_command(args) -> int:
    from .benchmarks import load_presets, search_tasks

    if args.presets:
        for name, preset in load_presets().items():
            print(f"{name}: domain {', '.join(preset['domain']) or '-'}; general {', '.join(preset['general'])}")
        return 0
    found = search_tasks(args.query)
    print("\n".join(found) if found else f"no lm-eval task name contains {args.query!r}")
    return 0 if found else 1


def report_command(args) -> int:
    from .report import write_report

    run_dir = run_folder(args.run_ref)
    folder = write_report(run_dir)
    print(RunPaths(run_dir).report_markdown.read_text(encoding="utf-8"))
    print(f"written to {folder}")
    return 0


def _batch_size(text: str) -> int | str:
    """--batch-size: "auto" or a whole number (the config checks that it is at least 1)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither \"auto\" nor a whole number") from None
