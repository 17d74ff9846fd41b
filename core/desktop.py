"""A launcher for the app on a Linux desktop (freedesktop.org): the desktop entry, the icon in
every size and the AppStream metadata, copied from the files shipped inside the package (their
home in the repository is packaging/).

    cpt-studio desktop install      # after `pipx install cpt-studio` or `uv tool install cpt-studio`
    cpt-studio desktop uninstall

The entry's Exec line names the absolute path of this installation's `cpt-studio-gui`, so the
launcher works even when the desktop session's PATH does not include pipx's or a venv's bin
folder. Files go under $XDG_DATA_HOME (default ~/.local/share), which every freedesktop desktop
reads; nothing needs root.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .paths import APP_ID, resource_path

ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)
DESKTOP_PACKAGE = "cpt_studio.resources.desktop"
ICON_PACKAGE = "cpt_studio.resources.icons"


def data_home() -> Path:
    """$XDG_DATA_HOME when it is an absolute path, else ~/.local/share (the XDG Base Directory
    Specification: a relative value is invalid and ignored)."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".local" / "share"


def gui_launcher() -> Path:
    """The executable that starts this installation's app: the bundle's own executable when
    frozen (PyInstaller), else `cpt-studio-gui` beside this Python, else on PATH.

    Raises FileNotFoundError with the fix when there is none."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable)
    name = "cpt-studio-gui.exe" if os.name == "nt" else "cpt-studio-gui"
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which("cpt-studio-gui")
    if found:
        return Path(found)
    raise FileNotFoundError("cpt-studio-gui is not installed beside this Python nor on PATH; "
                            "install CPT Studio with pip, pipx or uv first")


def desktop_files(home: Path | None = None) -> dict[str, Path]:
    """Where `install` puts each file: {"entry", "metainfo", "svg", "png-<size>"} -> path."""
    home = home or data_home()
    icons = home / "icons" / "hicolor"
    files = {"entry": home / "applications" / f"{APP_ID}.desktop",
             "metainfo": home / "metainfo" / f"{APP_ID}.metainfo.xml",
             "svg": icons / "scalable" / "apps" / f"{APP_ID}.svg"}
    files.update({f"png-{size}": icons / f"{size}x{size}" / "apps" / f"{APP_ID}.png" for size in ICON_SIZES})
    return files


def install_desktop_entry(home: Path | None = None) -> dict[str, Path]:
    """Write the desktop entry (Exec = this installation's launcher), icons and metadata.

    Returns desktop_files(home). Raises RuntimeError on a platform without freedesktop menus."""
    if not sys.platform.startswith(("linux", "freebsd")):
        raise RuntimeError("desktop entries are a Linux desktop feature; on macOS and Windows use the "
                           "app bundle (packaging/README.md) or start `cpt-studio-gui`")
    launcher = gui_launcher()  # before anything is written: it may not exist
    targets = desktop_files(home)
    for target in targets.values():
        target.parent.mkdir(parents=True, exist_ok=True)
    entry = resource_path(f"{APP_ID}.desktop", package=DESKTOP_PACKAGE).read_text(encoding="utf-8")
    entry = entry.replace("Exec=cpt-studio-gui", f"Exec={_exec_arg(launcher)}")
    # The window's WM_CLASS instance is the program's file name (Qt: argv[0]).
    entry = entry.replace("StartupWMClass=cpt-studio-gui", f"StartupWMClass={launcher.stem}")
    targets["entry"].write_text(entry, encoding="utf-8")
    shutil.copyfile(resource_path(f"{APP_ID}.metainfo.xml", package=DESKTOP_PACKAGE), targets["metainfo"])
    shutil.copyfile(resource_path("cpt-studio.svg", package=ICON_PACKAGE), targets["svg"])
    for size in ICON_SIZES:
        shutil.copyfile(resource_path(f"cpt-studio-{size}.png", package=ICON_PACKAGE), targets[f"png-{size}"])
    return targets


def uninstall_desktop_entry(home: Path | None = None) -> list[Path]:
    """Remove what install_desktop_entry wrote; returns the files that were there."""
    removed = []
    for target in desktop_files(home).values():
        if target.exists():
            target.unlink()
            removed.append(target)
    return removed


def _exec_arg(path: Path) -> str:
    """A path as the program of a desktop entry's Exec key (Desktop Entry Specification, "The
    Exec key"): quoted when it holds a reserved character, with `"`, backtick, `$` and
    backslash escaped inside the quotes, and `%` doubled (a lone % starts a field code). The
    key's value is then a string, whose own escaping doubles each backslash once more."""
    text = str(path).replace("%", "%%")
    if any(c in EXEC_RESERVED for c in text):
        text = '"' + "".join("\\" + c if c in '"`$\\' else c for c in text) + '"'
    return text.replace("\\", "\\\\")


EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
"""Characters that make an Exec argument need quotes (Desktop Entry Specification)."""
