"""A benchmark with the command line's overrides: a new value, the parsed one unchanged.

The overridden benchmark's settings are checked by the rules a file's values meet
(``oebench.bench.validation.settings_problems``), so ``--recall nan`` is refused as
``recall = nan`` in the file is."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from oebench.bench.matrix import Benchmark, Ref
from oebench.errors import UnknownNameError, UserError

#: the command-line option that sets each overridable field
OPTIONS = {"seeds": "--seed", "detectors": "--detectors", "fpr_rule": "--fpr-rule",
           "recall": "--recall"}  # fmt: skip


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
    """``bench`` with ``overrides`` applied (``bench`` itself when there are none); a value the
    file could not hold either is a UserError naming its option."""
    changes: dict[str, Any] = {}
    if overrides.seeds:
        changes["seeds"] = list(dict.fromkeys(overrides.seeds))
    if overrides.detectors is not None:
        changes["detectors"] = [Ref(n) for n in select_detectors(overrides.detectors)]
    if overrides.fpr_rule is not None:
        changes["fpr_rule"] = overrides.fpr_rule
    if overrides.recall is not None:
        changes["recall"] = overrides.recall
    if not changes and not overrides.oe_scratch:
        return bench
    new = dataclasses.replace(bench, **changes) if changes else bench
    new = new.oe_from_scratch() if overrides.oe_scratch else new
    check_overridden(new, set(changes))
    return new


def check_overridden(bench: Benchmark, changed: set[str]) -> None:
    """Check ``bench``'s settings once; a line about a changed field names its option."""
    from oebench.bench.validation import raise_problems, settings_problems

    lines = settings_problems(bench)
    own = [_option_line(line, changed) for line in lines]
    if any(line is not None for line in own):  # the command line's values, without the file
        raise_problems([line for line in own if line is not None])
    raise_problems(lines, bench.source)


def _option_line(line: str, changed: set[str]) -> str | None:
    """``recall = nan: ...`` -> ``--recall nan: ...`` for a changed field; else None."""
    for name in changed:
        if line.startswith(f"{name} = "):
            return f"{OPTIONS[name]} {line[len(name) + 3 :]}"
        if line.startswith((f"{name}[", f"'{name}'")):
            return f"{OPTIONS[name]}: {line}"
    return None


def select_detectors(patterns: str) -> list[str]:
    """Registered detector names matching comma-separated wildcards, in order."""
    from oebench.registry.lookup import list_detectors

    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    if not wanted:
        raise UserError(
            f"--detectors {patterns!r} names no detector: give comma-separated names or "
            "wildcards, e.g. --detectors 'msp,energy*'"
        )
    names: list[str] = []
    for pattern in wanted:
        found = list_detectors(pattern)
        if not found:
            raise UnknownNameError("detector", pattern, list_detectors())
        names += [n for n in found if n not in names]
    return names
