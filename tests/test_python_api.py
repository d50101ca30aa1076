"""The Python API at the package root: ``oebench.run`` gives what ``oebench run --csv`` writes."""

import dataclasses
import io
import subprocess
import sys

import pandas as pd
import pytest
from conftest import TINY, run_cli

import oebench
from oebench.bench.matrix import Ref
from oebench.core.progress import Progress
from oebench.errors import UserError
from oebench.record.store import ResultStore


def _as_csv(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as read back from CSV text (so that it compares with a --csv file)."""
    return pd.read_csv(io.StringIO(df.to_csv(index=False)))


@pytest.fixture(scope="module")
def cli_csv(tmp_path_factory) -> pd.DataFrame:
    """The tiny benchmark's ``oebench run --csv`` file, read."""
    folder = tmp_path_factory.mktemp("cli")
    cache = tmp_path_factory.getbasetemp() / "oebench-cache"  # the tests' shared cache
    csv, store = str(folder / "r.csv"), str(folder / "s.sqlite")
    out = run_cli(
        "run", str(TINY), "--csv", csv, "--store", store, env={"OEBENCH_CACHE_DIR": str(cache)}
    )
    assert out.returncode == 0, out.stderr
    return pd.read_csv(folder / "r.csv")


def test_run_returns_the_rows_that_run_csv_writes(cli_csv, tmp_path):
    df = oebench.run(TINY, store=tmp_path / "s.sqlite")
    assert df.attrs["failures"] == []
    pd.testing.assert_frame_equal(_as_csv(df), cli_csv)
    assert {"mean", "letters"} <= set(df.ood_dataset)  # per-OOD-set rows and their means
    stored = oebench.load_results(tmp_path / "s.sqlite")
    assert set(stored.cell) and len(stored) == len(df)


def test_a_second_run_is_served_from_the_store_by_name_path_or_value(cli_csv, tmp_path):
    store = tmp_path / "s.sqlite"
    first = oebench.run(str(TINY), store=store)
    bench = oebench.load_benchmark(str(TINY))
    again = oebench.run(bench, store=store, use_cache=False)  # nothing to compute
    pd.testing.assert_frame_equal(_as_csv(again), cli_csv)
    pd.testing.assert_frame_equal(again, first)
    with ResultStore(store, create=False) as s:
        assert s.count() == 2


def test_results_frame_of_stored_rows_is_the_run_frame(tmp_path):
    df = oebench.run(TINY, store=tmp_path / "s.sqlite")
    stored = oebench.results_frame(oebench.load_results(tmp_path / "s.sqlite"))
    pd.testing.assert_frame_equal(_as_csv(stored), _as_csv(df))


class _Exploding(oebench.Detector):
    def score(self, outputs):
        raise ValueError("no scores today")


def test_failures_go_into_the_frame_attrs(tmp_path, oebench_plugin):
    class Plugin:
        @oebench.hookimpl
        def register_detectors(self, register):
            register("exploding", _Exploding)

    oebench_plugin(Plugin(), "exploding-plugin")
    bench = oebench.load_benchmark(str(TINY))
    bench = dataclasses.replace(bench, detectors=[Ref("msp"), Ref("exploding")])
    df = oebench.run(bench, store=tmp_path / "s.sqlite")
    assert set(df.detector) == {"msp"}
    failures = df.attrs["failures"]
    assert len(failures) == 2 and all("no scores today" in m for m in failures)


class _StopAfterFirstCell(Progress):
    """Ctrl-C once the run's first cell is recorded."""

    def start(self, description, total):
        def advance(steps=1, status=""):
            if description.startswith("benchmark ") and steps and status:  # a cell ended
                raise KeyboardInterrupt

        return advance


def test_an_interrupt_is_raised_again_after_the_kept_cells_are_stored(cli_csv, tmp_path):
    store = tmp_path / "s.sqlite"
    with pytest.raises(KeyboardInterrupt, match="1 of 2 cells are kept in the results store"):
        oebench.run(TINY, store=store, progress=_StopAfterFirstCell())
    with ResultStore(store, create=False) as s:
        assert s.count() == 1
    df = oebench.run(TINY, store=store)  # resumes: the stored cell joins the new one
    pd.testing.assert_frame_equal(_as_csv(df), cli_csv)


def test_the_api_is_imported_lazily():
    code = (
        "import sys, inspect, oebench\n"
        "heavy = [m for m in ('torch', 'pandas', 'pydantic') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert inspect.isfunction(oebench.run)\n"
        "for name in ('run', 'load_benchmark', 'load_results', 'results_frame'):\n"
        "    assert name in oebench.__all__ and callable(getattr(oebench, name)), name\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_an_unknown_executor_is_a_user_error():
    with pytest.raises(UserError, match="unknown executor 'spark'"):
        oebench.run(TINY, executor="spark")
