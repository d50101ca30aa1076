"""What the detector tests share: tiny outputs by hand, a fitted detector, and the parity data
checked against pytorch-ood (Gaussian-cluster features with a nearest-class-mean head); the
``pood`` fixture (pytorch-ood's detectors, or a skip) is in conftest."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import oebench.api as oebench
from oebench.api import Head, Outputs


def make(name: str, **options):
    return oebench.create_detector(name, **options)


def as64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def outputs(logits=None, features=None, labels=None, classes: int = 1) -> Outputs:
    """Outputs of a few samples; zero logits of ``classes`` columns where none are given."""
    n = len(logits if logits is not None else features)
    return Outputs(
        as64(logits) if logits is not None else np.zeros((n, classes)),
        None if features is None else as64(features),
        None if labels is None else np.asarray(labels),
    )


def fitted(name: str, train: Outputs | None, head: Head | None = None, **options):
    det = make(name, **options)
    det.fit(train, head)
    return det


def tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a))


def parity_split(n_train: int = 400, n_test: int = 100, dim: int = 16, classes: int = 4):
    """Non-negative Gaussian-cluster features, labels, a float64 head (nearest class mean:
    most train samples correct) and its logits: (train, test, fc, head)."""
    rng = np.random.default_rng(0)
    n = n_train + n_test
    labels = np.arange(n) % classes
    means = rng.normal(size=(classes, dim)) * 3
    x = np.abs(means[labels] + rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, size=dim))
    fc = nn.Linear(dim, classes).double()
    centres = torch.from_numpy(np.abs(means))
    with torch.no_grad():
        fc.weight.copy_(centres / 4)
        fc.bias.copy_(-(centres**2).sum(1) / 8)
        z = fc(torch.from_numpy(x)).numpy()
    head = Head(fc.weight.detach().numpy(), fc.bias.detach().numpy())
    train = Outputs(z[:n_train], x[:n_train], labels[:n_train])
    test = Outputs(z[n_train:], x[n_train:], labels[n_train:])
    return train, test, fc, head
