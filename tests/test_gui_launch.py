"""Run on several GPUs / a cluster: the history's action opens the dialog on the selected
run, which writes the launch bundle into the run folder (or says what to change)."""

from __future__ import annotations

import yaml

from cpt_studio.core.config import EwcConfig
from cpt_studio.core.events import EventWriter
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import tiny_run_config


def test_the_runs_menu_writes_a_bundle_for_the_selected_run(qtbot, tmp_path, tiny_model_dir):
    from cpt_studio.gui.main_window import MainWindow

    run_dir = create_run(tiny_run_config(tiny_model_dir, tmp_path / "data", ewc=EwcConfig(enabled=True)),
                         tmp_path / "runs")
    events = EventWriter(RunPaths(run_dir).events)  # a run folder the history lists
    events.emit("status", None, state="running", phase="loading")
    events.close()
    window = MainWindow(runs_root=run_dir.parent)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: not window.history.busy)
    assert not window.run_actions["launch"].isEnabled()  # nothing selected
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Runs")
    assert window.run_actions["launch"] in menu.actions()
    window.select_runs([str(run_dir.resolve())])
    assert window.run_actions["launch"].isEnabled()
    dialog = window.open_launch()
    qtbot.addWidget(dialog)

    dialog.gpus.setValue(4)
    dialog.strategy.setCurrentIndex(dialog.strategy.findData("fsdp"))
    assert dialog.write() is None  # EWC and FSDP: refused, with what to change
    assert "EWC penalty is not supported yet with fsdp" in dialog.result.text()
    assert not RunPaths(run_dir).launch.exists() and not dialog.open_folder.isEnabled()

    dialog.strategy.setCurrentIndex(dialog.strategy.findData("ddp"))
    dialog.nodes.setValue(2)
    with qtbot.waitSignal(dialog.written) as written:
        dialog.write()
    paths = RunPaths(run_dir.resolve())
    assert written.args == [paths.launch]
    assert yaml.safe_load(paths.accelerate_config.read_text())["num_processes"] == 8
    assert "bash launch/launch.sh" in dialog.result.text() and dialog.open_folder.isEnabled()
    dialog.grab().save(str(tmp_path / "launch_dialog.png"))


def test_the_model_page_offers_the_gpus_of_a_machine_with_several(qtbot, tmp_path, monkeypatch):
    from cpt_studio.gui.pages import model_page
    from cpt_studio.gui.wizard import RunWizard

    wizard = RunWizard(runs_root=tmp_path / "runs")  # this machine: no GPU, nothing offered
    qtbot.addWidget(wizard)
    wizard.show()
    assert not wizard.currentPage().gpus.isVisible()
    monkeypatch.setattr(model_page, "cuda_devices", lambda: 4)
    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    page = wizard.currentPage()
    assert page.gpus.isVisible() and page.gpus.maximum() == 4
    page.gpus.setValue(4)
    assert wizard.config.system.processes == 4  # Start then launches 4 processes (runs.start_worker)
