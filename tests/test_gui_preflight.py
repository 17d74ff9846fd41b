"""The wizard shows the pre-flight: the summary page lists the warnings (and, once estimated,
the memory rating in words) and blocks Start on a problem; the model page's memory follows
the batch and precision chosen on later pages."""

from cpt_studio.core.preflight import preflight
from cpt_studio.core.testing.run_helpers import tiny_run_config
from cpt_studio.gui import wizard as wizard_module
from cpt_studio.gui.pages.method_page import MethodPage
from cpt_studio.gui.pages.model_page import ModelPage
from cpt_studio.gui.pages.summary_page import SummaryPage
from cpt_studio.gui.wizard import RunWizard


def _wizard(qtbot, config, tmp_path) -> RunWizard:
    wizard = RunWizard(config=config, runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    return wizard


def _go_to(wizard, page_type):
    move = wizard.back if any(isinstance(wizard.page(i), page_type) for i in wizard.visitedIds()) else wizard.next
    while not isinstance(wizard.currentPage(), page_type):
        move()
    return wizard.currentPage()


def test_the_summary_page_lists_warnings_and_blocks_start_on_a_problem(qtbot, tmp_path, tiny_model_dir, monkeypatch):
    started = []
    monkeypatch.setattr(wizard_module, "start_worker", lambda *a, **k: started.append(a))
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")  # replay, and no independent general set
    wizard = _wizard(qtbot, config, tmp_path)
    summary = _go_to(wizard, SummaryPage)
    qtbot.waitUntil(lambda: "eval.sets:" in summary.checks.text(), timeout=30_000)
    warning = next(w for w in preflight(config).warnings if w.startswith("eval.sets:"))
    assert f"⚠ {warning}" in summary.checks.text() and summary.problems.isHidden()
    with qtbot.waitSignal(summary.start_plan().finished, timeout=60_000):
        pass
    assert summary.checks.text().startswith("Memory: fits (") and f"⚠ {warning}" in summary.checks.text()

    method = _go_to(wizard, MethodPage)  # LoRA on layers this model does not have
    method.lora.setChecked(True)
    method.targets.setText("c_attn")
    summary = _go_to(wizard, SummaryPage)
    problem = next(p for p in preflight(wizard.config).problems if p.startswith("method.target_modules:"))
    start = wizard.button(wizard.WizardButton.FinishButton)
    qtbot.waitUntil(lambda: not start.isEnabled(), timeout=30_000)  # once the check has reported
    start.click()
    assert wizard.isVisible() and wizard.currentPage() is summary and started == []
    assert not summary.validatePage()
    assert not (tmp_path / "runs").exists()
    assert f"• {problem}" in summary.problems.text() and not summary.problems.isHidden()
    assert "cannot start" in problem

    method = _go_to(wizard, MethodPage)
    method.targets.setText("q_proj, v_proj")
    summary = _go_to(wizard, SummaryPage)
    qtbot.waitUntil(start.isEnabled, timeout=30_000)
    start.click()
    assert len(started) == 1 and not wizard.isVisible()


def test_the_model_page_memory_follows_the_batch_and_precision(qtbot, tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    wizard = _wizard(qtbot, config, tmp_path)
    page = wizard.currentPage()
    assert isinstance(page, ModelPage)
    qtbot.waitUntil(lambda: "CPT at 4 x 64 tokens" in page.info.text(), timeout=30_000)
    # each method as the run would choose its kernels here: a CPU needs no checkpointing (auto)
    assert f"LoRA r={config.method.lora_rank} CPT at 4 x 64 tokens, fp32, checkpointing off" in page.info.text()
    wizard.config.batch.micro_batch, wizard.config.batch.seq_len = 8, 128  # as the later pages set them
    wizard.config.system.precision, wizard.config.system.gradient_checkpointing = "fp32", "on"
    _go_to(wizard, SummaryPage)
    page = _go_to(wizard, ModelPage)  # shown again (Back): recomputed
    qtbot.waitUntil(lambda: "CPT at 8 x 128 tokens" in page.info.text(), timeout=30_000)
    assert "full CPT at 8 x 128 tokens, fp32, checkpointing on: about" in page.info.text()
    assert "bf16" not in page.info.text()


def test_speed_settings_are_set_from_the_summary_and_checked_on_this_machine(qtbot, tmp_path, tiny_model_dir,
                                                                             monkeypatch):
    """'Speed and memory…' edits config.system: a kernel this CPU cannot train with (FlexAttention
    has no backward pass here) blocks Start with the fix; compile on shows in the summary and
    in the plan's kernels lines."""
    from PySide6.QtWidgets import QDialog

    from cpt_studio.gui.pages import summary_page
    from cpt_studio.gui.speed_dialog import SpeedDialog

    choices = {}

    class Chosen(SpeedDialog):
        def exec(self):
            for name, value in choices.items():
                if name == "compile":
                    self.compile.setChecked(value)
                else:
                    self.combos[name].setCurrentText(value)
            return QDialog.DialogCode.Accepted

    monkeypatch.setattr(summary_page, "SpeedDialog", Chosen)
    wizard = _wizard(qtbot, tiny_run_config(tiny_model_dir, tmp_path / "data"), tmp_path)
    summary = _go_to(wizard, SummaryPage)
    assert "Speed and memory: all automatic" in summary.summary.toPlainText()
    start = wizard.button(wizard.WizardButton.FinishButton)
    choices.update(attention="flex_attention")
    summary.speed_button.click()
    assert wizard.config.system.attention == "flex_attention"
    qtbot.waitUntil(lambda: not start.isEnabled(), timeout=30_000)
    assert "system.attention: FlexAttention has no backward pass on a CPU" in summary.problems.text()
    choices.update(attention="auto", compile=True)
    summary.speed_button.click()
    qtbot.waitUntil(start.isEnabled, timeout=30_000)
    assert "Speed and memory: compile on" in summary.summary.toPlainText()
    with qtbot.waitSignal(summary.start_plan().finished, timeout=60_000):
        pass
    assert "torch.compile on" in summary.plan.text() and "AdamW fused" in summary.plan.text()
    choices.update(compile=False)
    summary.speed_button.click()
    summary.measure_button.click()  # a few real steps on the tiny model, and their speed
    qtbot.waitUntil(lambda: "measured by a probe just now: " in summary.plan.text(), timeout=60_000)
    assert " tokens/s (remembered for later plans" in summary.plan.text()
    assert "white-space:pre-wrap" in summary.plan.text()  # long lines wrap (they were cut at 820 px)
    from cpt_studio.core.config import SystemConfig
    from cpt_studio.gui.speed_dialog import SpeedDialog as Real

    kept = Real(SystemConfig(peak_tflops=0.01)).system()  # OK with no edit keeps a small peak
    assert kept.peak_tflops == 0.01
    summary.estimate_button.click()  # the next estimate remembers the measurement
    qtbot.waitUntil(lambda: "the same for this model" in summary.plan.text(), timeout=60_000)
    assert "measured: " in summary.plan.text() and "by a probe on " in summary.plan.text()
    summary.grab().save(str(tmp_path / "summary.png"))
