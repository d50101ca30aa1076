import pytest
from conftest import TINY

from oebench.bench.matrix import Ref
from oebench.bench.parse import load_benchmark, parse_benchmark
from oebench.errors import UserError


def test_quickstart_is_registered_and_parses():
    bench = load_benchmark("quickstart")
    assert bench.name == "quickstart" and bench.source.endswith("quickstart.toml")
    assert [t.name for t in bench.trainings] == ["baseline", "oe"]
    oe = bench.trainings[1]
    assert oe.init == "baseline" and oe.outliers == Ref("photo-crops")
    assert oe.params["epochs"] == 2 and oe.params["batch_size"] == 128  # default inherited


def test_tables_give_options_and_labels():
    bench = load_benchmark(str(TINY))
    assert bench.models[0] == Ref("small-cnn", (("width", 8),))
    text = TINY.read_text().replace('"faces",', '{ name = "faces", label = "lfw" },')
    bench = parse_benchmark(text)
    assert bench.ood_datasets[-1].key == "lfw"
    assert bench.ood_datasets[-1].kwargs == {}


def test_duplicate_entries_need_labels():
    text = TINY.read_text().replace('"faces",', '"faces", "faces",')
    with pytest.raises(UserError, match="lists faces twice"):
        parse_benchmark(text)


def test_oe_from_scratch_drops_the_baseline_start():
    bench = load_benchmark("quickstart")
    scratch = bench.oe_from_scratch()
    oe = scratch.trainings[1]
    assert oe.init is None
    assert oe.params["epochs"] == bench.defaults["epochs"] == 8
    assert oe.params["lr"] == bench.defaults["lr"] == 0.1
    assert oe.params["outlier_batch_size"] == 256
    assert scratch.trainings[0] == bench.trainings[0]
    assert bench.trainings[1].init == "baseline"  # the original is unchanged
