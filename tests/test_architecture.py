"""The layout's rules, checked on the source (by its syntax tree, without importing it).

- A private (``_``) module is imported only from the package it is directly inside, unless
  the import line says why: ``# private: <reason>``.
- ``magicwan.rotation`` knows no HTTP, and the emulator shares no client code: neither
  reaches them through any chain of imports.
- Pure modules import no I/O module.

Each failure lists what breaks the rule, ``file:line``. The last tests plant a violation of
each rule in a small tree and see the checker catch it, so a checker that finds nothing can
be told from one that looks nowhere.
"""

from __future__ import annotations

import ast
import collections
import re
from collections.abc import Iterable
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The trees whose imports are checked.
TREES = ("magicwan", "examples", "benchmarks")

_DOCUMENTED = re.compile(r"#\s*private:\s*\S")

#: What ``magicwan.rotation`` must not reach: the HTTP client and the request path.
HTTP = (
    "aiohttp",
    "yarl",
    "magicwan._transport",
    "magicwan._http",
    "magicwan._envelope",
)
#: What the emulator must not reach: the client's code.
CLIENT = (
    "magicwan.client",
    "magicwan.resources",
    "magicwan._transport",
    "magicwan._http",
    "magicwan._retry",
    "magicwan.ratelimit",
    "magicwan.rotation",
    "magicwan.cli",
    "magicwan.delivery",
)
#: Modules that do no I/O, and so import none of :data:`IO` (``logging`` is fine).
PURE = (
    "magicwan.internal",
    "magicwan.reply",
    "magicwan.rotation.machine",
    "magicwan.rotation.window",
    "magicwan.models",
)
IO = (
    "aiohttp",
    "asyncio",
    "os",
    "socket",
    "subprocess",
    "pathlib",
    "shutil",
    "tempfile",
    "ssl",
    "fcntl",
    "http.client",
    "urllib.request",
)


@attrs.frozen
class Import:
    """One module an import statement names (``from a import b`` names ``a`` and ``a.b``:
    ``b`` may be a module)."""

    path: str  # relative to the root, with "/"
    line: int
    target: str
    documented: bool  # the statement carries "# private: <reason>"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.target}"


