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

from oebench.core.settings import cache_dir, data_root, download_allowed
from oebench.errors import DataNotFoundError, UnknownNameError, UserError
from oebench.hookspecs import hookimpl
from oebench.registry.lookup import (
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

#: name -> the module that defines it, imported on first use
_LAZY = {
    # datasets: image sources and helpers to shape images
    "ImageSource": "oebench.contracts.data",
    "TensorImages": "oebench.contracts.data",
    "adapt_images": "oebench.contracts.data",
    "to_float": "oebench.contracts.data",
    # text datasets: token sequences (see oebench.contracts.text)
    "TextSource": "oebench.contracts.text",
    "TensorTokens": "oebench.contracts.text",
    # dataset files: find, fetch and fingerprint them
    "content_digest": "oebench.core.datafiles",
    "fetch": "oebench.core.datafiles",
    "find_dir": "oebench.core.datafiles",
    "present": "oebench.core.datafiles",
    # generated data (fractals, corruptions): an array cached in a file, checked when read
    "cached_array": "oebench.core.files",
    # detectors: the contract, the network outputs they score, numerically safe helpers
    "Detector": "oebench.contracts.detector",
    "Head": "oebench.contracts.detector",
    "Outputs": "oebench.contracts.detector",
    "log_softmax64": "oebench.contracts.detector",
    "logsumexp64": "oebench.contracts.detector",
    "msp_log_odds": "oebench.contracts.detector",
    # outputs that may be memory-mapped files: read them in row blocks
    "row_blocks": "oebench.contracts.arrays",
    "is_mapped": "oebench.contracts.arrays",
    "release_pages": "oebench.contracts.arrays",
    # models and training objectives
    "Classifier": "oebench.contracts.model",
    "Objective": "oebench.contracts.objective",
    "TrainStep": "oebench.contracts.objective",
    "cross_entropy": "oebench.contracts.objective",
    "energy": "oebench.contracts.objective",
    "soft_cross_entropy": "oebench.contracts.objective",
    "uniform_cross_entropy": "oebench.contracts.objective",
    # the OE paper's validation OOD sets (val-ood transforms)
    "VALIDATION_SETS": "oebench.bench.sweep",
    # progress: a bar for a long loop of a plugin's own (shown while a benchmark runs)
    "track": "oebench.core.progress",
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
