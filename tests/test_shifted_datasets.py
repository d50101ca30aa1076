"""Covariate-shifted ID test sets (``oebench_plugins.shifted_datasets``): CIFAR-10.1, ImageNet-R,
ImageNet-V2 and ImageNet-ES read from tiny fake files in each dataset's on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from oebench_plugins.shifted_datasets import imagenet_r_classes
from PIL import Image

import oebench
from oebench.errors import DataNotFoundError
from oebench.testing import check_dataset

NAMES = ["cifar10.1", "imagenet-r", "imagenet-v2", "imagenet-es"]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty data root; downloads off."""
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def solid(path: Path, value: int, size=(20, 12)) -> Path:
    """A one-colour RGB image (JPEG or PNG by suffix) of grey level ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def greys(data) -> list[int]:
    """The grey level of each item's centre pixel (the fake images are one colour each)."""
    return [round(float(data[i][0][0, 4, 4]) * 255) for i in range(len(data))]


def test_registered():
    assert set(NAMES) <= set(oebench.list_datasets())


# -- CIFAR-10.1 ------------------------------------------------------------------------------
def cifar101(folder: Path, version="v6", n=7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n) % 10
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"cifar10.1_{version}_data.npy", x)
    np.save(folder / f"cifar10.1_{version}_labels.npy", y)
    return x, y


@pytest.mark.parametrize("where", ["CIFAR-10.1/datasets", "datasets", ""])
def test_cifar101_layouts(root, where):
    x, y = cifar101(root / where if where else root)
    source = check_dataset("cifar10.1")
    assert source.num_classes == 10 and source.shape == (3, 32, 32)
    data = source.load("test")
    assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (7, 3, 32, 32)
    assert torch.equal(data.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert data.labels.dtype == torch.long and data.labels.tolist() == y.tolist()
    assert [p.name for p in source.files()] == ["cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy"]


def test_cifar101_version_and_root(tmp_path, root):
    cifar101(tmp_path / "elsewhere" / "CIFAR-10.1" / "datasets", version="v4", n=3)
    source = check_dataset("cifar10.1", version="v4", root=str(tmp_path / "elsewhere"))
    assert len(source.load("test")) == 3
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("cifar10.1").files()  # v6 is not there
    one_line(exc, "cifar10.1_v6_data.npy", "CIFAR-10.1/datasets")


def test_cifar101_bad_arrays(root):
    folder = root / "CIFAR-10.1" / "datasets"
    cifar101(folder)
    np.save(folder / "cifar10.1_v6_labels.npy", np.arange(3))
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("cifar10.1").load("test")
    one_line(exc, "(N, 32, 32, 3)")


# -- ImageNet-R ------------------------------------------------------------------------------
def test_imagenet_r_table():
    table = imagenet_r_classes()
    assert len(table) == 200 and len(set(table.values())) == 200
    assert list(table) == sorted(table) and list(table.values()) == sorted(table.values())
    assert all(0 <= i < 1000 for i in table.values())
    # the authors' mask: goldfish n01443537 is ImageNet class 1, ..., n12267677 (acorn) 988
    assert table["n01443537"] == 1 and table["n01484850"] == 2 and table["n12267677"] == 988
    assert table["n02086240"] == 155 and table["n07753592"] == 954


def test_imagenet_r_labels(root):
    top = root / "imagenet-r"
    solid(top / "n01443537" / "art_0.jpg", 10)
    solid(top / "n01443537" / "cartoon_1.jpg", 20)
    solid(top / "n12267677" / "sketch_0.png", 30)
    (top / "README.txt").write_text("not a class folder")
    source = check_dataset("imagenet-r", size=16)
    assert source.num_classes == 1000 and source.splits == ("test",)
    data = source.load("test", shape=(3, 24, 24))
    assert [data[i][1] for i in range(3)] == [1, 1, 988]
    assert greys(data) == [10, 20, 30]
    image, _ = data[0]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 24, 24)
    assert len(source.files()) == 3
    assert len(oebench.create_dataset("imagenet-r", max_images=2).load("test")) == 2


