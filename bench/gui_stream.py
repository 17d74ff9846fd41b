"""The run monitor under 100,000 events: the longest GUI-thread stall.

    QT_QPA_PLATFORM=offscreen python bench/gui_stream.py [--events 100000] [--seconds 10]

Two phases, each with a 5 ms heartbeat timer on the GUI thread whose late ticks are the
stalls (the time the window could not repaint or answer a click):
  1. live: a writer process appends step events (and an eval every 50 steps) to events.jsonl
     at an even pace over --seconds while a MonitorWindow tails and redraws;
  2. re-open: a new MonitorWindow opens the finished 100,000-event file and catches up.
Prints the longest stall and the 99th percentile of each phase (target: under 100 ms).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PySide6.QtCore import QElapsedTimer, QTimer  # noqa: E402
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


def write_events_process(path: Path, n: int, seconds: float):
    """The writer in its own process, as the worker is: it must not share this GIL."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from gui_stream import write_events; "
            f"write_events(__import__('pathlib').Path({str(path)!r}), {n}, {seconds})")
    return subprocess.Popen([sys.executable, "-c", code])


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
    """Ticks every 5 ms on the GUI thread; a tick that comes late measures a stall."""

    def __init__(self, interval_ms: int = 5):
        self.interval, self.gaps = interval_ms, []
        self.clock = QElapsedTimer()
        self.clock.start()
        self.timer = QTimer(interval=interval_ms, timeout=self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.gaps.append(self.clock.restart())

    def report(self, name: str) -> tuple[float, float]:
        gaps = sorted(self.gaps)
        longest, p99 = gaps[-1], gaps[int(0.99 * (len(gaps) - 1))]
        print(f"{name:<28} longest stall {longest:>5} ms   99th percentile {p99:>4} ms   ({len(gaps):,} ticks)")
        return longest, p99


def run_until(app, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.001)


def settle(app, seconds: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    app = QApplication([])
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
        print(f"   caught up with {len(again.series.steps):,} steps")
    worst = max(live[0], reopen[0])
    print(f"longest GUI-thread stall: {worst} ms (target under 100 ms): {'met' if worst < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
