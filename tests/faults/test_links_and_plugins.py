"""Rough cases: links planted while a command runs, plugins that exit, interrupt themselves or
print at import, and a Ctrl-C while a detector is stuck in code Python cannot interrupt."""

from __future__ import annotations

import json
import signal
import sqlite3
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY, run_cli
from stepped import SteppedRun

import oebench
from oebench.cli import cli
from oebench.core.files import atomic_write_file, check_output_file
from oebench.record.store import ResultStore


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


@pytest.fixture
def tiny_store(tmp_path) -> Path:
    """A store holding the tiny benchmark's two cells (trained once, then from the cache)."""
    path = tmp_path / "tiny.sqlite"
    oebench.run(TINY, store=path)
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


# -- links planted between the pre-run check and the write -------------------------------------
def test_write_table_replaces_a_link_planted_after_the_check(tmp_path, victim):
    from oebench.report.text import write_table

    out = tmp_path / "r.csv"
    assert not check_output_file(str(out))  # the check before the run: nothing there
    out.symlink_to(victim)  # planted during the run
    write_table(pd.DataFrame({"a": [1, 2]}), str(out))
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and out.read_text() == "a\n1\n2\n"
    assert _leftovers(tmp_path) == []


def test_an_output_file_swapped_for_a_link_while_written_is_refused(tmp_path, victim):
    """Nothing is opened by name: a link planted at the temporary name is never written
    through, and the swapped file is not renamed into place."""
    out = tmp_path / "fig.png"

    def write(fh) -> None:
        (tmp,) = tmp_path.glob(".fig.png.*.tmp")
        tmp.unlink()
        tmp.symlink_to(victim)
        fh.write(b"mine")

    with pytest.raises(OSError, match="replaced while it was written"):
        atomic_write_file(out, write)
    assert victim.read_text() == "precious" and not out.exists()
    assert list(tmp_path.glob(".fig*")) == []


def test_run_csv_and_score_files_replace_links_planted_during_the_run(
    tmp_path, victim, monkeypatch
):
    import oebench.record.scores as scores
    import oebench.report.groups as groups

    csv, folder = tmp_path / "r.csv", tmp_path / "scores"
    planted: list[Path] = []

    def plant(path: Path) -> None:
        path.symlink_to(victim)
        planted.append(path)

    table, frame = groups.results_table, scores.scores_frame

    def table_then_plant(*args, **kwargs):  # after the run, before the CSV is written
        plant(csv)
        return table(*args, **kwargs)

    def frame_then_plant(meta, arrays):  # a cell's score file is about to be written
        plant(folder / scores.score_file_name(meta))
        return frame(meta, arrays)

    monkeypatch.setattr(groups, "results_table", table_then_plant)
    monkeypatch.setattr(scores, "scores_frame", frame_then_plant)
    store = tmp_path / "s.sqlite"
    result = _invoke("run", str(TINY), "--store", str(store), "--csv", str(csv), "--save-scores",
                     str(folder))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(planted) == 3  # the CSV and both cells' score files
    assert victim.read_text() == "precious"
    assert not any(p.is_symlink() for p in planted)
    assert set(pd.read_csv(csv).training) == {"baseline", "oe"}
    for path in planted:
        if path != csv:
            assert set(pd.read_parquet(path).detector) == {"msp", "energy"}
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_leaderboard_output_replaces_a_link_planted_meanwhile(
    tiny_store, tmp_path, victim, monkeypatch, fmt
):
    import oebench.report.render as render
    import oebench.report.text as text

    out = tmp_path / f"board.{fmt}"
    module, name = (text, "format_table") if fmt == "csv" else (render, "render")
    real = getattr(module, name)

    def plant_then(*args, **kwargs):  # after the command checked -o, before it writes
        if not out.is_symlink():
            out.symlink_to(victim)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, plant_then)
    result = _invoke("leaderboard", "--store", str(tiny_store), "--format", fmt, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and "msp" in out.read_text()
    assert _leftovers(tmp_path) == []


def test_plot_replaces_links_planted_in_its_folder_meanwhile(
    tiny_store, tmp_path, victim, monkeypatch
):
    import oebench.report.plots as plots

    folder = tmp_path / "plots"
    assert _invoke("plot", "--store", str(tiny_store), "-o", str(folder)).exit_code == 0
    names = sorted(p.name for p in folder.glob("*.png"))
    for name in names:
        (folder / name).unlink()
    real, planted = plots.detectors_figure, []

    def plant_then(*args, **kwargs):  # the first figure: after the folder was checked
        if not planted:
            for name in names:
                (folder / name).symlink_to(victim)
                planted.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "detectors_figure", plant_then)
    result = _invoke("plot", "--store", str(tiny_store), "-o", str(folder))
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious" and len(names) >= 3
    for name in names:
        path = folder / name
        assert not path.is_symlink() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _leftovers(tmp_path) == []


