"""``oebench new-plugin NAME``: a plugin package with one component of each kind and tests."""

from __future__ import annotations

import re
from pathlib import Path

from oebench.errors import UserError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "An oebench plugin"
dependencies = ["oebench"]

[project.optional-dependencies]
test = ["pytest>=7"]

[project.entry-points.oebench]
{short} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

MODULE = '''\
"""{name}: an oebench plugin with one component of each kind.

Every hook receives a ``register(name, factory, description=..., citation=...)`` callback;
options of a factory are its keyword arguments (type-annotated: oebench checks benchmark
files against the annotations before any work). See oebench's CONTRIBUTING.md.

torch is imported inside the functions that use it, never at the top: ``oebench --help``
imports every plugin module, and torch alone takes seconds to import
(``tests/`` checks this with ``oebench.testing.check_import_is_light``).
"""

from __future__ import annotations

import click
import numpy as np
import oebench.api as oebench

COMPONENTS = (
    "{short}-margin",
    "{short}-stripes",
    "{short}-noise",
    "{short}-tiny-net",
    "{short}-smooth-oe",
)


class MarginDetector(oebench.Detector):
    """Minus the gap between the two largest logits (small gap: uncertain, more anomalous)."""

    needs = frozenset({{"logits"}})

    def score(self, outputs: oebench.Outputs) -> np.ndarray:
        top2 = np.sort(np.asarray(outputs.logits, dtype=np.float64), axis=1)[:, -2:]
        return -(top2[:, 1] - top2[:, 0])


class Stripes(oebench.ImageSource):
    """Horizontal (class 0) or vertical (class 1) stripes with noise: a tiny ID dataset."""

    shape = (1, 16, 16)
    num_classes = 2
    splits = ("train", "test")

    def __init__(self, n: int = 200, noise: float = 0.2):
        if n < 1 or not 0 <= noise <= 1:
            raise ValueError(f"n must be >= 1 and noise in [0, 1], got n={{n}}, noise={{noise}}")
        self.n, self.noise = n, noise

    def load(self, split, *, shape=None, seed=0):
        import torch

        c, h, w = shape or self.shape
        g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
        labels = torch.randint(0, 2, (self.n,), generator=g)
        rows = (torch.arange(h) % 4 < 2).float().view(h, 1).expand(h, w)
        cols = (torch.arange(w) % 4 < 2).float().view(1, w).expand(h, w)
        images = torch.where(labels.view(-1, 1, 1, 1) == 0, rows, cols).expand(-1, c, h, w)
        noise = torch.rand(self.n, c, h, w, generator=g)
        images = (1 - self.noise) * images + self.noise * noise
        return oebench.TensorImages(images.clamp(0, 1).contiguous(), labels)


class Noise(oebench.ImageSource):
    """Uniform noise images: auxiliary outliers for Outlier Exposure."""

    shape = (3, 32, 32)
    splits = ("train", "test")

    def __init__(self, n: int = 500):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {{n}}")
        self.n = n

    def load(self, split, *, shape=None, seed=0):
        import torch

        g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
        return oebench.TensorImages(torch.rand(self.n, *(shape or self.shape), generator=g))


def tiny_net(num_classes: int, shape: tuple[int, int, int], width: int = 8):
    """Model factory: the harness passes ``num_classes`` and ``shape``; ``width`` is an option.

    One convolution, global pooling and a linear head named ``fc``. The class is made here,
    where torch is imported (no torch annotation in the signature either: oebench reads the
    option types from it).
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {{width}}")
    from torch import nn
    from torch.nn import functional as F

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(shape[0], width, 3, padding=1)
            self.fc = nn.Linear(width, num_classes)

        def forward_features(self, x):
            return F.relu(self.conv(x)).mean(dim=(2, 3))

        def forward_head(self, features):
            return self.fc(features)

    return TinyNet()


class SmoothOE(oebench.Objective):
    """Label-smoothed cross-entropy on ID data + ``lam`` x cross-entropy to uniform on outliers."""

    uses_outliers = True

    def __init__(self, lam: float = 0.5, smoothing: float = 0.1):
        if lam < 0 or not 0 <= smoothing < 1:
            raise ValueError("lam must be >= 0 and smoothing in [0, 1)")
        self.lam, self.smoothing = lam, smoothing

    def __call__(self, logits_in, targets, logits_out=None):
        from torch.nn import functional as F

        loss = F.cross_entropy(logits_in, targets, label_smoothing=self.smoothing)
        if logits_out is not None and len(logits_out):
            loss = loss - self.lam * F.log_softmax(logits_out, dim=1).mean()
        return loss

    def config(self) -> dict:
        return {{"lam": self.lam, "smoothing": self.smoothing}}


@oebench.hookimpl
def register_detectors(register):
    register(COMPONENTS[0], MarginDetector, description="minus the top-two logit gap")


@oebench.hookimpl
def register_datasets(register):
    register(COMPONENTS[1], Stripes, description="noisy horizontal vs vertical stripes")


@oebench.hookimpl
def register_outlier_sources(register):
    register(COMPONENTS[2], Noise, description="uniform noise outliers")


@oebench.hookimpl
def register_models(register):
    register(COMPONENTS[3], tiny_net, description="one conv layer, pooling, linear fc")


@oebench.hookimpl
def register_objectives(register):
    register(COMPONENTS[4], SmoothOE, description="label smoothing + OE term")


@oebench.hookimpl
def register_commands(cli):
    @cli.command(name="{short}-hello")
    def hello() -> None:
        """Say which components {name} adds."""
        click.echo("{name}: " + ", ".join(COMPONENTS))
'''

