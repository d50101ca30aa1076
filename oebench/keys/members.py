"""One member of a component's code closure (see ``oebench.keys.fingerprints``): a class,
function or module, read once per process. ``member`` gives its normalised source with the
canonical text of every value its code reads, the first-party code it reaches (followed in
turn), and the top-level packages to hash whole where it cannot tell what the code reaches.
"""

from __future__ import annotations

import dis
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import types
from dataclasses import dataclass
from typing import Any

from oebench.keys.pyfiles import ANYTHING, PyFile, code_text, file_of
from oebench.keys.values import Opaque, canonical

__all__ = ["Member", "member", "top", "unwrap"]

_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_LOCAL_LOADS = frozenset({"LOAD_FAST", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FAST_CHECK"})
_ATTRIBUTES = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR"})
_STORES = frozenset({"STORE_FAST", "STORE_NAME", "STORE_GLOBAL", "STORE_DEREF"})


@dataclass(frozen=True)
class Member:
    obj: Any
    text: str | None  # None: no source
    refs: tuple[Any, ...]
    wide: frozenset[str]


@dataclass(frozen=True)
class _Scan:
    """What a code object (and the code nested in it) names."""

    globals: frozenset[str]
    attributes: frozenset[str]
    bare: frozenset[str]  # names loaded other than for an attribute
    imports: tuple[tuple[str, str, int, bool, str | None], ...]  # (bound, module, level, ...)


def unwrap(obj: Any) -> Any:
    """The function behind a ``functools.partial``, a bound method or a decorator."""
    while True:
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            obj = obj.__func__
        elif not inspect.isclass(obj) and hasattr(obj, "__wrapped__"):
            obj = obj.__wrapped__  # a decorated function (functools.wraps), an lru_cache
        else:
            return obj


def top(obj: Any) -> str:
    """The top-level package of the module that defines ``obj`` (or of a module)."""
    name = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
    return (name if isinstance(name, str) else "").partition(".")[0]


@functools.cache
def member(obj: Any, tops: frozenset[str]) -> Member:
    """``obj`` as a member of a closure through the packages ``tops``."""
    reader = _Reader(obj, tops)
    source = code_text(obj)
    text = None if source is None else "\n".join([source, *sorted(set(reader.lines))])
    return Member(obj, text, tuple(reader.refs), frozenset(reader.wide))


class _Reader:
    """Reads one member: the values it uses (``lines``), ``refs`` and ``wide``."""

    def __init__(self, obj: Any, tops: frozenset[str]):
        self.tops, self.own = tops, _own(obj, tops)
        self.roots = _roots(tops)
        self.lines: list[str] = []
        self.refs: list[Any] = []
        self.wide: set[str] = set()
        self.done: set[tuple[Any, ...]] = set()  # (id of a namespace, name, ...): this member
        if inspect.ismodule(obj):
            self._module(obj)
        elif inspect.isclass(obj):
            self._class(obj)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, obj.__qualname__)

    def _module(self, module: types.ModuleType) -> None:
        """A module as a whole (its file is the text): every global it holds."""
        namespace, file = vars(module), file_of(module)
        for name in sorted(n for n in namespace if not n.startswith("__")):
            self._global(name, namespace, file, frozenset(), bare=False)

    def _class(self, cls: type) -> None:
        for base in (type(cls), *cls.__mro__[1:]):
            self.follow(base)
        namespace = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
        own = cls.__qualname__ + "."
        for name, raw in vars(cls).items():
            functions = _functions(raw)
            for fn in functions:
                if fn.__qualname__.startswith(own):
                    self._function(fn, fn.__qualname__)
                else:
                    self.value(f"{own}{name}", fn)
            hidden = name.startswith("_") and name.endswith("_") or name == "_abc_impl"
            if not functions and not hidden:
                self.value(f"{own}{name}", raw)
        file = file_of(cls)
        if file is not None:
            self._dynamic(file.dynamic.get(cls.__qualname__, frozenset()), namespace)

    def _function(self, fn: types.FunctionType, label: str) -> None:
        """A function's code: the globals and imports it reads, defaults, closure cells."""
        namespace, scan = fn.__globals__, _scan(fn.__code__)
        file = file_of(fn)
        for name in sorted(scan.globals & set(namespace)):
            self._global(name, namespace, file, scan.attributes, name in scan.bare)
        package = namespace.get("__package__") or ""
        for bound, module, level, plain, attr in scan.imports:
            self._import(bound, module, level, plain, attr, package, scan)
        for what, value in (("defaults", fn.__defaults__), ("kwdefaults", fn.__kwdefaults__)):
            if value:
                self.value(f"{label}.<{what}>", value)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
            try:
                self.value(f"{label}.<cell {name}>", cell.cell_contents)
            except ValueError:  # an empty cell (not yet bound)
                continue
        if file is not None:
            self._dynamic(file.dynamic.get(fn.__qualname__, frozenset()), namespace)

    def _global(
        self, name: str, namespace: dict, file: PyFile | None, attrs: frozenset, bare: bool
    ) -> None:
        """A module global: module state by its declarations, anything else by its value."""
        if (id(namespace), name, attrs, bare) in self.done:
            return
        self.done.add((id(namespace), name, attrs, bare))
        value = namespace[name]
        if file is None or name not in file.state or _is_code(value):
            self.value(name, value, attrs, bare)
            return
        text, reads = file.declarations.get(name, ("", frozenset()))
        self.lines.append(f"{name} (state) = {text}")
        for read in sorted(reads & set(namespace)):
            self._global(read, namespace, file, frozenset(), bare=True)

    def value(self, label: str, value: Any, attrs: frozenset = frozenset(), bare=True) -> None:
        """A value the code reads: a first-party module's attributes it names (the whole
        module when it uses the module itself), code followed, anything else by its text."""
        if inspect.ismodule(value):
            if top(value) in self.tops:
                if bare:
                    self.follow(value)
                self._attributes(value, attrs, label)
            return
        if _decorated(value):
            value = unwrap(value)
        try:
            self.lines.append(f"{label} = {canonical(value, self.follow, self.roots)}")
        except Opaque as exc:  # cannot tell what it holds: the whole package instead
            self.lines.append(f"{label} = <opaque {exc}>")
            self.wide.add(self.own)

    def _attributes(self, module: types.ModuleType, attrs: frozenset, label: str) -> None:
        for name in sorted(a for a in attrs if not a.startswith("__")):
            if (id(module), name) in self.done:
                continue
            self.done.add((id(module), name))
            try:
                found = getattr(module, name)
            except Exception:  # noqa: BLE001 - not an attribute of this module
                continue
            self.value(f"{label}.{name}", found, attrs, bare=False)

    def _import(self, bound, module, level, plain, attr, package, scan: _Scan) -> None:
        """A module imported inside a function, or a name imported from one."""
        try:
            full = importlib.util.resolve_name("." * level + module, package or None)
        except (ImportError, ValueError):
            self.wide.add(self.own)
            return
        if full.partition(".")[0] not in self.tops:
            return
        try:
            found = _imported(full, plain, attr)
        except Exception:  # noqa: BLE001 - it does not import here: cannot tell
            self.wide.add(full.partition(".")[0])
            return
        self.value(f"{bound} <import {full}>", found, scan.attributes, bound in scan.bare)

    def _dynamic(self, names: frozenset[str], namespace: dict) -> None:
        """Names reached by a computed attribute name: their package whole."""
        for name in sorted(names):
            target = namespace.get(name)
            if name == ANYTHING:
                self.wide.add(self.own)
            elif inspect.ismodule(target) and top(target) in self.tops:
                self.wide.add(top(target))
            elif inspect.isclass(target):
                self.follow(target)

    def follow(self, obj: Any) -> None:
        """Count ``obj`` in when it is first-party code (a class, function or module)."""
        obj = unwrap(obj)
        if _is_code(obj) and top(obj) in self.tops:
            self.refs.append(obj)


def _own(obj: Any, tops: frozenset[str]) -> str:
    """The package of ``tops`` that ``obj`` belongs to: hashed whole where it cannot tell."""
    names = [top(obj), *(top(c) for c in getattr(obj, "__mro__", ())[1:])]
    return next((n for n in names if n in tops), min(tops))


def _is_code(obj: Any) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)


