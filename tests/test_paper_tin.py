"""Tiny ImageNet / Places365 paper benchmarks: the ``image-folder`` source (ImageNet-22K-style
class folders minus excluded classes), Places365 as an ID dataset, and the two benchmark files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import oebench
from oebench.bench.parse import load_benchmark
from oebench.bench.validation import (
    check_benchmark,
    component_problems,
    data_problems,
    model_problems,
    settings_problems,
)
from oebench.errors import DataNotFoundError, UserError

PAPER = ["oe-tinyimagenet", "oe-places365"]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty data root; downloads off."""
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def solid(path: Path, value: int, size=(20, 12)) -> Path:
    """A one-colour RGB image file (JPEG or PNG by suffix) of grey level ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


@pytest.fixture
def imagenet(root):
    """``imagenet22k/<wnid>/``: four classes of real image files, some nested, plus a stray."""
    top = root / "imagenet22k"
    files = {
        "n001": [solid(top / "n001" / "n001_1.JPEG", 10), solid(top / "n001" / "n001_2.png", 20)],
        "n002": [solid(top / "n002" / "deep" / "n002_1.jpg", 30)],
        "n003": [solid(top / "n003" / "n003_1.JPEG", 40)],
        "n004": [solid(top / "n004" / "n004_1.JPEG", 50)],
    }
    (top / "n001" / "README.txt").write_text("not an image")
    (top / "loose.JPEG").parent.mkdir(exist_ok=True)
    solid(top / "loose.JPEG", 60)  # not inside a class folder: never read
    return files


def greys(data) -> list[int]:
    """The grey level (0-255) of every image of a dataset of one-colour images."""
    return sorted(round(float(data[k][0].mean()) * 255) for k in range(len(data)))


def test_image_folder_excludes_listed_classes(root, imagenet):
    (root / "tiny-imagenet-200").mkdir()
    wnids = root / "tiny-imagenet-200" / "wnids.txt"
    wnids.write_text("# Tiny ImageNet classes\nn003\tsome words\n\n")
    (root / "imagenet" / "val" / "n004").mkdir(parents=True)  # a folder entry: its sub-folders
    source = oebench.create_outlier_source(
        "image-folder", folder="imagenet22k", exclude="tiny-imagenet-200/wnids.txt,imagenet/val"
    )
    assert source.excluded() == {"n003", "n004"}
    assert [d.name for d in source.classes()] == ["n001", "n002"]
    expected = imagenet["n001"] + imagenet["n002"] + [wnids]
    assert source.files() == sorted(expected)
    data = source.load("train", shape=(3, 8, 8), seed=0)
    assert len(data) == 3 and greys(data) == [10, 20, 30]  # 40, 50 and the loose 60 never
    x, y = data[0]
    assert x.shape == (3, 8, 8) and y == -1


def test_image_folder_list_and_absolute_paths_and_subset(root, imagenet, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("n001\n")
    source = oebench.create_outlier_source(
        "image-folder", folder=str(root / "imagenet22k"), exclude=[str(ids)], max_images=2
    )
    first, again = source.load("train", seed=3), source.load("train", seed=3)
    assert len(first) == 2 and greys(first) == greys(again)
    assert set(greys(first)) <= {30, 40, 50}
    assert first[0][0].shape == (3, 64, 64)  # no ID shape given: the 'size' option
    everything = oebench.create_outlier_source("image-folder", folder="imagenet22k")
    assert greys(everything.load("train")) == [10, 20, 30, 40, 50]


def test_image_folder_is_also_a_dataset(root, imagenet):
    data = oebench.create_dataset("image-folder", folder="imagenet22k", exclude="n001_list.txt")
    with pytest.raises(DataNotFoundError, match="n001_list.txt"):
        data.files()
    (root / "n001_list.txt").write_text("n001\nn002\n")
    assert greys(data.load("test", shape=(3, 4, 4))) == [40, 50]


def one_line_error(make) -> str:
    with pytest.raises(DataNotFoundError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_image_folder_errors_are_one_line(root, imagenet, tmp_path):
    missing = oebench.create_outlier_source("image-folder", folder="nowhere")
    assert "image-folder's folder not found: expected nowhere" in one_line_error(missing.files)
    absent = oebench.create_outlier_source("image-folder", folder=str(tmp_path / "gone"))
    assert "not found" in one_line_error(absent.files)
    (root / "all.txt").write_text("n001\nn002\nn003\nn004\n")
    every = oebench.create_outlier_source("image-folder", folder="imagenet22k", exclude="all.txt")
    assert "every class folder" in one_line_error(every.files)
    (root / "flat").mkdir()
    solid(root / "flat" / "a.png", 1)
    flat = oebench.create_outlier_source("image-folder", folder="flat")
    assert "no class sub-folders" in one_line_error(flat.files)
    (root / "empty" / "n009").mkdir(parents=True)
    empty = oebench.create_outlier_source("image-folder", folder="empty")
    assert "no image files" in one_line_error(lambda: empty.load("train"))
    with pytest.raises(UserError, match="no split 'val'"):
        oebench.create_outlier_source("image-folder", folder="imagenet22k").load("val")


# -- Places365 as an ID dataset ----------------------------------------------------------------
@pytest.fixture
def no_md5(monkeypatch):
    """Fixture files cannot match torchvision's md5s: check only that files exist."""
    import torchvision.datasets.places365 as places

    monkeypatch.setattr(places, "check_integrity", lambda path, md5=None: Path(path).is_file())


