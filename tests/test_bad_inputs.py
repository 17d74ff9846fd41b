"""The bad-input battery: every kind of bad model, tokenizer, setting, config file and corpus a
user can bring, through the CLI. Each is refused before any work: exit code 2, one sentence
naming the file or setting and the fix, no traceback, and no run folder left behind.

Most cases call the CLI's entry point in this process (`cpt_studio.core.cli.main`, what `cpt-studio`
runs), which keeps the battery fast; `test_through_the_real_command` runs a few of them as
real `python -m cpt_studio.core.cli` processes.
"""

import json
import subprocess
import sys

import pytest
import torch
from bad_models import make_bad_models

from cpt_studio.core.cli import main as cli_main
from cpt_studio.core.config import RunConfig
from cpt_studio.core.data import prepare_run_data
from cpt_studio.core.events import read_events
from cpt_studio.core.paths import data_dir
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_bad_models(tmp_path_factory.mktemp("models"))


def _config(tmp_path, model_dir, texts=None, **sections) -> dict:
    corpus = write_jsonl(tmp_path / "domain.jsonl", texts if texts is not None else make_documents(30))
    config = {"name": "bad", "model": {"name_or_path": str(model_dir)},
              "corpus": {"domain": [str(corpus)], "replay_ratio": 0},
              "batch": {"micro_batch": 2, "grad_accum": 1, "seq_len": 64},
              "schedule": {"max_steps": 1}, "eval": {"heldout_count": 2}}
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def _write(tmp_path, config) -> str:
    path = tmp_path / "run.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return str(path)


def refused(capsys, *argv) -> str:
    """Run the CLI; assert it refused cleanly; return what it said."""
    code = cli_main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    runs = data_dir() / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a refused run left a run folder"
    return err


MODEL_CASES = {
    "no-weights": ("has a config.json but no weights", "copy the weight files"),
    "truncated": ("model.safetensors is damaged or incomplete", "copy it again"),
    "bert": ("holds a BertForMaskedLM, not a causal language model", "choose another model"),
    "remote-code": ("needs its own Python code", "trust remote code"),
    "pickle": ("pickle files (pytorch_model.bin)", "model.allow_pickle"),
    "no-eos": ("no end-of-sequence or end-of-text token", "set corpus.separator"),
}


@pytest.mark.parametrize("kind", MODEL_CASES)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_model_that_cannot_be_trained_is_refused_naming_the_folder(tmp_path, capsys, models, kind, dry_run):
    path = _write(tmp_path, _config(tmp_path, models[kind]))
    err = refused(capsys, "train", path, *(["--dry-run"] if dry_run else []))
    what, fix = MODEL_CASES[kind]
    assert what in err and fix in err and str(models[kind]) in err


def test_pickle_weights_load_when_allowed(tmp_path, capsys, models):
    path = _write(tmp_path, _config(tmp_path, models["pickle"], model={"allow_pickle": True}))
    assert cli_main(["train", path, "--dry-run"]) == 0, capsys.readouterr().err


SETTING_CASES = {
    "context": ({"batch": {"seq_len": 1024}}, "batch.seq_len: 1024 is longer than the model's context", "at most 512"),
    "lora": ({"method": {"kind": "lora", "target_modules": ["q_proj", "c_attn"]}},
             "method.target_modules: the model has no c_attn", "choose among its linear layers"),
    "flash": ({"system": {"attention": "flash_attention_2"}}, "system.attention: flash_attention_2", "use sdpa"),
    "ewc-group": ({"ewc": {"enabled": True, "group": "lora"}, "corpus": {"general": ["GENERAL"], "replay_ratio": 0.05}},
                  "ewc: group 'lora' needs the LoRA method", "choose another group"),
    "heldout": ({"eval": {"heldout_count": 30}}, "eval.heldout_count: 30", "hold out fewer"),
    "separator": ({"corpus": {"separator": "<nope>"}}, "corpus.separator: '<nope>' is not a token", "leave it empty"),
}
if not torch.cuda.is_available():
    SETTING_CASES["fp16"] = ({"system": {"precision": "fp16"}}, "system.precision: fp16", "use fp32")


@pytest.mark.parametrize("kind", SETTING_CASES)
def test_a_setting_the_model_or_machine_cannot_do_is_refused_before_the_run(tmp_path, capsys, models, kind):
    sections, what, fix = SETTING_CASES[kind]
    config = _config(tmp_path, models["good"], **sections)
    if "general" in config["corpus"]:
        config["corpus"]["general"] = [str(write_jsonl(tmp_path / "general.jsonl", make_documents(20, seed=5)))]
    err = refused(capsys, "train", _write(tmp_path, config))
    assert what in err and fix in err


