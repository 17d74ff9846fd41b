"""The run folder has one model (cpt_studio.core.run_folder): no other module of the package
spells the name of a run's file or builds a checkpoint's path by hand.

The scan reads the source of cpt_studio.core and cpt_studio.gui with `ast`: every string
constant and every f-string (its constant parts, a `{}` for each value) that is not a
docstring. A name with a dot or a dash (config.json, checkpoint-) is found anywhere in a
string, as a whole name (tokenizer_config.json is not config.json); a plain word (eval,
checkpoints, logs...) only where a path is built: beside a `/`, as an argument of Path() or
joinpath(), or as a part of a slash-separated string. The names come from the module itself
(RUN_FILES), so a new run file is covered as soon as it is declared there. Nor does any
module import what run_folder defines from another module (no re-export stands in for it).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import cpt_studio.core
import cpt_studio.core.run_folder as run_folder
import cpt_studio.gui
from cpt_studio.core.run_folder import (
    CHECKPOINT_PREFIX,
    HELDOUT_SUFFIX,
    RUN_FILES,
    RunPaths,
    checkpoint_config,
    checkpoint_dirname,
    checkpoint_folder,
    checkpoint_label,
    checkpoint_step,
    last_checkpoint,
    list_checkpoints,
)

PACKAGE_ROOT = Path(cpt_studio.core.__file__).resolve().parent.parent
HOME = "core/run_folder.py"

ALLOWED = {
    ("core/models.py", "config.json"): "a HF model folder's own config.json",
    ("core/preflight.py", "config.json"): "the base model folder's config.json (max_position_embeddings)",
    ("core/export.py", "README.md"): "the model card of an exported checkpoint",
    ("core/interpolate.py", "README.md"): "the model card of an exported interpolated model",
    ("gui/help.py", "README.md"): "the repository's README",
    ("core/desktop.py", "README.md"): "the packaging folder's README",
}
"""(module, run file name) -> why that module may spell it: the same word for something that
is not a run's file."""


PATH_CALLS = {"Path", "PurePath", "PurePosixPath", "PureWindowsPath", "joinpath", "with_name", "join"}


def _is_path_word(name: str) -> bool:
    return "." not in name and "-" not in name


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring nodes: the first string of a module, class or function, and the
    attribute docstrings (a bare string statement) anywhere."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found.add(id(node.value))
    return found


def _path_operands(tree: ast.AST) -> set[int]:
    """ids of the strings that take part in building a path: either side of `/`, or an
    argument of Path(), joinpath(), with_name() or os.path.join()."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found.update({id(node.left), id(node.right)})
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in PATH_CALLS:
                found.update(id(arg) for arg in node.args)
    return found


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _spelled(text: str, name: str, in_path: bool) -> bool:
    if _is_path_word(name):
        return (in_path and text == name) or ("/" in text and name in text.split("/"))
    tail = "" if name == CHECKPOINT_PREFIX else r"(?![\w])"
    return re.search(rf"(?<![\w.-]){re.escape(name)}{tail}", text) is not None


def run_file_spellings(source: str, names: tuple[str, ...] = RUN_FILES) -> list[tuple[int, str, str]]:
    """(line, run file name, the string) for each string of `source` that spells a run file."""
    tree = ast.parse(source)
    docstrings, in_path = _docstrings(tree), _path_operands(tree)
    in_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found = []
    for node in ast.walk(tree):
        text = _text(node)
        if text is None or id(node) in docstrings or id(node) in in_fstrings:
            continue
        found += [(node.lineno, name, text) for name in names if _spelled(text, name, id(node) in in_path)]
    return found


OWN_NAMES = {name for name, value in vars(run_folder).items()
             if getattr(value, "__module__", None) == run_folder.__name__ or name.isupper()}
"""What run_folder defines: RunPaths, the checkpoint helpers, the names."""


def imports_from_elsewhere(source: str) -> list[tuple[int, str, str]]:
    """(line, name, module) for each run_folder name that `source` imports from another module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").rsplit(".", 1)[-1] != "run_folder":
            found += [(node.lineno, a.name, node.module or ".") for a in node.names if a.name in OWN_NAMES]
    return found


def _modules() -> list[Path]:
    folders = [Path(cpt_studio.core.__file__).parent, Path(cpt_studio.gui.__file__).parent]
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def test_no_module_but_run_folder_spells_a_run_file():
    problems, used = [], set()
    for path in _modules():
        module = path.resolve().relative_to(PACKAGE_ROOT).as_posix()
        if module == HOME:
            continue
        for line, name, text in run_file_spellings(path.read_text(encoding="utf-8")):
            if (module, name) in ALLOWED:
                used.add((module, name))
            else:
                problems.append(f"{module}:{line}: {text!r} spells {name!r}")
    assert not problems, ("use cpt_studio.core.run_folder (RunPaths, checkpoint_dirname...) "
                          "instead:\n" + "\n".join(problems))
    assert used == set(ALLOWED), f"allowed but no longer spelled, remove: {set(ALLOWED) - used}"


def test_run_folder_names_are_imported_from_run_folder():
    problems = []
    for path in _modules():
        module = path.resolve().relative_to(PACKAGE_ROOT).as_posix()
        problems += [f"{module}:{line}: {name} from {source}"
                     for line, name, source in imports_from_elsewhere(path.read_text(encoding="utf-8"))]
    assert not problems, "import these from cpt_studio.core.run_folder:\n" + "\n".join(problems)


