"""The CLI's sweep: short runs over a grid of replay ratios and peak learning rates
(cpt_studio.core.sweep).

    cpt-studio sweep config.json --replay 0,0.05,0.15 --lr 1e-5,3e-5,1e-4 --steps 50 [--detach] [--dry-run]
    cpt-studio sweep --show [GROUP]      # a sweep's table, the front marked (no GROUP: the sweeps)
    cpt-studio sweep --stop GROUP        # the run in progress saves and stops; no further run starts
    cpt-studio sweep --continue GROUP    # run the settings not finished yet

It parses nothing (cpt_studio.core.cli did) and calls the library.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .cli_runs import stop_when_the_terminal_goes
from .estimate import format_duration
from .sweep import (
    SweepPaths,
    create_sweep,
    find_sweep,
    format_sweep_table,
    list_sweeps,
    load_sweep,
    parse_grid,
    plan_sweep,
    request_sweep_stop,
    setting_words,
    start_sweep,
    sweep_process,
    sweep_progress,
    sweep_results,
)

POLL_SECONDS = 2.0


def add_commands(commands) -> None:
    """The sweep subcommand, added to the CLI's subparsers."""
    sweep = commands.add_parser(
        "sweep", help="find settings: short runs over a grid of replay ratios and peak learning "
        "rates, one after another, and each setting's domain gain against forgetting")
    sweep.add_argument("config", nargs="?", help="a RunConfig JSON file: the data, model and seed every run shares")
    sweep.add_argument("--replay", default="0,0.05,0.15", metavar="RATIOS",
                       help="comma-separated replay ratios (0.05 = 5%%; default 0,0.05,0.15)")
    sweep.add_argument("--lr", default="1e-5,3e-5,1e-4", metavar="RATES",
                       help="comma-separated peak learning rates (default 1e-5,3e-5,1e-4)")
    sweep.add_argument("--steps", type=int, default=50, metavar="N",
                       help="optimizer steps per run (default 50); each run evaluates at 0 and N")
    sweep.add_argument("--detach", action="store_true", help="run in the background and return at once")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan (runs, time) and stop")
    sweep.add_argument("--show", nargs="?", const="", default=None, metavar="GROUP",
                       help="print a sweep's table (no GROUP: list the sweeps)")
    sweep.add_argument("--stop", default=None, metavar="GROUP", help="stop a running sweep")
    sweep.add_argument("--continue", dest="resume", default=None, metavar="GROUP",
                       help="run a stopped or interrupted sweep's unfinished settings")
    sweep.set_defaults(run=sweep_command)


def sweep_command(args) -> int:
    if args.show is not None:
        return show(args.show)
    if args.stop:
        folder = find_sweep(args.stop)
        request_sweep_stop(folder)
        print(f"stop requested: {folder.name} stops after the run in progress saves its checkpoint")
        return 0
    if args.resume:
        return launch(find_sweep(args.resume), detach=args.detach)
    if not args.config:
        raise ValueError("give a config file (cpt-studio sweep CONFIG --replay ... --lr ... --steps N), "
                         "or --show, --stop or --continue GROUP")
    from .config import RunConfig

    plan = plan_sweep(RunConfig.load(Path(args.config)), parse_grid(args.replay, "--replay"),
                      parse_grid(args.lr, "--lr"), args.steps)
    print_plan(plan)
    if args.dry_run:
        return 0
    return launch(create_sweep(plan), detach=args.detach)


def print_plan(plan) -> None:
    """The sweep's runs and its time, from the first run's plan (cpt_studio.core.plan)."""
    from .plan import plan_run

    configs = plan.configs()
    print(f"sweep {plan.base.name}: {len(configs)} runs of {plan.steps} steps, one after another")
    for setting in plan.settings:
        print(f"  {setting_words(setting)}")
    one = plan_run(configs[0])
    seconds = one.time.seconds + one.evaluation_seconds
    print(f"estimated time: about {format_duration(seconds * len(configs))} of training and evaluation "
          f"({format_duration(seconds)} a run, plus loading the model for each; {one.time.basis})", flush=True)


def launch(folder: Path, *, detach: bool) -> int:
    process = start_sweep(folder)
    print(f"sweep folder: {folder}")
    if detach:
        print(f"running in the background (pid {process.pid}); `cpt-studio sweep --show {folder.name}` "
              f"shows it, `cpt-studio sweep --stop {folder.name}` stops it")
        return 0
    return follow(folder, process)


def follow(folder: Path, process) -> int:
    """Print where the sweep stands whenever it changes, then its table. Ctrl-C stops it (the
    run in progress saves a checkpoint); a second Ctrl-C leaves it running."""
    from .store import open_store

    db, said = open_store(), ""
    stop_when_the_terminal_goes(lambda: request_sweep_stop(folder))
    try:
        while process.poll() is None:
            said = _say(sweep_progress(sweep_results(folder, db)), said)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        request_sweep_stop(folder)
        print(f"\nstop requested; waiting for the run in progress to save (Ctrl-C again to leave it; "
              f"`cpt-studio sweep --continue {folder.name}` continues later)")
        try:
            process.wait()
        except KeyboardInterrupt:
            return 130
    print(format_sweep_table(sweep_results(folder, db)))
    if process.returncode:
        print(f"the sweep failed, exit code {process.returncode}; see {SweepPaths(folder).log}", file=sys.stderr)
    return process.returncode


def _say(text: str, said: str) -> str:
    if text != said:
        print(text, flush=True)
    return text


def show(ref: str) -> int:
    from .store import open_store

    if not ref:
        sweeps = list_sweeps()
        for folder in sweeps:
            sweep = load_sweep(folder)
            print(f"{folder.name}  {sweep['name']}: {len(sweep['runs'])} runs of {sweep['steps']} steps")
        if not sweeps:
            print("no sweeps yet")
        return 0
    folder = find_sweep(ref)
    points = sweep_results(folder, open_store())
    running = sweep_process(folder)
    print(f"{folder.name}: {sweep_progress(points)}" + (f" (running, pid {running.pid})" if running else ""))
    print(format_sweep_table(points))
    return 0
