"""The house's layering, read from the package's own imports (``ast``, nothing imported): no module
imports one of a higher layer, and no import cycle, so neither can come back unnoticed.

Every import counts, also one inside a function (a lazy import is still a dependency); only imports
under ``if TYPE_CHECKING:`` (annotations, never run) are left out. A new module must be put in a
layer below: the test fails naming it until it is.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_model_registry"

#: The layers, lowest first; a module may import its own layer and those below. Names are relative
#: to the package ("" is the package's ``__init__``); ``*`` matches within a subpackage.
LAYERS: list[tuple[str, list[str]]] = [
    ("the format (errors, version names, metadata rules)", ["errors", "versioning", "metadata", "tokens"]),
    ("storage (where bytes live)", ["storage", "storage.*"]),
    (
        "the registry (what a version is, discovery, caching, publishing)",
        [
            "snapshot",
            "pickle_scan",
            "pickle_allow",
            "loading",
            "audit",
            "events",
            "signing",
            "approvals",
            "rules",
            "models",
            "registry",
        ],
    ),
    (
        "above the registry (capabilities built on it)",
        [
            "routing",
            "lifecycle",
            "trail",
            "answers",
            "rollout",
            "timeline",
            "webhooks",
            "webhooks.message",
            "webhooks.send",
            "webhooks.cursor",
            "webhooks.worker",
            "webhooks.ops",
        ],
    ),
    ("Flask glue (typed config, the app's registries)", ["config", "context", "access"]),
    (
        "adapters (HTTP API, CLI, console, monitoring)",
        [
            "api",
            "monitoring",
            "metrics",
            "cli",
            "cli_group",
            "audit_cli",
            "signing_cli",
            "lifecycle_cli",
            "timeline_cli",
            "token_cli",
            "webhooks.cli",
            "ui",
            "ui.*",
        ],
    ),
    ("the extension, which mounts the adapters on an app", ["extension"]),
    ("the package's public face", [""]),
]


def module_names(package: Path) -> dict[str, Path]:
    """Every module of ``package`` by its name relative to it (``storage.base``; ``""``: the package)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path, modules: dict[str, Path], top: str) -> set[str]:
    """The package's modules that module ``name`` (at ``path``) imports when it runs."""
    here = name.split(".") if name else []
    anchor = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_inside(alias.name, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                start = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*start, *(node.module.split(".") if node.module else [])])
            elif node.module:
                base = _inside(node.module, top)
            else:
                continue
            for alias in node.names:  # "from .a import b": the module a.b if there is one, else a
                submodule = f"{base}.{alias.name}".lstrip(".")
                found.add(submodule if submodule in modules else base)
    return {target for target in found if target in modules and target != name}


def _inside(dotted: str, top: str) -> str:
    """``dotted`` relative to the package ``top`` ("" for the package), or ``dotted`` itself if outside."""
    if dotted == top:
        return ""
    return dotted.removeprefix(top + ".") if dotted.startswith(top + ".") else f"<outside>{dotted}"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module name → the package's modules it imports."""
    modules = module_names(package)
    return {name: imports_of(name, path, modules, package.name) for name, path in modules.items()}


def layer_of(name: str, layers: list[tuple[str, list[str]]]) -> int | None:
    for index, (_, patterns) in enumerate(layers):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return index
    return None


def layering_problems(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]]) -> list[str]:
    """Modules in no layer, and each import of a module from a higher layer."""
    problems = [
        f"{name or '(package)'} is in no layer: add it to LAYERS in tests/test_layering.py"
        for name in sorted(graph)
        if layer_of(name, layers) is None
    ]
    for name, imported in sorted(graph.items()):
        level = layer_of(name, layers)
        for target in sorted(imported):
            above = layer_of(target, layers)
            if level is not None and above is not None and above > level:
                problems.append(
                    f"{name or '(package)'} ({layers[level][0]}) imports {target} ({layers[above][0]})"
                )
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: each strongly connected group of two or more modules
    (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_imports_a_higher_layer():
    assert layering_problems(import_graph(PACKAGE), LAYERS) == []


def test_no_import_cycle():
    assert cycles(import_graph(PACKAGE)) == []


def test_the_three_cycles_that_were_cut_stay_cut():
    graph = import_graph(PACKAGE)
    assert "routing" in graph["config"] and "registry" in graph["routing"]  # the graph sees imports
    assert "routing" not in graph["registry"], "the registry builds no router itself"
    assert "cli" not in graph["audit_cli"], "a module of subcommands does not import the group's module"
    assert not any(m.startswith("storage") for m in graph["metadata"]), "metadata rules need no storage"


@pytest.fixture
def tangled(tmp_path: Path) -> Path:
    """A package with an upward import hidden in a function, a cycle, a type-only import, and a
    module in no layer."""
    package = tmp_path / "tangled"
    (package / "store").mkdir(parents=True)
    files = {
        "__init__.py": "from .core import Core\n",
        "store/__init__.py": "from .disk import Disk\n",
        "store/disk.py": "def f():\n    from ..core import Core\n",
        "core.py": "from typing import TYPE_CHECKING\nfrom . import store\nfrom .plugin import hook\n"
        "if TYPE_CHECKING:\n    from .app import App\n",
        "plugin.py": "import tangled.core\nhook = 1\n",
        "app.py": "from tangled import core\n",
        "stray.py": "",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    return package


def test_the_checks_catch_upward_imports_cycles_and_unplaced_modules(tangled: Path):
    layers = [("store", ["store", "store.*"]), ("core", ["core", "plugin"]), ("app", ["app", ""])]
    graph = import_graph(tangled)
    assert graph["core"] == {"store", "plugin"}, "a TYPE_CHECKING import is not a dependency"
    assert graph["app"] == {"core"} and graph["plugin"] == {"core"} and graph["store"] == {"store.disk"}
    assert layering_problems(graph, layers) == [
        "stray is in no layer: add it to LAYERS in tests/test_layering.py",
        "store.disk (store) imports core (core)",
    ]
    assert cycles(graph) == [["core", "plugin", "store", "store.disk"]]
