"""SVHN's extra OOD sets (Icons-50 without 'numbers', Chars74K) on files in their exact layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import oebench
from oebench.errors import DataNotFoundError


def save(path, value: int, size=(48, 40), mode="RGBA"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value, value, value, 255) if mode == "RGBA" else value).save(path)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path))
    return tmp_path


def test_icons50_drops_the_numbers_class(root):
    for i, cls in enumerate(["airplane", "numbers", "zebra"]):
        for j in range(2):
            save(root / "Icons-50" / cls / f"{cls}_{j}.png", 40 * i + 10 * j)
    source = oebench.create_dataset("icons50")
    files = source.files()
    assert [p.parent.name for p in files] == ["airplane", "airplane", "zebra", "zebra"]
    data = source.load("test", shape=(3, 32, 32))
    values = sorted(round(float(data[k][0].mean()) * 255) for k in range(len(data)))
    assert values == [0, 10, 80, 90]  # the 'numbers' icons (40, 50) never appear
    assert data[0][0].shape == (3, 32, 32) and data[0][1] == -1


def test_icons50_with_only_numbers_is_an_error(root):
    save(root / "Icons-50" / "numbers" / "one.png", 1)
    with pytest.raises(DataNotFoundError, match="numbers"):
        oebench.create_dataset("icons50").files()


def test_chars74k_reads_the_english_img_layout(root):
    base = root / "Chars74K" / "GoodImg" / "Bmp"
    save(base / "Sample001" / "img001-00001.png", 200, (20, 30), "L")  # grey, not square
    save(base / "Sample011" / "img011-00002.png", 60, (30, 20), "L")
    data = oebench.create_dataset("chars74k").load("test", shape=(3, 32, 32))
    assert len(data) == 2
    first = data[0][0]
    assert first.shape == (3, 32, 32)  # grey -> RGB, resized and centre-cropped
    assert torch.allclose(first, torch.full_like(first, 200 / 255), atol=1 / 255)
    assert np.isclose(float(data[1][0].mean()), 60 / 255, atol=1 / 255)
