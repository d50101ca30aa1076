import csv
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO, TINY, run_cli

from oebench.bench.parse import load_benchmark
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner
from oebench.report.tables import CSV_COLUMNS, results_frame

REAL_SETS = ("letters", "textures", "faces")


def _run(path=TINY, cache=True, **kw):
    bench = replace(load_benchmark(str(path)), **kw)
    return results_frame(run_here(Runner(bench, device="cpu", use_cache=cache)))


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "results.csv"
    first = run_cli("run", "--csv", str(out))
    assert first.returncode == 0, first.stderr
    assert "baseline vs oe" in first.stdout and "OOD = positive class" in first.stdout
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[: len(CSV_COLUMNS)] == CSV_COLUMNS
    assert {r["training"] for r in rows} == {"baseline", "oe"}
    assert {r["outlier_source"] for r in rows if r["training"] == "oe"} == {"photo-crops"}
    n_detectors, n_sets = len(load_benchmark("quickstart").detectors), 6
    assert len(rows) == 2 * n_detectors * (n_sets + 1)
    for training in ("baseline", "oe"):
        msp = [r for r in rows if r["detector"] == "msp" and r["training"] == training]
        mean = next(r for r in msp if r["ood_dataset"] == "mean")
        per_set = [float(r["auroc"]) for r in msp if r["ood_dataset"] != "mean"]
        assert float(mean["auroc"]) == pytest.approx(np.mean(per_set))
        assert 90 < float(mean["id_accuracy"]) <= 100

    # OE should help on the real-image OOD sets (the auxiliary photos are disjoint from them).
    def real_auroc(training):
        return np.mean(
            [
                float(r["auroc"])
                for r in rows
                if r["training"] == training
                and r["detector"] == "msp"
                and r["ood_dataset"] in REAL_SETS
            ]
        )

    assert real_auroc("oe") > real_auroc("baseline") + 10

    again = tmp_path / "again.csv"
    second = run_cli("run", "--csv", str(again))
    assert second.returncode == 0
    assert "train small-cnn" not in second.stderr  # cached checkpoints: no training
    assert again.read_text() == out.read_text()


def test_same_seed_same_numbers_and_another_seed_differs():
    a = _run(cache=False)
    b = _run(cache=False)
    assert a.equals(b)
    c = _run(seeds=[1], cache=False)
    assert not np.allclose(a.auroc.to_numpy(), c.auroc.to_numpy())


