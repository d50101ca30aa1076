"""Files written whole or not at all, cache files whose failure is no error, one file hash."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

import oebench.core.files as files
from oebench.core.files import atomic_write, file_sha256, remove_cache_file, write_cache_file


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    atomic_write(path, lambda tmp: Path(tmp).write_text("new"))
    assert path.read_text() == "new" and leftovers(tmp_path) == []

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        atomic_write(path, broken)
    assert path.read_text() == "new" and leftovers(tmp_path) == []


def test_atomic_write_replaces_a_link_and_never_writes_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "link.txt"
    link.symlink_to(victim)
    atomic_write(link, lambda tmp: Path(tmp).write_text("mine"))
    assert not link.is_symlink() and link.read_text() == "mine"
    assert victim.read_text() == "precious"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_atomic_write_gives_the_permissions_of_a_new_file(tmp_path):
    umask = os.umask(0o027)
    try:
        files._new_file_mode.cache_clear()
        atomic_write(tmp_path / "f", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(umask)
        files._new_file_mode.cache_clear()
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


class Cache:
    write_failed = False


def test_an_unwritable_cache_warns_once_and_stops_writing(tmp_path, capsys):
    (tmp_path / "file").write_text("a file where a folder should be")
    cache = Cache()
    path = tmp_path / "file" / "sub" / "x.json"
    assert not write_cache_file(cache, path, lambda tmp: Path(tmp).write_text("{}"))
    assert cache.write_failed
    assert capsys.readouterr().err.count("cannot write the cache file") == 1
    good = tmp_path / "ok" / "y.json"
    assert not write_cache_file(cache, good, lambda tmp: Path(tmp).write_text("{}"))
    assert not good.exists() and capsys.readouterr().err == ""  # that cache writes no more
    assert write_cache_file(None, good, lambda tmp: Path(tmp).write_text("{}"))  # no cache
    assert good.read_text() == "{}" and leftovers(good.parent) == []


def test_remove_cache_file_never_fails(tmp_path):
    path = tmp_path / "x.npz"
    remove_cache_file(path)  # missing: fine
    path.write_text("x")
    remove_cache_file(path)
    assert not path.exists()


def test_file_sha256_reads_in_chunks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 5)
    (tmp_path / "big").write_bytes(data)
    assert file_sha256(tmp_path / "big") == hashlib.sha256(data).hexdigest()