def test_a_config_file_with_several_problems_reports_every_one(tmp_path, capsys, models):
    config = _config(tmp_path, models["good"], schedule={"peak_lr": "fast", "warmup": 0.1},
                     batch={"micro_batch": 2.5}, model={"trust_remote_code": "yes"})
    config["corpus"]["domain"].append({"txt_mode": "blocks"})
    path = _write(tmp_path, config)
    err = refused(capsys, "train", path, "--dry-run")
    for expected in ("schedule.peak_lr: expected a number, got text \"fast\"",
                     "schedule.warmup: unknown setting", "batch.micro_batch: expected a whole number",
                     "model.trust_remote_code: expected true or false", "corpus.domain[1].path: missing"):
        assert f"{path}: {expected}" in err


def test_a_config_file_that_is_not_json_or_not_there_is_named(tmp_path, capsys):
    path = _write(tmp_path, '{"name": "x",\n "batch": {"seq_len": 64,}}')
    assert f"{path} line 2 column" in refused(capsys, "train", path)
    assert "nothing.json: cannot be read" in refused(capsys, "train", str(tmp_path / "nothing.json"))


CORPUS_CASES = {
    "empty": ("", "domain.jsonl: holds no documents", "add documents"),
    "surrogate": ('{"text": "fine."}\n{"text": "half \\ud83d emoji"}\n',
                  "domain.jsonl line 2: field 'text' is not valid Unicode", "skip bad records"),
}


@pytest.mark.parametrize("kind", CORPUS_CASES)
def test_a_corpus_that_cannot_be_used_is_refused_by_inspect_dry_run_and_train(tmp_path, capsys, models, kind):
    content, what, fix = CORPUS_CASES[kind]
    config = _config(tmp_path, models["good"])
    (tmp_path / "domain.jsonl").write_text(content)
    path = _write(tmp_path, config)
    for argv in (["corpus", "inspect", str(tmp_path / "domain.jsonl"), "--tokenizer", str(models["good"])],
                 ["train", path, "--dry-run"], ["train", path]):
        err = refused(capsys, *argv)
        assert what in err and fix in err


def test_resume_on_a_changed_corpus_asks_for_the_flag(tmp_path, capsys, models, tiny_tokenizer):
    config = RunConfig.from_dict(_config(tmp_path, models["good"]))
    run_dir = create_run(config, tmp_path / "runs")
    prepare_run_data(config.corpus, config.eval, tiny_tokenizer, run_dir, seq_len=64)  # as the run's start does
    write_jsonl(tmp_path / "domain.jsonl", make_documents(31))
    code = cli_main(["resume", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "the corpus changed since this run started" in err and "domain.jsonl" in err
    assert "--accept-changed-corpus" in err and not RunPaths(run_dir).events.exists()


def test_the_worker_refuses_what_the_cli_refuses(tmp_path, models):
    """A run folder made without the CLI's checks (an old config, a hand-made folder): the
    worker stops before loading anything, with the same sentence as its failure status."""
    from cpt_studio.core.worker import main as worker_main

    run_dir = create_run(RunConfig.from_dict(_config(tmp_path, models["no-eos"])), tmp_path / "runs")
    assert worker_main([str(run_dir)]) == 1
    (failed,) = [e for e in read_events(RunPaths(run_dir).events)[0] if e.get("state") == "failed"]
    assert "no end-of-sequence or end-of-text token" in failed["message"]


def test_the_dry_run_shows_how_documents_are_separated(tmp_path, capsys, models):
    assert cli_main(["train", _write(tmp_path, _config(tmp_path, models["instruct"])), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "documents      document + <|endoftext|> (end-of-text token; the eos <|im_end|> ends a chat turn)" in out


def test_through_the_real_command(tmp_path, models):
    """Exit code and message of a real `cpt-studio` process for a model, a corpus and a config fault."""
    (tmp_path / "empty.jsonl").write_text("")
    bert = _write(tmp_path, _config(tmp_path, models["bert"]))
    for argv, expected in (
        (["train", bert], "holds a BertForMaskedLM, not a causal language model"),
        (["corpus", "inspect", str(tmp_path / "empty.jsonl"), "--tokenizer", str(models["good"])],
         "empty.jsonl: holds no documents"),
    ):
        result = subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", *argv], capture_output=True, text=True)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    assert not (data_dir() / "runs").exists() or not any((data_dir() / "runs").iterdir())


def test_the_dry_run_warns_about_settings_the_run_would_not_honour_as_meant(tmp_path, capsys, models):
    config = _config(tmp_path, models["good"], checkpoints={"interval": 100}, eval={"interval": 50})
    assert cli_main(["train", _write(tmp_path, config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints.interval: 100 is more than the run's 1 step, so the only checkpoint" in out
    assert "eval.interval: 50 is more than the run's 1 step, so forgetting" in out
