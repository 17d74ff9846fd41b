"""Where CPT Studio keeps its files: the user's data folder, the token cache, bundled resources."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def data_dir() -> Path:
    """The user's data folder; CPT_STUDIO_HOME overrides the platform default."""
    override = os.environ.get("CPT_STUDIO_HOME")
    path = Path(override) if override else Path(platformdirs.user_data_dir("cpt-studio", "cpt-studio"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def token_cache_dir() -> Path:
    """Token stores, one folder per (corpus content, tokenizer, settings)."""
    path = data_dir() / "token-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
