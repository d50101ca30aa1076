"""What a Python source file says, for code fingerprints, read once per file version
(``parse``), and the text that stands for a class or function (``code_text``: its meaning,
not its text; see ``code_text``):

- ``spans``: the lines of every class and function it defines (by qualified name);
- ``dynamic``: per definition, the names its code reaches attributes of by a computed name
  (``getattr(module, name)``, ``vars(module)``), ``"*"`` where it can reach anything
  (``globals()``, ``eval``, ``exec``, ``__import__``, ``import_module(name)``);
- ``state``: module-level names that the module's functions rebind (``global``) or change in
  place (``_CACHE[key] = ...``, ``_SEEN.append(...)``): run-time state such as caches, whose
  value of the moment says nothing about the code; ``declarations``: the module-level
  statements that assign each name (the text a state name is hashed by).
"""

from __future__ import annotations

import ast
import functools
import inspect
import linecache
import os
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oebench.core.files import file_sha256
from oebench.keys.values import Opaque, canonical

__all__ = ["ANYTHING", "PyFile", "code_text", "file_digest", "file_of", "parse"]

#: what ``dynamic`` holds for code that can reach any name
ANYTHING = "*"
#: calls that name an attribute of their first argument by a computed name
_BY_NAME = frozenset({"getattr", "hasattr", "setattr", "delattr"})
#: calls that see every attribute of their (first) argument
_ALL_OF = frozenset({"vars", "dir"})
#: calls that can reach any name at all
_ANY = frozenset({"globals", "eval", "exec", "__import__", "import_module"})
#: methods that change a list, dict or set in place
_MUTATORS = frozenset(
    {"append", "extend", "insert", "remove", "pop", "popitem", "clear", "update", "setdefault",
     "add", "discard", "sort", "reverse", "__setitem__", "__delitem__"}
)  # fmt: skip


@dataclass(frozen=True)
class PyFile:
    lines: list[str]
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    dynamic: dict[str, frozenset[str]] = field(default_factory=dict)
    state: frozenset[str] = frozenset()
    declarations: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    #: the syntax tree of every class and function (by qualified name; ``""``: the module),
    #: docstrings dropped (see ``normalised``)
    nodes: dict[str, ast.AST] = field(default_factory=dict)


@functools.lru_cache(maxsize=256)
def parse(path: str, *stamp: int) -> PyFile:
    """The file at ``path``; ``stamp`` (size, mtime, inode) makes an edited file read again,
    for objects loaded after the edit."""
    linecache.checkcache(path)
    lines = linecache.getlines(path)
    tree = ast.parse("".join(lines))
    walker = _Walker()
    walker.visit(tree, "")
    found = PyFile(lines, walker.spans, {k: frozenset(v) for k, v in walker.dynamic.items()})
    _declarations(tree.body, found)
    _drop_docstrings(tree)
    nodes = {"": tree, **walker.nodes}
    return PyFile(
        lines, found.spans, found.dynamic, frozenset(walker.state), found.declarations, nodes
    )


def normalised(node: ast.AST) -> str:
    """The meaning of a piece of code as text: its syntax tree without line and column
    numbers (``ast.dump``), so comments, blank lines, line breaks, indentation, quotes and
    redundant parentheses change nothing; the same in every process (no ids, no hashes)."""
    return ast.dump(node, annotate_fields=True, include_attributes=False)


def _drop_docstrings(tree: ast.AST) -> None:
    """Remove, in place, every statement that is only a string: docstrings of the module,
    classes and functions, and attribute docstrings (they do nothing when the code runs).
    Only statements hold statements, so expressions (most of a tree) are not walked."""
    todo = [tree]
    while todo:
        node = todo.pop()
        for name in _BLOCKS:
            block = getattr(node, name, None)
            if not isinstance(block, list):
                continue
            if any(map(_is_text, block)):
                block = [s for s in block if not _is_text(s)]
                setattr(node, name, block)
            todo += [s for s in block if isinstance(s, _HOLDERS)]


