"""Checks on the files a command writes (``--csv``, ``-o``, plot and score folders), made
before any work: the folder exists, nothing is written through a symbolic link, and what gets
overwritten is said."""

from __future__ import annotations

from pathlib import Path

from oebench.errors import UserError


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
