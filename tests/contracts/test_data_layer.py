"""Dataset plugins through their real loading code, on tiny files in the real on-disk formats."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

import oebench
from oebench.contracts.data import TensorImages
from oebench.core.datafiles import describe_files, fetch, find_dir, search_dirs
from oebench.errors import DataNotFoundError, UserError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Data root and cache in tmp_path; downloads off; HF offline."""
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def rng_images(n: int, h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def save_images(folder: Path, images: np.ndarray, names: list[str]) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, name in zip(images, names, strict=True):
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(folder / name)
        paths.append(folder / name)
    return paths


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- datafiles -------------------------------------------------------------------------------------
def test_search_order_explicit_root_then_data_root_then_system(tmp_path, isolated):
    explicit, system = tmp_path / "mine", tmp_path / "system"
    dirs = search_dirs("sub", explicit, [system])
    assert dirs == [explicit / "sub", explicit, isolated / "sub", system]
    for d in (isolated / "sub", system):
        d.mkdir(parents=True)
        (d / "a.bin").write_bytes(b"x")
    explicit.mkdir()  # a root that exists but lacks the files: the next places are searched
    assert (
        find_dir("X", ["a.bin"], subdir="sub", root=explicit, system=[system]) == isolated / "sub"
    )
    (explicit / "sub").mkdir(parents=True)
    (explicit / "sub" / "a.bin").write_bytes(b"x")
    assert find_dir("X", ["a.bin"], subdir="sub", root=explicit) == explicit / "sub"
    assert find_dir("X", [("b.bin", "a.bin")], system=[system]) == system


def test_missing_files_message_is_one_line_and_says_what_where_how(isolated):
    with pytest.raises(DataNotFoundError) as exc:
        find_dir(
            "Thing",
            ["d/x.bin", "d/y.bin", ("z", "z.gz")],
            subdir="thing",
            download=lambda d: None,
            how="Download https://example.org/t.tgz into {target}",
        )
    msg = one_line(exc)
    assert "Thing not found: expected d/{x.bin, y.bin}, z[.gz]" in msg
    assert str(isolated / "thing") in msg
    assert "https://example.org/t.tgz into " + str(isolated / "thing") in msg
    assert "--download" in msg and "--data-root" in msg and "OEBENCH_DATA_ROOT" in msg
    assert describe_files(["a", ("b", "c")]) == "a, b or c"


def test_download_only_when_allowed(isolated, monkeypatch):
    calls = []

    def download(target: Path) -> None:
        calls.append(target)
        (target / "f.txt").write_text("ok")

    with pytest.raises(DataNotFoundError):
        find_dir("F", ["f.txt"], subdir="f", download=download)
    assert calls == []
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    assert find_dir("F", ["f.txt"], subdir="f", download=download) == isolated / "f"
    assert calls == [isolated / "f"]

    def broken(target: Path) -> None:
        raise OSError("no route to host\nmore")

    with pytest.raises(DataNotFoundError) as exc:
        find_dir("G", ["g.txt"], download=broken)
    assert "download into" in one_line(exc) and "no route to host" in str(exc.value)


def test_fetch_verifies_sha256(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def fake_download_url(url, root, filename=None, md5=None):
        Path(root, filename).write_bytes(b"payload")

    monkeypatch.setattr(tvu, "download_url", fake_download_url)
    good = hashlib.sha256(b"payload").hexdigest()
    assert fetch("https://x/y", tmp_path / "dl" / "a.bin", sha256=good).read_bytes() == b"payload"
    with pytest.raises(DataNotFoundError, match="sha256"):
        fetch("https://x/y", tmp_path / "dl" / "b.bin", sha256="0" * 64)
    assert not (tmp_path / "dl" / "b.bin").exists()


# -- CIFAR -----------------------------------------------------------------------------------------
def write_cifar(
    folder: Path, batches: dict[str, int], label_key: str, meta: tuple[str, str], num_classes: int
) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True)
    written = {}
    for i, (name, n) in enumerate(batches.items()):
        data = rng_images(n, 32, 32, seed=i).transpose(0, 3, 1, 2).reshape(n, 3072)
        labels = [int(v) for v in np.random.default_rng(i).integers(0, num_classes, n)]
        entry = {
            "data": data,
            label_key: labels,
            "filenames": [f"{name}_{k}.png" for k in range(n)],
            "batch_label": name,
        }
        (folder / name).write_bytes(pickle.dumps(entry))
        written[name] = (data, labels)
    names = [f"class{k}" for k in range(num_classes)]
    (folder / meta[0]).write_bytes(pickle.dumps({meta[1]: names}))
    return written


@pytest.fixture
def no_md5(monkeypatch):
    """Fixture files cannot match torchvision's md5s: check only that files exist."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.places365 as places
    import torchvision.datasets.svhn as svhn

    for module in (cifar, svhn, places):
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: Path(path).is_file())


def test_cifar10_loads_batches_and_meta(isolated, no_md5):
    batches = {f"data_batch_{i}": 3 for i in range(1, 6)} | {"test_batch": 4}
    written = write_cifar(
        isolated / "cifar-10-batches-py", batches, "labels", ("batches.meta", "label_names"), 10
    )
    source = oebench.create_dataset("cifar10")
    assert source.shape == (3, 32, 32) and source.num_classes == 10
    assert source.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert source.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))
    train, test = source.load("train"), source.load("test")
    assert isinstance(train, TensorImages) and len(train) == 15 and len(test) == 4
    data, labels = written["test_batch"]
    assert torch.equal(test.images, torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert test.labels.tolist() == labels
    x, y = test[0]
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 and y == labels[0]
    with pytest.raises(UserError, match="no split 'val'"):
        source.load("val")


def test_cifar100_fine_labels_from_explicit_root(tmp_path, no_md5):
    root = tmp_path / "elsewhere"
    write_cifar(
        root / "cifar-100-python",
        {"train": 5, "test": 2},
        "fine_labels",
        ("meta", "fine_label_names"),
        100,
    )
    source = oebench.create_dataset("cifar100", root=str(root))
    assert source.num_classes == 100
    train = source.load("train")
    assert len(train) == 5 and int(train.labels.max()) < 100


def test_cifar_failing_md5_is_one_line(isolated):
    write_cifar(
        isolated / "cifar-10-batches-py",
        {"test_batch": 2} | {f"data_batch_{i}": 1 for i in range(1, 6)},
        "labels",
        ("batches.meta", "label_names"),
        10,
    )
    with pytest.raises(DataNotFoundError) as exc:  # fixture files cannot match the real md5s
        oebench.create_dataset("cifar10").load("test")
    assert "failed torchvision's check" in one_line(exc)


def test_cifar_missing_names_every_file(isolated):
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("cifar10").load("test")
    msg = one_line(exc)
    assert "cifar-10-batches-py/{data_batch_1," in msg and "batches.meta}" in msg
    assert "cifar-10-python.tar.gz" in msg and str(isolated) in msg


# -- SVHN ------------------------------------------------------------------------------------------
def write_svhn(folder: Path, split: str, labels: list[int], seed: int = 0) -> np.ndarray:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    images = rng_images(len(labels), 32, 32, seed=seed)
    x = images.transpose(1, 2, 3, 0)  # (32, 32, 3, N) as in the .mat files
    savemat(
        folder / f"{split}_32x32.mat",
        {"X": x, "y": np.asarray(labels, dtype=np.uint8).reshape(-1, 1)},
    )
    return images


def test_svhn_mat_files_label_10_is_zero_and_extra(isolated, no_md5):
    images = write_svhn(isolated / "svhn", "test", [10, 1, 5])
    write_svhn(isolated / "svhn", "train", [2, 3], seed=1)
    write_svhn(isolated / "svhn", "extra", [10, 4, 7, 9], seed=2)
    source = oebench.create_dataset("svhn")
    assert source.mean == (0.0, 0.0, 0.0) and source.std == (1.0, 1.0, 1.0)
    test = source.load("test")
    assert test.labels.tolist() == [0, 1, 5]
    assert torch.equal(test.images, torch.from_numpy(images.transpose(0, 3, 1, 2)))
    assert len(source.load("train")) == 2
    both = oebench.create_dataset("svhn", use_extra=True).load("train")
    assert both.labels.tolist() == [2, 3, 0, 4, 7, 9]


# -- MNIST / Fashion-MNIST -------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: 0, 0, type 0x08 (ubyte), ndim, big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, gz: bool, n_train: int = 6, n_test: int = 3) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
        else:
            (folder / name).write_bytes(idx_bytes(arr))
    return arrays


def test_mnist_plain_idx_in_torchvision_layout(isolated):
    arrays = write_idx_set(isolated / "MNIST" / "raw", gz=False)
    source = oebench.create_dataset("mnist")
    assert source.shape == (1, 28, 28)
    test = source.load("test")
    assert test.images.shape == (3, 1, 28, 28) and test.images.dtype == torch.uint8
    assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert not (isolated.parent / "cache" / "unpacked").exists()  # read in place


def test_fashion_mnist_gz_flat_folder_unpacked_once(tmp_path, monkeypatch):
    flat = tmp_path / "debian-like"
    arrays = write_idx_set(flat, gz=True)
    source = oebench.create_dataset("fashion-mnist", root=str(flat))
    train = source.load("train")
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    unpacked = list((tmp_path / "cache" / "unpacked").glob("*/FashionMNIST/raw/*"))
    assert sorted(p.name for p in unpacked) == sorted(arrays)
    stamp = [p.stat().st_mtime_ns for p in unpacked]
    source.load("test")
    assert [p.stat().st_mtime_ns for p in unpacked] == stamp


def test_mnist_missing(isolated):
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("mnist").load("train")
    assert "train-images-idx3-ubyte[.gz]" in one_line(exc)
    assert str(isolated / "MNIST" / "raw") in str(exc.value)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="apt package dataset-fashion-mnist absent")
def test_fashion_mnist_from_debian_package(tmp_path):
    source = oebench.create_dataset("fashion-mnist")
    test = source.load("test")
    assert len(test) == 10000 and test.images.shape[1:] == (1, 28, 28)
    assert sorted(test.labels.unique().tolist()) == list(range(10))
    assert test.labels.bincount().tolist() == [1000] * 10
    train = source.load("train")
    assert len(train) == 60000 and int(train.labels[0]) == 9  # the first image is an ankle boot
    mean = train.images.float().mean().item() / 255
    assert mean == pytest.approx(source.mean[0], abs=1e-3)


# -- DTD -------------------------------------------------------------------------------------------
def write_dtd(base: Path) -> None:
    data = base / "dtd" / "dtd"
    sizes = [(40, 50), (64, 48), (33, 33)]
    for cls in ("banded", "zigzagged"):
        for k, (h, w) in enumerate(sizes):
            save_images(data / "images" / cls, rng_images(1, h, w, seed=k), [f"{cls}_{k}.jpg"])
    (data / "labels").mkdir(parents=True)
    for split, k in (("train", 0), ("val", 1), ("test", 2)):
        (data / "labels" / f"{split}1.txt").write_text(
            f"zigzagged/zigzagged_{k}.jpg\nbanded/banded_{k}.jpg\n"
        )


def test_dtd_all_images_resized_to_shape(isolated):
    write_dtd(isolated)
    source = oebench.create_dataset("dtd")
    everything = source.load("test", shape=(1, 28, 28))
    assert len(everything) == 6
    x, y = everything[0]
    assert x.shape == (3, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert y == 1  # classes are numbered in sorted order: banded 0, zigzagged 1
    native = oebench.create_dataset("dtd", all_images=False, size=16).load("test")
    assert len(native) == 2 and native[1][0].shape == (3, 16, 16)
    batch = next(iter(torch.utils.data.DataLoader(everything, batch_size=6)))
    assert batch[0].shape == (6, 3, 28, 28)


# -- Places365 -------------------------------------------------------------------------------------
def write_places_val(top: Path) -> list[Path]:
    """Places365's category list, val file list and 5 small val images; all paths written."""
    top.mkdir(parents=True)
    (top / "categories_places365.txt").write_text("/a/abbey 0\n/b/beach 1\n")
    names = [f"Places365_val_{k:08d}.jpg" for k in range(1, 6)]
    (top / "places365_val.txt").write_text("".join(f"{n} {k % 2}\n" for k, n in enumerate(names)))
    images = save_images(top / "val_256", rng_images(5, 256, 256), names)
    return [top / "categories_places365.txt", top / "places365_val.txt", *images]


def test_places365_val_small_and_subset(isolated, no_md5):
    write_places_val(isolated / "places365")
    full = oebench.create_dataset("places365", n=None).load("test", shape=(3, 32, 32))
    assert len(full) == 5 and [full[k][1] for k in range(5)] == [0, 1, 0, 1, 0]
    assert full[0][0].shape == (3, 32, 32)
    part = oebench.create_dataset("places365", n=3).load("test", shape=(3, 32, 32))
    assert len(part) == 3


def test_places365_folder_option(tmp_path):
    save_images(tmp_path / "pics" / "sub", rng_images(4, 60, 80), [f"{k}.png" for k in range(4)])
    data = oebench.create_dataset("places365", folder=str(tmp_path / "pics")).load("test")
    assert len(data) == 4 and data[0][1] == -1 and data[0][0].shape == (3, 256, 256)


# -- LSUN / iSUN folders ---------------------------------------------------------------------------
def test_lsun_and_isun_folders(isolated):
    save_images(isolated / "lsun" / "test", rng_images(5, 40, 60), [f"{k}.webp" for k in range(5)])
    save_images(
        isolated / "iSUN" / "iSUN_patches", rng_images(3, 32, 32), ["a.jpeg", "b.jpeg", "c.jpeg"]
    )
    (isolated / "lsun" / "notes.txt").write_text("not an image")
    lsun = oebench.create_dataset("lsun").load("test", shape=(3, 32, 32))
    assert len(lsun) == 5 and lsun[2][0].shape == (3, 32, 32) and lsun[2][1] == -1
    assert len(oebench.create_dataset("lsun", n=2).load("test")) == 2
    isun = oebench.create_dataset("isun", size=24).load("test")
    assert len(isun) == 3 and isun[0][0].shape == (3, 24, 24)


def test_empty_folder_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("lsun", folder=str(tmp_path / "empty")).load("test")
    assert "no image files" in one_line(exc)


# -- Tiny ImageNet ---------------------------------------------------------------------------------
def write_tiny_imagenet(top: Path) -> list[Path]:
    """Two classes, 2 train images each, 3 val images; the files that loading reads."""
    wnids = ["n09999999", "n01443537"]  # not sorted on purpose
    top.mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    read = [top / "wnids.txt", top / "val" / "val_annotations.txt"]
    for w in wnids:
        read += save_images(
            top / "train" / w / "images", rng_images(2, 64, 64), [f"{w}_{k}.JPEG" for k in range(2)]
        )
        (top / "train" / w / f"{w}_boxes.txt").write_text("")
    read += save_images(
        top / "val" / "images", rng_images(3, 64, 64), [f"val_{k}.JPEG" for k in range(3)]
    )
    (top / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn09999999\t0\t0\t10\t10\nval_1.JPEG\tn01443537\t1\t1\t9\t9\n"
        "val_2.JPEG\tn09999999\t2\t2\t8\t8\n"
    )
    return read


def test_tiny_imagenet_layout(isolated):
    write_tiny_imagenet(isolated / "tiny-imagenet-200")
    source = oebench.create_dataset("tiny-imagenet")
    assert source.num_classes == 200 and source.shape == (3, 64, 64)
    train = source.load("train")
    assert len(train) == 4 and [train[k][1] for k in range(4)] == [0, 0, 1, 1]
    test = source.load("test")
    assert [test[k][1] for k in range(3)] == [1, 0, 1]
    assert test[0][0].shape == (3, 64, 64)


# -- 300K Random Images ----------------------------------------------------------------------------
def test_300k_random_images_npy(isolated):
    images = rng_images(10, 32, 32)
    np.save(isolated / "300K_random_images.npy", images)
    full = oebench.create_outlier_source("300k-random-images").load("train", shape=(3, 32, 32))
    assert torch.equal(full.images, torch.from_numpy(images.transpose(0, 3, 1, 2)))
    assert full.labels.tolist() == [-1] * 10
    part = oebench.create_outlier_source("300k-random-images", n=4).load("train", seed=1)
    assert len(part) == 4
    again = oebench.create_outlier_source("300k-random-images", n=4).load("train", seed=1)
    assert torch.equal(part.images, again.images)


def test_300k_rejects_wrong_array_and_downloads_when_allowed(isolated, monkeypatch):
    np.save(isolated / "300K_random_images.npy", np.zeros((3, 32, 32), dtype=np.float32))
    with pytest.raises(DataNotFoundError, match="uint8"):
        oebench.create_outlier_source("300k-random-images").load("train")
    (isolated / "300K_random_images.npy").unlink()
    import torchvision.datasets.utils as tvu

    def fake_download_url(url, root, filename=None, md5=None):
        assert url.endswith("300K_random_images.npy")
        np.save(Path(root, filename), rng_images(2, 32, 32))

    monkeypatch.setattr(tvu, "download_url", fake_download_url)
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    assert len(oebench.create_outlier_source("300k-random-images").load("train")) == 2


# -- 80 Million Tiny Images ------------------------------------------------------------------------
def test_tiny_images_fortran_order_and_cifar_exclusion(isolated):
    from oebench_plugins.outlier_files import replace_listed

    total = 40
    images = rng_images(total, 32, 32)
    images[:, 0, 0, 0] = np.arange(total)  # pixel (h=0, w=0, red) holds the index
    with open(isolated / "tiny_images.bin", "wb") as f:
        for img in images:
            f.write(img.ravel(order="F").tobytes())  # column-major, as the 80M binary
    listed_one_based = list(range(1, 31))  # indices 0..29 overlap CIFAR
    (isolated / "80mn_cifar_idxs.txt").write_text("\n".join(map(str, listed_one_based)) + "\n")
    data = oebench.create_outlier_source("tiny-images-80m", n=25).load("train", seed=3)
    assert len(data) == 25 and data.labels.tolist() == [-1] * 25
    picked = data.images[:, 0, 0, 0].long().tolist()
    assert all(30 <= i < total for i in picked)
    for i, k in enumerate(picked):  # CHW orientation: row h, column w as in the HWC original
        assert torch.equal(data.images[i], torch.from_numpy(images[k].transpose(2, 0, 1)))
    everything = oebench.create_outlier_source(
        "tiny-images-80m", n=total, exclude_cifar=False
    ).load("train")
    assert sorted(everything.images[:, 0, 0, 0].long().tolist()) == list(range(total))
    rng = np.random.default_rng(0)
    out = replace_listed(np.array([0, 5, 35]), np.array([0, 5]), 40, rng)
    assert out[2] == 35 and not set(out) & {0, 5}


def test_tiny_images_missing_explains_withdrawal(isolated):
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_outlier_source("tiny-images-80m").load("train")
    msg = one_line(exc)
    assert "tiny_images.bin" in msg and "80mn_cifar_idxs.txt" in msg and "withdrawn" in msg


# -- any dataset as outliers -----------------------------------------------------------------------
def test_dataset_as_outliers(isolated):
    source = oebench.create_outlier_source("dataset", dataset="gaussian", n=30, max_images=12)
    data = source.load("train", shape=(3, 8, 8))
    assert isinstance(data, TensorImages) and len(data) == 12 and data.images.shape[1:] == (3, 8, 8)
    assert data.labels.tolist() == [-1] * 12
    save_images(isolated / "lsun", rng_images(4, 20, 20), [f"{k}.png" for k in range(4)])
    lazy = oebench.create_outlier_source(
        "dataset", dataset="lsun", dataset_split="test", max_images=3
    ).load("train", shape=(3, 16, 16))
    assert len(lazy) == 3 and lazy[0][1] == -1 and lazy[0][0].shape == (3, 16, 16)
    with pytest.raises(UserError):
        oebench.create_outlier_source("dataset", dataset="no-such-set")


# -- Hugging Face datasets -------------------------------------------------------------------------
def write_parquet(path: Path, labels: list, class_label: bool) -> np.ndarray:
    import datasets
    from PIL import Image

    images = rng_images(len(labels), 28, 28, c=1)
    label_feature = (
        datasets.ClassLabel(names=["boot", "coat", "shirt"])
        if class_label
        else datasets.Value("string")
    )
    features = datasets.Features({"image": datasets.Image(), "label": label_feature})
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(img[..., 0]) for img in images], "label": labels},
        features=features,
    )
    ds.to_parquet(str(path))
    return images


