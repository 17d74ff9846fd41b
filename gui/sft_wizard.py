"""The instruction-tuning wizard: a short RunWizard for an SFT run chained to a checkpoint.

    config = sft_config(cpt_run_dir, step, [])          # SFT defaults, parent recorded
    wizard = SftWizard(config, runs_root)               # data, method, schedule, evaluation, summary
    wizard.run_started.connect(...)                     # the new run folder, its worker started

The pages are the CPT wizard's (the same config object, the same checks) except the first: the
instruction data with its preview (gui/pages/sft_data_page.py). Start creates the run off the GUI
thread (RunWizard.accept: a LoRA parent is merged into the run's start_model/ first).
"""

from __future__ import annotations

from .pages.base import ConfigPage
from .pages.eval_page import EvalPage
from .pages.method_page import MethodPage
from .pages.schedule_page import SchedulePage
from .pages.sft_data_page import SftDataPage
from .pages.summary_page import SummaryPage
from .wizard import RunWizard

SFT_LENGTH = "the epochs over the instruction data (3 by default)"
"""The schedule page's "no step limit" wording for an SFT run: it trains for epochs, not one pass
over a domain corpus."""


class SftWizard(RunWizard):
    TITLE = "Instruction-tune a checkpoint"

    def make_pages(self) -> list[ConfigPage]:
        schedule = SchedulePage()
        schedule.setSubTitle("Instruction tuning's defaults: peak 2e-5, 3% warmup, cosine to 0, 3 epochs.")
        schedule.steps.setSpecialValueText(SFT_LENGTH)
        method = MethodPage()
        method.setSubTitle("LoRA on a merged CPT checkpoint, or all weights; EWC keeps general ability.")
        return [SftDataPage(), method, schedule, EvalPage(), SummaryPage()]
