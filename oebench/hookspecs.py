"""The hooks a plugin can implement. Each component hook receives a ``register`` callback."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("oebench")
hookimpl = HookimplMarker("oebench")


@hookspec
def register_datasets(register):
    """Register ID datasets and OOD test sets: ``register(name, factory, description=...)``."""


@hookspec
def register_models(register):
    """Register model architectures: ``factory(num_classes, shape, **options) -> nn.Module``."""


@hookspec
def register_detectors(register):
    """Register OOD detectors: ``factory(**options) -> oebench.Detector``."""


@hookspec
def register_outlier_sources(register):
    """Register auxiliary-outlier sources for OE: ``factory(**options) -> oebench.ImageSource``."""


@hookspec
def register_objectives(register):
    """Register training objectives: ``factory(**options) -> oebench.Objective``."""


@hookspec
def register_benchmarks(register):
    """Register named benchmarks: ``register(name, path_to_toml, description=...)``."""


@hookspec
def register_commands(cli):
    """Add commands to the ``oebench`` click group."""