def test_hf_parquet_offline(tmp_path):
    images = write_parquet(tmp_path / "train.parquet", [2, 0, 1, 2], class_label=True)
    write_parquet(tmp_path / "test.parquet", [1, 1], class_label=True)
    files = {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")}
    source = oebench.create_dataset("hf", data_files=files)
    assert source.shape == (1, 28, 28) and source.num_classes == 3
    assert set(source.splits) == {"train", "test"}
    train = source.load("train")
    assert train.labels.tolist() == [2, 0, 1, 2]
    assert torch.equal(train.images, torch.from_numpy(images.transpose(0, 3, 1, 2)))
    assert len(source.load("test")) == 2
    relabelled = oebench.create_dataset("hf", data_files=files, labels=["shirt", "coat", "boot"])
    assert relabelled.load("train").labels.tolist() == [0, 2, 1, 0]
    outliers = oebench.create_outlier_source("hf", data_files=files, split="test")
    data = outliers.load("train", shape=(3, 32, 32))
    assert data.labels.tolist() == [-1, -1] and data.images.shape == (2, 1, 32, 32)


def test_hf_string_labels_sorted_or_mapped(tmp_path):
    write_parquet(tmp_path / "one.parquet", ["coat", "bag", "coat"], class_label=False)
    source = oebench.create_dataset("hf", data_files=str(tmp_path / "one.parquet"))
    assert source.num_classes == 2
    assert source.load("test").labels.tolist() == [1, 0, 1]  # single split serves any name
    mapped = oebench.create_dataset(
        "hf", data_files=str(tmp_path / "one.parquet"), labels=["coat", "bag"]
    )
    assert mapped.load("train").labels.tolist() == [0, 1, 0]
    with pytest.raises(UserError, match="not in 'labels'"):
        oebench.create_dataset(
            "hf", data_files=str(tmp_path / "one.parquet"), labels=["coat"]
        ).load("train")


def test_hf_imagefolder_ids_follow_sorted_folder_names(tmp_path):
    for cls, k in (("zebra", 2), ("ant", 1)):
        save_images(
            tmp_path / "folder" / "train" / cls,
            rng_images(k, 20, 20, seed=k),
            [f"{cls}{i}.png" for i in range(k)],
        )
    source = oebench.create_dataset("hf", data_dir=str(tmp_path / "folder"))
    data = source.load("train")
    assert source.num_classes == 2 and source.shape == (3, 20, 20)
    assert sorted(data.labels.tolist()) == [0, 1, 1]
    assert data.images.shape == (3, 3, 20, 20)


def test_hf_offline_hub_name_and_bad_options(tmp_path):
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_dataset("hf", path="someone/some-dataset").load("train")
    msg = one_line(exc)
    assert "someone/some-dataset" in msg and "--download" in msg and "data_files" in msg
    with pytest.raises(DataNotFoundError, match="not found"):
        oebench.create_dataset("hf", data_files=str(tmp_path / "nope.parquet")).load("train")
    with pytest.raises(UserError, match="exactly one"):
        oebench.create_dataset("hf", path="a/b", data_dir=str(tmp_path))


# -- files(): resolved before any work, stamped into cache keys ------------------------------------
CIFAR10_BATCHES = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 2}


