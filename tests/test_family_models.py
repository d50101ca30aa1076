"""Any model a user already has: torchvision classifiers by name (and timm when installed)."""

import pytest
import torch

import oebench
from oebench.errors import DataNotFoundError, UserError


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_features_are_the_input_of_the_last_linear_layer(arch):
    import torchvision

    torch.manual_seed(0)
    split = oebench.create_model("torchvision", 7, (3, 32, 32), arch=arch).eval()
    torch.manual_seed(0)
    plain = torchvision.models.get_model(arch, num_classes=7).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = split.forward_features(x)
        assert isinstance(split.fc, torch.nn.Linear) and split.fc.out_features == 7
        assert features.shape == (2, split.fc.in_features)
        # the same network: splitting at the head changes nothing in the logits
        assert torch.allclose(split.forward_head(features), plain(x), atol=1e-5)
        assert torch.allclose(split(x), plain(x), atol=1e-5)


def test_torchvision_refuses_networks_without_a_linear_head_and_unknown_names():
    with pytest.raises(UserError, match="no final nn.Linear"):
        oebench.create_model("torchvision", 3, (3, 32, 32), arch="squeezenet1_0")
    with pytest.raises(UserError, match="resnet18"):
        oebench.create_model("torchvision", 3, (3, 32, 32), arch="resnet81")


def test_pretrained_weights_are_not_downloaded_without_permission(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    with pytest.raises(DataNotFoundError, match="--download"):
        oebench.create_model("torchvision", 1000, (3, 32, 32), arch="resnet18", weights="DEFAULT")
    with pytest.raises(UserError, match="IMAGENET1K_V1"):
        oebench.create_model("torchvision", 10, (3, 32, 32), arch="resnet18", weights="NOPE")


def test_pretrained_weights_come_from_torchvisions_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()  # stands in for the published file
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[1])
    monkeypatch.setattr(
        type(weights),
        "get_state_dict",
        lambda self, *a, **k: torch.load(cache / self.url.rsplit("/", 1)[1]),
    )
    net = oebench.create_model("torchvision", 1000, (3, 32, 32), arch="resnet18", weights="DEFAULT")
    assert torch.equal(net.fc.weight, reference.fc.weight)
    # another number of classes keeps the body and puts a new head on it
    net10 = oebench.create_model("torchvision", 10, (3, 32, 32), arch="resnet18", weights="DEFAULT")
    assert net10.fc.out_features == 10
    assert torch.equal(net10.body.conv1.weight, reference.conv1.weight)


def test_torchvision_weights_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(5)
    saved = torchvision.models.mobilenet_v3_small(num_classes=4)
    torch.save({"state_dict": saved.state_dict()}, tmp_path / "w.pt")
    net = oebench.create_model(
        "torchvision", 4, (3, 32, 32), arch="mobilenet_v3_small", path=str(tmp_path / "w.pt")
    ).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), saved.eval()(x), atol=1e-5)


@pytest.mark.slow
def test_tiny_torchvision_model_runs_end_to_end(tmp_path):
    """MobileNetV3-small with random weights on 28x28 grey digits: trained, OE fine-tuned, scored by
    logit detectors and one that uses the penultimate features and the head (ASH)."""
    from oebench.bench.parse import load_benchmark
    from oebench.execute.drive import run_here
    from oebench.execute.runner import Runner
    from oebench.report.tables import results_frame

    path = tmp_path / "tv.toml"
    path.write_text(
        """
name = "tv"
id_datasets = [{ name = "mnist-5k", test_fraction = 0.05 }]
models = [{ name = "torchvision", arch = "mobilenet_v3_small" }]
detectors = ["msp", "energy", "ash"]
ood_datasets = [{ name = "gaussian-pixel", n = 100 }, { name = "letters", n = 100 }]
[training]
epochs = 1
max_train = 128
batch_size = 64
lr = 0.05
[[trainings]]
name = "baseline"
objective = "cross-entropy"
[[trainings]]
name = "oe"
objective = "oe"
outliers = { name = "photo-crops", n = 256 }
from = "baseline"
outlier_batch_size = 64
"""
    )
    df = results_frame(run_here(Runner(load_benchmark(str(path)), device="cpu")))
    assert set(df.training) == {"baseline", "oe"}
    assert set(df.detector) == {"msp", "energy", "ash"}
    assert set(df.ood_dataset) == {"gaussian-pixel", "letters", "mean"}
    assert df.auroc.between(0, 100).all() and df.id_accuracy.notna().all()


def test_timm_model_when_installed():
    timm = pytest.importorskip("timm")
    net = oebench.create_model("timm", 5, (3, 32, 32), arch="resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = net.forward_features(x)
        assert features.shape == (2, net.body.num_features)
        assert torch.allclose(net.forward_head(features), net.body(x), atol=1e-5)
    assert timm.is_model("resnet18")
