"""Learning from wild (unlabeled ID + OOD) data with constraints: WOODS and SCONE, and the
wild-mixture outlier source they train on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Le

import oebench.api as oebench
from oebench.api import ImageSource, Objective, TensorImages, TrainStep, UserError

Fraction = Annotated[float, Ge(0.0), Le(1.0)]
Positive = Annotated[float, Ge(1e-6)]


# -- the augmented-Lagrangian pieces ---------------------------------------------------------
def alm_term(value: Any, lam: float, rho: float) -> Any:
    """The augmented-Lagrangian penalty of the constraint ``value <= 0`` (WOODS, eq. 6).

    ``lam * value + rho / 2 * value**2`` where ``rho * value + lam >= 0``, else the constant
    ``-lam**2 / (2 rho)`` (the constraint is slack: no gradient).
    """
    if rho * float(value.detach()) + lam >= 0:
        return lam * value + rho / 2 * value**2
    return value * 0 - lam**2 / (2 * rho)


def alm_update(value: float, lam: float, rho: float, lr: float) -> float:
    """The multiplier after one epoch whose mean constraint value was ``value``."""
    if value * rho + lam >= 0:
        return lam + lr * value
    return lam - lr * lam / rho


def _energy_head() -> Any:
    """WOODS' logistic layer on the negative energy: ``g(lse(z)) = a * lse(z) + b``."""
    import torch

    return torch.nn.Linear(1, 1)


