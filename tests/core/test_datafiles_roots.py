"""An explicit ``root`` that does not exist is an error, never silently replaced by the data
root's or the system's copy of the data (issue 22, item 1)."""

from pathlib import Path

import pytest

from oebench.bench.parse import parse_benchmark
from oebench.bench.validation import check_benchmark
from oebench.core.datafiles import find_dir
from oebench.errors import DataNotFoundError, UserError

MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """A data root holding MNIST's files (names only: nothing here reads them) and the 300K
    Random Images file: where a missing ``root`` used to fall back to."""
    root = tmp_path / "data-root"
    for name in MNIST_FILES:
        path = root / "MNIST" / "raw" / f"{name}.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (root / "300K_random_images.npy").write_bytes(b"")
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(root))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    return root


def test_a_missing_root_is_an_error_even_where_another_copy_exists(tmp_path, data_root):
    system = tmp_path / "system"
    system.mkdir()
    (system / "a.bin").write_bytes(b"x")
    (data_root / "a.bin").write_bytes(b"x")
    gone = tmp_path / "nonexistent"
    with pytest.raises(DataNotFoundError) as exc:
        find_dir("Thing", ["a.bin"], root=gone, system=[system])
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"Thing not found: root = {str(gone)!r} does not exist; ")
    assert "leave 'root' out" in message
    afile = tmp_path / "a-file"
    afile.write_bytes(b"")
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        find_dir("Thing", ["a.bin"], root=afile, system=[system])
    assert find_dir("Thing", ["a.bin"], system=[system]) == data_root  # without root: found


def test_a_missing_root_is_where_an_allowed_download_goes(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    (data_root / "b.bin").write_bytes(b"x")  # a copy elsewhere does not stand in for root
    target = tmp_path / "new" / "folder"

    def download(into: Path) -> None:
        (into / "b.bin").write_bytes(b"x")

    assert find_dir("Thing", ["b.bin"], root=target, download=download) == target


BENCH = """
id_datasets = [{{ name = "mnist", root = "{gone}/mnist" }}]
models = ["small-cnn"]
detectors = ["msp"]
ood_datasets = ["gaussian-pixel", {{ name = "svhn", root = "{gone}/svhn" }}]

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
outliers = {{ name = "300k-random-images", root = "{gone}/300k" }}
from = "baseline"
"""


def test_benchmark_lists_every_missing_root_before_any_work(tmp_path, data_root):
    gone = tmp_path / "nonexistent"
    bench = parse_benchmark(BENCH.format(gone=gone), "roots.toml")
    with pytest.raises(UserError) as exc:
        check_benchmark(bench, models=False)
    lines = str(exc.value).splitlines()
    assert lines[0] == "roots.toml: 3 problems:", lines
    assert lines[1].strip().startswith(f"dataset 'mnist': MNIST not found: root = '{gone}/mnist'")
    assert lines[2].strip().startswith(f"dataset 'svhn': SVHN not found: root = '{gone}/svhn'")
    assert (
        lines[3]
        .strip()
        .startswith(
            "outlier source '300k-random-images': 300K Random Images not found: "
            f"root = '{gone}/300k' does not exist"
        )
    )
    assert all("does not exist" in line for line in lines[1:])


def test_a_missing_root_of_a_text_source_names_the_root_not_the_package(tmp_path):
    from oebench.registry.lookup import create_dataset

    gone = tmp_path / "nonexistent"
    for name, options in (("fortunes", {}), ("license-text", {})):
        with pytest.raises(DataNotFoundError) as exc:
            create_dataset(name, root=str(gone), **options).files()
        assert f"root = {str(gone)!r}" in str(exc.value) and "install" not in str(exc.value)
