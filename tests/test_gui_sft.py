"""Chained runs from the app: "Instruction-tune…" on a checkpoint of a finished CPT run opens
the short wizard (its data page checks the files with file:line and previews the examples, the
responses highlighted), starts a real run chained to that checkpoint, and the history shows
the chain (base → CPT → SFT); a second CPT stage ("Continue on more data") starts from exactly
the parent checkpoint's weights with a fresh warmup, and is a child in the history."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cpt_studio.core import store
from cpt_studio.core.chain import continue_config, create_chained_run, lineage, parent_of
from cpt_studio.core.config import CheckpointConfig, EvalConfig, RunConfig, ScheduleConfig
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.run_helpers import history, tiny_run_config
from cpt_studio.core.training import train
from cpt_studio.gui.charts import SFT_DOMAIN
from cpt_studio.gui.history_table import COLUMNS

PAIRS = [("Which drug did the patient receive?", "tacrolimus twice daily."),
         ("Who reviewed the judgment?", "a court of appeal."),
         ("What falls with age?", "renal clearance."),
         ("What was measured?", "the trough level.")] * 3
"""12 examples: the parent's held-out size (4) leaves 8 to train on."""


@pytest.fixture(scope="module")
def cpt_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished two-step CPT run of the tiny model (full weights), checkpoint at step 2."""
    folder = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CPT_STUDIO_HOME", str(folder / "home"))
        config = tiny_run_config(tiny_model_dir, folder / "corpus", schedule=ScheduleConfig(peak_lr=1e-2, max_steps=2),
                                 checkpoints=CheckpointConfig(interval=2, keep=2),
                                 eval=EvalConfig(interval=2, heldout_count=4, max_tokens=2000))
        config.batch.grad_accum = 1
        run_dir = create_run(config, folder / "runs")
        assert train(run_dir) == "finished"
    return run_dir


def _cells(window, run_id: str) -> dict[str, object]:
    table = window.table
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).data(256) == run_id)
    return {name: table.item(row, j) for j, name in enumerate(COLUMNS)}


def test_instruction_tune_from_a_checkpoint_starts_a_chained_run_and_the_history_shows_the_chain(
        qtbot, cpt_run, tmp_path, monkeypatch):
    import cpt_studio.gui.wizard
    from cpt_studio.gui.main_window import MainWindow

    # the worker's code in this process (a worker process would first import torch again, which
    # takes most of half a minute on a busy 2-core machine; tests/test_gui*.py start real ones)
    monkeypatch.setattr(cpt_studio.gui.wizard, "start_worker", lambda run_dir: train(run_dir))

    window = MainWindow(runs_root=cpt_run.parent)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.table.rowCount() == 1, timeout=10_000)
    compare = window.open_checkpoint(str(cpt_run), 2)  # the comparison, step 2 selected
    compare.actions.sft_button.click()
    wizard = window.sft_wizard
    assert "Step 2: the checkpoint chosen" in wizard.currentPage().notice.text()
    data = wizard.currentPage()
    assert data.origin.text() == f"Starts from step 2 of tiny ({cpt_run})."
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Q?", "response": "A."}\n{"instruction": "Q?", "answer": "A."}\n')
    data.files.addItems([str(bad)])
    qtbot.waitUntil(lambda: data.problems.isVisible(), timeout=20_000)
    assert f"{bad} line 2: no field 'response' (fields: answer, instruction)" in data.problems.text()
    assert not wizard.validateCurrentPage()
    data.skip_bad.setChecked(True)  # the bad record is left out, named, and the good one previewed
    qtbot.waitUntil(lambda: "1 bad record is left out" in data.status.text(), timeout=20_000)
    assert f"{bad} line 2: no field 'response'" in data.status.text() and not data.problems.isVisible()
    data.skip_bad.setChecked(False)
    good = tmp_path / "qa.jsonl"
    good.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
    data.files.clear()
    data.files.addItems([str(good)])
    qtbot.waitUntil(lambda: "12 examples; template: the plain template" in data.status.text(), timeout=20_000)
    shown = data.preview.toHtml()
    assert "### Instruction:" in shown and "background-color:#fff0b3" in shown  # the response highlighted
    assert not data.problems.isVisible()
    assert data.replay.isEnabled() and data.replay.value() == 0  # SFT's default: measured, not replayed
    data.replay.setValue(25)  # optional general replay during SFT
    assert data.seq_len.value() == 64  # the parent's; the plan's cut warning names this setting:
    data.seq_len.setValue(96)  # it can be set here (the wizard has no batch page)
    wizard.next()  # method, then the schedule with SFT's defaults
    method = wizard.currentPage()
    method.lora.setChecked(True)  # LoRA's usual rate follows the method chosen
    wizard.next()
    assert wizard.currentPage().peak.text() == "2e-04"
    wizard.back()
    method.full.setChecked(True)
    wizard.next()
    schedule = wizard.currentPage()
    assert schedule.peak.text() == "2e-05" and schedule.steps.value() == 0
    assert schedule.epochs.value() == 3 and schedule.epochs.isEnabled()  # epochs decide without a step count
    schedule.steps.setValue(2)
    wizard.next()
    evaluation = wizard.currentPage()
    evaluation.interval.setValue(2)
    evaluation.checkpoint_interval.setValue(2)
    wizard.next()
    summary = wizard.currentPage()
    assert "Starts from: step 2 of the run" in summary.summary.toPlainText()
    assert summary.plan.text() == "" and summary.sweep_button.isHidden()  # no sweep of CPT's replay here
    summary.estimate_button.click()  # the plan packs the examples as the run will
    qtbot.waitUntil(lambda: "instruction examples" in summary.plan.text(), timeout=30_000)
    assert "2 optimizer steps" in summary.plan.text() and "12 instruction examples" in summary.plan.text()
    text = summary.summary.toPlainText()  # nor CPT's tokenizer extension and document separator
    assert "Tokenizer extension" not in text and "Documents separated by" not in text
    assert summary.separator.isHidden()
    with qtbot.waitSignal(wizard.run_started, timeout=60_000) as started:
        wizard.accept()
    child = Path(started.args[0])
    assert parent_of(child) == (str(cpt_run), 2)
    assert RunConfig.load(RunPaths(child).config).corpus.replay_ratio == 0.25
    assert RunConfig.load(RunPaths(child).config).batch.seq_len == 96
    assert history(child, "status")[-1]["state"] == "finished"
    assert [e["step"] for e in history(child, "step")] == [1, 2]
    with qtbot.waitSignal(window.history.finished, timeout=10_000):
        window.refresh()
    cells = _cells(window, str(child))
    assert (cells["stage"].text(), cells["from"].text(), cells["base model"].text()) == ("SFT", "tiny · step 2", "model")
    assert cells["name"].toolTip() == "model → tiny · step 2 → tiny SFT"
    assert _cells(window, str(cpt_run))["from"].text() == ""
    window.select_runs([str(child)])
    window.run_actions["parent"].trigger()
    assert window.selected_ids() == [str(cpt_run)]
    monitor = window.open_monitor(child)
    assert SFT_DOMAIN in monitor.charts.plots["ppl"].titleLabel.text
    second = window.continue_run(cpt_run)  # a second CPT stage: the setup wizard, parent recorded
    assert (second.config.parent_run, second.config.parent_step, second.config.name) == (str(cpt_run), 2, "tiny continued")
    assert "A second stage from step 2 (the recommended checkpoint)" in second.currentPage().notice.text()
    model = second.pages[0]  # the parent's checkpoint, not a model to choose (a tester saw the cache's first)
    model.cached.addItem("some/cached-model")
    model.cached.setCurrentRow(0)
    assert model.path.text() == str(RunPaths(cpt_run).checkpoint(2)) and not model.path.isEnabled()
    assert "starts from step 2 of" in model.chained.text()
    second.reject()


def test_a_second_stage_starts_from_the_parent_checkpoint_with_a_fresh_warmup(cpt_run, tmp_path):
    config = continue_config(cpt_run, 2, taken=["tiny continued"])
    assert (config.name, config.stage, config.tokenizer.extend) == ("tiny continued (2)", "cpt", False)
    config.schedule = ScheduleConfig(peak_lr=1e-3, max_steps=4, warmup_ratio=0.5)
    config.eval.interval = config.checkpoints.interval = 4
    child = create_chained_run(config, tmp_path / "runs")
    assert train(child) == "finished"
    start, parent = (load_file(p / "model.safetensors") for p in (RunPaths(child).checkpoint(0), RunPaths(cpt_run).checkpoint(2)))
    assert start.keys() == parent.keys() and all(torch.equal(start[k], parent[k]) for k in parent)
    rates = [e["lr"] for e in history(child, "step")]
    assert rates[:3] == pytest.approx([0, 5e-4, 1e-3]) and rates[3] < 1e-3  # warmup from 0, then decay
    db = store.open_store()
    runs = {run_id: store.get_run(db, store.index_run(db, run_id)) for run_id in (str(cpt_run), str(child))}
    assert [r["name"] for r in lineage(str(child), runs)] == ["tiny", "tiny continued (2)"]
    assert (runs[str(child)]["parent_run"], runs[str(child)]["parent_step"]) == (str(cpt_run), 2)


def test_an_evaluation_set_whose_file_is_gone_can_be_removed_in_the_wizard(qtbot, cpt_run, tmp_path):
    """A tester's dead end: the parent's evaluation set file was gone, the SFT wizard's evaluation
    page refused Next, and no page showed the sets (only Save setup, edit, Load setup)."""
    from cpt_studio.core.config import EvalSetSpec
    from cpt_studio.core.sft_run import sft_config
    from cpt_studio.gui.pages.eval_page import EvalPage
    from cpt_studio.gui.sft_wizard import SftWizard

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
    config = sft_config(cpt_run, 2, [str(data)])
    config.eval.sets = [EvalSetSpec(name="prose", path=str(tmp_path / "gone.jsonl"))]
    config.eval.guard_set = "prose"
    wizard = SftWizard(config, runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    page = next(p for p in wizard.pages if isinstance(p, EvalPage))
    wizard.setStartId(wizard.pageIds()[wizard.pages.index(page)])
    wizard.restart()
    assert "missing" in page.sets.item(0).text() and not wizard.validateCurrentPage()
    page.sets.item(0).setSelected(True)
    page._on_remove_sets()
    kept = tmp_path / "general eval.jsonl"
    kept.write_text(json.dumps({"text": "General text about the weather."}) + "\n")
    page.add_set(str(kept))
    assert wizard.validateCurrentPage()
    assert [(s.name, s.kind) for s in wizard.config.eval.sets] == [("general_eval", "general")]
    assert wizard.config.eval.guard_set == ""  # the removed set no longer picks the guard's curve


def test_each_wizard_loads_only_setups_of_its_own_stage(qtbot, cpt_run, tmp_path):
    """A CPT setup loaded in the SFT wizard started a CPT run from it (no parent, no instruction
    data); an SFT setup in the New run wizard showed none of its data. Each is refused, naming
    where it loads, and the wizard keeps what it had."""
    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.run_folder import RunPaths
    from cpt_studio.core.sft_run import sft_config
    from cpt_studio.gui.sft_wizard import SftWizard
    from cpt_studio.gui.wizard import RunWizard

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
    cpt_setup, sft_setup = tmp_path / "cpt.json", tmp_path / "sft.json"
    cpt_setup.write_text(RunConfig.load(RunPaths(cpt_run).config).to_json())
    sft_setup.write_text(sft_config(cpt_run, 2, [str(data)]).to_json())
    sft = SftWizard(sft_config(cpt_run, 2, [str(data)]), runs_root=tmp_path / "runs")
    cpt = RunWizard(runs_root=tmp_path / "runs")
    for wizard in (sft, cpt):
        qtbot.addWidget(wizard)
        wizard.show()
    assert not sft.load_setup(cpt_setup)
    assert sft.config.stage == "sft" and sft.config.sft.data == [str(data)]
    assert f"{cpt_setup}: stage: a CPT setup, not an instruction-tuning one; load it in New run…" in \
        sft.currentPage().problems.text()
    assert not cpt.load_setup(sft_setup) and cpt.config.stage == "cpt"
    assert "an instruction-tuning (SFT) setup; open it with Instruction-tune…" in cpt.currentPage().problems.text()
    assert sft.load_setup(sft_setup) and cpt.load_setup(cpt_setup)  # each loads its own
