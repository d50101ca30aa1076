"""Which auxiliary outliers a training sees each epoch: uniform draws, or outlier mining.

A training's ``outlier_sampling`` setting picks the rule; it works with every objective that
uses outliers::

    outlier_sampling = {name = "ntom", pool = 20000, quantile = 0.125, score = "msp"}

``random`` (the default) shuffles the whole source each epoch, as in the OE paper.
``ntom`` is NTOM from ATOM (Chen et al., ECML 2021): each epoch, score a random ``pool`` of
outliers with the current model, rank them from most ID-like to most OOD-like, skip the
first ``quantile`` of the ranking and train on the next ones (the informative outliers near
the decision boundary). ATOM's models have a (K+1)-th "outlier" class and rank by its
probability; oebench's K-class models rank by ``score``: ``msp`` (-max softmax) or
``energy`` (-logsumexp of the logits).

``poem`` is POEM (Ming et al., ICML 2022, "POEM: Out-of-Distribution Detection with
Posterior Sampling"; code: github.com/deeplearning-wisc/poem). Each epoch, with the current
model in eval mode, take the penultimate features ``z = model.forward_features(x)`` of a
random ``pool`` of outliers (default 8 x the epoch's need, the authors' 400,000 scanned for
50,000 kept) and of a random ``id_pool`` of ID training images (default: as many as the
pool, at most the training set). Fit a Bayesian linear regression ``y = w . z + noise`` with
targets ``-conf`` (ID) and ``+conf`` (outliers), prior ``w ~ N(0, sigma I)`` and noise
variance ``sigma_n``; in closed form, with ``A = Z^T Z / sigma_n + I / sigma``::

    mean = A^-1 Z^T y / sigma_n        cov = sigma A^-1

(the authors' ``update_bays_reg_BDQN``; the textbook posterior covariance is ``A^-1``, theirs
is ``sigma`` times wider, so Thompson sampling explores more). Thompson-sample one ``w`` =
``mean + chol(cov) @ e``, ``e ~ N(0, I)``, and train on the pooled outliers closest to the
sampled boundary ``w . z = 0``: the smallest ``|w . z|`` (their ``select_ood_opt``), shuffled.
Defaults are theirs: ``sigma = 20``, ``sigma_n = 0.5``, ``conf = 3``. Differences from their
code: the posterior is fit from scratch each epoch, on this epoch's pool (every feature from
the current model, as theirs recomputes its buffer's features after each epoch); theirs is fit
after each epoch on the whole ID set and on the outliers *selected* in the last ``BUF_SIZE =
4`` epochs (a ring buffer, ID repeated to match), so their regression sees only boundary
outliers and remembers four epochs, while ours sees a random pool and keeps no state (resumed
trainings stay exact, and memory is bounded by the pools). Their first epoch samples ``w``
from the prior (random selection); ours fits the initial model's features. Their targets
share one offset drawn once from ``N(0, sigma_n)``; ours have none. Example::

    [[trainings]]
    name = "energy-poem"
    objective = "energy-margin"
    outliers = "photo-crops"
    outlier_sampling = {name = "poem", pool = 20000, sigma = 20.0, sigma_n = 0.5, conf = 3.0}
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from oebench.bench.sampling import SAMPLERS

if TYPE_CHECKING:
    import torch


def epoch_outliers(
    spec: dict[str, Any] | None,
    model: torch.nn.Module,
    outliers: Any,
    needed: int,
    shape: tuple[int, int, int],
    device: torch.device,
    generator: torch.Generator,
    subset: torch.Tensor | None = None,
    train_set: Any = None,
) -> torch.Tensor:
    """Indices of the ``needed`` outliers (in training order) for one epoch, drawn only from
    ``subset`` (indices into ``outliers``, see ``budget_subset``) when one is given; ``poem``
    also reads features of the ID ``train_set``."""
    if spec is None or spec.get("name", "random") == "random":
        n = len(outliers) if subset is None else len(subset)
        order = uniform_order(n, needed, generator)
        return order if subset is None else subset[order]
    name = spec["name"]
    options = {**SAMPLERS[name], **{k: v for k, v in spec.items() if k != "name"}}
    if name == "poem":
        return poem_order(
            model, outliers, train_set, needed, shape, device, generator, subset=subset, **options
        )
    return ntom_order(model, outliers, needed, shape, device, generator, subset=subset, **options)


def budget_size(budget: int | float, n: int) -> int:
    """How many of a source's ``n`` outliers an ``outlier_budget`` allows: a count as it is, a
    fraction ``f`` as ``max(1, round(f * n))``. A count above ``n`` is a ``UserError`` naming
    both sizes (never silently clamped: the budget axis would repeat a point)."""
    from oebench.errors import UserError

    if isinstance(budget, float):
        return max(1, min(n, round(budget * n)))
    if budget > n:
        raise UserError(
            f"outlier_budget = {budget} is larger than the outlier source, which has {n} "
            f"images; give at most {n}, or a fraction such as 0.5"
        )
    return budget


def budget_subset(budget: int | float, n: int, seed: int) -> torch.Tensor:
    """The fixed subset of outlier indices (sorted) a training with ``outlier_budget`` draws
    from: chosen once with the training's seed on its own CPU generator, so it is the same in
    every process and executor, and the training's other random numbers are unchanged."""
    import torch

    size = budget_size(budget, n)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]
    return torch.sort(chosen).values


