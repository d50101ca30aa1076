"""Detectors that run the model themselves: stochastic passes, feature maps, input gradients.

Float64 scores, higher = more anomalous. They declare ``"model"`` and get
``score_inputs(model, batches)`` with [0, 1] image batches; ``"model"`` with ``"fit"`` also gets
``fit(train, None)`` first, with the ID training outputs (``"features"`` / ``"logits"`` name
what it reads there).

Feature maps come from the documented rule in ``feature_map``: the output of the last submodule
that returns an ``(N, C, H, W)`` tensor with ``H * W > 1`` during ``forward_features``, checked
to average (over H x W) to the penultimate features. The small CNN, the Wide ResNets and the
ResNet-18 satisfy it (the map after the last ReLU); a network that pools differently gets a
one-line error from the detectors that need the map.

Detectors over several layers (``gram``, ``mahalanobis-ensemble``) use ``layer_maps``: during a
forward pass, the last ``(N, C, H, W)`` submodule output (``H * W > 1``) at each spatial size,
i.e. the output of each resolution stage (the small CNN: the three ReLUs; the Wide ResNets: the
first two groups and the final ReLU; ResNet-18: its four stages), the deepest ``layers`` (4) of
them. They also define ``fit_inputs(model, batches)``: the engine passes it the ID training
images once, and it accumulates its statistics batch by batch (never all activations).
"""

from __future__ import annotations

import oebench.api as oebench
from oebench_plugins.model_layers import Gram, MahalanobisEnsemble
from oebench_plugins.model_passes import MahalanobisPreprocessed, MCDropout, RankFeat


@oebench.hookimpl
def register_detectors(register):
    register(
        "rankfeat",
        RankFeat,
        description="energy after removing the rank-1 part of the last feature map; needs the "
        "model (Song et al. 2022)",
        modalities=["image"],  # feature maps / input gradients of images
    )
    register(
        "mc-dropout",
        MCDropout,
        description="MSP of the mean softmax over 30 dropout passes; needs a model with dropout "
        "(Gal & Ghahramani 2016)",
    )
    register(
        "mahalanobis-preproc",
        MahalanobisPreprocessed,
        description="Mahalanobis with Lee et al.'s input preprocessing, eps=0.002, penultimate "
        "layer; needs the model (Lee et al. 2018)",
        modalities=["image"],  # feature maps / input gradients of images
    )
    register(
        "gram",
        Gram,
        description="Gram-matrix deviations from ID train bounds, 4 deepest stages, p=1..10; "
        "needs the model (Sastry & Oore 2020)",
        modalities=["image"],  # feature maps / input gradients of images
    )
    register(
        "mahalanobis-ensemble",
        MahalanobisEnsemble,
        description="Mahalanobis summed over the 4 deepest stages, equal-weighted by rank, "
        "no preprocessing; needs the model (Lee et al. 2018)",
        modalities=["image"],  # feature maps / input gradients of images
    )
