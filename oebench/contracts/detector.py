"""The detector contract. Scores are float64 and higher means more anomalous."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from oebench.contracts.arrays import BLOCK_ROWS

if TYPE_CHECKING:
    from oebench.contracts.model import Classifier


@dataclass
class Outputs:
    """What one forward pass of a model over a dataset produced (numpy arrays; the engine's
    are read-only, shared by every detector: see ``Detector.copies_outputs``)."""

    logits: np.ndarray
    features: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)


@dataclass
class Head:
    """The final linear layer: ``logits = features @ weight.T + bias`` (read-only arrays)."""

    weight: np.ndarray
    bias: np.ndarray


class Detector:
    """An OOD detector. Declare what it needs in ``needs``; the engine provides exactly that.

    - ``"logits"`` / ``"features"``: arrays in the ``Outputs`` passed to ``score``.
    - ``"fit"``: ``fit(train, head)`` is called once per model with ID *training* outputs.
    - ``"head"``: the final linear layer is passed to ``fit`` (``None`` otherwise); a detector
      that needs the head but not ``"fit"`` gets ``fit(None, head)``.
    - ``"model"``: ``score_inputs(model, batches)`` is called instead of ``score``. With
      ``"fit"`` too, ``fit(train, None)`` comes first with the ID training outputs;
      ``"logits"`` / ``"features"`` then name what ``fit`` reads (the head is never passed).
    - ``fit_inputs(model, batches)`` (optional, for ``"model"`` with ``"fit"``): called once per
      model after ``fit`` and before scoring, with [0, 1] image batches of the ID *training*
      split, in the order of the train outputs ``fit`` got (never ID test or OOD data), for
      statistics of intermediate layers.

    What a detector is given is shared with the other detectors and must not change: the
    arrays of ``Outputs`` and ``Head`` are read-only (a write raises ``ValueError``, and the
    detector fails by name), a write around that flag is caught by checksum, and after a model
    detector the engine checks the model's weights digest. A detector that wants to change
    its inputs in place sets ``copies_outputs = True`` and gets writable copies of its own.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    #: True: ``fit`` and ``score`` get writable copies of the outputs and head (costs a copy
    #: per call); False: read-only views of the arrays every detector shares
    copies_outputs: ClassVar[bool] = False

    def fit(self, train: Outputs | None, head: Head | None) -> None:
        """Learn statistics from ID training outputs (never OOD or ID test data)."""

    def score(self, outputs: Outputs) -> np.ndarray:
        """One anomaly score per sample, float64, higher = more anomalous."""
        raise NotImplementedError

    def score_inputs(self, model: Classifier, batches) -> np.ndarray:
        """Score from raw [0, 1] image batches with the model at hand (for ``"model"``)."""
        raise NotImplementedError

    def memory(self, train_rows: int, test_rows: int, dim: int, classes: int) -> int:
        """Estimated peak bytes of ``fit`` on ``train_rows`` and ``score`` of ``test_rows`` rows
        (``dim`` features, ``classes`` logits), beyond the outputs themselves (which may be
        memory-mapped files: read them in row blocks, ``oebench.api.row_blocks``). The
        engine checks the sum against the memory there is before any work.

        The default: float64 copies of a test set's outputs and of a block of train rows,
        and ``dim x dim`` and ``classes x dim`` statistics. Override it where ``fit`` keeps
        more (per-class covariances, a copy of every train row).
        """
        block = min(train_rows, BLOCK_ROWS) + test_rows
        return 8 * (2 * block * (dim + classes) + 3 * dim * dim + 3 * classes * dim)

    def config(self) -> dict:
        """What the object keeps, for showing; cached scores are keyed by the options as the
        benchmark gives them (``Ref.config``), never by this."""
        return {
            "class": type(self).__qualname__,
            **{k: v for k, v in vars(self).items() if not k.startswith("_")},
        }


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def logsumexp64(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def msp_log_odds(logits: np.ndarray) -> np.ndarray:
    """``log((1 - MSP) / MSP)`` per row in float64: monotone in ``-MSP`` and exact where a
    float32 softmax would round to 1.0 (``logsumexp`` of the other logits minus the top one)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    top = z.argmax(axis=1)
    rest = z.copy()
    rest[rows, top] = -np.inf
    return logsumexp64(rest) - z[rows, top]
