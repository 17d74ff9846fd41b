"""The CLI's run commands: train, resume, stop, demo, import-gguf, runs, show, store rebuild,
generate, export.

Each parses nothing (cpt_studio.core.cli did) and calls the library; `follow` prints a running
run's progress from its events.jsonl, as the GUI reads it.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .config import RunConfig
from .estimate import mfu_words
from .events import (
    CheckpointEvent,
    EvalEvent,
    GuardEvent,
    ScoreEvent,
    State,
    StatusEvent,
    StepEvent,
)
from .failure import failure_of
from .run_folder import RunPaths, checkpoint_label, checkpoint_step, list_checkpoints
from .runs import create_run, kill_worker, request_stop, start_worker, worker_pid
from .timeline import RunTimeline


def train(args) -> int:
    refuse_probe_without_dry_run(args)
    config = RunConfig.load(Path(args.config))
    if args.dry_run:
        return print_plan(config, args.probe or 0)
    if config.stage == "sft" or config.parent_run:  # a chained run: its starting checkpoint
        from .chain import create_chained_run  # resolved, an SFT run's data checked, preflight

        return launch(create_chained_run(config), resume=False, detach=args.detach)
    from .preflight import require

    checked = require(config)  # before the run folder exists: a refused run leaves nothing behind
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    run_dir = create_run(config)
    return launch(run_dir, resume=False, detach=args.detach)


def refuse_probe_without_dry_run(args) -> None:
    """`--probe` measures the speed for the plan: alone it would start the whole run unasked."""
    if args.probe is None:
        return
    if args.probe < 1:  # 0 measured nothing, silently
        raise ValueError(f"--probe {args.probe}: give a number of steps, 1 or more (about 5 is enough)")
    if not args.dry_run:
        raise ValueError(f"--probe {args.probe} measures the speed for the plan: add --dry-run "
                         "(the run itself measures its speed as it trains)")


def print_plan(config: RunConfig, probe_steps: int) -> int:
    """The dry run of `train` and `sft`: the plan, printed; nothing is created."""
    from transformers.utils import logging as transformers_logging

    from .plan import format_plan, plan_run

    transformers_logging.disable_progress_bar()  # a probe's "Loading weights" bar amid the plan

    print(format_plan(plan_run(config, probe_steps=probe_steps)))
    return 0


def resume(args) -> int:
    run_dir = run_folder(args.run_dir)
    if worker_pid(run_dir):
        raise ValueError(f"{run_dir} is still running (worker pid {worker_pid(run_dir)}); stop it first")
    if not args.accept_changed_corpus:
        from .data import refuse_changed_corpus

        refuse_changed_corpus(RunConfig.load(RunPaths(run_dir).config).corpus, run_dir)
    return launch(run_dir, resume=True, detach=args.detach, accept_changed_corpus=args.accept_changed_corpus)


def launch(run_dir: Path, *, resume: bool, detach: bool, accept_changed_corpus: bool = False) -> int:
    process = start_worker(run_dir, resume=resume, accept_changed_corpus=accept_changed_corpus)
    print(f"run folder: {run_dir}")
    if detach:
        print(f"running in the background (pid {process.pid}); `cpt-studio stop {run_dir}` stops it")
        return 0
    return follow(run_dir, process, resumed=resume)


def launch_bundle(args) -> int:
    from .launch import write_bundle

    run_dir = run_folder(args.run_dir)
    folder = write_bundle(run_dir, gpus=args.gpus, nodes=args.nodes, strategy=args.strategy,
                          cpu=args.cpu, port=args.port)
    print(f"launch bundle written to {folder}")
    for path in sorted(folder.iterdir()):
        print(f"  {path.name}")
    paths = RunPaths(run_dir)
    print(f"one machine: bash {paths.launch_script}   (see {paths.launch_readme} for a cluster)")
    return 0


def stop(args) -> int:
    run_dir = run_folder(args.run_dir)
    if not worker_pid(run_dir):
        print(f"{run_dir} is not running")
        return 1
    if args.kill:
        kill_worker(run_dir)
        print(f"worker killed; `cpt-studio resume {run_dir}` continues from the last complete checkpoint")
        return 0
    request_stop(run_dir)
    print("stop requested: the run saves a checkpoint at the end of this step and stops "
          "(if it does not answer, `cpt-studio stop RUN --kill` ends it)")
    return 0


def follow(run_dir: Path, process, resumed: bool = False) -> int:
    """Print progress lines and the evaluation table until the worker exits (a resumed run's
    from where it goes on: its earlier lines were printed when they happened).
    Ctrl-C asks the run to stop (it saves a checkpoint); a second Ctrl-C leaves it running."""
    printer = ProgressPrinter(RunPaths(run_dir).events)
    if resumed:
        printer.catch_up()
    stop_when_the_terminal_goes(lambda: request_stop(run_dir))
    try:
        _print_until_exit(printer, process)
    except KeyboardInterrupt:
        request_stop(run_dir)
        print("\nstop requested; waiting for the checkpoint (Ctrl-C again to leave it running)", flush=True)
        try:
            _print_until_exit(printer, process)  # to its last lines: the checkpoint, "stopped"
        except KeyboardInterrupt:
            print(f"\nleft running in the background; `cpt-studio stop {run_dir}` stops it")
            return 130
    if process.returncode:
        _print_failure(run_dir, process.returncode, printer.status)
    elif printer.status is not None and printer.status.state == State.STOPPED and list_checkpoints(run_dir):
        from .cli_tables import resume_words

        print(resume_words(run_dir, max(checkpoint_step(path) for path in list_checkpoints(run_dir))))
    return process.returncode


def _print_until_exit(printer: ProgressPrinter, process) -> None:
    while process.poll() is None:
        printer.update()
        time.sleep(0.5)
    printer.update()


def stop_when_the_terminal_goes(request: Callable[[], None]) -> None:
    """A followed job (a run, an evaluation, a sweep) is asked to stop (`request`: its stop
    request; a run saves a checkpoint) when its terminal closes (SIGHUP) or the command is ended
    (SIGTERM), and the command exits: the worker, in a session of its own, would go on with no
    console."""
    def stop(signum, _frame):
        request()
        raise SystemExit(128 + signum)

    for name in ("SIGHUP", "SIGTERM"):  # Windows has no SIGHUP
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


class ProgressPrinter(RunTimeline):
    """The run's timeline as the CLI prints it: one line per evaluation (the perplexity
    table), a progress line every few seconds, checkpoints, guard decisions and scores."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.header_done = False
        self.last_line = 0.0

    def catch_up(self) -> None:
        """Read what the file holds so far without printing it (a resumed run's history: its
        total steps and resumes are kept); the table's header comes again with the next row."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.update()
        self.header_done = False

    def on_status(self, event: StatusEvent) -> None:
        if event.message and event.state:
            print(f"[{event.state.value}] {event.message}")

    def on_step(self, event: StepEvent) -> None:
        if time.monotonic() - self.last_line <= 5:
            return
        self.last_line = time.monotonic()
        total = f"/{self.total_steps}" if self.total_steps else ""
        print(f"  step {event.step}{total}  loss {event.loss:.4f}  lr {event.lr or 0:.3g}  "
              f"{event.tokens_per_second or 0:,.0f} tokens/s{mfu_words(event.mfu)}", flush=True)

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        print(f"  checkpoint saved: {event.path}")

    def on_guard(self, event: GuardEvent) -> None:
        print(f"  guard: {event.message or event.reason}", flush=True)

    def on_probe(self, event: ScoreEvent) -> None:
        if event.primary:
            stderr = f" ± {event.stderr:.3f}" if event.stderr is not None else ""
            print(f"  {event.task} {event.metric} ({checkpoint_label(event.step)}): "
                  f"{event.value:.3f}{stderr}", flush=True)

    on_benchmark = on_probe

    def on_eval(self, event: EvalEvent) -> None:
        if not self.header_done:
            print(f"{'step':>7} {'tokens':>11} {'domain ppl':>11} {'general ppl':>12} "
                  f"{'domain gain':>12} {'forgetting':>11}")
            self.header_done = True
        nan = float("nan")
        print(f"{event.step:>7} {event.tokens or 0:>11,} {_or(event.domain_ppl, nan):>11.3f} "
              f"{_or(event.general_ppl, nan):>12.3f} {_or(event.domain_gain, nan):>12.2%} "
              f"{_or(event.forgetting, 0.0):>11.2%}", flush=True)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _print_failure(run_dir: Path, code: int, status: StatusEvent | None) -> None:
    """The failure's sentence, as the monitor shows it (cpt_studio.core.failure), then the log's tail."""
    failed = status if status is not None and status.state == State.FAILED else None
    log = RunPaths(run_dir).log
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
    sentence = failure_of(failed.to_dict(), tail).sentence if failed else "no final status"
    print(f"\nfailed, exit code {code}: {sentence}", file=sys.stderr)
    if tail:
        print(f"last lines of {RunPaths(run_dir).relative(log)}:\n{tail}", file=sys.stderr)


def demo(args) -> int:
    from .demo import demo_config, describe_demo

    said = describe_demo(args.steps).splitlines()[1:]  # the first line is the Demo button's (background)
    print("\n".join(["a short real continual pre-training run, followed here (Ctrl-C stops it):", *said]), flush=True)
    run_dir = create_run(demo_config(steps=args.steps))
    started = time.monotonic()
    code = launch(run_dir, resume=False, detach=False)
    print(f"demo wall time: {time.monotonic() - started:.0f} s")
    return code


def import_gguf(args) -> int:
    from .models import import_gguf as do_import

    folder = do_import(Path(args.file), Path(args.dest) if args.dest else None,
                       progress=lambda e: print(e.get("message", "")))
    print(f"imported into {folder}")
    return 0


def list_runs(args) -> int:
    from . import cli_tables, store

    db = _refreshed_store()
    print(cli_tables.format_runs(store.with_live_states(store.list_runs(db, state=args.state, model=args.model))))
    return 0


def show(args) -> int:
    from . import cli_tables, store

    db = _refreshed_store()
    run = store.get_run(db, args.run_ref)
    print(cli_tables.format_run(db, run["id"]))
    return 0


def _refreshed_store():
    """The store, with the runs folder's new and live runs indexed (as the GUI's history does: a
    run in progress was listed only once its worker ended); a folder that cannot be read is
    named on stderr and the rest listed."""
    from . import store

    db, problems = store.open_store(), []
    store.index_runs(db, problems=problems)
    for problem in problems:
        print(f"warning: a run folder could not be read, its run is left out: {problem}", file=sys.stderr)
    return db


def rebuild(args) -> int:
    from . import store
    from .runs import runs_dir

    roots = [Path(r) for r in args.roots] or [runs_dir()]
    count = store.rebuild(store.open_store(), roots)
    print(f"indexed {count} run(s) from {', '.join(map(str, roots))}")
    return 0


def forget(args) -> int:
    from . import store
    from .runs import worker_pid

    db = store.open_store()
    if args.undo:
        print(f"back in the history: {store.remember_run(db, args.run_ref)}")
        return 0
    run_id = store.get_run(db, args.run_ref)["id"]
    if args.delete_folder and worker_pid(Path(run_id)) is not None:
        raise ValueError(f"{run_id} is still training; stop it first (`cpt-studio stop {run_id}`)")
    store.forget_run(db, run_id, delete_folder=args.delete_folder)
    print(f"removed from the history: {run_id}"
          + (" (folder deleted)" if args.delete_folder else
             f"; its folder is kept and `cpt-studio store rebuild` leaves it out "
             f"(`cpt-studio store forget --undo {run_id}` brings it back)"))
    return 0


def run_folder(run_ref: str) -> Path:
    """A run given by folder (even one the store has not seen), name or folder-name prefix."""
    from . import store

    folder = Path(run_ref).expanduser()
    if RunPaths(folder).config.is_file():
        return folder.resolve()
    return Path(store.get_run(_refreshed_store(), run_ref)["id"])


def generate(args) -> int:
    import json

    from .generate import GenerationSettings, compare_generations

    run_dir = run_folder(args.run_ref)
    steps = ([int(s) for s in args.checkpoints.split(",") if s.strip()] if args.checkpoints
             else [checkpoint_step(p) for p in list_checkpoints(run_dir)])
    settings = GenerationSettings(args.max_new_tokens, not args.sample, args.temperature,
                                  args.top_p, args.seed)
    outputs = compare_generations(run_dir, args.prompt, steps, settings)
    if args.json:
        print(json.dumps(outputs, indent=1, ensure_ascii=False))
    else:
        for name, text in outputs.items():
            print(f"--- {name}\n{args.prompt}{text}")
    return 0


def export(args) -> int:
    from .export import export_checkpoint

    mode = "merged" if args.merge else args.mode
    folder = export_checkpoint(run_folder(args.run_ref), args.step, Path(args.dest), mode=mode,
                               datasets=args.dataset, tags=args.tag)
    print(f"exported step {args.step} to {folder}")
    return 0
