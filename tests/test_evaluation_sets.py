"""Bits per byte, word perplexity, and evaluation files of the user's own (several general
sets, each with its forgetting; the guard on the worst one or the one named)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpt_studio.core.config import EvalConfig, EvalSetSpec, ScheduleConfig
from cpt_studio.core.data import evaluation_sets, prepare_run_data
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
from cpt_studio.core.training import train

TEXT = "Le patient a reçu 5 µg de tacrolimus — deux fois par jour, à jeun."


def test_bits_per_byte_equals_a_direct_computation_on_the_same_text(tmp_path, tiny_model_dir):
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [TEXT])
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             eval=EvalConfig(heldout_count=8, sets=[EvalSetSpec("french", str(eval_file))]))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    data = prepare_run_data(config.corpus, config.eval, tokenizer, tmp_path / "run", seq_len=128)
    sets = evaluation_sets(data, config.eval, tokenizer, seq_len=128)
    assert set(sets) == {"domain", "general", "french"} and sets["french"].kind == "general"
    measured = sets["french"].measure(model)

    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits
    nll = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
    assert len(TEXT.encode("utf-8")) > len(TEXT)  # bytes, not characters
    assert measured["french_bpb"] == pytest.approx(nll / math.log(2) / len(TEXT.encode("utf-8")), rel=1e-5)
    assert measured["french_word_ppl"] == pytest.approx(math.exp(nll / len(TEXT.split())), rel=1e-5)
    assert measured["french_ppl"] == pytest.approx(math.exp(nll / (ids.shape[1] - 1)), rel=1e-5)
    held = sets["domain"]
    texts = [json.loads(line)["text"] for line in (tmp_path / "run" / "heldout" / "domain.jsonl").read_text().splitlines()]
    assert held.text_bytes == sum(len(t.encode()) for t in texts) and held.words == sum(len(t.split()) for t in texts)


def test_a_run_with_two_general_sets_has_two_forgetting_curves_and_the_guard_watches_the_worst(
        tmp_path, tiny_model_dir):
    prose = write_jsonl(tmp_path / "prose.jsonl", make_documents(6, seed=7))
    code = write_jsonl(tmp_path / "code.jsonl", [f"def f{i}(x):\n    return x * {i} + {i * i}\n" for i in range(6)])
    sets = [EvalSetSpec("prose", str(prose)), EvalSetSpec("code", str(code))]
    config = tiny_run_config(tiny_model_dir, tmp_path / "data", eval=EvalConfig(interval=5, heldout_count=8, sets=sets),
                             schedule=ScheduleConfig(peak_lr=3e-3, max_steps=10, warmup_ratio=0))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    evals = events_of(run_dir, "eval")
    assert [e["step"] for e in evals] == [0, 5, 10]
    for name in ("prose", "code", "general"):
        series = [e[f"{name}_forgetting"] for e in evals]
        assert series[0] == 0 and all(math.isfinite(v) for v in series) and series[-1] != 0
        assert all(e[f"{name}_bpb"] > 0 for e in evals)
    assert evals[-1]["code_forgetting"] != evals[-1]["prose_forgetting"]
    for e in evals[1:]:
        worst = max(("general", "prose", "code"), key=lambda n: e[f"{n}_forgetting"])
        assert (e["forgetting_set"], e["forgetting"]) == (worst, e[f"{worst}_forgetting"])


def test_the_guard_set_names_the_forgetting_the_guard_acts_on(tiny_model_dir, tmp_path):
    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.mixing import ReplayMixer
    from cpt_studio.core.recipe import Hardware
    from cpt_studio.core.run_folder import RunPaths
    from cpt_studio.core.training import RunMonitor

    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.eval.guard_set = "code"
    sets = {"domain": SimpleNamespace(kind="domain"), "general": SimpleNamespace(kind="general"),
            "code": SimpleNamespace(kind="general")}
    paths = RunPaths(tmp_path / "run")
    monitor = RunMonitor(config, EventWriter(paths.events), paths, sets, ReplayMixer(10, 10, 0.05, 4),
                         Hardware("cpu", "fp32", "sdpa", False), 10)
    monitor.baseline = {"domain_ppl": 10.0, "general_ppl": 10.0, "code_ppl": 10.0}
    gains = monitor._gains({"domain_ppl": 8.0, "general_ppl": 15.0, "code_ppl": 11.0})
    assert gains["general_forgetting"] == pytest.approx(0.5) and gains["code_forgetting"] == pytest.approx(0.1)
    assert (gains["forgetting_set"], gains["forgetting"]) == ("code", pytest.approx(0.1))
    assert gains["domain_gain"] == pytest.approx(0.2)


def test_runs_with_different_tokenizers_are_compared_in_bits_per_byte(qtbot, tmp_path, tiny_model_dir):
    from cpt_studio.core import store
    from cpt_studio.core.compare import comparison_rows, gain_basis
    from cpt_studio.core.events import EventWriter

    db = store.open_store(":memory:")
    ids = []
    for name, extend, bpb in (("plain", False, 1.8), ("extended", True, 1.5)):
        config = tiny_run_config(tiny_model_dir, tmp_path / name)
        config.name, config.tokenizer.extend = name, extend
        run_dir = create_run(config, tmp_path / "runs")
        events = EventWriter(run_dir / "events.jsonl")
        # the extended run's per-token perplexity looks worse (longer tokens), its bits per byte better
        for step, ppl, domain_bpb in ((0, 10.0, 2.0), (10, 9.0 if not extend else 12.0, bpb)):
            events.emit("eval", step, domain_ppl=ppl, general_ppl=10.0, domain_bpb=domain_bpb,
                        general_bpb=1.0, domain_gain=1 - ppl / 10, forgetting=0.0, baseline=step == 0)
        (run_dir / "checkpoints" / "checkpoint-10").mkdir(parents=True)
        events.emit("checkpoint", 10, path="checkpoints/checkpoint-10")
        ids.append(store.index_run(db, run_dir))
    assert gain_basis({i: store.get_run(db, i)["config"] for i in ids}) == "bpb"
    rows = {r["run_name"]: r for r in comparison_rows(db, ids)}
    assert rows["plain"]["domain_gain"] == pytest.approx(0.1) and rows["extended"]["domain_gain"] == pytest.approx(0.25)
    assert rows["extended"]["basis"] == "bpb" and rows["extended"]["forgetting"] == pytest.approx(0.0)
    assert comparison_rows(db, ids[:1])[0]["domain_gain"] == pytest.approx(0.1)  # one run: as stored
    # the labels say which unit (a tester read +14.9% on the scatter, +58.8% in the history)
    from cpt_studio.core.compare import comparison_notes
    from cpt_studio.gui.compare import CompareWindow

    assert any("changes of bits per byte" in note for note in comparison_notes(db, ids))
    window = CompareWindow(db, ids)
    qtbot.addWidget(window)
    assert window.scatter.getPlotItem().getAxis("bottom").labelText == "domain gain % (bits per byte)"
    headers = [window.table.horizontalHeaderItem(i).text() for i in range(window.table.columnCount())]
    assert "forgetting (bits per byte)" in headers
