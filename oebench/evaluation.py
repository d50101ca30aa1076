"""``oebench.evaluate``: score a network you already have, in one call.

The network (any ``nn.Module``, or a registered model built once) becomes the one model of an
in-memory benchmark with one ``evaluate_only`` training, registered for the call only as the
model ``given-model`` whose options are its weights' digest and class; the benchmark then
runs through the normal session (``oebench.session.run``): the same output and score caches
(keyed by the weights' digest, so caches never mix models), the same store and metrics as
``oebench run``.

How a network is split into features and head:

- one with ``forward_features(x) -> (N, D)`` and ``forward_head(f) -> (N, K)`` (oebench's
  model contract) is used as it is;
- otherwise its LAST executed ``nn.Linear`` whose output is the network's output becomes the
  head, and what that layer receives is the penultimate feature vector (the rule torchvision
  models follow in oebench, see ``hub_models``);
- a network without such a layer gives logits only: detectors that need features, the head
  or the network's layers are skipped, and a message names them.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oebench.errors import UserError
from oebench.hookspecs import hookimpl

if TYPE_CHECKING:
    import pandas as pd

    from oebench.bench.matrix import Ref
    from oebench.core.progress import Progress

#: the model name the given network is registered under, for the call only
MODEL_NAME = "given-model"
#: how the network's features are taken (an option of the model, so part of every key)
AS_IS, LAST_LINEAR, LOGITS_ONLY = "forward_features", "last-linear", "none"
#: what a detector may need that a logits-only network cannot give
NOT_FROM_LOGITS = frozenset({"features", "head", "model"})

#: token -> (network, how its features are taken, the head layer's name): the networks given
#: to ``evaluate`` calls in progress (the registered model's factory reads them)
_GIVEN: dict[str, tuple[Any, str, str]] = {}
#: (class, weights digest, input shape, classes) -> (how its features are taken, head name):
#: probed once per process
_SPLITS: dict[tuple, tuple[str, str]] = {}


def evaluate(
    model: Any,
    *,
    id_dataset: str | dict[str, Any],
    ood_datasets: Sequence[str | dict[str, Any]],
    detectors: str | Sequence[str | dict[str, Any]] = "*",
    seed: int = 0,
    label: str | None = None,
    protocol: str = "full",
    eval_batch_size: int | None = None,
    device: str = "auto",
    store: str | os.PathLike[str] | bool | None = None,
    rerun: bool = False,
    use_cache: bool = True,
    cache_root: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Score ``model`` with ``detectors`` on ``id_dataset`` against ``ood_datasets``; returns
    the rows ``oebench.run`` returns (the columns of ``oebench run --csv``).

    ``model``: an ``nn.Module`` (its weights as they are: nothing is trained), or a registered
    model name or ``{"name": ..., **options}`` table (built once with ``seed``). Datasets are
    registered names or ``{"name": ..., **options}`` tables (as in a benchmark file);
    ``detectors``: comma-separated names or wildcards (``"msp,*maha*"``), or a list of names,
    wildcards and tables. ``label``: the model's name in the rows (default: its class name).
    ``store``: None or False keeps no results; True the default store (``$OEBENCH_STORE``),
    a path that store. ``df.attrs["skipped"]`` lists the detectors a logits-only network
    cannot run, ``df.attrs["failures"]`` what failed.
    """
    import torch

    from oebench.bench.parse import parse_ref
    from oebench.registry.lookup import create_dataset

    id_ref = parse_ref(id_dataset, "id_dataset")
    if isinstance(ood_datasets, (str, dict)) or not ood_datasets:
        raise UserError("ood_datasets must be a non-empty list of dataset names or tables")
    oods = [parse_ref(o, "ood_datasets") for o in ood_datasets]
    source = create_dataset(id_ref.name, **id_ref.kwargs)
    if getattr(source, "modality", "image") != "image":
        raise UserError(f"oebench.evaluate takes image data; {id_ref.key!r} is not")
    shape = tuple(int(s) for s in source.shape)
    net = _network(model, source.num_classes, shape, seed)
    if not isinstance(net, torch.nn.Module):
        raise UserError(
            f"model must be an nn.Module or a registered model name, got {type(net).__name__}"
        )
    cls = f"{type(net).__module__}.{type(net).__qualname__}"
    digest = _weights_digest(net)
    probed = (cls, digest, shape, source.num_classes)
    kind, head = _SPLITS.get(probed) or _probe(net, shape, source.num_classes)
    _SPLITS[probed] = (kind, head)
    refs = _detector_refs(detectors)
    skipped: list[str] = []
    if kind == LOGITS_ONLY:
        refs, skipped = _logit_detectors(refs)
        message = (
            f"oebench.evaluate: {cls} gives logits only (no final nn.Linear whose output is "
            f"its output, so no penultimate features): skipped {len(skipped)} detector(s) that "
            f"need features, the head or the network's layers: {', '.join(skipped)}"
        )
        if skipped:
            warnings.warn(message, stacklevel=2)
            if progress is not None:
                progress.log(message)
        if not refs:
            raise UserError(f"{message}; no detector is left: name logit-based ones (msp, ...)")
    options = {"weights": digest, "module": cls, "features": kind}
    named = parse_ref(model, "model").key if isinstance(model, (str, dict)) else None
    name = label or named or type(net).__name__
    text = _benchmark_text(id_ref, oods, refs, options, name, seed, protocol, eval_batch_size)
    with _registered(net, digest, kind, head), _store(store) as where:
        from oebench.bench.parse import parse_benchmark
        from oebench.session import run

        bench = parse_benchmark(text, "<oebench.evaluate>")
        df = run(
            bench,
            device=device,
            store=where,
            rerun=rerun,
            use_cache=use_cache,
            cache_root=cache_root,
            executor="local",  # the network lives in this process only
            progress=progress,
        )
    df.attrs["skipped"] = skipped
    return df


