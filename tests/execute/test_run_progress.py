"""What a run shows while it works: bars named by training and seed, the benchmark's bar
naming the cell that runs now, a line for each step before the first bar, per-batch bars of
the detectors that run the model (ODIN), and a resumed training named in words."""

from __future__ import annotations

import contextlib

import pytest

from oebench.bench.parse import parse_benchmark
from oebench.core.progress import Progress
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner

BENCH = """
name = "progress-run"
seeds = [0]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 4 }]
detectors = ["msp", "odin"]
ood_datasets = [{ name = "letters", n = 250 }]

[training]
epochs = EPOCHS
max_train = 256
batch_size = 64
lr = 0.05
eval_batch_size = 100

[[trainings]]
name = "baseline"
objective = "cross-entropy"
TRAININGS
"""

OE = """
[[trainings]]
name = "oe"
objective = "oe"
outliers = { name = "photo-crops", n = 256 }
from = "baseline"
lr = 0.01
outlier_batch_size = 64
"""


def bench(epochs: int = 1, oe: bool = True):
    text = BENCH.replace("EPOCHS", str(epochs)).replace("TRAININGS", OE if oe else "")
    return parse_benchmark(text, "progress-run.toml")


class Events(Progress):
    """Every bar, step, activity and log line, in the order they happened."""

    def __init__(self, stop=None):
        self.events: list[tuple] = []
        self.stop = stop  # (description, done) at which to raise KeyboardInterrupt

    def start(self, description, total):
        self.events.append(("start", description, total))
        done = 0

        def advance(steps=1, status=""):
            nonlocal done
            done += steps
            self.events.append(("advance", description, steps, status))
            if self.stop is not None and (description, done) == self.stop:
                raise KeyboardInterrupt

        return advance

    @contextlib.contextmanager
    def activity(self, description):
        self.events.append(("activity", description))
        yield

    def log(self, message):
        self.events.append(("log", message))

    def bar(self, description) -> tuple[int, list[int]]:
        """A bar's total and its steps."""
        total = next(e[2] for e in self.events if e[:2] == ("start", description))
        steps = [e[2] for e in self.events if e[:2] == ("advance", description)]
        return total, steps


@pytest.fixture(scope="module")
def run_events(tmp_path_factory):
    """One run of BENCH (baseline, then OE from it; msp and odin) with recorded progress."""
    progress = Events()
    root = tmp_path_factory.mktemp("progress-cache")
    run_here(Runner(bench(), device="cpu", progress=progress, cache_root=root))
    return progress


def test_training_bars_are_named_by_training_and_seed(run_events):
    starts = [e[1] for e in run_events.events if e[0] == "start" and e[1].startswith("train")]
    assert starts == [
        "train baseline · seed 0 · small-cnn on mnist-5k",
        "train oe · seed 0 · small-cnn on mnist-5k",
    ]


def test_the_benchmark_bar_names_the_cell_that_runs_not_the_last_one_done(run_events):
    events = run_events.events
    said = ""  # the benchmark bar's status when each training starts
    when = {}
    for e in events:
        if e[:2] == ("advance", "benchmark progress-run") and e[3]:
            said = e[3]
        if e[0] == "start" and e[1].startswith("train "):
            when[e[1].split(" · ")[0]] = said
    assert when == {"train baseline": "training baseline", "train oe": "running oe"}
    assert run_events.bar("benchmark progress-run") == (2, [0, 0, 0, 1, 1])  # 0: none stored
    assert [e[3] for e in events if e[:2] == ("advance", "benchmark progress-run")][-1] == "done"


def test_every_step_before_the_first_bar_is_named(run_events):
    events = run_events.events
    first_bar = next(i for i, e in enumerate(events) if e[0] == "start")
    before = [e[1] for e in events[:first_bar] if e[0] == "activity"]
    assert before[0] == "checking the benchmark: names, options, data files"
    assert "keying the cells: code and data fingerprints" in before
    assert "checking the sizes of the data: letters test" in before  # its n against its size
    assert "building the models" in before


def test_odin_reports_every_batch_it_scores(run_events):
    # 1000 ID test images and 250 letters in batches of 100, for each of the two models
    events = run_events.events
    for name, total in (("mnist-5k", 10), ("letters", 3)):
        description = f"odin: scoring {name}"
        assert [e[2] for e in events if e[:2] == ("start", description)] == [total, total]
        assert run_events.bar(description)[1] == [1] * 2 * total  # one step per batch
    assert not any(e[1].startswith("msp:") for e in events if e[0] == "start")


def test_a_resumed_training_is_named_by_training_and_seed(tmp_path, capsys):
    # 4 steps per epoch: a Ctrl-C at step 6 is in the second epoch, after the first's save
    label = "train baseline · seed 0 · small-cnn on mnist-5k"
    stopped = Events(stop=(label, 6))
    with pytest.raises(KeyboardInterrupt):
        run_here(Runner(bench(2, oe=False), device="cpu", progress=stopped, cache_root=tmp_path))
    capsys.readouterr()
    run_here(Runner(bench(2, oe=False), device="cpu", progress=Events(), cache_root=tmp_path))
    err = capsys.readouterr().err
    assert (
        "oebench: resuming the training 'baseline' of small-cnn on mnist-5k, seed 0 after epoch 1"
        in err
    )
