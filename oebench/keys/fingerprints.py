"""Fingerprints: short hashes of everything that decides a result, in one place.

- configuration: ``canonical_hash`` (a benchmark's settings, a cell's configuration);
- code: ``code_digest`` hashes a component's code and everything that code reaches, so edited
  code is never served from a stale cache, while editing one detector in a file of several
  leaves the others' results valid (below);
- data files: ``file_fingerprints`` / ``content_digest`` (sha256 of each file, remembered by
  its stamp; see ``oebench.core.datafiles``);
- model weights: ``model_digest``.

``describe_changes`` names what differs between two cells' fingerprint blocks.

What a code fingerprint covers: starting from a component's class or function, ``closure``
follows, transitively through the first-party packages (the component's own top-level package
and ``oebench``), base classes, methods, properties and class attributes; the names its code
reads from module globals, attributes of first-party modules (``module.helper``, also
``package.module.helper``), imports inside functions, default argument values and closure
cells (``oebench.keys.members``). A first-party class or function met is followed (its
meaning is hashed, not its text: its syntax tree without docstrings, line or column numbers
(``oebench.keys.pyfiles.code_text``), so comments, docstrings and formatting change nothing;
code made by ``exec`` or ``type()`` by its compiled code); a constant of any type by its
canonical text (``oebench.keys.values``: containers item by item, numpy arrays and tensors by
dtype, shape and bytes, other objects by class and attributes); a third-party class, function
or module by its name (libraries are versioned, and recorded so); module state (a name its
module's functions rebind or change in place: caches) by the syntax tree of its declarations,
since its value of the moment depends on what ran before. Where it cannot tell (a value
with no canonical text, a computed ``getattr`` on a first-party module, ``globals()``,
``eval``, ``import_module(name)``), it hashes every ``.py`` file of the package involved
(``package_digest``), never nothing. Nothing hashed depends on
the process or the machine (no ``id()``, no address, paths inside a package as relative).
Each source is read once per process: the code that runs is the code that was imported, so a
file edited during a run does not change the run's keys half-way (``clear_caches`` forgets
them, for tests that edit code in place).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oebench.bench.matrix import canonical_hash
from oebench.core.datafiles import content_digest, content_digests, file_fingerprints
from oebench.core.files import file_sha256
from oebench.keys import members
from oebench.keys.members import Member, unwrap
from oebench.keys.pyfiles import code_text, file_digest, parse
from oebench.keys.values import Opaque, canonical

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


def model_digest(model: Any) -> str:
    """A hash of every parameter and buffer of a model: the digest of its weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def code_digest(obj: Any) -> str | None:
    """A hash of a component's code (class or function) and of everything it reaches, so that
    edited code is never served from a stale cache: the whole file where its source cannot be
    isolated, ``None`` where there is no source at all."""
    root = obj if isinstance(obj, types.FunctionType) else unwrap(obj)  # a wrapper is code too
    found = closure(root)
    if found[0].text is None:
        return file_digest(root) or _package_part(members.top(root))
    parts = [m.text if m.text is not None else str(_no_source(m.obj)) for m in found]
    wide = {top for m in found for top in m.wide}
    if root is not obj:  # a partial's arguments, a bound method's instance
        try:
            parts.append(canonical(obj, lambda _: None))
        except Opaque:
            wide.add(members.top(root))
    parts += [str(_package_part(top)) for top in sorted(wide)]
    # sorted: the order the closure was found in follows set order, which varies by process
    return hashlib.sha256("\n\0".join(sorted(parts)).encode()).hexdigest()[:16]


def _no_source(obj: Any) -> str | None:
    """What stands for code without source: its file's digest, else its package's."""
    return file_digest(obj) or _package_part(members.top(obj))


def _package_part(top: str) -> str | None:
    digest = package_digest(top) if top else None
    return f"<package {top}> {digest}" if digest else None


@functools.cache
def closure(obj: Any) -> tuple[Member, ...]:
    """``obj``'s member first, then every first-party member its code reaches."""
    homes = {members.top(obj), _home(obj), *FIRST_PARTY}
    tops = frozenset(homes - {"", "__main__", *sys.stdlib_module_names})
    seen: dict[int, Member] = {}  # by id: to find each object once, never hashed
    todo = [obj]
    while todo:
        item = todo.pop()
        if id(item) not in seen:
            seen[id(item)] = found = members.member(item, tops)
            todo += found.refs
    return tuple(seen.values())


def _home(obj: Any) -> str:
    """The top-level package of the first class of ``obj``'s MRO that its module holds under
    its name (a class made by ``type()`` may say ``abc`` is its module)."""
    for cls in obj.__mro__ if inspect.isclass(obj) else ():
        module = sys.modules.get(cls.__module__)
        if getattr(module, cls.__name__, None) is cls:
            return members.top(cls)
    return members.top(obj)


@functools.cache
def package_digest(top: str) -> str | None:
    """A hash of every ``.py`` file of a top-level package (its path inside the package and
    its content), or of the file of a top-level module; None when it has no files."""
    module = sys.modules.get(top)
    folders = sorted(str(p) for p in getattr(module, "__path__", None) or [])
    file = getattr(module, "__file__", None)
    if not folders:
        return file_sha256(Path(file))[:16] if file and Path(file).is_file() else None
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                name = path.relative_to(folder).as_posix()
                h.update(f"{name}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()[:16]


def clear_caches() -> None:
    """Forget every source and file read so far (for tests that edit code in place)."""
    for cached in (closure, package_digest, parse, members.member, file_digest, code_text):
        cached.cache_clear()


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
