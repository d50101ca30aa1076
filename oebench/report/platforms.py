"""Tables that mix platforms: cells whose last bits were decided by different platforms
(another CPU family, GPU model, torch version or numerics mode; see
``oebench.core.platforms``) differ by more than their seeds, so a table holding both says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

#: the cell columns that place a comparison table (its rows are detectors x trainings)
TABLE_COLUMNS = ("benchmark", "id_dataset", "model")


def platform_signature(text: Any) -> str | None:
    """The signature in a stored ``platform`` value (JSON text); None when unknown (a cell
    stored before platforms were recorded, or a value that is not one)."""
    if not isinstance(text, str):
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    sig = found.get("signature") if isinstance(found, dict) else None
    return sig if isinstance(sig, str) and sig else None


def mixed_platforms(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One warning line per table (benchmark, ID dataset, model) whose cells come from more
    than one platform signature, naming each with its number of cells; ``rows``: result rows
    with ``cell`` and ``platform`` (a cell's rows may repeat)."""
    tables: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        place = tuple(row.get(c) for c in TABLE_COLUMNS)
        tables.setdefault(place, {})[row.get("cell")] = platform_signature(row.get("platform"))
    lines = []
    for place, cells in tables.items():
        counts: dict[str, int] = {}
        for sig in cells.values():
            if sig is not None:
                counts[sig] = counts.get(sig, 0) + 1
        if len(counts) < 2:
            continue
        named = "; ".join(f"{sig} ({n} cell{'s' * (n != 1)})" for sig, n in sorted(counts.items()))
        unknown = sum(sig is None for sig in cells.values())
        more = f", and {unknown} cell(s) stored without one" if unknown else ""
        lines.append(
            f"Warning: {' · '.join(str(p) for p in place)} mixes cells from "
            f"{len(counts)} platforms: {named}{more}; their last bits differ (compare cells of "
            'one platform, or train with numerics = "portable")'
        )
    return lines


def frame_mixed_platforms(df: Any) -> list[str]:
    """``mixed_platforms`` of a results DataFrame (one without a ``platform`` column: none)."""
    if df is None or "platform" not in getattr(df, "columns", ()) or df.empty:
        return []
    columns = [c for c in (*TABLE_COLUMNS, "cell", "platform") if c in df.columns]
    return mixed_platforms(df[columns].drop_duplicates().to_dict("records"))
