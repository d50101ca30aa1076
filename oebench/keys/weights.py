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
  with the sha256 of the checkpoint file they were read from, and the platform the training
  ran on (``oebench.core.platforms``; absent when unknown), which a cell scored from it
  records even when another process or machine trained it.

A note is believed only while the checkpoint file still has that sha256 (about 1 ms for a
small model); any other state (no note, a replaced or damaged file, the cache switched off)
makes the runner load the model and compute the digest as before, and write the note again.
Each note holds the name it was written under and a checksum over that name and its content,
so a note damaged, edited, or copied to another key's name (with or without the checkpoint
it describes) is reported in one warning line, removed, and made again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from oebench.bench.matrix import canonical_hash
from oebench.core.files import file_sha256

#: bump when what a note holds changes (2: its own name and a checksum)
NOTE_FORMAT = 2
#: bump when how an init note's key is made changes
NOTE_KEY_FORMAT = 1


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
            "format": NOTE_KEY_FORMAT,
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
        #: checkpoint key -> the training platform its note gave (read by ``trained``)
        self._platforms: dict[str, dict | None] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.checkpoints.enabled)

    def init_digest(self, note_key: str) -> str | None:
        """The seeded initial weights' digest, when noted."""
        note = self._read(f"init-{note_key}", {"digest": str})
        return note["digest"] if note else None

    def note_init(self, note_key: str, digest: str) -> None:
        self._write(f"init-{note_key}", {"digest": digest})

    def trained(self, key: str) -> tuple[str, float] | None:
        """(digest, training seconds) of checkpoint ``key``, while its file is the one noted."""
        note = self._read(key, TRAINED_FIELDS)
        if not note or note["file"] != _file_sha256(self.checkpoints.path(key)):
            return None
        platform = note.get("platform")
        self._platforms[key] = platform if isinstance(platform, dict) else None
        return note["digest"], float(note["seconds"])

    def platform(self, key: str) -> dict | None:
        """The training platform of checkpoint ``key`` as its note (read by ``trained``) says."""
        return self._platforms.get(key)

    def note_trained(
        self, key: str, digest: str, seconds: float, platform: dict | None = None
    ) -> None:
        """Note the digest of the weights just read from (or saved as) checkpoint ``key``,
        and the platform they were trained on, when known."""
        file = _file_sha256(self.checkpoints.path(key))
        if file is not None:
            note = {"digest": digest, "seconds": float(seconds), "file": file}
            self._write(key, note | ({"platform": platform} if platform else {}))
            self._platforms[key] = platform

    def _read(self, name: str, fields: dict[str, type | tuple[type, ...]]) -> dict | None:
        """The note ``name`` when it is whole and was written under that name; a damaged or
        misplaced one is reported in one line and removed (a note of another format is only
        ignored: the next write replaces it)."""
        if not self.enabled:
            return None
        path = self.root / f"{name}.json"
        try:
            note = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            return self._discard(path, f"unreadable: {type(exc).__name__}")
        if isinstance(note, dict) and note.get("format") != NOTE_FORMAT and "format" in note:
            return None
        problem = note_problem(note, name, fields)
        return note if problem is None else self._discard(path, problem)

    def _discard(self, path: Path, problem: str) -> None:
        from oebench.core.files import remove_cache_file

        print(
            f"oebench: warning: ignoring the weight note {path} ({problem}); "
            "the model is loaded and the note made again",
            file=sys.stderr,
        )
        remove_cache_file(path)
        return None

    def _write(self, name: str, note: dict[str, Any]) -> None:
        from oebench.core.files import write_cache_file

        if not self.enabled:
            return
        body = {"format": NOTE_FORMAT, "key": name, **note}
        text = json.dumps({**body, "checksum": note_checksum(body)}, sort_keys=True)
        path = self.root / f"{name}.json"
        write_cache_file(self.checkpoints, path, lambda tmp: Path(tmp).write_text(text))


#: what a note on trained weights holds, with its types
TRAINED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "digest": str,
    "seconds": (int, float),
    "file": str,
}


def note_checksum(body: dict[str, Any]) -> str:
    """sha256 over a note's content and the name (key) it was written under."""
    fields = {k: v for k, v in body.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def note_problem(note: Any, name: str, fields: dict[str, type | tuple[type, ...]]) -> str | None:
    """Why a read note cannot be believed as the note ``name`` (None when it can)."""
    if not isinstance(note, dict):
        return "not a JSON object"
    if note.get("key") != name:
        return f"it was written for another key ({str(note.get('key'))[:24]})"
    if note.get("checksum") != note_checksum(note):
        return "checksum mismatch: the note was damaged or edited"
    for field, kind in fields.items():
        value = note.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its {field!r} is missing or not a {getattr(kind, '__name__', 'number')}"
    seconds = note.get("seconds", 0.0)
    if isinstance(seconds, (int, float)) and not math.isfinite(seconds):
        return "its 'seconds' is not a finite number"
    return None
