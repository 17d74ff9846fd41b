"""The instruction-tuning wizard: a short RunWizard for an SFT run chained to a checkpoint.

    config = sft_config(cpt_run_dir, step, [])          # SFT defaults, parent recorded
    wizard = SftWizard(config, runs_root)               # data, method, schedule, evaluation, summary
    wizard.run_started.connect(...)                     # the new run folder, its worker started

The pages are the CPT wizard's (the same config object, the same checks) except the first: the
instruction data with its preview (gui/pages/sft_data_page.py). Start creates the run off the GUI
thread (RunWizard.accept: a LoRA parent is merged into the run's start_model/ first).
"""

from __future__ import annotations

from cpt_studio.core.sft_run import sft_peak_lr

from .pages.base import ConfigPage
from .pages.eval_page import EvalPage
from .pages.method_page import MethodPage
from .pages.schedule_page import SchedulePage
from .pages.sft_data_page import SftDataPage
from .pages.summary_page import SummaryPage
from .wizard import RunWizard


class SftWizard(RunWizard):
    TITLE = "Instruction-tune a checkpoint"
    STAGE = "sft"

    def make_pages(self) -> list[ConfigPage]:
        schedule = SchedulePage(new_token_rows=False)
        schedule.setSubTitle("Instruction tuning's defaults: peak 2e-5 (2e-4 with LoRA), 3% warmup, cosine "
                             "to 0, 3 epochs.")
        method = MethodPage()
        method.setSubTitle("LoRA on a merged CPT checkpoint, or all weights; EWC keeps general ability.")
        method.lora.toggled.connect(lambda lora: method._loading or self._rate_follows_method(lora))
        return [SftDataPage(), method, schedule, EvalPage(), SummaryPage()]

    def set_config(self, config) -> None:
        """RunWizard.set_config, without a new-token LR multiple: an SFT run never extends its
        tokenizer (sft_config clears it; a loaded CPT setup could bring one, which validate
        refuses without an extension and no page here shows)."""
        config.schedule.new_token_lr_scale = None
        super().set_config(config)

    def _rate_follows_method(self, lora: bool) -> None:
        """Switching between full and LoRA moves the peak learning rate between their defaults,
        unless the user has set another one (the schedule page shows it when it opens)."""
        before, now = ("full", "lora") if lora else ("lora", "full")
        if self.config.schedule.peak_lr == sft_peak_lr(before):
            self.config.schedule.peak_lr = sft_peak_lr(now)
