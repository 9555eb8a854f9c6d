"""The layout's import rules, checked by parsing every module's imports (no interpreter per module).

Direction: cli -> attest -> {resolve, build, verify, export} -> {observe, render} -> {sources, model}.
A module may import its own layer; nothing imports a layer above it. Module-level imports form no cycle,
so every module imports on its own. Two start-up promises are checked in real interpreters, once each.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mlenv"

# Which layer each module belongs to: the longest matching prefix wins.
LAYER_OF_PREFIX = {
    "mlenv": "model",  # mlenv/__init__.py: the version only
    "mlenv.errors": "model",
    "mlenv.spec": "model",
    "mlenv.lockfile": "model",
    "mlenv.files": "model",
    "mlenv.model": "model",
    "mlenv.sources": "sources",
    "mlenv.observe": "observe",
    "mlenv.render": "render",
    "mlenv.resolve": "resolve",
    "mlenv.build": "build",
    "mlenv.verify": "verify",
    "mlenv.export": "export",
    "mlenv.attest": "attest",
    "mlenv.cli": "cli",
    "mlenv.__main__": "cli",
}
LOWER = {"model": set(), "sources": {"model"}}
LOWER["observe"] = LOWER["render"] = {"sources", "model"}
for _upper in ("resolve", "build", "verify", "export"):
    LOWER[_upper] = {"observe", "render", "sources", "model"}
# An SBOM's inventory is verify's expectation (one projection), so export reads verify.
LOWER["export"] |= {"verify"}
# An attestation signs verify's verdict and the exports, and stores them through the registry client.
LOWER["attest"] = {"verify", "export", "observe", "render", "sources", "model"}
LOWER["cli"] = {"attest", "resolve", "build", "verify", "export", "observe", "render", "sources", "model"}

# Layers that do no IO: they never reach the outside world, not even lazily.
PURE = {"mlenv.model", "mlenv.render", "mlenv.verify.compare", "mlenv.export"}
OUTSIDE_WORLD = ("docker", "requests", "urllib.request", "subprocess", "socket", "http.client")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (for `from a import b`: a.b when that is a module, else a)
    line: int
    top_level: bool  # executed when the module is imported (not inside a function)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    best = max((p for p in LAYER_OF_PREFIX if module == p or module.startswith(p + ".")), key=len)
    return LAYER_OF_PREFIX[best]


def _function_bodies(tree: ast.AST) -> set[int]:
    """ids of import nodes that sit inside a function (lazy imports)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(
                id(child) for child in ast.walk(node) if isinstance(child, ast.Import | ast.ImportFrom)
            )
    return inside


def _type_checking_only(tree: ast.AST) -> set[int]:
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(
                id(child) for child in ast.walk(node) if isinstance(child, ast.Import | ast.ImportFrom)
            )
    return guarded


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lazy = _function_bodies(tree)
    guarded = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        top = id(node) not in lazy
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, top)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(module, candidate if candidate in modules else base, node.lineno, top)


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def test_the_layout_has_every_layer() -> None:
    layers = {layer(m) for m in all_modules()}
    assert layers == set(LOWER), layers
    # the pieces the architecture names, each in its home
    for module in (
        "mlenv.verify.expected",
        "mlenv.verify.compare",
        "mlenv.model.report",
        "mlenv.sources.engine",
        "mlenv.observe.image",
        "mlenv.observe.probes.dpkg",
        "mlenv.render.dockerfile",
    ):
        assert module in all_modules(), module


def test_imports_point_down(graph: list[Import]) -> None:
    wrong = []
    for imp in graph:
        if not imp.target.startswith("mlenv"):
            continue
        source, target = layer(imp.source), layer(imp.target)
        if target != source and target not in LOWER[source]:
            wrong.append(f"{imp.source}:{imp.line} ({source}) imports {imp.target} ({target})")
    assert wrong == []


def test_pure_layers_reach_no_outside_world(graph: list[Import]) -> None:
    wrong = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in graph
        if any(imp.source == p or imp.source.startswith(p + ".") for p in PURE)
        and (
            any(imp.target == o or imp.target.startswith(o + ".") for o in OUTSIDE_WORLD)
            or imp.target.startswith("mlenv.")
            and layer(imp.target) == "sources"
        )
    ]
    assert wrong == []


def test_only_the_engine_source_uses_the_docker_sdk(graph: list[Import]) -> None:
    # engine: the one client of the daemon, and the reader of the docker config's credentials (docker.auth).
    users = sorted(
        {imp.source for imp in graph if imp.target == "docker" or imp.target.startswith("docker.")}
    )
    assert users == ["mlenv.sources.engine"]


def test_module_level_imports_have_no_cycle(graph: list[Import]) -> None:
    edges: dict[str, set[str]] = {}
    for imp in graph:
        if imp.top_level and imp.target.startswith("mlenv") and imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def _loaded(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    return set(result.stdout.split())


def test_version_loads_no_validator_and_no_engine_client() -> None:
    loaded = _loaded(
        "from mlenv.cli.app import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass"
    )
    assert "mlenv.cli.app" in loaded
    assert not {"jsonschema", "docker", "requests"} & loaded
    assert not any(m.startswith("mlenv.cli.") and m != "mlenv.cli.app" for m in loaded)


def test_the_apt_resolver_loads_no_network_client() -> None:
    loaded = _loaded("import mlenv.resolve.apt")
    assert "mlenv.resolve.apt" in loaded
    assert not {"docker", "requests"} & loaded