class WildConstrained(Objective):
    """WOODS (Katz-Samuels et al., ICML 2022, "Training OOD Detectors in their Natural
    Habitats"): minimise the wild data's probability of being called ID, subject to the ID
    data's false-alarm rate <= ``alpha`` and CE <= ``ce_tol`` times its initial value, by an
    augmented Lagrangian. The OOD/ID call is a logistic layer ``g`` on ``lse(z)``:

        wild  = mean sigmoid(-g(lse(z_wild) - eta))      (minimised, weight ``out_weight``)
        in    = mean sigmoid(g(lse(z_in))) - alpha        (constraint <= 0)
        ce    = CE(z_in, y) - ce_tol * ce_ref             (constraint <= 0)

    ``loss = alm(ce; lam2, rho2) + out_weight * wild + alm(in; lam, rho)``. After every epoch
    each multiplier moves by ``lr_lam`` times the epoch's mean constraint value and each
    penalty ``rho`` grows by ``penalty_mult`` while its constraint is violated.

    Matches the authors' ``woods`` branch (``deeplearning-wisc/scone``'s ``CIFAR/train.py``,
    which carries WOODS on): the sigmoid surrogates, the ``Linear(1, 1)`` layer trained by the
    same SGD, the ALM branch rule, the multiplier and penalty updates and the defaults
    (``alpha = 0.05``, ``ce_tol = 2``, weights 1, ``lr_lam = 1``, ``penalty_mult = 1.5``).
    Differs: the epoch's constraint values are the running means over its training batches
    (train mode) rather than a second pass over the training set in eval mode, and ``ce_ref``
    (their CE of the pretrained network over the training set) is the mean CE of the first
    ``calibrate`` steps, during which the CE term is plain CE.
    """

    uses_outliers = True

    def __init__(
        self,
        alpha: Fraction = 0.05,
        ce_tol: Annotated[float, Ge(1.0)] = 2.0,
        out_weight: Positive = 1.0,
        in_weight: Positive = 1.0,
        ce_weight: Positive = 1.0,
        lr_lam: Positive = 1.0,
        penalty_mult: Annotated[float, Ge(1.0)] = 1.5,
        eta: float = 0.0,
        calibrate: Annotated[int, Ge(1)] = 10,
    ):
        self.alpha, self.ce_tol, self.eta, self.calibrate = alpha, ce_tol, eta, calibrate
        self.out_weight, self.in_weight, self.ce_weight = out_weight, in_weight, ce_weight
        self.lr_lam, self.penalty_mult = lr_lam, penalty_mult
        self._reset()

    def _reset(self) -> None:
        self._lam = self._lam2 = 0.0
        self._rho, self._rho2 = self.in_weight, self.ce_weight
        self._ce_ref: float | None = None
        self._seen: list[float] = []  # CE of the calibration steps
        self._sums = [0.0, 0.0, 0]  # in-term, CE, steps of the epoch

    def attach(self, feature_dim: int, classes: int) -> Any:
        self._reset()
        return _energy_head()

    def loss(self, step: TrainStep) -> Any:
        import torch
        import torch.nn.functional as F

        g = step.extra
        if g is None:
            raise UserError(f"{type(self).__name__}: the training loop did not attach its layer")
        if step.logits_out is None:
            raise UserError(f"{type(self).__name__} needs wild data: set 'outliers'")
        lse_in = torch.logsumexp(step.logits_in, dim=1, keepdim=True)
        lse_wild = torch.logsumexp(step.logits_out, dim=1, keepdim=True)
        false_alarm = torch.sigmoid(g(lse_in)).mean()
        wild = torch.sigmoid(-g(lse_wild - self.eta)).mean()
        ce = F.cross_entropy(step.logits_in, step.targets)
        self._sums[0] += float(false_alarm.detach())
        self._sums[1] += float(ce.detach())
        self._sums[2] += 1
        in_loss = alm_term(false_alarm - self.alpha, self._lam, self._rho)
        if self._ce_ref is None:
            self._seen.append(float(ce.detach()))
            if len(self._seen) >= self.calibrate:
                self._ce_ref = sum(self._seen) / len(self._seen)
            ce_loss = ce
        else:
            ce_loss = alm_term(ce - self.ce_tol * self._ce_ref, self._lam2, self._rho2)
        return ce_loss + self.out_weight * wild + in_loss

    def end_epoch(self, epoch: int, epochs: int) -> None:
        fa, ce, n = self._sums
        self._sums = [0.0, 0.0, 0]
        if not n or self._ce_ref is None:
            return
        in_value = fa / n - self.alpha
        ce_value = ce / n - self.ce_tol * self._ce_ref
        self._lam = alm_update(in_value, self._lam, self._rho, self.lr_lam)
        self._lam2 = alm_update(ce_value, self._lam2, self._rho2, self.lr_lam)
        if in_value > 0:
            self._rho *= self.penalty_mult
        if ce_value > 0:
            self._rho2 *= self.penalty_mult

    def state(self) -> dict[str, Any]:
        return {
            "lam": self._lam, "lam2": self._lam2, "rho": self._rho, "rho2": self._rho2,
            "ce_ref": self._ce_ref, "seen": list(self._seen), "sums": list(self._sums),
        }  # fmt: skip

    def load_state(self, state: dict[str, Any]) -> None:
        self._lam, self._lam2 = state["lam"], state["lam2"]
        self._rho, self._rho2 = state["rho"], state["rho2"]
        self._ce_ref, self._seen, self._sums = state["ce_ref"], state["seen"], state["sums"]


class SCONE(WildConstrained):
    """SCONE (Bai et al., ICML 2023, "Feed Two Birds with One Scone: Exploiting Wild Data for
    Both Out-of-Distribution Generalization and Detection"): WOODS' constrained objective with
    an energy margin ``eta`` (default 1, the authors' ``--eta``), so covariate-shifted ID data
    in the wild mixture stays on the ID side of the boundary; train it on a ``wild`` source
    with ``covariate > 0``. Same ALM and the same differences as ``woods``.
    """

    def __init__(self, eta: float = 1.0, **options: Any):
        super().__init__(eta=eta, **options)


# -- the wild mixture ------------------------------------------------------------------------
def _images(dataset: Any, shape: tuple[int, int, int]) -> Any:
    """A loaded dataset's images as one float [0, 1] tensor of ``(N, *shape)``."""
    import torch

    if hasattr(dataset, "batch"):
        images = dataset.batch(0, len(dataset))[0]
    else:
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images if tuple(images.shape[1:]) == shape else oebench.adapt_images(images, shape)


