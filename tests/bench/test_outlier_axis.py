"""Outlier sources as an axis: ``outliers = [...]`` runs a training once per source."""

import dataclasses

import pytest
from conftest import TINY

from oebench.bench.matrix import DEFAULT_TRAINING, Ref, Training
from oebench.bench.overrides import with_settings
from oebench.bench.parse import load_benchmark, parse_benchmark
from oebench.errors import UserError
from oebench.keys.cells import Engine, keyed, matrix_cells, training_config

AXIS = """
[[trainings]]
name = "energy"
objective = "energy-margin"
outliers = [{ name = "photo-crops", n = 2048 }, { name = "dataset", dataset = "letters" }]
from = "baseline"
epochs = 2

[[trainings]]
name = "mix"
objective = "mixoe"
outliers = ["photo-crops", { name = "dataset", dataset = "textures", label = "tex" }]
"""


class NoFiles:
    """Data files for keys without reading any data: no files, no model files."""

    def files(self, kind, ref):
        return []

    def model_files(self, ref):
        return {}


def tiny(extra: str = "") -> str:
    return TINY.read_text() + extra


def test_a_list_expands_into_one_training_per_source():
    bench = parse_benchmark(tiny(AXIS))
    names = [t.name for t in bench.trainings]
    assert names == ["baseline", "oe", "energy/photo-crops", "energy/dataset", "mix/photo-crops",
                     "mix/tex"]  # fmt: skip
    crops = bench.training("energy/photo-crops")
    assert (crops.family, crops.source) == ("energy", "photo-crops")
    assert crops.outliers == Ref("photo-crops", (("n", 2048),))
    assert crops.objective == Ref("energy-margin") and crops.params["epochs"] == 2
    letters = bench.training("energy/dataset")
    assert letters.outliers == Ref("dataset", (("dataset", "letters"),))
    assert letters.init == "baseline" and letters.params == crops.params
    tex = bench.training("mix/tex")
    assert (tex.family, tex.source, tex.outliers.key, tex.init) == ("mix", "tex", "tex", None)


def test_a_single_source_training_is_what_it_was():
    oe = parse_benchmark(tiny(AXIS)).training("oe")
    params = {**DEFAULT_TRAINING, "epochs": 1, "max_train": 1024, "batch_size": 128, "lr": 0.01,
              "outlier_batch_size": 256}  # fmt: skip
    settings = tuple(sorted(params.items()))
    assert oe == Training("oe", Ref("oe"), Ref("photo-crops", (("n", 2048),)), "baseline", settings)
    assert (oe.family, oe.source) == ("", "")


def test_existing_cells_keep_their_keys_and_a_source_trains_as_its_single_training():
    engine = Engine(1, "code")
    before = {c.training.name: c.key for c in matrix_cells(load_benchmark(str(TINY)), NoFiles(),
                                                           engine)}  # fmt: skip
    axis = parse_benchmark(tiny(AXIS), str(TINY))
    after = {c.training.name: c.key for c in matrix_cells(axis, NoFiles(), engine)}
    assert after["baseline"] == before["baseline"] and after["oe"] == before["oe"]
    assert len(set(after.values())) == len(after)  # every source: its own cell
    # a one-source list trains exactly what the single `outliers` does (only the names differ)
    single = 'outliers = { name = "photo-crops", n = 2048 }'
    one = parse_benchmark(tiny().replace(single, 'outliers = [{ name = "photo-crops", n = 2048 }]'))
    listed = one.training("oe/photo-crops")
    assert training_config(one, listed) == training_config(axis, axis.training("oe"))
    cell = matrix_cells(one, NoFiles(), engine)[1]
    assert cell.config["names"]["training"] == "oe/photo-crops"
    assert cell.config["names"]["outlier_source"] == "photo-crops"
    assert keyed(one, cell, NoFiles(), engine).key == cell.key


