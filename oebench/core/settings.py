"""Paths and switches: every ``OEBENCH_*`` environment variable is read here, and only here.

Each setting comes from, in order: an ``override`` in force (how ``oebench --debug`` or
``oebench run --data-root DIR --download`` pass their options down), the environment variable,
then the default. ``environ()`` gives the same values as variables for a child process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: setting -> (environment variable, what it holds); the README's table lists the same
VARIABLES: dict[str, tuple[str, str]] = {
    "store": ("OEBENCH_STORE", "results store file"),
    "cache_dir": ("OEBENCH_CACHE_DIR", "cache of trained models, outputs and unpacked data"),
    "data_root": ("OEBENCH_DATA_ROOT", "where dataset files are"),
    "download": ("OEBENCH_DOWNLOAD", "1 allows downloading missing dataset files"),
    "debug": ("OEBENCH_DEBUG", "1 prints full tracebacks of failing plugins"),
    "load_plugins": ("OEBENCH_LOAD_PLUGINS", "comma-separated: load only these plugins"),
    "block_plugins": ("OEBENCH_BLOCK_PLUGINS", "comma-separated: never load these plugins"),
    "executor": ("OEBENCH_EXECUTOR", "where `oebench run` runs cells: local, dask or ray"),
    "workers": ("OEBENCH_WORKERS", "worker processes of a local Dask/Ray cluster"),
    "address": ("OEBENCH_ADDRESS", "a running Dask/Ray cluster to use"),
}
STORE_ENV = VARIABLES["store"][0]
DATA_ROOT_ENV = VARIABLES["data_root"][0]

#: overrides in force, innermost last (see ``override``)
_OVERRIDES: list[dict[str, str]] = []


def raw(name: str) -> str | None:
    """The text of setting ``name`` (a key of ``VARIABLES``), or None when it is not set."""
    for layer in reversed(_OVERRIDES):
        if name in layer:
            return layer[name]
    return os.environ.get(VARIABLES[name][0])


@contextmanager
def override(**values: str | bool | os.PathLike | None) -> Iterator[None]:
    """Use ``values`` (``data_root="/data"``, ``download=True``) over the environment inside
    the block; a value of None or False leaves that setting as it was."""
    unknown = set(values) - set(VARIABLES)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    layer = {
        k: "1" if v is True else str(v) for k, v in values.items() if v not in (None, False, "")
    }
    _OVERRIDES.append(layer)
    try:
        yield
    finally:
        _OVERRIDES.remove(layer)


def snapshot() -> dict[str, str]:
    """Every setting that is set, by name: a worker process runs under ``override(**it)``."""
    values = {name: raw(name) for name in VARIABLES}
    return {name: value for name, value in values.items() if value is not None}


def environ() -> dict[str, str]:
    """Every setting that is set, as environment variables: what a child process needs."""
    values = {VARIABLES[name][0]: raw(name) for name in VARIABLES}
    return {key: value for key, value in values.items() if value is not None}


def _path(name: str) -> Path | None:
    value = raw(name)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """``$OEBENCH_CACHE_DIR``, else the platform's user cache folder (platformdirs): on Linux
    ``$XDG_CACHE_HOME/oebench`` or ``~/.cache/oebench``, on macOS ``~/Library/Caches/oebench``,
    on Windows ``%LOCALAPPDATA%\\oebench\\Cache``."""
    found = _path("cache_dir")
    if found:
        return found
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("oebench", appauthor=False))


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Dataset files: an explicit path, ``--data-root`` / ``$OEBENCH_DATA_ROOT``, or
    ``<cache>/data``."""
    if explicit:
        return Path(explicit).expanduser()
    return _path("data_root") or cache_dir() / "data"


def store_path() -> Path:
    """``$OEBENCH_STORE``, else ``results.sqlite`` in the platform's user data folder
    (``~/.local/share/oebench`` on Linux, honouring ``$XDG_DATA_HOME``)."""
    found = _path("store")
    if found:
        return found
    import platformdirs

    return Path(platformdirs.user_data_dir("oebench", appauthor=False)) / "results.sqlite"


def download_allowed() -> bool:
    """Whether downloads are allowed (``oebench run --download``, ``$OEBENCH_DOWNLOAD=1``)."""
    return raw("download") == "1"


def debug_enabled() -> bool:
    """Whether ``oebench --debug`` (``$OEBENCH_DEBUG=1``) asked for full tracebacks."""
    return raw("debug") not in (None, "", "0")


def plugin_names(name: str) -> set[str] | None:
    """The plugin names in ``load_plugins`` or ``block_plugins``; None when it is not set."""
    value = raw(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}
