"""The model zoo: published checkpoints by name, pinned, verified before every use, offline
from a local copy, downloaded only when allowed (``oebench_plugins.model_zoo``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
import torch
from conftest import run_cli
from oebench_plugins import model_zoo
from oebench_plugins.model_zoo import ZOO, file_digests

import oebench
from oebench.errors import DataNotFoundError, UserError

#: one entry of each architecture family, and how pytorch-ood (or the OE authors) build it
FAMILIES = {
    "pytorch-ood/wrn-40-2/cifar10/oe/s0": ("WideResNet", dict(depth=40, widen_factor=2)),
    "oe-authors/svhn-wrn-oe-tune": ("WideResNet", dict(depth=16, widen_factor=4)),
    "pytorch-ood/resnet-18/imagenet200/oe/s0": ("ResNet18", {}),
    "pytorch-ood/resnet-50/imagenet1k/crossentropy": ("ResNet50", {}),
}


def _tiny(state: dict) -> dict:
    """The same keys and shapes, each tensor one distinct value broadcast (a tiny file)."""
    return {
        k: torch.full((), i / 1000, dtype=v.dtype).expand(v.shape) if v.is_floating_point()
        else v.clone()
        for i, (k, v) in enumerate(state.items())
    }  # fmt: skip


def _pytorch_ood_state(name: str) -> dict:
    import pytorch_ood.model as ptood

    cls, kwargs = FAMILIES[name]
    return getattr(ptood, cls)(num_classes=ZOO[name].num_classes, **kwargs).state_dict()


def _pinned_to(monkeypatch, name: str, path, **fields) -> None:
    """Entry ``name`` pinned to ``path``'s content (the real checkpoint is not here)."""
    sha, blob = file_digests(path)
    pins = {"sha256": sha} if ZOO[name].sha256 else {"git_blob": blob}
    monkeypatch.setitem(ZOO, name, dataclasses.replace(ZOO[name], **(pins | fields)))


def test_every_entry_is_a_registered_model_with_a_pin_and_citation():
    models = oebench.list_models()
    assert len(ZOO) == 71 and all(name in models for name in ZOO)
    for entry in ZOO.values():
        assert entry.url.startswith("https://") and entry.citation
        assert (entry.sha256 and len(entry.sha256) == 64) or len(entry.git_blob or "") == 40
    assert (
        ZOO["oe-authors/cifar10-wrn-oe-tune"].sha256
        == ZOO["pytorch-ood/wrn-40-2/cifar10/oe"].sha256
    )
    out = run_cli("show", "oe-authors/cifar10-wrn-baseline")
    assert out.returncode == 0, out.stderr
    for text in ("cifar10_wrn_baseline_epoch_99.pt", "git blob 694f7a4c", "Hendrycks", "sha256"):
        assert text in out.stdout, out.stdout
    listed = run_cli("list", "models", "oe-authors/*", "--json")
    assert {r["name"] for r in json.loads(listed.stdout)} == {
        n for n in ZOO if n.startswith("oe-authors/")
    }


def test_pins_are_pytorch_oods_own():
    from pytorch_ood.model import registry

    theirs = {e.key: e for e in registry._ENTRIES}
    ours = {
        n.removeprefix("pytorch-ood/"): e for n, e in ZOO.items() if n.startswith("pytorch-ood/")
    }
    assert set(ours) == set(theirs)
    for key, entry in ours.items():
        assert (entry.url, entry.sha256) == (theirs[key].url, theirs[key].sha256)
        assert entry.num_classes == theirs[key].arch_kwargs["num_classes"]
        assert model_zoo.NORMS[entry.norm][0] == pytest.approx(theirs[key].preprocessing.mean)
        assert model_zoo.NORMS[entry.norm][1] == pytest.approx(theirs[key].preprocessing.std)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_loads_its_exact_state_dict_layout(name, tmp_path, monkeypatch):
    state = _tiny(_pytorch_ood_state(name))
    if name.startswith("oe-authors/"):  # saved from DataParallel, as the authors' files are
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    assert path.stat().st_size < 200_000
    _pinned_to(monkeypatch, name, path)
    entry = ZOO[name]
    net = oebench.create_model(name, entry.num_classes, (3, 32, 32), path=str(path))
    # torchvision's split (HeadSplit): the network under `body`, its last layer moved to `fc`
    loaded = {k.removeprefix("body."): v for k, v in net.state_dict().items()}
    for key, value in state.items():  # every tensor of the file landed where it belongs
        assert torch.equal(loaded[key.removeprefix("module.")], value), key
    model = oebench.Classifier(net, (0.1, 0.1, 0.1), (0.3, 0.3, 0.3))  # another dataset's
    mean, std = model_zoo.NORMS[entry.norm]
    assert model.mean.flatten().tolist() == pytest.approx(mean)  # the entry's normalisation
    assert model.std.flatten().tolist() == pytest.approx(std)


def test_a_file_of_another_layout_does_not_fit(tmp_path, monkeypatch):
    name = "pytorch-ood/wrn-40-2/cifar10/oe/s0"
    path = tmp_path / "w.pt"
    torch.save(_tiny(_pytorch_ood_state("oe-authors/svhn-wrn-oe-tune")), path)  # a WRN-16-4
    _pinned_to(monkeypatch, name, path)
    with pytest.raises(UserError, match="does not fit"):
        oebench.create_model(name, 10, (3, 32, 32), path=str(path))


