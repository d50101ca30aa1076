"""Per-sample scores as tables: one long DataFrame per cell, and its Parquet file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oebench.core.files import atomic_write_file
from oebench.record.schema import SCORE_COLUMNS
from oebench.record.store import ScoreArray

if TYPE_CHECKING:
    import pandas as pd

#: the labels of the ``label`` column (OOD = 1, the positive class of every metric)
ID_LABEL, OOD_LABEL = 0, 1


def scores_frame(meta: dict[str, Any], arrays: list[ScoreArray]) -> pd.DataFrame:
    """One row per sample: cell labels, detector, dataset, is_ood, label (OOD=1), sample, score."""
    import pandas as pd

    parts = []
    for a in arrays:
        n = len(a.scores)
        parts.append(
            pd.DataFrame(
                {
                    "detector": np.full(n, a.detector, dtype=object),
                    "dataset": np.full(n, a.dataset, dtype=object),
                    "is_ood": np.full(n, a.is_ood),
                    "label": np.full(n, OOD_LABEL if a.is_ood else ID_LABEL, dtype=np.int8),
                    "sample": np.arange(n, dtype=np.int64),
                    "score": np.asarray(a.scores, dtype=np.float64),
                }
            )
        )
    columns = ["detector", "dataset", "is_ood", "label", "sample", "score"]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    for i, name in enumerate(SCORE_COLUMNS):
        df.insert(i, name, meta[name])
    return df


def score_file_name(meta: dict[str, Any]) -> str:
    """``<benchmark>_<id>_<model>_<training>_seed<N>_<cell key>.parquet``, filesystem-safe."""
    parts = [meta[c] for c in ("benchmark", "id_dataset", "model", "training")]
    stem = "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", str(p)) for p in parts)
    return f"{stem}_seed{meta['seed']}_{meta['cell']}.parquet"


def write_scores(directory: str | Path, meta: dict[str, Any], arrays: list[ScoreArray]) -> Path:
    """Write a cell's scores to ``directory`` as Parquet, atomically and never through a
    symbolic link (``atomic_write_file``); returns the path."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / score_file_name(meta)
    frame = scores_frame(meta, arrays)
    atomic_write_file(path, lambda fh: frame.to_parquet(fh, index=False))
    return path