def test_imagenet_r_missing_and_stray(root):
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-r").files()
    one_line(exc, "imagenet-r", "<wnid>")
    solid(root / "imagenet-r" / "n99999999" / "a.jpg", 5)
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-r").files()
    one_line(exc, "n99999999", "200 ImageNet-R classes")


# -- ImageNet-V2 -----------------------------------------------------------------------------
def test_imagenet_v2_labels(root):
    top = root / "imagenetv2-matched-frequency-format-val"
    solid(top / "0" / "a1b2.jpeg", 10)
    solid(top / "7" / "c3d4.jpeg", 20)
    solid(top / "999" / "e5f6.jpeg", 30)
    source = check_dataset("imagenet-v2")
    assert source.num_classes == 1000 and source.shape == (3, 224, 224)
    data = source.load("test", shape=(3, 8, 8))
    assert [data[i][1] for i in range(3)] == [0, 7, 999]
    assert greys(data) == [10, 20, 30]


def test_imagenet_v2_variants(root):
    solid(root / "imagenetv2" / "imagenetv2-top-images-format-val" / "42" / "x.jpeg", 9)
    data = check_dataset("imagenet-v2", variant="top-images").load("test")
    assert [data[0][1]] == [42]
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-v2", variant="threshold0.7").files()
    one_line(exc, "imagenetv2-threshold0.7-format-val")
    solid(root / "imagenetv2-threshold0.7-format-val" / "n01440764" / "x.jpeg", 9)
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-v2", variant="threshold0.7").files()
    one_line(exc, "n01440764", "<class index 0-999>")


# -- ImageNet-ES -----------------------------------------------------------------------------
WNIDS = [f"n{i:08d}" for i in range(200, 0, -1)]  # 200 fake ids, unsorted in the file


@pytest.fixture
def es(root):
    """A Tiny ImageNet ``wnids.txt`` and two light x two param folders of ImageNet-ES."""
    (root / "tiny-imagenet-200").mkdir()
    (root / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    top = root / "ImageNet-ES" / "es-test" / "param_control"
    first, last = sorted(WNIDS)[0], sorted(WNIDS)[-1]
    grey = 10
    for light in ("l1", "l5"):
        for param in ("param_1", "param_2", "param_10"):
            solid(top / light / param / first / "img_a.JPEG", grey)
            solid(top / light / param / last / "img_b.JPEG", grey + 1)
            grey += 10
    solid(root / "ImageNet-ES" / "es-test" / "auto_exposure" / "l5" / "param_3" / last / "c.png", 7)
    return root


def test_imagenet_es_labels(es):
    source = check_dataset("imagenet-es")
    assert source.num_classes == 200 and source.shape == (3, 64, 64)
    data = source.load("test")
    assert len(data) == 12 and [data[i][1] for i in range(4)] == [0, 199, 0, 199]
    # light then param in numeric order: l1/param_1, param_2, param_10, then l5/...
    assert greys(data)[::2] == [10, 20, 30, 40, 50, 60]
    assert len(source.files()) == 13  # the class list and the 12 images
    one = oebench.create_dataset("imagenet-es", light="l5", param=10).load("test", shape=(3, 8, 8))
    assert greys(one) == [60, 61] and tuple(one[0][0].shape) == (3, 8, 8)
    auto = check_dataset("imagenet-es", setting="auto_exposure")
    assert [auto.load("test")[0][1]] == [199]


def test_imagenet_es_missing(es, tmp_path):
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-es", part="es-val").files()
    one_line(exc, "ImageNet-ES/es-val/param_control", "param_<k>")
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-es", param=27).files()
    one_line(exc, "param_27")
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-es", classes=str(tmp_path / "none.txt")).files()
    one_line(exc, "none.txt")
    short = tmp_path / "short.txt"
    short.write_text("n00000001\n")
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("imagenet-es", classes=str(short)).files()
    one_line(exc, "1 class ids")