CONFTEST = """\
# oebench's plugin kit: the `oebench_plugin` fixture and the contract checks
pytest_plugins = ["oebench.testing"]
"""

TESTS = '''\
"""Contract tests of every component, with oebench's plugin kit."""

import pytest
from click.testing import CliRunner
from oebench.testing import (
    check_dataset,
    check_detector,
    check_import_is_light,
    check_model,
    check_objective,
    check_outlier_source,
)

import {module} as plugin


@pytest.fixture(autouse=True)
def _registered(oebench_plugin):
    oebench_plugin(plugin, name="{short}-under-test")  # unregistered after each test


def test_detector():
    scores = check_detector("{short}-margin")
    assert (scores <= 0).all()


def test_dataset():
    source = check_dataset("{short}-stripes", split="train", n=50)
    assert source.num_classes == 2


def test_outlier_source():
    check_outlier_source("{short}-noise", n=20)


def test_model():
    check_model("{short}-tiny-net", classes=2, shape=(1, 16, 16), width=4)


def test_objective():
    check_objective("{short}-smooth-oe", lam=0.5)


def test_import_is_light():
    # `oebench --help` imports this module: no torch (nor pandas, ...) at its top
    check_import_is_light("{module}")


def test_command():
    import click

    group = click.Group()
    plugin.register_commands(group)
    result = CliRunner().invoke(group, ["{short}-hello"])
    assert result.exit_code == 0 and "{short}-margin" in result.output
'''

README = """\
# {name}

An [oebench](https://github.com/) plugin, made by `oebench new-plugin {name}`: a detector,
an ID dataset, an outlier source, a model, a training objective and a command.

```bash
pip install -e ".[test]"      # registers the `oebench` entry point `{short}`
oebench list plugins          # shows {short} and what it registers
oebench show {short}-margin   # options and an example line for a benchmark file
python -m pytest              # the contract tests (oebench.testing)
```
"""


def new_plugin(name: str, parent: Path) -> Path:
    """Write the package ``parent / name``; returns its folder."""
    if not NAME.match(name):
        raise UserError(
            f"plugin name {name!r}: use lower-case letters, digits and dashes, "
            "starting with a letter (e.g. oebench-my-detector)"
        )
    folder = (parent / name).resolve()
    if folder.exists():
        raise UserError(f"{folder} exists already; choose another name or folder")
    short = name.removeprefix("oebench-")
    module = name.replace("-", "_")
    values = {"name": name, "short": short, "module": module}
    files = {
        "pyproject.toml": PYPROJECT,
        f"{module}.py": MODULE,
        "tests/conftest.py": CONFTEST,
        f"tests/test_{module}.py": TESTS,
        "README.md": README,
    }
    for rel, template in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return folder
