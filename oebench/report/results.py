"""Stored results as DataFrames: ``load_results``, ``leaderboard`` and ``load_scores``.

>>> from oebench.report.results import leaderboard, load_results
>>> df = load_results(benchmark="quickstart", detector="*energy*")   # one row per result
>>> lb = leaderboard(benchmark="quickstart", sort="fpr95", ci=True)  # with / without OE

Filters take a value, a shell wildcard, or a list of them; a filter that matches nothing in
the store raises a ``UserError`` that names the close matches.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from oebench.bench.groups import Groups, groups_in_text, is_summary
from oebench.errors import UserError
from oebench.record.schema import COORDINATES, GROUP_COLUMNS
from oebench.record.store import ResultStore
from oebench.report.groups import with_group_means
from oebench.report.tables import SHOWN, comparison, results_frame, sort_results, split_trainings
from oebench.report.versions import with_versions
from oebench.report.wide import wide_comparison

if TYPE_CHECKING:
    import pandas as pd

    from oebench.core.progress import Progress

Filter = str | int | Iterable[str | int] | None
#: filter name -> what it is called in messages
FILTERS = {
    "benchmark": "benchmark",
    "id_dataset": "ID dataset",
    "model": "model",
    "training": "training",
    "detector": "detector",
    "seed": "seed",
}


def patterns(value: Filter) -> list[str]:
    """A filter as a list of wildcard patterns (comma-separated strings are split)."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, int)) else list(value)
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def _no_match(kind: str, pattern: str, available: list[str], where: Path) -> UserError:
    close = difflib.get_close_matches(pattern.strip("*?[]"), available, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
    return UserError(f"No {kind} {pattern!r} in the results store {where}.{hint} Stored: {shown}")


def select(df: pd.DataFrame, filters: dict[str, Filter], where: Path) -> pd.DataFrame:
    """Rows matching every filter; a pattern matching nothing stored is a ``UserError``."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise TypeError(
            f"unknown filter(s) {', '.join(sorted(unknown))}; known: {', '.join(FILTERS)}"
        )
    keep = None
    for name, value in filters.items():
        wanted = patterns(value)
        if not wanted:
            continue
        column = df[name].astype(str)
        available = sorted(set(column), key=lambda v: (len(v), v) if name == "seed" else (0, v))
        hits = column.map(lambda v, w=wanted: any(_matches(v, p) for p in w))
        if name == "benchmark" and "benchmark_name" in df.columns:  # a name or a version label
            names = df.benchmark_name.astype(str)
            hits |= names.map(lambda v, w=wanted: any(_matches(v, p) for p in w))
            available = sorted(set(available) | set(names))
        for p in wanted:
            if not any(_matches(v, p) for v in available):
                raise _no_match(FILTERS[name], p, available, where)
        keep = hits if keep is None else keep & hits
    if keep is None:
        return df
    chosen = df[keep]
    if chosen.empty:
        given = "; ".join(f"{k}={','.join(patterns(v))}" for k, v in filters.items() if v)
        raise UserError(f"No stored results match all of: {given} (each matches on its own)")
    return chosen


def _matches(value: str, pattern: str) -> bool:
    """A wildcard match, or the value itself (``quickstart[lam=1]`` is no character class)."""
    return value == pattern or fnmatch.fnmatchcase(value, pattern)


def newest(df: pd.DataFrame) -> pd.DataFrame:
    """One row per result coordinate: the most recently stored when cells overlap (the
    ``benchmark`` coordinate names the version group, ``oebench.report.versions``)."""
    return df.sort_values("stored_order", kind="mergesort").drop_duplicates(
        list(COORDINATES), keep="last"
    )


def stored_results(store: ResultStore, **filters: Filter) -> pd.DataFrame:
    """``load_results`` on an open store."""
    import pandas as pd

    rows = store.rows()
    if not rows:
        raise UserError(f"results store {store.path} holds no results yet: run `oebench run`")
    df = pd.DataFrame(rows)
    df = with_versions(df, store.configs(df.cell.unique()))  # one model per table column
    df = sort_results(newest(select(df, filters, store.path)))
    df = with_group_means(
        df, stored_groups(store, df)
    )  # near-/far-OOD means (oebench.report.groups)
    # True for `mean` and group-mean rows, so notebooks can drop them: df[~df.is_aggregate]
    df["is_aggregate"] = df.ood_dataset.map(is_summary).astype(bool)
    first = list(results_frame(df).columns)
    return df[first + [c for c in df.columns if c not in first]]


def stored_groups(store: ResultStore, df: pd.DataFrame) -> dict[str, Groups]:
    """The ``ood_groups`` of each benchmark in ``df``, read from its stored benchmark text
    (the newest version of the file when there are several)."""
    if "benchmark_digest" not in df.columns or df.empty:
        return {}
    found: dict[str, Groups] = {}
    order = "stored_order" if "stored_order" in df.columns else "cell"
    latest = df.sort_values(order, kind="mergesort").drop_duplicates("benchmark", keep="last")
    for bench, cell in zip(latest.benchmark, latest.cell, strict=True):
        record = store.cell(cell)
        if record is not None:
            found[bench] = groups_in_text(record.get("benchmark_text") or "")
    return found


def load_results(store: str | Path | None = None, **filters: Filter) -> pd.DataFrame:
    """Stored result rows (one per cell x detector x OOD set, plus ``mean`` rows) as a frame.

    ``store`` defaults to ``$OEBENCH_STORE`` or the user's data directory. Filters:
    ``benchmark``, ``id_dataset``, ``model``, ``training``, ``detector``, ``seed``. Columns:
    those of ``oebench run --csv`` plus ``cell``, timings, ``device``, versions and provenance,
    and ``is_aggregate`` (True on ``mean`` and group-mean rows: ``df[~df.is_aggregate]`` keeps
    the per-OOD-set rows only).
    """
    with ResultStore(store, create=False) as s:
        return stored_results(s, **filters)


def load_scores(store: str | Path | None = None, **filters: Filter) -> pd.DataFrame:
    """Per-sample scores of the selected cells: one row per cell x detector x sample.

    Columns as in ``oebench run --save-scores`` files: cell labels, ``detector``, ``dataset``,
    ``is_ood``, ``label`` (OOD = 1), ``sample`` and ``score``.
    """
    import pandas as pd

    from oebench.record.scores import scores_frame

    with ResultStore(store, create=False) as s:
        df = stored_results(s, **filters)
        cells = df.drop_duplicates("cell")
        arrays = s.scores(cells.cell)
    detectors = set(df.detector)
    frames = [
        scores_frame(row, [a for a in arrays[row["cell"]] if a.detector in detectors])
        for row in cells.to_dict("records")
    ]
    return pd.concat(frames, ignore_index=True)


def intervals(
    store: ResultStore,
    df: pd.DataFrame,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    progress: Callable[[int], None] | None = None,
    bars: Progress | None = None,
) -> pd.DataFrame:
    """Bootstrap intervals of AUROC and FPR95 (mean over OOD sets and seeds) per training.

    Keyed by benchmark, id_dataset, model, detector and training, like ``comparison``'s
    groups. Seeds share replicate indices: replicate b of the aggregate is the mean over seeds
    of replicate b of each seed's cell. ``progress(1)`` is called after each cell's
    replicates; ``bars`` gets two bars over every resample instead (the intervals, then the
    paired Δ intervals).
    """
    import numpy as np
    import pandas as pd

    from oebench.report.bootstrap import CI_METRICS, interval, replicates, rng_for

    means = df[df.ood_dataset == "mean"]
    arrays = store.scores(means.cell.unique())
    keys = [*GROUP_COLUMNS, "training"]
    records = []
    damaged = store.damaged(means.cell.unique())  # reported by name; those get no interval
    steps = bars.start("bootstrap intervals", resamples * len(means)) if bars is not None else None
    for values, part in means.groupby(keys, sort=False):
        if any((c, d) in damaged for c, d in zip(part.cell, part.detector, strict=True)):
            continue
        per_seed = []
        for cell, detector in zip(part.cell, part.detector, strict=True):
            found = [a for a in arrays[cell] if a.detector == detector]
            ids = [a.scores for a in found if not a.is_ood]
            if not ids:
                raise UserError(f"cell {cell} has no stored per-sample scores for {detector!r}")
            oods = [a.scores for a in found if a.is_ood]
            rng = rng_for(seed, cell, detector)
            per_seed.append(replicates(ids[0], oods, resamples, rng, progress=steps))
            if progress is not None:
                progress(1)
        reps = np.mean(per_seed, axis=0)
        record = dict(zip(keys, values, strict=True))
        for i, m in enumerate(CI_METRICS):
            record[f"{m}_ci_low"], record[f"{m}_ci_high"] = interval(reps[:, i], level)
        records.append(record)
    bounds = [f"{m}_ci_{side}" for m in CI_METRICS for side in ("low", "high")]
    bands = pd.DataFrame(records, columns=keys + bounds)
    deltas = delta_intervals(means, arrays, damaged, resamples, seed, level, bars)
    return bands.merge(deltas, on=keys, how="left") if len(deltas) else bands


def delta_intervals(
    means: pd.DataFrame,
    arrays: dict,
    damaged: set,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    bars: Progress | None = None,
) -> pd.DataFrame:
    """Paired bootstrap intervals of Δ = training − baseline (``auroc_delta_ci_low``, ...),
    on the rows of each non-baseline training: both models resampled on the same test
    samples of the same seed, replicates averaged over seeds (``bars``: a bar over them)."""
    import numpy as np
    import pandas as pd

    from oebench.report.bootstrap import CI_METRICS, interval, paired_delta_replicates, rng_for

    base, others = split_trainings(means)
    keys = list(GROUP_COLUMNS)
    records = []
    jobs = []
    for values, part in means.groupby(keys, sort=False):
        cells = {(t, s): c for t, s, c in zip(part.training, part.seed, part.cell, strict=True)}
        for oe in others:
            seeds = [s for (t, s) in cells if t == oe and (base, s) in cells]
            pairs = [(cells[(base, s)], cells[(oe, s)]) for s in seeds]
            if pairs and not any((c, values[3]) in damaged for pair in pairs for c in pair):
                jobs.append((values, oe, pairs))
    total = resamples * sum(len(pairs) for _, _, pairs in jobs)
    steps = bars.start("paired Δ intervals", total) if bars is not None and jobs else None
    for values, oe, pairs in jobs:
        reps = np.mean(
            [
                paired_delta_replicates(
                    _scores(arrays, a, values[3]),
                    _scores(arrays, b, values[3]),
                    resamples,
                    rng_for(seed, a, b, values[3]),
                    progress=steps,
                )
                for a, b in pairs
            ],
            axis=0,
        )
        record = {**dict(zip(keys, values, strict=True)), "training": oe}
        for i, m in enumerate(CI_METRICS):
            bounds = interval(reps[:, i], level)
            record[f"{m}_delta_ci_low"], record[f"{m}_delta_ci_high"] = bounds
        records.append(record)
    return pd.DataFrame(records)


def _scores(arrays: dict, cell: str, detector: str) -> tuple:
    """(ID scores, [OOD scores, ...]) of one detector in one cell, from the store's arrays."""
    found = [a for a in arrays[cell] if a.detector == detector]
    ids = [a.scores for a in found if not a.is_ood]
    if not ids:
        raise UserError(f"cell {cell} has no stored per-sample scores for {detector!r}")
    return ids[0], [a.scores for a in found if a.is_ood]


def leaderboard(
    store: str | Path | None = None,
    metrics: tuple[str, ...] = SHOWN,
    sort: str | None = None,
    ci: bool = False,
    resamples: int = 1000,
    ood: str = "mean",
    wide: bool = False,
    **filters: Filter,
) -> pd.DataFrame:
    """Without-OE | with-OE | delta per benchmark, ID dataset, model, OE training, detector.

    Means over OOD sets and seeds (``*_std``: std over seeds); ``sort`` orders detectors by a
    metric, best first; ``ci`` adds 95% bootstrap intervals for AUROC and FPR95. ``ood``
    picks a near/far group mean (``"mean:near"``) or one OOD set instead of the mean over
    all; ``wide`` gives one row per detector with every training's columns
    (``auroc[oe]``, ``auroc_delta[oe]``; see ``oebench.report.wide``).
    """
    with ResultStore(store, create=False) as s:
        df = stored_results(s, **filters)
        bands = intervals(s, df, resamples) if ci else None
    if wide:
        return wide_comparison(df, metrics, ood=ood, sort=sort or metrics[0])
    return comparison(df, metrics, ood=ood, intervals=bands, sort=sort or metrics[0])
