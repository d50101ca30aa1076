"""Near-OOD / far-OOD groups of a benchmark's OOD sets (OpenOOD v1.5's convention).

A benchmark declares groups of its OOD sets::

    ood_groups = {near = ["cifar100", "tin"], far = ["mnist", "svhn", "textures", "places365"]}

Result tables then gain one mean row per group, whose ``ood_dataset`` is ``mean:<group>``
(``oebench.report.groups`` derives them from the stored per-set rows, so adding groups to a
benchmark never needs a rerun).
"""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: ``ood_dataset`` of a group-mean row is this prefix plus the group's name
PREFIX = "mean:"
Groups = dict[str, list[str]]


def group_problems(value: Any, ood_keys: list[str]) -> list[str]:
    """One line per problem with an ``ood_groups`` table, given the benchmark's OOD set keys."""
    if value is None:
        return []
    if not isinstance(value, dict) or not value:
        return ["ood_groups must be a table such as {near = [...], far = [...]}"]
    lines = []
    for name, members in value.items():
        if not isinstance(members, list) or not members:
            lines.append(f"ood_groups.{name} must be a non-empty list of OOD set names")
            continue
        unknown = [m for m in members if m not in ood_keys]
        if unknown:
            lines.append(
                f"ood_groups.{name} names {', '.join(map(repr, unknown))}, not in ood_datasets "
                f"({', '.join(ood_keys)})"
            )
    return lines


def group_label(name: str) -> str:
    """The ``ood_dataset`` value of group ``name``'s mean rows."""
    return PREFIX + name


def is_summary(ood_dataset: str) -> bool:
    """True for the ``mean`` row and group-mean rows (not a real OOD set)."""
    return ood_dataset == "mean" or ood_dataset.startswith(PREFIX)


def groups_in_text(text: str) -> Groups:
    """The valid ``ood_groups`` of a benchmark document ({} when none or unreadable)."""
    try:
        value = tomllib.loads(text).get("ood_groups")
    except tomllib.TOMLDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(m) for m in v] for k, v in value.items() if isinstance(v, list) and v}