def write_places(top: Path) -> None:
    """Places365-Standard's small-image layout: categories, both file lists, 3 + 4 images."""
    (top / "categories_places365.txt").parent.mkdir(parents=True)
    (top / "categories_places365.txt").write_text("/a/abbey 0\n/b/beach 1\n")
    train = [("/a/abbey/00000001.jpg", 0, 70), ("/b/beach/00000001.jpg", 1, 140)]
    train.append(("/b/beach/00000002.jpg", 1, 210))
    for name, _, grey in train:
        solid(top / "data_256_standard" / name.lstrip("/"), grey, (256, 256))
    (top / "places365_train_standard.txt").write_text("".join(f"{n} {c}\n" for n, c, _ in train))
    val = [f"Places365_val_{k:08d}.jpg" for k in range(1, 5)]
    for k, name in enumerate(val):
        solid(top / "val_256" / name, 20 * (k + 1), (256, 256))
    (top / "places365_val.txt").write_text("".join(f"{n} {k % 2}\n" for k, n in enumerate(val)))


def test_places365_serves_as_an_id_dataset(root, no_md5):
    write_places(root / "places365")
    source = oebench.create_dataset("places365", n=2, size=32)
    assert source.num_classes == 365 and "train" in source.splits and source.shape == (3, 32, 32)
    train = source.load("train")
    assert len(train) == 3  # n subsets only 'test': training sees every image
    assert [train[k][1] for k in range(3)] == [0, 1, 1]
    assert greys(train) == [70, 140, 210] and train[0][0].shape == (3, 32, 32)
    assert len(source.load("test")) == 2
    whole = oebench.create_dataset("places365", n=36500, size=32).load("test")
    assert [whole[k][1] for k in range(4)] == [0, 1, 0, 1] and greys(whole) == [20, 40, 60, 80]


# -- the benchmark files -----------------------------------------------------------------------
@pytest.mark.parametrize("name", PAPER)
def test_paper_benchmark_files_validate(name, root):
    assert name in oebench.list_benchmarks()
    bench = load_benchmark(name)
    assert settings_problems(bench) == [] and component_problems(bench) == []
    assert model_problems(bench) == []  # each model builds and runs at its ID shape
    lines = data_problems(bench)  # nothing is under the empty data root
    assert lines and all("\n" not in line and "not found" in line for line in lines)
    assert any(line.startswith("outlier source 'image-folder'") for line in lines)
    with pytest.raises(UserError):
        check_benchmark(bench)
    assert bench.defaults["amp"] == "off" and bench.protocol == "oe-paper"


