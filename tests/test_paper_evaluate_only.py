"""``evaluate_only``: score a model's own weights (a released checkpoint) without training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oebench
from oebench.bench.parse import load_benchmark, parse_benchmark
from oebench.calibration import calibration, mixed_calibration
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner

BENCH = """
name = "released"
id_datasets = ["mnist-5k"]
models = [{{ name = "checkpoint", arch = "small-cnn", width = 4, path = "{path}", label = "net" }}]
detectors = ["msp"]
ood_datasets = [{{ name = "gaussian-pixel", n = 50 }}]

[training]
epochs = 1
eval_batch_size = 500

[[trainings]]
name = "released"
objective = "cross-entropy"
evaluate_only = true
"""


def test_evaluate_only_scores_the_checkpoint_and_never_trains(tmp_path, monkeypatch):
    from oebench.contracts.model import Classifier

    torch.manual_seed(7)
    net = oebench.create_model("small-cnn", 10, (1, 28, 28), width=4)
    path = tmp_path / "released.pt"
    torch.save(net.state_dict(), path)

    def no_training(*args, **kwargs):
        raise AssertionError("evaluate_only must not train")

    monkeypatch.setattr("oebench.execute.training.train", no_training)
    scores = {}
    runner = Runner(parse_benchmark(BENCH.format(path=path)), device="cpu")
    sink = lambda cell, det, ds, values: scores.__setitem__(ds, values)  # noqa: E731
    rows = run_here(runner, score_sink=sink)
    assert rows and not any(r["trained"] for r in rows)

    source = oebench.create_dataset("mnist-5k")
    model = Classifier(net, source.mean, source.std).eval()
    test = source.load("test")
    with torch.no_grad():
        logits = model(test.images.float() / 255).double()
    expected = -torch.log_softmax(logits, 1).max(1).values  # -log MSP, monotone in -MSP
    got = scores["id"]  # msp scores log((1 - MSP) / MSP): same order as -log MSP
    assert np.array_equal(
        np.argsort(got, kind="stable"), np.argsort(expected.numpy(), kind="stable")
    )
    accuracy = 100 * float((logits.argmax(1) == test.labels).double().mean())
    assert rows[0]["id_accuracy"] == pytest.approx(accuracy)
    # calibration of the same predictions, on ID and with the OOD set mixed in
    own = calibration(logits.numpy(), test.labels.numpy())
    ood = oebench.create_dataset("gaussian-pixel", n=50).load("test", shape=(1, 28, 28))
    with torch.no_grad():
        ood_logits = model(ood.images).double().numpy()
    mixed = mixed_calibration(logits.numpy(), test.labels.numpy(), ood_logits)
    for row in rows:
        assert row["ece"] == pytest.approx(own["ece"], abs=1e-6)
        assert row["rms_calib"] == pytest.approx(own["rms_calib"], abs=1e-6)
        assert row["rms_calib_mixed"] == pytest.approx(mixed["rms_calib_mixed"], abs=1e-4)


@pytest.mark.parametrize(
    "name", ["oe-released-cifar10", "oe-released-cifar100", "oe-released-svhn"]
)
def test_released_checkpoint_benchmarks_evaluate_only(name):
    bench = load_benchmark(name)
    assert all(t.params.get("evaluate_only") for t in bench.trainings)
    assert {m.name for m in bench.models} == {"checkpoint"}
    assert len(bench.models) == 2  # the authors' baseline and OE-tuned WRNs
