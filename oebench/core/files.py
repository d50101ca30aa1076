"""Files oebench writes: whole or not at all (``atomic_write``; output files the user named
through ``atomic_write_file``, never through a link), cache files whose failure is no error
(``write_cache_file``), their sha256, and the checks on a command's output files
(``--csv``, ``-o``, plot and score folders) made before any work: the folder exists, nothing is
written through a symbolic link, and what gets overwritten is said."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from oebench.errors import UserError


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write ``path`` whole or not at all: ``write(name)`` fills a new temporary file in
    ``path``'s folder, which is synced and renamed over ``path``.

    The temporary file is created exclusively (``mkstemp``), and the rename replaces a
    symbolic link at ``path`` rather than writing to its target. On any failure the temporary
    file is removed and ``path`` is left as it was.
    """
    fd, tmp = _temporary(path)
    os.close(fd)
    try:
        os.chmod(tmp, _new_file_mode())
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_file(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write an output file ``path`` whole or not at all, never through a link: ``write(fh)``
    fills a new temporary file in ``path``'s folder through its own open descriptor ``fh``
    (binary), which is synced and renamed over ``path``.

    Unlike ``atomic_write``, nothing is opened by name: a link or file that someone plants at
    the temporary file's name, or at ``path``, is never written through (the rename replaces
    a link at ``path``; a temporary file swapped while being written is refused).
    """
    fd, tmp = _temporary(path)
    try:
        try:
            os.fchmod(fd, _new_file_mode())
            with os.fdopen(fd, "wb", closefd=False) as fh:
                write(fh)
            os.fsync(fd)
            _still_ours(fd, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_file(path: str | Path, text: str) -> None:
    """Write ``text`` to the output file ``path`` (``atomic_write_file``), encoded as ``open``
    encodes it, line endings as they are."""

    def write(fh: BinaryIO) -> None:
        with open(fh.fileno(), "w", newline="", closefd=False) as out:
            out.write(text)

    atomic_write_file(Path(path), write)


def _temporary(path: Path) -> tuple[int, str]:
    """A new, exclusively created temporary file next to ``path`` (``.<name>.<random>.tmp``)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:16]}.", suffix=".tmp")


