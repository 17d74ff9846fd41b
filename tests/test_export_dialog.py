"""Export from the desktop app, offscreen: the destination is checked before any other
question, a new folder is accepted, a non-empty one is offered a new folder inside it, and
the end says where the export is with a button that opens it."""

import shutil
from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialog, QMessageBox, QWidget

from cpt_studio.core import store
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.testing.compare_runs import REPLAY_0, write_compare_run
from cpt_studio.gui.checkpoint_actions import export_with_dialog
from cpt_studio.gui.export_options import ExportOptionsDialog

WEIGHTS = b"\0" * 4096


@pytest.fixture
def run(tmp_path):
    """A finished run whose checkpoint 20 holds a small weights file."""
    folder = write_compare_run(tmp_path / "runs" / "med", "med", 0.0, 2e-5, REPLAY_0)
    checkpoint = RunPaths(folder).checkpoint(20)
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(WEIGHTS)
    (checkpoint / "optimizer.pt").write_bytes(b"\0" * 100)  # training state: not exported
    return folder


@pytest.fixture
def parent(qtbot):
    widget = QWidget()
    qtbot.addWidget(widget)
    return widget


class Dialogs:
    """Stand-ins for the static dialogs: the folder chosen, the answers given, what was asked;
    the export options dialog is accepted (with `mode` chosen, when given), the modes it
    offered kept in `offered`."""

    def __init__(self, monkeypatch, folder: Path, answers=(), mode: str | None = None, fill=None):
        self.asked, self.warnings, self.answers, self.offered = [], [], list(answers), []
        self.mode, self.fill = mode, fill or {}
        monkeypatch.setattr("PySide6.QtWidgets.QFileDialog.getSaveFileName",
                            lambda *a, **k: (str(folder), ""))
        monkeypatch.setattr(QMessageBox, "question", self._question)
        monkeypatch.setattr(QMessageBox, "warning", lambda _p, _t, text: self.warnings.append(text))
        monkeypatch.setattr(ExportOptionsDialog, "exec", lambda dialog: self._options(dialog))

    def _question(self, _parent, _title, text, *args):
        self.asked.append(text)
        return self.answers.pop(0)

    def _options(self, dialog):
        self.offered.append(dialog.modes)
        if self.mode:
            dialog.set_mode(self.mode)
        for field, text in self.fill.items():  # typed into the datasets and tags fields
            getattr(dialog, f"{field}_edit").setText(text)
        dialog.accepted.emit()
        return QDialog.DialogCode.Accepted


def _wait(qtbot, job):
    with qtbot.waitSignal(job.finished, timeout=30_000):
        pass


def test_export_into_a_new_folder_says_where_it_is_and_opens_it(qtbot, parent, run, tmp_path, monkeypatch):
    dest = tmp_path / "models" / "med-20"  # neither folder exists yet
    dialogs = Dialogs(monkeypatch, dest)
    job = export_with_dialog(parent, run, 20)
    _wait(qtbot, job)
    assert dialogs.asked == [] and dialogs.warnings == []  # a full checkpoint: nothing to ask
    assert dialogs.offered == [["full"]]  # but the card's datasets and tags
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS and (dest / "README.md").is_file()
    assert not (dest / "optimizer.pt").exists()
    box = parent.findChild(QMessageBox, "export_done")
    assert box.isVisible() and box.text() == f"Step 20 is exported to:\n{dest}"
    opened = []
    monkeypatch.setattr("PySide6.QtGui.QDesktopServices.openUrl", lambda url: opened.append(url.toLocalFile()))
    parent.resize(700, 400)
    parent.show()
    box.grab().save("/tmp/shots-history/export-done.png")
    next(b for b in box.buttons() if b.text() == "Open folder").click()
    assert opened == [str(dest)]


@pytest.mark.parametrize("where, problem", [("file", "is a file, not a folder"),
                                            ("full", "not enough disk space")])
