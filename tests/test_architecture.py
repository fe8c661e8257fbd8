"""The package's shape: no import cycles, no import against the layer order, small modules, a small report.

Every import of every module is read with :mod:`ast`, function-local ones included; imports under
``if TYPE_CHECKING:`` are left out (they never run). A module's layer is that of the longest prefix
of its name listed in :data:`LAYERS`; a module may import its own layer and the layers below it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tempo_lens"

# Lowest first. Names are relative to tempo_lens ("" is tempo_lens/__init__.py, the lazy public API).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("errors", "hook_cache", "io", "lookup", "text", "validation")),
    ("layout", ("layout", "position_source", "siblings", "schedules")),
    ("model", ("backends", "models")),
    ("hooks", ("hooks", "hook_context", "capture")),
    ("generation", ("activation_cache", "generation", "pruning", "replaying")),
    ("experiment", ("experiment",)),
    ("analysis", ("analysis",)),
    ("figures", ("figures", "views", "tools")),
    ("report", ("report",)),
    ("app", ("app", "cli", "")),
)
MAX_MODULE_LINES = 500
MAX_REPORT_LINES = 2500


def module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """``dotted name -> (path, is a package)`` for every ``.py`` file under ``root`` (a package folder)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        names[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (i for child in node.orelse for i in _runtime_imports(ast.Module(body=[child], type_ignores=[])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def _known(name: str, known: Mapping[str, object]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, is_package: bool, source: str, known: Mapping[str, object], packages: bool = False) -> set[str]:
    """The modules of ``known`` that module ``name`` imports anywhere in ``source`` (function bodies included);
    ``packages``: also the packages Python runs first (:func:`_enclosing_packages`)."""
    top = next(iter(known)).split(".")[0]
    found = set()
    for node in _runtime_imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
        for target in targets:
            if target.split(".")[0] == top and (resolved := _known(target, known)) and resolved != name:
                found.add(resolved)
                if packages:
                    found.update(_enclosing_packages(resolved, name, top))
    return found


def _enclosing_packages(target: str, importer: str, top: str) -> set[str]:
    """The packages Python runs before ``target`` when ``importer`` imports it: each enclosing package of ``target`` below
    ``top`` that does not also enclose ``importer`` (those are already running)."""
    parts = target.split(".")
    return {
        package
        for package in (".".join(parts[:i]) for i in range(2, len(parts)))
        if not (importer == package or importer.startswith(package + "."))
    }


def missing_imports(root: Path) -> list[tuple[str, str]]:
    """``(module, imported name)`` for every import of a package module that does not exist (mypy cannot see these:
    it is configured to ignore missing imports)."""
    known = module_names(root)
    top = root.name
    missing = []
    for name, (path, is_package) in known.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                modules = [".".join(base + ([node.module] if node.module else []))]
            else:
                modules = [node.module or ""]
            missing += [(name, m) for m in modules if m.split(".")[0] == top and m not in known]
    return missing


def import_graph(root: Path, packages: bool = False) -> dict[str, set[str]]:
    """``module -> the package's modules it imports`` (``packages``: and the packages their import runs first)."""
    known = module_names(root)
    return {
        name: imports_of(name, is_package, path.read_text(), known, packages) for name, (path, is_package) in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> int | None:
    """The index in ``layers`` of the longest listed prefix of ``module`` (relative to the top package)."""
    relative = module.partition(".")[2]
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for rank, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if relative == prefix or (prefix and relative.startswith(prefix + ".")) or (not prefix and not relative):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank)
    return None if best is None else best[1]


def against_layers(graph: Mapping[str, set[str]], layers=LAYERS) -> list[tuple[str, str]]:
    """Every import ``(importer, imported)`` whose target sits in a higher layer than its importer."""
    return sorted(
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if (la := layer_of(a, layers)) is not None and (lb := layer_of(b, layers)) is not None and lb > la
    )


def line_counts(root: Path) -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, (path, _) in module_names(root).items()}


# The checker on small made-up packages: it must be able to fail.


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    root = _package(tmp_path, {"a.py": "from . import b\n", "b.py": "def f():\n    from .a import x\n", "c.py": "import pkg.a\n"})
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_checker_finds_a_cycle_through_a_package_that_runs_first(tmp_path):
    """``a`` imports ``sub.b``: Python runs ``sub/__init__`` first, which imports ``sub.c``, which imports ``a``."""
    root = _package(
        tmp_path,
        {"a.py": "from .sub.b import x\n", "sub/__init__.py": "from .c import y\n", "sub/b.py": "x = 1\n", "sub/c.py": "from ..a import z\n"},
    )
    assert cycles(import_graph(root)) == []
    assert cycles(import_graph(root, packages=True)) == [["pkg.a", "pkg.sub", "pkg.sub.c"]]


def test_the_checker_leaves_out_type_checking_imports_only(tmp_path):
    root = _package(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nelse:\n    from .c import C\n",
            "b.py": "",
            "c.py": "",
            "sub/__init__.py": "",
            "sub/d.py": "from ..a import x\nfrom .. import b\n",
        },
    )
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.c"} and graph["pkg.sub.d"] == {"pkg.a", "pkg.b"} and cycles(graph) == []


def test_the_checker_finds_an_import_against_the_layer_order(tmp_path):
    root = _package(tmp_path, {"low.py": "from .high.top import x\n", "high/__init__.py": "", "high/top.py": "from ..low import y\n"})
    layers = (("bottom", ("low",)), ("top", ("high",)))
    graph = import_graph(root)
    assert against_layers(graph, layers) == [("pkg.low", "pkg.high.top")]
    assert layer_of("pkg.high.top", layers) == 1 and layer_of("pkg.elsewhere", layers) is None


# The package itself.


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE)