# -- plugins that exit, interrupt themselves or print at import ---------------------------------
GOOD = """
import numpy as np
import oebench

class Fine(oebench.Detector):
    def score(self, outputs):
        return -outputs.logits.max(axis=1)

@oebench.hookimpl
def register_detectors(register):
    register('fine', Fine)
"""
HOSTILE = {
    "exits_mod": "import sys\nsys.exit(3)\n",
    "interrupts_mod": "raise KeyboardInterrupt\n",
    "hook_interrupts_mod": (
        "import oebench\n\n@oebench.hookimpl\ndef register_detectors(register):\n"
        "    raise KeyboardInterrupt\n"
    ),
    "command_exits_mod": (
        "import sys, oebench\n\n@oebench.hookimpl\ndef register_commands(cli):\n    sys.exit(4)\n"
    ),
}


def test_plugins_that_exit_or_interrupt_themselves_are_broken_and_the_rest_work(fake_dist):
    site = fake_dist(
        "oebench-hostile",
        {**HOSTILE, "fine_mod": GOOD},
        {name.removesuffix("_mod"): name for name in [*HOSTILE, "fine_mod"]},
    )
    env = {"PYTHONPATH": str(site)}
    result = run_cli("list", "plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    errors = {p["name"]: p["error"] for p in json.loads(result.stdout)}
    assert errors["exits"] == "import failed: SystemExit: 3"
    assert errors["interrupts"] == "import failed: KeyboardInterrupt"
    assert errors["hook_interrupts"] == "hook register_detectors raised KeyboardInterrupt"
    assert errors["command_exits"] == "hook register_commands raised SystemExit: 4"
    assert errors["fine"] is None and errors["logit-detectors"] is None
    for name in HOSTILE:
        assert f"plugin {name.removesuffix('_mod')!r} (oebench-hostile 1.2.3) is broken" in (
            result.stderr
        )
    listed = run_cli("list", "detectors", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert {"fine", "msp"} <= {row["name"] for row in json.loads(listed.stdout)}


PRINTS = """
import oebench
print("hello from a plugin's import")

@oebench.hookimpl
def register_detectors(register):
    print("hello from a plugin's hook")

@oebench.hookimpl
def register_commands(cli):
    print("hello from a plugin's commands")
"""


def test_what_a_plugin_prints_goes_to_stderr_not_into_results(fake_dist, tiny_store):
    args = ("leaderboard", "--store", str(tiny_store), "--format", "csv")
    clean = run_cli(*args)
    site = fake_dist("oebench-chatty", {"chatty_mod": PRINTS}, {"chatty": "chatty_mod"})
    noisy = run_cli(*args, env={"PYTHONPATH": str(site)})
    assert clean.returncode == noisy.returncode == 0, noisy.stderr
    assert noisy.stdout == clean.stdout and "hello" not in noisy.stdout
    assert "hello from a plugin's import" in noisy.stderr
    assert "hello from a plugin's commands" in noisy.stderr


@pytest.mark.parametrize("converts", [False, True])
def test_a_ctrl_c_while_a_plugin_is_imported_still_interrupts(fake_dist, converts):
    """The user's Ctrl-C, not the plugin's: exit 130, even when the plugin's code makes an
    error of its own of the KeyboardInterrupt (as pydantic does while it builds a schema)."""
    source = textwrap.dedent(
        f"""
        import os, time
        try:
            os.write(2, b"importing slowly\\n")  # the Ctrl-C lands after this, in the try
            time.sleep(60)
        except KeyboardInterrupt:
            if {converts}:
                raise RuntimeError("SchemaError: KeyboardInterrupt") from None
            raise
        """
    )
    site = fake_dist("oebench-slow", {"slow_mod": source}, {"slow": "slow_mod"})
    run = SteppedRun(["list", "plugins"], [], {"PYTHONPATH": str(site)}, terminal_sigint=True)
    assert run.wait_line(lambda line: "importing slowly" in line, timeout=120)
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish(timeout=60)
    assert code == 130, err
    assert "Interrupted." in err and "is broken" not in err and "Traceback" not in err


# -- Ctrl-C while a detector is stuck ------------------------------------------------------------
SLEEPS = """
import os, time
import oebench

class Sleepy(oebench.Detector):
    def score(self, outputs):
        if os.path.exists(os.environ["STUCK_FLAG"]):
            os.write(2, b"detector stuck\\n")
            time.sleep(60)
        return -outputs.logits.max(axis=1)

@oebench.hookimpl
def register_detectors(register):
    register('stuck', Sleepy)
"""
# a C loop that releases the GIL and never checks for signals; a helper thread says so once
# the main thread is inside the call (its frame at the CALL instruction), not a moment before
C_LOOP = """
import dis, hashlib, os, sys, threading, time
import oebench

def crunch():
    return hashlib.pbkdf2_hmac("sha256", b"x", b"y", 10**9)

CALL = max(i.offset for i in dis.get_instructions(crunch) if i.opname == "CALL")

def say_when_inside(main):
    while True:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code is crunch.__code__ and frame.f_lasti >= CALL:
            os.write(2, b"detector stuck\\n")
            return
        time.sleep(0.01)

class Crunch(oebench.Detector):
    def score(self, outputs):
        if os.path.exists(os.environ["STUCK_FLAG"]):
            main = threading.get_ident()
            threading.Thread(target=say_when_inside, args=(main,), daemon=True).start()
            crunch()
        return -outputs.logits.max(axis=1)

@oebench.hookimpl
def register_detectors(register):
    register('stuck', Crunch)
"""


@pytest.mark.parametrize("how", ["sleeps", "c-loop"])
def test_the_first_ctrl_c_stops_a_stuck_detector_and_keeps_the_stored_cell(
    fake_dist, tmp_path, how
):
    module = f"stuck_{how.replace('-', '_')}"
    site = fake_dist("oebench-stuck", {module: SLEEPS if how == "sleeps" else C_LOOP},
                     {"stuck": module})  # fmt: skip
    store, flag, scores = tmp_path / "s.sqlite", tmp_path / "flag", tmp_path / "scores"
    env = {"PYTHONPATH": str(site), "STUCK_FLAG": str(flag)}
    args = ["run", str(TINY), "--detectors", "msp,stuck", "--store", str(store)]
    args += ["--save-scores", str(scores), "--csv", str(tmp_path / "r.csv")]
    run = SteppedRun(args, ["stored"], env, terminal_sigint=True)
    assert run.next_step().startswith("stored ")  # the first cell is committed
    before = _cells(store)
    flag.touch()  # the second cell's detector gets stuck
    run.free()
    assert run.wait_line(lambda line: "detector stuck" in line, timeout=300)
    started = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish(timeout=30)
    assert code == 130, err
    assert time.monotonic() - started < 15
    assert "Interrupted: 1 of 2 cells are kept" in err and "Traceback" not in err
    assert _cells(store) == before and len(before) == 1  # intact, nothing half-written
    (parquet,) = scores.glob("*.parquet")
    assert set(pd.read_parquet(parquet).detector) == {"msp", "stuck"}
    csv = tmp_path / "r.csv"  # the cells done, when the run could still show them
    assert not csv.exists() or set(pd.read_csv(csv).training) == {"baseline"}
    assert _leftovers(tmp_path) == []


def _cells(path: Path) -> dict[str, tuple]:
    """Every stored cell: its rows and score arrays, after a check of the whole file."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    with ResultStore(path, create=False) as store:
        rows = store.rows()
        keys = sorted({row["cell"] for row in rows})
        arrays = store.scores(keys)
    return {
        key: (
            json.dumps([row for row in rows if row["cell"] == key], sort_keys=True, default=str),
            [(a.detector, a.dataset, a.scores.tolist()) for a in arrays[key]],
        )
        for key in keys
    }
