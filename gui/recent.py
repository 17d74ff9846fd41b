"""Recently opened run folders and setups (File ▸ Open Recent), newest first, in the settings.

    remember("runs", run_dir)      # the monitor of a run was opened
    remember("setups", json_path)  # a setup file was opened in the wizard
    recent("runs")                 # the ones that still exist, newest first
"""

from __future__ import annotations

from pathlib import Path

from .preferences import settings

KINDS = {"runs": "recent_runs", "setups": "recent_setups"}
"""Each kind's settings key."""
MAX_RECENT = 10


def recent(kind: str) -> list[str]:
    """The remembered paths of `kind` ("runs" or "setups") that still exist, newest first."""
    return [path for path in settings().value(KINDS[kind], [], list) if Path(path).exists()]


def remember(kind: str, path: Path | str) -> None:
    """Put `path` (made absolute) first in `kind`'s list, keeping MAX_RECENT."""
    path = str(Path(path).resolve())
    store = settings()
    paths = [path] + [p for p in store.value(KINDS[kind], [], list) if p != path]
    store.setValue(KINDS[kind], paths[:MAX_RECENT])


def clear() -> None:
    """Forget every recent run and setup."""
    store = settings()
    for key in KINDS.values():
        store.remove(key)


FOLDERS_GROUP = "last_folder"
"""Settings keys last_folder/KIND: the folder each kind of file dialog (corpus, model,
instruction data) was last used in."""


def start_folder(kind: str) -> str:
    """Where a file dialog of `kind` opens: the folder last chosen in one, else the home folder
    (Qt's default, the app's working directory, is rarely where a user keeps data)."""
    folder = str(settings().value(f"{FOLDERS_GROUP}/{kind}", "") or "")
    return folder if folder and Path(folder).is_dir() else str(Path.home())


def remember_folder(kind: str, chosen: str | list[str]) -> None:
    """Remember where the file(s) or folder `chosen` in a dialog of `kind` are (nothing when
    the dialog was cancelled)."""
    first = chosen[0] if isinstance(chosen, list) and chosen else chosen
    if not first:
        return
    path = Path(first)
    settings().setValue(f"{FOLDERS_GROUP}/{kind}", str(path if path.is_dir() else path.parent))