def test_the_git_blob_pin_is_gits_own_object_id(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
    assert file_digests(path)[1] == out.stdout.strip()


def test_a_wrong_hash_is_one_line(tmp_path, monkeypatch):
    name = "pytorch-ood/wrn-40-2/cifar10/oe/s0"
    path = tmp_path / "w.pt"
    torch.save(_tiny(_pytorch_ood_state(name)), path)
    pinned = ZOO[name].sha256
    with pytest.raises(UserError, match=rf"has sha256 \w+, not the published {pinned}") as caught:
        oebench.create_model(name, 10, (3, 32, 32), path=str(path))
    assert "\n" not in str(caught.value)
    blob = "oe-authors/cifar10-wrn-baseline"  # pinned by its git blob id
    with pytest.raises(UserError, match="has git blob id .* not the published 694f7a4c"):
        oebench.create_model(blob, 10, (3, 32, 32), path=str(path))
    bench = tmp_path / "b.toml"
    bench.write_text(
        f'name = "zoo"\nid_datasets = ["mnist-5k"]\nmodels = [{{ name = "{name}", path = '
        f'"{path}" }}]\ndetectors = ["msp"]\nood_datasets = ["gaussian-pixel"]\n'
        '[[trainings]]\nname = "zoo"\nobjective = "cross-entropy"\nevaluate_only = true\n'
    )
    out = run_cli("run", str(bench), "--store", str(tmp_path / "s.sqlite"))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"has sha256 {file_digests(path)[0]}, not the published {pinned}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_missing_file_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    name = "oe-authors/cifar10-wrn-oe-tune"
    with pytest.raises(DataNotFoundError) as caught:
        oebench.create_model(name, 10, (3, 32, 32))
    message = str(caught.value)
    assert "\n" not in message and "--download" in message
    assert str(tmp_path / "data" / "zoo" / "oe-authors--cifar10-wrn-oe-tune.pt") in message
    assert "cifar10_wrn_oe_tune_epoch_9.pt" in message
    with pytest.raises(DataNotFoundError, match="no file"):
        oebench.create_model(name, 10, (3, 32, 32), path="nowhere.pt")


def test_a_local_copy_in_the_data_root_is_used_offline(tmp_path, monkeypatch):
    name = "oe-authors/svhn-wrn-oe-tune"
    root = tmp_path / "data"
    (root / "zoo").mkdir(parents=True)
    state = _tiny(_pytorch_ood_state(name))
    torch.save(state, root / "wrn_oe_tune_epoch_4.pt")  # the authors' file name, as published
    _pinned_to(monkeypatch, name, root / "wrn_oe_tune_epoch_4.pt")
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(root))
    net = oebench.create_model(name, 10, (3, 32, 32))
    assert torch.equal(net.fc.weight, state["fc.weight"])
    (root / "wrn_oe_tune_epoch_4.pt").write_bytes(b"damaged")  # verified at every use
    with pytest.raises(UserError, match="a damaged or other file"):
        oebench.create_model(name, 10, (3, 32, 32))


def test_download_only_when_allowed_verified_then_renamed(tmp_path, monkeypatch):
    name = "pytorch-ood/wrn-40-2/cifar10/oe/s0"
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save(_tiny(_pytorch_ood_state(name)), good)
    bad.write_bytes(b"not the checkpoint")
    _pinned_to(monkeypatch, name, good)
    served = []

    def fake_fetch(url, dest, *, md5=None, sha256=None):  # what oebench.api.fetch does, locally
        served.append(url)
        from oebench.core.files import file_sha256

        source = good if len(served) == 2 else bad
        if sha256 is not None and file_sha256(source) != sha256:
            raise DataNotFoundError(f"{dest}: sha256 does not match; nothing was kept")
        shutil.copy(source, dest)
        return dest

    monkeypatch.setattr(oebench.api, "fetch", fake_fetch, raising=False)
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    zoo = tmp_path / "cache" / "zoo"
    with pytest.raises(DataNotFoundError, match="does not match"):  # a bad download
        oebench.create_model(name, 10, (3, 32, 32))
    assert not any(zoo.iterdir())  # nothing kept, no partial file
    oebench.create_model(name, 10, (3, 32, 32))
    assert served == [ZOO[name].url] * 2
    assert [p.name for p in zoo.iterdir()] == [ZOO[name].file_name]
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "0")  # offline now: the cached copy is used
    oebench.create_model(name, 10, (3, 32, 32))
    assert len(served) == 2


def test_an_entry_without_a_published_checksum_needs_the_sha256_option(tmp_path, monkeypatch):
    name = "oe-authors/cifar10-wrn-baseline"
    monkeypatch.setitem(ZOO, name, dataclasses.replace(ZOO[name], git_blob=None))
    path = tmp_path / "w.pt"
    torch.save(_tiny(_pytorch_ood_state("pytorch-ood/wrn-40-2/cifar10/oe/s0")), path)
    sha = file_digests(path)[0]
    with pytest.raises(UserError, match=f"no published checksum.*sha256 = '{sha}'"):
        oebench.create_model(name, 10, (3, 32, 32), path=str(path))
    with pytest.raises(UserError, match="not the sha256 option's"):
        oebench.create_model(name, 10, (3, 32, 32), path=str(path), sha256="0" * 64)
    net = oebench.create_model(name, 10, (3, 32, 32), path=str(path), sha256=sha)
    assert net.fc.weight.shape == (10, 128)


def test_the_wrong_number_of_classes_is_one_line():
    with pytest.raises(UserError, match="has 100 classes; the ID dataset has 10"):
        oebench.create_model("oe-authors/cifar100-wrn-oe-tune", 10, (3, 32, 32))