def test_tinyimagenet_recipe():
    bench = load_benchmark("oe-tinyimagenet")
    assert [m.name for m in bench.models] == ["wrn-40-2"]
    assert [d.name for d in bench.id_datasets] == ["tiny-imagenet"]
    base, oe = bench.trainings
    assert (base.params["epochs"], base.params["lr"], base.params["batch_size"]) == (100, 0.1, 128)
    assert (oe.params["epochs"], oe.params["lr"], oe.params["outlier_batch_size"]) == (
        10,
        0.001,
        180,
    )
    assert oe.outliers.name == "image-folder" and oe.init == "baseline"
    assert "tiny-imagenet-200/wnids.txt" in oe.outliers.kwargs["exclude"]
    blobs = next(d for d in bench.ood_datasets if d.name == "blobs")
    assert blobs.kwargs["sigma"] == 2.0


def test_blobs_at_64_reach_the_network_in_minus_one_to_one():
    """Tiny ImageNet's Blobs (64x64, sigma 2) under ImageNet normalisation: what the network
    receives after (x - mean) / std is the reference's {-1} and values in [0.5, 1]."""
    from oebench_plugins.vision_datasets import IMAGENET_MEAN, IMAGENET_STD

    data = oebench.create_dataset("blobs", n=3, sigma=2.0)
    images = data.load("test", shape=(3, 64, 64), norm=(IMAGENET_MEAN, IMAGENET_STD)).images
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    net_input = ((images - mean) / std).numpy()
    assert net_input.shape == (3, 3, 64, 64)
    off = np.isclose(net_input, -1, atol=1e-5)
    assert off.any() and (~off).any()
    assert net_input[~off].min() >= 0.5 - 1e-5 and net_input.max() <= 1 + 1e-5


# -- end to end, on files in Tiny ImageNet's and ImageNet's layouts ----------------------------
TIN_RUN = """
name = "tin-tiny"
id_datasets = ["tiny-imagenet"]
models = [{ name = "small-cnn", width = 4 }]
detectors = ["msp"]
ood_datasets = [
    { name = "gaussian", n = 8 },
    { name = "image-folder", folder = "imagenet/val", exclude = "WNIDS", label = "held-out" },
]

[training]
epochs = 1
batch_size = 4
outlier_batch_size = 6
lr = 0.01

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
from = "baseline"
outliers = { name = "image-folder", folder = "imagenet22k", exclude = "WNIDS" }
""".replace("WNIDS", "tiny-imagenet-200/wnids.txt")


def write_tiny_imagenet(top: Path, wnids: list[str]) -> None:
    """``tiny-imagenet-200/``: wnids.txt, 4 train JPEGs per class, 4 labelled val JPEGs."""
    rng = np.random.default_rng(0)
    top.mkdir(parents=True)
    (top / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    lines = []
    for c, w in enumerate(wnids):
        (top / "train" / w / "images").mkdir(parents=True)
        for k in range(4):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(top / "train" / w / "images" / f"{w}_{k}.JPEG")
        for k in range(2):
            name = f"val_{2 * c + k}.JPEG"
            (top / "val" / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                top / "val" / "images" / name
            )
            lines.append(f"{name}\t{w}\t0\t0\t63\t63\n")
    (top / "val" / "val_annotations.txt").write_text("".join(lines))


def test_tiny_imagenet_run_with_image_folder_outliers(root, imagenet, tmp_path):
    from oebench.execute.drive import run_here
    from oebench.execute.runner import Runner
    from oebench.report.tables import results_frame

    write_tiny_imagenet(root / "tiny-imagenet-200", ["n001", "n005"])
    for wnid, grey in (("n001", 90), ("n006", 100), ("n007", 110)):
        solid(root / "imagenet" / "val" / wnid / f"{wnid}_val.JPEG", grey, (80, 64))
    path = tmp_path / "tin.toml"
    path.write_text(TIN_RUN)
    bench = load_benchmark(str(path))
    check_benchmark(bench)  # every file is found
    held_out = oebench.create_dataset("image-folder", folder="imagenet/val",
                                      exclude="tiny-imagenet-200/wnids.txt")  # fmt: skip
    assert greys(held_out.load("test", shape=(3, 64, 64))) == [100, 110]  # n001 is an ID class
    rows = results_frame(run_here(Runner(bench, device="cpu", use_cache=False)))
    assert set(rows["training"]) == {"baseline", "oe"}
    assert set(rows.loc[rows["training"] == "oe", "outlier_source"]) == {"image-folder"}
    assert {"gaussian", "held-out", "mean"} <= set(rows["ood_dataset"])
    assert rows["auroc"].between(0, 100).all()