def _still_ours(fd: int, tmp: str) -> None:
    """Refuse to rename ``tmp`` when it is no longer the file open as ``fd``."""
    named, mine = os.stat(tmp, follow_symlinks=False), os.fstat(fd)
    if (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
        raise OSError(f"the temporary file {tmp} was replaced while it was written")


def _fsync(name: str) -> None:
    """Flush a written file's content to disk, so a crash after the rename finds it whole."""
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _new_file_mode() -> int:
    """The permissions ``open`` gives a new file (0o666 less the umask), not mkstemp's 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


#: the file that marks a folder as oebench's own cache, written when oebench makes the folder:
#: ``oebench cache clear`` deletes only in a marked folder, and only files of oebench's naming
CACHE_MARKER = ".oebench-cache"
CACHE_MARKER_TEXT = (
    "This folder is oebench's cache (trained checkpoints, forward-pass outputs, notes).\n"
    "`oebench cache clear` deletes only files oebench wrote here, and only in a folder\n"
    "holding this file.\n"
)


def mark_cache(path: str | os.PathLike) -> None:
    """Before oebench creates ``path``: when it lies in the cache folder (``cache_dir()``) and
    that folder does not exist yet or is empty, make the folder with its marker file."""
    from oebench.core.settings import cache_dir

    root = cache_dir().absolute()
    marker = root / CACHE_MARKER
    try:
        Path(path).absolute().relative_to(root)
        if marker.exists() or (root.is_dir() and any(root.iterdir())):
            return
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text(CACHE_MARKER_TEXT)
    except (ValueError, OSError):  # not in the cache, or unwritable (the write itself says so)
        return


def write_cache_file(cache: Any, path: Path, write: Callable[[str], None]) -> bool:
    """Write the cache file ``path`` with ``atomic_write``; True when it was written.

    A cache that cannot be written (full disk, read-only folder, a file where a folder should
    be) is no error: it costs one warning naming the path, and sets ``cache.write_failed``
    (``cache``: the cache object whose files these are, or None), after which that cache
    writes nothing more and the run goes on.
    """
    if getattr(cache, "write_failed", False):
        return False
    try:
        mark_cache(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except (OSError, RuntimeError) as exc:  # torch.save reports write errors as RuntimeError
        if cache is not None:
            cache.write_failed = True
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        print(
            f"oebench: warning: cannot write the cache file {path} ({reason}); "
            "going on without caching",
            file=sys.stderr,
        )
        return False
    return True


def cached_array(
    path: str | os.PathLike, make: Callable[[], Any], shape: tuple[int, ...], dtype: str
) -> Any:
    """A plugin's generated numpy array, cached in the file ``path`` (under ``cache_dir()``):
    read back when the file holds an array of ``shape`` and ``dtype``, else made by ``make()``
    and written atomically (a cache that cannot be written costs one warning, not the run)."""
    import numpy as np

    path = Path(path)
    if path.is_file():
        try:
            found = np.load(path)
            if found.shape == tuple(shape) and found.dtype == np.dtype(dtype):
                return found
        except (OSError, ValueError):
            pass
        remove_cache_file(path)  # damaged or of another shape: made again
    array = make()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    write_cache_file(None, path, write)
    return array


def remove_cache_file(path: Path) -> None:
    """Delete a bad cache file when the folder allows it (a read-only one keeps it)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_output_file(path: str | None, force: bool = False) -> bool:
    """Raise a UserError unless ``path`` can be written; True when it exists (overwritten).

    A symbolic link is refused (its target would be overwritten); with ``force`` the link
    itself is removed so that a new file takes its place.
    """
    if not path:
        return False
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: folder {folder} does not exist")
    if target.is_symlink():
        if not force:
            raise UserError(
                f"{path} is a symbolic link; refusing to write through it "
                "(remove it, or pass --force to replace the link with a new file)"
            )
        target.unlink()
        return False
    if target.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    return target.exists()


def check_output_folder(folder: str | None, pattern: str, force: bool = False) -> set[Path]:
    """Refuse symbolic links among ``folder``'s files matching ``pattern`` (``force`` removes
    them); returns the files already there, so the command can say what it overwrote."""
    if not folder:
        return set()
    base = Path(folder)
    if base.exists() and not base.is_dir():
        raise UserError(f"cannot write into {folder}: it is a file, not a folder")
    if not base.is_dir():
        _check_creatable(base)
        return set()
    links = sorted(p for p in base.glob(pattern) if p.is_symlink())
    if links and not force:
        raise UserError(
            f"{folder} holds {len(links)} symbolic link(s) where output files go, such as "
            f"{links[0].name}; refusing to write through them (remove them, or pass --force)"
        )
    for link in links:
        link.unlink()
    return {p for p in base.glob(pattern) if p.is_file()}


def _check_creatable(folder: Path) -> None:
    """Raise a UserError unless ``folder`` (absent) can be made: its nearest existing parent is
    a folder in which a folder can be made (tried: permissions alone miss ``/proc``)."""
    parent = folder.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write into {folder}: {parent} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".oebench-check-", dir=parent))
    except OSError as exc:
        raise UserError(
            f"cannot write into {folder}: cannot make a folder in {parent} ({exc.strerror or exc})"
        ) from None


def overwritten_note(written: list[Path], existed: set[Path]) -> str | None:
    """``Overwrote 3 existing file(s) in DIR: a.png, b.png, ...`` (None when nothing was)."""
    again = [p for p in written if p in existed]
    if not again:
        return None
    names = ", ".join(p.name for p in again[:3]) + (", ..." if len(again) > 3 else "")
    return f"Overwrote {len(again)} existing file(s) in {again[0].parent}: {names}"
