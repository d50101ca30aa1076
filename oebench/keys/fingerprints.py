"""Fingerprints: short hashes of everything that decides a result, in one place.

- configuration: ``canonical_hash`` (a benchmark's settings, a cell's configuration);
- code: ``code_digest`` hashes a component's own code (its class or function, the base
  classes and module-level helpers it uses from first-party packages, and simple constants it
  reads), so editing one detector in a file of several leaves the others' results valid;
- data files: ``file_fingerprints`` / ``content_digest`` (sha256 of each file, remembered by
  its stamp; see ``oebench.core.datafiles``);
- model weights: ``model_digest``.

``describe_changes`` names what differs between two cells' fingerprint blocks.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import linecache
import os
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oebench.bench.matrix import canonical_hash
from oebench.core.datafiles import content_digest, content_digests, file_fingerprints
from oebench.core.files import file_sha256

__all__ = [
    "canonical_hash",
    "cell_fingerprints",
    "cell_identity",
    "clear_caches",
    "code_digest",
    "content_digest",
    "content_digests",
    "describe_changes",
    "file_fingerprints",
    "model_digest",
    "weights_code",
]

#: packages whose code counts as a component's own besides the component's package itself
FIRST_PARTY = ("oebench",)
#: a referenced module-level constant is hashed by its ``repr`` when made of these only
_CONSTANTS = (int, float, complex, str, bytes, bool, type(None))


def model_digest(model: Any) -> str:
    """A hash of every parameter and buffer of a model: the digest of its weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@functools.cache
def _file_digest(path: str) -> str:
    """sha256 (16 hex digits) of a file's bytes, once per process."""
    return file_sha256(Path(path))[:16]


def code_digest(obj: Any) -> str | None:
    """A hash of a component's own code (class or function), so that edited code is never
    served from a stale cache; the whole source file where the source cannot be isolated,
    ``None`` where there is no source at all."""
    obj = _unwrap(obj)
    parts = []
    for member in _closure(obj):
        source = _normalised_source(member)
        if source is None and member is obj:
            return _whole_file_digest(obj)
        parts.append(source if source is not None else str(_whole_file_digest(member)))
    # sorted: the order the closure was found in follows set order, which varies by process
    return hashlib.sha256("\n\0".join(sorted(parts)).encode()).hexdigest()[:16]


def _whole_file_digest(obj: Any) -> str | None:
    """The digest of the file defining ``obj`` (None when it has none)."""
    try:
        return _file_digest(inspect.getfile(obj))
    except (TypeError, OSError):
        return None


def _unwrap(obj: Any) -> Any:
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


@functools.cache
def _normalised_source(obj: Any) -> str | None:
    """``obj``'s source without indentation, blank lines and comment-only lines (plus the
    values of the simple module constants it reads); None when it has no source.

    Read once per process (``clear_caches`` forgets it): the code that runs is the code that
    was imported, so a file edited during a run must not change the run's keys half-way.
    """
    try:
        text = _source(obj)
    except (TypeError, OSError, SyntaxError, ValueError):  # no (readable) source
        return None
    lines = [line.rstrip() for line in textwrap.dedent(text).splitlines()]
    kept = [line for line in lines if line and not line.lstrip().startswith("#")]
    constants = [f"{name} = {value!r}" for name, value in _constants(obj)]
    return "\n".join(kept + constants)


