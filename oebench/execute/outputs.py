"""One forward pass per (model, dataset): logits and penultimate features, cached on disk."""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oebench.contracts.data import TensorImages, adapt_images, to_float
from oebench.contracts.detector import Outputs
from oebench.core.arrayfiles import (
    RowWriter,
    is_mapped,
    map_npz,
    row_slices,
    update_hash,
    write_npz,
)
from oebench.core.files import remove_cache_file, write_cache_file
from oebench.core.settings import cache_dir

#: 2: the file holds its own key, so a file swapped for another is noticed
CACHE_FORMAT = 2


def iterate_batches(
    dataset: Any,
    batch_size: int,
    shape: tuple[int, int, int],
    device: Any,
    order: Any = None,
) -> Iterator[tuple[Any, Any]]:
    """Float [0, 1] image batches at ``shape`` on ``device``, with labels; ``order`` permutes.

    Text datasets (``modality = "text"``) give their int64 token-id batches as they are.
    """
    n = len(dataset) if order is None else len(order)
    on_gpu = getattr(device, "type", str(device)) == "cuda"
    if getattr(dataset, "modality", "image") != "image":
        yield from _token_batches(dataset, batch_size, device, order, on_gpu)
        return
    if isinstance(dataset, TensorImages):
        images, labels = dataset.on(device) if on_gpu else (dataset.images, dataset.labels)
        if order is not None and on_gpu:
            order = order.to(device, non_blocking=True)
        for start in range(0, n, batch_size):
            if order is None:
                x, y = images[start : start + batch_size], labels[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                x, y = images[idx], labels[idx]
            yield adapt_images(to_float(x.to(device)), shape), y.to(device)
        return
    from torch.utils.data import DataLoader, Subset

    data = Subset(dataset, order.tolist()) if order is not None else dataset
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=on_gpu
    )
    for x, y in loader:
        x = x.to(device, non_blocking=on_gpu)
        yield adapt_images(x, shape), y.to(device, non_blocking=on_gpu)


def _token_batches(
    dataset: Any, batch_size: int, device: Any, order: Any, on_gpu: bool
) -> Iterator[tuple[Any, Any]]:
    """Token-id (or other non-image) batches on ``device``, unchanged, with labels."""
    if hasattr(dataset, "on"):
        tokens, labels = dataset.on(device) if on_gpu else (dataset.tokens, dataset.labels)
        if order is not None:
            order = order.to(tokens.device)
        for start in range(0, len(dataset) if order is None else len(order), batch_size):
            idx = (
                slice(start, start + batch_size)
                if order is None
                else order[start : start + batch_size]
            )
            yield tokens[idx].to(device), labels[idx].to(device)
        return
    from torch.utils.data import DataLoader, Subset

    data = Subset(dataset, order.tolist()) if order is not None else dataset
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0):
        yield x.to(device), y.to(device)


def forward(
    model: Any,
    dataset: Any,
    shape: tuple[int, int, int],
    device: Any,
    batch_size: int = 500,
    spill: Path | None = None,
    rows: range | None = None,
) -> Outputs:
    """Run the model once over a dataset (or its ``rows``): float32 logits, features, labels.

    With a ``spill`` folder, outputs of ``MAP_BYTES`` or more go to ``.npy`` files there a
    batch at a time and come back memory-mapped, so no N-sized array is ever in memory.
    """
    import torch

    model.eval()
    order = None if rows is None else torch.arange(rows.start, rows.stop)
    total = len(dataset) if rows is None else len(rows)
    sink = _Sink(total, spill)
    with torch.inference_mode():
        for x, y in iterate_batches(dataset, batch_size, shape, device, order):
            f = model.forward_features(x)
            z = model.forward_head(f).float().cpu().numpy()
            sink.add(logits=z, features=f.float().cpu().numpy(), labels=y.cpu().numpy())
    return sink.outputs()


