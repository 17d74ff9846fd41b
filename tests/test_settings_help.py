"""One source for the settings' help: every RunConfig field has a docstring, and the command
line's option help, `cpt-studio settings` and the wizard's tooltips all show those words."""

import ast
import dataclasses
import subprocess
import sys

import pytest
from PySide6.QtWidgets import QWidget

from cpt_studio.core import config_help
from cpt_studio.core.cli import main
from cpt_studio.core.config import BatchConfig, RunConfig
from cpt_studio.core.config_help import (
    REQUIRED,
    attribute_docstrings,
    format_settings,
    option_help,
    sections,
    setting,
    setting_help,
    settings,
    undocumented,
)
from cpt_studio.gui.setting_help import edited_settings
from cpt_studio.gui.wizard import RunWizard


def _words(text: str) -> str:
    return " ".join(text.split())


def _squeezed(text: str) -> str:
    """Without whitespace: argparse wraps help lines, also after a hyphen."""
    return "".join(text.split())


def test_every_field_of_every_section_has_a_docstring():
    assert undocumented() == []
    assert len(settings()) > 70  # leaves of every section, and the items of corpus and eval lists
    for path in ("seed", "corpus.domain[].text_field", "eval.sets[].kind", "guard.spike_window"):
        assert settings()[path].help


def test_the_help_is_the_docstring_under_the_field_with_its_type_and_default():
    peak = setting("schedule.peak_lr")
    assert peak.help == "Peak learning rate. CPT wants it low: well below instruction-tuning rates."
    assert (peak.type, peak.default) == ("float", 2e-5)
    assert setting("schedule.max_steps").type == "int | None"
    assert setting("method.target_modules").default[0] == "q_proj"  # a default_factory, called
    assert setting("corpus.domain[].path").default is REQUIRED
    # a docstring over several source lines comes back as one paragraph
    assert setting_help("model.allow_pickle").startswith("Load weights stored as pickle files (.bin, .pt), "
                                                         "which can run code when loaded; only for models")


def test_a_field_without_a_docstring_is_reported(monkeypatch):
    """BatchConfig as if grad_accum alone kept its docstring."""
    source = 'class BatchConfig:\n    micro_batch: int = 4\n    grad_accum: int = 8\n    """Kept."""\n    seq_len: int = 1024\n'
    monkeypatch.setitem(config_help._class_nodes("cpt_studio.core.config"), "BatchConfig", ast.parse(source).body[0])
    monkeypatch.setattr(config_help, "settings", config_help.settings.__wrapped__)  # not the cached one
    assert attribute_docstrings(BatchConfig) == {"grad_accum": "Kept."}
    assert undocumented() == ["batch.micro_batch", "batch.seq_len"]


def test_sections_are_documented_by_their_class_and_a_wrong_path_is_refused():
    assert "seed" in attribute_docstrings(RunConfig) and "model" not in attribute_docstrings(RunConfig)
    assert sections()["batch"] == "How many tokens each optimizer step sees."
    with pytest.raises(LookupError, match="schedule.peak_lr"):
        setting("peak_lr")


def test_without_source_files_help_is_empty_and_nothing_breaks(monkeypatch):
    """A PyInstaller bundle has no .py files: inspect.getsource raises OSError there."""
    def no_source(_):
        raise OSError("could not get source code")

    monkeypatch.setattr(config_help.inspect, "getsource", no_source)
    config_help._class_nodes.cache_clear()
    monkeypatch.setattr(config_help, "settings", config_help.settings.__wrapped__)
    try:
        assert setting_help("schedule.peak_lr") == "" and undocumented() == []
        assert "schedule.peak_lr  (float, default 2e-05)" in format_settings("peak")
    finally:
        config_help._class_nodes.cache_clear()


def _help_of(command: list[str], capsys) -> str:
    """What `cpt-studio COMMAND --help` prints."""
    with pytest.raises(SystemExit):
        main(command + ["--help"])
    return capsys.readouterr().out


OPTIONS = [
    (["demo"], "--steps", "schedule.max_steps"),
    (["tokenizer", "extend"], "--vocab-size", "tokenizer.vocab_size"),
    (["tokenizer", "extend"], "--min-frequency", "tokenizer.min_frequency"),
    (["tokenizer", "extend"], "--max-new-tokens", "tokenizer.max_new_tokens"),
    (["tokenizer", "extend"], "--min-length", "tokenizer.min_length"),
    (["tokenizer", "extend"], "--pattern", "tokenizer.token_pattern"),
    (["corpus", "inspect"], "--text-field", "corpus.domain[].text_field"),
    (["corpus", "inspect"], "--txt-mode", "corpus.domain[].txt_mode"),
    (["corpus", "inspect"], "--skip-bad", "corpus.skip_bad"),
    (["evaluate"], "--probes", "benchmarks.probes"),
    (["evaluate"], "--limit", "benchmarks.limit"),
    (["evaluate"], "--fewshot", "benchmarks.num_fewshot"),
    (["evaluate"], "--batch-size", "benchmarks.batch_size"),
]


@pytest.mark.parametrize("command, option, path", OPTIONS)
def test_an_options_help_is_its_fields_docstring(command, option, path, capsys):
    out = _help_of(command, capsys)
    start = out.index("\n  " + option)  # the option's entry under "options:", not the usage line
    end = out.find("\n  -", start + 1)
    entry = _squeezed(out[start:end if end != -1 else None])
    assert _squeezed(setting_help(path)) in entry and path in entry


