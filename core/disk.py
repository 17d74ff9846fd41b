"""Disk space: checked before the work that fills it (tokenizing, each checkpoint), and a full
disk turned into one clear error that names the folder and the fix.

    require_free_space(folder, needed_bytes, "checkpoint-200", "lower checkpoints.keep")
    with disk_full_as_error(folder, "checkpoint-200", fix): ...   # ENOSPC -> DiskFullError
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

MARGIN = 1.1
"""Free space asked for beyond the estimate: estimates are rough, and a disk at 100% breaks
the event log too."""


class DiskFullError(OSError):
    """Not enough space for the work ahead (or a write that ran out of it); the message names
    the folder, the bytes, and what to do."""


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def require_free_space(folder: Path, needed: int, what: str, fix: str) -> None:
    """Raise DiskFullError unless `folder`'s file system has `needed` x MARGIN bytes free."""
    folder = _existing(Path(folder))
    free = shutil.disk_usage(folder).free
    if free < needed * MARGIN:
        raise DiskFullError(errno.ENOSPC, f"not enough disk space for {what}: {gib(free)} free in "
                            f"{folder}, about {gib(needed * MARGIN)} needed; {fix}")


@contextmanager
def disk_full_as_error(folder: Path, what: str, fix: str) -> Iterator[None]:
    """Turn a write that fills the disk (ENOSPC, EDQUOT) into a DiskFullError naming `what`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not _is_disk_full(exc):
            raise
        raise DiskFullError(errno.ENOSPC, f"the disk filled up while writing {what} in {folder}; "
                            f"{fix}") from exc


def _is_disk_full(exc: BaseException) -> bool:
    # Python raises OSError(ENOSPC); Rust libraries (tokenizers, safetensors) raise a plain
    # Exception whose text carries the OS error: "No space left on device (os error 28)".
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    return f"os error {errno.ENOSPC})" in str(exc) or os.strerror(errno.ENOSPC) in str(exc)


def estimated_token_store_bytes(paths: Iterable[Path]) -> int:
    """A generous estimate of a token store's size from its source files: token ids at 4 bytes
    and at most one token per 3 bytes of text (usual BPE vocabularies average 3.5-4.5 bytes
    per token on English), plus the document index. Compressed files count 4x."""
    total = 0
    for path in paths:
        size = os.stat(path).st_size
        total += size * (4 if str(path).endswith((".gz", ".parquet")) else 1)
    return int(total * 4 / 3) + 2**20


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
