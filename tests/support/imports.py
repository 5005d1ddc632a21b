"""The import graph of a package's source, its cycles, and private names reached into.

Owns the static analysis behind tests/test_imports.py, read from the source
with ``ast`` (nothing is imported, so a module that fails to import is still
seen):

* ``find_modules`` lists the modules of a package directory: its ``*.py``
  files, and its compiled extension modules (``_shim.abi3.so``) as modules
  without source;
* ``import_graph`` has an edge for every ``import`` / ``from ... import`` of a
  module of the package, wherever it is written: at module level, inside a
  function, under ``if TYPE_CHECKING:`` (a type-only import still couples the
  two modules). Relative imports are resolved; ``from pkg import name`` is an
  edge to the submodule ``pkg.name`` when there is one, else to ``pkg``;
  importing a submodule is not counted as importing its parent packages
  (every submodule would otherwise be in a cycle with a package ``__init__``
  that imports it);
* ``find_cycles`` names the cycles of that graph, each as the modules in
  order (``pyexec.a -> pyexec.b -> pyexec.a``) with the import lines that
  make it;
* ``private_uses`` lists where a module reaches into another module's
  underscore names: ``from X import _name``, ``import pkg._private``, or
  ``obj._attr`` for an ``_attr`` its own module never defines.
"""
from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

# Extension module file names: "<name>.<abi tag>.so" or "<name>.so" (and
# Windows' .pyd); the module name is what comes before the first dot.
EXTENSION_SUFFIXES = (".so", ".pyd")

# Underscore attributes that are public API despite their name: namedtuple's
# methods and fields (the underscore only keeps them clear of field names).
PUBLIC_UNDERSCORE_ATTRS = frozenset({"_replace", "_asdict", "_fields", "_field_defaults", "_make"})

# obj._attr pairs that are the documented way to do something: os._exit is how
# a forked child leaves without running the parent's cleanup; sys._getframe is
# the documented way to reach a caller's frame.
PUBLIC_UNDERSCORE_CALLS = frozenset({("os", "_exit"), ("sys", "_getframe")})

# Objects whose underscore attributes a class may use: its own.
OWN_OBJECTS = frozenset({"self", "cls"})


