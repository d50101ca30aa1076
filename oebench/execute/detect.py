"""One detector on one cell: fit it (only when a score is not cached), score the ID test set and
every OOD set, and turn the scores into metric rows under the benchmark's protocol."""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oebench.bench.matrix import Cell, Ref, canonical_hash
from oebench.contracts.checks import ContractError, checked_metrics, checked_scores
from oebench.contracts.detector import Detector, Head, Outputs
from oebench.errors import PluginFailed, UserError
from oebench.execute.context import Context
from oebench.execute.outputs import OutputCache
from oebench.keys.fingerprints import code_digest
from oebench.metrics import METRICS, ood_metrics
from oebench.registry.lookup import get_component

#: where a split comes from: (kind, ref, split, shape, seed[, norm]), as Sources takes it
Where = tuple


def train_where(cell: Cell) -> Where:
    """Where a cell's ID *training* split comes from (what ``fit`` detectors learn from)."""
    return ("dataset", cell.id_ref, "train", None, cell.seed)


def id_test_where(cell: Cell) -> tuple:
    """Where a cell's ID test split comes from."""
    return ("dataset", cell.id_ref, "test", None, cell.seed)


def eval_set_wheres(
    sources: Any, bench: Any, cell: Cell, source: Any, shape: tuple
) -> list[tuple[Any, tuple]]:
    """``(ref, where)`` of each OOD and covariate-shifted ID test set, at the ID shape."""
    norm = lambda ref: sources.norm("dataset", ref, source)  # noqa: E731
    return [
        (ref, ("dataset", ref, "test", shape, cell.seed, norm(ref)))
        for ref in bench.ood_datasets + bench.csid_datasets
    ]


class DetectorTampered(RuntimeError):
    """A detector wrote into what it was given (outputs, head, model): its rows are dropped."""


@dataclass
class CellData:
    """What every detector of a cell reads: its model, the outputs of each test set, and the
    ID training outputs (computed when a detector first needs them)."""

    cell: Cell
    shape: tuple
    #: the placed model (built on first call when the weights were only noted)
    model: Callable[[], Any]
    digest: str
    id_test: tuple[Where, Outputs]
    #: OOD set key -> (where, outputs)
    oods: dict[str, tuple[Where, Outputs]]
    #: the outputs of a split, through the output cache (verified there; computed on a miss)
    outputs_of: Callable[[Where], Outputs]
    accuracy: float
    #: the seconds the forward passes of the test sets took (they count as scoring time)
    forward_seconds: float = 0.0
    #: covariate-shifted ID set key -> (where, outputs) (``protocol = "full-spectrum"``)
    csid: dict[str, tuple[Where, Outputs]] = field(default_factory=dict)
    _train: Outputs | None = field(default=None, repr=False)
    #: the model's weights (on the CPU) from before any detector was handed the model
    _weights: dict | None = field(default=None, repr=False)

    def train_out(self) -> Outputs:
        """The ID training outputs, computed (or read from the cache) on first use."""
        if self._train is None:
            self._train = self.outputs_of(train_where(self.cell))
        return self._train


