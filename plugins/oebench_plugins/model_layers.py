"""Model detectors over several stages' feature maps: Gram matrices, the Mahalanobis ensemble."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from oebench.api import Detector, Head, Outputs
from oebench_plugins.model_maps import _cat, layer_maps

if TYPE_CHECKING:
    import torch

    from oebench.api import Classifier


def gram_rows(maps: torch.Tensor, powers: int) -> torch.Tensor:
    """(N, P, C) row sums of the p-th order Gram matrices, ``sign(g) |g|^(1/p)``, p = 1..P.

    Row ``i`` of ``G_p = F^p (F^p)^T`` sums to ``F^p[i] . sum_j F^p[j]``: exact, and C times
    cheaper than forming the (C, C) matrix. Float64.
    """
    import torch

    f = maps.detach().double().flatten(2)
    fp, rows = f, []
    for p in range(1, powers + 1):
        fp = f if p == 1 else fp * f
        g = torch.bmm(fp, fp.sum(1).unsqueeze(2)).squeeze(2)
        rows.append(g.sign() * g.abs() ** (1.0 / p))
    return torch.stack(rows, 1)


def _gram_deviation(g: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(N,) summed relative excursions of ``g`` outside ``[low, high]`` (the paper's formula)."""
    below = (low - g).clamp(min=0) / (low + 1e-6).abs()
    above = (g - high).clamp(min=0) / (high + 1e-6).abs()
    return (below + above).flatten(1).sum(1)


