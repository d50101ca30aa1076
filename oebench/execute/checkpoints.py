"""The checkpoint cache: trained weights under ``<cache>/models/<key>.pt``, verified on read,
and the per-epoch state of a training cut short (``<key>.partial.pt``), so it can resume."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oebench.core.files import remove_cache_file, write_cache_file
from oebench.core.settings import cache_dir

if TYPE_CHECKING:
    import torch


class PartialCheckpoint:
    """A training cut short: its state after the last finished epoch, in
    ``<cache>/models/<key>.partial.pt`` beside the final checkpoint it becomes. Written
    atomically after every epoch, read back when valid, deleted when the final one is saved."""

    def __init__(self, cache: CheckpointCache, key: str, name: str | None = None):
        self.cache = cache
        self.key = key
        #: the training in words (``the training 'oe' of small-cnn on mnist-5k, seed 0``)
        self.name = name or f"the training {key}"
        self.path = cache.root / f"{key}.partial.pt"

    def load(self, total: int) -> dict[str, Any] | None:
        """The saved state of this training (``total`` steps in all), or None; a file that
        cannot be trusted is reported and removed."""
        import torch

        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            problem = _partial_problem(saved, self.key, total)
        except Exception as exc:
            problem = f"unreadable: {type(exc).__name__}"
        if problem is None:
            print(
                f"oebench: resuming {self.name} after epoch {saved['epoch']} (from {self.path})",
                file=sys.stderr,
            )
            return saved
        print(
            f"oebench: ignoring {self.path} ({problem}); training from the start", file=sys.stderr
        )
        remove_cache_file(self.path)
        return None

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (a ``_snapshot``) atomically, with its key and a checksum."""
        import torch

        payload = {"format": PARTIAL_FORMAT, "key": self.key, **state}
        payload["checksum"] = _partial_checksum(payload)
        write_cache_file(self.cache, self.path, lambda tmp: torch.save(payload, tmp))

    def discard(self) -> None:
        """Delete the file, if any (a read-only folder keeps it)."""

        remove_cache_file(self.path)


#: bump when the layout of a ``.partial.pt`` file changes
PARTIAL_FORMAT = 1


def _partial_checksum(payload: dict[str, Any]) -> str:
    """``state_checksum`` over every tensor of a partial checkpoint (found by path)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            tensors[path] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{path}/{i}")

    walk({k: v for k, v in payload.items() if k != "checksum"}, "")
    meta = f"{payload['epoch']}|{payload['step']}|{payload['total']}|{payload['rng']['numpy'][1:]}"
    return state_checksum(f"{payload['key']}|{meta}", payload["seconds"], tensors)


def _partial_problem(saved: Any, key: str, total: int) -> str | None:
    """Why a loaded partial checkpoint cannot be resumed from for ``key`` (None when it can)."""
    if not isinstance(saved, dict) or saved.get("format") != PARTIAL_FORMAT:
        return "an old or unknown format"
    if saved.get("key") != key:
        return f"it holds the state of another training ({str(saved.get('key'))[:12]}...)"
    epoch = saved.get("epoch")
    if saved.get("total") != total or not isinstance(epoch, int) or epoch < 1:
        return "it was made for another number of steps"
    if saved.get("checksum") != _partial_checksum(saved):
        return "checksum mismatch: the file was damaged"
    return None


class CheckpointCache:
    """Trained weights under ``<cache>/models/<key>.pt``; the key hashes all that made them."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = (root or cache_dir()) / "models"
        self.enabled = enabled
        #: set after a failed write: the cache is read but no longer written
        self.write_failed = False

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def partial(self, key: str, name: str | None = None) -> PartialCheckpoint | None:
        """Where the training of ``key`` (``name``: in words, for messages) keeps its
        per-epoch state (None when disabled)."""
        return PartialCheckpoint(self, key, name) if self.enabled else None

    def load(self, key: str) -> dict[str, Any] | None:
        """The verified checkpoint for ``key``, or None (a bad file is reported and removed)."""
        import torch

        path = self.path(key)
        if not self.enabled or not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            problem = _checkpoint_problem(saved, key)
        except Exception as exc:
            problem = f"unreadable: {type(exc).__name__}"
        if problem is None:
            PartialCheckpoint(self, key).discard()  # left by a run killed as it finished
            return saved
        message = f"oebench: ignoring cached checkpoint {path} ({problem}); retraining"
        print(message, file=sys.stderr)
        remove_cache_file(path)
        return None

    def save(
        self,
        key: str,
        state_dict: dict[str, torch.Tensor],
        seconds: float,
        platform: dict[str, Any] | None = None,
    ) -> None:
        """Store weights with their key and a checksum inside the file (atomically), and the
        platform they were trained on (JSON text; ``oebench.core.platforms``)."""
        import json

        import torch

        if not self.enabled:
            return
        cpu = {k: v.detach().cpu() for k, v in state_dict.items()}
        payload = {
            "format": CHECKPOINT_FORMAT,
            "key": key,
            "state_dict": cpu,
            "seconds": float(seconds),
            "checksum": state_checksum(key, float(seconds), cpu),
        }
        if platform is not None:
            payload["platform"] = json.dumps(platform, sort_keys=True)
        write_cache_file(self, self.path(key), lambda tmp: torch.save(payload, tmp))
        if self.path(key).exists():  # the final weights are safe: the per-epoch state goes
            PartialCheckpoint(self, key).discard()


#: bump when the layout of a cached checkpoint file changes
CHECKPOINT_FORMAT = 2


def state_checksum(key: str, seconds: float, state: dict[str, torch.Tensor]) -> str:
    """sha256 over the key, the seconds and every tensor's name, dtype, shape and bytes."""
    import torch

    h = hashlib.sha256(f"{key}|{seconds!r}".encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _checkpoint_problem(saved: Any, key: str) -> str | None:
    """Why a loaded checkpoint file cannot be trusted for ``key`` (None when it can)."""
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        return "an old or unknown format"
    if saved.get("key") != key:
        return f"it holds the weights of another cell ({str(saved.get('key'))[:12]}...)"
    state, seconds = saved.get("state_dict"), saved.get("seconds")
    if not isinstance(state, dict) or not isinstance(seconds, float):
        return "incomplete"
    if saved.get("checksum") != state_checksum(key, seconds, state):
        return "checksum mismatch: the file was damaged"
    return None
