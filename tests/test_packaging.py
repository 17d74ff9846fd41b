"""The installable application: a wheel that works outside the checkout, its own namespace,
resources inside the package, the desktop launcher, process control through psutil."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from cpt_studio.core.config import EvalConfig, ScheduleConfig
from cpt_studio.core.desktop import desktop_files, install_desktop_entry, uninstall_desktop_entry
from cpt_studio.core.paths import APP_ID, resource_path
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import (
    kill_worker,
    run_state,
    worker_command,
    worker_pid,
    write_pid,
)
from cpt_studio.core.testing.run_helpers import (
    events_of,
    run_in_background,
    tiny_run_config,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent


def _source_copy(dest: Path) -> Path:
    """The repository's files without its build litter, so building never writes into it."""
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv*",
                                    ".pytest_cache", ".ruff_cache", "docs")
    return Path(shutil.copytree(REPO, dest, ignore=ignore))


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed, not editable. It sees this
    environment's packages (torch and the rest: nothing is downloaded) but not the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = _source_copy(root / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(source)], check=True, cwd=root)
    wheel = next((root / "dist").glob("cpt_studio-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, cwd=root)
    return venv


def _in_venv(venv: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {}), "VIRTUAL_ENV": str(venv)})


@pytest.mark.slow
def test_the_wheel_works_from_an_unrelated_folder(wheel_venv, tmp_path, tiny_model_dir):
    bin_dir, elsewhere = wheel_venv / "bin", tmp_path / "elsewhere"
    elsewhere.mkdir()
    python = str(bin_dir / "python")

    help_text = _in_venv(wheel_venv, str(bin_dir / "cpt-studio"), "--help", cwd=elsewhere)
    assert help_text.returncode == 0 and "train" in help_text.stdout

    where = _in_venv(wheel_venv, python, "-c",
                     "import cpt_studio.core.runs as r; from cpt_studio.core.paths import resource_path; "
                     "print(r.__file__); print(resource_path('demo', 'domain.jsonl'))", cwd=elsewhere)
    module_file, demo_corpus = where.stdout.split()
    assert Path(module_file).is_relative_to(wheel_venv)  # the wheel's copy, not the checkout's
    assert Path(demo_corpus).is_relative_to(wheel_venv) and len(Path(demo_corpus).read_text().splitlines()) == 120

    for name in ("core", "gui"):  # only our own namespace is installed
        other = _in_venv(wheel_venv, python, "-c", f"import {name}", cwd=elsewhere)
        assert other.returncode != 0 and "ModuleNotFoundError" in other.stderr

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config = replace(config, schedule=replace(config.schedule, max_steps=2),
                     eval=replace(config.eval, interval=2))
    (elsewhere / "run.json").write_text(config.to_json())
    home = tmp_path / "home"
    started = _in_venv(wheel_venv, str(bin_dir / "cpt-studio"), "train", "run.json", "--detach",
                       cwd=elsewhere, env={"CPT_STUDIO_HOME": str(home)})
    assert started.returncode == 0, started.stderr
    run_dir = Path(re.search(r"run folder: (\S+)", started.stdout).group(1))
    wait_for(lambda: (events_of(run_dir, "status") or [{}])[-1].get("state") in ("finished", "failed"),
             240, "the detached worker to finish", poll=0.5)
    final = events_of(run_dir, "status")[-1]
    assert final["state"] == "finished", final.get("message")
    assert max(e["step"] for e in events_of(run_dir, "step")) == 2


def test_resources_are_read_from_the_package():
    assert resource_path("demo", "domain.jsonl").read_text().count("\n") == 120
    assert resource_path("demo").is_dir()
    assert resource_path("cpt-studio.svg", package="cpt_studio.resources.icons").read_text().startswith("<?xml")
    with pytest.raises(FileNotFoundError, match="demo/missing.jsonl.*reinstall"):
        resource_path("demo", "missing.jsonl")


