"""The training engine as a cell's key sees it: its version and the digest of its code."""

from __future__ import annotations

import functools
from typing import Any

from oebench.bench.matrix import canonical_hash
from oebench.keys.cells import Engine
from oebench.keys.fingerprints import code_digest


def training_code() -> tuple[Any, ...]:
    """The code that decides what a training produces besides the model and the objective:
    the loop and its helpers, outlier sampling, the Objective base class, ID batching."""
    import oebench.bench.sampling
    import oebench.contracts.objective
    import oebench.execute.outputs
    import oebench.execute.sampling
    import oebench.execute.training

    t = oebench.execute.training
    return (
        t.train,
        t.augment,
        t.cosine_factor,
        t.to_device,
        oebench.execute.sampling,
        oebench.bench.sampling,  # the miners' defaults
        oebench.contracts.objective.Objective,
        oebench.execute.outputs.iterate_batches,
    )


@functools.cache
def engine() -> Engine:
    """This process's training engine, read once (like every source a key reads)."""
    from oebench.execute.training import TRAINING_VERSION

    digest = canonical_hash([code_digest(part) for part in training_code()])
    return Engine(version=TRAINING_VERSION, digest=digest)
