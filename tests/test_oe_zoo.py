"""The OE zoo benchmark: every method in it, with its citation and options in `oebench show`."""

import re

import pytest
from click.testing import CliRunner

from oebench.bench.parse import load_benchmark
from oebench.cli import cli

ZOO = load_benchmark("oe-zoo")
METHODS = sorted({t.objective.name for t in ZOO.trainings} - {"cross-entropy"})
#: the issue's methods and the OE family already there, as objectives or mining rules
EXPECTED = {"oe", "energy-margin", "mixoe", "logitnorm", "doe", "divoe", "dal", "woods",
            "scone", "vos", "npos", "mcd", "udg"}  # fmt: skip


def test_the_zoo_has_every_method_two_sources_and_two_seeds():
    assert set(METHODS) >= EXPECTED
    sampling = {dict(t.params).get("outlier_sampling", {}).get("name") for t in ZOO.trainings}
    assert {"ntom", "poem"} <= sampling
    assert len(ZOO.seeds) >= 2
    families: dict[str, set[str]] = {}
    for t in ZOO.trainings:
        if t.outliers is not None:
            families.setdefault(t.family or t.name, set()).add(t.source)
    assert families and all(len(s) == 2 for s in families.values()), families
    assert all(t.init == "baseline" for t in ZOO.trainings if t.name != "baseline")


def test_the_cifar_zoo_parses_with_the_same_methods():
    cifar = load_benchmark("oe-zoo-cifar10")

    def families(bench):
        return [t.family or t.name for t in bench.trainings]

    assert {t.objective.name for t in cifar.trainings} == set(METHODS) | {"cross-entropy"}
    assert families(cifar) == families(ZOO)


@pytest.mark.parametrize("name", [*METHODS, "wild", "noise", "fractal-mix", "tin597"])
def test_show_gives_the_citation_and_options(name):
    out = CliRunner().invoke(cli, ["show", name])
    assert out.exit_code == 0, out.output
    if name not in ("wild", "noise", "fractal-mix", "tin597"):
        assert re.search(r"Citation: .*(19|20)\d\d", out.output), out.output
    assert "option" in out.output, out.output
