"""Where CPT Studio keeps its files: the user's data folder, the token cache, bundled resources."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import platformdirs

APP_ID = "io.github.cptstudio.CPTStudio"
"""The reverse-DNS id of the desktop entry, its icon and its AppStream metadata."""


def resource_path(*parts: str, package: str = "cpt_studio.resources") -> Path:
    """A file or folder shipped inside the package, as a real path.

    resource_path("demo", "domain.jsonl") -> .../cpt_studio/resources/demo/domain.jsonl
    resource_path("cpt-studio.svg", package="cpt_studio.resources.icons") -> the app icon
    Raises FileNotFoundError naming the resource and the likely cause (a broken install)."""
    resource = files(package)
    for part in parts:  # one at a time: Python 3.11's MultiplexedPath.joinpath takes one
        resource = resource / part
    # Installed from a wheel or in editable mode, the package is a folder on disk; a zipped
    # install has no real path, and the corpus reader and tokenizer need one.
    path = Path(str(resource))
    if not path.exists():
        raise FileNotFoundError(f"CPT Studio's bundled resource {'/'.join(parts)} is missing "
                                f"(looked in {path}); reinstall cpt-studio")
    return path


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
