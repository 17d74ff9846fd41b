"""What you see is what runs: whichever way a setup reaches Start (filled in fresh, loaded from
a file on any page, cloned from a run in the history or the monitor) and whatever is edited
after, the run folder's config.json is, field by field, the config the summary showed.

Start is pressed for real; only the worker's launch is replaced (no training process starts).
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QAbstractButton, QFileDialog, QWizard

from cpt_studio.core.config import RunConfig
from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.events import EventWriter
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.gui import wizard as wizard_module
from cpt_studio.gui.main_window import MainWindow
from cpt_studio.gui.pages.method_page import MethodPage
from cpt_studio.gui.pages.schedule_page import SchedulePage
from cpt_studio.gui.pages.summary_page import SummaryPage, describe
from cpt_studio.gui.wizard import RunWizard


@pytest.fixture
def started(monkeypatch):
    """The run folders Start launched a worker on (none is launched)."""
    launched: list[Path] = []
    monkeypatch.setattr(wizard_module, "start_worker", lambda run_dir, **_: launched.append(Path(run_dir)))
    return launched


@pytest.fixture
def corpus(tmp_path):
    domain = write_jsonl(tmp_path / "domain.jsonl", make_documents(60, seed=1))
    general = write_jsonl(tmp_path / "general.jsonl", make_documents(40, seed=2), field="body")
    return domain, general


@pytest.fixture
def setup_file(tmp_path, tiny_model_dir, corpus):
    """A saved setup unlike the defaults in every section the bug lost (LoRA, EWC, steps, LR,
    sequence length), with values no widget shows exactly (a text field per source, a
    held-out fraction of 1.25% on a one-decimal spin box, an LR of 7 significant digits)."""
    domain, general = corpus
    config = RunConfig(name="loaded setup", seed=7)
    config.model.name_or_path = str(tiny_model_dir)
    config.corpus.domain = [SourceSpec(str(domain))]
    config.corpus.general = [SourceSpec(str(general), text_field="body")]
    config.corpus.replay_ratio = 0.125
    config.method.kind, config.method.lora_rank, config.method.lora_alpha = "lora", 8, 16
    config.method.target_modules = ["q_proj", "v_proj"]
    config.ewc.enabled, config.ewc.strength, config.ewc.group, config.ewc.sequences = True, 0.02, "attention", 16
    config.schedule.max_steps, config.schedule.peak_lr, config.schedule.decay = 30, 1.234567e-5, "linear"
    config.schedule.weight_decay = 0.05
    config.batch.seq_len, config.batch.micro_batch, config.batch.grad_accum = 96, 2, 3
    config.eval.interval, config.eval.heldout_fraction = 10, 0.0125
    config.checkpoints.interval, config.checkpoints.keep = 10, 2
    config.guard.threshold, config.guard.spike_factor = 0.1234, 4.0
    config.tokenizer.min_length = 5
    path = tmp_path / "setups" / "loaded setup.json"
    path.parent.mkdir()
    path.write_text(config.to_json())
    return path


def open_wizard(qtbot, tmp_path, config=None) -> RunWizard:
    wizard = RunWizard(config, runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    return wizard


def go_to(wizard, page_class):
    """Next, page after page (each validates as the user leaves it), up to a `page_class` page."""
    while not isinstance(wizard.currentPage(), page_class):
        page = wizard.currentPage()
        wizard.next()
        assert wizard.currentPage() is not page, page.problems.text()
    return wizard.currentPage()


def back_to(wizard, page_class):
    while not isinstance(wizard.currentPage(), page_class):
        wizard.back()
    return wizard.currentPage()


def click(wizard, text: str) -> None:
    """Click the visible button labelled `text` (wherever the wizard shows it)."""
    buttons = [b for b in wizard.findChildren(QAbstractButton) if b.text() == text and b.isVisible()]
    assert len(buttons) == 1, f"one visible {text!r} button, found {len(buttons)}"
    buttons[0].click()


def load_with_button(wizard, monkeypatch, path: Path) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    click(wizard, "Load setup…")


def fill_fresh(wizard, model_dir, folder: Path) -> None:
    """A fresh setup through the pages: model, corpora (their text field), replay page."""
    wizard.currentPage().path.setText(str(model_dir))
    wizard.next()
    corpus = wizard.currentPage()
    corpus.domain.add(str(write_jsonl(folder / "fresh-domain.jsonl", make_documents(60, seed=3), field="body")))
    corpus.general.add(str(write_jsonl(folder / "fresh-general.jsonl", make_documents(40, seed=4), field="body")))
    corpus.text_field.setText("body")
    wizard.next()
    wizard.currentPage().seq_len.setValue(64)


def edit_rank_then_lr(wizard, rank: int, lr: str) -> None:
    """LoRA rank on the method page, then Back to the schedule page for the learning rate."""
    method = go_to(wizard, MethodPage)
    method.lora.setChecked(True)
    method.rank.setValue(rank)
    back_to(wizard, SchedulePage).peak.setText(lr)


def summary_shown(wizard) -> tuple[str, dict]:
    """The summary page's text and the config it describes, as the user sees them before Start."""
    summary = go_to(wizard, SummaryPage)
    text = summary.summary.toPlainText()
    assert text == describe(wizard.config)
    return text, wizard.config.to_dict()


