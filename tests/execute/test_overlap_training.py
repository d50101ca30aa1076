"""The overlap audit where a training loads its outliers: said, kept in the provenance, cached,
and with ``exclude_overlap`` the planted duplicates (and only they) dropped."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import oebench
import oebench.execute.overlap as overlap_module
import oebench.execute.training
from oebench.bench.parse import parse_benchmark
from oebench.core.progress import Progress
from oebench.execute.cell_models import TrainedModels
from oebench.execute.context import Context
from oebench.execute.runner import Runner
from oebench.execute.sources import Sources


def _natural(rng, n, size=32):
    """Random 1/f^1.5 images, uint8 (N, 3, size, size)."""
    f = np.fft.fftfreq(size)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    radius[0, 0] = 1
    shape = (n, 3, size, size)
    img = np.real(
        np.fft.ifft2((rng.normal(size=shape) + 1j * rng.normal(size=shape)) / radius**1.5)
    )
    img -= img.min(axis=(2, 3), keepdims=True)
    return (img / img.max(axis=(2, 3), keepdims=True) * 255).astype(np.uint8)


def _jpeg(img):
    buf = io.BytesIO()
    Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="JPEG", quality=75)
    return np.asarray(Image.open(buf)).transpose(2, 0, 1)


POOL = _natural(np.random.default_rng(0), 48)  # ID test 0..11, OOD 12..23, ID train 24..47
OUTLIERS = _natural(np.random.default_rng(1), 40)
OUTLIERS[5] = POOL[2]  # an exact copy of an ID test image
OUTLIERS[11] = _jpeg(POOL[15])  # OOD image 3, re-encoded
OUTLIERS[20] = np.concatenate([POOL[19][:, :, :1], POOL[19][:, :, :-1]], axis=2)  # shifted
PLANTED = {5, 11, 20}
PARTS = {"train": POOL[24:], "test": POOL[:12], "ood": POOL[12:24], "outliers": OUTLIERS}


def _images(part):
    from oebench.contracts.data import TensorImages

    x = torch.from_numpy(PARTS[part].astype(np.float32) / 255)
    return TensorImages(x, torch.arange(len(x)) % 2 if part in ("train", "test") else None)


class PlantedSources:
    @staticmethod
    @oebench.hookimpl
    def register_datasets(register):
        from oebench.contracts.data import ImageSource

        class Planted(ImageSource):
            num_classes = 2
            splits = ("train", "test")

            def load(self, split, *, shape=None, seed=0):
                return _images(split)

        class PlantedOod(ImageSource):
            def load(self, split, *, shape=None, seed=0):
                return _images("ood")

        register("planted-id", Planted, description="ID set of the overlap test")
        register("planted-ood", PlantedOod, description="OOD set of the overlap test")

    @staticmethod
    @oebench.hookimpl
    def register_outlier_sources(register):
        from oebench.contracts.data import ImageSource

        class PlantedOutliers(ImageSource):
            def load(self, split, *, shape=None, seed=0):
                return _images("outliers")

        register("planted-outliers", PlantedOutliers, description="outliers with copies")


TOML = """
name = "overlap"
id_datasets = ["planted-id"]
models = [{ name = "small-cnn", width = 4 }]
detectors = ["msp"]
ood_datasets = ["planted-ood"]

[training]
epochs = 1
batch_size = 8
outlier_batch_size = 8

[[trainings]]
name = "oe"
objective = "oe"
outliers = "planted-outliers"
"""


class Said(Progress):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


@pytest.fixture
def planted(oebench_plugin, monkeypatch):
    oebench_plugin(PlantedSources(), "planted-sources")
    seen = []
    real = oebench.execute.training.train

    def recording(model, train_set, objective, params, seed, shape, device, outliers, **kw):
        seen.append(outliers)
        return real(model, train_set, objective, params, seed, shape, device, outliers, **kw)

    monkeypatch.setattr(oebench.execute.training, "train", recording)
    return seen


def _build(toml, root):
    bench = parse_benchmark(toml)
    (cell,) = Runner(bench, device="cpu").cells()
    progress = Said()
    models = TrainedModels(Context(bench, Sources(bench), progress, "cpu"), None, True, root)
    models.build(cell)
    return cell, models, progress


def _rows(data):
    return {(data.images[i].numpy() * 255).round().astype(np.uint8).tobytes()
            for i in range(len(data))}  # fmt: skip


def test_the_audit_is_said_kept_and_cached(planted, tmp_path, monkeypatch):
    cell, models, progress = _build(TOML, tmp_path)
    assert len(planted[0]) == 40  # nothing dropped without exclude_overlap
    report = models.overlap_report(cell)
    counts = {name: (c["exact"], c["near"]) for name, c in report["sets"].items()}
    assert counts == {"planted-id (ID test)": (1, 0), "planted-ood": (0, 2)}
    assert (report["overlapping"], report["dropped"]) == (3, 0)
    (line,) = [m for m in progress.lines if m.startswith("overlap audit")]
    assert (
        "planted-id (ID test) 1 exact + 0 near" in line and "planted-ood 0 exact + 2 near" in line
    )
    grids = sorted((tmp_path / "models" / "overlap").glob("*.png"))
    assert len(grids) == 2 and all(Image.open(g).size[0] == 64 for g in grids)

    def no_recompute(*args, **kwargs):
        raise AssertionError("the overlap was computed again")

    monkeypatch.setattr(overlap_module, "overlap", no_recompute)
    again = overlap_module.audit(models.context.sources, cell, _images("outliers"), (3, 32, 32),
                                 tmp_path / "models" / "overlap")  # fmt: skip
    assert again["outliers"] == sorted(PLANTED)


def test_exclude_overlap_drops_exactly_the_planted_outliers_and_changes_the_key(planted, tmp_path):
    excluding = TOML + "exclude_overlap = true\n"
    cell, models, progress = _build(excluding, tmp_path)
    (kept,) = planted
    everything = _rows(_images("outliers"))
    dropped = everything - _rows(kept)
    assert len(kept) == 37
    assert dropped == {OUTLIERS[i].tobytes() for i in PLANTED}
    assert models.overlap_report(cell)["dropped"] == 3
    assert any("3 dropped (exclude_overlap)" in m for m in progress.lines)
    (plain,) = Runner(parse_benchmark(TOML), device="cpu").cells()
    assert plain.key != cell.key
