"""Long runs you can watch and debug: progress bars, --debug tracebacks, chance warnings."""

import os

import pytest
from click.testing import CliRunner

from oebench.bench.parse import parse_benchmark
from oebench.bench.validation import chance_warning
from oebench.cli import cli
from oebench.execute.drive import run_here
from oebench.execute.runner import Progress, Runner
from oebench.hookspecs import hookimpl
from oebench.registry.plugins import get_plugin_manager

SMALL = """
name = "ux-small"
seeds = [0]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 4 }]
detectors = DETECTORS
ood_datasets = [{ name = "letters", n = 100 }, "faces"]

[training]
epochs = 1
max_train = 256
batch_size = 64
lr = 0.05

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""


def small(tmp_path, detectors='["msp"]'):
    path = tmp_path / "small.toml"
    path.write_text(SMALL.replace("DETECTORS", detectors))
    return path


class Recorder(Progress):
    """Records every bar, its total, its steps and status texts, and every log line."""

    def __init__(self):
        self.bars: dict[str, dict] = {}
        self.logs: list[str] = []

    def start(self, description, total):
        bar = self.bars[description] = {"total": total, "done": 0, "status": []}

        def advance(steps=1, status=""):
            bar["done"] += steps
            if status:
                bar["status"].append(status)

        return advance

    def log(self, message):
        self.logs.append(message)


def test_bars_for_training_forward_passes_and_detectors(tmp_path):
    bench = parse_benchmark(small(tmp_path, '["msp", "energy"]').read_text(), "small.toml")
    progress = Recorder()
    run_here(Runner(bench, device="cpu", progress=progress, use_cache=False))
    train = progress.bars["train baseline · seed 0 · small-cnn on mnist-5k"]
    assert train["total"] == train["done"] == 4  # 256 / 64 steps, one epoch
    assert train["status"] and all(s.startswith("loss ") for s in train["status"])
    assert "train acc" in train["status"][-1]
    passes = progress.bars["forward passes [baseline, seed 0]"]
    assert passes["total"] == passes["done"] == 2 and passes["status"] == ["letters", "faces"]
    dets = progress.bars["detectors: fit + score [baseline, seed 0]"]
    assert dets["total"] == dets["done"] == 2 and dets["status"] == ["msp", "energy"]


@pytest.mark.parametrize(
    ("accuracy", "classes", "warned"),
    [(14.0, 10, True), (18.9, 10, True), (19.1, 10, False), (54.0, 2, True), (56.0, 2, False)],
)
def test_chance_warning_threshold(accuracy, classes, warned):
    # chance + a tenth of the way to 100%: 19% for 10 classes, 55% for 2
    assert (chance_warning("m", accuracy, classes) is not None) is warned


def test_near_chance_model_is_warned_about_on_the_command_line(tmp_path):
    path = small(tmp_path)
    path.write_text(path.read_text().replace("lr = 0.05", "lr = 1e-6"))
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "Warning: mnist-5k / small-cnn / baseline / seed 0: ID test accuracy" in result.stderr
    assert "near chance (10.0% for 10 classes)" in result.stderr


class Broken:
    """A detector plugin whose scoring raises deep inside a helper."""

    @staticmethod
    @hookimpl
    def register_detectors(register):
        class Boom:
            needs: frozenset = frozenset()

            def config(self):
                return {}

            def score(self, outputs):
                return _explode()

        register("boom-ux", Boom, description="always fails")


def _explode():
    raise RuntimeError("kaboom")


@pytest.fixture
def broken_plugin():
    pm = get_plugin_manager()
    plugin = Broken()
    pm.register(plugin, name="broken-ux")
    yield
    pm.unregister(plugin)


@pytest.mark.parametrize("flag", ["--debug", "-v"])
def test_debug_prints_the_full_traceback_of_a_failing_plugin(tmp_path, broken_plugin, flag):
    path = small(tmp_path, '["msp", "boom-ux"]')
    quiet = CliRunner().invoke(cli, ["run", str(path)], env={"OEBENCH_DEBUG": ""})
    assert quiet.exit_code == 1 and "RuntimeError: kaboom" in quiet.stderr
    assert "Traceback" not in quiet.stderr and "_explode" not in quiet.stderr
    loud = CliRunner().invoke(cli, [flag, "run", str(path), "--rerun"])
    os.environ.pop("OEBENCH_DEBUG", None)
    assert loud.exit_code == 1
    assert "Traceback (most recent call last)" in loud.stderr and "in _explode" in loud.stderr


def test_hf_progress_bars_are_silenced_inside_ours(monkeypatch):
    from rich.console import Console

    from oebench.core.progress import RichProgress

    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    import datasets

    datasets.enable_progress_bars()
    with RichProgress(Console(stderr=True)):
        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
        assert not datasets.is_progress_bar_enabled()
    datasets.enable_progress_bars()


def _rendered(width, rows, activity=None):
    """The bar lines RichProgress draws at ``width`` columns for ``rows`` of
    (description, total, done, status), with an optional activity line."""
    import contextlib

    from rich.console import Console

    from oebench.core.progress import RichProgress

    console = Console(width=width, record=True, color_system=None, force_terminal=True)
    progress = RichProgress(console)
    for description, total, done, status in rows:
        progress.start(description, total)(done, status)
    with progress.activity(activity) if activity else contextlib.nullcontext():
        for part in progress._bar.get_renderables():  # what the live display draws
            console.print(part)
    return console.export_text().splitlines()


def test_bars_fit_80_columns_cutting_the_description_first_and_keeping_the_eta():
    rows = [
        ("benchmark quickstart", 2, 1, "running oe / seed 0"),
        ("train oe · seed 0 · small-cnn on mnist-5k", 256, 27, "loss 1.394, train acc 63.5%"),
        ("odin: scoring textures", 3, 1, ""),
    ]
    lines = _rendered(80, rows, activity="checking the sizes of the data: photo-crops")
    assert len(lines) == 4 and all(len(line) <= 80 for line in lines)
    train = lines[1]
    assert " 27/256 " in train and "-:--:--" in train  # counts and ETA whole
    assert train.startswith("train oe · seed 0 · ") and "…" in train  # cut at its end
    assert "loss 1.394, train acc 63.5%" in train  # the status is cut after the description
    assert " 1/2 " in lines[0] and "running oe / seed 0" in lines[0]
    assert "checking the sizes of the data" in lines[3] and "0:00:00" in lines[3]  # its time
    wide = _rendered(160, rows)
    assert "train oe · seed 0 · small-cnn on mnist-5k" in wide[1]  # nothing cut when it fits
    assert wide[1].count("0:00:00") == 1 and "-:--:--" in wide[1]  # elapsed time and ETA


def test_track_reports_each_item_once_it_is_done_to_the_running_benchmark():
    import oebench.api
    from oebench.core.progress import reporting_to

    seen = []

    class Steps(Progress):
        def start(self, description, total):
            seen.append(("start", description, total))
            return lambda steps=1, status="": seen.append(("done", steps))

    assert list(oebench.api.track([1, 2], "outside a run")) == [1, 2]  # nothing shown
    with reporting_to(Steps()):
        for item in oebench.api.track(["a", "b"], "my loop"):
            seen.append(("item", item))
    assert seen == [("start", "my loop", 2), ("item", "a"), ("done", 1), ("item", "b"),
                    ("done", 1)]  # fmt: skip