def _network(model: Any, num_classes: int, shape: tuple, seed: int) -> Any:
    """The network to score: ``model`` itself, or the registered model it names, built once."""
    if not isinstance(model, (str, dict)):
        return model
    import torch

    from oebench.bench.parse import parse_ref
    from oebench.registry.lookup import create_model

    ref = parse_ref(model, "model")
    torch.manual_seed(seed)
    return create_model(ref.name, num_classes, shape, **ref.kwargs)


def _weights_digest(net: Any) -> str:
    """A hash of every parameter and buffer of ``net`` (``model_digest``, as a cell's)."""
    import torch

    from oebench.keys.fingerprints import model_digest

    class _Float32:  # numpy has no bfloat16: hash such weights as float32 (exactly)
        def state_dict(self) -> dict:
            return {k: v.float() if v.dtype == torch.bfloat16 else v
                    for k, v in net.state_dict().items()}  # fmt: skip

    return model_digest(_Float32())


def _probe(net: Any, shape: tuple, num_classes: int) -> tuple[str, str]:
    """How ``net``'s features are taken: (``AS_IS`` | ``LAST_LINEAR`` | ``LOGITS_ONLY``, the
    head layer's name), from one forward pass of two random inputs on a copy."""
    import torch

    probe = copy.deepcopy(net).cpu().float().eval()
    for m in probe.modules():  # the user's hooks (a counter, say) see no probe
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if _has_contract(probe, x, num_classes):
            return AS_IS, ""
        calls: list[tuple[str, Any]] = []
        names = {m: n for n, m in probe.named_modules() if isinstance(m, torch.nn.Linear)}
        handles = [
            m.register_forward_hook(lambda m, i, o: calls.append((names[m], o))) for m in names
        ]
        try:
            out = probe(x)
        except Exception as exc:
            raise UserError(
                f"the model failed on two random inputs of shape {tuple(x.shape)} (the ID "
                f"dataset's): {type(exc).__name__}: {exc}".splitlines()[0]
            ) from None
        finally:
            for h in handles:
                h.remove()
    if not isinstance(out, torch.Tensor) or out.shape != (2, num_classes):
        what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"the model's forward must return (N, {num_classes}) logits for the ID dataset's "
            f"{num_classes} classes; it returned {what}"
        )
    for name, o in reversed(calls):
        if isinstance(o, torch.Tensor) and o.shape == out.shape and torch.equal(o, out):
            return LAST_LINEAR, name
    return LOGITS_ONLY, ""


def _has_contract(net: Any, x: Any, num_classes: int) -> bool:
    """Whether ``net`` has oebench's model contract: (N, D) features, (N, K) logits."""
    import torch

    if not (
        callable(getattr(net, "forward_features", None))
        and callable(getattr(net, "forward_head", None))
    ):
        return False
    try:
        f = net.forward_features(x)
        return (
            isinstance(f, torch.Tensor)
            and f.dim() == 2
            and tuple(net.forward_head(f).shape) == (2, num_classes)
        )
    except Exception:  # timm-style forward_head(maps), other signatures: split it instead
        return False


def _detector_refs(detectors: str | Sequence[str | dict[str, Any]]) -> list[Ref]:
    """Detector references from comma-separated wildcards or a list of names and tables."""
    from oebench.bench.matrix import Ref
    from oebench.bench.overrides import select_detectors
    from oebench.bench.parse import parse_ref

    items = detectors.split(",") if isinstance(detectors, str) else list(detectors)
    refs: list[Ref] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                continue
            new = [Ref(n) for n in select_detectors(item)]
        else:
            new = [parse_ref(item, "detectors")]
        refs += [r for r in new if r.key not in {k.key for k in refs}]
    if not refs:
        raise UserError(f"detectors {detectors!r} names no detector; e.g. 'msp,energy,*maha*'")
    return refs


def _logit_detectors(refs: list[Ref]) -> tuple[list[Ref], list[str]]:
    """(the detectors that work on logits alone, the keys of those that do not)."""
    from oebench.registry.lookup import create_detector

    kept, skipped = [], []
    for ref in refs:
        needs = set(getattr(create_detector(ref.name, **ref.kwargs), "needs", ()))
        (skipped.append(ref.key) if needs & NOT_FROM_LOGITS else kept.append(ref))
    return kept, skipped