@dataclass(frozen=True)
class Module:
    """One module of the package: its dotted name, its file, and its parsed source."""

    name: str
    path: Path                              # relative to the directory the package is in: pyexec/shim.py
    is_package: bool                        # an __init__.py: relative imports start at the module itself
    tree: Optional[ast.Module] = field(default=None, compare=False, repr=False)  # None: compiled, no source

    @property
    def has_source(self) -> bool:
        return self.tree is not None


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` (both modules of the package) at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


@dataclass(frozen=True)
class Cycle:
    """A cycle of imports: ``modules[0]`` imports ``modules[1]`` ... imports ``modules[0]``."""

    modules: Tuple[str, ...]
    imports: Tuple[Import, ...]             # the import making each step, in order

    def __str__(self) -> str:
        return " -> ".join(self.modules + self.modules[:1])

    def describe(self) -> str:
        """The cycle, then the import line of each of its steps."""
        return "\n".join([str(self)] + [f"    {imp}" for imp in self.imports])


@dataclass(frozen=True)
class PrivateUse:
    """``module`` reaches into an underscore name that is not its own, at ``path:line``."""

    module: str
    path: Path
    line: int
    what: str                               # e.g. "imports _start from pyexec.executor.exec"
    target: str                             # the dotted name reached: pyexec.executor.exec._start

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} {self.what}"


# -- the modules -----------------------------------------------------------------------

def module_name(root: Path, path: Path) -> str:
    """The dotted name of the module at ``path``, ``root`` being the directory on sys.path."""
    parts = list(path.relative_to(root).parts)
    stem = parts[-1]
    if stem.endswith(EXTENSION_SUFFIXES):
        parts[-1] = stem.split(".", 1)[0]
    else:
        parts[-1] = Path(stem).stem
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(package_dir: Path) -> Dict[str, Module]:
    """Every module of the package in ``package_dir`` (its subpackages included), by name.

    Source modules are parsed. A compiled extension module is a module
    without source: an import of it is an edge, and it imports nothing we can see.
    """
    package_dir = package_dir.resolve()
    root = package_dir.parent
    modules: Dict[str, Module] = {}
    for path in sorted(package_dir.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        if path.suffix == ".py":
            tree = ast.parse(path.read_text(), filename=str(path))
            name = module_name(root, path)
            modules[name] = Module(name, path.relative_to(root), path.name == "__init__.py", tree)
        elif path.name.endswith(EXTENSION_SUFFIXES):
            name = module_name(root, path)
            modules.setdefault(name, Module(name, path.relative_to(root), False))
    return modules


def resolve_relative(module: Module, level: int, name: Optional[str]) -> str:
    """The absolute module name of ``from <level dots><name> import ...`` written in ``module``.

    One dot is the package the module is in (for a package's __init__, the
    package itself); each further dot goes one package up.
    """
    if level == 0:
        return name or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ValueError(f"{module.path}: relative import beyond the top-level package")
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _in_package(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def imports_of(module: Module, modules: Mapping[str, Module]) -> Iterator[Import]:
    """Every import in ``module`` (anywhere in it) of a module in ``modules``.

    ``import a.b.c`` is an edge to ``a.b.c``; ``from a.b import c`` is an edge
    to ``a.b.c`` when that is a module, else to ``a.b``. Imports of modules
    outside ``modules`` (the standard library, third parties) are left out.
    """
    if module.tree is None:
        return
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield Import(module.name, alias.name, module.path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(module, node.level, node.module)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    yield Import(module.name, submodule, module.path, node.lineno)
                elif base in modules:
                    yield Import(module.name, base, module.path, node.lineno)


def import_graph(modules: Mapping[str, Module]) -> Dict[str, List[Import]]:
    """Each module's imports of other modules of the package (a module importing itself is no edge)."""
    graph: Dict[str, List[Import]] = {}
    for name, module in modules.items():
        graph[name] = [imp for imp in imports_of(module, modules) if imp.target != name]
    return graph


# -- cycles ---------------------------------------------------------------------------

def strongly_connected(graph: Mapping[str, Sequence[Import]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan's, iteratively).

    Two modules are in one component when each reaches the other by imports:
    every cycle lies inside a component, and a graph without cycles has none.
    """
    successors = {v: sorted({imp.target for imp in edges if imp.target in graph}) for v, edges in graph.items()}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []
    for start in sorted(successors):
        if start in index:
            continue
        # Each frame: a module and the position of the next successor to visit.
        work: List[Tuple[str, int]] = [(start, 0)]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, i = work[-1]
            if i < len(successors[v]):
                work[-1] = (v, i + 1)
                w = successors[v][i]
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def shortest_cycle_through(graph: Mapping[str, Sequence[Import]], start: str,
                           within: AbstractSet[str]) -> Optional[Cycle]:
    """The shortest cycle from ``start`` back to it that stays inside ``within`` (breadth first)."""
    came_by: Dict[str, Import] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for imp in sorted(graph.get(v, ()), key=lambda i: (i.target, i.line)):
            w = imp.target
            if w not in within:
                continue
            if w == start:
                steps = [imp]
                while steps[0].source != start:
                    steps.insert(0, came_by[steps[0].source])
                return Cycle(tuple(s.source for s in steps), tuple(steps))
            if w not in came_by:
                came_by[w] = imp
                queue.append(w)
    return None


def _rotated(cycle: Cycle) -> Cycle:
    """The same cycle starting at its smallest module name, so that rotations compare equal."""
    k = cycle.modules.index(min(cycle.modules))
    return Cycle(cycle.modules[k:] + cycle.modules[:k], cycle.imports[k:] + cycle.imports[:k])


def find_cycles(graph: Mapping[str, Sequence[Import]]) -> List[Cycle]:
    """For every module in a cycle, the shortest cycle through it (duplicates removed).

    Not every elementary cycle (there can be exponentially many), but every
    module that is in a cycle is in at least one reported cycle, so the list
    is empty exactly when the graph has no cycle.
    """
    found: Dict[Tuple[str, ...], Cycle] = {}
    for component in strongly_connected(graph):
        members = frozenset(component)
        for module in component:
            cycle = shortest_cycle_through(graph, module, members)
            assert cycle is not None, f"{module} is in a strongly connected component but in no cycle"
            cycle = _rotated(cycle)
            found.setdefault(cycle.modules, cycle)
    return [found[key] for key in sorted(found, key=lambda k: (len(k), k))]


# -- private names ---------------------------------------------------------------------

def is_private(name: str) -> bool:
    """A name with one leading underscore: private to the module (or class) defining it.

    Names with two are not counted: dunders (``__init__``, ``__version__``)
    are public protocol, Python itself keeps ``__x`` class-private by name
    mangling (from outside the class it is reached as ``_Class__x``, which is
    counted), and C names the shim's cffi module exports (``__NR_bpf``) are
    the kernel's spelling, not a privacy mark.
    """
    return name.startswith("_") and not name.startswith("__")


def private_owner(dotted: str) -> Optional[str]:
    """The module that owns the first private component of ``dotted``, or None if there is none.

    ``pyexec._shim.lib`` -> ``pyexec._shim``: only that module and its
    submodules may use it.
    """
    parts = dotted.split(".")
    for k, part in enumerate(parts):
        if is_private(part):
            return ".".join(parts[:k + 1])
    return None


def _owns(module: str, owner: str) -> bool:
    return module == owner or module.startswith(owner + ".")


def defined_names(tree: ast.Module) -> Set[str]:
    """The names a module defines anywhere: functions, classes, assigned names,
    attributes assigned on ``self``/``cls``, parameters, loop and ``with``
    targets, and the names its imports bind."""
    names: Set[str] = set()

    def targets(node: ast.AST) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                names.add(sub.id)
            elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in OWN_OBJECTS:
                # self._x = ... defines _x; other._x = ... is a use of other's name (reported as one).
                names.add(sub.attr)

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                targets(target)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            targets(node.target)
        elif isinstance(node, ast.NamedExpr):
            names.add(node.target.id)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            targets(node.optional_vars)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
    return names


def _is_super_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _attribute_use(module: Module, obj: ast.expr, attr: str, line: int, own: AbstractSet[str],
                   how: str) -> Optional[PrivateUse]:
    """A PrivateUse when ``obj.<attr>`` reaches into someone else's underscore name."""
    if not is_private(attr) or attr in own or attr in PUBLIC_UNDERSCORE_ATTRS or _is_super_call(obj):
        return None
    if isinstance(obj, ast.Name) and (obj.id in OWN_OBJECTS or (obj.id, attr) in PUBLIC_UNDERSCORE_CALLS):
        return None
    text = ast.unparse(obj)
    return PrivateUse(module.name, module.path, line, f"{how} .{attr} of {text}", f"{text}.{attr}")


def private_uses_in(module: Module, modules: Mapping[str, Module], top: str) -> Iterator[PrivateUse]:
    """Where ``module`` reaches into underscore names of others (``top``: the package's name).

    * ``import top._x`` / ``from top._x import y`` / ``from top import _x``: a
      private module of the package, unless ``module`` is that module or inside it;
    * ``from top.x import _y``: a private name of another module of the package;
    * ``obj._attr`` (and ``getattr``/``setattr``/``hasattr``/``delattr`` with a
      constant name) where ``_attr`` is defined nowhere in ``module``, ``obj``
      is not ``self``/``cls``/``super()``, and it is not public despite its
      underscore (namedtuple's ``_replace``..., ``os._exit``, ``sys._getframe``).
    """
    if module.tree is None:
        return
    own = defined_names(module.tree)

    def reached(dotted: str, line: int, what: str) -> Iterator[PrivateUse]:
        owner = private_owner(dotted)
        if owner is not None and _in_package(dotted, top) and not _owns(module.name, owner):
            yield PrivateUse(module.name, module.path, line, what, dotted)

    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from reached(alias.name, node.lineno, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(module, node.level, node.module)
            if private_owner(base) is not None:
                yield from reached(base, node.lineno, f"imports from {base}")
                continue
            for alias in node.names:
                dotted = f"{base}.{alias.name}"
                if dotted in modules:
                    yield from reached(dotted, node.lineno, f"imports the module {dotted}")
                elif is_private(alias.name) and _in_package(base, top) and base != module.name:
                    yield PrivateUse(module.name, module.path, node.lineno,
                                     f"imports {alias.name} from {base}", dotted)
        elif isinstance(node, ast.Attribute):
            use = _attribute_use(module, node.value, node.attr, node.lineno, own, "uses")
            if use is not None:
                yield use
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            use = _attribute_use(module, node.args[0], node.args[1].value, node.lineno, own, node.func.id)
            if use is not None:
                yield use


def private_uses(modules: Mapping[str, Module], top: str,
                 allowed: AbstractSet[Tuple[str, str]] = frozenset(),
                 excluded: AbstractSet[str] = frozenset()) -> List[PrivateUse]:
    """Every private use in the package ``top``, but for ``allowed`` (module, dotted target)
    pairs and the ``excluded`` modules, sorted by file and line."""
    uses = [use for name, module in sorted(modules.items()) if name not in excluded
            for use in private_uses_in(module, modules, top)
            if (use.module, use.target) not in allowed]
    return sorted(uses, key=lambda u: (str(u.path), u.line, u.what))
