"""Detectors that run the model themselves: stochastic passes, feature maps, input gradients.

Float64 scores, higher = more anomalous. They declare ``"model"`` and get
``score_inputs(model, batches)`` with [0, 1] image batches; ``"model"`` with ``"fit"`` also gets
``fit(train, None)`` first, with the ID training outputs (``"features"`` / ``"logits"`` name
what it reads there).

Feature maps come from the documented rule in ``feature_map``: the output of the last submodule
that returns an ``(N, C, H, W)`` tensor with ``H * W > 1`` during ``forward_features``, checked
to average (over H x W) to the penultimate features. The small CNN, the Wide ResNets and the
ResNet-18 satisfy it (the map after the last ReLU); a network that pools differently gets a
one-line error from the detectors that need the map.

Detectors over several layers (``gram``, ``mahalanobis-ensemble``) use ``layer_maps``: during a
forward pass, the last ``(N, C, H, W)`` submodule output (``H * W > 1``) at each spatial size,
i.e. the output of each resolution stage (the small CNN: the three ReLUs; the Wide ResNets: the
first two groups and the final ReLU; ResNet-18: its four stages), the deepest ``layers`` (4) of
them. They also define ``fit_inputs(model, batches)``: the engine passes it the ID training
images once, and it accumulates its statistics batch by batch (never all activations).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

import oebench.api as oebench
from oebench.api import Detector, Head, Outputs

if TYPE_CHECKING:
    import torch

    from oebench.api import Classifier


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _energy(logits: torch.Tensor) -> np.ndarray:
    """Free energy ``-logsumexp(z)`` of float logits, in float64 numpy."""
    import torch

    return -torch.logsumexp(logits.detach().double(), dim=1).cpu().numpy()


def feature_map(model: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last 4-D submodule output whose spatial mean is the penultimate features, and those."""
    import torch

    last: list[torch.Tensor] = []

    def keep(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output[0, 0].numel() > 1:
            last[:] = [output]

    handles = [m.register_forward_hook(keep) for m in model.net.modules() if m is not model.net]
    try:
        features = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    if not last or last[0].shape[:2] != features.shape:
        raise ValueError("found no (N, C, H, W) feature map in front of the penultimate features")
    pooled = last[0].mean((2, 3))
    if not torch.allclose(pooled, features, rtol=1e-4, atol=1e-5 * float(features.abs().max())):
        raise ValueError(
            "the penultimate features are not the spatial mean of the last feature map"
        )
    return last[0], features


# -- RankFeat ------------------------------------------------------------------------------------
def remove_rank1(maps: torch.Tensor) -> torch.Tensor:
    """Each (C, H*W) map minus its leading singular triple ``s1 u1 v1^T`` (float64).

    ``s1 u1 v1^T = u1 u1^T X = X v1 v1^T``, with ``u1`` / ``v1`` the top eigenvector of the
    smaller Gram matrix: exact like an SVD, and several times faster than a batched SVD on CPU.
    """

    m = maps.detach().double().flatten(2)
    if m.shape[1] <= m.shape[2]:
        u = _top_eigenvector(m @ m.transpose(1, 2))
        rest = m - u @ (u.transpose(1, 2) @ m)
    else:
        v = _top_eigenvector(m.transpose(1, 2) @ m)
        rest = m - (m @ v) @ v.transpose(1, 2)
    return rest.view(maps.shape)


def _top_eigenvector(gram: torch.Tensor) -> torch.Tensor:
    """(N, D, 1) eigenvectors of the largest eigenvalues of a batch of symmetric matrices.

    On CPU the batched ``eigh`` runs on one thread: with several, LAPACK's threads inside
    torch's batch loop oversubscribe the cores (measured 100x slower on 2 busy cores).
    """
    import torch

    if gram.is_cuda:
        return torch.linalg.eigh(gram)[1][:, :, -1:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(gram)[1][:, :, -1:]
    finally:
        torch.set_num_threads(threads)


class RankFeat(Detector):
    """Energy after removing the rank-1 part of the last feature map (Song et al., NeurIPS 2022).

    The paper's single-block variant at the last block (before global pooling); the map minus
    ``s1 u1 v1^T`` (exact, not the paper's optional power iteration) is average-pooled and
    sent through the head. Needs a network whose features are the mean of a feature map (see
    ``feature_map``); the block-3 + block-4 fusion is not included.
    """

    needs = frozenset({"model"})

    def _score_batch(self, model: Classifier, x: torch.Tensor) -> np.ndarray:
        import torch

        with torch.no_grad():
            maps, features = feature_map(model, x)
            pooled = remove_rank1(maps).mean((2, 3)).to(features.dtype)
            return _energy(model.forward_head(pooled))

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        return _cat([self._score_batch(model, x) for x in batches])


# -- MC dropout ----------------------------------------------------------------------------------
def _stochastic(model: Classifier) -> dict:
    """Put the model in training mode but keep batch norm in eval mode; returns the old flags."""
    from torch import nn

    flags = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return flags


class MCDropout(Detector):
    """MSP of the softmax averaged over T passes with dropout on (Gal & Ghahramani, ICML 2016).

    ``samples`` = 30 passes (pytorch-ood's default) with dropout in training mode and batch norm
    in eval mode; the random masks come from ``seed`` (the global RNG is restored afterwards), so
    the same seed gives the same scores. Score ``log((1 - p) / p)`` of the largest mean
    probability ``p``, in log space (``1 - p`` from the other classes). Needs a model with
    dropout (for example ``small-cnn`` with ``dropout = 0.3``, the Wide ResNets): if every pass
    gives the same logits it raises instead of reporting plain MSP. Costs ``samples`` forward
    passes per input, about ten times ODIN.
    """

    needs = frozenset({"model"})

    def __init__(self, samples: int = 30, seed: int = 0):
        if int(samples) < 2:
            raise ValueError(f"samples must be at least 2, got {samples}")
        self.samples = int(samples)
        self.seed = int(seed)

    def _log_mean_probs(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        """``log`` of the softmax averaged over the passes, (N, K) float64, in log space."""
        import math

        import torch

        passes = [model(x).detach().double() for _ in range(self.samples)]
        if all(torch.equal(passes[0], p) for p in passes[1:]):
            raise ValueError("mc-dropout: every pass gave the same logits (no active dropout)")
        logp = torch.stack([p.log_softmax(1) for p in passes])
        return torch.logsumexp(logp, 0) - math.log(self.samples)

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        import math

        import torch

        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        parts, flags = [], _stochastic(model)
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(self.seed)
                for x in batches:
                    logp = self._log_mean_probs(model, x)
                    top = logp.argmax(1, keepdim=True)
                    rest = torch.logsumexp(logp.scatter(1, top, -math.inf), 1)
                    parts.append((rest - logp.gather(1, top)[:, 0]).cpu().numpy())
        finally:
            for m, training in flags.items():
                m.train(training)
        return _cat(parts)


# -- Mahalanobis with input preprocessing --------------------------------------------------------
class MahalanobisPreprocessed(Detector):
    """Mahalanobis distance after Lee et al.'s input preprocessing (NeurIPS 2018), last layer.

    Class means and tied covariance as ``mahalanobis`` (fit on the ID training features); each
    input moves ``epsilon`` (on [0, 1] pixels, as ODIN here) against the gradient sign of its
    squared distance to the closest class mean; the score is the min squared distance of the
    moved input. ``epsilon`` = 0.002 (pytorch-ood's default; the paper tunes it over
    {0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01} on validation data). The paper's feature
    ensemble over layers (without preprocessing) is ``mahalanobis-ensemble``.
    """

    needs = frozenset({"model", "fit", "features"})

    def __init__(self, epsilon: float = 0.002):
        if epsilon < 0:
            raise ValueError(f"epsilon must be non-negative, got {epsilon}")
        self.epsilon = float(epsilon)

    def fit(self, train: Outputs, head: Head | None) -> None:
        from oebench_plugins.feature_detectors import Mahalanobis

        gauss = Mahalanobis()
        gauss.fit(train, None)
        self._gauss = (gauss._origin, gauss._whitener, gauss._centres)

    def _distances(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) squared Mahalanobis distances, float64, differentiable in ``features``."""
        import torch

        origin, whitener, centres = (
            torch.as_tensor(a, dtype=torch.float64, device=features.device) for a in self._gauss
        )
        a = (features.double() - origin) @ whitener
        return ((a[:, None, :] - centres[None, :, :]) ** 2).sum(2)

    def _score_batch(self, model: Classifier, x: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            loss = self._distances(model.forward_features(x)).min(1).values.sum()
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            moved = x.detach() - self.epsilon * grad.sign()
            return self._distances(model.forward_features(moved)).min(1).values.cpu().numpy()

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        return _cat([self._score_batch(model, x) for x in batches])


# -- several layers: Gram matrices and Lee et al.'s feature ensemble -----------------------------
def layer_maps(
    model: Classifier, x: torch.Tensor, layers: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The deepest ``layers`` stage outputs of ``x`` (rule in the module doc) and its logits."""
    import torch

    last: dict[tuple[int, ...], torch.Tensor] = {}

    def keep(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output[0, 0].numel() > 1:
            size = tuple(output.shape[2:])
            last.pop(size, None)  # re-insert: dict order = order of each size's last output
            last[size] = output

    handles = [m.register_forward_hook(keep) for m in model.net.modules() if m is not model.net]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not last:
        raise ValueError("found no (N, C, H, W) feature map with H * W > 1 in the network")
    return list(last.values())[-layers:], logits


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


@oebench.hookimpl
def register_detectors(register):
    register(
        "rankfeat",
        RankFeat,
        description="energy after removing the rank-1 part of the last feature map; needs the "
        "model (Song et al. 2022)",
        modalities=["image"],  # feature maps / input gradients of images
    )
    register(
        "mc-dropout",
        MCDropout,
        description="MSP of the mean softmax over 30 dropout passes; needs a model with dropout "
        "(Gal & Ghahramani 2016)",
    )
    register(
        "mahalanobis-preproc",
        MahalanobisPreprocessed,
        description="Mahalanobis with Lee et al.'s input preprocessing, eps=0.002, penultimate "
        "layer; needs the model (Lee et al. 2018)",
        modalities=["image"],  # feature maps / input gradients of images
    )
    register(
        "gram",
        Gram,
        description="Gram-matrix deviations from ID train bounds, 4 deepest stages, p=1..10; "
        "needs the model (Sastry & Oore 2020)",
        modalities=["image"],  # feature maps / input gradients of images
    )
    register(
        "mahalanobis-ensemble",
        MahalanobisEnsemble,
        description="Mahalanobis summed over the 4 deepest stages, equal-weighted by rank, "
        "no preprocessing; needs the model (Lee et al. 2018)",
        modalities=["image"],  # feature maps / input gradients of images
    )
