"""Versions of a benchmark in one results store, so that a table column holds one model.

One benchmark name can hold cells of several versions: its file edited (another ``lr``,
another list of OOD sets), a value chosen by ``oebench sweep`` (stored with a ``# sweep:``
line in its text), ``--oe-scratch``. Cells whose settings contradict each other (the same
training with another λ) go to separate groups; each group's ``benchmark`` label names what
differs (``quickstart[lam=0.5]``, ``quickstart[lam=1]``) and ``benchmark_name`` keeps the
name. Cells that contradict no group's settings (a baseline both versions share, the same
settings run again with fewer detectors) belong to every group they fit; in a group they did
not come from they give the rows of the detectors that group's own cells have. Code and data
changes are not versions: the store replaces those cells (``oebench.record.changes``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: the settings of a cell, by entity ("trainings/oe", "detectors/msp", ...): path -> value
Settings = dict[str, dict[str, str]]
#: an option a cell's configuration leaves at its factory's default
DEFAULT = object()
#: where each entity's component is registered, for the default values labels show
KINDS = {"trainings": "objective", "detectors": "detector", "models": "model"}


def settings_of(config: dict[str, Any], slot: dict[str, str] | None = None) -> Settings:
    """What a stored cell's configuration says about its benchmark version: per entity it
    names (its training, ID dataset, model, each detector and OOD set, and the benchmark's
    own settings) the flat values that decide its numbers; not seeds, detector lists or
    fingerprints. ``slot``: the cell's training, ID dataset and model names, for configurations
    stored without ``names``; an empty configuration says nothing (it contradicts no cell)."""
    if not config:
        return {}
    names = {
        **(slot or {}),
        **(config.get("names") if isinstance(config.get("names"), dict) else {}),
    }
    found: Settings = {}

    def add(entity: str, value: Any) -> None:
        flat: dict[str, str] = {}
        _flatten(value, "", flat)
        found[entity] = flat

    add(f"trainings/{names.get('training', '?')}", config.get("training"))
    add(f"id_datasets/{names.get('id_dataset', '?')}", config.get("id_dataset"))
    add(f"models/{names.get('model', '?')}", config.get("model"))
    detectors = zip(names.get("detectors") or [], config.get("detectors") or [], strict=False)
    for key, value in detectors:
        add(f"detectors/{key}", value)
    oods = list(names.get("ood_datasets") or [])
    for key, value in zip(oods, config.get("ood_datasets") or [], strict=False):
        add(f"ood_datasets/{key}", value)
    own = {k: config.get(k) for k in ("protocol", "resamples")}
    add("benchmark", {**own, "fpr": config.get("fpr", [0.95, "nearest"]), "ood_sets": oods})
    return found


def _flatten(value: Any, path: str, out: dict[str, str]) -> None:
    """Leaves of nested tables as ``path -> JSON``; an empty table has none (an option left
    out and an empty ``options`` both mean the defaults)."""
    if isinstance(value, dict):
        for k in sorted(value, key=str):
            _flatten(value[k], f"{path}/{k}" if path else str(k), out)
    else:
        out[path] = json.dumps(value, sort_keys=True, separators=(",", ":"))


def contradicts(a: Settings, b: Settings) -> bool:
    """Whether two cells (or groups) say different things about an entity both name."""
    return any(a[e] != b[e] for e in a.keys() & b.keys())


def grouped(cells: list[tuple[str, Settings]]) -> list[tuple[Settings, list[str], list[str]]]:
    """Cells (in storage order) as groups: (settings, own cells, every member cell). A cell
    joins the first group it does not contradict, else starts one; then every cell is a
    member of each group it does not contradict."""
    groups: list[tuple[Settings, list[str], list[str]]] = []
    for key, found in cells:
        for merged, own, _ in groups:
            if not contradicts(merged, found):
                merged.update(found)
                own.append(key)
                break
        else:
            groups.append((dict(found), [key], []))
    for key, found in cells:
        for merged, _, members in groups:
            if not contradicts(merged, found):
                members.append(key)
    return groups


def labels(groups: list[Settings], default: Callable[[str, str], Any] | None = None) -> list[str]:
    """A short name per group: what differs (``lam=1``, ``lr=0.01,epochs=2``), ``v1``, ...
    where nothing readable does. ``default(entity, path)`` gives an option's default value
    (what a group that leaves it out runs with), or DEFAULT when unknown."""
    entities = list(dict.fromkeys(e for g in groups for e in g))
    differing = []
    for e in entities:
        having = [g[e] for g in groups if e in g]
        paths = list(dict.fromkeys(p for s in having for p in s))
        differing += [(e, p) for p in paths if len({s.get(p) for s in having}) > 1]
    plain = [(e, p) for e, p in differing if "init/" not in p]  # an init chain repeats its own
    differing = plain or differing
    leaves = [p.rsplit("/", 1)[-1] for _, p in differing]
    out = []
    for i, g in enumerate(groups):
        parts = []
        for (e, p), leaf in zip(differing, leaves, strict=True):
            if e not in g:
                continue
            name = leaf if leaves.count(leaf) == 1 else f"{e.split('/', 1)[-1]}.{leaf}"
            if name == "ood_sets" and p in g[e]:
                name, text = "ood_sets", str(len(json.loads(g[e][p])))
            elif p in g[e]:
                text = _text(json.loads(g[e][p]))
            else:
                found = default(e, p) if default else DEFAULT
                text = "default" if found is DEFAULT else _text(found)
            parts.append(f"{name}={text}")
        label = ",".join(parts[:3]) + (",..." if len(parts) > 3 else "")
        out.append(label or f"v{i + 1}")
    return [lab if out.count(lab) == 1 else f"{lab}#{i + 1}" for i, lab in enumerate(out)]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)):
        text = f"{value:g}" if isinstance(value, float) else str(value)
    else:
        text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 24 else text[:23] + "…"


def registered_default(groups: list[Settings]) -> Callable[[str, str], Any]:
    """``default(entity, path)`` for ``labels``: an option's default from the factory of the
    component the groups name there (``trainings/oe`` + ``objective/options/lam`` -> 0.5)."""

    def default(entity: str, path: str) -> Any:
        part, _, option = path.rpartition("/options/")
        kind = KINDS.get(entity.split("/", 1)[0])
        if not option or "/" in option or kind is None:
            return DEFAULT
        where = f"{part}/name" if part else "name"
        if entity.startswith("trainings/") and part not in ("objective",):
            return DEFAULT  # outliers and init chains: not worth the look-up
        names = {json.loads(g[entity][where]) for g in groups if where in g.get(entity, {})}
        if len(names) != 1:
            return DEFAULT
        try:
            from oebench.registry.describe import options_of
            from oebench.registry.lookup import get_component

            comp = get_component(kind, names.pop())
            for o in options_of(comp.factory, ("num_classes", "shape")):
                if o.name == option and not o.required:
                    return o.default
        except Exception:  # an unregistered or broken component: no default to show
            return DEFAULT
        return DEFAULT

    return default


def with_versions(df: pd.DataFrame, configs: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """``df`` (result rows with ``cell`` and ``stored_order``) with ``benchmark_name`` added
    and ``benchmark`` relabelled per group where a benchmark's cells contradict each other;
    a cell that fits several groups has its rows once per group. ``configs``: cell ->
    stored configuration."""
    import pandas as pd

    df = df.assign(benchmark_name=df.benchmark)
    parts = []
    for bench, rows in df.groupby("benchmark", sort=False):
        order = rows.drop_duplicates("cell").sort_values("stored_order", kind="mergesort")
        slots = order[["cell", "training", "id_dataset", "model"]].to_dict("records")
        cells = [(r["cell"], settings_of(configs.get(r["cell"]) or {}, r)) for r in slots]
        groups = grouped(cells)
        if len(groups) < 2:
            parts.append(rows)
            continue
        names = labels([g for g, _, _ in groups], registered_default([g for g, _, _ in groups]))
        for (_, own, members), name in zip(groups, names, strict=True):
            mine = rows[rows.cell.isin(own)]
            shared = rows[rows.cell.isin(set(members) - set(own))]
            shared = shared[shared.detector.isin(set(mine.detector))]
            parts.append(pd.concat([mine, shared]).assign(benchmark=f"{bench}[{name}]"))
    return pd.concat(parts, ignore_index=True) if parts else df


def version_names(df: pd.DataFrame) -> dict[str, list[str]]:
    """Benchmark name -> the group labels its rows show (only names shown as 2+ groups)."""
    if "benchmark_name" not in df.columns:
        return {}
    found = df.groupby("benchmark_name", sort=False).benchmark.unique()
    return {str(k): sorted(map(str, v)) for k, v in found.items() if len(v) > 1}
