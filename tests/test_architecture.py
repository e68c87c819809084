"""The layout is the pipeline, and the code keeps to it: every import (module-level and inside functions), read
from the source with ``ast``, goes down the layer order of ``docs/index.md``; no cycles; no private name crosses a
module; every package says what it exports; no module or class grows into a monolith again."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: a package may import only packages of a lower rank (and itself); equal ranks are siblings that must not know
#: each other (data and language; execute and measurement)
LAYERS = {
    "errors": 0,
    "util": 1,
    "backend": 2,
    "data": 3, "language": 3,
    "checker": 4,
    "plan": 5,
    "execute": 6, "measurement": 6,
    "compare": 7,
    "report": 8,
    "pipeline": 9,
    "cli": 10, "__main__": 11,
}
#: the plugins see the protocol and the utilities, nothing of the pipeline
BACKENDS_MAY_IMPORT = {"backend", "errors", "util"}
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 450
MAX_TOP_LEVEL_ENTRIES = 15


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in ("moraleval", "backends"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()
TREES = {m: ast.parse(p.read_text(encoding="utf-8")) for m, p in MODULES.items()}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import of a project module, at any depth."""
    out = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name)
                if target:
                    out.append((target, "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in MODULES else _known(base)
                if target:
                    out.append((target, "" if target == full else alias.name, node.lineno))
    return [(t, n, line) for t, n, line in out if t != module]


GRAPH = {m: sorted({t for t, _, _ in _imports(m)}) for m in MODULES}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "moraleval" or len(parts) == 1:
        return None
    return parts[1]


def test_every_package_of_moraleval_has_a_layer() -> None:
    packages = {_layer(m) for m in MODULES if m.startswith("moraleval.")}
    assert packages == set(LAYERS), "give the new package a place in LAYERS (and in docs/index.md)"


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for module in MODULES:
        mine = _layer(module)
        if mine is None:
            continue
        for target, name, _line in _imports(module):
            theirs = _layer(target)
            if target.startswith("backends"):
                wrong.append(f"{module} -> {target} (the pipeline reaches backends through backend.registry only)")
            elif theirs is not None and theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{module} ({mine}) -> {target} ({theirs})")
            elif theirs is None and target == "moraleval" and name != "__version__":
                wrong.append(f"{module} -> moraleval (the lazy API is for users; import the module itself)")
    assert wrong == []


def test_backends_see_only_the_protocol_errors_and_utilities() -> None:
    wrong = [f"{m} -> {t}" for m, targets in GRAPH.items() if m.startswith("backends")
             for t in targets if t.startswith("moraleval") and _layer(t) not in BACKENDS_MAY_IMPORT]
    assert wrong == []


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in MODULES:
        if m not in index:
            visit(m)
    assert cycles == []


def test_no_private_name_crosses_a_module() -> None:
    wrong = []
    for module in MODULES:
        for target, name, line in _imports(module):
            if name.startswith("_") and not name.startswith("__"):
                wrong.append(f"{module}:{line} imports {target}.{name}")
            parts = target.split(".")
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if not (module == owner or module.startswith(owner + ".")):
                        wrong.append(f"{module}:{line} imports the private module {target}")
                    break
        for node in ast.walk(TREES[module]):  # `other_module._name` through a module object
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in _module_aliases(module)):
                wrong.append(f"{module}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert wrong == []


def _module_aliases(module: str) -> set[str]:
    """Names that stand for another project module inside ``module`` (``from x import y as z``, ``import x``)."""
    names = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    names.add(alias.asname)
    return names


def test_every_package_declares_what_it_exports() -> None:
    missing = [m for m, tree in TREES.items() if _is_package(m) and m.startswith("moraleval")
               and not any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
                           for n in tree.body)]
    assert missing == []


def test_no_monoliths() -> None:
    big_modules = [f"{m}: {len(p.read_text(encoding='utf-8').splitlines())} lines" for m, p in MODULES.items()
                   if len(p.read_text(encoding="utf-8").splitlines()) > MAX_MODULE_LINES]
    big_classes = [f"{m}.{n.name}: {n.end_lineno - n.lineno + 1} lines" for m, tree in TREES.items()
                   for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                   and n.end_lineno - n.lineno + 1 > MAX_CLASS_LINES]
    assert big_modules == [] and big_classes == []


def test_the_top_level_holds_only_what_users_and_plugins_import() -> None:
    entries = sorted(p.name for p in (REPO / "moraleval").iterdir()
                     if (p.suffix == ".py" or p.is_dir()) and p.name != "__pycache__")
    assert len(entries) <= MAX_TOP_LEVEL_ENTRIES, entries


def test_tests_mirror_the_stage_packages() -> None:
    missing = [pkg for pkg in LAYERS if pkg not in ("pipeline", "__main__")
               and not list((REPO / "tests" / pkg).glob("test_*.py"))]
    assert missing == []


def test_the_library_api_is_lazy_and_cheap() -> None:
    """``import moraleval`` loads neither numpy nor onnxruntime, and every public name resolves."""
    code = ("import sys, moraleval\n"
            "assert 'numpy' not in sys.modules and 'onnxruntime' not in sys.modules, 'heavy import'\n"
            "assert 'moraleval.pipeline' not in sys.modules\n"
            "for name in moraleval.__all__:\n"
            "    getattr(moraleval, name)\n"
            "import moraleval.checker, moraleval.measurement\n"
            "assert callable(moraleval.check) and callable(moraleval.measure) and callable(moraleval.run)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("package", sorted(p for p in LAYERS if p != "__main__"))
def test_each_package_imports_alone(package: str) -> None:
    """In a fresh interpreter, in isolation (an import that works only after another module was loaded hides a
    cycle or a missing import)."""
    module = f"moraleval.{package}"
    probe = f"import {module}, sys; assert 'moraleval.cli' not in sys.modules or {module!r} == 'moraleval.cli'"
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO)
