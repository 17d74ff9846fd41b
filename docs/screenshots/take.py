"""Screenshots of every wizard page and of the run monitor, for the docs and for review.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py [RUN_DIR]
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py --history RUN_DIR [PROMPT]
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py compare   # only compare-*.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py evaluation  # evaluate-dialog.png,
                                                        # compare-scores.png, monitor-probes.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py guard  # monitor-guard-markers.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py failure  # monitor-failed.png,
                                                                      # monitor-stopped.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py dialogs  # export-done.png,
                                                        # demo-confirm.png, wizard-2-corpus-progress.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py launch  # launch-dialog.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py export-options RUN_DIR STEP
                                                        # export-options.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py preflight [FOLDER]
                                                        # wizard-8-summary-warnings.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py sft [FOLDER]  # sft-wizard-data.png,
                                                                          # history-chain.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py desktop  # main-window-history.png,
                          # main-window-monitor.png, preferences.png, help-tour.png
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py sweep [FOLDER]  # sweep.png,
                          # sweep-dialog.png (a real 2 x 2 sweep of the tiny model, ~20 s)
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py interpolation [FOLDER]
                          # compare-interpolation.png: a curve on the gain-vs-forgetting scatter
    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py replay [FOLDER]
                          # wizard-3-replay-suggestion.png: the distance measured on the demo

Each takes the light theme's screenshots, NAME.png; with `--theme dark` first, the dark
theme's, NAME-dark.png (the charts too):

    QT_QPA_PLATFORM=offscreen python docs/screenshots/take.py --theme dark guard

The wizard is filled with the demo's setup (the demo model and corpus). The monitor shows
RUN_DIR if given (take it while a run is going), else the newest run in the data folder.
The comparison view shows three hand-written runs (replay 0%, 5%, 15%; tests/compare_runs.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent

from PySide6.QtWidgets import QApplication  # noqa: E402

THEME = {"name": "light"}
"""The theme the screenshots are taken in (--theme)."""
MEASURE_TIMEOUT = 600
"""Seconds to wait for the replay page's measurement (the demo model reads two samples; minutes
on a busy CPU)."""


def history_window(app, runs_root: Path, selected: Path, size: tuple[int, int]):
    """The main window on `runs_root`'s history, loaded, with the run `selected` selected."""
    from cpt_studio.gui.main_window import MainWindow

    window = MainWindow(runs_root=runs_root)
    window.resize(*size)
    window.show()
    settle(app, [window.history])
    window.select_runs([str(selected.resolve())])
    settle(app)
    return window


def save(widget, name: str, folder: Path | None = None) -> None:
    """`widget`'s screenshot as `name` (light theme) or NAME-dark.png (dark), in `folder`
    (default: this one)."""
    path = (folder or HERE) / name
    if THEME["name"] == "dark":
        path = path.with_name(f"{path.stem}-dark{path.suffix}")
    widget.grab().save(str(path))


