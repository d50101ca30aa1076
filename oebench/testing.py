"""Contract tests and fixtures for plugin authors.

In a plugin's own tests::

    # conftest.py
    pytest_plugins = ["oebench.testing"]

    # test_my_plugin.py
    from oebench.testing import check_detector

    def test_my_detector(oebench_plugin):
        oebench_plugin(my_plugin_module)          # registered for this test only
        check_detector("my-detector", k=5)        # raises AssertionError on a broken contract

Every ``check_*`` function builds the component by name through the registry (so the
plugin's registration is tested too), runs it on small synthetic inputs and asserts what
CONTRIBUTING.md promises: shapes, dtypes, value ranges, finiteness, determinism.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np

from oebench.registry.lookup import (
    create_dataset,
    create_detector,
    create_model,
    create_objective,
    create_outlier_source,
)

#: what a detector may declare in ``needs``
NEEDS = frozenset({"logits", "features", "fit", "head", "model"})
SHAPE = (3, 32, 32)


@contextmanager
def registered(plugin: object, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` (a module or object with hook implementations) for a ``with``
    block, and unregister it after, whatever happens inside."""
    from oebench.errors import PluginError
    from oebench.registry.plugins import get_plugin_manager

    pm = get_plugin_manager()
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    # already loaded through its installed entry point (an author's `pip install -e .`):
    # take it out for the block and put it back, with its distribution and version, after
    installed = pm.get_name(plugin) if pm.is_registered(plugin) else None
    info = pm.infos.get(installed) if installed else None
    if installed:
        pm.unregister(plugin)
    try:
        if pm.register(plugin, name=name) is None:
            error = pm.infos[name].error
            pm.infos.pop(name, None)
            raise PluginError(f"plugin {name!r} is broken: {error}")
        try:
            yield name
        finally:
            pm.unregister(plugin)
    finally:
        if installed:
            pm.register(
                plugin, installed, info.dist if info else None, info.version if info else None
            )


def _fixture() -> Any:
    import pytest

    @pytest.fixture
    def oebench_plugin() -> Iterator[Callable[..., str]]:
        """Call ``oebench_plugin(module)`` to register a plugin until the test ends."""
        stack: list[Any] = []

        def register(plugin: object, name: str | None = None) -> str:
            context = registered(plugin, name)
            registered_name = context.__enter__()
            stack.append(context)
            return registered_name

        yield register
        while stack:
            stack.pop().__exit__(None, None, None)

    return oebench_plugin


with suppress(ImportError):  # a pytest plugin where pytest is installed (a test dependency)
    oebench_plugin = _fixture()


# -- synthetic inputs --------------------------------------------------------------------------
def fake_outputs(n: int = 64, classes: int = 10, dim: int = 16, seed: int = 0) -> Any:
    """Outputs of a made-up linear model (the head of ``fake_head``) on ``n`` samples:
    float64 logits, non-negative features, predicted labels. ``seed`` picks the samples."""
    from oebench.contracts.detector import Outputs

    features = np.abs(np.random.default_rng(seed).normal(0, 1, (n, dim)))
    head = fake_head(classes, dim)
    logits = features @ head.weight.T + head.bias
    return Outputs(logits, features, logits.argmax(1))


def fake_head(classes: int = 10, dim: int = 16) -> Any:
    """The final linear layer of the made-up model behind ``fake_outputs``."""
    from oebench.contracts.detector import Head

    rng = np.random.default_rng([classes, dim])
    return Head(rng.normal(0, 1, (classes, dim)), rng.normal(0, 0.1, classes))


def tiny_classifier(classes: int = 10, shape: tuple[int, int, int] = SHAPE) -> Any:
    """A small linear ``Classifier`` for detectors that need the model."""
    import torch
    from torch import nn

    from oebench.contracts.model import Classifier

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(int(np.prod(shape)), classes)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

        def forward_head(self, features: torch.Tensor) -> torch.Tensor:
            return self.fc(features)

    torch.manual_seed(0)
    return Classifier(Net(), (0.5,) * shape[0], (0.5,) * shape[0]).eval()


