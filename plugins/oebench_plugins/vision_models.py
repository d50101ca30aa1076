"""The OE paper's networks (Wide ResNets), a CIFAR ResNet-18, and loading saved weights.

The Wide ResNet uses the parameter names of the OE authors' released checkpoints
(``conv1``, ``block{1,2,3}.layer.N.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``), so
their ``state_dict`` files load through the ``checkpoint`` model.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Le, Lt

import oebench.api as oebench
from oebench.api import DataNotFoundError, UserError, data_root

Dropout = Annotated[float, Ge(0), Lt(1)]


@functools.lru_cache(maxsize=1)
def _wrn_classes() -> tuple[type, type, type]:
    """Build the Wide ResNet module classes (torch is imported only when a model is made)."""
    import torch.nn.functional as F
    from torch import nn

    class WideBlock(nn.Module):
        """Pre-activation block: BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus shortcut."""

        def __init__(self, cin: int, cout: int, stride: int, dropout: float):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.dropout = dropout
            same = cin == cout and stride == 1
            self.convShortcut = None if same else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

        def forward(self, x):
            pre = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(pre)))
            if self.dropout > 0:
                out = F.dropout(out, p=self.dropout, training=self.training)
            out = self.conv2(out)
            return out + (x if self.convShortcut is None else self.convShortcut(pre))

    class WideGroup(nn.Module):
        """``n`` blocks at one width; the first one changes width and stride."""

        def __init__(self, n: int, cin: int, cout: int, stride: int, dropout: float):
            super().__init__()
            self.layer = nn.Sequential(
                *[
                    WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout)
                    for i in range(n)
                ]
            )

        def forward(self, x):
            return self.layer(x)

    class WideResNet(nn.Module):
        """WRN-depth-k (Zagoruyko & Komodakis 2016) with the OE authors' parameter names."""

        def __init__(
            self, num_classes: int, in_channels: int, depth: int, widen_factor: int, dropout: float
        ):
            super().__init__()
            n = (depth - 4) // 6
            widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.block1 = WideGroup(n, widths[0], widths[1], 1, dropout)
            self.block2 = WideGroup(n, widths[1], widths[2], 2, dropout)
            self.block3 = WideGroup(n, widths[2], widths[3], 2, dropout)
            self.bn1 = nn.BatchNorm2d(widths[3])
            self.relu = nn.ReLU(inplace=True)
            self.fc = nn.Linear(widths[3], num_classes)
            _init_weights(self)

        def forward_features(self, x):
            out = self.block3(self.block2(self.block1(self.conv1(x))))
            out = self.relu(self.bn1(out))
            return F.adaptive_avg_pool2d(out, 1).flatten(1)

        def forward_head(self, features):
            return self.fc(features)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return WideBlock, WideGroup, WideResNet


def _init_weights(net: Any) -> None:
    """He-normal (fan-out) convolutions, unit BatchNorm, zero linear bias."""
    from torch import nn

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def wide_resnet(
    num_classes: int,
    shape: tuple[int, int, int],
    depth: Annotated[int, Ge(10), Le(1000)] = 40,
    widen_factor: Annotated[int, Ge(1), Le(32)] = 2,
    dropout: Dropout = 0.3,
) -> Any:
    """A Wide ResNet; ``depth`` must be 6n + 4."""
    if depth < 10 or (depth - 4) % 6:
        raise UserError(f"wide resnet: depth must be 6n + 4 (10, 16, 22, 28, 40, ...), got {depth}")
    return _wrn_classes()[2](num_classes, shape[0], depth, widen_factor, dropout)


def wrn_40_2(
    num_classes: int,
    shape: tuple[int, int, int],
    depth: Annotated[int, Ge(10), Le(1000)] = 40,
    widen_factor: Annotated[int, Ge(1), Le(32)] = 2,
    dropout: Dropout = 0.3,
) -> Any:
    """WRN-40-2 with dropout 0.3 (the OE paper's CIFAR network)."""
    return wide_resnet(num_classes, shape, depth, widen_factor, dropout)


