"""Files oebench writes: whole or not at all (``atomic_write``), cache files whose failure is
no error (``write_cache_file``), their sha256, and the checks on a command's output files
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
from typing import Any

from oebench.errors import UserError


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write ``path`` whole or not at all: ``write(name)`` fills a new temporary file in
    ``path``'s folder, which is synced and renamed over ``path``.

    The temporary file is created exclusively (``mkstemp``), and the rename replaces a
    symbolic link at ``path`` rather than writing to its target. On any failure the temporary
    file is removed and ``path`` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:16]}.", suffix=".tmp")
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


def overwritten_note(written: list[Path], existed: set[Path]) -> str | None:
    """``Overwrote 3 existing file(s) in DIR: a.png, b.png, ...`` (None when nothing was)."""
    again = [p for p in written if p in existed]
    if not again:
        return None
    names = ", ".join(p.name for p in again[:3]) + (", ..." if len(again) > 3 else "")
    return f"Overwrote {len(again)} existing file(s) in {again[0].parent}: {names}"
