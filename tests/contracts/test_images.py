"""The package-shipped image sets of the quickstart: real data, deterministic, well formed."""

import numpy as np
import pytest
import torch

import oebench

SHAPE = (1, 28, 28)


def _images(name, split="test", seed=0, **options):
    return oebench.create_dataset(name, **options).load(split, shape=SHAPE, seed=seed)


def test_mnist_5k_split_is_stratified_disjoint_and_shuffled():
    train, test = _images("mnist-5k", "train"), _images("mnist-5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(test.labels.numpy()).tolist() == [100] * 10
    assert len(set(test.labels[:20].tolist())) > 3  # not sorted by class
    flat = lambda d: {bytes(x) for x in d.images.view(len(d), -1).numpy()}  # noqa: E731
    assert not flat(train) & flat(test)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("letters", {"n": 300}),
        ("textures", {"n": 300}),
        ("faces", {}),
        ("gaussian", {"n": 50}),
        ("rademacher", {"n": 50}),
        ("blobs", {"n": 50}),
    ],
)
def test_ood_sets_are_deterministic_and_never_blank(name, options):
    a, b = _images(name, **options), _images(name, **options)
    assert a.images.shape[1:] == SHAPE
    assert torch.equal(a.images, b.images)
    x = a.images.float() / (255 if a.images.dtype == torch.uint8 else 1)
    assert (x.amax(dim=(1, 2, 3)) > 0.1).all(), "blank images"
    assert x.min() >= 0 and x.max() <= 1


def test_seeds_change_generated_sets():
    a = _images("letters", n=50, seed=0).images
    b = _images("letters", n=50, seed=1).images
    assert not torch.equal(a, b)


def test_photo_crops_are_outliers_at_the_id_shape():
    crops = oebench.create_outlier_source("photo-crops", n=300).load("train", shape=SHAPE, seed=0)
    assert crops.images.shape == (300, *SHAPE) and (crops.labels == -1).all()
    assert crops.images.float().std() > 10  # real content, not a constant
