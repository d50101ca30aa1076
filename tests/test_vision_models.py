"""Vision networks: the model contract, sizes, and loading saved weights through ``checkpoint``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import oebench
from oebench.contracts.model import Classifier
from oebench.errors import DataNotFoundError, UserError


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, and a busy 2-core machine stays responsive."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "options", "shape", "dim"),
    [
        ("wrn-40-2", {"depth": 10, "widen_factor": 1}, (3, 32, 32), 64),
        ("wrn-16-4", {"widen_factor": 1}, (1, 28, 28), 64),
        ("resnet18-cifar", {"width": 4}, (3, 32, 32), 32),
        ("resnet18-cifar", {"width": 4}, (3, 24, 24), 32),
    ],
)
def test_contract_and_shapes(name, options, shape, dim):
    torch.manual_seed(0)
    net = oebench.create_model(name, 7, shape, **options).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        features = net.forward_features(x)
    assert features.shape == (2, dim)
    assert isinstance(net.fc, nn.Linear) and net.fc.out_features == 7
    with torch.no_grad():
        logits = net.forward_head(features)
        assert logits.shape == (2, 7) and torch.allclose(net(x), logits)
        wrapped = Classifier(net, (0.5,) * shape[0], (0.25,) * shape[0]).eval()
        assert wrapped(x).shape == (2, 7)


def test_paper_sizes():
    assert n_params(oebench.create_model("wrn-40-2", 10, (3, 32, 32))) == 2_243_546  # ~2.24M
    assert n_params(oebench.create_model("wrn-16-4", 10, (3, 32, 32))) == 2_748_890
    assert n_params(oebench.create_model("resnet18-cifar", 10, (3, 32, 32))) == 11_173_962


def test_defaults_follow_the_paper():
    wrn40 = oebench.create_model("wrn-40-2", 10, (3, 32, 32))
    wrn16 = oebench.create_model("wrn-16-4", 10, (3, 32, 32))
    assert wrn40.block1.layer[0].dropout == 0.3 and len(wrn40.block1.layer) == 6
    assert wrn16.block1.layer[0].dropout == 0.4 and len(wrn16.block1.layer) == 2
    assert wrn16.fc.in_features == 256 and wrn40.fc.in_features == 128
    resnet = oebench.create_model("resnet18-cifar", 10, (3, 32, 32), width=8)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in resnet.modules())


def test_wrn_parameter_names_match_the_oe_release():
    keys = set(oebench.create_model("wrn-40-2", 10, (3, 32, 32)).state_dict())
    for key in (
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block1.layer.0.conv1.weight",
        "block1.layer.0.convShortcut.weight",
        "block2.layer.5.conv2.weight",
        "block3.layer.0.convShortcut.weight",
        "bn1.running_var",
        "fc.weight",
        "fc.bias",
    ):
        assert key in keys
    assert "block1.layer.1.convShortcut.weight" not in keys


def test_bad_depth_is_a_user_error():
    with pytest.raises(UserError, match="6n"):
        oebench.create_model("wrn-40-2", 10, (3, 32, 32), depth=12)


def tiny_wrn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = oebench.create_model("wrn-40-2", 10, (3, 32, 32), depth=10, widen_factor=2)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.train()(torch.rand(8, 3, 32, 32))
    return net.eval()


@pytest.mark.parametrize("form", ["plain", "module-prefix", "wrapped", "old-bn", "classifier"])
def test_checkpoint_loads_our_wrn(tmp_path, form):
    source = tiny_wrn(0)
    state = source.state_dict()
    if form == "module-prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    elif form == "wrapped":
        state = {"state_dict": state, "epoch": 3}
    elif form == "old-bn":
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    elif form == "classifier":
        state = Classifier(source, (0.5,) * 3, (0.25,) * 3).state_dict()
    path = tmp_path / "wrn.pt"
    torch.save(state, path)
    loaded = oebench.create_model(
        "checkpoint", 10, (3, 32, 32), arch="wrn-40-2", path=str(path), depth=10, widen_factor=2
    ).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x))
        assert not torch.allclose(tiny_wrn(1)(x), source(x))


def test_checkpoint_relative_to_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path))
    (tmp_path / "ckpt").mkdir()
    torch.save(tiny_wrn(0).state_dict(), tmp_path / "ckpt" / "a.pt")
    net = oebench.create_model(
        "checkpoint", 10, (3, 32, 32), arch="wrn-40-2", path="ckpt/a.pt", depth=10, widen_factor=2
    )
    assert isinstance(net.fc, nn.Linear)


def test_checkpoint_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataNotFoundError) as exc:
        oebench.create_model(
            "checkpoint", 10, (3, 32, 32), arch="wrn-40-2", path=str(tmp_path / "missing.pt")
        )
    assert "missing.pt" in str(exc.value) and "\n" not in str(exc.value)
    torch.save(tiny_wrn(0).state_dict(), tmp_path / "small.pt")
    with pytest.raises(UserError) as exc:  # widths differ: shape mismatch
        oebench.create_model(
            "checkpoint",
            10,
            (3, 32, 32),
            arch="wrn-40-2",
            path=str(tmp_path / "small.pt"),
            depth=10,
            widen_factor=1,
        )
    assert "does not fit" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(UserError) as exc:  # deeper net: missing keys
        oebench.create_model(
            "checkpoint",
            10,
            (3, 32, 32),
            arch="wrn-40-2",
            path=str(tmp_path / "small.pt"),
            depth=16,
            widen_factor=2,
        )
    assert "missing key" in str(exc.value)
    partial = oebench.create_model(
        "checkpoint",
        10,
        (3, 32, 32),
        arch="wrn-40-2",
        strict=False,
        path=str(tmp_path / "small.pt"),
        depth=16,
        widen_factor=2,
    )
    assert isinstance(partial.fc, nn.Linear)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        oebench.create_model(
            "checkpoint", 10, (3, 32, 32), arch="wrn-40-2", path=str(tmp_path / "junk.pt")
        )
