"""The ``[published]`` table of a benchmark file: parsed, checked, kept out of cell keys."""

import re

import pytest
from conftest import REPO, TINY

from oebench.bench.parse import load_benchmark, parse_benchmark
from oebench.errors import UserError

TABLE = """
[published]
source = "Someone et al. 2024, Table 2"
runs = 5
detector = "msp"
rows = [
    { training = "baseline", ood_dataset = "mean", auroc = 90.5, fpr95 = 30, aupr_out = 70.25 },
    { training = "oe", ood_dataset = "letters", detector = "energy", fpr95 = 12.0, spread = 1.5 },
]
"""


def tiny_with(extra: str) -> str:
    return TINY.read_text() + extra


def problem_lines(text: str) -> list[str]:
    with pytest.raises(UserError) as info:
        parse_benchmark(text, "b.toml")
    message = str(info.value)
    lines = message.splitlines()
    return [line.strip() for line in lines[1:]] if len(lines) > 1 else [message]


def test_published_rows_take_the_table_defaults():
    bench = parse_benchmark(tiny_with(TABLE), "b.toml")
    table = bench.published
    assert table.source == "Someone et al. 2024, Table 2" and table.runs == 5
    first, second = table.rows
    assert (first.training, first.detector, first.ood_dataset) == ("baseline", "msp", "mean")
    assert dict(first.values) == {"auroc": 90.5, "fpr95": 30.0, "aupr_out": 70.25}
    assert first.spread is None and first.model == "" and first.id_dataset == ""
    assert (second.detector, second.spread, dict(second.values)) == ("energy", 1.5, {"fpr95": 12.0})
    assert parse_benchmark(TINY.read_text(), "b.toml").published is None


def test_published_names_must_be_the_files_with_suggestions():
    text = tiny_with(TABLE.replace('training = "baseline"', 'training = "baselin"'))
    with pytest.raises(UserError) as info:
        parse_benchmark(text, "b.toml")
    message = str(info.value)
    assert "\n" not in message  # one problem, one line
    assert message.startswith("b.toml: published.rows[0]: training = 'baselin' is not a training")
    assert "Did you mean: baseline?" in message and "Its trainings: baseline, oe" in message


def test_published_table_problems_are_listed_at_once():
    text = tiny_with(
        """
[published]
sorce = "typo"
detector = "enrgy"
rows = [
    { training = "oe", ood_dataset = "lettters", auroc = 120 },
    { training = "oe", ood_dataset = "mean", aupr = 50.0 },
    { training = "oe", ood_dataset = "mean", detector = "msp", model = "small-cn" },
    { training = "oe", ood_dataset = "mean", detector = "msp", auroc = 50, spread = -1 },
    { training = "oe", ood_dataset = "mean", detector = "msp", auroc = 60 },
]
"""
    )
    lines = problem_lines(text)
    joined = "\n".join(lines)
    assert "[published]: unknown key 'sorce'. Did you mean: source" in joined
    assert "[published]: needs 'source': where the numbers come from" in joined
    bad_default = "[published]: detector = 'enrgy' is not a detector of this benchmark. "
    assert sum(bad_default + "Did you mean: energy?" in line for line in lines) == 1  # once
    assert "published.rows[0]: ood_dataset = 'lettters' is not an OOD set" in joined
    assert "Did you mean: letters" in joined
    assert "published.rows[0]: auroc = 120: must be a number from 0 to 100 (%)" in joined
    assert (
        "published.rows[1]: unknown key 'aupr'. Did you mean: aupr_out? (the OE paper's" in joined
    )
    assert "published.rows[2]: model = 'small-cn' is not a model" in joined
    assert "Did you mean: small-cnn?" in joined
    assert "published.rows[2]: gives no number" in joined
    assert "published.rows[3]: spread = -1" in joined
    assert "published.rows[4] repeats published.rows[3]" in joined
    assert len(lines) == int(re.search(r"(\d+) problems", problem_header(text)).group(1))


