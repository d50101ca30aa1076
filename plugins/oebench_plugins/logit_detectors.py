"""Post-hoc detectors on logits. Scores are float64; higher = more anomalous."""

from __future__ import annotations

import numpy as np

import oebench
from oebench.detectors import Detector, log_softmax64, logsumexp64, msp_log_odds


class MSP(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

    Score: ``log((1 - MSP) / MSP)``, a monotone transform of ``-MSP`` that stays exact in
    float64 where float32 softmax rounds to exactly 1.0 and ties would distort AUROC.
    """

    def score(self, outputs):
        return msp_log_odds(outputs.logits)


class MaxLogit(Detector):
    """Negative maximum logit (Hendrycks et al., ICML 2022)."""

    def score(self, outputs):
        return -np.asarray(outputs.logits, dtype=np.float64).max(axis=1)


class Energy(Detector):
    """Free energy ``-T logsumexp(z / T)`` (Liu et al., NeurIPS 2020)."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def score(self, outputs):
        z = np.asarray(outputs.logits, dtype=np.float64)
        return -self.temperature * logsumexp64(z / self.temperature)


class Entropy(Detector):
    """Shannon entropy of the softmax distribution."""

    def score(self, outputs):
        logp = log_softmax64(outputs.logits)
        return -(np.exp(logp) * logp).sum(axis=1)


class UniformCE(Detector):
    """H(U; p) = logsumexp(z) - mean(z), cross-entropy to the uniform (OE paper, Table 10).

    Higher cross-entropy to uniform means a more peaked prediction, so the anomaly score is
    its negative.
    """

    def score(self, outputs):
        z = np.asarray(outputs.logits, dtype=np.float64)
        return -(logsumexp64(z) - z.mean(axis=1))


@oebench.hookimpl
def register_detectors(register):
    register("msp", MSP, description="max softmax probability (Hendrycks & Gimpel 2017)")
    register("max-logit", MaxLogit, description="max logit (Hendrycks et al. 2022)")
    register("energy", Energy, description="free energy, T=1 (Liu et al. 2020)")
    register("entropy", Entropy, description="softmax entropy")
    register("uniform-ce", UniformCE, description="H(U; p), cross-entropy to uniform (OE paper)")
