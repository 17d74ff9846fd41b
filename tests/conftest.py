import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import pytest

from cpt_studio.core.testing.tiny_model import build_tiny_model


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Each test gets its own data folder (store, token cache, imported models)."""
    monkeypatch.setenv("CPT_STUDIO_HOME", str(tmp_path / "cpt-home"))


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path):
    """Each test gets its own app settings (recent files, window geometry, preferences), never
    the user's. (Without Qt, as on the GPU machine's image, there are none.)"""
    try:
        from PySide6.QtCore import QSettings
    except ImportError:
        return

    for format_ in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(format_, QSettings.Scope.UserScope, str(tmp_path / "settings"))


@pytest.fixture(autouse=True)
def _gui_thread_garbage_collection(request):
    """A Qt test collects garbage on the GUI thread only, as the app does (gui.app); after it,
    its dead widgets are collected here and automatic collection is back for the tests without Qt."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    import gc

    from cpt_studio.gui.app import gui_thread_garbage_collector

    collector = gui_thread_garbage_collector()
    yield
    collector.timer.stop()
    gc.enable()
    gc.collect()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def demo_import(tmp_path_factory):
    """The demo model imported once from its packaged GGUF (about 25 s on 2 cores), in a data
    folder and an (empty) HF cache of its own: (the model folder, the import's progress events).
    A test that needs the demo model in its own data folder uses `demo_model_here`."""
    from cpt_studio.core import models

    events: list[dict] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CPT_STUDIO_HOME", str(tmp_path_factory.mktemp("demo-home")))
        patch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hf-cache")))
        folder = models.demo_model_path(progress=events.append)
    return folder, events


@pytest.fixture
def demo_model_here(demo_import, tmp_path, monkeypatch):
    """The session's demo import linked into this test's data folder (models/NAME), with an
    empty HF cache: demo_model_path() finds it there, as after a first import."""
    from cpt_studio.core import models

    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    link = models.imported_models_dir() / demo_import[0].name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(demo_import[0], target_is_directory=True)
    return link


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished 2 x 2 sweep of the tiny model (cpt_studio.core.testing.sweep_runs), shared by
    the core, CLI and GUI tests of sweeps; its runs' folders are under its parent's runs/."""
    from cpt_studio.core.testing.sweep_runs import run_tiny_sweep

    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CPT_STUDIO_HOME", str(root / "home"))
        return run_tiny_sweep(tiny_model_dir, root)