def settle(app, jobs=(), timeout: float = 60) -> None:
    """Process events until `jobs` (Jobs, or BackgroundRefresh loads) have reported (at most
    `timeout` seconds)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(j.busy if hasattr(j, "busy") else j._thread.isRunning()
                                              for j in jobs):
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        app.processEvents()


def wizard_pages(app) -> None:
    from cpt_studio.core.demo import demo_config
    from cpt_studio.gui.wizard import RunWizard

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
        elif name == "3-replay" and page.suggestion.job is not None:
            jobs = [page.suggestion.job]  # the distance measured with the demo model
        elif name == "5-tokenizer" and page.preview_button.isEnabled():
            jobs = [page.start_preview()]
        elif name == "8-summary":
            jobs = [page._check_job, page.start_plan()]
        settle(app, jobs, timeout=MEASURE_TIMEOUT if name == "3-replay" else 60)
        save(wizard, f"wizard-{name}.png")
        if i < len(names) - 1:
            wizard.next()


def summary_warnings(app, folder: Path = HERE) -> None:
    """wizard-8-summary-warnings.png: the demo's setup changed to trip pre-flight warnings (no
    independent general evaluation set, an evaluation interval longer than the run, a corpus
    file with double-encoded text), with the plan estimated."""
    import tempfile

    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.demo import demo_config
    from cpt_studio.core.testing.corpus_files import write_jsonl
    from cpt_studio.gui.pages.summary_page import SummaryPage
    from cpt_studio.gui.wizard import RunWizard

    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config()
        extra = write_jsonl(Path(tmp) / "scraped.jsonl", ["Tacrolimus levels rose after the cafÃ© visit.",
                                                          "A normal note.", "The patientâ€™s trough was 8."])
        config.corpus.domain.append(SourceSpec(str(extra)))
        config.eval.sets, config.eval.interval = [], 60
        wizard = RunWizard(config=config)
        wizard.resize(1000, 900)
        wizard.show()
        while not isinstance(wizard.currentPage(), SummaryPage):
            wizard.next()
        page = wizard.currentPage()
        settle(app, [page._check_job, page.start_plan()])
        save(wizard, "wizard-8-summary-warnings.png", folder)


def monitor(app, run_dir: Path) -> None:
    from cpt_studio.gui.monitor import MonitorWindow

    window = MonitorWindow(run_dir)
    window.resize(1200, 950)
    window.show()
    window.catch_up()
    window._poll_state()
    steps = window.series.steps["step"].values
    if len(steps):
        window.charts.move_crosshair(float(steps[len(steps) * 2 // 3]))
    settle(app, [window.worker_check])
    save(window, "monitor.png")


def compare(app, db, run_ids: list[str]) -> None:
    """compare-checkpoints.png (one run's row selected), compare-curves.png, compare-settings.png."""
    from cpt_studio.gui.compare import CompareWindow

    window = CompareWindow(db, run_ids)
    window.resize(1200, 900)
    window.show()
    recommended = next(i for i, row in enumerate(window.rows) if row["recommended"])
    window.table.selectRow(recommended)
    for index, name in enumerate(("checkpoints", "curves", "settings")):
        window.tabs.setCurrentIndex(index)
        settle(app)
        save(window, f"compare-{name}.png")


def compare_example(app) -> None:
    import tempfile

    from cpt_studio.core.store import open_store
    from cpt_studio.core.testing.compare_runs import three_runs

    db = open_store(":memory:")
    with tempfile.TemporaryDirectory() as root:
        compare(app, db, three_runs(db, Path(root)))


def write_interpolation_curve(run_dir: Path, step: int, gain: float, forgetting: float) -> None:
    """A hand-written curve between the base model and the checkpoint at `step` (whose domain
    gain and forgetting are given): gain rising faster than forgetting, as interpolation curves
    usually do, the ends on the base and the checkpoint."""
    from cpt_studio.core.interpolate import InterpolationCurve, InterpolationPoint

    points = []
    for alpha in (0, 0.25, 0.5, 0.75, 1):
        g, f = gain * (1 - (1 - alpha) ** 1.6), forgetting * alpha ** 2.2
        points.append(InterpolationPoint(alpha, {"domain_ppl": 12.0 * (1 - g), "general_ppl": 20.0 * (1 + f),
                                                 "domain_gain": g, "forgetting": f}))
    InterpolationCurve(step, "full", {"domain_ppl": 12.0, "general_ppl": 20.0}, points).save(run_dir)


def interpolation_example(app, folder: Path = HERE) -> None:
    """compare-interpolation.png: the three hand-written runs, a saved interpolation curve of
    the replay-0 run's last checkpoint drawn on the scatter, its α = 0.5 point chosen."""
    import tempfile

    from cpt_studio.core.store import open_store
    from cpt_studio.core.testing.compare_runs import three_runs
    from cpt_studio.gui.compare import CompareWindow

    db = open_store(":memory:")
    with tempfile.TemporaryDirectory() as root:
        run_ids = three_runs(db, Path(root))
        window = CompareWindow(db, run_ids)
        last = max((r for r in window.rows if r["run_id"] == run_ids[0]), key=lambda r: r["step"])
        write_interpolation_curve(Path(run_ids[0]), last["step"], last["domain_gain"], last["forgetting"])
        window.close()
        window = CompareWindow(db, run_ids)  # a saved curve is drawn when the view opens
        window.resize(1200, 900)
        window.show()
        window.table.selectRow(window.rows.index(next(r for r in window.rows if r["run_id"] == run_ids[0]
                                                       and r["step"] == last["step"])))
        key = (run_ids[0], last["step"])
        dots = window.scatter.curves[key][1]
        window.scatter._on_curve_clicked(key, [dots.points()[2]])
        settle(app)
        save(window, "compare-interpolation.png", folder)


def replay_suggestion(app, folder: Path = HERE) -> None:
    """wizard-3-replay-suggestion.png: the demo's setup on the replay page, the domain's
    distance measured with the demo model (loaded here) and the replay ratio suggested."""
    from cpt_studio.core.demo import demo_config
    from cpt_studio.gui.pages.replay_page import ReplayPage
    from cpt_studio.gui.wizard import RunWizard

    wizard = RunWizard(config=demo_config())
    wizard.resize(1000, 900)
    wizard.show()
    while not isinstance(wizard.currentPage(), ReplayPage):
        wizard.next()
    page = wizard.currentPage()
    settle(app, [page.suggestion.job] if page.suggestion.job else [], timeout=MEASURE_TIMEOUT)
    save(wizard, "wizard-3-replay-suggestion.png", folder)


def evaluation_example(app) -> None:
    """evaluate-dialog.png (the medical preset checked for availability here, offline: its
    registry tasks are marked unavailable; the demo's probe file), compare-scores.png (a run
    with base and checkpoint scores, a general task dropping 5 points) and monitor-probes.png
    (a run that scored its probes at every checkpoint, and a finished evaluation)."""
    import tempfile

    from cpt_studio.core.store import open_store
    from cpt_studio.core.testing.compare_runs import evaluated_run

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        run_dir = probe_run(root / "probed")
        dialog_shot(app, run_dir)
        db = open_store(":memory:")
        run_id = evaluated_run(db, root / "runs")
        from cpt_studio.gui.compare import CompareWindow

        window = CompareWindow(db, [run_id])
        window.resize(1300, 950)
        window.show()
        window.table.selectRow(next(i for i, row in enumerate(window.rows) if row["recommended"]))
        settle(app)
        save(window, "compare-scores.png")

        monitor_shot(app, run_dir, (1200, 1100), 30.0, "monitor-probes.png")


def dialog_shot(app, run_dir: Path) -> None:
    from cpt_studio.gui.evaluate_dialog import EvaluateDialog

    dialog = EvaluateDialog(run_dir, [30])
    dialog.show()
    dialog.presets.setCurrentText("medical")
    dialog.limit.setValue(50)
    settle(app, [dialog._availability_job] if dialog._availability_job else [])
    settle(app, [dialog._availability_job] if dialog._availability_job else [])
    save(dialog, "evaluate-dialog.png")


def probe_run(folder: Path) -> Path:
    """A finished demo-like run written by hand: 40 steps, evaluations and checkpoints every 10,
    live probe scores at each checkpoint, and a finished evaluation job."""
    import math

    from cpt_studio.core.config import BenchmarkConfig, RunConfig
    from cpt_studio.core.evaljob import write_run_probes
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.paths import resource_path
    from cpt_studio.core.run_folder import RunPaths

    paths = RunPaths(folder)
    probes = str(resource_path("demo", "probes.jsonl"))
    config = RunConfig(name="demo-probes")
    config.checkpoints.interval = 10
    config.benchmarks = BenchmarkConfig(probes=probes, probes_during_training=True)
    folder.mkdir(parents=True)
    paths.logs.mkdir()
    paths.config.write_text(config.to_json())
    write_run_probes(folder, probes)
    out = EventWriter(paths.events)
    out.emit("status", 0, state="running", phase="training", total_steps=40, total_tokens=40 * 4096)
    for step in range(0, 41):
        if step:
            out.emit("step", step, tokens=step * 4096, loss=3.2 - 0.6 * (1 - math.exp(-step / 12)),
                     lr=1e-4 * min(1.0, step / 4) * (0.55 + 0.45 * math.cos(math.pi * step / 40)),
                     grad_norm=1.0, tokens_per_second=95.0 + 0.5 * math.sin(step))
        if step % 10 == 0:
            gain, forgetting = 0.25 * (1 - math.exp(-step / 15)), 0.004 * step
            out.emit("eval", step, tokens=step * 4096, baseline=step == 0, domain_ppl=18 * (1 - gain),
                     general_ppl=12 * (1 + forgetting), domain_gain=gain, forgetting=forgetting)
            for task, base, rise in (("probes_cloze", 0.08, 0.5), ("probes_mc", 0.4, 0.45)):
                out.emit("probe", step, task=task, metric="acc", kind="probe", primary=True, live=True,
                         value=round(base + rise * (1 - math.exp(-step / 14)), 3))
            if step:
                paths.checkpoint(step).mkdir(parents=True)
                out.emit("checkpoint", step, tokens=step * 4096, path=paths.relative(paths.checkpoint(step)))
    out.emit("status", 40, state="finished", phase="done", exit_code=0)
    out.close()
    paths.eval_dir.mkdir(exist_ok=True)
    progress = EventWriter(paths.eval_events)
    unavailable = {"medqa_4options": "its data is not in the local datasets cache and the Hub cannot "
                   "be reached; run once with a network connection to cache it"}
    progress.emit("status", None, state="running", phase="checking", message="checking 3 task(s)")
    progress.emit("status", None, state="finished", phase="done", done=4, total=4, unavailable=unavailable,
                  message="evaluation finished: 8 score(s)")
    progress.close()
    return folder


def guard_example(app) -> None:
    """monitor-guard-markers.png: a run whose guard rolled back twice (red lines on every
    chart, at the steps of its decisions), drawn against steps."""
    import tempfile


    with tempfile.TemporaryDirectory() as root:
        monitor_shot(app, guard_run(Path(root) / "guarded"), (1200, 950), 70.0, "monitor-guard-markers.png")


def failure_example(app) -> None:
    """monitor-failed.png: a run that ran out of memory, its sentence with the traceback opened
    under Details; monitor-stopped.png: a stopped run (no ETA), with its markers (evaluations,
    checkpoints, a guard rollback and the resume from step 40) and the crosshair's readout."""
    import tempfile

    import torch

    from cpt_studio.core.testing.monitor_runs import write_monitor_run
    from cpt_studio.gui.monitor import MonitorWindow

    with tempfile.TemporaryDirectory() as root:
        oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.64 GiB total "
                                     "capacity; 21.90 GiB already allocated)")
        failed = write_monitor_run(Path(root) / "failed", steps=90, end="failed", error=oom)
        monitor = MonitorWindow(failed)
        monitor.resize(1200, 950)
        monitor.show()
        monitor.catch_up()
        monitor._poll_state()
        settle(app, [monitor.worker_check])
        monitor.details_button.setChecked(True)
        monitor.charts.move_crosshair(60.0)
        settle(app)
        save(monitor, "monitor-failed.png")
        stopped = write_monitor_run(Path(root) / "stopped", steps=120, end="stopped", total_steps=300)
        monitor_shot(app, stopped, (1200, 950), 80.0, "monitor-stopped.png")