def _decorated(value: Any) -> bool:
    """A decorated function or an ``lru_cache``: hashed as the function it wraps."""
    return callable(value) and not inspect.isclass(value) and hasattr(value, "__wrapped__")


def _functions(raw: Any) -> list[types.FunctionType]:
    """The functions behind a class attribute (a method, property, static or class method,
    cached property; each decorator's wrapper and the function it wraps)."""
    if isinstance(raw, property):
        parts = [raw.fget, raw.fset, raw.fdel]
    elif isinstance(raw, (staticmethod, classmethod)):
        parts = [raw.__func__]
    elif isinstance(raw, functools.cached_property):
        parts = [raw.func]
    elif isinstance(raw, types.FunctionType) or _decorated(raw):
        parts = [raw]
    else:
        return []
    found = []
    for part in parts:
        while part is not None:
            if isinstance(part, types.FunctionType):
                found.append(part)
            part = getattr(part, "__wrapped__", None)
    return found


def _imported(full: str, plain: bool, attr: str | None) -> Any:
    """What ``import full`` (``plain``) or ``from full import attr`` binds."""
    module = importlib.import_module(full)
    if plain:
        return module if attr is not None else sys.modules[full.partition(".")[0]]
    try:
        return getattr(module, str(attr))
    except AttributeError:
        return importlib.import_module(f"{full}.{attr}")