def test_warm_cache_trains_nothing_and_runs_no_forward_pass(monkeypatch):
    from oebench.bench.matrix import Ref

    every_kind = [Ref(n) for n in ("msp", "knn", "vim", "ash", "odin")]  # logits .. model
    cold = _run(detectors=every_kind)

    def forbidden(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr("oebench.contracts.model.Classifier.forward", forbidden)
    monkeypatch.setattr("oebench.contracts.model.Classifier.forward_features", forbidden)
    monkeypatch.setattr("oebench.execute.training.train", forbidden)
    warm = _run(detectors=every_kind)
    assert warm.equals(cold)


def test_corrupt_output_cache_is_recomputed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    cold = _run()
    files = sorted((tmp_path / "cache" / "outputs").glob("*.npz"))
    assert files
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated
    files[1].write_bytes(b"not a numpy file at all")
    warm = _run()
    assert warm.equals(cold)
    assert "corrupt cache file" in capsys.readouterr().err


def test_oe_training_uses_one_forward_pass_per_step():
    import torch

    from oebench.contracts.data import TensorImages
    from oebench.contracts.objective import Objective

    calls = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            calls.append(len(x))
            return self.fc(x.flatten(1))

    class Spy(Objective):
        uses_outliers = True

        def __call__(self, logits_in, targets, logits_out=None):
            assert len(logits_in) == len(targets) and logits_out is not None
            return logits_in.sum() * 0 + logits_out.sum() * 0 + (logits_in**2).mean()

    from oebench.execute.training import train

    ids = TensorImages(torch.rand(10, 1, 2, 2), torch.randint(0, 3, (10,)))
    outs = TensorImages(torch.rand(7, 1, 2, 2))
    params = {
        "epochs": 2,
        "batch_size": 4,
        "outlier_batch_size": 5,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 0.0,
    }
    train(Net(), ids, Spy(), params, 0, (1, 2, 2), torch.device("cpu"), outs)
    # 3 steps per epoch (4 + 4 + 2 ID images), each ONE call on ID + 5 outliers.
    assert calls == [9, 9, 7] * 2


def test_example_plugin_installs_and_its_detector_runs(tmp_path):
    import shutil

    target = tmp_path / "site"
    source = tmp_path / "src"  # a copy: an in-tree build would leave build/ and egg-info behind
    shutil.copytree(
        REPO / "plugins" / "oebench-example-detector",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    env = {"PYTHONPATH": str(target)}
    listed = run_cli("list", "plugins", "--json", env=env)
    import json

    info = next(p for p in json.loads(listed.stdout) if p["name"] == "example-detector")
    assert info["version"] == "0.1.0" and info["error"] is None
    assert info["components"] == {"detector": ["logit-margin"]}
    out = tmp_path / "r.csv"
    result = run_cli("run", str(TINY), "--detectors", "logit-margin", "--csv", str(out), env=env)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert {r["detector"] for r in rows} == {"logit-margin"}
    assert all(0 <= float(r["auroc"]) <= 100 for r in rows)


def test_fit_sees_only_id_training_outputs():
    import oebench
    from oebench.registry.plugins import get_plugin_manager

    seen = []

    class Spy(oebench.Detector):
        needs = frozenset({"logits", "features", "fit", "head"})

        def fit(self, train, head):
            seen.append((len(train), train.labels.copy(), head.weight.shape))

        def score(self, outputs):
            return -np.asarray(outputs.logits, dtype=np.float64).max(axis=1)

    class Plugin:
        @oebench.hookimpl
        def register_detectors(self, register):
            register("fit-spy", Spy)

    pm = get_plugin_manager()
    pm.register(Plugin(), name="fit-spy-plugin")
    try:
        bench = load_benchmark(str(TINY))
        bench = replace(bench, detectors=[bench.detectors[0].__class__("fit-spy")])
        runner = Runner(bench, device="cpu")
        run_here(runner)
    finally:
        pm.unregister(name="fit-spy-plugin")
    train = runner.sources.load("dataset", bench.id_datasets[0], "train", None, 0)
    assert len(seen) == 2  # once per trained model (baseline, oe)
    for n, labels, head_shape in seen:
        assert n == len(train) and np.array_equal(labels, train.labels.numpy())
        assert (labels >= 0).all()  # no OOD sample (label -1) among them
        assert head_shape == (10, 32)


def test_oe_paper_protocol_resamples_ood_sets():
    full = _run()
    paper = _run(protocol="oe-paper", resamples=10)
    again = _run(protocol="oe-paper", resamples=10)
    assert paper.equals(again)  # seeded re-sampling
    assert {"auroc_std", "fpr95_std"} <= set(paper.columns)
    per_set = paper[paper.ood_dataset != "mean"]
    assert (per_set.n_id == 1000).all()
    assert (per_set.auroc_std > 0).any()
    merged = full.merge(paper, on=["training", "detector", "ood_dataset"], suffixes=("", "_p"))
    assert not np.allclose(merged.auroc, merged.auroc_p)
    assert np.allclose(merged.auroc, merged.auroc_p, atol=10)  # same model, a subsample


def test_cache_keys_follow_the_code_that_makes_the_data(tmp_path, monkeypatch):
    import oebench
    from oebench.bench.matrix import Ref
    from oebench.keys.fingerprints import clear_caches
    from oebench.registry.plugins import get_plugin_manager

    module = tmp_path / "oebench_test_source.py"
    module.write_text(
        "import oebench\n\nclass Source(oebench.ImageSource):\n"
        "    def load(self, split, *, shape=None, seed=0):\n        raise NotImplementedError\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import oebench_test_source

    class Plugin:
        @oebench.hookimpl
        def register_datasets(self, register):
            register("code-test", oebench_test_source.Source)

    get_plugin_manager().register(Plugin(), name="code-test-plugin")
    try:
        runner = Runner(load_benchmark(str(TINY)), device="cpu")
        where = ("dataset", Ref("code-test"), "test", (1, 28, 28), 0)
        before = runner.sources.fingerprint(*where)
        assert runner.sources.fingerprint(*where) == before
        # a comment elsewhere in the file is not the source's code (oebench.keys.fingerprints)
        module.write_text(module.read_text() + "# a note after the class\n")
        clear_caches()  # code is read once per process: as a new process would read it
        assert runner.sources.fingerprint(*where) == before
        module.write_text(module.read_text().replace("NotImplementedError", "RuntimeError"))
        assert runner.sources.fingerprint(*where) == before  # not half-way through a run
        clear_caches()
        assert runner.sources.fingerprint(*where) != before  # a change to how the images are made
    finally:
        get_plugin_manager().unregister(name="code-test-plugin")
