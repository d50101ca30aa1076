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
) -> torch.Tensor:
    """Indices of the ``needed`` outliers (in training order) for one epoch, drawn only from
    ``subset`` (indices into ``outliers``, see ``budget_subset``) when one is given."""
    if spec is None or spec.get("name", "random") == "random":
        n = len(outliers) if subset is None else len(subset)
        order = uniform_order(n, needed, generator)
        return order if subset is None else subset[order]
    options = {**SAMPLERS["ntom"], **{k: v for k, v in spec.items() if k != "name"}}
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
