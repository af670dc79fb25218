"""The import structure: every module imports, commands import no other command, and the pipeline
package has no import cycle (function-level imports included: they only hide a cycle)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (never executed, so no runtime dependency)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for n in ast.walk(node))
    return hidden


def _own_module(name: str) -> str | None:
    """`name` or its nearest parent among this repository's modules (None: a library)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """This repository's modules that `module` imports anywhere in its body (functions included)."""
    tree = ast.parse(MODULES[module].read_text())
    hidden = _type_checking_only(tree)
    targets: list[str] = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from pipeline.commands import fit` imports the module fit
                sub = f"{node.module}.{alias.name}"
                targets.append(sub if sub in MODULES else node.module)
    return {t for t in map(_own_module, targets) if t is not None and t != module}


def import_graph(prefix: str) -> nx.DiGraph:
    graph = nx.DiGraph()
    for module in MODULES:
        if module == prefix or module.startswith(prefix + "."):
            graph.add_node(module)
            graph.add_edges_from((module, t) for t in imports_of(module) if t.startswith(prefix))
    return graph


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_the_scan_sees_function_level_imports() -> None:
    """The checks below are only as good as the scan: it must see imports inside functions and
    `from package import module`, and skip those only a type checker reads."""
    assembly = MODULES["pipeline.assembly"].read_text()
    assert "\n    from stages.factory import" in assembly and "stages.factory" in imports_of(
        "pipeline.assembly"
    )
    assert "pipeline.commands.watch" in imports_of("pipeline.cli")  # from pipeline.commands import watch
    assert "pipeline.sinks.sqlite" not in imports_of("pipeline.sinks.base")  # under TYPE_CHECKING only


def test_no_command_imports_another() -> None:
    commands = [m for m in MODULES if m.startswith("pipeline.commands.")]
    assert {"pipeline.commands.fit", "pipeline.commands.eval", "pipeline.commands.watch"} <= set(commands)
    offenders = {
        m: sorted(t for t in imports_of(m) if t.startswith("pipeline.commands.") or t == "pipeline.cli")
        for m in commands
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_pipeline_package_has_no_import_cycle() -> None:
    cycles = [" -> ".join(c) for c in nx.simple_cycles(import_graph("pipeline"))]
    assert cycles == []