def uniform_order(n: int, needed: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of all ``n`` outliers, repeated until ``needed`` are drawn."""
    import torch

    order = torch.randperm(n, generator=generator)
    return order.repeat(math.ceil(needed / n))[:needed]


def ntom_order(
    model: torch.nn.Module,
    outliers: Any,
    needed: int,
    shape: tuple[int, int, int],
    device: torch.device,
    generator: torch.Generator,
    pool: int | None = None,
    quantile: float = 0.125,
    score: str = "msp",
    subset: torch.Tensor | None = None,
) -> torch.Tensor:
    """NTOM: from a random pool (default 4 x ``needed``; taken from ``subset`` when given),
    the outliers ranked just after the ``quantile`` most ID-like ones; shuffled; repeated
    when the pool is too small."""
    import torch

    n = len(outliers) if subset is None else len(subset)
    size = min(n, pool or 4 * needed)
    candidates = torch.randperm(n, generator=generator)[:size]
    if subset is not None:
        candidates = subset[candidates]
    ood = ood_scores(model, outliers, candidates, shape, device, score)
    ranked = candidates[torch.argsort(ood, stable=True)]
    start = min(int(quantile * size), max(0, size - needed))
    chosen = ranked[start : start + needed]
    chosen = chosen[torch.randperm(len(chosen), generator=generator)]
    return chosen.repeat(math.ceil(needed / len(chosen)))[:needed]


def ood_scores(
    model: torch.nn.Module,
    data: Any,
    order: torch.Tensor,
    shape: tuple[int, int, int],
    device: torch.device,
    score: str,
    batch_size: int = 500,
) -> torch.Tensor:
    """OOD scores (higher = more OOD) of ``data[order]`` under ``model`` in eval mode."""
    import torch

    from oebench.execute.outputs import iterate_batches

    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for x, _ in iterate_batches(data, batch_size, shape, device, order=order):
            logits = model(x).float()
            if score == "energy":
                parts.append(-torch.logsumexp(logits, dim=1))
            else:
                parts.append(-logits.softmax(dim=1).max(dim=1).values)
    model.train(was_training)
    return torch.cat(parts).cpu()


def poem_order(
    model: torch.nn.Module,
    outliers: Any,
    train_set: Any,
    needed: int,
    shape: tuple[int, int, int],
    device: torch.device,
    generator: torch.Generator,
    pool: int | None = None,
    id_pool: int | None = None,
    sigma: float = 20.0,
    sigma_n: float = 0.5,
    conf: float = 3.0,
    subset: torch.Tensor | None = None,
) -> torch.Tensor:
    """POEM: the pooled outliers nearest a boundary Thompson-sampled from the Bayesian linear
    regression of ID (``-conf``) vs outlier (``+conf``) features; shuffled; repeated when the
    pool is too small."""
    import torch

    n = len(outliers) if subset is None else len(subset)
    size = min(n, pool or 8 * needed)
    candidates = torch.randperm(n, generator=generator)[:size]
    if subset is not None:
        candidates = subset[candidates]
    id_order = torch.randperm(len(train_set), generator=generator)[: id_pool or size]
    z_in = penultimate(model, train_set, id_order, shape, device)
    z_out = penultimate(model, outliers, candidates, shape, device)
    targets = torch.cat([torch.full((len(z_in),), -conf), torch.full((len(z_out),), conf)])
    mean, cov = blr_posterior(torch.cat([z_in, z_out]), targets.double(), sigma, sigma_n)
    w = thompson_sample(mean, cov, generator)
    chosen = candidates[nearest_boundary(z_out, w, min(needed, size))]
    chosen = chosen[torch.randperm(len(chosen), generator=generator)]
    return chosen.repeat(math.ceil(needed / len(chosen)))[:needed]


def blr_posterior(
    z: torch.Tensor, y: torch.Tensor, sigma: float, sigma_n: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """POEM's posterior of ``w`` in ``y = w . z + noise`` (prior ``N(0, sigma I)``, noise
    variance ``sigma_n``): ``A = Z^T Z / sigma_n + I / sigma``, mean ``A^-1 Z^T y / sigma_n``,
    covariance ``sigma A^-1`` (float64)."""
    import torch

    z, y = z.double(), y.double()
    a = z.T @ z / sigma_n + torch.eye(z.shape[1], dtype=torch.float64) / sigma
    chol = torch.linalg.cholesky(a)  # A is positive definite: Z^T Z >= 0, I / sigma > 0
    mean = torch.cholesky_solve((z.T @ y / sigma_n).unsqueeze(1), chol).squeeze(1)
    cov = sigma * torch.cholesky_inverse(chol)
    return mean, (cov + cov.T) / 2


def thompson_sample(
    mean: torch.Tensor, cov: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """One draw ``mean + chol(cov) @ e`` of ``N(mean, cov)``, ``e ~ N(0, I)`` from ``generator``."""
    import torch

    e = torch.randn(len(mean), generator=generator, dtype=torch.float64)
    return mean + torch.linalg.cholesky(cov) @ e


def nearest_boundary(z: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` rows of ``z`` with the smallest ``|w . z|`` (ties: first first)."""
    import torch

    return torch.argsort((z.double() @ w).abs(), stable=True)[:k]


def penultimate(
    model: torch.nn.Module,
    data: Any,
    order: torch.Tensor,
    shape: tuple[int, int, int],
    device: torch.device,
    batch_size: int = 500,
) -> torch.Tensor:
    """Float32 CPU features ``model.forward_features`` of ``data[order]``, in eval mode."""
    import torch

    from oebench.errors import UserError
    from oebench.execute.outputs import iterate_batches

    if not callable(getattr(model, "forward_features", None)):
        raise UserError("outlier_sampling 'poem' needs a model with forward_features")
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for x, _ in iterate_batches(data, batch_size, shape, device, order=order):
            parts.append(model.forward_features(x).float().flatten(1).cpu())
    model.train(was_training)
    return torch.cat(parts)
