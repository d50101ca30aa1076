"""The public plugin API: everything a plugin imports from oebench, and nothing else.

>>> import oebench.api as oebench
>>> @oebench.hookimpl
... def register_detectors(register):
...     register("margin", Margin, description="gap between the top two logits")

Plugins (the built-in ones too) import from this module only; other modules are internal
and may change. Names backed by torch or numpy are imported when first used, so importing
this module stays as cheap as ``oebench --help``.
"""

from __future__ import annotations

import importlib
from typing import Any

from oebench.errors import DataNotFoundError, UnknownNameError, UserError
from oebench.hookspecs import hookimpl
from oebench.registry import (
    create_dataset,
    create_detector,
    create_model,
    create_objective,
    create_outlier_source,
    list_benchmarks,
    list_datasets,
    list_detectors,
    list_models,
    list_objectives,
    list_outlier_sources,
)
from oebench.settings import cache_dir, data_root, download_allowed

#: name -> the module that defines it, imported on first use
_LAZY = {
    # datasets: image sources and helpers to shape images
    "ImageSource": "oebench.data",
    "TensorImages": "oebench.data",
    "adapt_images": "oebench.data",
    "to_float": "oebench.data",
    # text datasets: token sequences (see oebench.text)
    "TextSource": "oebench.text",
    "TensorTokens": "oebench.text",
    # dataset files: find, fetch and fingerprint them
    "content_digest": "oebench.datafiles",
    "fetch": "oebench.datafiles",
    "find_dir": "oebench.datafiles",
    "present": "oebench.datafiles",
    # detectors: the contract, the network outputs they score, numerically safe helpers
    "Detector": "oebench.detectors",
    "Head": "oebench.detectors",
    "Outputs": "oebench.detectors",
    "log_softmax64": "oebench.detectors",
    "logsumexp64": "oebench.detectors",
    "msp_log_odds": "oebench.detectors",
    # models and training objectives
    "Classifier": "oebench.models",
    "Objective": "oebench.objectives",
    "cross_entropy": "oebench.objectives",
    "energy": "oebench.objectives",
    "soft_cross_entropy": "oebench.objectives",
    "uniform_cross_entropy": "oebench.objectives",
    # the OE paper's validation OOD sets (val-ood transforms)
    "VALIDATION_SETS": "oebench.sweep",
    # contract checks for a plugin's own tests (the plugin kit)
    "check_dataset": "oebench.testing",
    "check_detector": "oebench.testing",
    "check_model": "oebench.testing",
    "check_objective": "oebench.testing",
    "check_outlier_source": "oebench.testing",
}

__all__ = [
    "hookimpl",
    # errors a plugin raises: one line for the user, exit status 2
    "UserError",
    "UnknownNameError",
    "DataNotFoundError",
    # paths and switches
    "cache_dir",
    "data_root",
    "download_allowed",
    # the registry: build one component from another (a wrapper dataset, a pretrained model)
    "create_dataset",
    "create_detector",
    "create_model",
    "create_objective",
    "create_outlier_source",
    "list_benchmarks",
    "list_datasets",
    "list_detectors",
    "list_models",
    "list_objectives",
    "list_outlier_sources",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import the torch- and numpy-backed part of the API only when it is used."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oebench.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