# -- contract checks ---------------------------------------------------------------------------
def check_detector(name: str, n: int = 64, **options: Any) -> np.ndarray:
    """Build detector ``name`` and check its contract; returns its scores on fake outputs."""
    det = create_detector(name, **options)
    needs = frozenset(det.needs)
    assert needs <= NEEDS, (
        f"{name}: unknown needs {sorted(needs - NEEDS)}; allowed: {sorted(NEEDS)}"
    )
    assert isinstance(det.config(), dict), f"{name}: config() must return a dict"
    train, test = fake_outputs(256, seed=1), fake_outputs(n, seed=2)
    if needs & {"fit", "head"}:
        det.fit(train if "fit" in needs else None, fake_head() if "head" in needs else None)
    if "model" in needs:
        import torch

        model = tiny_classifier()
        if "fit" in needs and hasattr(det, "fit_inputs"):  # the ID training images, in order
            g = torch.Generator().manual_seed(3)
            det.fit_inputs(model, iter([torch.rand(len(train) // 2, *SHAPE, generator=g),
                                        torch.rand(len(train) - len(train) // 2, *SHAPE,
                                                   generator=g)]))  # fmt: skip
        batches = [torch.rand(n // 2, *SHAPE), torch.rand(n - n // 2, *SHAPE)]
        raw = det.score_inputs(model, iter(batches))
    else:
        raw = det.score(test)
    scores = _checked_scores(name, raw, n)
    if "model" not in needs:
        again = _checked_scores(name, det.score(test), n)
        assert np.array_equal(scores, again), f"{name}: scoring the same outputs twice differs"
    if "fit" in needs and "model" not in needs:
        _check_mapped_fit(name, options, train, test, scores)
    estimate = det.memory(len(train), n, train.features.shape[1], train.logits.shape[1])
    assert isinstance(estimate, int) and estimate >= 0, f"{name}: memory() must be bytes >= 0"
    return scores


def _check_mapped_fit(name: str, options: dict, train: Any, test: Any, scores: Any) -> None:
    """A detector fitted on read-only memory-mapped train outputs (as the engine hands them
    at scale) scores as the one fitted in memory (to 1e-9 relative)."""
    import tempfile

    from oebench.contracts.arrays import load_rows
    from oebench.contracts.detector import Outputs

    det = create_detector(name, **options)
    with tempfile.TemporaryDirectory() as folder:
        mapped = {}
        for field in ("logits", "features", "labels"):
            np.save(f"{folder}/{field}.npy", getattr(train, field))
            mapped[field] = load_rows(f"{folder}/{field}.npy")
        det.fit(Outputs(**mapped), fake_head() if "head" in det.needs else None)
        got = _checked_scores(name, det.score(test), len(scores))
    assert np.allclose(got, scores, rtol=1e-9, atol=1e-12), (
        f"{name}: fitted on memory-mapped outputs it scores otherwise than fitted in memory"
    )


def _checked_scores(name: str, raw: Any, n: int) -> np.ndarray:
    from oebench.contracts.checks import ContractError, checked_scores

    try:
        return checked_scores(raw, n)
    except ContractError as exc:
        raise AssertionError(f"detector {name!r} {exc}") from None


def check_dataset(name: str, split: str | None = None, **options: Any) -> Any:
    """Build dataset ``name``, load one split (its first, or ``split``) and check the images
    and labels against the dataset contract; returns the source."""
    source = create_dataset(name, **options)
    _check_source(f"dataset {name!r}", source, split or source.splits[0], source.num_classes)
    assert source.num_classes is None or source.num_classes >= 2, f"{name}: num_classes < 2"
    return source


def check_outlier_source(name: str, **options: Any) -> Any:
    """Build outlier source ``name``, load its ``train`` split at CIFAR's shape and check it."""
    source = create_outlier_source(name, **options)
    _check_source(f"outlier source {name!r}", source, "train", None, SHAPE)
    return source


def _check_source(
    what: str, source: Any, split: str, classes: int | None, shape: Any = None
) -> None:
    from oebench.contracts.checks import ContractError, check_split
    from oebench.contracts.data import ImageSource, modality_of

    if modality_of(source) == "text":
        return _check_text_source(what, source, split, classes)
    assert isinstance(source, ImageSource), f"{what}: factory must return an oebench.ImageSource"
    assert split in source.splits, f"{what}: split {split!r} not in splits {source.splits}"
    assert len(source.shape) == 3 and source.shape[0] in (1, 3), f"{what}: shape {source.shape}"
    data = source.load(split, shape=shape, seed=0)
    try:
        check_split(data, split, classes, (shape or source.shape)[0])
    except ContractError as exc:
        raise AssertionError(f"{what}: {exc}") from None
    image, _ = data[0]
    expected = tuple(shape or source.shape)
    assert tuple(image.shape) == expected, (
        f"{what}: image shape {tuple(image.shape)}, expected {expected}"
    )
    again, _ = source.load(split, shape=shape, seed=0)[0]
    assert bool((again == image).all()), f"{what}: the same seed gave different images"


def _check_text_source(what: str, source: Any, split: str, classes: int | None) -> None:
    """A text source: a split encoded with its own vocabulary (an ID dataset's) or, for an
    OOD set or outliers, with one built from that split; the same tokens twice."""
    from oebench.contracts.checks import ContractError, check_split
    from oebench.contracts.text import TextSource, build_vocabulary, keep_vocabulary

    assert isinstance(source, TextSource), f"{what}: factory must return an oebench.TextSource"
    assert split in source.splits, f"{what}: split {split!r} not in splits {source.splits}"
    shape = None
    if not (source.num_classes and "train" in source.splits):
        vocab = build_vocabulary(source.texts(split, 0)[0], source.length, source.vocab_size)
        keep_vocabulary(vocab)
        shape = vocab.shape
    data = source.load(split, shape=shape, seed=0)
    try:
        check_split(data, split, classes)
    except ContractError as exc:
        raise AssertionError(f"{what}: {exc}") from None
    assert data.tokens.shape[1] == source.length, f"{what}: rows of {data.tokens.shape[1]} ids"
    again = source.load(split, shape=shape, seed=0)
    assert bool((again.tokens == data.tokens).all()), f"{what}: the same seed gave other tokens"


def check_model(
    name: str, classes: int = 10, shape: tuple[int, int, int] = SHAPE, **options: Any
) -> Any:
    """Build model ``name`` and check ``forward_features`` / ``forward_head`` shapes; a text
    model takes a text input spec, e.g. ``shape=(16, 100, "any-digest")``."""
    import torch

    from oebench.contracts.data import example_inputs, is_text_shape
    from oebench.contracts.model import Classifier

    net = create_model(name, classes, shape, **options)
    norm = None if is_text_shape(shape) else (0.5,) * shape[0]
    model = Classifier(net, norm, norm).eval()
    with torch.no_grad():
        features = model.forward_features(example_inputs(shape, 4))
        logits = model.forward_head(features)
    assert features.ndim == 2 and len(features) == 4, f"{name}: features {tuple(features.shape)}"
    assert tuple(logits.shape) == (4, classes), f"{name}: logits {tuple(logits.shape)}"
    assert torch.isfinite(logits).all(), f"{name}: non-finite logits"
    return model


def check_objective(name: str, classes: int = 10, train: bool = True, **options: Any) -> Any:
    """Build objective ``name`` and check its whole contract on a tiny network: ``attach``,
    ``prepare_outliers`` (same shape), ``loss`` on a ``TrainStep`` (a finite scalar whose
    gradient reaches the network), ``end_epoch`` and a ``state`` round trip; with ``train``,
    two epochs of the real training loop, and a run interrupted after its first epoch that
    resumes to the same weights."""
    import torch

    from oebench.contracts.objective import TrainStep

    objective = create_objective(name, **options)
    assert isinstance(objective.config(), dict), f"{name}: config() must return a dict"
    torch.manual_seed(0)
    model = _tiny_classifier(classes)
    extra = objective.attach(_TINY_DIM, classes)
    assert extra is None or isinstance(extra, torch.nn.Module), f"{name}: attach() -> Module"
    x_in, y = torch.rand(8, 3, 8, 8), torch.randint(0, classes, (8,))
    gen = torch.Generator().manual_seed(0)
    x_out = None
    if objective.uses_outliers:  # input-level objectives (MixOE) may transform the outliers
        x_out = objective.prepare_outliers(x_in, y, torch.rand(8, 3, 8, 8), gen)
        assert x_out.shape == x_in.shape, f"{name}: prepare_outliers changed the batch shape"
    x = x_in if x_out is None else torch.cat([x_in, x_out])
    features = model.forward_features(x)
    logits = model.forward_head(features)
    n = len(x_in)
    step = TrainStep(
        model=model,
        x_in=x_in,
        targets=y,
        logits_in=logits[:n],
        x_out=x_out,
        logits_out=logits[n:] if x_out is not None else None,
        features_in=features[:n] if objective.uses_features else None,
        features_out=features[n:] if objective.uses_features and x_out is not None else None,
        generator=gen,
        extra=extra,
    )
    loss = objective.loss(step)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0, f"{name}: loss must be a scalar"
    assert torch.isfinite(loss), f"{name}: non-finite loss"
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), f"{name}: no gradient"
    objective.end_epoch(0, 1)
    state = objective.state()
    assert isinstance(state, dict), f"{name}: state() must return a dict"
    objective.load_state(state)
    if train:
        _check_trains(name, classes, options)
    return objective


_TINY_DIM = 16


def _tiny_classifier(classes: int) -> Any:
    """A two-layer network with the model contract, for objective checks."""
    import torch

    from oebench.contracts.model import Classifier

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(3, 4, 3, padding=1),
                torch.nn.BatchNorm2d(4),
                torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(2),
                torch.nn.Flatten(),
                torch.nn.Linear(16, _TINY_DIM),
                torch.nn.ReLU(),
            )
            self.fc = torch.nn.Linear(_TINY_DIM, classes)

        def forward_features(self, x: Any) -> Any:
            return self.body(x)

        def forward_head(self, f: Any) -> Any:
            return self.fc(f)

    return Classifier(Tiny(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class _Partial:
    """An in-memory ``PartialCheckpoint`` that can stop the training after its first save."""

    def __init__(self, stop: bool) -> None:
        self.saved: Any = None
        self.stop = stop

    def load(self, total: int) -> Any:
        return self.saved

    def save(self, state: Any) -> None:
        import copy

        self.saved = copy.deepcopy(state)
        if self.stop:
            raise KeyboardInterrupt


def _check_trains(name: str, classes: int, options: dict) -> None:
    """Two epochs of the real training loop: finite weights that moved; resumed == straight."""
    import torch

    from oebench.contracts.data import TensorImages
    from oebench.execute.training import train

    g = torch.Generator().manual_seed(1)
    ids = TensorImages(torch.rand(24, 3, 8, 8, generator=g), torch.arange(24) % classes)
    outs = TensorImages(torch.rand(48, 3, 8, 8, generator=g))
    params = {
        "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
        "batch_size": 8, "outlier_batch_size": 8, "epochs": 2, "augment": True,
    }  # fmt: skip

    def run(partial: Any = None) -> dict:
        torch.manual_seed(0)
        model = _tiny_classifier(classes)
        objective = create_objective(name, **options)
        out = outs if objective.uses_outliers else None
        shape = (3, 8, 8)
        train(model, ids, objective, params, 0, shape, torch.device("cpu"), out, partial=partial)
        return {k: v.clone() for k, v in model.state_dict().items()}

    straight = run()
    assert all(torch.isfinite(v.float()).all() for v in straight.values()), f"{name}: weights"
    interrupted = _Partial(stop=True)
    with suppress(KeyboardInterrupt):
        run(interrupted)
    assert interrupted.saved is not None, f"{name}: no state saved after the first epoch"
    interrupted.stop = False
    resumed = run(interrupted)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), f"{name}: a resumed training differs ({key})"


# -- import cost -------------------------------------------------------------------------------
#: libraries that take long to import (torch alone: seconds): a plugin module imports them
#: inside the functions that use them, never at its top, since ``oebench --help`` imports
#: every plugin module
HEAVY_MODULES = (
    "torch",
    "torchvision",
    "timm",
    "pandas",
    "pyarrow",
    "matplotlib",
    "scipy",
    "sklearn",
    "skimage",
    "cv2",
    "datasets",
    "transformers",
    "tensorflow",
    "jax",
)

#: run in a fresh interpreter: import oebench.api (what oebench imports anyway), then the
#: module, noting where each heavy library is first imported; prints {library: "file:line"}
_IMPORT_PROBE = r"""
import importlib, json, sys
module, sys.path[:], heavy = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
import oebench.api
before = {name.partition(".")[0] for name in sys.modules}
first = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in before and top not in first:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith("<"):
                frame = frame.f_back  # importlib's own frames, and this script's
            first[top] = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"
        return None


sys.meta_path.insert(0, Watch())
importlib.import_module(module)
loaded = {name.partition(".")[0] for name in sys.modules}
print(json.dumps({top: first.get(top, "?") for top in sorted(heavy & loaded - before)}))
"""


def check_import_is_light(
    module: str, heavy: Iterable[str] = HEAVY_MODULES, timeout: float = 120
) -> None:
    """Import ``module`` (a plugin module, by name) in a fresh Python process with this
    process's ``sys.path``, and fail, naming each library and the line that imported it, when
    importing it imports any of ``heavy`` (torch, torchvision, pandas, matplotlib, ...) that
    ``oebench.api`` itself does not: every plugin module is imported by ``oebench --help``,
    so heavy libraries belong inside the functions that use them."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _IMPORT_PROBE,
            module,
            json.dumps(sys.path),
            json.dumps(sorted(heavy)),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AssertionError(f"importing {module!r} failed in a fresh process: {last}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert not found, (
        f"importing {module!r} imports "
        + ", ".join(f"{name} (at {where})" for name, where in found.items())
        + ": import heavy libraries inside the functions that use them; `oebench --help` "
        "imports every plugin module"
    )
