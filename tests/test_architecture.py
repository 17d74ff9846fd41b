"""The import contracts of pyproject.toml ([tool.importlinter], what `lint-imports` checks in CI)
hold for the code, and each one breaks on the import it exists to forbid; no module of core or
the GUI imports another's private names."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import grimp
import pytest
from importlinter import api
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.independence import IndependenceContract
from importlinter.contracts.layers import LayersContract

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_TYPES = {"forbidden": ForbiddenContract, "layers": LayersContract,
                  "independence": IndependenceContract, "acyclic_siblings": AcyclicSiblingsContract}
HEADLESS = "core is headless"
CLI_ABOVE = "the CLI sits above the engine"
INDEPENDENT = "the plan and the run it plans are independent"
ACYCLIC = "no import cycles"


@pytest.fixture(scope="module")
def configuration() -> dict:
    return api.read_configuration(str(ROOT / "pyproject.toml"))


@pytest.fixture(scope="module")
def graph(configuration) -> grimp.ImportGraph:
    """The import graph lint-imports builds: imports inside functions are in it too."""
    packages = configuration["session_options"]["root_packages"]
    return grimp.build_graph(*packages, include_external_packages=True, cache_dir=None)


def broken_contracts(configuration: dict, graph: grimp.ImportGraph) -> list[str]:
    names = []
    for options in configuration["contracts_options"]:
        contract = CONTRACT_TYPES[options["type"]](
            name=options["name"], session_options=configuration["session_options"],
            contract_options=options)
        if not contract.check(copy.deepcopy(graph), verbose=False).kept:
            names.append(options["name"])
    return names


def test_the_code_keeps_every_contract(configuration, graph):
    names = [c["name"] for c in configuration["contracts_options"]]
    assert [n for n in names if n.startswith((HEADLESS, CLI_ABOVE, INDEPENDENT, ACYCLIC))] == names, (
        "a contract was added or renamed: give it a case in test_each_contract_breaks_on_what_it_forbids")
    assert broken_contracts(configuration, graph) == []


@pytest.mark.parametrize(("importer", "imported", "contract"), [
    ("cpt_studio.core.plan", "cpt_studio.gui.main_window", HEADLESS),
    ("cpt_studio.core.runs", "PySide6", HEADLESS),
    ("cpt_studio.core.store", "cpt_studio.core.cli_runs", CLI_ABOVE),
    ("cpt_studio.core.testing.run_helpers", "cpt_studio.core.cli", CLI_ABOVE),
    ("cpt_studio.core.plan", "cpt_studio.core.training", INDEPENDENT),
    ("cpt_studio.core.training", "cpt_studio.core.plan", INDEPENDENT),
    ("cpt_studio.core.runs", "cpt_studio.core.training", ACYCLIC),
    ("cpt_studio.gui.checkpoint_actions", "cpt_studio.gui.main_window", ACYCLIC),
])
def test_each_contract_breaks_on_what_it_forbids(configuration, graph, importer, imported, contract):
    if contract == ACYCLIC:
        assert graph.find_shortest_chain(importer=imported, imported=importer), (
            f"{imported} no longer imports {importer}: pick a pair whose new import closes a cycle")
    changed = copy.deepcopy(graph)
    changed.add_import(importer=importer, imported=imported)
    assert any(name.startswith(contract) for name in broken_contracts(configuration, changed))


def test_a_new_core_module_must_be_placed_in_a_layer(configuration, graph):
    changed = copy.deepcopy(graph)
    changed.add_module("cpt_studio.core.new_step")
    assert any(name.startswith(CLI_ABOVE) for name in broken_contracts(configuration, changed))


def private_imports(folder: Path) -> list[str]:
    """`from .x import _name` (or from cpt_studio...) anywhere in folder's modules."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("cpt_studio")):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}"
                          for alias in node.names if alias.name.startswith("_")]
    return found


@pytest.mark.parametrize("folder", ["core", "gui"])
def test_no_module_imports_another_modules_private_names(folder):
    assert private_imports(ROOT / folder) == [], (
        "a name another module needs is public: rename it (no leading underscore) in its one home")


def test_the_repository_points_to_no_document_outside_it():
    """A clone is all a contributor has: no file names design notes that are not in it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.split()
    outside = re.compile(r"\b(DESIGN|FACTS|STYLE|UX)\.md\b|\.\./shared\b")
    found = [f"{name}:{number}" for name in files if not name.endswith((".png", ".gguf"))
             and (root / name).is_file()
             for number, line in enumerate((root / name).read_text(errors="replace").splitlines(), 1)
             if outside.search(line) and name != "tests/test_architecture.py"]
    assert found == [], "point to docs/architecture.md or the module docstring instead:\n" + "\n".join(found)
    assert (root / "docs" / "architecture.md").is_file()
    assert "docs/architecture.md" in (root / "README.md").read_text()


HF_LIBRARIES = ("transformers", "peft", "lm_eval")
ONE_THREAD = {("worker.py", "log_to_file"), ("cli_runs.py", "print_plan"), ("benchmarks.py", "_harness"),
              ("hf_imports.py", "transformers_names"), ("hf_imports.py", "imported_name")}
"""Functions that import those libraries directly: the hf_imports lock itself, and code that runs only in
a worker process or the CLI's main thread, never in a GUI job's thread."""


def test_the_hf_libraries_are_imported_in_functions_only_under_the_import_lock():
    """A function importing transformers (or peft, lm_eval: they import it) in a GUI job's thread
    raced the GUI thread's imports of its lazy names: the first "New run..." failed ("module
    'transformers' has no attribute 'get_scheduler'") while the model page scanned cached models
    (cpt_studio.core.hf_imports)."""
    found = []
    for path in sorted((ROOT / "core").glob("*.py")) + sorted((ROOT / "gui").rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                if any(n.split(".")[0] in HF_LIBRARIES for n in names) and (path.name, function.name) not in ONE_THREAD:
                    found.append(f"{path.relative_to(ROOT)}: {function.name} imports {names[0]}")
    assert found == [], "import them with hf_imports.imported_name / transformers_names instead"
