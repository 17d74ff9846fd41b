"""The run monitor under 100,000 events, and the main window over a history of 20 runs
with one of them live: the longest GUI-thread stall.

    QT_QPA_PLATFORM=offscreen python bench/gui_stream.py [--events 100000] [--seconds 10]
        [--runs 20] [--history-events 3000] [--history-seconds 20] [--rate 20] [--only history]

Each phase runs a 5 ms heartbeat timer on the GUI thread whose late ticks are the stalls
(the time the window could not repaint or answer a click):
  1. live: a writer process appends step events (and an eval every 50 steps) to events.jsonl
     at an even pace over --seconds while a MonitorWindow tails and redraws;
  2. re-open: a new MonitorWindow opens the finished 100,000-event file and catches up;
  3. open the history: --runs run folders (created with create_run and written with
     EventWriter, --history-events events each, in a fresh CPT_STUDIO_HOME) are indexed by a
     new MainWindow until its table lists them all; one run is live (a writer process that
     recorded its pid with write_pid appends --rate events/s), one died without a final status;
  4. history and live monitor: the main window (its 3 s refresh) and the live run's monitor
     stay open for --history-seconds while the live run grows.
Prints the longest stall and the 99th percentile of each phase (target: under 100 ms).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def make_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": "stream", "eval": {"interval": 50}}))
    (folder / "logs").mkdir()
    return folder


def event_lines(n: int):
    yield json.dumps({"type": "status", "time": time.time(), "step": 0, "state": "running",
                      "phase": "training", "total_steps": n, "total_tokens": n * 4096}) + "\n"
    for step in range(1, n + 1):
        loss = 3 + math.exp(-step / 20000) + 0.1 * math.sin(step)
        yield json.dumps({"type": "step", "time": time.time(), "step": step, "loss": loss,
                          "lr": 2e-5 * min(1, step / 1000), "grad_norm": 1.0, "tokens": step * 4096,
                          "tokens_per_second": 50000.0, "replay_fraction": 0.05}) + "\n"
        if step % 50 == 0:
            yield json.dumps({"type": "eval", "time": time.time(), "step": step, "tokens": step * 4096,
                              "domain_ppl": 20 - step / 10000, "general_ppl": 15 + step / 50000,
                              "forgetting": step / 750000, "domain_gain": step / 200000}) + "\n"


def make_history(root: Path, runs: int, events: int) -> tuple[list[Path], Path]:
    """`runs` run folders in the real layout (create_run), each with `events` events; the
    last is left "running" for the live writer, the one before died without a final status.
    Returns the folders and the live one."""
    from cpt_studio.core.config import CorpusConfig, ModelConfig, RunConfig
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.runs import create_run

    domain = root / "domain.jsonl"
    domain.write_text(json.dumps({"text": "a domain document"}) + "\n")
    folders = []
    for i in range(runs):
        config = RunConfig(name=f"history-{i:02d}", model=ModelConfig(f"/models/qwen-{i % 3}b"),
                           corpus=CorpusConfig(domain=[SourceSpec(str(domain))], replay_ratio=0))
        folders.append(create_run(config, root / "runs"))
        final = None if i >= runs - 2 else "finished"
        write_history_run(folders[-1], events, final)
    return folders, folders[-1]


def write_history_run(run_dir: Path, events: int, final: str | None) -> None:
    """Step events with an evaluation every 50 steps, a checkpoint every 500 and a guard
    decision, then the final status (`final`; None: the run is still going, or died)."""
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.run_folder import RunPaths

    out = EventWriter(RunPaths(run_dir).events)
    out.emit("status", 0, state="running", phase="training", total_steps=events * 10,
             total_tokens=events * 10 * 4096)
    for step in range(1, events + 1):
        history_event(out, step)
    if final:
        out.emit("status", events, state=final, phase="done", exit_code=0)
    out.close()


def history_event(out, step: int) -> None:
    """The events of one optimizer step of a history run."""
    loss = 3 + math.exp(-step / 2000) + 0.1 * math.sin(step)
    out.emit("step", step, tokens=step * 4096, loss=loss, lr=2e-5, grad_norm=1.0,
             tokens_per_second=50000.0, replay_fraction=0.05)
    if step % 50 == 0:
        out.emit("eval", step, tokens=step * 4096, domain_ppl=20 - step / 1000,
                 general_ppl=15 + step / 5000, forgetting=step / 75000, domain_gain=step / 20000)
    if step % 500 == 0:
        out.emit("checkpoint", step, tokens=step * 4096, path=f"checkpoints/checkpoint-{step}")
    if step % 1500 == 0:
        out.emit("guard", step, reason="forgetting above the threshold", action="rollback",
                 forgetting=0.16, threshold=0.15)


def live_writer_process(run_dir: Path, first_step: int, rate: float):
    import subprocess

    return subprocess.Popen([sys.executable, __file__, "--live-run", str(run_dir), str(first_step),
                             str(rate)])


def live_run(run_dir: Path, first_step: int, rate: float) -> None:
    """Be the live run's worker: record this process's pid, then append `rate` events/s."""
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.run_folder import RunPaths
    from cpt_studio.core.runs import write_pid

    write_pid(run_dir)
    out = EventWriter(RunPaths(run_dir).events)
    started = time.monotonic()
    for i, step in enumerate(range(first_step, 10**9)):
        history_event(out, step)
        ahead = started + (i + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def write_events_process(path: Path, n: int, seconds: float):
    """The writer in its own process, as the worker is: it must not share this GIL."""
    import subprocess

    return subprocess.Popen([sys.executable, __file__, "--write-events", str(path), str(n), str(seconds)])


def write_events(path: Path, n: int, seconds: float) -> None:
    started = time.monotonic()
    with open(path, "a") as f:
        for i, line in enumerate(event_lines(n)):
            f.write(line)
            if i % 500 == 0:
                f.flush()
                ahead = started + seconds * i / (n * 1.02) - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)


class Heartbeat:
    """Ticks every 5 ms on the GUI thread; a tick that comes late measures a stall. With
    `explain`, a StallSampler says which code the GUI thread was in during the stalls."""

    explain = False

    def __init__(self, interval_ms: int = 5):
        self.interval, self.gaps = interval_ms, []
        self.clock = QElapsedTimer()
        self.clock.start()
        self.last_tick = time.monotonic()
        self.timer = QTimer(interval=interval_ms, timeout=self._tick)
        self.timer.start()
        self.sampler = StallSampler(self) if self.explain else None

    def _tick(self) -> None:
        self.gaps.append(self.clock.restart())
        self.last_tick = time.monotonic()

    def report(self, name: str) -> tuple[float, float]:
        gaps = sorted(self.gaps + [self.clock.elapsed()])  # and the gap still open now
        longest, p99 = gaps[-1], gaps[int(0.99 * (len(gaps) - 1))]
        print(f"{name:<28} longest stall {longest:>5} ms   99th percentile {p99:>4} ms   ({len(gaps):,} ticks)")
        if self.sampler:
            self.sampler.report()
        return longest, p99


class StallSampler(threading.Thread):
    """--explain: while the heartbeat is more than LATE seconds late, sample the GUI thread's
    Python stack every 10 ms; report() prints the code seen most (a stall inside Qt, such as
    painting, shows as the event loop's caller)."""

    LATE = 0.05

    def __init__(self, beat: Heartbeat):
        super().__init__(daemon=True)
        self.beat, self.gui = beat, threading.main_thread().ident
        self.samples: collections.Counter = collections.Counter()
        self.start()

    def run(self) -> None:
        while self.beat.timer.isActive():
            time.sleep(0.01)
            if time.monotonic() - self.beat.last_tick > self.LATE:
                frame = sys._current_frames().get(self.gui)
                self.samples[_where(frame)] += 1

    def report(self) -> None:
        for where, count in self.samples.most_common(6):
            print(f"     {count * 10:>6} ms in {where}")


def _where(frame, depth: int = 3) -> str:
    """The innermost `depth` frames of the app, pyqtgraph or this bench, innermost first."""
    names = []
    while frame is not None and len(names) < depth:
        path = frame.f_code.co_filename
        if any(part in path for part in ("cpt_studio", "wt-", "pyqtgraph", "gui_stream")):
            names.append(f"{Path(path).name}:{frame.f_code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(names)


def run_until(app, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.001)


def run_loop(seconds: float) -> None:
    """Run the application's event loop for `seconds`, as app.exec() would."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def settle(app, seconds: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--history-events", type=int, default=3000)
    parser.add_argument("--history-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=20.0, help="the live run's events per second")
    parser.add_argument("--only", choices=("monitor", "history"), help="run only these phases")
    parser.add_argument("--explain", action="store_true",
                        help="also print where the GUI thread was during the stalls")
    parser.add_argument("--write-events", nargs=3, metavar=("PATH", "N", "SECONDS"),
                        help="internal: be the event writer process")
    parser.add_argument("--live-run", nargs=3, metavar=("RUN", "FIRST_STEP", "RATE"),
                        help="internal: be the live run's worker")
    args = parser.parse_args()
    if args.write_events:
        path, n, seconds = args.write_events
        write_events(Path(path), int(n), float(seconds))
        return
    if args.live_run:
        run, first, rate = args.live_run
        live_run(Path(run), int(first), float(rate))
        return
    app = QApplication([])
    Heartbeat.explain = args.explain
    stalls = []
    if args.only != "history":
        stalls += monitor_phases(app, args)
    if args.only != "monitor":
        stalls += history_phases(app, args)
    worst = max(stalls)
    print(f"longest GUI-thread stall: {worst} ms (target under 100 ms): {'met' if worst < 100 else 'NOT met'}")


def monitor_phases(app, args) -> list[float]:
    from cpt_studio.gui.monitor import MonitorWindow

    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        monitor = MonitorWindow(run)
        monitor.resize(1200, 950)
        monitor.show()
        settle(app)  # the window's first layout and paint are start-up, not streaming
        beat = Heartbeat()
        writer = write_events_process(run / "events.jsonl", args.events, args.seconds)
        run_until(app, lambda: writer.poll() is not None and len(monitor.series.steps) >= args.events, 120)
        live = beat.report("1. live, while written")
        beat.timer.stop()
        print(f"   charted {len(monitor.series.steps):,} steps, {len(monitor.series.evals):,} evaluations")
        monitor.close()
        again = MonitorWindow(run)
        again.resize(1200, 950)
        again.show()
        settle(app)
        beat = Heartbeat()
        run_until(app, lambda: len(again.series.steps) >= args.events, 120)
        reopen = beat.report("2. re-open the full file")
        beat.timer.stop()
        print(f"   caught up with {len(again.series.steps):,} steps")
        again.close()
    return [live[0], reopen[0]]


def history_phases(app, args) -> list[float]:
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        os.environ["CPT_STUDIO_HOME"] = str(Path(tmp) / "home")
        folders, live = make_history(Path(tmp), args.runs, args.history_events)
        writer = live_writer_process(live, args.history_events + 1, args.rate)
        try:
            time.sleep(1.0)  # its pid is recorded
            return history_stalls(app, args, Path(tmp) / "runs", len(folders), live)
        finally:
            writer.kill()
            writer.wait()


def history_stalls(app, args, runs_root: Path, runs: int, live: Path) -> list[float]:
    from cpt_studio.gui.main_window import MainWindow

    beat = Heartbeat()
    windows = []

    def open_window():
        windows.append(MainWindow(runs_root=runs_root))
        windows[0].show()

    QTimer.singleShot(0, open_window)
    run_until(app, lambda: bool(windows) and windows[0].table.rowCount() >= runs, 120)
    opened = beat.report("3. open the history")
    beat.timer.stop()
    window = windows[0]
    states = [window.table.item(r, 1).text() for r in range(window.table.rowCount())]
    print(f"   listed {window.table.rowCount()} runs: " + ", ".join(
        f"{states.count(s)} {s}" for s in sorted(set(states))))
    monitor = window.open_monitor(live)
    run_loop(3.0)  # the monitor's first catch-up is opening, not streaming
    seen = len(monitor.series.steps)
    beat = Heartbeat()
    run_loop(args.history_seconds)
    steady = beat.report("4. history + live monitor")
    beat.timer.stop()
    print(f"   the live run grew by {len(monitor.series.steps) - seen} charted steps in "
          f"{args.history_seconds:.0f} s")
    monitor.close()
    window.close()
    run_until(app, lambda: not getattr(window, "history", None) or not window.history.busy, 30)
    return [opened[0], steady[0]]


if __name__ == "__main__":
    main()
