"""Measured results against published numbers: ``--against paper`` and ``--against FILE``.

The published side is a benchmark's ``[published]`` table (``oebench.bench.matrix.Published``)
or a CSV with the columns of oebench's long CSV: key columns (``training``, ``detector``,
``ood_dataset`` needed; ``benchmark``, ``id_dataset``, ``model`` optional) and any of the metric
columns and ``id_accuracy``; ``<metric>_spread`` columns give a published number's spread (std
over its runs). A key column that is absent or empty matches any value; only the metrics a
published row gives are compared. Rows of one key given several times (e.g. oebench's own CSV
with several seeds) are averaged, their std over those rows being the spread.

The tolerance of each comparison (``tolerance``):

    tolerance = max(floor, 2 * sqrt(s_seeds**2 + s_published**2))

``s_seeds`` is the sample std (n - 1) of the measured value over seeds (none with one seed),
``s_published`` the published spread (none when not given); the floor is ``FLOOR`` points for
means over OOD sets (``mean`` and group means) and ``SET_FLOOR`` points per OOD set. With one
seed and no published spread the tolerance is the floor. A number is outside when
``|measured - published| > tolerance``; ``verdict`` then says whether it is better or worse.
``id_accuracy`` (the same on every row of a cell) is compared on ``mean`` rows only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oebench.bench.groups import is_summary
from oebench.errors import UserError
from oebench.metrics import LOWER_IS_BETTER, METRICS
from oebench.record.schema import LABELS

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from oebench.bench.matrix import Benchmark

#: points: the least tolerance of a mean over OOD sets, and of one OOD set (a stated choice:
#: a second quickstart seed moves MSP's mean AUROC by 2.7 points, precision moved logit
#: detectors' means by up to 2.7 / 7.3; single OOD sets move far more, e.g. CIFAR-100 Gaussian
#: FPR95, retrained models vs the released checkpoints: 12.1 vs 2.7)
FLOOR = 2.0
SET_FLOOR = 5.0
#: what a published row may give numbers for
VALUES = (*METRICS, "id_accuracy")
#: where a result sits, in the order a row is matched (an empty published value: any)
KEYS = ("benchmark", "id_dataset", "model", "training", "detector", "ood_dataset")
REQUIRED = ("training", "detector", "ood_dataset")
#: what each key is called in messages
NAMES = {"benchmark": "benchmark", "id_dataset": "ID dataset", "model": "model",
         "training": "training", "detector": "detector", "ood_dataset": "OOD set"}  # fmt: skip
#: the columns of a comparison, in order
COLUMNS = [*KEYS, "metric", "measured", "measured_std", "seeds", "published",
           "published_spread", "difference", "tolerance", "tolerance_from", "outside",
           "verdict", "note", "source", "runs"]  # fmt: skip


def published_frame(bench: Benchmark) -> pd.DataFrame:
    """A benchmark's ``[published]`` rows as a published table (empty: none)."""
    import pandas as pd

    table = bench.published
    records = []
    for row in table.rows if table is not None else ():
        record: dict[str, Any] = {
            "benchmark": bench.name,
            "id_dataset": row.id_dataset,
            "model": row.model,
            "training": row.training,
            "detector": row.detector,
            "ood_dataset": row.ood_dataset,
            "source": table.source,
            "runs": table.runs,
        }
        for metric, value in row.values:
            record[metric] = value
            record[f"{metric}_spread"] = row.spread
        records.append(record)
    return pd.DataFrame(records)


