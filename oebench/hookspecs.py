"""The hooks a plugin can implement. Each component hook receives a ``register`` callback.

A plugin is a module (or object) with ``@oebench.hookimpl`` functions named as below, listed
under the ``oebench`` entry-point group. Hook implementations may omit the annotations; they
are here so that type checkers (mypy, pyright) can check a plugin against the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    import click

hookspec = HookspecMarker("oebench")
hookimpl = HookimplMarker("oebench")


class Register(Protocol):
    """The callback each component hook receives.

    ``register(name, factory, description="", **meta)``: ``name`` is unique per kind across
    all plugins (a clash marks both plugins broken); ``factory``'s keyword arguments are the
    options a benchmark file may set, checked against their type annotations before any
    work; ``description`` is one line for ``oebench list``; ``meta`` may hold ``citation``
    (shown by ``oebench show``). Registering one name twice marks the plugin broken.
    """

    def __call__(
        self, name: str, factory: Callable[..., Any], description: str = "", **meta: Any
    ) -> None: ...


@hookspec
def register_datasets(register: Register) -> None:
    """Register ID datasets and OOD test sets: ``factory(**options) -> oebench.ImageSource``
    (or ``oebench.TextSource``, or another ``Source`` whose ``modality`` names its kind).

    ``load(split, shape=None, seed=0)`` returns a Dataset of (C, H, W) float images in [0, 1]
    and integer labels in [0, num_classes) (-1 unlabelled); ``files()`` lists the files read
    (``DataNotFoundError`` when missing). Invalid option values raise ``ValueError``.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register model architectures: ``factory(num_classes, shape, **options) -> nn.Module``
    with ``forward_features(x) -> (N, D)`` and ``forward_head(f) -> (N, num_classes)``
    (a final ``nn.Linear`` named ``fc`` for detectors that use the head). Register with
    ``modalities=["text"]`` for a model of token ids (default: images only)."""


@hookspec
def register_detectors(register: Register) -> None:
    """Register OOD detectors: ``factory(**options) -> oebench.Detector``; ``score`` returns
    one finite-or-±inf float per sample, higher = more anomalous (see ``Detector.needs``)."""


@hookspec
def register_outlier_sources(register: Register) -> None:
    """Register auxiliary-outlier sources for OE: ``factory(**options) -> oebench.ImageSource``
    with a ``train`` split (labels ignored)."""


@hookspec
def register_objectives(register: Register) -> None:
    """Register training objectives: ``factory(**options) -> oebench.Objective``; the call
    ``objective(logits_in, targets, logits_out)`` returns a scalar loss tensor."""


@hookspec
def register_benchmarks(register: Register) -> None:
    """Register named benchmarks: ``register(name, path_to_toml, description=...)``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``oebench`` click group (``oebench list plugins`` shows them)."""
