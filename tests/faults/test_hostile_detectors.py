"""Hostile detectors: one that writes into what it was given (outputs, head, the model) is
named and dropped, and the other detectors' numbers stay those of a clean run, cached or not;
cached scores follow the options as the benchmark gives them, not what a detector keeps."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli

import oebench
from oebench.bench.matrix import Ref
from oebench.bench.parse import load_benchmark
from oebench.contracts.detector import Outputs
from oebench.execute.drive import run_here
from oebench.execute.outputs import OutputCache
from oebench.execute.runner import Runner

#: one cell (baseline), two real OOD sets; msp/energy read the outputs, knn fits on the ID
#: training features, odin runs the model
HOSTILE_TOML = """
name = "hostile"
seeds = [0]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 8 }]
detectors = ["msp", "energy", "knn", "odin"]
ood_datasets = [{ name = "letters", n = 200 }, { name = "textures", n = 200 }]

[training]
epochs = 1
max_train = 512
batch_size = 128
lr = 0.1

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""
VICTIMS = ["msp", "energy", "knn", "odin"]
PLUGIN = "hostile-plugin"
NUMBERS = ["detector", "ood_dataset", "auroc", "aupr_in", "aupr_out", "fpr95", "id_accuracy"]
NUMBERS += ["ece", "rms_calib", "mad_calib", "rms_calib_mixed", "mad_calib_mixed"]
WRITE = "tried to write into the outputs it was given"


# -- hostile detectors ---------------------------------------------------------------------------
class FlipsLogits(oebench.Detector):
    def score(self, outputs):
        outputs.logits *= -1
        return -outputs.logits.max(1).astype(np.float64)


class ZeroesFeatures(oebench.Detector):
    needs = frozenset({"logits", "features"})

    def score(self, outputs):
        outputs.features[:] = 0
        return -outputs.logits.max(1).astype(np.float64)


class ZeroesLabels(oebench.Detector):
    def score(self, outputs):
        outputs.labels[:] = 0
        return -outputs.logits.max(1).astype(np.float64)


class WritesTrainInFit(oebench.Detector):
    needs = frozenset({"logits", "features", "fit"})

    def fit(self, train, head):
        train.features[:] = 0

    def score(self, outputs):
        return -outputs.logits.max(1).astype(np.float64)


class WritesHead(oebench.Detector):
    needs = frozenset({"features", "head"})

    def fit(self, train, head):
        head.weight[:] = 0

    def score(self, outputs):
        return outputs.features.sum(1).astype(np.float64)


class WritesThroughTorch(oebench.Detector):
    """Goes around the read-only flag: torch wraps the array and writes into its memory."""

    needs = frozenset({"logits", "features", "fit"})

    def fit(self, train, head):
        torch.from_numpy(train.features).mul_(-1)

    def score(self, outputs):
        torch.as_tensor(outputs.logits).neg_()
        return outputs.logits.max(1).astype(np.float64)


class ChangesWeights(oebench.Detector):
    needs = frozenset({"model"})

    def score_inputs(self, model, batches):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-1.5)
        return np.concatenate([model(x).amax(1).detach().double().numpy() for x in batches])


class CopiesAndWrites(oebench.Detector):
    """Declares that it changes its inputs: gets copies of its own, and may."""

    copies_outputs = True

    def score(self, outputs):
        outputs.logits *= -1
        outputs.features[:] = 0
        return outputs.logits.min(1).astype(np.float64)


class ArrayTemperature(oebench.Detector):
    """Energy at ``temperature``, kept in an array of 1001 values whose printed form (what a
    key made from ``config()`` sees) elides the middle value that holds it."""

    def __init__(self, temperature: float = 1.0):
        self.temperatures = np.ones(1001)
        self.temperatures[500] = temperature

    def score(self, outputs):
        t = self.temperatures[500]
        z = outputs.logits.astype(np.float64) / t
        m = z.max(1)
        return -t * (m + np.log(np.exp(z - m[:, None]).sum(1)))


class PrivateTemperature(ArrayTemperature):
    """The same, with the option kept under a private name (not in ``config()`` at all)."""

    def __init__(self, temperature: float = 1.0):
        self._t = float(temperature)
        self.temperatures = np.ones(1001)

    def score(self, outputs):
        self.temperatures[500] = self._t
        return super().score(outputs)