def read_published(path: str | Path) -> pd.DataFrame:
    """A CSV of published numbers (see the module's docstring); a file that is not one is a
    one-line UserError."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"--against {path}: no such file; give 'paper' (the benchmark's [published] "
            "table) or a CSV of published numbers"
        )
    try:
        df = pd.read_csv(path, dtype={k: str for k in KEYS}, keep_default_na=False,
                         na_values={v: [""] for v in VALUES})  # fmt: skip
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' parser errors included
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--against {path}: not a readable CSV file: {reason}") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(
            f"--against {path}: needs the column(s) {', '.join(missing)} (the long CSV's: "
            f"{', '.join(KEYS)}, and metric columns); it has {', '.join(map(str, df.columns))}"
        )
    given = [m for m in VALUES if m in df.columns]
    if not given:
        raise UserError(
            f"--against {path}: no metric column; give one or more of {', '.join(VALUES)}"
        )
    for column in given + [f"{m}_spread" for m in given if f"{m}_spread" in df.columns]:
        values = pd.to_numeric(df[column], errors="coerce")
        bad = df[column][values.isna() & df[column].notna()]
        if len(bad):
            line = int(bad.index[0]) + 2  # the header is line 1
            raise UserError(
                f"--against {path}: line {line}: {column} = {bad.iloc[0]!r} is not a number"
            )
        df[column] = values.astype(float)
    df["source"] = str(path)
    return df


def paper_numbers(benches: Iterable[Benchmark]) -> pd.DataFrame:
    """The ``[published]`` tables of ``benches``; a UserError when none has one."""
    import pandas as pd

    benches = list(benches)
    frames = [published_frame(b) for b in benches if b.published is not None]
    if not frames:
        names = ", ".join(sorted({b.name for b in benches}))
        raise UserError(
            f"--against paper: benchmark {names} has no [published] table; give --against "
            "FILE (a CSV of published numbers), or add the table (see CONTRIBUTING.md)"
        )
    return pd.concat(frames, ignore_index=True)


def published_table(against: str | Path | pd.DataFrame, benches: Iterable[Benchmark]) -> Any:
    """What ``--against`` names: ``"paper"`` (``benches``' tables), a CSV path or a frame."""
    import pandas as pd

    if isinstance(against, pd.DataFrame):
        return against
    if str(against) == "paper":
        return paper_numbers(benches)
    return read_published(against)


def stored_benchmarks(store: Any, df: pd.DataFrame) -> list[Benchmark]:
    """The benchmarks of stored results ``df``: each from its file as it is now (published
    numbers edited since the run count), else from the text stored with its newest cell."""
    from oebench.bench.matrix import Benchmark
    from oebench.bench.parse import load_benchmark, parse_benchmark

    found = []
    latest = df.sort_values("stored_order", kind="mergesort").drop_duplicates(
        "benchmark", keep="last"
    )
    for name, cell in zip(latest.benchmark, latest.cell, strict=True):
        record = store.cell(cell) or {}
        path = Path(str(record.get("benchmark_path") or ""))
        if path.suffix == ".toml" and path.is_file():
            found.append(load_benchmark(str(path)))  # a mistake in the file is the user's
            continue
        try:
            found.append(parse_benchmark(record.get("benchmark_text") or "", str(name)))
        except UserError:  # a text older versions of oebench stored: no published numbers
            found.append(Benchmark(name=str(name), id_datasets=[], models=[], trainings=[],
                                   detectors=[], ood_datasets=[]))  # fmt: skip
    return found


def compare(
    df: pd.DataFrame,
    against: str | Path | pd.DataFrame = "paper",
    *,
    benchmark: Benchmark | str | None = None,
    floor: float = FLOOR,
    set_floor: float = SET_FLOOR,
) -> pd.DataFrame:
    """Measured result rows ``df`` (from ``oebench.run`` or ``oebench.load_results``) against
    published numbers: one row per published number matched, with the difference, the
    tolerance (see the module's docstring) and whether it falls outside.

    ``against``: ``"paper"`` (the ``[published]`` table of ``benchmark``, by default of each
    benchmark named in ``df``, loaded by name), a CSV path or a frame of published rows.
    ``attrs["unmatched"]``: published rows with no measured result (and why);
    ``attrs["unpublished"]``: measured rows that no published row names.
    """
    benches: list[Any] = []
    if isinstance(against, str) and against == "paper":
        from oebench.bench.matrix import Benchmark as BenchmarkValue
        from oebench.bench.parse import load_benchmark

        if benchmark is None:
            benches = [load_benchmark(str(n)) for n in dict.fromkeys(df.benchmark)]
        elif isinstance(benchmark, BenchmarkValue):
            benches = [benchmark]
        else:
            benches = [load_benchmark(benchmark)]
    return comparison(df, published_table(against, benches), floor, set_floor)


def measured_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Result rows per key: mean over seeds, sample std over seeds, seed count."""
    keys = [k for k in KEYS if k in df.columns]
    values = [m for m in VALUES if m in df.columns]
    grouped = df.groupby(keys, sort=False, dropna=False)
    out = grouped[values].mean()
    std = grouped[values].std(ddof=1).add_suffix("_std")
    seeds = grouped["seed"].nunique() if "seed" in df.columns else grouped.size()
    out = out.join(std).assign(seeds=seeds)
    for extra in ("recall", "fpr_rule"):
        if extra in df.columns:
            out[extra] = grouped[extra].first()
    return out.reset_index()


def _published_rows(published: pd.DataFrame) -> pd.DataFrame:
    """Published rows, one per key: several for one key are averaged (their std the spread)."""
    df = published.copy()
    keys = [k for k in KEYS if k in df.columns]
    for key in keys:
        df[key] = df[key].fillna("").astype(str)
    values = [m for m in VALUES if m in df.columns]
    if not df.duplicated(keys).any():
        return df
    grouped = df.groupby(keys, sort=False)
    out = grouped[values].mean()
    for m in values:
        spread = f"{m}_spread"
        given = grouped[spread].mean() if spread in df.columns else None
        repeated = grouped[m].std(ddof=1)
        out[spread] = given.fillna(repeated) if given is not None else repeated
    rest = [c for c in df.columns if c not in keys and c not in out.columns]
    return out.join(grouped[rest].first()).reset_index()


def comparison(
    df: pd.DataFrame, published: pd.DataFrame, floor: float = FLOOR, set_floor: float = SET_FLOOR
) -> pd.DataFrame:
    """``compare`` on a published table already read."""
    import pandas as pd

    measured = measured_frame(df)
    pub = _published_rows(published)
    keys = [k for k in KEYS if k in pub.columns and k in measured.columns]
    records, unmatched = [], []
    used = pd.Series(False, index=measured.index)
    for _, p in pub.iterrows():
        hits = measured
        reason = ""
        for key in keys:
            if p[key]:
                narrower = hits[hits[key].astype(str) == p[key]]
                if narrower.empty and not reason:
                    reason = f"no measured {NAMES[key]} {p[key]!r}"
                hits = narrower
        given = [m for m in VALUES if m in pub.columns and _number(p[m])]
        found = [m for m in given if m in hits.columns and hits[m].notna().any()]
        if hits.empty or not found:
            reason = reason or f"no measured {', '.join(given)}"
            unmatched.append({**{k: p[k] for k in keys}, "metrics": ", ".join(given),
                              "reason": reason})  # fmt: skip
            continue
        used[hits.index] = True
        for _, m in hits.iterrows():
            for metric in found:
                # the ID accuracy is the cell's, the same on every row: compared on `mean`
                cell_wide = metric == "id_accuracy" and m["ood_dataset"] != "mean"
                if _number(m[metric]) and not cell_wide:
                    records.append(_record(m, p, metric, floor, set_floor))
    table = pd.DataFrame(records, columns=COLUMNS)
    table.attrs["unmatched"] = pd.DataFrame(
        unmatched, columns=[*keys, "metrics", "reason"]
    ).to_dict("records")
    table.attrs["unpublished"] = measured.loc[~used, [k for k in KEYS if k in measured]].to_dict(
        "records"
    )
    table.attrs["floors"] = (floor, set_floor)
    return table


def _number(value: Any) -> bool:
    """A real number, not NaN (numpy's too; not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def _record(m: Any, p: Any, metric: str, floor: float, set_floor: float) -> dict[str, Any]:
    """One measured number against one published number."""
    measured, published = float(m[metric]), float(p[metric])
    s_m = m.get(f"{metric}_std")
    s_p = p.get(f"{metric}_spread")
    parts = [float(s) for s in (s_m, s_p) if _number(s)]
    least = floor if is_summary(str(m["ood_dataset"])) else set_floor
    spread = 2.0 * math.sqrt(sum(s * s for s in parts)) if parts else float("nan")
    tolerance = spread if spread > least else least
    difference = measured - published
    outside = abs(difference) > tolerance + 1e-9
    better = difference < 0 if metric in LOWER_IS_BETTER else difference > 0
    runs = p.get("runs")
    return {
        **{k: m.get(k, "") for k in KEYS},
        "metric": metric,
        "measured": measured,
        "measured_std": float(s_m) if _number(s_m) else float("nan"),
        "seeds": int(m["seeds"]),
        "published": published,
        "published_spread": float(s_p) if _number(s_p) else float("nan"),
        "difference": difference,
        "tolerance": tolerance,
        "tolerance_from": "spread" if spread > least else "floor",
        "outside": bool(outside),
        "verdict": ("better" if better else "worse") if outside else "ok",
        "note": _convention_note(m, p, metric),
        "source": str(p.get("source", "")),
        "runs": int(runs) if _number(runs) else None,
    }


def _convention_note(m: Any, p: Any, metric: str) -> str:
    """Where the published FPR was taken at another recall level or rule than the measured."""
    if metric != "fpr95":
        return ""
    said = []
    for name in ("recall", "fpr_rule"):
        ours, theirs = m.get(name), p.get(name)
        if theirs is None or theirs != theirs or ours is None or ours != ours:
            continue  # not given on one side
        same = float(ours) == float(theirs) if _number(ours) and _number(theirs) else None
        if not same and str(ours) != str(theirs):
            said.append(f"{name} {theirs} published, {ours} measured")
    return "; ".join(said)


def outside_count(table: pd.DataFrame) -> int:
    """How many compared numbers fall outside their tolerance."""
    return int(table.outside.sum()) if len(table) else 0


# -- the terminal report ------------------------------------------------------------------------
def render_against(console: Console, table: pd.DataFrame) -> None:
    """Measured vs published, one table per benchmark x ID dataset x model x training, then
    the count outside and every unmatched row."""
    from rich import box
    from rich.table import Table

    from oebench.report.text import delta_text

    floor, set_floor = table.attrs.get("floors", (FLOOR, SET_FLOOR))
    if table.empty:
        console.print("No measured result matches a published number.")
    places = ["benchmark", "id_dataset", "model", "training"]
    for (bench, id_ds, model, training), part in table.groupby(places, sort=False):
        t = Table(
            title=f"{bench} · {id_ds} · {model} · {training}: measured vs published",
            title_style="bold",
            caption_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for name in ("detector", "OOD set", "metric"):
            t.add_column(name, no_wrap=True)
        for name in ("measured", "published", "Δ", "tol."):
            t.add_column(name, justify="right", no_wrap=True)
        t.add_column("", no_wrap=True)
        for r in part.itertuples(index=False):
            arrow = "↓" if r.metric in LOWER_IS_BETTER else "↑"
            colour = "green" if r.verdict == "better" else "red"
            flag = f"[{colour}]OUT ({r.verdict})[/]" if r.outside else "ok"
            t.add_row(
                r.detector,
                r.ood_dataset,
                METRIC_LABELS.get(r.metric, r.metric) + arrow,
                _value(r.measured, r.measured_std),
                _value(r.published, r.published_spread),
                delta_text(r.metric, r.difference),
                f"{r.tolerance:.2f}" + ("*" if r.tolerance_from == "spread" else ""),
                flag + (f" [dim]{r.note}[/]" if r.note else ""),
            )
        sources = "; ".join(
            f"{s}" + (f" ({int(n)} runs)" if n == n and n is not None else "")
            for s, n in dict.fromkeys(zip(part.source, part.runs, strict=True))
        )
        seeds = sorted(set(part.seeds))
        measured = (
            "1 seed" if seeds == [1] else f"mean ± std over {'/'.join(map(str, seeds))} seeds"
        )
        t.caption = f"Published: {sources}.\nMeasured: {measured}; Δ = measured − published."
        console.print(t)
        console.print()
    if not table.empty:
        console.print(f"OUT: |Δ| > tol.; {tolerance_rule(floor, set_floor)}")
    _render_summary(console, table)


#: how a compared column is titled
METRIC_LABELS = {**LABELS, "id_accuracy": "ID acc."}


def tolerance_rule(floor: float = FLOOR, set_floor: float = SET_FLOOR) -> str:
    """The tolerance rule, in one sentence."""
    return (
        "tol. = max(floor, 2·√(s_seeds² + s_published²)), s = sample std over seeds / the "
        f"published spread; floor {floor:g} points for means, {set_floor:g} per OOD set "
        "(* = wider than the floor; one seed and no published spread: the floor)."
    )


def _value(value: float, std: float) -> str:
    return f"{value:.2f}" + (f"±{std:.2f}" if std == std else "")


def _render_summary(console: Console, table: pd.DataFrame) -> None:
    outside = outside_count(table)
    console.print(
        f"{outside} of {len(table)} compared numbers fall outside their tolerance."
        if len(table)
        else ""
    )
    unmatched = table.attrs.get("unmatched", [])
    if unmatched:
        console.print(f"Published, not measured ({len(unmatched)}, not compared):")
        for u in unmatched:
            place = " / ".join(str(u[k]) for k in KEYS if u.get(k))
            console.print(f"  {place} ({u['metrics']}): {u['reason']}")
    unpublished = table.attrs.get("unpublished", [])
    if unpublished:
        console.print(f"Measured, not in the published table ({len(unpublished)} rows, not "
                      f"compared): {unpublished_summary(unpublished)}")  # fmt: skip


def unpublished_summary(rows: list[dict[str, Any]]) -> str:
    """Measured rows without a published number, in short: per detector, its OOD rows (or
    their count when there are many)."""
    by_detector: dict[str, list[str]] = {}
    for r in rows:
        sets = by_detector.setdefault(str(r.get("detector", "")), [])
        if str(r.get("ood_dataset")) not in sets:
            sets.append(str(r.get("ood_dataset")))
    return "; ".join(
        f"{d} ({', '.join(sets) if len(sets) <= 4 else f'{len(sets)} OOD rows'})"
        for d, sets in by_detector.items()
    )
