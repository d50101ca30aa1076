"""Arrays larger than memory: ``.npy`` files written a batch at a time, ``.npz`` files written
member by member and memory-mapped member by member, and mapped pages let go after use.

An ``.npz`` file is a zip of ``.npy`` members; written uncompressed (``ZIP_STORED``, as
``numpy.savez`` does), each member's data lies whole in the file, so it can be mapped in
place. File-backed pages count in a process's resident memory while they are mapped in, so a
pass over a mapped array lets them go block by block (``release_pages``).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: bytes a block of rows holds when an array is read, hashed or copied a block at a time
BLOCK_BYTES = 16 * 2**20


def is_mapped(array: np.ndarray | None) -> bool:
    """Whether ``array`` (or the array it is a view of) reads a memory-mapped file."""
    return getattr(array, "_mmap", None) is not None


def release_pages(array: np.ndarray | None) -> None:
    """Let the pages of a memory-mapped file that ``array`` reads go (they are read again from
    the file, or the OS's page cache, when next touched); no-op for an in-memory array."""
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def block_rows(array: np.ndarray) -> int:
    """Rows per block of about ``BLOCK_BYTES``."""
    row = max(1, array[:1].nbytes if array.ndim else array.nbytes)
    return max(1, BLOCK_BYTES // row)


def row_slices(array: np.ndarray, rows: int | None = None) -> Iterator[slice]:
    """Consecutive row slices of ``array`` (``rows`` each, else about ``BLOCK_BYTES``)."""
    rows = rows or block_rows(array)
    for start in range(0, len(array), rows):
        yield slice(start, start + rows)


def update_hash(h: hashlib._Hash, array: np.ndarray) -> None:
    """Feed the C-order bytes of ``array`` to ``h`` a block at a time (same digest as whole)."""
    if array.ndim == 0:
        h.update(np.ascontiguousarray(array))
        return
    for part in row_slices(array):
        h.update(np.ascontiguousarray(array[part]))
        release_pages(array)


def load_rows(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only (the OS refuses any write through it)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


class RowWriter:
    """A ``.npy`` file of ``rows`` rows, written a batch of rows at a time (never mapped)."""

    def __init__(self, path: Path, rows: int, first: np.ndarray):
        self.path, self.rows, self.written = path, rows, 0
        self.dtype, self.tail = first.dtype, first.shape[1:]
        self._fh = open(path, "wb")  # noqa: SIM115 (closed by ``close``)
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (rows, *self.tail),
        }
        np.lib.format.write_array_header_2_0(self._fh, header)

    def write(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
        if batch.shape[1:] != self.tail or self.written + len(batch) > self.rows:
            raise ValueError(f"{self.path.name}: a batch of shape {batch.shape} does not fit")
        self._fh.write(batch.data)
        self.written += len(batch)

    def abandon(self) -> None:
        """Close and remove the file, unfinished."""
        self._fh.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> np.ndarray:
        """Close the file (it must be full) and map it read-only."""
        self._fh.close()
        if self.written != self.rows:
            raise ValueError(f"{self.path.name}: {self.written} of {self.rows} rows were written")
        return load_rows(self.path)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``numpy.savez`` (uncompressed, zip64), each member copied a block at a time."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            array = np.asanyarray(array)
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                header = np.lib.format.header_data_from_array_1_0(array)
                np.lib.format.write_array_header_2_0(fh, header)
                if array.ndim == 0:
                    fh.write(np.ascontiguousarray(array).data)
                    continue
                for part in row_slices(array):
                    fh.write(np.ascontiguousarray(array[part]).data)
                    release_pages(array)


def map_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The members of an uncompressed ``.npz`` file: arrays of rows memory-mapped read-only in
    place, the others (0-d, empty) read; ``ValueError`` for a compressed or odd member."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename} cannot be mapped")
            fh.seek(info.header_offset)
            local = fh.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"member {info.filename}: no local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            read = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }
            if version not in read:
                raise ValueError(f"member {info.filename}: .npy version {version}")
            shape, fortran, dtype = read[version](fh)
            if dtype.hasobject:
                raise ValueError(f"member {info.filename} holds objects")
            if len(shape) == 0 or 0 in shape:
                with zf.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            order = "F" if fortran else "C"
            out[name] = np.memmap(path, dtype, "r", offset=fh.tell(), shape=shape, order=order)
    return out
