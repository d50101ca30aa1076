"""Which data a benchmark's models and detectors take: its modalities, checked against the
registry (a model must accept its ID datasets' modality; a detector may declare its own)."""

from __future__ import annotations

from typing import Any

from oebench.contracts.data import accepted, modality_of
from oebench.errors import UserError
from oebench.registry.lookup import create_dataset, create_outlier_source, get_component
from oebench.registry.plugins import get_plugin_manager


def check_modalities(bench: Any) -> None:
    """One-line ``UserError`` when a benchmark pairs data and models of different modalities.

    Every model must accept each ID dataset's modality, and every OOD set and outlier source
    must have the modality of the ID datasets. Components that cannot be built are left to
    the other checks.
    """

    def kind_of(make: Any, ref: Any) -> str | None:
        try:
            return modality_of(make(ref.name, **ref.kwargs))
        except Exception:  # unknown names and bad options are reported by check_benchmark
            return None

    ids = [(ref, kind_of(create_dataset, ref)) for ref in bench.id_datasets]
    for id_ref, modality in ids:
        if modality is None:
            continue
        for ref in bench.models:
            try:
                takes = accepted(get_component("model", ref.name))
            except Exception:
                continue
            if modality not in takes:
                fits = _models_for(modality)
                raise UserError(
                    f"model {ref.key!r} accepts {' and '.join(takes)} data, but ID dataset "
                    f"{id_ref.key!r} is {modality}"
                    + (f"; models for {modality}: {', '.join(fits)}" if fits else "")
                )
        others = [("OOD dataset", create_dataset, r) for r in bench.ood_datasets]
        others += [("outlier source", create_outlier_source, t.outliers)
                   for t in bench.trainings if t.outliers is not None]  # fmt: skip
        for what, make, ref in others:
            theirs = kind_of(make, ref)
            if theirs is not None and theirs != modality:
                raise UserError(
                    f"{what} {ref.key!r} is {theirs} data, but ID dataset {id_ref.key!r} is "
                    f"{modality}: a benchmark's sets must all be of one modality"
                )


def _models_for(modality: str) -> list[str]:
    """Registered models that accept ``modality``."""
    comps = get_plugin_manager().components("model")
    return sorted(name for name, comp in comps.items() if modality in (accepted(comp) or ()))


def skipped_detectors(bench: Any, modality: str) -> list[str]:
    """Keys of the benchmark's detectors that declare modalities other than ``modality``."""
    found = []
    for ref in bench.detectors:
        takes = accepted(get_component("detector", ref.name), default=None)
        if takes is not None and modality not in takes:
            found.append(ref.key)
    return found