def _benchmark_text(
    id_ref: Ref,
    oods: list[Ref],
    detectors: list[Ref],
    model_options: dict[str, Any],
    label: str,
    seed: int,
    protocol: str,
    eval_batch_size: int | None,
) -> str:
    """The in-memory benchmark as TOML (what the store keeps as its text)."""
    model = {"name": MODEL_NAME, **model_options, "label": label}
    lines = [
        "# oebench.evaluate: a network given in Python, scored as it is (evaluate_only)",
        'name = "evaluate"',
        f"seeds = [{int(seed)}]",
        f"protocol = {_toml(protocol)}",
        f"id_datasets = [{_toml(_table(id_ref))}]",
        f"models = [{_toml(model)}]",
        f"detectors = [{', '.join(_toml(_table(d)) for d in detectors)}]",
        f"ood_datasets = [{', '.join(_toml(_table(o)) for o in oods)}]",
        "",
        "[training]",
        *([f"eval_batch_size = {int(eval_batch_size)}"] if eval_batch_size else []),
        "",
        "[[trainings]]",
        'name = "evaluate"',
        'objective = "cross-entropy"',
        "evaluate_only = true",
    ]
    return "\n".join(lines) + "\n"


def _table(ref: Ref) -> Any:
    """A reference as a benchmark file writes it: a name, or a table with its options."""
    if not ref.options and not ref.label:
        return ref.name
    return {"name": ref.name, **ref.kwargs, **({"label": ref.label} if ref.label else {})}


def _toml(value: Any) -> str:
    """``value`` (str, bool, int, float, list, dict) as an inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, os.PathLike):
        return json.dumps(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise UserError(f"cannot use the option value {value!r} ({type(value).__name__})")


def given_model(
    num_classes: int, shape: tuple[int, int, int], weights: str, module: str, features: str
) -> Any:
    """The network given to ``oebench.evaluate`` (a copy), split as its options say."""
    given = _GIVEN.get(weights)
    if given is None:
        raise UserError(
            f"model {MODEL_NAME!r} ({module}, weights {weights}) exists only inside the "
            "oebench.evaluate call that was given it; call oebench.evaluate again"
        )
    net, kind, head = given
    return _split(copy.deepcopy(net), kind, head)


def _split(net: Any, kind: str, head: str) -> Any:
    """``net`` with oebench's model contract (see the module's doc)."""
    from torch import nn

    if kind == AS_IS:
        return net

    class LastLinear(nn.Module):
        """The network, its last executed ``nn.Linear`` as the head (``fc``)."""

        def __init__(self, body: nn.Module, fc: nn.Module):
            super().__init__()
            self.body, self.fc = body, fc

        def forward_features(self, x):
            seen: list = []
            handle = self.fc.register_forward_hook(lambda m, i, o: seen.append(i[0]))
            try:
                self.body(x)
            finally:
                handle.remove()
            return seen[-1]

        def forward_head(self, features):
            return self.fc(features)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    class LogitsOnly(nn.Module):
        """The network's logits as its "features", an identity head (logit detectors only)."""

        def __init__(self, body: nn.Module):
            super().__init__()
            self.body = body

        def forward_features(self, x):
            return self.body(x)

        def forward_head(self, features):
            return features

        def forward(self, x):
            return self.body(x)

    split = LastLinear(net, net.get_submodule(head)) if kind == LAST_LINEAR else LogitsOnly(net)
    own = getattr(net, "input_normalization", None)  # see oebench.contracts.model.Classifier
    if own is not None:
        split.input_normalization = own
    return split


class _GivenPlugin:
    """Registers ``given-model`` for one ``evaluate`` call."""

    @hookimpl
    def register_models(self, register: Any) -> None:
        register(
            MODEL_NAME, given_model, description="the network given to oebench.evaluate (this call)"
        )


@contextmanager
def _registered(net: Any, digest: str, kind: str, head: str) -> Iterator[None]:
    """``given-model`` registered (and ``net`` reachable by its digest) inside the block."""
    from oebench.registry.plugins import get_plugin_manager

    pm = get_plugin_manager()
    if pm.get_plugin("oebench-evaluate") is not None:
        raise UserError("oebench.evaluate is already running in this process (one at a time)")
    plugin = _GivenPlugin()
    _GIVEN[digest] = (net, kind, head)
    pm.register(plugin, name="oebench-evaluate")
    try:
        yield
    finally:
        pm.unregister(plugin)
        _GIVEN.pop(digest, None)


@contextmanager
def _store(store: str | os.PathLike[str] | bool | None) -> Iterator[Path | None]:
    """The results store to use: a throwaway one for None / False, the default for True."""
    if store is True:
        yield None
    elif store is None or store is False:
        with tempfile.TemporaryDirectory(prefix="oebench-evaluate-") as folder:
            yield Path(folder) / "results.sqlite"
    else:
        yield Path(store)