def test_no_module_edits_the_import_path():
    """bench/, tests/ and the worker use the installed package: no sys.path or PYTHONPATH edits."""
    offenders = []
    for path in REPO.rglob("*.py"):
        if {".git", "build"} & set(path.parts) or path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"sys\.path\s*(\.insert|\.append|\[|=|\+=)|PYTHONPATH", text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_desktop_install_writes_a_valid_entry_that_starts_this_installation(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    files = install_desktop_entry()
    assert files == desktop_files(tmp_path / "share") and all(p.exists() for p in files.values())
    entry = files["entry"].read_text()
    launcher = Path(re.search(r"^Exec=(.+)$", entry, re.M).group(1))
    assert launcher.is_absolute() and launcher.name == "cpt-studio-gui" and os.access(launcher, os.X_OK)
    assert f"Icon={APP_ID}" in entry
    assert files["png-256"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    validator = shutil.which("desktop-file-validate")
    if validator:  # .ci/run installs it; the packaged entry itself is validated there too
        check = subprocess.run([validator, str(files["entry"])], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    removed = uninstall_desktop_entry()
    assert len(removed) == len(files) and not files["entry"].exists()


@pytest.mark.parametrize("folder", ["my apps", "R&D", "a(1)", "semi;colon", "hash#x", "100%", "it's",
                                    "co$t", 'say "hi"', "back\\slash"])
def test_exec_paths_with_reserved_characters_stay_one_valid_argument(tmp_path, monkeypatch, folder):
    from cpt_studio.core import desktop

    monkeypatch.setattr(desktop, "gui_launcher", lambda: tmp_path / folder / "cpt-studio-gui")
    entry = install_desktop_entry(tmp_path / "share")["entry"]
    validator = shutil.which("desktop-file-validate")
    if validator:
        check = subprocess.run([validator, str(entry)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    exec_value = re.search(r"^Exec=(.+)$", entry.read_text(), re.M).group(1)
    assert _unquote_exec(exec_value) == str(tmp_path / folder / "cpt-studio-gui")


def _unquote_exec(value: str) -> str:
    """What a desktop reads back from an Exec value of one argument (the specification's string
    unescaping, then its quoting rules, then %% -> %)."""
    value = value.replace("\\\\", "\\")
    if value.startswith('"'):
        value = re.sub(r'\\(["`$\\])', r"\1", value[1:-1])
    return value.replace("%%", "%")


def test_a_relative_xdg_data_home_is_ignored(monkeypatch, tmp_path):
    from cpt_studio.core.desktop import data_home

    monkeypatch.setenv("XDG_DATA_HOME", "relative/share")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_home() == tmp_path / ".local" / "share"


def test_the_bundle_installs_its_own_executable_as_the_launcher(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bundle" / "cpt-studio"))
    entry = install_desktop_entry(tmp_path / "share")["entry"].read_text()
    assert f"Exec={tmp_path}/bundle/cpt-studio\n" in entry and "StartupWMClass=cpt-studio\n" in entry


def test_the_frozen_bundle_runs_the_worker_with_its_own_executable(monkeypatch, tmp_path):
    assert worker_command(tmp_path)[:3] == [sys.executable, "-m", "cpt_studio.core.worker"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert worker_command(tmp_path) == [sys.executable, "worker", str(tmp_path)]


def test_the_bundle_entry_dispatches_to_cli_and_worker(tmp_path):
    entry = REPO / "packaging" / "pyinstaller" / "cpt_studio_bundle.py"
    version = subprocess.run([sys.executable, str(entry), "cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("cpt-studio ")
    worker = subprocess.run([sys.executable, str(entry), "worker", str(tmp_path)], capture_output=True, text=True)
    assert worker.returncode == 2 and "not a run folder" in worker.stderr


def test_a_reused_pid_is_not_taken_for_the_worker(tmp_path):
    RunPaths(tmp_path).pid.parent.mkdir(parents=True, exist_ok=True)
    write_pid(tmp_path)  # this test process, with its start time
    assert worker_pid(tmp_path) == os.getpid()
    pid, started = RunPaths(tmp_path).pid.read_text().split()
    RunPaths(tmp_path).pid.write_text(f"{pid} {float(started) - 100}")  # same pid, another process
    assert worker_pid(tmp_path) is None


@pytest.mark.slow
def test_kill_ends_an_unresponsive_worker_and_the_run_reads_failed(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=100_000),
                             eval=EvalConfig(interval=100_000, heldout_count=8))
    run_dir, process = run_in_background(config, tmp_path / "runs")
    try:
        wait_for(lambda: len(events_of(run_dir, "step")) >= 1, 120, "the first step", poll=0.1)
        pid = worker_pid(run_dir)
        assert pid == process.pid
        assert kill_worker(run_dir)
        process.wait(10)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert worker_pid(run_dir) is None and not kill_worker(run_dir)
        state = run_state(run_dir)
        assert state["state"] == "failed" and "without a final status" in state["message"]
    finally:
        if process.poll() is None:
            process.kill()
            time.sleep(0.1)


def test_the_app_window_has_the_icon(qtbot):
    from cpt_studio.gui.app import app_icon

    icon = app_icon()
    sizes = {(s.width(), s.height()) for s in icon.availableSizes()}
    assert {(16, 16), (48, 48), (256, 256)} <= sizes
    assert not icon.pixmap(64, 64).isNull()


def test_a_second_start_of_the_same_run_is_refused_at_once(tmp_path, tiny_model_dir):
    from cpt_studio.core.runs import _claim, create_run, start_worker

    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=100_000),
                             eval=EvalConfig(interval=100_000, heldout_count=8))
    run_dir = create_run(config, tmp_path / "runs")
    first = start_worker(run_dir)
    try:
        assert worker_pid(run_dir) == first.pid  # known before the worker has even started up
        with pytest.raises(ValueError, match="already running"):
            start_worker(run_dir, resume=True)
        with _claim(RunPaths(run_dir)), pytest.raises(ValueError, match="being started by another"):
            start_worker(run_dir, resume=True)
    finally:
        kill_worker(run_dir)
        first.wait(10)
    assert not (run_dir / "worker.claim").exists()
