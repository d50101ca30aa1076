"""``oebench cache``: where cached checkpoints and forward-pass outputs are, and clearing them.

``clear`` deletes only what oebench wrote: in a folder that holds oebench's marker file
(``core.files.CACHE_MARKER``, written when oebench makes the cache folder), and there only
files named as oebench names them (a 20-hex-digit key with its suffix, and the temporary files
of an interrupted write). Anything else, a user's file named like a cache file in a folder
oebench did not make included, is kept.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import click

from oebench.cli.common import Group
from oebench.core import settings
from oebench.errors import UserError

#: sub-folder -> the names oebench gives the files it writes there
OWN_FILES: dict[str, re.Pattern[str]] = {
    "models": re.compile(r"[0-9a-f]{20}\.(?:pt|partial\.pt)(?:\.lock)?"),
    "models/notes": re.compile(r"(?:init-)?[0-9a-f]{20}\.json"),
    "models/splits": re.compile(r"[0-9a-f]{20}\.json"),  # execute.sources.ContentNotes
    "outputs": re.compile(r"[0-9a-f]{20}\.npz(?:\.lock)?"),
}
#: ``atomic_write``'s temporary files: ``.<first 16 characters of the name>.<random>.tmp``
TEMPORARY = re.compile(r"\.(?:init-[0-9a-f]{11}|[0-9a-f]{16})\.[a-z0-9_]+\.tmp")


@click.group(cls=Group)
def cache() -> None:
    """Inspect or clear cached checkpoints and forward-pass outputs."""


def own_files(root: Path, sub: str) -> list[Path]:
    """The files oebench wrote in ``root/sub`` (by their names; nothing else is listed)."""
    folder = root / sub
    if not folder.is_dir():
        return []
    pattern = OWN_FILES[sub]
    return sorted(
        p
        for p in folder.iterdir()
        if (pattern.fullmatch(p.name) or TEMPORARY.fullmatch(p.name))
        and p.is_file()
        and not p.is_symlink()
    )


@cache.command(name="info")
def cache_info() -> None:
    """Where the cache is and how big it is."""
    root = settings.cache_dir()
    for sub in ("models", "outputs"):
        files = [f for s in OWN_FILES if s.split("/")[0] == sub for f in own_files(root, s)]
        size = sum(f.stat().st_size for f in files) / 2**20
        click.echo(f"{root / sub}: {len(files)} files, {size:.1f} MiB")


def marked_root() -> Path | None:
    """The cache folder when oebench may clear it (None when it does not exist); a folder
    without oebench's marker is refused, unless it is the platform's own ``oebench`` folder."""
    from oebench.core.files import CACHE_MARKER, CACHE_MARKER_TEXT

    root = settings.cache_dir()
    if not root.is_dir():
        return None
    marker = root / CACHE_MARKER
    if marker.is_file():
        return root
    if settings.raw("cache_dir") is None:  # the default folder, named for oebench by it
        with contextlib.suppress(OSError):
            marker.write_text(CACHE_MARKER_TEXT)
        return root
    raise UserError(
        f"the cache folder {root} ($OEBENCH_CACHE_DIR) has no {CACHE_MARKER} file, so oebench "
        "did not make it and deletes nothing there; if it holds only oebench's cache, create "
        f"{marker} and run again, else point $OEBENCH_CACHE_DIR at oebench's own folder"
    )


@cache.command(name="clear")
@click.option("--outputs-only", is_flag=True, help="Keep trained checkpoints.")
def cache_clear(outputs_only: bool) -> None:
    """Delete cached forward-pass outputs (and checkpoints unless --outputs-only); only files
    oebench wrote, in a folder oebench made."""
    root = marked_root()
    if root is None:
        click.echo(f"nothing cached at {settings.cache_dir()}")
        return
    subs = ("outputs",) if outputs_only else ("outputs", "models/notes", "models/splits", "models")
    for sub in subs:
        removed = _remove(own_files(root, sub))
        folder = root / sub
        kept = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if not kept and folder.is_dir():
            folder.rmdir()
        if removed or kept:
            note = f"; kept {len(kept)} entries oebench did not write" if kept else ""
            click.echo(f"removed {removed} files from {folder}{note}")


def _remove(files: list[Path]) -> int:
    """Delete ``files``; how many were deleted (one already gone or locked is skipped)."""
    count = 0
    for path in files:
        try:
            path.unlink()
            count += 1
        except OSError:
            continue
    return count
