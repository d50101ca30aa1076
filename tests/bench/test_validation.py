"""Benchmark files are checked whole before any work: one line per problem, exit 2."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY

from oebench.cli import cli
from oebench.hookspecs import hookimpl


@pytest.fixture(autouse=True)
def _no_training(monkeypatch):
    """Any training in these tests is a failure: problems must be found before any work."""

    def train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("oebench.execute.training.train", train)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def bad_file(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = TINY.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def problems(result) -> list[str]:
    """The problem lines of a failed run; asserts exit 2, no traceback and nothing trained."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    if len(lines) == 1:
        return [lines[0].split(": ", 2)[-1]]
    assert lines[0].endswith(f"{len(lines) - 1} problems:"), lines
    return lines[1:]


TRAINING = "[training]\nepochs = 1"
OE_LR = "lr = 0.01\noutlier_batch_size = 256"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("epochs = 1", 'epochs = "1"', '[training]: epochs = "1": Input should be a valid integer'),
        ("batch_size = 128", "batch_size = 0", "batch_size = 0: Input should be greater than or"),
        (OE_LR, "lr = 0.01\noutlier_batch_size = -5", "training 'oe': outlier_batch_size = -5"),
        (OE_LR, "lr = -0.01\noutlier_batch_size = 256", "training 'oe': lr = -0.01: Input should"),
        ("epochs = 1", "epochs = -1", "epochs = -1: Input should be greater than or equal to 1"),
        ("max_train = 1024", "max_train = 0", "max_train = 0: Input should be greater than or"),
        ("batch_size = 128", "batch_size = -5", "batch_size = -5"),
        ("lr = 0.1", "lr = 0.1\nmomentum = 0.0", "nesterov = true needs momentum > 0"),
        ("lr = 0.1", "lr = 0.1\namp = 1", "amp = 1: Input should be 'auto', 'bf16' or 'off'"),
        ("lr = 0.1", "lr = 0.1\naugment = 1", "augment = 1: Input should be a valid boolean"),
        (
            "seeds = [0]",
            "seeds = [-1]",
            "seeds[0] = -1: Input should be greater than or equal to 0",
        ),
        (
            "seeds = [0]",
            "seeds = [9223372036854775808]",
            "less than or equal to 9223372036854775807",
        ),
        ("seeds = [0]", "seeds = [1, 1]", "seeds repeat 1"),
        ("seeds = [0]", 'seeds = [0]\nprotocol = "oe-paper"\nresamples = 0', "resamples = 0"),
        ("seeds = [0]", 'seeds = [0]\nprotocol = "paper"', 'protocol = "paper": Input should be'),
        ('name = "oe"', 'name = "baseline"', "training name(s) 'baseline' used twice"),
        ('"faces",', '"faces", "faces",', "'ood_datasets' lists faces twice; give one a 'label'"),
        ('"faces",', '{ name = "faces", label = "letters" },', "lists letters twice"),
        ("width = 8", 'width = "8"', "model 'small-cnn': width = \"8\": Input should be a valid"),
        ("width = 8", "width = 0", "model 'small-cnn': width = 0: Input should be greater than"),
        ("width = 8", "width = 8, dropout = 1.5", "dropout = 1.5: Input should be less than 1"),
        ('"energy"]', '{ name = "knn", k = "5" }]', "detector 'knn': k = \"5\": Input should be"),
        ('"energy"]', '{ name = "knn", k = 0 }]', "detector 'knn': k must be at least 1, got 0"),
        (
            '"energy"]',
            '{ name = "energy", temp = 5 }]',
            "unknown option 'temp' (did you mean 'temperature'?). Options",
        ),
        ("n = 2048 }", "n = 2.5 }", "outliers 'photo-crops': n = 2.5: Input should be a valid"),
        ('objective = "oe"', 'objective = "0e"', "Unknown objective '0e'"),
        ('outliers = { name = "photo-crops", n = 2048 }\n', "", "needs 'outliers'"),
        ('from = "baseline"', 'from = "nothing"', "must be an earlier training"),
        ("epochs = 1", "epohcs = 1", "[training] has unknown key(s) epohcs"),
    ],
)
def test_each_bad_setting_is_one_line_before_any_work(tmp_path, old, new, expected):
    found = problems(run("run", str(bad_file(tmp_path, (old, new)))))
    assert len(found) == 1 and expected in found[0], found


def test_every_problem_is_listed_at_once(tmp_path):
    path = bad_file(
        tmp_path,
        ("epochs = 1", 'epochs = "1"'),
        ("seeds = [0]", "seeds = [-1]"),
        ('name = "oe"', 'name = "baseline"'),
        (OE_LR, "lr = -0.01\noutlier_batch_size = 256"),
    )
    found = problems(run("run", str(path)))
    assert len(found) == 4, found
    assert any("epochs" in line for line in found) and any("seeds[0]" in line for line in found)


def test_component_problems_are_all_listed(tmp_path):
    path = bad_file(
        tmp_path,
        ("width = 8", 'width = "8"'),
        ('"energy"]', '"enrgy", { name = "knn", k = 0 }]'),
    )
    found = problems(run("run", str(path)))
    assert len(found) == 3, found
    assert "Unknown detector 'enrgy'. Did you mean: energy" in "\n".join(found)


def test_all_missing_datasets_are_named_in_one_message(tmp_path):
    path = bad_file(
        tmp_path, ('"faces",', '"faces", "cifar10", "svhn", { name = "mnist", root = "data" },')
    )
    found = problems(run("run", str(path)))
    assert [line.split(":")[0] for line in found] == [
        "dataset 'cifar10'",
        "dataset 'svhn'",
        "dataset 'mnist'",
    ]
    # the relative root resolves against the benchmark's folder, shown as an absolute path
    assert str(tmp_path / "data") in found[2]


def test_relative_paths_resolve_against_the_file(tmp_path, monkeypatch):
    from oebench.bench.parse import load_benchmark

    (tmp_path / "sub").mkdir()
    path = bad_file(tmp_path, ('"faces",', '{ name = "hf", data_dir = "sub", label = "x" },'))
    monkeypatch.chdir("/")
    bench = load_benchmark(str(path))
    assert bench.ood_datasets[-1].kwargs["data_dir"] == str(tmp_path / "sub")


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_seed_option_out_of_range(seed):
    result = run("run", str(TINY), "--seed", seed)
    assert result.exit_code == 2 and "--seed" in result.stderr and "Traceback" not in result.output


class BrokenSource:
    """A dataset plugin whose files() has a bug."""

    @staticmethod
    @hookimpl
    def register_datasets(register):
        from oebench.contracts.data import ImageSource

        class Buggy(ImageSource):
            def load(self, split, *, shape=None, seed=0):
                raise AssertionError("never reached")

            def files(self):
                raise RuntimeError("bug in files()")

        register("buggy-ux", Buggy)


def test_a_plugin_bug_found_while_checking_is_named_with_the_other_problems(
    tmp_path, oebench_plugin
):
    oebench_plugin(BrokenSource(), "broken-source-ux")
    path = bad_file(tmp_path, ('"faces",', '"faces", "buggy-ux",'), ("epochs = 1", "epochs = 0"))
    found = problems(run("run", str(path)))
    assert len(found) == 2, found
    assert any(
        "dataset 'buggy-ux' (plugin 'broken-source-ux') failed: RuntimeError: bug in files()"
        in line
        for line in found
    )
