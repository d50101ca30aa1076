"""Finding dataset files: explicit root, data root, system locations, then (if allowed) download.

A dataset names the files it needs relative to a directory. ``find_dir`` looks for a directory
holding all of them, in this order: the ``root`` option given in a benchmark file, the data root
(``--data-root`` / ``$OEBENCH_DATA_ROOT`` / ``~/.cache/oebench/data``), well-known system
locations (such as Debian's ``/usr/share/datasets``), and last a download when the user allowed
one (``--download``). When nothing is found it raises a one-line ``DataNotFoundError`` that says
which files go where and how to get them. A ``root`` that does not exist is an error of its own
(``missing_root``), never replaced by another copy of the data: the user named that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from oebench.core.files import file_sha256, mark_cache
from oebench.core.settings import DATA_ROOT_ENV, cache_dir, data_root, download_allowed
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
    can_download = download is not None and download_allowed()
    searched = dirs
    if root and not Path(root).expanduser().is_dir():
        if not can_download:
            missing_root(what, root)
        searched = []  # the download creates the folder root names: no other copy stands in
    for d in searched:
        if all(present(d, r) for r in required):
            return d
    target = dirs[0]
    if can_download:
        mark_cache(target)  # the cache folder's marker, when the data root is in it
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


def missing_root(what: str, root: str | os.PathLike, option: str = "root") -> None:
    """A one-line ``DataNotFoundError`` when the folder an explicit ``root`` (or another
    option, ``option``) names does not exist or is not a folder: a path the user wrote is
    never silently replaced by the data root or a system copy."""
    path = Path(root).expanduser()
    if path.is_dir():
        return
    problem = "is not a folder" if path.exists() else "does not exist"
    given = f"{option} = {str(root)!r}" + (f" ({path})" if str(path) != str(root) else "")
    raise DataNotFoundError(
        f"{what} not found: {given} {problem}; give the folder that holds the files, or leave "
        f"'{option}' out to look in the data root (--data-root, ${DATA_ROOT_ENV}) and the "
        "system locations"
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
    """Download ``url`` to a temporary name next to ``dest``, verify it, then rename it.

    A killed or failed download never leaves a partial ``dest`` behind; with neither checksum
    the file is kept and its sha256 printed so that it can be pinned.
    """
    from torchvision.datasets.utils import download_url

    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.stem}.*.part{dest.suffix}"):  # a killed download's
        stale.unlink(missing_ok=True)
    part = dest.parent / f".{dest.stem}.{os.getpid()}.part{dest.suffix}"
    try:
        download_url(url, str(dest.parent), filename=part.name, md5=md5)
        digest = file_sha256(part)
        if sha256 is not None and digest != sha256.lower():
            raise DataNotFoundError(
                f"{dest}: sha256 {digest} does not match the pinned {sha256}; nothing was kept"
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    if md5 is None and sha256 is None:
        print(
            f"oebench: warning: {dest} has no pinned checksum; its sha256 is {digest} "
            "(pin it with the source's sha256 option)",
            file=sys.stderr,
        )
    return dest


def _stamp(path: Path) -> list[int]:
    """What changes whenever a file's content may have: size, mtime, ctime and inode."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def content_digests(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The sha256 of each file's content, remembered (in the cache folder) by its stamp.

    The stamp includes the inode change time, which no tool can set back, so a file replaced
    by another with the same size and modification time is hashed again.
    """
    on_disk: dict[str, list] | None = None
    digests, new = [], False
    for path in paths:
        resolved = Path(path).resolve()
        stamp = _stamp(resolved)
        known = _DIGESTS.get(str(resolved))
        if known is None or known[:-1] != stamp:
            on_disk = _load_digests() if on_disk is None else on_disk
            known = on_disk.get(str(resolved))
        if known is None or known[:-1] != stamp:
            known, new = [*stamp, file_sha256(resolved)], True
        _DIGESTS[str(resolved)] = known
        digests.append(known[-1])
    if new:
        _save_digests()
    return digests


#: sources with more files than this (image folders of millions of files) are stamped, not read
CONTENT_HASH_LIMIT = 20_000


def file_fingerprints(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Any]]:
    """(name relative to the files' common folder, what identifies its content) per file.

    Up to ``CONTENT_HASH_LIMIT`` files: the sha256 of each file (see ``content_digests``), so a
    replaced file changes cache keys and a merely touched one does not. Beyond it, reading every
    byte of, say, ImageNet-22K would take hours: the stamp (size, mtime, ctime, inode) is used,
    which still changes when a file is replaced (ctime cannot be set back), at the price of
    recomputing after a mere touch. Relative names keep labels that come from folder names
    (class sub-folders) in the key.
    """
    if not paths:
        return []
    resolved = [Path(p).resolve() for p in paths]
    base = Path(os.path.commonpath([p.parent for p in resolved]))
    names = [p.relative_to(base).as_posix() for p in resolved]
    if len(resolved) > CONTENT_HASH_LIMIT:
        return list(zip(names, (_stamp(p) for p in resolved), strict=True))
    return list(zip(names, content_digests(resolved), strict=True))


def content_digest(path: str | os.PathLike) -> str:
    """The sha256 of one file's content (see ``content_digests``)."""
    return content_digests([path])[0]


#: path -> [size, mtime_ns, ctime_ns, inode, sha256], this process's view of the digest file
_DIGESTS: dict[str, list] = {}
#: bump when the digest file's layout changes (2: a checksum per entry)
DIGESTS_FORMAT = 2
#: digest files found damaged in this process (each reported once)
_REPORTED: set[str] = set()


def _digest_file() -> Path:
    return cache_dir() / "file-digests.json"


def _entry_check(path: str, known: list) -> str:
    """A checksum over one remembered file's path, stamp and digest."""
    return hashlib.sha256(json.dumps([path, *known]).encode()).hexdigest()[:16]


def _entry(path: Any, entry: Any) -> list | None:
    """[*stamp, sha256] of one stored entry, None when it is not whole."""
    if not isinstance(path, str) or not isinstance(entry, list) or len(entry) != 6:
        return None
    *known, check = entry
    stamp, digest = known[:4], known[4]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in stamp):
        return None
    if not isinstance(digest, str) or len(digest) != 64 or check != _entry_check(path, known):
        return None
    return known