def write_cifar10(base: Path) -> list[Path]:
    folder = base / "cifar-10-batches-py"
    write_cifar(folder, CIFAR10_BATCHES, "labels", ("batches.meta", "label_names"), 10)
    return [folder / name for name in [*CIFAR10_BATCHES, "batches.meta"]]


def assert_lists(files: list[Path], expected: list[Path]) -> None:
    """``files()`` gives exactly ``expected``: non-empty, sorted, every file existing."""
    assert files and files == sorted(files)
    assert all(isinstance(f, Path) and f.is_file() for f in files)
    assert files == sorted(expected)


def same_missing_message(source, split: str = "test") -> str:
    """``files()`` and ``load(split)`` raise the same one-line DataNotFoundError."""
    with pytest.raises(DataNotFoundError) as from_files:
        source.files()
    with pytest.raises(DataNotFoundError) as from_load:
        source.load(split)
    assert one_line(from_files) == str(from_load.value)
    return str(from_files.value)


def test_cifar_files(isolated, tmp_path):
    assert "CIFAR-10 not found" in same_missing_message(oebench.create_dataset("cifar10"))
    written = write_cifar10(isolated)
    assert_lists(oebench.create_dataset("cifar10").files(), written)
    root = tmp_path / "elsewhere"
    assert "CIFAR-100 not found" in same_missing_message(
        oebench.create_dataset("cifar100", root=str(root))
    )
    write_cifar(
        root / "cifar-100-python", {"train": 2, "test": 2}, "fine_labels", ("meta", "x"), 100
    )
    folder = root / "cifar-100-python"
    assert_lists(
        oebench.create_dataset("cifar100", root=str(root)).files(),
        [folder / "train", folder / "test", folder / "meta"],
    )


