"""Standard vs full-spectrum OOD detection side by side (``protocol = "full-spectrum"``).

In a full-spectrum benchmark every result row carries, next to its metrics with the ID test
set as the ID side (``auroc``, ...), the same metrics with the covariate-shifted ID sets
counted as ID too (``fs_auroc``, ...; OpenOOD v1.5's FS-OOD), and the classifier's accuracy
and ECE on those shifted sets. ``spectrum_table`` puts the two side by side per detector and
training (means over seeds of the mean over OOD sets); ``oebench run`` and ``oebench
leaderboard`` print it (``oebench.report.render``) when the rows have full-spectrum numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oebench.metrics import CONVENTION, LOWER_IS_BETTER
from oebench.record.schema import LABELS

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

BOARD = ("benchmark", "id_dataset", "model")


def has_spectrum(df: pd.DataFrame) -> bool:
    """True when some row of ``df`` has full-spectrum numbers."""
    return "fs_auroc" in df and bool(df["fs_auroc"].notna().any())


def spectrum_table(df: pd.DataFrame, metric: str = "auroc", ood: str = "mean") -> pd.DataFrame:
    """One row per (benchmark, ID dataset, model, training, detector): ``metric`` on the
    ``ood`` row (``mean``, ``mean:<group>`` or one set) as standard and as full-spectrum
    (means and stds over seeds), their difference, and ID accuracy on the test set and on the
    covariate-shifted sets."""
    import pandas as pd

    rows = df[(df.ood_dataset == ood) & df[f"fs_{metric}"].notna()]
    keys = [c for c in (*BOARD, "training", "detector") if c in rows.columns]
    if rows.empty:
        return pd.DataFrame(columns=keys)
    grouped = rows.groupby(keys, sort=False)
    out = grouped.agg(
        standard=(metric, "mean"),
        standard_std=(metric, "std"),
        full_spectrum=(f"fs_{metric}", "mean"),
        full_spectrum_std=(f"fs_{metric}", "std"),
        id_accuracy=("id_accuracy", "mean"),
        csid_accuracy=("csid_accuracy", "mean"),
        csid_ece=("csid_ece", "mean"),
        seeds=("seed", "nunique"),
    ).reset_index()
    out["drop"] = out.full_spectrum - out.standard
    return out


def render_spectrum(console: Console, df: pd.DataFrame, metric: str = "auroc") -> None:
    """One table per board: detectors x trainings, standard | full-spectrum ``metric``."""
    from rich.markup import escape
    from rich.table import Table

    table = spectrum_table(df, metric)
    arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
    label = LABELS.get(metric, metric)
    for board, part in table.groupby([c for c in BOARD if c in table], sort=False):
        t = Table(
            title=escape(
                f"{' · '.join(map(str, board))} · {label}{arrow} (mean over OOD sets): "
                "standard vs full-spectrum (covariate-shifted ID counted as ID)"
            ),
            title_style="bold",
            caption_justify="left",
        )
        for name in ("training", "detector", "standard", "full-spectrum", "Δ"):
            t.add_column(name, justify="left" if name in ("training", "detector") else "right")
        for _, r in part.iterrows():
            t.add_row(escape(r.training), escape(r.detector), _cell(r.standard, r.standard_std),
                      _cell(r.full_spectrum, r.full_spectrum_std), f"{r['drop']:+.2f}")  # fmt: skip
        accuracy = part.drop_duplicates("training")
        said = ", ".join(
            f"{r.training} {r.id_accuracy:.2f}% → {r.csid_accuracy:.2f}% (ECE {r.csid_ece:.2f})"
            for _, r in accuracy.iterrows()
        )
        t.caption = escape(
            f"{int(part.seeds.max())} seed(s) (± = std over seeds). ID accuracy, test → "
            f"covariate-shifted: {said}.\n{CONVENTION}."
        )
        console.print(t)
        console.print()


def _cell(value: float, std: float) -> str:
    return f"{value:.2f}" + (f"±{std:.2f}" if std == std and std else "")
