"""The data a run reads through plugins: datasets and outlier sources, the files they read,
their loaded splits and the fingerprints that key every cache; each made once per run, and
every plugin call wrapped so that a failure names its plugin.

Each split is checked against the dataset contract when it is loaded (a lazy dataset on a few
items then, and on every item as it is read), and the digest of its content is compared with
the one noted when that split (by its fingerprint) was first read: a source that returns other
content for the same fingerprint fails by name rather than mix two reads in one benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oebench.bench.matrix import Benchmark, Ref, canonical_hash
from oebench.core.failures import describe_exception
from oebench.core.progress import current as current_progress
from oebench.errors import PluginFailed, UserError
from oebench.keys.fingerprints import code_digest
from oebench.registry.lookup import create_dataset, create_outlier_source, get_component


class Sources:
    """A run's sources and splits, memoised; ``notes``: where the content digest of each
    split is noted and compared (``None``: nowhere, e.g. with the cache off)."""

    def __init__(self, bench: Benchmark, notes: ContentNotes | None = None):
        self.bench = bench
        self.notes = notes
        self._memo: dict[Any, Any] = {}

    def model_files(self, ref: Ref) -> dict[str, str]:
        """Option -> sha256 of the file for every model option naming an existing file."""
        from oebench.core.datafiles import content_digest
        from oebench.core.settings import data_root

        key = ("model files", canonical_hash(ref.config()))
        if key not in self._memo:
            found = {}
            for option, value in sorted(ref.kwargs.items()):
                if not isinstance(value, str) or not value:
                    continue
                path = Path(value).expanduser()
                for candidate in (path, data_root() / path):
                    if candidate.is_file():
                        found[option] = content_digest(candidate)
                        break
            self._memo[key] = found
        return self._memo[key]

    def source(self, kind: str, ref: Ref) -> Any:
        """The ImageSource for a dataset or outlier-source reference (memoised)."""
        key = (kind, canonical_hash(ref.config()))
        if key not in self._memo:
            make = create_dataset if kind == "dataset" else create_outlier_source
            self._memo[key] = plugin_call(
                kind, ref, "creation", lambda: make(ref.name, **ref.kwargs)
            )
        return self._memo[key]

    def all(self) -> list[tuple[str, Ref]]:
        b = self.bench
        sources = [("dataset", r) for r in b.id_datasets + b.ood_datasets]
        return sources + [("outlier source", t.outliers) for t in b.trainings if t.outliers]

    def files(self, kind: str, ref: Ref) -> list[tuple[str, Any]]:
        """(name, content digest) of every file a source reads; resolved once per run."""
        from oebench.core.datafiles import file_fingerprints

        key = ("files", kind, canonical_hash(ref.config()))
        if key not in self._memo:
            paths = plugin_call(kind, ref, "files", lambda: self.source(kind, ref).files())
            self._memo[key] = file_fingerprints(paths)
        return self._memo[key]

    def fingerprint(
        self, kind: str, ref: Ref, split: str, shape: Any, seed: int, norm: Any = None
    ) -> str:
        """What determines a split's images: source configuration, plugin version and code,
        split, seed (and the ID normalisation a network-space set is expressed for)."""
        from oebench.registry.plugins import get_plugin_manager

        comp = get_component(kind, ref.name)
        info = get_plugin_manager().infos.get(comp.plugin)
        return canonical_hash(
            ({"norm": norm} if norm is not None else {})
            | {
                "kind": kind,
                "ref": ref.config(),
                "source": self.source(kind, ref).config(),
                "plugin": [comp.plugin, info.version if info else None],
                "code": code_digest(comp.factory),
                "files": self.files(kind, ref),
                "split": split,
                "shape": shape,
                "seed": seed,
            }
        )

    def load(self, kind: str, ref: Ref, split: str, shape: Any, seed: int, norm: Any = None) -> Any:
        """A dataset split, loaded on first use, checked and kept for the run."""
        key = (kind, canonical_hash(ref.config()), split, shape, seed, norm)
        if key not in self._memo:
            with current_progress().activity(f"loading {ref.key} {split}"):  # while a task runs
                self._memo[key] = self._loaded(kind, ref, (split, shape, seed, norm))
        return self._memo[key]

    def _loaded(self, kind: str, ref: Ref, where: tuple) -> Any:
        """The split ``where`` = (split, shape, seed, norm) checked against the contract and
        its content digest compared with the noted one; a lazy image split as ``CheckedItems``."""
        from oebench.contracts.checks import check_split, in_memory, split_digest

        split, shape, seed, norm = where
        extra = {"norm": norm} if norm is not None else {}
        source = self.source(kind, ref)
        # ID splits (the ID dataset at its own shape): their labels are used
        classes = source.num_classes if kind == "dataset" and shape is None else None
        channels = source.shape[0]

        def load() -> tuple[Any, str | None]:
            data = source.load(split, shape=shape, seed=seed, **extra)
            check_split(data, split, classes, channels)
            if not in_memory(data):  # the same items read twice: they must be the same
                digest = split_digest(data)
                return data, digest if split_digest(data) == digest else None
            noted = self.notes is not None and self.notes.enabled
            return data, split_digest(data) if noted else ""

        data, digest = plugin_call(kind, ref, f"split {split!r}", load)
        if digest is None:
            raise self._not_deterministic(kind, ref, "on two reads of the same items")
        if digest and self.notes is not None:
            noted = self.notes.compare(self.fingerprint(kind, ref, *where), digest)
            if noted is not None:
                what = (
                    "its outputs were"
                    if kind == "dataset"
                    else "the checkpoints trained on it were"
                )
                raise self._not_deterministic(kind, ref, f"than when {what} cached", noted)
        if not in_memory(data) and getattr(data, "modality", "image") == "image":
            return CheckedItems(data, (kind, ref, split), channels, classes)
        return data

    def _not_deterministic(
        self, kind: str, ref: Ref, when: str, noted: dict | None = None
    ) -> PluginFailed:
        """The error of a source whose content changed between two reads of one split."""
        plugin = get_component(kind, ref.name).plugin
        text = getattr(self.source(kind, ref), "modality", "image") == "text"
        what = "texts" if text else "images"
        hint = "draw every random number from the `seed` argument"
        torch_then = (noted or {}).get("torch")
        if torch_then is not None and torch_then != _torch_version():
            hint = (f"noted under torch {torch_then}, read under {_torch_version()}: if torch "
                    "makes its images, `oebench cache clear` and run again")  # fmt: skip
        return PluginFailed(
            f"{kind} {ref.key!r} (plugin {plugin!r}) returned other {what} for the same split "
            f"and seed {when}: its reads are not deterministic ({hint})"
        )

    def norm(self, kind: str, ref: Ref, id_source: Any) -> Any:
        """``(mean, std)`` of the ID dataset for a network-space set (``network_space =
        True``, e.g. the OE paper's synthetic sets, which un-normalise with it); else ``None``."""
        if not getattr(self.source(kind, ref), "network_space", False):
            return None
        return (tuple(id_source.mean), tuple(id_source.std))


def _torch_version() -> str:
    from oebench.keys.weights import torch_version

    return torch_version()


class CheckedItems:
    """A lazy image split as oebench reads it: every item checked against the dataset
    contract as it is read (``check_item``: a float (C, H, W) tensor in [0, 1], an int label,
    in [0, num_classes) for ID data); a breach, or an exception of the plugin's own reading,
    is a ``PluginFailed`` naming the dataset and plugin. The plugin's own attributes stay
    readable through it."""

    def __init__(self, data: Any, who: tuple[str, Ref, str], channels: int, classes: int | None):
        self.data = data
        self.who = who  # (kind, reference, split)
        self.checks = (channels, classes)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """The items at ``indices``, checked (PyTorch's DataLoader reads a batch with it)."""
        kind, ref, split = self.who
        return plugin_call(kind, ref, f"split {split!r}", lambda: self._read(list(indices)))

    def _read(self, indices: list[int]) -> list[Any]:
        import torch

        from oebench.contracts.checks import check_item

        split, (channels, classes) = self.who[2], self.checks
        many = getattr(self.data, "__getitems__", None)
        # one image's small tensor ops (convert, resize, check) on one intra-op thread: with
        # torch's threads they took 20-100 ms an image on a busy 2-core machine, 1-3 on one
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            items = many(indices) if callable(many) else [self.data[i] for i in indices]
            for i, item in zip(indices, items, strict=True):
                check_item(item, f"split {split!r}, item {i}", channels, classes)
        finally:
            torch.set_num_threads(before)
        return items

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("data", "who", "checks"):
            raise AttributeError(name)
        return getattr(self.data, name)


class ContentNotes:
    """The content digest of each split as first read, in ``root`` (``<cache>/models/splits``,
    cleared with the checkpoints) under a key made from the split's fingerprint, which keys
    its cached outputs and the checkpoints trained on it: another read of other content under
    the same fingerprint is noticed, in any later run or worker sharing the cache. ``cache``:
    the cache these notes belong to (its ``enabled`` and ``write_failed``)."""

    def __init__(self, root: Path, cache: Any):
        self.root = Path(root)
        self.cache = cache

    @property
    def enabled(self) -> bool:
        return bool(self.cache.enabled)

    def compare(self, fingerprint: str, digest: str) -> dict | None:
        """The note on ``fingerprint`` when it holds another digest; ``digest`` is noted when
        there is none yet (a note is never replaced)."""
        from oebench.core.files import write_cache_file

        if not self.enabled:
            return None
        path = self.root / f"{canonical_hash({'split content': fingerprint})}.json"
        try:
            note = json.loads(path.read_text())
        except (OSError, ValueError):
            note = None
        if not isinstance(note, dict) or "digest" not in note:
            note = {"split": fingerprint, "digest": digest, "torch": _torch_version()}
            text = json.dumps(note, sort_keys=True)
            write_cache_file(self.cache, path, lambda tmp: Path(tmp).write_text(text))
            return None
        return None if note["digest"] == digest else note


def plugin_call(kind: str, ref: Ref, what: str, call: Callable[[], Any]) -> Any:
    """``call()``; an exception (or SystemExit) becomes a one-line error naming the plugin."""
    try:
        return call()
    except UserError:
        raise
    except (Exception, SystemExit) as exc:
        plugin = get_component(kind, ref.name).plugin
        raise PluginFailed(
            f"{kind} {ref.key!r} (plugin {plugin!r}) failed in {what}: {describe_exception(exc)}"
        ) from exc
