"""Values as canonical text, for code fingerprints: the same text in every process and on
every machine (no ``id()``, no memory address, no absolute path of the package), or
``Opaque`` when a value cannot be written so (the caller then hashes more, never less).

``canonical(value, follow)`` writes constants of any type: scalars by ``repr``; lists, tuples
and dicts item by item (in order), sets sorted; numpy arrays and torch tensors as dtype, shape
and the sha256 of their bytes; compiled regular expressions, enum members, paths; an object
of any other class as its class and its attributes. Classes, functions and modules are named
(``<module.qualname>``) and handed to ``follow``, which decides whether their code is hashed.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import hashlib
import inspect
import logging
import os
import re
import sys
import types
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

__all__ = ["Opaque", "canonical", "relative_text"]

_SCALARS = (bool, int, float, complex, str, bytes, type(None), range)
#: how deep a value may nest before it counts as one that cannot be written
_DEPTH = 40
#: class attributes that say nothing about what the code does (``abc`` bookkeeping)
_HIDDEN = frozenset({"_abc_impl"})


class Opaque(Exception):
    """A value with no canonical text (no state to read, a cycle, an object address)."""


def canonical(value: Any, follow: Callable[[Any], None], roots: tuple[str, ...] = ()) -> str:
    """``value`` as canonical text; ``follow`` gets every class, function and module met
    (their text is their name); absolute paths under one of ``roots`` are written relative."""
    return _Writer(follow, roots).write(value, 0)


def relative_text(text: str, roots: tuple[str, ...]) -> str:
    """``text`` with an absolute path under one of the folders ``roots`` made relative."""
    for root in roots:
        if text == root or text.startswith((root + "/", root + os.sep)):
            return "<package>" + text[len(root) :].replace(os.sep, "/")
    return text


class _Writer:
    def __init__(self, follow: Callable[[Any], None], roots: tuple[str, ...]):
        self.follow, self.roots, self.open = follow, roots, set()

    def write(self, value: Any, depth: int) -> str:
        if depth > _DEPTH or id(value) in self.open:  # id: only to find cycles, never hashed
            raise Opaque(type(value).__qualname__)
        self.open.add(id(value))
        try:
            return self._write(value, depth + 1)
        finally:
            self.open.discard(id(value))

    def _write(self, value: Any, depth: int) -> str:
        kind = type(value)
        if kind in _SCALARS:
            return relative_text(value, self.roots) if kind is str else repr(value)
        if isinstance(value, _SCALARS):  # of a subclass of int, str, ...: value and attributes
            base = next(k for k in _SCALARS if isinstance(value, k))
            self.follow(kind)
            return f"{_name(kind)}({base.__repr__(value)}, {self.write(_state(value), depth)})"
        if inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value):
            return self._code(value, depth)
        if isinstance(value, functools.partial):
            parts = [value.func, value.args, dict(value.keywords)]
            return "partial" + self.write(parts, depth)
        if isinstance(value, enum.Enum):
            self.follow(kind)
            return f"{_name(kind)}.{value.name}"
        for test, write in _SPECIAL:
            if test(value):
                self.follow(kind)
                return f"{_name(kind)}{write(self, value, depth)}"
        return self._object(value, depth)

    def _code(self, value: Any, depth: int) -> str:
        """A module, class or function by name (a bound method with its instance)."""
        owner = getattr(value, "__self__", None)
        if inspect.isroutine(value) and owner is not None and not inspect.ismodule(owner):
            self.follow(getattr(value, "__func__", value))
            return f"{self.write(owner, depth)}.{value.__name__}"
        self.follow(value)
        if inspect.ismodule(value):
            return f"<module {value.__name__}>"
        return f"<{_name(value)}>"

    def _object(self, value: Any, depth: int) -> str:
        """An instance: its class and its attributes; a library's named object by its name."""
        kind = type(value)
        if _library_global(value):
            return f"<{value.__module__}.{value.__name__}>"
        state = _state(value)
        if state is None:
            text = repr(value)
            if kind.__repr__ is object.__repr__ or re.search(r"0x[0-9a-fA-F]{6,}", text):
                raise Opaque(kind.__qualname__)
            self.follow(kind)
            return f"{_name(kind)}:{text}"
        self.follow(kind)
        return f"{_name(kind)}({self.write(state, depth)})"

    def _items(self, value: Any, depth: int) -> str:
        return "[" + ", ".join(self.write(v, depth) for v in value) + "]"

    def _dict(self, value: Any, depth: int) -> str:
        items = (f"{self.write(k, depth)}: {self.write(v, depth)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"

    def _set(self, value: Any, depth: int) -> str:
        return "{" + ", ".join(sorted(self.write(v, depth) for v in value)) + "}"

    def _path(self, value: Any, depth: int) -> str:
        return f"({relative_text(str(value), self.roots)!r})"

    def _slice(self, value: Any, depth: int) -> str:
        return self.write((value.start, value.stop, value.step), depth)


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', obj.__name__)}"


def _library_global(value: Any) -> bool:
    """A named object of a module, found there by its name (``numpy.exp``, a ufunc)."""
    module = sys.modules.get(str(getattr(value, "__module__", "") or ""))
    name = getattr(value, "__name__", None)
    return module is not None and isinstance(name, str) and getattr(module, name, None) is value


def _state(value: Any) -> dict[str, Any] | None:
    """An object's attributes (``__dict__`` and ``__slots__``), None when it has neither."""
    state = dict(vars(value)) if hasattr(value, "__dict__") else None
    slots = [s for k in type(value).__mro__ for s in _slot_names(k)]
    if slots:
        state = state or {}
        state.update({s: getattr(value, s) for s in slots if hasattr(value, s)})
    if state is None:
        return None
    return {k: state[k] for k in sorted(state) if k not in _HIDDEN}


def _slot_names(kind: type) -> list[str]:
    slots = vars(kind).get("__slots__", ())
    names = [slots] if isinstance(slots, str) else list(slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


def _array(writer: _Writer, value: Any, depth: int) -> str:
    """A numpy array or scalar: dtype, shape and the sha256 of its bytes."""
    import numpy as np

    array = np.ascontiguousarray(value)
    if array.dtype.hasobject:
        return writer._items(array.ravel().tolist(), depth) + str(array.shape)
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    return f"({array.dtype.str}, {array.shape}, {digest})"


def _tensor(writer: _Writer, value: Any, depth: int) -> str:
    """A torch tensor: dtype, shape and the sha256 of its bytes (wherever it lives)."""
    import torch

    flat = value.detach().cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return f"({value.dtype}, {tuple(value.shape)}, {hashlib.sha256(data).hexdigest()})"


def _logger(writer: _Writer, value: Any, depth: int) -> str:
    return f"({value.name!r})"  # where messages go, not what is computed


def _context_var(writer: _Writer, value: Any, depth: int) -> str:
    """A context variable by its declaration (name, default), as module state is: what it
    holds is each run's own state (e.g. the progress bars ``track`` reports to)."""
    try:
        shown = writer.write(contextvars.Context().run(value.get), depth)  # its default
    except LookupError:
        shown = "<none>"
    return f"({value.name!r}, default={shown})"


def _pattern(writer: _Writer, value: Any, depth: int) -> str:
    return f"({value.pattern!r}, {int(value.flags)})"


def _is_numpy(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] == "numpy" and hasattr(value, "dtype")


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _mapping(value: Any) -> bool:
    return isinstance(value, (dict, types.MappingProxyType))


#: (test, writer) of the values written by content, in order
_SPECIAL: tuple[tuple[Callable[[Any], bool], Callable[[_Writer, Any, int], str]], ...] = (
    (lambda v: isinstance(v, (list, tuple)), _Writer._items),
    (_mapping, _Writer._dict),
    (lambda v: isinstance(v, (set, frozenset)), _Writer._set),
    (lambda v: isinstance(v, PurePath), _Writer._path),
    (lambda v: isinstance(v, slice), _Writer._slice),
    (lambda v: isinstance(v, re.Pattern), _pattern),
    (lambda v: isinstance(v, logging.Logger), _logger),
    (lambda v: isinstance(v, contextvars.ContextVar), _context_var),
    (_is_numpy, _array),
    (_is_tensor, _tensor),
)