class DetectorRun:
    """Fits and scores the detectors of cells, caching every score array."""

    def __init__(self, context: Context, cache: OutputCache):
        self.context = context
        self.cache = cache

    def rows(
        self, data: CellData, ref: Ref, det: Detector
    ) -> tuple[list[dict], list[tuple[str, np.ndarray]]]:
        """Fit one detector, score ID and every OOD set: its rows and its score arrays.
        Scores are cached; the detector is fitted only when some score is not."""
        sets = [("id", *data.id_test)] + [(k, *found) for k, found in data.oods.items()]
        sets += [(k, *found) for k, found in data.csid.items()]
        made_by = self._made_by(data.cell, ref, det)
        keys = {name: self._key(data, where, made_by) for name, where, _ in sets}
        scores = {name: self.cache.cached_scores(key) for name, key in keys.items()}
        missing = [(name, where, out) for name, where, out in sets if scores[name] is None]
        if missing:
            computed = self._run(data, ref, det, missing)
            for name, values in computed.items():  # cached only once the detector is cleared
                scores[name] = self.cache.keep_scores(keys[name], values)
        id_scores = checked_scores(scores["id"], len(data.id_test[1]))
        rows, per_set, arrays = [], [], [("id", id_scores)]
        shifted = [checked_scores(scores[k], len(out)) for k, (_, out) in data.csid.items()]
        arrays += list(zip(data.csid, shifted, strict=True))
        wide = np.concatenate([id_scores, *shifted]) if shifted else None  # full-spectrum ID
        for ood_key, (_, out) in data.oods.items():
            ood_scores = checked_scores(scores[ood_key], len(out))
            arrays.append((ood_key, ood_scores))
            found = self._evaluate(id_scores, ood_scores, data.cell.seed, ood_key)
            metrics = checked_metrics(found, ood_key)
            if wide is not None:  # full-spectrum: the covariate-shifted ID sets count as ID too
                fs = ood_metrics(
                    wide, ood_scores, self.context.bench.recall, self.context.bench.fpr_rule
                )
                metrics |= checked_metrics({f"fs_{m}": fs[m] for m in METRICS}, ood_key)
            per_set.append(metrics)
            rows.append(self._row(data, ref, ood_key, metrics, len(id_scores), len(ood_scores)))
        mean = {m: float(np.mean([p[m] for p in per_set])) for m in per_set[0]}
        rows.append(self._row(data, ref, "mean", mean, len(id_scores), 0))
        return rows, arrays

    def _made_by(self, cell: Cell, ref: Ref, det: Detector) -> dict[str, Any]:
        """What a detector's cached scores depend on besides the weights and the data: its
        options as the benchmark gives them, its code and what it was fitted to."""
        sources = self.context.sources
        return {
            "options": ref.config(),  # never what the object keeps (arrays, derived values)
            "code": code_digest(get_component("detector", ref.name).factory),
            "fit": sources.fingerprint(*train_where(cell)) if "fit" in det.needs else None,
        }

    def _key(self, data: CellData, where: Where, made_by: dict) -> str:
        """The cache key of a detector's scores on the split ``where``."""
        return canonical_hash(
            {
                "model": data.digest,
                "data": self.context.sources.fingerprint(*where),
                "shape": data.shape,
                "made_by": made_by,
            }
        )

    def _run(
        self, data: CellData, ref: Ref, det: Detector, missing: list[tuple[str, Where, Outputs]]
    ) -> dict[str, np.ndarray]:
        """Fit the detector and score the ``missing`` sets; then check that it changed none of
        what it was given (before any of its scores is cached), putting back what it did."""
        prepare = functools.cache(lambda: self._fit(data, ref, det))
        model = "model" in det.needs
        try:
            with guarded_call():
                computed = {
                    name: self._computed(data, det, out, where, prepare, ref.key)
                    for name, where, out in missing
                }
        except (Exception, SystemExit):
            restore(data, self.cache, model)  # put back; the detector's own error is told
            raise
        changed = restore(data, self.cache, model)
        if changed:
            listed = ", ".join(changed[:-1]) + (" and " if changed[1:] else "") + changed[-1]
            raise DetectorTampered(f"changed {listed} in place (put back for the other detectors)")
        return computed

    def _model(self, data: CellData) -> Any:
        """The model as a detector gets it, its weights kept first (see ``restore``)."""
        model = data.model()
        if data._weights is None:
            state = model.state_dict().items()
            data._weights = {k: v.detach().to("cpu", copy=True) for k, v in state}
        return model

    def _fit(self, data: CellData, ref: Ref, det: Detector) -> None:
        """Fit a detector: ID training outputs and the head as it needs them, then the ID
        *training* images, batch by batch, to a model detector's ``fit_inputs``."""
        copy = bool(getattr(det, "copies_outputs", False))
        if det.needs & {"fit", "head"}:
            det.fit(
                handed(data.train_out(), copy) if "fit" in det.needs else None,
                head_of(data.model(), ref, copy) if "head" in det.needs else None,
            )
        if {"model", "fit"} <= det.needs and callable(getattr(det, "fit_inputs", None)):
            split = self.context.sources.load(*train_where(data.cell))
            what = f"{ref.key}: fitting on {data.cell.id_ref.key} train"
            det.fit_inputs(self._model(data), self._batches(data, split, what))

    def _batches(self, data: CellData, split: Any, what: str) -> Iterator[Any]:
        """A split's input batches for a model detector (token ids as copies of their own),
        with a bar (``what``) that advances as the detector finishes each batch: every
        model-running detector (ODIN, Gram, ...) shows how far it is without code of its
        own."""
        from oebench.execute.outputs import iterate_batches

        ctx = self.context
        size = ctx.eval_batch()
        total, done = -(-len(split) // size), 0
        advance = ctx.progress.start(what, total)
        text = getattr(split, "modality", "image") != "image"
        try:
            for x, _ in iterate_batches(split, size, data.shape, ctx.device):
                yield x.clone() if text else x  # image batches are made afresh for each pass
                advance(1)  # the detector asks for the next batch: this one is done
                done += 1
        finally:  # a detector that stopped early (or raised) leaves no bar behind
            if done < total:
                advance(total - done)

    def _computed(
        self,
        data: CellData,
        det: Detector,
        out: Outputs,
        where: Where,
        prepare: Callable,
        key: str = "detector",
    ) -> np.ndarray:
        """A detector's scores, checked (one real number, ±inf allowed, per sample);
        ``prepare()`` fits it first."""
        prepare()
        try:
            return checked_scores(self._raw_scores(data, det, out, where, key), len(out))
        except ContractError as exc:
            raise ContractError(f"{exc} on {where[1].key} ({where[2]})") from None

    def _raw_scores(
        self, data: CellData, det: Detector, out: Outputs, where: Where, key: str = "detector"
    ) -> Any:
        """What the fitted detector returns: from the outputs, or from the model's inputs."""
        if "model" not in det.needs:
            return det.score(handed(out, bool(getattr(det, "copies_outputs", False))))
        split = self.context.sources.load(*where)
        what = f"{key}: scoring {where[1].key}"
        return det.score_inputs(self._model(data), self._batches(data, split, what))

    def _evaluate(
        self, id_scores: np.ndarray, ood_scores: np.ndarray, seed: int, ood_key: str
    ) -> dict[str, float]:
        """Metrics under the benchmark's protocol (``full``, or ``oe-paper`` re-sampling)."""
        b = self.context.bench
        if b.protocol in ("full", "full-spectrum"):
            result = ood_metrics(id_scores, ood_scores, b.recall, b.fpr_rule)
            return result | {"aupr_baseline": _ap_baseline(len(id_scores), len(ood_scores))}
        n = max(1, len(id_scores) // 5)
        rng = np.random.default_rng([seed, zlib.crc32(ood_key.encode())])
        runs = []
        for _ in range(b.resamples):
            idx = rng.choice(len(ood_scores), size=min(n, len(ood_scores)), replace=False)
            runs.append(ood_metrics(id_scores, ood_scores[idx], b.recall, b.fpr_rule))
        result = {m: float(np.mean([r[m] for r in runs])) for m in METRICS}
        result.update({f"{m}_std": float(np.std([r[m] for r in runs])) for m in METRICS})
        result["aupr_baseline"] = _ap_baseline(len(id_scores), min(n, len(ood_scores)))
        return result

    def _row(
        self, data: CellData, det: Ref, ood: str, metrics: dict, n_id: int, n_ood: int
    ) -> dict:
        cell, bench = data.cell, self.context.bench
        t = cell.training
        return {
            "benchmark": bench.name,
            "id_dataset": cell.id_ref.key,
            "model": cell.model_ref.key,
            "training": t.name,
            "objective": t.objective.key,
            "outlier_source": t.outliers.key if t.outliers else "",
            "detector": det.key,
            "ood_dataset": ood,
            "seed": cell.seed,
            **{m: metrics[m] for m in metrics},
            "id_accuracy": data.accuracy,
            "protocol": bench.protocol,
            "recall": bench.recall,
            "fpr_rule": bench.fpr_rule,
            "n_id": n_id,
            "n_ood": n_ood,
            "cell": cell.key,
        }


def head_of(model: Any, ref: Ref, copy: bool = False) -> Head:
    """The model's final linear layer as float64 arrays of their own (for detectors that need
    ``head``): read-only, or writable with ``copy`` (``copies_outputs``)."""
    fc = model.head_linear()
    if fc is None:
        raise UserError(f"detector {ref.key!r} needs the model's final nn.Linear named 'fc'")
    weight = fc.weight.detach().cpu().double().numpy().copy()
    bias = (
        fc.bias.detach().cpu().double().numpy().copy()
        if fc.bias is not None
        else np.zeros(fc.out_features)
    )
    if not copy:
        weight.flags.writeable = bias.flags.writeable = False
    return Head(weight, bias)


def handed(out: Outputs, copy: bool = False) -> Outputs:
    """Outputs as a detector gets them: read-only views of the engine's arrays, or (``copy``,
    for a detector that declares ``copies_outputs``) writable copies of its own."""

    def given(value: np.ndarray | None) -> np.ndarray | None:
        if value is None or copy:
            return None if value is None else np.array(value, copy=True)
        view = value.view()
        view.flags.writeable = False
        return view

    return Outputs(given(out.logits), given(out.features), given(out.labels))


@contextmanager
def guarded_call() -> Iterator[None]:
    """Around a detector's calls: a write into a read-only array it was given becomes a
    ``DetectorTampered`` that says so; torch's warning on wrapping a read-only array is not
    shown (a write through such a tensor is caught by the checksums instead)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        try:
            yield
        except ValueError as exc:
            if "read-only" not in str(exc):
                raise
            raise DetectorTampered(
                "tried to write into the outputs it was given; they are read-only, shared "
                "with the other detectors (a detector that changes its inputs declares "
                f"copies_outputs = True and gets copies): {exc}"
            ) from exc


def restore(data: CellData, cache: OutputCache, model_detector: bool) -> list[str]:
    """What a detector changed of the cell's outputs (and, for a model detector, of the
    model's weights), each put back from the cache or the kept weights."""
    changed = []
    if not _intact(data.id_test[1]):
        data.id_test = _reloaded(data, cache, *data.id_test)
        changed.append(f"the {data.id_test[0][1].key} test outputs")
    for name, (where, out) in data.oods.items():
        if not _intact(out):
            data.oods[name] = _reloaded(data, cache, where, out)
            changed.append(f"the {name} test outputs")
    if data._train is not None and not _intact(data._train):
        cache.forget(data._train.key)
        data._train = None  # read again when a detector needs them
        changed.append("the ID training outputs")
    if model_detector and data._weights is not None and _restore_model(data, data.model()):
        changed.append("the model's weights")
    return changed


def _reloaded(data: CellData, cache: OutputCache, where: Where, out: Any) -> tuple:
    """Changed outputs dropped from the cache's memory and read (or computed) again."""
    cache.forget(out.key)
    return where, data.outputs_of(where)


def _intact(out: Outputs) -> bool:
    """Whether outputs from the cache still match their checksum (others are not checked)."""
    check = getattr(out, "intact", None)
    return check is None or check()


def _restore_model(data: CellData, model: Any) -> bool:
    """Put the model back in eval mode without gradients; True when its weights had changed
    and were put back (a model that cannot be put back fails the cell)."""
    from oebench.keys.fingerprints import model_digest

    model.eval()
    model.zero_grad(set_to_none=True)
    if model_digest(model) == data.digest:
        return False
    try:
        model.load_state_dict(data._weights)
    except Exception as exc:
        raise PluginFailed(
            f"a detector changed the model of {data.cell.label} beyond repair ({exc}); "
            "nothing is stored for the cell"
        ) from None
    if model_digest(model) != data.digest:
        raise PluginFailed(
            f"the weights of {data.cell.label} could not be put back after a "
            "detector changed them; nothing is stored for the cell"
        )
    return True


def _ap_baseline(n_id: int, n_ood: int) -> float:
    """The AUPR-Out of a detector that guesses: the OOD share, in % (the reference's baseline)."""
    return 100.0 * n_ood / (n_ood + n_id)