def test_svhn_files_test_required_others_listed_when_found(isolated):
    assert "SVHN not found" in same_missing_message(oebench.create_dataset("svhn"))
    folder = isolated / "svhn"
    write_svhn(folder, "train", [1, 2])
    with pytest.raises(DataNotFoundError, match="test_32x32.mat"):  # an OOD set reads test
        oebench.create_dataset("svhn").files()
    write_svhn(folder, "test", [3])
    expected = [folder / "train_32x32.mat", folder / "test_32x32.mat"]
    assert_lists(oebench.create_dataset("svhn").files(), expected)
    assert_lists(  # use_extra: train needs extra too, which is missing
        oebench.create_dataset("svhn", use_extra=True).files(), [folder / "test_32x32.mat"]
    )
    write_svhn(folder, "extra", [4, 5, 6])
    expected.append(folder / "extra_32x32.mat")
    assert_lists(oebench.create_dataset("svhn", use_extra=True).files(), expected)
    assert_lists(oebench.create_dataset("svhn").files(), expected)  # the extra split is served


def test_svhn_files_downloads_only_test_and_only_when_allowed(isolated, monkeypatch):
    import torchvision.datasets

    fetched = []

    class FakeSvhn:
        split_list = torchvision.datasets.SVHN.split_list

        def __init__(self, root, split, download=False):
            assert download
            fetched.append(split)
            write_svhn(Path(root), split, [1])

    monkeypatch.setattr(torchvision.datasets, "SVHN", FakeSvhn)
    with pytest.raises(DataNotFoundError, match="--download"):
        oebench.create_dataset("svhn", use_extra=True).files()
    assert fetched == []
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    files = oebench.create_dataset("svhn", use_extra=True).files()
    assert fetched == ["test"] and files == [isolated / "svhn" / "test_32x32.mat"]