@functools.cache
def _scan(code: types.CodeType) -> _Scan:
    """Globals, attribute names, bare loads and imports of ``code`` and its nested code."""
    names: set[str] = set()
    attrs: set[str] = set()
    bare: set[str] = set()
    imports: list[tuple[str, str, int, bool, str | None]] = []
    loaded: tuple[str, ...] = ()
    pending: list[Any] | None = None
    before: list[Any] = [None, None]
    for ins in dis.get_instructions(code):
        op, arg = ins.opname, ins.argval
        if loaded and op not in _ATTRIBUTES:
            bare.update(loaded)
        loaded = ()
        if op in _LOADS or op in _LOCAL_LOADS or op == "LOAD_FAST_LOAD_FAST":
            loaded = tuple(arg) if isinstance(arg, tuple) else (arg,)
            if op in _LOADS:
                names.add(arg)
        elif op in _ATTRIBUTES or op == "IMPORT_FROM":
            attrs.add(arg)
        if op == "IMPORT_NAME":
            pending = [arg, before[0] or 0, before[1] is None, None]
        elif op == "IMPORT_FROM" and pending is not None:
            pending[3] = arg
        elif op in _STORES and pending is not None:
            imports.append((arg, pending[0], pending[1], pending[2], pending[3]))
            pending = None if pending[2] else pending
        elif op == "POP_TOP":
            pending = None
        before = [before[1], arg] if op == "LOAD_CONST" else [None, None]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner = _scan(const)
            names |= inner.globals
            attrs |= inner.attributes
            bare |= inner.bare
            imports += inner.imports
    return _Scan(frozenset(names), frozenset(attrs), frozenset(bare), tuple(imports))


def _roots(tops: frozenset[str]) -> tuple[str, ...]:
    """The folders of the packages ``tops`` (paths under them are hashed relative)."""
    roots = []
    for name in sorted(tops):
        module = sys.modules.get(name)
        paths = list(getattr(module, "__path__", None) or [])
        file = getattr(module, "__file__", None)
        roots += paths or ([os.path.dirname(file)] if file else [])
    return tuple(sorted(str(r) for r in roots))
