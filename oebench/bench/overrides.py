"""A benchmark with the command line's overrides: a new value, the parsed one unchanged."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from oebench.bench.matrix import Benchmark, Ref
from oebench.errors import UnknownNameError


@dataclass(frozen=True)
class Overrides:
    """What ``oebench run`` may change: seeds, detectors (comma-separated wildcards), OE from
    scratch, and the FPR column's recall level and threshold rule."""

    seeds: tuple[int, ...] = ()
    detectors: str | None = None
    oe_scratch: bool = False
    fpr_rule: str | None = None
    recall: float | None = None


def overridden(bench: Benchmark, overrides: Overrides) -> Benchmark:
    """``bench`` with ``overrides`` applied (``bench`` itself when there are none)."""
    changes: dict[str, Any] = {}
    if overrides.seeds:
        changes["seeds"] = list(dict.fromkeys(overrides.seeds))
    if overrides.detectors:
        changes["detectors"] = [Ref(n) for n in select_detectors(overrides.detectors)]
    if overrides.fpr_rule:
        changes["fpr_rule"] = overrides.fpr_rule
    if overrides.recall:
        changes["recall"] = overrides.recall
    bench = dataclasses.replace(bench, **changes) if changes else bench
    return bench.oe_from_scratch() if overrides.oe_scratch else bench


def select_detectors(patterns: str) -> list[str]:
    """Registered detector names matching comma-separated wildcards, in order."""
    from oebench.registry.lookup import list_detectors

    names: list[str] = []
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        found = list_detectors(pattern)
        if not found:
            raise UnknownNameError("detector", pattern, list_detectors())
        names += [n for n in found if n not in names]
    return names
