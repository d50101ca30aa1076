"""An unknown key in any table of a benchmark file names every key the table allows and the
nearest one (issue 22, item 2), as unknown names do."""

import pytest
from conftest import TINY

from oebench.bench.matrix import TRAINING_SETTINGS
from oebench.bench.parse import KNOWN_KEYS, TRAINING_KEYS, parse_benchmark
from oebench.bench.validation import ExecutorTable, unknown_keys
from oebench.errors import UserError


def _problems(*edits: tuple[str, str]) -> list[str]:
    text = TINY.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    with pytest.raises(UserError) as exc:
        parse_benchmark(text, "bad.toml")
    message = str(exc.value)
    lines = message.splitlines()
    return [line.strip() for line in lines[1:]] if len(lines) > 1 else [message.split(": ", 1)[1]]


def _allowed(line: str) -> set[str]:
    return set(line.split("; allowed keys: ", 1)[1].split(", "))


def test_a_training_entry_lists_its_keys_and_suggests_the_nearest():
    found = _problems(("lr = 0.01\n", "lr = 0.01\nepoch = 2\n"), ("outliers = {", "outlier = {"))
    (line,) = [f for f in found if "unknown key" in f]
    assert "training 'oe': objective 'oe' needs 'outliers' (an outlier source)" in found
    assert line.startswith(
        "training 'oe': unknown key(s) epoch (did you mean 'epochs'?), "
        "outlier (did you mean 'outliers'?); allowed keys: "
    ), line
    assert _allowed(line) == {*TRAINING_SETTINGS, "name", "objective", "outliers", "from"}


def test_top_level_keys_get_suggestions_and_a_setting_is_sent_to_training():
    found = _problems(
        ('detectors = ["msp", "energy"]', 'detectors = ["msp", "energy"]\ndetector = ["knn"]'),
        ("seeds = [0]", "seeds = [0]\nood_dataset = []\nlr = 0.5"),
    )
    (line,) = [f for f in found if f.startswith("unknown key(s)")]
    assert line.startswith(
        "unknown key(s) detector (did you mean 'detectors'?), lr (a training setting: put it "
        "under [training] or in a [[trainings]] entry), ood_dataset (did you mean "
        "'ood_datasets'?); allowed keys: "
    ), line
    assert _allowed(line) == KNOWN_KEYS


def test_training_defaults_and_executor_tables_suggest_too():
    found = _problems(
        ("max_train = 1024", "max_trian = 1024\nobjective = 'oe'"),
        ("[training]", '[executor]\nname = "local"\nworker = 2\n\n[training]'),
    )
    training = next(f for f in found if f.startswith("[training]"))
    assert training.startswith(
        "[training] has unknown key(s) max_trian (did you mean 'max_train'?), "
        "objective (only in a [[trainings]] entry); allowed keys: "
    ), training
    assert _allowed(training) == set(TRAINING_SETTINGS)
    executor = next(f for f in found if f.startswith("[executor]"))
    assert executor == (
        "[executor] has unknown key(s) worker (did you mean 'workers'?); allowed keys: "
        "address, gpus_per_task, name, shards, workers"
    )
    assert "Extra inputs" not in "\n".join(found)  # pydantic's own words: said once, ours


def test_outlier_sampling_options_suggest_too():
    (line,) = _problems(
        ("lr = 0.01\n", 'lr = 0.01\noutlier_sampling = { name = "ntom", quantil = 0.1 }\n')
    )
    assert line == (
        "training 'oe': outlier_sampling 'ntom' has unknown key(s) quantil (did you mean "
        "'quantile'?); allowed keys: name, pool, quantile, score"
    )


def test_unknown_keys_is_one_line_or_none():
    assert unknown_keys("t: ", {"a": 1}, ["a", "b"]) == []
    assert unknown_keys("t: ", ["zzz"], ["a", "b"]) == ["t: unknown key(s) zzz; allowed keys: a, b"]
    fields = {"name", "workers", "address", "gpus_per_task", "shards"}
    assert set(ExecutorTable.model_fields) == fields
    assert TRAINING_KEYS == ("name", "objective", "outliers", "from")