def _source(obj: Any) -> str:
    """The source text of a module, class or function (``inspect.getsource``, with each file
    parsed once rather than once per class)."""
    path = inspect.getsourcefile(obj) or inspect.getfile(obj)
    if inspect.ismodule(obj):
        linecache.checkcache(path)
        return "".join(linecache.getlines(path))
    stat = os.stat(path)
    lines, spans = _spans(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    span = spans.get(getattr(obj, "__qualname__", ""))
    if span is None:  # a lambda, or a definition the file no longer holds
        return inspect.getsource(obj)
    return "".join(lines[span[0] - 1 : span[1]])


@functools.lru_cache(maxsize=256)
def _spans(path: str, *stamp: int) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """A file's lines, and qualified name -> (first, last) line of every class and function
    it defines (decorators included; the last of several same-named definitions); ``stamp``
    (size, mtime, inode) makes an edited file read again, for objects loaded after the edit."""
    import ast

    linecache.checkcache(path)
    lines = linecache.getlines(path)
    spans: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                spans[name] = (first, child.end_lineno or child.lineno)
                inner = ".<locals>." if not isinstance(child, ast.ClassDef) else "."
                visit(child, name + inner)
            else:
                visit(child, prefix)

    visit(ast.parse("".join(lines)), "")
    return lines, spans


def clear_caches() -> None:
    """Forget every source and file read so far (for tests that edit code in place)."""
    for cached in (_normalised_source, _closure, _spans, _file_digest):
        cached.cache_clear()


@functools.cache
def _closure(obj: Any) -> tuple[Any, ...]:
    """``obj`` and, transitively, the first-party classes and functions its code uses."""
    tops = {_top(obj), *FIRST_PARTY} - {"", "builtins", "__main__"}
    seen: dict[int, Any] = {}
    todo = [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen[id(item)] = item
        todo += [ref for ref in _references(item, tops) if _followed(ref, tops)]
    return tuple(seen.values())


def _top(obj: Any) -> str:
    """The top-level package of the module that defines ``obj`` (or of a module)."""
    name = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
    return (name or "").partition(".")[0]


def _references(obj: Any, tops: set[str]) -> list[Any]:
    """Base classes, and the module-level objects the code of ``obj`` names (attributes too,
    of the modules of the packages ``tops``: ``module.helper(...)``)."""
    found: list[Any] = list(obj.__mro__[1:]) if inspect.isclass(obj) else []
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    namespace = vars(module) if module is not None else {}
    for code in _code_objects(obj):
        names = _names(code)
        for name in names:
            value = namespace.get(name)
            if inspect.ismodule(value):
                if _top(value) in tops:  # attribute names are co_names too
                    found += [getattr(value, n) for n in names if hasattr(value, n)]
            elif value is not None:
                found.append(value)
    return [_unwrap(f) for f in found if inspect.isclass(f) or callable(f)]


def _constants(obj: Any) -> list[tuple[str, Any]]:
    """(name, value) of the simple module-level constants the code of ``obj`` reads."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    namespace = vars(module) if module is not None else {}
    names = sorted({n for code in _code_objects(obj) for n in _names(code)})
    return [
        (n, namespace[n])
        for n in names
        if n in namespace and _simple(namespace[n]) and len(repr(namespace[n])) < 1000
    ]


def _simple(value: Any) -> bool:
    """Whether ``repr(value)`` is the same in every process (no object addresses)."""
    if isinstance(value, (tuple, frozenset)):
        return all(_simple(v) for v in value)
    return isinstance(value, _CONSTANTS)


def _code_objects(obj: Any) -> list[types.CodeType]:
    """The code objects of a function, or of every method and property of a class."""
    if inspect.isfunction(obj):
        return [obj.__code__]
    if not inspect.isclass(obj):
        return []
    codes = []
    for value in vars(obj).values():
        if isinstance(value, property):
            codes += [f.__code__ for f in (value.fget, value.fset, value.fdel) if f is not None]
            continue
        value = _unwrap(value)
        if inspect.isfunction(value):
            codes.append(value.__code__)
    return codes


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names used by ``code`` and the code nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _followed(obj: Any, tops: set[str]) -> bool:
    """Whether ``obj`` is first-party code: a class or function of the component's own
    top-level package or of oebench (third-party libraries are versioned, and recorded so)."""
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and _top(obj) in tops


#: entries of a cell configuration that fingerprint code and data rather than say which cell
#: it is (``worker``: where a stored cell ran)
FINGERPRINT_FIELDS = ("fingerprints", "model_files", "training_version", "worker")


def cell_identity(config: dict[str, Any]) -> str:
    """A hash of what a cell is (benchmark, seed, components, settings) without what it was
    computed with: cells of equal identity and other fingerprints supersede each other."""
    return canonical_hash({k: v for k, v in config.items() if k not in FINGERPRINT_FIELDS})


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the fingerprints of two configurations of one cell:
    ``["detector 'energy' code", "dataset 'mnist-5k' data files"]``."""
    if "fingerprints" not in old:
        return ["code and data (not fingerprinted by the oebench that stored the cell)"]
    changes = []
    for part, what in (("code", "code"), ("data", "data files")):
        before = old["fingerprints"].get(part) or {}
        after = new.get("fingerprints", {}).get(part) or {}
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                kind, _, label = name.partition(":")
                changes.append(
                    f"the training engine's {what}"
                    if kind == "engine"
                    else f"{kind} {label!r} {what}"
                )
    if old.get("model_files") != new.get("model_files"):
        changes.append(f"model {new.get('names', {}).get('model', '?')!r} weights file")
    if old.get("training_version") != new.get("training_version"):
        changes.append("the training engine's version")
    return changes or ["code or data"]  # (a fingerprint entry this oebench does not name)


#: code fingerprints that decide trained weights (a checkpoint's key): never a detector's
WEIGHTS_CODE = ("model:", "objective:", "engine:")


def cell_fingerprints(
    bench: Any, cell: Any, files: Callable[[str, Any], list[tuple[str, Any]]], engine: str
) -> dict[str, dict[str, str | None]]:
    """The ``fingerprints`` block of a cell's configuration: the code of every component it
    uses (``"detector:energy"``) and of the training engine (``engine``, the digest of its
    code), and a hash of the files of every
    data source it reads (``files(kind, ref)`` lists them, as ``file_fingerprints`` does)."""
    from oebench.registry.lookup import get_component

    used = _components(bench, cell)
    code: dict[str, str | None] = {
        f"{kind}:{ref.key}": code_digest(get_component(kind, ref.name).factory)
        for kind, ref in used
    }
    code["engine:training"] = engine
    data: dict[str, str | None] = {}
    for kind, ref in used:
        found = files(kind, ref) if kind in ("dataset", "outlier source") else []
        if found:
            data[f"{kind}:{ref.key}"] = canonical_hash(found)
    return {"code": code, "data": data}


def _components(bench: Any, cell: Any) -> list[tuple[str, Any]]:
    """(kind, reference) of every component a cell uses, its training's init chain included."""
    used = [("dataset", cell.id_ref), ("model", cell.model_ref)]
    used += [("dataset", ref) for ref in bench.ood_datasets]
    used += [("detector", ref) for ref in bench.detectors]
    for training in bench.lineage(cell.training):
        used.append(("objective", training.objective))
        if training.outliers is not None:
            used.append(("outlier source", training.outliers))
    return used


def weights_code(fingerprints: dict[str, Any]) -> list[str]:
    """The code fingerprints of a cell that decide its trained weights (for checkpoint keys):
    the model's, every objective's of its training chain, the training engine's; without
    their labels, so that renaming a model in a benchmark file retrains nothing."""
    code = fingerprints.get("code") or {}
    return sorted(str(digest) for name, digest in code.items() if name.startswith(WEIGHTS_CODE))
