"""Arrays that may live on disk: row blocks of an output array, memory-mapped or not.

At ImageNet scale the engine hands detectors memory-mapped outputs (``numpy.memmap``, read
only). Read them in row blocks with ``row_blocks``: each block is a copy, and the pages of the
file that were mapped to read it are let go again, so a pass over an array of any size holds
one block in memory, not the file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from oebench.core.arrayfiles import is_mapped, load_rows, release_pages

__all__ = ["BLOCK_ROWS", "is_mapped", "load_rows", "release_pages", "row_blocks"]

#: rows per block when none are asked for
BLOCK_ROWS = 4096


def row_blocks(
    array: np.ndarray, rows: int | None = None, dtype: type = np.float64
) -> Iterator[tuple[slice, np.ndarray]]:
    """Consecutive row blocks of ``array`` (``rows`` each) as ``dtype`` copies, with their rows;
    the mapped pages of each block are let go once it is copied."""
    rows = rows or BLOCK_ROWS
    for start in range(0, len(array), rows):
        part = slice(start, start + rows)
        block = np.array(array[part], dtype=dtype)
        release_pages(array)
        yield part, block
