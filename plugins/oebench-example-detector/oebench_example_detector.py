"""An example third-party plugin for oebench: one detector, registered through the same hook
as the built-in ones. Copy this folder to start your own plugin."""

import numpy as np

import oebench.api as oebench


class LogitMargin(oebench.Detector):
    """Negative gap between the two largest logits: a small gap means an uncertain input."""

    needs = frozenset({"logits"})

    def score(self, outputs):
        top2 = np.sort(np.asarray(outputs.logits, dtype=np.float64), axis=1)[:, -2:]
        return -(top2[:, 1] - top2[:, 0])


@oebench.hookimpl
def register_detectors(register):
    register("logit-margin", LogitMargin, description="gap between the top two logits")
