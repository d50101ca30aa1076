"""One model per leaderboard column: versions of a benchmark in one store are shown apart."""

import json

import pytest
from conftest import run_cli, store_record

from oebench.record.schema import METRIC_COLUMNS
from oebench.record.store import ResultStore
from oebench.report.results import leaderboard, load_results

SWEEP = '# sweep: {"chosen": 1, "path": "trainings.oe.objective.lam"}\n'
TEXT = 'name = "quickstart"\n'


def config(training: str, detectors: list[str], lam=None, epochs: int = 1) -> dict:
    """A cell configuration as oebench.keys.cells makes it (fingerprints left out)."""
    base = {"init": None, "objective": {"name": "cross-entropy", "options": {}},
            "outliers": None, "params": {"epochs": 8, "lr": 0.1}}  # fmt: skip
    options = {} if lam is None else {"lam": lam}
    oe = {"init": base, "objective": {"name": "oe", "options": options},
          "outliers": {"name": "photo-crops", "options": {}},
          "params": {"epochs": epochs, "lr": 0.005}}  # fmt: skip
    oods = ["noise", "letters"]
    return {
        "benchmark": "quickstart",
        "seed": 0,
        "id_dataset": {"name": "mnist-5k", "options": {}},
        "model": {"name": "small-cnn", "options": {}},
        "training": base if training == "baseline" else oe,
        "detectors": [{"name": d, "options": {}} for d in detectors],
        "ood_datasets": [{"name": o, "options": {}} for o in oods],
        "protocol": "full",
        "resamples": 10,
        "names": {
            "training": training,
            "id_dataset": "mnist-5k",
            "model": "small-cnn",
            "detectors": detectors,
            "ood_datasets": oods,
        },  # fmt: skip
        "fingerprints": {"code": {}, "data": {}},
    }


def save(store, key, cfg, text, value, accuracy, ece):
    """Store one cell (the real store API) whose every metric is ``value``."""
    training = cfg["names"]["training"]
    record = store_record(
        key,
        benchmark="quickstart",
        benchmark_digest=str(abs(hash(text)))[:16],
        benchmark_text=text,
        training=training,
        objective=cfg["training"]["objective"]["name"],
        outlier_source="photo-crops" if training == "oe" else "",
        id_dataset="mnist-5k",
        model="small-cnn",
        protocol="full",
        cell_index=int(training == "oe"),
        config=json.dumps(cfg),
        plugins="{}",
        recall=0.95,
        fpr_rule="nearest",
    )
    rows = [
        {
            "detector": d,
            "ood_dataset": ood,
            "row_index": 3 * i + j,
            **dict.fromkeys(METRIC_COLUMNS, value),
            "id_accuracy": accuracy,
            "ece": ece,
            "rms_calib_mixed": 30.0,
            "n_id": 10,
            "n_ood": 5,
        }  # fmt: skip
        for i, d in enumerate(cfg["names"]["detectors"])
        for j, ood in enumerate(["noise", "letters", "mean"])
    ]
    assert store.save_cell(record, rows)


@pytest.fixture
def swept_then_run(tmp_path):
    """What `oebench sweep quickstart --set trainings.oe.objective.lam=...` (choosing 1) and
    then `oebench run quickstart --detectors vim,msp` (λ = 0.5, the default) leave."""
    path = tmp_path / "store.sqlite"
    every = ["msp", "energy", "knn", "vim"]
    with ResultStore(path) as store:
        save(store, "b1", config("baseline", every), TEXT + SWEEP, 50.0, 90.0, 5.0)
        save(store, "oe1", config("oe", every, lam=1), TEXT + SWEEP, 70.0, 80.0, 9.0)
        save(store, "b2", config("baseline", ["vim", "msp"]), TEXT, 50.0, 90.0, 5.0)
        save(store, "oe2", config("oe", ["vim", "msp"]), TEXT, 60.0, 85.0, 7.0)
    return path


def test_a_column_holds_one_model_each_version_its_own_group(swept_then_run):
    board = leaderboard(swept_then_run, benchmark="quickstart")
    assert sorted(set(board.benchmark)) == ["quickstart[lam=0.5]", "quickstart[lam=1]"]
    one = board[board.benchmark == "quickstart[lam=1]"].set_index("detector")
    half = board[board.benchmark == "quickstart[lam=0.5]"].set_index("detector")
    assert set(one.index) == {"msp", "energy", "knn", "vim"}
    assert (one.auroc_oe == 70.0).all() and (one.id_accuracy_oe == 80.0).all()
    # the λ = 0.5 group shows its own detectors, with the baseline both versions share
    assert set(half.index) == {"vim", "msp"}
    assert (half.auroc_oe == 60.0).all() and (half.id_accuracy_oe == 85.0).all()
    assert (half.auroc_baseline == 50.0).all()
    # each group is selectable by its label (brackets are not a wildcard class here)
    only = load_results(swept_then_run, benchmark="quickstart[lam=1]")
    assert set(only.cell) == {"b1", "oe1", "b2"}
    assert set(only.benchmark_name) == {"quickstart"}


def test_the_leaderboard_footer_comes_from_the_rows_shown(swept_then_run):
    result = run_cli("leaderboard", "--store", str(swept_then_run), "--benchmark", "quickstart",
                     env={"COLUMNS": "200"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())  # captions wrap at the table's width
    assert "quickstart[lam=1] · mnist-5k · small-cnn · baseline vs oe" in out
    assert "quickstart[lam=0.5] · mnist-5k · small-cnn · baseline vs oe" in out
    one, half = out.index("quickstart[lam=1] · mnist"), out.index("quickstart[lam=0.5] · mnist")
    first, second = sorted([one, half])
    lam1 = out[one : second if one == first else len(out)]
    lam05 = out[half : second if half == first else len(out)]
    assert "baseline 90.00% → oe 80.00%" in lam1 and "→ oe 9.00 / 30.00" in lam1
    assert "baseline 90.00% → oe 85.00%" in lam05 and "→ oe 7.00 / 30.00" in lam05
    assert "shown apart: quickstart[lam=0.5], quickstart[lam=1]" in result.stderr


def test_versions_that_agree_stay_one_table(tmp_path):
    """A comment edited, or the same settings run with fewer detectors: one group."""
    path = tmp_path / "store.sqlite"
    with ResultStore(path) as store:
        save(store, "b1", config("baseline", ["msp", "vim"]), TEXT, 50.0, 90.0, 5.0)
        save(store, "oe1", config("oe", ["msp", "vim"]), TEXT, 70.0, 80.0, 9.0)
        save(store, "oe2", config("oe", ["msp"]), TEXT + "# edited\n", 70.0, 80.0, 9.0)
    board = leaderboard(path)
    assert set(board.benchmark) == {"quickstart"}
    assert set(board.detector) == {"msp", "vim"}


def test_group_labels_name_what_differs():
    from oebench.report.versions import labels, settings_of

    a = settings_of(config("oe", ["msp"], lam=1, epochs=2))
    b = settings_of(config("oe", ["msp"], lam=0.1, epochs=3))
    c = settings_of(config("oe", ["msp"]))
    assert labels([a, b, c]) == ["lam=1,epochs=2", "lam=0.1,epochs=3", "lam=default,epochs=1"]
    assert labels([a, a]) == ["v1", "v2"]  # nothing differs: numbered
