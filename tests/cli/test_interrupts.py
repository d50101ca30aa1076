"""Ctrl-C in a command: what it left behind (counts for a run, else one word) and exit 130."""

from click.testing import CliRunner
from conftest import TINY

from oebench.cli import cli
from oebench.cli.interrupts import (
    RunInterrupted,
    interrupt_from_args,
    interrupt_message,
)


def _ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def _lines(result) -> list[str]:
    assert result.exit_code == 130, result.output
    assert "Aborted!" not in result.stderr and "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_the_message_says_what_is_kept_and_how_to_resume():
    assert interrupt_message(1, 2, "s.sqlite") == (
        "Interrupted: 1 of 2 cells are kept in the results store s.sqlite; "
        "run the same command again to resume."
    )
    assert "0 of ? cells" in interrupt_message(0, None, "s.sqlite")


def test_a_command_other_than_run_says_one_word(monkeypatch):
    monkeypatch.setattr("oebench.core.settings.cache_dir", _ctrl_c)
    assert _lines(CliRunner().invoke(cli, ["cache", "info"])) == ["Interrupted."]


def test_a_run_before_its_benchmark_is_read_counts_what_it_can(monkeypatch, tmp_path):
    monkeypatch.setattr("oebench.bench.parse.load_benchmark", _ctrl_c)
    store = tmp_path / "s.sqlite"
    result = CliRunner().invoke(cli, ["run", str(TINY), "--store", str(store)])
    assert _lines(result) == [
        f"Interrupted: 0 of ? cells are kept in the results store {store}; "
        "run the same command again to resume."
    ]


def test_a_run_whose_benchmark_is_known_counts_its_cells(monkeypatch, tmp_path):
    monkeypatch.setattr("oebench.session.run_session", _ctrl_c)
    result = CliRunner().invoke(cli, ["run", str(TINY), "--store", str(tmp_path / "s")])
    (line,) = _lines(result)
    assert line.startswith("Interrupted: 0 of 2 cells are kept in the results store")


def test_a_command_line_stopped_before_its_command_started(tmp_path):
    assert type(interrupt_from_args(["list", "plugins"])) is KeyboardInterrupt
    store = str(tmp_path / "none.sqlite")
    found = interrupt_from_args(["--debug", "run", "tiny", "--store", store])
    assert isinstance(found, RunInterrupted) and found.store == store
    assert found.counts() == (0, None)  # no store there, no benchmark read