def test_idx_files_plain_gz_and_system(isolated, tmp_path):
    assert "MNIST not found" in same_missing_message(oebench.create_dataset("mnist"))
    raw = isolated / "MNIST" / "raw"
    arrays = write_idx_set(raw, gz=False)
    assert_lists(oebench.create_dataset("mnist").files(), [raw / n for n in arrays])
    flat = tmp_path / "debian-like"
    write_idx_set(flat, gz=True)
    (flat / "t10k-labels-idx1-ubyte").write_bytes((flat / "t10k-labels-idx1-ubyte.gz").read_bytes())
    expected = [flat / f"{n}.gz" for n in arrays if n != "t10k-labels-idx1-ubyte"]
    expected.append(flat / "t10k-labels-idx1-ubyte")  # the plain file is the one read
    assert_lists(oebench.create_dataset("fashion-mnist", root=str(flat)).files(), expected)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="apt package dataset-fashion-mnist absent")
def test_fashion_mnist_files_from_debian_package(isolated):
    files = oebench.create_dataset("fashion-mnist").files()
    assert len(files) == 4 and all(f.parent == DEBIAN_FASHION for f in files)
    assert_lists(files, sorted(DEBIAN_FASHION.glob("*-ubyte*")))


def test_dtd_files(isolated):
    assert "DTD not found" in same_missing_message(oebench.create_dataset("dtd"))
    write_dtd(isolated)
    data = isolated / "dtd" / "dtd"
    labels = [data / "labels" / f"{s}1.txt" for s in ("train", "val", "test")]
    assert_lists(oebench.create_dataset("dtd").files(), labels + list(data.rglob("*.jpg")))
    assert len(oebench.create_dataset("dtd").files()) == 9
    with pytest.raises(DataNotFoundError, match="test2.txt"):
        oebench.create_dataset("dtd", partition=2).files()


