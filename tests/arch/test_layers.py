"""The import rules: each room of oebench imports only rooms of its own layer or below.

Imports inside functions count too: a lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "oebench"

#: module prefix -> layer, lowest first; a module may import its own layer and the ones below
LAYERS: dict[str, int] = {
    "oebench.errors": 0,
    "oebench.hookspecs": 0,
    "oebench.metrics": 0,
    "oebench.calibration": 0,
    "oebench.scoring": 0,
    "oebench.core": 1,
    "oebench.contracts": 2,
    "oebench.registry": 2,
    "oebench.bench": 3,
    "oebench.api": 3,
    "oebench.keys": 4,
    "oebench.execute": 5,
    "oebench.record": 5,
    "oebench.report": 6,
    "oebench.testing": 6,  # the plugin kit drives the real engine (the training loop)
    "oebench.session": 7,
    "oebench.cli": 7,
    "oebench": 7,  # the package root: the Python API
}
#: rooms of one layer that must not know each other (either way)
APART = {("oebench.execute", "oebench.record")}
#: what nothing else may import: the command line is the top
TOP = ("oebench.cli",)


def room(module: str) -> str:
    """The longest prefix of ``LAYERS`` that names ``module``'s room."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in LAYERS:
            return name
    raise KeyError(module)


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, module) of every oebench module that ``source`` imports, lazily or not."""
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "oebench":  # `from oebench import errors` names modules
                found += [(node.lineno, f"oebench.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in found if name.split(".")[0] == "oebench"]


def violations(sources: dict[str, str]) -> list[str]:
    """One line per import that breaks the rules, for ``{module name: source}``."""
    lines = []
    for module, source in sorted(sources.items()):
        mine = room(module)
        for line, target in imports(source, module):
            theirs = room(target) if target != "oebench" else "oebench"
            where = f"{module}:{line} imports {target}"
            if theirs == mine:
                continue
            if theirs in TOP:
                lines.append(f"{where}: nothing imports the command line")
            elif LAYERS[theirs] > LAYERS[mine]:
                lines.append(f"{where}: layer {LAYERS[theirs]} above {mine}'s {LAYERS[mine]}")
            elif (mine, theirs) in APART or (theirs, mine) in APART:
                lines.append(f"{where}: {mine} and {theirs} never import each other")
    return lines


def engine_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = []
    for module in engine_sources():
        try:
            room(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"add these to LAYERS (and CONTRIBUTING's table): {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    assert violations(engine_sources()) == []


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        ("oebench.core.settings", "from oebench.report.tables import comparison", True),
        ("oebench.bench.parse", "def f():\n    import oebench.execute.runner", True),
        ("oebench.execute.runner", "from oebench.record.store import ResultStore", True),
        ("oebench.record.store", "from ..execute import drive", True),
        ("oebench.report.tables", "from oebench.cli import cli", True),
        ("oebench.report.tables", "from oebench import session", True),
        ("oebench.execute.runner", "from oebench.bench.plan import make_plan", False),
        ("oebench.execute.cell", "from . import detect", False),
        ("oebench.cli.run", "from oebench.execute.drive import drive", False),
    ],
)
def test_a_planted_import_is_caught(module, source, broken):
    assert bool(violations({module: source})) is broken


def test_every_subpackage_is_packaged():
    """pyproject's explicit package list names every folder of oebench (else pip installs a
    package without it)."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert folders <= listed