def press_start(wizard, started) -> Path:
    wizard.button(QWizard.WizardButton.FinishButton).click()
    assert len(started) == 1, wizard.currentPage().problems.text()
    return started[0]


def leaves(value, path="") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}.{key}".strip(".")).items()}
    return {path: value}


def assert_runs_what_was_shown(shown: tuple[str, dict], run_dir: Path) -> dict:
    """config.json, field by field, is the config the summary described (and reads the same)."""
    text, config = shown
    ran = json.loads(RunPaths(run_dir).config.read_text())
    shown_fields, ran_fields = leaves(config), leaves(ran)
    differing = {path: (shown_fields.get(path, "(absent)"), ran_fields.get(path, "(absent)"))
                 for path in shown_fields.keys() | ran_fields.keys()
                 if shown_fields.get(path, "(absent)") != ran_fields.get(path, "(absent)")}
    assert differing == {}, "\n".join(f"{path}: the summary showed {shown!r}, the run has {got!r}"
                                       for path, (shown, got) in sorted(differing.items()))
    assert describe(RunConfig.from_dict(ran)) == text
    return ran


def test_a_fresh_setup_edited_back_and_forth_runs_what_the_summary_shows(qtbot, tmp_path, tiny_model_dir, started):
    wizard = open_wizard(qtbot, tmp_path)
    fill_fresh(wizard, tiny_model_dir, tmp_path)
    edit_rank_then_lr(wizard, rank=12, lr="3e-5")
    shown = summary_shown(wizard)
    ran = assert_runs_what_was_shown(shown, press_start(wizard, started))
    assert (ran["method"]["kind"], ran["method"]["lora_rank"], ran["schedule"]["peak_lr"]) == ("lora", 12, 3e-5)
    assert ran["batch"]["seq_len"] == 64 and ran["corpus"]["general"][0]["text_field"] == "body"


def test_a_setup_loaded_on_the_first_page_and_edited_runs_what_the_summary_shows(
        qtbot, tmp_path, setup_file, started, monkeypatch):
    wizard = open_wizard(qtbot, tmp_path)
    load_with_button(wizard, monkeypatch, setup_file)
    assert f"Loaded {setup_file}" in wizard.currentPage().notice.text()
    assert wizard.currentPage().path.text() == RunConfig.load(setup_file).model.name_or_path
    edit_rank_then_lr(wizard, rank=4, lr="5e-5")
    shown = summary_shown(wizard)
    ran = assert_runs_what_was_shown(shown, press_start(wizard, started))
    expected = RunConfig.load(setup_file).to_dict()
    expected["method"]["lora_rank"], expected["schedule"]["peak_lr"] = 4, 5e-5
    assert ran == expected  # the edits, and every other setting as the file had it


def test_loading_on_the_summary_after_visiting_every_page_runs_the_loaded_setup(
        qtbot, tmp_path, tiny_model_dir, setup_file, started, monkeypatch):
    """The bug as reported: the pages' widgets were written over the loaded config at Start
    (LoRA, EWC, steps, learning rate and sequence length were lost; only the name survived)."""
    wizard = open_wizard(qtbot, tmp_path)
    fill_fresh(wizard, tiny_model_dir, tmp_path)
    go_to(wizard, SummaryPage)
    load_with_button(wizard, monkeypatch, setup_file)
    shown = wizard.currentPage().summary.toPlainText(), wizard.config.to_dict()
    assert "LoRA r=8" in shown[0] and "EWC strength 0.02 on attention" in shown[0]
    ran = assert_runs_what_was_shown(shown, press_start(wizard, started))
    assert ran == RunConfig.load(setup_file).to_dict()


def finished_run(setup_file: Path, root: Path) -> Path:
    """A run of the setup that the history lists (its worker said "finished")."""
    run_dir = create_run(RunConfig.load(setup_file), root)
    events = EventWriter(RunPaths(run_dir).events)
    events.emit("status", 30, state="finished", phase="done")
    events.close()
    return run_dir


def test_a_run_cloned_from_the_history_and_edited_runs_what_the_summary_shows(
        qtbot, tmp_path, setup_file, started):
    run_dir = finished_run(setup_file, tmp_path / "runs")
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.table.rowCount() == 1, timeout=30_000)
    window.select_runs([str(run_dir.resolve())])
    assert window.run_buttons["new_run"].isEnabled()
    window.run_buttons["new_run"].click()
    wizard = window.wizard
    assert wizard.config.name == "loaded setup (2)"
    assert "as a new run named 'loaded setup (2)'" in wizard.currentPage().notice.text()
    edit_rank_then_lr(wizard, rank=16, lr="2e-5")
    shown = summary_shown(wizard)
    new_run = press_start(wizard, started)
    assert new_run != run_dir
    ran = assert_runs_what_was_shown(shown, new_run)
    expected = RunConfig.load(setup_file).to_dict()
    expected.update(name="loaded setup (2)")
    expected["method"]["lora_rank"], expected["schedule"]["peak_lr"] = 16, 2e-5
    assert ran == expected


