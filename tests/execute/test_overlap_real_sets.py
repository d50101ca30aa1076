"""The overlap audit on real, unrelated images: the quickstart's photo crops share nothing
with its letters, digits or faces, and the audit must say so (a dark blob against a digit, a
star field against a letter once passed a looser confirmation)."""

import pytest

from oebench.execute.overlap import overlap, small_images
from oebench.registry.lookup import create_dataset, create_outlier_source


def _images(source, split, shape):
    data = source.load(split)
    return data.images[:, :, : shape[1], : shape[2]] if hasattr(data, "images") else None


@pytest.mark.parametrize(("name", "split"), [("letters", "test"), ("mnist-5k", "test")])
def test_photo_crops_overlap_no_quickstart_set(name, split):
    target = create_dataset(name)
    crops = create_outlier_source("photo-crops", n=4000)
    shape = tuple(target.shape)
    a, b = crops.load("train"), target.load(split)
    if not (hasattr(a, "images") and hasattr(b, "images")):
        pytest.skip("these sources do not hold their images as one tensor")
    found = overlap(a.images, b.images)
    assert found.counts() == {"exact": 0, "near": 0}
    # and the audit is not blind: a set against a copy of itself is all exact duplicates
    self_found = overlap(b.images[:50], b.images[:50])
    assert {(i, i) for i in range(50)} <= set(self_found.exact)
    assert small_images(b.images[:1]).shape[1:3] == (32, 32) and shape[0] in (1, 3)
