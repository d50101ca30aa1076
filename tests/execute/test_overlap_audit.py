"""The overlap audit's hashing: planted exact and near duplicates are found, nothing else."""

import io

import numpy as np
import pytest
from PIL import Image

from oebench.execute.overlap import example_grid, hamming, overlap, phashes, small_images


def _smooth(rng, n, size=32, channels=3):
    """Natural-looking images: random phases under a 1/f^1.5 spectrum (uint8, NCHW)."""
    f = np.fft.fftfreq(size)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    radius[0, 0] = 1
    shape = (n, channels, size, size)
    spectrum = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / radius**1.5
    img = np.real(np.fft.ifft2(spectrum))
    img -= img.min(axis=(2, 3), keepdims=True)
    img /= img.max(axis=(2, 3), keepdims=True)
    return (img * 255).astype(np.uint8)


def _jpeg(img, quality=75):
    buf = io.BytesIO()
    Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf)).transpose(2, 0, 1)


def _resized(img, size=48):
    pil = Image.fromarray(img.transpose(1, 2, 0)).resize((size, size), Image.Resampling.BICUBIC)
    back = pil.resize((32, 32), Image.Resampling.BICUBIC)
    return np.asarray(back).transpose(2, 0, 1)


def _shifted(img):
    return np.concatenate([img[:, :, :1], img[:, :, :-1]], axis=2)  # 1 pixel right, edge kept


def test_planted_duplicates_are_all_found_and_only_they():
    rng = np.random.default_rng(0)
    test_set = _smooth(rng, 20)
    source = _smooth(rng, 60)
    planted = {
        3: (0, "exact"),
        17: (5, "resized"),
        29: (9, "jpeg"),
        44: (13, "shift"),
    }
    make = {"exact": lambda x: x, "resized": _resized, "jpeg": _jpeg, "shift": _shifted}
    for i, (j, how) in planted.items():
        source[i] = make[how](test_set[j])
    found = overlap(source, test_set)
    assert found.exact == [(3, 0)]
    assert set(found.exact + found.near) == {(i, j) for i, (j, _) in planted.items()}
    assert found.outliers == set(planted)
    assert found.counts() == {"exact": 1, "near": 3}


@pytest.mark.parametrize("seed", [1, 2])
def test_disjoint_random_sets_have_no_overlap(seed):
    rng = np.random.default_rng(seed)
    assert overlap(_smooth(rng, 80), _smooth(rng, 40)).outliers == set()
    noise = rng.integers(0, 256, (50, 1, 28, 28), dtype=np.uint8)
    assert overlap(noise[:25], noise[25:]).outliers == set()


def test_hashes_floats_like_bytes_and_grids_are_written(tmp_path):
    rng = np.random.default_rng(3)
    imgs = _smooth(rng, 4)
    assert np.array_equal(small_images(imgs / 255.0), small_images(imgs))
    h = phashes(small_images(imgs))
    assert h.dtype == np.uint64 and np.all(np.diag(hamming(h, h)) == 0)
    example_grid(imgs, imgs, [(0, 0), (1, 1)], tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").size == (64, 64)


def test_hamming_counts_the_differing_bits():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2**63, 20, dtype=np.uint64)
    b = rng.integers(0, 2**63, 9, dtype=np.uint64)
    expected = [[bin(int(x) ^ int(y)).count("1") for y in b] for x in a]
    assert hamming(a, b).tolist() == expected


def test_making_a_large_split_small_never_copies_it_whole_in_float():
    """300,000 outliers must not become a float64 copy (7 GB at CIFAR size): the audit's
    memory is bounded by the small uint8 images."""
    import tracemalloc

    import torch

    from oebench.execute.overlap import small_of

    class Split:
        images = torch.rand(4000, 3, 32, 32)  # 49 MB in float32; a float64 copy: 98 MB

    tracemalloc.start()
    try:
        small = small_of(Split(), (3, 32, 32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert small.shape == (4000, 32, 32, 3) and small.dtype == np.uint8
    assert peak < 3 * small.nbytes + 8 * 2**20  # the small images (12 MB), not the split
    assert np.array_equal(small, small_images(Split.images))