def problem_header(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse_benchmark(text, "b.toml")
    return str(info.value).splitlines()[0]


def test_published_group_means_and_labels_are_names_of_the_file():
    text = tiny_with(
        """
[published]
source = "s"
rows = [{ training = "oe", detector = "msp", ood_dataset = "mean:far", auroc = 50 }]
"""
    )
    assert "mean:far" in "\n".join(problem_lines(text))  # no groups in tiny: not a name
    grouped = text.replace(
        'detectors = ["msp", "energy"]',
        'detectors = ["msp", "energy"]\nood_groups = { far = ["faces", "textures"] }',
    )
    assert parse_benchmark(grouped, "b.toml").published.rows[0].ood_dataset == "mean:far"


def test_published_table_must_be_a_table_with_rows():
    assert problem_lines('published = "Table 2"\n' + TINY.read_text())[0].endswith(
        "[published] must be a table: source, runs, rows (see `[[published.rows]]`)"
    )
    lines = problem_lines(tiny_with('[published]\nsource = "s"\nruns = 0\n'))
    assert any("runs = 0" in line for line in lines)
    assert any("needs rows: one [[published.rows]] table per result" in line for line in lines)
    # the [[published.rows]] form is the same table
    text = tiny_with(
        '[published]\nsource = "s"\n\n[[published.rows]]\ntraining = "oe"\ndetector = "msp"\n'
        'ood_dataset = "faces"\nauroc = 99.5\n'
    )
    assert dict(parse_benchmark(text, "b.toml").published.rows[0].values) == {"auroc": 99.5}


def test_published_numbers_are_not_part_of_any_cell_key():
    from oebench.execute.runner import Runner

    plain = parse_benchmark(TINY.read_text(), str(TINY), TINY.parent)
    with_table = parse_benchmark(tiny_with(TABLE), str(TINY), TINY.parent)
    edited = parse_benchmark(tiny_with(TABLE.replace("90.5", "12.5")), str(TINY), TINY.parent)
    keys = [[c.key for c in Runner(b).cells()] for b in (plain, with_table, edited)]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 2
    assert plain.digest != with_table.digest  # the text differs; the cells do not


PAPER_FILES = [
    "oe-cifar10", "oe-cifar100", "oe-svhn", "oe-tinyimagenet", "oe-places365",
    "oe-released-cifar10", "oe-released-cifar100", "oe-released-svhn",
    "oe-20ng", "oe-trec", "oe-sst", "openood-cifar10",
]  # fmt: skip


@pytest.mark.parametrize("name", PAPER_FILES)
def test_paper_benchmarks_carry_their_published_numbers(name):
    bench = load_benchmark(str(REPO / "benchmarks" / f"{name}.toml"))
    table = bench.published
    assert table is not None and table.source
    trainings = {t.name for t in bench.trainings}
    models = {m.key for m in bench.models}
    for row in table.rows:  # parsing checked the names; every row is a real coordinate
        assert row.training in trainings and (not row.model or row.model in models)
    if name.startswith("oe-released"):  # two checkpoints, one evaluation-only training
        assert {r.model for r in table.rows} == models


def readme_expectations() -> dict[str, list[tuple[float, float, float]]]:
    """The README's "Numbers to expect" table: ID -> [(FPR95, AUROC, AUPR) baseline, OE]."""
    text = (REPO / "README.md").read_text()
    found = {}
    section = text.split("Numbers to expect", 1)[1].split("\n\n")[1]  # the table after it
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if "→" not in line:
            continue
        pairs = [tuple(float(v) for v in c.split("→")) for c in cells[1:]]
        found[cells[0]] = [tuple(p[i] for p in pairs) for i in (0, 1)]
    return found


@pytest.mark.parametrize(
    ("name", "readme_id"),
    [("oe-svhn", "SVHN"), ("oe-cifar10", "CIFAR-10"), ("oe-cifar100", "CIFAR-100"),
     ("oe-tinyimagenet", "Tiny ImageNet"), ("oe-places365", "Places365"),
     ("oe-released-cifar10", "CIFAR-10"), ("oe-released-svhn", "SVHN")],
)  # fmt: skip
def test_published_means_agree_with_the_readme(name, readme_id):
    expected = readme_expectations()[readme_id]
    rows = [r for r in load_benchmark(name).published.rows if r.ood_dataset == "mean"]
    assert len(rows) == 2
    for row, (fpr, auroc, aupr) in zip(rows, expected, strict=True):
        assert {"fpr95": fpr, "auroc": auroc, "aupr_out": aupr}.items() <= dict(row.values).items()