def test_from_a_family_starts_from_the_same_source():
    text = (
        tiny(AXIS)
        + """
[[trainings]]
name = "tuned"
objective = "oe"
outliers = [{ name = "dataset", dataset = "textures", label = "tex" }, "photo-crops"]
from = "mix"
"""
    )
    bench = parse_benchmark(text)
    assert bench.training("tuned/tex").init == "mix/tex"
    assert bench.training("tuned/photo-crops").init == "mix/photo-crops"
    assert [t.name for t in bench.lineage(bench.training("tuned/tex"))] == ["tuned/tex", "mix/tex"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ('outliers = ["photo-crops", "photo-crops"]',
         "training 'x': outliers lists photo-crops twice; give one a 'label'"),
        ('outliers = ["photo-crops", { name = "dataset", dataset = "a", label = "photo-crops" }]',
         "training 'x': outliers lists photo-crops twice; give one a 'label'"),
        ('outliers = ["photo-crops", 3]',
         "training 'x': outliers[1]: expected a name or a table with 'name', got 3"),
        ('outliers = [{ dataset = "textures" }]',
         "training 'x': outliers[0]: expected a name or a table with 'name'"),
        ("outliers = []", "training 'x': outliers = []: list at least one outlier source"),
        ('outliers = ["photo-crops"]\nfrom = "mix"',
         "training 'x/photo-crops' starts from 'mix', which has one training per outlier source "
         "(tex) but none for 'photo-crops'"),
    ],
)  # fmt: skip
def test_problems_are_one_line_each(extra, message):
    text = tiny(AXIS).replace('outliers = ["photo-crops", {', "outliers = [{")  # mix: tex only
    text += f'\n[[trainings]]\nname = "x"\nobjective = "oe"\n{extra}\n'
    with pytest.raises(UserError) as err:
        parse_benchmark(text)
    assert any(message in line for line in str(err.value).splitlines()), str(err.value)


def test_a_baseline_from_a_family_is_a_problem():
    text = tiny(AXIS) + '\n[[trainings]]\nname = "ce"\nobjective = "cross-entropy"\nfrom = "mix"\n'
    with pytest.raises(UserError, match="none for 'no outliers'; name one in 'from', e.g. 'mix/"):
        parse_benchmark(text)


def test_an_expanded_name_taken_twice_is_a_problem():
    text = tiny(AXIS) + '\n[[trainings]]\nname = "mix/tex"\nobjective = "cross-entropy"\n'
    with pytest.raises(UserError, match="'mix/tex' used twice"):
        parse_benchmark(text)


def test_set_on_a_family_reaches_every_source():
    bench = parse_benchmark(tiny(AXIS), str(TINY))
    new = with_settings(bench, {"trainings.energy.lr": 0.5, "trainings.energy.outliers.n": 64})
    lr = {t.name: t.params["lr"] for t in new.trainings}
    assert lr == {"baseline": 0.1, "oe": 0.01, "energy/photo-crops": 0.5, "energy/dataset": 0.5,
                  "mix/photo-crops": 0.1, "mix/tex": 0.1}  # fmt: skip
    assert new.training("energy/dataset").outliers.kwargs == {"dataset": "letters", "n": 64}
    one = with_settings(bench, {"trainings.mix/tex.objective.beta": 2.0})
    assert one.training("mix/tex").objective.kwargs == {"beta": 2.0}
    assert one.training("mix/photo-crops").objective.kwargs == {}
    with pytest.raises(UserError, match="no training 'energ'. Did you mean: energy"):
        with_settings(bench, {"trainings.energ.lr": 0.5})


def test_set_default_skips_a_family_that_sets_its_own():
    bench = parse_benchmark(tiny(AXIS), str(TINY))
    new = with_settings(bench, {"training.epochs": 3})
    epochs = {t.name: t.params["epochs"] for t in new.trainings}
    assert epochs == {"baseline": 3, "oe": 3, "energy/photo-crops": 2, "energy/dataset": 2,
                      "mix/photo-crops": 3, "mix/tex": 3}  # fmt: skip
    assert dataclasses.replace(new, text="").defaults["epochs"] == 3
