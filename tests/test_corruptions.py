"""The ``corrupted`` dataset: CIFAR-10-C's 15 corruptions of an ID test split (Hendrycks &
Dietterich, ICLR 2019), with the published 32x32 severity tables and the ID labels kept."""

from __future__ import annotations

import io

import numpy as np
import pytest
from oebench_plugins import corruption_ops as ops
from oebench_plugins.corruptions import (
    CORRUPTIONS,
    FROST_STATS,
    Corrupted,
    corrupt_images,
    file_frost,
    procedural_frost,
)
from PIL import Image

import oebench.api as oebench
from oebench.testing import check_dataset


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def photos():
    """Eight natural 32x32 RGB images (skimage's photos, whole and a centre crop), NCHW."""
    from skimage import data

    images = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        photo = Image.fromarray(getattr(data, name)())
        w, h = photo.size
        crop = photo.crop((w // 4, h // 4, w // 4 + min(w, h) // 2, h // 4 + min(w, h) // 2))
        images += [np.asarray(p.resize((32, 32), Image.BOX)) for p in (photo, crop)]
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def textures():
    return Corrupted(corruption="frost").textures()


def _constant(value: int, size: int = 128) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def test_the_fifteen_corruptions_in_the_authors_order():
    assert CORRUPTIONS == ops.CORRUPTIONS == tuple(ops.OPS)
    assert len(CORRUPTIONS) == 15


def test_tables_are_make_cifar_c_s():
    t = ops.TABLES
    assert t["gaussian_noise"] == [0.04, 0.06, 0.08, 0.09, 0.10]
    assert t["shot_noise"] == [500, 250, 100, 75, 50]
    assert t["impulse_noise"] == [0.01, 0.02, 0.03, 0.05, 0.07]
    assert t["brightness"] == [0.05, 0.1, 0.15, 0.2, 0.3]
    assert t["contrast"] == [0.75, 0.5, 0.4, 0.3, 0.15]
    assert t["jpeg_compression"] == [80, 65, 58, 50, 40]
    assert t["pixelate"] == [0.95, 0.9, 0.85, 0.75, 0.65]
    assert t["motion_blur"] == [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)]
    assert t["frost"] == [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]
    assert t["fog"] == [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]


@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_noise_sigma_is_measured(severity):
    x = _constant(128)
    out = ops.corrupt(x, "gaussian_noise", severity, np.random.default_rng(0))
    sigma = ((out.astype(float) - x) / 255).std()
    assert sigma == pytest.approx((0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1], rel=0.03)


@pytest.mark.parametrize("severity", range(1, 6))
def test_shot_and_impulse_noise_rates_are_measured(severity):
    x = _constant(128)
    shot = ops.corrupt(x, "shot_noise", severity, np.random.default_rng(0)).astype(float)
    c = ops.TABLES["shot_noise"][severity - 1]
    assert (shot / 255).std() == pytest.approx(np.sqrt(128 / 255 / c), rel=0.05)
    impulse = ops.corrupt(x, "impulse_noise", severity, np.random.default_rng(0))
    hit = np.isin(impulse, (0, 255)).mean()
    assert hit == pytest.approx(ops.TABLES["impulse_noise"][severity - 1], rel=0.1)
    assert set(np.unique(impulse)) <= {0, 128, 255}


@pytest.mark.parametrize("severity", range(1, 6))
def test_brightness_shifts_the_value_and_contrast_scales_about_the_mean(severity):
    x = _constant(102, 8)  # value 0.4
    out = ops.corrupt(x, "brightness", severity, None)
    expected = (0.4 + (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]) * 255
    assert np.abs(out.astype(float) - expected).max() <= 1
    two = np.concatenate([_constant(50, 8), _constant(200, 8)])
    out = ops.corrupt(two, "contrast", severity, None).astype(float)
    factor = (out[8:].mean() - out[:8].mean()) / 150
    assert factor == pytest.approx((0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1], abs=1 / 150)


@pytest.mark.parametrize("severity", range(1, 6))
def test_jpeg_quality_and_pixelate_factor(photos, severity):
    x = photos[0].transpose(1, 2, 0)

    def jpeg(quality):
        buffer = io.BytesIO()
        Image.fromarray(x).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    out = ops.corrupt(x, "jpeg_compression", severity, None)
    quality = (80, 65, 58, 50, 40)[severity - 1]
    assert np.array_equal(out, jpeg(quality))
    assert not np.array_equal(out, jpeg(quality + 10))
    side = int(32 * (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1])
    small = Image.fromarray(x).resize((side, side), Image.BOX).resize((32, 32), Image.BOX)
    assert np.array_equal(ops.corrupt(x, "pixelate", severity, None), np.asarray(small))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_is_deterministic_per_seed(photos, textures, name):
    batch = photos[:3]
    first = corrupt_images(batch, name, 3, seed=0, textures=textures)
    assert first.dtype == np.uint8 and first.shape == batch.shape
    assert np.array_equal(first, corrupt_images(batch, name, 3, seed=0, textures=textures))
    other = corrupt_images(batch, name, 3, seed=1, textures=textures)
    assert np.array_equal(first, other) == (name not in ops.RANDOM)
    assert not np.array_equal(first, batch)  # it changes the images


def test_severity_moves_the_images_away_on_average(photos, textures):
    """Strictly for the corruptions whose every parameter grows with severity; the others
    (glass and motion blur, frost: mixed parameters; elastic: its affine part shrinks while
    the elastic field grows, as published) are only farther at 5 than at 1, except elastic."""
    dist = np.array([
        [np.abs(corrupt_images(photos, name, s, 0, textures) - photos.astype(float)).mean()
         for s in range(1, 6)]
        for name in CORRUPTIONS
    ])  # fmt: skip
    mixed = {"glass_blur", "motion_blur", "frost", "elastic_transform"}
    for row, name in zip(dist, CORRUPTIONS, strict=True):
        if name not in mixed:
            assert (np.diff(row) > 0).all(), (name, row)
        elif name != "elastic_transform":
            assert row[-1] > row[0], (name, row)
    assert (np.diff(dist.mean(axis=0)) > 0).all(), dist.mean(axis=0)


def test_the_dataset_keeps_the_id_labels_shape_and_normalisation():
    clean = oebench.create_dataset("mnist-5k").load("test")
    source = oebench.create_dataset("corrupted", dataset="mnist-5k", corruption="fog", n=12)
    assert (source.num_classes, source.shape, source.mean) == (10, (1, 28, 28), (0.1307,))
    data = source.load("test")
    assert data.images.dtype == clean.images.dtype and data.images.shape == (12, 1, 28, 28)
    assert data.labels.tolist() == clean.labels[:12].tolist()
    assert not np.array_equal(data.images.numpy(), clean.images[:12].numpy())
    prefix = oebench.create_dataset("corrupted", dataset="mnist-5k", corruption="fog", n=5)
    assert np.array_equal(prefix.load("test").images.numpy(), data.images[:5].numpy())


def test_all_is_the_union_of_the_fifteen_at_one_severity():
    kw = {"dataset": {"name": "mnist-5k"}, "severity": 2, "n": 4}
    union = oebench.create_dataset("corrupted", corruption="all", **kw).load("test")
    assert len(union) == 15 * 4
    labels = oebench.create_dataset("mnist-5k").load("test").labels[:4].tolist()
    assert union.labels.tolist() == labels * 15
    snow = oebench.create_dataset("corrupted", corruption="snow", **kw).load("test")
    at = CORRUPTIONS.index("snow") * 4
    assert np.array_equal(union.images[at : at + 4].numpy(), snow.images.numpy())


def test_generated_arrays_are_cached_by_content(tmp_path):
    source = oebench.create_dataset("corrupted", corruption="glass_blur", n=6)
    first = source.load("test").images.numpy()
    cached = list((tmp_path / "cache" / "corruptions").glob("glass_blur-3-*.npy"))
    assert len(cached) == 1
    assert np.array_equal(np.load(cached[0]), first)
    assert np.array_equal(source.load("test").images.numpy(), first)
    other = oebench.create_dataset("corrupted", corruption="glass_blur", n=6, seed=1)
    other.load("test")
    assert len(list(cached[0].parent.glob("glass_blur-3-*.npy"))) == 2


def test_check_dataset_passes():
    source = check_dataset(
        "corrupted", dataset="mnist-5k", corruption="gaussian_noise", severity=3, n=32
    )
    assert source.files() == oebench.create_dataset("mnist-5k").files()
    assert source.config()["id"] == oebench.create_dataset("mnist-5k").config()


def test_bad_options_are_user_errors():
    with pytest.raises(oebench.UserError, match="unknown corruption"):
        Corrupted(corruption="spatter")
    with pytest.raises(oebench.UserError, match="frost"):
        Corrupted(frost="photos")
    with pytest.raises(oebench.UserError, match="not an ID dataset"):
        Corrupted(dataset="letters")
    with pytest.raises(oebench.UserError, match="severity 6 not in 1-5"):
        oebench.create_dataset("corrupted", severity=6)
    with pytest.raises(oebench.UserError, match="split"):
        Corrupted(n=2).load("train")


def test_frost_textures(textures):
    assert len(textures) == 5
    for texture, (mean, std) in zip(textures, FROST_STATS, strict=True):
        assert texture.shape == (128, 192, 3) and 0 <= texture.min() <= texture.max() <= 255
        assert texture.mean(axis=(0, 1)) == pytest.approx(mean, abs=3)
        assert texture.std(axis=(0, 1)) == pytest.approx(std, rel=0.2)
    assert np.array_equal(textures[0], procedural_frost(0))


def test_frost_from_the_imagecorruptions_files(tmp_path, monkeypatch):
    """frost = "imagecorruptions" reads the package's frost images (a stand-in package here)
    as the authors' script does (RGB, scaled by 0.2) and lists them in files()."""
    folder = tmp_path / "site" / "imagecorruptions"
    (folder / "frost").mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('only its files are read')\n")
    rng = np.random.default_rng(0)
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        pixels = rng.integers(100, 256, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "frost" / name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = Corrupted(corruption="frost", frost="imagecorruptions", n=3)
    paths = source.frost_files()
    assert paths[0].parent == folder / "frost"
    assert [p.name for p in paths][0] == "frost1.png" and set(paths) <= set(source.files())
    assert file_frost(paths[0]).shape == (60, 80, 3)
    images = source.load("test").images
    assert images.shape == (3, 1, 28, 28)
    procedural = Corrupted(corruption="frost", n=3).load("test").images
    assert not np.array_equal(images.numpy(), procedural.numpy())
    large = source.load("test", shape=(3, 72, 72)).images  # textures of 60 rows: enlarged
    assert large.shape == (3, 3, 72, 72)


def test_frost_textures_are_enlarged_for_large_images():
    texture = procedural_frost(0)
    assert ops.fit_texture(texture, 32, 32) is texture
    assert ops.fit_texture(texture, 200, 100).shape[0] > 200
    images = Corrupted(corruption="frost", n=2).load("test", shape=(1, 160, 160)).images
    assert images.shape == (2, 1, 160, 160)


def test_frost_files_missing_say_how_to_get_them(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    hidden = lambda name, *a: None if name == "imagecorruptions" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    source = Corrupted(corruption="all", frost="imagecorruptions")
    with pytest.raises(oebench.DataNotFoundError, match="pip install --no-deps imagecorruptions"):
        source.files()
    assert Corrupted(corruption="snow", frost="imagecorruptions").files() == Corrupted().files()


def test_glass_blur_is_the_authors_sequential_loop(photos):
    """The one-gather pass equals make_cifar_c.py's loop (its copying "swap" included) given
    the same offsets, drawn two per pixel in the loop's order."""
    from skimage.filters import gaussian

    class Loop:
        def __init__(self, seed):
            self.legacy = np.random.RandomState(seed)

        def integers(self, lo, hi, size):
            out = np.empty(size, dtype=int)
            for i in range(size[1]):
                for j in range(size[2]):
                    out[:, i, j] = self.legacy.randint(lo, hi, size=(2,))
            return out

    def authors(x, severity, legacy):
        c = ops.TABLES["glass_blur"][severity - 1]
        x = np.uint8(gaussian(np.array(x) / 255.0, sigma=c[0], channel_axis=-1) * 255)
        for _ in range(c[2]):
            for h in range(32 - c[1], c[1], -1):
                for w in range(32 - c[1], c[1], -1):
                    dx, dy = legacy.randint(-c[1], c[1], size=(2,))
                    h_prime, w_prime = h + dy, w + dx
                    x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
        return np.clip(gaussian(x / 255.0, sigma=c[0], channel_axis=-1), 0, 1) * 255

    for severity in (1, 5):
        x = photos[severity].transpose(1, 2, 0)
        expected = np.uint8(authors(x, severity, np.random.RandomState(7)))
        assert np.array_equal(ops.corrupt(x, "glass_blur", severity, Loop(7)), expected)


def test_impulse_noise_is_skimages_salt_and_pepper(photos):
    from skimage.util import random_noise

    x = photos[0].transpose(1, 2, 0)
    for severity in (1, 5):
        amount = ops.TABLES["impulse_noise"][severity - 1]
        try:
            ref = random_noise(x / 255.0, mode="s&p", amount=amount, rng=np.random.default_rng(3))
        except TypeError:
            pytest.skip("this scikit-image has no rng argument")
        got = ops.corrupt(x, "impulse_noise", severity, np.random.default_rng(3))
        assert np.array_equal(got, np.uint8(np.clip(ref, 0, 1) * 255))


def test_other_sizes_and_non_square_images(photos, textures):
    """The size-dependent parts follow the image: every corruption keeps a 40x56 shape."""
    x = np.asarray(Image.fromarray(photos[0].transpose(1, 2, 0)).resize((56, 40)))
    batch = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    fitted = [ops.fit_texture(t, 40, 56) for t in textures]
    for name in CORRUPTIONS:
        out = corrupt_images(batch, name, 5, 0, fitted)
        assert out.shape == batch.shape and out.dtype == np.uint8, name