@attrs.frozen
class Module:
    name: str
    package: str
    path: str
    imports: tuple[Import, ...]


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _module(root: Path, file: Path) -> Module:
    rel = file.relative_to(root)
    parts = list(rel.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    name = ".".join(parts)
    package = name if is_package else ".".join(parts[:-1])
    source = file.read_text(encoding="utf-8")
    lines = source.splitlines()
    imports: list[Import] = []
    for node in ast.walk(ast.parse(source, str(rel))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        end = node.end_lineno or node.lineno
        documented = any(_DOCUMENTED.search(line) for line in lines[node.lineno - 1 : end])
        imports += [Import(rel.as_posix(), node.lineno, t, documented) for t in targets]
    return Module(name, package, rel.as_posix(), tuple(imports))


def scan(root: Path, trees: Iterable[str] = TREES) -> dict[str, Module]:
    """Every module of ``trees`` under ``root``, by dotted name."""
    modules = {}
    for tree in trees:
        for file in sorted((root / tree).rglob("*.py")):
            module = _module(root, file)
            modules[module.name] = module
    return modules


# -- the rules: each returns what breaks it --------------------------------------------


def private_imports(modules: dict[str, Module]) -> list[str]:
    """Imports of a private module (or name) from outside the package directly holding it,
    without ``# private: <reason>`` on the line. A subpackage is outside."""
    found: dict[tuple[str, int], str] = {}
    for module in modules.values():
        for imp in module.imports:
            parts = imp.target.split(".")
            private = next(
                (i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")),
                None,
            )
            if private is None or parts[0] != "magicwan":
                continue
            owner = ".".join(parts[:private])
            if module.package != owner and not imp.documented:
                found.setdefault((imp.path, imp.line), str(imp))
    return sorted(found.values())


def _resolve(modules: dict[str, Module], target: str) -> str | None:
    """The module of ours that ``target`` names (``a.b`` of ``from a import b`` may be a name
    in ``a``)."""
    if target in modules:
        return target
    parent = target.rpartition(".")[0]
    return parent if parent in modules else None


def reaches(modules: dict[str, Module], scope: str, forbidden: Iterable[str]) -> list[str]:
    """Chains of imports from a module of ``scope`` to a ``forbidden`` module, each ending
    with the import that reaches it (``file:line``)."""
    forbidden = tuple(forbidden)
    found: dict[tuple[str, int], str] = {}
    for start in sorted(m for m in modules if _under(m, (scope,))):
        came_from: dict[str, str | None] = {start: None}
        queue = collections.deque([start])
        while queue:
            name = queue.popleft()
            for imp in modules[name].imports:
                if _under(imp.target, forbidden) and not _under(name, forbidden):
                    chain = [name]
                    while (previous := came_from[chain[-1]]) is not None:
                        chain.append(previous)
                    via = " -> ".join(reversed(chain))
                    found.setdefault((imp.path, imp.line), f"{imp} (from {via})")
                    continue
                nxt = _resolve(modules, imp.target)
                if nxt is not None and nxt not in came_from:
                    came_from[nxt] = name
                    queue.append(nxt)
    return sorted(found.values())


def impure_imports(
    modules: dict[str, Module], pure: Iterable[str] = PURE, io: Iterable[str] = IO
) -> list[str]:
    """Direct imports of an I/O module by a pure module."""
    pure, io = tuple(pure), tuple(io)
    found: dict[tuple[str, int], str] = {}
    for name, module in modules.items():
        if _under(name, pure):
            for imp in module.imports:
                if _under(imp.target, io):
                    found.setdefault((imp.path, imp.line), str(imp))
    return sorted(found.values())


# -- the rules, on this repository ---------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return scan(ROOT)


def _explain(problems: list[str]) -> str:
    return "\n".join(["", *problems])


def test_the_scan_sees_the_packages(modules: dict[str, Module]) -> None:
    for name in ("magicwan", "magicwan.rotation.engine", "magicwan.emulator", "magicwan.reply"):
        assert name in modules
    assert any(name.startswith("examples.") for name in modules)


def test_no_private_module_is_imported_from_outside_its_package(
    modules: dict[str, Module],
) -> None:
    problems = private_imports(modules)
    assert not problems, "write `# private: <reason>` on the line, or import a public name:" + (
        _explain(problems)
    )


def private_imports_of_tests(modules: dict[str, Module]) -> list[str]:
    """The same rule for the tests, where a test module may also import the private module
    it is the unit test of: ``tests/test_x.py`` imports ``magicwan._x``,
    ``tests/delivery/test_x.py`` imports ``magicwan.delivery._x``."""
    found = []
    for module in modules.values():
        tested = [
            "magicwan",
            *module.package.split(".")[1:],
            "_" + module.name.rpartition(".test_")[2],
        ]
        for problem in private_imports({module.name: module}):
            target = problem.rpartition(" imports ")[2].split(".")
            private = next(i for i, part in enumerate(target) if part.startswith("_"))
            if target[: private + 1] != tested:
                found.append(problem)
    return sorted(found)


def test_a_test_imports_a_private_module_only_to_test_it() -> None:
    problems = private_imports_of_tests(scan(ROOT, ("tests",)))
    assert not problems, "write `# private: <reason>` on the line, or import a public name:" + (
        _explain(problems)
    )


def test_rotation_knows_no_http(modules: dict[str, Module]) -> None:
    problems = reaches(modules, "magicwan.rotation", HTTP)
    assert not problems, _explain(problems)


def test_the_emulator_shares_no_client_code(modules: dict[str, Module]) -> None:
    problems = reaches(modules, "magicwan.emulator", CLIENT)
    assert not problems, _explain(problems)


def test_pure_modules_do_no_io(modules: dict[str, Module]) -> None:
    problems = impure_imports(modules)
    assert not problems, _explain(problems)


# -- the checker has teeth --------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return scan(root, ("magicwan", "examples"))


PLANTED = {
    "magicwan/__init__.py": "",
    "magicwan/_wire.py": "import aiohttp\n",
    "magicwan/client.py": "from magicwan._wire import send\n",  # inside: fine
    "magicwan/hub/__init__.py": "from magicwan import _wire\n",  # a subpackage: outside
    "magicwan/internal/__init__.py": "",
    "magicwan/internal/pure.py": "import logging\nfrom os import environ\n",
    "magicwan/rotation/__init__.py": "from .steps import step\n",
    "magicwan/rotation/steps.py": "from magicwan.hub import relay\n",
    "magicwan/emulator/__init__.py": "",
    "magicwan/emulator/app.py": "import magicwan.client\n",
    "magicwan/cli/__init__.py": (
        "from magicwan._wire import send\n"
        "from magicwan._wire import (  # private: a reason\n    receive,\n)\n"
    ),
    "examples/demo.py": "from magicwan.internal import pure\nimport magicwan._wire\n",
}


def test_a_planted_private_import_is_caught(tmp_path: Path) -> None:
    assert private_imports(_tree(tmp_path, PLANTED)) == [
        "examples/demo.py:2: imports magicwan._wire",
        "magicwan/cli/__init__.py:1: imports magicwan._wire",
        "magicwan/hub/__init__.py:1: imports magicwan._wire",
    ]


def test_a_planted_http_import_is_caught_through_a_chain(tmp_path: Path) -> None:
    assert reaches(_tree(tmp_path, PLANTED), "magicwan.rotation", HTTP) == [
        "magicwan/_wire.py:1: imports aiohttp (from magicwan.rotation -> "
        "magicwan.rotation.steps -> magicwan.hub -> magicwan._wire)",
    ]


def test_a_planted_client_import_in_the_emulator_is_caught(tmp_path: Path) -> None:
    assert reaches(_tree(tmp_path, PLANTED), "magicwan.emulator", CLIENT) == [
        "magicwan/emulator/app.py:1: imports magicwan.client (from magicwan.emulator.app)",
    ]


def test_a_planted_io_import_in_a_pure_module_is_caught(tmp_path: Path) -> None:
    assert impure_imports(_tree(tmp_path, PLANTED)) == [
        "magicwan/internal/pure.py:2: imports os",
    ]


def test_a_planted_private_import_in_a_test_is_caught(tmp_path: Path) -> None:
    planted = {
        "tests/__init__.py": "",
        "tests/test_wire.py": "from magicwan._wire import send\nfrom magicwan._http import x\n",
        "tests/delivery/__init__.py": "",
        "tests/delivery/test_vici.py": "from magicwan.delivery._vici import Channel\n",
        "tests/delivery/test_text.py": "from magicwan.delivery._vici import C  # private: x\n",
        "tests/support/__init__.py": "",
        "tests/support/sim.py": "import magicwan._retry\n",
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert private_imports_of_tests(scan(tmp_path, ("tests",))) == [
        "tests/support/sim.py:1: imports magicwan._retry",
        "tests/test_wire.py:2: imports magicwan._http",
    ]
