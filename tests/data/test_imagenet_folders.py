"""The ``imagenet`` dataset (ImageNet-1K class folders, read lazily) and the ``images`` OOD set
(every image under one folder), on tiny files in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import oebench
from oebench.bench.parse import load_benchmark
from oebench.bench.validation import component_problems, data_problems, settings_problems
from oebench.errors import DataNotFoundError
from oebench.testing import check_dataset

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: class ids 0, 1, 2


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty data root in tmp_path; downloads off."""
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def solid(path: Path, value: int, size=(20, 12)) -> Path:
    """A one-colour RGB image (JPEG or PNG by suffix) of grey level ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def write_imagenet(top: Path) -> dict[str, list[Path]]:
    """``top/train/<wnid>/``: 3, 2, 1 images; ``top/val/<wnid>/``: 1 each; a stray text file.
    The wnids are created out of sorted order, so a folder's creation order never leaks."""
    files: dict[str, list[Path]] = {"train": [], "val": []}
    for k, wnid in enumerate(reversed(WNIDS)):  # n01484850 has 3 train images, n01440764 1
        for j in range(3 - k):
            suffix = "JPEG" if j % 2 == 0 else "png"
            files["train"].append(solid(top / "train" / wnid / f"{wnid}_{j}.{suffix}", 10 * k))
        files["val"].append(solid(top / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", 100 + k))
    (top / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    return files


@pytest.fixture
def imagenet(root):
    return write_imagenet(root / "imagenet")


def one_line(make) -> str:
    with pytest.raises(DataNotFoundError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_imagenet_splits_labels_and_lazy_images(root, imagenet):
    source = oebench.create_dataset("imagenet", size=16)
    assert source.num_classes == 3 and source.shape == (3, 16, 16)
    assert tuple(source.mean) == (0.485, 0.456, 0.406)
    assert tuple(source.std) == (0.229, 0.224, 0.225)
    train, test = source.load("train"), source.load("test")
    assert (len(train), len(test)) == (6, 3)
    # labels: the index of the class folder among the sorted train wnids
    expect = {w: i for i, w in enumerate(WNIDS)}
    for data in (train, test):
        assert data.labels == [expect[Path(p).parent.name] for p in data.paths]
    assert sorted(train.labels) == [0, 1, 1, 2, 2, 2] and sorted(test.labels) == [0, 1, 2]
    x, y = test[0]  # decoded only now, resized and centre-cropped to 'size'
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and isinstance(y, int)
    assert source.load("test", shape=(3, 8, 8))[0][0].shape == (3, 8, 8)
    assert not hasattr(train, "images")  # a lazy ImageFiles: paths, never a decoded tensor
    check_dataset("imagenet", size=16)
    check_dataset("imagenet", split="test", size=16)


def test_imagenet_files_list_every_image_and_config_stays_small(root, imagenet):
    source = oebench.create_dataset("imagenet")
    assert source.files() == sorted(imagenet["train"] + imagenet["val"])
    assert source.shape == (3, 224, 224)  # the default size
    config = source.config()
    assert config["folder"] == "imagenet" and config["size"] == 224
    assert not any(k.startswith("_") for k in config)  # no cached path lists in cache keys


def test_imagenet_root_and_folder_options(tmp_path, root):
    write_imagenet(tmp_path / "elsewhere" / "ilsvrc")
    source = oebench.create_dataset(
        "imagenet", root=str(tmp_path / "elsewhere"), folder="ilsvrc", size=8
    )
    assert source.num_classes == 3 and len(source.load("train")) == 6


def test_imagenet_val_class_unknown_to_train_is_one_line(root, imagenet):
    solid(root / "imagenet" / "val" / "n99999999" / "x.JPEG", 5)
    message = one_line(lambda: oebench.create_dataset("imagenet").load("test"))
    assert "n99999999" in message and "not among the 3 train/ classes" in message
    assert one_line(oebench.create_dataset("imagenet").files) == message


def test_imagenet_unsorted_val_is_one_line(root, imagenet):
    for wnid in WNIDS:  # the val tarball as extracted: 50,000 files directly in val/
        for f in (root / "imagenet" / "val" / wnid).iterdir():
            f.rename(root / "imagenet" / "val" / f.name)
        (root / "imagenet" / "val" / wnid).rmdir()
    message = one_line(lambda: oebench.create_dataset("imagenet").load("test"))
    assert "no class folders" in message and "val/<wnid>/*.JPEG" in message


def test_imagenet_missing_folder_names_the_layout(root):
    message = one_line(oebench.create_dataset("imagenet").files)
    assert "ImageNet-1K not found" in message and str(root) in message
    assert "imagenet/train/<wnid>/*.JPEG" in message and "imagenet/val/<wnid>/*.JPEG" in message
    assert "login" in message and "--download" not in message
    (root / "imagenet" / "train").mkdir(parents=True)  # val/ still missing
    assert "not found" in one_line(lambda: oebench.create_dataset("imagenet").load("train"))


def test_images_every_file_at_any_depth_unlabelled_and_subset(root, tmp_path):
    top = root / "ssb_hard"
    made = [
        solid(top / "a.JPEG", 10),
        solid(top / "sub" / "b.png", 20),
        solid(top / "sub" / "deeper" / "c.jpg", 30),
        solid(top / "d.bmp", 40),
    ]
    (top / "sub" / "list.txt").write_text("not an image")
    source = oebench.create_dataset("images", folder="ssb_hard")
    assert source.files() == sorted(made) and source.num_classes is None
    data = source.load("test")
    assert len(data) == 4 and data.labels == [-1] * 4
    assert data[0][0].shape == (3, 224, 224)  # the default size, without an ID shape
    assert source.load("test", shape=(3, 8, 8))[1][0].shape == (3, 8, 8)
    some = oebench.create_dataset("images", folder="ssb_hard", n=2, size=8).load("test")
    assert len(some) == 2 and set(some.paths) <= set(made)
    assert some.paths == oebench.create_dataset("images", folder="ssb_hard", n=2).load("test").paths
    absolute = oebench.create_dataset("images", folder=str(top), size=8)
    assert absolute.files() == sorted(made)
    check_dataset("images", folder="ssb_hard", size=8)


def test_images_missing_or_empty_folder_is_one_line(root, tmp_path):
    assert "images 'ninco' not found" in one_line(
        oebench.create_dataset("images", folder="ninco").files
    )
    gone = tmp_path / "gone"
    assert str(gone) in one_line(oebench.create_dataset("images", folder=str(gone)).files)
    (root / "empty" / "sub").mkdir(parents=True)
    assert "no image files" in one_line(oebench.create_dataset("images", folder="empty").files)


def test_openood_imagenet_file_validates_and_misses_only_data(root):
    bench = load_benchmark("openood-imagenet")
    assert settings_problems(bench) == [] and component_problems(bench) == []
    assert [d.name for d in bench.id_datasets] == ["imagenet"]
    assert {d.name for d in bench.ood_datasets} == {"images"}
    knn = next(d for d in bench.detectors if d.name == "knn")
    assert knn.kwargs == {"k": 1000}
    assert {"mahalanobis", "vim"} <= {d.name for d in bench.detectors}
    lines = data_problems(bench)  # the empty data root: one line per set
    assert len(lines) == 6 and all("\n" not in line and "not found" in line for line in lines)
    write_imagenet(root / "imagenet")
    for folder in ("ssb_hard", "ninco", "inaturalist", "textures", "openimage_o"):
        solid(root / folder / "x.JPEG", 50)
    assert data_problems(bench) == []
