"""Long jobs the wizard starts (corpus check, estimate, tokenizer preview): each reports its
progress and stops when cancelled. Headless: the core function raises Cancelled at the next
report after the callback asks it to. Offscreen: the page's bar moves, Cancel stops the job,
the page says "cancelled" and its button works again."""

import threading
import time

import pytest

from cpt_studio.core.corpus import SourceSpec, validate
from cpt_studio.core.progress import Cancelled
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.testing.run_helpers import tiny_run_config

FILES, DOCUMENTS = 5, 2500


@pytest.fixture
def folder_corpus(tmp_path):
    """A folder of FILES JSONL files of DOCUMENTS documents each."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(FILES):
        write_jsonl(folder / f"part-{i}.jsonl", make_documents(DOCUMENTS, seed=i, max_words=8))
    return folder


class StopAt:
    """A Progress callback that records every report and raises Cancelled once `when` holds."""

    def __init__(self, when):
        self.when, self.reports, self.cancelled_at = when, [], None

    def __call__(self, done, total, what):
        self.reports.append((done, total, what))
        if self.cancelled_at is None and self.when(done, total, what):
            self.cancelled_at = time.monotonic()
        if self.cancelled_at is not None:
            raise Cancelled("test")


# -- headless: the core functions --------------------------------------------------------------

def test_validate_reports_files_done_of_all_files(folder_corpus):
    reports = []
    report = validate([SourceSpec(str(folder_corpus))], lambda *r: reports.append(r))
    assert report.documents == FILES * DOCUMENTS
    done = [d for d, _, _ in reports]
    assert done == sorted(done) and done[0] == 0 and done[-1] == FILES  # it only moves forward
    assert {total for _, total, _ in reports} == {FILES}
    assert len(set(done)) == FILES + 1  # every file moves the bar
    assert reports[-1][2] == f"{FILES * DOCUMENTS:,} documents read"


def test_validate_stops_when_its_progress_raises_cancelled(folder_corpus):
    stop = StopAt(lambda done, total, what: done >= 1)
    with pytest.raises(Cancelled):
        validate([SourceSpec(str(folder_corpus))], stop)
    assert time.monotonic() - stop.cancelled_at < 1
    assert stop.reports[-1][0] == 1 and "file 2 of 5" in stop.reports[-1][2]  # the rest never read


def test_plan_stops_while_tokenizing_and_caches_nothing(tmp_path, tiny_model_dir):
    from cpt_studio.core.paths import token_cache_dir
    from cpt_studio.core.plan import PLAN_STAGES, plan_run

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    stop = StopAt(lambda done, total, what: done == 1)
    with pytest.raises(Cancelled):
        plan_run(config, progress=stop)
    assert [r[0] for r in stop.reports] == [0, 1] and stop.reports[1][1] == PLAN_STAGES
    assert "tokenizing the domain corpus" in stop.reports[1][2]
    assert not list(token_cache_dir().glob("*/meta.json"))  # no half-written store kept
    reports = []
    plan = plan_run(config, progress=lambda *r: reports.append(r))
    assert plan.steps > 0 and [r[0] for r in reports] == [0, 1, 2, 3]


def test_preview_stops_between_learning_and_counting_the_words(tmp_path, tiny_model_dir):
    from cpt_studio.core.tokenizer_ext import preview_for_config

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    stop = StopAt(lambda done, total, what: what.startswith("learning") and done == total)
    with pytest.raises(Cancelled):
        preview_for_config(config, progress=stop)
    assert time.monotonic() - stop.cancelled_at < 1
    assert not any(what.startswith("counting") for _, _, what in stop.reports[:-1])


# -- offscreen: the pages ----------------------------------------------------------------------

class Gate:
    """Wraps a Progress callback: after the first report with done >= 1 the work waits until
    the test has pressed Cancel, so the cancel arrives mid-work on any machine."""

    def __init__(self):
        self.reached, self.release = threading.Event(), threading.Event()

    def wrap(self, progress):
        def report(done, total, what):
            progress(done, total, what)  # raises Cancelled once cancelled
            if done >= 1 and not self.reached.is_set():
                self.reached.set()
                self.release.wait(30)
        return report


def _wizard_page(qtbot, tmp_path, page_type, config):
    from cpt_studio.gui.wizard import RunWizard

    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.config = config
    page_id = next(i for i in wizard.pageIds() if isinstance(wizard.page(i), page_type))
    wizard.setStartId(page_id)
    wizard.resize(900, 700)
    wizard.show()  # on that page, which loads the config
    page = wizard.page(page_id)
    page.wizard_ = wizard  # the page is the wizard's: keep it alive (qtbot holds a weak reference)
    return page


def _cancel_mid_work(qtbot, start, button, progress, gate, shot=None):
    """Start the job, wait for the bar to move, press Cancel; returns the job."""
    job = start()
    assert not button.isEnabled() and progress.isVisible()
    qtbot.waitUntil(gate.reached.is_set, timeout=60_000)
    qtbot.waitUntil(lambda: progress.bar.value() >= 1, timeout=10_000)  # the bar has moved
    assert progress.bar.maximum() > 0  # a determinate bar: the total is known
    if shot:
        progress.window().grab().save(shot)
    finished = []
    job.finished.connect(finished.append)
    with qtbot.waitSignal(job.cancelled, timeout=10_000):
        progress.cancel_button.click()
        assert progress.what.text() == "cancelling…"
        gate.release.set()
    assert not finished and not progress.isVisible() and button.isEnabled()
    return job


def test_cancelling_the_corpus_check_stops_it(qtbot, tmp_path, folder_corpus, monkeypatch):
    import cpt_studio.gui.pages.corpus_page as corpus_page
    from cpt_studio.core.config import CorpusConfig, RunConfig

    gate, real = Gate(), corpus_page.validate
    monkeypatch.setattr(corpus_page, "validate", lambda specs, progress: real(specs, gate.wrap(progress)))
    config = RunConfig(corpus=CorpusConfig(domain=[SourceSpec(str(folder_corpus))]))
    page = _wizard_page(qtbot, tmp_path, corpus_page.CorpusPage, config)
    _cancel_mid_work(qtbot, page.start_check, page.check_button, page.progress, gate,
                     "/tmp/shots-history/corpus-check-progress.png")
    assert "cancelled" in page.report.text()


def test_cancelling_the_estimate_stops_it(qtbot, tmp_path, tiny_model_dir, monkeypatch):
    import cpt_studio.gui.pages.summary_page as summary_page

    gate, real = Gate(), summary_page.plan_run
    monkeypatch.setattr(summary_page, "plan_run",
                        lambda config, progress, **kw: real(config, progress=gate.wrap(progress), **kw))
    page = _wizard_page(qtbot, tmp_path, summary_page.SummaryPage,
                        tiny_run_config(tiny_model_dir, tmp_path / "data"))
    _cancel_mid_work(qtbot, page.start_plan, page.estimate_button, page.progress, gate,
                     "/tmp/shots-history/estimate-progress.png")
    assert page.plan.text() == "Estimate cancelled."


def test_cancelling_the_candidate_preview_stops_it(qtbot, tmp_path, tiny_model_dir, monkeypatch):
    import cpt_studio.core.tokenizer_ext as tokenizer_ext
    from cpt_studio.gui.pages.tokenizer_page import TokenizerPage

    gate, real = Gate(), tokenizer_ext.preview_for_config
    monkeypatch.setattr(tokenizer_ext, "preview_for_config",
                        lambda config, progress: real(config, progress=gate.wrap(progress)))
    page = _wizard_page(qtbot, tmp_path, TokenizerPage, tiny_run_config(tiny_model_dir, tmp_path / "data"))
    _cancel_mid_work(qtbot, page.start_preview, page.preview_button, page.progress, gate)
    assert page.preview.toPlainText() == "Preview cancelled."