def test_new_run_from_this_run_in_the_monitor_opens_the_wizard_on_its_settings(qtbot, tmp_path, setup_file):
    run_dir = create_run(RunConfig.load(setup_file), tmp_path / "runs")
    window = MainWindow(runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    monitor = window.open_monitor(run_dir)
    monitor.new_run_button.click()
    expected = RunConfig.load(setup_file).to_dict()
    assert window.wizard.config.to_dict() == {**expected, "name": window.wizard.config.name}
    assert window.wizard.config.name.startswith("loaded setup (")
    monitor.close()


def test_copy_cli_command_saves_the_setup_and_the_command_runs_it(qtbot, tmp_path, setup_file, monkeypatch):
    home = tmp_path / "my data's home"  # a space and a quote: the command must be quoted
    monkeypatch.setenv("CPT_STUDIO_HOME", str(home))
    wizard = open_wizard(qtbot, tmp_path)
    load_with_button(wizard, monkeypatch, setup_file)
    click(wizard, "Copy CLI command")  # the loaded file holds the setup: its command
    assert QGuiApplication.clipboard().text() == f"cpt-studio train {shlex.quote(str(setup_file))}"
    assert wizard.currentPage().notice.text() == f"Copied: {QGuiApplication.clipboard().text()}"
    edit_rank_then_lr(wizard, rank=4, lr="5e-5")
    click(wizard, "Copy CLI command")  # edited since loading: saved first, in setups/
    command = QGuiApplication.clipboard().text()
    words = shlex.split(command)
    assert words[:2] == ["cpt-studio", "train"] and len(words) == 3
    saved = Path(words[2])
    assert saved == home / "setups" / "loaded-setup.json"
    assert RunConfig.load(saved).to_dict() == wizard.config.to_dict()
    assert wizard.currentPage().notice.text() == f"Saved the setup to {saved}.\nCopied: {command}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", f"{command} --dry-run"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "30 optimizer steps of 6 sequences (576 tokens)" in done.stdout  # this setup's steps and batch
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())  # a dry run starts nothing


def test_save_setup_on_the_first_page_writes_the_setup_that_load_brings_back(qtbot, tmp_path, setup_file, monkeypatch):
    wizard = open_wizard(qtbot, tmp_path)
    load_with_button(wizard, monkeypatch, setup_file)
    wizard.currentPage().trust.setChecked(True)  # an edit on the page shown, written as it is made
    target = tmp_path / "elsewhere" / "my setup.json"
    target.parent.mkdir()
    offered = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda parent, title, default, *a, **k: offered.append(default) or (str(target), ""))
    click(wizard, "Save setup…")
    assert offered == [str(setup_file)]  # the file the setup came from is offered first
    assert wizard.currentPage().notice.text() == f"Saved the setup to {target}"
    saved = RunConfig.load(target)
    assert saved.to_dict() == wizard.config.to_dict() and saved.model.trust_remote_code
    again = open_wizard(qtbot, tmp_path)
    load_with_button(again, monkeypatch, target)
    assert again.config.to_dict() == saved.to_dict() and again.currentPage().trust.isChecked()
    from cpt_studio.gui import (
        recent,  # File ▸ Open Recent lists the setups loaded and saved, newest first
    )
    assert recent.recent("setups")[:2] == [str(target.resolve()), str(setup_file.resolve())]


def test_a_setup_loaded_on_the_first_page_describes_its_model_there(qtbot, tmp_path, setup_file, monkeypatch):
    """The model page said "Choose a model to see its size…" under the loaded model's path."""
    wizard = open_wizard(qtbot, tmp_path)
    page = wizard.currentPage()
    load_with_button(wizard, monkeypatch, setup_file)
    seq_len = RunConfig.load(setup_file).batch.seq_len
    qtbot.waitUntil(lambda: "tokens" in page.info.text() and "Choose a model" not in page.info.text(),
                    timeout=30_000)
    assert f"x {seq_len} tokens" in page.info.text()


@pytest.mark.parametrize("remedy, words", [("lr", "then halve the learning rate (at most"),
                                           ("replay", "then raise the replay ratio by 5 points (at most"),
                                           ("both", "then halve the learning rate and raise the replay ratio")])
def test_the_summary_says_the_guards_remedy_in_words(remedy, words):
    config = RunConfig()
    config.guard.remedy = remedy
    assert words in describe(config)  # not the setting's raw value ("then lr")


@pytest.mark.parametrize("stage, count, words", [
    ("cpt", None, "held out: 2.0% of each corpus"), ("cpt", 8, "held out: 8 documents of each corpus"),
    ("sft", 8, "held out: 8 instruction examples and 8 general documents"),
    ("sft", None, "held out: 2.0% of the instruction examples and of the general corpus")])
def test_the_summary_says_what_is_held_out_as_the_run_holds_it_out(stage, count, words):
    """An SFT summary said "2.0% of each corpus" while its inherited eval.heldout_count (8) won."""
    config = RunConfig(stage=stage)
    config.eval.heldout_count = count
    assert words in describe(config)
