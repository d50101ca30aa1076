"""The ``noise``, ``fractal-mix`` and ``tin597`` outlier sources (plugin ``outlier-synthetic``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from oebench_plugins.outlier_synthetic import fractal_bank, render_fractals
from PIL import Image

import oebench.api as oebench
from oebench.errors import DataNotFoundError, UserError
from oebench.testing import check_outlier_source

CIFAR_MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]
CIFAR_STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]


def images(name: str, split: str = "train", shape=(3, 32, 32), seed: int = 0, **options):
    """The split's images as one float tensor."""
    data = oebench.create_outlier_source(name, **options).load(split, shape=shape, seed=seed)
    return torch.stack([data[i][0] for i in range(len(data))])


@pytest.mark.parametrize("family", ["gaussian", "rademacher", "blobs", "uniform"])
def test_noise_contract_and_seeds(family):
    check_outlier_source("noise", family=family, n=8)
    first = images("noise", family=family, n=8)
    assert torch.equal(first, images("noise", family=family, n=8))
    assert not torch.equal(first, images("noise", family=family, n=8, seed=1))
    assert images("noise", family=family, n=3, shape=(1, 28, 28)).shape == (3, 1, 28, 28)


def test_noise_families_match_their_definitions():
    rad = images("noise", family="rademacher", n=10)
    assert set(rad.unique().tolist()) == {0.0, 1.0}
    assert abs(rad.mean().item() - 0.5) < 0.03
    gauss = images("noise", family="gaussian", n=10).double()
    ref = np.clip(np.random.default_rng(9).normal(0.5, 0.5, 10**6), 0, 1)
    assert abs(gauss.mean().item() - 0.5) < 0.02
    assert abs(gauss.std().item() - ref.std()) < 0.02
    assert gauss.min() == 0 and gauss.max() == 1  # clipped
    uni = images("noise", family="uniform", n=10).double()
    assert uni.min() >= 0 and uni.max() <= 1
    assert abs(uni.mean().item() - 0.5) < 0.02 and abs(uni.std().item() - 12**-0.5) < 0.02
    blobs = images("noise", family="blobs", n=10)
    assert (blobs == 0).any() and (blobs[blobs > 0] >= 0.75 - 1e-6).all()


def test_noise_normalised_space_is_the_cifar_recipe():
    x = images("noise", family="gaussian", n=10, space="normalised", mean=CIFAR_MEAN, std=CIFAR_STD)
    z = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    assert z.min() >= -1 - 1e-5 and z.max() <= 1 + 1e-5
    assert abs(z.mean().item()) < 0.03
    with pytest.raises(UserError):
        oebench.create_outlier_source("noise", family="gaussian", space="normalised")
    with pytest.raises(UserError):
        oebench.create_outlier_source("noise", family="pink")


@pytest.mark.parametrize("base", ["photo", "fractal"])
def test_fractal_mix_contract_range_and_seeds(base):
    check_outlier_source("fractal-mix", n=12, systems=6, base=base)
    first = images("fractal-mix", n=12, systems=6, base=base)
    assert first.min() >= 0 and first.max() <= 1
    assert first.flatten(1).std(1).min() > 0  # no constant picture
    assert torch.equal(first, images("fractal-mix", n=12, systems=6, base=base))
    assert not torch.equal(first, images("fractal-mix", n=12, systems=6, base=base, seed=1))
    grey = images("fractal-mix", n=2, systems=3, base=base, shape=(1, 28, 28))
    assert grey.shape == (2, 1, 28, 28)


def test_fractals_are_deterministic_not_constant_and_cached(_isolated_cache):
    made = render_fractals(4, 32, 32, seed=3)
    assert made.dtype == np.uint8 and made.shape == (4, 3, 32, 32)
    assert np.array_equal(made, render_fractals(4, 32, 32, seed=3))
    assert not np.array_equal(made, render_fractals(4, 32, 32, seed=4))
    assert all(np.count_nonzero(f.max(0)) > 30 and f.std() > 0 for f in made)
    assert np.array_equal(fractal_bank(4, 32, 32, 3), made)
    assert list((_isolated_cache / "fractals").glob("*.npy"))
    assert np.array_equal(fractal_bank(4, 32, 32, 3), made)  # from the cache


def jpeg(path: Path, value: int) -> None:
    """A 64x64 one-colour JPEG of grey level ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (value, value, value)).save(path, "JPEG")


WNIDS = {"n01443537": 30, "n01629819": 130, "n01641577": 230}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A data root holding Tiny ImageNet's train layout with 3 classes of 2 images each."""
    data = tmp_path / "data"
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(data))
    for wnid, value in WNIDS.items():
        for i in range(2):
            jpeg(data / "tiny-imagenet-200" / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", value)
    return data


def test_tin597_reads_exactly_the_listed_classes(root):
    (root / "kept.txt").write_text("n01443537  # goldfish\n\nn01641577 bullfrog\n")
    check_outlier_source("tin597", classes="kept.txt")
    got = images("tin597", classes="kept.txt", shape=(3, 64, 64))
    levels = sorted(round(v * 255 / 10) * 10 for v in got.mean((1, 2, 3)).tolist())
    assert levels == [30, 30, 230, 230]
    files = oebench.create_outlier_source("tin597", classes="kept.txt").files()
    assert sum(p.suffix == ".JPEG" for p in files) == 4
    assert images("tin597", classes="kept.txt", max_images=3).shape[0] == 3


def test_tin597_reads_an_openood_image_list(tmp_path, root):
    classic = tmp_path / "openood" / "images_classic"
    rows = []
    for wnid, value in list(WNIDS.items())[:2]:
        rel = f"tin597/train/{wnid}/{wnid}_0.JPEG"
        jpeg(classic / rel, value)
        rows.append(f"{rel} {len(rows)}")
    listed = tmp_path / "openood" / "benchmark_imglist" / "cifar10" / "train_tin597.txt"
    listed.parent.mkdir(parents=True)
    listed.write_text("\n".join(rows) + "\n")
    got = images("tin597", imglist=str(listed))
    assert got.shape == (2, 3, 32, 32)
    assert [round(v * 255 / 10) * 10 for v in got.mean((1, 2, 3)).tolist()] == [30, 130]


def test_tin597_refuses_missing_files_with_one_line(tmp_path, root):
    cases = [
        {"classes": "absent.txt"},
        {"imglist": str(tmp_path / "none.txt")},
    ]
    (root / "more.txt").write_text("n01443537\nn09999999\n")
    cases.append({"classes": "more.txt"})
    for options in cases:
        with pytest.raises(DataNotFoundError) as info:
            oebench.create_outlier_source("tin597", **options).files()
        assert "\n" not in str(info.value)
    assert "tiny-imagenet-200/train/<wnid>/images" in str(info.value)
    with pytest.raises(UserError):
        oebench.create_outlier_source("tin597")
