"""The help of every RunConfig setting, read from the docstrings under its fields in
core/config.py (and core/corpus.py's SourceSpec): the one source of the command line's option
help, `cpt-studio settings` and the wizard's tooltips.

    setting_help("schedule.peak_lr")   # 'Peak learning rate. CPT wants it low: ...'
    settings()["batch.seq_len"]        # Setting(path, type 'int', default 1024, help '...')
    print(format_settings("lora"))     # what `cpt-studio settings lora` prints

A list of sources or evaluation sets has its items' fields under `[]`: `corpus.domain[].text_field`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import sys
import textwrap
import typing
from dataclasses import dataclass

from .config import RunConfig

REQUIRED = object()
"""The default of a setting that has none (an item's `path` must always be given)."""


@dataclass(frozen=True)
class Setting:
    """One setting of a config file."""

    path: str
    """Its dotted path in a config file, e.g. schedule.peak_lr or corpus.domain[].text_field."""
    type: str
    """Its annotation as written in the source, e.g. 'int | None'."""
    default: object
    """Its default value, or REQUIRED."""
    help: str
    """The field's docstring as one paragraph; empty where the source files are missing."""


def attribute_docstrings(cls: type) -> dict[str, str]:
    """{field name: the string literal right below it} for a dataclass, whitespace collapsed.
    A field without one is absent. Empty when the module's source cannot be read: a
    PyInstaller bundle ships compiled modules only, and help is then missing, not an error."""
    # Python compiles a string literal under an assignment to nothing: unlike a class's
    # docstring it is in neither __doc__ nor dataclasses.fields(). Only the source has it.
    node = _class_nodes(cls.__module__).get(cls.__qualname__)
    if node is None:
        return {}
    docs, body = {}, node.body
    for statement, following in zip(body, body[1:], strict=False):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = _paragraph(following.value.value)
    return docs


def _paragraph(text: str | None) -> str:
    return " ".join((text or "").split())


@functools.cache
def _class_nodes(module_name: str) -> dict[str, ast.ClassDef]:
    """The module's top-level classes by name, from its source parsed once."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    except (OSError, TypeError):  # no source: a frozen bundle
        return {}
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


@functools.cache
def settings() -> dict[str, Setting]:
    """Every setting of a RunConfig, leaves only, in the order of the dataclasses' fields."""
    found: dict[str, Setting] = {}
    _collect(RunConfig, "", found)
    return found


@functools.cache
def sections() -> dict[str, str]:
    """{section name, e.g. 'schedule': its class docstring as one paragraph}."""
    hints = typing.get_type_hints(RunConfig)
    return {f.name: _paragraph(hints[f.name].__doc__)
            for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])}


def _collect(cls: type, prefix: str, found: dict[str, Setting]) -> None:
    hints, docs = typing.get_type_hints(cls), attribute_docstrings(cls)
    for f in dataclasses.fields(cls):
        path, hint = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(hint):  # a section: its fields are the settings
            _collect(hint, path + ".", found)
            continue
        found[path] = Setting(path, _annotation(f.type), _default(f), docs.get(f.name, ""))
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(item):  # corpus.domain[].path, eval.sets[].name ...
            _collect(item, path + "[].", found)


def _annotation(annotation) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def setting(path: str) -> Setting:
    """The setting at a dotted path; LookupError naming the known paths that look alike."""
    try:
        return settings()[path]
    except KeyError:
        leaf = path.rsplit(".", 1)[-1]
        alike = [p for p in settings() if p.rsplit(".", 1)[-1] == leaf] or list(settings())[:5]
        raise LookupError(f"{path!r} is not a setting of a run config; did you mean "
                          f"{', '.join(alike)}? (`cpt-studio settings` lists them all)") from None


def setting_help(path: str) -> str:
    """The docstring of the field at `path`, one paragraph ("" without source files)."""
    return setting(path).help


def option_help(path: str, default: str | None = None) -> str:
    """The help of a command-line option that sets the RunConfig field at `path`: the field's
    docstring, the field's path, and `default` (else the field's default; a {} in it stands for
    the field's default), with % escaped for argparse."""
    found = setting(path)
    default = (default or "default {}").replace("{}", format_default(found.default))
    text = f"{found.help} ({path} in a config file; {default})".strip()
    return text.replace("%", "%%")  # argparse formats help with %


def undocumented() -> list[str]:
    """The settings whose field has no docstring (empty when the source cannot be read)."""
    if not any(s.help for s in settings().values()):
        return []  # no source at all: nothing can be told apart
    return [path for path, s in settings().items() if not s.help]


def format_default(value) -> str:
    """A default as a user types it in a config file: 2e-05, true, "text", [], unset."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value)


def find_settings(query: str = "") -> list[Setting]:
    """The settings whose path or help contains `query` (any case), in RunConfig's order."""
    word = query.lower()
    return [s for s in settings().values() if word in s.path.lower() or word in s.help.lower()]


def format_settings(query: str = "") -> str:
    """find_settings(query) grouped by section, each with its path, type, default and help:
    what `cpt-studio settings [WORD]` prints."""
    chosen = find_settings(query)
    if not chosen:
        return f"no setting's name or help contains {query!r}"
    lines, section = [], None
    for s in chosen:
        name = s.path.split(".", 1)[0] if "." in s.path else ""
        if name != section:
            section = name
            title, words = name or "run", sections()[name] if name else _paragraph(RunConfig.__doc__)
            lines += [""] + textwrap.wrap(f"{title}: {words}", 100, subsequent_indent=" " * (len(title) + 2))
        lines.append(f"  {s.path}  ({s.type}, default {format_default(s.default)})")
        lines += textwrap.wrap(s.help, 96, initial_indent="      ", subsequent_indent="      ")
    if not any(s.help for s in chosen):
        lines.append("\n(this build has no source files to read the settings' help from)")
    return "\n".join(lines).lstrip("\n")