def shard_rows(total: int, batch: int, i: int, n: int) -> range:
    """Rows of shard ``i`` of ``n`` of ``total``: whole batches of ``batch`` (the last short)."""
    batches = -(-total // batch)
    first, last = batches * i // n, batches * (i + 1) // n
    return range(min(first * batch, total), min(last * batch, total))


def join_outputs(parts: list[Outputs], spill: Path | None) -> Outputs:
    """The outputs of consecutive row shards as one (into ``spill`` files when large)."""
    parts = [p for p in parts if len(p)] or parts[:1]  # (a shard of no rows: a short split)
    sink = _Sink(sum(len(p) for p in parts), spill)
    for part in parts:
        for rows in row_slices(part.logits):
            sink.add(logits=part.logits[rows], features=part.features[rows],
                     labels=part.labels[rows])  # fmt: skip
    return sink.outputs()


class _Sink:
    """Where a forward pass puts its batches: lists in memory, or (from the first batch on,
    when the whole would pass ``MAP_BYTES`` and there is a ``spill`` folder) ``.npy`` files."""

    def __init__(self, total: int, spill: Path | None):
        self.total, self.spill = total, spill
        self.parts: dict[str, list[np.ndarray]] = {}
        self.files: dict[str, RowWriter] | None = None

    def add(self, **batch: np.ndarray) -> None:
        if not self.parts and self.files is None and self.spill is not None:
            row = sum(a[:1].nbytes for a in batch.values())
            if row * self.total >= MAP_BYTES:
                self.files = self._files(batch)
        for name, array in batch.items():
            if self.files is not None:
                self.files[name].write(array)
            else:
                self.parts.setdefault(name, []).append(array)

    def _files(self, first: dict[str, np.ndarray]) -> dict[str, RowWriter] | None:
        """A file per array in the spill folder (None, and memory, where it is not writable)."""
        stem = f".{uuid.uuid4().hex[:16]}"  # named as atomic_write's temporary files
        files: dict[str, RowWriter] = {}
        try:
            self.spill.mkdir(parents=True, exist_ok=True)
            for name, a in first.items():
                path = self.spill / f"{stem}.{name}_{os.getpid()}.tmp"
                files[name] = RowWriter(path, self.total, a)
        except OSError as exc:
            for w in files.values():
                w.abandon()
            print(f"oebench: warning: cannot spill outputs to {self.spill} ({exc.strerror}); "
                  "keeping them in memory", file=sys.stderr)  # fmt: skip
            return None
        return files

    def outputs(self) -> Outputs:
        if self.files is not None:
            arrays = {name: w.close() for name, w in self.files.items()}
            for w in self.files.values():
                os.unlink(w.path)  # mapped: the space goes when the arrays do
        else:
            arrays = {k: np.concatenate(v) for k, v in self.parts.items()}
        if not arrays:  # an empty dataset
            return Outputs(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32),
                           np.zeros(0, np.int64))  # fmt: skip
        return Outputs(arrays["logits"], arrays["features"], arrays["labels"])


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = arrays[name]
        h.update(f"{name}{arr.dtype}{arr.shape}".encode())
        update_hash(h, arr)  # a block at a time: a mapped array is never read in whole
    return h.hexdigest()


#: the most recent outputs and scores kept in memory as well, in bytes: a cell reads each of
#: its outputs once, so a run of many cells needs no more (the rest is on disk)
MEMORY_BYTES = 256 * 2**20
#: at most this many entries kept in memory (a mapped entry holds a file descriptor)
MEMORY_ENTRIES = 64
#: outputs of at least this many bytes live in files, memory-mapped, never in memory whole
MAP_BYTES = 64 * 2**20


#: what a cache entry holds: named arrays (``logits``/``features``/``labels``, or ``scores``)
Arrays = dict[str, np.ndarray]


def _nbytes(arrays: Arrays) -> int:
    """The bytes ``arrays`` hold in memory (a mapped array's are the file's)."""
    return sum(0 if is_mapped(a) else a.nbytes for a in arrays.values())


def _framed(key: str, arrays: Arrays) -> Arrays:
    """The arrays as a cache file holds them: with the format and the key."""
    return {**arrays, "format": np.array(CACHE_FORMAT), "key": np.array(key)}


def _sealed(arrays: Arrays) -> Arrays:
    """The arrays made read-only: the cache's own, never written again (the checksum that
    is kept with them catches a write that goes around the flag)."""
    for value in arrays.values():
        value.flags.writeable = False
    return arrays


@dataclass
class CachedOutputs(Outputs):
    """Outputs as the cache holds them: read-only, with the key and checksum they are kept
    under, so that a change made to them in memory is noticed."""

    key: str = ""
    checksum: str = ""

    def intact(self) -> bool:
        """Whether the arrays still hash to the checksum they were stored or loaded with
        (read-only mappings of a verified file are: nothing in this process can write them)."""
        return _unwritable(_outputs_arrays(self)) or (
            _checksum(_framed(self.key, _outputs_arrays(self))) == self.checksum
        )


def _unwritable(arrays: Arrays) -> bool:
    """Whether every array is a read-only mapping of a file."""
    return all(is_mapped(a) and not a.flags.writeable for a in arrays.values())


def _outputs_arrays(out: Outputs) -> Arrays:
    found = {"logits": out.logits, "features": out.features, "labels": out.labels}
    return {name: value for name, value in found.items() if value is not None}


