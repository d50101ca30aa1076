"""A cell's identity (oebench.keys.cells): the matrix in run order, each cell configured and
keyed once; what changes a key, and the paths where two configurations differ."""

from dataclasses import replace

import pytest

from oebench.bench.matrix import Ref, canonical_hash
from oebench.bench.parse import parse_benchmark
from oebench.keys.cells import Engine, differences, keyed, matrix_cells

TOML = """
name = "keys"
seeds = [0, 1]
id_datasets = ["mnist-5k", "fashion-mnist"]
models = [{ name = "small-cnn", width = 8 }]
detectors = ["msp", "energy"]
ood_datasets = [{ name = "letters", n = 200 }]

[training]
epochs = 1
batch_size = 64

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
outliers = { name = "photo-crops", n = 512 }
from = "baseline"
lr = 0.01
"""
ENGINE = Engine(1, "x")


class NoFiles:
    """Data that reads no files (the key then holds only code and configuration)."""

    def files(self, kind, ref):
        return []

    def model_files(self, ref):
        return {}


class ModelFile(NoFiles):
    """A model option naming a file (a ``checkpoint``'s weights), by its content digest."""

    def __init__(self, digest: str):
        self.digest = digest

    def model_files(self, ref):
        return {"path": self.digest}


def bench(text: str = TOML):
    return parse_benchmark(text)


def cell_of(cells, seed, id_key, training):
    (found,) = [
        c for c in cells if (c.seed, c.id_ref.key, c.training.name) == (seed, id_key, training)
    ]
    return found


def test_the_matrix_is_seed_by_dataset_by_model_by_training_with_an_index_per_seed():
    cells = matrix_cells(bench(), NoFiles(), ENGINE)
    assert [(c.seed, c.id_ref.key, c.model_ref.key, c.training.name, c.index) for c in cells] == [
        (0, "mnist-5k", "small-cnn", "baseline", 0),
        (0, "mnist-5k", "small-cnn", "oe", 1),
        (0, "fashion-mnist", "small-cnn", "baseline", 2),
        (0, "fashion-mnist", "small-cnn", "oe", 3),
        (1, "mnist-5k", "small-cnn", "baseline", 0),
        (1, "mnist-5k", "small-cnn", "oe", 1),
        (1, "fashion-mnist", "small-cnn", "baseline", 2),
        (1, "fashion-mnist", "small-cnn", "oe", 3),
    ]
    assert len({c.key for c in cells}) == len(cells)  # every cell a key of its own
    for cell in cells:
        assert cell.key == canonical_hash(cell.config)
        assert cell.config["seed"] == cell.seed and cell.config["training_version"] == 1
        assert cell.config["fingerprints"]["code"]["engine:training"] == "x"
        assert "model_files" not in cell.config  # no model option names a file


def test_the_same_inputs_give_the_same_key():
    first = matrix_cells(bench(), NoFiles(), ENGINE)
    again = matrix_cells(bench(), NoFiles(), Engine(1, "x"))
    assert [c.key for c in first] == [c.key for c in again]
    # keying a keyed cell again gives it the same configuration and key
    assert keyed(bench(), first[1], NoFiles(), ENGINE).key == first[1].key


def test_a_training_s_configuration_holds_its_init_chain_and_not_its_eval_settings():
    oe = cell_of(matrix_cells(bench(), NoFiles(), ENGINE), 0, "mnist-5k", "oe")
    training = oe.config["training"]
    assert training["objective"] == {"name": "oe", "options": {}}
    assert training["outliers"] == {"name": "photo-crops", "options": {"n": 512}}
    assert training["params"]["lr"] == 0.01 and training["params"]["batch_size"] == 64
    assert training["init"]["objective"]["name"] == "cross-entropy"
    assert training["init"]["init"] is None
    assert "eval_batch_size" not in training["params"]
    # so an eval batch size set for every training changes no key
    keys = [c.key for c in matrix_cells(bench(), NoFiles(), ENGINE)]
    text = TOML.replace("batch_size = 64", "batch_size = 64\neval_batch_size = 32")
    assert [c.key for c in matrix_cells(bench(text), NoFiles(), ENGINE)] == keys