def test_the_help_of_extend_through_the_real_command_names_field_and_default():
    out = subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", "tokenizer", "extend", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert _squeezed(setting_help("tokenizer.min_frequency")) in _squeezed(out)
    assert "the config's, 8000 unless it sets one" in _words(out)


def test_a_percent_sign_in_a_docstring_survives_argparse():
    """argparse formats help with %: 'guard.threshold' says '15% higher'."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--threshold", help=option_help("guard.threshold"))
    assert "15% higher general perplexity" in _words(parser.format_help())


def test_cpt_studio_settings_prints_every_setting_with_type_default_and_help():
    out = subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", "settings"],
                         capture_output=True, text=True, check=True).stdout
    for s in settings().values():
        assert s.path in out
    assert "guard.threshold  (float, default 0.15)" in out
    assert setting_help("guard.threshold") in _words(out)
    found = subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", "settings", "lora"],
                           capture_output=True, text=True)
    assert found.returncode == 0 and "method.lora_rank" in found.stdout and "batch.seq_len" not in found.stdout
    none = subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", "settings", "no-such-word"],
                          capture_output=True, text=True)
    assert none.returncode == 1 and "no setting" in none.stdout


@pytest.fixture
def wizard(qtbot, tmp_path):
    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    return wizard


def _explained(wizard) -> dict[str, list[QWidget]]:
    found: dict[str, list[QWidget]] = {}
    for widget in wizard.findChildren(QWidget):
        for path in edited_settings(widget):
            found.setdefault(path, []).append(widget)
    return found


def test_every_wizard_widget_bound_to_a_setting_shows_its_docstring(wizard):
    explained = _explained(wizard)
    assert len(explained) >= 35
    for path, widgets in explained.items():
        for widget in widgets:
            assert setting_help(path) in _words(widget.toolTip()), (path, widget.objectName())
            assert path in widget.toolTip()


def test_every_setting_the_wizard_writes_has_a_widget_with_its_tooltip(wizard, monkeypatch, tmp_path):
    """Which settings do the pages write? Record every attribute set on the config's sections
    while each page stores its widgets into it."""
    config = RunConfig()
    wizard.config = config
    owners = {id(config): ""}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            owners[id(value)] = f.name + "."
    written: set[str] = set()

    def record(self, name, value):
        if id(self) in owners:
            written.add(owners[id(self)] + name)
        object.__setattr__(self, name, value)

    for cls in {type(getattr(config, f.name)) for f in dataclasses.fields(config)} | {RunConfig}:
        if dataclasses.is_dataclass(cls):
            monkeypatch.setattr(cls, "__setattr__", record)
    for page in wizard.pages:
        page.store(config)
    monkeypatch.undo()
    explained = _explained(wizard)
    assert len(written) >= 35 and "schedule.peak_lr" in written and "name" in written
    missing = sorted(p for p in written if p not in explained)
    assert missing == []
    for path in written:
        assert any(w.toolTip() for w in explained[path])


def _tooltip_shown(widget: QWidget) -> str:
    """The tooltip Qt shows over `widget`: its own, else its nearest parent's (a tooltip event
    that a widget without one ignores goes on to its parent, up to the window)."""
    while widget is not None:
        if widget.toolTip():
            return widget.toolTip()
        if widget.isWindow():
            return ""
        widget = widget.parentWidget()
    return ""


def test_every_input_widget_on_every_page_shows_its_settings_help(wizard):
    """Every widget a user edits a setting with (line edits, spin boxes, combo boxes, check and
    radio buttons, source lists) shows a tooltip made from the setting's docstring."""
    inputs = [(type(page).__name__, widget) for page in wizard.pages for widget in page.input_widgets()]
    assert len(inputs) >= 35
    missing = [f"{page}: {type(w).__name__} {w.objectName() or w.accessibleName() or '(unnamed)'}"
               for page, w in inputs if "In a config file:" not in _tooltip_shown(w)]
    assert missing == []


def test_a_tooltip_event_over_a_source_list_shows_the_corpus_help(wizard):
    """The walk above is Qt's: the list inside the domain sources box shows the box's help."""
    from PySide6.QtCore import QEvent, QPoint
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QApplication, QToolTip

    sources = next(page for page in wizard.pages if hasattr(page, "domain")).domain.list
    where = QPoint(5, 5)
    QApplication.sendEvent(sources.viewport(), QHelpEvent(QEvent.Type.ToolTip, where, sources.mapToGlobal(where)))
    assert QToolTip.isVisible() and _words(QToolTip.text()).startswith(_words(setting_help("corpus.domain")))
    assert _tooltip_shown(sources.viewport()) == QToolTip.text()
    QToolTip.hideText()


def test_evaluate_takes_auto_or_a_number_as_its_batch_size(capsys):
    from cpt_studio.core.cli import _parser

    parse = _parser().parse_args
    assert parse(["evaluate", "RUN", "--batch-size", "auto"]).batch_size == "auto"
    assert parse(["evaluate", "RUN", "--batch-size", "16"]).batch_size == 16
    with pytest.raises(SystemExit):
        parse(["evaluate", "RUN", "--batch-size", "big"])
    assert "neither \"auto\" nor a whole number" in capsys.readouterr().err
