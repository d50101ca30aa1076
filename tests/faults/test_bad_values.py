"""Bad values, wherever they come from (the file, the command line, the environment): one
clear line on stderr, exit status 2, no traceback, before any training, within seconds."""

from __future__ import annotations

import math
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import pytest
from annotated_types import Ge
from click.testing import CliRunner
from conftest import TINY, run_cli

from oebench.bench.matrix import DEFAULT_TRAINING, Ref
from oebench.bench.overrides import Overrides, overridden
from oebench.bench.parse import load_benchmark
from oebench.cli import cli
from oebench.errors import UserError
from oebench.hookspecs import hookimpl


@pytest.fixture(autouse=True)
def _no_training(monkeypatch):
    """Any training here is a failure: every mistake must be found before any work."""

    def train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("oebench.execute.training.train", train)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line(result) -> str:
    """The one line of a refused command: exit 2, no traceback, nothing trained."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def tiny_with(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = TINY.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def refused_in_seconds(*args: str, env: dict | None = None) -> str:
    """The one stderr line of a refused CLI run in a subprocess, which took under 10 s."""
    start = time.monotonic()
    result = run_cli(*args, env=env, timeout=60)
    took = time.monotonic() - start
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert took < 10, f"took {took:.1f} s"
    return lines[0]


# -- command-line values: the rules of the file's values --------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nan", "--recall nan: Input should be a finite number"),
        ("inf", "--recall inf: Input should be a finite number"),
        ("1", "--recall 1.0: Input should be less than 1"),
        ("0", "--recall 0.0: Input should be greater than 0"),
    ],
)
def test_bad_recall_on_the_command_line_is_refused_like_the_files(value, expected):
    assert one_line(invoke("run", str(TINY), "--recall", value)) == f"Error: {expected}"


def test_nan_recall_in_the_file_is_refused_too(tmp_path):
    path = tiny_with(tmp_path, ('name = "tiny"', 'name = "tiny"\nrecall = nan'))
    assert "recall = nan: Input should be a finite number" in one_line(invoke("run", str(path)))


def test_overrides_check_the_resulting_benchmark_once():
    bench = load_benchmark(str(TINY))
    with pytest.raises(UserError, match=r"^--recall nan: Input should be a finite number$"):
        overridden(bench, Overrides(recall=math.nan))
    assert overridden(bench, Overrides(recall=0.9)).recall == 0.9
    assert overridden(bench, Overrides()) is bench
    python_built = replace(bench, resamples=0)  # a Benchmark made in Python: its own problem
    with pytest.raises(UserError, match="resamples = 0: Input should be greater than"):
        overridden(python_built, Overrides(recall=0.9))


@pytest.mark.parametrize("patterns", [",,,", "", " , "])
def test_detectors_option_without_a_pattern_is_an_error(patterns):
    line = one_line(invoke("run", str(TINY), "--detectors", patterns))
    assert f"--detectors {patterns!r} names no detector" in line


# -- files that are not text ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            bytes([0xFB, 0xFF, 0x81, 0x10]) * 64,
            "not UTF-8 text (byte 0xfb at offset 0); a benchmark file is TOML, which is UTF-8",
        ),
        (b'name = "x"\x00\n', "not a text file (a NUL byte at offset 10); give a TOML file"),
    ],
)
def test_a_binary_benchmark_file_is_one_line(tmp_path, content, expected):
    path = tmp_path / "garbage.toml"
    path.write_bytes(content)
    assert refused_in_seconds("run", str(path)) == f"Error: {path}: {expected}"


def test_windows_newlines_read_as_before(tmp_path):
    path = tmp_path / "crlf.toml"
    path.write_bytes(TINY.read_bytes().replace(b"\n", b"\r\n"))
    assert load_benchmark(str(path)).text == TINY.read_text()


# -- training settings: finite floats, bounded integers ----------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("epochs = 1", "epochs = 1e18", "epochs = 1e+18: Input should be a valid integer"),
        ("epochs = 1", "epochs = 100001", "epochs = 100001: Input should be less than or equal"),
        ("lr = 0.1", "lr = inf", "lr = inf: Input should be a finite number"),
        ("lr = 0.1", "lr = nan", "lr = nan: Input should be a finite number"),
        ("lr = 0.1", "lr = 0.1\nweight_decay = nan", "weight_decay = nan: Input should be a fin"),
        ("lr = 0.1", "lr = 0.1\nweight_decay = inf", "weight_decay = inf: Input should be a fin"),
        ("lr = 0.1", "lr = 0.1\nmomentum = nan", "momentum = nan: Input should be a finite"),
        ("batch_size = 128", "batch_size = 1000000000", "batch_size = 1000000000: Input should"),
        ("max_train = 1024", "max_train = 10000000000000", "max_train = 10000000000000: Input"),
        ("lr = 0.1", "lr = 0.1\nthreads = 100000", "threads = 100000: Input should be less"),
    ],
)
def test_training_settings_have_sane_bounds(tmp_path, old, new, expected):
    assert expected in one_line(invoke("run", str(tiny_with(tmp_path, (old, new)))))


def test_oe_training_settings_are_checked_alike(tmp_path):
    path = tiny_with(tmp_path, ("lr = 0.01", "lr = 0.01\nepochs = 1e18"))
    assert "training 'oe': epochs = 1e+18" in one_line(invoke("run", str(path)))


def test_the_default_training_is_unchanged_and_within_its_bounds():
    from oebench.bench.validation import TrainingSettings

    assert DEFAULT_TRAINING["epochs"] == 6 and DEFAULT_TRAINING["lr"] == 0.1
    TrainingSettings.model_validate(DEFAULT_TRAINING)


# -- component options whose meaninglessness the file shows ------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"energy"]', '{ name = "energy", temperature = 0 }]', "temperature = 0: Input should be"),
        ('"energy"]', '{ name = "energy", temperature = -1.5 }]', "temperature = -1.5: Input"),
        ('"energy"]', '{ name = "energy", temperature = nan }]', "temperature = nan: NaN is not"),
        ('"energy"]', '{ name = "energy", temperature = inf }]', "temperature = inf: Input should"),
        ('"energy"]', '{ name = "odin", temperature = 0 }]', "temperature must be positive"),
        ('"energy"]', '{ name = "knn", k = 0 }]', "k must be at least 1, got 0"),
        ('"energy"]', '{ name = "nnguide", k = -3 }]', "k must be at least 1, got -3"),
        ("n = 300 }", "n = 0 }", "dataset 'gaussian-pixel': n = 0: Input should be greater than"),
        ("n = 300 }", "n = -1 }", "dataset 'gaussian-pixel': n = -1: Input should be greater"),
        ("n = 300 }", "n = 10000000 }", "n = 10000000: Input should be less than or equal to"),
        ('"letters", n = 300', '"letters", n = 0', "dataset 'letters': n = 0: Input should be"),
        ('"textures", n = 300', '"textures", n = -1', "dataset 'textures': n = -1: Input should"),
        ('"textures", n = 300', '"textures", min_frac = 0.0', "min_frac = 0.0: Input should be"),
        ('"photo-crops", n = 2048', '"photo-crops", n = 0', "outliers 'photo-crops': n = 0: Input"),
        ("width = 8", "width = 0", "model 'small-cnn': width = 0: Input should be greater than"),
        ("width = 8", "width = 100000000", "width = 100000000: Input should be less than or"),
    ],
)
def test_meaningless_option_values_are_refused(tmp_path, old, new, expected):
    assert expected in one_line(invoke("run", str(tiny_with(tmp_path, (old, new)))))


def test_annotated_ranges_are_read(oebench_plugin):
    """``Annotated[int, Ge(1)]`` (or pydantic's ``Field(ge=1)``) on a factory's parameter is a
    range the option checker applies (``get_type_hints`` keeps it: ``include_extras``)."""
    from oebench.registry.lookup import get_component
    from oebench.registry.options import option_problems

    def factory(n: Annotated[int, Ge(1)] | None = None, t: float = 1.0):
        raise AssertionError("not called")

    class Plugin:
        @staticmethod
        @hookimpl
        def register_detectors(register):
            register("ranged-bv", factory)

    oebench_plugin(Plugin(), "ranged-bv")
    comp = get_component("detector", "ranged-bv")
    assert option_problems(comp, {"n": 3, "t": 2}, "d") == []
    assert option_problems(comp, {"n": None}, "d") == []
    assert option_problems(comp, {"n": 0}, "d") == [
        "d: n = 0: Input should be greater than or equal to 1"
    ]
    assert option_problems(comp, {"t": math.inf}, "d") == [
        "d: t = inf: Input should be a finite number"
    ]


def test_an_outlier_source_with_no_images_is_refused(tmp_path):
    old = 'outliers = { name = "photo-crops", n = 2048 }'
    path = tiny_with(tmp_path, (old, 'outliers = { name = "tiny-images-80m", n = 0 }'))
    assert "outliers 'tiny-images-80m': n = 0: Input should be greater than" in one_line(
        invoke("run", str(path))
    )


# -- values that depend on the data's sizes: checked once the splits are loaded ----------------
def test_k_larger_than_the_id_training_set_is_refused_before_training(tmp_path, monkeypatch):
    # a cache of its own: with every cell's weights noted (a warm run), no split is loaded
    # before work, and knn's own check reports it when it is fitted
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    path = tiny_with(tmp_path, ('"energy"]', '{ name = "knn", k = 5000 }]'))
    line = one_line(invoke("run", str(path)))
    assert "detector 'knn' needs at least 5000 ID training samples, but 'mnist-5k' has 4000" in line


class CappedSet:
    """An OOD set of 20 images whose ``n`` takes all of them when it is larger (as folders do)."""

    @staticmethod
    @hookimpl
    def register_datasets(register):
        import torch

        from oebench.contracts.data import ImageSource, TensorImages

        class Capped(ImageSource):
            shape = (1, 28, 28)

            def __init__(self, n: int | None = None):
                self.n = n

            def load(self, split, *, shape=None, seed=0):
                count = 20 if self.n is None else min(self.n, 20)
                return TensorImages(torch.full((count, *(shape or self.shape)), 0.5))

        register("capped-bv", Capped)


def test_an_ood_sets_n_larger_than_the_set_is_refused_before_training(tmp_path, oebench_plugin):
    oebench_plugin(CappedSet(), "capped-bv")
    path = tiny_with(tmp_path, ('"faces",', '"faces", { name = "capped-bv", n = 50 },'))
    line = one_line(invoke("run", str(path)))
    assert "dataset 'capped-bv': n = 50, but its test split has only 20 images" in line


def test_size_problems_ask_only_for_the_sizes_they_need():
    from oebench.bench.validation import size_problems

    bench = load_benchmark(str(TINY))
    asked: list[str] = []

    def size(ref: Ref) -> int:
        asked.append(ref.key)
        return 300

    assert size_problems(bench, size, size) == []  # msp, energy need no training samples
    assert asked == ["gaussian-pixel", "letters", "textures"]  # the OOD sets with an `n`
    knn = replace(bench, detectors=[Ref("knn", (("k", 10),))], ood_datasets=[Ref("faces")])
    assert size_problems(knn, lambda ref: 9, size) == [
        "detector 'knn' needs at least 10 ID training samples, but 'mnist-5k' has 9"
    ]
    assert size_problems(knn, lambda ref: None, size) == []  # unknown: the cell says


# -- where a run reads and computes ------------------------------------------------------------
def test_a_missing_checkpoint_is_named_before_any_data_is_read(tmp_path, monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("data read")

    monkeypatch.setattr("oebench.execute.sources.Sources.load", load)
    model = '{ name = "checkpoint", arch = "small-cnn", path = "no/such/weights.pt" }'
    path = tiny_with(tmp_path, ('{ name = "small-cnn", width = 8 }', model))
    line = one_line(invoke("run", str(path)))
    expected = "model 'checkpoint': path = \"no/such/weights.pt\": no such file no/such/weights.pt"
    assert expected in line


def test_device_cuda_without_a_gpu_is_refused_before_any_data(monkeypatch):
    import torch

    def load(*args, **kwargs):
        raise AssertionError("data read")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("oebench.execute.sources.Sources.load", load)
    monkeypatch.setattr("oebench.execute.runner.Runner.validate", load)
    line = one_line(invoke("run", str(TINY), "--device", "cuda"))
    assert line == "Error: --device cuda: no CUDA device is available here; use --device cpu"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_dask_address_is_refused_at_once():
    address = f"tcp://127.0.0.1:{_closed_port()}"
    line = refused_in_seconds("run", str(TINY), "--executor", "dask", "--address", address)
    assert line.startswith(f"Error: cannot reach the Dask scheduler at {address} (127.0.0.1:")


def test_address_check_skips_what_names_no_tcp_host():
    from oebench.execute.executors import check_address

    check_address("ray", "auto")
    check_address("dask", "inproc://whatever")
    with pytest.raises(UserError, match="not an address"):
        check_address("dask", "tcp://127.0.0.1:port")


@pytest.mark.parametrize("where", ["/dev/null", "file", "file/below"])
def test_a_data_root_that_is_not_a_folder_is_refused(tmp_path, where):
    (tmp_path / "file").write_text("x")
    root = where if where.startswith("/") else str(tmp_path / where)
    result = invoke("run", str(TINY), "--data-root", root)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "is a file" in result.stderr or f"the data root {root} must be a folder" in result.stderr


def test_a_data_root_from_the_environment_is_checked_too(monkeypatch):
    import oebench

    monkeypatch.setenv("OEBENCH_DATA_ROOT", "/dev/null")
    with pytest.raises(UserError, match="the data root /dev/null must be a folder"):
        oebench.run(TINY)


# -- sweeps: every value before the first training -------------------------------------------
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("detectors.energy.temperature=1,nan", "temperature = nan: NaN is not a number"),
        ("detectors.energy.temperature=1,0", "temperature = 0: Input should be greater than 0"),
        ("trainings.oe.lr=0.1,inf", "--set trainings.oe.lr=inf: training 'oe': lr = inf: Input"),
        ("trainings.oe.epochs=1,1e18", "training 'oe': epochs = 1e+18: Input should be a valid"),
    ],
)
def test_sweep_values_are_checked_before_the_first_training(setting, expected):
    assert expected in one_line(invoke("sweep", str(TINY), "--set", setting))


def test_sweep_holdout_nan_is_refused():
    result = invoke("sweep", str(TINY), "--set", "trainings.oe.lr=0.1", "--holdout", "nan")
    assert result.exit_code == 2 and "'--holdout': nan is not a number" in result.stderr