def test_the_import_check_finds_a_planted_import():
    assert imports_from_elsewhere("from .runs import RunPaths, create_run") == [(1, "RunPaths", "runs")]
    assert imports_from_elsewhere("from cpt_studio.core.generate import checkpoint_folder")
    assert imports_from_elsewhere("from .run_folder import RunPaths\nfrom .runs import create_run") == []


def test_the_scan_covers_the_whole_package():
    modules = {p.resolve().relative_to(PACKAGE_ROOT).as_posix() for p in _modules()}
    assert {HOME, "core/training.py", "core/testing/compare_runs.py", "gui/checkpoint_actions.py"} <= modules


@pytest.mark.parametrize("snippet, names", [
    ('folder = Path(run_dir) / "checkpoints" / f"checkpoint-{step}"', {"checkpoints", CHECKPOINT_PREFIX}),
    ('GUARD_FILE = "guard.json"', {"guard.json"}),
    ('shutil.copy(config, staged / "run_config.json")', {"run_config.json"}),
    ('print(f"see {run_dir}/logs/worker.log")', {"logs", "worker.log"}),
    ('label = "base" if step == 0 else f"checkpoint-{step}"', {CHECKPOINT_PREFIX}),
    ('folder = Path(run_dir, "eval")', {"eval"}),
    ('path = os.path.join(run_dir, "heldout", name + ".jsonl")', {"heldout"}),
    ('raise ValueError(f"{root} is not a run folder (no config.json)")', {"config.json"}),
])
def test_the_scan_finds_a_planted_spelling(snippet, names):
    assert {name for _, name, _ in run_file_spellings(snippet)} == names


@pytest.mark.parametrize("snippet", [
    'interval = config.get("eval", {}).get("interval"); keep = config["checkpoints"]["keep"]',
    'events.emit("eval", step); guard_stop = decision.action == "stop"',
    'def f():\n    """Writes logs/worker.log and checkpoints/checkpoint-N/run_config.json."""',
    'path = folder / "tokenizer_config.json"; card = tmp / "adapter_config.json"',
    'parser.add_parser("report", help="write RUN/report: Markdown, JSON and a chart")',
    'EVENT_TYPES = ("step", "eval", "checkpoint", "guard")',
])
def test_the_scan_leaves_other_words_alone(snippet):
    assert run_file_spellings(snippet) == []


def _every_path(paths: RunPaths) -> dict[str, Path]:
    """Each path RunPaths gives: its properties, and its methods of one step or corpus name."""
    found = {}
    for name, member in vars(RunPaths).items():
        if isinstance(member, property):
            found[name] = getattr(paths, name)
        elif inspect.isfunction(member) and not name.startswith("_"):
            params = list(inspect.signature(member).parameters.values())[1:]
            sample = {"int": 7, "str": "domain"}.get(params[0].annotation) if len(params) == 1 else None
            result = member(paths, sample) if sample is not None else None
            if isinstance(result, Path):
                found[name] = result
    return found


def test_every_path_of_a_run_is_made_of_declared_names(tmp_path):
    paths = RunPaths(tmp_path)
    found = _every_path(paths)
    assert {"config", "checkpoint", "heldout", "claim", "report_chart", "tokenizer_record"} <= set(found)
    own = set(RUN_FILES) | {checkpoint_dirname(7), f"domain{HELDOUT_SUFFIX}"}
    for name, path in found.items():
        assert path.is_relative_to(tmp_path) and path != tmp_path, name
        undeclared = [part for part in path.relative_to(tmp_path).parts if part not in own]
        assert not undeclared, f"RunPaths.{name} uses {undeclared}, not in run_folder.RUN_FILES"
    assert len({str(p) for p in found.values()}) == len(found), "two RunPaths members give one path"


def test_run_files_are_the_modules_declared_names():
    declared = {value for name, value in vars(run_folder).items()
                if name.isupper() and isinstance(value, str) and name != "HELDOUT_SUFFIX"}
    assert declared == set(RUN_FILES)


def test_checkpoints_are_found_by_step_and_named_for_people(tmp_path):
    paths = RunPaths(tmp_path)
    for step in (20, 3, 100):
        paths.checkpoint(step).mkdir(parents=True)
    paths.staged_checkpoint(120).mkdir(parents=True)  # not complete: never listed
    (paths.checkpoints / "checkpoint-x").mkdir()
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [3, 20, 100]
    assert last_checkpoint(tmp_path) == paths.checkpoint(100) == tmp_path / "checkpoints" / "checkpoint-100"
    assert checkpoint_folder(tmp_path, 20) == paths.checkpoint(20)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 5 \(kept: 3, 20, 100\)"):
        checkpoint_folder(tmp_path, 5)
    assert (checkpoint_label(0), checkpoint_label(20), checkpoint_dirname(0)) == \
        ("base model", "checkpoint-20", "checkpoint-0")
    assert RunPaths.of_checkpoint(paths.checkpoint(20)) == paths
    assert checkpoint_config(paths.checkpoint(20)) == paths.checkpoint(20) / "run_config.json"
    assert paths.relative(paths.eval_log) == "logs/eval.log"
    assert last_checkpoint(tmp_path / "nothing") is None
