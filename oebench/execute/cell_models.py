"""Each cell's model: built, trained or loaded from the checkpoint cache, placed on the
device, and the digest of its weights, noted (``oebench.keys.weights``) so that a cell whose
outputs and scores are all cached needs no model, nor torch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oebench.bench.matrix import Cell, Training, canonical_hash
from oebench.errors import PluginFailed
from oebench.execute.context import Context
from oebench.execute.engine import engine
from oebench.execute.sources import ContentNotes
from oebench.keys.fingerprints import weights_code
from oebench.registry.lookup import create_model, create_objective, get_component

#: the keyed cell of the same seed, ID dataset and model with another training (by name)
Sibling = Callable[[Cell, str], Cell]


class TrainedModels:
    """The models of a run's cells: the run's ``context`` (benchmark, sources, progress,
    device) and ``sibling`` (the keyed cell a fine-tune starts from) are all it needs."""

    def __init__(
        self, context: Context, sibling: Sibling, use_cache: bool = True, cache_root: Any = None
    ):
        from oebench.execute.checkpoints import CheckpointCache
        from oebench.keys.weights import WeightNotes

        self.context = context
        self.sibling = sibling
        self.checkpoints = CheckpointCache(cache_root, enabled=use_cache)
        #: the digests of weights already seen, so that a cached cell needs no model
        self.notes = WeightNotes(self.checkpoints)
        if context.sources.notes is None:  # each split's content digest, noted beside them
            context.sources.notes = ContentNotes(self.checkpoints.root / "splits", self.checkpoints)
        #: checkpoint key -> its weights (this process), and -> the training's seconds
        self._states: dict[str, dict] = {}
        #: cell key -> the overlap audit of the outliers its weights were trained on here
        self._audits: dict[str, dict] = {}
        self._seconds: dict[str, float] = {}
        #: checkpoint key -> the platform its training ran on (None: not known)
        self._platforms: dict[str, dict | None] = {}
        #: cell key -> checkpoint key
        self._checkpoint_keys: dict[str, str] = {}
        #: checkpoint key -> why its training diverged (the same again: not trained again)
        self._diverged: dict[str, str] = {}
        self._models_checked = False

    def check(self) -> None:
        """Build every model once with its options (a test forward pass), before the first
        model of the run is made: only then is torch needed."""
        from oebench.bench.validation import model_problems, raise_problems

        if not self._models_checked:
            raise_problems(model_problems(self.context.bench), self.context.bench.source)
            self._models_checked = True

    def build(self, cell: Cell) -> tuple[Any, float, bool]:
        """The cell's model with its trained weights: (model, training seconds, cached)."""
        import torch

        from oebench.contracts.model import Classifier
        from oebench.keys.fingerprints import model_digest
        from oebench.keys.weights import init_note_key

        self.check()
        source = self.context.sources.source("dataset", cell.id_ref)
        shape = tuple(source.shape)
        torch.manual_seed(cell.seed)
        net = create_model(cell.model_ref.name, source.num_classes, shape, **cell.model_ref.kwargs)
        model = Classifier(net, source.mean, source.std)
        self.notes.note_init(init_note_key(cell.config), model_digest(model))
        train_seconds, cached = self._train(cell, model, shape)
        return model, train_seconds, cached

    def placed(self, cell: Cell, expect: str | None = None) -> tuple[Any, str, float, bool]:
        """The trained model on the device, in eval mode: (model, digest, seconds, cached).
        The digest is noted for the next run; ``expect``: the digest a note promised."""
        import torch

        from oebench.keys.fingerprints import model_digest

        model, seconds, cached = self.build(cell)
        model.to(self.context.device).eval()
        if self.context.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        digest = model_digest(model)
        if expect is not None and digest != expect:
            raise RuntimeError(
                f"the weights of {cell.label} hash to {digest}, not to the "
                f"{expect} noted in {self.notes.root}; delete that folder and run again"
            )
        key = self._checkpoint_keys.get(cell.key)
        if key in self._seconds:  # the checkpoint's own seconds (0 here when trained earlier)
            self.notes.note_trained(key, digest, self._seconds[key], self._platforms.get(key))
        return model, digest, seconds, cached

    def check_logits(self, cell: Cell, outputs: Any, where: tuple) -> None:
        """A ``PluginFailed`` naming the cell's model when its logits on the split ``where``
        are not finite (a detector would fail on them, or worse)."""
        import numpy as np

        logits = outputs.logits
        if np.isfinite(logits).all():
            return
        plugin = get_component("model", cell.model_ref.name).plugin
        nan = int(np.isnan(logits).sum())
        t = cell.training
        made, why = "as loaded", "its weights"
        if not t.params.get("evaluate_only"):
            made = f"after training {t.name!r} (objective {t.objective.key!r})"
            why = f"a training that diverged (lower its `lr`, now {t.params.get('lr')})"
        raise PluginFailed(
            f"model {cell.model_ref.key!r} (plugin {plugin!r}) gave {nan} NaN and "
            f"{int(np.isinf(logits).sum())} infinite logit(s) among {logits.size} on "
            f"{where[1].key} ({where[2]}) {made}: {why}, or the model's own arithmetic"
        )

    def noted(self, cell: Cell) -> tuple[str, float] | None:
        """(digest, training seconds) of the cell's weights from the notes, without building
        the model; None when they cannot be trusted (see oebench.keys.weights)."""
        from oebench.keys.weights import init_note_key

        if not self.notes.enabled:
            return None
        init = self.notes.init_digest(init_note_key(cell.config))
        if init is None:
            return None
        if cell.training.params.get("evaluate_only"):
            return init, 0.0
        shape = tuple(self.context.sources.source("dataset", cell.id_ref).shape)
        key = self._checkpoint_keys[cell.key] = self._checkpoint_key(cell, init, shape)
        return self.notes.trained(key)

    def training_platform(self, cell: Cell) -> dict | None:
        """The platform the cell's weights were trained on (``oebench.core.platforms``), as
        this process trained them or as their checkpoint or its note says; None when
        unknown (untrained weights, a checkpoint saved without it)."""
        key = self._checkpoint_keys.get(cell.key)
        found = self._platforms.get(key) if key is not None else None
        return found or (self.notes.platform(key) if key is not None else None)

    def _training_data_fingerprints(self, t: Training, cell: Cell, shape: tuple) -> list[str]:
        """Fingerprints of the ID training split and outliers behind a training and its init."""
        sources = self.context.sources
        prints = []
        for training in self.context.bench.lineage(t):
            prints.append(sources.fingerprint("dataset", cell.id_ref, "train", None, cell.seed))
            if training.outliers is not None:
                outliers = training.outliers
                prints.append(
                    sources.fingerprint("outlier source", outliers, "train", shape, cell.seed)
                )
        return prints

    def _train(self, cell: Cell, model: Any, shape: tuple) -> tuple[float, bool]:
        """Load the cell's weights from the checkpoint cache, or train them; returns (s, cached)."""
        from oebench.keys.fingerprints import model_digest

        t = cell.training
        if t.params.get("evaluate_only"):
            return 0.0, True  # the model's own weights (e.g. `checkpoint`), never trained
        key = self._checkpoint_key(cell, model_digest(model), shape)
        self._checkpoint_keys[cell.key] = key
        if key in self._states:
            model.load_state_dict(self._states[key])
            return 0.0, True
        if key in self._diverged:
            raise PluginFailed(self._diverged[key])
        with cache_lock(self.checkpoints, key):  # workers sharing a cache train it once
            return self._load_or_train(key, cell, model, shape)

    def overlap_report(self, cell: Cell) -> dict | None:
        """The overlap audit of the outliers this process trained the cell's weights on."""
        return self._audits.get(cell.key)

    def _audited(self, cell: Cell, outliers: Any, shape: tuple) -> Any:
        """The overlap audit of a training's outlier source (``oebench.execute.overlap``),
        said before the training and kept for the cell's provenance; with ``exclude_overlap``
        the outliers without those that overlap an ID or OOD test set."""
        from oebench.execute.overlap import audit, without

        if getattr(outliers, "modality", "image") != "image":
            return outliers
        t, progress = cell.training, self.context.progress
        folder = self.checkpoints.root / "overlap" if self.checkpoints.enabled else None
        with progress.activity(f"overlap audit: {t.outliers.key}"):
            report = audit(self.context.sources, cell, outliers, shape, folder)
        counts = ", ".join(f"{name} {c['exact']} exact + {c['near']} near" if "exact" in c
                           else f"{name} not audited ({c['error']})"
                           for name, c in report["sets"].items())  # fmt: skip
        drop = bool(t.params.get("exclude_overlap")) and bool(report["outliers"])
        progress.log(
            f"overlap audit of outliers {t.outliers.key!r} ({len(outliers)} images): {counts}"
            + (f"; {len(report['outliers'])} dropped (exclude_overlap)" if drop else "")
        )
        overlapping = len(report["outliers"])
        self._audits[cell.key] = {"sets": report["sets"], "overlapping": overlapping,
                                  "dropped": overlapping if drop else 0}  # fmt: skip
        return without(outliers, report["outliers"]) if drop else outliers

    def _checkpoint_key(self, cell: Cell, init_weights: str, shape: tuple) -> str:
        """What the cell's trained weights are cached under: all that makes them."""
        return canonical_hash(
            {
                "version": engine().version,
                "seed": cell.seed,
                "id": cell.config["id_dataset"],
                "model": cell.config["model"],
                "model_files": cell.config.get("model_files"),
                # the weights training starts from (a checkpoint's, or the seeded init)
                "init_weights": init_weights,
                "training": cell.config["training"],
                "data": self._training_data_fingerprints(cell.training, cell, shape),
                # the model's, the objectives' (init chain included) and the training loop's own
                # code; never a detector's, so editing a detector retrains nothing
                "code": weights_code(cell.config["fingerprints"]),
            }
        )

    def _load_or_train(self, key: str, cell: Cell, model: Any, shape: tuple) -> tuple[float, bool]:
        """The checkpoint ``key`` from the cache, else trained now and saved."""
        from oebench.execute.training import TrainingDiverged, train, training_numerics

        t = cell.training
        saved = self.checkpoints.load(key)
        if saved is not None:
            model.load_state_dict(saved["state_dict"])
            self._states[key] = saved["state_dict"]
            self._seconds[key] = float(saved.get("seconds", 0.0))
            self._platforms[key] = platform_of(saved)
            return self._seconds[key], True
        if t.init is not None:
            self._train(self.sibling(cell, t.init), model, shape)
        sources, progress = self.context.sources, self.context.progress
        train_set = sources.load("dataset", cell.id_ref, "train", None, cell.seed)
        objective = create_objective(t.objective.name, **t.objective.kwargs)
        outliers = None
        if t.outliers is not None:
            outliers = sources.load("outlier source", t.outliers, "train", shape, cell.seed)
            outliers = self._audited(cell, outliers, shape)
        params = t.params
        steps = progress.start(
            training_label(cell),
            params["epochs"]
            * -(
                -min(len(train_set), params.get("max_train") or len(train_set))
                // params["batch_size"]
            ),
        )
        numerics = training_numerics(params, self.context.device, f"training {t.name!r}")
        with torch_threads(params.get("threads", 0)), numerics as platform:  # same weights
            try:
                seconds = train(
                    model,
                    train_set,
                    objective,
                    params,
                    cell.seed,
                    shape,
                    self.context.device,
                    outliers,
                    on_step=lambda step, total: steps(1),
                    on_stats=lambda loss, acc: steps(0, f"loss {loss:.3f}, train acc {acc:.1f}%"),
                    partial=self.checkpoints.partial(key, training_name(cell)),  # resumable
                )
            except TrainingDiverged as exc:  # stopped there: nothing of it is saved
                self._diverged[key] = (
                    f"training {t.name!r} (objective {t.objective.key!r}) of "
                    f"{cell.model_ref.key} on {cell.id_ref.key}, seed {cell.seed}, diverged: {exc}"
                )
                raise PluginFailed(self._diverged[key]) from None
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.checkpoints.save(key, state, seconds, platform)
        self._states[key] = state
        self._seconds[key] = seconds
        self._platforms[key] = platform
        return seconds, False


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op CPU threads (0: leave torch's choice), then restore."""
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def platform_of(saved: dict[str, Any]) -> dict | None:
    """The training platform a loaded checkpoint holds (None: saved without one)."""
    import json

    text = saved.get("platform")
    try:
        found = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def cache_lock(cache: Any, key: str) -> Any:
    """An inter-process lock on a cache entry (a no-op for a disabled cache)."""
    if not cache.enabled:
        return contextlib.nullcontext()
    from filelock import FileLock

    from oebench.core.files import mark_cache

    path = Path(cache.path(key))
    mark_cache(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable cache: no one can save it, so no one waits for it
        return contextlib.nullcontext()
    return FileLock(str(path) + ".lock")


def training_label(cell: Cell) -> str:
    """A training's bar: ``train oe · seed 0 · small-cnn on mnist-5k`` (training and seed
    first: at 80 columns the end of a description is what gets cut)."""
    t, model, data = cell.training.name, cell.model_ref.key, cell.id_ref.key
    return f"train {t} · seed {cell.seed} · {model} on {data}"


def training_name(cell: Cell) -> str:
    """A training in a sentence: ``the training 'oe' of small-cnn on mnist-5k, seed 0``."""
    return (
        f"the training {cell.training.name!r} of {cell.model_ref.key} on {cell.id_ref.key}, "
        f"seed {cell.seed}"
    )
