"""One detector on one cell: fit it (only when a score is not cached), score the ID test set and
every OOD set, and turn the scores into metric rows under the benchmark's protocol."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from oebench.bench.matrix import Cell, Ref, canonical_hash
from oebench.contracts.checks import ContractError, checked_metrics, checked_scores
from oebench.contracts.detector import Detector, Head, Outputs
from oebench.errors import UserError
from oebench.execute.context import Context
from oebench.execute.outputs import OutputCache
from oebench.keys.fingerprints import code_digest
from oebench.metrics import METRICS, ood_metrics
from oebench.registry.lookup import get_component

#: where a split comes from: (kind, ref, split, shape, seed[, norm]), as Sources takes it
Where = tuple


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
    train_out: Callable[[], Outputs]
    accuracy: float
    #: the seconds the forward passes of the test sets took (they count as scoring time)
    forward_seconds: float = 0.0


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
        made_by = self._made_by(data.cell, ref, det)
        prepare = functools.cache(lambda: self._fit(data, ref, det))
        where, out = data.id_test
        id_scores = self._score(data, det, out, where, made_by, prepare)
        scores, rows, per_set = [("id", id_scores)], [], []
        for ood_key, (where, out) in data.oods.items():
            ood_scores = self._score(data, det, out, where, made_by, prepare)
            scores.append((ood_key, ood_scores))
            found = self._evaluate(id_scores, ood_scores, data.cell.seed, ood_key)
            metrics = checked_metrics(found, ood_key)
            per_set.append(metrics)
            rows.append(self._row(data, ref, ood_key, metrics, len(id_scores), len(ood_scores)))
        mean = {m: float(np.mean([p[m] for p in per_set])) for m in per_set[0]}
        rows.append(self._row(data, ref, "mean", mean, len(id_scores), 0))
        return rows, scores

    def _made_by(self, cell: Cell, ref: Ref, det: Detector) -> dict[str, Any]:
        """What a detector's cached scores depend on besides the weights and the data: its
        options, its code and what it was fitted to."""
        sources = self.context.sources
        return {
            "options": det.config(),  # before fitting, which may add attributes
            "code": code_digest(get_component("detector", ref.name).factory),
            "fit": sources.fingerprint("dataset", cell.id_ref, "train", None, cell.seed)
            if "fit" in det.needs
            else None,
        }

    def _fit(self, data: CellData, ref: Ref, det: Detector) -> None:
        """Fit a detector: ID training outputs and the head as it needs them, then the ID
        *training* images, batch by batch, to a model detector's ``fit_inputs``."""
        from oebench.execute.outputs import iterate_batches

        if det.needs & {"fit", "head"}:
            det.fit(
                data.train_out() if "fit" in det.needs else None,
                head_of(data.model(), ref) if "head" in det.needs else None,
            )
        if {"model", "fit"} <= det.needs and callable(getattr(det, "fit_inputs", None)):
            cell = data.cell
            split = self.context.sources.load("dataset", cell.id_ref, "train", None, cell.seed)
            ctx = self.context
            batches = iterate_batches(split, ctx.eval_batch(), data.shape, ctx.device)
            det.fit_inputs(data.model(), (x for x, _ in batches))

    def _score(
        self,
        data: CellData,
        det: Detector,
        out: Outputs,
        where: Where,
        made_by: dict,
        prepare: Callable[[], None],
    ) -> np.ndarray:
        """A detector's scores, checked (one real number, ±inf allowed, per sample) and cached
        under the weights, the data and ``made_by``; ``prepare()`` fits it on a miss."""
        n = len(out.logits)

        def compute() -> np.ndarray:
            prepare()
            try:
                return checked_scores(self._raw_scores(data, det, out, where), n)
            except ContractError as exc:
                raise ContractError(f"{exc} on {where[1].key} ({where[2]})") from None

        key = canonical_hash(
            {
                "model": data.digest,
                "data": self.context.sources.fingerprint(*where),
                "shape": data.shape,
                "made_by": made_by,
            }
        )
        return checked_scores(self.cache.scores(key, compute), n)

    def _raw_scores(self, data: CellData, det: Detector, out: Outputs, where: Where) -> Any:
        """What the fitted detector returns: from the outputs, or from the model's inputs."""
        from oebench.execute.outputs import iterate_batches

        if "model" not in det.needs:
            return det.score(out)
        ctx = self.context
        split = ctx.sources.load(*where)
        batches = iterate_batches(split, ctx.eval_batch(), data.shape, ctx.device)
        return det.score_inputs(data.model(), (x for x, _ in batches))

    def _evaluate(
        self, id_scores: np.ndarray, ood_scores: np.ndarray, seed: int, ood_key: str
    ) -> dict[str, float]:
        """Metrics under the benchmark's protocol (``full``, or ``oe-paper`` re-sampling)."""
        b = self.context.bench
        if b.protocol == "full":
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


def head_of(model: Any, ref: Ref) -> Head:
    """The model's final linear layer as float64 arrays (for detectors that need ``head``)."""
    fc = model.head_linear()
    if fc is None:
        raise UserError(f"detector {ref.key!r} needs the model's final nn.Linear named 'fc'")
    return Head(
        fc.weight.detach().cpu().double().numpy(),
        fc.bias.detach().cpu().double().numpy()
        if fc.bias is not None
        else np.zeros(fc.out_features),
    )


def _ap_baseline(n_id: int, n_ood: int) -> float:
    """The AUPR-Out of a detector that guesses: the OOD share, in % (the reference's baseline)."""
    return 100.0 * n_ood / (n_ood + n_id)