class Gram(Detector):
    """Deviation of Gram-matrix rows from ID train bounds (Sastry & Oore, ICML 2020).

    At each of the deepest ``layers`` = 4 stage outputs (the last 4-D map at each spatial size,
    see the module doc) the row sums of the Gram matrices of orders p = 1..``powers`` (10, the
    paper's) get per-class min/max bounds from ID training images, by predicted class as in the
    paper (classes no training image is predicted as use the bounds over all classes). A test
    input's deviation per layer is the paper's summed relative excursion outside the bounds of
    its predicted class, divided by the layer's mean deviation on held-out data, summed over
    layers. The paper holds out ID *test* data for that mean; here it is every ``holdout``-th
    (10th) ID training image, at most ``max_holdout`` (1000), kept out of the bounds (1 when
    ``holdout`` = 0 or the mean is 0). Needs ``fit_inputs``. The float64 powers cost about five
    forward passes per image on CPU (small CNN, MNIST).
    """

    needs = frozenset({"model", "fit"})

    def __init__(
        self, powers: int = 10, layers: int = 4, holdout: int = 10, max_holdout: int = 1000
    ):
        if int(powers) < 1 or int(layers) < 1 or int(holdout) < 0 or int(max_holdout) < 0:
            raise ValueError("powers and layers must be >= 1, holdout and max_holdout >= 0")
        self.powers, self.layers = int(powers), int(layers)
        self.holdout, self.max_holdout = int(holdout), int(max_holdout)

    def fit(self, train: Outputs | None, head: Head | None) -> None:
        self._bounds: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _grams(self, model: Classifier, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        import torch

        with torch.no_grad():
            maps, logits = layer_maps(model, x, self.layers)
            return [gram_rows(m, self.powers) for m in maps], logits

    def fit_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> None:
        """Per-class bounds from ID training images, then the held-out mean deviations."""
        import torch

        low: list[torch.Tensor] = []
        high: list[torch.Tensor] = []
        held: list[tuple[list[torch.Tensor], torch.Tensor]] = []
        seen, n_held = 0, 0
        for x in batches:
            grams, logits = self._grams(model, x)
            pred = logits.argmax(1)
            index = torch.arange(seen, seen + len(x), device=pred.device)
            out = (index % self.holdout == 0) if self.holdout else torch.zeros_like(pred).bool()
            out &= torch.cumsum(out.long(), 0) + n_held <= self.max_holdout
            seen, n_held = seen + len(x), n_held + int(out.sum())
            if out.any():
                held.append(([g[out] for g in grams], pred[out]))
            if not low:
                k = logits.shape[1]
                low = [g.new_full((k, *g.shape[1:]), torch.inf) for g in grams]
                high = [g.new_full((k, *g.shape[1:]), -torch.inf) for g in grams]
            keep = ~out
            for lo, hi, g in zip(low, high, grams, strict=True):
                idx = pred[keep][:, None, None].expand(-1, *g.shape[1:])
                lo.scatter_reduce_(0, idx, g[keep], "amin")
                hi.scatter_reduce_(0, idx, g[keep], "amax")
        if not low or not torch.isfinite(low[0][:, 0, 0]).any():
            raise ValueError("gram: no ID training images to fit the bounds on")
        self._bounds = [_fill_unseen(lo, hi) for lo, hi in zip(low, high, strict=True)]
        self._scale = [1.0] * len(self._bounds)
        if held:
            means = self._deviations(
                [torch.cat([h[0][i] for h in held]) for i in range(len(low))],
                torch.cat([h[1] for h in held]),
            ).mean(0)
            self._scale = [float(m) if m > 0 else 1.0 for m in means]

    def _deviations(self, grams: list[torch.Tensor], pred: torch.Tensor) -> torch.Tensor:
        """(N, layers) deviations from the bounds of each input's predicted class."""
        import torch

        cols = [
            _gram_deviation(g, lo[pred], hi[pred])
            for g, (lo, hi) in zip(grams, self._bounds, strict=True)
        ]
        return torch.stack(cols, 1)

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        if getattr(self, "_bounds", None) is None:
            raise ValueError("gram: fit_inputs() must run on ID training images before scoring")
        parts = []
        for x in batches:
            grams, logits = self._grams(model, x)
            dev = self._deviations(grams, logits.argmax(1))
            scale = dev.new_tensor(self._scale)
            parts.append((dev / scale).sum(1).cpu().numpy())
        return _cat(parts)


def _fill_unseen(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of classes with no training image replaced by the bounds over all classes."""
    empty = ~low.flatten(1).isfinite().all(1)
    low, high = low.clone(), high.clone()
    low[empty] = low[~empty].amin(0)
    high[empty] = high[~empty].amax(0)
    return low, high


class MahalanobisEnsemble(Detector):
    """Mahalanobis distances summed over layers: Lee et al.'s feature ensemble (NeurIPS 2018).

    At each of the deepest ``layers`` = 4 stage outputs (the last 4-D map at each spatial size,
    see the module doc) the spatially averaged map gets class means (true ID training labels)
    and a tied covariance (pseudo-inverted), accumulated batch by batch; a layer's score is the
    min squared distance to a class mean. The paper weights layers by a logistic regression fit
    on OOD validation data; here, without OOD data, each layer's distance is divided by its
    mean over the ID training data (which equals the covariance's rank), so every layer counts
    alike, and the layers are summed. No input preprocessing (see ``mahalanobis-preproc``).
    Needs ``fit_inputs``: the labels come from ``fit``'s outputs, in the same order.
    """

    needs = frozenset({"model", "fit"})

    def __init__(self, layers: int = 4):
        if int(layers) < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        self.layers = int(layers)

    def fit(self, train: Outputs | None, head: Head | None) -> None:
        self._labels = np.array(train.labels if train is not None else [], dtype=np.int64)
        self._layers: list[tuple[np.ndarray, ...]] | None = None

    def _pooled(self, model: Classifier, x: torch.Tensor) -> list[torch.Tensor]:
        import torch

        with torch.no_grad():
            return [m.detach().double().mean((2, 3)) for m in layer_maps(model, x, self.layers)[0]]

    def fit_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> None:
        """Class sums and centred second moments per layer, one batch at a time."""
        import torch

        k = int(self._labels.max()) + 1 if len(self._labels) else 0
        stats: list[list[torch.Tensor]] = []
        seen = 0
        for x in batches:
            y = torch.as_tensor(self._labels[seen : seen + len(x)], device=x.device)
            if len(y) != len(x):
                raise ValueError("mahalanobis-ensemble: more training images than labels")
            seen += len(x)
            for i, v in enumerate(self._pooled(model, x)):
                if len(stats) <= i:
                    stats.append(
                        [v[0], v.new_zeros(k, v.shape[1]), v.new_zeros(v.shape[1], v.shape[1])]
                    )
                shift, sums, moment = stats[i]
                c = v - shift
                sums.index_add_(0, y, c)
                moment += c.T @ c
        if seen != len(self._labels) or not seen:
            raise ValueError(
                f"mahalanobis-ensemble: {seen} training images for {len(self._labels)} labels"
            )
        counts = np.bincount(self._labels, minlength=k).astype(np.float64)
        self._layers = [_gaussian(*(t.cpu().numpy() for t in s), counts) for s in stats]

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        from oebench_plugins.feature_detectors import _sq_distances

        if getattr(self, "_layers", None) is None:
            raise ValueError("mahalanobis-ensemble: fit_inputs() must run before scoring")
        parts = []
        for x in batches:
            total = np.zeros(len(x))
            for v, (origin, whitener, centres) in zip(
                self._pooled(model, x), self._layers, strict=True
            ):
                d = _sq_distances(v.cpu().numpy(), origin, whitener, centres).min(1)
                total += d / max(whitener.shape[1], 1)
            parts.append(total)
        return _cat(parts)


def _gaussian(
    shift: np.ndarray, sums: np.ndarray, moment: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin, whitener and whitened class means from shifted class sums and second moments."""
    from oebench_plugins.feature_detectors import _whitener

    seen = counts > 0
    means = sums[seen] / counts[seen, None]  # relative to shift
    cov = (moment - (means * counts[seen, None]).T @ means) / counts.sum()
    whitener = _whitener((cov + cov.T) / 2)
    return shift, whitener, means @ whitener
