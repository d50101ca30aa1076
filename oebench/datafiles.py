"""Finding dataset files: explicit root, data root, system locations, then (if allowed) download.

A dataset names the files it needs relative to a directory. ``find_dir`` looks for a directory
holding all of them, in this order: the ``root`` option given in a benchmark file, the data root
(``--data-root`` / ``$OEBENCH_DATA_ROOT`` / ``~/.cache/oebench/data``), well-known system
locations (such as Debian's ``/usr/share/datasets``), and last a download when the user allowed
one (``--download``). When nothing is found it raises a one-line ``DataNotFoundError`` that says
which files go where and how to get them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from oebench.data import DATA_ROOT_ENV, data_root, download_allowed
from oebench.errors import DataNotFoundError

#: a required file, or a tuple of acceptable alternatives (e.g. a file or its ``.gz``)
Required = str | tuple[str, ...]


def search_dirs(
    subdir: str = "",
    root: str | os.PathLike | None = None,
    system: Sequence[str | os.PathLike] = (),
) -> list[Path]:
    """Directories to look in, in order: ``root/subdir`` and ``root``, data root, system ones."""
    dirs: list[Path] = []
    if root:
        explicit = Path(root).expanduser()
        dirs += [explicit / subdir, explicit]
    dirs.append(data_root() / subdir)
    dirs += [Path(s) for s in system]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def present(directory: Path, required: Required) -> Path | None:
    """The first alternative of ``required`` that exists under ``directory``."""
    for name in (required,) if isinstance(required, str) else required:
        if (directory / name).exists():
            return directory / name
    return None


def find_dir(
    what: str,
    required: Sequence[Required],
    *,
    subdir: str = "",
    root: str | os.PathLike | None = None,
    system: Sequence[str | os.PathLike] = (),
    download: Callable[[Path], None] | None = None,
    how: str = "",
) -> Path:
    """The first search directory holding every ``required`` file; else download or raise.

    ``download(target)`` is called with the first search directory (``root/subdir``, or the data
    root's ``subdir``) only when ``download_allowed()``; ``how`` tells the user how to get the
    files by hand (a URL, an apt package); ``{target}`` in it becomes that first directory.
    """
    dirs = search_dirs(subdir, root, system)
    for d in dirs:
        if all(present(d, r) for r in required):
            return d
    target = dirs[0]
    if download is not None and download_allowed():
        target.mkdir(parents=True, exist_ok=True)
        try:
            download(target)
        except Exception as exc:  # network errors, checksum mismatches
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DataNotFoundError(
                f"{what}: download into {target} failed: {type(exc).__name__}: {first}"
            ) from exc
        if all(present(target, r) for r in required):
            return target
    raise DataNotFoundError(
        missing_message(what, required, dirs, target, can_download=download is not None, how=how)
    )


def missing_message(
    what: str,
    required: Sequence[Required],
    dirs: Sequence[Path],
    target: Path,
    *,
    can_download: bool,
    how: str = "",
) -> str:
    """One line: which files, where they were looked for, where to put them, how to get them."""
    files = describe_files(required)
    places = ", ".join(str(d) for d in dirs)
    msg = f"{what} not found: expected {files} in one of: {places}."
    if how:
        msg += " " + how.replace("{target}", str(target)).rstrip(".") + "."
    if can_download:
        if download_allowed():
            msg += f" The download into {target} did not produce them."
        else:
            msg += f" Rerun with --download to fetch them into {target}."
    msg += f" Or point --data-root (${DATA_ROOT_ENV}) or the dataset's 'root' option at them."
    return msg


def describe_files(required: Sequence[Required]) -> str:
    """``cifar-10-batches-py/{data_batch_1, test_batch}``: names grouped by folder."""
    groups: dict[str, list[str]] = {}
    for r in required:
        alternatives = (r,) if isinstance(r, str) else r
        parent, _, _ = alternatives[0].rpartition("/")
        names = [
            a[len(parent) + 1 :] if parent and a.startswith(parent + "/") else a
            for a in alternatives
        ]
        if len(names) == 2 and names[1].startswith(names[0]):
            names = [f"{names[0]}[{names[1][len(names[0]) :]}]"]
        groups.setdefault(parent, []).append(" or ".join(names))
    parts = []
    for parent, names in groups.items():
        if not parent:
            parts += names
        elif len(names) == 1:
            parts.append(f"{parent}/{names[0]}")
        else:
            parts.append(f"{parent}/{{{', '.join(names)}}}")
    return ", ".join(parts)


def fetch(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None) -> Path:
    """Download ``url`` to the file ``dest`` (torchvision's downloader), then verify checksums."""
    from torchvision.datasets.utils import download_url

    dest.parent.mkdir(parents=True, exist_ok=True)
    download_url(url, str(dest.parent), filename=dest.name, md5=md5)
    if sha256 is not None and file_sha256(dest) != sha256.lower():
        dest.unlink()
        raise DataNotFoundError(f"{dest}: sha256 does not match {sha256}; the file was removed")
    return dest


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