def test_places365_files(isolated, tmp_path):
    assert "Places365 not found" in same_missing_message(oebench.create_dataset("places365"))
    top = isolated / "places365"
    expected = write_places_val(top)
    assert_lists(oebench.create_dataset("places365").files(), expected)
    (top / "places365_train_standard.txt").write_text("/a/abbey/00000001.jpg 0\n")
    expected.append(top / "places365_train_standard.txt")
    expected += save_images(
        top / "data_256_standard" / "a" / "abbey", rng_images(1, 256, 256), ["00000001.jpg"]
    )
    assert_lists(oebench.create_dataset("places365").files(), expected)
    pics = save_images(tmp_path / "pics" / "sub", rng_images(2, 9, 9), ["b.png", "a.png"])
    assert_lists(oebench.create_dataset("places365", folder=str(tmp_path / "pics")).files(), pics)
    (tmp_path / "empty").mkdir()
    empty = oebench.create_dataset("places365", folder=str(tmp_path / "empty"))
    assert "no image files" in same_missing_message(empty)


def test_lsun_isun_files(isolated, tmp_path):
    assert "LSUN not found" in same_missing_message(oebench.create_dataset("lsun"))
    assert "iSUN not found" in same_missing_message(oebench.create_dataset("isun"))
    lsun = save_images(isolated / "lsun" / "test", rng_images(3, 8, 8), ["2.png", "0.png", "1.png"])
    (isolated / "lsun" / "notes.txt").write_text("not an image")
    isun = save_images(isolated / "isun", rng_images(2, 8, 8), ["b.jpeg", "a.jpeg"])
    assert_lists(oebench.create_dataset("lsun").files(), lsun)
    assert_lists(oebench.create_dataset("isun", n=1).files(), isun)  # n subsets all of them
    assert_lists(oebench.create_dataset("lsun", folder=str(isolated / "isun")).files(), isun)
    (tmp_path / "empty").mkdir()
    empty = oebench.create_dataset("isun", folder=str(tmp_path / "empty"))
    assert "no image files" in same_missing_message(empty)


