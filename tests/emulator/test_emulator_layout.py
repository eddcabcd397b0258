"""The emulator's module layout: no import cycles, and nothing from the library core.

The emulator plays the server the library is tested against, so it must not share code with
the client; and an import cycle (as ``_cluster`` <-> ``_process`` once had) makes import order
matter and hides which module owns what. Every import counts, even one inside a function or
under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import pathlib

import alternator_shm.emulator

PACKAGE = "alternator_shm.emulator"
ROOT = pathlib.Path(alternator_shm.emulator.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
        graph[name] = {e for e in edges if e == "alternator_shm" or e.startswith("alternator_shm.")}
    return graph


def test_emulator_imports_nothing_from_the_library_core() -> None:
    for module, edges in _imports().items():
        outside = sorted(e for e in edges if e != PACKAGE and not e.startswith(PACKAGE + "."))
        assert outside == [], f"{module} imports {outside}"


def test_emulator_has_no_import_cycle() -> None:
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if dep == PACKAGE and module != PACKAGE:
                continue  # "from alternator_shm.emulator import _x" names a submodule
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_readme_lists_exactly_the_accepted_profiles_and_backends() -> None:
    """Profiles documented = profiles accepted; the same for storage backends."""
    import re

    from alternator_shm.emulator import PROFILES
    from alternator_shm.emulator._cluster import BACKENDS

    text = (ROOT / "README.md").read_text()
    profiles = text.split("### Profiles", 1)[1].split("###", 1)[0]
    rows = [line for line in profiles.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert documented == set(PROFILES)
    backends = text.split("### Storage backends", 1)[1]
    table = backends.split("\n\n", 2)[1]
    listed = {row.split("|")[1].strip().strip("`") for row in table.splitlines()[2:]}
    assert listed == set(BACKENDS)
