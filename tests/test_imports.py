"""The shape of pyexec/'s imports: no cycle, and no module reaching into another's private names.

Read from the source (support.imports, with ``ast``), so it needs neither
root nor a build, and it is fast. Every import counts, wherever it is
written: module level, inside functions, under ``if TYPE_CHECKING:`` -- a
function-local import only hides a cycle until the function runs, and a
type-only one still ties the two modules together. A failure names each
cycle as the modules in order (``pyexec.a -> pyexec.b -> pyexec.a``) with the
import lines that make it, or each private use with its file and line.

The same checks run over small packages written to tmp_path, with the
cycles and private uses put in on purpose, to show they are found.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import AbstractSet, Dict, List, Tuple

import pytest

from support.imports import Cycle, find_cycles, find_modules, import_graph, private_uses

PACKAGE = Path(__file__).resolve().parent.parent / "pyexec"

# pyexec.native is the one way into native code: the only module that imports
# the compiled cffi module pyexec._shim, every other one takes ffi and lib from
# it (see its docstring).
ALLOWED: AbstractSet[Tuple[str, str]] = frozenset({("pyexec.native", "pyexec._shim")})

# Modules left out of the private-name check. None today: the build scripts
# pyexec/_build_shim.py and pyexec/_build_monitor.py (run by setup.py, never
# imported by the library) pass it like library modules do -- their one
# private use, setuptools._distutils, is not a pyexec module.
EXCLUDED: AbstractSet[str] = frozenset()



def cycles_in(package_dir: Path) -> List[Cycle]:
    """The import cycles of the package in ``package_dir``."""
    return find_cycles(import_graph(find_modules(package_dir)))


def cycle_report(package_dir: Path) -> str:
    """What the test says about the package's cycles: empty when there are none."""
    cycles = cycles_in(package_dir)
    if not cycles:
        return ""
    return (f"{len(cycles)} import cycle(s) in {package_dir.name}/:\n  "
            + "\n  ".join(c.describe() for c in cycles))


def private_report(package_dir: Path, allowed: AbstractSet[Tuple[str, str]] = frozenset(),
                   excluded: AbstractSet[str] = frozenset()) -> str:
    """What the test says about private names reached into: empty when none are."""
    uses = private_uses(find_modules(package_dir), package_dir.name, allowed, excluded)
    if not uses:
        return ""
    return (f"{len(uses)} use(s) of other modules' private names in {package_dir.name}/:\n  "
            + "\n  ".join(str(u) for u in uses))


def write_package(root: Path, files: Dict[str, str]) -> Path:
    """Write ``files`` (path in the package -> source) as the package ``root/pkg``; return its directory."""
    package = root / "pkg"
    for relative, source in {"__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"))
    return package


# -- pyexec/ itself ------------------------------------------------------------------

