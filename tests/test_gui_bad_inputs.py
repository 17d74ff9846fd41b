"""The wizard's model and corpus pages refuse what the CLI refuses, with the same sentence;
the summary page names the document separator; Resume asks before going on with a corpus
that changed since the run started."""

import pytest
from bad_models import make_bad_models

from cpt_studio.core.config import CorpusConfig, EvalConfig, ModelConfig, RunConfig
from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.data import prepare_run_data
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.gui.monitor import MonitorWindow
from cpt_studio.gui.wizard import RunWizard


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_bad_models(tmp_path_factory.mktemp("models"))


def _wizard(qtbot, tmp_path):
    wizard = RunWizard(runs_root=tmp_path / "runs")
    qtbot.addWidget(wizard)
    wizard.show()
    return wizard


@pytest.mark.parametrize("kind, sentence", [
    ("bert", "holds a BertForMaskedLM, not a causal language model"),
    ("no-weights", "has a config.json but no weights"),
    ("truncated", "model.safetensors is damaged or incomplete"),
    ("pickle", "pickle files (pytorch_model.bin)"),
    ("no-eos", "no end-of-sequence or end-of-text token"),
])
def test_the_model_page_refuses_a_model_that_cannot_be_trained(qtbot, tmp_path, models, kind, sentence):
    wizard = _wizard(qtbot, tmp_path)
    page = wizard.currentPage()
    page.path.setText(str(models[kind]))
    wizard.next()
    assert wizard.currentPage() is page and sentence in page.problems.text()
    assert str(models[kind]) in page.problems.text()
    if kind != "no-eos":  # the model's description says it too, as soon as it is chosen
        page._on_model_changed()
        qtbot.waitUntil(lambda: page.info.text().startswith("⚠"), timeout=10_000)
        assert sentence in page.info.text()
    if kind == "pickle":
        page.allow_pickle.setChecked(True)
        wizard.next()
        assert wizard.currentPage() is not page and wizard.config.model.allow_pickle


@pytest.mark.parametrize("content, sentence, skippable", [
    ("", "empty.jsonl: holds no documents", False),
    ('{"text": "fine."}\n{"text": "half \\ud83d emoji"}\n', "line 2: field 'text' is not valid Unicode", True),
    ('{"body": "x"}\n', "yields no documents", False),  # every record bad: skipping leaves nothing
])
def test_the_corpus_page_refuses_an_unusable_corpus(qtbot, tmp_path, models, content, sentence, skippable):
    bad = tmp_path / "empty.jsonl"
    bad.write_text(content)
    wizard = _wizard(qtbot, tmp_path)
    wizard.currentPage().path.setText(str(models["good"]))
    wizard.next()
    page = wizard.currentPage()
    page.domain.add(str(bad))
    wizard.config.corpus.replay_ratio = 0
    page.skip_bad.setChecked(not skippable)
    wizard.next()
    assert wizard.currentPage() is page
    assert sentence in page.problems.text() or sentence in " ".join(
        page.problem_list.item(i).text() for i in range(page.problem_list.count()))


def test_the_summary_page_sets_the_separator_and_the_plan_names_it(qtbot, tmp_path, models):
    from cpt_studio.gui.pages.summary_page import SummaryPage, describe

    wizard = _wizard(qtbot, tmp_path)
    domain = write_jsonl(tmp_path / "d.jsonl", make_documents(30))
    wizard.config = RunConfig(name="sep", model=ModelConfig(str(models["instruct"])),
                              corpus=CorpusConfig(domain=[SourceSpec(str(domain))], replay_ratio=0))
    wizard.config.batch.seq_len, wizard.config.eval.heldout_count = 64, 2
    summary = next(wizard.page(i) for i in wizard.pageIds() if isinstance(wizard.page(i), SummaryPage))
    summary.load(wizard.config)
    with qtbot.waitSignal(summary.start_plan().finished, timeout=60_000):
        pass
    assert "documents      document + &lt;|endoftext|&gt; (end-of-text token" in summary.plan.text()
    summary.separator.setText("<|im_end|>")
    summary.store(wizard.config)
    assert wizard.config.corpus.separator == "<|im_end|>"
    assert "Documents separated by: <|im_end|>" in describe(wizard.config)


@pytest.mark.parametrize("answer", ["no", "yes"])
def test_resume_asks_before_going_on_with_a_changed_corpus(qtbot, tmp_path, models, tiny_tokenizer, monkeypatch, answer):
    import cpt_studio.gui.monitor as monitor_module

    domain = write_jsonl(tmp_path / "d.jsonl", make_documents(30))
    config = RunConfig(name="r", model=ModelConfig(str(models["good"])),
                       corpus=CorpusConfig(domain=[SourceSpec(str(domain))], replay_ratio=0),
                       eval=EvalConfig(heldout_count=2))
    run_dir = create_run(config, tmp_path / "runs")
    prepare_run_data(config.corpus, config.eval, tiny_tokenizer, run_dir, seq_len=64)
    write_jsonl(domain, make_documents(31))
    started, asked = [], []
    monkeypatch.setattr(monitor_module, "start_worker", lambda *a, **k: started.append(k))
    monitor = MonitorWindow(run_dir, poll_ms=50)
    qtbot.addWidget(monitor)
    monkeypatch.setattr(monitor, "confirm_changed_corpus", lambda changed: asked.append(changed) or answer == "yes")
    monitor._on_resume_clicked()
    assert len(asked) == 1 and "d.jsonl" in asked[0]
    assert started == ([] if answer == "no" else [{"resume": True, "accept_changed_corpus": True}])


def test_loading_a_broken_setup_lists_every_problem(qtbot, tmp_path, monkeypatch):
    from cpt_studio.gui import wizard as wizard_module

    broken = tmp_path / "setup.json"
    broken.write_text('{"batch": {"seq_len": "long"}, "schedule": {"peak": 1}}')
    monkeypatch.setattr(wizard_module.QFileDialog, "getOpenFileName", lambda *a, **k: (str(broken), ""))
    wizard = _wizard(qtbot, tmp_path)
    wizard.button(wizard_module.LOAD).click()  # on the first page: Load setup is there on every page
    text = wizard.currentPage().problems.text()
    assert f"{broken}: batch.seq_len: expected a whole number" in text
    assert f"{broken}: schedule.peak: unknown setting" in text
