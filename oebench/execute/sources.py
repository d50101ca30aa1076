"""The data a run reads through plugins: datasets and outlier sources, the files they read,
their loaded splits and the fingerprints that key every cache; each made once per run, and
every plugin call wrapped so that a failure names its plugin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from oebench.bench.matrix import Benchmark, Ref, canonical_hash
from oebench.core.failures import describe_exception
from oebench.errors import PluginFailed, UserError
from oebench.keys.fingerprints import code_digest
from oebench.registry.lookup import create_dataset, create_outlier_source, get_component


class Sources:
    """A run's sources and splits, memoised (the memo is this object's only state)."""

    def __init__(self, bench: Benchmark):
        self.bench = bench
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
        """A dataset split, loaded on first use and kept for the run."""
        key = (kind, canonical_hash(ref.config()), split, shape, seed, norm)
        if key not in self._memo:
            from oebench.contracts.checks import check_split

            extra = {"norm": norm} if norm is not None else {}
            source = self.source(kind, ref)
            is_id = kind == "dataset" and shape is None  # ID splits: their labels are used

            def load() -> Any:
                data = source.load(split, shape=shape, seed=seed, **extra)
                check_split(data, split, source.num_classes if is_id else None, source.shape[0])
                return data

            self._memo[key] = plugin_call(kind, ref, f"split {split!r}", load)
        return self._memo[key]

    def norm(self, kind: str, ref: Ref, id_source: Any) -> Any:
        """``(mean, std)`` of the ID dataset for a network-space set (``network_space =
        True``, e.g. the OE paper's synthetic sets, which un-normalise with it); else ``None``."""
        if not getattr(self.source(kind, ref), "network_space", False):
            return None
        return (tuple(id_source.mean), tuple(id_source.std))


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