def test_tiny_imagenet_files(isolated):
    assert "Tiny ImageNet not found" in same_missing_message(
        oebench.create_dataset("tiny-imagenet")
    )
    read = write_tiny_imagenet(isolated / "tiny-imagenet-200")
    assert_lists(oebench.create_dataset("tiny-imagenet").files(), read)


def test_outlier_file_sources_files(isolated, monkeypatch):
    random = oebench.create_outlier_source("300k-random-images")
    assert "300K Random Images not found" in same_missing_message(random, "train")
    np.save(isolated / "300K_random_images.npy", rng_images(2, 32, 32))
    assert_lists(random.files(), [isolated / "300K_random_images.npy"])

    tiny = oebench.create_outlier_source("tiny-images-80m")
    assert "withdrawn" in same_missing_message(tiny, "train")
    (isolated / "tiny_images.bin").write_bytes(bytes(2 * 3072))
    assert "80mn_cifar_idxs.txt" in same_missing_message(tiny, "train")
    everything = oebench.create_outlier_source("tiny-images-80m", exclude_cifar=False)
    assert_lists(everything.files(), [isolated / "tiny_images.bin"])
    (isolated / "80mn_cifar_idxs.txt").write_text("1\n")
    assert_lists(tiny.files(), [isolated / "tiny_images.bin", isolated / "80mn_cifar_idxs.txt"])