def gaussian_noise(images: Any, severity: int, generator: Any) -> Any:
    """ImageNet-C's ``gaussian_noise`` corruption (Hendrycks & Dietterich, ICLR 2019)."""
    import torch

    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    noise = torch.randn(images.shape, generator=generator) * sigma
    return (images + noise).clamp(0, 1)


class Wild(ImageSource):
    """Unlabeled "wild" data as WOODS and SCONE train on: ``n`` images of which a fraction
    ``pi`` come from the outlier source ``outliers`` (a name, or a table with ``name`` and
    options; semantic OOD), ``covariate`` are training
    images of ``inliers`` under ImageNet-C ``gaussian_noise`` at ``severity`` (covariate
    shift, SCONE's ``pi_1``), and the rest clean training images of ``inliers``. Labels are
    dropped (-1); the mix is drawn once per seed. WOODS' CIFAR default is ``pi = 0.1``; the
    authors' code defaults to ``pi_1 = pi_2 = 0.5``.
    """

    splits = ("train",)

    def __init__(
        self,
        inliers: str = "mnist-5k",
        outliers: str | dict[str, Any] = "photo-crops",
        pi: Fraction = 0.1,
        covariate: Fraction = 0.0,
        severity: Annotated[int, Ge(1), Le(5)] = 3,
        n: Annotated[int, Ge(1), Le(1_000_000)] = 5000,
    ):
        if pi + covariate > 1:
            raise UserError(f"wild: pi + covariate must be <= 1, got {pi} + {covariate}")
        self.inliers, self.outliers, self.pi, self.covariate = inliers, outliers, pi, covariate
        self.severity, self.n = severity, n

    def _sources(self) -> tuple[Any, Any]:
        out = self.outliers if isinstance(self.outliers, dict) else {"name": self.outliers}
        options = {k: v for k, v in out.items() if k != "name"}
        if not isinstance(out.get("name"), str):
            raise UserError(
                f"wild: outliers must be a source name or a table with 'name', got {out}"
            )
        made = oebench.create_outlier_source(out["name"], **options)
        return oebench.create_dataset(self.inliers), made

    def files(self) -> list[Path]:
        """The files of both parts (what keys the data)."""
        found: list[Path] = []
        for source in self._sources():
            found += list(source.files()) if hasattr(source, "files") else []
        return sorted(set(found))

    def counts(self) -> tuple[int, int, int]:
        """(semantic OOD, covariate-shifted ID, clean ID) images in the mix."""
        out = round(self.n * self.pi)
        cov = round(self.n * self.covariate)
        return out, cov, self.n - out - cov

    def load(self, split, *, shape=None, seed=0):
        import torch

        id_source, ood_source = self._sources()
        shape = tuple(shape or id_source.shape)
        g = torch.Generator().manual_seed(10_007 * seed + 0x3D)
        inl = _images(id_source.load("train", shape=shape, seed=seed), shape)
        out_n, cov_n, clean_n = self.counts()
        picks = torch.randint(len(inl), (cov_n + clean_n,), generator=g)
        parts = [inl[picks[cov_n:]], gaussian_noise(inl[picks[:cov_n]], self.severity, g)]
        if out_n:
            ood = _images(ood_source.load("train", shape=shape, seed=seed), shape)
            parts.append(ood[torch.randint(len(ood), (out_n,), generator=g)])
        mixed = torch.cat(parts)[torch.randperm(self.n, generator=g)]
        return TensorImages((mixed * 255).round().to(torch.uint8))


@oebench.hookimpl
def register_objectives(register):
    register(
        "woods",
        WildConstrained,
        description="wild data called OOD by an augmented Lagrangian, ID false alarms <= 5% "
        "(Katz-Samuels et al., ICML 2022)",
    )
    register(
        "scone",
        SCONE,
        description="WOODS with an energy margin for covariate-shifted ID data "
        "(Bai et al., ICML 2023)",
    )


@oebench.hookimpl
def register_outlier_sources(register):
    register(
        "wild",
        Wild,
        description="unlabeled wild data: ID + covariate-shifted ID + an outlier source",
    )
