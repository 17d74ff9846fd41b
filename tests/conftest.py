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
    the user's."""
    from PySide6.QtCore import QSettings

    for format_ in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(format_, QSettings.Scope.UserScope, str(tmp_path / "settings"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished 2 x 2 sweep of the tiny model (cpt_studio.core.testing.sweep_runs), shared by
    the core, CLI and GUI tests of sweeps; its runs' folders are under its parent's runs/."""
    from cpt_studio.core.testing.sweep_runs import run_tiny_sweep

    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CPT_STUDIO_HOME", str(root / "home"))
        return run_tiny_sweep(tiny_model_dir, root)