def test_dataset_outliers_files_are_the_datasets(isolated):
    assert oebench.create_outlier_source("dataset", dataset="gaussian", n=4).files() == []
    lsun = save_images(isolated / "lsun", rng_images(2, 8, 8), ["0.png", "1.png"])
    source = oebench.create_outlier_source("dataset", dataset="lsun", dataset_split="test")
    assert_lists(source.files(), lsun)
    svhn = oebench.create_outlier_source("dataset", dataset="svhn", use_extra=True)
    assert "SVHN not found" in same_missing_message(svhn, "test")


def test_hf_files(isolated, tmp_path, monkeypatch):
    parquet = [tmp_path / "train.parquet", tmp_path / "test.parquet"]
    for path in parquet:
        write_parquet(path, [0, 1], class_label=True)
    files = {"train": str(parquet[0]), "test": str(parquet[1])}
    assert_lists(oebench.create_dataset("hf", data_files=files).files(), parquet)
    glob_source = oebench.create_outlier_source("hf", data_files=str(tmp_path / "*.parquet"))
    assert_lists(glob_source.files(), parquet)
    missing = oebench.create_dataset("hf", data_files=[str(parquet[0]), str(tmp_path / "x.pq")])
    assert "x.pq" in same_missing_message(missing)

    images = save_images(
        tmp_path / "folder" / "train" / "cat", rng_images(2, 8, 8), ["a.png", "b.png"]
    )
    (tmp_path / "folder" / "metadata.csv").write_text("file_name,label\n")
    folder = oebench.create_dataset("hf", data_dir=str(tmp_path / "folder"))
    assert_lists(folder.files(), [*images, tmp_path / "folder" / "metadata.csv"])
    gone = oebench.create_dataset("hf", data_dir=str(tmp_path / "nope"))
    assert "image folder" in same_missing_message(gone)

    hub = oebench.create_dataset("hf", path="someone/some-dataset")
    assert "someone/some-dataset" in same_missing_message(hub, "train")
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")  # fetched by load(); files() contacts nothing
    assert oebench.create_dataset("hf", path="someone/some-dataset").files() == []


def cifar_fingerprint(root: Path) -> str:
    """The fingerprint of CIFAR-10's test split read from ``root``, by a fresh Runner."""
    from oebench.bench.matrix import Ref
    from oebench.bench.parse import load_benchmark
    from oebench.execute.runner import Runner

    runner = Runner(load_benchmark(str(TINY)))
    return runner.sources.fingerprint(
        "dataset", Ref("cifar10", (("root", str(root)),)), "test", (3, 32, 32), 0
    )


def test_fingerprint_follows_file_content(tmp_path):
    import os

    root = tmp_path / "cifar"
    batch = write_cifar10(root)[-2]
    assert batch.name == "test_batch"
    first = cifar_fingerprint(root)
    assert cifar_fingerprint(root) == first  # nothing changed: same key
    stat = batch.stat()
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cifar_fingerprint(root) == first  # touched, same content: same key
    data = pickle.loads(batch.read_bytes())
    data["data"] = 255 - data["data"]  # other images, same size
    batch.write_bytes(pickle.dumps(data))
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    assert batch.stat().st_size == stat.st_size
    assert cifar_fingerprint(root) != first


def test_missing_ood_set_fails_before_training(tmp_path):
    empty, cache = tmp_path / "no-cifar", tmp_path / "fresh-cache"
    empty.mkdir()
    text = TINY.read_text()
    old = '    "faces",\n]'
    assert old in text
    toml = tmp_path / "tiny-cifar.toml"
    toml.write_text(
        text.replace(old, f'    "faces",\n    {{ name = "cifar10", root = "{empty}" }},\n]')
    )
    result = run_cli("run", str(toml), env={"OEBENCH_CACHE_DIR": str(cache)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CIFAR-10 not found" in lines[0] and str(empty) in lines[0]
    models = cache / "models"
    assert not models.exists() or not any(models.iterdir())


# -- registration ----------------------------------------------------------------------------------
def test_everything_is_registered():
    datasets = set(oebench.list_datasets())
    assert {
        "cifar10",
        "cifar100",
        "svhn",
        "mnist",
        "fashion-mnist",
        "dtd",
        "places365",
        "lsun",
        "isun",
        "tiny-imagenet",
        "hf",
    } <= datasets
    assert {"300k-random-images", "tiny-images-80m", "dataset", "hf"} <= set(
        oebench.list_outlier_sources()
    )