def _old_entry(entry: Any) -> bool:
    """Whether ``entry`` is one of a digest file written before entries had checksums."""
    return isinstance(entry, list) and len(entry) == 5 and isinstance(entry[4], str)


def _load_digests() -> dict[str, list]:
    """The digests remembered on disk ({} when the file is missing or of another format); a
    damaged file is reported in one line and removed, so its files are hashed again."""
    path = _digest_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return _discard_digests(path, f"unreadable: {type(exc).__name__}")
    if isinstance(data, dict) and "format" not in data and all(map(_old_entry, data.values())):
        return {}  # written before entries had checksums: hashed again, then rewritten
    if not isinstance(data, dict) or data.get("format") != DIGESTS_FORMAT:
        return _discard_digests(path, "not a digest file of this oebench")
    files = data.get("files")
    found = {k: _entry(k, v) for k, v in files.items()} if isinstance(files, dict) else {}
    if not isinstance(files, dict) or any(v is None for v in found.values()):
        return _discard_digests(path, "damaged entries")
    return {k: v for k, v in found.items() if v is not None}


def _discard_digests(path: Path, problem: str) -> dict[str, list]:
    if str(path) not in _REPORTED:
        _REPORTED.add(str(path))
        print(
            f"oebench: warning: ignoring the file digest cache {path} ({problem}); "
            "the data files are hashed again",
            file=sys.stderr,
        )
    with contextlib.suppress(OSError):
        path.unlink()
    return {}


def _save_digests() -> None:
    """Merge this process's digests into the file (atomically); a failure only costs speed."""
    path = _digest_file()
    try:
        merged = {**_load_digests(), **_DIGESTS}
        files = {k: [*v, _entry_check(k, v)] for k, v in merged.items()}
        mark_cache(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".digests.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"format": DIGESTS_FORMAT, "files": files}, fh)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass
