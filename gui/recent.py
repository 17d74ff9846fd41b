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
