"""The instruction-tuning wizard's pages at the wizard's default size, on an SFT config built in
the test (no parent run needed): the data page keeps its fields whole whatever the check says,
and the schedule page shows what an SFT run uses."""

import json

import pytest
from PySide6.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit, QPushButton

from cpt_studio.core.sft_run import SFT_SCHEDULE
from cpt_studio.core.testing.run_helpers import tiny_run_config

GOOD = "".join(json.dumps({"instruction": f"Which drug did patient {i} receive, and at what dose?",
                           "response": "tacrolimus twice daily."}) + "\n" for i in range(12))
BAD = json.dumps({"instruction": "Q?", "answer": "A."}) + "\n"
"""A record without the response field: its problem names the file, the line and the fix."""


def sft_config(model_dir, folder, data=(), replay_ratio=0.15):
    """An SFT run's config as sft_config makes it (stage, no domain corpus, SFT_SCHEDULE), from
    the tiny model instead of a parent run's checkpoint."""
    config = tiny_run_config(model_dir, folder / "corpus")
    config.stage, config.corpus.domain, config.corpus.replay_ratio = "sft", [], replay_ratio
    for key, value in SFT_SCHEDULE.items():
        setattr(config.schedule, key, value)
    config.sft.data = [str(p) for p in data]
    return config


def open_wizard(qtbot, config, tmp_path):
    from cpt_studio.gui.sft_wizard import SftWizard

    wizard = SftWizard(config, runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    qtbot.waitExposed(wizard)
    return wizard


@pytest.mark.parametrize("bad, skip", [(1, True), (3, True), (8, False)])
def test_the_data_pages_fields_keep_their_height_whatever_the_check_says(qtbot, tmp_path, tiny_model_dir, bad, skip):
    """A tester's replay spin box was cut: a bad record's long status (or a list of problems) took
    the page's height at the wizard's default size, and every field above was squeezed."""
    data = tmp_path / "qa.jsonl"
    data.write_text(GOOD + BAD * bad)
    config = sft_config(tiny_model_dir, tmp_path, [data])
    config.sft.skip_bad = skip
    wizard = open_wizard(qtbot, config, tmp_path)
    wizard.notify("Step 2: the checkpoint chosen (the recommended one: best domain gain with forgetting "
                  "under the limit).")
    page = wizard.currentPage()
    said = "left out" if skip else "problem(s)"
    qtbot.waitUntil(lambda: said in page.status.text(), timeout=20_000)
    qtbot.wait(20)  # the layout after the texts
    assert page.preview.isVisible() is skip  # nothing to preview: the problems get its room
    fields = [w for w in page.input_widgets() if isinstance(w, (QLineEdit, QComboBox, QAbstractSpinBox))
              and w.isVisible() and w.parent() is page]
    assert len(fields) == 9  # format, five field names, template, replay, sequence length
    for field in fields:
        assert field.height() >= field.sizeHint().height(), field.objectName()
    replay = page.replay
    assert replay.text() == "15.0 %"
    assert replay.lineEdit().width() >= replay.fontMetrics().horizontalAdvance(replay.text())
    if skip and bad > 1:
        assert f"; and {bad - 1} more (hover for all)" in page.status.text()
        assert page.status.toolTip().count("line ") == bad
    if not skip:
        assert "… and 5 more" in page.problems.text() and page.problems.toolTip().count("line ") == bad


def test_add_folder_adds_its_instruction_data_files(qtbot, tmp_path, tiny_model_dir, monkeypatch):
    """Data kept as a folder of files was refused with no way but adding them one by one."""
    from PySide6.QtWidgets import QFileDialog

    folder = tmp_path / "qa"
    folder.mkdir()
    for name in ("b.json", "a.jsonl", "c.jsonl.gz", "notes.txt", ".hidden.jsonl"):
        (folder / name).write_text("")
    (folder / "sub").mkdir()
    wizard = open_wizard(qtbot, sft_config(tiny_model_dir, tmp_path), tmp_path)
    page = wizard.currentPage()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    next(b for b in page.findChildren(QPushButton) if b.text() == "Add folder…").click()
    listed = [page.files.item(i).text() for i in range(page.files.count())]
    assert listed == [str(folder / name) for name in ("a.jsonl", "b.json", "c.jsonl.gz")]
    next(b for b in page.findChildren(QPushButton) if b.text() == "Add folder…").click()
    assert page.files.count() == 3
