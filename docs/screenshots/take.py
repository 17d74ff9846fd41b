"""Screenshots of every wizard page and of the run monitor, for the docs and for review.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py [RUN_DIR]

The wizard is filled with the demo's setup (the demo model and corpus). The monitor shows
RUN_DIR if given (take it while a run is going), else the newest run in the data folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from PySide6.QtWidgets import QApplication  # noqa: E402


def settle(app, jobs=()) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(j._thread.isRunning() for j in jobs):
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        app.processEvents()


def wizard_pages(app) -> None:
    from core.demo import demo_config
    from gui.wizard import RunWizard

    wizard = RunWizard(config=demo_config())
    wizard.show()
    names = ["1-model", "2-corpus", "3-replay", "4-schedule", "5-tokenizer", "6-method", "7-eval", "8-summary"]
    for i, name in enumerate(names):
        page = wizard.currentPage()
        jobs = []
        if name == "1-model":
            page._on_model_changed()
            jobs = [page._describe, page._scan]
        elif name == "2-corpus":
            jobs = [page.start_check()]
        elif name == "5-tokenizer" and page.preview_button.isEnabled():
            jobs = [page.start_preview()]
        elif name == "8-summary":
            jobs = [page.start_plan()]
        settle(app, jobs)
        wizard.grab().save(str(HERE / f"wizard-{name}.png"))
        if i < len(names) - 1:
            wizard.next()


def monitor(app, run_dir: Path) -> None:
    from gui.monitor import MonitorWindow

    window = MonitorWindow(run_dir)
    window.resize(1200, 950)
    window.show()
    window.catch_up()
    window._poll_state()
    steps = window.series.steps["step"].values
    if len(steps):
        window.charts.move_crosshair(float(steps[len(steps) * 2 // 3]))
    settle(app)
    window.grab().save(str(HERE / "monitor.png"))


def main() -> None:
    from core.runs import runs_dir

    app = QApplication([])
    wizard_pages(app)
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else max(runs_dir().iterdir(), key=lambda p: p.stat().st_mtime)
    monitor(app, run_dir)
    print(f"saved in {HERE}")


if __name__ == "__main__":
    main()
