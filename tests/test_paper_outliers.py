"""Outlier data as the reference uses it: the whole 80M file streamed, SVHN's flipped outliers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oebench
from oebench.contracts.model import Classifier
from oebench.execute.training import train

TOTAL = 3000
LISTED = np.arange(0, TOTAL, 3)  # every third image "overlaps CIFAR" (0-based)


@pytest.fixture
def tiny_images(tmp_path, monkeypatch):
    """A 3000-image 80M binary in the exact format, each image's index in its first pixels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (TOTAL, 32, 32, 3), dtype=np.uint8)  # HWC
    images[:, 0, 0, 0] = np.arange(TOTAL) % 256
    images[:, 0, 0, 1] = np.arange(TOTAL) // 256
    images[:, :, :16, 2] = 255  # left half bright in blue: a horizontal flip shows
    images[:, :, 16:, 2] = 0
    with open(tmp_path / "tiny_images.bin", "wb") as f:
        for img in images:
            f.write(img.ravel(order="F").tobytes())  # column-major, as the 80M binary
    (tmp_path / "80mn_cifar_idxs.txt").write_text("\n".join(str(i + 1) for i in LISTED) + "\n")
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path))
    return images


def index_of(x: torch.Tensor) -> np.ndarray:
    """The image index written into pixel (0, 0) of red and green (float [0, 1] CHW batch)."""
    px = (x[:, :2, 0, 0] * 255).round().long().numpy()
    return px[:, 0] + 256 * px[:, 1]


def test_streamed_80m_covers_the_file_without_loading_it(tiny_images):
    from oebench_plugins.outlier_files import TinyImagesStream

    data = oebench.create_outlier_source("tiny-images-80m").load("train", seed=1)
    assert isinstance(data, TinyImagesStream) and len(data) == TOTAL
    image, label = data[2]  # not listed: the file's image 2, CHW, in [0, 1]
    assert label == -1
    assert torch.equal(image, torch.from_numpy(tiny_images[2].transpose(2, 0, 1)).float() / 255)
    items = data.__getitems__(list(range(TOTAL)))
    got = index_of(torch.stack([x for x, _ in items]))
    assert not np.isin(got, LISTED).any()  # CIFAR overlap never served
    keep = ~np.isin(np.arange(TOTAL), LISTED)
    assert np.array_equal(got[keep], np.arange(TOTAL)[keep])
    again = oebench.create_outlier_source("tiny-images-80m").load("train", seed=1)
    assert np.array_equal(index_of(torch.stack([x for x, _ in again.__getitems__([0, 3, 6])])),
                          got[[0, 3, 6]])  # fmt: skip
    assert isinstance(data._data, np.memmap)  # read through the memory map


class Spy(torch.nn.Module):
    """Records what each training step receives."""

    def __init__(self, seen: list):
        super().__init__()
        self.fc, self.seen = torch.nn.Linear(4, 2), seen

    def forward_features(self, x):
        self.seen.append(x.detach().clone())
        return x.flatten(1)[:, :4]

    def forward_head(self, f):
        return self.fc(f)


def oe_steps(outliers, epochs: int, **settings) -> list[torch.Tensor]:
    """The batches of an OE training on 64 ID images (32 + 16 outliers per step)."""
    seen: list[torch.Tensor] = []
    model = Classifier(Spy(seen), (0.0,), (1.0,))
    ids = oebench.TensorImages(torch.zeros(64, 3, 32, 32), torch.arange(64) % 2)
    params = dict(epochs=epochs, batch_size=32, outlier_batch_size=16, lr=0.01, momentum=0.9,
                  nesterov=True, weight_decay=0.0, augment=False, **settings)  # fmt: skip
    objective = oebench.create_objective("oe")
    train(model, ids, objective, params, 0, (3, 32, 32), torch.device("cpu"), outliers)
    return seen


def test_each_epoch_draws_new_outliers_from_the_whole_file(tiny_images):
    data = oebench.create_outlier_source("tiny-images-80m").load("train", seed=0)
    steps = oe_steps(data, epochs=3)
    per_epoch = [
        np.concatenate([index_of(s[32:]) for s in steps[2 * e : 2 * e + 2]]) for e in (0, 1, 2)
    ]
    assert all(len(e) == 32 and len(set(e)) >= 28 for e in per_epoch)  # redraws may repeat
    assert len(set(per_epoch[0]) & set(per_epoch[1])) < 8  # fresh draws, not one fixed sample
    drawn = np.concatenate(per_epoch)
    assert drawn.max() > TOTAL // 2 and not np.isin(drawn, LISTED).any()


def test_outlier_flip_flips_outliers_only(tiny_images):
    data = oebench.create_outlier_source("tiny-images-80m").load("train", seed=0)
    for flip in (False, True):
        steps = oe_steps(data, epochs=1, outlier_flip=flip)
        outs = torch.cat([s[32:] for s in steps])
        left_bright = outs[:, 2, :, :16].mean((1, 2)) > 0.99
        right_bright = outs[:, 2, :, 16:].mean((1, 2)) > 0.99
        assert (left_bright ^ right_bright).all()  # each one either as stored or mirrored
        flipped = int(right_bright.sum())
        assert (flipped == 0) if not flip else (4 <= flipped <= 28)
        assert all(torch.count_nonzero(s[:32]) == 0 for s in steps)  # ID half untouched
