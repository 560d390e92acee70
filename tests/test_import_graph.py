"""The package's import graph: no cycles, and no floor imports a floor above it (docs: README, "Module map").

Every ``import`` / ``from ... import`` of a ``safeselect`` module counts, at the
top of a file or inside a function; only imports under ``if TYPE_CHECKING:``
are left out of the cycle check (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module belongs to the floor of its longest matching prefix; it may import its own floor
# and the floors below. The run tables (reporting.runs) and plots sit below the pipeline that writes a run's
# report.md (with its report.html page: reporting.html, and the paired verdicts: reporting.comparison); the ablation tables (reporting.ablation) sit above the
# ablation runner whose files they read. safeselect.preflight (the judge/model/data checks run before any
# training) sits with the pipeline whose bundle it builds.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("safeselect.errors", "safeselect.core")),
    ("registry and config", ("safeselect.registry", "safeselect.config")),
    ("components", ("safeselect.data", "safeselect.models", "safeselect.judges", "safeselect.training")),
    ("methods", ("safeselect.selection", "safeselect.evaluation", "safeselect.selfplay")),
    ("run reports", ("safeselect.reporting.runs", "safeselect.reporting.comparison", "safeselect.reporting.plots",
                     "safeselect.reporting.html")),
    ("pipeline", ("safeselect.pipeline", "safeselect.inputs", "safeselect.preflight")),
    ("ablation", ("safeselect.ablation",)),
    ("ablation reports", ("safeselect.reporting",)),
    ("cli and Python API", ("safeselect.cli", "safeselect.api", "safeselect.__main__")),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "safeselect").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported safeselect module, under TYPE_CHECKING, line) for every import in ``path``."""
    found: list[tuple[str, bool, int]] = []

    def target(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        # The package root (``from safeselect import __version__``) is no edge: Python runs safeselect/__init__
        # before any submodule anyway, and the root loads the API lazily (PEP 562).
        return name if name and name != "safeselect" else None

    def visit(node: ast.AST, tc: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_tc = tc or _is_type_checking(child)
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("safeselect") and (t := target(a.name)):
                        found.append((t, tc, child.lineno))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").startswith("safeselect"):
                for a in child.names:  # `from safeselect.data import loaders` imports the module data.loaders
                    full = f"{child.module}.{a.name}"
                    t = full if full in modules else target(child.module or "")
                    if t:
                        found.append((t, tc, child.lineno))
            visit(child, child_tc)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _floor(module: str) -> int:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    if level is None:
        return len(FLOORS)  # the package root (safeselect/__init__.py) stands above everything
    return level


GRAPH = {m: _imports(p, _modules()) for m, p in _modules().items()}


def test_every_module_has_a_floor() -> None:
    loose = [m for m in GRAPH if m != "safeselect" and _floor(m) == len(FLOORS)]
    assert not loose, f"modules outside every floor (add them to FLOORS): {loose}"


def upward_imports(graph: dict[str, list[tuple[str, bool, int]]]) -> list[str]:
    bad = []
    for m, imports in graph.items():
        for t, _, line in imports:
            if _floor(t) > _floor(m):
                bad.append(f"{m}:{line} ({FLOORS[_floor(m)][0]}) imports {t} ({FLOORS[_floor(t)][0]})")
    return bad


def cycles(graph: dict[str, list[tuple[str, bool, int]]]) -> list[str]:
    edges = {m: sorted({t for t, tc, _ in imports if not tc and t != m}) for m, imports in graph.items()}
    found = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges.get(m, []):
            if state.get(t) == 1:
                found.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            dfs(m)
    return found


def test_no_floor_imports_a_floor_above_it() -> None:
    bad = upward_imports(GRAPH)
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(GRAPH)
    assert not found, "\n".join(found)


def test_own_imports_sit_at_the_top_of_files() -> None:
    """Function-level imports are for heavy third-party modules (torch, transformers, ...), not our own."""
    inner = []
    for m, path in _modules().items():
        if m == "safeselect":  # the package root loads the Python API on first use (PEP 562): import stays instant
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("safeselect") \
                            or isinstance(node, ast.Import) and any(a.name.startswith("safeselect") for a in node.names):
                        inner.append(f"{m}:{node.lineno}")
    assert not inner, inner


def test_the_checks_catch_a_violation() -> None:
    assert upward_imports({"safeselect.core.x": [("safeselect.cli.main", False, 1)]}) == [
        "safeselect.core.x:1 (core) imports safeselect.cli.main (cli and Python API)"]
    assert cycles({"safeselect.data.a": [("safeselect.data.b", False, 1)],
                   "safeselect.data.b": [("safeselect.data.a", False, 1)]}) == [
        "safeselect.data.a -> safeselect.data.b -> safeselect.data.a"]
    assert cycles({"safeselect.data.a": [("safeselect.data.b", True, 1)],
                   "safeselect.data.b": [("safeselect.data.a", False, 1)]}) == []  # TYPE_CHECKING never runs