def monitor_shot(app, run_dir: Path, size: tuple[int, int], crosshair: float, name: str) -> None:
    """The monitor of `run_dir`, caught up, the crosshair at step `crosshair`, saved as `name`."""
    from cpt_studio.gui.monitor import MonitorWindow

    monitor = MonitorWindow(run_dir)
    monitor.resize(*size)
    monitor.show()
    monitor.catch_up()
    monitor._poll_state()
    monitor.charts.move_crosshair(crosshair)
    settle(app, [monitor.worker_check])
    save(monitor, name)


def guard_run(folder: Path) -> Path:
    """A finished run written by hand: 120 steps, evaluations every 10 and checkpoints every 20;
    forgetting passes the 15% threshold at step 50 and at step 90, and the guard rolls back
    to the last good checkpoint with a lower learning rate each time (resumed_from)."""
    import math

    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.run_folder import RunPaths

    paths = RunPaths(folder)
    config = RunConfig(name="demo-guard")
    config.eval.interval, config.checkpoints.interval = 10, 20
    (folder / "logs").mkdir(parents=True)
    paths.config.write_text(config.to_json())
    out = EventWriter(paths.events)
    out.emit("status", 0, state="running", phase="training", total_steps=120, total_tokens=120 * 4096)
    out.emit("eval", 0, tokens=0, baseline=True, domain_ppl=18.0, general_ppl=12.0, domain_gain=0.0,
             forgetting=0.0)
    forgetting_at = {0: 0.0}  # step -> forgetting, as evaluated
    for start, last, peak, slope in ((0, 50, 1e-4, 0.0032), (40, 90, 5e-5, 0.0005), (80, 120, 2.5e-5, -0.0003)):
        if start:  # the guard's rollback: the worker resumes from the checkpoint at `start`
            out.emit("status", start, state="running", phase="training", resumed_from=start)
        for step in range(start + 1, last + 1):
            out.emit("step", step, tokens=step * 4096, loss=3.2 - 0.6 * (1 - math.exp(-step / 25))
                     + 0.03 * math.sin(step * 1.7), lr=peak * min(1.0, step / 5), grad_norm=1.0,
                     tokens_per_second=95.0 + 0.5 * math.sin(step))
            if step % 10 == 0:
                forgetting = forgetting_at[start] + slope * (step - start)
                forgetting_at[step] = forgetting
                gain = 0.25 * (1 - math.exp(-step / 30))
                out.emit("eval", step, tokens=step * 4096, domain_ppl=18 * (1 - gain),
                         general_ppl=12 * (1 + forgetting), domain_gain=gain, forgetting=forgetting)
            if step % 20 == 0:
                out.emit("checkpoint", step, tokens=step * 4096, path=f"checkpoints/checkpoint-{step}")
        if forgetting > 0.15:
            out.emit("guard", last, reason=f"forgetting {forgetting:.0%} above the 15% threshold",
                     trigger="forgetting", action="rollback", threshold=0.15, forgetting=forgetting,
                     rolled_back_to=f"checkpoints/checkpoint-{last - 10}", rolled_back_to_step=last - 10,
                     remedy="learning rate x0.5")
    out.emit("status", 120, state="finished", phase="done", exit_code=0)
    out.close()
    return folder