def test_every_import_of_a_package_module_exists():
    assert missing_imports(PACKAGE) == []


def test_the_checker_finds_an_import_of_a_module_that_is_gone(tmp_path):
    root = _package(tmp_path, {"a.py": "def f():\n    from .gone import x\n"})
    assert missing_imports(root) == [("pkg.a", "pkg.gone")]


def test_no_import_cycles():
    """Counting the packages an import runs first: a cycle through a package ``__init__`` fails a fresh interpreter too."""
    assert cycles(import_graph(PACKAGE, packages=True)) == []


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if layer_of(m) is None] == []


def test_no_import_against_the_layer_order(graph):
    assert against_layers(graph) == []


def test_no_module_over_500_lines():
    assert {m: n for m, n in line_counts(PACKAGE).items() if n > MAX_MODULE_LINES} == {}


def test_the_report_renders_in_at_most_2500_lines():
    report = sum(n for m, n in line_counts(PACKAGE).items() if m == "tempo_lens.report" or m.startswith("tempo_lens.report."))
    assert report <= MAX_REPORT_LINES


def test_each_package_says_what_it_holds_and_may_import():
    packages = [path for path, is_package in module_names(PACKAGE).values() if is_package and path.parent != PACKAGE]
    missing = [str(p.relative_to(PACKAGE)) for p in packages if "May import" not in (ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert missing == []


PRAGMA = re.compile(r"(noqa(:\s*[A-Z0-9, ]+)?|type:\s*ignore(\[[^\]]*\])?)")


def _says_why(line: str) -> bool:
    """Whether ``line`` carries a comment beyond lint pragmas (``noqa``, ``type: ignore``)."""
    if "#" not in line:
        return False
    comment = line[line.index("#") :]
    return bool(PRAGMA.sub("", comment).strip("# \t()"))


def unexplained_local_imports(root: Path) -> list[str]:
    """``path:line`` of each function-local import with no comment (its line or the one above) saying why it is local."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                    if not (_says_why(lines[node.lineno - 1]) or (above.startswith("#") and _says_why(above))):
                        found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return sorted(set(found))


def test_the_checker_finds_a_local_import_without_a_reason(tmp_path):
    root = _package(
        tmp_path,
        {
            "a.py": "def f():\n    import json\n",
            "b.py": "def f():\n    import torch  # deferred: torch\n",
            "c.py": "def f():\n    # deferred: torch\n    import torch\n",
            "d.py": "def f():\n    import json  # noqa: F401\n",
        },
    )
    assert unexplained_local_imports(root) == ["pkg/a.py:2", "pkg/d.py:2"]


def test_every_function_local_import_says_why():
    """docs/conventions.md: a function-local import defers a heavy dependency (or breaks a cycle) and says which."""
    assert unexplained_local_imports(PACKAGE) == []
