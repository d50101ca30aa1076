"""Bootstrap confidence intervals for AUROC and FPR95 over test samples (percentile method).

A resample is a vector of counts over the sorted original scores, so each replicate costs
O(n) with no sorting. AUROC is the Mann-Whitney form of the trapezoid area (ties count a
half); FPR95 follows ``oebench.metrics.fpr_at_recall``'s ``nearest`` rule exactly.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CI_METRICS = ("auroc", "fpr95")
RESAMPLES = 1000
LEVEL = 0.95
#: resamples per progress step (a bar over the resamples moves about 20 times per group)
STEP = 50

#: ``progress(resamples)`` after each ``STEP`` resamples (and the rest at the end)
OnResamples = Callable[[int], None] | None


def _report(progress: OnResamples, b: int, resamples: int) -> None:
    """After resample ``b`` (0-based): a step of ``STEP`` resamples, or the last few."""
    if progress is not None and ((b + 1) % STEP == 0 or b + 1 == resamples):
        progress((b % STEP) + 1)


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and names (e.g. cell key and detector): reproducible."""
    return np.random.default_rng([seed, zlib.crc32("\0".join(names).encode())])


@dataclass(frozen=True)
class OodSet:
    """An OOD set's sorted scores, grouped into distinct values placed among the ID scores."""

    group: np.ndarray  # distinct-value index of each sorted score
    below: np.ndarray  # per distinct value: how many sorted ID scores are lower
    upto: np.ndarray  # per distinct value: how many sorted ID scores are lower or equal

    @classmethod
    def prepare(cls, id_sorted: np.ndarray, scores: np.ndarray) -> OodSet:
        ood = np.sort(np.asarray(scores, dtype=np.float64))
        starts = np.r_[True, ood[1:] != ood[:-1]]
        values = ood[starts]
        return cls(
            np.cumsum(starts) - 1,
            np.searchsorted(id_sorted, values, "left"),
            np.searchsorted(id_sorted, values, "right"),
        )

    @property
    def size(self) -> int:
        return self.group.size


def weighted_point(
    id_counts: np.ndarray, ood: OodSet, ood_counts: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """AUROC and FPR95 (percent) of a resample given as counts over sorted ID and OOD scores."""
    n, m = float(id_counts.sum()), float(ood_counts.sum())
    cum = np.r_[0.0, np.cumsum(id_counts, dtype=np.float64)]  # cum[k]: count of the k lowest
    weight = np.bincount(ood.group, weights=ood_counts, minlength=ood.below.size)
    lower, tied = cum[ood.below], cum[ood.upto] - cum[ood.below]
    area = float(np.sum(weight * (lower + 0.5 * tied)) / (n * m))
    present = np.flatnonzero(weight > 0)  # thresholds of this resample, lowest first
    tps = np.cumsum(weight[::-1])[::-1][present]  # OOD scores at or above each threshold
    k = int(np.argmin(np.abs(tps / m - level)))  # first = lowest threshold, as the OE code
    ids_above = n - (cum[ood.below[present[0]]] if k == 0 else cum[ood.upto[present[k - 1]]])
    return 100 * area, 100 * float(ids_above / n)


def replicates(
    id_scores: np.ndarray,
    ood_sets: list[np.ndarray],
    resamples: int,
    rng: np.random.Generator,
    progress: OnResamples = None,
) -> np.ndarray:
    """(resamples, 2) AUROC and FPR95 of the mean over OOD sets, on bootstrap resamples.

    Each replicate draws the ID test set once (shared by every OOD set, as in the real
    evaluation) and each OOD set independently, all with replacement at their full sizes.
    ``progress(k)`` is told every ``STEP`` resamples done (``k`` of them).
    """
    ids = np.sort(np.asarray(id_scores, dtype=np.float64))
    oods = [OodSet.prepare(ids, o) for o in ood_sets]
    out = np.empty((resamples, len(CI_METRICS)))
    for b in range(resamples):
        id_counts = np.bincount(rng.integers(0, ids.size, ids.size), minlength=ids.size)
        values = [
            weighted_point(
                id_counts, o, np.bincount(rng.integers(0, o.size, o.size), minlength=o.size)
            )
            for o in oods
        ]
        out[b] = np.mean(values, axis=0)
        _report(progress, b, resamples)
    return out


def paired_delta_replicates(
    base: tuple[np.ndarray, list[np.ndarray]],
    other: tuple[np.ndarray, list[np.ndarray]],
    resamples: int,
    rng: np.random.Generator,
    progress: OnResamples = None,
) -> np.ndarray:
    """(resamples, 2) of ``other`` − ``base`` (AUROC, FPR95 of the mean over OOD sets), both
    models scored on the SAME resampled test samples: a paired bootstrap of the difference.

    Each is ``(id_scores, [ood_scores, ...])`` over the same samples in the same order;
    ``progress`` as for ``replicates``.
    """
    models = [_Paired.prepare(*scores) for scores in (base, other)]
    n, sizes = models[0].n_id, models[0].sizes
    if (models[1].n_id, models[1].sizes) != (n, sizes):
        raise ValueError("paired bootstrap: the two models were scored on different samples")
    out = np.empty((resamples, len(CI_METRICS)))
    for b in range(resamples):
        id_counts = np.bincount(rng.integers(0, n, n), minlength=n)
        ood_counts = [np.bincount(rng.integers(0, m, m), minlength=m) for m in sizes]
        a, c = (model.point(id_counts, ood_counts) for model in models)
        out[b] = c - a
        _report(progress, b, resamples)
    return out


@dataclass(frozen=True)
class _Paired:
    """One model's scores, sorted, with the permutations that map sample counts onto them."""

    id_order: np.ndarray
    oods: list[tuple[np.ndarray, OodSet]]

    @classmethod
    def prepare(cls, id_scores: np.ndarray, ood_sets: list[np.ndarray]) -> _Paired:
        ids = np.asarray(id_scores, dtype=np.float64)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        oods = []
        for o in ood_sets:
            o = np.asarray(o, dtype=np.float64)
            oods.append((np.argsort(o, kind="stable"), OodSet.prepare(sorted_ids, o)))
        return cls(order, oods)

    @property
    def n_id(self) -> int:
        return self.id_order.size

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(order.size for order, _ in self.oods)

    def point(self, id_counts: np.ndarray, ood_counts: list[np.ndarray]) -> np.ndarray:
        """Mean over OOD sets of (AUROC, FPR95) for per-sample counts in original order."""
        ids = id_counts[self.id_order]
        values = [
            weighted_point(ids, ood, counts[order])
            for (order, ood), counts in zip(self.oods, ood_counts, strict=True)
        ]
        return np.mean(values, axis=0)


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval holding ``level`` of the replicate values."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
