"""``--workers N`` with the local executor: N cells at once on one device, as processes, with
the same CSV as one at a time; an N whose memory estimate does not fit is one line, first."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import run_cli

from oebench.errors import UserError
from oebench.execute.memory import check_fits, fmt_size, parse_size, training_peak

#: two cells (2 seeds x 1 training), seconds each
TOML = """
name = "shared-device"
seeds = [0, 1]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 8 }]
detectors = ["msp", "energy"]
ood_datasets = [{ name = "gaussian-pixel", n = 200 }, { name = "letters", n = 200 }]

[training]
epochs = 1
max_train = 512
batch_size = 128
lr = 0.1

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[int, str, Path]:
    bench = tmp_path / "bench.toml"
    bench.write_text(TOML)
    env = {
        "OEBENCH_CACHE_DIR": str(tmp_path / f"cache-{name}"),
        "OEBENCH_STORE": str(tmp_path / f"{name}.sqlite"),
    }
    csv = tmp_path / f"{name}.csv"
    result = run_cli("run", str(bench), "--csv", str(csv), *extra, env=env)
    return result.returncode, result.stderr, csv


def test_two_processes_on_one_device_give_the_same_csv_as_one(tmp_path):
    code, err, one = _run(tmp_path, "one", "--workers", "1")
    assert code == 0, err[-3000:]
    code, err, two = _run(tmp_path, "two", "--workers", "2")
    assert code == 0, err[-3000:]
    assert two.read_bytes() == one.read_bytes()  # the long CSV has no timing columns
    assert len(one.read_text().splitlines()) == 1 + 2 * 2 * 3  # seeds x detectors x (2 + mean)


def test_workers_that_cannot_fit_are_refused_in_one_line_before_any_work(tmp_path):
    start = time.monotonic()
    code, err, csv = _run(tmp_path, "full", "--workers", "2", "--memory-limit", "1MB")
    seconds = time.monotonic() - start
    assert code == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "needs about" in errors[0] and "at its peak" in errors[0]  # not even one cell fits
    assert "1.00 MiB is available on cpu" in errors[0] and "raise --memory" in errors[0]
    assert not csv.exists()
    assert not list((tmp_path / "cache-full").rglob("*.pt"))  # nothing trained
    print(f"refused in {seconds:.1f} s")


def test_the_estimate_grows_with_the_batch_and_names_the_largest_n_that_fits():
    import torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip
    params = sum(p.numel() for p in net.parameters()) * 4
    small, large = training_peak(net, (3, 8, 8), 1), training_peak(net, (3, 8, 8), 101)
    assert small >= 3 * params  # weights, gradients, momentum
    per_image = (large - small) / 100
    assert per_image >= 3 * 8 * 8 * 4  # at least the input saved by the first conv
    assert parse_size("1MB") == parse_size("1MiB") == 2**20
    assert parse_size("1.5g") == 3 * 2**29 and parse_size("4096") == 4096
    with pytest.raises(UserError, match="not a size"):
        parse_size("lots")
    assert fmt_size(3 * 2**30) == "3.00 GiB"


def test_check_fits_counts_each_distinct_training_once(monkeypatch):
    import oebench.execute.memory as memory

    calls = []
    monkeypatch.setattr(memory, "cell_peak", lambda s, c: calls.append(c) or 100)
    monkeypatch.setattr(memory, "process_overhead", lambda device: 0)

    class Ref:
        key = "x"

    class Training:
        settings = ()

    class Cell:
        key = "cell"
        model_ref = id_ref = Ref()
        training = Training()

    assert check_fits(None, [Cell(), Cell()], 3, "cpu", limit=300) == (100, 300)
    assert len(calls) == 1
    with pytest.raises(UserError, match=r"largest number that fits is 2 \(--workers\)"):
        check_fits(None, [Cell()], 3, "cpu", limit=299)