#: the fields of a node that hold statements, and the nodes that have such fields
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")
_HOLDERS = (ast.stmt, ast.excepthandler, ast.match_case)


def _is_text(stmt: Any) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


_DEFINITIONS = frozenset({ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef})
#: the nodes that open a function scope
_SCOPES = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda})
#: the nodes ``_Walker._note`` looks at
_NOTED = frozenset({ast.Call, ast.Global, ast.arg, ast.Name, ast.Subscript, ast.Attribute})


@dataclass
class _Scope:
    """What one function binds locally, declares ``global`` and changes in place."""

    local: set[str] = field(default_factory=set)
    declared: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)


class _Walker:
    """One pass over a module's tree: every class and function's lines (decorators included;
    the last of several same-named definitions), the names each reaches dynamically, and the
    module-level names its functions change (``state``)."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[int, int]] = {}
        self.nodes: dict[str, ast.AST] = {}
        self.dynamic: dict[str, set[str]] = {}
        self.state: set[str] = set()
        self.definitions: list[str] = []
        self.scopes: list[_Scope] = []

    def visit(self, node: Any, prefix: str) -> None:
        kind = type(node)
        definition = kind in _DEFINITIONS
        if definition:
            name = prefix + node.name
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            self.spans[name] = (first, node.end_lineno or node.lineno)
            self.nodes[name] = node
            self.dynamic[name] = set()
            self.definitions.append(name)
            prefix = name + ("." if kind is ast.ClassDef else ".<locals>.")
        scope = kind in _SCOPES
        if scope:
            self.scopes.append(_Scope())
        elif kind in _NOTED:
            self._note(node, kind)
        for child in ast.iter_child_nodes(node):
            self.visit(child, prefix)
        if scope:
            done = self.scopes.pop()
            self.state |= done.declared | (done.changed - done.local)
        if definition:
            self.definitions.pop()

    def _note(self, node: Any, kind: type) -> None:
        if kind is ast.Call:
            names = _dynamic(node)
            for name in self.definitions if names else ():
                self.dynamic[name] |= names
        if not self.scopes:
            return
        scope = self.scopes[-1]
        if kind is ast.Global:
            scope.declared.update(node.names)
        elif kind is ast.arg:
            scope.local.add(node.arg)
        elif kind is ast.Name:
            if type(node.ctx) is ast.Store:
                scope.local.add(node.id)
        elif kind is not ast.Call:  # a subscript or attribute
            if type(node.ctx) is not ast.Load:
                scope.changed.update(_root(node))
        elif type(node.func) is ast.Attribute and node.func.attr in _MUTATORS:
            scope.changed.update(_root(node.func))


def _dynamic(call: ast.Call) -> set[str]:
    """The names whose attributes a call reaches by a computed name (``ANYTHING``: any)."""
    func, args = call.func, call.args
    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if called in _ANY and (called != "import_module" or not _constant(args, 0)):
        return {ANYTHING} if isinstance(func, ast.Name) or called == "import_module" else set()
    by_name = (called in _BY_NAME and not _constant(args, 1)) or called in _ALL_OF
    if by_name and isinstance(func, ast.Name) and args and isinstance(args[0], ast.Name):
        return {args[0].id}
    return set()


def _constant(args: list[ast.expr], index: int) -> bool:
    return len(args) > index and isinstance(args[index], ast.Constant)


def _root(node: ast.expr) -> list[str]:
    """The name an expression such as ``a.b[c].d`` starts from."""
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return [node.id] if isinstance(node, ast.Name) else []


def _declarations(body: list[ast.stmt], found: PyFile) -> None:
    """The module-level statements (inside ``if`` / ``try`` / ``with`` too) assigning each
    name: their normalised syntax tree, and the names their right-hand sides read."""
    for stmt in body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            text = normalised(stmt)
            reads = frozenset(
                n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(
                    n.ctx, ast.Load)
            )  # fmt: skip
            for target in targets:
                for name in (n.id for n in ast.walk(target) if isinstance(n, ast.Name)):
                    before, names = found.declarations.get(name, ("", frozenset()))
                    found.declarations[name] = (f"{before}\n{text}".strip(), names | reads)
        for inner in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                block = getattr(stmt, inner, None)
                if isinstance(block, list):
                    _declarations(block, found)


def file_of(obj: Any) -> PyFile | None:
    """The parsed source file of ``obj`` (None without one)."""
    try:
        path = inspect.getsourcefile(obj) or inspect.getfile(obj)
        stat = os.stat(path)
        return parse(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    except (TypeError, OSError, SyntaxError, ValueError):
        return None


@functools.cache
def file_digest(obj: Any) -> str | None:
    """sha256 (16 hex digits) of the file defining ``obj``, None when it has none."""
    try:
        return file_sha256(Path(inspect.getfile(obj)))[:16]
    except (TypeError, OSError):
        return None


@functools.cache
def code_text(obj: Any) -> str | None:
    """What stands for a module's, class's or function's code: its meaning, not its text.
    That is its normalised syntax tree (``normalised``: docstrings dropped, no line or column
    numbers), so editing a comment or a docstring or reformatting changes nothing, while any
    change to a name, constant, operator, default value or decorator does. Source that does
    not parse alone (a lambda inside a larger statement) counts as its lines without
    indentation, blank lines and comment-only lines. For code without source (made by
    ``exec`` or ``type()``): a function's compiled code and a class's name, bases and own
    functions. None for a module without source."""
    try:
        node = _node(obj)
        if node is not None:
            return normalised(node)
        text = textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError, SyntaxError, ValueError):  # no (readable) source
        return _compiled_text(obj)
    try:
        tree = ast.parse(text)
    except SyntaxError:  # a fragment of a statement: its text
        lines = [line.rstrip() for line in text.splitlines()]
        return "\n".join(line for line in lines if line and not line.lstrip().startswith("#"))
    _drop_docstrings(tree)
    return normalised(tree)


def _node(obj: Any) -> ast.AST | None:
    """The syntax tree of a module, class or function from its parsed file (each file parsed
    once); None for a lambda or a definition the file no longer holds."""
    file = file_of(obj)
    if file is None:
        raise OSError("no source file")
    if inspect.ismodule(obj):
        return file.nodes[""]
    return file.nodes.get(getattr(obj, "__qualname__", ""))


def _compiled_text(obj: Any) -> str | None:
    if isinstance(obj, types.FunctionType):
        return f"def {obj.__qualname__} {_code(obj.__code__, obj.__doc__)}"
    if not inspect.isclass(obj):
        return None
    bases = ", ".join(f"{b.__module__}.{b.__qualname__}" for b in obj.__bases__)
    own = obj.__qualname__ + "."
    methods = [
        str(code_text(f))
        for f in vars(obj).values()
        if isinstance(f, types.FunctionType) and f.__qualname__.startswith(own)
    ]
    return "\n".join([f"class {obj.__qualname__}({bases})", *sorted(methods)])


def _code(code: types.CodeType, doc: str | None = None) -> str:
    """A code object as text: its bytecode, names and constants (no file name, no lines;
    not its docstring ``doc``, which Python keeps as its first constant)."""
    consts = list(code.co_consts)
    if doc is not None and consts and consts[0] == doc:
        consts = consts[1:]
    consts = [_code(c) if isinstance(c, types.CodeType) else _constant_text(c)
              for c in consts]  # fmt: skip
    parts = (code.co_code.hex(), code.co_names, code.co_varnames, code.co_freevars,
             code.co_cellvars, code.co_argcount, code.co_kwonlyargcount, code.co_flags)  # fmt: skip
    return repr(parts) + "[" + ", ".join(consts) + "]"


def _constant_text(value: Any) -> str:
    try:
        return canonical(value, lambda _: None)
    except Opaque:
        return type(value).__qualname__