HOSTILE = {
    "flips-logits": FlipsLogits,
    "zeroes-features": ZeroesFeatures,
    "zeroes-labels": ZeroesLabels,
    "writes-train-in-fit": WritesTrainInFit,
    "writes-head": WritesHead,
    "writes-through-torch": WritesThroughTorch,
    "changes-weights": ChangesWeights,
    "copies-and-writes": CopiesAndWrites,
    "array-temperature": ArrayTemperature,
    "private-temperature": PrivateTemperature,
}


class Plugin:
    @oebench.hookimpl
    def register_detectors(self, register):
        for name, cls in HOSTILE.items():
            register(name, cls)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The benchmark file, a cache folder holding its trained model, and the victims'
    numbers from a clean run (the model trained once; each test copies it)."""
    folder = tmp_path_factory.mktemp("hostile")
    path = folder / "hostile.toml"
    path.write_text(HOSTILE_TOML)
    cache = folder / "cache"
    clean = numbers(run_here(Runner(load_benchmark(str(path)), device="cpu", cache_root=cache)))
    return path, cache / "models", clean


@pytest.fixture
def cache(trained, tmp_path) -> Path:
    """A cache of this test's own: the trained model, no outputs and no scores yet."""
    own = tmp_path / "cache"
    shutil.copytree(trained[1], own / "models")
    return own


@pytest.fixture
def plugin(oebench_plugin):
    return oebench_plugin(Plugin(), PLUGIN)


def numbers(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows)[NUMBERS]
    return df.sort_values(["detector", "ood_dataset"]).reset_index(drop=True)


def run(trained, cache: Path, *detectors: str | Ref) -> tuple[Runner, pd.DataFrame]:
    refs = [d if isinstance(d, Ref) else Ref(d) for d in detectors]
    bench = replace(load_benchmark(str(trained[0])), detectors=refs)
    runner = Runner(bench, device="cpu", cache_root=cache)
    return runner, numbers(run_here(runner))


def victims(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.detector.isin(VICTIMS)].reset_index(drop=True)


# -- writes into the outputs, the head, the model ------------------------------------------------
@pytest.mark.parametrize(
    ("name", "told"),
    [
        ("flips-logits", WRITE),
        ("zeroes-features", WRITE),
        ("zeroes-labels", WRITE),
        ("writes-train-in-fit", WRITE),
        ("writes-head", WRITE),
        (
            "writes-through-torch",
            "changed the mnist-5k test outputs, the letters test outputs,"
            " the textures test outputs and the ID training outputs in place",
        ),
        ("changes-weights", "changed the model's weights in place"),
    ],
)
def test_a_detector_that_writes_is_named_and_the_others_keep_their_numbers(
    trained, cache, plugin, name, told
):
    # the hostile detector goes first: every other detector runs after its write
    runner, df = run(trained, cache, name, *VICTIMS)
    pd.testing.assert_frame_equal(victims(df), trained[2])  # the others' numbers, unchanged
    assert set(df.detector) == set(VICTIMS)  # its rows dropped, the others' kept
    [message] = runner.failures
    assert message.startswith(f"detector {name!r} (plugin {PLUGIN!r}) "), message
    assert told in message and "Traceback" not in message
    assert "its rows of mnist-5k / small-cnn / baseline / seed 0 are dropped" in message
    # a clean rerun with the same cache (outputs and scores served from it) agrees
    again, served = run(trained, cache, *VICTIMS)
    assert not again.failures
    pd.testing.assert_frame_equal(served, trained[2])


def test_a_write_into_the_outputs_says_how_to_get_copies(trained, cache, plugin):
    runner, _ = run(trained, cache, "flips-logits", "msp")
    [message] = runner.failures
    assert "copies_outputs = True" in message and "assignment destination" not in message
    assert "output array is read-only" in message  # numpy's own words, at the end


def test_a_detector_that_declares_copies_may_write_into_them(trained, cache, plugin):
    runner, df = run(trained, cache, "copies-and-writes", *VICTIMS, "max-logit")
    assert not runner.failures
    pd.testing.assert_frame_equal(victims(df), trained[2])
    mine, same = (
        df[df.detector == name].drop(columns="detector").reset_index(drop=True)
        for name in ("copies-and-writes", "max-logit")
    )
    pd.testing.assert_frame_equal(mine, same)  # -max(logits), computed on its own copy