def dialogs_example(app) -> None:
    """export-done.png: the message at the end of an export; demo-confirm.png: what the Demo
    button says before it starts; wizard-2-corpus-progress.png: a corpus check in progress (its
    bar, what it is reading, Cancel), staged at file 2 of 5."""
    import tempfile

    from cpt_studio.core.demo import demo_config
    from cpt_studio.gui.checkpoint_actions import show_export_done
    from cpt_studio.gui.main_window import MainWindow
    from cpt_studio.gui.wizard import RunWizard

    window = MainWindow(runs_root=Path(tempfile.mkdtemp()))
    box = show_export_done(window, 200, Path.home() / "models" / "demo-step-200")
    settle(app)
    save(box, "export-done.png")
    box = window.demo_box()
    box.show()
    settle(app)
    save(box, "demo-confirm.png")
    wizard = RunWizard(config=demo_config())
    wizard.show()
    wizard.next()
    page = wizard.currentPage()
    page.check_button.setEnabled(False)
    page.report.setText("Checking every record…")
    page.progress.show()
    page.progress.show_progress(1, 5, "domain corpus: 24,000 documents read, file 2 of 5")
    settle(app)
    save(wizard, "wizard-2-corpus-progress.png")


def launch_example(app) -> None:
    """launch-dialog.png: "Run on several GPUs / a cluster…" after writing a bundle for 8 GPUs
    on each of 2 machines with FSDP2, for a demo run."""
    import tempfile

    from cpt_studio.core.demo import demo_config
    from cpt_studio.core.runs import create_run
    from cpt_studio.gui.launch_dialog import LaunchDialog

    run_dir = create_run(demo_config(), Path(tempfile.mkdtemp()))
    dialog = LaunchDialog(run_dir)
    dialog.gpus.setValue(8)
    dialog.nodes.setValue(2)
    dialog.strategy.setCurrentIndex(dialog.strategy.findData("fsdp"))
    dialog.show()
    dialog.write()
    settle(app)
    save(dialog, "launch-dialog.png")