class OutputCache:
    """Outputs and detector scores on disk under ``<cache>/outputs/<key>.npz``, verified by
    checksum (and the key the file holds) on read; the most recent also in memory, up to
    ``MEMORY_BYTES``, verified against the same checksum on every read. Every array it hands
    out is read-only."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        from collections import OrderedDict

        self.root = (root or cache_dir()) / "outputs"
        self.enabled = enabled
        #: key -> (read-only arrays, the checksum of their file)
        self._memory: OrderedDict[str, tuple[Arrays, str]] = OrderedDict()
        self._memory_bytes = 0
        #: set after a failed write: the cache is read but no longer written
        self.write_failed = False
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def spill(self) -> Path:
        """Where a forward pass writes outputs too large for memory (its files, named as
        ``atomic_write``'s temporary ones, are gone once mapped)."""
        return self.root

    def get_or_compute(self, key: str, compute: Callable[[], Outputs]) -> CachedOutputs:
        """Outputs for ``key``: from memory, from a verified file, or computed and stored."""
        found = self._lookup(key, "logits")
        if found is None:
            found = self._store(key, _outputs_arrays(compute()))
        arrays, checksum = found
        return CachedOutputs(
            arrays["logits"], arrays.get("features"), arrays.get("labels"), key, checksum
        )

    def cached_scores(self, key: str) -> np.ndarray | None:
        """A detector's scores for ``key`` (read-only) from memory or a verified file, or None."""
        found = self._lookup(key, "scores")
        return None if found is None else found[0]["scores"]

    def keep_scores(self, key: str, scores: np.ndarray) -> np.ndarray:
        """Store a detector's scores under ``key``; returns the cache's read-only copy."""
        return self._store(key, {"scores": np.array(scores, copy=True)})[0]["scores"]

    def discard(self, key: str) -> None:
        """Forget ``key`` and remove its file (what a joined whole holds again)."""
        self.forget(key)
        if self.enabled:
            remove_cache_file(self.path(key))

    def forget(self, key: str) -> None:
        """Let the arrays of ``key`` held in memory go (the file, if any, stays)."""
        if key in self._memory:
            arrays, _ = self._memory.pop(key)
            self._memory_bytes -= _nbytes(arrays)

    def _lookup(self, key: str, main: str) -> tuple[Arrays, str] | None:
        """The arrays of ``key`` (an entry holding ``main``) with their checksum, or None."""
        found = self._held(key)
        if found is None and self.enabled:
            found = self._read(key)
            if found is not None:
                self._keep(key, *found)
        if found is None or main not in found[0]:  # (an entry of another kind: computed again)
            return None
        self.hits += 1
        return found

    def _store(self, key: str, arrays: Arrays) -> tuple[Arrays, str]:
        """Seal computed arrays, write them (when enabled) and hold them in memory."""
        self.misses += 1
        arrays = _sealed(arrays)
        framed = _framed(key, arrays)
        checksum = _checksum(framed)
        if self.enabled and self._write(key, framed, checksum) and _unwritable(arrays):
            found = map_npz(self.path(key))  # spilled arrays: read in place from the cache file
            arrays = _sealed({k: found[k] for k in arrays})
        self._keep(key, arrays, checksum)
        return arrays, checksum

    def _held(self, key: str) -> tuple[Arrays, str] | None:
        """The arrays of ``key`` held in memory, when they still match their checksum; a
        changed entry is dropped (and said), never served."""
        if key not in self._memory:
            return None
        arrays, checksum = self._memory[key]
        if not _unwritable(arrays) and _checksum(_framed(key, arrays)) != checksum:
            print(
                f"oebench: the cached arrays {key} held in memory were changed; recomputing",
                file=sys.stderr,
            )
            self.forget(key)
            return None
        self._memory.move_to_end(key)
        return arrays, checksum

    def _keep(self, key: str, arrays: Arrays, checksum: str) -> None:
        """Hold ``arrays`` in memory, letting the oldest go beyond ``MEMORY_BYTES``."""
        self.forget(key)
        self._memory[key] = (arrays, checksum)
        self._memory_bytes += _nbytes(arrays)
        while len(self._memory) > 1 and (
            self._memory_bytes > MEMORY_BYTES or len(self._memory) > MEMORY_ENTRIES
        ):
            _, (old, _) = self._memory.popitem(last=False)
            self._memory_bytes -= _nbytes(old)

    def _read(self, key: str) -> tuple[Arrays, str] | None:
        """The arrays of a verified cache file (read-only) with their checksum, or None."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            if path.stat().st_size >= MAP_BYTES:  # mapped in place, verified a block at a time
                arrays = map_npz(path)
            else:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
            stored = str(arrays.pop("checksum"))
            if stored != _checksum(arrays) or int(arrays.pop("format")) != CACHE_FORMAT:
                raise ValueError("checksum mismatch")
            if str(arrays.pop("key")) != key:
                raise ValueError("it holds the outputs of another cache key")
        except Exception as exc:
            print(
                f"oebench: ignoring corrupt cache file {path.name} ({exc}); recomputing",
                file=sys.stderr,
            )
            remove_cache_file(path)
            return None
        return _sealed(arrays), stored

    def _write(self, key: str, framed: Arrays, checksum: str) -> bool:
        def write(tmp: str) -> None:
            write_npz(tmp, {"checksum": np.array(checksum), **framed})

        return write_cache_file(self, self.path(key), write)
