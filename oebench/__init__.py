"""oebench: benchmark OOD detectors with and without Outlier Exposure."""

from __future__ import annotations

import importlib
from typing import Any

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

__version__ = "0.1.0"

_LAZY = {
    "ImageSource": "oebench.contracts.data",
    "TensorImages": "oebench.contracts.data",
    "Detector": "oebench.contracts.detector",
    "Outputs": "oebench.contracts.detector",
    "Head": "oebench.contracts.detector",
    "Objective": "oebench.contracts.objective",
    "Classifier": "oebench.contracts.model",
    "ood_metrics": "oebench.metrics",
    "load_benchmark": "oebench.bench.parse",
    "run": "oebench.session",
    "evaluate": "oebench.evaluation",
    "results_frame": "oebench.report.tables",
    "load_results": "oebench.report.results",
    "load_scores": "oebench.report.results",
    "leaderboard": "oebench.report.results",
    "compare": "oebench.report.against",
    "source_table": "oebench.report.sources",
    "source_leaderboard": "oebench.report.sources",
    "spectrum_table": "oebench.report.spectrum",
    "ResultStore": "oebench.record.store",
}

__all__ = [
    "hookimpl",
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
    """Import torch-heavy parts of the public API only when they are used."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'oebench' has no attribute {name!r}")