def export_options(app, run_dir: Path, step: int, folder: Path | None = None) -> None:
    """export-options.png: how the checkpoint at `step` of RUN_DIR would be exported (a LoRA
    checkpoint of an SFT run shows merged, adapter and the note on the adapter's base)."""
    from cpt_studio.gui.export_options import ExportOptionsDialog

    dialog = ExportOptionsDialog(run_dir, step)
    dialog.datasets_edit.setText("my-org/pharmacology-qa")
    dialog.tags_edit.setText("medical, pharmacology")
    dialog.show()
    settle(app)
    save(dialog, "export-options.png", folder)
    dialog.reject()


def history_and_generation(app, run_dir: Path, prompt: str) -> None:
    """history.png: the run history with RUN_DIR's folder of runs; generation.png: RUN_DIR's
    base model and checkpoints continuing `prompt`."""
    from PySide6.QtCore import Qt

    from cpt_studio.core import store
    from cpt_studio.core.run_folder import checkpoint_step, list_checkpoints
    from cpt_studio.gui.generation import GenerationWindow
    from cpt_studio.gui.main_window import MainWindow

    window = MainWindow(runs_root=run_dir.parent)
    window.resize(1100, 450)
    window.show()
    settle(app, [window.history])  # the history loads off the GUI thread
    window.select_runs([str(run_dir.resolve())])
    settle(app)
    save(window, "history.png")
    with store.connection() as db:
        generation = GenerationWindow(db, str(run_dir.resolve()))
    generation.resize(1200, 700)
    generation.show()
    generation.prompt.setPlainText(prompt)
    steps = {checkpoint_step(p) for p in list_checkpoints(run_dir)}
    for i in range(generation.checkpoints.count()):
        item = generation.checkpoints.item(i)
        if item.data(Qt.ItemDataRole.UserRole) in (max(steps), sorted(steps)[len(steps) // 2]):
            item.setCheckState(Qt.CheckState.Checked)
    generation.max_tokens.setValue(40)
    settle(app, [generation.generate()])
    save(generation, "generation.png")


def desktop_example(app) -> None:
    """main-window-history.png and main-window-monitor.png (the main window on two
    hand-written runs, then the guarded run's monitor in its tab), preferences.png,
    help-tour.png. A throwaway data folder and settings: the user's are left alone."""
    import tempfile

    from PySide6.QtCore import QSettings


    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        os.environ["CPT_STUDIO_HOME"] = str(root / "home")
        QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(root / "settings"))
        guarded = guard_run(root / "runs" / "demo-guard")
        probe_run(root / "runs" / "demo-probes")
        window = history_window(app, root / "runs", guarded, (1200, 900))
        save(window, "main-window-history.png")
        monitor = window.open_monitor(guarded)
        monitor.catch_up()
        monitor._poll_state()
        monitor.charts.move_crosshair(70.0)
        settle(app, [monitor.worker_check])
        save(window, "main-window-monitor.png")
        dialog = window.open_preferences()
        settle(app)
        save(dialog, "preferences.png")
        dialog.reject()
        tour = window.open_tour()
        settle(app)
        save(tour, "help-tour.png")
        window.tabs.close_all()
        window.close()


SFT_PAIRS = [
    {"instruction": "What is the oral bioavailability of tacrolimus?",
     "response": "About 25%, with wide variation between patients; levels are monitored as trough concentrations."},
    {"instruction": "Which enzyme metabolises cyclosporine?", "input": "Answer in one sentence.",
     "response": "Cytochrome P450 3A4, in the gut wall and the liver."},
    {"system": "You are a clinical pharmacologist.", "instruction": "Why does renal clearance fall with age?",
     "response": "Glomerular filtration declines by roughly 1 mL/min per year after 40."},
]


def sft_example(app, folder: Path = HERE) -> None:
    """sft-wizard-data.png: the instruction-tuning wizard's data page on three pharmacology
    examples, previewed through the plain template (responses highlighted); history-chain.png:
    the history with a CPT run and an SFT run chained to its step 20 (hand-written runs; the
    checkpoint is a tiny model built here). A throwaway data folder: the user's is left alone."""
    import json
    import shutil
    import tempfile

    from PySide6.QtCore import QSettings

    from cpt_studio.core.run_folder import RunPaths
    from cpt_studio.core.sft_run import sft_config
    from cpt_studio.core.testing.compare_runs import REPLAY_5, write_compare_run
    from cpt_studio.core.testing.tiny_model import build_tiny_model
    from cpt_studio.gui.sft_wizard import SftWizard

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        os.environ["CPT_STUDIO_HOME"] = str(root / "home")
        QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(root / "settings"))
        cpt = write_compare_run(root / "runs" / "2026-06-01-pharma", "pharma", 0.05, 2e-5, REPLAY_5)
        shutil.copytree(build_tiny_model(root / "model"), RunPaths(cpt).checkpoint(20), dirs_exist_ok=True)
        data = root / "pharma-qa.jsonl"
        data.write_text("".join(json.dumps(pair) + "\n" for pair in SFT_PAIRS), encoding="utf-8")
        wizard = SftWizard(sft_config(cpt, 20, [str(data)]), runs_root=root / "runs")
        wizard.resize(820, 720)
        wizard.show()
        wizard.notify("Step 20: the recommended checkpoint.")
        page = wizard.currentPage()
        settle(app, [page.check()])
        save(wizard, "sft-wizard-data.png", folder)
        wizard.close()
        sft = write_compare_run(root / "runs" / "2026-06-02-pharma-SFT", "pharma SFT", 0.0, 2e-5, REPLAY_5[:2])
        config = json.loads(RunPaths(sft).config.read_text())
        config.update(stage="sft", parent_run=str(cpt.resolve()), parent_step=20)
        RunPaths(sft).config.write_text(json.dumps(config, indent=2))
        window = history_window(app, root / "runs", sft, (1300, 300))
        save(window, "history-chain.png", folder)
        window.close()