@pytest.mark.parametrize(
    "old, new, paths",
    [
        ("n = 200", "n = 300", ["ood_datasets"]),  # an option of a component
        ("seeds = [0, 1]", "seeds = [0, 2]", ["seed"]),
        ("lr = 0.01", "lr = 0.02", ["training/params/lr"]),
        ("batch_size = 64", "batch_size = 32", ["training/params/batch_size"]),
        ('detectors = ["msp", "energy"]', 'detectors = ["msp"]', ["detectors"]),
    ],
)
def test_a_changed_setting_gives_another_key_and_differences_name_it(old, new, paths):
    before = matrix_cells(bench(), NoFiles(), ENGINE)
    after = matrix_cells(bench(TOML.replace(old, new)), NoFiles(), ENGINE)
    a, b = before[-1], after[-1]  # the last oe cell: its seed differs when seeds change
    assert a.key != b.key
    found = differences(a.config, b.config)
    for path in paths:
        assert any(d == path or d.startswith(path + "/") for d in found), found


def test_a_renamed_label_changes_the_names_and_the_key():
    text = TOML.replace('"energy"]', '{ name = "energy", label = "nrg" }]')
    plain = cell_of(matrix_cells(bench(), NoFiles(), ENGINE), 0, "mnist-5k", "baseline")
    labelled = cell_of(matrix_cells(bench(text), NoFiles(), ENGINE), 0, "mnist-5k", "baseline")
    assert labelled.config["names"]["detectors"] == ["msp", "nrg"]
    assert labelled.config["detectors"] == plain.config["detectors"]  # the same detector
    assert labelled.key != plain.key
    found = differences(plain.config, labelled.config)
    assert "names/detectors" in found
    assert "detectors" not in found


def test_another_engine_or_model_file_gives_another_key():
    cell = matrix_cells(bench(), NoFiles(), ENGINE)[0]
    b = bench()
    other_code = keyed(b, cell, NoFiles(), Engine(1, "y"))
    other_version = keyed(b, cell, NoFiles(), Engine(2, "x"))
    weights = keyed(b, cell, ModelFile("abc"), ENGINE)
    other_weights = keyed(b, cell, ModelFile("abd"), ENGINE)
    keys = {cell.key, other_code.key, other_version.key, weights.key, other_weights.key}
    assert len(keys) == 5
    assert differences(cell.config, other_code.config) == ["fingerprints/code/engine:training"]
    assert differences(cell.config, other_version.config) == ["training_version"]
    assert weights.config["model_files"] == {"path": "abc"}
    assert differences(weights.config, other_weights.config) == ["model_files/path"]


def test_data_files_of_a_source_are_keyed_by_their_content():
    class Files(NoFiles):
        def __init__(self, digest):
            self.digest = digest

        def files(self, kind, ref):
            return [("letters.npz", self.digest)] if ref.name == "letters" else []

    cell = matrix_cells(bench(), NoFiles(), ENGINE)[0]
    one = keyed(bench(), cell, Files("1"), ENGINE)
    two = keyed(bench(), cell, Files("2"), ENGINE)
    assert one.key != two.key != cell.key
    assert differences(one.config, two.config) == ["fingerprints/data/dataset:letters"]
    assert "dataset:letters" not in cell.config["fingerprints"]["data"]


def test_keyed_fills_the_configuration_without_changing_the_cell():
    b = bench()
    blank = replace(matrix_cells(b, NoFiles(), ENGINE)[0], key="", config={})
    filled = keyed(b, blank, NoFiles(), ENGINE)
    assert blank.key == "" and blank.config == {}
    assert filled.config["names"] == {
        "id_dataset": "mnist-5k",
        "model": "small-cnn",
        "training": "baseline",
        "objective": "cross-entropy",
        "outlier_source": "",
        "detectors": ["msp", "energy"],
        "ood_datasets": ["letters"],
    }
    assert filled.config["model"] == Ref("small-cnn", (("width", 8),)).config()


def test_differences_give_nested_paths_and_whole_values():
    a = {"training": {"params": {"lr": 0.1, "epochs": 1}}, "seed": 0, "names": ["x"]}
    b = {"training": {"params": {"lr": 0.2, "epochs": 1}}, "seed": 0, "names": ["y"], "new": 1}
    assert differences(a, b) == ["names", "new", "training/params/lr"]
    assert differences(a, a) == []
    assert differences(1, 2) == ["configuration"]  # not a table: the whole of it
    assert differences({"a": {"b": 1}}, {"a": 2}) == ["a"]
