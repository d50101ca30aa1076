"""`oebench show` examples that paste into a benchmark file, plugin text printed as written,
and finding registered benchmarks: `show NAME --toml`, `oebench init`, the file-not-found hint."""

import inspect
import re
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner
from conftest import TINY, run_cli

from oebench.bench.parse import parse_benchmark
from oebench.bench.validation import component_problems
from oebench.cli import cli
from oebench.hookspecs import hookimpl
from oebench.registry.describe import describe
from oebench.registry.plugins import KINDS, get_plugin_manager

#: what only a signature or type mistake says (a placeholder value may fail otherwise)
SIGNATURE = ("unknown option", "Input should", "required positional", "missing", "unexpected")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def pasted(kind: str, example: str) -> str:
    """tiny.toml with a shown example line pasted where it goes."""
    text = TINY.read_text()
    data = tomllib.loads(example)  # the shown lines are TOML as they are
    key, value = next(iter(data.items()))
    line = example.splitlines()[0].split("    #")[0]
    if kind == "objective":
        return text.replace('objective = "oe"', line)
    if kind == "outlier source":
        return text.replace('outliers = { name = "photo-crops", n = 2048 }', line)
    lists = {
        "id_datasets": r'id_datasets = \["mnist-5k"\]',
        "models": r"models = \[.*\]",
        "detectors": r"detectors = \[.*\]",
        "ood_datasets": r"ood_datasets = \[[^]]*\]",
    }
    assert value and re.search(lists[key], text)
    return re.sub(lists[key], line.replace("\\", "\\\\"), text, count=1)


COMPONENTS = [
    (kind, name)
    for kind in KINDS
    if kind != "benchmark"
    for name in sorted(get_plugin_manager().components(kind))
]


@pytest.mark.parametrize(("kind", "name"), COMPONENTS)
def test_every_shown_example_passes_the_option_check_when_pasted(kind, name):
    comp = get_plugin_manager().components(kind)[name]
    desc = describe(comp)
    bench = parse_benchmark(pasted(kind, desc.example), "pasted.toml")
    problems = [p for p in component_problems(bench) if name in p]
    assert not [p for p in problems if any(s in p for s in SIGNATURE)], problems
    refs = {"dataset": bench.ood_datasets + bench.id_datasets, "model": bench.models,
            "detector": bench.detectors}.get(kind)  # fmt: skip
    if refs is None:
        refs = [t.objective if kind == "objective" else t.outliers for t in bench.trainings]
    ref = next(r for r in refs if r is not None and r.name == name)
    positional = (10, (1, 8, 8)) if kind == "model" else ()
    inspect.signature(comp.factory).bind(*positional, **ref.kwargs)  # nothing required left out


def test_labelled_datasets_are_shown_as_id_datasets_too():
    mnist = run("show", "mnist-5k").output
    assert 'id_datasets = [{ name = "mnist-5k"' in mnist
    assert 'ood_datasets = [{ name = "mnist-5k"' in mnist
    letters = run("show", "letters").output
    assert "id_datasets" not in letters and 'ood_datasets = [{ name = "letters"' in letters


def test_required_options_get_placeholders_of_their_type():
    out = run("show", "checkpoint").output
    assert 'models = [{ name = "checkpoint", arch = "<arch>", path = "<path>"' in out
    assert "# set arch, path" in out
    texts = run("show", "fortune-texts").output
    assert 'categories = ["<categories>"]' in texts


def test_plugin_descriptions_keep_their_brackets(oebench_plugin):
    class Plugin:
        @hookimpl
        def register_models(self, register):
            register("bracket-net", lambda num_classes, shape: None,
                     description="needs pip install 'oebench[timm]' [bold]x[/bold]")  # fmt: skip

    oebench_plugin(Plugin())
    out = run("list", "models", "bracket").output
    assert "pip install 'oebench[timm]' [bold]x[/bold]" in " ".join(out.split())
    plugins = run("list", "plugins").output
    assert "bracket-net" in plugins


def test_show_a_benchmark_gives_its_file_and_its_text():
    out = run("show", "quickstart").output
    assert f"File: {Path('benchmarks/quickstart.toml').resolve()}" in " ".join(out.split())
    text = run("show", "quickstart", "--toml")
    assert text.exit_code == 0
    assert text.output == Path("benchmarks/quickstart.toml").read_text()
    assert run("show", "knn", "--toml").exit_code == 2


def test_init_copies_a_registered_benchmark_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "mine.toml"
    first = run_cli("init", "quickstart", str(target))
    assert first.returncode == 0, first.stderr
    assert target.read_text() == Path("benchmarks/quickstart.toml").read_text()
    target.write_text("edited")
    again = run_cli("init", "quickstart", str(target))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "exists; pass --force" in again.stderr and target.read_text() == "edited"
    forced = run_cli("init", "quickstart", str(target), "--force")
    assert forced.returncode == 0 and target.read_text().startswith("# The built-in quickstart")
    unknown = run_cli("init", "quikstart", str(tmp_path / "x.toml"))
    assert unknown.returncode == 2 and "Did you mean: quickstart" in unknown.stderr


def test_a_missing_file_named_like_a_registered_benchmark_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "benchmarks/fashion-mnist.toml")])
    assert result.exit_code == 2
    assert "benchmark file not found" in result.output
    assert "a registered benchmark is named 'fashion-mnist': oebench run fashion-mnist" in (
        result.output
    )


@pytest.mark.parametrize("where", ["a-file/figures", "/proc/oebench-figures"])
def test_plot_into_a_folder_that_cannot_be_made_is_one_line_before_any_work(tmp_path, where):
    (tmp_path / "a-file").write_text("x")
    out = where if where.startswith("/") else str(tmp_path / where)
    result = run_cli("plot", "-o", out, "--store", str(tmp_path / "missing.sqlite"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot write into {out}"), lines
