"""timm-style lookup: ``list_detectors("*energy*")``, ``create_detector(name, **kw)``."""

from __future__ import annotations

import fnmatch
from typing import Any

from oebench.errors import UnknownNameError, UserError
from oebench.registry.options import option_problems
from oebench.registry.plugins import KINDS, Component, get_plugin_manager


def list_components(kind: str, pattern: str = "*") -> list[str]:
    """Sorted names of one kind of component matching a shell-style wildcard."""
    names = get_plugin_manager().components(_kind(kind))
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def get_component(kind: str, name: str) -> Component:
    """The component registered under ``name``, or an error suggesting close names."""
    comps = get_plugin_manager().components(_kind(kind))
    if name not in comps:
        raise UnknownNameError(kind, name, comps)
    return comps[name]


def create(kind: str, name: str, **options: Any) -> Any:
    """Build a component from its factory, checking option names first."""
    comp = get_component(kind, name)
    check_options(comp, options)
    try:
        return comp.factory(**options)
    except ValueError as exc:  # an option value the component rejects
        raise UserError(f"{kind} {name!r}: {exc}") from None


def check_options(comp: Component, options: dict[str, Any], *positional: str) -> None:
    """Raise a one-line UserError when an option name does not fit the component's factory."""
    lines = option_problems(comp, options, f"{comp.kind} {comp.name!r}", *positional, types=False)
    if lines:
        raise UserError(lines[0])


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def list_datasets(pattern: str = "*") -> list[str]:
    return list_components("dataset", pattern)


def create_dataset(name: str, **options: Any) -> Any:
    return create("dataset", name, **options)


def list_models(pattern: str = "*") -> list[str]:
    return list_components("model", pattern)


def create_model(name: str, num_classes: int, shape: tuple[int, int, int], **options: Any) -> Any:
    """Build an ``nn.Module`` classifier for ``num_classes`` classes and CHW input ``shape``."""
    comp = get_component("model", name)
    check_options(comp, options, "num_classes", "shape")
    return comp.factory(num_classes, shape, **options)


def list_detectors(pattern: str = "*") -> list[str]:
    return list_components("detector", pattern)


def create_detector(name: str, **options: Any) -> Any:
    return create("detector", name, **options)


def list_outlier_sources(pattern: str = "*") -> list[str]:
    return list_components("outlier source", pattern)


def create_outlier_source(name: str, **options: Any) -> Any:
    return create("outlier source", name, **options)


def list_objectives(pattern: str = "*") -> list[str]:
    return list_components("objective", pattern)


def create_objective(name: str, **options: Any) -> Any:
    return create("objective", name, **options)


def list_benchmarks(pattern: str = "*") -> list[str]:
    return list_components("benchmark", pattern)
