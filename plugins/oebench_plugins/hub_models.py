"""Any torchvision or timm classifier by name, split at its final linear layer (HeadSplit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from oebench.api import DataNotFoundError, UserError
from oebench_plugins.vision_models import (
    SavedFile,
    _split_classes,
    load_weights,
    read_state_dict,
    resolve_checkpoint,
)


def torchvision_model(
    num_classes: int,
    shape: tuple[int, int, int],
    arch: str,
    weights: str | None = None,
    path: Annotated[str, SavedFile()] | None = None,
    strict: bool = True,
    **options: Any,
) -> Any:
    """Any torchvision classifier by name (``arch = "resnet50"``), random weights by default.

    ``weights`` names torchvision weights (``"DEFAULT"``, ``"IMAGENET1K_V1"``): used when
    the file is in torchvision's cache (``$TORCH_HOME/hub/checkpoints``), downloaded only with
    ``oebench run --download``. ``path`` loads a local ``state_dict`` instead. With
    pretrained weights for another number of classes the final layer is replaced (new,
    random) by one with ``num_classes`` outputs. Features: see ``HeadSplit``.
    """
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        from oebench.api import UnknownNameError

        raise UnknownNameError("torchvision model", arch, names)
    if weights is not None and path is not None:
        raise UserError("torchvision model: give 'weights' or 'path', not both")
    if weights is None:
        net = torchvision.models.get_model(arch, num_classes=num_classes, **options)
    else:
        net = torchvision.models.get_model(
            arch, weights=_torchvision_weights(arch, weights), **options
        )
    state = read_state_dict(resolve_checkpoint(path, arch)) if path is not None else None
    if state is not None and not any(k.startswith("body.") for k in state):
        load_weights(net, state, strict=strict, where=str(path))  # torchvision's own keys
    split = _split_classes()[0](net, f"torchvision model {arch!r}")
    if weights is not None and split.fc.out_features != num_classes:
        split.replace_head(num_classes)
    if state is not None and any(k.startswith("body.") for k in state):
        load_weights(split, state, strict=strict, where=str(path))  # saved by oebench
    return split


def _torchvision_weights(arch: str, name: str) -> Any:
    """torchvision's weights ``name`` for ``arch``, from its cache unless downloads are on."""
    import torch
    import torchvision

    from oebench.api import download_allowed

    enum = torchvision.models.get_model_weights(arch)
    try:
        weights = enum.DEFAULT if name == "DEFAULT" else enum[name]
    except KeyError:
        known = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise UserError(
            f"torchvision model {arch!r} has no weights {name!r}; known: {known}"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file() and not download_allowed():
        raise DataNotFoundError(
            f"pretrained weights {arch} {weights.name} are not in torchvision's cache ({cached}); "
            "run with --download, or give path= a local state_dict file"
        )
    return weights


def timm_model(
    num_classes: int,
    shape: tuple[int, int, int],
    arch: str,
    pretrained: bool = False,
    path: Annotated[str, SavedFile()] | None = None,
    **options: Any,
) -> Any:
    """Any timm model by name (the optional extra ``oebench[timm]``).

    ``pretrained`` uses weights already in the Hugging Face cache (downloads only with
    ``--download``); ``path`` loads a local file. Features are timm's pre-logits
    (``forward_head(forward_features(x), pre_logits=True)``); the head is
    ``get_classifier()``.
    """
    try:
        import timm
    except ImportError:
        raise UserError("model 'timm' needs timm: pip install 'oebench[timm]'") from None
    from oebench.api import download_allowed

    if not timm.is_model(arch):
        from oebench.api import UnknownNameError

        raise UnknownNameError("timm model", arch, timm.list_models())
    kwargs = dict(options, num_classes=num_classes)
    if path is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(resolve_checkpoint(path, arch))}
    want = pretrained or path is not None
    try:
        net = _offline_create(
            timm, arch, want, kwargs, online=download_allowed() or path is not None
        )
    except (OSError, RuntimeError) as exc:
        raise DataNotFoundError(
            f"timm model {arch!r}: pretrained weights not available offline ({exc}); "
            "run with --download, or give path="
        ) from None
    return _split_classes()[1](net)


def _offline_create(timm: Any, arch: str, pretrained: bool, kwargs: dict, online: bool) -> Any:
    """``timm.create_model`` with the Hugging Face hub offline unless downloads are allowed."""
    import os

    old = os.environ.get("HF_HUB_OFFLINE")
    if not online:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