def sweep_example(app, folder: Path = HERE) -> None:
    """sweep.png: the sweep tab of a real 2 x 2 sweep of the tiny model (trained here, a few
    seconds a run), a setting on the front selected; sweep-dialog.png: Find settings (sweep)…"""
    import tempfile

    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.sweep import load_sweep
    from cpt_studio.core.testing.sweep_runs import run_tiny_sweep
    from cpt_studio.core.testing.tiny_model import build_tiny_model
    from cpt_studio.gui.sweep_dialog import SweepDialog
    from cpt_studio.gui.sweep_view import SweepView

    with tempfile.TemporaryDirectory() as root:
        os.environ["CPT_STUDIO_HOME"] = str(Path(root) / "home")
        sweep = run_tiny_sweep(build_tiny_model(Path(root) / "model"), Path(root))
        view = SweepView(sweep)
        view.resize(1200, 700)
        view.show()
        settle(app, [view.refresher])
        view.select_point(next(i for i, p in enumerate(view.points) if p.on_front))
        settle(app)
        save(view, "sweep.png", folder)
        dialog = SweepDialog(RunConfig.from_dict(load_sweep(sweep)["base"]))
        dialog.show()
        settle(app)
        save(dialog, "sweep-dialog.png", folder)
        view.close()


def speed_example(app) -> None:
    """speed-dialog.png: the summary page's "Speed and memory…" with compile on; monitor-mfu.png:
    a running monitor whose header gives tokens/s and MFU beside the progress bar."""
    import os
    import tempfile

    from cpt_studio.core.config import SystemConfig
    from cpt_studio.core.runs import write_pid
    from cpt_studio.core.testing.monitor_runs import write_monitor_run
    from cpt_studio.gui.monitor import MonitorWindow
    from cpt_studio.gui.speed_dialog import SpeedDialog

    dialog = SpeedDialog(SystemConfig(compile=True))
    dialog.show()
    settle(app)
    save(dialog, "speed-dialog.png")
    run_dir = write_monitor_run(Path(tempfile.mkdtemp()) / "pharma-h200", steps=90, end="running")
    write_pid(run_dir, os.getpid())
    window = MonitorWindow(run_dir, poll_ms=50)
    window.resize(1200, 850)
    window.show()
    settle(app)
    window.catch_up()
    settle(app)
    save(window, "monitor-mfu.png")