def test_a_bad_destination_is_refused_before_the_export_options(parent, run, tmp_path, monkeypatch, where, problem):
    (RunPaths(run).checkpoint(20) / "adapter_config.json").write_text("{}")  # a LoRA checkpoint
    (tmp_path / "a-file").write_text("x")
    dest = tmp_path / "a-file" / "export" if where == "file" else tmp_path / "new"
    if where == "full":
        monkeypatch.setattr("shutil.disk_usage", lambda _p: type("Usage", (), {"free": 1000})())
    dialogs = Dialogs(monkeypatch, dest)
    assert export_with_dialog(parent, run, 20) is None
    assert dialogs.asked == [] and dialogs.offered == []  # the export options never came
    assert len(dialogs.warnings) == 1 and problem in dialogs.warnings[0] and str(dest) in dialogs.warnings[0]
    assert not dest.exists()


def test_a_non_empty_folder_is_offered_a_new_folder_inside_it_then_the_export_options(
        qtbot, parent, run, tmp_path, monkeypatch):
    (RunPaths(run).checkpoint(20) / "adapter_config.json").write_text("{}")
    busy = tmp_path / "models"
    busy.mkdir()
    (busy / "other-model").mkdir()
    yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
    dialogs = Dialogs(monkeypatch, busy, answers=[yes], mode="adapter")  # inside it: yes; the adapter alone
    _wait(qtbot, export_with_dialog(parent, run, 20))
    assert dialogs.asked[0].startswith(f"{busy} is not empty. Export into a new folder inside it?")
    assert dialogs.offered == [["adapter", "merged"]]
    assert (busy / "med-step-20" / "adapter_config.json").is_file()
    assert (busy / "other-model").is_dir()
    refused = Dialogs(monkeypatch, busy, answers=[no])
    assert export_with_dialog(parent, run, 20) is None and len(refused.asked) == 1


def test_the_history_export_reports_the_folder(qtbot, run, tmp_path, monkeypatch):
    from cpt_studio.gui.main_window import MainWindow

    db = store.open_store()
    store.index_run(db, run)
    window = MainWindow(runs_root=run.parent)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.table.rowCount() == 1, timeout=10_000)
    window.select_runs([str(run.resolve())])
    monkeypatch.setattr("PySide6.QtWidgets.QInputDialog.getItem",  # the checkpoint it offers first
                        lambda _p, _t, _l, items, first, _e: (items[first], True))
    dest = tmp_path / "fresh"
    Dialogs(monkeypatch, dest)
    window._on_export()
    _wait(qtbot, window._export_job)
    assert window.findChild(QMessageBox, "export_done").text() == f"Step 20 is exported to:\n{dest}"
    assert (dest / "model.safetensors").is_file()


def test_the_export_options_offer_the_checkpoints_modes_and_reach_the_model_cards_metadata(
        qtbot, parent, run, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    dialog = ExportOptionsDialog(run, 20)
    qtbot.addWidget(dialog)
    assert dialog.modes == ["full"] and dialog.mode() == "full"
    Dialogs(monkeypatch, tmp_path / "out", fill={"datasets": "my-org/notes, pubmed ,my-org/notes",
                                                 "tags": "medical"})
    _wait(qtbot, export_with_dialog(parent, run, 20))
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.datasets == ["my-org/notes", "pubmed"] and card.data.tags[-1] == "medical"
    (RunPaths(run).checkpoint(20) / "adapter_config.json").write_text("{}")  # a LoRA checkpoint
    lora = ExportOptionsDialog(run, 20)
    qtbot.addWidget(lora)
    assert lora.mode() == "merged" and lora.datasets() == ["my-org/notes", "pubmed"]  # offered again
    other = tmp_path / "other-run"
    other.mkdir()
    shutil.copytree(run, other, dirs_exist_ok=True)
    elsewhere = ExportOptionsDialog(other, 20)  # another run: not this one's datasets (published by mistake)
    qtbot.addWidget(elsewhere)
    assert elsewhere.datasets() == [] and elsewhere.tags() == []
