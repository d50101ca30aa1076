"""``oebench run --set KEY=VALUE`` and ``oebench.run(overrides=...)``: one value per key,
checked like the file's values, recorded in the stored benchmark (its own digest)."""

import sqlite3

import pytest
from conftest import TINY, run_cli

import oebench
from oebench.bench.overrides import Overrides, overridden, parse_settings, with_settings
from oebench.bench.parse import load_benchmark
from oebench.errors import UserError


def test_values_are_toml_one_per_key():
    pairs = parse_settings(["a=1", "b=0.5", "c=true", "d=[0, 1]", 'e="x,y"', "f=bare text"])
    assert pairs == (("a", 1), ("b", 0.5), ("c", True), ("d", [0, 1]), ("e", "x,y"),
                     ("f", "bare text"))  # fmt: skip
    with pytest.raises(UserError, match="given twice"):
        parse_settings(["a=1", "a=2"])
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_settings(["training.epochs"])


def test_training_default_reaches_only_trainings_without_their_own():
    bench = load_benchmark("oe-cifar10")  # baseline inherits epochs = 100, oe sets 10
    new = with_settings(bench, {"training.epochs": 2, "training.max_train": 512})
    epochs = {t.name: t.params["epochs"] for t in new.trainings}
    assert epochs == {"baseline": 2, "oe": 10}
    assert {t.params["max_train"] for t in new.trainings} == {512}
    assert new.defaults["epochs"] == 2 and bench.defaults["epochs"] == 100
    new = with_settings(bench, {"trainings.oe.epochs": 1, "trainings.oe.objective.lam": 0.25})
    oe = new.training("oe")
    assert oe.params["epochs"] == 1 and oe.objective.kwargs == {"lam": 0.25}
    assert new.training("baseline").params["epochs"] == 100


def test_component_options_and_top_level_settings():
    bench = load_benchmark("oe-cifar10")
    new = with_settings(
        bench,
        {"ood_datasets.gaussian.n": 50, "detectors.energy.temperature": 2.0, "resamples": 3,
         "trainings.oe.outliers.n": 1000, "models.wrn-40-2.depth": 16},
    )  # fmt: skip
    assert new.ood_datasets[0].kwargs == {"n": 50} and new.ood_datasets[1].kwargs == {"n": 10000}
    assert [d.kwargs for d in new.detectors if d.key == "energy"] == [{"temperature": 2.0}]
    assert new.resamples == 3 and new.training("oe").outliers.kwargs == {"n": 1000}
    assert new.models[0].kwargs == {"depth": 16}


def test_overridden_benchmark_has_its_own_digest_and_says_why():
    bench = load_benchmark("oe-cifar10")
    new = overridden(bench, Overrides(settings=(("trainings.baseline.epochs", 1),)))
    assert new.digest != bench.digest
    assert new.text.startswith(bench.text.rstrip())
    assert new.text.rstrip().endswith('# --set: {"trainings.baseline.epochs": 1}')
    assert overridden(bench, Overrides()) is bench


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("trainng.epochs=1", "Did you mean 'training'?"),
        ("training.epoch=1", "Did you mean: epochs?"),
        ("trainings.basline.lr=0.1", "no training 'basline'. Did you mean: baseline?"),
        ("ood_datasets.gausian.n=3", "no ood dataset 'gausian'. Did you mean: gaussian?"),
        ("ood_datasets.gaussian.nn=3", "unknown option 'nn' (did you mean 'n'?)"),
        ("training.epochs=0", "epochs = 0: Input should be greater than or equal to 1"),
        ("training.lr=fast", 'lr = "fast"'),
        ("trainings.baseline.outliers.n=3", "training 'baseline' has no 'outliers'"),
    ],
)
def test_mistakes_are_one_line_with_suggestions(key, expected):
    with pytest.raises(UserError) as exc:
        with_settings(load_benchmark("oe-cifar10"), dict(parse_settings([key])))
    message = str(exc.value)
    assert expected in message and "\n" not in message, message


def test_cli_refuses_a_bad_key_before_any_work():
    result = run_cli("run", str(TINY), "--set", "training.max_trian=64")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Did you mean: max_train?" in lines[0], result.stderr


def _stored_benchmarks(store):
    with sqlite3.connect(store) as conn:
        cells = conn.execute("SELECT DISTINCT benchmark_digest FROM cells").fetchall()
        texts = dict(conn.execute("SELECT digest, text FROM benchmarks").fetchall())
    return {d for (d,) in cells}, texts


def test_run_with_overrides_stores_its_own_benchmark(_isolated_store):
    changed = {"training.max_train": 256, "ood_datasets.gaussian-pixel.n": 100}
    df = oebench.run(TINY, device="cpu", overrides=changed)
    assert set(df[df["ood_dataset"] != "mean"]["ood_dataset"]) >= {"gaussian-pixel"}
    digests, texts = _stored_benchmarks(_isolated_store)
    plain = load_benchmark(str(TINY)).digest
    assert len(digests) == 1 and plain not in digests
    (digest,) = digests
    assert '"training.max_train": 256' in texts[digest]
    # the same run from the command line finds its cells in the store (the same digest)
    result = run_cli("run", str(TINY), "--device", "cpu", "--set", "training.max_train=256",
                     "--set", "ood_datasets.gaussian-pixel.n=100")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 of 2 cells came from the results store" in result.stderr
    assert _stored_benchmarks(_isolated_store)[0] == digests
