"""``oebench.evaluate``: a network the user already has, scored through the normal session."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import oebench
from oebench.bench.parse import parse_benchmark
from oebench.errors import UserError

README = Path(__file__).resolve().parents[1] / "README.md"
OODS = [{"name": "gaussian-pixel", "n": 200}, {"name": "blobs-pixel", "n": 200}]
METRICS = ["auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_id", "id_accuracy", "ece"]

CHECKPOINT_BENCH = """
name = "evaluate"
id_datasets = ["mnist-5k"]
models = [{{ name = "checkpoint", arch = "small-cnn", width = 4, path = "{path}", label = "net" }}]
detectors = ["msp", "energy", "knn", "vim", "odin"]
ood_datasets = [{{ name = "gaussian-pixel", n = 200 }}, {{ name = "blobs-pixel", n = 200 }}]

[[trainings]]
name = "evaluate"
objective = "cross-entropy"
evaluate_only = true
"""


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["detector", "ood_dataset"]).reset_index(drop=True)


def _sequential(linear: bool = True) -> nn.Module:
    """A small network with only ``forward``: a final nn.Linear, or logits from a conv."""
    torch.manual_seed(3)
    if linear:
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, 10),
        )  # fmt: skip
    return nn.Sequential(nn.Conv2d(1, 10, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_evaluate_equals_run_with_a_checkpoint_of_the_same_weights(tmp_path):
    torch.manual_seed(7)
    net = oebench.create_model("small-cnn", 10, (1, 28, 28), width=4)
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    ran = oebench.run(parse_benchmark(CHECKPOINT_BENCH.format(path=path)), device="cpu")
    got = oebench.evaluate(
        net, id_dataset="mnist-5k", ood_datasets=OODS, detectors="msp,energy,knn,vim,odin",
        label="net", device="cpu", use_cache=False,  # computed afresh, not read from run's cache
    )  # fmt: skip
    assert got.attrs["failures"] == [] and got.attrs["skipped"] == []
    assert list(got.columns) == list(ran.columns)
    assert len(got) == len(ran) == 5 * 3
    pd.testing.assert_frame_equal(_rows(got)[METRICS], _rows(ran)[METRICS])
    assert set(got.model) == {"net"} and set(got.training) == {"evaluate"}
    assert "given-model" not in oebench.list_models()  # registered for the call only


def test_a_network_split_at_its_last_linear_runs_feature_detectors():
    from oebench.evaluation import LAST_LINEAR, _probe, _split

    net = _sequential(linear=True)
    kind, head = _probe(net, (1, 28, 28), 10)
    assert (kind, head) == (LAST_LINEAR, "4")
    split = _split(net, kind, head)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        features = split.forward_features(x)
        assert torch.equal(features, net[:4](x))  # what the last nn.Linear receives
        assert torch.equal(split.forward_head(features), net(x))
    assert split.fc is net[4]
    df = oebench.evaluate(
        net,
        id_dataset="mnist-5k",
        ood_datasets=OODS[:1],
        detectors="msp,knn,react",
        device="cpu",
    )
    assert sorted(set(df.detector)) == ["knn", "msp", "react"] and not df.attrs["failures"]


def test_a_logits_only_network_skips_feature_detectors_and_says_which():
    net = _sequential(linear=False)
    with pytest.warns(UserWarning, match=r"logits only.*skipped 3 detector\(s\).*knn, vim, odin"):
        df = oebench.evaluate(
            net, id_dataset="mnist-5k", ood_datasets=OODS[:1],
            detectors=["msp", "knn", "vim", "odin", "energy"], device="cpu",
        )  # fmt: skip
    assert df.attrs["skipped"] == ["knn", "vim", "odin"]
    assert sorted(set(df.detector)) == ["energy", "msp"]
    assert np.isfinite(df.auroc).all()
    with pytest.raises(UserError, match="no detector is left"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oebench.evaluate(net, id_dataset="mnist-5k", ood_datasets=OODS[:1], detectors="knn")


def test_a_second_call_runs_no_forward_pass(tmp_path):
    net = oebench.create_model("small-cnn", 10, (1, 28, 28), width=4)
    calls = []  # the batch sizes its layers saw (oebench calls forward_features, not forward)
    net.body.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    kwargs = dict(id_dataset="mnist-5k", ood_datasets=OODS, detectors="msp,knn", device="cpu")
    first = oebench.evaluate(net, cache_root=tmp_path, **kwargs)
    assert sum(calls) >= 1000 + 2 * 200  # the ID test set and both OOD sets went through it
    seen = len(calls)
    second = oebench.evaluate(net, cache_root=tmp_path, **kwargs)
    assert len(calls) == seen  # every output and score came from the cache
    pd.testing.assert_frame_equal(second, first)
    with torch.no_grad():  # other weights: other cache entries, and a forward pass again
        net.fc.bias += 1.0
    oebench.evaluate(net, cache_root=tmp_path, **kwargs)
    assert len(calls) > seen


def test_a_registered_model_with_only_forward(oebench_plugin):
    class Plugin:
        @oebench.hookimpl
        def register_models(self, register):
            register("forward-only", lambda num_classes, shape: _sequential(linear=True))

    oebench_plugin(Plugin(), "forward-only-plugin")
    df = oebench.evaluate(
        "forward-only",
        id_dataset="mnist-5k",
        ood_datasets=OODS[:1],
        detectors="msp,knn",
        device="cpu",
    )
    assert sorted(set(df.detector)) == ["knn", "msp"] and set(df.model) == {"forward-only"}


def test_store_keeps_the_results_only_when_asked(tmp_path):
    net = _sequential(linear=True)
    kwargs = dict(id_dataset="mnist-5k", ood_datasets=OODS[:1], detectors="msp", device="cpu")
    oebench.evaluate(net, **kwargs)
    store = tmp_path / "kept.sqlite"
    assert not store.exists()
    oebench.evaluate(net, store=store, **kwargs)
    rows = oebench.load_results(store=store)
    assert set(rows.benchmark) == {"evaluate"} and set(rows.detector) == {"msp"}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Flatten(), nn.Linear(784, 7)), r"\(N, 10\) logits.*\(2, 7\)"),
        (nn.Sequential(nn.Linear(3, 10)), "failed on two random inputs"),
        (42, "nn.Module or a registered model"),
    ],
)
def test_mistakes_are_one_line(model, message):
    with pytest.raises(UserError, match=message) as caught:
        oebench.evaluate(model, id_dataset="mnist-5k", ood_datasets=OODS[:1], detectors="msp")
    assert "\n" not in str(caught.value)


def test_unknown_names_are_user_errors():
    net = _sequential()
    with pytest.raises(UserError, match="Unknown detector"):
        oebench.evaluate(net, id_dataset="mnist-5k", ood_datasets=OODS, detectors="nope*")
    with pytest.raises(UserError, match="non-empty list"):
        oebench.evaluate(net, id_dataset="mnist-5k", ood_datasets="letters")


@pytest.mark.slow
def test_the_readme_example_runs_verbatim(capsys):
    text = README.read_text()
    section = text[text.index("#### Evaluating a network you already have") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "oebench.evaluate(" in code
    exec(compile(code, str(README), "exec"), {})
    printed = capsys.readouterr().out
    for detector in ("msp", "energy", "knn", "vim"):
        assert re.search(rf"\b{detector}\b\s+\d+\.\d+", printed), printed