def test_the_graph_of_pyexec_is_read():
    # The checks below would pass over a package they failed to read: make sure
    # they see all of pyexec, with its imports.
    modules = find_modules(PACKAGE)
    sources = {p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert len([m for m in modules.values() if m.has_source]) == len(sources) > 30
    assert {"pyexec", "pyexec.config", "pyexec.executor", "pyexec.cgroups", "pyexec.native"} <= set(modules)
    graph = import_graph(modules)
    assert sum(len(edges) for edges in graph.values()) > 50
    assert "pyexec.errors" in {imp.target for imp in graph["pyexec.config"]}


def test_pyexec_has_no_import_cycle():
    report = cycle_report(PACKAGE)
    if report:
        pytest.fail(report, pytrace=False)


def test_no_pyexec_module_uses_private_names_of_another():
    report = private_report(PACKAGE, ALLOWED, EXCLUDED)
    if report:
        pytest.fail(report, pytrace=False)


# -- the cycle finder on packages made to have cycles ----------------------------------

CYCLES = {
    "module level": ({
        "a.py": "from . import b\n",
        "b.py": "from pkg.a import thing\n",
    }, "pkg.a -> pkg.b -> pkg.a"),
    "function local": ({
        "a.py": "import pkg.b\n",
        "b.py": """
            def late():
                from .a import thing  # only when late() runs: still a cycle
                return thing
            """,
    }, "pkg.a -> pkg.b -> pkg.a"),
    "TYPE_CHECKING": ({
        "a.py": "from pkg import b\n",
        "b.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .a import Thing
            """,
    }, "pkg.a -> pkg.b -> pkg.a"),
    # ``from .sub import helper`` (a name, not a module) goes to the package
    # pkg.sub, whose __init__ imports pkg.sub.c, which goes two levels up.
    "through a package": ({
        "a.py": "from .sub import helper\n",
        "sub/__init__.py": "from .c import helper\n",
        "sub/c.py": "from ..a import thing\n",
    }, "pkg.a -> pkg.sub -> pkg.sub.c -> pkg.a"),
}


@pytest.mark.parametrize("case", sorted(CYCLES))
def test_a_cycle_is_found_and_named(tmp_path: Path, case: str):
    files, named = CYCLES[case]
    package = write_package(tmp_path, files)
    assert [str(c) for c in cycles_in(package)] == [named]
    assert named in cycle_report(package)


def test_the_report_gives_the_import_line_of_each_step(tmp_path: Path):
    package = write_package(tmp_path, CYCLES["function local"][0])
    (cycle,) = cycles_in(package)
    assert [(str(i.path), i.line, i.source, i.target) for i in cycle.imports] == [
        ("pkg/a.py", 1, "pkg.a", "pkg.b"), ("pkg/b.py", 2, "pkg.b", "pkg.a")]


def test_every_module_of_a_tangle_is_in_a_reported_cycle(tmp_path: Path):
    # Two cycles sharing pkg.a, and pkg.d hanging off them: d is in no cycle.
    package = write_package(tmp_path, {
        "a.py": "from . import b, c, d\n",
        "b.py": "from . import a\n",
        "c.py": "def f():\n    from . import a\n",
        "d.py": "import os\n",
    })
    assert [str(c) for c in cycles_in(package)] == ["pkg.a -> pkg.b -> pkg.a", "pkg.a -> pkg.c -> pkg.a"]


def test_a_package_without_cycles_passes(tmp_path: Path):
    # The package's __init__ imports its submodules and they import each other
    # one way: ``from . import c`` in b is an edge to pkg.c, not to pkg, and
    # importing pkg.c is not counted as importing its parent pkg.
    package = write_package(tmp_path, {
        "__init__.py": "from .b import B\nfrom . import c\n",
        "b.py": "from . import c\nimport pkg.c\nclass B: pass\n",
        "c.py": "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import collections\n",
    })
    graph = import_graph(find_modules(package))
    assert {m: sorted({i.target for i in edges}) for m, edges in graph.items()} == {
        "pkg": ["pkg.b", "pkg.c"], "pkg.b": ["pkg.c"], "pkg.c": []}
    assert cycle_report(package) == ""


# -- the private-name check on a package made to break it --------------------------------

PRIVATE = {
    "_native.py": "lib = object()\n",
    "gate.py": "from ._native import lib  # the allowed way in\n",
    "b.py": "def _helper(): pass\nclass Public: pass\n",
    "_own/__init__.py": "thing = 1\n",
    "_own/inner.py": "from pkg._own import thing  # inside the private package: its own\n",
    "a.py": """
        import collections, os, sys
        from . import _native
        import pkg._native
        from .b import _helper, Public

        class Thing:
            def __init__(self):
                self._mine = 1

            def copy(self, other):
                return other._mine            # defined in this module: fine

            def hook(self):
                return super()._hook(), self._mine, type(self).__name__

        def poke(obj, point):
            obj._secret = 1
            getattr(obj, "_hidden", None)
            point._replace(x=1), point._asdict()
            os._exit, sys._getframe
            return obj.__dict__, obj.__NR_bpf
        """,
}


def test_private_uses_are_found(tmp_path: Path):
    package = write_package(tmp_path, PRIVATE)
    uses = private_uses(find_modules(package), "pkg", allowed={("pkg.gate", "pkg._native")})
    assert [(u.module, u.line, u.target) for u in uses] == [
        ("pkg.a", 2, "pkg._native"),                # from . import _native
        ("pkg.a", 3, "pkg._native"),                # import pkg._native
        ("pkg.a", 4, "pkg.b._helper"),              # from .b import _helper
        ("pkg.a", 17, "obj._secret"),
        ("pkg.a", 18, "obj._hidden"),
    ]
    report = private_report(package, allowed={("pkg.gate", "pkg._native")})
    assert "pkg/a.py:4: pkg.a imports _helper from pkg.b" in report


def test_without_its_allow_list_entry_the_gate_is_reported(tmp_path: Path):
    package = write_package(tmp_path, PRIVATE)
    uses = private_uses(find_modules(package), "pkg", excluded={"pkg.a"})
    assert [(u.module, u.line, u.target) for u in uses] == [("pkg.gate", 1, "pkg._native")]
