"""Post-hoc detectors on penultimate features (and GEN on logits). Float64; higher = more anomalous.

Every fit and score streams over row blocks of ``CHUNK`` rows, so that 50,000 x 512 training
features need little memory beyond the arrays themselves (benchmarks/perf/perf_detectors_memory.py).
"""

from __future__ import annotations

import oebench.api as oebench

# re-exported: model_detectors' Mahalanobis detectors import them from this module
from oebench_plugins.feature_common import _sq_distances as _sq_distances
from oebench_plugins.feature_common import _whitener as _whitener
from oebench_plugins.feature_distances import (
    KNN,
    SHE,
    Mahalanobis,
    MaxCosine,
    NNGuide,
    RelativeMahalanobis,
)
from oebench_plugins.feature_head import FDBD, ResidualNorm, ViM
from oebench_plugins.feature_logits import GEN
from oebench_plugins.feature_shaping import ASH, ASHB, ASHP, ASHS, DICE, SCALE, ReAct


@oebench.hookimpl
def register_detectors(register):
    register(
        "mahalanobis",
        Mahalanobis,
        description="min class Mahalanobis distance, tied covariance, penultimate layer, "
        "no preprocessing (Lee et al. 2018)",
    )
    register(
        "relative-mahalanobis",
        RelativeMahalanobis,
        description="relative Mahalanobis distance, min over classes (Ren et al. 2021)",
    )
    register(
        "knn",
        KNN,
        description="k-th nearest-neighbour distance, normalised features, k=50 (Sun et al. 2022)",
    )
    register("vim", ViM, description="virtual-logit matching (Wang et al. 2022)")
    register(
        "react",
        ReAct,
        description="energy of features clipped at the 90th ID percentile (Sun et al. 2021)",
    )
    register("ash", ASH, description="ASH-S@90 activation shaping + energy (Djurisic et al. 2023)")
    register("gen", GEN, description="generalized entropy, gamma=0.1, M=100 (Liu et al. 2023)")
    register("ash-p", ASHP, description="ASH-P@60 pruning + energy (Djurisic et al. 2023)")
    register(
        "ash-b", ASHB, description="ASH-B@65 binarised pruning + energy (Djurisic et al. 2023)"
    )
    register("ash-s", ASHS, description="ASH-S@90, the same as 'ash' (Djurisic et al. 2023)")
    register(
        "residual",
        ResidualNorm,
        description="feature residual norm off ViM's principal subspace (Wang et al. 2022)",
    )
    register(
        "dice",
        DICE,
        description="energy through the head sparsified at the 90th contribution percentile "
        "(Sun & Li 2022)",
    )
    register(
        "scale",
        SCALE,
        description="energy of features scaled by ASH-S's factor, p=85 (Xu et al. 2024)",
    )
    register("fdbd", FDBD, description="distance to decision boundaries (Liu & Qin 2024)")
    register(
        "nnguide",
        NNGuide,
        description="energy x nearest-neighbour guidance, k=100 (Park et al. 2023)",
    )
    register(
        "she",
        SHE,
        description="simplified Hopfield energy with class patterns (Zhang et al. 2023)",
    )
    register(
        "max-cosine",
        MaxCosine,
        description="max cosine similarity to ID class-mean features (Techapanurak et al. 2020)",
    )
