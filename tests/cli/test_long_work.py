"""Long commands show what they do from the start, and tables fit 80 columns: `oebench sweep`
shows bars before its first validation cell is done; `oebench list plugins` keeps every name
whole at 80 columns."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from click.testing import CliRunner

from oebench.cli import cli

SWEPT = """
name = "sweep-progress"
seeds = [0]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 4 }]
detectors = ["energy"]
ood_datasets = [{ name = "letters", n = 100 }]

[training]
epochs = 1
max_train = 256
batch_size = 64
lr = 0.05

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""


class _FirstCellDone(Exception):
    """Raised by the recording bars once a (validation) cell has finished."""


class RecordingBars:
    """Stands in for RichProgress: records every bar, step and activity, in order, and stops
    the command when the first cell of a benchmark bar is done."""

    made: list[RecordingBars] = []

    def __init__(self, console):
        self.events: list[tuple] = []
        RecordingBars.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, description, total):
        self.events.append(("start", description, total))

        def advance(steps=1, status=""):
            self.events.append(("advance", description, steps, status))
            if description.startswith("benchmark ") and steps:
                raise _FirstCellDone

        return advance

    @contextlib.contextmanager
    def activity(self, description):
        self.events.append(("activity", description))
        yield

    def log(self, message):
        self.events.append(("log", message))


def test_sweep_shows_its_bars_before_the_first_validation_cell_is_done(tmp_path, monkeypatch):
    import oebench.core.progress

    path = tmp_path / "swept.toml"
    path.write_text(SWEPT)
    monkeypatch.setattr(oebench.core.progress, "RichProgress", RecordingBars)
    RecordingBars.made.clear()
    args = ["sweep", str(path), "--set", "detectors.energy.temperature=1,10", "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, _FirstCellDone), result.output
    assert len(RecordingBars.made) == 1  # one display for the whole sweep
    events = RecordingBars.made[0].events
    assert events[0] == ("activity", "checking the benchmark and every value of "
                         "detectors.energy.temperature")  # fmt: skip
    assert events[1] == ("start", "sweep detectors.energy.temperature", 2)
    assert events[2] == ("advance", "sweep detectors.energy.temperature", 0, "temperature = 1")
    starts = [e[1] for e in events if e[0] == "start"]
    assert "benchmark sweep-progress-validation" in starts
    assert "train baseline · seed 0 · small-cnn on mnist-5k" in starts  # before any cell ends


def _words(text: str) -> set[str]:
    """Every whole word of a rendered table (borders and punctuation dropped)."""
    return {w.strip(",;:") for w in re.split(r"[\s│┃]+", text) if w}


@pytest.mark.parametrize("columns", [80, 200])
def test_list_plugins_keeps_every_name_whole(columns):
    runner = CliRunner()
    shown = runner.invoke(cli, ["list", "plugins"], env={"COLUMNS": str(columns)})
    infos = json.loads(runner.invoke(cli, ["list", "plugins", "--json"]).output)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert max(map(len, lines)) <= columns and "…" not in shown.output
    words = _words(shown.output)
    for info in infos:
        names = [n for found in info["components"].values() for n in found]
        missing = [w for w in [info["name"], *info["hooks"], *names] if w not in words]
        assert not missing, (info["name"], missing)
    assert ("┃ distribution ┃" in shown.output) is (columns == 200)  # a column when it fits
