"""What a cell's weights hash to, known without loading them (or torch).

Forward-pass outputs and detector scores are cached under the hash of the weights that made
them (``oebench.keys.fingerprints.model_digest``). Computing it means building the model and
loading its checkpoint, which costs a torch import (about 1.3 s) even when every output is
cached. So the runner leaves two small notes in the checkpoint cache:

- ``init-<hash>.json``: the digest of a model's seeded initial weights (which the checkpoint
  key hashes), keyed by everything that makes them: the model and ID dataset options, seed,
  the code of every component but the detectors, the data fingerprints, torch's version and
  the ``Classifier`` wrapper's source;
- ``<checkpoint key>.json``: the digest of the trained weights and the training seconds,
  with the sha256 of the checkpoint file they were read from.

A note is believed only while the checkpoint file still has that sha256 (about 1 ms for a
small model); any other state (no note, a replaced or damaged file, the cache switched off)
makes the runner load the model and compute the digest as before, and write the note again.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from oebench.bench.matrix import canonical_hash
from oebench.core.files import file_sha256

#: bump when what a note holds, or how its key is made, changes
NOTE_FORMAT = 1


def torch_version() -> str:
    """``torch.__version__``, read without importing torch when it is not loaded yet."""
    if "torch" in sys.modules:
        return str(sys.modules["torch"].__version__)
    spec = find_spec("torch")
    folder = (spec.submodule_search_locations or [None])[0] if spec else None
    try:
        text = (Path(folder) / "version.py").read_text()
        return re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M).group(1)
    except (TypeError, OSError, AttributeError):  # unusual layouts: the installed version
        from importlib.metadata import version

        return version("torch")


def _file_sha256(path: Path) -> str | None:
    """The file's sha256, None when it cannot be read."""
    try:
        return file_sha256(path)
    except OSError:
        return None


@functools.cache
def _wrapper_digest() -> str | None:
    """sha256 of ``contracts/model.py`` (the ``Classifier`` wrapper), read once per process."""
    spec = find_spec("oebench.contracts.model")
    return _file_sha256(Path(spec.origin)) if spec and spec.origin else None


def init_note_key(config: dict[str, Any]) -> str:
    """The key of the note on a cell's seeded initial weights (``config``: the cell's)."""
    prints = config.get("fingerprints") or {}
    code = {k: v for k, v in (prints.get("code") or {}).items() if not k.startswith("detector:")}
    return canonical_hash(
        {
            "format": NOTE_FORMAT,
            "id_dataset": config.get("id_dataset"),
            "model": config.get("model"),
            "model_files": config.get("model_files"),
            "seed": config.get("seed"),
            "code": code,
            "data": prints.get("data"),
            "torch": torch_version(),
            "classifier": _wrapper_digest(),
        }
    )


class WeightNotes:
    """The notes under ``<checkpoint cache>/notes/``; disabled with the cache."""

    def __init__(self, checkpoints: Any):
        self.checkpoints = checkpoints
        self.root = Path(checkpoints.root) / "notes"

    @property
    def enabled(self) -> bool:
        return bool(self.checkpoints.enabled)

    def init_digest(self, note_key: str) -> str | None:
        """The seeded initial weights' digest, when noted."""
        note = self._read(f"init-{note_key}")
        return note.get("digest") if note else None

    def note_init(self, note_key: str, digest: str) -> None:
        self._write(f"init-{note_key}", {"digest": digest})

    def trained(self, key: str) -> tuple[str, float] | None:
        """(digest, training seconds) of checkpoint ``key``, while its file is the one noted."""
        note = self._read(key)
        if not note or note.get("file") != _file_sha256(self.checkpoints.path(key)):
            return None
        return note["digest"], float(note["seconds"])

    def note_trained(self, key: str, digest: str, seconds: float) -> None:
        """Note the digest of the weights just read from (or saved as) checkpoint ``key``."""
        file = _file_sha256(self.checkpoints.path(key))
        if file is not None:
            self._write(key, {"digest": digest, "seconds": float(seconds), "file": file})

    def _read(self, name: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        try:
            note = json.loads((self.root / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return note if isinstance(note, dict) and note.get("format") == NOTE_FORMAT else None

    def _write(self, name: str, note: dict[str, Any]) -> None:
        from oebench.core.files import write_cache_file

        if not self.enabled:
            return
        text = json.dumps({"format": NOTE_FORMAT, **note}, sort_keys=True)
        path = self.root / f"{name}.json"
        write_cache_file(self.checkpoints, path, lambda tmp: Path(tmp).write_text(text))