def main() -> None:
    from cpt_studio.core.runs import runs_dir
    from cpt_studio.gui.theme import apply_theme

    if sys.argv[1:2] == ["--theme"]:
        THEME["name"] = sys.argv[2]
        del sys.argv[1:3]
    app = QApplication([])
    apply_theme(app, THEME["name"])
    if sys.argv[1:2] == ["sft"]:  # [FOLDER]: where to save (default: here)
        sft_example(app, Path(sys.argv[2]) if len(sys.argv) > 2 else HERE)
        print("saved")
        return
    if sys.argv[1:] == ["desktop"]:
        desktop_example(app)
        print(f"saved in {HERE}")
        return
    if sys.argv[1:2] == ["--history"]:
        history_and_generation(app, Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3
                               else "The patient received")
        print(f"saved in {HERE}")
        return
    if sys.argv[1:] == ["evaluation"]:
        evaluation_example(app)
        print(f"saved in {HERE}")
        return
    if sys.argv[1:] == ["failure"]:
        failure_example(app)
        print(f"saved in {HERE}")
        return
    if sys.argv[1:] == ["dialogs"]:
        dialogs_example(app)
        return
    if sys.argv[1:] == ["launch"]:
        launch_example(app)
        print(f"saved in {HERE}")
        return
    if sys.argv[1:2] == ["export-options"]:  # RUN_DIR STEP
        export_options(app, Path(sys.argv[2]), int(sys.argv[3]))
        print(f"saved in {HERE}")
        return
    if sys.argv[1:2] == ["preflight"]:  # [FOLDER]: where to save (default: here)
        summary_warnings(app, Path(sys.argv[2]) if len(sys.argv) > 2 else HERE)
        print("saved")
        return
    if sys.argv[1:2] == ["sweep"]:  # [FOLDER]: where to save (default: here)
        sweep_example(app, Path(sys.argv[2]) if len(sys.argv) > 2 else HERE)
        return
    if sys.argv[1:2] in (["interpolation"], ["replay"]):  # [FOLDER]: where to save (default: here)
        take = interpolation_example if sys.argv[1] == "interpolation" else replay_suggestion
        take(app, Path(sys.argv[2]) if len(sys.argv) > 2 else HERE)
        print("saved")
        return
    if sys.argv[1:] == ["speed"]:
        speed_example(app)
        print(f"saved in {HERE}")
        return
    if sys.argv[1:] == ["guard"]:
        guard_example(app)
        print(f"saved in {HERE}")
        return
    compare_example(app)
    if sys.argv[1:] == ["compare"]:
        print(f"saved in {HERE}")
        return
    wizard_pages(app)
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else max(runs_dir().iterdir(), key=lambda p: p.stat().st_mtime)
    monitor(app, run_dir)
    print(f"saved in {HERE}")


if __name__ == "__main__":
    main()
