"""``oebench.api.cached_array``: a plugin's generated array, cached in a file and checked when
read back (a damaged or wrong-shaped file is made again, an unwritable cache is no error)."""

import numpy as np

from oebench.api import cached_array


def test_made_once_then_read_back(tmp_path):
    calls = []
    make = lambda: calls.append(1) or np.arange(6, dtype=np.uint8).reshape(2, 3)  # noqa: E731
    path = tmp_path / "c" / "a.npy"
    first = cached_array(path, make, (2, 3), "uint8")
    again = cached_array(path, make, (2, 3), "uint8")
    assert calls == [1] and np.array_equal(first, again) and path.is_file()


def test_a_damaged_or_wrong_shaped_file_is_made_again(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((3, 3), dtype=np.uint8))  # another shape
    got = cached_array(path, lambda: np.ones((2, 3), dtype=np.uint8), (2, 3), "uint8")
    assert got.shape == (2, 3) and np.load(path).shape == (2, 3)
    path.write_bytes(b"\x93NUMPY truncated")
    got = cached_array(path, lambda: np.full((2, 3), 7, dtype=np.uint8), (2, 3), "uint8")
    assert (got == 7).all() and (np.load(path) == 7).all()


def test_an_unwritable_cache_warns_and_returns_the_array(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    got = cached_array(blocker / "a.npy", lambda: np.ones(4, dtype=np.uint8), (4,), "uint8")
    assert (got == 1).all()
    assert "cannot write the cache file" in capsys.readouterr().err