def wrn_16_4(
    num_classes: int,
    shape: tuple[int, int, int],
    depth: Annotated[int, Ge(10), Le(1000)] = 16,
    widen_factor: Annotated[int, Ge(1), Le(32)] = 4,
    dropout: Dropout = 0.4,
) -> Any:
    """WRN-16-4 with dropout 0.4 (the OE paper's SVHN network)."""
    return wide_resnet(num_classes, shape, depth, widen_factor, dropout)


@functools.lru_cache(maxsize=1)
def _resnet_classes() -> tuple[type, type]:
    """Build the CIFAR ResNet-18 module classes (torchvision's parameter names)."""
    from torch import nn

    class BasicBlock(nn.Module):
        """conv3x3-BN-ReLU-conv3x3-BN plus (projected) shortcut, then ReLU."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class CifarResNet18(nn.Module):
        """ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""

        def __init__(self, num_classes: int, in_channels: int, width: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            cin = width
            for i, stride in enumerate((1, 2, 2, 2)):
                cout = width * 2**i
                setattr(
                    self,
                    f"layer{i + 1}",
                    nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)),
                )
                cin = cout
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)
            _init_weights(self)

        def forward_features(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.avgpool(x).flatten(1)

        def forward_head(self, features):
            return self.fc(features)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return BasicBlock, CifarResNet18


def resnet18_cifar(
    num_classes: int, shape: tuple[int, int, int], width: Annotated[int, Ge(1), Le(512)] = 64
) -> Any:
    """ResNet-18 for small images: 3x3 stem, no max-pool, widths ``width`` x (1, 2, 4, 8)."""
    return _resnet_classes()[1](num_classes, shape[0], width)


# -- saved weights ---------------------------------------------------------------------------------
class SavedFile:
    """An option naming a weights file, which must exist when the options are checked."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(_existing, handler(source))


def _existing(path: str) -> str:
    if not any(p.is_file() for p in (Path(path).expanduser(), data_root() / path)):
        raise ValueError(f"no such file {path} (nor under the data root {data_root()})")
    return path


def checkpoint(
    num_classes: int,
    shape: tuple[int, int, int],
    arch: str,
    path: Annotated[str, SavedFile()],
    strict: bool = True,
    **options: Any,
) -> Any:
    """Registered model ``arch`` (with ``options``) holding the weights saved in ``path``.

    Accepts a plain ``state_dict``, one wrapped as ``{"state_dict": ...}`` (or ``model``,
    ``net``), keys prefixed with ``module.`` (DataParallel) or ``net.`` (an oebench Classifier),
    and BatchNorm buffers without ``num_batches_tracked`` (older PyTorch).
    """
    net = oebench.create_model(arch, num_classes, shape, **options)
    state = read_state_dict(resolve_checkpoint(path, arch))
    load_weights(net, state, strict=strict, where=str(path))
    return net


def resolve_checkpoint(path: str, arch: str) -> Path:
    """``path`` as given, else under the data root; a one-line error when it is missing."""
    given = Path(path).expanduser()
    for candidate in (given, data_root() / given):
        if candidate.is_file():
            return candidate
    raise DataNotFoundError(
        f"checkpoint for model {arch!r} not found: {given} (also looked in {data_root()}); "
        "give 'path' a file saved with torch.save(net.state_dict())"
    )


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors from a checkpoint file, unwrapped and with wrapper prefixes removed."""
    import torch

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
    for key in ("state_dict", "model", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items() if k not in ("mean", "std")}
    return state


def load_weights(net: Any, state: dict[str, Any], *, strict: bool, where: str) -> None:
    """``load_state_dict`` with one-line errors; missing ``num_batches_tracked`` is fine."""
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
        raise UserError(
            f"checkpoint {where} does not fit: {' '.join(lines[1:3]) or lines[0]}"
        ) from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if strict and (missing or result.unexpected_keys):
        raise UserError(
            f"checkpoint {where} does not fit: {len(missing)} missing key(s) "
            f"{', '.join(missing[:3])}; {len(result.unexpected_keys)} unexpected key(s) "
            f"{', '.join(result.unexpected_keys[:3])} (strict=false loads what matches)"
        )


# -- the torchvision / timm wrappers (used by hub_models); kept in this module because the
# code digest of a function that defines classes includes its module's name and docstring
@functools.lru_cache(maxsize=1)
def _split_classes() -> tuple[type, type]:
    """The wrappers for torchvision and timm models (torch is imported only when needed)."""
    from torch import nn

    class HeadSplit(nn.Module):
        """A classifier split at its final linear layer, the documented feature rule.

        The final layer is the LAST ``nn.Linear`` in the network's module order (``fc`` for
        ResNets and RegNets, ``classifier[-1]`` for VGG, MobileNet, EfficientNet, ConvNeXt,
        ``heads.head`` for ViT, ``head`` for Swin). It moves to ``self.fc`` and an
        ``nn.Identity`` takes its place, so ``forward_features`` returns exactly what the
        final layer receives (penultimate features) and ``forward_head`` is that layer.
        Networks without a final ``nn.Linear`` (SqueezeNet) are refused. Grey (1-channel)
        inputs are repeated on the three channels torchvision networks expect.
        """

        def __init__(self, net: Any, what: str):
            from torch import nn

            super().__init__()
            linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise UserError(f"{what} has no final nn.Linear layer, so no penultimate features")
            name, layer = linears[-1]
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], nn.Identity())
            self.body, self.fc = net, layer

        def replace_head(self, num_classes: int) -> None:
            """A new (random) final layer with ``num_classes`` outputs."""
            from torch import nn

            self.fc = nn.Linear(self.fc.in_features, num_classes, bias=self.fc.bias is not None)

        def forward_features(self, x):
            if x.shape[1] == 1:  # grey images: the same plane on all three input channels
                x = x.expand(-1, 3, -1, -1)
            out = self.body(x)
            return getattr(out, "logits", out)  # Inception/GoogLeNet in training mode

        def forward_head(self, features):
            return self.fc(features)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    class TimmSplit(nn.Module):
        """A timm model with pre-logit features and its classifier as the head (``fc`` when it
        is an ``nn.Linear``, for detectors that use the head weights)."""

        def __init__(self, net: Any):
            super().__init__()
            self.body = net
            head = net.get_classifier()
            if isinstance(head, nn.Linear):
                self.fc = head

        def forward_features(self, x):
            return self.body.forward_head(self.body.forward_features(x), pre_logits=True)

        def forward_head(self, features):
            return self.body.get_classifier()(features)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return HeadSplit, TimmSplit


@oebench.hookimpl
def register_models(register):
    # imported here, not at the top: hub_models imports this module's weights helpers
    from oebench_plugins.hub_models import timm_model, torchvision_model

    register("wrn-40-2", wrn_40_2, description="Wide ResNet 40-2, dropout 0.3 (OE paper, CIFAR)")
    register("wrn-16-4", wrn_16_4, description="Wide ResNet 16-4, dropout 0.4 (OE paper, SVHN)")
    register(
        "resnet18-cifar",
        resnet18_cifar,
        description="ResNet-18 with a 3x3 stem and no max-pool (CIFAR-style)",
    )
    register(
        "checkpoint",
        checkpoint,
        description="any registered model (arch=...) with weights from path=...",
    )
    register(
        "torchvision",
        torchvision_model,
        description="any torchvision classifier: arch=..., weights= (cached) or path=; "
        "features = input of the last nn.Linear",
    )
    register(
        "timm",
        timm_model,
        description="any timm model (pip install 'oebench[timm]'): arch=..., pretrained or "
        "path=; features = timm pre-logits",
    )
