"""A table whose cells come from different platforms says so (oebench.report.platforms):
``oebench leaderboard`` and the footer of ``oebench run``, naming each platform."""

from __future__ import annotations

import json

from conftest import TINY, run_cli, store_record, store_rows

from oebench.core.platforms import cell_platform
from oebench.record.store import ResultStore, ScoreArray
from oebench.report.platforms import mixed_platforms, platform_signature

ARRAYS = [ScoreArray("msp", "id", False, [1.0, 2.0]), ScoreArray("msp", "noise", True, [3.0])]
AVX512 = {
    "torch": "2.14.1",
    "device": "cpu",
    "cpu_capability": "AVX512",
    "cpu_vendor": "AuthenticAMD",
}
AVX2 = AVX512 | {"cpu_capability": "AVX2", "cpu_vendor": "GenuineIntel"}


def platform_text(training: dict | None, scoring: dict | None = None) -> str:
    return json.dumps(cell_platform(training, scoring), sort_keys=True)


def store_of(path, baseline: str | None, oe: str | None) -> None:
    """A baseline and an OE cell of one table, with these platforms (JSON text or None)."""
    common = {"config": "{}", "plugins": "{}", "id_dataset": "mnist", "model": "cnn"}
    common |= {"recall": 0.95, "fpr_rule": "nearest", "protocol": "full"}
    with ResultStore(path) as store:
        for key, training, platform, index in (
            ("k1", "baseline", baseline, 0),
            ("k2", "oe", oe, 1),
        ):
            record = store_record(key, training=training, platform=platform, cell_index=index)
            store.save_cell(record | common, store_rows(80.0 - 10 * index), ARRAYS)


def leaderboard_err(path) -> str:
    done = run_cli("leaderboard", "--store", str(path))
    assert done.returncode == 0, done.stderr
    assert "msp" in done.stdout
    return done.stderr


def test_leaderboard_warns_when_one_table_mixes_two_platforms(tmp_path):
    path = tmp_path / "mixed.sqlite"
    store_of(path, platform_text(AVX512), platform_text(AVX2))
    warnings = [line for line in leaderboard_err(path).splitlines() if "platforms" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("Warning: b · mnist · cnn mixes cells from 2 platforms")
    assert "cpu:AVX2 Intel torch 2.14.1 (1 cell)" in warnings[0]
    assert "cpu:AVX512 AMD torch 2.14.1 (1 cell)" in warnings[0]


def test_leaderboard_of_one_platform_or_unrecorded_ones_warns_of_nothing(tmp_path):
    same = tmp_path / "same.sqlite"  # scored elsewhere from a cache: the same weights' bits
    store_of(same, platform_text(AVX512), platform_text(AVX512, None))
    assert "platform" not in leaderboard_err(same)
    older = tmp_path / "older.sqlite"  # cells stored before platforms were recorded
    store_of(older, None, platform_text(AVX2))
    assert "platform" not in leaderboard_err(older)


def test_a_cell_trained_on_one_platform_and_scored_on_another_is_its_own_platform():
    both = cell_platform(AVX512, AVX2)
    assert both["signature"] == "cpu:AVX512 AMD torch 2.14.1; scored on cpu:AVX2 Intel torch 2.14.1"
    place = {"benchmark": "b", "id_dataset": "m", "model": "c"}
    rows = [
        place | {"cell": "k1", "platform": json.dumps(both)},
        place | {"cell": "k2", "platform": platform_text(AVX512)},
    ]
    assert len(mixed_platforms(rows)) == 1
    assert platform_signature("not json") is None and platform_signature(None) is None


def test_run_footer_warns_when_stored_cells_come_from_another_machine(tmp_path):
    store = tmp_path / "run.sqlite"
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cache")}
    first = run_cli("run", str(TINY), "--store", str(store), env=env)
    assert first.returncode == 0, first.stderr
    assert "platforms" not in first.stderr  # one machine, one platform
    with ResultStore(store) as results:  # the baseline as if another machine had stored it
        key = next(k for k in {r["cell"] for r in results.rows()}
                   if results.cell(k)["training"] == "baseline")  # fmt: skip
        record = results.cell(key)
        ours = platform_signature(record["platform"])
        assert ours is not None and ours.startswith(("cpu:", "portable:", "cuda:"))
        record["config"], record["plugins"] = json.dumps(record["config"]), json.dumps({})
        record["platform"] = platform_text(AVX2 | {"torch": "2.0.0"})
        results.save_cell(record, results.rows([key]), results.scores([key])[key], replace=True)
    again = run_cli("run", str(TINY), "--store", str(store), env=env)
    assert again.returncode == 0, again.stderr
    assert "2 of 2 cells came from the results store" in again.stderr
    warning = [line for line in again.stderr.splitlines() if "mixes cells from 2 platforms" in line]
    assert len(warning) == 1
    assert "cpu:AVX2 Intel torch 2.0.0 (1 cell)" in warning[0] and f"{ours} (1 cell)" in warning[0]