# -- the output/score cache ----------------------------------------------------------------------
def _arrays(value: float) -> Outputs:
    return Outputs(np.full((100, 3), value), np.full((100, 4), value), np.zeros(100, np.int64))


@pytest.mark.parametrize("enabled", [True, False])
def test_cached_outputs_are_read_only_and_a_write_around_the_flag_is_never_served(
    tmp_path, enabled, capsys
):
    cache = OutputCache(tmp_path, enabled=enabled)
    made = []
    compute = lambda: made.append(1) or _arrays(1.0)  # noqa: E731
    first = cache.get_or_compute("k", compute)
    for array in (first.logits, first.features, first.labels):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 7
    assert first.intact()
    first.logits.setflags(write=True)  # the cache's own array: its flag can be turned back
    first.logits[0, 0] = 7
    assert not first.intact()
    again = cache.get_or_compute("k", compute)
    assert again.logits[0, 0] == 1.0 and again.intact()  # from the file, or computed again
    assert made == ([1] if enabled else [1, 1])
    assert "changed; recomputing" in capsys.readouterr().err


def test_outputs_read_from_a_file_are_read_only(tmp_path):
    OutputCache(tmp_path).get_or_compute("k", lambda: _arrays(2.0))
    loaded = OutputCache(tmp_path).get_or_compute("k", lambda: pytest.fail("not read"))
    assert not loaded.logits.flags.writeable and loaded.logits[0, 0] == 2.0


def test_cached_scores_are_copies_the_detector_cannot_change_later(tmp_path):
    cache = OutputCache(tmp_path, enabled=False)
    mine = np.arange(5.0)
    kept = cache.keep_scores("s", mine)
    mine[0] = 99  # the detector's own array: still writable, and not the cache's
    assert not kept.flags.writeable and cache.cached_scores("s")[0] == 0.0
    kept.setflags(write=True)
    kept[1] = 42
    assert cache.cached_scores("s") is None  # changed in memory, no file: never served


# -- options held as arrays ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["array-temperature", "private-temperature"])
def test_cached_scores_follow_the_options_the_benchmark_gives(
    trained, cache, plugin, name, tmp_path
):
    def at(temperature: float, where: Path) -> pd.DataFrame:
        ref = Ref(name, (("temperature", temperature),))
        return run(trained, where, ref)[1]

    cold = at(1.0, cache)
    hot = at(100.0, cache)  # the same cache: T = 1's scores must not be served
    fresh = tmp_path / "fresh"  # the truth: T = 100 in a cache without T = 1's scores
    shutil.copytree(cache / "models", fresh / "models")
    pd.testing.assert_frame_equal(hot, at(100.0, fresh))
    assert not hot.auroc.equals(cold.auroc)


# -- the command line ----------------------------------------------------------------------------
def test_cli_exit_1_names_the_writing_detector_and_stores_the_others(
    trained, cache, fake_dist, tmp_path
):
    site = fake_dist(
        "oebench-hostile",
        {
            "hostile_writer": "import numpy as np\nimport oebench\n\n"
            "class Writer(oebench.Detector):\n"
            "    def score(self, outputs):\n"
            "        outputs.logits *= -1\n"
            "        return outputs.logits.max(1).astype(np.float64)\n\n"
            "@oebench.hookimpl\ndef register_detectors(register):\n"
            "    register('writer', Writer)\n"
        },
        {"hostile": "hostile_writer"},
    )
    env = {"PYTHONPATH": str(site), "OEBENCH_CACHE_DIR": str(cache)}
    result = run_cli("run", str(trained[0]), "--detectors", "writer,msp,energy", env=env)
    assert result.returncode == 1, result.stderr
    assert f"detector 'writer' (plugin 'hostile') {WRITE}" in result.stderr
    assert "Traceback" not in result.stderr
    stored = oebench.load_results()
    assert set(stored.detector) == {"msp", "energy"}
    clean = trained[2]
    kept = numbers(stored)
    pd.testing.assert_frame_equal(
        kept, clean[clean.detector.isin(["msp", "energy"])].reset_index(drop=True)
    )
