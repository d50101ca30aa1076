"""``oebench run --plan``: the task list before any work, what is stored, the memory estimate;
nothing is trained or stored."""

from __future__ import annotations

from conftest import run_cli

BENCH = """
name = "plan"
seeds = [0, 1]
ensemble = true
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 8 }]
detectors = ["msp"]
ood_datasets = [{ name = "letters", n = 200 }]

[training]
epochs = 1
max_train = 256
batch_size = 64
lr = 0.06

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
outliers = { name = "photo-crops", n = 256 }
from = "baseline"
outlier_batch_size = 64
"""


def test_plan_lists_every_task_and_runs_nothing(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(BENCH)
    cache = tmp_path / "cache"
    env = {"OEBENCH_CACHE_DIR": str(cache), "OEBENCH_STORE": str(tmp_path / "s.sqlite"),
           "COLUMNS": "220"}  # fmt: skip
    result = run_cli("run", str(path), "--plan", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "plan: 8 tasks, in run order" in out  # 4 cells, 2 train tasks, 2 ensembles
    assert "oe / seed 1" in out and "baseline / ensemble" in out and "train" in out
    assert "6 of 6 cells to run (0 stored)" in " ".join(out.split())
    assert "MiB" in out and "Nothing was run." in " ".join(out.split())
    assert not list(cache.rglob("*.pt")) and not (tmp_path / "s.sqlite").exists()
    run = run_cli("run", str(path), env=env)
    assert run.returncode == 0, run.stderr
    again = run_cli("run", str(path), "--plan", env=env)
    assert "0 of 6 cells to run (6 stored)" in " ".join(again.stdout.split())
