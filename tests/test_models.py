"""cpt_studio.core.models: describing, resolving, importing (GGUF) and loading base models, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpt_studio.core import models
from cpt_studio.core.models import ModelError
from cpt_studio.core.testing.tiny_model import build_tiny_model


def _fake_cache(root: Path, repo_id: str, source: Path, repo_type: str = "models") -> Path:
    """Lay out `source` as a cached snapshot of `repo_id` the way huggingface_hub does."""
    commit = "0" * 40
    repo = root / f"{repo_type}--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_model_info_counts_parameters_like_the_loaded_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    info = models.model_info(tiny_model_dir)
    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert info.parameters == sum(p.numel() for p in loaded.parameters())
    assert info.architecture == "LlamaForCausalLM"
    assert info.tied_embeddings is True
    assert (info.vocab_size, info.hidden_size, info.num_layers) == (384, 64, 2)
    assert info.max_position_embeddings == 512
    assert info.dtype == "float32"
    assert info.source == "folder"
    assert info.size_bytes == (tiny_model_dir / "model.safetensors").stat().st_size


def test_model_info_untied_head_counts_both_matrices(tmp_path, tiny_model_dir):
    untied = build_tiny_model(tmp_path / "untied", tie_word_embeddings=False)
    tied, info = models.model_info(tiny_model_dir), models.model_info(untied)
    assert info.tied_embeddings is False
    assert info.parameters == tied.parameters + 384 * 64


def test_folder_without_config_is_refused_clearly(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="is not a model folder: no config.json; choose the folder"):
        models.resolve_model(str(folder))
    with pytest.raises(ModelError, match="no config.json"):
        models.model_info(folder)


def test_unknown_hub_id_offline_is_refused_clearly(empty_cache):
    with pytest.raises(ModelError, match="is not in the local Hugging Face cache and downloads are off"):
        models.resolve_model("nobody-here/no-such-model")


def test_missing_path_and_missing_gguf_are_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve_model(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve_model(str(tmp_path / "absent.gguf"))


def test_resolve_model_returns_a_model_folder(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == tiny_model_dir
    assert models.resolve_model(str(tiny_model_dir / "config.json")) == tiny_model_dir


def test_scan_of_empty_or_missing_cache_is_empty(empty_cache, monkeypatch, tmp_path):
    assert models.scan_cached_models() == []
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "does-not-exist"))
    assert models.scan_cached_models() == []


def test_scan_and_resolve_find_cached_causal_lms_only(empty_cache, tiny_model_dir, tmp_path):
    snapshot = _fake_cache(empty_cache, "local/tiny", tiny_model_dir)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    _fake_cache(empty_cache, "local/encoder", encoder)
    _fake_cache(empty_cache, "local/corpus", tiny_model_dir, repo_type="datasets")
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "README.md").write_text("weights elsewhere")
    _fake_cache(empty_cache, "local/no-config", no_config)

    found = models.scan_cached_models()
    assert [info.name for info in found] == ["local/tiny"]
    assert found[0].source == "cache" and found[0].architecture == "LlamaForCausalLM"
    assert found[0].parameters == models.model_info(tiny_model_dir).parameters
    assert found[0].size_bytes > 0
    assert models.resolve_model("local/tiny") == snapshot


def test_scan_lists_the_models_imported_into_the_data_folder(empty_cache, tiny_model_dir):
    """The demo model and GGUF imports live in the data folder's models/: the wizard's list
    said "no causal language models in the cache" with the demo model there."""
    shutil.copytree(tiny_model_dir, models.imported_models_dir() / "smollm2-demo")
    (models.imported_models_dir() / ".half-written").mkdir()
    found = models.scan_cached_models()
    assert [(info.name, info.source) for info in found] == [("smollm2-demo", "imported")]
    assert models.resolve_model(found[0].path) == models.imported_models_dir() / "smollm2-demo"


def test_import_gguf_refuses_a_foreign_destination(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not a CPT Studio import"):
        models.import_gguf(gguf, dest)
    assert (dest / "mine.txt").read_text() == "keep me"


def test_load_model_and_tokenizer(tiny_model_dir):
    model, tokenizer = models.load_model_and_tokenizer(tiny_model_dir, dtype="bfloat16",
                                                       attn_implementation="sdpa")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert str(model.dtype) == "torch.bfloat16"
    assert tokenizer.pad_token is not None


@pytest.mark.slow
def test_demo_model_imports_the_packaged_gguf_once_and_generates(demo_import, empty_cache, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, events = demo_import  # imported by models.demo_model_path, once for the session
    monkeypatch.setenv("CPT_STUDIO_HOME", str(folder.parent.parent))  # the import's data folder
    assert folder.name == "SmolLM2-135M-Instruct"
    assert events and all(e["type"] == "status" and e["phase"] == "importing" for e in events)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left

    info = models.model_info(folder)
    assert info.architecture == "LlamaForCausalLM"
    assert abs(info.parameters - 134.5e6) < 0.1e6
    assert info.tied_embeddings and info.vocab_size == 49152
    gguf_info = models.model_info(models._packaged_demo_gguf())  # metadata only, no import
    assert (gguf_info.source, gguf_info.parameters) == ("gguf", info.parameters)
    assert gguf_info.architecture == "LlamaForCausalLM"

    weights = folder / "model.safetensors"
    mtime, start = weights.stat().st_mtime_ns, time.monotonic()
    assert models.demo_model_path(progress=events.append) == folder
    assert time.monotonic() - start < 2 and weights.stat().st_mtime_ns == mtime

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(out[0, inputs.input_ids.shape[1]:]).startswith(" Paris")


RACE = """
import sys, threading, time
from cpt_studio.core import models, plan
from cpt_studio.core.config import RunConfig
errors = []
def describe():
    try:
        models.model_info(sys.argv[1])
    except Exception as exc:
        errors.append(repr(exc))
thread = threading.Thread(target=describe)
thread.start()
time.sleep(0.3)  # the model's description is importing transformers' submodules now
try:
    plan.lr_schedule(RunConfig(), 10)  # what the wizard's schedule page draws on the GUI thread
except Exception as exc:
    errors.append(repr(exc))
thread.join()
print(errors)
"""


def test_two_threads_importing_transformers_at_once_both_succeed(tiny_model_dir):
    """Every first "New run..." did nothing: "cannot import name 'get_scheduler' from
    'transformers'" while a page's background job described the model (cpt_studio.core.hf_imports)."""
    done = subprocess.run([sys.executable, "-c", RACE, str(tiny_model_dir)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
